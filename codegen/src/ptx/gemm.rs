//! Pipelined GEMM loops: a `for` whose body only loads two tiles and accumulates their `dot`
//! into the one carried value (`matmul`, `linear`, the grouped GEMM's inner loop, `int4_gemm`).
//!
//! **Recognized form** ([`match_gemm`]): body args `[iv, acc]`, `yield dot(A, B, acc)` where
//! `A` is `load(x[i0, i1])` or `trans(load(..))` (same for `B`), 2-D tensors of f16/bf16 or of
//! i8/u8/i4 read K-contiguous (A as loaded `[M, K]`, B as `trans` of a loaded `[N, K]`: the
//! integer `ldmatrix` reads cannot transpose bytes) with a K tile of whole 16-byte chunks, no
//! mask, every index tile of the form `scalar + const + arange(n)` (the scalar may depend on
//! `iv` through scalar ops of the body), the loaded tiles used by the `dot` only, and every
//! other op of the body pure. Out-of-range indices read 0 (the `load` semantics), which is
//! exactly the zero fill of `cp.async` with `src-size` 0 and of TMA. Anything else takes the
//! general lowering, op by op.
//!
//! **What replaces the loop.** The two tiles are staged in a ring of `S` shared-memory stages
//! laid out by `swizzle.rs` (stored as loaded: row = the first index, column = the tensor's
//! contiguous dim); the accumulator lives in MMA fragment registers for the whole loop and is
//! written once, after it, to an f32 buffer that becomes the loop's result (a shared view, as
//! every other `dot` result), so the epilogue (bias, cast, store) is lowered as usual.
//! - `sm_80` mainloop (this file): `cp.async.cg.shared.global` 16-byte copies, `S = 3` stages,
//!   `cp.async.commit_group` / `wait_group S-2` (PTX ISA §9.7.9.25), one `bar.sync` per
//!   iteration; a 16-byte chunk that is not wholly in bounds or not 16-byte aligned (ragged
//!   edge, odd row length) is copied element by element under per-element predicates, zeros
//!   elsewhere. Fragments come from `ldmatrix{.trans}` at swizzled addresses and feed
//!   `mma.sync.m16n8k16`; warps tile the output `WM × WN`.
//! - Integer loops take the same mainloop on every arch (`wgmma` has no 4-bit type; 8-bit
//!   `wgmma` is not used): a stage row is the tile row's packed bytes as they lie in global
//!   memory (i4: two codes per byte, element `2j` in the low nibble), copied in 16-byte chunks
//!   by `chunk.rs` (which also handles 4-bit rows that start mid-byte, odd K), padded with
//!   zeros, written once before the prologue, to whole `m16n8k32` / `m16n8k64` instructions
//!   (32 bytes of K: [`int_stage_row`]); the swizzle and `ldmatrix` addressing count the row in
//!   16-bit units, so one instruction's K is one k16 step of the 16-bit path, and the
//!   fragments are exactly the ISA's (proved in `frag.rs` by a model of the stages). The i32
//!   accumulators stay in registers; products and sums are exact, so the result is
//!   bit-identical to the interpreter.
//! - `sm_90a` mainloop (`wgmma.rs`): TMA + mbarriers + `wgmma`, warp-specialized (f16/bf16).

use std::collections::HashMap;

use opc_ir::{BinaryOp, DType, Kernel, Op, OpKind, Scalar, ValueId};

use super::chunk::ChunkSrc;
use super::dot::{int_mma, int_ptx_type};
use super::emit::{fimm, Kind, Reg};
use super::frag::{chunk_elems, int_stage_row};
use super::lower::{Lower, Repr, Src, View};
use super::swizzle;
use super::Features;
use crate::Result;

/// `scalar + off + arange(n)`.
#[derive(Clone, Debug)]
pub(super) struct Start {
    pub scalar: Option<ValueId>,
    pub off: i64,
}

/// One staged operand: a 2-D load, used as is or transposed.
#[derive(Clone, Debug)]
pub(super) struct Operand {
    pub tensor: usize,
    /// The dot reads the transpose of the loaded tile.
    pub trans: bool,
    pub starts: [Start; 2],
    /// Loaded (= stored) tile shape: rows, columns (the contiguous dim).
    pub rows: usize,
    pub cols: usize,
    /// Stored row width in 16-bit units: `cols` for f16/bf16, the packed bytes of a row over
    /// two for integers (padded to whole `mma` instructions, [`int_stage_row`]).
    pub scols: usize,
}

impl Operand {
    pub fn bytes(&self) -> u32 {
        swizzle::tile_bytes(self.rows as u32, self.scols as u32)
    }
}

