//! `plan-memory` for the PTX target: pack the shared-memory buffers of one program.
//!
//! Input: each buffer's size and live interval `[def, last]` in op positions (from the planning
//! run of the lowering, see `lower::intervals`). Buffers are placed in order of definition at
//! the lowest 128-byte aligned offset that overlaps no buffer whose interval intersects theirs
//! (first fit). 128-byte alignment keeps every `ldmatrix` row and vector access aligned and
//! starts each buffer on a fresh bank cycle.
//!
//! Does not: reorder ops to shorten live ranges. Pipelined GEMM loops allocate their whole
//! stage ring as one buffer (and align it to 1024 bytes at run time for TMA, see `wgmma.rs`).

/// Byte offset of every buffer, and the total bytes.
pub(super) fn pack(sizes: &[u32], live: &[(u32, u32)]) -> (Vec<u32>, u32) {
    const ALIGN: u32 = 128;
    let mut offs = vec![0u32; sizes.len()];
    let mut placed: Vec<usize> = vec![];
    let mut total = 0u32;
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&i| (live[i].0, std::cmp::Reverse(sizes[i])));
    for i in order {
        let (a, b) = live[i];
        let mut busy: Vec<(u32, u32)> = placed
            .iter()
            .filter(|&&j| live[j].0 <= b && a <= live[j].1)
            .map(|&j| (offs[j], offs[j] + sizes[j]))
            .collect();
        busy.sort();
        let mut off = 0u32;
        for (s, e) in busy {
            if off + sizes[i] <= s {
                break;
            }
            off = off.max(e.next_multiple_of(ALIGN));
        }
        offs[i] = off;
        total = total.max(off + sizes[i]);
        placed.push(i);
    }
    (offs, total.next_multiple_of(16))
}

#[cfg(test)]
mod tests {
    use super::pack;

    #[test]
    fn disjoint_lifetimes_share_and_overlapping_ones_do_not() {
        // 0 and 1 overlap; 2 starts after 0 ends and reuses its space
        let (offs, total) = pack(&[256, 256, 256], &[(0, 2), (1, 5), (3, 4)]);
        assert_eq!(offs, vec![0, 256, 0]);
        assert_eq!(total, 512);
    }
}
