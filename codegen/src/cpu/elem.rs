//! Element semantics in Cranelift IR: one scalar element in, one out, exactly as the
//! interpreter computes it (`opc_ir::interp`, `opc_ir::numerics`).
//!
//! - Floats: f32 arithmetic, then rounding to the dtype after every op. bf16 rounding is inline
//!   integer code (the `half` crate's RNE with its NaN rule); f16 rounding and the transcendental
//!   functions are helper calls into the same Rust functions the interpreter uses. `max`/`min`
//!   are the interpreter's `fmax`/`fmin` (a NaN operand gives the other one, ties keep the first).
//! - Ints: i32 arithmetic wrapped to the dtype's width after every op; `/` and `%` by zero give 0
//!   and `MIN / -1` wraps (the divisor is guarded, so the JIT never traps); shifts by an amount
//!   outside `[0, bits)` give 0 (`shl`) or the sign fill (`shr`).
//! - Casts: the common exact cases inline (int → int wrapping, i32 → f32 RNE, f16/bf16 → f32),
//!   every other combination through the `opc_cast` helper (`cast_repr` mirrors the interpreter).
//!   f32 → f16/bf16 casts are special: the interpreter converts through `f64` with `half`'s
//!   `from_f64`, which ignores the low 32 bits of the f64 when breaking ties (and flushes tiny
//!   subnormals), so it is not always the RNE that arithmetic rounding (`from_f32`) gives. bf16
//!   RNE casts reproduce that inline (subnormals through the helper); f16 casts and directed
//!   roundings call the helper.
//! - Global memory: per-dtype element loads and stores; packed 4-bit elements at byte `e / 2`
//!   (low nibble for even `e`), stored through an atomic byte read-modify-write helper.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, Endianness, InstBuilder, MemFlagsData, Type, Value};
use opc_ir::{BinaryOp, CmpPred, DType, Op, Rounding, UnaryOp};

use super::helpers::{dtype_code, rounding_code, Helper};
use super::lower::{cty, Lower, TensorVals};
use crate::Result;

/// Flags of global tensor accesses: bounds are checked before every access, but tensor bytes
/// are a `Vec<u8>`, so nothing is known about alignment.
fn global() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Flags of a lane-preserving vector bitcast.
fn lanes() -> MemFlagsData {
    MemFlagsData::new().with_endianness(Endianness::Little)
}

impl Lower<'_, '_> {
    fn iconst(&mut self, x: i64) -> Value {
        self.b.ins().iconst(types::I32, x)
    }

    fn bool_to_i32(&mut self, c: Value) -> Value {
        self.b.ins().uextend(types::I32, c)
    }

    /// The bf16 bits (low 16 bits of an i32) of an f32, as `half::bf16::from_f32`.
    fn bf16_bits(&mut self, x: Value) -> Value {
        self.bf16_bits_sticky(x, 3 * 0x8000 - 1)
    }

    /// RNE to bf16 bits where only the mantissa bits in `sticky` break ties (`from_f32` uses
    /// all bits below the rounding bit plus the lsb, `0x17FFF`).
    fn bf16_bits_sticky(&mut self, x: Value, sticky: i64) -> Value {
        let b = &mut self.b;
        let xi = b.ins().bitcast(types::I32, MemFlagsData::new(), x);
        let abs = b.ins().band_imm_u(xi, 0x7FFF_FFFF);
        let is_nan = b.ins().icmp_imm_s(IntCC::UnsignedGreaterThan, abs, 0x7F80_0000);
        let hi = b.ins().ushr_imm_u(xi, 16);
        let nan = b.ins().bor_imm_u(hi, 0x40);
        let rb = b.ins().band_imm_u(xi, 0x8000);
        let rb = b.ins().icmp_imm_s(IntCC::NotEqual, rb, 0);
        let rest = b.ins().band_imm_u(xi, sticky);
        let rest = b.ins().icmp_imm_s(IntCC::NotEqual, rest, 0);
        let up = b.ins().band(rb, rest);
        let up = b.ins().uextend(types::I32, up);
        let r = b.ins().iadd(hi, up);
        let r = b.ins().band_imm_u(r, 0xFFFF);
        b.ins().select(is_nan, nan, r)
    }

