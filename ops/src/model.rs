//! Model-runtime drivers for `kernels/model.opc`: weight widening, residual add, linear layers
//! with weights kept in their storage dtype, head-layout swaps, the paged KV cache write and
//! gather, gpt-oss's MXFP4 expert layer (routing through the library's topk / softmax /
//! moe_permute / moe_combine kernels) and token sampling.
//!
//! Every launch borrows its operands ([`ArgRef`]), so a launch never copies a weight matrix or a
//! KV pool.

use crate::blocks::{dims, or_zeros, pick, reshaped, shape};
use crate::moe_w::{combine, permute, Permuted};
use crate::{blocks, expect_dtype, mxfp4, Ops, Result};
use opc_dsl::Instance;
use opc_ir::{ArgRef, DType, Tensor};

const FILE: &str = "model";
const FLOATS: &[DType] = &[DType::BF16, DType::F16, DType::F32];

fn flat(t: &Tensor) -> Tensor {
    reshaped(t, &[t.numel()])
}

/// x (any float dtype, any shape) widened to f32, same shape.
pub fn to_f32(ops: &Ops, x: &Tensor) -> Result<Tensor> {
    convert(ops, x, DType::F32)
}

/// x (any float dtype, any shape) as `to` (f32: exact widening; bf16 from f32 or bf16:
/// round to nearest even), same shape.
pub fn convert(ops: &Ops, x: &Tensor, to: DType) -> Result<Tensor> {
    const OP: &str = "convert";
    expect_dtype(OP, "x", x, FLOATS)?;
    if to != DType::F32 && to != DType::BF16 {
        return Err(shape(OP, format!("cannot convert to {to} (f32 or bf16)")));
    }
    let n = x.numel();
    let mut out = Tensor::zeros(to, &[n]);
    if n == 0 {
        return Ok(reshaped(&out, &x.shape));
    }
    let inst = Instance::default().dtype("S", x.dtype).dtype("D", to).tunable("BN", pick(&[256, 1024, 4096], n, 4096));
    let xf = flat(x);
    ops.kernel(FILE, "convert", &inst)?.launch_refs(&mut [ArgRef::In(&xf), ArgRef::Out(&mut out)])?;
    Ok(Tensor { shape: x.shape.clone(), ..out })
}

/// a + b, both f32 of one shape (the residual stream): computed in place in `a`'s buffer, which
/// is returned, so the add allocates nothing and copies nothing (both are taken by value to be
/// viewed flat).
pub fn add(ops: &Ops, mut a: Tensor, mut b: Tensor) -> Result<Tensor> {
    const OP: &str = "add";
    expect_dtype(OP, "a", &a, &[DType::F32])?;
    expect_dtype(OP, "b", &b, &[DType::F32])?;
    if a.shape != b.shape {
        return Err(shape(OP, format!("`b` is {:?}, expected the shape of `a` {:?}", b.shape, a.shape)));
    }
    let n = a.numel();
    if n == 0 {
        return Ok(a);
    }
    let inst = Instance::default().tunable("BN", pick(&[256, 1024], n, 1024));
    let dims = std::mem::replace(&mut a.shape, vec![n]);
    b.shape = vec![n];
    ops.kernel(FILE, "add", &inst)?.launch_refs(&mut [ArgRef::In(&b), ArgRef::Out(&mut a)])?;
    a.shape = dims;
    Ok(a)
}

/// x · s, f32 any shape.
pub fn scale(ops: &Ops, x: &Tensor, s: f32) -> Result<Tensor> {
    expect_dtype("scale", "x", x, &[DType::F32])?;
    let n = x.numel();
    if n == 0 {
        return Ok(x.clone());
    }
    let inst = Instance::default().tunable("BN", pick(&[256, 1024, 4096], n, 4096));
    let xf = flat(x);
    let mut out = Tensor::zeros(DType::F32, &[n]);
    ops.kernel(FILE, "scale", &inst)?.launch_refs(&mut [ArgRef::In(&xf), ArgRef::Out(&mut out), ArgRef::F32(s)])?;
    Ok(Tensor { shape: x.shape.clone(), ..out })
}

/// Rows up to which [`linear_w`] runs the GEMV kernel: one program per channel block holds all
/// the rows, so each weight chunk is loaded once for all of them (batched decode of up to 8
/// sequences); the tiled GEMM (`linear_w`, a blocked GEMM on the llvm target with the widened
/// weights packed into f32 panels) only pays from there on.
pub const GEMV_ROWS: usize = 8;

/// Mean rows per expert up to which the gpt-oss experts run as GEMVs (`moe_mx_*_rows`, each
/// weight block decoded once per up to 4 rows) rather than as grouped MMA GEMMs: measured on
/// gpt-oss shapes (H = I = 2048, 16 experts, top-4), the GEMVs win up to 64 tokens (16 rows
/// per expert) and lose at 128.
const ROWS_PER_EXPERT: usize = 16;

/// K steps of `moe_mx_*_rows`: the whole row up to 2048 (one row-end lane reduction per
/// output and step, so long steps; a K past 2048 ends in a masked partial step).
const ROWS_STEPS: [i64; 7] = [32, 64, 128, 256, 512, 1024, 2048];

/// Bytes of activations one `gemv_w` K step may span (all its rows): a third of a 48 KiB L1d,
/// so the rows stay in L1 while every column tile of the program re-reads them (and the weight
/// rows stream past). Longer steps spill the rows to L2: 8 bf16 rows of K = 4096 (64 KiB) made
/// the batch-8 GEMV ~3x slower per call than batch 1.
const GEMV_STEP_BYTES: usize = 16 << 10;

/// K step of `gemv_w` for `rows` activation rows of `xbytes`-byte elements: the largest step
/// (up to 4096, and within [`GEMV_STEP_BYTES`]) that divides K, so every step is full and runs
/// the fused reduction's unmasked loop (K = 5632 takes 512, not 4096 + a masked 1536). A K with
/// no such divisor takes the largest step within K (and the byte budget).
fn gemv_step(k: usize, rows: usize, xbytes: usize) -> i64 {
    const STEPS: [i64; 8] = [32, 64, 128, 256, 512, 1024, 2048, 4096];
    let cap = STEPS.iter().copied().rfind(|&s| s as usize * rows * xbytes <= GEMV_STEP_BYTES).unwrap_or(32);
    let fits = STEPS.iter().copied().filter(|&s| s <= cap);
    fits.rev().find(|&s| k as i64 % s == 0).unwrap_or_else(|| pick(&STEPS, k / 2 + 1, cap))
}

