//! Whole kernels through the reference interpreter, against naive Rust.

#[path = "interp_builder.rs"]
mod builder;

use builder::*;
use opc_ir::interp;
use opc_ir::ir::*;
use opc_ir::launch::LaunchError;
use opc_ir::{Arg, DType, Rounding, Tensor};

/// c[M, N] = a[M, K] · b[K, N], BM x BN tiles, BK steps, ragged edges masked by bounds.
fn matmul_kernel(dt: DType, bm: usize, bn: usize, bk: usize) -> Kernel {
    let mut kb = KB::new("matmul");
    let (m, n, k) = (kb.dim("M"), kb.dim("N"), kb.dim("K"));
    let a = kb.tensor("a", dt, vec![s(m), s(k)], false);
    let b = kb.tensor("b", dt, vec![s(k), s(n)], false);
    let acc_dt = dot_acc_dtype(dt);
    let cc = kb.tensor("c", acc_dt, vec![s(m), s(n)], true);
    kb.grid(|kb| {
        let mv = kb.dimv(m);
        let nv = kb.dimv(n);
        vec![kb.cdiv(mv, bm as i64), kb.cdiv(nv, bn as i64)]
    });
    let p0 = kb.pid(0);
    let p1 = kb.pid(1);
    let bmc = kb.i32c(bm as i64);
    let bnc = kb.i32c(bn as i64);
    let r0 = kb.mul(p0, bmc);
    let ar = kb.arange(bm);
    let rows = kb.add(r0, ar);
    let c0 = kb.mul(p1, bnc);
    let ac = kb.arange(bn);
    let cols = kb.add(c0, ac);
    let zero = match acc_dt {
        DType::F32 => Scalar::Float(0.0),
        _ => Scalar::Int(0),
    };
    let acc0 = kb.full(acc_dt, &[bm, bn], zero);
    let kv = kb.dimv(k);
    let nk = kb.cdiv(kv, bk as i64);
    let lo = kb.i32c(0);
    let one = kb.i32c(1);
    let res = kb.for_(lo, nk, one, &[acc0], |kb, k0, carried| {
        let bkc = kb.i32c(bk as i64);
        let kk0 = kb.mul(k0, bkc);
        let ak = kb.arange(bk);
        let ks = kb.add(kk0, ak);
        let at = kb.load(a, &[rows, ks], None, None);
        let bt = kb.load(b, &[ks, cols], None, None);
        vec![kb.dot(at, bt, Some(carried[0]))]
    });
    kb.store(cc, &[rows, cols], res[0], None);
    kb.finish()
}

#[test]
fn tiled_matmul_ragged_f32() {
    let k = matmul_kernel(DType::F32, 16, 8, 8);
    for &(m, n, kk) in &[(37usize, 21usize, 13usize), (16, 8, 8), (1, 1, 1), (5, 30, 50)] {
        let av = rnd(m * kk, 1);
        let bv = rnd(kk * n, 2);
        let mut args = vec![tf32(&[m, kk], &av), tf32(&[kk, n], &bv), tzeros(DType::F32, &[m, n])];
        interp::run(&k, &mut args).unwrap();
        let got = tens(&args[2]).to_f32_vec();
        for i in 0..m {
            for j in 0..n {
                let mut want = 0f32;
                for p in 0..kk {
                    want += av[i * kk + p] * bv[p * n + j];
                }
                assert_eq!(got[i * n + j], want, "({m},{n},{kk}) at [{i},{j}]");
            }
        }
    }
}

#[test]
fn tiled_matmul_ragged_i8_accumulates_in_i32() {
    let k = matmul_kernel(DType::I8, 8, 8, 4);
    let (m, n, kk) = (11usize, 9usize, 7usize);
    let av: Vec<i32> = (0..m * kk).map(|i| (i as i32 * 37 % 256) - 128).collect();
    let bv: Vec<i32> = (0..kk * n).map(|i| (i as i32 * 91 % 256) - 128).collect();
    let mut args = vec![
        Arg::Tensor(Tensor::from_i32(DType::I8, &[m, kk], &av)),
        Arg::Tensor(Tensor::from_i32(DType::I8, &[kk, n], &bv)),
        tzeros(DType::I32, &[m, n]),
    ];
    interp::run(&k, &mut args).unwrap();
    let got = tens(&args[2]).to_i64_vec();
    for i in 0..m {
        for j in 0..n {
            let want: i64 = (0..kk).map(|p| av[i * kk + p] as i64 * bv[p * n + j] as i64).sum();
            assert_eq!(got[i * n + j], want);
        }
    }
}

