//! The loop-and-buffer level shared by the two CPU code generators (`cpu/`: Cranelift,
//! `llvm/`: LLVM text IR).
//!
//! Both generators lower the tile IR the same way: every tile value is a scalar held in a
//! register (uniform), a view of an arena buffer (slot + per-dim element strides), or (LLVM
//! only) an affine function of its indices; ops become loop nests over static shapes with
//! contiguous dims merged and the innermost dim run in vector chunks; global accesses check
//! every index against the tensor's launch-time dims. The decisions that do not depend on the
//! instruction set live here, once, and each generator emits its own instructions for them:
//! - `plan.rs`: the 32-bit element classes, literals as elements, row-major strides, and
//!   the shape ops as views (new strides for `broadcast` / `expand_dims` / `permute`).
//! - `arena.rs`: arena slot allocation: alignment, reference counts, liveness-based reuse.
//! - `nest.rs`: loop nests (one emitter trait, one recursive walker), dim merging and
//!   vector chunking for a target's lane count.
//! - `access.rs`: the load / store / atomic_add access analysis: the access shape, which
//!   dims each index tile binds, the operand layout, and the row path (vector rows with
//!   per-lane checks) versus element by element, walked with the bounds checks of each index
//!   folded in as soon as its dims are bound.
//! - `control.rs`: `for` / `if` / `yield`: which carried and merged values get slots or
//!   pinned buffers, and the order a `yield` copies in (temporaries for sources that read
//!   another home).
//! - `sites.rs`: how generated code names a failing op (error codes of `for` steps).
//! - `helpers.rs`: the runtime functions generated code calls, with target-neutral signatures.
//! - `kernel.rs`: [`LoopTarget`], the parameters that differ between the targets (lanes,
//!   tails, row accesses, slot reuse), and [`LoopKernel`], the plan of a whole kernel at this
//!   level (buffers, views, loop nests, accesses) as a printable value: `opc build --emit loops`.

pub(crate) mod access;
pub(crate) mod arena;
pub(crate) mod control;
pub(crate) mod helpers;
pub(crate) mod kernel;
pub(crate) mod nest;
pub(crate) mod plan;
pub(crate) mod sites;

pub use kernel::{plan_kernel, How, LoopKernel, LoopTarget, Nest, Path, Step};
pub use nest::Chunks;
