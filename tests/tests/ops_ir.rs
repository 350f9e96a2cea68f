//! Every kernel of the operator library: compiles through the pipeline, verifies, prints, parses
//! back to the same IR, and matches its reviewed insta snapshot (re-bless with
//! `INSTA_UPDATE=always` and review the diff).

use opc_dsl::Instance;

fn library_kernels() -> Vec<(String, opc_ir::Kernel)> {
    let mut out = vec![];
    for (file, src) in opc_ops::SOURCES {
        let path = format!("ops/kernels/{file}.opc");
        let names = opc_dsl::check(&path, src).unwrap_or_else(|d| panic!("{d}"));
        for name in names {
            let mut k = opc_dsl::compile_representative(&path, src, &name, &Instance::default()).unwrap_or_else(|d| panic!("{d}"));
            opc_passes::run_pipeline(&mut k, &Default::default()).unwrap_or_else(|e| panic!("{file}/{name}: {e}"));
            out.push((format!("{file}__{name}"), k));
        }
    }
    out
}

#[test]
fn every_operator_ir_round_trips_and_matches_its_snapshot() {
    let kernels = library_kernels();
    assert!(kernels.len() >= 10, "expected the whole library, found {} kernels", kernels.len());
    for (name, k) in kernels {
        let text = opc_ir::printer::print_kernel(&k);
        let back = opc_ir::parser::parse_kernel(&text).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
        assert_eq!(back, k, "{name}: IR does not round-trip through text");
        opc_ir::verify::verify(&back).unwrap();
        insta::assert_snapshot!(name, text);
    }
}
