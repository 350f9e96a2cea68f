//! The `ptx` target: tile IR → PTX text for NVIDIA GPUs (`sm_80`, `sm_86`, `sm_89`, `sm_90`,
//! `sm_90a`), assembled by the driver's JIT (or `ptxas`) at load time.
//!
//! **Why PTX text, not LLVM NVPTX.** The renderer writes PTX directly: it needs no system
//! LLVM (so `cargo test` builds and checks it anywhere, and CI only adds `ptxas` to assemble
//! the output), it controls exactly what is emitted — `.rn` on every float op so nothing is
//! contracted into an FMA the interpreter does not do, the f16/bf16 rounding after each op,
//! `mma.sync` / `ldmatrix` / `bar.sync` placement — and the header comes from the arch
//! ([`Arch`]), never from patching text afterwards. The cost is that PTX-level optimizations
//! (unrolling, scheduling, register allocation) are left to `ptxas`, which does them well.
//!
//! **Lowering** (`lower.rs`, with `elem.rs`, `math.rs`, `memory.rs`, `reduce.rs`, `dot.rs`):
//! one program of the level-1 grid is one CTA of `T` threads (128, or 256 when a tile has
//! ≥ 8192 elements); the grid is the kernel's grid block evaluated at launch. The CTA's
//! threads execute every tile op cooperatively: elementwise work on registers distributed
//! round-robin over the threads, cross-thread ops (broadcast, permute, reductions, scans,
//! gathers, `dot` operands) through shared-memory buffers, with `bar.sync` only where a
//! thread may read what another wrote. `dot` on f16/bf16 uses `mma.sync.m16n8k16` fed by
//! `ldmatrix` (sm_80 and sm_90a alike); on i8/u8 `mma.sync.m16n8k32` and on i4 (`int4_gemm`)
//! `mma.sync.m16n8k64`, from K-contiguous packed operands (`dot.rs`, layouts in `frag.rs`).
//! Every global access is bounds-checked against the
//! launch-time shape and the mask, so the generated code never touches memory out of bounds.
//! Numerics follow the interpreter bit for bit except the transcendental functions (see
//! `math.rs`) and tensor-core `dot`s (see `dot.rs`).
//!
//! **Memory plan** (`plan.rs`): shared buffers are packed by liveness; up to 48 KiB is a
//! static `.shared` array, more is dynamic shared memory that the loader opts into (the
//! manifest's `shared_bytes`), bounded by the arch's per-CTA limit.
//!
//! **Pipelined GEMM loops** (`gemm.rs`, `wgmma.rs`, layouts in `swizzle.rs`): a `for` that
//! only loads two tiles and accumulates their `dot` is replaced by a mainloop with the
//! accumulator in fragment registers (integer loops, such as `int4_gemm`'s, always take the
//! `mma.sync` one, `m16n8k32`/`m16n8k64` on packed tiles copied as they lie in memory): on `sm_80` (and wherever `wgmma` does not apply) a
//! 3-stage `cp.async` ring in XOR-swizzled shared memory read by `ldmatrix` into `mma.sync`;
//! on `sm_90a` a warp-specialized loop (one producer warpgroup issuing TMA into a 4-stage
//! ring guarded by full/empty mbarriers, `BM/64` consumer warpgroups issuing `wgmma` on
//! swizzled shared-memory descriptors). Ragged edges: zero fill (`cp.async` element fallback,
//! TMA out-of-bounds fill); the epilogue's stores are the usual bounds-checked ones. With
//! `Features::persistent` (`persistent.rs`, off by default) the launch has `min(programs, SMs)`
//! CTAs walking the grid with a static scheduler; the ring lives across programs and the
//! producer issues the next program's first k-blocks during this program's epilogue.
//!
//! **FA3 attention loops** (`attn.rs`, layouts in `frag.rs`): on `sm_90a`, a KV walk whose body
//! holds `dot(Q, trans(K))` and `dot(P, V, acc)` around elementwise ops, row reductions and
//! `if`s (flash attention's online softmax and masks, recognized by structure, not by name)
//! becomes a warp-specialized loop: one producer warpgroup issuing 3-D TMA copies of K and V
//! into a 2-stage ring guarded by separate K / V full barriers and an empty barrier, `BM/64`
//! consumer warpgroups running `wgmma` for S (both operands from 128-byte swizzled
//! descriptors; where registers allow, the next tile's S is issued before this tile's softmax),
//! the softmax on the `wgmma` accumulator fragments in registers (quad shuffles for row
//! reductions), and `wgmma` for `P·V` with P packed into A registers; `setmaxnreg`
//! re-partitions registers with two consumer warpgroups. The output buffers reuse the region
//! after the loop, so BM = BN = D = 128 fits. The manifest's `fa3` object gives its tile
//! sizes, barriers and shared layout.
//!
//! **Staged loop loads** (`stage.rs`): in other loops (flash attention on `sm_80` or without
//! TMA, the split-KV decode), the 16-bit tiles loaded only to feed `dot` are double-buffered by
//! `cp.async` (the copy of tile `j + 1` runs while tile `j` is computed, ragged tails
//! zero-filled), in the padded layout the `mma.sync` path reads in place; the rest of the body
//! (online softmax, masks) is lowered op by op. Dropped when the rings would not fit the arch's
//! shared memory.
//!
//! **Not done yet** (documented, not stubbed): FA3's softmax/`P·V` overlap and ping-pong
//! consumer scheduling (see `attn.rs`), S/P kept as `mma.sync` fragments on `sm_80` (they go
//! through shared memory, op by op), 8-bit `wgmma`, a faster element path for 4-bit tiles whose
//! rows are not 16-byte aligned (odd K, or K not a multiple of 32: `chunk.rs` copies those
//! chunks byte by byte), persistent FA3, warp-parallel reductions in the general lowering.
//!
//! The loader (`runtime.rs`, cargo feature `cuda`) loads the PTX through the CUDA driver API.

