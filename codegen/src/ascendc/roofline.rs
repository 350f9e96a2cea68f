//! A roofline estimate of a kernel on a 910B2, from the work it does:
//!
//! ```text
//! t = max( cube_flops / (AIC · f · 16·16·16 · 2),          cube: one 16x16x16 fp16 fractal MAC per cycle
//!          vector_elem_ops / (AIV · f · 256 B / 4 B),       vector: one 256-byte repeat of f32 per cycle
//!          hbm_bytes / HBM_BW )
//! ```
//! with AIC = 24, AIV = 48, f = 1.85 GHz, HBM_BW = 1.6 TB/s. The vector work per loop step is
//! read off the emitted vector program (the element counts of its vector instructions), so the
//! estimate follows what the compiler generated, not a hand count.

use super::lir::{Pipe, Stmt};

/// 910B2 throughput numbers the estimate uses.
pub const AIC: f64 = 24.0;
pub const AIV: f64 = 48.0;
pub const CLOCK_HZ: f64 = 1.85e9;
pub const HBM_BYTES_PER_S: f64 = 1.6e12;

/// Peak fp16 cube FLOP/s (16·16·16 MACs per AIC per cycle).
pub fn cube_peak() -> f64 {
    AIC * CLOCK_HZ * 16.0 * 16.0 * 16.0 * 2.0
}

/// Peak f32 vector element-ops/s (one 256-byte repeat per AIV per cycle).
pub fn vector_peak() -> f64 {
    AIV * CLOCK_HZ * 64.0
}

/// The work of one launch.
#[derive(Clone, Debug, Default)]
pub struct Work {
    pub cube_flops: f64,
    pub vector_elem_ops: f64,
    pub hbm_bytes: f64,
}

/// The estimate and which bound decides it.
#[derive(Clone, Debug)]
pub struct Estimate {
    pub cube_s: f64,
    pub vector_s: f64,
    pub hbm_s: f64,
    pub seconds: f64,
    pub bound: &'static str,
}

pub fn estimate(w: &Work) -> Estimate {
    let cube_s = w.cube_flops / cube_peak();
    let vector_s = w.vector_elem_ops / vector_peak();
    let hbm_s = w.hbm_bytes / HBM_BYTES_PER_S;
    let (seconds, bound) = [(cube_s, "cube"), (vector_s, "vector"), (hbm_s, "HBM")].into_iter().fold((0.0, "cube"), |a, b| if b.0 > a.0 { b } else { a });
    Estimate { cube_s, vector_s, hbm_s, seconds, bound }
}

/// Element-ops of the vector instructions in the body of the first loop of `stmts` that
/// contains a cube hand-off (one loop step of one vector core; `if` arms counted in full, an
/// upper bound). The count is the last argument of each vector call (`Exp(dst, src, 4096);`).
pub fn vector_ops_per_step(stmts: &[Stmt]) -> u64 {
    fn has_handoff(s: &[Stmt]) -> bool {
        s.iter().any(|s| match s {
            Stmt::Instr(i) => i.text.contains("CrossCoreWaitFlag"),
            Stmt::Loop { body, .. } => has_handoff(body),
            Stmt::If { then_, else_, .. } => has_handoff(then_) || has_handoff(else_),
            _ => false,
        })
    }
    fn count(s: &[Stmt]) -> u64 {
        s.iter()
            .map(|s| match s {
                Stmt::Instr(i) if i.pipe == Pipe::V => i.text.lines().filter_map(last_count).sum(),
                Stmt::Loop { body, .. } => count(body),
                Stmt::If { then_, else_, .. } => count(then_) + count(else_),
                _ => 0,
            })
            .sum()
    }
    fn find(s: &[Stmt]) -> Option<u64> {
        s.iter().find_map(|s| match s {
            Stmt::Loop { body, .. } if has_handoff(body) => Some(count(body)),
            Stmt::If { then_, else_, .. } => find(then_).or_else(|| find(else_)),
            _ => None,
        })
    }
    find(stmts).unwrap_or(0)
}

/// `Op(a, b, 4096);` → 4096 (a literal last argument of a call statement).
fn last_count(line: &str) -> Option<u64> {
    let l = line.trim().strip_suffix(");")?;
    let arg = l.rsplit(',').next()?.trim();
    arg.parse().ok()
}
