//! Larger kernels: the interpreter must run fixture-sized cases in well under a second
//! (the test profile builds with opt-level 2). Results are checked against f64 references.

#[path = "interp_builder.rs"]
mod builder;

use std::time::Instant;

use builder::*;
use opc_ir::interp;
use opc_ir::ir::*;
use opc_ir::{DType, Rounding};

/// Causal attention, f32, [B, H, S, D] with const D, BM x BN tiles and an online-softmax KV walk.
fn causal_attention(bm: usize, bn: usize, d: usize) -> Kernel {
    let mut kb = KB::new("causal_attention");
    let (bs, hs, ss, ds) = (kb.dim("B"), kb.dim("H"), kb.dim("S"), kb.const_dim("D", d as i64));
    let dims = || vec![s(bs), s(hs), s(ss), s(ds)];
    let q = kb.tensor("q", DType::F32, dims(), false);
    let k = kb.tensor("k", DType::F32, dims(), false);
    let v = kb.tensor("v", DType::F32, dims(), false);
    let o = kb.tensor("o", DType::F32, dims(), true);
    let scale_p = kb.scalar_param("scale", DType::F32);
    kb.grid(|kb| {
        let sv = kb.dimv(ss);
        vec![kb.cdiv(sv, bm as i64), kb.dimv(hs), kb.dimv(bs)]
    });
    let b = kb.pid(2);
    let h = kb.pid(1);
    let p0 = kb.pid(0);
    let bmc = kb.i32c(bm as i64);
    let i0 = kb.mul(p0, bmc);
    let ar = kb.arange(bm);
    let rows = kb.add(i0, ar);
    let dcols = kb.arange(d);
    let sv = kb.dimv(ss);
    let scale = kb.param(scale_p, DType::F32);
    let qt = kb.load(q, &[b, h, rows, dcols], None, None);
    let m0 = kb.full(DType::F32, &[bm], Scalar::Float(f64::NEG_INFINITY));
    let l0 = kb.full(DType::F32, &[bm], Scalar::Float(0.0));
    let acc0 = kb.full(DType::F32, &[bm, d], Scalar::Float(0.0));
    let ib = kb.add(i0, bmc);
    let hi = kb.bin(BinaryOp::Min, ib, sv);
    let lo = kb.i32c(0);
    let step = kb.i32c(bn as i64);
    let out = kb.for_(lo, hi, step, &[m0, l0, acc0], |kb, j0, cr| {
        let (m, l, acc) = (cr[0], cr[1], cr[2]);
        let an = kb.arange(bn);
        let cols = kb.add(j0, an);
        let kt = kb.load(k, &[b, h, cols, dcols], None, None);
        let vt = kb.load(v, &[b, h, cols, dcols], None, None);
        let ktt = kb.permute(kt, &[1, 0]);
        let s0 = kb.dot(qt, ktt, None);
        let sc = kb.mul(s0, scale);
        let ri = kb.expand(rows, 1);
        let cj = kb.expand(cols, 0);
        let causal = kb.cmp(CmpPred::Le, cj, ri);
        let inb = kb.cmp(CmpPred::Lt, cj, sv);
        let (causal, inb) = kb.unify(causal, inb);
        let vis = kb.bin(BinaryOp::And, causal, inb);
        let ninf = kb.f32c(f64::NEG_INFINITY);
        let sm = kb.select(vis, sc, ninf);
        let rmax = kb.reduce(ReduceOp::Max, sm, 1);
        let m_new = kb.bin(BinaryOp::Max, m, rmax);
        let isninf = kb.cmp(CmpPred::Eq, m_new, ninf);
        let z = kb.f32c(0.0);
        let m_ref = kb.select(isninf, z, m_new);
        let dm = kb.sub(m, m_ref);
        let alpha = kb.un(UnaryOp::Exp, dm);
        let mr = kb.expand(m_ref, 1);
        let sd = kb.sub(sm, mr);
        let p = kb.un(UnaryOp::Exp, sd);
        let ps = kb.reduce(ReduceOp::Sum, p, 1);
        let la = kb.mul(l, alpha);
        let ln = kb.add(la, ps);
        let ae = kb.expand(alpha, 1);
        let acc_s = kb.mul(acc, ae);
        let acc_n = kb.dot(p, vt, Some(acc_s));
        vec![m_new, ln, acc_n]
    });
    let le = kb.expand(out[1], 1);
    let ov = kb.bin(BinaryOp::Div, out[2], le);
    kb.store(o, &[b, h, rows, dcols], ov, None);
    kb.finish()
}

