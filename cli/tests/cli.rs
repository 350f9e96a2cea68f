//! Command-line behaviour of `opc` (exit codes, messages), run as a subprocess.

use std::path::PathBuf;
use std::process::{Command, Output};

fn opc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_opc")).args(args).output().expect("run opc")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// A scratch file under the system temp dir (unique per test and process).
fn scratch(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("opc-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

const VALID: &str = "\
// y = x * 2
kernel twice(x: f32[N], y: out f32[N])
tunables { B: level1 in {16, 32} = 16 }
grid(cdiv(N, B))
{
    let i = program_id(0) * B + arange(B);
    store(y[i], load(x[i]) * 2.0);
}
";

#[test]
fn help_lists_every_subcommand() {
    let o = opc(&["--help"]);
    assert!(o.status.success());
    let (out, _) = text(&o);
    for cmd in ["check", "build", "verify", "passes", "targets", "tune"] {
        assert!(out.lines().any(|l| l.trim_start().starts_with(cmd)), "`{cmd}` missing from --help:\n{out}");
    }
    for cmd in ["check", "build", "verify", "passes", "targets", "tune"] {
        let o = opc(&[cmd, "--help"]);
        assert!(o.status.success(), "{cmd} --help");
        assert!(text(&o).0.contains("Example"), "{cmd} --help has no example");
    }
}

#[test]
fn no_subcommand_is_a_usage_error() {
    let o = opc(&[]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn bad_dtype_syntax_is_explained() {
    let f = scratch("dtype.opc", VALID);
    let o = opc(&["build", f.to_str().unwrap(), "--dtype", "T:bf16"]);
    assert_eq!(o.status.code(), Some(2));
    let (_, err) = text(&o);
    assert!(err.contains(r#"--dtype expects VAR=DTYPE, e.g. T=bf16; got "T:bf16""#), "{err}");

    let o = opc(&["build", f.to_str().unwrap(), "--dtype", "T=bf17"]);
    assert_eq!(o.status.code(), Some(2));
    let (_, err) = text(&o);
    assert!(err.contains(r#"unknown dtype "bf17""#) && err.contains("bf16"), "{err}");

    let o = opc(&["build", f.to_str().unwrap(), "--const", "D=sixty"]);
    assert_eq!(o.status.code(), Some(2));
    let (_, err) = text(&o);
    assert!(err.contains("--const expects DIM=INT, e.g. D=64") && err.contains("not an integer"), "{err}");

    let o = opc(&["build", f.to_str().unwrap(), "--tunable", "=32"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("--tunable expects NAME=INT, e.g. BM=32"));
}

#[test]
fn verify_missing_dir_errors() {
    let o = opc(&["verify", "--fixtures", "/nonexistent/opc-fixtures"]);
    assert_eq!(o.status.code(), Some(2));
    let (_, err) = text(&o);
    assert!(err.contains("/nonexistent/opc-fixtures") && err.contains("does not exist"), "{err}");

    let dir = scratch("marker", "").parent().unwrap().join("no-ops-here");
    std::fs::create_dir_all(&dir).unwrap();
    let o = opc(&["verify", "--fixtures", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("has no `ops` subdirectory"), "{}", text(&o).1);
}

#[test]
fn verify_skips_unknown_files_and_reports_bad_ones() {
    let root = scratch("marker2", "").parent().unwrap().join("fx");
    std::fs::create_dir_all(root.join("ops")).unwrap();
    std::fs::write(root.join("ops/zzz_unknown.safetensors"), b"whatever").unwrap();
    std::fs::write(root.join("ops/moe.safetensors"), b"short").unwrap();
    let o = opc(&["verify", "--fixtures", root.to_str().unwrap()]);
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("zzz_unknown.safetensors: skipped (no operator registered)"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("moe.safetensors") && l.contains("FAIL") && l.contains("not a safetensors file")), "{out}");
    assert_eq!(out.lines().last(), Some("0 passed, 1 failed"));
}

#[test]
fn unknown_target_errors() {
    let o = opc(&["verify", "--fixtures", "/", "--target", "tpu"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("unknown target `tpu`"), "{}", text(&o).1);
}

#[test]
fn missing_file_is_an_io_error() {
    let o = opc(&["check", "/nonexistent/k.opc"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("cannot read /nonexistent/k.opc"));
}

#[test]
fn targets_and_passes_list() {
    let o = opc(&["targets"]);
    assert!(o.status.success());
    let out = text(&o).0;
    assert!(out.lines().any(|l| l.starts_with("interp ") && l.contains("runs in-process")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("ptx ") && l.contains("-o DIR")), "{out}");
    let o = opc(&["passes"]);
    assert!(o.status.success());
}

#[test]
fn check_syntax_error_points_at_file_line_col() {
    let f = scratch("bad.opc", "kernel k(x: f32[N], y: out f32[N])\ngrid(1)\n{\n    let a = ;\n}\n");
    let o = opc(&["check", f.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "stdout:\n{out}\nstderr:\n{err}");
    let loc = format!("{}:4:", f.display());
    assert!(err.contains(&loc), "expected `{loc}COL` in:\n{err}");
}

#[test]
fn check_and_build_a_valid_kernel() {
    let f = scratch("ok.opc", VALID);
    let p = f.to_str().unwrap();
    let o = opc(&["check", p]);
    assert!(o.status.success(), "{}", text(&o).1);
    assert_eq!(text(&o).0.trim(), "ok: kernels twice");

    let o = opc(&["build", p, "--emit", "ir", "--tunable", "B=32"]);
    assert!(o.status.success(), "{}", text(&o).1);
    assert!(text(&o).0.contains("twice"), "{}", text(&o).0);

    let o = opc(&["build", p, "--emit", "loops", "--target", "cpu"]);
    assert!(o.status.success(), "{}", text(&o).1);
    assert!(text(&o).0.starts_with("// loops `twice` for cpu: 4 lanes"), "{}", text(&o).0);
    let o = opc(&["build", p, "--emit", "loops", "--target", "interp"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("--emit loops is for the CPU targets"), "{}", text(&o).1);

    let out = f.with_extension("ir");
    let o = opc(&["build", p, "--kernel", "twice", "--emit", "ir", "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o).1);
    assert!(std::fs::read_to_string(&out).unwrap().contains("twice"));

    let passes = text(&opc(&["passes"])).0;
    if let Some(first) = passes.lines().next() {
        let o = opc(&["build", p, "--dump-after", first]);
        assert!(o.status.success(), "{}", text(&o).1);
        assert!(text(&o).0.starts_with(&format!("// ----- after {first} -----")), "{}", text(&o).0);

        let o = opc(&["build", p, "--dump-after", "no-such-pass"]);
        assert_eq!(o.status.code(), Some(2));
        let (_, err) = text(&o);
        assert!(err.contains("unknown pass `no-such-pass`") && err.contains(first), "{err}");
    }

    let o = opc(&["build", p, "--kernel", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("nope"));
}

/// `opc build FILE --target ascendc -o DIR`: the kernel `.cpp` (classic entry), the tiling
/// header (POD struct + host tiling function), the launch stub and `manifest.json`; a MIX
/// kernel from the library; an oversized tile configuration is a compile error with the budget.
#[test]
fn build_ascendc_writes_kernel_tiling_launch_and_manifest() {
    let f = scratch("asc.opc", VALID);
    let dir = f.with_extension("ascendc");
    let o = opc(&["build", f.to_str().unwrap(), "--target", "ascendc", "-o", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o).1);
    let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap_or_else(|e| panic!("{n}: {e}"));
    assert!(read("twice.cpp").contains("extern \"C\" __global__ __aicore__ void twice(GM_ADDR x, GM_ADDR y, GM_ADDR workspace, GM_ADDR tiling)"));
    let tiling = read("twice_tiling.h");
    assert!(tiling.contains("struct TwiceTilingData {") && tiling.contains("inline uint32_t TwiceTiling("), "{tiling}");
    assert!(read("twice_launch.cpp").contains("inline void LaunchTwice("));
    let m: serde_json::Value = serde_json::from_str(&read("manifest.json")).expect("manifest.json");
    assert_eq!(m["ascendc"]["kernel_type"], "KERNEL_TYPE_AIV_ONLY", "{m}");
    assert_eq!(m["ascendc"]["entry_params"], serde_json::json!(["x", "y", "workspace", "tiling"]), "{m}");

    let fa = concat!(env!("CARGO_MANIFEST_DIR"), "/../ops/kernels/flash_attention.opc");
    let fa_dir = dir.with_extension("fa");
    let o = opc(&["build", fa, "--kernel", "flash_attention", "--dtype", "T=f16", "--const", "D=128", "--target", "ascendc", "-o", fa_dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o).1);
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fa_dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["ascendc"]["kernel_type"], "KERNEL_TYPE_MIX_AIC_1_2", "{m}");
    assert!(std::fs::read_to_string(fa_dir.join("flash_attention.cpp")).unwrap().contains("KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIC_1_2)"));

    let o = opc(&["build", fa, "--kernel", "flash_attention", "--dtype", "T=f32", "--const", "D=256", "--tunable", "BM=128", "--tunable", "BN=128", "--target", "ascendc", "-o", fa_dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o).1;
    assert!(err.contains("does not fit the 910B's UB") && err.contains("bytes available") && err.contains("DSL line 47:17"), "{err}");
    // Rendered like a DSL error: at the tile line, then at the tunables that size it, with carets.
    assert!(err.starts_with(&format!("error: {fa}:47:17: kernel `flash_attention` does not compile")), "{err}");
    assert!(err.contains(&format!("note: {fa}:33:5: tunable BM = 128 sizes these tiles")), "{err}");
    assert!(err.contains("╰── 131072 bytes live at the UB peak") && err.contains("╰── tunable BN = 128 sizes these tiles"), "{err}");
}

#[test]
fn tune_prints_every_configuration_and_records_the_run() {
    let src = scratch("tune_twice.opc", VALID);
    let db = std::env::temp_dir().join(format!("opc-cli-test-{}", std::process::id())).join("tune.jsonl");
    let _ = std::fs::remove_file(&db);
    let args = ["tune", src.to_str().unwrap(), "--dim", "N=1000", "--target", "cpu", "--min-time-ms", "1", "--db", db.to_str().unwrap()];
    let o = opc(&args);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.starts_with("kernel `twice` ("), "{out}");
    assert!(out.contains("on `cpu`, dims N=1000: 2 of 2 configurations"), "{out}");
    assert!(out.lines().any(|l| l.contains("B=16") && l.ends_with("(default)")), "{out}");
    assert!(out.lines().any(|l| l.contains("B=32") && l.contains('×')), "{out}");
    assert!(out.contains("best: --tunable B="), "{out}");
    assert!(out.contains(&format!("recorded 2 timings in {}", db.display())), "{out}");
    assert_eq!(err.lines().filter(|l| l.trim_start().starts_with('[')).count(), 2, "{err}");
    let lines = std::fs::read_to_string(&db).unwrap();
    assert_eq!(lines.lines().count(), 2);
    assert!(lines.lines().all(|l| l.contains("\"status\":\"ok\"") && l.contains("\"dims\":\"N=1000\"")), "{lines}");

    // --list: the best configuration per key, against the run's default.
    let o = opc(&["tune", "--list", "--db", db.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.starts_with(&format!("{}: 2 records, 1 tuned (kernel, dims, machine)", db.display())), "{out}");
    let row = out.lines().find(|l| l.starts_with("twice ")).unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("N=1000") && row.contains(" B=") && row.contains('×') && row.contains("cpu "), "{row}");

    // --no-record measures only.
    let o = opc(&["tune", src.to_str().unwrap(), "--dim", "N=64", "--target", "cpu", "--min-time-ms", "1", "--db", db.to_str().unwrap(), "--no-record"]);
    assert!(o.status.success());
    assert!(text(&o).0.contains("recorded nothing"));
    assert_eq!(std::fs::read_to_string(&db).unwrap().lines().count(), 2);
}

#[test]
fn tune_usage_errors_name_the_missing_or_bad_value() {
    let src = scratch("tune_bad.opc", VALID);
    let s = src.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["tune", s, "--target", "cpu", "--no-record"], "error: kernel `twice` needs a value for every dim it is launched with: --dim N=N"),
        (&["tune", s, "--dim", "M=4", "--target", "cpu", "--no-record"], "error: kernel `twice` has no dim `M` (its dims: N)"),
        (&["tune", s, "--dim", "N=4", "--scalar", "k=1", "--target", "cpu", "--no-record"], "error: kernel `twice` has no scalar parameter `k` (its scalars: none)"),
        (&["tune", s, "--dim", "N=4", "--target", "gpu9"], "error: unknown target `gpu9`"),
    ];
    for (args, want) in cases {
        let o = opc(args);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {out}{err}");
        assert!(err.starts_with(want), "{args:?}: {err}");
    }
    let o = opc(&["tune", s, "--dim", "N=x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("--dim expects DIM=INT, e.g. M=512; got \"N=x\""), "{}", text(&o).1);
}