/// Masked store leaves the masked-off elements alone: c[i, j] = i * 100 + j where i > j.
#[test]
fn masked_store_keeps_memory() {
    let mut kb = KB::new("tri");
    let n = kb.dim("N");
    let o = kb.tensor("o", DType::I32, vec![s(n), s(n)], true);
    kb.grid(|kb| vec![kb.i32c(1)]);
    let r = kb.arange(8);
    let re = kb.expand(r, 1);
    let ce = kb.expand(r, 0);
    let hundred = kb.i32c(100);
    let v0 = kb.mul(re, hundred);
    let v = kb.add(v0, ce);
    let mask = kb.cmp(CmpPred::Gt, re, ce);
    kb.store(o, &[r, r], v, Some(mask));
    let k = kb.finish();
    let nn = 5;
    let mut args = vec![Arg::Tensor(Tensor::from_i32(DType::I32, &[nn, nn], &vec![-1; nn * nn]))];
    interp::run(&k, &mut args).unwrap();
    let got = tens(&args[0]).to_i64_vec();
    for i in 0..nn {
        for j in 0..nn {
            let want = if i > j { (i * 100 + j) as i64 } else { -1 };
            assert_eq!(got[i * nn + j], want);
        }
    }
}

/// Online softmax over rows of x[R, N], BN columns per step, carrying (m, l, s):
/// y = softmax(x), lse[r] = m + log l, mean[r] = s / N.
#[test]
fn online_softmax_for_loop_carries_three_values() {
    const BN: usize = 16;
    let mut kb = KB::new("online_softmax");
    let (rs, ns) = (kb.dim("R"), kb.dim("N"));
    let x = kb.tensor("x", DType::F32, vec![s(rs), s(ns)], false);
    let y = kb.tensor("y", DType::F32, vec![s(rs), s(ns)], true);
    let lse = kb.tensor("lse", DType::F32, vec![s(rs)], true);
    let mean = kb.tensor("mean", DType::F32, vec![s(rs)], true);
    kb.grid(|kb| vec![kb.dimv(rs)]);
    let r = kb.pid(0);
    let nv = kb.dimv(ns);
    let m0 = kb.f32c(f64::NEG_INFINITY);
    let l0 = kb.f32c(0.0);
    let s0 = kb.f32c(0.0);
    let lo = kb.i32c(0);
    let step = kb.i32c(BN as i64);
    let ninf = kb.f32c(f64::NEG_INFINITY);
    let out = kb.for_(lo, nv, step, &[m0, l0, s0], |kb, j0, c| {
        let (m, l, sm) = (c[0], c[1], c[2]);
        let ar = kb.arange(BN);
        let cols = kb.add(j0, ar);
        let xt = kb.load(x, &[r, cols], None, Some(ninf));
        let bmax = kb.reduce(ReduceOp::Max, xt, 0);
        let mn = kb.bin(BinaryOp::Max, m, bmax);
        let d = kb.sub(m, mn);
        let alpha = kb.un(UnaryOp::Exp, d);
        let xd = kb.sub(xt, mn);
        let p = kb.un(UnaryOp::Exp, xd);
        let psum = kb.reduce(ReduceOp::Sum, p, 0);
        let la = kb.mul(l, alpha);
        let ln = kb.add(la, psum);
        let valid = kb.cmp(CmpPred::Lt, cols, nv);
        let z = kb.f32c(0.0);
        let xv = kb.select(valid, xt, z);
        let xs = kb.reduce(ReduceOp::Sum, xv, 0);
        let sn = kb.add(sm, xs);
        vec![mn, ln, sn]
    });
    let (m, l, sm) = (out[0], out[1], out[2]);
    let lo2 = kb.i32c(0);
    let step2 = kb.i32c(BN as i64);
    kb.for_(lo2, nv, step2, &[], |kb, j0, _| {
        let ar = kb.arange(BN);
        let cols = kb.add(j0, ar);
        let xt = kb.load(x, &[r, cols], None, None);
        let xd = kb.sub(xt, m);
        let e = kb.un(UnaryOp::Exp, xd);
        let il = kb.un(UnaryOp::Recip, l);
        let yv = kb.mul(e, il);
        kb.store(y, &[r, cols], yv, None);
        vec![]
    });
    let lg = kb.un(UnaryOp::Log, l);
    let lsev = kb.add(m, lg);
    kb.store(lse, &[r], lsev, None);
    let nf = kb.cast(nv, DType::F32, Rounding::Rne);
    let mv = kb.bin(BinaryOp::Div, sm, nf);
    kb.store(mean, &[r], mv, None);
    let k = kb.finish();

    let (rr, nn) = (7usize, 50usize);
    let xv: Vec<f32> = rnd(rr * nn, 9).iter().map(|v| v * 8.0).collect();
    let mut args = vec![tf32(&[rr, nn], &xv), tzeros(DType::F32, &[rr, nn]), tzeros(DType::F32, &[rr]), tzeros(DType::F32, &[rr])];
    interp::run(&k, &mut args).unwrap();
    let (yg, lg, mg) = (tens(&args[1]).to_f32_vec(), tens(&args[2]).to_f32_vec(), tens(&args[3]).to_f32_vec());
    for i in 0..rr {
        let row: Vec<f64> = xv[i * nn..(i + 1) * nn].iter().map(|&v| v as f64).collect();
        let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let se: f64 = row.iter().map(|v| (v - mx).exp()).sum();
        for j in 0..nn {
            let want = (row[j] - mx).exp() / se;
            assert!((yg[i * nn + j] as f64 - want).abs() < 1e-6, "y[{i},{j}] {} vs {want}", yg[i * nn + j]);
        }
        let want_lse = mx + se.ln();
        assert!((lg[i] as f64 - want_lse).abs() < 1e-5, "lse[{i}]");
        let want_mean = row.iter().sum::<f64>() / nn as f64;
        assert!((mg[i] as f64 - want_mean).abs() < 1e-5, "mean[{i}]");
    }
}

