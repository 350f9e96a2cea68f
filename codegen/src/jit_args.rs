//! Argument marshalling shared by the JIT targets (`cpu`, `llvm`): each parameter's words in
//! the `meta` array and each tensor's data address, for owned ([`opc_ir::Arg`]) and borrowed
//! ([`ArgRef`]) launches alike.

use crate::launch_pool::Program;
use crate::Result;
use std::cell::RefCell;
use std::thread::LocalKey;
use opc_ir::launch::{self, LaunchError};
use opc_ir::{Arg, ArgRef, Kernel, LaunchArg, ParamKind};

/// Where each launch-time value sits in the `meta` array the generated code reads.
#[derive(Clone, Debug)]
pub(crate) struct MetaLayout {
    /// First slot of the dims (one per `SymId`).
    pub dims: usize,
    /// Three slots: the grid extents.
    pub grid: usize,
    /// Per parameter: its scalar's slot, or the first of a tensor's `rank` shape then `rank` stride slots.
    pub params: Vec<usize>,
    pub len: usize,
}

impl MetaLayout {
    pub(crate) fn new(k: &Kernel) -> MetaLayout {
        let dims = 0;
        let grid = k.dims.len();
        let mut next = grid + 3;
        let mut params = vec![];
        for p in &k.params {
            params.push(next);
            next += match &p.kind {
                ParamKind::Scalar { .. } => 1,
                ParamKind::Tensor { dims, .. } => 2 * dims.len(),
            };
        }
        MetaLayout { dims, grid, params, len: next }
    }

    /// Check `args` against `k` (`bind_dims`), evaluate the grid and fill the `meta` array;
    /// zero the address of every scalar argument in `ptrs`. Returns the grid and `meta`.
    pub(crate) fn fill<A: LaunchArg>(&self, k: &Kernel, args: &[A], ptrs: &mut [usize]) -> Result<([usize; 3], Vec<i64>)> {
        let dims = launch::bind_dims(k, args)?;
        let g = launch::grid(k, &dims)?;
        let mut meta = vec![0i64; self.len];
        meta[self.dims..self.dims + dims.len()].copy_from_slice(&dims);
        for (i, &e) in g.iter().enumerate() {
            meta[self.grid + i] = e as i64;
        }
        for (pi, a) in args.iter().enumerate() {
            put_meta(&mut meta, self.params[pi], a);
            if a.tensor().is_none() {
                ptrs[pi] = 0;
            }
        }
        Ok((g, meta))
    }
}

/// Tensor bytes up to which a launch runs its programs in order on the calling thread: handing
/// them to the launch pool and waiting for its workers costs a few microseconds (tens when the
/// workers have parked), as much as the batch-1 decode's rope, norms, adds and head splits
/// take (about ten launches per layer).
pub(crate) const SERIAL_BYTES: usize = 64 << 10;

/// Whether a launch of `programs` programs over `args` is cheaper run serially on the calling
/// thread: a single program, or tensors of at most [`SERIAL_BYTES`] in all (the bytes any
/// program can touch).
fn run_serially<A: LaunchArg>(programs: usize, args: &[A]) -> bool {
    programs <= 1 || args.iter().filter_map(|a| a.tensor()).map(|t| t.data.len()).sum::<usize>() <= SERIAL_BYTES
}

/// Run a launch's programs `0..total`: in order on the calling thread when [`run_serially`]
/// says so, else across the launch pool. The first error is returned.
pub(crate) fn for_each_program<A: LaunchArg>(total: usize, args: &[A], program: &Program<'_>) -> std::result::Result<(), LaunchError> {
    if run_serially(total, args) {
        (0..total).try_for_each(program)
    } else {
        crate::launch_pool::run_programs(total, program)
    }
}

/// Run `f` on this thread's scratch arena `arena`, first grown to at least `len` elements
/// (filled with `fill`). Each thread keeps its arena across programs and launches; a program
/// runs to completion without launching anything, so the arena is never borrowed twice, and the
/// generated code never assumes it zeroed.
pub(crate) fn with_arena<T: Clone + 'static, R>(arena: &'static LocalKey<RefCell<Vec<T>>>, len: usize, fill: T, f: impl FnOnce(&mut Vec<T>) -> R) -> R {
    arena.with(|a| {
        let mut a = a.borrow_mut();
        if a.len() < len {
            a.resize(len, fill);
        }
        f(&mut a)
    })
}

/// The error of program `pid` whose generated code returned `rc`: the 1-based index of the
/// `for` site (`for_sites`) whose step `err` was not positive.
pub(crate) fn step_error(k: &Kernel, for_sites: &[String], pid: [i64; 3], rc: i32, err: i64) -> LaunchError {
    let site = for_sites.get(rc as usize - 1).map(String::as_str).unwrap_or("op `for`");
    LaunchError::Exec {
        kernel: k.name.clone(),
        msg: format!("program ({}, {}, {}): {site}: step must be positive, got {err}", pid[0], pid[1], pid[2]),
    }
}

/// Write parameter `a`'s launch-time values at `meta[at..]`: a tensor's shape then its element
/// strides (row-major), or a scalar's word (an f32 by its bits).
fn put_meta<A: LaunchArg>(meta: &mut [i64], at: usize, a: &A) {
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

/// `launch_raw` of a JIT target: on tensor bytes the caller placed at `data` (the guard-page
/// tests' private mappings), `args` giving dtypes, shapes and scalars.
///
/// # Safety
/// For every tensor argument `i`, `data[i]` must point to `args[i].data.len()` bytes, valid
/// for reads and writes for the whole call and not accessed by anything else meanwhile.
pub(crate) unsafe fn launch_at(e: &impl RunOn, kernel: &Kernel, args: &[Arg], data: &[*mut u8]) -> Result<()> {
    if data.len() != args.len() {
        return Err(LaunchError::ArgCount { kernel: kernel.name.clone(), expected: args.len(), got: data.len() }.into());
    }
    let ptrs = data.iter().map(|&p| p as usize).collect();
    // SAFETY: the caller's contract is `run`'s.
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
