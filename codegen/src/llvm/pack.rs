//! Vectorized operand preparation for `dot` (`dot.rs`): the row-contiguous copy of a transposed
//! `b` (f32) and the k-pair packing of bf16 operands, in `<16 x i32>` registers instead of one
//! element at a time.
//!
//! Attention's `dot(q, trans(k))` is where this matters: every KV step transposes (f32) or
//! packs (bf16) a fresh `[BN, D]` tile of K, and packs `p` and `v` for `P·V`, which element by
//! element costs several times the micro-kernel itself.
//!
//! - **Transpose** in registers: 16 rows of 16 lanes, four butterfly stages (block sizes 8, 4,
//!   2, 1), each one two-source `shufflevector` per pair of rows — 64 shuffles per 16×16 block.
//! - **Pairs along a contiguous dim** (`a` rows, or the rows of a transposed `b`): 32 elements
//!   are 32 bf16 values held as f32, i.e. exactly the high halves of 32 words; one shuffle of the
//!   `<64 x i16>` view picks the 32 high halves, which is 16 packed words `lo | hi << 16`.
//! - **Pairs across rows** (`b` contiguous along `j`): `(b[2p] >> 16) | (b[2p+1] & 0xffff0000)`.
//!
//! Bit-identical to the element-wise packing in `dot.rs` (the values are bf16-exact, so their
//! low halves are zero); shapes these paths do not cover fall back to it.

use super::lower::{lane_mask, Lower};
use crate::Result;

/// Lanes of one register (and the side of a transposed block).
const W: usize = 16;

