//! Global memory: `load`, `store` and `atomic_add` as loop nests over the access shape (the
//! index shapes concatenated; the analysis is `loops/access.rs`, shared with the LLVM target,
//! whose row path this target does not have: every access goes element by element).
//!
//! Index tile `d` is read as soon as all its dims are bound by the enclosing loops, checked
//! `0 <= i < dim_d` (one unsigned compare against the launch-time dim) and folded into the
//! running element offset and validity. In the innermost body the mask joins the validity and
//! the element is touched only under a branch on it: out-of-range and masked-off elements read
//! `other` (default 0) or are skipped, and never reach memory.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder, Value};
use opc_ir::Op;

use super::lower::{cty, Acc, Lower, Repr};
use crate::loops::access::{Access, AccessPlan, Operands};
use crate::loops::nest;
use crate::loops::plan::row_major;
use crate::Result;

impl Lower<'_, '_> {
    pub(super) fn lower_access(&mut self, op: &Op, tensor: usize, kind: Access) -> Result<()> {
        let tv = self.tensors.get(tensor).cloned().flatten().ok_or_else(|| self.unsupported(op, "parameter is not a tensor"))?;
        let plan = AccessPlan::new(self.k, op, tv.shape.len(), kind);
        let shape = plan.shape.clone();
        let Operands { parts, mask, value, other } = plan.operands(op, |v, s| self.acc(v, s));
        let dt = tv.dtype;
        let other = match other {
            Some(a) => a,
            None => Acc::Val(if cty(dt) == types::F32 { self.b.ins().f32const(0.0) } else { self.b.ins().iconst(types::I32, 0) }),
        };
        let out = match kind {
            Access::Load { .. } if !shape.is_empty() => Some(self.alloc(plan.numel())),
            _ => None,
        };
        let orm = row_major(&shape);
        let mut result: Option<Value> = None;
        let one = self.b.ins().iconst(types::I8, 1);
        let zero = self.b.ins().iconst(types::I64, 0);
        // Walk the access shape; index `d` is checked as soon as its dims are bound.
        let mut bound = |l: &mut Self, idx: &[Value], (mut valid, mut off): (Value, Value)| {
            for d in plan.bound_at(idx.len()) {
                let (s, e) = plan.parts[d];
                let i = l.read(&parts[d], types::I32, &idx[s..e]);
                let i = l.b.ins().sextend(types::I64, i);
                let ok = l.b.ins().icmp(IntCC::UnsignedLessThan, i, tv.shape[d]);
                valid = l.b.ins().band(valid, ok);
                let t = l.b.ins().imul(i, tv.strides[d]);
                off = l.b.ins().iadd(off, t);
            }
            (valid, off)
        };
        nest::walk(self, &shape, &mut vec![], (one, zero), &mut bound, &mut |l, idx, (valid, off)| {
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
