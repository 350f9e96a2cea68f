//! Generation: greedy or sampled (temperature, top-k, top-p, seeded), stop tokens, streaming
//! through a callback, batched greedy decoding of several sequences, and speculative decoding
//! with a draft model: greedy drafts verified by the `kl_judge` operator (threshold τ), sampled
//! drafts by lossless speculative sampling (the `spec_sample` operator).
//!
//! Token choice is operator work too: greedy is the `topk` kernel with k = 1, sampling the
//! `sample_sorted` / `sample_full` kernels fed with host-drawn uniforms, verification `kl_judge`
//! or `spec_sample`.

use super::error::{ModelError, Result};
use super::kv::{KvCache, SeqId};
use super::llm::{Model, Segment};
use super::BLOCK_SIZE;
use opc_ir::{DType, Tensor};
use opc_ops::model::{self as mops, SampleParams};
use std::time::Instant;

/// How the next token is chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decoding {
    Greedy,
    Sample { params: SampleParams, seed: u64 },
}

#[derive(Clone, Debug)]
pub struct GenOptions {
    pub max_tokens: usize,
    /// Generation stops after emitting one of these.
    pub stop: Vec<u32>,
    pub decoding: Decoding,
}

/// Acceptance statistics of speculative decoding.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpecStats {
    pub gamma: usize,
    /// Draft tokens accepted at each verification step (0..=γ).
    pub accepted: Vec<usize>,
}

impl SpecStats {
    /// Mean draft tokens accepted per verification step.
    pub fn mean_accepted(&self) -> f64 {
        self.accepted.iter().sum::<usize>() as f64 / self.accepted.len().max(1) as f64
    }

    /// Mean tokens emitted per target forward (accepted drafts + the target's own token).
    pub fn tokens_per_step(&self) -> f64 {
        if self.accepted.is_empty() {
            return 0.0;
        }
        self.accepted.iter().map(|&a| a as f64 + 1.0).sum::<f64>() / self.accepted.len() as f64
    }
}

#[derive(Clone, Debug, Default)]
pub struct GenStats {
    pub prompt_tokens: usize,
    pub generated: usize,
    /// Wall time of the prefill and of the decoding, less the time spent compiling kernel
    /// instances met for the first time on the way (`compile_secs`): a speculative step meeting
    /// a new token count compiles, and that is not the model's speed.
    pub prefill_secs: f64,
    pub decode_secs: f64,
    /// Seconds spent compiling kernels during the prefill and the decoding.
    pub compile_secs: f64,
    pub spec: Option<SpecStats>,
}

/// Wall time of a region, split into kernel compilation ([`opc_ops::compile_secs`]) and the rest.
struct Stopwatch {
    start: Instant,
    compile0: f64,
}

impl Stopwatch {
    fn start() -> Stopwatch {
        Stopwatch { start: Instant::now(), compile0: opc_ops::compile_secs() }
    }

    /// (seconds not compiling, seconds compiling) since `start`.
    fn split(&self) -> (f64, f64) {
        let compile = opc_ops::compile_secs() - self.compile0;
        ((self.start.elapsed().as_secs_f64() - compile).max(0.0), compile)
    }
}

impl GenStats {
    /// Close the prefill region.
    fn end_prefill(&mut self, sw: &Stopwatch) {
        let (run, compile) = sw.split();
        self.prefill_secs = run;
        self.compile_secs += compile;
    }

    /// Close the decode region.
    fn end_decode(&mut self, sw: &Stopwatch) {
        let (run, compile) = sw.split();
        self.decode_secs = run;
        self.compile_secs += compile;
    }

    pub fn prefill_tok_s(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_secs.max(1e-9)
    }
    /// Tokens after the first (which the prefill produces) per second of decoding.
    pub fn decode_tok_s(&self) -> f64 {
        self.generated.saturating_sub(1) as f64 / self.decode_secs.max(1e-9)
    }
}

/// splitmix64: the uniforms fed to the sampling kernels (seeded, reproducible).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1) with 24 random bits (exact in f32).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Choose the next token from logits f32 [1, V].
fn choose(model: &Model, logits: &Tensor, dec: &Decoding, rng: &mut Rng) -> Result<u32> {
    let id = match dec {
        Decoding::Greedy => mops::argmax(&model.ops, logits)?[0],
        Decoding::Sample { params, .. } => {
            let u = Tensor::from_f32(DType::F32, &[1], &[rng.uniform()]);
            mops::sample(&model.ops, logits, &u, params)?[0]
        }
    };
    Ok(id as u32)
}

