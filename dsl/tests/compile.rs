//! End-to-end front-end tests: DSL source → IR → interpreter.

use opc_dsl::{compile, Instance};
use opc_ir::{Arg, DType, Tensor};

const MATMUL: &str = r#"
kernel matmul<T: {f32, f16, bf16}>(a: T[M, K], b: T[K, N], bias: f32[N], c: out T[M, N], has_bias: bool)
tunables {
    BM: level1 in {16, 32, 64, 128} = 32,
    BN: level1 in {16, 32, 64, 128} = 32,
    BK: level2 in {8, 16, 32, 64} = 16,
}
grid(cdiv(M, BM), cdiv(N, BN))
{
    let rows = program_id(0) * BM + arange(BM);
    let cols = program_id(1) * BN + arange(BN);
    var acc = zeros([BM, BN], f32);
    for k0 in 0..cdiv(K, BK) {
        let ks = k0 * BK + arange(BK);
        acc = dot(load(a[rows, ks]), load(b[ks, cols]), acc);
    }
    if has_bias {
        acc = acc + load(bias[cols])[None, :];
    }
    store(c[rows, cols], cast(acc, T));
}
"#;

#[test]
fn matmul_compiles_and_runs_on_ragged_shapes() {
    let k = compile("matmul.opc", MATMUL, "matmul", &Instance::default()).unwrap();
    let (m, kk, n) = (37usize, 19usize, 45usize);
    let av: Vec<f32> = (0..m * kk).map(|i| ((i * 7 % 13) as f32 - 6.0) / 4.0).collect();
    let bv: Vec<f32> = (0..kk * n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 8.0).collect();
    let biasv: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
    let mut args = vec![
        Arg::Tensor(Tensor::from_f32(DType::F32, &[m, kk], &av)),
        Arg::Tensor(Tensor::from_f32(DType::F32, &[kk, n], &bv)),
        Arg::Tensor(Tensor::from_f32(DType::F32, &[n], &biasv)),
        Arg::Tensor(Tensor::zeros(DType::F32, &[m, n])),
        Arg::Bool(true),
    ];
    opc_ir::interp::run(&k, &mut args).unwrap();
    let Arg::Tensor(c) = &args[3] else { panic!() };
    let c = c.to_f32_vec();
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f64;
            for p in 0..kk {
                s += av[i * kk + p] as f64 * bv[p * n + j] as f64;
            }
            s += biasv[j] as f64;
            assert!((c[i * n + j] as f64 - s).abs() < 1e-4, "{i},{j}: {} vs {s}", c[i * n + j]);
        }
    }
}

#[test]
fn ir_round_trips_through_text() {
    let k = compile("matmul.opc", MATMUL, "matmul", &Instance::default().dtype("T", DType::BF16)).unwrap();
    let text = opc_ir::printer::print_kernel(&k);
    let back = opc_ir::parser::parse_kernel(&text).unwrap();
    assert_eq!(back, k, "{text}");
}
