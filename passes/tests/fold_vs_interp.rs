//! `fold-constants` agrees bit for bit with the reference interpreter: every unary, binary, cmp,
//! select and cast over interesting constants of every computable dtype is stored, and the
//! outputs before and after folding are compared.
mod common;
use common::*;
use opc_ir::{Arg, BinaryOp, CmpPred, DType, Kernel, Rounding, Scalar, Tensor, UnaryOp, ValueId};
use opc_passes::{FoldConstants, Pass};

const DTYPES: [DType; 8] = [DType::I32, DType::I8, DType::U8, DType::I4, DType::F32, DType::F16, DType::BF16, DType::Bool];
const ROUNDINGS: [Rounding; 4] = [Rounding::Rne, Rounding::Rtz, Rounding::Floor, Rounding::Ceil];

fn values(d: DType) -> Vec<Scalar> {
    let ints = |v: &[i64]| v.iter().map(|&i| Scalar::Int(i)).collect();
    match d {
        DType::I32 => ints(&[0, 1, -1, 2, 7, -7, 31, 32, 100, 300, i32::MAX as i64, i32::MIN as i64]),
        DType::I8 => ints(&[0, 1, -1, 2, 7, -7, 100, 127, -128]),
        DType::U8 => ints(&[0, 1, 2, 7, 100, 200, 255]),
        DType::I4 => ints(&[0, 1, -1, 2, 3, 7, -8]),
        DType::Bool => vec![Scalar::Bool(false), Scalar::Bool(true)],
        _ => [0.0, -0.0, 1.0, -1.0, 0.1, 2.5, -2.5, 3.0, 1e30, 1e-40, 16777217.0, 65520.0, f64::INFINITY, f64::NEG_INFINITY, f64::NAN]
            .iter()
            .map(|&f| Scalar::Float(f))
            .collect(),
    }
}

/// A kernel storing every value `f` builds (scalars of dtype `d`) to `out[i]`.
fn kernel(d: DType, f: impl FnOnce(&mut Builder) -> Vec<ValueId>) -> (Kernel, usize) {
    let mut b = Builder::new("fold");
    let out = b.tensor("out", d, &["N"], true);
    let vs = f(&mut b);
    for (i, &v) in vs.iter().enumerate() {
        let idx = b.i32(i as i64);
        b.store(out, &[idx], v);
    }
    (b.finish(), vs.len())
}

fn check(name: &str, d: DType, f: impl FnOnce(&mut Builder) -> Vec<ValueId>) {
    let (k, n) = kernel(d, f);
    if n == 0 {
        return;
    }
    let run = |k: &Kernel| {
        let mut args = vec![Arg::Tensor(Tensor::zeros(d, &[n]))];
        opc_ir::interp::run(k, &mut args).unwrap_or_else(|e| panic!("{name}: {e}"));
        args
    };
    let mut folded = k.clone();
    FoldConstants::run(&mut folded);
    opc_ir::verify::verify(&folded).unwrap();
    let (want, got) = (run(&k), run(&folded));
    if want != got {
        let (Arg::Tensor(w), Arg::Tensor(g)) = (&want[0], &got[0]) else { unreachable!() };
        for i in 0..n {
            assert_eq!(w.get_raw(i), g.get_raw(i), "{name}: element {i} differs ({} vs {})", w.get_f64(i), g.get_f64(i));
        }
    }
}

fn c(b: &mut Builder, s: Scalar, d: DType) -> ValueId {
    b.konst(s, t(d, &[]))
}

#[test]
fn unary_ops() {
    for d in DTYPES {
        check(&format!("unary {d}"), d, |b| {
            let mut out = vec![];
            for u in UnaryOp::ALL {
                let ok = match d {
                    DType::Bool => u == UnaryOp::Not,
                    d if d.is_int() => !u.float_only(),
                    _ => u != UnaryOp::Not && !matches!(u, UnaryOp::IsNan | UnaryOp::IsInf),
                };
                if ok {
                    for s in values(d) {
                        let x = c(b, s, d);
                        out.push(b.unary(u, x));
                    }
                }
            }
            out
        });
        if d.is_float() {
            check(&format!("isnan/isinf {d}"), DType::Bool, |b| {
                let mut out = vec![];
                for u in [UnaryOp::IsNan, UnaryOp::IsInf] {
                    for s in values(d) {
                        let x = c(b, s, d);
                        out.push(b.op(opc_ir::OpKind::Unary(u), &[x], t(DType::Bool, &[])));
                    }
                }
                out
            });
        }
    }
}

