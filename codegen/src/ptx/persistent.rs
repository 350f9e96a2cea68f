//! Persistent CTAs (`Features::persistent`, `sm_90a` kernels with a `wgmma` GEMM loop): the
//! launch has `min(programs, SMs)` CTAs instead of one per program, and each CTA walks the
//! kernel's programs with a static scheduler: CTA `c` of `n` runs programs `c, c + n, c + 2n, …`
//! below `G0·G1·G2`, program `v` being `(v mod G0, (v / G0) mod G1, v / (G0·G1))` (axis 0
//! fastest, as the hardware rasterizes a grid). The whole body runs once per program, with
//! `program_id` / `num_programs` read from these registers and the virtual grid `G`, which the
//! launcher passes as `.param .u32` (`opc_grid_x/y/z`, the manifest's `persistent` object).
//!
//! **TMA ring across tiles.** The GEMM loops' mbarriers are initialized once, before the
//! program walk, and each loop keeps a running iteration counter: stage and phase parity
//! continue from one program to the next (no re-initialization, which PTX forbids on a live
//! barrier without `mbarrier.inval`), and the consumers release the last stage of each
//! program too, so the producer's first copies of the next program only wait for stages the
//! consumers have finished with. A CTA barrier separates programs (their shared buffers reuse
//! the same space).
//!
//! **When it pays.** It saves each program's launch, barrier setup and prologue and keeps the
//! CTA (and its L2 working set of B tiles, neighbours in axis 0 sharing the same B columns)
//! resident: worth it when programs are short (small K, many tiles per SM). It does not fix
//! wave quantization (the static schedule hands out whole programs), and the producer does not
//! yet issue the next program's copies during this program's epilogue (that needs the next
//! program's start coordinates computed by the producer alone): it starts them right after the
//! program boundary. Off by default; `compile_with(.., Features { persistent: true, .. })`.

use opc_ir::{Kernel, OpKind};

use super::emit::{Kind, Reg};
use super::gemm::match_gemm;
use super::lower::Lower;
use super::{attn, wgmma, Features};

/// The `.param` names of the virtual grid.
pub(super) const GRID_PARAMS: [&str; 3] = ["opc_grid_x", "opc_grid_y", "opc_grid_z"];

/// Whether `k` compiles persistent under `feats`: asked for, a `wgmma` GEMM loop to amortize,
/// and no FA3 loop (whose barriers are set up per program).
pub(super) fn applies(k: &Kernel, feats: Features) -> bool {
    feats.persistent && feats.wgmma && wgmma::threads_needed(k, feats) > 0 && attn::threads_needed(k, feats) == 0
}

/// CTAs to launch for a virtual grid of `programs` on `sms` multiprocessors.
pub fn ctas(programs: u64, sms: u64) -> u64 {
    programs.min(sms.max(1))
}

/// Program `v` of the virtual grid `g` (axis 0 fastest).
pub fn program(v: u64, g: [u64; 3]) -> [u64; 3] {
    [v % g[0], (v / g[0]) % g[1], v / (g[0] * g[1])]
}

/// The programs CTA `cta` of `n` runs, in order (what the emitted loop computes).
pub fn schedule(cta: u64, n: u64, g: [u64; 3]) -> impl Iterator<Item = [u64; 3]> {
    let total = g.iter().product::<u64>();
    (cta..total).step_by(n.max(1) as usize).map(move |v| program(v, g))
}

/// The per-program state of a persistent walk.
pub(super) struct Walk {
    pub grid: [Reg; 3],
    pub pid: [Reg; 3],
    v: Reg,
    ctas: Reg,
    head: String,
    exit: String,
    loop_id: usize,
}

/// A GEMM loop's ring that lives across programs: its barriers and running iteration count.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ring {
    pub bars: usize,
    pub count: Reg,
}