mod attn;
mod chunk;
mod dot;
mod elem;
mod emit;
mod frag;
mod gemm;
mod lower;
mod math;
mod memory;
mod persistent;
mod plan;
mod reduce;
mod stage;
mod swizzle;
mod wgmma;
#[cfg(feature = "cuda")]
pub mod runtime;
#[cfg(feature = "cuda")]
mod tmap;

use opc_ir::{Kernel, OpKind, ParamKind};
use serde_json::{json, Value};

use crate::artifact::{base_manifest, Artifact, RenderOptions, Renderer};
use crate::{CodegenError, Result};

pub use attn::AttnInfo;
pub use persistent::{ctas as persistent_ctas, schedule as persistent_schedule};
pub use lower::for_sites;

/// A GPU architecture the renderer targets: the PTX ISA version and target it declares, and
/// its shared-memory limit per CTA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arch {
    pub name: &'static str,
    pub ptx_version: &'static str,
    /// Bytes of shared memory one CTA may use (with the dynamic opt-in).
    pub max_shared: u32,
}

/// The architectures `--arch` accepts; the first is the default.
pub const ARCHS: &[Arch] = &[
    Arch { name: "sm_80", ptx_version: "7.0", max_shared: 166_912 },
    Arch { name: "sm_86", ptx_version: "7.1", max_shared: 101_376 },
    Arch { name: "sm_89", ptx_version: "7.8", max_shared: 101_376 },
    Arch { name: "sm_90", ptx_version: "8.0", max_shared: 232_448 },
    Arch { name: "sm_90a", ptx_version: "8.0", max_shared: 232_448 },
];

/// Static `.shared` arrays are limited to 48 KiB; beyond that the loader opts in.
pub const STATIC_SHARED_LIMIT: u32 = 48 * 1024;

impl Arch {
    pub fn by_name(name: &str) -> Result<Arch> {
        ARCHS.iter().copied().find(|a| a.name == name).ok_or_else(|| CodegenError::Unsupported {
            kernel: String::new(),
            target: "ptx".into(),
            reason: format!("unknown arch `{name}` (known: {})", ARCHS.iter().map(|a| a.name).collect::<Vec<_>>().join(", ")),
        })
    }
}

/// PTX parameter names of an entry: one per kernel parameter, one per runtime dim, the error word.
pub(crate) struct ParamNames {
    pub params: Vec<String>,
    pub dims: Vec<Option<String>>,
    pub err: String,
}

