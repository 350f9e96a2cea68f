//! `Executable::launch_refs` (borrowed arguments) against `Executable::launch` (owned ones) on
//! every target built in: the same outputs bit for bit, inputs left untouched, an `out` tensor
//! that is read and written in place, and the same launch errors, word for word (wrong shape,
//! wrong dtype, wrong kind, wrong count). The JIT targets (`cpu`, `llvm`) run borrowed launches
//! on the callers' buffers; the others go through the trait's copying default.

#[path = "jit_common.rs"]
mod common;

use common::{kernel, Rng};
use opc_codegen::{Executable, TARGETS};
use opc_dsl::Instance;
use opc_ir::{Arg, ArgRef, DType, Kernel, Tensor};
use std::sync::Arc;

const BLOCKS: &str = include_str!("../../ops/kernels/blocks.opc");

/// y = a·x + y: an `out` tensor the kernel reads before writing.
const AXPY: &str = r#"
kernel axpy(x: f32[N], y: out f32[N], a: f32)
tunables { B: level1 in {16, 64} = 16 }
grid(cdiv(N, B))
{
    let i = program_id(0) * B + arange(B);
    let m = i < N;
    store(y[i], a * load(x[i], mask: m, other: 0.0) + load(y[i], mask: m, other: 0.0), mask: m);
}
"#;

fn compile(target: &str, k: &Kernel) -> Arc<dyn Executable> {
    opc_codegen::target_by_name(target).unwrap().compile(k).unwrap_or_else(|e| panic!("{target}: {e}"))
}

/// Borrow owned arguments the way a driver lends them: `out` parameters as `Out`, others `In`.
fn lend<'a>(k: &Kernel, args: &'a mut [Arg]) -> Vec<ArgRef<'a>> {
    args.iter_mut()
        .zip(&k.params)
        .map(|(a, p)| match a {
            Arg::Tensor(t) => match p.kind {
                opc_ir::ParamKind::Tensor { output: true, .. } => ArgRef::Out(t),
                _ => ArgRef::In(t),
            },
            Arg::F32(x) => ArgRef::F32(*x),
            Arg::I32(x) => ArgRef::I32(*x),
            Arg::Bool(b) => ArgRef::Bool(*b),
        })
        .collect()
}

/// Both launch forms on copies of `args`: equal results (and outputs, bit for bit); inputs of
/// the borrowed launch unchanged. Returns the error text, if any.
fn both(target: &str, exe: &dyn Executable, args: &[Arg]) -> Option<String> {
    let mut owned = args.to_vec();
    let r_owned = exe.launch(&mut owned).map_err(|e| e.to_string());
    let mut lent = args.to_vec();
    let r_lent = exe.launch_refs(&mut lend(exe.kernel(), &mut lent)).map_err(|e| e.to_string());
    assert_eq!(r_owned, r_lent, "{target} `{}`: launch and launch_refs disagree", exe.kernel().name);
    if r_owned.is_ok() {
        assert_eq!(owned, lent, "{target} `{}`: outputs differ", exe.kernel().name);
    }
    for ((p, a), orig) in exe.kernel().params.iter().zip(&lent).zip(args) {
        if !matches!(p.kind, opc_ir::ParamKind::Tensor { output: true, .. }) {
            assert_eq!(a, orig, "{target}: input `{}` changed", p.name);
        }
    }
    r_owned.err()
}

fn matmul_args(rng: &mut Rng, d: DType, m: usize, n: usize, k: usize) -> Vec<Arg> {
    vec![
        Arg::Tensor(rng.tensor_f(d, &[m, k], false)),
        Arg::Tensor(rng.tensor_f(d, &[k, n], false)),
        Arg::Tensor(rng.tensor_f(DType::F32, &[n], false)),
        Arg::Tensor(Tensor::zeros(d, &[m, n])),
        Arg::Bool(true),
    ]
}

#[test]
fn same_results_on_every_target() {
    let mut rng = Rng(7);
    for d in [DType::F32, DType::BF16] {
        let inst = Instance::default().dtype("T", d).tunable("BM", 16).tunable("BN", 16).tunable("BK", 16);
        let mm = kernel(BLOCKS, "matmul", &inst);
        let rms = kernel(BLOCKS, "rmsnorm", &Instance::default().dtype("T", d).dtype("O", d).tunable("BT", 2).tunable("BH", 64));
        let mm_args = matmul_args(&mut rng, d, 37, 21, 45);
        let rms_args = vec![
            Arg::Tensor(rng.tensor_f(d, &[5, 50], false)),
            Arg::Tensor(rng.tensor_f(d, &[50], false)),
            Arg::Tensor(Tensor::zeros(d, &[5, 50])),
            Arg::F32(1e-5),
        ];
        for &t in TARGETS {
            assert_eq!(both(t, &*compile(t, &mm), &mm_args), None);
            assert_eq!(both(t, &*compile(t, &rms), &rms_args), None);
        }
    }
}

