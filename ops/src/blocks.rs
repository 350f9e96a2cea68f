//! Model-runtime building blocks: matmul, linear, RMSNorm (alone or with the residual add before
//! it), RoPE (default and YaRN), SwiGLU, gpt-oss clamped SwiGLU, row softmax, embedding, top-k.
//! The math is in `kernels/blocks.opc`; these drivers check shapes, allocate outputs, pick tiles
//! and launch.
//!
//! Also home of the small host-side helpers the moe and kl_judge drivers share (shape checks,
//! tile picking, moving outputs out of the launch arguments).

use crate::{expect_dtype, OpError, Ops, Result};
use opc_dsl::Instance;
use opc_ir::{ArgRef, DType, Tensor};
use std::borrow::Cow;

const FILE: &str = "blocks";
const FLOATS: &[DType] = &[DType::F32, DType::BF16, DType::F16];

/// YaRN RoPE scaling as in transformers' `_compute_yarn_parameters` (the caller resolves
/// `factor`, e.g. max_position_embeddings / original_max_position_embeddings when HF does).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Yarn {
    pub factor: f32,
    pub beta_fast: f32,
    pub beta_slow: f32,
    pub original_max_position_embeddings: usize,
    /// Floor/ceil the correction range (HF default true).
    pub truncate: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeParams {
    pub theta: f32,
    pub yarn: Option<Yarn>,
    /// The dtype the inverse frequencies are held in (f32, bf16 or f16, as `rope_table`'s `F`
    /// allows): a model's parameter dtype, as transformers rounds its `inv_freq` buffer when the
    /// model is converted to it; f32 leaves them unrounded.
    pub freq_dtype: DType,
}

/// C = A·B (+ bias): a [M,K], b [K,N] of one float dtype, bias f32 [N]; result a.dtype [M,N].
pub fn matmul(ops: &Ops, a: &Tensor, b: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    const OP: &str = "matmul";
    expect_dtype(OP, "a", a, FLOATS)?;
    same_dtype(OP, "b", b, a)?;
    let [m, k] = dims::<2>(OP, "a", "[M, K]", a)?;
    let [kb, n] = dims::<2>(OP, "b", "[K, N]", b)?;
    if kb != k {
        return Err(shape(OP, format!("inner dims differ: `a` is {:?} ([M, K]) and `b` is {:?} ([K, N])", a.shape, b.shape)));
    }
    gemm(OP, "matmul", ops, a, b, bias, m, n, k)
}

/// Y = X·Wᵀ (+ bias) with the Hugging Face layout: x [M,K], w [N,K], bias f32 [N]; result x.dtype [M,N].
pub fn linear(ops: &Ops, x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    const OP: &str = "linear";
    expect_dtype(OP, "x", x, FLOATS)?;
    same_dtype(OP, "w", w, x)?;
    let [m, k] = dims::<2>(OP, "x", "[M, K]", x)?;
    let [n, kw] = dims::<2>(OP, "w", "[N, K]", w)?;
    if kw != k {
        return Err(shape(OP, format!("`x` is {:?} ([M, K]) but `w` is {:?}: expected [N, K] with K = {k}", x.shape, w.shape)));
    }
    gemm(OP, "linear", ops, x, w, bias, m, n, k)
}

/// `BM`, `BN`, `BK` of a tiled GEMM kernel (`matmul`, `linear`, the runtime's `linear_w`) of
/// M×N outputs over K. The llvm target fuses the K loop into a cache-blocked GEMM
/// (codegen/src/llvm/kloop.rs) in which every program packs its own operand panels: big output
/// tiles then pay (operand traffic ∝ 1/BM + 1/BN), and a deep K step reads each row of a panel
/// in one run. With `bf16` operands (both bf16: 2-byte packed panels, `vdpbf16ps`) the tiles
/// are 256×256 with a 256-deep step when there are still at least 4 of them (both threads
/// busy): the panels (about 384 KB) stay in L2 and each program re-reads half the operand
/// bytes that 128×128 tiles do; else 128×128, BK 256 for bf16 and 64 for wider types. f32
/// (and the widened operands of `linear_w`) also take 256×256 tiles from M, N ≥ 512 (the
/// f32 chunks are half as deep, so the panels are as big as bf16's): the packing per FLOP
/// halves.
pub(crate) fn gemm_tiles(ops: &Ops, inst: Instance, m: usize, n: usize, k: usize, bf16: bool) -> Instance {
    let llvm = ops.target().name() == "llvm";
    let (cap_mn, cap_k) = match (llvm && m >= 128 && n >= 128, bf16) {
        (true, true) if m >= 512 && n >= 512 => (256, 256),
        (true, true) => (128, 256),
        (true, false) if m >= 512 && n >= 512 => (256, 64),
        (true, false) => (128, 64),
        (false, _) => (64, 32),
    };
    inst.tunable("BM", pick(&[16, 32, 64, 128, 256], m, cap_mn))
        .tunable("BN", pick(&[16, 32, 64, 128, 256], n, cap_mn))
        .tunable("BK", pick(&[8, 16, 32, 64, 128, 256], k, cap_k))
}

