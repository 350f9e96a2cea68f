//! Same-run baselines for `opc bench-model --baselines FILE`: the JSON files written by
//! `benches/model_baseline.py` (transformers) and `benches/llamacpp_baseline.sh` (llama.cpp),
//!
//! ```json
//! {"name": "llama.cpp 0c1e570", "threads": 2,
//!  "models": {"llama-0.85b": {"prefill_tok_s": 77.0, "decode_tok_s": 10.5,
//!                             "prompt_tokens": 512, "decode_tokens": 32, ...}}}
//! ```
//!
//! and the table comparing opc with them. Models are keyed by the name of their directory.

use super::BenchReport;
use std::fmt::Write;
use std::path::Path;

/// One baseline system's throughput on one model.
#[derive(Clone, Debug, PartialEq)]
pub struct Baseline {
    /// System and version, e.g. `transformers 5.23.0 (torch 2.15.0)`.
    pub name: String,
    pub threads: Option<u64>,
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
    /// Prompt length and decode steps the baseline was measured with, when the file says.
    pub prompt_tokens: Option<u64>,
    pub decode_tokens: Option<u64>,
}

/// The key of `model_dir` in a baselines file: its directory name.
pub fn model_key(model_dir: &Path) -> String {
    let dir = model_dir.canonicalize().unwrap_or_else(|_| model_dir.to_path_buf());
    dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// Read `path` and return its row for `model_dir`. Errors name the file and what is wrong.
pub fn read(path: &Path, model_dir: &Path) -> Result<Baseline, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read baselines file {}: {e}", path.display()))?;
    parse(&text, &model_key(model_dir)).map_err(|e| format!("baselines file {}: {e}", path.display()))
}

/// The row of model `key` in the baselines JSON `text`.
pub fn parse(text: &str, key: &str) -> Result<Baseline, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let name = v.get("name").and_then(|n| n.as_str()).ok_or("missing string field `name` (the baseline system)")?;
    let threads = match v.get("threads") {
        None => None,
        Some(t) => Some(t.as_u64().ok_or_else(|| format!("`threads` must be a whole number, got {t}"))?),
    };
    let models = v.get("models").and_then(|m| m.as_object()).ok_or("missing object field `models` (rows by model directory name)")?;
    let row = models.get(key).ok_or_else(|| {
        let have: Vec<&str> = models.keys().map(|k| k.as_str()).collect();
        format!("no row for model `{key}` (it has: {})", if have.is_empty() { "none".to_string() } else { have.join(", ") })
    })?;
    let rate = |f: &str| -> Result<f64, String> {
        match row.get(f).and_then(|x| x.as_f64()) {
            Some(x) if x.is_finite() && x > 0.0 => Ok(x),
            Some(x) => Err(format!("model `{key}`: `{f}` must be a positive number of tokens/s, got {x}")),
            None => Err(format!("model `{key}`: missing number `{f}`")),
        }
    };
    let count = |f: &str| -> Result<Option<u64>, String> {
        match row.get(f) {
            None => Ok(None),
            Some(x) => x.as_u64().map(Some).ok_or_else(|| format!("model `{key}`: `{f}` must be a whole number, got {x}")),
        }
    };
    Ok(Baseline {
        name: name.to_string(),
        threads,
        prefill_tok_s: rate("prefill_tok_s")?,
        decode_tok_s: rate("decode_tok_s")?,
        prompt_tokens: count("prompt_tokens")?,
        decode_tokens: count("decode_tokens")?,
    })
}

