//! The runner and the public API: names, validation, disabling, dumps, verification.
mod common;
use common::*;
use opc_ir::{DType, Kernel, UnaryOp};
use opc_passes::{pass_names, pipeline_order, registered_passes, run_passes, run_pipeline, PassError, PipelineOptions};

/// A loop with an invariant `exp`, a duplicate of it and a dead op.
fn sample() -> Kernel {
    let mut b = Builder::new("sample");
    let x_t = b.tensor("x", DType::F32, &["N"], false);
    let out = b.tensor("out", DType::F32, &["N"], true);
    let s = b.scalar_param("s", DType::F32);
    let (lo, hi, st) = (b.i32(0), b.i32(4), b.i32(1));
    let r = b.arange(16);
    let zero = b.konst(opc_ir::Scalar::Float(0.0), t(DType::F32, &[16]));
    let res = b.for_loop(lo, hi, st, &[zero], |b, iv, c| {
        let e1 = b.unary(UnaryOp::Exp, s);
        let e2 = b.unary(UnaryOp::Exp, s);
        let _dead = b.mul(e1, e2);
        let x = b.load(x_t, &[iv]);
        let xe = b.mul(x, e1);
        let xe1 = b.expand_dims(xe, 0);
        let xb = b.broadcast(xe1, &[16]);
        vec![b.add(c[0], xb)]
    });
    b.store(out, &[r], res[0]);
    b.finish()
}

#[test]
fn pipeline_order_and_registry() {
    assert_eq!(pipeline_order(), vec!["fold-constants", "simplify-broadcasts", "cse", "licm", "cse", "dce"]);
    assert_eq!(pass_names(), vec!["fold-constants", "simplify-broadcasts", "cse", "licm", "dce"]);
    assert_eq!(registered_passes(), vec!["fold-constants", "simplify-broadcasts", "cse", "licm", "dce"]);
}

#[test]
fn unknown_names_are_rejected_with_the_list() {
    let mut k = sample();
    let opts = PipelineOptions { dump_after: vec!["cse".into(), "nope".into()], ..Default::default() };
    match run_pipeline(&mut k, &opts) {
        Err(PassError::UnknownPass(n, list)) => {
            assert_eq!(n, "nope");
            assert_eq!(list, "fold-constants, simplify-broadcasts, cse, licm, dce");
        }
        other => panic!("{other:?}"),
    }
    let opts = PipelineOptions { disabled: vec!["all".into()], ..Default::default() };
    assert!(matches!(run_pipeline(&mut k, &opts), Err(PassError::UnknownPass(..))));
    assert!(matches!(run_passes(&mut k, &["dce", "licn"], &Default::default()), Err(PassError::UnknownPass(..))));
    assert_eq!(k, sample(), "nothing ran");
}

#[test]
fn pipeline_hoists_merges_and_cleans() {
    let mut k = sample();
    run_pipeline(&mut k, &Default::default()).unwrap();
    check(&k);
    assert_eq!(count(&k, "exp"), 1);
    assert_eq!(count(&k, "mul"), 1, "the dead mul is gone, the live one stays");
    assert_eq!(mnemonics(&first_for(&k).regions[0]), vec!["load", "mul", "expand_dims", "broadcast", "add", "yield"]);
}

#[test]
fn disabled_passes_are_skipped() {
    let mut k = sample();
    let opts = PipelineOptions { disabled: vec!["licm".into(), "dce".into()], ..Default::default() };
    run_pipeline(&mut k, &opts).unwrap();
    assert_eq!(count(&k, "exp"), 1, "cse still ran");
    assert_eq!(mnemonics(&first_for(&k).regions[0])[..2], ["exp", "mul"], "nothing hoisted, dead mul kept");
}

#[test]
fn dumps_are_taken_after_the_named_passes() {
    let mut k = sample();
    let opts = PipelineOptions { dump_after: vec!["cse".into(), "dce".into()], ..Default::default() };
    let dumps = run_pipeline(&mut k, &opts).unwrap();
    let names: Vec<_> = dumps.iter().map(|d| d.pass.as_str()).collect();
    assert_eq!(names, vec!["cse", "cse", "dce"]);
    assert_eq!(dumps[2].ir, opc_ir::printer::print_kernel(&k));

    let mut k = sample();
    let opts = PipelineOptions { dump_after: vec!["all".into()], disabled: vec!["licm".into()] };
    let dumps = run_pipeline(&mut k, &opts).unwrap();
    let names: Vec<_> = dumps.iter().map(|d| d.pass.as_str()).collect();
    assert_eq!(names, vec!["fold-constants", "simplify-broadcasts", "cse", "cse", "dce"]);
}

#[test]
fn run_passes_runs_a_custom_list() {
    let mut k = sample();
    run_passes(&mut k, &["licm"], &Default::default()).unwrap();
    // Both `exp`s are invariant and leave the loop; nothing merged them.
    assert_eq!(count(&k, "exp"), 2);
    assert_eq!(count(&k, "mul"), 2, "the dead mul is invariant too");
    assert_eq!(mnemonics(&first_for(&k).regions[0]), vec!["load", "mul", "expand_dims", "broadcast", "add", "yield"]);
}

#[test]
fn a_broken_input_is_reported_before_any_pass() {
    let mut k = sample();
    // Use a value before its definition: the store reads a value defined nowhere in scope.
    let bogus = k.new_value(t(DType::F32, &[16]));
    let last = k.body.ops.len() - 1;
    let n = k.body.ops[last].args.len();
    k.body.ops[last].args[n - 1] = bogus;
    match run_pipeline(&mut k, &Default::default()) {
        Err(PassError::Verify { pass, .. }) => assert_eq!(pass, "(input)"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn demo_kernel_after_the_pipeline() {
    let mut k = demo_kernel();
    run_pipeline(&mut k, &Default::default()).unwrap();
    check(&k);
    let f = first_for(&k);
    assert_eq!(f.results.len(), 1, "the dead counter is gone");
    assert_eq!(mnemonics(&f.regions[0]), vec!["mul", "expand_dims", "broadcast", "add", "load", "mul", "add", "add", "yield"]);
    assert_eq!(count(&k, "exp"), 1);
    assert_eq!(count(&k, "sqrt"), 0);
}
