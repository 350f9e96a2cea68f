//! Block-wise MXFP4 drivers: quantize, dequantize, and GEMM / GEMV with MXFP4 weights decoded
//! on the fly. The math lives in `kernels/mxfp4.opc`.

use crate::{expect_dtype, OpError, Ops, Result};
use opc_dsl::Instance;
use opc_ir::{ArgRef, DType, Tensor};
use std::borrow::Cow;

const FILE: &str = "mxfp4";

/// An MXFP4 tensor [R, K]: blocks of 32 along K.
#[derive(Clone, Debug, PartialEq)]
pub struct Mxfp4 {
    /// e2m1 [R, K], packed two per byte (element 2j in the low nibble).
    pub codes: Tensor,
    /// e8m0 [R, K/32]: the block's scale 2^(e−127); 0xFF is NaN.
    pub scales: Tensor,
}

fn err(op: &'static str, msg: impl Into<String>) -> OpError {
    OpError::Shape { op, msg: msg.into() }
}

fn tile(n: usize, lo: usize, hi: usize) -> i64 {
    n.next_power_of_two().clamp(lo, hi) as i64
}

/// Blocks per program of the quantize / dequantize kernels.
fn blocks_per_program(k: usize) -> i64 {
    tile(k / 32, 1, 8)
}

/// Check an MXFP4 tensor and return its logical (R, K).
fn check_mx(op: &'static str, w: &Mxfp4, name: &str) -> Result<(usize, usize)> {
    expect_dtype(op, &format!("{name}.codes"), &w.codes, &[DType::E2M1])?;
    expect_dtype(op, &format!("{name}.scales"), &w.scales, &[DType::E8M0])?;
    if w.codes.shape.len() != 2 {
        return Err(err(op, format!("`{name}.codes` must have rank 2 [R, K], got shape {:?}", w.codes.shape)));
    }
    let (r, k) = (w.codes.shape[0], w.codes.shape[1]);
    if k % 32 != 0 {
        return Err(err(op, format!("`{name}.codes` has K = {k}, which is not a multiple of the block size 32")));
    }
    if w.scales.shape != [r, k / 32] {
        return Err(err(op, format!("`{name}.scales` has shape {:?}, expected [R={r}, K/32={}]", w.scales.shape, k / 32)));
    }
    Ok((r, k))
}

/// OCP MX quantization with the FLOOR scale rule: per block of 32 along K,
/// shared = floor(log2(amax)) − 2 (clamped to ≥ −127), codes = e2m1_rne_sat(x / 2^shared).
pub fn quantize(ops: &Ops, x: &Tensor) -> Result<Mxfp4> {
    const OP: &str = "mxfp4_quantize";
    expect_dtype(OP, "x", x, &[DType::F32])?;
    if x.shape.len() != 2 {
        return Err(err(OP, format!("`x` must have rank 2 [R, K], got shape {:?}", x.shape)));
    }
    let (r, k) = (x.shape[0], x.shape[1]);
    if k % 32 != 0 {
        return Err(err(OP, format!("`x` has K = {k}, which is not a multiple of the block size 32")));
    }
    let mut codes = Tensor::zeros(DType::E2M1, &[r, k]);
    let mut scales = Tensor::zeros(DType::E8M0, &[r, k / 32]);
    if r == 0 || k == 0 {
        return Ok(Mxfp4 { codes, scales });
    }
    let inst = Instance::default().tunable("BB", blocks_per_program(k));
    let mut args = [ArgRef::In(x), ArgRef::Out(&mut codes), ArgRef::Out(&mut scales)];
    ops.kernel(FILE, "mxfp4_quantize", &inst)?.launch_refs(&mut args)?;
    Ok(Mxfp4 { codes, scales })
}

/// x[r, k] = e2m1(codes[r, k]) · 2^(scales[r, k/32] − 127), as f32 [R, K].
pub fn dequantize(ops: &Ops, w: &Mxfp4) -> Result<Tensor> {
    const OP: &str = "mxfp4_dequantize";
    let (r, k) = check_mx(OP, w, "w")?;
    let mut x = Tensor::zeros(DType::F32, &[r, k]);
    if r == 0 || k == 0 {
        return Ok(x);
    }
    let inst = Instance::default().tunable("BB", blocks_per_program(k));
    let mut args = [ArgRef::In(&w.codes), ArgRef::In(&w.scales), ArgRef::Out(&mut x)];
    ops.kernel(FILE, "mxfp4_dequantize", &inst)?.launch_refs(&mut args)?;
    Ok(x)
}

