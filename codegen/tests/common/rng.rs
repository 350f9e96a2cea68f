//! The deterministic xorshift generator of the codegen test harnesses (`jit_common.rs`,
//! `ascendc_common.rs`): random tensors with or without special values, raw codes and ints.
#![allow(dead_code)]

use opc_ir::{DType, Tensor};

/// Deterministic xorshift generator for test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0 | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// Mostly uniform in [-4, 4), with occasional specials (0, -0, ±inf, NaN, halves, big).
    pub fn f(&mut self, specials: bool) -> f32 {
        if specials && self.below(16) == 0 {
            return [0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 0.5, -2.5, 1e30, 1e-30][self.below(9) as usize];
        }
        (self.below(1 << 24) as f32 / (1 << 24) as f32) * 8.0 - 4.0
    }
    pub fn tensor_f(&mut self, d: DType, shape: &[usize], specials: bool) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.f(specials)).collect();
        Tensor::from_f32(d, shape, &v)
    }
    /// Raw random codes of any dtype (every bit pattern).
    pub fn tensor_raw(&mut self, d: DType, shape: &[usize]) -> Tensor {
        let mut t = Tensor::zeros(d, shape);
        for b in t.data.iter_mut() {
            *b = self.next_u64() as u8;
        }
        if d == DType::Bool {
            t.data.iter_mut().for_each(|b| *b &= 1);
        }
        t
    }
    pub fn tensor_i(&mut self, d: DType, shape: &[usize], lo: i32, hi: i32) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<i32> = (0..n).map(|_| lo + self.below((hi - lo + 1) as u64) as i32).collect();
        Tensor::from_i32(d, shape, &v)
    }
    /// Uniform in [-a, a) (the AscendC tests' distribution).
    pub fn uniform(&mut self, a: f32) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
    }
    pub fn tensor_uniform(&mut self, d: DType, shape: &[usize], a: f32) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.uniform(a)).collect();
        Tensor::from_f32(d, shape, &v)
    }
}
