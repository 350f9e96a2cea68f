//! The in-process `ptx` target (cargo feature `cuda`): render, load through the CUDA driver API,
//! move tensors, launch, copy results back.
//!
//! The driver library is loaded at run time (`cudarc` with dynamic loading), so building needs
//! no CUDA; its presence is checked with `is_culib_present()` before anything else touches it
//! (creating a context with no driver would panic), and its absence is the error
//! "no CUDA driver". One context on device 0 is created on first use and shared.
//!
//! A launch mirrors the interpreter: [`opc_ir::launch::bind_dims`] and
//! [`opc_ir::launch::grid`] first (identical launch errors), then every tensor is copied to a
//! fresh device buffer padded to a multiple of 4 bytes (the packed-nibble stores of `memory.rs`
//! write whole aligned words), the entry is launched over the grid with the manifest's block and
//! shared memory, the error word is checked (a `for` with a non-positive step is reported with
//! the interpreter's message) and the output tensors are copied back.
//!
//! Kernels with a TMA mainloop (sm_90a) declare tensor maps; they are encoded per launch for
//! the actual device buffers (`tmap.rs`). When one cannot be (a row pitch that is not a
//! multiple of 16 bytes), the launch uses a second module compiled without TMA/`wgmma` (the
//! cp.async mainloop), loaded with the first.

use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::sys::CUfunction_attribute_enum;
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, DevicePtr, LaunchConfig, PushKernelArg};
use opc_ir::launch::{self, LaunchError};
use opc_ir::{Arg, Kernel};

use super::{compile, compile_with, for_sites, Arch, Compiled, Features, LaunchParam};
use crate::{CodegenError, Executable, Result, Target};

/// `--target ptx`: kernels run on CUDA device 0.
pub struct PtxTarget;

fn err(k: &str, reason: impl Into<String>) -> CodegenError {
    CodegenError::Unsupported { kernel: k.to_string(), target: "ptx".into(), reason: reason.into() }
}

/// The shared context, or why there is none.
fn context() -> std::result::Result<Arc<CudaContext>, String> {
    static CTX: OnceLock<std::result::Result<Arc<CudaContext>, String>> = OnceLock::new();
    CTX.get_or_init(|| {
        // SAFETY: only probes whether the driver library can be opened.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err("no CUDA driver: libcuda could not be loaded on this machine".into());
        }
        CudaContext::new(0).map_err(|e| format!("no usable CUDA device: {e:?}"))
    })
    .clone()
}

/// The arch to render for on this device.
fn device_arch(ctx: &CudaContext) -> std::result::Result<Arch, String> {
    let (major, minor) = ctx.compute_capability().map_err(|e| format!("cannot read the compute capability: {e:?}"))?;
    let name = match (major, minor) {
        (9, 0) => "sm_90a",
        (8, 6) => "sm_86",
        (8, 9) => "sm_89",
        (8, _) => "sm_80",
        (m, _) if m >= 9 => "sm_80",
        _ => return Err(format!("compute capability {major}.{minor} is below sm_80")),
    };
    Arch::by_name(name).map_err(|e| e.to_string())
}

impl Target for PtxTarget {
    fn name(&self) -> &'static str {
        "ptx"
    }

    fn machine(&self) -> String {
        match context().and_then(|ctx| ctx.compute_capability().map_err(|e| format!("{e:?}"))) {
            Ok((major, minor)) => format!("ptx sm_{major}{minor}"),
            Err(_) => "ptx".into(),
        }
    }

    fn compile(&self, kernel: &Kernel) -> Result<Arc<dyn Executable>> {
        let ctx = context().map_err(|e| err(&kernel.name, e))?;
        let arch = device_arch(&ctx).map_err(|e| err(&kernel.name, e))?;
        let c = compile(kernel, arch)?;
        let func = load(&ctx, kernel, &c)?;
        let fallback = if c.tensor_maps.is_empty() {
            None
        } else {
            let f = compile_with(kernel, arch, Features { wgmma: false, ..c.feats })?;
            let func = load(&ctx, kernel, &f)?;
            Some(Box::new((f, func)))
        };
        Ok(Arc::new(PtxExecutable { kernel: kernel.clone(), for_sites: for_sites(kernel), compiled: c, ctx, func, fallback, lock: Mutex::new(()) }))
    }
}

/// Load `c`'s PTX and its entry, opting into its dynamic shared memory.
fn load(ctx: &Arc<CudaContext>, kernel: &Kernel, c: &Compiled) -> Result<CudaFunction> {
    let module = ctx
        .load_module(cudarc::nvrtc::Ptx::from_src(c.ptx.clone()))
        .map_err(|e| err(&kernel.name, format!("the driver rejected the PTX: {e:?}")))?;
    let func = module.load_function(&c.launch.entry).map_err(|e| err(&kernel.name, format!("{e:?}")))?;
    if c.launch.dynamic_shared {
        func.set_attribute(CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, c.launch.shared_bytes as i32)
            .map_err(|e| err(&kernel.name, format!("cannot opt into {} bytes of shared memory: {e:?}", c.launch.shared_bytes)))?;
    }
    Ok(func)
}

/// A kernel loaded into the CUDA context.
pub struct PtxExecutable {
    kernel: Kernel,
    for_sites: Vec<String>,
    compiled: Compiled,
    ctx: Arc<CudaContext>,
    func: CudaFunction,
    /// The variant without TMA, for launches whose tensors no tensor map can describe.
    fallback: Option<Box<(Compiled, CudaFunction)>>,
    /// Launches on the shared default stream are serialized.
    lock: Mutex<()>,
}

impl PtxExecutable {
    /// The PTX this executable runs.
    pub fn ptx(&self) -> &str {
        &self.compiled.ptx
    }
}

