//! Host side of the TMA path (cargo feature `cuda`): encode the tensor maps a kernel declares
//! ([`super::TensorMap`]) for the tensors of one launch, with `cuTensorMapEncodeTiled`.
//!
//! The map of a row-major `[rows, cols]` 16-bit tensor is 2-D with dims `[cols, rows]`
//! (innermost first), the row pitch `2·cols` bytes, box `[box_cols, box_rows]`, element
//! strides 1, no interleave, the kernel's swizzle span, L2 promotion 128 B and
//! `FLOAT_OOB_FILL_NONE` (out-of-bounds box elements read as zeros, the `load` semantics). The
//! driver requires a 16-byte aligned base and a pitch that is a multiple of 16 bytes (and at
//! most 2^40); when they do not hold, [`encode`] says why and the loader launches the variant
//! compiled without TMA instead.

use cudarc::driver::sys::{self, CUtensorMap};
use cudarc::driver::DeviceRepr;

use super::TensorMap;

/// A `CUtensorMap` passed by value as a kernel parameter (128 bytes, 64-byte aligned).
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub struct TmapArg(pub CUtensorMap);

// SAFETY: a plain 128-byte value with the alignment the `.param .align 64 .b8 [128]` wants.
unsafe impl DeviceRepr for TmapArg {}

/// Encode `m` for a tensor at device address `addr` with `shape = [rows, cols]` of 16-bit
/// elements (`f16` selects the data type); `Err` names the violated requirement.
pub fn encode(m: &TensorMap, addr: u64, shape: &[usize], f16: bool) -> Result<TmapArg, String> {
    let [rows, cols] = shape else { return Err(format!("tensor map of a rank-{} tensor", shape.len())) };
    let pitch = *cols as u64 * 2;
    if *rows == 0 || *cols == 0 {
        return Err("empty tensor".into());
    }
    if !addr.is_multiple_of(16) || !pitch.is_multiple_of(16) || pitch >= 1 << 40 {
        return Err(format!("row pitch {pitch} B or base {addr:#x} not 16-byte aligned"));
    }
    let dims = [*cols as u64, *rows as u64];
    let strides = [pitch];
    let boxd = [m.box_cols, m.box_rows];
    let estr = [1u32, 1];
    let swz = match m.swizzle {
        128 => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
        64 => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_64B,
        32 => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_32B,
        s => return Err(format!("swizzle span {s}")),
    };
    let dt = if f16 { sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT16 } else { sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 };
    let mut out = TmapArg(CUtensorMap { opaque: [0; 16] });
    // SAFETY: every pointer is to a live local array of the length the driver reads (rank 2:
    // two dims, one stride, two box dims, two element strides); `out` is writable.
    let r = unsafe {
        sys::cuTensorMapEncodeTiled(
            &mut out.0,
            dt,
            2,
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
