//! MXFP4 quantize / dequantize / GEMM / GEMV against the reference quantizer in `ref_a`
//! (OCP MX v1.0 FLOOR rule as torchao `to_mx`, written independently of opc's numerics).
//!
//! Tolerances: codes and scales bit-exact; dequantized values exact (a code times a power of two);
//! GEMM / GEMV ≤ 1e-5 · max|y_ref| (f32 accumulation vs f64).

use opc_ir::{DType, Tensor};
use opc_ops::mxfp4::{dequantize, gemm, quantize, Mxfp4};
use opc_ops::{OpError, Ops};
use opc_tests::ref_a::{self, Rng};
use proptest::prelude::*;
use std::sync::OnceLock;

fn ops() -> &'static Ops {
    static OPS: OnceLock<Ops> = OnceLock::new();
    OPS.get_or_init(|| Ops::new(opc_codegen::target_by_name("interp").unwrap()))
}

/// One block of 32 values of a random kind: plain normals at a random magnitude, zeros, RNE ties,
/// a ramp past 6·2^k, f32 subnormals, mixed magnitudes (small elements flush to ±0), NaN, ±Inf.
fn block(rng: &mut Rng, kind: u32) -> Vec<f32> {
    let e = rng.int(-40, 40) as i32;
    let p = 2f32.powi(e);
    match kind {
        0 | 1 | 2 => rng.normals(32, 1.0).into_iter().map(|v| v * p).collect(),
        3 => vec![0.0; 32],
        4 => {
            let ties = [0.25, 0.75, 2.5, 3.5, 5.0, -0.25, -2.5, -5.0, 1.25, 1.75, -0.75, -3.5];
            (0..32).map(|i| if i < ties.len() { ties[i] } else { 1.0 } * p).collect()
        }
        5 => (0..32).map(|i| (-7.9 + 15.8 * i as f32 / 31.0) * p).collect(),
        6 => (0..32).map(|_| (rng.normal() * 1e-40) as f32).collect(),
        7 => (0..32).map(|i| rng.normal() as f32 * if i % 5 == 0 { 100.0 } else { 0.01 } * p).collect(),
        8 => {
            let mut b = rng.normals(32, 1.0);
            b[rng.int(0, 31) as usize] = f32::NAN;
            b
        }
        _ => {
            let mut b = rng.normals(32, 1.0);
            b[rng.int(0, 31) as usize] = if rng.uniform() < 0.5 { f32::INFINITY } else { f32::NEG_INFINITY };
            b
        }
    }
}

fn data(seed: u64, r: usize, k: usize, specials: bool) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let kinds = if specials { 10 } else { 8 };
    let mut x = vec![0.0; r * k];
    for row in 0..r {
        for b in 0..k / 32 {
            let kind = rng.int(0, kinds - 1) as u32;
            x[row * k + b * 32..][..32].copy_from_slice(&block(&mut rng, kind));
        }
    }
    x
}

/// Quantize with the kernel and the reference; compare bit-exactly. Returns the kernel's result.
fn check_quantize(x: &[f32], r: usize, k: usize) -> Result<Mxfp4, String> {
    let xt = Tensor::from_f32(DType::F32, &[r, k], x);
    let got = quantize(ops(), &xt).map_err(|e| e.to_string())?;
    if got.codes.dtype != DType::E2M1 || got.codes.shape != [r, k] || got.codes.data.len() != r * k / 2 {
        return Err(format!("codes are {}{:?}", got.codes.dtype, got.codes.shape));
    }
    if got.scales.dtype != DType::E8M0 || got.scales.shape != [r, k / 32] {
        return Err(format!("scales are {}{:?}", got.scales.dtype, got.scales.shape));
    }
    let (codes, scales) = ref_a::mxfp4_quantize(x, r, k);
    for (i, &s) in scales.iter().enumerate() {
        let g = got.scales.get_raw(i) as u8;
        if g != s {
            let blk = &x[(i / (k / 32)) * k + (i % (k / 32)) * 32..][..32];
            return Err(format!("scale[{i}] = {g}, expected {s}; block {blk:?}"));
        }
    }
    for (i, c) in codes.iter().enumerate() {
        let g = got.codes.get_raw(i) as u8;
        if let Some(c) = *c {
            if g != c {
                return Err(format!("code[{i}] = {g:#x}, expected {c:#x} (x = {:e}, scale byte {})", x[i], scales[(i / k) * (k / 32) + (i % k) / 32]));
            }
        }
    }
    Ok(got)
}

