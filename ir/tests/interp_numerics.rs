//! Element semantics of the reference interpreter: packed types, casts, int and float arithmetic,
//! reductions and scans.

#[path = "interp_builder.rs"]
mod builder;

use builder::*;
use half::{bf16, f16};
use opc_ir::interp;
use opc_ir::ir::*;
use opc_ir::{Arg, DType, Rounding, Tensor};

/// out[i] = f(x)[i] over a 1-D input of `n` elements (one program, exact shapes).
fn map_kernel(in_dt: DType, out_dt: DType, n: usize, f: impl FnOnce(&mut KB, ValueId) -> ValueId) -> Kernel {
    let mut kb = KB::new("map");
    let ns = kb.dim("N");
    let x = kb.tensor("x", in_dt, vec![s(ns)], false);
    let o = kb.tensor("o", out_dt, vec![s(ns)], true);
    kb.grid(|kb| vec![kb.i32c(1)]);
    let ar = kb.arange(n);
    let xv = kb.load(x, &[ar], None, None);
    let y = f(&mut kb, xv);
    assert_eq!(kb.ty(y).dtype, out_dt);
    kb.store(o, &[ar], y, None);
    kb.finish()
}

fn run_map(k: &Kernel, input: Tensor, out_dt: DType) -> Tensor {
    let n = input.numel();
    let mut args = vec![Arg::Tensor(input), tzeros(out_dt, &[n])];
    interp::run(k, &mut args).unwrap();
    tens(&args[1]).clone()
}

fn map_f32(vals: &[f32], out_dt: DType, f: impl FnOnce(&mut KB, ValueId) -> ValueId) -> Tensor {
    let k = map_kernel(DType::F32, out_dt, vals.len(), f);
    run_map(&k, Tensor::from_f32(DType::F32, &[vals.len()], vals), out_dt)
}

fn map_i(dt: DType, vals: &[i32], out_dt: DType, f: impl FnOnce(&mut KB, ValueId) -> ValueId) -> Tensor {
    let k = map_kernel(dt, out_dt, vals.len(), f);
    run_map(&k, Tensor::from_i32(dt, &[vals.len()], vals), out_dt)
}

// --- packed 4-bit types ------------------------------------------------------------------------

/// codes[i] = cast(src[i], T), BLOCK elements per program (odd, so programs share bytes).
fn pack_kernel(src_dt: DType, dt: DType, block: usize) -> Kernel {
    let mut kb = KB::new("pack");
    let ns = kb.dim("N");
    let x = kb.tensor("x", src_dt, vec![s(ns)], false);
    let q = kb.tensor("q", dt, vec![s(ns)], true);
    kb.grid(|kb| {
        let n = kb.dimv(ns);
        vec![kb.cdiv(n, block as i64)]
    });
    let p = kb.pid(0);
    let bc = kb.i32c(block as i64);
    let b0 = kb.mul(p, bc);
    let ar = kb.arange(block);
    let idx = kb.add(b0, ar);
    let xv = kb.load(x, &[idx], None, None);
    let cv = kb.cast(xv, dt, Rounding::Rne);
    kb.store(q, &[idx], cv, None);
    kb.finish()
}

/// out[i] = cast(q[i], T2), loading a packed tensor with a 2-D index tile.
fn unpack_kernel(dt: DType, out_dt: DType, rows: usize, cols: usize) -> Kernel {
    let mut kb = KB::new("unpack");
    let ns = kb.dim("N");
    let q = kb.tensor("q", dt, vec![s(ns)], false);
    let o = kb.tensor("o", out_dt, vec![s(ns)], true);
    kb.grid(|kb| vec![kb.i32c(1)]);
    let r = kb.arange(rows);
    let cc = kb.arange(cols);
    let re = kb.expand(r, 1);
    let ce = kb.expand(cc, 0);
    let w = kb.i32c(cols as i64);
    let rw = kb.mul(re, w);
    let idx = kb.add(rw, ce); // [rows, cols]
    let v = kb.load(q, &[idx], None, None);
    let f = kb.cast(v, out_dt, Rounding::Rne);
    kb.store(o, &[idx], f, None);
    kb.finish()
}