/// out[g, :] = table[idx[g], :] through a loaded index tile; out-of-range indices read `other`.
#[test]
fn gather_through_loaded_index_tile() {
    const G: usize = 8;
    const D: usize = 4;
    let mut kb = KB::new("gather");
    let (gs, vs, ds) = (kb.dim("G"), kb.dim("V"), kb.const_dim("D", D as i64));
    let idx = kb.tensor("idx", DType::I32, vec![s(gs)], false);
    let table = kb.tensor("table", DType::F32, vec![s(vs), s(ds)], false);
    let out = kb.tensor("out", DType::F32, vec![s(gs), s(ds)], true);
    kb.grid(|kb| {
        let g = kb.dimv(gs);
        vec![kb.cdiv(g, G as i64)]
    });
    let p = kb.pid(0);
    let gc = kb.i32c(G as i64);
    let base = kb.mul(p, gc);
    let ar = kb.arange(G);
    let rows = kb.add(base, ar);
    let it = kb.load(idx, &[rows], None, None);
    let cols = kb.arange(D);
    let other = kb.f32c(-7.0);
    let vals = kb.load(table, &[it, cols], None, Some(other));
    kb.store(out, &[rows, cols], vals, None);
    let k = kb.finish();

    let (g, v) = (13usize, 6usize);
    let idxv: Vec<i32> = vec![5, 0, -1, 3, 6, 2, 2, 100, 1, 4, 0, 5, 3];
    let tv: Vec<f32> = (0..v * D).map(|i| i as f32 * 0.5).collect();
    let mut args = vec![
        Arg::Tensor(Tensor::from_i32(DType::I32, &[g], &idxv)),
        tf32(&[v, D], &tv),
        tzeros(DType::F32, &[g, D]),
    ];
    interp::run(&k, &mut args).unwrap();
    let got = tens(&args[2]).to_f32_vec();
    for (gi, &ix) in idxv.iter().enumerate() {
        for d in 0..D {
            let want = if ix >= 0 && (ix as usize) < v { tv[ix as usize * D + d] } else { -7.0 };
            assert_eq!(got[gi * D + d], want, "out[{gi},{d}]");
        }
    }
}

