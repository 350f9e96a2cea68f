//! The `ascendc` target against the interpreter: operator-library kernels compiled by the real
//! pipeline, rendered to AscendC, built with g++ against opc's CPU model of the API and run.
//! Each test builds one kernel (g++ ~2-5 s); the tests run in parallel.

#[path = "ascendc_common.rs"]
mod common;

use common::{check_against_interp, kernel, Rng};
use opc_dsl::Instance;
use opc_ir::{Arg, DType, Tensor};

#[allow(clippy::too_many_arguments)]
fn flash_args(
    r: &mut Rng,
    d: DType,
    b: usize,
    hq: usize,
    hkv: usize,
    sq: usize,
    sk: usize,
    hd: usize,
    causal: bool,
    window: Option<i32>,
    sinks: bool,
) -> Vec<Arg> {
    vec![
        Arg::Tensor(r.tensor_uniform(d, &[b, hq, sq, hd], 1.0)),
        Arg::Tensor(r.tensor_uniform(d, &[b, hkv, sk, hd], 1.0)),
        Arg::Tensor(r.tensor_uniform(d, &[b, hkv, sk, hd], 1.0)),
        Arg::Tensor(r.tensor_uniform(DType::F32, &[hq], 1.0)),
        Arg::Tensor(Tensor::zeros(d, &[b, hq, sq, hd])),
        Arg::Tensor(Tensor::zeros(DType::F32, &[b, hq, sq])),
        Arg::F32(1.0 / (hd as f32).sqrt()),
        Arg::Bool(causal),
        Arg::Bool(window.is_some()),
        Arg::I32(window.unwrap_or(0)),
        Arg::Bool(sinks),
    ]
}

/// FlashAttention f16 as a MIX kernel: Q·Kᵀ and P·V on the cube, online softmax on the vector
/// core; causal with ragged SQ = SK = 100 (tiles above the diagonal skipped, diagonal and
/// ragged tiles masked), GQA 2:1, sinks.
#[test]
fn flash_attention_f16_causal_mix() {
    let k = kernel("flash_attention", "flash_attention", &Instance::default().dtype("T", DType::F16).konst("D", 64).tunable("BM", 64).tunable("BN", 64));
    let mut r = Rng(11);
    let out = check_against_interp(&k, &flash_args(&mut r, DType::F16, 1, 2, 1, 100, 100, 64, true, None, true));
    assert!(out.contains("blockDim=4"), "{out}");
}

/// bf16, sliding window, decode-like SQ < SK, BM 32 / BN 32.
#[test]
fn flash_attention_bf16_window_mix() {
    let k = kernel("flash_attention", "flash_attention", &Instance::default().dtype("T", DType::BF16).konst("D", 32).tunable("BM", 32).tunable("BN", 32));
    let mut r = Rng(5);
    check_against_interp(&k, &flash_args(&mut r, DType::BF16, 2, 2, 2, 40, 90, 32, true, Some(48), false));
}

/// matmul bf16 with ragged M, N, K: cube tiles fed through the workspace, bias on the vector core.
#[test]
fn matmul_bf16_ragged_mix() {
    let k = kernel("blocks", "matmul", &Instance::default().dtype("T", DType::BF16).tunable("BM", 32).tunable("BN", 32).tunable("BK", 32));
    let mut r = Rng(7);
    let (m, n, kk) = (50, 70, 90);
    let args = vec![
        Arg::Tensor(r.tensor_uniform(DType::BF16, &[m, kk], 1.0)),
        Arg::Tensor(r.tensor_uniform(DType::BF16, &[kk, n], 1.0)),
        Arg::Tensor(r.tensor_uniform(DType::F32, &[n], 1.0)),
        Arg::Tensor(Tensor::zeros(DType::BF16, &[m, n])),
        Arg::Bool(true),
    ];
    check_against_interp(&k, &args);
}

/// RMSNorm bf16 (AIV only): two sweeps over H with a row reduction.
#[test]
fn rmsnorm_bf16_aiv() {
    let k = kernel("blocks", "rmsnorm", &Instance::default().dtype("T", DType::BF16).dtype("O", DType::BF16).tunable("BT", 4).tunable("BH", 64));
    let mut r = Rng(3);
    let (nt, h) = (10, 200);
    let args = vec![
        Arg::Tensor(r.tensor_uniform(DType::BF16, &[nt, h], 2.0)),
        Arg::Tensor(r.tensor_uniform(DType::BF16, &[h], 1.0)),
        Arg::Tensor(Tensor::zeros(DType::BF16, &[nt, h])),
        Arg::F32(1e-6),
    ];
    check_against_interp(&k, &args);
}

