//! Random-weight checkpoints in the real Hugging Face layout (config.json + safetensors, sharded
//! with model.safetensors.index.json when asked, and a small byte-level BPE tokenizer.json), for
//! benchmarks and loader tests, and loadable by transformers and llama.cpp's converter (the
//! same-run baselines of benches/). Tensor data is streamed to disk, so checkpoints larger than
//! memory can be written.

use super::config::{Arch, ModelConfig};
use super::error::{ModelError, Result};
use super::generate::Rng;
use std::io::Write;
use std::path::Path;

/// Sizes of a random checkpoint.
#[derive(Clone, Debug)]
pub struct InitSpec {
    pub arch: Arch,
    pub vocab: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub experts: usize,
    pub top_k: usize,
    /// MoGE groups (Pangu), also its experts per token.
    pub groups: usize,
    pub shared_intermediate: usize,
    pub sliding_window: usize,
    pub seed: u64,
    /// Split into shards of at most this many bytes (0: one file).
    pub shard_bytes: usize,
}

/// One tensor of a checkpoint: name, safetensors dtype, shape, and how to fill it.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: &'static str,
    pub shape: Vec<usize>,
    fill: Fill,
}

#[derive(Clone, Copy, Debug)]
enum Fill {
    /// bf16 values uniform in [-a, a]
    Uniform(f32),
    /// bf16 ones
    Ones,
    /// random e2m1 nibbles
    Codes,
    /// e8m0 exponents in 127 + [lo, lo + 3]
    Scales(i32),
}

