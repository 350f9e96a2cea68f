//! Tile ops on the vector unit: shape views, uniform (`Splat`) and index (`Affine`)
//! propagation, elementwise ops, casts, compare + select, and reductions.
//!
//! Every vector instruction is the count form over the padded tile (`Add(dst, a, b, n)`), so
//! the padding lanes compute garbage that nothing reads. Row broadcasts (`x[:, None]`) become
//! one scalar-operand instruction per row (`Muls(dst[r·P], a[r·P], x(r), P)`), column
//! broadcasts (`x[None, :]`) one tensor instruction per row. bf16 arithmetic is done in f32
//! (the 910B vector unit has no bf16 arithmetic): operands are `Cast` up, the result `Cast`
//! down with `CAST_RINT` (one rounding, as in the IR).

use opc_ir::{BinaryOp, CmpPred, DType, Op, OpKind, Rounding, UnaryOp, ValueId};

use super::{c0, ctype, layout, scalar, scalar_ctype, Lower, Pred, Val};
use crate::ascendc::lir::{BufId, Effect, Pipe, Res};
use crate::Result;

/// How an elementwise operand is read by vector instructions.
#[derive(Clone, Debug)]
enum Operand {
    Dense(BufId),
    Scalar(String),
    /// Element (r, c) = buf[off + r·stride] (a per-row scalar).
    Row {
        buf: BufId,
        off: i64,
        stride: i64,
    },
    /// Element (r, c) = buf[c] (a row shared by every row).
    Col(BufId),
}

fn vec_dtype(d: DType) -> bool {
    matches!(d, DType::F32 | DType::F16)
}

