//! Fused reductions and fused elementwise roots of the `llvm` target (`codegen/src/llvm/fuse.rs`)
//! against the interpreter on ragged shapes: GEMV steps over bf16 and packed e2m1 weights, GEMV
//! tiles of up to 8 rows (`fuse_gemv.rs`; bf16 × bf16 on `vdpbf16ps`) (odd
//! packed starts take the byte-gather path), block-scaled reshaped reductions, masked loads with
//! `other` under max / min, and elementwise trees whose result is stored twice. Sums are
//! reassociated (and `sum(a * b)` contracted to FMA): close; the rest bit for bit.
#![cfg(feature = "llvm22-1")]

#[path = "jit_common.rs"]
mod common;

use common::{check, eps, exact, kernel, Cmp, Rng};
use opc_dsl::Instance;
use opc_ir::{Arg, DType, Tensor};
use proptest::prelude::*;

const SRC: &str = r#"
kernel gemv<W: {bf16, f32}>(x: f32[M, K], w: W[N, K], y: out f32[M, N])
tunables { BN: level1 in {4, 8} = 8, BK: level2 in {16, 32, 128} = 32 }
grid(M, cdiv(N, BN))
{
    let m = program_id(0);
    let cols = program_id(1) * BN + arange(BN);
    var acc = zeros([BN], f32);
    for k0 in 0..K step BK {
        let ks = k0 + arange(BK);
        acc = acc + sum(cast(load(w[cols, ks]), f32) * load(x[m, ks])[None, :], 1);
    }
    store(y[m, cols], acc);
}

kernel gemv_rows<X: {bf16, f32}>(x: X[M, K], w: bf16[N, K], y: out f32[M, N])
tunables { BM: level1 in {1, 2, 4, 8} = 8, BN: level1 in {4, 6, 16} = 16, BK: level2 in {32, 64, 128, 512} = 32 }
grid(cdiv(M, BM), cdiv(N, BN))
{
    let rows = program_id(0) * BM + arange(BM);
    let rl = minimum(rows, M - 1);
    let cols = program_id(1) * BN + arange(BN);
    var acc = zeros([BM, BN], f32);
    for k0 in 0..K step BK {
        let ks = k0 + arange(BK);
        acc = acc + sum(cast(load(w[cols, ks]), f32)[None, :, :] * cast(load(x[rl, ks]), f32)[:, None, :], 2);
    }
    store(y[rows, cols], acc);
}

kernel nibbles(c: e2m1[N, K], s: e8m0[N], y: out f32[N], z: out f32[N], off: i32)
tunables { BN: level1 in {4, 8} = 4, BK: level2 in {16, 64} = 16 }
grid(cdiv(N, BN))
{
    let rows = program_id(0) * BN + arange(BN);
    var acc = zeros([BN], f32);
    var hi = full([BN], -inf, f32);
    for k0 in 0..K step BK {
        let ks = off + k0 + arange(BK);
        acc = acc + sum(cast(load(c[rows, ks]), f32) * cast(load(s[rows]), f32)[:, None], 1);
        hi = maximum(hi, max(cast(load(c[rows, ks], mask: ks % 3 != 0, other: cast(-6.0, e2m1)), f32), 1));
    }
    store(y[rows], acc);
    store(z[rows], hi);
}

// Every G-th 32-element block of a [N, G·K] code matrix and every G-th scale (G = 2: blocks
// and scales not adjacent in memory), the scales e8m0 or f32 (a block factor that is not an
// e8m0 load).
kernel blocks<X: {f32, bf16}, S: {e8m0, f32}>(x: X[K], w: e2m1[N, G * K], sc: S[N, G * K / 32], y: out f32[N])
where K % 32 == 0, const G
tunables { BN: level1 in {4, 8} = 4, BK: level2 in {32, 64, 128, 256} = 64 }
grid(cdiv(N, BN))
{
    let cols = program_id(0) * BN + arange(BN);
    var acc = zeros([BN], f32);
    for k0 in 0..K step BK {
        let blk = k0 / 32 + arange(BK / 32);
        let ks = blk[:, None] * 32 + arange(32)[None, :];
        let wt = cast(load(w[cols, ks + blk[:, None] * (32 * (G - 1))]), f32) * cast(load(sc[cols, G * blk]), f32)[:, :, None];
        acc = acc + sum(reshape(wt * cast(load(x[ks]), f32)[None, :, :], [BN, BK]), 1);
    }
    store(y[cols], acc);
}

