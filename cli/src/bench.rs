//! `opc bench`: run issue 3's speed rows (`benches/src/rows.rs`) on a target and print one table
//! line per row: best time, GFLOP/s or GB/s, the fraction of this machine's limit measured in
//! the same run (`peak.c` / `bw.c` from `--tools`, built with the `Build and run:` line at their
//! tops, and `benches/tools/dotpeak.c`: the FMA throughput and, on hosts without AMX, the
//! `vdpbf16ps` limit of the bf16 rows) or given with `--peak-gflops` / `--amx-gflops` / `--bw-gbs`, and the speedup over a
//! baseline file written by `benches/torch_baseline.py` (`--baseline FILE`).

use std::path::{Path, PathBuf};
use std::time::Instant;

#[path = "../../benches/src/rows.rs"]
mod rows;

use rows::{Limit, Work};

/// Arguments of `opc bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Target to compile the operators for (see `opc targets`).
    #[arg(long, default_value = opc_codegen::DEFAULT_TARGET)]
    target: String,
    /// Only rows whose name contains one of these (comma-separated), e.g. gemm,kl.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    rows: Vec<String>,
    /// Timed runs per row after the warm-up run; the best is reported.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// AVX-512 FMA fp32 peak in GFLOP/s (skips running peak.c).
    #[arg(long, value_name = "GFLOPS")]
    peak_gflops: Option<f64>,
    /// AMX bf16 peak in GFLOP/s (skips running peak.c when --peak-gflops is given too).
    #[arg(long, value_name = "GFLOPS")]
    amx_gflops: Option<f64>,
    /// DRAM streaming read bandwidth in GB/s (skips running bw.c).
    #[arg(long, value_name = "GBS")]
    bw_gbs: Option<f64>,
    /// Directory holding peak.c and bw.c.
    #[arg(long, value_name = "DIR", default_value = "../shared/tools")]
    tools: PathBuf,
    /// Baseline JSON: {"name": ..., "rows": {ROW: {"ms": ...}}}, as written by
    /// benches/torch_baseline.py and benches/llamacpp_ops.py. Repeat for several baselines: the
    /// table gets a time and a speed-up column for each.
    #[arg(long, value_name = "FILE")]
    baseline: Vec<PathBuf>,
    /// List the rows and exit.
    #[arg(long)]
    list: bool,
}

/// The machine's limits for this run.
#[derive(Clone, Copy, Debug, Default)]
struct Limits {
    fma: Option<f64>,
    amx: Option<f64>,
    /// AVX-512 BF16 `vdpbf16ps` GFLOP/s (`benches/tools/dotpeak.c`): the bf16 rows' limit
    /// when the host has no AMX.
    dot_bf16: Option<f64>,
    bw: Option<f64>,
}

/// Build `tools/NAME.c` with the command on its `Build and run:` line (the part before `&&`)
/// in a scratch directory, run it and return its output.
pub(crate) fn run_tool(tools: &Path, name: &str) -> Result<String, String> {
    let src = tools.join(format!("{name}.c"));
    let text = std::fs::read_to_string(&src).map_err(|e| format!("cannot read {}: {e}", src.display()))?;
    run_source(name, &text)
}

