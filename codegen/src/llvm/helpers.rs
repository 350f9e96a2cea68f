//! Runtime functions the generated code calls (`extern "C"`, bound to their `declare`d names
//! with `ExecutionEngine::add_global_mapping`).
//!
//! They exist so that results match the interpreter bit for bit where inline code would not:
//! transcendental functions are Rust's own `f32` functions, and the rare conversions (codes,
//! directed roundings to f16 / bf16, bitcasts between 16/8/4-bit types) call the same
//! `opc_ir::numerics` functions the interpreter uses. Elements cross as 32 bits, in the tile
//! representation of `lower.rs` (f32 for float dtypes, i32 otherwise).
//!
//! Memory: packed 4-bit stores are an atomic byte read-modify-write (two programs may write the
//! two nibbles of one byte), and `atomic_add` is a compare-and-swap loop on the element's word
//! (a lock serializes the unaligned fallback: tensor bytes are a `Vec<u8>`).

use opc_ir::numerics;

pub(super) use crate::repr::{dtype_code, rounding_code};
use crate::repr::{bitcast_repr, cast_repr, dtype_of, rounding_of};

extern "C" fn opc_llvm_exp(x: f32) -> f32 {
    x.exp()
}
extern "C" fn opc_llvm_exp2(x: f32) -> f32 {
    x.exp2()
}
extern "C" fn opc_llvm_ln(x: f32) -> f32 {
    x.ln()
}
extern "C" fn opc_llvm_log2(x: f32) -> f32 {
    x.log2()
}
extern "C" fn opc_llvm_tanh(x: f32) -> f32 {
    x.tanh()
}
extern "C" fn opc_llvm_sin(x: f32) -> f32 {
    x.sin()
}
extern "C" fn opc_llvm_cos(x: f32) -> f32 {
    x.cos()
}
extern "C" fn opc_llvm_powf(x: f32, y: f32) -> f32 {
    x.powf(y)
}

extern "C" fn opc_llvm_cast(x: u32, from: u32, to: u32, r: u32) -> u32 {
    cast_repr(x, dtype_of(from), dtype_of(to), rounding_of(r))
}

extern "C" fn opc_llvm_bitcast(x: u32, from: u32, to: u32) -> u32 {
    bitcast_repr(x, dtype_of(from), dtype_of(to))
}

/// Integer `pow`, `numerics::int_pow`.
extern "C" fn opc_llvm_ipow(base: i32, exp: i32, d: u32) -> i32 {
    numerics::int_pow(base as i64, exp as i64, dtype_of(d)) as i32
}

/// Packed 4-bit store (`repr::store_nibble`).
///
/// # Safety
/// As [`crate::repr::store_nibble`].
unsafe extern "C" fn opc_llvm_store_nibble(base: *mut u8, e: i64, code: u32) {
    // SAFETY: forwarded from the caller.
    unsafe { crate::repr::store_nibble(base, e, code) }
}

/// `atomic_add` of one element (`repr::atomic_add`).
///
/// # Safety
/// As [`crate::repr::atomic_add`].
unsafe extern "C" fn opc_llvm_atomic_add(base: *mut u8, e: i64, d: u32, v: u32) {
    // SAFETY: forwarded from the caller.
    unsafe { crate::repr::atomic_add(base, e, dtype_of(d), v) }
}

/// A helper the generated code may call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Helper {
    Exp,
    Exp2,
    Ln,
    Log2,
    Tanh,
    Sin,
    Cos,
    Powf,
    Cast,
    Bitcast,
    Ipow,
    StoreNibble,
    AtomicAdd,
}

impl Helper {
    pub(super) const ALL: [Helper; 13] = [
        Helper::Exp,
        Helper::Exp2,
        Helper::Ln,
        Helper::Log2,
        Helper::Tanh,
        Helper::Sin,
        Helper::Cos,
        Helper::Powf,
        Helper::Cast,
        Helper::Bitcast,
        Helper::Ipow,
        Helper::StoreNibble,
        Helper::AtomicAdd,
    ];

    pub(super) fn symbol(self) -> &'static str {
        match self {
            Helper::Exp => "opc_llvm_exp",
            Helper::Exp2 => "opc_llvm_exp2",
            Helper::Ln => "opc_llvm_ln",
            Helper::Log2 => "opc_llvm_log2",
            Helper::Tanh => "opc_llvm_tanh",
            Helper::Sin => "opc_llvm_sin",
            Helper::Cos => "opc_llvm_cos",
            Helper::Powf => "opc_llvm_powf",
            Helper::Cast => "opc_llvm_cast",
            Helper::Bitcast => "opc_llvm_bitcast",
            Helper::Ipow => "opc_llvm_ipow",
            Helper::StoreNibble => "opc_llvm_store_nibble",
            Helper::AtomicAdd => "opc_llvm_atomic_add",
        }
    }

    pub(super) fn address(self) -> usize {
        match self {
            Helper::Exp => opc_llvm_exp as *const () as usize,
            Helper::Exp2 => opc_llvm_exp2 as *const () as usize,
            Helper::Ln => opc_llvm_ln as *const () as usize,
            Helper::Log2 => opc_llvm_log2 as *const () as usize,
            Helper::Tanh => opc_llvm_tanh as *const () as usize,
            Helper::Sin => opc_llvm_sin as *const () as usize,
            Helper::Cos => opc_llvm_cos as *const () as usize,
            Helper::Powf => opc_llvm_powf as *const () as usize,
            Helper::Cast => opc_llvm_cast as *const () as usize,
            Helper::Bitcast => opc_llvm_bitcast as *const () as usize,
            Helper::Ipow => opc_llvm_ipow as *const () as usize,
            Helper::StoreNibble => opc_llvm_store_nibble as *const () as usize,
            Helper::AtomicAdd => opc_llvm_atomic_add as *const () as usize,
        }
    }

    /// LLVM parameter types and result type.
    pub(super) fn llvm_signature(self) -> (&'static [&'static str], Option<&'static str>) {
        match self {
            Helper::Exp | Helper::Exp2 | Helper::Ln | Helper::Log2 | Helper::Tanh | Helper::Sin | Helper::Cos => (&["float"], Some("float")),
            Helper::Powf => (&["float", "float"], Some("float")),
            Helper::Cast => (&["i32", "i32", "i32", "i32"], Some("i32")),
            Helper::Bitcast | Helper::Ipow => (&["i32", "i32", "i32"], Some("i32")),
            Helper::StoreNibble => (&["ptr", "i64", "i32"], None),
            Helper::AtomicAdd => (&["ptr", "i64", "i32", "i32"], None),
        }
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
