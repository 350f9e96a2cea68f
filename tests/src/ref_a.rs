//! Naive references for attention, kron_quant (FlatQuant + INT4 GEMM) and MXFP4, written from
//! the operator specs as plain f64 loops. They share nothing with the DSL kernels (no opc call,
//! no tile IR, not even opc's numerics helpers for the MXFP4 rounding), so a test comparing the
//! two checks the compiler and the kernels together against an independent reading of the math.
//!
//! Also: a small deterministic RNG and comparison helpers used by the property tests.

/// xorshift64* — deterministic test data from a proptest-chosen seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform integer in [lo, hi].
    pub fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as i64
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    pub fn normals(&mut self, n: usize, std: f64) -> Vec<f32> {
        (0..n).map(|_| (self.normal() * std) as f32).collect()
    }
}

/// max |a − b| over all elements (NaN anywhere gives NaN).
pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).fold(0.0, |m, (x, y)| if (x - y).is_nan() { f64::NAN } else { m.max((x - y).abs()) })
}

pub fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0, |m, x| m.max(x.abs()))
}

// ------------------------------------------------------------------------------------ attention

/// Problem description for [`attention`].
#[derive(Clone, Debug)]
pub struct AttnProblem {
    pub b: usize,
    pub hq: usize,
    pub hkv: usize,
    pub sq: usize,
    pub sk: usize,
    pub d: usize,
    pub causal: bool,
    pub window: Option<usize>,
    pub scale: f64,
}

/// softmax(scale·QKᵀ + mask [+ sink])·V in f64, per (b, h, i) row, exactly as the spec states it:
/// query head h reads KV head h / (Hq/Hkv); (i, j) masked iff causal and j > i + Sk − Sq, or a
/// window is set and j < i + Sk − Sq − window + 1; a sink adds exp(sink_h) to the denominator and
/// nothing to the numerator. Rows without any visible key (and no sink) give O = 0, LSE = −inf.
/// q [B,Hq,Sq,D], k/v [B,Hkv,Sk,D] (row-major); returns (out [B,Hq,Sq,D], lse [B,Hq,Sq]).
pub fn attention(p: &AttnProblem, q: &[f64], k: &[f64], v: &[f64], sinks: Option<&[f64]>) -> (Vec<f64>, Vec<f64>) {
    let AttnProblem { b: nb, hq, hkv, sq, sk, d, .. } = *p;
    let g = hq / hkv;
    let mut out = vec![0.0; nb * hq * sq * d];
    let mut lse = vec![f64::NEG_INFINITY; nb * hq * sq];
    for b in 0..nb {
        for h in 0..hq {
            let hk = h / g;
            for i in 0..sq {
                let qrow = &q[((b * hq + h) * sq + i) * d..][..d];
                // logits of the visible keys
                let mut logits: Vec<(usize, f64)> = Vec::new();
                for j in 0..sk {
                    let (ii, jj) = (i as i64, j as i64);
                    let off = sk as i64 - sq as i64;
                    if p.causal && jj > ii + off {
                        continue;
                    }
                    if let Some(w) = p.window {
                        if jj < ii + off - w as i64 + 1 {
                            continue;
                        }
                    }
                    let krow = &k[((b * hkv + hk) * sk + j) * d..][..d];
                    let dotp: f64 = qrow.iter().zip(krow).map(|(a, c)| a * c).sum();
                    logits.push((j, dotp * p.scale));
                }
                let sink = sinks.map(|s| s[h]);
                let mut mx = logits.iter().map(|&(_, s)| s).fold(f64::NEG_INFINITY, f64::max);
                if let Some(s) = sink {
                    mx = mx.max(s);
                }
                if mx == f64::NEG_INFINITY {
                    continue; // nothing visible: O = 0, LSE = -inf
                }
                let mut den: f64 = logits.iter().map(|&(_, s)| (s - mx).exp()).sum();
                if let Some(s) = sink {
                    den += (s - mx).exp();
                }
                let orow = &mut out[((b * hq + h) * sq + i) * d..][..d];
                for &(j, s) in &logits {
                    let pr = (s - mx).exp() / den;
                    let vrow = &v[((b * hkv + hk) * sk + j) * d..][..d];
                    for (o, &vv) in orow.iter_mut().zip(vrow) {
                        *o += pr * vv;
                    }
                }
                lse[(b * hq + h) * sq + i] = mx + den.ln();
            }
        }
    }
    (out, lse)
}

// ----------------------------------------------------------------------------------- kron_quant

/// FlatQuant reference by the explicit Kronecker product (the route FlatQuant's own test takes):
/// x~ = (x ⊙ c) · (P1 ⊗ P2), with (P1 ⊗ P2)[a·n2 + b, a'·n2 + b'] = P1[a, a'] · P2[b, b'].
/// Returns (transformed [T, n], scales [T] = amax/7, q [T, n] = x~ / scale before rounding).
pub fn kron_transform(x: &[f64], c: &[f64], p1: &[f64], p2: &[f64], t: usize, n1: usize, n2: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let n = n1 * n2;
    let kron = |row: usize, col: usize| p1[(row / n2) * n1 + col / n2] * p2[(row % n2) * n2 + col % n2];
    let mut xt = vec![0.0; t * n];
    let mut scales = vec![0.0; t];
    let mut q = vec![0.0; t * n];
    for tok in 0..t {
        for col in 0..n {
            xt[tok * n + col] = (0..n).map(|row| x[tok * n + row] * c[row] * kron(row, col)).sum();
        }
        let amax = xt[tok * n..][..n].iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let s = amax / 7.0;
        scales[tok] = s;
        for col in 0..n {
            q[tok * n + col] = if s > 0.0 { xt[tok * n + col] / s } else { 0.0 };
        }
    }
    (xt, scales, q)
}

