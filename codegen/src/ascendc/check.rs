//! `check-ascendc`: static checks of a planned AscendC program, run on every build.
//!
//! 1. **Alignment**: every calc tile and queue buffer starts and ends on a 32-byte boundary.
//! 2. **DataCopy granularity**: a `DataCopy` of a static element count moves a multiple of
//!    32 bytes (the hardware silently rounds down otherwise); anything else must be
//!    `DataCopyPad` or a count in whole 32-byte blocks.
//! 3. **Queue balance**: in every block (function body, loop body, `if` arm) each queue's
//!    `AllocTensor`s are freed and its `EnQue`s dequeued; no `DeQue` of an empty queue, no
//!    `FreeTensor` without a tensor, never more tensors out than the queue has buffers.
//! 4. **Pipe synchronization**: an instruction on one pipe that reads (or overwrites) memory
//!    another pipe wrote (or read) must be ordered after it by a queue hand-off
//!    (`EnQue`/`DeQue`, `FreeTensor`/`AllocTensor`), a `SetFlag`/`WaitFlag` pair or a
//!    `PipeBarrier<PIPE_ALL>`. The check simulates the program with one vector clock per pipe;
//!    loop bodies run twice (hazards across iterations), `if` arms are joined conservatively.
//!    Calc tiles are compared by address range, so two tiles sharing memory are one resource.
//!    Scalar reads (`GetValue`) complete before the scalar unit issues anything else.
//!
//! Cross-core flags order GM between cores; they are checked at run time by the CPU model.

use std::collections::HashMap;

use super::lir::{Buf, CopyLen, Effect, Instr, Kernel, Pipe, Pos, QueueId, Res, Stmt};
use crate::{CodegenError, Result};

/// Run every check on one program (`name`: which one, for messages).
pub fn check(k: &Kernel, ir: &opc_ir::Kernel, name: &str, stmts: &[Stmt]) -> Result<()> {
    let err = |m: String| CodegenError::Unsupported { kernel: ir.name.clone(), target: "ascendc".into(), reason: m };
    alignment(k).map_err(err)?;
    granularity(stmts).map_err(err)?;
    queue_balance(k, name, stmts).map_err(err)?;
    let mut st = SyncState::default();
    sync_block(k, stmts, &mut st).map_err(err)?;
    Ok(())
}

fn at(loc: Option<opc_ir::Loc>) -> String {
    loc.map(|l| format!(" (DSL {}:{})", l.line, l.col)).unwrap_or_default()
}

fn first_line(s: &str) -> &str {
    s.lines().find(|l| !l.trim().is_empty() && !l.trim_start().starts_with("for (")).unwrap_or(s).trim()
}

pub fn alignment(k: &Kernel) -> std::result::Result<(), String> {
    for b in &k.bufs {
        let off = b.off.unwrap_or(0);
        if off % 32 != 0 || b.bytes % 32 != 0 {
            return Err(format!("alignment: UB tile {} ({}) at offset {off} with {} bytes is not 32-byte aligned", b.name, b.what, b.bytes));
        }
    }
    for q in &k.queues {
        if q.bytes % 32 != 0 {
            return Err(format!("alignment: queue {} buffers of {} bytes are not 32-byte aligned", q.name, q.bytes));
        }
    }
    Ok(())
}

fn walk<'a>(stmts: &'a [Stmt], f: &mut dyn FnMut(&'a Instr)) {
    for s in stmts {
        match s {
            Stmt::Instr(i) => f(i),
            Stmt::Loop { body, .. } => walk(body, f),
            Stmt::If { then_, else_, .. } => {
                walk(then_, f);
                walk(else_, f);
            }
            _ => {}
        }
    }
}

pub fn granularity(stmts: &[Stmt]) -> std::result::Result<(), String> {
    let mut res = Ok(());
    walk(stmts, &mut |i| {
        if let Effect::Copy(CopyLen::Elems { count, elem_bytes }) = &i.effect {
            let bytes = count * elem_bytes;
            if bytes % 32 != 0 && res.is_ok() {
                res = Err(format!(
                    "DataCopy granularity: `{}` moves {count} x {elem_bytes} = {bytes} bytes, not a multiple of 32{}; use DataCopyPad for ragged lengths",
                    first_line(&i.text),
                    at(i.loc)
                ));
            }
        }
    });
    res
}

