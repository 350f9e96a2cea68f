//! Memory-mapped safetensors checkpoints: one `model.safetensors`, or shards listed by
//! `model.safetensors.index.json` (`weight_map`: tensor name → shard file). Headers are parsed
//! and validated up front (offsets inside the file, byte counts matching shape × dtype), so a
//! truncated or corrupt file is reported when the model is opened, naming the file and tensor.
//! Tensor bytes stay in the mapping until a layer asks for them with an expected shape and
//! dtype.

use super::error::{ModelError, Result};
use opc_ir::{DType, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
struct Entry {
    shard: usize,
    dtype: String,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

struct Shard {
    path: PathBuf,
    mmap: memmap2::Mmap,
    data_start: usize,
}

/// An opened checkpoint directory.
pub struct Checkpoint {
    dir: PathBuf,
    shards: Vec<Shard>,
    entries: HashMap<String, Entry>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint").field("dir", &self.dir).field("tensors", &self.entries.len()).finish_non_exhaustive()
    }
}

/// Bytes per element of a safetensors dtype name (None: a dtype opc does not load).
fn dtype_bytes(d: &str) -> Option<usize> {
    Some(match d {
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "U8" | "I8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => 1,
        "F64" | "I64" | "U64" => 8,
        _ => return None,
    })
}

/// The opc dtype of a safetensors dtype name, where opc computes with it.
pub fn opc_dtype(d: &str) -> Option<DType> {
    Some(match d {
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "I32" => DType::I32,
        "I8" => DType::I8,
        "U8" => DType::U8,
        _ => return None,
    })
}

fn st_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "F32",
        DType::F16 => "F16",
        DType::BF16 => "BF16",
        DType::I32 => "I32",
        DType::I8 => "I8",
        DType::U8 => "U8",
        _ => "?",
    }
}

fn io(path: &Path, err: std::io::Error) -> ModelError {
    ModelError::Io { path: path.to_path_buf(), err }
}

