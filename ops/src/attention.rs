//! Attention drivers: FlashAttention-2 forward and split-KV decode (flash-decoding).
//!
//! The math lives in `kernels/flash_attention.opc` (`flash_attention`, `flash_decode_split`,
//! `flash_decode_combine`); these functions check shapes and dtypes, allocate the outputs, pick
//! the instantiation (input dtype, `D` as a const dim, tile sizes) and launch.

use crate::{expect_dtype, OpError, Ops, Result};
use opc_dsl::Instance;
use crate::blocks::or_zeros;
use opc_ir::{ArgRef, DType, Tensor};

const FILE: &str = "flash_attention";

#[derive(Clone, Debug, PartialEq)]
pub struct AttentionParams {
    /// Causal mask, bottom-right aligned: (i, j) is masked iff j > i + Sk − Sq.
    pub causal: bool,
    /// Sliding window: (i, j) is also masked iff j < i + Sk − Sq − window + 1.
    pub window: Option<usize>,
    /// Multiplies Q·Kᵀ (usually 1/sqrt(D)).
    pub scale: f32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AttentionOut {
    /// q.dtype [B, Hq, Sq, D]
    pub out: Tensor,
    /// f32 [B, Hq, Sq]; −inf for a row that sees no key (and has no sink).
    pub lse: Tensor,
}

fn err(op: &'static str, msg: impl Into<String>) -> OpError {
    OpError::Shape { op, msg: msg.into() }
}

/// Checked problem sizes of an attention call.
struct Dims {
    b: usize,
    hq: usize,
    hkv: usize,
    sq: usize,
    sk: usize,
    d: usize,
}

fn check(op: &'static str, q: &Tensor, k: &Tensor, v: &Tensor, sinks: Option<&Tensor>, p: &AttentionParams) -> Result<Dims> {
    const FLOATS: &[DType] = &[DType::F16, DType::BF16, DType::F32];
    expect_dtype(op, "q", q, FLOATS)?;
    for (name, t) in [("q", q), ("k", k), ("v", v)] {
        if t.shape.len() != 4 {
            let want = if name == "q" { "[B, Hq, Sq, D]" } else { "[B, Hkv, Sk, D]" };
            return Err(err(op, format!("`{name}` must have rank 4 {want}, got shape {:?}", t.shape)));
        }
    }
    for (name, t) in [("k", k), ("v", v)] {
        if t.dtype != q.dtype {
            return Err(err(op, format!("`{name}` has dtype {}, but `q` has dtype {} (q, k and v must match)", t.dtype, q.dtype)));
        }
    }
    let (b, hq, sq, d) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3]);
    let (hkv, sk) = (k.shape[1], k.shape[2]);
    if k.shape[0] != b || k.shape[3] != d {
        return Err(err(op, format!("`k` has shape {:?}, expected [B={b}, Hkv, Sk, D={d}] to match `q` {:?}", k.shape, q.shape)));
    }
    if v.shape != k.shape {
        return Err(err(op, format!("`v` has shape {:?}, expected the shape of `k` {:?}", v.shape, k.shape)));
    }
    if d == 0 {
        return Err(err(op, "head dim D must be at least 1"));
    }
    if hkv == 0 || hq % hkv != 0 {
        return Err(err(op, format!("query heads Hq={hq} must be a multiple of KV heads Hkv={hkv} (GQA)")));
    }
    if sk == 0 {
        return Err(err(op, "`k` and `v` have no keys (Sk = 0)"));
    }
    if let Some(s) = sinks {
        expect_dtype(op, "sinks", s, &[DType::F32])?;
        if s.shape != [hq] {
            return Err(err(op, format!("`sinks` has shape {:?}, expected [Hq={hq}]", s.shape)));
        }
    }
    if !p.scale.is_finite() {
        return Err(err(op, format!("scale must be finite, got {}", p.scale)));
    }
    if sq > i32::MAX as usize / 2 || sk > i32::MAX as usize / 2 {
        return Err(err(op, format!("sequence lengths Sq={sq}, Sk={sk} exceed the i32 index range")));
    }
    Ok(Dims { b, hq, hkv, sq, sk, d })
}

