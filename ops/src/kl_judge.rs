//! KL-judge verification of a speculative draft (JuDi greedy rule). The math is in
//! `kernels/kl_judge.opc`: `kl_rows` (per-position KL, confidence, argmax, accept) and
//! `accept_prefix` (accepted prefix length and emitted tokens). This driver checks shapes, picks
//! the vocab tile, launches both and reads the accepted count back to size `emitted`.

use crate::blocks::{dims, pick, shape};
use crate::{expect_dtype, Ops, Result};
use opc_dsl::Instance;
use opc_ir::{ArgRef, DType, Tensor};

const FILE: &str = "kl_judge";
const OP: &str = "kl_judge";

#[derive(Clone, Debug)]
pub struct JudgeOut {
    /// f32 [γ]: KL(p_target ‖ q_draft) per draft position.
    pub kl: Tensor,
    /// u8 [γ]: 1 where d_t == argmax p_t or (max p_t <= 0.9 and KL_t < τ).
    pub accept: Tensor,
    /// n: the leading run of accepts.
    pub accepted: usize,
    /// d_1..d_n then argmax p_{n+1} (n + 1 tokens).
    pub emitted: Vec<i32>,
}

/// target_logits f32 [γ+1, V], draft_logits f32 [γ, V], draft_tokens i32 [γ], threshold τ (nats).
pub fn kl_judge(ops: &Ops, target_logits: &Tensor, draft_logits: &Tensor, draft_tokens: &Tensor, tau: f32) -> Result<JudgeOut> {
    expect_dtype(OP, "target_logits", target_logits, &[DType::F32])?;
    expect_dtype(OP, "draft_logits", draft_logits, &[DType::F32])?;
    expect_dtype(OP, "draft_tokens", draft_tokens, &[DType::I32])?;
    let [g, v] = dims::<2>(OP, "draft_logits", "[γ, V]", draft_logits)?;
    let [g1, vt] = dims::<2>(OP, "target_logits", "[γ+1, V]", target_logits)?;
    if g1 != g + 1 || vt != v {
        return Err(shape(
            OP,
            format!("`target_logits` is {:?}, expected [γ+1, V] = [{}, {v}] (`draft_logits` is [γ, V] = {:?})", target_logits.shape, g + 1, draft_logits.shape),
        ));
    }
    if draft_tokens.shape != [g] {
        return Err(shape(OP, format!("`draft_tokens` is {:?}, expected [γ] = [{g}]", draft_tokens.shape)));
    }
    if v == 0 {
        return Err(shape(OP, "the vocabulary is empty (V = 0)".to_string()));
    }

    let inst = Instance::default().tunable("BV", pick(&[16, 64, 256, 1024, 4096], v, 1024));
    let mut kl = Tensor::zeros(DType::F32, &[g]);
    let mut accept = Tensor::zeros(DType::U8, &[g]);
    let mut target_argmax = Tensor::zeros(DType::I32, &[g + 1]);
    let mut args = [
        ArgRef::In(target_logits),
        ArgRef::In(draft_logits),
        ArgRef::In(draft_tokens),
        ArgRef::Out(&mut kl),
        ArgRef::Out(&mut accept),
        ArgRef::Out(&mut target_argmax),
        ArgRef::F32(tau),
    ];
    ops.kernel(FILE, "kl_rows", &inst)?.launch_refs(&mut args)?;

    let (accepted, emitted) = accept_prefix(ops, &accept, draft_tokens, &target_argmax)?;
    Ok(JudgeOut { kl, accept, accepted, emitted })
}

/// The accepted prefix of γ drafts: (its length, the emitted tokens: the accepted drafts then
/// the correction `fallback[accepted]`), from accept u8 [γ], drafts i32 [γ], fallback i32 [γ+1].
pub(crate) fn accept_prefix(ops: &Ops, accept: &Tensor, drafts: &Tensor, fallback: &Tensor) -> Result<(usize, Vec<i32>)> {
    let g = drafts.numel();
    let inst = Instance::default().tunable("BG", pick(&[16, 64, 256], g + 1, 256));
    let mut count = Tensor::zeros(DType::I32, &[1]);
    let mut tokens = Tensor::zeros(DType::I32, &[g + 1]);
    let mut args = [ArgRef::In(accept), ArgRef::In(drafts), ArgRef::In(fallback), ArgRef::Out(&mut count), ArgRef::Out(&mut tokens)];
    ops.kernel(FILE, "accept_prefix", &inst)?.launch_refs(&mut args)?;
    // the accepted count only sizes the returned token list
    let accepted = count.to_i64_vec()[0] as usize;
    let emitted = tokens.to_i64_vec()[..accepted + 1].iter().map(|&t| t as i32).collect();
    Ok((accepted, emitted))
}
