//! Fused K loops: a `for` whose carried values are f32 accumulators, each updated by one
//! `acc = dot(load(a[..]), load(b[..]), acc)` (the `b` load possibly transposed:
//! `trans(load(w[cols, ks]))`), plus index arithmetic — the K sweep of every DSL GEMM
//! (`matmul`, `linear`, the MoE experts; `moe_up`'s gate and up projections share one gathered
//! `a` tile) — is lowered as one cache-blocked GEMM per accumulator instead of a loop of small
//! tile `dot`s. A load feeding several `dot`s is packed once.
//!
//! Either operand may also be an exact widening `cast(load(..), f32)` of a bf16 / f16 / f32
//! load (`linear_w`: f32 activations times weights in their storage dtype). The tile
//! representation of every float dtype is f32, so that cast is an identity on it: the load
//! widens its 16-bit lanes as it writes the f32 panel (bf16: a 16-bit shift; f16: `vcvtph2ps`)
//! and the f32 micro-kernel runs unchanged — the same values, in the same order, as the
//! unfused loop's cast and `dot`.
//!
//! A transposed `b` may also be an elementwise tree over loads, `[BN, ..]` reshaped to
//! `[BN, BK]` — an MXFP4 weight tile, `cast(cast(load(codes)) * cast(load(scales))[.., None],
//! T)` (`mxfp4_gemm`, the gpt-oss expert GEMMs). Each K step evaluates the tree with
//! `fuse.rs`'s point evaluation straight into that operand's `[BN][KC]` landing panel (raw bf16
//! bits rounded exactly as the tree's cast rounds them, or f32), instead of into a tile that a
//! separate `dot` then reads; the panel is transposed and swept like a loaded one.
//!
//! **Blocking.** The program's `BM × BN` accumulator stays in one arena buffer `c`. The loop's
//! iterations are taken `S` at a time (a K chunk of `KC = S·BK` values, 256 by default, 128
//! for f32 panels:
//! `OPC_LLVM_KC` overrides it for tuning): first every iteration's loads of the chunk run,
//! exactly as the unfused loop would run them (same indices, bounds checks, masks and
//! out-of-range zeros), but they write into two packed panels — `a` as `[BM][KC]` and `b` as
//! `[KC][BN]` (a transposed `w` tile lands as `[BN][KC]` and is transposed once per chunk, in
//! 16×16 register blocks) —
//! then the register micro-kernels of `dot.rs` sweep the whole chunk with the accumulators in
//! zmm registers, reading the panels sequentially, up to the last row of `a` that is not all
//! zero (`live.rs`: ragged row tiles — an expert's rows, a GEMM's last row tile — skip the
//! rest). The accumulator round trip through memory
//! happens once per chunk instead of once per `BK` step, the panels are contiguous (no cache
//! set conflicts from the tensors' row strides), and the loads stream each row over `KC`.
//! Each panel load prefetches the same tile one chunk on (`llvm.prefetch`, a hint that cannot
//! fault; `OPC_LLVM_PF` steps for tuning), so the next chunk's strided rows of `a` and `b` are
//! fetched while this chunk's micro-kernels run.
//!
//! **Streamed weights**: bf16 loops with a transposed weight operand and row tiles of up to 128
//! rows take `kloop_stream.rs`'s form instead (weights read in place, `cᵀ` accumulators).
//!
//! **bf16** (both operands bf16, `avx512bf16`, even `BK`): the loads store the raw bf16 bits, so
//! rows along k (`a`, and a transposed `w`) already are the k-pairs `vdpbf16ps` wants
//! (`[BM][KC/2]` i32; `w`'s `[BN][KC/2]` is transposed once per chunk), `b`'s rows are
//! interleaved in pairs (`[KC/2][BN]` i32, one shuffle per 16 columns); then `vdpbf16ps`
//! sweeps the chunk, or AMX tiles on hosts that have them (`amx.rs`).
//!
//! **Numerics**: identical to the unfused lowering (but for the sign of a zero sum in a
//! skipped all-zero row, `live.rs`) — every `c[i, j]` still accumulates k in
//! ascending order with one FMA (or one `vdpbf16ps` pair, pairs aligned to the same even k) per
//! step; the register accumulators are exact f32 copies of the arena ones. Loops whose body is
//! anything else (carried values that are not such accumulators, other uses of the loads or of
//! the accumulators, stores)
//! take the generic path of `lower.rs`, as does every loop when `OPC_LLVM_NO_KLOOP` is set (for
//! A/B timing).

