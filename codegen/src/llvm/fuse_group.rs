//! Reduction groups: last-dim reductions of one block whose input trees share values run as one
//! fused loop, each shared value evaluated once per chunk.
//!
//! `fuse.rs` fuses a tree into its reduction only through values with a single use. A tile read
//! by two reductions (`max(zt)` and `argmax(zt)`), or an `exp` summed three ways (the KL terms
//! of `kl_judge`), then stays a chain of arena loops, one per op. Here such reductions form a
//! group ([`Lower::plan_groups`]) when
//! - every use of each shared value lies inside the group's trees (in this block, none nested),
//! - every reduction of the group reduces the same shape along its last dim,
//! - the trees' unfused leaves are all defined before the group's first reduction (where the
//!   loop runs). Reductions whose trees read an earlier one's result (the sums of
//!   `exp(x - max(x))`) form a later stage: a second loop that evaluates the shared values again.
//!
//! The loop ([`Lower::fused_group`]) walks each output row chunk by chunk and updates one
//! accumulator per reduction; point values are memoized per chunk (`Lower::pe_memo`), so each
//! shared subtree (a load, an `exp`) is emitted once. Loads get the loop versioning of
//! `fuse.rs` (unmasked full chunks when the corner chunks are in bounds).
//!
//! `argmax` / `argmin` join groups too: each lane keeps its first best value and its index
//! (lanes see increasing indices), float NaNs are skipped (a lane starts "absent" as NaN); the
//! lanes are then combined in scalar code: the best value, ties to the smaller index, an all-NaN
//! row 0 — exactly the interpreter's first-best rule. Sums are reassociated as in `fuse.rs`.

use std::collections::{BTreeSet, HashMap, HashSet};

use opc_ir::{Block, DType, Op, OpKind, ReduceOp, ValueId};

use super::fuse::{Bounds, Ix};
use super::lower::{ety, iota, lane_mask, lanes_for, row_major, Lower, Repr};
use super::text::{cst, flit, vt};
use crate::Result;

/// Reduction groups of a block: the op index of each group's first reduction (where its loop
/// runs) → the op indices of all its reductions, ascending, and whether it is the first stage
/// of its component (the loop that reads the tile from memory first).
pub(super) type Groups = HashMap<usize, (Vec<usize>, bool)>;

/// A last-dim reduction that a group loop can compute: its kind, or `None`.
fn groupable(l: &Lower, op: &Op) -> Option<ReduceOp> {
    let OpKind::Reduce { op: rop, axis } = op.kind else { return None };
    let t = l.k.ty(op.args[0]);
    let r = t.rank();
    (r > 0 && axis as usize == r - 1 && t.shape[r - 1] > 0 && !t.dtype.is_code()).then_some(rop)
}

/// Ops a group may evaluate inside its loop (the kinds `fuse.rs` fuses).
fn fusible_kind(op: &Op) -> bool {
    matches!(
        op.kind,
        OpKind::Unary(_) | OpKind::Binary(_) | OpKind::Cmp(_) | OpKind::Select | OpKind::Cast(_) | OpKind::Bitcast | OpKind::ExpandDims(_) | OpKind::Broadcast | OpKind::Reshape | OpKind::Load { .. }
    )
}

/// Union-find root.
fn root(p: &mut HashMap<usize, usize>, x: usize) -> usize {
    let up = *p.get(&x).unwrap_or(&x);
    if up == x {
        return x;
    }
    let r = root(p, up);
    p.insert(x, r);
    r
}

