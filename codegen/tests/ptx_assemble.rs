//! PTX renderer checks that need no GPU: every kernel of the operator library, for `sm_80` and
//! `sm_90a`, renders and is accepted by `ptxas -O3` with no warning; `ptxas -v`'s register and
//! static shared-memory usage stays within what the manifest declares; a kernel written here goes
//! through too; and the PTX of a small kernel is an insta snapshot (re-bless with
//! `INSTA_UPDATE=always` and review the diff). Register spills are reported (`--nocapture`
//! prints each entry's registers, spill bytes and shared memory), not failures: the general
//! lowering keeps whole distributed tiles in registers, and ptxas spilling them is a
//! performance matter, not a correctness one.
//!
//! `ptxas` is found through `OPC_PTXAS`, then `PATH`, then the `nvidia-cuda-nvcc-cu12` pip
//! package (`python3 -m pip install nvidia-cuda-nvcc-cu12==12.9.86`, which `.ci/run` installs).
//! Without it these tests fail, unless `OPC_ALLOW_NO_PTXAS=1` is set (then the assembler checks
//! are skipped with a note; rendering is still checked).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use opc_codegen::artifact::{RenderOptions, Renderer};
use opc_codegen::ptx::PtxRenderer;
use opc_dsl::Instance;
use opc_ir::{DType, Kernel};

const ARCHS: [&str; 2] = ["sm_80", "sm_90a"];

fn ptxas() -> Option<PathBuf> {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let works = |p: &PathBuf| Command::new(p).arg("--version").output().is_ok_and(|o| o.status.success());
            if let Some(p) = std::env::var_os("OPC_PTXAS").map(PathBuf::from) {
                assert!(works(&p), "OPC_PTXAS={} does not run", p.display());
                return Some(p);
            }
            let on_path = PathBuf::from("ptxas");
            if works(&on_path) {
                return Some(on_path);
            }
            let py = "import nvidia.cuda_nvcc as m, os; print(os.path.join(list(m.__path__)[0], 'bin', 'ptxas'))";
            if let Ok(o) = Command::new("python3").args(["-c", py]).output() {
                let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
                if o.status.success() && works(&p) {
                    return Some(p);
                }
            }
            if std::env::var("OPC_ALLOW_NO_PTXAS").as_deref() == Ok("1") {
                eprintln!("note: ptxas not found; OPC_ALLOW_NO_PTXAS=1, so the assembler checks are skipped");
                return None;
            }
            panic!(
                "ptxas not found (set OPC_PTXAS, put it on PATH, or `python3 -m pip install nvidia-cuda-nvcc-cu12==12.9.86`); \
                 set OPC_ALLOW_NO_PTXAS=1 to skip the assembler checks locally"
            )
        })
        .clone()
}

/// What `ptxas -v` reports for one entry.
#[derive(Debug)]
struct Usage {
    registers: u32,
    smem: u32,
    spill_stores: u32,
}

/// Assemble `ptx` for `arch`; any error or warning fails.
fn assemble(name: &str, ptx: &str, arch: &str) -> Option<Usage> {
    let exe = ptxas()?;
    let dir = std::env::temp_dir().join(format!("opc-ptxas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join(format!("{name}.{arch}.ptx"));
    let out = dir.join(format!("{name}.{arch}.cubin"));
    std::fs::write(&src, ptx).unwrap();
    let o = Command::new(&exe)
        .args(["-O3", &format!("-arch={arch}"), "-v", "--warning-as-error"])
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .output()
        .expect("ptxas runs");
    let err = String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
    let _ = std::fs::remove_file(&out);
    assert!(o.status.success(), "{name} ({arch}): ptxas failed:\n{err}\n(PTX kept at {})", src.display());
    assert!(!err.to_lowercase().contains("warning"), "{name} ({arch}): ptxas warned:\n{err}");
    let _ = std::fs::remove_file(&src);
    let num_before = |key: &str| -> u32 {
        err.lines()
            .find_map(|l| {
                let i = l.find(key)?;
                l[..i].split_whitespace().last()?.parse().ok()
            })
            .unwrap_or(0)
    };
    Some(Usage { registers: num_before(" registers"), smem: num_before(" bytes smem"), spill_stores: num_before(" bytes spill stores") })
}

/// Render for `arch`, assemble, and check usage against the manifest (`None`: no ptxas).
fn check(name: &str, k: &Kernel, arch: &str) -> Option<Usage> {
    let art = PtxRenderer
        .render(k, &RenderOptions { arch: Some(arch.to_string()) })
        .unwrap_or_else(|e| panic!("{name} ({arch}): {e}"));
    let m = &art.manifest;
    assert_eq!(m["entry"], k.name.as_str());
    assert_eq!(m["arch"], arch);
    assert_eq!(art.files.len(), 1);
    assert_eq!(m["block"][1], 1);
    let ptx = String::from_utf8(art.files[0].1.clone()).unwrap();
    assert!(ptx.contains(&format!(".target {arch}\n")), "{name}: header names the arch");
    let u = assemble(name, &ptx, arch)?;
    let max_regs = m["occupancy"]["max_registers_per_thread"].as_u64().unwrap() as u32;
    let smem_static = m["shared_bytes"]["static"].as_u64().unwrap() as u32;
    assert!(u.registers <= max_regs, "{name} ({arch}): ptxas uses {} registers, the manifest declares {max_regs}", u.registers);
    assert!(u.smem <= smem_static, "{name} ({arch}): ptxas reports {} bytes of static shared memory, the manifest declares {smem_static}", u.smem);
    assert!(m["shared_bytes"]["total"].as_u64().unwrap() as u32 >= u.smem);
    eprintln!(
        "{name:<40} {arch:<7} block {:>3}  registers {:>3}/{max_regs}  spill stores {:>5} B  shared {:>6} B  {}",
        m["block"][0], u.registers, u.spill_stores, m["shared_bytes"]["total"], m["tensor_cores"]
    );
    Some(u)
}

fn library() -> Vec<(String, Kernel)> {
    let mut out = vec![];
    for (file, src) in opc_ops::SOURCES {
        let path = format!("ops/kernels/{file}.opc");
        let names = opc_dsl::check(&path, src).unwrap_or_else(|d| panic!("{d}"));
        for name in names {
            let mut k = opc_dsl::compile_representative(&path, src, &name, &Instance::default()).unwrap_or_else(|d| panic!("{d}"));
            opc_passes::run_pipeline(&mut k, &Default::default()).unwrap_or_else(|e| panic!("{file}/{name}: {e}"));
            out.push((format!("{file}__{name}"), k));
        }
    }
    out
}

/// Run `check` over `jobs` on two threads (ptxas is single-threaded; CI has two cores); the
/// usage of each job and arch that was assembled, in no particular order.
fn check_all(jobs: Vec<(String, Kernel)>) -> Vec<(String, &'static str, Usage)> {
    let jobs: Vec<(String, Kernel, &str)> = jobs.into_iter().flat_map(|(n, k)| ARCHS.map(|a| (n.clone(), k.clone(), a))).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let out = std::sync::Mutex::new(vec![]);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((n, k, a)) = jobs.get(i) else { break };
                if let Some(u) = check(n, k, a) {
                    out.lock().unwrap().push((n.clone(), *a, u));
                }
            });
        }
    });
    out.into_inner().unwrap()
}

