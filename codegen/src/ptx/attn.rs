//! FA3-style attention loops on `sm_90a`: a KV walk whose body computes `S = dot(Q, trans(K))`,
//! an online softmax around it and `O = dot(P, V, acc)`, with K and V tiles loaded per step.
//! Nothing here knows about attention by name: the loop is recognized by its structure in the
//! IR ([`match_attn`]) and its body is lowered op by op, only in a different value layout.
//!
//! **Recognized form.** A `for` whose body (with nested `if`s) has exactly two `dot`s:
//! `dot(Q, trans(K))` with `Q` a 16-bit `[BM, D]` tile defined before the loop (used only there)
//! and `dot(P, V, acc?)` with `P` a `[BM, BN]` value of the body, where K and V are 16-bit
//! `[BN, D]` loads that `stage.rs` would stage (no mask, leading indices outside the loop, last
//! two indices `scalar + arange`); `BM ∈ {64, 128}`, `BN` and `D` multiples of 16 up to 256.
//! Every other op is an elementwise op, a `const` / `arange` / `broadcast` / `expand_dims`, a
//! row reduction (`sum` / `max` / `min` over axis 1 of an f32 `[BM, X]` tile), an `if` on a
//! scalar, or a scalar op; every tile value must have a fragment layout (below). Anything
//! else keeps the `cp.async` staging of `stage.rs`.
//!
//! **Value layout in the loop** ([`Class`], index math in `frag.rs`). Tiles live in the
//! `wgmma` accumulator layout of their consumer warpgroup's 64 rows: a `[BM, X]` tile is `X/2`
//! f32 registers per thread (`Full`), a row vector (`[BM]` used as rows, `[BM, 1]`) two (`Row`:
//! rows `g` and `g + 8`), a column vector (`[X]` used as columns, `[1, X]`) `X/2` (`Col`), a
//! uniform value one. Which 1-D values are rows and which columns is inferred from their uses
//! (`expand_dims` axis, reductions, carried values: [`infer_roles`]); elementwise ops combine
//! classes register by register, a row reduction is a local fold plus `shfl.bfly` 1 and 2.
//!
//! **Roles.** `T = 128·(C+1)` threads, `C = BM/64`: warpgroups `0..C` consume (64 query rows
//! each), warpgroup `C` produces (one elected thread issues TMA). With `C = 2` (384 threads,
//! `.maxnreg 168` declared) the producer gives registers back with `setmaxnreg.dec 24` and the
//! consumers take them with `setmaxnreg.inc 240` (128·24 + 256·240 = 64,512 ≤ 65,536); both
//! return to 168 before the CTA joins again for the epilogue. With `C = 1` (256 threads) every
//! thread may already use 255 registers, so no `setmaxnreg` is emitted. The consumer's live
//! set is `S` (`BN/2`), `O` (`D/2`), `P` as A (`BN/4` b32) plus the row state, e.g. 32 + 64 +
//! 16 + a few for BN = 64, D = 128.
//!
//! **Shared memory** (one region aligned to 1024 bytes at run time): `Q` `[BM][D]`, then
//! `STAGES = 2` stages of `K` `[BN][D]` and `V` `[BN][D]`, every tile in the 128-byte (or
//! `2D`-byte when `D < 64`) swizzled column-block layout of `swizzle.rs`, which is what TMA's
//! `SWIZZLE_128B` writes and what the `wgmma` descriptors' swizzle mode 1 reads (mode 2 / 3 for
//! 64 / 32 bytes); each tile starts on a 1024-byte boundary (descriptor base offset 0). `Q` is
//! copied there once from its generic view (generic-proxy stores, then
//! `fence.proxy.async.shared::cta`). Three mbarriers per stage, laid out `[full K × STAGES]
//! [empty × STAGES][full V × STAGES]`: `full K` and `full V` (count 1, the producer's
//! `arrive.expect_tx` of `BN·D·2` bytes each, completed by that tile's TMA copies, so
//! `S = Q·Kᵀ` starts as soon as K has landed) and `empty` (count `128·C`, every consumer
//! thread after its `P·V` `wgmma`s of the stage have completed).
//!
//! **Output buffers.** After the loop the carried values (O, the row state) go to shared f32
//! buffers for the epilogue. They are placed inside the region (Q and the ring are dead: every
//! TMA copy has landed, as each `full` barrier was waited on) after a named barrier of the
//! consumer warpgroups (`bar.sync 1, 128·C`: no warpgroup overwrites a K/V tile another still
//! reads), when they fit there — which is what lets BM = BN = D = 128 fit in 227 KB — and
//! beside it otherwise (the manifest's `outputs_in_region`).
//!
//! **TMA.** K and V take 3-D tensor maps (`TensorMap::outer`): `[D, SK, Π leading]`, box
//! `[span/2, BN, 1]`, so a tile running past the sequence end is zero-filled per head (never
//! the next head's rows), and an out-of-range leading index becomes coordinate -1 (all zeros):
//! the `load` semantics. Score columns past the end are masked by the kernel's own `where`.
//!
//! **Consumer step.** wait `full K[s]`; `wgmma.fence`; `D/16` × `wgmma m64nBNk16` (A = Q
//! descriptor, B = K descriptor, K-major); commit; wait 0; the softmax ops on fragments; pack
//! P (`cvt.rn.{bf16,f16}x2.f32`, the P→A identity of `frag.rs`); wait `full V[s]`; `BN/16` ×
//! `wgmma m64nDk16` with A from registers and B = V descriptor (MN-major, `imm-trans-b` 1);
//! commit; wait 0; arrive on `empty[s]`. After the loop the carried values are written to
//! shared buffers in the generic layout and the whole CTA joins (`bar.sync`) for the epilogue.
//!
//! **Q·Kᵀ overlap** (FA3 §3.2, intra-warpgroup; [`overlap_qk`] decides by register budget,
//! `S` must have no accumulator operand). S of tile 0 is issued before the loop into a fixed
//! set of accumulator registers. Step `j`: `wait_group 0` (S of tile `j` has landed); copy it
//! out; if tile `j + 1` exists, wait `full K` of its stage and issue its `Q·Kᵀ` into the same
//! registers (first `wgmma` with scale-d false: no zeroing) and commit without waiting; then
//! the softmax of tile `j` runs while the tensor cores compute S of tile `j + 1`; `P·V` as
//! above (its `wait_group 0` also retires the in-flight S, long done by then). Cost: `BN/2`
//! more registers per thread. The ring cannot deadlock: tile `j + 1`'s K lives in the other
//! stage, whose `empty` arrivals happened at the end of step `j - 1`.
//!
//! **Not done** (documented, not stubbed): overlapping the softmax with the previous tile's
//! `P·V` (it needs the rescale of O moved after `P·V`, a rewrite of the DSL body's order), the
//! ping-pong scheduling of two consumer warpgroups (FA3 §3.1), FP8.

use std::collections::HashMap;

use opc_ir::{Block, DType, Kernel, Op, OpKind, ReduceOp, ValueId};

use super::emit::{fimm, Kind, Reg};
use super::frag;
use super::lower::{ekind, esize, row_major, Lower, Repr, View};
use super::stage::{match_staged, Staged, StagedLoop};
use super::{swizzle, Features, TensorMap};
use crate::Result;

