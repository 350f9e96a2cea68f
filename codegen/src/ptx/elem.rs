//! Element semantics in PTX: one element in, one out, as the interpreter computes it
//! (`opc_ir::interp`, `opc_ir::numerics`).
//!
//! - Floats: f32 arithmetic with explicit `.rn` on every `add`/`sub`/`mul` (so ptxas never
//!   contracts them into an FMA the interpreter does not do), IEEE `div.rn`/`sqrt.rn`/`rcp.rn`,
//!   no `.ftz` (subnormals kept), then rounding to f16/bf16 after every op (`cvt.rn.f16.f32`,
//!   `cvt.rn.bf16.f32`). `max`/`min` are the interpreter's (a NaN operand gives the other one;
//!   ties keep the first), built from `setp` + `selp`.
//! - Ints: i32 arithmetic wrapped to the dtype after every op; `/` and `%` by zero give 0 and
//!   `MIN / -1` wraps (the divisor is guarded); shifts by an amount outside `[0, bits)` give 0
//!   (`shl`) or the sign fill (`shr`); `pow` is exponentiation by squaring, wrapping each step.
//! - Casts are exact in every combination: float → int with the rounding mode's `cvt.r*i`
//!   (saturating, NaN → 0) then clamped to the narrow type; int → f16/bf16 through a
//!   round-to-odd f32 (so RNE rounds once); directed roundings to f16/bf16 step one ulp from the
//!   RNE result as `numerics::round_float_with` does; e2m1 / e8m0 codes are encoded and decoded
//!   with integer and compare sequences that follow `numerics` case by case.
//! - Transcendental functions are in `math.rs`.

use opc_ir::{BinaryOp, CmpPred, DType, Op, Rounding, UnaryOp};

use super::emit::{fimm, Kind, Reg};
use super::lower::{ekind, Lower};
use crate::Result;

