//! `dot`: `c = acc + a · b` as register-blocked micro-kernels.
//!
//! The result buffer is the accumulator's own buffer when that is its last use in the defining
//! region (the `acc = dot(a, b, acc)` of a K loop: no copy per step), else a fresh buffer
//! holding a copy of `acc` (or nothing: a kernel without `acc` starts from zero registers).
//!
//! **f32** (float operands; e2m1 / e8m0 decoded first): `c` is walked in blocks of `MR` rows ×
//! `16·NV` columns (`NV` = 4, 2, 1 vectors; `MR` = 6, 12, 14 so that `MR·NV` ≤ 24 zmm
//! accumulators stay in registers), the last partial vector of a row under a lane mask. Per k:
//! `NV` vector loads of a `b` row, one broadcast of `a[i, k]` per row, `MR·NV` FMAs
//! (`llvm.fma.v16f32`). `b` is first copied row-contiguous if it is a transposed view.
//! Rounding: each `c[i, j]` still sums k in ascending order, but every step is one fused
//! multiply-add instead of the interpreter's rounded product then rounded sum, so results
//! differ by rounding only (|Δ| ≲ K·2⁻²⁴·Σ|a·b|, a few ulps of the largest partial sum).
//!
//! **bf16** (both operands bf16, host with `avx512bf16`): `a` rows and `b` columns are packed
//! as k-pairs of bf16 (`a` as `[M, ⌈K/2⌉]` i32, `b` as `[⌈K/2⌉, N]` i32, a zero pad for odd K)
//! and each step is `vdpbf16ps` (`llvm.x86.avx512bf16.dpbf16ps.512`): 32 products per
//! instruction, exact in f32, the pair added to the accumulator (the hardware flushes
//! subnormals). Same blocking and masks as f32.
//!
//! **i32** (int operands): a scalar triple loop in the interpreter's order with wrapping
//! arithmetic (exact).
//!
//! **Row tiles of 128 rows or more** with an accumulator (a K loop that is not a fused one, e.g.
//! the MXFP4 GEMMs, whose weights decode in the loop): the micro-kernels stop after the last
//! row of `a` holding a nonzero value, when `b` is all finite (`live.rs`, the fused loops'
//! rule), so a grouped GEMM's ragged expert tiles skip their dead rows. A bf16 `a` tile feeding
//! several `dot`s of one region (`moe_mx_up`'s gate and up projections) is packed once.

use opc_ir::{DType, Op, Rounding};

use super::lower::{ety, lane_mask, row_major, Acc, Lower, Repr};
use crate::Result;

/// Rows from which a `dot` outside a fused K loop skips the dead rows of `a` (see
/// `Lower::dot_live`): the grouped expert GEMMs' prefill tiles (`mx_tiles`); smaller tiles (the
/// dense MXFP4 GEMM's, attention's) keep the plain sweep, which measured no slower for them.
const LIVE_MIN_ROWS: usize = 128;

/// Where the micro-kernel reads its operands.
#[derive(Clone, Copy)]
pub(super) enum Operands {
    /// `a[i, k]` at `aoff + i·as0 + k·as1`; `b[k, j]` at `boff + k·bs0 + j`.
    F32 { aoff: u32, as0: i64, as1: i64, boff: u32, bs0: i64 },
    /// Packed k-pairs: `apk[i, p]` at `apk + i·kp + p`; `bpk` in column groups of `gw`
    /// columns, each `[kp][width]` and contiguous: `bpk[p, j]` at
    /// `bpk + g·gw·kp + p·w_g + (j − g·gw)` with `g = j / gw` and `w_g` = `gw`, or what is left
    /// of `n` for the last group. `gw = n` is the flat `[kp][n]` panel.
    Bf16 { apk: u32, bpk: u32, kp: usize, n: usize, gw: usize },
}