fn attention_reference(q: &[f32], k: &[f32], v: &[f32], bh: usize, s: usize, d: usize, scale: f32) -> Vec<f64> {
    let mut o = vec![0f64; bh * s * d];
    for x in 0..bh {
        let base = x * s * d;
        for i in 0..s {
            let sc: Vec<f64> = (0..=i)
                .map(|j| (0..d).map(|c| q[base + i * d + c] as f64 * k[base + j * d + c] as f64).sum::<f64>() * scale as f64)
                .collect();
            let mx = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = sc.iter().map(|v| (v - mx).exp()).collect();
            let den: f64 = e.iter().sum();
            for c in 0..d {
                o[base + i * d + c] = (0..=i).map(|j| e[j] * v[base + j * d + c] as f64).sum::<f64>() / den;
            }
        }
    }
    o
}

#[test]
fn causal_attention_b2_h8_s256_d64() {
    let (b, h, s, d) = (2usize, 8usize, 256usize, 64usize);
    let kern = causal_attention(64, 64, d);
    let n = b * h * s * d;
    let (qv, kv, vv) = (rnd(n, 11), rnd(n, 12), rnd(n, 13));
    let shape = [b, h, s, d];
    let scale = 1.0 / (d as f32).sqrt();
    let mk = || vec![tf32(&shape, &qv), tf32(&shape, &kv), tf32(&shape, &vv), tzeros(DType::F32, &shape), opc_ir::Arg::F32(scale)];
    let mut args = mk();
    let t = Instant::now();
    interp::run(&kern, &mut args).unwrap();
    let dt = t.elapsed();
    eprintln!("causal attention B=2 H=8 S=256 D=64: {dt:?}");
    assert!(dt.as_secs_f64() < 5.0, "too slow: {dt:?}");
    let got = tens(&args[3]).to_f32_vec();
    let want = attention_reference(&qv, &kv, &vv, b * h, s, d, scale);
    let err = got.iter().zip(&want).map(|(&g, &w)| (g as f64 - w).abs()).fold(0.0, f64::max);
    assert!(err < 1e-5, "max abs error {err}");

    // sequential execution (and an explicit 3-thread pool) give bit-identical results
    std::env::set_var("OPC_INTERP_THREADS", "1");
    let mut args2 = mk();
    let t = Instant::now();
    let r = interp::run(&kern, &mut args2);
    let dt1 = t.elapsed();
    std::env::set_var("OPC_INTERP_THREADS", "3");
    let mut args3 = mk();
    let r3 = interp::run(&kern, &mut args3);
    std::env::remove_var("OPC_INTERP_THREADS");
    r.unwrap();
    r3.unwrap();
    eprintln!("  sequential: {dt1:?}");
    assert_eq!(tens(&args2[3]).data, tens(&args[3]).data);
    assert_eq!(tens(&args3[3]).data, tens(&args[3]).data);
}

