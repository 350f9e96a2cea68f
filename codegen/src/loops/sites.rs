//! Error sites: how generated code names the op that failed.
//!
//! A `for` op whose step is not positive makes the program return its index + 1 (in
//! pre-order, the order both generators lower `for` ops in); the launcher turns the code back
//! into the op's context, formatted as the interpreter formats it, so every target reports
//! the same error.

use opc_ir::{Kernel, Op, OpKind};

/// The context of `op` in error messages, as the interpreter formats it (`op_ctx`).
pub(crate) fn op_ctx(op: &Op) -> String {
    let mut s = format!("op `{}`", op.kind.mnemonic());
    if let Some(l) = op.loc {
        s.push_str(&format!(" at {}:{}", l.line, l.col));
    }
    if let Some(r) = op.results.first() {
        s.push_str(&format!(" (%{})", r.0));
    }
    s
}

/// Contexts of every `for` op in lowering order (pre-order), indexed by error code - 1.
pub(crate) fn for_sites(k: &Kernel) -> Vec<String> {
    let mut out = vec![];
    opc_ir::walk_ops(&k.body, &mut |op| {
        if op.kind == OpKind::For {
            out.push(op_ctx(op));
        }
    });
    out
}
