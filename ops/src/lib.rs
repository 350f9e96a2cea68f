//! opc operators. The math of every operator is DSL source in `kernels/*.opc`, compiled by the
//! real pipeline (dsl → passes → target); the Rust here only binds shapes, allocates outputs,
//! picks instantiations and launches.

use opc_codegen::{Executable, Target};
use opc_dsl::Instance;
use opc_ir::{DType, Tensor};
pub use kernel_profile::KernelProfile;
use std::collections::HashMap;
use std::cell::Cell;
use std::sync::{Arc, Mutex, OnceLock};

/// DSL sources of the operator library, by file stem.
pub const SOURCES: &[(&str, &str)] = &[
    ("flash_attention", include_str!("../kernels/flash_attention.opc")),
    ("kron_quant", include_str!("../kernels/kron_quant.opc")),
    ("mxfp4", include_str!("../kernels/mxfp4.opc")),
    ("grouped_gemm", include_str!("../kernels/grouped_gemm.opc")),
    ("kl_judge", include_str!("../kernels/kl_judge.opc")),
    ("blocks", include_str!("../kernels/blocks.opc")),
    ("model", include_str!("../kernels/model.opc")),
    ("spec_sample", include_str!("../kernels/spec_sample.opc")),
    ("paged_attention", include_str!("../kernels/paged_attention.opc")),
];

pub mod attention;
pub mod blocks;
pub mod kernel_profile;
pub mod kl_judge;
pub mod launch_log;
pub mod kron_quant;
pub mod model;
pub mod moe;
pub mod moe_w;
pub mod mxfp4;
pub mod paged_attention;
mod scratch;
pub mod spec_sample;
mod tuned;

#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("{0}")]
    Compile(String),
    #[error("{0}")]
    Codegen(#[from] opc_codegen::CodegenError),
    #[error("{op}: {msg}")]
    Shape { op: &'static str, msg: String },
}

pub type Result<T> = std::result::Result<T, OpError>;

/// Compiles operator kernels for one target and caches them by (file, kernel, instance).
/// Launches whose dims were tuned on this machine (`opc tune`) run the tuned configuration
/// (see `tuned.rs`).
pub struct Ops {
    target: Arc<dyn Target>,
    cache: Mutex<HashMap<(String, String, Instance), Arc<dyn Executable>>>,
    /// Per-kernel launch times, when profiling ([`Ops::with_kernel_profile`]).
    profile: Option<Arc<KernelProfile>>,
    /// The tuning database to read, and its best configurations for this target's machine
    /// (read on the first compile).
    tune_db: Option<opc_tune::Db>,
    tuned: OnceLock<tuned::Tunings>,
    /// Every distinct launch, when logging ([`Ops::with_launch_log`]).
    launch_log: Option<Arc<launch_log::LaunchLog>>,
}

impl Ops {
    /// Kernels for `target`; launches are timed per kernel when `OPC_PROFILE_KERNELS` is set to
    /// anything but `0` or empty.
    pub fn new(target: Arc<dyn Target>) -> Ops {
        let on = std::env::var("OPC_PROFILE_KERNELS").is_ok_and(|v| !v.is_empty() && v != "0");
        Ops {
            target,
            cache: Mutex::new(HashMap::new()),
            profile: on.then(Default::default),
            tune_db: opc_tune::Db::from_env(),
            tuned: OnceLock::new(),
            launch_log: None,
        }
    }

    /// Log every distinct launch with its dims, scalars and index tensors
    /// ([`Ops::launch_log`]), for autotuning a whole run.
    pub fn with_launch_log(mut self) -> Ops {
        self.launch_log.get_or_insert_with(Default::default);
        self
    }

    /// The launches so far, when logging.
    pub fn launch_log(&self) -> Option<&launch_log::LaunchLog> {
        self.launch_log.as_deref()
    }

    /// Read tuned configurations from `db` instead of the environment's database (`None`:
    /// always the drivers' heuristic tiles).
    pub fn with_tune_db(mut self, db: Option<opc_tune::Db>) -> Ops {
        self.tune_db = db;
        self.tuned = OnceLock::new();
        self
    }

    /// Time every launch per kernel and instance ([`Ops::kernel_profile`]).
    pub fn with_kernel_profile(mut self) -> Ops {
        self.profile.get_or_insert_with(Default::default);
        self
    }

    /// The per-kernel launch times, when profiling.
    pub fn kernel_profile(&self) -> Option<&KernelProfile> {
        self.profile.as_deref()
    }

    pub fn target(&self) -> &dyn Target {
        &*self.target
    }

    /// The DSL source of library file `file` (e.g. "flash_attention").
    pub fn source(file: &str) -> Option<&'static str> {
        SOURCES.iter().find(|(n, _)| *n == file).map(|(_, s)| *s)
    }

    /// Compile (or fetch from cache) kernel `kernel` of library file `file`.
    pub fn kernel(&self, file: &str, kernel: &str, inst: &Instance) -> Result<Arc<dyn Executable>> {
        let key = (file.to_string(), kernel.to_string(), inst.clone());
        if let Some(e) = self.cache.lock().unwrap().get(&key) {
            return Ok(e.clone());
        }
        let src = Ops::source(file).ok_or_else(|| OpError::Compile(format!("no operator source `{file}`")))?;
        let compiler = tuned::Compiler { target: self.target.clone(), profile: self.profile.clone() };
        let exe = compiler.compile(file, src, kernel, inst)?;
        let tunings = self.tuned.get_or_init(|| tuned::Tunings::load(self.tune_db.as_ref(), &*self.target));
        let mut exe = tuned::Tuned::wrap(exe, tunings, &compiler, (file, src, kernel, inst));
        if let Some(log) = &self.launch_log {
            exe = Arc::new(launch_log::Logged { inner: exe, file: file.into(), kernel: kernel.into(), inst: inst.clone(), log: log.clone() });
        }
        self.cache.lock().unwrap().insert(key, exe.clone());
        Ok(exe)
    }
}