impl ParamNames {
    fn new(k: &Kernel) -> ParamNames {
        ParamNames {
            params: k.params.iter().map(|p| format!("p_{}", p.name)).collect(),
            dims: k.dims.iter().map(|d| if d.konst && d.value.is_some() { None } else { Some(format!("d_{}", d.name)) }).collect(),
            err: "opc_err".into(),
        }
    }
}

/// What the loader needs to launch an entry, besides the PTX text.
#[derive(Clone, Debug)]
pub struct Launch {
    pub entry: String,
    pub threads: u32,
    pub shared_bytes: u32,
    pub dynamic_shared: bool,
    /// Launch parameters in order.
    pub params: Vec<LaunchParam>,
}

/// One `.param` of the entry.
#[derive(Clone, Debug, PartialEq)]
pub enum LaunchParam {
    /// Global address of kernel parameter `i` (a tensor).
    Tensor(usize),
    /// Value of kernel parameter `i` (a scalar: f32, i32 or bool as u32).
    Scalar(usize),
    /// Launch-time value of dim symbol `i` (u64).
    Dim(usize),
    /// Address of the error word pair (u32 site, i32 detail): a `for` with a non-positive step.
    ErrorWord,
    /// Tensor map `i` of [`Compiled::tensor_maps`], by value (128 bytes, 64-byte aligned).
    TensorMap(usize),
    /// Axis `i` of the kernel's grid (u32), for persistent CTAs.
    Grid(usize),
}

/// A rendered kernel: PTX text and its launch description.
#[derive(Clone, Debug)]
pub struct Compiled {
    pub ptx: String,
    pub launch: Launch,
    pub arch: Arch,
    pub feats: Features,
    /// The tensor-core path taken, if any (`mma.sync...`, `wgmma...`).
    pub tensor_cores: Option<&'static str>,
    /// Tensor maps the loader must encode and pass (TMA path).
    pub tensor_maps: Vec<TensorMap>,
    /// The FA3 attention loop's facts, when the kernel has one (`attn.rs`).
    pub attn: Option<AttnInfo>,
    /// Persistent CTAs: launch `persistent_ctas(programs, SMs)` CTAs along x and pass the
    /// kernel's grid as [`LaunchParam::Grid`] (`persistent.rs`).
    pub persistent: bool,
}

/// Which fast paths a compile may take. [`Features::for_arch`] is the default: pipelined GEMM
/// loops everywhere, `wgmma` + TMA on `sm_90a`. The loader falls back to
/// `Features { tma: false, .. }` when a tensor map cannot be encoded for the actual tensors (a
/// row pitch that is not a multiple of 16 bytes, a misaligned base).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// Recognize GEMM loops and pipeline their operand copies (`gemm.rs`).
    pub pipeline: bool,
    /// Use `wgmma` with TMA-fed, warp-specialized mainloops (`wgmma.rs`); needs `sm_90a`.
    pub wgmma: bool,
    /// Stage the 16-bit `dot` operands other loops load (flash attention's K/V) through a
    /// 2-stage `cp.async` ring (`stage.rs`). Dropped automatically when the rings would not
    /// fit the arch's shared memory.
    pub stage: bool,
    /// Persistent CTAs with a static program scheduler for kernels with a `wgmma` GEMM loop
    /// (`persistent.rs`); off by default.
    pub persistent: bool,
}

impl Features {
    pub fn for_arch(arch: Arch) -> Features {
        Features { pipeline: true, wgmma: arch.name == "sm_90a", stage: true, persistent: false }
    }
}

/// A CUtensorMap the host encodes (`cuTensorMapEncodeTiled`) and passes as the
/// `.param .align 64 .b8 NAME[128]` parameter `name` (PTX ISA §5.5.8 "Tensor-map" and
/// §9.7.9.27 `cp.async.bulk.tensor`): a 2-D tiled map of kernel parameter `param` (a 16-bit
/// tensor `[rows, cols]`, row-major), box `[box_cols, box_rows]` (innermost first), the given
/// swizzle span in bytes (32, 64 or 128), out-of-bounds elements filled with zeros. With
/// `outer`, the map is 3-D: the tensor's leading dims are folded into one outermost dim
/// (`[cols, rows, Π leading]`, box depth 1), so a box that runs past `rows` is zero-filled
/// instead of reading the next head's rows (flash attention's K/V, `attn.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorMap {
    pub param: usize,
    pub name: String,
    pub box_cols: u32,
    pub box_rows: u32,
    pub swizzle: u32,
    pub outer: bool,
}

