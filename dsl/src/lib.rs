//! The opc tiling DSL: source text → tile IR, with rustc-style diagnostics.
//!
//! `compile` parses a `.opc` source, type-checks one kernel instantiated with concrete dtypes,
//! const dims and tunables, and lowers it to an [`opc_ir::Kernel`]. `check` type-checks every
//! kernel of a file with representative instantiations. The language is described in
//! `docs/dsl.md`.

pub mod ast;
pub mod diag;
pub mod lexer;
pub mod lower;
pub mod parser;

use diag::{Diag, Span};
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

/// Errors with source spans. `Display` renders them rustc-style (file:line:col, caret, help);
/// `diags` keeps them structured for tools and tests.
#[derive(Debug)]
pub struct Diagnostics {
    pub diags: Vec<Diag>,
    pub rendered: String,
}

impl Diagnostics {
    fn one(path: &str, src: &str, d: Diag) -> Diagnostics {
        Diagnostics { rendered: diag::render(path, src, &d), diags: vec![d] }
    }
    /// `line:col` of the first error (1-based).
    pub fn line_col(&self, src: &str) -> Option<(usize, usize)> {
        self.diags.first().map(|d| diag::line_col(src, d.span.start))
    }
}

impl std::fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.rendered)
    }
}
impl std::error::Error for Diagnostics {}

/// Parse a whole file.
pub fn parse(path: &str, src: &str) -> Result<ast::Module, Diagnostics> {
    let toks = lexer::lex(src).map_err(|d| Diagnostics::one(path, src, d))?;
    parser::parse(toks).map_err(|d| Diagnostics::one(path, src, d))
}

/// Compile kernel `kernel` of the source `src` (named `path` in diagnostics).
pub fn compile(path: &str, src: &str, kernel: &str, inst: &Instance) -> Result<Kernel, Diagnostics> {
    let module = parse(path, src)?;
    let Some(def) = module.kernels.iter().find(|k| k.name.name == kernel) else {
        let names: Vec<_> = module.kernels.iter().map(|k| k.name.name.as_str()).collect();
        let d = Diag::new(format!("no kernel named `{kernel}` in {path}"), Span::new(0, 0))
            .help(if names.is_empty() { "the file defines no kernels".to_string() } else { format!("kernels in this file: {}", names.join(", ")) });
        return Err(Diagnostics::one(path, src, d));
    };
    lower_def(path, src, def, inst, false)
}

fn lower_def(path: &str, src: &str, def: &ast::KernelDef, inst: &Instance, representative: bool) -> Result<Kernel, Diagnostics> {
    // Duplicates first: instantiation choices are keyed by name.
    lower::check_duplicates(src, def).map_err(|d| Diagnostics::one(path, src, d))?;
    let ch = lower::choices(def, inst, representative).map_err(|d| Diagnostics::one(path, src, d))?;
    let k = lower::Lowerer::lower(src, def, &ch).map_err(|d| Diagnostics::one(path, src, d))?;
    if let Err(e) = opc_ir::verify::verify(&k) {
        // The front end produced IR the verifier rejects: a compiler bug, reported at the kernel.
        let d = Diag::new(format!("internal compiler error: {e}"), def.name.span)
            .label("while compiling this kernel")
            .help("please report this with the source file");
        return Err(Diagnostics::one(path, src, d));
    }
    Ok(k)
}

/// Compile kernel `kernel` with representative choices for everything the instance leaves out
/// (first dtype of each type variable, default tunables, const dims from their `in` sets or a
/// small value meeting their constraints). Used by `check`, IR snapshots and `opc build`.
pub fn compile_representative(path: &str, src: &str, kernel: &str, inst: &Instance) -> Result<Kernel, Diagnostics> {
    let module = parse(path, src)?;
    let Some(def) = module.kernels.iter().find(|k| k.name.name == kernel) else {
        return compile(path, src, kernel, inst);
    };
    lower_def(path, src, def, inst, true)
}

/// Type-check every kernel in the file, every declared dtype combination, with default tunables
/// and representative const dims; returns the kernel names.
pub fn check(path: &str, src: &str) -> Result<Vec<String>, Diagnostics> {
    let module = parse(path, src)?;
    let mut names = vec![];
    for def in &module.kernels {
        if names.contains(&def.name.name) {
            let d = Diag::new(format!("kernel `{}` is defined twice", def.name.name), def.name.span).label("second definition");
            return Err(Diagnostics::one(path, src, d));
        }
        for inst in dtype_combinations(def).into_iter().take(16) {
            lower_def(path, src, def, &inst, true)?;
        }
        names.push(def.name.name.clone());
    }
    Ok(names)
}

/// Every combination of the kernel's type-variable dtypes (names only; unknown names are left to
/// the lowering to report).
fn dtype_combinations(def: &ast::KernelDef) -> Vec<Instance> {
    let mut out = vec![Instance::default()];
    for (v, set) in &def.tyvars {
        let mut next = vec![];
        for inst in &out {
            for d in set {
                match DType::from_name(&d.name) {
                    Some(dt) => next.push(inst.clone().dtype(&v.name, dt)),
                    None => next.push(inst.clone()),
                }
            }
        }
        out = next;
    }
    out
}
