//! Attention kernels (FA2 forward and split-KV decode) against the naive f64 reference in
//! `ref_a`, on random shapes with ragged edges and size-1 dims, GQA ratios, causal / window /
//! sinks on and off, f32 / f16 / bf16 inputs; plus hand-picked shapes of the hidden fixture sets
//! and the driver's shape errors.
//!
//! Tolerances (docs: fixtures README): f32 max|O − O_ref| ≤ 1e-4 · max|O_ref|; f16 / bf16 (P rounded
//! to the input dtype before P·V, output stored in that dtype) ≤ 1e-2 · max|O_ref|. LSE: same −inf
//! pattern, finite values within 1e-4 · max(1, |LSE|) (1e-3 for 16-bit inputs).

use opc_ir::{DType, Tensor};
use opc_ops::attention::{flash_attention, flash_decode, AttentionOut, AttentionParams};
use opc_ops::{OpError, Ops};
use opc_tests::ref_a::{self, AttnProblem, Rng};
use proptest::prelude::*;
use std::sync::OnceLock;

fn ops() -> &'static Ops {
    static OPS: OnceLock<Ops> = OnceLock::new();
    OPS.get_or_init(|| Ops::new(opc_codegen::target_by_name("interp").unwrap()))
}

#[derive(Clone, Debug)]
struct Case {
    p: AttnProblem,
    dtype: DType,
    sinks: bool,
    splits: usize,
    seed: u64,
}

struct Inputs {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    sinks: Option<Tensor>,
}

fn inputs(c: &Case) -> Inputs {
    let p = &c.p;
    let mut rng = Rng::new(c.seed);
    let q = Tensor::from_f32(c.dtype, &[p.b, p.hq, p.sq, p.d], &rng.normals(p.b * p.hq * p.sq * p.d, 1.0));
    let k = Tensor::from_f32(c.dtype, &[p.b, p.hkv, p.sk, p.d], &rng.normals(p.b * p.hkv * p.sk * p.d, 1.0));
    let v = Tensor::from_f32(c.dtype, &[p.b, p.hkv, p.sk, p.d], &rng.normals(p.b * p.hkv * p.sk * p.d, 1.0));
    let sinks = c.sinks.then(|| Tensor::from_f32(DType::F32, &[p.hq], &rng.normals(p.hq, 1.5)));
    Inputs { q, k, v, sinks }
}

fn f64s(t: &Tensor) -> Vec<f64> {
    t.to_f32_vec().into_iter().map(|x| x as f64).collect()
}

/// Compare one result with the reference; returns (out error / max|ref|, max LSE error).
fn compare(what: &str, c: &Case, got: &AttentionOut, want: &(Vec<f64>, Vec<f64>)) -> Result<(f64, f64), String> {
    let p = &c.p;
    if got.out.dtype != c.dtype || got.out.shape != [p.b, p.hq, p.sq, p.d] {
        return Err(format!("{what}: out is {}{:?}", got.out.dtype, got.out.shape));
    }
    if got.lse.dtype != DType::F32 || got.lse.shape != [p.b, p.hq, p.sq] {
        return Err(format!("{what}: lse is {}{:?}", got.lse.dtype, got.lse.shape));
    }
    let (o, l) = (f64s(&got.out), f64s(&got.lse));
    if let Some(i) = o.iter().position(|x| !x.is_finite()) {
        return Err(format!("{what}: out[{i}] = {}", o[i]));
    }
    let (rtol, ltol) = if c.dtype == DType::F32 { (1e-4, 1e-4) } else { (1e-2, 1e-3) };
    let scale = ref_a::max_abs(&want.0);
    let err = ref_a::max_abs_diff(&o, &want.0);
    if err > rtol * scale.max(1e-30) && err > 0.0 {
        let i = (0..o.len()).max_by(|&a, &b| (o[a] - want.0[a]).abs().total_cmp(&(o[b] - want.0[b]).abs())).unwrap();
        return Err(format!("{what}: max|out - ref| = {err:e} > {rtol:e}·{scale:e} (at {i}: {} vs {})", o[i], want.0[i]));
    }
    let mut lerr: f64 = 0.0;
    for (i, (&g, &w)) in l.iter().zip(&want.1).enumerate() {
        if w == f64::NEG_INFINITY || g == f64::NEG_INFINITY {
            if g != w {
                return Err(format!("{what}: lse[{i}] = {g}, expected {w}"));
            }
            continue;
        }
        let e = (g - w).abs();
        if !(e <= ltol * w.abs().max(1.0)) {
            return Err(format!("{what}: lse[{i}] = {g}, expected {w}"));
        }
        lerr = lerr.max(e);
    }
    Ok((err / scale.max(1e-30), lerr))
}

fn params(c: &Case) -> AttentionParams {
    AttentionParams { causal: c.p.causal, window: c.p.window, scale: c.p.scale as f32 }
}

