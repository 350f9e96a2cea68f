//! A tuning run end to end on the `cpu` target: every configuration compiled by the real
//! pipeline, checked against the default, timed and recorded; a configuration that computes
//! something else is caught, one the target rejects is recorded with the reason; bad dims and
//! scalars are precise usage errors.

use std::sync::Arc;
use std::time::Duration;

use opc_codegen::{CodegenError, Executable, Target};
use opc_dsl::Instance;
use opc_ir::{Arg, ArgRef, Kernel};
use opc_tune::{Request, Status, TuneError};

const SRC: &str = "
// C = A · B + s, tiled.
kernel mm(a: f32[M, K], b: f32[K, N], c: out f32[M, N], s: f32)
tunables {
    BM: level1 in {8, 16, 32} = 16,
    BN: level1 in {8, 16} = 16,
    BK: level2 in {4, 8, 16} = 8,
}
grid(cdiv(M, BM), cdiv(N, BN))
{
    let rows = program_id(0) * BM + arange(BM);
    let cols = program_id(1) * BN + arange(BN);
    var acc = zeros([BM, BN], f32);
    for k0 in 0..cdiv(K, BK) {
        let ks = k0 * BK + arange(BK);
        acc = dot(load(a[rows, ks]), load(b[ks, cols]), acc);
    }
    store(c[rows, cols], acc + s);
}
";

fn request(dims: &[(&str, i64)], scalars: &[(&str, &str)]) -> Request<'static> {
    Request {
        path: "mm.opc",
        source: SRC,
        kernel: "mm",
        instance: Instance::default(),
        dims: dims.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
        scalars: scalars.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
        max_configs: 100,
        min_time: Duration::from_millis(1),
        seed: 1,
        inputs: vec![],
        extra: vec![],
        cold_bytes: 1 << 20,
    }
}

fn cpu() -> Arc<dyn Target> {
    opc_codegen::target_by_name("cpu").unwrap()
}

#[test]
fn every_configuration_runs_checked_and_timed() {
    let req = request(&[("M", 37), ("K", 29), ("N", 21)], &[("s", "0.5")]);
    let mut seen = 0;
    let report = opc_tune::tune(&*cpu(), &req, &mut |_, i, n| {
        seen += 1;
        assert_eq!((i, n), (seen, 18));
    })
    .unwrap();
    assert_eq!(report.space, 18);
    assert_eq!(report.candidates.len(), 18);
    assert_eq!(report.candidates[0].config, vec![("BM".into(), 16), ("BN".into(), 16), ("BK".into(), 8)]);
    for c in &report.candidates {
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(c.launches >= 4 && c.median_ms.unwrap() >= c.min_ms.unwrap());
    }
    assert_eq!(report.key.dims, "M=37,K=29,N=21");
    assert!(report.key.machine.starts_with("cpu "), "{}", report.key.machine);
    assert_eq!(report.records.len(), 18);
    let best = report.best().unwrap();
    assert_eq!(opc_tune::db::best(&report.records, &report.key).unwrap().tunables, best.config);
    // The final rounds: the default and the first timing's 3 fastest others, timed again
    // together; the best is one of them, and the records say which were.
    let finalists: Vec<&opc_tune::Candidate> = report.candidates.iter().filter(|c| c.confirmed).collect();
    assert_eq!(finalists.len(), 1 + opc_tune::FINALISTS);
    assert!(report.candidates[0].confirmed && best.confirmed);
    assert!(finalists.iter().all(|c| c.launches >= 4 + 2 * opc_tune::FINAL_ROUNDS as u32), "{finalists:?}");
    assert_eq!(report.records.iter().filter(|r| r.confirmed).count(), finalists.len());
}

#[test]
fn pinned_tunables_and_sampling_bound_the_run() {
    let mut req = request(&[("M", 16), ("K", 16), ("N", 16)], &[("s", "0")]);
    req.instance = Instance::default().tunable("BK", 4);
    req.max_configs = 4;
    let report = opc_tune::tune(&*cpu(), &req, &mut |_, _, _| {}).unwrap();
    assert_eq!(report.space, 6);
    assert_eq!(report.candidates.len(), 4);
    assert!(report.candidates.iter().all(|c| c.config[2] == ("BK".to_string(), 4)));
}

