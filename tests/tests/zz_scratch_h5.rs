use opc_ir::{DType, Tensor};
use opc_ops::Ops;
#[test]
fn scratch() {
    let ops = Ops::new(opc_codegen::target_by_name("interp").unwrap());
    let t0 = std::time::Instant::now();
    let mut rng = opc_tests::ref_b::Rng::new(3);
    let (g, v) = (5usize, 50257usize);
    let tg = rng.normals((g+1)*v, 3.0);
    let dr: Vec<f32> = tg[..g*v].iter().map(|z| z + 0.1*rng.normal() as f32).collect();
    let toks: Vec<i32> = (0..g).map(|t| opc_tests::ref_b::argmax(&dr[t*v..(t+1)*v]) as i32).collect();
    let out = opc_ops::kl_judge::kl_judge(&ops, &Tensor::from_f32(DType::F32, &[g+1, v], &tg), &Tensor::from_f32(DType::F32, &[g, v], &dr), &Tensor::from_i32(DType::I32, &[g], &toks), 0.3).unwrap();
    let r = opc_tests::ref_b::kl_judge(&tg, &dr, &toks, g, v, 0.3);
    println!("{:?}\n{:?}\n{:?} {:?}\n{:?} {:?} {:?}", out.kl.to_f32_vec(), r.kl, out.accept.to_i64_vec(), r.accept, out.emitted, r.emitted, t0.elapsed());
    println!("{}", opc_codegen::target_by_name("interp").unwrap().name());
}