/// y = log_softmax(x) over rows of x[R, N], BN columns per step, one program per row.
fn log_softmax(bn: usize) -> Kernel {
    let mut kb = KB::new("log_softmax");
    let (rs, ns) = (kb.dim("R"), kb.dim("N"));
    let x = kb.tensor("x", DType::F32, vec![s(rs), s(ns)], false);
    let y = kb.tensor("y", DType::F32, vec![s(rs), s(ns)], true);
    kb.grid(|kb| vec![kb.dimv(rs)]);
    let r = kb.pid(0);
    let nv = kb.dimv(ns);
    let m0 = kb.f32c(f64::NEG_INFINITY);
    let l0 = kb.f32c(0.0);
    let lo = kb.i32c(0);
    let step = kb.i32c(bn as i64);
    let ninf = kb.f32c(f64::NEG_INFINITY);
    let out = kb.for_(lo, nv, step, &[m0, l0], |kb, j0, c| {
        let ar = kb.arange(bn);
        let cols = kb.add(j0, ar);
        let xt = kb.load(x, &[r, cols], None, Some(ninf));
        let bmax = kb.reduce(ReduceOp::Max, xt, 0);
        let mn = kb.bin(BinaryOp::Max, c[0], bmax);
        let d = kb.sub(c[0], mn);
        let alpha = kb.un(UnaryOp::Exp, d);
        let xd = kb.sub(xt, mn);
        let p = kb.un(UnaryOp::Exp, xd);
        let ps = kb.reduce(ReduceOp::Sum, p, 0);
        let la = kb.mul(c[1], alpha);
        vec![mn, kb.add(la, ps)]
    });
    let lg = kb.un(UnaryOp::Log, out[1]);
    let lse = kb.add(out[0], lg);
    let lo2 = kb.i32c(0);
    let step2 = kb.i32c(bn as i64);
    kb.for_(lo2, nv, step2, &[], |kb, j0, _| {
        let ar = kb.arange(bn);
        let cols = kb.add(j0, ar);
        let xt = kb.load(x, &[r, cols], None, None);
        let yv = kb.sub(xt, lse);
        kb.store(y, &[r, cols], yv, None);
        vec![]
    });
    kb.finish()
}

#[test]
fn log_softmax_41x32000() {
    let (r, n) = (41usize, 32000usize);
    let kern = log_softmax(1024);
    let xv: Vec<f32> = rnd(r * n, 5).iter().map(|v| v * 10.0).collect();
    let mut args = vec![tf32(&[r, n], &xv), tzeros(DType::F32, &[r, n])];
    let t = Instant::now();
    interp::run(&kern, &mut args).unwrap();
    let dt = t.elapsed();
    eprintln!("log_softmax 41x32000: {dt:?}");
    assert!(dt.as_secs_f64() < 5.0, "too slow: {dt:?}");
    let got = tens(&args[1]).to_f32_vec();
    for i in 0..r {
        let row = &xv[i * n..(i + 1) * n];
        let mx = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
        let lse = mx + row.iter().map(|&v| (v as f64 - mx).exp()).sum::<f64>().ln();
        for j in 0..n {
            let w = row[j] as f64 - lse;
            assert!((got[i * n + j] as f64 - w).abs() < 1e-4, "[{i},{j}] {} vs {w}", got[i * n + j]);
        }
    }
}

/// bf16 attention-style epilogue: cast f32 accumulators to bf16 and store; check against `half`.
#[test]
fn bf16_store_matches_half_rounding() {
    let mut kb = KB::new("bf16_out");
    let ns = kb.dim("N");
    let x = kb.tensor("x", DType::F32, vec![s(ns)], false);
    let y = kb.tensor("y", DType::BF16, vec![s(ns)], true);
    kb.grid(|kb| {
        let n = kb.dimv(ns);
        vec![kb.cdiv(n, 256)]
    });
    let p = kb.pid(0);
    let c256 = kb.i32c(256);
    let base = kb.mul(p, c256);
    let ar = kb.arange(256);
    let idx = kb.add(base, ar);
    let xv = kb.load(x, &[idx], None, None);
    let yv = kb.cast(xv, DType::BF16, Rounding::Rne);
    kb.store(y, &[idx], yv, None);
    let k = kb.finish();
    let n = 10_000;
    let xv: Vec<f32> = rnd(n, 3).iter().map(|v| v * 1000.0).collect();
    let mut args = vec![tf32(&[n], &xv), tzeros(DType::BF16, &[n])];
    interp::run(&k, &mut args).unwrap();
    let t = tens(&args[1]);
    for (i, &v) in xv.iter().enumerate() {
        assert_eq!(t.get_raw(i), half::bf16::from_f32(v).to_bits() as u32);
    }
}
