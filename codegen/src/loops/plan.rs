//! Value representation at the loop-and-buffer level: element classes ([`is_float_repr`]),
//! row-major strides, and the shape ops as views.
//!
//! Every tile element is 32 bits, in registers and in arena buffers: f32 for f32/f16/bf16
//! (already rounded to their dtype, as in the interpreter) and i32 for everything else (ints
//! sign-extended, bool 0/1, e2m1 / e8m0 raw codes). A buffer is addressed through per-dim
//! element strides, so `expand_dims`, `broadcast` and `permute` cost nothing: they only change
//! the strides (or, for the LLVM target's affine index tiles, the coefficients, which compose
//! the same way). `reshape` is a view only of a contiguous buffer.

use opc_ir::interp::{literal_elem, LiteralElem};
use opc_ir::{DType, OpKind, Scalar};

pub(crate) use crate::repr::is_float_repr;

/// Row-major element strides of a shape.
pub(crate) fn row_major(shape: &[usize]) -> Vec<i64> {
    let mut s = vec![1i64; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1] as i64;
    }
    s
}

/// Whether `strides` address `shape` row-major and densely (size-1 dims may have any stride).
pub(crate) fn is_contiguous(shape: &[usize], strides: &[i64]) -> bool {
    let rm = row_major(shape);
    shape.iter().zip(strides.iter().zip(&rm)).all(|(&n, (&s, &r))| n == 1 || s == r)
}

/// The strides (or affine coefficients) of the result of a pure view op — `broadcast` from
/// shape `ins` to `out`, `expand_dims`, `permute` — given its operand's; `None` for every
/// other op. Stretched and inserted dims get stride 0.
pub(crate) fn view_strides(kind: &OpKind, ins: &[usize], out: &[usize], strides: &[i64]) -> Option<Vec<i64>> {
    match kind {
        OpKind::Broadcast => {
            let pad = out.len() - ins.len();
            let mut st = vec![0i64; out.len()];
            for i in pad..out.len() {
                st[i] = if ins[i - pad] == out[i] { strides[i - pad] } else { 0 };
            }
            Some(st)
        }
        OpKind::ExpandDims(axis) => {
            let mut st = strides.to_vec();
            st.insert(*axis as usize, 0);
            Some(st)
        }
        OpKind::Permute(perm) => Some(perm.iter().map(|&p| strides[p as usize]).collect()),
        _ => None,
    }
}

/// A literal as a 32-bit element.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Literal {
    F32(f32),
    I32(i32),
}

/// The element of literal `s` in dtype `d`, exactly as the interpreter's (`literal_elem`):
/// floats rounded to the dtype, ints wrapped, codes encoded.
pub(crate) fn literal(s: Scalar, d: DType) -> Literal {
    match literal_elem(s, d) {
        LiteralElem::F(x) => Literal::F32(x),
        LiteralElem::I(v) => Literal::I32(v as i32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_restride() {
        assert_eq!(row_major(&[2, 3, 4]), vec![12, 4, 1]);
        assert!(is_contiguous(&[1, 4], &[99, 1]));
        assert!(!is_contiguous(&[2, 4], &[1, 2]));
        assert_eq!(view_strides(&OpKind::Broadcast, &[4, 1], &[2, 4, 8], &[1, 1]), Some(vec![0, 1, 0]));
        assert_eq!(view_strides(&OpKind::ExpandDims(1), &[4], &[4, 1], &[1]), Some(vec![1, 0]));
        assert_eq!(view_strides(&OpKind::Permute(vec![1, 0]), &[2, 3], &[3, 2], &[3, 1]), Some(vec![1, 3]));
        assert_eq!(view_strides(&OpKind::Reshape, &[2, 3], &[6], &[3, 1]), None);
    }

    #[test]
    fn literals_round_and_wrap() {
        assert_eq!(literal(Scalar::Float(1.0 / 3.0), DType::BF16), Literal::F32(0.333984375));
        assert_eq!(literal(Scalar::Int(300), DType::I8), Literal::I32(44));
        assert_eq!(literal(Scalar::Float(2.0), DType::Bool), Literal::I32(1));
        assert_eq!(literal(Scalar::Bool(true), DType::F32), Literal::F32(1.0));
    }
}