pub fn queue_balance(k: &Kernel, name: &str, stmts: &[Stmt]) -> std::result::Result<(), String> {
    fn block(k: &Kernel, name: &str, stmts: &[Stmt], what: &str) -> std::result::Result<(), String> {
        let n = k.queues.len();
        let (mut out, mut queued) = (vec![0i64; n], vec![0i64; n]);
        for s in stmts {
            match s {
                Stmt::Instr(i) => {
                    let qn = |q: QueueId| k.queues[q].name.clone();
                    match i.effect {
                        Effect::AllocTensor(q) => {
                            out[q] += 1;
                            if out[q] > k.queues[q].num as i64 {
                                return Err(format!(
                                    "queue balance: {}.AllocTensor in {name} ({what}) holds more tensors than the queue's {} buffers{}",
                                    qn(q),
                                    k.queues[q].num,
                                    at(i.loc)
                                ));
                            }
                        }
                        Effect::FreeTensor(q) => {
                            out[q] -= 1;
                            if out[q] < 0 {
                                return Err(format!("queue balance: {}.FreeTensor in {name} ({what}) without an AllocTensor{}", qn(q), at(i.loc)));
                            }
                        }
                        Effect::EnQue(q) => queued[q] += 1,
                        Effect::DeQue(q) => {
                            queued[q] -= 1;
                            if queued[q] < 0 {
                                return Err(format!("queue balance: {}.DeQue in {name} ({what}) without an EnQue{}", qn(q), at(i.loc)));
                            }
                        }
                        _ => {}
                    }
                }
                Stmt::Loop { body, .. } => block(k, name, body, "a loop body")?,
                Stmt::If { then_, else_, .. } => {
                    block(k, name, then_, "an if arm")?;
                    block(k, name, else_, "an else arm")?;
                }
                _ => {}
            }
        }
        for q in 0..n {
            if out[q] != 0 {
                return Err(format!("queue balance: {}.AllocTensor in {name} ({what}) has no matching FreeTensor", k.queues[q].name));
            }
            if queued[q] != 0 {
                return Err(format!("queue balance: {}.EnQue in {name} ({what}) has no matching DeQue", k.queues[q].name));
            }
        }
        Ok(())
    }
    block(k, name, stmts, "the program body")
}

const NP: usize = 7;
type Clock = [u64; NP];

/// The last access of one resource by one pipe.
#[derive(Clone, Debug)]
struct Access {
    pipe: Pipe,
    clock: u64,
    /// Pipes already ordered after this access on the path that made it (set when `if` arms
    /// join: the arm's own flags and barriers cover its own accesses).
    synced: u32,
    text: String,
    loc: Option<opc_ir::Loc>,
}

#[derive(Clone, Debug, Default)]
struct SyncState {
    clock: u64,
    /// `vc[p][q]`: the latest op of pipe q that pipe p is ordered after.
    vc: [Clock; NP],
    writes: HashMap<Res, Access>,
    reads: HashMap<(Res, usize), Access>,
    flags: HashMap<(usize, usize), Vec<Clock>>,
    fwd: HashMap<QueueId, Vec<Clock>>,
    back: HashMap<QueueId, Vec<Clock>>,
}

/// Record, on every access an arm made, which pipes that arm already ordered after it.
fn mark_synced(st: &mut SyncState, fork: u64) {
    let vc = st.vc;
    let mark = |acc: &mut Access| {
        if acc.clock > fork {
            for (q, row) in vc.iter().enumerate() {
                if row[acc.pipe.index()] >= acc.clock {
                    acc.synced |= 1 << q;
                }
            }
        }
    };
    st.writes.values_mut().for_each(mark);
    st.reads.values_mut().for_each(mark);
}

