//! `simplify-broadcasts`: structure after the pass.
mod common;
use common::*;
use opc_ir::{DType, Kernel, OpKind, ValueId};
use opc_passes::{Pass, SimplifyBroadcasts};

/// Load an f32 tile of `shape` (one `arange` index per dim), let `f` transform it and store the
/// result the same way.
fn with_tile(shape: &[usize], f: impl FnOnce(&mut Builder, ValueId) -> ValueId) -> (Kernel, ValueId) {
    const DIMS: [&str; 4] = ["A", "B", "C", "D"];
    let mut b = Builder::new("k");
    let x_t = b.tensor("x", DType::F32, &DIMS[..shape.len()], false);
    let idx: Vec<ValueId> = shape.iter().map(|&n| b.arange(n)).collect();
    let x = b.load(x_t, &idx);
    let y = f(&mut b, x);
    let yshape = b.ty(y).shape;
    let out = b.tensor("out", DType::F32, &DIMS[..yshape.len()], true);
    let idx: Vec<ValueId> = yshape.iter().map(|&n| b.arange(n)).collect();
    b.store(out, &idx, y);
    (b.finish(), x)
}

fn simplify(k: &mut Kernel) -> bool {
    let c = SimplifyBroadcasts::run(k);
    check(k);
    c
}

/// What `f` produced, after the pass.
fn produced(k: &Kernel) -> ValueId {
    let s = stores(k)[0];
    s.args[s.args.len() - 1]
}

#[test]
fn identities_disappear() {
    let (mut k, x) = with_tile(&[4, 8], |b, x| {
        let a = b.broadcast(x, &[4, 8]);
        let r = b.reshape(a, &[4, 8]);
        b.permute(r, &[0, 1])
    });
    assert!(simplify(&mut k));
    assert_eq!(produced(&k), x);
    assert_eq!(count(&k, "broadcast") + count(&k, "permute"), 0);
}

#[test]
fn a_square_transpose_is_not_an_identity() {
    let (mut k, _) = with_tile(&[8, 8], |b, x| b.permute(x, &[1, 0]));
    simplify(&mut k);
    assert_eq!(count(&k, "permute"), 1);
}

#[test]
fn broadcast_chains_fold() {
    let (mut k, x) = with_tile(&[1, 8], |b, x| {
        let a = b.broadcast(x, &[1, 8]); // identity
        let _unused = b.op(OpKind::Broadcast, &[a], t(DType::F32, &[1, 8]));
        let d = b.broadcast(x, &[4, 8]);
        b.broadcast(d, &[4, 8]) // identity of d
    });
    let _ = x;
    simplify(&mut k);
    let p = def(&k, produced(&k)).unwrap();
    assert_eq!(p.kind, OpKind::Broadcast);
    assert_eq!(p.args[0], x);

    let (mut k, x) = with_tile(&[1, 1], |b, x| {
        let a = b.broadcast(x, &[1, 8]);
        b.broadcast(a, &[4, 8])
    });
    simplify(&mut k);
    let p = def(&k, produced(&k)).unwrap();
    assert_eq!((p.kind.clone(), p.args[0]), (OpKind::Broadcast, x));
    assert_eq!(k.ty(p.results[0]).shape, vec![4, 8]);
}

#[test]
fn expand_dims_then_reshape_folds_to_the_root() {
    let (mut k, x) = with_tile(&[16], |b, x| {
        let e = b.expand_dims(x, 0); // [1, 16]
        let e2 = b.expand_dims(e, 2); // [1, 16, 1]
        b.reshape(e2, &[16])
    });
    assert!(simplify(&mut k));
    assert_eq!(produced(&k), x);

    let (mut k, x) = with_tile(&[16], |b, x| {
        let r = b.reshape(x, &[4, 4]);
        b.expand_dims(r, 1) // [4, 1, 4]
    });
    simplify(&mut k);
    let p = def(&k, produced(&k)).unwrap();
    assert_eq!((p.kind.clone(), p.args[0]), (OpKind::Reshape, x));
    assert_eq!(k.ty(p.results[0]).shape, vec![4, 1, 4]);
}

#[test]
fn permutes_compose() {
    let (mut k, x) = with_tile(&[2, 3, 4], |b, x| {
        let p = b.permute(x, &[1, 2, 0]); // [3, 4, 2]
        b.permute(p, &[2, 0, 1]) // back to [2, 3, 4]
    });
    assert!(simplify(&mut k));
    assert_eq!(produced(&k), x);

    let (mut k, x) = with_tile(&[2, 3, 4], |b, x| {
        let p = b.permute(x, &[1, 0, 2]); // [3, 2, 4]
        b.permute(p, &[0, 2, 1]) // [3, 4, 2]
    });
    simplify(&mut k);
    let p = def(&k, produced(&k)).unwrap();
    // result dim i is x dim p[q[i]]: [1, 2, 0]
    assert_eq!((p.kind.clone(), p.args[0]), (OpKind::Permute(vec![1, 2, 0]), x));
    assert_eq!(k.ty(p.results[0]).shape, vec![3, 4, 2]);
}

#[test]
fn permute_of_unit_dims_is_a_reshape() {
    let (mut k, x) = with_tile(&[1, 8], |b, x| b.permute(x, &[1, 0]));
    simplify(&mut k);
    let p = def(&k, produced(&k)).unwrap();
    assert_eq!((p.kind.clone(), p.args[0]), (OpKind::Reshape, x));
    assert_eq!(k.ty(p.results[0]).shape, vec![8, 1]);
}
