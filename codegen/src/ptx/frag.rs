//! Register fragment layouts the tensor-core lowerings rely on, as pure index math kept apart so
//! it is unit-tested on the CPU: `wgmma.mma_async.m64nNk16` (FA3, `attn.rs`) and the integer
//! `mma.sync` shapes (`dot.rs`, see [`IntMma`] below).
//!
//! ## `wgmma` (PTX ISA §9.7.15.5.1.1.1)
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

/// An integer `mma.sync` shape: `m16n8k32` for 8-bit operands (`.s8` / `.u8`, four per `.b32`
/// register), `m16n8k64` for 4-bit ones (`.s4`, eight per register), both with `.s32`
/// accumulators (PTX ISA §9.7.14.5.7 and §9.7.14.5.9, "Matrix Fragments for mma.m16n8k32 /
/// mma.m16n8k64").
///
/// **Why `ldmatrix` applies.** Both shapes read 32 bytes of K per row per instruction, and in
/// both the ISA's A fragment gives register `r` of lane `(g, t)` (`g = lane / 4`, `t = lane % 4`)
/// the 4 bytes at row `g + 8·(r % 2)`, bytes `4t .. 4t + 4` of the K half `r / 2` (elements low
/// to high = bytes low to high, nibbles low to high), and register `r` of B the 4 bytes of
/// column `n = g`, K bytes `16r + 4t ..`. That is byte for byte the `m16n8k16` `.f16` geometry,
/// so with the operands stored K-contiguous (A as `[M][K]`, B as `[N][K]`, 4-bit codes packed
/// two per byte, element `2j` in the low nibble: the interpreter's memory layout) the same
/// `ldmatrix.x4` / `.x2` (b16, never `.trans`, which would swap bytes across rows) feeds them.
/// Tested below against the ISA tables through a model of `ldmatrix`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct IntMma {
    /// Bits per element: 8 or 4.
    pub bits: u32,
}

impl IntMma {
    /// Bytes of K one instruction consumes per row (32 for both shapes).
    pub const KBYTES: u32 = 32;

    /// Elements of K per instruction: 32 (8-bit) or 64 (4-bit).
    pub fn k(self) -> u32 {
        Self::KBYTES * 8 / self.bits
    }

    /// The byte and bit shift of element `col` of a K-contiguous packed row.
    pub fn elem_byte(self, col: u32) -> (u32, u32) {
        let per = 8 / self.bits;
        (col / per, self.bits * (col % per))
    }

    /// Packed bytes of a row of `k` elements, padded with zeros to whole instructions.
    pub fn row_bytes(self, k: u32) -> u32 {
        k.div_ceil(self.k()) * Self::KBYTES
    }

    /// Row pitch (bytes) of the packed buffer: [`Self::row_bytes`] (a multiple of 32) plus 16,
    /// an odd number of 16-byte chunks, so the 8 row addresses of one `ldmatrix` phase hit 8
    /// different 16-byte bank groups (tested below; with a pitch of 32 or 64 bytes they would
    /// collide 2- or 4-way).
    pub fn pitch(self, k: u32) -> u32 {
        self.row_bytes(k) + 16
    }
}

/// Elements of `bits` bits in one 16-byte `cp.async` chunk (`chunk.rs`): 8, 16 or 32.
pub(super) fn chunk_elems(bits: u32) -> u32 {
    128 / bits
}

/// A K tile of `k` integer elements as the pipelined mainloop (`gemm.rs`) stages it: each row
/// is `IntMma::row_bytes(k)` bytes (whole instructions), of which the first `k·bits/8` come
/// from global memory in whole 16-byte chunks and the rest are zeros written once. Returns
/// (chunks copied per row, stored row width in b16 units, which is what the swizzled layout of
/// `swizzle.rs` and the `ldmatrix` addressing count in); `None` when `k` is not a whole
/// number of chunks.
pub(super) fn int_stage_row(mma: IntMma, k: u32) -> Option<(u32, u32)> {
    (k * mma.bits).is_multiple_of(128).then(|| (k * mma.bits / 128, mma.row_bytes(k) / 2))
}

