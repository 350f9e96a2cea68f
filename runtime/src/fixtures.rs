//! Reference fixtures: memory-mapped safetensors files whose `cases` metadata is a JSON list
//! describing each case. Tensors of a case are named `CASE.KEY`; files with a single unnamed
//! case (mxfp4) use bare `KEY` names, which [`FixtureFile::tensor`] falls back to.

use opc_ir::{numerics, DType, Tensor};
use safetensors::tensor::{Dtype, Metadata};
use safetensors::SafeTensors;
use std::fs::File;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("fixture file {0} not found")]
    NotFound(PathBuf),
    #[error("cannot read {path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path} is not a safetensors file (or is truncated): {detail}")]
    NotSafetensors { path: PathBuf, detail: String },
    #[error("{path} has no `cases` metadata (expected a JSON list of case descriptions)")]
    MissingCases { path: PathBuf },
    #[error("{path}: `cases` metadata is not a JSON list: {detail}")]
    BadCases { path: PathBuf, detail: String },
    #[error("{path}: case `{case}` has no tensor `{key}` (looked for `{case}.{key}` and `{key}`); tensors of this case: {available}")]
    MissingTensor { path: PathBuf, case: String, key: String, available: String },
    #[error("{path}: tensor `{name}` has dtype {dtype}, which opc does not load (supported: F32, F16, BF16, I32, I8, U8)")]
    UnsupportedDtype { path: PathBuf, name: String, dtype: String },
    #[error("{path}: tensor `{name}` is {got}, expected {want}: {detail}")]
    WrongDtype { path: PathBuf, name: String, got: DType, want: DType, detail: String },
    #[error("{path}: case `{case}`: {msg}")]
    BadCase { path: PathBuf, case: String, msg: String },
}

pub type Result<T> = std::result::Result<T, RuntimeError>;

/// One safetensors fixture file, memory-mapped.
pub struct FixtureFile {
    path: PathBuf,
    mmap: memmap2::Mmap,
    header_len: usize,
    metadata: Metadata,
}

impl std::fmt::Debug for FixtureFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FixtureFile").field("path", &self.path).finish_non_exhaustive()
    }
}

/// Map a safetensors dtype to an opc dtype (None: not loadable).
pub fn map_dtype(d: Dtype) -> Option<DType> {
    Some(match d {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::I32 => DType::I32,
        Dtype::I8 => DType::I8,
        Dtype::U8 => DType::U8,
        _ => return None,
    })
}

