//! Print → parse round trip of programmatically built kernels (each also passes the verifier).

use opc_ir::parser::parse_kernel;
use opc_ir::printer::{print_f64, print_kernel};
use opc_ir::verify::verify;
use opc_ir::*;
use proptest::prelude::*;

fn t(d: DType, s: &[usize]) -> TileType {
    TileType::new(d, s.to_vec())
}

fn sc(d: DType) -> TileType {
    TileType::scalar(d)
}

/// Minimal kernel builder: ops go into the innermost open block.
struct B {
    k: Kernel,
    blocks: Vec<Vec<Op>>,
    loc: u32,
}

impl B {
    fn new(name: &str) -> B {
        B { k: Kernel::new(name), blocks: vec![vec![]], loc: 0 }
    }
    fn dim(&mut self, name: &str) -> SymId {
        self.k.dims.push(DimSym { name: name.into(), konst: false, value: None });
        SymId(self.k.dims.len() as u32 - 1)
    }
    fn tensor(&mut self, name: &str, dtype: DType, dims: Vec<DimExpr>, output: bool) -> usize {
        self.k.params.push(Param { name: name.into(), kind: ParamKind::Tensor { dtype, dims, output } });
        self.k.params.len() - 1
    }
    fn scalar(&mut self, name: &str, dtype: DType) -> usize {
        self.k.params.push(Param { name: name.into(), kind: ParamKind::Scalar { dtype } });
        self.k.params.len() - 1
    }
    fn emit(&mut self, kind: OpKind, args: &[ValueId], tys: &[TileType]) -> Vec<ValueId> {
        let results: Vec<ValueId> = tys.iter().map(|t| self.k.new_value(t.clone())).collect();
        let mut op = Op::new(kind, args.to_vec(), results.clone());
        self.loc += 1;
        if !self.loc.is_multiple_of(3) {
            op.loc = Some(Loc { line: self.loc, col: self.loc % 7 + 1 });
        }
        self.blocks.last_mut().unwrap().push(op);
        results
    }
    fn e(&mut self, kind: OpKind, args: &[ValueId], ty: TileType) -> ValueId {
        self.emit(kind, args, &[ty])[0]
    }
    fn konst(&mut self, s: Scalar, ty: TileType) -> ValueId {
        self.e(OpKind::Const(s), &[], ty)
    }
    fn i32c(&mut self, i: i64) -> ValueId {
        self.konst(Scalar::Int(i), sc(DType::I32))
    }
    fn bin(&mut self, b: BinaryOp, x: ValueId, y: ValueId) -> ValueId {
        let ty = self.k.ty(x).clone();
        self.e(OpKind::Binary(b), &[x, y], ty)
    }
    /// Ends the grid block with `yield` of `extents`.
    fn end_grid(&mut self, extents: &[ValueId]) {
        self.emit(OpKind::Yield, extents, &[]);
        self.k.grid.ops = std::mem::take(&mut self.blocks[0]);
    }
    /// Grid extent `cdiv(dim, tile)`.
    fn cdiv(&mut self, d: SymId, tile: i64) -> ValueId {
        let n = self.e(OpKind::Dim(d), &[], sc(DType::I32));
        let tm1 = self.i32c(tile - 1);
        let t = self.i32c(tile);
        let s = self.bin(BinaryOp::Add, n, tm1);
        self.bin(BinaryOp::Div, s, t)
    }
    /// `pid * tile + arange(tile)`, as an i32[tile].
    fn tile_index(&mut self, axis: u8, tile: usize) -> ValueId {
        let pid = self.e(OpKind::ProgramId(axis), &[], sc(DType::I32));
        let tl = self.i32c(tile as i64);
        let base = self.bin(BinaryOp::Mul, pid, tl);
        let base = self.splat(base, &[tile]);
        let ar = self.e(OpKind::Arange, &[], t(DType::I32, &[tile]));
        self.bin(BinaryOp::Add, base, ar)
    }
    /// Broadcast a scalar to `shape`.
    fn splat(&mut self, x: ValueId, shape: &[usize]) -> ValueId {
        let d = self.k.ty(x).dtype;
        let mut v = x;
        for i in 0..shape.len() {
            v = self.e(OpKind::ExpandDims(0), &[v], t(d, &vec![1; i + 1]));
        }
        self.e(OpKind::Broadcast, &[v], t(d, shape))
    }
    /// `for iv in lo..hi step 1` carrying `inits`; `body(self, iv, carried) -> next carried`.
    fn for_loop(&mut self, lo: ValueId, hi: ValueId, inits: &[ValueId], body: impl FnOnce(&mut B, ValueId, &[ValueId]) -> Vec<ValueId>) -> Vec<ValueId> {
        let step = self.i32c(1);
        let iv = self.k.new_value(sc(DType::I32));
        let carried: Vec<ValueId> = inits.iter().map(|&v| self.k.new_value(self.k.ty(v).clone())).collect();
        self.blocks.push(vec![]);
        let next = body(self, iv, &carried);
        self.emit(OpKind::Yield, &next, &[]);
        let ops = self.blocks.pop().unwrap();
        let tys: Vec<TileType> = inits.iter().map(|&v| self.k.ty(v).clone()).collect();
        let mut args = vec![lo, hi, step];
        args.extend(inits);
        let res = self.emit(OpKind::For, &args, &tys);
        let mut rargs = vec![iv];
        rargs.extend(carried);
        self.blocks.last_mut().unwrap().last_mut().unwrap().regions.push(Block { args: rargs, ops });
        res
    }
    fn finish(mut self) -> Kernel {
        self.k.body.ops = self.blocks.pop().unwrap();
        self.k
    }
}