/// The `cpu` target, except that configurations with `BK = 4` add 1 to the first output
/// element (a miscompile) and those with `BM = 32` are rejected (an over-budget tile).
struct Faulty(Arc<dyn Target>);

struct OffByOne(Arc<dyn Executable>);

impl Executable for OffByOne {
    fn launch(&self, args: &mut [Arg]) -> opc_codegen::Result<()> {
        self.0.launch(args)?;
        if let Some(Arg::Tensor(t)) = args.get_mut(2) {
            t.set_raw(0, (t.get_f64(0) as f32 + 1.0).to_bits());
        }
        Ok(())
    }
    fn launch_refs(&self, args: &mut [ArgRef<'_>]) -> opc_codegen::Result<()> {
        self.0.launch_refs(args)?;
        if let Some(ArgRef::Out(t)) = args.get_mut(2) {
            t.set_raw(0, (t.get_f64(0) as f32 + 1.0).to_bits());
        }
        Ok(())
    }
    fn kernel(&self) -> &Kernel {
        self.0.kernel()
    }
}

impl Target for Faulty {
    fn name(&self) -> &'static str {
        "faulty"
    }
    fn compile(&self, k: &Kernel) -> opc_codegen::Result<Arc<dyn Executable>> {
        let t = |n: &str| k.tunables.iter().find(|t| t.name == n).unwrap().value;
        if t("BM") == 32 {
            return Err(CodegenError::Unsupported { kernel: k.name.clone(), target: "faulty".into(), reason: "tile c of 32×16 f32 exceeds the budget".into() });
        }
        let exe = self.0.compile(k)?;
        Ok(if t("BK") == 4 { Arc::new(OffByOne(exe)) } else { exe })
    }
}

#[test]
fn wrong_and_rejected_configurations_are_recorded_and_never_chosen() {
    let req = request(&[("M", 20), ("K", 24), ("N", 12)], &[("s", "1")]);
    let report = opc_tune::tune(&Faulty(cpu()), &req, &mut |_, _, _| {}).unwrap();
    for c in &report.candidates {
        let (bm, bk) = (c.config[0].1, c.config[2].1);
        match &c.status {
            Status::Rejected(why) => {
                assert_eq!(bm, 32);
                assert!(why.contains("exceeds the budget"), "{why}");
            }
            Status::Wrong(why) => {
                assert_eq!((bk, bm == 32), (4, false));
                assert!(why.starts_with("`c`: element [0, 0] is"), "{why}");
            }
            Status::Ok => assert!(bk != 4 && bm != 32),
        }
    }
    let statuses: Vec<&str> = report.records.iter().map(|r| r.status.split(':').next().unwrap()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == "rejected").count(), 6);
    assert_eq!(statuses.iter().filter(|s| **s == "wrong").count(), 4);
    assert_eq!(statuses.iter().filter(|s| **s == "ok").count(), 8);
    let best = report.best().unwrap();
    assert!(best.config[2].1 != 4 && best.config[0].1 != 32);
    // Only configurations that computed the right thing reach the final rounds.
    assert!(report.candidates.iter().all(|c| !c.confirmed || c.status == Status::Ok));
    assert_eq!(report.candidates.iter().filter(|c| c.confirmed).count(), 1 + opc_tune::FINALISTS);
}

#[test]
fn a_run_where_nothing_compiles_is_an_error() {
    let mut req = request(&[("M", 8), ("K", 8), ("N", 8)], &[("s", "1")]);
    req.instance = Instance::default().tunable("BM", 32);
    let e = opc_tune::tune(&Faulty(cpu()), &req, &mut |_, _, _| {}).unwrap_err();
    assert!(matches!(e, TuneError::NoConfiguration(_)));
    assert_eq!(
        e.to_string(),
        "error: no configuration of kernel `mm` compiles and launches; the default: kernel `mm` cannot be compiled for target `faulty`: tile c of 32×16 f32 exceeds the budget"
    );
}

