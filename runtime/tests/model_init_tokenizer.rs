//! The tokenizer `opc model init` writes: a byte-level BPE tokenizer.json that the `tokenizers`
//! crate loads, that round-trips any text, whose merges fit the vocabulary, plus a
//! tokenizer_config.json naming `<|endoftext|>` (id 0, config.json's BOS/EOS).

use opc_runtime::model::init::{InitSpec, TOKENIZER_EOS, TOKENIZER_TOKENS};
use opc_runtime::model::{Arch, Tokenizer};
use std::path::PathBuf;

fn spec(vocab: usize) -> InitSpec {
    InitSpec {
        arch: Arch::Llama,
        vocab,
        hidden: 64,
        intermediate: 64,
        layers: 1,
        heads: 4,
        kv_heads: 2,
        head_dim: 16,
        experts: 0,
        top_k: 0,
        groups: 0,
        shared_intermediate: 0,
        sliding_window: 0,
        seed: 0,
        shard_bytes: 0,
    }
}

fn written(vocab: usize) -> (PathBuf, Tokenizer) {
    let d = std::env::temp_dir().join(format!("opc-init-tok-{}-{vocab}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    spec(vocab).write_tokenizer(&d).unwrap();
    let t = Tokenizer::load(&d).unwrap();
    (d, t)
}

#[test]
fn round_trips_text_and_merges_within_the_vocabulary() {
    let (d, t) = written(32000);
    let text = "Hello wörld,\n\ttabs & emoji 🚀 — 3.14";
    let ids = t.encode(text).unwrap();
    assert_eq!(t.decode(&ids).unwrap(), text);
    // all 728 merges fit: " hello" is Ġh + el + lo
    assert_eq!(t.encode(" hello").unwrap().len(), 3);
    assert!(ids.iter().all(|&i| (i as usize) < TOKENIZER_TOKENS + 728));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("tokenizer.json")).unwrap()).unwrap();
    assert_eq!(v["model"]["vocab"].as_object().unwrap().len(), TOKENIZER_TOKENS + 728);
    assert_eq!(v["model"]["vocab"]["<|endoftext|>"], TOKENIZER_EOS);
    let c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!((c["eos_token"].as_str(), c["bos_token"].as_str()), (Some("<|endoftext|>"), Some("<|endoftext|>")));
    std::fs::remove_dir_all(&d).unwrap();

    // a 300-token vocabulary keeps the first 43 merges: space + a..z, space + A..Q
    let (d, t) = written(300);
    let ids = t.encode(" a Q R").unwrap();
    assert!(ids.iter().all(|&i| i < 300), "{ids:?}");
    assert_eq!(ids.len(), 4, "Ġa, ĠQ, Ġ, R: {ids:?}");
    assert_eq!(t.decode(&ids).unwrap(), " a Q R");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn too_small_a_vocabulary_is_refused() {
    let d = std::env::temp_dir();
    let e = spec(200).write_tokenizer(&d).unwrap_err().to_string();
    assert_eq!(e, "a byte-level tokenizer needs --vocab of at least 257 (got 200)");
}
