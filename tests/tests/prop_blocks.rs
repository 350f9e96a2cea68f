//! Model-runtime building blocks against naive f64 references on random, ragged shapes.

use opc_ir::{DType, Tensor};
use opc_ops::blocks::{self, RopeParams, Yarn};
use opc_ops::Ops;
use opc_tests::ref_b::{self, Rng, YarnRef};
use proptest::prelude::*;
use std::sync::OnceLock;

fn ops() -> &'static Ops {
    static OPS: OnceLock<Ops> = OnceLock::new();
    OPS.get_or_init(|| Ops::new(opc_codegen::target_by_name("interp").unwrap()))
}

fn f32t(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_f32(DType::F32, shape, v)
}

fn close(name: &str, got: &Tensor, want: &[f64], tol: f64) -> Result<(), TestCaseError> {
    let err = ref_b::rel_err_to_max(&got.to_f32_vec(), want, 1e-6);
    prop_assert!(err <= tol, "{}: error {:e} relative to max (tolerance {:e})", name, err, tol);
    Ok(())
}

/// 16 cases per property (seconds for the suite); `PROPTEST_CASES=N` for a longer soak.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(16)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn matmul_and_linear(m in 1usize..=70, k in 1usize..=70, n in 1usize..=70, with_bias: bool, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let (a, b, w) = (rng.normals(m * k, 1.0), rng.normals(k * n, 1.0), rng.normals(n * k, 1.0));
        let bias = rng.normals(n, 1.0);
        let bias_t = f32t(&[n], &bias);
        let bias_opt = with_bias.then_some(&bias_t);
        let bias_ref = with_bias.then_some(bias.as_slice());
        let got = blocks::matmul(ops(), &f32t(&[m, k], &a), &f32t(&[k, n], &b), bias_opt).unwrap();
        prop_assert_eq!(&got.shape, &vec![m, n]);
        close("matmul", &got, &ref_b::matmul(&a, &b, bias_ref, m, k, n), 1e-5)?;
        let got = blocks::linear(ops(), &f32t(&[m, k], &a), &f32t(&[n, k], &w), bias_opt).unwrap();
        close("linear", &got, &ref_b::linear(&a, &w, bias_ref, m, k, n), 1e-5)?;
    }

    #[test]
    fn rmsnorm(t in 1usize..=9, h in 1usize..=300, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let (x, w) = (rng.normals(t * h, 2.0), rng.normals(h, 1.0));
        let got = blocks::rmsnorm(ops(), &f32t(&[t, h], &x), &f32t(&[h], &w), 1e-5).unwrap();
        close("rmsnorm", &got, &ref_b::rmsnorm(&x, &w, t, h, 1e-5), 1e-5)?;
    }

    #[test]
    fn add_rmsnorm(t in 1usize..=9, h in 1usize..=300, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let (x, dl, w) = (rng.normals(t * h, 2.0), rng.normals(t * h, 2.0), rng.normals(h, 1.0));
        let (nx, y) = blocks::add_rmsnorm_to(ops(), f32t(&[t, h], &x), &f32t(&[t, h], &dl), &f32t(&[h], &w), 1e-5, DType::F32).unwrap();
        let sum: Vec<f32> = x.iter().zip(&dl).map(|(a, b)| a + b).collect();
        prop_assert_eq!(nx.to_f32_vec(), sum.clone());
        close("add_rmsnorm", &y, &ref_b::rmsnorm(&sum, &w, t, h, 1e-5), 1e-5)?;
        // the fused kernel gives exactly the values of the two passes it replaces
        let two = blocks::rmsnorm_to(ops(), &nx, &f32t(&[h], &w), 1e-5, DType::BF16).unwrap();
        let (_, yb) = blocks::add_rmsnorm_to(ops(), f32t(&[t, h], &x), &f32t(&[t, h], &dl), &f32t(&[h], &w), 1e-5, DType::BF16).unwrap();
        prop_assert_eq!(yb.to_f32_vec(), two.to_f32_vec());
    }

    #[test]
    fn rope(t in 1usize..=6, nh in 1usize..=5, half in 1usize..=40, yarn: bool, truncate: bool,
            big_theta: bool, fd in 0usize..3, seed in any::<u64>()) {
        let freq_dtype = [DType::F32, DType::BF16, DType::F16][fd];
        let d = 2 * half;
        let mut rng = Rng::new(seed);
        let x = rng.normals(t * nh * d, 1.0);
        let pos: Vec<i32> = (0..t).map(|_| rng.below(600) as i32).collect();
        let theta = if big_theta { 150000.0 } else { 10000.0 };
        let y = Yarn { factor: 4.0, beta_fast: 32.0, beta_slow: 1.0, original_max_position_embeddings: 128, truncate };
        let p = RopeParams { theta, yarn: yarn.then_some(y), freq_dtype };
        let yr = YarnRef { factor: 4.0, beta_fast: 32.0, beta_slow: 1.0, original_max_position_embeddings: 128.0, truncate };
        let got = blocks::rope(ops(), &f32t(&[t, nh, d], &x), &Tensor::from_i32(DType::I32, &[t], &pos), &p).unwrap();
        let want = ref_b::rope(&x, &pos, t, nh, d, theta as f64, yarn.then_some(&yr), freq_dtype);
        close("rope", &got, &want, 1e-4)?;
    }

    #[test]
    fn swiglu_variants(t in 1usize..=9, i in 1usize..=300, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let (g, u) = (rng.normals(t * i, 3.0), rng.normals(t * i, 3.0));
        let got = blocks::swiglu(ops(), &f32t(&[t, i], &g), &f32t(&[t, i], &u)).unwrap();
        close("swiglu", &got, &ref_b::swiglu(&g, &u), 1e-6)?;
        // scale 5 so both clamps at ±7 are exercised
        let gu = rng.normals(t * 2 * i, 5.0);
        let got = blocks::clamped_swiglu(ops(), &f32t(&[t, 2 * i], &gu), 1.702, 7.0).unwrap();
        prop_assert_eq!(&got.shape, &vec![t, i]);
        close("clamped_swiglu", &got, &ref_b::clamped_swiglu(&gu, t, i, 1.702, 7.0), 1e-6)?;
    }

    #[test]
    fn softmax(t in 1usize..=9, v in 1usize..=300, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let x = rng.normals(t * v, 4.0);
        let got = blocks::softmax(ops(), &f32t(&[t, v], &x)).unwrap();
        close("softmax", &got, &ref_b::softmax(&x, t, v), 1e-5)?;
    }

    #[test]
    fn embedding(v in 1usize..=300, h in 1usize..=70, t in 1usize..=20, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let table = rng.normals(v * h, 1.0);
        let ids: Vec<i32> = (0..t).map(|_| rng.below(v) as i32).collect();
        let got = blocks::embedding(ops(), &f32t(&[v, h], &table), &Tensor::from_i32(DType::I32, &[t], &ids)).unwrap();
        prop_assert_eq!(got.to_f32_vec(), ref_b::embedding(&table, &ids, v, h).iter().map(|&x| x as f32).collect::<Vec<_>>());
    }

    /// Values drawn from a few levels so that ties are common: equal values must come out in
    /// ascending index order.
    #[test]
    fn topk(t in 1usize..=9, v in 1usize..=300, kf in 0.0f64..1.0, levels in 2usize..=20, seed in any::<u64>()) {
        let k = 1 + ((v.min(12) as f64 * kf) as usize).min(v.min(12) - 1);
        let mut rng = Rng::new(seed);
        let x: Vec<f32> = (0..t * v).map(|_| rng.below(levels) as f32 - 3.0).collect();
        let (vals, idx) = blocks::topk(ops(), &f32t(&[t, v], &x), k).unwrap();
        let (wv, wi) = ref_b::topk(&x, t, v, k);
        prop_assert_eq!(vals.to_f32_vec(), wv);
        prop_assert_eq!(idx.to_i64_vec().iter().map(|&i| i as i32).collect::<Vec<_>>(), wi);
    }
}