#[test]
fn every_library_kernel_assembles_for_sm80_and_sm90a() {
    let kernels = library();
    assert!(kernels.len() >= 20, "expected the whole library, found {}", kernels.len());
    check_all(kernels);
}

fn instance(file: &str, kernel: &str, dt: DType, konst: Option<(&str, i64)>, tunables: &[(&str, i64)]) -> Kernel {
    let src = opc_ops::SOURCES.iter().find(|(f, _)| *f == file).unwrap().1;
    let mut inst = Instance::default().dtype("T", dt);
    if let Some((d, v)) = konst {
        inst = inst.konst(d, v);
    }
    for (t, v) in tunables {
        inst = inst.tunable(t, *v);
    }
    let mut k = opc_dsl::compile(file, src, kernel, &inst).unwrap_or_else(|d| panic!("{d}"));
    opc_passes::run_pipeline(&mut k, &Default::default()).unwrap();
    k
}

fn render(k: &Kernel, arch: &str) -> (String, serde_json::Value) {
    let art = PtxRenderer.render(k, &RenderOptions { arch: Some(arch.into()) }).unwrap();
    (String::from_utf8(art.files[0].1.clone()).unwrap(), art.manifest)
}

#[test]
fn tensor_core_instantiations_assemble() {
    // f16 / bf16 instances take the tensor-core paths (the representative instances are f32):
    // GEMM loops are pipelined (cp.async on sm_80, TMA + wgmma on sm_90a); flash attention's
    // K/V tiles are cp.async-staged and its dots take mma.sync through the general lowering.
    let mut jobs = vec![];
    for (kernel, dt, tun) in [
        ("matmul", DType::BF16, &[][..]),
        ("linear", DType::F16, &[][..]),
        ("matmul", DType::F16, &[("BM", 128), ("BN", 128), ("BK", 64)][..]),
        ("linear", DType::BF16, &[("BM", 128), ("BN", 128), ("BK", 64)][..]),
        ("matmul", DType::BF16, &[("BM", 16), ("BN", 32), ("BK", 16)][..]),
    ] {
        let k = instance("blocks", kernel, dt, None, tun);
        let (p80, m80) = render(&k, "sm_80");
        assert!(p80.contains("cp.async.cg.shared.global") && p80.contains("cp.async.wait_group 1") && p80.contains("ldmatrix.sync.aligned"), "{kernel} {dt} {tun:?}");
        assert!(m80["tensor_cores"].as_str().unwrap().contains("cp.async"), "{}", m80["tensor_cores"]);
        let (p90, m90) = render(&k, "sm_90a");
        if tun.first().is_some_and(|t| t.1 == 16) {
            // BM = 16 has no 64-row wgmma slice: the cp.async mainloop serves sm_90a too
            assert!(!p90.contains("wgmma") && p90.contains("cp.async.cg"));
        } else {
            for needle in ["wgmma.mma_async.sync.aligned.m64n", "cp.async.bulk.tensor.2d", "mbarrier.try_wait.parity", "mbarrier.arrive.expect_tx", ".param .align 64 .b8"] {
                assert!(p90.contains(needle), "{kernel} {dt} {tun:?}: no `{needle}`");
            }
            assert_eq!(m90["fallback_without_tma"], true);
            assert!(m90["launch_params"].as_array().unwrap().iter().any(|p| p["kind"] == "tensor_map"));
            // the variant the loader uses when a tensor map cannot be encoded
            let arch = opc_codegen::ptx::Arch::by_name("sm_90a").unwrap();
            let fb = opc_codegen::ptx::compile_with(&k, arch, opc_codegen::ptx::Features { pipeline: true, wgmma: false, stage: true, persistent: false }).unwrap();
            assert!(!fb.ptx.contains("wgmma") && fb.ptx.contains("cp.async.cg"));
            if let Some(u) = assemble(&format!("{kernel}_{dt}_notma"), &fb.ptx, "sm_90a") {
                assert!(u.registers <= opc_codegen::ptx::max_registers(fb.launch.threads));
            }
        }
        jobs.push((format!("blocks__{kernel}_{dt}_{}", tun.iter().map(|t| t.1.to_string()).collect::<Vec<_>>().join("x")), k));
    }
    for (kernel, dt, d) in [("flash_attention", DType::BF16, 128), ("flash_attention", DType::F16, 64), ("flash_decode_split", DType::BF16, 128)] {
        // K and V tiles of the KV walk are staged by a 2-stage cp.async ring (`stage.rs`): the
        // prefetch of tile j + 1 is issued before tile j is waited for; K is read by `ldmatrix`
        // as stored ([N][K]), V by `ldmatrix.trans` ([K][N]). On sm_90a flash_attention takes
        // the FA3 loop instead (`fa3_flash_attention_sm90a`), and this is its no-TMA variant.
        let k = instance("flash_attention", kernel, dt, Some(("D", d)), &[]);
        let sm90 = opc_codegen::ptx::Arch::by_name("sm_90a").unwrap();
        let no_tma = opc_codegen::ptx::compile_with(&k, sm90, opc_codegen::ptx::Features { pipeline: true, wgmma: false, stage: true, persistent: false }).unwrap();
        for arch in ARCHS {
            let (p, m) = if arch == "sm_90a" && kernel == "flash_attention" {
                let (_, m) = render(&k, arch);
                assert!(m["fa3"].is_object(), "{kernel} {dt}: the sm_90a default is the FA3 loop");
                if let Some(u) = assemble(&format!("{kernel}_{dt}_notma"), &no_tma.ptx, arch) {
                    assert!(u.registers <= opc_codegen::ptx::max_registers(no_tma.launch.threads));
                }
                (no_tma.ptx.clone(), serde_json::json!({"tensor_cores": no_tma.tensor_cores.unwrap_or("none")}))
            } else {
                render(&k, arch)
            };
            assert!(m["tensor_cores"].as_str().unwrap().contains("cp.async 2-stage"), "{kernel} {dt} {arch}: {}", m["tensor_cores"]);
            for needle in ["cp.async.cg.shared.global", "cp.async.wait_group 1", "ldmatrix.sync.aligned.m8n8.x2.trans", "ldmatrix.sync.aligned.m8n8.x2.shared", "mma.sync.aligned.m16n8k16.row.col.f32"] {
                assert!(p.contains(needle), "{kernel} {dt} {arch}: no `{needle}`");
            }
            let (prefetch, wait) = (p.find("cp.async.cg.shared.global").unwrap(), p.find("cp.async.wait_group 1").unwrap());
            assert!(prefetch < wait, "{kernel} {dt} {arch}: the first tile is issued before the loop waits");
        }
        if dt == DType::F16 {
            // sm_86 (99 KiB per CTA): the rings fit for D = 64; where they would not, the compile
            // drops them (`Features::stage`) rather than fail
            let arch = opc_codegen::ptx::Arch::by_name("sm_86").unwrap();
            let c = opc_codegen::ptx::compile(&k, arch).unwrap();
            assert!(c.launch.shared_bytes <= arch.max_shared);
            if let Some(u) = assemble(&format!("{kernel}_f16_sm86"), &c.ptx, "sm_86") {
                assert!(u.registers <= opc_codegen::ptx::max_registers(c.launch.threads));
            }
        }
        jobs.push((format!("flash_attention__{kernel}_{dt}"), k));
    }
    check_all(jobs);
}

