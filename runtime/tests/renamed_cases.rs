//! Hidden fixture variants use other case names and shapes: verification must read everything
//! from each file's `cases` metadata. Rewrite the shared fixtures under new case names (and drop
//! one case) and check they still verify, with the new names in the report.

use opc_runtime::verify_fixtures;
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::Path;

fn rename_file(src: &Path, dst: &Path, keep_first_only: bool) {
    let bytes = std::fs::read(src).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let cases: Vec<serde_json::Value> = serde_json::from_str(&meta.metadata().as_ref().unwrap()["cases"]).unwrap();
    let cases: Vec<serde_json::Value> = if keep_first_only { cases.into_iter().take(1).collect() } else { cases };
    let mut renames = HashMap::new();
    let mut new_cases = vec![];
    for mut c in cases {
        let old = c["name"].as_str().unwrap().to_string();
        let new = format!("renamed_{old}_x");
        c["name"] = serde_json::Value::String(new.clone());
        renames.insert(old, new);
        new_cases.push(c);
    }
    let mut tensors = vec![];
    for (name, view) in st.tensors() {
        let new_name = match name.split_once('.') {
            Some((case, key)) => match renames.get(case) {
                Some(n) => format!("{n}.{key}"),
                None => continue, // a dropped case
            },
            None => name.clone(), // unprefixed (mxfp4)
        };
        tensors.push((new_name, view));
    }
    let meta = Some(HashMap::from([("cases".to_string(), serde_json::to_string(&new_cases).unwrap())]));
    std::fs::write(dst, safetensors::serialize(tensors, &meta).unwrap()).unwrap();
}

#[test]
fn renamed_cases_verify() {
    let shared = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/ops"));
    if !shared.is_dir() {
        println!("skipping: {} not found", shared.display());
        return;
    }
    let root = std::env::temp_dir().join(format!("opc-renamed-fixtures-{}", std::process::id()));
    std::fs::create_dir_all(root.join("ops")).unwrap();
    rename_file(&shared.join("kron_quant.safetensors"), &root.join("ops/kron_quant.safetensors"), true);
    rename_file(&shared.join("moe.safetensors"), &root.join("ops/moe.safetensors"), false);
    rename_file(&shared.join("mxfp4.safetensors"), &root.join("ops/mxfp4.safetensors"), false);
    std::fs::write(root.join("ops/other.safetensors"), b"not checked").unwrap();

    let ops = opc_ops::Ops::new(opc_codegen::target_by_name("interp").unwrap());
    let mut out = Vec::new();
    let sum = verify_fixtures(&root, &ops, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    println!("{text}");
    // kron_quant: 1 case × 2 kernels, moe: 2 cases × 1, mxfp4: 1 case × 4
    assert_eq!((sum.passed, sum.failed), (8, 0), "{text}");
    assert!(text.contains("kron_quant/renamed_"), "{text}");
    assert!(text.contains("moe/renamed_"), "{text}");
    assert!(text.contains("other.safetensors: skipped (no operator registered)"), "{text}");
    assert_eq!(text.lines().last(), Some("8 passed, 0 failed"));
}