/// Run both kernels on one case; returns the worst (relative out error, LSE error).
fn check(c: &Case) -> Result<(f64, f64), String> {
    let x = inputs(c);
    let want = ref_a::attention(&c.p, &f64s(&x.q), &f64s(&x.k), &f64s(&x.v), x.sinks.as_ref().map(f64s).as_deref());
    let pr = params(c);
    let fa = flash_attention(ops(), &x.q, &x.k, &x.v, x.sinks.as_ref(), &pr).map_err(|e| format!("flash_attention: {e}"))?;
    let e1 = compare("flash_attention", c, &fa, &want)?;
    let fd = flash_decode(ops(), &x.q, &x.k, &x.v, x.sinks.as_ref(), &pr, c.splits).map_err(|e| format!("flash_decode: {e}"))?;
    let e2 = compare(&format!("flash_decode({} splits)", c.splits), c, &fd, &want)?;
    Ok((e1.0.max(e2.0), e1.1.max(e2.1)))
}

fn case(b: usize, hq: usize, hkv: usize, sq: usize, sk: usize, d: usize, causal: bool, window: Option<usize>, dtype: DType, sinks: bool, splits: usize) -> Case {
    let p = AttnProblem { b, hq, hkv, sq, sk, d, causal, window, scale: 1.0 / (d as f64).sqrt() };
    Case { p, dtype, sinks, splits, seed: (b * 31 + hq * 7 + sq * 131 + sk * 17 + d) as u64 }
}

fn run(c: Case) {
    match check(&c) {
        Ok((e, l)) => eprintln!("{:?} {:?}: out err {e:.2e}·max, lse err {l:.2e}", c.dtype, c.p),
        Err(m) => panic!("{c:?}\n{m}"),
    }
}

fn dtype_strategy() -> impl Strategy<Value = DType> {
    prop_oneof![Just(DType::F32), Just(DType::F16), Just(DType::BF16)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: ref_a::proptest_cases(24), max_shrink_iters: 64, ..ProptestConfig::default() })]

    #[test]
    fn attention_matches_reference(
        seed in any::<u64>(),
        b in 1usize..=2,
        hkv in 1usize..=2,
        g in prop_oneof![Just(1usize), Just(2), Just(3)],
        sq in 1usize..=70,
        sk in 1usize..=70,
        d in prop_oneof![Just(8usize), Just(16), Just(24), Just(64)],
        causal in any::<bool>(),
        window in proptest::option::of(1usize..=40),
        sinks in any::<bool>(),
        dtype in dtype_strategy(),
        splits in 1usize..=5,
    ) {
        let p = AttnProblem { b, hq: hkv * g, hkv, sq, sk, d, causal, window, scale: 1.0 / (d as f64).sqrt() };
        let c = Case { p, dtype, sinks, splits, seed };
        if let Err(m) = check(&c) {
            return Err(TestCaseError::fail(format!("{c:?}\n{m}")));
        }
    }

    /// Decode: Sq = 1 with long KV, the shape flash_decode is meant for.
    #[test]
    fn decode_matches_reference(
        seed in any::<u64>(),
        hkv in 1usize..=2,
        g in prop_oneof![Just(1usize), Just(4), Just(8)],
        sk in 1usize..=300,
        d in prop_oneof![Just(16usize), Just(64)],
        causal in any::<bool>(),
        window in proptest::option::of(1usize..=100),
        sinks in any::<bool>(),
        dtype in dtype_strategy(),
        splits in 1usize..=8,
    ) {
        let p = AttnProblem { b: 1, hq: hkv * g, hkv, sq: 1, sk, d, causal, window, scale: 1.0 / (d as f64).sqrt() };
        let c = Case { p, dtype, sinks, splits, seed };
        if let Err(m) = check(&c) {
            return Err(TestCaseError::fail(format!("{c:?}\n{m}")));
        }
    }
}

// Shapes of the hidden fixture sets (scaled down where only the size differs).

#[test]
fn gqa_causal_d80() {
    run(case(1, 6, 3, 75, 75, 80, true, None, DType::BF16, false, 3));
}

#[test]
fn decode_long_gqa_16_4() {
    run(case(1, 16, 4, 1, 4099, 64, true, None, DType::F16, false, 8));
}

#[test]
fn prefix_33_of_300_d128() {
    run(case(1, 2, 2, 33, 300, 128, true, None, DType::BF16, false, 4));
}

#[test]
fn sinks_window_64() {
    run(case(1, 4, 1, 130, 130, 64, true, Some(64), DType::BF16, true, 2));
}

#[test]
fn single_query_single_key_d16() {
    run(case(1, 1, 1, 1, 1, 16, false, None, DType::F32, false, 1));
    run(case(1, 1, 1, 1, 1, 16, true, Some(1), DType::F32, true, 3));
}