/// Every op family the PTX lowering has a path for, in one kernel written here.
const EVERYTHING: &str = r#"
kernel everything(x: f32[R, C], h: bf16[R, C], q: i8[R, C], idx: i32[R], y: out f32[R, C], hb: out bf16[R, C],
                  codes: out e2m1[R, C], sc: out e8m0[R], cnt: out i32[C], am: out i32[R], cs: out f16[R, C], s: f32, n: i32)
tunables { BR: level1 in {4, 8} = 8, BC: level2 in {32, 64} = 32 }
grid(cdiv(R, BR))
{
    let rows = program_id(0) * BR + arange(BR);
    let cols = arange(BC);
    var acc = zeros([BR, BC], f32);
    for c0 in 0..cdiv(C, BC) {
        let cs0 = c0 * BC + cols;
        let v = load(x[rows, cs0], mask: (rows[:, None] < R) && (cs0[None, :] < C), other: 1.0);
        let hv = cast(load(h[rows, cs0]), f32);
        let qi = load(q[rows, cs0]);
        let t = exp(v) + log(abs(v) + 1.0) + sin(v) * cos(hv) + tanh(v) - sigmoid(v) + silu(hv) + sqrt(abs(v)) + rsqrt(abs(v) + 1.0);
        let u = pow(abs(v) + 0.5, hv) + (v % 3.0) + floor(v) + ceil(hv) + round(v) + exp2(v) + log2(abs(v) + 2.0) + recip(v + 7.0);
        let w = where(isnan(t) || isinf(u), 0.0, t + u);
        let ii = cast(qi, i32);
        let iv = (ii / (n - 3)) + (ii % n) + (ii << 2) + (ii >> 1) + ii * ii + maximum(ii, -ii) + (ii & 7) + (ii | 1) + (ii ^ 5) + abs(ii);
        acc = acc + w + cast(iv, f32, rne) + dot(dot(v, trans(v)), v) + cast(dot(dot(qi, trans(qi)), ii), f32, rne);
        store(hb[rows, cs0], cast(acc, bf16, rtz) + cast(iv, bf16));
        store(codes[rows, cs0], cast(acc * s, e2m1, floor));
        atomic_add(cnt[cs0], sum(cast(qi > 0, i32), 0));
        store(cs[rows, cs0], cast(cumsum(v, 1), f16));
    }
    store(y[rows, cols], acc);
    let g = load(x[load(idx[rows]), cols]);
    store(am[rows], argmax(g, 1) + argmin(cast(g, i32, floor), 1));
    store(sc[rows], cast(max(abs(acc), 1), e8m0, ceil));
    atomic_add(y[rows, cols], acc * 0.5);
}
"#;

