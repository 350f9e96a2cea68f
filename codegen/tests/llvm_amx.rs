//! The AMX path of the `llvm` target (`codegen/src/llvm/amx.rs`): bf16 GEMMs compiled for a CPU
//! with `amx-tile` / `amx-bf16` use tile instructions (checked on any host, nothing executed),
//! and on a host that has AMX they match the interpreter (skipped, with a message, elsewhere).
#![cfg(feature = "llvm22-1")]

#[path = "jit_common.rs"]
mod common;

use common::{check, kernel, Cmp, Rng};
use opc_dsl::Instance;
use opc_ir::{Arg, DType, Tensor};

const BLOCKS: &str = include_str!("../../ops/kernels/blocks.opc");

const AMX: &str = "+avx512f,+avx512bw,+avx512vl,+avx512bf16,+amx-tile,+amx-bf16";
const NO_AMX: &str = "+avx512f,+avx512bw,+avx512vl,+avx512bf16";

fn inst(d: DType) -> Instance {
    Instance::default().dtype("T", d).tunable("BM", 64).tunable("BN", 64).tunable("BK", 32)
}

#[test]
fn bf16_gemm_uses_amx_tiles_when_the_target_has_them() {
    for name in ["matmul", "linear"] {
        let k = kernel(BLOCKS, name, &inst(DType::BF16));
        let asm = opc_codegen::llvm::emit_asm_for(&k, "sapphirerapids", AMX).unwrap();
        for ins in ["ldtilecfg", "tileloadd", "tdpbf16ps", "tilestored", "tilerelease"] {
            assert!(asm.contains(ins), "{name}: no `{ins}` in the AMX build");
        }
        assert!(!asm.contains("vdpbf16ps"), "{name}: the AMX build still sweeps with vdpbf16ps");
        let asm = opc_codegen::llvm::emit_asm_for(&k, "sapphirerapids", NO_AMX).unwrap();
        assert!(!asm.contains("tdpbf16ps") && !asm.contains("ldtilecfg"), "{name}: tile instructions without amx features");
        assert!(asm.contains("vdpbf16ps"), "{name}: no vdpbf16ps in the avx512bf16 build");
    }
    // f32 GEMMs never use bf16 tiles.
    let k = kernel(BLOCKS, "matmul", &inst(DType::F32));
    let asm = opc_codegen::llvm::emit_asm_for(&k, "sapphirerapids", AMX).unwrap();
    assert!(!asm.contains("tdpbf16ps") && asm.contains("vfmadd"), "f32 matmul on an AMX target");
}

/// Whether this host can run AMX bf16 (cpuid leaf 7: AMX-BF16 is EDX bit 22, AMX-TILE bit 24).
fn host_has_amx() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let r = std::arch::x86_64::__cpuid_count(7, 0);
        r.edx & (1 << 22) != 0 && r.edx & (1 << 24) != 0
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[test]
fn amx_gemm_matches_the_interpreter() {
    if !host_has_amx() {
        eprintln!("skipped: this host has no AMX (amx-tile / amx-bf16); the compile-only test covers the code path");
        return;
    }
    let mut r = Rng(11);
    // Ragged shapes: partial tiles in M, N and K (out-of-range elements load as zero).
    for (m, kk, n) in [(64, 64, 64), (100, 77, 130), (1, 300, 17), (129, 33, 64)] {
        for name in ["matmul", "linear"] {
            let k = kernel(BLOCKS, name, &inst(DType::BF16));
            let wshape = if name == "linear" { [n, kk] } else { [kk, n] };
            let args = vec![
                Arg::Tensor(r.tensor_f(DType::BF16, &[m, kk], false)),
                Arg::Tensor(r.tensor_f(DType::BF16, &wshape, false)),
                Arg::Tensor(r.tensor_f(DType::F32, &[n], false)),
                Arg::Tensor(Tensor::zeros(DType::BF16, &[m, n])),
                Arg::Bool(true),
            ];
            check(&k, &args, Cmp::Close { ulps: 16.0 });
        }
    }
}
