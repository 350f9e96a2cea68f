//! moe_forward (routing, permutation, grouped GEMMs, combine) against the naive f64 reference
//! on random shapes: ragged H / I, size-1 dims, experts with zero tokens.

use opc_ir::{DType, Tensor};
use opc_ops::moe::{moe_forward, MoeOut, Routing};
use opc_ops::{OpError, Ops};
use opc_tests::ref_b::{self, MoeRef, RefRouting, Rng};
use proptest::prelude::*;
use std::sync::OnceLock;

fn ops() -> &'static Ops {
    static OPS: OnceLock<Ops> = OnceLock::new();
    OPS.get_or_init(|| Ops::new(opc_codegen::target_by_name("interp").unwrap()))
}

struct Case {
    t: usize,
    h: usize,
    e: usize,
    i: usize,
    x: Vec<f32>,
    gate: Vec<f32>,
    w1: Vec<f32>,
    w3: Vec<f32>,
    w2: Vec<f32>,
}

impl Case {
    fn random(t: usize, h: usize, e: usize, i: usize, seed: u64) -> Case {
        let mut rng = Rng::new(seed);
        let (sh, si) = (1.0 / (h as f64).sqrt(), 1.0 / (i as f64).sqrt());
        Case {
            t,
            h,
            e,
            i,
            x: rng.normals(t * h, 1.0),
            gate: rng.normals(e * h, 0.5),
            w1: rng.normals(e * i * h, sh),
            w3: rng.normals(e * i * h, sh),
            w2: rng.normals(e * h * i, si),
        }
    }

    fn run(&self, routing: &Routing) -> Result<MoeOut, OpError> {
        let f = |shape: &[usize], v: &[f32]| Tensor::from_f32(DType::F32, shape, v);
        moe_forward(
            ops(),
            &f(&[self.t, self.h], &self.x),
            &f(&[self.e, self.h], &self.gate),
            &f(&[self.e, self.i, self.h], &self.w1),
            &f(&[self.e, self.i, self.h], &self.w3),
            &f(&[self.e, self.h, self.i], &self.w2),
            routing,
        )
    }

    fn reference(&self, routing: &RefRouting) -> MoeRef {
        ref_b::moe(&self.x, &self.gate, &self.w1, &self.w3, &self.w2, self.t, self.h, self.e, self.i, routing)
    }
}

/// The smallest gap between the k-th and (k+1)-th router probability (top-k) or between the two
/// largest inside a group (MoGE): routing is only comparable between f32 and f64 away from ties.
fn routing_margin(r: &MoeRef, t: usize, e: usize, k_or_groups: usize, moge: bool) -> f64 {
    let mut margin = f64::INFINITY;
    for ti in 0..t {
        let p = &r.probs[ti * e..(ti + 1) * e];
        let chunks: Vec<&[f64]> = if moge { p.chunks(e / k_or_groups).collect() } else { vec![p] };
        for c in chunks {
            let mut s = c.to_vec();
            s.sort_by(|a, b| b.partial_cmp(a).unwrap());
            let upto = if moge { 1 } else { k_or_groups.min(s.len() - 1) };
            for j in 0..upto.min(s.len().saturating_sub(1)) {
                margin = margin.min(s[j] - s[j + 1]);
            }
        }
    }
    margin
}

fn check(got: &MoeOut, want: &MoeRef, t: usize, h: usize, k: usize) -> Result<(), TestCaseError> {
    prop_assert_eq!(&got.expert_ids.shape, &vec![t, k]);
    prop_assert_eq!(&got.out.shape, &vec![t, h]);
    let ids: Vec<i32> = got.expert_ids.to_i64_vec().iter().map(|&v| v as i32).collect();
    prop_assert_eq!(&ids, &want.ids, "expert ids");
    let w = got.weights.to_f32_vec();
    for (a, b) in w.iter().zip(&want.weights) {
        prop_assert!((*a as f64 - b).abs() <= 1e-6, "weight {} vs {}", a, b);
    }
    let err = ref_b::rel_err_to_max(&got.out.to_f32_vec(), &want.out, 1e-6);
    prop_assert!(err <= 1e-4, "out error {:e} relative to max", err);
    Ok(())
}

const HS: [usize; 6] = [1, 8, 17, 33, 40, 64];
const IS: [usize; 5] = [1, 5, 17, 32, 48];

