//! Decode attention over the paged KV cache (`kernels/paged_attention.opc`): one new query
//! token per sequence, every sequence of a batch in one launch, K and V read through the block
//! tables in place (no gather of the cache first).

use crate::blocks::{dims, or_zeros, shape};
use crate::model::KvPool;
use crate::{expect_dtype, Ops, Result};
use opc_dsl::Instance;
use opc_ir::{ArgRef, DType, Tensor};

const FILE: &str = "paged_attention";
const OP: &str = "paged_decode";

/// How the query of each sequence attends.
#[derive(Clone, Debug, PartialEq)]
pub struct PagedDecodeParams {
    /// Multiplies q·kᵀ (usually 1/sqrt(D)).
    pub scale: f32,
    /// Sliding window: the query at position p sees keys j with j ≥ p + 1 − window.
    pub window: Option<usize>,
}

/// The i32 values of a small host tensor (block tables, lengths).
fn ints(t: &Tensor) -> Vec<i64> {
    t.to_i64_vec()
}

/// Check that every position `< lens[s]` of sequence `s` maps through `tables` into the pool.
fn check_tables(op: &'static str, pool: &KvPool, tables: &Tensor, lens: &[i64]) -> Result<()> {
    let [s, mb] = dims::<2>(op, "tables", "[S, MB]", tables)?;
    let bs = pool.block_size as i64;
    let t = ints(tables);
    for (seq, &len) in lens.iter().enumerate().take(s) {
        if len > mb as i64 * bs {
            return Err(shape(op, format!("sequence {seq} has {len} positions but its table row holds {mb} blocks of {bs}")));
        }
        let used = (len.max(0) + bs - 1) / bs;
        if let Some(&b) = t[seq * mb..seq * mb + used as usize].iter().find(|&&b| b < 0 || b >= pool.blocks() as i64) {
            return Err(shape(op, format!("sequence {seq}: block {b} is outside the pool of {} blocks", pool.blocks())));
        }
    }
    Ok(())
}

/// Attention of one query token per sequence over its cached keys: q f32 [S, Hq, D] (token
/// major, the projection as it comes), the layer's pool ([`KvPool`]: one block of one KV head
/// a contiguous K [D, bs] and V [bs, D] tile; one instance per head dim and block size), block
/// tables i32 [S, MB] (row s: the blocks of sequence s, padded), lens i32 [S] (the query of
/// sequence s is position lens[s] − 1 and sees keys 0..lens[s], already written), optional
/// sinks f32 [Hq]. Result f32 [S, Hq, D].
pub fn paged_decode(ops: &Ops, q: &Tensor, pool: &KvPool, tables: &Tensor, lens: &Tensor, sinks: Option<&Tensor>, p: &PagedDecodeParams) -> Result<Tensor> {
    expect_dtype(OP, "q", q, &[DType::F32])?;
    expect_dtype(OP, "tables", tables, &[DType::I32])?;
    expect_dtype(OP, "lens", lens, &[DType::I32])?;
    let [s, hq, d] = dims::<3>(OP, "q", "[S, Hq, D]", q)?;
    let [nb, hkv, dk, bs] = dims::<4>(OP, "pool.k", "[blocks, Hkv, D, bs]", &pool.k)?;
    if dk != d || bs != pool.block_size || bs == 0 || pool.v.shape != [nb, hkv, bs, d] || pool.k.dtype != DType::F32 || pool.v.dtype != DType::F32 {
        return Err(shape(
            OP,
            format!("the pool holds k {:?} / v {:?} ({} / {}), expected f32 [blocks, Hkv, {d}, bs] / [blocks, Hkv, bs, {d}] with bs = {}", pool.k.shape, pool.v.shape, pool.k.dtype, pool.v.dtype, pool.block_size),
        ));
    }
    if hkv == 0 || hq % hkv != 0 {
        return Err(shape(OP, format!("{hq} query heads are not a multiple of the pool's {hkv} KV heads")));
    }
    let [st, _] = dims::<2>(OP, "tables", "[S, MB]", tables)?;
    if st != s || lens.shape != [s] {
        return Err(shape(OP, format!("`tables` is {:?} and `lens` {:?}, expected [S, MB] and [S] with S = {s}", tables.shape, lens.shape)));
    }
    if let Some(t) = sinks {
        expect_dtype(OP, "sinks", t, &[DType::F32])?;
        if t.shape != [hq] {
            return Err(shape(OP, format!("`sinks` is {:?}, expected [Hq] = [{hq}]", t.shape)));
        }
    }
    let ls = ints(lens);
    if let Some((seq, l)) = ls.iter().enumerate().find(|(_, &l)| l < 1) {
        return Err(shape(OP, format!("sequence {seq} has length {l}: a decode query needs at least its own position")));
    }
    check_tables(OP, pool, tables, &ls)?;
    let mut out = Tensor::zeros(DType::F32, &[s, hq, d]);
    if s == 0 || hq == 0 {
        return Ok(out);
    }
    let g = hq / hkv;
    let inst = Instance::default()
        .konst("D", d as i64)
        .konst("BS", bs as i64)
        .tunable("BM", g.next_power_of_two().clamp(1, 64) as i64);
    let window = p.window.map_or(0, |w| w.min(i32::MAX as usize) as i32);
    let sk = or_zeros(sinks, DType::F32, &[hq]);
    let mut args = [
        ArgRef::In(q),
        ArgRef::In(&pool.k),
        ArgRef::In(&pool.v),
        ArgRef::In(tables),
        ArgRef::In(lens),
        ArgRef::In(&sk),
        ArgRef::Out(&mut out),
        ArgRef::F32(p.scale),
        ArgRef::Bool(sinks.is_some()),
        ArgRef::Bool(p.window.is_some()),
        ArgRef::I32(window),
    ];
    ops.kernel(FILE, OP, &inst)?.launch_refs(&mut args)?;
    Ok(out)
}