/// Build the C program `text` (named `NAME.c`) as [`run_tool`] does, run it and return its output.
fn run_source(name: &str, text: &str) -> Result<String, String> {
    let line = text
        .lines()
        .find_map(|l| l.split_once("Build and run:").map(|(_, r)| r.trim().to_string()))
        .ok_or_else(|| format!("{name}.c has no `Build and run:` line"))?;
    let build = line.split("&&").next().unwrap_or("").trim().to_string();
    let dir = std::env::temp_dir().join(format!("opc-bench-tools-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    std::fs::write(dir.join(format!("{name}.c")), text).map_err(|e| e.to_string())?;
    let sh = |cmd: &str| -> Result<String, String> {
        let out = std::process::Command::new("sh").arg("-c").arg(cmd).current_dir(&dir).output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("`{cmd}` failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    // Line-buffered (`stdbuf`, when present) so that the figures printed before a crash survive:
    // peak.c dies with SIGILL after its FMA lines on CPUs without AMX.
    let run = if sh("command -v stdbuf").is_ok() { format!("stdbuf -oL ./{name}") } else { format!("./{name}") };
    let r = sh(&build).and_then(|_| {
        let out = std::process::Command::new("sh").arg("-c").arg(&run).current_dir(&dir).output().map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(text)
        } else if !text.trim().is_empty() {
            Ok(format!("{text}(`{run}` then failed: {})", out.status))
        } else {
            Err(format!("`{run}` failed: {} {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
    r
}

/// The largest number before `unit` on the lines containing `key` (peak.c prints 1 and 2 threads).
pub(crate) fn best_figure(out: &str, key: &str, unit: &str) -> Option<f64> {
    out.lines()
        .filter(|l| l.contains(key))
        .filter_map(|l| {
            let before = &l[..l.find(unit)?];
            before.split_whitespace().last()?.parse::<f64>().ok()
        })
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
}

fn measure_limits(a: &BenchArgs) -> (Limits, Vec<String>) {
    let mut l = Limits { fma: a.peak_gflops, amx: a.amx_gflops, dot_bf16: None, bw: a.bw_gbs };
    let mut notes = vec![];
    let mut peak_c_fma = None;
    if l.fma.is_none() || l.amx.is_none() {
        match run_tool(&a.tools, "peak") {
            Ok(out) => {
                peak_c_fma = best_figure(&out, "FMA fp32", "GFLOP/s");
                l.amx = l.amx.or(best_figure(&out, "AMX bf16", "GFLOP/s"));
                notes.push(format!("peak.c: {}", out.trim().replace('\n', "; ")));
            }
            Err(e) => notes.push(format!("peak.c not measured: {e}")),
        }
    }
    // dotpeak.c times independent FMA chains: gcc merges peak.c's twelve identical chains into
    // one, which times the FMA latency, not its throughput. Its figure is the FMA limit.
    if l.fma.is_none() || l.amx.is_none() {
        match run_source("dotpeak", include_str!("../../benches/tools/dotpeak.c")) {
            Ok(out) => {
                l.fma = l.fma.or(best_figure(&out, "FMA fp32 (independent chains)", "GFLOP/s"));
                if l.amx.is_none() {
                    l.dot_bf16 = best_figure(&out, "vdpbf16ps", "GFLOP/s");
                }
                notes.push(format!("dotpeak.c: {}", out.trim().replace('\n', "; ")));
            }
            Err(e) => notes.push(format!("dotpeak.c not measured: {e}")),
        }
    }
    l.fma = l.fma.or(peak_c_fma);
    if l.bw.is_none() {
        match run_tool(&a.tools, "bw") {
            Ok(out) => {
                l.bw = best_figure(&out, "streaming read", "GB/s");
                notes.push(format!("bw.c: {}", out.trim()));
            }
            Err(e) => notes.push(format!("bw.c not measured: {e}")),
        }
    }
    (l, notes)
}

/// Baseline times in ms by row name, and the baseline's name.
fn read_baseline(p: &Path) -> Result<(String, std::collections::HashMap<String, f64>), String> {
    let text = std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", p.display()))?;
    let name = v["name"].as_str().unwrap_or("baseline").to_string();
    let rows = v["rows"].as_object().ok_or_else(|| format!("{}: no \"rows\" object", p.display()))?;
    let mut m = std::collections::HashMap::new();
    for (k, r) in rows {
        if let Some(ms) = r["ms"].as_f64() {
            m.insert(k.clone(), ms);
        }
    }
    Ok((name, m))
}

/// `opc bench`. Errors: (exit code, message).
pub fn cmd_bench(a: &BenchArgs) -> Result<(), (u8, String)> {
    let selected: Vec<rows::Row> =
        rows::rows().into_iter().filter(|r| a.rows.is_empty() || a.rows.iter().any(|f| r.name.contains(f.as_str()))).collect();
    if a.list {
        for r in rows::rows() {
            println!("{:<24} {}", r.name, r.what);
        }
        return Ok(());
    }
    if selected.is_empty() {
        return Err((2, format!("error: no row matches {:?} (see `opc bench --list`)", a.rows)));
    }
    if a.reps == 0 {
        return Err((2, "error: --reps must be at least 1".into()));
    }
    let target = opc_codegen::target_by_name(&a.target).map_err(|e| (2, format!("error: {e}")))?;
    let baselines = a.baseline.iter().map(|p| read_baseline(p)).collect::<Result<Vec<_>, _>>().map_err(|e| (2, format!("error: {e}")))?;
    let (limits, notes) = measure_limits(a);
    for n in &notes {
        println!("# {n}");
    }
    let show = |x: Option<f64>| x.map_or("?".to_string(), |v| format!("{v:.1}"));
    println!(
        "# limits: FMA fp32 {} GFLOP/s, AMX bf16 {} GFLOP/s{}, DRAM read {} GB/s; target `{}`, best of {} runs",
        show(limits.fma),
        show(limits.amx),
        limits.dot_bf16.map_or(String::new(), |d| format!(" (no AMX: bf16 rows against vdpbf16ps {d:.1} GFLOP/s, marked *)")),
        show(limits.bw),
        a.target,
        a.reps
    );
    let ops = opc_ops::Ops::new(target);
    let mut header = format!("{:<24} {:>10} {:>14} {:>9}", "row", "ms", "rate", "of limit");
    for (name, _) in &baselines {
        header += &format!(" {:>12} {:>9}", format!("{name} ms"), "speedup");
    }
    if baselines.is_empty() {
        header += &format!(" {:>12} {:>9}", "baseline ms", "speedup");
    }
    println!("{header}  what");
    let mut failed = 0;
    for row in &selected {
        let mut p = match rows::prepare(row, &ops) {
            Ok(p) => p,
            Err(e) => {
                println!("{:<24} failed: {e}", row.name);
                failed += 1;
                continue;
            }
        };
        // OPC_PROFILE_KERNELS=1: the kernels of the timed runs (not of the compiling first run).
        if let Some(k) = ops.kernel_profile() {
            k.clear();
        }
        let mut best = f64::INFINITY;
        for _ in 0..a.reps {
            let t0 = Instant::now();
            if let Err(e) = p.run(&ops) {
                println!("{:<24} failed: {e}", row.name);
                failed += 1;
                break;
            }
            best = best.min(t0.elapsed().as_secs_f64());
        }
        if !best.is_finite() {
            continue;
        }
        let (rate, unit, value) = match row.work {
            Work::Flops(f) => (f / best / 1e9, "GFLOP/s", f / best / 1e9),
            Work::Bytes(b) => (b / best / 1e9, "GB/s", b / best / 1e9),
        };
        let (limit, mark) = match row.limit {
            Limit::Fma => (limits.fma, ""),
            Limit::Amx if limits.amx.is_none() && limits.dot_bf16.is_some() => (limits.dot_bf16, "*"),
            Limit::Amx => (limits.amx, ""),
            Limit::Bandwidth => (limits.bw, ""),
        };
        let frac = limit.map_or("?".to_string(), |l| format!("{:.1}%{mark}", 100.0 * value / l));
        let mut line = format!("{:<24} {:>10.2} {:>14} {:>9}", row.name, best * 1e3, format!("{rate:.1} {unit}"), frac);
        for (_, times) in &baselines {
            let (bms, speed) = match times.get(row.name) {
                Some(&ms) => (format!("{ms:.2}"), format!("{:.2}x", ms / (best * 1e3))),
                None => ("-".into(), "-".into()),
            };
            line += &format!(" {bms:>12} {speed:>9}");
        }
        if baselines.is_empty() {
            line += &format!(" {:>12} {:>9}", "-", "-");
        }
        println!("{line}  {}", row.what);
        if let Some(k) = ops.kernel_profile() {
            k.report().lines().for_each(|l| println!("#   {l}"));
        }
    }
    if failed > 0 {
        return Err((1, format!("error: {failed} row(s) failed")));
    }
    Ok(())
}
