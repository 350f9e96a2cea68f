//! Large host buffers on transparent huge pages.
//!
//! Model weights are streamed once per token (hundreds of MB) and GEMM panels read rows kilobytes
//! apart, so with 4 KiB pages nearly every row starts a TLB walk. Where the kernel only hands out
//! huge pages on request (`transparent_hugepage=madvise`, the usual default), big buffers ask for
//! them before their first touch. Elsewhere the advice is a no-op.

/// Buffers from this size on are advised to use huge pages (two 2 MiB pages: below that the
/// rounding to page boundaries leaves little to gain).
const HUGE_FROM: usize = 4 << 20;

/// A zero-filled buffer of `n` bytes; large ones are backed by huge pages where the OS allows.
pub fn zeroed(n: usize) -> Vec<u8> {
    let v = vec![0u8; n];
    if n >= HUGE_FROM {
        advise_huge(&v);
    }
    v
}

/// A copy of `src` in a buffer made by [`zeroed`].
pub fn copied(src: &[u8]) -> Vec<u8> {
    if src.len() < HUGE_FROM {
        return src.to_vec();
    }
    let mut v = zeroed(src.len());
    v.copy_from_slice(src);
    v
}

/// The concatenation of `parts` in one buffer made by [`zeroed`].
pub fn concat<'a>(parts: impl IntoIterator<Item = &'a [u8]> + Clone) -> Vec<u8> {
    let mut v = zeroed(parts.clone().into_iter().map(<[u8]>::len).sum());
    let mut at = 0;
    for p in parts {
        v[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    v
}

/// `madvise(MADV_HUGEPAGE)` over the whole 2 MiB pages inside `v` (untouched pages of a fresh
/// zeroed allocation are then faulted in as huge pages). Failure only costs the speed-up.
#[cfg(target_os = "linux")]
fn advise_huge(v: &[u8]) {
    const HUGE: usize = 2 << 20;
    let start = (v.as_ptr() as usize).next_multiple_of(HUGE);
    let end = (v.as_ptr() as usize + v.len()) / HUGE * HUGE;
    if end > start {
        // SAFETY: the range lies inside `v`'s allocation; the advice changes no contents.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge(_: &[u8]) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_hold_what_was_asked() {
        for n in [0, 5, HUGE_FROM - 1, HUGE_FROM + 4097] {
            assert!(zeroed(n).iter().all(|&b| b == 0) && zeroed(n).len() == n);
            let src: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
            assert_eq!(copied(&src), src);
            let (a, b) = src.split_at(n / 3);
            assert_eq!(concat([a, b, &[][..]]), src);
        }
    }
}