use std::collections::{HashMap, HashSet};

use opc_ir::{DType, Op, OpKind, ValueId};

use super::dot::Operands;
use super::lower::{lane_mask, row_major, Acc, Lower, Repr};
use super::memory::{Access, Dest};
use crate::Result;

/// K values per chunk unless `OPC_LLVM_KC` says otherwise: 512 bytes of each row of a raw bf16
/// panel; f32 panels (f32, f16 and widened operands) take half as many ([`KC_F32`]).
const KC: usize = 256;

/// K values per chunk of f32 panels: the same 512-byte panel rows and 128 micro-kernel steps
/// per chunk as bf16, so a 256×256 f32 tile's panels and accumulators (about 640 KB with a
/// transposed `w`) stay within the 1 MB L2.
const KC_F32: usize = 128;

/// Rows ahead of the in-chunk prefetch (see `lower_kloop`): 16 rows of 8 lines each is about
/// what the L2 miss queue keeps in flight while the packing loop copies.
const PF_ROWS: usize = 16;

/// Columns per group of a packed bf16 `b` panel (`Operands::Bf16`'s `gw`): one micro-kernel
/// column block, so each micro-kernel sweeps one contiguous `[KC/2][64]` slice (32 KB at the
/// default `KC`) that stays in L1 across all the row blocks, instead of 64 columns out of
/// every row of a `[KC/2][BN]` panel (rows `4·BN` bytes apart land in a few L1 sets).
const GW: usize = 64;

/// What a panel load feeds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Role {
    /// The `a` operand, `[BM, BK]`.
    A,
    /// A direct `b`, `[BK, BN]`.
    B,
    /// A `b` loaded `[BN, BK]` and transposed for the `dot`.
    BTrans,
}

/// One load of the body, written into a packed panel instead of a tile.
pub(super) struct PanelLoad {
    /// Body op index: the load, or the root of a mapped tree (see `map`).
    pub op: usize,
    pub role: Role,
    /// `BM` (for `a`) or `BN` (for `b`).
    pub rows: usize,
    /// A transposed `b` computed by an elementwise tree over loads (`fuse.rs`'s fusion rules),
    /// e.g. an MXFP4 weight tile decoded from its codes and scales, `[BN, ..]` reshaped to
    /// `[BN, BK]`: the body op indices of the tree. It is evaluated straight into the panel.
    pub map: Option<Vec<usize>>,
}

/// One carried accumulator: `acc_j = dot(loads[a], loads[b], acc_j)`.
pub(super) struct KDot {
    pub a: usize,
    pub b: usize,
    /// `(BM, BN)` of this accumulator.
    pub mn: (usize, usize),
}

/// A matched fused K loop (see the module docs).
pub(super) struct KLoop {
    /// The body's ops other than the loads, the transposes, the `dot`s and the `yield`.
    pub index_ops: Vec<usize>,
    /// The distinct loads, in body order; a load may feed several `dot`s (`moe_up`'s `x` tile
    /// is the `a` of both the gate and the up projection).
    pub loads: Vec<PanelLoad>,
    /// One per carried value, in carried order.
    pub dots: Vec<KDot>,
    /// `BK`: the k extent of every load.
    pub bk: usize,
    /// Operand dtype of the `dot`s (f32, f16 or bf16; f32 when an operand is a widened load).
    pub dtype: DType,
}

/// Bytes per element of a float operand dtype in memory.
fn esize(d: DType) -> usize {
    if d == DType::F32 {
        4
    } else {
        2
    }
}

