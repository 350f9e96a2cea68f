//! The `ascendc` target: tile IR → AscendC C++ for the Ascend 910B (Atlas A2, `dav-c220`),
//! CANN 8.5 / asc-devkit v8.5.0 API.
//!
//! `opc build FILE --target ascendc -o DIR` writes `NAME.cpp` (the kernel: classic
//! `extern "C" __global__ __aicore__` entry, a kernel class with `Init`/`Process`, CopyIn /
//! Compute / CopyOut stages through `TQue`s), `NAME_tiling.h` (POD tiling struct + host tiling
//! function), `NAME_launch.cpp` (launch stub) and `manifest.json`.
//!
//! **Pipeline** (one function each, in order; see [`compile`]):
//! 1. `lower-ascendc` (`lower/`): level-1 programs → AI cores (`GetBlockIdx`, round-robin when
//!    programs outnumber cores); tile ops → vector instructions in UB (or scalar loops where
//!    AscendC has no instruction); `load`/`store` → `DataCopyPad` boxes through double-buffered
//!    `VECIN`/`VECOUT` queues; `dot` on 16-bit operands → the cube (GM → L1 → L0A/L0B → `Mmad`
//!    into L0C, fp32 → `Fixpipe`), making the kernel `MIX_AIC_1_2` with GM-workspace hand-offs
//!    and cross-core flags; other `dot`s on the vector unit.
//! 2. `plan-ascendc-memory` (`plan.rs`): UB tiles placed by live range; UB / L1 / L0A / L0B /
//!    L0C budgets; an oversized tile configuration is an error naming the buffer, the bytes
//!    needed and available, the tiles live at the peak (with DSL locations) and the tunables.
//! 3. `check-ascendc` (`check.rs`): alignment, DataCopy granularity, queue balance and the
//!    pipe-synchronization rule, on every program of the kernel.
//! 4. `emit-ascendc` (`emit.rs`).
//!
//! **API surface.** [`API_SURFACE`] (names), [`API_TEMPLATE_FORMS`] (explicit template-argument
//! kinds) and [`API_STRUCT_FIELDS`] list everything the emitted code uses;
//! `codegen/tests/ascendc_surface.rs` checks them against every library kernel's output and
//! (with OPC_ASC_DEVKIT) against the asc-devkit v8.5.0 headers.
//!
//! **Checking without hardware.** `model/kernel_operator.h` is opc's own CPU model of the
//! API subset in [`API_SURFACE`] (written from the documented semantics, real signatures):
//! per-position arenas with the real capacities, alignment / overflow assertions, fp16/bf16
//! rounding after every vector instruction, `Mmad` with fp32 accumulation, one thread per
//! core, MIX groups, cross-core flags as counting semaphores, atomics, and a run-time pipe
//! hazard checker. Tests compile the emitted files against it with g++ and compare with the
//! interpreter (`codegen/tests/ascendc_*.rs`).
//!
//! **MIX groups (1 AIC : 2 AIV).** When the vector work of a MIX kernel is row-local (the
//! analysis in `split.rs`), both AIVs of a group run the vector program, each on half the rows
//! of the level-1 block (`subRow_ = GetSubBlockIdx() · M/2`), reading and writing their half of
//! the GM workspace slots; the cube's waits need both AIVs' flags (mode 0x2). Otherwise AIV 1
//! runs the hand-off skeleton only.
//!
//! **FlashAttention** maps as: level-1 program (BM query rows of one head) → one AI Core group,
//! BM/2 rows per AIV; each KV step (level 2, BN keys) is two cube sites, S = Q·Kᵀ and P·V, with
//! Q, K and V copied by the AIC straight from GM into L1 (they never enter UB) and P / S / P·V
//! exchanged through the group's GM workspace. S = Q·Kᵀ needs nothing from the vector cores, so
//! the cube computes it one KV step ahead into ping-pong workspace slots with a flag pair per
//! slot (`lower/pipeline.rs`): the cube works on step t + 1 while the AIVs run the online
//! softmax of step t. The DSL's loop bounds skip the tiles above the causal diagonal, tiles
//! below it take the unmasked branch, and diagonal / window-edge / ragged tiles `Select` with a
//! tiling mask kept in UB (`lower/tilemask.rs`): built once per distinct diagonal offset per
//! core (one mask for BM = BN with SQ - SK a multiple of the tile), never an S×S mask.
//! `roofline.rs` estimates the time on a 910B2 from the work (the closing-report test in
//! `codegen/tests/ascendc_render.rs`).
//!
//! **Not yet** (documented limits): a B operand the vector cores compute (MXFP4 decode) is
//! decoded by both AIVs and written by sub-block 0 (the decode is not split); no L0C
//! accumulation across a K loop; stores into packed 4-bit tensors and masked / scattered
//! stores go element by element through `GlobalTensor::SetValue` (no data-cache flush is
//! emitted). Box loads larger than 16 KiB stream through `VECIN` in row chunks (so kron_quant
//! with N1·N2 = 86·128 f32 fits), but the calc tiles themselves are never split: a kernel
//! whose live tiles exceed UB is rejected with the budget message.