/// Threads per CTA for `k`: 128, or 256 when some tile has at least 8192 elements; at least
/// what a warp-specialized mainloop needs (one producer warpgroup plus its consumers).
fn threads(k: &Kernel, feats: Features) -> u32 {
    let big = k.values.iter().map(|t| t.numel()).max().unwrap_or(0);
    let base = if big >= 8192 { 256 } else { 128 };
    base.max(wgmma::threads_needed(k, feats)).max(attn::threads_needed(k, feats))
}

/// Register budget the entry declares (`.maxntid T` with one resident CTA per SM).
pub fn max_registers(threads: u32) -> u32 {
    (65_536 / threads).min(255)
}

/// Render `k` for `arch` with the arch's default features.
pub fn compile(k: &Kernel, arch: Arch) -> Result<Compiled> {
    compile_with(k, arch, Features::for_arch(arch))
}

/// Render `k` for `arch` with the given fast paths.
pub fn compile_with(k: &Kernel, arch: Arch, feats: Features) -> Result<Compiled> {
    opc_ir::verify::verify(k).map_err(|e| CodegenError::Unsupported {
        kernel: k.name.clone(),
        target: "ptx".into(),
        reason: format!("the kernel does not verify: {e}"),
    })?;
    let feats = Features { wgmma: feats.wgmma && arch.name == "sm_90a", ..feats };
    let t = threads(k, feats);
    let names = ParamNames::new(k);
    let first = lower::lower(k, t, None, &names, feats)?;
    let live = lower::intervals(&first.bufs, &first.loops);
    let sizes: Vec<u32> = first.bufs.iter().map(|b| b.bytes).collect();
    let (offs, total) = plan::pack(&sizes, &live);
    if total > arch.max_shared && feats.stage {
        // the double-buffered rings cost more shared memory than the single copies
        return compile_with(k, arch, Features { stage: false, ..feats });
    }
    if total > arch.max_shared {
        return Err(CodegenError::Unsupported {
            kernel: k.name.clone(),
            target: "ptx".into(),
            reason: format!(
                "the tiles need {total} bytes of shared memory, {} allows {} per CTA: choose smaller tile sizes",
                arch.name, arch.max_shared
            ),
        });
    }
    let low = lower::lower(k, t, Some(offs), &names, feats)?;
    let dynamic = total > STATIC_SHARED_LIMIT;
    let mut params = vec![];
    let mut decls = vec![];
    for (i, p) in k.params.iter().enumerate() {
        match &p.kind {
            ParamKind::Tensor { .. } => {
                params.push(LaunchParam::Tensor(i));
                decls.push(format!(".param .u64 {}", names.params[i]));
            }
            ParamKind::Scalar { dtype } => {
                params.push(LaunchParam::Scalar(i));
                let ty = if *dtype == opc_ir::DType::F32 { "f32" } else { "u32" };
                decls.push(format!(".param .{ty} {}", names.params[i]));
            }
        }
    }
    for (i, n) in names.dims.iter().enumerate() {
        if let Some(n) = n {
            params.push(LaunchParam::Dim(i));
            decls.push(format!(".param .u64 {n}"));
        }
    }
    params.push(LaunchParam::ErrorWord);
    decls.push(format!(".param .u64 {}", names.err));
    for (i, m) in low.tmaps.iter().enumerate() {
        params.push(LaunchParam::TensorMap(i));
        decls.push(format!(".param .align 64 .b8 {}[128]", m.name));
    }
    let persistent = persistent::applies(k, feats);
    if persistent {
        for (i, n) in persistent::GRID_PARAMS.iter().enumerate() {
            params.push(LaunchParam::Grid(i));
            decls.push(format!(".param .u32 {n}"));
        }
    }

    let mut ptx = String::new();
    ptx.push_str(&format!(
        "//\n// Generated by opc {} (ptx renderer) from kernel `{}`, IR hash {}\n//\n\n",
        env!("CARGO_PKG_VERSION"),
        k.name,
        crate::artifact::ir_hash(k)
    ));
    ptx.push_str(&format!(".version {}\n.target {}\n.address_size 64\n\n", arch.ptx_version, arch.name));
    if dynamic {
        ptx.push_str(".extern .shared .align 128 .b8 opc_smem[];\n\n");
    }
    ptx.push_str(&format!(".visible .entry {}(\n\t{}\n)\n", k.name, decls.join(",\n\t")));
    ptx.push_str(&format!(".maxntid {t}, 1, 1\n.minnctapersm 1\n"));
    if low.attn.as_ref().is_some_and(|a| a.setmaxnreg.is_some()) {
        // the register count at entry that `setmaxnreg` re-partitions (attn.rs)
        ptx.push_str(&format!(".maxnreg {}\n", attn::ENTRY_REGS));
    }
    ptx.push_str("{\n");
    if !dynamic {
        ptx.push_str(&format!("\t.shared .align 128 .b8 opc_smem[{}];\n", total.max(16)));
    }
    ptx.push_str(&low.body);
    ptx.push_str("}\n");
    Ok(Compiled {
        ptx,
        launch: Launch { entry: k.name.clone(), threads: t, shared_bytes: if dynamic { total } else { total.max(16) }, dynamic_shared: dynamic, params },
        arch,
        feats,
        tensor_cores: low.tensor_cores,
        tensor_maps: low.tmaps,
        attn: low.attn,
        persistent,
    })
}