fn merge_lists<K: std::hash::Hash + Eq + Copy>(into: &mut HashMap<K, Vec<Clock>>, from: &HashMap<K, Vec<Clock>>) {
    for (k, list) in from {
        let dst = into.entry(*k).or_default();
        for (i, c) in list.iter().enumerate() {
            match dst.get_mut(i) {
                Some(d) => join(d, c),
                None => dst.push(*c),
            }
        }
    }
}

fn join(a: &mut Clock, b: &Clock) {
    for i in 0..NP {
        a[i] = a[i].max(b[i]);
    }
}

/// Whether two resources may share memory.
fn overlaps(bufs: &[Buf], a: Res, b: Res) -> bool {
    match (a, b) {
        (Res::Buf(x), Res::Buf(y)) => {
            let (bx, by) = (&bufs[x], &bufs[y]);
            let (ox, oy) = (bx.off.unwrap_or(0), by.off.unwrap_or(0));
            ox < oy + by.bytes && oy < ox + bx.bytes
        }
        _ => a == b,
    }
}

fn describe(k: &Kernel, r: Res) -> String {
    match r {
        Res::Buf(b) => format!("UB tile {} ({})", k.bufs[b].name, k.bufs[b].what),
        Res::Queue(q) => format!("{} tensor", k.queues[q].name),
        Res::Gm => "global memory".into(),
    }
}

fn sync_block(k: &Kernel, stmts: &[Stmt], st: &mut SyncState) -> std::result::Result<(), String> {
    for s in stmts {
        match s {
            Stmt::Instr(i) => sync_instr(k, i, st)?,
            Stmt::Loop { body, .. } => {
                sync_block(k, body, st)?;
                sync_block(k, body, st)?;
            }
            Stmt::If { then_, else_, .. } => {
                let fork = st.clock;
                let mut a = st.clone();
                sync_block(k, then_, &mut a)?;
                let mut b = st.clone();
                b.clock = a.clock;
                sync_block(k, else_, &mut b)?;
                mark_synced(&mut a, fork);
                mark_synced(&mut b, fork);
                // Join: the least-ordered clocks, every access either arm made.
                let mut m = b.clone();
                for p in 0..NP {
                    for q in 0..NP {
                        m.vc[p][q] = a.vc[p][q].min(b.vc[p][q]);
                    }
                }
                for (r, acc) in a.writes {
                    m.writes.entry(r).or_insert(acc);
                }
                for (r, acc) in a.reads {
                    m.reads.entry(r).or_insert(acc);
                }
                // Pending hand-offs: an arm's FreeTensor / EnQue / SetFlag is what a later
                // AllocTensor / DeQue / WaitFlag waits for on that path.
                merge_lists(&mut m.fwd, &a.fwd);
                merge_lists(&mut m.back, &a.back);
                merge_lists(&mut m.flags, &a.flags);
                *st = m;
            }
            _ => {}
        }
    }
    Ok(())
}

