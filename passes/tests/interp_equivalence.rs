//! The pipeline preserves meaning: the reference interpreter gives bit-identical outputs
//! before and after it.
mod common;
use common::*;
use opc_ir::{Arg, DType, Tensor};
use opc_passes::{pass_names, registered_passes, run_passes, run_pipeline};

fn args(seed: u32) -> Vec<Arg> {
    let vals = |n: usize, k: u32| -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed * 97 + k) >> 7) % 1000) as f32 / 250.0 - 2.0).collect()
    };
    vec![
        Arg::Tensor(Tensor::from_f32(DType::F32, &[64], &vals(64, 1))),
        Arg::Tensor(Tensor::from_f32(DType::F32, &[16], &vals(16, 2))),
        Arg::Tensor(Tensor::zeros(DType::F32, &[32])),
        Arg::F32(0.3 + seed as f32 * 0.1),
    ]
}

fn run(k: &opc_ir::Kernel, seed: u32) -> Vec<Arg> {
    let mut a = args(seed);
    opc_ir::interp::run(k, &mut a).unwrap();
    a
}

#[test]
fn pipeline_preserves_outputs() {
    let before = demo_kernel();
    let mut after = before.clone();
    run_pipeline(&mut after, &Default::default()).unwrap();
    assert_ne!(before, after, "the pipeline did something");
    for seed in 0..3 {
        assert_eq!(run(&before, seed), run(&after, seed), "seed {seed}");
    }
}

#[test]
fn every_pass_alone_preserves_outputs() {
    let before = demo_kernel();
    let want = run(&before, 7);
    for name in registered_passes() {
        let mut k = before.clone();
        run_passes(&mut k, &[name], &Default::default()).unwrap();
        assert_eq!(run(&k, 7), want, "after {name}");
    }
    let _ = pass_names();
}

/// Nested loops, an `if` in a loop, invariants of both loops, a dead carried value, two programs.
fn nested_kernel() -> opc_ir::Kernel {
    use opc_ir::{CmpPred, OpKind, Scalar};
    let mut b = Builder::new("nested");
    let x_t = b.tensor("x", DType::I32, &["N"], false);
    let out = b.tensor("out", DType::I32, &["P"], true);
    let pid = b.program_id(0);
    let r = b.arange(8);
    let (lo, st) = (b.i32(0), b.i32(1));
    let (three, two) = (b.i32(3), b.i32(2));
    let acc0 = b.konst(Scalar::Int(0), t(DType::I32, &[8]));
    let res = b.for_loop(lo, three, st, &[acc0, lo], |b, i, c| {
        let inner = b.for_loop(lo, two, st, &[c[0]], |b, j, c2| {
            let p2 = b.mul(pid, pid); // invariant in both loops
            let pi = b.add(p2, i); // invariant in the inner loop
            let off = b.add(pi, j);
            let off1 = b.expand_dims(off, 0);
            let offb = b.broadcast(off1, &[8]);
            let idx = b.add(r, offb);
            let v = b.load(x_t, &[idx]); // out of range reads 0
            let z = b.i32(0);
            let cond = b.cmp(CmpPred::Gt, i, z); // invariant in the inner loop
            let ty = b.ty(v);
            let sel = b.if_else(cond, &[ty], |b| vec![b.add(v, v)], |_| vec![v]);
            let one = b.konst(Scalar::Int(1), t(DType::I32, &[8]));
            let s = b.mul(sel[0], one);
            vec![b.add(c2[0], s)]
        });
        let dead = b.add(c[1], i);
        vec![inner[0], dead]
    });
    let c8 = b.i32(8);
    let base = b.mul(pid, c8);
    let base1 = b.expand_dims(base, 0);
    let baseb = b.broadcast(base1, &[8]);
    let oidx = b.add(r, baseb);
    b.store(out, &[oidx], res[0]);
    let mut k = b.finish();
    k.grid.ops[0].kind = OpKind::Const(Scalar::Int(2));
    k
}

#[test]
fn nested_loops_and_ifs_keep_their_outputs() {
    let before = nested_kernel();
    let mut after = before.clone();
    run_pipeline(&mut after, &Default::default()).unwrap();
    check(&after);
    let xs: Vec<i32> = (0..12).map(|i| i * 7 - 20).collect();
    let run = |k: &opc_ir::Kernel| {
        let mut a = vec![Arg::Tensor(Tensor::from_i32(DType::I32, &[12], &xs)), Arg::Tensor(Tensor::zeros(DType::I32, &[16]))];
        opc_ir::interp::run(k, &mut a).unwrap();
        a
    };
    let want = run(&before);
    assert_eq!(run(&after), want);
    // The work really moved: `mul pid, pid` left both loops, the dead counter is gone.
    let outer = first_for(&after);
    assert_eq!(outer.results.len(), 1);
    assert!(after.body.ops.iter().position(|o| o.kind.mnemonic() == "mul").unwrap() < after.body.ops.iter().position(|o| o.kind == opc_ir::OpKind::For).unwrap());
    assert_eq!(count(&after, "mul"), 2, "pid*pid and pid*8; the `* 1` folded away");
    let Arg::Tensor(o) = &want[1] else { unreachable!() };
    assert_ne!(o.to_i64_vec(), vec![0; 16], "the test computes something");
}