impl Lower<'_> {
    /// Transpose 16 vectors of `<16 x base>` (`rows[r]` lane `c` → result `c` lane `r`).
    pub(super) fn transpose16(&mut self, base: &str, rows: &[String]) -> Vec<String> {
        let t = format!("<16 x {base}>");
        let mut r = rows.to_vec();
        for s in [8usize, 4, 2, 1] {
            for i in (0..W).filter(|i| i & s == 0) {
                // New row i: its own columns without bit s, then row i+s's columns without bit s
                // moved up; new row i+s: the other halves.
                let lo: Vec<String> = (0..W).map(|c| if c & s == 0 { c } else { W + c - s }).map(|x| format!("i32 {x}")).collect();
                let hi: Vec<String> = (0..W).map(|c| if c & s == 0 { c + s } else { W + c }).map(|x| format!("i32 {x}")).collect();
                let (a, b) = (r[i].clone(), r[i + s].clone());
                r[i] = self.f.val(format!("shufflevector {t} {a}, {t} {b}, <16 x i32> <{}>", lo.join(", ")));
                r[i + s] = self.f.val(format!("shufflevector {t} {a}, {t} {b}, <16 x i32> <{}>", hi.join(", ")));
            }
        }
        r
    }

    /// Copy the `[kk, n]` operand at `off` whose element `(k, j)` sits at `k + j·s1` (a
    /// transposed row-major tile) into a fresh row-major buffer, 16×16 blocks at a time.
    /// `None` (nothing emitted) when the shape is not whole blocks.
    pub(super) fn transpose_copy(&mut self, off: u32, st: &[i64], kk: usize, n: usize) -> Result<Option<u32>> {
        if n < 2 || st[0] != 1 || st[1] == 1 || !kk.is_multiple_of(W) || !n.is_multiple_of(W) {
            return Ok(None);
        }
        let dst = self.alloc(kk * n);
        self.transpose_blocks("float", off, st[1], n, kk, dst, n as i64)?;
        Ok(Some(dst))
    }

    /// `dst[c·ds + r] = src[r·ss + c]` for `r < rows`, `c < cols` (both multiples of 16), 32-bit
    /// elements of type `base` (`float` or `i32`), in 16×16 register blocks: 16 row loads, the
    /// butterfly of [`Self::transpose16`], 16 stores.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn transpose_blocks(&mut self, base: &str, src: u32, ss: i64, rows: usize, cols: usize, dst: u32, ds: i64) -> Result<()> {
        debug_assert!(rows.is_multiple_of(W) && cols.is_multiple_of(W));
        self.loop_n(rows / W, &mut |l, rb| {
            l.loop_n(cols / W, &mut |l, cb| {
                let r0 = l.f.val(format!("mul i64 {rb}, {W}"));
                let c0 = l.f.val(format!("mul i64 {cb}, {W}"));
                let rows: Vec<String> = (0..W)
                    .map(|r| {
                        let e = l.f.val(format!("add i64 {r0}, {r}"));
                        let e = l.f.val(format!("mul i64 {e}, {ss}"));
                        let e = l.f.val(format!("add i64 {e}, {c0}"));
                        l.load_arena(base, 16, src, &e)
                    })
                    .collect();
                let cols = l.transpose16(base, &rows);
                for (c, v) in cols.iter().enumerate() {
                    let e = l.f.val(format!("add i64 {c0}, {c}"));
                    let e = l.f.val(format!("mul i64 {e}, {ds}"));
                    let e = l.f.val(format!("add i64 {e}, {r0}"));
                    l.store_arena(base, 16, dst, &e, v, None);
                }
                Ok(())
            })
        })
    }

    /// 16 packed words from 32 elements starting at element `e` of slot `off` (pairs along a
    /// contiguous dim); with `valid < 16`, only the first `valid` words are read (rest zero).
    fn pack_contig(&mut self, off: u32, e: &str, valid: usize) -> String {
        let p = self.arena_ptr(off, e);
        let x = if valid == W {
            self.f.val(format!("load <32 x i32>, ptr {p}, align 4"))
        } else {
            let m = lane_mask(32, 2 * valid);
            self.f.val(format!("call <32 x i32> @llvm.masked.load.v32i32.p0(ptr {p}, i32 4, <32 x i1> {m}, <32 x i32> zeroinitializer)"))
        };
        let h = self.f.val(format!("bitcast <32 x i32> {x} to <64 x i16>"));
        let odd: Vec<String> = (0..32).map(|i| format!("i32 {}", 2 * i + 1)).collect();
        let w = self.f.val(format!("shufflevector <64 x i16> {h}, <64 x i16> poison, <32 x i32> <{}>", odd.join(", ")));
        self.f.val(format!("bitcast <32 x i16> {w} to <16 x i32>"))
    }

    /// Vector form of `dot.rs`'s `pack_pairs` (same arguments and result); `false` (nothing
    /// emitted) for layouts it does not cover.
    pub(super) fn pack_pairs_vec(&mut self, off: u32, st: &[i64], rows: usize, kk: usize, dst: u32, rows_are_a: bool) -> Result<bool> {
        let kp = kk.div_ceil(2);
        if rows_are_a {
            // a[i, k] at i·st0 + k: each row packs along k.
            if st[1] != 1 || kk % 2 != 0 {
                return Ok(false);
            }
            let (full, tail) = (kp / W, kp % W);
            let s0 = st[0];
            self.loop_n(rows, &mut |l, i| {
                let src = l.f.val(format!("mul i64 {i}, {s0}"));
                let drow = l.f.val(format!("mul i64 {i}, {kp}"));
                let chunk = |l: &mut Self, c: &str, valid: usize| {
                    let e = l.f.val(format!("add i64 {src}, {c}"));
                    let w = l.pack_contig(off, &e, valid);
                    let h = l.f.val(format!("sdiv exact i64 {c}, 2"));
                    let d = l.f.val(format!("add i64 {drow}, {h}"));
                    let m = (valid < W).then(|| lane_mask(16, valid));
                    l.store_arena("i32", 16, dst, &d, &w, m.as_deref());
                };
                l.loop_n(full, &mut |l, cb| {
                    let c = l.f.val(format!("mul i64 {cb}, {}", 2 * W));
                    chunk(l, &c, W);
                    Ok(())
                })?;
                if tail > 0 {
                    chunk(l, &(2 * W * full).to_string(), tail);
                }
                Ok(())
            })?;
            return Ok(true);
        }
        // b[k, j] at k·st0 + j·st1, packed as [kp, n = rows].
        let n = rows;
        if st[1] == 1 {
            let s0 = st[0];
            let (full, tail) = (n / W, n % W);
            self.loop_n(kp, &mut |l, p| {
                let k0 = l.f.val(format!("mul i64 {p}, 2"));
                let r0 = l.f.val(format!("mul i64 {k0}, {s0}"));
                let r1 = l.f.val(format!("add i64 {r0}, {s0}"));
                let last_odd = kk % 2 == 1;
                let odd_ok = if last_odd {
                    let k1 = l.f.val(format!("add i64 {k0}, 1"));
                    Some(l.f.val(format!("icmp ult i64 {k1}, {kk}")))
                } else {
                    None
                };
                let drow = l.f.val(format!("mul i64 {p}, {n}"));
                let chunk = |l: &mut Self, j: &str, valid: usize| {
                    let m = (valid < W).then(|| lane_mask(16, valid));
                    let ld = |l: &mut Self, row: &str| -> String {
                        let e = l.f.val(format!("add i64 {row}, {j}"));
                        let ptr = l.arena_ptr(off, &e);
                        match &m {
                            None => l.f.val(format!("load <16 x i32>, ptr {ptr}, align 4")),
                            Some(mk) => l.f.val(format!(
                                "call <16 x i32> @llvm.masked.load.v16i32.p0(ptr {ptr}, i32 4, <16 x i1> {mk}, <16 x i32> zeroinitializer)"
                            )),
                        }
                    };
                    let lo = ld(l, &r0);
                    let lo = l.f.val(format!("lshr <16 x i32> {lo}, splat (i32 16)"));
                    let hi = match &odd_ok {
                        // the last pair of an odd K has no high half: its row is not read
                        Some(ok) => {
                            let r = l.f.val(format!("select i1 {ok}, i64 {r1}, i64 {r0}"));
                            let h = ld(l, &r);
                            l.f.val(format!("select i1 {ok}, <16 x i32> {h}, <16 x i32> zeroinitializer"))
                        }
                        None => ld(l, &r1),
                    };
                    let hi = l.f.val(format!("and <16 x i32> {hi}, splat (i32 -65536)"));
                    let w = l.f.val(format!("or <16 x i32> {lo}, {hi}"));
                    let d = l.f.val(format!("add i64 {drow}, {j}"));
                    l.store_arena("i32", 16, dst, &d, &w, m.as_deref());
                };
                l.loop_n(full, &mut |l, jb| {
                    let j = l.f.val(format!("mul i64 {jb}, {W}"));
                    chunk(l, &j, W);
                    Ok(())
                })?;
                if tail > 0 {
                    chunk(l, &(W * full).to_string(), tail);
                }
                Ok(())
            })?;
            return Ok(true);
        }
        if st[0] == 1 && kp % W == 0 && kk % 2 == 0 && n % W == 0 {
            // A transposed b: row j of the source is contiguous in k. Pack 16 rows × 16 words,
            // then transpose the words into [p, j].
            let s1 = st[1];
            self.loop_n(n / W, &mut |l, jb| {
                l.loop_n(kp / W, &mut |l, pb| {
                    let j0 = l.f.val(format!("mul i64 {jb}, {W}"));
                    let k0 = l.f.val(format!("mul i64 {pb}, {}", 2 * W));
                    let rows: Vec<String> = (0..W)
                        .map(|r| {
                            let e = l.f.val(format!("add i64 {j0}, {r}"));
                            let e = l.f.val(format!("mul i64 {e}, {s1}"));
                            let e = l.f.val(format!("add i64 {e}, {k0}"));
                            l.pack_contig(off, &e, W)
                        })
                        .collect();
                    let cols = l.transpose16("i32", &rows);
                    let p0 = l.f.val(format!("mul i64 {pb}, {W}"));
                    for (r, v) in cols.iter().enumerate() {
                        let e = l.f.val(format!("add i64 {p0}, {r}"));
                        let e = l.f.val(format!("mul i64 {e}, {n}"));
                        let e = l.f.val(format!("add i64 {e}, {j0}"));
                        l.store_arena("i32", 16, dst, &e, v, None);
                    }
                    Ok(())
                })
            })?;
            return Ok(true);
        }
        Ok(false)
    }
}