/// Every program adds into the same elements.
#[test]
fn atomic_add_from_many_programs() {
    let mut kb = KB::new("atomics");
    let ns = kb.dim("N");
    let of = kb.tensor("of", DType::F32, vec![s(ns)], true);
    let oi = kb.tensor("oi", DType::I32, vec![s(ns)], true);
    let oh = kb.tensor("oh", DType::F16, vec![s(ns)], true);
    kb.grid(|kb| vec![kb.i32c(7), kb.i32c(3)]);
    let p0 = kb.pid(0);
    let p1 = kb.pid(1);
    let ar = kb.arange(8);
    let pf = kb.cast(p0, DType::F32, Rounding::Rne);
    kb.atomic_add(of, &[ar], pf, None);
    // oi[j] += p1 + j for j < N, only where j is even
    let pj = kb.add(p1, ar);
    let two = kb.i32c(2);
    let r = kb.bin(BinaryOp::Rem, ar, two);
    let zero = kb.i32c(0);
    let even = kb.cmp(CmpPred::Eq, r, zero);
    kb.atomic_add(oi, &[ar], pj, Some(even));
    let onef = kb.full(DType::F16, &[8], Scalar::Float(1.0));
    kb.atomic_add(oh, &[ar], onef, None);
    let k = kb.finish();
    let n = 6;
    let mut args = vec![tzeros(DType::F32, &[n]), tzeros(DType::I32, &[n]), tzeros(DType::F16, &[n])];
    interp::run(&k, &mut args).unwrap();
    // sum over p0 in 0..7 of p0, times 3 programs along axis 1
    assert_eq!(tens(&args[0]).to_f32_vec(), vec![63.0; n]);
    let want_i: Vec<i64> = (0..n as i64).map(|j| if j % 2 == 0 { 7 * (3 * j + 3) } else { 0 }).collect();
    assert_eq!(tens(&args[1]).to_i64_vec(), want_i);
    assert_eq!(tens(&args[2]).to_f32_vec(), vec![21.0; n]);
}

/// `if` picks a region; scalar params reach the body; num_programs is the grid extent.
#[test]
fn if_and_scalar_params() {
    let mut kb = KB::new("branchy");
    let o = kb.tensor("o", DType::F32, vec![c(4)], true);
    let flag = kb.scalar_param("flag", DType::Bool);
    let sc = kb.scalar_param("scale", DType::F32);
    let off = kb.scalar_param("off", DType::I32);
    kb.grid(|kb| vec![kb.i32c(1)]);
    let f = kb.param(flag, DType::Bool);
    let scv = kb.param(sc, DType::F32);
    let offv = kb.param(off, DType::I32);
    let offf = kb.cast(offv, DType::F32, Rounding::Rne);
    let np = kb.nprog(0);
    let npf = kb.cast(np, DType::F32, Rounding::Rne);
    let r = kb.if_(f, |kb| vec![kb.mul(scv, offf)], |kb| vec![kb.add(scv, npf)]);
    let ar = kb.arange(4);
    kb.store(o, &[ar], r[0], None);
    let k = kb.finish();
    let mut args = vec![tzeros(DType::F32, &[4]), Arg::Bool(true), Arg::F32(1.5), Arg::I32(3)];
    interp::run(&k, &mut args).unwrap();
    assert_eq!(tens(&args[0]).to_f32_vec(), vec![4.5; 4]);
    args[1] = Arg::Bool(false);
    interp::run(&k, &mut args).unwrap();
    assert_eq!(tens(&args[0]).to_f32_vec(), vec![2.5; 4]);
}

