//! Operator verification against the reference fixtures (`DIR/ops/*.safetensors`).
//!
//! Every (case, kernel) pair prints exactly one line:
//!
//! ```text
//! attention/gqa_causal      flash_attention  max_err 3.05e-03  tol 1.00e-02  PASS  out 3.05e-03/1.00e-02 lse 4.10e-05/1.00e-03  (0.8s)
//! ```
//!
//! `max_err`/`tol` are those of the toleranced quantity with the worst err/tol ratio; the tail
//! lists every compared quantity (`err/tol`, or `exact` / `N/M differ` for bit-exact ones).
//! A case that errors (bad fixture, shape error, compile error, panic) prints FAIL with the
//! message and the run continues. The last line is `N passed, M failed`.

use crate::fixtures::{FixtureFile, RuntimeError};
use opc_ir::{DType, Tensor};
use opc_ops::Ops;
use serde_json::Value;
use std::cell::RefCell;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

use opc_ops::{attention, kl_judge, kron_quant, moe, mxfp4};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("fixture directory {0} has no `ops` subdirectory")]
    NoOpsDir(PathBuf),
    #[error("cannot list {path}: {err}")]
    ListDir { path: PathBuf, err: std::io::Error },
    #[error("cannot write the report: {0}")]
    Output(#[from] std::io::Error),
}

/// Kernels checked per fixture file stem, in output order.
pub fn kernels_for(stem: &str) -> Option<&'static [&'static str]> {
    Some(match stem {
        "attention" => &["flash_attention", "flash_decode"],
        "mxfp4" => &["quantize", "dequantize", "gemm", "gemv"],
        "kron_quant" => &["kron_quant", "int4_gemm"],
        "moe" => &["moe_forward"],
        "kl_judge" => &["kl_judge"],
        _ => return None,
    })
}

/// Split-KV count used for `flash_decode`.
pub const DECODE_SPLITS: usize = 4;

/// Verify every operator fixture under `dir/ops`, writing one line per (case, kernel) to `out`.
pub fn verify_fixtures(dir: &Path, ops: &Ops, out: &mut dyn Write) -> Result<Summary, VerifyError> {
    verify_fixtures_filtered(dir, ops, out, None)
}

/// As [`verify_fixtures`], running only the lines whose `file/case kernel` label contains `filter`.
pub fn verify_fixtures_filtered(
    dir: &Path,
    ops: &Ops,
    out: &mut dyn Write,
    filter: Option<&str>,
) -> Result<Summary, VerifyError> {
    let ops_dir = dir.join("ops");
    if !ops_dir.is_dir() {
        return Err(VerifyError::NoOpsDir(dir.to_path_buf()));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&ops_dir)
        .map_err(|err| VerifyError::ListDir { path: ops_dir.clone(), err })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();

    // First pass: open every file and read its cases, to align the columns.
    struct Plan {
        file_name: String,
        stem: String,
        opened: Result<(FixtureFile, Vec<Value>), RuntimeError>,
    }
    let mut plans = Vec::new();
    for p in &files {
        let stem = p.file_stem().unwrap_or_default().to_string_lossy().to_string();
        let file_name = p.file_name().unwrap_or_default().to_string_lossy().to_string();
        let opened = if kernels_for(&stem).is_some() {
            FixtureFile::open(p).and_then(|f| f.cases().map(|c| (f, c)))
        } else {
            Err(RuntimeError::NotFound(p.clone())) // unused: skipped below
        };
        plans.push(Plan { file_name, stem, opened });
    }
    let mut lw = 24;
    let mut kw = 12;
    for pl in &plans {
        if let (Some(ks), Ok((_, cases))) = (kernels_for(&pl.stem), &pl.opened) {
            for (i, c) in cases.iter().enumerate() {
                lw = lw.max(pl.stem.len() + 1 + case_name(c, i).len());
            }
            for k in ks {
                kw = kw.max(k.len());
            }
        }
    }

    install_panic_capture();
    let mut sum = Summary::default();
    for pl in &plans {
        let Some(kernels) = kernels_for(&pl.stem) else {
            if filter.is_none() {
                writeln!(out, "{}: skipped (no operator registered)", pl.file_name)?;
            }
            continue;
        };
        let (file, cases) = match &pl.opened {
            Ok(x) => x,
            Err(e) => {
                writeln!(out, "{:<lw$}  {:<kw$}  {:<30}  FAIL  {}", pl.file_name, "-", "error", one_line(&e.to_string()))?;
                sum.failed += 1;
                continue;
            }
        };
        for (i, case) in cases.iter().enumerate() {
            let name = case_name(case, i);
            let label = format!("{}/{}", pl.stem, name);
            for &kernel in kernels {
                if let Some(f) = filter {
                    if !format!("{label} {kernel}").contains(f) {
                        continue;
                    }
                }
                let t0 = Instant::now();
                let res = run_caught(|| run_kernel(&pl.stem, kernel, ops, file, case, &name));
                let secs = t0.elapsed().as_secs_f64();
                let pass = write_line(out, &label, kernel, lw, kw, &res, secs)?;
                if pass {
                    sum.passed += 1;
                } else {
                    sum.failed += 1;
                }
                out.flush()?;
            }
        }
    }
    writeln!(out, "{} passed, {} failed", sum.passed, sum.failed)?;
    out.flush()?;
    Ok(sum)
}

