//! Fused K loops of the `llvm` target (`codegen/src/llvm/kloop.rs`) against the interpreter:
//! K deep enough for several `KC` chunks and a partial last one, ragged M / N / K, `b` direct
//! and transposed, f32 / f16 / bf16, loops with a non-unit step and a nonzero start, loops
//! that must not be fused (a second use of a loaded tile), two accumulators sharing one
//! gathered `a` tile whose rows past the segment read as zeros (skipped rows, `live.rs`), and
//! f32 GEMMs whose operands are widened from bf16 / f16 loads (`model.opc`'s `linear_w`), and
//! column tiles spanning several (and ragged) column groups of the packed bf16 `b` panel, and
//! bf16 weights read in place (`kloop_stream.rs`).
#![cfg(feature = "llvm22-1")]

#[path = "jit_common.rs"]
mod common;

use common::{check, kernel, Cmp, Rng};
use opc_dsl::Instance;
use opc_ir::{Arg, DType, Tensor};
use proptest::prelude::*;

const BLOCKS: &str = include_str!("../../ops/kernels/blocks.opc");
const MODEL: &str = include_str!("../../ops/kernels/model.opc");

const FLOATS: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

const LOOPS: &str = r#"
// K swept as `k0 in 0..K step BK` (indices k0 + arange(BK)), starting after a first slice
// handled by a plain dot: a loop whose start and step are not 0 and 1.
kernel stepped(a: f32[M, K], b: f32[K, N], c: out f32[M, N])
tunables { BM: level1 in {16} = 16, BN: level1 in {32} = 32, BK: level2 in {8} = 8 }
grid(cdiv(M, BM), cdiv(N, BN))
{
    let rows = program_id(0) * BM + arange(BM);
    let cols = program_id(1) * BN + arange(BN);
    let k_first = arange(BK);
    var acc = dot(load(a[rows, k_first]), load(b[k_first, cols]));
    for k0 in BK..K step BK {
        let ks = k0 + arange(BK);
        acc = dot(load(a[rows, ks]), load(b[ks, cols]), acc);
    }
    store(c[rows, cols], acc);
}

// The loaded `a` tile is used twice: not a fused K loop (the generic path runs it).
kernel reused(a: f32[M, K], b: f32[K, N], c: out f32[M, N], s: out f32[M, N])
tunables { BM: level1 in {16} = 16, BN: level1 in {16} = 16, BK: level2 in {16} = 16 }
grid(cdiv(M, BM), cdiv(N, BN))
{
    let rows = program_id(0) * BM + arange(BM);
    let cols = program_id(1) * BN + arange(BN);
    var acc = zeros([BM, BN], f32);
    var sq = zeros([BM, BN], f32);
    for k0 in 0..cdiv(K, BK) {
        let ks = k0 * BK + arange(BK);
        let x = load(a[rows, ks]);
        acc = dot(x, load(b[ks, cols]), acc);
        sq = dot(x * x, load(b[ks, cols]), sq);
    }
    store(c[rows, cols], acc);
    store(s[rows, cols], sq);
}

// Both operands widened from their storage dtype, `b` direct: `cast(load, f32)` on either side
// of the `dot` (`linear_w` covers a widened transposed `b`).
kernel widened<W: {f32, f16, bf16}>(a: W[M, K], b: W[K, N], c: out f32[M, N])
tunables { BM: level1 in {16, 32} = 16, BN: level1 in {16, 32} = 32, BK: level2 in {8, 32} = 8 }
grid(cdiv(M, BM), cdiv(N, BN))
{
    let rows = program_id(0) * BM + arange(BM);
    let cols = program_id(1) * BN + arange(BN);
    var acc = zeros([BM, BN], f32);
    for k0 in 0..cdiv(K, BK) {
        let ks = k0 * BK + arange(BK);
        acc = dot(cast(load(a[rows, ks]), f32), cast(load(b[ks, cols]), f32), acc);
    }
    store(c[rows, cols], acc);
}

