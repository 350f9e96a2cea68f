//! `fold-constants`: structure after the pass, checked on the IR directly.
mod common;
use common::*;
use opc_ir::{BinaryOp, CmpPred, DType, Kernel, OpKind, Rounding, Scalar, UnaryOp, ValueId};
use opc_passes::{FoldConstants, Pass};

/// A kernel storing the value `f` builds (a scalar or tile) to `out[0]` (`out[arange]` for tiles).
fn storing(dtype: DType, f: impl FnOnce(&mut Builder) -> ValueId) -> Kernel {
    let mut b = Builder::new("k");
    let out = b.tensor("out", dtype, &["N"], true);
    let v = f(&mut b);
    let idx = match b.ty(v).shape.as_slice() {
        [] => b.i32(0),
        [n] => b.arange(*n),
        s => panic!("rank {}", s.len()),
    };
    b.store(out, &[idx], v);
    b.finish()
}

fn fold(k: &mut Kernel) -> bool {
    let changed = FoldConstants::run(k);
    check(k);
    changed
}

fn folded(dtype: DType, f: impl FnOnce(&mut Builder) -> ValueId) -> Option<Scalar> {
    let mut k = storing(dtype, f);
    fold(&mut k);
    const_of(&k, stored_value(&k))
}

#[test]
fn int_arithmetic_wraps() {
    assert_eq!(folded(DType::I32, |b| { let (x, y) = (b.i32(6), b.i32(7)); b.mul(x, y) }), Some(Scalar::Int(42)));
    assert_eq!(folded(DType::I32, |b| { let (x, y) = (b.i32(i32::MAX as i64), b.i32(1)); b.add(x, y) }), Some(Scalar::Int(i32::MIN as i64)));
    assert_eq!(folded(DType::I32, |b| { let (x, y) = (b.i32(-7), b.i32(2)); b.bin(BinaryOp::Rem, x, y) }), Some(Scalar::Int(-1)));
    assert_eq!(folded(DType::I32, |b| { let (x, y) = (b.i32(-7), b.i32(2)); b.bin(BinaryOp::Div, x, y) }), Some(Scalar::Int(-3)));
    assert_eq!(folded(DType::I32, |b| { let (x, y) = (b.i32(5), b.i32(0)); b.bin(BinaryOp::Div, x, y) }), Some(Scalar::Int(0)));
    assert_eq!(folded(DType::I32, |b| { let (x, y) = (b.i32(-16), b.i32(2)); b.bin(BinaryOp::Shr, x, y) }), Some(Scalar::Int(-4)));
    // Shift by the width is not defined: left alone.
    assert_eq!(folded(DType::I32, |b| { let (x, y) = (b.i32(1), b.i32(32)); b.bin(BinaryOp::Shl, x, y) }), None);
    // i8 wraps in its own width.
    assert_eq!(
        folded(DType::I8, |b| {
            let x = b.konst(Scalar::Int(100), t(DType::I8, &[]));
            b.add(x, x)
        }),
        Some(Scalar::Int(-56))
    );
}

#[test]
fn float_results_round_to_the_dtype() {
    let want = (0.1f32 + 0.2f32) as f64;
    assert_eq!(folded(DType::F32, |b| { let (x, y) = (b.f32(0.1), b.f32(0.2)); b.add(x, y) }), Some(Scalar::Float(want)));
    // 1 + 2^-11 is a tie in f16: rounds to even (1.0).
    let got = folded(DType::F16, |b| {
        let x = b.konst(Scalar::Float(1.0), t(DType::F16, &[]));
        let y = b.konst(Scalar::Float(2f64.powi(-11)), t(DType::F16, &[]));
        b.add(x, y)
    });
    assert_eq!(got, Some(Scalar::Float(1.0)));
    assert_eq!(folded(DType::F32, |b| { let x = b.f32(2.0); b.unary(UnaryOp::Sqrt, x) }), Some(Scalar::Float(2f32.sqrt() as f64)));
    assert_eq!(folded(DType::F32, |b| { let x = b.f32(2.5); b.unary(UnaryOp::Round, x) }), Some(Scalar::Float(2.0)));
}

#[test]
fn transcendentals_and_nan_minmax_are_not_folded() {
    assert_eq!(folded(DType::F32, |b| { let x = b.f32(1.0); b.unary(UnaryOp::Exp, x) }), None);
    assert_eq!(folded(DType::F32, |b| { let (x, y) = (b.f32(f64::NAN), b.f32(1.0)); b.bin(BinaryOp::Max, x, y) }), None);
    assert_eq!(folded(DType::F32, |b| { let (x, y) = (b.f32(-0.0), b.f32(0.0)); b.bin(BinaryOp::Max, x, y) }), None);
    assert_eq!(folded(DType::F32, |b| { let (x, y) = (b.f32(-1.0), b.f32(3.0)); b.bin(BinaryOp::Max, x, y) }), Some(Scalar::Float(3.0)));
}