fn case_name(c: &Value, i: usize) -> String {
    c.get("name").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| format!("case{i}"))
}

// ------------------------------------------------------------------ checks and report lines

/// One compared quantity.
#[derive(Clone, Debug)]
pub struct Check {
    pub name: String,
    /// Error (toleranced) or mismatch count (exact).
    pub err: f64,
    /// Tolerance; `None` for exact comparisons.
    pub tol: Option<f64>,
    pub ok: bool,
    /// Shown in the report tail.
    pub detail: String,
}

impl Check {
    /// `err <= tol`; NaN errors fail.
    pub fn tol(name: &str, err: f64, tol: f64) -> Check {
        let ok = err <= tol;
        Check { name: name.into(), err, tol: Some(tol), ok, detail: format!("{name} {}/{}", sci(err), sci(tol)) }
    }
    /// Bit-exact comparison: `mismatches` of `total` elements differ.
    pub fn exact(name: &str, mismatches: usize, total: usize) -> Check {
        let detail = if mismatches == 0 { format!("{name} exact") } else { format!("{name} {mismatches}/{total} differ") };
        Check { name: name.into(), err: mismatches as f64, tol: None, ok: mismatches == 0, detail }
    }
    /// Equality of two displayed values.
    pub fn equal<T: PartialEq + std::fmt::Display>(name: &str, got: T, want: T) -> Check {
        let ok = got == want;
        let detail = if ok { format!("{name} {got}") } else { format!("{name} {got} != {want}") };
        Check { name: name.into(), err: if ok { 0.0 } else { 1.0 }, tol: None, ok, detail }
    }
    fn ratio(&self) -> f64 {
        match self.tol {
            Some(t) if self.err.is_nan() => f64::INFINITY.max(t),
            Some(t) if t > 0.0 => self.err / t,
            Some(_) => {
                if self.err == 0.0 {
                    0.0
                } else {
                    f64::INFINITY
                }
            }
            None => 0.0,
        }
    }
}

/// `3.05e-03` style: two decimals, signed two-digit exponent.
pub fn sci(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let s = format!("{x:.2e}");
    let (m, e) = s.split_once('e').unwrap();
    let e: i32 = e.parse().unwrap();
    format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
}

/// The first non-empty line of an error (rendered diagnostics start with `error: FILE:LINE:COL: msg`;
/// `opc check FILE` shows the rest).
fn one_line(msg: &str) -> String {
    let mut lines = msg.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("(no message)").to_string();
    match lines.count() {
        0 => first,
        n => format!("{first} [+{n} lines]"),
    }
}

fn write_line(
    out: &mut dyn Write,
    label: &str,
    kernel: &str,
    lw: usize,
    kw: usize,
    res: &Result<Vec<Check>, String>,
    secs: f64,
) -> std::io::Result<bool> {
    match res {
        Ok(checks) => {
            let pass = !checks.is_empty() && checks.iter().all(|c| c.ok);
            let worst = checks
                .iter()
                .filter(|c| c.tol.is_some())
                .max_by(|a, b| a.ratio().partial_cmp(&b.ratio()).unwrap_or(std::cmp::Ordering::Equal));
            let head = match worst {
                Some(c) => format!("max_err {:>8}  tol {:>8}", sci(c.err), sci(c.tol.unwrap())),
                None => format!("{:<30}", "exact"),
            };
            let tail: Vec<&str> = checks.iter().map(|c| c.detail.as_str()).collect();
            writeln!(
                out,
                "{label:<lw$}  {kernel:<kw$}  {head}  {}  {}  ({secs:.1}s)",
                if pass { "PASS" } else { "FAIL" },
                tail.join(" ")
            )?;
            Ok(pass)
        }
        Err(msg) => {
            writeln!(out, "{label:<lw$}  {kernel:<kw$}  {:<30}  FAIL  {}  ({secs:.1}s)", "error", one_line(msg))?;
            Ok(false)
        }
    }
}

