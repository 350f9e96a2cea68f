//! A small loader for the in-process path: relocatable machine code of one function ([`Blob`],
//! from `emit.rs` or from the disk cache) → executable memory.
//!
//! The code is position-independent except for the relocations Cranelift records with
//! `is_pic = false`: absolute 64-bit addresses of the runtime helpers (`Abs8`; calls to
//! non-colocated functions load the address, then call through a register), PC-relative 32-bit
//! references (to the function's own constants, or to a helper / libcall if one is ever
//! emitted that way: checked to be in range) and the few float libcalls Cranelift may fall back
//! to. Anything else is rejected when compiling, so a cached blob only ever holds these.
//!
//! Mapping: an anonymous read-write mapping receives the bytes, the relocations are patched,
//! then it is switched to read + execute (`memmap2`'s `make_exec`, W^X) and kept alive by
//! [`Loaded`] as long as an executable uses it.

use cranelift_codegen::ir::LibCall;

use super::helpers::Helper;

/// How a relocation is patched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RelocKind {
    /// 64-bit absolute address.
    Abs8,
    /// 32-bit signed displacement from the patched field.
    PcRel4,
}

/// What a relocation points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RelocTarget {
    /// A runtime helper: its index in `Helper::ALL`.
    Helper(u32),
    /// A libcall: its index in [`LIBCALLS`].
    LibCall(u32),
    /// An offset inside this same code.
    Code(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Reloc {
    pub offset: u32,
    pub kind: RelocKind,
    pub target: RelocTarget,
    pub addend: i64,
}

/// Machine code of one kernel's program function, before loading: what the disk cache stores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Blob {
    pub code: Vec<u8>,
    pub relocs: Vec<Reloc>,
    /// Bytes of scratch arena one program needs.
    pub arena_bytes: usize,
}

extern "C" fn floor_f32(x: f32) -> f32 {
    x.floor()
}
extern "C" fn ceil_f32(x: f32) -> f32 {
    x.ceil()
}
extern "C" fn trunc_f32(x: f32) -> f32 {
    x.trunc()
}
extern "C" fn nearest_f32(x: f32) -> f32 {
    x.round_ties_even()
}
extern "C" fn fma_f32(a: f32, b: f32, c: f32) -> f32 {
    a.mul_add(b, c)
}
extern "C" fn floor_f64(x: f64) -> f64 {
    x.floor()
}
extern "C" fn ceil_f64(x: f64) -> f64 {
    x.ceil()
}
extern "C" fn trunc_f64(x: f64) -> f64 {
    x.trunc()
}
extern "C" fn nearest_f64(x: f64) -> f64 {
    x.round_ties_even()
}
extern "C" fn fma_f64(a: f64, b: f64, c: f64) -> f64 {
    a.mul_add(b, c)
}

/// Returns a function's address.
type Address = fn() -> *const u8;

/// The libcalls Cranelift may emit for float rounding / FMA on CPUs without SSE4.1 / FMA, with
/// their implementations (the same Rust functions the interpreter's semantics use).
const LIBCALLS: [(LibCall, Address); 10] = [
    (LibCall::FloorF32, || floor_f32 as *const u8),
    (LibCall::CeilF32, || ceil_f32 as *const u8),
    (LibCall::TruncF32, || trunc_f32 as *const u8),
    (LibCall::NearestF32, || nearest_f32 as *const u8),
    (LibCall::FmaF32, || fma_f32 as *const u8),
    (LibCall::FloorF64, || floor_f64 as *const u8),
    (LibCall::CeilF64, || ceil_f64 as *const u8),
    (LibCall::TruncF64, || trunc_f64 as *const u8),
    (LibCall::NearestF64, || nearest_f64 as *const u8),
    (LibCall::FmaF64, || fma_f64 as *const u8),
];

/// The code of a libcall the loader provides.
pub(super) fn libcall_code(lc: LibCall) -> Option<u32> {
    LIBCALLS.iter().position(|(l, _)| *l == lc).map(|i| i as u32)
}

/// Loaded, executable code. The mapping is unmapped on drop.
pub(super) struct Loaded {
    map: memmap2::Mmap,
}

impl Loaded {
    /// Address of the first byte (the function's entry).
    pub fn entry(&self) -> *const u8 {
        self.map.as_ptr()
    }
}

