//! Out-of-bounds safety of the `cpu` target's generated code, with guard pages.
//!
//! `GuardedCpu` is a [`Target`] that compiles with the `cpu` target and launches through
//! [`CpuExecutable::launch_raw`] with every tensor copied into its own mapping, placed so that
//! it ends exactly where a `PROT_NONE` page begins (and, in the second placement, starts exactly
//! where one ends). Any read or write one byte past either end of any tensor faults, which kills
//! this test process: the test fails. The operator drivers of `opc-ops` run on it with the
//! ragged shapes of the operator tests (attention 77×133, MXFP4 with K = 96, Kronecker transform
//! of 9 tokens, MoE routing / permute / grouped GEMM, KL judge with an odd vocabulary), and
//! every output must equal the interpreter's bit for bit (NaNs aside).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use opc_codegen::cpu::{CpuExecutable, CpuTarget};
use opc_codegen::{Executable, Target};
use opc_ir::{Arg, DType, Kernel, Tensor};
use opc_ops::attention::{flash_attention, flash_decode, AttentionParams};
use opc_ops::Ops;

/// Where a tensor sits in its mapping.
#[derive(Clone, Copy, Debug)]
enum Placement {
    /// The last byte is right before a guard page.
    EndAtGuard,
    /// The first byte is right after a guard page.
    StartAfterGuard,
}

/// `len` bytes between two `PROT_NONE` pages.
struct Guarded {
    base: *mut u8,
    total: usize,
    data: *mut u8,
    len: usize,
}

fn page() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

impl Guarded {
    fn new(bytes: &[u8], at: Placement) -> Guarded {
        let pg = page();
        let len = bytes.len();
        let inner = len.div_ceil(pg).max(1) * pg;
        let total = inner + 2 * pg;
        // SAFETY: a fresh anonymous private mapping; the result is checked.
        let base = unsafe {
            libc::mmap(std::ptr::null_mut(), total, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        assert_ne!(base, libc::MAP_FAILED, "mmap failed");
        let base = base as *mut u8;
        // SAFETY: both ranges are whole pages inside the mapping just created.
        unsafe {
            assert_eq!(libc::mprotect(base as *mut libc::c_void, pg, libc::PROT_NONE), 0);
            assert_eq!(libc::mprotect(base.add(pg + inner) as *mut libc::c_void, pg, libc::PROT_NONE), 0);
        }
        // SAFETY: both offsets stay inside the read-write pages.
        let data = unsafe {
            match at {
                Placement::EndAtGuard => base.add(pg + inner - len),
                Placement::StartAfterGuard => base.add(pg),
            }
        };
        // SAFETY: `data .. data + len` is inside the read-write pages.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), data, len) };
        Guarded { base, total, data, len }
    }

    fn bytes(&self) -> Vec<u8> {
        // SAFETY: `data .. data + len` is readable (see `new`).
        unsafe { std::slice::from_raw_parts(self.data, self.len).to_vec() }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping created in `new`.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.total) };
    }
}

/// The target, and a count of the launches that went through guarded memory (each test checks
/// that its drivers really used it).
struct GuardedCpu(Placement, Arc<AtomicUsize>);
struct GuardedExe(Arc<CpuExecutable>, Placement, Arc<AtomicUsize>);

impl Target for GuardedCpu {
    fn name(&self) -> &'static str {
        "cpu"
    }
    fn compile(&self, kernel: &Kernel) -> opc_codegen::Result<Arc<dyn Executable>> {
        Ok(Arc::new(GuardedExe(CpuTarget.compile_cpu(kernel)?, self.0, self.1.clone())))
    }
}

impl Executable for GuardedExe {
    fn launch(&self, args: &mut [Arg]) -> opc_codegen::Result<()> {
        let bufs: Vec<Option<Guarded>> = args
            .iter()
            .map(|a| match a {
                Arg::Tensor(t) => Some(Guarded::new(&t.data, self.1)),
                _ => None,
            })
            .collect();
        let ptrs: Vec<*mut u8> = bufs.iter().map(|b| b.as_ref().map_or(std::ptr::null_mut(), |g| g.data)).collect();
        // SAFETY: every tensor's pointer addresses a private copy of exactly its bytes.
        unsafe { self.0.launch_raw(args, &ptrs)? };
        self.2.fetch_add(1, Ordering::SeqCst);
        for (a, b) in args.iter_mut().zip(&bufs) {
            if let (Arg::Tensor(t), Some(g)) = (a, b) {
                t.data = g.bytes();
            }
        }
        Ok(())
    }
    fn kernel(&self) -> &Kernel {
        self.0.kernel()
    }
}

