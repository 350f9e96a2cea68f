//! Checkpoint loading: bad checkpoints give one precise error each (exact messages), sharded
//! checkpoints load like single files, and random MoGE / Qwen3-MoE / gpt-oss checkpoints written
//! by `InitSpec` load and run.

use opc_runtime::model::init::InitSpec;
use opc_runtime::model::llm::Segment;
use opc_runtime::model::{Arch, Model};
use std::path::{Path, PathBuf};

fn ops() -> opc_ops::Ops {
    opc_ops::Ops::new(opc_codegen::target_by_name("cpu").unwrap())
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("opc-model-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn spec(arch: Arch) -> InitSpec {
    InitSpec {
        arch,
        vocab: 64,
        hidden: 64,
        intermediate: 64,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        head_dim: 16,
        experts: 4,
        top_k: 2,
        groups: 2,
        shared_intermediate: 32,
        sliding_window: 4,
        seed: 7,
        shard_bytes: 0,
    }
}

fn llama(name: &str) -> PathBuf {
    let d = tmp(name);
    spec(Arch::Llama).write(&d).unwrap();
    d
}

/// Rewrite the safetensors header of `dir`/model.safetensors with `edit`.
fn edit_header(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let p = dir.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut h: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut h);
    let hb = serde_json::to_vec(&h).unwrap();
    let mut out = (hb.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&hb);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(&p, out).unwrap();
}