fn check_dequantize(w: &Mxfp4) -> Result<(), String> {
    let (r, k) = (w.codes.shape[0], w.codes.shape[1]);
    let got = dequantize(ops(), w).map_err(|e| e.to_string())?;
    if got.dtype != DType::F32 || got.shape != [r, k] {
        return Err(format!("dequantized is {}{:?}", got.dtype, got.shape));
    }
    let codes: Vec<u8> = (0..r * k).map(|i| w.codes.get_raw(i) as u8).collect();
    let scales: Vec<u8> = (0..r * k / 32).map(|i| w.scales.get_raw(i) as u8).collect();
    let want = ref_a::mxfp4_dequantize(&codes, &scales, r, k);
    for (i, (g, w)) in got.to_f32_vec().into_iter().zip(want).enumerate() {
        // the f32 result of an exact product: overflows to ±inf past f32::MAX (6 · 2^127)
        let w = w as f32;
        let ok = if w.is_nan() { g.is_nan() } else { g.to_bits() == w.to_bits() };
        if !ok {
            return Err(format!("dequant[{i}] = {g:e}, expected {w:e} (code {:#x}, scale {})", codes[i], scales[(i / k) * (k / 32) + (i % k) / 32]));
        }
    }
    Ok(())
}

fn random_weight(rng: &mut Rng, n: usize, k: usize) -> Mxfp4 {
    let codes: Vec<i32> = (0..n * k).map(|_| rng.int(0, 15) as i32).collect();
    let scales: Vec<i32> = (0..n * k / 32).map(|_| rng.int(118, 134) as i32).collect();
    Mxfp4 { codes: Tensor::from_i32(DType::E2M1, &[n, k], &codes), scales: Tensor::from_i32(DType::E8M0, &[n, k / 32], &scales) }
}

fn check_gemm(seed: u64, m: usize, n: usize, k: usize, dtype: DType) -> Result<f64, String> {
    let mut rng = Rng::new(seed);
    let w = random_weight(&mut rng, n, k);
    let x = Tensor::from_f32(dtype, &[m, k], &rng.normals(m * k, 1.0));
    let y = gemm(ops(), &x, &w).map_err(|e| e.to_string())?;
    if y.dtype != DType::F32 || y.shape != [m, n] {
        return Err(format!("y is {}{:?}", y.dtype, y.shape));
    }
    let codes: Vec<u8> = (0..n * k).map(|i| w.codes.get_raw(i) as u8).collect();
    let scales: Vec<u8> = (0..n * k / 32).map(|i| w.scales.get_raw(i) as u8).collect();
    let xs: Vec<f64> = x.to_f32_vec().into_iter().map(|v| v as f64).collect();
    let want = ref_a::mxfp4_gemm(&xs, &codes, &scales, m, n, k);
    let got: Vec<f64> = y.to_f32_vec().into_iter().map(|v| v as f64).collect();
    let max = ref_a::max_abs(&want);
    let err = ref_a::max_abs_diff(&got, &want);
    if !(err <= 1e-5 * max.max(1e-30)) {
        return Err(format!("max|y - ref| = {err:e}, max|ref| = {max:e}"));
    }
    Ok(err / max.max(1e-30))
}

fn k_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![Just(32usize), Just(64), Just(96)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: ref_a::proptest_cases(24), max_shrink_iters: 64, ..ProptestConfig::default() })]

    #[test]
    fn quantize_is_bit_exact(seed in any::<u64>(), r in 1usize..=5, k in k_strategy()) {
        let x = data(seed, r, k, true);
        let w = check_quantize(&x, r, k).map_err(|m| TestCaseError::fail(format!("R={r} K={k}: {m}")))?;
        check_dequantize(&w).map_err(|m| TestCaseError::fail(format!("R={r} K={k}: {m}")))?;
    }

    #[test]
    fn dequantize_any_codes(seed in any::<u64>(), r in 1usize..=5, k in k_strategy()) {
        let mut rng = Rng::new(seed);
        let codes: Vec<i32> = (0..r * k).map(|_| rng.int(0, 15) as i32).collect();
        let scales: Vec<i32> = (0..r * k / 32).map(|_| [0, 1, 126, 127, 128, 254, 255][rng.int(0, 6) as usize]).collect();
        let w = Mxfp4 { codes: Tensor::from_i32(DType::E2M1, &[r, k], &codes), scales: Tensor::from_i32(DType::E8M0, &[r, k / 32], &scales) };
        check_dequantize(&w).map_err(|m| TestCaseError::fail(format!("R={r} K={k}: {m}")))?;
    }

    #[test]
    fn gemm_matches_reference(seed in any::<u64>(), m in 1usize..=5, n in 1usize..=40, k in k_strategy(), bf16 in any::<bool>()) {
        let dt = if bf16 { DType::BF16 } else { DType::F32 };
        check_gemm(seed, m, n, k, dt).map_err(|e| TestCaseError::fail(format!("M={m} N={n} K={k} {dt}: {e}")))?;
    }
}

