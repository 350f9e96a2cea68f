//! The tuning database: every timing of every run, one JSON object per line.
//!
//! **Where.** `$OPC_TUNE_DB` (a file path; `off` or empty disables tuning records), else
//! `tune.jsonl` in the compile cache's directory (`$OPC_CACHE_DIR`, `~/.cache/opc`; the cache's
//! `off` turns this off too).
//!
//! **Key.** A [`Key`] names what decides the timing, as the compile cache's key does: the
//! kernel's source text (hashed), its name, the dtypes and specialized consts it was built
//! with (read off the compiled kernel's parameters, so every way of spelling the same
//! instance meets), the launch dims, the target and machine (`Target::machine`: host CPU and
//! ISA features) and the compiler version. A record made on another machine or with another
//! source never applies.
//!
//! **Concurrency.** A run appends all its records with one `write` on a file opened for
//! appending, so concurrent runs interleave whole runs, never parts of lines; a line that does
//! not parse (a run killed mid-write, a foreign file) is skipped on load. Nothing is ever
//! rewritten in place.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use opc_ir::{Kernel, ParamKind};
use serde::{Deserialize, Serialize};

/// What a timing depends on besides the tunables (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Key {
    /// FNV-1a 64 of the kernel's source file, hex.
    pub source: String,
    pub kernel: String,
    /// Parameter dtypes in order, `a:bf16,b:bf16,bias:f32,...` (scalars included).
    pub params: String,
    /// Specialized const dims, `D=64,...` (declaration order).
    pub consts: String,
    /// The launch's dynamic dims, `K=4096,M=1,N=14336` (declaration order).
    pub dims: String,
    /// `Target::machine()`.
    pub machine: String,
    /// opc's version.
    pub compiler: String,
}

impl Key {
    /// The key of `kernel` (compiled from `source`, any stage: the parameters and dims do not
    /// change in the pipeline) launched with symbol values `sym_values` (indexed like
    /// `kernel.dims`, as `opc_ir::launch::bind_dims` returns them) on `machine`.
    pub fn new(source: &str, kernel: &Kernel, sym_values: &[i64], machine: &str) -> Key {
        let base = KeyBase::new(source, kernel, machine);
        base.with_dims(kernel, sym_values)
    }
}

/// A [`Key`] without its dims: what stays fixed across the launches of one compiled kernel.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyBase {
    source: String,
    kernel: String,
    params: String,
    consts: String,
    machine: String,
}

impl KeyBase {
    pub fn new(source: &str, kernel: &Kernel, machine: &str) -> KeyBase {
        let params: Vec<String> = kernel
            .params
            .iter()
            .map(|p| match &p.kind {
                ParamKind::Tensor { dtype, .. } | ParamKind::Scalar { dtype } => format!("{}:{dtype}", p.name),
            })
            .collect();
        let consts: Vec<String> = kernel
            .dims
            .iter()
            .filter(|d| d.konst)
            .filter_map(|d| d.value.map(|v| format!("{}={v}", d.name)))
            .collect();
        KeyBase {
            source: format!("{:016x}", opc_codegen::artifact::fnv64(source.as_bytes())),
            kernel: kernel.name.clone(),
            params: params.join(","),
            consts: consts.join(","),
            machine: machine.to_string(),
        }
    }

    /// The dims part of a key: the dynamic (non-const) symbols and their values.
    pub fn dims(kernel: &Kernel, sym_values: &[i64]) -> String {
        dims_text(&dynamic_dims(kernel, sym_values))
    }

