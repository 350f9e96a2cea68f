//! The gpt-oss MXFP4 experts (`moe_mxfp4`: router, top-k, `moe_mx_up` / `moe_mx_down` and their
//! `_rows` GEMV forms) with f32 and bf16 activations, on the interpreter, the Cranelift JIT and,
//! when built in, the llvm target, against an f64 reference on the exactly decoded weights.
//! Random ragged shapes take both forms (up to 16 rows per expert: GEMVs; more: grouped GEMMs,
//! with row counts that are not multiples of the row tile) and leave some experts without rows.
//!
//! Routing is made tie-free so that every target must pick the reference's experts: the router
//! is the identity on the first E channels and those channels of each token hold a random
//! permutation of distinct multiples of 1/2 (exact in bf16), so the logits are exact and at least
//! 1/2 apart.
//!
//! Tolerance: f32 accumulation, 2e-5 · (1 + max |y_ref|); with bf16 activations the hidden
//! activations are rounded to bf16 between the two GEMMs (relative error at most 2^-8), which
//! adds 2^-8 · Σ |w_route · h · W2| per output.

use opc_ir::{DType, Tensor};
use opc_ops::model::{moe_mxfp4, MxExperts};
use opc_ops::Ops;
use opc_tests::ref_a::{self, Rng};
use proptest::prelude::*;
use std::sync::OnceLock;

const ALPHA: f64 = 1.702;
const LIMIT: f64 = 7.0;

