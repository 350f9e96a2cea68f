//! Arena slot allocation.
//!
//! Each program gets one scratch arena; buffers are slots at offsets fixed at compile time.
//! A slot is aligned to the target's vector width and sized in whole alignment units. Values
//! holding a slot (the buffer's owner and every view of it) are counted; when the last one dies
//! the slot goes to a free list and a later buffer of at most its size takes it (the smallest
//! that fits, split if larger). Slots of loop-carried and `if`-merged values are pinned: they are
//! written on every path and never freed. Scratch slots no value holds (copies an op makes
//! for itself) are never released.
//!
//! Reuse inside a `for` body is sound because lifetimes come from the IR's SSA form: a value
//! defined before the loop and read in it is live until the `for` op itself, and a value
//! defined in the body is dead before the body's next iteration redefines it.

use std::collections::{HashMap, HashSet};

use opc_ir::{Block, ValueId};

/// The slots of one program's arena, in 4-byte elements.
#[derive(Clone, Debug)]
pub(crate) struct Arena {
    /// Slot alignment and size granule, in elements.
    align: u32,
    top: u32,
    peak: u32,
    size: HashMap<u32, u32>,
    refs: HashMap<u32, u32>,
    pinned: HashSet<u32>,
    /// Slots some view aliases: never updated in place (the llvm lowering's in-place updates).
    #[cfg_attr(not(feature = "llvm22-1"), allow(dead_code))]
    shared: HashSet<u32>,
    free: Vec<(u32, u32)>,
}

impl Arena {
    /// An empty arena whose slots are aligned to `align` elements.
    pub(crate) fn new(align: u32) -> Self {
        Arena { align, top: 0, peak: 0, size: HashMap::new(), refs: HashMap::new(), pinned: HashSet::new(), shared: HashSet::new(), free: vec![] }
    }

    /// Reserve a slot of `numel` elements: the smallest freed slot that fits, else fresh space.
    pub(crate) fn alloc(&mut self, numel: usize) -> u32 {
        let need = numel.max(1).next_multiple_of(self.align as usize) as u32;
        let best = self.free.iter().enumerate().filter(|(_, f)| f.1 >= need).min_by_key(|(_, f)| f.1).map(|(i, _)| i);
        if let Some(i) = best {
            let (off, size) = self.free.swap_remove(i);
            if size > need {
                self.free.push((off + need, size - need));
            }
            self.size.insert(off, need);
            return off;
        }
        let off = self.top.next_multiple_of(self.align);
        self.top = off + need;
        self.peak = self.peak.max(self.top);
        self.size.insert(off, need);
        off
    }

    /// One more live value holds the slot at `off`.
    pub(crate) fn retain(&mut self, off: u32) {
        *self.refs.entry(off).or_insert(0) += 1;
    }

    /// A view aliases the slot at `off`.
    #[cfg_attr(not(feature = "llvm22-1"), allow(dead_code))]
    pub(crate) fn share(&mut self, off: u32) {
        self.shared.insert(off);
    }

    /// Whether a view aliases the slot at `off`.
    #[cfg_attr(not(feature = "llvm22-1"), allow(dead_code))]
    pub(crate) fn is_shared(&self, off: u32) -> bool {
        self.shared.contains(&off)
    }

    /// The slot at `off` holds a carried or merged value: never reused.
    pub(crate) fn pin(&mut self, off: u32) {
        self.pinned.insert(off);
    }

    /// A value holding the slot at `off` died; the slot is free once none is left.
    pub(crate) fn release(&mut self, off: u32) {
        let Some(r) = self.refs.get_mut(&off) else { return };
        *r = r.saturating_sub(1);
        if *r == 0 && !self.pinned.contains(&off) {
            if let Some(&size) = self.size.get(&off) {
                self.free.push((off, size));
                self.refs.remove(&off);
            }
        }
    }

    /// Elements the arena needs at its fullest.
    pub(crate) fn peak(&self) -> u32 {
        self.peak
    }
}

/// For each op of `blk`, the values defined in `blk` whose last use is that op, in value
/// order (uses inside an op's regions count at the op; `site(i)` is where op `i` is evaluated,
/// later than `i` for an op fused into a consumer). Their slots are free once the op is lowered.
pub(crate) fn deaths(blk: &Block, site: impl Fn(usize) -> usize) -> Vec<Vec<ValueId>> {
    let mut last: HashMap<ValueId, usize> = HashMap::new();
    for (i, op) in blk.ops.iter().enumerate() {
        for &r in &op.results {
            last.insert(r, site(i));
        }
    }
    for (i, op) in blk.ops.iter().enumerate() {
        let i = site(i);
        let mut note = |v: &ValueId| {
            if let Some(l) = last.get_mut(v) {
                *l = (*l).max(i);
            }
        };
        op.args.iter().for_each(&mut note);
        for r in &op.regions {
            opc_ir::walk_ops(r, &mut |o| o.args.iter().for_each(&mut note));
        }
    }
    let mut dies: Vec<Vec<ValueId>> = vec![vec![]; blk.ops.len()];
    for (v, i) in last {
        dies[i].push(v);
    }
    dies.iter_mut().for_each(|d| d.sort_by_key(|v| v.0));
    dies
}

#[cfg(test)]
mod tests {
    use super::Arena;

    #[test]
    fn slots_are_aligned_and_reused_after_death() {
        let mut a = Arena::new(16);
        let x = a.alloc(20);
        assert_eq!(x, 0);
        a.retain(x);
        let y = a.alloc(1);
        assert_eq!(y, 32);
        a.retain(y);
        a.release(x);
        // The freed 32-element slot takes a 16-element buffer and keeps the rest.
        assert_eq!(a.alloc(16), 0);
        assert_eq!(a.alloc(10), 16);
        assert_eq!(a.alloc(1), 48);
        assert_eq!(a.peak(), 64);
    }

    #[test]
    fn pinned_and_viewed_slots_stay() {
        let mut a = Arena::new(4);
        let x = a.alloc(4);
        a.retain(x);
        a.retain(x); // a view
        a.release(x);
        assert_eq!(a.alloc(4), 4, "one holder is still alive");
        let p = a.alloc(4);
        a.pin(p);
        a.retain(p);
        a.release(p);
        assert_eq!(a.alloc(4), 12, "pinned slots are never reused");
    }
}
