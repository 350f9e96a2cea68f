//! The `sm_90a` GEMM mainloop: TMA loads completing on mbarriers, `wgmma.mma_async` on
//! shared-memory descriptors, one producer warpgroup and `BM/64` consumer warpgroups.
//!
//! **Roles.** Warpgroup `w < C = BM/64` is consumer `w`: it owns output rows `64w..64w+64`
//! and all `BN` columns in `BN/2` f32 registers per thread (the `wgmma` D fragment, PTX ISA
//! §9.7.15.5.1.1: register `i` of lane `l` of warp `v` is row `16v + l/4 + 8·((i/2)%2)`,
//! column `8·(i/4) + 2·(l%4) + i%2`). Warpgroup `C` is the producer: one elected thread issues
//! the TMA copies. Threads past `128·(C+1)` (when the rest of the kernel wants more) idle.
//!
//! **Ring.** `S = 4` stages (fewer when shared memory runs out) of `A` then `B`, each stage
//! 1024-byte aligned (the 128-byte swizzle pattern repeats every 1024 bytes, so every atom
//! starts on its pattern boundary and the descriptor base offset is 0, §9.7.15.5.1.2.2);
//! the dynamic shared window's alignment is not assumed: the ring base is aligned at run time.
//! Two mbarriers per stage (§9.7.13.15): `full[s]` (count 1: the producer's
//! `mbarrier.arrive.expect_tx` of the stage's bytes; the TMA copies complete the transaction
//! count) and `empty[s]` (count `128·C`: every consumer thread arrives once the `wgmma`s that
//! read the stage have completed). Iteration `it` uses stage `it % S` with phase parity
//! `(it / S) & 1`; the producer waits on `empty` with the opposite parity, which a fresh
//! barrier satisfies at once (the standard initial phase convention).
//!
//! **TMA** (§9.7.9.27 `cp.async.bulk.tensor`): `.2d.shared::cluster.global.tile.
//! mbarrier::complete_tx::bytes` with the tensor map passed by value as a kernel parameter
//! (`.param .align 64 .b8 [128]`, its generic address from `cvta.param`); box = one swizzle
//! column block (`span/2` elements × the tile's rows), so a tile is `cols / (span/2)` copies.
//! Out-of-bounds box elements are zero-filled by the hardware (the tensor map's fill mode),
//! which is the `load` semantics of out-of-range indices; coordinates may be negative.
//!
//! **wgmma** (§9.7.15.5): per `k16` step one `wgmma.mma_async.sync.aligned.m64nBNk16.f32`
//! with both operands from descriptors (`swizzle.rs`: K-major or MN-major, `imm-trans` 1 for
//! an MN-major operand), `wgmma.fence` before the first, then `commit_group`, and
//! `wait_group 1`: the batch of the previous iteration is complete, so its stage is released
//! while the current batch runs. Shared memory written by the generic proxy earlier in the
//! kernel (the plan reuses space) is fenced with `fence.proxy.async.shared::cta` before the
//! first TMA write.

use opc_ir::{DType, Kernel, Op, OpKind};

use super::emit::{Kind, Reg};
use super::gemm::{match_gemm, GemmLoop, Operand};
use super::lower::{Lower, Repr, View};
use super::{swizzle, Features, TensorMap};
use crate::Result;

/// Stages of the ring.
const STAGES: u32 = 4;

/// Whether a GEMM loop fits this mainloop: 16-bit float operands (integer loops take the
/// `mma.sync` mainloop of `gemm.rs` on every arch), whole 64-row consumer slices, N a multiple of 8
/// up to 256, operands in the swizzled layouts.
pub(super) fn eligible(g: &GemmLoop) -> bool {
    g.dtype.is_float() && g.m.is_multiple_of(64) && g.m <= 256 && g.n.is_multiple_of(8) && (8..=256).contains(&g.n) && g.k.is_multiple_of(16) && g.a.rows <= 256 && g.b.rows <= 256
}

/// Stages of `g`'s ring: [`STAGES`], fewer while the ring and the output buffer would pass
/// 200 KB.
pub(super) fn ring_stages(g: &GemmLoop) -> u32 {
    let stage = (g.a.bytes() + g.b.bytes()).next_multiple_of(1024);
    let mut stages = STAGES;
    while stages > 2 && stages * stage + 1024 + (g.m * g.n * 4) as u32 > 200 * 1024 {
        stages -= 1;
    }
    stages
}

/// Bytes of `g`'s ring: its stages and 1024 bytes to align it at run time.
pub(super) fn ring_bytes(g: &GemmLoop) -> u32 {
    ring_stages(g) * (g.a.bytes() + g.b.bytes()).next_multiple_of(1024) + 1024
}