kernel block_rows<X: {f32, bf16}>(x: X[M, K], w: e2m1[N, K], sc: e8m0[N, K / 32], y: out f32[M, N])
where K % 32 == 0
tunables { BM: level1 in {2, 4} = 2, BN: level1 in {4, 8} = 4, BK: level2 in {32, 64, 128} = 64 }
grid(cdiv(N, BN))
{
    let cols = program_id(0) * BN + arange(BN);
    let rows = arange(BM);
    var acc = zeros([BM, BN], f32);
    for k0 in 0..K step BK {
        let blk = k0 / 32 + arange(BK / 32);
        let ks = blk[:, None] * 32 + arange(32)[None, :];
        let wt = cast(load(w[cols, ks]), f32) * cast(load(sc[cols, blk]), f32)[:, :, None];
        let xs = cast(load(x[rows, ks]), f32);
        acc = acc + sum(reshape(wt[None, :, :, :] * xs[:, None, :, :], [BM, BN, BK]), 2);
    }
    store(y[rows, cols], acc);
}

kernel decode(s: e8m0[N], y: out f32[N])
tunables { BN: level1 in {16, 64} = 16 }
grid(cdiv(N, BN))
{
    let i = program_id(0) * BN + arange(BN);
    store(y[i], cast(load(s[i]), f32));
}

kernel roots(a: bf16[R, C], b: f32[R, C], y: out f32[R, C], z: out f32[R], lo: out f32[R])
where const C
tunables { BR: level1 in {2, 4} = 2 }
grid(cdiv(R, BR))
{
    let rows = program_id(0) * BR + arange(BR);
    let cols = arange(C);
    let v = cast(load(a[rows, cols]), f32) * 2.0 + load(b[rows, cols], mask: cols % 2 == 0, other: 1.5);
    store(y[rows, cols], v);
    store(z[rows], max(v, 1));
    store(lo[rows], min(where(load(b[rows, cols]) > 0.0, load(b[rows, cols]), 9.0), 1));
}

kernel groups(x: f32[R, C], y: out f32[R], i: out i32[R], j: out i32[R], s: out f32[R], q: out f32[R])
where const C
tunables { BR: level1 in {2, 4} = 2 }
grid(cdiv(R, BR))
{
    let rows = program_id(0) * BR + arange(BR);
    let v = load(x[rows, arange(C)]);
    let m = max(v, 1);
    store(y[rows], m);
    store(i[rows], argmax(v, 1));
    store(j[rows], argmin(v, 1));
    let e = exp(v - m[:, None]);
    store(s[rows], sum(e, 1));
    store(q[rows], sum(e * v, 1));
}
"#;