// ------------------------------------------------------------------ panics

thread_local! {
    static CAPTURE: RefCell<Option<Option<String>>> = const { RefCell::new(None) };
}

/// Install (once) a panic hook that, on threads running [`run_caught`], records the message
/// and location instead of printing them; other threads keep the previous hook.
fn install_panic_capture() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let captured = CAPTURE.with(|c| {
                let mut c = c.borrow_mut();
                match c.as_mut() {
                    Some(slot) => {
                        let loc = info.location().map(|l| format!(" at {}:{}:{}", l.file(), l.line(), l.column()));
                        *slot = Some(format!("panicked: {}{}", payload_msg(info.payload()), loc.unwrap_or_default()));
                        true
                    }
                    None => false,
                }
            });
            if !captured {
                prev(info);
            }
        }));
    });
}

fn payload_msg(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

/// Run `f`, turning a panic into `Err("panicked: MSG at FILE:LINE:COL")`.
pub fn run_caught<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    install_panic_capture();
    let prev = CAPTURE.with(|c| c.borrow_mut().replace(None));
    let r = catch_unwind(AssertUnwindSafe(f));
    let msg = CAPTURE.with(|c| std::mem::replace(&mut *c.borrow_mut(), prev)).flatten();
    match r {
        Ok(r) => r,
        Err(p) => Err(msg.unwrap_or_else(|| format!("panicked: {}", payload_msg(&*p)))),
    }
}

// ------------------------------------------------------------------ helpers

type R<T> = Result<T, String>;

fn e<E: std::fmt::Display>(x: E) -> String {
    x.to_string()
}

fn field<'a>(case: &'a Value, key: &str) -> R<&'a Value> {
    case.get(key).ok_or_else(|| format!("case metadata has no field `{key}`"))
}
fn f_usize(case: &Value, key: &str) -> R<usize> {
    field(case, key)?.as_u64().map(|v| v as usize).ok_or_else(|| format!("case field `{key}` is not an unsigned integer"))
}
fn f_opt_usize(case: &Value, key: &str) -> R<Option<usize>> {
    match case.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(|v| Some(v as usize)).ok_or_else(|| format!("case field `{key}` is not an unsigned integer or null")),
    }
}
fn f_bool(case: &Value, key: &str) -> R<bool> {
    field(case, key)?.as_bool().ok_or_else(|| format!("case field `{key}` is not a bool"))
}
fn f_f64(case: &Value, key: &str) -> R<f64> {
    field(case, key)?.as_f64().ok_or_else(|| format!("case field `{key}` is not a number"))
}
fn f_str<'a>(case: &'a Value, key: &str) -> R<&'a str> {
    field(case, key)?.as_str().ok_or_else(|| format!("case field `{key}` is not a string"))
}

fn expect_shape(what: &str, t: &Tensor, want: &[usize]) -> R<()> {
    if t.shape == want {
        Ok(())
    } else {
        Err(format!("{what} has shape {:?}, expected {want:?}", t.shape))
    }
}
fn expect_dt(what: &str, t: &Tensor, want: DType) -> R<()> {
    if t.dtype == want {
        Ok(())
    } else {
        Err(format!("{what} has dtype {}, expected {want}", t.dtype))
    }
}

fn f64s(t: &Tensor) -> Vec<f64> {
    (0..t.numel()).map(|i| t.get_f64(i)).collect()
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0f64, |m, x| m.max(x.abs()))
}

/// max |got − want| (NaN or a non-finite mismatch gives +inf).
fn max_abs_err(got: &[f64], want: &[f64]) -> f64 {
    let mut m = 0.0f64;
    for (&g, &w) in got.iter().zip(want) {
        let d = if g == w { 0.0 } else { (g - w).abs() };
        m = if d.is_nan() { f64::INFINITY } else { m.max(d) };
    }
    m
}

