//! Row split of a MIX kernel's vector work over the two AIVs of a group (1 AIC : 2 AIV).
//!
//! The cube computes a whole level-1 block (`M` rows of every cube `dot`); the vector work on
//! it is row-local in the kernels opc targets (the online softmax, epilogues, stores), so
//! sub-block `s` of the group takes rows `[s·M/2, (s+1)·M/2)` (`GetSubBlockIdx()`), reading and
//! writing its half of the GM workspace slots.
//!
//! **Analysis.** Every tile axis is a node; ops whose elements correspond one to one along an
//! axis (elementwise ops, broadcasts of full axes, expand_dims, permute, the index tiles of a
//! load / store, loop-carried and `if` values, the M axis of a `dot`) join their axes. The
//! component of the cube dots' M axes is "the row axis". The split is valid when every axis of
//! the component has the same even size `M`, no op mixes rows (a reduction or scan along a row
//! axis, the K axis of a `dot`, the B operand of a cube dot, a reshape touching a row axis),
//! and every store writes a row-split value (otherwise both sub-blocks would write it, and an
//! atomic add would count twice). Anything else keeps the single-AIV plan (sub-block 1 only
//! takes part in the hand-offs).
//!
//! **Rewrite.** The vector program is lowered from a copy of the kernel whose row axes are
//! `M/2` long; the `arange`s on the row axis start at `subRow_ = GetSubBlockIdx() · M/2`.

use std::collections::HashSet;

use opc_ir::{Kernel, OpKind, ValueId};

/// A valid row split: the rewritten kernel, the row `arange`s and the rows per sub-block.
pub struct RowSplit {
    pub kernel: Kernel,
    pub aranges: HashSet<ValueId>,
    pub half: u64,
}

struct Axes {
    base: Vec<usize>,
    parent: Vec<usize>,
    barred: Vec<usize>,
}

impl Axes {
    fn new(k: &Kernel) -> Axes {
        let mut base = vec![];
        let mut n = 0;
        for t in &k.values {
            base.push(n);
            n += t.shape.len();
        }
        Axes { base, parent: (0..n).collect(), barred: vec![] }
    }
    fn node(&self, v: ValueId, axis: usize) -> usize {
        self.base[v.0 as usize] + axis
    }
    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }
    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        if a != b {
            self.parent[a] = b;
        }
    }
}

/// Join the axes of `a` and `b` that have the same size (same rank only: equal-shape
/// elementwise operands; a size-1 axis is a broadcast and stays separate).
fn join_same(k: &Kernel, ax: &mut Axes, a: ValueId, b: ValueId) {
    let (sa, sb) = (k.ty(a).shape.clone(), k.ty(b).shape.clone());
    if sa.len() != sb.len() {
        return;
    }
    for i in 0..sa.len() {
        if sa[i] == sb[i] {
            let (x, y) = (ax.node(a, i), ax.node(b, i));
            ax.union(x, y);
        }
    }
}

fn tensor_rank(k: &Kernel, t: usize) -> usize {
    match &k.params[t].kind {
        opc_ir::ParamKind::Tensor { dims, .. } => dims.len(),
        _ => 0,
    }
}

/// The index tiles of a load / store: the element shape is the concatenation of their shapes,
/// so index `d`'s axes are the value's axes after those of indices `0..d`.
fn join_indices(k: &Kernel, ax: &mut Axes, idx: &[ValueId], v: ValueId) {
    let vs = k.ty(v).shape.clone();
    let mut at = 0;
    for &i in idx {
        let is = k.ty(i).shape.clone();
        for (j, n) in is.iter().enumerate() {
            if vs.get(at + j) == Some(n) {
                let (x, y) = (ax.node(i, j), ax.node(v, at + j));
                ax.union(x, y);
            }
        }
        at += is.len();
    }
}

fn bar_all(k: &Kernel, ax: &mut Axes, v: ValueId) {
    for i in 0..k.ty(v).shape.len() {
        let n = ax.node(v, i);
        ax.barred.push(n);
    }
}