#[allow(clippy::too_many_arguments)]
fn gemm(op: &'static str, kernel: &str, ops: &Ops, a: &Tensor, b: &Tensor, bias: Option<&Tensor>, m: usize, n: usize, k: usize) -> Result<Tensor> {
    let has_bias = bias.is_some();
    if let Some(t) = bias {
        expect_dtype(op, "bias", t, &[DType::F32])?;
        if t.shape != [n] {
            return Err(shape(op, format!("`bias` is {:?}, expected [N] = [{n}]", t.shape)));
        }
    }
    let bias = or_zeros(bias, DType::F32, &[n]);
    let mut out = Tensor::zeros(a.dtype, &[m, n]);
    if out.numel() == 0 {
        return Ok(out);
    }
    let inst = gemm_tiles(ops, Instance::default().dtype("T", a.dtype), m, n, k, a.dtype == DType::BF16);
    let mut args = [ArgRef::In(a), ArgRef::In(b), ArgRef::In(&bias), ArgRef::Out(&mut out), ArgRef::Bool(has_bias)];
    ops.kernel(FILE, kernel, &inst)?.launch_refs(&mut args)?;
    Ok(out)
}

/// RMSNorm over the last dim: x [T,H], w [H] (dtype of x); f32 mean of squares; output x.dtype.
pub fn rmsnorm(ops: &Ops, x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
    rmsnorm_to(ops, x, w, eps, x.dtype)
}

/// [`rmsnorm`] with the result stored as `out` (x.dtype, or bf16 from f32: the bf16 input of the
/// next linear, rounded once as the norm writes it).
pub fn rmsnorm_to(ops: &Ops, x: &Tensor, w: &Tensor, eps: f32, out: DType) -> Result<Tensor> {
    const OP: &str = "rmsnorm";
    expect_dtype(OP, "x", x, FLOATS)?;
    same_dtype(OP, "w", w, x)?;
    if out != x.dtype && !(x.dtype == DType::F32 && out == DType::BF16) {
        return Err(shape(OP, format!("cannot store the result of a {} RMSNorm as {out} (only as {0}, or f32 as bf16)", x.dtype)));
    }
    let [t, h] = dims::<2>(OP, "x", "[T, H]", x)?;
    if w.shape != [h] {
        return Err(shape(OP, format!("`w` is {:?}, expected [H] = [{h}]", w.shape)));
    }
    let mut y = Tensor::zeros(out, &[t, h]);
    if y.numel() == 0 {
        return Ok(y);
    }
    let inst = Instance::default()
        .dtype("T", x.dtype)
        .dtype("O", out)
        .tunable("BT", pick(&[1, 2, 4, 8, 16], t, 4))
        .tunable("BH", pick(&[16, 32, 64, 128, 256, 512, 1024], h, 1024));
    let mut args = [ArgRef::In(x), ArgRef::In(w), ArgRef::Out(&mut y), ArgRef::F32(eps)];
    ops.kernel(FILE, "rmsnorm", &inst)?.launch_refs(&mut args)?;
    Ok(y)
}

