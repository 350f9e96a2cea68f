//! Test-side builder for tile IR kernels (shared by the `interp_*` / `launch_*` tests through
//! `#[path = "interp_builder.rs"] mod builder;`). It also builds as its own (empty) test target.
#![allow(dead_code)]

use opc_ir::ir::*;
use opc_ir::{Arg, DType, Rounding, Tensor, TileType};

pub struct KB {
    pub k: Kernel,
    /// Blocks being built; ops go to the last one.
    stack: Vec<Block>,
}

pub fn s(v: SymId) -> DimExpr {
    DimExpr::Sym(v)
}
pub fn c(v: i64) -> DimExpr {
    DimExpr::Const(v)
}
pub fn div(a: DimExpr, b: DimExpr) -> DimExpr {
    DimExpr::Div(Box::new(a), Box::new(b))
}
pub fn mul(a: DimExpr, b: DimExpr) -> DimExpr {
    DimExpr::Mul(Box::new(a), Box::new(b))
}
pub fn add(a: DimExpr, b: DimExpr) -> DimExpr {
    DimExpr::Add(Box::new(a), Box::new(b))
}

impl KB {
    pub fn new(name: &str) -> KB {
        KB { k: Kernel::new(name), stack: vec![Block::new()] }
    }

    pub fn dim(&mut self, name: &str) -> SymId {
        self.k.dims.push(DimSym { name: name.into(), konst: false, value: None });
        SymId(self.k.dims.len() as u32 - 1)
    }

    pub fn const_dim(&mut self, name: &str, value: i64) -> SymId {
        self.k.dims.push(DimSym { name: name.into(), konst: true, value: Some(value) });
        SymId(self.k.dims.len() as u32 - 1)
    }

    pub fn tensor(&mut self, name: &str, dtype: DType, dims: Vec<DimExpr>, output: bool) -> usize {
        self.k.params.push(Param { name: name.into(), kind: ParamKind::Tensor { dtype, dims, output } });
        self.k.params.len() - 1
    }

    pub fn scalar_param(&mut self, name: &str, dtype: DType) -> usize {
        self.k.params.push(Param { name: name.into(), kind: ParamKind::Scalar { dtype } });
        self.k.params.len() - 1
    }

    pub fn ty(&self, v: ValueId) -> TileType {
        self.k.ty(v).clone()
    }

    pub fn op(&mut self, kind: OpKind, args: Vec<ValueId>, ty: TileType) -> ValueId {
        let r = self.k.new_value(ty);
        self.stack.last_mut().unwrap().ops.push(Op::new(kind, args, vec![r]));
        r
    }

    pub fn op0(&mut self, kind: OpKind, args: Vec<ValueId>) {
        self.stack.last_mut().unwrap().ops.push(Op::new(kind, args, vec![]));
    }

    // --- leaves -------------------------------------------------------------------------------

    pub fn i32c(&mut self, v: i64) -> ValueId {
        self.op(OpKind::Const(Scalar::Int(v)), vec![], TileType::scalar(DType::I32))
    }
    pub fn f32c(&mut self, v: f64) -> ValueId {
        self.op(OpKind::Const(Scalar::Float(v)), vec![], TileType::scalar(DType::F32))
    }
    pub fn full(&mut self, dt: DType, shape: &[usize], v: Scalar) -> ValueId {
        self.op(OpKind::Const(v), vec![], TileType::new(dt, shape.to_vec()))
    }
    pub fn pid(&mut self, a: u8) -> ValueId {
        self.op(OpKind::ProgramId(a), vec![], TileType::scalar(DType::I32))
    }
    pub fn nprog(&mut self, a: u8) -> ValueId {
        self.op(OpKind::NumPrograms(a), vec![], TileType::scalar(DType::I32))
    }
    pub fn dimv(&mut self, sym: SymId) -> ValueId {
        self.op(OpKind::Dim(sym), vec![], TileType::scalar(DType::I32))
    }
    pub fn param(&mut self, p: usize, dt: DType) -> ValueId {
        self.op(OpKind::ScalarParam(p), vec![], TileType::scalar(dt))
    }
    pub fn arange(&mut self, n: usize) -> ValueId {
        self.op(OpKind::Arange, vec![], TileType::new(DType::I32, vec![n]))
    }

    // --- element-wise -------------------------------------------------------------------------

    pub fn un(&mut self, u: UnaryOp, x: ValueId) -> ValueId {
        let t = self.ty(x);
        let t = if matches!(u, UnaryOp::IsNan | UnaryOp::IsInf) { t.with_dtype(DType::Bool) } else { t };
        self.op(OpKind::Unary(u), vec![x], t)
    }