fn seed_of(dec: &Decoding) -> u64 {
    match dec {
        Decoding::Sample { seed, .. } => *seed,
        Decoding::Greedy => 0,
    }
}

/// A cache for one sequence of up to `tokens` positions.
pub fn cache_for(model: &Model, tokens: usize) -> KvCache {
    model.new_cache(tokens + BLOCK_SIZE, BLOCK_SIZE)
}

/// Generate up to `opts.max_tokens` tokens after `prompt`; `on_token` sees each as it is made.
pub fn generate(model: &mut Model, prompt: &[u32], opts: &GenOptions, mut on_token: impl FnMut(u32) -> Result<()>) -> Result<(Vec<u32>, GenStats)> {
    if prompt.is_empty() {
        return Err(ModelError::Usage("the prompt has no tokens".into()));
    }
    let mut cache = cache_for(model, prompt.len() + opts.max_tokens);
    let seq = cache.new_seq();
    let mut rng = Rng::new(seed_of(&opts.decoding));
    let mut stats = GenStats { prompt_tokens: prompt.len(), ..Default::default() };
    let mut out = Vec::new();
    if opts.max_tokens == 0 {
        return Ok((out, stats));
    }
    let t0 = Stopwatch::start();
    let logits = model.forward(&mut cache, &[Segment { seq, tokens: prompt.to_vec(), all_logits: false }])?;
    let mut next = choose(model, &logits[0], &opts.decoding, &mut rng)?;
    stats.end_prefill(&t0);
    let t1 = Stopwatch::start();
    loop {
        out.push(next);
        on_token(next)?;
        if out.len() >= opts.max_tokens || opts.stop.contains(&next) {
            break;
        }
        let logits = model.forward(&mut cache, &[Segment { seq, tokens: vec![next], all_logits: false }])?;
        next = choose(model, &logits[0], &opts.decoding, &mut rng)?;
    }
    stats.end_decode(&t1);
    stats.generated = out.len();
    Ok((out, stats))
}

/// One greedy decode step of several sequences in one forward: `next[i]` (the last token of
/// `seqs[i]`) goes in, the following token comes out in its place.
pub fn decode_step_batch(model: &mut Model, cache: &mut KvCache, seqs: &[SeqId], next: &mut [u32]) -> Result<()> {
    let segs: Vec<Segment> = seqs.iter().zip(next.iter()).map(|(&s, &n)| Segment { seq: s, tokens: vec![n], all_logits: false }).collect();
    let logits = model.forward(cache, &segs)?;
    for (n, l) in next.iter_mut().zip(&logits) {
        *n = mops::argmax(&model.ops, l)?[0] as u32;
    }
    Ok(())
}

/// Greedy decoding of several prompts at once: one prefill per prompt, then every decode step
/// runs all unfinished sequences in one forward (their rows share every linear layer).
pub fn generate_batch(model: &mut Model, prompts: &[Vec<u32>], max_tokens: usize) -> Result<(Vec<Vec<u32>>, GenStats)> {
    let total: usize = prompts.iter().map(|p| p.len() + max_tokens + BLOCK_SIZE).sum();
    let mut cache = model.new_cache(total, BLOCK_SIZE);
    let seqs: Vec<SeqId> = prompts.iter().map(|_| cache.new_seq()).collect();
    let mut stats = GenStats { prompt_tokens: prompts.iter().map(Vec::len).sum(), ..Default::default() };
    let mut outs = vec![Vec::new(); prompts.len()];
    if max_tokens == 0 {
        return Ok((outs, stats));
    }
    let t0 = Stopwatch::start();
    let mut next = Vec::new();
    for (p, &s) in prompts.iter().zip(&seqs) {
        let l = model.forward(&mut cache, &[Segment { seq: s, tokens: p.clone(), all_logits: false }])?;
        next.push(mops::argmax(&model.ops, &l[0])?[0] as u32);
    }
    stats.end_prefill(&t0);
    let t1 = Stopwatch::start();
    for step in 0..max_tokens {
        for (o, &n) in outs.iter_mut().zip(&next) {
            o.push(n);
        }
        if step + 1 == max_tokens {
            break;
        }
        decode_step_batch(model, &mut cache, &seqs, &mut next)?;
    }
    stats.end_decode(&t1);
    stats.generated = outs.iter().map(Vec::len).sum::<usize>();
    Ok((outs, stats))
}

