//! Borrowed launch arguments: [`ArgRef`] lets a launch read its inputs and write its outputs
//! where they already live, so a driver never copies a weight matrix into the argument list.

use crate::{Arg, Tensor};

/// One launch argument by reference, in parameter order (the borrowed form of [`Arg`]).
#[derive(Debug)]
pub enum ArgRef<'a> {
    /// A tensor the kernel only reads (a parameter not marked `out`).
    In(&'a Tensor),
    /// A tensor the kernel writes, or reads and writes, in place (an `out` parameter).
    Out(&'a mut Tensor),
    F32(f32),
    I32(i32),
    Bool(bool),
}

impl<'a> From<&'a mut Arg> for ArgRef<'a> {
    /// Every owned tensor is lent as [`ArgRef::Out`]: the owner may be written.
    fn from(a: &'a mut Arg) -> ArgRef<'a> {
        match a {
            Arg::Tensor(t) => ArgRef::Out(t),
            Arg::F32(x) => ArgRef::F32(*x),
            Arg::I32(x) => ArgRef::I32(*x),
            Arg::Bool(b) => ArgRef::Bool(*b),
        }
    }
}

/// What the launch checks read of an argument: [`Arg`] and [`ArgRef`] both present themselves
/// as a read-only [`ArgRef`], so `launch::bind_dims` checks them with the same code.
pub trait LaunchArg {
    /// A read-only view ([`ArgRef::In`] for any tensor).
    fn view(&self) -> ArgRef<'_>;

    /// Whether the launch may write this argument: owned tensors and [`ArgRef::Out`] yes,
    /// [`ArgRef::In`] no (an `out` parameter given one is a launch error).
    fn writable(&self) -> bool;

    /// The tensor, if this is a tensor argument.
    fn tensor(&self) -> Option<&Tensor> {
        match self.view() {
            ArgRef::In(t) => Some(t),
            _ => None,
        }
    }
}

impl LaunchArg for Arg {
    fn view(&self) -> ArgRef<'_> {
        match self {
            Arg::Tensor(t) => ArgRef::In(t),
            Arg::F32(x) => ArgRef::F32(*x),
            Arg::I32(x) => ArgRef::I32(*x),
            Arg::Bool(b) => ArgRef::Bool(*b),
        }
    }

    fn writable(&self) -> bool {
        true
    }
}

impl LaunchArg for ArgRef<'_> {
    fn view(&self) -> ArgRef<'_> {
        match self {
            ArgRef::In(t) => ArgRef::In(t),
            ArgRef::Out(t) => ArgRef::In(t),
            ArgRef::F32(x) => ArgRef::F32(*x),
            ArgRef::I32(x) => ArgRef::I32(*x),
            ArgRef::Bool(b) => ArgRef::Bool(*b),
        }
    }

    fn writable(&self) -> bool {
        !matches!(self, ArgRef::In(_))
    }
}
