//! Streamed weights: a fused bf16 K loop (`kloop.rs`) whose transposed weight tiles lie in
//! place in their tensor reads them there instead of packing them.
//!
//! The packed form broadcasts k-pairs of `a` and reads the weights as 16-column vectors, so
//! each chunk first copies a `[BN][KC]` slab of weights (rows a tensor row apart) and
//! transposes it. When the weights are streamed once from DRAM and each weight meets few rows
//! (a grouped expert GEMM: about 64 rows per expert) that copy stalls on every line it misses,
//! about a fifth of `moe_up`'s time. Here the operands swap roles: the accumulators hold `cᵀ`
//! (`[BN][BM]`, lanes along the rows of `a`), each step broadcasts one k-pair of a weight row
//! straight from the tensor and multiplies it with 16-row vectors of a transposed `a` panel
//! (`[KC/2][BM]` words, packed once per chunk from the landed rows of `a`). A micro-kernel walks
//! `NR` weight rows through the whole chunk: `NR` sequential streams that the hardware
//! prefetchers follow, plus one software prefetch per step into the next `NR` rows.
//!
//! **When.** Statically: bf16 operands with `vdpbf16ps`, no AMX, `BK` a multiple of 32, `BM` a
//! multiple of 16 up to 128 (one sweep covers the tile's rows: taller tiles, dense prefill
//! GEMMs, reuse each packed weight over enough rows to pay for packing it) and every `dot`'s
//! `b` a plain transposed load (no mask, no mapped tree). At
//! run time, before the loop: each iteration's weight tile is affine, inside its tensor, with
//! unit stride along k, and continues the previous iteration's along k (element `(r, k)` of
//! iteration `i` at `off₀ + r·rs + i·BK + k`): exactly the elements the loads would read, none
//! masked. Otherwise the packed form runs.
//!
//! **Dead rows.** Rows of `a` past its last nonzero one (`live.rs`) are skipped in whole 16-row
//! vectors. A zero row adds nothing unless a weight is infinite or NaN, so the sweep always
//! includes the first zero row (row `live`, one more vector when `live` is a multiple of 16):
//! its lane of `cᵀ` then turns NaN exactly when a weight of the chunk is not finite (or was NaN
//! already), and in that case the skipped vectors run too and hold the NaNs the interpreter
//! computes. Checking that lane of `BN` rows replaces a scan of the chunk's weights.
//!
//! **Numerics**: bitwise those of the packed form: each `vdpbf16ps` lane forms the same pair of
//! products into the same accumulator, k ascending; `cᵀ` is an exact transposed copy of `c`.

use opc_ir::{DType, Op};

use super::kloop::{KLoop, Role};
use super::lower::Lower;
use super::memory::{Access, AffineTile, Dest};
use crate::Result;

/// K values per chunk unless `OPC_LLVM_STREAM_KC` says otherwise: 2 KB of each weight row per
/// sweep; the transposed `a` panel (`BM × KC` bf16, 256 KB at `BM` 128) stays in L2.
const KC: usize = 1024;

/// Most 16-row vectors of `a` one micro-kernel holds: the `a` rows of a 128-row tile in one
/// sweep, so each weight row is streamed once per chunk.
const MAX_VECS: usize = 8;

/// Weight rows per micro-kernel for `v` vectors (16 rows each) of `a`: `v·rows` zmm
/// accumulators plus `v` vectors of `a` and the broadcast fit the 32 registers, with few
/// enough row pointers (at most 8) to stay in general registers.
fn rows_for(v: usize) -> usize {
    match v {
        1..=3 => 8,
        4 => 6,
        5 | 6 => 4,
        7 => 3,
        _ => 2,
    }
}

/// A loop that may take the streamed form: its weight tiles at iteration 0 and the run-time
/// condition (i1) under which it does.
pub(super) struct Stream {
    tiles: Vec<AffineTile>,
    pub ok: String,
}

