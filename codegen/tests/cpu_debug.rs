#[path = "cpu_common.rs"]
mod common;
use common::*;
use opc_dsl::Instance;
use opc_ir::{Arg, DType, Tensor};
#[test]
fn dbg() {
    let src = r#"
kernel masked(x: f32[M, N], y: out f32[M, N], thr: f32)
tunables { BM: level1 in {4, 8} = 8, BN: level1 in {16} = 16 }
grid(cdiv(M, BM), cdiv(N, BN))
{
    let r = program_id(0) * BM + arange(BM);
    let c = program_id(1) * BN + arange(BN);
    let keep = (r[:, None] + c[None, :]) % 3 != 1;
    let v = load(x[r, c], mask: keep, other: -1.5);
    store(y[r, c], v, mask: v > thr);
}
"#;
    let k = kernel(src, "masked", &Instance::default());
    println!("{}", opc_ir::printer::print_kernel(&k));
    let v: Vec<f32> = (0..5).map(|i| i as f32).collect();
    let args = vec![Arg::Tensor(Tensor::from_f32(DType::F32, &[1, 5], &v)), Arg::Tensor(Tensor::zeros(DType::F32, &[1, 5])), Arg::F32(-10.0)];
    let mut a = args.clone();
    opc_codegen::target_by_name("cpu").unwrap().compile(&k).unwrap().launch(&mut a).unwrap();
    if let Arg::Tensor(t) = &a[1] { println!("{:?}", t.to_f32_vec()); }
    same(&k, &args);
}