/// 16 cases per property (seconds for the suite); `PROPTEST_CASES=N` for a longer soak.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(16)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_local_rejects: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn topk_routing_matches_reference(t in 1usize..=40, e in 1usize..=9, kf in 0.0f64..1.0,
                                      hi in 0usize..HS.len(), ii in 0usize..IS.len(), seed in any::<u64>()) {
        let k = 1 + ((e as f64 * kf) as usize).min(e - 1);
        let c = Case::random(t, HS[hi], e, IS[ii], seed);
        let want = c.reference(&RefRouting::TopK { k });
        prop_assume!(routing_margin(&want, t, e, k, false) > 1e-5);
        let got = c.run(&Routing::TopK { k }).unwrap();
        check(&got, &want, t, c.h, k)?;
    }

    #[test]
    fn moge_routing_matches_reference(t in 1usize..=40, g in 1usize..=4, eg in 1usize..=3,
                                      hi in 0usize..HS.len(), ii in 0usize..IS.len(), seed in any::<u64>()) {
        let e = g * eg;
        let c = Case::random(t, HS[hi], e, IS[ii], seed);
        let mut rng = Rng::new(seed ^ 7);
        let rs: Vec<f32> = (0..e).map(|_| (rng.uniform() + 0.5) as f32).collect();
        let want = c.reference(&RefRouting::MoGE { groups: g, router_scale: &rs });
        prop_assume!(routing_margin(&want, t, e, g, true) > 1e-5);
        let got = c.run(&Routing::MoGE { groups: g, router_scale: Tensor::from_f32(DType::F32, &[e], &rs) }).unwrap();
        check(&got, &want, t, c.h, g)?;
    }
}

/// Hidden-fixture shapes: T = 3, E = 6, top-3 and MoGE E = 12, G = 3.
#[test]
fn fixture_like_shapes() {
    let c = Case::random(3, 32, 6, 40, 11);
    let want = c.reference(&RefRouting::TopK { k: 3 });
    check(&c.run(&Routing::TopK { k: 3 }).unwrap(), &want, 3, 32, 3).unwrap();

    let c = Case::random(50, 48, 12, 32, 12);
    let rs: Vec<f32> = (0..12).map(|j| 0.5 + j as f32 / 12.0).collect();
    let want = c.reference(&RefRouting::MoGE { groups: 3, router_scale: &rs });
    let got = c.run(&Routing::MoGE { groups: 3, router_scale: Tensor::from_f32(DType::F32, &[12], &rs) }).unwrap();
    check(&got, &want, 50, 48, 3).unwrap();
}

/// Every token prefers expert 2: all other experts get zero tokens.
#[test]
fn all_tokens_to_one_expert() {
    let mut c = Case::random(9, 17, 5, 7, 3);
    for v in c.x.iter_mut() {
        *v = v.abs() + 0.1;
    }
    for (j, g) in c.gate.iter_mut().enumerate() {
        *g = if j / c.h == 2 { 3.0 } else { 0.01 * (j % 7) as f32 };
    }
    let want = c.reference(&RefRouting::TopK { k: 1 });
    assert!(want.ids.iter().all(|&id| id == 2));
    check(&c.run(&Routing::TopK { k: 1 }).unwrap(), &want, 9, 17, 1).unwrap();
}

#[test]
fn shape_errors_are_precise() {
    let c = Case::random(4, 8, 4, 6, 1);
    let err = c.run(&Routing::TopK { k: 5 }).unwrap_err().to_string();
    assert!(err.contains("k = 5") && err.contains("1..=4"), "{err}");
    let err = c.run(&Routing::MoGE { groups: 3, router_scale: Tensor::zeros(DType::F32, &[4]) }).unwrap_err().to_string();
    assert!(err.contains("groups = 3") && err.contains("E = 4"), "{err}");
    let f = |shape: &[usize]| Tensor::zeros(DType::F32, shape);
    let err = moe_forward(ops(), &f(&[4, 8]), &f(&[4, 8]), &f(&[4, 6, 8]), &f(&[4, 6, 8]), &f(&[4, 6, 8]), &Routing::TopK { k: 2 })
        .unwrap_err()
        .to_string();
    assert!(err.contains("`w2`") && err.contains("[4, 8, 6]"), "{err}");
}

/// bf16 storage: routing and GEMMs accumulate in f32, the SiLU·mul intermediate is rounded to
/// bf16 (as the model would), so compare against the f64 reference on the bf16-rounded inputs.
#[test]
fn bf16_inputs() {
    let mut c = Case::random(7, 33, 4, 17, 21);
    let round = |v: &mut Vec<f32>| *v = Tensor::from_f32(DType::BF16, &[v.len()], v).to_f32_vec();
    for v in [&mut c.x, &mut c.gate, &mut c.w1, &mut c.w3, &mut c.w2] {
        round(v);
    }
    let want = c.reference(&RefRouting::TopK { k: 2 });
    assert!(routing_margin(&want, 7, 4, 2, false) > 1e-3);
    let b = |shape: &[usize], v: &[f32]| Tensor::from_f32(DType::BF16, shape, v);
    let got = moe_forward(ops(), &b(&[7, 33], &c.x), &b(&[4, 33], &c.gate), &b(&[4, 17, 33], &c.w1), &b(&[4, 17, 33], &c.w3), &b(&[4, 33, 17], &c.w2), &Routing::TopK { k: 2 })
        .unwrap();
    let ids: Vec<i32> = got.expert_ids.to_i64_vec().iter().map(|&v| v as i32).collect();
    assert_eq!(ids, want.ids);
    let err = ref_b::rel_err_to_max(&got.out.to_f32_vec(), &want.out, 1e-6);
    assert!(err <= 1e-2, "bf16 out error {err:e}");
}
