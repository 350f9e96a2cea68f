//! Shared-memory layouts of staged `dot` operand tiles, and the `wgmma` matrix descriptor: the
//! pure index math, kept apart so that it is unit-tested on the CPU (nothing here can be run on
//! a GPU in CI).
//!
//! **Stored orientation.** A staged operand tile is stored as `R` rows of `C` 16-bit elements,
//! `C` being the tensor's contiguous dim: K-major operands (A loaded `[M, K]`, B loaded `[N, K]`
//! and transposed) store rows = M/N and columns = K; MN-major operands (B loaded `[K, N]`)
//! store rows = K and columns = N.
//!
//! **Swizzle** (PTX ISA §9.7.15.5.1.2 "Shared Memory Matrix Layout", and the TMA swizzle modes
//! of `cuTensorMapEncodeTiled`, which are the same address functions). The columns are cut into
//! blocks of `S = min(128, 2·C)` bytes (the swizzle span: 32, 64 or 128 B); block `j` is a dense
//! `[R][S]` region at byte `j·R·S` and inside it element `(r, c)` sits at byte
//! `swz(r·S + 2c)`, where `swz(o) = o XOR (((o >> 7) & (S/16 − 1)) << 4)`: the 16-byte chunk
//! index (bits 4..) is XORed with the 128-byte line index (bits 7..), over `log2(S/16)` bits.
//! The pattern repeats every `8·S` bytes (the "swizzle atom" of 8 rows, Table 38), so a region
//! that starts on an `8·S` boundary has matrix base offset 0 (§9.7.15.5.1.2.2). Eight
//! consecutive rows at the same logical chunk land in eight different 16-byte bank groups, so
//! every `ldmatrix` phase (8 row addresses) is conflict-free (tested below), and `cp.async` /
//! TMA write whole 16-byte chunks.
//!
//! **Matrix descriptor** (§9.7.15.5.1.2.2 "Matrix Descriptor Format"): bits 0–13 start address,
//! 16–29 leading-dimension byte offset (LBO), 32–45 stride-dimension byte offset (SBO), each
//! encoded as `(x & 0x3FFFF) >> 4`; bits 49–51 base offset (0 here: regions are atom-aligned);
//! bits 62–63 swizzle mode (1 = 128 B, 2 = 64 B, 3 = 32 B). For the swizzled layouts above
//! (strides section of the same chapter, and §9.7.16.3 for tcgen05 which words it explicitly):
//! - K-major: LBO is unused ("assumed 1"); SBO = the byte distance between 8-row groups = `8·S`.
//!   A `k16` step advances the start address by 32 bytes inside the swizzle span.
//! - MN-major: LBO = the distance between swizzle atoms along M/N = one column block, `R·S`;
//!   SBO = the distance between 8-row (8-k) groups = `8·S`. A `k16` step advances the start by
//!   `16·S` bytes (two row groups).

/// Bytes of one 16-bit element.
const E: u32 = 2;

/// The swizzle span (bytes) of a tile whose stored rows have `cols` 16-bit elements.
pub(crate) fn span(cols: u32) -> u32 {
    (cols * E).min(128)
}

#[cfg(test)]
/// `swz(o)` for span `s` (32, 64 or 128; 16 means no swizzle).
pub(crate) fn swz(o: u32, s: u32) -> u32 {
    let mask = s / 16 - 1;
    o ^ (((o >> 7) & mask) << 4)
}

#[cfg(test)]
/// Byte offset of stored element `(r, c)` of an `R × C` tile (see the module docs).
pub(crate) fn tile_off(r: u32, c: u32, rows: u32, cols: u32) -> u32 {
    let s = span(cols);
    let per = s / E;
    (c / per) * rows * s + swz(r * s + (c % per) * E, s)
}

/// Bytes of a stored `R × C` tile.
pub(crate) fn tile_bytes(rows: u32, cols: u32) -> u32 {
    rows * cols * E
}

/// Whether an `R × C` tile can use these layouts: whole 8-row atoms, a span of 32, 64 or 128
/// bytes, whole column blocks.
pub(crate) fn tile_ok(rows: u32, cols: u32) -> bool {
    let s = span(cols);
    rows.is_multiple_of(8) && rows > 0 && matches!(s, 32 | 64 | 128) && (cols * E).is_multiple_of(s)
}

/// The 2-bit swizzle mode field of a descriptor for span `s`.
pub(crate) fn mode(s: u32) -> u64 {
    match s {
        128 => 1,
        64 => 2,
        32 => 3,
        _ => 0,
    }
}

