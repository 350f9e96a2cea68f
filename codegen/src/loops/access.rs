//! The access analysis of `load`, `store` and `atomic_add`.
//!
//! An access `x[i0, i1, ...]` runs over the *access shape*: the shapes of its index tiles
//! concatenated (`x[rows[:, None], cols[None, :]]` with `rows: [BM, 1]`, `cols: [1, BK]` has
//! access shape `[BM, 1, 1, BK]`). Index tile `d` covers a range of those dims
//! ([`AccessPlan::parts`]); it is read, checked `0 <= i < dim_d` and folded into the element
//! offset as soon as the loops of its dims are bound, so a row index is checked once per row.
//! Mask, stored value and `other` have the whole access shape.
//!
//! Two ways to run an access: **rows** ([`AccessPlan::row_part`]) when an index tile covers the
//! innermost access dim (of at least two elements): the outer dims are a loop nest computing
//! each row's offset and validity once and the row runs as vectors with per-lane index checks
//! and masks; **elements** otherwise (scalar accesses, packed 4-bit dtypes whose elements
//! share bytes, and `atomic_add`, which is a compare-and-swap per element): every element
//! is touched under a branch on its validity. Either way an out-of-range or masked-off element
//! never reaches memory: a load reads `other` (default 0) there and a store skips it.

use opc_ir::{DType, Kernel, Op, OpKind, ValueId};

/// What a global access does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Load { has_mask: bool, has_other: bool },
    Store { has_mask: bool, atomic: bool },
}

impl Access {
    /// The access an op makes and the tensor parameter it touches; `None` for other ops.
    pub(crate) fn of(kind: &OpKind) -> Option<(usize, Access)> {
        match *kind {
            OpKind::Load { tensor, has_mask, has_other } => Some((tensor, Access::Load { has_mask, has_other })),
            OpKind::Store { tensor, has_mask } => Some((tensor, Access::Store { has_mask, atomic: false })),
            OpKind::AtomicAdd { tensor, has_mask } => Some((tensor, Access::Store { has_mask, atomic: true })),
            _ => None,
        }
    }
}

/// An access's operands in a generator's form (see [`AccessPlan::operands`]).
pub(crate) struct Operands<A> {
    pub parts: Vec<A>,
    pub mask: Option<A>,
    pub value: Option<A>,
    pub other: Option<A>,
}

/// The shape of one access and the roles of its operands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AccessPlan {
    pub kind: Access,
    /// The access shape: index shapes concatenated.
    pub shape: Vec<usize>,
    /// For each tensor dim, the range of access dims its index tile covers.
    pub parts: Vec<(usize, usize)>,
    /// Operand positions of the mask, the stored value and the load's `other`.
    pub mask: Option<usize>,
    pub value: Option<usize>,
    pub other: Option<usize>,
}

impl AccessPlan {
    /// The plan of access `op` of `kind` into a tensor of rank `rank`.
    pub(crate) fn new(k: &Kernel, op: &Op, rank: usize, kind: Access) -> Self {
        let mut shape = vec![];
        let mut parts = vec![];
        for d in 0..rank {
            let start = shape.len();
            shape.extend_from_slice(&k.ty(op.args[d]).shape);
            parts.push((start, shape.len()));
        }
        let (mask, value, other) = match kind {
            Access::Load { has_mask, has_other } => (has_mask.then_some(rank), None, has_other.then_some(rank + has_mask as usize)),
            Access::Store { has_mask, .. } => (has_mask.then_some(rank + 1), Some(rank), None),
        };
        AccessPlan { kind, shape, parts, mask, value, other }
    }

    /// The access's loop-nest operands as the generator reads them (`acc(value, shape it is
    /// read over)`): each index tile over its own dims, mask, stored value and `other` over the
    /// whole access shape.
    pub(crate) fn operands<A>(&self, op: &Op, mut acc: impl FnMut(ValueId, &[usize]) -> A) -> Operands<A> {
        let parts = self.parts.iter().enumerate().map(|(d, &(s, e))| acc(op.args[d], &self.shape[s..e])).collect();
        let mut whole = |i: Option<usize>| i.map(|i| acc(op.args[i], &self.shape));
        Operands { parts, mask: whole(self.mask), value: whole(self.value), other: whole(self.other) }
    }

    /// Elements the access touches.
    pub(crate) fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The tensor dims whose index tiles are complete once the first `depth` access dims are
    /// bound (scalar indices after the last tile come with the innermost body).
    pub(crate) fn bound_at(&self, depth: usize) -> impl Iterator<Item = usize> + '_ {
        self.parts.iter().enumerate().filter(move |(_, p)| p.1 == depth).map(|(d, _)| d)
    }

    /// The tensor dim whose index tile covers the innermost access dim, if the access runs as
    /// rows (see the module docs) for elements of dtype `dt`.
    pub(crate) fn row_part(&self, dt: DType) -> Option<usize> {
        let n = self.shape.len();
        let inner = self.parts.iter().rposition(|&(s, e)| e > s).filter(|&p| self.parts[p].1 == n)?;
        let rows = self.shape[n - 1] >= 2
            && !matches!(self.kind, Access::Store { atomic: true, .. })
            && !matches!(dt, DType::I4 | DType::E2M1);
        rows.then_some(inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(parts: Vec<(usize, usize)>, shape: Vec<usize>, kind: Access) -> AccessPlan {
        AccessPlan { kind, shape, parts, mask: None, value: None, other: None }
    }

    #[test]
    fn rows_need_an_inner_index_tile() {
        let load = Access::Load { has_mask: false, has_other: false };
        // x[rows[:, None], cols[None, :]]: the column tile covers the inner dim.
        let p = plan(vec![(0, 2), (2, 4)], vec![8, 1, 1, 16], load);
        assert_eq!(p.row_part(DType::F32), Some(1));
        assert_eq!(p.row_part(DType::I4), None, "packed nibbles go element by element");
        assert_eq!(p.bound_at(2).collect::<Vec<_>>(), vec![0]);
        // x[rows, 3]: the scalar column comes last; the row tile covers the inner dim.
        let p = plan(vec![(0, 1), (1, 1)], vec![8], load);
        assert_eq!(p.row_part(DType::F32), Some(0));
        let atomic = plan(vec![(0, 1)], vec![16], Access::Store { has_mask: false, atomic: true });
        assert_eq!(atomic.row_part(DType::F32), None);
        assert_eq!(plan(vec![(0, 0)], vec![], load).row_part(DType::F32), None);
    }
}
