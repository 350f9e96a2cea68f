//! The reference interpreter.
use crate::launch::LaunchError;
use crate::{Arg, Kernel};

/// Run every program of the grid on the host tensors in `args` (outputs written in place).
pub fn run(kernel: &Kernel, args: &mut [Arg]) -> Result<(), LaunchError> {
    todo!("{} {}", kernel.name, args.len())
}