impl Lower<'_> {
    /// Round an f32 value to a float dtype (RNE), kept as f32.
    pub(super) fn round_to(&mut self, d: DType, x: Reg) -> Reg {
        match d {
            DType::F16 => {
                let h = self.p.op(Kind::H, "cvt.rn.f16.f32", &[&x]);
                self.p.op(Kind::F, "cvt.f32.f16", &[&h])
            }
            DType::BF16 => {
                let h = self.p.op(Kind::H, "cvt.rn.bf16.f32", &[&x]);
                let r = self.p.op(Kind::R, "cvt.u32.u16", &[&h]);
                self.bf16_bits_to_f32(r)
            }
            _ => x,
        }
    }

    /// Wrap an i32 to an int dtype's range (bool: `!= 0`), as `numerics::wrap_int`.
    pub(super) fn wrap(&mut self, d: DType, x: Reg) -> Reg {
        match d {
            DType::Bool => {
                let p = self.p.op(Kind::P, "setp.ne.b32", &[&x, &0]);
                self.p.op(Kind::R, "selp.b32", &[&1, &0, &p])
            }
            DType::I4 => self.sext(x, 4),
            DType::I8 => self.sext(x, 8),
            DType::U8 | DType::E8M0 => self.p.op(Kind::R, "and.b32", &[&x, &0xFF]),
            DType::E2M1 => self.p.op(Kind::R, "and.b32", &[&x, &0xF]),
            _ => x,
        }
    }

    /// Sign-extend the low `bits` bits.
    fn sext(&mut self, x: Reg, bits: u32) -> Reg {
        let t = self.p.op(Kind::R, "shl.b32", &[&x, &(32 - bits)]);
        self.p.op(Kind::R, "shr.s32", &[&t, &(32 - bits)])
    }

    fn pred_to_b32(&mut self, p: Reg) -> Reg {
        self.p.op(Kind::R, "selp.b32", &[&1, &0, &p])
    }

    /// `a.is_nan() || b > a ? b : a` (`gt`), or with `<` for min.
    pub(super) fn fmaxmin(&mut self, a: Reg, b: Reg, max: bool) -> Reg {
        let nan = self.p.op(Kind::P, "testp.notanumber.f32", &[&a]);
        let better = self.p.op(Kind::P, if max { "setp.gt.f32" } else { "setp.lt.f32" }, &[&b, &a]);
        let take = self.p.op(Kind::P, "or.pred", &[&nan, &better]);
        self.p.op(Kind::F, "selp.f32", &[&b, &a, &take])
    }

    pub(super) fn unary(&mut self, op: &Op, u: UnaryOp, d: DType, x: Reg) -> Result<Reg> {
        if d.is_float() {
            let y = match u {
                UnaryOp::Neg => self.p.op(Kind::F, "neg.f32", &[&x]),
                UnaryOp::Abs => self.p.op(Kind::F, "abs.f32", &[&x]),
                UnaryOp::Exp => self.exp(x),
                UnaryOp::Exp2 => self.p.op(Kind::F, "ex2.approx.f32", &[&x]),
                UnaryOp::Log => self.log(x, false),
                UnaryOp::Log2 => self.log(x, true),
                UnaryOp::Sqrt => self.p.op(Kind::F, "sqrt.rn.f32", &[&x]),
                UnaryOp::Rsqrt => {
                    let s = self.p.op(Kind::F, "sqrt.rn.f32", &[&x]);
                    self.p.op(Kind::F, "rcp.rn.f32", &[&s])
                }
                UnaryOp::Recip => self.p.op(Kind::F, "rcp.rn.f32", &[&x]),
                UnaryOp::Sigmoid | UnaryOp::Silu => {
                    let n = self.p.op(Kind::F, "neg.f32", &[&x]);
                    let e = self.exp(n);
                    let den = self.p.op(Kind::F, "add.rn.f32", &[&fimm(1.0), &e]);
                    let s = self.p.op(Kind::F, "rcp.rn.f32", &[&den]);
                    if u == UnaryOp::Silu {
                        self.p.op(Kind::F, "mul.rn.f32", &[&x, &s])
                    } else {
                        s
                    }
                }
                UnaryOp::Tanh => self.tanh(x),
                UnaryOp::Sin => self.sincos(x, false),
                UnaryOp::Cos => self.sincos(x, true),
                UnaryOp::Floor => self.p.op(Kind::F, "cvt.rmi.f32.f32", &[&x]),
                UnaryOp::Ceil => self.p.op(Kind::F, "cvt.rpi.f32.f32", &[&x]),
                UnaryOp::Round => self.p.op(Kind::F, "cvt.rni.f32.f32", &[&x]),
                UnaryOp::IsNan => {
                    let p = self.p.op(Kind::P, "testp.notanumber.f32", &[&x]);
                    return Ok(self.pred_to_b32(p));
                }
                UnaryOp::IsInf => {
                    let p = self.p.op(Kind::P, "testp.infinite.f32", &[&x]);
                    return Ok(self.pred_to_b32(p));
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
                let y = self.p.op(Kind::R, "neg.s32", &[&x]);
                self.wrap(d, y)
            }
            UnaryOp::Abs => {
                let n = self.p.op(Kind::R, "neg.s32", &[&x]);
                let y = self.p.op(Kind::R, "max.s32", &[&x, &n]);
                self.wrap(d, y)
            }
            UnaryOp::Not if d == DType::Bool => {
                let p = self.p.op(Kind::P, "setp.eq.b32", &[&x, &0]);
                self.pred_to_b32(p)
            }
            UnaryOp::Not => {
                let y = self.p.op(Kind::R, "not.b32", &[&x]);
                self.wrap(d, y)
            }
            _ => return Err(self.unsupported(op, &format!("`{}` is not defined on {d}", u.mnemonic()))),
        })
    }

    pub(super) fn binary(&mut self, op: &Op, b: BinaryOp, d: DType, x: Reg, y: Reg) -> Result<Reg> {
        if d.is_float() {
            let r = match b {
                BinaryOp::Add => self.p.op(Kind::F, "add.rn.f32", &[&x, &y]),
                BinaryOp::Sub => self.p.op(Kind::F, "sub.rn.f32", &[&x, &y]),
                BinaryOp::Mul => self.p.op(Kind::F, "mul.rn.f32", &[&x, &y]),
                BinaryOp::Div => self.p.op(Kind::F, "div.rn.f32", &[&x, &y]),
                BinaryOp::Rem => self.fmod(x, y),
                BinaryOp::Max => self.fmaxmin(x, y, true),
                BinaryOp::Min => self.fmaxmin(x, y, false),
                BinaryOp::Pow => self.powf(x, y),
                _ => return Err(self.unsupported(op, &format!("`{}` is not defined on {d}", b.mnemonic()))),
            };
            return Ok(self.round_to(d, r));
        }
        if d.is_code() {
            return Err(self.unsupported(op, &format!("`{}` is not defined on {d}", b.mnemonic())));
        }
        let bits = if d == DType::Bool { 1 } else { d.bits() as u32 };
        Ok(match b {
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::And | BinaryOp::Or | BinaryOp::Xor => {
                let opc = match b {
                    BinaryOp::Add => "add.s32",
                    BinaryOp::Sub => "sub.s32",
                    BinaryOp::Mul => "mul.lo.s32",
                    BinaryOp::And => "and.b32",
                    BinaryOp::Or => "or.b32",
                    _ => "xor.b32",
                };
                let r = self.p.op(Kind::R, opc, &[&x, &y]);
                self.wrap(d, r)
            }
            BinaryOp::Div | BinaryOp::Rem => {
                // Guard the divisor: 0 gives 0, -1 is negation (MIN / -1 wraps).
                let zero = self.p.op(Kind::P, "setp.eq.s32", &[&y, &0]);
                let m1 = self.p.op(Kind::P, "setp.eq.s32", &[&y, &-1]);
                let special = self.p.op(Kind::P, "or.pred", &[&zero, &m1]);
                let safe = self.p.op(Kind::R, "selp.b32", &[&1, &y, &special]);
                let r = if b == BinaryOp::Div {
                    let q = self.p.op(Kind::R, "div.s32", &[&x, &safe]);
                    let n = self.p.op(Kind::R, "neg.s32", &[&x]);
                    let q = self.p.op(Kind::R, "selp.b32", &[&n, &q, &m1]);
                    self.p.op(Kind::R, "selp.b32", &[&0, &q, &zero])
                } else {
                    let q = self.p.op(Kind::R, "rem.s32", &[&x, &safe]);
                    self.p.op(Kind::R, "selp.b32", &[&0, &q, &special])
                };
                self.wrap(d, r)
            }
            BinaryOp::Max => self.p.op(Kind::R, "max.s32", &[&x, &y]),
            BinaryOp::Min => self.p.op(Kind::R, "min.s32", &[&x, &y]),
            BinaryOp::Shl | BinaryOp::Shr => {
                let inr = self.p.op(Kind::P, "setp.lt.u32", &[&y, &bits]);
                if b == BinaryOp::Shl {
                    let s = self.p.op(Kind::R, "shl.b32", &[&x, &y]);
                    let s = self.wrap(d, s);
                    self.p.op(Kind::R, "selp.b32", &[&s, &0, &inr])
                } else {
                    let s = self.p.op(Kind::R, "shr.s32", &[&x, &y]);
                    let fill = self.p.op(Kind::R, "shr.s32", &[&x, &31]);
                    self.p.op(Kind::R, "selp.b32", &[&s, &fill, &inr])
                }
            }
            BinaryOp::Pow => self.ipow(d, x, y),
        })
    }

    /// Integer `pow`, as the interpreter's `ipow`.
    fn ipow(&mut self, d: DType, x: Reg, y: Reg) -> Reg {
        // Negative exponent: 1 for base 1, ±1 for base -1 (by parity), else 0.
        let is1 = self.p.op(Kind::P, "setp.eq.s32", &[&x, &1]);
        let ism1 = self.p.op(Kind::P, "setp.eq.s32", &[&x, &-1]);
        let odd = self.p.op(Kind::R, "and.b32", &[&y, &1]);
        let oddp = self.p.op(Kind::P, "setp.ne.b32", &[&odd, &0]);
        let m1v = self.p.op(Kind::R, "selp.b32", &[&-1, &1, &oddp]);
        let neg = self.p.op(Kind::R, "selp.b32", &[&m1v, &0, &ism1]);
        let neg = self.p.op(Kind::R, "selp.b32", &[&1, &neg, &is1]);
        let r = self.p.mov(Kind::R, 1);
        let bb = self.p.mov(Kind::R, x);
        let e = self.p.mov(Kind::R, y);
        let (top, done) = (self.p.label(), self.p.label());
        self.p.place(&top);
        let stop = self.p.op(Kind::P, "setp.le.s32", &[&e, &0]);
        self.p.ins(format!("@{stop} bra {done}"));
        let bit = self.p.op(Kind::R, "and.b32", &[&e, &1]);
        let on = self.p.op(Kind::P, "setp.ne.b32", &[&bit, &0]);
        let rm = self.p.op(Kind::R, "mul.lo.s32", &[&r, &bb]);
        let rm = self.wrap(d, rm);
        self.p.ins(format!("selp.b32 {r}, {rm}, {r}, {on}"));
        let b2 = self.p.op(Kind::R, "mul.lo.s32", &[&bb, &bb]);
        let b2 = self.wrap(d, b2);
        self.p.ins(format!("mov.b32 {bb}, {b2}"));
        self.p.ins(format!("shr.s32 {e}, {e}, 1"));
        self.p.ins(format!("bra {top}"));
        self.p.place(&done);
        let negp = self.p.op(Kind::P, "setp.lt.s32", &[&y, &0]);
        self.p.op(Kind::R, "selp.b32", &[&neg, &r, &negp])
    }

    pub(super) fn cmp(&mut self, pr: CmpPred, d: DType, x: Reg, y: Reg) -> Reg {
        let opc = if d.is_float() {
            match pr {
                CmpPred::Eq => "setp.eq.f32",
                CmpPred::Ne => "setp.neu.f32",
                CmpPred::Lt => "setp.lt.f32",
                CmpPred::Le => "setp.le.f32",
                CmpPred::Gt => "setp.gt.f32",
                CmpPred::Ge => "setp.ge.f32",
            }
        } else {
            match pr {
                CmpPred::Eq => "setp.eq.s32",
                CmpPred::Ne => "setp.ne.s32",
                CmpPred::Lt => "setp.lt.s32",
                CmpPred::Le => "setp.le.s32",
                CmpPred::Gt => "setp.gt.s32",
                CmpPred::Ge => "setp.ge.s32",
            }
        };
        let p = self.p.op(Kind::P, opc, &[&x, &y]);
        self.pred_to_b32(p)
    }

    pub(super) fn cast(&mut self, from: DType, to: DType, r: Rounding, x: Reg) -> Reg {
        if from == to {
            return x;
        }
        let (ff, tf) = (from.is_float(), to.is_float());
        if ff && tf {
            return if to == DType::F32 { x } else { self.f32_to_half(to, x, r) };
        }
        if ff {
            return match to {
                DType::Bool => {
                    let p = self.p.op(Kind::P, "setp.neu.f32", &[&x, &fimm(0.0)]);
                    self.pred_to_b32(p)
                }
                DType::E2M1 => self.e2m1_encode(x, r),
                DType::E8M0 => self.e8m0_encode(x, r),
                _ => self.f32_to_int(to, x, r),
            };
        }
        if from.is_code() {
            if tf {
                let v = self.decode_code(from, x);
                return self.cast(DType::F32, to, r, v);
            }
            return match to {
                DType::Bool if from == DType::E2M1 => {
                    let m = self.p.op(Kind::R, "and.b32", &[&x, &7]);
                    self.wrap(DType::Bool, m)
                }
                DType::Bool => self.p.mov(Kind::R, 1),
                DType::E2M1 | DType::E8M0 => {
                    let v = self.decode_code(from, x);
                    self.cast(DType::F32, to, r, v)
                }
                _ => self.wrap(to, x),
            };
        }
        if tf {
            return self.int_to_float(to, x, r);
        }
        if from == DType::Bool && to.is_code() {
            let v = self.p.op(Kind::F, "cvt.rn.f32.s32", &[&x]);
            return self.cast(DType::F32, to, r, v);
        }
        self.wrap(to, x)
    }

    /// f32 value → f16/bf16 value with a rounding mode, as `numerics::round_float_with`.
    fn f32_to_half(&mut self, to: DType, x: Reg, r: Rounding) -> Reg {
        let near = self.round_to(to, x);
        if r == Rounding::Rne {
            return near;
        }
        let hb = self.f32_to_half_bits(to, near);
        let hb = self.p.op(Kind::R, "cvt.u32.u16", &[&hb]);
        let pos = self.p.op(Kind::P, "setp.gt.f32", &[&near, &fimm(0.0)]);
        let zero = self.p.op(Kind::P, "setp.eq.f32", &[&near, &fimm(0.0)]);
        let inc = self.p.op(Kind::R, "add.s32", &[&hb, &1]);
        let dec = self.p.op(Kind::R, "sub.s32", &[&hb, &1]);
        // one step down / up from `near` (as `next_float`)
        let down = self.p.op(Kind::R, "selp.b32", &[&dec, &inc, &pos]);
        let down = self.p.op(Kind::R, "selp.b32", &[&0x8001, &down, &zero]);
        let up = self.p.op(Kind::R, "selp.b32", &[&inc, &dec, &pos]);
        let up = self.p.op(Kind::R, "selp.b32", &[&1, &up, &zero]);
        let above = self.p.op(Kind::P, "setp.gt.f32", &[&near, &x]);
        let below = self.p.op(Kind::P, "setp.lt.f32", &[&near, &x]);
        let bits = match r {
            Rounding::Floor => self.p.op(Kind::R, "selp.b32", &[&down, &hb, &above]),
            Rounding::Ceil => self.p.op(Kind::R, "selp.b32", &[&up, &hb, &below]),
            _ => {
                // toward zero: down for positive x, up for negative x
                let xpos = self.p.op(Kind::P, "setp.gt.f32", &[&x, &fimm(0.0)]);
                let a = self.p.op(Kind::P, "and.pred", &[&xpos, &above]);
                let xnp = self.p.op(Kind::P, "not.pred", &[&xpos]);
                let b = self.p.op(Kind::P, "and.pred", &[&xnp, &below]);
                let t = self.p.op(Kind::R, "selp.b32", &[&down, &hb, &a]);
                self.p.op(Kind::R, "selp.b32", &[&up, &t, &b])
            }
        };
        self.half_bits_to_f32(to, bits)
    }

    /// f32 value of f16/bf16 bits in the low half of a b32 register.
    pub(super) fn half_bits_to_f32(&mut self, d: DType, bits: Reg) -> Reg {
        if d == DType::F16 {
            let h = self.p.op(Kind::H, "cvt.u16.u32", &[&bits]);
            self.p.op(Kind::F, "cvt.f32.f16", &[&h])
        } else {
            let b = self.p.op(Kind::R, "and.b32", &[&bits, &0xFFFF]);
            self.bf16_bits_to_f32(b)
        }
    }

    /// Float → int dtype: round with the mode, saturate (NaN → 0).
    fn f32_to_int(&mut self, to: DType, x: Reg, r: Rounding) -> Reg {
        let m = match r {
            Rounding::Rne => "rni",
            Rounding::Rtz => "rzi",
            Rounding::Floor => "rmi",
            Rounding::Ceil => "rpi",
        };
        let v = self.p.op(Kind::R, &format!("cvt.{m}.s32.f32"), &[&x]);
        match to.int_range() {
            Some((lo, hi)) if to != DType::I32 => {
                let v = self.p.op(Kind::R, "max.s32", &[&v, &(lo as i32)]);
                self.p.op(Kind::R, "min.s32", &[&v, &(hi as i32)])
            }
            _ => v,
        }
    }

    /// Int → float dtype with one rounding (int values are exact in f64; f16/bf16 via a
    /// round-to-odd f32 for RNE, and the same directed mode twice otherwise).
    fn int_to_float(&mut self, to: DType, x: Reg, r: Rounding) -> Reg {
        let m = match r {
            Rounding::Rne => "rn",
            Rounding::Rtz => "rz",
            Rounding::Floor => "rm",
            Rounding::Ceil => "rp",
        };
        if to == DType::F32 {
            return self.p.op(Kind::F, &format!("cvt.{m}.f32.s32"), &[&x]);
        }
        if r != Rounding::Rne {
            let f = self.p.op(Kind::F, &format!("cvt.{m}.f32.s32"), &[&x]);
            return self.f32_to_half(to, f, r);
        }
        let f = self.p.op(Kind::F, "cvt.rz.f32.s32", &[&x]);
        let back = self.p.op(Kind::R, "cvt.rzi.s32.f32", &[&f]);
        let inexact = self.p.op(Kind::P, "setp.ne.s32", &[&back, &x]);
        let bits = self.p.op(Kind::R, "mov.b32", &[&f]);
        let odd = self.p.op(Kind::R, "or.b32", &[&bits, &1]);
        let bits = self.p.op(Kind::R, "selp.b32", &[&odd, &bits, &inexact]);
        let f = self.p.op(Kind::F, "mov.b32", &[&bits]);
        self.round_to(to, f)
    }

    /// Value (f32, exact) of an e2m1 or e8m0 code.
    fn decode_code(&mut self, d: DType, x: Reg) -> Reg {
        if d == DType::E8M0 {
            let e = self.p.op(Kind::R, "and.b32", &[&x, &0xFF]);
            let b = self.p.op(Kind::R, "shl.b32", &[&e, &23]);
            let z = self.p.op(Kind::P, "setp.eq.b32", &[&e, &0]);
            let b = self.p.op(Kind::R, "selp.b32", &[&0x0020_0000, &b, &z]);
            let nan = self.p.op(Kind::P, "setp.eq.b32", &[&e, &0xFF]);
            let b = self.p.op(Kind::R, "selp.b32", &[&0x7FC0_0000, &b, &nan]);
            return self.p.op(Kind::F, "mov.b32", &[&b]);
        }
        let m = self.p.op(Kind::R, "and.b32", &[&x, &7]);
        let e = self.p.op(Kind::R, "shr.u32", &[&m, &1]);
        let t = self.p.op(Kind::R, "add.u32", &[&e, &126]);
        let t = self.p.op(Kind::R, "shl.b32", &[&t, &23]);
        let lo = self.p.op(Kind::R, "and.b32", &[&m, &1]);
        let lo = self.p.op(Kind::R, "shl.b32", &[&lo, &22]);
        let b = self.p.op(Kind::R, "or.b32", &[&t, &lo]);
        let is1 = self.p.op(Kind::P, "setp.eq.b32", &[&m, &1]);
        let b = self.p.op(Kind::R, "selp.b32", &[&0x3F00_0000, &b, &is1]);
        let is0 = self.p.op(Kind::P, "setp.eq.b32", &[&m, &0]);
        let b = self.p.op(Kind::R, "selp.b32", &[&0, &b, &is0]);
        let s = self.p.op(Kind::R, "and.b32", &[&x, &8]);
        let s = self.p.op(Kind::R, "shl.b32", &[&s, &28]);
        let b = self.p.op(Kind::R, "or.b32", &[&b, &s]);
        self.p.op(Kind::F, "mov.b32", &[&b])
    }

    /// Σ over thresholds of `a > t` (or `a >= t` where `ge[i]`), as a b32 count.
    fn count_above(&mut self, a: Reg, ts: &[f32], ge: &dyn Fn(usize) -> bool) -> Reg {
        let mut acc = self.p.mov(Kind::R, 0);
        for (i, &t) in ts.iter().enumerate() {
            let p = self.p.op(Kind::P, if ge(i) { "setp.ge.f32" } else { "setp.gt.f32" }, &[&a, &fimm(t)]);
            let one = self.pred_to_b32(p);
            acc = self.p.op(Kind::R, "add.u32", &[&acc, &one]);
        }
        acc
    }

    /// `numerics::e2m1_encode` of an f32 value.
    fn e2m1_encode(&mut self, x: Reg, r: Rounding) -> Reg {
        let a = self.p.op(Kind::F, "abs.f32", &[&x]);
        let bits = self.p.op(Kind::R, "mov.b32", &[&x]);
        let s = self.p.op(Kind::R, "shr.u32", &[&bits, &31]);
        let neg = self.p.op(Kind::P, "setp.ne.b32", &[&s, &0]);
        // nearest: midpoints between codes i and i+1; a tie goes up when code i is odd
        let mids = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0];
        let down_ts = [0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];
        let up_ts = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0];
        let code = match r {
            Rounding::Rne => self.count_above(a, &mids, &|i| i % 2 == 1),
            Rounding::Rtz => self.count_above(a, &down_ts, &|_| true),
            Rounding::Floor | Rounding::Ceil => {
                let down = self.count_above(a, &down_ts, &|_| true);
                let up = self.count_above(a, &up_ts, &|_| false);
                let (pos_c, neg_c) = if r == Rounding::Floor { (down, up) } else { (up, down) };
                self.p.op(Kind::R, "selp.b32", &[&neg_c, &pos_c, &neg])
            }
        };
        let sign = self.p.op(Kind::R, "shl.b32", &[&s, &3]);
        let code = self.p.op(Kind::R, "or.b32", &[&code, &sign]);
        let nan = self.p.op(Kind::P, "testp.notanumber.f32", &[&x]);
        self.p.op(Kind::R, "selp.b32", &[&0, &code, &nan])
    }

    /// `numerics::e8m0_encode` of an f32 value (log2 rounded with the mode, clamped).
    fn e8m0_encode(&mut self, x: Reg, r: Rounding) -> Reg {
        let bits = self.p.op(Kind::R, "mov.b32", &[&x]);
        let e = self.p.op(Kind::R, "bfe.u32", &[&bits, &23, &8]);
        let man = self.p.op(Kind::R, "and.b32", &[&bits, &0x7F_FFFF]);
        // subnormal: floor(log2) = (31 - clz(man)) - 149; the fraction after normalizing
        let clz = self.p.op(Kind::R, "clz.b32", &[&man]);
        let sub_e = self.p.op(Kind::R, "sub.s32", &[&-118, &clz]);
        let sh = self.p.op(Kind::R, "sub.u32", &[&clz, &8]);
        let norm = self.p.op(Kind::R, "shl.b32", &[&man, &sh]);
        let norm = self.p.op(Kind::R, "and.b32", &[&norm, &0x7F_FFFF]);
        let is_sub = self.p.op(Kind::P, "setp.eq.b32", &[&e, &0]);
        let fl_n = self.p.op(Kind::R, "sub.s32", &[&e, &127]);
        let fl = self.p.op(Kind::R, "selp.b32", &[&sub_e, &fl_n, &is_sub]);
        let frac = self.p.op(Kind::R, "selp.b32", &[&norm, &man, &is_sub]);
        let ex = match r {
            Rounding::Floor | Rounding::Rtz => fl,
            Rounding::Ceil => {
                let exact = self.p.op(Kind::P, "setp.eq.b32", &[&frac, &0]);
                let add = self.p.op(Kind::R, "selp.b32", &[&0, &1, &exact]);
                self.p.op(Kind::R, "add.s32", &[&fl, &add])
            }
            Rounding::Rne => {
                let up = self.p.op(Kind::P, "setp.ge.u32", &[&frac, &0x35_04F4]);
                let add = self.pred_to_b32(up);
                self.p.op(Kind::R, "add.s32", &[&fl, &add])
            }
        };
        let c = self.p.op(Kind::R, "add.s32", &[&ex, &127]);
        let c = self.p.op(Kind::R, "max.s32", &[&c, &0]);
        let c = self.p.op(Kind::R, "min.s32", &[&c, &254]);
        let zero = self.p.op(Kind::P, "setp.eq.f32", &[&x, &fimm(0.0)]);
        let c = self.p.op(Kind::R, "selp.b32", &[&0, &c, &zero]);
        // NaN, ±inf and negative values encode as 0xFF
        let bad = self.p.op(Kind::P, "setp.ltu.f32", &[&x, &fimm(0.0)]);
        let inf = self.p.op(Kind::P, "testp.infinite.f32", &[&x]);
        let bad = self.p.op(Kind::P, "or.pred", &[&bad, &inf]);
        self.p.op(Kind::R, "selp.b32", &[&0xFF, &c, &bad])
    }

    pub(super) fn bitcast(&mut self, from: DType, to: DType, x: Reg) -> Reg {
        if from == to {
            return x;
        }
        // raw bits of the element (`f_bits` / `encode_int`)
        let bits = match from {
            DType::F32 => self.p.op(Kind::R, "mov.b32", &[&x]),
            DType::F16 | DType::BF16 => {
                let h = self.f32_to_half_bits(from, x);
                self.p.op(Kind::R, "cvt.u32.u16", &[&h])
            }
            DType::Bool => self.wrap(DType::Bool, x),
            DType::I4 | DType::E2M1 => self.p.op(Kind::R, "and.b32", &[&x, &0xF]),
            DType::I8 | DType::U8 | DType::E8M0 => self.p.op(Kind::R, "and.b32", &[&x, &0xFF]),
            DType::I32 => x,
        };
        // decoded as `to` (`decode_int` for ints and codes)
        match to {
            DType::F32 => self.p.op(Kind::F, "mov.b32", &[&bits]),
            DType::F16 | DType::BF16 => self.half_bits_to_f32(to, bits),
            DType::Bool => self.p.op(Kind::R, "and.b32", &[&bits, &1]),
            DType::I4 => self.sext(bits, 4),
            DType::I8 => self.sext(bits, 8),
            DType::U8 | DType::E8M0 => self.p.op(Kind::R, "and.b32", &[&bits, &0xFF]),
            DType::E2M1 => self.p.op(Kind::R, "and.b32", &[&bits, &0xF]),
            DType::I32 => bits,
        }
    }

    /// A zero of `d`'s element register class.
    pub(super) fn zero(&mut self, d: DType) -> Reg {
        if ekind(d) == Kind::F {
            self.p.mov(Kind::F, fimm(0.0))
        } else {
            self.p.mov(Kind::R, 0)
        }
    }
}