/// A recognized GEMM loop.
#[derive(Clone, Debug)]
pub(super) struct GemmLoop {
    pub a: Operand,
    pub b: Operand,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub dtype: DType,
    /// The body's scalar ops the index starts depend on (body order).
    pub slice: Vec<usize>,
}

impl GemmLoop {
    /// A is K-major when stored untransposed ([M][K]); B when stored transposed ([N][K]).
    pub fn a_kmajor(&self) -> bool {
        !self.a.trans
    }
    pub fn b_kmajor(&self) -> bool {
        self.b.trans
    }
}

pub(super) fn defs(k: &Kernel) -> HashMap<u32, Op> {
    let mut d = HashMap::new();
    opc_ir::walk_ops(&k.body, &mut |op| {
        for r in &op.results {
            d.insert(r.0, op.clone());
        }
    });
    d
}

/// `v = scalar + off + arange(n)`?
pub(super) fn start_of(k: &Kernel, defs: &HashMap<u32, Op>, v: ValueId) -> Option<Start> {
    let op = defs.get(&v.0)?;
    match &op.kind {
        OpKind::Arange => Some(Start { scalar: None, off: 0 }),
        OpKind::Binary(BinaryOp::Add) => {
            let splat = |x: ValueId| -> Option<Start> {
                let o = defs.get(&x.0)?;
                match &o.kind {
                    OpKind::Const(Scalar::Int(c)) => Some(Start { scalar: None, off: *c }),
                    OpKind::Broadcast if k.ty(o.args[0]).numel() == 1 => match defs.get(&o.args[0].0).map(|d| &d.kind) {
                        Some(OpKind::Const(Scalar::Int(c))) => Some(Start { scalar: None, off: *c }),
                        _ => Some(Start { scalar: Some(o.args[0]), off: 0 }),
                    },
                    _ => None,
                }
            };
            let (x, y) = (op.args[0], op.args[1]);
            let (s, t) = match (splat(x), start_of(k, defs, y)) {
                (Some(s), Some(t)) => (s, t),
                _ => (splat(y)?, start_of(k, defs, x)?),
            };
            if s.scalar.is_some() && t.scalar.is_some() {
                return None;
            }
            Some(Start { scalar: s.scalar.or(t.scalar), off: s.off + t.off })
        }
        _ => None,
    }
}

/// Ops that compute a uniform scalar without side effects (safe to evaluate again).
pub(super) fn scalar_pure(k: &Kernel, op: &Op) -> bool {
    op.results.iter().all(|r| k.ty(*r).numel() == 1) && op.kind.is_cheap_pure()
}

