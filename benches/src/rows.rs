//! The speed rows of issue 3, defined once: the criterion benches (`benches/benches/rows.rs`) and
//! `opc bench` (which includes this file) run exactly these operators on exactly these shapes.
//!
//! Every row runs an `opc-ops` driver (DSL kernels compiled by the real pipeline for the chosen
//! target) on deterministic pseudo-random data, and knows its work: floating-point operations
//! for compute rows, bytes of weights read for the memory-bound GEMV rows, and which machine
//! limit it is measured against. Baseline keys match `benches/torch_baseline.py`.

use opc_ir::{DType, Tensor};
use opc_ops::Ops;

/// The machine limit a row is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// AVX-512 FMA fp32 GFLOP/s (`peak.c`).
    Fma,
    /// AMX bf16 GFLOP/s (`peak.c`).
    Amx,
    /// DRAM streaming read GB/s (`bw.c`).
    Bandwidth,
}

/// What a row's work is counted in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Work {
    Flops(f64),
    Bytes(f64),
}

/// One row: its name (also the baseline key), what it runs, its work and its limit.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    pub name: &'static str,
    pub what: &'static str,
    pub work: Work,
    pub limit: Limit,
}

const GEMV_N: usize = 14336;
const GEMV_K: usize = 4096;
const GEMV_MATS: usize = 4;
/// Tokens of the prefill rows (one 14336x4096 weight: 60 GFLOP a run).
const PREFILL_M: usize = 512;
const ATTN: (usize, usize, usize) = (8, 2048, 64); // heads, sequence, head dim (B = 1)
const MOE: (usize, usize, usize, usize, usize, usize) = (512, 2048, 1408, 64, 8, 8); // T, H, I, E, top-k, groups
const KL: (usize, usize) = (8, 152064); // gamma, vocabulary
/// gpt-oss-style MXFP4 experts: T, H, I, E, top-k (the 2.7B random-weight model's shapes).
const MX_MOE: (usize, usize, usize, usize, usize) = (512, 2048, 2048, 16, 4);
/// Layers of the one-token MoE row: the 2.7B model's 12, 1.3 GB of experts (more than the L3),
/// of which one token reads its top-k experts' share.
const MX_MOE_LAYERS: usize = 12;

/// Bytes of MXFP4 weights (codes and scales) that one token reads in the one-token MoE row:
/// top-k experts, gate/up and down, per layer.
fn mx_moe_decode_bytes() -> f64 {
    let (_, h, i, _, k) = MX_MOE;
    (MX_MOE_LAYERS * k * 3 * (h * i / 2 + h * i / 32)) as f64
}

/// Tokens of the batched-decode MoE row (a decode step of 8 sequences).
const MX_MOE_BATCH: usize = 8;

/// Bytes of MXFP4 weights that a decode step of [`MX_MOE_BATCH`] tokens reads: the experts that
/// any of them routes to, E·(1 − (1 − k/E)^T) of the E experts in expectation (14.4 of 16 for 8
/// tokens, top-4) per layer.
fn mx_moe_batch_bytes() -> f64 {
    let (_, h, i, e, k) = MX_MOE;
    let distinct = e as f64 * (1.0 - (1.0 - k as f64 / e as f64).powi(MX_MOE_BATCH as i32));
    MX_MOE_LAYERS as f64 * distinct * (3 * (h * i / 2 + h * i / 32)) as f64
}

fn causal_attention_flops() -> f64 {
    let (h, s, d) = ATTN;
    // Q·Kᵀ and P·V over the causal half (s(s+1)/2 visible pairs), 2 flops per multiply-add.
    2.0 * 2.0 * h as f64 * (s * (s + 1) / 2) as f64 * d as f64
}