#[test]
fn binary_ops() {
    for d in DTYPES {
        for op in BinaryOp::ALL {
            let ok = match d {
                DType::Bool => matches!(op, BinaryOp::And | BinaryOp::Or | BinaryOp::Xor),
                d if d.is_int() => true,
                _ => !op.int_only(),
            };
            if !ok {
                continue;
            }
            check(&format!("{} {d}", op.mnemonic()), d, |b| {
                let mut out = vec![];
                for x in values(d) {
                    for y in values(d) {
                        let (x, y) = (c(b, x, d), c(b, y, d));
                        out.push(b.bin(op, x, y));
                    }
                }
                out
            });
        }
    }
}

#[test]
fn comparisons_and_selects() {
    for d in DTYPES {
        check(&format!("cmp {d}"), DType::Bool, |b| {
            let mut out = vec![];
            for p in CmpPred::ALL {
                for x in values(d) {
                    for y in values(d) {
                        let (x, y) = (c(b, x, d), c(b, y, d));
                        out.push(b.cmp(p, x, y));
                    }
                }
            }
            out
        });
        check(&format!("select {d}"), d, |b| {
            let vs = values(d);
            let mut out = vec![];
            for cond in [true, false] {
                let cv = b.bool(cond);
                let (x, y) = (c(b, vs[0], d), c(b, vs[vs.len() - 1], d));
                out.push(b.select(cv, x, y));
            }
            out
        });
    }
}

#[test]
fn casts() {
    for from in DTYPES {
        for to in DTYPES {
            if from == to {
                continue;
            }
            check(&format!("cast {from} -> {to}"), to, |b| {
                let mut out = vec![];
                for r in ROUNDINGS {
                    for s in values(from) {
                        let x = c(b, s, from);
                        out.push(b.cast(x, to, r));
                    }
                }
                out
            });
        }
    }
}

#[test]
fn identities_on_runtime_values() {
    // x op const with x a runtime value: the identities must hold for every x, so run many.
    for d in [DType::I32, DType::I8, DType::U8, DType::F32, DType::F16, DType::Bool] {
        let mut b = Builder::new("ident");
        let inp = b.tensor("inp", d, &["M"], false);
        let out = b.tensor("out", d, &["N"], true);
        let n = values(d).len();
        let r = b.arange(n);
        let x = b.load(inp, &[r]);
        let consts: Vec<Scalar> = match d {
            DType::Bool => vec![Scalar::Bool(false), Scalar::Bool(true)],
            d if d.is_int() => vec![Scalar::Int(0), Scalar::Int(1)],
            _ => vec![Scalar::Float(0.0), Scalar::Float(-0.0), Scalar::Float(1.0)],
        };
        let mut vs = vec![];
        for s in consts {
            let k = b.konst(s, t(d, &[n]));
            for op in BinaryOp::ALL {
                let ok = match d {
                    DType::Bool => matches!(op, BinaryOp::And | BinaryOp::Or | BinaryOp::Xor),
                    d if d.is_int() => op != BinaryOp::Pow,
                    _ => !op.int_only() && op != BinaryOp::Pow,
                };
                if ok {
                    vs.push(b.bin(op, x, k));
                    vs.push(b.bin(op, k, x));
                }
            }
        }
        let n_out = vs.len() * n;
        for (j, v) in vs.iter().enumerate() {
            let off = b.konst(Scalar::Int((j * n) as i64), t(DType::I32, &[n]));
            let idx = b.add(r, off);
            b.store(out, &[idx], *v);
        }
        let k = b.finish();
        let mut folded = k.clone();
        assert!(FoldConstants::run(&mut folded));
        opc_ir::verify::verify(&folded).unwrap();
        let input = {
            let mut tns = Tensor::zeros(d, &[n]);
            let (kn, _) = kernel(d, |b| values(d).into_iter().map(|s| c(b, s, d)).collect());
            let mut a = vec![Arg::Tensor(tns.clone())];
            opc_ir::interp::run(&kn, &mut a).unwrap();
            if let Arg::Tensor(v) = &a[0] {
                tns = v.clone();
            }
            tns
        };
        let run = |k: &Kernel| {
            let mut a = vec![Arg::Tensor(input.clone()), Arg::Tensor(Tensor::zeros(d, &[n_out]))];
            opc_ir::interp::run(k, &mut a).unwrap();
            a
        };
        assert_eq!(run(&k), run(&folded), "identities on {d}");
    }
}
