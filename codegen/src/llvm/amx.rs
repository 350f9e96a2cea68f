//! AMX bf16 tiles for the fused K loops (`kloop.rs`) on hosts with `amx-tile` and `amx-bf16`.
//!
//! The chunk's k-pair panels are already in AMX's layouts: `a` packed as `[BM][KC/2]` i32 is
//! row-major bf16 `[BM][KC]` (an A tile is 16 rows × 32 bf16 = 64 bytes), and `b` packed as
//! `[KC/2][BN]` i32 pairs is the "VNNI" layout a B tile wants (16 pair rows × 16 columns). The
//! accumulator `c` (`[BM][BN]` f32) is swept in blocks of `RT × CT` 16×16 f32 tiles (2 × 2
//! when `BM`, `BN` allow: tiles 0–3 accumulate, 4–5 hold `a`, 6–7 hold `b`), each block loaded
//! with `tileloadd`, updated by one `tdpbf16ps` per tile pair and 32 k values, and stored back
//! with `tilestored`. The palette-1 configuration (all eight tiles 16 rows × 64 bytes) is
//! written on the stack and loaded with `ldtilecfg` before each chunk's sweep; `tilerelease`
//! follows it. Intrinsics: `llvm.x86.{ldtilecfg, tileloadd64, tdpbf16ps, tilestored64,
//! tilerelease}`.
//!
//! Used only when the K loop's `BM`, `BN` are multiples of 16 and `BK` of 32 (every chunk is
//! then whole 32-deep k tiles, so no stale panel data is ever multiplied), and only when the
//! target machine has the features: the host's feature string (`mod.rs`) decides, and the
//! process asks Linux for the tile-data state first (`request_amx`).
//!
//! **Numerics**: `c[i, j] += a[i, 2p]·b[2p, j] + a[i, 2p+1]·b[2p+1, j]` per k pair, pairs in
//! ascending order, products of bf16 exact in f32, each addition one f32 rounding (round to
//! nearest even), denormal inputs and outputs flushed to zero — the same contract as the
//! `vdpbf16ps` path, checked against the interpreter with the bf16 `dot` tolerance.

use super::lower::Lower;
use crate::Result;

/// Whether a fused K loop of `(BM, BK, BN)` can run on AMX tiles.
pub(super) fn fits((bm, bk, bn): (usize, usize, usize)) -> bool {
    bm.is_multiple_of(16) && bn.is_multiple_of(16) && bk.is_multiple_of(32)
}

/// Ask Linux for permission to use the AMX tile data state (`arch_prctl(ARCH_REQ_XCOMP_PERM,
/// XFEATURE_XTILEDATA)`, process-wide); true on success. Without it the first tile
/// instruction faults.
fn request_amx() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        const SYS_ARCH_PRCTL: i64 = 158;
        const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
        const XFEATURE_XTILEDATA: i64 = 18;
        let ret: i64;
        // SAFETY: the arch_prctl system call with these arguments only changes this process's
        // permitted extended-state set; it reads and writes no memory of ours.
        unsafe {
            std::arch::asm!(
                "syscall",
                inlateout("rax") SYS_ARCH_PRCTL => ret,
                in("rdi") ARCH_REQ_XCOMP_PERM,
                in("rsi") XFEATURE_XTILEDATA,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack)
            );
        }
        ret == 0
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        false
    }
}

/// [`request_amx`], asked once per process.
pub(super) fn amx_permitted() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(request_amx)
}

impl Lower<'_> {
    /// `c[m][n] += a · b` over `ktiles` (an i64 operand, ≥ 1) 32-deep k tiles of the packed
    /// panels `apk` (`[m][kp]` i32) and `bpk` (`[·][n]` i32). `m`, `n` multiples of 16.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn amx_blocks(&mut self, apk: u32, bpk: u32, kp: usize, c: u32, m: usize, n: usize, ktiles: &str) -> Result<()> {
        let cfg = self.f.alloca("[64 x i8]");
        self.f.inst(format!("call void @llvm.memset.p0.i64(ptr align 64 {cfg}, i8 0, i64 64, i1 false)"));
        self.f.inst(format!("store i8 1, ptr {cfg}, align 64"));
        for t in 0..8 {
            let cb = self.f.val(format!("getelementptr inbounds i8, ptr {cfg}, i64 {}", 16 + 2 * t));
            self.f.inst(format!("store i16 64, ptr {cb}, align 2"));
            let rb = self.f.val(format!("getelementptr inbounds i8, ptr {cfg}, i64 {}", 48 + t));
            self.f.inst(format!("store i8 16, ptr {rb}, align 1"));
        }
        self.f.inst(format!("call void @llvm.x86.ldtilecfg(ptr {cfg})"));
        let rt = if m.is_multiple_of(32) { 2 } else { 1 };
        let ct = if n.is_multiple_of(32) { 2 } else { 1 };
        let (sa, sb) = (4 * kp, 4 * n); // byte strides of apk and bpk / c rows
        self.nest(&[m / (16 * rt), n / (16 * ct)], &mut |l, idx| {
            let i0 = l.f.val(format!("mul i64 {}, {}", idx[0], 16 * rt));
            let j0 = l.f.val(format!("mul i64 {}, {}", idx[1], 16 * ct));
            // C tiles
            let cptr = |l: &mut Self, r: usize, q: usize| -> String {
                let i = l.f.val(format!("add i64 {i0}, {}", 16 * r));
                let e = l.f.val(format!("mul i64 {i}, {n}"));
                let e = l.f.val(format!("add i64 {e}, {j0}"));
                let e = l.f.val(format!("add i64 {e}, {}", 16 * q));
                l.arena_ptr(c, &e)
            };
            for r in 0..rt {
                for q in 0..ct {
                    let p = cptr(l, r, q);
                    l.f.inst(format!("call void @llvm.x86.tileloadd64(i8 {}, ptr {p}, i64 {sb})", r * ct + q));
                }
            }
            l.loop_dyn(ktiles, &mut |l, kt| {
                let p0 = l.f.val(format!("mul i64 {kt}, 16"));
                for r in 0..rt {
                    let i = l.f.val(format!("add i64 {i0}, {}", 16 * r));
                    let e = l.f.val(format!("mul i64 {i}, {kp}"));
                    let e = l.f.val(format!("add i64 {e}, {p0}"));
                    let p = l.arena_ptr(apk, &e);
                    l.f.inst(format!("call void @llvm.x86.tileloadd64(i8 {}, ptr {p}, i64 {sa})", 4 + r));
                }
                for q in 0..ct {
                    let e = l.f.val(format!("mul i64 {p0}, {n}"));
                    let e = l.f.val(format!("add i64 {e}, {j0}"));
                    let e = l.f.val(format!("add i64 {e}, {}", 16 * q));
                    let p = l.arena_ptr(bpk, &e);
                    l.f.inst(format!("call void @llvm.x86.tileloadd64(i8 {}, ptr {p}, i64 {sb})", 6 + q));
                }
                for r in 0..rt {
                    for q in 0..ct {
                        l.f.inst(format!("call void @llvm.x86.tdpbf16ps(i8 {}, i8 {}, i8 {})", r * ct + q, 4 + r, 6 + q));
                    }
                }
                Ok(())
            })?;
            for r in 0..rt {
                for q in 0..ct {
                    let p = cptr(l, r, q);
                    l.f.inst(format!("call void @llvm.x86.tilestored64(i8 {}, ptr {p}, i64 {sb})", r * ct + q));
                }
            }
            Ok(())
        })?;
        self.f.inst("call void @llvm.x86.tilerelease()");
        Ok(())
    }
}