thread_local! {
    /// Nanoseconds this thread has spent compiling kernel instances (DSL front end, passes and
    /// the target's code generation, on [`Ops::kernel`] cache misses and tuned configurations'
    /// first launches), over every [`Ops`]. Per thread: compiles run on the launching thread,
    /// so a thread's timed region counts only its own.
    static COMPILE_NANOS: Cell<u64> = const { Cell::new(0) };
}

/// Seconds this thread has spent compiling kernels so far: a timed region that compiles on
/// first use (a decode step meeting a new token count) subtracts the difference, so it reports
/// the model's speed, and the compile time separately.
pub fn compile_secs() -> f64 {
    COMPILE_NANOS.with(|c| c.get()) as f64 * 1e-9
}

/// Adds its lifetime to [`compile_secs`].
pub(crate) struct CompileTimer(std::time::Instant);

impl CompileTimer {
    pub(crate) fn start() -> CompileTimer {
        CompileTimer(std::time::Instant::now())
    }
}

impl Drop for CompileTimer {
    fn drop(&mut self) {
        let ns = self.0.elapsed().as_nanos() as u64;
        COMPILE_NANOS.with(|c| c.set(c.get() + ns));
    }
}

/// Check a tensor's dtype is one of `allowed`.
pub fn expect_dtype(op: &'static str, name: &str, t: &Tensor, allowed: &[DType]) -> Result<()> {
    if allowed.contains(&t.dtype) {
        Ok(())
    } else {
        let names: Vec<_> = allowed.iter().map(|d| d.name()).collect();
        Err(OpError::Shape { op, msg: format!("`{name}` has dtype {}, expected one of {}", t.dtype, names.join(", ")) })
    }
}

/// `<T=bf16, BM=8, ...>`: an instance's dtypes, consts and tunables, for profile labels.
fn instance_label(inst: &Instance) -> String {
    let parts: Vec<String> = inst
        .dtypes
        .iter()
        .map(|(k, d)| format!("{k}={d}"))
        .chain(inst.consts.iter().chain(&inst.tunables).map(|(k, v)| format!("{k}={v}")))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("<{}>", parts.join(","))
    }
}
