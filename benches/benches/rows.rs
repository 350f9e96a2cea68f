//! Criterion benches of issue 3's rows on the `cpu` target (`cargo bench -p opc-benches`;
//! `cargo bench -p opc-benches -- gemm` for a subset). Heavy: the GEMV rows allocate ~600 MB and
//! the MoE row ~1.1 GB of weights. `opc bench` prints the same rows as a table against the
//! machine's limits and a baseline.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use opc_benches::rows::{prepare, rows, Work};

fn bench(c: &mut Criterion) {
    let target = std::env::var("OPC_BENCH_TARGET").unwrap_or_else(|_| "cpu".into());
    let ops = opc_ops::Ops::new(opc_codegen::target_by_name(&target).expect("target"));
    let mut g = c.benchmark_group(format!("issue3-{target}"));
    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(5));
    for row in rows() {
        // Skip rows the filter excludes before allocating their inputs.
        let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
        if !filter.is_empty() && !filter.iter().any(|f| row.name.contains(f.as_str())) {
            continue;
        }
        let mut p = match prepare(&row, &ops) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{}: {e}", row.name);
                continue;
            }
        };
        match row.work {
            Work::Flops(f) => g.throughput(Throughput::Elements(f as u64)),
            Work::Bytes(b) => g.throughput(Throughput::Bytes(b as u64)),
        };
        g.bench_function(row.name, |b| b.iter(|| p.run(&ops).expect("row runs")));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
