// temporary probe: paged_decode vs flash_decode (not committed)
use opc_ir::{DType, Tensor};
use opc_ops::attention::{flash_decode, AttentionParams};
use opc_ops::model::KvPool;
use opc_ops::paged_attention::{paged_decode, PagedDecodeParams};
use std::time::Instant;
fn cpu() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}
fn rnd(shape: &[usize], seed: u32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / (1u32 << 24) as f32) - 0.5).collect();
    Tensor::from_f32(DType::F32, shape, &v)
}
fn main() {
    let ops = opc_ops::Ops::new(opc_codegen::target_by_name("llvm").unwrap());
    let (s, hq, hkv, d, len, bs): (usize, usize, usize, usize, usize, usize) = (8, 32, 8, 64, std::env::var("LEN").ok().and_then(|x| x.parse().ok()).unwrap_or(80), 16);
    let nb = s * len.div_ceil(bs);
    let pool = KvPool { k: rnd(&[nb * bs, hkv, d], 1), v: rnd(&[nb * bs, hkv, d], 2), block_size: bs };
    let tb: Vec<i32> = (0..nb as i32).collect();
    let tables = Tensor::from_i32(DType::I32, &[s, len.div_ceil(bs)], &tb);
    let lens = Tensor::from_i32(DType::I32, &[s], &vec![len as i32; s]);
    let q = rnd(&[s, hq, d], 3);
    let p = PagedDecodeParams { scale: 0.125, window: None };
    let iters = 200;
    paged_decode(&ops, &q, &pool, &tables, &lens, None, &p).unwrap();
    let (c0, t0) = (cpu(), Instant::now());
    for _ in 0..iters { paged_decode(&ops, &q, &pool, &tables, &lens, None, &p).unwrap(); }
    println!("paged_decode S={s} len={len}: wall {:.3} ms cpu {:.3} ms", t0.elapsed().as_secs_f64() * 1e3 / iters as f64, (cpu() - c0) * 1e3 / iters as f64);
    let q1 = rnd(&[1, hq, 1, d], 3);
    let k = rnd(&[1, hkv, len, d], 1);
    let v = rnd(&[1, hkv, len, d], 2);
    let ap = AttentionParams { causal: true, window: None, scale: 0.125 };
    flash_decode(&ops, &q1, &k, &v, None, &ap, 1).unwrap();
    let (c0, t0) = (cpu(), Instant::now());
    for _ in 0..iters { flash_decode(&ops, &q1, &k, &v, None, &ap, 1).unwrap(); }
    println!("flash_decode 1 seq len={len}: wall {:.3} ms cpu {:.3} ms", t0.elapsed().as_secs_f64() * 1e3 / iters as f64, (cpu() - c0) * 1e3 / iters as f64);
}
