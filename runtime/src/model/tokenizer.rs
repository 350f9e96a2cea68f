//! tokenizer.json through the `tokenizers` crate (no network: the file is read from the
//! checkpoint directory), with incremental decoding for streaming output.

use super::error::{ModelError, Result};
use std::path::{Path, PathBuf};

pub struct Tokenizer {
    path: PathBuf,
    inner: tokenizers::Tokenizer,
}

impl Tokenizer {
    /// Load `dir`/tokenizer.json.
    pub fn load(dir: &Path) -> Result<Tokenizer> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(ModelError::Tokenizer { path, detail: "not found (the model directory needs a tokenizer.json)".into() });
        }
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| ModelError::Tokenizer { path: path.clone(), detail: e.to_string() })?;
        Ok(Tokenizer { path, inner })
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let e = self.inner.encode(text, true).map_err(|e| ModelError::Tokenizer { path: self.path.clone(), detail: e.to_string() })?;
        Ok(e.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| ModelError::Tokenizer { path: self.path.clone(), detail: e.to_string() })
    }
}

/// Streams the text of a growing token list: each call returns the newly completed text
/// (a multi-byte character split across tokens is held back until it is whole).
pub struct Detokenizer {
    ids: Vec<u32>,
    emitted: usize,
}

impl Detokenizer {
    pub fn new() -> Detokenizer {
        Detokenizer { ids: Vec::new(), emitted: 0 }
    }

    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = tok.decode(&self.ids)?;
        if text.ends_with('\u{FFFD}') || text.len() < self.emitted || !text.is_char_boundary(self.emitted) {
            return Ok(String::new());
        }
        let new = text[self.emitted..].to_string();
        self.emitted = text.len();
        Ok(new)
    }
}

impl Default for Detokenizer {
    fn default() -> Self {
        Detokenizer::new()
    }
}
