//! Staged operand loads: `cp.async` double buffering of the 16-bit tiles a loop loads and feeds
//! to `dot`, for loops that `gemm.rs` does not take whole — flash attention's KV walk (K and V
//! tiles, with the online softmax around the two `dot`s) and the split-KV decode.
//!
//! **Recognized loads** ([`match_staged`]): a `load` at the top level of a `for` body, no mask,
//! of an f16/bf16 tensor whose leading indices are one-element values defined outside the loop
//! (batch, KV head) and whose last two indices are `scalar + const + arange(n)` tiles (the
//! scalar may depend on the loop variable through pure scalar ops of the body, as in
//! `gemm.rs`), `n_cols % 8 == 0`, every use a `dot` operand (directly or through
//! `trans`), and no store to the tensor anywhere in the body (so prefetching it early reads
//! what the interpreter reads).
//!
//! **What changes.** Each such load gets a ring of two stages in shared memory, each stage
//! stored in the padded row-major layout of [`Lower::pitch`] — the layout the `mma.sync` path
//! of `dot.rs` reads in place with `ldmatrix` (`ldmatrix.trans` for an operand stored
//! `[K][N]`, like V in `P·V`), conflict-free by the 16-byte row pad (see
//! [`tests`](self::tests)). The loop becomes:
//! ```text
//! prologue:   issue(lo → stage 0); commit
//! iteration:  if iv + step < hi: issue(iv + step → stage s ^ 1); commit
//!             cp.async.wait_group 1; bar.sync       (stage s complete and visible)
//!             body, the staged loads being views of stage s
//!             s ^= 1
//! ```
//! so the copy of tile `j + 1` is in flight while tile `j` is computed. `issue` deals the
//! tile's 16-byte chunks round-robin to the threads; a chunk wholly in bounds and 16-byte
//! aligned is one `cp.async.cg`, anything else (the ragged KV tail, an out-of-range leading
//! index, a misaligned row) eight predicated element loads with zeros elsewhere
//! ([`Lower::copy_chunk`]), which is exactly the `load` semantics (out of range reads 0).
//! The stage a view reads is a run-time offset added by [`Lower::smem_addr`].

use std::collections::HashMap;

use opc_ir::{DType, Kernel, Op, OpKind, ValueId};

use super::emit::{Kind, Reg};
use super::chunk::ChunkSrc;
use super::gemm::{defs, scalar_pure, start_of, Start};
use super::lower::{Lower, View};
use super::Features;
use crate::Result;

/// Stages of each ring.
pub(super) const STAGES: u32 = 2;

/// One staged load.
#[derive(Clone, Debug)]
pub(super) struct Staged {
    pub result: ValueId,
    pub tensor: usize,
    /// The one-element leading indices (defined outside the loop).
    pub lead: Vec<ValueId>,
    /// Starts of the last two indices.
    pub starts: [Start; 2],
    pub rows: usize,
    pub cols: usize,
    pub dtype: DType,
}

/// The staged loads of one loop and the body's scalar ops their starts depend on.
#[derive(Clone, Debug)]
pub(super) struct StagedLoop {
    pub loads: Vec<Staged>,
    pub slice: Vec<usize>,
}

/// Element pitch of one stored stage row (the padded layout of [`Lower::pitch`]).
pub(super) fn stage_pitch(d: DType, rows: usize, cols: usize) -> usize {
    Lower::pitch(d, &[rows, cols])[0] as usize
}

/// Uses of every value anywhere inside `b` (nested regions included): (op, argument index).
fn uses_in<'o>(b: &'o opc_ir::Block, out: &mut HashMap<u32, Vec<(&'o Op, usize)>>) {
    for o in &b.ops {
        for (i, a) in o.args.iter().enumerate() {
            out.entry(a.0).or_default().push((o, i));
        }
        for r in &o.regions {
            uses_in(r, out);
        }
    }
}

/// Whether some op inside `b` writes tensor `t`.
fn writes(b: &opc_ir::Block, t: usize) -> bool {
    b.ops.iter().any(|o| {
        matches!(o.kind, OpKind::Store { tensor, .. } | OpKind::AtomicAdd { tensor, .. } if tensor == t) || o.regions.iter().any(|r| writes(r, t))
    })
}

