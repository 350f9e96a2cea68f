//! The opc tiling DSL: source text → tile IR, with rustc-style diagnostics.
//!
//! `compile` parses a `.opc` source, type-checks one kernel instantiated with concrete dtypes,
//! const dims and tunables, and lowers it to an [`opc_ir::Kernel`]. `check` type-checks every
//! kernel of a file with representative instantiations.

use opc_ir::{DType, Kernel};

/// How to instantiate a generic kernel. Anything left out takes its default (first dtype of a
/// type variable's set, a tunable's declared default; const dims have no default).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Instance {
    pub dtypes: Vec<(String, DType)>,
    pub consts: Vec<(String, i64)>,
    pub tunables: Vec<(String, i64)>,
}

impl Instance {
    pub fn dtype(mut self, var: &str, d: DType) -> Self {
        self.dtypes.push((var.to_string(), d));
        self
    }
    pub fn konst(mut self, dim: &str, v: i64) -> Self {
        self.consts.push((dim.to_string(), v));
        self
    }
    pub fn tunable(mut self, name: &str, v: i64) -> Self {
        self.tunables.push((name.to_string(), v));
        self
    }
}

/// Errors with source spans; `Display` renders them rustc-style (file:line:col, caret, help).
#[derive(Debug)]
pub struct Diagnostics {
    pub rendered: String,
}

impl std::fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.rendered)
    }
}
impl std::error::Error for Diagnostics {}

/// Compile kernel `kernel` of the source `src` (named `path` in diagnostics).
pub fn compile(path: &str, src: &str, kernel: &str, inst: &Instance) -> Result<Kernel, Diagnostics> {
    todo!("{path} {} {kernel} {inst:?}", src.len())
}

/// Type-check every kernel in the file; returns the kernel names.
pub fn check(path: &str, src: &str) -> Result<Vec<String>, Diagnostics> {
    todo!("{path} {}", src.len())
}
