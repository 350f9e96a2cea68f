//! The `cpu` target's compile cache: in memory (per process) and on disk (shared by processes).
//!
//! **Key.** The text of [`key`]: a format tag, the compiler's fingerprint ([`compiler_id`]: the
//! package version, the Cranelift version and a hash of the sources that decide the generated
//! code), the host ISA's target features, the kernel's tunables and the printed IR
//! (`opc_ir::printer::print_kernel`, which includes dtypes, specialized dims and tunables).
//!
//! **On disk.** `$OPC_CACHE_DIR/cpu/<fnv64 of key>.bin`, or `~/.cache/opc/cpu/...` when the
//! variable is unset; `OPC_CACHE_DIR=off` (or an empty value) disables the disk cache. One
//! entry is: magic `OPCCPU\0\x01`, the key's length and text (compared in full on load, so a
//! hash collision is a miss, never wrong code), the payload (a `loader::Blob`: relocatable
//! machine code, relocations, arena size) and an FNV-1a 64 checksum of everything before it.
//! What is cached is exactly the code the in-process path would compile; loading it is
//! `loader::load`, the same step a fresh compile takes.
//!
//! **Concurrency.** Writers write a unique temporary file in the same directory and `rename`
//! it over the entry (atomic on POSIX): a reader sees the old entry, the new one or none, never
//! a torn one (no `fsync`: an entry torn by a crash fails its checksum and is recompiled). Two processes compiling the same kernel at once both compile and both rename;
//! the entries are identical. **Corruption** (truncation, bit flips, a different key, a foreign
//! file) fails the checks: the entry is counted in [`CacheStats::corrupt`], recompiled and
//! overwritten. I/O errors on the cache never fail a compile.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use opc_ir::Kernel;

use super::loader::Blob;
use crate::artifact::fnv64;

const MAGIC: &[u8; 8] = b"OPCCPU\0\x01";


/// Sources whose changes can change generated code (tracked by the build through `include_str!`).
const SOURCES: &[&str] = &[
    include_str!("mod.rs"),
    include_str!("emit.rs"),
    include_str!("loader.rs"),
    include_str!("lower.rs"),
    include_str!("elem.rs"),
    include_str!("memory.rs"),
    include_str!("dot.rs"),
    include_str!("reduce.rs"),
    include_str!("helpers.rs"),
    include_str!("../../../ir/src/ir.rs"),
    include_str!("../../../ir/src/types.rs"),
    include_str!("../../../ir/src/numerics.rs"),
];

/// The compiler's identity in cache keys: `opc 0.1.0 cranelift 0.135 src <hash>`. The source
/// hash makes a rebuilt compiler with a changed lowering miss instead of loading stale code.
pub fn compiler_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let mut h = 0u64;
        for s in SOURCES {
            h = h.rotate_left(5) ^ fnv64(s.as_bytes());
        }
        format!("opc {} cranelift 0.135 src {h:016x}", env!("CARGO_PKG_VERSION"))
    })
}

/// The cache key of `k` compiled for an ISA with `features`.
pub(super) fn key(k: &Kernel, features: &str) -> String {
    let tunables: Vec<String> = k.tunables.iter().map(|t| format!("{}={}", t.name, t.value)).collect();
    format!(
        "opc-cpu-cache 1\ncompiler {}\nfeatures {features}\ntunables {}\n{}",
        compiler_id(),
        tunables.join(","),
        opc_ir::printer::print_kernel(k)
    )
}

/// Counters of this process's cache traffic (see [`cache_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Compiles answered from memory.
    pub memory_hits: u64,
    /// Compiles answered by loading a disk entry.
    pub disk_hits: u64,
    /// Kernels compiled by Cranelift.
    pub compiles: u64,
    /// Entries written to disk.
    pub disk_writes: u64,
    /// Disk entries that failed the checks (then recompiled and overwritten).
    pub corrupt: u64,
}

pub(super) static MEMORY_HITS: AtomicU64 = AtomicU64::new(0);
pub(super) static DISK_HITS: AtomicU64 = AtomicU64::new(0);
pub(super) static COMPILES: AtomicU64 = AtomicU64::new(0);
static DISK_WRITES: AtomicU64 = AtomicU64::new(0);
static CORRUPT: AtomicU64 = AtomicU64::new(0);

/// This process's cache counters so far.
pub fn cache_stats() -> CacheStats {
    let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
    CacheStats {
        memory_hits: g(&MEMORY_HITS),
        disk_hits: g(&DISK_HITS),
        compiles: g(&COMPILES),
        disk_writes: g(&DISK_WRITES),
        corrupt: g(&CORRUPT),
    }
}

/// The disk cache directory (`.../cpu`), or `None` when disabled. Read on every compile, so a
/// process may change `OPC_CACHE_DIR` between compiles.
pub fn disk_dir() -> Option<PathBuf> {
    let base = match std::env::var_os("OPC_CACHE_DIR") {
        Some(v) if v.is_empty() || v == "off" => return None,
        Some(v) => PathBuf::from(v),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache").join("opc"),
    };
    Some(base.join("cpu"))
}

/// Where the entry of `key` lives in `dir`.
pub fn entry_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{:016x}.bin", fnv64(key.as_bytes())))
}

/// Look `key` up on disk: the blob, or `None` on a miss or a bad entry (counted as corrupt).
pub(super) fn read(dir: &Path, key: &str) -> Option<Blob> {
    let path = entry_path(dir, key);
    let bytes = std::fs::read(&path).ok()?;
    let parsed = parse(&bytes, key);
    if parsed.is_none() {
        CORRUPT.fetch_add(1, Ordering::Relaxed);
        if std::env::var_os("OPC_CPU_TIME").is_some() {
            eprintln!("cpu cache: ignoring the bad entry {}", path.display());
        }
    }
    parsed
}

fn parse(bytes: &[u8], key: &str) -> Option<Blob> {
    let (body, sum) = bytes.split_at_checked(bytes.len().checked_sub(8)?)?;
    if fnv64(body).to_le_bytes() != sum {
        return None;
    }
    let rest = body.strip_prefix(MAGIC.as_slice())?;
    let (len, rest) = rest.split_at_checked(8)?;
    let len = usize::try_from(u64::from_le_bytes(len.try_into().ok()?)).ok()?;
    let (stored_key, payload) = rest.split_at_checked(len)?;
    if stored_key != key.as_bytes() {
        return None;
    }
    Blob::from_bytes(payload)
}

/// Store `blob` under `key` (temporary file + atomic rename). Errors are reported to the caller,
/// which ignores them: the cache is an optimization.
pub(super) fn write(dir: &Path, key: &str, blob: &Blob) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut bytes = Vec::with_capacity(key.len() + blob.code.len() + 64);
    bytes.extend_from_slice(MAGIC);
    bytes.extend((key.len() as u64).to_le_bytes());
    bytes.extend_from_slice(key.as_bytes());
    bytes.extend(blob.to_bytes());
    let sum = fnv64(&bytes);
    bytes.extend(sum.to_le_bytes());
    let path = entry_path(dir, key);
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let tmp = dir.join(format!(
        ".tmp-{}-{}-{nanos}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
        path.file_name().and_then(|n| n.to_str()).unwrap_or("entry")
    ));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        std::fs::rename(&tmp, &path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    } else {
        DISK_WRITES.fetch_add(1, Ordering::Relaxed);
    }
    res
}
