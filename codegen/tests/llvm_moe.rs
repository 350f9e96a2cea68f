//! bf16 `moe_forward` on the `llvm` target against the interpreter with the llvm tiles of
//! `ops/src/moe.rs` (row tiles covering an expert, `BN` 128, `BK` 256): the grouped GEMMs run
//! as fused K loops with a shared gathered `a` panel (`moe_up`), K deeper than one chunk with a
//! ragged last step, experts with more rows than one tile and experts with none, and the rows
//! past each expert's segment skipped (`codegen/src/llvm/live.rs`).
//!
//! The chosen experts must agree (ties are measure-zero on random data) and the routing
//! weights agree to f32 rounding. The outputs differ by rounding only: the
//! GEMMs sum bf16 pairs with `vdpbf16ps` and the SiLU·mul hidden is rounded to bf16, so one
//! rounding flip of a hidden value moves the output by a bf16 ulp of its term; the bound is
//! relative to the output's largest magnitude.
#![cfg(feature = "llvm22-1")]

#[path = "jit_common.rs"]
mod common;

use common::Rng;
use opc_ir::{DType, Tensor};
use opc_ops::{moe, Ops};

#[test]
fn bf16_moe_matches_the_interpreter() {
    let (i, l) = (Ops::new(opc_codegen::target_by_name("interp").unwrap()), Ops::new(opc_codegen::target_by_name("llvm").unwrap()));
    let mut r = Rng(7);
    // (tokens, hidden, intermediate, experts, routing): ~20 rows per expert in 32-row tiles
    // (some experts need two), then ~50 rows per expert in one 128-row tile; then K extents
    // that are whole 128-steps but not 256-steps (`BK` 128: chunks of two K steps) with 16
    // experts for 14 pairs (experts without rows); the last case has
    // the buffer sizes of the one before, so its intermediates are the reused ones.
    let scale = |e: usize| Tensor::from_f32(DType::F32, &[e], &(0..e).map(|j| 0.5 + j as f32 / 8.0).collect::<Vec<_>>());
    for (t, h, inter, e, routing) in [
        (40, 300, 200, 4, moe::Routing::TopK { k: 2 }),
        (100, 520, 130, 4, moe::Routing::MoGE { groups: 2, router_scale: Tensor::from_f32(DType::F32, &[4], &[1.0, 0.5, 2.0, 1.5]) }),
        (7, 384, 640, 16, moe::Routing::TopK { k: 2 }),
        (60, 640, 384, 8, moe::Routing::MoGE { groups: 4, router_scale: scale(8) }),
        (60, 640, 384, 8, moe::Routing::TopK { k: 4 }),
    ] {
        let d = DType::BF16;
        let x = r.tensor_f(d, &[t, h], false);
        let gate = r.tensor_f(d, &[e, h], false);
        let w1 = r.tensor_f(d, &[e, inter, h], false);
        let w3 = r.tensor_f(d, &[e, inter, h], false);
        let w2 = r.tensor_f(d, &[e, h, inter], false);
        let a = moe::moe_forward(&i, &x, &gate, &w1, &w3, &w2, &routing).unwrap();
        let b = moe::moe_forward(&l, &x, &gate, &w1, &w3, &w2, &routing).unwrap();
        // again, on the intermediates the first call handed back: the same bits
        let again = moe::moe_forward(&l, &x, &gate, &w1, &w3, &w2, &routing).unwrap();
        assert_eq!(b.out.data, again.out.data, "t={t} h={h} i={inter} e={e}: a second call differs");
        assert_eq!(a.expert_ids.data, b.expert_ids.data, "expert ids");
        let wd = a.weights.to_f32_vec().iter().zip(b.weights.to_f32_vec()).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(wd <= 1e-5, "routing weights differ by {wd:e}");
        let (want, got) = (a.out.to_f32_vec(), b.out.to_f32_vec());
        let max = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(max > 0.0 && want.iter().chain(&got).all(|v| v.is_finite()));
        let worst = want.iter().zip(&got).map(|(w, g)| (w - g).abs()).fold(0.0f32, f32::max);
        // bf16 has 8 significant bits: 2^-8 of the largest output, a few flips summed
        assert!(worst <= 4.0 * max / 256.0, "t={t} h={h} i={inter} e={e}: worst |Δ| {worst:e} vs max {max:e}");
    }
}
