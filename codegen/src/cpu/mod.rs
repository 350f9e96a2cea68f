//! The `cpu` target: tile IR → native code through the Cranelift JIT (pure Rust, no system
//! dependencies), bit-identical to the interpreter.
//!
//! **Pipeline.** `compile` verifies the kernel, then `lower.rs` (`lower-cpu`) turns it into a
//! loop-and-buffer form emitted directly as CLIF: one native function per kernel that runs *one
//! program*, `extern "C" fn(tensors, meta, pid0, pid1, pid2, scratch, err) -> i32`:
//! - `tensors`: one pointer per parameter (the `Tensor::data` bytes; null for scalars),
//! - `meta`: i64s laid out by [`MetaLayout`]: the bound dims, the grid, each scalar argument and
//!   each tensor's shape and element strides,
//! - `scratch`: this worker's arena, where the program's tiles live (see `lower.rs`),
//! - the result: 0, or `k + 1` when the `k`-th `for` (pre-order) met a non-positive step, whose
//!   value is then in `*err`.
//!
//! Files: `lower.rs` (the driver: values, buffers, loop nests, elementwise ops, shape views,
//! `for`/`if`), `memory.rs` (`load`/`store`/`atomic_add`), `dot.rs`, `reduce.rs` (`reduce`,
//! `cumsum`), `elem.rs` (element semantics: dtype rounding, int wrapping, casts, tensor element
//! access) and `helpers.rs` (the runtime functions the code calls: transcendental functions,
//! f16 conversions, rare casts, packed stores, `atomic_add`).
//!
//! **Launch** mirrors the interpreter: [`opc_ir::launch::bind_dims`] and
//! [`opc_ir::launch::grid`] first (so launch errors are identical), then the programs run in
//! parallel on the launch pool (`launch_pool.rs`), each thread reusing one scratch arena across
//! programs and launches (the generated code never assumes it zeroed).
//!
//! **Concurrency contract** (the interpreter's): programs write disjoint elements. Two programs
//! may write the two nibbles of one byte of a packed (`i4` / `e2m1`) tensor: nibble stores are an
//! atomic byte read-modify-write. `atomic_add` is a compare-and-swap loop per element.
//!
//! Environment: `OPC_CPU_TIME=1` prints each kernel's compile time (lowering + Cranelift +
//! loading) and arena size, or the cache that answered, to stderr; `OPC_CPU_DUMP_CLIF=1` prints
//! the CLIF before compiling; `OPC_CACHE_DIR` places (or, `off`, disables) the disk cache.
//!
//! **Code path.** `emit.rs` builds the function and compiles it to relocatable bytes
//! (`loader::Blob`); `loader.rs` maps them executable and patches the helper addresses.
//!
//! **Compile cache** (`cache.rs`): blobs are cached in memory and on disk, keyed by the IR, the
//! tunables, the host ISA's features and the compiler's fingerprint; safe under concurrent
//! processes. **Ahead of time** (`aot.rs`): `opc build --target cpu -o DIR` writes a shared
//! library with a C-ABI launcher and a manifest. **Raw launch**: [`CpuExecutable::launch_raw`]
//! runs on caller-owned memory (the guard-page tests use it).

mod aot;
mod cache;
mod dot;
mod elem;
mod emit;
mod helpers;
mod loader;
mod lower;
mod memory;
mod reduce;

pub use aot::CpuRenderer;
pub use cache::{cache_stats, compiler_id, disk_dir, entry_path, CacheStats};

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use std::sync::atomic::Ordering;

use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use opc_ir::launch::LaunchError;
use opc_ir::{Arg, ArgRef, Kernel, LaunchArg};

pub(crate) use crate::jit_args::MetaLayout;
use crate::jit_args::{for_each_program, launch_lent, launch_owned, step_error, with_arena, RunOn};
use crate::{CodegenError, Executable, Result, Target};

/// The Cranelift JIT target (`--target cpu`).
pub struct CpuTarget;


type KernelFn = unsafe extern "C" fn(*const usize, *const i64, i64, i64, i64, *mut u8, *mut i64) -> i32;