fn cfg(cases: u32) -> ProptestConfig {
    let cases = std::env::var("OPC_LLVM_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(cases);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// e8m0 scales near 1, with 255 (NaN) and 0 (2^-127, subnormal) now and then: the two edge
/// codes of the decode.
fn edge_scales(r: &mut Rng, shape: &[usize]) -> Tensor {
    let mut sc = Tensor::zeros(DType::E8M0, shape);
    sc.data.iter_mut().for_each(|b| {
        *b = match r.below(40) {
            0 => 255,
            1 => 0,
            _ => 118 + r.below(14) as u8,
        }
    });
    sc
}

/// The comparison of a block-scaled sum `y[i, j] = Σ_k x[i, k] · w[j, k] · s[j, k / 32]` (x
/// `[m, kk]`, w `[n, kk]`): 64 f32 ulps of the largest Σ |terms| of an output. The fused loop
/// reassociates the sum, and when its terms cancel (a scale of 4 next to 2^-9) the rounding of
/// the partial sums is not bounded by the result's own size.
fn block_sum_cmp(x: &Tensor, w: &Tensor, sc: &Tensor, m: usize, n: usize, kk: usize) -> Cmp {
    let mut worst = 0f64;
    for i in 0..m {
        for j in 0..n {
            let a: f64 = (0..kk).map(|k| (x.get_f64(i * kk + k) * w.get_f64(j * kk + k) * sc.get_f64(j * (kk / 32) + k / 32)).abs()).filter(|v| v.is_finite()).sum();
            worst = worst.max(a);
        }
    }
    Cmp::Abs { tol: 64.0 * eps(DType::F32) * worst }
}

fn z(s: &[usize], d: DType) -> Arg {
    Arg::Tensor(Tensor::zeros(d, s))
}

proptest! {
    #![proptest_config(cfg(24))]
    #[test]
    fn gemv_steps(m in 1usize..3, n in 1usize..40, kk in 1usize..300, seed in any::<u64>(), bf in any::<bool>(), t in 0usize..3) {
        let wd = if bf { DType::BF16 } else { DType::F32 };
        let k = kernel(SRC, "gemv", &Instance::default().dtype("W", wd).tunable("BK", [16, 32, 128][t]));
        let mut r = Rng(seed);
        let args = vec![Arg::Tensor(r.tensor_f(DType::F32, &[m, kk], false)), Arg::Tensor(r.tensor_f(wd, &[n, kk], true)), z(&[m, n], DType::F32)];
        check(&k, &args, Cmp::Close { ulps: 64.0 });
    }

    /// Register-blocked GEMV tiles (`fuse_gemv.rs`): up to 8 rows (padding rows clamped),
    /// ragged N and K; bf16 activations take `vdpbf16ps` where the host has it. BN = 6 makes
    /// tiles of 6 columns (6, 12 or 24 outputs: zero-padded and split transposed lane sums).
    #[test]
    fn gemv_row_tiles(m in 1usize..9, n in 1usize..40, kk in 1usize..700, seed in any::<u64>(), xbf in any::<bool>(), t in 0usize..4, nb in 0usize..3) {
        let xd = if xbf { DType::BF16 } else { DType::F32 };
        let bm = m.next_power_of_two() as i64;
        let inst = Instance::default().dtype("X", xd).tunable("BM", bm).tunable("BN", [4, 6, 16][nb]).tunable("BK", [32, 64, 128, 512][t]);
        let k = kernel(SRC, "gemv_rows", &inst);
        let mut r = Rng(seed);
        let args = vec![Arg::Tensor(r.tensor_f(xd, &[m, kk], false)), Arg::Tensor(r.tensor_f(DType::BF16, &[n, kk], true)), z(&[m, n], DType::F32)];
        check(&k, &args, Cmp::Close { ulps: 64.0 });
    }

    #[test]
    fn packed_reductions(n in 1usize..20, kk in 1usize..150, off in 0i32..3, seed in any::<u64>(), t in 0usize..2) {
        let k = kernel(SRC, "nibbles", &Instance::default().tunable("BK", [16, 64][t]));
        let mut r = Rng(seed);
        let mut sc = Tensor::zeros(DType::E8M0, &[n]);
        sc.data.iter_mut().for_each(|b| *b = 120 + r.below(12) as u8);
        let args = vec![Arg::Tensor(r.tensor_raw(DType::E2M1, &[n, kk])), Arg::Tensor(sc), z(&[n], DType::F32), z(&[n], DType::F32), Arg::I32(off)];
        check(&k, &args, Cmp::Close { ulps: 64.0 });
    }

    /// Block-scaled GEMV steps; bf16 activations take the packed-pairs blocks
    /// (`block_pairs.rs`) on hosts with `vdpbf16ps`. K is any multiple of 32 (ragged against
    /// the 64-element step), N odd or even.
    #[test]
    fn block_scaled_reshape(n in 1usize..20, kb in 1usize..10, seed in any::<u64>(), t in 0usize..3, bf in any::<bool>()) {
        let kk = 32 * kb;
        let xd = if bf { DType::BF16 } else { DType::F32 };
        let k = kernel(SRC, "blocks", &Instance::default().dtype("X", xd).dtype("S", DType::E8M0).konst("G", 1).tunable("BK", [32, 64, 128][t]));
        let mut r = Rng(seed);
        let sc = edge_scales(&mut r, &[n, kb]);
        let (x, w) = (r.tensor_f(xd, &[kk], false), r.tensor_raw(DType::E2M1, &[n, kk]));
        let cmp = block_sum_cmp(&x, &w, &sc, 1, n, kk);
        check(&k, &[Arg::Tensor(x), Arg::Tensor(w), Arg::Tensor(sc), z(&[n], DType::F32)], cmp);
    }

    /// The same with 2 or 4 activation rows sharing each weight block (each block decoded once
    /// for all rows, packed pairs or not).
    #[test]
    fn block_scaled_shared_rows(n in 1usize..12, kb in 1usize..10, seed in any::<u64>(), t in 0usize..3, bm in 0usize..2, bf in any::<bool>()) {
        let (kk, m) = (32 * kb, [2, 4][bm]);
        let xd = if bf { DType::BF16 } else { DType::F32 };
        let k = kernel(SRC, "block_rows", &Instance::default().dtype("X", xd).tunable("BM", m as i64).tunable("BK", [32, 64, 128][t]));
        let mut r = Rng(seed);
        let sc = edge_scales(&mut r, &[n, kb]);
        let (x, w) = (r.tensor_f(xd, &[m, kk], false), r.tensor_raw(DType::E2M1, &[n, kk]));
        let cmp = block_sum_cmp(&x, &w, &sc, m, n, kk);
        check(&k, &[Arg::Tensor(x), Arg::Tensor(w), Arg::Tensor(sc), z(&[m, n], DType::F32)], cmp);
    }

    /// The four-block packed pairs (`block_pairs.rs`) where its fast loads do not apply: codes
    /// and scales of consecutive blocks apart in memory (the per-block loads), and f32 block
    /// scales (the per-block scale factors). K is any multiple of 32 (ragged against the step).
    #[test]
    fn block_scaled_spread(n in 1usize..12, kb in 1usize..12, seed in any::<u64>(), t in 0usize..2, g in 1usize..3, f in any::<bool>()) {
        let kk = 32 * kb;
        let sd = if f { DType::F32 } else { DType::E8M0 };
        let k = kernel(SRC, "blocks", &Instance::default().dtype("X", DType::BF16).dtype("S", sd).konst("G", g as i64).tunable("BK", [128, 256][t]));
        let mut r = Rng(seed);
        let sc = if f {
            let v: Vec<f32> = (0..n * g * kb).map(|_| r.below(64) as f32 / 16.0 - 2.0).collect();
            Tensor::from_f32(DType::F32, &[n, g * kb], &v)
        } else {
            edge_scales(&mut r, &[n, g * kb])
        };
        let (x, w) = (r.tensor_f(DType::BF16, &[kk], false), r.tensor_raw(DType::E2M1, &[n, g * kk]));
        // 64 f32 ulps of the largest Σ |terms| (as block_sum_cmp)
        let term = |j: usize, k: usize| x.get_f64(k) * w.get_f64(j * g * kk + (k / 32) * 32 * g + k % 32) * sc.get_f64(j * g * kb + g * (k / 32));
        let worst = (0..n).map(|j| (0..kk).map(|k| term(j, k).abs()).filter(|v| v.is_finite()).sum::<f64>()).fold(0.0, f64::max);
        let args = [Arg::Tensor(x.clone()), Arg::Tensor(w.clone()), Arg::Tensor(sc.clone()), z(&[n], DType::F32)];
        check(&k, &args, Cmp::Abs { tol: 64.0 * eps(DType::F32) * worst });
    }

    #[test]
    fn elementwise_roots(rr in 1usize..9, c in 1i64..70, seed in any::<u64>()) {
        let k = kernel(SRC, "roots", &Instance::default().konst("C", c));
        let c = c as usize;
        let mut r = Rng(seed);
        let args = vec![Arg::Tensor(r.tensor_f(DType::BF16, &[rr, c], true)), Arg::Tensor(r.tensor_f(DType::F32, &[rr, c], true)), z(&[rr, c], DType::F32), z(&[rr], DType::F32), z(&[rr], DType::F32)];
        exact(&k, &args);
    }
}

/// Reduction groups (`fuse_group.rs`): max / argmax / argmin over one shared tile in one loop,
/// then the sums of `exp(v - max)` in a second stage; small integer values make ties (first
/// index wins) and NaNs (skipped by the arg reductions) common.
#[test]
fn grouped_reductions() {
    let mut r = Rng(5);
    for (rr, c) in [(1usize, 1i64), (3, 17), (5, 64), (7, 301)] {
        let k = kernel(SRC, "groups", &Instance::default().konst("C", c));
        let vals: Vec<f32> = (0..rr * c as usize).map(|_| if r.below(20) == 0 { f32::NAN } else { r.below(5) as f32 - 2.0 }).collect();
        let x = Tensor::from_f32(DType::F32, &[rr, c as usize], &vals);
        let o = |d| z(&[rr], d);
        check(&k, &[Arg::Tensor(x), o(DType::F32), o(DType::I32), o(DType::I32), o(DType::F32), o(DType::F32)], Cmp::Close { ulps: 64.0 });
    }
}

/// Every e8m0 code (scalar and vector decode) bit for bit: 0 is 2^-127, 255 the quiet NaN.
#[test]
fn e8m0_every_code() {
    for bn in [16, 64] {
        let k = kernel(SRC, "decode", &Instance::default().tunable("BN", bn));
        let codes: Vec<u8> = (0..=255u8).chain([0, 255, 1]).collect();
        let t = Tensor { data: codes.clone(), ..Tensor::zeros(DType::E8M0, &[codes.len()]) };
        exact(&k, &[Arg::Tensor(t), z(&[codes.len()], DType::F32)]);
    }
}

/// A case that cancelled: block scales 2^-5, 4, 2^-9, ... sum to -0.093 from terms near 90;
/// the fused loop's reassociation is 6e-6 away, within the bound of its terms.
#[test]
fn block_scaled_sum_that_cancels() {
    let (n, kb) = (1usize, 6usize);
    let kk = 32 * kb;
    let k = kernel(SRC, "blocks", &Instance::default().dtype("X", DType::F32).dtype("S", DType::E8M0).konst("G", 1).tunable("BK", 32));
    let mut r = Rng(5310351611501839084);
    let sc = edge_scales(&mut r, &[n, kb]);
    let (x, w) = (r.tensor_f(DType::F32, &[kk], false), r.tensor_raw(DType::E2M1, &[n, kk]));
    let cmp = block_sum_cmp(&x, &w, &sc, 1, n, kk);
    check(&k, &[Arg::Tensor(x), Arg::Tensor(w), Arg::Tensor(sc), z(&[n], DType::F32)], cmp);
}