/// KL judge rows (AIV only): max / argmax / exp sums per vocab tile, scalar log through the
/// vector unit.
#[test]
fn kl_rows_aiv() {
    let k = kernel("kl_judge", "kl_rows", &Instance::default().tunable("BV", 64));
    let mut r = Rng(9);
    let (g, v) = (3, 150);
    let args = vec![
        Arg::Tensor(r.tensor_uniform(DType::F32, &[g + 1, v], 3.0)),
        Arg::Tensor(r.tensor_uniform(DType::F32, &[g, v], 3.0)),
        Arg::Tensor(Tensor::from_i32(DType::I32, &[g], &[5, 17, 99])),
        Arg::Tensor(Tensor::zeros(DType::F32, &[g])),
        Arg::Tensor(Tensor::zeros(DType::U8, &[g])),
        Arg::Tensor(Tensor::zeros(DType::I32, &[g + 1])),
        Arg::F32(0.5),
    ];
    check_against_interp(&k, &args);
}

/// MXFP4 GEMM (bf16 activations): E2M1 codes and E8M0 scales decoded on the vector core, the
/// GEMM on the cube.
#[test]
fn mxfp4_gemm_bf16_mix() {
    let k = kernel("mxfp4", "mxfp4_gemm", &Instance::default().dtype("T", DType::BF16).tunable("BM", 16).tunable("BN", 32).tunable("BK", 64));
    // The decode runs on the vector cores, which hand the decoded B tile to the cube through the
    // workspace's B slot; the product is the cube's.
    let c = opc_codegen::ascendc::compile(&k).expect("compile");
    let text = &c.sources.kernel_cpp;
    let (vector, cube) = text.split_once("inline void CubeProgram(").expect("a cube program");
    let vector = vector.split_once("inline void Program(").expect("a vector program").1;
    assert!(c.mix && c.cube_sites == 1, "MIX kernel with one cube site");
    assert!(vector.contains("+ kWsB)") && cube.contains("+ kWsB)") && cube.contains("Mmad("), "decoded B through the workspace");
    let mut r = Rng(21);
    let (m, n, kk) = (20, 40, 128);
    let mut scales = r.tensor_raw(DType::E8M0, &[n, kk / 32]);
    for b in scales.data.iter_mut() {
        *b = 120 + *b % 12;
    }
    let args = vec![
        Arg::Tensor(r.tensor_uniform(DType::BF16, &[m, kk], 1.0)),
        Arg::Tensor(r.tensor_raw(DType::E2M1, &[n, kk])),
        Arg::Tensor(scales),
        Arg::Tensor(Tensor::zeros(DType::F32, &[m, n])),
    ];
    check_against_interp(&k, &args);
}

/// Partial column sums of 24 programs on 24 AIVs combined in GM by `SetAtomicAdd` (the
/// model's atomics); M ragged.
#[test]
fn atomic_add_combines_across_cores() {
    let k = common::kernel_src(common::COL_SUM, "col_sum", &Instance::default());
    let text = opc_codegen::ascendc::compile(&k).expect("compile").sources.kernel_cpp;
    assert!(text.contains("SetAtomicAdd<float>();") && text.contains("SetAtomicNone();"), "{text}");
    let mut r = Rng(41);
    let (m, n) = (190, 64);
    let out = check_against_interp(&k, &[Arg::Tensor(r.tensor_uniform(DType::F32, &[m, n], 1.0)), Arg::Tensor(Tensor::zeros(DType::F32, &[n]))]);
    assert!(out.contains("blockDim=24"), "{out}");
}

/// Split-KV decode (flash-decoding) f16: pack-GQA rows, NS = 2 splits; the KV loop bounds come
/// from a reduction over the packed rows' positions, which the cube program evaluates itself.
#[test]
fn flash_decode_split_f16_mix() {
    let k = kernel("flash_attention", "flash_decode_split", &Instance::default().dtype("T", DType::F16).konst("D", 32).tunable("BM", 16).tunable("BN", 32));
    let mut r = Rng(13);
    let (b, hkv, g, sq, sk, ns, d) = (1, 2, 2, 3, 70, 2, 32);
    let m = g * sq;
    let args = vec![
        Arg::Tensor(r.tensor_uniform(DType::F16, &[b, hkv, m, d], 1.0)),
        Arg::Tensor(r.tensor_uniform(DType::F16, &[b, hkv, sk, d], 1.0)),
        Arg::Tensor(r.tensor_uniform(DType::F16, &[b, hkv, sk, d], 1.0)),
        Arg::Tensor(Tensor::zeros(DType::F32, &[ns, b, hkv, m, d])),
        Arg::Tensor(Tensor::zeros(DType::F32, &[ns, b, hkv, m])),
        Arg::I32(sq as i32),
        Arg::F32(0.17),
        Arg::Bool(true),
        Arg::Bool(false),
        Arg::I32(0),
    ];
    check_against_interp(&k, &args);
}

