//! Host tensors: a dtype, a row-major shape and the raw little-endian bytes (packed for 4-bit types).

use crate::numerics;
use crate::types::DType;

#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// One launch argument, in parameter order.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    Tensor(Tensor),
    F32(f32),
    I32(i32),
    Bool(bool),
}

impl Tensor {
    pub fn zeros(dtype: DType, shape: &[usize]) -> Tensor {
        let numel = shape.iter().product();
        Tensor { dtype, shape: shape.to_vec(), data: crate::buffer::zeroed(dtype.storage_bytes(numel)) }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Build from raw bytes, checking the byte count against the shape.
    pub fn from_bytes(dtype: DType, shape: &[usize], data: Vec<u8>) -> Result<Tensor, String> {
        let numel: usize = shape.iter().product();
        let want = dtype.storage_bytes(numel);
        if data.len() != want {
            return Err(format!("{dtype}{shape:?} needs {want} bytes, got {}", data.len()));
        }
        Ok(Tensor { dtype, shape: shape.to_vec(), data })
    }

    /// Encode f32 values into `dtype` (RNE for floats, saturating RNE for ints and e2m1).
    pub fn from_f32(dtype: DType, shape: &[usize], values: &[f32]) -> Tensor {
        let mut t = Tensor::zeros(dtype, shape);
        assert_eq!(values.len(), t.numel(), "value count does not match shape {shape:?}");
        for (i, &v) in values.iter().enumerate() {
            t.set_raw(i, numerics::encode_f64(dtype, v as f64));
        }
        t
    }

    pub fn from_i32(dtype: DType, shape: &[usize], values: &[i32]) -> Tensor {
        let mut t = Tensor::zeros(dtype, shape);
        assert_eq!(values.len(), t.numel(), "value count does not match shape {shape:?}");
        for (i, &v) in values.iter().enumerate() {
            t.set_raw(i, numerics::encode_int(dtype, v as i64));
        }
        t
    }

    /// Raw code of element `i` (the stored bits, zero-extended; 4-bit types unpacked).
    pub fn get_raw(&self, i: usize) -> u32 {
        match self.dtype.bits() {
            4 => {
                let b = self.data[i / 2];
                (if i % 2 == 0 { b & 0xF } else { b >> 4 }) as u32
            }
            8 => self.data[i] as u32,
            16 => u16::from_le_bytes([self.data[2 * i], self.data[2 * i + 1]]) as u32,
            32 => u32::from_le_bytes(self.data[4 * i..4 * i + 4].try_into().unwrap()),
            b => unreachable!("no {b}-bit dtype"),
        }
    }

    /// Store raw code `bits` into element `i` (low bits kept for 4-bit types).
    pub fn set_raw(&mut self, i: usize, bits: u32) {
        match self.dtype.bits() {
            4 => {
                let b = &mut self.data[i / 2];
                let v = (bits & 0xF) as u8;
                *b = if i % 2 == 0 { (*b & 0xF0) | v } else { (*b & 0x0F) | (v << 4) };
            }
            8 => self.data[i] = bits as u8,
            16 => self.data[2 * i..2 * i + 2].copy_from_slice(&(bits as u16).to_le_bytes()),
            32 => self.data[4 * i..4 * i + 4].copy_from_slice(&bits.to_le_bytes()),
            b => unreachable!("no {b}-bit dtype"),
        }
    }

    /// Element `i` as f64 (ints exactly, codes decoded: e2m1 value, e8m0 power of two).
    pub fn get_f64(&self, i: usize) -> f64 {
        numerics::decode_f64(self.dtype, self.get_raw(i))
    }

    pub fn to_f32_vec(&self) -> Vec<f32> {
        (0..self.numel()).map(|i| self.get_f64(i) as f32).collect()
    }

    pub fn to_i64_vec(&self) -> Vec<i64> {
        (0..self.numel()).map(|i| numerics::decode_int(self.dtype, self.get_raw(i))).collect()
    }
}
