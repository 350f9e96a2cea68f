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
//! parallel on rayon, each worker reusing one zeroed scratch arena.
//!
//! **Concurrency contract** (the interpreter's): programs write disjoint elements. Two programs
//! may write the two nibbles of one byte of a packed (`i4` / `e2m1`) tensor: nibble stores are an
//! atomic byte read-modify-write. `atomic_add` is a compare-and-swap loop per element.
//!
//! Environment: `OPC_CPU_TIME=1` prints each kernel's compile time (lowering + Cranelift +
//! linking) and arena size to stderr; `OPC_CPU_DUMP_CLIF=1` prints the CLIF before compiling.
//!
//! **Compile cache.** Compiled code is cached in memory, keyed by the printed IR
//! (`opc_ir::printer::print_kernel`) and the host ISA's features. Not here yet: an on-disk cache
//! (keyed the same way plus the compiler version) and the LLVM tier for peak throughput; both
//! plug in behind this target without changing the lowering's loop-and-buffer contract.

mod dot;
mod elem;
mod helpers;
mod lower;
mod memory;
mod reduce;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cranelift_codegen::ir::{types, AbiParam, Signature};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::Context;
use cranelift_frontend::FunctionBuilderContext;
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, Linkage, Module};
use opc_ir::launch::{self, LaunchError};
use opc_ir::{Arg, Kernel, ParamKind};
use rayon::prelude::*;

use crate::{CodegenError, Executable, Result, Target};
use helpers::Helper;

/// The Cranelift JIT target (`--target cpu`).
pub struct CpuTarget;

/// Where each launch-time value sits in the `meta` array.
#[derive(Clone, Debug)]
pub(crate) struct MetaLayout {
    /// First slot of the dims (one per `SymId`).
    pub dims: usize,
    /// Three slots: the grid extents.
    pub grid: usize,
    /// Per parameter: its scalar's slot, or the first of a tensor's `rank` shape then `rank` stride slots.
    pub params: Vec<usize>,
    pub len: usize,
}

impl MetaLayout {
    fn new(k: &Kernel) -> MetaLayout {
        let dims = 0;
        let grid = k.dims.len();
        let mut next = grid + 3;
        let mut params = vec![];
        for p in &k.params {
            params.push(next);
            next += match &p.kind {
                ParamKind::Scalar { .. } => 1,
                ParamKind::Tensor { dims, .. } => 2 * dims.len(),
            };
        }
        MetaLayout { dims, grid, params, len: next }
    }
}

type KernelFn = unsafe extern "C" fn(*const usize, *const i64, i64, i64, i64, *mut u8, *mut i64) -> i32;

/// Machine code of one kernel, shared by every executable compiled from the same IR.
struct Code {
    entry: KernelFn,
    arena_bytes: usize,
    meta: MetaLayout,
    /// Owns the code memory; freed on drop.
    module: Mutex<Option<JITModule>>,
}

impl Drop for Code {
    fn drop(&mut self) {
        if let Some(m) = self.module.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
            // SAFETY: `Code` is being dropped, so no executable can call `entry` any more.
            unsafe { m.free_memory() };
        }
    }
}

