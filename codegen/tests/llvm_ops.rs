//! The operator library through its `opc_ops` drivers on the `llvm` target against the
//! interpreter, on random ragged shapes; and the compile time of every library kernel.
//!
//! Float outputs are compared within `ULPS · eps(f32) · max|reference|` (f16 / bf16 outputs:
//! 2 ulps of their dtype relative to the max), because the `llvm` target's `dot` uses FMA /
//! `vdpbf16ps` and its last-dim sums are reassociated (`jit_common.rs`). Integer outputs that
//! come straight from data (top-k indices on distinct values, quantized codes of
//! already-quantized inputs) must match exactly; codes that round a `dot` result may differ by
//! one step where the f32 value sits on a rounding boundary (counted and bounded).
#![cfg(feature = "llvm22-1")]

#[path = "jit_common.rs"]
mod common;

use std::time::Instant;

use common::{eps, Rng};
use opc_dsl::Instance;
use opc_ir::{Arg, DType, Tensor};
use opc_ops::attention::{flash_attention, flash_decode, AttentionParams};
use opc_ops::{blocks, kl_judge, kron_quant, model, moe, mxfp4, Ops};

const ULPS: f64 = 64.0;

fn targets() -> (Ops, Ops) {
    (Ops::new(opc_codegen::target_by_name("interp").unwrap()), Ops::new(opc_codegen::target_by_name("llvm").unwrap()))
}

/// Float tensors within the tolerance; others exact.
fn close(what: &str, want: &Tensor, got: &Tensor) {
    close_as(what, want, got, want.dtype);
}

/// [`close`] for a result computed through an intermediate of dtype `via` (its tolerance is
/// that of a `via` output: the bf16 compute mode's gate / up output is rounded to bf16 before
/// the down projection, and a reassociated up-projection sum may round an element one bf16
/// step the other way, which the down projection carries into every output of the token).
fn close_as(what: &str, want: &Tensor, got: &Tensor, via: DType) {
    assert_eq!((want.dtype, &want.shape), (got.dtype, &got.shape), "{what}: dtype / shape");
    if want.data == got.data {
        return;
    }
    let n = want.numel();
    if !want.dtype.is_float() {
        let bad: Vec<usize> = (0..n).filter(|&i| want.get_raw(i) != got.get_raw(i)).collect();
        assert!(bad.is_empty(), "{what}: {} of {n} elements differ, first at {}: {} vs {}", bad.len(), bad[0], want.get_f64(bad[0]), got.get_f64(bad[0]));
        return;
    }
    let max = (0..n).map(|i| want.get_f64(i)).filter(|v| v.is_finite()).fold(0.0f64, |m, v| m.max(v.abs()));
    let u = if via == DType::F32 { ULPS } else { 2.0 };
    let tol = u * eps(via) * max;
    for i in 0..n {
        let (a, b) = (want.get_f64(i), got.get_f64(i));
        let ok = (a.is_nan() && b.is_nan()) || a == b || (a.is_finite() && b.is_finite() && (a - b).abs() <= tol);
        assert!(ok, "{what}: element {i}: interp {a} / llvm {b} (tolerance {tol:e}, max {max})");
    }
}

/// Codes that quantize a computed value: equal, or one step apart in at most `frac` of them.
fn codes_close(what: &str, want: &Tensor, got: &Tensor, frac: f64) {
    let n = want.numel();
    let (w, g) = (want.to_i64_vec(), got.to_i64_vec());
    let mut off = 0;
    for i in 0..n {
        assert!((w[i] - g[i]).abs() <= 1, "{what}: element {i}: interp {} / llvm {}", w[i], g[i]);
        off += (w[i] != g[i]) as usize;
    }
    assert!(off as f64 <= frac * n as f64 + 1.0, "{what}: {off} of {n} codes differ by one step");
}

