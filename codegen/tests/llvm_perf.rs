//! Speed of the `llvm` target on the operator library's hot kernels, against the `cpu`
//! (Cranelift) target, printed as GFLOP/s (ignored by default: timing, not correctness):
//! `cargo test --release -p opc-codegen --features llvm22-1 --test llvm_perf -- --ignored --nocapture`.
//! `OPC_PERF_SIZES=1024,2048` picks the GEMM sizes, `OPC_PERF_TUNE=BM,BN,BK` the matmul tiles,
//! `OPC_PERF_DTYPES=f32,bf16` the dtypes; `OPC_PERF_CPU=1` adds the `cpu` target's time.
#![cfg(feature = "llvm22-1")]

#[path = "jit_common.rs"]
mod common;

use std::time::Instant;

use common::{kernel, Rng};
use opc_dsl::Instance;
use opc_ir::{Arg, DType, Kernel, Tensor};

const BLOCKS: &str = include_str!("../../ops/kernels/blocks.opc");
const ATTENTION: &str = include_str!("../../ops/kernels/flash_attention.opc");

/// Best wall time of `reps` launches (after one warm-up).
fn time(k: &Kernel, target: &str, a: &[Arg], reps: usize) -> f64 {
    let exe = opc_codegen::target_by_name(target).unwrap().compile(k).unwrap();
    let mut best = f64::INFINITY;
    let mut args = a.to_vec();
    exe.launch(&mut args).unwrap();
    for _ in 0..reps {
        let t0 = Instant::now();
        exe.launch(&mut args).unwrap();
        best = best.min(t0.elapsed().as_secs_f64());
    }
    best
}

fn env_list(name: &str, default: &[i64]) -> Vec<i64> {
    std::env::var(name).ok().map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect()).unwrap_or_else(|| default.to_vec())
}

#[test]
#[ignore = "timing; run with --ignored --nocapture"]
fn gemm_speed() {
    let sizes = env_list("OPC_PERF_SIZES", &[1024, 2048]);
    let tune = env_list("OPC_PERF_TUNE", &[128, 128, 64]);
    let with_cpu = std::env::var_os("OPC_PERF_CPU").is_some();
    let dtypes: Vec<DType> = std::env::var("OPC_PERF_DTYPES")
        .ok()
        .map(|s| s.split(',').filter_map(DType::from_name).collect())
        .unwrap_or_else(|| vec![DType::F32, DType::BF16]);
    for d in dtypes {
        let inst = Instance::default().dtype("T", d).tunable("BM", tune[0]).tunable("BN", tune[1]).tunable("BK", tune[2]);
        let k = kernel(BLOCKS, "matmul", &inst);
        for &s in &sizes {
            let s = s as usize;
            let mut r = Rng(7);
            let args = vec![
                Arg::Tensor(r.tensor_f(d, &[s, s], false)),
                Arg::Tensor(r.tensor_f(d, &[s, s], false)),
                Arg::Tensor(Tensor::zeros(DType::F32, &[s])),
                Arg::Tensor(Tensor::zeros(d, &[s, s])),
                Arg::Bool(false),
            ];
            let flop = 2.0 * (s as f64).powi(3);
            let t = time(&k, "llvm", &args, 5);
            let mut line = format!("matmul {d:>4} {s}^3 tiles {tune:?}: llvm {:7.2} ms {:7.1} GFLOP/s", t * 1e3, flop / t / 1e9);
            if with_cpu {
                let tc = time(&k, "cpu", &args, 1);
                line += &format!(" | cpu {:8.2} ms {:6.1} GFLOP/s | x{:.1}", tc * 1e3, flop / tc / 1e9, tc / t);
            }
            println!("{line}");
        }
    }
}

#[test]
#[ignore = "timing; run with --ignored --nocapture"]
fn flash_attention_speed() {
    let with_cpu = std::env::var_os("OPC_PERF_CPU").is_some();
    let tune = env_list("OPC_PERF_ATTN_TUNE", &[64, 64]);
    let (b, h, s, hd) = (1usize, 8usize, 2048usize, 64usize);
    for d in [DType::BF16, DType::F32] {
        let inst = Instance::default().dtype("T", d).konst("D", hd as i64).tunable("BM", tune[0]).tunable("BN", tune[1]);
        let k = kernel(ATTENTION, "flash_attention", &inst);
        let mut r = Rng(3);
        let args = vec![
            Arg::Tensor(r.tensor_f(d, &[b, h, s, hd], false)),
            Arg::Tensor(r.tensor_f(d, &[b, h, s, hd], false)),
            Arg::Tensor(r.tensor_f(d, &[b, h, s, hd], false)),
            Arg::Tensor(Tensor::zeros(DType::F32, &[h])),
            Arg::Tensor(Tensor::zeros(d, &[b, h, s, hd])),
            Arg::Tensor(Tensor::zeros(DType::F32, &[b, h, s])),
            Arg::F32(1.0 / (hd as f32).sqrt()),
            Arg::Bool(true),
            Arg::Bool(false),
            Arg::I32(0),
            Arg::Bool(false),
        ];
        // causal: half the S×S score matrix, two GEMMs of 2·D flops per score
        let flop = 4.0 * (b * h) as f64 * (s as f64) * (s as f64) * hd as f64 / 2.0;
        let t = time(&k, "llvm", &args, 3);
        let mut line = format!("flash_attention {d:>4} B1 H8 S2048 D64 causal tiles {tune:?}: llvm {:7.2} ms {:6.1} GFLOP/s", t * 1e3, flop / t / 1e9);
        if with_cpu {
            let tc = time(&k, "cpu", &args, 1);
            line += &format!(" | cpu {:8.2} ms | x{:.1}", tc * 1e3, tc / t);
        }
        println!("{line}");
    }
}