impl FixtureFile {
    pub fn open(path: impl AsRef<Path>) -> Result<FixtureFile> {
        let path = path.as_ref().to_path_buf();
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(RuntimeError::NotFound(path)),
            Err(err) => return Err(RuntimeError::Io { path, err }),
        };
        if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
            return Err(RuntimeError::NotSafetensors { path, detail: "it is a directory".into() });
        }
        // SAFETY: fixture files are read-only inputs; nobody truncates them while mapped.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|err| RuntimeError::Io { path: path.clone(), err })?;
        let (header_len, metadata) = SafeTensors::read_metadata(&mmap).map_err(|e| RuntimeError::NotSafetensors {
            path: path.clone(),
            detail: format!("{e:?} ({} bytes)", mmap.len()),
        })?;
        Ok(FixtureFile { path, mmap, header_len, metadata })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The free-form metadata entry `key` of the header, if any.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.metadata().as_ref().and_then(|m| m.get(key)).map(|s| s.as_str())
    }

    /// The `cases` metadata: one JSON object per case.
    pub fn cases(&self) -> Result<Vec<serde_json::Value>> {
        let raw = self.metadata("cases").ok_or_else(|| RuntimeError::MissingCases { path: self.path.clone() })?;
        let v: serde_json::Value = serde_json::from_str(raw)
            .map_err(|e| RuntimeError::BadCases { path: self.path.clone(), detail: e.to_string() })?;
        match v {
            serde_json::Value::Array(a) => Ok(a),
            other => Err(RuntimeError::BadCases {
                path: self.path.clone(),
                detail: format!("got {}", json_kind(&other)),
            }),
        }
    }

    /// All tensor names in the file, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.metadata.tensors().into_keys().collect();
        v.sort();
        v
    }

    fn resolve(&self, case: &str, key: &str) -> Option<String> {
        let full = format!("{case}.{key}");
        if self.metadata.info(&full).is_some() {
            Some(full)
        } else if self.metadata.info(key).is_some() {
            Some(key.to_string())
        } else {
            None
        }
    }

    /// Whether case `case` has tensor `key` (as `case.key` or bare `key`).
    pub fn has(&self, case: &str, key: &str) -> bool {
        self.resolve(case, key).is_some()
    }

    /// Keys available to `case`: its `case.*` tensors, or the bare names if it has none.
    pub fn keys(&self, case: &str) -> Vec<String> {
        let prefix = format!("{case}.");
        let names = self.names();
        let own: Vec<String> = names.iter().filter_map(|n| n.strip_prefix(&prefix).map(str::to_string)).collect();
        if !own.is_empty() {
            return own;
        }
        names.into_iter().filter(|n| !n.contains('.')).collect()
    }

    /// Tensor `case.key` (or bare `key`), in its stored dtype.
    pub fn tensor(&self, case: &str, key: &str) -> Result<Tensor> {
        let name = self.resolve(case, key).ok_or_else(|| {
            let keys = self.keys(case);
            RuntimeError::MissingTensor {
                path: self.path.clone(),
                case: case.to_string(),
                key: key.to_string(),
                available: if keys.is_empty() { "(none)".to_string() } else { keys.join(", ") },
            }
        })?;
        self.tensor_by_name(&name)
    }

    /// Tensor by its full name.
    pub fn tensor_by_name(&self, name: &str) -> Result<Tensor> {
        let info = self.metadata.info(name).ok_or_else(|| RuntimeError::MissingTensor {
            path: self.path.clone(),
            case: String::new(),
            key: name.to_string(),
            available: self.names().join(", "),
        })?;
        let dtype = map_dtype(info.dtype).ok_or_else(|| RuntimeError::UnsupportedDtype {
            path: self.path.clone(),
            name: name.to_string(),
            dtype: format!("{:?}", info.dtype),
        })?;
        let base = 8 + self.header_len;
        let (s, e) = info.data_offsets;
        let bytes = self.mmap.get(base + s..base + e).ok_or_else(|| RuntimeError::NotSafetensors {
            path: self.path.clone(),
            detail: format!("tensor `{name}` data [{s}, {e}) lies outside the file"),
        })?;
        Tensor::from_bytes(dtype, &info.shape, bytes.to_vec()).map_err(|detail| RuntimeError::NotSafetensors {
            path: self.path.clone(),
            detail: format!("tensor `{name}`: {detail}"),
        })
    }

    /// Tensor `case.key` converted to `want` (exact: ints must fit, floats going to an int type
    /// must be integral; float→float rounds to nearest even).
    pub fn tensor_as(&self, case: &str, key: &str, want: DType) -> Result<Tensor> {
        let t = self.tensor(case, key)?;
        let name = self.resolve(case, key).unwrap_or_else(|| key.to_string());
        convert(&t, want).map_err(|detail| RuntimeError::WrongDtype {
            path: self.path.clone(),
            name,
            got: t.dtype,
            want,
            detail,
        })
    }
}

