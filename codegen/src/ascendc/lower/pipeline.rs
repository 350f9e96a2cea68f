//! FastAttention-style cube/vector overlap: the cube runs one KV step ahead.
//!
//! A cube site whose operands both come straight from GM (S = Q·Kᵀ) does not wait for the
//! vector cores, so in a loop the AIC issues it for step `t + 1` before the dependent site of
//! step `t` (P·V, which needs the AIVs' P): while the AIVs run the softmax of step `t`, the
//! cube already computes the scores of step `t + 1`. The product goes to one of two GM slots
//! (ping-pong, slot = step parity, `hopN` in both programs) with a flag pair per slot:
//!
//! ```text
//! AIV  before the loop: CrossCoreSetFlag(kFlagFree_q), CrossCoreSetFlag(kFlagFree_q + 1)  (credits)
//!      step t:  CrossCoreWaitFlag(kFlagReady_q + hop); DataCopy slot hop -> VECIN;
//!               CrossCoreSetFlag<0x2, PIPE_MTE2>(kFlagFree_q + hop); ...; hop ^= 1
//! AIC  prologue: step lo into slot 0;  step t: [step t+1 into slot hop^1], dependent sites of
//!      step t; hop ^= 1;  a step into slot s: CrossCoreWaitFlag(kFlagFree_q + s) ... Fixpipe
//!      -> slot s; CrossCoreSetFlag<0x2, PIPE_FIX>(kFlagReady_q + s)
//!      after the loop: CrossCoreWaitFlag(kFlagFree_q) and (kFlagFree_q + 1) (drain the credits)
//! ```
//! Every set is matched by one wait (the CPU model checks the balance at kernel end and the
//! workspace accesses with its cross-core race detector).

use std::collections::HashMap;

use opc_ir::{Block, Kernel, Loc, OpKind};

/// At most this many pipelined sites per kernel: 4 flag ids each, after ids 1 and 2.
pub(in crate::ascendc) const MAX_PIPELINED: usize = 3;

/// Flag id of slot 0's "product ready" flag of pipelined site `q` (slot 1 is the next id).
pub(in crate::ascendc) fn ready_flag(q: usize) -> u8 {
    3 + 4 * q as u8
}

/// Flag id of slot 0's "slot free" flag of pipelined site `q`.
pub(in crate::ascendc) fn free_flag(q: usize) -> u8 {
    5 + 4 * q as u8
}

/// A pipelined loop: its id (names `hopN`) and its pipelined sites (`q` of each).
#[derive(Clone, Debug)]
pub(in crate::ascendc) struct LoopPlan {
    pub id: usize,
    pub qs: Vec<usize>,
}

/// Which loops and sites are pipelined.
#[derive(Clone, Debug, Default)]
pub(in crate::ascendc) struct PipePlan {
    /// Keyed by the `for` op's location and the index of the first cube site inside it.
    pub loops: HashMap<(Option<Loc>, usize), LoopPlan>,
    /// Site index → q.
    pub sites: HashMap<usize, usize>,
}

impl PipePlan {
    pub fn pipelined(&self) -> usize {
        self.sites.len()
    }
}

/// Plan the overlap. `direct[i]`: whether cube site `i` reads both operands straight from GM.
pub(in crate::ascendc) fn plan(k: &Kernel, direct: &[bool]) -> PipePlan {
    let needed = super::needed_for_control(k);
    let mut p = PipePlan::default();
    let mut site = 0usize;
    walk(k, &k.body, direct, &needed, &mut site, &mut p);
    p
}

fn walk(k: &Kernel, b: &Block, direct: &[bool], needed: &std::collections::HashSet<opc_ir::ValueId>, site: &mut usize, p: &mut PipePlan) {
    for op in &b.ops {
        if super::cube_eligible(k, op) {
            *site += 1;
            continue;
        }
        if matches!(op.kind, OpKind::For) && super::contains_dot(op) {
            let body = &op.regions[0];
            // The cube program must not carry scalars through this loop (the step ahead would
            // need the next step's values).
            let carries = body.args[1..].iter().chain(&op.results).any(|v| needed.contains(v));
            let mut s = *site;
            let mut qs = vec![];
            let mut top = vec![];
            for o in &body.ops {
                if super::cube_eligible(k, o) {
                    top.push(s);
                    s += 1;
                } else {
                    opc_ir::walk_ops(&Block { args: vec![], ops: vec![o.clone()] }, &mut |x| s += super::cube_eligible(k, x) as usize);
                }
            }
            if !carries {
                for t in top {
                    if direct.get(t).copied().unwrap_or(false) && p.sites.len() < MAX_PIPELINED {
                        let q = p.sites.len();
                        p.sites.insert(t, q);
                        qs.push(q);
                    }
                }
            }
            if !qs.is_empty() {
                let id = p.loops.len();
                p.loops.insert((op.loc, *site), LoopPlan { id, qs });
            }
        }
        for r in &op.regions {
            walk(k, r, direct, needed, site, p);
        }
    }
}

