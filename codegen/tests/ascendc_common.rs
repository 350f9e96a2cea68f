//! Shared harness of the `ascendc_*` tests: compile an operator-library kernel through the real
//! pipeline, render it for the `ascendc` target, build the emitted files with g++ against opc's
//! CPU model of the AscendC API (`codegen/src/ascendc/model/`), run them on host tensors and
//! compare with the interpreter.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use opc_dsl::Instance;
use opc_ir::{Arg, DType, Kernel, ParamKind, Tensor};

/// Kernel `name` of library file `file` (`ops/kernels/FILE.opc`), after the default pipeline.
pub fn kernel(file: &str, name: &str, inst: &Instance) -> Kernel {
    let src = opc_ops::SOURCES.iter().find(|(n, _)| *n == file).unwrap_or_else(|| panic!("no library file {file}")).1;
    let mut k = opc_dsl::compile(&format!("ops/kernels/{file}.opc"), src, name, inst).unwrap_or_else(|d| panic!("{d}"));
    opc_passes::run_pipeline(&mut k, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
    k
}

/// Kernel `name` of DSL source `src`, after the default pipeline.
pub fn kernel_src(src: &str, name: &str, inst: &Instance) -> Kernel {
    let mut k = opc_dsl::compile("test.opc", src, name, inst).unwrap_or_else(|d| panic!("{d}"));
    opc_passes::run_pipeline(&mut k, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
    k
}

/// Deterministic xorshift data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0 | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in [-a, a).
    pub fn f(&mut self, a: f32) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
    }
    pub fn tensor(&mut self, d: DType, shape: &[usize], a: f32) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.f(a)).collect();
        Tensor::from_f32(d, shape, &v)
    }
    pub fn raw(&mut self, d: DType, shape: &[usize]) -> Tensor {
        let mut t = Tensor::zeros(d, shape);
        for b in t.data.iter_mut() {
            *b = self.next() as u8;
        }
        t
    }
}

static RUN: AtomicUsize = AtomicUsize::new(0);