#[test]
fn a_kernel_written_in_the_test_assembles() {
    let mut k = opc_dsl::compile("everything.opc", EVERYTHING, "everything", &Instance::default()).unwrap_or_else(|d| panic!("{d}"));
    opc_passes::run_pipeline(&mut k, &Default::default()).unwrap();
    check_all(vec![("everything".into(), k)]);
}

const SMALL: &str = r#"
kernel scale_rows(x: bf16[R, C], w: f32[C], y: out bf16[R, C], s: f32)
tunables { BC: level1 in {64, 128} = 64 }
grid(R, cdiv(C, BC))
{
    let r = program_id(0);
    let c = program_id(1) * BC + arange(BC);
    let v = cast(load(x[r, c]), f32) * load(w[c]) * s;
    store(y[r, c], cast(v / sum(v, 0), bf16));
}
"#;

#[test]
fn small_kernel_ptx_snapshot() {
    let mut k = opc_dsl::compile("small.opc", SMALL, "scale_rows", &Instance::default()).unwrap_or_else(|d| panic!("{d}"));
    opc_passes::run_pipeline(&mut k, &Default::default()).unwrap();
    let art = PtxRenderer.render(&k, &RenderOptions { arch: Some("sm_90a".into()) }).unwrap();
    let ptx = String::from_utf8(art.files[0].1.clone()).unwrap();
    assemble("scale_rows", &ptx, "sm_90a");
    insta::assert_snapshot!("scale_rows_sm90a_ptx", ptx);
    let mut m = art.manifest.clone();
    m.as_object_mut().unwrap().remove("compiler");
    insta::assert_snapshot!("scale_rows_sm90a_manifest", serde_json::to_string_pretty(&m).unwrap());
}

#[test]
fn unknown_arch_is_an_error() {
    let mut k = opc_dsl::compile("small.opc", SMALL, "scale_rows", &Instance::default()).unwrap();
    opc_passes::run_pipeline(&mut k, &Default::default()).unwrap();
    let e = PtxRenderer.render(&k, &RenderOptions { arch: Some("sm_70".into()) }).unwrap_err();
    assert!(e.to_string().contains("unknown arch `sm_70`"), "{e}");
}

/// FA3 on sm_90a: the library's flash attention (bf16 / f16, D = 64 / 128, one or two consumer
/// warpgroups) takes the warp-specialized TMA + wgmma loop of `attn.rs`; ptxas accepts it with
/// no warning, its registers stay within the manifest's occupancy (and within the `.maxnreg`
/// that `setmaxnreg` re-partitions), and the manifest's FA3 shared-memory layout fits.
#[test]
fn fa3_flash_attention_sm90a() {
    let arch = opc_codegen::ptx::Arch::by_name("sm_90a").unwrap();
    for (dt, d, bm, bn) in [(DType::BF16, 64, 64, 64), (DType::BF16, 128, 64, 64), (DType::F16, 128, 128, 64), (DType::F16, 64, 128, 128), (DType::BF16, 128, 128, 128)] {
        let k = instance("flash_attention", "flash_attention", dt, Some(("D", d)), &[("BM", bm), ("BN", bn)]);
        let (p, m) = render(&k, "sm_90a");
        let ty = if dt == DType::F16 { "f16" } else { "bf16" };
        let case = format!("{dt} D={d} BM={bm} BN={bn}");
        for needle in [
            format!("wgmma.mma_async.sync.aligned.m64n{bn}k16.f32.{ty}.{ty}"),
            format!("wgmma.mma_async.sync.aligned.m64n{d}k16.f32.{ty}.{ty}"),
            "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes".into(),
            "mbarrier.try_wait.parity.shared::cta.b64".into(),
            "mbarrier.arrive.expect_tx.shared::cta.b64".into(),
            format!("cvt.rn.{ty}x2.f32"),
            "shfl.sync.bfly.b32".into(),
            "fence.proxy.async.shared::cta".into(),
        ] {
            assert!(p.contains(&needle), "{case}: no `{needle}`");
        }
        // P·V takes A from registers: a `{...}` register list before the B descriptor
        assert!(p.lines().any(|l| l.contains(&format!("m64n{d}k16")) && l.contains("}, {%r")), "{case}: P·V A operand is not in registers");
        assert!(!p.contains("ldmatrix"), "{case}: the KV walk should not take the mma.sync path");
        let fa = &m["fa3"];
        // K and V complete on separate barriers: two expect_tx per stage fill
        assert_eq!(p.matches("mbarrier.arrive.expect_tx").count(), 2, "{case}: separate K and V full barriers");
        if fa["overlap_qk"] == true {
            assert_fa3_overlap(&p, bn, d, &case);
        }
        assert_eq!((fa["bm"].as_u64(), fa["bn"].as_u64(), fa["d"].as_u64()), (Some(bm as u64), Some(bn as u64), Some(d as u64)), "{case}");
        let threads = m["block"][0].as_u64().unwrap() as u32;
        assert_eq!(threads, 128 * (bm as u32 / 64 + 1), "{case}: one producer warpgroup plus BM/64 consumers");
        let two = bm == 128;
        assert_eq!(p.contains("setmaxnreg.dec.sync.aligned.u32 24") && p.contains("setmaxnreg.inc.sync.aligned.u32 240"), two, "{case}");
        assert_eq!(p.contains(".maxnreg 168"), two, "{case}");
        let maps = m["launch_params"].as_array().unwrap().iter().filter(|x| x["kind"] == "tensor_map").count();
        assert_eq!(maps, 2, "{case}: K and V maps");
        let total = m["shared_bytes"]["total"].as_u64().unwrap() as u32;
        assert!(total >= fa["shared"]["region_bytes"].as_u64().unwrap() as u32 && total <= arch.max_shared, "{case}: {total} B");
        if let Some(u) = assemble(&format!("fa3_{ty}_{d}_{bm}_{bn}"), &p, "sm_90a") {
            let max = m["occupancy"]["max_registers_per_thread"].as_u64().unwrap() as u32;
            assert!(u.registers <= max, "{case}: {} registers, the manifest declares {max}", u.registers);
            if two {
                assert!(u.registers <= 168, "{case}: {} registers above the .maxnreg setmaxnreg starts from", u.registers);
            }
            eprintln!("fa3 {case:<28} block {threads}  registers {:>3}/{max}  spill stores {:>3} B  shared {total} B", u.registers, u.spill_stores);
        }
        // the loader's variant when a tensor map cannot be encoded
        let fb = match opc_codegen::ptx::compile_with(&k, arch, opc_codegen::ptx::Features { pipeline: true, wgmma: false, stage: true, persistent: false }) {
            Ok(fb) => fb,
            // without the FA3 region the 128 × 128 × 128 tiles do not fit: a precise error
            Err(e) if bm * bn * d == 128 * 128 * 128 => {
                assert!(e.to_string().contains("bytes of shared memory"), "{case}: {e}");
                continue;
            }
            Err(e) => panic!("{case}: {e}"),
        };
        assert!(fb.attn.is_none() && !fb.ptx.contains("wgmma") && fb.tensor_maps.is_empty(), "{case}: fallback");
        if let Some(u) = assemble(&format!("fa3_{ty}_{d}_{bm}_{bn}_notma"), &fb.ptx, "sm_90a") {
            assert!(u.registers <= opc_codegen::ptx::max_registers(fb.launch.threads));
        }
    }
}