fn targets() -> &'static [(&'static str, Ops)] {
    static T: OnceLock<Vec<(&'static str, Ops)>> = OnceLock::new();
    T.get_or_init(|| ["interp", "cpu", "llvm"].into_iter().filter_map(|n| opc_codegen::target_by_name(n).ok().map(|t| (n, Ops::new(t)))).collect())
}

#[derive(Clone, Debug)]
struct Case {
    t: usize,
    h: usize,
    i: usize,
    e: usize,
    k: usize,
    x: DType,
    seed: u64,
}

/// Random MXFP4 experts [E, R, K] and their decoded values (f64, row-major).
fn experts(rng: &mut Rng, e: usize, r: usize, k: usize) -> (MxExperts, Vec<f64>) {
    let codes: Vec<u8> = (0..e * r * k).map(|_| rng.int(0, 15) as u8).collect();
    // block scales 2^-6 .. 2^-2: weights up to 1.5, products of order one
    let scales: Vec<u8> = (0..e * r * k / 32).map(|_| rng.int(121, 125) as u8).collect();
    let deq = ref_a::mxfp4_dequantize(&codes, &scales, e * r, k);
    let ex = MxExperts {
        codes: Tensor::from_i32(DType::E2M1, &[e, r, k], &codes.iter().map(|&c| c as i32).collect::<Vec<_>>()),
        scales: Tensor::from_i32(DType::E8M0, &[e, r, k / 32], &scales.iter().map(|&s| s as i32).collect::<Vec<_>>()),
        bias: Tensor::from_f32(DType::F32, &[e, r], &rng.normals(e * r, 0.5)),
    };
    (ex, deq)
}

/// x [T, H] in the case's dtype whose first E channels are a permutation of distinct halves.
fn activations(rng: &mut Rng, c: &Case) -> Tensor {
    let mut x = rng.normals(c.t * c.h, 1.0);
    for row in x.chunks_mut(c.h) {
        let mut ranks: Vec<usize> = (0..c.e).collect();
        for j in (1..c.e).rev() {
            ranks.swap(j, rng.int(0, j as i64) as usize);
        }
        for (v, r) in row.iter_mut().zip(ranks) {
            *v = r as f32 * 0.5 - 2.0;
        }
    }
    Tensor::from_f32(c.x, &[c.t, c.h], &x)
}

/// The reference y [T, H] and, per output, Σ |w_route · h · W2| (the bf16 rounding bound of h).
fn reference(c: &Case, x: &[f32], gu: (&MxExperts, &[f64]), dn: (&MxExperts, &[f64])) -> (Vec<f64>, Vec<f64>) {
    let (h, i) = (c.h, c.i);
    let (gb, db) = (gu.0.bias.to_f32_vec(), dn.0.bias.to_f32_vec());
    let mut y = vec![0f64; c.t * h];
    let mut hb = vec![0f64; c.t * h];
    for t in 0..c.t {
        let xr = &x[t * h..(t + 1) * h];
        let mut order: Vec<usize> = (0..c.e).collect();
        order.sort_by(|a, b| xr[*b].total_cmp(&xr[*a]));
        let sel = &order[..c.k];
        let den: f64 = sel.iter().map(|&s| (xr[s] as f64 - xr[sel[0]] as f64).exp()).sum();
        for &ex in sel {
            let wgt = (xr[ex] as f64 - xr[sel[0]] as f64).exp() / den;
            let row = |r: usize| (0..h).map(|j| xr[j] as f64 * gu.1[(ex * 2 * i + r) * h + j]).sum::<f64>() + gb[ex * 2 * i + r] as f64;
            let act: Vec<f64> = (0..i)
                .map(|n| {
                    let g = row(2 * n).min(LIMIT);
                    let u = row(2 * n + 1).clamp(-LIMIT, LIMIT);
                    (u + 1.0) * g / (1.0 + (-g * ALPHA).exp())
                })
                .collect();
            for o in 0..h {
                let w2 = &dn.1[(ex * h + o) * i..][..i];
                y[t * h + o] += wgt * ((0..i).map(|n| act[n] * w2[n]).sum::<f64>() + db[ex * h + o] as f64);
                hb[t * h + o] += wgt * (0..i).map(|n| (act[n] * w2[n]).abs()).sum::<f64>();
            }
        }
    }
    (y, hb)
}

fn run(c: &Case) -> Result<(), String> {
    let mut rng = Rng::new(c.seed);
    let (gu, gu_deq) = experts(&mut rng, c.e, 2 * c.i, c.h);
    let (dn, dn_deq) = experts(&mut rng, c.e, c.h, c.i);
    let x = activations(&mut rng, c);
    let router: Vec<f32> = (0..c.e * c.h).map(|j| if j % c.h == j / c.h { 1.0 } else { 0.0 }).collect();
    let rw = Tensor::from_f32(DType::BF16, &[c.e, c.h], &router);
    let rb = Tensor::zeros(DType::F32, &[c.e]);
    let (want, hb) = reference(c, &x.to_f32_vec(), (&gu, &gu_deq), (&dn, &dn_deq));
    let base = 2e-5 * (1.0 + ref_a::max_abs(&want));
    for (name, ops) in targets() {
        let got = moe_mxfp4(ops, &x, &rw, &rb, c.k, &gu, &dn, ALPHA as f32, LIMIT as f32).map_err(|e| format!("{name}: {e}"))?;
        if got.dtype != DType::F32 || got.shape != [c.t, c.h] {
            return Err(format!("{name}: y is {}{:?}", got.dtype, got.shape));
        }
        for (j, (g, w)) in got.to_f32_vec().into_iter().zip(&want).enumerate() {
            let tol = base + if c.x == DType::BF16 { hb[j] / 256.0 } else { 0.0 };
            if !((g as f64 - w).abs() <= tol) {
                return Err(format!("{name}: y[{}, {}] = {g:e}, reference {w:e} (tolerance {tol:e}) for {c:?}", j / c.h, j % c.h));
            }
        }
    }
    Ok(())
}

fn case() -> impl Strategy<Value = Case> {
    let dims = prop::sample::select(vec![32usize, 64, 96]);
    let dt = prop::sample::select(vec![DType::F32, DType::BF16]);
    (1usize..160, dims.clone(), dims, prop::sample::select(vec![4usize, 8]), 1usize..5, dt, any::<u64>())
        .prop_map(|(t, h, i, e, k, x, seed)| Case { t, h, i, e, k: k.min(e), x, seed })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(ref_a::proptest_cases(12)))]
    #[test]
    fn moe_mxfp4_matches_the_decoded_reference(c in case()) {
        run(&c).map_err(TestCaseError::fail)?;
    }
}

/// Both forms and both activation dtypes deterministically: a decode step, batches (3 and 9
/// tokens over 8 experts: experts of 1, 2 and 3 or more rows, so row tiles of 1, 2 and 4 in
/// one step), a short prefill (GEMVs) and prefills of 150 and 300 tokens (grouped GEMMs: the
/// llvm target's 128-row tiles, ragged and one expert over two row tiles).
#[test]
fn decode_and_prefill_shapes() {
    for x in [DType::F32, DType::BF16] {
        for (t, e, k) in [(1, 8, 4), (3, 8, 4), (9, 8, 4), (6, 4, 2), (30, 8, 4), (150, 4, 2), (300, 4, 1)] {
            run(&Case { t, h: 96, i: 64, e, k, x, seed: t as u64 }).unwrap();
        }
    }
}
