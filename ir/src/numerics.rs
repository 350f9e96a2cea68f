//! Exact element semantics of every dtype: rounding to f16/bf16 (through `half`), E2M1 and E8M0
//! per OCP MX v1.0, int saturation, round-half-to-even. The interpreter and host tensors use
//! these, so every backend is compared against one definition.

use crate::types::{DType, Rounding};
use half::{bf16, f16};

/// E2M1 magnitudes for codes 0..=7; codes 8..=15 are the negatives (code 8 is -0).
pub const E2M1_VALUES: [f32; 8] = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];

/// Decode an E2M1 code (low 4 bits).
pub fn e2m1_decode(code: u32) -> f32 {
    let m = E2M1_VALUES[(code & 7) as usize];
    if code & 8 != 0 {
        -m
    } else {
        m
    }
}

/// Encode to E2M1 with the given rounding, saturating at ±6; NaN encodes as +0 (E2M1 has no NaN).
pub fn e2m1_encode(x: f64, rounding: Rounding) -> u32 {
    if x.is_nan() {
        return 0;
    }
    let sign = if x.is_sign_negative() { 8 } else { 0 };
    let a = x.abs();
    // Round on the magnitude grid; for floor/ceil the direction flips with the sign.
    let (down, up) = match rounding {
        Rounding::Floor if sign != 0 => (false, true),
        Rounding::Ceil if sign != 0 => (true, false),
        Rounding::Floor => (true, false),
        Rounding::Ceil => (false, true),
        Rounding::Rtz => (true, false),
        Rounding::Rne => (false, false),
    };
    let mut best = 7u32;
    if a < 6.0 {
        // Find the bracketing codes lo <= a < hi.
        let mut lo = 0usize;
        while lo + 1 < 8 && (E2M1_VALUES[lo + 1] as f64) <= a {
            lo += 1;
        }
        let hi = (lo + 1).min(7);
        let (vl, vh) = (E2M1_VALUES[lo] as f64, E2M1_VALUES[hi] as f64);
        best = if a == vl || down {
            lo as u32
        } else if up {
            hi as u32
        } else if a - vl < vh - a {
            lo as u32
        } else if a - vl > vh - a {
            hi as u32
        } else if lo % 2 == 0 {
            // tie: the even code (mantissa bit 0)
            lo as u32
        } else {
            hi as u32
        };
    }
    best | sign
}

/// E8M0 scale value: 2^(e-127), 0xFF is NaN.
pub fn e8m0_decode(code: u32) -> f64 {
    let e = code & 0xFF;
    if e == 0xFF {
        f64::NAN
    } else {
        (2.0f64).powi(e as i32 - 127)
    }
}

/// Encode a positive value as E8M0 by rounding log2 with the given mode, clamped to [0, 254];
/// NaN, Inf and non-positive values give 0xFF (NaN) except +0 which gives 0.
pub fn e8m0_encode(x: f64, rounding: Rounding) -> u32 {
    if x.is_nan() || x.is_infinite() || x < 0.0 {
        return 0xFF;
    }
    if x == 0.0 {
        return 0;
    }
    let l = x.log2();
    let e = match rounding {
        Rounding::Floor | Rounding::Rtz => l.floor(),
        Rounding::Ceil => l.ceil(),
        Rounding::Rne => round_half_even(l),
    };
    (e + 127.0).clamp(0.0, 254.0) as u32
}

/// Round half to even.
pub fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 {
        2.0 * (x / 2.0).round()
    } else {
        r
    }
}

/// Apply an integer rounding mode to a float.
pub fn round_with(x: f64, rounding: Rounding) -> f64 {
    match rounding {
        Rounding::Rne => round_half_even(x),
        Rounding::Rtz => x.trunc(),
        Rounding::Floor => x.floor(),
        Rounding::Ceil => x.ceil(),
    }
}

/// Round an f64 to the nearest value of a float dtype (RNE, one rounding), returned as f64.
///
/// f16 and bf16 are rounded here directly from the f64 rather than through `half`'s f64
/// conversions: `bf16::from_f64` looks only at the f64's top bits, and a hardware path may go
/// through f32 first, and both can break ties differently from a single RNE rounding.
pub fn round_float(dtype: DType, x: f64) -> f64 {
    match dtype {
        DType::F32 => x as f32 as f64,
        DType::F16 => round_ieee(x, 10, -14, 15),
        DType::BF16 => round_ieee(x, 7, -126, 127),
        _ => x,
    }
}