#[test]
fn blocks_match_the_interpreter() {
    let (i, l) = targets();
    let mut r = Rng(11);
    for (m, kk, n) in [(1, 1, 1), (7, 13, 5), (33, 70, 65), (130, 47, 129)] {
        for d in [DType::F32, DType::BF16, DType::F16] {
            let a = r.tensor_f(d, &[m, kk], false);
            let b = r.tensor_f(d, &[kk, n], false);
            let bias = r.tensor_f(DType::F32, &[n], false);
            close("matmul", &blocks::matmul(&i, &a, &b, Some(&bias)).unwrap(), &blocks::matmul(&l, &a, &b, Some(&bias)).unwrap());
            let w = r.tensor_f(d, &[n, kk], false);
            close("linear", &blocks::linear(&i, &a, &w, None).unwrap(), &blocks::linear(&l, &a, &w, None).unwrap());
            let x = r.tensor_f(d, &[m, n], false);
            let g = r.tensor_f(d, &[n], false);
            close("rmsnorm", &blocks::rmsnorm(&i, &x, &g, 1e-6).unwrap(), &blocks::rmsnorm(&l, &x, &g, 1e-6).unwrap());
            close("softmax", &blocks::softmax(&i, &x).unwrap(), &blocks::softmax(&l, &x).unwrap());
            let up = r.tensor_f(d, &[m, n], false);
            close("swiglu", &blocks::swiglu(&i, &x, &up).unwrap(), &blocks::swiglu(&l, &x, &up).unwrap());
            let gu = r.tensor_f(d, &[m, 2 * n], false);
            close("clamped_swiglu", &blocks::clamped_swiglu(&i, &gu, 1.702, 7.0).unwrap(), &blocks::clamped_swiglu(&l, &gu, 1.702, 7.0).unwrap());
            let ids = r.tensor_i(DType::I32, &[m], 0, kk as i32 - 1);
            close("embedding", &blocks::embedding(&i, &a, &ids).unwrap(), &blocks::embedding(&l, &a, &ids).unwrap());
        }
        let hd = 2 * (1 + n % 8);
        let x = r.tensor_f(DType::F32, &[m, 3, hd], false);
        let pos = r.tensor_i(DType::I32, &[m], 0, 4000);
        let p = blocks::RopeParams { theta: 10000.0, yarn: None, freq_dtype: DType::F32 };
        close("rope", &blocks::rope(&i, &x, &pos, &p).unwrap(), &blocks::rope(&l, &x, &pos, &p).unwrap());
        // distinct values: the top-k indices are unambiguous
        let vals: Vec<f32> = (0..m * n).map(|j| ((j * 7919) % (m * n)) as f32 * 0.01 - 3.0).collect();
        let x = Tensor::from_f32(DType::F32, &[m, n], &vals);
        let kk = n.min(4);
        let (vi, ii) = blocks::topk(&i, &x, kk).unwrap();
        let (vl, il) = blocks::topk(&l, &x, kk).unwrap();
        close("topk values", &vi, &vl);
        close("topk indices", &ii, &il);
    }
}

#[test]
fn attention_matches_the_interpreter() {
    let (i, l) = targets();
    let mut r = Rng(5);
    // The last two take the llvm target's 128-row and 128-key tiles, ragged on both axes.
    for (sq, sk, hd, causal, window) in [(1, 1, 16, false, None), (17, 33, 64, true, None), (40, 23, 64, true, Some(7)), (5, 70, 128, false, None), (150, 150, 64, true, Some(100)), (131, 260, 64, true, None)] {
        for d in [DType::F32, DType::BF16] {
            let q = r.tensor_f(d, &[1, 4, sq, hd], false);
            let k = r.tensor_f(d, &[1, 2, sk, hd], false);
            let v = r.tensor_f(d, &[1, 2, sk, hd], false);
            let sinks = r.tensor_f(DType::F32, &[4], false);
            let p = AttentionParams { causal, window, scale: 1.0 / (hd as f32).sqrt() };
            let (a, b) = (flash_attention(&i, &q, &k, &v, Some(&sinks), &p).unwrap(), flash_attention(&l, &q, &k, &v, Some(&sinks), &p).unwrap());
            close("flash_attention out", &a.out, &b.out);
            close("flash_attention lse", &a.lse, &b.lse);
            let q1 = r.tensor_f(d, &[1, 4, 1, hd], false);
            let (a, b) = (flash_decode(&i, &q1, &k, &v, None, &p, 3).unwrap(), flash_decode(&l, &q1, &k, &v, None, &p, 3).unwrap());
            close("flash_decode out", &a.out, &b.out);
            close("flash_decode lse", &a.lse, &b.lse);
        }
    }
}

