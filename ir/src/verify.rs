//! The IR verifier.
use crate::Kernel;

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("verifier: kernel `{kernel}`: {msg}")]
pub struct VerifyError {
    pub kernel: String,
    pub msg: String,
}

pub fn verify(kernel: &Kernel) -> Result<(), VerifyError> {
    todo!("{}", kernel.name)
}