#[test]
fn i4_store_packs_low_nibble_first_and_loads_back() {
    let vals = [1, -2, 3, 7, -8, 0, 5, -1, 4];
    let n = vals.len();
    let k = pack_kernel(DType::I32, DType::I4, 3);
    let mut args = vec![Arg::Tensor(Tensor::from_i32(DType::I32, &[n], &vals)), tzeros(DType::I4, &[n])];
    interp::run(&k, &mut args).unwrap();
    let q = tens(&args[1]).clone();
    assert_eq!(q.data, vec![0xE1, 0x73, 0x08, 0xF5, 0x04]);
    // load back through a 2-D index tile (3 x 3 covers the 9 elements)
    let k2 = unpack_kernel(DType::I4, DType::I32, 3, 3);
    let mut args = vec![Arg::Tensor(q), tzeros(DType::I32, &[n])];
    interp::run(&k2, &mut args).unwrap();
    assert_eq!(tens(&args[1]).to_i64_vec(), vals.iter().map(|&v| v as i64).collect::<Vec<_>>());
}

#[test]
fn i4_cast_wraps_from_ints() {
    // int → int casts wrap
    let t = map_i(DType::I32, &[8, -9, 15, 16, 7], DType::I4, |kb, x| kb.cast(x, DType::I4, Rounding::Rne));
    assert_eq!(t.to_i64_vec(), vec![-8, 7, -1, 0, 7]);
}

#[test]
fn e2m1_store_packs_and_loads_back() {
    let vals = [0.5f32, -1.0, 6.0, 1.5, -0.0, 3.0, -6.0];
    let n = vals.len();
    let k = pack_kernel(DType::F32, DType::E2M1, 5);
    let mut args = vec![tf32(&[n], &vals), tzeros(DType::E2M1, &[n])];
    interp::run(&k, &mut args).unwrap();
    let q = tens(&args[1]).clone();
    // codes: 0.5=1, -1=0xA, 6=7, 1.5=3, -0=8, 3=5, -6=0xF
    assert_eq!(q.data, vec![0xA1, 0x37, 0x58, 0x0F]);
    let k2 = unpack_kernel(DType::E2M1, DType::F32, 1, n);
    let mut args = vec![Arg::Tensor(q), tzeros(DType::F32, &[n])];
    interp::run(&k2, &mut args).unwrap();
    let got = tens(&args[1]).to_f32_vec();
    assert_eq!(got, vals.to_vec());
    assert!(got[4].is_sign_negative());
}

// --- casts -------------------------------------------------------------------------------------

#[test]
fn float_to_i4_saturates_with_the_rounding_mode() {
    let xs = [9.7f32, -8.5, 2.5, 3.5, -2.5, f32::NAN, f32::NEG_INFINITY, f32::INFINITY, 0.5, 1.5, -0.5, 6.5, -7.5];
    let cases: [(Rounding, [i64; 13]); 4] = [
        (Rounding::Rne, [7, -8, 2, 4, -2, 0, -8, 7, 0, 2, 0, 6, -8]),
        (Rounding::Rtz, [7, -8, 2, 3, -2, 0, -8, 7, 0, 1, 0, 6, -7]),
        (Rounding::Floor, [7, -8, 2, 3, -3, 0, -8, 7, 0, 1, -1, 6, -8]),
        (Rounding::Ceil, [7, -8, 3, 4, -2, 0, -8, 7, 1, 2, 0, 7, -7]),
    ];
    for (r, want) in cases {
        let t = map_f32(&xs, DType::I4, |kb, x| kb.cast(x, DType::I4, r));
        assert_eq!(t.to_i64_vec(), want.to_vec(), "{r:?}");
    }
    // and to i8 / u8 / i32
    let t = map_f32(&[300.0, -300.0, 2.5, f32::NAN], DType::U8, |kb, x| kb.cast(x, DType::U8, Rounding::Rne));
    assert_eq!(t.to_i64_vec(), vec![255, 0, 2, 0]);
    let t = map_f32(&[3e9, -3e9, -2.5], DType::I32, |kb, x| kb.cast(x, DType::I32, Rounding::Rne));
    assert_eq!(t.to_i64_vec(), vec![i32::MAX as i64, i32::MIN as i64, -2]);
}

