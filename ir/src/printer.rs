//! Textual form of the tile IR.
use crate::Kernel;

/// Print a kernel in the textual form that `parser::parse_kernel` reads back.
pub fn print_kernel(kernel: &Kernel) -> String {
    todo!("{}", kernel.name)
}