fn load_err(dir: &Path) -> String {
    match Model::load(dir, ops()) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn unknown_architecture() {
    let d = llama("arch");
    let cfg = d.join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("LlamaForCausalLM", "MambaForCausalLM");
    std::fs::write(&cfg, text).unwrap();
    assert_eq!(
        load_err(&d),
        format!(
            "{}: unknown architecture `MambaForCausalLM` (supported: LlamaForCausalLM, Qwen3MoeForCausalLM, GptOssForCausalLM, PanguProMoEForCausalLM)",
            cfg.display()
        )
    );
}

#[test]
fn missing_tensor() {
    let d = llama("missing");
    edit_header(&d, |h| {
        h.remove("model.layers.1.mlp.up_proj.weight");
    });
    assert_eq!(load_err(&d), format!("{}: missing tensor `model.layers.1.mlp.up_proj.weight` (expected BF16|F16|F32 [64, 64])", d.display()));
}

#[test]
fn wrong_shape() {
    let d = llama("shape");
    edit_header(&d, |h| {
        h.get_mut("model.layers.0.self_attn.k_proj.weight").unwrap()["shape"] = serde_json::json!([64, 32]);
    });
    assert_eq!(
        load_err(&d),
        format!("tensor `model.layers.0.self_attn.k_proj.weight` in {} has shape [64, 32], expected [32, 64]", d.join("model.safetensors").display())
    );
}

#[test]
fn wrong_dtype() {
    let d = llama("dtype");
    edit_header(&d, |h| {
        h.get_mut("model.norm.weight").unwrap()["dtype"] = serde_json::json!("I16");
    });
    assert_eq!(
        load_err(&d),
        format!("tensor `model.norm.weight` in {} has dtype I16, expected BF16 or F16 or F32", d.join("model.safetensors").display())
    );
}

#[test]
fn truncated_file() {
    let d = llama("trunc");
    let p = d.join("model.safetensors");
    let mut bytes = std::fs::read(&p).unwrap();
    let len = bytes.len();
    bytes.truncate(len - 100);
    std::fs::write(&p, &bytes).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let data = len - 8 - n;
    let lm = 64 * 64 * 2;
    assert_eq!(
        load_err(&d),
        format!(
            "{} is truncated: tensor `lm_head.weight` needs bytes [{}, {data}) of the data section but only {} bytes follow the header",
            p.display(),
            data - lm,
            data - 100
        )
    );
    // cut inside the header
    std::fs::write(&p, &bytes[..20]).unwrap();
    assert_eq!(load_err(&d), format!("{} is truncated: the header needs {} bytes but the file has 20", p.display(), 8 + n));
}

fn logits(dir: &Path, tokens: &[u32]) -> Vec<f32> {
    let mut m = Model::load(dir, ops()).unwrap();
    let mut c = m.new_cache(64, 16);
    let s = c.new_seq();
    let l = m.forward(&mut c, &[Segment { seq: s, tokens: tokens.to_vec(), all_logits: true }]).unwrap();
    let v = l[0].to_f32_vec();
    assert!(v.iter().all(|x| x.is_finite()));
    v
}

#[test]
fn sharded_checkpoint_loads_like_one_file() {
    let one = llama("one");
    let d = tmp("sharded");
    let mut s = spec(Arch::Llama);
    s.shard_bytes = 40_000;
    s.write(&d).unwrap();
    assert!(d.join("model.safetensors.index.json").exists());
    assert!(!d.join("model.safetensors").exists());
    let toks = [1, 5, 9, 3, 60, 2];
    assert_eq!(logits(&d, &toks), logits(&one, &toks));
}

/// Decoding token by token through the paged cache gives the logits of one prefill.
#[test]
fn decode_steps_match_prefill_for_every_architecture() {
    for arch in [Arch::Llama, Arch::Qwen3Moe, Arch::GptOss, Arch::PanguMoge] {
        let d = tmp(&format!("arch-{arch:?}"));
        spec(arch).write(&d).unwrap();
        let toks: Vec<u32> = (0..11).map(|i| (i * 7 + 3) % 64).collect();
        let full = logits(&d, &toks);
        let mut m = Model::load(&d, ops()).unwrap();
        // block size 4: the 11 positions span three blocks
        let mut c = m.new_cache(64, 4);
        let s = c.new_seq();
        let mut steps = Vec::new();
        m.forward(&mut c, &[Segment { seq: s, tokens: toks[..3].to_vec(), all_logits: true }]).unwrap()[0].to_f32_vec().into_iter().for_each(|x| steps.push(x));
        for &t in &toks[3..] {
            steps.extend(m.forward(&mut c, &[Segment { seq: s, tokens: vec![t], all_logits: false }]).unwrap()[0].to_f32_vec());
        }
        let err = full.iter().zip(&steps).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(err < 1e-4, "{arch:?}: decode vs prefill max abs error {err}");
    }
}

/// The bf16 compute mode on every architecture: the prefill's logits stay within the bf16
/// tolerance (max |f32 logit| / 64, as `opc eval --activations bf16`) of the f32 mode's, differ
/// from them (the linears really take bf16 inputs), and single-token decode steps (GEMV path)
/// agree with the prefill (GEMM path) to that tolerance too. The MoE models route every token
/// to every expert (top-k = E, one expert per MoGE group): a router near a tie may otherwise
/// pick another expert in one mode, a discrete change no tolerance covers (the routing itself
/// is tested elsewhere); every expert GEMM still runs on bf16 inputs.
#[test]
fn bf16_activations_stay_close_to_f32_for_every_architecture() {
    use opc_runtime::model::eval::logits_tolerance;
    use opc_runtime::model::Activations;
    for arch in [Arch::Llama, Arch::Qwen3Moe, Arch::GptOss, Arch::PanguMoge] {
        let d = tmp(&format!("bf16-{arch:?}"));
        let mut sp = spec(arch);
        (sp.top_k, sp.groups) = (sp.experts, sp.experts);
        sp.write(&d).unwrap();
        let toks: Vec<u32> = (0..11).map(|i| (i * 5 + 1) % 64).collect();
        let f32_logits = logits(&d, &toks);
        let tol = logits_tolerance(Activations::Bf16, &f32_logits);
        let mut m = Model::load(&d, ops()).unwrap();
        m.activations = Activations::Bf16;
        let mut c = m.new_cache(64, 4);
        let s = c.new_seq();
        let prefill = m.forward(&mut c, &[Segment { seq: s, tokens: toks.clone(), all_logits: true }]).unwrap()[0].to_f32_vec();
        let err = f32_logits.iter().zip(&prefill).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(err <= tol, "{arch:?}: bf16 vs f32 max abs error {err} > {tol}");
        assert!(err > 0.0, "{arch:?}: bf16 mode gave the f32 logits bit for bit");
        let mut c = m.new_cache(64, 4);
        let s = c.new_seq();
        let mut steps = m.forward(&mut c, &[Segment { seq: s, tokens: toks[..2].to_vec(), all_logits: true }]).unwrap()[0].to_f32_vec();
        for &t in &toks[2..] {
            steps.extend(m.forward(&mut c, &[Segment { seq: s, tokens: vec![t], all_logits: false }]).unwrap()[0].to_f32_vec());
        }
        let err = prefill.iter().zip(&steps).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(err <= tol, "{arch:?}: bf16 decode vs prefill max abs error {err} > {tol}");
    }
}

#[test]
fn sharded_index_naming_a_missing_file() {
    let d = tmp("shard-missing");
    let mut s = spec(Arch::Llama);
    s.shard_bytes = 40_000;
    s.write(&d).unwrap();
    let idx = d.join("model.safetensors.index.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&idx).unwrap()).unwrap();
    v["weight_map"]["model.norm.weight"] = serde_json::json!("model-99999-of-99999.safetensors");
    std::fs::write(&idx, serde_json::to_string(&v).unwrap()).unwrap();
    assert_eq!(load_err(&d), format!("{} maps `model.norm.weight` to {}, which does not exist", idx.display(), d.join("model-99999-of-99999.safetensors").display()));
}

#[test]
fn sharded_index_naming_a_shard_without_the_tensor() {
    let d = tmp("shard-wrong");
    let mut s = spec(Arch::Llama);
    s.shard_bytes = 40_000;
    s.write(&d).unwrap();
    let idx = d.join("model.safetensors.index.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&idx).unwrap()).unwrap();
    let first = v["weight_map"]["model.embed_tokens.weight"].as_str().unwrap().to_string();
    let other = v["weight_map"]["lm_head.weight"].as_str().unwrap().to_string();
    assert_ne!(first, other);
    v["weight_map"]["lm_head.weight"] = serde_json::json!(first.clone());
    std::fs::write(&idx, serde_json::to_string(&v).unwrap()).unwrap();
    assert_eq!(
        load_err(&d),
        format!("{}: missing tensor `lm_head.weight` (expected in {} as model.safetensors.index.json says)", d.display(), d.join(&first).display())
    );
}

#[test]
fn mxfp4_blocks_with_the_wrong_dtype() {
    let d = tmp("mx-dtype");
    spec(Arch::GptOss).write(&d).unwrap();
    edit_header(&d, |h| {
        let t = h.get_mut("model.layers.1.mlp.experts.down_proj_blocks").unwrap();
        t["dtype"] = serde_json::json!("I8");
    });
    assert_eq!(
        load_err(&d),
        format!("tensor `model.layers.1.mlp.experts.down_proj_blocks` in {} has dtype I8, expected U8", d.join("model.safetensors").display())
    );
}

#[test]
fn header_that_is_not_json() {
    let d = llama("not-json");
    let p = d.join("model.safetensors");
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[8] = b'#';
    std::fs::write(&p, &bytes).unwrap();
    assert_eq!(load_err(&d), format!("{} is not a safetensors file: header is not a JSON object: expected value at line 1 column 1", p.display()));
}

/// Qwen3-MoE `norm_topk_prob`: false weights the chosen experts by their full-softmax
/// probabilities, true renormalizes them; with every expert chosen both are the same.
#[test]
fn qwen3_norm_topk_prob_is_honored() {
    let toks = [3u32, 17, 40, 2, 9];
    let with = |top_k: usize, norm: bool| {
        let d = tmp(&format!("qwen-norm-{top_k}-{norm}"));
        let mut s = spec(Arch::Qwen3Moe);
        s.top_k = top_k;
        s.write(&d).unwrap();
        let cfg = d.join("config.json");
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
        v["norm_topk_prob"] = serde_json::json!(norm);
        std::fs::write(&cfg, v.to_string()).unwrap();
        logits(&d, &toks)
    };
    let (a, b) = (with(2, true), with(2, false));
    let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(diff > 1e-3, "top-2 of 4: renormalized and raw weights give different logits (max diff {diff})");
    let (a, b) = (with(4, true), with(4, false));
    let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(diff < 1e-5, "all 4 experts chosen: the weights already sum to 1 (max diff {diff})");
}

/// The unnormalized routing weights are the full-softmax probabilities of the chosen experts.
#[test]
fn unnormalized_topk_weights_are_softmax_probabilities() {
    use opc_ir::{DType, Tensor};
    use opc_ops::moe::{moe_forward, Routing};
    let (t, h, e, i) = (3, 16, 6, 8);
    let f = |n: usize, s: usize| (0..n).map(|j| (((j + s) * 7919) % 23) as f32 / 11.0 - 1.0).collect::<Vec<_>>();
    let x = Tensor::from_f32(DType::F32, &[t, h], &f(t * h, 1));
    let gate = Tensor::from_f32(DType::F32, &[e, h], &f(e * h, 2));
    let w1 = Tensor::from_f32(DType::F32, &[e, i, h], &f(e * i * h, 3));
    let w3 = Tensor::from_f32(DType::F32, &[e, i, h], &f(e * i * h, 4));
    let w2 = Tensor::from_f32(DType::F32, &[e, h, i], &f(e * h * i, 5));
    let o = moe_forward(&ops(), &x, &gate, &w1, &w3, &w2, &Routing::TopKUnnormalized { k: 2 }).unwrap();
    let (xv, gv) = (x.to_f32_vec(), gate.to_f32_vec());
    let (ids, w) = (o.expert_ids.to_i64_vec(), o.weights.to_f32_vec());
    for r in 0..t {
        let logit: Vec<f64> = (0..e).map(|ex| (0..h).map(|c| xv[r * h + c] as f64 * gv[ex * h + c] as f64).sum()).collect();
        let m = logit.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = logit.iter().map(|l| (l - m).exp()).sum();
        let mut order: Vec<usize> = (0..e).collect();
        order.sort_by(|a, b| logit[*b].total_cmp(&logit[*a]));
        for j in 0..2 {
            assert_eq!(ids[r * 2 + j] as usize, order[j], "row {r} slot {j}");
            let p = (logit[order[j]] - m).exp() / z;
            assert!((w[r * 2 + j] as f64 - p).abs() < 1e-6, "row {r} slot {j}: weight {} vs softmax {p}", w[r * 2 + j]);
        }
        assert!(w[r * 2] + w[r * 2 + 1] < 1.0);
    }
}

/// The bytes one decode token reads: every layer weight (norms widened to f32 at load), the
/// final norm, the LM head and one embedding row; for MoE only the top-k share of the experts.
/// And the benchmark runs every phase on a small model.
#[test]
fn decode_weight_bytes_and_bench_smoke() {
    use opc_runtime::model::bench::{bench, BenchSpec};
    let d = llama("bytes");
    let mut m = Model::load(&d, ops()).unwrap();
    let layer = 2 * 64 * 4 + (64 * 64 + 2 * 32 * 64 + 64 * 64) * 2 + 3 * 64 * 64 * 2;
    assert_eq!(m.decode_weight_bytes(), (2 * layer + 64 * 4 + 64 * 64 * 2 + 64 * 2) as u64);
    let r = bench(&mut m, &BenchSpec { prompt_tokens: 8, decode_tokens: 2, batch: 2, batch_prompt_tokens: 4, seed: 1 }).unwrap();
    assert!(r.prefill_tok_s > 0.0 && r.decode_tok_s > 0.0 && r.batch_decode_tok_s.unwrap() > 0.0);
    assert!((r.bandwidth_limit(10.0) - 10e9 / r.decode_weight_bytes as f64).abs() < 1e-6);
    assert!(bench(&mut m, &BenchSpec { prompt_tokens: 0, decode_tokens: 2, batch: 1, batch_prompt_tokens: 4, seed: 1 }).is_err());

    let g = tmp("bytes-gptoss");
    spec(Arch::GptOss).write(&g).unwrap();
    let m = Model::load(&g, ops()).unwrap();
    // experts: 4 of them, top-2 → half of the gate_up and down codes, scales and biases
    let experts = 4 * (2 * 64 * 64 / 2 + 2 * 64 * 2 + 2 * 64 * 4) + 4 * (64 * 64 / 2 + 64 * 2 + 64 * 4);
    let attn = (64 * 64 + 2 * 32 * 64 + 64 * 64) * 2 + (64 + 2 * 32 + 64) * 4 + 4 * 4;
    let layer = 2 * 64 * 4 + attn + 4 * 64 * 2 + 4 * 4 + experts / 2;
    assert_eq!(m.decode_weight_bytes(), (2 * layer + 64 * 4 + 64 * 64 * 2 + 64 * 2) as u64);
}

/// Generation reports the time spent compiling kernels it met for the first time apart from its
/// prefill and decode times: the first run on a fresh model compiles, a second identical run
/// meets only compiled kernels.
#[test]
fn generation_times_exclude_kernel_compilation() {
    use opc_runtime::model::generate::{generate, Decoding, GenOptions};
    let d = llama("compile-time");
    let mut m = Model::load(&d, ops()).unwrap();
    let opts = GenOptions { max_tokens: 4, stop: vec![], decoding: Decoding::Greedy };
    let (first, s1) = generate(&mut m, &[1, 5, 9], &opts, |_| Ok(())).unwrap();
    assert!(s1.compile_secs > 0.0, "{s1:?}");
    let (again, s2) = generate(&mut m, &[1, 5, 9], &opts, |_| Ok(())).unwrap();
    assert_eq!(first, again);
    assert_eq!(s2.compile_secs, 0.0, "{s2:?}");
}