/// K values per chunk: `packed16` for raw 16-bit (bf16 pair) panels, else f32 panels.
fn kc(packed16: bool) -> usize {
    let default = if packed16 { KC } else { KC_F32 };
    super::knob("OPC_LLVM_KC").filter(|&k| k > 0).unwrap_or(default)
}

/// How many K steps ahead the panel loads prefetch: `OPC_LLVM_PF` (tuning), else one whole
/// chunk (`steps`), so the next chunk's rows are requested while this chunk's micro-kernels
/// run rather than a few hundred cycles before their own loads.
fn pf_steps(steps: usize) -> usize {
    super::knob("OPC_LLVM_PF").filter(|&k| k > 0).unwrap_or(steps)
}

/// How many tile rows ahead the panel loads also prefetch within a chunk: `OPC_LLVM_PF_ROWS`
/// (tuning), else [`PF_ROWS`].
pub(super) fn pf_rows() -> usize {
    super::knob("OPC_LLVM_PF_ROWS").unwrap_or(PF_ROWS)
}

/// The packed panels of one load: where its loads land and what the micro-kernels read.
#[derive(Clone, Copy)]
struct Panel {
    /// The landing slot of the loads.
    land: u32,
    /// The slot the micro-kernels read (`land` itself for `a` and f32 direct `b`).
    packed: u32,
}

