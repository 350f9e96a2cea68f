//! The `cpu` target's on-disk compile cache (code persisted across processes): a second process
//! loads what the first compiled, corrupt entries are recompiled and replaced, concurrent
//! processes sharing one directory all get working code, and `OPC_CACHE_DIR=off` writes nothing.
//!
//! Each scenario runs this test binary again as child processes (`child_compiles`, ignored when
//! run directly) with `OPC_CACHE_DIR` pointing to a fresh directory; a child compiles two library
//! kernels, checks them against the interpreter and prints its `cache_stats()`.

#[path = "jit_common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{kernel, same, Rng};
use opc_codegen::cpu::{cache_stats, clear_memory_cache, CacheStats};
use opc_dsl::Instance;
use opc_ir::{Arg, DType, Tensor};

const BLOCKS: &str = include_str!("../../ops/kernels/blocks.opc");

fn work() {
    let mut r = Rng(5);
    let mm = kernel(BLOCKS, "matmul", &Instance::default().dtype("T", DType::F32).tunable("BM", 16).tunable("BN", 32).tunable("BK", 8));
    same(
        &mm,
        &[
            Arg::Tensor(r.tensor_f(DType::F32, &[19, 23], false)),
            Arg::Tensor(r.tensor_f(DType::F32, &[23, 41], false)),
            Arg::Tensor(r.tensor_f(DType::F32, &[41], false)),
            Arg::Tensor(Tensor::zeros(DType::F32, &[19, 41])),
            Arg::Bool(true),
        ],
    );
    let sm = kernel(BLOCKS, "softmax", &Instance::default().dtype("T", DType::BF16).tunable("BR", 2).tunable("BV", 64));
    same(&sm, &[Arg::Tensor(r.tensor_f(DType::BF16, &[5, 150], true)), Arg::Tensor(Tensor::zeros(DType::BF16, &[5, 150]))]);
}

fn stats_line(s: &CacheStats) -> String {
    format!("STATS compiles={} disk_hits={} memory_hits={} disk_writes={} corrupt={}", s.compiles, s.disk_hits, s.memory_hits, s.disk_writes, s.corrupt)
}

#[test]
#[ignore = "child process of the tests below"]
fn child_compiles() {
    work();
    if std::env::var_os("OPC_CHILD_TWICE").is_some() {
        // Same process, memory cache dropped: the second round must come from disk.
        clear_memory_cache();
        work();
    }
    println!("{}", stats_line(&cache_stats()));
}

/// Run `child_compiles` with the cache in `dir`; returns its stats line and stderr.
fn child(dir: &str, extra: &[(&str, &str)]) -> std::process::Child {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "child_compiles", "--ignored", "--nocapture", "--test-threads", "1"])
        .env("OPC_CACHE_DIR", dir)
        .env("OPC_CPU_TIME", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in extra {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

fn finish(c: std::process::Child) -> (String, String) {
    let out = c.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    let stats = stdout
        .lines()
        .find_map(|l| l.find("STATS").map(|i| l[i..].to_string()))
        .unwrap_or_else(|| panic!("no stats in:\n{stdout}"));
    (stats, stderr)
}

fn run(dir: &str, extra: &[(&str, &str)]) -> (String, String) {
    finish(child(dir, extra))
}

fn fresh_dir(tag: &str) -> PathBuf {
    common::fresh_cache_dir(&format!("cpu-{tag}"))
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    common::cache_entries(dir, "cpu")
}

#[test]
fn a_second_process_loads_the_code_from_disk() {
    let d = fresh_dir("second");
    let ds = d.to_str().unwrap();
    let (s1, e1) = run(ds, &[]);
    assert_eq!(s1, "STATS compiles=2 disk_hits=0 memory_hits=0 disk_writes=2 corrupt=0", "{e1}");
    assert_eq!(e1.matches("(compiled)").count(), 2, "{e1}");
    assert_eq!(entries(&d).len(), 2);
    let (s2, e2) = run(ds, &[]);
    assert_eq!(s2, "STATS compiles=0 disk_hits=2 memory_hits=0 disk_writes=0 corrupt=0", "{e2}");
    assert_eq!(e2.matches("(disk cache hit)").count(), 2, "{e2}");
    // In one process: memory first, then disk after the memory cache is dropped.
    let (s3, _) = run(ds, &[("OPC_CHILD_TWICE", "1")]);
    assert_eq!(s3, "STATS compiles=0 disk_hits=4 memory_hits=0 disk_writes=0 corrupt=0");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn corrupt_entries_are_recompiled_and_replaced() {
    let d = fresh_dir("corrupt");
    let ds = d.to_str().unwrap();
    run(ds, &[]);
    let files = entries(&d);
    assert_eq!(files.len(), 2);
    common::damage_two_entries(&files);
    let (s, e) = run(ds, &[]);
    assert_eq!(s, "STATS compiles=2 disk_hits=0 memory_hits=0 disk_writes=2 corrupt=2", "{e}");
    assert!(e.contains("ignoring the bad entry"), "{e}");
    let (s, _) = run(ds, &[]);
    assert_eq!(s, "STATS compiles=0 disk_hits=2 memory_hits=0 disk_writes=0 corrupt=0");
    // A foreign file under an entry's name is a miss as well.
    std::fs::write(&files[0], b"not an opc cache entry").unwrap();
    let (s, _) = run(ds, &[]);
    assert_eq!(s, "STATS compiles=1 disk_hits=1 memory_hits=0 disk_writes=1 corrupt=1");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn concurrent_processes_share_one_directory() {
    let d = fresh_dir("concurrent");
    let ds = d.to_str().unwrap();
    let kids: Vec<_> = (0..4).map(|_| child(ds, &[])).collect();
    for k in kids {
        let (s, e) = finish(k); // each child checked its results against the interpreter
        assert!(s.contains("corrupt=0"), "{s}\n{e}");
    }
    let names: Vec<String> = entries(&d).iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 2, "entries and no leftover temporaries: {names:?}");
    assert!(names.iter().all(|n| n.ends_with(".bin") && !n.starts_with(".tmp")), "{names:?}");
    let (s, _) = run(ds, &[]);
    assert_eq!(s, "STATS compiles=0 disk_hits=2 memory_hits=0 disk_writes=0 corrupt=0");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn the_disk_cache_can_be_turned_off() {
    let d = fresh_dir("off");
    let (s, _) = run("off", &[("HOME", d.to_str().unwrap())]);
    assert_eq!(s, "STATS compiles=2 disk_hits=0 memory_hits=0 disk_writes=0 corrupt=0");
    assert!(!d.exists(), "nothing may be written under HOME with OPC_CACHE_DIR=off");
}
