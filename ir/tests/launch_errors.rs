//! Launch-time binding and checks: exact error messages.

#[path = "interp_builder.rs"]
mod builder;

use builder::*;
use opc_ir::ir::*;
use opc_ir::launch::{bind_dims, grid, LaunchError};
use opc_ir::{interp, Arg, DType, Tensor};

/// attention-like signature: v comes before k, so `SK` is bound by `v`.
fn attn_like() -> Kernel {
    let mut kb = KB::new("flash_attention");
    let (b, hq, hkv, sq, sk, d) = (kb.dim("B"), kb.dim("HQ"), kb.dim("HKV"), kb.dim("SQ"), kb.dim("SK"), kb.dim("D"));
    kb.tensor("q", DType::BF16, vec![s(b), s(hq), s(sq), s(d)], false);
    kb.tensor("v", DType::BF16, vec![s(b), s(hkv), s(sk), s(d)], false);
    kb.tensor("k", DType::BF16, vec![s(b), s(hkv), s(sk), s(d)], false);
    kb.tensor("o", DType::BF16, vec![s(b), s(hq), s(sq), s(d)], true);
    kb.scalar_param("scale", DType::F32);
    kb.k.constraints.push(Constraint::MultipleOf(s(hq), s(hkv)));
    kb.k.constraints.push(Constraint::OneOf(s(d), vec![64, 128]));
    kb.grid(|kb| {
        let sqv = kb.dimv(sq);
        let e0 = kb.cdiv(sqv, 64);
        vec![e0, kb.dimv(hq), kb.dimv(b)]
    });
    kb.finish()
}

fn bf(shape: &[usize]) -> Arg {
    Arg::Tensor(Tensor::zeros(DType::BF16, shape))
}

fn attn_args(hq: usize, hkv: usize, sq: usize, sk_k: usize, sk_v: usize, d: usize) -> Vec<Arg> {
    vec![bf(&[2, hq, sq, d]), bf(&[2, hkv, sk_v, d]), bf(&[2, hkv, sk_k, d]), bf(&[2, hq, sq, d]), Arg::F32(0.125)]
}

#[test]
fn binds_dims_and_evaluates_the_grid() {
    let k = attn_like();
    let dims = bind_dims(&k, &attn_args(8, 2, 100, 128, 128, 64)).unwrap();
    assert_eq!(dims, vec![2, 8, 2, 100, 128, 64]);
    assert_eq!(grid(&k, &dims).unwrap(), [2, 8, 2]);
}

#[test]
fn mismatched_dim_names_the_binding_argument() {
    let k = attn_like();
    let e = bind_dims(&k, &attn_args(8, 2, 100, 133, 128, 64)).unwrap_err();
    assert_eq!(e.to_string(), "kernel `flash_attention`: argument `k`: dim 2 is 133 but `SK` is 128 (bound by argument `v`)");
    assert!(matches!(e, LaunchError::Arg { ref param, .. } if param == "k"));
}

#[test]
fn wrong_dtype() {
    let k = attn_like();
    let mut args = attn_args(8, 2, 100, 128, 128, 64);
    args[0] = Arg::Tensor(Tensor::zeros(DType::F16, &[2, 8, 100, 64]));
    assert_eq!(bind_dims(&k, &args).unwrap_err().to_string(), "kernel `flash_attention`: argument `q`: expected a bf16 tensor, got f16");
    let mut args = attn_args(8, 2, 100, 128, 128, 64);
    args[4] = Arg::I32(3);
    assert_eq!(bind_dims(&k, &args).unwrap_err().to_string(), "kernel `flash_attention`: argument `scale`: expected an f32 scalar, got an i32 scalar");
    let mut args = attn_args(8, 2, 100, 128, 128, 64);
    args[1] = Arg::F32(1.0);
    assert_eq!(bind_dims(&k, &args).unwrap_err().to_string(), "kernel `flash_attention`: argument `v`: expected a bf16 tensor, got an f32 scalar");
}

#[test]
fn wrong_rank_and_byte_count() {
    let k = attn_like();
    let mut args = attn_args(8, 2, 100, 128, 128, 64);
    args[3] = bf(&[2, 8, 100]);
    assert_eq!(
        bind_dims(&k, &args).unwrap_err().to_string(),
        "kernel `flash_attention`: argument `o`: expected a tensor of rank 4 ([B, HQ, SQ, D]), got rank 3 (shape [2, 8, 100])"
    );
    let mut args = attn_args(8, 2, 100, 128, 128, 64);
    if let Arg::Tensor(t) = &mut args[0] {
        t.data.pop();
    }
    assert_eq!(
        bind_dims(&k, &args).unwrap_err().to_string(),
        "kernel `flash_attention`: argument `q`: a bf16 tensor of shape [2, 8, 100, 64] needs 204800 bytes of data, got 204799"
    );
}

