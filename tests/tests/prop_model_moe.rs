//! The runtime's MoE driver with experts in their storage dtype (`moe_w`: bf16 experts read in
//! place by `moe_w_up` / `moe_w_down` and their `_rows` decode forms) against the library's
//! `moe_forward` run on the same weights widened to f32 (the interpreter: the oracle), on random
//! ragged shapes that take both forms (up to 8 tokens: per-row GEMVs; more: grouped GEMMs),
//! top-k with and without renormalization and MoGE routing; on the interpreter and, when built
//! in, the llvm target.
//!
//! Tolerance: both compute the f32 product of the same stored weights; only the summation order
//! differs, so max |y − y_ref| ≤ 1e-5 · (1 + max |y_ref|).

use opc_ir::{DType, Tensor};
use opc_ops::moe::{moe_forward, Routing};
use opc_ops::moe_w::moe_w;
use opc_ops::Ops;
use opc_tests::ref_a::{self, Rng};
use proptest::prelude::*;
use std::sync::OnceLock;

fn targets() -> &'static [(&'static str, Ops)] {
    static T: OnceLock<Vec<(&'static str, Ops)>> = OnceLock::new();
    T.get_or_init(|| ["interp", "llvm"].into_iter().filter_map(|n| opc_codegen::target_by_name(n).ok().map(|t| (n, Ops::new(t)))).collect())
}

/// A bf16 tensor of normals and the same values in f32.
fn bf16_pair(rng: &mut Rng, shape: &[usize], std: f64) -> (Tensor, Tensor) {
    let b = Tensor::from_f32(DType::BF16, shape, &rng.normals(shape.iter().product(), std));
    let f = Tensor::from_f32(DType::F32, shape, &b.to_f32_vec());
    (b, f)
}

#[derive(Clone, Debug)]
struct Case {
    t: usize,
    h: usize,
    i: usize,
    e: usize,
    /// 0: top-k renormalized, 1: top-k not renormalized, 2: MoGE
    rule: u8,
    k: usize,
    seed: u64,
}

fn run(c: &Case) -> Result<(), String> {
    let mut rng = Rng::new(c.seed);
    let x = Tensor::from_f32(DType::F32, &[c.t, c.h], &rng.normals(c.t * c.h, 1.0));
    let gate = Tensor::from_f32(DType::F32, &[c.e, c.h], &rng.normals(c.e * c.h, 0.5));
    let (w1, w1f) = bf16_pair(&mut rng, &[c.e, c.i, c.h], 1.0 / (c.h as f64).sqrt());
    let (w3, w3f) = bf16_pair(&mut rng, &[c.e, c.i, c.h], 1.0 / (c.h as f64).sqrt());
    let (w2, w2f) = bf16_pair(&mut rng, &[c.e, c.h, c.i], 1.0 / (c.i as f64).sqrt());
    let routing = match c.rule {
        0 => Routing::TopK { k: c.k },
        1 => Routing::TopKUnnormalized { k: c.k },
        _ => Routing::MoGE { groups: c.k, router_scale: Tensor::from_f32(DType::F32, &[c.e], &rng.normals(c.e, 1.0)) },
    };
    let oracle = &targets()[0].1;
    let want = moe_forward(oracle, &x, &gate, &w1f, &w3f, &w2f, &routing).map_err(|e| e.to_string())?.out.to_f32_vec();
    let want: Vec<f64> = want.into_iter().map(f64::from).collect();
    let tol = 1e-5 * (1.0 + ref_a::max_abs(&want));
    for (name, ops) in targets() {
        let got = moe_w(ops, &x, &gate, &w1, &w3, &w2, &routing).map_err(|e| format!("{name}: {e}"))?;
        if got.shape != [c.t, c.h] {
            return Err(format!("{name}: shape {:?}", got.shape));
        }
        let got: Vec<f64> = got.to_f32_vec().into_iter().map(f64::from).collect();
        let err = ref_a::max_abs_diff(&got, &want);
        if err > tol {
            return Err(format!("{name}: max |y - y_ref| = {err:e} > {tol:e} for {c:?}"));
        }
    }
    Ok(())
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..14, 1usize..70, 1usize..40, prop::sample::select(vec![2usize, 4, 6, 8]), 0u8..3, any::<u64>()).prop_flat_map(|(t, h, i, e, rule, seed)| {
        // MoGE: k groups dividing E
        let ks: Vec<usize> = if rule == 2 { (1..=e).filter(|g| e % g == 0).collect() } else { (1..=e).collect() };
        prop::sample::select(ks).prop_map(move |k| Case { t, h, i, e, rule, k, seed })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(ref_a::proptest_cases(24)))]
    #[test]
    fn moe_w_matches_moe_forward_on_widened_weights(c in case()) {
        run(&c).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn decode_and_prefill_shapes() {
    for t in [1, 8, 9, 33] {
        run(&Case { t, h: 96, i: 80, e: 8, rule: 0, k: 2, seed: t as u64 }).unwrap();
    }
}

#[test]
fn mismatched_experts_are_an_error() {
    let ops = &targets()[0].1;
    let x = Tensor::zeros(DType::F32, &[1, 8]);
    let gate = Tensor::zeros(DType::F32, &[4, 8]);
    let w = Tensor::zeros(DType::BF16, &[4, 6, 8]);
    let w2 = Tensor::zeros(DType::F32, &[4, 8, 6]);
    let e = moe_w(ops, &x, &gate, &w, &w, &w2, &Routing::TopK { k: 2 }).unwrap_err().to_string();
    assert_eq!(
        e,
        "moe_w: gate [4, 8], w1 bf16[4, 6, 8], w3 bf16[4, 6, 8], w2 f32[4, 8, 6] do not fit x [1, 8]: expected [E, H], [E, I, H] twice and [E, H, I] of one dtype"
    );
}
