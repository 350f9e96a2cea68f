//! `opc`: the operator compiler's command line.
//!
//! Exit codes: 0 success, 1 a check failed (diagnostics, failing fixtures, compile errors),
//! 2 usage or I/O errors (and internal errors).

mod bench;
mod model_cmds;
mod tune_cmd;

use clap::{Parser, Subcommand, ValueEnum};
use opc_dsl::Instance;
use opc_ir::DType;
use std::cell::RefCell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// opc: an operator compiler for LLM kernels (tiling DSL → tile IR → passes → targets).
#[derive(Parser, Debug)]
#[command(name = "opc", version, propagate_version = true)]
#[command(after_help = "Examples:\n  opc check ops/kernels/flash_attention.opc\n  opc build ops/kernels/blocks.opc --kernel matmul --dtype T=bf16 --emit ir\n  opc verify --fixtures ../shared/fixtures")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Type-check every kernel of a .opc file; print the kernel names or the diagnostics.
    #[command(after_help = "Example:\n  opc check ops/kernels/flash_attention.opc\n  → ok: kernels flash_attention, flash_decode_split, ...")]
    Check {
        /// The .opc source file.
        file: PathBuf,
    },
    /// Compile one kernel: instantiate it, run the pass pipeline, compile for a target, and
    /// optionally print the IR.
    #[command(after_help = "Examples:\n  opc build ops/kernels/blocks.opc --kernel matmul --dtype T=bf16 --tunable BM=32 --emit ir\n  opc build attn.opc --const D=64 --dump-after cse --dump-after dce\n  opc build attn.opc --emit ir -o attn.ir")]
    Build(BuildArgs),
    /// Run every operator against the reference fixtures in DIR/ops and report one line per
    /// (case, kernel); exits 1 if any fails.
    #[command(after_help = "Examples:\n  opc verify --fixtures ../shared/fixtures\n  opc verify --fixtures ../shared/fixtures --filter attention/gqa")]
    Verify {
        /// Fixture directory (holding `ops/*.safetensors`).
        #[arg(long, value_name = "DIR")]
        fixtures: PathBuf,
        /// Target to compile the operator kernels for (see `opc targets`).
        #[arg(long, default_value = opc_codegen::DEFAULT_TARGET)]
        target: String,
        /// Only run lines whose `file/case kernel` label contains this text.
        #[arg(long, value_name = "TEXT")]
        filter: Option<String>,
    },
    /// List the passes of the default pipeline, in order.
    #[command(after_help = "Example:\n  opc passes\n  opc build k.opc --dump-after $(opc passes | head -1)")]
    Passes,
    /// List the code generation targets.
    #[command(after_help = "Example:\n  opc targets\n  opc build k.opc --target interp")]
    Targets,
    /// Run the speed rows (GEMM, attention, GEMV, MoE, KL judge) and print a table against the
    /// machine's limits and an optional baseline.
    #[command(after_help = "Examples:\n  opc bench\n  opc bench --rows gemm,kl --peak-gflops 250 --amx-gflops 1500 --bw-gbs 33\n  opc bench --baseline torch_baseline.json --baseline llamacpp_ops.json")]
    Bench(bench::BenchArgs),
    /// Autotune a kernel for one shape: compile every configuration of its tunables (or a
    /// seeded sample), check each against the default's output, time them, print them fastest
    /// first and record every timing in the tuning database, from which the operator library
    /// launches the best configuration for that shape on this machine.
    #[command(after_help = "Examples:\n  opc tune ops/kernels/blocks.opc --kernel matmul --dtype T=f32 --dim M=1024 --dim N=1024 --dim K=1024 --scalar has_bias=false\n  opc tune ops/kernels/blocks.opc --kernel rmsnorm --dtype T=bf16 --dtype O=bf16 --dim T=512 --dim H=2048 --scalar eps=1e-6 --target cpu\n  opc tune k.opc --kernel attn --const D=64 --dim S=2048 --tunable BM=64 --max-configs 16 --no-record")]
    Tune(tune_cmd::TuneArgs),
    /// Compare a model's logits and greedy tokens with a reference file; exits 1 on mismatch.
    #[command(after_help = "Example:\n  opc eval --model ../shared/fixtures/models/llama-tiny --reference ../shared/fixtures/models/llama-tiny/reference.safetensors")]
    Eval(model_cmds::EvalArgs),
    /// Generate text from a prompt (streamed), optionally with a draft model (speculative decoding).
    #[command(after_help = "Examples:\n  opc run --model DIR --prompt \"Once upon a time\" --max-tokens 32\n  opc run --model TARGET --draft DRAFT --kl-tau 0.5 --gamma 4 --prompt TEXT\n  opc run --model TARGET --draft DRAFT --temperature 0.8 --seed 1 --prompt TEXT   (lossless speculative sampling)")]
    Run(model_cmds::RunArgs),
    /// Measure a model's prefill, batch-1 and batched decode tokens/s against the DRAM
    /// bandwidth limit (bw.c, measured in the same run).
    #[command(after_help = "Example:\n  opc model init --arch llama --layers 16 --hidden 2048 --heads 32 --kv-heads 8 --intermediate 5632 --vocab 32000 -o /tmp/llama\n  opc bench-model --model /tmp/llama --prompt-tokens 512 --decode-tokens 32 --batch 8 --baselines transformers.json --baselines llamacpp.json")]
    BenchModel(model_cmds::BenchModelArgs),
    /// Model checkpoint tools: `opc model init` writes a random-weight checkpoint.
    Model {
        #[command(subcommand)]
        cmd: model_cmds::ModelCmd,
    },
}

