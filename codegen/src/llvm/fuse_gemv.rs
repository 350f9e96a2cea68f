//! Register-blocked GEMV sums: the fused `sum(a * b)` along the last dim of a `[.., BM, BN, BK]`
//! product where one factor is broadcast along the `BM` dim (weights, `w[None, cols, ks]`) and
//! the other along the `BN` dim (activation rows, `x[rows, None, ks]`), with few rows
//! (`BM` ≤ [`MAX_ROWS`]): the decode GEMV of a batch of sequences.
//!
//! The outputs run in tiles of `BM` rows × `NR` columns ([`tile_cols`]): one vector accumulator
//! per output, kept in registers over the whole row (`BK`), each chunk's weight vectors loaded
//! (and widened) once for the `BM` rows and each activation chunk once for the `NR` columns,
//! then the lane sums of all the tile's outputs together (a transposing shuffle tree,
//! [`Lower::transpose_sums`], ~3 instructions per output instead of ~9), each row's sums stored
//! as one vector. The general shared-row sums
//! (`fuse_block.rs`) instead walk one column at a time, so every weight chunk costs `BM`
//! activation loads and widenings, and the column's partial sums go through memory per block.
//!
//! **bf16 × bf16** (both factors widened from bf16 loads, host with `avx512bf16`): 32-lane chunks,
//! one `vdpbf16ps` per output and chunk on the raw bf16 bits (the widening folds away): 32
//! products in 16 pair sums, with the `dot` lowering's numerics (products exact, f32 sums,
//! bf16 denormal inputs flushed). Otherwise 16-lane chunks and one f32 FMA per output.
//! Loads are versioned as in every fused sum (`Lower::rows_versioned`): unmasked when the corner
//! chunks of every output are in bounds. Sums are reassociated (lanes, pairs), as the fused
//! row sums already are.

use opc_ir::{BinaryOp, DType, Op, OpKind, ValueId};

use super::fuse::Ix;
use super::fuse_block::Factor;
use super::lower::{row_major, Lower, Repr};
use super::text::{cst, flit, vt};
use crate::Result;

/// The most activation rows of one tile (the batch of a batched decode).
const MAX_ROWS: usize = 8;
/// Accumulators of one tile: with the tile's weight vectors and an activation vector or two,
/// within the 32 vector registers.
const MAX_ACCS: usize = 24;
/// The most columns of one tile (memory streams of the weights).
const MAX_COLS: usize = 8;

/// Tiles of at most this many columns prefetch their weights ([`Lower::prefetch_weights`]).
const PF_MAX_COLS: usize = 4;

/// How many tiles ahead [`Lower::prefetch_weights`] fetches (`OPC_LLVM_PF_TILES` overrides).
fn pf_tiles() -> usize {
    super::knob("OPC_LLVM_PF_TILES").unwrap_or(2)
}

/// The columns per tile for `rows` rows: the most that divide `bn` within the accumulators'
/// budget (no narrower remainder tile, which would load the rows' chunks for fewer columns).
fn tile_cols(rows: usize, bn: usize) -> usize {
    let most = (MAX_ACCS / rows).clamp(1, MAX_COLS).min(bn);
    (1..=most)
        .rev()
        .find(|c| bn.is_multiple_of(*c))
        .unwrap_or(1)
}