/// K/V ring stages.
pub(super) const STAGES: u32 = 2;
/// `setmaxnreg` budgets with two consumer warpgroups (module docs).
pub(super) const ENTRY_REGS: u32 = 168;
const PRODUCER_REGS: u32 = 24;
const CONSUMER_REGS: u32 = 240;
/// Named barrier of the consumer warpgroups (0 is the whole CTA's `bar.sync 0`).
const CONSUMER_BAR: u32 = 1;

/// Layout of a value inside the loop (module docs); `X` is the column count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Class {
    U,
    Row,
    Col(usize),
    Full(usize),
}

impl Class {
    fn regs(self) -> usize {
        match self {
            Class::U => 1,
            Class::Row => 2,
            Class::Col(x) | Class::Full(x) => x / 2,
        }
    }

    /// The class of an elementwise result of operands of classes `a` and `b`.
    fn join(a: Class, b: Class) -> Option<Class> {
        Some(match (a, b) {
            (Class::U, c) | (c, Class::U) => c,
            (Class::Row, Class::Row) => Class::Row,
            (Class::Row, Class::Col(x)) | (Class::Col(x), Class::Row) => Class::Full(x),
            (Class::Row, Class::Full(x)) | (Class::Full(x), Class::Row) => Class::Full(x),
            (Class::Col(x) | Class::Full(x), Class::Col(y) | Class::Full(y)) if x == y => {
                if a == b {
                    a
                } else {
                    Class::Full(x)
                }
            }
            _ => return None,
        })
    }

    /// Register of a value of this class read at register `i` of a result of class `to`.
    fn pick(self, to: Class, i: usize) -> usize {
        match (self, to) {
            (Class::U, _) => 0,
            (Class::Row, Class::Row) => i,
            (Class::Row, _) => frag::acc_half(i as u32) as usize,
            _ => i,
        }
    }
}

/// Whether a 1-D value is used as rows or as columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Row,
    Col,
}

/// A value in the fragment layout: its class and registers.
#[derive(Clone, Debug)]
struct Fv {
    class: Class,
    regs: Vec<Reg>,
}

/// A recognized attention loop.
#[derive(Clone, Debug)]
pub(super) struct AttnLoop {
    staged: StagedLoop,
    kl: Staged,
    vl: Staged,
    /// The `Q` operand (defined before the loop).
    q: ValueId,
    bm: usize,
    bn: usize,
    d: usize,
    dtype: DType,
    roles: HashMap<u32, Role>,
    /// Issue the next tile's `S = Q·Kᵀ` before this tile's softmax ([`overlap_qk`]).
    overlap: bool,
    /// The f32 value P was cast from, when that cast only feeds `P·V`: P is packed from it
    /// (`cvt.rn.{bf16,f16}x2.f32` rounds as the cast does), the cast is not lowered.
    p_f32: Option<ValueId>,
    /// Results of ops that need no lowering: the staged loads, `trans(K)`, index-only values.
    skip: Vec<u32>,
}

/// Launch facts of an FA3 loop, for the manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttnInfo {
    pub bm: u32,
    pub bn: u32,
    pub d: u32,
    pub stages: u32,
    pub consumers: u32,
    /// Bytes of the swizzled region: Q, the K/V stages and 1024 bytes of alignment slack.
    pub region_bytes: u32,
    /// `(producer, consumer)` registers after `setmaxnreg`, when emitted.
    pub setmaxnreg: Option<(u32, u32)>,
    /// Whether the carried values' output buffers reuse the region after the loop.
    pub outputs_in_region: bool,
    /// Whether the next tile's `S = Q·Kᵀ` is issued before this tile's softmax.
    pub overlap_qk: bool,
}

impl AttnInfo {
    fn new(bm: usize, bn: usize, d: usize) -> AttnInfo {
        let c = (bm / 64) as u32;
        let (bm, bn, d) = (bm as u32, bn as u32, d as u32);
        let region_bytes = tile_bytes(bm, d) + STAGES * 2 * tile_bytes(bn, d) + 1024;
        AttnInfo { bm, bn, d, stages: STAGES, consumers: c, region_bytes, setmaxnreg: (c >= 2).then_some((PRODUCER_REGS, CONSUMER_REGS)), outputs_in_region: false, overlap_qk: overlap_qk(bm as usize, bn as usize, d as usize) }
    }

    /// Threads per CTA.
    pub fn threads(&self) -> u32 {
        128 * (self.consumers + 1)
    }
}

/// The manifest's `fa3` object: tile sizes, roles, register budget and the shared-memory
/// layout, each byte count with the formula it comes from.
pub(super) fn manifest(a: &AttnInfo) -> serde_json::Value {
    let (q, kv) = (tile_bytes(a.bm, a.d), tile_bytes(a.bn, a.d));
    serde_json::json!({
        "bm": a.bm, "bn": a.bn, "d": a.d, "stages": a.stages,
        "consumer_warpgroups": a.consumers, "producer_warpgroups": 1, "threads": a.threads(),
        "setmaxnreg": a.setmaxnreg.map(|(p, c)| serde_json::json!({"entry": ENTRY_REGS, "producer": p, "consumer": c})),
        "swizzle_bytes": swizzle::span(a.d),
        "overlap_qk": a.overlap_qk,
        "barriers": "per stage: full K (count 1, expect_tx BN·D·2), empty (count 128·consumers), full V (count 1, expect_tx BN·D·2); 24·STAGES bytes",
        "shared": {
            "q_bytes": q, "k_bytes": kv, "v_bytes": kv, "region_bytes": a.region_bytes,
            "outputs_in_region": a.outputs_in_region,
            "formula": "region = BM·D·2 + STAGES·2·BN·D·2 + 1024 (each tile rounded up to 1024 B; the slack aligns the region to the 128-byte swizzle atom at run time), plus 24·STAGES bytes of mbarriers; the carried values leave the loop through f32 buffers (acc: BM·(D+4)·4, each row vector BM·4) placed inside the region once the consumers have passed a named barrier (outputs_in_region), else after it",
        },
        "grid": "one CTA per (BM query rows, query head, batch): the kernel's grid block",
    })
}

/// Offsets (128-byte aligned) of the carried values' output buffers packed into the first
/// `region` bytes, or `None` when they do not fit there.
pub(super) fn out_offsets(sizes: &[usize], region: usize) -> Option<Vec<usize>> {
    let mut at = 0;
    let mut offs = vec![];
    for &b in sizes {
        offs.push(at);
        at = (at + b).next_multiple_of(128);
    }
    (at <= region).then_some(offs)
}

/// Bytes of a swizzled 16-bit `[rows][cols]` tile, rounded to the 1024-byte atom alignment.
fn tile_bytes(rows: u32, cols: u32) -> u32 {
    swizzle::tile_bytes(rows, cols).next_multiple_of(1024)
}

fn is1d(k: &Kernel, v: ValueId) -> bool {
    let t = k.ty(v);
    t.shape.len() == 1 && t.numel() > 1
}

/// Every op of `b` and its nested regions, in order.
fn all_ops<'b>(b: &'b Block, out: &mut Vec<&'b Op>) {
    for o in &b.ops {
        out.push(o);
        for r in &o.regions {
            all_ops(r, out);
        }
    }
}