fn walk(k: &Kernel, ax: &mut Axes, b: &opc_ir::Block, seeds: &mut Vec<usize>, stores: &mut Vec<ValueId>, aranges: &mut Vec<ValueId>) {
    for op in &b.ops {
        let r = op.results.first().copied();
        match &op.kind {
            OpKind::Unary(_) | OpKind::Binary(_) | OpKind::Cmp(_) | OpKind::Select | OpKind::Cast(_) | OpKind::Bitcast | OpKind::Broadcast => {
                if let Some(r) = r {
                    for &a in &op.args {
                        join_same(k, ax, a, r);
                    }
                }
            }
            OpKind::ExpandDims(a) => {
                let (r, s, a) = (op.results[0], op.args[0], *a as usize);
                for j in 0..k.ty(r).shape.len() {
                    if j != a {
                        let (x, y) = (ax.node(r, j), ax.node(s, if j < a { j } else { j - 1 }));
                        ax.union(x, y);
                    }
                }
            }
            OpKind::Permute(p) => {
                let (r, s) = (op.results[0], op.args[0]);
                for (i, &pi) in p.iter().enumerate() {
                    let (x, y) = (ax.node(r, i), ax.node(s, pi as usize));
                    ax.union(x, y);
                }
            }
            OpKind::Reshape => {
                bar_all(k, ax, op.args[0]);
                bar_all(k, ax, op.results[0]);
            }
            OpKind::Reduce { axis, .. } => {
                let (r, s, a) = (op.results[0], op.args[0], *axis as usize);
                for j in 0..k.ty(r).shape.len() {
                    let (x, y) = (ax.node(r, j), ax.node(s, if j < a { j } else { j + 1 }));
                    ax.union(x, y);
                }
                let n = ax.node(s, a);
                ax.barred.push(n);
            }
            OpKind::Scan { axis, .. } => {
                join_same(k, ax, op.args[0], op.results[0]);
                let n = ax.node(op.args[0], *axis as usize);
                ax.barred.push(n);
            }
            OpKind::Dot => {
                let (a, bb, r) = (op.args[0], op.args[1], op.results[0]);
                let (x, y) = (ax.node(r, 0), ax.node(a, 0));
                ax.union(x, y);
                let (x, y) = (ax.node(r, 1), ax.node(bb, 1));
                ax.union(x, y);
                if let Some(&acc) = op.args.get(2) {
                    join_same(k, ax, acc, r);
                }
                let (ka, kb) = (ax.node(a, 1), ax.node(bb, 0));
                ax.barred.extend([ka, kb]);
                if super::lower::cube_eligible(k, op) {
                    bar_all(k, ax, bb);
                    seeds.push(ax.node(r, 0));
                }
            }
            OpKind::Load { tensor, .. } => {
                let r = op.results[0];
                let rank = tensor_rank(k, *tensor);
                join_indices(k, ax, &op.args[..rank], r);
                for &a in &op.args[rank..] {
                    join_same(k, ax, a, r);
                }
            }
            OpKind::Store { tensor, .. } | OpKind::AtomicAdd { tensor, .. } => {
                let rank = tensor_rank(k, *tensor);
                let v = op.args[rank];
                join_indices(k, ax, &op.args[..rank], v);
                for &a in &op.args[rank + 1..] {
                    join_same(k, ax, a, v);
                }
                stores.push(v);
            }
            OpKind::Arange => aranges.push(op.results[0]),
            OpKind::For => {
                let body = &op.regions[0];
                let y = body.ops.last().filter(|o| matches!(o.kind, OpKind::Yield));
                for (i, (&init, &res)) in op.args[3..].iter().zip(&op.results).enumerate() {
                    join_same(k, ax, init, res);
                    join_same(k, ax, body.args[i + 1], res);
                    if let Some(&yv) = y.and_then(|y| y.args.get(i)) {
                        join_same(k, ax, yv, res);
                    }
                }
                walk(k, ax, body, seeds, stores, aranges);
            }
            OpKind::If => {
                for region in &op.regions {
                    if let Some(y) = region.ops.last().filter(|o| matches!(o.kind, OpKind::Yield)) {
                        for (&yv, &res) in y.args.iter().zip(&op.results) {
                            join_same(k, ax, yv, res);
                        }
                    }
                    walk(k, ax, region, seeds, stores, aranges);
                }
            }
            _ => {}
        }
    }
}

