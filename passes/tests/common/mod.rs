//! A tiny builder for test kernels, op counting, and a structural SSA check that does not need
//! the IR verifier.
#![allow(dead_code)]

use std::collections::HashSet;

use opc_ir::{
    walk_ops, BinaryOp, Block, CmpPred, DType, DimExpr, DimSym, Kernel, Op, OpKind, Param, ParamKind, Rounding,
    Scalar, TileType, ValueId,
};

pub fn t(dtype: DType, shape: &[usize]) -> TileType {
    TileType::new(dtype, shape.to_vec())
}

/// Builds a kernel body; `for_loop` / `if_else` nest regions through closures.
pub struct Builder {
    pub k: Kernel,
    /// Blocks being built, innermost last; the first is the body.
    stack: Vec<Block>,
}

impl Builder {
    pub fn new(name: &str) -> Self {
        Builder { k: Kernel::new(name), stack: vec![Block::new()] }
    }

    fn sym(&mut self, name: &str) -> DimExpr {
        let id = match self.k.sym(name) {
            Some(s) => s,
            None => {
                self.k.dims.push(DimSym { name: name.into(), konst: false, value: None });
                self.k.sym(name).unwrap()
            }
        };
        DimExpr::Sym(id)
    }

    /// A specialized dim with a fixed value.
    pub fn const_dim(&mut self, name: &str, value: i64) -> opc_ir::SymId {
        self.k.dims.push(DimSym { name: name.into(), konst: true, value: Some(value) });
        self.k.sym(name).unwrap()
    }

    pub fn tensor(&mut self, name: &str, dtype: DType, dims: &[&str], output: bool) -> usize {
        let dims = dims.iter().map(|d| self.sym(d)).collect();
        self.k.params.push(Param { name: name.into(), kind: ParamKind::Tensor { dtype, dims, output } });
        self.k.params.len() - 1
    }

    pub fn scalar_param(&mut self, name: &str, dtype: DType) -> ValueId {
        self.k.params.push(Param { name: name.into(), kind: ParamKind::Scalar { dtype } });
        let i = self.k.params.len() - 1;
        self.op(OpKind::ScalarParam(i), &[], TileType::scalar(dtype))
    }

    pub fn push(&mut self, op: Op) {
        self.stack.last_mut().unwrap().ops.push(op);
    }

    pub fn op(&mut self, kind: OpKind, args: &[ValueId], ty: TileType) -> ValueId {
        let r = self.k.new_value(ty);
        self.push(Op::new(kind, args.to_vec(), vec![r]));
        r
    }

    pub fn ty(&self, v: ValueId) -> TileType {
        self.k.ty(v).clone()
    }

    pub fn konst(&mut self, s: Scalar, ty: TileType) -> ValueId {
        self.op(OpKind::Const(s), &[], ty)
    }
    pub fn i32(&mut self, v: i64) -> ValueId {
        self.konst(Scalar::Int(v), TileType::scalar(DType::I32))
    }
    pub fn f32(&mut self, v: f64) -> ValueId {
        self.konst(Scalar::Float(v), TileType::scalar(DType::F32))
    }
    pub fn bool(&mut self, v: bool) -> ValueId {
        self.konst(Scalar::Bool(v), TileType::scalar(DType::Bool))
    }
    pub fn arange(&mut self, n: usize) -> ValueId {
        self.op(OpKind::Arange, &[], t(DType::I32, &[n]))
    }
    pub fn program_id(&mut self, axis: u8) -> ValueId {
        self.op(OpKind::ProgramId(axis), &[], TileType::scalar(DType::I32))
    }
    pub fn bin(&mut self, b: BinaryOp, x: ValueId, y: ValueId) -> ValueId {
        let ty = self.ty(x);
        self.op(OpKind::Binary(b), &[x, y], ty)
    }
    pub fn add(&mut self, x: ValueId, y: ValueId) -> ValueId {
        self.bin(BinaryOp::Add, x, y)
    }
    pub fn mul(&mut self, x: ValueId, y: ValueId) -> ValueId {
        self.bin(BinaryOp::Mul, x, y)
    }
    pub fn unary(&mut self, u: opc_ir::UnaryOp, x: ValueId) -> ValueId {
        let ty = self.ty(x);
        self.op(OpKind::Unary(u), &[x], ty)
    }
    pub fn cmp(&mut self, p: CmpPred, x: ValueId, y: ValueId) -> ValueId {
        let ty = self.ty(x).with_dtype(DType::Bool);
        self.op(OpKind::Cmp(p), &[x, y], ty)
    }
    pub fn select(&mut self, c: ValueId, x: ValueId, y: ValueId) -> ValueId {
        let ty = self.ty(x);
        self.op(OpKind::Select, &[c, x, y], ty)
    }
    pub fn cast(&mut self, x: ValueId, to: DType, r: Rounding) -> ValueId {
        let ty = self.ty(x).with_dtype(to);
        self.op(OpKind::Cast(r), &[x], ty)
    }
    pub fn broadcast(&mut self, x: ValueId, shape: &[usize]) -> ValueId {
        let ty = t(self.ty(x).dtype, shape);
        self.op(OpKind::Broadcast, &[x], ty)
    }
    pub fn reshape(&mut self, x: ValueId, shape: &[usize]) -> ValueId {
        let ty = t(self.ty(x).dtype, shape);
        self.op(OpKind::Reshape, &[x], ty)
    }
    pub fn expand_dims(&mut self, x: ValueId, axis: u8) -> ValueId {
        let mut ty = self.ty(x);
        ty.shape.insert(axis as usize, 1);
        self.op(OpKind::ExpandDims(axis), &[x], ty)
    }
    pub fn permute(&mut self, x: ValueId, perm: &[u8]) -> ValueId {
        let xt = self.ty(x);
        let shape: Vec<usize> = perm.iter().map(|&p| xt.shape[p as usize]).collect();
        self.op(OpKind::Permute(perm.to_vec()), &[x], t(xt.dtype, &shape))
    }