/// Rows of f32 [1, V] tensors stacked into [n, V].
fn stack(rows: &[Tensor]) -> Tensor {
    let v = rows[0].shape[1];
    let mut data = Vec::with_capacity(rows.len() * v * 4);
    for r in rows {
        data.extend_from_slice(&r.data);
    }
    Tensor { dtype: DType::F32, shape: vec![rows.len(), v], data }
}

/// How a speculative step verifies the draft tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Verifier {
    /// Greedy drafts judged by the `kl_judge` operator with threshold τ (τ ≤ 0: exact greedy).
    KlJudge { tau: f32 },
    /// Drafts sampled from the draft at temperature T, accepted with probability min(1, p/q)
    /// and resampled from norm(max(0, p − q)) on rejection (`spec_sample` operator): the output
    /// is distributed exactly as sampling the target alone.
    Lossless { temperature: f32, seed: u64 },
}

impl Verifier {
    /// The verifier for `decoding`: greedy decoding uses the KL judge (τ defaults to 0);
    /// temperature sampling uses lossless speculative sampling, which has no τ and samples
    /// the full softmax (top-k / top-p would change q and p, and are refused).
    pub fn for_decoding(decoding: &Decoding, kl_tau: Option<f32>) -> Result<Verifier> {
        match decoding {
            Decoding::Greedy => Ok(Verifier::KlJudge { tau: kl_tau.unwrap_or(0.0) }),
            Decoding::Sample { params, seed } => {
                if let Some(tau) = kl_tau {
                    return Err(ModelError::Usage(format!(
                        "--kl-tau {tau} applies to greedy speculative decoding (temperature 0); with temperature {} the draft is verified by lossless speculative sampling",
                        params.temperature
                    )));
                }
                if params.top_k.is_some() || params.top_p < 1.0 {
                    return Err(ModelError::Usage("speculative sampling draws from the full softmax at the temperature: --top-k and --top-p are not supported with --draft".into()));
                }
                Ok(Verifier::Lossless { temperature: params.temperature, seed: *seed })
            }
        }
    }
}

/// Verify one lossless speculative step: target logits f32 [γ+1, V], draft logits f32 [γ, V],
/// the γ draft tokens; uniforms from `rng`. Returns (accepted, emitted tokens).
pub fn verify_sampled(ops: &opc_ops::Ops, target: &Tensor, draft: &Tensor, tokens: &[u32], temperature: f32, rng: &mut Rng) -> Result<(usize, Vec<u32>)> {
    let g = tokens.len();
    let u_acc: Vec<f32> = (0..g).map(|_| rng.uniform()).collect();
    let u_res: Vec<f32> = (0..=g).map(|_| rng.uniform()).collect();
    let dt = Tensor::from_i32(DType::I32, &[g], &tokens.iter().map(|&t| t as i32).collect::<Vec<_>>());
    let ua = Tensor::from_f32(DType::F32, &[g], &u_acc);
    let ur = Tensor::from_f32(DType::F32, &[g + 1], &u_res);
    let o = opc_ops::spec_sample::spec_sample(ops, target, draft, &dt, &ua, &ur, temperature)?;
    Ok((o.accepted, o.emitted.iter().map(|&t| t as u32).collect()))
}