impl Lower<'_> {
    pub(super) fn lower_dot(&mut self, op: &Op) -> Result<()> {
        let (a, bv) = (op.args[0], op.args[1]);
        let (sa, sb) = (self.shape(a), self.shape(bv));
        let (m, kk, n) = (sa[0], sa[1], sb[1]);
        let res = op.result();
        let rd = self.dtype(res);
        let rm = row_major(&[m, n]);
        let rb = ety(rd);
        let (out, zero_init) = match op.args.get(2) {
            Some(&acc) if self.can_update_in_place(acc) => {
                let Repr::Buf { off, .. } = self.repr(acc) else { unreachable!("checked in place") };
                (off, false)
            }
            Some(&acc) => {
                let o = self.alloc(m * n);
                self.copy_into(acc, o);
                (o, false)
            }
            None => (self.alloc(m * n), true),
        };
        self.set(res, Repr::Buf { off: out, strides: rm.clone() });
        if kk == 0 || rd == DType::I32 || m == 0 || n == 0 {
            if zero_init {
                let z = if rb == "float" { "0.0" } else { "0" };
                self.ew(&[m, n], &[Acc::Val(z.into())], &[rb], rb, out, &|_, x, _| Ok(x[0].clone()))?;
            }
            if kk == 0 || m == 0 || n == 0 {
                return Ok(());
            }
            return self.int_dot(a, bv, out, m, kk, n);
        }
        // Operands as f32 (codes decoded).
        let operand = |l: &mut Self, v: opc_ir::ValueId| -> (u32, Vec<i64>) {
            let d = l.dtype(v);
            if d.is_code() {
                let shape = l.shape(v);
                let acc = l.acc(v, &shape);
                let dst = l.alloc(shape.iter().product());
                l.ew(&shape, &[acc], &["i32"], "float", dst, &|l, x, lanes| Ok(l.cast(d, DType::F32, Rounding::Rne, &x[0], lanes)))
                    .expect("decode cannot fail");
                return (dst, row_major(&shape));
            }
            l.buf(v)
        };
        let (aoff, ast) = operand(self, a);
        let (boff, bst) = operand(self, bv);
        let bf16 = self.isa.bf16 && self.dtype(a) == DType::BF16 && self.dtype(bv) == DType::BF16;
        let ops = if bf16 {
            let kp = kk.div_ceil(2);
            // A tile packed by an earlier `dot` of this region is still in its (never reused) slot.
            let apk = match self.packed_a.iter().find(|p| p.0 == a && p.1 == self.region) {
                Some(p) => p.2,
                None => {
                    let apk = self.alloc(m * kp);
                    self.pack_pairs(aoff, &ast, m, kk, apk, true)?;
                    self.packed_a.push((a, self.region, apk));
                    apk
                }
            };
            let bpk = self.alloc(kp * n);
            self.pack_pairs(boff, &bst, n, kk, bpk, false)?;
            Operands::Bf16 { apk, bpk, kp, n, gw: n }
        } else {
            let (boff, bst) = match self.transpose_copy(boff, &bst, kk, n)? {
                Some(dst) => (dst, row_major(&[kk, n])),
                None => (boff, bst),
            };
            let (boff, bst) = if n > 1 && bst[1] != 1 {
                let dst = self.alloc(kk * n);
                let acc = Acc::Arena { off: boff, strides: bst.clone() };
                self.ew(&[kk, n], &[acc], &["float"], "float", dst, &|_, x, _| Ok(x[0].clone()))?;
                (dst, row_major(&[kk, n]))
            } else {
                (boff, bst)
            };
            Operands::F32 { aoff, as0: ast[0], as1: ast[1], boff, bs0: bst[0] }
        };
        let steps = match ops {
            Operands::F32 { .. } => kk,
            Operands::Bf16 { kp, .. } => kp,
        };
        let live = if zero_init { None } else { self.dot_live(ops, m, n, kk)? };
        self.dot_blocks(ops, out, m, n, &steps.to_string(), zero_init, live.as_deref())
    }

    /// Rows of a large `dot`'s `a` up to its last nonzero one (`live.rs`), when `a` is a
    /// contiguous row-major panel and `b` a contiguous one: the ragged row tiles of the grouped
    /// expert GEMMs whose K loop is not a fused one (`moe_mx_up` / `moe_mx_down` decode their
    /// MXFP4 weights in the loop) skip their dead rows as the fused loops do. `None`: all rows
    /// (small tiles, other layouts).
    fn dot_live(&mut self, ops: Operands, m: usize, n: usize, kk: usize) -> Result<Option<String>> {
        if m < LIVE_MIN_ROWS {
            return Ok(None);
        }
        let (a, b, words, dt) = match ops {
            Operands::Bf16 { apk, bpk, kp, .. } if kp.is_multiple_of(16) => (apk, bpk, kp, DType::BF16),
            Operands::F32 { aoff, as0, as1: 1, boff, bs0 } if as0 == kk as i64 && bs0 == n as i64 && kk.is_multiple_of(16) => (aoff, boff, kk, DType::F32),
            _ => return Ok(None),
        };
        let live = self.live_rows(a, m, words, dt);
        Ok(Some(self.rows_to_run(&live, m, b, words * n, dt)?))
    }

    /// `c[m, n] (+)= a · b` over `steps` k steps (an i64 operand, at least 1) with `c`
    /// contiguous at `out`: every register block of `c`. `zero` starts from zero registers
    /// instead of `c`. `live` (an i64 operand) skips the row blocks at or past that row: their
    /// `a` rows are zero and their `c` rows are left as they are (`live.rs`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn dot_blocks(&mut self, ops: Operands, out: u32, m: usize, n: usize, steps: &str, zero_init: bool, live: Option<&str>) -> Result<()> {
        // Column blocks of 4, 2, 1 vectors, then one masked vector for the rest.
        let n64 = n / 64;
        let mut rest = n - 64 * n64;
        let mut j = 64 * n64;
        let mut cols: Vec<(usize, u32, usize)> = vec![]; // (first column, vectors, lanes in the last)
        for nv in [2u32, 1] {
            if rest >= 16 * nv as usize {
                cols.push((j, nv, 16));
                j += 16 * nv as usize;
                rest -= 16 * nv as usize;
            }
        }
        if rest > 0 {
            cols.push((j, 1, rest));
        }
        let mr_of = |nv: u32| -> usize {
            match nv {
                4 => 6,
                2 => 12,
                _ => 14,
            }
        };
        // 64-wide blocks: a loop over them.
        if n64 > 0 {
            let mr = mr_of(4);
            self.loop_n(n64, &mut |l, jb| {
                let j0 = l.f.val(format!("mul i64 {jb}, 64"));
                l.row_blocks(ops, out, n, m, mr, &j0, 4, 16, steps, zero_init, live)
            })?;
        }
        for (j0, nv, last) in cols {
            let mr = mr_of(nv);
            self.row_blocks(ops, out, n, m, mr, &j0.to_string(), nv, last, steps, zero_init, live)?;
        }
        Ok(())
    }

    /// All row blocks of one column block.
    #[allow(clippy::too_many_arguments)]
    fn row_blocks(&mut self, ops: Operands, out: u32, n: usize, m: usize, mr: usize, j0: &str, nv: u32, last: usize, steps: &str, zero: bool, live: Option<&str>) -> Result<()> {
        let full = m / mr;
        let rem = m % mr;
        let mut body = |l: &mut Self, ib: &str| {
            let i0 = if ib == "0" { "0".to_string() } else { l.f.val(format!("mul i64 {ib}, {mr}")) };
            l.micro(ops, out, n, &i0, mr, j0, nv, last, steps, zero);
            Ok(())
        };
        match live {
            None => self.loop_n(full, &mut body)?,
            Some(lv) => {
                // whole blocks that start below `live`
                let t = self.f.val(format!("add i64 {lv}, {}", mr - 1));
                let t = self.f.val(format!("udiv i64 {t}, {mr}"));
                let nb = self.f.val(format!("call i64 @llvm.umin.i64(i64 {t}, i64 {full})"));
                self.loop_dyn(&nb, &mut body)?;
            }
        }
        if rem > 0 {
            let i0 = full * mr;
            match live {
                None => self.micro(ops, out, n, &i0.to_string(), rem, j0, nv, last, steps, zero),
                Some(lv) => {
                    let (run, done) = (self.f.label(), self.f.label());
                    let c = self.f.val(format!("icmp ugt i64 {lv}, {i0}"));
                    self.f.condbr(&c, &run, &done);
                    self.f.block(&run);
                    self.micro(ops, out, n, &i0.to_string(), rem, j0, nv, last, steps, zero);
                    self.f.br(&done);
                    self.f.block(&done);
                }
            }
        }
        Ok(())
    }

    /// One `mr × 16·nv` block of `c` held in registers across all k steps.
    #[allow(clippy::too_many_arguments)]
    fn micro(&mut self, ops: Operands, out: u32, n: usize, i0: &str, mr: usize, j0: &str, nv: u32, last: usize, steps: &str, zero: bool) {
        let v = "<16 x float>";
        let nv = nv as usize;
        let mask = (last < 16).then(|| lane_mask(16, last));
        // c element index of (i0 + r, j0 + 16 q)
        let cidx = |l: &mut Self, r: usize, q: usize| -> String {
            let i = l.f.val(format!("add i64 {i0}, {r}"));
            let row = l.f.val(format!("mul i64 {i}, {n}"));
            let e = l.f.val(format!("add i64 {row}, {j0}"));
            l.f.val(format!("add i64 {e}, {}", 16 * q))
        };
        let mut init = vec![];
        for r in 0..mr {
            for q in 0..nv {
                init.push(if zero {
                    "zeroinitializer".to_string()
                } else {
                    let e = cidx(self, r, q);
                    self.load_arena("float", 16, out, &e)
                });
            }
        }
        let nexts = self.carried_loop(v, &init, steps, &mut |l, p, accs, nexts| match ops {
            Operands::F32 { aoff, as0, as1, boff, bs0 } => {
                let brow = l.f.val(format!("mul i64 {p}, {bs0}"));
                let brow = l.f.val(format!("add i64 {brow}, {j0}"));
                let bq: Vec<String> = (0..nv)
                    .map(|q| {
                        let e = l.f.val(format!("add i64 {brow}, {}", 16 * q));
                        l.load_arena("float", 16, boff, &e)
                    })
                    .collect();
                let ak = l.f.val(format!("mul i64 {p}, {as1}"));
                for r in 0..mr {
                    let i = l.f.val(format!("add i64 {i0}, {r}"));
                    let ai = l.f.val(format!("mul i64 {i}, {as0}"));
                    let e = l.f.val(format!("add i64 {ai}, {ak}"));
                    let x = l.load_arena("float", 0, aoff, &e);
                    let xs = l.f.splat("float", 16, &x);
                    for (q, b) in bq.iter().enumerate() {
                        let k = r * nv + q;
                        l.f.inst(format!("{} = call {v} @llvm.fma.v16f32({v} {xs}, {v} {b}, {v} {})", nexts[k], accs[k]));
                    }
                }
            }
            Operands::Bf16 { apk, bpk, kp, n: bn, gw } => {
                let bt = "<32 x bfloat>";
                let brow = if gw >= bn {
                    let r = l.f.val(format!("mul i64 {p}, {bn}"));
                    l.f.val(format!("add i64 {r}, {j0}"))
                } else {
                    let (base, w) = l.group_col(j0, gw, bn, kp);
                    let r = l.f.val(format!("mul i64 {p}, {w}"));
                    l.f.val(format!("add i64 {r}, {base}"))
                };
                let bq: Vec<String> = (0..nv)
                    .map(|q| {
                        let e = l.f.val(format!("add i64 {brow}, {}", 16 * q));
                        let w = l.load_arena("i32", 16, bpk, &e);
                        l.f.val(format!("bitcast <16 x i32> {w} to {bt}"))
                    })
                    .collect();
                for r in 0..mr {
                    let i = l.f.val(format!("add i64 {i0}, {r}"));
                    let ai = l.f.val(format!("mul i64 {i}, {kp}"));
                    let e = l.f.val(format!("add i64 {ai}, {p}"));
                    let x = l.load_arena("i32", 0, apk, &e);
                    let xs = l.f.splat("i32", 16, &x);
                    let xb = l.f.val(format!("bitcast <16 x i32> {xs} to {bt}"));
                    for (q, b) in bq.iter().enumerate() {
                        let k = r * nv + q;
                        l.f.inst(format!(
                            "{} = call {v} @llvm.x86.avx512bf16.dpbf16ps.512({v} {}, {bt} {xb}, {bt} {b})",
                            nexts[k], accs[k]
                        ));
                    }
                }
            }
        });
        for r in 0..mr {
            for q in 0..nv {
                let e = cidx(self, r, q);
                let m = if q == nv - 1 { mask.as_deref() } else { None };
                self.store_arena("float", 16, out, &e, &nexts[r * nv + q], m);
            }
        }
    }

    /// A loop of `steps` iterations (an i64 operand, at least 1) carrying values of type `ty` in
    /// registers from `init`: `body(p, accs, nexts)` emits step `p` (an i64 operand), defining
    /// each `nexts[k]` from `accs[k]`. Returns the carried values after the loop (`nexts`). The
    /// loop of every register-blocked micro-kernel (this file's and `kloop_stream.rs`'s).
    pub(super) fn carried_loop(&mut self, ty: &str, init: &[String], steps: &str, body: &mut dyn FnMut(&mut Self, &str, &[String], &[String])) -> Vec<String> {
        let pre = self.f.cur.clone();
        let (head, exit) = (self.f.label(), self.f.label());
        let (p, pn) = (self.f.fresh(), self.f.fresh());
        let accs: Vec<String> = init.iter().map(|_| self.f.fresh()).collect();
        let nexts: Vec<String> = init.iter().map(|_| self.f.fresh()).collect();
        self.f.br(&head);
        self.f.block(&head);
        self.f.inst(format!("{p} = phi i64 [ 0, %{pre} ], [ {pn}, %{head} ]"));
        for (x, (a, nx)) in init.iter().zip(accs.iter().zip(&nexts)) {
            self.f.inst(format!("{a} = phi {ty} [ {x}, %{pre} ], [ {nx}, %{head} ]"));
        }
        body(self, &p, &accs, &nexts);
        self.f.inst(format!("{pn} = add nuw nsw i64 {p}, 1"));
        let c = self.f.val(format!("icmp ult i64 {pn}, {steps}"));
        self.f.condbr(&c, &head, &exit);
        self.f.block(&exit);
        nexts
    }

    /// Column `j` (an i64 operand) of a panel in column groups of `gw` (see
    /// [`Operands::Bf16`]): the word offset of `(0, j)` and the row length of its group.
    pub(super) fn group_col(&mut self, j: &str, gw: usize, n: usize, kp: usize) -> (String, String) {
        let full = n / gw;
        let g = self.f.val(format!("udiv i64 {j}, {gw}"));
        let inside = self.f.val(format!("urem i64 {j}, {gw}"));
        let is_full = self.f.val(format!("icmp ult i64 {g}, {full}"));
        let w = self.f.val(format!("select i1 {is_full}, i64 {gw}, i64 {}", n - full * gw));
        let base = self.f.val(format!("mul i64 {g}, {}", gw * kp));
        (self.f.val(format!("add i64 {base}, {inside}")), w)
    }

    /// Pack bf16 values (held as f32) into k-pairs of 16-bit halves: for `a` (`rows_are_a`),
    /// `dst[i, p] = a[i, 2p] | a[i, 2p+1] << 16` over `[rows, ⌈K/2⌉]`; for `b`,
    /// `dst[p, j] = b[2p, j] | b[2p+1, j] << 16` over `[⌈K/2⌉, rows]`. Odd K pads with 0.
    fn pack_pairs(&mut self, off: u32, st: &[i64], rows: usize, kk: usize, dst: u32, rows_are_a: bool) -> Result<()> {
        if self.pack_pairs_vec(off, st, rows, kk, dst, rows_are_a)? {
            return Ok(());
        }
        let kp = kk.div_ceil(2);
        let shape = if rows_are_a { [rows, kp] } else { [kp, rows] };
        let drm = row_major(&shape);
        let st = st.to_vec();
        self.nest(&shape, &mut |l, idx| {
            let (r, p) = if rows_are_a { (&idx[0], &idx[1]) } else { (&idx[1], &idx[0]) };
            let k0 = l.f.val(format!("mul i64 {p}, 2"));
            let elem = |l: &mut Self, k: &str| -> String {
                let (i, j) = if rows_are_a { (r.to_string(), k.to_string()) } else { (k.to_string(), r.to_string()) };
                let e = l.linear(&[i, j], &st);
                let x = l.load_arena("i32", 0, off, &e);
                l.f.val(format!("lshr i32 {x}, 16"))
            };
            let lo = elem(l, &k0);
            let hi = if kk % 2 == 1 {
                // the last pair of an odd K has no high half
                let k1 = l.f.val(format!("add i64 {k0}, 1"));
                let inr = l.f.val(format!("icmp ult i64 {k1}, {kk}"));
                let kc = l.f.val(format!("select i1 {inr}, i64 {k1}, i64 {k0}"));
                let h = elem(l, &kc);
                l.f.val(format!("select i1 {inr}, i32 {h}, i32 0"))
            } else {
                let k1 = l.f.val(format!("add i64 {k0}, 1"));
                elem(l, &k1)
            };
            let hs = l.f.val(format!("shl i32 {hi}, 16"));
            let w = l.f.val(format!("or i32 {lo}, {hs}"));
            let e = l.linear(idx, &drm);
            l.store_arena("i32", 0, dst, &e, &w, None);
            Ok(())
        })
    }

    /// Integer `dot`: wrapping i32 products and sums, k ascending.
    fn int_dot(&mut self, a: opc_ir::ValueId, b: opc_ir::ValueId, out: u32, m: usize, kk: usize, n: usize) -> Result<()> {
        let (aoff, ast) = self.buf(a);
        let (boff, bst) = self.buf(b);
        let rm = row_major(&[m, n]);
        self.nest(&[m, n], &mut |l, idx| {
            let (i, j) = (idx[0].clone(), idx[1].clone());
            let ce = l.linear(idx, &rm);
            let slot = l.f.alloca("i32");
            let c0 = l.load_arena("i32", 0, out, &ce);
            l.f.inst(format!("store i32 {c0}, ptr {slot}, align 4"));
            l.loop_n(kk, &mut |l, p| {
                let ea = l.linear(&[i.clone(), p.to_string()], &ast);
                let av = l.load_arena("i32", 0, aoff, &ea);
                let eb = l.linear(&[p.to_string(), j.clone()], &bst);
                let bv = l.load_arena("i32", 0, boff, &eb);
                let prod = l.f.val(format!("mul i32 {av}, {bv}"));
                let cur = l.f.val(format!("load i32, ptr {slot}, align 4"));
                let nx = l.f.val(format!("add i32 {cur}, {prod}"));
                l.f.inst(format!("store i32 {nx}, ptr {slot}, align 4"));
                Ok(())
            })?;
            let r = l.f.val(format!("load i32, ptr {slot}, align 4"));
            l.store_arena("i32", 0, out, &ce, &r, None);
            Ok(())
        })
    }
}