#[derive(clap::Args, Debug)]
struct BuildArgs {
    /// The .opc source file.
    file: PathBuf,
    /// Kernel to build (default: the first kernel of the file).
    #[arg(long, value_name = "NAME")]
    kernel: Option<String>,
    /// What to print after the pipeline (to stdout, or to -o).
    #[arg(long, value_enum)]
    emit: Option<Emit>,
    /// Print the IR after this pass (repeatable; `all` for every pass; see `opc passes`).
    #[arg(long = "dump-after", value_name = "PASS")]
    dump_after: Vec<String>,
    /// Skip this pass (repeatable).
    #[arg(long = "disable-pass", value_name = "PASS")]
    disable_pass: Vec<String>,
    #[command(flatten)]
    instance: InstanceArgs,
    /// Target to compile for (see `opc targets`).
    #[arg(long, default_value = opc_codegen::DEFAULT_TARGET)]
    target: String,
    /// Write the output here: with `--emit ir` the IR file; otherwise the target's
    /// ahead-of-time artifact directory (code + manifest.json).
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    output: Option<PathBuf>,
    /// Target architecture for renderers, e.g. sm_80, sm_90a.
    #[arg(long, value_name = "ARCH")]
    arch: Option<String>,
}

/// How to instantiate a kernel (`opc build`, `opc tune`): its dtypes, consts and tunables.
#[derive(clap::Args, Debug)]
struct InstanceArgs {
    /// Bind a type variable: VAR=DTYPE (repeatable), e.g. T=bf16.
    #[arg(long = "dtype", value_name = "VAR=DTYPE", value_parser = parse_dtype_binding)]
    dtypes: Vec<(String, DType)>,
    /// Specialize a const dim: DIM=INT (repeatable), e.g. D=64.
    #[arg(long = "const", value_name = "DIM=INT", value_parser = parse_const_binding)]
    consts: Vec<(String, i64)>,
    /// Set a tunable: NAME=INT (repeatable), e.g. BM=32 (`opc tune` explores the others).
    #[arg(long = "tunable", value_name = "NAME=INT", value_parser = parse_tunable_binding)]
    tunables: Vec<(String, i64)>,
}