/// The (row, byte) inside one 16-row × 32-byte A step that lane `lane` addresses for
/// `ldmatrix.x4`: matrix `lane / 8` is rows `8·(q % 2)`, bytes `16·(q / 2)` (so the four
/// registers come back in the ISA's order a0..a3). `lower_mma` (`dot.rs`) computes this in PTX.
#[cfg(test)]
pub(super) fn ldsm_a_lane(lane: u32) -> (u32, u32) {
    (lane % 16, 16 * (lane / 16))
}

/// The (row n, byte) inside one 8-row × 32-byte B step that lane `lane` (0..16) addresses for
/// `ldmatrix.x2`: matrix `lane / 8` is the K half (computed in PTX by `lower_mma`).
#[cfg(test)]
pub(super) fn ldsm_b_lane(lane: u32) -> (u32, u32) {
    (lane % 8, 16 * ((lane / 8) % 2))
}

/// Row and column of accumulator register `i` (0..4) of lane `lane` of an `m16n8` result, for
/// the `.f32` and the `.s32` shapes alike (the lowering stores `{c0, c1}` at row `g`, columns
/// `2t, 2t + 1`, and `{c2, c3}` at row `g + 8`).
#[cfg(test)]
pub(super) fn mma_acc(lane: u32, i: u32) -> (u32, u32) {
    (lane / 4 + 8 * (i / 2), 2 * (lane % 4) + i % 2)
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

    // ---- integer mma.sync ----------------------------------------------------------------

    /// The ISA's A table (§9.7.14.5, m16n8k32 `.s8` and m16n8k64 `.s4`), written from the text,
    /// not from [`IntMma`]: (row, col) of element `i` of lane `lane`.
    fn isa_int_a(bits: u32, lane: u32, i: u32) -> (u32, u32) {
        let (g, t) = (lane >> 2, lane % 4);
        if bits == 8 {
            let row = if i < 4 || (8..12).contains(&i) { g } else { g + 8 };
            let col = if i < 8 { t * 4 + (i & 3) } else { t * 4 + (i & 3) + 16 };
            (row, col)
        } else {
            let row = if i < 8 || (16..24).contains(&i) { g } else { g + 8 };
            let col = if i < 16 { t * 8 + (i & 7) } else { t * 8 + (i & 7) + 32 };
            (row, col)
        }
    }

    /// The ISA's B table: (row k, col n) of element `i` of lane `lane`.
    fn isa_int_b(bits: u32, lane: u32, i: u32) -> (u32, u32) {
        let (g, t) = (lane >> 2, lane % 4);
        if bits == 8 {
            (if i < 4 { t * 4 + (i & 3) } else { t * 4 + (i & 3) + 16 }, g)
        } else {
            (if i < 8 { t * 8 + (i & 7) } else { t * 8 + (i & 7) + 32 }, g)
        }
    }

    /// A model of `ldmatrix.sync.aligned.m8n8.xN.b16` (§9.7.9.26): matrix `q` has its 8 row
    /// addresses from lanes `8q .. 8q + 8`; register `q` of lane `l` receives the two b16
    /// elements `2·(l % 4)` and `+1` of row `l / 4` of matrix `q`, i.e. its bytes `4·(l % 4) ..
    /// + 4`. Returns, per register, the (row, byte) of its lowest byte, from the per-lane
    /// address function `addr`.
    fn ldmatrix(nmat: u32, lane: u32, addr: impl Fn(u32) -> (u32, u32)) -> Vec<(u32, u32)> {
        (0..nmat)
            .map(|q| {
                let (row, byte) = addr(8 * q + lane / 4);
                (row, byte + 4 * (lane % 4))
            })
            .collect()
    }

    /// The element a packed K-contiguous row holds at `byte`, bit `shift` (inverse of
    /// [`IntMma::elem_byte`], checked against it).
    fn elem_at(mma: IntMma, byte: u32, shift: u32) -> u32 {
        let col = byte * (8 / mma.bits) + shift / mma.bits;
        assert_eq!(mma.elem_byte(col), (byte, shift));
        col
    }

    #[test]
    fn int_mma_a_fragments_from_ldmatrix_match_the_isa() {
        for bits in [8u32, 4] {
            let mma = IntMma { bits };
            let per = 32 / bits; // elements per register
            for lane in 0..32 {
                let regs = ldmatrix(4, lane, ldsm_a_lane);
                for (r, &(row, byte)) in regs.iter().enumerate() {
                    for j in 0..per {
                        let (b, shift) = (byte + j * bits / 8, (j * bits) % 8);
                        let got = (row, elem_at(mma, b, shift));
                        assert_eq!(got, isa_int_a(bits, lane, r as u32 * per + j), "bits={bits} lane={lane} reg={r} elem={j}");
                    }
                }
            }
        }
    }

    #[test]
    fn int_mma_b_fragments_from_ldmatrix_match_the_isa() {
        for bits in [8u32, 4] {
            let mma = IntMma { bits };
            let per = 32 / bits;
            for lane in 0..32 {
                // stored [N][K]: a register's row is the column n of B
                let regs = ldmatrix(2, lane, ldsm_b_lane);
                for (r, &(n, byte)) in regs.iter().enumerate() {
                    for j in 0..per {
                        let (b, shift) = (byte + j * bits / 8, (j * bits) % 8);
                        let got = (elem_at(mma, b, shift), n);
                        assert_eq!(got, isa_int_b(bits, lane, r as u32 * per + j), "bits={bits} lane={lane} reg={r} elem={j}");
                    }
                }
            }
        }
    }

    #[test]
    fn int_mma_shapes_and_packing() {
        let (s8, s4) = (IntMma { bits: 8 }, IntMma { bits: 4 });
        assert_eq!((s8.k(), s4.k()), (32, 64));
        // element 2j in the low nibble of byte j (the interpreter's packing)
        assert_eq!((s4.elem_byte(6), s4.elem_byte(7)), ((3, 0), (3, 4)));
        assert_eq!(s8.elem_byte(5), (5, 0));
        // ragged K is padded to whole instructions
        assert_eq!((s4.row_bytes(1), s4.row_bytes(64), s4.row_bytes(65)), (32, 32, 64));
        assert_eq!((s8.row_bytes(33), s8.row_bytes(128)), (64, 128));
    }

    #[test]
    fn packed_rows_are_ldmatrix_conflict_free() {
        // the 8 row addresses of each ldmatrix phase cover 8 distinct 16-byte bank groups
        for bits in [8u32, 4] {
            let mma = IntMma { bits };
            for k in (1..=512).step_by(7) {
                let pitch = mma.pitch(k);
                assert!(pitch.is_multiple_of(16) && pitch >= mma.row_bytes(k));
                for step in 0..mma.row_bytes(k) / IntMma::KBYTES {
                    for q in 0..4 {
                        let mut groups: Vec<u32> = (0..8)
                            .map(|l| {
                                let (r, b) = ldsm_a_lane(8 * q + l);
                                ((r * pitch + step * IntMma::KBYTES + b) / 16) % 8
                            })
                            .collect();
                        groups.sort();
                        groups.dedup();
                        assert_eq!(groups.len(), 8, "bits={bits} k={k} pitch={pitch}");
                    }
                }
            }
        }
    }

    #[test]
    fn mma_accumulator_matches_the_isa() {
        // §9.7.14.5.8 / .9: row = g for c0, c1 and g + 8 for c2, c3; col = 2t + (i & 1)
        let mut seen = [false; 128];
        for lane in 0..32 {
            for i in 0..4 {
                let (g, t) = (lane >> 2, lane % 4);
                let want = (if i < 2 { g } else { g + 8 }, t * 2 + (i & 1));
                assert_eq!(mma_acc(lane, i), want);
                let (r, c) = mma_acc(lane, i);
                assert!(!std::mem::replace(&mut seen[(r * 8 + c) as usize], true));
            }
        }
        assert!(seen.iter().all(|&x| x));
    }

    // ---- the pipelined integer mainloop's stages (gemm.rs) ---------------------------------

    /// A packed global tensor `[rows, k]` of `bits`-bit codes in the DSL's flat order (4-bit:
    /// element `2j` in the low nibble of byte `j`, rows not necessarily starting on a byte).
    struct Packed {
        bits: u32,
        rows: u32,
        k: u32,
        bytes: Vec<u8>,
    }

    impl Packed {
        fn new(bits: u32, rows: u32, k: u32, seed: u32) -> Packed {
            let n = rows * k;
            let mut x = seed | 1;
            let mut bytes = vec![0u8; (n * bits).div_ceil(8) as usize];
            for e in 0..n {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let v = (x & ((1 << bits) - 1)) as u8;
                let (b, sh) = ((e * bits / 8) as usize, (e * bits) % 8);
                bytes[b] |= v << sh;
            }
            Packed { bits, rows, k, bytes }
        }
        /// The code of element `(r, c)`, 0 out of range (the `load` semantics).
        fn at(&self, r: i64, c: i64) -> u8 {
            if r < 0 || c < 0 || r >= self.rows as i64 || c >= self.k as i64 {
                return 0;
            }
            let e = (r * self.k as i64 + c) as u32;
            (self.bytes[(e * self.bits / 8) as usize] >> ((e * self.bits) % 8)) & ((1 << self.bits) - 1) as u8
        }
    }

    /// One stage of a `rows × bk` tile at global `(r0, k0)` as the mainloop leaves it: chunk
    /// `q` of row `r` (elements `k0 + q·chunk_elems ..`, each at [`IntMma::elem_byte`] inside
    /// the chunk) at stored column `8q` of the swizzled layout (`swizzle::tile_off`), the
    /// padding chunks zero.
    fn stage(t: &Packed, r0: i64, k0: i64, rows: u32, bk: u32) -> (Vec<u8>, u32) {
        let mma = IntMma { bits: t.bits };
        let (copied, scols) = int_stage_row(mma, bk).expect("whole chunks");
        let mut mem = vec![0xAAu8; (rows * scols * 2) as usize];
        for r in 0..rows {
            for q in 0..scols / 8 {
                let at = crate::ptx::swizzle::tile_off(r, 8 * q, rows, scols) as usize;
                let mut chunk = [0u8; 16];
                if q < copied {
                    for j in 0..chunk_elems(t.bits) {
                        let v = t.at(r0 + r as i64, k0 + (q * chunk_elems(t.bits) + j) as i64);
                        let (b, sh) = mma.elem_byte(j);
                        chunk[b as usize] |= v << sh;
                    }
                }
                mem[at..at + 16].copy_from_slice(&chunk);
            }
        }
        (mem, scols)
    }

    /// `ldmatrix.x{nmat}.b16` over shared bytes `mem` (§9.7.9.26): register `q` of lane `l` is
    /// the 4 bytes at `addr(8q + l/4) + 4·(l % 4)`.
    fn ldmatrix_mem(mem: &[u8], nmat: u32, lane: u32, addr: impl Fn(u32) -> u32) -> Vec<[u8; 4]> {
        (0..nmat)
            .map(|q| {
                let a = (addr(8 * q + lane / 4) + 4 * (lane % 4)) as usize;
                [mem[a], mem[a + 1], mem[a + 2], mem[a + 3]]
            })
            .collect()
    }

    /// Element `j` of an integer `mma` register (elements low to high, as `elem_byte` packs).
    fn reg_elem(bits: u32, reg: [u8; 4], j: u32) -> u8 {
        let (b, sh) = IntMma { bits }.elem_byte(j);
        (reg[b as usize] >> sh) & ((1 << bits) - 1) as u8
    }

    #[test]
    fn pipelined_int_stages_feed_the_isa_fragments() {
        // What the mainloop's ldmatrix reads (A: row 16mi + lane % 16, stored column 16ks +
        // 8·(lane / 16); B pair pj: row 16pj + 8·(li / 2) + lane % 8, column 16ks + 8·(li % 2),
        // li = lane / 8) from a stage is, register by register, the ISA fragment of the global
        // tile: ragged rows and K read 0, a K tile shorter than an instruction is zero-padded,
        // and odd K (4-bit rows starting mid-byte) changes nothing.
        for bits in [4u32, 8] {
            let per = 32 / bits;
            for (kdim, bk, k0) in [(201u32, 64u32, 128i64), (200, 32, 192), (256, 128, 128), (77, 48, 48), (64, 16, 48)] {
                let mma = IntMma { bits };
                if bk * bits % 128 != 0 {
                    continue;
                }
                let (m_rows, n_rows) = (32u32, 32u32);
                let a = Packed::new(bits, 40, kdim, 7 + bits);
                let w = Packed::new(bits, 21, kdim, 11 + kdim);
                let (r0, c0) = (16i64, 0i64);
                let (sa, scols) = stage(&a, r0, k0, m_rows, bk);
                let (sb, _) = stage(&w, c0, k0, n_rows, bk);
                let off = |r: u32, c: u32, rows: u32| crate::ptx::swizzle::tile_off(r, c, rows, scols);
                for ks in 0..scols / 16 {
                    // the K columns of this instruction, 0 past the tile (padding)
                    let kcol = |c: u32| -> Option<i64> { (ks * mma.k() + c < bk).then_some(k0 + (ks * mma.k() + c) as i64) };
                    for lane in 0..32 {
                        for mi in 0..m_rows / 16 {
                            let regs = ldmatrix_mem(&sa, 4, lane, |l| off(16 * mi + l % 16, 16 * ks + 8 * (l / 16), m_rows));
                            for (r, reg) in regs.iter().enumerate() {
                                for j in 0..per {
                                    let (row, col) = isa_int_a(bits, lane, r as u32 * per + j);
                                    let want = kcol(col).map_or(0, |kc| a.at(r0 + (16 * mi + row) as i64, kc));
                                    assert_eq!(reg_elem(bits, *reg, j), want, "A bits={bits} K={kdim} bk={bk} ks={ks} lane={lane} mi={mi} reg={r} j={j}");
                                }
                            }
                        }
                        for pj in 0..n_rows / 16 {
                            let regs = ldmatrix_mem(&sb, 4, lane, |l| off(16 * pj + 8 * ((l / 8) / 2) + l % 8, 16 * ks + 8 * ((l / 8) % 2), n_rows));
                            for (r, reg) in regs.iter().enumerate() {
                                // registers 0, 1: n-tile 2pj; 2, 3: n-tile 2pj + 1
                                let (nt, br) = (2 * pj + r as u32 / 2, r as u32 % 2);
                                for j in 0..per {
                                    let (krow, n) = isa_int_b(bits, lane, br * per + j);
                                    let want = kcol(krow).map_or(0, |kc| w.at(c0 + (8 * nt + n) as i64, kc));
                                    assert_eq!(reg_elem(bits, *reg, j), want, "B bits={bits} K={kdim} bk={bk} ks={ks} lane={lane} pj={pj} reg={r} j={j}");
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn int_stage_rows() {
        let (s4, s8) = (IntMma { bits: 4 }, IntMma { bits: 8 });
        assert_eq!(chunk_elems(4), 32);
        assert_eq!(chunk_elems(8), 16);
        assert_eq!(chunk_elems(16), 8);
        // i4: BK = 32 is one chunk in a 32-byte (one instruction) row; 128 is 4 chunks, 2 instructions
        assert_eq!(int_stage_row(s4, 32), Some((1, 16)));
        assert_eq!(int_stage_row(s4, 64), Some((2, 16)));
        assert_eq!(int_stage_row(s4, 128), Some((4, 32)));
        assert_eq!(int_stage_row(s4, 48), None);
        // i8: 48 is three chunks padded to 64 bytes
        assert_eq!(int_stage_row(s8, 48), Some((3, 32)));
        assert_eq!(int_stage_row(s8, 16), Some((1, 16)));
        assert_eq!(int_stage_row(s8, 40), None);
    }
}