/// Every row, in the order `opc bench` prints them.
pub fn rows() -> Vec<Row> {
    let (t, h, i, _, k, _) = MOE;
    vec![
        Row { name: "gemm_f32_1024", what: "matmul f32 1024x1024x1024", work: Work::Flops(2.0 * 1024f64.powi(3)), limit: Limit::Fma },
        Row { name: "gemm_bf16_1024", what: "matmul bf16 1024x1024x1024", work: Work::Flops(2.0 * 1024f64.powi(3)), limit: Limit::Amx },
        Row { name: "gemm_f32_2048", what: "matmul f32 2048x2048x2048", work: Work::Flops(2.0 * 2048f64.powi(3)), limit: Limit::Fma },
        Row { name: "gemm_bf16_2048", what: "matmul bf16 2048x2048x2048", work: Work::Flops(2.0 * 2048f64.powi(3)), limit: Limit::Amx },
        Row {
            name: "attention_prefill_f32",
            what: "flash_attention causal B1 H8 S2048 D64 f32",
            work: Work::Flops(causal_attention_flops()),
            limit: Limit::Fma,
        },
        Row {
            name: "attention_prefill_bf16",
            what: "flash_attention causal B1 H8 S2048 D64 bf16",
            work: Work::Flops(causal_attention_flops()),
            limit: Limit::Amx,
        },
        Row {
            name: "gemv_bf16",
            what: "linear_w M=1 (f32 x), 4 bf16 weights 14336x4096 (470 MB)",
            work: Work::Bytes((GEMV_MATS * GEMV_N * GEMV_K * 2) as f64),
            limit: Limit::Bandwidth,
        },
        Row {
            name: "gemv_bf16_m8",
            what: "linear_w M=8 (bf16 x), the 4 bf16 weights of gemv_bf16",
            work: Work::Bytes((GEMV_MATS * GEMV_N * GEMV_K * 2) as f64),
            limit: Limit::Bandwidth,
        },
        Row {
            name: "gemv_mxfp4",
            what: "mxfp4 GEMV M=1 (f32 x), 4 weights 14336x4096 (124 MB)",
            work: Work::Bytes((GEMV_MATS * (GEMV_N * GEMV_K / 2 + GEMV_N * GEMV_K / 32)) as f64),
            limit: Limit::Bandwidth,
        },
        Row {
            name: "gemv_mxfp4_bf16",
            what: "mxfp4 GEMV M=1 (bf16 x), the 4 weights of gemv_mxfp4",
            work: Work::Bytes((GEMV_MATS * (GEMV_N * GEMV_K / 2 + GEMV_N * GEMV_K / 32)) as f64),
            limit: Limit::Bandwidth,
        },
        Row {
            name: "prefill_bf16_512",
            what: "linear bf16 M=512, weight 14336x4096",
            work: Work::Flops(2.0 * (PREFILL_M * GEMV_N * GEMV_K) as f64),
            limit: Limit::Amx,
        },
        Row {
            name: "prefill_mxfp4_512",
            what: "mxfp4 GEMM bf16 x M=512, weight 14336x4096",
            work: Work::Flops(2.0 * (PREFILL_M * GEMV_N * GEMV_K) as f64),
            limit: Limit::Amx,
        },
        Row {
            name: "prefill_moe_mxfp4_512",
            what: "moe_mxfp4 bf16 x T=512, 16 MXFP4 experts top-4, H=I=2048",
            work: Work::Flops({
                let (t, h, i, _, k) = MX_MOE;
                2.0 * (t * k) as f64 * 3.0 * (h * i) as f64
            }),
            limit: Limit::Amx,
        },
        Row {
            name: "decode_moe_mxfp4",
            what: "moe_mxfp4 bf16 x T=1, 12 layers of 16 MXFP4 experts top-4, H=I=2048",
            work: Work::Bytes(mx_moe_decode_bytes()),
            limit: Limit::Bandwidth,
        },
        Row {
            name: "decode_moe_mxfp4_b8",
            what: "moe_mxfp4 bf16 x T=8 (batched decode), 12 layers of 16 MXFP4 experts top-4, H=I=2048",
            work: Work::Bytes(mx_moe_batch_bytes()),
            limit: Limit::Bandwidth,
        },
        Row {
            name: "grouped_gemm_moge",
            what: "moe_forward bf16 MoGE 64 experts top-8 H2048 I1408 T512",
            work: Work::Flops(2.0 * (t * k) as f64 * 3.0 * (h * i) as f64),
            limit: Limit::Amx,
        },
        Row {
            name: "kl_judge",
            what: "kl_judge f32 gamma=8 V=152064",
            work: Work::Bytes(((2 * KL.0 + 1) * KL.1 * 4) as f64),
            limit: Limit::Bandwidth,
        },
    ]
}

