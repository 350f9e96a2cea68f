//! Naive references: moe, kl_judge, building blocks.
//!
//! Straight f64 loops written from the operator specs (shared/specs/ops.md §4–5, transformers'
//! module code), independent of opc: no DSL, no kernels. Inputs are f32 slices in row-major
//! order; outputs are f64 (integers exact). Plus the small data helpers the property tests use.

// ---------------------------------------------------------------- data helpers

/// Deterministic generator (splitmix64) for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    /// `n` values `scale · N(0, 1)` rounded to f32.
    pub fn normals(&mut self, n: usize, scale: f64) -> Vec<f32> {
        (0..n).map(|_| (scale * self.normal()) as f32).collect()
    }
}

/// max |got − want| / max(max |want|, floor): the error relative to the largest expected magnitude.
pub fn rel_err_to_max(got: &[f32], want: &[f64], floor: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let scale = want.iter().fold(floor, |m, w| m.max(w.abs()));
    got.iter().zip(want).map(|(&g, &w)| (g as f64 - w).abs()).fold(0.0, f64::max) / scale
}

// ---------------------------------------------------------------- moe

pub enum RefRouting<'a> {
    TopK { k: usize },
    MoGE { groups: usize, router_scale: &'a [f32] },
}

pub struct MoeRef {
    /// [T, H]
    pub out: Vec<f64>,
    /// [T, k]
    pub ids: Vec<i32>,
    /// [T, k]
    pub weights: Vec<f64>,
    /// Router softmax [T, E], for tie-margin checks.
    pub probs: Vec<f64>,
}

/// Router softmax over experts: p[t, e] = softmax_e(x[t]·gate[e]). x [T,H], gate [E,H].
pub fn router_probs(x: &[f32], gate: &[f32], t: usize, h: usize, e: usize) -> Vec<f64> {
    let mut probs = vec![0.0; t * e];
    for ti in 0..t {
        let logits: Vec<f64> = (0..e).map(|ei| (0..h).map(|c| x[ti * h + c] as f64 * gate[ei * h + c] as f64).sum()).collect();
        let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = logits.iter().map(|l| (l - m).exp()).sum();
        for ei in 0..e {
            probs[ti * e + ei] = (logits[ei] - m).exp() / z;
        }
    }
    probs
}

/// y[t] = Σ_j w[t,j] · W2_e (silu(W1_e x[t]) ⊙ W3_e x[t]); w1, w3 [E,I,H], w2 [E,H,I].
#[allow(clippy::too_many_arguments)]
pub fn moe(x: &[f32], gate: &[f32], w1: &[f32], w3: &[f32], w2: &[f32], t: usize, h: usize, e: usize, i: usize, routing: &RefRouting) -> MoeRef {
    let probs = router_probs(x, gate, t, h, e);
    let k = match routing {
        RefRouting::TopK { k } => *k,
        RefRouting::MoGE { groups, .. } => *groups,
    };
    let mut ids = vec![0i32; t * k];
    let mut weights = vec![0.0f64; t * k];
    for ti in 0..t {
        let p = &probs[ti * e..(ti + 1) * e];
        match routing {
            RefRouting::TopK { k } => {
                // stable sort by descending probability: equal values keep ascending expert order
                let mut order: Vec<usize> = (0..e).collect();
                order.sort_by(|&a, &b| p[b].partial_cmp(&p[a]).unwrap());
                let den: f64 = order[..*k].iter().map(|&ei| p[ei]).sum();
                for j in 0..*k {
                    ids[ti * k + j] = order[j] as i32;
                    weights[ti * k + j] = p[order[j]] / den;
                }
            }
            RefRouting::MoGE { groups, router_scale } => {
                let eg = e / groups;
                for g in 0..*groups {
                    let mut best = g * eg;
                    for ei in g * eg..(g + 1) * eg {
                        if p[ei] > p[best] {
                            best = ei;
                        }
                    }
                    ids[ti * k + g] = best as i32;
                    weights[ti * k + g] = p[best] * router_scale[best] as f64;
                }
            }
        }
    }
    let mut out = vec![0.0f64; t * h];
    for ti in 0..t {
        let xt = &x[ti * h..(ti + 1) * h];
        for j in 0..k {
            let ei = ids[ti * k + j] as usize;
            let act: Vec<f64> = (0..i)
                .map(|n| {
                    let g: f64 = (0..h).map(|c| w1[(ei * i + n) * h + c] as f64 * xt[c] as f64).sum();
                    let u: f64 = (0..h).map(|c| w3[(ei * i + n) * h + c] as f64 * xt[c] as f64).sum();
                    g / (1.0 + (-g).exp()) * u
                })
                .collect();
            for c in 0..h {
                let y: f64 = (0..i).map(|n| w2[(ei * h + c) * i + n] as f64 * act[n]).sum();
                out[ti * h + c] += weights[ti * k + j] * y;
            }
        }
    }
    MoeRef { out, ids, weights, probs }
}