pub mod check;
mod emit;
pub mod lir;
pub mod roofline;
mod liveness;
mod lower;
mod plan;
pub mod sim;
mod split;

use opc_ir::Kernel;
use serde_json::json;

use crate::artifact::{base_manifest, Artifact, RenderOptions, Renderer};
use crate::{CodegenError, Result};

pub use emit::Sources;
pub use plan::Usage;

/// Every AscendC identifier the emitted kernels use (namespace `AscendC` unless noted), in
/// one place so it can be checked against the asc-devkit v8.5.0 headers. The CPU model
/// (`model/kernel_operator.h`) implements exactly these.
pub const API_SURFACE: &[&str] = &[
    // types, macros, core identity
    "GM_ADDR",
    "__gm__",
    "__aicore__",
    "__global__",
    "half",
    "bfloat16_t",
    "KERNEL_TASK_TYPE_DEFAULT",
    "KERNEL_TYPE_AIV_ONLY",
    "KERNEL_TYPE_MIX_AIC_1_2",
    "ASCEND_IS_AIV",
    "ASCEND_IS_AIC",
    "GetBlockIdx",
    "GetBlockNum",
    "GetSubBlockIdx",
    // memory management
    "TPipe",
    "TPipe::InitBuffer",
    "TQue",
    "TQue::AllocTensor",
    "TQue::EnQue",
    "TQue::DeQue",
    "TQue::FreeTensor",
    "TBuf",
    "TBuf::GetWithOffset",
    "TPosition::VECIN",
    "TPosition::VECOUT",
    "TPosition::VECCALC",
    "TPosition::A1",
    "TPosition::B1",
    "TPosition::A2",
    "TPosition::B2",
    "TPosition::CO1",
    "LocalTensor",
    "LocalTensor::operator[]",
    "LocalTensor::GetValue",
    "LocalTensor::SetValue",
    "LocalTensor::ReinterpretCast",
    "GlobalTensor",
    "GlobalTensor::SetGlobalBuffer",
    "GlobalTensor::operator[]",
    "GlobalTensor::GetValue",
    "GlobalTensor::SetValue",
    // data movement
    "DataCopy(LocalTensor, GlobalTensor, uint32_t)",
    "DataCopy(GlobalTensor, LocalTensor, uint32_t)",
    "DataCopy(LocalTensor, LocalTensor, uint32_t)",
    "DataCopy(LocalTensor, LocalTensor, DataCopyParams)",
    "DataCopy(LocalTensor, GlobalTensor, Nd2NzParams)",
    "DataCopyParams",
    "DataCopyPad",
    "DataCopyExtParams",
    "DataCopyPadExtParams",
    "Nd2NzParams",
    "SetAtomicAdd",
    "SetAtomicNone",
    // vector
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Max",
    "Min",
    "Adds",
    "Muls",
    "Maxs",
    "Mins",
    "Exp",
    "Ln",
    "Abs",
    "Sqrt",
    "Rsqrt",
    "Reciprocal",
    "Duplicate",
    "Cast",
    "RoundMode::CAST_NONE",
    "RoundMode::CAST_RINT",
    "RoundMode::CAST_FLOOR",
    "RoundMode::CAST_CEIL",
    "RoundMode::CAST_TRUNC",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "Compare",
    "CMPMODE::LT",
    "CMPMODE::GT",
    "CMPMODE::EQ",
    "CMPMODE::LE",
    "CMPMODE::GE",
    "CMPMODE::NE",
    "Select",
    "SELMODE::VSEL_TENSOR_TENSOR_MODE",
    "SELMODE::VSEL_TENSOR_SCALAR_MODE",
    "Axpy",
    // advanced math API (lib/math)
    "Sin",
    "Cos",
    "Power",
    "And",
    "Or",
    "Not",
    // cube
    "LoadData",
    "LoadData2DParams",
    "Mmad",
    "MmadParams",
    "Fixpipe",
    "FixpipeParamsV220",
    "CFG_ROW_MAJOR",
    "QuantMode_t::NoQuant",
    // synchronization
    "SetFlag",
    "WaitFlag",
    "HardEvent::V_S",
    "HardEvent::S_V",
    "HardEvent::S_MTE3",
    "EVENT_ID0",
    "PipeBarrier",
    "PIPE_ALL",
    "CrossCoreSetFlag",
    "CrossCoreWaitFlag",
    "PIPE_MTE2",
    "PIPE_MTE3",
    "PIPE_FIX",
    // CPU debug launch (tikicpulib.h)
    "ICPU_RUN_KF",
    "SetKernelMode",
    "KernelMode::AIV_MODE",
    "KernelMode::MIX_MODE",
];