/// max |got − want| / max |want| (denominator 1 when want is all zero).
fn rel_to_max(got: &[f64], want: &[f64]) -> f64 {
    let mut den = max_abs(want);
    if den == 0.0 {
        den = 1.0;
    }
    max_abs_err(got, want) / den
}

/// Tiny deterministic PRNG (xorshift64) for generated operands.
pub struct XorShift(u64);
impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in [0, 1), 24 random bits (exact in f32).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Uniform in [-1, 1).
    pub fn sym(&mut self) -> f32 {
        self.uniform() * 2.0 - 1.0
    }
}

// ------------------------------------------------------------------ operators

fn run_kernel(stem: &str, kernel: &str, ops: &Ops, f: &FixtureFile, case: &Value, name: &str) -> R<Vec<Check>> {
    match (stem, kernel) {
        ("attention", "flash_attention") => check_attention(ops, f, case, name, false),
        ("attention", "flash_decode") => check_attention(ops, f, case, name, true),
        ("mxfp4", "quantize") => check_mx_quantize(ops, f, name),
        ("mxfp4", "dequantize") => check_mx_dequantize(ops, f, name),
        ("mxfp4", "gemm") => check_mx_gemm(ops, f, name, 3),
        ("mxfp4", "gemv") => check_mx_gemm(ops, f, name, 1),
        ("kron_quant", "kron_quant") => check_kron_quant(ops, f, case, name),
        ("kron_quant", "int4_gemm") => check_int4_gemm(ops, f, case, name),
        ("moe", "moe_forward") => check_moe(ops, f, case, name),
        ("kl_judge", "kl_judge") => check_kl_judge(ops, f, case, name),
        _ => Err(format!("no check for {stem}/{kernel}")),
    }
}

fn check_attention(ops: &Ops, f: &FixtureFile, case: &Value, name: &str, decode: bool) -> R<Vec<Check>> {
    let (b, hq, hkv, sq, sk, d) = (
        f_usize(case, "B")?,
        f_usize(case, "Hq")?,
        f_usize(case, "Hkv")?,
        f_usize(case, "Sq")?,
        f_usize(case, "Sk")?,
        f_usize(case, "D")?,
    );
    let causal = f_bool(case, "causal")?;
    let has_sinks = f_bool(case, "sinks")?;
    let window = f_opt_usize(case, "window")?;
    let scale = f_f64(case, "scale")? as f32;
    let dt = match f_str(case, "dtype")? {
        "float32" => DType::F32,
        "float16" => DType::F16,
        "bfloat16" => DType::BF16,
        other => return Err(format!("case dtype `{other}` is not float32, float16 or bfloat16")),
    };
    let q = f.tensor(name, "q").map_err(e)?;
    let k = f.tensor(name, "k").map_err(e)?;
    let v = f.tensor(name, "v").map_err(e)?;
    for (n, t, s) in [("fixture q", &q, [b, hq, sq, d]), ("fixture k", &k, [b, hkv, sk, d]), ("fixture v", &v, [b, hkv, sk, d])] {
        expect_dt(n, t, dt)?;
        expect_shape(n, t, &s)?;
    }
    let sinks = if has_sinks { Some(f.tensor_as(name, "sinks", DType::F32).map_err(e)?) } else { None };
    let r_out = f.tensor_as(name, "out", DType::F32).map_err(e)?;
    let r_lse = f.tensor_as(name, "lse", DType::F32).map_err(e)?;
    let p = attention::AttentionParams { causal, window, scale };
    let o = if decode {
        attention::flash_decode(ops, &q, &k, &v, sinks.as_ref(), &p, DECODE_SPLITS)
    } else {
        attention::flash_attention(ops, &q, &k, &v, sinks.as_ref(), &p)
    }
    .map_err(e)?;
    expect_dt("out", &o.out, dt)?;
    expect_shape("out", &o.out, &[b, hq, sq, d])?;
    expect_dt("lse", &o.lse, DType::F32)?;
    expect_shape("lse", &o.lse, &[b, hq, sq])?;
    let low = dt != DType::F32;
    let out_err = rel_to_max(&f64s(&o.out), &f64s(&r_out));
    // lse: absolute error; rows whose reference is −inf (nothing attended) must be −inf.
    let mut lse_err = 0.0f64;
    for (g, w) in f64s(&o.lse).into_iter().zip(f64s(&r_lse)) {
        let d = if w == f64::NEG_INFINITY {
            if g == f64::NEG_INFINITY {
                0.0
            } else {
                f64::INFINITY
            }
        } else if !g.is_finite() {
            f64::INFINITY
        } else {
            (g - w).abs()
        };
        lse_err = lse_err.max(d);
    }
    Ok(vec![
        Check::tol("out", out_err, if low { 1e-2 } else { 1e-4 }),
        Check::tol("lse", lse_err, if low { 1e-3 } else { 1e-4 }),
    ])
}