#[test]
fn topk_handles_infinities() {
    let x = [f32::NEG_INFINITY, 1.0, f32::INFINITY, f32::NEG_INFINITY, 1.0];
    let (vals, idx) = blocks::topk(ops(), &f32t(&[1, 5], &x), 5).unwrap();
    assert_eq!(idx.to_i64_vec(), vec![2, 1, 4, 0, 3]);
    assert_eq!(vals.to_f32_vec(), vec![f32::INFINITY, 1.0, 1.0, f32::NEG_INFINITY, f32::NEG_INFINITY]);
}

/// The gpt-oss fixture's RoPE: YaRN factor 4, θ = 150000, original context 128, head dim 32.
#[test]
fn rope_gptoss_config() {
    let (t, nh, d) = (13, 4, 32);
    let mut rng = Rng::new(5);
    let x = rng.normals(t * nh * d, 1.0);
    let pos: Vec<i32> = (0..t as i32).collect();
    let y = Yarn { factor: 4.0, beta_fast: 32.0, beta_slow: 1.0, original_max_position_embeddings: 128, truncate: false };
    let got = blocks::rope(ops(), &f32t(&[t, nh, d], &x), &Tensor::from_i32(DType::I32, &[t], &pos), &RopeParams { theta: 150000.0, yarn: Some(y), freq_dtype: DType::F32 })
        .unwrap();
    let yr = YarnRef { factor: 4.0, beta_fast: 32.0, beta_slow: 1.0, original_max_position_embeddings: 128.0, truncate: false };
    let want = ref_b::rope(&x, &pos, t, nh, d, 150000.0, Some(&yr), DType::F32);
    close("rope", &got, &want, 1e-5).unwrap();
}