#[test]
fn constraint_violations() {
    let k = attn_like();
    assert_eq!(
        bind_dims(&k, &attn_args(6, 4, 100, 128, 128, 64)).unwrap_err().to_string(),
        "kernel `flash_attention`: constraint `HQ % HKV == 0` violated: HQ = 6, HKV = 4"
    );
    let e = bind_dims(&k, &attn_args(8, 2, 100, 128, 128, 80)).unwrap_err();
    assert_eq!(e.to_string(), "kernel `flash_attention`: dim `D` must be one of {64, 128}, got 80");
    assert!(matches!(e, LaunchError::Constraint { .. }));
}

#[test]
fn wrong_argument_count() {
    let k = attn_like();
    let mut args = attn_args(8, 2, 100, 128, 128, 64);
    args.pop();
    let e = bind_dims(&k, &args).unwrap_err();
    assert_eq!(e, LaunchError::ArgCount { kernel: "flash_attention".into(), expected: 5, got: 4 });
    assert_eq!(e.to_string(), "kernel `flash_attention` takes 5 arguments, got 4");
    // run reports the same
    let mut args = attn_args(8, 2, 100, 128, 128, 64);
    args.push(Arg::Bool(true));
    assert_eq!(interp::run(&k, &mut args).unwrap_err().to_string(), "kernel `flash_attention` takes 5 arguments, got 6");
}

/// w: u8[N, K / 2], scales: f32[N, K / 32], x: f32[M, K]: expressions are checked after binding.
fn quant_like() -> Kernel {
    let mut kb = KB::new("qgemm");
    let (m, n, k) = (kb.dim("M"), kb.dim("N"), kb.dim("K"));
    kb.tensor("x", DType::F32, vec![s(m), s(k)], false);
    kb.tensor("w", DType::U8, vec![s(n), div(s(k), c(2))], false);
    kb.tensor("scales", DType::F32, vec![s(n), div(s(k), c(32))], false);
    kb.tensor("y", DType::F32, vec![s(m), s(n)], true);
    kb.k.constraints.push(Constraint::Range(s(m), Some(1), Some(4096)));
    kb.k.constraints.push(Constraint::MultipleOf(s(k), c(32)));
    kb.grid(|kb| vec![kb.dimv(m)]);
    kb.finish()
}

fn qargs(m: usize, n: usize, k: usize, kw: usize, ks: usize) -> Vec<Arg> {
    vec![
        Arg::Tensor(Tensor::zeros(DType::F32, &[m, k])),
        Arg::Tensor(Tensor::zeros(DType::U8, &[n, kw])),
        Arg::Tensor(Tensor::zeros(DType::F32, &[n, ks])),
        Arg::Tensor(Tensor::zeros(DType::F32, &[m, n])),
    ]
}

#[test]
fn dim_expressions_and_ranges() {
    let k = quant_like();
    assert_eq!(bind_dims(&k, &qargs(3, 5, 64, 32, 2)).unwrap(), vec![3, 5, 64]);
    assert_eq!(
        bind_dims(&k, &qargs(3, 5, 64, 31, 2)).unwrap_err().to_string(),
        "kernel `qgemm`: argument `w`: dim 1 is 31 but `K / 2` is 32 (K = 64, bound by argument `x`)"
    );
    assert_eq!(
        bind_dims(&k, &qargs(3, 5, 48, 24, 1)).unwrap_err().to_string(),
        "kernel `qgemm`: argument `scales`: dim 1 is 1 but `K / 32` is not an integer (K = 48, bound by argument `x`)"
    );
    assert_eq!(bind_dims(&k, &qargs(0, 5, 64, 32, 2)).unwrap_err().to_string(), "kernel `qgemm`: constraint `M >= 1` violated: M = 0");
    assert_eq!(
        bind_dims(&k, &qargs(5000, 1, 64, 32, 2)).unwrap_err().to_string(),
        "kernel `qgemm`: constraint `M <= 4096` violated: M = 5000"
    );
}