/// `k` with every use of a tile `arange` or tile constant given its own defining op (CSE merges
/// `arange(BM)` and `arange(D)` when BM == D, but one may index rows and the other columns).
pub fn unshare_index_tiles(k: &Kernel) -> Kernel {
    use std::collections::HashMap;
    let mut defs: HashMap<ValueId, opc_ir::Op> = HashMap::new();
    opc_ir::walk_ops(&k.body, &mut |op| {
        let tile = op.results.first().is_some_and(|r| !k.ty(*r).is_scalar());
        if tile && matches!(op.kind, OpKind::Arange | OpKind::Const(_)) {
            defs.insert(op.results[0], op.clone());
        }
    });
    let mut out = k.clone();
    let mut seen: HashSet<ValueId> = HashSet::new();
    let body = std::mem::replace(&mut out.body, opc_ir::Block { args: vec![], ops: vec![] });
    out.body = unshare_block(&mut out, body, &defs, &mut seen);
    out
}

fn unshare_block(k: &mut Kernel, b: opc_ir::Block, defs: &std::collections::HashMap<ValueId, opc_ir::Op>, seen: &mut HashSet<ValueId>) -> opc_ir::Block {
    let mut ops = vec![];
    for mut op in b.ops {
        for a in op.args.iter_mut() {
            if let Some(d) = defs.get(a) {
                if !seen.insert(*a) {
                    let ty = k.ty(*a).clone();
                    let v = k.new_value(ty);
                    let mut c = d.clone();
                    c.results = vec![v];
                    ops.push(c);
                    *a = v;
                }
            }
        }
        op.regions = std::mem::take(&mut op.regions).into_iter().map(|r| unshare_block(k, r, defs, seen)).collect();
        ops.push(op);
    }
    opc_ir::Block { args: b.args, ops }
}

/// The row split of MIX kernel `k`, or `None` when its vector work is not row-local.
pub fn row_split(k: &Kernel) -> Option<RowSplit> {
    let mut ax = Axes::new(k);
    let (mut seeds, mut stores, mut aranges) = (vec![], vec![], vec![]);
    walk(k, &mut ax, &k.body, &mut seeds, &mut stores, &mut aranges);
    let first = *seeds.first()?;
    for s in seeds.clone() {
        ax.union(first, s);
    }
    let root = ax.find(first);
    let barred = ax.barred.clone();
    if barred.into_iter().any(|n| ax.find(n) == root) {
        return None;
    }
    // Every row axis has the same even size M; every store writes a row-split value.
    let mut m = None;
    let mut rows: Vec<(usize, usize)> = vec![];
    for (v, t) in k.values.iter().enumerate() {
        for i in 0..t.shape.len() {
            let n = ax.node(ValueId(v as u32), i);
            if ax.find(n) == root {
                if *m.get_or_insert(t.shape[i]) != t.shape[i] {
                    return None;
                }
                rows.push((v, i));
            }
        }
    }
    let m = m?;
    if m < 2 || m % 2 != 0 {
        return None;
    }
    let row_split = |ax: &mut Axes, v: ValueId| (0..k.ty(v).shape.len()).any(|i| {
        let n = ax.node(v, i);
        ax.find(n) == root
    });
    if !stores.iter().all(|&v| row_split(&mut ax, v)) {
        return None;
    }
    let aranges: HashSet<ValueId> = aranges.into_iter().filter(|&v| row_split(&mut ax, v)).collect();
    let mut kernel = k.clone();
    for (v, i) in rows {
        kernel.values[v].shape[i] = m / 2;
    }
    Some(RowSplit { kernel, aranges, half: (m / 2) as u64 })
}
