//! FlatQuant transform + INT4 quantization and the INT4 GEMM against the naive references in
//! `ref_a` (explicit Kronecker product in f64; integer GEMM in i64).
//!
//! Tolerances: transformed ≤ 1e-5 · max|x~_ref| (f32 vs f64 accumulation); scales ≤ 1e-5 relative;
//! int4 codes exact, except within 1e-3 of a .5 tie of x~/scale, where ±1 is allowed (an f32
//! kernel may land on either side); INT4 GEMM ≤ 1e-5 relative to max|y_ref|.

use opc_ir::{DType, Tensor};
use opc_ops::kron_quant::{int4_gemm, kron_quant};
use opc_ops::{OpError, Ops};
use opc_tests::ref_a::{self, Rng};
use proptest::prelude::*;
use std::sync::OnceLock;

fn ops() -> &'static Ops {
    static OPS: OnceLock<Ops> = OnceLock::new();
    OPS.get_or_init(|| Ops::new(opc_codegen::target_by_name("interp").unwrap()))
}

fn f64s(t: &Tensor) -> Vec<f64> {
    t.to_f32_vec().into_iter().map(|x| x as f64).collect()
}

/// FlatQuant-like data: x with a few outlier channels, c in [0.5, 1.5), P = I + 0.1·N(0, 1).
fn kron_inputs(seed: u64, t: usize, n1: usize, n2: usize, zero_token: Option<usize>) -> [Tensor; 4] {
    let mut rng = Rng::new(seed);
    let n = n1 * n2;
    let outlier: Vec<f64> = (0..n).map(|_| if rng.uniform() < 0.02 { 20.0 } else { 1.0 }).collect();
    let mut x: Vec<f32> = (0..t * n).map(|i| (rng.normal() * outlier[i % n]) as f32).collect();
    if let Some(z) = zero_token {
        x[z * n..(z + 1) * n].fill(0.0);
    }
    let c: Vec<f32> = (0..n).map(|_| (0.5 + rng.uniform()) as f32).collect();
    let eye_plus = |rng: &mut Rng, m: usize| -> Vec<f32> {
        (0..m * m).map(|i| (if i / m == i % m { 1.0 } else { 0.0 } + 0.1 * rng.normal()) as f32).collect()
    };
    let p1 = eye_plus(&mut rng, n1);
    let p2 = eye_plus(&mut rng, n2);
    [
        Tensor::from_f32(DType::F32, &[t, n], &x),
        Tensor::from_f32(DType::F32, &[n], &c),
        Tensor::from_f32(DType::F32, &[n1, n1], &p1),
        Tensor::from_f32(DType::F32, &[n2, n2], &p2),
    ]
}

/// Returns (transformed error / max, max scale relative error, codes off by one at ties).
fn check_kron(seed: u64, t: usize, n1: usize, n2: usize, zero_token: Option<usize>) -> Result<(f64, f64, usize), String> {
    let [x, c, p1, p2] = kron_inputs(seed, t, n1, n2, zero_token);
    let n = n1 * n2;
    let got = kron_quant(ops(), &x, &c, &p1, &p2).map_err(|e| e.to_string())?;
    if got.codes.dtype != DType::I4 || got.codes.shape != [t, n] || got.codes.data.len() != (t * n).div_ceil(2) {
        return Err(format!("codes are {}{:?} in {} bytes", got.codes.dtype, got.codes.shape, got.codes.data.len()));
    }
    if got.transformed.shape != [t, n] || got.scales.shape != [t] {
        return Err(format!("transformed {:?}, scales {:?}", got.transformed.shape, got.scales.shape));
    }
    let (xt, scales, q) = ref_a::kron_transform(&f64s(&x), &f64s(&c), &f64s(&p1), &f64s(&p2), t, n1, n2);

    let gt = f64s(&got.transformed);
    let max = ref_a::max_abs(&xt);
    let err = ref_a::max_abs_diff(&gt, &xt);
    if !(err <= 1e-5 * max) {
        return Err(format!("transformed: max|err| = {err:e}, max|x~| = {max:e}"));
    }
    let gs = f64s(&got.scales);
    let mut serr: f64 = 0.0;
    for (i, (&g, &w)) in gs.iter().zip(&scales).enumerate() {
        let e = if w == 0.0 { g.abs() } else { (g - w).abs() / w };
        if !(e <= 1e-5) {
            return Err(format!("scale[{i}] = {g}, expected {w}"));
        }
        serr = serr.max(e);
    }
    let codes = got.codes.to_i64_vec();
    let mut ties = 0;
    for (i, (&g, &v)) in codes.iter().zip(&q).enumerate() {
        let want = ref_a::int4_code(v);
        if g != want {
            if ref_a::dist_to_tie(v) < 1e-3 && (g - want).abs() == 1 {
                ties += 1;
            } else {
                return Err(format!("code[{i}] = {g}, expected {want} (x~/scale = {v})"));
            }
        }
    }
    Ok((err / max.max(1e-30), serr, ties))
}