impl Lower<'_> {
    /// Set up the rings and open the program walk (module docs).
    pub(super) fn persistent_begin(&mut self) {
        let grid = GRID_PARAMS.map(|n| self.p.op(Kind::R, "ld.param.u32", &[&format!("[{n}]")]));
        let g01 = self.p.op(Kind::R, "mul.lo.u32", &[&grid[0], &grid[1]]);
        let total = self.p.op(Kind::R, "mul.lo.u32", &[&g01, &grid[2]]);
        let mut loops = vec![];
        opc_ir::walk_ops(&self.k.body, &mut |op| {
            if op.kind == OpKind::For {
                if let Some(g) = match_gemm(self.k, op, self.feats).filter(wgmma::eligible) {
                    loops.push((op.results[0].0, g));
                }
            }
        });
        for (id, g) in loops {
            let stages = wgmma::ring_stages(&g);
            let bars = self.alloc(16 * stages as usize);
            let at = self.smem_addr(bars, None, opc_ir::DType::F32);
            self.init_ring_barriers(at, stages, 128 * (g.m as u32 / 64), 0);
            let count = self.p.mov(Kind::R, 0);
            self.rings.insert(id, Ring { bars, count });
        }
        let v = self.p.mov(Kind::R, "%ctaid.x");
        let ctas = self.p.mov(Kind::R, "%nctaid.x");
        let (head, exit) = (self.p.label(), self.p.label());
        self.p.place(&head);
        let done = self.p.op(Kind::P, "setp.ge.u32", &[&v, &total]);
        self.p.ins(format!("@{done} bra {exit}"));
        let p0 = self.p.op(Kind::R, "rem.u32", &[&v, &grid[0]]);
        let q = self.p.op(Kind::R, "div.u32", &[&v, &grid[0]]);
        let p1 = self.p.op(Kind::R, "rem.u32", &[&q, &grid[1]]);
        let p2 = self.p.op(Kind::R, "div.u32", &[&q, &grid[1]]);
        let loop_id = self.open_loop();
        self.walk = Some(Walk { grid, pid: [p0, p1, p2], v, ctas, head, exit, loop_id });
    }

    /// Close the program walk: a CTA barrier, then the next program.
    pub(super) fn persistent_end(&mut self) {
        let w = self.walk.take().expect("persistent_begin ran");
        // the rings' barriers stay live across the whole walk
        for r in self.rings.values().copied().collect::<Vec<_>>() {
            self.buf_off(r.bars);
        }
        self.barrier();
        self.p.ins(format!("add.u32 {}, {}, {}", w.v, w.v, w.ctas));
        self.p.ins(format!("bra {}", w.head));
        self.p.place(&w.exit);
        self.close_loop(w.loop_id);
    }
}

#[cfg(test)]
mod tests {
    use super::{ctas, program, schedule};

    /// Every program of ragged grids is run exactly once, by the CTA the static schedule
    /// assigns, for CTA counts below, at and above the program count.
    #[test]
    fn every_program_runs_exactly_once() {
        for g in [[1, 1, 1], [7, 3, 1], [5, 1, 4], [13, 11, 2], [132, 1, 1], [33, 5, 3]] {
            let total: u64 = g.iter().product();
            for sms in [1, 2, 7, 64, 132, 1000] {
                let n = ctas(total, sms);
                assert!(n >= 1 && n <= total && n <= sms);
                let mut seen = vec![0u32; total as usize];
                for cta in 0..n {
                    let mine: Vec<[u64; 3]> = schedule(cta, n, g).collect();
                    // balanced: each CTA runs ⌊total/n⌋ or ⌈total/n⌉ programs
                    assert!(mine.len() as u64 == total / n || mine.len() as u64 == total.div_ceil(n), "{g:?} {sms}");
                    for p in mine {
                        assert!(p[0] < g[0] && p[1] < g[1] && p[2] < g[2], "{p:?} outside {g:?}");
                        seen[(p[0] + g[0] * (p[1] + g[1] * p[2])) as usize] += 1;
                    }
                }
                assert!(seen.iter().all(|&c| c == 1), "{g:?} on {sms} SMs: {seen:?}");
            }
        }
    }

    #[test]
    fn axis_zero_is_fastest() {
        assert_eq!(program(0, [3, 2, 2]), [0, 0, 0]);
        assert_eq!(program(1, [3, 2, 2]), [1, 0, 0]);
        assert_eq!(program(3, [3, 2, 2]), [0, 1, 0]);
        assert_eq!(program(7, [3, 2, 2]), [1, 0, 1]);
    }
}
