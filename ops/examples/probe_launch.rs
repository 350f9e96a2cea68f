// temporary probe: launch overhead (not committed)
use opc_ir::{DType, Tensor};
use std::time::Instant;
fn main() {
    let ops = opc_ops::Ops::new(opc_codegen::target_by_name("llvm").unwrap());
    let a = Tensor::zeros(DType::F32, &[1, 2048]);
    let w = Tensor::zeros(DType::F32, &[2048]);
    for name in ["add", "rmsnorm"] {
        let f = |ops: &opc_ops::Ops| { if name == "add" { opc_ops::model::add(ops, &a, &a).unwrap(); } else { opc_ops::blocks::rmsnorm(ops, &a, &w, 1e-5).unwrap(); } };
        f(&ops);
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t0 = Instant::now();
            for _ in 0..2000 { f(&ops); }
            best = best.min(t0.elapsed().as_secs_f64() / 2000.0);
        }
        println!("{name} [1, 2048]: {:.1} us per launch (best of 5 x 2000)", best * 1e6);
    }
}