fn sym(s: SymId) -> DimExpr {
    DimExpr::Sym(s)
}

#[track_caller]
fn round_trip(k: &Kernel) -> String {
    if let Err(e) = verify(k) {
        panic!("{e}\n{}", print_kernel(k));
    }
    let text = print_kernel(k);
    let back = parse_kernel(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(&back, k, "round trip changed the kernel:\n{text}");
    assert_eq!(print_kernel(&back), text);
    text
}

fn matmul() -> Kernel {
    let mut b = B::new("matmul");
    let (m, n, kk) = (b.dim("M"), b.dim("N"), b.dim("K"));
    let a = b.tensor("a", DType::F32, vec![sym(m), sym(kk)], false);
    let bt = b.tensor("b", DType::F32, vec![sym(kk), sym(n)], false);
    let c = b.tensor("c", DType::F32, vec![sym(m), sym(n)], true);
    let alpha = b.scalar("alpha", DType::F32);
    b.k.constraints.push(Constraint::MultipleOf(sym(n), DimExpr::Const(32)));
    b.k.constraints.push(Constraint::Range(sym(m), Some(1), Some(4096)));
    b.k.constraints.push(Constraint::Range(sym(kk), Some(1), None));
    b.k.constraints.push(Constraint::Range(sym(kk), None, Some(8192)));
    b.k.constraints.push(Constraint::Range(sym(n), None, None));
    b.k.tunables.push(Tunable { name: "BM".into(), level: 1, space: vec![16, 32, 64], value: 32, loc: Some(Loc { line: 3, col: 12 }) });
    b.k.tunables.push(Tunable { name: "BK".into(), level: 2, space: vec![8, 16], value: 8, loc: None });
    let g0 = b.cdiv(m, 32);
    let g1 = b.cdiv(n, 32);
    b.end_grid(&[g0, g1]);
    let rows = b.tile_index(0, 32);
    let cols = b.tile_index(1, 32);
    let acc0 = b.konst(Scalar::Float(0.0), t(DType::F32, &[32, 32]));
    let kdim = b.e(OpKind::Dim(kk), &[], sc(DType::I32));
    let bk = b.i32c(8);
    let bkm1 = b.i32c(7);
    let kt = b.bin(BinaryOp::Add, kdim, bkm1);
    let kt = b.bin(BinaryOp::Div, kt, bk);
    let zero = b.i32c(0);
    let acc = b.for_loop(zero, kt, &[acc0], |b, k0, acc| {
        let base = b.bin(BinaryOp::Mul, k0, bk);
        let base = b.splat(base, &[8]);
        let ar = b.e(OpKind::Arange, &[], t(DType::I32, &[8]));
        let ks = b.bin(BinaryOp::Add, base, ar);
        let x = b.e(OpKind::Load { tensor: a, has_mask: false, has_other: false }, &[rows, ks], t(DType::F32, &[32, 8]));
        let y = b.e(OpKind::Load { tensor: bt, has_mask: false, has_other: false }, &[ks, cols], t(DType::F32, &[8, 32]));
        vec![b.e(OpKind::Dot, &[x, y, acc[0]], t(DType::F32, &[32, 32]))]
    });
    let al = b.e(OpKind::ScalarParam(alpha), &[], sc(DType::F32));
    let al = b.splat(al, &[32, 32]);
    let out = b.bin(BinaryOp::Mul, acc[0], al);
    let mdim = b.e(OpKind::Dim(m), &[], sc(DType::I32));
    let mdim = b.splat(mdim, &[32]);
    let rmask = b.e(OpKind::Cmp(CmpPred::Lt), &[rows, mdim], t(DType::Bool, &[32]));
    let rmask = b.e(OpKind::ExpandDims(1), &[rmask], t(DType::Bool, &[32, 1]));
    let mask = b.e(OpKind::Broadcast, &[rmask], t(DType::Bool, &[32, 32]));
    b.emit(OpKind::Store { tensor: c, has_mask: true }, &[rows, cols, out, mask], &[]);
    b.finish()
}

/// Online softmax over rows of `s[R, C]`: a loop carrying the running max, sum and output.
fn online_softmax() -> Kernel {
    let mut b = B::new("online_softmax");
    let (r, c) = (b.dim("R"), b.dim("C"));
    b.k.dims[1].konst = true;
    b.k.dims[1].value = Some(256);
    let s = b.tensor("s", DType::BF16, vec![sym(r), sym(c)], false);
    let o = b.tensor("out", DType::F32, vec![sym(r)], true);
    b.k.constraints.push(Constraint::OneOf(sym(c), vec![128, 256]));
    let g = b.cdiv(r, 16);
    b.end_grid(&[g]);
    let rows = b.tile_index(0, 16);
    let ninf = b.konst(Scalar::Float(f64::NEG_INFINITY), t(DType::F32, &[16]));
    let zero = b.konst(Scalar::Float(0.0), t(DType::F32, &[16]));
    let lo = b.i32c(0);
    let hi = b.i32c(4);
    let res = b.for_loop(lo, hi, &[ninf, zero, zero], |b, j, st| {
        let base = b.bin(BinaryOp::Mul, j, hi);
        let base = b.splat(base, &[64]);
        let ar = b.e(OpKind::Arange, &[], t(DType::I32, &[64]));
        let cols = b.bin(BinaryOp::Add, base, ar);
        let other = b.konst(Scalar::Float(f64::NEG_INFINITY), sc(DType::BF16));
        let mask = b.konst(Scalar::Bool(true), t(DType::Bool, &[16, 64]));
        let x = b.e(OpKind::Load { tensor: s, has_mask: true, has_other: true }, &[rows, cols, mask, other], t(DType::BF16, &[16, 64]));
        let x = b.e(OpKind::Cast(Rounding::Rne), &[x], t(DType::F32, &[16, 64]));
        let mx = b.e(OpKind::Reduce { op: ReduceOp::Max, axis: 1 }, &[x], t(DType::F32, &[16]));
        let m2 = b.bin(BinaryOp::Max, st[0], mx);
        let d = b.bin(BinaryOp::Sub, st[0], m2);
        let corr = b.e(OpKind::Unary(UnaryOp::Exp), &[d], t(DType::F32, &[16]));
        let m2e = b.e(OpKind::ExpandDims(1), &[m2], t(DType::F32, &[16, 1]));
        let m2b = b.e(OpKind::Broadcast, &[m2e], t(DType::F32, &[16, 64]));
        let xs = b.bin(BinaryOp::Sub, x, m2b);
        let p = b.e(OpKind::Unary(UnaryOp::Exp2), &[xs], t(DType::F32, &[16, 64]));
        let ps = b.e(OpKind::Reduce { op: ReduceOp::Sum, axis: 1 }, &[p], t(DType::F32, &[16]));
        let l = b.bin(BinaryOp::Mul, st[1], corr);
        let l = b.bin(BinaryOp::Add, l, ps);
        let am = b.e(OpKind::Reduce { op: ReduceOp::Argmax, axis: 1 }, &[x], t(DType::I32, &[16]));
        let amf = b.e(OpKind::Cast(Rounding::Rne), &[am], t(DType::F32, &[16]));
        let acc = b.bin(BinaryOp::Add, st[2], amf);
        vec![m2, l, acc]
    });
    let lse = b.e(OpKind::Unary(UnaryOp::Log), &[res[1]], t(DType::F32, &[16]));
    let v = b.bin(BinaryOp::Add, res[0], lse);
    let v = b.bin(BinaryOp::Add, v, res[2]);
    b.emit(OpKind::Store { tensor: o, has_mask: false }, &[rows, v], &[]);
    b.finish()
}

/// Everything else: `if` with results, packed dtypes, every cast rounding, bitcast, scan,
/// permute, reshape, argmin, atomic_add, all unary / binary / cmp ops, 3 grid extents, quoted
/// names, nested dim expressions and ids that nothing defines.
fn zoo() -> Kernel {
    let mut b = B::new("zoo-kernel");
    let (x, y, z) = (b.dim("A"), b.dim("B"), b.dim("weird dim"));
    b.k.dims[2].konst = true;
    let div = |a: DimExpr, b: DimExpr| DimExpr::Div(Box::new(a), Box::new(b));
    let mul = |a: DimExpr, b: DimExpr| DimExpr::Mul(Box::new(a), Box::new(b));
    let add = |a: DimExpr, b: DimExpr| DimExpr::Add(Box::new(a), Box::new(b));
    let sub = |a: DimExpr, b: DimExpr| DimExpr::Sub(Box::new(a), Box::new(b));
    let codes = b.tensor("codes", DType::E2M1, vec![sym(x), div(sym(y), DimExpr::Const(32))], false);
    let w4 = b.tensor("w4", DType::I4, vec![mul(DimExpr::Const(2), sym(x))], false);
    let scales = b.tensor("scales", DType::E8M0, vec![mul(add(sym(x), sym(y)), sym(z))], false);
    let f = b.tensor("f", DType::F32, vec![sub(sym(x), sub(sym(y), DimExpr::Const(-3))), sub(sub(sym(x), sym(y)), sym(z))], true);
    let hist = b.tensor("hist", DType::I32, vec![div(sym(x), div(sym(y), sym(z)))], true);
    let q = b.tensor("q\"uote\n", DType::I4, vec![sym(x)], true);
    let flag = b.scalar("flag", DType::Bool);
    let nint = b.scalar("n", DType::I32);
    b.k.constraints.push(Constraint::MultipleOf(add(sym(x), sym(y)), mul(sym(z), DimExpr::Const(2))));
    let g0 = b.cdiv(x, 8);
    let one = b.i32c(1);
    let tr = b.konst(Scalar::Bool(true), sc(DType::Bool));
    let two = b.i32c(2);
    let g1 = b.e(OpKind::Select, &[tr, one, two], sc(DType::I32));
    let gf = b.e(OpKind::Cast(Rounding::Rne), &[g1], sc(DType::F32));
    let g2 = b.e(OpKind::Cast(Rounding::Ceil), &[gf], sc(DType::I32));
    b.end_grid(&[g0, g1, g2]);

    let idx = b.tile_index(0, 8);
    let j = b.e(OpKind::NumPrograms(2), &[], sc(DType::I32));
    let j4 = b.e(OpKind::Arange, &[], t(DType::I32, &[4]));
    let m = b.konst(Scalar::Bool(false), t(DType::Bool, &[8, 4]));
    let oc = b.konst(Scalar::Int(3), sc(DType::I4));
    let _ = oc;
    // Packed loads with mask + other.
    let cz = b.i32c(0);
    let other_c = b.e(OpKind::Bitcast, &[oc], sc(DType::E2M1));
    let cd = b.e(OpKind::Load { tensor: codes, has_mask: true, has_other: true }, &[idx, j4, m, other_c], t(DType::E2M1, &[8, 4]));
    let w = b.e(OpKind::Load { tensor: w4, has_mask: false, has_other: true }, &[idx, oc], t(DType::I4, &[8]));
    let sm = b.konst(Scalar::Bool(true), sc(DType::Bool));
    let sc8 = b.e(OpKind::Load { tensor: scales, has_mask: true, has_other: false }, &[j, sm], sc(DType::E8M0));
    let _ = cz;
    // Casts with each rounding, bitcasts.
    let cf = b.e(OpKind::Cast(Rounding::Rne), &[cd], t(DType::F32, &[8, 4]));
    let wf = b.e(OpKind::Cast(Rounding::Rtz), &[w], t(DType::F16, &[8]));
    let sf = b.e(OpKind::Cast(Rounding::Floor), &[sc8], sc(DType::F32));
    let wi = b.e(OpKind::Cast(Rounding::Ceil), &[wf], t(DType::I8, &[8]));
    let wu = b.e(OpKind::Bitcast, &[wi], t(DType::U8, &[8]));
    let _we = b.e(OpKind::Bitcast, &[wu], t(DType::E8M0, &[8]));
    let fb = b.e(OpKind::Bitcast, &[cf], t(DType::I32, &[8, 4]));
    let sfs = b.splat(sf, &[8, 4]);
    let mut v = b.bin(BinaryOp::Mul, cf, sfs);
    for u in UnaryOp::ALL {
        match u {
            UnaryOp::Not => {
                let n = b.e(OpKind::Unary(u), &[fb], t(DType::I32, &[8, 4]));
                let _ = b.e(OpKind::Unary(u), &[m], t(DType::Bool, &[8, 4]));
                let _ = n;
            }
            UnaryOp::IsNan | UnaryOp::IsInf => {
                b.e(OpKind::Unary(u), &[v], t(DType::Bool, &[8, 4]));
            }
            _ => v = b.e(OpKind::Unary(u), &[v], t(DType::F32, &[8, 4])),
        }
    }
    for op in BinaryOp::ALL {
        if op.int_only() {
            let _ = b.bin(op, fb, fb);
        } else {
            v = b.bin(op, v, v);
        }
    }
    for p in CmpPred::ALL {
        b.e(OpKind::Cmp(p), &[v, cf], t(DType::Bool, &[8, 4]));
    }
    let pv = b.e(OpKind::Permute(vec![1, 0]), &[v], t(DType::F32, &[4, 8]));
    let rv = b.e(OpKind::Reshape, &[pv], t(DType::F32, &[2, 2, 8]));
    let p3 = b.e(OpKind::Permute(vec![2, 0, 1]), &[rv], t(DType::F32, &[8, 2, 2]));
    let cs = b.e(OpKind::Scan { op: ScanOp::Cumsum, axis: 2 }, &[p3], t(DType::F32, &[8, 2, 2]));
    let am = b.e(OpKind::Reduce { op: ReduceOp::Argmin, axis: 0 }, &[cs], t(DType::I32, &[2, 2]));
    let mn = b.e(OpKind::Reduce { op: ReduceOp::Min, axis: 1 }, &[am], t(DType::I32, &[2]));
    // Integer dot without accumulator.
    let i8a = b.konst(Scalar::Int(-128), t(DType::I8, &[2, 3]));
    let i8b = b.konst(Scalar::Int(127), t(DType::I8, &[3, 2]));
    let _d = b.e(OpKind::Dot, &[i8a, i8b], t(DType::I32, &[2, 2]));
    // `if` with two results.
    let fl = b.e(OpKind::ScalarParam(flag), &[], sc(DType::Bool));
    let outer = b.konst(Scalar::Float(-0.0), sc(DType::F32));
    b.blocks.push(vec![]);
    let a1 = b.konst(Scalar::Float(1e-7), sc(DType::F32));
    b.emit(OpKind::Yield, &[a1, mn], &[]);
    let then_ops = b.blocks.pop().unwrap();
    b.blocks.push(vec![]);
    let a2 = b.konst(Scalar::Float(f64::INFINITY), sc(DType::F32));
    let ni = b.e(OpKind::ScalarParam(nint), &[], sc(DType::I32));
    let ni = b.splat(ni, &[2]);
    let _ = outer;
    b.emit(OpKind::Yield, &[outer, ni], &[]);
    let else_ops = b.blocks.pop().unwrap();
    let _ = a2;
    let ir = b.emit(OpKind::If, &[fl], &[sc(DType::F32), t(DType::I32, &[2])]);
    let last = b.blocks.last_mut().unwrap().last_mut().unwrap();
    last.regions = vec![Block { args: vec![], ops: then_ops }, Block { args: vec![], ops: else_ops }];
    // An `if` without results, holding a loop without carried values.
    b.blocks.push(vec![]);
    let lo = b.i32c(0);
    b.for_loop(lo, j, &[], |b, iv, _| {
        let ivs = b.splat(iv, &[2]);
        b.emit(OpKind::AtomicAdd { tensor: hist, has_mask: false }, &[ivs, ir[1]], &[]);
        vec![]
    });
    b.emit(OpKind::Yield, &[], &[]);
    let then_ops = b.blocks.pop().unwrap();
    b.emit(OpKind::If, &[fl], &[]);
    b.blocks.last_mut().unwrap().last_mut().unwrap().regions =
        vec![Block { args: vec![], ops: then_ops }, Block { args: vec![], ops: vec![Op::new(OpKind::Yield, vec![], vec![])] }];
    let fv = b.splat(ir[0], &[8, 8]);
    let mk = b.konst(Scalar::Bool(true), t(DType::Bool, &[8, 8]));
    b.emit(OpKind::Store { tensor: f, has_mask: true }, &[idx, idx, fv, mk], &[]);
    let wq = b.e(OpKind::Cast(Rounding::Floor), &[v], t(DType::I4, &[8, 4]));
    let wq = b.e(OpKind::Reshape, &[wq], t(DType::I4, &[32]));
    let i32s = b.e(OpKind::Arange, &[], t(DType::I32, &[32]));
    b.emit(OpKind::Store { tensor: q, has_mask: false }, &[i32s, wq], &[]);
    // Ids that nothing defines keep their types.
    b.k.new_value(t(DType::F16, &[3, 5]));
    let mut sh = t(DType::F32, &[16]);
    sh.space = MemSpace::Shared;
    b.k.new_value(sh);
    b.finish()
}

#[test]
fn matmul_round_trips() {
    let text = round_trip(&matmul());
    assert!(text.starts_with("kernel @matmul\n  param @a: global f32[M, K]\n"), "{text}");
    assert!(text.contains("  param @c: out global f32[M, N]\n  param @alpha: f32\n  dim @M\n"), "{text}");
    assert!(text.contains("  constraint @N % 32 == 0\n  constraint @M in [1, 4096]\n  constraint @K >= 1\n  constraint @K <= 8192\n  constraint @N in [_, _]\n"), "{text}");
    assert!(text.contains("  tunable @BM level1 in {16, 32, 64} = 32 loc(3:12)\n  tunable @BK level2 in {8, 16} = 8\n"), "{text}");
    assert!(text.contains(" = for %"), "{text}");
    assert!(text.contains("store @c[%"), "{text}");
    assert!(!text.contains("values {"), "{text}");
}

#[test]
fn online_softmax_round_trips() {
    let text = round_trip(&online_softmax());
    assert!(text.contains("  dim @C const = 256\n"), "{text}");
    assert!(text.contains("const -inf : f32[16]"), "{text}");
    assert!(text.contains(" mask %"), "{text}");
}

#[test]
fn zoo_round_trips() {
    let text = round_trip(&zoo());
    for needle in [
        "kernel @\"zoo-kernel\"",
        "param @codes: global e2m1[A, B / 32]",
        "param @scales: global e8m0[(A + B) * @\"weird dim\"]",
        "param @f: out global f32[A - (B - -3), A - B - @\"weird dim\"]",
        "param @hist: out global i32[A / (B / @\"weird dim\")]",
        "param @\"q\\\"uote\\n\": out global i4[A]",
        "dim @\"weird dim\" const\n",
        "constraint (@A + @B) % (@\"weird dim\" * 2) == 0",
        "cast rtz %", "cast floor %", "cast ceil %", "cast rne %",
        "scan cumsum %", "reduce argmin %", "perm [2, 0, 1]", "atomic_add @hist[%",
        "const 1e-7 : f32", "const -0.0 : f32", "const inf : f32", "const -128 : i8[2, 3]",
        "} else {", "num_programs 2 : i32", "values {\n", ": shared f32[16]\n",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
}

#[test]
fn nan_constants_keep_their_bits() {
    for bits in [f64::NAN.to_bits(), (-f64::NAN).to_bits(), 0x7ff0_0000_0000_0001, 0xfff8_0000_0000_1234] {
        let mut k = Kernel::new("n");
        let v = k.new_value(TileType::scalar(DType::F32));
        k.body.ops.push(Op::new(OpKind::Const(Scalar::Float(f64::from_bits(bits))), vec![], vec![v]));
        let text = print_kernel(&k);
        let back = parse_kernel(&text).unwrap();
        let OpKind::Const(Scalar::Float(x)) = back.body.ops[0].kind else { panic!() };
        assert_eq!(x.to_bits(), bits, "{text}");
        assert_eq!(print_kernel(&back), text);
    }
}

#[test]
fn hand_written_text_parses() {
    let text = "
        // comments and free layout are fine
        kernel @k param @x: global f32[N] param @y: out global f32[N] dim @N
        grid { %0 = dim @N : i32 yield %0 }
        body {
          %1 = program_id 0 : i32
          %2 = load @x[%1] : f32
          %3 = exp %2 : f32 loc(7:3)
          store @y[%1], %3
        }";
    let k = parse_kernel(text).unwrap();
    verify(&k).unwrap();
    assert_eq!(k.body.ops[2].loc, Some(Loc { line: 7, col: 3 }));
    assert_eq!(parse_kernel(&print_kernel(&k)).unwrap(), k);
}

/// Random elementwise chain over one tile type, ending in a store.
fn chain_kernel(float: bool, shape: Vec<usize>, steps: Vec<(u8, u8, u8, bool)>, c: f64) -> Kernel {
    let dt = if float { DType::F32 } else { DType::I32 };
    let ty = t(dt, &shape);
    let mut b = B::new("chain");
    let n = b.dim("N");
    let dims: Vec<DimExpr> = shape.iter().map(|_| sym(n)).collect();
    let x = b.tensor("x", dt, dims.clone(), false);
    let out = b.tensor("out", dt, dims, true);
    let g = b.e(OpKind::Dim(n), &[], sc(DType::I32));
    b.end_grid(&[g]);
    let idx: Vec<ValueId> = shape
        .iter()
        .map(|&d| b.e(OpKind::Arange, &[], t(DType::I32, &[d])))
        .collect();
    // Index shapes concatenate: one 1-D index per dim gives the full shape.
    let mut pool = vec![b.e(OpKind::Load { tensor: x, has_mask: false, has_other: false }, &idx, ty.clone())];
    let cv = if float { Scalar::Float(c) } else { Scalar::Int(c as i64) };
    pool.push(b.konst(cv, ty.clone()));
    for (kind, i, j, loc) in steps {
        let (a, bb) = (pool[i as usize % pool.len()], pool[j as usize % pool.len()]);
        let v = match kind % 4 {
            0 => {
                let ops: Vec<UnaryOp> = UnaryOp::ALL
                    .into_iter()
                    .filter(|u| !matches!(u, UnaryOp::IsNan | UnaryOp::IsInf | UnaryOp::Not) && (float || !u.float_only()))
                    .collect();
                b.e(OpKind::Unary(ops[kind as usize / 4 % ops.len()]), &[a], ty.clone())
            }
            1 => {
                let ops: Vec<BinaryOp> = BinaryOp::ALL.into_iter().filter(|o| !float || !o.int_only()).collect();
                b.bin(ops[kind as usize / 4 % ops.len()], a, bb)
            }
            2 => {
                let c = b.e(OpKind::Cmp(CmpPred::ALL[kind as usize / 4 % 6]), &[a, bb], ty.with_dtype(DType::Bool));
                b.e(OpKind::Select, &[c, bb, a], ty.clone())
            }
            _ => {
                let other = if float { DType::BF16 } else { DType::F32 };
                let r = [Rounding::Rne, Rounding::Rtz, Rounding::Floor, Rounding::Ceil][kind as usize / 4 % 4];
                let y = b.e(OpKind::Cast(r), &[a], ty.with_dtype(other));
                b.e(OpKind::Cast(r), &[y], ty.clone())
            }
        };
        if !loc {
            b.blocks.last_mut().unwrap().last_mut().unwrap().loc = None;
        }
        pool.push(v);
    }
    let last = *pool.last().unwrap();
    b.emit(OpKind::Store { tensor: out, has_mask: false }, &[idx, vec![last]].concat(), &[]);
    b.finish()
}

proptest! {
    #[test]
    fn random_chains_round_trip(
        float in any::<bool>(),
        shape in prop::collection::vec(1usize..5, 0..3),
        steps in prop::collection::vec((any::<u8>(), any::<u8>(), any::<u8>(), any::<bool>()), 0..24),
        c in any::<f64>().prop_filter("not nan", |x| !x.is_nan()),
    ) {
        let k = chain_kernel(float, shape, steps, if float { c } else { c.clamp(-1e9, 1e9) });
        round_trip(&k);
    }

    #[test]
    fn floats_print_exactly(x in any::<f64>()) {
        let s = print_f64(x);
        let mut k = Kernel::new("f");
        let v = k.new_value(TileType::scalar(DType::F32));
        k.body.ops.push(Op::new(OpKind::Const(Scalar::Float(x)), vec![], vec![v]));
        let back = parse_kernel(&print_kernel(&k)).unwrap();
        let OpKind::Const(Scalar::Float(y)) = back.body.ops[0].kind else { panic!("{s}") };
        prop_assert_eq!(y.to_bits(), x.to_bits(), "{}", s);
    }
}

