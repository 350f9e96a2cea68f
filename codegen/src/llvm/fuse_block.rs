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

use opc_ir::{BinaryOp, DType, Op, OpKind, ValueId};

use super::fuse::Ix;
use super::lower::Lower;
use super::text::{flit, suffix, vt};
use crate::Result;

/// How a fused `sum(a * b)` splits into per-block work.
pub(super) struct BlockPlan {
    /// Elements per block: the product's last dim.
    len: usize,
    /// Factors constant along a block (multiplied once per block).
    scales: Vec<ValueId>,
    /// The other factors (one or two: an FMA per chunk).
    terms: Vec<ValueId>,
}

/// Blocks per loop step when a row is reduced alone / in a group of rows (independent
/// accumulators).
const SOLO_UNROLL: usize = 4;
const GROUP_UNROLL: usize = 2;

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
        self.mul_factors(root.result(), mshape, &mut factors);
        let (scales, terms): (Vec<ValueId>, Vec<ValueId>) = factors.into_iter().partition(|&v| self.block_const(v));
        (!scales.is_empty() && (1..=2).contains(&terms.len())).then_some(BlockPlan { len, scales, terms })
    }

    /// The factors of a fused f32 product tree whose nodes all have shape `mshape`.
    fn mul_factors(&self, v: ValueId, mshape: &[usize], out: &mut Vec<ValueId>) {
        match self.fused.get(&v) {
            Some(op) if op.kind == OpKind::Binary(BinaryOp::Mul) && self.dtype(v) == DType::F32 && op.args.iter().all(|&a| self.shape(a) == mshape) => {
                for &a in &op.args {
                    self.mul_factors(a, mshape, out);
                }
            }
            _ => out.push(v),
        }
    }

    /// Whether the fused value `v` is constant along its last dim (a view that broadcasts
    /// along it).
    fn block_const(&self, v: ValueId) -> bool {
        let Some(op) = self.fused.get(&v) else { return false };
        let r = self.shape(v).len();
        match op.kind {
            OpKind::ExpandDims(a) => a as usize == r - 1 || self.block_const(op.args[0]),
            OpKind::Broadcast => self.shape(op.args[0]).last() == Some(&1) || self.block_const(op.args[0]),
            _ => false,
        }
    }

    /// The rows `ixs` (scalar index prefixes) of a fused block-scaled sum over rows of `n`
    /// elements: each row's sum (lanes reduced in order) as a scalar.
    pub(super) fn block_rows(&mut self, x: ValueId, plan: &BlockPlan, reshapes: &[Op], ixs: &[Vec<Ix>], n: usize, lanes: u32) -> Result<Vec<String>> {
        let t = vt("float", lanes);
        let zero = super::text::cst("float", lanes, &flit(-0.0));
        let blocks = n / plan.len;
        let per = plan.len / lanes as usize;
        let unroll = if ixs.len() == 1 { SOLO_UNROLL } else { GROUP_UNROLL };
        let unroll = if blocks >= 2 * unroll { unroll } else { 1 };
        let slots: Vec<String> = (0..ixs.len() * unroll).map(|_| self.f.alloca(&t)).collect();
        for s in &slots {
            self.f.inst(format!("store {t} {zero}, ptr {s}, align 64"));
        }
        let fma = |l: &mut Self, a: &str, b: &str, c: &str| l.f.val(format!("call {t} @llvm.fma.{}({t} {a}, {t} {b}, {t} {c})", suffix("float", lanes)));
        // Block `b` of row `q` into `slot`.
        let block = |l: &mut Self, q: usize, slot: &str, b: &str| -> Result<()> {
            let at = |l: &mut Self, c: usize| -> Vec<Ix> {
                let j0 = l.f.val(format!("mul i64 {b}, {}", plan.len));
                let j0 = l.f.val(format!("add i64 {j0}, {}", c * lanes as usize));
                let mut ix = ixs[q].clone();
                ix.push(Ix::L(j0));
                for r in reshapes {
                    ix = l.reshape_ix(r, &ix);
                }
                ix
            };
            let mut part = zero.clone();
            let mut first = vec![];
            for c in 0..per {
                let ix = at(l, c);
                let mut vs = vec![];
                for &v in &plan.terms {
                    let sh = l.shape(v);
                    let p = l.pe_fma_operand(v, &sh, &ix, lanes, lanes as usize)?;
                    vs.push(l.pv_vec(&p, "float", lanes));
                }
                let one = flit(1.0);
                let b = vs.get(1).cloned().unwrap_or_else(|| super::text::cst("float", lanes, &one));
                part = fma(l, &vs[0], &b, &part);
                if c == 0 {
                    first = ix;
                }
            }
            let mut s: Option<String> = None;
            for &v in &plan.scales {
                let p = l.pe(v, &first, lanes, lanes as usize)?;
                let p = l.pv_vec(&p, "float", lanes);
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
        let steps = blocks / unroll;
        let full = |l: &mut Self| -> Result<()> {
            l.loop_n(steps, &mut |l, g| {
                for u in 0..unroll {
                    let b = l.f.val(format!("mul i64 {g}, {unroll}"));
                    let b = l.f.val(format!("add i64 {b}, {u}"));
                    for q in 0..ixs.len() {
                        block(l, q, &slots[q * unroll + u], &b)?;
                    }
                }
                Ok(())
            })?;
            for b in steps * unroll..blocks {
                for q in 0..ixs.len() {
                    block(l, q, &slots[q * unroll], &b.to_string())?;
                }
            }
            Ok(())
        };
        self.rows_versioned(x, ixs, n, lanes, &full)?;
        let mut ys = vec![];
        for q in 0..ixs.len() {
            let mut acc = self.f.val(format!("load {t}, ptr {}, align 64", slots[q * unroll]));
            for s in &slots[q * unroll + 1..(q + 1) * unroll] {
                let v = self.f.val(format!("load {t}, ptr {s}, align 64"));
                acc = self.f.val(format!("fadd {t} {acc}, {v}"));
            }
            let mut s = self.f.val(format!("extractelement {t} {acc}, i64 0"));
            for lane in 1..lanes {
                let e = self.f.val(format!("extractelement {t} {acc}, i64 {lane}"));
                s = self.f.val(format!("fadd float {s}, {e}"));
            }
            ys.push(s);
        }
        Ok(ys)
    }
}
