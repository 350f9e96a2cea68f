//! Shared harness of the `cpu_*` tests: compile DSL source, run it on the `interp` and `cpu`
//! targets, and require identical results (bit for bit) and identical errors.
#![allow(dead_code)]

use opc_dsl::Instance;
use opc_ir::{Arg, DType, Kernel, Tensor};

/// Compile kernel `name` of `src` and run the default pass pipeline.
pub fn kernel(src: &str, name: &str, inst: &Instance) -> Kernel {
    let mut k = opc_dsl::compile("test.opc", src, name, inst).unwrap_or_else(|d| panic!("{d}"));
    opc_passes::run_pipeline(&mut k, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
    k
}

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
}

fn describe(t: &Tensor, i: usize) -> String {
    format!("raw {:#x} = {}", t.get_raw(i), t.get_f64(i))
}

/// Run `k` on both targets with copies of `args`; outputs and errors must be identical.
pub fn same(k: &Kernel, args: &[Arg]) {
    let interp = opc_codegen::target_by_name("interp").unwrap().compile(k).unwrap();
    let cpu = opc_codegen::target_by_name("cpu").unwrap().compile(k).unwrap_or_else(|e| panic!("cpu compile: {e}"));
    let mut a = args.to_vec();
    let mut b = args.to_vec();
    let ra = interp.launch(&mut a).map_err(|e| e.to_string());
    let rb = cpu.launch(&mut b).map_err(|e| e.to_string());
    assert_eq!(ra, rb, "launch results differ for `{}`", k.name);
    for (p, (x, y)) in a.iter().zip(&b).enumerate() {
        if let (Arg::Tensor(x), Arg::Tensor(y)) = (x, y) {
            if x.data != y.data {
                let n = x.numel();
                // NaN sign and payload are not specified by IEEE 754 arithmetic (nor by Rust):
                // any NaN matches any NaN; everything else must match bit for bit.
                let nan = |t: &Tensor, i: usize| t.dtype.is_float() && t.get_f64(i).is_nan();
                let bad: Vec<usize> = (0..n).filter(|&i| x.get_raw(i) != y.get_raw(i) && !(nan(x, i) && nan(y, i))).collect();
                if bad.is_empty() {
                    continue;
                }
                let show: Vec<String> =
                    bad.iter().take(6).map(|&i| format!("[{i}] interp {} / cpu {}", describe(x, i), describe(y, i))).collect();
                panic!(
                    "`{}` argument #{p} ({} {:?}): {} of {n} elements differ:\n  {}",
                    k.name,
                    x.dtype,
                    x.shape,
                    bad.len(),
                    show.join("\n  ")
                );
            }
        }
    }
}