/// Grouped-expert GEMM (MoE down projection, bf16): per-expert M slices over one weight tensor,
/// the slice bounds loaded from GM by both the vector and the cube program; an empty expert.
#[test]
fn moe_down_bf16_grouped_mix() {
    let k = kernel("grouped_gemm", "moe_down", &Instance::default().dtype("T", DType::BF16).tunable("BM", 16).tunable("BN", 32).tunable("BK", 32));
    let mut r = Rng(17);
    let (p, i, h, e) = (17, 64, 40, 3);
    let pairs: Vec<i32> = (0..p as i32).map(|x| (x * 7) % p as i32).collect();
    let args = vec![
        Arg::Tensor(r.tensor_uniform(DType::BF16, &[p, i], 1.0)),
        Arg::Tensor(r.tensor_uniform(DType::BF16, &[e, h, i], 1.0)),
        Arg::Tensor(Tensor::from_i32(DType::I32, &[p], &pairs)),
        Arg::Tensor(Tensor::from_i32(DType::I32, &[e], &[0, 5, 5])),
        Arg::Tensor(Tensor::from_i32(DType::I32, &[e], &[5, 0, 12])),
        Arg::Tensor(r.tensor_uniform(DType::F32, &[p], 1.0)),
        Arg::Tensor(Tensor::zeros(DType::F32, &[p, h])),
    ];
    check_against_interp(&k, &args);
}

/// FlashAttention f32: the products run on the vector unit (Axpy), an AIV-only kernel.
#[test]
fn flash_attention_f32_vector_dots() {
    let k = kernel("flash_attention", "flash_attention", &Instance::default().dtype("T", DType::F32).konst("D", 16).tunable("BM", 16).tunable("BN", 16));
    let mut r = Rng(19);
    check_against_interp(&k, &flash_args(&mut r, DType::F32, 1, 1, 1, 20, 37, 16, true, None, false));
}

/// The model's instruction counts (`model-count API SIZE CALLS` lines of a counted run).
fn model_counts(out: &str) -> std::collections::HashMap<(String, u64), u64> {
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.strip_prefix("model-count ")?.split(' ').collect();
            Some(((f[0].to_string(), f[1].parse().ok()?), f[2].parse().ok()?))
        })
        .collect()
}