/// The hand-made edge rows of the fixture set, with their torchao results spelled out.
#[test]
fn edge_rows() {
    let k = 32;
    let mut x = vec![0.0f32; 4 * k];
    x[32..40].copy_from_slice(&[0.25, 0.75, 2.5, 3.5, 5.0, -0.25, -2.5, -5.0]);
    x[40..64].fill(1.0);
    for i in 0..32 {
        x[64 + i] = -7.9 + 15.8 * i as f32 / 31.0;
    }
    x[96..128].fill(1e-30);
    let w = check_quantize(&x, 4, k).unwrap();
    let scales: Vec<u32> = (0..4).map(|i| w.scales.get_raw(i)).collect();
    assert_eq!(scales, vec![0, 127, 127, 25]);
    let codes: Vec<u32> = (0..4 * k).map(|i| w.codes.get_raw(i)).collect();
    assert!(codes[..32].iter().all(|&c| c == 0));
    assert_eq!(codes[32..41], [0, 2, 4, 6, 6, 8, 12, 14, 2]); // ties to even; −0.25 → −0
    assert_eq!((codes[64], codes[95]), (15, 7)); // ±7.9 saturates to ±6
    assert!(codes[96..128].iter().all(|&c| c == 7)); // 1e-30 / 2^-102 ≈ 5.07 → 6
    check_dequantize(&w).unwrap();
}

#[test]
fn nan_and_inf_blocks_get_scale_ff() {
    let mut x = vec![1.0f32; 96];
    x[3] = f32::NAN;
    x[40] = f32::INFINITY;
    x[90] = f32::NEG_INFINITY;
    let w = check_quantize(&x, 1, 96).unwrap();
    assert_eq!((0..3).map(|i| w.scales.get_raw(i)).collect::<Vec<_>>(), vec![255, 255, 255]);
    let d = dequantize(ops(), &w).unwrap().to_f32_vec();
    assert!(d.iter().all(|v| v.is_nan()));
}

#[test]
fn subnormal_and_tiny_blocks() {
    // amax subnormal (exponent field 0) and amax just above / below 2^-125: all give e = 0
    let mut x = vec![0.0f32; 128];
    x[0] = f32::from_bits(1); // smallest subnormal
    x[1] = -f32::from_bits(0x0040_0000); // 2^-127
    x[32] = 2f32.powi(-125);
    x[33] = 2f32.powi(-126) * 1.5;
    x[64] = 2f32.powi(-124); // e = 1
    x[65] = -2f32.powi(-127);
    x[96] = f32::MAX; // e = 252
    x[97] = 1.0;
    let w = check_quantize(&x, 1, 128).unwrap();
    assert_eq!((0..4).map(|i| w.scales.get_raw(i)).collect::<Vec<_>>(), vec![0, 0, 1, 252]);
    check_dequantize(&w).unwrap();
}

#[test]
fn fixture_shapes_gemm_and_gemv() {
    for (m, n, k) in [(1, 7, 96), (1, 130, 128), (3, 33, 96), (37, 70, 64)] {
        for dt in [DType::F32, DType::BF16] {
            let e = check_gemm((m + n + k) as u64, m, n, k, dt).unwrap();
            eprintln!("mxfp4 gemm {m}x{n}x{k} {dt}: err {e:.2e}·max");
        }
    }
    let x = data(77, 7, 96, false);
    check_quantize(&x, 7, 96).unwrap();
}

#[test]
fn shape_errors_are_precise() {
    let m = match quantize(ops(), &Tensor::zeros(DType::F32, &[2, 48])) {
        Err(OpError::Shape { msg, .. }) => msg,
        other => panic!("{other:?}"),
    };
    assert!(m.contains("K = 48") && m.contains("multiple of the block size 32"), "{m}");
    let w = Mxfp4 { codes: Tensor::zeros(DType::E2M1, &[4, 64]), scales: Tensor::zeros(DType::E8M0, &[4, 3]) };
    let m = match dequantize(ops(), &w) {
        Err(OpError::Shape { msg, .. }) => msg,
        other => panic!("{other:?}"),
    };
    assert!(m.contains("`w.scales` has shape [4, 3], expected [R=4, K/32=2]"), "{m}");
    let w = Mxfp4 { codes: Tensor::zeros(DType::E2M1, &[4, 64]), scales: Tensor::zeros(DType::E8M0, &[4, 2]) };
    let m = match gemm(ops(), &Tensor::zeros(DType::F32, &[2, 32]), &w) {
        Err(OpError::Shape { msg, .. }) => msg,
        other => panic!("{other:?}"),
    };
    assert!(m.contains("`x` has K = 32"), "{m}");
    let m = match gemm(ops(), &Tensor::zeros(DType::F16, &[2, 64]), &w) {
        Err(OpError::Shape { msg, .. }) => msg,
        other => panic!("{other:?}"),
    };
    assert!(m.contains("`x` has dtype f16"), "{m}");
}
