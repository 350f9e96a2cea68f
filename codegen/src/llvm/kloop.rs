//! Fused K loops: a `for` whose body is `acc = dot(load(a[..]), load(b[..]), acc)` (the `b`
//! load possibly transposed: `trans(load(w[cols, ks]))`) plus index arithmetic — the K sweep of
//! every DSL GEMM (`matmul`, `linear`, MoE experts) — is lowered as one cache-blocked GEMM
//! instead of a loop of small tile `dot`s.
//!
//! **Blocking.** The program's `BM × BN` accumulator stays in one arena buffer `c`. The loop's
//! iterations are taken `S` at a time (a K chunk of `KC = S·BK` values, 256 by default:
//! `OPC_LLVM_KC` overrides it for tuning): first every iteration's loads of the chunk run,
//! exactly as the unfused loop would run them (same indices, bounds checks, masks and
//! out-of-range zeros), but they write into two packed panels — `a` as `[BM][KC]` and `b` as
//! `[KC][BN]` (a transposed `w` tile lands as `[BN][KC]` and is transposed once per chunk) —
//! then the register micro-kernels of `dot.rs` sweep the whole chunk with the accumulators in
//! zmm registers, reading the panels sequentially. The accumulator round trip through memory
//! happens once per chunk instead of once per `BK` step, the panels are contiguous (no cache
//! set conflicts from the tensors' row strides), and the loads stream each row over `KC`.
//! Each panel load prefetches the next step's tile (`llvm.prefetch`, a hint that cannot fault),
//! so the strided rows of `a` and `b` arrive before they are packed.
//!
//! **bf16** (both operands bf16, `avx512bf16`, even `BK`): the loads store the raw bf16 bits, so
//! rows along k (`a`, and a transposed `w`) already are the k-pairs `vdpbf16ps` wants
//! (`[BM][KC/2]` i32; `w`'s `[BN][KC/2]` is transposed once per chunk), `b`'s rows are
//! interleaved in pairs (`[KC/2][BN]` i32, one shuffle per 16 columns); then `vdpbf16ps`
//! sweeps the chunk, or AMX tiles on hosts that have them (`amx.rs`).
//!
//! **Numerics**: identical to the unfused lowering — every `c[i, j]` still accumulates k in
//! ascending order with one FMA (or one `vdpbf16ps` pair, pairs aligned to the same even k) per
//! step; the register accumulators are exact f32 copies of the arena ones. Loops whose body is
//! anything else (other carried values, other uses of the loads or of the accumulator, stores)
//! take the generic path of `lower.rs`, as does every loop when `OPC_LLVM_NO_KLOOP` is set (for
//! A/B timing).

use opc_ir::{DType, Op, OpKind, ValueId};

use super::dot::Operands;
use super::lower::{lane_mask, row_major, Acc, Lower, Repr};
use super::memory::{Access, Dest};
use crate::Result;

/// K values per chunk unless `OPC_LLVM_KC` says otherwise.
const KC: usize = 256;

/// A matched fused K loop (see the module docs).
pub(super) struct KLoop {
    /// The body's ops other than the loads, the transpose, the `dot` and the `yield`.
    index_ops: Vec<usize>,
    /// Body op indices of the `a` and `b` loads.
    load_a: usize,
    load_b: usize,
    /// The `b` load is `[BN, BK]`, transposed for the `dot`.
    b_trans: bool,
    /// `(BM, BK, BN)`.
    mkn: (usize, usize, usize),
    /// Operand dtype (f32, f16 or bf16).
    dtype: DType,
}

/// Bytes per element of a float operand dtype in memory.
fn esize(d: DType) -> usize {
    if d == DType::F32 {
        4
    } else {
        2
    }
}

fn kc() -> usize {
    std::env::var("OPC_LLVM_KC").ok().and_then(|s| s.parse().ok()).filter(|&k| k > 0).unwrap_or(KC)
}

