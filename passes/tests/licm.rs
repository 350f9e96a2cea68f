//! `licm`: structure after the pass.
mod common;
use common::*;
use opc_ir::{DType, OpKind, UnaryOp};
use opc_passes::{Licm, Pass};

#[test]
fn hoists_invariant_pure_ops_before_the_loop() {
    let mut b = Builder::new("k");
    let out = b.tensor("out", DType::F32, &["N"], true);
    let s = b.scalar_param("s", DType::F32);
    let (lo, hi, st) = (b.i32(0), b.i32(4), b.i32(1));
    let r = b.arange(16);
    let zero = b.konst(opc_ir::Scalar::Float(0.0), t(DType::F32, &[16]));
    let res = b.for_loop(lo, hi, st, &[zero], |b, iv, c| {
        let e = b.unary(UnaryOp::Exp, s); // invariant
        let e1 = b.expand_dims(e, 0); // invariant (depends on e)
        let ivf = b.cast(iv, DType::F32, opc_ir::Rounding::Rne); // variant
        let ivf1 = b.expand_dims(ivf, 0);
        let m = b.mul(ivf1, e1);
        let mb = b.broadcast(m, &[16]);
        vec![b.add(c[0], mb)]
    });
    b.store(out, &[r], res[0]);
    let mut k = b.finish();
    assert!(Licm::run(&mut k));
    check(&k);
    assert_eq!(mnemonics(&k.body), vec!["param", "const", "const", "const", "arange", "const", "exp", "expand_dims", "for", "store"]);
    assert_eq!(mnemonics(&first_for(&k).regions[0]), vec!["cast", "expand_dims", "mul", "broadcast", "add", "yield"]);
    assert!(!Licm::run(&mut k));
}

#[test]
fn hoists_loads_only_from_read_only_inputs() {
    let mut b = Builder::new("k");
    let x_t = b.tensor("x", DType::F32, &["N"], false);
    let y_t = b.tensor("y", DType::F32, &["N"], true);
    let (lo, hi, st) = (b.i32(0), b.i32(4), b.i32(1));
    let r = b.arange(16);
    b.for_loop(lo, hi, st, &[], |b, _iv, _| {
        let x = b.load(x_t, &[r]); // input, never stored: invariant
        let y = b.load(y_t, &[r]); // the loop stores y: stays
        let s = b.add(x, y);
        b.store(y_t, &[r], s);
        vec![]
    });
    let mut k = b.finish();
    assert!(Licm::run(&mut k));
    check(&k);
    let f = first_for(&k);
    assert_eq!(mnemonics(&f.regions[0]), vec!["load", "add", "store", "yield"]);
    assert!(matches!(f.regions[0].ops[0].kind, OpKind::Load { tensor, .. } if tensor == y_t));
    let pos = k.body.ops.iter().position(|o| o.kind == OpKind::For).unwrap();
    assert!(matches!(k.body.ops[pos - 1].kind, OpKind::Load { tensor, .. } if tensor == x_t));
}

#[test]
fn hoists_out_of_nested_loops_step_by_step() {
    let mut b = Builder::new("k");
    let out = b.tensor("out", DType::I32, &["N"], true);
    let pid = b.program_id(0);
    let (lo, hi, st) = (b.i32(0), b.i32(4), b.i32(1));
    b.for_loop(lo, hi, st, &[], |b, i, _| {
        b.for_loop(lo, hi, st, &[], |b, j, _| {
            let p2 = b.mul(pid, pid); // invariant in both loops
            let pi = b.add(p2, i); // invariant in the inner loop only
            let v = b.add(pi, j);
            b.store(out, &[v], v);
            vec![]
        });
        vec![]
    });
    let mut k = b.finish();
    assert!(Licm::run(&mut k));
    check(&k);
    let outer = first_for(&k);
    let pos = k.body.ops.iter().position(|o| o.kind == OpKind::For).unwrap();
    assert_eq!(k.body.ops[pos - 1].kind.mnemonic(), "mul");
    assert_eq!(mnemonics(&outer.regions[0]), vec!["add", "for", "yield"]);
    assert_eq!(mnemonics(&outer.regions[0].ops[1].regions[0]), vec!["add", "store", "yield"]);
}

#[test]
fn leaves_ops_inside_ifs_and_dependent_ops() {
    let mut b = Builder::new("k");
    let out = b.tensor("out", DType::I32, &["N"], true);
    let pid = b.program_id(0);
    let (lo, hi, st) = (b.i32(0), b.i32(4), b.i32(1));
    let z = b.i32(0);
    let res = b.for_loop(lo, hi, st, &[z], |b, iv, c| {
        let cond = b.cmp(opc_ir::CmpPred::Gt, pid, z); // invariant: hoisted
        let r = b.if_else(cond, &[t(DType::I32, &[])], |b| vec![b.mul(pid, pid)], |_| vec![iv]);
        vec![b.add(c[0], r[0])]
    });
    b.store(out, &[pid], res[0]);
    let mut k = b.finish();
    assert!(Licm::run(&mut k));
    check(&k);
    let f = first_for(&k);
    assert_eq!(mnemonics(&f.regions[0]), vec!["if", "add", "yield"]);
    assert_eq!(count(&k, "mul"), 1);
    assert_eq!(mnemonics(&f.regions[0].ops[0].regions[0]), vec!["mul", "yield"]);
}