/// Deterministic test data.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f(&mut self) -> f32 {
        (self.next() % (1 << 24)) as f32 / (1 << 24) as f32 * 4.0 - 2.0
    }
    fn tensor(&mut self, d: DType, shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.f()).collect();
        Tensor::from_f32(d, shape, &v)
    }
}

fn same(what: &str, a: &Tensor, b: &Tensor) {
    assert_eq!((a.dtype, &a.shape), (b.dtype, &b.shape), "{what}: dtype/shape");
    let n = a.numel();
    let bad = (0..n)
        .filter(|&i| a.get_raw(i) != b.get_raw(i) && !(a.dtype.is_float() && a.get_f64(i).is_nan() && b.get_f64(i).is_nan()))
        .count();
    assert_eq!(bad, 0, "{what}: {bad} of {n} elements differ from the interpreter");
}

fn targets() -> (Ops, Vec<(Placement, Ops)>, Arc<AtomicUsize>) {
    let interp = Ops::new(opc_codegen::target_by_name("interp").unwrap());
    let n = Arc::new(AtomicUsize::new(0));
    let guarded =
        [Placement::EndAtGuard, Placement::StartAfterGuard].into_iter().map(|p| (p, Ops::new(Arc::new(GuardedCpu(p, n.clone()))))).collect();
    (interp, guarded, n)
}

#[test]
fn guard_pages_catch_an_out_of_bounds_access() {
    // The harness must be able to fail: touching one byte past a tensor kills a child process.
    if std::env::var_os("OPC_GUARD_CHILD").is_some() {
        let g = Guarded::new(&[1, 2, 3], Placement::EndAtGuard);
        // SAFETY: deliberately not: this read hits the guard page and must fault.
        let x = unsafe { std::ptr::read_volatile(g.data.add(3)) };
        println!("read {x} past the end without a fault");
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "guard_pages_catch_an_out_of_bounds_access", "--nocapture"])
        .env("OPC_GUARD_CHILD", "1")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the out-of-bounds read did not fault: {}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn attention_ragged_77x133_stays_in_bounds() {
    let (interp, guarded, launches) = targets();
    let mut r = Rng(7);
    for (d, causal, window, sinks) in [(DType::F32, true, None, false), (DType::BF16, false, Some(40), true), (DType::F16, true, Some(17), true)] {
        let q = r.tensor(d, &[1, 4, 77, 64]);
        let k = r.tensor(d, &[1, 2, 133, 64]);
        let v = r.tensor(d, &[1, 2, 133, 64]);
        let s = r.tensor(DType::F32, &[4]);
        let p = AttentionParams { causal, window, scale: 0.125 };
        let sinks = sinks.then_some(&s);
        let want = flash_attention(&interp, &q, &k, &v, sinks, &p).unwrap();
        for (pl, ops) in &guarded {
            let got = flash_attention(ops, &q, &k, &v, sinks, &p).unwrap();
            same(&format!("attention {d} {pl:?} out"), &want.out, &got.out);
            same(&format!("attention {d} {pl:?} lse"), &want.lse, &got.lse);
        }
        // Decode: one query row against the 133 keys, split-KV.
        let q1 = r.tensor(d, &[1, 4, 1, 64]);
        let want = flash_decode(&interp, &q1, &k, &v, sinks, &p, 3).unwrap();
        for (pl, ops) in &guarded {
            let got = flash_decode(ops, &q1, &k, &v, sinks, &p, 3).unwrap();
            same(&format!("decode {d} {pl:?} out"), &want.out, &got.out);
        }
    }
    assert!(launches.load(Ordering::SeqCst) > 0, "no launch went through guarded memory");
}

#[test]
fn mxfp4_k96_stays_in_bounds() {
    use opc_ops::mxfp4::{dequantize, gemm, quantize};
    let (interp, guarded, launches) = targets();
    let mut r = Rng(11);
    let w = r.tensor(DType::F32, &[33, 96]);
    let wq = quantize(&interp, &w).unwrap();
    for (pl, ops) in &guarded {
        let got = quantize(ops, &w).unwrap();
        same(&format!("quantize {pl:?} codes"), &wq.codes, &got.codes);
        same(&format!("quantize {pl:?} scales"), &wq.scales, &got.scales);
        same(&format!("dequantize {pl:?}"), &dequantize(&interp, &wq).unwrap(), &dequantize(ops, &wq).unwrap());
    }
    for (m, d) in [(1, DType::F32), (3, DType::F32), (5, DType::BF16)] {
        let x = r.tensor(d, &[m, 96]);
        let want = gemm(&interp, &x, &wq).unwrap();
        for (pl, ops) in &guarded {
            same(&format!("mxfp4 gemm m={m} {pl:?}"), &want, &gemm(ops, &x, &wq).unwrap());
        }
    }
    assert!(launches.load(Ordering::SeqCst) > 0, "no launch went through guarded memory");
}

