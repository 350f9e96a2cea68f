//! `cse`: common subexpression elimination of pure ops, scoped to regions.
//!
//! **Rewrites.** An op with the same kind (attributes included), the same operands and the same
//! result types as an earlier op that dominates it is dropped; its uses read the earlier results.
//! Scopes follow the region tree: an op in a `for` / `if` region may reuse one from an enclosing
//! block (defined before the `for` / `if`), never one from a sibling region or from after it.
//! Pure ops are every op but `load`, `store`, `atomic_add`, `for`, `if` and `yield`; `load`s from
//! read-only tensors ([`crate::analysis::read_only_tensors`]: inputs never stored to) are merged
//! too, since no store can intervene between them.
//!
//! **Expects / leaves.** Any verified tile IR; leaves verified IR. Dropped ops' result values
//! stay allocated in `Kernel::values` but unused.
//!
//! **Does not.** Merge `load`s from tensors the kernel writes (a `store` or `atomic_add`, possibly
//! from another program, may change memory between two loads; proving it does not needs alias
//! analysis of the indices), whole `for` / `if` ops, or ops that are equal only up to
//! commutativity (`add %a, %b` vs `add %b, %a`): no canonical operand order is imposed.
//!
//! ```text
//! before:  %3 = mul %1, %2 : f32[64]
//!          %4 = mul %1, %2 : f32[64]        %5 = add %3, %4 : f32[64]
//! after:   %3 = mul %1, %2 : f32[64]        %5 = add %3, %3 : f32[64]
//! ```
use std::collections::{HashMap, HashSet};

use opc_ir::{Block, Kernel, Op, OpKind, Scalar, TileType, ValueId};

use crate::analysis::{is_pure, read_only_tensors};
use crate::rewriter::{with_blocks, Subst};
use crate::Pass;

pub struct Cse;

impl Pass for Cse {
    const NAME: &'static str = "cse";
    fn run(kernel: &mut Kernel) -> bool {
        let read_only = read_only_tensors(kernel);
        with_blocks(kernel, |k, b| {
            let mut cse = Scoped { scopes: vec![], subst: Subst::default(), read_only: &read_only, changed: false };
            cse.block(&k.values, b);
            cse.changed
        })
    }
}

/// What makes two ops interchangeable: kind with attributes (float constants by bit pattern),
/// operands and result types.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    kind: String,
    args: Vec<ValueId>,
    types: Vec<TileType>,
}

struct Scoped<'a> {
    /// One table per enclosing block, innermost last.
    scopes: Vec<HashMap<Key, Vec<ValueId>>>,
    subst: Subst,
    read_only: &'a HashSet<usize>,
    changed: bool,
}

impl Scoped<'_> {
    fn block(&mut self, values: &[TileType], b: &mut Block) {
        self.scopes.push(HashMap::new());
        let mut out = Vec::with_capacity(b.ops.len());
        for mut op in std::mem::take(&mut b.ops) {
            for a in &mut op.args {
                *a = self.subst.resolve(*a);
            }
            for r in &mut op.regions {
                self.block(values, r);
            }
            if let Some(key) = self.key(values, &op) {
                if let Some(prev) = self.scopes.iter().rev().find_map(|s| s.get(&key)) {
                    for (&r, &p) in op.results.iter().zip(prev) {
                        self.subst.insert(r, p);
                    }
                    self.changed = true;
                    continue;
                }
                self.scopes.last_mut().unwrap().insert(key, op.results.clone());
            }
            out.push(op);
        }
        b.ops = out;
        self.scopes.pop();
    }

    fn key(&self, values: &[TileType], op: &Op) -> Option<Key> {
        let mergeable = match op.kind {
            OpKind::Load { tensor, .. } => self.read_only.contains(&tensor),
            ref k => is_pure(k),
        };
        if !mergeable || op.results.is_empty() {
            return None;
        }
        let kind = match op.kind {
            // Debug would print 0.0 and -0.0 apart but all NaNs alike; the bits are exact.
            OpKind::Const(Scalar::Float(f)) => format!("const.f{:016x}", f.to_bits()),
            ref k => format!("{k:?}"),
        };
        Some(Key { kind, args: op.args.clone(), types: op.results.iter().map(|r| values[r.0 as usize].clone()).collect() })
    }
}