impl InitSpec {
    /// The config.json text of this checkpoint.
    pub fn config_json(&self) -> String {
        let mut c = serde_json::json!({
            "architectures": [self.arch.hf_name()],
            "model_type": self.arch.model_type(),
            "vocab_size": self.vocab,
            "hidden_size": self.hidden,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": 1e-5,
            "max_position_embeddings": 4096,
            "tie_word_embeddings": false,
            "torch_dtype": "bfloat16",
            "bos_token_id": 0,
            "eos_token_id": 0,
        });
        let o = c.as_object_mut().expect("object");
        let mut set = |k: &str, v: serde_json::Value| {
            o.insert(k.to_string(), v);
        };
        match self.arch {
            Arch::Llama => {
                set("intermediate_size", self.intermediate.into());
                set("rope_parameters", serde_json::json!({"rope_type": "default", "rope_theta": 500000.0}));
            }
            Arch::Qwen3Moe => {
                set("moe_intermediate_size", self.intermediate.into());
                set("num_experts", self.experts.into());
                set("num_experts_per_tok", self.top_k.into());
                set("norm_topk_prob", true.into());
                set("rope_parameters", serde_json::json!({"rope_type": "default", "rope_theta": 1000000.0}));
            }
            Arch::GptOss => {
                set("intermediate_size", self.intermediate.into());
                set("num_local_experts", self.experts.into());
                set("num_experts_per_tok", self.top_k.into());
                set("sliding_window", self.sliding_window.into());
                let types: Vec<&str> = (0..self.layers).map(|i| if i % 2 == 0 { "sliding_attention" } else { "full_attention" }).collect();
                set("layer_types", serde_json::json!(types));
                set("attention_bias", true.into());
                set("swiglu_limit", 7.0.into());
                set(
                    "rope_parameters",
                    serde_json::json!({"rope_type": "yarn", "rope_theta": 150000.0, "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0, "truncate": false, "original_max_position_embeddings": 128}),
                );
                set("quantization_config", serde_json::json!({"quant_method": "mxfp4"}));
            }
            Arch::PanguMoge => {
                set("moe_intermediate_size", self.intermediate.into());
                set("num_experts", self.experts.into());
                set("num_experts_per_tok", self.groups.into());
                set("num_expert_groups", self.groups.into());
                set("shared_expert_intermediate_size", self.shared_intermediate.into());
                set("rope_parameters", serde_json::json!({"rope_type": "default", "rope_theta": 16000000.0}));
            }
        }
        serde_json::to_string_pretty(&c).expect("plain JSON") + "\n"
    }

    /// Every tensor of the checkpoint, in the layout the loader (and transformers) reads.
    pub fn tensors(&self) -> Vec<TensorSpec> {
        let (h, d, v) = (self.hidden, self.head_dim, self.vocab);
        let (qd, kd) = (self.heads * d, self.kv_heads * d);
        let mut out = Vec::new();
        let bf = |name: String, shape: Vec<usize>, fill: Fill| TensorSpec { name, dtype: "BF16", shape, fill };
        let w = |fan_in: usize| Fill::Uniform(1.0 / (fan_in as f32).sqrt());
        out.push(bf("model.embed_tokens.weight".into(), vec![v, h], Fill::Uniform(1.0)));
        for i in 0..self.layers {
            let p = format!("model.layers.{i}");
            out.push(bf(format!("{p}.input_layernorm.weight"), vec![h], Fill::Ones));
            out.push(bf(format!("{p}.post_attention_layernorm.weight"), vec![h], Fill::Ones));
            let a = format!("{p}.self_attn");
            out.push(bf(format!("{a}.q_proj.weight"), vec![qd, h], w(h)));
            out.push(bf(format!("{a}.k_proj.weight"), vec![kd, h], w(h)));
            out.push(bf(format!("{a}.v_proj.weight"), vec![kd, h], w(h)));
            out.push(bf(format!("{a}.o_proj.weight"), vec![h, qd], w(qd)));
            let m = format!("{p}.mlp");
            match self.arch {
                Arch::Llama => {
                    out.push(bf(format!("{m}.gate_proj.weight"), vec![self.intermediate, h], w(h)));
                    out.push(bf(format!("{m}.up_proj.weight"), vec![self.intermediate, h], w(h)));
                    out.push(bf(format!("{m}.down_proj.weight"), vec![h, self.intermediate], w(self.intermediate)));
                }
                Arch::Qwen3Moe | Arch::PanguMoge => {
                    if self.arch == Arch::Qwen3Moe {
                        out.push(bf(format!("{a}.q_norm.weight"), vec![d], Fill::Ones));
                        out.push(bf(format!("{a}.k_norm.weight"), vec![d], Fill::Ones));
                    }
                    out.push(bf(format!("{m}.gate.weight"), vec![self.experts, h], w(h)));
                    let im = self.intermediate;
                    for e in 0..self.experts {
                        out.push(bf(format!("{m}.experts.{e}.gate_proj.weight"), vec![im, h], w(h)));
                        out.push(bf(format!("{m}.experts.{e}.up_proj.weight"), vec![im, h], w(h)));
                        out.push(bf(format!("{m}.experts.{e}.down_proj.weight"), vec![h, im], w(im)));
                    }
                    if self.arch == Arch::PanguMoge {
                        out.push(bf(format!("{m}.router_scale"), vec![1, self.experts], Fill::Ones));
                        if self.shared_intermediate > 0 {
                            let si = self.shared_intermediate;
                            out.push(bf(format!("{m}.shared_expert.gate_proj.weight"), vec![si, h], w(h)));
                            out.push(bf(format!("{m}.shared_expert.up_proj.weight"), vec![si, h], w(h)));
                            out.push(bf(format!("{m}.shared_expert.down_proj.weight"), vec![h, si], w(si)));
                        }
                    }
                }
                Arch::GptOss => {
                    for (n, len) in [("q_proj", qd), ("k_proj", kd), ("v_proj", kd), ("o_proj", h)] {
                        out.push(bf(format!("{a}.{n}.bias"), vec![len], Fill::Uniform(0.02)));
                    }
                    out.push(bf(format!("{a}.sinks"), vec![self.heads], Fill::Uniform(1.0)));
                    let (e, im) = (self.experts, self.intermediate);
                    out.push(bf(format!("{m}.router.weight"), vec![e, h], w(h)));
                    out.push(bf(format!("{m}.router.bias"), vec![e], Fill::Uniform(0.02)));
                    let x = format!("{m}.experts");
                    // scales: 2^(s-127) · e2m1 (|code| ≤ 6) ≈ 1/sqrt(fan_in)
                    let lo = |fan_in: usize| -((fan_in as f32).sqrt() * 6.0).log2().ceil() as i32;
                    out.push(TensorSpec { name: format!("{x}.gate_up_proj_blocks"), dtype: "U8", shape: vec![e, 2 * im, h / 32, 16], fill: Fill::Codes });
                    out.push(TensorSpec { name: format!("{x}.gate_up_proj_scales"), dtype: "U8", shape: vec![e, 2 * im, h / 32], fill: Fill::Scales(lo(h)) });
                    out.push(bf(format!("{x}.gate_up_proj_bias"), vec![e, 2 * im], Fill::Uniform(0.02)));
                    out.push(TensorSpec { name: format!("{x}.down_proj_blocks"), dtype: "U8", shape: vec![e, h, im / 32, 16], fill: Fill::Codes });
                    out.push(TensorSpec { name: format!("{x}.down_proj_scales"), dtype: "U8", shape: vec![e, h, im / 32], fill: Fill::Scales(lo(im)) });
                    out.push(bf(format!("{x}.down_proj_bias"), vec![e, h], Fill::Uniform(0.02)));
                }
            }
        }
        out.push(bf("model.norm.weight".into(), vec![h], Fill::Ones));
        out.push(bf("lm_head.weight".into(), vec![v, h], w(h)));
        out
    }

    /// Parameters (elements; an MXFP4 byte holds two).
    pub fn parameters(&self) -> usize {
        self.tensors().iter().map(|t| t.shape.iter().product::<usize>() * if t.name.ends_with("_blocks") { 2 } else { 1 }).sum()
    }

    /// Write config.json and the safetensors file(s) into `dir`; returns the bytes written.
    pub fn write(&self, dir: &Path) -> Result<u64> {
        let io = |p: &Path, err: std::io::Error| ModelError::Io { path: p.to_path_buf(), err };
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let cfg_path = dir.join("config.json");
        let text = self.config_json();
        ModelConfig::parse(&cfg_path, &text)?; // what we write must load
        if matches!(self.arch, Arch::GptOss) && (self.hidden % 32 != 0 || self.intermediate % 32 != 0) {
            return Err(ModelError::Usage("gpt-oss MXFP4 experts need hidden and intermediate sizes that are multiples of 32".into()));
        }
        std::fs::write(&cfg_path, text).map_err(|e| io(&cfg_path, e))?;
        // split into shards
        let specs = self.tensors();
        let bytes_of = |t: &TensorSpec| t.shape.iter().product::<usize>() * if t.dtype == "BF16" { 2 } else { 1 };
        let mut shards: Vec<Vec<TensorSpec>> = vec![Vec::new()];
        let mut cur = 0;
        for t in specs {
            let b = bytes_of(&t);
            if self.shard_bytes > 0 && cur > 0 && cur + b > self.shard_bytes {
                shards.push(Vec::new());
                cur = 0;
            }
            cur += b;
            shards.last_mut().expect("non-empty").push(t);
        }
        let mut rng = Rng::new(self.seed);
        let mut total = 0u64;
        let n = shards.len();
        let mut weight_map = serde_json::Map::new();
        for (si, shard) in shards.iter().enumerate() {
            let file = if n == 1 { "model.safetensors".to_string() } else { format!("model-{:05}-of-{:05}.safetensors", si + 1, n) };
            let path = dir.join(&file);
            let mut header = serde_json::Map::new();
            header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
            let mut off = 0;
            for t in shard {
                let b = bytes_of(t);
                header.insert(t.name.clone(), serde_json::json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [off, off + b]}));
                weight_map.insert(t.name.clone(), file.clone().into());
                off += b;
            }
            let mut h = serde_json::to_vec(&serde_json::Value::Object(header)).expect("plain JSON");
            while h.len() % 8 != 0 {
                h.push(b' ');
            }
            let f = std::fs::File::create(&path).map_err(|e| io(&path, e))?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
            w.write_all(&(h.len() as u64).to_le_bytes()).map_err(|e| io(&path, e))?;
            w.write_all(&h).map_err(|e| io(&path, e))?;
            for t in shard {
                write_fill(&mut w, t, &mut rng).map_err(|e| io(&path, e))?;
            }
            w.flush().map_err(|e| io(&path, e))?;
            total += 8 + h.len() as u64 + off as u64;
        }
        if n > 1 {
            let p = dir.join("model.safetensors.index.json");
            let idx = serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
            std::fs::write(&p, serde_json::to_string_pretty(&idx).expect("plain JSON")).map_err(|e| io(&p, e))?;
        }
        Ok(total)
    }
}