/// Machine code of one kernel, shared by every executable compiled from the same IR.
struct Code {
    entry: KernelFn,
    arena_bytes: usize,
    meta: MetaLayout,
    /// Owns the code memory (unmapped on drop, when no executable can call `entry` any more).
    _mem: loader::Loaded,
}

/// The host ISA with opc's flags, built once; `pic` builds the position-independent variant
/// the ahead-of-time shared library needs.
fn isa_with(pic: bool) -> Result<OwnedTargetIsa> {
    static ISA: [OnceLock<std::result::Result<OwnedTargetIsa, String>>; 2] = [OnceLock::new(), OnceLock::new()];
    ISA[pic as usize]
        .get_or_init(|| {
            let mut flags = settings::builder();
            let set = |f: &mut settings::Builder, k: &str, v: &str| f.set(k, v).map_err(|e| format!("{k}={v}: {e}"));
            set(&mut flags, "opt_level", "speed")?;
            set(&mut flags, "use_colocated_libcalls", "false")?;
            set(&mut flags, "is_pic", if pic { "true" } else { "false" })?;
            set(&mut flags, "enable_verifier", if cfg!(debug_assertions) { "true" } else { "false" })?;
            let isa_builder = cranelift_native::builder().map_err(|e| format!("host machine is not supported: {e}"))?;
            isa_builder.finish(settings::Flags::new(flags)).map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|reason| CodegenError::Unsupported { kernel: String::new(), target: "cpu".into(), reason })
}

fn isa() -> Result<OwnedTargetIsa> {
    isa_with(false)
}

/// The target features that change generated code (part of the cache key).
fn features(isa: &OwnedTargetIsa) -> String {
    let flags: Vec<String> = isa.isa_flags().iter().map(|v| v.to_string()).collect();
    format!("{} {}", isa.triple(), flags.join(","))
}

fn cache() -> &'static Mutex<HashMap<String, Arc<Code>>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Code>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

fn unsupported(k: &Kernel, reason: String) -> CodegenError {
    CodegenError::Unsupported { kernel: k.name.clone(), target: "cpu".into(), reason }
}

/// Compile `k` to machine code through both caches.
fn compile_cached(k: &Kernel) -> Result<Arc<Code>> {
    opc_ir::verify::verify(k).map_err(|e| unsupported(k, format!("the kernel does not verify: {e}")))?;
    let isa = isa()?;
    let key = cache::key(k, &features(&isa));
    if let Some(c) = cache().lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned() {
        cache::MEMORY_HITS.fetch_add(1, Ordering::Relaxed);
        return Ok(c);
    }
    let t0 = std::time::Instant::now();
    let dir = cache::disk_dir();
    let (blob, source) = match dir.as_deref().and_then(|d| cache::read(d, &key)) {
        Some(b) => {
            cache::DISK_HITS.fetch_add(1, Ordering::Relaxed);
            (b, "disk cache hit")
        }
        None => {
            let b = emit::compile_blob(k, &*isa)?;
            cache::COMPILES.fetch_add(1, Ordering::Relaxed);
            if let Some(d) = &dir {
                if let Err(e) = cache::write(d, &key, &b) {
                    if std::env::var_os("OPC_CPU_TIME").is_some() {
                        eprintln!("cpu cache: cannot write to {}: {e}", d.display());
                    }
                }
            }
            (b, "compiled")
        }
    };
    let mem = loader::load(&blob).map_err(|e| unsupported(k, format!("loading the machine code: {e}")))?;
    // SAFETY: the blob is the program function, compiled with exactly `KernelFn`'s signature
    // (system-V C ABI), its relocations applied by `load`.
    let entry = unsafe { std::mem::transmute::<*const u8, KernelFn>(mem.entry()) };
    let c = Arc::new(Code { entry, arena_bytes: blob.arena_bytes, meta: MetaLayout::new(k), _mem: mem });
    if std::env::var_os("OPC_CPU_TIME").is_some() {
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        eprintln!("cpu compile {:<24} {ms:7.2} ms  arena {:>8} B  ({source})", k.name, c.arena_bytes);
    }
    cache().lock().unwrap_or_else(|e| e.into_inner()).insert(key, c.clone());
    Ok(c)
}

/// Forget this process's in-memory cache (the disk cache stays): the next compile of each kernel
/// loads it from disk or compiles it. For tests and for long-running tuners bounding memory.
pub fn clear_memory_cache() {
    cache().lock().unwrap_or_else(|e| e.into_inner()).clear();
}

impl Target for CpuTarget {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn compile(&self, kernel: &Kernel) -> Result<Arc<dyn Executable>> {
        Ok(self.compile_cpu(kernel)?)
    }

    fn machine(&self) -> String {
        match isa() {
            Ok(isa) => format!("cpu {}", features(&isa)),
            Err(_) => "cpu".into(),
        }
    }
}

impl CpuTarget {
    /// [`Target::compile`] with the concrete type, for [`CpuExecutable::launch_raw`].
    pub fn compile_cpu(&self, kernel: &Kernel) -> Result<Arc<CpuExecutable>> {
        let code = compile_cached(kernel)?;
        Ok(Arc::new(CpuExecutable { kernel: kernel.clone(), for_sites: lower::for_sites(kernel), code }))
    }
}

/// A kernel compiled by [`CpuTarget`].
pub struct CpuExecutable {
    kernel: Kernel,
    /// Error context of each `for` op, indexed by the code the function returns minus one.
    for_sites: Vec<String>,
    code: Arc<Code>,
}

impl CpuExecutable {
    /// Bytes of scratch arena each worker thread allocates for this kernel.
    pub fn arena_bytes(&self) -> usize {
        self.code.arena_bytes
    }
}

impl CpuExecutable {
    /// Launch on tensor data the caller owns: `args` give the dtypes, shapes and scalars (checked
    /// exactly as [`Executable::launch`] checks them, including each tensor's byte count), and
    /// `data[i]` is where tensor `i`'s bytes are read and written instead of `args[i].data`
    /// (ignored for scalars). Outputs are written through `data`, not into `args`.
    ///
    /// # Safety
    /// For every tensor argument `i`, `data[i]` must point to `args[i].data.len()` bytes, valid
    /// for reads and writes for the whole call and not accessed by anything else meanwhile.
    /// (The generated code accesses no byte outside them: the guard-page tests check it.)
    pub unsafe fn launch_raw(&self, args: &[Arg], data: &[*mut u8]) -> Result<()> {
        // SAFETY: the caller's contract is `launch_at`'s.
        unsafe { crate::jit_args::launch_at(self, &self.kernel, args, data) }
    }

}

thread_local! {
    /// This thread's scratch arena for the programs it runs ([`with_arena`]).
    static ARENA: std::cell::RefCell<Vec<u128>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl RunOn for CpuExecutable {
    unsafe fn run<A: LaunchArg>(&self, args: &[A], mut ptrs: Vec<usize>) -> Result<()> {
        let k = &self.kernel;
        let (g, meta) = self.code.meta.fill(k, args, &mut ptrs)?;
        let total = g[0] * g[1] * g[2];
        let words = self.code.arena_bytes.div_ceil(16) + 1;
        let entry = self.code.entry;
        let run = |arena: &mut Vec<u128>, p: usize| -> std::result::Result<(), LaunchError> {
            let pid = [(p % g[0]) as i64, ((p / g[0]) % g[1]) as i64, (p / (g[0] * g[1])) as i64];
            let mut err = 0i64;
            // SAFETY: `ptrs` address the tensors' bytes (this function's contract); `meta`
            // describes their shapes, so every access the generated code makes is bounds-checked
            // against it; the arena has `arena_bytes` bytes, 16-aligned.
            let rc = unsafe { entry(ptrs.as_ptr(), meta.as_ptr(), pid[0], pid[1], pid[2], arena.as_mut_ptr() as *mut u8, &mut err) };
            if rc == 0 {
                return Ok(());
            }
            Err(step_error(k, &self.for_sites, pid, rc, err))
        };
        let program = |p: usize| with_arena(&ARENA, words, 0, |arena| run(arena, p));
        Ok(for_each_program(total, args, &program)?)
    }
}

impl Executable for CpuExecutable {
    fn launch(&self, args: &mut [Arg]) -> Result<()> {
        launch_owned(self, args)
    }

    fn launch_refs(&self, args: &mut [ArgRef<'_>]) -> Result<()> {
        launch_lent(self, args)
    }

    fn kernel(&self) -> &Kernel {
        &self.kernel
    }
}