/// FA3's Q·Kᵀ overlap in `p`: the `Q·Kᵀ` `wgmma`s are issued twice (tile 0 before the loop,
/// tile `j + 1` inside it), and inside the loop the softmax's `ex2` runs between the commit of
/// the next tile's `Q·Kᵀ` and the next `wait_group`.
fn assert_fa3_overlap(p: &str, bn: i64, d: i64, case: &str) {
    let qk = format!("m64n{bn}k16");
    let lines: Vec<&str> = p.lines().collect();
    let qk_lines: Vec<usize> = lines.iter().enumerate().filter(|(_, l)| l.contains(&qk) && l.trim_end().ends_with("0, 0;")).map(|(i, _)| i).collect();
    assert_eq!(qk_lines.len() as i64, 2 * d / 16, "{case}: Q·Kᵀ issued before the loop and for the next tile");
    let last = *qk_lines.last().unwrap();
    let commit = last + lines[last..].iter().position(|l| l.contains("wgmma.commit_group")).unwrap();
    let wait = commit + lines[commit..].iter().position(|l| l.contains("wgmma.wait_group")).unwrap();
    assert!(lines[commit..wait].iter().any(|l| l.contains("ex2.approx")), "{case}: the softmax runs while the next S is computed");
}

/// The benchmark case (causal B4 H32 S8192 D128 bf16) on sm_90a: the tiles the operator picks
/// (`flash_attention_tiles`, and the DSL's own defaults) take the FA3 loop, and so does every
/// `BM ∈ {64, 128}` × `BN` of the tunable space at D = 64, 128 and 256 (the output buffers
/// reuse the Q / K/V region after the loop where they would not fit beside it).
#[test]
fn fa3_default_tiles_take_the_fa3_loop() {
    let (bm, bn) = opc_ops::attention::flash_attention_tiles(8192, 8192);
    let ours = instance("flash_attention", "flash_attention", DType::BF16, Some(("D", 128)), &[("BM", bm), ("BN", bn)]);
    let dsl_default = instance("flash_attention", "flash_attention", DType::BF16, Some(("D", 128)), &[]);
    for (name, k) in [("operator tiles", &ours), ("DSL defaults", &dsl_default)] {
        let (p, m) = render(k, "sm_90a");
        assert!(m["fa3"].is_object(), "{name}: not FA3 ({})", m["tensor_cores"]);
        assert_eq!(m["fa3"]["overlap_qk"], true, "{name}: one consumer warpgroup at BN = 64, D = 128 has the registers for the overlap");
        assert_fa3_overlap(&p, bn, 128, name);
        assert!(p.contains("cp.async.bulk.tensor.3d") && p.contains("wgmma.mma_async"), "{name}");
        if let Some(u) = assemble(&format!("fa3_default_{}", name.replace(' ', "_")), &p, "sm_90a") {
            let max = m["occupancy"]["max_registers_per_thread"].as_u64().unwrap() as u32;
            assert!(u.registers <= max && u.smem <= m["shared_bytes"]["static"].as_u64().unwrap() as u32, "{name}");
            eprintln!("fa3 default ({name}) BM={} BN={}: registers {} spill {} B shared {} B", m["fa3"]["bm"], m["fa3"]["bn"], u.registers, u.spill_stores, m["shared_bytes"]["total"]);
        }
    }
    let sm90 = opc_codegen::ptx::Arch::by_name("sm_90a").unwrap();
    for (d, bms, bns) in [(64, &[64, 128][..], &[16, 32, 64, 128][..]), (128, &[64, 128], &[16, 32, 64, 128]), (256, &[64], &[16, 32, 64])] {
        for (&bm, &bn) in bms.iter().flat_map(|m| bns.iter().map(move |n| (m, n))) {
            let k = instance("flash_attention", "flash_attention", DType::BF16, Some(("D", d)), &[("BM", bm), ("BN", bn)]);
            let c = opc_codegen::ptx::compile(&k, sm90).unwrap_or_else(|e| panic!("D={d} BM={bm} BN={bn}: {e}"));
            let a = c.attn.unwrap_or_else(|| panic!("D={d} BM={bm} BN={bn}: not the FA3 loop"));
            // 128 × 128 × 128 fits only with the output buffers inside the region
            assert!(a.outputs_in_region || bm * bn * d != 128 * 128 * 128, "D={d} BM={bm} BN={bn}: the output buffers should reuse the region");
        }
    }
}

