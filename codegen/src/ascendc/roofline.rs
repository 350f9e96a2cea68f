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
/// upper bound). The count is the last numeric argument of each vector call
/// (`Exp(dst, src, 4096);`, `ReduceMax(dst, src, tmp, 64, false);`), times the trip counts of
/// the loops around it with literal bounds (`for (int32_t r = 0; r < 32; ++r)`, as LIR loops or
/// in an instruction's text); a loop with a run-time bound counts once.
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
                Stmt::Instr(i) if i.pipe == Pipe::V => text_count(&i.text),
                Stmt::Loop { head, body } => trips(head) * count(body),
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

/// Element-ops of an instruction's text: each call line's count times its enclosing loops'.
fn text_count(text: &str) -> u64 {
    let mut loops: Vec<u64> = vec![];
    let mut total = 0;
    for line in text.lines().map(str::trim) {
        if let Some(head) = line.strip_prefix("for (").and_then(|l| l.strip_suffix(") {")) {
            loops.push(trips(head));
        } else if line == "}" {
            loops.pop();
        } else if let Some(n) = last_count(line) {
            total += n * loops.iter().product::<u64>();
        }
    }
    total
}

/// Trip count of a loop head `int32_t r = 0; r < 32; ++r` (or `r += 8`) with literal bounds;
/// 1 when a bound is not a literal.
fn trips(head: &str) -> u64 {
    let parts: Vec<&str> = head.split(';').map(str::trim).collect();
    let [init, cond, step] = parts[..] else { return 1 };
    let lit = |s: &str| s.trim().parse::<u64>().ok();
    let start = init.rsplit('=').next().and_then(lit);
    let end = cond.split_once('<').and_then(|(_, e)| lit(e));
    let by = if step.starts_with("++") { Some(1) } else { step.split_once("+=").and_then(|(_, e)| lit(e)) };
    match (start, end, by) {
        (Some(a), Some(b), Some(s)) if s > 0 => b.saturating_sub(a).div_ceil(s),
        _ => 1,
    }
}

/// `Op(a, b, 4096);` → 4096, `ReduceMax(a, b, t, 64, false);` → 64: the last integer-literal
/// argument among the last two of a call statement.
fn last_count(line: &str) -> Option<u64> {
    let l = line.trim().strip_suffix(");")?;
    let mut args = l.rsplit(',').map(str::trim);
    let last = args.next()?;
    match last {
        "false" | "true" => args.next()?.parse().ok(),
        _ => last.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_literal_loops_and_skip_flags() {
        assert_eq!(last_count("ReduceMax(b20[r * 8], b4[r * 64], b21, 64, false);"), Some(64));
        assert_eq!(last_count("Exp(b28, b28, 2048);"), Some(2048));
        assert_eq!(trips("int32_t r = 0; r < 32; ++r"), 32);
        assert_eq!(trips("int32_t c = 0; c < 100; c += 32"), 4);
        assert_eq!(trips("int64_t i = s74; i < r42; i += s15"), 1);
        let t = "for (int32_t r = 0; r < 32; ++r) {\n    Adds(b[r * 64], a[r * 64], x, 64);\n}\nMuls(b, b, y, 2048);";
        assert_eq!(text_count(t), 32 * 64 + 2048);
    }
}
