//! `llvm` vs the interpreter on the `dot` operand preparation of `pack.rs` (16×16 register
//! transposes of a transposed `b`, bf16 k-pair packing in vectors) and its fallbacks, over tile
//! shapes on both sides of every condition (whole 16-blocks or not, odd K, ragged tails), plus
//! the buffer reuse of `lower.rs` (elementwise results in a dying operand's buffer, `if` results
//! in the buffer of a value a branch yields unchanged).
#![cfg(feature = "llvm22-1")]

#[path = "jit_common.rs"]
mod llvm_common;

use llvm_common::{check, kernel, Cmp, Rng};
use opc_dsl::Instance;
use opc_ir::{Arg, DType, Tensor};

const SRC: &str = r#"
kernel mm<T: {f32, bf16}>(a: T[M, K], b: T[N, K], bt: T[K, N], c: out f32[M, N], d: out f32[M, N])
tunables { BM: level1 in {5, 16} = 16, BN: level1 in {16, 20, 48} = 16, BK: level2 in {15, 16, 30, 32, 33, 64} = 16 }
grid(cdiv(M, BM), cdiv(N, BN))
{
    let rows = program_id(0) * BM + arange(BM);
    let cols = program_id(1) * BN + arange(BN);
    var nt = zeros([BM, BN], f32);
    var nn = zeros([BM, BN], f32);
    for k0 in 0..K step BK {
        let ks = k0 + arange(BK);
        let x = load(a[rows, ks]);
        nt = dot(x, trans(load(b[cols, ks])), nt);
        nn = dot(x, load(bt[ks, cols]), nn);
    }
    store(c[rows, cols], nt);
    store(d[rows, cols], nn);
}

kernel adopt(x: f32[N], y: out f32[N], z: out f32[N], flag: bool)
tunables { BN: level1 in {64} = 64 }
grid(cdiv(N, BN))
{
    let cols = program_id(0) * BN + arange(BN);
    let s = load(x[cols]) * 0.5 - 1.0;
    var u = s;
    var w = s;
    if flag {
        u = s * 2.0;
        w = s + u;
    } else {
        w = s * 3.0;
    }
    store(y[cols], u);
    store(z[cols], w);
}

// Both branches yield the other's buffer: the merge must stage before it overwrites.
kernel swap(x: f32[N], y: out f32[N], z: out f32[N], flag: bool)
tunables { BN: level1 in {64} = 64 }
grid(cdiv(N, BN))
{
    let cols = program_id(0) * BN + arange(BN);
    let s = load(x[cols]) + 1.0;
    var u = s;
    var w = s * 0.25;
    if flag {
        u = w;
        w = s;
    }
    store(y[cols], u);
    store(z[cols], w);
}
"#;

#[test]
fn dot_operand_packing_matches_the_interpreter() {
    let mut r = Rng(0x5eed);
    for d in [DType::F32, DType::BF16] {
        for (bm, bn, bk) in [(16, 16, 16), (5, 48, 64), (16, 20, 32), (16, 16, 33), (5, 48, 30), (16, 16, 15), (16, 48, 32)] {
            for (m, n, kk) in [(16, 16, 64), (21, 50, 70), (7, 96, 128)] {
                let inst = Instance::default().dtype("T", d).tunable("BM", bm).tunable("BN", bn).tunable("BK", bk);
                let k = kernel(SRC, "mm", &inst);
                let args = vec![
                    Arg::Tensor(r.tensor_f(d, &[m, kk], false)),
                    Arg::Tensor(r.tensor_f(d, &[n, kk], false)),
                    Arg::Tensor(r.tensor_f(d, &[kk, n], false)),
                    Arg::Tensor(Tensor::zeros(DType::F32, &[m, n])),
                    Arg::Tensor(Tensor::zeros(DType::F32, &[m, n])),
                ];
                check(&k, &args, Cmp::Close { ulps: 16.0 });
            }
        }
    }
}

#[test]
fn reused_buffers_keep_values_alive() {
    let mut r = Rng(7);
    for (name, flag) in [("adopt", false), ("adopt", true), ("swap", false), ("swap", true)] {
        let k = kernel(SRC, name, &Instance::default());
        let n = 150;
        let args = vec![
            Arg::Tensor(r.tensor_f(DType::F32, &[n], true)),
            Arg::Tensor(Tensor::zeros(DType::F32, &[n])),
            Arg::Tensor(Tensor::zeros(DType::F32, &[n])),
            Arg::Bool(flag),
        ];
        check(&k, &args, Cmp::Exact);
    }
}