#[test]
fn f32_to_bf16_and_f16_round_to_nearest_even() {
    let one = 1.0f32;
    let xs = [
        one + 2f32.powi(-8),            // tie between 1 and 1 + 2^-7 → 1 (even)
        one + 3.0 * 2f32.powi(-8),      // tie between 1 + 2^-7 and 1 + 2^-6 → 1 + 2^-6 (even)
        one + 2f32.powi(-8) + 2f32.powi(-20), // above the tie → 1 + 2^-7
        -(one + 2f32.powi(-8)),
        3.0e38,                          // rounds up past bf16 max? bf16 max is ~3.39e38: stays finite
    ];
    let t = map_f32(&xs, DType::BF16, |kb, x| kb.cast(x, DType::BF16, Rounding::Rne));
    let got = t.to_f32_vec();
    assert_eq!(got[0], 1.0);
    assert_eq!(got[1], 1.0 + 2f32.powi(-6));
    assert_eq!(got[2], 1.0 + 2f32.powi(-7));
    assert_eq!(got[3], -1.0);
    assert_eq!(got[4], bf16::from_f32(3.0e38).to_f32());
    // the stored bits are the bf16 bits
    assert_eq!(t.get_raw(0), bf16::from_f32(1.0).to_bits() as u32);
    // directed: floor / ceil / rtz
    let x = [one + 2f32.powi(-9), -(one + 2f32.powi(-9))];
    let fl = map_f32(&x, DType::BF16, |kb, v| kb.cast(v, DType::BF16, Rounding::Floor)).to_f32_vec();
    let ce = map_f32(&x, DType::BF16, |kb, v| kb.cast(v, DType::BF16, Rounding::Ceil)).to_f32_vec();
    let tz = map_f32(&x, DType::BF16, |kb, v| kb.cast(v, DType::BF16, Rounding::Rtz)).to_f32_vec();
    assert_eq!(fl, vec![1.0, -(1.0 + 2f32.powi(-7))]);
    assert_eq!(ce, vec![1.0 + 2f32.powi(-7), -1.0]);
    assert_eq!(tz, vec![1.0, -1.0]);
    // f16: overflow to inf, tie to even
    let h = map_f32(&[65520.0, 1.0 + 2f32.powi(-11), 70000.0], DType::F16, |kb, v| kb.cast(v, DType::F16, Rounding::Rne));
    assert_eq!(h.to_f32_vec(), vec![f32::INFINITY, 1.0, f32::INFINITY]);
}

#[test]
fn e2m1_cast_ties_and_saturation() {
    let xs = [0.25f32, 0.75, 2.5, 3.5, 5.0, 7.9, -0.25, -2.5, -100.0, 1.25, 1.75, f32::NAN];
    let want = [0.0f32, 1.0, 2.0, 4.0, 4.0, 6.0, -0.0, -2.0, -6.0, 1.0, 2.0, 0.0];
    let t = map_f32(&xs, DType::F32, |kb, x| {
        let c = kb.cast(x, DType::E2M1, Rounding::Rne);
        kb.cast(c, DType::F32, Rounding::Rne)
    });
    assert_eq!(t.to_f32_vec(), want.to_vec());
    // directed rounding on the e2m1 grid
    let t = map_f32(&[2.1, -2.1, 5.5], DType::F32, |kb, x| {
        let c = kb.cast(x, DType::E2M1, Rounding::Floor);
        kb.cast(c, DType::F32, Rounding::Rne)
    });
    assert_eq!(t.to_f32_vec(), vec![2.0, -3.0, 4.0]);
}

