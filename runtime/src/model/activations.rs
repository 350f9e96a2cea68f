//! The compute dtype of the model runtime: what the weight GEMMs / GEMVs take as input.
//!
//! `F32` (the default) keeps every activation f32 and widens bf16 weights inside the linear
//! kernels, so logits match transformers run in f32 (the fixtures' 1e-3). `Bf16` feeds the
//! linears of bf16 weights bf16 inputs, rounded once by the kernel that produces them (RMSNorm,
//! SwiGLU, the attention output's layout swap), so the GEMMs multiply bf16 pairs with f32
//! accumulation, as llama.cpp and transformers run a bf16 checkpoint. Accumulations, norms,
//! softmax, RoPE, the KV cache and the residual stream stay f32 in both modes.

use super::error::ModelError;
use opc_ir::{DType, Tensor};
use std::str::FromStr;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Activations {
    #[default]
    F32,
    Bf16,
}

impl Activations {
    /// The dtype of the input of a linear with weight `w`: bf16 only in bf16 mode and for a bf16
    /// weight (f16 / f32 weights keep f32 inputs, whose products with them are exact in f32).
    pub fn input(self, w: &Tensor) -> DType {
        if self == Activations::Bf16 && w.dtype == DType::BF16 {
            DType::BF16
        } else {
            DType::F32
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Activations::F32 => "f32",
            Activations::Bf16 => "bf16",
        }
    }
}

impl FromStr for Activations {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        match s {
            "f32" => Ok(Activations::F32),
            "bf16" => Ok(Activations::Bf16),
            other => Err(ModelError::Usage(format!("unknown activation dtype `{other}` (f32 or bf16)"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_inputs_only_for_bf16_weights() {
        let w = |d| Tensor::zeros(d, &[2, 2]);
        assert_eq!(Activations::Bf16.input(&w(DType::BF16)), DType::BF16);
        assert_eq!(Activations::Bf16.input(&w(DType::F32)), DType::F32);
        assert_eq!(Activations::Bf16.input(&w(DType::F16)), DType::F32);
        assert_eq!(Activations::F32.input(&w(DType::BF16)), DType::F32);
        assert_eq!("bf16".parse::<Activations>().unwrap(), Activations::Bf16);
        assert_eq!("f16".parse::<Activations>().unwrap_err().to_string(), "unknown activation dtype `f16` (f32 or bf16)");
    }
}