    /// f32 value of bf16 bits (`half::bf16::to_f32`: a NaN gets its quiet bit set).
    fn bf16_value(&mut self, bits: Value) -> Value {
        let b = &mut self.b;
        let abs = b.ins().band_imm_u(bits, 0x7FFF);
        let is_nan = b.ins().icmp_imm_s(IntCC::UnsignedGreaterThan, abs, 0x7F80);
        let q = b.ins().bor_imm_u(bits, 0x40);
        let v = b.ins().select(is_nan, q, bits);
        let v = b.ins().ishl_imm_u(v, 16);
        b.ins().bitcast(types::F32, MemFlagsData::new(), v)
    }

    /// Round an f32 to a float dtype (RNE), kept as f32.
    pub(super) fn round_to(&mut self, d: DType, x: Value) -> Value {
        match d {
            DType::F16 => self.call(Helper::RoundF16, &[x]).expect("f32 result"),
            DType::BF16 => {
                let bits = self.bf16_bits(x);
                self.bf16_value(bits)
            }
            _ => x,
        }
    }

    /// Wrap an i32 to an int dtype's two's-complement range (bool: `!= 0`), as `wrap_int`.
    pub(super) fn wrap(&mut self, d: DType, x: Value) -> Value {
        match d {
            DType::Bool => {
                let c = self.b.ins().icmp_imm_s(IntCC::NotEqual, x, 0);
                self.bool_to_i32(c)
            }
            DType::I4 => {
                let t = self.b.ins().ishl_imm_u(x, 28);
                self.b.ins().sshr_imm_u(t, 28)
            }
            DType::I8 => {
                let t = self.b.ins().ishl_imm_u(x, 24);
                self.b.ins().sshr_imm_u(t, 24)
            }
            DType::U8 | DType::E8M0 => self.b.ins().band_imm_u(x, 0xFF),
            DType::E2M1 => self.b.ins().band_imm_u(x, 0xF),
            _ => x,
        }
    }

    /// `a.is_nan() || b > a ? b : a`
    pub(super) fn fmax(&mut self, a: Value, bv: Value) -> Value {
        let nan = self.b.ins().fcmp(FloatCC::Unordered, a, a);
        let gt = self.b.ins().fcmp(FloatCC::GreaterThan, bv, a);
        let c = self.b.ins().bor(nan, gt);
        self.b.ins().select(c, bv, a)
    }

    /// `a.is_nan() || b < a ? b : a`
    pub(super) fn fmin(&mut self, a: Value, bv: Value) -> Value {
        let nan = self.b.ins().fcmp(FloatCC::Unordered, a, a);
        let lt = self.b.ins().fcmp(FloatCC::LessThan, bv, a);
        let c = self.b.ins().bor(nan, lt);
        self.b.ins().select(c, bv, a)
    }

    fn call1(&mut self, h: Helper, x: Value) -> Value {
        self.call(h, &[x]).expect("helper result")
    }

