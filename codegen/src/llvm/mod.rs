//! The `llvm` target (cargo feature `llvm22-1`): tile IR → LLVM 22 IR → an ELF object loaded in
//! process (`object_load.rs`), tuned for the host CPU. The fast path of the CPU backend; `cpu`
//! (Cranelift) is the zero-dependency one. Same lowering contract as `cpu`: one native function
//! per kernel that runs *one program*, `i32 opc_kernel(ptr tensors, ptr meta, i64 pid0, i64 pid1, i64 pid2,
//! ptr arena, ptr err)`, with `meta` laid out by [`MetaLayout`] (bound dims, grid, scalar
//! arguments, each tensor's shape and element strides), a per-worker scratch `arena`, and a
//! nonzero result `k + 1` when the `k`-th `for` met a non-positive step (its value in `*err`).
//!
//! **Why textual IR.** `lower.rs` prints the module as LLVM assembly and inkwell parses it
//! (`Context::create_module_from_ir`). The lowering is then plain string building over one small
//! writer (`text.rs`) instead of thousands of builder calls with lifetimes tied to a context;
//! element semantics are written once for scalars and any vector width (the type is just text);
//! and the module can be printed (`OPC_LLVM_DUMP=1`), diffed, and fed to `opt` / `llc` unchanged
//! when tuning. Parsing costs a few milliseconds, small next to O3.
//!
//! **Pipeline.** verify → `lower.rs` (loop-and-buffer form, see its docs) → parse → the new pass
//! manager's `default<O3>` with a target machine for the host CPU name *and* its feature string
//! (`TargetMachine::get_host_cpu_features`: the name alone does not say which AVX-512 / AMX
//! extensions this machine has) → codegen at `-O3` into an ELF relocatable object (static
//! relocations, large code model) → `object_load.rs` maps it executable. Every function carries
//! the same `target-cpu` / `target-features` attributes and `prefer-vector-width=512`, so
//! codegen uses zmm registers, FMA and `avx512bf16` where `dot.rs` asks for them.
//!
//! Files: `lower.rs` (driver: reprs, buffers, loop nests, `for` / `if`), `memory.rs` (masked
//! vector and element-wise global access), `dot.rs` (micro-kernels), `pack.rs` (vectorized
//! transposes and bf16 pair packing of `dot` operands), `kloop.rs` (fused K loops),
//! `kloop_stream.rs` (their bf16 form that reads the weights in place), `live.rs` (their
//! ragged row tiles), `amx.rs` (AMX tiles), `fuse.rs` (reductions fused over elementwise
//! trees), `fuse_block.rs` (block-scaled sums, e.g. MXFP4 GEMVs) with `block_pairs.rs` (an MXFP4
//! block against bf16 activations as one `vdpbf16ps`, and the codes' prefetch), `fuse_group.rs`
//! (reductions sharing values fused into one loop), `reduce.rs`, `elem.rs`
//! (element semantics), `helpers.rs` (runtime functions), `text.rs` (the IR writer).
//!
//! **Numerics** (see `elem.rs`, `dot.rs`, `reduce.rs`): elementwise ops, casts, loads and stores
//! are bit-identical to the interpreter. Two places change rounding and are tested with
//! tolerances: `dot` (FMA per step; `vdpbf16ps` or AMX `tdpbf16ps` pairs for bf16) and `sum` along the last dim
//! (16 interleaved partial sums).
//!
//! **Launch** mirrors the interpreter: [`opc_ir::launch::bind_dims`] and [`opc_ir::launch::grid`]
//! first (identical launch errors), then the programs run in parallel on the launch pool
//! (`launch_pool.rs`), each thread with one 64-byte aligned arena, kept across programs and
//! launches. Concurrency contract as `cpu`: programs write disjoint elements; nibble stores are
//! atomic byte read-modify-writes; `atomic_add` is a compare-and-swap loop.
//!
//! **GEMM.** A `for` that is a K sweep of one `dot` over two loads (every DSL GEMM) is lowered
//! by `kloop.rs` as a cache-blocked GEMM: packed `KC`-deep panels, software prefetch, the
//! register micro-kernels of `dot.rs`, and AMX tiles (`amx.rs`) for bf16 when the host's
//! features include `amx-tile` / `amx-bf16` and Linux grants the tile state (`arch_prctl`).
//!
//! **Not here yet**: fusing chains of elementwise ops into one loop (each op is its own vector
//! loop over its tile, which costs attention about as much as its two `dot`s), AMX for `dot`s
//! outside fused K loops, and packing panels across programs.
//!
//! **Cache**: loaded code is kept in memory, keyed by the printed IR and the host CPU name and
//! features; the objects are also kept on disk (`$OPC_CACHE_DIR/llvm`, `~/.cache/opc/llvm`;
//! `off` disables it; entries, atomic writes and corruption checks as `disk_cache.rs`), keyed by
//! the generated module text (every lowering decision, knob and host feature is in it), the
//! optimization pipeline and the LLVM version, so a second process loads a kernel in well under
//! a millisecond instead of running LLVM (30 to 150 ms). [`cache_stats`] counts the traffic.
//! `OPC_LLVM_TIME=1` prints each kernel's compile time (lower / O3 + codegen or disk / load);
//! `OPC_LLVM_DUMP=1` / `OPC_LLVM_DUMP_OPT=1` print the module before / after optimization;
//! `OPC_PERF_MAP=1` names the kernels for `perf` ([`perf_map`]);
//! `OPC_LLVM_PASSES` replaces the `default<O3>` pipeline and `OPC_LLVM_UNROLL=1` turns LLVM's loop
//! unrolling back on (both for tuning experiments).

