//! Block-scaled fused sums: `sum(reshape(c * s[..., None] * x))` where a factor `s` is constant
//! along the last dim of the product (a block of `L` elements, `L` a multiple of the lanes),
//! the shape of every block-scaled format's dot product (an MXFP4 block's e8m0 scale against
//! its 32 codes).
//!
//! The general fused loop (`fuse.rs`) multiplies by the scale per element: one extra multiply
//! per lane. Here each row keeps a per-block partial sum of the other factors (one FMA per
//! chunk), and folds it into the row's accumulator times the block's factor once per block:
//!     acc += s_b · Σ_{j in block b} c_j · x_j.
//! The factor is evaluated once per block (its load and decode too). Numerics: the products are
//! reassociated, `(c·s)·x` becomes `s·(c·x)`, a rounding-only difference like the reassociated
//! sums of `fuse.rs` (a power-of-two scale, the MXFP4 case, changes only the partial sums'
//! rounding when nothing overflows or underflows).
//!
//! Factors are found through products and through views that keep the last dim, so
//! `w[None, :, :] * x[:, None, :]` (the GEMVs of a few activation rows against one weight tile)
//! splits too. When such a term is broadcast along the output's second-last dim and that dim
//! is small ([`Lower::shared_rows`]), the rows along it run together ([`Lower::shared_reduce`]):
//! each block step evaluates the shared term (the weights' loads, nibble spread, e2m1 decode,
//! scale) once for all of them (`Lower::pe_memo`), and each row adds its FMAs.
//!
//! In the unmasked loop version, an MXFP4 block against bf16 activations is one `vdpbf16ps`
//! (`block_pairs.rs`; four blocks at a time when the activations are read-only), and the first
//! block of each unrolled step prefetches the codes ahead: a lone row along its own codes, a
//! group of rows each its counterpart in the next group.

use opc_ir::{BinaryOp, DType, Op, OpKind, ReduceOp, ValueId};

use super::block_evenodd::EvenOddRows;
use super::fuse::Ix;
use super::lower::{lanes_for, row_major, Lower, Repr};
use super::text::{flit, suffix, vt};
use crate::Result;

/// How a fused `sum(a * b)` splits into per-block work.
pub(super) struct BlockPlan {
    /// Elements per block: the product's last dim.
    len: usize,
    /// Factors constant along a block (multiplied once per block).
    scales: Vec<Factor>,
    /// The other factors (one or two: an FMA per chunk).
    terms: Vec<Factor>,
}

/// A factor of the product: a fused value read through views (`expand_dims` / `broadcast`
/// that keep the last dim, outermost first).
#[derive(Clone)]
pub(super) struct Factor {
    pub(super) v: ValueId,
    pub(super) views: Vec<Op>,
}

/// Blocks per loop step when a row is reduced alone / in a group of rows (independent
/// accumulators).
const SOLO_UNROLL: usize = 4;
const GROUP_UNROLL: usize = 2;
/// The most rows that share a block step (one accumulator each, per unrolled block).
const SHARED_ROWS: usize = 8;
/// Blocks per step of the four-block packed-pairs form (`block_pairs.rs`).
const QUAD: usize = 4;

