//! Live ranges of tile values, in the positions the lowering walks (pre-order op numbers), for
//! memory planning of the UB `calc` arena.
//!
//! - Every op gets a position `start` (pre-order) and `end` (the last position inside its
//!   regions; `end == start` for ops without regions).
//! - A value is live from its definition to its last use (a use at position `p` keeps it live
//!   through `p + 1`, where the user's own buffers are allocated). A use inside a `for` that does not
//!   contain the definition counts at the end of that loop (outermost such loop): the value is
//!   read again by the next iteration.
//! - Shape views (`broadcast`, `expand_dims`, `reshape`, `permute`) may alias their operand's
//!   buffer, so a use of a view is also a use of its operand (transitively).
//! - A compare's operands live as long as its result (a compare fused into a select reads
//!   them at the select).
//! - `for` results and carried block arguments share the loop's carried buffer: live from the
//!   loop's start to the later of the loop's end and the results' last use.

use opc_ir::{Block, Kernel, OpKind, ValueId};

/// Positions and last uses, indexed by op pre-order number / `ValueId`.
#[derive(Clone, Debug, Default)]
pub struct Liveness {
    /// Position where each value is defined (block arguments: their op's start).
    pub def: Vec<u32>,
    /// Extended last use (see the module docs); `def` if never used.
    pub last: Vec<u32>,
}

impl Liveness {
    pub fn compute(k: &Kernel) -> Liveness {
        let n = k.values.len();
        let mut lv = Liveness { def: vec![0; n], last: vec![0; n] };
        // Pass 1: positions of definitions and the loop intervals.
        let mut pos = 0u32;
        number(&k.body, &mut pos, &mut lv.def);
        lv.last = lv.def.clone();
        // Pass 2: uses.
        let mut pos = 0u32;
        let mut loops: Vec<(u32, u32)> = vec![];
        uses(&k.body, &mut pos, &mut loops, &mut lv);
        // Views: a use of a view is a use of its source (walk in reverse definition order so
        // chains propagate).
        // A compare fused into its select is evaluated at the select: its operands live as long.
        let mut views: Vec<(ValueId, ValueId)> = vec![];
        opc_ir::walk_ops(&k.body, &mut |op| {
            if matches!(op.kind, OpKind::Broadcast | OpKind::ExpandDims(_) | OpKind::Reshape | OpKind::Permute(_)) {
                views.push((op.args[0], op.results[0]));
            }
            if matches!(op.kind, OpKind::Cmp(_)) {
                views.extend(op.args.iter().map(|a| (*a, op.results[0])));
            }
        });
        for (src, view) in views.iter().rev() {
            let l = lv.last[view.0 as usize];
            let s = &mut lv.last[src.0 as usize];
            *s = (*s).max(l);
        }
        lv
    }

    pub fn last(&self, v: ValueId) -> u32 {
        self.last[v.0 as usize]
    }
}

/// End position of an op that starts at `start` with the given regions (pre-order numbering).
fn number(b: &Block, pos: &mut u32, def: &mut [u32]) {
    for op in &b.ops {
        let start = *pos;
        *pos += 1;
        for r in &op.results {
            def[r.0 as usize] = start;
        }
        for region in &op.regions {
            for a in &region.args {
                def[a.0 as usize] = start;
            }
            number(region, pos, def);
        }
    }
}

fn uses(b: &Block, pos: &mut u32, loops: &mut Vec<(u32, u32)>, lv: &mut Liveness) {
    for op in &b.ops {
        let start = *pos;
        // The op's end: count positions inside its regions first.
        let end = start + count(op);
        *pos += 1;
        for a in &op.args {
            let d = lv.def[a.0 as usize];
            // Outermost enclosing loop that does not contain the definition.
            let at = loops.iter().find(|(s, e)| !(*s <= d && d <= *e)).map(|(_, e)| *e).unwrap_or(start);
            // `+ 1`: an operand stays live while its user runs, so the user's result and
            // temporaries (allocated at `start + 1`) never alias it.
            let l = &mut lv.last[a.0 as usize];
            *l = (*l).max(at.max(start) + 1);
        }
        if matches!(op.kind, OpKind::For) {
            // Carried values live over the whole loop.
            for r in &op.results {
                let l = &mut lv.last[r.0 as usize];
                *l = (*l).max(end + 1);
            }
            for a in op.regions[0].args.iter().skip(1) {
                let l = &mut lv.last[a.0 as usize];
                *l = (*l).max(end + 1);
            }
            loops.push((start, end));
            uses(&op.regions[0], pos, loops, lv);
            loops.pop();
        } else {
            for r in &op.regions {
                uses(r, pos, loops, lv);
            }
        }
    }
}

/// Number of ops nested inside `op`'s regions.
fn count(op: &opc_ir::Op) -> u32 {
    op.regions.iter().map(|r| r.ops.iter().map(|o| 1 + count(o)).sum::<u32>()).sum()
}
