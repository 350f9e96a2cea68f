#![cfg(feature = "llvm22-1")]
#[path = "llvm_common.rs"]
mod common;
use common::*;
use opc_dsl::Instance;
use opc_ir::{Arg, DType, Tensor};

const SRC: &str = r#"
kernel ew(x: f32[N], y: out f32[N])
tunables { B: level1 in {16, 64} = 64 }
grid(cdiv(N, B))
{
    let i = program_id(0) * B + arange(B);
    let a = load(x[i]);
    store(y[i], a * 2.0 + 1.0);
}
"#;

#[test]
fn smoke() {
    let k = kernel(SRC, "ew", &Instance::default());
    let mut r = Rng(1);
    for n in [1usize, 5, 64, 100] {
        exact(&k, &[Arg::Tensor(r.tensor_f(DType::F32, &[n], true)), Arg::Tensor(Tensor::zeros(DType::F32, &[n]))]);
    }
}