/// Y = X·Wᵀ (+ bias): x [M,K] f32 (or bf16 when w is bf16: the bf16 compute mode, a bf16×bf16
/// product with f32 accumulation), w [N,K] in bf16 / f16 / f32 (read in place, not copied), bias
/// f32 [N]; result f32 [M,N]. Up to [`GEMV_ROWS`] rows use the GEMV kernel, more the tiled GEMM.
pub fn linear_w(ops: &Ops, x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    const OP: &str = "linear_w";
    expect_dtype(OP, "x", x, &[DType::F32, DType::BF16])?;
    expect_dtype(OP, "w", w, FLOATS)?;
    if x.dtype == DType::BF16 && w.dtype != DType::BF16 {
        return Err(shape(OP, format!("`x` is bf16 but `w` is {}: bf16 activations need bf16 weights", w.dtype)));
    }
    let [m, k] = dims::<2>(OP, "x", "[M, K]", x)?;
    let [n, kw] = dims::<2>(OP, "w", "[N, K]", w)?;
    if kw != k {
        return Err(shape(OP, format!("`x` is {:?} ([M, K]) but `w` is {:?}: expected [N, K] with K = {k}", x.shape, w.shape)));
    }
    if let Some(b) = bias {
        expect_dtype(OP, "bias", b, &[DType::F32])?;
        if b.shape != [n] {
            return Err(shape(OP, format!("`bias` is {:?}, expected [N] = [{n}]", b.shape)));
        }
    }
    let bias_t = or_zeros(bias, DType::F32, &[n]);
    let mut out = Tensor::zeros(DType::F32, &[m, n]);
    if m == 0 || n == 0 {
        return Ok(out);
    }
    let (kernel, inst) = if m <= GEMV_ROWS {
        // All the rows in one program (a power of two: padding rows read row M - 1).
        let bm = m.next_power_of_two() as i64;
        let inst = Instance::default().dtype("X", x.dtype).dtype("W", w.dtype).tunable("BM", bm).tunable("BN", pick(&[8, 16, 32, 64], n, 16)).tunable("BK", gemv_step(k, bm as usize, x.dtype.bits() / 8));
        ("gemv_w", inst)
    } else {
        let bf16 = x.dtype == DType::BF16 && w.dtype == DType::BF16;
        let inst = blocks::gemm_tiles(ops, Instance::default().dtype("X", x.dtype).dtype("W", w.dtype), m, n, k, bf16);
        ("linear_w", inst)
    };
    let mut args = [ArgRef::In(x), ArgRef::In(w), ArgRef::In(&bias_t), ArgRef::Out(&mut out), ArgRef::Bool(bias.is_some())];
    ops.kernel(FILE, kernel, &inst)?.launch_refs(&mut args)?;
    Ok(out)
}

/// Rows of table [V, H] (any float dtype, read in place) at ids i32 [T], widened to f32 [T, H]: the
/// library's embedding gather, then `to_f32`.
pub fn embedding_w(ops: &Ops, table: &Tensor, ids: &Tensor) -> Result<Tensor> {
    const OP: &str = "embedding_w";
    expect_dtype(OP, "table", table, FLOATS)?;
    expect_dtype(OP, "ids", ids, &[DType::I32])?;
    let [_, h] = dims::<2>(OP, "table", "[V, H]", table)?;
    let [t] = dims::<1>(OP, "ids", "[T]", ids)?;
    if t == 0 {
        return Ok(Tensor::zeros(DType::F32, &[0, h]));
    }
    let inst = Instance::default()
        .dtype("T", table.dtype)
        .tunable("BT", pick(&[1, 2, 4, 8, 16, 32], t, 8))
        .tunable("BH", pick(&[16, 32, 64, 128, 256, 512], h, 256));
    let mut rows = Tensor::zeros(table.dtype, &[t, h]);
    ops.kernel("blocks", "embedding", &inst)?.launch_refs(&mut [ArgRef::In(table), ArgRef::In(ids), ArgRef::Out(&mut rows)])?;
    if rows.dtype == DType::F32 {
        Ok(rows)
    } else {
        to_f32(ops, &rows)
    }
}

/// [A, B, C] -> [B, A, C] (f32).
pub fn swap01(ops: &Ops, x: &Tensor) -> Result<Tensor> {
    swap01_to(ops, x, DType::F32)
}

/// [A, B, C] f32 -> [B, A, C] stored as `to` (f32, or bf16: the bf16 input of the next linear).
pub fn swap01_to(ops: &Ops, x: &Tensor, to: DType) -> Result<Tensor> {
    const OP: &str = "swap01";
    expect_dtype(OP, "x", x, &[DType::F32])?;
    if to != DType::F32 && to != DType::BF16 {
        return Err(shape(OP, format!("cannot store the result as {to} (f32 or bf16)")));
    }
    let [a, b, c] = dims::<3>(OP, "x", "[A, B, C]", x)?;
    let mut out = Tensor::zeros(to, &[b, a, c]);
    if out.numel() == 0 {
        return Ok(out);
    }
    let inst = Instance::default().dtype("O", to).konst("C", c as i64).tunable("BB", pick(&[1, 2, 4, 8, 16, 32], b, 8));
    ops.kernel(FILE, "swap01", &inst)?.launch_refs(&mut [ArgRef::In(x), ArgRef::Out(&mut out)])?;
    Ok(out)
}

/// Heads `h0..h0 + nh` of x f32 [T, H, D] (a copy, [T, nh, D]): q, k and v of the fused
/// q/k/v projection.
pub fn heads(ops: &Ops, x: &Tensor, h0: usize, nh: usize) -> Result<Tensor> {
    const OP: &str = "heads";
    expect_dtype(OP, "x", x, &[DType::F32])?;
    let [t, h, d] = dims::<3>(OP, "x", "[T, H, D]", x)?;
    if h0 + nh > h {
        return Err(shape(OP, format!("heads {h0}..{} are outside the {h} heads of `x` {:?}", h0 + nh, x.shape)));
    }
    let mut out = Tensor::zeros(DType::F32, &[t, nh, d]);
    if out.numel() == 0 {
        return Ok(out);
    }
    let inst = Instance::default().konst("D", d as i64).tunable("BH", pick(&[1, 2, 4, 8, 16, 32], nh, 8));
    ops.kernel(FILE, "heads", &inst)?.launch_refs(&mut [ArgRef::In(x), ArgRef::Out(&mut out), ArgRef::I32(h0 as i32)])?;
    Ok(out)
}

/// silu(gate) · up of the fused gate/up projection gu f32 [T, 2I] (gate = columns 0..I, up =
/// I..2I), stored as `to` (f32, or bf16: the input of the down projection). Result [T, I].
pub fn swiglu_gu(ops: &Ops, gu: &Tensor, to: DType) -> Result<Tensor> {
    const OP: &str = "swiglu_gu";
    expect_dtype(OP, "gu", gu, &[DType::F32])?;
    if to != DType::F32 && to != DType::BF16 {
        return Err(shape(OP, format!("cannot store the result as {to} (f32 or bf16)")));
    }
    let [t, i2] = dims::<2>(OP, "gu", "[T, 2I]", gu)?;
    if i2 % 2 != 0 {
        return Err(shape(OP, format!("`gu` is {:?}: the last dim must be even (gate then up)", gu.shape)));
    }
    let i = i2 / 2;
    let mut out = Tensor::zeros(to, &[t, i]);
    if out.numel() == 0 {
        return Ok(out);
    }
    let inst = Instance::default().dtype("O", to).tunable("BR", pick(&[1, 2, 4, 8, 16, 32], t, 8)).tunable("BC", pick(&[16, 32, 64, 128, 256, 512], i, 256));
    ops.kernel(FILE, "swiglu_gu", &inst)?.launch_refs(&mut [ArgRef::In(gu), ArgRef::Out(&mut out)])?;
    Ok(out)
}