#[test]
fn quantization_matches_the_interpreter() {
    let (i, l) = targets();
    let mut r = Rng(9);
    for (t, n1, n2) in [(1, 2, 2), (5, 4, 8), (19, 8, 16)] {
        let n = n1 * n2;
        let x = r.tensor_f(DType::F32, &[t, n], false);
        let c = r.tensor_f(DType::F32, &[n], false);
        let p1 = r.tensor_f(DType::F32, &[n1, n1], false);
        let p2 = r.tensor_f(DType::F32, &[n2, n2], false);
        let (a, b) = (kron_quant::kron_quant(&i, &x, &c, &p1, &p2).unwrap(), kron_quant::kron_quant(&l, &x, &c, &p1, &p2).unwrap());
        close("kron_quant transformed", &a.transformed, &b.transformed);
        close("kron_quant scales", &a.scales, &b.scales);
        codes_close("kron_quant codes", &a.codes, &b.codes, 0.01);
        // int4 GEMM on the interpreter's codes: integer dot products, exact up to the f32 scaling
        let w = r.tensor_raw(DType::I4, &[7, n]);
        let ws = r.tensor_f(DType::F32, &[7], false);
        close("int4_gemm", &kron_quant::int4_gemm(&i, &a.codes, &a.scales, &w, &ws, None).unwrap(), &kron_quant::int4_gemm(&l, &a.codes, &a.scales, &w, &ws, None).unwrap());
    }
    for (rows, k) in [(1, 32), (9, 64), (33, 96)] {
        let x = r.tensor_f(DType::F32, &[rows, k], true);
        let (a, b) = (mxfp4::quantize(&i, &x).unwrap(), mxfp4::quantize(&l, &x).unwrap());
        close("mxfp4 codes", &a.codes, &b.codes);
        close("mxfp4 scales", &a.scales, &b.scales);
        close("mxfp4 dequantize", &mxfp4::dequantize(&i, &a).unwrap(), &mxfp4::dequantize(&l, &a).unwrap());
        for m in [1, 5] {
            for d in [DType::F32, DType::BF16] {
                let xs = r.tensor_f(d, &[m, k], false);
                close("mxfp4 gemm", &mxfp4::gemm(&i, &xs, &a).unwrap(), &mxfp4::gemm(&l, &xs, &a).unwrap());
            }
        }
    }
}

#[test]
fn moe_and_kl_judge_match_the_interpreter() {
    let (i, l) = targets();
    let mut r = Rng(21);
    for (t, h, inter, e, routing) in [
        (3, 16, 8, 4, moe::Routing::TopK { k: 2 }),
        (9, 32, 24, 8, moe::Routing::MoGE { groups: 4, router_scale: Tensor::from_f32(DType::F32, &[8], &[1.0, 0.5, 2.0, 1.5, 1.0, 0.25, 1.0, 3.0]) }),
    ] {
        let x = r.tensor_f(DType::F32, &[t, h], false);
        let gate = r.tensor_f(DType::F32, &[e, h], false);
        let w1 = r.tensor_f(DType::F32, &[e, inter, h], false);
        let w3 = r.tensor_f(DType::F32, &[e, inter, h], false);
        let w2 = r.tensor_f(DType::F32, &[e, h, inter], false);
        let a = moe::moe_forward(&i, &x, &gate, &w1, &w3, &w2, &routing).unwrap();
        let b = moe::moe_forward(&l, &x, &gate, &w1, &w3, &w2, &routing).unwrap();
        // routing ties are measure-zero on random data: the chosen experts must agree
        close("moe expert_ids", &a.expert_ids, &b.expert_ids);
        close("moe weights", &a.weights, &b.weights);
        close("moe out", &a.out, &b.out);
    }
    for (g, v) in [(1, 7), (4, 300), (8, 1000)] {
        let tl = r.tensor_f(DType::F32, &[g + 1, v], false);
        let dl = r.tensor_f(DType::F32, &[g, v], false);
        let toks = r.tensor_i(DType::I32, &[g], 0, v as i32 - 1);
        let (a, b) = (kl_judge::kl_judge(&i, &tl, &dl, &toks, 0.5).unwrap(), kl_judge::kl_judge(&l, &tl, &dl, &toks, 0.5).unwrap());
        close("kl_judge kl", &a.kl, &b.kl);
        close("kl_judge accept", &a.accept, &b.accept);
        assert_eq!((a.accepted, &a.emitted), (b.accepted, &b.emitted), "kl_judge accepted / emitted");
    }
}