impl Lower<'_> {
    /// Non-scalar results of shape, elementwise and constant ops.
    pub(super) fn tile_op(&mut self, op: &Op) -> Result<()> {
        let r = op.results[0];
        match &op.kind {
            OpKind::Const(c) => {
                let lit = scalar::literal(*c, self.dtype(r));
                self.set(r, Val::Splat(lit));
                Ok(())
            }
            OpKind::Arange => {
                // A row arange of a row-split vector program starts at this sub-block's rows.
                let base = if self.row_aranges.contains(&r) { "subRow_" } else { "0" };
                self.set(r, Val::Affine { base: base.into(), coefs: vec![1] });
                Ok(())
            }
            OpKind::Broadcast | OpKind::ExpandDims(_) | OpKind::Reshape | OpKind::Permute(_) => self.view_op(op),
            OpKind::Unary(_) | OpKind::Binary(_) | OpKind::Cmp(_) | OpKind::Select | OpKind::Cast(_) | OpKind::Bitcast => self.elementwise(op),
            _ => Err(self.unsupported(op, "unexpected tile op")),
        }
    }

    /// In the cube program / peer skeleton: the index arithmetic that stays symbolic
    /// (`Splat` / `Affine`, no instructions); anything else is left undefined.
    pub(super) fn symbolic_tile_op(&mut self, op: &Op) -> Result<()> {
        let symbolic = |l: &Lower, v: ValueId| matches!(l.vals[v.0 as usize], Some(Val::Scalar(_) | Val::Splat(_) | Val::Affine { .. }));
        let uniform = |l: &Lower, v: ValueId| matches!(l.vals[v.0 as usize], Some(Val::Scalar(_) | Val::Splat(_)));
        match &op.kind {
            OpKind::Const(_) | OpKind::Arange => self.tile_op(op),
            OpKind::Broadcast | OpKind::ExpandDims(_) | OpKind::Permute(_) if symbolic(self, op.args[0]) => self.view_op(op),
            OpKind::Reshape if uniform(self, op.args[0]) => self.view_op(op),
            OpKind::Unary(_) | OpKind::Binary(_) | OpKind::Cmp(_) | OpKind::Select | OpKind::Cast(_) | OpKind::Bitcast
                if op.args.iter().all(|a| uniform(self, *a)) =>
            {
                self.elementwise(op)
            }
            OpKind::Binary(_) if op.args.iter().all(|a| symbolic(self, *a)) => {
                if let Some(v) = self.affine_op(op) {
                    self.set(op.results[0], v);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn view_op(&mut self, op: &Op) -> Result<()> {
        let r = op.results[0];
        let x = op.args[0];
        let (xs, rs) = (self.shape(x), self.shape(r));
        // How result dims map to source dims: Some(source dim) or None (new size-1 / stretched).
        let map: Option<Vec<Option<usize>>> = match &op.kind {
            OpKind::ExpandDims(a) => {
                let mut m: Vec<Option<usize>> = (0..xs.len()).map(Some).collect();
                m.insert(*a as usize, None);
                Some(m)
            }
            OpKind::Broadcast => Some((0..rs.len()).map(|i| if xs.get(i) == Some(&rs[i]) { Some(i) } else { None }).collect()),
            OpKind::Permute(p) => Some(p.iter().map(|&i| Some(i as usize)).collect()),
            OpKind::Reshape => {
                // Only size-1 dims inserted or removed: the non-1 dims keep their order.
                let a: Vec<usize> = xs.iter().enumerate().filter(|(_, n)| **n != 1).map(|(i, _)| i).collect();
                let b: Vec<usize> = rs.iter().enumerate().filter(|(_, n)| **n != 1).map(|(i, _)| i).collect();
                if a.len() == b.len() && a.iter().zip(&b).all(|(i, j)| xs[*i] == rs[*j]) {
                    let mut m = vec![None; rs.len()];
                    for (i, j) in a.iter().zip(&b) {
                        m[*j] = Some(*i);
                    }
                    Some(m)
                } else {
                    None
                }
            }
            _ => None,
        };
        let v = match (self.val(x), map) {
            (Val::Scalar(s) | Val::Splat(s), _) => Val::Splat(s),
            // `trans` of a cube operand in GM: the cube reads the untransposed tile (`cube_b`).
            (Val::Gm(i), _) => Val::Gm(i),
            (Val::Pred(p), Some(m)) => Val::Pred(p.remap(&m)),
            (Val::Affine { base, coefs }, Some(m)) => Val::Affine { base, coefs: m.iter().map(|s| s.map(|i| coefs[i]).unwrap_or(0)).collect() },
            (Val::Tile(b), Some(m)) => {
                let st = layout(self.dtype(x), &xs).0;
                Val::View { buf: b, off: 0, strides: m.iter().map(|s| s.map(|i| st[i]).unwrap_or(0)).collect() }
            }
            (Val::View { buf, off, strides }, Some(m)) => Val::View { buf, off, strides: m.iter().map(|s| s.map(|i| strides[i]).unwrap_or(0)).collect() },
            _ => {
                // A general reshape: copy element by element into the new layout.
                let d = self.dtype(r);
                let src = self.materialize(op, x)?;
                let dst = self.alloc(d, &rs, self.last_use(r), format!("%{} {}", r.0, self.k.ty(r)));
                let (xs2, rs2) = (xs.clone(), rs.clone());
                let name = self.bname(src);
                self.scalar_fill(dst, d, &rs, vec![Res::Buf(src)], &move |_, idx| {
                    // Row-major linear index in the result, unravelled in the source.
                    let mut lin = "0".to_string();
                    for (i, n) in idx.iter().zip(&rs2) {
                        lin = format!("({lin}) * {n} + {i}");
                    }
                    let (st, _) = layout(d, &xs2);
                    let mut off = String::from("0");
                    let mut rem = format!("({lin})");
                    for (k, n) in xs2.iter().enumerate().rev() {
                        off = format!("{off} + (({rem}) % {n}) * {}", st[k]);
                        rem = format!("({rem}) / {n}");
                    }
                    format!("{name}.GetValue({off})")
                });
                Val::Tile(dst)
            }
        };
        let v = match v {
            Val::View { buf, off: 0, strides } if strides == layout(self.dtype(r), &rs).0 => Val::Tile(buf),
            v => v,
        };
        self.set(r, v);
        Ok(())
    }

    /// A dense operand tile whose life ends at this op, of the result's dtype and shape: the
    /// result can be computed in place (elementwise vector instructions allow dst == src).
    pub(super) fn reusable(&self, b: BufId, d: DType, shape: &[usize]) -> Option<BufId> {
        let buf = &self.out.bufs[b];
        let (_, elems) = layout(d, shape);
        let bytes = crate::ascendc::lir::round_up(elems * super::elem_bytes(d), 256);
        (buf.live.1 == self.pos() && buf.elem == ctype(d) && buf.bytes == bytes && !buf.what.starts_with("loop-carried") && !buf.what.starts_with("if result"))
            .then_some(b)
    }

    /// Take over buffer `b` for the result `r` (in place).
    pub(super) fn adopt(&mut self, b: BufId, r: ValueId) -> BufId {
        let until = self.last_use(r);
        let buf = &mut self.out.bufs[b];
        buf.live.1 = buf.live.1.max(until);
        buf.what = format!("{}, then %{} in place", buf.what, r.0);
        b
    }

    /// Give a uniform scalar expression a name (evaluated once).
    fn splat(&mut self, r: ValueId, e: String) {
        let name = format!("u{}", r.0);
        self.line(format!("const {} {name} = {e};", scalar_ctype(self.dtype(r))));
        self.set(r, Val::Splat(name));
    }

    fn elementwise(&mut self, op: &Op) -> Result<()> {
        let r = op.results[0];
        let d = self.dtype(r);
        let from = self.dtype(op.args[0]);
        let vals: Vec<Val> = op.args.iter().map(|a| self.val(*a)).collect();
        // Uniform operands: a uniform result.
        if vals.iter().all(|v| matches!(v, Val::Scalar(_) | Val::Splat(_))) {
            let a: Vec<String> = op.args.iter().map(|a| self.scalar(*a).unwrap_or_default()).collect();
            let e = match scalar::expr(&op.kind, from, d, &a) {
                Some(e) => e,
                None => self.scalar_via_vector(op, from, d, &a)?,
            };
            self.splat(r, e);
            return Ok(());
        }
        // Index arithmetic stays symbolic.
        if let Some(v) = self.affine_op(op) {
            self.set(r, v);
            return Ok(());
        }
        // Masks built from positions stay predicates (`Val::Pred`).
        if let Some(p) = self.pred_op(op) {
            self.set(r, Val::Pred(p));
            return Ok(());
        }
        // A compare whose only use is a select is fused into it (`Compare` + `Select`).
        if matches!(op.kind, OpKind::Cmp(_)) && self.cmp_fusable(op) {
            self.set(r, Val::Scalar(String::new()));
            return Ok(());
        }
        if self.vector_elementwise(op)? {
            return Ok(());
        }
        self.scalar_elementwise(op)
    }

    fn affine_op(&self, op: &Op) -> Option<Val> {
        let a = |i: usize| self.val(op.args[i]);
        let as_aff = |v: Val, rank: usize| -> Option<(String, Vec<i64>)> {
            match v {
                Val::Affine { base, coefs } => Some((base, coefs)),
                Val::Scalar(s) | Val::Splat(s) => Some((s, vec![0; rank])),
                _ => None,
            }
        };
        if self.dtype(op.results[0]) != DType::I32 {
            return None;
        }
        let rank = self.shape(op.results[0]).len();
        match op.kind {
            OpKind::Binary(b @ (BinaryOp::Add | BinaryOp::Sub)) => {
                let (x, y) = (a(0), a(1));
                if !matches!(x, Val::Affine { .. }) && !matches!(y, Val::Affine { .. }) {
                    return None;
                }
                let ((bx, cx), (by, cy)) = (as_aff(x, rank)?, as_aff(y, rank)?);
                let s = if b == BinaryOp::Add { "+" } else { "-" };
                let coefs = cx.iter().zip(&cy).map(|(p, q)| if b == BinaryOp::Add { p + q } else { p - q }).collect();
                Some(Val::Affine { base: format!("({bx} {s} {by})"), coefs })
            }
            OpKind::Binary(BinaryOp::Mul) => {
                let (x, y) = (a(0), a(1));
                let (aff, k) = match (x, y) {
                    (Val::Affine { base, coefs }, other) | (other, Val::Affine { base, coefs }) => ((base, coefs), other),
                    _ => return None,
                };
                // Only compile-time constant factors keep the coefficients static.
                let kv: i64 = match k {
                    Val::Splat(s) | Val::Scalar(s) => s.parse().ok()?,
                    _ => return None,
                };
                Some(Val::Affine { base: format!("({} * {kv})", aff.0), coefs: aff.1.iter().map(|c| c * kv).collect() })
            }
            _ => None,
        }
    }

    /// A predicate for a compare of position indices, or a boolean combination of predicates
    /// and uniform bools.
    fn pred_op(&self, op: &Op) -> Option<Pred> {
        let rank = self.shape(op.results[0]).len();
        let as_pred = |v: ValueId| -> Option<Pred> {
            match self.val(v) {
                Val::Pred(p) => Some(p),
                Val::Scalar(s) | Val::Splat(s) if self.dtype(v) == DType::Bool => Some(Pred::Uniform(s)),
                _ => None,
            }
        };
        let has_pred = op.args.iter().any(|a| matches!(self.val(*a), Val::Pred(_)));
        match &op.kind {
            OpKind::Cmp(p) if self.dtype(op.args[0]) == DType::I32 && (1..=2).contains(&rank) => {
                let aff = |v: ValueId| -> Option<(String, Vec<i64>)> {
                    match self.val(v) {
                        Val::Affine { base, coefs } => Some((base, coefs)),
                        Val::Scalar(s) | Val::Splat(s) => Some((s, vec![0; rank])),
                        _ => None,
                    }
                };
                if !op.args.iter().any(|a| matches!(self.val(*a), Val::Affine { .. })) {
                    return None;
                }
                let ((bx, cx), (by, cy)) = (aff(op.args[0])?, aff(op.args[1])?);
                Some(Pred::Cmp { op: *p, base: format!("({bx}) - ({by})"), coefs: cx.iter().zip(&cy).map(|(a, b)| a - b).collect() })
            }
            OpKind::Binary(b @ (BinaryOp::And | BinaryOp::Or)) if has_pred => {
                let (x, y) = (as_pred(op.args[0])?, as_pred(op.args[1])?);
                Some(if *b == BinaryOp::And { Pred::And(Box::new(x), Box::new(y)) } else { Pred::Or(Box::new(x), Box::new(y)) })
            }
            OpKind::Unary(UnaryOp::Not) if has_pred => Some(Pred::Not(Box::new(as_pred(op.args[0])?))),
            _ => None,
        }
    }

    /// The bit mask (`Compare` layout: bit i of the tile's padded element i) of a predicate
    /// over `shape`; `cnt` bits.
    fn pred_mask(&mut self, p: &Pred, shape: &[usize], cnt: u64) -> BufId {
        let m = self.alloc_elems(DType::U8, cnt / 8, self.pos(), "predicate mask".into());
        let mn = self.bname(m);
        self.pred_mask_into(p, shape, cnt, m, &mn);
        m
    }

    /// [`Self::pred_mask`] into buffer `m`, spelled `mn` (a slot of a tiling-mask cache).
    pub(super) fn pred_mask_into(&mut self, p: &Pred, shape: &[usize], cnt: u64, m: BufId, mn: &str) {
        let words = cnt / 16;
        match p {
            Pred::Cmp { op, base, coefs } => {
                // Positions come from a tile precomputed once per program: c · i (exact in
                // f32); one `Adds` moves it to this tile's offset, one `Compare` against 0.
                // positions (op) -base in f16: the positions are small integers (exact), and the
                // bound is clamped to just outside their range, which keeps every comparison.
                let pd = DType::F16;
                let iota = self.iota(pd, shape, coefs);
                let z = self.temp(pd, shape, "predicate bound");
                let (inn, zn) = (self.bname(iota), self.bname(z));
                let n = layout(pd, shape).1;
                let bound = super::tilemask::leaf_bound(*op, base, coefs, shape);
                self.vec(
                    format!("Duplicate({zn}, static_cast<half>(static_cast<float>({bound})), {n});"),
                    &[],
                    &[z],
                );
                let mode = match op {
                    CmpPred::Eq => "EQ",
                    CmpPred::Ne => "NE",
                    CmpPred::Lt => "LT",
                    CmpPred::Le => "LE",
                    CmpPred::Gt => "GT",
                    CmpPred::Ge => "GE",
                };
                self.vec(format!("Compare({mn}, {inn}, {zn}, CMPMODE::{mode}, {cnt});"), &[iota, z], &[m]);
            }
            Pred::Uniform(e) => {
                self.vec(format!("Duplicate({mn}.ReinterpretCast<uint16_t>(), static_cast<uint16_t>(({e}) ? 0xFFFF : 0), {words});"), &[], &[m]);
            }
            Pred::And(a, b) | Pred::Or(a, b) => {
                let (x, y) = (self.pred_mask(a, shape, cnt), self.pred_mask(b, shape, cnt));
                let f = if matches!(p, Pred::And(..)) { "And" } else { "Or" };
                let (xn, yn) = (self.bname(x), self.bname(y));
                self.vec(
                    format!("{f}({mn}.ReinterpretCast<uint16_t>(), {xn}.ReinterpretCast<uint16_t>(), {yn}.ReinterpretCast<uint16_t>(), {words});"),
                    &[x, y],
                    &[m],
                );
            }
            Pred::Not(a) => {
                let x = self.pred_mask(a, shape, cnt);
                let xn = self.bname(x);
                self.vec(format!("Not({mn}.ReinterpretCast<uint16_t>(), {xn}.ReinterpretCast<uint16_t>(), {words});"), &[x], &[m]);
            }
        }
    }

    /// The position tile `Σ coefs[d] · i[d]` of `shape` in dtype `d`, filled once at the start
    /// of the program (the small precomputed mask basis: for FlashAttention's causal diagonal
    /// it is `j - i`).
    fn iota(&mut self, d: DType, shape: &[usize], coefs: &[i64]) -> BufId {
        let key = (d, shape.to_vec(), coefs.to_vec());
        if let Some((_, b)) = self.iotas.iter().find(|(k, _)| *k == key) {
            return *b;
        }
        let b = self.alloc(d, shape, u32::MAX, format!("positions {coefs:?} of {shape:?} (precomputed)"));
        self.out.bufs[b].live.0 = 0;
        let idx: Vec<String> = (0..shape.len()).map(|i| format!("p{i}")).collect();
        let mut e = "0".to_string();
        for (i, c) in idx.iter().zip(coefs) {
            if *c != 0 {
                e = format!("{e} + {c} * {i}");
            }
        }
        let body = format!("{}.SetValue({}, static_cast<{}>(static_cast<float>({e})));", self.bname(b), Self::lin(d, shape, &idx), ctype(d));
        let text = Self::loop_nest(shape, &body, &idx);
        self.prologue.push(crate::ascendc::lir::Stmt::Instr(crate::ascendc::lir::Instr {
            text: format!("// precomputed position tile {}\n{text}", self.bname(b)),
            pipe: Pipe::S,
            reads: vec![],
            writes: vec![Res::Buf(b)],
            effect: Effect::None,
            loc: self.loc,
        }));
        self.iotas.push((key, b));
        b
    }

    fn cmp_fusable(&self, op: &Op) -> bool {
        let r = op.results[0];
        let from = self.dtype(op.args[0]);
        if !(vec_dtype(from)) {
            return false;
        }
        let mut uses = 0;
        let mut select_cond = true;
        opc_ir::walk_ops(&self.k.body, &mut |o| {
            for (i, a) in o.args.iter().enumerate() {
                if *a == r {
                    uses += 1;
                    select_cond &= matches!(o.kind, OpKind::Select) && i == 0 && o.args[1] != r && o.args[2] != r;
                }
            }
        });
        uses == 1 && select_cond
    }

    /// Classify an elementwise operand for vector instructions (2-D broadcasts kept).
    fn operand(&mut self, op: &Op, v: ValueId, rshape: &[usize]) -> Result<Operand> {
        let d = self.dtype(v);
        Ok(match self.val(v) {
            Val::Scalar(s) | Val::Splat(s) => Operand::Scalar(s),
            Val::Tile(b) => Operand::Dense(b),
            Val::View { buf, off, strides } => {
                if rshape.len() == 2 && strides[1] == 0 && rshape[1] > 1 {
                    Operand::Row { buf, off, stride: strides[0] }
                } else if rshape.len() == 2 && strides[0] == 0 && strides[1] == 1 && off == 0 && rshape[0] > 1 {
                    Operand::Col(buf)
                } else if strides == layout(d, rshape).0 && off == 0 {
                    Operand::Dense(buf)
                } else {
                    Operand::Dense(self.materialize(op, v)?)
                }
            }
            Val::Affine { .. } => Operand::Dense(self.materialize(op, v)?),
            Val::Gm(_) => return Err(self.unsupported(op, "a cube operand read straight from GM used by a vector op")),
            Val::Pred(_) => Operand::Dense(self.materialize(op, v)?),
        })
    }

    /// Cast an operand to f32 (for bf16 arithmetic).
    fn up_to_f32(&mut self, o: Operand, d: DType, shape: &[usize]) -> Operand {
        match o {
            Operand::Scalar(s) => Operand::Scalar(s),
            Operand::Dense(b) => Operand::Dense(self.cast_buf(b, d, DType::F32, shape, Rounding::Rne)),
            Operand::Row { buf, off, stride } => Operand::Row { buf, off, stride },
            Operand::Col(b) => {
                let n = *shape.last().unwrap_or(&1);
                Operand::Col(self.cast_buf(b, d, DType::F32, &[n], Rounding::Rne))
            }
        }
    }

    /// `Cast` a whole tile into a new temporary.
    fn cast_buf(&mut self, b: BufId, from: DType, to: DType, shape: &[usize], r: Rounding) -> BufId {
        let t = self.temp(to, shape, "cast temporary");
        self.emit_cast(t, b, from, to, shape, r);
        t
    }

    pub(super) fn emit_cast(&mut self, dst: BufId, src: BufId, from: DType, to: DType, shape: &[usize], r: Rounding) {
        let mode = cast_mode(from, to, r);
        let (ls, ns) = layout(from, shape);
        let (ld, nd) = layout(to, shape);
        let (dn, sn) = (self.bname(dst), self.bname(src));
        if ls == ld || shape.len() <= 1 {
            self.vec(format!("Cast({dn}, {sn}, RoundMode::{mode}, {});", ns.min(nd)), &[src], &[dst]);
        } else {
            let rows = ns as i64 / ls[shape.len() - 2];
            let (ps, pd) = (ls[shape.len() - 2], ld[shape.len() - 2]);
            let c = shape[shape.len() - 1];
            self.vec(format!("for (int32_t r = 0; r < {rows}; ++r) {{\n    Cast({dn}[r * {pd}], {sn}[r * {ps}], RoundMode::{mode}, {c});\n}}"), &[src], &[dst]);
        }
    }

    /// Elementwise op as vector instructions; `false` when there is no vector form.
    fn vector_elementwise(&mut self, op: &Op) -> Result<bool> {
        let r = op.results[0];
        let (d, shape) = (self.dtype(r), self.shape(r));
        let from = self.dtype(op.args[0]);
        match &op.kind {
            OpKind::Binary(b) => {
                let ok = matches!(b, BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Max | BinaryOp::Min | BinaryOp::Pow);
                let int_ok = d == DType::I32 && matches!(b, BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Max | BinaryOp::Min);
                if !(ok && (vec_dtype(d) || d == DType::BF16 || int_ok)) {
                    return Ok(false);
                }
                let mut x = self.operand(op, op.args[0], &shape)?;
                let mut y = self.operand(op, op.args[1], &shape)?;
                if *b == BinaryOp::Pow {
                    // `Power` (advanced math API) has only the tensor-tensor form here.
                    x = Operand::Dense(self.operand_dense(x, d, &shape));
                    y = Operand::Dense(self.operand_dense(y, d, &shape));
                }
                let reuse = [&x, &y].iter().find_map(|o| match o {
                    Operand::Dense(b) => self.reusable(*b, d, &shape),
                    _ => None,
                });
                let dst = match reuse {
                    Some(b) => self.adopt(b, r),
                    None => self.alloc(d, &shape, self.last_use(r), format!("%{} {}", r.0, self.k.ty(r))),
                };
                if d == DType::BF16 {
                    let (x, y) = (self.up_to_f32(x, d, &shape), self.up_to_f32(y, d, &shape));
                    let t = self.temp(DType::F32, &shape, "bf16 arithmetic in f32");
                    self.binary(*b, DType::F32, t, x, y, &shape);
                    self.emit_cast(dst, t, DType::F32, DType::BF16, &shape, Rounding::Rne);
                } else {
                    self.binary(*b, d, dst, x, y, &shape);
                }
                self.set(r, Val::Tile(dst));
                Ok(true)
            }
            OpKind::Unary(u) => {
                let ok = matches!(
                    u,
                    UnaryOp::Exp
                        | UnaryOp::Exp2
                        | UnaryOp::Log
                        | UnaryOp::Log2
                        | UnaryOp::Abs
                        | UnaryOp::Sqrt
                        | UnaryOp::Rsqrt
                        | UnaryOp::Recip
                        | UnaryOp::Neg
                        | UnaryOp::Sigmoid
                        | UnaryOp::Silu
                        | UnaryOp::Tanh
                        | UnaryOp::Sin
                        | UnaryOp::Cos
                );
                if !(ok && (vec_dtype(d) || d == DType::BF16)) {
                    return Ok(false);
                }
                let x = self.materialize(op, op.args[0])?;
                let dst = match self.reusable(x, d, &shape) {
                    Some(b) => self.adopt(b, r),
                    None => self.alloc(d, &shape, self.last_use(r), format!("%{} {}", r.0, self.k.ty(r))),
                };
                if d == DType::BF16 {
                    let xf = self.cast_buf(x, d, DType::F32, &shape, Rounding::Rne);
                    let t = self.temp(DType::F32, &shape, "bf16 math in f32");
                    self.unary(*u, DType::F32, t, xf, &shape);
                    self.emit_cast(dst, t, DType::F32, DType::BF16, &shape, Rounding::Rne);
                } else {
                    self.unary(*u, d, dst, x, &shape);
                }
                self.set(r, Val::Tile(dst));
                Ok(true)
            }
            OpKind::Cast(rm) => {
                if cast_supported(from, d, *rm).is_none() {
                    return Ok(false);
                }
                let x = self.materialize(op, op.args[0])?;
                let dst = self.alloc(d, &shape, self.last_use(r), format!("%{} {}", r.0, self.k.ty(r)));
                if (from == DType::F16 && d == DType::BF16) || (from == DType::BF16 && d == DType::F16) {
                    let t = self.cast_buf(x, from, DType::F32, &shape, Rounding::Rne);
                    self.emit_cast(dst, t, DType::F32, d, &shape, *rm);
                } else {
                    self.emit_cast(dst, x, from, d, &shape, *rm);
                }
                self.set(r, Val::Tile(dst));
                Ok(true)
            }
            OpKind::Select => self.vector_select(op),
            _ => Ok(false),
        }
    }

    /// `where(a ∘ b, t, f)` with a fused compare: `Compare` into a bit mask, then `Select`.
    fn vector_select(&mut self, op: &Op) -> Result<bool> {
        let r = op.results[0];
        let (d, shape) = (self.dtype(r), self.shape(r));
        let c = op.args[0];
        // Positions are compared in f16 (exact small integers), so the mask's bits follow the
        // f16 layout: the select's dtype must lay the tile out the same way.
        if let (Val::Pred(p), true) = (self.val(c), vec_dtype(d) && layout(d, &shape) == layout(DType::F16, &shape)) {
            let n = layout(d, &shape).1;
            let cnt = crate::ascendc::lir::round_up(n, 128);
            // A mask on tile positions is a tiling mask: built once per distinct run-time
            // offset and kept in UB (`tilemask.rs`); other modes compute it here.
            let (mask, mn) = match self.mode {
                super::Mode::Vector => self.tiling_mask(&p, &shape, cnt),
                _ => {
                    let m = self.pred_mask(&p, &shape, cnt);
                    (m, self.bname(m))
                }
            };
            let t = self.dense_or_dup(op, op.args[1], &shape)?;
            let dst = self.alloc(d, &shape, self.last_use(r), format!("%{} {}", r.0, self.k.ty(r)));
            let (tn, dn) = (self.bname(t), self.bname(dst));
            match self.val(op.args[2]) {
                Val::Scalar(s) | Val::Splat(s) => {
                    self.vec(format!("Select({dn}, {mn}, {tn}, static_cast<{}>({s}), SELMODE::VSEL_TENSOR_SCALAR_MODE, {n});", ctype(d)), &[mask, t], &[dst]);
                }
                _ => {
                    let f = self.dense_or_dup(op, op.args[2], &shape)?;
                    let fname = self.bname(f);
                    self.vec(format!("Select({dn}, {mn}, {tn}, {fname}, SELMODE::VSEL_TENSOR_TENSOR_MODE, {n});"), &[mask, t, f], &[dst]);
                }
            }
            self.set(r, Val::Tile(dst));
            return Ok(true);
        }
        let Some(cmp) = self.def_op(c) else { return Ok(false) };
        let OpKind::Cmp(pred) = cmp.kind else { return Ok(false) };
        if !matches!(self.val(c), Val::Scalar(ref s) if s.is_empty()) || !vec_dtype(d) || self.dtype(cmp.args[0]) != d {
            return Ok(false);
        }
        let n = layout(d, &shape).1;
        // `Compare` works on whole 256-byte repeats: round the count up (buffers are sized so).
        let per_rep = 256 / super::elem_bytes(d);
        let cnt = crate::ascendc::lir::round_up(n, per_rep);
        let a = self.dense_or_dup(op, cmp.args[0], &shape)?;
        let b = self.dense_or_dup(op, cmp.args[1], &shape)?;
        let mask = self.alloc_elems(DType::U8, cnt / 8, self.pos(), "compare mask".into());
        let t = self.dense_or_dup(op, op.args[1], &shape)?;
        let dst = self.alloc(d, &shape, self.last_use(r), format!("%{} {}", r.0, self.k.ty(r)));
        let mode = match pred {
            CmpPred::Eq => "EQ",
            CmpPred::Ne => "NE",
            CmpPred::Lt => "LT",
            CmpPred::Le => "LE",
            CmpPred::Gt => "GT",
            CmpPred::Ge => "GE",
        };
        let (an, bn, mn, tn, dn) = (self.bname(a), self.bname(b), self.bname(mask), self.bname(t), self.bname(dst));
        self.vec(format!("Compare({mn}, {an}, {bn}, CMPMODE::{mode}, {cnt});"), &[a, b], &[mask]);
        match self.val(op.args[2]) {
            Val::Scalar(s) | Val::Splat(s) => {
                self.vec(format!("Select({dn}, {mn}, {tn}, static_cast<{}>({s}), SELMODE::VSEL_TENSOR_SCALAR_MODE, {n});", ctype(d)), &[mask, t], &[dst]);
            }
            _ => {
                let f = self.dense_or_dup(op, op.args[2], &shape)?;
                let fname = self.bname(f);
                self.vec(format!("Select({dn}, {mn}, {tn}, {fname}, SELMODE::VSEL_TENSOR_TENSOR_MODE, {n});"), &[mask, t, f], &[dst]);
            }
        }
        self.set(r, Val::Tile(dst));
        Ok(true)
    }

    /// The defining op of a value in the body.
    pub(super) fn def_op(&self, v: ValueId) -> Option<Op> {
        let mut found = None;
        opc_ir::walk_ops(&self.k.body, &mut |o| {
            if o.results.contains(&v) {
                found = Some(o.clone());
            }
        });
        found
    }

    /// A dense tile of `v` in the shape `shape` (splats duplicated, views copied).
    fn dense_or_dup(&mut self, op: &Op, v: ValueId, shape: &[usize]) -> Result<BufId> {
        let d = self.dtype(v);
        match self.val(v) {
            Val::Scalar(s) | Val::Splat(s) => {
                let t = self.temp(d, shape, "splat");
                self.duplicate(t, d, &s, layout(d, shape).1);
                Ok(t)
            }
            _ => self.materialize(op, v),
        }
    }

    pub(super) fn duplicate(&mut self, dst: BufId, d: DType, s: &str, n: u64) {
        let dn = self.bname(dst);
        if super::elem_bytes(d) == 1 {
            // No 8-bit Duplicate: fill on the scalar unit.
            let text = format!("for (int32_t i = 0; i < {n}; ++i) {{\n    {dn}.SetValue(i, static_cast<uint8_t>({s}));\n}}");
            self.barrier_all();
            self.instr(Pipe::S, text, vec![], vec![Res::Buf(dst)], Effect::None);
            self.barrier_all();
        } else {
            self.vec(format!("Duplicate({dn}, static_cast<{}>({s}), {n});", ctype(d)), &[], &[dst]);
        }
    }

    /// UB → UB copy of a whole tile.
    pub(super) fn copy_tile(&mut self, dst: BufId, src: BufId, d: DType, shape: &[usize]) {
        let n = layout(d, shape).1;
        let (dn, sn) = (self.bname(dst), self.bname(src));
        let bytes = super::elem_bytes(d);
        self.instr(
            Pipe::V,
            format!("DataCopy({dn}, {sn}, {n});"),
            vec![Res::Buf(src)],
            vec![Res::Buf(dst)],
            Effect::Copy(crate::ascendc::lir::CopyLen::Elems { count: n, elem_bytes: bytes }),
        );
    }

    /// A dense tile holding value `v` (a temporary unless `v` already is one).
    pub(super) fn materialize(&mut self, _op: &Op, v: ValueId) -> Result<BufId> {
        let (d, shape) = (self.dtype(v), self.shape(v));
        if let Val::Tile(b) = self.val(v) {
            return Ok(b);
        }
        let t = self.temp(d, &shape, "materialized view");
        self.write_into(_op, v, t)?;
        Ok(t)
    }

    /// Write value `v` into buffer `dst` (same dtype and shape).
    pub(super) fn write_into(&mut self, _op: &Op, v: ValueId, dst: BufId) -> Result<()> {
        let (d, shape) = (self.dtype(v), self.shape(v));
        match self.val(v) {
            Val::Tile(b) if b == dst => {}
            Val::Tile(b) => self.copy_tile(dst, b, d, &shape),
            Val::Scalar(s) | Val::Splat(s) => self.duplicate(dst, d, &s, layout(d, &shape).1),
            Val::View { buf, off, strides } if shape.len() == 2 && strides[0] == 0 && strides[1] == 1 && off == 0 => {
                // A row repeated: one copy per row.
                let (p, n) = (layout(d, &shape).0[0], shape[0]);
                let (dn, sn) = (self.bname(dst), self.bname(buf));
                let bytes = super::elem_bytes(d);
                self.instr(
                    Pipe::V,
                    format!("for (int32_t r = 0; r < {n}; ++r) {{\n    DataCopy({dn}[r * {p}], {sn}, {p});\n}}"),
                    vec![Res::Buf(buf)],
                    vec![Res::Buf(dst)],
                    Effect::Copy(crate::ascendc::lir::CopyLen::Elems { count: p as u64, elem_bytes: bytes }),
                );
            }
            Val::View { buf, off, strides } if shape.len() == 2 && strides[1] == 0 && super::elem_bytes(d) > 1 => {
                // A column broadcast along rows: one `Duplicate` of a per-row scalar.
                let (p, n) = (layout(d, &shape).0[0], shape[0]);
                let (dn, sn) = (self.bname(dst), self.bname(buf));
                self.sync(Pipe::V, Pipe::S);
                self.instr(Pipe::S, String::new(), vec![Res::Buf(buf)], vec![], Effect::None);
                self.vec(
                    format!("for (int32_t r = 0; r < {n}; ++r) {{\n    Duplicate({dn}[r * {p}], {sn}.GetValue({off} + r * {}), {p});\n}}", strides[0]),
                    &[],
                    &[dst],
                );
            }
            Val::Gm(_) => return Err(self.unsupported(_op, "a cube operand read straight from GM used by a vector op")),
            _ => {
                let reads = self.bufs_of(v);
                self.scalar_fill(dst, d, &shape, reads, &|l, idx| l.elem(v, idx));
            }
        }
        Ok(())
    }

    /// dst = x ∘ y on dtype `d` (f32 / f16 / i32).
    fn binary(&mut self, b: BinaryOp, d: DType, dst: BufId, x: Operand, y: Operand, shape: &[usize]) {
        let n = layout(d, shape).1;
        let ct = ctype(d);
        let name = |o: BinaryOp| match o {
            BinaryOp::Add => "Add",
            BinaryOp::Sub => "Sub",
            BinaryOp::Mul => "Mul",
            BinaryOp::Div => "Div",
            BinaryOp::Max => "Max",
            BinaryOp::Pow => "Power",
            _ => "Min",
        };
        let scalar_form = |o: BinaryOp| match o {
            BinaryOp::Add => Some("Adds"),
            BinaryOp::Mul => Some("Muls"),
            BinaryOp::Max => Some("Maxs"),
            BinaryOp::Min => Some("Mins"),
            _ => None,
        };
        let dn = self.bname(dst);
        let p = if shape.len() >= 2 { layout(d, shape).0[shape.len() - 2] } else { n as i64 };
        let rows = n as i64 / p.max(1);
        match (x, y) {
            (Operand::Dense(a), Operand::Dense(c)) => {
                let (an, cn) = (self.bname(a), self.bname(c));
                self.vec(format!("{}({dn}, {an}, {cn}, {n});", name(b)), &[a, c], &[dst]);
            }
            (Operand::Dense(a), Operand::Scalar(s)) | (Operand::Scalar(s), Operand::Dense(a)) if scalar_form(b).is_some() => {
                let an = self.bname(a);
                self.vec(format!("{}({dn}, {an}, static_cast<{ct}>({s}), {n});", scalar_form(b).unwrap_or("Adds")), &[a], &[dst]);
            }
            (Operand::Dense(a), Operand::Scalar(s)) if b == BinaryOp::Sub => {
                let an = self.bname(a);
                self.vec(format!("Adds({dn}, {an}, static_cast<{ct}>(-({s})), {n});"), &[a], &[dst]);
            }
            (Operand::Scalar(s), Operand::Dense(a)) if b == BinaryOp::Sub => {
                let an = self.bname(a);
                self.vec(format!("Muls({dn}, {an}, static_cast<{ct}>(-1), {n});"), &[a], &[dst]);
                self.vec(format!("Adds({dn}, {dn}, static_cast<{ct}>({s}), {n});"), &[dst], &[dst]);
            }
            (Operand::Dense(a), Operand::Scalar(s)) => {
                let t = self.temp(d, shape, "splat operand");
                self.duplicate(t, d, &s, n);
                let (an, tn) = (self.bname(a), self.bname(t));
                self.vec(format!("{}({dn}, {an}, {tn}, {n});", name(b)), &[a, t], &[dst]);
            }
            (Operand::Scalar(s), Operand::Dense(a)) => {
                let t = self.temp(d, shape, "splat operand");
                self.duplicate(t, d, &s, n);
                let (an, tn) = (self.bname(a), self.bname(t));
                self.vec(format!("{}({dn}, {tn}, {an}, {n});", name(b)), &[a, t], &[dst]);
            }
            (Operand::Dense(a), Operand::Row { buf, off, stride }) => self.row_op(b, d, dst, a, (buf, off, stride), rows, p, true),
            (Operand::Row { buf, off, stride }, Operand::Dense(a)) => self.row_op(b, d, dst, a, (buf, off, stride), rows, p, false),
            (Operand::Dense(a), Operand::Col(c)) => {
                let (an, cn) = (self.bname(a), self.bname(c));
                self.vec(format!("for (int32_t r = 0; r < {rows}; ++r) {{\n    {}({dn}[r * {p}], {an}[r * {p}], {cn}, {p});\n}}", name(b)), &[a, c], &[dst]);
            }
            (Operand::Col(c), Operand::Dense(a)) => {
                let (an, cn) = (self.bname(a), self.bname(c));
                self.vec(format!("for (int32_t r = 0; r < {rows}; ++r) {{\n    {}({dn}[r * {p}], {cn}, {an}[r * {p}], {p});\n}}", name(b)), &[a, c], &[dst]);
            }
            (x, y) => {
                // Anything else: make both dense first.
                let xa = self.operand_dense(x, d, shape);
                let ya = self.operand_dense(y, d, shape);
                let (an, cn) = (self.bname(xa), self.bname(ya));
                self.vec(format!("{}({dn}, {an}, {cn}, {n});", name(b)), &[xa, ya], &[dst]);
            }
        }
    }

    /// dst[r, :] = a[r, :] ∘ row(r) (or row(r) ∘ a[r, :] when `!row_right`), one instruction
    /// per row with the row's scalar read by the scalar unit.
    #[allow(clippy::too_many_arguments)]
    fn row_op(&mut self, b: BinaryOp, d: DType, dst: BufId, a: BufId, row: (BufId, i64, i64), rows: i64, p: i64, row_right: bool) {
        let (buf, off, stride) = row;
        let ct = ctype(d);
        let (dn, an, bn) = (self.bname(dst), self.bname(a), self.bname(buf));
        self.sync(Pipe::V, Pipe::S);
        self.instr(Pipe::S, String::new(), vec![Res::Buf(buf)], vec![], Effect::None);
        let g = format!("{bn}.GetValue({off} + r * {stride})");
        let (x, y) = (format!("{dn}[r * {p}]"), format!("{an}[r * {p}]"));
        let mut extra = vec![];
        let body = match b {
            BinaryOp::Add => format!("Adds({x}, {y}, static_cast<{ct}>({g}), {p});"),
            BinaryOp::Mul => format!("Muls({x}, {y}, static_cast<{ct}>({g}), {p});"),
            BinaryOp::Max => format!("Maxs({x}, {y}, static_cast<{ct}>({g}), {p});"),
            BinaryOp::Min => format!("Mins({x}, {y}, static_cast<{ct}>({g}), {p});"),
            BinaryOp::Sub if row_right => format!("Adds({x}, {y}, static_cast<{ct}>(-static_cast<float>({g})), {p});"),
            BinaryOp::Sub => format!("Muls({x}, {y}, static_cast<{ct}>(-1), {p});\n    Adds({x}, {x}, static_cast<{ct}>({g}), {p});"),
            _ => {
                let t = self.temp(d, &[p as usize], "row divisor");
                extra.push(t);
                let tn = self.bname(t);
                let (l, rr) = if row_right { (y.clone(), tn.clone()) } else { (tn.clone(), y.clone()) };
                format!("Duplicate({tn}, static_cast<{ct}>({g}), {p});\n    Div({x}, {l}, {rr}, {p});")
            }
        };
        let mut writes = vec![dst];
        writes.extend(extra.iter().copied());
        let mut reads = vec![a];
        reads.extend(extra);
        self.vec(format!("for (int32_t r = 0; r < {rows}; ++r) {{\n    {body}\n}}"), &reads, &writes);
    }

    fn operand_dense(&mut self, o: Operand, d: DType, shape: &[usize]) -> BufId {
        let n = layout(d, shape).1;
        match o {
            Operand::Dense(b) => b,
            Operand::Scalar(s) => {
                let t = self.temp(d, shape, "splat operand");
                self.duplicate(t, d, &s, n);
                t
            }
            Operand::Row { buf, off, stride } => {
                let t = self.temp(d, shape, "row broadcast");
                let p = layout(d, shape).0[0];
                let (tn, bn) = (self.bname(t), self.bname(buf));
                self.sync(Pipe::V, Pipe::S);
                self.instr(Pipe::S, String::new(), vec![Res::Buf(buf)], vec![], Effect::None);
                self.vec(
                    format!("for (int32_t r = 0; r < {}; ++r) {{\n    Duplicate({tn}[r * {p}], {bn}.GetValue({off} + r * {stride}), {p});\n}}", shape[0]),
                    &[],
                    &[t],
                );
                t
            }
            Operand::Col(c) => {
                let t = self.temp(d, shape, "column broadcast");
                let p = layout(d, shape).0[0];
                let (tn, cn) = (self.bname(t), self.bname(c));
                self.instr(
                    Pipe::V,
                    format!("for (int32_t r = 0; r < {}; ++r) {{\n    DataCopy({tn}[r * {p}], {cn}, {p});\n}}", shape[0]),
                    vec![Res::Buf(c)],
                    vec![Res::Buf(t)],
                    Effect::Copy(crate::ascendc::lir::CopyLen::Elems { count: p as u64, elem_bytes: super::elem_bytes(d) }),
                );
                t
            }
        }
    }

    fn unary(&mut self, u: UnaryOp, d: DType, dst: BufId, x: BufId, shape: &[usize]) {
        let n = layout(d, shape).1;
        let ct = ctype(d);
        let (dn, xn) = (self.bname(dst), self.bname(x));
        let seq: Vec<String> = match u {
            UnaryOp::Exp => vec![format!("Exp({dn}, {xn}, {n});")],
            UnaryOp::Exp2 => vec![format!("Muls({dn}, {xn}, static_cast<{ct}>(0.6931471805599453f), {n});"), format!("Exp({dn}, {dn}, {n});")],
            UnaryOp::Log => vec![format!("Ln({dn}, {xn}, {n});")],
            UnaryOp::Log2 => vec![format!("Ln({dn}, {xn}, {n});"), format!("Muls({dn}, {dn}, static_cast<{ct}>(1.4426950408889634f), {n});")],
            UnaryOp::Abs => vec![format!("Abs({dn}, {xn}, {n});")],
            UnaryOp::Sqrt => vec![format!("Sqrt({dn}, {xn}, {n});")],
            UnaryOp::Sin => vec![format!("Sin({dn}, {xn}, {n});")],
            UnaryOp::Cos => vec![format!("Cos({dn}, {xn}, {n});")],
            UnaryOp::Rsqrt => vec![format!("Rsqrt({dn}, {xn}, {n});")],
            UnaryOp::Recip => vec![format!("Reciprocal({dn}, {xn}, {n});")],
            UnaryOp::Neg => vec![format!("Muls({dn}, {xn}, static_cast<{ct}>(-1), {n});")],
            UnaryOp::Sigmoid | UnaryOp::Silu | UnaryOp::Tanh => {
                // sigmoid(x) = 1 / (1 + e^-x); silu(x) = x · sigmoid(x); tanh(x) = 2·sigmoid(2x) - 1.
                let k = if u == UnaryOp::Tanh { "-2" } else { "-1" };
                let mut s = vec![
                    format!("Muls({dn}, {xn}, static_cast<{ct}>({k}), {n});"),
                    format!("Exp({dn}, {dn}, {n});"),
                    format!("Adds({dn}, {dn}, static_cast<{ct}>(1), {n});"),
                    format!("Reciprocal({dn}, {dn}, {n});"),
                ];
                if u == UnaryOp::Silu {
                    s.push(format!("Mul({dn}, {dn}, {xn}, {n});"));
                }
                if u == UnaryOp::Tanh {
                    s.push(format!("Muls({dn}, {dn}, static_cast<{ct}>(2), {n});"));
                    s.push(format!("Adds({dn}, {dn}, static_cast<{ct}>(-1), {n});"));
                }
                s
            }
            _ => vec![],
        };
        self.vec(seq.join("\n"), &[x], &[dst]);
    }

    /// `reduce`: rows of the last axis with `ReduceSum`/`ReduceMax`/`ReduceMin` (results
    /// gathered by the scalar unit), the first axis of a 2-D tile with row-wise `Add`/`Max`/`Min`.
    pub(super) fn lower_reduce(&mut self, op: &Op, rop: opc_ir::ReduceOp, axis: usize) -> Result<()> {
        use opc_ir::ReduceOp as R;
        let r = op.results[0];
        let x = op.args[0];
        let (xd, xs) = (self.dtype(x), self.shape(x));
        let ok = matches!(rop, R::Sum | R::Max | R::Min) && (vec_dtype(xd) || xd == DType::BF16) && xs.len() <= 2 && !xs.is_empty();
        if !ok || !matches!(self.val(x), Val::Tile(_) | Val::View { .. }) {
            return self.scalar_reduce(op, rop, axis);
        }
        let mut src = self.materialize(op, x)?;
        let mut d = xd;
        if xd == DType::BF16 {
            src = self.cast_buf(src, xd, DType::F32, &xs, Rounding::Rne);
            d = DType::F32;
        }
        let rd = self.dtype(r);
        let rshape = self.shape(r);
        let (ls, _) = layout(d, &xs);
        let fname = match rop {
            R::Sum => "Sum",
            R::Max => "Max",
            _ => "Min",
        };
        if axis == xs.len() - 1 {
            let c = xs[axis];
            let rows = if xs.len() == 2 { xs[0] } else { 1 };
            let p = if xs.len() == 2 { ls[0] } else { 0 };
            let k = c0(d);
            let scratch = self.alloc_elems(d, rows as u64 * k, self.pos(), "reduce results".into());
            let work = self.temp(d, &[c], "reduce work");
            let (sn, wn, xn) = (self.bname(scratch), self.bname(work), self.bname(src));
            let call = if rop == R::Sum {
                format!("ReduceSum({sn}[r * {k}], {xn}[r * {p}], {wn}, {c});")
            } else {
                format!("Reduce{fname}({sn}[r * {k}], {xn}[r * {p}], {wn}, {c}, false);")
            };
            self.vec(format!("for (int32_t r = 0; r < {rows}; ++r) {{\n    {call}\n}}"), &[src], &[scratch, work]);
            self.sync(Pipe::V, Pipe::S);
            let get = |row: &str| scalar::round(rd, format!("static_cast<float>({sn}.GetValue({row} * {k}))"));
            if rshape.is_empty() {
                let name = format!("s{}", r.0);
                self.line(format!("float {name} = 0.0f;"));
                self.instr(Pipe::S, format!("{name} = {};", get("0")), vec![Res::Buf(scratch)], vec![], Effect::None);
                self.set(r, Val::Scalar(name));
            } else {
                let dst = self.alloc(rd, &rshape, self.last_use(r), format!("%{} {}", r.0, self.k.ty(r)));
                let dn = self.bname(dst);
                self.instr(
                    Pipe::S,
                    format!("for (int32_t r = 0; r < {rows}; ++r) {{\n    {dn}.SetValue(r, static_cast<{}>({}));\n}}", ctype(rd), get("r")),
                    vec![Res::Buf(scratch)],
                    vec![Res::Buf(dst)],
                    Effect::None,
                );
                self.sync(Pipe::S, Pipe::V);
                self.set(r, Val::Tile(dst));
            }
            return Ok(());
        }
        // axis 0 of [R, C]: fold the rows.
        let (rows, p) = (xs[0], ls[0]);
        let dst_d = if xd == DType::BF16 { DType::F32 } else { rd };
        let acc = if xd == DType::BF16 {
            self.temp(DType::F32, &rshape, "bf16 reduce in f32")
        } else {
            self.alloc(rd, &rshape, self.last_use(r), format!("%{} {}", r.0, self.k.ty(r)))
        };
        let (an, xn) = (self.bname(acc), self.bname(src));
        self.instr(
            Pipe::V,
            format!("DataCopy({an}, {xn}, {p});"),
            vec![Res::Buf(src)],
            vec![Res::Buf(acc)],
            Effect::Copy(crate::ascendc::lir::CopyLen::Elems { count: p as u64, elem_bytes: super::elem_bytes(dst_d) }),
        );
        let f = match rop {
            R::Sum => "Add",
            R::Max => "Max",
            _ => "Min",
        };
        self.vec(format!("for (int32_t r = 1; r < {rows}; ++r) {{\n    {f}({an}, {an}, {xn}[r * {p}], {p});\n}}"), &[src, acc], &[acc]);
        if xd == DType::BF16 {
            let dst = self.alloc(rd, &rshape, self.last_use(r), format!("%{} {}", r.0, self.k.ty(r)));
            self.emit_cast(dst, acc, DType::F32, DType::BF16, &rshape, Rounding::Rne);
            self.set(r, Val::Tile(dst));
        } else {
            self.set(r, Val::Tile(acc));
        }
        Ok(())
    }
}

/// Whether `Cast` converts `from` → `to` with rounding `r` on the 910B vector unit.
pub(super) fn cast_supported(from: DType, to: DType, r: Rounding) -> Option<()> {
    use DType::*;
    match (from, to) {
        (F16, F32) | (BF16, F32) | (I32, F32) => Some(()),
        (F32, F16) | (F32, BF16) | (F16, BF16) | (BF16, F16) if r == Rounding::Rne => Some(()),
        (F32, I32) => Some(()),
        _ => None,
    }
}

fn cast_mode(from: DType, to: DType, r: Rounding) -> &'static str {
    use DType::*;
    match (from, to) {
        (F16 | BF16, F32) => "CAST_NONE",
        (I32, F32) => "CAST_NONE",
        (F32, I32) => match r {
            Rounding::Rne => "CAST_RINT",
            Rounding::Rtz => "CAST_TRUNC",
            Rounding::Floor => "CAST_FLOOR",
            Rounding::Ceil => "CAST_CEIL",
        },
        _ => "CAST_RINT",
    }
}