/// bf16 storage: matmul rounds once from the f32 accumulator; embedding copies bits exactly.
#[test]
fn bf16_paths() {
    let (m, k, n) = (5, 33, 17);
    let mut rng = Rng::new(8);
    let a = Tensor::from_f32(DType::BF16, &[m, k], &rng.normals(m * k, 1.0));
    let b = Tensor::from_f32(DType::BF16, &[k, n], &rng.normals(k * n, 1.0));
    let got = blocks::matmul(ops(), &a, &b, None).unwrap();
    assert_eq!(got.dtype, DType::BF16);
    let want = ref_b::matmul(&a.to_f32_vec(), &b.to_f32_vec(), None, m, k, n);
    let err = ref_b::rel_err_to_max(&got.to_f32_vec(), &want, 1e-6);
    assert!(err <= 8e-3, "bf16 matmul error {err:e}");
    let got = blocks::embedding(ops(), &a, &Tensor::from_i32(DType::I32, &[3], &[4, 0, 4])).unwrap();
    assert_eq!(got.data[..2 * k], a.data[8 * k..10 * k]);
}

#[test]
fn shape_errors_are_precise() {
    let z = |shape: &[usize]| Tensor::zeros(DType::F32, shape);
    let err = blocks::matmul(ops(), &z(&[2, 3]), &z(&[4, 5]), None).unwrap_err().to_string();
    assert!(err.starts_with("matmul:") && err.contains("[2, 3]") && err.contains("[4, 5]"), "{err}");
    let err = blocks::linear(ops(), &z(&[2, 3]), &z(&[5, 4]), None).unwrap_err().to_string();
    assert!(err.contains("K = 3"), "{err}");
    let err = blocks::rope(ops(), &z(&[2, 3, 5]), &Tensor::zeros(DType::I32, &[2]), &RopeParams { theta: 1e4, yarn: None, freq_dtype: DType::F32 }).unwrap_err().to_string();
    assert!(err.contains("D = 5"), "{err}");
    let err = blocks::clamped_swiglu(ops(), &z(&[2, 7]), 1.702, 7.0).unwrap_err().to_string();
    assert!(err.contains("even"), "{err}");
    let err = blocks::topk(ops(), &z(&[2, 7]), 8).unwrap_err().to_string();
    assert!(err.contains("k = 8"), "{err}");
    let err = blocks::rmsnorm(ops(), &z(&[2, 7]), &z(&[6]), 1e-6).unwrap_err().to_string();
    assert!(err.contains("[7]"), "{err}");
    let err = blocks::add_rmsnorm_to(ops(), z(&[2, 7]), &z(&[2, 6]), &z(&[7]), 1e-6, DType::F32).unwrap_err().to_string();
    assert!(err.contains("[2, 6]"), "{err}");
    let err = blocks::add_rmsnorm_to(ops(), z(&[2, 7]), &z(&[2, 7]), &z(&[7]), 1e-6, DType::F16).unwrap_err().to_string();
    assert!(err.contains("f16"), "{err}");
}