/// gpt-oss MXFP4 experts, both forms: GEMVs over each expert's rows (up to 16 rows per expert,
/// BM = 1, 2, 4 rows per program; f32 and bf16 activations) and grouped GEMMs (more), with ragged K steps and N tiles;
/// the last case takes the llvm prefill tiles (BM = BN = 128: a ragged N tile, experts of
/// uneven row counts within one row tile).
#[test]
fn moe_mxfp4_matches_the_interpreter() {
    let (i, l) = targets();
    let mut r = Rng(33);
    // (the last two: bf16 activations, rows of 16 blocks and more, which the llvm target sums
    // four blocks at a time)
    for (t, h, inter, e, k) in [(1, 64, 96, 8, 4), (2, 96, 64, 4, 2), (7, 96, 64, 4, 2), (12, 96, 64, 4, 2), (40, 96, 64, 4, 2), (150, 96, 160, 4, 2), (1, 512, 256, 4, 2), (9, 1024, 512, 8, 4)] {
        let experts = |r: &mut Rng, rows: usize, cols: usize| {
            let mut scales = Tensor::zeros(DType::E8M0, &[e, rows, cols / 32]);
            scales.data.iter_mut().for_each(|b| *b = 124 + r.below(6) as u8);
            model::MxExperts { codes: r.tensor_raw(DType::E2M1, &[e, rows, cols]), scales, bias: r.tensor_f(DType::F32, &[e, rows], false) }
        };
        let (gu, dn) = (experts(&mut r, 2 * inter, h), experts(&mut r, h, inter));
        let x = r.tensor_f(if h >= 512 { DType::BF16 } else { DType::F32 }, &[t, h], false);
        let rw = r.tensor_f(DType::BF16, &[e, h], false);
        let rb = r.tensor_f(DType::F32, &[e], false);
        let a = model::moe_mxfp4(&i, &x, &rw, &rb, k, &gu, &dn, 1.702, 7.0).unwrap();
        let b = model::moe_mxfp4(&l, &x, &rw, &rb, k, &gu, &dn, 1.702, 7.0).unwrap();
        close_as(&format!("moe_mxfp4 t={t} e={e} k={k}"), &a, &b, x.dtype);
    }
}

/// An MXFP4 GEMM's `dot` is not a fused K loop (its weights decode in the loop); with a
/// 128-row tile (the grouped expert GEMMs' prefill tile) it still skips the all-zero rows of
/// `a`, but only when the decoded weights are finite: a NaN scale gives NaN in the zero rows
/// too, as in the interpreter (0 · NaN).
#[test]
fn mxfp4_gemm_zero_rows_keep_nans() {
    const SRC: &str = include_str!("../../ops/kernels/mxfp4.opc");
    let mut r = Rng(41);
    let (m, n, k) = (150, 48, 96);
    for d in [DType::F32, DType::BF16] {
        let inst = Instance::default().dtype("T", d).tunable("BM", 128).tunable("BN", 32).tunable("BK", 64);
        let kern = common::kernel(SRC, "mxfp4_gemm", &inst);
        for nan in [false, true] {
            let mut xv = r.tensor_f(DType::F32, &[m, k], false).to_f32_vec();
            xv[20 * k..].iter_mut().for_each(|v| *v = 0.0);
            let mut scales = Tensor::zeros(DType::E8M0, &[n, k / 32]);
            scales.data.iter_mut().for_each(|b| *b = 124 + r.below(6) as u8);
            if nan {
                scales.data[k / 32 + 1] = 0xFF; // output column 1
            }
            let args = vec![
                Arg::Tensor(Tensor::from_f32(d, &[m, k], &xv)),
                Arg::Tensor(r.tensor_raw(DType::E2M1, &[n, k])),
                Arg::Tensor(scales),
                Arg::Tensor(Tensor::zeros(DType::F32, &[m, n])),
            ];
            let out = common::check(&kern, &args, common::Cmp::Close { ulps: ULPS });
            let Arg::Tensor(y) = &out[3] else { unreachable!("the output tensor") };
            assert_eq!(y.get_f64(30 * n + 1).is_nan(), nan, "{d}: a zero row times a NaN block");
        }
    }
}

