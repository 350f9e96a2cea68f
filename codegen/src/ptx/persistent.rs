//! Persistent CTAs (`Features::persistent`, `sm_90a` kernels with a `wgmma` GEMM loop): the
//! launch has `min(programs, SMs)` CTAs instead of one per program, and each CTA walks the
//! kernel's programs with a static scheduler: CTA `c` of `n` runs programs `c, c + n, c + 2n, …`
//! below `G0·G1·G2`, program `v` being `(v mod G0, (v / G0) mod G1, v / (G0·G1))` (axis 0
//! fastest, as the hardware rasterizes a grid). The whole body runs once per program, with
//! `program_id` / `num_programs` read from these registers and the virtual grid `G`, which the
//! launcher passes as `.param .u32` (`opc_grid_x/y/z`, the manifest's `persistent` object).
//!
//! **TMA ring across tiles.** Each GEMM loop's stage buffer and mbarriers are allocated and
//! initialized once, before the program walk, and the loop keeps a running iteration count:
//! stage and phase parity continue from one program to the next (no re-initialization, which
//! PTX forbids on a live barrier without `mbarrier.inval`), and the consumers release the last
//! stage of each program too. A CTA barrier separates programs (their other shared buffers
//! reuse the same space; the ring is never reused, so copies in flight are safe).
//!
//! **Producer run-ahead.** When the loop sits at the top level of the body and its bounds and
//! tile starts are scalar functions of `program_id`, dims and scalar params
//! ([`next_program_slice`]), the producer thread, once this program's copies are issued,
//! evaluates that slice for the next program `v + n` and issues its first `min(STAGES, trips)`
//! k-blocks (global iterations continuing the count). They only wait on stages this program's
//! consumers release before they reach the CTA join, so this cannot deadlock, and they land
//! while the consumers run this program's epilogue (accumulator out, bias, cast, store). The
//! next program's producer loop then starts at that count (`Ring::ahead`).
//!
//! **When it pays.** It saves each program's launch, barrier setup and prologue, keeps the CTA
//! resident, and hides the mainloop's fill latency behind the previous epilogue: worth it when
//! programs are short (small K) or epilogues long, and there are several programs per SM. It
//! does not fix wave quantization (the static schedule hands out whole programs), and with one
//! program per SM it only adds the walk's few instructions. Off by default;
//! `compile_with(.., Features { persistent: true, .. })`, the manifest's `persistent` object.

use std::collections::HashSet;

use opc_ir::{Kernel, Op, OpKind};

use super::emit::{Kind, Reg};
use super::gemm::{match_gemm, GemmLoop};
use super::lower::{Lower, Repr};
use super::wgmma::Tma;
use super::{attn, wgmma, Features};
use crate::Result;

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

/// A GEMM loop's ring that lives across programs: its stage buffer and barriers (allocated
/// once, so nothing else is ever placed where the run-ahead's copies land), the running
/// iteration count, and (the producer's) k-blocks of the current program already issued.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ring {
    pub ring: usize,
    pub bars: usize,
    pub count: Reg,
    pub ahead: Reg,
}