    /// `load @tensor[idx...]`: result shape is the concatenation of the index shapes.
    pub fn load(&mut self, tensor: usize, idx: &[ValueId]) -> ValueId {
        let dtype = self.k.tensor_dtype(tensor).unwrap();
        let shape: Vec<usize> = idx.iter().flat_map(|&i| self.ty(i).shape).collect();
        self.op(OpKind::Load { tensor, has_mask: false, has_other: false }, idx, t(dtype, &shape))
    }

    pub fn store(&mut self, tensor: usize, idx: &[ValueId], value: ValueId) {
        let mut args = idx.to_vec();
        args.push(value);
        self.push(Op::new(OpKind::Store { tensor, has_mask: false }, args, vec![]));
    }

    /// `for %iv = lo to hi step step iter(inits)`; `body(b, iv, carried)` returns the yielded values.
    pub fn for_loop(
        &mut self,
        lo: ValueId,
        hi: ValueId,
        step: ValueId,
        inits: &[ValueId],
        body: impl FnOnce(&mut Self, ValueId, &[ValueId]) -> Vec<ValueId>,
    ) -> Vec<ValueId> {
        let iv = self.k.new_value(TileType::scalar(DType::I32));
        let carried: Vec<ValueId> = inits.iter().map(|&v| { let ty = self.ty(v); self.k.new_value(ty) }).collect();
        let mut block = Block::new();
        block.args = std::iter::once(iv).chain(carried.iter().copied()).collect();
        self.stack.push(block);
        let ys = body(self, iv, &carried);
        self.push(Op::new(OpKind::Yield, ys, vec![]));
        let region = self.stack.pop().unwrap();
        let results: Vec<ValueId> = inits.iter().map(|&v| { let ty = self.ty(v); self.k.new_value(ty) }).collect();
        let mut args = vec![lo, hi, step];
        args.extend(inits);
        let mut op = Op::new(OpKind::For, args, results.clone());
        op.regions.push(region);
        self.push(op);
        results
    }

    /// `if cond { then } else { els }` with results of types `tys`.
    pub fn if_else(
        &mut self,
        cond: ValueId,
        tys: &[TileType],
        then: impl FnOnce(&mut Self) -> Vec<ValueId>,
        els: impl FnOnce(&mut Self) -> Vec<ValueId>,
    ) -> Vec<ValueId> {
        let mut regions = vec![];
        self.stack.push(Block::new());
        let ys = then(self);
        self.push(Op::new(OpKind::Yield, ys, vec![]));
        regions.push(self.stack.pop().unwrap());
        self.stack.push(Block::new());
        let ys = els(self);
        self.push(Op::new(OpKind::Yield, ys, vec![]));
        regions.push(self.stack.pop().unwrap());
        let results: Vec<ValueId> = tys.iter().map(|ty| self.k.new_value(ty.clone())).collect();
        let mut op = Op::new(OpKind::If, vec![cond], results.clone());
        op.regions = regions;
        self.push(op);
        results
    }