/// Scale bytes of the MXFP4 block sums' forms (`block_pairs.rs`, `block_evenodd.rs`): random
/// moderate exponents, with the edge encodings 0 (2^-127, a subnormal f32) and 255 (NaN) at a
/// few places, so that the edge rows and a few NaN outputs are compared too.
fn mx_scales(r: &mut Rng, shape: &[usize], edges: usize) -> Tensor {
    let mut s = Tensor::zeros(DType::E8M0, shape);
    s.data.iter_mut().for_each(|b| *b = 122 + r.below(9) as u8);
    for i in 0..edges {
        let at = r.below(s.data.len() as u64) as usize;
        s.data[at] = if i % 2 == 0 { 0 } else { 255 };
    }
    s
}

/// The MXFP4 GEMV with f32 and bf16 activations (the even/odd and packed-pairs block forms in
/// the unmasked loop version, the general form at the edges): odd N, K not a multiple of the K
/// step (a ragged last step), single-block and many-block rows, scales 0 and 255.
#[test]
fn mxfp4_gemv_forms_match_the_interpreter() {
    let (i, l) = targets();
    let mut r = Rng(45);
    for (n, k) in [(1, 32), (7, 96), (37, 160), (33, 4096), (19, 4160)] {
        let w = mxfp4::Mxfp4 { codes: r.tensor_raw(DType::E2M1, &[n, k]), scales: mx_scales(&mut r, &[n, k / 32], 2) };
        for d in [DType::F32, DType::BF16] {
            let x = r.tensor_f(d, &[1, k], false);
            close(&format!("mxfp4 gemv n={n} k={k} {d}"), &mxfp4::gemm(&i, &x, &w).unwrap(), &mxfp4::gemm(&l, &x, &w).unwrap());
        }
        // all of one row's scales 0: its sum is tiny but exact
        let mut w0 = w.clone();
        w0.scales.data[..k / 32].fill(0);
        let x = r.tensor_f(DType::F32, &[1, k], false);
        close(&format!("mxfp4 gemv n={n} k={k} scales 0"), &mxfp4::gemm(&i, &x, &w0).unwrap(), &mxfp4::gemm(&l, &x, &w0).unwrap());
    }
}

/// The MXFP4 GEMM as a fused K loop whose weight panel is decoded straight from codes and
/// scales (`kloop.rs`; the decoded products are exact in bf16, so the bf16 panel takes them
/// unrounded): a ragged last row tile (M = 300 in 256-row tiles), odd N, scales 0 and 255, f32
/// and bf16 activations, through the library (one block per K step on llvm) and as the kernel
/// with four blocks per step, where K = 4160 ends in a ragged step.
#[test]
fn mxfp4_gemm_decoded_panels_match_the_interpreter() {
    const SRC: &str = include_str!("../../ops/kernels/mxfp4.opc");
    let (i, l) = targets();
    let mut r = Rng(46);
    for (m, n, k) in [(300, 37, 4160), (17, 300, 256)] {
        let w = mxfp4::Mxfp4 { codes: r.tensor_raw(DType::E2M1, &[n, k]), scales: mx_scales(&mut r, &[n, k / 32], 2) };
        for d in [DType::F32, DType::BF16] {
            let x = r.tensor_f(d, &[m, k], false);
            close(&format!("mxfp4 gemm m={m} n={n} k={k} {d}"), &mxfp4::gemm(&i, &x, &w).unwrap(), &mxfp4::gemm(&l, &x, &w).unwrap());
            let inst = Instance::default().dtype("T", d).tunable("BM", 256).tunable("BN", 64).tunable("BK", 128);
            let args = vec![Arg::Tensor(x), Arg::Tensor(w.codes.clone()), Arg::Tensor(w.scales.clone()), Arg::Tensor(Tensor::zeros(DType::F32, &[m, n]))];
            common::check(&common::kernel(SRC, "mxfp4_gemm", &inst), &args, common::Cmp::Close { ulps: ULPS });
        }
    }
}

