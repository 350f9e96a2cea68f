//! A loaded causal LM and its forward pass. Every numerical step is an opc operator launched
//! through `opc_ops` (library drivers plus `opc_ops::model`); this file only loads weights,
//! builds position / block-table tensors and moves rows between segments.
//!
//! Weights keep their storage dtype (bf16 matrices are widened tile by tile inside the linear
//! kernels); by default activations, the residual stream and the KV cache are f32, so logits
//! match transformers run in f32 on the stored weights ([`Activations`] selects bf16 inputs for
//! the linears instead). Small vectors (norms, biases, sinks) and MoE router gates are widened
//! once at load; expert stacks keep their storage dtype. The q, k and v projections are
//! concatenated at load into one [Hq·D + 2·Hkv·D, H] matrix, and gate and up into one [2I, H],
//! so each runs as one GEMM over an input packed once.

use super::activations::Activations;
use super::checkpoint::Checkpoint;
use super::config::{Arch, LayerAttention, ModelConfig};
use super::error::{ModelError, Result};
use super::kv::{KvCache, SeqId};
use super::profile::Profile;
use opc_ir::{DType, Tensor};
use opc_ops::attention::{flash_attention, AttentionParams};
use opc_ops::model::{self as mops, KvPool, MxExperts};
use opc_ops::paged_attention::{paged_decode, PagedDecodeParams};
use opc_ops::moe::Routing;
use opc_ops::moe_w::moe_w;
use opc_ops::{blocks, Ops};
use std::path::Path;

const FLOATS: &[DType] = &[DType::BF16, DType::F16, DType::F32];

/// Layers [`Model::warm_up`] runs. Two, because the second layer's input norm is the first
/// `add_rmsnorm` into the attention's dtype (it adds the first MLP's output): an instance the
/// first layer alone never launches when the MLP takes f32 inputs (MoE) and the attention bf16.
const WARM_LAYERS: usize = 2;

struct Attn {
    /// q_proj, k_proj and v_proj stacked by rows: [Hq·D + 2·Hkv·D, H].
    wqkv: Tensor,
    wo: Tensor,
    /// Their biases, concatenated the same way.
    bqkv: Option<Tensor>,
    bo: Option<Tensor>,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    sinks: Option<Tensor>,
    window: Option<usize>,
}

struct DenseMlp {
    /// gate_proj and up_proj stacked by rows: [2I, H].
    gate_up: Tensor,
    down: Tensor,
    /// (gate ‖ up [2I], down [H]).
    biases: Option<[Tensor; 2]>,
}

enum Mlp {
    Dense(DenseMlp),
    /// Qwen3-MoE (top-k softmax) and MoGE (grouped), experts stacked in their storage dtype
    /// [E, I, H] / [E, H, I], router gate f32 [E, H].
    Moe { gate: Tensor, w1: Tensor, w3: Tensor, w2: Tensor, routing: Routing, shared: Option<DenseMlp> },
    /// gpt-oss: MXFP4 experts with biases, router with bias.
    MoeMx { router_w: Tensor, router_b: Tensor, gate_up: MxExperts, down: MxExperts, top_k: usize },
}

struct Layer {
    in_norm: Tensor,
    post_norm: Tensor,
    attn: Attn,
    mlp: Mlp,
}

/// One run of consecutive tokens of one sequence inside a forward batch.
#[derive(Clone, Debug)]
pub struct Segment {
    pub seq: SeqId,
    pub tokens: Vec<u32>,
    /// Logits for every token of the segment (prefill checks, speculative verification) or only
    /// for the last one (generation).
    pub all_logits: bool,
}

/// A causal LM ready to run: configuration, weights and the operator cache.
pub struct Model {
    pub cfg: ModelConfig,
    pub ops: Ops,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Tensor,
    /// Per-operator timing of [`Model::forward`] (off unless `OPC_PROFILE` is set).
    pub profile: Profile,
    /// Compute dtype of the linears' inputs.
    pub activations: Activations,
}

struct Loader<'a> {
    ck: &'a Checkpoint,
    ops: &'a Ops,
}

