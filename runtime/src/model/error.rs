//! Errors of checkpoint loading and model execution. Every message names the file or tensor at
//! fault and what was expected, so a bad checkpoint is diagnosed without a debugger.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read {path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path}: invalid config: {detail}")]
    Config { path: PathBuf, detail: String },
    #[error("{path}: unknown architecture `{arch}` (supported: {supported})")]
    UnknownArchitecture { path: PathBuf, arch: String, supported: String },
    #[error("{path} is not a safetensors file: {detail}")]
    NotSafetensors { path: PathBuf, detail: String },
    #[error("{path} is truncated: {detail}")]
    Truncated { path: PathBuf, detail: String },
    #[error("{index} maps `{tensor}` to {file}, which does not exist")]
    MissingShard { index: PathBuf, tensor: String, file: PathBuf },
    #[error("{dir}: missing tensor `{name}` (expected {expected})")]
    MissingTensor { dir: PathBuf, name: String, expected: String },
    #[error("tensor `{name}` in {path} has shape {got:?}, expected {want:?}")]
    WrongShape { path: PathBuf, name: String, got: Vec<usize>, want: Vec<usize> },
    #[error("tensor `{name}` in {path} has dtype {got}, expected {want}")]
    WrongDtype { path: PathBuf, name: String, got: String, want: String },
    #[error("{path}: {detail}")]
    Tokenizer { path: PathBuf, detail: String },
    #[error("{path}: reference file: {detail}")]
    Reference { path: PathBuf, detail: String },
    #[error("KV cache: {0}")]
    Cache(String),
    #[error("{0}")]
    Usage(String),
    #[error("operator failed: {0}")]
    Op(#[from] opc_ops::OpError),
}

pub type Result<T> = std::result::Result<T, ModelError>;