/// Fast deterministic data (xorshift), values in [-1, 1).
struct Fill(u64);
impl Fill {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn tensor(&mut self, d: DType, shape: &[usize]) -> Tensor {
        let mut t = Tensor::zeros(d, shape);
        match d {
            DType::F32 => t.data.chunks_exact_mut(4).for_each(|c| c.copy_from_slice(&self.f().to_le_bytes())),
            DType::BF16 => {
                // Truncated f32 bits are a valid bf16 value of the same magnitude.
                t.data.chunks_exact_mut(2).for_each(|c| c.copy_from_slice(&((self.f().to_bits() >> 16) as u16).to_le_bytes()))
            }
            DType::E2M1 => t.data.iter_mut().for_each(|b| *b = self.next() as u8),
            DType::E8M0 => t.data.iter_mut().for_each(|b| *b = 120 + (self.next() % 11) as u8),
            other => panic!("no filler for {other}"),
        }
        t
    }
}

/// One run of a row on a target.
type RunFn = Box<dyn FnMut(&Ops) -> Result<(), String>>;

/// A row ready to run: inputs allocated, kernels compiled by a first run.
pub struct Prepared {
    run: RunFn,
}

impl Prepared {
    /// Run the row once.
    pub fn run(&mut self, ops: &Ops) -> Result<(), String> {
        (self.run)(ops)
    }
}

fn e(x: opc_ops::OpError) -> String {
    x.to_string()
}

