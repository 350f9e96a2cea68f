//! The runtime helpers the generated code calls: one table shared with the LLVM target
//! (`loops/helpers.rs`); Cranelift signatures are built from [`Ty`] in `emit.rs`.

pub(crate) use crate::loops::helpers::{Helper, Ty};
pub(crate) use crate::repr::{dtype_code, rounding_code};
