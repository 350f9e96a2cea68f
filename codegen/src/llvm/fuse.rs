//! Fused reductions: `sum` / `max` / `min` along the last dim of an elementwise expression tree
//! run as one vector loop that evaluates the tree chunk by chunk, loads included, and keeps the
//! partial results in registers. Nothing of the tree is written to the arena.
//!
//! Without this, `sum(cast(load(w[cols, ks]), f32) * load(x[ks])[None, :], 1)` (the GEMV step)
//! is four loops over a `[BN, BK]` arena tile: load, cast, multiply, reduce. A memory-bound
//! kernel then spends its time on arena traffic instead of on DRAM.
//!
//! **What fuses** ([`Lower::plan_fusion`], run per block before lowering it): the producer tree
//! of a last-dim `sum` / `max` / `min`, made of ops in the same block whose result has exactly
//! one use (so nothing else needs the tile): elementwise ops (unary, binary, compare, select,
//! cast, bitcast), the views `x[:, None]` / `broadcast` / `reshape` (when rows of 16 lanes never
//! straddle the source's rows), and `load`s of input tensors (never of outputs, so no store can
//! run between the load and the reduction). i32 arithmetic joins only over an operand that is
//! itself fused: index arithmetic stays affine (`lower.rs`), which is what makes loads
//! contiguous. Fused ops are skipped where they stand and evaluated inside the reduction; the
//! values they read stay alive until then.
//!
//! The same trees under an elementwise op whose result is kept (used twice, or by a `dot`, a
//! store, a `for` carry) fuse into that op: one loop writes its rows ([`Lower::fused_map`]).
//! This is what turns `cast(load(codes)) * cast(load(scales))[:, :, None]` feeding an MXFP4
//! `dot` into a single decode loop.
//!
//! **Point evaluation** ([`Lower::pe`]): a tree node is evaluated at one index per dim: a scalar
//! (`Ix::S`), or the lane dim (`Ix::L(j0)`: lanes `j0 .. j0 + lanes`), always the node's last
//! dim or absent (views drop it when they broadcast along it). A result is uniform across the
//! lanes, a vector, or affine in the lane (`base + c·lane`, i32) so that a load indexed by
//! `k0 + arange(BK)` becomes one masked vector load. Packed 4-bit loads along the lane dim read
//! `lanes / 2` bytes and split them (an odd first element takes a byte gather instead).
//! Elementwise semantics are `elem.rs`'s, bit for bit; loads read exactly what `memory.rs`
//! reads (out-of-range or masked lanes give `other`, never touching memory).
//!
//! `OPC_LLVM_NOFUSE=1` turns the fusion off (for A/B timing and debugging).
//!
//! **The loop** ([`Lower::fused_reduce`]): output rows in groups of 4, each with its own vector
//! accumulator, walked chunk by chunk together (independent FMA chains, and 4 memory streams
//! for the hardware prefetcher); a lone row gets 4 accumulators over its chunks instead. A
//! partial last chunk is filled with the identity; at the end the accumulators are combined
//! and the lanes folded by halving (`Lower::fold_lanes`).
//! **Loop versioning** (the rows of fused reductions and of fused maps alike): when the tree's
//! load indices are affine in the lane position (directly,
//! or through one root `reshape` whose source's trailing dims make up a row), the loads are
//! first checked at the corner chunks ([`Lower::corner_chunks`], no memory touched); if every
//! lane is in bounds there, the full chunks run with plain loads ([`Bounds::Unchecked`]: no
//! per-chunk masks, packed nibbles read from a row byte plus a step byte without a parity
//! branch, the check also proving both even), otherwise masked as above.
//! A `sum` of a product with a factor constant along blocks of the last dim (an MXFP4 block's
//! scale) folds that factor in once per block, and rows sharing a broadcast term share its
//! evaluation (`fuse_block.rs`).
//! Row groups step two chunks at a time (8 FMA chains; an MXFP4 block's scale loaded once).
//! Numerics are those of the unfused row reduction (`reduce.rs`): float sums are reassociated
//! (more partial sums), and `sum(a * b)` over f32 is contracted to one FMA per element (the
//! product is not rounded separately), a rounding-only difference of the same order.

use std::collections::{HashMap, HashSet};

use opc_ir::{Block, DType, Op, OpKind, ParamKind, ReduceOp, ValueId};

use super::lower::{ety, iota, lane_mask, lanes_for, row_major, Lower, Repr, RowAcc};
use super::memory::Dest;
use super::text::{cst, flit, suffix, vt};
use crate::Result;

/// One index of a point evaluation (i64 operands).
#[derive(Clone, Debug)]
pub(super) enum Ix {
    /// One index, the same for every lane.
    S(String),
    /// The lane dim: lane `i` is at `j0 + i`.
    L(String),
}

/// A point-evaluated value.
#[derive(Clone, Debug)]
pub(super) enum Pv {
    /// The same element in every lane.
    U(String),
    /// A `<lanes x T>` vector.
    V(String),
    /// i32 `base + c·lane`.
    A { base: String, c: i64 },
}

/// How fused loads treat their bounds.
#[derive(Clone, Debug, Default)]
pub(super) enum Bounds {
    /// Every access masked by its bounds (the general case).
    #[default]
    Masked,
    /// Bounds already proven for the whole loop: plain loads (explicit masks still apply).
    Unchecked,
    /// Emit no loads: AND into this i1 whether every lane of each load is within bounds.
    Check(String),
}

/// Accumulators per row when a row is reduced alone.
const UNROLL: usize = 4;
/// Chunks per step of a group of rows (each with its own accumulators: 8 independent FMA
/// chains, and values shared by neighbouring chunks, like an MXFP4 block's scale, computed once).
const GROUP_UNROLL: usize = 2;
/// Rows reduced together (one accumulator and one memory stream each).
const ROWS: usize = 4;
/// Rows of a fused map shorter than this run as panels of rows ([`Lower::fused_map_panels`]).
const SHORT_ROW: usize = 128;

