//! Model runtime: Hugging Face checkpoints (config.json, memory-mapped safetensors, tokenizer.json)
//! for Llama, Qwen3-MoE, gpt-oss (MXFP4 experts) and MoGE (Pangu Pro MoE) causal LMs, run by
//! operators compiled by opc, with a paged KV cache, sampling, speculative decoding verified by
//! the `kl_judge` operator, reference evaluation and random-weight checkpoint generation.
//!
//! - [`config`]: config.json → [`ModelConfig`]
//! - [`checkpoint`]: safetensors (single or sharded), validated headers, checked tensor reads
//! - [`tokenizer`]: tokenizer.json and streaming detokenization
//! - [`kv`]: the paged KV cache (block pool, per-sequence block tables)
//! - [`llm`]: weights and the forward pass
//! - [`activations`]: the compute dtype of the linears (f32 or bf16)
//! - [`profile`]: per-operator timing of the forward pass (`OPC_PROFILE=1`)
//! - [`bench`]: prefill / decode / batched-decode throughput (`opc bench-model`)
//! - [`generate`]: greedy / sampled generation and speculative decoding
//! - [`eval`]: comparison against `reference.safetensors`
//! - [`init`]: random-weight checkpoints in the real layout

pub mod checkpoint;
pub mod config;
pub mod error;
pub mod eval;
pub mod generate;
pub mod init;
pub mod kv;
pub mod activations;
pub mod bench;
pub mod llm;
pub mod profile;
pub mod tokenizer;

pub use activations::Activations;
pub use config::{Arch, ModelConfig};
pub use error::{ModelError, Result};
pub use kv::{KvCache, SeqId};
pub use llm::{Model, Segment};
pub use tokenizer::Tokenizer;

/// Tokens per KV-cache block. `paged_decode` walks one block per step, so a block is also its
/// key tile: 32 keys (two 16-lane vectors per score row) amortize the per-step softmax work
/// better than 16 (batch-8 decode attention ~20% faster) at the cost of up to 31 unused slots
/// per sequence.
pub const BLOCK_SIZE: usize = 32;
