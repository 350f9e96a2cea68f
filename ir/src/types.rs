//! Element types, tile types and memory spaces of the tile IR.
//!
//! Every SSA value is a *tile*: a statically shaped array (rank 0 is a scalar) of one
//! [`DType`] living in one [`MemSpace`]. Tensor parameters are the only values with
//! symbolic (launch-time) shapes; they live in [`MemSpace::Global`] and are reached only
//! through `load` / `store` / `atomic_add`.

use std::fmt;

/// Element type. Quantized types are *logical* elements: an `i4` or `e2m1` tensor of
/// logical shape `[R, K]` is stored packed two per byte (element `2j` in the low nibble,
/// `2j+1` in the high nibble, over the row-major linear index); `e8m0` is one byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// 1-bit truth value (result of comparisons, masks).
    Bool,
    /// Signed 4-bit integer in [-8, 7], packed two per byte in memory.
    I4,
    I8,
    U8,
    I32,
    F16,
    BF16,
    F32,
    /// OCP MX FP4 E2M1 element (s|ee|m, bias 1): {0, .5, 1, 1.5, 2, 3, 4, 6} and negatives; packed two per byte.
    E2M1,
    /// OCP MX E8M0 scale: 2^(e-127) for e in 0..=254, 0xFF is NaN.
    E8M0,
}

impl DType {
    pub const ALL: [DType; 10] = [
        DType::Bool,
        DType::I4,
        DType::I8,
        DType::U8,
        DType::I32,
        DType::F16,
        DType::BF16,
        DType::F32,
        DType::E2M1,
        DType::E8M0,
    ];

    /// The name used in DSL source and in printed IR.
    pub fn name(self) -> &'static str {
        match self {
            DType::Bool => "bool",
            DType::I4 => "i4",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::I32 => "i32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F32 => "f32",
            DType::E2M1 => "e2m1",
            DType::E8M0 => "e8m0",
        }
    }

    pub fn from_name(s: &str) -> Option<DType> {
        DType::ALL.iter().copied().find(|d| d.name() == s)
    }

    /// Bits one element occupies in memory.
    pub fn bits(self) -> usize {
        match self {
            DType::Bool => 8,
            DType::I4 | DType::E2M1 => 4,
            DType::I8 | DType::U8 | DType::E8M0 => 8,
            DType::F16 | DType::BF16 => 16,
            DType::I32 | DType::F32 => 32,
        }
    }

    /// Bytes needed to store `numel` elements (packed types round up).
    pub fn storage_bytes(self, numel: usize) -> usize {
        (numel * self.bits()).div_ceil(8)
    }

    /// Binary floating point types that arithmetic is defined on.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F16 | DType::BF16 | DType::F32)
    }

    /// Integer types that arithmetic and bit operations are defined on.
    pub fn is_int(self) -> bool {
        matches!(self, DType::I4 | DType::I8 | DType::U8 | DType::I32)
    }

    pub fn is_signed_int(self) -> bool {
        matches!(self, DType::I4 | DType::I8 | DType::I32)
    }

    /// Storage-only codes: they can be loaded, stored, cast and bitcast, but not computed on.
    pub fn is_code(self) -> bool {
        matches!(self, DType::E2M1 | DType::E8M0)
    }

    /// Inclusive value range of an integer type.
    pub fn int_range(self) -> Option<(i64, i64)> {
        match self {
            DType::Bool => Some((0, 1)),
            DType::I4 => Some((-8, 7)),
            DType::I8 => Some((-128, 127)),
            DType::U8 | DType::E8M0 => Some((0, 255)),
            DType::E2M1 => Some((0, 15)),
            DType::I32 => Some((i32::MIN as i64, i32::MAX as i64)),
            _ => None,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a value lives. The front end produces `Global` tensors and `Reg` tiles; memory
/// planning passes may move tiles to `Shared` (GPU shared memory, Ascend UB/L1, CPU cache blocks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum MemSpace {
    Global,
    Shared,
    #[default]
    Reg,
}

impl MemSpace {
    pub fn name(self) -> &'static str {
        match self {
            MemSpace::Global => "global",
            MemSpace::Shared => "shared",
            MemSpace::Reg => "reg",
        }
    }
    pub fn from_name(s: &str) -> Option<MemSpace> {
        [MemSpace::Global, MemSpace::Shared, MemSpace::Reg].into_iter().find(|m| m.name() == s)
    }
}

/// Type of an SSA tile value: dtype, static shape (empty = scalar), memory space.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TileType {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub space: MemSpace,
}

impl TileType {
    pub fn new(dtype: DType, shape: Vec<usize>) -> Self {
        TileType { dtype, shape, space: MemSpace::Reg }
    }
    pub fn scalar(dtype: DType) -> Self {
        TileType::new(dtype, vec![])
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    pub fn is_scalar(&self) -> bool {
        self.shape.is_empty()
    }
    pub fn with_dtype(&self, dtype: DType) -> Self {
        TileType { dtype, shape: self.shape.clone(), space: self.space }
    }
}

/// Printed as `f32[64, 128]`, `i32` for scalars, with a `shared ` prefix outside registers.
impl fmt::Display for TileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.space != MemSpace::Reg {
            write!(f, "{} ", self.space.name())?;
        }
        write!(f, "{}", self.dtype)?;
        if !self.shape.is_empty() {
            write!(f, "[")?;
            for (i, d) in self.shape.iter().enumerate() {
                if i > 0 {
                    write!(f, ", ")?;
                }
                write!(f, "{d}")?;
            }
            write!(f, "]")?;
        }
        Ok(())
    }
}

/// Rounding mode of a conversion. Float→int casts must name one; float→float defaults to `Rne`.
/// Float→int and float→e2m1 conversions saturate to the target range (NaN → 0 for ints).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Rounding {
    /// Round half to even.
    #[default]
    Rne,
    /// Toward zero.
    Rtz,
    /// Toward -inf.
    Floor,
    /// Toward +inf.
    Ceil,
}

impl Rounding {
    pub fn name(self) -> &'static str {
        match self {
            Rounding::Rne => "rne",
            Rounding::Rtz => "rtz",
            Rounding::Floor => "floor",
            Rounding::Ceil => "ceil",
        }
    }
    pub fn from_name(s: &str) -> Option<Rounding> {
        [Rounding::Rne, Rounding::Rtz, Rounding::Floor, Rounding::Ceil].into_iter().find(|r| r.name() == s)
    }
}