/// (has_window, window) kernel arguments; windows wider than every row's reach are capped.
fn window_args(p: &AttentionParams, d: &Dims) -> (bool, i32) {
    match p.window {
        Some(w) => (true, w.min(d.sq + d.sk + 1) as i32),
        None => (false, 0),
    }
}

fn sinks_arg(sinks: Option<&Tensor>, hq: usize) -> std::borrow::Cow<'_, Tensor> {
    // When absent the kernel masks the load off; the tensor only binds the shape [Hq].
    or_zeros(sinks, DType::F32, &[hq])
}

/// The same tensor seen with another (row-major compatible) shape.
fn view(t: Tensor, shape: &[usize]) -> Tensor {
    debug_assert_eq!(t.numel(), shape.iter().product::<usize>());
    Tensor { shape: shape.to_vec(), ..t }
}

fn tile(n: usize, lo: usize, hi: usize) -> i64 {
    n.next_power_of_two().clamp(lo, hi) as i64
}

/// The `(BM, BN)` tunables `flash_attention` picks for `sq` queries and `sk` keys: 64 × 64 once
/// both are long (on `sm_90a` that is one consumer warpgroup of the FA3 loop at every `D` up to
/// 256; `codegen/src/ptx/attn.rs`), smaller for short sequences.
pub fn flash_attention_tiles(sq: usize, sk: usize) -> (i64, i64) {
    attention_tiles(sq, sk, 64)
}

/// `(BM, BN)` for `sq` queries and `sk` keys, each at most `cap`. On the CPU targets `cap` is
/// 128: each KV step copies its K and V tiles and transposes K once for all BM rows, so larger
/// tiles amortize that work over twice the FMAs (causal S = 2048, D = 64, 8 heads: on llvm f32
/// 18.3 → 16.7 ms, bf16 13.2 → 11.9 ms, best of interleaved runs; on cpu (Cranelift) f32 123 →
/// 115 ms, bf16 157 → 140 ms, `opc tune`'s final rounds; a 512-token prefill ran the same).
fn attention_tiles(sq: usize, sk: usize, cap: usize) -> (i64, i64) {
    (tile(sq, 16, cap), tile(sk, 16, cap))
}

/// The tile cap of [`attention_tiles`] on `ops`'s target: 128 on the CPU targets and on the
/// interpreter (which takes the `cpu` target's tiles so that Cranelift reproduces it bit for
/// bit: the online softmax rounds per KV tile), 64 on the others (on-chip budgets).
fn attention_cap(ops: &Ops) -> usize {
    match ops.target().name() {
        "llvm" | "cpu" | "interp" => 128,
        _ => 64,
    }
}

/// FlashAttention-2 forward: one program per (query tile, head, batch), online softmax over KV
/// tiles. GQA, bottom-right causal mask, sliding window and attention sinks.
pub fn flash_attention(ops: &Ops, q: &Tensor, k: &Tensor, v: &Tensor, sinks: Option<&Tensor>, p: &AttentionParams) -> Result<AttentionOut> {
    const OP: &str = "flash_attention";
    let d = check(OP, q, k, v, sinks, p)?;
    let mut out = Tensor::zeros(q.dtype, &q.shape);
    let mut lse = Tensor::zeros(DType::F32, &[d.b, d.hq, d.sq]);
    if d.b == 0 || d.hq == 0 || d.sq == 0 {
        return Ok(AttentionOut { out, lse });
    }
    let (bm, bn) = attention_tiles(d.sq, d.sk, attention_cap(ops));
    let inst = Instance::default().dtype("T", q.dtype).konst("D", d.d as i64).tunable("BM", bm).tunable("BN", bn);
    let (has_window, window) = window_args(p, &d);
    let sk = sinks_arg(sinks, d.hq);
    let mut args = [
        ArgRef::In(q),
        ArgRef::In(k),
        ArgRef::In(v),
        ArgRef::In(&sk),
        ArgRef::Out(&mut out),
        ArgRef::Out(&mut lse),
        ArgRef::F32(p.scale),
        ArgRef::Bool(p.causal),
        ArgRef::Bool(has_window),
        ArgRef::I32(window),
        ArgRef::Bool(sinks.is_some()),
    ];
    ops.kernel(FILE, "flash_attention", &inst)?.launch_refs(&mut args)?;
    Ok(AttentionOut { out, lse })
}

