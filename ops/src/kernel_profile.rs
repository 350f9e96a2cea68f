//! Per-kernel wall-clock profile of an [`crate::Ops`]: every launch of a compiled kernel is timed
//! and charged to `file::kernel` and its instance (dtypes, tunables), so a model's operator
//! profile (`opc bench-model --profile`) can be split into the kernels each driver launched.
//! Off unless asked for (`Ops::with_kernel_profile`, or `OPC_PROFILE_KERNELS=1`): the wrapper
//! costs two clock reads per launch.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use opc_codegen::Executable;
use opc_ir::{Arg, ArgRef, Kernel};

/// Launches and seconds per kernel label.
#[derive(Default)]
pub struct KernelProfile {
    stats: Mutex<BTreeMap<String, (u64, f64)>>,
}

impl KernelProfile {
    fn charge(&self, label: &str, secs: f64) {
        let mut s = self.stats.lock().unwrap();
        let e = s.entry(label.to_string()).or_default();
        e.0 += 1;
        e.1 += secs;
    }

    /// Forget what was recorded (e.g. the warm-up).
    pub fn clear(&self) {
        self.stats.lock().unwrap().clear();
    }

    /// (label, launches, seconds), slowest first.
    pub fn rows(&self) -> Vec<(String, u64, f64)> {
        let mut v: Vec<_> = self.stats.lock().unwrap().iter().map(|(k, (n, s))| (k.clone(), *n, *s)).collect();
        v.sort_by(|a, b| b.2.total_cmp(&a.2));
        v
    }

    /// A table: one line per kernel with launches, total ms, ms per launch and share.
    pub fn report(&self) -> String {
        let rows = self.rows();
        let total: f64 = rows.iter().map(|r| r.2).sum();
        let mut out = format!("{:<56} {:>8} {:>11} {:>11} {:>7}\n", "kernel", "launches", "total ms", "ms/launch", "share");
        for (label, n, s) in rows {
            let share = if total > 0.0 { 100.0 * s / total } else { 0.0 };
            out += &format!("{label:<56} {n:>8} {:>11.2} {:>11.4} {share:>6.1}%\n", s * 1e3, s * 1e3 / n.max(1) as f64);
        }
        out
    }
}

/// A compiled kernel whose launches are charged to a [`KernelProfile`].
pub(crate) struct Timed {
    pub inner: Arc<dyn Executable>,
    pub label: String,
    pub profile: Arc<KernelProfile>,
}

impl Executable for Timed {
    fn launch(&self, args: &mut [Arg]) -> opc_codegen::Result<()> {
        let t0 = Instant::now();
        let r = self.inner.launch(args);
        self.profile.charge(&self.label, t0.elapsed().as_secs_f64());
        r
    }

    fn launch_refs(&self, args: &mut [ArgRef<'_>]) -> opc_codegen::Result<()> {
        let t0 = Instant::now();
        let r = self.inner.launch_refs(args);
        self.profile.charge(&self.label, t0.elapsed().as_secs_f64());
        r
    }

    fn kernel(&self) -> &Kernel {
        self.inner.kernel()
    }
}

#[cfg(test)]
mod tests {
    use crate::Ops;
    use opc_ir::{DType, Tensor};

    #[test]
    fn launches_are_charged_to_their_kernel_instance() {
        let ops = Ops::new(opc_codegen::target_by_name("cpu").unwrap()).with_kernel_profile();
        let x = Tensor::from_f32(DType::F32, &[1, 64], &[0.5; 64]);
        let w = Tensor::from_f32(DType::BF16, &[8, 64], &[0.25; 512]);
        for _ in 0..3 {
            let y = crate::model::linear_w(&ops, &x, &w, None).unwrap();
            assert_eq!(y.to_f32_vec(), vec![8.0; 8]);
        }
        let p = ops.kernel_profile().expect("profiling is on");
        let rows = p.rows();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].0, "model::gemv_w<X=f32,W=bf16,BM=1,BN=8,BK=64>");
        assert_eq!(rows[0].1, 3);
        assert!(p.report().contains("model::gemv_w<X=f32,W=bf16,BM=1,BN=8,BK=64>"));
        p.clear();
        assert!(p.rows().is_empty());
        assert!(Ops::new(opc_codegen::target_by_name("cpu").unwrap()).kernel_profile().is_none() || std::env::var_os("OPC_PROFILE_KERNELS").is_some());
    }
}
