//! `simplify-broadcasts`: remove no-op shape ops and fold chains of them.
//!
//! **Rewrites.**
//! - identities: `broadcast` / `reshape` to the operand's own type, and `permute` by the
//!   identity permutation, are dropped (uses read the operand);
//! - `broadcast(broadcast(x))` → `broadcast(x)` (a dim of `x` is 1 or already the final size);
//! - `reshape` / `expand_dims` of a `reshape` / `expand_dims` → one `reshape(x)` (all are row-major
//!   reshapes), dropped if it gives `x`'s shape back;
//! - `permute(permute(x, p), q)` → `permute(x, p∘q)` (result dim i is `x` dim `p[q[i]]`), dropped
//!   when that is the identity;
//! - a `permute` that only moves size-1 dims (the others keep their order) → `reshape`.
//!
//! A rewritten op keeps its result value and reads the chain's root directly; the inner ops, if
//! nothing else uses them, are left for `dce`.
//!
//! **Expects / leaves.** Verified tile IR; leaves verified IR. No value changes type.
//!
//! **Does not.** Fold a `broadcast` of a `reshape` / `expand_dims` (different ranks: `broadcast`
//! keeps rank), push shape ops through elementwise ops, or fold constants (`fold-constants` turns
//! a shape op of a splat into a `const`). Ops whose operand and result live in different memory
//! spaces are left alone.
//!
//! ```text
//! before:  %2 = expand_dims %1 axis 0 : f32[1, 64]     %3 = reshape %2 : f32[64]
//!          %5 = permute %4 perm [1, 0] : f32[8, 8]     %6 = permute %5 perm [1, 0] : f32[8, 8]
//! after:   (%3 and %6 dropped: their uses read %1 and %4)
//! ```
use std::collections::HashMap;

use opc_ir::{Block, Kernel, OpKind, TileType, ValueId};

use crate::rewriter::{with_blocks, Subst};
use crate::Pass;

pub struct SimplifyBroadcasts;

impl Pass for SimplifyBroadcasts {
    const NAME: &'static str = "simplify-broadcasts";
    fn run(kernel: &mut Kernel) -> bool {
        let mut s = Simplifier { defs: HashMap::new(), subst: Subst::default(), changed: false };
        with_blocks(kernel, |k, b| {
            s.block(&k.values, b);
            false
        });
        s.changed
    }
}

/// The shape op that defined a value, with its operand (after rewriting).
#[derive(Clone, Debug)]
enum Def {
    Broadcast(ValueId),
    /// `reshape` or `expand_dims`: both are row-major reshapes.
    Reshape(ValueId),
    Permute(ValueId, Vec<u8>),
}

struct Simplifier {
    defs: HashMap<ValueId, Def>,
    subst: Subst,
    changed: bool,
}

fn is_identity(perm: &[u8]) -> bool {
    perm.iter().enumerate().all(|(i, &p)| p as usize == i)
}

/// Whether permuting `shape` by `perm` only moves size-1 dims (a reshape in row-major order).
fn moves_only_unit_dims(shape: &[usize], perm: &[u8]) -> bool {
    let kept: Vec<u8> = perm.iter().copied().filter(|&p| shape.get(p as usize).is_some_and(|&d| d != 1)).collect();
    kept.windows(2).all(|w| w[0] < w[1])
}

impl Simplifier {
    fn block(&mut self, values: &[TileType], b: &mut Block) {
        let ty = |v: ValueId| &values[v.0 as usize];
        let mut out = Vec::with_capacity(b.ops.len());
        for mut op in std::mem::take(&mut b.ops) {
            for a in &mut op.args {
                *a = self.subst.resolve(*a);
            }
            for r in &mut op.regions {
                self.block(values, r);
            }
            let shape_op = matches!(op.kind, OpKind::Broadcast | OpKind::Reshape | OpKind::ExpandDims(_) | OpKind::Permute(_));
            if !shape_op || op.args.len() != 1 || op.results.len() != 1 {
                out.push(op);
                continue;
            }
            let (res, x) = (op.result(), op.args[0]);
            let rt = ty(res);
            let same_space = |v: ValueId| ty(v).space == rt.space && ty(v).dtype == rt.dtype;
            // Fold with the op defining the operand.
            let def = self.defs.get(&x).cloned().filter(|d| {
                let root = match d {
                    Def::Broadcast(r) | Def::Reshape(r) | Def::Permute(r, _) => *r,
                };
                same_space(root)
            });
            let new = match (&op.kind, def) {
                (OpKind::Broadcast, Some(Def::Broadcast(r))) => Some((OpKind::Broadcast, r)),
                (OpKind::Reshape | OpKind::ExpandDims(_), Some(Def::Reshape(r))) => Some((OpKind::Reshape, r)),
                (OpKind::Permute(q), Some(Def::Permute(r, p))) => {
                    Some((OpKind::Permute(q.iter().map(|&i| p[i as usize]).collect()), r))
                }
                _ => None,
            };
            if let Some((kind, root)) = new {
                op.kind = kind;
                op.args[0] = root;
                self.changed = true;
            }
            // A permute that only moves size-1 dims is a reshape.
            if let OpKind::Permute(p) = &op.kind {
                if !is_identity(p) && moves_only_unit_dims(&ty(op.args[0]).shape, p) {
                    op.kind = OpKind::Reshape;
                    self.changed = true;
                }
            }
            let x = op.args[0];
            let identity = ty(x) == rt
                && match &op.kind {
                    OpKind::Permute(p) => is_identity(p),
                    _ => true,
                };
            if identity {
                self.subst.insert(res, x);
                self.changed = true;
                continue;
            }
            let def = match &op.kind {
                OpKind::Broadcast => Def::Broadcast(x),
                OpKind::Permute(p) => Def::Permute(x, p.clone()),
                _ => Def::Reshape(x),
            };
            self.defs.insert(res, def);
            out.push(op);
        }
        b.ops = out;
    }
}
