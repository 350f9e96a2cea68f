//! Shared harness of the JIT target tests (`cpu_*`, `llvm_*`, `jit_vs_interp`): compile DSL
//! source, run it on the interpreter and on a JIT target, and compare. The `cpu` (Cranelift)
//! target promises bit-identical results everywhere; the `llvm` target promises them for
//! elementwise ops, casts and memory, and a per-dtype tolerance where it changes rounding
//! (`dot` with FMA or `vdpbf16ps`, sums along the last dim).
#![allow(dead_code)]

use opc_dsl::Instance;
use opc_ir::{Arg, DType, Kernel, Tensor};

/// Compile kernel `name` of `src` and run the default pass pipeline.
pub fn kernel(src: &str, name: &str, inst: &Instance) -> Kernel {
    let mut k = opc_dsl::compile("test.opc", src, name, inst).unwrap_or_else(|d| panic!("{d}"));
    opc_passes::run_pipeline(&mut k, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
    k
}

#[path = "common/rng.rs"]
mod rng;
#[allow(unused_imports)]
pub use rng::Rng;

/// Machine epsilon of a float dtype.
pub fn eps(d: DType) -> f64 {
    match d {
        DType::F16 => 2f64.powi(-10),
        DType::BF16 => 2f64.powi(-7),
        _ => 2f64.powi(-23),
    }
}

/// How outputs are compared.
#[derive(Clone, Copy, Debug)]
pub enum Cmp {
    /// Bit for bit (any NaN matches any NaN).
    Exact,
    /// f32 outputs within `ulps · eps(f32) · max|reference|` of the tensor, f16 / bf16 outputs
    /// within 2 ulps of their dtype relative to the max (one rounding step may flip either way);
    /// infinities and NaNs must match; non-float outputs exact.
    Close { ulps: f64 },
    /// Float outputs within `tol` (absolute); infinities and NaNs must match. For reassociated
    /// sums whose terms cancel, where the result's own magnitude bounds nothing.
    Abs { tol: f64 },
}

fn describe(t: &Tensor, i: usize) -> String {
    format!("raw {:#x} = {}", t.get_raw(i), t.get_f64(i))
}

/// A JIT target under test and what it promises.
#[derive(Clone, Copy, Debug)]
pub struct Jit {
    pub name: &'static str,
    /// Every output bit-identical to the interpreter (then `Cmp::Close` is checked as exact).
    pub bit_exact: bool,
}

pub const CPU: Jit = Jit { name: "cpu", bit_exact: true };
pub const LLVM: Jit = Jit { name: "llvm", bit_exact: false };

/// The JIT targets built into this test binary.
pub fn jits() -> Vec<Jit> {
    let mut v = vec![CPU];
    if opc_codegen::target_by_name(LLVM.name).is_ok() {
        v.push(LLVM);
    }
    v
}

/// Run `k` on the interpreter and on `jit` with copies of `args`; compare outputs and errors
/// under `cmp` (exact when the target promises bit-identical results). Returns the outputs of
/// the JIT run.
pub fn check_on(jit: Jit, k: &Kernel, args: &[Arg], cmp: Cmp) -> Vec<Arg> {
    let cmp = if jit.bit_exact { Cmp::Exact } else { cmp };
    let interp = opc_codegen::target_by_name("interp").unwrap().compile(k).unwrap();
    let exe = opc_codegen::target_by_name(jit.name)
        .unwrap_or_else(|e| panic!("{e}"))
        .compile(k)
        .unwrap_or_else(|e| panic!("{} compile: {e}", jit.name));
    let mut a = args.to_vec();
    let mut b = args.to_vec();
    let ra = interp.launch(&mut a).map_err(|e| e.to_string());
    let rb = exe.launch(&mut b).map_err(|e| e.to_string());
    assert_eq!(ra, rb, "launch results differ for `{}`", k.name);
    for (p, (x, y)) in a.iter().zip(&b).enumerate() {
        let (Arg::Tensor(x), Arg::Tensor(y)) = (x, y) else { continue };
        if x.data == y.data {
            continue;
        }
        let n = x.numel();
        let nan = |t: &Tensor, i: usize| t.dtype.is_float() && t.get_f64(i).is_nan();
        let numeric = x.dtype.is_float() && matches!(cmp, Cmp::Close { .. } | Cmp::Abs { .. });
        let tol = match cmp {
            Cmp::Close { ulps } if x.dtype.is_float() => {
                let max = (0..n).map(|i| x.get_f64(i)).filter(|v| v.is_finite()).fold(0.0f64, |m, v| m.max(v.abs()));
                let u = if x.dtype == DType::F32 { ulps } else { 2.0 };
                u * eps(x.dtype) * max
            }
            Cmp::Abs { tol } if x.dtype.is_float() => tol,
            _ => 0.0,
        };
        let bad: Vec<usize> = (0..n)
            .filter(|&i| {
                if x.get_raw(i) == y.get_raw(i) || (nan(x, i) && nan(y, i)) {
                    return false;
                }
                // compared by value: +0 and -0 are equal (a reassociated max / min may keep
                // either zero of a tie, `llvm/reduce.rs`), even where the tolerance is 0
                if numeric && x.get_f64(i) == y.get_f64(i) {
                    return false;
                }
                if tol == 0.0 {
                    return true;
                }
                let (u, v) = (x.get_f64(i), y.get_f64(i));
                !(u.is_finite() && v.is_finite() && (u - v).abs() <= tol)
            })
            .collect();
        if bad.is_empty() {
            continue;
        }
        let show: Vec<String> = bad.iter().take(6).map(|&i| format!("[{i}] interp {} / {} {}", describe(x, i), jit.name, describe(y, i))).collect();
        panic!(
            "`{}` argument #{p} ({} {:?}): {} of {n} elements differ (tolerance {tol:e}):\n  {}",
            k.name,
            x.dtype,
            x.shape,
            bad.len(),
            show.join("\n  ")
        );
    }
    b
}

/// `check_on` the `llvm` target.
pub fn check(k: &Kernel, args: &[Arg], cmp: Cmp) -> Vec<Arg> {
    check_on(LLVM, k, args, cmp)
}

/// The `llvm` target, bit for bit.
pub fn exact(k: &Kernel, args: &[Arg]) {
    check(k, args, Cmp::Exact);
}

/// The `cpu` target, bit for bit.
pub fn same(k: &Kernel, args: &[Arg]) {
    check_on(CPU, k, args, Cmp::Exact);
}

/// Every built-in JIT target under `cmp` (exact on the bit-exact ones).
pub fn all_jits(k: &Kernel, args: &[Arg], cmp: Cmp) {
    for jit in jits() {
        check_on(jit, k, args, cmp);
    }
}

/// A fresh, empty-to-be `OPC_CACHE_DIR` for the disk cache tests (`*_cache.rs`), unique to this
/// process and `tag`.
pub fn fresh_cache_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("opc-cache-test-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The entries of `target`'s disk cache under `dir` (an `OPC_CACHE_DIR`), sorted.
pub fn cache_entries(dir: &std::path::Path, target: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<std::path::PathBuf> = std::fs::read_dir(dir.join(target)).map(|r| r.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
    v.sort();
    v
}

/// Damage two disk cache entries as a crash or a bad disk would: truncate `files[0]` to half and
/// flip one bit near the end of `files[1]` (in the payload).
pub fn damage_two_entries(files: &[std::path::PathBuf]) {
    let a = std::fs::read(&files[0]).unwrap();
    std::fs::write(&files[0], &a[..a.len() / 2]).unwrap();
    let mut b = std::fs::read(&files[1]).unwrap();
    let mid = b.len() - 100;
    b[mid] ^= 0x40;
    std::fs::write(&files[1], &b).unwrap();
}
