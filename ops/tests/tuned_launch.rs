//! The operator library launches tuned configurations: after `opc_tune::tune` records a run
//! for one shape, an `Ops` reading that database runs the best configuration for that shape
//! (its profile label shows the tunables), keeps the heuristic tiles for other shapes and
//! computes the same result.

use std::time::Duration;

use opc_dsl::Instance;
use opc_ir::{DType, Tensor};
use opc_ops::Ops;

fn host_matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for p in 0..k {
            for j in 0..n {
                c[i * n + j] += a[i * k + p] * b[p * n + j];
            }
        }
    }
    c
}

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 16) % 200) as f32 / 100.0 - 1.0).collect()
}

#[test]
fn a_tuned_shape_runs_its_best_configuration_and_other_shapes_keep_the_heuristic() {
    let target = opc_codegen::target_by_name("cpu").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = opc_tune::Db::at(dir.path().join("tune.jsonl"));
    let (m, k, n) = (40usize, 48usize, 24usize);
    // BM = 16 is pinned: the drivers' heuristic never picks it for 40 rows, so the label tells.
    let req = opc_tune::Request {
        path: "ops/kernels/blocks.opc",
        source: Ops::source("blocks").unwrap(),
        kernel: "matmul",
        instance: Instance::default().dtype("T", DType::F32).tunable("BM", 16),
        dims: vec![("M".into(), m as i64), ("K".into(), k as i64), ("N".into(), n as i64)],
        scalars: vec![("has_bias".into(), "false".into())],
        max_configs: 6,
        min_time: Duration::from_millis(1),
        seed: 3,
        inputs: vec![],
        extra: vec![],
        cold_bytes: 1 << 20,
    };
    let report = opc_tune::tune(&*target, &req, &mut |_, _, _| {}).unwrap();
    assert!(report.candidates.iter().all(|c| c.status == opc_tune::Status::Ok), "{:?}", report.candidates);
    assert!(report.candidates.iter().all(|c| c.config[0] == ("BM".to_string(), 16)));
    db.append(&report.records).unwrap();
    let best = opc_tune::db::best(&db.load().unwrap(), &report.key).unwrap().clone();
    let tunables: Vec<String> = best.tunables.iter().map(|(t, v)| format!("{t}={v}")).collect();
    let label = format!("blocks::matmul<T=f32,{}>", tunables.join(","));

    let ops = Ops::new(target.clone()).with_kernel_profile().with_tune_db(Some(db.clone()));
    let (av, bv) = (values(m * k, 1), values(k * n, 2));
    let a = Tensor::from_f32(DType::F32, &[m, k], &av);
    let b = Tensor::from_f32(DType::F32, &[k, n], &bv);
    let c = opc_ops::blocks::matmul(&ops, &a, &b, None).unwrap();
    let want = host_matmul(&av, &bv, m, k, n);
    for (x, y) in c.to_f32_vec().iter().zip(&want) {
        assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
    }
    // Another shape of the same kernel: the heuristic instance.
    let a2 = Tensor::from_f32(DType::F32, &[m + 1, k], &values((m + 1) * k, 3));
    opc_ops::blocks::matmul(&ops, &a2, &b, None).unwrap();
    let rows = ops.kernel_profile().unwrap().rows();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let tuned = rows.iter().find(|r| r.0 == label).unwrap_or_else(|| panic!("no launch of {label}: {rows:?}"));
    assert_eq!(tuned.1, 1);
    assert!(rows.iter().any(|r| r.0 != label && r.0.contains("BM=64")), "{rows:?}");

    // Without the database: the heuristic for both.
    let plain = Ops::new(target).with_kernel_profile().with_tune_db(None);
    opc_ops::blocks::matmul(&plain, &a, &b, None).unwrap();
    assert!(plain.kernel_profile().unwrap().rows().iter().all(|r| r.0 != label));
}

#[test]
fn the_launch_log_keeps_each_distinct_launch_with_its_dims_scalars_and_counts() {
    let ops = Ops::new(opc_codegen::target_by_name("cpu").unwrap()).with_launch_log().with_tune_db(None);
    let a = Tensor::from_f32(DType::F32, &[5, 7], &values(35, 1));
    let b = Tensor::from_f32(DType::F32, &[7, 3], &values(21, 2));
    let bias = Tensor::from_f32(DType::F32, &[3], &[1.0, 2.0, 3.0]);
    for _ in 0..3 {
        opc_ops::blocks::matmul(&ops, &a, &b, None).unwrap();
    }
    opc_ops::blocks::matmul(&ops, &a, &b, Some(&bias)).unwrap();
    let log = ops.launch_log().unwrap().launches();
    assert_eq!(log.len(), 2, "{log:?}");
    let plain = log.iter().find(|l| l.scalars == vec![("has_bias".to_string(), "false".to_string())]).unwrap();
    assert_eq!((plain.file.as_str(), plain.kernel.as_str(), plain.count), ("blocks", "matmul", 3));
    assert_eq!(plain.dims, vec![("M".to_string(), 5), ("K".to_string(), 7), ("N".to_string(), 3)]);
    assert!(plain.inst.tunables.iter().any(|(n, _)| n == "BK"));
    assert!(plain.int_inputs.is_empty());
    assert_eq!(log.iter().map(|l| l.count).sum::<u64>(), 4);
}