fn check_gemm(seed: u64, m: usize, n: usize, k: usize, with_bias: bool) -> Result<f64, String> {
    let mut rng = Rng::new(seed);
    let a: Vec<i32> = (0..m * k).map(|_| rng.int(-8, 7) as i32).collect();
    let w: Vec<i32> = (0..n * k).map(|_| rng.int(-8, 7) as i32).collect();
    let sa: Vec<f32> = (0..m).map(|_| (0.01 + rng.uniform()) as f32).collect();
    let sw: Vec<f32> = (0..n).map(|_| (0.01 + rng.uniform()) as f32).collect();
    let bias: Vec<f32> = rng.normals(n, 1.0);
    let at = Tensor::from_i32(DType::I4, &[m, k], &a);
    let wt = Tensor::from_i32(DType::I4, &[n, k], &w);
    let sat = Tensor::from_f32(DType::F32, &[m], &sa);
    let swt = Tensor::from_f32(DType::F32, &[n], &sw);
    let bt = Tensor::from_f32(DType::F32, &[n], &bias);
    let y = int4_gemm(ops(), &at, &sat, &wt, &swt, with_bias.then_some(&bt)).map_err(|e| e.to_string())?;
    if y.dtype != DType::F32 || y.shape != [m, n] {
        return Err(format!("y is {}{:?}", y.dtype, y.shape));
    }
    let i64s = |v: &[i32]| v.iter().map(|&x| x as i64).collect::<Vec<_>>();
    let want = ref_a::int4_gemm(&i64s(&a), &f64s(&sat), &i64s(&w), &f64s(&swt), with_bias.then(|| f64s(&bt)).as_deref(), m, n, k);
    let got = f64s(&y);
    let max = ref_a::max_abs(&want);
    let err = ref_a::max_abs_diff(&got, &want);
    if !(err <= 1e-5 * max.max(1e-30)) {
        return Err(format!("max|y - ref| = {err:e}, max|ref| = {max:e}"));
    }
    Ok(err / max.max(1e-30))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: ref_a::proptest_cases(24), max_shrink_iters: 64, ..ProptestConfig::default() })]

    #[test]
    fn kron_quant_matches_reference(seed in any::<u64>(), t in 1usize..=5, n1 in 1usize..=12, n2 in 1usize..=12, zero in any::<bool>()) {
        let z = zero.then_some(t - 1);
        if let Err(m) = check_kron(seed, t, n1, n2, z) {
            return Err(TestCaseError::fail(format!("T={t} n1={n1} n2={n2} zero={z:?}: {m}")));
        }
    }

    #[test]
    fn int4_gemm_matches_reference(seed in any::<u64>(), m in 1usize..=40, n in 1usize..=40, k in 1usize..=100, bias in any::<bool>()) {
        if let Err(msg) = check_gemm(seed, m, n, k, bias) {
            return Err(TestCaseError::fail(format!("M={m} N={n} K={k} bias={bias}: {msg}")));
        }
    }
}

