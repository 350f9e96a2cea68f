//! opc's autotuner: a kernel's tunables (tile sizes declared with their search spaces in the
//! DSL) are explored on real launches for one shape on one target.
//!
//! A run ([`tune`]):
//! 1. compiles the kernel's default instance and reads its tunables and their spaces;
//! 2. builds one launch: dims from the user, random inputs, the given scalars ([`inputs`]);
//! 3. picks the configurations: the whole product of the spaces, or a seeded sample of it
//!    with the default first ([`space`]);
//! 4. compiles each through the real pipeline (`opc_dsl` → `opc_passes` → the target): a
//!    configuration the front end or the target rejects (a constraint, an on-chip budget) is
//!    recorded as rejected with the reason;
//! 5. launches each once and checks its outputs against the reference configuration's (the
//!    default, or the first that runs) with per-dtype tolerances ([`compare`]): a
//!    configuration that computes something else is recorded as wrong and never chosen;
//! 6. times the rest: launches until the run's minimum time has passed (at least 3), median
//!    and fastest, each launch on another copy of the inputs (more bytes than the L3 in all,
//!    so weights stream from DRAM as they do in a model);
//! 7. times the finalists again, together: the default, the extra configurations and the
//!    [`FINALISTS`] fastest take turns over [`FINAL_ROUNDS`] rounds, so that a shared
//!    machine's slow minute (or a quiet one) during one configuration's first timing does not
//!    choose the winner; their medians are then over the final rounds only, and the best
//!    configuration is the fastest finalist ([`Candidate::confirmed`]);
//! 8. returns every timing as [`db::Record`]s for the tuning database ([`db`]), which
//!    `opc_ops::Ops` reads to launch the best configuration of a (kernel, shape, machine).

pub mod compare;
pub mod db;
pub mod inputs;
pub mod space;

use std::sync::Arc;
use std::time::{Duration, Instant};

use opc_codegen::{Executable, Target};
use opc_dsl::Instance;
use opc_ir::{Arg, ArgRef, Kernel, ParamKind, Tensor};

pub use db::{Db, Key, KeyBase, Record};
pub use space::Config;

#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    /// The kernel's source does not compile (rendered diagnostics with file:line:col).
    #[error("{0}")]
    Source(String),
    /// Bad dims, scalars or pinned tunables.
    #[error("error: {0}")]
    Usage(String),
    /// No configuration compiles and launches.
    #[error("error: {0}")]
    NoConfiguration(String),
}

/// The fastest configurations of the first timing that are timed again in the final rounds
/// (besides the default and the extra configurations).
pub const FINALISTS: usize = 3;

/// Rounds of the final timing: each finalist is launched in every round, in a rotating order.
pub const FINAL_ROUNDS: usize = 5;

/// The default [`Request::cold_bytes`]: more than the L3 of the machines opc targets (this
/// host's is 105 MB).
pub const COLD_BYTES: usize = 256 << 20;

/// What to tune.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    /// The source's name in diagnostics.
    pub path: &'a str,
    pub source: &'a str,
    pub kernel: &'a str,
    /// Dtypes, consts and pinned tunables (these keep their value in every configuration).
    pub instance: Instance,
    /// Values of the kernel's dynamic dims.
    pub dims: Vec<(String, i64)>,
    /// Values of its scalar parameters, as text (parsed by the parameter's dtype).
    pub scalars: Vec<(String, String)>,
    /// At most this many configurations (the default included).
    pub max_configs: usize,
    /// Keep launching a configuration until this much time has passed (and at least 3 times).
    pub min_time: Duration,
    /// Seeds the inputs and the sampling of large spaces.
    pub seed: u64,
    /// Input tensors to launch with instead of random data, by parameter name (index tensors
    /// recorded from a real run: expert offsets, block tables, token ids).
    pub inputs: Vec<(String, Tensor)>,
    /// Timed launches rotate over copies of the inputs totalling at least this many bytes
    /// (at most 16 copies), so data the size of a weight matrix is read from DRAM as in a
    /// model, not from a cache the previous launch warmed ([`COLD_BYTES`]; 0: one copy).
    pub cold_bytes: usize,
    /// Configurations to measure besides the sampled ones (e.g. the one a driver's heuristic
    /// picks), right after the default.
    pub extra: Vec<Config>,
}

/// How one configuration fared.
#[derive(Clone, Debug, PartialEq)]
pub enum Status {
    Ok,
    /// Its outputs disagree with the reference's: where and by how much.
    Wrong(String),
    /// It does not compile or launch: why.
    Rejected(String),
}

