//! Runtime helpers that generated code calls (`extern "C"`), one table for both CPU targets:
//! the Cranelift JIT registers them as symbols (its ahead-of-time objects link `aot_rt.c`'s
//! equivalents, which relocate by the index in [`Helper::ALL`]), the LLVM target `declare`s
//! them and maps each declaration to its address.
//!
//! Everything here exists so that the generated code's results are bit-identical to the
//! interpreter's: transcendental functions are Rust's own `f32` functions, f16 conversions go
//! through `half`, and the rarely used conversions (float ↔ int with a rounding mode, e2m1 /
//! e8m0 codes, bitcasts between 16/8/4-bit types) call the same `opc_ir::numerics` functions
//! the interpreter uses, one element at a time.
//!
//! Elements cross as 32 bits in the tile representation (`plan.rs`): f32 for f32/f16/bf16
//! (already rounded to the dtype) and i32 for everything else. Helpers that take "any" element
//! take and return those 32 bits as `u32`.
//!
//! Memory helpers: packed 4-bit stores are an atomic byte read-modify-write (two programs may
//! write the two nibbles of one byte concurrently, as the interpreter allows), and `atomic_add`
//! is a compare-and-swap loop on the element's word.

use half::f16;
use opc_ir::numerics;

use crate::repr::{bitcast_repr, cast_repr, dtype_of, rounding_of};

// --- float math ---------------------------------------------------------------------------

extern "C" fn opc_exp(x: f32) -> f32 {
    x.exp()
}
extern "C" fn opc_exp2(x: f32) -> f32 {
    x.exp2()
}
extern "C" fn opc_ln(x: f32) -> f32 {
    x.ln()
}
extern "C" fn opc_log2(x: f32) -> f32 {
    x.log2()
}
extern "C" fn opc_tanh(x: f32) -> f32 {
    x.tanh()
}
extern "C" fn opc_sin(x: f32) -> f32 {
    x.sin()
}
extern "C" fn opc_cos(x: f32) -> f32 {
    x.cos()
}
extern "C" fn opc_floor(x: f32) -> f32 {
    x.floor()
}
extern "C" fn opc_ceil(x: f32) -> f32 {
    x.ceil()
}
extern "C" fn opc_round(x: f32) -> f32 {
    x.round_ties_even()
}
extern "C" fn opc_powf(x: f32, y: f32) -> f32 {
    x.powf(y)
}
extern "C" fn opc_fmod(x: f32, y: f32) -> f32 {
    x % y
}

// --- f16 ----------------------------------------------------------------------------------

/// Round an f32 to the nearest f16 value (RNE), returned as f32.
extern "C" fn opc_round_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}
/// f16 bits of an f32 (RNE).
extern "C" fn opc_f16_bits(x: f32) -> u32 {
    f16::from_f32(x).to_bits() as u32
}
/// f32 value of f16 bits.
extern "C" fn opc_f16_value(bits: u32) -> f32 {
    f16::from_bits(bits as u16).to_f32()
}

// --- conversions --------------------------------------------------------------------------

extern "C" fn opc_cast(x: u32, from: u32, to: u32, r: u32) -> u32 {
    cast_repr(x, dtype_of(from), dtype_of(to), rounding_of(r))
}

extern "C" fn opc_bitcast(x: u32, from: u32, to: u32) -> u32 {
    bitcast_repr(x, dtype_of(from), dtype_of(to))
}

/// Integer `pow`, `numerics::int_pow`.
extern "C" fn opc_ipow(base: i32, exp: i32, d: u32) -> i32 {
    numerics::int_pow(base as i64, exp as i64, dtype_of(d)) as i32
}

// --- memory -------------------------------------------------------------------------------

/// Packed 4-bit store (`repr::store_nibble`).
///
/// # Safety
/// As [`crate::repr::store_nibble`].
unsafe extern "C" fn opc_store_nibble(base: *mut u8, e: i64, code: u32) {
    // SAFETY: forwarded from the caller.
    unsafe { crate::repr::store_nibble(base, e, code) }
}

/// `atomic_add` of one element (`repr::atomic_add`).
///
/// # Safety
/// As [`crate::repr::atomic_add`].
unsafe extern "C" fn opc_atomic_add(base: *mut u8, e: i64, d: u32, v: u32) {
    // SAFETY: forwarded from the caller.
    unsafe { crate::repr::atomic_add(base, e, dtype_of(d), v) }
}

/// A helper the generated code may call: symbol name, address, parameter and result types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Helper {
    Exp,
    Exp2,
    Ln,
    Log2,
    Tanh,
    Sin,
    Cos,
    Floor,
    Ceil,
    Round,
    Powf,
    Fmod,
    RoundF16,
    F16Bits,
    F16Value,
    Cast,
    Bitcast,
    Ipow,
    StoreNibble,
    AtomicAdd,
}