/// The top-level ops before GEMM loop `op` that its bounds and tile starts depend on (body
/// order), when all of them are scalar ops the producer can evaluate again for the next
/// program (`program_id`, dims, scalar params, constants, arithmetic); `None` otherwise (the
/// loop is nested, or a start depends on a load): then there is no run-ahead.
pub(super) fn next_program_slice(k: &Kernel, op: &Op, g: &GemmLoop) -> Option<Vec<usize>> {
    let at = k.body.ops.iter().position(|o| std::ptr::eq(o, op))?;
    let body = &op.regions[0];
    let inside: HashSet<u32> = body.args.iter().map(|v| v.0).chain(body.ops.iter().flat_map(|o| o.results.iter().map(|r| r.0))).collect();
    let mut work: Vec<opc_ir::ValueId> = op.args[..3].to_vec();
    work.extend(g.slice.iter().flat_map(|&i| body.ops[i].args.iter().copied()));
    work.extend([&g.a, &g.b].iter().flat_map(|o| o.starts.iter().filter_map(|s| s.scalar)));
    let mut take = HashSet::new();
    while let Some(v) = work.pop() {
        if inside.contains(&v.0) {
            continue;
        }
        let i = k.body.ops[..at].iter().position(|o| o.results.contains(&v))?;
        let o = &k.body.ops[i];
        let pure = matches!(
            o.kind,
            OpKind::Const(_) | OpKind::ProgramId(_) | OpKind::NumPrograms(_) | OpKind::Dim(_) | OpKind::ScalarParam(_) | OpKind::Unary(_) | OpKind::Binary(_) | OpKind::Cmp(_) | OpKind::Select | OpKind::Cast(_)
                | OpKind::ExpandDims(_) | OpKind::Reshape | OpKind::Broadcast
        );
        if !pure || o.results.iter().any(|r| k.ty(*r).numel() != 1) {
            return None;
        }
        if take.insert(i) {
            work.extend(o.args.iter().copied());
        }
    }
    let mut idx: Vec<usize> = take.into_iter().collect();
    idx.sort_unstable();
    Some(idx)
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
            let ring = self.alloc(wgmma::ring_bytes(&g) as usize);
            let bars = self.alloc(16 * stages as usize);
            let at = self.smem_addr(bars, None, opc_ir::DType::F32);
            self.init_ring_barriers(at, stages, 128 * (g.m as u32 / 64), 0);
            let count = self.p.mov(Kind::R, 0);
            let ahead = self.p.mov(Kind::R, 0);
            self.rings.insert(id, Ring { ring, bars, count, ahead });
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

    /// Producer, after this program's copies: issue the first `min(stages, trips)` k-blocks of
    /// the next program (global iterations from `next`), which the consumers' epilogue then
    /// overlaps, and record how many in `r.ahead`; without a next program, or when its bounds
    /// are not scalar functions of the program ([`next_program_slice`]), nothing.
    pub(super) fn run_ahead(&mut self, op: &Op, g: &GemmLoop, t: &Tma, r: Ring, next: Reg) -> Result<()> {
        self.p.ins(format!("mov.b32 {}, 0", r.ahead));
        let Some(slice) = next_program_slice(self.k, op, g) else { return Ok(()) };
        let w = self.walk.as_ref().expect("a persistent walk");
        let (v, ctas, grid, pid) = (w.v, w.ctas, w.grid, w.pid);
        let skip = self.p.label();
        let vn = self.p.op(Kind::R, "add.u32", &[&v, &ctas]);
        let g01 = self.p.op(Kind::R, "mul.lo.u32", &[&grid[0], &grid[1]]);
        let total = self.p.op(Kind::R, "mul.lo.u32", &[&g01, &grid[2]]);
        let none = self.p.op(Kind::P, "setp.ge.u32", &[&vn, &total]);
        self.p.ins(format!("@{none} bra {skip}"));
        let q = self.p.op(Kind::R, "div.u32", &[&vn, &grid[0]]);
        let npid = [self.p.op(Kind::R, "rem.u32", &[&vn, &grid[0]]), self.p.op(Kind::R, "rem.u32", &[&q, &grid[1]]), self.p.op(Kind::R, "div.u32", &[&q, &grid[1]])];
        // the slice again, as the next program computes it
        let results: Vec<opc_ir::ValueId> = slice.iter().flat_map(|&i| self.k.body.ops[i].results.clone()).collect();
        let saved: Vec<Option<Repr>> = results.iter().map(|r| self.reprs[r.0 as usize].clone()).collect();
        self.walk.as_mut().expect("a persistent walk").pid = npid;
        let k = self.k;
        for &i in &slice {
            self.relower(&k.body.ops[i])?;
        }
        let [lo, hi, step] = [0, 1, 2].map(|i| self.uniform(op.args[i]).expect("loop bounds are scalars"));
        let bad = self.p.op(Kind::P, "setp.le.s32", &[&step, &0]);
        self.p.ins(format!("@{bad} bra {skip}"));
        let lr = self.trips(lo, hi, step);
        let n = self.p.op(Kind::R, "min.u32", &[&lr.trips, &t.stages]);
        let (top, done) = (self.p.label(), self.p.label());
        let j = self.p.mov(Kind::R, 0);
        self.p.place(&top);
        let fin = self.p.op(Kind::P, "setp.ge.u32", &[&j, &n]);
        self.p.ins(format!("@{fin} bra {done}"));
        let gi = self.p.op(Kind::R, "add.u32", &[&next, &j]);
        let iv = self.iv_at(&lr, j);
        self.issue_kblock(&op.regions[0], g, t, gi, iv)?;
        self.p.ins(format!("add.u32 {j}, {j}, 1"));
        self.p.ins(format!("bra {top}"));
        self.p.place(&done);
        self.p.ins(format!("mov.b32 {}, {n}", r.ahead));
        self.walk.as_mut().expect("a persistent walk").pid = pid;
        for (r, s) in results.iter().zip(saved) {
            self.reprs[r.0 as usize] = s;
        }
        self.p.place(&skip);
        Ok(())
    }

    /// Close the program walk: a CTA barrier, then the next program.
    pub(super) fn persistent_end(&mut self) {
        let w = self.walk.take().expect("persistent_begin ran");
        // the rings' barriers stay live across the whole walk
        for r in self.rings.values().copied().collect::<Vec<_>>() {
            self.buf_off(r.ring);
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