#[test]
fn comparisons_follow_ieee() {
    let nan_eq = folded(DType::Bool, |b| { let x = b.f32(f64::NAN); b.cmp(CmpPred::Eq, x, x) });
    assert_eq!(nan_eq, Some(Scalar::Bool(false)));
    let nan_ne = folded(DType::Bool, |b| { let x = b.f32(f64::NAN); b.cmp(CmpPred::Ne, x, x) });
    assert_eq!(nan_ne, Some(Scalar::Bool(true)));
    assert_eq!(folded(DType::Bool, |b| { let (x, y) = (b.i32(-1), b.i32(2)); b.cmp(CmpPred::Lt, x, y) }), Some(Scalar::Bool(true)));
}

#[test]
fn casts_saturate_and_round_as_numerics_says() {
    assert_eq!(folded(DType::I32, |b| { let x = b.f32(2.7); b.cast(x, DType::I32, Rounding::Rtz) }), Some(Scalar::Int(2)));
    assert_eq!(folded(DType::I32, |b| { let x = b.f32(-2.5); b.cast(x, DType::I32, Rounding::Rne) }), Some(Scalar::Int(-2)));
    assert_eq!(folded(DType::I32, |b| { let x = b.f32(1e10); b.cast(x, DType::I32, Rounding::Rtz) }), Some(Scalar::Int(i32::MAX as i64)));
    assert_eq!(folded(DType::I32, |b| { let x = b.f32(f64::NAN); b.cast(x, DType::I32, Rounding::Rtz) }), Some(Scalar::Int(0)));
    assert_eq!(folded(DType::F32, |b| { let x = b.i32(16777217); b.cast(x, DType::F32, Rounding::Rne) }), Some(Scalar::Float(16777216.0)));
    // i32 -> i8 out of range: wrap or saturate is target business; not folded.
    assert_eq!(folded(DType::I8, |b| { let x = b.i32(300); b.cast(x, DType::I8, Rounding::Rne) }), None);
    assert_eq!(folded(DType::I8, |b| { let x = b.i32(-3); b.cast(x, DType::I8, Rounding::Rne) }), Some(Scalar::Int(-3)));
}

#[test]
fn shape_ops_of_a_splat_become_splats() {
    let mut k = storing(DType::F32, |b| {
        let x = b.f32(1.5);
        let e = b.expand_dims(x, 0);
        let bc = b.broadcast(e, &[16]);
        let y = b.konst(Scalar::Float(2.0), t(DType::F32, &[16]));
        b.mul(bc, y)
    });
    fold(&mut k);
    let v = stored_value(&k);
    assert_eq!(const_of(&k, v), Some(Scalar::Float(3.0)));
    assert_eq!(k.ty(v).shape, vec![16]);
}

#[test]
fn int_identities() {
    let mut b = Builder::new("k");
    let out = b.tensor("out", DType::I32, &["N"], true);
    let x = b.program_id(0);
    let (zero, one) = (b.i32(0), b.i32(1));
    let a = b.add(x, zero);
    let m = b.mul(one, a);
    let z = b.mul(m, zero);
    let s = b.add(m, z);
    b.store(out, &[x], s);
    let mut k = b.finish();
    assert!(fold(&mut k));
    // x + 0 and 1 * x are gone: the stored value is `add x, 0'` where 0' is the folded `x * 0`,
    // which folds further to x.
    assert_eq!(stored_value(&k), x);
    assert_eq!(count(&k, "add") + count(&k, "mul"), 0);
}

#[test]
fn float_identities_respect_signed_zero() {
    let mut b = Builder::new("k");
    let out = b.tensor("out", DType::F32, &["N"], true);
    let i = b.program_id(0);
    let x = b.scalar_param("x", DType::F32);
    let (pz, nz, one) = (b.f32(0.0), b.f32(-0.0), b.f32(1.0));
    let keep_add = b.add(x, pz); // -0 + 0 = +0: must stay
    let keep_mul = b.mul(x, pz); // NaN, inf, sign: must stay
    let sub = b.bin(BinaryOp::Sub, x, pz); // x - (+0) = x
    let add_nz = b.add(x, nz); // x + (-0) = x
    let mul1 = b.mul(one, x);
    for v in [keep_add, keep_mul, sub, add_nz, mul1] {
        b.store(out, &[i], v);
    }
    let mut k = b.finish();
    fold(&mut k);
    let stored: Vec<ValueId> = stores(&k).iter().map(|s| s.args[1]).collect();
    assert_eq!(stored, vec![keep_add, keep_mul, x, x, x]);
}

