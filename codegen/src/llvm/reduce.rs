//! `reduce` and `scan` (cumsum).
//!
//! - Along a dim that is not the last: the kept last dim is contiguous, so each output row is a
//!   vector accumulator updated by one row of the input per step, j ascending: exactly the
//!   interpreter's order (start from the first element, then `op(acc, x_j)`).
//! - Along the last dim: each row is reduced with one `<16 x T>` accumulator over its chunks
//!   (the last chunk's missing lanes filled with the identity: -0.0 for sums, NaN for the
//!   interpreter's NaN-skipping max/min), then across the lanes by halving (`fold_lanes`: the
//!   upper half onto the lower, 4 vector steps for 16 lanes). For float `sum` this reassociates
//!   the additions: the result differs from the interpreter's left-to-right sum by rounding
//!   only (a few ulps of the row's magnitude; f16 / bf16 sums are still rounded once, at the end). `max` / `min` keep the interpreter's NaN rule
//!   and differ at most in the sign of a zero when +0.0 and -0.0 tie. Int sums wrap (exact in
//!   any order).
//! - `argmax` / `argmin` and `cumsum`: scalar loops in the interpreter's order (first best
//!   index; float NaNs skipped, an all-NaN row gives 0; f16 / bf16 cumsums round each output from
//!   an f32 running sum; int sums wrap).

use opc_ir::{DType, Op, ReduceOp};

use super::lower::{ety, lane_mask, lanes_for, row_major, Lower, Repr};
use super::text::{cst, flit, vt};
use crate::Result;