impl Lower<'_> {
    /// Whether `op` (a `for`) is a fused K loop, and its parts. Emits nothing.
    pub(super) fn match_kloop(&self, op: &Op) -> Option<KLoop> {
        if std::env::var_os("OPC_LLVM_NO_KLOOP").is_some() {
            return None;
        }
        let body = op.regions.first()?;
        let nc = op.results.len();
        if nc == 0 || op.args.len() != 3 + nc || body.args.len() != nc + 1 {
            return None;
        }
        let (y, rest) = body.ops.split_last()?;
        if y.kind != OpKind::Yield || y.args.len() != nc {
            return None;
        }
        let defs: HashMap<ValueId, usize> = rest.iter().enumerate().flat_map(|(i, o)| o.results.iter().map(move |&r| (r, i))).collect();
        let def = |v: ValueId| defs.get(&v).copied();
        let is_load = |i: usize| matches!(rest[i].kind, OpKind::Load { .. }) && rest[i].args.iter().all(|&a| self.k.ty(a).rank() <= 1);
        let mut loads: Vec<PanelLoad> = vec![];
        let mut add_load = |op: usize, role: Role, rows: usize, map: Option<Vec<usize>>| -> Option<usize> {
            match loads.iter().position(|l| l.op == op) {
                Some(i) if loads[i].role == role && loads[i].rows == rows && map.is_none() => Some(i),
                Some(_) => None,
                None => {
                    loads.push(PanelLoad { op, role, rows, map });
                    Some(loads.len() - 1)
                }
            }
        };
        let mut dots = vec![];
        let mut matched = vec![]; // body ops consumed by the match: dots, transposes, casts, loads
        let mut consumed: Vec<ValueId> = vec![]; // one entry per use inside the match
        // The load behind a `dot` operand: the operand itself, or an exact widening
        // `cast(load, f32)` of a float load (an identity on the f32 tile representation, so
        // the load's panel already holds the widened values). A cast is consumed once.
        let operand = |v: ValueId, matched: &mut Vec<usize>, consumed: &mut Vec<ValueId>| -> Option<usize> {
            let i = def(v)?;
            if is_load(i) {
                return Some(i);
            }
            let o = &rest[i];
            let widening = matches!(o.kind, OpKind::Cast(_))
                && self.dtype(v) == DType::F32
                && matches!(self.dtype(o.args[0]), DType::F32 | DType::F16 | DType::BF16);
            let l = def(o.args[0]).filter(|&l| widening && is_load(l))?;
            if !matched.contains(&i) {
                matched.push(i);
                consumed.push(o.args[0]);
            }
            Some(l)
        };
        // A transposed `b` that is an elementwise tree over loads, `[BN, ..]` (reshaped to
        // `[BN, BK]` when it has more dims): its root op and the tree's ops, all consumed.
        let mapped = |v: ValueId, matched: &mut Vec<usize>, consumed: &mut Vec<ValueId>| -> Option<(usize, Vec<usize>)> {
            let mut root = def(v)?;
            let mut reshape = None;
            if rest[root].kind == OpKind::Reshape {
                let (src, dst) = (self.shape(rest[root].args[0]), self.shape(v));
                if dst.len() != 2 || src.len() < 2 || src[0] != dst[0] {
                    return None;
                }
                reshape = Some(root);
                root = def(rest[root].args[0])?;
            }
            let o = &rest[root];
            let elementwise = matches!(o.kind, OpKind::Unary(_) | OpKind::Binary(_) | OpKind::Cmp(_) | OpKind::Select | OpKind::Cast(_) | OpKind::Bitcast);
            let rv = o.results.first().copied()?;
            if !elementwise || o.results.len() != 1 || !self.dtype(rv).is_float() || (reshape.is_some() && self.uses[rv.0 as usize] != 1) {
                return None;
            }
            let shape = self.shape(rv);
            let mut set = HashSet::new();
            for &a in &o.args {
                if self.shape(a) == shape {
                    if !self.want(body, &defs, a, root, &mut set) {
                        return None;
                    }
                } else if self.k.ty(a).numel() != 1 {
                    return None;
                }
            }
            let mut ops: Vec<usize> = set.iter().map(|v| defs[v]).collect();
            if ops.is_empty() || ops.iter().any(|i| matched.contains(i)) {
                return None;
            }
            matched.extend(&ops);
            if let Some(r) = reshape {
                matched.push(r);
                consumed.push(rv);
            }
            ops.push(root);
            Some((root, ops))
        };
        let mut bk = None;
        let dtype = self.dtype(rest.iter().find(|o| o.kind == OpKind::Dot)?.args[0]);
        if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
            return None;
        }
        for j in 0..nc {
            let acc = body.args[j + 1];
            let at = self.k.ty(acc);
            if at.dtype != DType::F32 || at.rank() != 2 {
                return None;
            }
            let di = def(y.args[j])?;
            let dot = &rest[di];
            if dot.kind != OpKind::Dot || dot.args.len() != 3 || dot.args[2] != acc || self.uses[y.args[j].0 as usize] != 1 {
                return None;
            }
            if self.dtype(dot.args[0]) != dtype || self.dtype(dot.args[1]) != dtype {
                return None;
            }
            let (sa, sb) = (self.shape(dot.args[0]), self.shape(dot.args[1]));
            let (m, k, n) = (sa[0], sa[1], sb[1]);
            if m == 0 || k == 0 || n == 0 || *bk.get_or_insert(k) != k || self.shape(y.args[j]) != [m, n] {
                return None;
            }
            let la = operand(dot.args[0], &mut matched, &mut consumed)?;
            let bi = def(dot.args[1])?;
            let (lb, role, map) = match &rest[bi].kind {
                OpKind::Permute(p) if p == &[1, 0] => {
                    let t = rest[bi].args[0];
                    let (lb, map) = match operand(t, &mut matched, &mut consumed) {
                        Some(lb) => (lb, None),
                        None => {
                            let (root, vals) = mapped(t, &mut matched, &mut consumed)?;
                            (root, Some(vals))
                        }
                    };
                    if !matched.contains(&bi) {
                        matched.push(bi);
                        consumed.push(t);
                    }
                    (lb, Role::BTrans, map)
                }
                _ => (operand(dot.args[1], &mut matched, &mut consumed)?, Role::B, None),
            };
            let a = add_load(la, Role::A, m, None)?;
            let b = add_load(lb, role, n, map)?;
            matched.extend([di, la, lb]);
            consumed.extend([dot.args[0], dot.args[1], acc]);
            dots.push(KDot { a, b, mn: (m, n) });
        }
        // The loaded tiles, transposes and accumulators have no use outside the match.
        let mut vals = consumed.clone();
        vals.sort_by_key(|v| v.0);
        vals.dedup();
        if vals.iter().any(|v| consumed.iter().filter(|c| *c == v).count() != self.uses[v.0 as usize] as usize) {
            return None;
        }
        // Everything else is index arithmetic: no memory, no nested regions, no use of the
        // accumulators or of the loaded tiles.
        let mut index_ops = vec![];
        for (i, o) in rest.iter().enumerate() {
            if matched.contains(&i) {
                continue;
            }
            if !o.kind.is_cheap_pure() || !o.regions.is_empty() || o.args.iter().any(|a| vals.contains(a)) {
                return None;
            }
            index_ops.push(i);
        }
        Some(KLoop { index_ops, loads, dots, bk: bk?, dtype })
    }

    /// Lower a matched K loop (bounds already checked by `for_bounds`).
    pub(super) fn lower_kloop(&mut self, op: &Op, m: &KLoop, [lo, hi, step]: [&str; 3]) -> Result<()> {
        let body = &op.regions[0];
        let rest = &body.ops[..body.ops.len() - 1];
        let bk = m.bk;
        let bf16 = self.isa.bf16 && m.dtype == DType::BF16 && bk.is_multiple_of(2);
        let s = kc(bf16).div_ceil(bk).max(1);
        let pf = pf_steps(s);
        let pf_rows = pf_rows();
        let cap = s * bk; // K values per chunk
        let cap32 = cap.next_multiple_of(32); // panel row length (whole pair-packing vectors)
        // The accumulators.
        let cs: Vec<u32> = (0..m.dots.len())
            .map(|j| {
                let (bm, bn) = m.dots[j].mn;
                let c = self.alloc(bm * bn);
                self.pin(c);
                self.copy_into(op.args[3 + j], c);
                c
            })
            .collect();
        // Panels (see `Panel`): f32 `a` [BM][KC], `b` [KC][BN], a transposed `w` lands as
        // [BN][KC] and is transposed into [KC][BN]. bf16 panels hold the raw bits: `a` and `w`
        // rows are then already k-pairs ([rows][KC/2] i32), `b` rows are interleaved in pairs
        // and `w` is transposed into [KC/2][BN] i32.
        let panels: Vec<Panel> = m
            .loads
            .iter()
            .map(|l| {
                let land = if bf16 { self.alloc(l.rows * cap32 / 2) } else { self.alloc(l.rows * cap32) };
                let packed = match (l.role, bf16) {
                    (Role::A, _) | (Role::B, false) => land,
                    (Role::BTrans, false) => self.alloc(cap32 * l.rows),
                    // 16 words of slack: a micro-kernel's masked last vector of the last row
                    (_, true) => self.alloc(cap32 / 2 * l.rows + 16),
                };
                self.pin(land);
                self.pin(packed);
                Panel { land, packed }
            })
            .collect();
        // Trip count of the original loop: iv = lo, lo + step, ... < hi.
        let lo64 = self.f.val(format!("sext i32 {lo} to i64"));
        let hi64 = self.f.val(format!("sext i32 {hi} to i64"));
        let st64 = self.f.val(format!("sext i32 {step} to i64"));
        let span = self.f.val(format!("sub i64 {hi64}, {lo64}"));
        let span = self.f.val(format!("call i64 @llvm.smax.i64(i64 {span}, i64 0)"));
        let t = self.f.val(format!("add i64 {span}, {st64}"));
        let t = self.f.val(format!("sub i64 {t}, 1"));
        let trips = self.f.val(format!("udiv i64 {t}, {st64}"));
        let row_strides: Vec<String> = m
            .loads
            .iter()
            // The stride between the tile's rows (`w1[e, ns, ks]` walks its second dim); "0"
            // for a mapped tree.
            .map(|pl| self.tile_row_stride(&rest[pl.op]).unwrap_or_else(|| "0".to_string()))
            .collect();
        // bf16 row tiles of up to 128 rows take the streamed form (`kloop_stream.rs`).
        if let Some(st) = if bf16 { self.stream_check(op, m, &lo64, &st64, &trips)? } else { None } {
            self.lower_stream(op, m, &cs, &st, [&lo64, &st64, &trips])?;
            for (j, (d, &c)) in m.dots.iter().zip(&cs).enumerate() {
                self.set(op.results[j], Repr::Buf { off: c, strides: row_major(&[d.mn.0, d.mn.1]) });
            }
            return Ok(());
        }
        // The mapped trees' ops are evaluated inside their panel writes (`fused_map_into`).
        for pl in &m.loads {
            for &i in pl.map.iter().flatten() {
                self.fused.insert(rest[i].result(), rest[i].clone());
            }
        }
        let saved = self.enter_region();
        self.chunk_loop(&trips, s, &mut |l, first, ns| {
            // Loads of the chunk's iterations, into the panels.
            l.loop_dyn(&ns, &mut |l, si| {
                let it = l.f.val(format!("add i64 {first}, {si}"));
                l.kloop_index_ops(op, m, &it, [&lo64, &st64])?;
                let k0 = l.f.val(format!("mul i64 {si}, {bk}"));
                // Prefetch the tile `pf` steps on (the next chunk's, by default): `pf·BK`
                // elements further along a contiguous k, or `pf·BK` rows further down when k
                // indexes the tensor's first dim (`b[ks, cols]`) — that brings it from DRAM
                // into the caches (L3 at least) —
                // Byte distances use the load's own dtype: a widened (cast) load reads 2-byte
                // elements into an f32 panel.
                for (pl, (p, rs)) in m.loads.iter().zip(panels.iter().zip(&row_strides)) {
                    let o = &rest[pl.op];
                    if pl.map.is_some() {
                        // `[BN, d1, ..]` lands as rows of the `[BN][KC]` panel.
                        let shape = l.shape(o.result());
                        let strides: Vec<i64> = [cap32 as i64].into_iter().chain(row_major(&shape[1..])).collect();
                        let d = Dest { off: p.land, base: k0.clone(), strides, prefetch: vec![], raw_bf16: bf16 };
                        l.fused_map_into(o, &d)?;
                        continue;
                    }
                    let es = esize(l.dtype(o.result()));
                    // and `PF_ROWS` rows further down the same chunk: a tile's rows are a
                    // tensor row stride apart, so a chunk's rows of both operands crowd a few
                    // dozen L2 sets and most of the chunk-ahead lines are evicted to L3 again
                    // before they are packed; this one lands just before its row is.
                    let rows_ahead = l.f.val(format!("mul i64 {rs}, {}", pf_rows * es));
                    let d = match pl.role {
                        Role::A | Role::BTrans => {
                            let pf = vec![(pf * bk * es).to_string(), rows_ahead];
                            Dest { off: p.land, base: k0.clone(), strides: vec![cap32 as i64, 1], prefetch: pf, raw_bf16: bf16 }
                        }
                        Role::B => {
                            let e = l.f.val(format!("mul i64 {si}, {}", bk * pl.rows));
                            let pf = l.f.val(format!("mul i64 {rs}, {}", pf * bk * es));
                            Dest { off: p.land, base: e, strides: vec![pl.rows as i64, 1], prefetch: vec![pf, rows_ahead], raw_bf16: bf16 }
                        }
                    };
                    let OpKind::Load { tensor, has_mask, has_other } = o.kind else { unreachable!("matched a load") };
                    l.lower_access_into(o, tensor, Access::Load { has_mask, has_other }, Some(d))?;
                }
                Ok(())
            })?;
            for (pl, p) in m.loads.iter().zip(&panels) {
                let bn = pl.rows;
                let gw = l.b_group(bn);
                match (pl.role, bf16) {
                    (Role::A, _) | (Role::B, false) => {}
                    // f32: [BN][KC] -> [KC][BN]
                    (Role::BTrans, false) => l.transpose_panel("float", p.land, cap32, bn, cap, p.packed)?,
                    // bf16: w's rows are k-pairs ([BN][KC/2] i32): transpose to [KC/2][BN]
                    // in column groups of `gw` (each `[KC/2][width]`)
                    (Role::BTrans, true) => {
                        for g0 in (0..bn).step_by(gw) {
                            let w = gw.min(bn - g0);
                            let src = p.land + (g0 * cap32 / 2) as u32;
                            l.transpose_panel("i32", src, cap32 / 2, w, cap32 / 2, p.packed + (g0 * cap32 / 2) as u32)?;
                        }
                    }
                    (Role::B, true) => l.interleave_pairs(p.land, cap32 / 2, bn, gw, p.packed)?,
                }
            }
            let kk = l.f.val(format!("mul i64 {ns}, {bk}"));
            // Rows of each `a` panel that hold a nonzero value (`live.rs`).
            let pdt = if bf16 { DType::BF16 } else { DType::F32 };
            let a_words = if bf16 { cap32 / 2 } else { cap32 };
            let lives: Vec<Option<String>> =
                m.loads.iter().zip(&panels).map(|(pl, p)| (pl.role == Role::A).then(|| l.live_rows(p.packed, pl.rows, a_words, pdt))).collect();
            for (d, &c) in m.dots.iter().zip(&cs) {
                let (bm, bn) = d.mn;
                let (apk, bpk) = (panels[d.a].packed, panels[d.b].packed);
                if bf16 {
                    if l.isa.amx && super::amx::fits((bm, bk, bn)) {
                        // kk is a multiple of BK, itself a multiple of 32: whole k tiles.
                        let ktiles = l.f.val(format!("lshr i64 {kk}, 5"));
                        l.amx_blocks(apk, bpk, cap32 / 2, c, bm, bn, &ktiles)?;
                    } else {
                        let steps = l.f.val(format!("lshr i64 {kk}, 1"));
                        let live = l.rows_to_run(lives[d.a].as_deref().expect("an a panel"), bm, bpk, cap32 / 2 * bn, pdt)?;
                        let gw = l.b_group(bn);
                        l.dot_blocks(Operands::Bf16 { apk, bpk, kp: cap32 / 2, n: bn, gw }, c, bm, bn, &steps, false, Some(&live))?;
                    }
                } else {
                    let live = l.rows_to_run(lives[d.a].as_deref().expect("an a panel"), bm, bpk, cap32 * bn, pdt)?;
                    let ops = Operands::F32 { aoff: apk, as0: cap32 as i64, as1: 1, boff: bpk, bs0: bn as i64 };
                    l.dot_blocks(ops, c, bm, bn, &kk, false, Some(&live))?;
                }
            }
            Ok(())
        })?;
        self.region = saved;
        for pl in &m.loads {
            for &i in pl.map.iter().flatten() {
                self.fused.remove(&rest[i].result());
            }
        }
        for (j, (d, &c)) in m.dots.iter().zip(&cs).enumerate() {
            self.set(op.results[j], Repr::Buf { off: c, strides: row_major(&[d.mn.0, d.mn.1]) });
        }
        Ok(())
    }

    /// `trips` iterations (an i64 operand) in chunks of `s`: `body(first, ns)` per chunk, its
    /// first iteration and its count (`s`, fewer in the last), both i64 operands.
    pub(super) fn chunk_loop(&mut self, trips: &str, s: usize, body: &mut dyn FnMut(&mut Self, &str, &str) -> Result<()>) -> Result<()> {
        let t = self.f.val(format!("add i64 {trips}, {}", s - 1));
        let chunks = self.f.val(format!("udiv i64 {t}, {s}"));
        self.loop_dyn(&chunks, &mut |l, ch| {
            let first = l.f.val(format!("mul i64 {ch}, {s}"));
            let left = l.f.val(format!("sub i64 {trips}, {first}"));
            let ns = l.f.val(format!("call i64 @llvm.umin.i64(i64 {left}, i64 {s})"));
            body(l, &first, &ns)
        })
    }

    /// The index ops of the matched loop `m` of `op` at iteration `it` (an i64 operand; the
    /// induction variable is `lo64 + it·st64`).
    pub(super) fn kloop_index_ops(&mut self, op: &Op, m: &KLoop, it: &str, [lo64, st64]: [&str; 2]) -> Result<()> {
        let body = &op.regions[0];
        let iv = self.f.val(format!("mul i64 {it}, {st64}"));
        let iv = self.f.val(format!("add i64 {iv}, {lo64}"));
        let iv32 = self.f.val(format!("trunc i64 {iv} to i32"));
        self.def_uniform(body.args[0], iv32);
        for &i in &m.index_ops {
            self.lower_op(&body.ops[i])?;
        }
        Ok(())
    }

    /// Column group width of a packed bf16 `b` panel with `bn` columns: [`GW`], or the flat
    /// panel (`bn`) that the AMX tiles read.
    fn b_group(&self, bn: usize) -> usize {
        if self.isa.amx {
            bn
        } else {
            GW.min(bn)
        }
    }

    /// `dst[c][r] = src[r·ss + c]` over `rows × cols` 32-bit elements (`dst` row-major with
    /// `rows` columns): 16×16 register blocks when both extents allow, else element-wise.
    pub(super) fn transpose_panel(&mut self, base: &str, src: u32, ss: usize, rows: usize, cols: usize, dst: u32) -> Result<()> {
        if rows.is_multiple_of(16) && cols.is_multiple_of(16) {
            return self.transpose_blocks(base, src, ss as i64, rows, cols, dst, rows as i64);
        }
        let acc = Acc::Arena { off: src, strides: vec![1, ss as i64] };
        self.ew(&[cols, rows], &[acc], &[base], base, dst, &|_, x, _| Ok(x[0].clone()))
    }

    /// Raw bf16 rows `src` (`[2·pairs][n]` i16) → k-pairs `dst[p][j] = src[2p][j] |
    /// src[2p+1][j] << 16` (`[pairs][n]` i32 in column groups of `gw`, see
    /// `Operands::Bf16`), 16 columns per step: one interleaving shuffle.
    fn interleave_pairs(&mut self, src: u32, pairs: usize, n: usize, gw: usize, dst: u32) -> Result<()> {
        let v = "<16 x i16>";
        let zip: Vec<String> = (0..16).flat_map(|i| [format!("i32 {i}"), format!("i32 {}", i + 16)]).collect();
        let zip = zip.join(", ");
        let chunks = n.div_ceil(16);
        self.nest(&[pairs, chunks], &mut |l, idx| {
            let (p, c) = (&idx[0], &idx[1]);
            let j0 = l.f.val(format!("mul i64 {c}, 16"));
            let r0 = l.f.val(format!("mul i64 {p}, {}", 2 * n));
            let e0 = l.f.val(format!("add i64 {r0}, {j0}"));
            let e1 = l.f.val(format!("add i64 {e0}, {n}"));
            let mut row = |e: &str| {
                let i = l.f.val(format!("add i64 {e}, {}", 2 * src as u64));
                let ptr = l.f.val(format!("getelementptr inbounds i16, ptr %arena, i64 {i}"));
                l.f.val(format!("load {v}, ptr {ptr}, align 2"))
            };
            let (x0, x1) = (row(&e0), row(&e1));
            let z = l.f.val(format!("shufflevector {v} {x0}, {v} {x1}, <32 x i32> <{zip}>"));
            let w = l.f.val(format!("bitcast <32 x i16> {z} to <16 x i32>"));
            let (base, len) = if gw >= n { (j0.clone(), n.to_string()) } else { l.group_col(&j0, gw, n, pairs) };
            let d = l.f.val(format!("mul i64 {p}, {len}"));
            let d = l.f.val(format!("add i64 {d}, {base}"));
            if n.is_multiple_of(16) {
                l.store_arena("i32", 16, dst, &d, &w, None);
                return Ok(());
            }
            // The last chunk of a row stops at column n.
            let last = l.f.val(format!("icmp eq i64 {c}, {}", chunks - 1));
            let m = l.f.val(format!("select i1 {last}, <16 x i1> {}, <16 x i1> splat (i1 true)", lane_mask(16, n % 16)));
            l.store_arena("i32", 16, dst, &d, &w, Some(&m));
            Ok(())
        })
    }
}