/// Recognize the staged loads of `for_op` (module docs); `None` when there are none.
pub(super) fn match_staged(k: &Kernel, for_op: &Op, feats: Features) -> Option<StagedLoop> {
    if !feats.pipeline || !feats.stage {
        return None;
    }
    let body = &for_op.regions[0];
    let iv = body.args[0];
    let dm = defs(k);
    let mut uses = HashMap::new();
    uses_in(body, &mut uses);
    let in_body: HashMap<u32, usize> = body.ops.iter().enumerate().flat_map(|(i, o)| o.results.iter().map(move |r| (r.0, i))).collect();
    let dot_operand = |(o, i): &(&Op, usize)| o.kind == OpKind::Dot && *i < 2;
    let mut loads = vec![];
    let mut slice: Vec<usize> = vec![];
    'ops: for op in &body.ops {
        let OpKind::Load { tensor, has_mask: false, has_other: false } = op.kind else { continue };
        let Some(rank) = k.tensor_dims(tensor).map(|d| d.len()) else { continue };
        let dtype = k.ty(op.result()).dtype;
        let shape = &k.ty(op.result()).shape;
        if rank < 2 || op.args.len() != rank || !matches!(dtype, DType::F16 | DType::BF16) || shape.len() != 2 || shape[1] % 8 != 0 || writes(body, tensor) {
            continue;
        }
        let lead = op.args[..rank - 2].to_vec();
        if lead.iter().any(|a| k.ty(*a).numel() != 1 || in_body.contains_key(&a.0) || *a == iv) {
            continue;
        }
        let last = [op.args[rank - 2], op.args[rank - 1]];
        if last.iter().zip(shape).any(|(a, &n)| k.ty(*a).shape != [n]) {
            continue;
        }
        let (Some(s0), Some(s1)) = (start_of(k, &dm, last[0]), start_of(k, &dm, last[1])) else { continue };
        // every use a dot operand, directly or through a 2-D transpose used only by dots
        for u in uses.get(&op.result().0).map(Vec::as_slice).unwrap_or(&[]) {
            let ok = dot_operand(u)
                || (matches!(&u.0.kind, OpKind::Permute(p) if p == &[1, 0])
                    && uses.get(&u.0.result().0).is_some_and(|us| us.iter().all(dot_operand)));
            if !ok {
                continue 'ops;
            }
        }
        // the starts' scalars: outside the body, or pure scalar ops of the body
        let mut todo: Vec<ValueId> = [&s0, &s1].iter().filter_map(|s| s.scalar).collect();
        let mut mine = vec![];
        while let Some(v) = todo.pop() {
            if v == iv {
                continue;
            }
            if let Some(&i) = in_body.get(&v.0) {
                if !scalar_pure(k, &body.ops[i]) {
                    continue 'ops;
                }
                if !mine.contains(&i) {
                    mine.push(i);
                    todo.extend(body.ops[i].args.iter().copied());
                }
            }
        }
        for i in mine {
            if !slice.contains(&i) {
                slice.push(i);
            }
        }
        loads.push(Staged { result: op.result(), tensor, lead, starts: [s0, s1], rows: shape[0], cols: shape[1], dtype });
    }
    slice.sort();
    (!loads.is_empty()).then_some(StagedLoop { loads, slice })
}

/// Registers and buffers of one staged loop while it is lowered.
pub(super) struct StageRegs {
    /// Per load: ring buffer, bytes per stage, row pitch (elements), where to read it from.
    rings: Vec<(usize, u32, usize, ChunkSrc)>,
    /// The stage the current iteration reads (0 or 1).
    stg: Reg,
}