    pub(super) fn unary(&mut self, op: &Op, u: UnaryOp, d: DType, x: Value) -> Result<Value> {
        if cty(d) == types::F32 {
            let one = || 1.0f32;
            let y = match u {
                UnaryOp::Neg => self.b.ins().fneg(x),
                UnaryOp::Abs => self.b.ins().fabs(x),
                UnaryOp::Exp => self.call1(Helper::Exp, x),
                UnaryOp::Exp2 => self.call1(Helper::Exp2, x),
                UnaryOp::Log => self.call1(Helper::Ln, x),
                UnaryOp::Log2 => self.call1(Helper::Log2, x),
                UnaryOp::Sqrt => self.b.ins().sqrt(x),
                UnaryOp::Rsqrt => {
                    let s = self.b.ins().sqrt(x);
                    let o = self.b.ins().f32const(one());
                    self.b.ins().fdiv(o, s)
                }
                UnaryOp::Recip => {
                    let o = self.b.ins().f32const(one());
                    self.b.ins().fdiv(o, x)
                }
                UnaryOp::Sigmoid | UnaryOp::Silu => {
                    let n = self.b.ins().fneg(x);
                    let e = self.call1(Helper::Exp, n);
                    let o = self.b.ins().f32const(one());
                    let den = self.b.ins().fadd(o, e);
                    let s = self.b.ins().fdiv(o, den);
                    if u == UnaryOp::Silu {
                        self.b.ins().fmul(x, s)
                    } else {
                        s
                    }
                }
                UnaryOp::Tanh => self.call1(Helper::Tanh, x),
                UnaryOp::Sin => self.call1(Helper::Sin, x),
                UnaryOp::Cos => self.call1(Helper::Cos, x),
                UnaryOp::Floor => self.call1(Helper::Floor, x),
                UnaryOp::Ceil => self.call1(Helper::Ceil, x),
                UnaryOp::Round => self.call1(Helper::Round, x),
                UnaryOp::IsNan => {
                    let c = self.b.ins().fcmp(FloatCC::Unordered, x, x);
                    return Ok(self.bool_to_i32(c));
                }
                UnaryOp::IsInf => {
                    let a = self.b.ins().fabs(x);
                    let inf = self.b.ins().f32const(f32::INFINITY);
                    let c = self.b.ins().fcmp(FloatCC::Equal, a, inf);
                    return Ok(self.bool_to_i32(c));
                }
                UnaryOp::Not => return Err(self.unsupported(op, &format!("`not` is not defined on {d}"))),
            };
            return Ok(self.round_to(d, y));
        }
        if d.is_code() {
            return Err(self.unsupported(op, &format!("`{}` is not defined on {d}", u.mnemonic())));
        }
        Ok(match u {
            UnaryOp::Neg => {
                let y = self.b.ins().ineg(x);
                self.wrap(d, y)
            }
            UnaryOp::Abs => {
                let y = self.b.ins().iabs(x);
                self.wrap(d, y)
            }
            UnaryOp::Not if d == DType::Bool => {
                let c = self.b.ins().icmp_imm_s(IntCC::Equal, x, 0);
                self.bool_to_i32(c)
            }
            UnaryOp::Not => {
                let y = self.b.ins().bnot(x);
                self.wrap(d, y)
            }
            _ => return Err(self.unsupported(op, &format!("`{}` is not defined on {d}", u.mnemonic()))),
        })
    }

    pub(super) fn binary(&mut self, op: &Op, bop: BinaryOp, d: DType, x: Value, y: Value) -> Result<Value> {
        if cty(d) == types::F32 {
            let r = match bop {
                BinaryOp::Add => self.b.ins().fadd(x, y),
                BinaryOp::Sub => self.b.ins().fsub(x, y),
                BinaryOp::Mul => self.b.ins().fmul(x, y),
                BinaryOp::Div => self.b.ins().fdiv(x, y),
                BinaryOp::Rem => self.call(Helper::Fmod, &[x, y]).expect("f32"),
                BinaryOp::Max => self.fmax(x, y),
                BinaryOp::Min => self.fmin(x, y),
                BinaryOp::Pow => self.call(Helper::Powf, &[x, y]).expect("f32"),
                _ => return Err(self.unsupported(op, &format!("`{}` is not defined on {d}", bop.mnemonic()))),
            };
            return Ok(self.round_to(d, r));
        }
        if d.is_code() {
            return Err(self.unsupported(op, &format!("`{}` is not defined on {d}", bop.mnemonic())));
        }
        let bits = if d == DType::Bool { 1 } else { d.bits() as i64 };
        Ok(match bop {
            BinaryOp::Add => {
                let r = self.b.ins().iadd(x, y);
                self.wrap(d, r)
            }
            BinaryOp::Sub => {
                let r = self.b.ins().isub(x, y);
                self.wrap(d, r)
            }
            BinaryOp::Mul => {
                let r = self.b.ins().imul(x, y);
                self.wrap(d, r)
            }
            BinaryOp::Div | BinaryOp::Rem => {
                // Guard the divisor: 0 gives 0, -1 is negation (MIN / -1 wraps), never a trap.
                let zero = self.b.ins().icmp_imm_s(IntCC::Equal, y, 0);
                let m1 = self.b.ins().icmp_imm_s(IntCC::Equal, y, -1);
                let special = self.b.ins().bor(zero, m1);
                let one = self.iconst(1);
                let safe = self.b.ins().select(special, one, y);
                let z = self.iconst(0);
                let r = if bop == BinaryOp::Div {
                    let q = self.b.ins().sdiv(x, safe);
                    let neg = self.b.ins().ineg(x);
                    let q = self.b.ins().select(m1, neg, q);
                    self.b.ins().select(zero, z, q)
                } else {
                    let q = self.b.ins().srem(x, safe);
                    self.b.ins().select(special, z, q)
                };
                self.wrap(d, r)
            }
            BinaryOp::Max => self.b.ins().smax(x, y),
            BinaryOp::Min => self.b.ins().smin(x, y),
            BinaryOp::And => {
                let r = self.b.ins().band(x, y);
                self.wrap(d, r)
            }
            BinaryOp::Or => {
                let r = self.b.ins().bor(x, y);
                self.wrap(d, r)
            }
            BinaryOp::Xor => {
                let r = self.b.ins().bxor(x, y);
                self.wrap(d, r)
            }
            BinaryOp::Shl | BinaryOp::Shr => {
                let inr = self.b.ins().icmp_imm_s(IntCC::UnsignedLessThan, y, bits);
                if bop == BinaryOp::Shl {
                    let s = self.b.ins().ishl(x, y);
                    let s = self.wrap(d, s);
                    let z = self.iconst(0);
                    self.b.ins().select(inr, s, z)
                } else {
                    let s = self.b.ins().sshr(x, y);
                    let fill = self.b.ins().sshr_imm_u(x, 31);
                    self.b.ins().select(inr, s, fill)
                }
            }
            BinaryOp::Pow => {
                let dc = self.iconst(dtype_code(d));
                self.call(Helper::Ipow, &[x, y, dc]).expect("i32")
            }
        })
    }

