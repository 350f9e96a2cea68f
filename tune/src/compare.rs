//! Whether a candidate configuration computed what the reference configuration did.
//!
//! Tunables change tile shapes, hence the order of a reduction's additions: floats may differ
//! by rounding, never by more. Per dtype, an element passes when
//! `|x - r| <= rtol * (|r| + rms(reference))`, with `rtol` a few units of the dtype's
//! precision (f32 1e-4, f16 2e-3, bf16 1.6e-2: two bf16 ulps); NaN must meet NaN and an
//! infinity the same infinity. Integer and code outputs (quantized values, scales, indices)
//! must be equal except where a reordered sum tipped a rounding: at most one element in a
//! thousand may differ.

use opc_ir::{DType, Tensor};

/// The relative tolerance of a float dtype (module docs).
pub fn rtol(d: DType) -> Option<f64> {
    match d {
        DType::F32 => Some(1e-4),
        DType::F16 => Some(2e-3),
        DType::BF16 => Some(1.6e-2),
        _ => None,
    }
}

/// `Ok` when `x` agrees with `reference` (same dtype and shape), else where and by how much.
pub fn agree(x: &Tensor, reference: &Tensor) -> Result<(), String> {
    if x.dtype != reference.dtype || x.shape != reference.shape {
        return Err(format!("output is {} {:?}, the reference {} {:?}", x.dtype, x.shape, reference.dtype, reference.shape));
    }
    let n = x.numel();
    match rtol(x.dtype) {
        Some(rtol) => {
            let r: Vec<f64> = (0..n).map(|i| reference.get_f64(i)).collect();
            let finite: Vec<f64> = r.iter().copied().filter(|v| v.is_finite()).collect();
            let rms = (finite.iter().map(|v| v * v).sum::<f64>() / finite.len().max(1) as f64).sqrt();
            for (i, &want) in r.iter().enumerate() {
                let got = x.get_f64(i);
                let ok = if want.is_nan() || got.is_nan() {
                    want.is_nan() && got.is_nan()
                } else if want.is_infinite() || got.is_infinite() {
                    want == got
                } else {
                    (got - want).abs() <= rtol * (want.abs() + rms)
                };
                if !ok {
                    return Err(format!("element {} is {got}, the reference {want} (tolerance {rtol} relative)", index(&x.shape, i)));
                }
            }
            Ok(())
        }
        None => {
            let differ: Vec<usize> = (0..n).filter(|&i| x.get_raw(i) != reference.get_raw(i)).collect();
            if differ.len() * 1000 > n {
                let i = differ[0];
                return Err(format!(
                    "{} of {n} elements differ, first {} (raw {:#x}, the reference {:#x})",
                    differ.len(),
                    index(&x.shape, i),
                    x.get_raw(i),
                    reference.get_raw(i)
                ));
            }
            Ok(())
        }
    }
}

/// `[i, j, ...]` of flat index `flat` in a row-major `shape`.
fn index(shape: &[usize], mut flat: usize) -> String {
    let mut idx = vec![0; shape.len()];
    for (d, &s) in shape.iter().enumerate().rev() {
        if s > 0 {
            idx[d] = flat % s;
            flat /= s;
        }
    }
    format!("{idx:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_differences_pass_and_real_ones_fail() {
        let r = Tensor::from_f32(DType::F32, &[2, 2], &[1.0, -2.0, 3.0, 100.0]);
        let close = Tensor::from_f32(DType::F32, &[2, 2], &[1.000_01, -2.0, 3.0, 100.001]);
        assert!(agree(&close, &r).is_ok());
        let off = Tensor::from_f32(DType::F32, &[2, 2], &[1.0, -2.0, 3.1, 100.0]);
        let e = agree(&off, &r).unwrap_err();
        assert!(e.contains("element [1, 0]"), "{e}");
        let nan = Tensor::from_f32(DType::F32, &[2, 2], &[f32::NAN, -2.0, 3.0, 100.0]);
        assert!(agree(&nan, &r).is_err());
        assert!(agree(&nan, &nan).is_ok());
    }

    #[test]
    fn bf16_allows_two_ulps() {
        let r = Tensor::from_f32(DType::BF16, &[2], &[1.0, 0.5]);
        let two_ulps = Tensor::from_f32(DType::BF16, &[2], &[1.0 + 2.0 / 128.0, 0.5]);
        assert!(agree(&two_ulps, &r).is_ok());
        let far = Tensor::from_f32(DType::BF16, &[2], &[1.25, 0.5]);
        assert!(agree(&far, &r).is_err());
    }

    #[test]
    fn codes_may_differ_in_one_element_per_thousand() {
        let r = Tensor::from_i32(DType::I8, &[2000], &vec![3; 2000]);
        let mut x = r.clone();
        x.set_raw(7, 4);
        x.set_raw(1500, 2);
        assert!(agree(&x, &r).is_ok());
        x.set_raw(9, 4);
        let e = agree(&x, &r).unwrap_err();
        assert!(e.starts_with("3 of 2000 elements differ, first [7]"), "{e}");
        let shape = Tensor::from_i32(DType::I8, &[1000, 2], &vec![3; 2000]);
        assert!(agree(&shape, &r).unwrap_err().contains("[1000, 2]"));
    }
}