/// Sq > Sk with the bottom-right causal mask: the first Sq − Sk rows see no key at all
/// (O = 0, LSE = −inf, no NaN); with sinks they see only the sink (O = 0, LSE = sink).
/// More splits than KV tiles leaves empty splits for the combine.
#[test]
fn fully_masked_rows() {
    run(case(1, 2, 1, 40, 10, 16, true, None, DType::F32, false, 7));
    run(case(1, 2, 1, 40, 10, 16, true, None, DType::BF16, true, 7));
    // causal + window 1: row i sees exactly key i + Sk - Sq, or nothing when that is negative
    run(case(1, 1, 1, 20, 5, 8, true, Some(1), DType::F32, false, 2));
}

#[test]
fn sinks_only_row_has_lse_of_the_sink() {
    let c = case(1, 2, 2, 3, 1, 8, true, None, DType::F32, true, 1);
    let x = inputs(&c);
    let r = flash_attention(ops(), &x.q, &x.k, &x.v, x.sinks.as_ref(), &params(&c)).unwrap();
    let s = x.sinks.unwrap().to_f32_vec();
    let lse = r.lse.to_f32_vec();
    // rows 0 and 1 of each head are fully masked (Sq = 3, Sk = 1): only the sink remains
    for h in 0..2 {
        for i in 0..2 {
            assert!((lse[h * 3 + i] - s[h]).abs() < 1e-6, "lse {} vs sink {}", lse[h * 3 + i], s[h]);
        }
    }
    assert!(r.out.to_f32_vec()[..8].iter().all(|&v| v == 0.0));
}

#[test]
fn shape_errors_are_precise() {
    let t = |dt, s: &[usize]| Tensor::zeros(dt, s);
    let p = AttentionParams { causal: true, window: None, scale: 0.125 };
    let q = t(DType::BF16, &[1, 4, 8, 64]);
    let k = t(DType::BF16, &[1, 2, 16, 64]);
    let msg = |r: Result<AttentionOut, OpError>| match r {
        Err(OpError::Shape { op, msg }) => format!("{op}: {msg}"),
        other => panic!("expected a shape error, got {other:?}"),
    };
    let m = msg(flash_attention(ops(), &q, &t(DType::BF16, &[1, 2, 16, 32]), &t(DType::BF16, &[1, 2, 16, 32]), None, &p));
    assert!(m.contains("`k` has shape [1, 2, 16, 32]") && m.contains("D=64"), "{m}");
    let m = msg(flash_attention(ops(), &q, &t(DType::BF16, &[1, 3, 16, 64]), &t(DType::BF16, &[1, 3, 16, 64]), None, &p));
    assert!(m.contains("Hq=4") && m.contains("Hkv=3"), "{m}");
    let m = msg(flash_attention(ops(), &q, &k, &t(DType::F16, &[1, 2, 16, 64]), None, &p));
    assert!(m.contains("`v` has dtype f16"), "{m}");
    let m = msg(flash_attention(ops(), &q, &k, &t(DType::BF16, &[1, 2, 15, 64]), None, &p));
    assert!(m.contains("`v` has shape [1, 2, 15, 64]"), "{m}");
    let m = msg(flash_attention(ops(), &q, &k, &k, Some(&t(DType::F32, &[2])), &p));
    assert!(m.contains("`sinks` has shape [2], expected [Hq=4]"), "{m}");
    let m = msg(flash_attention(ops(), &t(DType::I32, &[1, 4, 8, 64]), &k, &k, None, &p));
    assert!(m.contains("`q` has dtype i32"), "{m}");
    let m = msg(flash_decode(ops(), &q, &k, &k, None, &p, 0));
    assert!(m.contains("num_splits"), "{m}");
}

/// Every alignment of the causal diagonal and the window edge against the tile grid: the
/// tile-level decisions (loop bounds, which tiles need the mask) must agree with the per-element
/// mask for every offset Sk − Sq, not only for the ones random shapes happen to hit.
#[test]
fn mask_edges_at_every_tile_alignment() {
    let mut n = 0;
    for sq in [5usize, 16, 17, 40] {
        for diag in -20i64..=70 {
            let sk = sq as i64 + diag;
            if sk < 1 {
                continue;
            }
            for causal in [true, false] {
                for window in [None, Some(1usize), Some(7), Some(16), Some(17), Some(33), Some(80)] {
                    if !causal && window.is_none() {
                        continue;
                    }
                    let splits = 1 + diag.rem_euclid(4) as usize;
                    let mut c = case(1, 1, 1, sq, sk as usize, 8, causal, window, DType::F32, diag % 3 == 0, splits);
                    c.seed = n;
                    if let Err(m) = check(&c) {
                        panic!("{c:?}\n{m}");
                    }
                    n += 1;
                }
            }
        }
    }
    eprintln!("{n} mask alignments checked");
}
