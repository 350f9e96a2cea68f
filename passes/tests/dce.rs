//! `dce`: structure after the pass.
mod common;
use common::*;
use opc_ir::{CmpPred, DType, OpKind, UnaryOp};
use opc_passes::{Dce, Pass};

#[test]
fn removes_unused_pure_ops_and_loads() {
    let mut b = Builder::new("k");
    let x_t = b.tensor("x", DType::F32, &["N"], false);
    let out = b.tensor("out", DType::F32, &["N"], true);
    let r = b.arange(16);
    let x = b.load(x_t, &[r]);
    let dead_load = b.load(x_t, &[r]);
    let e = b.unary(UnaryOp::Exp, dead_load);
    let _dead = b.add(e, e);
    let v = b.add(x, x);
    b.store(out, &[r], v);
    let mut k = b.finish();
    assert!(Dce::run(&mut k));
    check(&k);
    assert_eq!(mnemonics(&k.body), vec!["arange", "load", "add", "store"]);
    assert!(!Dce::run(&mut k));
}

#[test]
fn removes_effect_free_loops_and_ifs_with_unused_results() {
    let mut b = Builder::new("k");
    let out = b.tensor("out", DType::I32, &["N"], true);
    let (lo, hi, st) = (b.i32(0), b.i32(4), b.i32(1));
    let z = b.i32(0);
    let sum = b.for_loop(lo, hi, st, &[z], |b, iv, c| vec![b.add(c[0], iv)]);
    let cond = b.cmp(CmpPred::Gt, sum[0], z);
    let _r = b.if_else(cond, &[t(DType::I32, &[])], |b| vec![b.i32(1)], |b| vec![b.i32(2)]);
    // This loop stores: it stays even though it has no results.
    b.for_loop(lo, hi, st, &[], |b, iv, _| {
        b.store(out, &[iv], iv);
        vec![]
    });
    let mut k = b.finish();
    assert!(Dce::run(&mut k));
    check(&k);
    assert_eq!(count(&k, "if"), 0);
    assert_eq!(count(&k, "for"), 1);
    assert_eq!(count(&k, "store"), 1);
    assert_eq!(mnemonics(&k.body), vec!["const", "const", "const", "for"]);
}

#[test]
fn drops_dead_loop_carried_values_with_their_update_chain() {
    let mut b = Builder::new("k");
    let x_t = b.tensor("x", DType::F32, &["N"], false);
    let out = b.tensor("out", DType::F32, &["N"], true);
    let (lo, hi, st) = (b.i32(0), b.i32(4), b.i32(1));
    let r = b.arange(16);
    let zero = b.konst(opc_ir::Scalar::Float(0.0), t(DType::F32, &[16]));
    // acc is stored after the loop; junk is updated every iteration but never read.
    let res = b.for_loop(lo, hi, st, &[zero, zero], |b, _iv, c| {
        let x = b.load(x_t, &[r]);
        let acc = b.add(c[0], x);
        let e = b.unary(UnaryOp::Exp, x);
        let junk = b.mul(c[1], e);
        vec![acc, junk]
    });
    b.store(out, &[r], res[0]);
    let mut k = b.finish();
    assert!(Dce::run(&mut k));
    check(&k);
    let f = first_for(&k);
    assert_eq!(f.results.len(), 1);
    assert_eq!(f.args.len(), 4);
    assert_eq!(f.regions[0].args.len(), 2);
    assert_eq!(mnemonics(&f.regions[0]), vec!["load", "add", "yield"]);
    assert_eq!(count(&k, "exp"), 0);
}

#[test]
fn keeps_what_stores_in_regions_need() {
    let mut b = Builder::new("k");
    let out = b.tensor("out", DType::I32, &["N"], true);
    let pid = b.program_id(0);
    let z = b.i32(0);
    let cond = b.cmp(CmpPred::Gt, pid, z);
    let sq = b.mul(pid, pid);
    let r = b.if_else(
        cond,
        &[t(DType::I32, &[]), t(DType::I32, &[])],
        |b| {
            b.store(out, &[pid], sq);
            let one = b.i32(1);
            vec![one, sq]
        },
        |_| vec![z, z],
    );
    let _ = r;
    let mut k = b.finish();
    assert!(Dce::run(&mut k));
    check(&k);
    // The `if` stays (it stores) but loses both unused results.
    let i = k.body.ops.iter().find(|o| o.kind == OpKind::If).unwrap();
    assert!(i.results.is_empty());
    assert_eq!(mnemonics(&i.regions[0]), vec!["store", "yield"]);
    assert_eq!(count(&k, "mul"), 1);
    assert_eq!(count(&k, "cmp"), 1);
}

#[test]
fn a_kernel_without_stores_becomes_empty() {
    let mut b = Builder::new("k");
    let pid = b.program_id(0);
    let _ = b.mul(pid, pid);
    let mut k = b.finish();
    assert!(Dce::run(&mut k));
    assert!(k.body.ops.is_empty());
    assert_eq!(mnemonics(&k.grid), vec!["const", "yield"], "the grid is kept");
}
