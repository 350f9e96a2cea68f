//! `opc eval`, `opc run`, `opc bench-model` and `opc model init`: the model runtime on the
//! command line.

use crate::{failed, usage, Fail};
use opc_runtime::model::bench::{baselines, bench, BenchSpec};
use opc_runtime::model::eval::evaluate;
use opc_runtime::model::generate::{generate, generate_batch, generate_speculative, Decoding, GenOptions, GenStats, Verifier};
use opc_runtime::model::init::{InitSpec, TOKENIZER_TOKENS};
use opc_runtime::model::{Activations, Arch, Model, ModelError, Tokenizer};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Model directory (config.json, model.safetensors[.index.json], tokenizer.json).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Reference file (default: DIR/reference.safetensors).
    #[arg(long, value_name = "FILE")]
    pub reference: Option<PathBuf>,
    /// Compute dtype of the linears' inputs: f32 (default; logits as transformers in f32) or
    /// bf16 (bf16 checkpoints run bf16×bf16 GEMMs with f32 accumulation, as llama.cpp and
    /// transformers in bf16 do; norms, softmax, the KV cache and the residual stay f32).
    #[arg(long, default_value = "f32", value_name = "f32|bf16")]
    pub activations: String,
    /// Target to compile the operators for (see `opc targets`).
    #[arg(long, default_value = opc_codegen::DEFAULT_TARGET)]
    pub target: String,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Model directory.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Prompt text (encoded with the model's tokenizer.json).
    #[arg(long, value_name = "TEXT")]
    pub prompt: String,
    /// Tokens to generate at most.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Sample among the k most likely tokens only.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Nucleus sampling mass in (0, 1].
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop after this token id (repeatable; default: the config's eos_token_id).
    #[arg(long = "stop", value_name = "ID")]
    pub stop: Vec<u32>,
    /// Do not stop at the end-of-sequence token.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Draft model directory: speculative decoding. At temperature 0 the draft's greedy tokens
    /// are verified by the kl_judge operator (--kl-tau); at temperature > 0 they are sampled
    /// and verified by lossless speculative sampling (accept with min(1, p/q), resample the
    /// residual), whose output is distributed as sampling the target alone.
    #[arg(long, value_name = "DIR")]
    pub draft: Option<PathBuf>,
    /// KL-judge threshold τ (nats) for greedy speculative decoding; 0 (the default) reproduces
    /// the target's greedy output exactly, larger values accept more drafts. Not allowed with
    /// --temperature > 0 (lossless sampling has no threshold).
    #[arg(long, value_name = "T")]
    pub kl_tau: Option<f32>,
    /// Draft tokens per verification step.
    #[arg(long, default_value_t = 4)]
    pub gamma: usize,
    /// With --draft: skip running the target alone afterwards (which measures the speed-up).
    #[arg(long)]
    pub no_compare: bool,
    /// Decode this many copies of the prompt as one batch (greedy) and report throughput.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Compute dtype of the linears' inputs: f32 (default; logits as transformers in f32) or
    /// bf16 (bf16 checkpoints run bf16×bf16 GEMMs with f32 accumulation, as llama.cpp and
    /// transformers in bf16 do; norms, softmax, the KV cache and the residual stay f32).
    #[arg(long, default_value = "f32", value_name = "f32|bf16")]
    pub activations: String,
    /// Target to compile the operators for.
    #[arg(long, default_value = opc_codegen::DEFAULT_TARGET)]
    pub target: String,
}

#[derive(clap::Args, Debug)]
pub struct BenchModelArgs {
    /// Model directory (e.g. written by `opc model init`).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Prompt length of the timed prefill (random token ids).
    #[arg(long, default_value_t = 512)]
    pub prompt_tokens: usize,
    /// Decode steps timed at batch 1 and at --batch.
    #[arg(long, default_value_t = 32)]
    pub decode_tokens: usize,
    /// Sequences decoded together in the batched run (1: skip it).
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Prompt length of each sequence of the batched run.
    #[arg(long, default_value_t = 64)]
    pub batch_prompt_tokens: usize,
    /// DRAM read bandwidth in GB/s (skips running bw.c).
    #[arg(long, value_name = "GBS")]
    pub bw_gbs: Option<f64>,
    /// Directory holding bw.c.
    #[arg(long, value_name = "DIR", default_value = "../shared/tools")]
    pub tools: PathBuf,
    /// Print the per-operator time of the timed runs (with OPC_PROFILE_KERNELS=1 in the
    /// environment, also the time of every kernel instance they launched).
    #[arg(long)]
    pub profile: bool,
    /// Baseline prefill tokens/s to compare with (e.g. the faster of llama.cpp and transformers).
    #[arg(long, value_name = "TOK_S")]
    pub baseline_prefill: Option<f64>,
    /// Baseline batch-1 decode tokens/s to compare with.
    #[arg(long, value_name = "TOK_S")]
    pub baseline_decode: Option<f64>,
    /// Baselines measured in this session (repeatable): the JSON of benches/model_baseline.py
    /// (transformers) or benches/llamacpp_baseline.sh (llama.cpp); the row of this model (by
    /// directory name) is printed next to opc's figures with the ratios.
    #[arg(long, value_name = "FILE")]
    pub baselines: Vec<PathBuf>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Compute dtype of the linears' inputs: f32 (default; logits as transformers in f32) or
    /// bf16 (bf16 checkpoints run bf16×bf16 GEMMs with f32 accumulation, as llama.cpp and
    /// transformers in bf16 do; norms, softmax, the KV cache and the residual stay f32).
    #[arg(long, default_value = "f32", value_name = "f32|bf16")]
    pub activations: String,
    /// Target to compile the operators for.
    #[arg(long, default_value = opc_codegen::DEFAULT_TARGET)]
    pub target: String,
}

#[derive(clap::Subcommand, Debug)]
pub enum ModelCmd {
    /// Write a random-weight checkpoint in the real Hugging Face layout.
    #[command(after_help = "Examples:\n  opc model init --arch llama --layers 16 --hidden 2048 --heads 32 --kv-heads 8 --intermediate 5632 --vocab 32000 -o /tmp/llama\n  opc model init --arch gpt-oss --layers 12 --hidden 2048 --intermediate 2048 --experts 16 --top-k 4 --head-dim 64 --heads 32 --kv-heads 8 --vocab 32000 -o /tmp/gptoss")]
    Init(InitArgs),
}

#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// llama, qwen3-moe, gpt-oss or moge (Pangu Pro MoE).
    #[arg(long)]
    pub arch: String,
    #[arg(long, default_value_t = 2)]
    pub layers: usize,
    #[arg(long, default_value_t = 128)]
    pub hidden: usize,
    /// MLP intermediate size (per expert for MoE models).
    #[arg(long, default_value_t = 256)]
    pub intermediate: usize,
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    #[arg(long, default_value_t = 2)]
    pub kv_heads: usize,
    /// Default: hidden / heads.
    #[arg(long)]
    pub head_dim: Option<usize>,
    #[arg(long, default_value_t = 512)]
    pub vocab: usize,
    #[arg(long, default_value_t = 8)]
    pub experts: usize,
    #[arg(long, default_value_t = 2)]
    pub top_k: usize,
    /// MoGE expert groups (one expert per group per token).
    #[arg(long, default_value_t = 4)]
    pub groups: usize,
    /// MoGE shared-expert intermediate size (0: none).
    #[arg(long, default_value_t = 0)]
    pub shared_intermediate: usize,
    /// gpt-oss sliding window of the even layers.
    #[arg(long, default_value_t = 128)]
    pub sliding_window: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Shard the weights into files of at most this many MiB (0: one file).
    #[arg(long, default_value_t = 0)]
    pub shard_mib: usize,
    /// tokenizer.json to copy into the checkpoint (default: a byte-level BPE tokenizer.json and
    /// tokenizer_config.json are written when --vocab >= 257).
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
    /// Output directory.
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    pub output: PathBuf,
}

