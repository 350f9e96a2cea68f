//! The in-process `ptx` target (cargo feature `cuda`, which `.ci/run` builds: cudarc loads the
//! driver at run time, so building needs no CUDA). Without a CUDA driver, compiling reports
//! "no CUDA driver" (and never panics; checked here whenever the driver library is absent, as
//! in CI). With a GPU, kernels written here and library kernels run and match the interpreter
//! (exactly, except the floating-point tensor-core `dot`, compared with a GEMM tolerance);
//! without one those comparisons print why they are skipped and pass.
#![cfg(feature = "cuda")]

use opc_codegen::Target;
use opc_dsl::Instance;
use opc_ir::{Arg, DType, Kernel, Tensor};

fn kernel(file: &str, src: &str, name: &str, inst: &Instance) -> Kernel {
    let mut k = opc_dsl::compile(file, src, name, inst).unwrap_or_else(|d| panic!("{d}"));
    opc_passes::run_pipeline(&mut k, &Default::default()).unwrap();
    k
}

fn lib(file: &str) -> &'static str {
    opc_ops::SOURCES.iter().find(|(f, _)| *f == file).unwrap().1
}

/// Deterministic pseudo-random values in [-2, 2).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

/// Whether the CUDA driver library can be loaded on this machine.
fn driver_present() -> bool {
    // SAFETY: only probes whether libcuda can be opened; nothing else touches the driver.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Run `k` on the GPU and in the interpreter; compare outputs within `tol` (relative to max |ref|).
fn compare(k: &Kernel, args: Vec<Arg>, tol: f32) {
    let exe = match opc_codegen::ptx::runtime::PtxTarget.compile(k) {
        Ok(e) => e,
        Err(e) => {
            let msg = e.to_string();
            let why = if driver_present() { "no usable CUDA device" } else { "no CUDA driver" };
            assert!(msg.contains(why), "{}: expected `{why}`, got: {msg}", k.name);
            eprintln!("skipped: {} was not run on a GPU ({msg})", k.name);
            return;
        }
    };
    let mut gpu = args.clone();
    let mut cpu = args;
    exe.launch(&mut gpu).unwrap_or_else(|e| panic!("{}: {e}", k.name));
    opc_ir::interp::run(k, &mut cpu).unwrap();
    for (i, (g, c)) in gpu.iter().zip(&cpu).enumerate() {
        if let (Arg::Tensor(g), Arg::Tensor(c)) = (g, c) {
            let (gv, cv) = (g.to_f32_vec(), c.to_f32_vec());
            let scale = cv.iter().fold(1e-6f32, |m, x| m.max(x.abs()));
            for (j, (a, b)) in gv.iter().zip(&cv).enumerate() {
                let ok = (a.is_nan() && b.is_nan()) || (a - b).abs() <= tol * scale;
                assert!(ok, "{}: param #{i} element {j}: gpu {a}, interpreter {b}", k.name);
            }
        }
    }
}

#[test]
fn without_a_driver_compiling_reports_it_and_with_one_softmax_matches() {
    let src = lib("blocks");
    let k = kernel("blocks.opc", src, "softmax", &Instance::default().dtype("T", DType::F32));
    let (r, c) = (5, 300);
    let x = Tensor::from_f32(DType::F32, &[r, c], &values(r * c, 1));
    let y = Tensor::zeros(DType::F32, &[r, c]);
    // exp is within a few ulp of the interpreter's
    compare(&k, vec![Arg::Tensor(x), Arg::Tensor(y)], 1e-5);
}

#[test]
fn bf16_matmul_on_tensor_cores_matches_within_gemm_tolerance() {
    let k = kernel("blocks.opc", lib("blocks"), "matmul", &Instance::default().dtype("T", DType::BF16));
    let (m, kk, n) = (70, 96, 130);
    let a = Tensor::from_f32(DType::BF16, &[m, kk], &values(m * kk, 2));
    let b = Tensor::from_f32(DType::BF16, &[kk, n], &values(kk * n, 3));
    let bias = Tensor::from_f32(DType::F32, &[n], &values(n, 4));
    let c = Tensor::zeros(DType::BF16, &[m, n]);
    compare(&k, vec![Arg::Tensor(a), Arg::Tensor(b), Arg::Tensor(bias), Arg::Tensor(c), Arg::Bool(true)], 2e-2);
}

#[test]
fn without_a_driver_the_ptx_target_says_so() {
    if driver_present() {
        eprintln!("skipped: a CUDA driver is present on this machine, so the no-driver error cannot be observed");
        return;
    }
    let k = kernel("blocks.opc", lib("blocks"), "softmax", &Instance::default().dtype("T", DType::F32));
    // through the target registry, as `opc verify --target ptx` reaches it
    let target = opc_codegen::target_by_name("ptx").expect("the cuda feature registers the ptx target");
    let e = target.compile(&k).err().expect("compiling for the GPU without a driver fails");
    let msg = e.to_string();
    assert!(msg.contains("no CUDA driver") && msg.contains("softmax"), "{msg}");
    // and again (the probe result is cached, never a panic on the second use)
    let again = opc_codegen::ptx::runtime::PtxTarget.compile(&k).err().expect("still no driver").to_string();
    assert_eq!(again, msg);
}

/// Deterministic pseudo-random codes in [lo, hi].
fn codes(n: usize, seed: u64, lo: i32, hi: i32) -> Vec<i32> {
    values(n, seed).iter().map(|v| (lo as f32 + (v + 2.0) / 4.0 * (hi - lo + 1) as f32).floor().min(hi as f32) as i32).collect()
}

#[test]
fn int4_gemm_on_integer_tensor_cores_matches_exactly() {
    // the pipelined mainloop (cp.async ring, mma.sync.m16n8k64.s4) with ragged M, N and K: K
    // not a multiple of BK or 64; K = 200 (rows on bytes, not on 16 bytes: every chunk takes
    // the element path), K = 201 (odd: every other row starts in a high nibble) and K = 256
    // (every interior chunk one 16-byte cp.async). The i32 accumulation is exact, and the
    // scales are applied in f32 as the interpreter does.
    for tun in [&[][..], &[("BM", 16), ("BN", 16), ("BK", 32)][..], &[("BM", 128), ("BN", 128), ("BK", 128)][..]] {
        let mut inst = Instance::default();
        for (t, v) in tun {
            inst = inst.tunable(t, *v);
        }
        let k = kernel("kron_quant.opc", lib("kron_quant"), "int4_gemm", &inst);
        for (m, kk, n) in [(70, 200, 130), (70, 201, 130), (150, 256, 140)] {
            let a = Tensor::from_i32(DType::I4, &[m, kk], &codes(m * kk, 5, -8, 7));
            let w = Tensor::from_i32(DType::I4, &[n, kk], &codes(n * kk, 6, -8, 7));
            let sa = Tensor::from_f32(DType::F32, &[m], &values(m, 7));
            let sw = Tensor::from_f32(DType::F32, &[n], &values(n, 8));
            let bias = Tensor::from_f32(DType::F32, &[n], &values(n, 9));
            let y = Tensor::zeros(DType::F32, &[m, n]);
            let args = vec![Arg::Tensor(a), Arg::Tensor(sa), Arg::Tensor(w), Arg::Tensor(sw), Arg::Tensor(bias), Arg::Tensor(y), Arg::Bool(true)];
            eprintln!("int4_gemm {tun:?} M={m} K={kk} N={n}");
            compare(&k, args, 0.0);
        }
    }
}

#[test]
fn int8_gemm_loops_on_integer_tensor_cores_match_exactly() {
    // m16n8k32 .s8 / .u8 through the pipelined mainloop; K = 100 is ragged against every BK
    // and its rows are 4-byte aligned only (element path), K = 96 has 16-byte rows
    let src = include_str!("common/int8_gemm.opc");
    for (dt, lo, hi) in [(DType::I8, -128, 127), (DType::U8, 0, 255)] {
        for (bm, bn, bk) in [(64, 64, 64), (32, 16, 48), (16, 16, 16)] {
            let inst = Instance::default().dtype("T", dt).tunable("BM", bm).tunable("BN", bn).tunable("BK", bk);
            let k = kernel("int8_gemm.opc", src, "int8_gemm", &inst);
            for (m, kk, n) in [(45, 100, 37), (64, 96, 80)] {
                let a = Tensor::from_i32(dt, &[m, kk], &codes(m * kk, 10, lo, hi));
                let w = Tensor::from_i32(dt, &[n, kk], &codes(n * kk, 11, lo, hi));
                let y = Tensor::zeros(DType::I32, &[m, n]);
                compare(&k, vec![Arg::Tensor(a), Arg::Tensor(w), Arg::Tensor(y)], 0.0);
            }
        }
    }
}