impl Checkpoint {
    /// Open `dir`/model.safetensors.index.json (sharded) or `dir`/model.safetensors.
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        let index = dir.join("model.safetensors.index.json");
        let mut ck = Checkpoint { dir: dir.to_path_buf(), shards: Vec::new(), entries: HashMap::new() };
        if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|e| io(&index, e))?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::Config { path: index.clone(), detail: e.to_string() })?;
            let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| ModelError::Config {
                path: index.clone(),
                detail: "missing `weight_map` (tensor name -> shard file)".into(),
            })?;
            let mut files: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (name, file) in map {
                let f = file.as_str().ok_or_else(|| ModelError::Config { path: index.clone(), detail: format!("weight_map[`{name}`] is not a file name") })?;
                files.entry(f.to_string()).or_default().push(name.clone());
            }
            for (file, names) in files {
                let shard = dir.join(&file);
                if !shard.exists() {
                    return Err(ModelError::MissingShard { index: index.clone(), tensor: names[0].clone(), file: shard });
                }
                let si = ck.add_shard(&shard)?;
                for n in names {
                    if !ck.entries.get(&n).is_some_and(|e| e.shard == si) {
                        let path = ck.shards[si].path.clone();
                        return Err(ModelError::MissingTensor {
                            dir: dir.to_path_buf(),
                            name: n,
                            expected: format!("in {} as model.safetensors.index.json says", path.display()),
                        });
                    }
                }
            }
        } else {
            ck.add_shard(&dir.join("model.safetensors"))?;
        }
        Ok(ck)
    }

    fn add_shard(&mut self, path: &Path) -> Result<usize> {
        let file = File::open(path).map_err(|e| io(path, e))?;
        // SAFETY: checkpoints are read-only inputs; nobody truncates them while they are mapped.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io(path, e))?;
        let bad = |detail: String| ModelError::NotSafetensors { path: path.to_path_buf(), detail };
        let trunc = |detail: String| ModelError::Truncated { path: path.to_path_buf(), detail };
        if mmap.len() < 8 {
            return Err(trunc(format!("{} bytes, shorter than the 8-byte header length", mmap.len())));
        }
        let n = u64::from_le_bytes(mmap[..8].try_into().expect("8 bytes")) as usize;
        if n > 100 << 20 {
            return Err(bad(format!("header length {n} is implausibly large")));
        }
        if 8 + n > mmap.len() {
            return Err(trunc(format!("the header needs {} bytes but the file has {}", 8 + n, mmap.len())));
        }
        let header: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&mmap[8..8 + n]).map_err(|e| bad(format!("header is not a JSON object: {e}")))?;
        let data_start = 8 + n;
        let data_len = mmap.len() - data_start;
        let si = self.shards.len();
        for (name, v) in &header {
            if name == "__metadata__" {
                continue;
            }
            let dtype = v.get("dtype").and_then(|d| d.as_str()).ok_or_else(|| bad(format!("tensor `{name}` has no dtype")))?.to_string();
            let shape: Vec<usize> = v
                .get("shape")
                .and_then(|s| s.as_array())
                .and_then(|a| a.iter().map(|x| x.as_u64().map(|x| x as usize)).collect())
                .ok_or_else(|| bad(format!("tensor `{name}` has no valid shape")))?;
            let offs: Vec<usize> = v
                .get("data_offsets")
                .and_then(|s| s.as_array())
                .and_then(|a| a.iter().map(|x| x.as_u64().map(|x| x as usize)).collect())
                .ok_or_else(|| bad(format!("tensor `{name}` has no valid data_offsets")))?;
            let [start, end] = offs[..] else {
                return Err(bad(format!("tensor `{name}`: data_offsets must be [start, end]")));
            };
            let eb = dtype_bytes(&dtype).ok_or_else(|| bad(format!("tensor `{name}` has unknown dtype {dtype}")))?;
            let want = shape.iter().product::<usize>() * eb;
            if end < start || end - start != want {
                return Err(bad(format!("tensor `{name}` ({dtype} {shape:?}) needs {want} bytes but data_offsets [{start}, {end}] hold {}", end.saturating_sub(start))));
            }
            if end > data_len {
                return Err(trunc(format!("tensor `{name}` needs bytes [{start}, {end}) of the data section but only {data_len} bytes follow the header")));
            }
            self.entries.insert(name.clone(), Entry { shard: si, dtype, shape, start, end });
        }
        self.shards.push(Shard { path: path.to_path_buf(), mmap, data_start });
        Ok(si)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.entries.keys().cloned().collect();
        v.sort();
        v
    }

    /// Tensor `name`, checked against `shape` and one of `dtypes` (copied out of the mapping).
    pub fn get(&self, name: &str, shape: &[usize], dtypes: &[DType]) -> Result<Tensor> {
        let expect = || {
            let d: Vec<&str> = dtypes.iter().map(|d| st_name(*d)).collect();
            format!("{} {:?}", d.join("|"), shape)
        };
        let e = self.entries.get(name).ok_or_else(|| ModelError::MissingTensor { dir: self.dir.clone(), name: name.to_string(), expected: expect() })?;
        let path = &self.shards[e.shard].path;
        let dt = opc_dtype(&e.dtype).filter(|d| dtypes.contains(d)).ok_or_else(|| ModelError::WrongDtype {
            path: path.clone(),
            name: name.to_string(),
            got: e.dtype.clone(),
            want: dtypes.iter().map(|d| st_name(*d)).collect::<Vec<_>>().join(" or "),
        })?;
        if e.shape != shape {
            return Err(ModelError::WrongShape { path: path.clone(), name: name.to_string(), got: e.shape.clone(), want: shape.to_vec() });
        }
        let s = &self.shards[e.shard];
        let bytes = opc_ir::buffer::copied(&s.mmap[s.data_start + e.start..s.data_start + e.end]);
        Tensor::from_bytes(dt, shape, bytes).map_err(|detail| ModelError::NotSafetensors { path: path.clone(), detail: format!("tensor `{name}`: {detail}") })
    }

    /// The stored shape of `name`, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }
}