pub(crate) fn model_err(e: ModelError) -> Fail {
    usage(format!("error: {e}"))
}

fn load(dir: &Path, target: &str, activations: &str) -> Result<Model, Fail> {
    load_with(dir, target, activations, |ops| ops)
}

/// [`load`] with the operator library set up by `setup` (launch log, tuning database).
pub(crate) fn load_with(dir: &Path, target: &str, activations: &str, setup: impl FnOnce(opc_ops::Ops) -> opc_ops::Ops) -> Result<Model, Fail> {
    let act: Activations = activations.parse().map_err(|e| usage(format!("error: --activations: {e}")))?;
    let t = opc_codegen::target_by_name(target).map_err(|e| usage(format!("error: {e}")))?;
    let mut m = Model::load(dir, setup(opc_ops::Ops::new(t))).map_err(model_err)?;
    m.activations = act;
    Ok(m)
}

pub fn eval(a: &EvalArgs) -> Result<(), Fail> {
    let reference = a.reference.clone().unwrap_or_else(|| a.model.join("reference.safetensors"));
    let mut model = load(&a.model, &a.target, &a.activations)?;
    let tok = Tokenizer::load(&a.model).ok();
    let r = evaluate(&mut model, &reference, tok.as_ref()).map_err(model_err)?;
    println!("model {} ({}, {} layers) on target {}", a.model.display(), model.cfg.arch.hf_name(), model.cfg.layers, a.target);
    let tol = match model.activations {
        Activations::F32 => format!("{:.0e}", r.tolerance),
        Activations::Bf16 => format!("{:.3e}: bf16 activations, max |reference logit| / 64", r.tolerance),
    };
    println!("logits: max abs error {:.3e} over {}x{} (tolerance {tol})", r.max_abs_err, r.positions, r.vocab);
    println!("top-1 agreement: {}/{}", r.top1_agree, r.positions);
    if r.greedy_match() {
        println!("greedy tokens: {}/{} identical", r.greedy.len(), r.reference_greedy.len());
    } else {
        let at = r.greedy.iter().zip(&r.reference_greedy).position(|(a, b)| a != b).unwrap_or(r.greedy.len().min(r.reference_greedy.len()));
        println!("greedy tokens: differ at {at}: got {:?}, reference {:?}", r.greedy, r.reference_greedy);
        if let Some((i, margin)) = r.divergence {
            let verdict = if margin <= r.tolerance { "a near tie, within" } else { "beyond" };
            println!("  at {i} the model prefers its token by {margin:.3e} over the reference's: {verdict} the tolerance");
        }
    }
    match r.tokenizer_agrees {
        Some(true) => println!("tokenizer: the reference prompt encodes to input_ids"),
        Some(false) => println!("tokenizer: the reference prompt does NOT encode to input_ids"),
        None => {}
    }
    if r.pass() {
        println!("PASS");
        Ok(())
    } else {
        println!("FAIL");
        Err(failed(String::new()))
    }
}