/// Map `blob` into executable memory with its relocations applied.
pub(super) fn load(blob: &Blob) -> Result<Loaded, String> {
    let len = blob.code.len().max(1);
    let mut map = memmap2::MmapMut::map_anon(len).map_err(|e| format!("cannot map {len} bytes for code: {e}"))?;
    map[..blob.code.len()].copy_from_slice(&blob.code);
    let base = map.as_mut_ptr();
    for r in &blob.relocs {
        let width = match r.kind {
            RelocKind::Abs8 => 8,
            RelocKind::PcRel4 => 4,
        };
        let at = r.offset as usize;
        if at.checked_add(width).is_none_or(|end| end > blob.code.len()) {
            return Err(format!("relocation at {at} is outside the code ({} bytes)", blob.code.len()));
        }
        let target = match r.target {
            RelocTarget::Helper(i) => Helper::ALL.get(i as usize).ok_or(format!("unknown helper #{i}"))?.address() as i64,
            RelocTarget::LibCall(i) => LIBCALLS.get(i as usize).ok_or(format!("unknown libcall #{i}"))?.1() as i64,
            RelocTarget::Code(off) => {
                if off as usize > blob.code.len() {
                    return Err(format!("relocation target {off} is outside the code"));
                }
                base as i64 + off as i64
            }
        };
        let what = target.wrapping_add(r.addend);
        // SAFETY: `at + width <= code.len() <= map.len()` was checked above.
        unsafe {
            let p = base.add(at);
            match r.kind {
                RelocKind::Abs8 => std::ptr::write_unaligned(p as *mut i64, what),
                RelocKind::PcRel4 => {
                    let d = i32::try_from(what.wrapping_sub(p as i64)).map_err(|_| "a PC-relative relocation is out of range".to_string())?;
                    std::ptr::write_unaligned(p as *mut i32, d);
                }
            }
        }
    }
    let map = map.make_exec().map_err(|e| format!("cannot make code executable: {e}"))?;
    Ok(Loaded { map })
}

// --- serialization (the disk cache's payload) ---------------------------------------------

impl Blob {
    /// Little-endian bytes: arena, code, relocations.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![];
        out.extend((self.arena_bytes as u64).to_le_bytes());
        out.extend((self.code.len() as u64).to_le_bytes());
        out.extend(&self.code);
        out.extend((self.relocs.len() as u64).to_le_bytes());
        for r in &self.relocs {
            out.extend(r.offset.to_le_bytes());
            out.push(match r.kind {
                RelocKind::Abs8 => 0,
                RelocKind::PcRel4 => 1,
            });
            let (t, i) = match r.target {
                RelocTarget::Helper(i) => (0u8, i),
                RelocTarget::LibCall(i) => (1, i),
                RelocTarget::Code(i) => (2, i),
            };
            out.push(t);
            out.extend(i.to_le_bytes());
            out.extend(r.addend.to_le_bytes());
        }
        out
    }

    /// Parse [`Blob::to_bytes`]; `None` for any malformed input (never panics).
    pub fn from_bytes(b: &[u8]) -> Option<Blob> {
        let mut at = 0usize;
        let mut take = |n: usize| -> Option<&[u8]> {
            let s = b.get(at..at.checked_add(n)?)?;
            at += n;
            Some(s)
        };
        let u64_ = |s: &[u8]| u64::from_le_bytes(s.try_into().expect("8 bytes"));
        let arena_bytes = usize::try_from(u64_(take(8)?)).ok()?;
        let n = usize::try_from(u64_(take(8)?)).ok()?;
        let code = take(n)?.to_vec();
        let nr = usize::try_from(u64_(take(8)?)).ok()?;
        let mut relocs = Vec::with_capacity(nr.min(1 << 16));
        for _ in 0..nr {
            let offset = u32::from_le_bytes(take(4)?.try_into().ok()?);
            let kind = match take(1)?[0] {
                0 => RelocKind::Abs8,
                1 => RelocKind::PcRel4,
                _ => return None,
            };
            let t = take(1)?[0];
            let i = u32::from_le_bytes(take(4)?.try_into().ok()?);
            let target = match t {
                0 => RelocTarget::Helper(i),
                1 => RelocTarget::LibCall(i),
                2 => RelocTarget::Code(i),
                _ => return None,
            };
            let addend = i64::from_le_bytes(take(8)?.try_into().ok()?);
            relocs.push(Reloc { offset, kind, target, addend });
        }
        if at != b.len() {
            return None;
        }
        Some(Blob { code, relocs, arena_bytes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_round_trip_and_reject_garbage() {
        let b = Blob {
            code: vec![0xC3, 1, 2, 3, 4, 5, 6, 7, 8, 9],
            relocs: vec![Reloc { offset: 1, kind: RelocKind::Abs8, target: RelocTarget::Helper(3), addend: -2 }],
            arena_bytes: 64,
        };
        let bytes = b.to_bytes();
        assert_eq!(Blob::from_bytes(&bytes), Some(b));
        for cut in 0..bytes.len() {
            assert_eq!(Blob::from_bytes(&bytes[..cut]), None, "prefix of {cut} bytes");
        }
    }
}