/// Round half to even onto a binary format with `mbits` explicit mantissa bits and normal
/// exponents `emin..=emax` (subnormals below `emin`); overflow gives ±inf, NaN stays NaN.
fn round_ieee(x: f64, mbits: i32, emin: i32, emax: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let a = x.abs();
    if a < 2f64.powi(emin - mbits - 2) {
        // Below half the smallest subnormal: rounds to zero.
        return 0.0f64.copysign(x);
    }
    let e = (((a.to_bits() >> 52) & 0x7FF) as i32 - 1023).max(emin);
    let ulp = 2f64.powi(e - mbits);
    let r = round_half_even(a / ulp) * ulp; // scaling by a power of two is exact
    let max = (2.0 - 2f64.powi(-mbits)) * 2f64.powi(emax);
    let r = if r > max { f64::INFINITY } else { r };
    r.copysign(x)
}

/// Round a value to a float dtype with a directed rounding mode (f32 → f16/bf16 casts with rtz/floor/ceil).
pub fn round_float_with(dtype: DType, x: f64, rounding: Rounding) -> f64 {
    let near = round_float(dtype, x);
    if rounding == Rounding::Rne || near == x || x.is_nan() || x.is_infinite() {
        return near;
    }
    let toward_down = match rounding {
        Rounding::Floor => true,
        Rounding::Ceil => false,
        Rounding::Rtz => x > 0.0,
        Rounding::Rne => unreachable!(),
    };
    if toward_down && near > x {
        next_float(dtype, near, false)
    } else if !toward_down && near < x {
        next_float(dtype, near, true)
    } else {
        near
    }
}

/// The adjacent representable value of `dtype` above (`up`) or below `x` (which is representable).
fn next_float(dtype: DType, x: f64, up: bool) -> f64 {
    match dtype {
        DType::F32 => {
            let f = x as f32;
            let b = f.to_bits();
            let nb = if f == 0.0 {
                if up {
                    1
                } else {
                    0x8000_0001
                }
            } else if (f > 0.0) == up {
                b + 1
            } else {
                b - 1
            };
            f32::from_bits(nb) as f64
        }
        DType::F16 => {
            let f = f16::from_f64(x);
            let b = f.to_bits();
            let nb = if x == 0.0 {
                if up {
                    1
                } else {
                    0x8001
                }
            } else if (x > 0.0) == up {
                b + 1
            } else {
                b - 1
            };
            f16::from_bits(nb).to_f64()
        }
        DType::BF16 => {
            let f = bf16::from_f64(x);
            let b = f.to_bits();
            let nb = if x == 0.0 {
                if up {
                    1
                } else {
                    0x8001
                }
            } else if (x > 0.0) == up {
                b + 1
            } else {
                b - 1
            };
            bf16::from_bits(nb).to_f64()
        }
        _ => x,
    }
}

/// Saturate an integer to a dtype's range (wrapping is the caller's choice, not this one).
pub fn saturate_int(dtype: DType, x: i64) -> i64 {
    let (lo, hi) = dtype.int_range().expect("integer dtype");
    x.clamp(lo, hi)
}

/// Wrap an integer into a dtype's two's-complement range (int arithmetic semantics).
pub fn wrap_int(dtype: DType, x: i64) -> i64 {
    match dtype {
        DType::Bool => (x != 0) as i64,
        DType::I4 => (x << 60) >> 60,
        DType::I8 => x as i8 as i64,
        DType::U8 | DType::E8M0 => x as u8 as i64,
        DType::E2M1 => x & 0xF,
        DType::I32 => x as i32 as i64,
        _ => x,
    }
}

/// Integer `pow` wrapping to `dtype` after every step (square-and-multiply); a negative exponent
/// gives 0 except for bases ±1.
pub fn int_pow(base: i64, exp: i64, dtype: DType) -> i64 {
    if exp < 0 {
        return match base {
            1 => 1,
            -1 if exp % 2 == 0 => 1,
            -1 => -1,
            _ => 0,
        };
    }
    let (mut r, mut b, mut e) = (1i64, base, exp);
    while e > 0 {
        if e & 1 == 1 {
            r = wrap_int(dtype, r.wrapping_mul(b));
        }
        b = wrap_int(dtype, b.wrapping_mul(b));
        e >>= 1;
    }
    r
}

/// Float → integer dtype: round with the mode, saturate; NaN gives 0.
pub fn float_to_int(dtype: DType, x: f64, rounding: Rounding) -> i64 {
    if x.is_nan() {
        return 0;
    }
    let r = round_with(x, rounding);
    let (lo, hi) = dtype.int_range().expect("integer dtype");
    if r <= lo as f64 {
        lo
    } else if r >= hi as f64 {
        hi
    } else {
        r as i64
    }
}

/// Decode raw stored bits of one element to f64 (codes to their values).
pub fn decode_f64(dtype: DType, bits: u32) -> f64 {
    match dtype {
        DType::F32 => f32::from_bits(bits) as f64,
        DType::F16 => f16::from_bits(bits as u16).to_f64(),
        DType::BF16 => bf16::from_bits(bits as u16).to_f64(),
        DType::E2M1 => e2m1_decode(bits) as f64,
        DType::E8M0 => e8m0_decode(bits),
        _ => decode_int(dtype, bits) as f64,
    }
}