    /// The kernel, with a one-program grid (`const 1; yield`).
    pub fn finish(mut self) -> Kernel {
        assert_eq!(self.stack.len(), 1, "unclosed region");
        self.k.body = self.stack.pop().unwrap();
        let one = self.k.new_value(TileType::scalar(DType::I32));
        self.k.grid.ops = vec![Op::new(OpKind::Const(Scalar::Int(1)), vec![], vec![one]), Op::new(OpKind::Yield, vec![one], vec![])];
        self.k
    }
}

/// Number of ops (anywhere in the body, nested included) with mnemonic `m`.
pub fn count(k: &Kernel, m: &str) -> usize {
    let mut n = 0;
    walk_ops(&k.body, &mut |op| n += (op.kind.mnemonic() == m) as usize);
    n
}

/// Mnemonics of the top-level ops of a block.
pub fn mnemonics(b: &Block) -> Vec<&'static str> {
    b.ops.iter().map(|o| o.kind.mnemonic()).collect()
}

/// The op defining `v` (nested included).
pub fn def(k: &Kernel, v: ValueId) -> Option<&Op> {
    let mut found = None;
    walk_ops(&k.body, &mut |op| {
        if op.results.contains(&v) {
            found = Some(op);
        }
    });
    found
}

/// The first `for` op at the top level of the body.
pub fn first_for(k: &Kernel) -> &Op {
    k.body.ops.iter().find(|o| o.kind == OpKind::For).expect("a for loop")
}

/// The store ops of the body (nested included), in order.
pub fn stores(k: &Kernel) -> Vec<&Op> {
    let mut v = vec![];
    walk_ops(&k.body, &mut |op| {
        if matches!(op.kind, OpKind::Store { .. }) {
            v.push(op);
        }
    });
    v
}

/// The structural SSA check below and the IR verifier.
pub fn check(k: &Kernel) {
    check_ssa(k).unwrap();
    if let Err(e) = opc_ir::verify::verify(k) {
        panic!("{e}\n{}", opc_ir::printer::print_kernel(k));
    }
}

/// Structural SSA check independent of the verifier: every value defined once, every operand
/// defined before use in an enclosing scope, `for`/`if` slot counts consistent.
pub fn check_ssa(k: &Kernel) -> Result<(), String> {
    let mut defined = HashSet::new();
    check_block(k, &k.grid, &mut vec![HashSet::new()], &mut defined)?;
    check_block(k, &k.body, &mut vec![HashSet::new()], &mut defined)
}

fn check_block(k: &Kernel, b: &Block, scopes: &mut Vec<HashSet<ValueId>>, all: &mut HashSet<ValueId>) -> Result<(), String> {
    for &a in &b.args {
        if !all.insert(a) {
            return Err(format!("%{} defined twice", a.0));
        }
        scopes.last_mut().unwrap().insert(a);
    }
    for op in &b.ops {
        for a in &op.args {
            if !scopes.iter().any(|s| s.contains(a)) {
                return Err(format!("{} uses %{} which does not dominate it", op.kind.mnemonic(), a.0));
            }
            if a.0 as usize >= k.values.len() {
                return Err(format!("%{} has no type", a.0));
            }
        }
        match op.kind {
            OpKind::For => {
                let r = &op.regions[0];
                let y = r.ops.last().filter(|o| o.kind == OpKind::Yield).ok_or("for without yield")?;
                let n = op.results.len();
                if op.args.len() != 3 + n || r.args.len() != 1 + n || y.args.len() != n {
                    return Err(format!("for slots: {} args, {} block args, {} yields, {} results", op.args.len(), r.args.len(), y.args.len(), n));
                }
                for (i, (&init, &res)) in op.args[3..].iter().zip(&op.results).enumerate() {
                    if k.ty(init) != k.ty(res) || k.ty(r.args[i + 1]) != k.ty(res) || k.ty(y.args[i]) != k.ty(res) {
                        return Err(format!("for slot {i} types differ"));
                    }
                }
            }
            OpKind::If => {
                for r in &op.regions {
                    let y = r.ops.last().filter(|o| o.kind == OpKind::Yield).ok_or("if without yield")?;
                    if y.args.len() != op.results.len() {
                        return Err("if yield count".into());
                    }
                }
            }
            _ => {}
        }
        for r in &op.regions {
            scopes.push(HashSet::new());
            check_block(k, r, scopes, all)?;
            scopes.pop();
        }
        for &r in &op.results {
            if !all.insert(r) {
                return Err(format!("%{} defined twice", r.0));
            }
            scopes.last_mut().unwrap().insert(r);
        }
    }
    Ok(())
}