mod amx;
mod block_evenodd;
mod block_pairs;
mod dot;
mod elem;
mod fuse;
mod fuse_block;
mod fuse_gemv;
mod fuse_group;
mod helpers;
mod kloop;
mod kloop_stream;
mod live;
mod lower;
mod memory;
mod object_load;
mod pack;
mod reduce;
mod text;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use inkwell::context::Context;
use inkwell::memory_buffer::MemoryBuffer;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{CodeModel, FileType, InitializationConfig, RelocMode, Target as LlvmTarget_, TargetMachine};
use inkwell::OptimizationLevel;
use opc_ir::launch::LaunchError;
use opc_ir::{Arg, ArgRef, Kernel, LaunchArg};

pub(crate) use crate::jit_args::MetaLayout;
use crate::jit_args::{for_each_program, launch_lent, launch_owned, step_error, with_arena, RunOn};
use crate::{CodegenError, Executable, Result, Target};
use helpers::Helper;

/// The LLVM JIT target (`--target llvm`).
pub struct LlvmTarget;


type KernelFn = unsafe extern "C" fn(*const usize, *const i64, i64, i64, i64, *mut u8, *mut i64) -> i32;

/// The host CPU as LLVM sees it.
struct Host {
    triple: String,
    cpu: String,
    features: String,
    data_layout: String,
}

/// A tuning knob from the environment (`OPC_LLVM_*`): its value when set and parseable.
fn knob<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok()?.parse().ok()
}

fn host() -> Result<&'static Host> {
    static HOST: OnceLock<std::result::Result<Host, String>> = OnceLock::new();
    HOST.get_or_init(|| {
        LlvmTarget_::initialize_native(&InitializationConfig::default())?;
        let triple = TargetMachine::get_default_triple();
        let cpu = TargetMachine::get_host_cpu_name().to_string();
        let features = TargetMachine::get_host_cpu_features().to_string();
        let target = LlvmTarget_::from_triple(&triple).map_err(|e| e.to_string())?;
        let tm = target
            .create_target_machine(&triple, &cpu, &features, OptimizationLevel::Aggressive, RelocMode::Default, CodeModel::JITDefault)
            .ok_or("LLVM cannot create a target machine for this host")?;
        let data_layout = tm.get_target_data().get_data_layout().as_str().to_string_lossy().into_owned();
        Ok(Host { triple: triple.as_str().to_string_lossy().into_owned(), cpu, features, data_layout })
    })
    .as_ref()
    .map_err(|reason| CodegenError::Unsupported { kernel: String::new(), target: "llvm".into(), reason: reason.clone() })
}

impl Host {
    fn has(&self, feature: &str) -> bool {
        self.features.split(',').any(|f| f == format!("+{feature}"))
    }

    /// What the generated code may use on this host: AMX only once Linux has granted the tile
    /// data state to this process.
    fn isa(&self) -> lower::Isa {
        let amx = self.has("amx-tile") && self.has("amx-bf16") && amx::amx_permitted();
        lower::Isa { bf16: self.has("avx512bf16"), avx512: self.has("avx512f"), vbmi: self.has("avx512vbmi"), amx }
    }
}

