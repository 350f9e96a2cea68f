//! Global memory: `load` is the CopyIn stage, `store` / `atomic_add` the CopyOut stage.
//!
//! **Boxes.** When every index of an access is a scalar or an `Affine` index with one unit
//! coefficient (`i0 + arange(n)`), and the innermost result dim walks the tensor's last dim, the
//! access is a box: rows of contiguous elements. Its in-bounds part is computed at run time
//! (ragged edges clip it) and moved with one `DataCopyPad` per 2-D slab:
//!
//! ```text
//! CopyIn   AllocTensor → DataCopyPad(GM → VECIN, rows × cols bytes, rows padded to 32 B)
//!          → EnQue / DeQue → DataCopy(VECIN → tile, whole 32-byte blocks) → FreeTensor
//! CopyOut  AllocTensor → DataCopy(tile → VECOUT) → EnQue / DeQue
//!          → DataCopyPad(VECOUT → GM, rows × cols bytes) → FreeTensor
//! ```
//!
//! Out-of-bounds elements of a load read `other`: the tile is `Duplicate`d first when the box is
//! clipped, and `DataCopyPad` pads each row's last 32-byte block with `other` (so the block copy
//! never brings garbage in). The queues have two buffers: the next CopyIn's `DataCopyPad` runs
//! on MTE2 while the vector unit still consumes the previous tile (double buffering).
//!
//! **Everything else** (gathers, tile masks, a first column that is not 0, packed 4-bit types)
//! runs element by element on the scalar unit with `GlobalTensor::GetValue` / `SetValue`.

use opc_ir::{DType, DimExpr, Op, OpKind, ParamKind, ValueId};

use super::{c0, ctype, elem_bytes, layout, scalar_ctype, Lower, Val};
use crate::ascendc::lir::{self, BufId, CopyLen, Effect, Pipe, Pos, Res, Stmt};
use crate::Result;

/// One result dim of a box access: the tensor dim that drives it and its first index.
#[derive(Clone, Debug)]
struct BoxDim {
    len: usize,
    /// (tensor dim, start index expression); `None` for an undriven size-1 dim.
    drive: Option<(usize, String)>,
}

pub(super) struct BoxAccess {
    /// Tensor dims indexed by a scalar: (dim, index expression).
    scalars: Vec<(usize, String)>,
    dims: Vec<BoxDim>,
}

/// `[lo, hi)` limits on one result dim's index (C++ expressions; `None`: unbounded).
pub(super) type Bound = (Option<String>, Option<String>);

/// Largest VECIN queue buffer a box load uses; larger boxes stream in chunks of rows.
const IN_CHUNK_BYTES: u64 = 16 * 1024;

pub(super) fn packed(d: DType) -> bool {
    d.bits() == 4
}

