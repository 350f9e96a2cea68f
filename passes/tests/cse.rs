//! `cse`: structure after the pass.
mod common;
use common::*;
use opc_ir::{DType, OpKind, Scalar, UnaryOp};
use opc_passes::{Cse, Pass};

#[test]
fn merges_duplicates_in_one_block() {
    let mut b = Builder::new("k");
    let x_t = b.tensor("x", DType::F32, &["N"], false);
    let out = b.tensor("out", DType::F32, &["N"], true);
    let r = b.arange(16);
    let x = b.load(x_t, &[r]);
    let e1 = b.unary(UnaryOp::Exp, x);
    let e2 = b.unary(UnaryOp::Exp, x);
    let s1 = b.add(e1, e2);
    let s2 = b.add(e1, e2);
    let pid = b.program_id(0);
    for c in [0.0, -0.0, 0.0] {
        // 0.0 twice merges; -0.0 has other bits and stays apart.
        let c = b.f32(c);
        b.store(out, &[pid], c);
    }
    let total = b.add(s1, s2);
    b.store(out, &[r], total);
    let mut k = b.finish();
    assert!(Cse::run(&mut k));
    check(&k);
    assert_eq!(count(&k, "exp"), 1);
    assert_eq!(count(&k, "add"), 2, "the two identical adds merge once their operands do");
    let add = def(&k, stores(&k)[3].args[1]).unwrap();
    assert_eq!(add.args, vec![s1, s1]);
    assert_eq!(def(&k, s1).unwrap().args, vec![e1, e1]);
    let consts: Vec<Scalar> = k.body.ops.iter().filter_map(|o| match o.kind {
        OpKind::Const(s) if k.ty(o.results[0]).dtype == DType::F32 => Some(s),
        _ => None,
    }).collect();
    assert_eq!(consts.len(), 2);
}

#[test]
fn different_result_types_do_not_merge() {
    let mut b = Builder::new("k");
    let out = b.tensor("out", DType::I32, &["N"], true);
    let a = b.konst(Scalar::Int(1), t(DType::I32, &[]));
    let c = b.konst(Scalar::Int(1), t(DType::I32, &[8]));
    let r = b.arange(8);
    let s = b.add(r, c);
    b.store(out, &[a], a);
    b.store(out, &[r], s);
    let mut k = b.finish();
    assert!(!Cse::run(&mut k));
}

#[test]
fn loads_merge_only_from_read_only_tensors() {
    let mut b = Builder::new("k");
    let x_t = b.tensor("x", DType::F32, &["N"], false);
    let y_t = b.tensor("y", DType::F32, &["N"], true);
    let r = b.arange(16);
    let x1 = b.load(x_t, &[r]);
    let y1 = b.load(y_t, &[r]);
    let s = b.add(x1, y1);
    b.store(y_t, &[r], s);
    let x2 = b.load(x_t, &[r]);
    let y2 = b.load(y_t, &[r]); // may differ from y1: the store above wrote y
    let s2 = b.add(x2, y2);
    b.store(y_t, &[r], s2);
    let mut k = b.finish();
    Cse::run(&mut k);
    check(&k);
    assert_eq!(count(&k, "load"), 3);
    let last = def(&k, stored_values(&k)[1]).unwrap();
    assert_eq!(last.args, vec![x1, y2]);
}

fn stored_values(k: &opc_ir::Kernel) -> Vec<opc_ir::ValueId> {
    stores(k).iter().map(|s| s.args[1]).collect()
}

#[test]
fn scopes_follow_regions() {
    let mut b = Builder::new("k");
    let out = b.tensor("out", DType::I32, &["N"], true);
    let pid = b.program_id(0);
    let (lo, hi, st) = (b.i32(0), b.i32(4), b.i32(1));
    let outer = b.mul(pid, pid);
    // Inside the loop: `mul pid, pid` reuses the outer one; `add iv, iv` appears in both loops.
    b.for_loop(lo, hi, st, &[], |b, iv, _| {
        let m = b.mul(pid, pid);
        let a = b.add(iv, m);
        b.store(out, &[iv], a);
        vec![]
    });
    b.for_loop(lo, hi, st, &[], |b, iv, _| {
        let a = b.add(iv, outer);
        b.store(out, &[iv], a);
        vec![]
    });
    // After the loops: an `add` equal to one inside a loop must not reuse it.
    let c = b.add(pid, outer);
    b.store(out, &[pid], c);
    let mut k = b.finish();
    assert!(Cse::run(&mut k));
    check(&k);
    assert_eq!(count(&k, "mul"), 1);
    assert_eq!(count(&k, "add"), 3);
    let loops: Vec<_> = k.body.ops.iter().filter(|o| o.kind == OpKind::For).collect();
    assert_eq!(mnemonics(&loops[0].regions[0]), vec!["add", "store", "yield"]);
    assert_eq!(loops[0].regions[0].ops[0].args[1], outer);
}

#[test]
fn sibling_branches_do_not_share() {
    let mut b = Builder::new("k");
    let out = b.tensor("out", DType::I32, &["N"], true);
    let pid = b.program_id(0);
    let z = b.i32(0);
    let c = b.cmp(opc_ir::CmpPred::Gt, pid, z);
    let ty = t(DType::I32, &[]);
    let r = b.if_else(c, &[ty], |b| vec![b.mul(pid, pid)], |b| vec![b.mul(pid, pid)]);
    b.store(out, &[pid], r[0]);
    let mut k = b.finish();
    assert!(!Cse::run(&mut k));
    assert_eq!(count(&k, "mul"), 2);
}