#[test]
fn e8m0_casts_and_bitcasts() {
    // u8 → e8m0 keeps the byte, e8m0 → f32 is 2^(e-127), 0xFF is NaN
    let t = map_i(DType::U8, &[127, 130, 0, 255, 1], DType::F32, |kb, x| {
        let e = kb.cast(x, DType::E8M0, Rounding::Rne);
        kb.cast(e, DType::F32, Rounding::Rne)
    });
    let got = t.to_f32_vec();
    assert_eq!(got[0], 1.0);
    assert_eq!(got[1], 8.0);
    assert_eq!(got[2], 2f32.powi(-127));
    assert!(got[3].is_nan());
    assert_eq!(got[4], 2f32.powi(-126));
    // bitcast u8 → e8m0 → i8 → back through the int path
    let t = map_i(DType::U8, &[200, 127], DType::I8, |kb, x| {
        let e = kb.bitcast(x, DType::E8M0);
        kb.bitcast(e, DType::I8)
    });
    assert_eq!(t.to_i64_vec(), vec![-56, 127]);
    // f32 → e8m0 (floor of log2), stored as a byte
    let t = map_f32(&[7.9, 1.0, 0.0, -1.0], DType::E8M0, |kb, x| kb.cast(x, DType::E8M0, Rounding::Floor));
    assert_eq!(t.data, vec![129, 127, 0, 255]);
}

#[test]
fn bitcasts_reinterpret_bits() {
    let t = map_f32(&[1.0, -2.0, f32::INFINITY], DType::I32, |kb, x| kb.bitcast(x, DType::I32));
    assert_eq!(t.to_i64_vec(), vec![0x3F80_0000, 0xC000_0000u32 as i32 as i64, 0x7F80_0000]);
    let t = map_i(DType::I32, &[0x4049_0FDB, (0xFF80_0000u32) as i32], DType::F32, |kb, x| kb.bitcast(x, DType::F32));
    assert_eq!(t.to_f32_vec(), vec![f32::from_bits(0x4049_0FDB), f32::NEG_INFINITY]);
    // i4 ↔ e2m1: -1 is code 0xF = -6
    let t = map_i(DType::I4, &[-1, 2, -8], DType::F32, |kb, x| {
        let c = kb.bitcast(x, DType::E2M1);
        kb.cast(c, DType::F32, Rounding::Rne)
    });
    assert_eq!(t.to_f32_vec(), vec![-6.0, 1.0, -0.0]);
}

#[test]
fn int_and_bool_casts() {
    let t = map_i(DType::I32, &[300, -1, 0, 2], DType::U8, |kb, x| kb.cast(x, DType::U8, Rounding::Rne));
    assert_eq!(t.to_i64_vec(), vec![44, 255, 0, 2]);
    let t = map_i(DType::I32, &[300, -1, 0, 2], DType::Bool, |kb, x| kb.cast(x, DType::Bool, Rounding::Rne));
    assert_eq!(t.to_i64_vec(), vec![1, 1, 0, 1]);
    let t = map_f32(&[0.0, -0.0, 0.1, f32::NAN], DType::I32, |kb, x| {
        let b = kb.cast(x, DType::Bool, Rounding::Rne);
        kb.cast(b, DType::I32, Rounding::Rne)
    });
    assert_eq!(t.to_i64_vec(), vec![0, 0, 1, 1]);
    // i32 → f32 rounds to nearest even
    let t = map_i(DType::I32, &[16_777_217, 16_777_219, -16_777_217], DType::F32, |kb, x| kb.cast(x, DType::F32, Rounding::Rne));
    assert_eq!(t.to_f32_vec(), vec![16_777_216.0, 16_777_220.0, -16_777_216.0]);
}

// --- arithmetic ---------------------------------------------------------------------------------

