//! Mixture-of-experts layer: routing (top-k softmax or MoGE), permutation of the (token, slot)
//! pairs by expert, grouped up GEMM with fused SiLU·mul, grouped down GEMM scaled by the routing
//! weight, weighted combine. The math is in `kernels/grouped_gemm.opc`; this driver checks
//! shapes, allocates buffers, picks tiles and launches the five kernels in order.

use crate::blocks::{pick, reshaped};
use crate::{expect_dtype, scratch, OpError, Ops, Result};
use opc_dsl::Instance;
use opc_ir::{ArgRef, DType, Tensor};

const FILE: &str = "grouped_gemm";
const OP: &str = "moe_forward";

/// How tokens choose experts.
#[derive(Clone, Debug, PartialEq)]
pub enum Routing {
    /// Softmax over all experts, the `k` largest, renormalized over the chosen k (Qwen3-MoE).
    TopK { k: usize },
    /// Softmax over all experts, the `k` largest with their full-softmax probabilities, not
    /// renormalized (Qwen3-MoE with `norm_topk_prob: false`).
    TopKUnnormalized { k: usize },
    /// Global softmax, the argmax inside each of `groups` equal expert groups, times
    /// `router_scale[e]`, no renormalization (Pangu Pro MoE). One slot per group, in group order.
    MoGE { groups: usize, router_scale: Tensor /* f32 [E] */ },
}

#[derive(Clone, Debug)]
pub struct MoeOut {
    /// f32 [T, H]
    pub out: Tensor,
    /// i32 [T, k]: top-k by descending weight, or one expert per group in group order (MoGE).
    pub expert_ids: Tensor,
    /// f32 [T, k], aligned with `expert_ids`.
    pub weights: Tensor,
}

/// y[t] = Σ_j w[t,j] · W2_e (silu(W1_e x[t]) ⊙ W3_e x[t]) with e = expert_ids[t,j].
/// x [T,H]; gate [E,H]; w1, w3 [E,I,H]; w2 [E,H,I]; all of one dtype (f32, bf16 or f16).
pub fn moe_forward(ops: &Ops, x: &Tensor, gate: &Tensor, w1: &Tensor, w3: &Tensor, w2: &Tensor, routing: &Routing) -> Result<MoeOut> {
    expect_dtype(OP, "x", x, &[DType::F32, DType::BF16, DType::F16])?;
    let dt = x.dtype;
    for (name, t) in [("gate", gate), ("w1", w1), ("w3", w3), ("w2", w2)] {
        if t.dtype != dt {
            return Err(shape_err(format!("`{name}` has dtype {}, expected {} (the dtype of `x`)", t.dtype, dt)));
        }
    }
    let [t, h] = dims::<2>("x", "[T, H]", x)?;
    let [e, hg] = dims::<2>("gate", "[E, H]", gate)?;
    let [e1, i, h1] = dims::<3>("w1", "[E, I, H]", w1)?;
    if hg != h {
        return Err(shape_err(format!("`gate` is {:?}: its H = {hg} differs from `x` [T, H] = {:?}", gate.shape, x.shape)));
    }
    if e1 != e || h1 != h {
        return Err(shape_err(format!("`w1` is {:?}, expected [E, I, H] with E = {e} (gate) and H = {h} (x)", w1.shape)));
    }
    if w3.shape != w1.shape {
        return Err(shape_err(format!("`w3` is {:?}, expected the shape of `w1` {:?}", w3.shape, w1.shape)));
    }
    if w2.shape != [e, h, i] {
        return Err(shape_err(format!("`w2` is {:?}, expected [E, H, I] = {:?}", w2.shape, [e, h, i])));
    }
    if t == 0 || h == 0 || e == 0 || i == 0 {
        return Err(shape_err(format!("T, H, E and I must be >= 1, got T = {t}, H = {h}, E = {e}, I = {i}")));
    }
    let k = match routing {
        Routing::TopK { k } | Routing::TopKUnnormalized { k } => {
            if *k == 0 || *k > e {
                return Err(shape_err(format!("top-k k = {k} must be in 1..={e} (E)")));
            }
            *k
        }
        Routing::MoGE { groups, router_scale } => {
            if *groups == 0 || e % *groups != 0 {
                return Err(shape_err(format!("MoGE groups = {groups} must be >= 1 and divide E = {e}")));
            }
            expect_dtype(OP, "router_scale", router_scale, &[DType::F32])?;
            if router_scale.shape != [e] {
                return Err(shape_err(format!("`router_scale` is {:?}, expected [E] = [{e}]", router_scale.shape)));
            }
            *groups
        }
    };
    let p = t * k;

    // 1. routing: ids [T, k], weights [T, k]
    let route_inst = Instance::default()
        .dtype("T", dt)
        .konst("E", e as i64)
        .tunable("BT", pick(&[1, 2, 4, 8, 16, 32, 64], t, 16))
        .tunable("BK", pick(&[4, 8, 16, 32, 64, 128], h, 8));
    let mut expert_ids = Tensor::zeros(DType::I32, &[t, k]);
    let mut weights = Tensor::zeros(DType::F32, &[t, k]);
    let (kernel, mut args) = match routing {
        Routing::TopK { .. } | Routing::TopKUnnormalized { .. } => {
            let renorm = matches!(routing, Routing::TopK { .. });
            ("route_topk", vec![ArgRef::In(x), ArgRef::In(gate), ArgRef::Out(&mut expert_ids), ArgRef::Out(&mut weights), ArgRef::Bool(renorm)])
        }
        Routing::MoGE { router_scale, .. } => (
            "route_moge",
            vec![ArgRef::In(x), ArgRef::In(gate), ArgRef::In(router_scale), ArgRef::Out(&mut expert_ids), ArgRef::Out(&mut weights)],
        ),
    };
    ops.kernel(FILE, kernel, &route_inst)?.launch_refs(&mut args)?;

    // 2. permutation of the flat pairs t·k + j by expert
    let perm_inst = Instance::default().konst("E", e as i64).tunable("BP", pick(&[16, 32, 64, 128, 256], p, 256));
    let flat_ids = reshaped(&expert_ids, &[p]);
    let mut sorted_pairs = Tensor::zeros(DType::I32, &[p]);
    let mut pos = Tensor::zeros(DType::I32, &[p]);
    let mut starts = Tensor::zeros(DType::I32, &[e]);
    let mut counts = Tensor::zeros(DType::I32, &[e]);
    let mut args = [
        ArgRef::In(&flat_ids),
        ArgRef::Out(&mut sorted_pairs),
        ArgRef::Out(&mut pos),
        ArgRef::Out(&mut starts),
        ArgRef::Out(&mut counts),
    ];
    ops.kernel(FILE, "moe_permute", &perm_inst)?.launch_refs(&mut args)?;

    // 3. up projection with fused SiLU·mul over the permuted rows
    let tl = tiles(ops, p.div_ceil(e));
    let up_inst = Instance::default()
        .dtype("T", dt)
        .tunable("BM", tl.bm)
        .tunable("BN", pick(&[16, 32, 64, 128], i, tl.bn))
        .tunable("BK", pick(&[8, 16, 32, 64, 128, 256], h, tl.bk_for(h)));
    let mut hidden = scratch::take(dt, &[p, i]);
    let mut args = [
        ArgRef::In(x),
        ArgRef::In(w1),
        ArgRef::In(w3),
        ArgRef::In(&sorted_pairs),
        ArgRef::In(&starts),
        ArgRef::In(&counts),
        ArgRef::Out(&mut hidden),
        ArgRef::I32(k as i32),
    ];
    ops.kernel(FILE, "moe_up", &up_inst)?.launch_refs(&mut args)?;

    // 4. down projection, scaled by the routing weight of each pair
    let down_inst = Instance::default()
        .dtype("T", dt)
        .tunable("BM", tl.bm)
        .tunable("BN", pick(&[16, 32, 64, 128], h, tl.bn))
        .tunable("BK", pick(&[8, 16, 32, 64, 128, 256], i, tl.bk_for(i)));
    let flat_weights = reshaped(&weights, &[p]);
    let mut y_perm = scratch::take(DType::F32, &[p, h]);
    let mut args = [
        ArgRef::In(&hidden),
        ArgRef::In(w2),
        ArgRef::In(&sorted_pairs),
        ArgRef::In(&starts),
        ArgRef::In(&counts),
        ArgRef::In(&flat_weights),
        ArgRef::Out(&mut y_perm),
    ];
    ops.kernel(FILE, "moe_down", &down_inst)?.launch_refs(&mut args)?;

    // 5. combine the k slots of every token in slot order
    let comb_inst = Instance::default()
        .tunable("BT", pick(&[1, 2, 4, 8, 16, 32, 64], t, 16))
        .tunable("BH", pick(&[16, 32, 64, 128, 256], h, 128));
    let pos = Tensor { shape: vec![t, k], ..pos };
    let mut out = Tensor::zeros(DType::F32, &[t, h]);
    let mut args = [ArgRef::In(&y_perm), ArgRef::In(&pos), ArgRef::Out(&mut out)];
    ops.kernel(FILE, "moe_combine", &comb_inst)?.launch_refs(&mut args)?;
    scratch::give(hidden);
    scratch::give(y_perm);

    Ok(MoeOut { out, expert_ids, weights })
}

