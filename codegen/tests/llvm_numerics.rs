//! The `llvm` target's inline `exp` / `exp2` against Rust's `f32::exp` / `exp2` (what the
//! interpreter computes) over the whole useful range, special values and the subnormal tail.
#![cfg(feature = "llvm22-1")]

#[path = "jit_common.rs"]
mod common;

use common::kernel;
use opc_dsl::Instance;
use opc_ir::{Arg, DType, Tensor};

const SRC: &str = r#"
kernel exps(x: f32[N], e: out f32[N], e2: out f32[N])
tunables { B: level1 in {256} = 256 }
grid(cdiv(N, B))
{
    let i = program_id(0) * B + arange(B);
    let v = load(x[i]);
    store(e[i], exp(v));
    store(e2[i], exp2(v));
}
"#;

/// Distance in units of the last place between two finite f32 of the same sign (or zero).
fn ulps(a: f32, b: f32) -> u64 {
    let key = |x: f32| -> i64 {
        let b = x.to_bits() as i64;
        if b & 0x8000_0000 != 0 {
            -(b & 0x7FFF_FFFF)
        } else {
            b
        }
    };
    (key(a) - key(b)).unsigned_abs()
}

#[test]
fn exp_and_exp2_are_within_two_ulps() {
    let k = kernel(SRC, "exps", &Instance::default());
    let mut xs: Vec<f32> = vec![0.0, -0.0, 1.0, -1.0, 0.5, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 88.7, 88.8, -87.3, -103.9, -104.0, 127.9, 128.0, -149.0, -149.5, -150.0, -126.0, -140.3];
    // a dense sweep over [-110, 130]
    let n = 200_000;
    xs.extend((0..n).map(|i| -110.0 + 240.0 * (i as f32) / (n as f32)));
    let len = xs.len();
    let mut args = vec![
        Arg::Tensor(Tensor::from_f32(DType::F32, &[len], &xs)),
        Arg::Tensor(Tensor::zeros(DType::F32, &[len])),
        Arg::Tensor(Tensor::zeros(DType::F32, &[len])),
    ];
    let exe = opc_codegen::target_by_name("llvm").unwrap().compile(&k).unwrap();
    exe.launch(&mut args).unwrap();
    let (Arg::Tensor(e), Arg::Tensor(e2)) = (&args[1], &args[2]) else { unreachable!() };
    let (e, e2) = (e.to_f32_vec(), e2.to_f32_vec());
    let mut worst = [(0u64, 0.0f32); 2];
    for (i, &x) in xs.iter().enumerate() {
        for (w, (got, want)) in worst.iter_mut().zip([(e[i], x.exp()), (e2[i], x.exp2())]) {
            if want.is_nan() {
                assert!(got.is_nan(), "x = {x}: want NaN, got {got}");
                continue;
            }
            if want.is_infinite() || got.is_infinite() {
                assert_eq!(got, want, "x = {x}");
                continue;
            }
            let u = ulps(got, want);
            if u > w.0 {
                *w = (u, x);
            }
        }
    }
    println!("worst: exp {} ulps at {}, exp2 {} ulps at {}", worst[0].0, worst[0].1, worst[1].0, worst[1].1);
    assert!(worst[0].0 <= 2 && worst[1].0 <= 2, "worst: exp {:?}, exp2 {:?}", worst[0], worst[1]);
}