    /// `fcmp` / signed `icmp` of `x` and `y` by predicate `p` (scalars or lanes alike): the
    /// result is a Cranelift bool (scalar) or lane mask (vector).
    fn compare(&mut self, p: CmpPred, d: DType, x: Value, y: Value) -> Value {
        if cty(d) == types::F32 {
            let cc = match p {
                CmpPred::Eq => FloatCC::Equal,
                CmpPred::Ne => FloatCC::NotEqual,
                CmpPred::Lt => FloatCC::LessThan,
                CmpPred::Le => FloatCC::LessThanOrEqual,
                CmpPred::Gt => FloatCC::GreaterThan,
                CmpPred::Ge => FloatCC::GreaterThanOrEqual,
            };
            self.b.ins().fcmp(cc, x, y)
        } else {
            let cc = match p {
                CmpPred::Eq => IntCC::Equal,
                CmpPred::Ne => IntCC::NotEqual,
                CmpPred::Lt => IntCC::SignedLessThan,
                CmpPred::Le => IntCC::SignedLessThanOrEqual,
                CmpPred::Gt => IntCC::SignedGreaterThan,
                CmpPred::Ge => IntCC::SignedGreaterThanOrEqual,
            };
            self.b.ins().icmp(cc, x, y)
        }
    }

    pub(super) fn cmp(&mut self, p: CmpPred, d: DType, x: Value, y: Value) -> Value {
        let c = self.compare(p, d, x, y);
        self.bool_to_i32(c)
    }

    pub(super) fn cast(&mut self, from: DType, to: DType, r: Rounding, x: Value) -> Value {
        let ff = cty(from) == types::F32;
        if from == to || (ff && to == DType::F32) {
            return x;
        }
        let plain_int = |d: DType| d.is_int() || d == DType::Bool;
        if plain_int(from) && plain_int(to) {
            return self.wrap(to, x);
        }
        if plain_int(from) && to == DType::F32 && r == Rounding::Rne {
            return self.b.ins().fcvt_from_sint(types::F32, x);
        }
        // MXFP4 decoding: every e2m1 value is exact in f32 / bf16 / f16 and every e8m0 value in
        // f32 / bf16, so the rounding mode is irrelevant and the value is built from its bits.
        if from == DType::E2M1 && cty(to) == types::F32 {
            return self.e2m1_value(x);
        }
        if from == DType::E8M0 && matches!(to, DType::F32 | DType::BF16) {
            return self.e8m0_value(x);
        }
        if ff && matches!(to, DType::BF16 | DType::F16) && r == Rounding::Rne {
            // One RNE rounding, the same as bf16 / f16 arithmetic (`numerics::round_float`).
            return self.round_to(to, x);
        }
        self.cast_call(from, to, r, x)
    }