fn bin_i(dt: DType, op: BinaryOp, a: &[i32], b: &[i32]) -> Vec<i64> {
    let n = a.len();
    let mut kb = KB::new("bin");
    let x = kb.tensor("x", dt, vec![c(n as i64)], false);
    let y = kb.tensor("y", dt, vec![c(n as i64)], false);
    let o = kb.tensor("o", dt, vec![c(n as i64)], true);
    kb.grid(|kb| vec![kb.i32c(1)]);
    let ar = kb.arange(n);
    let xv = kb.load(x, &[ar], None, None);
    let yv = kb.load(y, &[ar], None, None);
    let r = kb.bin(op, xv, yv);
    kb.store(o, &[ar], r, None);
    let k = kb.finish();
    let mut args = vec![
        Arg::Tensor(Tensor::from_i32(dt, &[n], a)),
        Arg::Tensor(Tensor::from_i32(dt, &[n], b)),
        tzeros(dt, &[n]),
    ];
    interp::run(&k, &mut args).unwrap();
    tens(&args[2]).to_i64_vec()
}

fn bin_f(dt: DType, op: BinaryOp, a: &[f32], b: &[f32]) -> Vec<f32> {
    let n = a.len();
    let mut kb = KB::new("binf");
    let x = kb.tensor("x", dt, vec![c(n as i64)], false);
    let y = kb.tensor("y", dt, vec![c(n as i64)], false);
    let o = kb.tensor("o", dt, vec![c(n as i64)], true);
    kb.grid(|kb| vec![kb.i32c(1)]);
    let ar = kb.arange(n);
    let xv = kb.load(x, &[ar], None, None);
    let yv = kb.load(y, &[ar], None, None);
    let r = kb.bin(op, xv, yv);
    kb.store(o, &[ar], r, None);
    let k = kb.finish();
    let mut args = vec![Arg::Tensor(Tensor::from_f32(dt, &[n], a)), Arg::Tensor(Tensor::from_f32(dt, &[n], b)), tzeros(dt, &[n])];
    interp::run(&k, &mut args).unwrap();
    tens(&args[2]).to_f32_vec()
}

#[test]
fn int_arithmetic_wraps_truncates_and_shifts() {
    use BinaryOp::*;
    assert_eq!(bin_i(DType::I8, Add, &[127, -128, 100], &[1, -1, 100]), vec![-128, 127, -56]);
    assert_eq!(bin_i(DType::I32, Mul, &[i32::MAX, 65536], &[2, 65536]), vec![-2, 0]);
    assert_eq!(bin_i(DType::I32, Div, &[-7, 7, 5, i32::MIN], &[2, -2, 0, -1]), vec![-3, -3, 0, i32::MIN as i64]);
    assert_eq!(bin_i(DType::I32, Rem, &[-7, 7, 5, i32::MIN], &[2, -2, 0, -1]), vec![-1, 1, 0, 0]);
    assert_eq!(bin_i(DType::I8, Shr, &[-128, -1, 64], &[3, 7, 2]), vec![-16, -1, 16]);
    assert_eq!(bin_i(DType::U8, Shr, &[128, 255, 64], &[3, 7, 2]), vec![16, 1, 16]);
    assert_eq!(bin_i(DType::U8, Shl, &[128, 3, 1], &[1, 2, 9]), vec![0, 12, 0]);
    assert_eq!(bin_i(DType::I32, Shl, &[1, 1, -1], &[31, 32, 4]), vec![i32::MIN as i64, 0, -16]);
    assert_eq!(bin_i(DType::I4, Add, &[7, -8], &[1, -1]), vec![-8, 7]);
    assert_eq!(bin_i(DType::I32, And, &[0b1100, -1], &[0b1010, 5]), vec![0b1000, 5]);
    assert_eq!(bin_i(DType::I32, Max, &[3, -3], &[-4, 4]), vec![3, 4]);
    assert_eq!(bin_i(DType::I32, Pow, &[3, 2, 5], &[4, 31, 0]), vec![81, i32::MIN as i64, 1]);
}

