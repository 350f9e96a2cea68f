//! Tiling masks: a `where` on tile positions (FlashAttention's causal / window / ragged-end
//! mask) uses a mask tile built once and kept in UB, never one per loop step.
//!
//! A position predicate (`Pred`) depends on the run time only through its leaves: the clamped
//! offset of every comparison (`base + Σ c_d · i_d ∘ 0` gives the same bits for every base
//! beyond the tile's span) and the value of every uniform condition. Those values are the
//! mask's *key*. Each `select` site owns a small cache in UB, `slots` masks of `[R, C]` bits,
//! and an `OpcMaskTags` member holding the key each slot was built for; a tile looks its key
//! up on the scalar unit and only a miss runs the `Duplicate` / `Compare` / `And` chain, into a
//! free slot (round-robin once full). Masks and tags live across level-1 programs, so a kernel
//! builds each distinct mask once per core.
//!
//! **How many slots.** With tile origins at multiples of the tile extents (level-1 rows at
//! `program_id · R`, KV steps at `j0 = k · C`), a diagonal comparison `j - i ∘ d` takes, over
//! all tiles it cuts, offsets in one residue class mod `g = gcd(|c_i|·R, |c_j|·C)` within a
//! window of `Σ |c_d|·(s_d - 1) + 1` values: `ceil(window / g)` distinct masks (one when
//! `R = C` and `SQ - SK` is a multiple of the tile: the causal diagonal tile; two in general
//! for bottom-right alignment). A one-dimensional comparison (the ragged end) adds one mask,
//! its edge tile. The sum (at most [`MAX_SLOTS`]) is the slot count; more distinct keys than
//! slots only cost a rebuild, never a wrong mask.
//!
//! Tiles above the causal diagonal are skipped by the DSL's loop bounds and tiles below it
//! take the unmasked branch, so only diagonal, window-edge and ragged tiles reach the cache.

use super::{Lower, Pred};
use crate::ascendc::lir::{self, BufId, Stmt};
use opc_ir::{CmpPred, DType};

/// Most masks one `select` site keeps (UB bytes: `slots · R · C / 8`).
pub(super) const MAX_SLOTS: usize = 4;

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a.abs()
    } else {
        gcd(b, a % b)
    }
}

/// The clamp of a comparison leaf's bound: the leaf is `x (op) b` with positions
/// `x = Σ c_d · i_d` in `[lo, hi]` and `b = -base`; every `b` below the range returned gives
/// the same mask as its low end, every `b` above it the same as its high end (`x < b` is all
/// false for `b <= lo` and all true for `b > hi`: `[lo, hi + 1]`). Clamping to it keeps every
/// comparison and makes equal masks share a key (the ragged-end leaf of every full KV tile
/// clamps to the same all-true bound).
pub(super) fn leaf_clamp(op: CmpPred, coefs: &[i64], shape: &[usize]) -> (i64, i64) {
    let ext = |f: fn(i64) -> i64| coefs.iter().zip(shape).map(|(c, s)| f(c * (*s as i64 - 1))).sum::<i64>();
    let (lo, hi) = (ext(|v| v.min(0)), ext(|v| v.max(0)));
    match op {
        CmpPred::Lt | CmpPred::Ge => (lo, hi + 1),
        CmpPred::Le | CmpPred::Gt => (lo - 1, hi),
        CmpPred::Eq | CmpPred::Ne => (lo - 1, hi + 1),
    }
}

/// The C++ `int64_t` bound of a comparison leaf, clamped by [`leaf_clamp`].
pub(super) fn leaf_bound(op: CmpPred, base: &str, coefs: &[i64], shape: &[usize]) -> String {
    let (lo, hi) = leaf_clamp(op, coefs, shape);
    format!("OpcClamp(-static_cast<int64_t>({base}), {lo}, {hi})")
}

/// Distinct non-uniform masks a leaf produces over aligned tiles (see the module docs).
fn leaf_variants(coefs: &[i64], shape: &[usize]) -> usize {
    let active: Vec<(i64, i64)> = coefs.iter().zip(shape).filter(|(c, s)| **c != 0 && **s > 1).map(|(c, s)| (c.abs(), *s as i64)).collect();
    match active.len() {
        0 => 0,
        1 => 1,
        _ => {
            let g = active.iter().fold(0, |g, (c, s)| gcd(g, c * s)).max(1);
            let window: i64 = active.iter().map(|(c, s)| c * (s - 1)).sum::<i64>() + 1;
            ((window + g - 1) / g) as usize
        }
    }
}