/// step <= 0 is an execution error naming the kernel and the op, not an endless loop.
#[test]
fn for_with_zero_step_is_an_error() {
    let mut kb = KB::new("spin");
    let o = kb.tensor("o", DType::I32, vec![c(1)], true);
    kb.grid(|kb| vec![kb.i32c(2)]);
    let lo = kb.i32c(0);
    let hi = kb.i32c(10);
    let st = kb.i32c(0);
    let init = kb.i32c(0);
    let r = kb.for_(lo, hi, st, &[init], |kb, iv, c| vec![kb.add(c[0], iv)]);
    let z = kb.i32c(0);
    kb.store(o, &[z], r[0], None);
    let mut k = kb.finish();
    // give the `for` a location
    for op in &mut k.body.ops {
        if op.kind == OpKind::For {
            op.loc = Some(Loc { line: 12, col: 5 });
        }
    }
    let mut args = vec![tzeros(DType::I32, &[1])];
    let err = interp::run(&k, &mut args).unwrap_err();
    match &err {
        LaunchError::Exec { kernel, msg } => {
            assert_eq!(kernel, "spin");
            assert!(msg.contains("op `for` at 12:5"), "{msg}");
            assert!(msg.ends_with("step must be positive, got 0"), "{msg}");
        }
        e => panic!("{e:?}"),
    }
    assert!(err.to_string().starts_with("kernel `spin`: program ("), "{err}");
}

/// Storing into an input tensor and a type-inconsistent kernel are errors, not panics.
#[test]
fn malformed_kernels_are_errors() {
    let mut kb = KB::new("bad");
    let x = kb.tensor("x", DType::F32, vec![c(4)], false);
    kb.grid(|kb| vec![kb.i32c(1)]);
    let ar = kb.arange(4);
    let v = kb.full(DType::F32, &[4], Scalar::Float(1.0));
    kb.store(x, &[ar], v, None);
    let k = kb.finish();
    let mut args = vec![tzeros(DType::F32, &[4])];
    let e = interp::run(&k, &mut args).unwrap_err().to_string();
    assert!(e.contains("`x` is an input"), "{e}");

    // a binary op whose operands have different shapes
    let mut kb = KB::new("bad2");
    let o = kb.tensor("o", DType::F32, vec![c(4)], true);
    kb.grid(|kb| vec![kb.i32c(1)]);
    let a = kb.full(DType::F32, &[4], Scalar::Float(1.0));
    let b = kb.full(DType::F32, &[3], Scalar::Float(1.0));
    let t = kb.ty(a);
    let sum = kb.op(OpKind::Binary(BinaryOp::Add), vec![a, b], t);
    let ar = kb.arange(4);
    kb.store(o, &[ar], sum, None);
    let k = kb.finish();
    let mut args = vec![tzeros(DType::F32, &[4])];
    let e = interp::run(&k, &mut args).unwrap_err().to_string();
    assert!(e.contains("op `add`"), "{e}");

    // use of an undefined value
    let mut kb = KB::new("bad3");
    let o = kb.tensor("o", DType::F32, vec![c(1)], true);
    kb.grid(|kb| vec![kb.i32c(1)]);
    let ghost = kb.k.new_value(opc_ir::TileType::scalar(DType::F32));
    let z = kb.i32c(0);
    kb.store(o, &[z], ghost, None);
    let k = kb.finish();
    let mut args = vec![tzeros(DType::F32, &[1])];
    let e = interp::run(&k, &mut args).unwrap_err().to_string();
    assert!(e.contains("used before it is defined"), "{e}");
}

/// Sequential and parallel execution agree, and a 3-D grid maps program ids axis 0 fastest.
#[test]
fn program_ids_cover_a_3d_grid() {
    let mut kb = KB::new("ids");
    let o = kb.tensor("o", DType::I32, vec![c(3), c(4), c(5)], true);
    kb.grid(|kb| vec![kb.i32c(5), kb.i32c(4), kb.i32c(3)]);
    let (p0, p1, p2) = (kb.pid(0), kb.pid(1), kb.pid(2));
    let h = kb.i32c(100);
    let t = kb.i32c(10);
    let a = kb.mul(p2, h);
    let b = kb.mul(p1, t);
    let ab = kb.add(a, b);
    let v = kb.add(ab, p0);
    kb.store(o, &[p2, p1, p0], v, None);
    let k = kb.finish();
    let mut args = vec![tzeros(DType::I32, &[3, 4, 5])];
    interp::run(&k, &mut args).unwrap();
    let want: Vec<i64> = (0..3).flat_map(|z| (0..4).flat_map(move |y| (0..5).map(move |x| z * 100 + y * 10 + x))).collect();
    assert_eq!(tens(&args[0]).to_i64_vec(), want);
}