/// clamp(round_half_even(v), −8, 7).
pub fn int4_code(v: f64) -> i64 {
    let f = v.floor();
    let r = if v - f > 0.5 {
        f + 1.0
    } else if v - f < 0.5 {
        f
    } else if f % 2.0 == 0.0 {
        f
    } else {
        f + 1.0
    };
    r.clamp(-8.0, 7.0) as i64
}

/// Distance of v to the nearest rounding tie (x.5) — where an f32 kernel may round differently.
pub fn dist_to_tie(v: f64) -> f64 {
    (v - v.floor() - 0.5).abs()
}

/// y[m, n] = (Σ_k a[m,k]·w[n,k]) · sa[m] · sw[n] (+ bias[n]).
pub fn int4_gemm(a: &[i64], sa: &[f64], w: &[i64], sw: &[f64], bias: Option<&[f64]>, m: usize, n: usize, k: usize) -> Vec<f64> {
    let mut y = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let acc: i64 = (0..k).map(|kk| a[i * k + kk] * w[j * k + kk]).sum();
            y[i * n + j] = acc as f64 * sa[i] * sw[j] + bias.map_or(0.0, |b| b[j]);
        }
    }
    y
}

// ---------------------------------------------------------------------------------------- mxfp4

/// E2M1 magnitudes by code (codes 8..15 are the negatives).
pub const E2M1: [f64; 8] = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];

/// OCP E2M1 encoding of a scaled value: saturate to ±6, round to nearest with ties to the code
/// whose mantissa bit is 0 (even code), keep the sign (so −0.1 gives code 8, "−0", as torchao).
pub fn e2m1_rne(v: f64) -> u8 {
    if v.is_nan() {
        return 0;
    }
    let sign = if v.is_sign_negative() { 8u8 } else { 0 };
    let a = v.abs().min(6.0);
    let mut best = 0usize;
    for c in 1..8 {
        let (db, dc) = ((a - E2M1[best]).abs(), (a - E2M1[c]).abs());
        if dc < db || (dc == db && c % 2 == 0) {
            best = c;
        }
    }
    best as u8 | sign
}

pub fn e2m1_value(code: u8) -> f64 {
    let m = E2M1[(code & 7) as usize];
    if code & 8 != 0 {
        -m
    } else {
        m
    }
}

/// E8M0 scale byte value 2^(e − 127); 0xFF is NaN.
pub fn e8m0_value(e: u8) -> f64 {
    if e == 0xFF {
        f64::NAN
    } else {
        2f64.powi(e as i32 - 127)
    }
}

/// OCP MX v1.0 quantization, FLOOR rule (torchao `to_mx`), per block of 32 along each row:
/// shared = floor(log2(amax)) − 2 clamped to ≥ −127 (byte = shared + 127; amax = 0 → 0);
/// a NaN or ±Inf in the block → byte 0xFF (its codes are then unspecified and returned as None);
/// codes = e2m1_rne(x / 2^shared). x [R, K]; returns (codes [R·K] (None for NaN blocks), scales [R·K/32]).
pub fn mxfp4_quantize(x: &[f32], r: usize, k: usize) -> (Vec<Option<u8>>, Vec<u8>) {
    let mut codes = vec![None; r * k];
    let mut scales = vec![0u8; r * k / 32];
    for row in 0..r {
        for blk in 0..k / 32 {
            let vals = &x[row * k + blk * 32..][..32];
            if vals.iter().any(|v| !v.is_finite()) {
                scales[row * (k / 32) + blk] = 0xFF;
                continue;
            }
            let amax = vals.iter().fold(0.0f64, |m, &v| m.max((v as f64).abs()));
            let shared = if amax == 0.0 { -127 } else { (amax.log2().floor() as i64 - 2).max(-127) };
            assert!(shared <= 127);
            scales[row * (k / 32) + blk] = (shared + 127) as u8;
            let xs = 2f64.powi(shared as i32);
            for (i, &v) in vals.iter().enumerate() {
                // v / 2^shared is exact in f64 (no rounding before the E2M1 step)
                codes[row * k + blk * 32 + i] = Some(e2m1_rne(v as f64 / xs));
            }
        }
    }
    (codes, scales)
}

/// code value × 2^(e − 127), [R, K].
pub fn mxfp4_dequantize(codes: &[u8], scales: &[u8], r: usize, k: usize) -> Vec<f64> {
    (0..r * k).map(|i| e2m1_value(codes[i]) * e8m0_value(scales[(i / k) * (k / 32) + (i % k) / 32])).collect()
}

/// y = x · Wᵀ with W = dequant(codes, scales) [N, K]; x [M, K].
pub fn mxfp4_gemm(x: &[f64], codes: &[u8], scales: &[u8], m: usize, n: usize, k: usize) -> Vec<f64> {
    let w = mxfp4_dequantize(codes, scales, n, k);
    let mut y = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            y[i * n + j] = (0..k).map(|kk| x[i * k + kk] * w[j * k + kk]).sum();
        }
    }
    y
}

/// Proptest case count: `default`, or `PROPTEST_CASES` from the environment for a deeper run.
pub fn proptest_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}