/// The residual add fused into the next RMSNorm: `x += d` in place (f32 [T,H], the residual
/// stream), then `rmsnorm(x) · w` (w f32 [H]) stored as `out` (f32, or bf16: the input of a bf16
/// linear). Returns the new x and the normed rows: the values of [`crate::model::add`] then
/// [`rmsnorm_to`], with one kernel instead of two passes over the stream.
pub fn add_rmsnorm_to(ops: &Ops, mut x: Tensor, d: &Tensor, w: &Tensor, eps: f32, out: DType) -> Result<(Tensor, Tensor)> {
    const OP: &str = "add_rmsnorm";
    expect_dtype(OP, "x", &x, &[DType::F32])?;
    expect_dtype(OP, "d", d, &[DType::F32])?;
    expect_dtype(OP, "w", w, &[DType::F32])?;
    if out != DType::F32 && out != DType::BF16 {
        return Err(shape(OP, format!("cannot store the result as {out} (f32 or bf16)")));
    }
    let [t, h] = dims::<2>(OP, "x", "[T, H]", &x)?;
    if d.shape != x.shape {
        return Err(shape(OP, format!("`d` is {:?}, expected the shape of `x` {:?}", d.shape, x.shape)));
    }
    if w.shape != [h] {
        return Err(shape(OP, format!("`w` is {:?}, expected [H] = [{h}]", w.shape)));
    }
    let mut y = Tensor::zeros(out, &[t, h]);
    if y.numel() == 0 {
        return Ok((x, y));
    }
    let inst = Instance::default()
        .dtype("O", out)
        .tunable("BT", pick(&[1, 2, 4, 8, 16], t, 4))
        .tunable("BH", pick(&[16, 32, 64, 128, 256, 512, 1024], h, 1024));
    let mut args = [ArgRef::In(d), ArgRef::In(w), ArgRef::Out(&mut x), ArgRef::Out(&mut y), ArgRef::F32(eps)];
    ops.kernel(FILE, "add_rmsnorm", &inst)?.launch_refs(&mut args)?;
    Ok((x, y))
}

/// RoPE on x [T,H,D] (D even, at most 512) at `positions` i32 [T], HF rotate_half convention:
/// [`rope_table`] of the positions, then [`rope_heads`] of all heads.
pub fn rope(ops: &Ops, x: &Tensor, positions: &Tensor, p: &RopeParams) -> Result<Tensor> {
    let [t, nh, d] = dims::<3>("rope", "x", "[T, H, D]", x)?;
    if positions.shape != [t] {
        return Err(shape("rope", format!("`positions` is {:?}, expected [T] = [{t}]", positions.shape)));
    }
    let table = rope_table(ops, positions, d, p)?;
    rope_heads(ops, x, &table, 0, nh)
}

/// The cos/sin table f32 [T, 2, D/2] of RoPE with head dim `d` (even, at most 512) at `positions`
/// i32 [T]: row t holds cos and sin of pos_t · inv_freq (times the YaRN attention factor). One
/// table serves every layer's q and k of a forward batch ([`rope_heads`]).
pub fn rope_table(ops: &Ops, positions: &Tensor, d: usize, p: &RopeParams) -> Result<Tensor> {
    const OP: &str = "rope_table";
    expect_dtype(OP, "positions", positions, &[DType::I32])?;
    let [t] = dims::<1>(OP, "positions", "[T]", positions)?;
    rope_head_dim(OP, d)?;
    let mut table = Tensor::zeros(DType::F32, &[t, 2, d / 2]);
    if table.numel() == 0 {
        return Ok(table);
    }
    let inst = Instance::default().dtype("F", p.freq_dtype).konst("HALF", (d / 2) as i64).tunable("BT", pick(&[1, 2, 4, 8, 16, 32], t, 8));
    let y = p.yarn.unwrap_or(Yarn { factor: 1.0, beta_fast: 32.0, beta_slow: 1.0, original_max_position_embeddings: 1, truncate: true });
    let mut args = [
        ArgRef::In(positions),
        ArgRef::Out(&mut table),
        ArgRef::F32(p.theta),
        ArgRef::Bool(p.yarn.is_some()),
        ArgRef::F32(y.factor),
        ArgRef::F32(y.beta_fast),
        ArgRef::F32(y.beta_slow),
        ArgRef::F32(y.original_max_position_embeddings as f32),
        ArgRef::Bool(y.truncate),
    ];
    ops.kernel(FILE, "rope_table", &inst)?.launch_refs(&mut args)?;
    Ok(table)
}

/// RoPE's head dim `d` (the kernels' `HALF` = d/2 lanes of cos and sin): even, positive and at
/// most 512.
fn rope_head_dim(op: &'static str, d: usize) -> Result<()> {
    if d % 2 != 0 || d == 0 || d > 512 {
        return Err(shape(op, format!("head dim D = {d} must be even, positive and at most 512")));
    }
    Ok(())
}