/// Split-KV decode (flash-decoding): the KV sequence is cut into `num_splits` chunks handled by
/// separate programs, each writing a normalized partial output and its LSE; a second kernel
/// merges them by LSE. The g = Hq/Hkv query heads of a KV head are packed into one tile's rows
/// (pack-GQA). Works for any Sq; meant for Sq = 1.
pub fn flash_decode(
    ops: &Ops,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    sinks: Option<&Tensor>,
    p: &AttentionParams,
    num_splits: usize,
) -> Result<AttentionOut> {
    const OP: &str = "flash_decode";
    let d = check(OP, q, k, v, sinks, p)?;
    if num_splits == 0 || num_splits > i32::MAX as usize {
        return Err(err(OP, format!("num_splits must be at least 1, got {num_splits}")));
    }
    let mut out = Tensor::zeros(q.dtype, &q.shape);
    let mut lse = Tensor::zeros(DType::F32, &[d.b, d.hq, d.sq]);
    if d.b == 0 || d.hq == 0 || d.sq == 0 {
        return Ok(AttentionOut { out, lse });
    }
    let ns = num_splits;
    let g = d.hq / d.hkv;
    let m = g * d.sq; // packed rows per KV head: g heads × Sq positions, adjacent in memory
    let (has_window, window) = window_args(p, &d);

    // Pass 1: per-split partial results, in the packed [.., Hkv, g·Sq, ..] view.
    let split = Instance::default()
        .dtype("T", q.dtype)
        .konst("D", d.d as i64)
        .tunable("BM", tile(m, 4, 64))
        .tunable("BN", tile(d.sk.div_ceil(ns), 16, 64));
    let q_packed = view(q.clone(), &[d.b, d.hkv, m, d.d]);
    let mut o_part = Tensor::zeros(DType::F32, &[ns, d.b, d.hkv, m, d.d]);
    let mut lse_part = Tensor::zeros(DType::F32, &[ns, d.b, d.hkv, m]);
    let mut args = [
        ArgRef::In(&q_packed),
        ArgRef::In(k),
        ArgRef::In(v),
        ArgRef::Out(&mut o_part),
        ArgRef::Out(&mut lse_part),
        ArgRef::I32(d.sq as i32),
        ArgRef::F32(p.scale),
        ArgRef::Bool(p.causal),
        ArgRef::Bool(has_window),
        ArgRef::I32(window),
    ];
    ops.kernel(FILE, "flash_decode_split", &split)?.launch_refs(&mut args)?;
    let o_part = view(o_part, &[ns, d.b, d.hq, d.sq, d.d]);
    let lse_part = view(lse_part, &[ns, d.b, d.hq, d.sq]);

    // Pass 2: LSE-weighted combine (plus the sinks).
    let combine = Instance::default()
        .dtype("T", q.dtype)
        .konst("D", d.d as i64)
        .tunable("BM", if d.sq == 1 { 1 } else if d.sq <= 4 { 4 } else { 16 });
    let sk = sinks_arg(sinks, d.hq);
    let mut args = [
        ArgRef::In(&o_part),
        ArgRef::In(&lse_part),
        ArgRef::In(&sk),
        ArgRef::Out(&mut out),
        ArgRef::Out(&mut lse),
        ArgRef::Bool(sinks.is_some()),
    ];
    ops.kernel(FILE, "flash_decode_combine", &combine)?.launch_refs(&mut args)?;
    Ok(AttentionOut { out, lse })
}
