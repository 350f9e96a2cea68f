//! `fold-constants`: evaluate ops whose operands are constants, and apply algebraic identities
//! that are exact for every input.
//!
//! **Rewrites.** An op whose operands are all splat constants (`const`, scalar or tile) becomes
//! a `const` of its result type, keeping its result value: `neg abs not floor ceil round sqrt
//! recip isnan isinf`, the binary ops but `pow`, `cmp`, `cast`, `bitcast` (f32↔i32, i8↔u8),
//! `broadcast` / `expand_dims` / `reshape` / `permute` of a splat, and `reduce` of a splat:
//! `max`/`min`, int `sum` (n·c, wrapped; result in the operand's dtype only), `argmax`/`argmin`
//! of a non-NaN splat (0). `dim @D` of a `const` dim whose value
//! is fixed becomes `const`. Values follow `opc_ir::numerics`: ints wrap to their dtype, float
//! results are rounded (RNE) to their dtype — every folded float op is correctly rounded in f64,
//! and rounding that to f32/f16/bf16 is innocuous, so any correctly rounded implementation
//! agrees bit for bit.
//!
//! Identities (the op is dropped and its uses read the surviving operand, or it becomes a splat):
//! - ints: `x+0`, `0+x`, `x-0`, `x*1`, `1*x`, `x/1`, `x|0`, `x^0`, `x<<0`, `x>>0` → `x`;
//!   `x*0`, `0*x`, `x&0`, `x/0`, `x%0`, `x%1` → `0` (division by zero is defined as 0);
//! - floats: `x*1.0`, `1.0*x`, `x/1.0`, `x-(+0.0)`, `x+(-0.0)`, `(-0.0)+x` → `x`. Not `x+0.0`
//!   (−0.0 + 0.0 is +0.0) and not `x*0.0` (NaN, ∞ and the sign of zero);
//! - bool: `x and true`, `x or false`, `x xor false` → `x`; `x and false` → false, `x or true` → true;
//! - `select(true, a, b)` → `a`, `select(false, a, b)` → `b`, `select(c, a, a)` → `a`;
//! - `cast` / `bitcast` to the operand's own type → the operand.
//!
//! **Expects / leaves.** Any verified tile IR; leaves verified IR with the same values (folded
//! ops keep their result ids; dropped ones are substituted). Operands that became unused are left
//! for `dce`.
//!
//! **Does not.** Fold transcendental ops (`exp log sin tanh sigmoid silu rsqrt pow ...`: their
//! last bit depends on the math library, so the interpreter and a backend may differ), float
//! `max`/`min` involving NaN or two zeros (NaN and ±0 conventions differ between targets),
//! int→int casts that do not fit the target (wrap vs. saturate), casts to/from `e2m1`/`e8m0`/bool
//! from floats, shifts by negative or ≥ width amounts, float `sum`/`cumsum`, `if` on a constant
//! condition or zero-trip loops, and it never reassociates.
//!
//! ```text
//! before:  %3 = mul %1, %2 : i32          (%1 = const 2, %2 = const 3)
//!          %5 = add %4, %0 : i32          (%0 = const 0; %5 used by a store)
//! after:   %3 = const 6 : i32             (%5 dropped: the store reads %4)
//! ```
use std::collections::HashMap;

use opc_ir::numerics::{float_to_int, round_float, round_float_with, round_half_even, wrap_int};
use opc_ir::{BinaryOp, Block, CmpPred, DType, Kernel, Op, OpKind, ReduceOp, Rounding, Scalar, TileType, UnaryOp, ValueId};

use crate::rewriter::{with_blocks, Subst};
use crate::Pass;

pub struct FoldConstants;

impl Pass for FoldConstants {
    const NAME: &'static str = "fold-constants";
    fn run(kernel: &mut Kernel) -> bool {
        let dims: Vec<Option<i64>> = kernel.dims.iter().map(|d| if d.konst { d.value } else { None }).collect();
        let mut f = Folder { consts: HashMap::new(), subst: Subst::default(), dims, changed: false };
        with_blocks(kernel, |k, b| {
            f.block(&k.values, b);
            false
        });
        f.changed
    }
}