impl Lower<'_> {
    /// `tiling_.X`-based C++ for a dim expression.
    pub(super) fn dimx(&self, e: &DimExpr) -> String {
        match e {
            DimExpr::Sym(s) => self.dim_expr(*s),
            DimExpr::Const(c) => c.to_string(),
            DimExpr::Add(a, b) => format!("({} + {})", self.dimx(a), self.dimx(b)),
            DimExpr::Sub(a, b) => format!("({} - {})", self.dimx(a), self.dimx(b)),
            DimExpr::Mul(a, b) => format!("({} * {})", self.dimx(a), self.dimx(b)),
            DimExpr::Div(a, b) => format!("({} / {})", self.dimx(a), self.dimx(b)),
        }
    }

    pub(super) fn tensor_dims(&self, t: usize) -> Vec<DimExpr> {
        match &self.k.params[t].kind {
            ParamKind::Tensor { dims, .. } => dims.clone(),
            ParamKind::Scalar { .. } => vec![],
        }
    }

    /// Element stride of tensor dim `d` (row-major) as an `int64_t` expression.
    fn stride(&self, t: usize, d: usize) -> String {
        let dims = self.tensor_dims(t);
        let parts: Vec<String> = dims[d + 1..].iter().map(|e| self.dimx(e)).collect();
        if parts.is_empty() {
            "1LL".into()
        } else {
            format!("(static_cast<int64_t>({}))", parts.join(") * static_cast<int64_t>("))
        }
    }

    pub(super) fn gm(&self, t: usize) -> String {
        format!("{}Gm", self.k.params[t].name)
    }

    pub(super) fn box_access(&self, op: &Op, t: usize) -> Option<BoxAccess> {
        let rank = self.tensor_dims(t).len();
        let mut scalars = vec![];
        let mut dims = vec![];
        for d in 0..rank {
            let a = op.args[d];
            let shape = self.shape(a);
            match self.val(a) {
                Val::Scalar(s) if shape.is_empty() => scalars.push((d, s)),
                Val::Affine { base, coefs } => {
                    let driving: Vec<usize> = (0..shape.len()).filter(|&j| coefs[j] != 0 && shape[j] > 1).collect();
                    if driving.len() > 1 || driving.iter().any(|&j| coefs[j] != 1) {
                        return None;
                    }
                    if driving.is_empty() {
                        // All size-1 dims: a scalar index in disguise.
                        if shape.iter().any(|n| *n != 1) {
                            return None;
                        }
                        scalars.push((d, base));
                        dims.extend(shape.iter().map(|&len| BoxDim { len, drive: None }));
                        continue;
                    }
                    for (j, &len) in shape.iter().enumerate() {
                        dims.push(BoxDim { len, drive: driving.contains(&j).then(|| (d, base.clone())) });
                    }
                }
                _ => return None,
            }
        }
        // Every dim of length > 1 is driven, the innermost by the tensor's last dim.
        if dims.iter().any(|b| b.len > 1 && b.drive.is_none()) {
            return None;
        }
        match dims.last() {
            Some(BoxDim { drive: Some((td, _)), .. }) if *td == rank - 1 => {}
            Some(BoxDim { len: 1, drive: None }) if dims.len() == 1 => {}
            _ => return None,
        }
        // Driven tensor dims strictly increase along the result dims (no transposed boxes).
        let order: Vec<usize> = dims.iter().filter_map(|b| b.drive.as_ref().map(|(d, _)| *d)).collect();
        if order.windows(2).any(|w| w[0] >= w[1]) {
            return None;
        }
        Some(BoxAccess { scalars, dims })
    }

    // ---- load -------------------------------------------------------------------------------

    /// If `op` (a tile load) only feeds cube dots and is a box, record it as a direct GM → L1
    /// operand and return its index in `direct`.
    pub(super) fn direct_load(&mut self, op: &Op, t: usize) -> Option<usize> {
        let OpKind::Load { has_mask: false, .. } = op.kind else { return None };
        let r = op.results[0];
        let d = self.dtype(r);
        let rank = self.tensor_dims(t).len();
        if !self.cube_kernel || !matches!(d, DType::F16 | DType::BF16) || self.shape(r).len() != 2 || !super::feeds_cube_only(self.orig, r) {
            return None;
        }
        // Every index must be known here (the cube program computes only what it needs).
        if op.args[..rank].iter().any(|a| self.vals[a.0 as usize].is_none()) {
            return None;
        }
        self.box_access(op, t)?;
        self.direct.push(op.clone());
        Some(self.direct.len() - 1)
    }

    pub(super) fn lower_load(&mut self, op: &Op, t: usize, has_mask: bool, has_other: bool) -> Result<()> {
        let r = op.results[0];
        if self.k.ty(r).is_scalar() {
            return self.scalar_load(op, t, has_mask, has_other);
        }
        if let Some(i) = self.direct_load(op, t) {
            self.comment(format!("{}[..] -> %{}: read by the cube straight from GM", self.k.params[t].name, r.0));
            self.set(r, Val::Gm(i));
            return Ok(());
        }
        let rank = self.tensor_dims(t).len();
        let (d, shape) = (self.dtype(r), self.shape(r));
        let other = if has_other { self.scalar(op.args[rank + has_mask as usize]) } else { Some(super::scalar::literal(opc_ir::Scalar::Int(0), d)) };
        let (mask, bounds) = if has_mask { self.mask_bounds(op.args[rank], shape.len()) } else { (Some("true".into()), vec![]) };
        let bx = if packed(d) { None } else { self.box_access(op, t) };
        let (Some(bx), Some(other), Some(mask)) = (bx, other, mask) else {
            return self.load_fallback(op, t, has_mask, has_other);
        };
        let dst = self.alloc(d, &shape, self.last_use(r), format!("%{} {}", r.0, self.k.ty(r)));
        self.comment(format!("CopyIn: {}[..] -> {} ({}{:?})", self.k.params[t].name, self.bname(dst), d, shape));
        let g = self.clip_within(t, &bx, &bounds);
        // Fill with `other` when the box is clipped.
        let full = format!("{} && {mask} && {}", g.inb, g.full);
        self.push();
        self.duplicate(dst, d, &other, layout(d, &shape).1);
        let fill = self.pop();
        self.push_stmt(Stmt::If { cond: format!("!({full})"), then_: fill, else_: vec![] });
        // The copy itself, guarded by the bounds and the mask.
        let (ls, _) = layout(d, &shape);
        let nd = shape.len();
        let p = if nd >= 2 { ls[nd - 2] } else { layout(d, &shape).1 as i64 };
        let pb = p as u64 * elem_bytes(d) / 32;
        let rows_len = if nd >= 2 { shape[nd - 2] } else { 1 };
        // A large box streams through the queue in chunks of rows (double-buffered within the
        // load), so one VECIN buffer never exceeds `IN_CHUNK_BYTES`.
        let row_bytes = p as u64 * elem_bytes(d);
        let chunk = ((IN_CHUNK_BYTES / row_bytes).max(1) as usize).min(rows_len);
        let q = self.queue(Pos::VecIn, chunk as u64 * row_bytes);
        let ct = ctype(d);
        let inb = g.inb.clone();
        let c = c0(d);
        let lc = g.lo[nd - 1].clone();
        let body = |l: &mut Lower, outer_off: String, gm_off: String| {
            let (nr, nc) = (g.n(nd.wrapping_sub(2)), g.n(nd - 1));
            let tn = l.fresh("in");
            let (nr, outer_off, gm_off) = if chunk < rows_len {
                l.push();
                l.line(format!("const int32_t {tn}Nr = ({nr}) - {tn}R < {chunk} ? ({nr}) - {tn}R : {chunk};"));
                (format!("{tn}Nr"), format!("{outer_off} + {tn}R * {p}"), format!("{gm_off} + static_cast<int64_t>({tn}R) * {}", g.row_stride))
            } else {
                (nr, outer_off, gm_off)
            };
            let qn = l.out.queues[q].name.clone();
            // A box whose first column is not 0 (a negative start) lands at the 32-byte block
            // holding it, with `leftPadding` elements of `other` in front.
            l.line(format!("const int32_t {tn}Lp = {lc} % {c};"));
            l.line(format!("const int32_t {tn}Blocks = ({tn}Lp + {nc} + {c} - 1) / {c};"));
            l.instr(Pipe::Mte2, format!("LocalTensor<{ct}> {tn} = {qn}.AllocTensor<{ct}>();"), vec![], vec![Res::Queue(q)], Effect::AllocTensor(q));
            l.line(format!("DataCopyExtParams {tn}Cp;"));
            let gap = if nd >= 2 { format!("({} - {nc}) * sizeof({ct})", g.row_stride) } else { "0".into() };
            l.line(format!("{tn}Cp.blockCount = {nr}; {tn}Cp.blockLen = {nc} * sizeof({ct}); {tn}Cp.srcStride = {gap}; {tn}Cp.dstStride = {pb} - {tn}Blocks; {tn}Cp.rsv = 0;"));
            l.line(format!("DataCopyPadExtParams<{ct}> {tn}Pad;"));
            l.line(format!(
                "{tn}Pad.isPad = true; {tn}Pad.leftPadding = static_cast<uint8_t>({tn}Lp); {tn}Pad.rightPadding = static_cast<uint8_t>({tn}Blocks * {c} - {tn}Lp - {nc}); {tn}Pad.paddingValue = static_cast<{ct}>({other});"
            ));
            l.instr(
                Pipe::Mte2,
                format!("DataCopyPad({tn}, {}[{gm_off}], {tn}Cp, {tn}Pad);", l.gm(t)),
                vec![Res::Gm],
                vec![Res::Queue(q)],
                Effect::Copy(CopyLen::Pad),
            );
            l.instr(Pipe::Mte2, format!("{qn}.EnQue({tn});"), vec![], vec![], Effect::EnQue(q));
            l.instr(Pipe::V, format!("{tn} = {qn}.DeQue<{ct}>();"), vec![], vec![], Effect::DeQue(q));
            l.line(format!("DataCopyParams {tn}Cc;"));
            l.line(format!(
                "{tn}Cc.blockCount = {nr}; {tn}Cc.blockLen = {tn}Blocks; {tn}Cc.srcStride = {pb} - {tn}Blocks; {tn}Cc.dstStride = {pb} - {tn}Blocks;"
            ));
            let dn = l.bname(dst);
            l.instr(
                Pipe::V,
                format!("DataCopy({dn}[{outer_off} + ({lc} / {c}) * {c}], {tn}, {tn}Cc);"),
                vec![Res::Queue(q)],
                vec![Res::Buf(dst)],
                Effect::Copy(CopyLen::Blocks(format!("{tn}Cc"))),
            );
            l.instr(Pipe::V, format!("{qn}.FreeTensor({tn});"), vec![], vec![], Effect::FreeTensor(q));
            if chunk < rows_len {
                let rows = l.pop();
                let all = g.n(nd - 2);
                l.push_stmt(Stmt::Loop { head: format!("int32_t {tn}R = 0; {tn}R < {all}; {tn}R += {chunk}"), body: rows });
            }
        };
        self.box_walk(&g, &ls, &format!("{inb} && {mask}"), &body);
        self.set(r, Val::Tile(dst));
        Ok(())
    }

    pub(super) fn push_stmt(&mut self, s: Stmt) {
        self.stack.last_mut().expect("statement stack").push(s);
    }

    /// Declare the clipped extent of every box dim; returns the names.
    pub(super) fn clip(&mut self, t: usize, bx: &BoxAccess) -> Clip {
        self.clip_within(t, bx, &[])
    }

    /// As [`Lower::clip`], also restricted to `bounds[j] = (lo, hi)` on result dim `j` (from a
    /// position mask).
    pub(super) fn clip_within(&mut self, t: usize, bx: &BoxAccess, bounds: &[Bound]) -> Clip {
        let dims = self.tensor_dims(t);
        let id = self.fresh("x");
        let mut inb = vec!["true".to_string()];
        let mut off = vec![];
        for (d, s) in &bx.scalars {
            let dim = self.dimx(&dims[*d]);
            inb.push(format!("({s}) >= 0 && ({s}) < {dim}"));
            off.push(format!("static_cast<int64_t>({s}) * {}", self.stride(t, *d)));
        }
        let mut lo = vec![];
        let mut n = vec![];
        let mut full = vec!["true".to_string()];
        let mut strides = vec![];
        for (j, b) in bx.dims.iter().enumerate() {
            match &b.drive {
                Some((d, start)) => {
                    let dim = self.dimx(&dims[*d]);
                    let (lj, nj) = (format!("{id}Lo{j}"), format!("{id}N{j}"));
                    let (mut l, mut h) = (format!("-static_cast<int64_t>({start})"), format!("static_cast<int64_t>({dim}) - ({start})"));
                    if let Some((bl, bh)) = bounds.get(j) {
                        if let Some(bl) = bl {
                            l = format!("OpcMaxI({l}, {bl})");
                        }
                        if let Some(bh) = bh {
                            h = format!("OpcMinI({h}, {bh})");
                        }
                    }
                    self.line(format!("const int32_t {lj} = OpcClamp({l}, 0, {});", b.len));
                    self.line(format!("const int32_t {nj} = OpcClamp(OpcClamp({h}, 0, {}) - {lj}, 0, {});", b.len, b.len));
                    full.push(format!("{nj} == {}", b.len));
                    off.push(format!("static_cast<int64_t>(({start}) + {lj}) * {}", self.stride(t, *d)));
                    strides.push(self.stride(t, *d));
                    lo.push(lj);
                    n.push(nj);
                }
                None => {
                    lo.push("0".into());
                    n.push("1".into());
                    strides.push("0LL".into());
                }
            }
        }
        let nd = bx.dims.len();
        let row_stride = if nd >= 2 { strides[nd - 2].clone() } else { "0LL".into() };
        Clip { inb: inb.join(" && "), full: full.join(" && "), lo, n, strides, gm_off: if off.is_empty() { "0".into() } else { off.join(" + ") }, row_stride }
    }

    /// Walk the outer dims of a box (all but the last two), calling `body` per 2-D slab with
    /// the slab's tile offset and GM offset; guarded by `cond`.
    fn box_walk(&mut self, g: &Clip, ls: &[i64], cond: &str, body: &dyn Fn(&mut Lower, String, String)) {
        let nd = g.n.len();
        let outer = nd.saturating_sub(2);
        let mut toff: Vec<String> = vec![];
        let mut goff: Vec<String> = vec![format!("({})", g.gm_off)];
        let mut loops: Vec<(String, String)> = vec![];
        for (j, pitch) in ls.iter().enumerate().take(outer) {
            let v = self.fresh("o");
            loops.push((v.clone(), g.n[j].clone()));
            toff.push(format!("({} + {v}) * {pitch}", g.lo[j]));
            goff.push(format!("static_cast<int64_t>({v}) * {}", g.strides[j]));
        }
        if nd >= 2 {
            toff.push(format!("{} * {}", g.lo[nd - 2], ls[nd - 2]));
        }
        let toff = if toff.is_empty() { "0".to_string() } else { toff.join(" + ") };
        let goff = goff.join(" + ");
        self.push();
        body(self, toff, goff);
        let mut stmts = self.pop();
        for (v, n) in loops.iter().rev() {
            stmts = vec![Stmt::Loop { head: format!("int32_t {v} = 0; {v} < {n}; ++{v}"), body: stmts }];
        }
        let cond = format!("{cond} && {}", g.n.iter().map(|n| format!("{n} > 0")).collect::<Vec<_>>().join(" && "));
        self.push_stmt(Stmt::If { cond, then_: stmts, else_: vec![] });
    }

    /// A mask as (uniform condition, per-dim index bounds `[lo, hi)`): a scalar mask, or a
    /// conjunction of position compares that each bound one dim (`cols < N`). `None` condition:
    /// the mask needs the element-wise path.
    fn mask_bounds(&self, m: ValueId, rank: usize) -> (Option<String>, Vec<Bound>) {
        if let Some(s) = self.scalar(m) {
            return (Some(s), vec![]);
        }
        let Val::Pred(p) = self.val(m) else { return (None, vec![]) };
        let mut conds = vec!["true".to_string()];
        let mut bounds: Vec<Bound> = vec![(None, None); rank];
        fn walk(p: &super::Pred, conds: &mut Vec<String>, bounds: &mut [Bound]) -> bool {
            use opc_ir::CmpPred as C;
            match p {
                super::Pred::And(a, b) => walk(a, conds, bounds) && walk(b, conds, bounds),
                super::Pred::Uniform(e) => {
                    conds.push(e.clone());
                    true
                }
                super::Pred::Cmp { op, base, coefs } => {
                    let nz: Vec<usize> = (0..coefs.len()).filter(|&j| coefs[j] != 0).collect();
                    if nz.is_empty() {
                        conds.push(p.at(&[]));
                        return true;
                    }
                    let [j] = nz.as_slice() else { return false };
                    let c = coefs[*j];
                    if c.abs() != 1 || matches!(op, C::Eq | C::Ne) {
                        return false;
                    }
                    // c·i + base (op) 0  ⇔  i (op') -c·base
                    let v = if c == 1 { format!("(-static_cast<int64_t>({base}))") } else { format!("static_cast<int64_t>({base})") };
                    let op = if c == 1 {
                        *op
                    } else {
                        match op {
                            C::Lt => C::Gt,
                            C::Le => C::Ge,
                            C::Gt => C::Lt,
                            C::Ge => C::Le,
                            o => *o,
                        }
                    };
                    let (lo, hi) = match op {
                        C::Lt => (None, Some(v)),
                        C::Le => (None, Some(format!("{v} + 1"))),
                        C::Gt => (Some(format!("{v} + 1")), None),
                        _ => (Some(v), None),
                    };
                    let b = &mut bounds[*j];
                    if let Some(lo) = lo {
                        b.0 = Some(match b.0.take() {
                            Some(x) => format!("OpcMaxI({x}, {lo})"),
                            None => lo,
                        });
                    }
                    if let Some(hi) = hi {
                        b.1 = Some(match b.1.take() {
                            Some(x) => format!("OpcMinI({x}, {hi})"),
                            None => hi,
                        });
                    }
                    true
                }
                _ => false,
            }
        }
        if !walk(&p, &mut conds, &mut bounds) {
            return (None, vec![]);
        }
        (Some(conds.join(" && ")), bounds)
    }

    /// A rank-0 load: one scalar read of GM.
    pub(super) fn scalar_load(&mut self, op: &Op, t: usize, has_mask: bool, has_other: bool) -> Result<()> {
        let r = op.results[0];
        let d = self.dtype(r);
        let rank = self.tensor_dims(t).len();
        let dims = self.tensor_dims(t);
        let mut conds = vec![];
        let mut off = vec!["0LL".to_string()];
        for (i, e) in dims.iter().enumerate() {
            let s = self.scalar_or(op, op.args[i])?;
            conds.push(format!("({s}) >= 0 && ({s}) < {}", self.dimx(e)));
            off.push(format!("static_cast<int64_t>({s}) * {}", self.stride(t, i)));
        }
        if has_mask {
            conds.push(self.scalar_or(op, op.args[rank])?);
        }
        let other = if has_other { self.scalar_or(op, op.args[rank + has_mask as usize])? } else { super::scalar::literal(opc_ir::Scalar::Int(0), d) };
        let read = self.gm_read(t, &off.join(" + "));
        self.def_scalar(r, format!("({}) ? {read} : static_cast<{}>({other})", conds.join(" && "), scalar_ctype(d)));
        Ok(())
    }

    /// Scalar read of element `off` of tensor `t`, as the scalar C++ type.
    fn gm_read(&self, t: usize, off: &str) -> String {
        let d = self.k.tensor_dtype(t).unwrap_or(DType::F32);
        let g = self.gm(t);
        match d {
            DType::I4 => format!("OpcNibble({g}.GetValue(({off}) / 2), ({off}) % 2, true)"),
            DType::E2M1 => format!("OpcNibble({g}.GetValue(({off}) / 2), ({off}) % 2, false)"),
            DType::Bool => format!("({g}.GetValue({off}) != 0)"),
            _ => format!("static_cast<{}>({g}.GetValue({off}))", scalar_ctype(d)),
        }
    }

    /// Per-element load on the scalar unit (gathers, tile masks, packed types).
    fn load_fallback(&mut self, op: &Op, t: usize, has_mask: bool, has_other: bool) -> Result<()> {
        let r = op.results[0];
        let (d, shape) = (self.dtype(r), self.shape(r));
        let dims = self.tensor_dims(t);
        let rank = dims.len();
        let dst = self.alloc(d, &shape, self.last_use(r), format!("%{} {}", r.0, self.k.ty(r)));
        self.comment(format!("CopyIn (element-wise gather): {}[..] -> {}", self.k.params[t].name, self.bname(dst)));
        let mut reads: Vec<Res> = op.args.iter().flat_map(|a| self.bufs_of(*a)).collect();
        reads.push(Res::Gm);
        let spans: Vec<(usize, usize)> = {
            let mut s = 0;
            (0..rank)
                .map(|i| {
                    let n = self.shape(op.args[i]).len();
                    s += n;
                    (s - n, s)
                })
                .collect()
        };
        let args = op.args.clone();
        let dimx: Vec<String> = dims.iter().map(|e| self.dimx(e)).collect();
        let strides: Vec<String> = (0..rank).map(|i| self.stride(t, i)).collect();
        let other_v = has_other.then(|| args[rank + has_mask as usize]);
        let mask_v = has_mask.then(|| args[rank]);
        self.scalar_fill(dst, d, &shape, reads, &|l, idx| {
            let mut conds = vec![];
            let mut off = vec!["0LL".to_string()];
            for (i, (s, e)) in spans.iter().enumerate() {
                let x = l.elem(args[i], &idx[*s..*e]);
                conds.push(format!("{x} >= 0 && {x} < {}", dimx[i]));
                off.push(format!("static_cast<int64_t>({x}) * {}", strides[i]));
            }
            if let Some(m) = mask_v {
                conds.push(l.elem(m, idx));
            }
            let other = match other_v {
                Some(o) => l.elem(o, idx),
                None => "0".into(),
            };
            format!("({}) ? {} : static_cast<{}>({other})", conds.join(" && "), l.gm_read(t, &off.join(" + ")), scalar_ctype(d))
        });
        self.set(r, Val::Tile(dst));
        Ok(())
    }

    // ---- store ------------------------------------------------------------------------------

    pub(super) fn lower_store(&mut self, op: &Op, t: usize, has_mask: bool, atomic: bool) -> Result<()> {
        let rank = self.tensor_dims(t).len();
        let v = op.args[rank];
        let (d, shape) = (self.dtype(v), self.shape(v));
        let (mask, bounds) = if has_mask { self.mask_bounds(op.args[rank + 1], shape.len()) } else { (Some("true".into()), vec![]) };
        if shape.is_empty() {
            return self.scalar_store(op, t, v, mask, atomic);
        }
        let bx = if packed(d) { None } else { self.box_access(op, t) };
        let (Some(bx), Some(mask)) = (bx, mask) else {
            if atomic {
                return Err(self.unsupported(op, "atomic_add needs a box access (affine indices, no tile mask) in the AscendC backend"));
            }
            return self.store_fallback(op, t, has_mask);
        };
        let src = self.materialize(op, v)?;
        self.comment(format!("CopyOut: {} -> {}[..]{}", self.bname(src), self.k.params[t].name, if atomic { " (atomic add)" } else { "" }));
        let g = self.clip_within(t, &bx, &bounds);
        // The UB side of a `DataCopyPad` starts 32-byte aligned: a box clipped on the left (a
        // negative first column) is stored element by element instead.
        let lc = g.lo[shape.len() - 1].clone();
        self.push();
        let (ls, _) = layout(d, &shape);
        let nd = shape.len();
        let p = if nd >= 2 { ls[nd - 2] } else { layout(d, &shape).1 as i64 };
        let pb = p as u64 * elem_bytes(d) / 32;
        let rows_len = if nd >= 2 { shape[nd - 2] } else { 1 };
        let q = self.queue(Pos::VecOut, rows_len as u64 * p as u64 * elem_bytes(d));
        let ct = ctype(d);
        let inb = g.inb.clone();
        let body = |l: &mut Lower, toff: String, goff: String| {
            let (nr, nc) = (g.n(nd.wrapping_sub(2)), g.n(nd - 1));
            let tn = l.fresh("out");
            let qn = l.out.queues[q].name.clone();
            let sn = l.bname(src);
            l.instr(Pipe::V, format!("LocalTensor<{ct}> {tn} = {qn}.AllocTensor<{ct}>();"), vec![], vec![Res::Queue(q)], Effect::AllocTensor(q));
            l.instr(
                Pipe::V,
                format!("DataCopy({tn}, {sn}[{toff}], {nr} * {p});"),
                vec![Res::Buf(src)],
                vec![Res::Queue(q)],
                Effect::Copy(CopyLen::Blocks(format!("{nr} * {pb}"))),
            );
            l.instr(Pipe::V, format!("{qn}.EnQue({tn});"), vec![], vec![], Effect::EnQue(q));
            l.instr(Pipe::Mte3, format!("{tn} = {qn}.DeQue<{ct}>();"), vec![], vec![], Effect::DeQue(q));
            l.line(format!("DataCopyExtParams {tn}Cp;"));
            let gap = if nd >= 2 { format!("({} - {nc}) * sizeof({ct})", g.row_stride) } else { "0".into() };
            l.line(format!(
                "{tn}Cp.blockCount = {nr}; {tn}Cp.blockLen = {nc} * sizeof({ct}); {tn}Cp.srcStride = {pb} - ({nc} * sizeof({ct}) + 31) / 32; {tn}Cp.dstStride = {gap}; {tn}Cp.rsv = 0;"
            ));
            if atomic {
                l.instr(Pipe::Mte3, format!("SetAtomicAdd<{ct}>();"), vec![], vec![], Effect::None);
            }
            l.instr(Pipe::Mte3, format!("DataCopyPad({}[{goff}], {tn}, {tn}Cp);", l.gm(t)), vec![Res::Queue(q)], vec![Res::Gm], Effect::Copy(CopyLen::Pad));
            if atomic {
                l.instr(Pipe::Mte3, "SetAtomicNone();".to_string(), vec![], vec![], Effect::None);
            }
            l.instr(Pipe::Mte3, format!("{qn}.FreeTensor({tn});"), vec![], vec![], Effect::FreeTensor(q));
        };
        self.box_walk(&g, &ls, &format!("{inb} && {mask}"), &body);
        let fast = self.pop();
        self.push();
        if atomic {
            self.instr(Pipe::S, "/* unreachable: atomic boxes start at column 0 */".to_string(), vec![], vec![], Effect::None);
        } else {
            self.store_fallback(op, t, has_mask)?;
        }
        let slow = self.pop();
        self.push_stmt(Stmt::If { cond: format!("{lc} == 0"), then_: fast, else_: slow });
        Ok(())
    }

    /// A rank-0 store: the value goes through a VECOUT buffer and a one-element `DataCopyPad`.
    fn scalar_store(&mut self, op: &Op, t: usize, v: ValueId, mask: Option<String>, atomic: bool) -> Result<()> {
        let dims = self.tensor_dims(t);
        let rank = dims.len();
        let d = self.k.tensor_dtype(t).unwrap_or(DType::F32);
        if packed(d) {
            return Err(self.unsupported(op, "a scalar store into a packed 4-bit tensor"));
        }
        let mask = mask.ok_or_else(|| self.unsupported(op, "a tile mask on a scalar store"))?;
        let mut conds = vec![mask];
        let mut off = vec!["0LL".to_string()];
        for (i, e) in dims.iter().enumerate() {
            let s = self.scalar_or(op, op.args[i])?;
            conds.push(format!("({s}) >= 0 && ({s}) < {}", self.dimx(e)));
            off.push(format!("static_cast<int64_t>({s}) * {}", self.stride(t, i)));
        }
        let val = self.scalar_or(op, v)?;
        let _ = rank;
        let ct = ctype(d);
        let q = self.queue(Pos::VecOut, 32);
        let qn = self.out.queues[q].name.clone();
        let tn = self.fresh("out");
        self.comment(format!("CopyOut (one element) -> {}", self.k.params[t].name));
        self.push();
        self.instr(Pipe::V, format!("LocalTensor<{ct}> {tn} = {qn}.AllocTensor<{ct}>();"), vec![], vec![Res::Queue(q)], Effect::AllocTensor(q));
        self.barrier_all();
        self.instr(Pipe::S, format!("{tn}.SetValue(0, static_cast<{ct}>({val}));"), vec![], vec![Res::Queue(q)], Effect::None);
        self.sync(Pipe::S, Pipe::Mte3);
        self.line(format!("DataCopyExtParams {tn}Cp;"));
        self.line(format!("{tn}Cp.blockCount = 1; {tn}Cp.blockLen = sizeof({ct}); {tn}Cp.srcStride = 0; {tn}Cp.dstStride = 0; {tn}Cp.rsv = 0;"));
        if atomic {
            self.instr(Pipe::Mte3, format!("SetAtomicAdd<{ct}>();"), vec![], vec![], Effect::None);
        }
        self.instr(
            Pipe::Mte3,
            format!("DataCopyPad({}[{}], {tn}, {tn}Cp);", self.gm(t), off.join(" + ")),
            vec![Res::Queue(q)],
            vec![Res::Gm],
            Effect::Copy(CopyLen::Pad),
        );
        if atomic {
            self.instr(Pipe::Mte3, "SetAtomicNone();".to_string(), vec![], vec![], Effect::None);
        }
        self.instr(Pipe::Mte3, format!("{qn}.FreeTensor({tn});"), vec![], vec![], Effect::FreeTensor(q));
        let then_ = self.pop();
        self.push_stmt(Stmt::If { cond: conds.join(" && "), then_, else_: vec![] });
        Ok(())
    }

    /// Per-element store on the scalar unit (tile masks, scattered indices).
    fn store_fallback(&mut self, op: &Op, t: usize, has_mask: bool) -> Result<()> {
        let dims = self.tensor_dims(t);
        let rank = dims.len();
        let v = op.args[rank];
        let (d, shape) = (self.dtype(v), self.shape(v));
        self.comment(format!("CopyOut (element-wise): -> {}", self.k.params[t].name));
        let spans: Vec<(usize, usize)> = {
            let mut s = 0;
            (0..rank)
                .map(|i| {
                    let n = self.shape(op.args[i]).len();
                    s += n;
                    (s - n, s)
                })
                .collect()
        };
        let idx = self.idx_names(shape.len());
        let mut conds = vec![];
        let mut off = vec!["0LL".to_string()];
        for (i, (s, e)) in spans.iter().enumerate() {
            let x = self.elem(op.args[i], &idx[*s..*e]);
            conds.push(format!("{x} >= 0 && {x} < {}", self.dimx(&dims[i])));
            off.push(format!("static_cast<int64_t>({x}) * {}", self.stride(t, i)));
        }
        if has_mask {
            conds.push(self.elem(op.args[rank + 1], &idx));
        }
        let val = self.elem(v, &idx);
        let put = if packed(d) {
            format!("OpcStoreNibble({}, {}, {val});", self.gm(t), off.join(" + "))
        } else {
            format!("{}.SetValue({}, static_cast<{}>({val}));", self.gm(t), off.join(" + "), ctype(d))
        };
        let body = format!("if ({}) {{\n    {put}\n}}", conds.join(" && "));
        let text = Self::loop_nest(&shape, &body.replace('\n', &format!("\n{}", "    ".repeat(shape.len()))), &idx);
        let mut reads: Vec<Res> = op.args.iter().flat_map(|a| self.bufs_of(*a)).collect();
        reads.dedup();
        self.barrier_all();
        self.instr(Pipe::S, text, reads, vec![Res::Gm], Effect::None);
        Ok(())
    }
}

/// Run-time extents of a clipped box (C++ names).
pub(super) struct Clip {
    pub inb: String,
    pub full: String,
    pub lo: Vec<String>,
    pub n: Vec<String>,
    pub strides: Vec<String>,
    pub gm_off: String,
    pub row_stride: String,
}

impl Clip {
    /// Valid count of dim `j` (`1` for a missing dim).
    pub(super) fn n(&self, j: usize) -> String {
        self.n.get(j).cloned().unwrap_or_else(|| "1".into())
    }
}

#[allow(dead_code)]
fn unused(_: BufId) -> u64 {
    lir::round_up(0, 1)
}
