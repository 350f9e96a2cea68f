//! Loop nests: static trip counts, merged dims, vector chunks.
//!
//! A generator implements [`LoopEmit`] (one counted loop with an i64 index of its own value
//! type) and gets the nest walker [`nest`] over it. Elementwise loop nests first merge their
//! dims ([`merge_dims`]): size-1 dims are dropped and a dim is fused with the next one when
//! every operand is contiguous across the pair, so a row-major copy of `[8, 16]` is one loop
//! of 128. The innermost dim then runs in chunks of the target's vector lanes ([`Chunks`]).

use crate::Result;

/// A code generator's counted loop.
pub(crate) trait LoopEmit: Sized {
    /// An i64 loop index as the generator holds it.
    type Idx: Clone;

    /// `for i in 0..n` with a static trip count `n` (no loop at all for 0 or 1 iterations).
    fn counted(&mut self, n: usize, body: &mut dyn FnMut(&mut Self, Self::Idx) -> Result<()>) -> Result<()>;
}

/// A loop nest over `shape` (outermost first); `f` gets the indices of every dim.
pub(crate) fn nest<E: LoopEmit>(e: &mut E, shape: &[usize], f: &mut dyn FnMut(&mut E, &[E::Idx]) -> Result<()>) -> Result<()> {
    walk(e, shape, &mut vec![], (), &mut |_, _, s| s, &mut |e, idx, _| f(e, idx))
}

/// A loop nest over `shape` threading a state `S` down the nest: `bound(e, idx, s)` runs as
/// soon as the indices `idx` of the outer dims are known (before the loop of dim `idx.len()`,
/// last with every index) and returns the state for the loops inside, which `f` gets in the
/// innermost body. Per-prefix work, such as the bounds check of an index tile whose dims are
/// all bound, is then emitted once per prefix, outside the inner loops.
#[allow(clippy::type_complexity)]
pub(crate) fn walk<E: LoopEmit, S: Clone>(
    e: &mut E,
    shape: &[usize],
    idx: &mut Vec<E::Idx>,
    state: S,
    bound: &mut dyn FnMut(&mut E, &[E::Idx], S) -> S,
    f: &mut dyn FnMut(&mut E, &[E::Idx], S) -> Result<()>,
) -> Result<()> {
    let state = bound(e, idx, state);
    if idx.len() == shape.len() {
        return f(e, idx, state);
    }
    e.counted(shape[idx.len()], &mut |e, i| {
        idx.push(i);
        let r = walk(e, shape, idx, state.clone(), bound, f);
        idx.pop();
        r
    })
}

/// An elementwise loop nest after dim merging: the merged shape (never empty) and each
/// operand's strides over it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Merged {
    pub shape: Vec<usize>,
    pub strides: Vec<Vec<i64>>,
}

/// Merge the dims of a loop nest over `shape` whose operands have `strides` (one list per
/// operand, all zero for a hoisted value): drop size-1 dims, then fuse dim `d` with `d+1`
/// when `stride[d] == stride[d+1] * shape[d+1]` for every operand.
pub(crate) fn merge_dims(shape: &[usize], strides: &[Vec<i64>]) -> Merged {
    let keep: Vec<usize> = (0..shape.len()).filter(|&d| shape[d] != 1).collect();
    let mut sh: Vec<usize> = keep.iter().map(|&d| shape[d]).collect();
    let mut st: Vec<Vec<i64>> = strides.iter().map(|s| keep.iter().map(|&d| s[d]).collect()).collect();
    let mut d = sh.len();
    while d >= 2 {
        d -= 1;
        if st.iter().all(|s| s[d - 1] == s[d] * sh[d] as i64) {
            sh[d - 1] *= sh[d];
            sh.remove(d);
            for s in st.iter_mut() {
                s.remove(d - 1);
            }
        }
    }
    if sh.is_empty() {
        sh.push(1);
        st.iter_mut().for_each(|s| s.push(0));
    }
    Merged { shape: sh, strides: st }
}

/// How a row of `inner` elements runs in vectors of `lanes`: `full` whole chunks, then a
/// `tail` of fewer elements (a scalar loop or one masked chunk, as the target prefers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunks {
    pub lanes: u32,
    pub full: usize,
    pub tail: usize,
}

impl Chunks {
    pub(crate) fn new(inner: usize, lanes: u32) -> Self {
        Chunks { lanes, full: inner / lanes as usize, tail: inner % lanes as usize }
    }
}

/// Lanes for a row of `n` elements on a target whose vectors hold `max` lanes: `max`, or the
/// next power of two (at least 2) for shorter rows, which then run as one masked chunk.
pub(crate) fn lanes_for(n: usize, max: u32) -> u32 {
    if n >= max as usize {
        max
    } else {
        (n.max(2) as u32).next_power_of_two()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_dims_merge() {
        // A row-major copy of [8, 1, 16] is one loop; a transposed operand keeps both dims.
        let m = merge_dims(&[8, 1, 16], &[vec![16, 16, 1], vec![16, 0, 1]]);
        assert_eq!(m, Merged { shape: vec![128], strides: vec![vec![1], vec![1]] });
        let m = merge_dims(&[8, 16], &[vec![16, 1], vec![1, 8]]);
        assert_eq!(m.shape, vec![8, 16]);
        let m = merge_dims(&[1, 1], &[vec![0, 0]]);
        assert_eq!(m, Merged { shape: vec![1], strides: vec![vec![0]] });
    }

    #[test]
    fn chunking() {
        assert_eq!(Chunks::new(37, 16), Chunks { lanes: 16, full: 2, tail: 5 });
        assert_eq!(lanes_for(100, 16), 16);
        assert_eq!(lanes_for(5, 16), 8);
        assert_eq!(lanes_for(1, 16), 2);
    }
}