/// Speculative decoding: the draft proposes γ tokens (greedy for [`Verifier::KlJudge`],
/// sampled at the temperature for [`Verifier::Lossless`]), the target scores them in one
/// forward, and the verifier keeps a prefix of them and adds one token of its own. The KL judge
/// accepts the leading run where the draft token is the target's argmax or (target confidence
/// ≤ 0.9 and KL(target ‖ draft) < τ), then the target's argmax follows; τ ≤ 0 is exactly the
/// target's greedy output. Lossless sampling matches sampling from the target alone.
pub fn generate_speculative(
    target: &mut Model,
    draft: &mut Model,
    prompt: &[u32],
    opts: &GenOptions,
    gamma: usize,
    verifier: Verifier,
    mut on_token: impl FnMut(u32) -> Result<()>,
) -> Result<(Vec<u32>, GenStats)> {
    let decoding = match verifier {
        Verifier::KlJudge { .. } => Decoding::Greedy,
        Verifier::Lossless { temperature, seed } => Decoding::Sample { params: SampleParams { temperature, top_k: None, top_p: 1.0 }, seed },
    };
    if gamma == 0 {
        return Err(ModelError::Usage("--gamma must be at least 1".into()));
    }
    if prompt.is_empty() {
        return Err(ModelError::Usage("the prompt has no tokens".into()));
    }
    if target.cfg.vocab != draft.cfg.vocab {
        return Err(ModelError::Usage(format!("target vocabulary {} differs from the draft's {}", target.cfg.vocab, draft.cfg.vocab)));
    }
    let cap = prompt.len() + opts.max_tokens + gamma + 2;
    let (mut tc, mut dc) = (cache_for(target, cap), cache_for(draft, cap));
    let (ts, ds) = (tc.new_seq(), dc.new_seq());
    let mut rng = Rng::new(seed_of(&decoding));
    let mut stats = GenStats { prompt_tokens: prompt.len(), spec: Some(SpecStats { gamma, accepted: Vec::new() }), ..Default::default() };
    let mut out: Vec<u32> = Vec::new();
    if opts.max_tokens == 0 {
        return Ok((out, stats));
    }
    let mut all: Vec<u32> = prompt.to_vec();

    let t0 = Stopwatch::start();
    let l = target.forward(&mut tc, &[Segment { seq: ts, tokens: prompt.to_vec(), all_logits: false }])?;
    let first = choose(target, &l[0], &decoding, &mut rng)?;
    stats.end_prefill(&t0);
    let t1 = Stopwatch::start();
    let mut emit = |t: u32, out: &mut Vec<u32>, all: &mut Vec<u32>| -> Result<bool> {
        out.push(t);
        all.push(t);
        on_token(t)?;
        Ok(out.len() >= opts.max_tokens || opts.stop.contains(&t))
    };
    if !emit(first, &mut out, &mut all)? {
        loop {
            // draft: catch up on the tokens it has not seen, then propose γ
            let g = gamma.min(opts.max_tokens - out.len());
            let mut drafts = Vec::with_capacity(g);
            let mut dlogits = Vec::with_capacity(g);
            let mut feed = all[dc.len(ds)?..].to_vec();
            for _ in 0..g {
                let l = draft.forward(&mut dc, &[Segment { seq: ds, tokens: feed, all_logits: false }])?;
                let d = choose(draft, &l[0], &decoding, &mut rng)?;
                drafts.push(d);
                dlogits.push(l.into_iter().next().expect("one segment"));
                feed = vec![d];
            }
            // target: score the unseen tokens and the drafts in one forward
            let base = tc.len(ts)?;
            let mut verify = all[base..].to_vec();
            verify.extend_from_slice(&drafts);
            let tl = target.forward(&mut tc, &[Segment { seq: ts, tokens: verify.clone(), all_logits: true }])?;
            let tl = tl.into_iter().next().expect("one segment");
            let n_pre = verify.len() - g; // rows before the first draft's prediction
            let rows: Vec<Tensor> = (n_pre - 1..verify.len()).map(|r| select_row(&tl, r)).collect();
            let (accepted, emitted) = match verifier {
                Verifier::KlJudge { tau } => {
                    let judge_tau = if tau > 0.0 { tau } else { f32::NEG_INFINITY };
                    let dtoks = Tensor::from_i32(DType::I32, &[g], &drafts.iter().map(|&d| d as i32).collect::<Vec<_>>());
                    let j = opc_ops::kl_judge::kl_judge(&target.ops, &stack(&rows), &stack(&dlogits), &dtoks, judge_tau)?;
                    (j.accepted, j.emitted.iter().map(|&t| t as u32).collect::<Vec<_>>())
                }
                Verifier::Lossless { temperature, .. } => verify_sampled(&target.ops, &stack(&rows), &stack(&dlogits), &drafts, temperature, &mut rng)?,
            };
            stats.spec.as_mut().expect("spec stats").accepted.push(accepted);
            // keep the verified prefix in both caches
            tc.truncate(ts, base + n_pre + accepted)?;
            let mut done = false;
            for &t in &emitted {
                if emit(t, &mut out, &mut all)? {
                    done = true;
                    break;
                }
            }
            let keep = all.len() - 1; // the last emitted token is not in any cache yet
            let dl = dc.len(ds)?;
            dc.truncate(ds, dl.min(keep))?;
            let tl_len = tc.len(ts)?;
            tc.truncate(ts, tl_len.min(keep))?;
            if done {
                break;
            }
        }
    }
    stats.end_decode(&t1);
    stats.generated = out.len();
    Ok((out, stats))
}

fn select_row(x: &Tensor, r: usize) -> Tensor {
    let v = x.shape[1];
    Tensor { dtype: x.dtype, shape: vec![1, v], data: x.data[r * v * 4..(r + 1) * v * 4].to_vec() }
}