fn write_fill(w: &mut impl Write, t: &TensorSpec, rng: &mut Rng) -> std::io::Result<()> {
    let n: usize = t.shape.iter().product();
    let mut buf = Vec::with_capacity(1 << 16);
    let flush = |buf: &mut Vec<u8>, w: &mut dyn Write, force: bool| -> std::io::Result<()> {
        if force || buf.len() >= 1 << 16 {
            w.write_all(buf)?;
            buf.clear();
        }
        Ok(())
    };
    for _ in 0..n {
        match t.fill {
            Fill::Uniform(a) => {
                let x = (rng.uniform() * 2.0 - 1.0) * a;
                buf.extend_from_slice(&half::bf16::from_f32(x).to_le_bytes());
            }
            Fill::Ones => buf.extend_from_slice(&half::bf16::from_f32(1.0).to_le_bytes()),
            Fill::Codes => buf.push((rng.next_u64() >> 56) as u8),
            Fill::Scales(lo) => buf.push((127 + lo + (rng.next_u64() >> 62) as i32).clamp(0, 254) as u8),
        }
        flush(&mut buf, w, false)?;
    }
    flush(&mut buf, w, true)
}

/// Id of `<|endoftext|>`, the BOS/EOS token config.json names; byte `b` is token `1 + b`.
pub const TOKENIZER_EOS: u32 = 0;
/// Smallest vocabulary the written tokenizer fits: `<|endoftext|>` and the 256 bytes.
pub const TOKENIZER_TOKENS: usize = 257;

