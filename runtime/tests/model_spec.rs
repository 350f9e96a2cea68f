//! Speculative decoding on the shared fixtures spec-target / spec-draft: τ = 0 reproduces the
//! target's greedy tokens exactly, τ > 0 accepts more drafts per step; temperature > 0 uses
//! lossless speculative sampling (seeded, reproducible). Also batched greedy decoding equals
//! per-sequence decoding, and seeded sampling is reproducible.

use opc_runtime::model::generate::{generate, generate_batch, generate_speculative, Decoding, GenOptions, Verifier};
use opc_runtime::model::{Model, Tokenizer};
use std::path::PathBuf;

/// `shared/fixtures/models` beside the checkout (or beside the directory holding a worktree).
fn fixtures() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let found = ["../../shared/fixtures/models", "../../../shared/fixtures/models"].iter().map(|r| root.join(r)).find(|d| d.join("spec-target").exists());
    if found.is_none() {
        eprintln!("skipping: shared/fixtures/models not found near {}", root.display());
    }
    found
}

fn load(d: &std::path::Path) -> Model {
    Model::load(d, opc_ops::Ops::new(opc_codegen::target_by_name("cpu").unwrap())).unwrap()
}

const PROMPT: &str = "Permission is hereby granted, free of charge, to any person";

#[test]
fn kl_judge_speculation() {
    let Some(dir) = fixtures() else { return };
    let mut target = load(&dir.join("spec-target"));
    let mut draft = load(&dir.join("spec-draft"));
    let tok = Tokenizer::load(&dir.join("spec-target")).unwrap();
    let prompt = tok.encode(PROMPT).unwrap();
    let opts = GenOptions { max_tokens: 24, stop: Vec::new(), decoding: Decoding::Greedy };
    let (greedy, _) = generate(&mut target, &prompt, &opts, |_| Ok(())).unwrap();
    let (draft_greedy, _) = generate(&mut draft, &prompt, &opts, |_| Ok(())).unwrap();
    assert_ne!(greedy, draft_greedy, "the draft must disagree somewhere for this test to mean anything");

    let mut streamed = Vec::new();
    let (exact, s0) = generate_speculative(&mut target, &mut draft, &prompt, &opts, 4, Verifier::KlJudge { tau: 0.0 }, |t| {
        streamed.push(t);
        Ok(())
    })
    .unwrap();
    assert_eq!(exact, greedy, "τ = 0 must reproduce the target's greedy tokens");
    assert_eq!(streamed, exact);
    let a0 = s0.spec.unwrap();
    assert!(a0.accepted.iter().any(|&a| a < 4), "some drafts are rejected at τ = 0: {:?}", a0.accepted);

    let (loose, s1) = generate_speculative(&mut target, &mut draft, &prompt, &opts, 4, Verifier::KlJudge { tau: 2.0 }, |_| Ok(())).unwrap();
    assert_eq!(loose.len(), 24);
    let a1 = s1.spec.unwrap();
    assert!(a1.tokens_per_step() > a0.tokens_per_step(), "τ = 2 accepts more: {:?} vs {:?}", a1.accepted, a0.accepted);
}

#[test]
fn batched_decode_equals_single_and_sampling_is_seeded() {
    let Some(dir) = fixtures() else { return };
    let mut m = load(&dir.join("llama-tiny"));
    let prompts: Vec<Vec<u32>> = vec![vec![52, 444, 439, 221], vec![7, 8, 9], vec![300, 301, 302, 303, 304, 305, 306]];
    let (batch, _) = generate_batch(&mut m, &prompts, 10).unwrap();
    let opts = GenOptions { max_tokens: 10, stop: Vec::new(), decoding: Decoding::Greedy };
    for (p, b) in prompts.iter().zip(&batch) {
        assert_eq!(&generate(&mut m, p, &opts, |_| Ok(())).unwrap().0, b);
    }
    let params = opc_ops::model::SampleParams { temperature: 1.5, top_k: Some(40), top_p: 0.9 };
    let sample = |m: &mut Model, seed| {
        let o = GenOptions { max_tokens: 12, stop: Vec::new(), decoding: Decoding::Sample { params, seed } };
        generate(m, &prompts[0], &o, |_| Ok(())).unwrap().0
    };
    let (a, b, c) = (sample(&mut m, 1), sample(&mut m, 1), sample(&mut m, 2));
    assert_eq!(a, b);
    assert_ne!(a, c);
    // stop tokens end generation after they are emitted
    let stop_at = a[3];
    let o = GenOptions { max_tokens: 12, stop: vec![stop_at], decoding: Decoding::Sample { params, seed: 1 } };
    let first = a.iter().position(|&t| t == stop_at).unwrap();
    assert_eq!(generate(&mut m, &prompts[0], &o, |_| Ok(())).unwrap().0, a[..=first].to_vec());
}

#[test]
fn sampled_speculation_is_lossless_sampling_and_seeded() {
    let Some(dir) = fixtures() else { return };
    let mut target = load(&dir.join("spec-target"));
    let mut draft = load(&dir.join("spec-draft"));
    let tok = Tokenizer::load(&dir.join("spec-target")).unwrap();
    let prompt = tok.encode(PROMPT).unwrap();
    let params = opc_ops::model::SampleParams { temperature: 0.8, top_k: None, top_p: 1.0 };
    let opts = |seed| GenOptions { max_tokens: 16, stop: Vec::new(), decoding: Decoding::Sample { params, seed } };
    // temperature > 0 without τ selects lossless sampling; τ or top-k with it are refused
    let v = Verifier::for_decoding(&opts(3).decoding, None).unwrap();
    assert_eq!(v, Verifier::Lossless { temperature: 0.8, seed: 3 });
    assert!(Verifier::for_decoding(&opts(3).decoding, Some(0.5)).unwrap_err().to_string().contains("--kl-tau 0.5 applies to greedy"));
    let topk = Decoding::Sample { params: opc_ops::model::SampleParams { top_k: Some(5), ..params }, seed: 3 };
    assert!(Verifier::for_decoding(&topk, None).unwrap_err().to_string().contains("--top-k and --top-p are not supported"));
    assert_eq!(Verifier::for_decoding(&Decoding::Greedy, None).unwrap(), Verifier::KlJudge { tau: 0.0 });

    let run = |t: &mut Model, d: &mut Model, seed| {
        let v = Verifier::for_decoding(&opts(seed).decoding, None).unwrap();
        generate_speculative(t, d, &prompt, &opts(seed), 4, v, |_| Ok(())).unwrap()
    };
    let (a, sa) = run(&mut target, &mut draft, 11);
    let (b, _) = run(&mut target, &mut draft, 11);
    let (c, _) = run(&mut target, &mut draft, 12);
    assert_eq!(a.len(), 16);
    assert_eq!(a, b, "seeded");
    assert_ne!(a, c, "another seed samples another continuation");
    let st = sa.spec.unwrap();
    assert!(st.accepted.iter().all(|&n| n <= 4));
    assert!(st.accepted.iter().any(|&n| n > 0), "a related draft gets some tokens accepted: {:?}", st.accepted);
}
