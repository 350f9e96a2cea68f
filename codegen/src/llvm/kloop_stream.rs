//! Streamed weights: the form of a fused bf16 K loop (`kloop.rs`) with a transposed weight
//! operand and row tiles of up to 128 rows, which reads the weights where they lie.
//!
//! The packed form broadcasts k-pairs of `a` and reads the weights as 16-column vectors, so
//! each chunk first copies a `[BN][KC]` slab of weights (rows a tensor row apart) and
//! transposes it. When the weights are streamed once from DRAM and each weight meets few rows
//! (a grouped expert GEMM: about 64 rows per expert) that copy stalls on every line it misses,
//! about a fifth of `moe_up`'s time. Here the operands swap roles: the accumulators hold `cᵀ`
//! (`[BN][BM]`, lanes along the rows of `a`), each step broadcasts one k-pair of a weight row
//! straight from the tensor and multiplies it with 16-row vectors of a transposed `a` panel
//! (`[KC/2][BM]` words, transposed once per chunk from the landed rows of `a`). A micro-kernel
//! walks `NR` weight rows through the whole chunk: `NR` sequential streams that the hardware
//! prefetchers follow, plus one software prefetch per step into the next `NR` rows.
//!
//! **When.** bf16 operands with `vdpbf16ps`, no AMX, `BK` a multiple of 32, `BM` a multiple of
//! 16 up to 128 (one sweep covers the tile's rows; taller tiles, dense prefill GEMMs, reuse each
//! packed weight over enough rows to pay for packing it) and every `dot`'s `b` a plain
//! transposed load (no mask, no mapped tree). The weights are read in place when, checked at
//! run time before the loop, each iteration's tile is affine, inside its tensor, with unit
//! stride along k, and continues the previous iteration's along k (element `(r, k)` of
//! iteration `i` at `off₀ + r·rs + i·BK + k`): exactly the elements the loads would read, none
//! masked. Otherwise (a ragged edge tile, gathered weight rows) the chunk's weight loads land
//! as `[BN][KC]` rows in the arena, zeros where masked, and the same micro-kernels read them
//! there.
//!
//! **Knobs** (tuning and A/B timing): `OPC_LLVM_NO_STREAM` keeps the packed form,
//! `OPC_LLVM_STREAM_KC` sets the chunk depth, `OPC_LLVM_STREAM_PF=0` drops the prefetch.
//!
//! **Compile time.** Each micro-kernel size and the 16×16 register transpose are side
//! functions (`Lower::side_fn`), emitted once per kernel and called from every sweep: LLVM's
//! time on one function grows faster than its size.
//!
//! **Dead rows.** Rows of `a` past its last nonzero one (`live.rs`) are skipped in whole 16-row
//! vectors. A zero row adds nothing unless a weight is infinite or NaN, so the sweep always
//! includes the first zero row (row `live`, one more vector when `live` is a multiple of 16):
//! its lane of `cᵀ` then turns NaN exactly when a weight of the chunk is not finite (or was NaN
//! already), and in that case the skipped vectors run too and hold the NaNs the interpreter
//! computes. Checking that lane of `BN` rows replaces a scan of the chunk's weights.
//!
//! **Numerics**: bitwise those of the packed form: each `vdpbf16ps` lane forms the same pair of
//! products into the same accumulator, k ascending; `cᵀ` is an exact transposed copy of `c`
//! (but for the sign of a zero sum in a skipped all-zero row, as in `live.rs`).

use opc_ir::{DType, Op};

use super::kloop::{KLoop, Role};
use super::lower::{Acc, Lower, Repr};
use super::memory::{Access, AffineTile, Dest};
use crate::Result;

/// K values per chunk unless `OPC_LLVM_STREAM_KC` says otherwise: 2 KB of each weight row per
/// sweep; the transposed `a` panel (`BM × KC` bf16, 256 KB at `BM` 128) stays in L2.
const KC: usize = 1024;