/// `matrix-descriptor-encode(x) = (x & 0x3FFFF) >> 4`.
fn enc(x: u32) -> u64 {
    ((x & 0x3FFFF) >> 4) as u64
}

/// The descriptor bits other than the start address, for an `R × C` stored tile read as a
/// K-major (`kmajor`) or MN-major `wgmma` operand.
pub(crate) fn desc_fields(rows: u32, cols: u32, kmajor: bool) -> u64 {
    let s = span(cols);
    let (lbo, sbo) = if kmajor { (16, 8 * s) } else { (rows * s, 8 * s) };
    (enc(lbo) << 16) | (enc(sbo) << 32) | (mode(s) << 62)
}

#[cfg(test)]
/// The full descriptor of a tile at shared address `addr` (tests; the PTX adds the encoded
/// start address to [`desc_fields`] at run time).
pub(crate) fn descriptor(addr: u32, rows: u32, cols: u32, kmajor: bool) -> u64 {
    desc_fields(rows, cols, kmajor) | enc(addr)
}

/// Byte offset of the start address of `k16` step `ks` of `wgmma` inside an `R × C` stored tile.
/// K-major: 16 elements along the stored columns, which may cross into the next column block
/// (`C > S/2`: block `16·ks / (S/2)` at `R·S` bytes each, then 32 bytes per step inside the
/// span). MN-major: 16 stored rows (`16·S` bytes) inside every column block.
pub(crate) fn k16_off(rows: u32, cols: u32, kmajor: bool, ks: u32) -> u32 {
    let s = span(cols);
    if kmajor {
        let per = s / E;
        let k = 16 * ks;
        (k / per) * rows * s + (k % per) * E
    } else {
        16 * s * ks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte address the tensor core reads for element (mn, k) of a `wgmma` operand given by
    /// descriptor `d`, modelled from the canonical layouts of §9.7.15.5.1.2: the unswizzled
    /// address of the element in the canonical layout (atoms of 8 rows × S bytes, K-major
    /// rows along M/N with SBO between 8-row groups; MN-major rows along K with LBO between
    /// column blocks and SBO between 8-row groups), then the swizzle applied to the address bits.
    fn wgmma_reads(d: u64, mn: u32, k: u32, kmajor: bool) -> u32 {
        let start = ((d & 0x3FFF) << 4) as u32;
        let lbo = (((d >> 16) & 0x3FFF) << 4) as u32;
        let sbo = (((d >> 32) & 0x3FFF) << 4) as u32;
        let s = match d >> 62 {
            1 => 128,
            2 => 64,
            3 => 32,
            _ => 16,
        };
        let plain = if kmajor {
            (mn / 8) * sbo + (mn % 8) * s + k * E
        } else {
            let per = s / E;
            (mn / per) * lbo + (k / 8) * sbo + (k % 8) * s + (mn % per) * E
        };
        // the swizzle is a function of the address bits, relative to the atom-aligned start
        let atom = 8 * s;
        let base = start - start % atom;
        base + swz(start % atom + plain, s)
    }

    /// Every element of every `k16` slice of A (M = 64 rows per warpgroup) and B (N columns)
    /// is found by the descriptor exactly where `tile_off` (what TMA / cp.async write) put it.
    #[test]
    fn descriptors_read_what_the_tiles_hold() {
        for (rows, cols, kmajor) in [
            (128, 64, true),
            (64, 128, true),
            (128, 256, true),
            (64, 32, true),
            (128, 16, true),
            (64, 128, false),
            (32, 128, false),
            (16, 64, false),
            (64, 256, false),
            (16, 16, false),
        ] {
            assert!(tile_ok(rows, cols));
            let base = 4096u32;
            let (mn_n, k_n) = if kmajor { (rows, cols) } else { (cols, rows) };
            for k0 in (0..k_n).step_by(16) {
                // warpgroup slices of 64 rows along M/N for K-major A
                for mn0 in (0..mn_n).step_by(if kmajor { 64 } else { mn_n as usize }) {
                    let mut addr = base + k16_off(rows, cols, kmajor, k0 / 16);
                    if kmajor {
                        addr += mn0 * span(cols);
                    }
                    let d = descriptor(addr, rows, cols, kmajor);
                    for mn in 0..(mn_n - mn0).min(64) {
                        for k in 0..16 {
                            let (r, c) = if kmajor { (mn0 + mn, k0 + k) } else { (k0 + k, mn0 + mn) };
                            let want = base + tile_off(r, c, rows, cols);
                            assert_eq!(wgmma_reads(d, mn, k, kmajor), want, "{rows}x{cols} kmajor={kmajor} mn={} k={}", mn0 + mn, k0 + k);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn layout_is_a_bijection_onto_the_tile() {
        for (rows, cols) in [(64, 32), (128, 64), (32, 128), (16, 16), (8, 256)] {
            let mut seen = vec![false; tile_bytes(rows, cols) as usize / 2];
            for r in 0..rows {
                for c in 0..cols {
                    let o = tile_off(r, c, rows, cols);
                    assert_eq!(o % 2, 0);
                    assert!(!std::mem::replace(&mut seen[o as usize / 2], true), "{rows}x{cols}: ({r}, {c}) collides");
                }
            }
            // 16-byte chunks stay whole: 8 consecutive columns are 16 contiguous bytes
            for r in 0..rows {
                for c in (0..cols).step_by(8) {
                    let o = tile_off(r, c, rows, cols);
                    assert_eq!(o % 16, 0);
                    for i in 1..8 {
                        assert_eq!(tile_off(r, c + i, rows, cols), o + 2 * i);
                    }
                }
            }
        }
    }

    #[test]
    fn ldmatrix_phases_are_conflict_free() {
        // an ldmatrix phase reads 8 rows r0..r0+8 (r0 % 8 == 0) at one logical 16-byte chunk;
        // the 8 chunks must cover the 8 distinct 16-byte bank groups of a 128-byte bank cycle.
        for (rows, cols) in [(64, 16), (64, 32), (128, 64), (32, 128)] {
            for r0 in (0..rows).step_by(8) {
                for c in (0..cols).step_by(8) {
                    let mut groups: Vec<u32> = (0..8).map(|i| (tile_off(r0 + i, c, rows, cols) % 128) / 16).collect();
                    groups.sort();
                    groups.dedup();
                    assert_eq!(groups.len(), 8, "{rows}x{cols} r0={r0} c={c}");
                }
            }
        }
    }

    #[test]
    fn descriptor_fields_match_the_isa_encoding() {
        // 128-byte K-major: LBO 16 (encoded 1), SBO 1024 (encoded 64), mode 1
        let d = descriptor(0x400, 128, 64, true);
        assert_eq!(d & 0x3FFF, 0x40);
        assert_eq!((d >> 16) & 0x3FFF, 1);
        assert_eq!((d >> 32) & 0x3FFF, 64);
        assert_eq!((d >> 49) & 7, 0);
        assert_eq!(d >> 62, 1);
        // 64-byte MN-major [32 k][128 n]: two column blocks of 32·64 B, SBO 512
        let d = descriptor(0, 32, 128, false);
        assert_eq!((d >> 16) & 0x3FFF, (32 * 128) >> 4);
        assert_eq!(d >> 62, 1);
        let d = descriptor(0, 32, 32, false);
        assert_eq!((d >> 32) & 0x3FFF, 512 >> 4);
        assert_eq!(d >> 62, 2);
    }

    #[test]
    fn fa3_descriptors_match_hand_encoded_values() {
        // Worked by hand from §9.7.15.5.1.2.2: start = addr >> 4 (bits 0-13), LBO >> 4 (16-29),
        // SBO >> 4 (32-45), base offset 0 (49-51), swizzle mode (62-63: 1 = 128 B, 3 = 32 B).
        // K [64 keys][128 d] K-major at 0x2400: start 0x240, LBO 16 -> 1, SBO 8·128 = 1024 -> 0x40
        assert_eq!(descriptor(0x2400, 64, 128, true), 0x4000_0040_0001_0240);
        // V [64 keys][128 d] MN-major at 0x6400: LBO = one column block, 64·128 = 8192 -> 0x200
        assert_eq!(descriptor(0x6400, 64, 128, false), 0x4000_0040_0200_0640);
        // Q [64][16] (32-byte span) K-major at 0x400: SBO 8·32 = 256 -> 0x10, mode 3
        assert_eq!(descriptor(0x400, 64, 16, true), 0xC000_0010_0001_0040);
        // the start field keeps address bits 4..17 only (shared windows are < 256 KiB)
        assert_eq!(descriptor(0x3FFF0, 64, 128, true) & 0x3FFF, 0x3FFF);
        // k16 steps: K-major d = 80 is column block 1 (8192 B in) plus 16 elements (32 B);
        // MN-major key step 2 is 32 rows of 128 B
        assert_eq!(k16_off(64, 128, true, 5), 8192 + 32);
        assert_eq!(k16_off(64, 128, true, 3), 96);
        assert_eq!(k16_off(64, 128, false, 2), 4096);
    }
}