/// K step (`BK`) of the MXFP4 GEMM kernels (`mxfp4_gemm`, the gpt-oss expert GEMMs): one
/// 32-element block per step on the llvm target, whose K loop decodes each step's
/// `[BN, BK/32, 32]` tile into the packed weight panel: one block per row per step decoded
/// faster than four (M = 512 over a 14336 x 4096 weight: 157-161 ms against 162-172 ms; the
/// gpt-oss expert GEMMs of a 512-token prefill 168-178 ms against 199-219 ms, alternating
/// runs). 128 elsewhere: the PTX lowering does not distribute `[1]`-shaped block tiles.
pub(crate) fn gemm_step(ops: &Ops) -> usize {
    if ops.target().name() == "llvm" {
        32
    } else {
        128
    }
}

/// y = x · Wᵀ with W [N, K] kept in MXFP4 (gpt-oss layout: blocks along K); f32 [M, N].
/// M == 1 runs the GEMV kernel, larger M the tiled GEMM. `w` is read where it is, never copied.
pub fn gemm(ops: &Ops, x: &Tensor, w: &Mxfp4) -> Result<Tensor> {
    const OP: &str = "mxfp4_gemm";
    expect_dtype(OP, "x", x, &[DType::F32, DType::BF16])?;
    if x.shape.len() != 2 {
        return Err(err(OP, format!("`x` must have rank 2 [M, K], got shape {:?}", x.shape)));
    }
    let (n, kw) = check_mx(OP, w, "w")?;
    let (m, k) = (x.shape[0], x.shape[1]);
    if k != kw {
        return Err(err(OP, format!("`x` has K = {k} but the MXFP4 weight is [N={n}, K={kw}]")));
    }
    if m == 0 || n == 0 {
        return Ok(Tensor::zeros(DType::F32, &[m, n]));
    }
    let (kernel, inst, xa, mut y) = if m == 1 {
        // BK: the largest step within K (full steps run unmasked in the fused reduction).
        // BN: N / 16 rounded up to a power of two, 8 to 64 rows (at least 8 programs): each
        // program copies the activations once for its rows (`block_evenodd.rs`), and 64 rows
        // over a 14336 x 4096 weight ran 9-12% (f32 x) and 2-6% (bf16 x) faster than 16
        // (`opc tune`, alternating runs).
        let inst = Instance::default().dtype("T", x.dtype).tunable("BN", tile(n / 16, 8, 64)).tunable("BK", tile(k / 2 + 1, 32, 4096));
        ("mxfp4_gemv", inst, Cow::Owned(Tensor { shape: vec![k], ..x.clone() }), Tensor::zeros(DType::F32, &[n]))
    } else {
        // The llvm target decodes each weight tile into a packed panel once per BM rows and
        // packs the activation rows once per BN columns (`kloop.rs`): large tiles amortize
        // both (M = 512 over a 14336 x 4096 weight: 64 x 64 tiles 458 GFLOP/s, 256 x 256 719).
        let (bm, bn) = if ops.target().name() == "llvm" { (256, 256) } else { (64, 64) };
        let inst = Instance::default()
            .dtype("T", x.dtype)
            .tunable("BM", tile(m, 16, bm))
            .tunable("BN", tile(n, 16, bn))
            .tunable("BK", tile(k, 32, gemm_step(ops)));
        ("mxfp4_gemm", inst, Cow::Borrowed(x), Tensor::zeros(DType::F32, &[m, n]))
    };
    let mut args = [ArgRef::In(&xa), ArgRef::In(&w.codes), ArgRef::In(&w.scales), ArgRef::Out(&mut y)];
    ops.kernel(FILE, kernel, &inst)?.launch_refs(&mut args)?;
    Ok(Tensor { shape: vec![m, n], ..y })
}
