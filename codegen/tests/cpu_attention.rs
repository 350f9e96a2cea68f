//! The operator library's FlashAttention kernels on the `cpu` target: bit-identical to the
//! interpreter on random ragged shapes, and (ignored by default) a speed comparison:
//! `cargo test --release -p opc-codegen --test cpu_attention -- --ignored --nocapture`.

#[path = "jit_common.rs"]
mod common;

use std::time::Instant;

use common::{kernel, same, Rng};
use opc_dsl::Instance;
use opc_ir::{Arg, DType, Kernel, Tensor};
use proptest::prelude::*;

const SRC: &str = include_str!("../../ops/kernels/flash_attention.opc");

fn attention(d: DType, hd: i64, bm: i64, bn: i64) -> Kernel {
    kernel(SRC, "flash_attention", &Instance::default().dtype("T", d).konst("D", hd).tunable("BM", bm).tunable("BN", bn))
}

#[allow(clippy::too_many_arguments)]
fn args(
    r: &mut Rng,
    d: DType,
    b: usize,
    hq: usize,
    hkv: usize,
    sq: usize,
    sk: usize,
    hd: usize,
    causal: bool,
    window: Option<i32>,
    sinks: bool,
) -> Vec<Arg> {
    vec![
        Arg::Tensor(r.tensor_f(d, &[b, hq, sq, hd], false)),
        Arg::Tensor(r.tensor_f(d, &[b, hkv, sk, hd], false)),
        Arg::Tensor(r.tensor_f(d, &[b, hkv, sk, hd], false)),
        Arg::Tensor(r.tensor_f(DType::F32, &[hq], false)),
        Arg::Tensor(Tensor::zeros(d, &[b, hq, sq, hd])),
        Arg::Tensor(Tensor::zeros(DType::F32, &[b, hq, sq])),
        Arg::F32(1.0 / (hd as f32).sqrt()),
        Arg::Bool(causal),
        Arg::Bool(window.is_some()),
        Arg::I32(window.unwrap_or(0)),
        Arg::Bool(sinks),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn flash_attention_matches_the_interpreter(
        sq in 1usize..40, sk in 1usize..70, g in 1usize..3, t in 0usize..3,
        causal in any::<bool>(), window in proptest::option::of(1i32..20), sinks in any::<bool>(), seed in any::<u64>(),
    ) {
        let d = [DType::F32, DType::F16, DType::BF16][t];
        let k = attention(d, 16, 16, 16);
        let mut r = Rng(seed);
        same(&k, &args(&mut r, d, 1, 2 * g, 2, sq, sk, 16, causal, window, sinks));
    }
}

fn time(k: &Kernel, target: &str, a: &[Arg], reps: usize) -> f64 {
    let exe = opc_codegen::target_by_name(target).unwrap().compile(k).unwrap();
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let mut a = a.to_vec();
        let t0 = Instant::now();
        exe.launch(&mut a).unwrap();
        best = best.min(t0.elapsed().as_secs_f64());
    }
    best
}

#[test]
#[ignore = "timing; run with --ignored --nocapture"]
fn flash_attention_speed_vs_interpreter() {
    for d in [DType::F32, DType::BF16] {
        let k = attention(d, 64, 64, 64);
        let mut r = Rng(7);
        let a = args(&mut r, d, 1, 8, 2, 512, 512, 64, true, None, false);
        same(&k, &a);
        let ti = time(&k, "interp", &a, 2);
        let tc = time(&k, "cpu", &a, 5);
        // causal: about half of the 8 · 512 · 512 scores are computed, 2 matmuls of D = 64 each
        let flops = 8.0 * 512.0 * 512.0 * 64.0 * 4.0 / 2.0;
        println!(
            "flash_attention {d} B=1 HQ=8 HKV=2 S=512 D=64 causal: interp {:.1} ms, cpu {:.1} ms ({:.1}x), cpu {:.2} GFLOP/s",
            ti * 1e3,
            tc * 1e3,
            ti / tc,
            flops / tc / 1e9
        );
    }
}