#[test]
fn out_tensor_is_read_and_written_in_place() {
    let k = kernel(AXPY, "axpy", &Instance::default());
    let mut rng = Rng(3);
    let x = rng.tensor_f(DType::F32, &[41], false);
    let y0 = rng.tensor_f(DType::F32, &[41], false);
    for &t in TARGETS {
        let exe = compile(t, &k);
        assert_eq!(both(t, &*exe, &[Arg::Tensor(x.clone()), Arg::Tensor(y0.clone()), Arg::F32(2.0)]), None);
        let mut y = y0.clone();
        let at = y.data.as_ptr();
        exe.launch_refs(&mut [ArgRef::In(&x), ArgRef::Out(&mut y), ArgRef::F32(2.0)]).unwrap();
        if ["cpu", "llvm"].contains(&t) {
            assert_eq!(y.data.as_ptr(), at, "{t}: the JIT wrote a copy, not the lent buffer");
        }
        let want: Vec<f32> = x.to_f32_vec().iter().zip(y0.to_f32_vec()).map(|(a, b)| 2.0 * a + b).collect();
        assert_eq!(y.to_f32_vec(), want, "{t}");
    }
}

#[test]
fn same_errors_on_every_target() {
    let mut rng = Rng(11);
    let inst = Instance::default().dtype("T", DType::BF16).tunable("BM", 16).tunable("BN", 16).tunable("BK", 16);
    let mm = kernel(BLOCKS, "matmul", &inst);
    let good = matmul_args(&mut rng, DType::BF16, 20, 24, 32);
    let mut cases: Vec<(Vec<Arg>, &str)> = vec![];
    // wrong shape: b is [K+1, N]
    let mut a = good.clone();
    a[1] = Arg::Tensor(rng.tensor_f(DType::BF16, &[33, 24], false));
    cases.push((a, "argument `b`: dim 0 is 33 but `K` is 32"));
    // wrong dtype: a is f16
    let mut a = good.clone();
    a[0] = Arg::Tensor(rng.tensor_f(DType::F16, &[20, 32], false));
    cases.push((a, "argument `a`: expected a bf16 tensor, got f16"));
    // wrong kind: a scalar for the bias tensor, a tensor for the flag
    let mut a = good.clone();
    a[2] = Arg::F32(1.0);
    cases.push((a, "argument `bias`: expected an f32 tensor, got an f32 scalar"));
    let mut a = good.clone();
    a[4] = Arg::Tensor(Tensor::zeros(DType::Bool, &[1]));
    cases.push((a, "argument `has_bias`: expected a bool scalar, got a bool tensor"));
    // wrong byte count for the shape
    let mut a = good.clone();
    if let Arg::Tensor(t) = &mut a[3] {
        t.data.pop();
    }
    cases.push((a, "needs 960 bytes of data, got 959"));
    // wrong count
    cases.push((good[..4].to_vec(), "takes 5 arguments, got 4"));
    for &t in TARGETS {
        let exe = compile(t, &mm);
        for (args, want) in &cases {
            let e = both(t, &*exe, args).unwrap_or_else(|| panic!("{t}: `{want}` accepted"));
            assert!(e.contains(want), "{t}: expected `{want}`, got `{e}`");
        }
    }
}

#[test]
fn out_parameter_lent_read_only_is_rejected() {
    let k = kernel(AXPY, "axpy", &Instance::default());
    let x = Tensor::from_f32(DType::F32, &[4], &[1.0, 2.0, 3.0, 4.0]);
    let y = Tensor::zeros(DType::F32, &[4]);
    for &t in TARGETS {
        let e = compile(t, &k).launch_refs(&mut [ArgRef::In(&x), ArgRef::In(&y), ArgRef::F32(1.0)]).unwrap_err().to_string();
        assert_eq!(
            e,
            "kernel `axpy`: argument `y`: is an `out` tensor, written by the kernel: lend it as `ArgRef::Out`, not `ArgRef::In`",
            "{t}"
        );
        assert_eq!(y.to_f32_vec(), [0.0; 4], "{t}: written through an `In` tensor");
        // A shape error comes first, as in an owned launch.
        let short = Tensor::zeros(DType::F32, &[3]);
        let e = compile(t, &k).launch_refs(&mut [ArgRef::In(&x), ArgRef::In(&short), ArgRef::F32(1.0)]).unwrap_err().to_string();
        assert!(e.contains("argument `y`: dim 0 is 3 but `N` is 4"), "{t}: {e}");
    }
}