// ---------------------------------------------------------------- kl_judge

pub struct JudgeRef {
    pub kl: Vec<f64>,
    pub conf: Vec<f64>,
    pub accept: Vec<u8>,
    pub accepted: usize,
    pub emitted: Vec<i32>,
}

/// Log-softmax of one row, in f64.
pub fn log_softmax(z: &[f32]) -> Vec<f64> {
    let m = z.iter().map(|&v| v as f64).fold(f64::NEG_INFINITY, f64::max);
    let lse = m + z.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
    z.iter().map(|&v| v as f64 - lse).collect()
}

/// First index of the maximum.
pub fn argmax(z: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in z.iter().enumerate() {
        if v > z[best] {
            best = i;
        }
    }
    best
}

/// JuDi greedy rule. target [γ+1, V], draft [γ, V], tokens [γ].
pub fn kl_judge(target: &[f32], draft: &[f32], tokens: &[i32], gamma: usize, v: usize, tau: f64) -> JudgeRef {
    let (mut kl, mut conf, mut accept) = (vec![], vec![], vec![]);
    for t in 0..gamma {
        let zt = &target[t * v..(t + 1) * v];
        let lp = log_softmax(zt);
        let lq = log_softmax(&draft[t * v..(t + 1) * v]);
        // 0·log 0 = 0: positions where p underflows contribute nothing
        let k: f64 = lp.iter().zip(&lq).map(|(&a, &b)| if a.exp() == 0.0 { 0.0 } else { a.exp() * (a - b) }).sum();
        let c = lp.iter().map(|a| a.exp()).fold(0.0, f64::max);
        let ok = tokens[t] == argmax(zt) as i32 || (c <= 0.9 && k < tau);
        kl.push(k);
        conf.push(c);
        accept.push(ok as u8);
    }
    let accepted = accept.iter().take_while(|&&a| a == 1).count();
    let mut emitted: Vec<i32> = tokens[..accepted].to_vec();
    emitted.push(argmax(&target[accepted * v..(accepted + 1) * v]) as i32);
    JudgeRef { kl, conf, accept, accepted, emitted }
}

// ---------------------------------------------------------------- building blocks

/// a [M,K] · b [K,N] (+ bias [N]).
pub fn matmul(a: &[f32], b: &[f32], bias: Option<&[f32]>, m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for r in 0..m {
        for col in 0..n {
            let s: f64 = (0..k).map(|i| a[r * k + i] as f64 * b[i * n + col] as f64).sum();
            c[r * n + col] = s + bias.map_or(0.0, |bb| bb[col] as f64);
        }
    }
    c
}

/// x [M,K] · w[N,K]ᵀ (+ bias [N]).
pub fn linear(x: &[f32], w: &[f32], bias: Option<&[f32]>, m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for r in 0..m {
        for col in 0..n {
            let s: f64 = (0..k).map(|i| x[r * k + i] as f64 * w[col * k + i] as f64).sum();
            c[r * n + col] = s + bias.map_or(0.0, |bb| bb[col] as f64);
        }
    }
    c
}

/// y = w · x / sqrt(mean(x²) + eps) per row of x [T,H].
pub fn rmsnorm(x: &[f32], w: &[f32], t: usize, h: usize, eps: f64) -> Vec<f64> {
    let mut y = vec![0.0; t * h];
    for r in 0..t {
        let row = &x[r * h..(r + 1) * h];
        let ms = row.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / h as f64;
        let inv = 1.0 / (ms + eps).sqrt();
        for c in 0..h {
            y[r * h + c] = w[c] as f64 * row[c] as f64 * inv;
        }
    }
    y
}

pub struct YarnRef {
    pub factor: f64,
    pub beta_fast: f64,
    pub beta_slow: f64,
    pub original_max_position_embeddings: f64,
    pub truncate: bool,
}

/// inv_freq[j] for j < D/2 and the cos/sin scale, after transformers' `_compute_default_rope_parameters`
/// and `_compute_yarn_parameters`, rounded to f32 as transformers stores the table.
pub fn rope_inv_freq(d: usize, theta: f64, yarn: Option<&YarnRef>) -> (Vec<f32>, f64) {
    let half = d / 2;
    let pos_freqs: Vec<f64> = (0..half).map(|j| theta.powf((2 * j) as f64 / d as f64)).collect();
    let Some(y) = yarn else {
        return (pos_freqs.iter().map(|p| (1.0 / p) as f32).collect(), 1.0);
    };
    let corr = |rot: f64| (d as f64 * (y.original_max_position_embeddings / (rot * 2.0 * std::f64::consts::PI)).ln()) / (2.0 * theta.ln());
    let (mut low, mut high) = (corr(y.beta_fast), corr(y.beta_slow));
    if y.truncate {
        low = low.floor();
        high = high.ceil();
    }
    low = low.max(0.0);
    high = high.min(d as f64 - 1.0);
    if low == high {
        high += 0.001;
    }
    let inv = (0..half)
        .map(|j| {
            let ramp = ((j as f64 - low) / (high - low)).clamp(0.0, 1.0);
            let extrapolation_factor = 1.0 - ramp;
            let interp = 1.0 / (y.factor * pos_freqs[j]);
            let extrap = 1.0 / pos_freqs[j];
            (interp * (1.0 - extrapolation_factor) + extrap * extrapolation_factor) as f32
        })
        .collect();
    let scale = if y.factor <= 1.0 { 1.0 } else { 0.1 * y.factor.ln() + 1.0 };
    (inv, scale)
}

