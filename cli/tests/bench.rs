//! `opc bench`: the row list, one real row timed on the cpu target with given limits and a
//! baseline (the table's columns), and its usage errors.

use std::process::Command;

fn opc(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_opc")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn lists_the_rows_of_the_issue() {
    let (code, out, err) = opc(&["bench", "--list"]);
    assert_eq!(code, 0, "{err}");
    for row in ["gemm_f32_1024", "gemm_bf16_1024", "attention_prefill_f32", "attention_prefill_bf16", "gemv_bf16", "gemv_bf16_m8", "gemv_mxfp4", "gemv_mxfp4_bf16", "grouped_gemm_moge", "kl_judge"] {
        assert!(out.lines().any(|l| l.starts_with(row)), "{row} missing:\n{out}");
    }
}

#[test]
fn times_a_row_against_the_limits_and_two_baselines() {
    let dir = std::env::temp_dir().join(format!("opc-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base = dir.join("base.json");
    std::fs::write(&base, r#"{"name": "torch", "threads": 2, "rows": {"kl_judge": {"ms": 1000.0}}}"#).unwrap();
    let base2 = dir.join("base2.json");
    std::fs::write(&base2, r#"{"name": "llama.cpp", "threads": 2, "rows": {"kl_judge": {"ms": 500.0}, "other": {"ms": 1.0}}}"#).unwrap();
    let (code, out, err) = opc(&[
        "bench", "--rows", "kl_judge", "--reps", "1", "--peak-gflops", "250", "--amx-gflops", "1500", "--bw-gbs", "32",
        "--baseline", base.to_str().unwrap(), "--baseline", base2.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("DRAM read 32.0 GB/s"), "{out}");
    let line = out.lines().find(|l| l.starts_with("kl_judge")).unwrap_or_else(|| panic!("{out}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    let header = out.lines().find(|l| l.starts_with("row ")).unwrap_or_else(|| panic!("{out}"));
    assert!(header.contains("torch ms") && header.contains("llama.cpp ms"), "{header}");
    // row, ms, rate, unit, % of limit, then (baseline ms, speedup) per baseline, what...
    let ms: f64 = cols[1].parse().unwrap();
    let rate: f64 = cols[2].parse().unwrap();
    assert_eq!(cols[3], "GB/s");
    let bytes = 17.0 * 152064.0 * 4.0;
    // `ms` and `rate` are both printed rounded: allow half a unit of each one's last digit.
    let half_unit = |col: &str| 0.5 * 10f64.powi(-(col.split('.').nth(1).map_or(0, str::len) as i32));
    let ms_err = half_unit(cols[1]) / ms;
    assert!((rate - bytes / (ms / 1e3) / 1e9).abs() <= half_unit(cols[2]) + 1.01 * ms_err * rate, "{line}");
    let pct: f64 = cols[4].trim_end_matches('%').parse().unwrap();
    assert!((pct - 100.0 * rate / 32.0).abs() < 0.2, "{line}");
    assert_eq!(cols[5], "1000.00");
    let speedup: f64 = cols[6].trim_end_matches('x').parse().unwrap();
    assert!((speedup - 1000.0 / ms).abs() <= 1.01 * ms_err * speedup + half_unit(cols[6].trim_end_matches('x')), "{line}");
    assert_eq!(cols[7], "500.00");
    let speedup2: f64 = cols[8].trim_end_matches('x').parse().unwrap();
    assert!((speedup2 - 500.0 / ms).abs() <= 1.01 * ms_err * speedup2 + half_unit(cols[8].trim_end_matches('x')), "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn usage_errors() {
    let (code, _, err) = opc(&["bench", "--rows", "nope", "--peak-gflops", "1", "--amx-gflops", "1", "--bw-gbs", "1"]);
    assert_eq!(code, 2);
    assert!(err.contains("no row matches"), "{err}");
    let (code, _, err) = opc(&["bench", "--rows", "kl", "--baseline", "/nonexistent/base.json", "--peak-gflops", "1", "--amx-gflops", "1", "--bw-gbs", "1"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read /nonexistent/base.json"), "{err}");
}
