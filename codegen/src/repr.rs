//! The 32-bit element representation that the JIT targets (`cpu`, `llvm`) share with their
//! `extern "C"` helpers: every tile element is 32 bits — f32 for f32/f16/bf16 (already rounded
//! to the dtype), i32 for everything else (ints sign-extended, bool 0/1, e2m1 / e8m0 raw codes).
//! Conversions here follow the interpreter exactly (`opc_ir::numerics`), one element at a time;
//! the packed-nibble store and `atomic_add` are the memory helpers both targets call.

use half::{bf16, f16};
use opc_ir::numerics;
use opc_ir::{DType, Rounding};
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Mutex;

pub(crate) const ROUNDINGS: [Rounding; 4] = [Rounding::Rne, Rounding::Rtz, Rounding::Floor, Rounding::Ceil];

/// The code passed to helpers for a dtype (its index in `DType::ALL`).
pub(crate) fn dtype_code(d: DType) -> i64 {
    DType::ALL.iter().position(|&x| x == d).expect("every dtype is in DType::ALL") as i64
}

pub(crate) fn rounding_code(r: Rounding) -> i64 {
    ROUNDINGS.iter().position(|&x| x == r).expect("every rounding is in ROUNDINGS") as i64
}

/// Inverse of [`dtype_code`]; an out-of-range code (a code generator bug) reads as i32 rather
/// than panicking inside an `extern "C"` call.
pub(crate) fn dtype_of(c: u32) -> DType {
    DType::ALL.get(c as usize).copied().unwrap_or(DType::I32)
}

/// Inverse of [`rounding_code`].
pub(crate) fn rounding_of(c: u32) -> Rounding {
    ROUNDINGS[(c & 3) as usize]
}

pub(crate) use opc_ir::interp::is_float_repr;

/// Decoded value of a non-float element (codes decoded), as the interpreter's `int_value`.
pub(crate) fn int_value(d: DType, x: i64) -> f64 {
    match d {
        DType::E2M1 => numerics::e2m1_decode(x as u32) as f64,
        DType::E8M0 => numerics::e8m0_decode(x as u32),
        _ => x as f64,
    }
}

/// Raw bits of a float value of dtype `d`, as the interpreter's `f_bits`.
pub(crate) fn f_bits(d: DType, x: f32) -> u32 {
    match d {
        DType::F16 => f16::from_f32(x).to_bits() as u32,
        DType::BF16 => bf16::from_f32(x).to_bits() as u32,
        _ => x.to_bits(),
    }
}

/// `cast` of one element, exactly as the interpreter's `cast`.
pub(crate) fn cast_repr(x: u32, from: DType, to: DType, r: Rounding) -> u32 {
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

/// `bitcast` of one element, exactly as the interpreter's `bitcast`.
pub(crate) fn bitcast_repr(x: u32, from: DType, to: DType) -> u32 {
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

// --- memory helpers shared by the JIT targets ---------------------------------------------

/// Store a 4-bit code into element `e` of a packed tensor: one atomic read-modify-write of the
/// byte, so a concurrent store to the other nibble by another program is never lost.
///
/// # Safety
/// `base` points to a tensor buffer of at least `e / 2 + 1` bytes that lives for the call.
pub(crate) unsafe fn store_nibble(base: *mut u8, e: i64, code: u32) {
    // SAFETY: the caller guarantees the byte is inside the tensor; `AtomicU8` has the layout of u8.
    let cell = unsafe { &*(base.add((e / 2) as usize) as *const AtomicU8) };
    let v = (code & 0xF) as u8;
    let (keep, put) = if e % 2 == 0 { (0xF0u8, v) } else { (0x0Fu8, v << 4) };
    let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some((b & keep) | put));
}

/// Serializes `atomic_add` on elements whose address is not 4-byte aligned (tensor bytes are a
/// `Vec<u8>`; the allocator aligns them in practice, so this path is a fallback).
static UNALIGNED_ATOMIC: Mutex<()> = Mutex::new(());

/// `atomic_add` of one element of an f32 or i32 tensor (the only dtypes the verifier allows).
///
/// # Safety
/// `base` points to a tensor buffer holding element `e` (4 bytes at `4 * e`) for the call.
pub(crate) unsafe fn atomic_add(base: *mut u8, e: i64, d: DType, v: u32) {
    let float = d == DType::F32;
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
        // SAFETY: aligned, in bounds; every concurrent access to it is atomic or a plain
        // store by the kernel's contract (programs do not mix stores and atomic adds on an element).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casts_match_numerics() {
        let x = 2.5f32.to_bits();
        assert_eq!(cast_repr(x, DType::F32, DType::I8, Rounding::Rne) as i32, 2);
        assert_eq!(cast_repr(x, DType::F32, DType::E2M1, Rounding::Rne), 4); // 2.5 ties to 2.0 (code 4)
        assert_eq!(cast_repr(127, DType::E8M0, DType::F32, Rounding::Rne), 1.0f32.to_bits());
        assert_eq!(bitcast_repr(0xF, DType::E2M1, DType::I4) as i32, -1);
    }
}