/// Machine code of one kernel, shared by every executable compiled from the same IR.
struct Code {
    entry: KernelFn,
    arena_bytes: usize,
    meta: MetaLayout,
    /// Keeps the code mapped.
    _loaded: object_load::Loaded,
}

fn cache() -> &'static Mutex<HashMap<String, Arc<Code>>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Code>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

fn unsupported(k: &Kernel, reason: String) -> CodegenError {
    CodegenError::Unsupported { kernel: k.name.clone(), target: "llvm".into(), reason }
}

/// The whole module text of a kernel: the lowered function and its side functions, helper
/// declarations, attributes.
fn module_text(k: &Kernel, host: &Host, lowered: &lower::Lowered) -> String {
    let mut s = String::new();
    s.push_str(&format!("; opc kernel `{}`\n", k.name));
    s.push_str(&format!("target datalayout = \"{}\"\ntarget triple = \"{}\"\n\n", host.data_layout, host.triple));
    s.push_str(
        "define i32 @opc_kernel(ptr noalias nocapture readonly %tensors, ptr noalias nocapture readonly %meta, \
         i64 %pid0, i64 %pid1, i64 %pid2, ptr noalias align 64 %arena, ptr noalias nocapture %err) #0 {\n",
    );
    s.push_str(&lowered.text);
    s.push_str("}\n\n");
    s.push_str(&lowered.side_fns);
    for h in Helper::ALL {
        s.push_str(&h.declaration());
        s.push('\n');
    }
    s.push_str(&elem::e8m0_table());
    s.push_str(&format!(
        "\nattributes #0 = {{ nounwind \"target-cpu\"=\"{}\" \"target-features\"=\"{}\" \"prefer-vector-width\"=\"512\" \"min-legal-vector-width\"=\"512\" }}\n",
        host.cpu, host.features
    ));
    s.push_str("attributes #1 = { nounwind willreturn memory(none) }\nattributes #2 = { nounwind }\n!0 = !{}\n");
    s
}

/// Compile `k` to machine code, through the disk cache (the memory cache is the caller's).
fn compile_code(k: &Kernel) -> Result<Code> {
    opc_ir::verify::verify(k).map_err(|e| unsupported(k, format!("the kernel does not verify: {e}")))?;
    let host = host()?;
    let t0 = Instant::now();
    let meta = MetaLayout::new(k);
    let lowered = lower::lower(k, &meta, host.isa())?;
    let text = module_text(k, host, &lowered);
    if std::env::var_os("OPC_LLVM_DUMP").is_some() {
        eprintln!("{text}");
    }
    let t1 = Instant::now();
    let arena_bytes = lowered.arena_bytes;
    // The key (the whole module text) is built only when the disk cache is on.
    let disk = crate::disk_cache::target_dir("llvm").map(|d| (d, cache_key(&text)));
    let cached = disk.as_ref().and_then(|(d, key)| match crate::disk_cache::read(d, CACHE_MAGIC, key) {
        crate::disk_cache::Lookup::Hit(obj) => Some(obj),
        crate::disk_cache::Lookup::Miss => None,
        crate::disk_cache::Lookup::Corrupt => {
            CACHE_CORRUPT.fetch_add(1, Ordering::Relaxed);
            None
        }
    });
    let from_disk = cached.is_some();
    let obj = match cached {
        Some(obj) => obj,
        None => {
            let obj = emit_object(k, host, &text)?;
            if let Some((d, key)) = &disk {
                if crate::disk_cache::write(d, CACHE_MAGIC, key, &obj).is_ok() {
                    CACHE_WRITES.fetch_add(1, Ordering::Relaxed);
                }
            }
            obj
        }
    };
    let t2 = Instant::now();
    let loaded = object_load::load(&obj).map_err(|e| unsupported(k, format!("loading the compiled object: {e}")))?;
    (if from_disk { &CACHE_DISK_HITS } else { &CACHE_COMPILES }).fetch_add(1, Ordering::Relaxed);
    // SAFETY: `opc_kernel` is defined with exactly `KernelFn`'s signature (C calling convention).
    let entry = unsafe { std::mem::transmute::<usize, KernelFn>(loaded.entry) };
    if std::env::var_os("OPC_PERF_MAP").is_some() {
        perf_map(k, &loaded, &obj);
    }
    if std::env::var_os("OPC_LLVM_TIME").is_some() {
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
        let t3 = Instant::now();
        eprintln!(
            "llvm compile {:<24} lower {:6.1} ms  {} {:6.1} ms  load {:6.1} ms  total {:6.1} ms  arena {} B",
            k.name,
            ms(t0, t1),
            if from_disk { "disk cache " } else { "O3+codegen " },
            ms(t1, t2),
            ms(t2, t3),
            ms(t0, t3),
            arena_bytes
        );
    }
    Ok(Code { entry, arena_bytes, meta, _loaded: loaded })
}

