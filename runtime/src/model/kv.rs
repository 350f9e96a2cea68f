//! Paged KV cache: per layer one pool of fixed-size blocks (`KvPool`: K f32 [blocks, Hkv, D, bs], V [blocks, Hkv, bs, D]),
//! shared by every sequence. A sequence owns a block table (the blocks holding its positions in
//! order); blocks are taken from a free list as the sequence grows and returned when it is
//! truncated (speculative rollback) or freed, so long prompts and many sequences share one
//! preallocated pool. The writes and reads themselves are the `kv_write`, `paged_decode` and
//! `kv_gather` kernels.

use super::error::{ModelError, Result};
use opc_ir::{DType, Tensor};
use opc_ops::model::KvPool;
use std::collections::HashMap;

/// Handle of one sequence in a [`KvCache`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SeqId(u32);

#[derive(Clone, Debug, Default)]
struct Seq {
    blocks: Vec<i32>,
    len: usize,
}

pub struct KvCache {
    pub(crate) pools: Vec<KvPool>,
    block_size: usize,
    free: Vec<i32>,
    seqs: HashMap<SeqId, Seq>,
    next: u32,
}

impl KvCache {
    /// `layers` pools of `blocks` blocks × `block_size` slots × `heads` × `head_dim` (f32).
    pub fn new(layers: usize, blocks: usize, block_size: usize, heads: usize, head_dim: usize) -> KvCache {
        KvCache {
            pools: (0..layers).map(|_| KvPool::new(blocks, block_size, heads, head_dim)).collect(),
            block_size,
            free: (0..blocks as i32).rev().collect(),
            seqs: HashMap::new(),
            next: 0,
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Free blocks left in the pool.
    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }

    pub fn new_seq(&mut self) -> SeqId {
        let id = SeqId(self.next);
        self.next += 1;
        self.seqs.insert(id, Seq::default());
        id
    }

    fn seq(&self, id: SeqId) -> Result<&Seq> {
        self.seqs.get(&id).ok_or_else(|| ModelError::Cache(format!("unknown sequence {id:?}")))
    }

    /// Positions stored for `id`.
    pub fn len(&self, id: SeqId) -> Result<usize> {
        Ok(self.seq(id)?.len)
    }

    /// Make room for `id` to hold `new_len` positions (allocating blocks) and record the length.
    pub fn grow(&mut self, id: SeqId, new_len: usize) -> Result<()> {
        let bs = self.block_size;
        let need = new_len.div_ceil(bs);
        let have = self.seq(id)?.blocks.len();
        if need > have && need - have > self.free.len() {
            return Err(ModelError::Cache(format!(
                "out of blocks: the sequence needs {} more blocks of {bs} tokens for {new_len} positions, {} are free",
                need - have,
                self.free.len()
            )));
        }
        let s = self.seqs.get_mut(&id).expect("checked above");
        while s.blocks.len() < need {
            s.blocks.push(self.free.pop().expect("counted above"));
        }
        s.len = s.len.max(new_len);
        Ok(())
    }

    /// Forget positions `len..` of `id` (rejected speculative tokens) and return unused blocks.
    pub fn truncate(&mut self, id: SeqId, len: usize) -> Result<()> {
        let bs = self.block_size;
        let s = self.seqs.get_mut(&id).ok_or_else(|| ModelError::Cache(format!("unknown sequence {id:?}")))?;
        s.len = s.len.min(len);
        while s.blocks.len() > s.len.div_ceil(bs) {
            self.free.push(s.blocks.pop().expect("non-empty"));
        }
        Ok(())
    }

    /// Drop `id` and return its blocks to the pool.
    pub fn free_seq(&mut self, id: SeqId) {
        if let Some(s) = self.seqs.remove(&id) {
            self.free.extend(s.blocks);
        }
    }

    /// The block tables of `ids`, one padded row each (i32 [S, max blocks]): the layout of the
    /// batched `kv_write` and `paged_decode` kernels. Padding is block 0, never read (positions
    /// past a sequence's length are masked).
    pub fn tables(&self, ids: &[SeqId]) -> Result<Tensor> {
        let rows: Vec<&Vec<i32>> = ids.iter().map(|&id| self.seq(id).map(|s| &s.blocks)).collect::<Result<_>>()?;
        let mb = rows.iter().map(|b| b.len()).max().unwrap_or(0).max(1);
        let mut data = vec![0; ids.len() * mb];
        for (r, b) in rows.iter().enumerate() {
            data[r * mb..r * mb + b.len()].copy_from_slice(b);
        }
        Ok(Tensor::from_i32(DType::I32, &[ids.len(), mb], &data))
    }

    /// The block table of `id` as the kernels take it (i32 [blocks]).
    pub fn table(&self, id: SeqId) -> Result<Tensor> {
        let b = &self.seq(id)?.blocks;
        Ok(Tensor::from_i32(DType::I32, &[b.len().max(1)], if b.is_empty() { &[0] } else { b }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_shared_and_recycled() {
        let mut c = KvCache::new(1, 4, 8, 1, 2);
        let a = c.new_seq();
        let b = c.new_seq();
        c.grow(a, 17).unwrap();
        assert_eq!(c.free_blocks(), 1);
        assert_eq!(c.table(a).unwrap().to_i64_vec(), vec![0, 1, 2]);
        let e = c.grow(b, 9).unwrap_err().to_string();
        assert_eq!(e, "KV cache: out of blocks: the sequence needs 2 more blocks of 8 tokens for 9 positions, 1 are free");
        c.truncate(a, 8).unwrap();
        assert_eq!(c.len(a).unwrap(), 8);
        assert_eq!(c.free_blocks(), 3);
        c.grow(b, 9).unwrap();
        assert_eq!(c.table(b).unwrap().to_i64_vec(), vec![1, 2]);
        let t = c.tables(&[a, b]).unwrap();
        assert_eq!((t.shape.clone(), t.to_i64_vec()), (vec![2, 2], vec![0, 0, 1, 2]));
        c.free_seq(a);
        c.free_seq(b);
        assert_eq!(c.free_blocks(), 4);
    }
}