use super::{Lower, Val};
use crate::ascendc::lir::{Effect, Pipe, Stmt};
use crate::Result;

impl Lower<'_> {
    /// Vector and peer programs, before a pipelined loop: the parity variable and the two
    /// "slot free" credits of each pipelined site (the cube may fill both slots at once).
    pub(super) fn pipelined_loop_head(&mut self, op: &opc_ir::Op) {
        let Some(plan) = self.pipe.loops.get(&(op.loc, self.dot_site)).cloned() else { return };
        let h = format!("hop{}", plan.id);
        self.comment(format!("the cube runs one step ahead: products alternate between two GM slots ({h} = slot of this step)"));
        self.line(format!("int32_t {h} = 0;"));
        for q in plan.qs {
            for s in ["", " + 1"] {
                self.instr(Pipe::Mte2, format!("CrossCoreSetFlag<0x2, PIPE_MTE2>(kFlagFree{q}{s});"), vec![], vec![], Effect::CrossCoreSet(free_flag(q)));
            }
        }
        self.hop = Some(h);
    }

    /// The cube program of a pipelined loop: the pipelined sites of the first step before the
    /// loop, then per step the pipelined sites of the next step and the other sites of this
    /// one; the credits drained after the loop.
    pub(super) fn cube_pipelined_for(&mut self, op: &opc_ir::Op, plan: &LoopPlan, (lo, hi, step): (&str, &str, &str)) -> Result<()> {
        let body = &op.regions[0];
        let iv = body.args[0].0;
        let h = format!("hop{}", plan.id);
        let (site0, pos0) = (self.dot_site, self.pos);
        self.comment(format!("look-ahead: the independent products of step i + step are computed while the vector cores work on step i ({h}: slot)"));
        self.line(format!("int32_t {h} = 0;"));
        let pass = |l: &mut Lower, iv_expr: String, only_pipelined: bool, slot: String| -> Result<Vec<Stmt>> {
            l.dot_site = site0;
            l.pos = pos0;
            l.push();
            l.line(format!("const int32_t s{iv} = static_cast<int32_t>({iv_expr});"));
            l.set(body.args[0], Val::Scalar(format!("s{iv}")));
            l.site_filter = Some(only_pipelined);
            l.slot = slot;
            let r = l.block(body);
            l.site_filter = None;
            l.slot = "0".into();
            let s = l.pop();
            r.map(|_| s)
        };
        let first = pass(self, lo.to_string(), true, "0".into())?;
        self.push_stmt(Stmt::If { cond: format!("{step} > 0 && static_cast<int64_t>({lo}) < static_cast<int64_t>({hi})"), then_: first, else_: vec![] });
        self.push();
        let ahead = pass(self, format!("i{iv} + {step}"), true, format!("({h} ^ 1)"))?;
        self.push_stmt(Stmt::If { cond: format!("i{iv} + {step} < static_cast<int64_t>({hi})"), then_: ahead, else_: vec![] });
        let now = pass(self, format!("i{iv}"), false, "0".into())?;
        for s in now {
            self.push_stmt(s);
        }
        self.line(format!("{h} ^= 1;"));
        let stmts = self.pop();
        let head = format!("int64_t i{iv} = {lo}; {step} > 0 && i{iv} < static_cast<int64_t>({hi}); i{iv} += {step}");
        self.push_stmt(Stmt::Loop { head, body: stmts });
        for &q in &plan.qs {
            for s in ["", " + 1"] {
                self.instr(Pipe::Mte2, format!("CrossCoreWaitFlag(kFlagFree{q}{s});"), vec![], vec![], Effect::CrossCoreWait(free_flag(q)));
            }
        }
        Ok(())
    }
}
