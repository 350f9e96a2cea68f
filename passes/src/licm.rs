//! `licm`: loop-invariant code motion — hoist invariant ops out of `for` bodies.
//!
//! **Rewrites.** An op directly in a `for` body is moved right before the `for` when it is pure
//! and every operand is defined outside the loop (or by an op already hoisted). Loops are
//! handled innermost first, so an op hoisted out of an inner loop can leave the outer one too.
//! A `load` is hoisted only from a read-only tensor ([`crate::analysis::read_only_tensors`]: an
//! input that no `store` / `atomic_add` of the kernel writes), whose memory cannot change during
//! the launch.
//!
//! Hoisting is speculative — the op also runs when the loop runs zero times — which is safe
//! because no tile op traps: int division by zero gives 0 and an out-of-range `load` reads its
//! `other` value without touching memory.
//!
//! **Expects / leaves.** Verified tile IR; leaves verified IR with the same values (ops move,
//! nothing is created or dropped).
//!
//! **Does not.** Hoist `load`s from tensors the kernel writes (a `store` in the loop may alias
//! them), ops nested in an `if` inside the loop (they may be expensive and conditionally
//! skipped), whole invariant `for` / `if` ops, or sink ops out of loops.
//!
//! ```text
//! before:  %9 = for %4 = %0 to %1 step %2 iter(%5 = %3) : f32[64] { %6 = mul %a, %b : f32[64]; %7 = add %5, %6 ...
//! after:   %6 = mul %a, %b : f32[64]
//!          %9 = for %4 = %0 to %1 step %2 iter(%5 = %3) : f32[64] { %7 = add %5, %6 ...
//! ```
use std::collections::HashSet;

use opc_ir::{walk_ops, Block, Kernel, Op, OpKind, ValueId};

use crate::analysis::{is_pure, read_only_tensors};
use crate::rewriter::with_blocks;
use crate::Pass;

pub struct Licm;

impl Pass for Licm {
    const NAME: &'static str = "licm";
    fn run(kernel: &mut Kernel) -> bool {
        let read_only = read_only_tensors(kernel);
        with_blocks(kernel, |_, b| hoist_in(b, &read_only))
    }
}

/// Process every `for` in `b` (and in nested regions), innermost first.
fn hoist_in(b: &mut Block, read_only: &HashSet<usize>) -> bool {
    let mut changed = false;
    let mut out = Vec::with_capacity(b.ops.len());
    for mut op in std::mem::take(&mut b.ops) {
        for r in &mut op.regions {
            changed |= hoist_in(r, read_only);
        }
        if op.kind == OpKind::For {
            let hoisted = hoist_from_loop(&mut op, read_only);
            changed |= !hoisted.is_empty();
            out.extend(hoisted);
        }
        out.push(op);
    }
    b.ops = out;
    changed
}

/// Remove the invariant ops of a `for` body and return them, in order.
fn hoist_from_loop(for_op: &mut Op, read_only: &HashSet<usize>) -> Vec<Op> {
    let body = &mut for_op.regions[0];
    // Values defined inside the loop: block arguments and every result in the body.
    let mut inside: HashSet<ValueId> = body.args.iter().copied().collect();
    walk_ops(body, &mut |op| inside.extend(&op.results));
    let mut hoisted = vec![];
    let mut kept = Vec::with_capacity(body.ops.len());
    for op in std::mem::take(&mut body.ops) {
        let movable = match op.kind {
            OpKind::Load { tensor, .. } => read_only.contains(&tensor),
            ref k => is_pure(k),
        };
        if movable && op.args.iter().all(|a| !inside.contains(a)) {
            for r in &op.results {
                inside.remove(r);
            }
            hoisted.push(op);
        } else {
            kept.push(op);
        }
    }
    body.ops = kept;
    hoisted
}