/// The value of every element of a splat constant, exact in its dtype.
#[derive(Clone, Copy, Debug, PartialEq)]
enum C {
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl C {
    fn scalar(self) -> Scalar {
        match self {
            C::Int(i) => Scalar::Int(i),
            C::Float(f) => Scalar::Float(f),
            C::Bool(b) => Scalar::Bool(b),
        }
    }
    fn int(self) -> Option<i64> {
        match self {
            C::Int(i) => Some(i),
            C::Bool(b) => Some(b as i64),
            C::Float(_) => None,
        }
    }
}

/// The outcome of looking at one op.
enum Fold {
    Keep,
    /// Replace the op by `const` of its result type.
    Const(C),
    /// Drop the op; its result is this (operand) value.
    Value(ValueId),
}

struct Folder {
    consts: HashMap<ValueId, C>,
    subst: Subst,
    /// Values of specialized (`const`) dims.
    dims: Vec<Option<i64>>,
    changed: bool,
}

/// The exact value a `const` of dtype `dt` holds, if this pass can reason about it.
fn read_const(s: Scalar, dt: DType) -> Option<C> {
    match (s, dt) {
        (Scalar::Bool(b), DType::Bool) => Some(C::Bool(b)),
        (Scalar::Int(i), DType::Bool) if i == 0 || i == 1 => Some(C::Bool(i == 1)),
        (Scalar::Int(i), d) if d.is_int() && wrap_int(d, i) == i => Some(C::Int(i)),
        (Scalar::Int(i), d) if d.is_float() => Some(C::Float(round_float(d, i as f64))),
        (Scalar::Float(f), d) if d.is_float() => Some(C::Float(round_float(d, f))),
        _ => None,
    }
}

impl Folder {
    fn block(&mut self, values: &[TileType], b: &mut Block) {
        let mut out = Vec::with_capacity(b.ops.len());
        for mut op in std::mem::take(&mut b.ops) {
            for a in &mut op.args {
                *a = self.subst.resolve(*a);
            }
            for r in &mut op.regions {
                self.block(values, r);
            }
            match self.fold(values, &op) {
                Fold::Keep => {}
                Fold::Const(c) => {
                    op.kind = OpKind::Const(c.scalar());
                    op.args.clear();
                    self.changed = true;
                }
                Fold::Value(v) => {
                    self.subst.insert(op.result(), v);
                    self.changed = true;
                    continue;
                }
            }
            if let OpKind::Const(s) = op.kind {
                if let Some(c) = read_const(s, values[op.result().0 as usize].dtype) {
                    self.consts.insert(op.result(), c);
                }
            }
            out.push(op);
        }
        b.ops = out;
    }

