//! `ascendc-sim`: the AscendC backend's output run on opc's CPU model of the API, as an
//! in-process [`Target`] (so `opc verify --target ascendc-sim` and the operator drivers can
//! use it).
//!
//! `compile` renders the kernel, writes the three sources, the model headers and a generic
//! driver (`main.cpp`) to a scratch directory and builds them with `g++ -std=c++17 -O1`
//! (`$CXX` overrides the compiler). `launch` runs the executable once per call in its own
//! directory: the tensors travel as files, the launch-time dims and scalars as `params.txt`;
//! a model error (pipe hazard, queue imbalance, overflow, a hung cross-core flag) is a launch
//! error carrying the model's message. One build serves every shape.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use opc_ir::launch::LaunchError;
use opc_ir::{Arg, DType, Kernel, ParamKind};

use super::emit::camel;
use super::Sources;
use crate::{CodegenError, Executable, Result, Target};

/// The `ascendc-sim` target.
pub struct AscendcSimTarget;

impl Target for AscendcSimTarget {
    fn name(&self) -> &'static str {
        "ascendc-sim"
    }

    fn compile(&self, kernel: &Kernel) -> Result<Arc<dyn Executable>> {
        let c = super::compile(kernel)?;
        Ok(Arc::new(SimExe::build(kernel, &c.sources)?))
    }
}

/// A kernel built against the CPU model.
pub struct SimExe {
    kernel: Kernel,
    dir: PathBuf,
    runs: AtomicU64,
    /// Seconds a cross-core wait may block before the model reports a missing flag.
    pub flag_timeout_s: u32,
    /// Have the model print its instruction counts (`model-count API SIZE CALLS` lines) to the
    /// stdout [`SimExe::run`] returns.
    pub counts: bool,
}

static BUILDS: AtomicU64 = AtomicU64::new(0);

fn fail(kernel: &Kernel, why: String) -> CodegenError {
    CodegenError::Unsupported { kernel: kernel.name.clone(), target: "ascendc-sim".into(), reason: why }
}

