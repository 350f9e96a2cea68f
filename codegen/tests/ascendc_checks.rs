//! The `ascendc` static checks (run on every build) and the CPU model's run-time checks, each
//! with a program or kernel that violates it and the exact error; a snapshot of one small
//! generated kernel.

#[path = "ascendc_common.rs"]
mod common;

use common::{kernel, kernel_src, run_sources, run_sources_with, Rng};
use opc_codegen::ascendc::check;
use opc_codegen::ascendc::lir::{Buf, CopyLen, Core, Effect, Instr, Kernel, Pipe, Pos, Queue, Res, Stmt};
use opc_dsl::Instance;
use opc_ir::{Arg, DType, Tensor};

fn instr(pipe: Pipe, text: &str, reads: Vec<Res>, writes: Vec<Res>, effect: Effect) -> Stmt {
    Stmt::Instr(Instr { text: text.into(), pipe, reads, writes, effect, loc: Some(opc_ir::Loc { line: 7, col: 5 }) })
}

/// A program with one VECIN queue and two UB tiles.
fn program() -> Kernel {
    let buf = |name: &str, off: u64| Buf {
        name: name.into(),
        elem: "float",
        elems: 64,
        bytes: 256,
        live: (0, 9),
        what: format!("tile {name}"),
        loc: None,
        off: Some(off),
    };
    Kernel {
        bufs: vec![buf("b0", 0), buf("b1", 256)],
        queues: vec![Queue { name: "inQueue".into(), pos: Pos::VecIn, depth: 2, num: 2, bytes: 256, core: Core::Aiv, what: String::new(), loc: None }],
        ..Default::default()
    }
}

fn ir() -> opc_ir::Kernel {
    opc_ir::Kernel::new("k")
}

fn run_checks(k: &Kernel, stmts: &[Stmt]) -> Result<(), String> {
    check::check(k, &ir(), "the vector program", stmts).map_err(|e| e.to_string())
}

#[test]
fn pipe_sync_missing_flag_is_caught() {
    let k = program();
    // MTE2 fills b0 from GM, the vector unit reads it: needs MTE2 -> V.
    let load = instr(Pipe::Mte2, "DataCopy(b0, xGm, 64);", vec![Res::Gm], vec![Res::Buf(0)], Effect::Copy(CopyLen::Elems { count: 64, elem_bytes: 4 }));
    let add = instr(Pipe::V, "Add(b1, b0, b0, 64);", vec![Res::Buf(0)], vec![Res::Buf(1)], Effect::None);
    let err = run_checks(&k, &[load.clone(), add.clone()]).unwrap_err();
    assert_eq!(
        err,
        "kernel `k` cannot be compiled for target `ascendc`: pipe synchronization: read-after-write on UB tile b0 (tile b0): `Add(b1, b0, b0, 64);` (PIPE_V) (DSL 7:5) reads what `DataCopy(b0, xGm, 64);` (PIPE_MTE2) (DSL 7:5) with no queue hand-off, flag pair or barrier between them"
    );
    // With the flag pair it passes.
    let set = instr(Pipe::Mte2, "SetFlag<HardEvent::MTE2_V>(EVENT_ID0);", vec![], vec![], Effect::SetFlag(Pipe::Mte2, Pipe::V, 0));
    let wait = instr(Pipe::V, "WaitFlag<HardEvent::MTE2_V>(EVENT_ID0);", vec![], vec![], Effect::WaitFlag(Pipe::Mte2, Pipe::V, 0));
    run_checks(&k, &[load.clone(), set, wait, add.clone()]).unwrap();
    // A barrier works too.
    let bar = instr(Pipe::S, "PipeBarrier<PIPE_ALL>();", vec![], vec![], Effect::Barrier(None));
    run_checks(&k, &[load.clone(), bar, add.clone()]).unwrap();
    // Write-after-read across loop iterations: V reads b0, the next iteration's MTE2 overwrites it.
    let looped = Stmt::Loop {
        head: "int i = 0; i < 4; ++i".into(),
        body: vec![
            load.clone(),
            instr(Pipe::Mte2, "SetFlag<HardEvent::MTE2_V>(EVENT_ID0);", vec![], vec![], Effect::SetFlag(Pipe::Mte2, Pipe::V, 0)),
            instr(Pipe::V, "WaitFlag<HardEvent::MTE2_V>(EVENT_ID0);", vec![], vec![], Effect::WaitFlag(Pipe::Mte2, Pipe::V, 0)),
            add,
        ],
    };
    let err = run_checks(&k, &[looped]).unwrap_err();
    assert!(
        err.contains(
            "write-after-read on UB tile b0 (tile b0): `DataCopy(b0, xGm, 64);` (PIPE_MTE2) (DSL 7:5) overwrites what `Add(b1, b0, b0, 64);` (PIPE_V)"
        ),
        "{err}"
    );
}

