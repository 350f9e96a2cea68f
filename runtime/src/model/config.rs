//! `config.json` of a Hugging Face causal LM, parsed with serde and normalized into one
//! [`ModelConfig`] for the four supported architectures:
//!
//! - `LlamaForCausalLM`: dense, GQA, optional attention / MLP biases.
//! - `Qwen3MoeForCausalLM`: per-head q/k RMSNorm, top-k softmax MoE with per-expert tensors.
//! - `GptOssForCausalLM`: MXFP4 experts with biases, attention sinks, alternating sliding / full
//!   attention, YaRN RoPE, clamped SwiGLU, top-k router with bias.
//! - `PanguProMoEForCausalLM` (MoGE): experts in `num_expert_groups` equal groups, one expert per
//!   group chosen from a global softmax and scaled by a learned `router_scale` (no
//!   renormalization), plus a shared-expert MLP.
//!
//! Both rope conventions are read: `rope_parameters` (transformers 5) and `rope_theta` +
//! `rope_scaling` (earlier releases).

use super::error::{ModelError, Result};
use opc_ops::blocks::{RopeParams, Yarn};
use serde::Deserialize;
use std::path::Path;

/// Architecture names accepted in `architectures[0]`.
pub const ARCHITECTURES: &[&str] = &["LlamaForCausalLM", "Qwen3MoeForCausalLM", "GptOssForCausalLM", "PanguProMoEForCausalLM"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen3Moe,
    GptOss,
    PanguMoge,
}

impl Arch {
    pub fn from_name(name: &str) -> Option<Arch> {
        Some(match name {
            "LlamaForCausalLM" => Arch::Llama,
            "Qwen3MoeForCausalLM" => Arch::Qwen3Moe,
            "GptOssForCausalLM" => Arch::GptOss,
            "PanguProMoEForCausalLM" | "PanguProMoeForCausalLM" => Arch::PanguMoge,
            _ => return None,
        })
    }

    pub fn hf_name(self) -> &'static str {
        match self {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Qwen3Moe => "Qwen3MoeForCausalLM",
            Arch::GptOss => "GptOssForCausalLM",
            Arch::PanguMoge => "PanguProMoEForCausalLM",
        }
    }

    /// The `model_type` written by `opc model init`.
    pub fn model_type(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen3Moe => "qwen3_moe",
            Arch::GptOss => "gpt_oss",
            Arch::PanguMoge => "PanguProMoE",
        }
    }
}

/// The fields opc reads; everything else in config.json is ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawConfig {
    pub architectures: Vec<String>,
    pub vocab_size: Option<usize>,
    pub hidden_size: Option<usize>,
    pub intermediate_size: Option<usize>,
    pub num_hidden_layers: Option<usize>,
    pub num_attention_heads: Option<usize>,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub rms_norm_eps: Option<f64>,
    pub max_position_embeddings: Option<usize>,
    pub tie_word_embeddings: Option<bool>,
    pub attention_bias: Option<bool>,
    pub mlp_bias: Option<bool>,
    pub rope_theta: Option<f64>,
    pub rope_scaling: Option<RawRope>,
    pub rope_parameters: Option<RawRope>,
    pub eos_token_id: Option<serde_json::Value>,
    pub bos_token_id: Option<serde_json::Value>,
    /// The parameter dtype (`dtype` in transformers 5, `torch_dtype` before): see
    /// [`param_dtype`].
    pub dtype: Option<serde_json::Value>,
    pub torch_dtype: Option<serde_json::Value>,
    // MoE
    pub num_experts: Option<usize>,
    pub num_local_experts: Option<usize>,
    pub num_experts_per_tok: Option<usize>,
    pub moe_intermediate_size: Option<usize>,
    pub norm_topk_prob: Option<bool>,
    pub decoder_sparse_step: Option<usize>,
    pub mlp_only_layers: Option<Vec<usize>>,
    // gpt-oss
    pub sliding_window: Option<usize>,
    pub layer_types: Option<Vec<String>>,
    pub swiglu_alpha: Option<f64>,
    pub swiglu_limit: Option<f64>,
    // MoGE (Pangu Pro MoE)
    pub num_expert_groups: Option<usize>,
    pub shared_expert_intermediate_size: Option<usize>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRope {
    pub rope_type: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub rope_theta: Option<f64>,
    pub factor: Option<f64>,
    pub beta_fast: Option<f64>,
    pub beta_slow: Option<f64>,
    pub truncate: Option<bool>,
    pub original_max_position_embeddings: Option<usize>,
}

/// Mixture-of-experts settings of a layer.
#[derive(Clone, Debug, PartialEq)]
pub struct MoeConfig {
    pub experts: usize,
    /// Experts per token (MoGE: one per group, so this equals `groups`).
    pub top_k: usize,
    pub intermediate: usize,
    /// Qwen3-MoE: renormalize the chosen top-k weights (`norm_topk_prob`; absent = false, as
    /// in transformers). Without it the weights are the full-softmax probabilities.
    pub norm_topk_prob: bool,
    /// MoGE: number of equal expert groups.
    pub groups: Option<usize>,
    /// MoGE: intermediate size of the shared-expert MLP (0: none).
    pub shared_intermediate: usize,
}

