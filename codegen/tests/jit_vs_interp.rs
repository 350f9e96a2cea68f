//! Every JIT target built in (`cpu` always, `llvm` with feature `llvm22-1`) against the
//! interpreter on the same random ragged shapes. `cpu` must match bit for bit everywhere. `llvm`
//! must match bit for bit for elementwise ops, masked loads and stores, casts (packed types
//! included), gathers, atomics, control flow and integer arithmetic, and within a tolerance
//! where it changes rounding (`dot`: FMA / `vdpbf16ps`; `sum` along the last dim: 16 partial
//! sums; inline `exp`). Tolerances are `ULPS · eps(dtype) · max|reference|` per output tensor
//! (see `jit_common.rs`).

#[path = "jit_common.rs"]
mod common;

use common::{all_jits, kernel, Cmp, Rng};
use opc_dsl::Instance;
use opc_ir::{Arg, DType, Tensor};
use proptest::prelude::*;

const FLOATS: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

/// `OPC_JIT_CASES=N` runs N cases per property instead of the default.
fn cfg(cases: u32) -> ProptestConfig {
    let cases = std::env::var("OPC_JIT_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(cases);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

const ELEMENTWISE: &str = r#"
kernel ew<T: {f32, f16, bf16}>(x: T[N], y: T[N], z: out T[N], w: out T[N])
tunables { B: level1 in {16, 64} = 64 }
grid(cdiv(N, B))
{
    let i = program_id(0) * B + arange(B);
    let a = load(x[i]);
    let b = load(y[i]);
    let c = a * b + a - b / (abs(b) + 1.0);
    let d = maximum(c, a) - minimum(abs(a), b * 0.25) + a * tanh(b);
    let e = where(a > b, sqrt(abs(d)), -d) + floor(a) + round(b) + ceil(a * 0.5);
    let f = pow(abs(a), b) + log(abs(b)) - log2(abs(a)) + sin(a) * cos(b) + rsqrt(abs(a)) + recip(b);
    store(z[i], e + a % b);
    store(w[i], where(isnan(f) || isinf(f), 7.0, f), mask: i % 3 != 1);
}

// exp and exp2 (and sigmoid / silu through exp) are inline polynomials on the llvm target: close,
// not bit-identical (bit-identical on cpu) (see `llvm_numerics.rs` for their ulp bounds).
kernel ew_exp<T: {f32, f16, bf16}>(x: T[N], y: T[N], z: out T[N], w: out T[N])
tunables { B: level1 in {16, 64} = 64 }
grid(cdiv(N, B))
{
    let i = program_id(0) * B + arange(B);
    let a = load(x[i]);
    let b = load(y[i]);
    store(z[i], exp(a) + sigmoid(b) * 2.0 - silu(a));
    store(w[i], exp2(a * 2.0) + exp(b), mask: i % 3 != 1);
}
"#;

proptest! {
    #![proptest_config(cfg(24))]
    #[test]
    fn elementwise_chains(n in 1usize..300, seed in any::<u64>(), t in 0usize..3, b in 0usize..2) {
        let d = FLOATS[t];
        let k = kernel(ELEMENTWISE, "ew", &Instance::default().dtype("T", d).tunable("B", [16, 64][b]));
        let mut r = Rng(seed);
        let args = vec![
            Arg::Tensor(r.tensor_f(d, &[n], true)),
            Arg::Tensor(r.tensor_f(d, &[n], true)),
            Arg::Tensor(Tensor::zeros(d, &[n])),
            Arg::Tensor(r.tensor_f(d, &[n], false)),
        ];
        all_jits(&k, &args, Cmp::Exact);
        let k = kernel(ELEMENTWISE, "ew_exp", &Instance::default().dtype("T", d).tunable("B", [16, 64][b]));
        let args = vec![
            Arg::Tensor(r.tensor_f(d, &[n], true)),
            Arg::Tensor(r.tensor_f(d, &[n], true)),
            Arg::Tensor(Tensor::zeros(d, &[n])),
            Arg::Tensor(r.tensor_f(d, &[n], false)),
        ];
        all_jits(&k, &args, Cmp::Close { ulps: 4.0 });
    }
}

const MASKED_2D: &str = r#"
kernel masked<T: {f32, f16, bf16}>(x: T[M, N], y: out T[M, N], thr: f32)
tunables { BM: level1 in {4, 8} = 8, BN: level1 in {16} = 16 }
grid(cdiv(M, BM), cdiv(N, BN))
{
    let r = program_id(0) * BM + arange(BM);
    let c = program_id(1) * BN + arange(BN);
    let keep = (r[:, None] + c[None, :]) % 3 != 1;
    let v = load(x[r, c], mask: keep, other: -1.5);
    let t = cast(v, f32) * 2.0;
    store(y[r, c], cast(t + thr, T), mask: t > thr);
}
"#;

proptest! {
    #![proptest_config(cfg(24))]
    #[test]
    fn masked_loads_and_stores(m in 1usize..40, n in 1usize..70, seed in any::<u64>(), t in 0usize..3) {
        let d = FLOATS[t];
        let k = kernel(MASKED_2D, "masked", &Instance::default().dtype("T", d));
        let mut r = Rng(seed);
        let args = vec![Arg::Tensor(r.tensor_f(d, &[m, n], true)), Arg::Tensor(r.tensor_f(d, &[m, n], false)), Arg::F32(r.f(false))];
        all_jits(&k, &args, Cmp::Exact);
    }
}

const MATMUL: &str = r#"
kernel matmul<T: {f32, f16, bf16}>(a: T[M, K], b: T[K, N], bias: f32[N], c: out T[M, N], has_bias: bool)
tunables {
    BM: level1 in {8, 16, 32} = 16,
    BN: level1 in {8, 20, 32} = 32,
    BK: level2 in {4, 8, 16} = 8,
}
grid(cdiv(M, BM), cdiv(N, BN))
{
    let rows = program_id(0) * BM + arange(BM);
    let cols = program_id(1) * BN + arange(BN);
    var acc = zeros([BM, BN], f32);
    for k0 in 0..cdiv(K, BK) {
        let ks = k0 * BK + arange(BK);
        acc = dot(load(a[rows, ks]), load(b[ks, cols]), acc);
    }
    if has_bias {
        acc = acc + load(bias[cols])[None, :];
    }
    store(c[rows, cols], cast(acc, T));
}

kernel matmul_nt(a: f32[M, K], b: f32[N, K], c: out f32[M, N])
tunables { BM: level1 in {8} = 8, BN: level1 in {12} = 12, BK: level2 in {16} = 16 }
grid(cdiv(M, BM), cdiv(N, BN))
{
    let rows = program_id(0) * BM + arange(BM);
    let cols = program_id(1) * BN + arange(BN);
    var acc = zeros([BM, BN], f32);
    for k0 in 0..cdiv(K, BK) {
        let ks = k0 * BK + arange(BK);
        acc = dot(load(a[rows, ks]), trans(load(b[cols, ks])), acc);
    }
    store(c[rows, cols], acc);
}

kernel matmul_i8(a: i8[M, K], b: i8[K, N], c: out i32[M, N])
tunables { BM: level1 in {8} = 8, BN: level1 in {8} = 8, BK: level2 in {8} = 8 }
grid(cdiv(M, BM), cdiv(N, BN))
{
    let rows = program_id(0) * BM + arange(BM);
    let cols = program_id(1) * BN + arange(BN);
    var acc = zeros([BM, BN], i32);
    for k0 in 0..cdiv(K, BK) {
        let ks = k0 * BK + arange(BK);
        acc = dot(load(a[rows, ks]), load(b[ks, cols]), acc);
    }
    store(c[rows, cols], acc);
}
"#;

proptest! {
    #![proptest_config(cfg(20))]
    #[test]
    fn matmul_ragged(m in 1usize..50, n in 1usize..50, kk in 1usize..40, seed in any::<u64>(), t in 0usize..3, tun in 0usize..3, bias in any::<bool>()) {
        let d = FLOATS[t];
        let inst = Instance::default().dtype("T", d).tunable("BM", [8, 16, 32][tun]).tunable("BN", [8, 20, 32][tun]).tunable("BK", [4, 8, 16][tun]);
        let k = kernel(MATMUL, "matmul", &inst);
        let mut r = Rng(seed);
        let args = vec![
            Arg::Tensor(r.tensor_f(d, &[m, kk], false)),
            Arg::Tensor(r.tensor_f(d, &[kk, n], false)),
            Arg::Tensor(r.tensor_f(DType::F32, &[n], false)),
            Arg::Tensor(Tensor::zeros(d, &[m, n])),
            Arg::Bool(bias),
        ];
        all_jits(&k, &args, Cmp::Close { ulps: 16.0 });
        let k = kernel(MATMUL, "matmul_nt", &Instance::default());
        let args = vec![
            Arg::Tensor(r.tensor_f(DType::F32, &[m, kk], true)),
            Arg::Tensor(r.tensor_f(DType::F32, &[n, kk], false)),
            Arg::Tensor(Tensor::zeros(DType::F32, &[m, n])),
        ];
        all_jits(&k, &args, Cmp::Close { ulps: 16.0 });
        let k = kernel(MATMUL, "matmul_i8", &Instance::default());
        let args = vec![
            Arg::Tensor(r.tensor_raw(DType::I8, &[m, kk])),
            Arg::Tensor(r.tensor_raw(DType::I8, &[kk, n])),
            Arg::Tensor(Tensor::zeros(DType::I32, &[m, n])),
        ];
        all_jits(&k, &args, Cmp::Exact);
    }
}

const SOFTMAX: &str = r#"
// Online softmax over the rows of x, BN columns at a time, then a second pass to normalize.
kernel online_softmax<T: {f32, f16, bf16}>(x: T[M, N], y: out T[M, N], lse: out f32[M])
tunables { BM: level1 in {4} = 4, BN: level2 in {8, 32} = 8 }
grid(cdiv(M, BM))
{
    let rows = program_id(0) * BM + arange(BM);
    var m = full([BM], -inf, f32);
    var l = zeros([BM], f32);
    for j0 in 0..N step BN {
        let cols = j0 + arange(BN);
        let s = load(x[rows, cols], mask: (cols < N)[None, :] && rows[:, None] >= 0, other: -inf);
        let s = cast(s, f32);
        let m_new = maximum(m, max(s, 1));
        let m_ref = where(m_new == -inf, 0.0, m_new);
        l = l * exp(m - m_ref) + sum(exp(s - m_ref[:, None]), 1);
        m = m_new;
    }
    for j0 in 0..N step BN {
        let cols = j0 + arange(BN);
        let s = cast(load(x[rows, cols]), f32);
        let p = exp(s - where(m == -inf, 0.0, m)[:, None]) / l[:, None];
        store(y[rows, cols], cast(p, T));
    }
    store(lse[rows], m + log(l));
}
"#;

proptest! {
    #![proptest_config(cfg(20))]
    #[test]
    fn online_softmax(m in 1usize..20, n in 1usize..90, seed in any::<u64>(), t in 0usize..3, bn in 0usize..2) {
        let d = FLOATS[t];
        let k = kernel(SOFTMAX, "online_softmax", &Instance::default().dtype("T", d).tunable("BN", [8, 32][bn]));
        let mut r = Rng(seed);
        let args = vec![Arg::Tensor(r.tensor_f(d, &[m, n], false)), Arg::Tensor(Tensor::zeros(d, &[m, n])), Arg::Tensor(Tensor::zeros(DType::F32, &[m]))];
        all_jits(&k, &args, Cmp::Close { ulps: 16.0 });
    }
}

const REDUCE: &str = r#"
kernel reduce<T: {f32, f16, bf16, i32, i8}>(x: T[M, N], s0: out T[N], s1: out T[M], mx: out T[M], mn: out T[N],
    am: out i32[M], an: out i32[N], c0: out T[M, N], c1: out T[M, N])
where const M, const N
grid(1)
{
    let r = arange(M);
    let c = arange(N);
    let t = load(x[r, c]);
    store(s0[c], sum(t, 0));
    store(s1[r], sum(t, 1));
    store(mx[r], max(t, 1));
    store(mn[c], min(t, 0));
    store(am[r], argmax(t, 1));
    store(an[c], argmin(t, 0));
    store(c0[r, c], cumsum(t, 0));
    store(c1[r, c], cumsum(t, 1));
}
"#;

proptest! {
    #![proptest_config(cfg(24))]
    #[test]
    fn reductions_and_scans(m in 1i64..9, n in 1i64..12, seed in any::<u64>(), t in 0usize..5, ties in any::<bool>()) {
        let d = [DType::F32, DType::F16, DType::BF16, DType::I32, DType::I8][t];
        let k = kernel(REDUCE, "reduce", &Instance::default().dtype("T", d).konst("M", m).konst("N", n));
        let (m, n) = (m as usize, n as usize);
        let mut r = Rng(seed);
        let x = if d.is_int() {
            if ties { r.tensor_i(d, &[m, n], -2, 2) } else { r.tensor_raw(d, &[m, n]) }
        } else if ties {
            let v: Vec<f32> = (0..m * n).map(|_| [0.0, -0.0, 1.0, f32::NAN, -1.0, 1.0][r.below(6) as usize]).collect();
            Tensor::from_f32(d, &[m, n], &v)
        } else {
            r.tensor_f(d, &[m, n], true)
        };
        let z = |s: &[usize], dt: DType| Arg::Tensor(Tensor::zeros(dt, s));
        let args = vec![Arg::Tensor(x), z(&[n], d), z(&[m], d), z(&[m], d), z(&[n], d), z(&[m], DType::I32), z(&[n], DType::I32), z(&[m, n], d), z(&[m, n], d)];
        all_jits(&k, &args, Cmp::Close { ulps: 16.0 });
    }
}

const CASTS: &str = r#"
kernel casts(x: f32[N], q8: out i8[N, 4], q4: out i4[N], fp4: out e2m1[N], sc: out e8m0[N], back: out f32[N, 4], u: out u8[N], h: out f16[N, 3], b: out bf16[N, 3], bits: out i32[N])
tunables { B: level1 in {16} = 16 }
grid(cdiv(N, B))
{
    let i = program_id(0) * B + arange(B);
    let v = load(x[i]) * 3.0;
    store(q8[i, 0], cast(v, i8, rne));
    store(q8[i, 1], cast(v, i8, rtz));
    store(q8[i, 2], cast(v, i8, floor));
    store(q8[i, 3], cast(v, i8, ceil));
    let c4 = cast(v, i4, rne);
    store(q4[i], c4);
    let e = cast(v, e2m1);
    store(fp4[i], e);
    let s = cast(abs(v), e8m0, floor);
    store(sc[i], s);
    store(back[i, 0], cast(c4, f32));
    store(back[i, 1], cast(e, f32));
    store(back[i, 2], cast(s, f32));
    store(back[i, 3], cast(cast(v, i32, floor), f32) + cast(bitcast(e, i4), f32));
    store(u[i], bitcast(s, u8) + cast(c4, u8));
    store(h[i, 0], cast(v, f16));
    store(h[i, 1], cast(v, f16, rtz));
    store(h[i, 2], cast(cast(v, bf16, ceil), f16, floor));
    store(b[i, 0], cast(v, bf16));
    store(b[i, 1], cast(v, bf16, floor));
    store(b[i, 2], cast(cast(v, i8, rne), bf16));
    store(bits[i], bitcast(v, i32) ^ cast(cast(v, bool, rtz), i32));
}

kernel unpack(c4: i4[N], f4: e2m1[N], sc: e8m0[N / 8], y: out f32[N], z: out i4[N], w: out e2m1[N])
where N % 8 == 0
tunables { B: level1 in {8, 24} = 8 }
grid(cdiv(N, B))
{
    let i = program_id(0) * B + arange(B);
    let a = load(c4[i]);
    let f = load(f4[i]);
    let s = load(sc[i / 8]);
    store(y[i], cast(a, f32) * cast(f, f32) * cast(s, f32));
    store(z[i], a + cast(1, i4));
    store(w[i], cast(cast(f, f32) * 2.0, e2m1, rtz), mask: i % 2 == 0);
}
"#;

proptest! {
    #![proptest_config(cfg(24))]
    #[test]
    fn casts_and_packed(n in 1usize..100, seed in any::<u64>()) {
        let k = kernel(CASTS, "casts", &Instance::default());
        let mut r = Rng(seed);
        let z = |s: &[usize], d: DType| Arg::Tensor(Tensor::zeros(d, s));
        let args = vec![
            Arg::Tensor(r.tensor_f(DType::F32, &[n], true)),
            z(&[n, 4], DType::I8), Arg::Tensor(r.tensor_raw(DType::I4, &[n])), z(&[n], DType::E2M1), z(&[n], DType::E8M0),
            z(&[n, 4], DType::F32), z(&[n], DType::U8), z(&[n, 3], DType::F16), z(&[n, 3], DType::BF16), z(&[n], DType::I32),
        ];
        all_jits(&k, &args, Cmp::Exact);
    }

    #[test]
    fn unpack_packed(n8 in 1usize..20, seed in any::<u64>(), b in 0usize..2) {
        let n = 8 * n8;
        let k = kernel(CASTS, "unpack", &Instance::default().tunable("B", [8, 24][b]));
        let mut r = Rng(seed);
        let args = vec![
            Arg::Tensor(r.tensor_raw(DType::I4, &[n])),
            Arg::Tensor(r.tensor_raw(DType::E2M1, &[n])),
            Arg::Tensor(r.tensor_i(DType::E8M0, &[n / 8], 100, 150)),
            Arg::Tensor(Tensor::zeros(DType::F32, &[n])),
            Arg::Tensor(r.tensor_raw(DType::I4, &[n])),
            Arg::Tensor(r.tensor_raw(DType::E2M1, &[n])),
        ];
        all_jits(&k, &args, Cmp::Exact);
    }
}

const GATHER: &str = r#"
kernel gather<T: {f32, bf16, u8}>(table: T[V, H], ids: i32[S], y: out T[S, H])
tunables { BT: level1 in {4} = 4, BH: level1 in {8} = 8 }
grid(cdiv(S, BT), cdiv(H, BH))
{
    let t = program_id(0) * BT + arange(BT);
    let h = program_id(1) * BH + arange(BH);
    let id = load(ids[t], other: -1);
    store(y[t, h], load(table[id, h]));
}

kernel gather2d(x: f32[R, C], idx: i32[R2, C2], y: out f32[R2, C2])
grid(R2)
{
    let r = program_id(0);
    let c = arange(8);
    let j = load(idx[r, c], other: -7);
    let g = load(x[j % 3, j], mask: (j >= 0)[:, None] && (j < 100)[None, :], other: 9.0);
    store(y[r, c], max(g, 1));
}
"#;

proptest! {
    #![proptest_config(cfg(24))]
    #[test]
    fn gathers(v in 1usize..12, h in 1usize..30, s in 1usize..20, seed in any::<u64>(), t in 0usize..3) {
        let d = [DType::F32, DType::BF16, DType::U8][t];
        let k = kernel(GATHER, "gather", &Instance::default().dtype("T", d));
        let mut r = Rng(seed);
        let args = vec![
            Arg::Tensor(r.tensor_raw(d, &[v, h])),
            Arg::Tensor(r.tensor_i(DType::I32, &[s], -3, v as i32 + 3)),
            Arg::Tensor(Tensor::zeros(d, &[s, h])),
        ];
        all_jits(&k, &args, Cmp::Exact);
        let k = kernel(GATHER, "gather2d", &Instance::default());
        let (rr, cc) = (v, h);
        let args = vec![
            Arg::Tensor(r.tensor_f(DType::F32, &[rr, cc], true)),
            Arg::Tensor(r.tensor_i(DType::I32, &[s, 5], -4, (rr * cc) as i32 + 4)),
            Arg::Tensor(Tensor::zeros(DType::F32, &[s, 5])),
        ];
        all_jits(&k, &args, Cmp::Exact);
    }
}

const ATOMIC: &str = r#"
kernel histogram(x: i32[N], w: f32[N], counts: out i32[B], sums: out f32[B])
tunables { T: level1 in {16} = 16 }
grid(cdiv(N, T))
{
    let i = program_id(0) * T + arange(T);
    let bin = load(x[i]);
    atomic_add(counts[bin], zeros([T], i32) + 1, mask: i < N);
    atomic_add(sums[bin], load(w[i]));
}
"#;

proptest! {
    #![proptest_config(cfg(24))]
    #[test]
    fn atomic_add(n in 1usize..300, bins in 1usize..10, seed in any::<u64>()) {
        let k = kernel(ATOMIC, "histogram", &Instance::default());
        let mut r = Rng(seed);
        // integer-valued weights: sums are exact in any order
        let args = vec![
            Arg::Tensor(r.tensor_i(DType::I32, &[n], -1, bins as i32)),
            Arg::Tensor(r.tensor_i(DType::F32, &[n], -8, 8)),
            Arg::Tensor(r.tensor_i(DType::I32, &[bins], -5, 5)),
            Arg::Tensor(Tensor::zeros(DType::F32, &[bins])),
        ];
        all_jits(&k, &args, Cmp::Exact);
    }
}

const CONTROL: &str = r#"
kernel control(x: f32[N], y: out f32[N], n_iter: i32, flag: bool, stp: i32)
tunables { B: level1 in {8} = 8 }
grid(cdiv(N, B))
{
    let i = program_id(0) * B + arange(B);
    var v = load(x[i]);
    var s = 0.0;
    var k = 0;
    for it in 0..n_iter step stp {
        if flag && it % 2 == 0 {
            v = v * 0.5 + cast(it, f32);
            s = s + 1.0;
        } else {
            v = reshape(trans(reshape(v, [2, 4])), [8]) + 0.25;
            k = k + it;
        }
        let t = v;
        v = where(t > 100.0, t - 100.0, t);
    }
    store(y[i], v + s + cast(k, f32));
}

kernel swap(x: f32[N], y: out f32[N], z: out f32[N], n_iter: i32)
grid(1)
{
    let i = arange(4);
    var a = load(x[i]);
    var b = load(x[i + 4]);
    for it in 0..n_iter {
        let t = a;
        a = b + 1.0;
        b = t;
    }
    var p = a;
    var q = b;
    for it in 0..n_iter {
        let pp = p;
        p = q;
        q = pp;
    }
    store(y[i], a * 10.0 + b);
    store(z[i], p * 10.0 + q);
}

kernel ints(x: i32[N], y: i32[N], o: out i32[N, 8], b: out i8[N, 4], u: out u8[N])
tunables { B: level1 in {8} = 8 }
grid(cdiv(N, B))
{
    let i = program_id(0) * B + arange(B);
    let a = load(x[i]);
    let c = load(y[i]);
    store(o[i, 0], a / c);
    store(o[i, 1], a % c);
    store(o[i, 2], a << (c & 0x3F) - 20);
    store(o[i, 3], a >> (c & 0x3F) - 20);
    store(o[i, 4], (a % 5) * (c % 7));
    store(o[i, 5], -a * c + (a ^ c) - (a | c) + (a & c) + abs(a));
    store(o[i, 6], maximum(a, c) - minimum(a, c) + !a);
    store(o[i, 7], cast(a > c, i32) + cast(a == c, i32) * 2 + cast(!(a <= c), i32) * 4);
    let s = cast(a, i8);
    let t = cast(c, i8);
    store(b[i, 0], s * t + s);
    store(b[i, 1], s / t - abs(s));
    store(b[i, 2], s << cast(3, i8));
    store(b[i, 3], s >> cast(2, i8));
    store(u[i], cast(a, u8) * cast(c, u8) - cast(a, u8));
}
"#;

proptest! {
    #![proptest_config(cfg(24))]
    #[test]
    fn control_flow(n in 1usize..40, n_iter in -1i32..7, flag in any::<bool>(), step in 1i32..3, seed in any::<u64>()) {
        let k = kernel(CONTROL, "control", &Instance::default());
        let mut r = Rng(seed);
        let args = vec![Arg::Tensor(r.tensor_f(DType::F32, &[n], false)), Arg::Tensor(Tensor::zeros(DType::F32, &[n])), Arg::I32(n_iter), Arg::Bool(flag), Arg::I32(step)];
        all_jits(&k, &args, Cmp::Exact);
        let k = kernel(CONTROL, "swap", &Instance::default());
        let args = vec![Arg::Tensor(r.tensor_f(DType::F32, &[8], false)), Arg::Tensor(Tensor::zeros(DType::F32, &[8])), Arg::Tensor(Tensor::zeros(DType::F32, &[8])), Arg::I32(n_iter)];
        all_jits(&k, &args, Cmp::Exact);
    }

    #[test]
    fn int_arithmetic(n in 1usize..40, seed in any::<u64>(), small in any::<bool>()) {
        let k = kernel(CONTROL, "ints", &Instance::default());
        let mut r = Rng(seed);
        let mk = |r: &mut Rng| if small { r.tensor_i(DType::I32, &[n], -3, 3) } else {
            let v: Vec<i32> = (0..n).map(|_| [i32::MIN, -1, 0, 1, i32::MAX, r.next_u64() as i32][r.below(6) as usize]).collect();
            Tensor::from_i32(DType::I32, &[n], &v)
        };
        let args = vec![Arg::Tensor(mk(&mut r)), Arg::Tensor(mk(&mut r)), Arg::Tensor(Tensor::zeros(DType::I32, &[n, 8])), Arg::Tensor(Tensor::zeros(DType::I8, &[n, 4])), Arg::Tensor(Tensor::zeros(DType::U8, &[n]))];
        all_jits(&k, &args, Cmp::Exact);
    }
}

#[test]
fn bad_step_is_the_same_launch_error() {
    let k = kernel(CONTROL, "control", &Instance::default());
    let args = vec![
        Arg::Tensor(Tensor::zeros(DType::F32, &[8])),
        Arg::Tensor(Tensor::zeros(DType::F32, &[8])),
        Arg::I32(3),
        Arg::Bool(true),
        Arg::I32(0),
    ];
    all_jits(&k, &args, Cmp::Exact);
}

#[test]
fn launch_errors_are_identical() {
    let k = kernel(MATMUL, "matmul", &Instance::default().dtype("T", DType::F32));
    let args = vec![
        Arg::Tensor(Tensor::zeros(DType::F32, &[4, 5])),
        Arg::Tensor(Tensor::zeros(DType::F32, &[6, 3])),
        Arg::Tensor(Tensor::zeros(DType::F32, &[3])),
        Arg::Tensor(Tensor::zeros(DType::F32, &[4, 3])),
        Arg::Bool(false),
    ];
    all_jits(&k, &args, Cmp::Exact);
}

const NARROW: &str = r#"
kernel narrow(x: f32[N], b: out bf16[N, 4], h: out f16[N, 2])
tunables { B: level1 in {32} = 32 }
grid(cdiv(N, B))
{
    let i = program_id(0) * B + arange(B);
    let v = load(x[i]);
    store(b[i, 0], cast(v, bf16));
    store(b[i, 1], cast(v, bf16, rtz));
    store(b[i, 2], cast(v, bf16) * cast(v, bf16));
    store(b[i, 3], cast(v * 1.5, bf16));
    store(h[i, 0], cast(v, f16));
    store(h[i, 1], cast(v, f16, ceil) + cast(v, f16));
}
"#;

proptest! {
    #![proptest_config(cfg(32))]
    /// f32 → bf16 / f16 on bit patterns near rounding ties, subnormals, infinities and NaNs.
    #[test]
    fn narrowing_casts_at_ties(n in 1usize..200, seed in any::<u64>()) {
        let k = kernel(NARROW, "narrow", &Instance::default());
        let mut r = Rng(seed);
        let v: Vec<f32> = (0..n)
            .map(|_| {
                let x = r.next_u64() as u32;
                f32::from_bits(match r.below(6) {
                    // bf16 tie region: round bit set, bits 3..14 clear, low bits random
                    0 => (x & 0xFFFF_0007) | 0x8000,
                    // f16 tie region
                    1 => (x & 0xFFFF_E007) | 0x1000,
                    // subnormal
                    2 => x & 0x8000_FFFF,
                    // exponent near the top (overflow to inf when rounding up)
                    3 => (x & 0x807F_FFFF) | 0x7F00_0000,
                    4 => [0x7F80_0000, 0xFF80_0000, 0x7FC0_0001, 0xFF81_2345, 0x7F7F_FFFF, 0x0000_8000][r.below(6) as usize],
                    _ => x,
                })
            })
            .collect();
        let args = vec![
            Arg::Tensor(Tensor::from_f32(DType::F32, &[n], &v)),
            Arg::Tensor(Tensor::zeros(DType::BF16, &[n, 4])),
            Arg::Tensor(Tensor::zeros(DType::F16, &[n, 2])),
        ];
        all_jits(&k, &args, Cmp::Exact);
    }
}