fn report(name: &str, r: Result<(f64, f64, usize), String>) {
    match r {
        Ok((e, s, ties)) => eprintln!("{name}: transformed err {e:.2e}·max, scale err {s:.2e}, tie codes off by one: {ties}"),
        Err(m) => panic!("{name}: {m}"),
    }
}

// Shapes of the public and hidden fixture sets.
#[test]
fn fixture_shapes() {
    report("64x64", check_kron(1, 4, 64, 64, None));
    report("64x80", check_kron(2, 3, 64, 80, None));
    report("86x128", check_kron(3, 2, 86, 128, None));
    report("16x16", check_kron(4, 3, 16, 16, Some(1)));
}

#[test]
fn zero_token_gets_zero_scale_and_codes() {
    let [mut x, c, p1, p2] = kron_inputs(9, 2, 3, 4, Some(0));
    let got = kron_quant(ops(), &x, &c, &p1, &p2).unwrap();
    assert_eq!(got.scales.to_f32_vec()[0], 0.0);
    assert!(got.codes.to_i64_vec()[..12].iter().all(|&v| v == 0));
    assert!(got.transformed.to_f32_vec()[..12].iter().all(|&v| v == 0.0));
    // the identity transform with c = 1 quantizes x itself: amax → ±7
    x = Tensor::from_f32(DType::F32, &[1, 4], &[0.5, -1.0, 3.5, -3.5]);
    let eye = Tensor::from_f32(DType::F32, &[2, 2], &[1.0, 0.0, 0.0, 1.0]);
    let ones = Tensor::from_f32(DType::F32, &[4], &[1.0; 4]);
    let got = kron_quant(ops(), &x, &ones, &eye, &eye).unwrap();
    assert_eq!(got.scales.to_f32_vec(), vec![0.5]);
    assert_eq!(got.codes.to_i64_vec(), vec![1, -2, 7, -7]);
    assert_eq!(got.codes.data, vec![0xE1, 0x97]); // element 2j in the low nibble
}

#[test]
fn gemm_edges() {
    for (m, n, k) in [(1, 1, 1), (1, 7, 33), (17, 1, 2), (65, 66, 129)] {
        let e = check_gemm((m * n * k) as u64, m, n, k, true).unwrap();
        eprintln!("int4_gemm {m}x{n}x{k}: err {e:.2e}·max");
    }
}

#[test]
fn shape_errors_are_precise() {
    let f = |s: &[usize]| Tensor::zeros(DType::F32, s);
    let msg = |r: Result<opc_ops::kron_quant::KronQuantOut, OpError>| match r {
        Err(OpError::Shape { op, msg }) => format!("{op}: {msg}"),
        other => panic!("expected a shape error, got {other:?}"),
    };
    let m = msg(kron_quant(ops(), &f(&[2, 12]), &f(&[12]), &f(&[3, 3]), &f(&[5, 5])));
    assert!(m.contains("12 channels") && m.contains("n1·n2 = 15"), "{m}");
    let m = msg(kron_quant(ops(), &f(&[2, 12]), &f(&[11]), &f(&[3, 3]), &f(&[4, 4])));
    assert!(m.contains("`c` has shape [11], expected [n=12]"), "{m}");
    let m = msg(kron_quant(ops(), &f(&[2, 12]), &f(&[12]), &f(&[3, 4]), &f(&[4, 4])));
    assert!(m.contains("`p1` must be a non-empty square matrix"), "{m}");
    let i4 = |s: &[usize]| Tensor::zeros(DType::I4, s);
    match int4_gemm(ops(), &i4(&[4, 16]), &f(&[4]), &i4(&[8, 15]), &f(&[8]), None) {
        Err(OpError::Shape { msg, .. }) => assert!(msg.contains("expected [N, K=16]"), "{msg}"),
        other => panic!("{other:?}"),
    }
    match int4_gemm(ops(), &i4(&[4, 16]), &f(&[4]), &i4(&[8, 16]), &f(&[8]), Some(&f(&[4]))) {
        Err(OpError::Shape { msg, .. }) => assert!(msg.contains("`bias` has shape [4], expected [N=8]"), "{msg}"),
        other => panic!("{other:?}"),
    }
}