/// One configuration's result.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub config: Config,
    pub status: Status,
    pub median_ms: Option<f64>,
    pub min_ms: Option<f64>,
    pub launches: u32,
    /// Timed again in the final rounds together with the other finalists; the median and
    /// minimum are then those rounds'.
    pub confirmed: bool,
}

impl Candidate {
    /// Ranking order: finalists first (their times were taken together), then by median.
    pub fn rank(&self) -> (bool, f64) {
        (!self.confirmed, self.median_ms.unwrap_or(f64::INFINITY))
    }
}

/// A finished run.
#[derive(Clone, Debug)]
pub struct Report {
    pub key: Key,
    /// The size of the search space (pinned tunables count once).
    pub space: u128,
    /// Every configuration tried, the default first.
    pub candidates: Vec<Candidate>,
    /// The run's records for the database.
    pub records: Vec<Record>,
}

impl Report {
    /// The fastest correct configuration (of the finalists, when there were final rounds).
    pub fn best(&self) -> Option<&Candidate> {
        self.candidates
            .iter()
            .filter(|c| c.status == Status::Ok && c.median_ms.is_some())
            .min_by(|a, b| a.rank().partial_cmp(&b.rank()).unwrap_or(std::cmp::Ordering::Equal))
    }

    /// The default configuration's median, when it ran.
    pub fn default_ms(&self) -> Option<f64> {
        self.candidates.first().filter(|c| c.status == Status::Ok).and_then(|c| c.median_ms)
    }
}

/// Run one tuning run (module docs); `progress` hears about each candidate as it finishes
/// (candidate, its number from 1, how many there are).
pub fn tune(target: &dyn Target, req: &Request, progress: &mut dyn FnMut(&Candidate, usize, usize)) -> Result<Report, TuneError> {
    let k0 = opc_dsl::compile(req.path, req.source, req.kernel, &req.instance).map_err(|d| TuneError::Source(d.to_string()))?;
    // (The front end has rejected pinned tunables the kernel does not declare, at the kernel.)
    let pinned: Vec<String> = req.instance.tunables.iter().map(|(n, _)| n.clone()).collect();
    let syms = inputs::sym_values(&k0, &req.dims)?;
    let mut args = inputs::random_args(&k0, &syms, &req.scalars, req.seed)?;
    inputs::replace(&k0, &mut args, &req.inputs)?;
    // The dims must satisfy the kernel's constraints before any configuration is blamed.
    opc_ir::launch::bind_dims(&k0, &args).map_err(|e| TuneError::Usage(e.to_string()))?;
    let key = Key::new(req.source, &k0, &syms, &target.machine());
    let (mut configs, space) = space::configs(&k0.tunables, &pinned, req.max_configs, req.seed);
    let mut placed = 0;
    for extra in &req.extra {
        // In declaration order; a tunable it leaves out takes the run's default.
        if let Some((n, _)) = extra.iter().find(|(n, _)| !k0.tunables.iter().any(|t| &t.name == n)) {
            return Err(TuneError::Usage(format!("kernel `{}` has no tunable `{n}` (in an extra configuration)", k0.name)));
        }
        let c: Config = k0
            .tunables
            .iter()
            .map(|t| (t.name.clone(), extra.iter().find(|(n, _)| *n == t.name).map_or(t.value, |(_, v)| *v)))
            .collect();
        match configs.iter().position(|x| *x == c) {
            Some(0) => continue, // the default: it stays first
            Some(at) => {
                configs.remove(at);
            }
            None => {}
        }
        placed += 1;
        configs.insert(placed.min(configs.len()), c);
    }
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);

    let input_bytes: usize = k0
        .params
        .iter()
        .zip(&args)
        .map(|(p, a)| match a {
            Arg::Tensor(t) if !is_output(p) => t.data.len(),
            _ => 0,
        })
        .sum();
    let copies = if input_bytes == 0 { 1 } else { req.cold_bytes.div_ceil(input_bytes).clamp(1, 16) };
    let mut arg_sets: Vec<Vec<Arg>> = (1..copies).map(|_| args.clone()).collect();
    arg_sets.insert(0, args);
    let mut reference: Option<Vec<Tensor>> = None;
    let mut candidates = Vec::with_capacity(configs.len());
    let mut executables = Vec::with_capacity(configs.len());
    for (i, config) in configs.iter().enumerate() {
        let (c, exe) = try_config(target, req, config, &arg_sets, &mut reference);
        progress(&c, i + 1, configs.len());
        candidates.push(c);
        executables.push(exe);
    }
    final_rounds(req, &arg_sets, &mut candidates, &executables, placed);
    if reference.is_none() {
        let why = match &candidates[0].status {
            Status::Rejected(r) => r.clone(),
            _ => "no reason given".into(),
        };
        return Err(TuneError::NoConfiguration(format!("no configuration of kernel `{}` compiles and launches; the default: {why}", k0.name)));
    }
    let records = candidates
        .iter()
        .enumerate()
        .map(|(i, c)| Record {
            key: key.clone(),
            run,
            tunables: c.config.clone(),
            status: match &c.status {
                Status::Ok => "ok".into(),
                Status::Wrong(w) => format!("wrong: {w}"),
                Status::Rejected(r) => format!("rejected: {r}"),
            },
            median_ms: c.median_ms,
            min_ms: c.min_ms,
            launches: c.launches,
            default: i == 0,
            confirmed: c.confirmed,
        })
        .collect();
    Ok(Report { key, space, candidates, records })
}

