//! The DSL is general, not five templates: kernels written here, outside `ops/`, compile through
//! the real pipeline and match naive Rust on ragged shapes.

use opc_dsl::Instance;
use opc_ir::{Arg, DType, Tensor};
use proptest::prelude::*;

/// LayerNorm over rows of any width: two passes over H tiles (sums, then normalize).
const LAYERNORM: &str = opc_macros::kernel_source!(
    r#"
kernel layernorm(x: f32[T, H], w: f32[H], b: f32[H], y: out f32[T, H], eps: f32)
tunables {
    BT: level1 in {1, 2, 4, 8} = 4,
    BH: level2 in {8, 16, 32, 64, 128} = 16,
}
grid(cdiv(T, BT))
{
    let rows = program_id(0) * BT + arange(BT);
    var s = zeros([BT], f32);
    var ss = zeros([BT], f32);
    for h0 in 0..cdiv(H, BH) {
        let cols = h0 * BH + arange(BH);
        let v = load(x[rows, cols]);
        s = s + sum(v, 1);
        ss = ss + sum(v * v, 1);
    }
    let n = cast(H, f32);
    let mean = s / n;
    let variance = maximum(ss / n - mean * mean, 0.0);
    let inv = rsqrt(variance + eps);
    for h0 in 0..cdiv(H, BH) {
        let cols = h0 * BH + arange(BH);
        let v = load(x[rows, cols]);
        let yv = (v - mean[:, None]) * inv[:, None] * load(w[cols])[None, :] + load(b[cols])[None, :];
        store(y[rows, cols], yv);
    }
}
"#
);

/// Fused softmax + cross-entropy: an online max / sum-exp pass that also picks the label's
/// logit, then a pass writing the probabilities. Never materializes exp(z) for a whole row.
const SOFTMAX_XENT: &str = opc_macros::kernel_source!(
    r#"
kernel softmax_xent(logits: f32[T, V], labels: i32[T], probs: out f32[T, V], loss: out f32[T])
tunables {
    BT: level1 in {1, 2, 4} = 2,
    BV: level2 in {16, 32, 64, 128} = 32,
}
grid(cdiv(T, BT))
{
    let rows = program_id(0) * BT + arange(BT);
    let label = load(labels[rows]);
    var m = full([BT], -inf, f32);
    var l = zeros([BT], f32);
    var picked = zeros([BT], f32);
    for v0 in 0..cdiv(V, BV) {
        let cols = v0 * BV + arange(BV);
        let z = load(logits[rows, cols], other: -inf);
        let m_new = maximum(m, max(z, 1));
        l = l * exp(m - m_new) + sum(exp(z - m_new[:, None]), 1);
        m = m_new;
        picked = picked + sum(where(cols[None, :] == label[:, None], z, 0.0), 1);
    }
    let lse = m + log(l);
    store(loss[rows], lse - picked);
    for v0 in 0..cdiv(V, BV) {
        let cols = v0 * BV + arange(BV);
        let z = load(logits[rows, cols]);
        store(probs[rows, cols], exp(z - lse[:, None]));
    }
}
"#
);

fn run(src: &str, name: &str, inst: &Instance, args: &mut [Arg]) {
    let mut k = opc_dsl::compile("test.opc", src, name, inst).unwrap_or_else(|d| panic!("{d}"));
    opc_passes::run_pipeline(&mut k, &Default::default()).unwrap();
    let exe = opc_codegen::target_by_name("interp").unwrap().compile(&k).unwrap();
    exe.launch(args).unwrap();
}

fn values(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32 * scale
        })
        .collect()
}

fn out(args: &[Arg], i: usize) -> Vec<f32> {
    match &args[i] {
        Arg::Tensor(t) => t.to_f32_vec(),
        _ => unreachable!(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn layernorm_matches_naive(t in 1usize..12, h in 1usize..70, bh in prop::sample::select(vec![8i64, 16, 32]), seed in 0u64..1000) {
        let x = values(seed, t * h, 3.0);
        let w = values(seed + 1, h, 1.0);
        let b = values(seed + 2, h, 0.5);
        let mut args = vec![
            Arg::Tensor(Tensor::from_f32(DType::F32, &[t, h], &x)),
            Arg::Tensor(Tensor::from_f32(DType::F32, &[h], &w)),
            Arg::Tensor(Tensor::from_f32(DType::F32, &[h], &b)),
            Arg::Tensor(Tensor::zeros(DType::F32, &[t, h])),
            Arg::F32(1e-5),
        ];
        run(LAYERNORM, "layernorm", &Instance::default().tunable("BH", bh), &mut args);
        let y = out(&args, 3);
        for r in 0..t {
            let row = &x[r * h..(r + 1) * h];
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / h as f64;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / h as f64;
            // The kernel computes the variance in one f32 pass as E[x^2] - mean^2, so its
            // error grows with the row's conditioning: an f32 rounding of order
            // h * eps * E[x^2] in the variance and h * eps * max|x| in the centred value,
            // both divided by the row's spread. Well-conditioned rows keep the 1e-4 bound.
            let mean_sq = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / h as f64;
            let max_abs = row.iter().fold(0f64, |m, &v| m.max((v as f64).abs()));
            let rounding = h as f64 * f32::EPSILON as f64;
            for c in 0..h {
                let centred = (row[c] as f64 - mean) / (var + 1e-5).sqrt() * w[c] as f64;
                let want = centred + b[c] as f64;
                let conditioning = rounding
                    * (centred.abs() * mean_sq / (var + 1e-5) + max_abs / (var + 1e-5).sqrt() * (w[c] as f64).abs());
                let bound = 1e-4 * (1.0 + want.abs()) + conditioning;
                prop_assert!((y[r * h + c] as f64 - want).abs() <= bound, "row {r} col {c}: {} vs {want} (bound {bound})", y[r * h + c]);
            }
        }
    }

    #[test]
    fn softmax_xent_matches_naive(t in 1usize..9, v in 1usize..150, seed in 0u64..1000) {
        let z = values(seed, t * v, 8.0);
        let labels: Vec<i32> = (0..t).map(|i| ((seed as usize + 7 * i) % v) as i32).collect();
        let mut args = vec![
            Arg::Tensor(Tensor::from_f32(DType::F32, &[t, v], &z)),
            Arg::Tensor(Tensor::from_i32(DType::I32, &[t], &labels)),
            Arg::Tensor(Tensor::zeros(DType::F32, &[t, v])),
            Arg::Tensor(Tensor::zeros(DType::F32, &[t])),
        ];
        run(SOFTMAX_XENT, "softmax_xent", &Instance::default(), &mut args);
        let (p, loss) = (out(&args, 2), out(&args, 3));
        for r in 0..t {
            let row: Vec<f64> = z[r * v..(r + 1) * v].iter().map(|&x| x as f64).collect();
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + row.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
            let want = lse - row[labels[r] as usize];
            prop_assert!((loss[r] as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()), "loss {r}: {} vs {want}", loss[r]);
            for c in 0..v {
                let pw = (row[c] - lse).exp();
                prop_assert!((p[r * v + c] as f64 - pw).abs() <= 1e-6 + 1e-5 * pw, "p[{r},{c}]");
            }
        }
    }
}
