//! opc targets behind one interface: a [`Target`] compiles an instantiated tile-IR kernel
//! into an [`Executable`] that launches it on host tensors.
//!
//! Today: the reference interpreter (`interp`). The CPU (Cranelift / LLVM), PTX and AscendC
//! renderers plug in here as further targets.

use opc_ir::{Arg, ArgRef, Kernel};
use std::sync::Arc;

pub mod cpu;
pub mod artifact;
pub mod ascendc;
mod disk_cache;
pub mod interp;
mod jit_args;
mod launch_pool;
pub mod loops;
mod repr;
pub mod ptx;
#[cfg(feature = "llvm22-1")]
pub mod llvm;

pub use artifact::{Artifact, RenderOptions, Renderer};

#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    #[error("{0}")]
    Launch(#[from] opc_ir::launch::LaunchError),
    #[error("kernel `{kernel}` cannot be compiled for target `{target}`: {reason}")]
    Unsupported { kernel: String, target: String, reason: String },
    /// `Unsupported` about places in the DSL source: `notes` are the locations with a label
    /// each, for a front end that holds the source to point at (`opc_dsl::diag::render_notes`).
    #[error("kernel `{kernel}` cannot be compiled for target `{target}`: {reason}")]
    AtSource { kernel: String, target: String, reason: String, notes: Vec<(opc_ir::Loc, String)> },
    #[error("unknown target `{0}` (known: {1})")]
    UnknownTarget(String, String),
    #[error("target `{0}` writes no ahead-of-time artifact; use `--emit ir -o FILE` to write the IR")]
    NoRenderer(String),
}

pub type Result<T> = std::result::Result<T, CodegenError>;

/// A compiled kernel, ready to launch. `args` are in parameter order; output tensors are
/// written in place.
pub trait Executable: Send + Sync {
    fn launch(&self, args: &mut [Arg]) -> Result<()>;

    /// [`Executable::launch`] on borrowed tensors: inputs are read and outputs written where
    /// they live ([`ArgRef`]); an `out` parameter lent as [`ArgRef::In`] is an error. The same
    /// checks and errors as `launch`. This default copies the inputs into owned arguments and
    /// moves the outputs in and back (even on error); the JIT targets override it to run on the
    /// callers' buffers with no copy.
    fn launch_refs(&self, args: &mut [ArgRef<'_>]) -> Result<()> {
        opc_ir::launch::bind_dims(self.kernel(), args)?;
        let mut owned: Vec<Arg> = args
            .iter_mut()
            .map(|a| match a {
                ArgRef::In(t) => Arg::Tensor((*t).clone()),
                ArgRef::Out(t) => Arg::Tensor(std::mem::replace(*t, opc_ir::Tensor { dtype: t.dtype, shape: vec![], data: vec![] })),
                ArgRef::F32(x) => Arg::F32(*x),
                ArgRef::I32(x) => Arg::I32(*x),
                ArgRef::Bool(b) => Arg::Bool(*b),
            })
            .collect();
        let r = self.launch(&mut owned);
        for (a, o) in args.iter_mut().zip(owned) {
            if let (ArgRef::Out(t), Arg::Tensor(o)) = (a, o) {
                **t = o;
            }
        }
        r
    }
    /// The kernel this was compiled from (after the pipeline).
    fn kernel(&self) -> &Kernel;
}

/// A code generator plus its loader.
pub trait Target: Send + Sync {
    /// Name used on the command line (`--target NAME`) and in cache keys.
    fn name(&self) -> &'static str;
    fn compile(&self, kernel: &Kernel) -> Result<Arc<dyn Executable>>;
    /// What, besides the kernel, decides how fast its code runs here: the target's name and,
    /// for the JIT targets, the host CPU and the ISA features code is generated for. Tuning
    /// records (`opc tune`) are keyed by it, so a record made on another machine never applies.
    fn machine(&self) -> String {
        self.name().to_string()
    }
}

/// Names accepted by [`target_by_name`].
#[cfg(not(feature = "llvm22-1"))]
pub const TARGETS: &[&str] = &["interp", "cpu", "ascendc-sim"];
/// Names accepted by [`target_by_name`] (`llvm`: LLVM 22 JIT, feature `llvm22-1`).
#[cfg(feature = "llvm22-1")]
pub const TARGETS: &[&str] = &["interp", "cpu", "llvm", "ascendc-sim"];

/// The target the CLI uses when none is given: the LLVM fast path when it is built in
/// (feature `llvm22-1`), else the zero-dependency Cranelift path.
pub const DEFAULT_TARGET: &str = if cfg!(feature = "llvm22-1") { "llvm" } else { "cpu" };

/// Look a target up by its command-line name.
pub fn target_by_name(name: &str) -> Result<Arc<dyn Target>> {
    match name {
        "interp" => Ok(Arc::new(interp::InterpTarget)),
        "cpu" => Ok(Arc::new(cpu::CpuTarget)),
        "ascendc-sim" => Ok(Arc::new(ascendc::sim::AscendcSimTarget)),
        #[cfg(feature = "cuda")]
        "ptx" => Ok(Arc::new(ptx::runtime::PtxTarget)),
        #[cfg(feature = "llvm22-1")]
        "llvm" => Ok(Arc::new(llvm::LlvmTarget)),
        _ => Err(CodegenError::UnknownTarget(name.to_string(), TARGETS.join(", "))),
    }
}
