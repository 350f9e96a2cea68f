//! Lossless speculative sampling: verification of γ draft tokens sampled from the draft model at
//! temperature T. The math is in `kernels/spec_sample.opc` (`spec_rows`: acceptance with
//! probability min(1, p/q) and the residual resample per position) followed by kl_judge.opc's
//! `accept_prefix` (accepted prefix, emitted tokens). The caller supplies the uniforms, so a
//! seeded generator makes the run reproducible.

use crate::blocks::{dims, pick, shape};
use crate::{expect_dtype, Ops, Result};
use opc_dsl::Instance;
use opc_ir::{ArgRef, DType, Tensor};

const OP: &str = "spec_sample";

#[derive(Clone, Debug)]
pub struct SpecOut {
    /// u8 [γ]: 1 where draft token t passed its min(1, p/q) test.
    pub accept: Tensor,
    /// n: the leading run of accepts.
    pub accepted: usize,
    /// d_0..d_{n-1}, then the residual sample at n (the bonus sample from p_γ when n = γ).
    pub emitted: Vec<i32>,
}

/// target_logits f32 [γ+1, V], draft_logits f32 [γ, V], draft_tokens i32 [γ] (sampled from
/// softmax(draft / T)), uniforms u_accept f32 [γ] and u_resample f32 [γ+1] in [0, 1),
/// temperature T > 0.
pub fn spec_sample(
    ops: &Ops,
    target_logits: &Tensor,
    draft_logits: &Tensor,
    draft_tokens: &Tensor,
    u_accept: &Tensor,
    u_resample: &Tensor,
    temperature: f32,
) -> Result<SpecOut> {
    for (name, t) in [("target_logits", target_logits), ("draft_logits", draft_logits), ("u_accept", u_accept), ("u_resample", u_resample)] {
        expect_dtype(OP, name, t, &[DType::F32])?;
    }
    expect_dtype(OP, "draft_tokens", draft_tokens, &[DType::I32])?;
    let [g, v] = dims::<2>(OP, "draft_logits", "[γ, V]", draft_logits)?;
    let [g1, vt] = dims::<2>(OP, "target_logits", "[γ+1, V]", target_logits)?;
    if g1 != g + 1 || vt != v {
        return Err(shape(OP, format!("`target_logits` is {:?}, expected [γ+1, V] = [{}, {v}]", target_logits.shape, g + 1)));
    }
    if draft_tokens.shape != [g] || u_accept.shape != [g] || u_resample.shape != [g + 1] {
        return Err(shape(
            OP,
            format!(
                "`draft_tokens` {:?}, `u_accept` {:?}, `u_resample` {:?}: expected [γ], [γ], [γ+1] with γ = {g}",
                draft_tokens.shape, u_accept.shape, u_resample.shape
            ),
        ));
    }
    if v == 0 {
        return Err(shape(OP, "the vocabulary is empty (V = 0)".to_string()));
    }
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(shape(OP, format!("temperature {temperature} must be > 0")));
    }
    let inst = Instance::default().tunable("BV", pick(&[16, 64, 256, 1024, 4096], v, 1024));
    let mut accept = Tensor::zeros(DType::U8, &[g]);
    let mut resampled = Tensor::zeros(DType::I32, &[g + 1]);
    let mut args = [
        ArgRef::In(target_logits),
        ArgRef::In(draft_logits),
        ArgRef::In(draft_tokens),
        ArgRef::In(u_accept),
        ArgRef::In(u_resample),
        ArgRef::Out(&mut accept),
        ArgRef::Out(&mut resampled),
        ArgRef::F32(1.0 / temperature),
    ];
    ops.kernel("spec_sample", "spec_rows", &inst)?.launch_refs(&mut args)?;
    let (accepted, emitted) = crate::kl_judge::accept_prefix(ops, &accept, draft_tokens, &resampled)?;
    Ok(SpecOut { accept, accepted, emitted })
}