/// The fixture's MXFP4 weight as opc tensors: codes e2m1 [R, K], scales e8m0 [R, K/32].
fn mx_weight(f: &FixtureFile, name: &str) -> R<(mxfp4::Mxfp4, usize, usize)> {
    let codes = f.tensor(name, "codes").map_err(e)?;
    let scales = f.tensor(name, "scales").map_err(e)?;
    expect_dt("fixture codes", &codes, DType::U8)?;
    expect_dt("fixture scales", &scales, DType::U8)?;
    if codes.shape.len() != 2 {
        return Err(format!("fixture codes has shape {:?}, expected [R, K/2]", codes.shape));
    }
    let (r, k) = (codes.shape[0], codes.shape[1] * 2);
    if k % 32 != 0 {
        return Err(format!("fixture K = {k} is not a multiple of 32"));
    }
    expect_shape("fixture scales", &scales, &[r, k / 32])?;
    let w = mxfp4::Mxfp4 {
        codes: Tensor::from_bytes(DType::E2M1, &[r, k], codes.data).map_err(e)?,
        scales: Tensor::from_bytes(DType::E8M0, &[r, k / 32], scales.data).map_err(e)?,
    };
    Ok((w, r, k))
}

fn byte_mismatches(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x != y).count() + a.len().abs_diff(b.len())
}

fn check_mx_quantize(ops: &Ops, f: &FixtureFile, name: &str) -> R<Vec<Check>> {
    let x = f.tensor_as(name, "x", DType::F32).map_err(e)?;
    let (w, r, k) = mx_weight(f, name)?;
    expect_shape("fixture x", &x, &[r, k])?;
    let q = mxfp4::quantize(ops, &x).map_err(e)?;
    expect_dt("codes", &q.codes, DType::E2M1)?;
    expect_shape("codes", &q.codes, &[r, k])?;
    expect_dt("scales", &q.scales, DType::E8M0)?;
    expect_shape("scales", &q.scales, &[r, k / 32])?;
    Ok(vec![
        Check::exact("codes", byte_mismatches(&q.codes.data, &w.codes.data), w.codes.data.len()),
        Check::exact("scales", byte_mismatches(&q.scales.data, &w.scales.data), w.scales.data.len()),
    ])
}

fn check_mx_dequantize(ops: &Ops, f: &FixtureFile, name: &str) -> R<Vec<Check>> {
    let (w, r, k) = mx_weight(f, name)?;
    let want = f.tensor_as(name, "dequant", DType::F32).map_err(e)?;
    expect_shape("fixture dequant", &want, &[r, k])?;
    let got = mxfp4::dequantize(ops, &w).map_err(e)?;
    expect_dt("dequant", &got, DType::F32)?;
    expect_shape("dequant", &got, &[r, k])?;
    let (g, wv) = (got.to_f32_vec(), want.to_f32_vec());
    let bad = g.iter().zip(&wv).filter(|(a, b)| !(a == b || (a.is_nan() && b.is_nan()))).count();
    Ok(vec![Check::exact("dequant", bad, wv.len())])
}

fn check_mx_gemm(ops: &Ops, f: &FixtureFile, name: &str, m: usize) -> R<Vec<Check>> {
    let (w, n, k) = mx_weight(f, name)?;
    let deq = f.tensor_as(name, "dequant", DType::F32).map_err(e)?;
    expect_shape("fixture dequant", &deq, &[n, k])?;
    let mut rng = XorShift::new(0x9E37_79B9_7F4A_7C15 ^ m as u64);
    let xv: Vec<f32> = (0..m * k).map(|_| rng.sym()).collect();
    let x = Tensor::from_f32(DType::F32, &[m, k], &xv);
    let dv = f64s(&deq);
    let mut want = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            want[i * n + j] = (0..k).map(|kk| xv[i * k + kk] as f64 * dv[j * k + kk]).sum();
        }
    }
    let y = mxfp4::gemm(ops, &x, &w).map_err(e)?;
    expect_dt("y", &y, DType::F32)?;
    expect_shape("y", &y, &[m, n])?;
    Ok(vec![Check::tol("y", rel_to_max(&f64s(&y), &want), 1e-5)])
}

