//! `opc tune`: explore a kernel's tunables for one shape on one target (`opc_tune`), print the
//! configurations fastest first, and record every timing in the tuning database, where the
//! operator library (`opc run`, `opc bench`, `opc eval`) finds the best one for that shape.

use std::path::PathBuf;
use std::time::Duration;

use opc_dsl::Instance;
use opc_tune::{Candidate, Status};

use crate::{failed, parse_int_binding, read_source, split_binding, usage, Fail, InstanceArgs};

#[derive(clap::Args, Debug)]
pub struct TuneArgs {
    /// The .opc source file.
    #[arg(required_unless_present_any = ["list", "model"])]
    file: Option<PathBuf>,
    /// Tune a whole model instead: run a prefill and decode steps of this checkpoint, then
    /// tune every distinct kernel launch they made (longest total time first), with the
    /// launch's own dims, scalars and index tensors.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["file", "list", "kernel", "dims", "scalars", "tunables", "dtypes", "consts"])]
    model: Option<PathBuf>,
    /// With --model: the prompt length of the prefill whose launches are tuned.
    #[arg(long, default_value_t = 512, requires = "model")]
    prompt_tokens: usize,
    /// With --model: also tune the launches of batched decode of this many sequences.
    #[arg(long, default_value_t = 1, requires = "model")]
    batch: usize,
    /// With --model: compute dtype of the linears' inputs (as `opc bench-model`).
    #[arg(long, default_value = "f32", value_name = "f32|bf16", requires = "model")]
    activations: String,
    /// With --model: tune only the N launches with the longest total time.
    #[arg(long, value_name = "N", requires = "model")]
    top: Option<usize>,
    /// Print the database's best configuration per (kernel, dims, machine) instead of tuning.
    #[arg(long, conflicts_with_all = ["kernel", "dims", "scalars", "no_record"])]
    list: bool,
    /// Kernel to tune (default: the first kernel of the file).
    #[arg(long, value_name = "NAME")]
    kernel: Option<String>,
    #[command(flatten)]
    instance: InstanceArgs,
    /// The shape to tune for: a value for each dynamic dim, DIM=INT (repeatable), e.g. M=512.
    #[arg(long = "dim", value_name = "DIM=INT", value_parser = parse_dim_binding)]
    dims: Vec<(String, i64)>,
    /// A scalar parameter's value: NAME=VALUE (repeatable), e.g. has_bias=false, scale=0.125.
    #[arg(long = "scalar", value_name = "NAME=VALUE", value_parser = parse_scalar_binding)]
    scalars: Vec<(String, String)>,
    /// Target to tune for (see `opc targets`).
    #[arg(long, default_value = opc_codegen::DEFAULT_TARGET)]
    target: String,
    /// Try at most this many configurations (a seeded sample when the space is larger).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    max_configs: u32,
    /// Launch each configuration for at least this many milliseconds (and at least 3 times).
    #[arg(long, default_value_t = 200)]
    min_time_ms: u64,
    /// Seed of the random inputs and of the sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The tuning database to record in (default: $OPC_TUNE_DB, else tune.jsonl in the
    /// compile cache directory).
    #[arg(long, value_name = "FILE")]
    db: Option<PathBuf>,
    /// Time every launch on the same inputs (cache-warm) instead of rotating over copies of
    /// them that together exceed the L3 (what a model's weight-streaming kernels see).
    #[arg(long)]
    warm: bool,
    /// Measure and print only; record nothing.
    #[arg(long)]
    no_record: bool,
}

fn parse_dim_binding(s: &str) -> Result<(String, i64), String> {
    parse_int_binding("--dim", "DIM=INT", "M=512", s)
}

fn parse_scalar_binding(s: &str) -> Result<(String, String), String> {
    let (k, v) = split_binding("--scalar", "NAME=VALUE", "has_bias=false", s)?;
    Ok((k.to_string(), v.to_string()))
}

fn config_text(c: &Candidate) -> String {
    if c.config.is_empty() {
        return "(no tunables)".into();
    }
    c.config.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join(" ")
}

/// `opc tune --list`: the best configuration of every key in the database.
fn list(db: Option<opc_tune::Db>) -> Result<(), Fail> {
    let Some(db) = db else {
        println!("the tuning database is off ($OPC_TUNE_DB or $OPC_CACHE_DIR is `off`)");
        return Ok(());
    };
    let records = db.load().map_err(|e| usage(format!("error: cannot read {}: {e}", db.path.display())))?;
    let best = opc_tune::db::best_per_key(&records);
    println!("{}: {} records, {} tuned (kernel, dims, machine)", db.path.display(), records.len(), best.len());
    if !best.is_empty() {
        println!("{:<22} {:<36} {:<32} {:>10} {:>10}  machine", "kernel", "dims", "best", "median ms", "× default");
    }
    for (key, r) in &best {
        let cfg: Vec<String> = r.tunables.iter().map(|(n, v)| format!("{n}={v}")).collect();
        let vs = match (opc_tune::db::default_ms(&records, r), r.median_ms) {
            (Some(d), Some(m)) => format!("{:.2}×", d / m),
            _ => "-".into(),
        };
        let machine: String = key.machine.chars().take(40).collect();
        let consts = if key.consts.is_empty() { String::new() } else { format!(" <{}>", key.consts) };
        println!(
            "{:<22} {:<36} {:<32} {:>10.4} {vs:>10}  {machine}",
            format!("{}{consts}", key.kernel),
            key.dims,
            cfg.join(" "),
            r.median_ms.unwrap_or(f64::NAN)
        );
    }
    Ok(())
}