#[test]
fn queue_hand_off_orders_pipes() {
    let k = program();
    let q = 0;
    let stmts = vec![
        instr(Pipe::Mte2, "LocalTensor<float> t = inQueue.AllocTensor<float>();", vec![], vec![Res::Queue(q)], Effect::AllocTensor(q)),
        instr(Pipe::Mte2, "DataCopyPad(t, xGm, p, pad);", vec![Res::Gm], vec![Res::Queue(q)], Effect::Copy(CopyLen::Pad)),
        instr(Pipe::Mte2, "inQueue.EnQue(t);", vec![], vec![], Effect::EnQue(q)),
        instr(Pipe::V, "t = inQueue.DeQue<float>();", vec![], vec![], Effect::DeQue(q)),
        instr(Pipe::V, "Exp(b0, t, 64);", vec![Res::Queue(q)], vec![Res::Buf(0)], Effect::None),
        instr(Pipe::V, "inQueue.FreeTensor(t);", vec![], vec![], Effect::FreeTensor(q)),
    ];
    run_checks(&k, &stmts).unwrap();
    // Without EnQue / DeQue the vector unit reads what MTE2 may still be writing.
    let err = run_checks(&k, &[stmts[0].clone(), stmts[1].clone(), stmts[4].clone(), stmts[5].clone()]).unwrap_err();
    assert!(err.contains("pipe synchronization: read-after-write on inQueue tensor: `Exp(b0, t, 64);` (PIPE_V)"), "{err}");
}

#[test]
fn queue_balance_is_checked() {
    let k = program();
    let alloc = instr(Pipe::Mte2, "LocalTensor<float> t = inQueue.AllocTensor<float>();", vec![], vec![Res::Queue(0)], Effect::AllocTensor(0));
    let err = run_checks(&k, std::slice::from_ref(&alloc)).unwrap_err();
    assert_eq!(err, "kernel `k` cannot be compiled for target `ascendc`: queue balance: inQueue.AllocTensor in the vector program (the program body) has no matching FreeTensor");
    let err = run_checks(&k, &[alloc.clone(), alloc.clone(), alloc]).unwrap_err();
    assert_eq!(err, "kernel `k` cannot be compiled for target `ascendc`: queue balance: inQueue.AllocTensor in the vector program (the program body) holds more tensors than the queue's 2 buffers (DSL 7:5)");
    let deq = instr(Pipe::V, "t = inQueue.DeQue<float>();", vec![], vec![], Effect::DeQue(0));
    let err = run_checks(&k, &[Stmt::Loop { head: "..".into(), body: vec![deq] }]).unwrap_err();
    assert_eq!(
        err,
        "kernel `k` cannot be compiled for target `ascendc`: queue balance: inQueue.DeQue in the vector program (a loop body) without an EnQue (DSL 7:5)"
    );
}

#[test]
fn datacopy_granularity_is_checked() {
    let k = program();
    let bad = instr(Pipe::V, "DataCopy(b1, b0, 10);", vec![Res::Buf(0)], vec![Res::Buf(1)], Effect::Copy(CopyLen::Elems { count: 10, elem_bytes: 2 }));
    let err = run_checks(&k, &[bad]).unwrap_err();
    assert_eq!(
        err,
        "kernel `k` cannot be compiled for target `ascendc`: DataCopy granularity: `DataCopy(b1, b0, 10);` moves 10 x 2 = 20 bytes, not a multiple of 32 (DSL 7:5); use DataCopyPad for ragged lengths"
    );
    let ok = instr(Pipe::V, "DataCopy(b1, b0, 16);", vec![Res::Buf(0)], vec![Res::Buf(1)], Effect::Copy(CopyLen::Elems { count: 16, elem_bytes: 2 }));
    run_checks(&k, &[ok]).unwrap();
}

