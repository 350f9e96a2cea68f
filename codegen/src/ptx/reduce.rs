//! `reduce` and `cumsum`: one thread per output lane, walking the reduced axis sequentially in
//! the interpreter's order (sums start from the first element, f16/bf16 sums accumulate in f32
//! and round once at the end, `max`/`min` with the interpreter's NaN rule, `argmax`/`argmin`
//! skipping NaN and keeping the first best), so results are bit-identical.
//!
//! The input is read from its shared-memory view; each lane's start offset is computed once and
//! the walk adds the axis stride. A result with one element is computed by every thread
//! (uniform). `cumsum` writes its lanes into a fresh shared buffer (its outputs are not the
//! thread's own distributed elements).
//!
//! **Does not** (yet): split long axes across a warp (`shfl` trees). That would change the
//! summation order, so it belongs behind a tolerance-aware option; lanes ≥ threads are the
//! common case in the library (row reductions of [BM, BN] tiles).

use opc_ir::{Op, ReduceOp};

use super::emit::{fimm, Kind, Reg};
use super::lower::{ekind, esize, row_major, Lower, Repr, Src, View};
use crate::Result;

impl Lower<'_> {
    /// The operand of a reduction as a view (or uniform), with its element strides.
    fn reduce_src(&mut self, v: opc_ir::ValueId) -> (Src, Vec<i64>) {
        match self.view(v) {
            Some(w) => {
                let st = w.strides.clone();
                (Src::V(w, self.shape(v), self.dtype(v)), st)
            }
            None => (self.src(v), vec![0; self.shape(v).len()]),
        }
    }

    /// Walk `n` elements from lane start `start` (element index in the view, or None for 0)
    /// with element stride `step`, calling `f(j, x)` for each (j a b32 register).
    #[allow(clippy::too_many_arguments)]
    fn walk(&mut self, src: &Src, start: Option<Reg>, step: i64, n: usize, from: usize, f: &mut dyn FnMut(&mut Self, Reg, Reg)) {
        if from >= n {
            return;
        }
        let j = self.p.mov(Kind::R, from);
        let (top, done) = (self.p.label(), self.p.label());
        let addr = match src {
            Src::V(w, _, d) => {
                let first = match start {
                    Some(s) => self.p.op(Kind::R, "mad.lo.u32", &[&j, &step, &s]),
                    None => self.p.op(Kind::R, "mul.lo.u32", &[&j, &step]),
                };
                let a = self.smem_addr(w.buf, Some(first), *d);
                Some((a, step * esize(*d) as i64, *d))
            }
            _ => None,
        };
        self.p.place(&top);
        let x = match (src, &addr) {
            (_, Some((a, _, d))) => self.ld_shared(*d, *a),
            (Src::U(r), None) => *r,
            _ => unreachable!("reductions read views or uniforms"),
        };
        f(self, j, x);
        if let Some((a, bytes, _)) = addr {
            self.p.ins(format!("add.u32 {a}, {a}, {bytes}"));
        }
        self.p.ins(format!("add.u32 {j}, {j}, 1"));
        let more = self.p.op(Kind::P, "setp.lt.u32", &[&j, &n]);
        self.p.ins(format!("@{more} bra {top}"));
        self.p.place(&done);
    }

    pub(super) fn lower_reduce(&mut self, op: &Op, rop: ReduceOp, axis: usize) -> Result<()> {
        let x = op.args[0];
        let (d, shape) = (self.dtype(x), self.shape(x));
        let n = shape[axis];
        let res = op.result();
        let out_n = self.numel(res);
        let (src, st) = self.reduce_src(x);
        let mut rshape = shape.clone();
        rshape.remove(axis);
        let mut rst = st.clone();
        rst.remove(axis);
        let step = st[axis];
        let arg = matches!(rop, ReduceOp::Argmax | ReduceOp::Argmin);
        let rkind = if arg { Kind::R } else { ekind(d) };
        let rty = if rkind == Kind::F { "f32" } else { "b32" };
        if matches!(src, Src::V(..)) {
            self.hazard(true, false, None, None);
        }
        let lane = |l: &mut Self, o: Option<Reg>| -> Reg {
            let start = o.and_then(|o| l.view_elem(&rshape, &rst, o));
            let acc = l.p.mov(rkind, if rkind == Kind::F { fimm(0.0) } else { "0".into() });
            // the best value so far (arg reductions only)
            let best = if arg { l.p.mov(ekind(d), if ekind(d) == Kind::F { fimm(0.0) } else { "0".into() }) } else { acc };
            if n == 0 {
                let v = match (rop, d.is_float()) {
                    (_, _) if arg => "0".to_string(),
                    (ReduceOp::Max, true) => fimm(f32::NEG_INFINITY),
                    (ReduceOp::Min, true) => fimm(f32::INFINITY),
                    (_, true) => fimm(0.0),
                    (ReduceOp::Max, false) => d.int_range().map_or(0, |r| r.0).to_string(),
                    (ReduceOp::Min, false) => d.int_range().map_or(0, |r| r.1).to_string(),
                    _ => "0".to_string(),
                };
                l.p.ins(format!("mov.{rty} {acc}, {v}"));
                return acc;
            }
            match rop {
                ReduceOp::Argmax | ReduceOp::Argmin if d.is_float() => {
                    // best = NaN means "none yet": NaN is never chosen
                    l.p.ins(format!("mov.b32 {acc}, 0"));
                    l.p.ins(format!("mov.f32 {best}, {}", fimm(f32::NAN)));
                    let gt = if rop == ReduceOp::Argmax { "setp.gt.f32" } else { "setp.lt.f32" };
                    l.walk(&src, start, step, n, 0, &mut |l, j, v| {
                        let none = l.p.op(Kind::P, "testp.notanumber.f32", &[&best]);
                        let better = l.p.op(Kind::P, gt, &[&v, &best]);
                        let take = l.p.op(Kind::P, "or.pred", &[&none, &better]);
                        let num = l.p.op(Kind::P, "setp.num.f32", &[&v, &v]);
                        let take = l.p.op(Kind::P, "and.pred", &[&take, &num]);
                        l.p.ins(format!("selp.f32 {best}, {v}, {best}, {take}"));
                        l.p.ins(format!("selp.b32 {acc}, {j}, {acc}, {take}"));
                    });
                }
                ReduceOp::Argmax | ReduceOp::Argmin => {
                    l.p.ins(format!("mov.b32 {acc}, 0"));
                    let gt = if rop == ReduceOp::Argmax { "setp.gt.s32" } else { "setp.lt.s32" };
                    l.walk(&src, start, step, n, 0, &mut |l, j, v| {
                        let first = l.p.op(Kind::P, "setp.eq.u32", &[&j, &0]);
                        let better = l.p.op(Kind::P, gt, &[&v, &best]);
                        let take = l.p.op(Kind::P, "or.pred", &[&first, &better]);
                        l.p.ins(format!("selp.b32 {best}, {v}, {best}, {take}"));
                        l.p.ins(format!("selp.b32 {acc}, {j}, {acc}, {take}"));
                    });
                }
                _ => {
                    l.walk(&src, start, step, n, 0, &mut |l, j, v| {
                        let is0 = l.p.op(Kind::P, "setp.eq.u32", &[&j, &0]);
                        let y = match (rop, d.is_float()) {
                            (ReduceOp::Sum, true) => l.p.op(Kind::F, "add.rn.f32", &[&acc, &v]),
                            (ReduceOp::Max, true) => l.fmaxmin(acc, v, true),
                            (ReduceOp::Min, true) => l.fmaxmin(acc, v, false),
                            (ReduceOp::Sum, false) => l.p.op(Kind::R, "add.s32", &[&acc, &v]),
                            (ReduceOp::Max, false) => l.p.op(Kind::R, "max.s32", &[&acc, &v]),
                            _ => l.p.op(Kind::R, "min.s32", &[&acc, &v]),
                        };
                        l.p.ins(format!("selp.{rty} {acc}, {v}, {y}, {is0}"));
                    });
                }
            }
            if arg {
                acc
            } else if d.is_float() {
                l.round_to(d, acc)
            } else {
                l.wrap(d, acc)
            }
        };
        if out_n == 1 {
            let r = lane(self, None);
            self.set(res, Repr::Uniform(r));
            return Ok(());
        }
        let mut regs = vec![];
        for _ in 0..self.chunks(out_n) {
            regs.push(self.p.reg(rkind));
        }
        let regs2 = regs.clone();
        self.chunk_loop(out_n, &mut |l, i, e| {
            let r = lane(l, Some(e));
            l.p.ins(format!("mov.{rty} {}, {r}", regs2[i]));
            Ok(())
        })?;
        self.set(res, Repr::Dist(regs));
        Ok(())
    }

    pub(super) fn lower_cumsum(&mut self, op: &Op, axis: usize) -> Result<()> {
        let x = op.args[0];
        let (d, shape) = (self.dtype(x), self.shape(x));
        let n = shape[axis];
        let (src, st) = self.reduce_src(x);
        let mut rshape = shape.clone();
        rshape.remove(axis);
        let mut rst = st.clone();
        rst.remove(axis);
        let lanes: usize = rshape.iter().product();
        let ost = row_major(&shape);
        let mut orst = ost.clone();
        orst.remove(axis);
        let buf = self.alloc(shape.iter().product::<usize>() * esize(d) as usize);
        self.hazard(matches!(src, Src::V(..)), true, None, None);
        let kind = ekind(d);
        let ty = if kind == Kind::F { "f32" } else { "b32" };
        let step = st[axis];
        self.chunk_loop(lanes.max(1), &mut |l, _, e| {
            let start = l.view_elem(&rshape, &rst, e);
            let ostart = l.view_elem(&rshape, &orst, e).unwrap_or_else(|| l.p.mov(Kind::R, 0));
            let acc = l.p.mov(kind, if kind == Kind::F { fimm(0.0) } else { "0".into() });
            l.walk(&src, start, step, n, 0, &mut |l, j, v| {
                let is0 = l.p.op(Kind::P, "setp.eq.u32", &[&j, &0]);
                let s = if d.is_float() { l.p.op(Kind::F, "add.rn.f32", &[&acc, &v]) } else { l.p.op(Kind::R, "add.s32", &[&acc, &v]) };
                l.p.ins(format!("selp.{ty} {acc}, {v}, {s}, {is0}"));
                let out = if d.is_float() { l.round_to(d, acc) } else { l.wrap(d, acc) };
                let el = l.p.op(Kind::R, "mad.lo.u32", &[&j, &ost[axis], &ostart]);
                let a = l.smem_addr(buf, Some(el), d);
                l.st_shared(d, a, out);
            });
            Ok(())
        })?;
        self.set(op.result(), Repr::View(View { buf, strides: ost.clone() }));
        Ok(())
    }
}
