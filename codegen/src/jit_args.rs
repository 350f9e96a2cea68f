//! Argument marshalling shared by the JIT targets (`cpu`, `llvm`): each parameter's words in
//! the `meta` array and each tensor's data address, for owned ([`opc_ir::Arg`]) and borrowed
//! ([`ArgRef`]) launches alike.

use crate::Result;
use opc_ir::{Arg, ArgRef, LaunchArg};

/// Write parameter `a`'s launch-time values at `meta[at..]`: a tensor's shape then its element
/// strides (row-major), or a scalar's word (an f32 by its bits).
pub(crate) fn put_meta<A: LaunchArg>(meta: &mut [i64], at: usize, a: &A) {
    match a.view() {
        ArgRef::In(t) => put_shape(meta, at, &t.shape),
        ArgRef::Out(t) => put_shape(meta, at, &t.shape),
        ArgRef::F32(x) => meta[at] = x.to_bits() as i64,
        ArgRef::I32(x) => meta[at] = x as i64,
        ArgRef::Bool(b) => meta[at] = b as i64,
    }
}

fn put_shape(meta: &mut [i64], at: usize, shape: &[usize]) {
    let r = shape.len();
    let mut stride = 1i64;
    for d in (0..r).rev() {
        meta[at + d] = shape[d] as i64;
        meta[at + r + d] = stride;
        stride = stride.wrapping_mul(shape[d] as i64);
    }
}

/// The data address of a lent tensor (0 for a scalar). An `In` tensor's address is only read
/// through: `bind_dims` rejects an `out` parameter lent as `In`, and the verifier admits stores
/// only to `out` parameters.
fn ref_ptr(a: &mut ArgRef<'_>) -> usize {
    match a {
        ArgRef::In(t) => t.data.as_ptr() as usize,
        ArgRef::Out(t) => t.data.as_mut_ptr() as usize,
        _ => 0,
    }
}

/// The data address of an owned tensor argument (0 for a scalar).
fn arg_ptr(a: &mut Arg) -> usize {
    match a {
        Arg::Tensor(t) => t.data.as_mut_ptr() as usize,
        _ => 0,
    }
}

/// A JIT executable's launch on tensor bytes at given addresses.
pub(crate) trait RunOn {
    /// Check `args`, bind the dims, evaluate the grid and run every program.
    ///
    /// # Safety
    /// `ptrs[i]` addresses `args[i]`'s tensor bytes, valid for reads during the call, and for
    /// writes (exclusive to the call) where `args[i]` is writable; the implementation runs
    /// `bind_dims` before touching any of them.
    unsafe fn run<A: LaunchArg>(&self, args: &[A], ptrs: Vec<usize>) -> Result<()>;
}

/// `Executable::launch` of a JIT target: on the owned tensors' own buffers.
pub(crate) fn launch_owned(e: &impl RunOn, args: &mut [Arg]) -> Result<()> {
    let ptrs = args.iter_mut().map(arg_ptr).collect();
    // SAFETY: the pointers address the argument tensors' own buffers, which `args` keeps
    // mutably borrowed (and unmoved) for the whole call.
    unsafe { e.run(args, ptrs) }
}

/// `Executable::launch_refs` of a JIT target: on the lent tensors' buffers, no copy.
pub(crate) fn launch_lent(e: &impl RunOn, args: &mut [ArgRef<'_>]) -> Result<()> {
    let ptrs = args.iter_mut().map(ref_ptr).collect();
    // SAFETY: the pointers address the lent tensors' own buffers, borrowed for the whole call.
    // `run` checks first (`bind_dims`) that every `out` parameter was lent as `ArgRef::Out`,
    // and the verifier admits stores only to `out` parameters, so nothing is written through
    // a pointer taken from an `ArgRef::In`.
    unsafe { e.run(args, ptrs) }
}