/// The progress line: prefill and decode tokens/s, and the kernel compilation they met on the
/// way (excluded from both).
fn progress(s: &GenStats) -> String {
    let compiling = if s.compile_secs >= 0.0005 { format!(" | {:.3} s compiling kernels, not counted", s.compile_secs) } else { String::new() };
    format!(
        "prefill {} tok in {:.3} s ({:.1} tok/s) | decode {} tok in {:.3} s ({:.1} tok/s){compiling}",
        s.prompt_tokens,
        s.prefill_secs,
        s.prefill_tok_s(),
        s.generated.saturating_sub(1),
        s.decode_secs,
        s.decode_tok_s()
    )
}

pub fn run(a: &RunArgs) -> Result<(), Fail> {
    let mut model = load(&a.model, &a.target, &a.activations)?;
    let tok = Tokenizer::load(&a.model).map_err(model_err)?;
    let prompt = tok.encode(&a.prompt).map_err(model_err)?;
    let decoding = if a.temperature > 0.0 {
        Decoding::Sample { params: opc_ops::model::SampleParams { temperature: a.temperature, top_k: a.top_k, top_p: a.top_p }, seed: a.seed }
    } else {
        Decoding::Greedy
    };
    let mut stop = a.stop.clone();
    if !a.ignore_eos && stop.is_empty() {
        stop = model.cfg.eos.clone();
    }
    let opts = GenOptions { max_tokens: a.max_tokens, stop, decoding };
    if a.batch > 1 {
        if a.draft.is_some() || decoding != Decoding::Greedy {
            return Err(usage("error: --batch decodes greedily without a draft model"));
        }
        let prompts = vec![prompt; a.batch];
        let (outs, s) = generate_batch(&mut model, &prompts, a.max_tokens).map_err(model_err)?;
        for o in &outs {
            println!("{}", tok.decode(o).map_err(model_err)?);
        }
        eprintln!("batch {}: {}", a.batch, progress(&s));
        return Ok(());
    }
    let stdout = std::io::stdout();
    let mut detok = opc_runtime::model::tokenizer::Detokenizer::new();
    let mut stream = |id: u32| -> Result<(), ModelError> {
        let text = detok.push(&tok, id)?;
        let mut o = stdout.lock();
        let _ = write!(o, "{text}");
        let _ = o.flush();
        Ok(())
    };
    match &a.draft {
        None => {
            // compile the kernels first, so the progress line times the model, not the compiler
            let c = model.warm_up(prompt.len(), 1).map_err(model_err)?;
            eprintln!("compiled kernels in {c:.2} s");
            let (_, s) = generate(&mut model, &prompt, &opts, &mut stream).map_err(model_err)?;
            println!();
            eprintln!("{}", progress(&s));
        }
        Some(ddir) => {
            let verifier = Verifier::for_decoding(&opts.decoding, a.kl_tau).map_err(model_err)?;
            let mut draft = load(ddir, &a.target, &a.activations)?;
            // an untimed short run compiles most kernel instances both models use and faults in
            // their weights; instances first met later are compiled in the timed run, whose
            // times leave that compilation out (`GenStats::compile_secs`)
            let t0 = std::time::Instant::now();
            let short = GenOptions { max_tokens: opts.max_tokens.min(2 * a.gamma + 2), ..opts.clone() };
            generate_speculative(&mut model, &mut draft, &prompt, &short, a.gamma, verifier, |_| Ok(())).map_err(model_err)?;
            if !a.no_compare {
                generate(&mut model, &prompt, &short, |_| Ok(())).map_err(model_err)?;
            }
            eprintln!("compiled kernels (warm-up run) in {:.2} s", t0.elapsed().as_secs_f64());
            let (out, s) = generate_speculative(&mut model, &mut draft, &prompt, &opts, a.gamma, verifier, &mut stream).map_err(model_err)?;
            println!();
            eprintln!("{}", progress(&s));
            let sp = s.spec.clone().unwrap_or_default();
            let rule = match verifier {
                Verifier::KlJudge { tau } => format!("kl_judge tau {tau}"),
                Verifier::Lossless { temperature, .. } => format!("lossless sampling at temperature {temperature}"),
            };
            eprintln!(
                "speculative ({rule}), gamma {}: {} target forwards, accepted drafts per step {:?}, mean accepted {:.2}, {:.2} tokens per target forward",
                sp.gamma,
                sp.accepted.len(),
                sp.accepted,
                sp.mean_accepted(),
                sp.tokens_per_step()
            );
            if !a.no_compare {
                let (base, bs) = generate(&mut model, &prompt, &opts, |_| Ok(())).map_err(model_err)?;
                eprintln!("target alone: {}", progress(&bs));
                let same = match verifier {
                    Verifier::KlJudge { tau } if tau <= 0.0 => format!("; output {} the target's greedy output", if base == out { "identical to" } else { "DIFFERS from" }),
                    _ => String::new(),
                };
                eprintln!(
                    "speed-up {:.2}x (decode {:.1} -> {:.1} tok/s){same}",
                    s.decode_tok_s() / bs.decode_tok_s().max(1e-9),
                    bs.decode_tok_s(),
                    s.decode_tok_s()
                );
            }
        }
    }
    Ok(())
}

