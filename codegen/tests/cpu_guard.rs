//! Out-of-bounds safety of the JIT targets' generated code (`cpu`, and `llvm` with feature
//! `llvm22-1`), with guard pages.
//!
//! `GuardedJit` is a [`Target`] that compiles with one of them and launches through its
//! `launch_raw` with every tensor copied into its own mapping, placed so that it ends exactly
//! where a `PROT_NONE` page begins (and, in the second placement, starts exactly where one ends).
//! Any read or write one byte past either end of any tensor faults, which kills this test
//! process: the test fails. The operator drivers of `opc-ops` run on it with the ragged shapes
//! of the operator tests (attention 77×133, MXFP4 with K = 96 and K = 4160, Kronecker transform
//! of 9 tokens, MoE routing / permute / grouped GEMM, gpt-oss MXFP4 experts, KL judge with an
//! odd vocabulary). Every `cpu` output must equal the interpreter's bit for bit (NaNs aside);
//! every `llvm` output the same kernel's unguarded run (its sums are reassociated: its
//! agreement with the interpreter is the `llvm_*` tests' job). The `llvm` unmasked loop
//! versions (plain vector loads up to a row's last element, MXFP4 blocks read 16 bytes at a
//! time) are what the K = 4160 and expert cases reach at a tensor's very end.

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

/// The JIT target a guarded run compiles with.
#[derive(Clone, Copy, Debug)]
enum Jit {
    Cranelift,
    #[cfg(feature = "llvm22-1")]
    Llvm,
}

/// A kernel compiled by one of the [`Jit`] targets.
enum Compiled {
    Cranelift(Arc<CpuExecutable>),
    #[cfg(feature = "llvm22-1")]
    Llvm(Arc<opc_codegen::llvm::LlvmExecutable>),
}

impl Compiled {
    /// # Safety
    /// As `launch_raw` of the targets.
    unsafe fn launch_raw(&self, args: &[Arg], data: &[*mut u8]) -> opc_codegen::Result<()> {
        // SAFETY: forwarded.
        unsafe {
            match self {
                Compiled::Cranelift(e) => e.launch_raw(args, data),
                #[cfg(feature = "llvm22-1")]
                Compiled::Llvm(e) => e.launch_raw(args, data),
            }
        }
    }
    fn kernel(&self) -> &Kernel {
        match self {
            Compiled::Cranelift(e) => e.kernel(),
            #[cfg(feature = "llvm22-1")]
            Compiled::Llvm(e) => e.kernel(),
        }
    }
}

/// The target, and a count of the launches that went through guarded memory (each test checks
/// that its drivers really used it).
struct GuardedJit(Jit, Placement, Arc<AtomicUsize>);
struct GuardedExe(Compiled, Placement, Arc<AtomicUsize>);

