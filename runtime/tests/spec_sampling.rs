//! Lossless speculative sampling, checked statistically: over many seeded verification steps on
//! tiny fixed distributions, the emitted tokens are distributed as the target's p (chi-square
//! bound), not as the draft's q, and the first draft is accepted with probability Σ min(p, q).

use opc_ir::{DType, Tensor};
use opc_runtime::model::generate::{verify_sampled, Rng};

const V: usize = 6;
const TEMP: f32 = 0.7;

fn probs(logits: &[f32]) -> Vec<f64> {
    let z: Vec<f64> = logits.iter().map(|&l| l as f64 / TEMP as f64).collect();
    let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|x| (x - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

fn draw(p: &[f64], u: f64) -> u32 {
    let mut c = 0.0;
    for (i, &x) in p.iter().enumerate() {
        c += x;
        if u < c {
            return i as u32;
        }
    }
    (p.len() - 1) as u32
}

/// Pearson chi-square of `counts` against probabilities `p`.
fn chi2(counts: &[usize], p: &[f64]) -> f64 {
    let n: usize = counts.iter().sum();
    counts.iter().zip(p).map(|(&c, &q)| (c as f64 - n as f64 * q).powi(2) / (n as f64 * q)).sum()
}

/// 99.9% quantile of chi-square with 5 degrees of freedom (V − 1).
const CHI2_5_999: f64 = 20.52;

#[test]
fn emitted_tokens_follow_the_target_distribution() {
    let ops = opc_ops::Ops::new(opc_codegen::target_by_name("cpu").unwrap());
    let target: [[f32; V]; 3] = [[2.0, 1.0, 0.5, 0.0, -1.0, 1.5], [0.0, 0.3, 1.2, -0.4, 0.8, 0.1], [1.0, -1.0, 0.0, 0.5, 0.2, 0.9]];
    let draft: [[f32; V]; 2] = [[0.5, 1.5, 0.5, 1.0, 0.0, -0.5], [0.9, 0.3, 0.2, 0.6, -0.5, 0.4]];
    let tl = Tensor::from_f32(DType::F32, &[3, V], &target.concat());
    let dl = Tensor::from_f32(DType::F32, &[2, V], &draft.concat());
    let (p, q): (Vec<Vec<f64>>, Vec<Vec<f64>>) = (target.iter().map(|r| probs(r)).collect(), draft.iter().map(|r| probs(r)).collect());

    let trials = 4000;
    let mut host = Rng::new(99); // draws the draft tokens from q
    let mut rng = Rng::new(7); // the verifier's uniforms
    let (mut first, mut second, mut bonus, mut drafted) = ([0usize; V], [0usize; V], [0usize; V], [0usize; V]);
    let mut accepted_first = 0;
    for _ in 0..trials {
        let d = [draw(&q[0], host.uniform() as f64), draw(&q[1], host.uniform() as f64)];
        drafted[d[0] as usize] += 1;
        let (n, emitted) = verify_sampled(&ops, &tl, &dl, &d, TEMP, &mut rng).unwrap();
        assert_eq!(emitted.len(), n + 1);
        assert_eq!(&emitted[..n], &d[..n], "accepted tokens are the drafts");
        first[emitted[0] as usize] += 1;
        if n >= 1 {
            accepted_first += 1;
            second[emitted[1] as usize] += 1;
        }
        if n == 2 {
            bonus[emitted[2] as usize] += 1;
        }
    }
    let c0 = chi2(&first, &p[0]);
    let c1 = chi2(&second, &p[1]);
    let cd = chi2(&drafted, &p[0]);
    assert!(c0 < CHI2_5_999, "first token vs p0: chi2 {c0:.1}, counts {first:?}, p0 {:?}", p[0]);
    assert!(c1 < CHI2_5_999, "second token (after an accepted first) vs p1: chi2 {c1:.1}, counts {second:?}");
    assert!(bonus.iter().sum::<usize>() > 300, "enough all-accepted steps to check the bonus token: {bonus:?}");
    let cb = chi2(&bonus, &p[2]);
    assert!(cb < CHI2_5_999, "bonus token vs p2: chi2 {cb:.1}, counts {bonus:?}");
    // the bound has power: the draft's own tokens are far from p0
    assert!(cd > 10.0 * CHI2_5_999, "the drafts are distributed as q0, not p0: chi2 {cd:.1}");
    // acceptance rate of the first draft: Σ_x min(p0(x), q0(x)), within 4 standard deviations
    let rate: f64 = p[0].iter().zip(&q[0]).map(|(a, b)| a.min(*b)).sum();
    let sd = (rate * (1.0 - rate) / trials as f64).sqrt();
    let got = accepted_first as f64 / trials as f64;
    assert!((got - rate).abs() < 4.0 * sd, "acceptance {got:.4}, expected {rate:.4} ± {sd:.4}");
}

#[test]
fn identical_distributions_accept_everything() {
    let ops = opc_ops::Ops::new(opc_codegen::target_by_name("cpu").unwrap());
    let row = [0.3f32, -0.2, 1.1, 0.0, 0.4, -0.7];
    let tl = Tensor::from_f32(DType::F32, &[2, V], &[row, row].concat());
    let dl = Tensor::from_f32(DType::F32, &[1, V], &row);
    let mut rng = Rng::new(5);
    for d in 0..V as u32 {
        let (n, e) = verify_sampled(&ops, &tl, &dl, &[d], TEMP, &mut rng).unwrap();
        assert_eq!((n, e[0]), (1, d), "p = q: every draft is accepted");
    }
}