impl Executable for PtxExecutable {
    fn launch(&self, args: &mut [Arg]) -> Result<()> {
        let k = &self.kernel;
        let dims = launch::bind_dims(k, args)?;
        let g = launch::grid(k, &dims)?;
        if g.contains(&0) {
            return Ok(());
        }
        let drv = |e: cudarc::driver::DriverError| err(&k.name, format!("CUDA: {e:?}"));
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let stream = self.ctx.default_stream();
        let mut bufs: Vec<Option<CudaSlice<u8>>> = vec![];
        for a in args.iter() {
            bufs.push(match a {
                Arg::Tensor(t) => {
                    let mut bytes = t.data.clone();
                    bytes.resize(t.data.len().next_multiple_of(4).max(4), 0);
                    Some(stream.memcpy_stod(&bytes).map_err(drv)?)
                }
                _ => None,
            });
        }
        let errw: CudaSlice<u32> = stream.alloc_zeros(2).map_err(drv)?;
        // tensor maps of the TMA variant; any that cannot be encoded selects the fallback
        let mut maps = vec![];
        for m in &self.compiled.tensor_maps {
            let (Some(buf), Arg::Tensor(t)) = (&bufs[m.param], &args[m.param]) else { break };
            let (addr, _sync) = buf.device_ptr(&stream);
            match super::tmap::encode(m, addr, &t.shape, t.dtype == opc_ir::DType::F16) {
                Ok(x) => maps.push(x),
                Err(_) => break,
            }
        }
        let (compiled, func) = match &self.fallback {
            Some(fb) if maps.len() < self.compiled.tensor_maps.len() => (&fb.0, &fb.1),
            _ => (&self.compiled, &self.func),
        };
        // scalar values, kept alive for the builder (it takes references)
        let mut words: Vec<u64> = vec![];
        let mut floats: Vec<f32> = vec![];
        let mut u32s: Vec<u32> = vec![];
        for p in &compiled.launch.params {
            match p {
                LaunchParam::Dim(i) => words.push(dims[*i] as u64),
                LaunchParam::Scalar(i) => match &args[*i] {
                    Arg::F32(x) => floats.push(*x),
                    Arg::I32(x) => u32s.push(*x as u32),
                    Arg::Bool(b) => u32s.push(*b as u32),
                    Arg::Tensor(_) => return Err(err(&k.name, format!("parameter #{i} is a scalar but got a tensor"))),
                },
                _ => {}
            }
        }
        // persistent CTAs walk the kernel's grid, passed as u32 params (`persistent.rs`)
        let grid32 = g.map(|x| x as u32);
        let mut b = stream.launch_builder(func);
        let (mut wi, mut fi, mut ui) = (0, 0, 0);
        for p in &compiled.launch.params {
            match p {
                LaunchParam::TensorMap(i) => {
                    b.arg(&maps[*i]);
                }
                LaunchParam::Tensor(i) => {
                    let buf = bufs[*i].as_ref().ok_or_else(|| err(&k.name, format!("parameter #{i} is a tensor but got a scalar")))?;
                    b.arg(buf);
                }
                LaunchParam::Dim(_) => {
                    b.arg(&words[wi]);
                    wi += 1;
                }
                LaunchParam::Scalar(i) => {
                    if matches!(args[*i], Arg::F32(_)) {
                        b.arg(&floats[fi]);
                        fi += 1;
                    } else {
                        b.arg(&u32s[ui]);
                        ui += 1;
                    }
                }
                LaunchParam::ErrorWord => {
                    b.arg(&errw);
                }
                LaunchParam::Grid(i) => {
                    b.arg(&grid32[*i]);
                }
            }
        }
        let l = &compiled.launch;
        let grid_dim = if compiled.persistent {
            let sms = self.ctx.attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT).map_err(drv)?;
            let programs = g.iter().map(|&x| x as u64).product::<u64>();
            if programs > u32::MAX as u64 {
                return Err(err(&k.name, format!("{programs} programs exceed the persistent walk's u32 counter")));
            }
            (super::persistent_ctas(programs, sms as u64) as u32, 1, 1)
        } else {
            (g[0] as u32, g[1] as u32, g[2] as u32)
        };
        let cfg = LaunchConfig {
            grid_dim,
            block_dim: (l.threads, 1, 1),
            shared_mem_bytes: if l.dynamic_shared { l.shared_bytes } else { 0 },
        };
        // SAFETY: the arguments follow the entry's `.param` list (`Compiled::launch.params`):
        // device buffers for tensors (padded as the code assumes), u64 dims, f32/u32 scalars and
        // the two-word error buffer; every global access of the code is bounds-checked against
        // the dims passed here, which `bind_dims` checked against the tensors.
        unsafe { b.launch(cfg) }.map_err(drv)?;
        stream.synchronize().map_err(drv)?;
        let ew = stream.memcpy_dtov(&errw).map_err(drv)?;
        if ew[0] != 0 {
            let site = self.for_sites.get(ew[0] as usize - 1).map(String::as_str).unwrap_or("op `for`");
            return Err(LaunchError::Exec {
                kernel: k.name.clone(),
                msg: format!("a program: {site}: step must be positive, got {}", ew[1] as i32),
            }
            .into());
        }
        for ((a, buf), prm) in args.iter_mut().zip(&bufs).zip(&k.params) {
            let output = matches!(prm.kind, opc_ir::ParamKind::Tensor { output: true, .. });
            if let (Arg::Tensor(t), Some(buf), true) = (a, buf, output) {
                let back = stream.memcpy_dtov(buf).map_err(drv)?;
                let n = t.data.len();
                t.data.copy_from_slice(&back[..n]);
            }
        }
        Ok(())
    }

    fn kernel(&self) -> &Kernel {
        &self.kernel
    }
}