// Two accumulators over one gathered `a` tile (the shape of `moe_up`): rows `idx[i]`, -1 past
// `cnt` (they load as zeros); every row of both accumulators is stored, so the skipped rows'
// values (zeros, or NaN when `w` has a non-finite value) are checked too.
kernel gathered<T: {f32, f16, bf16}>(x: T[R, K], w1: T[N, K], w3: T[N, K], idx: i32[BM], g: out f32[BM, N], u: out f32[BM, N], cnt: i32)
tunables { BM: level1 in {16, 32, 64, 128} = 32, BN: level1 in {16, 32, 64} = 32, BK: level2 in {8, 32, 64} = 32 }
grid(cdiv(N, BN))
{
    let rows = arange(BM);
    let cols = program_id(0) * BN + arange(BN);
    let r = where(rows < cnt, load(idx[rows]), -1);
    var acc1 = zeros([BM, BN], f32);
    var acc3 = zeros([BM, BN], f32);
    for k0 in 0..cdiv(K, BK) {
        let ks = k0 * BK + arange(BK);
        let a = load(x[r, ks]);
        acc1 = dot(a, trans(load(w1[cols, ks])), acc1);
        acc3 = dot(a, trans(load(w3[cols, ks])), acc3);
    }
    store(g[rows, cols], acc1);
    store(u[rows, cols], acc3);
}

// Column tiles wider than one 64-column group of a packed bf16 `b` panel: whole groups (128)
// and a ragged last group (80: 64 + 16; 200: 3·64 + 8, a masked last vector), `b` direct or
// transposed.
kernel wide<T: {f32, bf16}>(a: T[M, K], b: T[K, N], w: T[N, K], c: out f32[M, N], d: out f32[M, N])
tunables { BM: level1 in {16, 32} = 16, BN: level1 in {80, 128, 200} = 128, BK: level2 in {32, 64} = 32 }
grid(cdiv(M, BM), cdiv(N, BN))
{
    let rows = program_id(0) * BM + arange(BM);
    let cols = program_id(1) * BN + arange(BN);
    var acc = zeros([BM, BN], f32);
    var acct = zeros([BM, BN], f32);
    for k0 in 0..cdiv(K, BK) {
        let ks = k0 * BK + arange(BK);
        let x = load(a[rows, ks]);
        acc = dot(x, load(b[ks, cols]), acc);
        acct = dot(x, trans(load(w[cols, ks])), acct);
    }
    store(c[rows, cols], acc);
    store(d[rows, cols], acct);
}
"#;

fn cfg(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(cfg(12))]
    #[test]
    fn deep_k_matmul_and_linear(m in 1usize..40, n in 1usize..70, kk in 1usize..700, seed in any::<u64>(), t in 0usize..3, tun in 0usize..3, linear in any::<bool>()) {
        let d = FLOATS[t];
        let (bm, bn, bk) = [(16, 16, 8), (32, 64, 32), (64, 32, 64)][tun];
        let inst = Instance::default().dtype("T", d).tunable("BM", bm).tunable("BN", bn).tunable("BK", bk);
        let name = if linear { "linear" } else { "matmul" };
        let k = kernel(BLOCKS, name, &inst);
        let mut r = Rng(seed);
        let wshape = if linear { [n, kk] } else { [kk, n] };
        let args = vec![
            Arg::Tensor(r.tensor_f(d, &[m, kk], false)),
            Arg::Tensor(r.tensor_f(d, &wshape, false)),
            Arg::Tensor(r.tensor_f(DType::F32, &[n], false)),
            Arg::Tensor(Tensor::zeros(d, &[m, n])),
            Arg::Bool(seed % 2 == 0),
        ];
        check(&k, &args, Cmp::Close { ulps: 16.0 });
    }

    #[test]
    fn wide_column_groups(m in 1usize..40, n in 1usize..450, kk in 1usize..700, seed in any::<u64>(), bf16 in any::<bool>(), tun in 0usize..3, bk in 0usize..2) {
        let d = if bf16 { DType::BF16 } else { DType::F32 };
        let inst = Instance::default().dtype("T", d).tunable("BM", [16, 32][bk]).tunable("BN", [80, 128, 200][tun]).tunable("BK", [32, 64][bk]);
        let k = kernel(LOOPS, "wide", &inst);
        let mut r = Rng(seed);
        let args = vec![
            Arg::Tensor(r.tensor_f(d, &[m, kk], false)),
            Arg::Tensor(r.tensor_f(d, &[kk, n], false)),
            Arg::Tensor(r.tensor_f(d, &[n, kk], false)),
            Arg::Tensor(Tensor::zeros(DType::F32, &[m, n])),
            Arg::Tensor(Tensor::zeros(DType::F32, &[m, n])),
        ];
        check(&k, &args, Cmp::Close { ulps: 16.0 });
    }

    #[test]
    fn stepped_and_unfusable_loops(m in 1usize..40, n in 1usize..40, kk in 1usize..300, seed in any::<u64>()) {
        let mut r = Rng(seed);
        let k = kernel(LOOPS, "stepped", &Instance::default());
        let args = vec![
            Arg::Tensor(r.tensor_f(DType::F32, &[m, kk], false)),
            Arg::Tensor(r.tensor_f(DType::F32, &[kk, n], false)),
            Arg::Tensor(Tensor::zeros(DType::F32, &[m, n])),
        ];
        check(&k, &args, Cmp::Close { ulps: 16.0 });
        let k = kernel(LOOPS, "reused", &Instance::default());
        let args = vec![
            Arg::Tensor(r.tensor_f(DType::F32, &[m, kk], false)),
            Arg::Tensor(r.tensor_f(DType::F32, &[kk, n], false)),
            Arg::Tensor(Tensor::zeros(DType::F32, &[m, n])),
            Arg::Tensor(Tensor::zeros(DType::F32, &[m, n])),
        ];
        check(&k, &args, Cmp::Close { ulps: 16.0 });
    }
}

