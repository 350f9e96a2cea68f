//! Rendering every operator-library kernel for `ascendc` (no compiler needed): the emitted API
//! surface, the manifest, and which kernels the backend does not cover yet.

#[path = "ascendc_common.rs"]
mod common;

use opc_codegen::artifact::{renderer_by_name, RenderOptions};
use opc_dsl::Instance;
use opc_ir::DType;

/// Kernels the AscendC backend rejects today, with the reason's key phrase. Everything else in
/// the library must render (and pass every static check).
const NOT_YET: &[(&str, &str)] = &[
    // pow / sin / cos: no basic-API vector instruction (the advanced math library is not used).
    ("blocks::rope", "`pow`"),
];

fn library() -> Vec<(String, opc_ir::Kernel)> {
    let mut out = vec![];
    for (file, src) in opc_ops::SOURCES {
        let names = opc_dsl::check(file, src).unwrap_or_else(|d| panic!("{d}"));
        for n in names {
            let mut k = opc_dsl::compile_representative(file, src, &n, &Instance::default()).unwrap_or_else(|d| panic!("{d}"));
            opc_passes::run_pipeline(&mut k, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
            out.push((format!("{file}::{n}"), k));
        }
    }
    out
}

#[test]
fn every_library_kernel_renders_or_is_listed() {
    let r = renderer_by_name("ascendc").expect("ascendc renderer");
    let mut failures = vec![];
    let mut ok = 0;
    for (name, k) in library() {
        match r.render(&k, &RenderOptions::default()) {
            Ok(a) => {
                ok += 1;
                assert_eq!(a.files.len(), 3, "{name}");
                let m = &a.manifest["ascendc"];
                assert!(m["bytes"]["ub"].as_u64().unwrap_or(u64::MAX) <= 192 * 1024, "{name}");
                assert!(NOT_YET.iter().all(|(n, _)| *n != name), "{name} renders now: remove it from NOT_YET");
            }
            Err(e) => {
                let e = e.to_string();
                match NOT_YET.iter().find(|(n, _)| *n == name) {
                    Some((_, why)) => assert!(e.contains(why), "{name}: {e}"),
                    None => failures.push(format!("{name}: {e}")),
                }
            }
        }
    }
    assert!(failures.is_empty(), "{ok} kernels render; these do not:\n{}", failures.join("\n"));
}

/// The emitted code uses only names listed in `API_SURFACE` (AscendC calls, types, enums), and
/// the CPU model defines every one of them.
#[test]
fn emitted_api_surface_is_listed_and_modelled() {
    let surface = opc_codegen::ascendc::API_SURFACE;
    // Both the type (`TQue`) and the member (`AllocTensor`) of `TQue::AllocTensor`.
    let short: Vec<&str> = surface
        .iter()
        .flat_map(|s| {
            let s = s.split('(').next().unwrap_or(s);
            [s.split("::").next().unwrap_or(s), s.rsplit("::").next().unwrap_or(s)]
        })
        .collect();
    let model = opc_codegen::ascendc::MODEL_KERNEL_OPERATOR_H.to_string() + opc_codegen::ascendc::MODEL_TIKICPULIB_H;
    for s in surface {
        // `TQue::AllocTensor` → `AllocTensor`, `RoundMode::CAST_RINT` → `CAST_RINT`.
        let leaf = s.split('(').next().unwrap_or(s).rsplit("::").next().unwrap_or(s);
        assert!(model.contains(leaf), "the CPU model does not define `{s}`");
    }
    let k = common::kernel("flash_attention", "flash_attention", &Instance::default().dtype("T", DType::F16).konst("D", 64));
    let c = opc_codegen::ascendc::compile(&k).expect("compile");
    // Every identifier followed by `(` or `<` that starts with a capital letter and is not
    // opc's own (Opc*, Kernel*, Scalar*, Launch*, the tiling names) must be in the surface.
    let text = format!("{}\n{}", c.sources.kernel_cpp, c.sources.launch_cpp);
    let mut unknown = std::collections::BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_uppercase() && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_')) {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            let id = &text[start..i];
            let next = bytes.get(i).copied().unwrap_or(b' ');
            let own = ["Opc", "Kernel", "Scalar", "Launch", "FlashAttention", "CopyTiling", "Process", "Init", "Program", "CubeProgram", "PeerProgram"]
                .iter()
                .any(|p| id.starts_with(p));
            if (next == b'(' || next == b'<') && !own && !short.contains(&id) {
                unknown.insert(id.to_string());
            }
        } else {
            i += 1;
        }
    }
    assert!(unknown.is_empty(), "emitted but not in API_SURFACE: {unknown:?}");
}