/// Attention of one layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LayerAttention {
    Full,
    Sliding(usize),
}

/// A normalized model configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub vocab: usize,
    pub hidden: usize,
    /// Dense MLP intermediate size (Llama) or 0.
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub eps: f32,
    pub max_positions: usize,
    pub tie_embeddings: bool,
    pub attention_bias: bool,
    pub mlp_bias: bool,
    pub rope: RopeParams,
    pub moe: Option<MoeConfig>,
    /// Per layer.
    pub attention: Vec<LayerAttention>,
    pub sinks: bool,
    pub qk_norm: bool,
    /// gpt-oss clamped SwiGLU (alpha, limit).
    pub swiglu: (f32, f32),
    pub eos: Vec<u32>,
}

fn cfg_err(path: &Path, detail: impl Into<String>) -> ModelError {
    ModelError::Config { path: path.to_path_buf(), detail: detail.into() }
}

fn need<T: Copy>(path: &Path, v: Option<T>, field: &str) -> Result<T> {
    v.ok_or_else(|| cfg_err(path, format!("missing field `{field}`")))
}

fn ids(v: &Option<serde_json::Value>) -> Vec<u32> {
    match v {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32).collect(),
        _ => Vec::new(),
    }
}

impl ModelConfig {
    /// Read and normalize `path` (a config.json).
    pub fn load(path: &Path) -> Result<ModelConfig> {
        let text = std::fs::read_to_string(path).map_err(|err| ModelError::Io { path: path.to_path_buf(), err })?;
        ModelConfig::parse(path, &text)
    }

    /// Normalize config.json text; `path` only labels errors.
    pub fn parse(path: &Path, text: &str) -> Result<ModelConfig> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| cfg_err(path, e.to_string()))?;
        let name = raw.architectures.first().ok_or_else(|| cfg_err(path, "missing `architectures` (e.g. [\"LlamaForCausalLM\"])"))?;
        let arch = Arch::from_name(name).ok_or_else(|| ModelError::UnknownArchitecture {
            path: path.to_path_buf(),
            arch: name.clone(),
            supported: ARCHITECTURES.join(", "),
        })?;
        let hidden = need(path, raw.hidden_size, "hidden_size")?;
        let heads = need(path, raw.num_attention_heads, "num_attention_heads")?;
        let kv_heads = raw.num_key_value_heads.unwrap_or(heads);
        let head_dim = raw.head_dim.unwrap_or(if heads > 0 { hidden / heads } else { 0 });
        let layers = need(path, raw.num_hidden_layers, "num_hidden_layers")?;
        let vocab = need(path, raw.vocab_size, "vocab_size")?;
        if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
            return Err(cfg_err(path, format!("num_attention_heads = {heads} must be a positive multiple of num_key_value_heads = {kv_heads}")));
        }
        if head_dim == 0 || head_dim % 2 != 0 || head_dim > 512 {
            return Err(cfg_err(path, format!("head_dim = {head_dim} must be even and in 2..=512")));
        }
        let max_positions = raw.max_position_embeddings.unwrap_or(4096);
        let rope = rope_params(path, &raw, max_positions)?;
        let experts = raw.num_experts.or(raw.num_local_experts);
        let moe = match arch {
            Arch::Llama => None,
            Arch::Qwen3Moe | Arch::GptOss | Arch::PanguMoge => {
                let e = need(path, experts, "num_experts")?;
                let top_k = need(path, raw.num_experts_per_tok, "num_experts_per_tok")?;
                let intermediate = match arch {
                    Arch::GptOss => need(path, raw.intermediate_size, "intermediate_size")?,
                    _ => need(path, raw.moe_intermediate_size, "moe_intermediate_size")?,
                };
                let groups = match arch {
                    Arch::PanguMoge => {
                        let g = raw.num_expert_groups.unwrap_or(top_k);
                        if g == 0 || e % g != 0 || top_k != g {
                            return Err(cfg_err(path, format!("MoGE needs num_expert_groups = num_experts_per_tok dividing num_experts; got groups {g}, top-k {top_k}, experts {e}")));
                        }
                        Some(g)
                    }
                    _ => None,
                };
                if top_k == 0 || top_k > e {
                    return Err(cfg_err(path, format!("num_experts_per_tok = {top_k} must be in 1..={e}")));
                }
                Some(MoeConfig {
                    experts: e,
                    top_k,
                    intermediate,
                    // transformers' Qwen3MoeConfig defaults to False (released checkpoints set True)
                    norm_topk_prob: raw.norm_topk_prob.unwrap_or(false),
                    groups,
                    shared_intermediate: if arch == Arch::PanguMoge { raw.shared_expert_intermediate_size.unwrap_or(0) } else { 0 },
                })
            }
        };
        if arch == Arch::Qwen3Moe {
            if raw.decoder_sparse_step.unwrap_or(1) != 1 || raw.mlp_only_layers.as_ref().is_some_and(|l| !l.is_empty()) {
                return Err(cfg_err(path, "Qwen3-MoE with dense layers (decoder_sparse_step != 1 or mlp_only_layers) is not supported"));
            }
        }
        let mut attention = vec![LayerAttention::Full; layers];
        if arch == Arch::GptOss {
            let window = raw.sliding_window.unwrap_or(128);
            match &raw.layer_types {
                Some(t) => {
                    if t.len() != layers {
                        return Err(cfg_err(path, format!("layer_types has {} entries, expected num_hidden_layers = {layers}", t.len())));
                    }
                    for (i, ty) in t.iter().enumerate() {
                        attention[i] = match ty.as_str() {
                            "sliding_attention" => LayerAttention::Sliding(window),
                            "full_attention" => LayerAttention::Full,
                            other => return Err(cfg_err(path, format!("layer_types[{i}] = `{other}` (expected sliding_attention or full_attention)"))),
                        };
                    }
                }
                None => {
                    for (i, a) in attention.iter_mut().enumerate() {
                        if i % 2 == 0 {
                            *a = LayerAttention::Sliding(window);
                        }
                    }
                }
            }
        }
        let intermediate = match arch {
            Arch::Llama => need(path, raw.intermediate_size, "intermediate_size")?,
            _ => 0,
        };
        Ok(ModelConfig {
            arch,
            vocab,
            hidden,
            intermediate,
            layers,
            heads,
            kv_heads,
            head_dim,
            eps: raw.rms_norm_eps.unwrap_or(1e-5) as f32,
            max_positions,
            tie_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            attention_bias: raw.attention_bias.unwrap_or(arch == Arch::GptOss),
            mlp_bias: raw.mlp_bias.unwrap_or(false),
            rope,
            moe,
            attention,
            sinks: arch == Arch::GptOss,
            qk_norm: arch == Arch::Qwen3Moe,
            swiglu: (raw.swiglu_alpha.unwrap_or(1.702) as f32, raw.swiglu_limit.unwrap_or(7.0) as f32),
            eos: ids(&raw.eos_token_id),
        })
    }
}

