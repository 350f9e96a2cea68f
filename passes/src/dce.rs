//! `dce`: remove ops whose results nothing observable needs.
//!
//! **Rewrites.** A liveness analysis from the roots — operands of `store` / `atomic_add`, the
//! control operands (`for` bounds, `if` conditions) of every region that contains one, and the
//! grid's `yield` — marks the values that can reach memory or the grid. Then:
//! - pure ops and `load`s with no live result are removed;
//! - a `for` / `if` without stores in its regions and without live results is removed whole;
//! - a kept `for` drops each loop-carried value whose result and block argument are both dead
//!   (its init, block argument, `yield` operand and result), so an accumulator that is only
//!   updated and never read disappears with its update chain; a kept `if` drops dead results
//!   (and their `yield` operands in both regions).
//!
//! The analysis is global, so one round reaches the fixpoint; the pass still repeats until a
//! round changes nothing, as a guard.
//!
//! **Expects / leaves.** Verified tile IR; leaves verified IR. Removed values stay allocated in
//! `Kernel::values` but unused.
//!
//! **Does not.** Remove stores (even to an element a later store overwrites), loops that store
//! but run zero times, or unreachable branches of an `if` on a constant condition.
//!
//! ```text
//! before:  %3 = exp %1 : f32[64]            (%3 unused)
//!          %4 = add %1, %1 : f32[64]        store @out[%i], %4
//! after:   %4 = add %1, %1 : f32[64]        store @out[%i], %4
//! ```
use opc_ir::{Block, Kernel, Op, OpKind, ValueId};

use crate::analysis::has_effects;
use crate::Pass;

pub struct Dce;

impl Pass for Dce {
    const NAME: &'static str = "dce";
    fn run(kernel: &mut Kernel) -> bool {
        let mut changed = false;
        // One round reaches the fixpoint; the bound only guards against a bug looping forever.
        for _ in 0..8 {
            let live = liveness(kernel);
            let round = sweep(&mut kernel.grid, &live) | sweep(&mut kernel.body, &live);
            if !round {
                break;
            }
            changed = true;
        }
        changed
    }
}

/// `live[v]`: value `v` can reach memory or the grid.
fn liveness(kernel: &Kernel) -> Vec<bool> {
    let n = kernel.values.len();
    let mut deps: Vec<Vec<ValueId>> = vec![vec![]; n];
    let mut roots: Vec<ValueId> = vec![];
    collect(&kernel.body, &[], &mut deps, &mut roots);
    collect(&kernel.grid, &[], &mut deps, &mut roots);
    if let Some(y) = kernel.grid.ops.last().filter(|o| o.kind == OpKind::Yield) {
        roots.extend(&y.args);
    }
    let mut live = vec![false; n];
    while let Some(v) = roots.pop() {
        let i = v.0 as usize;
        if i < n && !live[i] {
            live[i] = true;
            roots.extend(&deps[i]);
        }
    }
    live
}

fn yield_args(b: &Block) -> &[ValueId] {
    match b.ops.last() {
        Some(op) if op.kind == OpKind::Yield => &op.args,
        _ => &[],
    }
}

/// Record what each value needs when it is live, and the roots. `ctrl`: control operands of
/// the enclosing `for` / `if` ops (needed by any effect inside).
fn collect(b: &Block, ctrl: &[ValueId], deps: &mut [Vec<ValueId>], roots: &mut Vec<ValueId>) {
    fn set(deps: &mut [Vec<ValueId>], v: ValueId, d: Vec<ValueId>) {
        if let Some(slot) = deps.get_mut(v.0 as usize) {
            slot.extend(d);
        }
    }
    for op in &b.ops {
        match op.kind {
            OpKind::Store { .. } | OpKind::AtomicAdd { .. } => {
                roots.extend(&op.args);
                roots.extend(ctrl);
            }
            OpKind::Yield => {}
            OpKind::For => {
                let (bounds, inits) = op.args.split_at(3.min(op.args.len()));
                let body = &op.regions[0];
                let ys = yield_args(body);
                if let Some(&iv) = body.args.first() {
                    set(deps, iv, bounds.to_vec());
                }
                for (j, &r) in op.results.iter().enumerate() {
                    let mut d = bounds.to_vec();
                    d.extend(inits.get(j));
                    d.extend(ys.get(j));
                    if let Some(&ba) = body.args.get(j + 1) {
                        set(deps, ba, d.clone());
                        d.push(ba);
                    }
                    set(deps, r, d);
                }
                let inner: Vec<ValueId> = ctrl.iter().chain(bounds).copied().collect();
                collect(body, &inner, deps, roots);
            }
            OpKind::If => {
                let inner: Vec<ValueId> = ctrl.iter().chain(&op.args).copied().collect();
                for (j, &r) in op.results.iter().enumerate() {
                    let mut d = op.args.clone();
                    for region in &op.regions {
                        d.extend(yield_args(region).get(j));
                    }
                    set(deps, r, d);
                }
                for region in &op.regions {
                    collect(region, &inner, deps, roots);
                }
            }
            _ => {
                for &r in &op.results {
                    set(deps, r, op.args.clone());
                }
            }
        }
    }
}

fn is_live(live: &[bool], v: ValueId) -> bool {
    live.get(v.0 as usize).copied().unwrap_or(true)
}

/// Remove dead ops and dead `for` / `if` slots; returns whether anything changed.
fn sweep(b: &mut Block, live: &[bool]) -> bool {
    let mut changed = false;
    let mut out = Vec::with_capacity(b.ops.len());
    for mut op in std::mem::take(&mut b.ops) {
        let keep = match op.kind {
            OpKind::Store { .. } | OpKind::AtomicAdd { .. } | OpKind::Yield => true,
            OpKind::For => {
                let effects = has_effects(&op.regions[0]);
                changed |= prune_for(&mut op, live);
                effects || !op.results.is_empty()
            }
            OpKind::If => {
                let effects = op.regions.iter().any(has_effects);
                changed |= prune_if(&mut op, live);
                effects || !op.results.is_empty()
            }
            _ => op.results.iter().any(|&r| is_live(live, r)),
        };
        if keep {
            for r in &mut op.regions {
                changed |= sweep(r, live);
            }
            out.push(op);
        } else {
            changed = true;
        }
    }
    b.ops = out;
    changed
}

/// Drop loop-carried slots whose result and block argument are both dead.
fn prune_for(op: &mut Op, live: &[bool]) -> bool {
    let body = &mut op.regions[0];
    let dead: Vec<usize> = (0..op.results.len())
        .filter(|&j| !is_live(live, op.results[j]) && body.args.get(j + 1).is_none_or(|&a| !is_live(live, a)))
        .collect();
    for &j in dead.iter().rev() {
        op.results.remove(j);
        op.args.remove(3 + j);
        body.args.remove(j + 1);
        if let Some(y) = body.ops.last_mut().filter(|o| o.kind == OpKind::Yield) {
            y.args.remove(j);
        }
    }
    !dead.is_empty()
}

/// Drop `if` results that are dead.
fn prune_if(op: &mut Op, live: &[bool]) -> bool {
    let dead: Vec<usize> = (0..op.results.len()).filter(|&j| !is_live(live, op.results[j])).collect();
    for &j in dead.iter().rev() {
        op.results.remove(j);
        for region in &mut op.regions {
            if let Some(y) = region.ops.last_mut().filter(|o| o.kind == OpKind::Yield) {
                y.args.remove(j);
            }
        }
    }
    !dead.is_empty()
}