/// Decode raw bits as an integer (sign-extended for signed types; codes as their raw code).
pub fn decode_int(dtype: DType, bits: u32) -> i64 {
    match dtype {
        DType::Bool => (bits & 1) as i64,
        DType::I4 => (((bits & 0xF) as i64) << 60) >> 60,
        DType::I8 => bits as u8 as i8 as i64,
        DType::U8 | DType::E8M0 => (bits & 0xFF) as i64,
        DType::E2M1 => (bits & 0xF) as i64,
        DType::I32 => bits as i32 as i64,
        DType::F32 | DType::F16 | DType::BF16 => decode_f64(dtype, bits) as i64,
    }
}

/// Encode an f64 value as raw bits of `dtype` (RNE; ints saturate; e2m1 saturates; e8m0 rounds log2).
pub fn encode_f64(dtype: DType, x: f64) -> u32 {
    match dtype {
        DType::F32 => (x as f32).to_bits(),
        DType::F16 => f16::from_f64(x).to_bits() as u32,
        DType::BF16 => bf16::from_f64(x).to_bits() as u32,
        DType::E2M1 => e2m1_encode(x, Rounding::Rne),
        DType::E8M0 => e8m0_encode(x, Rounding::Rne),
        DType::Bool => (x != 0.0) as u32,
        _ => encode_int(dtype, float_to_int(dtype, x, Rounding::Rne)),
    }
}

/// Encode an integer value (already in range, or wrapped) as raw bits of an integer or code dtype.
pub fn encode_int(dtype: DType, x: i64) -> u32 {
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => encode_f64(dtype, x as f64),
        DType::Bool => (x != 0) as u32,
        DType::I4 | DType::E2M1 => (x as u32) & 0xF,
        DType::I8 | DType::U8 | DType::E8M0 => (x as u32) & 0xFF,
        DType::I32 => x as i32 as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e2m1_ties_round_to_even() {
        let cases = [(0.25, 0.0), (0.75, 1.0), (2.5, 2.0), (3.5, 4.0), (5.0, 4.0), (7.9, 6.0), (-2.5, -2.0), (1.25, 1.0)];
        for (x, want) in cases {
            assert_eq!(e2m1_decode(e2m1_encode(x, Rounding::Rne)), want, "{x}");
        }
    }

    #[test]
    fn e8m0_decodes_powers_of_two() {
        assert_eq!(e8m0_decode(127), 1.0);
        assert_eq!(e8m0_decode(0), 2f64.powi(-127));
        assert!(e8m0_decode(255).is_nan());
        assert_eq!(e8m0_encode(7.9, Rounding::Floor), 129);
    }

    #[test]
    fn int4_wraps_and_saturates() {
        assert_eq!(wrap_int(DType::I4, 8), -8);
        assert_eq!(float_to_int(DType::I4, 9.7, Rounding::Rne), 7);
        assert_eq!(float_to_int(DType::I4, -8.5, Rounding::Rne), -8);
        assert_eq!(float_to_int(DType::I8, 2.5, Rounding::Rne), 2);
    }

    #[test]
    fn bf16_and_f16_round_once_to_nearest_even() {
        // 0x3F808001: a tie is broken by the lowest f32 mantissa bits.
        let x = f32::from_bits(0x3F80_8001) as f64;
        assert_eq!(bf16::from_f64(round_float(DType::BF16, x)).to_bits(), 0x3F81);
        assert_eq!(round_float(DType::BF16, f32::from_bits(0x3F80_8000) as f64), 1.0);
        for bits in (0u32..=0xFFFF_FFFF).step_by(65_521) {
            let f = f32::from_bits(bits);
            if f.is_nan() {
                continue;
            }
            assert_eq!(round_float(DType::BF16, f as f64), bf16::from_f32(f).to_f64(), "bf16 {bits:#x}");
            let h = round_float(DType::F16, f as f64);
            assert_eq!(h.to_bits(), f16::from_f32(f).to_f64().to_bits(), "f16 {bits:#x}");
        }
        assert_eq!(round_float(DType::F16, 65520.0), f64::INFINITY);
        assert_eq!(round_float(DType::F16, 65519.99), 65504.0);
    }

    #[test]
    fn directed_rounding_to_bf16() {
        let x = 1.0 + 2f64.powi(-9); // between two bf16 values
        assert_eq!(round_float_with(DType::BF16, x, Rounding::Floor), 1.0);
        assert_eq!(round_float_with(DType::BF16, x, Rounding::Ceil), 1.0 + 2f64.powi(-7));
    }
}
