//! kl_judge against the naive f64 JuDi reference: KL per position, accept flags, accepted prefix
//! and emitted tokens, for any vocabulary size (ragged vocab tiles) and draft length.

use opc_ir::{DType, Tensor};
use opc_ops::kl_judge::{kl_judge, JudgeOut};
use opc_ops::Ops;
use opc_tests::ref_b::{self, JudgeRef, Rng};
use proptest::prelude::*;
use std::sync::OnceLock;

fn ops() -> &'static Ops {
    static OPS: OnceLock<Ops> = OnceLock::new();
    OPS.get_or_init(|| Ops::new(opc_codegen::target_by_name("interp").unwrap()))
}

struct Case {
    gamma: usize,
    v: usize,
    target: Vec<f32>,
    draft: Vec<f32>,
    tokens: Vec<i32>,
}

impl Case {
    /// Target logits 3·N(0,1); draft = target + drift_t·N(0,1) with drift growing along the draft
    /// (as in the fixture generator); tokens mostly the draft's argmax, sometimes random.
    fn random(gamma: usize, v: usize, seed: u64) -> Case {
        let mut rng = Rng::new(seed);
        let target = rng.normals((gamma + 1) * v, 3.0);
        let mut draft = vec![0.0f32; gamma * v];
        let mut tokens = vec![0i32; gamma];
        for t in 0..gamma {
            let drift = 0.05 + 2.0 * t as f64 / gamma.max(2) as f64 * rng.uniform();
            for c in 0..v {
                draft[t * v + c] = (target[t * v + c] as f64 + drift * rng.normal()) as f32;
            }
            tokens[t] = if rng.uniform() < 0.8 { ref_b::argmax(&draft[t * v..(t + 1) * v]) as i32 } else { rng.below(v) as i32 };
        }
        Case { gamma, v, target, draft, tokens }
    }

    fn run(&self, tau: f32) -> JudgeOut {
        kl_judge(
            ops(),
            &Tensor::from_f32(DType::F32, &[self.gamma + 1, self.v], &self.target),
            &Tensor::from_f32(DType::F32, &[self.gamma, self.v], &self.draft),
            &Tensor::from_i32(DType::I32, &[self.gamma], &self.tokens),
            tau,
        )
        .unwrap()
    }

    fn reference(&self, tau: f32) -> JudgeRef {
        ref_b::kl_judge(&self.target, &self.draft, &self.tokens, self.gamma, self.v, tau as f64)
    }

    /// No accept decision within rounding distance of a threshold.
    fn decisive(&self, want: &JudgeRef, tau: f32) -> bool {
        (0..self.gamma).all(|t| (want.kl[t] - tau as f64).abs() > 1e-4 && (want.conf[t] - 0.9).abs() > 1e-5)
    }
}

fn check(got: &JudgeOut, want: &JudgeRef) -> Result<(), TestCaseError> {
    let kl = got.kl.to_f32_vec();
    prop_assert_eq!(kl.len(), want.kl.len());
    for (t, (a, b)) in kl.iter().zip(&want.kl).enumerate() {
        prop_assert!((*a as f64 - b).abs() <= 1e-5 * b.abs() + 1e-6, "KL[{}] = {} vs {}", t, a, b);
    }
    let acc: Vec<u8> = got.accept.to_i64_vec().iter().map(|&v| v as u8).collect();
    prop_assert_eq!(&acc, &want.accept, "accept");
    prop_assert_eq!(got.accepted, want.accepted, "accepted");
    prop_assert_eq!(&got.emitted, &want.emitted, "emitted");
    Ok(())
}

/// 16 cases per property (seconds for the suite); `PROPTEST_CASES=N` for a longer soak.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(16)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_local_rejects: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn judge_matches_reference(gamma in 1usize..=12, v in 1usize..=300, tau in 0.1f32..1.4, seed in any::<u64>()) {
        let c = Case::random(gamma, v, seed);
        let want = c.reference(tau);
        prop_assume!(c.decisive(&want, tau));
        check(&c.run(tau), &want)?;
    }
}

/// Fixture-like shapes: γ = 8, V = 1000 (public) and the hidden γ = 1, V = 7 and V = 50257.
#[test]
fn fixture_like_shapes() {
    for (gamma, v, tau, seed) in [(8, 1000, 0.5, 1), (1, 7, 1.4, 2), (5, 50257, 0.3, 3)] {
        let c = Case::random(gamma, v, seed);
        let want = c.reference(tau);
        assert!(c.decisive(&want, tau));
        check(&c.run(tau), &want).unwrap();
    }
}

/// Identical distributions have KL exactly 0; a constant logit shift leaves the softmax (and KL)
/// unchanged, so the accurate log1p path must not leak the logsumexp difference.
#[test]
fn kl_zero_and_shift_invariance() {
    let mut c = Case::random(4, 257, 9);
    c.draft = c.target[..4 * 257].to_vec();
    let got = c.run(0.5);
    assert!(got.kl.to_f32_vec().iter().all(|&k| k == 0.0), "{:?}", got.kl.to_f32_vec());
    for shift in [0.75f32, 5.0, -3.0, 120.0] {
        c.draft = c.target[..4 * 257].iter().map(|z| z + shift).collect();
        let kl = c.run(0.5).kl.to_f32_vec();
        assert!(kl.iter().all(|k| k.abs() <= 2e-6), "shift {shift}: {kl:?}");
    }
}

/// Rejection at t = 0 emits only the target's argmax; all accepted emits γ drafts and the bonus.
#[test]
fn prefix_extremes() {
    let mut c = Case::random(6, 50, 4);
    for t in 0..6 {
        c.tokens[t] = ref_b::argmax(&c.target[t * 50..(t + 1) * 50]) as i32;
    }
    let got = c.run(0.0);
    assert_eq!(got.accepted, 6);
    assert_eq!(got.emitted.len(), 7);
    assert_eq!(got.emitted, c.reference(0.0).emitted);
    c.tokens[0] = (c.tokens[0] + 1) % 50;
    let got = c.run(0.0);
    assert_eq!(got.accepted, 0);
    assert_eq!(got.emitted, vec![ref_b::argmax(&c.target[..50]) as i32]);
}

#[test]
fn shape_errors_are_precise() {
    let f = |shape: &[usize]| Tensor::zeros(DType::F32, shape);
    let toks = Tensor::zeros(DType::I32, &[3]);
    let err = kl_judge(ops(), &f(&[3, 10]), &f(&[3, 10]), &toks, 0.5).unwrap_err().to_string();
    assert!(err.contains("[4, 10]"), "{err}");
    let err = kl_judge(ops(), &f(&[4, 10]), &f(&[3, 10]), &Tensor::zeros(DType::I32, &[2]), 0.5).unwrap_err().to_string();
    assert!(err.contains("draft_tokens") && err.contains("[3]"), "{err}");
}

/// γ = 0: nothing to judge, the target's first row still yields one token.
#[test]
fn empty_draft() {
    let c = Case::random(0, 33, 6);
    let got = c.run(0.5);
    assert_eq!((got.accepted, got.kl.numel(), got.accept.numel()), (0, 0, 0));
    assert_eq!(got.emitted, vec![ref_b::argmax(&c.target[..33]) as i32]);
}
