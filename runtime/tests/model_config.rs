//! config.json parsing: each malformed or unsupported configuration gets one precise error
//! naming the file and the field, and the MoE routing fields are read as transformers reads
//! them (Qwen3-MoE `norm_topk_prob` defaults to false; MoGE groups and router scale).

use opc_runtime::model::config::ModelConfig;
use std::path::Path;

const P: &str = "/m/config.json";

fn err(text: &str) -> String {
    ModelConfig::parse(Path::new(P), text).unwrap_err().to_string()
}

fn with(base: serde_json::Value, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> String {
    let mut v = base;
    edit(v.as_object_mut().unwrap());
    v.to_string()
}

fn llama() -> serde_json::Value {
    serde_json::json!({"architectures": ["LlamaForCausalLM"], "vocab_size": 64, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2})
}

fn qwen() -> serde_json::Value {
    serde_json::json!({"architectures": ["Qwen3MoeForCausalLM"], "vocab_size": 64, "hidden_size": 64, "moe_intermediate_size": 32,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "num_experts": 8, "num_experts_per_tok": 2})
}

fn moge() -> serde_json::Value {
    serde_json::json!({"architectures": ["PanguProMoEForCausalLM"], "vocab_size": 64, "hidden_size": 64, "moe_intermediate_size": 32,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "num_experts": 8, "num_experts_per_tok": 4, "num_expert_groups": 4})
}

#[test]
fn precise_config_errors() {
    assert_eq!(err("{"), format!("{P}: invalid config: EOF while parsing an object at line 1 column 1"));
    assert_eq!(err(&with(llama(), |m| { m.remove("hidden_size"); })), format!("{P}: invalid config: missing field `hidden_size`"));
    assert_eq!(
        err(&with(llama(), |m| { m.insert("hidden_size".into(), "big".into()); })),
        format!("{P}: invalid config: invalid type: string \"big\", expected usize at line 1 column 57")
    );
    assert_eq!(err(&with(llama(), |m| { m.remove("architectures"); })), format!("{P}: invalid config: missing `architectures` (e.g. [\"LlamaForCausalLM\"])"));
    assert_eq!(
        err(&with(llama(), |m| { m.insert("num_key_value_heads".into(), 3.into()); })),
        format!("{P}: invalid config: num_attention_heads = 4 must be a positive multiple of num_key_value_heads = 3")
    );
    assert_eq!(err(&with(llama(), |m| { m.insert("head_dim".into(), 7.into()); })), format!("{P}: invalid config: head_dim = 7 must be even and in 2..=512"));
    assert_eq!(err(&with(llama(), |m| { m.remove("intermediate_size"); })), format!("{P}: invalid config: missing field `intermediate_size`"));
    assert_eq!(
        err(&with(llama(), |m| { m.insert("rope_scaling".into(), serde_json::json!({"rope_type": "longrope"})); })),
        format!("{P}: invalid config: rope_type `longrope` is not supported (default, yarn)")
    );
    assert_eq!(err(&with(qwen(), |m| { m.remove("num_experts"); })), format!("{P}: invalid config: missing field `num_experts`"));
    assert_eq!(err(&with(qwen(), |m| { m.insert("num_experts_per_tok".into(), 9.into()); })), format!("{P}: invalid config: num_experts_per_tok = 9 must be in 1..=8"));
    assert_eq!(
        err(&with(qwen(), |m| { m.insert("decoder_sparse_step".into(), 2.into()); })),
        format!("{P}: invalid config: Qwen3-MoE with dense layers (decoder_sparse_step != 1 or mlp_only_layers) is not supported")
    );
    assert_eq!(
        err(&with(moge(), |m| { m.insert("num_expert_groups".into(), 3.into()); })),
        format!("{P}: invalid config: MoGE needs num_expert_groups = num_experts_per_tok dividing num_experts; got groups 3, top-k 4, experts 8")
    );
    let gptoss = serde_json::json!({"architectures": ["GptOssForCausalLM"], "vocab_size": 64, "hidden_size": 64, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "num_local_experts": 4, "num_experts_per_tok": 2,
        "layer_types": ["sliding_attention", "chunked_attention"]});
    assert_eq!(err(&gptoss.to_string()), format!("{P}: invalid config: layer_types[1] = `chunked_attention` (expected sliding_attention or full_attention)"));
    assert_eq!(
        err(&with(gptoss, |m| { m.insert("layer_types".into(), serde_json::json!(["full_attention"])); })),
        format!("{P}: invalid config: layer_types has 1 entries, expected num_hidden_layers = 2")
    );
}

#[test]
fn moe_routing_fields() {
    let parse = |t: String| ModelConfig::parse(Path::new(P), &t).unwrap().moe.unwrap();
    // transformers' Qwen3MoeConfig: norm_topk_prob defaults to false
    assert!(!parse(qwen().to_string()).norm_topk_prob);
    assert!(parse(with(qwen(), |m| { m.insert("norm_topk_prob".into(), true.into()); })).norm_topk_prob);
    let m = parse(moge().to_string());
    assert_eq!((m.groups, m.top_k, m.experts), (Some(4), 4, 8));
    // groups default to the experts per token
    let m = parse(with(moge(), |m| { m.remove("num_expert_groups"); }));
    assert_eq!(m.groups, Some(4));
}

/// RoPE's inverse frequencies are held in the declared parameter dtype (`dtype`, else the older
/// `torch_dtype`), as a transformers model converted to it holds its `inv_freq` buffer.
#[test]
fn rope_frequencies_held_in_the_parameter_dtype() {
    use opc_ir::DType;
    let freq = |t: String| ModelConfig::parse(Path::new(P), &t).unwrap().rope.freq_dtype;
    assert_eq!(freq(llama().to_string()), DType::F32);
    assert_eq!(freq(with(llama(), |m| { m.insert("dtype".into(), "bfloat16".into()); })), DType::BF16);
    assert_eq!(freq(with(llama(), |m| { m.insert("torch_dtype".into(), "float16".into()); })), DType::F16);
    assert_eq!(freq(with(llama(), |m| { m.insert("dtype".into(), "float32".into()); })), DType::F32);
    // gpt-oss fixtures write `"dtype": null`
    assert_eq!(freq(with(llama(), |m| { m.insert("dtype".into(), serde_json::Value::Null); })), DType::F32);
    assert_eq!(
        freq(with(llama(), |m| {
            m.insert("dtype".into(), "bfloat16".into());
            m.insert("torch_dtype".into(), "float32".into());
        })),
        DType::BF16
    );
}
