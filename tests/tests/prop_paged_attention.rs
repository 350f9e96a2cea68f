//! The paged KV cache kernels: `kv_write` fills a pool through shuffled block tables, then
//! `paged_decode` attends one query per sequence through the same tables. Random ragged batches
//! (sequence lengths, block sizes, GQA ratios, head dims, window and sinks on and off) against
//! the naive f64 reference of `ref_a` (each sequence a causal Sq = 1 problem over its keys), on
//! the interpreter and, when built in, on the llvm target; plus the drivers' errors.
//!
//! Tolerance (fixtures README, f32 attention): max|O − O_ref| ≤ 1e-4 · max|O_ref|.

use opc_ir::{DType, Tensor};
use opc_ops::model::{kv_write, KvPool};
use opc_ops::paged_attention::{paged_decode, PagedDecodeParams};
use opc_ops::Ops;
use opc_tests::ref_a::{self, AttnProblem, Rng};
use proptest::prelude::*;
use std::sync::OnceLock;

/// The interpreter (the oracle) and, when the feature is on, the llvm target.
fn targets() -> &'static [(&'static str, Ops)] {
    static T: OnceLock<Vec<(&'static str, Ops)>> = OnceLock::new();
    T.get_or_init(|| ["interp", "llvm"].into_iter().filter_map(|n| opc_codegen::target_by_name(n).ok().map(|t| (n, Ops::new(t)))).collect())
}

#[derive(Clone, Debug)]
struct Case {
    lens: Vec<usize>,
    hkv: usize,
    g: usize,
    d: usize,
    bs: usize,
    window: Option<usize>,
    sinks: bool,
    seed: u64,
}

/// Pool, tables, lens and the contiguous per-sequence K / V (f64 [len, Hkv, D] each) behind them.
struct Filled {
    pool: KvPool,
    tables: Tensor,
    lens: Tensor,
    q: Tensor,
    sinks: Option<Tensor>,
    kv: Vec<(Vec<f64>, Vec<f64>)>,
}

fn fill(ops: &Ops, c: &Case) -> Filled {
    let mut rng = Rng::new(c.seed);
    let (s, hq, hkv, d, bs) = (c.lens.len(), c.hkv * c.g, c.hkv, c.d, c.bs);
    let mb = c.lens.iter().map(|l| l.div_ceil(bs)).max().unwrap();
    let blocks: usize = c.lens.iter().map(|l| l.div_ceil(bs)).sum::<usize>() + 2; // two never used
    // blocks handed out in a shuffled order, so tables are not the identity
    let mut free: Vec<i32> = (0..blocks as i32).collect();
    for i in (1..free.len()).rev() {
        free.swap(i, rng.int(0, i as i64) as usize);
    }
    let mut table = vec![0i32; s * mb];
    for (si, &l) in c.lens.iter().enumerate() {
        for b in 0..l.div_ceil(bs) {
            table[si * mb + b] = free.pop().unwrap();
        }
    }
    let tables = Tensor::from_i32(DType::I32, &[s, mb], &table);
    let mut pool = KvPool::new(blocks, bs, hkv, d);
    // every token of every sequence written by one kv_write, in an interleaved order
    let t: usize = c.lens.iter().sum();
    let (mut seq, mut pos) = (vec![], vec![]);
    for p in 0..*c.lens.iter().max().unwrap() {
        for (si, &l) in c.lens.iter().enumerate() {
            if p < l {
                seq.push(si as i32);
                pos.push(p as i32);
            }
        }
    }
    let k = rng.normals(t * hkv * d, 1.0);
    let v = rng.normals(t * hkv * d, 1.0);
    let kt = Tensor::from_f32(DType::F32, &[t, hkv, d], &k);
    let vt = Tensor::from_f32(DType::F32, &[t, hkv, d], &v);
    let (seq_t, pos_t) = (Tensor::from_i32(DType::I32, &[t], &seq), Tensor::from_i32(DType::I32, &[t], &pos));
    kv_write(ops, &mut pool, &kt, &vt, &tables, &seq_t, &pos_t).unwrap();
    let mut kv: Vec<(Vec<f64>, Vec<f64>)> = c.lens.iter().map(|&l| (vec![0.0; l * hkv * d], vec![0.0; l * hkv * d])).collect();
    for (i, (&si, &p)) in seq.iter().zip(&pos).enumerate() {
        let row = hkv * d;
        let (ks, vs) = &mut kv[si as usize];
        for e in 0..row {
            ks[p as usize * row + e] = k[i * row + e] as f64;
            vs[p as usize * row + e] = v[i * row + e] as f64;
        }
    }
    let q = Tensor::from_f32(DType::F32, &[s, hq, d], &rng.normals(s * hq * d, 1.0));
    let sinks = c.sinks.then(|| Tensor::from_f32(DType::F32, &[hq], &rng.normals(hq, 1.5)));
    let lens = Tensor::from_i32(DType::I32, &[s], &c.lens.iter().map(|&l| l as i32).collect::<Vec<_>>());
    Filled { pool, tables, lens, q, sinks, kv }
}

/// The reference output f64 [S, Hq, D]: per sequence, ref_a's attention with Sq = 1 over its
/// keys (moved to the reference's head-major layout).
fn reference(c: &Case, f: &Filled) -> Vec<f64> {
    let (hq, hkv, d) = (c.hkv * c.g, c.hkv, c.d);
    let q: Vec<f64> = f.q.to_f32_vec().into_iter().map(f64::from).collect();
    let sinks: Option<Vec<f64>> = f.sinks.as_ref().map(|s| s.to_f32_vec().into_iter().map(f64::from).collect());
    let mut out = vec![];
    for (si, &l) in c.lens.iter().enumerate() {
        let head_major = |x: &[f64]| {
            let mut y = vec![0.0; l * hkv * d];
            for j in 0..l {
                for h in 0..hkv {
                    y[(h * l + j) * d..][..d].copy_from_slice(&x[(j * hkv + h) * d..][..d]);
                }
            }
            y
        };
        let p = AttnProblem { b: 1, hq, hkv, sq: 1, sk: l, d, causal: true, window: c.window, scale: 1.0 / (d as f64).sqrt() };
        let (o, _) = ref_a::attention(&p, &q[si * hq * d..][..hq * d], &head_major(&f.kv[si].0), &head_major(&f.kv[si].1), sinks.as_deref());
        out.extend(o);
    }
    out
}

fn run(c: &Case) -> Result<(), String> {
    for (name, ops) in targets() {
        let f = fill(ops, c);
        let want = reference(c, &f);
        let p = PagedDecodeParams { scale: 1.0 / (c.d as f32).sqrt(), window: c.window };
        let got = paged_decode(ops, &f.q, &f.pool, &f.tables, &f.lens, f.sinks.as_ref(), &p).map_err(|e| e.to_string())?;
        if got.shape != [c.lens.len(), c.hkv * c.g, c.d] {
            return Err(format!("{name}: out shape {:?}", got.shape));
        }
        let got: Vec<f64> = got.to_f32_vec().into_iter().map(f64::from).collect();
        let err = ref_a::max_abs_diff(&got, &want);
        let tol = 1e-4 * ref_a::max_abs(&want).max(1e-30);
        if err > tol {
            return Err(format!("{name}: max |O - O_ref| = {err:e} > {tol:e} for {c:?}"));
        }
    }
    Ok(())
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(1usize..70, 1..6),
        1usize..4,
        prop::sample::select(vec![1usize, 2, 3, 4, 8]),
        prop::sample::select(vec![8usize, 16, 32, 64]),
        prop::sample::select(vec![1usize, 4, 16]),
        prop::option::of(1usize..40),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(|(lens, hkv, g, d, bs, window, sinks, seed)| Case { lens, hkv, g, d, bs, window, sinks, seed })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(ref_a::proptest_cases(24)))]
    #[test]
    fn paged_decode_matches_the_reference(c in case()) {
        run(&c).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn long_sequence_with_window_and_sinks() {
    let c = Case { lens: vec![300, 1, 17], hkv: 2, g: 4, d: 64, bs: 16, window: Some(128), sinks: true, seed: 7 };
    run(&c).unwrap();
}

#[test]
fn bad_tables_and_lengths_are_errors() {
    let ops = &targets()[0].1;
    let pool = KvPool::new(2, 4, 1, 8);
    let q = Tensor::zeros(DType::F32, &[1, 2, 8]);
    let p = PagedDecodeParams { scale: 1.0, window: None };
    let t = |v: &[i32]| Tensor::from_i32(DType::I32, &[1, v.len()], v);
    let l = |n: i32| Tensor::from_i32(DType::I32, &[1], &[n]);
    let e = |tables: &Tensor, lens: &Tensor| paged_decode(ops, &q, &pool, tables, lens, None, &p).unwrap_err().to_string();
    assert_eq!(e(&t(&[0, 5]), &l(6)), "paged_decode: sequence 0: block 5 is outside the pool of 2 blocks");
    assert_eq!(e(&t(&[0]), &l(5)), "paged_decode: sequence 0 has 5 positions but its table row holds 1 blocks of 4");
    assert_eq!(e(&t(&[0]), &l(0)), "paged_decode: sequence 0 has length 0: a decode query needs at least its own position");
    let q3 = Tensor::zeros(DType::F32, &[1, 3, 8]);
    let pool2 = KvPool::new(2, 4, 2, 8);
    assert_eq!(
        paged_decode(ops, &q3, &pool2, &t(&[0]), &l(1), None, &p).unwrap_err().to_string(),
        "paged_decode: 3 query heads are not a multiple of the pool's 2 KV heads"
    );
    let mut pool = KvPool::new(2, 4, 1, 8);
    let k = Tensor::zeros(DType::F32, &[1, 1, 8]);
    let one = Tensor::from_i32(DType::I32, &[1], &[0]);
    let at = |p: i32| Tensor::from_i32(DType::I32, &[1], &[p]);
    assert_eq!(
        kv_write(ops, &mut pool, &k, &k, &t(&[1]), &one, &at(4)).unwrap_err().to_string(),
        "kv_write: token 0: sequence 0 position 4 is outside the block tables [1, 1] of 4 slots"
    );
    assert_eq!(kv_write(ops, &mut pool, &k, &k, &t(&[3]), &one, &at(1)).unwrap_err().to_string(), "kv_write: token 0: block 3 is outside the pool of 2 blocks");
}

/// Slots of an owned block past a sequence's length (or before its window) are never read into
/// the result: filled with NaN, the output still matches the reference.
#[test]
fn slots_outside_the_visible_range_are_masked() {
    for (name, ops) in targets() {
        let c = Case { lens: vec![21, 5], hkv: 2, g: 4, d: 16, bs: 16, window: Some(7), sinks: false, seed: 3 };
        let mut f = fill(ops, &c);
        let want = reference(&c, &f);
        // every slot before the window or at or past its sequence's length, in the owned blocks
        let (mb, bs, hkv, d) = (f.tables.shape[1], c.bs, c.hkv, c.d);
        let tb = f.tables.to_i64_vec();
        let (mut kd, mut vd) = (f.pool.k.to_f32_vec(), f.pool.v.to_f32_vec());
        for (si, &l) in c.lens.iter().enumerate() {
            for p in (0..l.saturating_sub(7)).chain(l..l.div_ceil(bs) * bs) {
                let blk = tb[si * mb + p / bs] as usize;
                for h in 0..hkv {
                    for e in 0..d {
                        kd[((blk * hkv + h) * d + e) * bs + p % bs] = f32::NAN;
                        vd[((blk * hkv + h) * bs + p % bs) * d + e] = f32::NAN;
                    }
                }
            }
        }
        f.pool.k = Tensor::from_f32(DType::F32, &f.pool.k.shape.clone(), &kd);
        f.pool.v = Tensor::from_f32(DType::F32, &f.pool.v.shape.clone(), &vd);
        let p = PagedDecodeParams { scale: 0.25, window: c.window };
        let got = paged_decode(ops, &f.q, &f.pool, &f.tables, &f.lens, None, &p).unwrap();
        let got: Vec<f64> = got.to_f32_vec().into_iter().map(f64::from).collect();
        let err = ref_a::max_abs_diff(&got, &want);
        assert!(err <= 1e-4 * ref_a::max_abs(&want), "{name}: max |O - O_ref| = {err:e}");
    }
}
