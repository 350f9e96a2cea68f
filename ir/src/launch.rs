//! Launch-time checks shared by every target: bind symbolic dims from the argument shapes,
//! check dtypes, shapes and constraints with precise messages, and evaluate the grid.

use crate::{Arg, Kernel};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LaunchError {
    #[error("kernel `{kernel}` takes {expected} arguments, got {got}")]
    ArgCount { kernel: String, expected: usize, got: usize },
    #[error("kernel `{kernel}`: argument `{param}`: {msg}")]
    Arg { kernel: String, param: String, msg: String },
    #[error("kernel `{kernel}`: {msg}")]
    Constraint { kernel: String, msg: String },
    #[error("kernel `{kernel}`: {msg}")]
    Exec { kernel: String, msg: String },
}

/// Bind every dim symbol from the tensor arguments and check all of them.
/// Returns one value per `SymId` (index = SymId.0).
pub fn bind_dims(kernel: &Kernel, args: &[Arg]) -> Result<Vec<i64>, LaunchError> {
    todo!("{} {}", kernel.name, args.len())
}

/// Evaluate the grid block: always three extents (missing axes are 1).
pub fn grid(kernel: &Kernel, dims: &[i64]) -> Result<[usize; 3], LaunchError> {
    todo!("{} {}", kernel.name, dims.len())
}