    /// The f32 value of an e2m1 code (`numerics::e2m1_decode`): magnitude code m = e·2 + mant,
    /// 0 → 0, 1 → 0.5, m ≥ 2 → 2^(e−1)·(1 + mant/2); bit 3 is the sign.
    fn e2m1_value(&mut self, x: Value) -> Value {
        let m = self.b.ins().band_imm_u(x, 7);
        let e = self.b.ins().ushr_imm_u(m, 1);
        let mant = self.b.ins().band_imm_u(m, 1);
        let exp = self.b.ins().iadd_imm_s(e, 126);
        let exp = self.b.ins().ishl_imm_u(exp, 23);
        let mant = self.b.ins().ishl_imm_u(mant, 22);
        let normal = self.b.ins().bor(exp, mant);
        let half = self.iconst(126 << 23);
        let zero = self.iconst(0);
        let is_one = self.b.ins().icmp_imm_s(IntCC::Equal, m, 1);
        let small = self.b.ins().select(is_one, half, zero);
        let is_normal = self.b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, m, 2);
        let mag = self.b.ins().select(is_normal, normal, small);
        let sign = self.b.ins().band_imm_u(x, 8);
        let sign = self.b.ins().ishl_imm_u(sign, 28);
        let bits = self.b.ins().bor(mag, sign);
        self.b.ins().bitcast(types::F32, MemFlagsData::new(), bits)
    }

    /// The f32 value of an e8m0 code (`numerics::e8m0_decode`): 2^(e−127); 0 is the subnormal
    /// 2^−127; 0xFF is NaN.
    fn e8m0_value(&mut self, x: Value) -> Value {
        let e = self.b.ins().band_imm_u(x, 0xFF);
        let normal = self.b.ins().ishl_imm_u(e, 23);
        let sub = self.iconst(0x0040_0000);
        let nan = self.iconst(0x7FC0_0000);
        let is_zero = self.b.ins().icmp_imm_s(IntCC::Equal, e, 0);
        let v = self.b.ins().select(is_zero, sub, normal);
        let is_nan = self.b.ins().icmp_imm_s(IntCC::Equal, e, 0xFF);
        let bits = self.b.ins().select(is_nan, nan, v);
        self.b.ins().bitcast(types::F32, MemFlagsData::new(), bits)
    }

    fn cast_call(&mut self, from: DType, to: DType, r: Rounding, x: Value) -> Value {
        let (ff, tf) = (cty(from) == types::F32, cty(to) == types::F32);
        let xi = if ff { self.b.ins().bitcast(types::I32, MemFlagsData::new(), x) } else { x };
        let (fc, tc, rc) = (self.iconst(dtype_code(from)), self.iconst(dtype_code(to)), self.iconst(rounding_code(r)));
        let y = self.call(Helper::Cast, &[xi, fc, tc, rc]).expect("i32");
        if tf {
            self.b.ins().bitcast(types::F32, MemFlagsData::new(), y)
        } else {
            y
        }
    }

    pub(super) fn bitcast(&mut self, from: DType, to: DType, x: Value) -> Value {
        match (from, to) {
            _ if from == to => x,
            (DType::F32, DType::I32) => self.b.ins().bitcast(types::I32, MemFlagsData::new(), x),
            (DType::I32, DType::F32) => self.b.ins().bitcast(types::F32, MemFlagsData::new(), x),
            _ => {
                let xi = if cty(from) == types::F32 { self.b.ins().bitcast(types::I32, MemFlagsData::new(), x) } else { x };
                let (fc, tc) = (self.iconst(dtype_code(from)), self.iconst(dtype_code(to)));
                let y = self.call(Helper::Bitcast, &[xi, fc, tc]).expect("i32");
                if cty(to) == types::F32 {
                    self.b.ins().bitcast(types::F32, MemFlagsData::new(), y)
                } else {
                    y
                }
            }
        }
    }

    /// Byte address of element `e` (i64) of a tensor with `bytes`-wide elements.
    fn tensor_addr(&mut self, tv: &TensorVals, e: Value, bytes: i64) -> Value {
        let o = if bytes == 1 { e } else { self.b.ins().imul_imm_s(e, bytes) };
        self.b.ins().iadd(tv.base, o)
    }

    /// Element `e` of a tensor, in the tile representation.
    pub(super) fn read_elem(&mut self, tv: &TensorVals, e: Value) -> Value {
        let f = global();
        match tv.dtype {
            DType::F32 => {
                let a = self.tensor_addr(tv, e, 4);
                self.b.ins().load(types::F32, f, a, 0)
            }
            DType::I32 => {
                let a = self.tensor_addr(tv, e, 4);
                self.b.ins().load(types::I32, f, a, 0)
            }
            DType::F16 | DType::BF16 => {
                let a = self.tensor_addr(tv, e, 2);
                let bits = self.b.ins().uload16(types::I32, f, a, 0);
                if tv.dtype == DType::F16 {
                    self.call1(Helper::F16Value, bits)
                } else {
                    self.bf16_value(bits)
                }
            }
            DType::I8 => {
                let a = self.tensor_addr(tv, e, 1);
                self.b.ins().sload8(types::I32, f, a, 0)
            }
            DType::U8 | DType::E8M0 => {
                let a = self.tensor_addr(tv, e, 1);
                self.b.ins().uload8(types::I32, f, a, 0)
            }
            DType::Bool => {
                let a = self.tensor_addr(tv, e, 1);
                let v = self.b.ins().uload8(types::I32, f, a, 0);
                self.b.ins().band_imm_u(v, 1)
            }
            DType::I4 | DType::E2M1 => {
                let byte = self.b.ins().ushr_imm_u(e, 1);
                let a = self.tensor_addr(tv, byte, 1);
                let v = self.b.ins().uload8(types::I32, f, a, 0);
                let odd = self.b.ins().band_imm_u(e, 1);
                let odd = self.b.ins().ireduce(types::I32, odd);
                let sh = self.b.ins().ishl_imm_u(odd, 2);
                let v = self.b.ins().ushr(v, sh);
                let v = self.b.ins().band_imm_u(v, 0xF);
                if tv.dtype == DType::I4 {
                    self.wrap(DType::I4, v)
                } else {
                    v
                }
            }
        }
    }

    /// Store a tile element into element `e` of a tensor (as `encode_int` / `f_bits`).
    pub(super) fn write_elem(&mut self, tv: &TensorVals, e: Value, v: Value) {
        let f = global();
        match tv.dtype {
            DType::F32 | DType::I32 => {
                let a = self.tensor_addr(tv, e, 4);
                self.b.ins().store(f, v, a, 0);
            }
            DType::F16 | DType::BF16 => {
                let bits = if tv.dtype == DType::F16 { self.call(Helper::F16Bits, &[v]).expect("i32") } else { self.bf16_bits(v) };
                let a = self.tensor_addr(tv, e, 2);
                self.b.ins().istore16(f, bits, a, 0);
            }
            DType::I8 | DType::U8 | DType::E8M0 => {
                let a = self.tensor_addr(tv, e, 1);
                self.b.ins().istore8(f, v, a, 0);
            }
            DType::Bool => {
                let c = self.b.ins().icmp_imm_s(IntCC::NotEqual, v, 0);
                let c = self.bool_to_i32(c);
                let a = self.tensor_addr(tv, e, 1);
                self.b.ins().istore8(f, c, a, 0);
            }
            DType::I4 | DType::E2M1 => {
                self.call(Helper::StoreNibble, &[tv.base, e, v]);
            }
        }
    }

    /// `atomic_add` of one element (f32 or i32 tensors: the verifier allows no others).
    pub(super) fn atomic_add_elem(&mut self, tv: &TensorVals, e: Value, v: Value) {
        let bits = if cty(tv.dtype) == types::F32 { self.b.ins().bitcast(types::I32, MemFlagsData::new(), v) } else { v };
        let dc = self.iconst(dtype_code(tv.dtype));
        self.call(Helper::AtomicAdd, &[tv.base, e, dc, bits]);
    }

    // --- 4-lane versions (f32x4 / i32x4), exactly the scalar semantics lane by lane ------------

    /// Whether [`Self::unary_x4`] handles `u` on `d`.
    pub(super) fn has_unary_x4(u: UnaryOp, d: DType) -> bool {
        d == DType::F32 && matches!(u, UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Sqrt)
    }

    pub(super) fn unary_x4(&mut self, u: UnaryOp, d: DType, x: Value) -> Option<Value> {
        if !Self::has_unary_x4(u, d) {
            return None;
        }
        Some(match u {
            UnaryOp::Neg => self.b.ins().fneg(x),
            UnaryOp::Abs => self.b.ins().fabs(x),
            _ => self.b.ins().sqrt(x),
        })
    }

    /// Whether [`Self::binary_x4`] handles `bop` on `d` (f32 needs no rounding; ints need no
    /// wrapping or guard: i32 and bool only).
    pub(super) fn has_binary_x4(bop: BinaryOp, d: DType) -> bool {
        match d {
            DType::F32 => matches!(bop, BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Max | BinaryOp::Min),
            DType::I32 => matches!(
                bop,
                BinaryOp::Add
                    | BinaryOp::Sub
                    | BinaryOp::Mul
                    | BinaryOp::And
                    | BinaryOp::Or
                    | BinaryOp::Xor
                    | BinaryOp::Max
                    | BinaryOp::Min
            ),
            DType::Bool => matches!(bop, BinaryOp::And | BinaryOp::Or | BinaryOp::Xor),
            _ => false,
        }
    }

    pub(super) fn binary_x4(&mut self, bop: BinaryOp, d: DType, x: Value, y: Value) -> Option<Value> {
        if !Self::has_binary_x4(bop, d) {
            return None;
        }
        let b = &mut self.b;
        Some(match (d, bop) {
            (DType::F32, BinaryOp::Add) => b.ins().fadd(x, y),
            (DType::F32, BinaryOp::Sub) => b.ins().fsub(x, y),
            (DType::F32, BinaryOp::Mul) => b.ins().fmul(x, y),
            (DType::F32, BinaryOp::Div) => b.ins().fdiv(x, y),
            (DType::F32, BinaryOp::Max | BinaryOp::Min) => {
                // a.is_nan() || (b > a | b < a) ? b : a
                let nan = b.ins().fcmp(FloatCC::Unordered, x, x);
                let cc = if bop == BinaryOp::Max { FloatCC::GreaterThan } else { FloatCC::LessThan };
                let better = b.ins().fcmp(cc, y, x);
                let take = b.ins().bor(nan, better);
                let take = b.ins().bitcast(types::F32X4, lanes(), take);
                b.ins().bitselect(take, y, x)
            }
            (_, BinaryOp::Add) => b.ins().iadd(x, y),
            (_, BinaryOp::Sub) => b.ins().isub(x, y),
            (_, BinaryOp::Mul) => b.ins().imul(x, y),
            (_, BinaryOp::And) => b.ins().band(x, y),
            (_, BinaryOp::Or) => b.ins().bor(x, y),
            (_, BinaryOp::Xor) => b.ins().bxor(x, y),
            (_, BinaryOp::Max) => b.ins().smax(x, y),
            (_, BinaryOp::Min) => b.ins().smin(x, y),
            _ => return None,
        })
    }

    /// Lane masks (all ones / zero) to bool lanes (1 / 0).
    fn mask_to_bool_x4(&mut self, m: Value) -> Value {
        let one = self.b.ins().iconst(types::I32, 1);
        let ones = self.b.ins().splat(types::I32X4, one);
        self.b.ins().band(m, ones)
    }

    pub(super) fn cmp_x4(&mut self, p: CmpPred, d: DType, x: Value, y: Value) -> Value {
        let m = self.compare(p, d, x, y);
        self.mask_to_bool_x4(m)
    }

    /// `c != 0 ? a : b` lane-wise (`c` is i32x4 of 0/1; `a`, `b` f32x4 or i32x4).
    pub(super) fn select_x4(&mut self, c: Value, a: Value, bv: Value) -> Value {
        let zero = self.b.ins().iconst(types::I32, 0);
        let zeros = self.b.ins().splat(types::I32X4, zero);
        let m = self.b.ins().icmp(IntCC::NotEqual, c, zeros);
        let ty: Type = self.b.func.dfg.value_type(a);
        let m = if ty == types::I32X4 { m } else { self.b.ins().bitcast(ty, lanes(), m) };
        self.b.ins().bitselect(m, a, bv)
    }
}