pub fn tune(a: &TuneArgs) -> Result<(), Fail> {
    let db = if a.no_record {
        None
    } else {
        match &a.db {
            Some(p) => Some(opc_tune::Db::at(p)),
            None => opc_tune::Db::from_env(),
        }
    };
    if let Some(dir) = &a.model {
        return tune_model(a, dir, db);
    }
    let Some(file) = a.file.as_ref().filter(|_| !a.list) else {
        return list(db);
    };
    let target = opc_codegen::target_by_name(&a.target).map_err(|e| usage(format!("error: {e}")))?;
    let src = read_source(file)?;
    let path = file.display().to_string();
    let kernel = match &a.kernel {
        Some(k) => k.clone(),
        None => {
            let names = opc_dsl::check(&path, &src).map_err(|d| failed(d.to_string()))?;
            names.into_iter().next().ok_or_else(|| failed(format!("error: {path} defines no kernels")))?
        }
    };
    let req = opc_tune::Request {
        path: &path,
        source: &src,
        kernel: &kernel,
        instance: a.instance.instance(),
        dims: a.dims.clone(),
        scalars: a.scalars.clone(),
        max_configs: a.max_configs as usize,
        min_time: Duration::from_millis(a.min_time_ms),
        seed: a.seed,
        inputs: vec![],
        extra: vec![],
        cold_bytes: if a.warm { 0 } else { opc_tune::COLD_BYTES },
    };
    let mut progress = |c: &Candidate, i: usize, n: usize| {
        let what = match (&c.status, c.median_ms) {
            (Status::Ok, Some(ms)) => format!("{ms:.3} ms"),
            (Status::Wrong(_), _) => "wrong".into(),
            (Status::Rejected(_), _) => "rejected".into(),
            _ => String::new(),
        };
        eprintln!("  [{i}/{n}] {:<40} {what}", config_text(c));
    };
    let report = opc_tune::tune(&*target, &req, &mut progress).map_err(|e| match e {
        opc_tune::TuneError::Usage(_) => usage(e.to_string()),
        _ => failed(e.to_string()),
    })?;

    println!(
        "kernel `{kernel}` ({path}) on `{}`, dims {}: {} of {} configurations",
        a.target,
        if report.key.dims.is_empty() { "(none)" } else { &report.key.dims },
        report.candidates.len(),
        report.space
    );
    let default_ms = report.default_ms();
    let mut ok: Vec<&Candidate> = report.candidates.iter().filter(|c| c.status == Status::Ok).collect();
    // finalists first (timed together in the final rounds), each group by median
    ok.sort_by(|x, y| x.rank().partial_cmp(&y.rank()).unwrap_or(std::cmp::Ordering::Equal));
    println!("{:>4}  {:<40} {:>11} {:>11} {:>10}", "rank", "tunables", "median ms", "min ms", "× default");
    for (rank, c) in ok.iter().enumerate() {
        let (med, min) = (c.median_ms.unwrap_or(f64::NAN), c.min_ms.unwrap_or(f64::NAN));
        let speedup = default_ms.map(|d| format!("{:.2}×", d / med)).unwrap_or_else(|| "-".into());
        let mut mark = if c.confirmed { "  final".to_string() } else { String::new() };
        if std::ptr::eq(*c, &report.candidates[0]) {
            mark.push_str("  (default)");
        }
        println!("{:>4}  {:<40} {med:>11.4} {min:>11.4} {speedup:>10}{mark}", rank + 1, config_text(c));
    }
    if ok.iter().any(|c| c.confirmed) {
        println!("(final: timed again in {} alternating rounds with the default and the first timing's fastest; their medians are those rounds', the others' their first timing's)", opc_tune::FINAL_ROUNDS);
    }
    for c in report.candidates.iter().filter(|c| c.status != Status::Ok) {
        let (kind, why) = match &c.status {
            Status::Wrong(w) => ("WRONG", w),
            Status::Rejected(r) => ("rejected", r),
            Status::Ok => unreachable!(),
        };
        println!("{:>4}  {:<40} {kind}: {why}", "-", config_text(c));
    }
    if let Some(b) = report.best() {
        let flags: Vec<String> = b.config.iter().map(|(n, v)| format!("--tunable {n}={v}")).collect();
        let vs = match (default_ms, b.median_ms) {
            (Some(d), Some(m)) => format!(" ({:.2}× the default)", d / m),
            _ => String::new(),
        };
        println!("best: {}{vs}", if flags.is_empty() { "(no tunables)".into() } else { flags.join(" ") });
    }
    record(db, &report.records, "")
}

