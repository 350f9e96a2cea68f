//! Reused intermediate buffers of the MoE drivers (`moe.rs`, `moe_w.rs`).
//!
//! A MoE layer's permuted intermediates are tens of MB (`y_perm` of a 512-token, top-8,
//! H = 2048 batch is 32 MB of f32). A fresh buffer of that size is a fresh mapping, and its
//! first touch — the kernel's stores — faults in and clears every (huge) page: a third of the
//! down-projection's time in a batch that runs one expert GEMM after another. The drivers take
//! such buffers from a small per-thread pool instead and hand them back after the layer, as a
//! caching allocator would.
//!
//! A taken buffer holds whatever its last user left in it: it is only for outputs that the
//! kernels overwrite in full (every permuted row lies in exactly one expert's segment, and the
//! N tiles cover every column).

use std::cell::RefCell;

use opc_ir::{DType, Tensor};

/// Buffers kept per thread: an up and a down intermediate of two layer shapes.
const KEEP: usize = 4;

/// Buffers below this size are cheap to allocate and are not pooled.
const POOL_FROM: usize = 1 << 20;

thread_local! {
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A `dtype` tensor of `shape` whose contents are unspecified (a pooled buffer of the same
/// size, or a fresh zeroed one): the caller's kernels must overwrite every element.
pub(crate) fn take(dtype: DType, shape: &[usize]) -> Tensor {
    let bytes = dtype.storage_bytes(shape.iter().product());
    let reused = (bytes >= POOL_FROM)
        .then(|| POOL.with_borrow_mut(|p| p.iter().position(|b| b.len() == bytes).map(|i| p.remove(i))))
        .flatten();
    match reused {
        Some(data) => Tensor { dtype, shape: shape.to_vec(), data },
        None => Tensor::zeros(dtype, shape),
    }
}

/// Return `t`'s buffer to this thread's pool (the oldest one is dropped past [`KEEP`]).
pub(crate) fn give(t: Tensor) {
    if t.data.len() < POOL_FROM {
        return;
    }
    POOL.with_borrow_mut(|p| {
        p.push(t.data);
        if p.len() > KEEP {
            p.remove(0);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_buffers_come_back_by_size() {
        let t = take(DType::F32, &[512, 1024]);
        assert_eq!((t.data.len(), t.shape.as_slice()), (2 << 20, &[512, 1024][..]));
        let ptr = t.data.as_ptr();
        give(t);
        // same byte size, other shape and dtype: the same buffer
        let u = take(DType::BF16, &[1024, 1024]);
        assert_eq!((u.data.as_ptr(), u.shape.as_slice(), u.dtype), (ptr, &[1024, 1024][..], DType::BF16));
        // another size: a fresh zeroed buffer
        let v = take(DType::F32, &[1024, 1024]);
        assert!(v.data.as_ptr() != ptr && v.data.iter().all(|&b| b == 0));
        give(u);
        give(v);
        for i in 0..KEEP + 2 {
            give(take(DType::F32, &[(1 << 18) + 16 * i]));
        }
        assert!(POOL.with_borrow(|p| p.len()) <= KEEP);
        // small buffers are not pooled
        give(take(DType::F32, &[16]));
        assert!(POOL.with_borrow(|p| p.iter().all(|b| b.len() >= POOL_FROM)));
    }
}