/// Record the loaded kernel for `perf` (`OPC_PERF_MAP=1`): a line `ADDR SIZE opc:NAME#N` in
/// `/tmp/perf-PID.map` (and `opc:NAME#N:FN` for each side function), which `perf report` reads
/// to name samples in generated code, and the object itself as `/tmp/opc-perf-PID/NAME#N.o`:
/// the `+0x..` offsets of `perf script -F ip,sym,symoff` are offsets into that function, which
/// `objdump -d` lists by name. Best effort: a failed write only loses the names.
fn perf_map(k: &Kernel, loaded: &object_load::Loaded, obj: &[u8]) {
    use std::io::Write;
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let pid = std::process::id();
    let name = format!("{}#{}", k.name, SEQ.fetch_add(1, Ordering::Relaxed));
    let dir = std::path::PathBuf::from(format!("/tmp/opc-perf-{pid}"));
    let _ = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(dir.join(format!("{name}.o")), obj));
    let mut line = format!("{:x} {:x} opc:{name}\n", loaded.entry, loaded.entry_size);
    for (f, at, size) in loaded.others.iter().filter(|o| o.2 > 0) {
        line += &format!("{at:x} {size:x} opc:{name}:{f}\n");
    }
    let _ = std::fs::OpenOptions::new().create(true).append(true).open(format!("/tmp/perf-{pid}.map")).and_then(|mut f| f.write_all(line.as_bytes()));
}

/// Magic of the llvm target's disk cache entries (`disk_cache.rs`); the payload is the ELF object.
const CACHE_MAGIC: &[u8; 8] = b"OPCLLVM\x01";

/// The disk cache key of a kernel's module text: the text itself (the generated IR, which holds
/// the lowering's every decision, the `OPC_LLVM_*` lowering knobs' effects and the host CPU and
/// features), the optimization pipeline and unrolling switch, and the LLVM major version.
fn cache_key(module_text: &str) -> String {
    let (pipeline, unroll) = optimization();
    format!("opc-llvm-cache 1\nllvm 22\npipeline {pipeline} unroll {unroll}\n{module_text}")
}

/// The optimization `emit_object` runs: the pass pipeline (`OPC_LLVM_PASSES`, else
/// `default<O3>`) and whether LLVM unrolls loops (`OPC_LLVM_UNROLL`). Part of the cache key.
fn optimization() -> (String, bool) {
    (std::env::var("OPC_LLVM_PASSES").unwrap_or_else(|_| "default<O3>".into()), std::env::var_os("OPC_LLVM_UNROLL").is_some())
}

static CACHE_COMPILES: AtomicU64 = AtomicU64::new(0);
static CACHE_DISK_HITS: AtomicU64 = AtomicU64::new(0);
static CACHE_WRITES: AtomicU64 = AtomicU64::new(0);
static CACHE_CORRUPT: AtomicU64 = AtomicU64::new(0);

/// Counters of this process's llvm disk cache traffic (kernels compiled by LLVM, loaded from
/// disk, entries written, bad entries ignored).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub compiles: u64,
    pub disk_hits: u64,
    pub disk_writes: u64,
    pub corrupt: u64,
}

/// This process's llvm cache counters so far.
pub fn cache_stats() -> CacheStats {
    let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
    CacheStats { compiles: g(&CACHE_COMPILES), disk_hits: g(&CACHE_DISK_HITS), disk_writes: g(&CACHE_WRITES), corrupt: g(&CACHE_CORRUPT) }
}