fn rope_params(path: &Path, raw: &RawConfig, max_positions: usize) -> Result<RopeParams> {
    let r = raw.rope_parameters.clone().or_else(|| raw.rope_scaling.clone()).unwrap_or_default();
    let theta = r.rope_theta.or(raw.rope_theta).unwrap_or(10000.0) as f32;
    let ty = r.rope_type.clone().or(r.kind.clone()).unwrap_or_else(|| "default".into());
    let yarn = match ty.as_str() {
        "default" => None,
        "yarn" => {
            // transformers: with original_max_position_embeddings the factor is the context ratio
            let factor = match r.original_max_position_embeddings {
                Some(o) if o > 0 => max_positions as f32 / o as f32,
                _ => r.factor.unwrap_or(1.0) as f32,
            };
            Some(Yarn {
                factor,
                beta_fast: r.beta_fast.unwrap_or(32.0) as f32,
                beta_slow: r.beta_slow.unwrap_or(1.0) as f32,
                original_max_position_embeddings: r.original_max_position_embeddings.unwrap_or(max_positions),
                truncate: r.truncate.unwrap_or(true),
            })
        }
        other => return Err(cfg_err(path, format!("rope_type `{other}` is not supported (default, yarn)"))),
    };
    Ok(RopeParams { theta, yarn, freq_dtype: param_dtype(raw) })
}

/// The dtype the checkpoint's parameters are declared in (`dtype`, else `torch_dtype`):
/// bf16 or f16 for those names, f32 for `float32`, `null`, a missing field or anything else.
/// RoPE's inverse frequencies are held in it ([`RopeParams::freq_dtype`]): a transformers model
/// in its checkpoint dtype (`model.to(torch.bfloat16)`, which also converts the `inv_freq`
/// buffer) computes its angles from the rounded frequencies even when run in f32 afterwards,
/// and its logits are the reference `opc eval` compares with. Over a 27-token prompt the
/// difference reaches 1.3e-3 in a Qwen3-MoE model's logits (q/k norms make it sensitive).
fn param_dtype(raw: &RawConfig) -> opc_ir::DType {
    let name = raw.dtype.as_ref().or(raw.torch_dtype.as_ref()).and_then(|v| v.as_str()).unwrap_or("");
    match name.strip_prefix("torch.").unwrap_or(name) {
        "bfloat16" => opc_ir::DType::BF16,
        "float16" | "half" => opc_ir::DType::F16,
        _ => opc_ir::DType::F32,
    }
}
