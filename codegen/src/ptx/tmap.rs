//! Host side of the TMA path (cargo feature `cuda`): encode the tensor maps a kernel declares
//! ([`super::TensorMap`]) for the tensors of one launch, with `cuTensorMapEncodeTiled`.
//!
//! The map of a row-major `[rows, cols]` 16-bit tensor is 2-D with dims `[cols, rows]`
//! (innermost first), the row pitch `2·cols` bytes, box `[box_cols, box_rows]`, element
//! strides 1, no interleave, the kernel's swizzle span, L2 promotion 128 B and
//! `FLOAT_OOB_FILL_NONE` (out-of-bounds box elements read as zeros, the `load` semantics). The
//! driver requires a 16-byte aligned base and a pitch that is a multiple of 16 bytes (and at
//! most 2^40); when they do not hold, [`encode`] says why and the loader launches the variant
//! compiled without TMA instead. A map with `outer` (flash attention's K/V) is 3-D,
//! `[cols, rows, Π leading dims]` with strides `[pitch, rows·pitch]` and box depth 1.

use cudarc::driver::sys::{self, CUtensorMap};
use cudarc::driver::DeviceRepr;

use super::TensorMap;

/// A `CUtensorMap` passed by value as a kernel parameter (128 bytes, 64-byte aligned).
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub struct TmapArg(pub CUtensorMap);

// SAFETY: a plain 128-byte value with the alignment the `.param .align 64 .b8 [128]` wants.
unsafe impl DeviceRepr for TmapArg {}

/// Encode `m` for a tensor at device address `addr` of the given shape (row-major, 16-bit
/// elements; rank 2, or any rank ≥ 2 for an `outer` map); `f16` selects the data type. `Err`
/// names the violated requirement.
pub fn encode(m: &TensorMap, addr: u64, shape: &[usize], f16: bool) -> Result<TmapArg, String> {
    if shape.len() < 2 || (!m.outer && shape.len() != 2) {
        return Err(format!("tensor map of a rank-{} tensor", shape.len()));
    }
    let (rows, cols) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    let outer: usize = shape[..shape.len() - 2].iter().product();
    let pitch = cols as u64 * 2;
    if rows == 0 || cols == 0 || outer == 0 {
        return Err("empty tensor".into());
    }
    if !addr.is_multiple_of(16) || !pitch.is_multiple_of(16) || pitch >= 1 << 40 || pitch * rows as u64 >= 1 << 40 {
        return Err(format!("row pitch {pitch} B or base {addr:#x} not 16-byte aligned"));
    }
    let rank: u32 = if m.outer { 3 } else { 2 };
    let dims = [cols as u64, rows as u64, outer as u64];
    let strides = [pitch, pitch * rows as u64];
    let boxd = [m.box_cols, m.box_rows, 1];
    let estr = [1u32, 1, 1];
    let swz = match m.swizzle {
        128 => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
        64 => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_64B,
        32 => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_32B,
        s => return Err(format!("swizzle span {s}")),
    };
    let dt = if f16 { sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT16 } else { sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 };
    let mut out = TmapArg(CUtensorMap { opaque: [0; 16] });
    // SAFETY: every pointer is to a live local array at least as long as the driver reads for
    // `rank` (rank dims, rank - 1 strides, rank box dims, rank element strides); `out` is writable.
    let r = unsafe {
        sys::cuTensorMapEncodeTiled(
            &mut out.0,
            dt,
            rank,
            addr as *mut std::ffi::c_void,
            dims.as_ptr(),
            strides.as_ptr(),
            boxd.as_ptr(),
            estr.as_ptr(),
            sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            swz,
            sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
            sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    };
    if r != sys::CUresult::CUDA_SUCCESS {
        return Err(format!("cuTensorMapEncodeTiled: {r:?}"));
    }
    Ok(out)
}
