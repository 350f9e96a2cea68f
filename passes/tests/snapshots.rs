//! Printed tile IR before and after each pass on the demo kernel (insta snapshots in
//! `tests/snapshots/`; re-bless with `INSTA_UPDATE=always` and review the diff).
mod common;
use common::*;
use opc_ir::printer::print_kernel;
use opc_passes::{run_passes, run_pipeline, PipelineOptions};

/// `names` run in order on the demo kernel; the snapshot shows the IR before and after.
fn before_after(names: &[&str]) -> String {
    let mut k = demo_kernel();
    let before = print_kernel(&k);
    run_passes(&mut k, names, &PipelineOptions::default()).unwrap();
    format!("{before}\n==== after {} ====\n{}", names.join(", "), print_kernel(&k))
}

#[test]
fn fold_constants() {
    insta::assert_snapshot!(before_after(&["fold-constants"]));
}

#[test]
fn simplify_broadcasts() {
    insta::assert_snapshot!(before_after(&["simplify-broadcasts"]));
}

#[test]
fn cse() {
    insta::assert_snapshot!(before_after(&["cse"]));
}

#[test]
fn licm() {
    insta::assert_snapshot!(before_after(&["licm"]));
}

#[test]
fn dce() {
    insta::assert_snapshot!(before_after(&["dce"]));
}

/// Every stage of the default pipeline, as `--dump-after all` shows it.
#[test]
fn pipeline_stages() {
    let mut k = demo_kernel();
    let opts = PipelineOptions { dump_after: vec!["all".into()], ..Default::default() };
    let mut text = format!("==== input ====\n{}", print_kernel(&k));
    for d in run_pipeline(&mut k, &opts).unwrap() {
        text += &format!("\n==== after {} ====\n{}", d.pass, d.ir);
    }
    insta::assert_snapshot!(text);
}

/// Every stage's dump parses back to the same kernel (`--from kernel.tir.opt` can resume there).
#[test]
fn dumps_parse_back() {
    let mut k = demo_kernel();
    let opts = PipelineOptions { dump_after: vec!["all".into()], ..Default::default() };
    let dumps = run_pipeline(&mut k, &opts).unwrap();
    for d in &dumps {
        let parsed = opc_ir::parser::parse_kernel(&d.ir).unwrap_or_else(|e| panic!("after {}: {e}", d.pass));
        assert_eq!(print_kernel(&parsed), d.ir, "after {}", d.pass);
    }
    assert_eq!(opc_ir::parser::parse_kernel(&dumps.last().unwrap().ir).unwrap(), k);
}