impl Lower<'_> {
    /// `op(acc, v)` on `lanes` lanes of elements of dtype `d` (sums unrounded).
    pub(super) fn combine(&mut self, rop: ReduceOp, d: DType, acc: &str, v: &str, lanes: u32) -> String {
        let float = ety(d) == "float";
        let t = vt(ety(d), lanes);
        match (rop, float) {
            (ReduceOp::Sum, true) => self.f.val(format!("fadd {t} {acc}, {v}")),
            (ReduceOp::Max, true) => self.fmaxmin(acc, v, lanes, true),
            (_, true) => self.fmaxmin(acc, v, lanes, false),
            (ReduceOp::Sum, false) => self.f.val(format!("add {t} {acc}, {v}")),
            (ReduceOp::Max, false) => self.f.val(format!("call {t} @llvm.smax.{}({t} {acc}, {t} {v})", super::text::suffix("i32", lanes))),
            (_, false) => self.f.val(format!("call {t} @llvm.smin.{}({t} {acc}, {t} {v})", super::text::suffix("i32", lanes))),
        }
    }

    /// The final rounding / wrapping of a reduced value.
    pub(super) fn finish_reduce(&mut self, d: DType, x: &str, lanes: u32) -> String {
        if ety(d) == "float" {
            self.round_to(d, x, lanes)
        } else {
            self.wrap(d, x, lanes)
        }
    }

    /// Value of a reduction over zero elements.
    fn empty_reduce(rop: ReduceOp, d: DType) -> String {
        if matches!(rop, ReduceOp::Argmax | ReduceOp::Argmin) {
            return "0".into();
        }
        if ety(d) == "float" {
            return flit(match rop {
                ReduceOp::Max => f32::NEG_INFINITY,
                ReduceOp::Min => f32::INFINITY,
                _ => 0.0,
            });
        }
        let (lo, hi) = d.int_range().unwrap_or((0, 0));
        match rop {
            ReduceOp::Max => lo,
            ReduceOp::Min => hi,
            _ => 0,
        }
        .to_string()
    }

    pub(super) fn lower_reduce(&mut self, op: &Op, rop: ReduceOp, axis: usize) -> Result<()> {
        let x = op.args[0];
        if self.fused.contains_key(&x) {
            return self.fused_reduce(op, rop);
        }
        let (d, shape) = (self.dtype(x), self.shape(x));
        let res = op.result();
        let n = shape[axis];
        let mut oshape = shape.clone();
        oshape.remove(axis);
        let base = ety(d);
        let arg = matches!(rop, ReduceOp::Argmax | ReduceOp::Argmin);
        let last = axis == shape.len() - 1;
        let rows_path = !arg && !last && oshape.last().is_some_and(|&m| m >= 2);
        let (mut xoff, mut xst) = self.buf(x);
        if rows_path && xst[shape.len() - 1] != 1 {
            // vector rows need the last dim contiguous
            xoff = self.materialize(x);
            xst = row_major(&shape);
        }
        let mut ost = xst.clone();
        ost.remove(axis);
        if n == 0 {
            let v = Self::empty_reduce(rop, d);
            self.def_uniform(res, v);
            return Ok(());
        }
        if rows_path {
            // Vector accumulators over the kept last dim, input rows in order.
            let out = self.alloc(oshape.iter().product());
            let orm = row_major(&oshape);
            let r = oshape.len();
            let m = oshape[r - 1];
            let lanes = lanes_for(m);
            let sa = xst[axis];
            self.nest(&oshape[..r - 1], &mut |l, oidx| {
                let xrow = l.linear(oidx, &ost[..r - 1]);
                let orow = l.linear(oidx, &orm[..r - 1]);
                let chunks = m.div_ceil(lanes as usize);
                l.loop_n(chunks, &mut |l, c| {
                    let j0 = if c == "0" { "0".to_string() } else { l.f.val(format!("mul i64 {c}, {lanes}")) };
                    let at = |l: &mut Self, k: &str| -> String {
                        let ko = if k == "0" { "0".to_string() } else { l.f.val(format!("mul i64 {k}, {sa}")) };
                        let e = l.f.val(format!("add i64 {xrow}, {ko}"));
                        let e = l.f.val(format!("add i64 {e}, {j0}"));
                        l.load_arena(base, lanes, xoff, &e)
                    };
                    let slot = l.f.alloca(&vt(base, lanes));
                    let first = at(l, "0");
                    l.f.inst(format!("store {} {first}, ptr {slot}, align 64", vt(base, lanes)));
                    l.loop_n(n - 1, &mut |l, k0| {
                        let k = l.f.val(format!("add i64 {k0}, 1"));
                        let v = at(l, &k);
                        let cur = l.f.val(format!("load {}, ptr {slot}, align 64", vt(base, lanes)));
                        let nx = l.combine(rop, d, &cur, &v, lanes);
                        l.f.inst(format!("store {} {nx}, ptr {slot}, align 64", vt(base, lanes)));
                        Ok(())
                    })?;
                    let acc = l.f.val(format!("load {}, ptr {slot}, align 64", vt(base, lanes)));
                    let y = l.finish_reduce(d, &acc, lanes);
                    let e = l.f.val(format!("add i64 {orow}, {j0}"));
                    // The last chunk may be partial: keep the lanes inside the row.
                    let full = m % lanes as usize == 0;
                    if full {
                        l.store_arena(base, lanes, out, &e, &y, None);
                    } else {
                        let is_last = l.f.val(format!("icmp eq i64 {j0}, {}", (chunks - 1) * lanes as usize));
                        let mk = lane_mask(lanes, m % lanes as usize);
                        let all = lane_mask(lanes, lanes as usize);
                        let mm = l.f.val(format!("select i1 {is_last}, <{lanes} x i1> {mk}, <{lanes} x i1> {all}"));
                        l.store_arena(base, lanes, out, &e, &y, Some(&mm));
                    }
                    Ok(())
                })
            })?;
            self.set(res, Repr::Buf { off: out, strides: orm });
            return Ok(());
        }
        // One output element: the reduction along the axis starting at element index `row`.
        let sa = xst[axis];
        let one = |l: &mut Self, row: &str| -> Result<String> {
            if arg {
                return Ok(l.arg_reduce(rop, d, xoff, row, sa, n));
            }
            if sa == 1 && n >= 2 {
                return Ok(l.row_reduce(rop, d, xoff, row, n));
            }
            let slot = l.f.alloca(base);
            let first = l.load_arena(base, 0, xoff, row);
            l.f.inst(format!("store {base} {first}, ptr {slot}, align 4"));
            l.loop_n(n - 1, &mut |l, j0| {
                let j = l.f.val(format!("add i64 {j0}, 1"));
                let t = l.f.val(format!("mul i64 {j}, {sa}"));
                let e = l.f.val(format!("add i64 {row}, {t}"));
                let v = l.load_arena(base, 0, xoff, &e);
                let s = l.f.val(format!("load {base}, ptr {slot}, align 4"));
                let r = l.combine(rop, d, &s, &v, 0);
                l.f.inst(format!("store {base} {r}, ptr {slot}, align 4"));
                Ok(())
            })?;
            let s = l.f.val(format!("load {base}, ptr {slot}, align 4"));
            Ok(l.finish_reduce(d, &s, 0))
        };
        if oshape.is_empty() {
            let y = one(self, "0")?;
            self.def_uniform(res, y);
            return Ok(());
        }
        let out = self.alloc(oshape.iter().product());
        let orm = row_major(&oshape);
        let rb = if arg { "i32" } else { base };
        self.nest(&oshape, &mut |l, idx| {
            let row = l.linear(idx, &ost);
            let y = one(l, &row)?;
            let e = l.linear(idx, &orm);
            l.store_arena(rb, 0, out, &e, &y, None);
            Ok(())
        })?;
        self.set(res, Repr::Buf { off: out, strides: orm });
        Ok(())
    }

    /// Reduce `n >= 2` contiguous elements from element `row` with a vector accumulator.
    fn row_reduce(&mut self, rop: ReduceOp, d: DType, xoff: u32, row: &str, n: usize) -> String {
        let base = ety(d);
        let lanes = lanes_for(n);
        let t = vt(base, lanes);
        let ident = if base == "float" {
            if rop == ReduceOp::Sum {
                flit(-0.0)
            } else {
                flit(f32::NAN)
            }
        } else {
            match rop {
                ReduceOp::Sum => "0".into(),
                ReduceOp::Max => i32::MIN.to_string(),
                _ => i32::MAX.to_string(),
            }
        };
        let chunks = n / lanes as usize;
        let tail = n % lanes as usize;
        let slot = self.f.alloca(&t);
        let first = if chunks > 0 { self.load_arena(base, lanes, xoff, row) } else { cst(base, lanes, &ident) };
        self.f.inst(format!("store {t} {first}, ptr {slot}, align 64"));
        let _ = self.loop_n(chunks.saturating_sub(1), &mut |l, c0| {
            let c = l.f.val(format!("add i64 {c0}, 1"));
            let j = l.f.val(format!("mul i64 {c}, {lanes}"));
            let e = l.f.val(format!("add i64 {row}, {j}"));
            let v = l.load_arena(base, lanes, xoff, &e);
            let cur = l.f.val(format!("load {t}, ptr {slot}, align 64"));
            let nx = l.combine(rop, d, &cur, &v, lanes);
            l.f.inst(format!("store {t} {nx}, ptr {slot}, align 64"));
            Ok(())
        });
        if tail > 0 {
            let e = self.f.val(format!("add i64 {row}, {}", chunks * lanes as usize));
            let v = self.load_arena(base, lanes, xoff, &e);
            let v = self.f.val(format!("select <{lanes} x i1> {}, {t} {v}, {t} {}", lane_mask(lanes, tail), cst(base, lanes, &ident)));
            let cur = self.f.val(format!("load {t}, ptr {slot}, align 64"));
            let nx = self.combine(rop, d, &cur, &v, lanes);
            self.f.inst(format!("store {t} {nx}, ptr {slot}, align 64"));
        }
        let acc = self.f.val(format!("load {t}, ptr {slot}, align 64"));
        let s = self.fold_lanes(rop, d, &acc, lanes);
        self.finish_reduce(d, &s, 0)
    }

    /// The lanes of the vector `acc` (`lanes` a power of two) combined into one scalar by
    /// halving: the upper half onto the lower, log2(lanes) vector steps instead of a chain of
    /// `lanes - 1` scalar ones. Sums are reassociated (as everywhere across lanes); max / min
    /// keep their rule (NaN skipped), so only which of two equal zeros wins may change.
    pub(super) fn fold_lanes(&mut self, rop: ReduceOp, d: DType, acc: &str, lanes: u32) -> String {
        let base = ety(d);
        let mut v = acc.to_string();
        let mut n = lanes;
        while n > 1 && n.is_power_of_two() {
            let h = n / 2;
            let t = vt(base, n);
            let idx = |from: u32| (from..from + h).map(|i| format!("i32 {i}")).collect::<Vec<_>>().join(", ");
            let lo = self.f.val(format!("shufflevector {t} {v}, {t} poison, <{h} x i32> <{}>", idx(0)));
            let hi = self.f.val(format!("shufflevector {t} {v}, {t} poison, <{h} x i32> <{}>", idx(h)));
            v = self.combine(rop, d, &lo, &hi, h);
            n = h;
        }
        let t = vt(base, n);
        let mut s = self.f.val(format!("extractelement {t} {v}, i64 0"));
        for lane in 1..n {
            let x = self.f.val(format!("extractelement {t} {v}, i64 {lane}"));
            s = self.combine(rop, d, &s, &x, 0);
        }
        s
    }

    /// `argmax` / `argmin` of `n` elements from element `row`, stride `sa`.
    fn arg_reduce(&mut self, rop: ReduceOp, d: DType, xoff: u32, row: &str, sa: i64, n: usize) -> String {
        let base = ety(d);
        let float = base == "float";
        let bi = self.f.alloca("i32");
        let bv = self.f.alloca(base);
        self.f.inst(format!("store i32 0, ptr {bi}, align 4"));
        let at = |l: &mut Self, j: &str| -> String {
            let t = l.f.val(format!("mul i64 {j}, {sa}"));
            let e = l.f.val(format!("add i64 {row}, {t}"));
            l.load_arena(base, 0, xoff, &e)
        };
        if float {
            // best starts "absent": NaNs are skipped, an all-NaN row gives 0.
            let has = self.f.alloca("i1");
            self.f.inst(format!("store i1 false, ptr {has}, align 1"));
            self.f.inst(format!("store float 0.0, ptr {bv}, align 4"));
            let cc = if rop == ReduceOp::Argmax { "ogt" } else { "olt" };
            let _ = self.loop_n(n, &mut |l, j| {
                let v = at(l, j);
                let cb = l.f.val(format!("load float, ptr {bv}, align 4"));
                let ch = l.f.val(format!("load i1, ptr {has}, align 1"));
                let ci = l.f.val(format!("load i32, ptr {bi}, align 4"));
                let notnan = l.f.val(format!("fcmp ord float {v}, {v}"));
                let gt = l.f.val(format!("fcmp {cc} float {v}, {cb}"));
                let none = l.f.val(format!("xor i1 {ch}, true"));
                let cand = l.f.val(format!("or i1 {none}, {gt}"));
                let take = l.f.val(format!("and i1 {notnan}, {cand}"));
                let j32 = l.f.val(format!("trunc i64 {j} to i32"));
                let ni = l.f.val(format!("select i1 {take}, i32 {j32}, i32 {ci}"));
                let nv = l.f.val(format!("select i1 {take}, float {v}, float {cb}"));
                let nh = l.f.val(format!("or i1 {ch}, {take}"));
                l.f.inst(format!("store i32 {ni}, ptr {bi}, align 4"));
                l.f.inst(format!("store float {nv}, ptr {bv}, align 4"));
                l.f.inst(format!("store i1 {nh}, ptr {has}, align 1"));
                Ok(())
            });
        } else {
            let cc = if rop == ReduceOp::Argmax { "sgt" } else { "slt" };
            let first = at(self, "0");
            self.f.inst(format!("store i32 {first}, ptr {bv}, align 4"));
            let _ = self.loop_n(n - 1, &mut |l, j0| {
                let j = l.f.val(format!("add i64 {j0}, 1"));
                let v = at(l, &j);
                let cb = l.f.val(format!("load i32, ptr {bv}, align 4"));
                let ci = l.f.val(format!("load i32, ptr {bi}, align 4"));
                let take = l.f.val(format!("icmp {cc} i32 {v}, {cb}"));
                let j32 = l.f.val(format!("trunc i64 {j} to i32"));
                let ni = l.f.val(format!("select i1 {take}, i32 {j32}, i32 {ci}"));
                let nv = l.f.val(format!("select i1 {take}, i32 {v}, i32 {cb}"));
                l.f.inst(format!("store i32 {ni}, ptr {bi}, align 4"));
                l.f.inst(format!("store i32 {nv}, ptr {bv}, align 4"));
                Ok(())
            });
        }
        self.f.val(format!("load i32, ptr {bi}, align 4"))
    }

    pub(super) fn lower_cumsum(&mut self, op: &Op, axis: usize) -> Result<()> {
        let x = op.args[0];
        let (d, shape) = (self.dtype(x), self.shape(x));
        let (xoff, xst) = self.buf(x);
        let base = ety(d);
        let n = shape[axis];
        let orm = row_major(&shape);
        let out = self.alloc(shape.iter().product());
        let mut outer = shape.clone();
        outer[axis] = 1;
        self.nest(&outer, &mut |l, idx| {
            let xb = l.linear(idx, &xst);
            let ob = l.linear(idx, &orm);
            let acc = l.f.alloca(base);
            l.f.inst(format!("store {base} {}, ptr {acc}, align 4", if base == "float" { "0.0" } else { "0" }));
            l.loop_n(n, &mut |l, j| {
                let t = l.f.val(format!("mul i64 {j}, {}", xst[axis]));
                let e = l.f.val(format!("add i64 {xb}, {t}"));
                let v = l.load_arena(base, 0, xoff, &e);
                let s = l.f.val(format!("load {base}, ptr {acc}, align 4"));
                // the first element starts the sum (so -0.0 stays -0.0, as in the interpreter)
                let (ns, y) = if base == "float" {
                    let sum = l.f.val(format!("fadd float {s}, {v}"));
                    let is0 = l.f.val(format!("icmp eq i64 {j}, 0"));
                    let ns = l.f.val(format!("select i1 {is0}, float {v}, float {sum}"));
                    let y = l.round_to(d, &ns, 0);
                    (ns, y)
                } else {
                    let ns = l.f.val(format!("add i32 {s}, {v}"));
                    let y = l.wrap(d, &ns, 0);
                    (ns, y)
                };
                l.f.inst(format!("store {base} {ns}, ptr {acc}, align 4"));
                let t = l.f.val(format!("mul i64 {j}, {}", orm[axis]));
                let oe = l.f.val(format!("add i64 {ob}, {t}"));
                l.store_arena(base, 0, out, &oe, &y, None);
                Ok(())
            })
        })?;
        self.set(op.result(), Repr::Buf { off: out, strides: orm });
        Ok(())
    }
}
