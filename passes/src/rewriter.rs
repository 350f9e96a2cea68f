//! Shared rewriting helpers: value substitution and walking every block of a kernel mutably.
use std::collections::HashMap;

use opc_ir::{Block, Kernel, ValueId};

/// A value substitution: after `insert(from, to)`, every use of `from` reads `to`. Passes drop
/// an op and record its results here, then resolve operands as they walk forward (SSA order
/// guarantees a replaced value is recorded before any of its uses is reached).
#[derive(Clone, Debug, Default)]
pub struct Subst {
    map: HashMap<ValueId, ValueId>,
}

impl Subst {
    pub fn insert(&mut self, from: ValueId, to: ValueId) {
        debug_assert_ne!(from, to, "substituting a value by itself");
        self.map.insert(from, to);
    }

    /// The value `v` stands for now (following chains of replacements).
    pub fn resolve(&self, mut v: ValueId) -> ValueId {
        while let Some(&to) = self.map.get(&v) {
            v = to;
        }
        v
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Rewrite the operands of every op in `block` and its regions.
    pub fn apply_block(&self, block: &mut Block) {
        for op in &mut block.ops {
            for a in &mut op.args {
                *a = self.resolve(*a);
            }
            for r in &mut op.regions {
                self.apply_block(r);
            }
        }
    }
}

/// Run `f` on the grid block, then on the body block, each taken out of the kernel so that `f`
/// may read the rest of it (value types, params) and allocate values.
pub fn with_blocks(kernel: &mut Kernel, mut f: impl FnMut(&mut Kernel, &mut Block) -> bool) -> bool {
    let mut grid = std::mem::take(&mut kernel.grid);
    let a = f(kernel, &mut grid);
    kernel.grid = grid;
    let mut body = std::mem::take(&mut kernel.body);
    let b = f(kernel, &mut body);
    kernel.body = body;
    a | b
}