fn sync_instr(k: &Kernel, i: &Instr, st: &mut SyncState) -> std::result::Result<(), String> {
    let p = i.pipe.index();
    st.clock += 1;
    let now = st.clock;
    st.vc[p][p] = now;
    acquire(k, i, st, now)?;
    let hazard = |kind: &str, r: Res, prev: &Access| -> String {
        format!(
            "pipe synchronization: {kind} on {}: `{}` ({}){} {} `{}` ({}){} with no queue hand-off, flag pair or barrier between them",
            describe(k, r),
            first_line(&i.text),
            i.pipe.pipe_name(),
            at(i.loc),
            if kind == "read-after-write" { "reads what" } else { "overwrites what" },
            first_line(&prev.text),
            prev.pipe.pipe_name(),
            at(prev.loc)
        )
    };
    for &r in &i.reads {
        if r == Res::Gm {
            continue;
        }
        for (w, acc) in st.writes.iter() {
            if overlaps(&k.bufs, *w, r) && acc.pipe != i.pipe && (acc.synced >> p) & 1 == 0 && st.vc[p][acc.pipe.index()] < acc.clock {
                return Err(hazard("read-after-write", r, acc));
            }
        }
    }
    for &r in &i.writes {
        if r == Res::Gm {
            continue;
        }
        for ((rr, _), acc) in st.reads.iter() {
            if overlaps(&k.bufs, *rr, r) && acc.pipe != i.pipe && (acc.synced >> p) & 1 == 0 && st.vc[p][acc.pipe.index()] < acc.clock {
                return Err(hazard("write-after-read", r, acc));
            }
        }
        for (w, acc) in st.writes.iter() {
            if overlaps(&k.bufs, *w, r) && acc.pipe != i.pipe && (acc.synced >> p) & 1 == 0 && st.vc[p][acc.pipe.index()] < acc.clock {
                return Err(hazard("write-after-write", r, acc));
            }
        }
    }
    let acc = Access { pipe: i.pipe, clock: now, synced: 0, text: i.text.clone(), loc: i.loc };
    // The scalar unit issues every instruction: its reads are complete before it issues the
    // next one, on any pipe.
    let read_acc = if i.pipe == Pipe::S { Access { synced: u32::MAX, ..acc.clone() } } else { acc.clone() };
    for &r in &i.reads {
        st.reads.insert((r, p), read_acc.clone());
    }
    for &r in &i.writes {
        // A write supersedes earlier accesses of exactly this resource.
        st.writes.insert(r, acc.clone());
        st.reads.retain(|(rr, _), _| *rr != r);
    }
    release(k, i, st, now);
    Ok(())
}

/// Effects that order this instruction after others: applied before its accesses are checked.
fn acquire(k: &Kernel, i: &Instr, st: &mut SyncState, now: u64) -> std::result::Result<(), String> {
    let p = i.pipe.index();
    match i.effect {
        Effect::WaitFlag(a, b, _) => {
            let list = st.flags.entry((a.index(), b.index())).or_default();
            if list.is_empty() {
                return Err(format!("pipe synchronization: `{}`{} waits for a flag nobody set", first_line(&i.text), at(i.loc)));
            }
            let snap = list.remove(0);
            join(&mut st.vc[b.index()], &snap);
        }
        Effect::Barrier(None) => {
            // Every pipe drains: everything issued so far is complete for everyone.
            let _ = p;
            for row in st.vc.iter_mut() {
                *row = [now; NP];
            }
        }
        Effect::DeQue(q) => {
            let (_, cons) = queue_pipes(k, q);
            if let Some(list) = st.fwd.get_mut(&q) {
                if !list.is_empty() {
                    let snap = list.remove(0);
                    join(&mut st.vc[cons.index()], &snap);
                }
            }
        }
        Effect::AllocTensor(q) => {
            let (prod, _) = queue_pipes(k, q);
            if let Some(list) = st.back.get_mut(&q) {
                if !list.is_empty() {
                    let snap = list.remove(0);
                    join(&mut st.vc[prod.index()], &snap);
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Effects that publish this instruction's order to others: applied after it.
fn release(k: &Kernel, i: &Instr, st: &mut SyncState, now: u64) {
    match i.effect {
        Effect::SetFlag(a, b, _) => {
            let mut snap = st.vc[a.index()];
            snap[a.index()] = now;
            st.flags.entry((a.index(), b.index())).or_default().push(snap);
        }
        Effect::EnQue(q) => {
            let (prod, _) = queue_pipes(k, q);
            let snap = st.vc[prod.index()];
            st.fwd.entry(q).or_default().push(snap);
        }
        Effect::FreeTensor(q) => {
            let (_, cons) = queue_pipes(k, q);
            let snap = st.vc[cons.index()];
            st.back.entry(q).or_default().push(snap);
        }
        _ => {}
    }
}

fn queue_pipes(k: &Kernel, q: QueueId) -> (Pipe, Pipe) {
    k.queues.get(q).map(|q| q.pos.queue_pipes()).unwrap_or((Pipe::V, Pipe::V))
}

#[allow(dead_code)]
fn unused(_: Pos) {}
