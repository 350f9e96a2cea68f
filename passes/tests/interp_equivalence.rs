//! The pipeline preserves meaning: the reference interpreter gives bit-identical outputs
//! before and after it.
mod common;
use common::*;
use opc_ir::{Arg, DType, Tensor};
use opc_passes::{pass_names, registered_passes, run_passes, run_pipeline};

fn args(seed: u32) -> Vec<Arg> {
    let vals = |n: usize, k: u32| -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed * 97 + k) >> 7) % 1000) as f32 / 250.0 - 2.0).collect()
    };
    vec![
        Arg::Tensor(Tensor::from_f32(DType::F32, &[64], &vals(64, 1))),
        Arg::Tensor(Tensor::from_f32(DType::F32, &[16], &vals(16, 2))),
        Arg::Tensor(Tensor::zeros(DType::F32, &[32])),
        Arg::F32(0.3 + seed as f32 * 0.1),
    ]
}

fn run(k: &opc_ir::Kernel, seed: u32) -> Vec<Arg> {
    let mut a = args(seed);
    opc_ir::interp::run(k, &mut a).unwrap();
    a
}

#[test]
fn pipeline_preserves_outputs() {
    let before = demo_kernel();
    let mut after = before.clone();
    run_pipeline(&mut after, &Default::default()).unwrap();
    assert_ne!(before, after, "the pipeline did something");
    for seed in 0..3 {
        assert_eq!(run(&before, seed), run(&after, seed), "seed {seed}");
    }
}

#[test]
fn every_pass_alone_preserves_outputs() {
    let before = demo_kernel();
    let want = run(&before, 7);
    for name in registered_passes() {
        let mut k = before.clone();
        run_passes(&mut k, &[name], &Default::default()).unwrap();
        assert_eq!(run(&k, 7), want, "after {name}");
    }
    let _ = pass_names();
}