/// A paged KV pool of one layer: `blocks` blocks of `block_size` token slots, head-major inside
/// a block, K transposed: k f32 [blocks, H, D, bs], v f32 [blocks, H, bs, D] (the layout of the
/// `kv_write`, `kv_gather` and `paged_decode` kernels: one block of one head is one contiguous
/// tile).
#[derive(Clone, Debug)]
pub struct KvPool {
    pub k: Tensor,
    pub v: Tensor,
    pub block_size: usize,
}

impl KvPool {
    pub fn new(blocks: usize, block_size: usize, heads: usize, head_dim: usize) -> KvPool {
        KvPool {
            k: Tensor::zeros(DType::F32, &[blocks, heads, head_dim, block_size]),
            v: Tensor::zeros(DType::F32, &[blocks, heads, block_size, head_dim]),
            block_size,
        }
    }

    pub fn blocks(&self) -> usize {
        self.k.shape[0]
    }

    /// KV heads.
    pub fn heads(&self) -> usize {
        self.k.shape[1]
    }

    pub fn head_dim(&self) -> usize {
        self.k.shape[2]
    }
}

fn check_table(op: &'static str, table: &Tensor, pool: &KvPool, end: usize) -> Result<()> {
    expect_dtype(op, "table", table, &[DType::I32])?;
    let [nb] = dims::<1>(op, "table", "[blocks]", table)?;
    if nb * pool.block_size < end {
        return Err(shape(op, format!("block table of {nb} blocks × {} slots cannot hold position {}", pool.block_size, end.saturating_sub(1))));
    }
    Ok(())
}

/// Write the K and V rows of a forward batch, k and v f32 [T, H, D], into the pool: token t
/// belongs to sequence seq[t] (a row of `tables`, i32 [S, MB]: that sequence's blocks, padded)
/// at position pos[t] (both i32 [T]). One launch for every token of every sequence.
pub fn kv_write(ops: &Ops, pool: &mut KvPool, k: &Tensor, v: &Tensor, tables: &Tensor, seq: &Tensor, pos: &Tensor) -> Result<()> {
    const OP: &str = "kv_write";
    expect_dtype(OP, "k", k, &[DType::F32])?;
    expect_dtype(OP, "v", v, &[DType::F32])?;
    let [t, h, d] = dims::<3>(OP, "k", "[T, H, D]", k)?;
    if v.shape != k.shape {
        return Err(shape(OP, format!("`v` is {:?}, expected the shape of `k` {:?}", v.shape, k.shape)));
    }
    if [pool.heads(), pool.head_dim()] != [h, d] {
        return Err(shape(OP, format!("`k` is {:?} but the pool holds {} heads of dim {}", k.shape, pool.heads(), pool.head_dim())));
    }
    for (name, x) in [("tables", tables), ("seq", seq), ("pos", pos)] {
        expect_dtype(OP, name, x, &[DType::I32])?;
    }
    let [s, mb] = dims::<2>(OP, "tables", "[S, MB]", tables)?;
    if seq.shape != [t] || pos.shape != [t] {
        return Err(shape(OP, format!("`seq` is {:?} and `pos` {:?}, expected [T] = [{t}]", seq.shape, pos.shape)));
    }
    // Every token must land in a block of its sequence inside the pool (else the masked store
    // would drop it silently).
    let (tb, sq, ps) = (tables.to_i64_vec(), seq.to_i64_vec(), pos.to_i64_vec());
    let bs = pool.block_size as i64;
    if bs == 0 {
        return Err(shape(OP, "the pool has blocks of 0 slots".into()));
    }
    for (i, (&si, &p)) in sq.iter().zip(&ps).enumerate() {
        if si < 0 || si >= s as i64 || p < 0 || p / bs >= mb as i64 {
            return Err(shape(OP, format!("token {i}: sequence {si} position {p} is outside the block tables [{s}, {mb}] of {bs} slots")));
        }
        let b = tb[si as usize * mb + (p / bs) as usize];
        if b < 0 || b >= pool.blocks() as i64 {
            return Err(shape(OP, format!("token {i}: block {b} is outside the pool of {} blocks", pool.blocks())));
        }
    }
    if t == 0 {
        return Ok(());
    }
    let inst = Instance::default().konst("D", d as i64).tunable("BH", pick(&[1, 2, 4, 8, 16], h, 16));
    let KvPool { k: kc, v: vc, .. } = pool;
    let mut args = [ArgRef::In(k), ArgRef::In(v), ArgRef::In(tables), ArgRef::In(seq), ArgRef::In(pos), ArgRef::Out(kc), ArgRef::Out(vc)];
    ops.kernel(FILE, "kv_write", &inst)?.launch_refs(&mut args)?;
    Ok(())
}

/// The first `len` positions of a sequence, head-major: (k, v) f32 [1, H, len, D]. One launch
/// for both.
pub fn kv_gather(ops: &Ops, pool: &KvPool, table: &Tensor, len: usize) -> Result<(Tensor, Tensor)> {
    const OP: &str = "kv_gather";
    check_table(OP, table, pool, len)?;
    let (h, d) = (pool.heads(), pool.head_dim());
    let mut k = Tensor::zeros(DType::F32, &[h, len, d]);
    let mut v = Tensor::zeros(DType::F32, &[h, len, d]);
    if len > 0 && h > 0 && d > 0 && pool.block_size > 0 {
        let inst = Instance::default().konst("D", d as i64).konst("BS", pool.block_size as i64);
        let mut args = [ArgRef::In(&pool.k), ArgRef::In(&pool.v), ArgRef::In(table), ArgRef::Out(&mut k), ArgRef::Out(&mut v)];
        ops.kernel(FILE, "kv_gather", &inst)?.launch_refs(&mut args)?;
    }
    Ok((Tensor { shape: vec![1, h, len, d], ..k }, Tensor { shape: vec![1, h, len, d], ..v }))
}

/// MXFP4 expert weights in the gpt-oss checkpoint layout: codes e2m1 [E, R, K] (blocks of 32
/// along K, the input dim), scales e8m0 [E, R, K/32], bias f32 [E, R].
#[derive(Clone, Debug)]
pub struct MxExperts {
    pub codes: Tensor,
    pub scales: Tensor,
    pub bias: Tensor,
}

impl MxExperts {
    fn check(&self, op: &'static str, name: &str) -> Result<[usize; 3]> {
        expect_dtype(op, &format!("{name}.codes"), &self.codes, &[DType::E2M1])?;
        expect_dtype(op, &format!("{name}.scales"), &self.scales, &[DType::E8M0])?;
        expect_dtype(op, &format!("{name}.bias"), &self.bias, &[DType::F32])?;
        let [e, r, k] = dims::<3>(op, &format!("{name}.codes"), "[E, R, K]", &self.codes)?;
        if k % 32 != 0 || self.scales.shape != [e, r, k / 32] || self.bias.shape != [e, r] {
            return Err(shape(
                op,
                format!(
                    "`{name}`: codes {:?}, scales {:?}, bias {:?}; expected [E, R, K] with K % 32 == 0, [E, R, K/32], [E, R]",
                    self.codes.shape, self.scales.shape, self.bias.shape
                ),
            ));
        }
        Ok([e, r, k])
    }
}

