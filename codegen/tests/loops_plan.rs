//! The loop-and-buffer plan (`opc_codegen::loops`) of small kernels, as `opc build --emit
//! loops` prints it, for both CPU targets' parameters.

mod jit_common;

use jit_common::kernel;
use opc_codegen::loops::{plan_kernel, LoopTarget};
use opc_dsl::Instance;

/// Masked 2-D tile: index views, an elementwise chain, a masked load and store.
const MASKED_2D: &str = r#"
kernel masked(x: f32[M, N], y: out f32[M, N], thr: f32)
tunables { BM: level1 in {8} = 8, BN: level1 in {16} = 16 }
grid(cdiv(M, BM), cdiv(N, BN))
{
    let r = program_id(0) * BM + arange(BM);
    let c = program_id(1) * BN + arange(BN);
    let keep = (r[:, None] + c[None, :]) % 3 != 1;
    let v = load(x[r, c], mask: keep, other: -1.5);
    let t = v * 2.0;
    store(y[r, c], t + thr, mask: t > thr);
}
"#;

/// A loop carrying a row-sum tile, a reduction, and an `if` merging its result.
const ROW_SUMS: &str = r#"
kernel row_sums(x: f32[M, N], y: out f32[M], half: bool)
tunables { BM: level1 in {8} = 8, BN: level1 in {32} = 32 }
grid(cdiv(M, BM))
{
    let rows = program_id(0) * BM + arange(BM);
    var part = zeros([BM, BN], f32);
    for n0 in 0..cdiv(N, BN) {
        part = part + load(x[rows, n0 * BN + arange(BN)]);
    }
    var s = sum(part, 1);
    if half {
        s = s * 0.5;
    }
    store(y[rows], s);
}
"#;

#[test]
fn masked_tile_plan() {
    let k = kernel(MASKED_2D, "masked", &Instance::default());
    insta::assert_snapshot!("masked_cpu", plan_kernel(&k, LoopTarget::CRANELIFT).to_string());
    insta::assert_snapshot!("masked_llvm", plan_kernel(&k, LoopTarget::LLVM).to_string());
}

#[test]
fn loop_plan() {
    let k = kernel(ROW_SUMS, "row_sums", &Instance::default());
    let cpu = plan_kernel(&k, LoopTarget::CRANELIFT);
    let llvm = plan_kernel(&k, LoopTarget::LLVM);
    insta::assert_snapshot!("row_sums_llvm", llvm.to_string());
    // Slot reuse never needs more arena than a bump allocator at the same alignment.
    let bump = plan_kernel(&k, LoopTarget { reuse: false, ..LoopTarget::LLVM });
    assert!(llvm.arena_bytes <= bump.arena_bytes, "{} > {}", llvm.arena_bytes, bump.arena_bytes);
    assert!(cpu.arena_bytes > 0);
}

#[test]
fn targets_by_name() {
    assert_eq!(LoopTarget::by_name("cpu"), Some(LoopTarget::CRANELIFT));
    assert_eq!(LoopTarget::by_name("llvm"), Some(LoopTarget::LLVM));
    assert_eq!(LoopTarget::by_name("ptx"), None);
}