/// The `const` value of `v`, if a `const` op defines it.
pub fn const_of(k: &Kernel, v: ValueId) -> Option<Scalar> {
    match def(k, v)?.kind {
        OpKind::Const(s) => Some(s),
        _ => None,
    }
}

/// The value the first store of the body writes.
pub fn stored_value(k: &Kernel) -> ValueId {
    let s = stores(k)[0];
    let n = k.tensor_dims(match s.kind {
        OpKind::Store { tensor, .. } => tensor,
        _ => unreachable!(),
    })
    .unwrap()
    .len();
    s.args[n]
}

/// A kernel with work for every pass: constants to fold, no-op and chained shape ops, duplicate
/// subexpressions, loop invariants (pure ops and a read-only load), a dead op and a dead
/// loop-carried value. `out[0..16] = Σ_k x[16k + r]·(6·e^s) + w[r]·e^s`, `out[16..32] = w[r]·2 + 1`.
pub fn demo_kernel() -> Kernel {
    use opc_ir::{BinaryOp, UnaryOp};
    let mut b = Builder::new("demo");
    let x_t = b.tensor("x", DType::F32, &["N"], false);
    let w_t = b.tensor("w", DType::F32, &["M"], false);
    let out = b.tensor("out", DType::F32, &["P"], true);
    let s = b.scalar_param("s", DType::F32);
    let (lo, hi, st) = (b.i32(0), b.i32(4), b.i32(1));
    let r = b.arange(16);
    let zero = b.konst(Scalar::Float(0.0), t(DType::F32, &[16]));
    let izero = b.i32(0);
    let res = b.for_loop(lo, hi, st, &[zero, izero], |b, k, c| {
        let (two, three) = (b.f32(2.0), b.f32(3.0));
        let six = b.mul(two, three); // fold
        let e1 = b.unary(UnaryOp::Exp, s); // invariant
        let e2 = b.unary(UnaryOp::Exp, s); // duplicate of e1
        let sc = b.mul(e1, six);
        let sc1 = b.expand_dims(sc, 0);
        let scb = b.broadcast(sc1, &[16]);
        let scb = b.broadcast(scb, &[16]); // no-op
        let c16 = b.i32(16);
        let base = b.mul(k, c16);
        let base1 = b.expand_dims(base, 0);
        let baseb = b.broadcast(base1, &[16]);
        let idx = b.add(baseb, r);
        let xv = b.load(x_t, &[idx]);
        let wv = b.load(w_t, &[r]); // invariant: w is read-only
        let e21 = b.expand_dims(e2, 0);
        let e2b = b.broadcast(e21, &[16]);
        let t1 = b.mul(xv, scb);
        let t2 = b.mul(wv, e2b);
        let tt = b.add(t1, t2);
        let _dead = b.unary(UnaryOp::Sqrt, tt);
        let acc = b.add(c[0], tt);
        let cnt = b.add(c[1], k); // dead carried value
        vec![acc, cnt]
    });
    b.store(out, &[r], res[0]);
    let w = b.load(w_t, &[r]);
    let two = b.konst(Scalar::Float(2.0), t(DType::F32, &[16]));
    let one = b.f32(1.0);
    let one1 = b.expand_dims(one, 0);
    let oneb = b.broadcast(one1, &[16]);
    let w2 = b.mul(w, two);
    let v = b.add(w2, oneb);
    let zero_f = b.konst(Scalar::Float(-0.0), t(DType::F32, &[16]));
    let v = b.bin(BinaryOp::Add, v, zero_f); // x + (-0.0): identity
    let c16 = b.konst(Scalar::Int(16), t(DType::I32, &[16]));
    let r16 = b.add(r, c16);
    b.store(out, &[r16], v);
    b.finish()
}