impl Lower<'_> {
    /// The block split of the fused product `root` (a `Mul` of shape `mshape`, reduced through
    /// `reshapes` as rows of `n` on `lanes` lanes), when it has one (module docs).
    pub(super) fn block_plan(&self, root: &Op, mshape: &[usize], reshapes: &[Op], n: usize, lanes: u32) -> Option<BlockPlan> {
        let len = *mshape.last()?;
        if lanes < 2 || !len.is_multiple_of(lanes as usize) || len < 2 * lanes as usize || !n.is_multiple_of(len) {
            return None;
        }
        // The lane position must map to the product's last dim modulo `len`: no reshape, or
        // one that merges trailing dims into the row.
        match reshapes {
            [] => {}
            [r] => {
                Self::trailing_split(&self.shape(r.args[0]), &self.shape(r.result()))?;
            }
            _ => return None,
        };
        let mut factors = vec![];
        self.mul_factors(root.result(), vec![], &mut factors);
        let (scales, terms): (Vec<Factor>, Vec<Factor>) = factors.into_iter().partition(|f| self.block_const(f.v));
        (!scales.is_empty() && (1..=2).contains(&terms.len())).then_some(BlockPlan { len, scales, terms })
    }

    /// The factors of the fused f32 product tree `v` (read through `views`): through products
    /// and through views that keep the last dim (lanes stay lanes).
    pub(super) fn mul_factors(&self, v: ValueId, views: Vec<Op>, out: &mut Vec<Factor>) {
        let shape = self.shape(v);
        match self.fused.get(&v) {
            Some(op) if op.kind == OpKind::Binary(BinaryOp::Mul) && self.dtype(v) == DType::F32 && op.args.iter().all(|&a| self.shape(a) == shape) => {
                for &a in &op.args {
                    self.mul_factors(a, views.clone(), out);
                }
            }
            Some(op) if self.dtype(v) == DType::F32 && self.keeps_last(op) => {
                let mut views = views;
                views.push(op.clone());
                self.mul_factors(op.args[0], views, out);
            }
            _ => out.push(Factor { v, views }),
        }
    }

    /// Whether `op` is a view whose result's last dim is its source's last dim.
    fn keeps_last(&self, op: &Op) -> bool {
        let (ins, shape) = (self.shape(op.args[0]), self.shape(op.result()));
        match op.kind {
            OpKind::ExpandDims(a) => (a as usize) + 1 < shape.len(),
            OpKind::Broadcast => ins.last() == shape.last() && !ins.is_empty(),
            _ => false,
        }
    }

    /// Whether the fused value `v` is constant along its last dim (a view that broadcasts
    /// along it).
    pub(super) fn block_const(&self, v: ValueId) -> bool {
        let Some(op) = self.fused.get(&v) else { return false };
        let r = self.shape(v).len();
        match op.kind {
            OpKind::ExpandDims(a) => a as usize == r - 1 || self.block_const(op.args[0]),
            OpKind::Broadcast => self.shape(op.args[0]).last() == Some(&1) || self.block_const(op.args[0]),
            _ => false,
        }
    }

    /// The block plan of the fused f32 `sum` over `x` (its `reshape`s from the root down and
    /// the plan), when it has one.
    pub(super) fn block_plan_of(&self, x: ValueId) -> Option<(Vec<Op>, BlockPlan)> {
        if self.dtype(x) != DType::F32 {
            return None;
        }
        let mut root = x;
        let mut reshapes = vec![];
        while let Some(o) = self.fused.get(&root).filter(|o| o.kind == OpKind::Reshape) {
            reshapes.push(o.clone());
            root = o.args[0];
        }
        let m = self.fused.get(&root).filter(|o| o.kind == OpKind::Binary(BinaryOp::Mul))?;
        let shape = self.shape(x);
        let n = *shape.last()?;
        let plan = self.block_plan(m, &self.shape(root), &reshapes, n, lanes_for(n))?;
        Some((reshapes, plan))
    }

    /// The fused `sum` `op` as rows sharing a broadcast term ([`Lower::shared_rows`]), when
    /// it has such rows: for each index of the last output dim, the rows along the dim before
    /// it run together. Returns whether it was lowered so.
    pub(super) fn shared_reduce(&mut self, op: &Op) -> Result<bool> {
        let x = op.args[0];
        let shape = self.shape(x);
        let r = shape.len();
        let oshape = shape[..r - 1].to_vec();
        let Some(m) = self.shared_rows(x, &oshape) else { return Ok(false) };
        let (reshapes, plan) = self.block_plan_of(x).expect("checked by shared_rows");
        let (n, lanes) = (shape[r - 1], lanes_for(shape[r - 1]));
        let orm = row_major(&oshape);
        let out = self.alloc(oshape.iter().product());
        self.nest(&oshape[..r - 3], &mut |l, prefix| {
            l.loop_n(oshape[r - 2], &mut |l, col| {
                let at = |q: usize| -> Vec<String> { prefix.iter().cloned().chain([q.to_string(), col.to_string()]).collect() };
                let ixs: Vec<Vec<Ix>> = (0..m).map(|q| at(q).into_iter().map(Ix::S).collect()).collect();
                let ys = l.block_rows(x, &plan, &reshapes, &ixs, n, lanes, true)?;
                for (q, y) in ys.iter().enumerate() {
                    let e = l.linear(&at(q), &orm);
                    l.store_arena("float", 0, out, &e, y, None);
                }
                Ok(())
            })
        })?;
        self.set(op.result(), Repr::Buf { off: out, strides: orm });
        Ok(true)
    }

    /// The rows sharing work in a block-scaled sum over `x` of output shape `oshape`: the
    /// size of its second-last output dim when a term is broadcast along it (the weights of a
    /// GEMV against several activation rows, `w[None, :, :] * x[:, None, :]`) and it is small
    /// (at most [`SHARED_ROWS`]). The rows along that dim then run together, each block's
    /// shared term evaluated once for all of them (its loads and decode).
    pub(super) fn shared_rows(&self, x: ValueId, oshape: &[usize]) -> Option<usize> {
        let r = oshape.len();
        if r < 2 || oshape[r - 2] < 2 || oshape[r - 2] > SHARED_ROWS {
            return None;
        }
        let (_, plan) = self.block_plan_of(x)?;
        plan.terms.iter().any(|t| t.views.first().is_some_and(|o| self.bcast_along(o, r - 2))).then_some(oshape[r - 2])
    }

    /// Whether every row of `ixs` (scalar index prefixes of a block sum's product) reads the
    /// same values of the factor `f`: it is broadcast along each dim in which the rows differ
    /// (by a view, or by a zero stride of the buffer it is read from).
    fn rows_share(&self, f: &Factor, ixs: &[Vec<Ix>]) -> bool {
        let key = |ix: &Ix| format!("{ix:?}");
        let bcast = |d: usize| match f.views.first() {
            Some(o) => self.bcast_along(o, d),
            None => !self.fused.contains_key(&f.v) && matches!(self.repr(f.v), Repr::Buf { ref strides, .. } if strides.get(d) == Some(&0)),
        };
        (0..ixs[0].len()).filter(|&d| ixs.iter().any(|ix| key(&ix[d]) != key(&ixs[0][d]))).all(bcast)
    }

    /// Whether the view `op` broadcasts along its result's dim `d`.
    pub(super) fn bcast_along(&self, op: &Op, d: usize) -> bool {
        let (ins, shape) = (self.shape(op.args[0]), self.shape(op.result()));
        match op.kind {
            OpKind::ExpandDims(a) => a as usize == d,
            OpKind::Broadcast => {
                let pad = shape.len() - ins.len();
                d < pad || (ins[d - pad] == 1 && shape[d] != 1)
            }
            _ => false,
        }
    }

    /// The index into the factor's value `f.v` read at the product's index `ix`.
    pub(super) fn factor_ix(&self, f: &Factor, ix: &[Ix]) -> Vec<Ix> {
        let mut ix = ix.to_vec();
        for o in &f.views {
            ix = self.view_ix(o, &ix);
        }
        ix
    }

    /// A factor at `ix` (the product's index), as a vector.
    pub(super) fn factor_at(&mut self, f: &Factor, ix: &[Ix], lanes: u32, fma: bool) -> Result<String> {
        let ix = self.factor_ix(f, ix);
        let sh = self.shape(f.v);
        let p = if fma { self.pe_fma_operand(f.v, &sh, &ix, lanes, lanes as usize)? } else { self.pe(f.v, &ix, lanes, lanes as usize)? };
        Ok(self.pv_vec(&p, "float", lanes))
    }

    /// The rows `ixs` (scalar index prefixes) of a fused block-scaled sum over rows of `n`
    /// elements: each row's sum (lanes folded by `fold_lanes`) as a scalar. With `memo`, each block
    /// step evaluates a value at an index once for all the rows (the rows of
    /// [`Lower::shared_rows`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn block_rows(&mut self, x: ValueId, plan: &BlockPlan, reshapes: &[Op], ixs: &[Vec<Ix>], n: usize, lanes: u32, memo: bool) -> Result<Vec<String>> {
        let t = vt("float", lanes);
        let zero = super::text::cst("float", lanes, &flit(-0.0));
        let blocks = n / plan.len;
        let per = plan.len / lanes as usize;
        let tvs: Vec<ValueId> = plan.terms.iter().map(|f| f.v).collect();
        let pairs = self.pairs_terms(plan.len, lanes, &tvs);
        let codes = plan.terms.iter().position(|f| self.cast_of_load(f.v, DType::E2M1).is_some());
        // f32 activations: the even/odd form (`block_evenodd.rs`), one activation copy per
        // distinct activation row. bf16 activations from a read-only tensor: the four-block
        // packed pairs (`block_pairs.rs`), blocks taken four at a time (unrolled steps of four
        // blocks, slot `u` holding blocks `u` to `u + 3`), one copy per distinct row too.
        let evenodd = if pairs.is_none() { self.evenodd_terms(plan.len, lanes, &tvs) } else { None };
        let quad = match pairs {
            Some(_) if blocks.is_multiple_of(QUAD) && plan.scales.len() == 1 => self.pairs_quad_terms(plan.len, lanes, &tvs),
            _ => None,
        };
        let unroll = match ixs.len() {
            _ if quad.is_some() => QUAD,
            1 => SOLO_UNROLL,
            2..=4 => GROUP_UNROLL,
            _ => 1,
        };
        let unroll = if blocks >= 2 * unroll || quad.is_some() { unroll } else { 1 };
        let slots: Vec<String> = (0..ixs.len() * unroll).map(|_| self.f.alloca(&t)).collect();
        for s in &slots {
            self.f.inst(format!("store {t} {zero}, ptr {s}, align 64"));
        }
        let fma = |l: &mut Self, a: &str, b: &str, c: &str| l.f.val(format!("call {t} @llvm.fma.{}({t} {a}, {t} {b}, {t} {c})", suffix("float", lanes)));
        let copies = match evenodd.or(quad) {
            Some((_, a)) => {
                let same = self.rows_share(&plan.terms[a], ixs);
                self.evenodd_copies(ixs.len(), same, n)
            }
            None => vec![],
        };
        let copy_of: EvenOddRows = Default::default();
        // Whether all rows read the same codes / scales (those are then decoded once per step
        // for all of them; the scales in the four-block form).
        let shared = (
            memo && pairs.or(evenodd).is_some_and(|(c, _)| self.rows_share(&plan.terms[c], ixs)),
            memo && quad.is_some() && self.rows_share(&plan.scales[0], ixs),
        );
        // Per row: whether the last step's first block took its four blocks in the four-block
        // form (an index not of the plain form leaves them to the one-block forms).
        let quad_done = std::cell::RefCell::new(vec![false; ixs.len()]);
        // The codes' prefetch distance of a group of rows with their own codes (set by the
        // unmasked loop version; `None`: the fixed distance).
        let ahead: std::cell::RefCell<Option<String>> = Default::default();
        // Row `q`'s index at lane position `j0` (an i64 operand), through the reshapes.
        let row_at = |l: &mut Self, q: usize, j0: String| -> Vec<Ix> {
            let mut ix = ixs[q].clone();
            ix.push(Ix::L(j0));
            for r in reshapes {
                ix = l.reshape_ix(r, &ix);
            }
            ix
        };
        // Blocks `b` to `b + 3` of row `q` in the four-block form (`first`: block `b`'s index):
        // the partial sums and the four blocks' scales (lanes `4q..4q + 3` block `b + q`'s);
        // `None` when an index is not of the plain form.
        let quad_step = |l: &mut Self, q: usize, c: usize, copy: &str, b: &str, first: &[Ix]| -> Result<Option<(String, String)>> {
            let (at0, at1) = (row_at(l, q, "0".to_string()), row_at(l, q, plan.len.to_string()));
            let (i0, i1) = (l.factor_ix(&plan.terms[c], &at0), l.factor_ix(&plan.terms[c], &at1));
            let Some(step) = l.codes_block_step(plan.terms[c].v, &i0, &i1)? else { return Ok(None) };
            let ic = l.factor_ix(&plan.terms[c], first);
            let Some(part) = l.pairs_quad_block(plan.terms[c].v, &ic, &step, copy, b, shared.0)? else { return Ok(None) };
            let scale_at = |l: &mut Self, k: usize| {
                let j = l.f.val(format!("add i64 {b}, {k}"));
                let j = l.f.val(format!("mul i64 {j}, {}", plan.len));
                row_at(l, q, j)
            };
            let second = scale_at(l, 1);
            if let Some(s) = l.quad_scales(&plan.scales[0], (first, &second), b, shared.1)? {
                return Ok(Some((part, s)));
            }
            let mut ss = vec![l.factor_at(&plan.scales[0], first, lanes, false)?];
            for k in 1..QUAD {
                let ix = scale_at(l, k);
                ss.push(l.factor_at(&plan.scales[0], &ix, lanes, false)?);
            }
            // Each scale is splat: lane `i` takes scale `i / 4`.
            let pick = |l: &mut Self, a: &str, b: &str, split: usize| {
                let idx: Vec<String> = (0..16).map(|i| format!("i32 {}", if i < split { i } else { 16 + i })).collect();
                l.f.val(format!("shufflevector {t} {a}, {t} {b}, <16 x i32> <{}>", idx.join(", ")))
            };
            let s01 = pick(l, &ss[0], &ss[1], 4);
            let s23 = pick(l, &ss[2], &ss[3], 12);
            let s = pick(l, &s01, &s23, 8);
            Ok(Some((part, s)))
        };
        // Block `b` of row `q` into `slot` (`u`: its place in the unrolled step; the first
        // block of a step prefetches the codes, one 64-byte line per 4 blocks).
        let block = |l: &mut Self, q: usize, slot: &str, b: &str, u: usize| -> Result<()> {
            let at = |l: &mut Self, c: usize| -> Vec<Ix> {
                let j0 = l.f.val(format!("mul i64 {b}, {}", plan.len));
                let j0 = l.f.val(format!("add i64 {j0}, {}", c * lanes as usize));
                row_at(l, q, j0)
            };
            let first = at(l, 0);
            if let (true, Some(c)) = (u == 0 && l.unchecked() && (q == 0 || !memo), codes) {
                let ix = l.factor_ix(&plan.terms[c], &first);
                let ahead = ahead.borrow().clone().unwrap_or_else(|| super::block_pairs::prefetch_ahead().to_string());
                l.prefetch_codes(plan.terms[c].v, &ix, &ahead)?;
            }
            // The packed-pairs form (`block_pairs.rs`) when it applies, else a chunk at a time.
            let mut packed = None;
            let copy = copy_of.borrow().get(q).cloned().flatten();
            if let (true, Some((c, _)), Some(copy)) = (l.unchecked(), quad, copy.as_ref()) {
                if !u.is_multiple_of(QUAD) && quad_done.borrow()[q] {
                    return Ok(()); // the step's first block took this one
                }
                if u.is_multiple_of(QUAD) {
                    let part = quad_step(l, q, c, copy, b, &first)?;
                    quad_done.borrow_mut()[q] = part.is_some();
                    if let Some(nx) = part {
                        let cur = l.f.val(format!("load {t}, ptr {slot}, align 64"));
                        let nx = fma(l, &nx.0, &nx.1, &cur);
                        l.f.inst(format!("store {t} {nx}, ptr {slot}, align 64"));
                        return Ok(());
                    }
                }
            }
            if let (true, Some((c, a))) = (l.unchecked(), pairs) {
                let (ic, ia) = (l.factor_ix(&plan.terms[c], &first), l.factor_ix(&plan.terms[a], &first));
                packed = l.pairs_block(plan.terms[c].v, plan.terms[a].v, (&ic, &ia), b, shared.0)?;
            } else if let (true, Some((c, _)), Some(copy)) = (l.unchecked(), evenodd, copy) {
                let ic = l.factor_ix(&plan.terms[c], &first);
                packed = l.evenodd_block(plan.terms[c].v, &ic, &copy, b, shared.0)?;
            }
            let chunks = if packed.is_some() { 0 } else { per };
            let mut part = packed.unwrap_or_else(|| zero.clone());
            for c in 0..chunks {
                let ix = at(l, c);
                let mut vs = vec![];
                for f in &plan.terms {
                    vs.push(l.factor_at(f, &ix, lanes, true)?);
                }
                let one = flit(1.0);
                let b = vs.get(1).cloned().unwrap_or_else(|| super::text::cst("float", lanes, &one));
                part = fma(l, &vs[0], &b, &part);
            }
            let mut s: Option<String> = None;
            for f in &plan.scales {
                let p = l.factor_at(f, &first, lanes, false)?;
                s = Some(match s {
                    None => p,
                    Some(s) => l.f.val(format!("fmul {t} {s}, {p}")),
                });
            }
            let s = s.expect("a block plan has a scale");
            let cur = l.f.val(format!("load {t}, ptr {slot}, align 64"));
            let nx = fma(l, &part, &s, &cur);
            l.f.inst(format!("store {t} {nx}, ptr {slot}, align 64"));
            Ok(())
        };
        // Block `b` of every row, into the rows' `u`-th slots.
        let all_rows = |l: &mut Self, u: usize, b: &str| -> Result<()> {
            if memo {
                l.pe_memo = Some(Default::default());
            }
            for q in 0..ixs.len() {
                block(l, q, &slots[q * unroll + u], b, u)?;
            }
            l.pe_memo = None;
            Ok(())
        };
        // Only the unmasked version is unrolled: the masked one runs for edge rows alone, and an
        // unrolled copy of it roughly doubled the kernel's LLVM compile time (its blocks all go
        // to slot 0; the other slots stay -0.0, which leaves the folded sums' values alone).
        let full = |l: &mut Self| -> Result<()> {
            let unroll = if l.unchecked() { unroll } else { 1 };
            if let (true, false, Some(c)) = (l.unchecked() && ixs.len() >= 2, memo, codes) {
                let row_ix = |l: &mut Self, q: usize| {
                    let ix = row_at(l, q, "0".to_string());
                    l.factor_ix(&plan.terms[c], &ix)
                };
                let (i0, il) = (row_ix(l, 0), row_ix(l, ixs.len() - 1));
                *ahead.borrow_mut() = l.group_prefetch_ahead(plan.terms[c].v, &i0, &il, ixs.len())?;
            }
            if let (true, Some((_, a))) = (l.unchecked(), evenodd.or(quad)) {
                let mut made: Vec<Option<String>> = vec![];
                for (q, c) in copies.iter().enumerate() {
                    let at = |l: &mut Self, j: &str| {
                        let ix = row_at(l, q, j.to_string());
                        l.factor_ix(&plan.terms[a], &ix)
                    };
                    made.push(match quad {
                        Some(_) => l.pairs_copy(plan.terms[a].v, &at, blocks, c)?,
                        None => l.evenodd_copy(plan.terms[a].v, &at, blocks, c)?,
                    });
                }
                *copy_of.borrow_mut() = (0..ixs.len()).map(|q| made[q.min(made.len() - 1)].clone()).collect();
            }
            let r = l.unrolled(blocks, unroll, &mut |l, b, u| all_rows(l, u, b));
            copy_of.borrow_mut().clear();
            r
        };
        self.rows_versioned(x, ixs, n, lanes, &full)?;
        Ok((0..ixs.len()).map(|q| self.fold_slots(&slots[q * unroll..(q + 1) * unroll], ReduceOp::Sum, DType::F32, lanes)).collect())
    }
}