impl InstanceArgs {
    fn instance(&self) -> Instance {
        Instance { dtypes: self.dtypes.clone(), consts: self.consts.clone(), tunables: self.tunables.clone() }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Emit {
    /// The instantiated tile IR after the pass pipeline (textual form, parses back).
    Ir,
    /// The loop-and-buffer plan of the CPU targets (`--target cpu` or `llvm`): buffers, views,
    /// loop nests, accesses.
    Loops,
}

fn split_binding<'a>(flag: &str, what: &str, example: &str, s: &'a str) -> Result<(&'a str, &'a str), String> {
    let err = || format!("{flag} expects {what}, e.g. {example}; got {s:?}");
    let (k, v) = s.split_once('=').ok_or_else(err)?;
    let (k, v) = (k.trim(), v.trim());
    let ident = !k.is_empty()
        && k.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ident || v.is_empty() {
        return Err(err());
    }
    Ok((k, v))
}

fn parse_dtype_binding(s: &str) -> Result<(String, DType), String> {
    let (k, v) = split_binding("--dtype", "VAR=DTYPE", "T=bf16", s)?;
    let d = DType::from_name(v).ok_or_else(|| {
        let names: Vec<_> = DType::ALL.iter().map(|d| d.name()).collect();
        format!("unknown dtype {v:?} in --dtype {s} (dtypes: {})", names.join(", "))
    })?;
    Ok((k.to_string(), d))
}

fn parse_int_binding(flag: &str, what: &str, example: &str, s: &str) -> Result<(String, i64), String> {
    let (k, v) = split_binding(flag, what, example, s)?;
    let n = v.parse::<i64>().map_err(|_| format!("{flag} expects {what}, e.g. {example}; got {s:?} ({v:?} is not an integer)"))?;
    Ok((k.to_string(), n))
}

fn parse_const_binding(s: &str) -> Result<(String, i64), String> {
    parse_int_binding("--const", "DIM=INT", "D=64", s)
}

fn parse_tunable_binding(s: &str) -> Result<(String, i64), String> {
    parse_int_binding("--tunable", "NAME=INT", "BM=32", s)
}

/// A failure: message for stderr and the exit code.
struct Fail {
    code: u8,
    msg: String,
}

fn usage(msg: impl Into<String>) -> Fail {
    Fail { code: 2, msg: msg.into() }
}
fn failed(msg: impl Into<String>) -> Fail {
    Fail { code: 1, msg: msg.into() }
}

fn read_source(path: &Path) -> Result<String, Fail> {
    std::fs::read_to_string(path).map_err(|e| usage(format!("error: cannot read {}: {e}", path.display())))
}

fn cmd_check(file: &Path) -> Result<(), Fail> {
    let src = read_source(file)?;
    let path = file.display().to_string();
    match opc_dsl::check(&path, &src) {
        Ok(names) => {
            if names.is_empty() {
                println!("ok: no kernels");
            } else {
                println!("ok: kernels {}", names.join(", "));
            }
            Ok(())
        }
        Err(d) => Err(failed(d.to_string())),
    }
}

/// A target's compile error; one about DSL locations (a tile over the on-chip budget, ...) is
/// rendered like a DSL error: `file:line:col`, the source lines with a caret at each location,
/// then the details.
fn codegen_failed(path: &str, src: &str, kernel: &str, target: &str, e: opc_codegen::CodegenError) -> Fail {
    if let opc_codegen::CodegenError::AtSource { reason, notes, .. } = &e {
        let (first, rest) = reason.split_once('\n').unwrap_or((reason, ""));
        let notes: Vec<(u32, u32, String)> = notes.iter().map(|(l, label)| (l.line, l.col, label.clone())).collect();
        let head = format!("kernel `{kernel}` does not compile for target `{target}`: {first}");
        return failed(format!("{}{rest}", opc_dsl::diag::render_notes(path, src, &head, &notes, None)));
    }
    failed(format!("error: kernel `{kernel}` does not compile for target `{target}`: {e}"))
}

fn cmd_build(a: &BuildArgs) -> Result<(), Fail> {
    // Flags first: unknown target / pass names are usage errors whatever the source says.
    // A target runs in-process (`Target`), writes code out (`Renderer`), or both.
    let target = opc_codegen::target_by_name(&a.target).ok();
    if target.is_none() && opc_codegen::artifact::renderer_by_name(&a.target).is_err() {
        let e = opc_codegen::target_by_name(&a.target).err().expect("unknown target");
        return Err(usage(format!("error: {e}")));
    }
    let known = opc_passes::pass_names();
    if !known.is_empty() {
        for p in a.dump_after.iter().chain(&a.disable_pass) {
            if p != "all" && !known.contains(&p.as_str()) {
                return Err(usage(format!("error: {}", opc_passes::PassError::UnknownPass(p.clone(), known.join(", ")))));
            }
        }
    }
    let src = read_source(&a.file)?;
    let path = a.file.display().to_string();
    let kernel = match &a.kernel {
        Some(k) => k.clone(),
        None => {
            let names = opc_dsl::check(&path, &src).map_err(|d| failed(d.to_string()))?;
            names.into_iter().next().ok_or_else(|| failed(format!("error: {path} defines no kernels")))?
        }
    };
    let inst = a.instance.instance();
    let mut k = opc_dsl::compile(&path, &src, &kernel, &inst).map_err(|d| failed(d.to_string()))?;
    let opts = opc_passes::PipelineOptions { dump_after: a.dump_after.clone(), disabled: a.disable_pass.clone() };
    let dumps = opc_passes::run_pipeline(&mut k, &opts).map_err(|e| match e {
        opc_passes::PassError::UnknownPass(..) => usage(format!("error: {e}")),
        other => failed(format!("error: {other}")),
    })?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let io = |e: std::io::Error| usage(format!("error: cannot write to stdout: {e}"));
    for d in &dumps {
        writeln!(out, "// ----- after {} -----", d.pass).map_err(io)?;
        write!(out, "{}", d.ir).map_err(io)?;
        if !d.ir.ends_with('\n') {
            writeln!(out).map_err(io)?;
        }
    }
    // `-o DIR` without `--emit ir`: the target's ahead-of-time artifact (code + manifest.json).
    if let (Some(dir), None) = (&a.output, &a.emit) {
        let renderer = opc_codegen::artifact::renderer_by_name(&a.target).map_err(|e| usage(format!("error: {e}")))?;
        let art = renderer
            .render(&k, &opc_codegen::RenderOptions { arch: a.arch.clone() })
            .map_err(|e| codegen_failed(&path, &src, &kernel, &a.target, e))?;
        write_artifact(dir, &art)?;
        eprintln!("ok: wrote {} ({} files + manifest.json)", dir.display(), art.files.len());
        return Ok(());
    }
    if let Some(target) = &target {
        target
            .compile(&k)
            .map_err(|e| codegen_failed(&path, &src, &kernel, &a.target, e))?;
    }
    let emit = a.emit.is_some() || a.output.is_some();
    if emit {
        let ir = match a.emit {
            Some(Emit::Loops) => {
                let t = opc_codegen::loops::LoopTarget::by_name(&a.target)
                    .ok_or_else(|| usage(format!("error: --emit loops is for the CPU targets `cpu` and `llvm`, not `{}`", a.target)))?;
                opc_codegen::loops::plan_kernel(&k, t).to_string()
            }
            _ => opc_ir::printer::print_kernel(&k),
        };
        match &a.output {
            Some(p) => std::fs::write(p, &ir).map_err(|e| usage(format!("error: cannot write {}: {e}", p.display())))?,
            None => {
                write!(out, "{ir}").map_err(io)?;
                if !ir.ends_with('\n') {
                    writeln!(out).map_err(io)?;
                }
            }
        }
    }
    if !emit && dumps.is_empty() {
        eprintln!("ok: built kernel `{kernel}` for target `{}`", a.target);
    }
    Ok(())
}

/// Write an artifact's files and its `manifest.json` into `dir` (created if missing).
fn write_artifact(dir: &Path, art: &opc_codegen::Artifact) -> Result<(), Fail> {
    let io = |p: &Path, e: std::io::Error| usage(format!("error: cannot write {}: {e}", p.display()));
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    for (name, bytes) in &art.files {
        let p = dir.join(name);
        std::fs::write(&p, bytes).map_err(|e| io(&p, e))?;
    }
    let p = dir.join("manifest.json");
    let text = serde_json::to_string_pretty(&art.manifest).expect("manifest is plain JSON");
    std::fs::write(&p, text + "\n").map_err(|e| io(&p, e))
}

fn cmd_verify(dir: &Path, target: &str, filter: Option<&str>) -> Result<(), Fail> {
    if !dir.is_dir() {
        return Err(usage(format!("error: fixture directory {} does not exist", dir.display())));
    }
    let t = opc_codegen::target_by_name(target).map_err(|e| usage(format!("error: {e}")))?;
    let ops = opc_ops::Ops::new(t);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let sum = opc_runtime::verify_fixtures_filtered(dir, &ops, &mut out, filter).map_err(|e| usage(format!("error: {e}")))?;
    if sum.failed > 0 {
        Err(Fail { code: 1, msg: String::new() })
    } else {
        Ok(())
    }
}

fn run(cli: Cli) -> Result<(), Fail> {
    match cli.cmd {
        Cmd::Check { file } => cmd_check(&file),
        Cmd::Build(a) => cmd_build(&a),
        Cmd::Verify { fixtures, target, filter } => cmd_verify(&fixtures, &target, filter.as_deref()),
        Cmd::Passes => {
            for p in opc_passes::pass_names() {
                println!("{p}");
            }
            Ok(())
        }
        Cmd::Eval(a) => model_cmds::eval(&a),
        Cmd::Run(a) => model_cmds::run(&a),
        Cmd::BenchModel(a) => model_cmds::bench_model(&a),
        Cmd::Model { cmd } => model_cmds::model(&cmd),
        Cmd::Bench(a) => bench::cmd_bench(&a).map_err(|(code, msg)| Fail { code, msg }),
        Cmd::Tune(a) => tune_cmd::tune(&a),
        Cmd::Targets => {
            for t in opc_codegen::TARGETS {
                println!("{t:<12} runs in-process (opc verify / opc build --target {t})");
            }
            for t in opc_codegen::artifact::RENDERERS {
                println!("{t:<12} writes code + manifest.json (opc build --target {t} -o DIR)");
            }
            Ok(())
        }
    }
}

thread_local! {
    static PANIC_MSG: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn main() -> ExitCode {
    let cli = Cli::parse(); // usage errors: clap prints them and exits 2; --help/--version exit 0
    // Report panics as internal errors instead of crashing with a backtrace prompt.
    std::panic::set_hook(Box::new(|info| {
        let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
            s.to_string()
        } else if let Some(s) = info.payload().downcast_ref::<String>() {
            s.clone()
        } else {
            "(non-string panic payload)".to_string()
        };
        let loc = info.location().map(|l| format!(" at {}:{}:{}", l.file(), l.line(), l.column())).unwrap_or_default();
        PANIC_MSG.with(|m| *m.borrow_mut() = Some(format!("{msg}{loc}")));
    }));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli)));
    match r {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(f)) => {
            if !f.msg.is_empty() {
                eprintln!("{}", f.msg.trim_end());
            }
            ExitCode::from(f.code)
        }
        Err(_) => {
            let msg = PANIC_MSG.with(|m| m.borrow_mut().take()).unwrap_or_else(|| "unknown panic".into());
            eprintln!("error: internal compiler error: {msg}");
            ExitCode::from(2)
        }
    }
}
