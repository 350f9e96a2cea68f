//! MoE layers whose experts stay in their checkpoint dtype (Qwen3-MoE / MoGE with bf16 experts,
//! `kernels/model.opc`'s `moe_w_*`), and the permute / combine steps every runtime MoE driver
//! shares (the grouped_gemm library's `moe_permute` / `moe_combine` kernels).

use crate::blocks::{dims, pick, reshaped, shape};
use crate::model::GEMV_ROWS;
use crate::moe::Routing;
use crate::{expect_dtype, scratch, Ops, Result};
use opc_dsl::Instance;
use opc_ir::{ArgRef, DType, Tensor};

const FLOATS: &[DType] = &[DType::BF16, DType::F16, DType::F32];

/// The (token, slot) pairs of a routed batch sorted by expert.
pub(crate) struct Permuted {
    /// i32 [P]: pair index of each permuted row.
    pub sorted_pairs: Tensor,
    /// i32 [T, k]: permuted row of each pair (the combine's gather).
    pub pos: Tensor,
    /// i32 [E]: first row and row count of each expert.
    pub starts: Tensor,
    pub counts: Tensor,
}

/// Sort the pairs of `ids` (i32 [T, k], expert per slot) by expert over `e` experts.
pub(crate) fn permute(ops: &Ops, ids: &Tensor, e: usize) -> Result<Permuted> {
    let (t, k) = (ids.shape[0], ids.shape[1]);
    let p = t * k;
    let inst = Instance::default().konst("E", e as i64).tunable("BP", pick(&[16, 32, 64, 128, 256], p, 256));
    let flat = Tensor { shape: vec![p], ..ids.clone() };
    let mut sorted_pairs = Tensor::zeros(DType::I32, &[p]);
    let mut pos = Tensor::zeros(DType::I32, &[p]);
    let mut starts = Tensor::zeros(DType::I32, &[e]);
    let mut counts = Tensor::zeros(DType::I32, &[e]);
    let mut args = [ArgRef::In(&flat), ArgRef::Out(&mut sorted_pairs), ArgRef::Out(&mut pos), ArgRef::Out(&mut starts), ArgRef::Out(&mut counts)];
    ops.kernel("grouped_gemm", "moe_permute", &inst)?.launch_refs(&mut args)?;
    Ok(Permuted { sorted_pairs, pos: Tensor { shape: vec![t, k], ..pos }, starts, counts })
}

/// out[t] = Σ_j y_perm[pos[t, j]] (routing weights already folded into y_perm): f32 [T, H].
pub(crate) fn combine(ops: &Ops, y_perm: &Tensor, pos: &Tensor) -> Result<Tensor> {
    let (t, h) = (pos.shape[0], y_perm.shape[1]);
    let inst = Instance::default().tunable("BT", pick(&[1, 2, 4, 8, 16, 32, 64], t, 16)).tunable("BH", pick(&[16, 32, 64, 128, 256], h, 128));
    let mut out = Tensor::zeros(DType::F32, &[t, h]);
    ops.kernel("grouped_gemm", "moe_combine", &inst)?.launch_refs(&mut [ArgRef::In(y_perm), ArgRef::In(pos), ArgRef::Out(&mut out)])?;
    Ok(out)
}