/// A small attention kernel written here: 32-byte swizzle (D = 16), m64n16 tiles, 2-D K / V
/// (no leading dims), ragged tail masked by the kernel. Its FA3 PTX is a snapshot.
const TINY_ATTN: &str = r#"
kernel tiny_attn(q: bf16[S, D], k: bf16[S, D], v: bf16[S, D], o: out f32[S, D])
where const D
tunables { BM: level1 in {64} = 64, BN: level2 in {16} = 16 }
grid(cdiv(S, BM))
{
    let rows = program_id(0) * BM + arange(BM);
    let dcols = arange(D);
    let qt = load(q[rows, dcols]);
    var m = full([BM], -inf, f32);
    var l = zeros([BM], f32);
    var acc = zeros([BM, D], f32);
    for j0 in 0..S step BN {
        let cols = j0 + arange(BN);
        let s = where(cols[None, :] < S, dot(qt, trans(load(k[cols, dcols]))), -inf);
        let m_new = maximum(m, max(s, 1));
        let p = exp2(s - m_new[:, None]);
        let alpha = exp2(m - m_new);
        l = l * alpha + sum(p, 1);
        acc = dot(cast(p, bf16), load(v[cols, dcols]), acc * alpha[:, None]);
        m = m_new;
    }
    store(o[rows, dcols], acc / l[:, None]);
}
"#;

#[test]
fn tiny_attention_fa3_ptx_snapshot() {
    let mut k = opc_dsl::compile("tiny_attn.opc", TINY_ATTN, "tiny_attn", &Instance::default().konst("D", 16)).unwrap_or_else(|d| panic!("{d}"));
    opc_passes::run_pipeline(&mut k, &Default::default()).unwrap();
    let (p, m) = render(&k, "sm_90a");
    assert!(m["fa3"].is_object(), "the tiny kernel takes the FA3 loop: {}", m["tensor_cores"]);
    assert!(p.contains("wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16"));
    check_all(vec![("tiny_attn".into(), k)]);
    insta::assert_snapshot!("tiny_attn_fa3_sm90a_ptx", p);
}