    pub fn with_dims(&self, kernel: &Kernel, sym_values: &[i64]) -> Key {
        Key {
            source: self.source.clone(),
            kernel: self.kernel.clone(),
            params: self.params.clone(),
            consts: self.consts.clone(),
            dims: KeyBase::dims(kernel, sym_values),
            machine: self.machine.clone(),
            compiler: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// Whether `key` is this base with some dims.
    pub fn matches(&self, key: &Key) -> bool {
        key.source == self.source
            && key.kernel == self.kernel
            && key.params == self.params
            && key.consts == self.consts
            && key.machine == self.machine
            && key.compiler == env!("CARGO_PKG_VERSION")
    }
}

/// The dynamic (non-const) dims of `kernel` with their values, in declaration order
/// (`sym_values` indexed like `kernel.dims`, as `opc_ir::launch::bind_dims` returns them).
pub fn dynamic_dims(kernel: &Kernel, sym_values: &[i64]) -> Vec<(String, i64)> {
    kernel.dims.iter().zip(sym_values).filter(|(d, _)| !d.konst).map(|(d, v)| (d.name.clone(), *v)).collect()
}

/// `M=512,K=2048`: dims as a key and the tools print them.
pub fn dims_text(dims: &[(String, i64)]) -> String {
    dims.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join(",")
}

/// One measured configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub key: Key,
    /// Which run measured it (nanoseconds since the Unix epoch at the run's start): the best
    /// configuration is taken from a key's latest run, whose timings were taken together.
    pub run: u64,
    /// The configuration, in the kernel's declaration order.
    pub tunables: Vec<(String, i64)>,
    /// `ok`, `wrong: ...` (its output disagreed with the default's) or `rejected: ...` (it does
    /// not compile or launch: a budget, a constraint).
    pub status: String,
    /// Median and fastest launch, milliseconds (ok records only).
    pub median_ms: Option<f64>,
    pub min_ms: Option<f64>,
    pub launches: u32,
    /// The run's first configuration: the declared defaults (with any pinned tunables), the
    /// reference the others were checked against.
    #[serde(default)]
    pub default: bool,
    /// A finalist of its run, timed again together with the others (`opc_tune`'s final
    /// rounds): the best configuration is the fastest of these.
    #[serde(default)]
    pub confirmed: bool,
}

impl Record {
    pub fn ok(&self) -> bool {
        self.status == "ok"
    }
}

/// The database file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Db {
    pub path: PathBuf,
}

impl Db {
    /// The database the environment names (module docs), or `None` when turned off.
    pub fn from_env() -> Option<Db> {
        if let Some(v) = std::env::var_os("OPC_TUNE_DB") {
            return if v.is_empty() || v == "off" { None } else { Some(Db { path: PathBuf::from(v) }) };
        }
        let base = match std::env::var_os("OPC_CACHE_DIR") {
            Some(v) if v.is_empty() || v == "off" => return None,
            Some(v) => PathBuf::from(v),
            None => PathBuf::from(std::env::var_os("HOME")?).join(".cache").join("opc"),
        };
        Some(Db { path: base.join("tune.jsonl") })
    }

    pub fn at(path: impl AsRef<Path>) -> Db {
        Db { path: path.as_ref().to_path_buf() }
    }

    /// Every record that parses (none when the file does not exist).
    pub fn load(&self) -> std::io::Result<Vec<Record>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(e),
        };
        Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
    }

    /// Append `records` with one write (module docs), creating the file and its directory.
    pub fn append(&self, records: &[Record]) -> std::io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut text = String::new();
        for r in records {
            text += &serde_json::to_string(r).expect("records are plain JSON");
            text.push('\n');
        }
        let mut f = std::fs::OpenOptions::new().create(true).append(true).read(true).open(&self.path)?;
        // A line left torn by a killed run would swallow our first record: start a new line.
        // (Racing appenders can at worst add an empty line, which loading skips.)
        if ends_torn(&mut f)? {
            text.insert(0, '\n');
        }
        f.write_all(text.as_bytes())
    }
}

/// Whether the file's last byte is something other than a newline.
fn ends_torn(f: &mut std::fs::File) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    if f.metadata()?.len() == 0 {
        return Ok(false);
    }
    f.seek(SeekFrom::End(-1))?;
    let mut last = [0u8];
    f.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

/// The best configuration of each key in `records`: the fastest (median) ok record of the
/// key's latest run (a run's timings were taken together; other runs' may not compare), of its
/// finalists when it had final rounds (records of older versions have none). On a tie, the
/// earlier record.
pub fn best_per_key(records: &[Record]) -> BTreeMap<&Key, &Record> {
    let timed = || records.iter().filter(|r| r.ok() && r.median_ms.is_some());
    let mut latest: HashMap<&Key, u64> = HashMap::new();
    for r in timed() {
        let e = latest.entry(&r.key).or_insert(r.run);
        *e = (*e).max(r.run);
    }
    let mut best: BTreeMap<&Key, &Record> = BTreeMap::new();
    for r in timed().filter(|r| latest[&r.key] == r.run) {
        let b = best.entry(&r.key).or_insert(r);
        // finalists first: their times were taken together
        if (!r.confirmed, r.median_ms) < (!b.confirmed, b.median_ms) {
            *b = r;
        }
    }
    best
}

/// The median of the default configuration in the run that measured `best`.
pub fn default_ms(records: &[Record], best: &Record) -> Option<f64> {
    records.iter().find(|r| r.default && r.run == best.run && r.key == best.key).and_then(|r| r.median_ms)
}

