//! Tile-IR passes and the named pipeline that runs them.
//!
//! - One pass per file (`fold_constants.rs`, `cse.rs`, ...), each a unit struct implementing
//!   [`Pass`] with a kebab-case [`Pass::NAME`] used in logs, dumps and `--disable-pass`.
//! - `pipeline.rs` holds the one ordered list of the default pipeline and the runner that, after
//!   every pass, verifies the IR (debug and test builds, or `OPC_VERIFY=1`), records timing and
//!   captures dumps.
//! - `analysis/` holds read-only facts passes share (side effects, read-only tensors);
//!   `rewriter.rs` the value-substitution helper passes use to drop an op in favour of a value.
//!
//! Environment: `OPC_VERIFY=1` verifies after every pass in release builds too (`OPC_VERIFY=0`
//! turns it off in debug builds); `OPC_LOG_PASSES=1` prints the IR to stderr after every pass that
//! changed it; `OPC_TIME_PASSES=1` prints a per-pass timing table to stderr.
use opc_ir::Kernel;

pub mod analysis;
pub mod cse;
pub mod dce;
pub mod fold_constants;
pub mod licm;
pub mod pipeline;
pub mod rewriter;
pub mod simplify_broadcasts;

pub use cse::Cse;
pub use dce::Dce;
pub use fold_constants::FoldConstants;
pub use licm::Licm;
pub use pipeline::{PassEntry, PassRecord, PIPELINE, REGISTRY};
pub use simplify_broadcasts::SimplifyBroadcasts;

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// A name in `dump_after`, `disabled` or a custom pass list that no pass has.
    #[error("unknown pass `{0}` (passes: {1})")]
    UnknownPass(String, String),
    /// The verifier rejected the IR after `pass` (`(input)`: before the first pass). This is a
    /// compiler bug in that pass (or, for `(input)`, in whatever produced the kernel).
    #[error("after pass `{pass}`: {err}")]
    Verify { pass: String, err: opc_ir::verify::VerifyError },
}

pub type Result<T, E = PassError> = std::result::Result<T, E>;

/// One tile-IR rewrite. Passes are stateless unit structs; [`Pass::run`] rewrites in place.
pub trait Pass {
    /// Kebab-case name used in logs, dumps, `--dump-after` and `--disable-pass`.
    const NAME: &'static str;
    /// Rewrite `kernel` (grid and body); return whether anything changed.
    fn run(kernel: &mut Kernel) -> bool;
}

/// Options of one pipeline run.
#[derive(Clone, Debug, Default)]
pub struct PipelineOptions {
    /// Pass names after which to capture the IR (`--dump-after`); "all" captures every stage.
    pub dump_after: Vec<String>,
    /// Passes to skip (`--disable-pass`).
    pub disabled: Vec<String>,
}

/// IR captured after a pass.
#[derive(Clone, Debug)]
pub struct Dump {
    pub pass: String,
    pub ir: String,
}

/// Run the default pipeline ([`PIPELINE`]) over `kernel`, verifying after every pass.
/// Returns the dumps asked for in `opts.dump_after`, in pass order (a pass that runs twice
/// dumps twice).
pub fn run_pipeline(kernel: &mut Kernel, opts: &PipelineOptions) -> Result<Vec<Dump>> {
    pipeline::run_entries(kernel, PIPELINE, opts).map(|(dumps, _)| dumps)
}

/// Run a custom list of passes by name (for tests and the CLI), with the same verification,
/// dumps and disabling as [`run_pipeline`].
pub fn run_passes(kernel: &mut Kernel, names: &[&str], opts: &PipelineOptions) -> Result<Vec<Dump>> {
    let entries = names
        .iter()
        .map(|n| pipeline::lookup(n).ok_or_else(|| pipeline::unknown(n)))
        .collect::<Result<Vec<_>>>()?;
    pipeline::run_entries(kernel, &entries, opts).map(|(dumps, _)| dumps)
}

/// Names of the pipeline's passes in pipeline order, each once (the names `dump_after` and
/// `disabled` take, besides "all").
pub fn pass_names() -> Vec<&'static str> {
    let mut names = vec![];
    for e in PIPELINE {
        if !names.contains(&e.name) {
            names.push(e.name);
        }
    }
    names
}

/// The pipeline as it runs: a pass that runs twice is listed twice.
pub fn pipeline_order() -> Vec<&'static str> {
    PIPELINE.iter().map(|e| e.name).collect()
}

/// Every pass [`run_passes`] accepts, each once.
pub fn registered_passes() -> Vec<&'static str> {
    REGISTRY.iter().map(|e| e.name).collect()
}
