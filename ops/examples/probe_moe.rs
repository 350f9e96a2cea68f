// temporary probe: moe_mxfp4 timing (not committed)
use opc_ir::{DType, Tensor};
use opc_ops::model::{moe_mxfp4, MxExperts};
use std::time::Instant;
fn cpu() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}
fn bytes(d: DType, shape: &[usize], seed: u8) -> Tensor {
    let mut t = Tensor::zeros(d, shape);
    for (i, b) in t.data.iter_mut().enumerate() { *b = (i as u8).wrapping_mul(37).wrapping_add(seed); }
    if d == DType::E8M0 { t.data.iter_mut().for_each(|b| *b = 118 + *b % 8); }
    t
}
fn main() {
    let ops = opc_ops::Ops::new(opc_codegen::target_by_name("llvm").unwrap());
    let (e, h, i, k) = (16usize, 2048usize, 2048usize, 4usize);
    let layers = 6;
    let mk = |r: usize, c: usize, s: u8| MxExperts { codes: bytes(DType::E2M1, &[e, r, c], s), scales: bytes(DType::E8M0, &[e, r, c / 32], s), bias: Tensor::zeros(DType::F32, &[e, r]) };
    let ls: Vec<(MxExperts, MxExperts)> = (0..layers).map(|l| (mk(2 * i, h, l as u8), mk(h, i, l as u8 + 9))).collect();
    let rw = bytes(DType::BF16, &[e, h], 3);
    let rb = Tensor::zeros(DType::F32, &[e]);
    for t in std::env::args().nth(1).unwrap_or("1,8".into()).split(',').map(|x| x.parse::<usize>().unwrap()) {
        let x = Tensor::from_f32(DType::F32, &[t, h], &(0..t * h).map(|j| ((j * 7919) % 1000) as f32 / 1000.0 - 0.5).collect::<Vec<_>>());
        moe_mxfp4(&ops, &x, &rw, &rb, k, &ls[0].0, &ls[0].1, 1.702, 7.0).unwrap();
        let (c0, w0) = (cpu(), Instant::now());
        let reps = 3;
        for _ in 0..reps { for (gu, dn) in &ls { moe_mxfp4(&ops, &x, &rw, &rb, k, gu, dn, 1.702, 7.0).unwrap(); } }
        let n = (reps * layers) as f64;
        println!("moe_mxfp4 t={t}: wall {:.3} ms cpu/2 {:.3} ms per layer", w0.elapsed().as_secs_f64() * 1e3 / n, (cpu() - c0) * 1e3 / n / 2.0);
    }
}