/// The best record for `key` (see [`best_per_key`]).
pub fn best<'a>(records: &'a [Record], key: &Key) -> Option<&'a Record> {
    best_per_key(records).get(key).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(dims: &str) -> Key {
        Key {
            source: "0123".into(),
            kernel: "matmul".into(),
            params: "a:f32".into(),
            consts: String::new(),
            dims: dims.into(),
            machine: "cpu x".into(),
            compiler: env!("CARGO_PKG_VERSION").into(),
        }
    }

    fn rec(dims: &str, run: u64, bm: i64, ms: f64, status: &str) -> Record {
        Record {
            key: key(dims),
            run,
            tunables: vec![("BM".to_string(), bm)],
            status: status.into(),
            median_ms: Some(ms),
            min_ms: Some(ms),
            launches: 5,
            default: false,
            confirmed: false,
        }
    }

    #[test]
    fn the_best_record_is_the_fastest_ok_one_of_the_latest_run() {
        let rs = vec![
            rec("M=64", 1, 16, 0.5, "ok"),
            rec("M=64", 2, 32, 2.0, "ok"),
            rec("M=64", 2, 64, 1.0, "ok"),
            rec("M=64", 2, 128, 0.1, "wrong: max error 3 at [0, 1]"),
            rec("M=128", 1, 16, 9.0, "ok"),
        ];
        assert_eq!(best(&rs, &key("M=64")).unwrap().tunables[0].1, 64);
        assert_eq!(best(&rs, &key("M=128")).unwrap().tunables[0].1, 16);
        assert!(best(&rs, &key("M=256")).is_none());
        let all = best_per_key(&rs);
        assert_eq!(all.len(), 2);
        assert!(all.iter().any(|(k, r)| k.dims == "M=64" && r.tunables[0].1 == 64));
    }

    #[test]
    fn a_run_with_final_rounds_picks_the_fastest_finalist() {
        // BM=16's first timing (a quiet moment) beats every finalist's; the finalists were
        // timed together afterwards, so the fastest of them is the best.
        let mut rs = vec![rec("M=64", 1, 16, 0.2, "ok"), rec("M=64", 1, 32, 0.9, "ok"), rec("M=64", 1, 64, 0.7, "ok"), rec("M=64", 1, 128, 0.8, "ok")];
        for r in &mut rs[1..] {
            r.confirmed = true;
        }
        assert_eq!(best(&rs, &key("M=64")).unwrap().tunables[0].1, 64);
        // A record written before final rounds existed reads as unconfirmed.
        let old: Record = serde_json::from_str(&serde_json::to_string(&rs[0]).unwrap().replace(",\"confirmed\":false", "")).unwrap();
        assert!(!old.confirmed);
    }

    #[test]
    fn records_round_trip_and_torn_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::at(dir.path().join("sub/tune.jsonl"));
        assert!(db.load().unwrap().is_empty());
        let rs = vec![rec("M=64", 1, 16, 0.5, "ok"), rec("M=64", 1, 32, 0.25, "ok")];
        db.append(&rs).unwrap();
        // A run killed mid-write leaves a partial line; the next run's records still load.
        std::fs::OpenOptions::new().append(true).open(&db.path).unwrap().write_all(b"{\"key\": {\"sou").unwrap();
        db.append(&[rec("M=8", 3, 8, 1.0, "ok")]).unwrap();
        let back = db.load().unwrap();
        assert_eq!(back.len(), 3, "only the torn line is skipped");
        assert_eq!(back[..2], rs[..2]);
        assert_eq!(back[2].key.dims, "M=8");
    }

    #[test]
    fn concurrent_writers_never_tear_lines() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::at(dir.path().join("tune.jsonl"));
        std::thread::scope(|s| {
            for w in 0..8u64 {
                let db = db.clone();
                s.spawn(move || {
                    for i in 0..25u64 {
                        let rs: Vec<Record> = (0..4).map(|j| rec(&format!("M={w}"), i, j, 1.0, "ok")).collect();
                        db.append(&rs).unwrap();
                    }
                });
            }
        });
        let text = std::fs::read_to_string(&db.path).unwrap();
        // Racing appenders may leave empty lines (module docs), never partial ones.
        assert_eq!(text.lines().filter(|l| !l.is_empty()).count(), 8 * 25 * 4);
        assert_eq!(db.load().unwrap().len(), 8 * 25 * 4);
    }
}