/// RoPE of heads `h0..h0 + nh` of x [T, H, D] (a copy, [T, nh, D], x's dtype) with the table
/// of [`rope_table`] f32 [T, 2, D/2]: the rotated q or k heads of the fused q/k/v projection in
/// one pass.
pub fn rope_heads(ops: &Ops, x: &Tensor, table: &Tensor, h0: usize, nh: usize) -> Result<Tensor> {
    const OP: &str = "rope";
    expect_dtype(OP, "x", x, FLOATS)?;
    expect_dtype(OP, "table", table, &[DType::F32])?;
    let [t, h, d] = dims::<3>(OP, "x", "[T, H, D]", x)?;
    if h0 + nh > h {
        return Err(shape(OP, format!("heads {h0}..{} are outside the {h} heads of `x` {:?}", h0 + nh, x.shape)));
    }
    rope_head_dim(OP, d)?;
    if table.shape != [t, 2, d / 2] {
        return Err(shape(OP, format!("`table` is {:?}, expected [T, 2, D/2] = [{t}, 2, {}]", table.shape, d / 2)));
    }
    let mut out = Tensor::zeros(x.dtype, &[t, nh, d]);
    if out.numel() == 0 {
        return Ok(out);
    }
    let inst = Instance::default().dtype("T", x.dtype).konst("HALF", (d / 2) as i64).tunable("BH", pick(&[1, 2, 4, 8, 16, 32], nh, 32));
    let mut args = [ArgRef::In(x), ArgRef::In(table), ArgRef::Out(&mut out), ArgRef::I32(h0 as i32)];
    ops.kernel(FILE, "rope", &inst)?.launch_refs(&mut args)?;
    Ok(out)
}

/// silu(gate) · up, gate and up [T,I] of one float dtype.
pub fn swiglu(ops: &Ops, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    const OP: &str = "swiglu";
    expect_dtype(OP, "gate", gate, FLOATS)?;
    same_dtype(OP, "up", up, gate)?;
    let [t, i] = dims::<2>(OP, "gate", "[T, I]", gate)?;
    if up.shape != gate.shape {
        return Err(shape(OP, format!("`up` is {:?}, expected the shape of `gate` {:?}", up.shape, gate.shape)));
    }
    let mut out = Tensor::zeros(gate.dtype, &[t, i]);
    if out.numel() == 0 {
        return Ok(out);
    }
    let inst = elementwise_inst(gate.dtype, t, i);
    let mut args = [ArgRef::In(gate), ArgRef::In(up), ArgRef::Out(&mut out)];
    ops.kernel(FILE, "swiglu", &inst)?.launch_refs(&mut args)?;
    Ok(out)
}

/// gpt-oss clamped SwiGLU on gate_up [T, 2I] (gate = even columns, up = odd): result [T, I].
pub fn clamped_swiglu(ops: &Ops, gate_up: &Tensor, alpha: f32, limit: f32) -> Result<Tensor> {
    const OP: &str = "clamped_swiglu";
    expect_dtype(OP, "gate_up", gate_up, FLOATS)?;
    let [t, i2] = dims::<2>(OP, "gate_up", "[T, 2I]", gate_up)?;
    if i2 % 2 != 0 {
        return Err(shape(OP, format!("`gate_up` is {:?}: the last dim must be even (gate and up interleaved)", gate_up.shape)));
    }
    let i = i2 / 2;
    let mut out = Tensor::zeros(gate_up.dtype, &[t, i]);
    if out.numel() == 0 {
        return Ok(out);
    }
    let inst = elementwise_inst(gate_up.dtype, t, i);
    let mut args = [ArgRef::In(gate_up), ArgRef::Out(&mut out), ArgRef::F32(alpha), ArgRef::F32(limit)];
    ops.kernel(FILE, "clamped_swiglu", &inst)?.launch_refs(&mut args)?;
    Ok(out)
}

fn elementwise_inst(dt: DType, rows: usize, cols: usize) -> Instance {
    Instance::default()
        .dtype("T", dt)
        .tunable("BR", pick(&[1, 2, 4, 8, 16, 32], rows, 8))
        .tunable("BC", pick(&[16, 32, 64, 128, 256, 512], cols, 256))
}

/// Softmax over the last dim of x [T,V], any V; output x.dtype.
pub fn softmax(ops: &Ops, x: &Tensor) -> Result<Tensor> {
    const OP: &str = "softmax";
    expect_dtype(OP, "x", x, FLOATS)?;
    let [t, v] = dims::<2>(OP, "x", "[T, V]", x)?;
    let mut out = Tensor::zeros(x.dtype, &[t, v]);
    if out.numel() == 0 {
        return Ok(out);
    }
    let inst = Instance::default()
        .dtype("T", x.dtype)
        .tunable("BR", pick(&[1, 2, 4, 8, 16], t, 4))
        .tunable("BV", pick(&[16, 64, 256, 1024, 4096], v, 1024));
    let mut args = [ArgRef::In(x), ArgRef::Out(&mut out)];
    ops.kernel(FILE, "softmax", &inst)?.launch_refs(&mut args)?;
    Ok(out)
}