    /// Make two values the same shape, numpy style (right-aligned, size-1 stretches).
    pub fn unify(&mut self, a: ValueId, b: ValueId) -> (ValueId, ValueId) {
        let (sa, sb) = (self.ty(a).shape, self.ty(b).shape);
        if sa == sb {
            return (a, b);
        }
        let r = sa.len().max(sb.len());
        let pad = |s: &[usize]| {
            let mut v = vec![1; r - s.len()];
            v.extend_from_slice(s);
            v
        };
        let (pa, pb) = (pad(&sa), pad(&sb));
        let out: Vec<usize> = pa.iter().zip(&pb).map(|(&x, &y)| x.max(y)).collect();
        (self.bcast(a, &out), self.bcast(b, &out))
    }

    pub fn bcast(&mut self, x: ValueId, shape: &[usize]) -> ValueId {
        let mut x = x;
        while self.ty(x).rank() < shape.len() {
            x = self.expand(x, 0);
        }
        if self.ty(x).shape == shape {
            return x;
        }
        let t = TileType::new(self.ty(x).dtype, shape.to_vec());
        self.op(OpKind::Broadcast, vec![x], t)
    }

    pub fn bin(&mut self, op: BinaryOp, a: ValueId, b: ValueId) -> ValueId {
        let (a, b) = self.unify(a, b);
        let t = self.ty(a);
        self.op(OpKind::Binary(op), vec![a, b], t)
    }
    pub fn add(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.bin(BinaryOp::Add, a, b)
    }
    pub fn sub(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.bin(BinaryOp::Sub, a, b)
    }
    pub fn mul(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.bin(BinaryOp::Mul, a, b)
    }
    pub fn cmp(&mut self, p: CmpPred, a: ValueId, b: ValueId) -> ValueId {
        let (a, b) = self.unify(a, b);
        let t = self.ty(a).with_dtype(DType::Bool);
        self.op(OpKind::Cmp(p), vec![a, b], t)
    }
    pub fn select(&mut self, c: ValueId, a: ValueId, b: ValueId) -> ValueId {
        let (a, b) = self.unify(a, b);
        let (c, a) = self.unify(c, a);
        let (c, b) = self.unify(c, b);
        let t = self.ty(a);
        self.op(OpKind::Select, vec![c, a, b], t)
    }
    pub fn cast(&mut self, x: ValueId, dt: DType, r: Rounding) -> ValueId {
        let t = self.ty(x).with_dtype(dt);
        self.op(OpKind::Cast(r), vec![x], t)
    }
    pub fn bitcast(&mut self, x: ValueId, dt: DType) -> ValueId {
        let t = self.ty(x).with_dtype(dt);
        self.op(OpKind::Bitcast, vec![x], t)
    }
    /// `(a + b - 1) / b` on i32 scalars.
    pub fn cdiv(&mut self, a: ValueId, b: i64) -> ValueId {
        let bm1 = self.i32c(b - 1);
        let bb = self.i32c(b);
        let t = self.add(a, bm1);
        self.bin(BinaryOp::Div, t, bb)
    }

    // --- shapes -------------------------------------------------------------------------------

    pub fn expand(&mut self, x: ValueId, axis: u8) -> ValueId {
        let mut t = self.ty(x);
        t.shape.insert(axis as usize, 1);
        self.op(OpKind::ExpandDims(axis), vec![x], t)
    }
    pub fn reshape(&mut self, x: ValueId, shape: &[usize]) -> ValueId {
        let t = TileType::new(self.ty(x).dtype, shape.to_vec());
        self.op(OpKind::Reshape, vec![x], t)
    }
    pub fn permute(&mut self, x: ValueId, perm: &[u8]) -> ValueId {
        let t = self.ty(x);
        let shape = perm.iter().map(|&p| t.shape[p as usize]).collect();
        self.op(OpKind::Permute(perm.to_vec()), vec![x], TileType::new(t.dtype, shape))
    }
    pub fn reduce(&mut self, op: ReduceOp, x: ValueId, axis: u8) -> ValueId {
        let mut t = self.ty(x);
        t.shape.remove(axis as usize);
        if matches!(op, ReduceOp::Argmax | ReduceOp::Argmin) {
            t.dtype = DType::I32;
        }
        self.op(OpKind::Reduce { op, axis }, vec![x], t)
    }
    pub fn cumsum(&mut self, x: ValueId, axis: u8) -> ValueId {
        let t = self.ty(x);
        self.op(OpKind::Scan { op: ScanOp::Cumsum, axis }, vec![x], t)
    }
    pub fn dot(&mut self, a: ValueId, b: ValueId, acc: Option<ValueId>) -> ValueId {
        let (ta, tb) = (self.ty(a), self.ty(b));
        let t = TileType::new(dot_acc_dtype(ta.dtype), vec![ta.shape[0], tb.shape[1]]);
        let mut args = vec![a, b];
        args.extend(acc);
        self.op(OpKind::Dot, args, t)
    }