#[test]
fn alignment_is_checked() {
    let mut k = program();
    k.bufs[1].off = Some(272);
    let err = run_checks(&k, &[]).unwrap_err();
    assert_eq!(err, "kernel `k` cannot be compiled for target `ascendc`: alignment: UB tile b1 (tile b1) at offset 272 with 256 bytes is not 32-byte aligned");
}

/// An oversized tile configuration names the buffer, the bytes, the tiles at the peak with
/// their DSL locations, and the tunables.
#[test]
fn oversized_tiles_are_rejected_with_the_budget() {
    let k = kernel("flash_attention", "flash_attention", &Instance::default().dtype("T", DType::F32).konst("D", 256).tunable("BM", 128).tunable("BN", 128));
    let err = opc_codegen::ascendc::compile(&k).err().expect("must not fit").to_string();
    insta::assert_snapshot!("budget_error_flash_attention_f32_d256", err);
    assert!(err.contains("does not fit the 910B's UB"), "{err}");
    // The DSL locations to point at: the largest tile at the peak, then the tunables'
    // declarations (`tunables { BM: ..., BN: ... }`, lines 33 and 34 of flash_attention.opc).
    let Err(opc_codegen::CodegenError::AtSource { notes, .. }) = opc_codegen::ascendc::compile(&k) else { panic!("not an AtSource error") };
    let at: Vec<(u32, u32, &str)> = notes.iter().map(|(l, s)| (l.line, l.col, s.as_str())).collect();
    assert_eq!(
        at,
        [(47, 17, "131072 bytes live at the UB peak"), (33, 5, "tunable BM = 128 sizes these tiles"), (34, 5, "tunable BN = 128 sizes these tiles")]
    );
}

const SOFTMAX: &str = r#"
kernel row_softmax(x: f32[M, N], y: out f32[M, N])
tunables { BM: level1 in {8} = 8, BN: level2 in {64} = 64 }
grid(cdiv(M, BM))
{
    let rows = program_id(0) * BM + arange(BM);
    let cols = arange(BN);
    let v = load(x[rows, cols], mask: cols[None, :] < N, other: -inf);
    let e = exp(v - max(v, 1)[:, None]);
    store(y[rows, cols], e / sum(e, 1)[:, None]);
}
"#;

#[test]
fn snapshot_small_kernel() {
    let k = kernel_src(SOFTMAX, "row_softmax", &Instance::default());
    let c = opc_codegen::ascendc::compile(&k).expect("compile");
    insta::assert_snapshot!("row_softmax_kernel_cpp", c.sources.kernel_cpp);
    insta::assert_snapshot!("row_softmax_tiling_h", c.sources.tiling_h);
    insta::assert_snapshot!("row_softmax_launch_cpp", c.sources.launch_cpp);
}

/// The CPU model catches what a hand edit breaks: a removed WaitFlag (pipe hazard), a removed
/// cross-core flag (the waiting core would hang), a removed FreeTensor (queue balance).
#[test]
fn model_catches_missing_flags_and_frees() {
    let k = kernel("flash_attention", "flash_attention", &Instance::default().dtype("T", DType::F16).konst("D", 32).tunable("BM", 32).tunable("BN", 32));
    let c = opc_codegen::ascendc::compile(&k).expect("compile");
    let mut r = Rng(1);
    let args = |r: &mut Rng| fa_args(r, 1, 40, true);
    // The unedited kernel runs.
    run_sources(&k, &c.sources, &mut args(&mut r)).expect("unedited kernel");
    let edit = |what: &str| without_line(&c.sources, what);
    let err = run_sources(&k, &edit("WaitFlag<HardEvent::V_S>(EVENT_ID0);"), &mut args(&mut r)).expect_err("hazard");
    assert!(
        err.contains("pipe hazard: PIPE_S reads UB bytes") && err.contains("last written by PIPE_V without a queue hand-off, flag pair or barrier"),
        "{err}"
    );
    // The hang is found when every core of the group waits, not by a timeout: however slow
    // the host, the AIVs' wait on the product flag (2) is named.
    let err = run_sources(&k, &edit("CrossCoreSetFlag<0x2, PIPE_FIX>(kFlagProduct);"), &mut args(&mut r)).expect_err("hang");
    assert!(err.contains("no matching CrossCoreSetFlag: every core of the group waits or has ended"), "{err}");
    assert!(err.contains("AIV sub-block 0: CrossCoreWaitFlag(2)") && err.contains("AIV sub-block 1: CrossCoreWaitFlag(2)"), "{err}");
    let free = c.sources.kernel_cpp.lines().find(|l| l.trim().starts_with("outQueue.FreeTensor(")).expect("a FreeTensor").trim().to_string();
    let err = run_sources(&k, &edit(&free), &mut args(&mut r)).expect_err("queue balance");
    assert!(err.contains("AllocTensor: all 2 buffers of the queue are in use") || err.contains("queue balance"), "{err}");
}