/// The kind of one explicit template argument in the emitted code, as the real template
/// parameter it binds to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplateArg {
    /// A type (`float`, `half`, ...): a `typename` parameter.
    Type,
    /// A `TPosition` enumerator (`TPosition::VECIN`).
    Position,
    /// An integer literal: an integral non-type parameter (`int32_t depth`, `uint8_t modeId`).
    Int,
    /// A `HardEvent` enumerator.
    Event,
    /// A `pipe_t` enumerator (`PIPE_ALL`).
    Pipe,
    /// A `FixpipeConfig` constant (`CFG_ROW_MAJOR`).
    FixpipeConfig,
}

/// Every explicit template-argument list the emitted kernels write, per [`API_SURFACE`]
/// entry: the argument kinds in order (`TQue<TPosition::VECIN, 2>` is `[Position, Int]`).
/// An API not listed here is only used with all template arguments deduced or defaulted
/// (`Add(dst, a, b, n)`, `CrossCoreWaitFlag(id)`). Tests check this list against every
/// library kernel's emitted code and against the template parameter lists of asc-devkit
/// v8.5.0.
pub const API_TEMPLATE_FORMS: &[(&str, &[TemplateArg])] = {
    use TemplateArg::*;
    &[
        ("TQue", &[Position, Int]),
        ("TBuf", &[Position]),
        ("LocalTensor", &[Type]),
        ("GlobalTensor", &[Type]),
        ("TQue::AllocTensor", &[Type]),
        ("TQue::DeQue", &[Type]),
        ("TBuf::GetWithOffset", &[Type]),
        ("LocalTensor::ReinterpretCast", &[Type]),
        ("DataCopyPadExtParams", &[Type]),
        ("SetAtomicAdd", &[Type]),
        ("SetFlag", &[Event]),
        ("WaitFlag", &[Event]),
        ("PipeBarrier", &[Pipe]),
        ("CrossCoreSetFlag", &[Int, Pipe]),
        ("Fixpipe", &[Type, Type, FixpipeConfig]),
    ]
};

