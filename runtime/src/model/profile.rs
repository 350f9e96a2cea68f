//! Per-operator wall-clock profile of the forward pass, off unless asked for (`OPC_PROFILE=1`
//! in the environment, or `opc bench-model --profile`). Kernels run synchronously on the CPU
//! targets, so timing each driver call attributes the time to the operator that spent it.

use std::collections::BTreeMap;
use std::time::Instant;

/// Accumulated time and call count per operator label.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    enabled: bool,
    ops: BTreeMap<&'static str, (u64, f64)>,
}

impl Profile {
    /// A profile that records when `OPC_PROFILE` is set to anything but `0` or empty.
    pub fn from_env() -> Profile {
        let on = std::env::var("OPC_PROFILE").is_ok_and(|v| !v.is_empty() && v != "0");
        Profile { enabled: on, ops: BTreeMap::new() }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn set_enabled(&mut self, on: bool) {
        self.enabled = on;
    }

    /// Run `f`, charging its wall time to `label` when enabled.
    pub fn time<T>(&mut self, label: &'static str, f: impl FnOnce() -> T) -> T {
        if !self.enabled {
            return f();
        }
        let t0 = Instant::now();
        let r = f();
        let e = self.ops.entry(label).or_default();
        e.0 += 1;
        e.1 += t0.elapsed().as_secs_f64();
        r
    }

    pub fn clear(&mut self) {
        self.ops.clear();
    }

    /// Total seconds recorded.
    pub fn total(&self) -> f64 {
        self.ops.values().map(|v| v.1).sum()
    }

    /// (label, calls, seconds), slowest first.
    pub fn rows(&self) -> Vec<(&'static str, u64, f64)> {
        let mut v: Vec<_> = self.ops.iter().map(|(k, (n, s))| (*k, *n, *s)).collect();
        v.sort_by(|a, b| b.2.total_cmp(&a.2));
        v
    }

    /// A table: one line per operator with calls, total ms, ms per call and share of the total.
    pub fn report(&self) -> String {
        let total = self.total().max(1e-12);
        let mut s = format!("{:<20} {:>8} {:>11} {:>11} {:>7}\n", "op", "calls", "total ms", "ms/call", "share");
        for (k, n, t) in self.rows() {
            s += &format!("{:<20} {:>8} {:>11.2} {:>11.4} {:>6.1}%\n", k, n, t * 1e3, t * 1e3 / n.max(1) as f64, 100.0 * t / total);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_only_when_enabled() {
        let mut p = Profile::default();
        assert_eq!(p.time("a", || 3), 3);
        assert!(p.rows().is_empty());
        p.set_enabled(true);
        p.time("a", || std::thread::sleep(std::time::Duration::from_millis(2)));
        p.time("b", || ());
        p.time("a", || ());
        let rows = p.rows();
        assert_eq!(rows[0].0, "a");
        assert_eq!(rows[0].1, 2);
        assert!(rows[0].2 >= 0.002);
        assert!(p.report().contains("op"));
        p.clear();
        assert_eq!(p.total(), 0.0);
    }
}