/// The gpt-oss expert GEMVs over rows with activation copies: 1, 2 and 4 rows per program
/// sharing each weight block (BM from the rows per expert; 8 rows per expert take two passes of
/// 4), H and I with ragged K steps, scales 0 and 255 in the expert weights, f32 and bf16
/// activations.
#[test]
fn moe_mxfp4_rows_forms_match_the_interpreter() {
    let (i, l) = targets();
    let mut r = Rng(46);
    for (t, h, inter, e, k) in [(1, 160, 96, 4, 2), (4, 96, 64, 4, 2), (8, 128, 96, 4, 2), (16, 96, 64, 4, 2)] {
        let mut experts = |rows: usize, cols: usize| model::MxExperts {
            codes: r.tensor_raw(DType::E2M1, &[e, rows, cols]),
            scales: mx_scales(&mut r, &[e, rows, cols / 32], 2),
            bias: r.tensor_f(DType::F32, &[e, rows], false),
        };
        let (gu, dn) = (experts(2 * inter, h), experts(h, inter));
        let rw = r.tensor_f(DType::BF16, &[e, h], false);
        let rb = r.tensor_f(DType::F32, &[e], false);
        // f32 activations, and bf16 ones (widened once into a shared f32 tile by the kernel)
        for d in [DType::F32, DType::BF16] {
            let x = r.tensor_f(d, &[t, h], false);
            let a = model::moe_mxfp4(&i, &x, &rw, &rb, k, &gu, &dn, 1.702, 7.0).unwrap();
            let b = model::moe_mxfp4(&l, &x, &rw, &rb, k, &gu, &dn, 1.702, 7.0).unwrap();
            close_as(&format!("moe_mxfp4 rows t={t} h={h} i={inter} x {d}"), &a, &b, d);
        }
    }
}

/// Every kernel of the operator library, compiled fresh (representative instance) on the llvm
/// target: prints the time of each and checks none takes unreasonably long (the goal is
/// < 300 ms each on an idle machine; the bound here leaves room for a loaded CI runner).
#[test]
fn compile_time_per_operator() {
    let target = opc_codegen::target_by_name("llvm").unwrap();
    let mut times = vec![];
    for (file, src) in opc_ops::SOURCES {
        let names = opc_dsl::check(file, src).unwrap_or_else(|d| panic!("{d}"));
        for name in names {
            let mut k = opc_dsl::compile_representative(file, src, &name, &Default::default()).unwrap_or_else(|d| panic!("{d}"));
            opc_passes::run_pipeline(&mut k, &Default::default()).unwrap();
            // a distinct kernel name keeps the in-memory cache from answering
            k.name = format!("{}__compile_time", k.name);
            let t0 = Instant::now();
            target.compile(&k).unwrap_or_else(|e| panic!("{file}::{name}: {e}"));
            times.push((format!("{file}::{name}"), t0.elapsed().as_secs_f64() * 1e3));
        }
    }
    times.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (n, ms) in &times {
        println!("llvm compile {n:<40} {ms:7.1} ms");
    }
    let mean = times.iter().map(|t| t.1).sum::<f64>() / times.len() as f64;
    println!("{} kernels, mean {mean:.1} ms, max {:.1} ms ({})", times.len(), times[0].1, times[0].0);
    assert!(times[0].1 < 5000.0, "compiling {} took {:.0} ms", times[0].0, times[0].1);
}