impl Target for GuardedJit {
    fn name(&self) -> &'static str {
        match self.0 {
            Jit::Cranelift => "cpu",
            #[cfg(feature = "llvm22-1")]
            Jit::Llvm => "llvm",
        }
    }
    fn compile(&self, kernel: &Kernel) -> opc_codegen::Result<Arc<dyn Executable>> {
        let c = match self.0 {
            Jit::Cranelift => Compiled::Cranelift(CpuTarget.compile_cpu(kernel)?),
            #[cfg(feature = "llvm22-1")]
            Jit::Llvm => Compiled::Llvm(opc_codegen::llvm::LlvmTarget.compile_llvm(kernel)?),
        };
        Ok(Arc::new(GuardedExe(c, self.1, self.2.clone())))
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

/// One guarded configuration: its label, the ops whose results it must reproduce bit for bit
/// (the interpreter for `cpu`, unguarded `llvm` for `llvm`), and the guarded ops.
struct Case {
    label: String,
    reference: Ops,
    guarded: Ops,
}

fn targets() -> (Vec<Case>, Arc<AtomicUsize>) {
    let n = Arc::new(AtomicUsize::new(0));
    let jits = [
        (Jit::Cranelift, "interp"),
        #[cfg(feature = "llvm22-1")]
        (Jit::Llvm, "llvm"),
    ];
    let mut cases = vec![];
    for (jit, reference) in jits {
        for p in [Placement::EndAtGuard, Placement::StartAfterGuard] {
            cases.push(Case {
                label: format!("{jit:?} {p:?}"),
                reference: Ops::new(opc_codegen::target_by_name(reference).unwrap()),
                guarded: Ops::new(Arc::new(GuardedJit(jit, p, n.clone()))),
            });
        }
    }
    (cases, n)
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
    let (cases, launches) = targets();
    let mut r = Rng(7);
    for (d, causal, window, sinks) in [(DType::F32, true, None, false), (DType::BF16, false, Some(40), true), (DType::F16, true, Some(17), true)] {
        let q = r.tensor(d, &[1, 4, 77, 64]);
        let k = r.tensor(d, &[1, 2, 133, 64]);
        let v = r.tensor(d, &[1, 2, 133, 64]);
        let s = r.tensor(DType::F32, &[4]);
        let p = AttentionParams { causal, window, scale: 0.125 };
        let sinks = sinks.then_some(&s);
        // Decode: one query row against the 133 keys, split-KV.
        let q1 = r.tensor(d, &[1, 4, 1, 64]);
        for c in &cases {
            let want = flash_attention(&c.reference, &q, &k, &v, sinks, &p).unwrap();
            let got = flash_attention(&c.guarded, &q, &k, &v, sinks, &p).unwrap();
            same(&format!("attention {d} {} out", c.label), &want.out, &got.out);
            same(&format!("attention {d} {} lse", c.label), &want.lse, &got.lse);
            let want = flash_decode(&c.reference, &q1, &k, &v, sinks, &p, 3).unwrap();
            let got = flash_decode(&c.guarded, &q1, &k, &v, sinks, &p, 3).unwrap();
            same(&format!("decode {d} {} out", c.label), &want.out, &got.out);
        }
    }
    assert!(launches.load(Ordering::SeqCst) > 0, "no launch went through guarded memory");
}

#[test]
fn mxfp4_k96_stays_in_bounds() {
    use opc_ops::mxfp4::{dequantize, gemm, quantize};
    let (cases, launches) = targets();
    let mut r = Rng(11);
    // K = 96: blocks narrower than a row's vector chunks; K = 4160 (N = 37): the unmasked
    // MXFP4 GEMV block loops run up to the codes' last byte.
    for (n, k) in [(33, 96), (37, 4160)] {
        let w = r.tensor(DType::F32, &[n, k]);
        let xs: Vec<Tensor> = [(1, DType::F32), (3, DType::F32), (1, DType::BF16), (5, DType::BF16)].iter().map(|&(m, d)| r.tensor(d, &[m, k])).collect();
        for c in &cases {
            let wq = quantize(&c.reference, &w).unwrap();
            let got = quantize(&c.guarded, &w).unwrap();
            same(&format!("quantize k={k} {} codes", c.label), &wq.codes, &got.codes);
            same(&format!("quantize k={k} {} scales", c.label), &wq.scales, &got.scales);
            same(&format!("dequantize k={k} {}", c.label), &dequantize(&c.reference, &wq).unwrap(), &dequantize(&c.guarded, &wq).unwrap());
            for x in &xs {
                let want = gemm(&c.reference, x, &wq).unwrap();
                same(&format!("mxfp4 gemm k={k} m={} {} {}", x.shape[0], x.dtype, c.label), &want, &gemm(&c.guarded, x, &wq).unwrap());
            }
        }
    }
    assert!(launches.load(Ordering::SeqCst) > 0, "no launch went through guarded memory");
}

#[test]
fn gptoss_mxfp4_experts_stay_in_bounds() {
    use opc_ops::model::{moe_mxfp4, MxExperts};
    let (cases, launches) = targets();
    let mut r = Rng(23);
    let (e, k, h, i) = (4, 2, 96, 64);
    let mut experts = |rows: usize, cols: usize| {
        let w = r.tensor(DType::F32, &[e * rows, cols]);
        let q = opc_ops::mxfp4::quantize(&Ops::new(opc_codegen::target_by_name("interp").unwrap()), &w).unwrap();
        let codes = Tensor { shape: vec![e, rows, cols], ..q.codes };
        let scales = Tensor { shape: vec![e, rows, cols / 32], ..q.scales };
        MxExperts { codes, scales, bias: r.tensor(DType::F32, &[e, rows]) }
    };
    let (gu, dn) = (experts(2 * i, h), experts(h, i));
    let rw = r.tensor(DType::BF16, &[e, h]);
    let rb = r.tensor(DType::F32, &[e]);
    // 1 and 3 tokens: the rows kernels (GEMVs per expert); 40: the grouped GEMMs.
    for (t, d) in [(1, DType::F32), (3, DType::BF16), (40, DType::F32), (40, DType::BF16)] {
        let x = r.tensor(d, &[t, h]);
        for c in &cases {
            let want = moe_mxfp4(&c.reference, &x, &rw, &rb, k, &gu, &dn, 1.702, 7.0).unwrap();
            let got = moe_mxfp4(&c.guarded, &x, &rw, &rb, k, &gu, &dn, 1.702, 7.0).unwrap();
            same(&format!("gpt-oss experts t={t} {d} {}", c.label), &want, &got);
        }
    }
    assert!(launches.load(Ordering::SeqCst) > 0, "no launch went through guarded memory");
}

#[test]
fn kron_quant_9_tokens_stays_in_bounds() {
    use opc_ops::kron_quant::{int4_gemm, kron_quant};
    let (cases, launches) = targets();
    let mut r = Rng(13);
    let (t, n1, n2) = (9, 4, 6);
    let x = r.tensor(DType::F32, &[t, n1 * n2]);
    let cv = r.tensor(DType::F32, &[n1 * n2]);
    let p1 = r.tensor(DType::F32, &[n1, n1]);
    let p2 = r.tensor(DType::F32, &[n2, n2]);
    let w = r.tensor(DType::F32, &[7, n1 * n2]);
    let bias = r.tensor(DType::F32, &[7]);
    for c in &cases {
        let want = kron_quant(&c.reference, &x, &cv, &p1, &p2).unwrap();
        let wq = kron_quant(&c.reference, &w, &cv, &p1, &p2).unwrap();
        let want_y = int4_gemm(&c.reference, &want.codes, &want.scales, &wq.codes, &wq.scales, Some(&bias)).unwrap();
        let got = kron_quant(&c.guarded, &x, &cv, &p1, &p2).unwrap();
        same(&format!("kron {} transformed", c.label), &want.transformed, &got.transformed);
        same(&format!("kron {} codes", c.label), &want.codes, &got.codes);
        same(&format!("kron {} scales", c.label), &want.scales, &got.scales);
        let y = int4_gemm(&c.guarded, &want.codes, &want.scales, &wq.codes, &wq.scales, Some(&bias)).unwrap();
        same(&format!("int4 gemm {}", c.label), &want_y, &y);
    }
    assert!(launches.load(Ordering::SeqCst) > 0, "no launch went through guarded memory");
}

#[test]
fn moe_stays_in_bounds() {
    use opc_ops::moe::{moe_forward, Routing};
    let (cases, launches) = targets();
    let mut r = Rng(17);
    let (t, e, h, i) = (7, 6, 20, 12);
    let x = r.tensor(DType::F32, &[t, h]);
    let gate = r.tensor(DType::F32, &[e, h]);
    let w1 = r.tensor(DType::F32, &[e, i, h]);
    let w3 = r.tensor(DType::F32, &[e, i, h]);
    let w2 = r.tensor(DType::F32, &[e, h, i]);
    let rs = r.tensor(DType::F32, &[e]);
    for routing in [Routing::TopK { k: 2 }, Routing::MoGE { groups: 3, router_scale: rs }] {
        for c in &cases {
            let want = moe_forward(&c.reference, &x, &gate, &w1, &w3, &w2, &routing).unwrap();
            let got = moe_forward(&c.guarded, &x, &gate, &w1, &w3, &w2, &routing).unwrap();
            same(&format!("moe {} out", c.label), &want.out, &got.out);
            same(&format!("moe {} ids", c.label), &want.expert_ids, &got.expert_ids);
            same(&format!("moe {} weights", c.label), &want.weights, &got.weights);
        }
    }
    assert!(launches.load(Ordering::SeqCst) > 0, "no launch went through guarded memory");
}

#[test]
fn kl_judge_odd_vocabulary_stays_in_bounds() {
    use opc_ops::kl_judge::kl_judge;
    let (cases, launches) = targets();
    let mut r = Rng(19);
    let (g, v) = (3, 1001);
    let tl = r.tensor(DType::F32, &[g + 1, v]);
    let dl = r.tensor(DType::F32, &[g, v]);
    let toks = Tensor::from_i32(DType::I32, &[g], &[5, 1000, 0]);
    for c in &cases {
        let want = kl_judge(&c.reference, &tl, &dl, &toks, 0.5).unwrap();
        let got = kl_judge(&c.guarded, &tl, &dl, &toks, 0.5).unwrap();
        same(&format!("kl {}", c.label), &want.kl, &got.kl);
        same(&format!("accept {}", c.label), &want.accept, &got.accept);
        assert_eq!((want.accepted, &want.emitted), (got.accepted, &got.emitted), "{}", c.label);
    }
    assert!(launches.load(Ordering::SeqCst) > 0, "no launch went through guarded memory");
}
