//! Tile-IR passes and the named pipeline that runs them (see `pipeline.rs`).
use opc_ir::Kernel;

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("unknown pass `{0}` (passes: {1})")]
    UnknownPass(String, String),
    #[error("after pass `{pass}`: {err}")]
    Verify { pass: String, err: opc_ir::verify::VerifyError },
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

/// Run the default pipeline over `kernel`, verifying after every pass.
pub fn run_pipeline(kernel: &mut Kernel, opts: &PipelineOptions) -> Result<Vec<Dump>, PassError> {
    let _ = (kernel, opts);
    Ok(vec![])
}

/// Names of the passes in pipeline order.
pub fn pass_names() -> Vec<&'static str> {
    vec![]
}