/// FlashAttention's tiling mask, counted by the CPU model: f16, causal, SQ = SK = 320, 8 heads,
/// BM = BN = 64 (40 level-1 programs on 24 AI Core groups, so 16 groups run the diagonal tiles
/// of two different query blocks; 32 query rows per AIV).
/// - Tiles above the diagonal are skipped: the cube runs 2 Mmads per KV step and 1 + ... + 5
///   steps per head, not 5 · 5.
/// - Tiles below the diagonal take no mask: each AIV `Select`s with a mask once per program
///   (its diagonal tile), not once per KV step.
/// - The diagonal mask is small and built once per AIV: the `Compare` chain that builds it
///   runs 48 times (once per AIV of the 24 groups) for 80 masked tiles, into a cache of
///   [32, 64] bits per slot; no `Compare` or `Select` ever covers more than one 32 × 64 tile.
///
/// Without `causal` nothing is masked and all 16 KV steps per head run.
#[test]
fn flash_attention_causal_mask_builds_counted() {
    let (bm, bn, d, h, s) = (64u64, 64u64, 32usize, 8usize, 320u64);
    let k = kernel("flash_attention", "flash_attention", &Instance::default().dtype("T", DType::F16).konst("D", d as i64).tunable("BM", bm as i64).tunable("BN", bn as i64));
    let c = opc_codegen::ascendc::compile(&k).expect("compile");
    let rows = c.program.split_rows.expect("rows split over the two AIVs") as u64;
    let tile = rows * bn;
    // The mask cache: a few [rows, BN] bit masks, independent of S.
    let caches: Vec<_> = c.program.bufs.iter().filter(|b| b.what.starts_with("tiling-mask cache")).collect();
    assert_eq!(caches.len(), 1, "one masked select site");
    assert!(caches[0].bytes <= 4 * tile / 8 && caches[0].what.contains(&format!("[{rows}, {bn}] bits")), "{}", caches[0].what);
    // The Compares of one mask build: those inside the `if (maskSlot < 0)` block.
    let text = &c.sources.kernel_cpp;
    let mut lines = text.lines().skip_while(|l| !l.contains(".OpcInsert(")).skip(1);
    let (mut depth, mut per_build) = (0i32, 0u64);
    for l in lines.by_ref() {
        depth += l.matches('{').count() as i32 - l.matches('}').count() as i32;
        if depth < 0 {
            break;
        }
        per_build += l.trim_start().starts_with("Compare(") as u64;
    }
    assert!(per_build > 0, "no Compare in the mask build:\n{text}");

    let mut exe = common::build(&k);
    exe.counts = true;
    let mut r = Rng(37);
    let programs = h as u64 * s / bm;
    let groups = programs.min(opc_codegen::ascendc::AIC_CORES as u64);
    for causal in [true, false] {
        let args = flash_args(&mut r, DType::F16, 1, h, h, s as usize, s as usize, d, causal, None, false);
        let n = model_counts(&common::check_run(&exe, &k, &args));
        let get = |api: &str, size: u64| n.get(&(api.to_string(), size)).copied().unwrap_or(0);
        let per_head = s / bm;
        let steps = h as u64 * if causal { per_head * (per_head + 1) / 2 } else { per_head * per_head };
        assert_eq!(get("Mmad", bm * bn * d as u64), 2 * steps, "causal {causal}: cube tiles {n:?}");
        let masked = if causal { 2 * programs } else { 0 };
        assert_eq!(get("Select", tile), masked, "causal {causal}: masked tiles {n:?}");
        let builds = if causal { 2 * groups } else { 0 };
        assert_eq!(get("Compare", tile), builds * per_build, "causal {causal}: mask builds ({per_build} Compares each) {n:?}");
        assert!(n.keys().all(|(api, size)| api == "Mmad" || *size <= tile), "causal {causal}: an instruction over more than one tile: {n:?}");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: std::env::var("OPC_ASCENDC_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(6), failure_persistence: None, ..Default::default() })]
    /// One f16 FlashAttention build, random shapes and masks (ragged SQ / SK, GQA, causal,
    /// window, sinks) against the interpreter.
    #[test]
    fn flash_attention_random_shapes(
        seed in proptest::prelude::any::<u64>(),
        b in 1usize..3, g in 1usize..3, hkv in 1usize..3, sq in 1usize..90, sk in 1usize..110,
        causal in proptest::prelude::any::<bool>(), window in proptest::option::of(1i32..80), sinks in proptest::prelude::any::<bool>(),
    ) {
        static EXE: std::sync::OnceLock<(opc_ir::Kernel, opc_codegen::ascendc::sim::SimExe)> = std::sync::OnceLock::new();
        let (k, exe) = EXE.get_or_init(|| {
            let k = kernel("flash_attention", "flash_attention", &Instance::default().dtype("T", DType::F16).konst("D", 32).tunable("BM", 32).tunable("BN", 32));
            let exe = common::build(&k);
            (k, exe)
        });
        let mut r = Rng(seed);
        common::check_run(exe, k, &flash_args(&mut r, DType::F16, b, g * hkv, hkv, sq, sk, 32, causal, window, sinks));
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: std::env::var("OPC_ASCENDC_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(4), failure_persistence: None, ..Default::default() })]
    /// One bf16 matmul build (MIX, rows split over the two AIVs), random ragged M, N, K and bias.
    #[test]
    fn matmul_random_shapes(seed in proptest::prelude::any::<u64>(), m in 1usize..80, n in 1usize..80, kk in 1usize..100, bias in proptest::prelude::any::<bool>()) {
        static EXE: std::sync::OnceLock<(opc_ir::Kernel, opc_codegen::ascendc::sim::SimExe)> = std::sync::OnceLock::new();
        let (k, exe) = EXE.get_or_init(|| {
            let k = kernel("blocks", "matmul", &Instance::default().dtype("T", DType::BF16).tunable("BM", 32).tunable("BN", 32).tunable("BK", 32));
            let exe = common::build(&k);
            (k, exe)
        });
        let mut r = Rng(seed);
        let args = vec![
            Arg::Tensor(r.tensor_uniform(DType::BF16, &[m, kk], 1.0)),
            Arg::Tensor(r.tensor_uniform(DType::BF16, &[kk, n], 1.0)),
            Arg::Tensor(r.tensor_uniform(DType::F32, &[n], 1.0)),
            Arg::Tensor(Tensor::zeros(DType::BF16, &[m, n])),
            Arg::Bool(bias),
        ];
        common::check_run(exe, k, &args);
    }
}

/// The configuration of the S = 4096 estimate (f16, D = 128, BM = BN = 64: the largest tiles
/// that fit UB), on a shorter causal sequence with two heads.
#[test]
fn flash_attention_f16_d128_report_config() {
    let k = kernel("flash_attention", "flash_attention", &Instance::default().dtype("T", DType::F16).konst("D", 128).tunable("BM", 64).tunable("BN", 64));
    let c = opc_codegen::ascendc::compile(&k).expect("fits");
    assert!(c.mix && c.usage.ub <= 192 * 1024 && c.cube_sites == 2);
    let mut r = Rng(23);
    check_against_interp(&k, &flash_args(&mut r, DType::F16, 1, 2, 1, 192, 192, 128, true, None, false));
}

/// A masked load (`mask: cols < N`) becomes a clipped `DataCopyPad` box; ragged N.
#[test]
fn masked_row_softmax_aiv() {
    let src = r#"
kernel row_softmax(x: f32[M, N], y: out f32[M, N])
tunables { BM: level1 in {8} = 8, BN: level2 in {64} = 64 }
grid(cdiv(M, BM))
{
    let rows = program_id(0) * BM + arange(BM);
    let cols = arange(BN);
    let v = load(x[rows, cols], mask: cols[None, :] < N, other: -inf);
    let e = exp(v - max(v, 1)[:, None]);
    store(y[rows, cols], e / sum(e, 1)[:, None], mask: cols[None, :] < N);
}
"#;
    let k = common::kernel_src(src, "row_softmax", &Instance::default());
    let text = opc_codegen::ascendc::compile(&k).expect("compile").sources.kernel_cpp;
    assert!(!text.contains("element-wise gather") && text.contains("DataCopyPad(yGm"), "the masked accesses must be boxes:\n{text}");
    let mut r = Rng(29);
    check_against_interp(&k, &[Arg::Tensor(r.tensor_uniform(DType::F32, &[13, 45], 3.0)), Arg::Tensor(Tensor::zeros(DType::F32, &[13, 45]))]);
}

/// RoPE (with YaRN): the cos/sin table's `pow`, `sin` and `cos` through the advanced math API
/// (`Power`, `Sin`, `Cos`), its frequencies held in f32, bf16 and f16, then the rotation of a
/// head range, f32 and bf16.
#[test]
fn rope_sin_cos_pow_aiv() {
    let (nt, nx, half) = (5, 4, 32);
    let mut r = Rng(31);
    let pos: Vec<i32> = (0..nt as i32).map(|i| i * 37 + 3).collect();
    for (yarn, freq) in [(false, DType::F32), (true, DType::F32), (false, DType::BF16), (true, DType::F16)] {
        let k = kernel("blocks", "rope_table", &Instance::default().dtype("F", freq).konst("HALF", half as i64));
        let args = vec![
            Arg::Tensor(Tensor::from_i32(DType::I32, &[nt], &pos)),
            Arg::Tensor(Tensor::zeros(DType::F32, &[nt, 2, half])),
            Arg::F32(10000.0),
            Arg::Bool(yarn),
            Arg::F32(4.0),
            Arg::F32(32.0),
            Arg::F32(1.0),
            Arg::F32(4096.0),
            Arg::Bool(false),
        ];
        check_against_interp(&k, &args);
    }
    for d in [DType::F32, DType::BF16] {
        let k = kernel("blocks", "rope", &Instance::default().dtype("T", d).konst("HALF", half as i64));
        let args = vec![
            Arg::Tensor(r.tensor_uniform(d, &[nt, nx, 2 * half], 2.0)),
            Arg::Tensor(r.tensor_uniform(DType::F32, &[nt, 2, half], 1.0)),
            Arg::Tensor(Tensor::zeros(d, &[nt, 3, 2 * half])),
            Arg::I32(1),
        ];
        check_against_interp(&k, &args);
    }
}