/// opc's prefill and batch-1 decode next to each baseline's, with opc's ratio to each and to the
/// faster baseline; notes a baseline measured with another prompt length or decode step count.
pub fn table(r: &BenchReport, prompt_tokens: usize, decode_tokens: usize, baselines: &[Baseline]) -> String {
    let label = |b: &Baseline| b.threads.map_or(b.name.clone(), |t| format!("{}, {t} threads", b.name));
    let w = baselines.iter().map(|b| label(b).len()).chain([3]).max().unwrap_or(3);
    let mut s = String::new();
    let _ = writeln!(s, "{:w$}  {:>24}  {:>24}", "", format!("prefill {prompt_tokens} tok/s"), "decode batch 1 tok/s");
    let _ = writeln!(s, "{:w$}  {:>24.1}  {:>24.2}", "opc", r.prefill_tok_s, r.decode_tok_s);
    for b in baselines {
        let p = format!("{:.1} (opc {:.2}x)", b.prefill_tok_s, r.prefill_tok_s / b.prefill_tok_s);
        let d = format!("{:.2} (opc {:.2}x)", b.decode_tok_s, r.decode_tok_s / b.decode_tok_s);
        let _ = writeln!(s, "{:w$}  {p:>24}  {d:>24}", label(b));
    }
    if baselines.len() > 1 {
        let best = |f: fn(&Baseline) -> f64| baselines.iter().map(f).fold(0.0, f64::max);
        let (bp, bd) = (best(|b| b.prefill_tok_s), best(|b| b.decode_tok_s));
        let p = format!("{:.2}x", r.prefill_tok_s / bp);
        let d = format!("{:.2}x", r.decode_tok_s / bd);
        let _ = writeln!(s, "{:w$}  {p:>24}  {d:>24}", "opc / faster");
    }
    for b in baselines {
        let differs = |theirs: Option<u64>, ours: usize| theirs.is_some_and(|t| t != ours as u64);
        if differs(b.prompt_tokens, prompt_tokens) || differs(b.decode_tokens, decode_tokens) {
            let _ = writeln!(
                s,
                "note: {} was measured with {} prompt tokens and {} decode steps (opc: {prompt_tokens} and {decode_tokens})",
                b.name,
                b.prompt_tokens.map_or("?".into(), |x| x.to_string()),
                b.decode_tokens.map_or("?".into(), |x| x.to_string())
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"{"name": "llama.cpp abc", "threads": 2, "models": {
        "llama-0.85b": {"prefill_tok_s": 77.0, "decode_tok_s": 10.5, "prompt_tokens": 512, "decode_tokens": 32, "weights": "bf16"},
        "gptoss-2.7b": {"prefill_tok_s": 39.0, "decode_tok_s": 21.0}}}"#;

    #[test]
    fn parses_the_row_of_the_model() {
        let b = parse(FILE, "llama-0.85b").unwrap();
        let want = Baseline { name: "llama.cpp abc".into(), threads: Some(2), prefill_tok_s: 77.0, decode_tok_s: 10.5, prompt_tokens: Some(512), decode_tokens: Some(32) };
        assert_eq!(b, want);
        let g = parse(FILE, "gptoss-2.7b").unwrap();
        assert_eq!((g.prefill_tok_s, g.decode_tok_s, g.prompt_tokens), (39.0, 21.0, None));
    }

    #[test]
    fn bad_files_give_precise_errors() {
        assert_eq!(parse(FILE, "qwen").unwrap_err(), "no row for model `qwen` (it has: gptoss-2.7b, llama-0.85b)");
        assert!(parse("{\"name\": ", "m").unwrap_err().starts_with("not JSON: "));
        assert_eq!(parse(r#"{"models": {}}"#, "m").unwrap_err(), "missing string field `name` (the baseline system)");
        assert_eq!(parse(r#"{"name": "x"}"#, "m").unwrap_err(), "missing object field `models` (rows by model directory name)");
        assert_eq!(parse(r#"{"name": "x", "threads": "two", "models": {}}"#, "m").unwrap_err(), "`threads` must be a whole number, got \"two\"");
        assert_eq!(parse(r#"{"name": "x", "models": {"m": {"prefill_tok_s": 1}}}"#, "m").unwrap_err(), "model `m`: missing number `decode_tok_s`");
        assert_eq!(
            parse(r#"{"name": "x", "models": {"m": {"prefill_tok_s": 0, "decode_tok_s": 1}}}"#, "m").unwrap_err(),
            "model `m`: `prefill_tok_s` must be a positive number of tokens/s, got 0"
        );
        assert_eq!(
            parse(r#"{"name": "x", "models": {"m": {"prefill_tok_s": 2, "decode_tok_s": 1, "prompt_tokens": 1.5}}}"#, "m").unwrap_err(),
            "model `m`: `prompt_tokens` must be a whole number, got 1.5"
        );
    }

    #[test]
    fn read_names_the_file() {
        let p = std::env::temp_dir().join(format!("opc-baselines-{}.json", std::process::id()));
        std::fs::write(&p, "[1, 2]").unwrap();
        let e = read(&p, Path::new("/models/llama-0.85b")).unwrap_err();
        assert_eq!(e, format!("baselines file {}: missing string field `name` (the baseline system)", p.display()));
        std::fs::remove_file(&p).unwrap();
        assert!(read(&p, Path::new("m")).unwrap_err().starts_with(&format!("cannot read baselines file {}: ", p.display())));
    }

    #[test]
    fn table_has_ratios_and_notes_other_settings() {
        let r = BenchReport { prefill_tok_s: 154.0, decode_tok_s: 21.0, ..Default::default() };
        let a = parse(FILE, "llama-0.85b").unwrap();
        let mut b = a.clone();
        b.name = "transformers 5".into();
        b.threads = None;
        b.prefill_tok_s = 308.0;
        b.prompt_tokens = Some(128);
        let t = table(&r, 512, 32, &[a, b]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[1].starts_with("opc ") && lines[1].contains("154.0") && lines[1].contains("21.00"), "{t}");
        assert!(lines[2].starts_with("llama.cpp abc, 2 threads") && lines[2].contains("77.0 (opc 2.00x)") && lines[2].contains("10.50 (opc 2.00x)"), "{t}");
        assert!(lines[3].contains("308.0 (opc 0.50x)"), "{t}");
        assert!(lines[4].starts_with("opc / faster") && lines[4].contains("0.50x") && lines[4].contains("2.00x"), "{t}");
        assert_eq!(lines[5], "note: transformers 5 was measured with 128 prompt tokens and 32 decode steps (opc: 512 and 32)");
        assert_eq!(lines.len(), 6, "{t}");
    }
}