/// Convert a host tensor to another dtype without silently changing values that the target
/// can represent: int targets require integral, in-range values.
pub fn convert(t: &Tensor, want: DType) -> std::result::Result<Tensor, String> {
    if t.dtype == want {
        return Ok(t.clone());
    }
    let mut out = Tensor::zeros(want, &t.shape);
    let int_target = want.is_int() || want == DType::Bool;
    for i in 0..t.numel() {
        let v = t.get_f64(i);
        let bits = if int_target {
            let (lo, hi) = want.int_range().expect("int range");
            if v.fract() != 0.0 || !v.is_finite() || v < lo as f64 || v > hi as f64 {
                return Err(format!("element {i} = {v} is not representable as {want}"));
            }
            numerics::encode_int(want, v as i64)
        } else {
            numerics::encode_f64(want, v)
        };
        out.set_raw(i, bits);
    }
    Ok(out)
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a bool",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn write_st(name: &str, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)], meta: Option<HashMap<String, String>>) -> PathBuf {
        use safetensors::tensor::TensorView;
        let views: Vec<(String, TensorView)> = tensors
            .iter()
            .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        let bytes = safetensors::serialize(views, &meta).unwrap();
        let dir = std::env::temp_dir().join(format!("opc-runtime-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn reads_cases_and_tensors() {
        let meta = HashMap::from([("cases".to_string(), r#"[{"name":"a","n":2}]"#.to_string())]);
        let p = write_st(
            "ok.safetensors",
            &[
                ("a.x", Dtype::F32, vec![2], f32_bytes(&[1.5, -2.0])),
                ("a.i", Dtype::I8, vec![2], vec![0xFF, 3]),
                ("bare", Dtype::U8, vec![1], vec![7]),
                ("a.d", Dtype::F64, vec![1], vec![0; 8]),
            ],
            Some(meta),
        );
        let f = FixtureFile::open(&p).unwrap();
        let cases = f.cases().unwrap();
        assert_eq!(cases.len(), 1);
        assert_eq!(cases[0]["n"], 2);
        let x = f.tensor("a", "x").unwrap();
        assert_eq!(x.dtype, DType::F32);
        assert_eq!(x.to_f32_vec(), vec![1.5, -2.0]);
        assert!(f.has("a", "bare") && f.has("zzz", "bare") && !f.has("a", "nope"));
        assert_eq!(f.tensor("a", "bare").unwrap().data, vec![7]);
        let i = f.tensor_as("a", "i", DType::I32).unwrap();
        assert_eq!(i.to_i64_vec(), vec![-1, 3]);
        let i4 = f.tensor_as("a", "i", DType::I4).unwrap();
        assert_eq!(i4.to_i64_vec(), vec![-1, 3]);
        let e = f.tensor_as("a", "x", DType::I32).unwrap_err().to_string();
        assert!(e.contains("`a.x`") && e.contains("1.5"), "{e}");
        let e = f.tensor("a", "nope").unwrap_err().to_string();
        assert!(e.contains("case `a`") && e.contains("`nope`") && e.contains("d, i, x"), "{e}");
        let e = f.tensor("a", "d").unwrap_err().to_string();
        assert!(e.contains("`a.d`") && e.contains("F64"), "{e}");
    }

    #[test]
    fn errors_name_the_file() {
        let e = FixtureFile::open("/nonexistent/x.safetensors").unwrap_err().to_string();
        assert_eq!(e, "fixture file /nonexistent/x.safetensors not found");

        let p = write_st("nometa.safetensors", &[("x", Dtype::U8, vec![1], vec![1])], None);
        let e = FixtureFile::open(&p).unwrap().cases().unwrap_err().to_string();
        assert!(e.contains("nometa.safetensors") && e.contains("`cases`"), "{e}");

        let p = write_st("trunc.safetensors", &[("x", Dtype::U8, vec![4], vec![1, 2, 3, 4])], None);
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.truncate(bytes.len() - 2);
        std::fs::write(&p, bytes).unwrap();
        let e = FixtureFile::open(&p).unwrap_err().to_string();
        assert!(e.contains("trunc.safetensors") && e.contains("not a safetensors file"), "{e}");

        let p = p.with_file_name("garbage.safetensors");
        std::fs::write(&p, b"hello").unwrap();
        let e = FixtureFile::open(&p).unwrap_err().to_string();
        assert!(e.contains("garbage.safetensors") && e.contains("HeaderTooSmall"), "{e}");
    }

    #[test]
    fn shared_fixtures_load() {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/ops"));
        if !dir.exists() {
            eprintln!("skipping: {} not found", dir.display());
            return;
        }
        let f = FixtureFile::open(dir.join("mxfp4.safetensors")).unwrap();
        let cases = f.cases().unwrap();
        let name = cases[0]["name"].as_str().unwrap();
        let codes = f.tensor(name, "codes").unwrap();
        let x = f.tensor(name, "x").unwrap();
        assert_eq!(codes.dtype, DType::U8);
        assert_eq!(codes.shape, vec![x.shape[0], x.shape[1] / 2]);
    }
}