impl SimExe {
    /// Build `sources` (as emitted for `kernel`, possibly edited) with the generic driver.
    pub fn build(kernel: &Kernel, sources: &Sources) -> Result<SimExe> {
        let n = BUILDS.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("opc-ascendc-sim-{}-{}-{n}", kernel.name, std::process::id()));
        let io = |e: std::io::Error| fail(kernel, format!("scratch directory {}: {e}", dir.display()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(io)?;
        let files = [
            (format!("{}.cpp", kernel.name), sources.kernel_cpp.as_str()),
            (format!("{}_tiling.h", kernel.name), sources.tiling_h.as_str()),
            (format!("{}_launch.cpp", kernel.name), sources.launch_cpp.as_str()),
            ("kernel_operator.h".to_string(), super::MODEL_KERNEL_OPERATOR_H),
            ("tikicpulib.h".to_string(), super::MODEL_TIKICPULIB_H),
        ];
        for (name, text) in files {
            std::fs::write(dir.join(name), text).map_err(io)?;
        }
        std::fs::write(dir.join("main.cpp"), driver_cpp(kernel)).map_err(io)?;
        let cxx = std::env::var("CXX").unwrap_or_else(|_| "g++".into());
        let out = Command::new(&cxx)
            .args(["-std=c++17", "-O1", "-pthread", "-DASCENDC_CPU_DEBUG=1", "-I.", "main.cpp", "-o", "sim"])
            .current_dir(&dir)
            .output()
            .map_err(|e| fail(kernel, format!("cannot run `{cxx}`: {e}")))?;
        if !out.status.success() {
            return Err(fail(kernel, format!("`{cxx}` rejected the generated code (kept in {}):\n{}", dir.display(), String::from_utf8_lossy(&out.stderr))));
        }
        Ok(SimExe { kernel: kernel.clone(), dir, runs: AtomicU64::new(0), flag_timeout_s: 60, counts: false })
    }

    /// The scratch directory (sources and executable).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Run once; returns the driver's stdout (`blockDim=N workspace=BYTES`, after the model's
    /// instruction counts when [`SimExe::counts`] is set).
    pub fn run(&self, args: &mut [Arg]) -> Result<String> {
        let k = &self.kernel;
        let dims = opc_ir::launch::bind_dims(k, args)?;
        opc_ir::launch::grid(k, &dims)?;
        let n = self.runs.fetch_add(1, Ordering::SeqCst);
        let run = self.dir.join(format!("run{n}"));
        let exec = |msg: String| CodegenError::Launch(LaunchError::Exec { kernel: k.name.clone(), msg });
        std::fs::create_dir_all(&run).map_err(|e| exec(e.to_string()))?;
        let mut params = String::new();
        for (d, sym) in k.dims.iter().enumerate() {
            if !(sym.konst && sym.value.is_some()) {
                params.push_str(&format!("{}\n", dims[d]));
            }
        }
        for (i, a) in args.iter().enumerate() {
            match a {
                Arg::Tensor(t) => std::fs::write(run.join(format!("arg{i}.bin")), &t.data).map_err(|e| exec(e.to_string()))?,
                Arg::F32(f) => params.push_str(&format!("{}\n", f.to_bits())),
                Arg::I32(v) => params.push_str(&format!("{v}\n")),
                Arg::Bool(b) => params.push_str(&format!("{}\n", *b as i32)),
            }
        }
        std::fs::write(run.join("params.txt"), params).map_err(|e| exec(e.to_string()))?;
        let mut cmd = Command::new(self.dir.join("sim"));
        cmd.current_dir(&run).env("OPC_MODEL_FLAG_TIMEOUT", self.flag_timeout_s.to_string());
        if self.counts {
            cmd.env("OPC_MODEL_COUNTS", "1");
        }
        let out = cmd
            .output()
            .map_err(|e| exec(e.to_string()))?;
        if !out.status.success() {
            return Err(exec(format!("the AscendC CPU model stopped ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr).trim_end())));
        }
        for (i, a) in args.iter_mut().enumerate() {
            if let (Arg::Tensor(t), ParamKind::Tensor { output: true, .. }) = (a, &k.params[i].kind) {
                t.data = std::fs::read(run.join(format!("arg{i}.out"))).map_err(|e| exec(e.to_string()))?;
            }
        }
        let _ = std::fs::remove_dir_all(&run);
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Executable for SimExe {
    fn launch(&self, args: &mut [Arg]) -> Result<()> {
        self.run(args).map(|_| ())
    }

    fn kernel(&self) -> &Kernel {
        &self.kernel
    }
}

impl Drop for SimExe {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The generic driver: reads the launch-time dims and scalars (`params.txt`) and the tensors,
/// runs the host tiling function and the launch stub, writes the output tensors.
fn driver_cpp(k: &Kernel) -> String {
    let c = camel(&k.name);
    let mut s = format!(
        "// Test driver of `{n}` on opc's AscendC CPU model.\n#include \"{n}.cpp\"\n#include \"{n}_launch.cpp\"\n#include <fstream>\n#include <iterator>\n#include <vector>\n\n",
        n = k.name
    );
    s.push_str("static std::vector<uint8_t> Load(const char* p)\n{\n    std::ifstream f(p, std::ios::binary);\n    std::vector<uint8_t> v((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());\n    v.resize(v.size() + 64);\n    return v;\n}\n\n");
    s.push_str("int main()\n{\n    std::ifstream pf(\"params.txt\");\n    long long v = 0;\n");
    s.push_str(&format!("    {c}Shape shape{{}};\n"));
    for sym in &k.dims {
        if !(sym.konst && sym.value.is_some()) {
            s.push_str(&format!("    pf >> v;\n    shape.{} = static_cast<int32_t>(v);\n", sym.name));
        }
    }
    let mut targs = vec!["shape".to_string()];
    let mut tensors = vec![];
    for (i, p) in k.params.iter().enumerate() {
        match &p.kind {
            ParamKind::Tensor { output, .. } => {
                s.push_str(&format!("    std::vector<uint8_t> a{i} = Load(\"arg{i}.bin\");\n    const size_t n{i} = a{i}.size() - 64;\n"));
                tensors.push((i, *output));
            }
            ParamKind::Scalar { dtype } => {
                let e = match dtype {
                    DType::F32 => "opc_model::BitsF32(static_cast<uint32_t>(v))".to_string(),
                    DType::Bool => "v != 0".to_string(),
                    _ => "static_cast<int32_t>(v)".to_string(),
                };
                s.push_str(&format!("    pf >> v;\n    const auto p{i} = {e};\n"));
                targs.push(format!("p{i}"));
            }
        }
    }
    targs.push("&td".into());
    targs.push("&ws".into());
    s.push_str(&format!("    {c}TilingData td{{}};\n    uint64_t ws = 0;\n    const uint32_t blockDim = {c}Tiling({});\n", targs.join(", ")));
    s.push_str("    std::vector<uint8_t> workspace(ws + 64, 0);  // zero-initialized, as the tiling header requires\n");
    s.push_str("    opc_model::TrackGm(workspace.data(), ws);  // the model's cross-core race detector\n");
    let ptrs: Vec<String> = tensors.iter().map(|(i, _)| format!("a{i}.data()")).collect();
    s.push_str(&format!("    Launch{c}(blockDim, nullptr, {}, workspace.data(), reinterpret_cast<uint8_t*>(&td));\n", ptrs.join(", ")));
    for (i, out) in &tensors {
        if *out {
            s.push_str(&format!("    {{\n        std::ofstream f(\"arg{i}.out\", std::ios::binary);\n        f.write(reinterpret_cast<const char*>(a{i}.data()), static_cast<std::streamsize>(n{i}));\n    }}\n"));
        }
    }
    s.push_str("    std::printf(\"blockDim=%u workspace=%llu\\n\", blockDim, static_cast<unsigned long long>(ws));\n    return 0;\n}\n");
    s
}