/// gpt-oss MoE layer. x f32 or bf16 [T, H] (the activation dtype: bf16 x multiplies the exactly
/// decoded weights in bf16 with f32 accumulation, and the hidden activations between the two
/// expert GEMMs are bf16 too, as transformers runs the experts in bf16); router w [E, H] (any
/// float, read in place; bf16 x needs a bf16 router as any `linear_w`) and bias f32 [E], routing
/// logits f32;
/// `top_k` experts by raw router logit, their weights the softmax over the selected logits;
/// experts: gate_up [E, 2I, H] (gate/up interleaved by row) and down [E, H, I], both MXFP4 with
/// biases; clamped SwiGLU with `alpha`, `limit`. Result f32 [T, H].
#[allow(clippy::too_many_arguments)]
pub fn moe_mxfp4(
    ops: &Ops,
    x: &Tensor,
    router_w: &Tensor,
    router_b: &Tensor,
    top_k: usize,
    gate_up: &MxExperts,
    down: &MxExperts,
    alpha: f32,
    limit: f32,
) -> Result<Tensor> {
    const OP: &str = "moe_mxfp4";
    expect_dtype(OP, "x", x, &[DType::F32, DType::BF16])?;
    let [t, h] = dims::<2>(OP, "x", "[T, H]", x)?;
    let [e, i2, hu] = gate_up.check(OP, "gate_up")?;
    let [ed, hd, i] = down.check(OP, "down")?;
    if hu != h || ed != e || hd != h || i2 != 2 * i {
        return Err(shape(OP, format!("experts gate_up {:?} and down {:?} do not fit x {:?}: expected [E, 2I, H] and [E, H, I]", gate_up.codes.shape, down.codes.shape, x.shape)));
    }
    if top_k == 0 || top_k > e {
        return Err(shape(OP, format!("top_k = {top_k} must be in 1..={e}")));
    }
    if x.dtype == DType::BF16 && router_w.dtype != DType::BF16 {
        return Err(shape(OP, format!("`x` is bf16 but `router_w` is {}: bf16 activations need a bf16 router", router_w.dtype)));
    }
    if t == 0 {
        return Ok(Tensor::zeros(DType::F32, &[0, h]));
    }
    let p = t * top_k;
    // routing: logits, top-k by logit, softmax over the chosen k
    let logits = linear_w(ops, x, router_w, Some(router_b))?;
    let (vals, ids) = blocks::topk(ops, &logits, top_k)?;
    let weights = blocks::softmax(ops, &vals)?;

    // permutation of the (token, slot) pairs by expert (the library's grouped-GEMM kernel)
    let Permuted { sorted_pairs, pos, starts, counts } = permute(ops, &ids, e)?;

    let pair_weights = Tensor { shape: vec![p], ..weights };
    // Few rows per expert (decode, a batch of tokens, a short prefill): GEMVs of each
    // expert's rows, BM at a time, each weight block decoded once for the BM rows. Many
    // (prefill): the grouped GEMMs (each weight tile decoded once per BM rows, MMA products).
    let routing = [&sorted_pairs, &starts, &counts];
    let y_perm = if p.div_ceil(e) <= ROWS_PER_EXPERT {
        experts_by_row(ops, x, routing, &pair_weights, gate_up, down, [h, i, top_k, e], alpha, limit)?
    } else {
        experts_grouped(ops, x, routing, &pair_weights, gate_up, down, [h, i, top_k, e], alpha, limit)?
    };

    combine(ops, &y_perm, &pos)
}

/// gpt-oss experts over the permuted rows as grouped GEMMs (`moe_mx_up` / `moe_mx_down`): one
/// program per (expert, N tile) loops over the expert's rows, so each weight tile is decoded once
/// per BM rows. Returns y_perm f32 [P, H] (routing weight folded in).
#[allow(clippy::too_many_arguments)]
fn experts_grouped(
    ops: &Ops,
    x: &Tensor,
    [sorted_pairs, starts, counts]: [&Tensor; 3],
    pair_weights: &Tensor,
    gate_up: &MxExperts,
    down: &MxExperts,
    [h, i, top_k, e]: [usize; 4],
    alpha: f32,
    limit: f32,
) -> Result<Tensor> {
    let p = sorted_pairs.numel();
    let (bm, bn_cap) = mx_tiles(ops, p.div_ceil(e));
    let up_inst = Instance::default()
        .tunable("BM", bm)
        .tunable("BN", pick(&[16, 32, 64, 128, 256], i, bn_cap))
        .tunable("BK", pick(&[32, 64, 128], h, mxfp4::gemm_step(ops) as i64));
    let mut hidden = Tensor::zeros(x.dtype, &[p, i]);
    let scalars = [ArgRef::I32(top_k as i32), ArgRef::F32(alpha), ArgRef::F32(limit)];
    launch_experts(ops, "moe_mx_up", &up_inst, x, gate_up, &[sorted_pairs, starts, counts], &mut hidden, scalars)?;

    let down_inst = Instance::default()
        .tunable("BM", bm)
        .tunable("BN", pick(&[16, 32, 64, 128, 256], h, bn_cap))
        .tunable("BK", pick(&[32, 64, 128], i, mxfp4::gemm_step(ops) as i64));
    let mut y_perm = Tensor::zeros(DType::F32, &[p, h]);
    launch_experts(ops, "moe_mx_down", &down_inst, &hidden, down, &[sorted_pairs, starts, counts, pair_weights], &mut y_perm, [])?;
    Ok(y_perm)
}

/// `BM` and the `BN` cap of the grouped MXFP4 expert GEMMs for `rows` permuted rows per expert
/// on average. On the llvm target each program decodes its weight tile once per BM rows and
/// gathers its activation rows once per BN columns, so both are taken large: one row tile per
/// expert up to 1.5x the average load (at most 256), and 256 columns (gpt-oss prefill, 512
/// tokens: 128 x 128 tiles ran 30% faster than 64 x 32, and 256 x 256 another 10-15%). Other
/// targets keep the small tiles.
fn mx_tiles(ops: &Ops, rows: usize) -> (i64, i64) {
    if ops.target().name() == "llvm" {
        (pick(&[4, 16, 32, 64, 128, 256], rows + rows / 2, 256), 256)
    } else {
        (pick(&[4, 16, 32, 64], rows, 64), 32)
    }
}