fn check_kron_quant(ops: &Ops, f: &FixtureFile, case: &Value, name: &str) -> R<Vec<Check>> {
    let (t, n1, n2) = (f_usize(case, "T")?, f_usize(case, "n1")?, f_usize(case, "n2")?);
    let n = n1 * n2;
    let x = f.tensor_as(name, "x", DType::F32).map_err(e)?;
    let c = f.tensor_as(name, "c", DType::F32).map_err(e)?;
    let p1 = f.tensor_as(name, "P1", DType::F32).map_err(e)?;
    let p2 = f.tensor_as(name, "P2", DType::F32).map_err(e)?;
    let r_tr = f.tensor_as(name, "transformed", DType::F32).map_err(e)?;
    let r_codes = f.tensor(name, "codes").map_err(e)?;
    let r_scales = f.tensor_as(name, "scales", DType::F32).map_err(e)?;
    expect_shape("fixture x", &x, &[t, n])?;
    expect_shape("fixture transformed", &r_tr, &[t, n])?;
    expect_shape("fixture codes", &r_codes, &[t, n])?;
    expect_shape("fixture scales", &r_scales, &[t])?;
    let o = kron_quant::kron_quant(ops, &x, &c, &p1, &p2).map_err(e)?;
    expect_dt("transformed", &o.transformed, DType::F32)?;
    expect_shape("transformed", &o.transformed, &[t, n])?;
    expect_dt("codes", &o.codes, DType::I4)?;
    expect_shape("codes", &o.codes, &[t, n])?;
    expect_dt("scales", &o.scales, DType::F32)?;
    expect_shape("scales", &o.scales, &[t])?;

    let tr_ref = f64s(&r_tr);
    let sc_ref = f64s(&r_scales);
    let tr_err = rel_to_max(&f64s(&o.transformed), &tr_ref);
    // scales: elementwise relative error
    let mut sc_err = 0.0f64;
    for (g, w) in f64s(&o.scales).into_iter().zip(&sc_ref) {
        let d = if g == *w { 0.0 } else { (g - w).abs() / if *w != 0.0 { w.abs() } else { 1.0 } };
        sc_err = if d.is_nan() { f64::INFINITY } else { sc_err.max(d) };
    }
    // codes: exact, except ±1 where the reference x~/scale is within 1e-3 of a .5 tie
    let got = o.codes.to_i64_vec();
    let want = r_codes.to_i64_vec();
    let (mut bad, mut ties) = (0usize, 0usize);
    for i in 0..t * n {
        if got[i] == want[i] {
            continue;
        }
        let v = tr_ref[i] / sc_ref[i / n];
        let near_tie = ((v - v.floor()) - 0.5).abs() <= 1e-3;
        if (got[i] - want[i]).abs() == 1 && near_tie {
            ties += 1;
        } else {
            bad += 1;
        }
    }
    let mut codes = Check::exact("codes", bad, t * n);
    if bad == 0 && ties > 0 {
        codes.detail = format!("codes exact ({ties} ±1 at .5 ties)");
    }
    Ok(vec![Check::tol("transformed", tr_err, 1e-5), Check::tol("scales", sc_err, 1e-5), codes])
}

