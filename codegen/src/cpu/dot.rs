//! `dot`: `c = acc + a · b` with k ascending per element and every product rounded to f32
//! before it is added (no FMA), exactly the interpreter's order, so results are bit-identical.
//!
//! The accumulator (or zeros) is first copied into the result buffer. f32: each row of `c` is
//! computed in register blocks of 16 columns (four `f32x4` accumulators held across the k loop),
//! then blocks of 4, then single columns; `b` is copied row-contiguous first if it is not (e.g.
//! `trans(ktile)`); e2m1/e8m0 operands are decoded to f32 first. i32 (int operands): a scalar
//! triple loop with wrapping arithmetic.

use cranelift_codegen::ir::{types, InstBuilder, Value};
use cranelift_frontend::Variable;
use opc_ir::{DType, Op, ValueId};

use super::lower::{cty, row_major, Acc, Lower, Repr};
use crate::Result;

impl Lower<'_, '_> {
    pub(super) fn lower_dot(&mut self, op: &Op) -> Result<()> {
        let (a, bv) = (op.args[0], op.args[1]);
        let (sa, sb) = (self.shape(a), self.shape(bv));
        let (m, kk, n) = (sa[0], sa[1], sb[1]);
        let res = op.result();
        let rd = self.dtype(res);
        let out = self.alloc(m * n);
        let rm = row_major(&[m, n]);
        // c = acc (or 0)
        match op.args.get(2) {
            Some(&acc) => self.copy_into(acc, out),
            None => {
                let z = if rd == DType::F32 { self.b.ins().f32const(0.0) } else { self.b.ins().iconst(types::I32, 0) };
                let t = cty(rd);
                self.ew(&[m, n], &[Acc::Val(z)], &[t], out, &|_, x| Ok(x[0]), Some(&|_: &mut Self, x: &[Value]| x[0]))?;
            }
        }
        self.set(res, Repr::Buf { off: out, strides: rm.clone() });
        // Operands as f32 (codes decoded) or i32, with `b` rows contiguous.
        let operand = |l: &mut Self, v: ValueId| -> (u32, Vec<i64>) {
            let d = l.dtype(v);
            if rd == DType::F32 && d.is_code() {
                let shape = l.shape(v);
                let acc = l.acc(v, &shape);
                let dst = l.alloc(shape.iter().product());
                l.ew(&shape, &[acc], &[types::I32], dst, &|l, x| Ok(l.cast(d, DType::F32, opc_ir::Rounding::Rne, x[0])), None)
                    .expect("decode cannot fail");
                return (dst, row_major(&shape));
            }
            match l.repr(v) {
                Repr::Buf { off, strides } => (off, strides),
                Repr::Uniform(_) => (l.materialize(v), row_major(&l.shape(v))),
            }
        };
        let (aoff, ast) = operand(self, a);
        let (mut boff, mut bst) = operand(self, bv);
        if n > 1 && bst[1] != 1 {
            let dst = self.alloc(kk * n);
            let acc = Acc::Arena { off: boff, strides: bst.clone() };
            let t = cty(rd);
            self.ew(&[kk, n], &[acc], &[t], dst, &|_, x| Ok(x[0]), Some(&|_: &mut Self, x: &[Value]| x[0]))?;
            boff = dst;
            bst = row_major(&[kk, n]);
        }
        if rd == DType::I32 {
            return self.nest(&[m, n], &mut |l, idx| {
                let (i, j) = (idx[0], idx[1]);
                let ce = l.linear(idx, &rm);
                let s = l.b.declare_var(types::I32);
                let c0 = l.load_arena(types::I32, out, ce);
                l.b.def_var(s, c0);
                l.loop_n(kk, &mut |l, p| {
                    let av = {
                        let e = l.linear(&[i, p], &ast);
                        l.load_arena(types::I32, aoff, e)
                    };
                    let bvv = {
                        let e = l.linear(&[p, j], &bst);
                        l.load_arena(types::I32, boff, e)
                    };
                    let prod = l.b.ins().imul(av, bvv);
                    let cur = l.b.use_var(s);
                    let nx = l.b.ins().iadd(cur, prod);
                    l.b.def_var(s, nx);
                    Ok(())
                })?;
                let r = l.b.use_var(s);
                l.store_arena(out, ce, r);
                Ok(())
            });
        }
        // f32: rows of c in register blocks of 4 vectors, then single vectors, then scalars.
        let bst0 = bst[0];
        let a_at = |l: &mut Self, i: Value, p: Value| -> Value {
            let e = l.linear(&[i, p], &ast);
            l.load_arena(types::F32, aoff, e)
        };
        let block = |l: &mut Self, i: Value, j0: Value, lanes: usize| -> Result<()> {
            let nv = lanes / 4;
            let row = l.b.ins().imul_imm_s(i, n as i64);
            let cbase = l.b.ins().iadd(row, j0);
            let vars: Vec<Variable> = (0..nv.max(1)).map(|_| l.b.declare_var(if lanes >= 4 { types::F32X4 } else { types::F32 })).collect();
            let vty = if lanes >= 4 { types::F32X4 } else { types::F32 };
            for (q, &var) in vars.iter().enumerate() {
                let e = l.b.ins().iadd_imm_s(cbase, 4 * q as i64);
                let c = l.load_arena(vty, out, e);
                l.b.def_var(var, c);
            }
            l.loop_n(kk, &mut |l, p| {
                let av = a_at(l, i, p);
                let av = if lanes >= 4 { l.b.ins().splat(types::F32X4, av) } else { av };
                let brow = l.b.ins().imul_imm_s(p, bst0);
                let bbase = l.b.ins().iadd(brow, j0);
                for (q, &var) in vars.iter().enumerate() {
                    let e = l.b.ins().iadd_imm_s(bbase, 4 * q as i64);
                    let bq = l.load_arena(vty, boff, e);
                    let prod = l.b.ins().fmul(av, bq);
                    let cur = l.b.use_var(var);
                    let s = l.b.ins().fadd(cur, prod);
                    l.b.def_var(var, s);
                }
                Ok(())
            })?;
            for (q, &var) in vars.iter().enumerate() {
                let e = l.b.ins().iadd_imm_s(cbase, 4 * q as i64);
                let c = l.b.use_var(var);
                l.store_arena(out, e, c);
            }
            Ok(())
        };
        let n16 = n / 16;
        let n4 = (n - n16 * 16) / 4;
        let n1 = n - n16 * 16 - n4 * 4;
        self.loop_n(m, &mut |l, i| {
            l.loop_n(n16, &mut |l, jb| {
                let j0 = l.b.ins().imul_imm_s(jb, 16);
                block(l, i, j0, 16)
            })?;
            l.loop_n(n4, &mut |l, jb| {
                let j0 = l.b.ins().imul_imm_s(jb, 4);
                let j0 = l.b.ins().iadd_imm_s(j0, (n16 * 16) as i64);
                block(l, i, j0, 4)
            })?;
            l.loop_n(n1, &mut |l, jb| {
                let j0 = l.b.ins().iadd_imm_s(jb, (n16 * 16 + n4 * 4) as i64);
                block(l, i, j0, 1)
            })
        })
    }
}