impl Lower<'_> {
    /// Decide which ops of `blk` are evaluated inside a later reduction: op index → the index
    /// of the reduction that absorbs it.
    pub(super) fn plan_fusion(&mut self, blk: &Block) -> (HashMap<usize, usize>, HashSet<usize>, super::fuse_group::Groups) {
        let mut def: HashMap<ValueId, usize> = HashMap::new();
        for (i, op) in blk.ops.iter().enumerate() {
            for &r in &op.results {
                def.insert(r, i);
            }
        }
        let mut plan = HashMap::new();
        let mut roots = HashSet::new();
        if std::env::var_os("OPC_LLVM_NOFUSE").is_some() {
            return (plan, roots, Default::default());
        }
        // Reductions sharing values first (`fuse_group.rs`), then each other one alone.
        let groups = self.plan_groups(blk, &def, &mut plan);
        for (i, op) in blk.ops.iter().enumerate() {
            let OpKind::Reduce { op: rop, axis } = op.kind else { continue };
            if plan.contains_key(&i) || groups.contains_key(&i) {
                continue;
            }
            let x = op.args[0];
            let rank = self.k.ty(x).rank();
            if rop == ReduceOp::Argmax || rop == ReduceOp::Argmin || rank == 0 || axis as usize != rank - 1 || self.shape(x)[rank - 1] == 0 {
                continue;
            }
            let mut set = HashSet::new();
            if self.want(blk, &def, x, i, &mut set) {
                for v in set {
                    let j = def[&v];
                    plan.insert(j, i);
                    self.fused.insert(v, blk.ops[j].clone());
                }
            }
        }
        // Elementwise ops whose result is kept (several uses, or a consumer that is not
        // elementwise) with fusible operands: one loop writes the result ([`Lower::fused_map`]).
        // Consumers first, so a chain is absorbed by its last op.
        for (i, op) in blk.ops.iter().enumerate().rev() {
            if plan.contains_key(&i) || op.results.len() != 1 {
                continue;
            }
            let t = self.k.ty(op.result());
            let elementwise = matches!(op.kind, OpKind::Unary(_) | OpKind::Binary(_) | OpKind::Cmp(_) | OpKind::Select | OpKind::Cast(_) | OpKind::Bitcast);
            let index_math = t.dtype == DType::I32 && matches!(op.kind, OpKind::Unary(_) | OpKind::Binary(_));
            if !elementwise || index_math || t.rank() == 0 || t.shape[t.rank() - 1] < 8 {
                continue;
            }
            let mut set = HashSet::new();
            for &a in &op.args {
                if self.k.ty(a).shape == t.shape {
                    let mut inner = HashSet::new();
                    if self.want(blk, &def, a, i, &mut inner) {
                        set.extend(inner);
                    }
                }
            }
            if set.is_empty() {
                continue;
            }
            roots.insert(i);
            for v in set {
                let j = def[&v];
                plan.insert(j, i);
                self.fused.insert(v, blk.ops[j].clone());
            }
        }
        (plan, roots, groups)
    }

    /// An elementwise op planned as a fusion root: one loop over its rows (or over panels of
    /// short rows) evaluates its tree chunk by chunk into a fresh buffer.
    pub(super) fn fused_map(&mut self, op: &Op) -> Result<()> {
        let v = op.result();
        let shape = self.shape(v);
        let out = self.alloc(shape.iter().product());
        let dst = Dest { off: out, base: "0".into(), strides: row_major(&shape), prefetch: vec![], raw_bf16: false };
        self.fused_map_into(op, &dst)?;
        self.set(v, Repr::Buf { off: out, strides: row_major(&shape) });
        Ok(())
    }

    /// Evaluate the fused tree rooted at `op` into `dst` (element `i` of the result at
    /// `dst.base + Σ i_d · dst.strides[d]`): the rows form, or the panels form for short rows
    /// when `dst`'s last dim is contiguous. `kloop.rs` points `dst` into a packed GEMM panel.
    pub(super) fn fused_map_into(&mut self, op: &Op, dst: &Dest) -> Result<()> {
        let v = op.result();
        let shape = self.shape(v);
        let r = shape.len();
        let n = shape[r - 1];
        let lanes = lanes_for(n);
        self.fused.insert(v, op.clone());
        // Short rows run as panels of the last `p` dims (3, else 2) when the tree is affine in
        // all of them.
        let short = dst.strides[r - 1] == 1 && n < SHORT_ROW && n.is_multiple_of(lanes as usize);
        let dims = [3, 2].into_iter().find(|&p| short && r >= p && shape[r - p..r - 1].iter().product::<usize>() > 1 && self.linear_tree(v, p));
        let res = match dims {
            Some(p) => self.fused_map_panels(v, &shape, lanes, dst, p),
            None => self.fused_map_rows(v, &shape, lanes, dst),
        };
        self.fused.remove(&v);
        res
    }

    /// Store a chunk of the fused map's result at element `e` of `dst`.
    fn store_mapped(&mut self, dst: &Dest, d: DType, e: &str, y: &Pv, lanes: u32, mask: Option<&str>) {
        let base = ety(d);
        let y = self.pv_vec(y, base, lanes);
        if dst.raw_bf16 {
            let h = self.repr_to_mem(DType::BF16, &y, lanes);
            self.store_raw16(dst.off, e, &h, lanes, mask);
        } else {
            self.store_arena(base, lanes, dst.off, e, &y, mask);
        }
    }

    /// [`Lower::fused_map`] row by row: each row's full chunks versioned at its corner chunks,
    /// then a masked tail.
    fn fused_map_rows(&mut self, v: ValueId, shape: &[usize], lanes: u32, dst: &Dest) -> Result<()> {
        let d = self.dtype(v);
        let r = shape.len();
        let n = shape[r - 1];
        self.nest(&shape[..r - 1], &mut |l, oidx| {
            let row = dst.elem(l, oidx);
            let chunk = |l: &mut Self, j0: &str, valid: usize| -> Result<()> {
                let mut ix: Vec<Ix> = oidx.iter().map(|i| Ix::S(i.clone())).collect();
                ix.push(Ix::L(j0.to_string()));
                let y = l.pe(v, &ix, lanes, valid)?;
                let j = if dst.strides[r - 1] == 1 { j0.to_string() } else { l.f.val(format!("mul i64 {j0}, {}", dst.strides[r - 1])) };
                let e = l.f.val(format!("add i64 {row}, {j}"));
                let m = (valid < lanes as usize).then(|| lane_mask(lanes, valid));
                l.store_mapped(dst, d, &e, &y, lanes, m.as_deref());
                Ok(())
            };
            let chunks = n / lanes as usize;
            // The full chunks run versioned: unmasked loads when the row's corner chunks are
            // in bounds (no per-chunk lane-mask arithmetic), masked otherwise; one masked tail.
            let full = |l: &mut Self| {
                l.loop_n(chunks, &mut |l, c| {
                    let j0 = if c == "0" { "0".to_string() } else { l.f.val(format!("mul i64 {c}, {lanes}")) };
                    chunk(l, &j0, lanes as usize)
                })
            };
            let rix: Vec<Ix> = oidx.iter().map(|i| Ix::S(i.clone())).collect();
            l.rows_versioned(v, &[rix], n, lanes, &full)?;
            if n % lanes as usize > 0 {
                chunk(l, &(chunks * lanes as usize).to_string(), n % lanes as usize)?;
            }
            Ok(())
        })
    }

    /// [`Lower::fused_map`] over short rows (`n` < [`SHORT_ROW`], whole chunks), e.g. the
    /// `[BN, BK/32, 32]` decode of an MXFP4 weight tile (one row per 32-element block): each
    /// panel of the last `p` dims runs as one loop nest over its rows and chunks, versioned once
    /// at the panel's corners (the tree is affine in all `p` dims, [`Lower::linear_tree`])
    /// instead of per row, where the checks and loop setup cost more than the row's two chunks.
    /// `dst`'s last dim is contiguous.
    fn fused_map_panels(&mut self, v: ValueId, shape: &[usize], lanes: u32, dst: &Dest, p: usize) -> Result<()> {
        let r = shape.len();
        let inner = &shape[r - p..r - 1];
        let n = shape[r - 1];
        let per = n / lanes as usize;
        let d = self.dtype(v);
        self.nest(&shape[..r - p], &mut |l, oidx| {
            let at = |oidx: &[String], digits: &[String], j0: String| -> Vec<Ix> {
                oidx.iter().chain(digits).map(|i| Ix::S(i.clone())).chain([Ix::L(j0)]).collect()
            };
            // Nested loops (row dims, then the row's chunks): the per-row address terms are
            // hoisted out of the short inner loops, which LLVM unrolls.
            let dims: Vec<usize> = inner.iter().copied().chain([per]).collect();
            let full = |l: &mut Self| {
                l.nest(&dims, &mut |l, idx| {
                    let (digits, j) = idx.split_at(inner.len());
                    let j0 = l.f.val(format!("mul i64 {}, {lanes}", j[0]));
                    let y = l.pe(v, &at(oidx, digits, j0.clone()), lanes, lanes as usize)?;
                    let row = dst.elem(l, &[oidx, digits].concat());
                    let e = l.f.val(format!("add i64 {row}, {j0}"));
                    l.store_mapped(dst, d, &e, &y, lanes, None);
                    Ok(())
                })
            };
            // The corners bound every chunk (affine indices); one step along each dim from the
            // first corner proves packed-nibble offsets even everywhere, as in `corner_chunks`.
            let tops: Vec<usize> = inner.iter().map(|&e| e - 1).chain([n - lanes as usize]).collect();
            let mut corners: Vec<Vec<usize>> = vec![vec![]];
            for &t in &tops {
                corners = corners.into_iter().flat_map(|c| [0, t].map(|x| c.iter().copied().chain([x]).collect::<Vec<_>>())).collect();
            }
            for (k, &t) in tops.iter().enumerate() {
                if t > 0 {
                    let mut c = vec![0; tops.len()];
                    c[k] = if k + 1 == tops.len() { lanes as usize } else { 1 };
                    corners.push(c);
                }
            }
            corners.sort_unstable();
            corners.dedup();
            let points: Vec<(ValueId, Vec<Ix>)> = corners
                .iter()
                .map(|c| {
                    let (digits, j0) = c.split_at(c.len() - 1);
                    let digits: Vec<String> = digits.iter().map(|x| x.to_string()).collect();
                    (v, at(oidx, &digits, j0[0].to_string()))
                })
                .collect();
            l.versioned(&points, lanes, &full)
        })
    }

    /// Whether `v` can be evaluated inside the reduction at op index `at`; adds it and its fused
    /// operands to `set`.
    pub(super) fn want(&self, blk: &Block, def: &HashMap<ValueId, usize>, v: ValueId, at: usize, set: &mut HashSet<ValueId>) -> bool {
        self.want_shared(blk, def, v, at, set, &HashSet::new())
    }

    /// [`Lower::want`], where the values in `multi` may have several uses (a reduction group's
    /// shared values, `fuse_group.rs`).
    pub(super) fn want_shared(&self, blk: &Block, def: &HashMap<ValueId, usize>, v: ValueId, at: usize, set: &mut HashSet<ValueId>, multi: &HashSet<ValueId>) -> bool {
        let Some(&i) = def.get(&v) else { return false };
        let op = &blk.ops[i];
        let t = self.k.ty(v);
        if i >= at || (self.uses[v.0 as usize] != 1 && !multi.contains(&v)) || op.results.len() != 1 || t.rank() == 0 || self.fused.contains_key(&v) {
            return false;
        }
        let same = |a: ValueId| self.k.ty(a).shape == t.shape;
        match &op.kind {
            OpKind::Unary(_) | OpKind::Binary(_) | OpKind::Cmp(_) | OpKind::Select | OpKind::Cast(_) | OpKind::Bitcast => {
                let mut any = false;
                let mut inner = HashSet::new();
                for &a in &op.args {
                    if !same(a) && self.k.ty(a).numel() != 1 {
                        return false;
                    }
                    if same(a) && self.want_shared(blk, def, a, at, &mut inner, multi) {
                        any = true;
                    }
                }
                // i32 arithmetic over unfused operands is index math: leave it affine.
                let index_math = t.dtype == DType::I32 && matches!(op.kind, OpKind::Unary(_) | OpKind::Binary(_));
                if index_math && !any {
                    return false;
                }
                set.extend(inner);
            }
            OpKind::ExpandDims(_) | OpKind::Broadcast => {
                let mut inner = HashSet::new();
                if !self.want_shared(blk, def, op.args[0], at, &mut inner, multi) {
                    return false;
                }
                set.extend(inner);
            }
            OpKind::Reshape => {
                let (a, r) = (self.shape(op.args[0]), &t.shape);
                let ok = |s: &[usize]| s.last().is_some_and(|&n| n % 16 == 0);
                let mut inner = HashSet::new();
                if !ok(&a) || !ok(r) || !self.want_shared(blk, def, op.args[0], at, &mut inner, multi) {
                    return false;
                }
                set.extend(inner);
            }
            OpKind::Load { tensor, .. } => {
                match &self.k.params.get(*tensor).map(|p| &p.kind) {
                    Some(ParamKind::Tensor { output: false, .. }) => {}
                    _ => return false,
                }
                let mut inner = HashSet::new();
                for &a in &op.args {
                    if self.k.ty(a).rank() > 0 {
                        self.want_shared(blk, def, a, at, &mut inner, multi);
                    }
                }
                set.extend(inner);
            }
            _ => return false,
        }
        set.insert(v);
        true
    }

    /// A point value as a `<lanes x base>` vector.
    pub(super) fn pv_vec(&mut self, p: &Pv, base: &str, lanes: u32) -> String {
        match p {
            Pv::U(x) => self.f.splat(base, lanes, x),
            Pv::V(x) => x.clone(),
            Pv::A { base: b, c } => {
                let s = self.f.splat("i32", lanes, b);
                self.f.val(format!("add <{lanes} x i32> {s}, {}", iota(lanes, *c)))
            }
        }
    }

    /// Σ idx·stride over the scalar indices (i64), and the stride of the lane dim if any.
    fn split_ix(&mut self, ix: &[Ix], strides: &[i64]) -> (String, Option<(String, i64)>) {
        let mut s = vec![];
        let mut st = vec![];
        let mut lane = None;
        for (x, &k) in ix.iter().zip(strides) {
            match x {
                Ix::S(i) => {
                    s.push(i.clone());
                    st.push(k);
                }
                Ix::L(j0) => lane = Some((j0.clone(), k)),
            }
        }
        (self.linear(&s, &st), lane)
    }

    /// Evaluate `v` at `ix` on `lanes` lanes, of which the first `valid` matter.
    /// Within a group step (`pe_memo` set), each fused value is emitted once per index.
    pub(super) fn pe(&mut self, v: ValueId, ix: &[Ix], lanes: u32, valid: usize) -> Result<Pv> {
        let Some(op) = self.fused.get(&v).cloned() else { return Ok(self.pe_leaf(v, ix, lanes, valid)) };
        let key = self.pe_memo.as_ref().map(|_| format!("{}|{ix:?}|{lanes}|{valid}|{}", v.0, self.arith_only));
        if let Some(p) = key.as_ref().and_then(|k| self.pe_memo.as_ref().and_then(|m| m.get(k))) {
            return Ok(p.clone());
        }
        let p = self.pe_op(v, &op, ix, lanes, valid)?;
        if let (Some(k), Some(m)) = (key, self.pe_memo.as_mut()) {
            m.insert(k, p.clone());
        }
        Ok(p)
    }

    /// The index into the source of the view `op` (`expand_dims` / `broadcast`) read at `ix`.
    pub(super) fn view_ix(&self, op: &Op, ix: &[Ix]) -> Vec<Ix> {
        if let OpKind::ExpandDims(axis) = op.kind {
            let mut sub = ix.to_vec();
            sub.remove(axis as usize);
            return sub;
        }
        let (ins, shape) = (self.shape(op.args[0]), self.shape(op.result()));
        let pad = shape.len() - ins.len();
        (pad..shape.len()).map(|i| if ins[i - pad] == shape[i] { ix[i].clone() } else { Ix::S("0".into()) }).collect()
    }

    /// [`Lower::pe`] of the fused op `op` defining `v`.
    fn pe_op(&mut self, v: ValueId, op: &Op, ix: &[Ix], lanes: u32, valid: usize) -> Result<Pv> {
        let shape = self.shape(v);
        match &op.kind {
            OpKind::ExpandDims(_) | OpKind::Broadcast => {
                let sub = self.view_ix(op, ix);
                self.pe(op.args[0], &sub, lanes, valid)
            }
            OpKind::Reshape => {
                let sub = self.reshape_ix(&op, ix);
                self.pe(op.args[0], &sub, lanes, valid)
            }
            OpKind::Load { tensor, has_mask, has_other } => self.pe_load(op, *tensor, *has_mask, *has_other, ix, lanes, valid),
            _ => {
                let mut xs = vec![];
                for &a in &op.args {
                    xs.push(self.pe_arg(a, &shape, ix, lanes, valid)?);
                }
                let scalar = xs.iter().all(|x| matches!(x, Pv::U(_)));
                let w = if scalar { 0 } else { lanes };
                let vals: Vec<String> = op
                    .args
                    .iter()
                    .zip(&xs)
                    .map(|(&a, x)| match x {
                        Pv::U(s) if scalar => s.clone(),
                        _ => {
                            let b = ety(self.dtype(a));
                            self.pv_vec(x, b, lanes)
                        }
                    })
                    .collect();
                let y = self.elementwise(&op, &vals, w)?;
                Ok(if scalar { Pv::U(y) } else { Pv::V(y) })
            }
        }
    }

    /// The source indices of a fused `reshape` read at `ix`: the flat row-major element index,
    /// split by the source's dims; the lane dim is the last of both (rows of 16 never straddle
    /// a source row, checked by the plan).
    pub(super) fn reshape_ix(&mut self, op: &Op, ix: &[Ix]) -> Vec<Ix> {
        let (ins, shape) = (self.shape(op.args[0]), self.shape(op.result()));
        if let Some(k) = Self::trailing_split(&ins, &shape) {
            // The source's dims `k..` make up exactly one row of the result: they are the
            // digits of the lane position alone, the leading ones those of the row (no
            // division of the full flat index, which would hide that the row is loop-invariant).
            let r = shape.len();
            let mut sub = self.digits(&ix[..r - 1], &shape[..r - 1], &ins[..k]);
            sub.extend(self.digits(&ix[r - 1..], &shape[r - 1..], &ins[k..]));
            return sub;
        }
        let (flat, lane) = self.split_ix(ix, &row_major(&shape));
        let flat = match &lane {
            Some((j0, _)) => self.f.val(format!("add i64 {flat}, {j0}")),
            None => flat,
        };
        let mut sub = vec![Ix::S("0".into()); ins.len()];
        let mut rest = flat;
        for d in (0..ins.len()).rev() {
            let q = self.f.val(format!("udiv i64 {rest}, {}", ins[d]));
            let r = self.f.val(format!("urem i64 {rest}, {}", ins[d]));
            sub[d] = if d == ins.len() - 1 && lane.is_some() { Ix::L(r) } else { Ix::S(r) };
            rest = q;
        }
        sub
    }

    /// The first source dim of the trailing run whose product is the result's last dim, when
    /// there is one.
    pub(super) fn trailing_split(ins: &[usize], shape: &[usize]) -> Option<usize> {
        let n = *shape.last()?;
        let (mut prod, mut k) = (1, ins.len());
        while k > 0 && prod < n {
            k -= 1;
            prod *= ins[k];
        }
        (prod == n && k < ins.len()).then_some(k)
    }

    /// The index `ix` into a tile of `shape` (row-major), re-split by the dims `to` of the
    /// same element count; a lane index stays the lane index of the last dim.
    fn digits(&mut self, ix: &[Ix], shape: &[usize], to: &[usize]) -> Vec<Ix> {
        let (flat, lane) = self.split_ix(ix, &row_major(shape));
        let flat = match &lane {
            Some((j0, _)) => self.f.val(format!("add i64 {flat}, {j0}")),
            None => flat,
        };
        let mut sub = vec![Ix::S("0".into()); to.len()];
        let mut rest = flat;
        for d in (0..to.len()).rev() {
            let (q, r) = if to[d] == 1 {
                (rest.clone(), "0".to_string())
            } else {
                (self.f.val(format!("udiv i64 {rest}, {}", to[d])), self.f.val(format!("urem i64 {rest}, {}", to[d])))
            };
            sub[d] = if d == to.len() - 1 && lane.is_some() { Ix::L(r) } else { Ix::S(r) };
            rest = q;
        }
        sub
    }

    /// An elementwise operand at `ix`: of the result's shape, or a one-element tile.
    fn pe_arg(&mut self, a: ValueId, shape: &[usize], ix: &[Ix], lanes: u32, valid: usize) -> Result<Pv> {
        if self.k.ty(a).shape == shape {
            self.pe(a, ix, lanes, valid)
        } else {
            Ok(Pv::U(self.uniform(a).expect("a one-element operand (checked by the plan)")))
        }
    }

    /// An operand of the contracted `sum(a * b)`: a bf16 load reached through widening casts
    /// and views only skips its NaN quieting (see `pe_load`).
    pub(super) fn pe_fma_operand(&mut self, a: ValueId, shape: &[usize], ix: &[Ix], lanes: u32, valid: usize) -> Result<Pv> {
        let mut v = a;
        let direct = loop {
            match self.fused.get(&v).map(|o| (o.kind.clone(), o.args.first().copied())) {
                Some((OpKind::Cast(_), Some(x))) if ety(self.dtype(x)) == "float" => v = x,
                Some((OpKind::ExpandDims(_) | OpKind::Broadcast, Some(x))) => v = x,
                Some((OpKind::Load { .. }, _)) => break self.dtype(v) == DType::BF16,
                _ => break false,
            }
        };
        self.arith_only = direct;
        let r = self.pe_arg(a, shape, ix, lanes, valid);
        self.arith_only = false;
        r
    }

    /// Elementwise semantics of a fused op (as `lower_op` applies them through `map_op`).
    fn elementwise(&mut self, op: &Op, x: &[String], lanes: u32) -> Result<String> {
        match &op.kind {
            OpKind::Unary(u) => {
                let d = self.dtype(op.args[0]);
                self.unary(op, *u, d, &x[0], lanes)
            }
            OpKind::Binary(b) => {
                let d = self.dtype(op.args[0]);
                self.binary(op, *b, d, &x[0], &x[1], lanes)
            }
            OpKind::Cmp(p) => {
                let d = self.dtype(op.args[0]);
                Ok(self.cmp(*p, d, &x[0], &x[1], lanes))
            }
            OpKind::Select => {
                let t = vt(ety(self.dtype(op.args[1])), lanes);
                let c = self.f.val(format!("icmp ne {} {}, {}", vt("i32", lanes), x[0], cst("i32", lanes, "0")));
                Ok(self.f.val(format!("select {} {c}, {t} {}, {t} {}", vt("i1", lanes), x[1], x[2])))
            }
            OpKind::Cast(r) => {
                let (from, to) = (self.dtype(op.args[0]), self.dtype(op.result()));
                if from == DType::F32 && to == DType::BF16 && self.bf16_exact(op.args[0]) {
                    // already a bf16 value (the MXFP4 decode): no rounding to do
                    return Ok(x[0].clone());
                }
                Ok(self.cast(from, to, *r, &x[0], lanes))
            }
            OpKind::Bitcast => {
                let (from, to) = (self.dtype(op.args[0]), self.dtype(op.result()));
                Ok(self.bitcast(from, to, &x[0], lanes))
            }
            _ => unreachable!("planned as elementwise"),
        }
    }

    /// An unfused value at `ix`.
    fn pe_leaf(&mut self, v: ValueId, ix: &[Ix], lanes: u32, valid: usize) -> Pv {
        let base = ety(self.dtype(v));
        match self.repr(v) {
            Repr::Uniform(x) => Pv::U(x),
            Repr::Affine { base: b, coefs } => {
                let (s, lane) = self.split_ix(ix, &coefs);
                let b = if s == "0" {
                    b
                } else {
                    let t = self.f.val(format!("trunc i64 {s} to i32"));
                    self.f.val(format!("add i32 {b}, {t}"))
                };
                match lane {
                    Some((j0, c)) if c != 0 => {
                        let j = self.f.val(format!("trunc i64 {j0} to i32"));
                        let cj = self.f.val(format!("mul i32 {j}, {c}"));
                        let b = self.f.val(format!("add i32 {b}, {cj}"));
                        Pv::A { base: b, c }
                    }
                    _ => Pv::U(b),
                }
            }
            Repr::Buf { off, strides } => {
                let (row, lane) = self.split_ix(ix, &strides);
                match lane {
                    Some((j0, s)) if s != 0 => Pv::V(self.read_vec(&RowAcc::Arena { off, row, s }, base, lanes, &j0, valid)),
                    _ => Pv::U(self.load_arena(base, 0, off, &row)),
                }
            }
        }
    }

    /// A fused `load` at `ix` (see the module docs).
    #[allow(clippy::too_many_arguments)]
    fn pe_load(&mut self, op: &Op, tensor: usize, has_mask: bool, has_other: bool, ix: &[Ix], lanes: u32, valid: usize) -> Result<Pv> {
        let tv = self.tensors[tensor].clone().expect("tensor parameter");
        let rank = tv.shape.len();
        let dt = tv.dtype;
        let rb = ety(dt);
        // Each index tile's share of the access dims.
        let mut at = 0;
        let mut idx = vec![];
        for d in 0..rank {
            let a = op.args[d];
            let r = self.k.ty(a).rank();
            idx.push(self.pe(a, &ix[at..at + r], lanes, valid)?);
            at += r;
        }
        let mask = if has_mask { Some(self.pe(op.args[rank], ix, lanes, valid)?) } else { None };
        let other = if has_other {
            self.pe(op.args[rank + has_mask as usize], ix, lanes, valid)?
        } else {
            Pv::U(if rb == "float" { "0.0".into() } else { "0".into() })
        };
        // Scalar part: offset and validity of the dims indexed by uniform values.
        let unchecked = matches!(self.bounds, Bounds::Unchecked);
        let mut off = "0".to_string();
        let mut ok = "true".to_string();
        for (d, p) in idx.iter().enumerate() {
            if let Pv::U(i) = p {
                let i = self.f.val(format!("sext i32 {i} to i64"));
                if !unchecked {
                    let inb = self.f.val(format!("icmp ult i64 {i}, {}", tv.shape[d]));
                    ok = self.f.val(format!("and i1 {ok}, {inb}"));
                }
                let t = self.f.val(format!("mul i64 {i}, {}", tv.strides[d]));
                off = self.f.val(format!("add i64 {off}, {t}"));
            }
        }
        let lane_dims: Vec<usize> = (0..rank).filter(|&d| !matches!(idx[d], Pv::U(_))).collect();
        if let Bounds::Check(all) = self.bounds.clone() {
            let mut inb = self.lanes_in_bounds(&tv, &idx, &lane_dims, lanes);
            if let (true, [d], Pv::A { base, c: 1 }) = (matches!(dt, DType::I4 | DType::E2M1), &lane_dims[..], &idx[rank - 1]) {
                if *d == rank - 1 {
                    // the unchecked packed-nibble load needs an even row offset and lane base
                    let b64 = self.f.val(format!("sext i32 {base} to i64"));
                    let any = self.f.val(format!("or i64 {off}, {b64}"));
                    let odd = self.f.val(format!("trunc i64 {any} to i1"));
                    let even = self.f.val(format!("xor i1 {odd}, true"));
                    inb = self.f.val(format!("and i1 {inb}, {even}"));
                }
            }
            let all = self.f.val(format!("and i1 {all}, {ok}"));
            self.bounds = Bounds::Check(self.f.val(format!("and i1 {all}, {inb}")));
            return Ok(Pv::U(if rb == "float" { "0.0".into() } else { "0".into() }));
        }
        if lane_dims.is_empty() && mask.as_ref().is_none_or(|m| matches!(m, Pv::U(_))) {
            // One element for every lane.
            let ok = match &mask {
                Some(Pv::U(m)) => {
                    let on = self.f.val(format!("icmp ne i32 {m}, 0"));
                    self.f.val(format!("and i1 {ok}, {on}"))
                }
                _ => ok.clone(),
            };
            if let Pv::U(o) = &other {
                return Ok(Pv::U(self.either(&ok, rb, &mut |l| l.read_elem(&tv, &off), &mut |_| o.clone())));
            }
        }
        // Lane mask: every lane-varying index in range, the uniform ones, the mask, `valid`.
        // Lane-affine indices with step 1 (the common `k0 + arange(BK)`) get their range as a
        // bit mask from scalar arithmetic; others compare a vector of indices.
        let (ti, tb) = (vt("i32", lanes), vt("i1", lanes));
        let mut bits = format!("{}", if lanes >= 64 { u64::MAX } else { (1u64 << lanes) - 1 });
        let mut vmask: Option<String> = None;
        let mut ivec = vec![];
        for &d in &lane_dims {
            if unchecked {
                ivec.push(self.pv_vec(&idx[d], "i32", lanes));
                continue;
            }
            if let Pv::A { base, c: 1 } = &idx[d] {
                let r = self.range_bits(base, &tv.bound32[d], lanes);
                bits = self.f.val(format!("and i64 {bits}, {r}"));
                ivec.push(self.pv_vec(&idx[d], "i32", lanes));
                continue;
            }
            let v = self.pv_vec(&idx[d], "i32", lanes);
            let b = self.f.splat("i32", lanes, &tv.bound32[d]);
            let inb = self.f.val(format!("icmp ult {ti} {v}, {b}"));
            vmask = Some(match vmask {
                None => inb,
                Some(m) => self.f.val(format!("and {tb} {m}, {inb}")),
            });
            ivec.push(v);
        }
        if valid < lanes as usize {
            bits = self.f.val(format!("and i64 {bits}, {}", (1u64 << valid) - 1));
        }
        let bits = self.f.val(format!("select i1 {ok}, i64 {bits}, i64 0"));
        let bits = self.f.val(format!("trunc i64 {bits} to i{lanes}"));
        let mut lm = self.f.val(format!("bitcast i{lanes} {bits} to {tb}"));
        if let Some(m) = vmask {
            lm = self.f.val(format!("and {tb} {lm}, {m}"));
        }
        if let Some(m) = &mask {
            let mv = self.pv_vec(m, "i32", lanes);
            let on = self.f.val(format!("icmp ne {ti} {mv}, zeroinitializer"));
            lm = self.f.val(format!("and {tb} {lm}, {on}"));
        }
        let contiguous = lane_dims == [rank - 1] && matches!(idx[rank - 1], Pv::A { c: 1, .. });
        let x = if contiguous {
            let Pv::A { base, .. } = &idx[rank - 1] else { unreachable!("checked") };
            let b64 = self.f.val(format!("sext i32 {base} to i64"));
            let e0 = self.f.val(format!("add i64 {off}, {b64}"));
            if matches!(dt, DType::I4 | DType::E2M1) {
                if unchecked && !has_mask && valid == lanes as usize && lanes >= 4 {
                    self.nibbles_unchecked(&tv, &off, &b64, lanes)
                } else {
                    self.nibbles_contiguous(&tv, &e0, &lm, lanes)
                }
            } else {
                let (mty, esize) = super::memory::mem_ty(dt);
                let eb = self.f.val(format!("mul i64 {e0}, {esize}"));
                let p = self.f.val(format!("getelementptr i8, ptr {}, i64 {eb}", tv.base));
                if let Some(ahead) = self.prefetch {
                    self.prefetch_stream_at(&p, ahead * esize as i64);
                }
                let mt = vt(mty, lanes);
                let raw =
                    self.f.val(format!("call {mt} @llvm.masked.load.{}.p0(ptr {p}, i32 {esize}, {tb} {lm}, {mt} zeroinitializer)", suffix(mty, lanes)));
                if dt == DType::BF16 && self.arith_only {
                    // Feeding an FMA only: a signaling NaN comes out quieted by the FMA itself,
                    // exactly as quieting it here would (the quiet bit set, payload kept).
                    let w = self.f.val(format!("zext {mt} {raw} to {ti}"));
                    let w = self.f.val(format!("shl {ti} {w}, {}", cst("i32", lanes, "16")));
                    self.f.val(format!("bitcast {ti} {w} to {}", vt("float", lanes)))
                } else {
                    self.mem_to_repr(dt, &raw, lanes)
                }
            }
        } else {
            // Per-lane element offsets, then a gather.
            let tl = vt("i64", lanes);
            let mut e = self.f.splat("i64", lanes, &off);
            for (k, &d) in lane_dims.iter().enumerate() {
                let w = self.f.val(format!("sext {ti} {} to {tl}", ivec[k]));
                let s = self.f.splat("i64", lanes, &tv.strides[d]);
                let t = self.f.val(format!("mul {tl} {w}, {s}"));
                e = self.f.val(format!("add {tl} {e}, {t}"));
            }
            if matches!(dt, DType::I4 | DType::E2M1) {
                self.nibbles_gather(&tv, &e, &lm, lanes)
            } else {
                let (mty, esize) = super::memory::mem_ty(dt);
                let eb = self.f.val(format!("mul {tl} {e}, {}", cst("i64", lanes, &esize.to_string())));
                let p = self.f.val(format!("getelementptr i8, ptr {}, {tl} {eb}", tv.base));
                let mt = vt(mty, lanes);
                let raw = self.f.val(format!(
                    "call {mt} @llvm.masked.gather.{}.v{lanes}p0(<{lanes} x ptr> {p}, i32 {esize}, {tb} {lm}, {mt} zeroinitializer)",
                    suffix(mty, lanes)
                ));
                self.mem_to_repr(dt, &raw, lanes)
            }
        };
        if !has_other && !(contiguous && matches!(dt, DType::I4 | DType::E2M1)) {
            // Masked lanes already read the zero passthru, whose element value is 0 = `other`
            // (the odd-start nibble path merges in a branch, so it keeps the select).
            return Ok(Pv::V(x));
        }
        let o = self.pv_vec(&other, rb, lanes);
        let rt = vt(rb, lanes);
        Ok(Pv::V(self.f.val(format!("select {tb} {lm}, {rt} {x}, {rt} {o}"))))
    }

    /// Whether every lane of a load indexed by `idx` is within the tensor's bounds (i1); the
    /// uniform dims are checked by the caller.
    fn lanes_in_bounds(&mut self, tv: &super::lower::TensorVals, idx: &[Pv], lane_dims: &[usize], lanes: u32) -> String {
        let (ti, tb) = (vt("i32", lanes), vt("i1", lanes));
        let mut all = "true".to_string();
        for &d in lane_dims {
            let inb = if let Pv::A { base, c: 1 } = &idx[d] {
                let r = self.range_bits(base, &tv.bound32[d], lanes);
                let full = if lanes >= 64 { u64::MAX as i64 } else { ((1u64 << lanes) - 1) as i64 };
                self.f.val(format!("icmp eq i64 {r}, {full}"))
            } else {
                let v = self.pv_vec(&idx[d], "i32", lanes);
                let b = self.f.splat("i32", lanes, &tv.bound32[d]);
                let m = self.f.val(format!("icmp ult {ti} {v}, {b}"));
                let m = self.f.val(format!("bitcast {tb} {m} to i{lanes}"));
                self.f.val(format!("icmp eq i{lanes} {m}, -1"))
            };
            all = self.f.val(format!("and i1 {all}, {inb}"));
        }
        all
    }

    /// Packed 4-bit elements `e0 .. e0 + lanes` (`e0 = off + b`: the row's offset and the
    /// lane-affine part), all known to be in bounds and `off`, `b` even (proven by the loop
    /// versioning, [`Lower::versioned`]), as raw codes: the `lanes / 2` bytes from
    /// `off / 2 + b / 2` (a row pointer plus a step offset shared by the rows), no branch and
    /// no shift by the parity.
    fn nibbles_unchecked(&mut self, tv: &super::lower::TensorVals, off: &str, b: &str, lanes: u32) -> String {
        let ti = vt("i32", lanes);
        let half = lanes / 2;
        let nb = 8 * half;
        let ob = self.f.val(format!("lshr exact i64 {off}, 1"));
        let bb = self.f.val(format!("lshr exact i64 {b}, 1"));
        let byte = self.f.val(format!("add i64 {ob}, {bb}"));
        let p = self.f.val(format!("getelementptr i8, ptr {}, i64 {byte}", tv.base));
        let w = self.f.val(format!("load i{nb}, ptr {p}, align 1"));
        if lanes == 16 && self.isa.vbmi {
            // vpmultishiftqb on the broadcast word: lane l's low byte is bits 4l .. 4l + 8.
            let sp = self.f.splat("i64", 8, &w);
            let b = self.f.val(format!("bitcast <8 x i64> {sp} to <64 x i8>"));
            let ctl: Vec<String> = (0..64u32).map(|i| format!("i8 {}", if i % 4 == 0 { 4 * ((i / 4) % 16) } else { 0 })).collect();
            let m = self.f.val(format!("call <64 x i8> @llvm.x86.avx512.pmultishift.qb.512(<64 x i8> <{}>, <64 x i8> {b})", ctl.join(", ")));
            let v = self.f.val(format!("bitcast <64 x i8> {m} to {ti}"));
            let v = self.f.val(format!("and {ti} {v}, {}", cst("i32", lanes, "15")));
            return if tv.dtype == DType::I4 { self.wrap(DType::I4, &v, lanes) } else { v };
        }
        let bt = vt("i8", half);
        let raw = self.f.val(format!("bitcast i{nb} {w} to {bt}"));
        let dup: Vec<String> = (0..lanes).map(|l| format!("i32 {}", l / 2)).collect();
        let d = self.f.val(format!("shufflevector {bt} {raw}, {bt} poison, <{lanes} x i32> <{}>", dup.join(", ")));
        let w = self.f.val(format!("zext {} {d} to {ti}", vt("i8", lanes)));
        let sh: Vec<String> = (0..lanes).map(|l| format!("i32 {}", 4 * (l % 2))).collect();
        let s = self.f.val(format!("lshr {ti} {w}, <{}>", sh.join(", ")));
        let v = self.f.val(format!("and {ti} {s}, {}", cst("i32", lanes, "15")));
        if tv.dtype == DType::I4 {
            self.wrap(DType::I4, &v, lanes)
        } else {
            v
        }
    }

    /// Run `full` (the full chunks of the rows `ixs` of a fused reduction over `x`, rows of
    /// `n`) versioned: when every load is in bounds on the corner chunks of every row (hence
    /// on all of them), the full chunks run unmasked; otherwise (or when the corners do not
    /// bound the tree) masked.
    pub(super) fn rows_versioned(&mut self, x: ValueId, ixs: &[Vec<Ix>], n: usize, lanes: u32, full: &dyn Fn(&mut Self) -> Result<()>) -> Result<()> {
        let chunks = n / lanes as usize;
        let corners = if chunks >= 2 && matches!(self.bounds, Bounds::Masked) { self.corner_chunks(x, n, lanes as usize) } else { None };
        let Some(corners) = corners else { return full(self) };
        let points: Vec<(ValueId, Vec<Ix>)> = ixs
            .iter()
            .flat_map(|ix| corners.iter().map(move |&j0| (x, ix.iter().cloned().chain([Ix::L(j0.to_string())]).collect())))
            .collect();
        self.versioned(&points, lanes, full)
    }

    /// Loop versioning: when every load of the trees evaluated at `points` (value, index) is in
    /// bounds there (the corner chunks, which bound all full chunks), `full` runs with plain
    /// loads ([`Bounds::Unchecked`]), else masked.
    pub(super) fn versioned(&mut self, points: &[(ValueId, Vec<Ix>)], lanes: u32, full: &dyn Fn(&mut Self) -> Result<()>) -> Result<()> {
        self.bounds = Bounds::Check("true".into());
        for (v, ix) in points {
            if let Err(e) = self.pe(*v, ix, lanes, lanes as usize) {
                self.bounds = Bounds::Masked;
                return Err(e);
            }
        }
        let Bounds::Check(all) = std::mem::take(&mut self.bounds) else { unreachable!("set above") };
        let (fast, slow, merge) = (self.f.label(), self.f.label(), self.f.label());
        self.f.condbr(&all, &fast, &slow);
        self.f.block(&fast);
        self.bounds = Bounds::Unchecked;
        let r = full(self);
        self.bounds = Bounds::Masked;
        r?;
        self.f.br(&merge);
        self.f.block(&slow);
        full(self)?;
        self.f.br(&merge);
        self.f.block(&merge);
        Ok(())
    }

    /// Whether `v`'s fused tree indexes every load only linearly in the lane position: index
    /// operands are affine or uniform values (through views), and no `reshape` splits the lane
    /// index. Then a load's bounds hold for a whole run of chunks when they hold for the first
    /// and the last (an affine index takes its extremes at the ends). `lane_dims`: how many
    /// trailing dims of `v` vary with the lane position; an index operand of a load that covers
    /// none of them is the same on every chunk of a row (any value, e.g. a row id from a tile)
    /// and is checked with the row.
    fn linear_tree(&self, v: ValueId, lane_dims: usize) -> bool {
        let Some(op) = self.fused.get(&v) else { return true };
        let rank = self.shape(v).len();
        match &op.kind {
            OpKind::Reshape => false,
            OpKind::Load { tensor, .. } => {
                let trank = self.tensors[*tensor].as_ref().map_or(0, |t| t.shape.len());
                let mut at = 0;
                let index_ok = op.args[..trank].iter().all(|&a| {
                    let r = self.shape(a).len();
                    let row_only = at + r + lane_dims <= rank;
                    at += r;
                    row_only || self.plain_index(a)
                });
                index_ok && op.args[trank..].iter().all(|&a| self.linear_tree(a, lane_dims))
            }
            OpKind::ExpandDims(axis) => {
                let lane_axis = (*axis as usize) + lane_dims >= rank;
                self.linear_tree(op.args[0], lane_dims - lane_axis as usize)
            }
            _ => op.args.iter().all(|&a| self.linear_tree(a, lane_dims.min(self.shape(a).len()))),
        }
    }

    /// The chunk starts whose bounds imply those of every full chunk of a row of the fused
    /// reduction over `x` (`n` long), or `None` when the tree's indices are not linear in them.
    /// Without a `reshape` an index is affine in the lane position: the first and last chunk.
    /// A root `reshape` whose source's trailing dims make up exactly one row splits the lane
    /// position into independent digits, in each of which an index is affine: the corners of
    /// that box of digits (the last digit steps by whole chunks).
    /// The list also holds one step from the start along each digit (the second chunk): an
    /// affine index that is even there and at the start is even on every chunk, which is what
    /// the unchecked packed-nibble loads need.
    pub(super) fn corner_chunks(&self, x: ValueId, n: usize, lanes: usize) -> Option<Vec<usize>> {
        let Some(op) = self.fused.get(&x).filter(|o| o.kind == OpKind::Reshape) else {
            return self.linear_tree(x, 1).then(|| vec![0, lanes.min(n / lanes * lanes - lanes), n / lanes * lanes - lanes]);
        };
        let src = self.shape(op.args[0]);
        let k = Self::trailing_split(&src, &self.shape(x))?;
        if !n.is_multiple_of(lanes) || !self.linear_tree(op.args[0], src.len() - k) {
            return None;
        }
        if !src[src.len() - 1].is_multiple_of(lanes) {
            return None;
        }
        let mut corners = vec![0usize];
        let mut units = vec![];
        let mut stride = 1;
        for (i, &d) in src[k..].iter().enumerate().rev() {
            let (top, step) = if i + k == src.len() - 1 { (d - lanes, lanes) } else { (d - 1, 1) };
            corners = corners.iter().flat_map(|&c| [c, c + top * stride]).collect();
            if top > 0 {
                units.push(step * stride);
            }
            stride *= d;
        }
        corners.extend(units);
        corners.sort_unstable();
        corners.dedup();
        Some(corners)
    }

    /// An index operand that is affine or uniform, possibly through views.
    fn plain_index(&self, a: ValueId) -> bool {
        match self.fused.get(&a) {
            None => matches!(self.repr(a), Repr::Uniform(_) | Repr::Affine { .. }),
            Some(op) if matches!(op.kind, OpKind::ExpandDims(_) | OpKind::Broadcast) => self.plain_index(op.args[0]),
            Some(_) => false,
        }
    }

    /// Lanes `i` with `0 <= base + i < bound` (i32 `base`, unsigned i32 `bound`) as the low
    /// `lanes` bits of an i64, from scalar arithmetic (no vector compare).
    fn range_bits(&mut self, base: &str, bound: &str, lanes: u32) -> String {
        let b = self.f.val(format!("sext i32 {base} to i64"));
        let n = self.f.val(format!("zext i32 {bound} to i64"));
        let clamp = |l: &mut Self, x: &str| -> String {
            let x = l.f.val(format!("call i64 @llvm.smax.i64(i64 {x}, i64 0)"));
            l.f.val(format!("call i64 @llvm.smin.i64(i64 {x}, i64 {lanes})"))
        };
        let hi = self.f.val(format!("sub i64 {n}, {b}"));
        let hi = clamp(self, &hi);
        let lo = self.f.val(format!("sub i64 0, {b}"));
        let lo = clamp(self, &lo);
        let mh = self.f.val(format!("shl i64 1, {hi}"));
        let mh = self.f.val(format!("sub i64 {mh}, 1"));
        let ml = self.f.val(format!("shl i64 1, {lo}"));
        let ml = self.f.val(format!("sub i64 {ml}, 1"));
        let nl = self.f.val(format!("xor i64 {ml}, -1"));
        self.f.val(format!("and i64 {mh}, {nl}"))
    }

    /// Packed 4-bit elements `e0 .. e0 + lanes` under lane mask `lm`, as raw codes (`i4`
    /// sign-extended). An even `e0` reads `lanes / 2` bytes once; an odd one gathers bytes.
    fn nibbles_contiguous(&mut self, tv: &super::lower::TensorVals, e0: &str, lm: &str, lanes: u32) -> String {
        let (ti, tb) = (vt("i32", lanes), vt("i1", lanes));
        let half = lanes / 2;
        let odd = self.f.val(format!("trunc i64 {e0} to i1"));
        let v = self.either(
            &odd,
            &ti,
            &mut |l| {
                let tl = vt("i64", lanes);
                let sp = l.f.splat("i64", lanes, e0);
                let io: Vec<String> = (0..lanes).map(|i| format!("i64 {i}")).collect();
                let e = l.f.val(format!("add {tl} {sp}, <{}>", io.join(", ")));
                l.nibbles_gather(tv, &e, lm, lanes)
            },
            &mut |l| {
                // Byte b is needed when either of its lanes is: the lane bits OR-ed pairwise, then
                // the even bits compressed (scalar bit tricks; shuffles of i1 vectors are slow mask
                // moves).
                let bl = half.max(16);
                let wide = l.f.val(format!("bitcast {tb} {lm} to i{lanes}"));
                let mut x = l.f.val(format!("zext i{lanes} {wide} to i64"));
                let h = l.f.val(format!("lshr i64 {x}, 1"));
                x = l.f.val(format!("or i64 {x}, {h}"));
                for (sh, keep) in [(0u32, 0x5555_5555_5555_5555u64), (1, 0x3333_3333_3333_3333), (2, 0x0f0f_0f0f_0f0f_0f0f), (4, 0x00ff_00ff_00ff_00ff), (8, 0x0000_ffff_0000_ffff), (16, 0x0000_0000_ffff_ffff)] {
                    if sh > 0 {
                        let h = l.f.val(format!("lshr i64 {x}, {sh}"));
                        x = l.f.val(format!("or i64 {x}, {h}"));
                    }
                    x = l.f.val(format!("and i64 {x}, {}", keep as i64));
                }
                let x = l.f.val(format!("trunc i64 {x} to i{bl}"));
                let mb = l.f.val(format!("bitcast i{bl} {x} to <{bl} x i1>"));
                let byte = l.f.val(format!("lshr i64 {e0}, 1"));
                let p = l.f.val(format!("getelementptr i8, ptr {}, i64 {byte}", tv.base));
                let bt = vt("i8", bl);
                let raw = l.f.val(format!("call {bt} @llvm.masked.load.{}.p0(ptr {p}, i32 1, <{bl} x i1> {mb}, {bt} zeroinitializer)", suffix("i8", bl)));
                let dup: Vec<String> = (0..lanes).map(|i| format!("i32 {}", i / 2)).collect();
                let d = l.f.val(format!("shufflevector {bt} {raw}, {bt} poison, <{lanes} x i32> <{}>", dup.join(", ")));
                let w = l.f.val(format!("zext {} {d} to {ti}", vt("i8", lanes)));
                let sh: Vec<String> = (0..lanes).map(|i| format!("i32 {}", 4 * (i % 2))).collect();
                let s = l.f.val(format!("lshr {ti} {w}, <{}>", sh.join(", ")));
                l.f.val(format!("and {ti} {s}, {}", cst("i32", lanes, "15")))
            },
        );
        if tv.dtype == DType::I4 {
            self.wrap(DType::I4, &v, lanes)
        } else {
            v
        }
    }

    /// Packed 4-bit elements at per-lane element offsets `e` (`<lanes x i64>`), masked.
    fn nibbles_gather(&mut self, tv: &super::lower::TensorVals, e: &str, lm: &str, lanes: u32) -> String {
        let (ti, tl) = (vt("i32", lanes), vt("i64", lanes));
        let b = self.f.val(format!("lshr {tl} {e}, {}", cst("i64", lanes, "1")));
        let p = self.f.val(format!("getelementptr i8, ptr {}, {tl} {b}", tv.base));
        let bt = vt("i8", lanes);
        let raw = self.f.val(format!(
            "call {bt} @llvm.masked.gather.{}.v{lanes}p0(<{lanes} x ptr> {p}, i32 1, {} {lm}, {bt} zeroinitializer)",
            suffix("i8", lanes),
            vt("i1", lanes)
        ));
        let w = self.f.val(format!("zext {bt} {raw} to {ti}"));
        let odd = self.f.val(format!("and {tl} {e}, {}", cst("i64", lanes, "1")));
        let odd = self.f.val(format!("trunc {tl} {odd} to {ti}"));
        let sh = self.f.val(format!("shl {ti} {odd}, {}", cst("i32", lanes, "2")));
        let s = self.f.val(format!("lshr {ti} {w}, {sh}"));
        let v = self.f.val(format!("and {ti} {s}, {}", cst("i32", lanes, "15")));
        if tv.dtype == DType::I4 {
            self.wrap(DType::I4, &v, lanes)
        } else {
            v
        }
    }

    /// The identity of a reduction's combine on `lanes` lanes of `d`.
    pub(super) fn reduce_identity(rop: ReduceOp, d: DType) -> &'static str {
        match (rop, ety(d) == "float") {
            (ReduceOp::Sum, true) => "-0.0",
            (_, true) => "nan",
            (ReduceOp::Sum, false) => "0",
            (ReduceOp::Max, false) => "-2147483648",
            _ => "2147483647",
        }
    }

    /// A reduction whose input tree was planned by [`Lower::plan_fusion`].
    pub(super) fn fused_reduce(&mut self, op: &Op, rop: ReduceOp) -> Result<()> {
        let x = op.args[0];
        let (d, shape) = (self.dtype(x), self.shape(x));
        let r = shape.len();
        let oshape = shape[..r - 1].to_vec();
        let orm = row_major(&oshape);
        let Some(&rows) = oshape.last() else {
            let y = self.fused_rows(op, rop, &[], &[], 1)?;
            self.def_uniform(op.result(), y[0].clone());
            return Ok(());
        };
        if rop == ReduceOp::Sum && (self.gemv_reduce(op)? || self.shared_reduce(op)?) {
            self.end_copies();
            return Ok(());
        }
        // Rows in groups of ROWS (independent accumulators, one memory stream each), the rest
        // one at a time.
        let out = self.alloc(oshape.iter().product());
        let groups = rows / ROWS;
        let store = |l: &mut Self, prefix: &[String], row: &str, y: &str| {
            let mut idx = prefix.to_vec();
            idx.push(row.to_string());
            let e = l.linear(&idx, &orm);
            l.store_arena(ety(d), 0, out, &e, y, None);
        };
        self.nest(&oshape[..r - 2], &mut |l, prefix| {
            l.loop_n(groups, &mut |l, g| {
                let first = l.f.val(format!("mul i64 {g}, {ROWS}"));
                let rs: Vec<String> = (0..ROWS).map(|q| l.f.val(format!("add i64 {first}, {q}"))).collect();
                let ys = l.fused_rows(op, rop, prefix, &rs, GROUP_UNROLL)?;
                for (row, y) in rs.iter().zip(&ys) {
                    store(l, prefix, row, y);
                }
                Ok(())
            })?;
            for row in groups * ROWS..rows {
                let row = row.to_string();
                let unroll = if ROWS > 1 && rows < ROWS { UNROLL } else { 1 };
                let ys = l.fused_rows(op, rop, prefix, std::slice::from_ref(&row), unroll)?;
                store(l, prefix, &row, &ys[0]);
            }
            Ok(())
        })?;
        self.end_copies();
        self.set(op.result(), Repr::Buf { off: out, strides: orm });
        Ok(())
    }

    /// Reduce the rows `prefix + [row]` for each of `rows` (all of the input when both are
    /// empty) with `unroll` accumulators per row; returns each row's reduced scalar.
    fn fused_rows(&mut self, op: &Op, rop: ReduceOp, prefix: &[String], rows: &[String], unroll: usize) -> Result<Vec<String>> {
        let x = op.args[0];
        let (d, shape) = (self.dtype(x), self.shape(x));
        let base = ety(d);
        let n = shape[shape.len() - 1];
        let lanes = lanes_for(n);
        let t = vt(base, lanes);
        let ident = match Self::reduce_identity(rop, d) {
            "-0.0" => flit(-0.0),
            "nan" => flit(f32::NAN),
            s => s.to_string(),
        };
        // sum(a * b) over f32, possibly reshaped: one FMA per element.
        let mut root = x;
        let mut reshapes = vec![];
        while let Some(o) = self.fused.get(&root).filter(|o| o.kind == OpKind::Reshape) {
            reshapes.push(o.clone());
            root = o.args[0];
        }
        let fma = match self.fused.get(&root) {
            Some(o) if rop == ReduceOp::Sum && d == DType::F32 && o.kind == OpKind::Binary(opc_ir::BinaryOp::Mul) => Some(o.clone()),
            _ => None,
        };
        let mshape = self.shape(root);
        let chunks = n / lanes as usize;
        let tail = n % lanes as usize;
        let unroll = if chunks >= 2 * unroll { unroll } else { 1 };
        let nrows = rows.len().max(1);
        let ixs: Vec<Vec<Ix>> = (0..nrows)
            .map(|q| {
                let mut ix: Vec<Ix> = prefix.iter().map(|i| Ix::S(i.clone())).collect();
                if let Some(r) = rows.get(q) {
                    ix.push(Ix::S(r.clone()));
                }
                ix
            })
            .collect();
        if let Some(plan) = fma.as_ref().and_then(|m| self.block_plan(m, &mshape, &reshapes, n, lanes)) {
            return self.block_rows(x, &plan, &reshapes, &ixs, n, lanes, false);
        }
        let slots: Vec<String> = (0..nrows * unroll).map(|_| self.f.alloca(&t)).collect();
        for s in &slots {
            self.f.inst(format!("store {t} {}, ptr {s}, align 64", cst(base, lanes, &ident)));
        }
        let step = |l: &mut Self, q: usize, slot: &str, j0: &str, valid: usize| -> Result<()> {
            let mut ix = ixs[q].clone();
            ix.push(Ix::L(j0.to_string()));
            let partial = valid < lanes as usize;
            let keep = |l: &mut Self, v: &str, fill: &str| -> String {
                if partial {
                    l.f.val(format!("select <{lanes} x i1> {}, {t} {v}, {t} {}", lane_mask(lanes, valid), cst(base, lanes, fill)))
                } else {
                    v.to_string()
                }
            };
            let cur = l.f.val(format!("load {t}, ptr {slot}, align 64"));
            let nx = if let Some(m) = &fma {
                let mut ix = ix.clone();
                for r in &reshapes {
                    ix = l.reshape_ix(r, &ix);
                }
                let a = l.pe_fma_operand(m.args[0], &mshape, &ix, lanes, valid)?;
                let b = l.pe_fma_operand(m.args[1], &mshape, &ix, lanes, valid)?;
                let (a, b) = (l.pv_vec(&a, base, lanes), l.pv_vec(&b, base, lanes));
                // lanes past the row contribute 0·0
                let (a, b) = (keep(l, &a, "0.0"), keep(l, &b, "0.0"));
                l.f.val(format!("call {t} @llvm.fma.{}({t} {a}, {t} {b}, {t} {cur})", suffix(base, lanes)))
            } else {
                let v = l.pe(x, &ix, lanes, valid)?;
                let v = l.pv_vec(&v, base, lanes);
                let v = keep(l, &v, &ident);
                l.combine(rop, d, &cur, &v, lanes)
            };
            l.f.inst(format!("store {t} {nx}, ptr {slot}, align 64"));
            Ok(())
        };
        let full = |l: &mut Self| -> Result<()> {
            l.unrolled(chunks, unroll, &mut |l, c, u| {
                let j0 = l.f.val(format!("mul i64 {c}, {lanes}"));
                for q in 0..nrows {
                    step(l, q, &slots[q * unroll + u], &j0, lanes as usize)?;
                }
                Ok(())
            })
        };
        self.rows_versioned(x, &ixs, n, lanes, &full)?;
        if tail > 0 {
            for q in 0..nrows {
                step(self, q, &slots[q * unroll], &(chunks * lanes as usize).to_string(), tail)?;
            }
        }
        let mut ys = vec![];
        for q in 0..nrows {
            let s = self.fold_slots(&slots[q * unroll..(q + 1) * unroll], rop, d, lanes);
            ys.push(self.finish_reduce(d, &s, 0));
        }
        Ok(ys)
    }

    /// `body(l, i, u)` for every `i` in `0..n`, `unroll` copies per loop trip: a counted loop
    /// over the `n / unroll` full groups, copy `u` at `i = g·unroll + u` (an SSA value), then
    /// the remaining indices as constants with `u = 0`.
    pub(super) fn unrolled(&mut self, n: usize, unroll: usize, body: &mut dyn FnMut(&mut Self, &str, usize) -> Result<()>) -> Result<()> {
        let groups = n / unroll;
        self.loop_n(groups, &mut |l, g| {
            for u in 0..unroll {
                let i = l.f.val(format!("mul i64 {g}, {unroll}"));
                let i = l.f.val(format!("add i64 {i}, {u}"));
                body(l, &i, u)?;
            }
            Ok(())
        })?;
        for i in groups * unroll..n {
            body(self, &i.to_string(), 0)?;
        }
        Ok(())
    }

    /// One row's accumulator `slots` (vectors of `lanes`) combined with `rop` in slot order,
    /// then across the lanes ([`Lower::fold_lanes`]): the row's scalar, before `finish_reduce`.
    pub(super) fn fold_slots(&mut self, slots: &[String], rop: ReduceOp, d: DType, lanes: u32) -> String {
        let t = vt(ety(d), lanes);
        let mut acc = self.f.val(format!("load {t}, ptr {}, align 64", slots[0]));
        for s in &slots[1..] {
            let v = self.f.val(format!("load {t}, ptr {s}, align 64"));
            acc = self.combine(rop, d, &acc, &v, lanes);
        }
        self.fold_lanes(rop, d, &acc, lanes)
    }
}
