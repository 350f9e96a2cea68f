//! FlatQuant drivers: the fused Kronecker transform + per-token INT4 quantization, and the INT4
//! GEMM that consumes it. The math lives in `kernels/kron_quant.opc`.

use crate::{expect_dtype, OpError, Ops, Result};
use opc_dsl::Instance;
use crate::blocks::or_zeros;
use opc_ir::{ArgRef, DType, Tensor};

const FILE: &str = "kron_quant";

#[derive(Clone, Debug, PartialEq)]
pub struct KronQuantOut {
    /// f32 [T, n]: x~ = vec(P1ᵀ · mat(x ⊙ c) · P2) per token.
    pub transformed: Tensor,
    /// i4 [T, n], packed (element 2j in the low nibble): clamp(rne(x~ / scale), −8, 7).
    pub codes: Tensor,
    /// f32 [T]: max|x~| / 7 per token.
    pub scales: Tensor,
}

fn err(op: &'static str, msg: impl Into<String>) -> OpError {
    OpError::Shape { op, msg: msg.into() }
}

fn tile(n: usize, lo: usize, hi: usize) -> i64 {
    n.next_power_of_two().clamp(lo, hi) as i64
}

/// FlatQuant online transform fused with per-token symmetric INT4 quantization.
/// x f32 [T, n], c f32 [n], p1 f32 [n1, n1], p2 f32 [n2, n2] with n = n1·n2.
pub fn kron_quant(ops: &Ops, x: &Tensor, c: &Tensor, p1: &Tensor, p2: &Tensor) -> Result<KronQuantOut> {
    const OP: &str = "kron_quant";
    for (name, t) in [("x", x), ("c", c), ("p1", p1), ("p2", p2)] {
        expect_dtype(OP, name, t, &[DType::F32])?;
    }
    if x.shape.len() != 2 {
        return Err(err(OP, format!("`x` must have rank 2 [T, n], got shape {:?}", x.shape)));
    }
    for (name, t) in [("p1", p1), ("p2", p2)] {
        if t.shape.len() != 2 || t.shape[0] != t.shape[1] || t.shape[0] == 0 {
            return Err(err(OP, format!("`{name}` must be a non-empty square matrix, got shape {:?}", t.shape)));
        }
    }
    let (t, n) = (x.shape[0], x.shape[1]);
    let (n1, n2) = (p1.shape[0], p2.shape[0]);
    if n != n1 * n2 {
        return Err(err(OP, format!("`x` has {n} channels but p1 [{n1}, {n1}] ⊗ p2 [{n2}, {n2}] transforms n1·n2 = {}", n1 * n2)));
    }
    if c.shape != [n] {
        return Err(err(OP, format!("`c` has shape {:?}, expected [n={n}]", c.shape)));
    }
    let mut out = KronQuantOut {
        transformed: Tensor::zeros(DType::F32, &[t, n]),
        codes: Tensor::zeros(DType::I4, &[t, n]),
        scales: Tensor::zeros(DType::F32, &[t]),
    };
    if t == 0 {
        return Ok(out);
    }
    let inst = Instance::default().konst("N1", n1 as i64).konst("N2", n2 as i64);
    let mut args = [
        ArgRef::In(x),
        ArgRef::In(c),
        ArgRef::In(p1),
        ArgRef::In(p2),
        ArgRef::Out(&mut out.transformed),
        ArgRef::Out(&mut out.codes),
        ArgRef::Out(&mut out.scales),
    ];
    ops.kernel(FILE, "kron_quant", &inst)?.launch_refs(&mut args)?;
    Ok(out)
}

/// y[m, n] = (Σ_k a[m, k]·w[n, k]) · a_scales[m] · w_scales[n] (+ bias[n]), i32 accumulation.
pub fn int4_gemm(ops: &Ops, a_codes: &Tensor, a_scales: &Tensor, w_codes: &Tensor, w_scales: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    const OP: &str = "int4_gemm";
    expect_dtype(OP, "a_codes", a_codes, &[DType::I4])?;
    expect_dtype(OP, "w_codes", w_codes, &[DType::I4])?;
    expect_dtype(OP, "a_scales", a_scales, &[DType::F32])?;
    expect_dtype(OP, "w_scales", w_scales, &[DType::F32])?;
    if a_codes.shape.len() != 2 {
        return Err(err(OP, format!("`a_codes` must have rank 2 [M, K], got shape {:?}", a_codes.shape)));
    }
    if w_codes.shape.len() != 2 {
        return Err(err(OP, format!("`w_codes` must have rank 2 [N, K], got shape {:?}", w_codes.shape)));
    }
    let (m, k) = (a_codes.shape[0], a_codes.shape[1]);
    let n = w_codes.shape[0];
    if w_codes.shape[1] != k {
        return Err(err(OP, format!("`w_codes` has shape {:?}, expected [N, K={k}] to match `a_codes` {:?}", w_codes.shape, a_codes.shape)));
    }
    if a_scales.shape != [m] {
        return Err(err(OP, format!("`a_scales` has shape {:?}, expected [M={m}]", a_scales.shape)));
    }
    if w_scales.shape != [n] {
        return Err(err(OP, format!("`w_scales` has shape {:?}, expected [N={n}]", w_scales.shape)));
    }
    if let Some(b) = bias {
        expect_dtype(OP, "bias", b, &[DType::F32])?;
        if b.shape != [n] {
            return Err(err(OP, format!("`bias` has shape {:?}, expected [N={n}]", b.shape)));
        }
    }
    let mut y = Tensor::zeros(DType::F32, &[m, n]);
    if m == 0 || n == 0 {
        return Ok(y);
    }
    let inst = Instance::default()
        .tunable("BM", tile(m, 16, 64))
        .tunable("BN", tile(n, 16, 64))
        .tunable("BK", tile(k, 32, 128));
    let bias_t = or_zeros(bias, DType::F32, &[n]);
    let mut args = [
        ArgRef::In(a_codes),
        ArgRef::In(a_scales),
        ArgRef::In(w_codes),
        ArgRef::In(w_scales),
        ArgRef::In(&bias_t),
        ArgRef::Out(&mut y),
        ArgRef::Bool(bias.is_some()),
    ];
    ops.kernel(FILE, "int4_gemm", &inst)?.launch_refs(&mut args)?;
    Ok(y)
}
