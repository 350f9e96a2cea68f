//! Side effects and memory: which ops may be removed, duplicated or moved, and which tensors
//! no op of the kernel writes.
use std::collections::HashSet;

use opc_ir::{walk_ops, Block, Kernel, OpKind, ParamKind};

/// Whether `block` (or any region nested in it) writes memory (`store`, `atomic_add`).
/// `yield` is a terminator, not an effect.
pub fn has_effects(block: &Block) -> bool {
    let mut found = false;
    walk_ops(block, &mut |op| found |= matches!(op.kind, OpKind::Store { .. } | OpKind::AtomicAdd { .. }));
    found
}

/// Ops whose results depend only on their operands and which touch no memory: they may be
/// merged, moved or removed freely. `load` is not pure (memory may change between two loads);
/// `for` / `if` / `yield` are control flow.
pub fn is_pure(kind: &OpKind) -> bool {
    !matches!(
        kind,
        OpKind::Load { .. } | OpKind::Store { .. } | OpKind::AtomicAdd { .. } | OpKind::For | OpKind::If | OpKind::Yield
    )
}

/// Input (non-`out`) tensor parameters that no `store` / `atomic_add` of the kernel writes:
/// a `load` from one of them is a pure function of its operands for the whole launch
/// (parameters are assumed not to alias, as the launcher hands out distinct buffers).
pub fn read_only_tensors(kernel: &Kernel) -> HashSet<usize> {
    let mut written = HashSet::new();
    for b in [&kernel.grid, &kernel.body] {
        walk_ops(b, &mut |op| {
            if let OpKind::Store { tensor, .. } | OpKind::AtomicAdd { tensor, .. } = op.kind {
                written.insert(tensor);
            }
        });
    }
    kernel
        .params
        .iter()
        .enumerate()
        .filter(|(i, p)| matches!(p.kind, ParamKind::Tensor { output: false, .. }) && !written.contains(i))
        .map(|(i, _)| i)
        .collect()
}
