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

use half::{bf16, f16};
use opc_ir::numerics;
use opc_ir::{DType, Rounding};
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Mutex;

const ROUNDINGS: [Rounding; 4] = [Rounding::Rne, Rounding::Rtz, Rounding::Floor, Rounding::Ceil];

/// The code passed to helpers for a dtype (its index in `DType::ALL`).
pub(super) fn dtype_code(d: DType) -> i64 {
    DType::ALL.iter().position(|&x| x == d).expect("every dtype is in DType::ALL") as i64
}

pub(super) fn rounding_code(r: Rounding) -> i64 {
    ROUNDINGS.iter().position(|&x| x == r).expect("every rounding is in ROUNDINGS") as i64
}

fn dtype_of(c: u32) -> DType {
    DType::ALL.get(c as usize).copied().unwrap_or(DType::I32)
}

fn is_float_repr(d: DType) -> bool {
    matches!(d, DType::F32 | DType::F16 | DType::BF16)
}

/// Decoded value of a non-float element (codes decoded), as the interpreter's `int_value`.
fn int_value(d: DType, x: i64) -> f64 {
    match d {
        DType::E2M1 => numerics::e2m1_decode(x as u32) as f64,
        DType::E8M0 => numerics::e8m0_decode(x as u32),
        _ => x as f64,
    }
}

/// Raw bits of a float value of dtype `d`, as the interpreter's `f_bits`.
fn f_bits(d: DType, x: f32) -> u32 {
    match d {
        DType::F16 => f16::from_f32(x).to_bits() as u32,
        DType::BF16 => bf16::from_f32(x).to_bits() as u32,
        _ => x.to_bits(),
    }
}

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

/// `cast` of one element, exactly as the interpreter's `cast`.
pub(super) fn cast_repr(x: u32, from: DType, to: DType, r: Rounding) -> u32 {
    if from == to {
        return x;
    }
    if is_float_repr(from) {
        let v = f32::from_bits(x);
        if is_float_repr(to) {
            if to == DType::F32 {
                return x;
            }
            return (numerics::round_float_with(to, v as f64, r) as f32).to_bits();
        }
        let i = match to {
            DType::Bool => (v != 0.0) as i64,
            DType::E2M1 => numerics::e2m1_encode(v as f64, r) as i64,
            DType::E8M0 => numerics::e8m0_encode(v as f64, r) as i64,
            _ => numerics::float_to_int(to, v as f64, r),
        };
        return i as i32 as u32;
    }
    let v = x as i32 as i64;
    if is_float_repr(to) {
        return (numerics::round_float_with(to, int_value(from, v), r) as f32).to_bits();
    }
    let i = if from.is_code() {
        match to {
            DType::Bool => (int_value(from, v) != 0.0) as i64,
            DType::E2M1 => numerics::e2m1_encode(int_value(from, v), r) as i64,
            DType::E8M0 => numerics::e8m0_encode(int_value(from, v), r) as i64,
            _ => numerics::wrap_int(to, v),
        }
    } else if from == DType::Bool && to.is_code() {
        let f: fn(f64, Rounding) -> u32 = if to == DType::E2M1 { numerics::e2m1_encode } else { numerics::e8m0_encode };
        f(v as f64, r) as i64
    } else {
        numerics::wrap_int(to, v)
    };
    i as i32 as u32
}

extern "C" fn opc_llvm_cast(x: u32, from: u32, to: u32, r: u32) -> u32 {
    cast_repr(x, dtype_of(from), dtype_of(to), ROUNDINGS[(r & 3) as usize])
}

/// `bitcast` of one element, exactly as the interpreter's `bitcast`.
pub(super) fn bitcast_repr(x: u32, from: DType, to: DType) -> u32 {
    if from == to {
        return x;
    }
    let bits = if is_float_repr(from) { f_bits(from, f32::from_bits(x)) } else { numerics::encode_int(from, x as i32 as i64) };
    match to {
        DType::F32 => bits,
        DType::F16 => f16::from_bits(bits as u16).to_f32().to_bits(),
        DType::BF16 => bf16::from_bits(bits as u16).to_f32().to_bits(),
        _ => numerics::decode_int(to, bits) as i32 as u32,
    }
}

