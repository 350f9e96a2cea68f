//! The default pass pipeline (one list, read top to bottom) and the runner that executes a list
//! of passes: after each pass it verifies the IR, records timing, logs the IR if it changed and
//! captures the dumps asked for.
use std::time::{Duration, Instant};

use opc_ir::Kernel;

use crate::{Cse, Dce, Dump, FoldConstants, Licm, Pass, PassError, PipelineOptions, Result, SimplifyBroadcasts};

/// A pass as the runner sees it: its name and its entry point.
#[derive(Clone, Copy, Debug)]
pub struct PassEntry {
    pub name: &'static str,
    pub run: fn(&mut Kernel) -> bool,
}

const fn entry<P: Pass>() -> PassEntry {
    PassEntry { name: P::NAME, run: P::run }
}

/// The default pipeline over instantiated tile IR, in order.
pub const PIPELINE: &[PassEntry] = &[
    entry::<FoldConstants>(),
    entry::<SimplifyBroadcasts>(),
    entry::<Cse>(),
    entry::<Licm>(),
    // licm moves the invariants of sibling loops (and of nested loops) into one block, where
    // duplicates that lived in different loop bodies can now be merged.
    entry::<Cse>(),
    entry::<Dce>(),
];

/// Every pass, once, for [`crate::run_passes`] and name validation.
pub const REGISTRY: &[PassEntry] =
    &[entry::<FoldConstants>(), entry::<SimplifyBroadcasts>(), entry::<Cse>(), entry::<Licm>(), entry::<Dce>()];

/// What the runner recorded for one pass that ran.
#[derive(Clone, Debug)]
pub struct PassRecord {
    pub name: &'static str,
    pub changed: bool,
    pub elapsed: Duration,
}

pub(crate) fn lookup(name: &str) -> Option<PassEntry> {
    REGISTRY.iter().copied().find(|e| e.name == name)
}

pub(crate) fn unknown(name: &str) -> PassError {
    let names: Vec<_> = REGISTRY.iter().map(|e| e.name).collect();
    PassError::UnknownPass(name.to_string(), names.join(", "))
}

fn env_flag(var: &str) -> Option<bool> {
    std::env::var(var).ok().map(|v| v != "0" && !v.is_empty())
}

/// Verify after every pass unless `OPC_VERIFY=0`: the verifier costs microseconds per kernel,
/// far below code generation, and a pass bug caught here names the pass instead of surfacing as
/// wrong numbers in a backend.
fn verify_enabled() -> bool {
    env_flag("OPC_VERIFY").unwrap_or(true)
}

fn verify(kernel: &Kernel, pass: &str) -> Result<()> {
    opc_ir::verify::verify(kernel).map_err(|err| PassError::Verify { pass: pass.to_string(), err })
}

/// Run `entries` in order over `kernel` (names in `opts` are validated first); returns the dumps
/// and what each pass did and took (for a `--time-passes` table).
pub fn run_entries(
    kernel: &mut Kernel,
    entries: &[PassEntry],
    opts: &PipelineOptions,
) -> Result<(Vec<Dump>, Vec<PassRecord>)> {
    for n in &opts.dump_after {
        if n != "all" && lookup(n).is_none() {
            return Err(unknown(n));
        }
    }
    for n in &opts.disabled {
        if lookup(n).is_none() {
            return Err(unknown(n));
        }
    }
    let dump_all = opts.dump_after.iter().any(|n| n == "all");
    let check = verify_enabled();
    let log = env_flag("OPC_LOG_PASSES").unwrap_or(false);
    let time = env_flag("OPC_TIME_PASSES").unwrap_or(false);

    if check {
        verify(kernel, "(input)")?;
    }
    let mut dumps = vec![];
    let mut records = vec![];
    for e in entries {
        if opts.disabled.iter().any(|n| n == e.name) {
            continue;
        }
        let start = Instant::now();
        let changed = (e.run)(kernel);
        let elapsed = start.elapsed();
        if check {
            verify(kernel, e.name)?;
        }
        if log && changed {
            eprintln!("opc: `{}` after {}:\n{}", kernel.name, e.name, opc_ir::printer::print_kernel(kernel));
        }
        if dump_all || opts.dump_after.iter().any(|n| n == e.name) {
            dumps.push(Dump { pass: e.name.to_string(), ir: opc_ir::printer::print_kernel(kernel) });
        }
        records.push(PassRecord { name: e.name, changed, elapsed });
    }
    if time {
        eprintln!("opc: pass timings for `{}`:", kernel.name);
        for r in &records {
            eprintln!("  {:<22} {:>10.3} ms{}", r.name, r.elapsed.as_secs_f64() * 1e3, if r.changed { "" } else { "  (no change)" });
        }
    }
    Ok((dumps, records))
}