/// Persistent CTAs for the sm_90a GEMM (`Features::persistent`): the body walks the programs
/// of the kernel's grid (passed as `opc_grid_*` params) from `%ctaid.x` in steps of
/// `%nctaid.x`, the ring's mbarriers are initialized once before the walk, ptxas accepts it
/// within the manifest's budget; kernels without a wgmma GEMM loop are not made persistent.
#[test]
fn persistent_wgmma_gemm_sm90a() {
    use opc_codegen::ptx::{compile_with, Arch, Features, LaunchParam};
    let arch = Arch::by_name("sm_90a").unwrap();
    let on = Features { persistent: true, ..Features::for_arch(arch) };
    for (kernel, dt, tun) in [
        ("matmul", DType::BF16, &[][..]),
        ("matmul", DType::BF16, &[("BM", 128), ("BN", 128), ("BK", 64)][..]),
        ("linear", DType::F16, &[("BM", 64), ("BN", 128), ("BK", 64)][..]),
    ] {
        let k = instance("blocks", kernel, dt, None, tun);
        let case = format!("{kernel} {dt} {tun:?}");
        let c = compile_with(&k, arch, on).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert!(c.persistent, "{case}");
        let grid: Vec<usize> = c.launch.params.iter().filter_map(|p| if let LaunchParam::Grid(i) = p { Some(*i) } else { None }).collect();
        assert_eq!(grid, vec![0, 1, 2], "{case}: the virtual grid is passed");
        for needle in [".param .u32 opc_grid_x", "%nctaid.x", "wgmma.mma_async", "cp.async.bulk.tensor.2d"] {
            assert!(c.ptx.contains(needle), "{case}: no `{needle}`");
        }
        // the ring's barriers are initialized once, before the walk's loop head
        let inits: Vec<usize> = c.ptx.lines().enumerate().filter(|(_, l)| l.contains("mbarrier.init")).map(|(i, _)| i).collect();
        let walk = c.ptx.lines().position(|l| l.contains("mov.b32") && l.contains("%ctaid.x")).expect("the walk starts at %ctaid.x");
        assert!(!inits.is_empty() && inits.iter().all(|&i| i < walk), "{case}: barriers set up before the walk");
        // consumers release the last stage of every program (the ring outlives it)
        assert!(c.ptx.lines().filter(|l| l.contains("mbarrier.arrive.shared::cta.b64")).count() >= 2, "{case}");
        let m = opc_codegen::ptx::manifest(&k, &c, "matmul.ptx");
        assert!(m["persistent"]["launch_grid"].as_str().unwrap().contains("multiprocessor count"), "{case}");
        if let Some(u) = assemble(&format!("persistent_{kernel}_{dt}_{}", tun.len()), &c.ptx, "sm_90a") {
            let max = m["occupancy"]["max_registers_per_thread"].as_u64().unwrap() as u32;
            assert!(u.registers <= max && u.smem <= c.launch.shared_bytes, "{case}");
            eprintln!("persistent {case:<60} block {}  registers {:>3}/{max}  spill stores {} B  shared {} B", c.launch.threads, u.registers, u.spill_stores, c.launch.shared_bytes);
        }
        // the same kernel without the flag is unchanged (one CTA per program)
        let off = compile_with(&k, arch, Features::for_arch(arch)).unwrap();
        assert!(!off.persistent && !off.ptx.contains("opc_grid_x"), "{case}");
        // the producer runs ahead: a second copy of the TMA issue, for the next program's
        // first k-blocks, between this program's copies and the CTA join
        let tma = |p: &str| p.matches("cp.async.bulk.tensor.2d").count();
        assert_eq!(tma(&c.ptx), 2 * tma(&off.ptx), "{case}: the next program's copies are issued ahead");
    }
    // no wgmma GEMM loop (sm_80, or BM = 16): the flag has nothing to amortize
    let small = instance("blocks", "matmul", DType::BF16, None, &[("BM", 16), ("BN", 32), ("BK", 16)]);
    assert!(!compile_with(&small, arch, on).unwrap().persistent);
    let sm80 = Arch::by_name("sm_80").unwrap();
    assert!(!compile_with(&instance("blocks", "matmul", DType::BF16, None, &[]), sm80, Features { persistent: true, ..Features::for_arch(sm80) }).unwrap().persistent);
    // the launch-side schedule: ragged program counts on an H200's 132 SMs
    let g = [67u64, 3, 1];
    let n = opc_codegen::ptx::persistent_ctas(201, 132);
    let mut all: Vec<[u64; 3]> = (0..n).flat_map(|c| opc_codegen::ptx::persistent_schedule(c, n, g)).collect();
    all.sort();
    all.dedup();
    assert_eq!((n, all.len()), (132, 201));
}

/// Integer dots written here: i8 and u8 operands (`m16n8k32`), as loaded, transposed, and with
/// a K tile (48) that is not a whole instruction (zero-padded to 64 in the packed operand).
const INT_DOTS: &str = r#"
kernel int8_dots(a: i8[M, K], b: i8[K, N], u: u8[M, K], v: u8[N, K], y: out i32[M, N])
tunables { BM: level1 in {16, 32} = 32, BN: level1 in {8, 16, 64} = 16, BK: level2 in {48, 64} = 64 }
grid(cdiv(M, BM), cdiv(N, BN))
{
    let rows = program_id(0) * BM + arange(BM);
    let cols = program_id(1) * BN + arange(BN);
    var acc = zeros([BM, BN], i32);
    for k0 in 0..K step BK {
        let ks = k0 + arange(BK);
        acc = dot(load(a[rows, ks]), load(b[ks, cols]), acc);
        acc = dot(load(u[rows, ks]), trans(load(v[cols, ks])), acc);
    }
    store(y[rows, cols], acc);
}
"#;

/// The smallest int4 tensor-core kernel: one m16n8k64 tile per program.
const INT4_DOT: &str = r#"
kernel int4_dot(a: i4[M, K], w: i4[N, K], y: out i32[M, N])
grid(cdiv(M, 16), cdiv(N, 8))
{
    let rows = program_id(0) * 16 + arange(16);
    let cols = program_id(1) * 8 + arange(8);
    let ks = arange(64);
    store(y[rows, cols], dot(load(a[rows, ks]), trans(load(w[cols, ks]))));
}
"#;

fn compiled(file: &str, src: &str, name: &str, tunables: &[(&str, i64)]) -> Kernel {
    let mut inst = Instance::default();
    for (t, v) in tunables {
        inst = inst.tunable(t, *v);
    }
    let mut k = opc_dsl::compile(file, src, name, &inst).unwrap_or_else(|d| panic!("{d}"));
    opc_passes::run_pipeline(&mut k, &Default::default()).unwrap();
    k
}

const S4: &str = "mma.sync.aligned.m16n8k64.row.col.s32.s4.s4.s32";
const S8: &str = "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32";
const U8: &str = "mma.sync.aligned.m16n8k32.row.col.s32.u8.u8.s32";

#[test]
fn integer_dots_take_integer_mma_sync() {
    // dots outside a pipelined GEMM loop (two dots in one body, no loop): operands packed in
    // shared memory, then m16n8k32 / m16n8k64
    let mut jobs = vec![];
    for bk in [64, 48] {
        let k = compiled("int_dots.opc", INT_DOTS, "int8_dots", &[("BK", bk)]);
        for arch in ARCHS {
            let (p, m) = render(&k, arch);
            assert!(p.contains(S8) && p.contains(U8), "int8_dots BK={bk} {arch}");
            assert_eq!(m["tensor_cores"], "mma.sync.m16n8k32.s8 + ldmatrix");
        }
        jobs.push((format!("int8_dots_{bk}"), k));
    }
    jobs.push(("int4_dot".into(), compiled("int4_dot.opc", INT4_DOT, "int4_dot", &[])));
    check_all(jobs);
}

