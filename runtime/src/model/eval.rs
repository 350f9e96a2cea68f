//! Comparison of a model against a reference file (the format of
//! `../shared/fixtures/models/*/reference.safetensors`): `input_ids` i32 [T], `logits` f32 [T, V]
//! (transformers, f32, one forward over the prompt) and `greedy_tokens` i32 [N] (transformers'
//! greedy `generate` after the prompt). The logits come from one prefill forward; the greedy
//! tokens from prefill + N − 1 single-token decode steps through the paged KV cache, so both the
//! prefill and the decode attention paths are checked.

use super::activations::Activations;
use super::error::{ModelError, Result};
use super::generate::{generate, Decoding, GenOptions};
use super::llm::{Model, Segment};
use crate::FixtureFile;
use opc_ir::DType;
use std::path::Path;

/// Logits tolerance (max abs error, f32).
pub const LOGITS_TOL: f32 = 1e-3;

/// Logits tolerance of the bf16 compute mode, relative to the logit scale (max |reference
/// logit|): 2⁻⁶, four bf16 roundings (2⁻⁸ relative each) of the largest logit. Every linear
/// input is rounded to bf16 once per layer, so the logits carry a few roundings of relative
/// error, not the f32 path's accumulation-order noise.
pub const BF16_LOGITS_REL: f32 = 1.0 / 64.0;

/// The logits tolerance (max abs error) for `activations` and reference logits `want`.
pub fn logits_tolerance(activations: Activations, want: &[f32]) -> f32 {
    match activations {
        Activations::F32 => LOGITS_TOL,
        Activations::Bf16 => BF16_LOGITS_REL * want.iter().fold(0f32, |m, x| m.max(x.abs())),
    }
}

#[derive(Clone, Debug)]
pub struct EvalReport {
    pub positions: usize,
    pub vocab: usize,
    pub max_abs_err: f32,
    /// The tolerance on `max_abs_err` ([`logits_tolerance`]).
    pub tolerance: f32,
    /// Positions whose argmax equals the reference's.
    pub top1_agree: usize,
    pub greedy: Vec<u32>,
    pub reference_greedy: Vec<u32>,
    /// Where the greedy tokens first differ (bf16 mode): the margin by which the model, fed the
    /// reference's tokens up to there, prefers its own choice over the reference's token. Within
    /// `tolerance` the two were a near tie the rounding may flip.
    pub divergence: Option<(usize, f32)>,
    /// The reference's prompt re-encoded by the model's tokenizer equals `input_ids` (None: no
    /// prompt in the reference metadata or no tokenizer).
    pub tokenizer_agrees: Option<bool>,
}

impl EvalReport {
    pub fn greedy_match(&self) -> bool {
        self.greedy == self.reference_greedy
    }
    /// Identical greedy tokens, or (bf16 mode) a first difference at a near tie.
    pub fn greedy_ok(&self) -> bool {
        self.greedy_match() || self.divergence.is_some_and(|(_, margin)| margin <= self.tolerance)
    }
    pub fn pass(&self) -> bool {
        self.max_abs_err <= self.tolerance && self.greedy_ok() && self.tokenizer_agrees != Some(false)
    }
}

fn refe(path: &Path, detail: impl Into<String>) -> ModelError {
    ModelError::Reference { path: path.to_path_buf(), detail: detail.into() }
}

/// Evaluate `model` against `reference`; `tokenizer` (optional) is checked on the stored prompt.
pub fn evaluate(model: &mut Model, reference: &Path, tokenizer: Option<&super::Tokenizer>) -> Result<EvalReport> {
    let f = FixtureFile::open(reference).map_err(|e| refe(reference, e.to_string()))?;
    let get = |name: &str, dt: DType| {
        let t = f.tensor_by_name(name).map_err(|e| refe(reference, e.to_string()))?;
        crate::fixtures::convert(&t, dt).map_err(|e| refe(reference, format!("`{name}`: {e}")))
    };
    let ids: Vec<u32> = get("input_ids", DType::I32)?.to_i64_vec().into_iter().map(|x| x as u32).collect();
    let logits_ref = get("logits", DType::F32)?;
    let greedy_ref: Vec<u32> = get("greedy_tokens", DType::I32)?.to_i64_vec().into_iter().map(|x| x as u32).collect();
    let (t, v) = (ids.len(), model.cfg.vocab);
    if logits_ref.shape != [t, v] {
        return Err(refe(reference, format!("`logits` is {:?}, expected [T, V] = [{t}, {v}] (input_ids and the model's vocabulary)", logits_ref.shape)));
    }
    let tokenizer_agrees = match (tokenizer, f.cases().ok().and_then(|c| c.first().and_then(|c| c["prompt"].as_str().map(str::to_string)))) {
        (Some(tok), Some(prompt)) => Some(tok.encode(&prompt)? == ids),
        _ => None,
    };

    let mut cache = model.new_cache(t + 1, super::BLOCK_SIZE);
    let seq = cache.new_seq();
    let logits = model.forward(&mut cache, &[Segment { seq, tokens: ids.clone(), all_logits: true }])?.remove(0);
    let (got, want) = (logits.to_f32_vec(), logits_ref.to_f32_vec());
    let mut max_abs_err = 0f32;
    for (a, b) in got.iter().zip(&want) {
        let e = (a - b).abs();
        if e > max_abs_err || e.is_nan() {
            max_abs_err = if e.is_nan() { f32::INFINITY } else { e };
        }
    }
    let argmax = |row: &[f32]| row.iter().enumerate().fold(0, |best, (i, &x)| if x > row[best] { i } else { best });
    let top1_agree = (0..t).filter(|&r| argmax(&got[r * v..(r + 1) * v]) == argmax(&want[r * v..(r + 1) * v])).count();

    let tolerance = logits_tolerance(model.activations, &want);

    let opts = GenOptions { max_tokens: greedy_ref.len(), stop: Vec::new(), decoding: Decoding::Greedy };
    let (greedy, _) = generate(model, &ids, &opts, |_| Ok(()))?;
    let first_diff = greedy.iter().zip(&greedy_ref).position(|(a, b)| a != b);
    let divergence = match first_diff {
        // bf16 only: the f32 path must match exactly
        Some(i) if model.activations != Activations::F32 => {
            let mut prefix = ids.clone();
            prefix.extend_from_slice(&greedy_ref[..i]);
            let mut cache = model.new_cache(prefix.len() + 1, super::BLOCK_SIZE);
            let seq = cache.new_seq();
            let row = model.forward(&mut cache, &[Segment { seq, tokens: prefix, all_logits: false }])?.remove(0).to_f32_vec();
            let best = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            let theirs = row.get(greedy_ref[i] as usize).copied().unwrap_or(f32::NEG_INFINITY);
            Some((i, best - theirs))
        }
        _ => None,
    };
    Ok(EvalReport { positions: t, vocab: v, max_abs_err, tolerance, top1_agree, greedy, reference_greedy: greedy_ref, divergence, tokenizer_agrees })
}
