//! `reduce` and `scan` (cumsum) as loops over the reduced axis inside a nest over the other
//! dims, in the interpreter's order: the accumulator starts from the first element and runs
//! j ascending; f16/bf16 sums are rounded once at the end (`reduce`) or per output from an f32
//! running sum (`cumsum`); int sums wrap; `argmax`/`argmin` keep the first best index (float
//! NaNs are skipped, an all-NaN row gives 0).

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, InstBuilder, Value};
use opc_ir::{Op, ReduceOp};

use super::lower::{cty, row_major, Acc, Lower, Repr};
use crate::Result;

impl Lower<'_, '_> {
    pub(super) fn lower_reduce(&mut self, op: &Op, rop: ReduceOp, axis: usize) -> Result<()> {
        let x = op.args[0];
        let (d, shape) = (self.dtype(x), self.shape(x));
        let res = op.result();
        let n = shape[axis];
        let mut oshape = shape.clone();
        oshape.remove(axis);
        let a = match self.repr(x) {
            Repr::Buf { off, strides } => Acc::Arena { off, strides },
            Repr::Uniform(_) => Acc::Arena { off: self.materialize(x), strides: row_major(&shape) },
        };
        let Acc::Arena { off: xoff, strides: xst } = a else { unreachable!() };
        let ty = cty(d);
        let float = ty == types::F32;
        let arg = matches!(rop, ReduceOp::Argmax | ReduceOp::Argmin);
        // One output element: the reduction along the axis starting at element index `base`.
        let one = |l: &mut Self, base: Value| -> Result<Value> {
            let sa = xst[axis];
            let at = |l: &mut Self, j: Value| -> Value {
                let t = l.b.ins().imul_imm_s(j, sa);
                let e = l.b.ins().iadd(base, t);
                l.load_arena(ty, xoff, e)
            };
            if n == 0 {
                return Ok(if arg {
                    l.b.ins().iconst(types::I32, 0)
                } else if float {
                    l.b.ins().f32const(match rop {
                        ReduceOp::Max => f32::NEG_INFINITY,
                        ReduceOp::Min => f32::INFINITY,
                        _ => 0.0,
                    })
                } else {
                    let (lo, hi) = d.int_range().unwrap_or((0, 0));
                    l.b.ins().iconst(
                        types::I32,
                        match rop {
                            ReduceOp::Max => lo,
                            ReduceOp::Min => hi,
                            _ => 0,
                        },
                    )
                });
            }
            if arg {
                let better = if rop == ReduceOp::Argmax { FloatCC::GreaterThan } else { FloatCC::LessThan };
                let ibetter = if rop == ReduceOp::Argmax { IntCC::SignedGreaterThan } else { IntCC::SignedLessThan };
                let bi = l.b.declare_var(types::I32);
                let bv = l.b.declare_var(ty);
                let z = l.b.ins().iconst(types::I32, 0);
                l.b.def_var(bi, z);
                if float {
                    // best starts "absent": NaNs are skipped, an all-NaN row gives 0.
                    let has = l.b.declare_var(types::I8);
                    let f = l.b.ins().iconst(types::I8, 0);
                    l.b.def_var(has, f);
                    let zf = l.b.ins().f32const(0.0);
                    l.b.def_var(bv, zf);
                    l.loop_n(n, &mut |l, j| {
                        let v = at(l, j);
                        let (cb, ch, ci) = (l.b.use_var(bv), l.b.use_var(has), l.b.use_var(bi));
                        let notnan = l.b.ins().fcmp(FloatCC::Ordered, v, v);
                        let gt = l.b.ins().fcmp(better, v, cb);
                        let none = l.b.ins().icmp_imm_s(IntCC::Equal, ch, 0);
                        let cand = l.b.ins().bor(none, gt);
                        let take = l.b.ins().band(notnan, cand);
                        let j32 = l.b.ins().ireduce(types::I32, j);
                        let ni = l.b.ins().select(take, j32, ci);
                        let nv = l.b.ins().select(take, v, cb);
                        let nh = l.b.ins().bor(ch, take);
                        l.b.def_var(bi, ni);
                        l.b.def_var(bv, nv);
                        l.b.def_var(has, nh);
                        Ok(())
                    })?;
                } else {
                    let z64 = l.b.ins().iconst(types::I64, 0);
                    let first = at(l, z64);
                    l.b.def_var(bv, first);
                    l.loop_n(n - 1, &mut |l, j0| {
                        let j = l.b.ins().iadd_imm_s(j0, 1);
                        let v = at(l, j);
                        let (cb, ci) = (l.b.use_var(bv), l.b.use_var(bi));
                        let take = l.b.ins().icmp(ibetter, v, cb);
                        let j32 = l.b.ins().ireduce(types::I32, j);
                        let ni = l.b.ins().select(take, j32, ci);
                        let nv = l.b.ins().select(take, v, cb);
                        l.b.def_var(bi, ni);
                        l.b.def_var(bv, nv);
                        Ok(())
                    })?;
                }
                return Ok(l.b.use_var(bi));
            }
            let accv = l.b.declare_var(ty);
            let z64 = l.b.ins().iconst(types::I64, 0);
            let first = at(l, z64);
            l.b.def_var(accv, first);
            l.loop_n(n - 1, &mut |l, j0| {
                let j = l.b.ins().iadd_imm_s(j0, 1);
                let v = at(l, j);
                let s = l.b.use_var(accv);
                let r = match (rop, float) {
                    (ReduceOp::Sum, true) => l.b.ins().fadd(s, v),
                    (ReduceOp::Max, true) => l.fmax(s, v),
                    (_, true) => l.fmin(s, v),
                    (ReduceOp::Sum, false) => l.b.ins().iadd(s, v),
                    (ReduceOp::Max, false) => l.b.ins().smax(s, v),
                    (_, false) => l.b.ins().smin(s, v),
                };
                l.b.def_var(accv, r);
                Ok(())
            })?;
            let s = l.b.use_var(accv);
            Ok(if float { l.round_to(d, s) } else { l.wrap(d, s) })
        };
        let mut ost = xst.clone();
        ost.remove(axis);
        if oshape.is_empty() {
            let z = self.b.ins().iconst(types::I64, 0);
            let y = one(self, z)?;
            self.def_uniform(res, y);
            return Ok(());
        }
        let out = self.alloc(oshape.iter().product());
        let orm = row_major(&oshape);
        self.nest(&oshape, &mut |l, idx| {
            let base = l.linear(idx, &ost);
            let y = one(l, base)?;
            let e = l.linear(idx, &orm);
            l.store_arena(out, e, y);
            Ok(())
        })?;
        self.set(res, Repr::Buf { off: out, strides: orm });
        Ok(())
    }