impl Loader<'_> {
    /// A matrix kept in its storage dtype.
    fn mat(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.ck.get(name, shape, FLOATS)
    }
    /// A small tensor widened to f32.
    fn f32(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.ck.get(name, shape, FLOATS)?;
        Ok(mops::to_f32(self.ops, &t)?)
    }
    fn opt_f32(&self, present: bool, name: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        if present {
            self.f32(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }
    /// Matrices `(name, [rows, K])` stacked by rows into [Σ rows, K] in their storage dtype
    /// (every one must have the first one's).
    fn cat(&self, parts: &[(String, [usize; 2])]) -> Result<Tensor> {
        let mut ts: Vec<Tensor> = Vec::new();
        for (name, shape) in parts {
            // a missing tensor is reported as such; a present one must match the first's dtype
            let allowed = if self.ck.contains(name) { ts.first().map_or(FLOATS, |t| std::slice::from_ref(&t.dtype)) } else { FLOATS };
            ts.push(self.ck.get(name, shape, allowed)?);
        }
        let rows = parts.iter().map(|p| p.1[0]).sum();
        let k = parts.first().map_or(0, |p| p.1[1]);
        let data = opc_ir::buffer::concat(ts.iter().map(|t| &t.data[..]));
        Ok(Tensor { dtype: ts.first().map_or(DType::F32, |t| t.dtype), shape: vec![rows, k], data })
    }
    /// f32 vectors `(name, len)` concatenated (biases of row-stacked matrices), if `present`.
    fn cat_f32(&self, present: bool, parts: &[(String, usize)]) -> Result<Option<Tensor>> {
        if !present {
            return Ok(None);
        }
        let mut data = Vec::new();
        for (name, n) in parts {
            data.extend_from_slice(&self.f32(name, &[*n])?.data);
        }
        let n = parts.iter().map(|p| p.1).sum();
        Ok(Some(Tensor { dtype: DType::F32, shape: vec![n], data }))
    }
    /// Per-expert matrices `{prefix}.{e}.{proj}.weight` stacked into [E, ...shape] in their
    /// storage dtype (every expert must have the same one).
    fn stack(&self, prefix: &str, proj: &str, experts: usize, shape: &[usize]) -> Result<Tensor> {
        let mut ts: Vec<Tensor> = Vec::new();
        for e in 0..experts {
            let name = format!("{prefix}.{e}.{proj}.weight");
            ts.push(self.ck.get(&name, shape, ts.first().map_or(FLOATS, |t| std::slice::from_ref(&t.dtype)))?);
        }
        let mut full = vec![experts];
        full.extend_from_slice(shape);
        let data = opc_ir::buffer::concat(ts.iter().map(|t| &t.data[..]));
        Ok(Tensor { dtype: ts.first().map_or(DType::F32, |t| t.dtype), shape: full, data })
    }
    fn dense(&self, prefix: &str, h: usize, i: usize, bias: bool) -> Result<DenseMlp> {
        let biases = match self.cat_f32(bias, &[(format!("{prefix}.gate_proj.bias"), i), (format!("{prefix}.up_proj.bias"), i)])? {
            Some(gu) => Some([gu, self.f32(&format!("{prefix}.down_proj.bias"), &[h])?]),
            None => None,
        };
        Ok(DenseMlp {
            gate_up: self.cat(&[(format!("{prefix}.gate_proj.weight"), [i, h]), (format!("{prefix}.up_proj.weight"), [i, h])])?,
            down: self.mat(&format!("{prefix}.down_proj.weight"), &[h, i])?,
            biases,
        })
    }
    /// gpt-oss MXFP4 experts `{prefix}_blocks` [E, R, K/32, 16], `_scales` [E, R, K/32], `_bias` [E, R].
    fn mx(&self, prefix: &str, e: usize, r: usize, k: usize) -> Result<MxExperts> {
        if k % 32 != 0 {
            return Err(ModelError::Usage(format!("{prefix}: MXFP4 input dim {k} is not a multiple of 32")));
        }
        let blocks = self.ck.get(&format!("{prefix}_blocks"), &[e, r, k / 32, 16], &[DType::U8])?;
        let scales = self.ck.get(&format!("{prefix}_scales"), &[e, r, k / 32], &[DType::U8])?;
        Ok(MxExperts {
            codes: Tensor { dtype: DType::E2M1, shape: vec![e, r, k], data: blocks.data },
            scales: Tensor { dtype: DType::E8M0, shape: vec![e, r, k / 32], data: scales.data },
            bias: self.f32(&format!("{prefix}_bias"), &[e, r])?,
        })
    }
}

impl Model {
    /// Load `dir` (config.json + safetensors) with operators compiled for `ops`' target.
    pub fn load(dir: &Path, ops: Ops) -> Result<Model> {
        let cfg = ModelConfig::load(&dir.join("config.json"))?;
        let ck = Checkpoint::open(dir)?;
        Model::from_checkpoint(cfg, &ck, ops)
    }

    pub fn from_checkpoint(cfg: ModelConfig, ck: &Checkpoint, ops: Ops) -> Result<Model> {
        let l = Loader { ck, ops: &ops };
        let (h, v, d) = (cfg.hidden, cfg.vocab, cfg.head_dim);
        let (qd, kd) = (cfg.heads * d, cfg.kv_heads * d);
        let embed = l.mat("model.embed_tokens.weight", &[v, h])?;
        let mut layers = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let p = format!("model.layers.{i}");
            let a = format!("{p}.self_attn");
            let ab = cfg.attention_bias;
            let attn = Attn {
                wqkv: l.cat(&[(format!("{a}.q_proj.weight"), [qd, h]), (format!("{a}.k_proj.weight"), [kd, h]), (format!("{a}.v_proj.weight"), [kd, h])])?,
                wo: l.mat(&format!("{a}.o_proj.weight"), &[h, qd])?,
                bqkv: l.cat_f32(ab, &[(format!("{a}.q_proj.bias"), qd), (format!("{a}.k_proj.bias"), kd), (format!("{a}.v_proj.bias"), kd)])?,
                bo: l.opt_f32(ab, &format!("{a}.o_proj.bias"), &[h])?,
                q_norm: l.opt_f32(cfg.qk_norm, &format!("{a}.q_norm.weight"), &[d])?,
                k_norm: l.opt_f32(cfg.qk_norm, &format!("{a}.k_norm.weight"), &[d])?,
                sinks: l.opt_f32(cfg.sinks, &format!("{a}.sinks"), &[cfg.heads])?,
                window: match cfg.attention[i] {
                    LayerAttention::Full => None,
                    LayerAttention::Sliding(w) => Some(w),
                },
            };
            let m = format!("{p}.mlp");
            let mlp = match (cfg.arch, &cfg.moe) {
                (Arch::Llama, _) | (_, None) => Mlp::Dense(l.dense(&m, h, cfg.intermediate, cfg.mlp_bias)?),
                (Arch::Qwen3Moe, Some(mc)) | (Arch::PanguMoge, Some(mc)) => {
                    let (e, im) = (mc.experts, mc.intermediate);
                    let ex = format!("{m}.experts");
                    let routing = match mc.groups {
                        None if mc.norm_topk_prob => Routing::TopK { k: mc.top_k },
                        None => Routing::TopKUnnormalized { k: mc.top_k },
                        Some(groups) => {
                            let name = format!("{m}.router_scale");
                            // stored [E] or, as in Pangu checkpoints, [1, E]
                            let shape: &[usize] = if matches!(ck.shape(&name), Some([1, _])) { &[1, e] } else { &[e] };
                            let rs = l.f32(&name, shape)?;
                            Routing::MoGE { groups, router_scale: Tensor { shape: vec![e], ..rs } }
                        }
                    };
                    let shared = if mc.shared_intermediate > 0 { Some(l.dense(&format!("{m}.shared_expert"), h, mc.shared_intermediate, false)?) } else { None };
                    Mlp::Moe {
                        gate: l.f32(&format!("{m}.gate.weight"), &[e, h])?,
                        w1: l.stack(&ex, "gate_proj", e, &[im, h])?,
                        w3: l.stack(&ex, "up_proj", e, &[im, h])?,
                        w2: l.stack(&ex, "down_proj", e, &[h, im])?,
                        routing,
                        shared,
                    }
                }
                (Arch::GptOss, Some(mc)) => {
                    let (e, im) = (mc.experts, mc.intermediate);
                    Mlp::MoeMx {
                        router_w: l.mat(&format!("{m}.router.weight"), &[e, h])?,
                        router_b: l.f32(&format!("{m}.router.bias"), &[e])?,
                        gate_up: l.mx(&format!("{m}.experts.gate_up_proj"), e, 2 * im, h)?,
                        down: l.mx(&format!("{m}.experts.down_proj"), e, h, im)?,
                        top_k: mc.top_k,
                    }
                }
            };
            layers.push(Layer {
                in_norm: l.f32(&format!("{p}.input_layernorm.weight"), &[h])?,
                post_norm: l.f32(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
                attn,
                mlp,
            });
        }
        let norm = l.f32("model.norm.weight", &[h])?;
        let lm_head = if cfg.tie_embeddings && !ck.contains("lm_head.weight") { embed.clone() } else { l.mat("lm_head.weight", &[v, h])? };
        Ok(Model { cfg, ops, embed, layers, norm, lm_head, profile: Profile::from_env(), activations: Activations::F32 })
    }

    /// Bytes of weights one decode step of one sequence reads: every matrix, vector and norm
    /// of the layers, the final norm and the LM head, but only `top_k` of the `E` experts of a
    /// MoE layer (their mean share) and one row of the embedding table.
    pub fn decode_weight_bytes(&self) -> u64 {
        let b = |t: &Tensor| t.data.len() as u64;
        let ob = |t: &Option<Tensor>| t.as_ref().map_or(0, b);
        let dense = |m: &DenseMlp| b(&m.gate_up) + b(&m.down) + m.biases.as_ref().map_or(0, |bs| bs.iter().map(b).sum());
        let mut total = b(&self.norm) + b(&self.lm_head) + b(&self.embed) / self.cfg.vocab.max(1) as u64;
        for l in &self.layers {
            let a = &l.attn;
            total += b(&l.in_norm) + b(&l.post_norm) + b(&a.wqkv) + b(&a.wo);
            total += ob(&a.bqkv) + ob(&a.bo) + ob(&a.q_norm) + ob(&a.k_norm) + ob(&a.sinks);
            total += match &l.mlp {
                Mlp::Dense(m) => dense(m),
                Mlp::Moe { gate, w1, w3, w2, routing, shared } => {
                    let e = w1.shape[0].max(1) as u64;
                    let (k, scale) = match routing {
                        Routing::TopK { k } | Routing::TopKUnnormalized { k } => (*k as u64, 0),
                        Routing::MoGE { groups, router_scale } => (*groups as u64, b(router_scale)),
                    };
                    b(gate) + scale + (b(w1) + b(w3) + b(w2)) * k / e + shared.as_ref().map_or(0, dense)
                }
                Mlp::MoeMx { router_w, router_b, gate_up, down, top_k } => {
                    let e = gate_up.codes.shape[0].max(1) as u64;
                    let mx = |m: &MxExperts| b(&m.codes) + b(&m.scales) + b(&m.bias);
                    b(router_w) + b(router_b) + (mx(gate_up) + mx(down)) * *top_k as u64 / e
                }
            };
        }
        total
    }

    /// A KV cache sized for `max_tokens` positions in total over all sequences.
    pub fn new_cache(&self, max_tokens: usize, block_size: usize) -> KvCache {
        let blocks = max_tokens.div_ceil(block_size).max(1);
        KvCache::new(self.cfg.layers, blocks, block_size, self.cfg.kv_heads, self.cfg.head_dim)
    }

    /// Run `segments` (each appended to its sequence's cache) through the model. Returns the
    /// logits of each segment: f32 [n, V] if `all_logits`, else [1, V] for its last token.
    pub fn forward(&mut self, cache: &mut KvCache, segments: &[Segment]) -> Result<Vec<Tensor>> {
        self.forward_layers(cache, segments, self.cfg.layers)
    }

    /// Compile every kernel a prefill of `prompt_len` tokens and the decode steps after it use,
    /// by running them through the first [`WARM_LAYERS`] layers only (later layers launch the
    /// same kernel instances) on a scratch cache, so timed runs measure no compilation. Returns
    /// seconds.
    pub fn warm_up(&mut self, prompt_len: usize, batch: usize) -> Result<f64> {
        let t0 = std::time::Instant::now();
        let n = prompt_len.max(1);
        let mut cache = self.new_cache((n + 2) * batch.max(1) + super::BLOCK_SIZE * batch.max(1), super::BLOCK_SIZE);
        let seqs: Vec<SeqId> = (0..batch.max(1)).map(|_| cache.new_seq()).collect();
        let prof = self.profile.enabled();
        self.profile.set_enabled(false);
        let vocab = self.cfg.vocab;
        let tok = |i: usize| (i % vocab) as u32;
        let r = (|| {
            self.forward_layers(&mut cache, &[Segment { seq: seqs[0], tokens: (0..n).map(tok).collect(), all_logits: false }], WARM_LAYERS)?;
            self.forward_layers(&mut cache, &[Segment { seq: seqs[0], tokens: vec![1], all_logits: false }], WARM_LAYERS)?;
            if seqs.len() > 1 {
                for &s in &seqs[1..] {
                    self.forward_layers(&mut cache, &[Segment { seq: s, tokens: vec![2], all_logits: false }], WARM_LAYERS)?;
                }
                let segs: Vec<Segment> = seqs.iter().map(|&s| Segment { seq: s, tokens: vec![3], all_logits: false }).collect();
                self.forward_layers(&mut cache, &segs, WARM_LAYERS)?;
            }
            Ok(())
        })();
        self.profile.set_enabled(prof);
        r.map(|()| t0.elapsed().as_secs_f64())
    }

    /// [`Model::forward`] through the first `nl` layers only (warm-up).
    fn forward_layers(&mut self, cache: &mut KvCache, segments: &[Segment], nl: usize) -> Result<Vec<Tensor>> {
        let cfg = &self.cfg;
        let ops = &self.ops;
        let prof = &mut self.profile;
        let act = self.activations;
        // rows, positions and block tables of the batch
        let mut ids = Vec::new();
        let mut pos = Vec::new();
        let mut seq_of = Vec::new();
        let mut lens = Vec::new();
        let mut spans = Vec::new(); // (row0, n, start, table)
        for (si, s) in segments.iter().enumerate() {
            if s.tokens.is_empty() {
                return Err(ModelError::Usage("a forward segment has no tokens".into()));
            }
            if let Some(&bad) = s.tokens.iter().find(|&&t| t as usize >= cfg.vocab) {
                return Err(ModelError::Usage(format!("token id {bad} is outside the vocabulary (size {})", cfg.vocab)));
            }
            let start = cache.len(s.seq)?;
            cache.grow(s.seq, start + s.tokens.len())?;
            spans.push((ids.len(), s.tokens.len(), start, cache.table(s.seq)?));
            lens.push((start + s.tokens.len()) as i32);
            for (i, &t) in s.tokens.iter().enumerate() {
                ids.push(t as i32);
                pos.push((start + i) as i32);
                seq_of.push(si as i32);
            }
        }
        let t = ids.len();
        let seqs: Vec<SeqId> = segments.iter().map(|s| s.seq).collect();
        let pos = Tensor::from_i32(DType::I32, &[t], &pos);
        let rope = prof.time("rope_table", || blocks::rope_table(ops, &pos, cfg.head_dim, &cfg.rope))?;
        let batch = Batch {
            pos,
            seq: Tensor::from_i32(DType::I32, &[t], &seq_of),
            tables: cache.tables(&seqs)?,
            lens: Tensor::from_i32(DType::I32, &[lens.len()], &lens),
            spans,
            rope,
        };
        let ids = Tensor::from_i32(DType::I32, &[t], &ids);
        let embed = &mut self.embed;
        let mut x = prof.time("embedding", || mops::embedding_w(ops, embed, &ids))?;
        // Each block's output is added to the residual stream x by the RMSNorm that reads it
        // next (`add_rmsnorm`: one kernel); only the last MLP's output takes a plain add.
        let mut pending: Option<Tensor> = None;
        for (li, layer) in self.layers.iter_mut().enumerate().take(nl) {
            let to = act.input(&layer.attn.wqkv);
            let xn = match pending.take() {
                None => prof.time("rmsnorm", || blocks::rmsnorm_to(ops, &x, &layer.in_norm, cfg.eps, to))?,
                Some(m) => {
                    let (nx, xn) = prof.time("add_rmsnorm", || blocks::add_rmsnorm_to(ops, x, &m, &layer.in_norm, cfg.eps, to))?;
                    x = nx;
                    xn
                }
            };
            let attn = attention(ops, prof, cfg, act, &layer.attn, &xn, &batch, &mut cache.pools[li])?;
            // a dense MLP and the gpt-oss MXFP4 experts (bf16 router) take bf16 inputs; the
            // Qwen3 / MoGE experts route and multiply f32 rows
            let to = match &layer.mlp {
                Mlp::Dense(m) => act.input(&m.gate_up),
                Mlp::MoeMx { router_w, .. } => act.input(router_w),
                Mlp::Moe { .. } => DType::F32,
            };
            let (nx, xn) = prof.time("add_rmsnorm", || blocks::add_rmsnorm_to(ops, x, &attn, &layer.post_norm, cfg.eps, to))?;
            x = nx;
            let m = mlp(ops, prof, cfg, act, &mut layer.mlp, &xn)?;
            pending = Some(m);
        }
        if let Some(m) = pending {
            x = prof.time("add", || mops::add(ops, x, m))?;
        }
        // rows that need logits
        let mut rows = Vec::new();
        for (s, &(r0, n, _, _)) in segments.iter().zip(&batch.spans) {
            if s.all_logits {
                rows.extend(r0..r0 + n);
            } else {
                rows.push(r0 + n - 1);
            }
        }
        let sel = select_rows(&x, &rows);
        let lm_head = &self.lm_head;
        let xn = prof.time("rmsnorm", || blocks::rmsnorm_to(ops, &sel, &self.norm, cfg.eps, act.input(lm_head)))?;
        let logits = prof.time("lm_head", || mops::linear_w(ops, &xn, lm_head, None))?;
        let mut out = Vec::new();
        let mut r = 0;
        for (s, &(_, n, _, _)) in segments.iter().zip(&batch.spans) {
            let k = if s.all_logits { n } else { 1 };
            out.push(select_rows(&logits, &(r..r + k).collect::<Vec<_>>()));
            r += k;
        }
        Ok(out)
    }
}

/// Rows `rows` of a 2-D or 3-D tensor (a copy).
fn select_rows(x: &Tensor, rows: &[usize]) -> Tensor {
    let row_bytes = x.data.len() / x.shape[0].max(1);
    let mut data = Vec::with_capacity(rows.len() * row_bytes);
    for &r in rows {
        data.extend_from_slice(&x.data[r * row_bytes..(r + 1) * row_bytes]);
    }
    let mut shape = x.shape.clone();
    shape[0] = rows.len();
    Tensor { dtype: x.dtype, shape, data }
}

fn view(t: Tensor, shape: &[usize]) -> Tensor {
    debug_assert_eq!(t.numel(), shape.iter().product::<usize>());
    Tensor { shape: shape.to_vec(), ..t }
}

/// Where the tokens of a forward batch belong: the operands of `kv_write` and `paged_decode`
/// and, per segment, its rows for the multi-token path.
struct Batch {
    /// i32 [T]: position of each token in its sequence.
    pos: Tensor,
    /// i32 [T]: segment (row of `tables`) of each token.
    seq: Tensor,
    /// i32 [S, MB]: each segment's block table, padded.
    tables: Tensor,
    /// i32 [S]: each segment's length after this forward.
    lens: Tensor,
    /// Per segment: first row, tokens, first position, its block table (i32 [blocks]).
    spans: Vec<(usize, usize, usize, Tensor)>,
    /// f32 [T, 2, D/2]: RoPE cos/sin of each token's position, shared by every layer.
    rope: Tensor,
}

/// Self-attention of a forward batch: projections, RoPE, one `kv_write` of every new K/V row,
/// then either one `paged_decode` over all sequences (every segment one token: decode) or, per
/// segment, flash attention over its gathered cache (prefill, speculative verification).
#[allow(clippy::too_many_arguments)]
fn attention(ops: &Ops, prof: &mut Profile, cfg: &ModelConfig, act: Activations, a: &Attn, xn: &Tensor, batch: &Batch, pool: &mut KvPool) -> Result<Tensor> {
    let t = xn.shape[0];
    let (hq, hk, d) = (cfg.heads, cfg.kv_heads, cfg.head_dim);
    let qkv = prof.time("linear.qkv", || mops::linear_w(ops, xn, &a.wqkv, a.bqkv.as_ref()))?;
    let qkv = view(qkv, &[t, hq + 2 * hk, d]);
    let v = prof.time("heads", || mops::heads(ops, &qkv, hq + hk, hk))?;
    // q and k: RoPE straight from the fused projection, or after their per-head RMSNorm (Qwen3)
    let (q, k) = if let (Some(qn), Some(kn)) = (&a.q_norm, &a.k_norm) {
        let q = prof.time("heads", || mops::heads(ops, &qkv, 0, hq))?;
        let k = prof.time("heads", || mops::heads(ops, &qkv, hq, hk))?;
        let q = view(prof.time("qk_norm", || blocks::rmsnorm(ops, &view(q, &[t * hq, d]), qn, cfg.eps))?, &[t, hq, d]);
        let k = view(prof.time("qk_norm", || blocks::rmsnorm(ops, &view(k, &[t * hk, d]), kn, cfg.eps))?, &[t, hk, d]);
        (prof.time("rope", || blocks::rope_heads(ops, &q, &batch.rope, 0, hq))?, prof.time("rope", || blocks::rope_heads(ops, &k, &batch.rope, 0, hk))?)
    } else {
        (prof.time("rope", || blocks::rope_heads(ops, &qkv, &batch.rope, 0, hq))?, prof.time("rope", || blocks::rope_heads(ops, &qkv, &batch.rope, hq, hk))?)
    };
    prof.time("kv_write", || mops::kv_write(ops, pool, &k, &v, &batch.tables, &batch.seq, &batch.pos))?;
    let scale = 1.0 / (d as f32).sqrt();
    let to = act.input(&a.wo);
    let o = if batch.spans.iter().all(|s| s.1 == 1) {
        let p = PagedDecodeParams { scale, window: a.window };
        let o = prof.time("paged_decode", || paged_decode(ops, &q, pool, &batch.tables, &batch.lens, a.sinks.as_ref(), &p))?;
        let o = view(o, &[t, hq * d]);
        if to == DType::F32 {
            o
        } else {
            prof.time("convert", || mops::convert(ops, &o, to))?
        }
    } else {
        let params = AttentionParams { causal: true, window: a.window, scale };
        let mut out = Vec::with_capacity(to.storage_bytes(t * hq * d));
        for (r0, n, start, table) in &batch.spans {
            let (kc, vc) = prof.time("kv_gather", || mops::kv_gather(ops, pool, table, start + n))?;
            let rows: Vec<usize> = (*r0..r0 + n).collect();
            let qs = prof.time("swap01", || mops::swap01(ops, &select_rows(&q, &rows)))?;
            let qs = view(qs, &[1, hq, *n, d]);
            let o = prof.time("flash_attention", || flash_attention(ops, &qs, &kc, &vc, a.sinks.as_ref(), &params))?;
            let o = prof.time("swap01", || mops::swap01_to(ops, &view(o.out, &[hq, *n, d]), to))?;
            out.extend_from_slice(&o.data);
        }
        Tensor { dtype: to, shape: vec![t, hq * d], data: out }
    };
    Ok(prof.time("linear.o", || mops::linear_w(ops, &o, &a.wo, a.bo.as_ref()))?)
}

fn dense(ops: &Ops, prof: &mut Profile, act: Activations, m: &DenseMlp, xn: &Tensor) -> Result<Tensor> {
    let (bgu, bd) = match &m.biases {
        Some([gu, d]) => (Some(gu), Some(d)),
        None => (None, None),
    };
    let gu = prof.time("linear.gate_up", || mops::linear_w(ops, xn, &m.gate_up, bgu))?;
    let a = prof.time("swiglu", || mops::swiglu_gu(ops, &gu, act.input(&m.down)))?;
    Ok(prof.time("linear.down", || mops::linear_w(ops, &a, &m.down, bd))?)
}

fn mlp(ops: &Ops, prof: &mut Profile, cfg: &ModelConfig, act: Activations, m: &mut Mlp, xn: &Tensor) -> Result<Tensor> {
    match m {
        Mlp::Dense(dm) => dense(ops, prof, act, dm, xn),
        Mlp::Moe { gate, w1, w3, w2, routing, shared } => {
            let y = prof.time("moe", || moe_w(ops, xn, gate, w1, w3, w2, routing))?;
            match shared {
                Some(s) => {
                    let sy = dense(ops, prof, act, s, xn)?;
                    Ok(prof.time("add", || mops::add(ops, y, sy))?)
                }
                None => Ok(y),
            }
        }
        Mlp::MoeMx { router_w, router_b, gate_up, down, top_k } => {
            let (alpha, limit) = cfg.swiglu;
            Ok(prof.time("moe_mxfp4", || mops::moe_mxfp4(ops, xn, router_w, router_b, *top_k, gate_up, down, alpha, limit))?)
        }
    }
}