/// Append a run's records to the database (if any) and say so; exit 1 when a configuration
/// computed something else than the reference (a compiler bug) whatever was recorded.
fn record(db: Option<opc_tune::Db>, records: &[opc_tune::Record], then: &str) -> Result<(), Fail> {
    match db {
        Some(db) => {
            db.append(records).map_err(|e| usage(format!("error: cannot record the timings in {}: {e}", db.path.display())))?;
            println!("recorded {} timings in {}{then}", records.len(), db.path.display());
        }
        None => println!("recorded nothing (--no-record, or the tuning database is off)"),
    }
    let wrong = records.iter().filter(|r| r.status.starts_with("wrong")).count();
    if wrong > 0 {
        return Err(failed(format!("error: {wrong} configuration(s) computed a different result from the reference configuration (a compiler bug: please report it)")));
    }
    Ok(())
}

/// `opc tune --model DIR`: log the launches of a warm-up prefill and decode (the drivers'
/// heuristic instances, no tuned ones), then tune each distinct launch, measuring the
/// heuristic's configuration next to the sampled ones.
fn tune_model(a: &TuneArgs, dir: &std::path::Path, db: Option<opc_tune::Db>) -> Result<(), Fail> {
    let mut model = crate::model_cmds::load_with(dir, &a.target, &a.activations, |ops| ops.with_tune_db(None).with_launch_log())?;
    model.warm_up(a.prompt_tokens, 1).map_err(crate::model_cmds::model_err)?;
    if a.batch > 1 {
        model.warm_up(1, a.batch).map_err(crate::model_cmds::model_err)?;
    }
    let target = opc_codegen::target_by_name(&a.target).map_err(|e| usage(format!("error: {e}")))?;
    let mut launches = model.ops.launch_log().expect("the launch log is on").launches();
    let total = launches.len();
    if let Some(n) = a.top {
        launches.truncate(n);
    }
    println!("model {}: {total} distinct kernel launches in a {}-token prefill and decode; tuning {}", dir.display(), a.prompt_tokens, launches.len());
    let mut rows = vec![];
    let mut records = vec![];
    for (i, l) in launches.iter().enumerate() {
        let source = opc_ops::Ops::source(&l.file).expect("a library file");
        let path = format!("ops/kernels/{}.opc", l.file);
        let what = format!("{}::{} {}", l.file, l.kernel, opc_tune::db::dims_text(&l.dims));
        eprintln!("[{}/{}] {what}", i + 1, launches.len());
        let req = opc_tune::Request {
            path: &path,
            source,
            kernel: &l.kernel,
            instance: Instance { dtypes: l.inst.dtypes.clone(), consts: l.inst.consts.clone(), tunables: vec![] },
            dims: l.dims.clone(),
            scalars: l.scalars.clone(),
            max_configs: a.max_configs as usize,
            min_time: Duration::from_millis(a.min_time_ms),
            seed: a.seed,
            inputs: l.int_inputs.clone(),
            extra: vec![l.inst.tunables.clone()],
            cold_bytes: if a.warm { 0 } else { opc_tune::COLD_BYTES },
        };
        let report = match opc_tune::tune(&*target, &req, &mut |_, _, _| {}) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("  skipped: {}", e.to_string().lines().next().unwrap_or(""));
                continue;
            }
        };
        // The heuristic's configuration (the default when they coincide: measured once, first).
        let is_heuristic = |c: &&Candidate| l.inst.tunables.iter().all(|t| c.config.contains(t));
        let heuristic = report.candidates.iter().find(is_heuristic).unwrap_or(&report.candidates[0]);
        let best = report.best();
        rows.push((what, l.count, heuristic.clone(), best.cloned(), report.candidates.len()));
        records.extend(report.records);
    }
    println!("{:<58} {:>6} {:>7} {:<24} {:>10} {:<24} {:>10} {:>7}", "launch", "count", "configs", "heuristic", "ms", "best", "ms", "speedup");
    for (what, count, h, best, n) in &rows {
        let (bc, bms) = best.as_ref().map_or(("-".to_string(), f64::NAN), |b| (config_text(b), b.median_ms.unwrap_or(f64::NAN)));
        let hms = h.median_ms.unwrap_or(f64::NAN);
        println!("{what:<58} {count:>6} {n:>7} {:<24} {hms:>10.4} {bc:<24} {bms:>10.4} {:>6.2}×", config_text(h), hms / bms);
    }
    record(db, &records, "; `opc bench-model`, `opc run` and `opc eval` now launch the best configurations")
}