/// FlashAttention as FastAttention maps it: both AIVs of a group share the rows, and the cube
/// computes S for the next KV step into a ping-pong GM slot while the AIVs run the softmax.
/// Dropping either side of a slot's flag pair is caught by the CPU model (its cross-core race
/// detector on the workspace, or the flag balance at kernel end).
#[test]
fn pipelined_flag_pairs_are_checked() {
    let k = kernel("flash_attention", "flash_attention", &Instance::default().dtype("T", DType::F16).konst("D", 32).tunable("BM", 32).tunable("BN", 32));
    let c = opc_codegen::ascendc::compile(&k).expect("compile");
    let text = &c.sources.kernel_cpp;
    assert!(text.contains("const int32_t subRow_ = static_cast<int32_t>(GetSubBlockIdx()) * 16;") && !text.contains("PeerProgram"), "rows split over two AIVs");
    assert!(text.contains("CrossCoreWaitFlag(kFlagFree0 + (hop0 ^ 1));") && text.contains("CrossCoreWaitFlag(kFlagReady0 + hop0);"), "S = Q·Kᵀ one step ahead");
    let args = |r: &mut Rng| fa_args(r, 2, 100, false);
    let mut r = Rng(3);
    run_sources_with(&k, &c.sources, &mut args(&mut r), 20).expect("unedited kernel");
    let edit = |what: &str| without_line(&c.sources, what);
    // The vector cores read the slot without waiting for the cube's product.
    let err = run_sources_with(&k, &edit("CrossCoreWaitFlag(kFlagReady0 + hop0);"), &mut args(&mut r), 5).expect_err("race");
    assert!(err.contains("cross-core race") || err.contains("unbalanced cross-core flags"), "{err}");
    // The cube refills a slot without waiting for the vector cores to free it.
    let err = run_sources_with(&k, &edit("CrossCoreWaitFlag(kFlagFree0 + (hop0 ^ 1));"), &mut args(&mut r), 5).expect_err("race");
    assert!(err.contains("cross-core race") || err.contains("unbalanced cross-core flags") || err.contains("counter overflows"), "{err}");
}

/// f16 FlashAttention arguments (batch 1, D 32, no window or sinks): `h` heads of `s` rows.
fn fa_args(r: &mut Rng, h: usize, s: usize, causal: bool) -> Vec<Arg> {
    vec![
        Arg::Tensor(r.tensor_uniform(DType::F16, &[1, h, s, 32], 1.0)),
        Arg::Tensor(r.tensor_uniform(DType::F16, &[1, h, s, 32], 1.0)),
        Arg::Tensor(r.tensor_uniform(DType::F16, &[1, h, s, 32], 1.0)),
        Arg::Tensor(Tensor::zeros(DType::F32, &[h])),
        Arg::Tensor(Tensor::zeros(DType::F16, &[1, h, s, 32])),
        Arg::Tensor(Tensor::zeros(DType::F32, &[1, h, s])),
        Arg::F32(0.2),
        Arg::Bool(causal),
        Arg::Bool(false),
        Arg::I32(0),
        Arg::Bool(false),
    ]
}

/// `sources` with the first kernel line that reads exactly `what` (trimmed) removed.
fn without_line(sources: &opc_codegen::ascendc::Sources, what: &str) -> opc_codegen::ascendc::Sources {
    let mut s = sources.clone();
    let line = s.kernel_cpp.lines().find(|l| l.trim() == what).unwrap_or_else(|| panic!("no line `{what}`")).to_string();
    s.kernel_cpp = s.kernel_cpp.replacen(&format!("{line}\n"), "", 1);
    s
}