/// Recognize a GEMM loop (see the module docs); `None` means the general lowering.
pub(super) fn match_gemm(k: &Kernel, for_op: &Op, feats: Features) -> Option<GemmLoop> {
    if !feats.pipeline {
        return None;
    }
    let body = &for_op.regions[0];
    if body.args.len() != 2 || for_op.args.len() != 4 {
        return None;
    }
    let (iv, acc) = (body.args[0], body.args[1]);
    let y = body.ops.last()?;
    if y.kind != OpKind::Yield || y.args.len() != 1 {
        return None;
    }
    let dot = body.ops.iter().find(|o| o.results.first() == Some(&y.args[0]))?;
    if dot.kind != OpKind::Dot || dot.args.len() != 3 || dot.args[2] != acc || !super::dot::mma_eligible(k, dot) {
        return None;
    }
    let dtype = k.ty(dot.args[0]).dtype;
    let int = int_mma(dtype);
    let (m, kk, n) = (k.ty(dot.args[0]).shape[0], k.ty(dot.args[0]).shape[1], k.ty(dot.args[1]).shape[1]);
    let dm = defs(k);
    // uses of every value inside the body
    let mut uses: HashMap<u32, usize> = HashMap::new();
    for o in &body.ops {
        for a in &o.args {
            *uses.entry(a.0).or_default() += 1;
        }
    }
    let in_body: HashMap<u32, usize> = body.ops.iter().enumerate().flat_map(|(i, o)| o.results.iter().map(move |r| (r.0, i))).collect();
    let mut special = vec![];
    let operand = |v: ValueId, special: &mut Vec<usize>| -> Option<Operand> {
        let mut v = v;
        let mut trans = false;
        let o = &body.ops[*in_body.get(&v.0)?];
        if let OpKind::Permute(p) = &o.kind {
            if p != &[1, 0] || uses.get(&v.0) != Some(&1) {
                return None;
            }
            special.push(in_body[&v.0]);
            trans = true;
            v = o.args[0];
        }
        let li = *in_body.get(&v.0)?;
        let ld = &body.ops[li];
        let OpKind::Load { tensor, has_mask: false, has_other: false } = ld.kind else { return None };
        if ld.args.len() != 2 || uses.get(&v.0) != Some(&1) || k.tensor_dims(tensor).map(|d| d.len()) != Some(2) {
            return None;
        }
        if ld.args.iter().any(|a| k.ty(*a).shape.len() != 1) {
            return None;
        }
        special.push(li);
        let s0 = start_of(k, &dm, ld.args[0])?;
        let s1 = start_of(k, &dm, ld.args[1])?;
        let sh = &k.ty(v).shape;
        let scols = match int {
            None => sh[1],
            Some(im) => int_stage_row(im, sh[1] as u32)?.1 as usize,
        };
        if k.ty(v).dtype != dtype || !swizzle::tile_ok(sh[0] as u32, scols as u32) {
            return None;
        }
        Some(Operand { tensor, trans, starts: [s0, s1], rows: sh[0], cols: sh[1], scols })
    };
    let a = operand(dot.args[0], &mut special)?;
    let b = operand(dot.args[1], &mut special)?;
    // integer operands are read K-contiguous only (`ldmatrix.trans` would swap bytes)
    if int.is_some() && (a.trans || !b.trans) {
        return None;
    }
    // the index starts' scalars: defined outside the body, or by pure scalar ops of the body
    let mut slice = vec![];
    let mut todo: Vec<ValueId> = [&a, &b].iter().flat_map(|o| o.starts.iter().filter_map(|s| s.scalar)).collect();
    while let Some(v) = todo.pop() {
        if v == iv {
            continue;
        }
        if let Some(&i) = in_body.get(&v.0) {
            if !scalar_pure(k, &body.ops[i]) {
                return None;
            }
            if !slice.contains(&i) {
                slice.push(i);
                todo.extend(body.ops[i].args.iter().copied());
            }
        }
    }
    slice.sort();
    // every other op of the body must be pure (its results feed only the replaced loads)
    for o in &body.ops {
        if matches!(o.kind, OpKind::Load { .. } | OpKind::Store { .. } | OpKind::AtomicAdd { .. } | OpKind::For | OpKind::If | OpKind::Dot) && o.results.first() != Some(&dot.results[0]) {
            let i = body.ops.iter().position(|x| std::ptr::eq(x, o)).expect("in the body");
            if !special.contains(&i) {
                return None;
            }
        }
    }
    Some(GemmLoop { a, b, m, n, k: kk, dtype, slice })
}

/// Per-loop registers shared by both mainloops.
pub(super) struct LoopRegs {
    /// Trip count (u32).
    pub trips: Reg,
    pub lo: Reg,
    pub step: Reg,
}