/// The grid block as one expression per axis in terms of the dims (`((SQ + 64) - 1) / 64`).
pub fn grid_exprs(k: &Kernel) -> Vec<String> {
    use std::collections::HashMap;
    let mut e: HashMap<u32, String> = HashMap::new();
    let get = |e: &HashMap<u32, String>, v: &opc_ir::ValueId| e.get(&v.0).cloned().unwrap_or_else(|| format!("%{}", v.0));
    for op in &k.grid.ops {
        let s = match &op.kind {
            OpKind::Const(opc_ir::Scalar::Int(i)) => i.to_string(),
            OpKind::Const(c) => format!("{c:?}"),
            OpKind::Dim(s) => k.dims[s.0 as usize].name.clone(),
            OpKind::Binary(b) => {
                let (x, y) = (get(&e, &op.args[0]), get(&e, &op.args[1]));
                match b {
                    opc_ir::BinaryOp::Add => format!("({x} + {y})"),
                    opc_ir::BinaryOp::Sub => format!("({x} - {y})"),
                    opc_ir::BinaryOp::Mul => format!("({x} * {y})"),
                    opc_ir::BinaryOp::Div => format!("({x} / {y})"),
                    opc_ir::BinaryOp::Rem => format!("({x} % {y})"),
                    other => format!("{}({x}, {y})", other.mnemonic()),
                }
            }
            OpKind::Yield => return op.args.iter().map(|a| get(&e, a)).collect(),
            other => format!("{}({})", other.mnemonic(), op.args.iter().map(|a| get(&e, a)).collect::<Vec<_>>().join(", ")),
        };
        if let Some(r) = op.results.first() {
            e.insert(r.0, s);
        }
    }
    vec![]
}