/// Most 16-row vectors of `a` one micro-kernel holds: the `a` rows of a 128-row tile in one
/// sweep, so each weight row is streamed once per chunk.
const MAX_VECS: usize = 8;

/// The micro-kernel sizes, in 16-row vectors of `a`: 3 and 7 vectors run as 4 and 8 (one
/// more vector of zero rows) where the tile has them, which keeps the side functions LLVM
/// compiles for a kernel to six.
const SIZES: [usize; 6] = [1, 2, 4, 5, 6, 8];

/// Weight rows per micro-kernel for `v` vectors (16 rows each) of `a`: `v·rows` zmm
/// accumulators plus `v` vectors of `a` and the broadcast fit the 32 registers, with few
/// enough row pointers (at most 8) to stay in general registers.
fn rows_for(v: usize) -> usize {
    match v {
        1 | 2 => 8,
        4 => 6,
        5 | 6 => 4,
        _ => 2,
    }
}

/// A loop that takes the streamed form: its weight tiles at iteration 0 when they are affine,
/// and the run-time condition (i1) under which they are read in place.
pub(super) struct Stream {
    tiles: Option<Vec<AffineTile>>,
    in_place: String,
}

impl Lower<'_> {
    /// Whether the matched loop `m` of `op` takes the streamed form, and the run-time check
    /// whether its weights are read in place (emitted here: every iteration's index ops and
    /// tile bounds). `None` when it cannot.
    pub(super) fn stream_check(&mut self, op: &Op, m: &KLoop, lo64: &str, st64: &str, trips: &str) -> Result<Option<Stream>> {
        let eligible = !self.isa.amx
            && std::env::var_os("OPC_LLVM_NO_STREAM").is_none()
            && m.bk.is_multiple_of(32)
            && m.dtype == DType::BF16
            && m.dots.iter().all(|d| {
                let (a, b) = (&m.loads[d.a], &m.loads[d.b]);
                a.role == Role::A && b.role == Role::BTrans && b.map.is_none() && d.mn.0.is_multiple_of(16) && d.mn.0 <= 16 * MAX_VECS
            });
        if !eligible {
            return Ok(None);
        }
        let body = &op.regions[0];
        let rest = &body.ops[..body.ops.len() - 1];
        // The weight tiles of iteration `it` (an i64 operand), if all are affine [BN, BK] tiles.
        let tiles_at = |l: &mut Self, it: &str| -> Result<Option<Vec<AffineTile>>> {
            l.kloop_index_ops(op, m, it, [lo64, st64])?;
            let mut tiles = vec![];
            for d in &m.dots {
                let o = &rest[m.loads[d.b].op];
                let Some(t) = l.affine_tile(o).filter(|t| t.steps.len() == 2 && l.shape(o.result()) == [d.mn.1, m.bk]) else { return Ok(None) };
                tiles.push(t);
            }
            Ok(Some(tiles))
        };
        let Some(tiles) = tiles_at(self, "0")? else { return Ok(Some(Stream { tiles: None, in_place: "false".into() })) };
        // Unit stride along k, inside the tensor.
        let mut ok = "true".to_string();
        for t in &tiles {
            let unit = self.f.val(format!("icmp eq i64 {}, 1", t.steps[1]));
            ok = self.f.val(format!("and i1 {ok}, {unit}"));
            ok = self.f.val(format!("and i1 {ok}, {}", t.inside));
        }
        let slot = self.f.alloca("i1");
        self.f.inst(format!("store i1 {ok}, ptr {slot}, align 1"));
        let more = self.f.val(format!("sub i64 {trips}, 1"));
        let bk = m.bk;
        self.loop_dyn(&more, &mut |l, i| {
            let it = l.f.val(format!("add i64 {i}, 1"));
            let Some(now) = tiles_at(l, &it)? else {
                l.f.inst(format!("store i1 false, ptr {slot}, align 1"));
                return Ok(());
            };
            let mut ok = l.f.val(format!("load i1, ptr {slot}, align 1"));
            for (t0, t) in tiles.iter().zip(&now) {
                // continues along k: off(it) = off(0) + it·BK
                let d = l.f.val(format!("mul i64 {it}, {bk}"));
                let want = l.f.val(format!("add i64 {}, {d}", t0.off));
                let same = l.f.val(format!("icmp eq i64 {}, {want}", t.off));
                ok = l.f.val(format!("and i1 {ok}, {same}"));
                ok = l.f.val(format!("and i1 {ok}, {}", t.inside));
            }
            l.f.inst(format!("store i1 {ok}, ptr {slot}, align 1"));
            Ok(())
        })?;
        let in_place = self.f.val(format!("load i1, ptr {slot}, align 1"));
        Ok(Some(Stream { tiles: Some(tiles), in_place }))
    }

    /// The streamed form of the matched loop `m` of `op` (see the module docs), accumulating
    /// into the `[BM][BN]` buffers `cs`; `trips` iterations from `lo64` by `st64`.
    pub(super) fn lower_stream(&mut self, op: &Op, m: &KLoop, cs: &[u32], st: &Stream, [lo64, st64, trips]: [&str; 3]) -> Result<()> {
        let body = &op.regions[0];
        let rest = &body.ops[..body.ops.len() - 1];
        let bk = m.bk;
        let s = super::knob("OPC_LLVM_STREAM_KC").filter(|&k: &usize| k > 0).unwrap_or(KC).div_ceil(bk).max(1);
        let cap = s * bk; // K values per chunk, a multiple of 32
        let kp = cap / 2; // k-pairs per chunk
        let saved = self.enter_region();
        // cᵀ of each accumulator: its initial value (`zeros` of a GEMM) filled in, else `c`
        // transposed.
        let cts: Vec<u32> = m
            .dots
            .iter()
            .zip(cs)
            .enumerate()
            .map(|(j, (d, &c))| {
                let (bm, bn) = d.mn;
                let t = self.alloc(bm * bn);
                self.pin(t);
                match self.repr(op.args[3 + j]) {
                    Repr::Uniform(x) => self.ew(&[bn, bm], &[Acc::Val(x)], &["float"], "float", t, &|_, x, _| Ok(x[0].clone()))?,
                    _ => self.transpose_any(c, bn, bm, bn, t)?,
                }
                Ok(t)
            })
            .collect::<Result<_>>()?;
        // Each load lands as [rows][KC] raw bf16; an `a` panel is then transposed into
        // [KC/2][BM] words. The weights land only when they are not read in place.
        let panels: Vec<(u32, Option<u32>)> = m
            .loads
            .iter()
            .map(|pl| {
                let land = self.alloc(pl.rows * kp);
                self.pin(land);
                let xt = (pl.role == Role::A).then(|| self.alloc(kp * pl.rows));
                xt.into_iter().for_each(|x| self.pin(x));
                (land, xt)
            })
            .collect();
        let row_strides: Vec<String> = m.loads.iter().map(|pl| self.tile_row_stride(&rest[pl.op]).unwrap_or_else(|| "0".to_string())).collect();
        self.chunk_loop(trips, s, &mut |l, first, ns| {
            // The chunk's loads: `a`, and the weights unless they are read in place.
            l.loop_dyn(&ns, &mut |l, si| {
                let it = l.f.val(format!("add i64 {first}, {si}"));
                l.kloop_index_ops(op, m, &it, [lo64, st64])?;
                let k0 = l.f.val(format!("mul i64 {si}, {bk}"));
                for ((pl, &(land, xt)), rs) in m.loads.iter().zip(&panels).zip(&row_strides) {
                    let o = &rest[pl.op];
                    let skip = (xt.is_none() && st.in_place != "false").then(|| (l.f.label(), l.f.label()));
                    if let Some((copy, done)) = &skip {
                        l.f.condbr(&st.in_place, done, copy);
                        l.f.block(copy);
                    }
                    // prefetch as the packed form does: the next chunk's tile, rows further down
                    let rows_ahead = l.f.val(format!("mul i64 {rs}, {}", super::kloop::pf_rows() * 2));
                    let prefetch = vec![(cap * 2).to_string(), rows_ahead];
                    let d = Dest { off: land, base: k0.clone(), strides: vec![cap as i64, 1], prefetch, raw_bf16: true };
                    let Some((tensor, kind)) = Access::of(&o.kind) else { unreachable!("matched a load") };
                    l.lower_access_into(o, tensor, kind, Some(d))?;
                    if let Some((_, done)) = &skip {
                        l.f.br(done);
                        l.f.block(done);
                    }
                }
                Ok(())
            })?;
            let pairs = l.f.val(format!("mul i64 {ns}, {}", bk / 2));
            // Transpose the live 16-row vectors of each `a` panel.
            let mut vecs = vec![String::new(); m.loads.len()];
            let mut lives = vec![String::new(); m.loads.len()];
            for (i, (pl, &(land, xt))) in m.loads.iter().zip(&panels).enumerate() {
                let Some(xt) = xt else { continue };
                // The vectors up to and including the one holding row `live`, the first zero row
                // (see the module docs: its lane tells whether skipped rows must run).
                let live = l.live_rows(land, pl.rows, kp, DType::BF16);
                let t = l.f.val(format!("lshr i64 {live}, 4"));
                let t = l.f.val(format!("add i64 {t}, 1"));
                // 3 and 7 vectors round up to a micro-kernel size ([`SIZES`]) where the tile
                // has the rows.
                let odd = (l.f.val(format!("icmp eq i64 {t}, 3")), l.f.val(format!("icmp eq i64 {t}, 7")));
                let odd = l.f.val(format!("or i1 {}, {}", odd.0, odd.1));
                let up = l.f.val(format!("zext i1 {odd} to i64"));
                let t = l.f.val(format!("add i64 {t}, {up}"));
                vecs[i] = l.f.val(format!("call i64 @llvm.umin.i64(i64 {t}, i64 {})", pl.rows / 16));
                lives[i] = live;
                l.transpose_vectors(land, kp, xt, pl.rows, "0", &vecs[i], &pairs)?;
            }
            // Dots sharing an `a` panel and a shape run one emitted sweep in a loop over them
            // (`moe_up`'s gate and up projections): half the code to compile.
            let mut groups: Vec<Vec<usize>> = vec![];
            for (j, d) in m.dots.iter().enumerate() {
                match groups.iter_mut().find(|g| m.dots[g[0]].a == d.a && m.dots[g[0]].mn == d.mn) {
                    Some(g) => g.push(j),
                    None => groups.push(vec![j]),
                }
            }
            for g in &groups {
                let d = &m.dots[g[0]];
                let (bm, bn) = d.mn;
                let (land, Some(xt)) = panels[d.a] else { unreachable!("an a panel") };
                let (nv, live) = (vecs[d.a].clone(), lives[d.a].clone());
                // Each dot's first weight of the chunk (row 0, k = first·BK), its row stride in
                // bytes and its cᵀ.
                let mut parts: Vec<[String; 3]> = vec![];
                for &j in g {
                    // the landed copy: rows of KC values
                    let mut w = l.arena_ptr(panels[m.dots[j].b].0, "0");
                    let mut rsb = (2 * cap).to_string();
                    if let Some(t) = st.tiles.as_ref().map(|ts| &ts[j]) {
                        let e = l.f.val(format!("mul i64 {first}, {bk}"));
                        let e = l.f.val(format!("add i64 {}, {e}", t.off));
                        let e = l.f.val(format!("mul i64 {e}, {}", t.esize));
                        let wt = l.f.val(format!("getelementptr i8, ptr {}, i64 {e}", t.base));
                        let rt = l.f.val(format!("mul i64 {}, {}", t.steps[0], t.esize));
                        w = l.f.val(format!("select i1 {}, ptr {wt}, ptr {w}", st.in_place));
                        rsb = l.f.val(format!("select i1 {}, i64 {rt}, i64 {rsb}", st.in_place));
                    }
                    parts.push([w, rsb, cts[j].to_string()]);
                }
                let (s0, s1) = (l.f.alloca("i64"), l.f.alloca("i64"));
                l.loop_n(g.len(), &mut |l, gi| {
                    let pick = |l: &mut Self, f: usize, ty: &str| -> String {
                        let mut v = parts[0][f].clone();
                        for (i, p) in parts.iter().enumerate().skip(1) {
                            let is = l.f.val(format!("icmp eq i64 {gi}, {i}"));
                            v = l.f.val(format!("select i1 {is}, {ty} {}, {ty} {v}", p[f]));
                        }
                        v
                    };
                    let (w, rsb, ct) = (pick(l, 0, "ptr"), pick(l, 1, "i64"), pick(l, 2, "i64"));
                    let xs = xt.to_string();
                    let sw = Sweep { xt: &xs, bm, ct: &ct, bn, w: &w, rsb: &rsb, pairs: &pairs };
                    // Pass 0 sweeps the live vectors; pass 1 the skipped ones, only when a
                    // weight of the chunk is not finite: then row `live`'s lane of cᵀ (a zero
                    // row's) turned NaN.
                    l.f.inst(format!("store i64 0, ptr {s0}, align 8"));
                    l.f.inst(format!("store i64 {nv}, ptr {s1}, align 8"));
                    l.loop_n(2, &mut |l, pass| {
                        let v0 = l.f.val(format!("load i64, ptr {s0}, align 8"));
                        let v1 = l.f.val(format!("load i64, ptr {s1}, align 8"));
                        l.stream_sweep(&sw, &v0, &v1)?;
                        l.f.inst(format!("store i64 {v1}, ptr {s0}, align 8"));
                        let (scan, run, done) = (l.f.label(), l.f.label(), l.f.label());
                        let first_pass = l.f.val(format!("icmp eq i64 {pass}, 0"));
                        let short = l.f.val(format!("icmp ult i64 {nv}, {}", bm / 16));
                        let check = l.f.val(format!("and i1 {first_pass}, {short}"));
                        l.f.condbr(&check, &scan, &done);
                        l.f.block(&scan);
                        let bad = l.any_nan_lane(&ct, bm, bn, &live)?;
                        l.f.condbr(&bad, &run, &done);
                        l.f.block(&run);
                        let all = (bm / 16).to_string();
                        l.transpose_vectors(land, kp, xt, bm, &nv, &all, &pairs)?;
                        l.f.inst(format!("store i64 {all}, ptr {s1}, align 8"));
                        l.f.br(&done);
                        l.f.block(&done);
                        Ok(())
                    })
                })?;
            }
            Ok(())
        })?;
        for ((d, &c), &ct) in m.dots.iter().zip(cs).zip(&cts) {
            let (bm, bn) = d.mn;
            self.transpose_any(ct, bm, bn, bm, c)?;
        }
        self.region = saved;
        Ok(())
    }

    /// `kloop.rs`'s `transpose_panel` of f32 elements, its 16×16 blocks as calls of the one
    /// side function of [`Self::transpose_block`] (compiled once per kernel).
    fn transpose_any(&mut self, src: u32, ss: usize, rows: usize, cols: usize, dst: u32) -> Result<()> {
        if !(rows.is_multiple_of(16) && cols.is_multiple_of(16)) {
            return self.transpose_panel("float", src, ss, rows, cols, dst);
        }
        self.nest(&[rows / 16, cols / 16], &mut |l, ix| {
            let (r0, c0) = (l.f.val(format!("mul i64 {}, 16", ix[0])), l.f.val(format!("mul i64 {}, 16", ix[1])));
            l.transpose_block(src, ss, dst, rows, &r0, &c0)
        })
    }

    /// Rows `16·v0 .. 16·v1` (i64 operands) of the `[rows][ss]`-word panel `src`, its first
    /// `pairs` words (a multiple of 16), into `dst` as `[pairs][rows]` words.
    #[allow(clippy::too_many_arguments)]
    fn transpose_vectors(&mut self, src: u32, ss: usize, dst: u32, rows: usize, v0: &str, v1: &str, pairs: &str) -> Result<()> {
        let nvec = self.f.val(format!("sub i64 {v1}, {v0}"));
        let cblocks = self.f.val(format!("lshr i64 {pairs}, 4"));
        self.loop_dyn(&nvec, &mut |l, i| {
            let rb = l.f.val(format!("add i64 {v0}, {i}"));
            let r0 = l.f.val(format!("mul i64 {rb}, 16"));
            l.loop_dyn(&cblocks, &mut |l, cb| {
                let c0 = l.f.val(format!("mul i64 {cb}, 16"));
                l.transpose_block(src, ss, dst, rows, &r0, &c0)
            })
        })
    }

    /// The 16×16 block of 32-bit words at row `r0`, column `c0` (i64 operands) of `src`
    /// (`[..][ss]`) into `dst` (`[..][ds]`) transposed: `dst[(c0 + c)·ds + r0 + r] =
    /// src[(r0 + r)·ss + c0 + c]`, as a call of one side function.
    fn transpose_block(&mut self, src: u32, ss: usize, dst: u32, ds: usize, r0: &str, c0: &str) -> Result<()> {
        let e = self.f.val(format!("mul i64 {r0}, {ss}"));
        let soff = self.f.val(format!("add i64 {e}, {c0}"));
        let d = self.f.val(format!("mul i64 {c0}, {ds}"));
        let doff = self.f.val(format!("add i64 {d}, {r0}"));
        self.side_fn("transpose16", "i64 %src, i64 %ss, i64 %dst, i64 %ds", &mut |l| {
            let vs: Vec<String> = (0..16)
                .map(|r| {
                    let e = l.f.val(format!("mul i64 %ss, {r}"));
                    let e = l.f.val(format!("add i64 %src, {e}"));
                    l.load_arena("i32", 16, 0, &e)
                })
                .collect();
            for (c, v) in l.transpose16("i32", &vs).iter().enumerate() {
                let e = l.f.val(format!("mul i64 %ds, {c}"));
                let e = l.f.val(format!("add i64 %dst, {e}"));
                l.store_arena("i32", 16, 0, &e, v, None);
            }
            Ok(())
        })?;
        let s0 = self.f.val(format!("add i64 {soff}, {src}"));
        let d0 = self.f.val(format!("add i64 {doff}, {dst}"));
        self.f.inst(format!("call void @transpose16(ptr %arena, i64 {s0}, i64 {ss}, i64 {d0}, i64 {ds})"));
        Ok(())
    }

    /// Every weight row block of one sweep over the `a` vectors `v0 .. v1` (i64 operands): the
    /// largest micro-kernel size of [`SIZES`] that fits what is left, repeatedly.
    fn stream_sweep(&mut self, sw: &Sweep<'_>, v0: &str, v1: &str) -> Result<()> {
        let n = self.f.val(format!("sub i64 {v1}, {v0}"));
        let cur = self.f.alloca("i64");
        self.f.inst(format!("store i64 {v0}, ptr {cur}, align 8"));
        // at most `n` groups; the ones after the last find nothing left
        self.loop_dyn(&n, &mut |l, _| {
            let first = l.f.val(format!("load i64, ptr {cur}, align 8"));
            let left = l.f.val(format!("sub i64 {v1}, {first}"));
            let done = l.f.label();
            for &v in SIZES.iter().rev() {
                let (yes, no) = (l.f.label(), l.f.label());
                let is = l.f.val(format!("icmp uge i64 {left}, {v}"));
                l.f.condbr(&is, &yes, &no);
                l.f.block(&yes);
                // Every row block for `v` vectors: one side function per (v, BM, BN).
                let (bm, bn) = (sw.bm, sw.bn);
                let name = format!("stream_v{v}_m{bm}_n{bn}");
                let params = "ptr %w, i64 %rsb, i64 %xt, i64 %ct, i64 %pairs, i64 %v0";
                l.side_fn(&name, params, &mut |l| {
                    let sw = Sweep { xt: "%xt", bm, ct: "%ct", bn, w: "%w", rsb: "%rsb", pairs: "%pairs" };
                    let nr = rows_for(v);
                    let full = bn / nr;
                    l.loop_n(full, &mut |l, b| {
                        let n0 = l.f.val(format!("mul i64 {b}, {nr}"));
                        l.stream_micro(&sw, v, nr, &n0, "%v0");
                        Ok(())
                    })?;
                    if bn % nr > 0 {
                        l.stream_micro(&sw, v, bn % nr, &(full * nr).to_string(), "%v0");
                    }
                    Ok(())
                })?;
                l.f.inst(format!(
                    "call void @{name}(ptr %arena, ptr {}, i64 {}, i64 {}, i64 {}, i64 {}, i64 {first})",
                    sw.w, sw.rsb, sw.xt, sw.ct, sw.pairs
                ));
                let next = l.f.val(format!("add i64 {first}, {v}"));
                l.f.inst(format!("store i64 {next}, ptr {cur}, align 8"));
                l.f.br(&done);
                l.f.block(&no);
            }
            l.f.br(&done);
            l.f.block(&done);
            Ok(())
        })
    }

    /// One block of `cᵀ`: weight rows `n0 .. n0 + nr` × the `a` vectors `v0 .. v0 + v` (16 rows
    /// each), in `nr·v` zmm accumulators across the chunk's k-pairs.
    fn stream_micro(&mut self, sw: &Sweep<'_>, v: usize, nr: usize, n0: &str, v0: &str) {
        let (ft, bt) = ("<16 x float>", "<32 x bfloat>");
        let bm = sw.bm;
        let rsb = sw.rsb;
        // cᵀ element of (row n0 + r, vector v0 + q)
        let cidx = |l: &mut Self, r: usize, q: usize| -> String {
            let n = l.f.val(format!("add i64 {n0}, {r}"));
            let row = l.f.val(format!("mul i64 {n}, {bm}"));
            let vq = l.f.val(format!("add i64 {v0}, {q}"));
            let col = l.f.val(format!("mul i64 {vq}, 16"));
            let e = l.f.val(format!("add i64 {row}, {col}"));
            l.f.val(format!("add i64 {e}, {}", sw.ct))
        };
        let rows: Vec<String> = (0..nr)
            .map(|r| {
                let n = self.f.val(format!("add i64 {n0}, {r}"));
                let o = self.f.val(format!("mul i64 {n}, {rsb}"));
                self.f.val(format!("getelementptr i8, ptr {}, i64 {o}", sw.w))
            })
            .collect();
        let x0 = self.f.val(format!("mul i64 {v0}, 16"));
        let mut init = vec![];
        for r in 0..nr {
            for q in 0..v {
                let e = cidx(self, r, q);
                init.push(self.load_arena("float", 16, 0, &e));
            }
        }
        let pf = super::knob::<usize>("OPC_LLVM_STREAM_PF").unwrap_or(1) > 0;
        // The next block's rows: a prefetch per step cycles through them along the chunk.
        let ahead = self.f.val(format!("mul i64 {rsb}, {nr}"));
        let nexts = self.carried_loop(ft, &init, sw.pairs, &mut |l, p, accs, nexts| {
            let xrow = l.f.val(format!("mul i64 {p}, {bm}"));
            let xrow = l.f.val(format!("add i64 {xrow}, {x0}"));
            let xs: Vec<String> = (0..v)
                .map(|q| {
                    let e = l.f.val(format!("add i64 {xrow}, {}", 16 * q));
                    let e = l.f.val(format!("add i64 {e}, {}", sw.xt));
                    let x = l.load_arena("i32", 16, 0, &e);
                    l.f.val(format!("bitcast <16 x i32> {x} to {bt}"))
                })
                .collect();
            let kb = l.f.val(format!("shl i64 {p}, 2"));
            if pf {
                let j = l.f.val(format!("and i64 {p}, 15"));
                let j = l.f.val(format!("call i64 @llvm.umin.i64(i64 {j}, i64 {})", nr - 1));
                let o = l.f.val(format!("mul i64 {j}, {rsb}"));
                let o = l.f.val(format!("add i64 {o}, {ahead}"));
                let o = l.f.val(format!("add i64 {o}, {kb}"));
                l.prefetch_at(&rows[0], o);
            }
            for (r, row) in rows.iter().enumerate() {
                let ptr = l.f.val(format!("getelementptr i8, ptr {row}, i64 {kb}"));
                let w = l.f.val(format!("load i32, ptr {ptr}, align 2"));
                let ws = l.f.splat("i32", 16, &w);
                let wb = l.f.val(format!("bitcast <16 x i32> {ws} to {bt}"));
                for (q, x) in xs.iter().enumerate() {
                    let k = r * v + q;
                    l.f.inst(format!("{} = call {ft} @llvm.x86.avx512bf16.dpbf16ps.512({ft} {}, {bt} {wb}, {bt} {x})", nexts[k], accs[k]));
                }
            }
        });
        for r in 0..nr {
            for q in 0..v {
                let e = cidx(self, r, q);
                self.store_arena("float", 16, 0, &e, &nexts[r * v + q], None);
            }
        }
    }

    /// Whether lane `lane` (an i64 operand) of any of the `rows` rows of the `[rows][bm]` f32
    /// buffer at arena element `ct` (an i64 operand) is NaN: an i1 operand.
    fn any_nan_lane(&mut self, ct: &str, bm: usize, rows: usize, lane: &str) -> Result<String> {
        let slot = self.f.alloca("i1");
        self.f.inst(format!("store i1 false, ptr {slot}, align 1"));
        self.loop_n(rows, &mut |l, r| {
            let e = l.f.val(format!("mul i64 {r}, {bm}"));
            let e = l.f.val(format!("add i64 {e}, {lane}"));
            let e = l.f.val(format!("add i64 {e}, {ct}"));
            let x = l.load_arena("float", 0, 0, &e);
            let nan = l.f.val(format!("fcmp uno float {x}, 0.0"));
            let bad = l.f.val(format!("load i1, ptr {slot}, align 1"));
            let bad = l.f.val(format!("or i1 {bad}, {nan}"));
            l.f.inst(format!("store i1 {bad}, ptr {slot}, align 1"));
            Ok(())
        })?;
        Ok(self.f.val(format!("load i1, ptr {slot}, align 1")))
    }
}

/// What one sweep of a chunk reads and writes.
struct Sweep<'a> {
    /// The transposed `a` panel, `[pairs][bm]` words: its arena element offset (an i64
    /// operand).
    xt: &'a str,
    bm: usize,
    /// `cᵀ`, `[bn][bm]`: its arena element offset (an i64 operand).
    ct: &'a str,
    bn: usize,
    /// The chunk's first weight (row 0) and the row stride in bytes.
    w: &'a str,
    rsb: &'a str,
    /// k-pairs of the chunk (an i64 operand, a positive multiple of 16).
    pairs: &'a str,
}