/// Infer row / column roles of the 1-D values of the loop (module docs); `None` on a conflict.
fn infer_roles(k: &Kernel, for_op: &Op) -> Option<HashMap<u32, Role>> {
    let body = &for_op.regions[0];
    let mut fixed: Vec<(ValueId, Role)> = vec![];
    let mut eqs: Vec<(ValueId, ValueId)> = vec![];
    let eq = |a: ValueId, b: ValueId, eqs: &mut Vec<(ValueId, ValueId)>| {
        if is1d(k, a) && is1d(k, b) {
            eqs.push((a, b));
        }
    };
    let y = body.ops.last()?;
    for (i, &arg) in body.args[1..].iter().enumerate() {
        eq(arg, for_op.args[3 + i], &mut eqs);
        eq(arg, *y.args.get(i)?, &mut eqs);
        eq(arg, for_op.results[i], &mut eqs);
    }
    let mut ops = vec![];
    all_ops(body, &mut ops);
    for o in ops {
        match &o.kind {
            OpKind::ExpandDims(axis) if is1d(k, o.args[0]) => fixed.push((o.args[0], if *axis == 1 { Role::Row } else { Role::Col })),
            OpKind::Broadcast if is1d(k, o.args[0]) => {
                if k.ty(o.result()).shape.len() == 2 {
                    fixed.push((o.args[0], Role::Col));
                } else {
                    eq(o.args[0], o.result(), &mut eqs);
                }
            }
            OpKind::Reduce { axis: 1, .. } if is1d(k, o.result()) => fixed.push((o.result(), Role::Row)),
            OpKind::Unary(_) | OpKind::Binary(_) | OpKind::Cmp(_) | OpKind::Select | OpKind::Cast(_) | OpKind::Bitcast => {
                for &a in &o.args {
                    eq(o.result(), a, &mut eqs);
                }
            }
            OpKind::If => {
                for r in &o.regions {
                    let y = r.ops.last()?;
                    for (i, &res) in o.results.iter().enumerate() {
                        eq(res, *y.args.get(i)?, &mut eqs);
                    }
                }
            }
            _ => {}
        }
    }
    let mut roles: HashMap<u32, Role> = HashMap::new();
    for (v, r) in fixed {
        if *roles.entry(v.0).or_insert(r) != r {
            return None;
        }
    }
    loop {
        let mut changed = false;
        for &(a, b) in &eqs {
            match (roles.get(&a.0).copied(), roles.get(&b.0).copied()) {
                (Some(x), Some(y)) if x != y => return None,
                (Some(x), None) => {
                    roles.insert(b.0, x);
                    changed = true;
                }
                (None, Some(y)) => {
                    roles.insert(a.0, y);
                    changed = true;
                }
                _ => {}
            }
        }
        if !changed {
            return Some(roles);
        }
    }
}

/// The static class of a tile value: by shape, and by role for 1-D values.
fn class_of(k: &Kernel, v: ValueId, bm: usize, roles: &HashMap<u32, Role>) -> Option<Class> {
    let sh = &k.ty(v).shape;
    let cols = |x: usize| (x.is_multiple_of(8) && x <= 256).then_some(x);
    match sh.as_slice() {
        _ if k.ty(v).numel() == 1 => Some(Class::U),
        [n] => match roles.get(&v.0)? {
            Role::Row if *n == bm => Some(Class::Row),
            Role::Col => cols(*n).map(Class::Col),
            _ => None,
        },
        [r, 1] if *r == bm => Some(Class::Row),
        [1, x] => cols(*x).map(Class::Col),
        [r, x] if *r == bm => cols(*x).map(Class::Full),
        _ => None,
    }
}

/// Recognize an FA3 attention loop (module docs); `None` keeps the other lowerings.
pub(super) fn match_attn(k: &Kernel, for_op: &Op, feats: Features) -> Option<AttnLoop> {
    if !feats.wgmma {
        return None;
    }
    let staged = match_staged(k, for_op, feats)?;
    let body = &for_op.regions[0];
    let mut ops = vec![];
    all_ops(body, &mut ops);
    let dots: Vec<&Op> = ops.iter().copied().filter(|o| o.kind == OpKind::Dot).collect();
    let [s_dot, pv_dot] = dots.as_slice() else {
        return None;
    };
    if !body.ops.iter().any(|o| std::ptr::eq(o, *s_dot)) || !body.ops.iter().any(|o| std::ptr::eq(o, *pv_dot)) {
        return None;
    }
    let def_in_body: HashMap<u32, &Op> = ops.iter().flat_map(|o| o.results.iter().map(move |r| (r.0, *o))).collect();
    let staged_of = |v: ValueId| staged.loads.iter().find(|s| s.result == v).cloned();
    // S = dot(Q, trans(K))
    let kt = def_in_body.get(&s_dot.args[1].0)?;
    if !matches!(&kt.kind, OpKind::Permute(p) if p == &[1, 0]) {
        return None;
    }
    let kl = staged_of(kt.args[0])?;
    let q = s_dot.args[0];
    if def_in_body.contains_key(&q.0) || body.args.contains(&q) {
        return None;
    }
    // O = dot(P, V, acc)
    let vl = staged_of(pv_dot.args[1])?;
    let p = pv_dot.args[0];
    let dtype = kl.dtype;
    let (bm, d) = (k.ty(q).shape[0], k.ty(q).shape[1]);
    let bn = kl.rows;
    if staged.loads.len() != 2 || vl.dtype != dtype || k.ty(q).dtype != dtype || k.ty(p).dtype != dtype || kl.result == vl.result {
        return None;
    }
    if ![64, 128].contains(&bm) || kl.cols != d || vl.rows != bn || vl.cols != d || k.ty(p).shape != [bm, bn] {
        return None;
    }
    if !bn.is_multiple_of(16)
        || bn > 256
        || !d.is_multiple_of(16)
        || d > 256
        || !swizzle::tile_ok(bn as u32, d as u32)
        || !swizzle::tile_ok(bm as u32, d as u32)
    {
        return None;
    }
    let roles = infer_roles(k, for_op)?;
    // uses inside the body
    let mut uses: HashMap<u32, Vec<&Op>> = HashMap::new();
    for o in &ops {
        for a in &o.args {
            uses.entry(a.0).or_default().push(o);
        }
    }
    let staged_ids = [kl.result.0, vl.result.0];
    let mut skip = vec![kl.result.0, vl.result.0, kt.result().0];
    // Q only feeds S; K only trans(K); V only P·V
    let only = |v: ValueId, user: &Op| uses.get(&v.0).is_some_and(|u| u.iter().all(|o| std::ptr::eq(*o, user)));
    if !only(q, s_dot) || !only(kt.args[0], kt) || !only(kt.result(), s_dot) || !only(vl.result, pv_dot) {
        return None;
    }
    for o in &ops {
        let scalar = o.results.iter().all(|r| k.ty(*r).numel() == 1);
        let ok = match &o.kind {
            OpKind::Yield | OpKind::If => scalar || o.results.iter().all(|r| class_of(k, *r, bm, &roles).is_some_and(|c| c != Class::U)),
            OpKind::Load { .. } => o.results.first().is_some_and(|r| staged_ids.contains(&r.0)),
            OpKind::Permute(_) => std::ptr::eq(*o, *kt),
            OpKind::Dot => true,
            OpKind::Reduce { op: ReduceOp::Sum | ReduceOp::Max | ReduceOp::Min, axis: 1 } => {
                k.ty(o.args[0]).dtype == DType::F32 && matches!(class_of(k, o.args[0], bm, &roles), Some(Class::Full(_)))
            }
            OpKind::Const(_) | OpKind::Dim(_) | OpKind::ScalarParam(_) | OpKind::ProgramId(_) | OpKind::NumPrograms(_) => true,
            OpKind::Reshape => k.ty(o.args[0]).numel() == 1,
            OpKind::Arange
            | OpKind::Unary(_)
            | OpKind::Binary(_)
            | OpKind::Cmp(_)
            | OpKind::Select
            | OpKind::Cast(_)
            | OpKind::Bitcast
            | OpKind::Broadcast
            | OpKind::ExpandDims(_) => true,
            _ => false,
        };
        if !ok {
            return None;
        }
        // every tile result has a layout, or only feeds the staged loads' indices
        for &r in &o.results {
            if skip.contains(&r.0) || k.ty(r).numel() == 1 || class_of(k, r, bm, &roles).is_some() {
                continue;
            }
            let index_only = uses.get(&r.0).is_none_or(|us| us.iter().all(|u| u.results.first().is_some_and(|x| staged_ids.contains(&x.0))));
            if !index_only {
                return None;
            }
            skip.push(r.0);
        }
    }
    // values from before the loop (other than Q) need a layout too, where lowered ops read them
    let rid = |o: &Op| o.results.first().map_or(u32::MAX, |r| r.0);
    for o in ops.iter().filter(|o| !skip.contains(&rid(o))) {
        for a in &o.args {
            let outside = !def_in_body.contains_key(&a.0) && !body.args.contains(a);
            if outside && *a != q && k.ty(*a).numel() > 1 && class_of(k, *a, bm, &roles).is_none() {
                return None;
            }
        }
    }
    // carried values
    for (i, &arg) in body.args[1..].iter().enumerate() {
        match class_of(k, arg, bm, &roles) {
            Some(Class::U) | Some(Class::Row) | Some(Class::Full(_)) => {}
            _ => return None,
        }
        class_of(k, for_op.args[3 + i], bm, &roles)?;
    }
    let overlap = s_dot.args.len() == 2 && overlap_qk(bm, bn, d);
    let p_f32 = def_in_body.get(&p.0).filter(|o| matches!(o.kind, OpKind::Cast(_)) && k.ty(o.args[0]).dtype == DType::F32 && only(p, pv_dot)).map(|o| o.args[0]);
    if p_f32.is_some() {
        skip.push(p.0);
    }
    Some(AttnLoop { staged, kl, vl, q, bm, bn, d, dtype, roles, overlap, p_f32, skip })
}