/// The key expressions (C++ `int64_t`) of a predicate, leaf by leaf, and its mask variants.
fn keys(p: &Pred, shape: &[usize], out: &mut Vec<String>) -> usize {
    match p {
        Pred::Cmp { op, base, coefs } => {
            out.push(format!("static_cast<int64_t>({})", leaf_bound(*op, base, coefs, shape)));
            leaf_variants(coefs, shape)
        }
        Pred::Uniform(e) => {
            out.push(format!("static_cast<int64_t>(({e}) ? 1 : 0)"));
            0
        }
        Pred::And(a, b) | Pred::Or(a, b) => keys(a, shape, out) + keys(b, shape, out),
        Pred::Not(a) => keys(a, shape, out),
    }
}

/// Slots of a cache for `p` over `shape`: one per distinct mask, at most [`MAX_SLOTS`].
pub(super) fn slots(p: &Pred, shape: &[usize]) -> usize {
    keys(p, shape, &mut vec![]).clamp(1, MAX_SLOTS)
}

impl Lower<'_> {
    /// The mask of `p` over `shape` (`cnt` bits) from this site's tiling-mask cache: the
    /// buffer holding the cache and the C++ spelling of this tile's slot.
    pub(super) fn tiling_mask(&mut self, p: &Pred, shape: &[usize], cnt: u64) -> (BufId, String) {
        let mut ks = vec![];
        keys(p, shape, &mut ks);
        let slots = slots(p, shape);
        let bytes = lir::round_up(cnt / 8, 32);
        let id = self.out.mask_tags.len();
        self.out.mask_tags.push((slots, ks.len()));
        let cache = self.alloc_elems(DType::U8, bytes * slots as u64, u32::MAX, format!("tiling-mask cache {id}: {slots} x {shape:?} bits (kept across programs)"));
        self.out.bufs[cache].live.0 = 0;
        let (key, slot) = (self.fresh("maskKey"), self.fresh("maskSlot"));
        let tags = format!("maskTags{id}_");
        self.comment(format!("tiling mask {shape:?}: built once per distinct (clamped offset, condition) key, then reused"));
        self.line(format!("const int64_t {key}[{}] = {{{}}};", ks.len(), ks.join(", ")));
        self.line(format!("int32_t {slot} = {tags}.OpcFind({key});"));
        let name = format!("{}[{slot} * {bytes}]", self.bname(cache));
        self.push();
        self.line(format!("{slot} = {tags}.OpcInsert({key});"));
        self.pred_mask_into(p, shape, cnt, cache, &name);
        let build = self.pop();
        self.push_stmt(Stmt::If { cond: format!("{slot} < 0"), then_: build, else_: vec![] });
        (cache, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causal_diagonal_needs_one_or_two_masks() {
        // j - i over a square tile: offsets step by 64, window 127: two classes in general.
        assert_eq!(leaf_variants(&[-1, 1], &[64, 64]), 2);
        // BM = 16, BN = 64: gcd 16, window 79 → 5 masks.
        assert_eq!(leaf_variants(&[-1, 1], &[16, 64]), 5);
        // the ragged end: one edge mask; a uniform leaf: none.
        assert_eq!(leaf_variants(&[0, 1], &[64, 64]), 1);
        assert_eq!(leaf_variants(&[0, 0], &[64, 64]), 0);
    }

    #[test]
    fn leaf_clamp_is_the_range_of_distinct_masks() {
        // j - i over [32, 64]: positions -31..63.
        assert_eq!(leaf_clamp(CmpPred::Le, &[-1, 1], &[32, 64]), (-32, 63));
        assert_eq!(leaf_clamp(CmpPred::Lt, &[0, 1], &[32, 64]), (0, 64));
        assert_eq!(leaf_clamp(CmpPred::Gt, &[-1, 1], &[32, 64]), (-32, 63));
        assert_eq!(leaf_clamp(CmpPred::Ne, &[0, 2], &[1, 8]), (-1, 15));
        // Brute force: every bound outside the clamp gives the mask of the clamp's end.
        for op in [CmpPred::Lt, CmpPred::Le, CmpPred::Gt, CmpPred::Ge, CmpPred::Eq, CmpPred::Ne] {
            let (coefs, shape) = ([-2i64, 3], [3usize, 4]);
            let (lo, hi) = leaf_clamp(op, &coefs, &shape);
            let mask = |b: i64| -> Vec<bool> {
                let mut m = vec![];
                for i in 0..3i64 {
                    for j in 0..4i64 {
                        let x = coefs[0] * i + coefs[1] * j;
                        m.push(match op {
                            CmpPred::Lt => x < b,
                            CmpPred::Le => x <= b,
                            CmpPred::Gt => x > b,
                            CmpPred::Ge => x >= b,
                            CmpPred::Eq => x == b,
                            CmpPred::Ne => x != b,
                        });
                    }
                }
                m
            };
            for b in -20..20 {
                assert_eq!(mask(b), mask(b.clamp(lo, hi)), "{op:?} b = {b}");
            }
        }
    }
}