/// Tiles of the grouped GEMMs for `rows` permuted rows per expert on average.
struct Tiles {
    bm: i64,
    bn: i64,
    bk: i64,
}

impl Tiles {
    /// `BK` for a K extent of `k`: the preferred `bk`, or a smaller power of two down to 64
    /// that divides `k`, so that the last K step is not mostly masked-off padding that the
    /// micro-kernels still sweep (moe_down's I = 1408 in 256 steps sweeps 1536).
    fn bk_for(&self, k: usize) -> i64 {
        let mut bk = self.bk;
        while bk > 64 && k % bk as usize != 0 {
            bk /= 2;
        }
        if k % bk as usize == 0 {
            bk
        } else {
            self.bk
        }
    }
}

/// The llvm target lowers the K loops as cache-blocked GEMMs (`codegen/src/llvm/kloop.rs`;
/// bf16 row tiles of up to 128 rows read the expert weights in place, `kloop_stream.rs`; dead
/// rows skipped as in `live.rs`): wide N tiles amortize the gathered `a` panel, and deep K
/// steps amortize each row's address and bounds setup of the panel loads. Other targets keep
/// the small default tiles.
fn tiles(ops: &Ops, rows: usize) -> Tiles {
    if ops.target().name() == "llvm" {
        // One row tile per expert up to 1.5x the average load: each weight is then read once
        // per expert, and the rows past an expert's segment are skipped by the micro-kernels.
        Tiles { bm: pick(&[16, 32, 64, 128], rows + rows / 2, 128), bn: 128, bk: 256 }
    } else {
        Tiles { bm: pick(&[16, 32, 64, 128], rows, 64), bn: 64, bk: 32 }
    }
}

fn shape_err(msg: String) -> OpError {
    OpError::Shape { op: OP, msg }
}

fn dims<const N: usize>(name: &str, layout: &str, t: &Tensor) -> Result<[usize; N]> {
    crate::blocks::dims(OP, name, layout, t)
}