#[test]
fn specialized_and_unbound_dims() {
    let mut kb = KB::new("spec");
    let d = kb.const_dim("D", 64);
    let n = kb.dim("N");
    let h = kb.dim("H");
    kb.tensor("x", DType::F32, vec![s(n), s(d)], false);
    kb.tensor("y", DType::F32, vec![s(n), mul(c(2), s(h))], true);
    kb.grid(|kb| vec![kb.i32c(1)]);
    let k = kb.finish();
    let args = vec![Arg::Tensor(Tensor::zeros(DType::F32, &[3, 80])), Arg::Tensor(Tensor::zeros(DType::F32, &[3, 8]))];
    assert_eq!(bind_dims(&k, &args).unwrap_err().to_string(), "kernel `spec`: argument `x`: dim 1 is 80 but `D` is specialized to 64");
    let args = vec![Arg::Tensor(Tensor::zeros(DType::F32, &[3, 64])), Arg::Tensor(Tensor::zeros(DType::F32, &[3, 8]))];
    assert_eq!(
        bind_dims(&k, &args).unwrap_err().to_string(),
        "kernel `spec`: dim `H` cannot be bound: it is not a dim on its own of any tensor parameter"
    );

    // a specialized dim that appears only in an expression is bound from its value
    let mut kb = KB::new("spec2");
    let g = kb.const_dim("G", 4);
    let n = kb.dim("N");
    kb.tensor("x", DType::F32, vec![s(n), mul(c(2), s(g))], false);
    kb.grid(|kb| vec![kb.i32c(1)]);
    let k = kb.finish();
    assert_eq!(bind_dims(&k, &[Arg::Tensor(Tensor::zeros(DType::F32, &[3, 8]))]).unwrap(), vec![4, 3]);
    assert_eq!(
        bind_dims(&k, &[Arg::Tensor(Tensor::zeros(DType::F32, &[3, 9]))]).unwrap_err().to_string(),
        "kernel `spec2`: argument `x`: dim 1 is 9 but `2 * G` is 8 (G = 4, specialized)"
    );
}

#[test]
fn packed_tensors_use_packed_byte_counts() {
    let mut kb = KB::new("packed");
    let n = kb.dim("N");
    kb.tensor("q", DType::I4, vec![s(n)], false);
    kb.grid(|kb| vec![kb.i32c(1)]);
    let k = kb.finish();
    assert_eq!(bind_dims(&k, &[Arg::Tensor(Tensor::zeros(DType::I4, &[7]))]).unwrap(), vec![7]);
    let bad = Tensor { dtype: DType::I4, shape: vec![7], data: vec![0; 7] };
    assert_eq!(
        bind_dims(&k, &[Arg::Tensor(bad)]).unwrap_err().to_string(),
        "kernel `packed`: argument `q`: an i4 tensor of shape [7] needs 4 bytes of data, got 7"
    );
}

#[test]
fn grid_evaluation() {
    // grid(max(N - 10, 0) , min(N, 3), select(N > 5, 2, 7)) and a negative extent
    let mut kb = KB::new("g");
    let n = kb.dim("N");
    kb.tensor("x", DType::F32, vec![s(n)], false);
    kb.grid(|kb| {
        let nv = kb.dimv(n);
        let ten = kb.i32c(10);
        let z = kb.i32c(0);
        let t = kb.sub(nv, ten);
        let a = kb.bin(BinaryOp::Max, t, z);
        let three = kb.i32c(3);
        let b = kb.bin(BinaryOp::Min, nv, three);
        let five = kb.i32c(5);
        let cnd = kb.cmp(CmpPred::Gt, nv, five);
        let two = kb.i32c(2);
        let seven = kb.i32c(7);
        let cc = kb.select(cnd, two, seven);
        vec![a, b, cc]
    });
    let k = kb.finish();
    assert_eq!(grid(&k, &[12]).unwrap(), [2, 3, 2]);
    assert_eq!(grid(&k, &[4]).unwrap(), [0, 3, 7]);

    let mut kb = KB::new("neg");
    let n = kb.dim("N");
    kb.tensor("x", DType::F32, vec![s(n)], false);
    kb.grid(|kb| {
        let nv = kb.dimv(n);
        let ten = kb.i32c(10);
        vec![kb.sub(nv, ten)]
    });
    let k = kb.finish();
    assert_eq!(grid(&k, &[4]).unwrap_err().to_string(), "kernel `neg`: grid extent 0 is negative: -6");
    assert_eq!(grid(&k, &[14]).unwrap(), [4, 1, 1]);
    // a zero-sized grid runs nothing
    let mut args = vec![Arg::Tensor(Tensor::zeros(DType::F32, &[10]))];
    interp::run(&k, &mut args).unwrap();
}