    fn fold(&self, values: &[TileType], op: &Op) -> Fold {
        let ty = |v: ValueId| &values[v.0 as usize];
        let c = |i: usize| op.args.get(i).and_then(|a| self.consts.get(a)).copied();
        let done = |r: Option<C>| r.map_or(Fold::Keep, Fold::Const);
        match &op.kind {
            OpKind::Dim(s) => {
                let v = self.dims.get(s.0 as usize).copied().flatten();
                done(v.filter(|&v| wrap_int(DType::I32, v) == v && ty(op.result()).dtype == DType::I32).map(C::Int))
            }
            OpKind::Unary(u) => done(c(0).and_then(|x| unary(*u, x, ty(op.result()).dtype))),
            OpKind::Binary(b) => {
                let dt = ty(op.result()).dtype;
                match (c(0), c(1)) {
                    (Some(x), Some(y)) => done(binary(*b, x, y, dt)),
                    (x, y) => identity(*b, op.args[0], x, op.args[1], y),
                }
            }
            OpKind::Cmp(p) => match (c(0), c(1)) {
                (Some(x), Some(y)) => done(cmp(*p, x, y).map(C::Bool)),
                _ => Fold::Keep,
            },
            OpKind::Select => match c(0) {
                Some(C::Bool(t)) => Fold::Value(op.args[if t { 1 } else { 2 }]),
                _ if op.args[1] == op.args[2] => Fold::Value(op.args[1]),
                _ => Fold::Keep,
            },
            // A conversion to the operand's own type is the identity.
            OpKind::Cast(_) | OpKind::Bitcast if ty(op.args[0]) == ty(op.result()) => Fold::Value(op.args[0]),
            OpKind::Cast(r) => {
                done(c(0).and_then(|x| cast(x, ty(op.args[0]).dtype, ty(op.result()).dtype, *r)))
            }
            OpKind::Bitcast => done(c(0).and_then(|x| bitcast(x, ty(op.args[0]).dtype, ty(op.result()).dtype))),
            OpKind::Broadcast | OpKind::ExpandDims(_) | OpKind::Reshape | OpKind::Permute(_) => done(c(0)),
            OpKind::Reduce { op: r, axis } => {
                let n = ty(op.args[0]).shape.get(*axis as usize).copied().unwrap_or(0) as i64;
                let dt = ty(op.result()).dtype;
                let same = ty(op.args[0]).dtype == dt;
                done(c(0).filter(|_| n > 0).and_then(|x| match (r, x) {
                    (ReduceOp::Max | ReduceOp::Min, _) if same => Some(x),
                    (ReduceOp::Sum, C::Int(i)) if same => Some(C::Int(wrap_int(dt, i.wrapping_mul(n)))),
                    (ReduceOp::Argmax | ReduceOp::Argmin, C::Int(_) | C::Bool(_)) => Some(C::Int(0)),
                    (ReduceOp::Argmax | ReduceOp::Argmin, C::Float(f)) if !f.is_nan() => Some(C::Int(0)),
                    _ => None,
                }))
            }
            _ => Fold::Keep,
        }
    }
}

fn unary(u: UnaryOp, x: C, out: DType) -> Option<C> {
    Some(match x {
        C::Int(i) => C::Int(wrap_int(
            out,
            match u {
                UnaryOp::Neg => i.wrapping_neg(),
                UnaryOp::Abs => i.wrapping_abs(),
                UnaryOp::Not => !i,
                _ => return None,
            },
        )),
        C::Bool(b) => match u {
            UnaryOp::Not => C::Bool(!b),
            _ => return None,
        },
        C::Float(f) => match u {
            UnaryOp::IsNan => C::Bool(f.is_nan()),
            UnaryOp::IsInf => C::Bool(f.is_infinite()),
            _ => C::Float(round_float(
                out,
                match u {
                    UnaryOp::Neg => -f,
                    UnaryOp::Abs => f.abs(),
                    UnaryOp::Floor => f.floor(),
                    UnaryOp::Ceil => f.ceil(),
                    UnaryOp::Round => round_half_even(f),
                    UnaryOp::Sqrt => f.sqrt(),
                    UnaryOp::Recip => 1.0 / f,
                    _ => return None,
                },
            )),
        },
    })
}

fn binary(b: BinaryOp, x: C, y: C, dt: DType) -> Option<C> {
    use BinaryOp::*;
    Some(match (x, y) {
        (C::Int(x), C::Int(y)) => {
            let bits = dt.bits() as i64;
            C::Int(wrap_int(
                dt,
                match b {
                    Add => x.wrapping_add(y),
                    Sub => x.wrapping_sub(y),
                    Mul => x.wrapping_mul(y),
                    Div if y == 0 => 0,
                    Div => x.wrapping_div(y),
                    Rem if y == 0 => 0,
                    Rem => x.wrapping_rem(y),
                    Max => x.max(y),
                    Min => x.min(y),
                    And => x & y,
                    Or => x | y,
                    Xor => x ^ y,
                    Shl if (0..bits).contains(&y) => x << y,
                    Shr if (0..bits).contains(&y) => x >> y,
                    _ => return None,
                },
            ))
        }
        (C::Bool(x), C::Bool(y)) => C::Bool(match b {
            And => x & y,
            Or => x | y,
            Xor => x ^ y,
            _ => return None,
        }),
        (C::Float(x), C::Float(y)) => C::Float(round_float(
            dt,
            match b {
                Add => x + y,
                Sub => x - y,
                Mul => x * y,
                Div => x / y,
                Rem => x % y,
                Max | Min if x.is_nan() || y.is_nan() || (x == 0.0 && y == 0.0) => return None,
                Max => x.max(y),
                Min => x.min(y),
                _ => return None,
            },
        )),
        _ => return None,
    })
}

/// Identities with one constant operand (see the module doc for the list).
fn identity(b: BinaryOp, xv: ValueId, x: Option<C>, yv: ValueId, y: Option<C>) -> Fold {
    use BinaryOp::*;
    let zero = C::Int(0);
    match (b, x, y) {
        // ints
        (Add | Sub | Or | Xor | Shl | Shr, _, Some(C::Int(0))) | (Mul | Div, _, Some(C::Int(1))) => Fold::Value(xv),
        (Add | Or | Xor, Some(C::Int(0)), _) | (Mul, Some(C::Int(1)), _) => Fold::Value(yv),
        (Mul | And | Div | Rem, _, Some(C::Int(0))) | (Mul | And, Some(C::Int(0)), _) | (Rem, _, Some(C::Int(1))) => {
            Fold::Const(zero)
        }
        // floats
        (Mul | Div, _, Some(C::Float(1.0))) => Fold::Value(xv),
        (Mul, Some(C::Float(1.0)), _) => Fold::Value(yv),
        (Sub, _, Some(C::Float(f))) if f == 0.0 && f.is_sign_positive() => Fold::Value(xv),
        (Add, _, Some(C::Float(f))) if f == 0.0 && f.is_sign_negative() => Fold::Value(xv),
        (Add, Some(C::Float(f)), _) if f == 0.0 && f.is_sign_negative() => Fold::Value(yv),
        // bool
        (And, _, Some(C::Bool(true))) | (Or | Xor, _, Some(C::Bool(false))) => Fold::Value(xv),
        (And, Some(C::Bool(true)), _) | (Or | Xor, Some(C::Bool(false)), _) => Fold::Value(yv),
        (And, _, Some(C::Bool(false))) | (And, Some(C::Bool(false)), _) => Fold::Const(C::Bool(false)),
        (Or, _, Some(C::Bool(true))) | (Or, Some(C::Bool(true)), _) => Fold::Const(C::Bool(true)),
        _ => Fold::Keep,
    }
}

fn cmp(p: CmpPred, x: C, y: C) -> Option<bool> {
    use std::cmp::Ordering;
    let ord = match (x, y) {
        (C::Float(x), C::Float(y)) => x.partial_cmp(&y),
        (C::Float(_), _) | (_, C::Float(_)) => return None,
        (x, y) => Some(x.int()?.cmp(&y.int()?)),
    };
    Some(match (p, ord) {
        // Unordered (NaN): only `ne` holds.
        (CmpPred::Ne, None) => true,
        (_, None) => false,
        (CmpPred::Eq, Some(o)) => o == Ordering::Equal,
        (CmpPred::Ne, Some(o)) => o != Ordering::Equal,
        (CmpPred::Lt, Some(o)) => o == Ordering::Less,
        (CmpPred::Le, Some(o)) => o != Ordering::Greater,
        (CmpPred::Gt, Some(o)) => o == Ordering::Greater,
        (CmpPred::Ge, Some(o)) => o != Ordering::Less,
    })
}

fn cast(x: C, from: DType, to: DType, r: Rounding) -> Option<C> {
    if from.is_code() || to.is_code() {
        return None;
    }
    Some(match x {
        C::Int(_) | C::Bool(_) => {
            let i = x.int()?;
            if to == DType::Bool {
                // int→bool is `!= 0` or a truncation depending on the target: not folded.
                return (from == DType::Bool).then_some(x);
            } else if to.is_int() {
                // Wrap and saturate agree when the value fits.
                return (wrap_int(to, i) == i).then_some(C::Int(i));
            }
            C::Float(round_float_with(to, i as f64, r))
        }
        C::Float(f) => {
            if to.is_float() {
                C::Float(round_float_with(to, f, r))
            } else if to.is_int() {
                C::Int(float_to_int(to, f, r))
            } else {
                return None;
            }
        }
    })
}

fn bitcast(x: C, from: DType, to: DType) -> Option<C> {
    match (x, from, to) {
        (C::Float(f), DType::F32, DType::I32) => Some(C::Int((f as f32).to_bits() as i32 as i64)),
        (C::Int(i), DType::I32, DType::F32) => {
            // A NaN's payload does not survive an f64 literal: leave those alone.
            let f = f32::from_bits(i as i32 as u32);
            (!f.is_nan()).then_some(C::Float(f as f64))
        }
        (C::Int(i), DType::I8 | DType::U8, DType::I8 | DType::U8) => Some(C::Int(wrap_int(to, i))),
        _ => None,
    }
}