/// The fields of the parameter structs the emitted kernels set (`p.field = ...;`), checked
/// against the asc-devkit v8.5.0 headers with the surface above.
pub const API_STRUCT_FIELDS: &[(&str, &[&str])] = &[
    ("DataCopyParams", &["blockCount", "blockLen", "srcStride", "dstStride"]),
    ("DataCopyExtParams", &["blockCount", "blockLen", "srcStride", "dstStride", "rsv"]),
    ("DataCopyPadExtParams", &["isPad", "leftPadding", "rightPadding", "paddingValue"]),
    ("Nd2NzParams", &["ndNum", "nValue", "dValue", "srcNdMatrixStride", "srcDValue", "dstNzC0Stride", "dstNzNStride", "dstNzMatrixStride"]),
    ("LoadData2DParams", &["startIndex", "repeatTimes", "srcStride", "sid", "dstGap", "ifTranspose", "addrMode"]),
    ("MmadParams", &["m", "n", "k", "unitFlag", "cmatrixSource", "cmatrixInitVal"]),
    ("FixpipeParamsV220", &["nSize", "mSize", "srcStride", "dstStride", "reluEn", "quantPre", "ndNum"]),
];

/// The CPU model of the API subset (opc's own header) and the CPU-debug launcher header.
pub const MODEL_KERNEL_OPERATOR_H: &str = include_str!("model/kernel_operator.h");
pub const MODEL_TIKICPULIB_H: &str = include_str!("model/tikicpulib.h");

/// Vector cores and AI Core groups of a 910B2.
pub const AIV_CORES: u32 = 48;
pub const AIC_CORES: u32 = 24;

/// A compiled kernel: sources plus what the manifest reports.
pub struct Compiled {
    pub sources: Sources,
    pub usage: Usage,
    pub mix: bool,
    /// Cube hand-off sites (dots) in one program.
    pub cube_sites: usize,
    /// GM workspace bytes of one group.
    pub workspace_group_bytes: u64,
    pub program: lir::Kernel,
}

/// Lower, plan, check and emit one instantiated kernel.
pub fn compile(k: &Kernel) -> Result<Compiled> {
    let mut cube_sites = 0;
    opc_ir::walk_ops(&k.body, &mut |op| cube_sites += lower::cube_eligible(k, op) as usize);
    let mix = cube_sites > 0;
    // A MIX kernel's vector work is split by rows over the group's two AIVs when it is
    // row-local; the vector program is then lowered from the row-split copy of the kernel.
    let written = k;
    let unshared;
    let k = if mix {
        unshared = split::unshare_index_tiles(k);
        &unshared
    } else {
        k
    };
    let split = if mix { split::row_split(k) } else { None };
    let vk = split.as_ref().map(|s| &s.kernel).unwrap_or(k);
    let vector_lowering = || {
        let mut l = lower::Lower::new(vk, k, "DSL", mix);
        if let Some(s) = &split {
            l.row_aranges = s.aranges.clone();
            l.split_rows = Some(s.half);
        }
        l
    };
    // A first vector lowering finds the cube sites fed straight from GM: those the cube can
    // compute one loop step ahead (`lower/pipeline.rs`).
    let pipe = if mix {
        let mut l = vector_lowering();
        l.run(lower::Mode::Vector)?;
        lower::pipeline::plan(k, &l.site_direct)
    } else {
        Default::default()
    };
    let mut l = vector_lowering();
    l.pipe = pipe.clone();
    let aiv = l.run(lower::Mode::Vector)?;
    let mut c = lower::Lower::new(k, k, "DSL", mix);
    c.pipe = pipe.clone();
    c.out = std::mem::take(&mut l.out);
    let aic = if mix { Some(c.run(lower::Mode::Cube)?) } else { None };
    let peer = if mix && split.is_none() { Some(c.run(lower::Mode::Peer)?) } else { None };
    let mut prog = c.out;
    prog.aiv = aiv;
    prog.aic = aic;
    prog.aiv_peer = peer;
    prog.split_rows = split.as_ref().map(|s| s.half);
    prog.cube_sites = cube_sites;
    let (a, b, c, z) = lower::workspace_slots(k);
    // Two ping-pong slots of C per pipelined site after the A, B, C and zeros slots.
    let group_bytes = a + b + c + z + 2 * c * pipe.pipelined() as u64;
    prog.workspace_per_core = group_bytes;
    prog.pipelined_sites = pipe.pipelined();
    let usage = plan::plan(&mut prog, k)?;
    check::check(&prog, k, "the vector program", &prog.aiv)?;
    if let Some(aic) = &prog.aic {
        check::check(&prog, k, "the cube program", aic)?;
    }
    if let Some(peer) = &prog.aiv_peer {
        check::check(&prog, k, "the peer program", peer)?;
    }
    let inp = emit::EmitInput { prog: &prog, usage: &usage, mix, ws: (0, a, a + b, a + b + c, group_bytes), ws_c: c, pipelined: pipe.pipelined(), cores: if mix { AIC_CORES } else { AIV_CORES } };
    let sources = emit::emit(written, &inp);
    Ok(Compiled { sources, usage, mix, cube_sites, workspace_group_bytes: group_bytes, program: prog })
}