/// Argument / result kinds of helper signatures.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Ty {
    F32,
    I32,
    Ptr,
    I64,
}

impl Helper {
    pub(crate) const ALL: [Helper; 20] = [
        Helper::Exp,
        Helper::Exp2,
        Helper::Ln,
        Helper::Log2,
        Helper::Tanh,
        Helper::Sin,
        Helper::Cos,
        Helper::Floor,
        Helper::Ceil,
        Helper::Round,
        Helper::Powf,
        Helper::Fmod,
        Helper::RoundF16,
        Helper::F16Bits,
        Helper::F16Value,
        Helper::Cast,
        Helper::Bitcast,
        Helper::Ipow,
        Helper::StoreNibble,
        Helper::AtomicAdd,
    ];

    pub(crate) fn symbol(self) -> &'static str {
        match self {
            Helper::Exp => "opc_exp",
            Helper::Exp2 => "opc_exp2",
            Helper::Ln => "opc_ln",
            Helper::Log2 => "opc_log2",
            Helper::Tanh => "opc_tanh",
            Helper::Sin => "opc_sin",
            Helper::Cos => "opc_cos",
            Helper::Floor => "opc_floor",
            Helper::Ceil => "opc_ceil",
            Helper::Round => "opc_round",
            Helper::Powf => "opc_powf",
            Helper::Fmod => "opc_fmod",
            Helper::RoundF16 => "opc_round_f16",
            Helper::F16Bits => "opc_f16_bits",
            Helper::F16Value => "opc_f16_value",
            Helper::Cast => "opc_cast",
            Helper::Bitcast => "opc_bitcast",
            Helper::Ipow => "opc_ipow",
            Helper::StoreNibble => "opc_store_nibble",
            Helper::AtomicAdd => "opc_atomic_add",
        }
    }

    pub(crate) fn address(self) -> *const u8 {
        match self {
            Helper::Exp => opc_exp as *const u8,
            Helper::Exp2 => opc_exp2 as *const u8,
            Helper::Ln => opc_ln as *const u8,
            Helper::Log2 => opc_log2 as *const u8,
            Helper::Tanh => opc_tanh as *const u8,
            Helper::Sin => opc_sin as *const u8,
            Helper::Cos => opc_cos as *const u8,
            Helper::Floor => opc_floor as *const u8,
            Helper::Ceil => opc_ceil as *const u8,
            Helper::Round => opc_round as *const u8,
            Helper::Powf => opc_powf as *const u8,
            Helper::Fmod => opc_fmod as *const u8,
            Helper::RoundF16 => opc_round_f16 as *const u8,
            Helper::F16Bits => opc_f16_bits as *const u8,
            Helper::F16Value => opc_f16_value as *const u8,
            Helper::Cast => opc_cast as *const u8,
            Helper::Bitcast => opc_bitcast as *const u8,
            Helper::Ipow => opc_ipow as *const u8,
            Helper::StoreNibble => opc_store_nibble as *const u8,
            Helper::AtomicAdd => opc_atomic_add as *const u8,
        }
    }

    /// (parameters, result)
    pub(crate) fn signature(self) -> (&'static [Ty], Option<Ty>) {
        use Ty::*;
        match self {
            Helper::Exp
            | Helper::Exp2
            | Helper::Ln
            | Helper::Log2
            | Helper::Tanh
            | Helper::Sin
            | Helper::Cos
            | Helper::Floor
            | Helper::Ceil
            | Helper::Round
            | Helper::RoundF16 => (&[F32], Some(F32)),
            Helper::Powf | Helper::Fmod => (&[F32, F32], Some(F32)),
            Helper::F16Bits => (&[F32], Some(I32)),
            Helper::F16Value => (&[I32], Some(F32)),
            Helper::Cast => (&[I32, I32, I32, I32], Some(I32)),
            Helper::Bitcast => (&[I32, I32, I32], Some(I32)),
            Helper::Ipow => (&[I32, I32, I32], Some(I32)),
            Helper::StoreNibble => (&[Ptr, I64, I32], None),
            Helper::AtomicAdd => (&[Ptr, I64, I32, I32], None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nibble_store_keeps_the_other_half() {
        let mut b = [0xABu8];
        unsafe { opc_store_nibble(b.as_mut_ptr(), 0, 0x3) };
        assert_eq!(b[0], 0xA3);
        unsafe { opc_store_nibble(b.as_mut_ptr(), 1, 0x5) };
        assert_eq!(b[0], 0x53);
    }
}