extern "C" fn opc_llvm_bitcast(x: u32, from: u32, to: u32) -> u32 {
    bitcast_repr(x, dtype_of(from), dtype_of(to))
}

/// Integer `pow`, as the interpreter's `ipow` (wrapping to the dtype after every step).
extern "C" fn opc_llvm_ipow(base: i32, exp: i32, d: u32) -> i32 {
    let d = dtype_of(d);
    let (base, exp) = (base as i64, exp as i64);
    if exp < 0 {
        return match base {
            1 => 1,
            -1 => {
                if exp % 2 == 0 {
                    1
                } else {
                    -1
                }
            }
            _ => 0,
        };
    }
    let (mut r, mut b, mut e) = (1i64, base, exp);
    while e > 0 {
        if e & 1 == 1 {
            r = numerics::wrap_int(d, r.wrapping_mul(b));
        }
        b = numerics::wrap_int(d, b.wrapping_mul(b));
        e >>= 1;
    }
    r as i32
}

/// Store a 4-bit code into element `e` of a packed tensor: an atomic read-modify-write of the
/// byte, so a concurrent store to the other nibble by another program is never lost.
///
/// # Safety
/// `base` points to a tensor buffer of at least `e / 2 + 1` bytes that lives for the call.
unsafe extern "C" fn opc_llvm_store_nibble(base: *mut u8, e: i64, code: u32) {
    // SAFETY: the caller guarantees the byte is inside the tensor; `AtomicU8` has the layout of u8.
    let cell = unsafe { &*(base.add((e / 2) as usize) as *const AtomicU8) };
    let v = (code & 0xF) as u8;
    let (keep, put) = if e % 2 == 0 { (0xF0u8, v) } else { (0x0Fu8, v << 4) };
    let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some((b & keep) | put));
}

static UNALIGNED_ATOMIC: Mutex<()> = Mutex::new(());

/// `atomic_add` of one element of an f32 or i32 tensor (the only dtypes the verifier allows).
///
/// # Safety
/// `base` points to a tensor buffer holding element `e` (4 bytes at `4 * e`) for the call.
unsafe extern "C" fn opc_llvm_atomic_add(base: *mut u8, e: i64, d: u32, v: u32) {
    let float = dtype_of(d) == DType::F32;
    let add = |old: u32| -> u32 {
        if float {
            (f32::from_bits(old) + f32::from_bits(v)).to_bits()
        } else {
            (old as i32).wrapping_add(v as i32) as u32
        }
    };
    // SAFETY: the caller guarantees the 4 bytes are inside the tensor.
    let p = unsafe { base.add(4 * e as usize) };
    if (p as usize).is_multiple_of(4) {
        // SAFETY: aligned, in bounds; concurrent accesses to it are atomic by the kernel contract.
        let cell = unsafe { &*(p as *const AtomicU32) };
        let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| Some(add(old)));
    } else {
        let _g = UNALIGNED_ATOMIC.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: as above; byte-wise atomic accesses under the lock.
        let cells = unsafe { std::slice::from_raw_parts(p as *const AtomicU8, 4) };
        let old = u32::from_le_bytes(std::array::from_fn(|i| cells[i].load(Ordering::Relaxed)));
        for (c, b) in cells.iter().zip(add(old).to_le_bytes()) {
            c.store(b, Ordering::Relaxed);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casts_match_numerics() {
        let x = 2.5f32.to_bits();
        assert_eq!(cast_repr(x, DType::F32, DType::I8, Rounding::Rne) as i32, 2);
        assert_eq!(cast_repr(x, DType::F32, DType::E2M1, Rounding::Rne), 4);
        assert_eq!(bitcast_repr(0xF, DType::E2M1, DType::I4) as i32, -1);
    }
}