/// Rows of table [V,H] at ids i32 [T]: result [T,H] in the table dtype (ids outside [0, V) give zeros).
pub fn embedding(ops: &Ops, table: &Tensor, ids: &Tensor) -> Result<Tensor> {
    const OP: &str = "embedding";
    expect_dtype(OP, "table", table, FLOATS)?;
    expect_dtype(OP, "ids", ids, &[DType::I32])?;
    let [_, h] = dims::<2>(OP, "table", "[V, H]", table)?;
    let [t] = dims::<1>(OP, "ids", "[T]", ids)?;
    let mut out = Tensor::zeros(table.dtype, &[t, h]);
    if out.numel() == 0 {
        return Ok(out);
    }
    let inst = Instance::default()
        .dtype("T", table.dtype)
        .tunable("BT", pick(&[1, 2, 4, 8, 16, 32], t, 8))
        .tunable("BH", pick(&[16, 32, 64, 128, 256, 512], h, 256));
    let mut args = [ArgRef::In(table), ArgRef::In(ids), ArgRef::Out(&mut out)];
    ops.kernel(FILE, "embedding", &inst)?.launch_refs(&mut args)?;
    Ok(out)
}

/// The k largest entries of every row of x f32 [T,V], descending, ties to the smaller index:
/// (values f32 [T,k], indices i32 [T,k]).
pub fn topk(ops: &Ops, x: &Tensor, k: usize) -> Result<(Tensor, Tensor)> {
    const OP: &str = "topk";
    expect_dtype(OP, "x", x, &[DType::F32])?;
    let [t, v] = dims::<2>(OP, "x", "[T, V]", x)?;
    if k == 0 || k > v {
        return Err(shape(OP, format!("k = {k} must be in 1..={v} (V of `x` {:?})", x.shape)));
    }
    let mut values = Tensor::zeros(DType::F32, &[t, k]);
    let mut indices = Tensor::zeros(DType::I32, &[t, k]);
    if t == 0 {
        return Ok((values, indices));
    }
    let inst = Instance::default()
        .tunable("BR", pick(&[1, 2, 4, 8, 16], t, 4))
        .tunable("BV", pick(&[16, 64, 256, 1024], v, 1024));
    let mut args = [ArgRef::In(x), ArgRef::Out(&mut values), ArgRef::Out(&mut indices)];
    ops.kernel(FILE, "topk", &inst)?.launch_refs(&mut args)?;
    Ok((values, indices))
}

// ---------------------------------------------------------------- shared driver helpers

pub(crate) fn shape(op: &'static str, msg: String) -> OpError {
    OpError::Shape { op, msg }
}

/// The dims of a rank-`N` tensor, or a shape error naming the expected layout.
pub(crate) fn dims<const N: usize>(op: &'static str, name: &str, layout: &str, t: &Tensor) -> Result<[usize; N]> {
    t.shape
        .as_slice()
        .try_into()
        .map_err(|_| shape(op, format!("`{name}` must be {layout} (rank {N}), got shape {:?}", t.shape)))
}

fn same_dtype(op: &'static str, name: &str, t: &Tensor, like: &Tensor) -> Result<()> {
    if t.dtype == like.dtype {
        Ok(())
    } else {
        Err(shape(op, format!("`{name}` has dtype {}, expected {} (the dtype of the first operand)", t.dtype, like.dtype)))
    }
}

/// The same bytes viewed with another row-major shape of equal element count.
pub(crate) fn reshaped(t: &Tensor, shape: &[usize]) -> Tensor {
    debug_assert_eq!(t.numel(), shape.iter().product::<usize>());
    Tensor { dtype: t.dtype, shape: shape.to_vec(), data: t.data.clone() }
}

/// `t`, or (when absent) zeros of `dtype` and `shape`: an optional kernel operand whose load
/// the kernel masks off, present only to bind its shape.
pub(crate) fn or_zeros<'a>(t: Option<&'a Tensor>, dtype: DType, shape: &[usize]) -> Cow<'a, Tensor> {
    t.map_or_else(|| Cow::Owned(Tensor::zeros(dtype, shape)), Cow::Borrowed)
}

/// The smallest tile of `space` (ascending) that covers `n`, capped at `cap` (a member of `space`).
pub(crate) fn pick(space: &[i64], n: usize, cap: i64) -> i64 {
    let fit = space.iter().copied().find(|&s| s >= n as i64).unwrap_or(cap);
    fit.min(cap)
}
