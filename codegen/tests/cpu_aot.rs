//! Ahead-of-time artifacts of the `cpu` target (`opc build --target cpu -o DIR`): the shared
//! library is loaded with `dlopen` (no compiler involved in running it), launched through its
//! C-ABI entry point and compared bit for bit with the interpreter; a C program compiled with
//! `cc` against the emitted header runs it too; launch errors come back as codes and messages.

#[path = "jit_common.rs"]
mod common;

use std::path::{Path, PathBuf};

use common::{kernel, Rng};
use opc_dsl::Instance;
use opc_ir::{Arg, DType, Kernel, Tensor};

const BLOCKS: &str = include_str!("../../ops/kernels/blocks.opc");
const ATTENTION: &str = include_str!("../../ops/kernels/flash_attention.opc");
const MXFP4: &str = include_str!("../../ops/kernels/mxfp4.opc");

/// `opc_scalar` of the header.
#[repr(C)]
#[derive(Clone, Copy)]
union Scalar {
    f32: f32,
    i32: i32,
    b: i32,
}

type Launch = unsafe extern "C" fn(*const *mut u8, *const i64, *const Scalar) -> i32;
type LastError = unsafe extern "C" fn() -> *const std::os::raw::c_char;

/// Render `k` for `cpu` into a fresh directory; returns it and the manifest.
fn build(k: &Kernel, tag: &str) -> (PathBuf, serde_json::Value) {
    let art = opc_codegen::artifact::renderer_by_name("cpu").unwrap().render(k, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
    let dir = std::env::temp_dir().join(format!("opc-cpu-aot-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in &art.files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    std::fs::write(dir.join("manifest.json"), serde_json::to_string_pretty(&art.manifest).unwrap()).unwrap();
    (dir, art.manifest)
}

/// A loaded artifact.
struct Lib {
    lib: libloading::Library,
    sym: String,
}

impl Lib {
    fn open(dir: &Path, m: &serde_json::Value) -> Lib {
        let path = dir.join(m["library"].as_str().unwrap());
        // SAFETY: the library's initializers are the C runtime's (none of ours).
        let lib = unsafe { libloading::Library::new(&path) }.unwrap_or_else(|e| panic!("dlopen {}: {e}", path.display()));
        Lib { lib, sym: m["kernel"].as_str().unwrap().to_string() }
    }

    /// Launch with `args` in parameter order through the C ABI; outputs are written into `args`.
    fn launch(&self, args: &mut [Arg]) -> Result<(), (i32, String)> {
        let mut tensors = vec![];
        let mut shapes = vec![];
        let mut scalars = vec![];
        for a in args.iter_mut() {
            match a {
                Arg::Tensor(t) => {
                    tensors.push(t.data.as_mut_ptr());
                    shapes.extend(t.shape.iter().map(|&d| d as i64));
                }
                Arg::F32(x) => scalars.push(Scalar { f32: *x }),
                Arg::I32(x) => scalars.push(Scalar { i32: *x }),
                Arg::Bool(b) => scalars.push(Scalar { b: *b as i32 }),
            }
        }
        // SAFETY: the symbols have the signatures the header declares; the pointers address
        // buffers of the sizes the shapes imply (the tensors' own data).
        unsafe {
            let launch: libloading::Symbol<Launch> = self.lib.get(format!("opc_{}_launch", self.sym).as_bytes()).unwrap();
            let rc = launch(tensors.as_ptr(), shapes.as_ptr(), scalars.as_ptr());
            if rc == 0 {
                return Ok(());
            }
            let err: libloading::Symbol<LastError> = self.lib.get(format!("opc_{}_last_error", self.sym).as_bytes()).unwrap();
            Err((rc, std::ffi::CStr::from_ptr(err()).to_string_lossy().into_owned()))
        }
    }
}

/// Interpreter outputs vs the artifact's, bit for bit (any NaN matches any NaN).
fn same_as_interp(k: &Kernel, lib: &Lib, args: &[Arg]) {
    let mut want = args.to_vec();
    opc_codegen::target_by_name("interp").unwrap().compile(k).unwrap().launch(&mut want).unwrap();
    let mut got = args.to_vec();
    lib.launch(&mut got).unwrap_or_else(|(rc, m)| panic!("launch returned {rc}: {m}"));
    for (p, (x, y)) in want.iter().zip(&got).enumerate() {
        if let (Arg::Tensor(x), Arg::Tensor(y)) = (x, y) {
            let nan = |t: &Tensor, i: usize| t.dtype.is_float() && t.get_f64(i).is_nan();
            let bad = (0..x.numel()).filter(|&i| x.get_raw(i) != y.get_raw(i) && !(nan(x, i) && nan(y, i))).count();
            assert_eq!(bad, 0, "`{}` argument #{p}: {bad} of {} elements differ", k.name, x.numel());
        }
    }
}

fn matmul(d: DType) -> Kernel {
    kernel(BLOCKS, "matmul", &Instance::default().dtype("T", d).tunable("BM", 16).tunable("BN", 16).tunable("BK", 8))
}

fn matmul_args(r: &mut Rng, d: DType, m: usize, k: usize, n: usize) -> Vec<Arg> {
    vec![
        Arg::Tensor(r.tensor_f(d, &[m, k], false)),
        Arg::Tensor(r.tensor_f(d, &[k, n], false)),
        Arg::Tensor(r.tensor_f(DType::F32, &[n], false)),
        Arg::Tensor(Tensor::zeros(d, &[m, n])),
        Arg::Bool(true),
    ]
}

#[test]
fn matmul_artifact_matches_the_interpreter() {
    for d in [DType::F32, DType::BF16, DType::F16] {
        let k = matmul(d);
        let (dir, m) = build(&k, &format!("matmul-{d}"));
        for f in ["libmatmul.so", "matmul.h", "matmul.o", "matmul_launch.c", "opc_rt.c", "manifest.json"] {
            assert!(dir.join(f).is_file(), "{f} missing");
        }
        let lib = Lib::open(&dir, &m);
        let mut r = Rng(42);
        for (mm, kk, nn) in [(37, 50, 29), (1, 7, 1), (16, 8, 16), (0, 5, 3)] {
            same_as_interp(&k, &lib, &matmul_args(&mut r, d, mm, kk, nn));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn manifest_describes_the_library() {
    let k = matmul(DType::F32);
    let (dir, m) = build(&k, "manifest");
    assert_eq!(m["target"], "cpu");
    assert_eq!(m["library"], "libmatmul.so");
    assert_eq!(m["header"], "matmul.h");
    assert!(m["entry_points"]["launch"].as_str().unwrap().starts_with("int opc_matmul_launch(void *const *tensors"));
    let t: Vec<&str> = m["launch_abi"]["tensors"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(t, ["a", "b", "bias", "c"]);
    assert_eq!(m["launch_abi"]["scalars"][0]["name"], "has_bias");
    assert_eq!(m["launch_abi"]["scalars"][0]["field"], "b");
    let tun: Vec<(String, i64)> =
        m["tunables"].as_array().unwrap().iter().map(|t| (t["name"].as_str().unwrap().to_string(), t["value"].as_i64().unwrap())).collect();
    assert_eq!(tun, [("BM".to_string(), 16), ("BN".into(), 16), ("BK".into(), 8)]);
    assert!(m["launch_geometry"]["arena_bytes"].as_u64().unwrap() > 0);
    let h = std::fs::read_to_string(dir.join("matmul.h")).unwrap();
    assert!(h.contains("int opc_matmul_launch(void *const *tensors, const int64_t *shapes, const opc_scalar *scalars);"), "{h}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn launch_errors_are_codes_and_messages() {
    let k = matmul(DType::F32);
    let (dir, m) = build(&k, "errors");
    let lib = Lib::open(&dir, &m);
    let mut r = Rng(1);
    let mut args = matmul_args(&mut r, DType::F32, 4, 6, 5);
    args[1] = Arg::Tensor(r.tensor_f(DType::F32, &[7, 5], false)); // K mismatch
    let (rc, msg) = lib.launch(&mut args).unwrap_err();
    assert_eq!(rc, 1, "{msg}");
    assert!(msg.contains("argument `b`: dim 0 is 7 but `K` is 6"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn flash_attention_artifact_matches_the_interpreter() {
    // Scalars of every kind (f32 scale, bool flags, i32 window), a 3-D grid, a const dim.
    let d = DType::BF16;
    let k = kernel(ATTENTION, "flash_attention", &Instance::default().dtype("T", d).konst("D", 16).tunable("BM", 16).tunable("BN", 16));
    let (dir, m) = build(&k, "attention");
    let lib = Lib::open(&dir, &m);
    let mut r = Rng(3);
    for (sq, sk, causal, window) in [(20, 33, true, None), (7, 7, false, Some(3)), (1, 40, true, Some(9))] {
        let args = vec![
            Arg::Tensor(r.tensor_f(d, &[2, 4, sq, 16], false)),
            Arg::Tensor(r.tensor_f(d, &[2, 2, sk, 16], false)),
            Arg::Tensor(r.tensor_f(d, &[2, 2, sk, 16], false)),
            Arg::Tensor(r.tensor_f(DType::F32, &[4], false)),
            Arg::Tensor(Tensor::zeros(d, &[2, 4, sq, 16])),
            Arg::Tensor(Tensor::zeros(DType::F32, &[2, 4, sq])),
            Arg::F32(0.25),
            Arg::Bool(causal),
            Arg::Bool(window.is_some()),
            Arg::I32(window.unwrap_or(0)),
            Arg::Bool(true),
        ];
        same_as_interp(&k, &lib, &args);
    }
    // A constraint violation (HQ % HKV) and a specialized-dim mismatch.
    let mut bad = vec![
        Arg::Tensor(Tensor::zeros(d, &[1, 3, 4, 16])),
        Arg::Tensor(Tensor::zeros(d, &[1, 2, 4, 16])),
        Arg::Tensor(Tensor::zeros(d, &[1, 2, 4, 16])),
        Arg::Tensor(Tensor::zeros(DType::F32, &[3])),
        Arg::Tensor(Tensor::zeros(d, &[1, 3, 4, 16])),
        Arg::Tensor(Tensor::zeros(DType::F32, &[1, 3, 4])),
        Arg::F32(1.0),
        Arg::Bool(false),
        Arg::Bool(false),
        Arg::I32(0),
        Arg::Bool(false),
    ];
    let (rc, msg) = lib.launch(&mut bad).unwrap_err();
    assert_eq!(rc, 2, "{msg}");
    assert!(msg.contains("HQ % HKV == 0"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rmsnorm_and_packed_mxfp4_gemv_artifacts_match_the_interpreter() {
    let mut r = Rng(9);
    let k = kernel(BLOCKS, "rmsnorm", &Instance::default().dtype("T", DType::F16).dtype("O", DType::F16).tunable("BT", 2).tunable("BH", 16));
    let (dir, m) = build(&k, "rmsnorm");
    let lib = Lib::open(&dir, &m);
    let args = vec![
        Arg::Tensor(r.tensor_f(DType::F16, &[5, 37], false)),
        Arg::Tensor(r.tensor_f(DType::F16, &[37], false)),
        Arg::Tensor(Tensor::zeros(DType::F16, &[5, 37])),
        Arg::F32(1e-5),
    ];
    same_as_interp(&k, &lib, &args);
    let _ = std::fs::remove_dir_all(&dir);

    // Packed e2m1 codes and e8m0 scales: the dequantizing GEMV reads 4-bit data.
    let k = kernel(MXFP4, "mxfp4_gemv", &Instance::default().dtype("T", DType::F32));
    let (dir, m) = build(&k, "gemv");
    let lib = Lib::open(&dir, &m);
    let (n, kk) = (13, 96);
    let args: Vec<Arg> = k
        .params
        .iter()
        .map(|p| match &p.kind {
            opc_ir::ParamKind::Tensor { dtype, dims, output } => {
                let shape: Vec<usize> = dims
                    .iter()
                    .map(|e| e.eval(&|s| Some(match k.dims[s.0 as usize].name.as_str() { "N" => n, "K" => kk, "M" => 1, other => panic!("dim {other}") })).unwrap() as usize)
                    .collect();
                match (dtype, output) {
                    (_, true) => Arg::Tensor(Tensor::zeros(*dtype, &shape)),
                    (DType::E8M0, _) => Arg::Tensor(r.tensor_i(*dtype, &shape, 120, 130)),
                    (DType::E2M1, _) => Arg::Tensor(r.tensor_raw(*dtype, &shape)),
                    _ => Arg::Tensor(r.tensor_f(*dtype, &shape, false)),
                }
            }
            opc_ir::ParamKind::Scalar { .. } => panic!("mxfp4_gemv takes no scalars"),
        })
        .collect();
    same_as_interp(&k, &lib, &args);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_c_program_runs_the_library_through_the_header() {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let k = matmul(DType::F32);
    let (dir, _) = build(&k, "cprog");
    let (mm, kk, nn) = (5usize, 7usize, 3usize);
    let main = format!(
        r#"#include <stdio.h>
#include "matmul.h"
int main(void) {{
    float a[{mm} * {kk}], b[{kk} * {nn}], bias[{nn}], c[{mm} * {nn}];
    for (int i = 0; i < {mm} * {kk}; i++) a[i] = (float)(i % 5) * 0.5f - 1.0f;
    for (int i = 0; i < {kk} * {nn}; i++) b[i] = (float)(i % 3) * 0.25f + 0.125f;
    for (int i = 0; i < {nn}; i++) bias[i] = (float)i;
    void *tensors[4] = {{ a, b, bias, c }};
    int64_t shapes[7] = {{ {mm}, {kk}, {kk}, {nn}, {nn}, {mm}, {nn} }};
    opc_scalar scalars[1] = {{ {{ .b = 1 }} }};
    int rc = opc_matmul_launch(tensors, shapes, scalars);
    if (rc != 0) {{ fprintf(stderr, "rc %d: %s\n", rc, opc_matmul_last_error()); return 1; }}
    for (int i = 0; i < {mm} * {nn}; i++) printf("%a\n", c[i]);
    shapes[2] = 6; /* b's K disagrees with a's */
    rc = opc_matmul_launch(tensors, shapes, scalars);
    printf("rc %d %s\n", rc, opc_matmul_last_error());
    return 0;
}}
"#
    );
    std::fs::write(dir.join("main.c"), main).unwrap();
    let out = std::process::Command::new(&cc)
        .current_dir(&dir)
        .args(["-O1", "-o", "main", "main.c", "-I.", "-L.", "-lmatmul", "-Wl,-rpath,$ORIGIN"])
        .output()
        .unwrap();
    assert!(out.status.success(), "cc: {}", String::from_utf8_lossy(&out.stderr));
    let run = std::process::Command::new(dir.join("main")).output().unwrap();
    assert!(run.status.success(), "main: {}", String::from_utf8_lossy(&run.stderr));
    let text = String::from_utf8(run.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();

    let a: Vec<f32> = (0..mm * kk).map(|i| (i % 5) as f32 * 0.5 - 1.0).collect();
    let b: Vec<f32> = (0..kk * nn).map(|i| (i % 3) as f32 * 0.25 + 0.125).collect();
    let bias: Vec<f32> = (0..nn).map(|i| i as f32).collect();
    let mut args = vec![
        Arg::Tensor(Tensor::from_f32(DType::F32, &[mm, kk], &a)),
        Arg::Tensor(Tensor::from_f32(DType::F32, &[kk, nn], &b)),
        Arg::Tensor(Tensor::from_f32(DType::F32, &[nn], &bias)),
        Arg::Tensor(Tensor::zeros(DType::F32, &[mm, nn])),
        Arg::Bool(true),
    ];
    opc_codegen::target_by_name("interp").unwrap().compile(&k).unwrap().launch(&mut args).unwrap();
    let Arg::Tensor(c) = &args[3] else { unreachable!() };
    let want = c.to_f32_vec();
    assert_eq!(lines.len(), mm * nn + 1, "{text}");
    for (i, w) in want.iter().enumerate() {
        let got = parse_hex_float(lines[i]).unwrap_or_else(|| panic!("bad line {:?}", lines[i]));
        assert_eq!(got.to_bits(), w.to_bits(), "c[{i}]: C program {} vs interpreter {w}", lines[i]);
    }
    assert!(lines[mm * nn].starts_with("rc 1 kernel `matmul`: argument `b`: dim 0 is 6 but `K` is 7"), "{}", lines[mm * nn]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Parse C's `%a` output of a float (`0x1.8p+1`, `-0x0p+0`).
fn parse_hex_float(s: &str) -> Option<f32> {
    let (neg, s) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
    let s = s.strip_prefix("0x")?;
    let (mant, exp) = s.split_once('p')?;
    let exp: i32 = exp.parse().ok()?;
    let (int, frac) = mant.split_once('.').unwrap_or((mant, ""));
    let mut v = u64::from_str_radix(int, 16).ok()? as f64;
    for (i, ch) in frac.chars().enumerate() {
        v += ch.to_digit(16)? as f64 / 16f64.powi(i as i32 + 1);
    }
    let v = (v * 2f64.powi(exp)) as f32;
    Some(if neg { -v } else { v })
}

#[test]
fn kernels_needing_the_rust_only_helpers_are_refused_clearly() {
    // mxfp4_quantize encodes e2m1 / e8m0 through the `opc_cast` helper (no C twin yet).
    let k = kernel(MXFP4, "mxfp4_quantize", &Instance::default());
    let Err(e) = opc_codegen::artifact::renderer_by_name("cpu").unwrap().render(&k, &Default::default()) else { panic!("rendered") };
    assert!(e.to_string().contains("calls the runtime helper `opc_cast`, which has no C twin yet"), "{e}");
}

#[test]
fn every_mxfp4_code_decodes_as_in_the_interpreter() {
    // The cpu lowering decodes e2m1 / e8m0 inline (no runtime helper): all 16 and 256 codes,
    // to every float dtype, in process and in the artifact.
    const SRC: &str = "kernel decode(c: e2m1[N], s: e8m0[N], a: out f32[N], b: out bf16[N], h: out f16[N], e: out f32[N], f: out bf16[N])
tunables { B: level1 in {64} = 64 }
grid(cdiv(N, B))
{
    let i = program_id(0) * B + arange(B);
    let cv = load(c[i]);
    let sv = load(s[i]);
    store(a[i], cast(cv, f32));
    store(b[i], cast(cv, bf16));
    store(h[i], cast(cv, f16));
    store(e[i], cast(sv, f32));
    store(f[i], cast(sv, bf16));
}";
    let k = kernel(SRC, "decode", &Instance::default());
    let n = 256;
    let codes: Vec<i32> = (0..n as i32).collect();
    let args = vec![
        Arg::Tensor(Tensor::from_i32(DType::E2M1, &[n], &codes.iter().map(|c| c % 16).collect::<Vec<_>>())),
        Arg::Tensor(Tensor::from_i32(DType::E8M0, &[n], &codes)),
        Arg::Tensor(Tensor::zeros(DType::F32, &[n])),
        Arg::Tensor(Tensor::zeros(DType::BF16, &[n])),
        Arg::Tensor(Tensor::zeros(DType::F16, &[n])),
        Arg::Tensor(Tensor::zeros(DType::F32, &[n])),
        Arg::Tensor(Tensor::zeros(DType::BF16, &[n])),
    ];
    common::same(&k, &args);
    let (dir, m) = build(&k, "decode");
    same_as_interp(&k, &Lib::open(&dir, &m), &args);
    let _ = std::fs::remove_dir_all(&dir);
}
