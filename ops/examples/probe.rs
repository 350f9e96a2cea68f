// temporary probe: time the linear kernels on the decode shapes (not committed)
use opc_ir::{ArgRef, DType, Tensor};
use std::time::Instant;
fn launch(ops: &opc_ops::Ops, kern: &str, cfg: &[i64], x: &Tensor, w: &Tensor) {
    let (m, n, k) = (x.shape[0], w.shape[0], w.shape[1]);
    if kern == "widen" {
        let wf = opc_ops::model::to_f32(ops, w).unwrap();
        opc_ops::blocks::linear(ops, x, &wf, None).unwrap();
        return;
    }
    if kern == "linear" {
        opc_ops::model::linear_w(ops, x, w, None).unwrap();
        return;
    }
    let b = Tensor::zeros(DType::F32, &[n]);
    let mut out = Tensor::zeros(DType::F32, &[m, n]);
    let bk = if k % cfg[2] as usize == 0 { cfg[2] } else { 512 };
    let mut inst = opc_dsl::Instance::default().dtype("W", w.dtype).tunable("BN", cfg[1]).tunable("BK", bk);
    if kern == "gemv_rows" || kern == "linear_w" { inst = inst.tunable("BM", cfg[0]); }
    if kern == "linear_w" { inst = inst.tunable("BK", cfg[2]); }
    ops.kernel("model", kern, &inst).unwrap().launch_refs(&mut [ArgRef::In(x), ArgRef::In(w), ArgRef::In(&b), ArgRef::Out(&mut out), ArgRef::Bool(false)]).unwrap();
}
fn cpu() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}
fn main() {
    let ops = opc_ops::Ops::new(opc_codegen::target_by_name("llvm").unwrap());
    let ms: Vec<usize> = std::env::args().nth(1).map(|s| s.split(',').map(|x| x.parse().unwrap()).collect()).unwrap_or(vec![1, 8]);
    let kern = std::env::var("KERN").unwrap_or("linear".into());
    let cfg: Vec<i64> = std::env::var("CFG").ok().map(|s| s.split(',').map(|x| x.parse().unwrap()).collect()).unwrap_or(vec![8, 16, 2048]);
    let shapes: Vec<(usize, usize)> = std::env::var("SHAPES").ok().map(|s| s.split(';').map(|p| { let v: Vec<usize> = p.split('x').map(|x| x.parse().unwrap()).collect(); (v[0], v[1]) }).collect())
        .unwrap_or(vec![(2048, 2048), (512, 2048), (5632, 2048), (2048, 5632), (32000, 2048)]);
    for &(n, k) in &shapes {
        let mut w = Tensor::zeros(DType::BF16, &[n, k]);
        for (i, b) in w.data.iter_mut().enumerate() { *b = ((i * 7919) >> 3) as u8 & 0x3f; }
        let copies = (400_000_000 / (n * k * 2)).max(2);
        let ws: Vec<Tensor> = (0..copies).map(|_| w.clone()).collect();
        for &m in &ms {
            let x = Tensor::zeros(DType::F32, &[m, k]);
            launch(&ops, &kern, &cfg, &x, &ws[0]);
            let mut best = f64::MAX;
            let c0 = cpu(); let w0 = Instant::now();
            for _ in 0..3 {
                let t0 = Instant::now();
                for w in &ws { launch(&ops, &kern, &cfg, &x, w); }
                best = best.min(t0.elapsed().as_secs_f64() / copies as f64);
            }
            let cpu_ms = (cpu() - c0) / (3 * copies) as f64 * 1e3 / 2.0;
            println!("{kern} {cfg:?} N={n:5} K={k:5} M={m}: {:.3} ms  {:.1} GB/s  cpu/2 {:.3} ms (wall avg {:.3})", best * 1e3, (n * k * 2) as f64 / best / 1e9, cpu_ms, w0.elapsed().as_secs_f64() / (3 * copies) as f64 * 1e3);
        }
    }
}