    pub(super) fn lower_cumsum(&mut self, op: &Op, axis: usize) -> Result<()> {
        let x = op.args[0];
        let (d, shape) = (self.dtype(x), self.shape(x));
        let (xoff, xst) = match self.repr(x) {
            Repr::Buf { off, strides } => (off, strides),
            Repr::Uniform(_) => (self.materialize(x), row_major(&shape)),
        };
        let ty = cty(d);
        let n = shape[axis];
        let orm = row_major(&shape);
        let out = self.alloc(shape.iter().product());
        let mut outer = shape.clone();
        outer[axis] = 1;
        self.nest(&outer, &mut |l, idx| {
            let base = l.linear(idx, &xst);
            let obase = l.linear(idx, &orm);
            let acc = l.b.declare_var(ty);
            let z = if ty == types::F32 { l.b.ins().f32const(0.0) } else { l.b.ins().iconst(types::I32, 0) };
            l.b.def_var(acc, z);
            l.loop_n(n, &mut |l, j| {
                let t = l.b.ins().imul_imm_s(j, xst[axis]);
                let e = l.b.ins().iadd(base, t);
                let v = l.load_arena(ty, xoff, e);
                let s = l.b.use_var(acc);
                // the first element starts the sum (so -0.0 stays -0.0, as in the interpreter)
                let (ns, y) = if ty == types::F32 {
                    let sum = l.b.ins().fadd(s, v);
                    let is0 = l.b.ins().icmp_imm_s(IntCC::Equal, j, 0);
                    let ns = l.b.ins().select(is0, v, sum);
                    (ns, l.round_to(d, ns))
                } else {
                    let ns = l.b.ins().iadd(s, v);
                    (ns, l.wrap(d, ns))
                };
                l.b.def_var(acc, ns);
                let t = l.b.ins().imul_imm_s(j, orm[axis]);
                let oe = l.b.ins().iadd(obase, t);
                l.store_arena(out, oe, y);
                Ok(())
            })
        })?;
        self.set(op.result(), Repr::Buf { off: out, strides: orm });
        Ok(())
    }
}