/// The merges of the written tokenizer, in rank order: a space before a letter, then every pair
/// of lower-case letters (728 in all; as many as the vocabulary has room for are kept). Their
/// only purpose is a valid non-trivial BPE: llama.cpp refuses a BPE vocabulary without merges.
fn tokenizer_merges() -> Vec<(String, String)> {
    let space = byte_char(b' ').to_string();
    let lower = || (b'a'..=b'z').map(|c| (c as char).to_string());
    let upper = (b'A'..=b'Z').map(|c| (c as char).to_string());
    let mut m: Vec<(String, String)> = lower().chain(upper).map(|c| (space.clone(), c)).collect();
    for a in lower() {
        m.extend(lower().map(|b| (a.clone(), b)));
    }
    m
}

/// The character byte-level BPE (GPT-2) spells byte `b` with: printable Latin-1 bytes stand for
/// themselves, the others map in order to U+0100 onwards (so every token is visible text).
fn byte_char(b: u8) -> char {
    let printable = |x: u8| (b'!'..=b'~').contains(&x) || (0xA1..=0xAC).contains(&x) || x >= 0xAE;
    if printable(b) {
        return b as char;
    }
    let before = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + before).expect("below U+0200")
}

impl InitSpec {
    /// tokenizer.json (HF `tokenizers` format: byte-level BPE with the GPT-2 pre-tokenizer, a
    /// token per byte so any text encodes, plus `tokenizer_merges`) and tokenizer_config.json, so
    /// that `opc run`, transformers' AutoTokenizer and llama.cpp (converter and loader) accept the
    /// checkpoint. Needs a vocabulary of at least `TOKENIZER_TOKENS`; ids past the tokenizer's
    /// last token are unused padding of the embedding and LM head.
    pub fn write_tokenizer(&self, dir: &Path) -> Result<()> {
        if self.vocab < TOKENIZER_TOKENS {
            return Err(ModelError::Usage(format!("a byte-level tokenizer needs --vocab of at least {TOKENIZER_TOKENS} (got {})", self.vocab)));
        }
        let eos = "<|endoftext|>";
        let mut vocab = serde_json::Map::new();
        vocab.insert(eos.into(), TOKENIZER_EOS.into());
        for b in 0..=255u8 {
            vocab.insert(byte_char(b).to_string(), (1 + b as u32).into());
        }
        let mut merges = Vec::new();
        for (a, b) in tokenizer_merges().into_iter().take(self.vocab - TOKENIZER_TOKENS) {
            vocab.insert(format!("{a}{b}"), vocab.len().into());
            merges.push(serde_json::Value::from(format!("{a} {b}")));
        }
        let byte_level = serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
        let tok = serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [{"id": TOKENIZER_EOS, "content": eos, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
            "normalizer": null,
            "pre_tokenizer": byte_level,
            "post_processor": byte_level,
            "decoder": byte_level,
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null, "end_of_word_suffix": null,
                      "fuse_unk": false, "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": merges},
        });
        let cfg = serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": eos,
            "eos_token": eos,
            "add_bos_token": false,
            "add_prefix_space": false,
            "clean_up_tokenization_spaces": false,
            "model_max_length": 4096,
        });
        for (file, v) in [("tokenizer.json", tok), ("tokenizer_config.json", cfg)] {
            let p = dir.join(file);
            std::fs::write(&p, serde_json::to_string_pretty(&v).expect("plain JSON") + "\n").map_err(|err| ModelError::Io { path: p.clone(), err })?;
        }
        Ok(())
    }
}