#[test]
fn kron_quant_9_tokens_stays_in_bounds() {
    use opc_ops::kron_quant::{int4_gemm, kron_quant};
    let (interp, guarded, launches) = targets();
    let mut r = Rng(13);
    let (t, n1, n2) = (9, 4, 6);
    let x = r.tensor(DType::F32, &[t, n1 * n2]);
    let c = r.tensor(DType::F32, &[n1 * n2]);
    let p1 = r.tensor(DType::F32, &[n1, n1]);
    let p2 = r.tensor(DType::F32, &[n2, n2]);
    let want = kron_quant(&interp, &x, &c, &p1, &p2).unwrap();
    let w = r.tensor(DType::F32, &[7, n1 * n2]);
    let wq = kron_quant(&interp, &w, &c, &p1, &p2).unwrap();
    let bias = r.tensor(DType::F32, &[7]);
    let want_y = int4_gemm(&interp, &want.codes, &want.scales, &wq.codes, &wq.scales, Some(&bias)).unwrap();
    for (pl, ops) in &guarded {
        let got = kron_quant(ops, &x, &c, &p1, &p2).unwrap();
        same(&format!("kron {pl:?} transformed"), &want.transformed, &got.transformed);
        same(&format!("kron {pl:?} codes"), &want.codes, &got.codes);
        same(&format!("kron {pl:?} scales"), &want.scales, &got.scales);
        let y = int4_gemm(ops, &want.codes, &want.scales, &wq.codes, &wq.scales, Some(&bias)).unwrap();
        same(&format!("int4 gemm {pl:?}"), &want_y, &y);
    }
    assert!(launches.load(Ordering::SeqCst) > 0, "no launch went through guarded memory");
}

#[test]
fn moe_stays_in_bounds() {
    use opc_ops::moe::{moe_forward, Routing};
    let (interp, guarded, launches) = targets();
    let mut r = Rng(17);
    let (t, e, h, i) = (7, 6, 20, 12);
    let x = r.tensor(DType::F32, &[t, h]);
    let gate = r.tensor(DType::F32, &[e, h]);
    let w1 = r.tensor(DType::F32, &[e, i, h]);
    let w3 = r.tensor(DType::F32, &[e, i, h]);
    let w2 = r.tensor(DType::F32, &[e, h, i]);
    let rs = r.tensor(DType::F32, &[e]);
    for routing in [Routing::TopK { k: 2 }, Routing::MoGE { groups: 3, router_scale: rs }] {
        let want = moe_forward(&interp, &x, &gate, &w1, &w3, &w2, &routing).unwrap();
        for (pl, ops) in &guarded {
            let got = moe_forward(ops, &x, &gate, &w1, &w3, &w2, &routing).unwrap();
            same(&format!("moe {pl:?} out"), &want.out, &got.out);
            same(&format!("moe {pl:?} ids"), &want.expert_ids, &got.expert_ids);
            same(&format!("moe {pl:?} weights"), &want.weights, &got.weights);
        }
    }
    assert!(launches.load(Ordering::SeqCst) > 0, "no launch went through guarded memory");
}

#[test]
fn kl_judge_odd_vocabulary_stays_in_bounds() {
    use opc_ops::kl_judge::kl_judge;
    let (interp, guarded, launches) = targets();
    let mut r = Rng(19);
    let (g, v) = (3, 1001);
    let tl = r.tensor(DType::F32, &[g + 1, v]);
    let dl = r.tensor(DType::F32, &[g, v]);
    let toks = Tensor::from_i32(DType::I32, &[g], &[5, 1000, 0]);
    let want = kl_judge(&interp, &tl, &dl, &toks, 0.5).unwrap();
    for (pl, ops) in &guarded {
        let got = kl_judge(ops, &tl, &dl, &toks, 0.5).unwrap();
        same(&format!("kl {pl:?}"), &want.kl, &got.kl);
        same(&format!("accept {pl:?}"), &want.accept, &got.accept);
        assert_eq!((want.accepted, &want.emitted), (got.accepted, &got.emitted), "{pl:?}");
    }
    assert!(launches.load(Ordering::SeqCst) > 0, "no launch went through guarded memory");
}
