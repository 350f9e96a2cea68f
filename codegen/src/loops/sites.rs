//! Error sites: how generated code names the op that failed.
//!
//! A `for` op whose step is not positive makes the program return its index + 1 (in
//! pre-order, the order both generators lower `for` ops in); the launcher turns the code back
//! into the op's context, formatted as the interpreter formats it (`op_ctx`), so every target
//! reports the same error. The PTX target uses these too.

use opc_ir::{Kernel, OpKind};

pub(crate) use opc_ir::interp::op_ctx;

/// Contexts of every `for` op in lowering order (pre-order), indexed by error code - 1.
pub fn for_sites(k: &Kernel) -> Vec<String> {
    let mut out = vec![];
    opc_ir::walk_ops(&k.body, &mut |op| {
        if op.kind == OpKind::For {
            out.push(op_ctx(op));
        }
    });
    out
}