fn check_int4_gemm(ops: &Ops, f: &FixtureFile, case: &Value, name: &str) -> R<Vec<Check>> {
    let (t, n1, n2) = (f_usize(case, "T")?, f_usize(case, "n1")?, f_usize(case, "n2")?);
    let kd = n1 * n2;
    const N: usize = 16;
    let a_codes = f.tensor_as(name, "codes", DType::I4).map_err(e)?;
    let a_scales = f.tensor_as(name, "scales", DType::F32).map_err(e)?;
    expect_shape("fixture codes", &a_codes, &[t, kd])?;
    expect_shape("fixture scales", &a_scales, &[t])?;
    let mut rng = XorShift::new(0xC0FF_EE00 ^ kd as u64);
    let wv: Vec<i32> = (0..N * kd).map(|_| (rng.next_u64() >> 60) as i32 - 8).collect();
    let wsv: Vec<f32> = (0..N).map(|_| 0.01 + 0.1 * rng.uniform()).collect();
    let w_codes = Tensor::from_i32(DType::I4, &[N, kd], &wv);
    let w_scales = Tensor::from_f32(DType::F32, &[N], &wsv);
    let av = a_codes.to_i64_vec();
    let asv = f64s(&a_scales);
    let mut want = vec![0.0f64; t * N];
    for i in 0..t {
        for j in 0..N {
            let dot: i64 = (0..kd).map(|k| av[i * kd + k] * wv[j * kd + k] as i64).sum();
            want[i * N + j] = dot as f64 * asv[i] * wsv[j] as f64;
        }
    }
    let y = kron_quant::int4_gemm(ops, &a_codes, &a_scales, &w_codes, &w_scales, None).map_err(e)?;
    expect_dt("y", &y, DType::F32)?;
    expect_shape("y", &y, &[t, N])?;
    Ok(vec![Check::tol("y", rel_to_max(&f64s(&y), &want), 1e-5)])
}

fn check_moe(ops: &Ops, f: &FixtureFile, case: &Value, name: &str) -> R<Vec<Check>> {
    let (t, h, i_, ne) = (f_usize(case, "T")?, f_usize(case, "H")?, f_usize(case, "I")?, f_usize(case, "E")?);
    let k = f_usize(case, "top_k")?;
    let routing = match f_str(case, "routing")? {
        "topk_softmax" => moe::Routing::TopK { k },
        "moge" => moe::Routing::MoGE {
            groups: f_usize(case, "groups")?,
            router_scale: f.tensor_as(name, "router_scale", DType::F32).map_err(e)?,
        },
        other => return Err(format!("unknown routing `{other}` (expected topk_softmax or moge)")),
    };
    let x = f.tensor_as(name, "x", DType::F32).map_err(e)?;
    let gate = f.tensor_as(name, "gate", DType::F32).map_err(e)?;
    let w1 = f.tensor_as(name, "w1", DType::F32).map_err(e)?;
    let w3 = f.tensor_as(name, "w3", DType::F32).map_err(e)?;
    let w2 = f.tensor_as(name, "w2", DType::F32).map_err(e)?;
    let r_out = f.tensor_as(name, "out", DType::F32).map_err(e)?;
    let r_ids = f.tensor(name, "expert_ids").map_err(e)?;
    let r_w = f.tensor_as(name, "weights", DType::F32).map_err(e)?;
    expect_shape("fixture x", &x, &[t, h])?;
    expect_shape("fixture w1", &w1, &[ne, i_, h])?;
    expect_shape("fixture expert_ids", &r_ids, &[t, k])?;
    let o = moe::moe_forward(ops, &x, &gate, &w1, &w3, &w2, &routing).map_err(e)?;
    expect_dt("out", &o.out, DType::F32)?;
    expect_shape("out", &o.out, &[t, h])?;
    expect_dt("expert_ids", &o.expert_ids, DType::I32)?;
    expect_shape("expert_ids", &o.expert_ids, &[t, k])?;
    expect_dt("weights", &o.weights, DType::F32)?;
    expect_shape("weights", &o.weights, &[t, k])?;
    let want = f64s(&r_out);
    let out_tol = 1e-4 * max_abs(&want).max(1.0);
    let ids_bad = o.expert_ids.to_i64_vec().iter().zip(r_ids.to_i64_vec()).filter(|(a, b)| **a != *b).count();
    Ok(vec![
        Check::tol("out", max_abs_err(&f64s(&o.out), &want), out_tol),
        Check::exact("expert_ids", ids_bad, t * k),
        Check::tol("weights", max_abs_err(&f64s(&o.weights), &f64s(&r_w)), 1e-6),
    ])
}

