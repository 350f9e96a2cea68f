//! Disk entries of the compile caches (`cpu`: relocatable Cranelift code, `llvm`: ELF objects):
//! one file per key under `$OPC_CACHE_DIR/<target>/` (`~/.cache/opc/<target>/` when the
//! variable is unset; `OPC_CACHE_DIR=off` or an empty value disables the disk caches).
//!
//! **Entry.** `<fnv64 of key>.bin`: the target's 8-byte magic, the key's length and text
//! (compared in full on load, so a hash collision is a miss, never wrong code), the payload, and
//! an FNV-1a 64 checksum of everything before it.
//!
//! **Concurrency.** A writer writes a unique temporary file in the same directory and `rename`s
//! it over the entry (atomic on POSIX): a reader sees the old entry, the new one or none, never a
//! torn one (no `fsync`: an entry torn by a crash fails its checksum and is recompiled). Two
//! processes compiling one kernel at once both write; the entries are identical.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::artifact::fnv64;

/// What a lookup found.
pub(crate) enum Lookup {
    /// No entry for the key.
    Miss,
    /// An entry that fails the checks (truncated, flipped bits, another key, a foreign file).
    Corrupt,
    /// The payload.
    Hit(Vec<u8>),
}

/// `$OPC_CACHE_DIR/<target>` (or `~/.cache/opc/<target>`), `None` when disabled. Read on every
/// call, so a process may change `OPC_CACHE_DIR` between compiles.
pub(crate) fn target_dir(target: &str) -> Option<PathBuf> {
    let base = match std::env::var_os("OPC_CACHE_DIR") {
        Some(v) if v.is_empty() || v == "off" => return None,
        Some(v) => PathBuf::from(v),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache").join("opc"),
    };
    Some(base.join(target))
}

/// Where the entry of `key` lives in `dir`.
pub(crate) fn entry_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{:016x}.bin", fnv64(key.as_bytes())))
}

/// Look `key` up in `dir`.
pub(crate) fn read(dir: &Path, magic: &[u8; 8], key: &str) -> Lookup {
    let Ok(bytes) = std::fs::read(entry_path(dir, key)) else { return Lookup::Miss };
    match parse(&bytes, magic, key) {
        Some(payload) => Lookup::Hit(payload.to_vec()),
        None => Lookup::Corrupt,
    }
}

fn parse<'a>(bytes: &'a [u8], magic: &[u8; 8], key: &str) -> Option<&'a [u8]> {
    let (body, sum) = bytes.split_at_checked(bytes.len().checked_sub(8)?)?;
    if fnv64(body).to_le_bytes() != sum {
        return None;
    }
    let rest = body.strip_prefix(magic.as_slice())?;
    let (len, rest) = rest.split_at_checked(8)?;
    let len = usize::try_from(u64::from_le_bytes(len.try_into().ok()?)).ok()?;
    let (stored_key, payload) = rest.split_at_checked(len)?;
    (stored_key == key.as_bytes()).then_some(payload)
}

/// Store `payload` under `key` (temporary file + atomic rename). Errors go to the caller, which
/// ignores them: the cache is an optimization.
pub(crate) fn write(dir: &Path, magic: &[u8; 8], key: &str, payload: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut bytes = Vec::with_capacity(key.len() + payload.len() + 32);
    bytes.extend_from_slice(magic);
    bytes.extend((key.len() as u64).to_le_bytes());
    bytes.extend_from_slice(key.as_bytes());
    bytes.extend_from_slice(payload);
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
    }
    res
}