#[test]
fn select_on_constant_condition_and_bool_identities() {
    let mut b = Builder::new("k");
    let out = b.tensor("out", DType::I32, &["N"], true);
    let i = b.program_id(0);
    let (tr, fa) = (b.bool(true), b.bool(false));
    let c = b.cmp(CmpPred::Lt, i, i);
    let cond = b.bin(BinaryOp::And, c, tr); // -> c
    let y = b.i32(9);
    let s1 = b.select(tr, i, y); // -> i
    let s2 = b.select(fa, i, y); // -> 9
    let s3 = b.select(cond, s1, s1); // -> i
    let s4 = b.select(cond, s1, s2); // stays, with cond = c
    for v in [s1, s2, s3, s4] {
        b.store(out, &[i], v);
    }
    let mut k = b.finish();
    fold(&mut k);
    let stored: Vec<ValueId> = stores(&k).iter().map(|s| s.args[1]).collect();
    assert_eq!(stored[..3], [i, y, i]);
    assert_eq!(def(&k, stored[3]).unwrap().args, vec![c, i, y]);
}

#[test]
fn dims_of_specialized_dims_fold() {
    let mut b = Builder::new("k");
    let d = b.const_dim("D", 128);
    let out = b.tensor("out", DType::I32, &["N"], true);
    let dim = b.op(OpKind::Dim(d), &[], t(DType::I32, &[]));
    let two = b.i32(2);
    let v = b.mul(dim, two);
    let i = b.i32(0);
    b.store(out, &[i], v);
    let mut k = b.finish();
    fold(&mut k);
    assert_eq!(const_of(&k, stored_value(&k)), Some(Scalar::Int(256)));
    assert_eq!(count(&k, "dim"), 0);
}

#[test]
fn folds_inside_loops_from_outer_constants() {
    let mut b = Builder::new("k");
    let out = b.tensor("out", DType::I32, &["N"], true);
    let (lo, hi, st) = (b.i32(0), b.i32(4), b.i32(1));
    let c3 = b.i32(3);
    b.for_loop(lo, hi, st, &[], |b, iv, _| {
        let c = b.mul(c3, c3);
        let v = b.add(iv, c);
        b.store(out, &[iv], v);
        vec![]
    });
    let mut k = b.finish();
    fold(&mut k);
    let s = stores(&k)[0];
    let add = def(&k, s.args[1]).unwrap();
    assert_eq!(const_of(&k, add.args[1]), Some(Scalar::Int(9)));
    assert!(!FoldConstants::run(&mut k), "a second run changes nothing");
}

#[test]
fn casts_to_the_same_type_disappear() {
    let mut b = Builder::new("k");
    let out = b.tensor("out", DType::F32, &["N"], true);
    let x = b.scalar_param("x", DType::F32);
    let same = b.cast(x, DType::F32, Rounding::Rne);
    let i = b.i32(0);
    b.store(out, &[i], same);
    let mut k = b.finish();
    fold(&mut k);
    assert_eq!(stored_value(&k), x);
    assert_eq!(count(&k, "cast"), 0);
}

#[test]
fn reductions_of_splats() {
    let mut k = storing(DType::I32, |b| {
        let x = b.konst(Scalar::Int(3), t(DType::I32, &[4, 8]));
        let s = b.op(OpKind::Reduce { op: opc_ir::ReduceOp::Sum, axis: 1 }, &[x], t(DType::I32, &[4]));
        b.op(OpKind::Reduce { op: opc_ir::ReduceOp::Max, axis: 0 }, &[s], t(DType::I32, &[]))
    });
    fold(&mut k);
    assert_eq!(const_of(&k, stored_value(&k)), Some(Scalar::Int(24)));
    // A float sum depends on the summation order: left alone.
    let mut k = storing(DType::F32, |b| {
        let x = b.konst(Scalar::Float(0.1), t(DType::F32, &[8]));
        b.op(OpKind::Reduce { op: opc_ir::ReduceOp::Sum, axis: 0 }, &[x], t(DType::F32, &[]))
    });
    fold(&mut k);
    assert_eq!(const_of(&k, stored_value(&k)), None);
}