fn check_kl_judge(ops: &Ops, f: &FixtureFile, case: &Value, name: &str) -> R<Vec<Check>> {
    let (gamma, vocab) = (f_usize(case, "gamma")?, f_usize(case, "vocab")?);
    let tau = f_f64(case, "tau")? as f32;
    let accepted = f_usize(case, "accepted")?;
    let tl = f.tensor_as(name, "target_logits", DType::F32).map_err(e)?;
    let dl = f.tensor_as(name, "draft_logits", DType::F32).map_err(e)?;
    let dtok = f.tensor_as(name, "draft_tokens", DType::I32).map_err(e)?;
    let r_kl = f.tensor_as(name, "kl", DType::F32).map_err(e)?;
    let r_acc = f.tensor(name, "accept").map_err(e)?;
    let r_emit = f.tensor(name, "emitted").map_err(e)?;
    expect_shape("fixture target_logits", &tl, &[gamma + 1, vocab])?;
    expect_shape("fixture draft_logits", &dl, &[gamma, vocab])?;
    expect_shape("fixture draft_tokens", &dtok, &[gamma])?;
    let o = kl_judge::kl_judge(ops, &tl, &dl, &dtok, tau).map_err(e)?;
    expect_dt("kl", &o.kl, DType::F32)?;
    expect_shape("kl", &o.kl, &[gamma])?;
    expect_shape("accept", &o.accept, &[gamma])?;
    // kl: |a − b| ≤ 1e-5·|b| + 1e-6; report the element with the worst ratio
    let (mut err, mut tol, mut worst) = (0.0f64, 1e-6f64, -1.0f64);
    for (g, w) in f64s(&o.kl).into_iter().zip(f64s(&r_kl)) {
        let t = 1e-5 * w.abs() + 1e-6;
        let d = if g == w { 0.0 } else { (g - w).abs() };
        let d = if d.is_nan() { f64::INFINITY } else { d };
        if d / t > worst {
            (err, tol, worst) = (d, t, d / t);
        }
    }
    let acc_bad = o.accept.to_i64_vec().iter().zip(r_acc.to_i64_vec()).filter(|(a, b)| **a != *b).count()
        + o.accept.numel().abs_diff(r_acc.numel());
    let want_emit: Vec<i64> = r_emit.to_i64_vec();
    let got_emit: Vec<i64> = o.emitted.iter().map(|&v| v as i64).collect();
    let emit = if got_emit == want_emit {
        Check::equal("emitted", format!("{} tokens", got_emit.len()), format!("{} tokens", want_emit.len()))
    } else {
        let mut c = Check::equal("emitted", format!("{got_emit:?}"), format!("{want_emit:?}"));
        c.ok = false;
        c
    };
    Ok(vec![
        Check::tol("kl", err, tol),
        Check::exact("accept", acc_bad, gamma),
        Check::equal("accepted", o.accepted, accepted),
        emit,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sci_format() {
        assert_eq!(sci(3.05e-3), "3.05e-03");
        assert_eq!(sci(0.0), "0.00e+00");
        assert_eq!(sci(12345.0), "1.23e+04");
        assert_eq!(sci(f64::INFINITY), "inf");
    }

    #[test]
    fn checks() {
        assert!(Check::tol("a", 1e-3, 1e-2).ok);
        assert!(!Check::tol("a", f64::NAN, 1e-2).ok);
        assert!(!Check::tol("a", 2e-2, 1e-2).ok);
        assert!(Check::exact("c", 0, 10).ok && !Check::exact("c", 1, 10).ok);
        assert_eq!(Check::exact("c", 2, 10).detail, "c 2/10 differ");
        assert_eq!(rel_to_max(&[1.0, 2.5], &[1.0, 2.0]), 0.25);
        assert_eq!(max_abs_err(&[f64::NAN], &[1.0]), f64::INFINITY);
        assert_eq!(max_abs_err(&[f64::NEG_INFINITY], &[f64::NEG_INFINITY]), 0.0);
    }

    #[test]
    fn panics_are_caught_with_location() {
        let r: R<()> = run_caught(|| panic!("boom {}", 7));
        let m = r.unwrap_err();
        assert!(m.starts_with("panicked: boom 7 at ") && m.contains("verify.rs"), "{m}");
        assert_eq!(run_caught(|| Ok::<_, String>(3)), Ok(3));
    }

    #[test]
    fn xorshift_is_deterministic() {
        let mut a = XorShift::new(5);
        let mut b = XorShift::new(5);
        for _ in 0..10 {
            let (x, y) = (a.sym(), b.sym());
            assert_eq!(x, y);
            assert!((-1.0..1.0).contains(&x));
        }
    }
}