/// gpt-oss experts as GEMVs (`moe_mx_up_rows` / `moe_mx_down_rows`): one program per (expert,
/// N tile) walks the expert's rows BM at a time, each weight block decoded once for the BM rows.
/// BM is chosen per expert from its own row count ([`row_tile_classes`]): one launch per class
/// of experts, each seeing the others' counts as zero, so no expert pads its row tile much.
/// N tiles of 64 columns: each program streams 64 KiB (down) or 128 KiB (gate/up) of
/// contiguous codes per activation row, and the activations' per-program copy (`block_evenodd`)
/// is shared by 64 or 128 weight rows (one-token decode of the 2.7B model's experts about 25%
/// faster than 16-column tiles).
/// Same layout and result as [`experts_grouped`].
#[allow(clippy::too_many_arguments)]
fn experts_by_row(
    ops: &Ops,
    x: &Tensor,
    [sorted_pairs, starts, counts]: [&Tensor; 3],
    pair_weights: &Tensor,
    gate_up: &MxExperts,
    down: &MxExperts,
    [h, i, top_k, _experts]: [usize; 4],
    alpha: f32,
    limit: f32,
) -> Result<Tensor> {
    let p = sorted_pairs.numel();
    let classes = row_tile_classes(counts);
    let mut hidden = Tensor::zeros(x.dtype, &[p, i]);
    for (bm, counts) in &classes {
        let up_inst = Instance::default().tunable("BM", *bm).tunable("BN", pick(&[8, 16, 32, 64], i, 64)).tunable("BK", pick(&ROWS_STEPS, h, 2048));
        let scalars = [ArgRef::I32(top_k as i32), ArgRef::F32(alpha), ArgRef::F32(limit)];
        launch_experts(ops, "moe_mx_up_rows", &up_inst, x, gate_up, &[sorted_pairs, starts, counts], &mut hidden, scalars)?;
    }
    let mut y_perm = Tensor::zeros(DType::F32, &[p, h]);
    for (bm, counts) in &classes {
        let down_inst = Instance::default().tunable("BM", *bm).tunable("BN", pick(&[8, 16, 32, 64], h, 64)).tunable("BK", pick(&ROWS_STEPS, i, 2048));
        launch_experts(ops, "moe_mx_down_rows", &down_inst, &hidden, down, &[sorted_pairs, starts, counts, pair_weights], &mut y_perm, [])?;
    }
    Ok(y_perm)
}

/// The experts grouped by the row tile that suits their row count, each group with the counts
/// tensor of its launch (the other experts' counts zeroed, so their programs do nothing):
/// 1 row → BM = 1, 2 → 2, 3 or more → 4. A program decodes each weight block once per pass of
/// BM rows and multiplies every row of the tile, padding included, so a tile fitted to each
/// expert beats one BM for all: in an 8-sequence gpt-oss decode step (top-4 of 16, about 2 rows
/// per expert) one BM = 2 took two passes for 3- and 4-row experts and padded 1-row ones. At
/// most 4 rows per pass: 8 (a 32- to 64-token prefill, 8-16 rows per expert) ran the expert
/// GEMVs 1.4-2x slower than two passes of 4 in same-run profiles.
fn row_tile_classes(counts: &Tensor) -> Vec<(i64, Tensor)> {
    let rows: Vec<u32> = (0..counts.numel()).map(|j| counts.get_raw(j)).collect();
    let tile = |c: u32| match c {
        0 => None,
        1 => Some(1),
        2 => Some(2),
        _ => Some(4),
    };
    let mut classes: Vec<(i64, Tensor)> = vec![];
    for bm in [1, 2, 4] {
        if rows.iter().any(|&c| tile(c) == Some(bm)) {
            let mut class = counts.clone();
            for (j, &c) in rows.iter().enumerate() {
                if tile(c) != Some(bm) {
                    class.set_raw(j, 0);
                }
            }
            classes.push((bm, class));
        }
    }
    classes
}

/// Launch one gpt-oss expert kernel of `model.opc`, whose parameters are always: the activations
/// (their dtype is the kernel's X), the experts' codes, scales and bias, the routing tensors,
/// the output, then scalars.
#[allow(clippy::too_many_arguments)]
fn launch_experts<const S: usize>(
    ops: &Ops,
    kernel: &str,
    inst: &Instance,
    act: &Tensor,
    experts: &MxExperts,
    routing: &[&Tensor],
    out: &mut Tensor,
    scalars: [ArgRef<'_>; S],
) -> Result<()> {
    let mut args = vec![ArgRef::In(act), ArgRef::In(&experts.codes), ArgRef::In(&experts.scales), ArgRef::In(&experts.bias)];
    args.extend(routing.iter().map(|t| ArgRef::In(t)));
    args.push(ArgRef::Out(out));
    args.extend(scalars);
    let inst = inst.clone().dtype("X", act.dtype);
    ops.kernel(FILE, kernel, &inst)?.launch_refs(&mut args)?;
    Ok(())
}

/// How to draw a token from a row of logits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleParams {
    /// > 0 (greedy decoding does not sample).
    pub temperature: f32,
    /// Keep only the k most likely tokens (None: all).
    pub top_k: Option<usize>,
    /// Nucleus mass in (0, 1]; 1 keeps every candidate.
    pub top_p: f32,
}

/// Candidates considered when top-p is set without top-k.
pub const TOP_P_CANDIDATES: usize = 256;

/// Sample one token per row of logits f32 [R, V], with uniforms u f32 [R] in [0, 1).
/// Top-k / top-p sample among the top-k candidates (the library's topk kernel; with top-p and
/// no top-k, the `TOP_P_CANDIDATES` best); otherwise the full softmax is inverted directly.
pub fn sample(ops: &Ops, logits: &Tensor, u: &Tensor, p: &SampleParams) -> Result<Vec<i32>> {
    const OP: &str = "sample";
    expect_dtype(OP, "logits", logits, &[DType::F32])?;
    expect_dtype(OP, "u", u, &[DType::F32])?;
    let [r, v] = dims::<2>(OP, "logits", "[R, V]", logits)?;
    if u.shape != [r] {
        return Err(shape(OP, format!("`u` is {:?}, expected [R] = [{r}]", u.shape)));
    }
    if !(p.temperature > 0.0 && p.temperature.is_finite()) || !(p.top_p > 0.0 && p.top_p <= 1.0) {
        return Err(shape(OP, format!("temperature {} must be > 0 and top_p {} in (0, 1]", p.temperature, p.top_p)));
    }
    let mut out = Tensor::zeros(DType::I32, &[r]);
    if r == 0 {
        return Ok(Vec::new());
    }
    let k = match (p.top_k, p.top_p < 1.0) {
        (Some(k), _) => Some(k.clamp(1, v)),
        (None, true) => Some(TOP_P_CANDIDATES.min(v)),
        (None, false) => None,
    };
    let inv_t = 1.0 / p.temperature;
    match k {
        Some(k) => {
            let (vals, ids) = blocks::topk(ops, logits, k)?;
            let inst = Instance::default().konst("K", k as i64);
            let mut args = [ArgRef::In(&vals), ArgRef::In(&ids), ArgRef::In(u), ArgRef::Out(&mut out), ArgRef::F32(inv_t), ArgRef::F32(p.top_p)];
            ops.kernel(FILE, "sample_sorted", &inst)?.launch_refs(&mut args)?;
        }
        None => {
            let inst = Instance::default().tunable("BV", pick(&[64, 256, 1024, 4096], v, 4096));
            let mut args = [ArgRef::In(logits), ArgRef::In(u), ArgRef::Out(&mut out), ArgRef::F32(inv_t)];
            ops.kernel(FILE, "sample_full", &inst)?.launch_refs(&mut args)?;
        }
    }
    Ok(out.to_i64_vec().into_iter().map(|x| x as i32).collect())
}