/// The manifest fields of a PTX artifact, added to [`base_manifest`] (public for callers of
/// [`compile_with`], e.g. with persistent CTAs).
pub fn manifest(k: &Kernel, c: &Compiled, file: &str) -> Value {
    let mut m = base_manifest(k, "ptx");
    let params: Vec<Value> = c
        .launch
        .params
        .iter()
        .map(|p| match p {
            LaunchParam::Tensor(i) => json!({"kind": "tensor", "name": k.params[*i].name, "ptx_type": "u64", "what": "global address of the tensor's first byte (4-byte aligned, size padded to a multiple of 4)"}),
            LaunchParam::Scalar(i) => {
                let ty = match &k.params[*i].kind {
                    ParamKind::Scalar { dtype: opc_ir::DType::F32 } => "f32",
                    _ => "u32",
                };
                json!({"kind": "scalar", "name": k.params[*i].name, "ptx_type": ty})
            }
            LaunchParam::Dim(i) => json!({"kind": "dim", "name": k.dims[*i].name, "ptx_type": "u64"}),
            LaunchParam::ErrorWord => json!({"kind": "error_word", "name": "opc_err", "ptx_type": "u64",
                "what": "address of two zeroed u32: after the launch, a nonzero first word is the 1-based `for` site whose step was not positive, the second the step"}),
            LaunchParam::Grid(i) => json!({"kind": "grid", "name": persistent::GRID_PARAMS[*i], "ptx_type": "u32", "axis": i,
                "what": "axis of the kernel's grid (`grid`), which the persistent CTAs walk"}),
            LaunchParam::TensorMap(i) => {
                let t = &c.tensor_maps[*i];
                json!({"kind": "tensor_map", "name": t.name, "ptx_type": ".align 64 .b8[128]", "tensor": k.params[t.param].name,
                       "box": if t.outer { json!([t.box_cols, t.box_rows, 1]) } else { json!([t.box_cols, t.box_rows]) }, "swizzle_bytes": t.swizzle, "oob_fill": "zero",
                       "rank": if t.outer { 3 } else { 2 },
                       "what": if t.outer {
                           "CUtensorMap from cuTensorMapEncodeTiled: 3-D, dims [cols, rows, product of the leading dims] of the row-major tensor (strides [pitch, rows·pitch]), box innermost first, interleave none; the row pitch must be a multiple of 16 bytes and the base 16-byte aligned, else launch the variant compiled without TMA"
                       } else {
                           "CUtensorMap from cuTensorMapEncodeTiled: 2-D, dims [cols, rows] of the row-major tensor, box [cols, rows] innermost first, interleave none; the row pitch must be a multiple of 16 bytes and the base 16-byte aligned, else launch the variant compiled without TMA"
                       }})
            }
        })
        .collect();
    let obj = m.as_object_mut().expect("the base manifest is an object");
    obj.insert("entry".into(), json!(c.launch.entry));
    obj.insert("file".into(), json!(file));
    obj.insert("arch".into(), json!(c.arch.name));
    obj.insert("ptx_version".into(), json!(c.arch.ptx_version));
    obj.insert("launch_params".into(), json!(params));
    obj.insert("grid".into(), json!(grid_exprs(k)));
    obj.insert("block".into(), json!([c.launch.threads, 1, 1]));
    obj.insert(
        "shared_bytes".into(),
        json!({"total": c.launch.shared_bytes, "static": if c.launch.dynamic_shared { 0 } else { c.launch.shared_bytes },
               "dynamic": if c.launch.dynamic_shared { c.launch.shared_bytes } else { 0 }}),
    );
    obj.insert("occupancy".into(), json!({"max_threads_per_cta": c.launch.threads, "min_ctas_per_sm": 1, "max_registers_per_thread": max_registers(c.launch.threads)}));
    obj.insert("tensor_cores".into(), json!(c.tensor_cores.unwrap_or("none")));
    obj.insert("fallback_without_tma".into(), json!(!c.tensor_maps.is_empty()));
    if c.persistent {
        obj.insert("persistent".into(), json!({
            "launch_grid": "[min(grid[0]·grid[1]·grid[2], multiprocessor count), 1, 1]: `grid` is the kernel's grid above, passed as the `grid` launch params",
            "schedule": "CTA c of n runs programs v = c, c + n, … below the grid's product; program v = (v mod grid[0], (v / grid[0]) mod grid[1], v / (grid[0]·grid[1]))",
            "tma_ring": "stage buffer and mbarriers set up once; the stage/phase count runs across programs; the producer issues the next program's first min(stages, trips) k-blocks during this program's epilogue when the loop's bounds and starts are scalar functions of the program",
            "when": "several programs per SM with short mainloops or long epilogues; off by default (Features::persistent)",
        }));
    }
    if let Some(a) = &c.attn {
        obj.insert("fa3".into(), attn::manifest(a));
    }
    obj.insert("for_sites".into(), json!(for_sites(k)));
    m
}

/// The PTX renderer (`opc build --target ptx --arch sm_90a -o DIR`): `KERNEL.ptx` + `manifest.json`.
pub struct PtxRenderer;

impl Renderer for PtxRenderer {
    fn name(&self) -> &'static str {
        "ptx"
    }

    fn render(&self, kernel: &Kernel, opts: &RenderOptions) -> Result<Artifact> {
        let arch = Arch::by_name(opts.arch.as_deref().unwrap_or(ARCHS[0].name))?;
        let c = compile(kernel, arch)?;
        let file = format!("{}.ptx", kernel.name);
        let manifest = manifest(kernel, &c, &file);
        Ok(Artifact { files: vec![(file, c.ptx.into_bytes())], manifest })
    }
}