proptest! {
    #![proptest_config(cfg(10))]
    #[test]
    fn shared_gathered_a_with_dead_rows(rr in 1usize..50, n in 1usize..70, kk in 1usize..600, cnt in 0usize..=64, seed in any::<u64>(), t in 0usize..3, tun in 0usize..3, specials in any::<bool>()) {
        let d = FLOATS[t];
        let (bm, bn, bk) = [(16, 16, 8), (32, 64, 32), (64, 32, 64)][tun];
        let inst = Instance::default().dtype("T", d).tunable("BM", bm).tunable("BN", bn).tunable("BK", bk);
        let k = kernel(LOOPS, "gathered", &inst);
        let bm = bm as usize;
        let args = gathered_args(&mut Rng(seed), d, [rr, n, kk, bm], cnt.min(bm), specials);
        check(&k, &args, Cmp::Close { ulps: 16.0 });
    }
}

/// Arguments of `gathered`: `x` of `rr` rows, `w1` (with infinities and NaNs when `specials`)
/// and `w3` of `n` rows, `K = kk`, `BM = bm` row indices of which the first `cnt` are used.
fn gathered_args(r: &mut Rng, d: DType, [rr, n, kk, bm]: [usize; 4], cnt: usize, specials: bool) -> Vec<Arg> {
    vec![
        Arg::Tensor(r.tensor_f(d, &[rr, kk], false)),
        Arg::Tensor(r.tensor_f(d, &[n, kk], specials)),
        Arg::Tensor(r.tensor_f(d, &[n, kk], false)),
        Arg::Tensor(r.tensor_i(DType::I32, &[bm], 0, rr as i32 - 1)),
        Arg::Tensor(Tensor::zeros(DType::F32, &[bm, n])),
        Arg::Tensor(Tensor::zeros(DType::F32, &[bm, n])),
        Arg::I32(cnt as i32),
    ]
}

proptest! {
    #![proptest_config(cfg(12))]
    /// bf16 weight tiles that lie in place (N a multiple of BN, K of BK, BK a multiple of 32)
    /// take the streamed form (`kloop_stream.rs`): several chunks and a partial last one, dead
    /// rows skipped in 16-row vectors (`cnt` 0, a multiple of 16, all rows; 3 and 7 vectors
    /// rounded up to a micro-kernel size, or split where the tile is shorter), infinite / NaN
    /// weights making the skipped vectors run. One more column or k value makes the edge tile
    /// land its weights in the arena (zeros past the edge) for the same micro-kernels.
    #[test]
    fn streamed_weights(nb in 1usize..4, kb in 1usize..50, cnt in 0usize..=128, seed in any::<u64>(), tun in 0usize..4, specials in any::<bool>(), ragged in 0usize..3) {
        let d = DType::BF16;
        let (bm, bn, bk) = [(32, 16, 32), (64, 32, 64), (64, 64, 32), (128, 32, 32)][tun];
        let inst = Instance::default().dtype("T", d).tunable("BM", bm).tunable("BN", bn).tunable("BK", bk);
        let (bm, bn, bk) = (bm as usize, bn as usize, bk as usize);
        let (n, kk) = (nb * bn + (ragged == 1) as usize, kb * bk + (ragged == 2) as usize);
        let cnt = if seed % 3 == 0 { cnt / 16 * 16 } else { cnt }.min(bm);
        let mut r = Rng(seed);
        let args = gathered_args(&mut r, d, [40, n, kk, bm], cnt, specials);
        check(&kernel(LOOPS, "gathered", &inst), &args, Cmp::Close { ulps: 16.0 });
        // Dense rows (`linear`): the last row tile's rows past M are the dead ones.
        let m = 1 + (seed as usize >> 8) % (2 * bm);
        let args = vec![
            Arg::Tensor(r.tensor_f(d, &[m, kk], false)),
            Arg::Tensor(r.tensor_f(d, &[n, kk], specials)),
            Arg::Tensor(r.tensor_f(DType::F32, &[n], false)),
            Arg::Tensor(Tensor::zeros(d, &[m, n])),
            Arg::Bool(seed % 2 == 0),
        ];
        check(&kernel(BLOCKS, "linear", &inst), &args, Cmp::Close { ulps: 16.0 });
    }
}

