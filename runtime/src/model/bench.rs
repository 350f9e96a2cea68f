//! Model throughput: prefill of a prompt, batch-1 decode after it and batched decode of several
//! sequences, each timed after a warm-up that compiles every kernel instance (so no timed step
//! compiles), plus the bytes of weights a decode step reads — with a DRAM bandwidth measured in
//! the same run this gives the bandwidth limit of batch-1 decode. `opc bench-model` prints it.

use super::error::{ModelError, Result};
use super::generate::{cache_for, decode_step_batch, Rng};
use super::BLOCK_SIZE;
use super::llm::{Model, Segment};
use opc_ops::model as mops;
use std::time::Instant;

pub mod baselines;

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchSpec {
    /// Prompt length of the prefill (and the context of the batch-1 decode).
    pub prompt_tokens: usize,
    /// Decode steps timed at batch 1 and at `batch`.
    pub decode_tokens: usize,
    /// Sequences of the batched decode (1: skip it).
    pub batch: usize,
    /// Prompt length of each sequence of the batched decode.
    pub batch_prompt_tokens: usize,
    pub seed: u64,
}

/// Measured throughput.
#[derive(Clone, Debug, Default)]
pub struct BenchReport {
    pub compile_secs: f64,
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
    /// Tokens per second summed over the batch.
    pub batch_decode_tok_s: Option<f64>,
    pub decode_weight_bytes: u64,
    /// Per-operator tables of the prefill+decode run and the batched run (when profiling).
    pub profiles: Vec<(String, String)>,
}

impl BenchReport {
    /// Batch-1 decode tokens/s the bandwidth `gbs` (GB/s) allows: bandwidth / bytes per token.
    pub fn bandwidth_limit(&self, gbs: f64) -> f64 {
        gbs * 1e9 / self.decode_weight_bytes.max(1) as f64
    }
}

/// `n` token ids drawn uniformly from the vocabulary (seeded).
pub fn random_tokens(vocab: usize, n: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| (rng.next_u64() % vocab.max(1) as u64) as u32).collect()
}

/// Forget the operator and kernel times recorded so far (warm-ups, untimed prefills).
fn clear_profiles(model: &mut Model) {
    model.profile.clear();
    if let Some(k) = model.ops.kernel_profile() {
        k.clear();
    }
}

/// Run the benchmark on `model`. Greedy decoding without stop tokens, so every step runs.
pub fn bench(model: &mut Model, spec: &BenchSpec) -> Result<BenchReport> {
    if spec.prompt_tokens == 0 || spec.decode_tokens == 0 || spec.batch == 0 {
        return Err(ModelError::Usage("--prompt-tokens, --decode-tokens and --batch must be at least 1".into()));
    }
    let v = model.cfg.vocab;
    let mut compile_secs = model.warm_up(spec.prompt_tokens, 1)?;
    if spec.batch > 1 {
        compile_secs += model.warm_up(spec.batch_prompt_tokens.max(1), spec.batch)?;
    }
    let prompt = random_tokens(v, spec.prompt_tokens, spec.seed);
    let mut profiles = Vec::new();
    // The operator profile of each phase, then (with OPC_PROFILE_KERNELS=1) its kernels'.
    let mut phase = |model: &mut Model, what: String| {
        if model.profile.enabled() {
            let mut table = model.profile.report();
            if let Some(k) = model.ops.kernel_profile() {
                table += &format!("\n{}", k.report());
            }
            profiles.push((what, table));
        }
        clear_profiles(model);
    };
    clear_profiles(model);
    let mut cache = cache_for(model, spec.prompt_tokens + spec.decode_tokens + 1);
    let seq = cache.new_seq();
    let t0 = Instant::now();
    let l = model.forward(&mut cache, &[Segment { seq, tokens: prompt, all_logits: false }])?;
    let next = mops::argmax(&model.ops, &l[0])?[0] as u32;
    let prefill = t0.elapsed().as_secs_f64();
    phase(model, format!("prefill {} tokens", spec.prompt_tokens));
    let t1 = Instant::now();
    let mut next = [next];
    for _ in 0..spec.decode_tokens {
        decode_step_batch(model, &mut cache, &[seq], &mut next)?;
    }
    let decode = t1.elapsed().as_secs_f64();
    phase(model, format!("decode batch 1, {} steps", spec.decode_tokens));
    let mut r = BenchReport {
        compile_secs,
        prefill_tok_s: spec.prompt_tokens as f64 / prefill.max(1e-9),
        decode_tok_s: spec.decode_tokens as f64 / decode.max(1e-9),
        batch_decode_tok_s: None,
        decode_weight_bytes: model.decode_weight_bytes(),
        profiles: Vec::new(),
    };
    if spec.batch > 1 {
        // one prefill per sequence (untimed), then every step decodes all of them in one forward
        let mut cache = cache_for(model, spec.batch * (spec.batch_prompt_tokens.max(1) + spec.decode_tokens + BLOCK_SIZE));
        let mut next = Vec::with_capacity(spec.batch);
        let mut seqs = Vec::with_capacity(spec.batch);
        for i in 0..spec.batch {
            let s = cache.new_seq();
            let p = random_tokens(v, spec.batch_prompt_tokens.max(1), spec.seed + 1 + i as u64);
            let l = model.forward(&mut cache, &[Segment { seq: s, tokens: p, all_logits: false }])?;
            next.push(mops::argmax(&model.ops, &l[0])?[0] as u32);
            seqs.push(s);
        }
        clear_profiles(model);
        let t = Instant::now();
        for _ in 0..spec.decode_tokens {
            decode_step_batch(model, &mut cache, &seqs, &mut next)?;
        }
        let secs = t.elapsed().as_secs_f64();
        r.batch_decode_tok_s = Some((spec.batch * spec.decode_tokens) as f64 / secs.max(1e-9));
        phase(model, format!("decode batch {}, {} steps", spec.batch, spec.decode_tokens));
    }
    r.profiles = profiles;
    Ok(r)
}
