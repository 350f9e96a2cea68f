//! TEMPORARY: the documented opc-ops driver API (docs/ops-api.md) with `todo!()` bodies, used only
//! with `--features stub-ops` while the real drivers are being written. Delete once they land.
#![allow(dead_code, unused_variables)]

pub mod attention {
    use opc_ir::Tensor;
    use opc_ops::{Ops, Result};
    pub struct AttentionParams { pub causal: bool, pub window: Option<usize>, pub scale: f32 }
    pub struct AttentionOut { pub out: Tensor, pub lse: Tensor }
    pub fn flash_attention(ops: &Ops, q: &Tensor, k: &Tensor, v: &Tensor, sinks: Option<&Tensor>, p: &AttentionParams) -> Result<AttentionOut> { todo!("flash_attention") }
    pub fn flash_decode(ops: &Ops, q: &Tensor, k: &Tensor, v: &Tensor, sinks: Option<&Tensor>, p: &AttentionParams, num_splits: usize) -> Result<AttentionOut> { todo!("flash_decode") }
}
pub mod kron_quant {
    use opc_ir::Tensor;
    use opc_ops::{Ops, Result};
    pub struct KronQuantOut { pub transformed: Tensor, pub codes: Tensor, pub scales: Tensor }
    pub fn kron_quant(ops: &Ops, x: &Tensor, c: &Tensor, p1: &Tensor, p2: &Tensor) -> Result<KronQuantOut> { todo!() }
    pub fn int4_gemm(ops: &Ops, a_codes: &Tensor, a_scales: &Tensor, w_codes: &Tensor, w_scales: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> { todo!() }
}
pub mod mxfp4 {
    use opc_ir::Tensor;
    use opc_ops::{Ops, Result};
    pub struct Mxfp4 { pub codes: Tensor, pub scales: Tensor }
    pub fn quantize(ops: &Ops, x: &Tensor) -> Result<Mxfp4> { todo!() }
    pub fn dequantize(ops: &Ops, w: &Mxfp4) -> Result<Tensor> { todo!() }
    pub fn gemm(ops: &Ops, x: &Tensor, w: &Mxfp4) -> Result<Tensor> { todo!() }
}
pub mod moe {
    use opc_ir::Tensor;
    use opc_ops::{Ops, Result};
    pub enum Routing { TopK { k: usize }, MoGE { groups: usize, router_scale: Tensor } }
    pub struct MoeOut { pub out: Tensor, pub expert_ids: Tensor, pub weights: Tensor }
    pub fn moe_forward(ops: &Ops, x: &Tensor, gate: &Tensor, w1: &Tensor, w3: &Tensor, w2: &Tensor, routing: &Routing) -> Result<MoeOut> { todo!() }
}
pub mod kl_judge {
    use opc_ir::Tensor;
    use opc_ops::{Ops, Result};
    pub struct JudgeOut { pub kl: Tensor, pub accept: Tensor, pub accepted: usize, pub emitted: Vec<i32> }
    pub fn kl_judge(ops: &Ops, target_logits: &Tensor, draft_logits: &Tensor, draft_tokens: &Tensor, tau: f32) -> Result<JudgeOut> { todo!() }
}