/// Optimize `text` (a module) for `host` and emit it as an ELF relocatable object for
/// `object_load`.
fn emit_object(k: &Kernel, host: &Host, text: &str) -> Result<Vec<u8>> {
    let context = Context::create();
    let buf = MemoryBuffer::create_from_memory_range_copy(text.as_bytes(), &k.name);
    let module = context.create_module_from_ir(buf).map_err(|e| unsupported(k, format!("LLVM rejected the generated IR: {e}")))?;
    let target = LlvmTarget_::from_triple(&TargetMachine::get_default_triple()).map_err(|e| unsupported(k, e.to_string()))?;
    // Static relocations and the large code model: every reference outside a section is a
    // 64-bit absolute address, which the loader patches wherever the code lands.
    let tm = target
        .create_target_machine(&TargetMachine::get_default_triple(), &host.cpu, &host.features, OptimizationLevel::Aggressive, RelocMode::Static, CodeModel::Large)
        .ok_or_else(|| unsupported(k, "LLVM cannot create a target machine for this host".into()))?;
    let opts = PassBuilderOptions::create();
    opts.set_loop_vectorization(true);
    opts.set_loop_slp_vectorization(true);
    // Loops are already vectorized and blocked by the lowering; unrolling them mostly costs
    // compile time (about a third of it on attention) for no measurable speed.
    let (pipeline, unroll) = optimization();
    opts.set_loop_unrolling(unroll);
    module.run_passes(&pipeline, &tm, opts).map_err(|e| unsupported(k, format!("LLVM optimization failed: {e}")))?;
    if std::env::var_os("OPC_LLVM_DUMP_OPT").is_some() {
        eprintln!("{}", module.print_to_string().to_string());
    }
    let obj = tm.write_to_memory_buffer(&module, FileType::Object).map_err(|e| unsupported(k, format!("LLVM code generation failed: {e}")))?;
    Ok(obj.as_slice().to_vec())
}

impl Target for LlvmTarget {
    fn name(&self) -> &'static str {
        "llvm"
    }

    fn compile(&self, kernel: &Kernel) -> Result<Arc<dyn Executable>> {
        Ok(self.compile_llvm(kernel)?)
    }

    fn machine(&self) -> String {
        match host() {
            Ok(h) => format!("llvm {} {} {}", h.triple, h.cpu, h.features),
            Err(_) => "llvm".into(),
        }
    }
}

impl LlvmTarget {
    /// [`Target::compile`], keeping the concrete type (for [`LlvmExecutable::launch_raw`]).
    pub fn compile_llvm(&self, kernel: &Kernel) -> Result<Arc<LlvmExecutable>> {
        let host = host()?;
        let key = format!("{}\n; {} {}", opc_ir::printer::print_kernel(kernel), host.cpu, host.features);
        let hit = cache().lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned();
        let code = match hit {
            Some(c) => c,
            None => {
                let c = Arc::new(compile_code(kernel)?);
                cache().lock().unwrap_or_else(|e| e.into_inner()).insert(key, c.clone());
                c
            }
        };
        Ok(Arc::new(LlvmExecutable { kernel: kernel.clone(), for_sites: lower::for_sites(kernel), code }))
    }
}

/// Generated code as LLVM assembly, before optimization (for inspection and tests).
pub fn emit_ir(kernel: &Kernel) -> Result<String> {
    opc_ir::verify::verify(kernel).map_err(|e| unsupported(kernel, format!("the kernel does not verify: {e}")))?;
    let host = host()?;
    let lowered = lower::lower(kernel, &MetaLayout::new(kernel), host.isa())?;
    Ok(module_text(kernel, host, &lowered))
}

