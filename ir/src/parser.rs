//! Parser of the textual tile IR.
use crate::Kernel;

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{line}:{col}: {msg}")]
pub struct ParseError {
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

pub fn parse_kernel(text: &str) -> Result<Kernel, ParseError> {
    todo!("{}", text.len())
}
