//! opc tile IR: types, the IR itself, its textual form (printer and parser), the verifier,
//! host tensors, launch-time shape binding and the reference interpreter.
//!
//! This crate depends on no other opc crate: everything above it (DSL, passes, targets,
//! runtime) speaks this IR.

pub mod argref;
pub mod buffer;
pub mod interp;
pub mod ir;
pub mod launch;
pub mod numerics;
pub mod parser;
pub mod printer;
pub mod tensor;
pub mod types;
pub mod verify;

pub use ir::*;
pub use argref::{ArgRef, LaunchArg};
pub use tensor::{Arg, Tensor};
pub use types::{DType, MemSpace, Rounding, TileType};