/// The `ascendc` renderer (`opc build --target ascendc`).
pub struct AscendCRenderer;

impl Renderer for AscendCRenderer {
    fn name(&self) -> &'static str {
        "ascendc"
    }

    fn render(&self, kernel: &Kernel, opts: &RenderOptions) -> Result<Artifact> {
        if let Some(a) = &opts.arch {
            if !matches!(a.as_str(), "ascend910b" | "ascend910b1" | "ascend910b2" | "ascend910b3" | "ascend910b4" | "dav-c220") {
                return Err(CodegenError::Unsupported {
                    kernel: kernel.name.clone(),
                    target: "ascendc".into(),
                    reason: format!("unknown architecture `{a}` (known: ascend910b, ascend910b1..4, dav-c220)"),
                });
            }
        }
        let c = compile(kernel)?;
        let name = &kernel.name;
        let files = vec![
            (format!("{name}.cpp"), c.sources.kernel_cpp.clone().into_bytes()),
            (format!("{name}_tiling.h"), c.sources.tiling_h.clone().into_bytes()),
            (format!("{name}_launch.cpp"), c.sources.launch_cpp.clone().into_bytes()),
        ];
        let mut m = base_manifest(kernel, "ascendc");
        let queues: Vec<_> = c.program.queues.iter().map(|q| json!({"name": q.name, "position": q.pos.cpp(), "buffers": q.num, "bytes": q.bytes})).collect();
        m["ascendc"] = json!({
            "arch": opts.arch.clone().unwrap_or_else(|| "ascend910b".into()),
            "npu_arch": 2201,
            "entry": name,
            "kernel_type": if c.mix { "KERNEL_TYPE_MIX_AIC_1_2" } else { "KERNEL_TYPE_AIV_ONLY" },
            "files": {"kernel": format!("{name}.cpp"), "tiling": format!("{name}_tiling.h"), "launch": format!("{name}_launch.cpp")},
            "entry_params": kernel.params.iter().filter(|p| matches!(p.kind, opc_ir::ParamKind::Tensor { .. })).map(|p| p.name.clone()).chain(["workspace".to_string(), "tiling".to_string()]).collect::<Vec<_>>(),
            "max_block_dim": if c.mix { AIC_CORES } else { AIV_CORES },
            "bytes": {"ub": c.usage.ub, "ub_calc": c.usage.calc, "l1": c.usage.l1, "l0a": c.usage.l0a, "l0b": c.usage.l0b, "l0c": c.usage.l0c},
            "queues": queues,
            "cube_handoffs_per_program": c.cube_sites,
            "workspace_bytes_per_group": c.workspace_group_bytes,
        });
        Ok(Artifact { files, manifest: m })
    }
}