#[test]
fn float_max_min_ignore_nan() {
    use BinaryOp::*;
    let nan = f32::NAN;
    assert_eq!(bin_f(DType::F32, Max, &[nan, 1.0, 2.0], &[3.0, nan, -1.0]), vec![3.0, 1.0, 2.0]);
    assert_eq!(bin_f(DType::F32, Min, &[nan, 1.0, 2.0], &[3.0, nan, -1.0]), vec![3.0, 1.0, -1.0]);
    assert!(bin_f(DType::F32, Max, &[nan], &[nan])[0].is_nan());
    assert_eq!(bin_f(DType::F32, Rem, &[7.5, -7.5], &[2.0, 2.0]), vec![1.5, -1.5]);
}

#[test]
fn f16_and_bf16_round_after_every_op() {
    // ((1 + 2^-11) + 2^-11) in f16: each add ties to even back to 1
    let mut kb = KB::new("f16chain");
    let o = kb.tensor("o", DType::F16, vec![c(1)], true);
    kb.grid(|kb| vec![kb.i32c(1)]);
    let one = kb.full(DType::F16, &[], Scalar::Float(1.0));
    let e = kb.full(DType::F16, &[], Scalar::Float(2f64.powi(-11)));
    let a = kb.add(one, e);
    let b = kb.add(a, e);
    let z = kb.i32c(0);
    kb.store(o, &[z], b, None);
    let k = kb.finish();
    let mut args = vec![tzeros(DType::F16, &[1])];
    interp::run(&k, &mut args).unwrap();
    assert_eq!(tens(&args[0]).to_f32_vec(), vec![1.0]);
    // bf16 multiply rounds: (1 + 2^-7)^2 = 1 + 2^-6 + 2^-14 → 1 + 2^-6
    let x = 1.0 + 2f32.powi(-7);
    assert_eq!(bin_f(DType::BF16, BinaryOp::Mul, &[x], &[x]), vec![1.0 + 2f32.powi(-6)]);
    // f16 exp is computed in f32 and rounded once
    let t = {
        let k = map_kernel(DType::F16, DType::F16, 2, |kb, x| kb.un(UnaryOp::Exp, x));
        run_map(&k, Tensor::from_f32(DType::F16, &[2], &[1.0, -3.0]), DType::F16)
    };
    assert_eq!(t.to_f32_vec(), vec![f16::from_f32(1f32.exp()).to_f32(), f16::from_f32((-3f32).exp()).to_f32()]);
}

#[test]
fn unary_float_functions_use_f32_math() {
    let xs = [0.5f32, -1.25, 3.0, 2.5, -2.5, 0.0];
    type Case = (UnaryOp, fn(f32) -> f32);
    let cases: Vec<Case> = vec![
        (UnaryOp::Exp, f32::exp),
        (UnaryOp::Exp2, f32::exp2),
        (UnaryOp::Sigmoid, |x| 1.0 / (1.0 + (-x).exp())),
        (UnaryOp::Silu, |x| x * (1.0 / (1.0 + (-x).exp()))),
        (UnaryOp::Rsqrt, |x| 1.0 / x.sqrt()),
        (UnaryOp::Tanh, f32::tanh),
        (UnaryOp::Round, f32::round_ties_even),
        (UnaryOp::Floor, f32::floor),
        (UnaryOp::Recip, |x| 1.0 / x),
    ];
    for (u, f) in cases {
        let got = map_f32(&xs, DType::F32, |kb, x| kb.un(u, x)).to_f32_vec();
        let want: Vec<f32> = xs.iter().map(|&x| f(x)).collect();
        for (g, w) in got.iter().zip(&want) {
            assert!(g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()), "{u:?}: {got:?} vs {want:?}");
        }
    }
    let t = map_f32(&[f32::NAN, 1.0, f32::INFINITY], DType::Bool, |kb, x| kb.un(UnaryOp::IsNan, x));
    assert_eq!(t.to_i64_vec(), vec![1, 0, 0]);
}

// --- reductions and scans ----------------------------------------------------------------------