/// The instance of `config`: the request's dtypes and consts with these tunables.
pub fn instance_of(base: &Instance, config: &Config) -> Instance {
    Instance { dtypes: base.dtypes.clone(), consts: base.consts.clone(), tunables: config.clone() }
}

/// Compile `config`, check it against the reference (becoming the reference if there is none
/// yet), time it. The executable comes back for the final rounds when it timed.
fn try_config(target: &dyn Target, req: &Request, config: &Config, arg_sets: &[Vec<Arg>], reference: &mut Option<Vec<Tensor>>) -> (Candidate, Option<Arc<dyn Executable>>) {
    let args = &arg_sets[0];
    let done = |status, median_ms, min_ms, launches| Candidate { config: config.clone(), status, median_ms, min_ms, launches, confirmed: false };
    let exe = match compile(target, req, config) {
        Ok(e) => e,
        Err(why) => return (done(Status::Rejected(why), None, None, 0), None),
    };
    let kernel = exe.kernel().clone();
    let mut outs = fresh_outputs(&kernel, args);
    if let Err(e) = launch(&*exe, &kernel, args, &mut outs) {
        return (done(Status::Rejected(first_line(&e.to_string())), None, None, 0), None);
    }
    match reference {
        Some(r) => {
            for ((o, want), p) in outs.iter().zip(r.iter()).zip(kernel.params.iter().filter(|p| is_output(p))) {
                if let Err(w) = compare::agree(o, want) {
                    return (done(Status::Wrong(format!("`{}`: {w}", p.name)), None, None, 1), None);
                }
            }
        }
        None => *reference = Some(outs.clone()),
    }
    let mut times = vec![];
    if let Err(e) = time_for(&*exe, &mut outs, arg_sets, req.min_time, 3, &mut times) {
        return (done(Status::Rejected(first_line(&e.to_string())), None, None, times.len() as u32 + 1), None);
    }
    let (median, min) = median_min(&mut times);
    (done(Status::Ok, Some(median), Some(min), times.len() as u32 + 1), Some(exe))
}

/// Launch `exe` (writing `outs`) until `budget` has passed and at least `at_least` times, each
/// launch on the next copy of the inputs, appending each launch's milliseconds to `times`.
fn time_for(exe: &dyn Executable, outs: &mut [Tensor], arg_sets: &[Vec<Arg>], budget: Duration, at_least: usize, times: &mut Vec<f64>) -> opc_codegen::Result<()> {
    let start = Instant::now();
    let mut n = 0;
    while (n < at_least || start.elapsed() < budget) && n < 100_000 {
        let args = &arg_sets[(times.len() + 1) % arg_sets.len()];
        let t0 = Instant::now();
        launch(exe, exe.kernel(), args, outs)?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        n += 1;
    }
    Ok(())
}

/// The median and the minimum of `times` (not empty).
fn median_min(times: &mut [f64]) -> (f64, f64) {
    times.sort_by(|a, b| a.total_cmp(b));
    (times[times.len() / 2], times[0])
}