/// Native assembly of `kernel` optimized and compiled for another x86-64 CPU: `cpu` (an LLVM
/// CPU name) with the LLVM feature string `features` (e.g. `+avx512f,+avx512bf16,+amx-tile,
/// +amx-bf16`), which also decides the instruction set the lowering uses. For checking code
/// paths this host cannot run (AMX on a host without it); nothing is executed.
pub fn emit_asm_for(kernel: &Kernel, cpu: &str, features: &str) -> Result<String> {
    opc_ir::verify::verify(kernel).map_err(|e| unsupported(kernel, format!("the kernel does not verify: {e}")))?;
    let native = host()?;
    let target_host = Host { triple: native.triple.clone(), cpu: cpu.into(), features: features.into(), data_layout: native.data_layout.clone() };
    let isa = lower::Isa { bf16: target_host.has("avx512bf16"), avx512: target_host.has("avx512f"), vbmi: target_host.has("avx512vbmi"), amx: target_host.has("amx-tile") && target_host.has("amx-bf16") };
    let lowered = lower::lower(kernel, &MetaLayout::new(kernel), isa)?;
    let text = module_text(kernel, &target_host, &lowered);
    let context = Context::create();
    let buf = MemoryBuffer::create_from_memory_range_copy(text.as_bytes(), &kernel.name);
    let module = context.create_module_from_ir(buf).map_err(|e| unsupported(kernel, format!("LLVM rejected the generated IR: {e}")))?;
    let triple = TargetMachine::get_default_triple();
    let tm = LlvmTarget_::from_triple(&triple)
        .map_err(|e| unsupported(kernel, e.to_string()))?
        .create_target_machine(&triple, cpu, features, OptimizationLevel::Aggressive, RelocMode::Default, CodeModel::Default)
        .ok_or_else(|| unsupported(kernel, format!("LLVM cannot create a target machine for `{cpu}` `{features}`")))?;
    let opts = PassBuilderOptions::create();
    opts.set_loop_vectorization(true);
    opts.set_loop_slp_vectorization(true);
    module.run_passes("default<O3>", &tm, opts).map_err(|e| unsupported(kernel, format!("LLVM optimization failed: {e}")))?;
    let asm = tm.write_to_memory_buffer(&module, FileType::Assembly).map_err(|e| unsupported(kernel, format!("LLVM codegen: {e}")))?;
    Ok(String::from_utf8_lossy(asm.as_slice()).into_owned())
}

/// A kernel compiled by [`LlvmTarget`].
pub struct LlvmExecutable {
    kernel: Kernel,
    for_sites: Vec<String>,
    code: Arc<Code>,
}

impl LlvmExecutable {
    /// Bytes of scratch arena each worker thread allocates for this kernel.
    pub fn arena_bytes(&self) -> usize {
        self.code.arena_bytes
    }

    /// Launch on tensor data the caller owns, as [`CpuExecutable::launch_raw`](crate::cpu::CpuExecutable::launch_raw):
    /// `args` give the dtypes, shapes and scalars, `data[i]` is where tensor `i`'s bytes are read
    /// and written (the guard-page tests place every tensor against an inaccessible page).
    ///
    /// # Safety
    /// For every tensor argument `i`, `data[i]` must point to `args[i].data.len()` bytes, valid
    /// for reads and writes for the whole call and not accessed by anything else meanwhile.
    pub unsafe fn launch_raw(&self, args: &[Arg], data: &[*mut u8]) -> Result<()> {
        // SAFETY: the caller's contract is `launch_at`'s.
        unsafe { crate::jit_args::launch_at(self, &self.kernel, args, data) }
    }
}

thread_local! {
    /// This thread's scratch arena for the programs it runs ([`with_arena`]).
    static ARENA: std::cell::RefCell<Vec<Line>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One 64-byte line of a worker's arena (the alignment the generated code assumes).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

impl RunOn for LlvmExecutable {
    unsafe fn run<A: LaunchArg>(&self, args: &[A], mut ptrs: Vec<usize>) -> Result<()> {
        let k = &self.kernel;
        let (g, meta) = self.code.meta.fill(k, args, &mut ptrs)?;
        let total = g[0] * g[1] * g[2];
        let lines = self.code.arena_bytes.div_ceil(64) + 1;
        let entry = self.code.entry;
        let run = |arena: &mut Vec<Line>, p: usize| -> std::result::Result<(), LaunchError> {
            let pid = [(p % g[0]) as i64, ((p / g[0]) % g[1]) as i64, (p / (g[0] * g[1])) as i64];
            let mut err = 0i64;
            // SAFETY: `ptrs` point into the argument tensors (this function's contract); `meta`
            // describes their shapes, and every global access the generated code makes is checked against it (masked lanes never touch memory); the arena has
            // `arena_bytes` bytes, 64-byte aligned.
            let rc = unsafe { entry(ptrs.as_ptr(), meta.as_ptr(), pid[0], pid[1], pid[2], arena.as_mut_ptr() as *mut u8, &mut err) };
            if rc == 0 {
                return Ok(());
            }
            Err(step_error(k, &self.for_sites, pid, rc, err))
        };
        // A fresh arena per launch would page-fault in up to a MiB of GEMM panels every time.
        let program = |p: usize| with_arena(&ARENA, lines, Line([0; 64]), |arena| run(arena, p));
        Ok(for_each_program(total, args, &program)?)
    }
}

impl Executable for LlvmExecutable {
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