/// Reduce a [R, C] f32 tensor along `axis` into an i32 / f32 vector.
fn reduce2d(op: ReduceOp, axis: u8, r: usize, cdim: usize, vals: &[f32]) -> Tensor {
    let mut kb = KB::new("red");
    let x = kb.tensor("x", DType::F32, vec![c(r as i64), c(cdim as i64)], false);
    let out_len = if axis == 0 { cdim } else { r };
    let out_dt = if matches!(op, ReduceOp::Argmax | ReduceOp::Argmin) { DType::I32 } else { DType::F32 };
    let o = kb.tensor("o", out_dt, vec![c(out_len as i64)], true);
    kb.grid(|kb| vec![kb.i32c(1)]);
    let ar = kb.arange(r);
    let ac = kb.arange(cdim);
    let xv = kb.load(x, &[ar, ac], None, None);
    let red = kb.reduce(op, xv, axis);
    let ao = kb.arange(out_len);
    kb.store(o, &[ao], red, None);
    let k = kb.finish();
    let mut args = vec![tf32(&[r, cdim], vals), tzeros(out_dt, &[out_len])];
    interp::run(&k, &mut args).unwrap();
    tens(&args[1]).clone()
}

#[test]
fn argmax_argmin_take_the_first_extreme_and_skip_nan() {
    let nan = f32::NAN;
    let rows = [
        [3.0, 1.0, 3.0, 2.0],
        [nan, 2.0, 5.0, 5.0],
        [nan, nan, nan, nan],
        [-1.0, -1.0, nan, -3.0],
    ];
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    assert_eq!(reduce2d(ReduceOp::Argmax, 1, 4, 4, &flat).to_i64_vec(), vec![0, 2, 0, 0]);
    assert_eq!(reduce2d(ReduceOp::Argmin, 1, 4, 4, &flat).to_i64_vec(), vec![1, 1, 0, 3]);
    // along axis 0
    assert_eq!(reduce2d(ReduceOp::Argmax, 0, 4, 4, &flat).to_i64_vec(), vec![0, 1, 1, 1]);
    let mx = reduce2d(ReduceOp::Max, 1, 4, 4, &flat).to_f32_vec();
    assert_eq!(&mx[..2], &[3.0, 5.0]);
    assert!(mx[2].is_nan());
    assert_eq!(mx[3], -1.0);
    let mn = reduce2d(ReduceOp::Min, 0, 4, 4, &flat).to_f32_vec();
    assert_eq!(mn, vec![-1.0, -1.0, 3.0, -3.0]);
}

#[test]
fn sum_is_sequential_in_f32() {
    // 1e8 + 1 + ... + 1 (sequential) stays 1e8 in f32; the exact sum would differ
    let mut v = vec![1.0f32; 16];
    v[0] = 1e8;
    let t = reduce2d(ReduceOp::Sum, 1, 1, 16, &v).to_f32_vec();
    let mut want = 0f32;
    for x in &v {
        want += x;
    }
    assert_eq!(t, vec![want]);
    let t = reduce2d(ReduceOp::Sum, 0, 4, 3, &(0..12).map(|i| i as f32).collect::<Vec<_>>()).to_f32_vec();
    assert_eq!(t, vec![18.0, 22.0, 26.0]);
}