/// What the producer's TMA issue needs: barriers, the aligned ring, its stages, the maps.
pub(super) struct Tma {
    pub bar_base: Reg,
    pub ring_base: Reg,
    pub stages: u32,
    pub maps: [Reg; 2],
}

/// Threads the widest eligible GEMM loop of `k` needs (0 when none).
pub(super) fn threads_needed(k: &Kernel, feats: Features) -> u32 {
    if !feats.wgmma {
        return 0;
    }
    let mut t = 0;
    opc_ir::walk_ops(&k.body, &mut |op| {
        if op.kind == OpKind::For {
            if let Some(g) = match_gemm(k, op, feats) {
                if eligible(&g) {
                    t = t.max(128 * (g.m as u32 / 64 + 1));
                }
            }
        }
    });
    t
}

/// `.f32` accumulator registers of a `m64nNk16` fragment, as the operand list.
fn reg_list(r: &[Reg]) -> String {
    r.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")
}

impl Lower<'_> {
    pub(super) fn lower_wgmma_loop(&mut self, op: &Op, g: &GemmLoop, lo: Reg, hi: Reg, step: Reg) -> Result<()> {
        let body = &op.regions[0];
        let c = (g.m / 64) as u32;
        let ab = g.a.bytes();
        let stage = (ab + g.b.bytes()).next_multiple_of(1024);
        // persistent CTAs: barriers set up once, iteration count running across programs
        let ring_state = self.rings.get(&op.results[0].0).copied();
        let stages = ring_stages(g);
        self.used_mma = true;
        self.tensor_cores = Some("wgmma.mma_async.m64nNk16 + TMA, warp-specialized");
        self.p.comment(format!("warp-specialized GEMM loop: {}x{}x{} {:?}, TMA {stages} stages, wgmma, {c} consumer warpgroups", g.m, g.n, g.k, g.dtype));
        let init = self.acc_src(op.args[3]);
        let (ring, bars) = match ring_state {
            Some(r) => (r.ring, r.bars),
            None => (self.alloc(ring_bytes(g) as usize), self.alloc(16 * stages as usize)),
        };
        let out_pitch = if g.n.is_multiple_of(32) { g.n + 4 } else { g.n };
        let out = self.alloc(g.m * out_pitch * 4);
        self.hazard(init.as_ref().is_some_and(|s| matches!(s, super::lower::Src::V(..))), true, Some(g.a.tensor), None);
        self.hazard(false, false, Some(g.b.tensor), None);
        let raw = self.smem_addr(ring, None, DType::F32);
        let rb = self.p.op(Kind::R, "add.u32", &[&raw, &1023]);
        let ring_base = self.p.op(Kind::R, "and.b32", &[&rb, &!1023u32]);
        let bar_base = self.smem_addr(bars, None, DType::F32);
        let lr = self.trips(lo, hi, step);
        let maps = [self.tensor_map(&g.a, "a"), self.tensor_map(&g.b, "b")];

        // ---- barriers: thread 0 initializes, everyone syncs; TMA may now overwrite smem
        let base_it = match ring_state {
            Some(r) => {
                self.p.ins("fence.proxy.async.shared::cta");
                self.barrier();
                r.count
            }
            None => {
                self.init_ring_barriers(bar_base, stages, 128 * c, 0);
                self.p.mov(Kind::R, 0)
            }
        };

        let wg = self.p.op(Kind::R, "shr.u32", &[&self.tid, &7]);
        let (pend, cons, cend) = (self.p.label(), self.p.label(), self.p.label());
        // ---- producer: thread 128·C
        let isp = self.p.op(Kind::P, "setp.eq.u32", &[&self.tid, &(128 * c)]);
        self.p.ins(format!("@!{isp} bra {cons}"));
        let tma = Tma { bar_base, ring_base, stages, maps };
        {
            // persistent: the k-blocks the previous program's run-ahead issued are skipped
            let it = match ring_state {
                Some(r) => self.p.mov(Kind::R, r.ahead),
                None => self.p.mov(Kind::R, 0),
            };
            let (top, pdone) = (self.p.label(), self.p.label());
            self.p.place(&top);
            let fin = self.p.op(Kind::P, "setp.ge.u32", &[&it, &lr.trips]);
            self.p.ins(format!("@{fin} bra {pdone}"));
            let gi = self.p.op(Kind::R, "add.u32", &[&it, &base_it]);
            let iv = self.iv_at(&lr, it);
            self.issue_kblock(body, g, &tma, gi, iv)?;
            self.p.ins(format!("add.u32 {it}, {it}, 1"));
            self.p.ins(format!("bra {top}"));
            self.p.place(&pdone);
            if let Some(r) = ring_state {
                let next = self.p.op(Kind::R, "add.u32", &[&base_it, &lr.trips]);
                self.run_ahead(op, g, &tma, r, next)?;
            }
            self.p.ins(format!("bra {pend}"));
        }
        // ---- consumers: warpgroups 0..C
        self.p.place(&cons);
        let isc = self.p.op(Kind::P, "setp.lt.u32", &[&wg, &c]);
        self.p.ins(format!("@!{isc} bra {pend}"));
        let lt = self.p.op(Kind::R, "and.b32", &[&self.tid, &127]);
        let wv = self.p.op(Kind::R, "shr.u32", &[&lt, &5]);
        let lane = self.p.op(Kind::R, "and.b32", &[&lt, &31]);
        let gq = self.p.op(Kind::R, "shr.u32", &[&lane, &2]);
        let t4 = self.p.op(Kind::R, "and.b32", &[&lane, &3]);
        let row0 = self.p.op(Kind::R, "shl.b32", &[&wg, &6]);
        let row0 = self.p.op(Kind::R, "mad.lo.u32", &[&wv, &16, &row0]);
        let row0 = self.p.op(Kind::R, "add.u32", &[&row0, &gq]);
        let row8 = self.p.op(Kind::R, "add.u32", &[&row0, &8]);
        let col0 = self.p.op(Kind::R, "shl.b32", &[&t4, &1]);
        let mut acc = vec![];
        let mut at = vec![];
        for i in 0..g.n / 2 {
            let (j, q) = (i / 4, i % 4);
            let r = if q / 2 == 0 { row0 } else { row8 };
            let cc = self.p.op(Kind::R, "add.u32", &[&col0, &(8 * j + q % 2)]);
            acc.push(self.acc_init(&init, r, cc, g.n, Kind::F));
            at.push((r, cc));
        }
        // descriptor pieces: A's slice of this warpgroup, per k16 step
        let a_fields = swizzle::desc_fields(g.a.rows as u32, g.a.cols as u32, g.a_kmajor());
        let b_fields = swizzle::desc_fields(g.b.rows as u32, g.b.cols as u32, g.b_kmajor());
        let a_slice = if g.a_kmajor() {
            // rows 64w: 64·w·span bytes (a whole number of atoms)
            self.p.op(Kind::R, "mul.lo.u32", &[&wg, &(64 * swizzle::span(g.a.cols as u32))])
        } else {
            // columns 64w: column block w (span 128, 64 elements per block)
            self.p.op(Kind::R, "mul.lo.u32", &[&wg, &(g.a.rows as u32 * 128)])
        };
        let ab_ty = if g.dtype == DType::F16 { "f16" } else { "bf16" };
        let one = self.p.op(Kind::P, "setp.eq.u32", &[&wg, &wg]);
        let it = self.p.mov(Kind::R, 0);
        let (top, done) = (self.p.label(), self.p.label());
        self.p.place(&top);
        let fin = self.p.op(Kind::P, "setp.ge.u32", &[&it, &lr.trips]);
        self.p.ins(format!("@{fin} bra {done}"));
        let gi = self.p.op(Kind::R, "add.u32", &[&it, &base_it]);
        let s = self.p.op(Kind::R, "rem.u32", &[&gi, &stages]);
        let ph = self.p.op(Kind::R, "div.u32", &[&gi, &stages]);
        let ph = self.p.op(Kind::R, "and.b32", &[&ph, &1]);
        let fb = self.p.op(Kind::R, "mad.lo.u32", &[&s, &8, &bar_base]);
        self.wait_parity(fb, ph);
        let sb = self.p.op(Kind::R, "mad.lo.u32", &[&s, &stage, &ring_base]);
        let a0 = self.p.op(Kind::R, "add.u32", &[&sb, &a_slice]);
        let b0 = self.p.op(Kind::R, "add.u32", &[&sb, &ab]);
        self.p.ins("wgmma.fence.sync.aligned");
        let regs = reg_list(&acc);
        for ks in 0..(g.k / 16) as u32 {
            let da = self.descriptor(a0, swizzle::k16_off(g.a.rows as u32, g.a.cols as u32, g.a_kmajor(), ks), a_fields);
            let db = self.descriptor(b0, swizzle::k16_off(g.b.rows as u32, g.b.cols as u32, g.b_kmajor(), ks), b_fields);
            self.p.ins(format!(
                "wgmma.mma_async.sync.aligned.m64n{}k16.f32.{ab_ty}.{ab_ty} {{{regs}}}, {da}, {db}, {one}, 1, 1, {}, {}",
                g.n,
                !g.a_kmajor() as u8,
                !g.b_kmajor() as u8
            ));
        }
        self.p.ins("wgmma.commit_group.sync.aligned");
        self.p.ins("wgmma.wait_group.sync.aligned 1");
        // the previous iteration's batch is complete: release its stage
        let first = self.p.op(Kind::P, "setp.eq.u32", &[&it, &0]);
        let prev = self.p.op(Kind::R, "add.u32", &[&gi, &(stages - 1)]);
        let ps = self.p.op(Kind::R, "rem.u32", &[&prev, &stages]);
        let eb = self.p.op(Kind::R, "mad.lo.u32", &[&ps, &8, &bar_base]);
        let eb = self.p.op(Kind::R, "add.u32", &[&eb, &(8 * stages)]);
        self.p.ins(format!("@!{first} mbarrier.arrive.shared::cta.b64 _, [{eb}]"));
        self.p.ins(format!("add.u32 {it}, {it}, 1"));
        self.p.ins(format!("bra {top}"));
        self.p.place(&done);
        self.p.ins("wgmma.wait_group.sync.aligned 0");
        if ring_state.is_some() {
            // the ring outlives the program: release the last stage too
            let any = self.p.op(Kind::P, "setp.ne.u32", &[&lr.trips, &0]);
            let last = self.p.op(Kind::R, "add.u32", &[&base_it, &lr.trips]);
            let last = self.p.op(Kind::R, "add.u32", &[&last, &(stages - 1)]);
            let ls = self.p.op(Kind::R, "rem.u32", &[&last, &stages]);
            let eb = self.p.op(Kind::R, "mad.lo.u32", &[&ls, &8, &bar_base]);
            let eb = self.p.op(Kind::R, "add.u32", &[&eb, &(8 * stages)]);
            self.p.ins(format!("@{any} mbarrier.arrive.shared::cta.b64 _, [{eb}]"));
        }
        let obase = self.smem_addr(out, None, DType::F32);
        for (i, (r, cc)) in at.iter().enumerate().step_by(2) {
            let e = self.p.op(Kind::R, "mad.lo.u32", &[r, &out_pitch, cc]);
            let a = self.p.op(Kind::R, "mad.lo.u32", &[&e, &4, &obase]);
            self.p.ins(format!("st.shared.v2.f32 [{a}], {{{}, {}}}", acc[i], acc[i + 1]));
        }
        self.p.ins(format!("bra {cend}"));
        self.p.place(&pend);
        self.p.place(&cend);
        self.barrier();
        if let Some(r) = ring_state {
            // every thread keeps the running count (the producer's and consumers' agree)
            self.p.ins(format!("add.u32 {}, {}, {}", r.count, r.count, lr.trips));
        }
        self.hz.smem_w = true;
        self.hz.gl_r.insert(g.a.tensor);
        self.hz.gl_r.insert(g.b.tensor);
        self.set(op.results[0], Repr::View(View { buf: out, strides: vec![out_pitch as i64, 1] }));
        Ok(())
    }

    /// Producer: wait for the stage of global iteration `gi` to be free, expect its bytes and
    /// issue the TMA copies of A and B for loop value `iv`.
    pub(super) fn issue_kblock(&mut self, body: &opc_ir::Block, g: &GemmLoop, t: &Tma, gi: Reg, iv: Reg) -> Result<()> {
        let ab = g.a.bytes();
        let stage = (ab + g.b.bytes()).next_multiple_of(1024);
        let s = self.p.op(Kind::R, "rem.u32", &[&gi, &t.stages]);
        let ph = self.p.op(Kind::R, "div.u32", &[&gi, &t.stages]);
        let ph = self.p.op(Kind::R, "and.b32", &[&ph, &1]);
        let ph1 = self.p.op(Kind::R, "xor.b32", &[&ph, &1]);
        let eb = self.p.op(Kind::R, "mad.lo.u32", &[&s, &8, &t.bar_base]);
        let eb = self.p.op(Kind::R, "add.u32", &[&eb, &(8 * t.stages)]);
        self.wait_parity(eb, ph1);
        let fb = self.p.op(Kind::R, "mad.lo.u32", &[&s, &8, &t.bar_base]);
        self.p.ins(format!("mbarrier.arrive.expect_tx.shared::cta.b64 _, [{fb}], {}", g.a.bytes() + g.b.bytes()));
        let dst = self.p.op(Kind::R, "mad.lo.u32", &[&s, &stage, &t.ring_base]);
        for (o, (map, off)) in [&g.a, &g.b].into_iter().zip([(t.maps[0], 0u32), (t.maps[1], ab)]) {
            let st = self.starts_at(body, g, o, iv)?;
            let span = swizzle::span(o.cols as u32);
            for j in 0..(o.cols as u32 * 2 / span) {
                let c0 = self.p.op(Kind::R, "add.s32", &[&st[1], &(j * span / 2)]);
                let d = self.p.op(Kind::R, "add.u32", &[&dst, &(off + j * o.rows as u32 * span)]);
                self.p.ins(format!(
                    "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [{d}], [{map}, {{{c0}, {}}}], [{fb}]",
                    st[0]
                ));
            }
        }
        Ok(())
    }

    /// Thread 0 initializes `stages` full barriers (count 1: the producer's `expect_tx`) and
    /// `stages` empty barriers (count `empty_count`: every consumer thread) at `bar_base`, and
    /// `extra_full` more sets of `stages` full barriers after them (FA3's V barriers), then
    /// every thread fences generic-proxy shared writes against the async proxy (TMA, `wgmma`)
    /// and the CTA syncs.
    pub(super) fn init_ring_barriers(&mut self, bar_base: Reg, stages: u32, empty_count: u32, extra_full: u32) {
        let t0 = self.p.op(Kind::P, "setp.eq.u32", &[&self.tid, &0]);
        let skip = self.p.label();
        self.p.ins(format!("@!{t0} bra {skip}"));
        for s in 0..stages {
            let f = self.p.op(Kind::R, "add.u32", &[&bar_base, &(8 * s)]);
            self.p.ins(format!("mbarrier.init.shared::cta.b64 [{f}], 1"));
            let e = self.p.op(Kind::R, "add.u32", &[&bar_base, &(8 * (stages + s))]);
            self.p.ins(format!("mbarrier.init.shared::cta.b64 [{e}], {empty_count}"));
            for x in 0..extra_full {
                let f = self.p.op(Kind::R, "add.u32", &[&bar_base, &(8 * ((2 + x) * stages + s))]);
                self.p.ins(format!("mbarrier.init.shared::cta.b64 [{f}], 1"));
            }
        }
        self.p.ins("fence.mbarrier_init.release.cluster");
        self.p.place(&skip);
        self.p.ins("fence.proxy.async.shared::cta");
        self.barrier();
    }

    /// Spin on `mbarrier.try_wait.parity` until the phase with parity `ph` of the barrier at
    /// shared address `bar` has completed.
    pub(super) fn wait_parity(&mut self, bar: Reg, ph: Reg) {
        let l = self.p.label();
        self.p.place(&l);
        let ok = self.p.reg(Kind::P);
        self.p.ins(format!("mbarrier.try_wait.parity.shared::cta.b64 {ok}, [{bar}], {ph}"));
        self.p.ins(format!("@!{ok} bra {l}"));
    }

    /// A 64-bit descriptor: `fields | encode(addr + off)`.
    pub(super) fn descriptor(&mut self, addr: Reg, off: u32, fields: u64) -> Reg {
        let a = self.p.op(Kind::R, "add.u32", &[&addr, &off]);
        let a = self.p.op(Kind::R, "and.b32", &[&a, &0x3FFFF]);
        let a = self.p.op(Kind::R, "shr.u32", &[&a, &4]);
        let w = self.p.op(Kind::D, "cvt.u64.u32", &[&a]);
        self.p.op(Kind::D, "or.b64", &[&w, &format!("{fields:#x}")])
    }

    /// Declare the tensor map of operand `o` (a `.param` the renderer adds) and return a
    /// register holding its generic address.
    fn tensor_map(&mut self, o: &Operand, which: &str) -> Reg {
        let span = swizzle::span(o.cols as u32);
        let name = format!("p_{}_tmap_{which}", self.k.params[o.tensor].name);
        self.tensor_map_param(TensorMap { param: o.tensor, name, box_cols: span / 2, box_rows: o.rows as u32, swizzle: span, outer: false })
    }

    /// Declare tensor map `m` (once per name) and return a register holding the generic
    /// address of its `.param`.
    pub(super) fn tensor_map_param(&mut self, m: TensorMap) -> Reg {
        let name = m.name.clone();
        if !self.tmaps.iter().any(|x| x.name == name) {
            self.tmaps.push(m);
        }
        let p = self.p.mov(Kind::D, &name);
        self.p.op(Kind::D, "cvta.param.u64", &[&p])
    }
}
