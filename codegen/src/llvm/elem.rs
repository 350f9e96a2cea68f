//! Element semantics in LLVM IR, written once for scalars (`lanes == 0`) and `<lanes x T>`
//! vectors, exactly as the interpreter computes them (`opc_ir::interp`, `opc_ir::numerics`).
//!
//! - Floats: f32 arithmetic without fast-math flags (so LLVM never fuses or reassociates it),
//!   then rounding to the dtype after every op: bf16 is inline integer RNE (the `half` crate's
//!   rule, NaNs quieted), f16 is `fptrunc`/`fpext` (one RNE rounding, as `f16::from_f32`).
//!   `max`/`min` are the interpreter's (a NaN first operand gives the second, ties keep the first).
//!   `sqrt`, `floor`, `ceil`, `round` (half to even), `fmod` are LLVM's exactly rounded ops;
//!   `log`, `log2`, `tanh`, `sin`, `cos`, `pow` call the same Rust `f32` functions the
//!   interpreter uses (one call per lane), so results are bit-identical.
//! - `exp` and `exp2` (and `sigmoid` / `silu` through `exp`) are inline and vectorized, because
//!   softmax and attention spend their time there: range reduction `x = n·ln2 + r` (Cody–Waite
//!   with an FMA for `exp`, exact `x - round(x)` for `exp2`), a degree-7 Taylor polynomial on
//!   `|r| ≤ ln2/2` (truncation < 2⁻²⁷), and the scale by `2ⁿ` with one rounding (`vscalefps` on
//!   16 AVX-512 lanes, else two exact steps) so that results that overflow, underflow or land
//!   in the subnormal range come out right. They differ
//!   from Rust's `f32::exp` / `exp2` by at most a couple of ulps (tested in `llvm_numerics`);
//!   NaN, ±inf and the overflow / underflow thresholds give the same results.
//! - Ints: i32 arithmetic wrapped to the dtype's width after every op; `/` and `%` by zero give 0
//!   and `MIN / -1` wraps (the divisor is guarded, never a trap); shift amounts outside
//!   `[0, bits)` give 0 (`shl`) or the sign fill (`shr`).
//! - Casts: int ↔ int, int → f32, float → f16 / bf16 (RNE) and float → int with any rounding
//!   (round, saturate, NaN → 0) inline; the rare rest (codes, directed float roundings) through
//!   the `opc_llvm_cast` helper, which calls `opc_ir::numerics` like the interpreter.

use opc_ir::{BinaryOp, CmpPred, DType, Op, OpKind, Rounding, UnaryOp};

use super::helpers::{dtype_code, rounding_code, Helper};
use super::lower::{ety, Lower};
use super::text::{cst, flit, suffix, vt};
use crate::Result;