/// `opc bench-model`: bw.c first (same run), then the model benchmark, then one report.
pub fn bench_model(a: &BenchModelArgs) -> Result<(), Fail> {
    let baselines = a.baselines.iter().map(|p| baselines::read(p, &a.model)).collect::<Result<Vec<_>, _>>().map_err(|e| usage(format!("error: {e}")))?;
    let bw = match a.bw_gbs {
        Some(b) => Some(b),
        None => match crate::bench::run_tool(&a.tools, "bw") {
            Ok(out) => {
                println!("# bw.c: {}", out.trim().replace('\n', "; "));
                crate::bench::best_figure(&out, "streaming read", "GB/s")
            }
            Err(e) => {
                println!("# bw.c not measured: {e}");
                None
            }
        },
    };
    let t0 = std::time::Instant::now();
    let mut model = load(&a.model, &a.target, &a.activations)?;
    let load_secs = t0.elapsed().as_secs_f64();
    model.profile.set_enabled(a.profile);
    let spec = BenchSpec { prompt_tokens: a.prompt_tokens, decode_tokens: a.decode_tokens, batch: a.batch, batch_prompt_tokens: a.batch_prompt_tokens, seed: a.seed };
    let r = bench(&mut model, &spec).map_err(model_err)?;
    let c = &model.cfg;
    println!(
        "model {} ({}, {} layers, hidden {}, vocab {}) on target {}; load {:.2} s, kernel compile (warm-up) {:.2} s",
        a.model.display(),
        c.arch.hf_name(),
        c.layers,
        c.hidden,
        c.vocab,
        a.target,
        load_secs,
        r.compile_secs
    );
    let vs = |x: f64, b: Option<f64>| b.map_or(String::new(), |b| format!(" ({:.2}x the baseline {b:.1})", x / b));
    println!("prefill {} tokens: {:.1} tok/s{}", a.prompt_tokens, r.prefill_tok_s, vs(r.prefill_tok_s, a.baseline_prefill));
    println!("decode batch 1 ({} steps after the prompt): {:.2} tok/s{}", a.decode_tokens, r.decode_tok_s, vs(r.decode_tok_s, a.baseline_decode));
    if let Some(b) = r.batch_decode_tok_s {
        println!("decode batch {} ({} steps, prompts of {}): {:.2} tok/s, {:.2}x batch 1", a.batch, a.decode_tokens, a.batch_prompt_tokens, b, b / r.decode_tok_s.max(1e-9));
    }
    if !baselines.is_empty() {
        println!("# same-run baselines ({}):", baselines::model_key(&a.model));
        print!("{}", baselines::table(&r, a.prompt_tokens, a.decode_tokens, &baselines));
    }
    println!("weights read per decode token: {:.3} GB", r.decode_weight_bytes as f64 / 1e9);
    match bw {
        Some(bw) => {
            let lim = r.bandwidth_limit(bw);
            println!("bandwidth {bw:.1} GB/s (bw.c, this run): limit {lim:.2} tok/s; batch-1 decode at {:.1}% of the limit", 100.0 * r.decode_tok_s / lim);
        }
        None => println!("bandwidth unknown: pass --bw-gbs or --tools DIR with bw.c"),
    }
    for (what, table) in &r.profiles {
        println!("# profile: {what}");
        print!("{table}");
    }
    Ok(())
}