/// The host ISA with opc's flags, built once.
fn isa() -> Result<OwnedTargetIsa> {
    static ISA: OnceLock<std::result::Result<OwnedTargetIsa, String>> = OnceLock::new();
    ISA.get_or_init(|| {
        let mut flags = settings::builder();
        let set = |f: &mut settings::Builder, k: &str, v: &str| f.set(k, v).map_err(|e| format!("{k}={v}: {e}"));
        set(&mut flags, "opt_level", "speed")?;
        set(&mut flags, "use_colocated_libcalls", "false")?;
        set(&mut flags, "is_pic", "false")?;
        set(&mut flags, "enable_verifier", if cfg!(debug_assertions) { "true" } else { "false" })?;
        let isa_builder = cranelift_native::builder().map_err(|e| format!("host machine is not supported: {e}"))?;
        isa_builder.finish(settings::Flags::new(flags)).map_err(|e| e.to_string())
    })
    .clone()
    .map_err(|reason| CodegenError::Unsupported { kernel: String::new(), target: "cpu".into(), reason })
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

/// Compile `k` to machine code (no cache).
fn compile_code(k: &Kernel) -> Result<Code> {
    opc_ir::verify::verify(k).map_err(|e| unsupported(k, format!("the kernel does not verify: {e}")))?;
    let isa = isa()?;
    let mut jb = JITBuilder::with_isa(isa.clone(), default_libcall_names());
    for h in Helper::ALL {
        jb.symbol(h.symbol(), h.address());
    }
    let mut module = JITModule::new(jb);
    let ptr = module.target_config().pointer_type();
    let jit_err = |e: cranelift_module::ModuleError| unsupported(k, format!("Cranelift: {e:?}"));

    let mut helper_ids = vec![];
    for h in Helper::ALL {
        let (params, ret) = h.signature();
        let mut sig = module.make_signature();
        let ty = |t: helpers::Ty| match t {
            helpers::Ty::F32 => types::F32,
            helpers::Ty::I32 => types::I32,
            helpers::Ty::I64 => types::I64,
            helpers::Ty::Ptr => ptr,
        };
        sig.params.extend(params.iter().map(|&t| AbiParam::new(ty(t))));
        sig.returns.extend(ret.map(|t| AbiParam::new(ty(t))));
        helper_ids.push((h, module.declare_function(h.symbol(), Linkage::Import, &sig).map_err(jit_err)?));
    }

    let mut sig: Signature = module.make_signature();
    for t in [ptr, ptr, types::I64, types::I64, types::I64, ptr, ptr] {
        sig.params.push(AbiParam::new(t));
    }
    sig.returns.push(AbiParam::new(types::I32));
    let fid = module.declare_function("opc_kernel", Linkage::Export, &sig).map_err(jit_err)?;
    let mut ctx: Context = module.make_context();
    ctx.func.signature = sig;
    let refs = helper_ids.iter().map(|&(h, id)| (h, module.declare_func_in_func(id, &mut ctx.func))).collect();
    let meta = MetaLayout::new(k);
    let mut fctx = FunctionBuilderContext::new();
    let builder = cranelift_frontend::FunctionBuilder::new(&mut ctx.func, &mut fctx);
    let lowered = lower::lower(k, builder, refs, &meta, isa.frontend_config())?;
    if std::env::var_os("OPC_CPU_DUMP_CLIF").is_some() {
        eprintln!("{}", ctx.func.display());
    }
    module.define_function(fid, &mut ctx).map_err(|e| unsupported(k, format!("Cranelift: {e:?}")))?;
    module.clear_context(&mut ctx);
    module.finalize_definitions().map_err(jit_err)?;
    let code = module.get_finalized_function(fid);
    // SAFETY: the function was just defined with exactly `KernelFn`'s signature (system-V C ABI).
    let entry = unsafe { std::mem::transmute::<*const u8, KernelFn>(code) };
    Ok(Code { entry, arena_bytes: lowered.arena_bytes, meta, module: Mutex::new(Some(module)) })
}

impl Target for CpuTarget {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn compile(&self, kernel: &Kernel) -> Result<Arc<dyn Executable>> {
        let key = format!("{}\n; {}", opc_ir::printer::print_kernel(kernel), features(&isa()?));
        let hit = cache().lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned();
        let code = match hit {
            Some(c) => c,
            None => {
                let t0 = std::time::Instant::now();
                let c = Arc::new(compile_code(kernel)?);
                if std::env::var_os("OPC_CPU_TIME").is_some() {
                    let ms = t0.elapsed().as_secs_f64() * 1e3;
                    eprintln!("cpu compile {:<24} {ms:7.2} ms  arena {:>8} B", kernel.name, c.arena_bytes);
                }
                cache().lock().unwrap_or_else(|e| e.into_inner()).insert(key, c.clone());
                c
            }
        };
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

impl Executable for CpuExecutable {
    fn launch(&self, args: &mut [Arg]) -> Result<()> {
        let k = &self.kernel;
        let dims = launch::bind_dims(k, args)?;
        let g = launch::grid(k, &dims)?;
        let lay = &self.code.meta;
        let mut meta = vec![0i64; lay.len];
        meta[lay.dims..lay.dims + dims.len()].copy_from_slice(&dims);
        for (i, &e) in g.iter().enumerate() {
            meta[lay.grid + i] = e as i64;
        }
        let mut ptrs = vec![0usize; args.len()];
        for (pi, a) in args.iter_mut().enumerate() {
            let at = lay.params[pi];
            match a {
                Arg::Tensor(t) => {
                    let r = t.shape.len();
                    let mut stride = 1i64;
                    for d in (0..r).rev() {
                        meta[at + d] = t.shape[d] as i64;
                        meta[at + r + d] = stride;
                        stride = stride.wrapping_mul(t.shape[d] as i64);
                    }
                    ptrs[pi] = t.data.as_mut_ptr() as usize;
                }
                Arg::F32(x) => meta[at] = x.to_bits() as i64,
                Arg::I32(x) => meta[at] = *x as i64,
                Arg::Bool(b) => meta[at] = *b as i64,
            }
        }
        let total = g[0] * g[1] * g[2];
        let words = self.code.arena_bytes.div_ceil(16) + 1;
        let entry = self.code.entry;
        let run = |arena: &mut Vec<u128>, p: usize| -> std::result::Result<(), LaunchError> {
            let pid = [(p % g[0]) as i64, ((p / g[0]) % g[1]) as i64, (p / (g[0] * g[1])) as i64];
            let mut err = 0i64;
            // SAFETY: `ptrs` point into the argument tensors, which stay mutably borrowed for the
            // whole launch; `meta` describes their shapes, so every access the generated code makes
            // is bounds-checked against it; the arena has `arena_bytes` bytes, 16-aligned.
            let rc = unsafe { entry(ptrs.as_ptr(), meta.as_ptr(), pid[0], pid[1], pid[2], arena.as_mut_ptr() as *mut u8, &mut err) };
            if rc == 0 {
                return Ok(());
            }
            let site = self.for_sites.get(rc as usize - 1).map(String::as_str).unwrap_or("op `for`");
            Err(LaunchError::Exec {
                kernel: k.name.clone(),
                msg: format!("program ({}, {}, {}): {site}: step must be positive, got {err}", pid[0], pid[1], pid[2]),
            })
        };
        (0..total).into_par_iter().try_for_each_init(|| vec![0u128; words], run)?;
        Ok(())
    }

    fn kernel(&self) -> &Kernel {
        &self.kernel
    }
}
