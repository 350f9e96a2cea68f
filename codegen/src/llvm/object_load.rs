//! Loading the x86-64 ELF relocatable object LLVM emits for one kernel into executable memory,
//! instead of an MCJIT execution engine: the same object bytes then serve a fresh compile and a
//! disk cache hit (`mod.rs`), so what the cache returns is exactly what a compile loads.
//!
//! The object is compiled with the static relocation model and the large code model, so its
//! references are 64-bit absolute addresses (`R_X86_64_64`: constant pools, the e8m0 table,
//! jump tables, the runtime helpers and any C library call) or 32-bit PC-relative ones
//! (`R_X86_64_PC32` / `PLT32`, between its own sections, or through a jump stub to a far
//! external function). Anything else is refused, so a kernel never runs with an unpatched field.
//!
//! Layout: every allocated section except `.eh_frame` (unwinding never crosses generated code)
//! at its alignment in one anonymous mapping, then the stubs; relocations are patched, and the
//! mapping becomes read + execute (W^X). Undefined symbols are the runtime helpers (by their
//! symbols in `Helper::ALL`) or resolved with `dlsym` in the running process.

use std::collections::HashMap;

use object::elf::{R_X86_64_64, R_X86_64_PC32, R_X86_64_PLT32, SHF_ALLOC};
use object::{Object, ObjectSection, ObjectSymbol, RelocationFlags, RelocationTarget, SectionFlags, SectionIndex};

use super::helpers::Helper;

/// Machine code of one object, loaded.
pub(super) struct Loaded {
    /// Keeps the code mapped (read + execute).
    _map: memmap2::Mmap,
    /// Address of the `opc_kernel` function.
    pub entry: usize,
    /// Bytes of code of `opc_kernel` (its symbol's size).
    pub entry_size: usize,
    /// The object's other functions (the kernel's side functions): name, address, bytes.
    pub others: Vec<(String, usize, usize)>,
}

/// Bytes of one jump stub: `jmp qword ptr [rip + 0]` then the 8-byte target.
const STUB: usize = 16;

/// The address of external symbol `name`: a runtime helper, else the process's definition.
fn external(name: &str) -> Result<usize, String> {
    if let Some(h) = Helper::ALL.iter().find(|h| h.symbol() == name) {
        return Ok(h.address() as usize);
    }
    let c = std::ffi::CString::new(name).map_err(|_| format!("bad symbol name `{name}`"))?;
    // SAFETY: dlsym with RTLD_DEFAULT only looks the symbol up in the loaded images.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c.as_ptr()) };
    if p.is_null() {
        return Err(format!("the generated code calls `{name}`, which this process does not define"));
    }
    Ok(p as usize)
}

/// Load `bytes` (an ELF relocatable object) and find `opc_kernel`.
pub(super) fn load(bytes: &[u8]) -> Result<Loaded, String> {
    let file = object::File::parse(bytes).map_err(|e| format!("unreadable object: {e}"))?;
    // Section placement.
    let mut place: HashMap<SectionIndex, usize> = HashMap::new();
    let mut size = 0usize;
    for s in file.sections() {
        let SectionFlags::Elf { sh_flags } = s.flags() else { return Err("not an ELF object".into()) };
        if sh_flags & u64::from(SHF_ALLOC) == 0 || s.name() == Ok(".eh_frame") || s.size() == 0 {
            continue;
        }
        let align = (s.align() as usize).max(1);
        size = size.next_multiple_of(align);
        place.insert(s.index(), size);
        size += s.size() as usize;
    }
    // One stub per external symbol that a PC-relative field references.
    let mut stubs: HashMap<String, usize> = HashMap::new();
    let stub_base = size.next_multiple_of(16);
    for s in file.sections().filter(|s| place.contains_key(&s.index())) {
        for (_, r) in s.relocations() {
            if let (RelocationFlags::Elf { r_type: R_X86_64_PC32 | R_X86_64_PLT32 }, RelocationTarget::Symbol(i)) = (r.flags(), r.target()) {
                let sym = file.symbol_by_index(i).map_err(|e| e.to_string())?;
                if sym.is_undefined() {
                    let n = stubs.len();
                    stubs.entry(sym.name().map_err(|e| e.to_string())?.to_string()).or_insert(stub_base + n * STUB);
                }
            }
        }
    }
    let total = (stub_base + stubs.len() * STUB).max(1);
    let mut map = memmap2::MmapMut::map_anon(total).map_err(|e| format!("cannot map {total} bytes: {e}"))?;
    let base = map.as_ptr() as usize;
    for s in file.sections() {
        if let (Some(&at), Ok(data)) = (place.get(&s.index()), s.data()) {
            map[at..at + data.len()].copy_from_slice(data); // empty for .bss: the mapping is zeroed
        }
    }
    for (name, &at) in &stubs {
        let target = external(name)?;
        map[at..at + 6].copy_from_slice(&[0xff, 0x25, 0, 0, 0, 0]);
        map[at + 6..at + 14].copy_from_slice(&(target as u64).to_le_bytes());
    }
    // Relocations.
    for s in file.sections() {
        let Some(&at) = place.get(&s.index()) else { continue };
        for (off, r) in s.relocations() {
            let field = at + off as usize;
            let RelocationTarget::Symbol(i) = r.target() else { return Err(format!("unsupported relocation target {:?}", r.target())) };
            let sym = file.symbol_by_index(i).map_err(|e| e.to_string())?;
            let name = sym.name().map_err(|e| e.to_string())?;
            let RelocationFlags::Elf { r_type } = r.flags() else { return Err("not an ELF relocation".into()) };
            let s_addr = if sym.is_undefined() {
                match r_type {
                    R_X86_64_64 => external(name)?,
                    _ => base + stubs[name],
                }
            } else {
                let sec = sym.section_index().ok_or_else(|| format!("symbol `{name}` has no section"))?;
                let sec_at = place.get(&sec).ok_or_else(|| format!("symbol `{name}` is in a section that is not loaded"))?;
                base + sec_at + sym.address() as usize
            };
            let value = (s_addr as i64).wrapping_add(r.addend());
            match r_type {
                R_X86_64_64 => map[field..field + 8].copy_from_slice(&value.to_le_bytes()),
                R_X86_64_PC32 | R_X86_64_PLT32 => {
                    let rel = value - (base + field) as i64;
                    let rel = i32::try_from(rel).map_err(|_| format!("PC-relative reference to `{name}` out of range"))?;
                    map[field..field + 4].copy_from_slice(&rel.to_le_bytes());
                }
                other => return Err(format!("unsupported relocation type {other} (to `{name}`)")),
            }
        }
    }
    let (entry, entry_size) = file
        .symbols()
        .find(|s| s.name() == Ok("opc_kernel"))
        .and_then(|s| Some((base + place.get(&s.section_index()?)? + s.address() as usize, s.size() as usize)))
        .ok_or("the object has no `opc_kernel`")?;
    let others = file
        .symbols()
        .filter(|s| s.kind() == object::SymbolKind::Text && s.is_definition() && s.name().is_ok_and(|n| n != "opc_kernel"))
        .filter_map(|s| Some((s.name().ok()?.to_string(), base + place.get(&s.section_index()?)? + s.address() as usize, s.size() as usize)))
        .collect();
    let map = map.make_exec().map_err(|e| format!("cannot make the code executable: {e}"))?;
    Ok(Loaded { _map: map, entry, entry_size, others })
}