#[test]
fn cumsum_is_inclusive_along_the_axis() {
    for axis in [0u8, 1] {
        let (r, cc) = (3usize, 4usize);
        let mut kb = KB::new("scan");
        let x = kb.tensor("x", DType::I32, vec![c(r as i64), c(cc as i64)], false);
        let o = kb.tensor("o", DType::I32, vec![c(r as i64), c(cc as i64)], true);
        kb.grid(|kb| vec![kb.i32c(1)]);
        let ar = kb.arange(r);
        let ac = kb.arange(cc);
        let xv = kb.load(x, &[ar, ac], None, None);
        let cs = kb.cumsum(xv, axis);
        kb.store(o, &[ar, ac], cs, None);
        let k = kb.finish();
        let vals: Vec<i32> = (1..=12).collect();
        let mut args = vec![Arg::Tensor(Tensor::from_i32(DType::I32, &[r, cc], &vals)), tzeros(DType::I32, &[r, cc])];
        interp::run(&k, &mut args).unwrap();
        let got = tens(&args[1]).to_i64_vec();
        let mut want = vec![0i64; r * cc];
        for i in 0..r {
            for j in 0..cc {
                want[i * cc + j] = if axis == 1 {
                    (0..=j).map(|jj| vals[i * cc + jj] as i64).sum()
                } else {
                    (0..=i).map(|ii| vals[ii * cc + j] as i64).sum()
                };
            }
        }
        assert_eq!(got, want, "axis {axis}");
    }
    // f32 along a 1-D tile
    let t = map_f32(&[0.5, 1.5, -1.0, 4.0], DType::F32, |kb, x| kb.cumsum(x, 0));
    assert_eq!(t.to_f32_vec(), vec![0.5, 2.0, 1.0, 5.0]);
}

#[test]
fn permute_broadcast_and_reshape() {
    // o[j, i] = x[i, j] + row_bias[j], via permute and broadcast, then a reshape round trip
    let (r, cc) = (2usize, 3usize);
    let mut kb = KB::new("shapes");
    let x = kb.tensor("x", DType::F32, vec![c(r as i64), c(cc as i64)], false);
    let o = kb.tensor("o", DType::F32, vec![c(cc as i64), c(r as i64)], true);
    kb.grid(|kb| vec![kb.i32c(1)]);
    let ar = kb.arange(r);
    let ac = kb.arange(cc);
    let xv = kb.load(x, &[ar, ac], None, None);
    let xt = kb.permute(xv, &[1, 0]); // [cc, r]
    let acf = kb.cast(ac, DType::F32, Rounding::Rne);
    let bias = kb.expand(acf, 1); // [cc, 1]
    let y = kb.add(xt, bias);
    let flat = kb.reshape(y, &[cc * r]);
    let back = kb.reshape(flat, &[cc, r]);
    kb.store(o, &[ac, ar], back, None);
    let k = kb.finish();
    let mut args = vec![tf32(&[r, cc], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), tzeros(DType::F32, &[cc, r])];
    interp::run(&k, &mut args).unwrap();
    assert_eq!(tens(&args[1]).to_f32_vec(), vec![1.0, 4.0, 3.0, 6.0, 5.0, 8.0]);
}

#[test]
fn dot_is_k_ascending_without_fma() {
    // a·b where fma would differ from rounding the product first
    let a = [1.0f32 + 2f32.powi(-12), 1.0];
    let b = [1.0f32 + 2f32.powi(-12), -(1.0 + 2f32.powi(-11))];
    let mut kb = KB::new("dot");
    let x = kb.tensor("x", DType::F32, vec![c(1), c(2)], false);
    let y = kb.tensor("y", DType::F32, vec![c(2), c(1)], false);
    let o = kb.tensor("o", DType::F32, vec![c(1), c(1)], true);
    kb.grid(|kb| vec![kb.i32c(1)]);
    let a1 = kb.arange(1);
    let a2 = kb.arange(2);
    let xv = kb.load(x, &[a1, a2], None, None);
    let yv = kb.load(y, &[a2, a1], None, None);
    let d = kb.dot(xv, yv, None);
    kb.store(o, &[a1, a1], d, None);
    let k = kb.finish();
    let mut args = vec![tf32(&[1, 2], &a), tf32(&[2, 1], &b), tzeros(DType::F32, &[1, 1])];
    interp::run(&k, &mut args).unwrap();
    let want = (0f32 + a[0] * b[0]) + a[1] * b[1];
    assert_eq!(want, 0.0); // the product 1 + 2^-11 + 2^-24 ties to 1 + 2^-11 in f32; an fma would give 2^-24
    assert_eq!(tens(&args[2]).to_f32_vec(), vec![want]);
}
