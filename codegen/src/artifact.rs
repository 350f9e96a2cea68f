//! Ahead-of-time outputs: a [`Renderer`] turns an instantiated kernel into files (PTX text,
//! AscendC C++, a shared library) plus a JSON manifest that a loader needs without the compiler:
//! entry points, parameters with dtypes and symbolic shapes, launch geometry, tunables chosen,
//! the IR hash and the compiler version. `opc build FILE --target T -o DIR` writes them.

use crate::{CodegenError, Result};
use opc_ir::{Constraint, Kernel, ParamKind};
use serde_json::{json, Value};
use std::sync::Arc;

/// Files of one rendered kernel, and its manifest (written as `manifest.json`).
#[derive(Clone, Debug)]
pub struct Artifact {
    pub files: Vec<(String, Vec<u8>)>,
    pub manifest: Value,
}

/// Options a renderer may read: the target architecture (`sm_80`, `sm_90a`, `ascend910b`, ...).
#[derive(Clone, Debug, Default)]
pub struct RenderOptions {
    pub arch: Option<String>,
}

/// A target that writes code out instead of (or as well as) running it in-process.
pub trait Renderer: Send + Sync {
    fn name(&self) -> &'static str;
    fn render(&self, kernel: &Kernel, opts: &RenderOptions) -> Result<Artifact>;
}

/// Names accepted by [`renderer_by_name`].
pub const RENDERERS: &[&str] = &["cpu", "ptx", "ascendc"];

/// Targets with an ahead-of-time renderer, by command-line name.
pub fn renderer_by_name(name: &str) -> Result<Arc<dyn Renderer>> {
    #[allow(clippy::match_single_binding)]
    match name {
        "cpu" => Ok(Arc::new(crate::cpu::CpuRenderer)),
        "ptx" => Ok(Arc::new(crate::ptx::PtxRenderer)),
        "ascendc" => Ok(Arc::new(crate::ascendc::AscendCRenderer)),
        _ => Err(CodegenError::NoRenderer(name.to_string())),
    }
}

/// FNV-1a 64: opc's stable hash (the same across runs and compiler builds, unlike
/// `DefaultHasher`), for IR hashes, cache file names and checksums, tuning keys.
pub fn fnv64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// [`fnv64`] of the printed IR, hex.
pub fn ir_hash(kernel: &Kernel) -> String {
    format!("{:016x}", fnv64(opc_ir::printer::print_kernel(kernel).as_bytes()))
}

/// The manifest fields every target shares; renderers add their own (entry names, launch
/// geometry, buffer bytes) to the returned object.
pub fn base_manifest(kernel: &Kernel, target: &str) -> Value {
    let dim = |d: &opc_ir::DimExpr| opc_ir::printer::print_dim_expr(kernel, d).replace('@', "");
    let params: Vec<Value> = kernel
        .params
        .iter()
        .map(|p| match &p.kind {
            ParamKind::Tensor { dtype, dims, output } => json!({
                "name": p.name, "kind": "tensor", "dtype": dtype.name(), "output": output,
                "shape": dims.iter().map(dim).collect::<Vec<_>>(),
            }),
            ParamKind::Scalar { dtype } => json!({ "name": p.name, "kind": "scalar", "dtype": dtype.name() }),
        })
        .collect();
    let constraints: Vec<String> = kernel
        .constraints
        .iter()
        .map(|c| match c {
            Constraint::OneOf(e, v) => format!("{} in {v:?}", dim(e)),
            Constraint::MultipleOf(a, b) => format!("{} % {} == 0", dim(a), dim(b)),
            Constraint::Range(e, lo, hi) => format!("{} in [{}, {}]", dim(e), lo.map_or("_".into(), |v| v.to_string()), hi.map_or("_".into(), |v| v.to_string())),
        })
        .collect();
    json!({
        "kernel": kernel.name,
        "target": target,
        "compiler": format!("opc {}", env!("CARGO_PKG_VERSION")),
        "ir_hash": ir_hash(kernel),
        "params": params,
        "dims": kernel.dims.iter().map(|d| json!({"name": d.name, "const": d.value})).collect::<Vec<_>>(),
        "constraints": constraints,
        "tunables": kernel.tunables.iter().map(|t| json!({"name": t.name, "level": t.level, "space": t.space, "value": t.value})).collect::<Vec<_>>(),
        "grid_ir": opc_ir::printer::print_block(kernel, &kernel.grid),
    })
}