impl Lower<'_> {
    /// Find the reduction groups of `blk` (see the module docs), record their fused ops in
    /// `plan` (op index → the group's first reduction) and `self.fused`.
    pub(super) fn plan_groups(&mut self, blk: &Block, def: &HashMap<ValueId, usize>, plan: &mut HashMap<usize, usize>) -> Groups {
        let mut users: HashMap<ValueId, Vec<usize>> = HashMap::new();
        for (i, op) in blk.ops.iter().enumerate() {
            for &a in &op.args {
                users.entry(a).or_default().push(i);
            }
        }
        // The reductions each value flows into, through fusible ops only (None: it escapes).
        let mut sink: HashMap<ValueId, BTreeSet<usize>> = HashMap::new();
        for (i, op) in blk.ops.iter().enumerate().rev() {
            if op.results.len() != 1 || !fusible_kind(op) || self.k.ty(op.result()).rank() == 0 {
                continue;
            }
            let v = op.result();
            let Some(us) = users.get(&v) else { continue };
            if us.len() as u32 != self.uses[v.0 as usize] || us.iter().any(|&u| u <= i) {
                continue;
            }
            let mut s = BTreeSet::new();
            let all = us.iter().all(|&u| {
                let uo = &blk.ops[u];
                if groupable(self, uo).is_some() && uo.args[0] == v {
                    s.insert(u);
                    return true;
                }
                match uo.results.first().and_then(|r| sink.get(r)) {
                    Some(t) if uo.results.len() == 1 => {
                        s.extend(t.iter().copied());
                        true
                    }
                    _ => false,
                }
            });
            if all && !s.is_empty() {
                sink.insert(v, s);
            }
        }
        // Reductions sharing a value with several uses are grouped.
        let shared: Vec<ValueId> = sink.keys().copied().filter(|v| self.uses[v.0 as usize] > 1).collect();
        let mut parent: HashMap<usize, usize> = HashMap::new();
        let mut members: BTreeSet<usize> = BTreeSet::new();
        for v in &shared {
            let s: Vec<usize> = sink[v].iter().copied().collect();
            members.extend(&s);
            for w in &s[1..] {
                let (a, b) = (root(&mut parent, s[0]), root(&mut parent, *w));
                parent.insert(a.max(b), a.min(b));
            }
        }
        let mut comps: HashMap<usize, Vec<usize>> = HashMap::new();
        for &m in &members {
            let r = root(&mut parent, m);
            comps.entry(r).or_default().push(m);
        }
        let mut groups = Groups::new();
        for (_, reds) in comps {
            let multi: HashSet<ValueId> = shared.iter().copied().filter(|v| sink[v].iter().all(|r| reds.contains(r))).collect();
            if self.apart_is_better(blk, def, &reds, &multi) {
                continue;
            }
            let Some(stages) = self.stages(blk, def, &users, &reds, &multi) else { continue };
            for (k, (members, set)) in stages.into_iter().enumerate() {
                let f = members[0];
                for v in set {
                    // a value a later stage evaluates again: its operands live until then
                    let j = def[&v];
                    let site = plan.entry(j).or_insert(f);
                    *site = (*site).max(f);
                    self.fused.insert(v, blk.ops[j].clone());
                }
                for &r in &members[1..] {
                    plan.insert(r, f);
                }
                groups.insert(f, (members, k == 0));
            }
        }
        groups
    }

    /// Whether the sums `reds`, sharing only loaded tiles (or views of them) and index math
    /// (`multi`), run better apart: each then gets `fuse.rs`'s loop (rows in groups, one FMA
    /// per element, block-scaled products folded per block, `fuse_block.rs`) and the shared
    /// tile is read once into the arena, where the group loop would walk one row at a time
    /// with a multiply and an add.
    fn apart_is_better(&self, blk: &Block, def: &HashMap<ValueId, usize>, reds: &[usize], multi: &HashSet<ValueId>) -> bool {
        let sums = reds.iter().all(|&r| matches!(blk.ops[r].kind, OpKind::Reduce { op: ReduceOp::Sum, .. }) && self.dtype(blk.ops[r].args[0]) == DType::F32);
        sums && multi.iter().all(|&v| Self::loaded(blk, def, v) || self.dtype(v) == DType::I32)
    }

    /// Whether `v` is a load of this block, possibly through views and casts (bf16 activations
    /// widened to f32: the shared tile is then written to the arena widened, once).
    fn loaded(blk: &Block, def: &HashMap<ValueId, usize>, v: ValueId) -> bool {
        let Some(&i) = def.get(&v) else { return false };
        match blk.ops[i].kind {
            OpKind::Load { .. } => true,
            OpKind::ExpandDims(_) | OpKind::Broadcast | OpKind::Reshape | OpKind::Cast(_) => Self::loaded(blk, def, blk.ops[i].args[0]),
            _ => false,
        }
    }

    /// Split a component of reductions `reds` (ascending op indices) sharing the values `multi`
    /// into stages, one loop each: a reduction joins the current stage when its tree's leaves
    /// are all defined before the stage's first reduction, else it starts the next stage (a
    /// tile max, then the sums of `exp(x - max)`: two loops, the tile recomputed from its
    /// loads in the second). Returns each stage's members and fused values, or `None` when the
    /// component does not qualify (module docs).
    fn stages(&self, blk: &Block, def: &HashMap<ValueId, usize>, users: &HashMap<ValueId, Vec<usize>>, reds: &[usize], multi: &HashSet<ValueId>) -> Option<Vec<(Vec<usize>, HashSet<ValueId>)>> {
        let mut stages: Vec<(Vec<usize>, HashSet<ValueId>)> = vec![];
        let mut all = HashSet::new();
        for &r in reds {
            let x = blk.ops[r].args[0];
            let mut set = HashSet::new();
            if !self.want_shared(blk, def, x, r, &mut set, multi) {
                return None;
            }
            all.extend(set.iter().copied());
            // Leaves of the tree: operands outside it, defined in this block.
            let ready = |f: usize| {
                set.iter().all(|v| blk.ops[def[v]].args.iter().all(|a| set.contains(a) || def.get(a).is_none_or(|&j| j < f)))
            };
            match stages.last_mut() {
                Some((m, s)) if self.shape(blk.ops[m[0]].args[0]) == self.shape(x) && ready(m[0]) => {
                    m.push(r);
                    s.extend(set);
                }
                _ => stages.push((vec![r], set)),
            }
        }
        // Closed: every use of a fused value is fused (in some stage) or a member's input.
        let fused_at: HashSet<usize> = all.iter().map(|v| def[v]).collect();
        for v in &all {
            let us = users.get(v).map_or(&[][..], |u| &u[..]);
            if self.uses[v.0 as usize] as usize != us.len() || us.iter().any(|&u| !fused_at.contains(&u) && !(reds.contains(&u) && blk.ops[u].args[0] == *v)) {
                return None;
            }
        }
        // Shared values left unfused (index math) are computed where they stand, as leaves.
        multi.iter().any(|v| all.contains(v)).then_some(stages)
    }

    /// The reductions `ops` (a group planned by [`Lower::plan_groups`]) in one loop per row.
    /// A first stage prefetches, along with each contiguous load, the same elements one row
    /// length further: the next tile of a loop stepping through a long row tile by tile, which
    /// then streams in while later stages compute on this one (a hint: it never faults).
    pub(super) fn fused_group(&mut self, ops: &[Op], first: bool) -> Result<()> {
        let shape = self.shape(ops[0].args[0]);
        let r = shape.len();
        let oshape = shape[..r - 1].to_vec();
        let orm = row_major(&oshape);
        let outs: Vec<u32> = if oshape.is_empty() { vec![] } else { ops.iter().map(|_| self.alloc(oshape.iter().product())).collect() };
        let mut scalars: Vec<String> = vec![];
        self.nest(&oshape, &mut |l, oidx| {
            let ys = l.group_row(ops, oidx, first)?;
            if outs.is_empty() {
                scalars = ys;
                return Ok(());
            }
            let e = l.linear(oidx, &orm);
            for ((op, y), &out) in ops.iter().zip(&ys).zip(&outs) {
                l.store_arena(ety(l.dtype(op.result())), 0, out, &e, y, None);
            }
            Ok(())
        })?;
        for (k, op) in ops.iter().enumerate() {
            if outs.is_empty() {
                self.def_uniform(op.result(), scalars[k].clone());
            } else {
                self.set(op.result(), Repr::Buf { off: outs[k], strides: orm.clone() });
            }
        }
        Ok(())
    }

    /// One row `prefix` of every reduction of the group: their scalar results.
    fn group_row(&mut self, ops: &[Op], prefix: &[String], first: bool) -> Result<Vec<String>> {
        let shape = self.shape(ops[0].args[0]);
        let n = shape[shape.len() - 1];
        let lanes = lanes_for(n);
        let ti = vt("i32", lanes);
        // Per reduction: kind, input dtype, value slot, index slot (arg reductions).
        let mut accs: Vec<(ReduceOp, DType, String, Option<String>)> = vec![];
        for op in ops {
            let OpKind::Reduce { op: rop, .. } = op.kind else { unreachable!("planned as a reduction") };
            let d = self.dtype(op.args[0]);
            let t = vt(ety(d), lanes);
            let slot = self.f.alloca(&t);
            let init = self.absent(rop, d);
            self.f.inst(format!("store {t} {}, ptr {slot}, align 64", cst(ety(d), lanes, &init)));
            let idx = matches!(rop, ReduceOp::Argmax | ReduceOp::Argmin).then(|| {
                let s = self.f.alloca(&ti);
                self.f.inst(format!("store {ti} zeroinitializer, ptr {s}, align 64"));
                s
            });
            accs.push((rop, d, slot, idx));
        }
        let step = |l: &mut Self, j0: &str, valid: usize| -> Result<()> {
            l.pe_memo = Some(HashMap::new());
            l.prefetch = first.then_some(n as i64);
            for (op, (rop, d, slot, idx)) in ops.iter().zip(&accs) {
                let (base, t) = (ety(*d), vt(ety(*d), lanes));
                let mut ix: Vec<Ix> = prefix.iter().map(|i| Ix::S(i.clone())).collect();
                ix.push(Ix::L(j0.to_string()));
                let v = l.pe(op.args[0], &ix, lanes, valid)?;
                let mut v = l.pv_vec(&v, base, lanes);
                if valid < lanes as usize {
                    let fill = cst(base, lanes, &l.absent(*rop, *d));
                    v = l.f.val(format!("select <{lanes} x i1> {}, {t} {v}, {t} {fill}", lane_mask(lanes, valid)));
                }
                let cur = l.f.val(format!("load {t}, ptr {slot}, align 64"));
                let Some(islot) = idx else {
                    let nx = l.combine(*rop, *d, &cur, &v, lanes);
                    l.f.inst(format!("store {t} {nx}, ptr {slot}, align 64"));
                    continue;
                };
                let tb = vt("i1", lanes);
                let take = l.better(*rop, *d, &v, &cur, lanes);
                let j = l.f.val(format!("trunc i64 {j0} to i32"));
                let js = l.f.splat("i32", lanes, &j);
                let js = l.f.val(format!("add {ti} {js}, {}", iota(lanes, 1)));
                let ci = l.f.val(format!("load {ti}, ptr {islot}, align 64"));
                let ni = l.f.val(format!("select {tb} {take}, {ti} {js}, {ti} {ci}"));
                let nv = l.f.val(format!("select {tb} {take}, {t} {v}, {t} {cur}"));
                l.f.inst(format!("store {ti} {ni}, ptr {islot}, align 64"));
                l.f.inst(format!("store {t} {nv}, ptr {slot}, align 64"));
            }
            l.pe_memo = None;
            l.prefetch = None;
            Ok(())
        };
        let chunks = n / lanes as usize;
        let full = |l: &mut Self| -> Result<()> {
            l.loop_n(chunks, &mut |l, c| {
                let j0 = l.f.val(format!("mul i64 {c}, {lanes}"));
                step(l, &j0, lanes as usize)
            })
        };
        // Loop versioning as in `fuse.rs`: unmasked full chunks when every load of every tree
        // is in bounds at the corner chunks.
        let mut corners: Option<BTreeSet<usize>> = (chunks >= 2 && matches!(self.bounds, Bounds::Masked)).then(BTreeSet::new);
        for op in ops {
            if let Some(c) = corners.as_mut() {
                match self.corner_chunks(op.args[0], n, lanes as usize) {
                    Some(v) => c.extend(v),
                    None => corners = None,
                }
            }
        }
        if let Some(corners) = corners {
            let points: Vec<(ValueId, Vec<Ix>)> = ops
                .iter()
                .flat_map(|op| corners.iter().map(move |&j0| (op.args[0], prefix.iter().map(|i| Ix::S(i.clone())).chain([Ix::L(j0.to_string())]).collect())))
                .collect();
            self.versioned(&points, lanes, &full)?;
        } else {
            full(self)?;
        }
        if n % lanes as usize > 0 {
            step(self, &(chunks * lanes as usize).to_string(), n % lanes as usize)?;
        }
        let mut ys = vec![];
        for (rop, d, slot, idx) in &accs {
            let t = vt(ety(*d), lanes);
            let acc = self.f.val(format!("load {t}, ptr {slot}, align 64"));
            let Some(islot) = idx else {
                let mut s = self.f.val(format!("extractelement {t} {acc}, i64 0"));
                for lane in 1..lanes {
                    let e = self.f.val(format!("extractelement {t} {acc}, i64 {lane}"));
                    s = self.combine(*rop, *d, &s, &e, 0);
                }
                ys.push(self.finish_reduce(*d, &s, 0));
                continue;
            };
            let iv = self.f.val(format!("load {ti}, ptr {islot}, align 64"));
            ys.push(self.lanes_arg(*rop, *d, &acc, &iv, lanes));
        }
        Ok(ys)
    }

    /// The starting / fill value of a lane: the reduction's identity, for arg reductions a
    /// value never taken (NaN for floats, the worst int: such lanes keep index 0, which is
    /// also the interpreter's answer when every element is that worst value).
    fn absent(&self, rop: ReduceOp, d: DType) -> String {
        let float = ety(d) == "float";
        match rop {
            ReduceOp::Argmax | ReduceOp::Argmin if float => flit(f32::NAN),
            ReduceOp::Argmax => i32::MIN.to_string(),
            ReduceOp::Argmin => i32::MAX.to_string(),
            _ => match Self::reduce_identity(rop, d) {
                "-0.0" => flit(-0.0),
                "nan" => flit(f32::NAN),
                s => s.to_string(),
            },
        }
    }

    /// Lanes where `v` replaces the arg reduction's current best `cur` (strictly better; float
    /// NaNs never, and an absent best always).
    fn better(&mut self, rop: ReduceOp, d: DType, v: &str, cur: &str, lanes: u32) -> String {
        let max = rop == ReduceOp::Argmax;
        if ety(d) != "float" {
            return self.f.val(format!("icmp {} {} {v}, {cur}", if max { "sgt" } else { "slt" }, vt("i32", lanes)));
        }
        let (t, tb) = (vt("float", lanes), vt("i1", lanes));
        let ord = self.f.val(format!("fcmp ord {t} {v}, {v}"));
        let none = self.f.val(format!("fcmp uno {t} {cur}, {cur}"));
        let gt = self.f.val(format!("fcmp {} {t} {v}, {cur}", if max { "ogt" } else { "olt" }));
        let c = self.f.val(format!("or {tb} {none}, {gt}"));
        self.f.val(format!("and {tb} {ord}, {c}"))
    }

    /// Combine per-lane (best value, first index) pairs: the best value, ties to the smaller
    /// index; 0 when no lane has a value.
    fn lanes_arg(&mut self, rop: ReduceOp, d: DType, vals: &str, idxs: &str, lanes: u32) -> String {
        let (base, t, ti) = (ety(d), vt(ety(d), lanes), vt("i32", lanes));
        let mut bv = self.f.val(format!("extractelement {t} {vals}, i64 0"));
        let mut bi = self.f.val(format!("extractelement {ti} {idxs}, i64 0"));
        for lane in 1..lanes {
            let v = self.f.val(format!("extractelement {t} {vals}, i64 {lane}"));
            let i = self.f.val(format!("extractelement {ti} {idxs}, i64 {lane}"));
            let better = self.better(rop, d, &v, &bv, 0);
            let eq = if base == "float" { self.f.val(format!("fcmp oeq float {v}, {bv}")) } else { self.f.val(format!("icmp eq i32 {v}, {bv}")) };
            let lower = self.f.val(format!("icmp slt i32 {i}, {bi}"));
            let tie = self.f.val(format!("and i1 {eq}, {lower}"));
            let take = self.f.val(format!("or i1 {better}, {tie}"));
            bv = self.f.val(format!("select i1 {take}, {base} {v}, {base} {bv}"));
            bi = self.f.val(format!("select i1 {take}, i32 {i}, i32 {bi}"));
        }
        bi
    }
}