/// `v` rounded to `dt` (f32, bf16 or f16) and back.
fn held_in(v: f32, dt: opc_ir::DType) -> f32 {
    match dt {
        opc_ir::DType::BF16 => half::bf16::from_f32(v).to_f32(),
        opc_ir::DType::F16 => half::f16::from_f32(v).to_f32(),
        _ => v,
    }
}

/// RoPE on x [T,NH,D] with HF rotate_half: y = x·cos + rotate_half(x)·sin. The angle is
/// pos · inv_freq rounded to f32, as transformers computes it (cos of a large angle amplifies
/// that rounding, so the reference models it), with inv_freq first rounded to `freq_dtype` (the
/// model's parameter dtype, as transformers holds it); everything else in f64.
#[allow(clippy::too_many_arguments)]
pub fn rope(x: &[f32], positions: &[i32], t: usize, nh: usize, d: usize, theta: f64, yarn: Option<&YarnRef>, freq_dtype: opc_ir::DType) -> Vec<f64> {
    let (inv, scale) = rope_inv_freq(d, theta, yarn);
    let inv: Vec<f32> = inv.into_iter().map(|v| held_in(v, freq_dtype)).collect();
    let half = d / 2;
    let mut y = vec![0.0; t * nh * d];
    for (ti, &pos) in positions.iter().enumerate().take(t) {
        for hi in 0..nh {
            let base = (ti * nh + hi) * d;
            for c in 0..d {
                let j = c % half;
                let angle = (pos as f32 * inv[j]) as f64;
                let (s, co) = angle.sin_cos();
                let rot = if c < half { -(x[base + c + half] as f64) } else { x[base + c - half] as f64 };
                y[base + c] = x[base + c] as f64 * co * scale + rot * s * scale;
            }
        }
    }
    y
}

pub fn silu(v: f64) -> f64 {
    v / (1.0 + (-v).exp())
}

pub fn swiglu(gate: &[f32], up: &[f32]) -> Vec<f64> {
    gate.iter().zip(up).map(|(&g, &u)| silu(g as f64) * u as f64).collect()
}

/// gpt-oss: gate = x[..., ::2], up = x[..., 1::2]; gate ≤ limit, up ∈ [−limit, limit];
/// (up + 1) · gate · σ(alpha · gate). gate_up [T, 2I] → [T, I].
pub fn clamped_swiglu(gate_up: &[f32], t: usize, i: usize, alpha: f64, limit: f64) -> Vec<f64> {
    let mut y = vec![0.0; t * i];
    for r in 0..t {
        for c in 0..i {
            let g = (gate_up[r * 2 * i + 2 * c] as f64).min(limit);
            let u = (gate_up[r * 2 * i + 2 * c + 1] as f64).clamp(-limit, limit);
            y[r * i + c] = (u + 1.0) * g / (1.0 + (-alpha * g).exp());
        }
    }
    y
}

pub fn softmax(x: &[f32], t: usize, v: usize) -> Vec<f64> {
    (0..t).flat_map(|r| log_softmax(&x[r * v..(r + 1) * v]).into_iter().map(f64::exp)).collect()
}

/// Rows of table [V,H] at ids; ids outside [0, V) give zero rows.
pub fn embedding(table: &[f32], ids: &[i32], v: usize, h: usize) -> Vec<f64> {
    ids.iter()
        .flat_map(|&id| (0..h).map(move |c| if id >= 0 && (id as usize) < v { table[id as usize * h + c] as f64 } else { 0.0 }))
        .collect()
}

/// The k largest per row, descending, equal values by ascending index: (values, indices).
pub fn topk(x: &[f32], t: usize, v: usize, k: usize) -> (Vec<f32>, Vec<i32>) {
    let (mut vals, mut idx) = (vec![], vec![]);
    for r in 0..t {
        let row = &x[r * v..(r + 1) * v];
        let mut order: Vec<usize> = (0..v).collect();
        order.sort_by(|&a, &b| row[b].partial_cmp(&row[a]).unwrap()); // stable: ties keep index order
        for &o in &order[..k] {
            vals.push(row[o]);
            idx.push(o as i32);
        }
    }
    (vals, idx)
}