/// Whether the Q·Kᵀ of tile `j + 1` is issued before the softmax of tile `j` (FA3's
/// intra-warpgroup overlap): it costs a second copy of S (`BN/2` registers per thread), so it
/// is taken where the consumer's live set — S twice, O, P packed and the registers of
/// addresses, row state, indices and ptxas's slack (64, measured: 48 spills at BM = BN = 128,
/// D = 64) — stays within its register budget.
pub(super) fn overlap_qk(bm: usize, bn: usize, d: usize) -> bool {
    let budget = if bm >= 128 { CONSUMER_REGS } else { 255 } as usize;
    bn + d / 2 + bn / 4 + 64 <= budget
}

/// Threads the FA3 loops of `k` need (0 when none).
pub(super) fn threads_needed(k: &Kernel, feats: Features) -> u32 {
    let mut t = 0;
    opc_ir::walk_ops(&k.body, &mut |op| {
        if op.kind == OpKind::For {
            if let Some(a) = match_attn(k, op, feats) {
                t = t.max(AttnInfo::new(a.bm, a.bn, a.d).threads());
            }
        }
    });
    t
}

/// Per-thread registers of the consumer side.
struct Lanes {
    /// Rows `g` and `g + 8` of this thread in the CTA tile.
    rows: [Reg; 2],
    /// `2t`: the column of register 0.
    col0: Reg,
    t4: Reg,
    tid_wg: Reg,
}