impl Lower<'_> {
    /// Whether the matched loop `m` of `op` may take the streamed form, and the run-time check
    /// that decides it (emitted here: every iteration's index ops and tile bounds). `None` when
    /// it cannot.
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
            let iv = l.f.val(format!("mul i64 {it}, {st64}"));
            let iv = l.f.val(format!("add i64 {iv}, {lo64}"));
            let iv32 = l.f.val(format!("trunc i64 {iv} to i32"));
            l.def_uniform(body.args[0], iv32);
            for &i in &m.index_ops {
                l.lower_op(&rest[i])?;
            }
            let mut tiles = vec![];
            for d in &m.dots {
                let o = &rest[m.loads[d.b].op];
                let Some(t) = l.affine_tile(o).filter(|t| t.steps.len() == 2 && l.shape(o.result()) == [d.mn.1, m.bk]) else { return Ok(None) };
                tiles.push(t);
            }
            Ok(Some(tiles))
        };
        let Some(tiles) = tiles_at(self, "0")? else { return Ok(None) };
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
            let now = tiles_at(l, &it)?.expect("the same index ops give affine tiles at every iteration");
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
        let ok = self.f.val(format!("load i1, ptr {slot}, align 1"));
        Ok(Some(Stream { tiles, ok }))
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
        // cᵀ of each accumulator.
        let cts: Vec<u32> = m
            .dots
            .iter()
            .zip(cs)
            .map(|(d, &c)| {
                let (bm, bn) = d.mn;
                let t = self.alloc(bm * bn);
                self.pin(t);
                self.transpose_any(c, bn, bm, bn, t)?;
                Ok(t)
            })
            .collect::<Result<_>>()?;
        // Each `a` load lands as [BM][KC] raw bf16 and is transposed into [KC/2][BM] words.
        let panels: Vec<Option<(u32, u32)>> = m
            .loads
            .iter()
            .map(|pl| {
                (pl.role == Role::A).then(|| {
                    let (land, xt) = (self.alloc(pl.rows * kp), self.alloc(kp * pl.rows));
                    self.pin(land);
                    self.pin(xt);
                    (land, xt)
                })
            })
            .collect();
        let row_strides: Vec<String> = m.loads.iter().map(|pl| self.tile_row_stride(&rest[pl.op]).unwrap_or_else(|| "0".to_string())).collect();
        let t = self.f.val(format!("add i64 {trips}, {}", s - 1));
        let chunks = self.f.val(format!("udiv i64 {t}, {s}"));
        self.loop_dyn(&chunks, &mut |l, ch| {
            let first = l.f.val(format!("mul i64 {ch}, {s}"));
            let left = l.f.val(format!("sub i64 {trips}, {first}"));
            let ns = l.f.val(format!("call i64 @llvm.umin.i64(i64 {left}, i64 {s})"));
            // The chunk's `a` loads (the weights are read in place).
            l.loop_dyn(&ns, &mut |l, si| {
                let it = l.f.val(format!("add i64 {first}, {si}"));
                let iv = l.f.val(format!("mul i64 {it}, {st64}"));
                let iv = l.f.val(format!("add i64 {iv}, {lo64}"));
                let iv32 = l.f.val(format!("trunc i64 {iv} to i32"));
                l.def_uniform(body.args[0], iv32);
                for &i in &m.index_ops {
                    l.lower_op(&rest[i])?;
                }
                let k0 = l.f.val(format!("mul i64 {si}, {bk}"));
                for ((pl, p), rs) in m.loads.iter().zip(&panels).zip(&row_strides) {
                    let Some((land, _)) = *p else { continue };
                    let o = &rest[pl.op];
                    // prefetch as the packed form does: the next chunk's tile, rows further down
                    let rows_ahead = l.f.val(format!("mul i64 {rs}, {}", super::kloop::pf_rows() * 2));
                    let prefetch = vec![(cap * 2).to_string(), rows_ahead];
                    let d = Dest { off: land, base: k0.clone(), strides: vec![cap as i64, 1], prefetch, raw_bf16: true };
                    let Some((tensor, kind)) = Access::of(&o.kind) else { unreachable!("matched a load") };
                    l.lower_access_into(o, tensor, kind, Some(d))?;
                }
                Ok(())
            })?;
            let pairs = l.f.val(format!("mul i64 {ns}, {}", bk / 2));
            // Transpose the live 16-row vectors of each `a` panel.
            let mut vecs = vec![String::new(); m.loads.len()];
            let mut lives = vec![String::new(); m.loads.len()];
            for (i, (pl, p)) in m.loads.iter().zip(&panels).enumerate() {
                let Some((land, xt)) = *p else { continue };
                // The vectors up to and including the one holding row `live`, the first zero row
                // (see the module docs: its lane tells whether skipped rows must run).
                let live = l.live_rows(land, pl.rows, kp, DType::BF16);
                let t = l.f.val(format!("lshr i64 {live}, 4"));
                let t = l.f.val(format!("add i64 {t}, 1"));
                vecs[i] = l.f.val(format!("call i64 @llvm.umin.i64(i64 {t}, i64 {})", pl.rows / 16));
                lives[i] = live;
                l.transpose_vectors(land, kp, xt, pl.rows, "0", &vecs[i], &pairs)?;
            }
            for ((d, &ct), t) in m.dots.iter().zip(&cts).zip(&st.tiles) {
                let (bm, bn) = d.mn;
                let Some((land, xt)) = panels[d.a] else { unreachable!("an a panel") };
                let nv = vecs[d.a].clone();
                // This chunk's first weight (row 0, k = first·BK) and the row stride, in bytes.
                let e = l.f.val(format!("mul i64 {first}, {bk}"));
                let e = l.f.val(format!("add i64 {}, {e}", t.off));
                let e = l.f.val(format!("mul i64 {e}, {}", t.esize));
                let w = l.f.val(format!("getelementptr i8, ptr {}, i64 {e}", t.base));
                let rsb = l.f.val(format!("mul i64 {}, {}", t.steps[0], t.esize));
                let sw = Sweep { xt, bm, ct, bn, w: &w, rsb: &rsb, pairs: &pairs };
                l.stream_sweep(&sw, "0", &nv)?;
                // Skipped vectors run when a weight of the chunk is not finite: then row
                // `live`'s lane of cᵀ (a zero row's) turned NaN.
                let (scan, done) = (l.f.label(), l.f.label());
                let short = l.f.val(format!("icmp ult i64 {nv}, {}", bm / 16));
                l.f.condbr(&short, &scan, &done);
                l.f.block(&scan);
                let bad = l.any_nan_lane(ct, bm, bn, &lives[d.a])?;
                let run = l.f.label();
                l.f.condbr(&bad, &run, &done);
                l.f.block(&run);
                let all = (bm / 16).to_string();
                l.transpose_vectors(land, kp, xt, bm, &nv, &all, &pairs)?;
                l.stream_sweep(&sw, &nv, &all)?;
                l.f.br(&done);
                l.f.block(&done);
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

    /// `dst[c][r] = src[r·ss + c]` over `rows × cols` f32 elements (`dst` row-major with `rows`
    /// columns): 16×16 register blocks when both extents allow, else element-wise.
    fn transpose_any(&mut self, src: u32, ss: usize, rows: usize, cols: usize, dst: u32) -> Result<()> {
        if rows.is_multiple_of(16) && cols.is_multiple_of(16) {
            return self.transpose_blocks("float", src, ss as i64, rows, cols, dst, rows as i64);
        }
        let acc = super::lower::Acc::Arena { off: src, strides: vec![1, ss as i64] };
        self.ew(&[cols, rows], &[acc], &["float"], "float", dst, &|_, x, _| Ok(x[0].clone()))
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
                let vs: Vec<String> = (0..16)
                    .map(|r| {
                        let e = l.f.val(format!("add i64 {r0}, {r}"));
                        let e = l.f.val(format!("mul i64 {e}, {ss}"));
                        let e = l.f.val(format!("add i64 {e}, {c0}"));
                        l.load_arena("i32", 16, src, &e)
                    })
                    .collect();
                for (c, v) in l.transpose16("i32", &vs).iter().enumerate() {
                    let e = l.f.val(format!("add i64 {c0}, {c}"));
                    let e = l.f.val(format!("mul i64 {e}, {rows}"));
                    let e = l.f.val(format!("add i64 {e}, {r0}"));
                    l.store_arena("i32", 16, dst, &e, v, None);
                }
                Ok(())
            })
        })
    }

    /// Every weight row block of one sweep over the `a` vectors `v0 .. v1` (i64 operands), in
    /// groups of up to [`MAX_VECS`] vectors, each group by the micro-kernel for its size.
    fn stream_sweep(&mut self, sw: &Sweep<'_>, v0: &str, v1: &str) -> Result<()> {
        let n = self.f.val(format!("sub i64 {v1}, {v0}"));
        let t = self.f.val(format!("add i64 {n}, {}", MAX_VECS - 1));
        let groups = self.f.val(format!("udiv i64 {t}, {MAX_VECS}"));
        self.loop_dyn(&groups, &mut |l, g| {
            let g0 = l.f.val(format!("mul i64 {g}, {MAX_VECS}"));
            let first = l.f.val(format!("add i64 {v0}, {g0}"));
            let left = l.f.val(format!("sub i64 {v1}, {first}"));
            let done = l.f.label();
            for v in (1..=MAX_VECS).rev() {
                let (yes, no) = (l.f.label(), l.f.label());
                let is = l.f.val(format!("icmp {} i64 {left}, {v}", if v == MAX_VECS { "uge" } else { "eq" }));
                l.f.condbr(&is, &yes, &no);
                l.f.block(&yes);
                let nr = rows_for(v);
                let full = sw.bn / nr;
                l.loop_n(full, &mut |l, b| {
                    let n0 = l.f.val(format!("mul i64 {b}, {nr}"));
                    l.stream_micro(sw, v, nr, &n0, &first);
                    Ok(())
                })?;
                if sw.bn % nr > 0 {
                    l.stream_micro(sw, v, sw.bn % nr, &(full * nr).to_string(), &first);
                }
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
            l.f.val(format!("add i64 {row}, {col}"))
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
                init.push(self.load_arena("float", 16, sw.ct, &e));
            }
        }
        let pf = super::knob::<usize>("OPC_LLVM_STREAM_PF").unwrap_or(1) > 0;
        // The next block's rows: a prefetch per step cycles through them along the chunk.
        let ahead = self.f.val(format!("mul i64 {rsb}, {nr}"));
        let pre = self.f.cur.clone();
        let (body, exit) = (self.f.label(), self.f.label());
        let (p, pn) = (self.f.fresh(), self.f.fresh());
        let accs: Vec<String> = (0..nr * v).map(|_| self.f.fresh()).collect();
        let nexts: Vec<String> = (0..nr * v).map(|_| self.f.fresh()).collect();
        self.f.br(&body);
        self.f.block(&body);
        self.f.inst(format!("{p} = phi i64 [ 0, %{pre} ], [ {pn}, %{body} ]"));
        for (x, (a, nx)) in init.iter().zip(accs.iter().zip(&nexts)) {
            self.f.inst(format!("{a} = phi {ft} [ {x}, %{pre} ], [ {nx}, %{body} ]"));
        }
        let xrow = self.f.val(format!("mul i64 {p}, {bm}"));
        let xrow = self.f.val(format!("add i64 {xrow}, {x0}"));
        let xs: Vec<String> = (0..v)
            .map(|q| {
                let e = self.f.val(format!("add i64 {xrow}, {}", 16 * q));
                let x = self.load_arena("i32", 16, sw.xt, &e);
                self.f.val(format!("bitcast <16 x i32> {x} to {bt}"))
            })
            .collect();
        let kb = self.f.val(format!("shl i64 {p}, 2"));
        if pf {
            let j = self.f.val(format!("and i64 {p}, 15"));
            let j = self.f.val(format!("call i64 @llvm.umin.i64(i64 {j}, i64 {})", nr - 1));
            let o = self.f.val(format!("mul i64 {j}, {rsb}"));
            let o = self.f.val(format!("add i64 {o}, {ahead}"));
            let o = self.f.val(format!("add i64 {o}, {kb}"));
            self.prefetch_at(&rows[0], o);
        }
        for (r, row) in rows.iter().enumerate() {
            let ptr = self.f.val(format!("getelementptr i8, ptr {row}, i64 {kb}"));
            let w = self.f.val(format!("load i32, ptr {ptr}, align 2"));
            let ws = self.f.splat("i32", 16, &w);
            let wb = self.f.val(format!("bitcast <16 x i32> {ws} to {bt}"));
            for (q, x) in xs.iter().enumerate() {
                let k = r * v + q;
                self.f.inst(format!("{} = call {ft} @llvm.x86.avx512bf16.dpbf16ps.512({ft} {}, {bt} {wb}, {bt} {x})", nexts[k], accs[k]));
            }
        }
        self.f.inst(format!("{pn} = add nuw nsw i64 {p}, 1"));
        let c = self.f.val(format!("icmp ult i64 {pn}, {}", sw.pairs));
        self.f.condbr(&c, &body, &exit);
        self.f.block(&exit);
        for r in 0..nr {
            for q in 0..v {
                let e = cidx(self, r, q);
                self.store_arena("float", 16, sw.ct, &e, &nexts[r * v + q], None);
            }
        }
    }

    /// Whether lane `lane` (an i64 operand) of any of the `rows` rows of the `[rows][bm]` f32
    /// buffer `ct` is NaN: an i1 operand.
    fn any_nan_lane(&mut self, ct: u32, bm: usize, rows: usize, lane: &str) -> Result<String> {
        let slot = self.f.alloca("i1");
        self.f.inst(format!("store i1 false, ptr {slot}, align 1"));
        self.loop_n(rows, &mut |l, r| {
            let e = l.f.val(format!("mul i64 {r}, {bm}"));
            let e = l.f.val(format!("add i64 {e}, {lane}"));
            let x = l.load_arena("float", 0, ct, &e);
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
    /// The transposed `a` panel, `[pairs][bm]` words.
    xt: u32,
    bm: usize,
    /// `cᵀ`, `[bn][bm]`.
    ct: u32,
    bn: usize,
    /// The chunk's first weight (row 0) and the row stride in bytes.
    w: &'a str,
    rsb: &'a str,
    /// k-pairs of the chunk (an i64 operand, a positive multiple of 16).
    pairs: &'a str,
}