/// Assert that `p` runs its K loop through the pipelined integer mainloop with `instr`: 16-byte
/// `cp.async` copies straight from global memory, `ldmatrix` (never `.trans`: it would swap
/// bytes across rows), and no operand staged or packed element by element in shared memory.
fn assert_int_pipeline(p: &str, m: &serde_json::Value, instr: &str, what: &str) {
    assert!(p.contains(instr) && p.contains("ldmatrix.sync.aligned.m8n8.x4.shared.b16"), "{what}");
    assert!(p.contains("cp.async.cg.shared.global") && p.contains("cp.async.wait_group 1"), "{what}: not pipelined");
    assert!(!p.contains(".trans"), "{what}: 8/4-bit operands are never read with ldmatrix.trans");
    assert!(!p.contains("ld.shared.s8") && !p.contains("ld.shared.u8"), "{what}: operands staged byte by byte");
    let bits = if instr == S4 { "m16n8k64.s4" } else { "m16n8k32.s8" };
    assert_eq!(m["tensor_cores"], format!("mma.sync.{bits} + ldmatrix, cp.async 3-stage pipeline"), "{what}");
}

#[test]
fn int4_gemm_tile_sets_are_pipelined_without_spills() {
    // int4_gemm (the library's W4A4 GEMM), every tile set its tunables allow, on both archs
    // (wgmma has no 4-bit type): the K loop is the cp.async mainloop with register
    // accumulators, and ptxas fits it in the manifest's registers without spilling. BK = 32 is
    // half a k64 instruction: its staged rows are zero-padded.
    let src = opc_ops::SOURCES.iter().find(|(f, _)| *f == "kron_quant").unwrap().1;
    let mut jobs = vec![];
    for bm in [16, 32, 64, 128] {
        for bn in [16, 32, 64, 128] {
            for bk in [32, 64, 128] {
                let k = compiled("kron_quant", src, "int4_gemm", &[("BM", bm), ("BN", bn), ("BK", bk)]);
                jobs.push((format!("kron_quant__int4_gemm_{bm}x{bn}x{bk}"), k, S4));
            }
        }
    }
    assert_pipelined_without_spills(jobs);
}

/// Every job (name, kernel, integer `mma`) takes the pipelined integer mainloop on both archs
/// ([`assert_int_pipeline`]), assembles within its manifest, and does not spill.
fn assert_pipelined_without_spills(jobs: Vec<(String, Kernel, &str)>) {
    for (name, k, instr) in &jobs {
        for arch in ARCHS {
            let (p, m) = render(k, arch);
            assert_int_pipeline(&p, &m, instr, &format!("{name} {arch}"));
        }
    }
    for (name, arch, u) in check_all(jobs.into_iter().map(|(n, k, _)| (n, k)).collect()) {
        assert_eq!(u.spill_stores, 0, "{name} ({arch}) spills {} bytes ({} registers)", u.spill_stores, u.registers);
    }
}

/// 8-bit GEMM loops for the pipelined mainloop, `T` in {i8, u8} (its comments say which K tiles
/// are padded).
const INT8_GEMM: &str = include_str!("common/int8_gemm.opc");

#[test]
fn int8_gemm_loops_are_pipelined() {
    let mut jobs = vec![];
    for (dt, instr) in [(DType::I8, S8), (DType::U8, U8)] {
        for (bm, bn, bk) in [(64, 64, 64), (16, 16, 16), (32, 16, 48)] {
            let inst = Instance::default().dtype("T", dt).tunable("BM", bm).tunable("BN", bn).tunable("BK", bk);
            let mut k = opc_dsl::compile("int8_gemm.opc", INT8_GEMM, "int8_gemm", &inst).unwrap_or_else(|d| panic!("{d}"));
            opc_passes::run_pipeline(&mut k, &Default::default()).unwrap();
            jobs.push((format!("int8_gemm_{dt}_{bm}x{bn}x{bk}"), k, instr));
        }
    }
    assert_pipelined_without_spills(jobs);
}

#[test]
fn int4_dot_ptx_snapshot() {
    let k = compiled("int4_dot.opc", INT4_DOT, "int4_dot", &[]);
    let (p, _) = render(&k, "sm_80");
    assemble("int4_dot", &p, "sm_80");
    insta::assert_snapshot!("int4_dot_sm80_ptx", p);
}

/// The smallest pipelined int4 GEMM loop: 16×16 output tiles, BK = 32 (half a k64 instruction,
/// so the staged rows carry a zeroed padding chunk), i32 result stored as is.
const INT4_GEMM_LOOP: &str = r#"
kernel int4_gemm_loop(a: i4[M, K], w: i4[N, K], y: out i32[M, N])
grid(cdiv(M, 16), cdiv(N, 16))
{
    let rows = program_id(0) * 16 + arange(16);
    let cols = program_id(1) * 16 + arange(16);
    var acc = zeros([16, 16], i32);
    for k0 in 0..K step 32 {
        let ks = k0 + arange(32);
        acc = dot(load(a[rows, ks]), trans(load(w[cols, ks])), acc);
    }
    store(y[rows, cols], acc);
}
"#;

#[test]
fn int4_gemm_loop_ptx_snapshot() {
    let k = compiled("int4_gemm_loop.opc", INT4_GEMM_LOOP, "int4_gemm_loop", &[]);
    let (p, m) = render(&k, "sm_80");
    assert_int_pipeline(&p, &m, S4, "int4_gemm_loop");
    if let Some(u) = assemble("int4_gemm_loop", &p, "sm_80") {
        assert_eq!(u.spill_stores, 0);
    }
    insta::assert_snapshot!("int4_gemm_loop_sm80_ptx", p);
}