/// Greedy choice per row of logits f32 [R, V]: the argmax (ties to the smaller id), via topk.
pub fn argmax(ops: &Ops, logits: &Tensor) -> Result<Vec<i32>> {
    let (_, ids) = blocks::topk(ops, logits, 1)?;
    Ok(ids.to_i64_vec().into_iter().map(|x| x as i32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each expert lands in exactly one class, by its row count; empty experts in none.
    #[test]
    fn row_tile_classes_split_the_experts_by_count() {
        let counts = Tensor::from_i32(DType::I32, &[8], &[0, 1, 2, 3, 4, 7, 1, 2]);
        let classes: Vec<(i64, Vec<u32>)> = row_tile_classes(&counts).into_iter().map(|(bm, c)| (bm, (0..8).map(|j| c.get_raw(j)).collect())).collect();
        assert_eq!(classes, vec![(1, vec![0, 1, 0, 0, 0, 0, 1, 0]), (2, vec![0, 0, 2, 0, 0, 0, 0, 2]), (4, vec![0, 0, 0, 3, 4, 7, 0, 0])]);
        let ones = Tensor::from_i32(DType::I32, &[4], &[1, 0, 1, 1]);
        assert_eq!(row_tile_classes(&ones).iter().map(|(bm, _)| *bm).collect::<Vec<_>>(), vec![1]);
    }

    fn ops() -> Ops {
        Ops::new(opc_codegen::target_by_name("cpu").unwrap())
    }

    fn f32t(shape: &[usize], f: impl Fn(usize) -> f32) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor::from_f32(DType::F32, shape, &(0..n).map(f).collect::<Vec<_>>())
    }

    #[test]
    fn widen_add_scale() {
        let ops = ops();
        let x = Tensor::from_f32(DType::BF16, &[3, 5], &(0..15).map(|i| i as f32 * 0.37 - 2.0).collect::<Vec<_>>());
        let y = to_f32(&ops, &x).unwrap();
        assert_eq!(y.shape, vec![3, 5]);
        assert_eq!(y.to_f32_vec(), x.to_f32_vec());
        let a = f32t(&[7, 3], |i| i as f32);
        let b = f32t(&[7, 3], |i| 0.5 - i as f32 * 2.0);
        assert_eq!(add(&ops, a.clone(), b).unwrap().to_f32_vec(), (0..21).map(|i| 0.5 - i as f32).collect::<Vec<_>>());
        assert_eq!(scale(&ops, &a, 0.5).unwrap().to_f32_vec(), (0..21).map(|i| i as f32 * 0.5).collect::<Vec<_>>());
        assert!(add(&ops, a, f32t(&[3, 7], |_| 0.0)).unwrap_err().to_string().contains("expected the shape of `a` [7, 3]"));
    }

    #[test]
    fn linear_w_matches_f32_linear_and_keeps_weights() {
        // The GEMV's fused sums differ between the JIT targets: check llvm too when built in.
        for target in ["cpu", "llvm"] {
            let Ok(t) = opc_codegen::target_by_name(target) else { continue };
            linear_w_matches_f32_linear_on(&Ops::new(t));
        }
    }

    fn linear_w_matches_f32_linear_on(ops: &Ops) {
        // K = 40: ragged K steps; K = 512: whole steps (the fused loop's unmasked version).
        // m = 9 takes the tiled GEMM.
        for (m, k) in [(1, 40), (3, 40), (9, 40), (1, 512), (2, 512), (3, 512), (8, 512)] {
            let x = f32t(&[m, k], |i| ((i * 7919) % 23) as f32 / 11.0 - 1.0);
            let wv: Vec<f32> = (0..24 * k).map(|i| ((i * 104729) % 31) as f32 / 16.0 - 1.0).collect();
            let mut w = Tensor::from_f32(DType::BF16, &[24, k], &wv);
            let w_before = w.clone();
            let bias = f32t(&[24], |i| i as f32 * 0.25);
            let y = linear_w(ops, &x, &mut w, Some(&bias)).unwrap();
            assert_eq!(w, w_before, "the leased weight comes back unchanged");
            let wf = Tensor::from_f32(DType::F32, &[24, k], &w.to_f32_vec());
            let want = blocks::linear(ops, &x, &wf, Some(&bias)).unwrap();
            for (a, b) in y.to_f32_vec().iter().zip(want.to_f32_vec()) {
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "m={m} k={k}: {a} vs {b}");
            }
        }
    }

    /// GEMV K steps: whole steps dividing K, within the L1 budget of the activation rows.
    #[test]
    fn gemv_steps_divide_k_and_fit_l1() {
        assert_eq!(gemv_step(4096, 1, 4), 4096);
        assert_eq!(gemv_step(4096, 8, 2), 1024);
        assert_eq!(gemv_step(4096, 8, 4), 512);
        assert_eq!(gemv_step(5632, 1, 4), 512);
        assert_eq!(gemv_step(2048, 2, 2), 2048);
        assert_eq!(gemv_step(100, 1, 4), 64);
        assert_eq!(gemv_step(100, 8, 2), 64);
        assert_eq!(gemv_step(20, 8, 4), 32);
    }

    /// bf16 activations: x rounded to bf16 times bf16 weights, f32 accumulation (the products
    /// of bf16 pairs are exact in f32, so only the summation order differs from the oracle),
    /// through the GEMV (m <= GEMV_ROWS) and the blocked GEMM; on llvm (when built in) the GEMV
    /// rows are register-blocked `vdpbf16ps` tiles (K = 72: ragged steps, masked; K = 512:
    /// whole steps, unmasked; N = 40: a ragged channel block).
    #[test]
    fn linear_w_bf16_activations() {
        for target in ["cpu", "llvm"] {
            let Ok(t) = opc_codegen::target_by_name(target) else { continue };
            linear_w_bf16_activations_on(&Ops::new(t));
        }
        let ops = ops();
        let xf = f32t(&[2, 72], |_| 1.0);
        let wf = f32t(&[4, 72], |_| 1.0);
        let e = linear_w(&ops, &Tensor::from_f32(DType::BF16, &[2, 72], &xf.to_f32_vec()), &wf, None).unwrap_err().to_string();
        assert_eq!(e, "linear_w: `x` is bf16 but `w` is f32: bf16 activations need bf16 weights");
    }

    fn linear_w_bf16_activations_on(ops: &Ops) {
        for (m, k) in [(1, 72), (5, 72), (20, 72), (1, 512), (2, 512), (3, 512), (8, 512)] {
            let xv: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 23) as f32 / 7.0 - 1.3).collect();
            let x = Tensor::from_f32(DType::BF16, &[m, k], &xv);
            let w = Tensor::from_f32(DType::BF16, &[40, k], &(0..40 * k).map(|i| ((i * 104729) % 31) as f32 / 13.0 - 1.1).collect::<Vec<_>>());
            let y = linear_w(ops, &x, &w, None).unwrap().to_f32_vec();
            let (xr, wr) = (x.to_f32_vec(), w.to_f32_vec());
            for r in 0..m {
                for c in 0..40 {
                    let want: f64 = (0..k).map(|i| xr[r * k + i] as f64 * wr[c * k + i] as f64).sum();
                    let got = y[r * 40 + c] as f64;
                    assert!((got - want).abs() <= 1e-5 * (1.0 + want.abs()), "m={m} k={k} ({r}, {c}): {got} vs {want}");
                }
            }
        }
    }

    /// The fused projections' helpers: heads of [T, H, D], SwiGLU of [T, 2I] (f32 and rounded
    /// once to bf16), and the f32 -> bf16 conversion (round to nearest even).
    #[test]
    fn heads_swiglu_gu_and_convert() {
        let ops = ops();
        let x = f32t(&[3, 7, 4], |i| i as f32);
        let y = heads(&ops, &x, 2, 5).unwrap();
        assert_eq!(y.shape, vec![3, 5, 4]);
        let (xv, yv) = (x.to_f32_vec(), y.to_f32_vec());
        for t in 0..3 {
            for h in 0..5 {
                for d in 0..4 {
                    assert_eq!(yv[(t * 5 + h) * 4 + d], xv[(t * 7 + 2 + h) * 4 + d]);
                }
            }
        }
        assert_eq!(heads(&ops, &x, 3, 5).unwrap_err().to_string(), "heads: heads 3..8 are outside the 7 heads of `x` [3, 7, 4]");
        let (t, i) = (5, 19);
        let gu = f32t(&[t, 2 * i], |j| ((j * 37) % 29) as f32 / 5.0 - 2.9);
        let g = gu.to_f32_vec();
        let want: Vec<f32> = (0..t * i).map(|j| {
            let (r, c) = (j / i, j % i);
            let (a, b) = (g[r * 2 * i + c], g[r * 2 * i + i + c]);
            a / (1.0 + (-a).exp()) * b
        }).collect();
        let y = swiglu_gu(&ops, &gu, DType::F32).unwrap();
        assert_eq!(y.shape, vec![t, i]);
        for (a, b) in y.to_f32_vec().iter().zip(&want) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
        let yb = swiglu_gu(&ops, &gu, DType::BF16).unwrap();
        assert_eq!(yb.dtype, DType::BF16);
        let rounded = Tensor::from_f32(DType::BF16, &[t, i], &y.to_f32_vec());
        let ulps = yb.to_f32_vec().iter().zip(rounded.to_f32_vec()).filter(|(a, b)| a != &b).count();
        assert!(ulps <= 2, "bf16 SwiGLU is the f32 result rounded once ({ulps} differ at a rounding boundary)");
        let v = [1.0f32, 1.00390625, 1.005859375, -3.14159, 65504.0, 1e-30];
        let c = convert(&ops, &f32t(&[2, 3], |j| v[j]), DType::BF16).unwrap();
        assert_eq!((c.dtype, c.shape.clone()), (DType::BF16, vec![2, 3]));
        assert_eq!(c.to_f32_vec(), Tensor::from_f32(DType::BF16, &[6], &v).to_f32_vec());
    }

    #[test]
    fn swap_and_paged_kv_roundtrip() {
        let ops = ops();
        let x = f32t(&[5, 3, 4], |i| i as f32);
        let y = swap01(&ops, &x).unwrap();
        assert_eq!(y.shape, vec![3, 5, 4]);
        let xv = x.to_f32_vec();
        let yv = y.to_f32_vec();
        for a in 0..5 {
            for b in 0..3 {
                for c in 0..4 {
                    assert_eq!(yv[(b * 5 + a) * 4 + c], xv[(a * 3 + b) * 4 + c]);
                }
            }
        }
        // 6 blocks of 4 slots; the sequence owns blocks 5, 1, 3 (out of order on purpose)
        let mut pool = KvPool::new(6, 4, 3, 4);
        let table = Tensor::from_i32(DType::I32, &[3], &[5, 1, 3]);
        let tables = Tensor { shape: vec![1, 3], ..table.clone() };
        // one sequence (row 0 of `tables`), tokens at positions start..start+T
        let at = |start: i32, t: usize| (Tensor::from_i32(DType::I32, &[t], &vec![0; t]), Tensor::from_i32(DType::I32, &[t], &(start..start + t as i32).collect::<Vec<_>>()));
        let k1 = f32t(&[7, 3, 4], |i| i as f32);
        let v1 = f32t(&[7, 3, 4], |i| -(i as f32));
        let (seq, pos) = at(0, 7);
        kv_write(&ops, &mut pool, &k1, &v1, &tables, &seq, &pos).unwrap();
        let k2 = f32t(&[2, 3, 4], |i| 1000.0 + i as f32);
        let (seq, pos) = at(7, 2);
        kv_write(&ops, &mut pool, &k2, &k2, &tables, &seq, &pos).unwrap();
        let (k, v) = kv_gather(&ops, &mut pool, &table, 9).unwrap();
        assert_eq!(k.shape, vec![1, 3, 9, 4]);
        let (kv, vv) = (k.to_f32_vec(), v.to_f32_vec());
        for h in 0..3 {
            for j in 0..9 {
                for d in 0..4 {
                    let want_k = if j < 7 { ((j * 3 + h) * 4 + d) as f32 } else { 1000.0 + (((j - 7) * 3 + h) * 4 + d) as f32 };
                    assert_eq!(kv[(h * 9 + j) * 4 + d], want_k, "h={h} j={j} d={d}");
                    if j < 7 {
                        assert_eq!(vv[(h * 9 + j) * 4 + d], -want_k);
                    }
                }
            }
        }
        // slot 0 of block 5 holds position 0; block 0 (not owned) stays untouched
        assert_eq!(pool.k.to_f32_vec()[5 * 4 * 12], 0.0);
        assert!(pool.k.to_f32_vec()[..48].iter().all(|&x| x == 0.0));
        let (seq, pos) = at(11, 2);
        let e = kv_write(&ops, &mut pool, &k2, &k2, &tables, &seq, &pos).unwrap_err().to_string();
        assert_eq!(e, "kv_write: token 1: sequence 0 position 12 is outside the block tables [1, 3] of 4 slots");
    }

    #[test]
    fn sampling_inverts_the_cdf() {
        let ops = ops();
        // probabilities 0.5, 0.25, 0.125, 0.125 (logits ln p), vocab order shuffled
        let lp = [0.125f32.ln(), 0.5f32.ln(), 0.125f32.ln(), 0.25f32.ln()];
        let logits = Tensor::from_f32(DType::F32, &[1, 4], &lp);
        let full = SampleParams { temperature: 1.0, top_k: None, top_p: 1.0 };
        let topk = SampleParams { temperature: 1.0, top_k: Some(4), top_p: 1.0 };
        for (u, want) in [(0.0, 1), (0.49, 1), (0.51, 3), (0.74, 3), (0.76, 0), (0.99, 2)] {
            let ut = Tensor::from_f32(DType::F32, &[1], &[u]);
            let got_full = sample(&ops, &logits, &ut, &full).unwrap()[0];
            let got_k = sample(&ops, &logits, &ut, &topk).unwrap()[0];
            // the full-vocab walk goes in id order: cumulative 0.125, 0.625, 0.75, 1.0
            let want_full = if u < 0.125 { 0 } else if u < 0.625 { 1 } else if u < 0.75 { 2 } else { 3 };
            assert_eq!(got_full, want_full, "u={u}");
            assert_eq!(got_k, want, "u={u}");
        }
        // top-p 0.6 keeps {0.5, 0.25}: u = 0.7 lands on the second (0.7·0.75 = 0.525 > 0.5)
        let nucleus = SampleParams { temperature: 1.0, top_k: None, top_p: 0.6 };
        let ut = Tensor::from_f32(DType::F32, &[1], &[0.99]);
        assert_eq!(sample(&ops, &logits, &ut, &nucleus).unwrap()[0], 3);
        // top-k 1 is greedy whatever u
        let k1 = SampleParams { temperature: 0.7, top_k: Some(1), top_p: 1.0 };
        assert_eq!(sample(&ops, &logits, &ut, &k1).unwrap()[0], 1);
        assert_eq!(argmax(&ops, &logits).unwrap(), vec![1]);
    }

    /// Prefill (grouped GEMMs, more than ROWS_PER_EXPERT rows per expert) and the GEMV form
    /// with 4, 2 and 1 rows per program (a short prefill, a batch, a decode step), f32 and bf16
    /// activations, on the cpu target and, when built in, the llvm one (its fused block-scaled
    /// loops).
    #[test]
    fn mxfp4_experts_match_a_dequantized_reference() {
        for target in ["cpu", "llvm"] {
            let Ok(t) = opc_codegen::target_by_name(target) else { continue };
            let ops = Ops::new(t);
            for dt in [DType::F32, DType::BF16] {
                for t in [40, 11, 5, 3, 1] {
                    mxfp4_experts_case(&ops, t, dt);
                }
            }
        }
    }

    /// bf16 activations with an f32 router: a precise error, not a kernel failure.
    #[test]
    fn mxfp4_experts_bf16_x_needs_a_bf16_router() {
        let ops = Ops::new(opc_codegen::target_by_name("cpu").unwrap());
        let ex = |r: usize, c: usize| MxExperts {
            codes: Tensor::zeros(DType::E2M1, &[2, r, c]),
            scales: Tensor::zeros(DType::E8M0, &[2, r, c / 32]),
            bias: Tensor::zeros(DType::F32, &[2, r]),
        };
        let x = Tensor::zeros(DType::BF16, &[3, 32]);
        let err = moe_mxfp4(&ops, &x, &Tensor::zeros(DType::F32, &[2, 32]), &Tensor::zeros(DType::F32, &[2]), 1, &ex(64, 32), &ex(32, 32), 1.0, 7.0).unwrap_err();
        assert!(err.to_string().contains("bf16 activations need a bf16 router"), "{err}");
        let x16 = Tensor::zeros(DType::F16, &[3, 32]);
        let err = moe_mxfp4(&ops, &x16, &Tensor::zeros(DType::BF16, &[2, 32]), &Tensor::zeros(DType::F32, &[2]), 1, &ex(64, 32), &ex(32, 32), 1.0, 7.0).unwrap_err();
        assert!(err.to_string().contains("`x`"), "{err}");
    }

    /// With bf16 activations the hidden activations are rounded to bf16 (relative error at most
    /// 2^-8) before the down GEMM: the bound adds 2^-8 · Σ |w · h · W2| per output.
    fn mxfp4_experts_case(ops: &Ops, t: usize, dt: DType) {
        let (h, i, e, k) = (64, 32, 4, 2);
        let x = f32t(&[t, h], |j| ((j * 37) % 17) as f32 / 8.0 - 1.0);
        let x = Tensor::from_f32(dt, &[t, h], &x.to_f32_vec());
        let quant = |rows: usize, cols: usize, seed: usize| {
            let w = f32t(&[e * rows, cols], |j| (((j + seed) * 7919) % 29) as f32 / 14.0 - 1.0);
            let q = crate::mxfp4::quantize(ops, &w).unwrap();
            let deq = crate::mxfp4::dequantize(ops, &q).unwrap().to_f32_vec();
            let codes = Tensor { shape: vec![e, rows, cols], ..q.codes };
            let scales = Tensor { shape: vec![e, rows, cols / 32], ..q.scales };
            let bias = f32t(&[e, rows], |j| ((j + seed) % 5) as f32 * 0.1 - 0.2);
            (MxExperts { codes, scales, bias }, deq)
        };
        let (gu, gu_deq) = quant(2 * i, h, 1);
        let (dn, dn_deq) = quant(h, i, 2);
        let rw = Tensor::from_f32(DType::BF16, &[e, h], &(0..e * h).map(|j| ((j * 13) % 11) as f32 / 10.0 - 0.5).collect::<Vec<_>>());
        let rb = f32t(&[e], |j| j as f32 * 0.01);
        let (alpha, limit) = (1.702, 7.0);
        let y = moe_mxfp4(ops, &x, &rw, &rb, k, &gu, &dn, alpha, limit).unwrap().to_f32_vec();

        // host oracle in f64
        let xv = x.to_f32_vec();
        let rwv = rw.to_f32_vec();
        let (gbv, dbv) = (gu.bias.to_f32_vec(), dn.bias.to_f32_vec());
        for tok in 0..t {
            let xr = &xv[tok * h..(tok + 1) * h];
            let logits: Vec<f64> = (0..e).map(|ex| (0..h).map(|c| xr[c] as f64 * rwv[ex * h + c] as f64).sum::<f64>() + rb.to_f32_vec()[ex] as f64).collect();
            let mut order: Vec<usize> = (0..e).collect();
            order.sort_by(|a, b| logits[*b].partial_cmp(&logits[*a]).unwrap().then(a.cmp(b)));
            let sel = &order[..k];
            let mx = logits[sel[0]];
            let den: f64 = sel.iter().map(|&s| (logits[s] - mx).exp()).sum();
            let mut out = vec![0f64; h];
            let mut hbound = vec![0f64; h];
            for &ex in sel {
                let wgt = (logits[ex] - mx).exp() / den;
                let gu_row = |r: usize| (0..h).map(|c| xr[c] as f64 * gu_deq[(ex * 2 * i + r) * h + c] as f64).sum::<f64>() + gbv[ex * 2 * i + r] as f64;
                let act: Vec<f64> = (0..i)
                    .map(|n| {
                        let g = gu_row(2 * n).min(limit as f64);
                        let u = gu_row(2 * n + 1).clamp(-limit as f64, limit as f64);
                        (u + 1.0) * g / (1.0 + (-g * alpha as f64).exp())
                    })
                    .collect();
                for (c, o) in out.iter_mut().enumerate() {
                    let d: f64 = (0..i).map(|n| act[n] * dn_deq[(ex * h + c) * i + n] as f64).sum::<f64>() + dbv[ex * h + c] as f64;
                    *o += wgt * d;
                    hbound[c] += wgt * (0..i).map(|n| (act[n] * dn_deq[(ex * h + c) * i + n] as f64).abs()).sum::<f64>();
                }
            }
            for c in 0..h {
                let got = y[tok * h + c] as f64;
                let round_h = if dt == DType::BF16 { hbound[c] / 256.0 } else { 0.0 };
                assert!((got - out[c]).abs() <= 1e-4 * (1.0 + out[c].abs()) + round_h, "{dt} t={tok} c={c}: {got} vs {}", out[c]);
            }
        }
    }
}