pub fn model(cmd: &ModelCmd) -> Result<(), Fail> {
    match cmd {
        ModelCmd::Init(a) => init(a),
    }
}

fn init(a: &InitArgs) -> Result<(), Fail> {
    let arch = match a.arch.as_str() {
        "llama" => Arch::Llama,
        "qwen3-moe" | "qwen3_moe" => Arch::Qwen3Moe,
        "gpt-oss" | "gpt_oss" => Arch::GptOss,
        "moge" | "pangu" => Arch::PanguMoge,
        other => return Err(usage(format!("error: unknown --arch `{other}` (llama, qwen3-moe, gpt-oss, moge)"))),
    };
    if a.heads == 0 {
        return Err(usage("error: --heads must be at least 1"));
    }
    let spec = InitSpec {
        arch,
        vocab: a.vocab,
        hidden: a.hidden,
        intermediate: a.intermediate,
        layers: a.layers,
        heads: a.heads,
        kv_heads: a.kv_heads,
        head_dim: a.head_dim.unwrap_or(a.hidden / a.heads),
        experts: a.experts,
        top_k: if arch == Arch::PanguMoge { a.groups } else { a.top_k },
        groups: a.groups,
        shared_intermediate: a.shared_intermediate,
        sliding_window: a.sliding_window,
        seed: a.seed,
        shard_bytes: a.shard_mib << 20,
    };
    let bytes = spec.write(&a.output).map_err(model_err)?;
    if let Some(t) = &a.tokenizer {
        let to = a.output.join("tokenizer.json");
        std::fs::copy(t, &to).map_err(|e| usage(format!("error: cannot copy {} to {}: {e}", t.display(), to.display())))?;
    } else if spec.vocab >= TOKENIZER_TOKENS {
        spec.write_tokenizer(&a.output).map_err(model_err)?;
    } else {
        eprintln!("note: no tokenizer.json written (the byte-level tokenizer needs --vocab >= {TOKENIZER_TOKENS}); pass --tokenizer FILE");
    }
    eprintln!("ok: wrote {} ({}, {:.3} B parameters, {:.1} MiB)", a.output.display(), arch.hf_name(), spec.parameters() as f64 / 1e9, bytes as f64 / (1 << 20) as f64);
    Ok(())
}
