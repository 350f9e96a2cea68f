//! The `cpu` target's compile cache: in memory (per process) and on disk (shared by processes).
//!
//! **Key.** The text of [`key`]: a format tag, the compiler's fingerprint ([`compiler_id`]: the
//! package version, the Cranelift version and a hash of the sources that decide the generated
//! code), the host ISA's target features, the kernel's tunables and the printed IR
//! (`opc_ir::printer::print_kernel`, which includes dtypes, specialized dims and tunables).
//!
//! **On disk.** `$OPC_CACHE_DIR/cpu/<fnv64 of key>.bin` (the entry format, directory and
//! atomic writes of `disk_cache.rs`), magic `OPCCPU\0\x01`, the payload a `loader::Blob`
//! (relocatable machine code, relocations, arena size). What is cached is exactly the code the
//! in-process path would compile; loading it is `loader::load`, the same step a fresh compile
//! takes. **Corruption** (truncation, bit flips, a different key, a foreign
//! file) fails the checks: the entry is counted in [`CacheStats::corrupt`], recompiled and
//! overwritten. I/O errors on the cache never fail a compile.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use opc_ir::Kernel;

use super::loader::Blob;
use crate::artifact::fnv64;
use crate::disk_cache::{self, Lookup};

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

/// The disk cache directory (`.../cpu`), or `None` when disabled (`disk_cache.rs`).
pub fn disk_dir() -> Option<PathBuf> {
    disk_cache::target_dir("cpu")
}

/// Where the entry of `key` lives in `dir`.
pub fn entry_path(dir: &Path, key: &str) -> PathBuf {
    disk_cache::entry_path(dir, key)
}

/// Look `key` up on disk: the blob, or `None` on a miss or a bad entry (counted as corrupt).
pub(super) fn read(dir: &Path, key: &str) -> Option<Blob> {
    let blob = match disk_cache::read(dir, MAGIC, key) {
        Lookup::Miss => return None,
        Lookup::Corrupt => None,
        Lookup::Hit(payload) => Blob::from_bytes(&payload),
    };
    if blob.is_none() {
        CORRUPT.fetch_add(1, Ordering::Relaxed);
        if std::env::var_os("OPC_CPU_TIME").is_some() {
            eprintln!("cpu cache: ignoring the bad entry {}", entry_path(dir, key).display());
        }
    }
    blob
}

/// Store `blob` under `key` (`disk_cache::write`). Errors are reported to the caller, which
/// ignores them: the cache is an optimization.
pub(super) fn write(dir: &Path, key: &str, blob: &Blob) -> std::io::Result<()> {
    disk_cache::write(dir, MAGIC, key, &blob.to_bytes())?;
    DISK_WRITES.fetch_add(1, Ordering::Relaxed);
    Ok(())
}