/// Qwen3-MoE / MoGE layer: x f32 [T, H], router gate f32 [E, H], experts w1 / w3 [E, I, H] and
/// w2 [E, H, I] in one float dtype (bf16 read in place, widened in registers). Routing by the
/// library's route_topk / route_moge kernels, then per-row GEMVs for decode batches (up to
/// [`GEMV_ROWS`] tokens, or one row per expert at most) or grouped GEMMs. Result f32 [T, H]:
/// y[t] = Σ_j w[t,j] · W2_e (silu(W1_e x[t]) ⊙ W3_e x[t]), as `moe::moe_forward` in f32.
pub fn moe_w(ops: &Ops, x: &Tensor, gate: &Tensor, w1: &Tensor, w3: &Tensor, w2: &Tensor, routing: &Routing) -> Result<Tensor> {
    const OP: &str = "moe_w";
    expect_dtype(OP, "x", x, &[DType::F32])?;
    expect_dtype(OP, "gate", gate, &[DType::F32])?;
    expect_dtype(OP, "w1", w1, FLOATS)?;
    let [t, h] = dims::<2>(OP, "x", "[T, H]", x)?;
    let [e, i, h1] = dims::<3>(OP, "w1", "[E, I, H]", w1)?;
    if gate.shape != [e, h] || h1 != h || w3.shape != w1.shape || w2.shape != [e, h, i] || w3.dtype != w1.dtype || w2.dtype != w1.dtype {
        return Err(shape(
            OP,
            format!(
                "gate {:?}, w1 {}{:?}, w3 {}{:?}, w2 {}{:?} do not fit x {:?}: expected [E, H], [E, I, H] twice and [E, H, I] of one dtype",
                gate.shape, w1.dtype, w1.shape, w3.dtype, w3.shape, w2.dtype, w2.shape, x.shape
            ),
        ));
    }
    let (kernel, k) = match routing {
        Routing::TopK { k } | Routing::TopKUnnormalized { k } => ("route_topk", *k),
        Routing::MoGE { groups, .. } => ("route_moge", *groups),
    };
    if k == 0 || k > e || (kernel == "route_moge" && e % k != 0) {
        return Err(shape(OP, format!("{k} experts per token (top-k or MoGE groups) do not fit E = {e}")));
    }
    if t == 0 {
        return Ok(Tensor::zeros(DType::F32, &[0, h]));
    }
    // routing: ids, weights [T, k]
    let inst = Instance::default()
        .dtype("T", DType::F32)
        .konst("E", e as i64)
        .tunable("BT", pick(&[1, 2, 4, 8, 16, 32, 64], t, 16))
        .tunable("BK", pick(&[4, 8, 16, 32, 64, 128], h, 8));
    let mut ids = Tensor::zeros(DType::I32, &[t, k]);
    let mut weights = Tensor::zeros(DType::F32, &[t, k]);
    let mut args = vec![ArgRef::In(x), ArgRef::In(gate)];
    if let Routing::MoGE { router_scale, .. } = routing {
        args.push(ArgRef::In(router_scale));
    }
    args.extend([ArgRef::Out(&mut ids), ArgRef::Out(&mut weights)]);
    if let Routing::TopK { .. } | Routing::TopKUnnormalized { .. } = routing {
        args.push(ArgRef::Bool(matches!(routing, Routing::TopK { .. })));
    }
    ops.kernel("grouped_gemm", kernel, &inst)?.launch_refs(&mut args)?;
    drop(args);

    let perm = permute(ops, &ids, e)?;
    let p = t * k;
    let flat_ids = reshaped(&ids, &[p]);
    let pair_weights = Tensor { shape: vec![p], ..weights };
    let rows = p <= e || t <= GEMV_ROWS;
    let ks = |n: usize| pick(&[8, 16, 32, 64], n, 32);
    let bm = pick(&[4, 16, 32, 64], p.div_ceil(e), 64);
    let gemv_bk = |n: usize| pick(&[32, 64, 128, 256, 512], n, 512);
    let inst = |n: usize, kk: usize| {
        let base = Instance::default().dtype("W", w1.dtype);
        if rows {
            base.tunable("BN", pick(&[8, 16], n, 16)).tunable("BK", gemv_bk(kk))
        } else {
            base.tunable("BM", bm).tunable("BN", pick(&[16, 32, 64], n, 32)).tunable("BK", ks(kk))
        }
    };
    // the row form finds each row's expert in `ids`, the grouped form walks starts / counts
    let mut hidden = scratch::take(DType::F32, &[p, i]);
    let (up, down) = if rows { ("moe_w_up_rows", "moe_w_down_rows") } else { ("moe_w_up", "moe_w_down") };
    let mut args = vec![ArgRef::In(x), ArgRef::In(w1), ArgRef::In(w3), ArgRef::In(&perm.sorted_pairs)];
    if rows {
        args.push(ArgRef::In(&flat_ids));
    } else {
        args.extend([ArgRef::In(&perm.starts), ArgRef::In(&perm.counts)]);
    }
    args.extend([ArgRef::Out(&mut hidden), ArgRef::I32(k as i32)]);
    ops.kernel("model", up, &inst(i, h))?.launch_refs(&mut args)?;
    drop(args);

    let mut y_perm = scratch::take(DType::F32, &[p, h]);
    let mut args = vec![ArgRef::In(&hidden), ArgRef::In(w2), ArgRef::In(&perm.sorted_pairs)];
    if rows {
        args.push(ArgRef::In(&flat_ids));
    } else {
        args.extend([ArgRef::In(&perm.starts), ArgRef::In(&perm.counts)]);
    }
    args.extend([ArgRef::In(&pair_weights), ArgRef::Out(&mut y_perm)]);
    ops.kernel("model", down, &inst(h, i))?.launch_refs(&mut args)?;
    drop(args);
    scratch::give(hidden);
    let out = combine(ops, &y_perm, &perm.pos);
    scratch::give(y_perm);
    out
}