/// A scratch directory holding the emitted files and the model headers.
pub fn scratch(name: &str) -> PathBuf {
    let n = RUN.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("opc-ascendc-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    std::fs::write(dir.join("kernel_operator.h"), opc_codegen::ascendc::MODEL_KERNEL_OPERATOR_H).expect("write");
    std::fs::write(dir.join("tikicpulib.h"), opc_codegen::ascendc::MODEL_TIKICPULIB_H).expect("write");
    dir
}

fn camel(s: &str) -> String {
    s.split('_').filter(|p| !p.is_empty()).map(|p| p[..1].to_uppercase() + &p[1..]).collect()
}

/// The test driver: reads the inputs, runs the host tiling function and the launch stub,
/// writes the outputs.
fn main_cpp(k: &Kernel, args: &[Arg], dims: &[i64]) -> String {
    let c = camel(&k.name);
    let mut s = format!("#include \"{n}.cpp\"\n#include \"{n}_launch.cpp\"\n#include <fstream>\n#include <iterator>\n#include <vector>\n\n", n = k.name);
    s.push_str("static std::vector<uint8_t> Load(const char* p)\n{\n    std::ifstream f(p, std::ios::binary);\n    std::vector<uint8_t> v((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());\n    v.resize(v.size() + 64);\n    return v;\n}\n\n");
    s.push_str("int main()\n{\n");
    let mut tensors = vec![];
    let mut scalars = vec![];
    for (i, (p, a)) in k.params.iter().zip(args).enumerate() {
        match (&p.kind, a) {
            (ParamKind::Tensor { .. }, Arg::Tensor(t)) => {
                s.push_str(&format!("    std::vector<uint8_t> a{i} = Load(\"arg{i}.bin\");\n"));
                tensors.push((i, t.data.len()));
            }
            (_, Arg::F32(f)) => scalars.push(format!("opc_model::BitsF32({}u)", f.to_bits())),
            (_, Arg::I32(v)) => scalars.push(format!("{v}")),
            (_, Arg::Bool(b)) => scalars.push(format!("{b}")),
            _ => panic!("argument {i} does not match its parameter"),
        }
    }
    s.push_str(&format!("    {c}Shape shape{{}};\n"));
    for (d, sym) in k.dims.iter().enumerate() {
        if !(sym.konst && sym.value.is_some()) {
            s.push_str(&format!("    shape.{} = {};\n", sym.name, dims[d]));
        }
    }
    s.push_str(&format!("    {c}TilingData td{{}};\n    uint64_t ws = 0;\n"));
    let mut targs = vec!["shape".to_string()];
    targs.extend(scalars);
    targs.push("&td".into());
    targs.push("&ws".into());
    s.push_str(&format!("    const uint32_t blockDim = {c}Tiling({});\n", targs.join(", ")));
    s.push_str("    std::vector<uint8_t> workspace(ws + 64);\n");
    let ptrs: Vec<String> = tensors.iter().map(|(i, _)| format!("a{i}.data()")).collect();
    s.push_str(&format!("    Launch{c}(blockDim, nullptr, {}, workspace.data(), reinterpret_cast<uint8_t*>(&td));\n", ptrs.join(", ")));
    for (i, n) in &tensors {
        if let ParamKind::Tensor { output: true, .. } = k.params[*i].kind {
            s.push_str(&format!("    {{\n        std::ofstream f(\"arg{i}.out\", std::ios::binary);\n        f.write(reinterpret_cast<const char*>(a{i}.data()), {n});\n    }}\n"));
        }
    }
    s.push_str("    std::printf(\"blockDim=%u workspace=%llu\\n\", blockDim, static_cast<unsigned long long>(ws));\n    return 0;\n}\n");
    s
}

/// What one simulated run produced.
pub struct SimRun {
    pub dir: PathBuf,
    pub stdout: String,
}

/// Build the rendered `kernel_cpp` (possibly edited by the caller) and run it on `args`;
/// outputs are written back into `args`. Err carries the compiler's or the model's message.
pub fn run_sources(k: &Kernel, sources: &opc_codegen::ascendc::Sources, args: &mut [Arg]) -> Result<SimRun, String> {
    run_sources_with(k, sources, args, 60)
}

/// As [`run_sources`], with the model's cross-core wait limit in seconds.
pub fn run_sources_with(k: &Kernel, sources: &opc_codegen::ascendc::Sources, args: &mut [Arg], flag_timeout_s: u32) -> Result<SimRun, String> {
    let dims = opc_ir::launch::bind_dims(k, args).map_err(|e| e.to_string())?;
    let dir = scratch(&k.name);
    std::fs::write(dir.join(format!("{}.cpp", k.name)), &sources.kernel_cpp).map_err(|e| e.to_string())?;
    std::fs::write(dir.join(format!("{}_tiling.h", k.name)), &sources.tiling_h).map_err(|e| e.to_string())?;
    std::fs::write(dir.join(format!("{}_launch.cpp", k.name)), &sources.launch_cpp).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("main.cpp"), main_cpp(k, args, &dims)).map_err(|e| e.to_string())?;
    for (i, a) in args.iter().enumerate() {
        if let Arg::Tensor(t) = a {
            std::fs::write(dir.join(format!("arg{i}.bin")), &t.data).map_err(|e| e.to_string())?;
        }
    }
    let cc = Command::new("g++")
        .args(["-std=c++17", "-O1", "-pthread", "-DASCENDC_CPU_DEBUG=1", "-I."])
        .args(["main.cpp", "-o", "sim"])
        .current_dir(&dir)
        .output()
        .map_err(|e| format!("g++ did not start: {e}"))?;
    if !cc.status.success() {
        return Err(format!("g++ failed in {}:\n{}", dir.display(), String::from_utf8_lossy(&cc.stderr)));
    }
    let run = Command::new(dir.join("sim")).current_dir(&dir).env("OPC_MODEL_FLAG_TIMEOUT", flag_timeout_s.to_string()).output().map_err(|e| e.to_string())?;
    if !run.status.success() {
        return Err(format!("simulation failed ({}):\n{}", run.status, String::from_utf8_lossy(&run.stderr)));
    }
    for (i, a) in args.iter_mut().enumerate() {
        if let (Arg::Tensor(t), ParamKind::Tensor { output: true, .. }) = (a, &k.params[i].kind) {
            let bytes = std::fs::read(dir.join(format!("arg{i}.out"))).map_err(|e| e.to_string())?;
            t.data = bytes;
        }
    }
    Ok(SimRun { dir, stdout: String::from_utf8_lossy(&run.stdout).into_owned() })
}

/// Render `k` for `ascendc`, run it on the model and on the interpreter, and require the
/// outputs to agree within per-dtype tolerances.
pub fn check_against_interp(k: &Kernel, args: &[Arg]) -> String {
    let compiled = opc_codegen::ascendc::compile(k).unwrap_or_else(|e| panic!("ascendc compile: {e}"));
    let mut sim = args.to_vec();
    let run = run_sources(k, &compiled.sources, &mut sim).unwrap_or_else(|e| panic!("{e}"));
    let mut want = args.to_vec();
    opc_ir::interp::run(k, &mut want).unwrap_or_else(|e| panic!("interp: {e}"));
    for (i, (w, g)) in want.iter().zip(&sim).enumerate() {
        if let (Arg::Tensor(w), Arg::Tensor(g), ParamKind::Tensor { output: true, .. }) = (w, g, &k.params[i].kind) {
            assert_close(&k.params[i].name, w, g);
        }
    }
    let _ = std::fs::remove_dir_all(&run.dir);
    run.stdout
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