impl Lower<'_> {
    /// Lower the fused `sum` `op` as register-blocked GEMV tiles (module docs) when it has that
    /// shape. Returns whether it was lowered so.
    pub(super) fn gemv_reduce(&mut self, op: &Op) -> Result<bool> {
        let x = op.args[0];
        let Some((w, a, dp)) = self.gemv_terms(x) else {
            return Ok(false);
        };
        let shape = self.shape(x);
        let r = shape.len();
        let (bm, bn, n) = (shape[r - 3], shape[r - 2], shape[r - 1]);
        let lanes: u32 = if dp { 32 } else { 16 };
        if !n.is_multiple_of(lanes as usize) {
            return Ok(false);
        }
        let oshape = shape[..r - 1].to_vec();
        let orm = row_major(&oshape);
        let out = self.alloc(oshape.iter().product());
        let nr = tile_cols(bm, bn);
        self.nest(&shape[..r - 3], &mut |l, prefix| {
            l.loop_n(bn / nr, &mut |l, t| {
                let c0 = l.f.val(format!("mul i64 {t}, {nr}"));
                let cols: Vec<String> = (0..nr)
                    .map(|j| l.f.val(format!("add i64 {c0}, {j}")))
                    .collect();
                l.gemv_tile(x, (&w, &a), dp, prefix, bm, &cols, n, (out, &orm))
            })?;
            let rest: Vec<String> = (bn / nr * nr..bn).map(|c| c.to_string()).collect();
            if !rest.is_empty() {
                l.gemv_tile(x, (&w, &a), dp, prefix, bm, &rest, n, (out, &orm))?;
            }
            Ok(())
        })?;
        self.set(
            op.result(),
            Repr::Buf {
                off: out,
                strides: orm,
            },
        );
        Ok(true)
    }

    /// The factors (weights, activations) of the fused f32 product `x` when it is a GEMV tile
    /// (module docs), and whether both are bf16 loads the host can `vdpbf16ps`.
    fn gemv_terms(&self, x: ValueId) -> Option<(Factor, Factor, bool)> {
        let shape = self.shape(x);
        let r = shape.len();
        if self.dtype(x) != DType::F32 || r < 3 || shape[r - 3] > MAX_ROWS {
            return None;
        }
        self.fused
            .get(&x)
            .filter(|o| o.kind == OpKind::Binary(BinaryOp::Mul))?;
        let mut factors = vec![];
        self.mul_factors(x, vec![], &mut factors);
        let [f, g] = <[Factor; 2]>::try_from(factors).ok()?;
        if self.block_const(f.v) || self.block_const(g.v) {
            return None;
        }
        let along = |f: &Factor, d: usize| f.views.first().is_some_and(|o| self.bcast_along(o, d));
        let (w, a) = if along(&f, r - 3) && along(&g, r - 2) {
            (f, g)
        } else if along(&g, r - 3) && along(&f, r - 2) {
            (g, f)
        } else {
            return None;
        };
        let dp = self.isa.bf16 && self.bf16_widened(w.v) && self.bf16_widened(a.v);
        Some((w, a, dp))
    }

    /// Whether the fused value `v` is a bf16 load widened to f32 (through views).
    fn bf16_widened(&self, v: ValueId) -> bool {
        match self
            .fused
            .get(&v)
            .map(|o| (o.kind.clone(), o.args.first().copied()))
        {
            Some((OpKind::Cast(_), Some(s))) => self.dtype(v) == DType::F32 && self.bf16_load(s),
            _ => false,
        }
    }

    /// Whether the fused value `v` is a bf16 load, possibly through views.
    fn bf16_load(&self, v: ValueId) -> bool {
        match self
            .fused
            .get(&v)
            .map(|o| (o.kind.clone(), o.args.first().copied()))
        {
            Some((OpKind::ExpandDims(_) | OpKind::Broadcast, Some(s))) => self.bf16_load(s),
            Some((OpKind::Load { .. }, _)) => self.dtype(v) == DType::BF16,
            _ => false,
        }
    }

    /// One tile: rows `0..bm` × `cols` (i64 values) of the GEMV sum over `x` (rows of `n`),
    /// each output's sum stored at its place in the arena buffer `out` (row-major `orm`).
    #[allow(clippy::too_many_arguments)]
    fn gemv_tile(
        &mut self,
        x: ValueId,
        (w, a): (&Factor, &Factor),
        dp: bool,
        prefix: &[String],
        bm: usize,
        cols: &[String],
        n: usize,
        (out, orm): (u32, &[i64]),
    ) -> Result<()> {
        let t = vt("float", 16);
        let zero = cst("float", 16, &flit(-0.0));
        let at = |q: usize, c: &str| -> Vec<String> {
            prefix
                .iter()
                .cloned()
                .chain([q.to_string(), c.to_string()])
                .collect()
        };
        let outs: Vec<Vec<String>> = (0..bm)
            .flat_map(|q| cols.iter().map(move |c| at(q, c)))
            .collect();
        let ixs: Vec<Vec<Ix>> = outs
            .iter()
            .map(|o| o.iter().cloned().map(Ix::S).collect())
            .collect();
        let slots: Vec<String> = outs.iter().map(|_| self.f.alloca(&t)).collect();
        for s in &slots {
            self.f.inst(format!("store {t} {zero}, ptr {s}, align 64"));
        }
        let lanes: u32 = if dp { 32 } else { 16 };
        let full = |l: &mut Self| -> Result<()> {
            l.loop_n(n / lanes as usize, &mut |l, c| {
                let j0 = l.f.val(format!("mul i64 {c}, {lanes}"));
                l.pe_memo = Some(Default::default());
                // Wide tiles stream enough weight rows at once for the hardware prefetchers
                // (prefetching them too cost batch-1 decode ~15%); narrow ones (many rows) do not.
                if l.unchecked() && (2..=PF_MAX_COLS).contains(&cols.len()) {
                    l.prefetch_weights(w, prefix, cols, &j0)?;
                }
                for (ix, slot) in ixs.iter().zip(&slots) {
                    let mut ix = ix.clone();
                    ix.push(Ix::L(j0.clone()));
                    let wv = l.factor_at(w, &ix, lanes, true)?;
                    let av = l.factor_at(a, &ix, lanes, true)?;
                    let cur = l.f.val(format!("load {t}, ptr {slot}, align 64"));
                    let nx = if dp {
                        let (wb, ab) = (l.bf16_bits(&wv), l.bf16_bits(&av));
                        l.f.val(format!("call {t} @llvm.x86.avx512bf16.dpbf16ps.512({t} {cur}, <32 x bfloat> {ab}, <32 x bfloat> {wb})"))
                    } else {
                        l.f.val(format!("call {t} @llvm.fma.v16f32({t} {wv}, {t} {av}, {t} {cur})"))
                    };
                    l.f.inst(format!("store {t} {nx}, ptr {slot}, align 64"));
                }
                l.pe_memo = None;
                Ok(())
            })
        };
        self.rows_versioned(x, &ixs, n, lanes, &full)?;
        // Whole rows per transposed reduction (at most 16 accumulators: one result vector).
        let nr = cols.len();
        for q0 in (0..bm).step_by((16 / nr).max(1)) {
            let qs = q0..bm.min(q0 + (16 / nr).max(1));
            let accs: Vec<String> = slots[qs.start * nr..qs.end * nr]
                .iter()
                .map(|s| self.f.val(format!("load {t}, ptr {s}, align 64")))
                .collect();
            let (sums, w) = self.transpose_sums(&accs);
            for q in qs.clone() {
                let e = self.linear(&outs[q * nr], orm);
                let i = (q - qs.start) * nr;
                if nr == 1 {
                    let y = self.f.val(format!("extractelement {} {sums}, i64 {i}", vt("float", w)));
                    self.store_arena("float", 0, out, &e, &y, None);
                } else {
                    let picks: Vec<String> = (i..i + nr).map(|l| format!("i32 {l}")).collect();
                    let y = self.f.val(format!(
                        "shufflevector {0} {sums}, {0} poison, <{nr} x i32> <{1}>",
                        vt("float", w),
                        picks.join(", ")
                    ));
                    self.store_arena("float", nr as u32, out, &e, &y, None);
                }
            }
        }
        Ok(())
    }

    /// Prefetch of the weights the tile [`pf_tiles`] tiles on will read at this chunk (K
    /// offset `j0`). The rows of one tile are only `BK` elements long before the next tile
    /// jumps a whole weight row on, which the hardware prefetchers do not follow; a tile of many
    /// rows does too little work per byte to hide the DRAM latency of its own rows. The address
    /// comes from this tile's first two columns (both read by this chunk anyway, so no index is
    /// evaluated anywhere new): the first's plus the row step between them, times the columns
    /// ahead. Past the tensor's end the address is unused memory, which a prefetch never faults on.
    fn prefetch_weights(&mut self, w: &Factor, prefix: &[String], cols: &[String], j0: &str) -> Result<()> {
        let Some((t, args)) = self.cast_of_load(w.v, DType::BF16) else { return Ok(()) };
        let at = |l: &mut Self, c: &str| -> Result<Option<String>> {
            let ix: Vec<Ix> = prefix.iter().cloned().chain(["0".to_string(), c.to_string()]).map(Ix::S).chain([Ix::L(j0.to_string())]).collect();
            let ix = l.factor_ix(w, &ix);
            l.lane0_ptr(t, &args, &ix, 32)
        };
        let (Some(p0), Some(p1)) = (at(self, &cols[0])?, at(self, &cols[1])?) else { return Ok(()) };
        let (i0, i1) = (self.f.val(format!("ptrtoint ptr {p0} to i64")), self.f.val(format!("ptrtoint ptr {p1} to i64")));
        let step = self.f.val(format!("sub i64 {i1}, {i0}"));
        let ahead = pf_tiles() * cols.len();
        for j in 0..cols.len() {
            let off = self.f.val(format!("mul i64 {step}, {}", ahead + j));
            self.prefetch_stream_at(&p0, off);
        }
        Ok(())
    }

    /// The bf16 bits of `<32 x float>` values that are exactly bf16 (widened loads): the high
    /// halves, which LLVM folds back into the raw 16-bit load.
    fn bf16_bits(&mut self, v: &str) -> String {
        let i = self
            .f
            .val(format!("bitcast <32 x float> {v} to <32 x i32>"));
        let h = self
            .f
            .val(format!("lshr <32 x i32> {i}, {}", cst("i32", 32, "16")));
        let h = self.f.val(format!("trunc <32 x i32> {h} to <32 x i16>"));
        self.f
            .val(format!("bitcast <32 x i16> {h} to <32 x bfloat>"))
    }

    /// The lane sums of the `<16 x float>` values `accs` (1 to 16) reduced together: lane `i`
    /// of the result (a vector of the returned width, at least `accs.len()`) holds the sum of the
    /// lanes of `accs[i]`. A transposing tree: each level adds pairs of vectors, the halves of
    /// every lane segment of the one against the other's, so `v` vectors of `s`-lane segments
    /// become `v / 2` vectors of `s / 2`-lane segments in 3 instructions per pair (45 for 16
    /// values instead of 9 apiece); once one vector is left its segments halve in place. The
    /// inputs go in bit-reversed order (padded with zeros to a power of two), which the levels'
    /// interleaving undoes, so the sums come out in order.
    fn transpose_sums(&mut self, accs: &[String]) -> (String, u32) {
        let p = accs.len().next_power_of_two();
        let bits = p.trailing_zeros();
        let rev = |i: usize| if bits == 0 { 0 } else { i.reverse_bits() >> (usize::BITS - bits) };
        let zero = "zeroinitializer".to_string();
        let mut vs: Vec<String> = (0..p).map(|i| accs.get(rev(i)).unwrap_or(&zero).clone()).collect();
        let (mut w, mut seg) = (16u32, 16u32);
        let t = vt("float", 16);
        // Blocks of `h` lanes: `pick(parity)` takes block `2j + parity` of every segment `j` of
        // both `a` (source lanes 0..w) and `b` (w..2w), interleaved segment by segment.
        let pick = |w: u32, h: u32, parity: u32, two: bool| -> String {
            let mut lanes = vec![];
            for j in 0..w / (2 * h) {
                let srcs: &[u32] = if two { &[0, 1] } else { &[0] };
                for &src in srcs {
                    let b0 = src * w + (2 * j + parity) * h;
                    lanes.extend((b0..b0 + h).map(|l| format!("i32 {l}")));
                }
            }
            lanes.join(", ")
        };
        while vs.len() > 1 {
            let h = seg / 2;
            let (x, y) = (pick(w, h, 0, true), pick(w, h, 1, true));
            vs = vs
                .chunks(2)
                .map(|ab| {
                    let (a, b) = (&ab[0], &ab[1]);
                    let lo = self.f.val(format!("shufflevector {t} {a}, {t} {b}, <16 x i32> <{x}>"));
                    let hi = self.f.val(format!("shufflevector {t} {a}, {t} {b}, <16 x i32> <{y}>"));
                    self.f.val(format!("fadd {t} {lo}, {hi}"))
                })
                .collect();
            seg = h;
        }
        let mut v = vs.remove(0);
        while seg > 1 {
            let h = seg / 2;
            let tw = vt("float", w);
            let (x, y) = (pick(w, h, 0, false), pick(w, h, 1, false));
            let lo = self.f.val(format!("shufflevector {tw} {v}, {tw} poison, <{} x i32> <{x}>", w / 2));
            let hi = self.f.val(format!("shufflevector {tw} {v}, {tw} poison, <{} x i32> <{y}>", w / 2));
            v = self.f.val(format!("fadd {} {lo}, {hi}", vt("float", w / 2)));
            (w, seg) = (w / 2, h);
        }
        (v, w)
    }
}
