//! Global memory: `load`, `store` and `atomic_add` as loop nests over the access shape (the
//! index shapes concatenated).
//!
//! Index tile `d` is read as soon as all its dims are bound by the enclosing loops, checked
//! `0 <= i < dim_d` (one unsigned compare against the launch-time dim) and folded into the
//! running element offset and validity. In the innermost body the mask joins the validity and
//! the element is touched only under a branch on it: out-of-range and masked-off elements read
//! `other` (default 0) or are skipped, and never reach memory.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder, Value};
use opc_ir::Op;

use super::lower::{cty, row_major, Acc, Lower, Repr, TensorVals};
use crate::Result;

impl Lower<'_, '_> {
    pub(super) fn lower_access(&mut self, op: &Op, tensor: usize, kind: Access) -> Result<()> {
        let tv = self.tensors.get(tensor).cloned().flatten().ok_or_else(|| self.unsupported(op, "parameter is not a tensor"))?;
        let rank = tv.shape.len();
        // The access shape: index shapes concatenated.
        let mut shape = vec![];
        let mut parts = vec![];
        for d in 0..rank {
            let s = self.shape(op.args[d]);
            let start = shape.len();
            shape.extend_from_slice(&s);
            let acc = self.acc(op.args[d], &s);
            parts.push((acc, start, shape.len()));
        }
        let (mask_at, value_at, other_at) = match kind {
            Access::Load { has_mask, has_other } => (has_mask.then_some(rank), None, has_other.then_some(rank + has_mask as usize)),
            Access::Store { has_mask, .. } => (has_mask.then_some(rank + 1), Some(rank), None),
        };
        let mask = mask_at.map(|i| self.acc(op.args[i], &shape));
        let value = value_at.map(|i| self.acc(op.args[i], &shape));
        let dt = tv.dtype;
        let other = match other_at {
            Some(i) => self.acc(op.args[i], &shape),
            None => Acc::Val(if cty(dt) == types::F32 { self.b.ins().f32const(0.0) } else { self.b.ins().iconst(types::I32, 0) }),
        };
        let out = match kind {
            Access::Load { .. } if !shape.is_empty() => Some(self.alloc(shape.iter().product())),
            _ => None,
        };
        let orm = row_major(&shape);
        let mut result: Option<Value> = None;
        // Walk the access shape; index `d` is checked as soon as its dims are bound.
        #[allow(clippy::too_many_arguments, clippy::type_complexity)]
        fn walk<'a, 'f>(
            l: &mut Lower<'a, 'f>,
            shape: &[usize],
            parts: &[(Acc, usize, usize)],
            tv: &TensorVals,
            idx: &mut Vec<Value>,
            valid: Value,
            off: Value,
            inner: &mut dyn FnMut(&mut Lower<'a, 'f>, &[Value], Value, Value) -> Result<()>,
        ) -> Result<()> {
            let (mut valid, mut off) = (valid, off);
            for (d, (acc, s, e)) in parts.iter().enumerate() {
                if *e != idx.len() {
                    continue;
                }
                let i = l.read(acc, types::I32, &idx[*s..*e]);
                let i = l.b.ins().sextend(types::I64, i);
                let ok = l.b.ins().icmp(IntCC::UnsignedLessThan, i, tv.shape[d]);
                valid = l.b.ins().band(valid, ok);
                let t = l.b.ins().imul(i, tv.strides[d]);
                off = l.b.ins().iadd(off, t);
            }
            if idx.len() == shape.len() {
                return inner(l, idx, valid, off);
            }
            l.loop_n(shape[idx.len()], &mut |l, i| {
                idx.push(i);
                let r = walk(l, shape, parts, tv, idx, valid, off, inner);
                idx.pop();
                r
            })
        }
        let one = self.b.ins().iconst(types::I8, 1);
        let zero = self.b.ins().iconst(types::I64, 0);
        walk(self, &shape, &parts, &tv, &mut vec![], one, zero, &mut |l, idx, valid, off| {
            let valid = match &mask {
                Some(m) => {
                    let mv = l.read(m, types::I32, idx);
                    let on = l.b.ins().icmp_imm_s(IntCC::NotEqual, mv, 0);
                    l.b.ins().band(valid, on)
                }
                None => valid,
            };
            let hit = l.b.create_block();
            let merge = l.b.create_block();
            match kind {
                Access::Load { .. } => {
                    let miss = l.b.create_block();
                    let x = l.b.append_block_param(merge, cty(dt));
                    l.b.ins().brif(valid, hit, &[], miss, &[]);
                    l.b.switch_to_block(hit);
                    let v = l.read_elem(&tv, off);
                    l.b.ins().jump(merge, &[v.into()]);
                    l.b.switch_to_block(miss);
                    let o = l.read(&other, cty(dt), idx);
                    l.b.ins().jump(merge, &[o.into()]);
                    l.b.switch_to_block(merge);
                    match out {
                        Some(out) => {
                            let e = l.linear(idx, &orm);
                            l.store_arena(out, e, x);
                        }
                        None => result = Some(x),
                    }
                }
                Access::Store { atomic, .. } => {
                    l.b.ins().brif(valid, hit, &[], merge, &[]);
                    l.b.switch_to_block(hit);
                    let v = l.read(value.as_ref().expect("store value"), cty(dt), idx);
                    if atomic {
                        l.atomic_add_elem(&tv, off, v);
                    } else {
                        l.write_elem(&tv, off, v);
                    }
                    l.b.ins().jump(merge, &[]);
                    l.b.switch_to_block(merge);
                }
            }
            Ok(())
        })?;
        if let Access::Load { .. } = kind {
            match out {
                Some(out) => self.set(op.result(), Repr::Buf { off: out, strides: orm }),
                None => {
                    let x = result.expect("scalar load value");
                    self.def_uniform(op.result(), x);
                }
            }
        }
        Ok(())
    }
}

/// What a global access does.
#[derive(Clone, Copy)]
pub(super) enum Access {
    Load { has_mask: bool, has_other: bool },
    Store { has_mask: bool, atomic: bool },
}