impl Lower<'_> {
    /// Allocate the rings and issue the copies of the first iteration (`lo`, if `lo < hi`).
    pub(super) fn stage_prologue(&mut self, body: &opc_ir::Block, sl: &StagedLoop, lo: Reg, hi: Reg) -> Result<StageRegs> {
        self.tensor_cores = Some("mma.sync.m16n8k16 + ldmatrix, cp.async 2-stage staging of loop-loaded operands");
        self.p.comment(format!("staged loop loads: {} tile(s), cp.async {STAGES} stages", sl.loads.len()));
        let mut rings = vec![];
        for s in &sl.loads {
            self.hazard(false, false, Some(s.tensor), None);
            let pitch = stage_pitch(s.dtype, s.rows, s.cols);
            let bytes = (s.rows * pitch * 2) as u32;
            let buf = self.alloc((STAGES * bytes) as usize);
            let tv = self.tensors[s.tensor].clone().expect("a tensor parameter");
            let rank = tv.shape.len();
            // leading indices folded into the base address, checked in range
            let mut off = self.p.mov(Kind::D, 0);
            let mut ok: Option<Reg> = None;
            for (d, &v) in s.lead.iter().enumerate() {
                let x = self.uniform(v).expect("leading indices are one-element values");
                let w = self.p.op(Kind::D, "cvt.s64.s32", &[&x]);
                let inr = self.p.op(Kind::P, "setp.lt.u64", &[&w, &tv.shape[d]]);
                ok = Some(match ok {
                    None => inr,
                    Some(o) => self.p.op(Kind::P, "and.pred", &[&o, &inr]),
                });
                off = self.p.op(Kind::D, "mad.lo.s64", &[&w, &tv.strides[d], &off]);
            }
            let base = self.p.op(Kind::D, "mad.lo.s64", &[&off, &2, &tv.base]);
            let cs = ChunkSrc { base, rows: tv.shape[rank - 2], cols: tv.shape[rank - 1], pitch: tv.strides[rank - 2], ok };
            rings.push((buf, bytes, pitch, cs));
        }
        let stg = self.p.mov(Kind::R, 0);
        let sr = StageRegs { rings, stg };
        let have = self.p.op(Kind::P, "setp.lt.s32", &[&lo, &hi]);
        let skip = self.p.label();
        self.p.ins(format!("@!{have} bra {skip}"));
        self.stage_issue(body, sl, &sr, lo, stg)?;
        self.p.place(&skip);
        self.p.ins("cp.async.commit_group");
        Ok(sr)
    }

    /// Top of an iteration at `iv`: prefetch `iv + step` into the other stage, wait for this
    /// one, and make the staged loads views of it.
    pub(super) fn stage_top(&mut self, body: &opc_ir::Block, sl: &StagedLoop, sr: &StageRegs, iv: Reg, hi: Reg, step: Reg) -> Result<()> {
        let w = self.p.op(Kind::D, "cvt.s64.s32", &[&iv]);
        let s64 = self.p.op(Kind::D, "cvt.s64.s32", &[&step]);
        let nx = self.p.op(Kind::D, "add.s64", &[&w, &s64]);
        let h64 = self.p.op(Kind::D, "cvt.s64.s32", &[&hi]);
        let have = self.p.op(Kind::P, "setp.lt.s64", &[&nx, &h64]);
        let skip = self.p.label();
        self.p.ins(format!("@!{have} bra {skip}"));
        let nx32 = self.p.op(Kind::R, "cvt.u32.u64", &[&nx]);
        let other = self.p.op(Kind::R, "xor.b32", &[&sr.stg, &1]);
        self.stage_issue(body, sl, sr, nx32, other)?;
        self.p.place(&skip);
        self.p.ins("cp.async.commit_group");
        self.p.ins(format!("cp.async.wait_group {}", STAGES - 1));
        self.barrier();
        for (s, (buf, bytes, pitch, _)) in sl.loads.iter().zip(&sr.rings) {
            let off = self.p.op(Kind::R, "mul.lo.u32", &[&sr.stg, bytes]);
            self.dyn_off.insert(*buf, off);
            self.staged_views.insert(s.result.0, View { buf: *buf, strides: vec![*pitch as i64, 1] });
            self.hz.gl_r.insert(s.tensor);
        }
        Ok(())
    }

    /// Bottom of an iteration: flip the stage. The ring is used here so that its live range
    /// covers the whole body (no buffer of the body may share its space: the next prefetch
    /// writes it while the body runs).
    pub(super) fn stage_bottom(&mut self, sr: &StageRegs) {
        for (buf, ..) in &sr.rings {
            self.buf_off(*buf);
        }
        self.p.ins(format!("xor.b32 {}, {}, 1", sr.stg, sr.stg));
    }

    /// After the loop: no copy may still be in flight, the views are gone.
    pub(super) fn stage_end(&mut self, sl: &StagedLoop, sr: &StageRegs) {
        self.p.ins("cp.async.wait_group 0");
        for (s, (buf, ..)) in sl.loads.iter().zip(&sr.rings) {
            self.dyn_off.remove(buf);
            self.staged_views.remove(&s.result.0);
        }
    }

    /// Issue the copies of every staged tile at loop value `iv` into stage `stage` (u32 0/1).
    fn stage_issue(&mut self, body: &opc_ir::Block, sl: &StagedLoop, sr: &StageRegs, iv: Reg, stage: Reg) -> Result<()> {
        for (s, (buf, bytes, pitch, cs)) in sl.loads.iter().zip(&sr.rings) {
            let st = self.tile_starts_at(body, &sl.slice, &s.starts, iv)?;
            let off = self.buf_off(*buf);
            let base = self.p.op(Kind::R, "add.u32", &[&self.smem, &off]);
            let base = self.p.op(Kind::R, "mad.lo.u32", &[&stage, bytes, &base]);
            let per_row = s.cols / 8;
            let chunks = s.rows * per_row;
            let t = self.t as usize;
            for i in 0..chunks.div_ceil(t) {
                let q = self.p.op(Kind::R, "add.u32", &[&self.tid, &(i * t)]);
                let skip = self.p.label();
                if (i + 1) * t > chunks {
                    let past = self.p.op(Kind::P, "setp.ge.u32", &[&q, &chunks]);
                    self.p.ins(format!("@{past} bra {skip}"));
                }
                let r = self.p.op(Kind::R, "div.u32", &[&q, &per_row]);
                let c = self.p.op(Kind::R, "rem.u32", &[&q, &per_row]);
                let c = self.p.op(Kind::R, "shl.b32", &[&c, &3]);
                let e = self.p.op(Kind::R, "mad.lo.u32", &[&r, pitch, &c]);
                let dst = self.p.op(Kind::R, "mad.lo.u32", &[&e, &2, &base]);
                self.copy_chunk(cs, st, r, c, dst);
                self.p.place(&skip);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! A CPU model of a staged stage buffer read by the `mma.sync` path of `dot.rs`: the chunk
    //! dealing of [`Lower::stage_issue`], the padded layout, `ldmatrix` / `ldmatrix.trans`
    //! (PTX ISA §9.7.14.5.15: lane `8i + r` gives the address of row `r` of matrix `i`; without
    //! `.trans` lane `t` receives row `t / 4`, elements `2(t % 4)`, `+1` of matrix `i` in
    //! register `i`, with `.trans` the same of the transposed matrix) and the B fragment of
    //! `mma.m16n8k16` (§9.7.14.5.8: `b0, b1` = B[k = 2(t % 4) + {0, 1}][n = t / 4], `b2, b3` the
    //! same at k + 8), checking each element of K (QKᵀ's B, stored [N][K]) and V (PV's B, stored
    //! [K][N]) reaches the right operand slot.
    use super::*;

    /// The element ids a stage holds: `tile[r][c] = r·cols + c` copied chunk by chunk as
    /// `stage_issue` deals them (chunk `q` = row `q / (cols/8)`, columns `8(q % (cols/8))..+8`).
    fn staged(rows: usize, cols: usize, pitch: usize) -> Vec<Option<u32>> {
        let mut smem = vec![None; rows * pitch];
        let per_row = cols / 8;
        for q in 0..rows * per_row {
            let (r, c) = (q / per_row, (q % per_row) * 8);
            let dst = 2 * (r * pitch + c);
            assert_eq!(dst % 16, 0, "cp.async destinations are 16-byte aligned");
            for i in 0..8 {
                assert!(smem[r * pitch + c + i].replace((r * cols + c + i) as u32).is_none(), "written twice");
            }
        }
        smem
    }

    /// `ldmatrix.x2{.trans}` from per-lane row addresses (element indices): the two registers
    /// (each two 16-bit elements) of every lane.
    fn ldmatrix_x2(smem: &[Option<u32>], addr: impl Fn(usize) -> usize, trans: bool) -> Vec<[[u32; 2]; 2]> {
        (0..32)
            .map(|t| {
                let mut regs = [[0; 2]; 2];
                for (i, reg) in regs.iter_mut().enumerate() {
                    for (h, x) in reg.iter_mut().enumerate() {
                        let (row, col) = if trans { (2 * (t % 4) + h, t / 4) } else { (t / 4, 2 * (t % 4) + h) };
                        *x = smem[addr(8 * i + row) + col].expect("read a written element");
                    }
                }
                regs
            })
            .collect()
    }

    #[test]
    fn staged_k_and_v_reach_their_mma_b_slots() {
        for (rows, cols) in [(64usize, 64usize), (64, 128), (32, 32), (128, 64), (16, 256)] {
            for d in [DType::F16, DType::BF16] {
                let pitch = stage_pitch(d, rows, cols);
                let smem = staged(rows, cols, pitch);
                // K tile [BN = rows][D = cols], QKᵀ's B (k = d, n = key): stored [N][K], read
                // without .trans at row n = n0 + (lane & 7), column k = k0 + 8·((lane >> 3) & 1)
                for n0 in (0..rows).step_by(8) {
                    for k0 in (0..cols).step_by(16) {
                        let f = ldmatrix_x2(&smem, |l| (n0 + (l & 7)) * pitch + k0 + 8 * ((l >> 3) & 1), false);
                        for (t, regs) in f.iter().enumerate() {
                            for (i, reg) in regs.iter().enumerate() {
                                for (h, &x) in reg.iter().enumerate() {
                                    let (k, n) = (k0 + 8 * i + 2 * (t % 4) + h, n0 + t / 4);
                                    assert_eq!(x as usize, n * cols + k, "K {rows}x{cols}: lane {t} b{}", 2 * i + h);
                                }
                            }
                        }
                    }
                }
                // V tile [BN = rows][D = cols], PV's B (k = key, n = d): stored [K][N], read with
                // .trans at row k = k0 + 8·((lane >> 3) & 1) + (lane & 7), column n = n0
                for k0 in (0..rows).step_by(16).filter(|k0| k0 + 16 <= rows) {
                    for n0 in (0..cols).step_by(8) {
                        let f = ldmatrix_x2(&smem, |l| (k0 + 8 * ((l >> 3) & 1) + (l & 7)) * pitch + n0, true);
                        for (t, regs) in f.iter().enumerate() {
                            for (i, reg) in regs.iter().enumerate() {
                                for (h, &x) in reg.iter().enumerate() {
                                    let (k, n) = (k0 + 8 * i + 2 * (t % 4) + h, n0 + t / 4);
                                    assert_eq!(x as usize, k * cols + n, "V {rows}x{cols}: lane {t} b{}", 2 * i + h);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn ldmatrix_phases_on_a_stage_are_conflict_free() {
        // head dims that are multiples of 64 (the 128-byte rows a plain layout would conflict
        // on): the 8 row addresses of one ldmatrix phase fall into 8 distinct 16-byte bank
        // groups. (Narrower tiles keep the unpadded layout of `Lower::pitch`.)
        for (rows, cols) in [(64usize, 64usize), (64, 128), (128, 256), (16, 64)] {
            for d in [DType::F16, DType::BF16] {
                let pitch = stage_pitch(d, rows, cols);
                assert!((2 * pitch).is_multiple_of(16), "rows stay 16-byte aligned for cp.async");
                for r0 in (0..rows).step_by(8) {
                    for c in (0..cols).step_by(8) {
                        let mut g: Vec<usize> = (0..8).map(|i| (2 * ((r0 + i) * pitch + c) % 128) / 16).collect();
                        g.sort();
                        g.dedup();
                        assert_eq!(g.len(), 8, "{rows}x{cols} r0={r0} c={c}");
                    }
                }
            }
        }
    }
}