/// The final rounds (module docs, step 7): the default, the `extras` configurations placed
/// after it and the [`FINALISTS`] fastest others, when there are at least two, take turns over
/// [`FINAL_ROUNDS`] rounds of `min_time / FINAL_ROUNDS` each (at least 2 launches); their
/// medians and minimums become those of the final rounds.
fn final_rounds(req: &Request, arg_sets: &[Vec<Arg>], candidates: &mut [Candidate], timed: &[Option<Arc<dyn Executable>>], extras: usize) {
    // (exactly the configurations that ran correctly have an executable)
    let ok = |i: &usize| timed[*i].is_some();
    let mut finalists: Vec<usize> = (0..=extras.min(candidates.len() - 1)).filter(ok).collect();
    let mut by_time: Vec<usize> = (0..candidates.len()).filter(ok).filter(|i| !finalists.contains(i)).collect();
    by_time.sort_by(|&a, &b| candidates[a].rank().partial_cmp(&candidates[b].rank()).unwrap_or(std::cmp::Ordering::Equal));
    finalists.extend(by_time.into_iter().take(FINALISTS));
    if finalists.len() < 2 {
        return;
    }
    // Output buffers only for the finalists (every configuration's would be many copies of a
    // large output).
    let exes: Vec<&dyn Executable> = finalists.iter().map(|&i| &**timed[i].as_ref().expect("a finalist timed")).collect();
    let mut outs: Vec<Vec<Tensor>> = exes.iter().map(|e| fresh_outputs(e.kernel(), &arg_sets[0])).collect();
    let mut times: Vec<Vec<f64>> = vec![vec![]; finalists.len()];
    let mut failed = vec![false; finalists.len()];
    let slice = req.min_time / FINAL_ROUNDS as u32;
    for round in 0..FINAL_ROUNDS {
        for turn in 0..finalists.len() {
            let f = (turn + round) % finalists.len();
            if !failed[f] && time_for(exes[f], &mut outs[f], arg_sets, slice, 2, &mut times[f]).is_err() {
                // It launched before; a failure now keeps its first timing, unconfirmed.
                failed[f] = true;
            }
        }
    }
    for (f, &i) in finalists.iter().enumerate() {
        if failed[f] {
            continue;
        }
        let (median, min) = median_min(&mut times[f]);
        let c = &mut candidates[i];
        (c.median_ms, c.min_ms, c.launches, c.confirmed) = (Some(median), Some(min), c.launches + times[f].len() as u32, true);
    }
}

/// `config` through the real pipeline: DSL → passes → target.
fn compile(target: &dyn Target, req: &Request, config: &Config) -> Result<Arc<dyn Executable>, String> {
    let inst = instance_of(&req.instance, config);
    let mut k = opc_dsl::compile(req.path, req.source, req.kernel, &inst).map_err(|d| diag_line(&d))?;
    opc_passes::run_pipeline(&mut k, &Default::default()).map_err(|e| first_line(&e.to_string()))?;
    target.compile(&k).map_err(|e| first_line(&e.to_string()))
}

/// A diagnostic's message without its source excerpt.
fn diag_line(d: &opc_dsl::Diagnostics) -> String {
    match d.diags.first() {
        Some(x) => x.message.clone(),
        None => first_line(&d.rendered),
    }
}

fn first_line(s: &str) -> String {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or(s).trim().to_string()
}

fn is_output(p: &opc_ir::Param) -> bool {
    matches!(p.kind, ParamKind::Tensor { output: true, .. })
}

/// Zeroed output tensors, in parameter order.
fn fresh_outputs(kernel: &Kernel, args: &[Arg]) -> Vec<Tensor> {
    kernel
        .params
        .iter()
        .zip(args)
        .filter(|(p, _)| is_output(p))
        .map(|(_, a)| match a {
            Arg::Tensor(t) => Tensor::zeros(t.dtype, &t.shape),
            _ => unreachable!("an output parameter is a tensor"),
        })
        .collect()
}

/// Launch on the shared inputs, writing `outs`.
fn launch(exe: &dyn Executable, kernel: &Kernel, args: &[Arg], outs: &mut [Tensor]) -> opc_codegen::Result<()> {
    let mut out_iter = outs.iter_mut();
    let mut refs: Vec<ArgRef> = kernel
        .params
        .iter()
        .zip(args)
        .map(|(p, a)| match a {
            Arg::Tensor(_) if is_output(p) => ArgRef::Out(out_iter.next().expect("one output tensor per output parameter")),
            Arg::Tensor(t) => ArgRef::In(t),
            Arg::F32(x) => ArgRef::F32(*x),
            Arg::I32(x) => ArgRef::I32(*x),
            Arg::Bool(b) => ArgRef::Bool(*b),
        })
        .collect();
    exe.launch_refs(&mut refs)
}