/// Infinities and NaNs in the operands propagate as in the interpreter (out-of-range k of the
/// last chunk must contribute exact zeros, never 0·inf).
#[test]
fn specials_propagate() {
    for d in FLOATS {
        let inst = Instance::default().dtype("T", d).tunable("BM", 32).tunable("BN", 32).tunable("BK", 32);
        let k = kernel(BLOCKS, "matmul", &inst);
        let mut r = Rng(5);
        let (m, kk, n) = (33, 301, 35);
        let args = vec![
            Arg::Tensor(r.tensor_f(d, &[m, kk], true)),
            Arg::Tensor(r.tensor_f(d, &[kk, n], true)),
            Arg::Tensor(Tensor::zeros(DType::F32, &[n])),
            Arg::Tensor(Tensor::zeros(d, &[m, n])),
            Arg::Bool(false),
        ];
        check(&k, &args, Cmp::Close { ulps: 16.0 });
    }
}

proptest! {
    #![proptest_config(cfg(12))]
    /// f32 activations times bf16 / f16 (or f32) weights widened by a `cast`: `linear_w`'s
    /// transposed `w`, and a direct `b` with a widened `a` too.
    #[test]
    fn widened_operands(m in 1usize..70, n in 1usize..70, kk in 1usize..600, seed in any::<u64>(), t in 0usize..3, tun in 0usize..3, trans in any::<bool>(), specials in any::<bool>()) {
        let d = FLOATS[t];
        let mut r = Rng(seed);
        if trans {
            let (bm, bn, bk) = [(16, 16, 8), (64, 64, 32), (32, 128, 64)][tun];
            let inst = Instance::default().dtype("W", d).tunable("BM", bm).tunable("BN", bn).tunable("BK", bk);
            let k = kernel(MODEL, "linear_w", &inst);
            let args = vec![
                Arg::Tensor(r.tensor_f(DType::F32, &[m, kk], false)),
                Arg::Tensor(r.tensor_f(d, &[n, kk], specials)),
                Arg::Tensor(r.tensor_f(DType::F32, &[n], false)),
                Arg::Tensor(Tensor::zeros(DType::F32, &[m, n])),
                Arg::Bool(seed % 2 == 0),
            ];
            check(&k, &args, Cmp::Close { ulps: 16.0 });
        } else {
            let (bm, bn, bk) = [(16, 16, 8), (32, 32, 32), (16, 32, 8)][tun];
            let inst = Instance::default().dtype("W", d).tunable("BM", bm).tunable("BN", bn).tunable("BK", bk);
            let k = kernel(LOOPS, "widened", &inst);
            let args = vec![
                Arg::Tensor(r.tensor_f(d, &[m, kk], specials)),
                Arg::Tensor(r.tensor_f(d, &[kk, n], false)),
                Arg::Tensor(Tensor::zeros(DType::F32, &[m, n])),
            ];
            check(&k, &args, Cmp::Close { ulps: 16.0 });
        }
    }
}

/// The widened-operand loops take the fused path: their LLVM IR has the panel loads'
/// prefetches, which only fused K loops emit (the unfusable `reused` loop has none).
#[test]
fn widened_loops_are_fused() {
    let prefetches = |k: &opc_ir::Kernel| opc_codegen::llvm::emit_ir(k).unwrap().matches("call void @llvm.prefetch").count();
    for d in FLOATS {
        // `linear_w` as `ops::model::linear_w` compiles it for a 512-row prefill.
        let inst = Instance::default().dtype("W", d).tunable("BM", 64).tunable("BN", 64).tunable("BK", 32);
        assert!(prefetches(&kernel(MODEL, "linear_w", &inst)) > 0, "linear_w<{d:?}> not fused");
        let inst = Instance::default().dtype("W", d);
        assert!(prefetches(&kernel(LOOPS, "widened", &inst)) > 0, "widened<{d:?}> not fused");
    }
    assert_eq!(prefetches(&kernel(LOOPS, "reused", &Instance::default())), 0);
}