#[test]
fn bad_dims_scalars_and_tunables_are_precise_usage_errors() {
    let err = |req: Request| opc_tune::tune(&*cpu(), &req, &mut |_, _, _| {}).unwrap_err().to_string();
    let s = [("s", "1")];
    assert_eq!(err(request(&[("M", 8), ("K", 8)], &s)), "error: kernel `mm` needs a value for every dim it is launched with: --dim N=N");
    assert_eq!(err(request(&[("M", 8), ("K", 8), ("N", 8), ("Q", 1)], &s)), "error: kernel `mm` has no dim `Q` (its dims: M, K, N)");
    assert_eq!(err(request(&[("M", -1), ("K", 8), ("N", 8)], &s)), "error: --dim M=-1: a dim cannot be negative");
    let dims = [("M", 8), ("K", 8), ("N", 8)];
    assert_eq!(err(request(&dims, &[])), "error: kernel `mm` needs a value for every scalar parameter: --scalar s=<f32>");
    assert_eq!(err(request(&dims, &[("s", "yes")])), "error: --scalar s=yes: `s` is an f32 scalar");
    assert_eq!(err(request(&dims, &[("s", "1"), ("t", "1")])), "error: kernel `mm` has no scalar parameter `t` (its scalars: s)");
    let mut req = request(&dims, &s);
    req.instance = Instance::default().tunable("BX", 4);
    let e = err(req);
    assert!(e.starts_with("error: mm.opc:3:8: kernel `mm` has no tunable `BX`"), "{e}");
    let mut req = request(&dims, &s);
    req.instance = Instance::default().tunable("BK", 5);
    let e = err(req);
    assert!(e.contains("mm.opc:") && e.contains("outside its search space"), "{e}");
}

#[test]
fn extra_configurations_run_right_after_the_default_and_given_inputs_replace_random_ones() {
    let mut req = request(&[("M", 12), ("K", 8), ("N", 8)], &[("s", "0")]);
    req.max_configs = 3;
    // Any order, and a left-out tunable takes its default.
    req.extra = vec![vec![("BK".to_string(), 16), ("BM".to_string(), 32)]];
    let extra = vec![("BM".to_string(), 32), ("BN".to_string(), 16), ("BK".to_string(), 16)];
    req.inputs = vec![("a".into(), opc_ir::Tensor::zeros(opc_ir::DType::F32, &[12, 8]))];
    let report = opc_tune::tune(&*cpu(), &req, &mut |_, _, _| {}).unwrap();
    // The sample's 3, plus the extra one unless the sample already held it (measured once).
    let n = report.candidates.len();
    assert!(n == 3 || n == 4, "{n}");
    assert_eq!(report.candidates[1].config, extra);
    assert!(report.candidates[1].confirmed, "an extra configuration is always a finalist");
    let distinct: std::collections::HashSet<_> = report.candidates.iter().map(|c| c.config.clone()).collect();
    assert_eq!(distinct.len(), n);
    assert!(report.candidates.iter().all(|c| c.status == Status::Ok));

    // An extra configuration that is the default is measured once, and the default stays first.
    let mut req = request(&[("M", 12), ("K", 8), ("N", 8)], &[("s", "0")]);
    req.max_configs = 3;
    req.extra = vec![vec![("BN".to_string(), 16)]];
    let report = opc_tune::tune(&*cpu(), &req, &mut |_, _, _| {}).unwrap();
    assert_eq!(report.candidates.len(), 3);
    assert_eq!(report.candidates[0].config, vec![("BM".into(), 16), ("BN".into(), 16), ("BK".into(), 8)]);
    assert!(report.records[0].default && report.records.iter().skip(1).all(|r| !r.default));

    let err = |inputs: Vec<(String, opc_ir::Tensor)>| {
        let mut r = request(&[("M", 12), ("K", 8), ("N", 8)], &[("s", "0")]);
        r.inputs = inputs;
        opc_tune::tune(&*cpu(), &r, &mut |_, _, _| {}).unwrap_err().to_string()
    };
    assert_eq!(
        err(vec![("a".into(), opc_ir::Tensor::zeros(opc_ir::DType::F32, &[8, 12]))]),
        "error: input `a` is an f32 tensor of shape [8, 12]; with these dims the kernel takes an f32 tensor of shape [12, 8]"
    );
    assert_eq!(err(vec![("c".into(), opc_ir::Tensor::zeros(opc_ir::DType::F32, &[12, 8]))]), "error: kernel `mm` has no input tensor `c`");
}
