//! `plan-ascendc-memory`: place the UB `calc` tiles by live range and check every on-chip
//! buffer against the 910B budgets (UB 192 KiB, L1 512 KiB, L0A / L0B 64 KiB, L0C 128 KiB).
//!
//! Tiles whose live ranges (see `liveness.rs`) do not overlap share memory: first fit in order
//! of first use, every offset 256-byte aligned (vector repeats; 32-byte alignment follows). The
//! queues (`TQue`, `num` buffers each: two, double buffering, for the VECIN / VECOUT and the
//! cube's A1 / B1 / A2 / B2 / CO1 queues) sit outside the arena; when a buffer's
//! double-buffered queues do not fit, they drop to one buffer each before the plan is rejected. A plan that does not fit is a
//! compile error naming the buffer, the bytes needed and available, the largest tiles live at
//! the peak with their DSL locations, and the tunables they come from.

use super::lir::{self, Space};
use crate::{CodegenError, Result};

/// Bytes used per on-chip buffer, for the manifest and the closing report.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    /// Peak of the calc arena (UB).
    pub calc: u64,
    pub ub: u64,
    pub l1: u64,
    pub l0a: u64,
    pub l0b: u64,
    pub l0c: u64,
}

/// Place the calc tiles (sets `Buf::off`) and check the budgets.
pub fn plan(k: &mut lir::Kernel, ir: &opc_ir::Kernel) -> Result<Usage> {
    let mut order: Vec<usize> = (0..k.bufs.len()).collect();
    order.sort_by_key(|&i| (k.bufs[i].live.0, std::cmp::Reverse(k.bufs[i].bytes)));
    let mut placed: Vec<usize> = vec![];
    let mut peak = 0u64;
    for i in order {
        let (lo, hi) = k.bufs[i].live;
        let bytes = k.bufs[i].bytes;
        // Busy intervals of live-overlapping tiles, by offset.
        let mut busy: Vec<(u64, u64)> = placed
            .iter()
            .filter(|&&j| {
                let (a, b) = k.bufs[j].live;
                a <= hi && lo <= b
            })
            .map(|&j| (k.bufs[j].off.unwrap_or(0), k.bufs[j].off.unwrap_or(0) + k.bufs[j].bytes))
            .collect();
        busy.sort();
        let mut off = 0u64;
        for (s, e) in busy {
            if off + bytes <= s {
                break;
            }
            off = off.max(lir::round_up(e, 256));
        }
        k.bufs[i].off = Some(off);
        peak = peak.max(off + bytes);
        placed.push(i);
    }
    // 256 bytes after the tiles: the scratch of `ScalarMath` (scalar transcendental functions).
    let tiles_peak = peak;
    let peak = peak + 256;
    let usage = Usage {
        calc: peak,
        ub: peak + k.queue_bytes(Space::Ub),
        l1: k.queue_bytes(Space::L1),
        l0a: k.queue_bytes(Space::L0a),
        l0b: k.queue_bytes(Space::L0b),
        l0c: k.queue_bytes(Space::L0c),
    };
    let mut usage = usage;
    // Double buffering is the first thing to give up: one buffer per queue of a buffer that
    // does not fit with two.
    for (space, used) in [(Space::Ub, &mut usage.ub), (Space::L1, &mut usage.l1), (Space::L0a, &mut usage.l0a), (Space::L0b, &mut usage.l0b), (Space::L0c, &mut usage.l0c)] {
        let fixed = if space == Space::Ub { peak } else { 0 };
        let single: u64 = k.queues.iter().filter(|q| q.pos.space() == space).map(|q| q.bytes).sum();
        if *used > space.capacity() && fixed + single <= space.capacity() {
            for q in k.queues.iter_mut().filter(|q| q.pos.space() == space) {
                q.num = 1;
            }
            *used = fixed + single;
        }
    }
    for (space, used) in [(Space::Ub, usage.ub), (Space::L1, usage.l1), (Space::L0a, usage.l0a), (Space::L0b, usage.l0b), (Space::L0c, usage.l0c)] {
        if used > space.capacity() {
            return Err(over_budget(k, ir, space, used, tiles_peak));
        }
    }
    Ok(usage)
}

fn over_budget(k: &lir::Kernel, ir: &opc_ir::Kernel, space: Space, used: u64, peak: u64) -> CodegenError {
    let what = match space {
        Space::Ub => "UB (calc arena + VECIN/VECOUT queues)",
        Space::L1 => "L1 (A1/B1 queues)",
        Space::L0a => "L0A (A2 queue)",
        Space::L0b => "L0B (B2 queue)",
        Space::L0c => "L0C (CO1 queue)",
    };
    let mut msg =
        format!("the tile configuration does not fit the 910B's {}: buffer {what} needs {used} bytes, {} bytes available", space.name(), space.capacity());
    let at = |loc: Option<opc_ir::Loc>| loc.map(|l| format!(", DSL line {}:{}", l.line, l.col)).unwrap_or_default();
    // DSL locations to point at: the largest tile (cube queues: each queue's), then the
    // tunables that size the tiles.
    let mut notes: Vec<(opc_ir::Loc, String)> = vec![];
    for q in k.queues.iter().filter(|q| q.pos.space() == space) {
        msg.push_str(&format!("\n  {}: {} x {} bytes ({})", q.name, q.num, q.bytes, q.what));
        if let (Some(l), Space::L1 | Space::L0a | Space::L0b | Space::L0c) = (q.loc, space) {
            notes.push((l, format!("sizes {}: {} x {} bytes", q.name, q.num, q.bytes)));
        }
    }
    if space == Space::Ub {
        msg.push_str(&format!("\n  calc arena: {} bytes at the peak; the largest tiles live there:", peak + 256));
        // The position where the arena peaks: the start of the tile that ends highest.
        let top = k.bufs.iter().filter(|b| b.off.map(|o| o + b.bytes) == Some(peak)).map(|b| b.live.0).next().unwrap_or(0);
        let mut live: Vec<&lir::Buf> = k.bufs.iter().filter(|b| b.live.0 <= top && top <= b.live.1).collect();
        live.sort_by_key(|b| std::cmp::Reverse(b.bytes));
        // Point at the largest tile live at the peak (the first one with a location).
        if let Some((l, b)) = live.iter().find_map(|b| b.loc.map(|l| (l, b))) {
            notes.push((l, format!("{} bytes live at the UB peak", b.bytes)));
        }
        for b in live.iter().take(4) {
            msg.push_str(&format!("\n    {} ({} bytes{})", b.what, b.bytes, at(b.loc)));
        }
    }
    let tun: Vec<String> = ir.tunables.iter().map(|t| format!("{} = {} (level {}, one of {:?}{})", t.name, t.value, t.level, t.space, at(t.loc))).collect();
    if !tun.is_empty() {
        msg.push_str(&format!("\n  help: the tile shapes come from the kernel's `tunables` block: {}; choose smaller tiles", tun.join(", ")));
    }
    notes.extend(ir.tunables.iter().filter_map(|t| t.loc.map(|l| (l, format!("tunable {} = {} sizes these tiles", t.name, t.value)))));
    CodegenError::AtSource { kernel: ir.name.clone(), target: "ascendc".into(), reason: msg, notes }
}
