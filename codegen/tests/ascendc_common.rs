//! Shared harness of the `ascendc_*` tests: compile an operator-library kernel through the real
//! pipeline, render it for the `ascendc` target, build the emitted files with g++ against opc's
//! CPU model of the AscendC API (`codegen/src/ascendc/model/`), run them on host tensors and
//! compare with the interpreter.
#![allow(dead_code)]

use opc_codegen::ascendc::sim::SimExe;
use opc_codegen::ascendc::Sources;
use opc_dsl::Instance;
use opc_ir::{Arg, DType, Kernel, ParamKind, Tensor};

/// Kernel `name` of library file `file` (`ops/kernels/FILE.opc`), after the default pipeline.
pub fn kernel(file: &str, name: &str, inst: &Instance) -> Kernel {
    let src = opc_ops::SOURCES.iter().find(|(n, _)| *n == file).unwrap_or_else(|| panic!("no library file {file}")).1;
    let mut k = opc_dsl::compile(&format!("ops/kernels/{file}.opc"), src, name, inst).unwrap_or_else(|d| panic!("{d}"));
    opc_passes::run_pipeline(&mut k, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
    k
}

/// Every kernel of the operator library (`ops/kernels/*.opc`) at its representative instance,
/// after the default pipeline, named `FILE::KERNEL`.
pub fn library() -> Vec<(String, Kernel)> {
    let mut out = vec![];
    for (file, src) in opc_ops::SOURCES {
        let names = opc_dsl::check(file, src).unwrap_or_else(|d| panic!("{d}"));
        for n in names {
            let mut k = opc_dsl::compile_representative(file, src, &n, &Instance::default()).unwrap_or_else(|d| panic!("{d}"));
            opc_passes::run_pipeline(&mut k, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
            out.push((format!("{file}::{n}"), k));
        }
    }
    out
}

/// Kernel `name` of DSL source `src`, after the default pipeline.
pub fn kernel_src(src: &str, name: &str, inst: &Instance) -> Kernel {
    let mut k = opc_dsl::compile("test.opc", src, name, inst).unwrap_or_else(|d| panic!("{d}"));
    opc_passes::run_pipeline(&mut k, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
    k
}

/// Column sums combined across cores with `atomic_add` (`SetAtomicAdd` on the AIVs): each
/// level-1 program adds its BM rows' partial sums into `y`.
pub const COL_SUM: &str = r#"
kernel col_sum(x: f32[M, N], y: out f32[N])
tunables { BM: level1 in {8} = 8, BN: level2 in {64} = 64 }
grid(cdiv(M, BM))
{
    let rows = program_id(0) * BM + arange(BM);
    let cols = arange(BN);
    let v = load(x[rows, cols], mask: rows[:, None] < M, other: 0.0);
    atomic_add(y[cols], sum(v, 0));
}
"#;

#[path = "common/rng.rs"]
mod rng;
#[allow(unused_imports)]
pub use rng::Rng;

/// Build `sources` (as emitted for `k`, possibly edited) against the CPU model and run them on
/// `args`; outputs are written back into `args`. Err carries g++'s or the model's message.
pub fn run_sources(k: &Kernel, sources: &Sources, args: &mut [Arg]) -> Result<String, String> {
    run_sources_with(k, sources, args, 60)
}

/// As [`run_sources`], with the model's cross-core wait limit in seconds.
pub fn run_sources_with(k: &Kernel, sources: &Sources, args: &mut [Arg], flag_timeout_s: u32) -> Result<String, String> {
    let mut exe = SimExe::build(k, sources).map_err(|e| e.to_string())?;
    exe.flag_timeout_s = flag_timeout_s;
    exe.run(args).map_err(|e| e.to_string())
}

/// Render `k` for `ascendc` and build it against the CPU model.
pub fn build(k: &Kernel) -> SimExe {
    let compiled = opc_codegen::ascendc::compile(k).unwrap_or_else(|e| panic!("ascendc compile: {e}"));
    SimExe::build(k, &compiled.sources).unwrap_or_else(|e| panic!("{e}"))
}

/// Run a built kernel and the interpreter on copies of `args`; the outputs must agree within
/// per-dtype tolerances. Returns the driver's stdout.
pub fn check_run(exe: &SimExe, k: &Kernel, args: &[Arg]) -> String {
    let mut sim = args.to_vec();
    let out = exe.run(&mut sim).unwrap_or_else(|e| panic!("{e}"));
    let mut want = args.to_vec();
    opc_ir::interp::run(k, &mut want).unwrap_or_else(|e| panic!("interp: {e}"));
    for (i, (w, g)) in want.iter().zip(&sim).enumerate() {
        if let (Arg::Tensor(w), Arg::Tensor(g), ParamKind::Tensor { output: true, .. }) = (w, g, &k.params[i].kind) {
            assert_close(&k.params[i].name, w, g);
        }
    }
    out
}

/// Render, build and run `k` once against the interpreter.
pub fn check_against_interp(k: &Kernel, args: &[Arg]) -> String {
    check_run(&build(k), k, args)
}

/// Per-dtype tolerance: |got - want| <= atol + rtol·|want|; NaN matches NaN, infinities exactly.
pub fn assert_close(name: &str, want: &Tensor, got: &Tensor) {
    assert_eq!(want.data.len(), got.data.len(), "`{name}`: sizes differ");
    let (atol, rtol) = match want.dtype {
        DType::F32 => (1e-4, 1e-4),
        DType::F16 => (2e-3, 4e-3),
        DType::BF16 => (1.6e-2, 1.6e-2),
        _ => (0.0, 0.0),
    };
    let mut bad = vec![];
    for i in 0..want.numel() {
        let (w, g) = (want.get_f64(i), got.get_f64(i));
        let ok = if w.is_nan() || g.is_nan() {
            w.is_nan() && g.is_nan()
        } else if w.is_infinite() || g.is_infinite() {
            w == g
        } else {
            (w - g).abs() <= atol + rtol * w.abs()
        };
        if !ok {
            bad.push((i, w, g));
        }
    }
    assert!(bad.is_empty(), "`{name}` ({}): {} of {} elements differ, first: {:?}", want.dtype, bad.len(), want.numel(), &bad[..bad.len().min(8)]);
}
