//! The `llvm` target's on-disk compile cache: a second process loads the ELF objects the first
//! one compiled (no LLVM run), corrupt entries are recompiled and replaced, and
//! `OPC_CACHE_DIR=off` writes nothing. Loaded and freshly compiled code both go through the same
//! object loader; each child checks its kernels against the interpreter.
//!
//! Each scenario runs this test binary again as a child process (`llvm_child_compiles`, ignored
//! when run directly) with `OPC_CACHE_DIR` pointing to a fresh directory.

#![cfg(feature = "llvm22-1")]

#[path = "jit_common.rs"]
mod common;

use std::process::Command;

use common::{check, kernel, Cmp, Rng};
use opc_dsl::Instance;
use opc_ir::{Arg, DType, Tensor};

const BLOCKS: &str = include_str!("../../ops/kernels/blocks.opc");

/// Two library kernels: a bf16 GEMM (packed panels, constant pools) and a softmax (exp).
fn work() {
    let mut r = Rng(9);
    let mm = kernel(BLOCKS, "matmul", &Instance::default().dtype("T", DType::F32).tunable("BM", 16).tunable("BN", 32).tunable("BK", 8));
    let args = [
        Arg::Tensor(r.tensor_f(DType::F32, &[19, 23], false)),
        Arg::Tensor(r.tensor_f(DType::F32, &[23, 41], false)),
        Arg::Tensor(r.tensor_f(DType::F32, &[41], false)),
        Arg::Tensor(Tensor::zeros(DType::F32, &[19, 41])),
        Arg::Bool(true),
    ];
    check(&mm, &args, Cmp::Close { ulps: 64.0 });
    let sm = kernel(BLOCKS, "softmax", &Instance::default().dtype("T", DType::F32).tunable("BR", 2).tunable("BV", 64));
    check(&sm, &[Arg::Tensor(r.tensor_f(DType::F32, &[5, 150], true)), Arg::Tensor(Tensor::zeros(DType::F32, &[5, 150]))], Cmp::Close { ulps: 64.0 });
}

#[test]
#[ignore = "child process of the tests below"]
fn llvm_child_compiles() {
    work();
    let s = opc_codegen::llvm::cache_stats();
    println!("STATS compiles={} disk_hits={} disk_writes={} corrupt={}", s.compiles, s.disk_hits, s.disk_writes, s.corrupt);
}

/// Run `llvm_child_compiles` with `OPC_CACHE_DIR=dir`; its stats line.
fn run(dir: &str, extra: &[(&str, &str)]) -> String {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "llvm_child_compiles", "--ignored", "--nocapture", "--test-threads", "1"]).env("OPC_CACHE_DIR", dir);
    for (k, v) in extra {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "child failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout.lines().find_map(|l| l.find("STATS").map(|i| l[i..].to_string())).unwrap_or_else(|| panic!("no stats in:\n{stdout}"))
}

#[test]
fn a_second_process_loads_the_objects_from_disk() {
    let d = common::fresh_cache_dir("llvm-second");
    let ds = d.to_str().unwrap();
    assert_eq!(run(ds, &[]), "STATS compiles=2 disk_hits=0 disk_writes=2 corrupt=0");
    assert_eq!(common::cache_entries(&d, "llvm").len(), 2);
    assert_eq!(run(ds, &[]), "STATS compiles=0 disk_hits=2 disk_writes=0 corrupt=0");
    // The optimization pipeline is part of the key: another one compiles afresh.
    assert_eq!(run(ds, &[("OPC_LLVM_PASSES", "default<O2>")]), "STATS compiles=2 disk_hits=0 disk_writes=2 corrupt=0");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn corrupt_llvm_entries_are_recompiled_and_replaced() {
    let d = common::fresh_cache_dir("llvm-corrupt");
    let ds = d.to_str().unwrap();
    run(ds, &[]);
    let files = common::cache_entries(&d, "llvm");
    assert_eq!(files.len(), 2);
    common::damage_two_entries(&files);
    assert_eq!(run(ds, &[]), "STATS compiles=2 disk_hits=0 disk_writes=2 corrupt=2");
    assert_eq!(run(ds, &[]), "STATS compiles=0 disk_hits=2 disk_writes=0 corrupt=0");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn the_llvm_disk_cache_can_be_turned_off() {
    let d = common::fresh_cache_dir("llvm-off");
    assert_eq!(run("off", &[("HOME", d.to_str().unwrap())]), "STATS compiles=2 disk_hits=0 disk_writes=0 corrupt=0");
    assert!(!d.exists(), "nothing may be written under HOME with OPC_CACHE_DIR=off");
}

/// `OPC_PERF_MAP=1`: each loaded kernel gets a `perf` map line (`ADDR SIZE opc:NAME#N`, hex,
/// nonzero size) in `/tmp/perf-PID.map`, and its object is kept next to it for `objdump`.
#[test]
fn perf_map_names_every_loaded_kernel() {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "llvm_child_compiles", "--ignored", "--nocapture", "--test-threads", "1"]).env("OPC_CACHE_DIR", "off").env("OPC_PERF_MAP", "1");
    let child = c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "child failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let map_path = format!("/tmp/perf-{pid}.map");
    let dir = format!("/tmp/opc-perf-{pid}");
    let map = std::fs::read_to_string(&map_path).unwrap_or_else(|e| panic!("{map_path}: {e}"));
    let mut names = vec![];
    for line in map.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 3, "map line `{line}`");
        assert!(u64::from_str_radix(f[0], 16).unwrap() > 0, "address in `{line}`");
        assert!(u64::from_str_radix(f[1], 16).unwrap() > 0, "size in `{line}`");
        let name = f[2].strip_prefix("opc:").unwrap_or_else(|| panic!("name in `{line}`"));
        // a side function's line names its kernel's object: `NAME#N:FN`
        let name = name.split(':').next().unwrap();
        let obj = std::fs::read(format!("{dir}/{name}.o")).unwrap_or_else(|e| panic!("object of `{name}`: {e}"));
        assert_eq!(&obj[..4], b"\x7fELF", "object of `{name}`");
        names.push(name.split('#').next().unwrap().to_string());
    }
    let _ = (std::fs::remove_file(&map_path), std::fs::remove_dir_all(&dir));
    assert!(names.contains(&"matmul".to_string()) && names.contains(&"softmax".to_string()), "{map}");
}