impl Lower<'_> {
    /// The index starts (row, column; i32 registers) of operand `o` at loop value `iv`.
    pub(super) fn starts_at(&mut self, body: &opc_ir::Block, g: &GemmLoop, o: &Operand, iv: Reg) -> Result<[Reg; 2]> {
        self.tile_starts_at(body, &g.slice, &o.starts, iv)
    }

    /// The index starts `starts` (i32 registers) at loop value `iv`, after lowering the body's
    /// scalar ops `slice` again with the loop variable bound to `iv`.
    pub(super) fn tile_starts_at(&mut self, body: &opc_ir::Block, slice: &[usize], starts: &[Start; 2], iv: Reg) -> Result<[Reg; 2]> {
        let var = body.args[0];
        let saved = self.reprs[var.0 as usize].clone();
        self.reprs[var.0 as usize] = Some(Repr::Uniform(iv));
        for &i in slice {
            self.relower(&body.ops[i])?;
        }
        let mut out = [iv; 2];
        for (d, s) in starts.iter().enumerate() {
            let base = match s.scalar {
                Some(v) => self.uniform(v).expect("index scalars are uniform"),
                None => self.p.mov(Kind::R, 0),
            };
            out[d] = self.p.op(Kind::R, "add.s32", &[&base, &s.off]);
        }
        self.reprs[var.0 as usize] = saved;
        Ok(out)
    }

    /// Trip count of `for lo..hi step step` (step > 0 was checked): `max(0, ceil((hi-lo)/step))`.
    pub(super) fn trips(&mut self, lo: Reg, hi: Reg, step: Reg) -> LoopRegs {
        let l64 = self.p.op(Kind::D, "cvt.s64.s32", &[&lo]);
        let h64 = self.p.op(Kind::D, "cvt.s64.s32", &[&hi]);
        let s64 = self.p.op(Kind::D, "cvt.s64.s32", &[&step]);
        let d = self.p.op(Kind::D, "sub.s64", &[&h64, &l64]);
        let d = self.p.op(Kind::D, "max.s64", &[&d, &0]);
        let d = self.p.op(Kind::D, "add.s64", &[&d, &s64]);
        let d = self.p.op(Kind::D, "sub.s64", &[&d, &1]);
        let t = self.p.op(Kind::D, "div.u64", &[&d, &s64]);
        let trips = self.p.op(Kind::R, "cvt.u32.u64", &[&t]);
        LoopRegs { trips, lo, step }
    }

    /// `lo + it·step` (i32).
    pub(super) fn iv_at(&mut self, lr: &LoopRegs, it: Reg) -> Reg {
        self.p.op(Kind::R, "mad.lo.s32", &[&it, &lr.step, &lr.lo])
    }

    /// Shared byte offset (u32) of stored element `(r, c)` of an `rows × cols` tile
    /// ([`swizzle::tile_off`] in PTX).
    pub(super) fn swz_off(&mut self, r: Reg, c: Reg, rows: usize, cols: usize) -> Reg {
        let s = swizzle::span(cols as u32);
        let per = s / 2;
        let blk = self.p.op(Kind::R, "shr.u32", &[&c, &per.trailing_zeros()]);
        let cc = self.p.op(Kind::R, "and.b32", &[&c, &(per - 1)]);
        let cb = self.p.op(Kind::R, "shl.b32", &[&cc, &1]);
        let o = self.p.op(Kind::R, "mad.lo.u32", &[&r, &s, &cb]);
        let x = self.p.op(Kind::R, "shr.u32", &[&o, &7]);
        let x = self.p.op(Kind::R, "and.b32", &[&x, &(s / 16 - 1)]);
        let x = self.p.op(Kind::R, "shl.b32", &[&x, &4]);
        let o = self.p.op(Kind::R, "xor.b32", &[&o, &x]);
        self.p.op(Kind::R, "mad.lo.u32", &[&blk, &(rows as u32 * s), &o])
    }

    /// The accumulator's initial value at output element (r, c) (u32 registers), in a fresh
    /// register of `kind` (f32 accumulators, or b32 for the `.s32` integer `mma`).
    pub(super) fn acc_init(&mut self, init: &Option<Src>, r: Reg, c: Reg, n: usize, kind: Kind) -> Reg {
        match init {
            None if kind == Kind::F => self.p.mov(kind, fimm(0.0)),
            None => self.p.mov(kind, 0),
            Some(Src::U(x)) => self.p.mov(kind, x),
            Some(s) => {
                let e = self.p.op(Kind::R, "mad.lo.u32", &[&r, &n, &c]);
                let x = self.read_at(s, e);
                self.p.mov(kind, x)
            }
        }
    }

    /// How the accumulator's initial value is read (a shared view, or a uniform).
    pub(super) fn acc_src(&mut self, init: ValueId) -> Option<Src> {
        Some(match self.view(init) {
            Some(w) => Src::V(w, self.shape(init), self.dtype(init)),
            None => self.src(init),
        })
    }

    pub(super) fn lower_gemm_loop(&mut self, op: &Op, g: &GemmLoop, lo: Reg, hi: Reg, step: Reg) -> Result<()> {
        // Scalars from outside the body that the index starts read are made uniform registers
        // here, where every thread runs: the producer evaluates the starts in a one-thread
        // branch, where a shared-memory read (and its barrier) must not happen.
        let body = &op.regions[0];
        let inside: std::collections::HashSet<u32> = body.args.iter().chain(body.ops.iter().flat_map(|o| o.results.iter())).map(|v| v.0).collect();
        let mut outside: Vec<ValueId> = g.slice.iter().flat_map(|&i| body.ops[i].args.iter().copied()).collect();
        outside.extend([&g.a, &g.b].iter().flat_map(|o| o.starts.iter().filter_map(|s| s.scalar)));
        for v in outside {
            if !inside.contains(&v.0) {
                let r = self.uniform(v).expect("index scalars are one-element values");
                self.reprs[v.0 as usize] = Some(Repr::Uniform(r));
            }
        }
        if self.feats.wgmma && super::wgmma::eligible(g) {
            return self.lower_wgmma_loop(op, g, lo, hi, step);
        }
        self.lower_cp_async_loop(op, g, lo, hi, step)
    }

    /// The `sm_80` mainloop (module docs).
    fn lower_cp_async_loop(&mut self, op: &Op, g: &GemmLoop, lo: Reg, hi: Reg, step: Reg) -> Result<()> {
        const S: usize = 3;
        self.used_mma = true;
        let int = int_mma(g.dtype);
        // the instruction, the accumulator register class and its shared-memory store type
        let (instr, kind, sty) = match int {
            None => {
                let ab = if g.dtype == DType::F16 { "f16" } else { "bf16" };
                (format!("mma.sync.aligned.m16n8k16.row.col.f32.{ab}.{ab}.f32"), Kind::F, "f32")
            }
            Some(im) => {
                let t = int_ptx_type(g.dtype);
                (format!("mma.sync.aligned.m16n8k{}.row.col.s32.{t}.{t}.s32", im.k()), Kind::R, "b32")
            }
        };
        self.tensor_cores = Some(match int.map(|im| im.bits) {
            None => "mma.sync.m16n8k16 + ldmatrix, cp.async 3-stage pipeline",
            Some(4) => "mma.sync.m16n8k64.s4 + ldmatrix, cp.async 3-stage pipeline",
            Some(_) => "mma.sync.m16n8k32.s8 + ldmatrix, cp.async 3-stage pipeline",
        });
        self.p.comment(format!("pipelined GEMM loop: {}x{}x{} {:?}, cp.async {S} stages, swizzled", g.m, g.n, g.k, g.dtype));
        let body = &op.regions[0];
        let init = self.acc_src(op.args[3]);
        let (ab, bb) = (g.a.bytes(), g.b.bytes());
        let stage_bytes = ab + bb;
        let ring = self.alloc((S as u32 * stage_bytes) as usize);
        let out_pitch = if g.n.is_multiple_of(32) { g.n + 4 } else { g.n };
        let out = self.alloc(g.m * out_pitch * 4);
        self.hazard(init.as_ref().is_some_and(|s| matches!(s, Src::V(..))), true, Some(g.a.tensor), None);
        self.hazard(false, false, Some(g.b.tensor), None);
        let ring_base = self.smem_addr(ring, None, DType::F32);
        let lr = self.trips(lo, hi, step);

        // ---- warp tiling: WM × WN warps, each MT m16-tiles × NT n8-tiles
        let warps = (self.t / 32) as usize;
        let (tm, tn) = (g.m / 16, g.n / 8);
        let mut best = (1, 1);
        for wm in 1..=tm {
            for wn in 1..=tn {
                if tm % wm != 0 || tn % wn != 0 || wm * wn > warps {
                    continue;
                }
                let score = |(a, b): (usize, usize)| (a * b, std::cmp::Reverse(((tm / a) * 16).abs_diff((tn / b) * 8)));
                if score((wm, wn)) > score(best) {
                    best = (wm, wn);
                }
            }
        }
        let (wm, wn) = best;
        let (mt, nt) = (tm / wm, tn / wn);
        let lane = self.p.op(Kind::R, "and.b32", &[&self.tid, &31]);
        let warp = self.p.op(Kind::R, "shr.u32", &[&self.tid, &5]);
        let wy = self.p.op(Kind::R, "div.u32", &[&warp, &wn]);
        let wx = self.p.op(Kind::R, "rem.u32", &[&warp, &wn]);
        let m0 = self.p.op(Kind::R, "mul.lo.u32", &[&wy, &(mt * 16)]);
        let n0 = self.p.op(Kind::R, "mul.lo.u32", &[&wx, &(nt * 8)]);
        let computes = self.p.op(Kind::P, "setp.lt.u32", &[&warp, &(wm * wn)]);
        let gq = self.p.op(Kind::R, "shr.u32", &[&lane, &2]);
        let t4 = self.p.op(Kind::R, "and.b32", &[&lane, &3]);
        let c2 = self.p.op(Kind::R, "shl.b32", &[&t4, &1]);
        let l8 = self.p.op(Kind::R, "and.b32", &[&lane, &7]);
        let li = self.p.op(Kind::R, "shr.u32", &[&lane, &3]);
        let lo1 = self.p.op(Kind::R, "and.b32", &[&li, &1]);
        let hi1 = self.p.op(Kind::R, "shr.u32", &[&li, &1]);

        // ---- accumulators: fragment (mi, ni) rows m0+16mi+g (+8), columns n0+8ni+2t (+1)
        let mut frags: Vec<[Reg; 4]> = vec![];
        let mut coords = vec![];
        for mi in 0..mt {
            for ni in 0..nt {
                let r = self.p.op(Kind::R, "add.u32", &[&m0, &(mi * 16)]);
                let r = self.p.op(Kind::R, "add.u32", &[&r, &gq]);
                let r8 = self.p.op(Kind::R, "add.u32", &[&r, &8]);
                let c = self.p.op(Kind::R, "add.u32", &[&n0, &(ni * 8)]);
                let c = self.p.op(Kind::R, "add.u32", &[&c, &c2]);
                let c1 = self.p.op(Kind::R, "add.u32", &[&c, &1]);
                let f = [
                    self.acc_init(&init, r, c, g.n, kind),
                    self.acc_init(&init, r, c1, g.n, kind),
                    self.acc_init(&init, r8, c, g.n, kind),
                    self.acc_init(&init, r8, c1, g.n, kind),
                ];
                frags.push(f);
                coords.push((r, r8, c));
            }
        }

        // ---- ldmatrix lane offsets inside a stage (loop-invariant), per k16 step
        // k-steps of one stage: 16 elements (f16/bf16) or 32 bytes (one integer instruction)
        let ksteps = if int.is_some() { g.a.scols / 16 } else { g.k / 16 };
        let mut a_offs = vec![];
        for ks in 0..ksteps {
            for mi in 0..mt {
                let (r, c) = if g.a_kmajor() {
                    // stored [M][K]: row m0+16mi+(lane&15), column 16ks + 8(lane>>4)
                    let l16 = self.p.op(Kind::R, "and.b32", &[&lane, &15]);
                    let r = self.p.op(Kind::R, "add.u32", &[&m0, &(mi * 16)]);
                    let r = self.p.op(Kind::R, "add.u32", &[&r, &l16]);
                    let h = self.p.op(Kind::R, "shr.u32", &[&lane, &4]);
                    let c = self.p.op(Kind::R, "mad.lo.u32", &[&h, &8, &(ks * 16)]);
                    (r, c)
                } else {
                    // stored [K][M] (.trans): row 16ks + 8(li>>1) + (lane&7), column m0+16mi+8(li&1)
                    let r = self.p.op(Kind::R, "mad.lo.u32", &[&hi1, &8, &l8]);
                    let r = self.p.op(Kind::R, "add.u32", &[&r, &(ks * 16)]);
                    let c = self.p.op(Kind::R, "add.u32", &[&m0, &(mi * 16)]);
                    let c = self.p.op(Kind::R, "mad.lo.u32", &[&lo1, &8, &c]);
                    (r, c)
                };
                a_offs.push(self.swz_off(r, c, g.a.rows, g.a.scols));
            }
        }
        let npairs = nt.div_ceil(2);
        let mut b_offs = vec![];
        for ks in 0..ksteps {
            for pj in 0..npairs {
                let (r, c) = if g.b_kmajor() {
                    // stored [N][K]: row n0+16pj+8(li>>1)+(lane&7), column 16ks+8(li&1)
                    let r = self.p.op(Kind::R, "add.u32", &[&n0, &(pj * 16)]);
                    let r = self.p.op(Kind::R, "mad.lo.u32", &[&hi1, &8, &r]);
                    let r = self.p.op(Kind::R, "add.u32", &[&r, &l8]);
                    let c = self.p.op(Kind::R, "mad.lo.u32", &[&lo1, &8, &(ks * 16)]);
                    (r, c)
                } else {
                    // stored [K][N] (.trans): row 16ks+8(li&1)+(lane&7), column n0+16pj+8(li>>1)
                    let r = self.p.op(Kind::R, "mad.lo.u32", &[&lo1, &8, &l8]);
                    let r = self.p.op(Kind::R, "add.u32", &[&r, &(ks * 16)]);
                    let c = self.p.op(Kind::R, "add.u32", &[&n0, &(pj * 16)]);
                    let c = self.p.op(Kind::R, "mad.lo.u32", &[&hi1, &8, &c]);
                    (r, c)
                };
                let o = self.swz_off(r, c, g.b.rows, g.b.scols);
                b_offs.push(self.p.op(Kind::R, "add.u32", &[&o, &ab]));
            }
        }

        // ---- copy assignments: 16-byte chunks of A then B, dealt round-robin to the threads
        let bits = g.dtype.bits() as u32;
        let epc = chunk_elems(bits) as usize;
        let issue = |l: &mut Self, stage: Reg, iv: Reg| -> Result<()> {
            for (o, off) in [(&g.a, 0u32), (&g.b, ab)] {
                let st = l.starts_at(body, g, o, iv)?;
                let tv = l.tensors[o.tensor].clone().expect("a tensor parameter");
                let per_row = o.cols / epc;
                let chunks = o.rows * per_row;
                for i in 0..chunks.div_ceil(l.t as usize) {
                    let q = l.p.op(Kind::R, "add.u32", &[&l.tid, &(i * l.t as usize)]);
                    let skip = l.p.label();
                    if (i + 1) * l.t as usize > chunks {
                        let past = l.p.op(Kind::P, "setp.ge.u32", &[&q, &chunks]);
                        l.p.ins(format!("@{past} bra {skip}"));
                    }
                    let r = l.p.op(Kind::R, "div.u32", &[&q, &per_row]);
                    let qc = l.p.op(Kind::R, "rem.u32", &[&q, &per_row]);
                    // stored column (16-bit units) and first element of chunk qc
                    let c = l.p.op(Kind::R, "shl.b32", &[&qc, &3]);
                    let ce = if epc == 8 { c } else { l.p.op(Kind::R, "shl.b32", &[&qc, &epc.trailing_zeros()]) };
                    let so = l.swz_off(r, c, o.rows, o.scols);
                    let so = l.p.op(Kind::R, "add.u32", &[&so, &off]);
                    let dst = l.p.op(Kind::R, "add.u32", &[&stage, &so]);
                    let cs = ChunkSrc { base: tv.base, rows: tv.shape[0], cols: tv.shape[1], pitch: tv.strides[0], ok: None };
                    l.copy_chunk_bits(&cs, st, r, ce, dst, bits);
                    l.p.place(&skip);
                }
            }
            Ok(())
        };

        // ---- integer rows padded to whole instructions: the padding is zeroed once, in every
        // stage (the copies never write it; the first iteration's barrier publishes it)
        for (o, off) in [(&g.a, 0u32), (&g.b, ab)] {
            self.zero_row_pad(o, ring_base, off, stage_bytes, S as u32, epc);
        }
        // ---- prologue: stages 0..S-1
        for s in 0..S - 1 {
            let it = self.p.mov(Kind::R, s as i32);
            let have = self.p.op(Kind::P, "setp.lt.u32", &[&it, &lr.trips]);
            let skip = self.p.label();
            self.p.ins(format!("@!{have} bra {skip}"));
            let iv = self.iv_at(&lr, it);
            let stage = self.p.op(Kind::R, "add.u32", &[&ring_base, &(s as u32 * stage_bytes)]);
            issue(self, stage, iv)?;
            self.p.place(&skip);
            self.p.ins("cp.async.commit_group");
        }
        // ---- main loop
        let it = self.p.mov(Kind::R, 0);
        let (top, done) = (self.p.label(), self.p.label());
        self.p.place(&top);
        let fin = self.p.op(Kind::P, "setp.ge.u32", &[&it, &lr.trips]);
        self.p.ins(format!("@{fin} bra {done}"));
        self.p.ins(format!("cp.async.wait_group {}", S - 2));
        self.p.ins("bar.sync 0");
        // prefetch iteration it + S - 1 into the stage consumed at it - 1
        let nx = self.p.op(Kind::R, "add.u32", &[&it, &(S - 1)]);
        let have = self.p.op(Kind::P, "setp.lt.u32", &[&nx, &lr.trips]);
        let skip = self.p.label();
        self.p.ins(format!("@!{have} bra {skip}"));
        let ns = self.p.op(Kind::R, "rem.u32", &[&nx, &S]);
        let stage = self.p.op(Kind::R, "mad.lo.u32", &[&ns, &stage_bytes, &ring_base]);
        let iv = self.iv_at(&lr, nx);
        issue(self, stage, iv)?;
        self.p.place(&skip);
        self.p.ins("cp.async.commit_group");
        // compute on stage it % S
        let cs = self.p.op(Kind::R, "rem.u32", &[&it, &S]);
        let cur = self.p.op(Kind::R, "mad.lo.u32", &[&cs, &stage_bytes, &ring_base]);
        let nocomp = self.p.label();
        self.p.ins(format!("@!{computes} bra {nocomp}"));
        for ks in 0..ksteps {
            let mut af = vec![];
            for mi in 0..mt {
                let a = self.p.op(Kind::R, "add.u32", &[&cur, &a_offs[ks * mt + mi]]);
                let r: Vec<Reg> = (0..4).map(|_| self.p.reg(Kind::R)).collect();
                let tr = if g.a_kmajor() { "" } else { ".trans" };
                self.p.ins(format!("ldmatrix.sync.aligned.m8n8.x4{tr}.shared.b16 {{{}, {}, {}, {}}}, [{a}]", r[0], r[1], r[2], r[3]));
                af.push(r);
            }
            let mut bf = vec![];
            for pj in 0..npairs {
                let a = self.p.op(Kind::R, "add.u32", &[&cur, &b_offs[ks * npairs + pj]]);
                let tr = if g.b_kmajor() { "" } else { ".trans" };
                let r: Vec<Reg> = (0..4).map(|_| self.p.reg(Kind::R)).collect();
                if 2 * pj + 1 < nt {
                    self.p.ins(format!("ldmatrix.sync.aligned.m8n8.x4{tr}.shared.b16 {{{}, {}, {}, {}}}, [{a}]", r[0], r[1], r[2], r[3]));
                    bf.push([r[0], r[1]]);
                    bf.push([r[2], r[3]]);
                } else {
                    self.p.ins(format!("ldmatrix.sync.aligned.m8n8.x2{tr}.shared.b16 {{{}, {}}}, [{a}]", r[0], r[1]));
                    bf.push([r[0], r[1]]);
                }
            }
            for mi in 0..mt {
                for ni in 0..nt {
                    let c = frags[mi * nt + ni];
                    let cl = format!("{{{}, {}, {}, {}}}", c[0], c[1], c[2], c[3]);
                    let a = &af[mi];
                    let b = bf[ni];
                    self.p.ins(format!("{instr} {cl}, {{{}, {}, {}, {}}}, {{{}, {}}}, {cl}", a[0], a[1], a[2], a[3], b[0], b[1]));
                }
            }
        }
        self.p.place(&nocomp);
        self.p.ins(format!("add.u32 {it}, {it}, 1"));
        self.p.ins(format!("bra {top}"));
        self.p.place(&done);
        self.p.ins("cp.async.wait_group 0");
        self.p.ins("bar.sync 0");
        // ---- accumulators to the result buffer
        let obase = self.smem_addr(out, None, DType::F32);
        let skip = self.p.label();
        self.p.ins(format!("@!{computes} bra {skip}"));
        for (f, (r, r8, c)) in frags.iter().zip(&coords) {
            for (half, row) in [*r, *r8].into_iter().enumerate() {
                let e = self.p.op(Kind::R, "mad.lo.u32", &[&row, &out_pitch, c]);
                let a = self.p.op(Kind::R, "mad.lo.u32", &[&e, &4, &obase]);
                self.p.ins(format!("st.shared.v2.{sty} [{a}], {{{}, {}}}", f[2 * half], f[2 * half + 1]));
            }
        }
        self.p.place(&skip);
        self.barrier();
        self.hz.smem_w = true;
        self.hz.gl_r.insert(g.a.tensor);
        self.hz.gl_r.insert(g.b.tensor);
        self.set(op.results[0], Repr::View(View { buf: out, strides: vec![out_pitch as i64, 1] }));
        Ok(())
    }

    /// Zero the stored columns of operand `o` past the copied chunks (`epc` elements each) in
    /// all `stages` stages of the ring at `ring + off` (integer K tiles padded to whole
    /// instructions, [`int_stage_row`]); nothing for f16/bf16.
    fn zero_row_pad(&mut self, o: &Operand, ring: Reg, off: u32, stage_bytes: u32, stages: u32, epc: usize) {
        let (copied, stored) = (o.cols / epc, o.scols / 8);
        if copied == stored {
            return;
        }
        let pad = stored - copied;
        self.p.comment(format!("zero the {pad} padding chunk(s) per row of a {}x{} tile", o.rows, o.cols));
        self.chunk_loop(o.rows * pad * stages as usize, &mut |l, _, q| {
            // q = (stage · rows + r) · pad + j
            let j = l.p.op(Kind::R, "rem.u32", &[&q, &pad]);
            let sr = l.p.op(Kind::R, "div.u32", &[&q, &pad]);
            let r = l.p.op(Kind::R, "rem.u32", &[&sr, &o.rows]);
            let st = l.p.op(Kind::R, "div.u32", &[&sr, &o.rows]);
            let c = l.p.op(Kind::R, "add.u32", &[&j, &copied]);
            let c = l.p.op(Kind::R, "shl.b32", &[&c, &3]);
            let so = l.swz_off(r, c, o.rows, o.scols);
            let so = l.p.op(Kind::R, "add.u32", &[&so, &off]);
            let base = l.p.op(Kind::R, "mad.lo.u32", &[&st, &stage_bytes, &ring]);
            let a = l.p.op(Kind::R, "add.u32", &[&base, &so]);
            l.p.ins(format!("st.shared.v4.b32 [{a}], {{0, 0, 0, 0}}"));
            Ok(())
        })
        .expect("zeroing cannot fail");
    }
}