/// Allocate `row`'s inputs and run it once on `ops` (compiling its kernels).
pub fn prepare(row: &Row, ops: &Ops) -> Result<Prepared, String> {
    let mut f = Fill(0x9E37_79B9_7F4A_7C15);
    let mut run: RunFn = match row.name {
        "gemm_f32_1024" | "gemm_bf16_1024" | "gemm_f32_2048" | "gemm_bf16_2048" => {
            let d = if row.name.contains("f32") { DType::F32 } else { DType::BF16 };
            let s = if row.name.ends_with("2048") { 2048 } else { 1024 };
            let (a, b) = (f.tensor(d, &[s, s]), f.tensor(d, &[s, s]));
            Box::new(move |ops| opc_ops::blocks::matmul(ops, &a, &b, None).map(drop).map_err(e))
        }
        "attention_prefill_f32" | "attention_prefill_bf16" => {
            let d = if row.name.ends_with("f32") { DType::F32 } else { DType::BF16 };
            let (h, s, hd) = ATTN;
            let (q, k, v) = (f.tensor(d, &[1, h, s, hd]), f.tensor(d, &[1, h, s, hd]), f.tensor(d, &[1, h, s, hd]));
            let p = opc_ops::attention::AttentionParams { causal: true, window: None, scale: 1.0 / (hd as f32).sqrt() };
            Box::new(move |ops| opc_ops::attention::flash_attention(ops, &q, &k, &v, None, &p).map(drop).map_err(e))
        }
        "gemv_bf16" | "gemv_bf16_m8" => {
            // The runtime's decode path, bf16 weights read in place: one sequence with f32
            // activations, or a batch of 8 in the bf16 compute mode (the rows share each weight chunk).
            let x = if row.name == "gemv_bf16" { f.tensor(DType::F32, &[1, GEMV_K]) } else { f.tensor(DType::BF16, &[8, GEMV_K]) };
            let ws: Vec<Tensor> = (0..GEMV_MATS).map(|_| f.tensor(DType::BF16, &[GEMV_N, GEMV_K])).collect();
            Box::new(move |ops| ws.iter().try_for_each(|w| opc_ops::model::linear_w(ops, &x, w, None).map(drop).map_err(e)))
        }
        "gemv_mxfp4" | "gemv_mxfp4_bf16" => {
            // The decode GEMV of an MXFP4 checkpoint, activations in the f32 or the bf16 compute mode.
            let x = f.tensor(if row.name == "gemv_mxfp4" { DType::F32 } else { DType::BF16 }, &[1, GEMV_K]);
            let ws: Vec<opc_ops::mxfp4::Mxfp4> = (0..GEMV_MATS)
                .map(|_| opc_ops::mxfp4::Mxfp4 {
                    codes: f.tensor(DType::E2M1, &[GEMV_N, GEMV_K]),
                    scales: f.tensor(DType::E8M0, &[GEMV_N, GEMV_K / 32]),
                })
                .collect();
            Box::new(move |ops| ws.iter().try_for_each(|w| opc_ops::mxfp4::gemm(ops, &x, w).map(drop).map_err(e)))
        }
        "prefill_bf16_512" => {
            let x = f.tensor(DType::BF16, &[PREFILL_M, GEMV_K]);
            let w = f.tensor(DType::BF16, &[GEMV_N, GEMV_K]);
            Box::new(move |ops| opc_ops::blocks::linear(ops, &x, &w, None).map(drop).map_err(e))
        }
        "prefill_mxfp4_512" => {
            let x = f.tensor(DType::BF16, &[PREFILL_M, GEMV_K]);
            let w = opc_ops::mxfp4::Mxfp4 { codes: f.tensor(DType::E2M1, &[GEMV_N, GEMV_K]), scales: f.tensor(DType::E8M0, &[GEMV_N, GEMV_K / 32]) };
            Box::new(move |ops| opc_ops::mxfp4::gemm(ops, &x, &w).map(drop).map_err(e))
        }
        "prefill_moe_mxfp4_512" | "decode_moe_mxfp4" | "decode_moe_mxfp4_b8" => {
            // The gpt-oss experts of the runtime's bf16 compute mode: a 512-token prefill over
            // one layer, or one decode step (one token, or a batch) through every layer (each
            // with its own router).
            let (t, h, i, ne, k) = MX_MOE;
            let (t, layers) = match row.name {
                "decode_moe_mxfp4" => (1, MX_MOE_LAYERS),
                "decode_moe_mxfp4_b8" => (MX_MOE_BATCH, MX_MOE_LAYERS),
                _ => (t, 1),
            };
            let x = f.tensor(DType::BF16, &[t, h]);
            let mut experts = |r: usize, c: usize| opc_ops::model::MxExperts {
                codes: f.tensor(DType::E2M1, &[ne, r, c]),
                scales: f.tensor(DType::E8M0, &[ne, r, c / 32]),
                bias: f.tensor(DType::F32, &[ne, r]),
            };
            let layers: Vec<_> = (0..layers).map(|_| (experts(2 * i, h), experts(h, i))).collect();
            let rws: Vec<Tensor> = layers.iter().map(|_| f.tensor(DType::BF16, &[ne, h])).collect();
            let rb = f.tensor(DType::F32, &[ne]);
            Box::new(move |ops| {
                layers.iter().zip(&rws).try_for_each(|((gu, dn), rw)| opc_ops::model::moe_mxfp4(ops, &x, rw, &rb, k, gu, dn, 1.702, 7.0).map(drop).map_err(e))
            })
        }
        "grouped_gemm_moge" => {
            let (t, h, i, ne, _, groups) = MOE;
            let d = DType::BF16;
            let x = f.tensor(d, &[t, h]);
            let gate = f.tensor(d, &[ne, h]);
            let (w1, w3, w2) = (f.tensor(d, &[ne, i, h]), f.tensor(d, &[ne, i, h]), f.tensor(d, &[ne, h, i]));
            let rs = f.tensor(DType::F32, &[ne]);
            let routing = opc_ops::moe::Routing::MoGE { groups, router_scale: rs };
            Box::new(move |ops| opc_ops::moe::moe_forward(ops, &x, &gate, &w1, &w3, &w2, &routing).map(drop).map_err(e))
        }
        "kl_judge" => {
            let (g, v) = KL;
            let tl = f.tensor(DType::F32, &[g + 1, v]);
            let dl = f.tensor(DType::F32, &[g, v]);
            let toks = Tensor::from_i32(DType::I32, &[g], &(0..g as i32).map(|j| j * 977).collect::<Vec<_>>());
            Box::new(move |ops| opc_ops::kl_judge::kl_judge(ops, &tl, &dl, &toks, 0.5).map(drop).map_err(e))
        }
        other => return Err(format!("unknown row `{other}`")),
    };
    run(ops)?;
    Ok(Prepared { run })
}