    // --- memory -------------------------------------------------------------------------------

    pub fn load(&mut self, t: usize, idx: &[ValueId], mask: Option<ValueId>, other: Option<ValueId>) -> ValueId {
        let dt = self.k.tensor_dtype(t).unwrap();
        let shape: Vec<usize> = idx.iter().flat_map(|&i| self.ty(i).shape).collect();
        let mut args = idx.to_vec();
        args.extend(mask);
        args.extend(other);
        self.op(OpKind::Load { tensor: t, has_mask: mask.is_some(), has_other: other.is_some() }, args, TileType::new(dt, shape))
    }
    pub fn store(&mut self, t: usize, idx: &[ValueId], v: ValueId, mask: Option<ValueId>) {
        let mut args = idx.to_vec();
        args.push(v);
        args.extend(mask);
        self.op0(OpKind::Store { tensor: t, has_mask: mask.is_some() }, args);
    }
    pub fn atomic_add(&mut self, t: usize, idx: &[ValueId], v: ValueId, mask: Option<ValueId>) {
        let mut args = idx.to_vec();
        args.push(v);
        args.extend(mask);
        self.op0(OpKind::AtomicAdd { tensor: t, has_mask: mask.is_some() }, args);
    }

    // --- control flow -------------------------------------------------------------------------

    pub fn yield_(&mut self, vals: Vec<ValueId>) {
        self.op0(OpKind::Yield, vals);
    }

    /// `for iv = lo to hi step st iter(inits)`; `body(kb, iv, carried)` returns the next carried values.
    pub fn for_(
        &mut self,
        lo: ValueId,
        hi: ValueId,
        step: ValueId,
        inits: &[ValueId],
        body: impl FnOnce(&mut KB, ValueId, &[ValueId]) -> Vec<ValueId>,
    ) -> Vec<ValueId> {
        let iv = self.k.new_value(TileType::scalar(DType::I32));
        let carried: Vec<ValueId> = inits.iter().map(|&v| self.k.new_value(self.k.ty(v).clone())).collect();
        let mut blk = Block::new();
        blk.args = std::iter::once(iv).chain(carried.iter().copied()).collect();
        self.stack.push(blk);
        let next = body(self, iv, &carried);
        self.yield_(next);
        let blk = self.stack.pop().unwrap();
        let results: Vec<ValueId> = inits.iter().map(|&v| self.k.new_value(self.k.ty(v).clone())).collect();
        let mut args = vec![lo, hi, step];
        args.extend_from_slice(inits);
        let mut op = Op::new(OpKind::For, args, results.clone());
        op.regions.push(blk);
        self.stack.last_mut().unwrap().ops.push(op);
        results
    }

    pub fn if_(
        &mut self,
        cond: ValueId,
        then: impl FnOnce(&mut KB) -> Vec<ValueId>,
        els: impl FnOnce(&mut KB) -> Vec<ValueId>,
    ) -> Vec<ValueId> {
        self.stack.push(Block::new());
        let t = then(self);
        let tys: Vec<TileType> = t.iter().map(|&v| self.ty(v)).collect();
        self.yield_(t);
        let tb = self.stack.pop().unwrap();
        self.stack.push(Block::new());
        let e = els(self);
        self.yield_(e);
        let eb = self.stack.pop().unwrap();
        let results: Vec<ValueId> = tys.into_iter().map(|t| self.k.new_value(t)).collect();
        let mut op = Op::new(OpKind::If, vec![cond], results.clone());
        op.regions = vec![tb, eb];
        self.stack.last_mut().unwrap().ops.push(op);
        results
    }

    /// Build the grid block: `f` returns the extents.
    pub fn grid(&mut self, f: impl FnOnce(&mut KB) -> Vec<ValueId>) {
        self.stack.push(Block::new());
        let ext = f(self);
        self.yield_(ext);
        self.k.grid = self.stack.pop().unwrap();
    }

    pub fn finish(mut self) -> Kernel {
        assert_eq!(self.stack.len(), 1);
        self.k.body = self.stack.pop().unwrap();
        self.k
    }
}

// --- host helpers -----------------------------------------------------------------------------

pub fn tf32(shape: &[usize], v: &[f32]) -> Arg {
    Arg::Tensor(Tensor::from_f32(DType::F32, shape, v))
}
pub fn tzeros(dt: DType, shape: &[usize]) -> Arg {
    Arg::Tensor(Tensor::zeros(dt, shape))
}
pub fn tens(a: &Arg) -> &Tensor {
    match a {
        Arg::Tensor(t) => t,
        _ => panic!("not a tensor"),
    }
}

/// Deterministic pseudo-random f32 in [-1, 1).
pub fn rnd(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}