impl Lower<'_> {
    /// Call a scalar helper once per lane (or once for a scalar).
    pub(super) fn call_helper(&mut self, h: Helper, args: &[&str], lanes: u32) -> String {
        let (ptys, rty) = h.llvm_signature();
        let rty = rty.expect("a helper with a result");
        if lanes == 0 {
            let a: Vec<String> = args.iter().zip(ptys).map(|(x, t)| format!("{t} {x}")).collect();
            return self.f.val(format!("call {rty} @{}({})", h.symbol(), a.join(", ")));
        }
        let mut out = "poison".to_string();
        for lane in 0..lanes {
            let a: Vec<String> = args
                .iter()
                .zip(ptys)
                .map(|(x, t)| {
                    if x.starts_with('%') || x.starts_with('<') || x.starts_with("splat") || x.starts_with("zeroinit") || x.starts_with("poison") {
                        let e = self.f.val(format!("extractelement {} {x}, i64 {lane}", vt(t, lanes)));
                        format!("{t} {e}")
                    } else {
                        format!("{t} {x}")
                    }
                })
                .collect();
            let y = self.f.val(format!("call {rty} @{}({})", h.symbol(), a.join(", ")));
            out = self.f.val(format!("insertelement {} {out}, {rty} {y}, i64 {lane}", vt(rty, lanes)));
        }
        out
    }

    fn intr1(&mut self, name: &str, base: &str, lanes: u32, x: &str) -> String {
        let t = vt(base, lanes);
        self.f.val(format!("call {t} @llvm.{name}.{}({t} {x})", suffix(base, lanes)))
    }

    /// `e^x` (or `2^x` for `base2`) on f32 lanes (see the module docs).
    pub(super) fn exp(&mut self, x: &str, lanes: u32, base2: bool) -> String {
        let (tf, tb) = (vt("float", lanes), vt("i1", lanes));
        let cf = |v: f32| cst("float", lanes, &flit(v));
        let fma = |l: &mut Self, a: &str, b: &str, c: &str| -> String {
            l.f.val(format!("call {tf} @llvm.fma.{}({tf} {a}, {tf} {b}, {tf} {c})", suffix("float", lanes)))
        };
        // Clamp so that the reduction stays exact; beyond these the result is inf or 0 anyway.
        let (lo, hi) = if base2 { (-152.0f32, 129.0f32) } else { (-105.0f32, 89.0f32) };
        let c1 = self.f.val(format!("call {tf} @llvm.maxnum.{}({tf} {x}, {tf} {})", suffix("float", lanes), cf(lo)));
        let xc = self.f.val(format!("call {tf} @llvm.minnum.{}({tf} {c1}, {tf} {})", suffix("float", lanes), cf(hi)));
        let ln2 = std::f64::consts::LN_2;
        // Taylor coefficients of e^r (or of 2^r = e^(r·ln2)), highest degree first
        let coefs: Vec<f32> = (0..8).rev().map(|k: i32| {
            let fact: f64 = (1..=k).map(f64::from).product();
            (if base2 { ln2.powi(k) } else { 1.0 } / fact) as f32
        }).collect();
        let (n, r) = if base2 {
            let n = self.intr1("roundeven", "float", lanes, &xc);
            let r = self.f.val(format!("fsub {tf} {xc}, {n}"));
            (n, r)
        } else {
            let t = self.f.val(format!("fmul {tf} {xc}, {}", cf(std::f32::consts::LOG2_E)));
            let n = self.intr1("roundeven", "float", lanes, &t);
            let nn = self.f.val(format!("fneg {tf} {n}"));
            // ln2 = LN2_HI + LN2_LO, LN2_HI with trailing zero bits so that n·LN2_HI is exact
            let r = fma(self, &nn, &cf(0.693_145_75), &xc);
            let r = fma(self, &nn, &cf(1.428_606_8e-6), &r);
            (n, r)
        };
        // |r| <= 1/2 (2^r) or ~ln2/2 (e^r): degree 7, Horner with FMAs
        let mut p = cf(coefs[0]);
        for c in &coefs[1..] {
            p = fma(self, &p, &r, &cf(*c));
        }
        let y = if lanes == 16 && self.isa.avx512 {
            // vscalefps: p · 2^n with one rounding, the same correctly rounded value as the
            // two exact-then-rounding steps below (overflow to inf, subnormals, underflow to 0)
            self.f.val(format!("call {tf} @llvm.x86.avx512.mask.scalef.ps.512({tf} {p}, {tf} {n}, {tf} zeroinitializer, i16 -1, i32 4)"))
        } else {
            self.scale_pow2(&p, &n, lanes)
        };
        let nan = self.f.val(format!("fcmp uno {tf} {x}, {x}"));
        self.f.val(format!("select {tb} {nan}, {tf} {x}, {tf} {y}"))
    }

    /// `p · 2^n` for integral f32 `n` (|n| <= 152) in two exact steps, both factors normal.
    fn scale_pow2(&mut self, p: &str, n: &str, lanes: u32) -> String {
        let (tf, ti) = (vt("float", lanes), vt("i32", lanes));
        let ci = |v: i32| cst("i32", lanes, &v.to_string());
        // scale by 2^n = 2^n1 · 2^n2, both factors normal
        let ni = self.f.val(format!("fptosi {tf} {n} to {ti}"));
        let n1 = self.f.val(format!("ashr {ti} {ni}, {}", ci(1)));
        let n2 = self.f.val(format!("sub {ti} {ni}, {n1}"));
        let pow2 = |l: &mut Self, e: &str| -> String {
            let b = l.f.val(format!("add {ti} {e}, {}", ci(127)));
            let b = l.f.val(format!("shl {ti} {b}, {}", ci(23)));
            l.f.val(format!("bitcast {ti} {b} to {tf}"))
        };
        let s1 = pow2(self, &n1);
        let s2 = pow2(self, &n2);
        let y = self.f.val(format!("fmul {tf} {p}, {s1}"));
        self.f.val(format!("fmul {tf} {y}, {s2}"))
    }

    /// `i1` lanes to i32 0/1.
    pub(super) fn bool_to_i32(&mut self, c: &str, lanes: u32) -> String {
        self.f.val(format!("zext {} {c} to {}", vt("i1", lanes), vt("i32", lanes)))
    }

    /// Round f32 lanes to bf16 (RNE, NaN quieted as `half::bf16::from_f32`), kept as f32.
    pub(super) fn round_bf16(&mut self, x: &str, lanes: u32) -> String {
        let (ti, tf) = (vt("i32", lanes), vt("float", lanes));
        let c = |s: &str| cst("i32", lanes, s);
        let xi = self.f.val(format!("bitcast {tf} {x} to {ti}"));
        let abs = self.f.val(format!("and {ti} {xi}, {}", c("2147483647")));
        let nan = self.f.val(format!("icmp ugt {ti} {abs}, {}", c("2139095040")));
        let hi = self.f.val(format!("lshr {ti} {xi}, {}", c("16")));
        let lsb = self.f.val(format!("and {ti} {hi}, {}", c("1")));
        let r = self.f.val(format!("add {ti} {xi}, {}", c("32767")));
        let r = self.f.val(format!("add {ti} {r}, {lsb}"));
        let q = self.f.val(format!("or {ti} {xi}, {}", c("4194304")));
        let s = self.f.val(format!("select {} {nan}, {ti} {q}, {ti} {r}", vt("i1", lanes)));
        let m = self.f.val(format!("and {ti} {s}, {}", c("-65536")));
        self.f.val(format!("bitcast {ti} {m} to {tf}"))
    }

    /// Whether the fused f32 value `v` is exactly a bf16 value for every input, so that narrowing
    /// it to bf16 (any rounding) leaves its bits as they are: a widened bf16, e2m1 or e8m0 load,
    /// views of one, or an e2m1 value times an e8m0 power of two (the MXFP4 weight decode:
    /// at most two significant bits, magnitudes 2⁻¹²⁸ to 6·2¹²⁷ or inf, NaN with a zero low
    /// half; a bf16 subnormal reaches 2⁻¹³³). Values this does not see through are not exact.
    pub(super) fn bf16_exact(&self, v: opc_ir::ValueId) -> bool {
        self.narrow_from(v).is_some_and(|d| matches!(d, DType::BF16 | DType::E2M1 | DType::E8M0))
            || self.fused.get(&v).is_some_and(|o| {
                o.kind == OpKind::Binary(BinaryOp::Mul) && {
                    let (a, b) = (self.narrow_from(o.args[0]), self.narrow_from(o.args[1]));
                    matches!((a, b), (Some(DType::E2M1), Some(DType::E8M0)) | (Some(DType::E8M0), Some(DType::E2M1)))
                }
            })
    }

    /// The dtype the fused f32 value `v` was widened from: a cast to f32, through views.
    fn narrow_from(&self, v: opc_ir::ValueId) -> Option<DType> {
        let o = self.fused.get(&v)?;
        match o.kind {
            OpKind::Broadcast | OpKind::ExpandDims(_) | OpKind::Reshape | OpKind::Permute(_) => self.narrow_from(o.args[0]),
            OpKind::Cast(_) if self.dtype(v) == DType::F32 => Some(self.dtype(o.args[0])),
            _ => None,
        }
    }

    /// Round f32 lanes to f16 (RNE), kept as f32.
    pub(super) fn round_f16(&mut self, x: &str, lanes: u32) -> String {
        let h = self.f.val(format!("fptrunc {} {x} to {}", vt("float", lanes), vt("half", lanes)));
        self.f.val(format!("fpext {} {h} to {}", vt("half", lanes), vt("float", lanes)))
    }

    /// Round f32 lanes to a float dtype (RNE), kept as f32.
    pub(super) fn round_to(&mut self, d: DType, x: &str, lanes: u32) -> String {
        match d {
            DType::F16 => self.round_f16(x, lanes),
            DType::BF16 => self.round_bf16(x, lanes),
            _ => x.to_string(),
        }
    }

    /// Wrap i32 lanes to an int dtype's two's-complement range (bool: `!= 0`), as `wrap_int`.
    pub(super) fn wrap(&mut self, d: DType, x: &str, lanes: u32) -> String {
        let t = vt("i32", lanes);
        let c = |s: &str| cst("i32", lanes, s);
        match d {
            DType::Bool => {
                let b = self.f.val(format!("icmp ne {t} {x}, {}", c("0")));
                self.bool_to_i32(&b, lanes)
            }
            DType::I4 | DType::I8 => {
                let s = if d == DType::I4 { "28" } else { "24" };
                let a = self.f.val(format!("shl {t} {x}, {}", c(s)));
                self.f.val(format!("ashr {t} {a}, {}", c(s)))
            }
            DType::U8 | DType::E8M0 => self.f.val(format!("and {t} {x}, {}", c("255"))),
            DType::E2M1 => self.f.val(format!("and {t} {x}, {}", c("15"))),
            _ => x.to_string(),
        }
    }

    /// `a.is_nan() || b > a ? b : a` (`lt`: `b < a`), lane-wise.
    pub(super) fn fmaxmin(&mut self, a: &str, b: &str, lanes: u32, max: bool) -> String {
        let t = vt("float", lanes);
        let nan = self.f.val(format!("fcmp uno {t} {a}, {a}"));
        let better = self.f.val(format!("fcmp {} {t} {b}, {a}", if max { "ogt" } else { "olt" }));
        let c = self.f.val(format!("or {} {nan}, {better}", vt("i1", lanes)));
        self.f.val(format!("select {} {c}, {t} {b}, {t} {a}", vt("i1", lanes)))
    }

    pub(super) fn unary(&mut self, op: &Op, u: UnaryOp, d: DType, x: &str, lanes: u32) -> Result<String> {
        if ety(d) == "float" {
            let t = vt("float", lanes);
            let one = cst("float", lanes, &flit(1.0));
            let y = match u {
                UnaryOp::Neg => self.f.val(format!("fneg {t} {x}")),
                UnaryOp::Abs => self.intr1("fabs", "float", lanes, x),
                UnaryOp::Exp => self.exp(x, lanes, false),
                UnaryOp::Exp2 => self.exp(x, lanes, true),
                UnaryOp::Log => self.call_helper(Helper::Ln, &[x], lanes),
                UnaryOp::Log2 => self.call_helper(Helper::Log2, &[x], lanes),
                UnaryOp::Sqrt => self.intr1("sqrt", "float", lanes, x),
                UnaryOp::Rsqrt => {
                    let s = self.intr1("sqrt", "float", lanes, x);
                    self.f.val(format!("fdiv {t} {one}, {s}"))
                }
                UnaryOp::Recip => self.f.val(format!("fdiv {t} {one}, {x}")),
                UnaryOp::Sigmoid | UnaryOp::Silu => {
                    let n = self.f.val(format!("fneg {t} {x}"));
                    let e = self.exp(&n, lanes, false);
                    let den = self.f.val(format!("fadd {t} {one}, {e}"));
                    let s = self.f.val(format!("fdiv {t} {one}, {den}"));
                    if u == UnaryOp::Silu {
                        self.f.val(format!("fmul {t} {x}, {s}"))
                    } else {
                        s
                    }
                }
                UnaryOp::Tanh => self.call_helper(Helper::Tanh, &[x], lanes),
                UnaryOp::Sin => self.call_helper(Helper::Sin, &[x], lanes),
                UnaryOp::Cos => self.call_helper(Helper::Cos, &[x], lanes),
                UnaryOp::Floor => self.intr1("floor", "float", lanes, x),
                UnaryOp::Ceil => self.intr1("ceil", "float", lanes, x),
                UnaryOp::Round => self.intr1("roundeven", "float", lanes, x),
                UnaryOp::IsNan => {
                    let c = self.f.val(format!("fcmp uno {t} {x}, {x}"));
                    return Ok(self.bool_to_i32(&c, lanes));
                }
                UnaryOp::IsInf => {
                    let a = self.intr1("fabs", "float", lanes, x);
                    let c = self.f.val(format!("fcmp oeq {t} {a}, {}", cst("float", lanes, &flit(f32::INFINITY))));
                    return Ok(self.bool_to_i32(&c, lanes));
                }
                UnaryOp::Not => return Err(self.unsupported(op, &format!("`not` is not defined on {d}"))),
            };
            return Ok(self.round_to(d, &y, lanes));
        }
        if d.is_code() {
            return Err(self.unsupported(op, &format!("`{}` is not defined on {d}", u.mnemonic())));
        }
        let t = vt("i32", lanes);
        Ok(match u {
            UnaryOp::Neg => {
                let y = self.f.val(format!("sub {t} {}, {x}", cst("i32", lanes, "0")));
                self.wrap(d, &y, lanes)
            }
            UnaryOp::Abs => {
                let y = self.f.val(format!("call {t} @llvm.abs.{}({t} {x}, i1 false)", suffix("i32", lanes)));
                self.wrap(d, &y, lanes)
            }
            UnaryOp::Not if d == DType::Bool => {
                let c = self.f.val(format!("icmp eq {t} {x}, {}", cst("i32", lanes, "0")));
                self.bool_to_i32(&c, lanes)
            }
            UnaryOp::Not => {
                let y = self.f.val(format!("xor {t} {x}, {}", cst("i32", lanes, "-1")));
                self.wrap(d, &y, lanes)
            }
            _ => return Err(self.unsupported(op, &format!("`{}` is not defined on {d}", u.mnemonic()))),
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn binary(&mut self, op: &Op, bop: BinaryOp, d: DType, x: &str, y: &str, lanes: u32) -> Result<String> {
        if ety(d) == "float" {
            let t = vt("float", lanes);
            let r = match bop {
                BinaryOp::Add => self.f.val(format!("fadd {t} {x}, {y}")),
                BinaryOp::Sub => self.f.val(format!("fsub {t} {x}, {y}")),
                BinaryOp::Mul => self.f.val(format!("fmul {t} {x}, {y}")),
                BinaryOp::Div => self.f.val(format!("fdiv {t} {x}, {y}")),
                BinaryOp::Rem => self.f.val(format!("frem {t} {x}, {y}")),
                BinaryOp::Max => self.fmaxmin(x, y, lanes, true),
                BinaryOp::Min => self.fmaxmin(x, y, lanes, false),
                BinaryOp::Pow => self.call_helper(Helper::Powf, &[x, y], lanes),
                _ => return Err(self.unsupported(op, &format!("`{}` is not defined on {d}", bop.mnemonic()))),
            };
            return Ok(self.round_to(d, &r, lanes));
        }
        if d.is_code() {
            return Err(self.unsupported(op, &format!("`{}` is not defined on {d}", bop.mnemonic())));
        }
        let t = vt("i32", lanes);
        let tb = vt("i1", lanes);
        let c = |s: &str| cst("i32", lanes, s);
        let bits = if d == DType::Bool { 1 } else { d.bits() as i64 };
        let simple = |l: &mut Self, ins: &str| -> String {
            let r = l.f.val(format!("{ins} {t} {x}, {y}"));
            l.wrap(d, &r, lanes)
        };
        Ok(match bop {
            BinaryOp::Add => simple(self, "add"),
            BinaryOp::Sub => simple(self, "sub"),
            BinaryOp::Mul => simple(self, "mul"),
            BinaryOp::And => simple(self, "and"),
            BinaryOp::Or => simple(self, "or"),
            BinaryOp::Xor => simple(self, "xor"),
            BinaryOp::Div | BinaryOp::Rem => {
                // Guard the divisor: 0 gives 0, -1 is negation (MIN / -1 wraps), never a trap.
                let zero = self.f.val(format!("icmp eq {t} {y}, {}", c("0")));
                let m1 = self.f.val(format!("icmp eq {t} {y}, {}", c("-1")));
                let special = self.f.val(format!("or {tb} {zero}, {m1}"));
                let safe = self.f.val(format!("select {tb} {special}, {t} {}, {t} {y}", c("1")));
                let r = if bop == BinaryOp::Div {
                    let q = self.f.val(format!("sdiv {t} {x}, {safe}"));
                    let neg = self.f.val(format!("sub {t} {}, {x}", c("0")));
                    let q = self.f.val(format!("select {tb} {m1}, {t} {neg}, {t} {q}"));
                    self.f.val(format!("select {tb} {zero}, {t} {}, {t} {q}", c("0")))
                } else {
                    let q = self.f.val(format!("srem {t} {x}, {safe}"));
                    self.f.val(format!("select {tb} {special}, {t} {}, {t} {q}", c("0")))
                };
                self.wrap(d, &r, lanes)
            }
            BinaryOp::Max => self.f.val(format!("call {t} @llvm.smax.{}({t} {x}, {t} {y})", suffix("i32", lanes))),
            BinaryOp::Min => self.f.val(format!("call {t} @llvm.smin.{}({t} {x}, {t} {y})", suffix("i32", lanes))),
            BinaryOp::Shl | BinaryOp::Shr => {
                let inr = self.f.val(format!("icmp ult {t} {y}, {}", c(&bits.to_string())));
                let amt = self.f.val(format!("and {t} {y}, {}", c("31")));
                if bop == BinaryOp::Shl {
                    let s = self.f.val(format!("shl {t} {x}, {amt}"));
                    let s = self.wrap(d, &s, lanes);
                    self.f.val(format!("select {tb} {inr}, {t} {s}, {t} {}", c("0")))
                } else {
                    let s = self.f.val(format!("ashr {t} {x}, {amt}"));
                    let fill = self.f.val(format!("ashr {t} {x}, {}", c("31")));
                    self.f.val(format!("select {tb} {inr}, {t} {s}, {t} {fill}"))
                }
            }
            BinaryOp::Pow => {
                let dc = dtype_code(d).to_string();
                self.call_helper(Helper::Ipow, &[x, y, &dc], lanes)
            }
        })
    }

    pub(super) fn cmp(&mut self, p: CmpPred, d: DType, x: &str, y: &str, lanes: u32) -> String {
        let c = if ety(d) == "float" {
            let cc = match p {
                CmpPred::Eq => "oeq",
                CmpPred::Ne => "une",
                CmpPred::Lt => "olt",
                CmpPred::Le => "ole",
                CmpPred::Gt => "ogt",
                CmpPred::Ge => "oge",
            };
            self.f.val(format!("fcmp {cc} {} {x}, {y}", vt("float", lanes)))
        } else {
            let cc = match p {
                CmpPred::Eq => "eq",
                CmpPred::Ne => "ne",
                CmpPred::Lt => "slt",
                CmpPred::Le => "sle",
                CmpPred::Gt => "sgt",
                CmpPred::Ge => "sge",
            };
            self.f.val(format!("icmp {cc} {} {x}, {y}", vt("i32", lanes)))
        };
        self.bool_to_i32(&c, lanes)
    }

    pub(super) fn cast(&mut self, from: DType, to: DType, r: Rounding, x: &str, lanes: u32) -> String {
        let ff = ety(from) == "float";
        if from == to || (ff && to == DType::F32) {
            return x.to_string();
        }
        let plain_int = |d: DType| d.is_int() || d == DType::Bool;
        if plain_int(from) && plain_int(to) {
            return self.wrap(to, x, lanes);
        }
        if plain_int(from) && to == DType::F32 && r == Rounding::Rne {
            return self.f.val(format!("sitofp {} {x} to {}", vt("i32", lanes), vt("float", lanes)));
        }
        if ff && r == Rounding::Rne && matches!(to, DType::BF16 | DType::F16) {
            // One RNE rounding, as `numerics::round_float`.
            return self.round_to(to, x, lanes);
        }
        if ff && to.is_int() {
            // round, saturate to the dtype's range, NaN → 0 (`numerics::float_to_int`)
            let rounded = match r {
                Rounding::Rne => self.intr1("roundeven", "float", lanes, x),
                Rounding::Rtz => self.intr1("trunc", "float", lanes, x),
                Rounding::Floor => self.intr1("floor", "float", lanes, x),
                Rounding::Ceil => self.intr1("ceil", "float", lanes, x),
            };
            let (ti, tf) = (vt("i32", lanes), vt("float", lanes));
            let i = self.f.val(format!("call {ti} @llvm.fptosi.sat.{}.{}({tf} {rounded})", suffix("i32", lanes), suffix("float", lanes)));
            let (lo, hi) = to.int_range().expect("int dtype");
            if to == DType::I32 {
                return i;
            }
            let a = self.f.val(format!("call {ti} @llvm.smax.{}({ti} {i}, {ti} {})", suffix("i32", lanes), cst("i32", lanes, &lo.to_string())));
            return self.f.val(format!("call {ti} @llvm.smin.{}({ti} {a}, {ti} {})", suffix("i32", lanes), cst("i32", lanes, &hi.to_string())));
        }
        if matches!(from, DType::E2M1 | DType::E8M0) && matches!(to, DType::F32 | DType::BF16) {
            // exact in both: decoded inline (the MXFP4 inner loops), bit-identical to numerics
            return self.decode_code(from, x, lanes);
        }
        let tf = ety(to) == "float";
        let xi = if ff { self.f.val(format!("bitcast {} {x} to {}", vt("float", lanes), vt("i32", lanes))) } else { x.to_string() };
        let (fc, tc, rc) = (dtype_code(from).to_string(), dtype_code(to).to_string(), rounding_code(r).to_string());
        let y = self.call_helper(Helper::Cast, &[&xi, &fc, &tc, &rc], lanes);
        if tf {
            self.f.val(format!("bitcast {} {y} to {}", vt("i32", lanes), vt("float", lanes)))
        } else {
            y
        }
    }

    /// An e2m1 / e8m0 code (raw, in an i32) as its f32 value, as `numerics::{e2m1,e8m0}_decode`.
    /// e2m1: a 16-entry `vpermps` table on 16 AVX-512 lanes, else from bits: magnitude code
    /// m ≥ 2 is `(m << 22) + (126 << 23)` (exponent and one mantissa bit), 1 is 0.5, 0 is 0,
    /// and bit 3 is the sign. e8m0: e << 23, with 0 → 2⁻¹²⁷ (a subnormal) and 255 → NaN.
    pub(super) fn decode_code(&mut self, from: DType, x: &str, lanes: u32) -> String {
        let (ti, tf, tb) = (vt("i32", lanes), vt("float", lanes), vt("i1", lanes));
        let c = |s: &str| cst("i32", lanes, s);
        if from == DType::E2M1 {
            if lanes == 16 && self.isa.avx512 {
                let table: Vec<String> = (0..16u32).map(|i| format!("float {}", flit(opc_ir::numerics::e2m1_decode(i)))).collect();
                // vpermps reads the low 4 bits of each index: the raw code as is.
                return self.f.val(format!("call {tf} @llvm.x86.avx512.permvar.sf.512({tf} <{}>, {ti} {x})", table.join(", ")));
            }
            let m = self.f.val(format!("and {ti} {x}, {}", c("7")));
            let sh = self.f.val(format!("shl {ti} {m}, {}", c("22")));
            let big = self.f.val(format!("add {ti} {sh}, {}", c("1056964608")));
            let one = self.f.val(format!("icmp eq {ti} {m}, {}", c("1")));
            let small = self.f.val(format!("select {tb} {one}, {ti} {}, {ti} {}", c("1056964608"), c("0")));
            let ge2 = self.f.val(format!("icmp ugt {ti} {m}, {}", c("1")));
            let mag = self.f.val(format!("select {tb} {ge2}, {ti} {big}, {ti} {small}"));
            let sg = self.f.val(format!("and {ti} {x}, {}", c("8")));
            let sg = self.f.val(format!("shl {ti} {sg}, {}", c("28")));
            let bits = self.f.val(format!("or {ti} {mag}, {sg}"));
            return self.f.val(format!("bitcast {ti} {bits} to {tf}"));
        }
        // 0 and 255 both get bit 22 on top of e << 23: 0x00400000 = 2⁻¹²⁷ and 0x7FC00000 =
        // the quiet NaN (integer ops only: no compare-and-blend per scale).
        let e = self.f.val(format!("and {ti} {x}, {}", c("255")));
        if lanes == 0 {
            // One scale (an MXFP4 block's, once per block): a load from the 256-entry table.
            let i = self.f.val(format!("zext i32 {e} to i64"));
            let p = self.f.val(format!("getelementptr [256 x float], ptr @{E8M0_TABLE}, i64 0, i64 {i}"));
            return self.f.val(format!("load float, ptr {p}, align 4"));
        }
        let n = self.f.val(format!("shl {ti} {e}, {}", c("23")));
        let e1 = self.f.val(format!("add {ti} {e}, {}", c("1")));
        let e1 = self.f.val(format!("and {ti} {e1}, {}", c("255")));
        let edge = self.f.val(format!("icmp ult {ti} {e1}, {}", c("2")));
        let q = self.f.val(format!("zext {tb} {edge} to {ti}"));
        let q = self.f.val(format!("shl {ti} {q}, {}", c("22")));
        let bits = self.f.val(format!("or {ti} {n}, {q}"));
        self.f.val(format!("bitcast {ti} {bits} to {tf}"))
    }

    pub(super) fn bitcast(&mut self, from: DType, to: DType, x: &str, lanes: u32) -> String {
        let (ti, tf) = (vt("i32", lanes), vt("float", lanes));
        match (from, to) {
            _ if from == to => x.to_string(),
            (DType::F32, DType::I32) => self.f.val(format!("bitcast {tf} {x} to {ti}")),
            (DType::I32, DType::F32) => self.f.val(format!("bitcast {ti} {x} to {tf}")),
            _ => {
                let xi = if ety(from) == "float" { self.f.val(format!("bitcast {tf} {x} to {ti}")) } else { x.to_string() };
                let (fc, tc) = (dtype_code(from).to_string(), dtype_code(to).to_string());
                let y = self.call_helper(Helper::Bitcast, &[&xi, &fc, &tc], lanes);
                if ety(to) == "float" {
                    self.f.val(format!("bitcast {ti} {y} to {tf}"))
                } else {
                    y
                }
            }
        }
    }
}

/// The module's e8m0 decode table (`numerics::e8m0_decode` of every byte).
const E8M0_TABLE: &str = "opc_e8m0";

/// The definition of [`E8M0_TABLE`] (private: dropped when unused).
pub(super) fn e8m0_table() -> String {
    let vals: Vec<String> = (0..256u32).map(|i| format!("float {}", flit(opc_ir::numerics::e8m0_decode(i) as f32))).collect();
    format!("@{E8M0_TABLE} = private unnamed_addr constant [256 x float] [{}], align 64\n", vals.join(", "))
}
