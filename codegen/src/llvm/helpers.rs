//! The runtime helpers as the LLVM target declares them: the table itself (functions,
//! symbols, target-neutral signatures) is shared with the Cranelift target
//! (`loops/helpers.rs`); this file gives each its LLVM types and `declare` line. The JIT maps
//! every declaration to the helper's address (`mod.rs`).

use std::sync::LazyLock;

pub(super) use crate::loops::helpers::Helper;
use crate::loops::helpers::Ty;
pub(super) use crate::repr::{dtype_code, rounding_code};

/// LLVM type of a helper parameter or result.
fn llvm_ty(t: Ty) -> &'static str {
    match t {
        Ty::F32 => "float",
        Ty::I32 => "i32",
        Ty::I64 => "i64",
        Ty::Ptr => "ptr",
    }
}

/// Parameter types of every helper, in [`Helper::ALL`] order.
static PARAMS: LazyLock<Vec<Vec<&'static str>>> = LazyLock::new(|| Helper::ALL.iter().map(|h| h.signature().0.iter().map(|&t| llvm_ty(t)).collect()).collect());

impl Helper {
    /// LLVM parameter types and result type.
    pub(super) fn llvm_signature(self) -> (&'static [&'static str], Option<&'static str>) {
        let i = Helper::ALL.iter().position(|&h| h == self).expect("every helper is in Helper::ALL");
        (&PARAMS[i], self.signature().1.map(llvm_ty))
    }

    /// The `declare` line; pure helpers are `memory(none)` so LLVM may hoist or drop calls.
    pub(super) fn declaration(self) -> String {
        let (p, r) = self.llvm_signature();
        let attrs = match self {
            Helper::StoreNibble | Helper::AtomicAdd => "#2",
            _ => "#1",
        };
        format!("declare {} @{}({}) {attrs}", r.unwrap_or("void"), self.symbol(), p.join(", "))
    }
}