impl Lower<'_> {
    /// Whether `op` (a `for`) is a fused K loop, and its parts. Emits nothing.
    pub(super) fn match_kloop(&self, op: &Op) -> Option<KLoop> {
        if std::env::var_os("OPC_LLVM_NO_KLOOP").is_some() {
            return None;
        }
        let body = op.regions.first()?;
        if op.args.len() != 4 || op.results.len() != 1 || body.args.len() != 2 {
            return None;
        }
        let acc = body.args[1];
        let at = self.k.ty(acc);
        if at.dtype != DType::F32 || at.rank() != 2 {
            return None;
        }
        let ops = &body.ops;
        let (y, rest) = ops.split_last()?;
        if y.kind != OpKind::Yield || y.args.len() != 1 {
            return None;
        }
        let def = |v: ValueId| rest.iter().position(|o| o.results.contains(&v));
        let di = def(y.args[0])?;
        let dot = &rest[di];
        if dot.kind != OpKind::Dot || dot.args.len() != 3 || dot.args[2] != acc {
            return None;
        }
        let is_load = |i: usize| matches!(rest[i].kind, OpKind::Load { .. }) && rest[i].args.iter().all(|&a| self.k.ty(a).rank() <= 1);
        let la = def(dot.args[0]).filter(|&i| is_load(i))?;
        let bi = def(dot.args[1])?;
        let (lb, pt) = match &rest[bi].kind {
            OpKind::Permute(p) if p == &[1, 0] => (def(rest[bi].args[0]).filter(|&i| is_load(i))?, Some(bi)),
            OpKind::Load { .. } if is_load(bi) => (bi, None),
            _ => return None,
        };
        let used_once = |v: ValueId| self.uses[v.0 as usize] == 1;
        if la == lb || !used_once(rest[la].result()) || !used_once(rest[lb].result()) || pt.is_some_and(|p| !used_once(rest[p].result())) {
            return None;
        }
        let dtype = self.dtype(dot.args[0]);
        if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) || self.dtype(dot.args[1]) != dtype {
            return None;
        }
        let (sa, sb) = (self.shape(dot.args[0]), self.shape(dot.args[1]));
        let mkn = (sa[0], sa[1], sb[1]);
        if mkn.0 == 0 || mkn.1 == 0 || mkn.2 == 0 || self.shape(y.args[0]) != [mkn.0, mkn.2] {
            return None;
        }
        // Everything else is index arithmetic: no memory, no nested regions, no use of the
        // accumulator or of the loaded tiles.
        let mut index_ops = vec![];
        for (i, o) in rest.iter().enumerate() {
            if i == di || i == la || i == lb || Some(i) == pt {
                continue;
            }
            let pure = o.kind.is_cheap_pure();
            let loaded = [la, lb].iter().map(|&l| rest[l].result()).chain(pt.map(|p| rest[p].result())).collect::<Vec<_>>();
            if !pure || !o.regions.is_empty() || o.args.iter().any(|a| *a == acc || loaded.contains(a)) {
                return None;
            }
            index_ops.push(i);
        }
        Some(KLoop { index_ops, load_a: la, load_b: lb, b_trans: pt.is_some(), mkn, dtype })
    }

    /// Lower a matched K loop (bounds already checked by `for_bounds`).
    pub(super) fn lower_kloop(&mut self, op: &Op, m: &KLoop, [lo, hi, step]: [&str; 3]) -> Result<()> {
        let body = &op.regions[0];
        let rest = &body.ops[..body.ops.len() - 1];
        let (bm, bk, bn) = m.mkn;
        let s = kc().div_ceil(bk).max(1);
        let cap = s * bk; // K values per chunk
        let cap32 = cap.next_multiple_of(32); // panel row length (whole pair-packing vectors)
        let bf16 = self.isa.bf16 && m.dtype == DType::BF16 && bk.is_multiple_of(2);
        // The accumulator.
        let c = self.alloc(bm * bn);
        self.pin(c);
        self.copy_into(op.args[3], c);
        // Panels: f32 `a` [BM][KC] and `b` [KC][BN] (or `w` [BN][KC]); for bf16 the raw bits:
        // `a` and `w` rows are then already k-pairs (`apk`, `wp`), `b` rows are interleaved
        // in pairs into `bpk`, and `wp` is transposed into `bpk`.
        let ap = if bf16 { self.alloc(bm * cap32 / 2) } else { self.alloc(bm * cap32) };
        let bp = self.alloc(cap32 * bn);
        let wp = m.b_trans.then(|| self.alloc(bn * cap32));
        let bpk = if bf16 { self.alloc(cap32 / 2 * bn) } else { 0 };
        for x in [Some(ap), Some(bp), wp, bf16.then_some(bpk)].into_iter().flatten() {
            self.pin(x);
        }
        // Trip count of the original loop: iv = lo, lo + step, ... < hi.
        let lo64 = self.f.val(format!("sext i32 {lo} to i64"));
        let hi64 = self.f.val(format!("sext i32 {hi} to i64"));
        let st64 = self.f.val(format!("sext i32 {step} to i64"));
        let span = self.f.val(format!("sub i64 {hi64}, {lo64}"));
        let span = self.f.val(format!("call i64 @llvm.smax.i64(i64 {span}, i64 0)"));
        let t = self.f.val(format!("add i64 {span}, {st64}"));
        let t = self.f.val(format!("sub i64 {t}, 1"));
        let trips = self.f.val(format!("udiv i64 {t}, {st64}"));
        let t = self.f.val(format!("add i64 {trips}, {}", s - 1));
        let chunks = self.f.val(format!("udiv i64 {t}, {s}"));
        let OpKind::Load { tensor: bt, .. } = rest[m.load_b].kind else { unreachable!("matched a load") };
        let b_rows_stride = self.tensors[bt].as_ref().map_or("0".to_string(), |t| t.strides[0].clone());
        let saved = self.enter_region();
        self.loop_dyn(&chunks, &mut |l, ch| {
            let first = l.f.val(format!("mul i64 {ch}, {s}"));
            let left = l.f.val(format!("sub i64 {trips}, {first}"));
            let ns = l.f.val(format!("call i64 @llvm.umin.i64(i64 {left}, i64 {s})"));
            // Loads of the chunk's iterations, into the panels.
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
                // Prefetch the next step's tile: BK elements further along a contiguous k, or
                // BK rows further down when k indexes the tensor's first dim (`b[ks, cols]`).
                let along_k = |d: DType| Some((bk * esize(d)).to_string());
                let da = Dest { off: ap, base: k0.clone(), strides: vec![cap32 as i64, 1], prefetch: along_k(m.dtype), raw_bf16: bf16 };
                let db = match wp {
                    Some(w) => Dest { off: w, base: k0, strides: vec![cap32 as i64, 1], prefetch: along_k(m.dtype), raw_bf16: bf16 },
                    None => {
                        let e = l.f.val(format!("mul i64 {si}, {}", bk * bn));
                        let pf = l.f.val(format!("mul i64 {}, {}", b_rows_stride, bk * esize(m.dtype)));
                        Dest { off: bp, base: e, strides: vec![bn as i64, 1], prefetch: Some(pf), raw_bf16: bf16 }
                    }
                };
                for (li, d) in [(m.load_a, da), (m.load_b, db)] {
                    let o = &rest[li];
                    let OpKind::Load { tensor, has_mask, has_other } = o.kind else { unreachable!("matched a load") };
                    l.lower_access_into(o, tensor, Access::Load { has_mask, has_other }, Some(d))?;
                }
                Ok(())
            })?;
            match (wp, bf16) {
                // f32: [BN][KC] -> [KC][BN]
                (Some(w), false) => {
                    let src = Acc::Arena { off: w, strides: vec![1, cap32 as i64] };
                    l.ew(&[cap, bn], &[src], &["float"], "float", bp, &|_, x, _| Ok(x[0].clone()))?;
                }
                // bf16: w's rows are k-pairs ([BN][KC/2] i32): transpose to [KC/2][BN]
                (Some(w), true) => {
                    let src = Acc::Arena { off: w, strides: vec![1, cap32 as i64 / 2] };
                    l.ew(&[cap32 / 2, bn], &[src], &["i32"], "i32", bpk, &|_, x, _| Ok(x[0].clone()))?;
                }
                (None, true) => l.interleave_pairs(bp, cap32 / 2, bn, bpk)?,
                (None, false) => {}
            }
            let kk = l.f.val(format!("mul i64 {ns}, {bk}"));
            let ops = if bf16 {
                let apk = ap;
                if l.isa.amx && super::amx::fits(m.mkn) {
                    // kk is a multiple of BK, itself a multiple of 32: whole k tiles.
                    let ktiles = l.f.val(format!("lshr i64 {kk}, 5"));
                    return l.amx_blocks(apk, bpk, cap32 / 2, c, bm, bn, &ktiles);
                }
                let steps = l.f.val(format!("lshr i64 {kk}, 1"));
                return l.dot_blocks(Operands::Bf16 { apk, bpk, kp: cap32 / 2, n: bn }, c, bm, bn, &steps, false);
            } else {
                Operands::F32 { aoff: ap, as0: cap32 as i64, as1: 1, boff: bp, bs0: bn as i64 }
            };
            l.dot_blocks(ops, c, bm, bn, &kk, false)
        })?;
        self.region = saved;
        self.set(op.result(), Repr::Buf { off: c, strides: row_major(&[bm, bn]) });
        Ok(())
    }

    /// Raw bf16 rows `src` (`[2·pairs][n]` i16) → k-pairs `dst[p][j] = src[2p][j] |
    /// src[2p+1][j] << 16` (`[pairs][n]` i32), 16 columns per step: one interleaving shuffle.
    fn interleave_pairs(&mut self, src: u32, pairs: usize, n: usize, dst: u32) -> Result<()> {
        let v = "<16 x i16>";
        let zip: Vec<String> = (0..16).flat_map(|i| [format!("i32 {i}"), format!("i32 {}", i + 16)]).collect();
        let zip = zip.join(", ");
        let chunks = n.div_ceil(16);
        self.nest(&[pairs, chunks], &mut |l, idx| {
            let (p, c) = (&idx[0], &idx[1]);
            let j0 = l.f.val(format!("mul i64 {c}, 16"));
            let r0 = l.f.val(format!("mul i64 {p}, {}", 2 * n));
            let e0 = l.f.val(format!("add i64 {r0}, {j0}"));
            let e1 = l.f.val(format!("add i64 {e0}, {n}"));
            let mut row = |e: &str| {
                let i = l.f.val(format!("add i64 {e}, {}", 2 * src as u64));
                let ptr = l.f.val(format!("getelementptr inbounds i16, ptr %arena, i64 {i}"));
                l.f.val(format!("load {v}, ptr {ptr}, align 2"))
            };
            let (x0, x1) = (row(&e0), row(&e1));
            let z = l.f.val(format!("shufflevector {v} {x0}, {v} {x1}, <32 x i32> <{zip}>"));
            let w = l.f.val(format!("bitcast <32 x i16> {z} to <16 x i32>"));
            let d = l.f.val(format!("mul i64 {p}, {n}"));
            let d = l.f.val(format!("add i64 {d}, {j0}"));
            if n % 16 == 0 {
                l.store_arena("i32", 16, dst, &d, &w, None);
                return Ok(());
            }
            // The last chunk of a row stops at column n.
            let last = l.f.val(format!("icmp eq i64 {c}, {}", chunks - 1));
            let m = l.f.val(format!("select i1 {last}, <16 x i1> {}, <16 x i1> splat (i1 true)", lane_mask(16, n % 16)));
            l.store_arena("i32", 16, dst, &d, &w, Some(&m));
            Ok(())
        })
    }
}