impl Lower<'_> {
    pub(super) fn lower_attn_loop(&mut self, op: &Op, a: &AttnLoop, lo: Reg, hi: Reg, step: Reg) -> Result<()> {
        let body = &op.regions[0];
        let info = AttnInfo::new(a.bm, a.bn, a.d);
        let c = info.consumers;
        let (bm, bn, d) = (a.bm as u32, a.bn as u32, a.d as u32);
        self.used_mma = true;
        self.tensor_cores = Some("wgmma.mma_async m64nNk16 (A from registers for P·V) + TMA, warp-specialized FA3");
        self.p.comment(format!("FA3 attention loop: BM {bm}, BN {bn}, D {d}, {:?}, TMA {STAGES} stages, {c} consumer warpgroup(s)", a.dtype));

        // ---- every scalar from before the loop becomes a uniform register (no shared-memory
        // read, hence no barrier, may happen once the CTA has split into roles)
        let mut ops = vec![];
        all_ops(body, &mut ops);
        let inside: std::collections::HashSet<u32> = body.args.iter().copied().chain(ops.iter().flat_map(|o| o.results.iter().copied())).map(|v| v.0).collect();
        let mut outside: Vec<ValueId> = vec![];
        // (ops that are not lowered here, the staged loads and their index math, read none)
        for o in ops.iter().filter(|o| o.results.first().is_none_or(|r| !a.skip.contains(&r.0))) {
            for &x in &o.args {
                if !inside.contains(&x.0) && !outside.contains(&x) {
                    outside.push(x);
                }
            }
        }
        for s in [&a.kl, &a.vl] {
            outside.extend(s.lead.iter().copied());
            outside.extend(s.starts.iter().filter_map(|st| st.scalar).filter(|v| !inside.contains(&v.0)));
        }
        let inits: Vec<ValueId> = op.args[3..].to_vec();
        let mut tiles = vec![];
        for &x in outside.iter().chain(&inits) {
            if self.numel(x) == 1 {
                let r = self.uniform(x).expect("one-element values are uniform");
                self.reprs[x.0 as usize] = Some(Repr::Uniform(r));
            } else if x != a.q && !matches!(self.repr(x), Repr::Uniform(_)) && !tiles.iter().any(|(y, _)| *y == x) {
                let w = self.view(x).expect("a tile that is not uniform has a view");
                tiles.push((x, w));
            }
        }

        // ---- shared memory: the swizzled region, the barriers, Q copied in
        let qb = tile_bytes(bm, d);
        let kvb = tile_bytes(bn, d);
        let stage_bytes = 2 * kvb;
        let region = self.alloc(info.region_bytes as usize);
        let bars = self.alloc(24 * STAGES as usize);
        let raw = self.smem_addr(region, None, DType::F32);
        let rb = self.p.op(Kind::R, "add.u32", &[&raw, &1023]);
        let base = self.p.op(Kind::R, "and.b32", &[&rb, &!1023u32]);
        let ring = self.p.op(Kind::R, "add.u32", &[&base, &qb]);
        let bar_base = self.smem_addr(bars, None, DType::F32);
        let qv = self.view(a.q).expect("Q is a tile");
        let qsrc = super::lower::Src::V(qv, vec![a.bm, a.d], a.dtype);
        self.hazard(true, true, None, None);
        self.chunk_loop(a.bm * a.d, &mut |l, _, e| {
            let x = l.read(&qsrc, 0, e);
            let r = l.p.op(Kind::R, "div.u32", &[&e, &d]);
            let cc = l.p.op(Kind::R, "rem.u32", &[&e, &d]);
            let off = l.swz_off(r, cc, a.bm, a.d);
            let at = l.p.op(Kind::R, "add.u32", &[&base, &off]);
            l.st_shared(a.dtype, at, x);
            Ok(())
        })?;
        self.init_ring_barriers(bar_base, STAGES, 128 * c, 1);

        // ---- outer TMA coordinates of K and V (leading indices; -1 when out of range)
        let mut outer = vec![];
        for s in [&a.kl, &a.vl] {
            let tv = self.tensors[s.tensor].clone().expect("a tensor parameter");
            let mut flat = self.p.mov(Kind::D, 0);
            let mut ok = self.p.op(Kind::P, "setp.eq.u32", &[&self.tid, &self.tid]);
            for (i, &v) in s.lead.iter().enumerate() {
                let x = self.uniform(v).expect("leading indices are uniform");
                let w = self.p.op(Kind::D, "cvt.s64.s32", &[&x]);
                let inr = self.p.op(Kind::P, "setp.lt.u64", &[&w, &tv.shape[i]]);
                ok = self.p.op(Kind::P, "and.pred", &[&ok, &inr]);
                flat = self.p.op(Kind::D, "mad.lo.s64", &[&flat, &tv.shape[i], &w]);
            }
            let f32r = self.p.op(Kind::R, "cvt.u32.u64", &[&flat]);
            outer.push(self.p.op(Kind::R, "selp.b32", &[&f32r, &-1, &ok]));
        }
        let maps = [a.kl.clone(), a.vl.clone()].map(|s| {
            let span = swizzle::span(d);
            let name = format!("p_{}_tmap_kv", self.k.params[s.tensor].name);
            self.tensor_map_param(TensorMap { param: s.tensor, name, box_cols: span / 2, box_rows: bn, swizzle: span, outer: true })
        });
        let lr = self.trips(lo, hi, step);
        let wg = self.p.op(Kind::R, "shr.u32", &[&self.tid, &7]);
        let (cons, join) = (self.p.label(), self.p.label());
        let entry = self.setmaxnreg_entry(c);

        // ---- producer: warpgroup C, one elected thread issues the TMA copies
        let isp = self.p.op(Kind::P, "setp.eq.u32", &[&wg, &c]);
        self.p.ins(format!("@!{isp} bra {cons}"));
        if entry.is_some() {
            self.p.ins(format!("setmaxnreg.dec.sync.aligned.u32 {PRODUCER_REGS}"));
        }
        let issue = self.p.label();
        let elected = self.p.op(Kind::P, "setp.eq.u32", &[&self.tid, &(128 * c)]);
        self.p.ins(format!("@!{elected} bra {issue}"));
        {
            let it = self.p.mov(Kind::R, 0);
            let top = self.p.label();
            self.p.place(&top);
            let fin = self.p.op(Kind::P, "setp.ge.u32", &[&it, &lr.trips]);
            self.p.ins(format!("@{fin} bra {issue}"));
            let (s, ph) = self.stage_phase(it);
            let ph1 = self.p.op(Kind::R, "xor.b32", &[&ph, &1]);
            let eb = self.p.op(Kind::R, "mad.lo.u32", &[&s, &8, &bar_base]);
            let eb = self.p.op(Kind::R, "add.u32", &[&eb, &(8 * STAGES)]);
            self.wait_parity(eb, ph1);
            let (kf, vf) = self.kv_full(bar_base, s);
            let iv = self.iv_at(&lr, it);
            let dst = self.p.op(Kind::R, "mad.lo.u32", &[&s, &stage_bytes, &ring]);
            let span = swizzle::span(d);
            for (j, (sl, fb)) in [(&a.kl, kf), (&a.vl, vf)].into_iter().enumerate() {
                // K and V complete separately: S = Q·Kᵀ may start before V has landed
                self.p.ins(format!("mbarrier.arrive.expect_tx.shared::cta.b64 _, [{fb}], {}", swizzle::tile_bytes(bn, d)));
                let st = self.tile_starts_at(body, &a.staged.slice, &sl.starts, iv)?;
                for blk in 0..d * 2 / span {
                    let c0 = self.p.op(Kind::R, "add.s32", &[&st[1], &(blk * span / 2)]);
                    let at = self.p.op(Kind::R, "add.u32", &[&dst, &(j as u32 * kvb + blk * bn * span)]);
                    self.p.ins(format!(
                        "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [{at}], [{}, {{{c0}, {}, {}}}], [{fb}]",
                        maps[j], st[0], outer[j]
                    ));
                }
            }
            self.p.ins(format!("add.u32 {it}, {it}, 1"));
            self.p.ins(format!("bra {top}"));
        }
        self.p.place(&issue);
        if let Some(e) = entry {
            self.p.ins(format!("setmaxnreg.inc.sync.aligned.u32 {e}"));
        }
        self.p.ins(format!("bra {join}"));

        // ---- consumers: warpgroups 0..C
        self.p.place(&cons);
        let isc = self.p.op(Kind::P, "setp.lt.u32", &[&wg, &c]);
        self.p.ins(format!("@!{isc} bra {join}"));
        if entry.is_some() {
            self.p.ins(format!("setmaxnreg.inc.sync.aligned.u32 {CONSUMER_REGS}"));
        }
        let lt = self.p.op(Kind::R, "and.b32", &[&self.tid, &127]);
        let wv = self.p.op(Kind::R, "shr.u32", &[&lt, &5]);
        let lane = self.p.op(Kind::R, "and.b32", &[&lt, &31]);
        let g = self.p.op(Kind::R, "shr.u32", &[&lane, &2]);
        let t4 = self.p.op(Kind::R, "and.b32", &[&lane, &3]);
        let r0 = self.p.op(Kind::R, "shl.b32", &[&wg, &6]);
        let r0 = self.p.op(Kind::R, "mad.lo.u32", &[&wv, &16, &r0]);
        let r0 = self.p.op(Kind::R, "add.u32", &[&r0, &g]);
        let r8 = self.p.op(Kind::R, "add.u32", &[&r0, &8]);
        let col0 = self.p.op(Kind::R, "shl.b32", &[&t4, &1]);
        let ln = Lanes { rows: [r0, r8], col0, t4, tid_wg: lt };
        // tiles from before the loop, read from their views (the barrier above made them visible)
        let mut fr: HashMap<u32, Fv> = HashMap::new();
        for (x, w) in &tiles {
            let cl = class_of(self.k, *x, a.bm, &a.roles).expect("checked by match_attn");
            let fv = self.read_view_frag(w, *x, cl, &ln);
            fr.insert(x.0, fv);
        }
        // carried registers
        let mut carried = vec![];
        for (i, &arg) in body.args[1..].iter().enumerate() {
            let cl = class_of(self.k, arg, a.bm, &a.roles).expect("checked by match_attn");
            let init = self.fv(&fr, inits[i]);
            let regs: Vec<Reg> = (0..cl.regs()).map(|_| self.p.reg(ekind(self.dtype(arg)))).collect();
            let dst = Fv { class: cl, regs };
            self.move_fv(&[init], std::slice::from_ref(&dst));
            carried.push(dst);
        }
        let a_slice = self.p.op(Kind::R, "mul.lo.u32", &[&wg, &(64 * swizzle::span(d))]);
        let q_a = self.p.op(Kind::R, "add.u32", &[&base, &a_slice]);
        // with the Q·Kᵀ overlap, S of tile 0 is issued before the loop (module docs)
        let s_live = a.overlap.then(|| (0..a.bn / 2).map(|_| self.p.mov(Kind::F, fimm(0.0))).collect::<Vec<Reg>>());
        if let Some(sr) = &s_live {
            let none = self.p.label();
            let empty = self.p.op(Kind::P, "setp.eq.u32", &[&lr.trips, &0]);
            self.p.ins(format!("@{empty} bra {none}"));
            let zero = self.p.mov(Kind::R, 0);
            let (kf0, _) = self.kv_full(bar_base, zero);
            self.wait_parity(kf0, zero);
            self.qk_issue(a, sr, q_a, ring, true);
            self.p.place(&none);
        }
        let it = self.p.mov(Kind::R, 0);
        let (top, done) = (self.p.label(), self.p.label());
        self.p.place(&top);
        let fin = self.p.op(Kind::P, "setp.ge.u32", &[&it, &lr.trips]);
        self.p.ins(format!("@{fin} bra {done}"));
        let (s, ph) = self.stage_phase(it);
        let (kfull, vfull) = self.kv_full(bar_base, s);
        let kbase = self.p.op(Kind::R, "mad.lo.u32", &[&s, &stage_bytes, &ring]);
        let vbase = self.p.op(Kind::R, "add.u32", &[&kbase, &kvb]);
        let next = s_live.as_ref().map(|sr| {
            let it1 = self.p.op(Kind::R, "add.u32", &[&it, &1]);
            let more = self.p.op(Kind::P, "setp.lt.u32", &[&it1, &lr.trips]);
            let (s1, ph1) = self.stage_phase(it1);
            let (kf1, _) = self.kv_full(bar_base, s1);
            let kb1 = self.p.op(Kind::R, "mad.lo.u32", &[&s1, &stage_bytes, &ring]);
            NextQk { s: sr.clone(), more, kfull: kf1, ph: ph1, kbase: kb1 }
        });
        let iv = self.iv_at(&lr, it);
        self.reprs[body.args[0].0 as usize] = Some(Repr::Uniform(iv));
        for (i, &arg) in body.args[1..].iter().enumerate() {
            fr.insert(arg.0, carried[i].clone());
        }
        let ctx = Ctx { a, ln: &ln, q_a, kbase, vbase, kfull, vfull, ph, next };
        let ys = self.frag_block(body, &ctx, &mut fr)?;
        self.move_fv(&ys, &carried);
        let eb = self.p.op(Kind::R, "mad.lo.u32", &[&s, &8, &bar_base]);
        let eb = self.p.op(Kind::R, "add.u32", &[&eb, &(8 * STAGES)]);
        self.p.ins(format!("mbarrier.arrive.shared::cta.b64 _, [{eb}]"));
        self.p.ins(format!("add.u32 {it}, {it}, 1"));
        self.p.ins(format!("bra {top}"));
        self.p.place(&done);
        // carried values out to shared buffers in the generic layout: inside the region (Q and
        // the K/V ring are dead once every consumer is past its last `wgmma`; all TMA copies
        // have landed, each one's `full` barrier was waited on) when they fit, else their own
        let layouts: Vec<(usize, Vec<i64>)> = op
            .results
            .iter()
            .zip(&carried)
            .map(|(&res, fv)| match fv.class {
                Class::Full(x) => {
                    let pitch = if x.is_multiple_of(32) && esize(self.dtype(res)) == 4 { x + 4 } else { x };
                    (a.bm * pitch * esize(self.dtype(res)) as usize, vec![pitch as i64, 1])
                }
                _ => {
                    let shape = self.shape(res);
                    (shape.iter().product::<usize>() * esize(self.dtype(res)) as usize, row_major(&shape))
                }
            })
            .collect();
        let reuse = out_offsets(&layouts.iter().map(|l| l.0).collect::<Vec<_>>(), info.region_bytes as usize);
        if reuse.is_some() {
            // the consumer warpgroups only: the producer never touches the region again
            self.p.ins(format!("bar.sync {CONSUMER_BAR}, {}", 128 * c));
        }
        let mut outs = vec![];
        for (i, (&res, (bytes, strides))) in op.results.iter().zip(layouts).enumerate() {
            let buf = match &reuse {
                Some(offs) => self.alloc_within(region, offs[i] as u32, bytes),
                None => self.alloc(bytes),
            };
            self.write_frag(buf, &strides, self.dtype(res), &carried[i], &ln);
            outs.push((res, View { buf, strides }));
        }
        if let Some(e) = entry {
            self.p.ins(format!("setmaxnreg.dec.sync.aligned.u32 {e}"));
        }
        self.p.place(&join);
        self.barrier();
        for (res, w) in outs {
            self.set(res, Repr::View(w));
        }
        self.hz.gl_r.insert(a.kl.tensor);
        self.hz.gl_r.insert(a.vl.tensor);
        self.attn = Some(AttnInfo { outputs_in_region: reuse.is_some(), overlap_qk: a.overlap, ..info });
        Ok(())
    }

    /// The register count at entry when `setmaxnreg` is used (two or more consumers).
    fn setmaxnreg_entry(&self, consumers: u32) -> Option<u32> {
        (consumers >= 2).then_some(ENTRY_REGS)
    }

    /// Stage `it % STAGES` and phase parity `(it / STAGES) & 1`.
    fn stage_phase(&mut self, it: Reg) -> (Reg, Reg) {
        let s = self.p.op(Kind::R, "rem.u32", &[&it, &STAGES]);
        let ph = self.p.op(Kind::R, "div.u32", &[&it, &STAGES]);
        let ph = self.p.op(Kind::R, "and.b32", &[&ph, &1]);
        (s, ph)
    }

    /// The fragment value of `v`: lowered in the loop, or a uniform from before it.
    fn fv(&mut self, fr: &HashMap<u32, Fv>, v: ValueId) -> Fv {
        if let Some(f) = fr.get(&v.0) {
            return f.clone();
        }
        match self.repr(v) {
            Repr::Uniform(r) => Fv { class: Class::U, regs: vec![r] },
            _ => panic!("lower-ptx (attn): %{} has no fragment form (match_attn checks this)", v.0),
        }
    }

    /// Move `src[i]` into the registers of `dst[i]` (a parallel copy; classes expand).
    fn move_fv(&mut self, src: &[Fv], dst: &[Fv]) {
        let mut tmps = vec![];
        for (s, d) in src.iter().zip(dst) {
            let ty = if d.regs[0].kind == Kind::F { "f32" } else { "b32" };
            let t: Vec<Reg> = (0..d.regs.len()).map(|i| self.p.op(d.regs[0].kind, &format!("mov.{ty}"), &[&s.regs[s.class.pick(d.class, i)]])).collect();
            tmps.push(t);
        }
        for (t, d) in tmps.iter().zip(dst) {
            let ty = if d.regs[0].kind == Kind::F { "f32" } else { "b32" };
            for (x, y) in t.iter().zip(&d.regs) {
                self.p.ins(format!("mov.{ty} {y}, {x}"));
            }
        }
    }

    /// (row, column) registers of register `i` of class `cl` (`None` where the class has no
    /// such coordinate).
    fn coords(&mut self, cl: Class, i: usize, ln: &Lanes) -> (Option<Reg>, Option<Reg>) {
        let row = match cl {
            Class::Row => Some(ln.rows[i]),
            Class::Full(_) => Some(ln.rows[frag::acc_half(i as u32) as usize]),
            _ => None,
        };
        let col = match cl {
            Class::Col(_) | Class::Full(_) => {
                let off = frag::acc_col(0, i as u32);
                Some(self.p.op(Kind::R, "add.u32", &[&ln.col0, &off]))
            }
            _ => None,
        };
        (row, col)
    }

    /// Read tile `x` (class `cl`) from view `w` into fragment registers.
    fn read_view_frag(&mut self, w: &View, x: ValueId, cl: Class, ln: &Lanes) -> Fv {
        let dt = self.dtype(x);
        let rank = self.shape(x).len();
        let mut regs = vec![];
        for i in 0..cl.regs() {
            let (r, c) = self.coords(cl, i, ln);
            let mut e = self.p.mov(Kind::R, 0);
            if let Some(r) = r {
                e = self.p.op(Kind::R, "mad.lo.u32", &[&r, &w.strides[0], &e]);
            }
            if let Some(c) = c {
                e = self.p.op(Kind::R, "mad.lo.u32", &[&c, &w.strides[rank - 1], &e]);
            }
            let at = self.smem_addr(w.buf, Some(e), dt);
            regs.push(self.ld_shared(dt, at));
        }
        Fv { class: cl, regs }
    }

    /// Write a carried value to `buf` (element `strides`): each element once (`Row`: the
    /// quad's lane 0; `U`: thread 0 of the warpgroup — all consumers hold the same value).
    fn write_frag(&mut self, buf: usize, strides: &[i64], dt: DType, fv: &Fv, ln: &Lanes) {
        let skip = self.p.label();
        match fv.class {
            Class::U => {
                let z = self.p.op(Kind::P, "setp.ne.u32", &[&ln.tid_wg, &0]);
                self.p.ins(format!("@{z} bra {skip}"));
            }
            Class::Row => {
                let z = self.p.op(Kind::P, "setp.ne.u32", &[&ln.t4, &0]);
                self.p.ins(format!("@{z} bra {skip}"));
            }
            _ => {}
        }
        for i in 0..fv.regs.len() {
            let (r, c) = self.coords(fv.class, i, ln);
            let mut e = self.p.mov(Kind::R, 0);
            if let Some(r) = r {
                e = self.p.op(Kind::R, "mad.lo.u32", &[&r, &strides[0], &e]);
            }
            if let Some(c) = c {
                e = self.p.op(Kind::R, "add.u32", &[&c, &e]);
            }
            let at = self.smem_addr(buf, Some(e), dt);
            self.st_shared(dt, at, fv.regs[i]);
        }
        self.p.place(&skip);
    }

    /// Lower the ops of `b` in the fragment layout; the values it yields.
    fn frag_block(&mut self, b: &Block, cx: &Ctx, fr: &mut HashMap<u32, Fv>) -> Result<Vec<Fv>> {
        for op in &b.ops {
            if op.kind == OpKind::Yield {
                return Ok(op.args.iter().map(|&v| self.fv(fr, v)).collect());
            }
            if op.results.iter().any(|r| cx.a.skip.contains(&r.0)) {
                continue;
            }
            if op.kind != OpKind::If && op.results.iter().all(|r| self.numel(*r) == 1) {
                self.lower_op(op)?;
                continue;
            }
            let res = op.results.first().copied();
            let out = match &op.kind {
                OpKind::If => {
                    self.frag_if(op, cx, fr)?;
                    continue;
                }
                OpKind::Const(s) => {
                    let r = self.const_reg(*s, self.dtype(op.result()));
                    Fv { class: Class::U, regs: vec![r] }
                }
                OpKind::Arange => {
                    let cl = class_of(self.k, op.result(), cx.a.bm, &cx.a.roles).expect("checked");
                    let regs = (0..cl.regs())
                        .map(|i| {
                            let (r, c) = self.coords(cl, i, cx.ln);
                            r.or(c).expect("a row or a column")
                        })
                        .collect();
                    Fv { class: cl, regs }
                }
                OpKind::Broadcast | OpKind::ExpandDims(_) | OpKind::Reshape => {
                    if self.numel(op.args[0]) == 1 {
                        let r = self.uniform(op.args[0]).expect("uniform");
                        Fv { class: Class::U, regs: vec![r] }
                    } else {
                        self.fv(fr, op.args[0])
                    }
                }
                OpKind::Cast(_) if self.dtype(op.args[0]) == self.dtype(op.result()) => self.fv(fr, op.args[0]),
                OpKind::Reduce { op: rop, .. } => {
                    let x = self.fv(fr, op.args[0]);
                    self.frag_row_reduce(*rop, &x)
                }
                OpKind::Dot if op.args[0] == cx.a.q => self.frag_qk(op, cx, fr)?,
                OpKind::Dot => self.frag_pv(op, cx, fr)?,
                _ => {
                    let xs: Vec<Fv> = op.args.iter().map(|&v| self.fv(fr, v)).collect();
                    let mut cl = Class::U;
                    for x in &xs {
                        cl = Class::join(cl, x.class).ok_or_else(|| self.unsupported(op, "operands of different fragment layouts"))?;
                    }
                    let mut regs = vec![];
                    for i in 0..cl.regs() {
                        let args: Vec<Reg> = xs.iter().map(|x| x.regs[x.class.pick(cl, i)]).collect();
                        regs.push(self.elem_op(op, &args)?);
                    }
                    Fv { class: cl, regs }
                }
            };
            fr.insert(res.expect("a result").0, out);
        }
        Ok(vec![])
    }

    /// A uniform `if` whose results live in fragment registers.
    fn frag_if(&mut self, op: &Op, cx: &Ctx, fr: &mut HashMap<u32, Fv>) -> Result<()> {
        let c = self.uniform(op.args[0]).ok_or_else(|| self.unsupported(op, "the condition must be a scalar"))?;
        let dst: Vec<Fv> = op
            .results
            .iter()
            .map(|&r| {
                let cl = if self.numel(r) == 1 { Class::U } else { class_of(self.k, r, cx.a.bm, &cx.a.roles).expect("checked") };
                Fv { class: cl, regs: (0..cl.regs()).map(|_| self.p.reg(ekind(self.dtype(r)))).collect() }
            })
            .collect();
        let (else_l, end) = (self.p.label(), self.p.label());
        let p = self.p.op(Kind::P, "setp.eq.b32", &[&c, &0]);
        self.p.ins(format!("@{p} bra {else_l}"));
        for (i, region) in op.regions.iter().enumerate() {
            if i == 1 {
                self.p.place(&else_l);
            }
            let ys = self.frag_block(region, cx, fr)?;
            if ys.len() != dst.len() {
                return Err(self.unsupported(op, "a region yields the wrong number of values"));
            }
            self.move_fv(&ys, &dst);
            if i == 0 {
                self.p.ins(format!("bra {end}"));
            }
        }
        if op.regions.len() == 1 {
            self.p.place(&else_l);
        }
        self.p.place(&end);
        for (r, f) in op.results.iter().zip(dst) {
            if self.numel(*r) == 1 {
                self.reprs[r.0 as usize] = Some(Repr::Uniform(f.regs[0]));
            } else {
                fr.insert(r.0, f);
            }
        }
        Ok(())
    }

    /// Reduce a `Full` f32 tile along its columns: a local fold per half-row, then the quad.
    fn frag_row_reduce(&mut self, rop: ReduceOp, x: &Fv) -> Fv {
        let mut regs = vec![];
        for h in 0..2u32 {
            let mine: Vec<Reg> = (0..x.regs.len()).filter(|&i| frag::acc_half(i as u32) == h).map(|i| x.regs[i]).collect();
            let mut acc = mine[0];
            let combine = |l: &mut Self, a: Reg, b: Reg| match rop {
                ReduceOp::Max => l.fmaxmin(a, b, true),
                ReduceOp::Min => l.fmaxmin(a, b, false),
                _ => l.p.op(Kind::F, "add.rn.f32", &[&a, &b]),
            };
            for &r in &mine[1..] {
                acc = combine(self, acc, r);
            }
            for m in [1, 2] {
                let o = self.p.op(Kind::F, "shfl.sync.bfly.b32", &[&acc, &m, &0x1f, &"0xffffffff"]);
                acc = combine(self, acc, o);
            }
            regs.push(acc);
        }
        Fv { class: Class::Row, regs }
    }

    /// Fresh `Full(n)` accumulator registers holding `init` (zeros without one).
    fn acc_regs(&mut self, fr: &HashMap<u32, Fv>, init: Option<ValueId>, n: usize) -> Vec<Reg> {
        let to = Class::Full(n);
        let src = match init {
            Some(v) => self.fv(fr, v),
            None => Fv { class: Class::U, regs: vec![self.p.mov(Kind::F, fimm(0.0))] },
        };
        (0..n / 2).map(|i| self.p.mov(Kind::F, src.regs[src.class.pick(to, i)])).collect()
    }

    /// `S = dot(Q, trans(K) [, acc])`: both operands from swizzled shared memory. With the
    /// overlap (`cx.next`), this tile's S was issued one step earlier: wait for it, copy it out
    /// of the accumulator registers and issue the next tile's into them before the softmax.
    fn frag_qk(&mut self, op: &Op, cx: &Ctx, fr: &HashMap<u32, Fv>) -> Result<Fv> {
        let a = cx.a;
        if let Some(nx) = &cx.next {
            self.p.ins("wgmma.wait_group.sync.aligned 0");
            let regs: Vec<Reg> = nx.s.iter().map(|r| self.p.mov(Kind::F, *r)).collect();
            let skip = self.p.label();
            self.p.ins(format!("@!{} bra {skip}", nx.more));
            self.wait_parity(nx.kfull, nx.ph);
            self.qk_issue(a, &nx.s, cx.q_a, nx.kbase, true);
            self.p.place(&skip);
            return Ok(Fv { class: Class::Full(a.bn), regs });
        }
        self.wait_parity(cx.kfull, cx.ph);
        let regs = self.acc_regs(fr, op.args.get(2).copied(), a.bn);
        self.qk_issue(a, &regs, cx.q_a, cx.kbase, false);
        self.p.ins("wgmma.wait_group.sync.aligned 0");
        Ok(Fv { class: Class::Full(a.bn), regs })
    }

    /// Issue and commit (without waiting) the `D/16` `wgmma`s of `regs += Q·Kᵀ` for the K tile
    /// at `kbase` (`regs` hold the initial value: zeros or the dot's accumulator), or of
    /// `regs = Q·Kᵀ` when `fresh` (the first step's scale-d predicate is false).
    fn qk_issue(&mut self, a: &AttnLoop, regs: &[Reg], q_a: Reg, kbase: Reg, fresh: bool) {
        let (bm, bn, d) = (a.bm as u32, a.bn as u32, a.d as u32);
        let ty = if a.dtype == DType::F16 { "f16" } else { "bf16" };
        let qf = swizzle::desc_fields(bm, d, true);
        let kf = swizzle::desc_fields(bn, d, true);
        let one = self.p.op(Kind::P, "setp.eq.u32", &[&kbase, &kbase]);
        let first = if fresh { self.p.op(Kind::P, "setp.ne.u32", &[&kbase, &kbase]) } else { one };
        let list = regs.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ");
        self.p.ins("wgmma.fence.sync.aligned");
        for ks in 0..d / 16 {
            let da = self.descriptor(q_a, swizzle::k16_off(bm, d, true, ks), qf);
            let db = self.descriptor(kbase, swizzle::k16_off(bn, d, true, ks), kf);
            let sd = if ks == 0 { first } else { one };
            self.p.ins(format!("wgmma.mma_async.sync.aligned.m64n{bn}k16.f32.{ty}.{ty} {{{list}}}, {da}, {db}, {sd}, 1, 1, 0, 0"));
        }
        self.p.ins("wgmma.commit_group.sync.aligned");
    }

    /// The K and V `full` barriers of stage `s` (module docs: `[full K][empty][full V]`).
    fn kv_full(&mut self, bar_base: Reg, s: Reg) -> (Reg, Reg) {
        let k = self.p.op(Kind::R, "mad.lo.u32", &[&s, &8, &bar_base]);
        let v = self.p.op(Kind::R, "add.u32", &[&k, &(16 * STAGES)]);
        (k, v)
    }

    /// `O = dot(P, V [, acc])`: P packed from its fragment registers as the A operand, V from
    /// a swizzled MN-major descriptor.
    fn frag_pv(&mut self, op: &Op, cx: &Ctx, fr: &HashMap<u32, Fv>) -> Result<Fv> {
        let a = cx.a;
        let (bn, d) = (a.bn as u32, a.d as u32);
        let p = self.fv(fr, a.p_f32.unwrap_or(op.args[0]));
        let regs = self.acc_regs(fr, op.args.get(2).copied(), a.d);
        let ty = if a.dtype == DType::F16 { "f16" } else { "bf16" };
        let vf = swizzle::desc_fields(bn, d, false);
        let one = self.p.op(Kind::P, "setp.eq.u32", &[&cx.vbase, &cx.vbase]);
        self.wait_parity(cx.vfull, cx.ph);
        let to = Class::Full(a.bn);
        let mut packs = vec![];
        for kk in 0..bn / 16 {
            let mut aregs = vec![];
            for j in 0..4 {
                let (lo, hi) = frag::p_to_a(kk, j);
                let (xl, xh) = (p.regs[p.class.pick(to, lo as usize)], p.regs[p.class.pick(to, hi as usize)]);
                aregs.push(self.p.op(Kind::R, &format!("cvt.rn.{ty}x2.f32"), &[&xh, &xl]));
            }
            packs.push(aregs);
        }
        let list = regs.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ");
        self.p.ins("wgmma.fence.sync.aligned");
        for (kk, ar) in packs.iter().enumerate() {
            let db = self.descriptor(cx.vbase, swizzle::k16_off(bn, d, false, kk as u32), vf);
            self.p.ins(format!(
                "wgmma.mma_async.sync.aligned.m64n{d}k16.f32.{ty}.{ty} {{{list}}}, {{{}, {}, {}, {}}}, {db}, {one}, 1, 1, 1",
                ar[0], ar[1], ar[2], ar[3]
            ));
        }
        self.p.ins("wgmma.commit_group.sync.aligned");
        self.p.ins("wgmma.wait_group.sync.aligned 0");
        Ok(Fv { class: Class::Full(a.d), regs })
    }
}

/// What the body's fragment lowering needs.
struct Ctx<'a> {
    a: &'a AttnLoop,
    ln: &'a Lanes,
    /// Shared address of this warpgroup's 64-row slice of Q.
    q_a: Reg,
    kbase: Reg,
    vbase: Reg,
    /// This tile's K and V `full` barriers and their phase parity.
    kfull: Reg,
    vfull: Reg,
    ph: Reg,
    /// With the Q·Kᵀ overlap: where the next tile's S is issued.
    next: Option<NextQk>,
}

/// The in-flight `S = Q·Kᵀ` of the overlap: its accumulator registers (this tile's S on
/// entry), whether a next tile exists, and that tile's K barrier, parity and K stage address.
struct NextQk {
    s: Vec<Reg>,
    more: Reg,
    kfull: Reg,
    ph: Reg,
    kbase: Reg,
}
