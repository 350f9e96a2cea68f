//! opc operators. The math of every operator is DSL source in `kernels/*.opc`, compiled by the
//! real pipeline (dsl → passes → target); the Rust here only binds shapes, allocates outputs,
//! picks instantiations and launches.

use opc_codegen::{Executable, Target};
use opc_dsl::Instance;
use opc_ir::{DType, Tensor};
pub use kernel_profile::KernelProfile;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
pub mod kron_quant;
pub mod model;
pub mod moe;
pub mod moe_w;
pub mod mxfp4;
pub mod paged_attention;
mod scratch;
pub mod spec_sample;

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
pub struct Ops {
    target: Arc<dyn Target>,
    cache: Mutex<HashMap<(String, String, Instance), Arc<dyn Executable>>>,
    /// Per-kernel launch times, when profiling ([`Ops::with_kernel_profile`]).
    profile: Option<Arc<KernelProfile>>,
}

impl Ops {
    /// Kernels for `target`; launches are timed per kernel when `OPC_PROFILE_KERNELS` is set to
    /// anything but `0` or empty.
    pub fn new(target: Arc<dyn Target>) -> Ops {
        let on = std::env::var("OPC_PROFILE_KERNELS").is_ok_and(|v| !v.is_empty() && v != "0");
        Ops { target, cache: Mutex::new(HashMap::new()), profile: on.then(Default::default) }
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
        let path = format!("ops/kernels/{file}.opc");
        let mut k = opc_dsl::compile(&path, src, kernel, inst).map_err(|d| OpError::Compile(d.to_string()))?;
        opc_passes::run_pipeline(&mut k, &Default::default()).map_err(|e| OpError::Compile(e.to_string()))?;
        let mut exe = self.target.compile(&k)?;
        if let Some(profile) = &self.profile {
            let label = format!("{file}::{kernel}{}", instance_label(inst));
            exe = Arc::new(kernel_profile::Timed { inner: exe, label, profile: profile.clone() });
        }
        self.cache.lock().unwrap().insert(key, exe.clone());
        Ok(exe)
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
