//! Register fragment layouts of `wgmma.mma_async.m64nNk16` (PTX ISA §9.7.15.5.1.1.1), the pure
//! index math the FA3 lowering (`attn.rs`) relies on, kept apart so it is unit-tested on the CPU.
//!
//! Within one warpgroup, thread `w·32 + lane` (warp `w` of 4), `g = lane / 4`, `t = lane % 4`:
//! - **Accumulator D** (Figure 149, `.f32`: `N/2` registers): register `i` holds row
//!   `16w + g + 8·((i/2) % 2)`, column `8·(i/4) + 2t + i%2`. So a thread holds two rows
//!   (`g`, `g + 8`) and, in each, the same `N/4` columns; the four threads of a quad
//!   (`lane ^ 1`, `lane ^ 2`) hold the rest of those two rows, which is why a row reduction is a
//!   local fold followed by two butterfly shuffles (`shfl.bfly` 1 and 2).
//! - **Multiplicand A from registers** (Figure 148, `.f16`/`.bf16`: four `.b32` registers, two
//!   elements each, low half first): per warp the `mma.m16n8k16` A layout (§9.7.14.5.8):
//!   element `e` (0..8) of register `e / 2` is row `16w + g + 8·((e/2) % 2)`, column
//!   `2t + e%2 + 8·(e / 4)`.
//!
//! Comparing the two: the accumulator registers `8kk .. 8kk + 8` of an `m64nN` result hold, for
//! columns `16kk .. 16kk + 16`, exactly the elements the A fragment of `k16` step `kk` wants, in
//! the same order. So `P` (the softmax of `S`, an accumulator) becomes the A operand of `P·V`
//! without leaving registers: A register `j` of step `kk` packs accumulator registers
//! `8kk + 2j` (low half) and `8kk + 2j + 1` (high half) ([`p_to_a`]).

/// Row of accumulator register `i` of thread `lane` of warp `w` (warpgroup-local; the PTX
/// computes it as `16w + g` plus 8 for half 1, see `attn.rs`).
#[cfg(test)]
pub(super) fn acc_row(w: u32, lane: u32, i: u32) -> u32 {
    16 * w + lane / 4 + 8 * ((i / 2) % 2)
}

/// Column of accumulator register `i` of thread `lane`.
pub(super) fn acc_col(lane: u32, i: u32) -> u32 {
    8 * (i / 4) + 2 * (lane % 4) + i % 2
}

/// Which half-row (0: row `g`, 1: row `g + 8`) accumulator register `i` belongs to.
pub(super) fn acc_half(i: u32) -> u32 {
    (i / 2) % 2
}

/// The accumulator registers (low half, high half) packed into A register `j` (0..4) of `k16`
/// step `kk` (see the module docs).
pub(super) fn p_to_a(kk: u32, j: u32) -> (u32, u32) {
    (8 * kk + 2 * j, 8 * kk + 2 * j + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Figure 148 (via the `mma.m16n8k16` A layout it repeats per warp), written independently of
    /// the accumulator formulas: (row, col inside the k16 slice) of element `e` (0..8) of thread
    /// `lane` of warp `w`.
    fn a_elem(w: u32, lane: u32, e: u32) -> (u32, u32) {
        let (g, t) = (lane / 4, lane % 4);
        let row = if matches!(e, 0 | 1 | 4 | 5) { g } else { g + 8 };
        let col = if e < 4 { 2 * t + (e & 1) } else { 2 * t + (e & 1) + 8 };
        (16 * w + row, col)
    }

    #[test]
    fn accumulator_layout_is_a_bijection() {
        for n in [8u32, 16, 64, 128, 256] {
            let mut seen = vec![false; (64 * n) as usize];
            for w in 0..4 {
                for lane in 0..32 {
                    for i in 0..n / 2 {
                        let (r, c) = (acc_row(w, lane, i), acc_col(lane, i));
                        assert!(r < 64 && c < n);
                        assert!(!std::mem::replace(&mut seen[(r * n + c) as usize], true), "n={n}: ({r}, {c}) twice");
                    }
                }
            }
            assert!(seen.iter().all(|&x| x));
        }
    }

    #[test]
    fn a_row_of_the_accumulator_lives_in_one_quad() {
        // every element of row r is held by the 4 lanes of one quad, in the registers of one
        // half: the local fold over {i : acc_half(i) = h} plus shfl.bfly 1 and 2 sees the row
        for n in [16u32, 64, 128] {
            for w in 0..4 {
                for lane in 0..32 {
                    for h in 0..2 {
                        let row = acc_row(w, lane, 2 * h);
                        let mut cols = vec![];
                        for x in [0, 1, 2, 3] {
                            let l = lane ^ x;
                            for i in (0..n / 2).filter(|&i| acc_half(i) == h) {
                                assert_eq!(acc_row(w, l, i), row);
                                cols.push(acc_col(l, i));
                            }
                        }
                        cols.sort();
                        assert_eq!(cols, (0..n).collect::<Vec<_>>(), "n={n} w={w} lane={lane} h={h}");
                    }
                }
            }
        }
    }

    #[test]
    fn p_repacks_into_the_a_fragment_of_every_k16_step() {
        for n in [16u32, 64, 128, 256] {
            for kk in 0..n / 16 {
                for w in 0..4 {
                    for lane in 0..32 {
                        for j in 0..4 {
                            let (lo, hi) = p_to_a(kk, j);
                            for (e, i) in [(2 * j, lo), (2 * j + 1, hi)] {
                                let (ar, ac) = a_elem(w, lane, e);
                                assert_eq!((acc_row(w, lane, i), acc_col(lane, i)), (ar, 16 * kk + ac), "n={n} kk={kk} lane={lane} a{e}");
                            }
                        }
                    }
                }
            }
        }
    }
}
