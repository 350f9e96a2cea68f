//! `dot`: on the cube in a MIX kernel, on the vector unit otherwise.
//!
//! **Cube hand-off** (16-bit operands, every dim a multiple of the 16×16 fractal). An operand
//! that is a box `load` used only by cube dots (Q, K, V, matmul tiles) is copied by the AIC
//! straight from its tensor into L1 (`Val::Gm`; clipped boxes are first filled from the
//! workspace's zero slot, so the reduction dim never sees garbage); any other operand (a
//! decoded MXFP4 tile, the softmax probabilities `cast(p, T)`) is computed by the AIV and goes
//! through the group's GM workspace:
//!
//! ```text
//! AIV0  computed A / B → VECOUT → DataCopy → GM workspace          (MTE3)
//!       CrossCoreSetFlag<0x2, PIPE_MTE3>(kOperandsReady)
//! AIC   CrossCoreWaitFlag(kOperandsReady)
//!       DataCopy GM (workspace or tensor) → L1, Nd2NzParams          (MTE2, A1/B1 queues)
//!       LoadData L1 → L0A (zZ) / L0B (nZ, transposing B's fractals)  (MTE1, A2/B2 queues)
//!       Mmad into L0C, fp32 accumulation                            (M, CO1 queue)
//!       Fixpipe L0C → GM workspace (NZ → ND, fp32)                  (FIX)
//!       CrossCoreSetFlag<0x2, PIPE_FIX>(kProductReady)
//! AIV0  CrossCoreWaitFlag(kProductReady); DataCopy GM → VECIN; Add / DataCopy → tile
//! ```
//! A `trans(x)` operand B is handed over as `x` (row-major [N, K]) and loaded without the
//! fractal transpose; a `dot(a, b, acc)` (or an `x + dot(a, b)` right after it: the
//! online-softmax update) adds on the vector unit straight out of the VECIN buffer.
//! AIV1 of the group runs the same control flow and takes part in every hand-off (mode 0x2:
//! the AIC's wait needs both vector cores' flags, its set wakes both).
//!
//! **Vector fallback** (f32 operands, or shapes off the fractal grid): `Axpy` per (row, k) of
//! A, in f32 (products and sums in f32, k ascending, as the IR defines `dot`). Integer dots
//! run on the scalar unit.

use opc_ir::{DType, Op, OpKind, Rounding, ValueId};

use super::{ctype, layout, Lower, Val};
use crate::ascendc::lir::{CopyLen, Effect, Pipe, Pos, Res};
use crate::Result;

/// Flag ids of the cube↔vector hand-off.
pub(in crate::ascendc) const FLAG_OPERANDS: u8 = 1;
pub(in crate::ascendc) const FLAG_PRODUCT: u8 = 2;

/// Whether a `dot` goes to the cube: 16-bit float operands, all dims multiples of 16.
pub(in crate::ascendc) fn cube_eligible(k: &opc_ir::Kernel, op: &Op) -> bool {
    if !matches!(op.kind, OpKind::Dot) {
        return false;
    }
    let a = k.ty(op.args[0]);
    let b = k.ty(op.args[1]);
    matches!(a.dtype, DType::F16 | DType::BF16) && a.shape.len() == 2 && b.shape.len() == 2 && a.shape.iter().chain(&b.shape).all(|n| n % 16 == 0)
}

/// The GM workspace slot sizes of one group: (A bytes, B bytes, C bytes, zeros bytes), each the
/// largest over the kernel's cube sites, rounded to 512 bytes. The zeros slot (zero-initialized
/// by the host, never written) pads the L1 tiles of clipped GM operands.
pub(in crate::ascendc) fn workspace_slots(k: &opc_ir::Kernel) -> (u64, u64, u64, u64) {
    let (mut a, mut b, mut c) = (0u64, 0u64, 0u64);
    opc_ir::walk_ops(&k.body, &mut |op| {
        if cube_eligible(k, op) {
            let (sa, sb) = (&k.ty(op.args[0]).shape, &k.ty(op.args[1]).shape);
            let (m, kk, n) = (sa[0] as u64, sa[1] as u64, sb[1] as u64);
            a = a.max(m * kk * 2);
            b = b.max(kk * n * 2);
            c = c.max(m * n * 4);
        }
    });
    let r = |x: u64| crate::ascendc::lir::round_up(x, 512);
    (r(a), r(b), r(c), r(a.max(b)))
}

impl Lower<'_> {
    pub(super) fn lower_dot(&mut self, op: &Op) -> Result<()> {
        if self.cube_kernel && cube_eligible(self.orig, op) {
            return self.cube_dot_vector_side(op);
        }
        let r = op.results[0];
        let (a, b) = (op.args[0], op.args[1]);
        let da = self.dtype(a);
        if !da.is_float() {
            return self.scalar_dot(op);
        }
        let (sa, sb) = (self.shape(a), self.shape(b));
        let (m, kk, n) = (sa[0], sa[1], sb[1]);
        let rs = self.shape(r);
        let dst = self.alloc(DType::F32, &rs, self.last_use(r), format!("%{} {}", r.0, self.k.ty(r)));
        match op.args.get(2) {
            Some(&acc) => self.write_into(op, acc, dst)?,
            None => self.duplicate(dst, DType::F32, "0.0f", layout(DType::F32, &rs).1),
        }
        let af = self.f32_dense(op, a)?;
        let bf = self.f32_dense(op, b)?;
        let (pa, pb) = (layout(DType::F32, &sa).0[0], layout(DType::F32, &sb).0[0]);
        let (dn, an, bn) = (self.bname(dst), self.bname(af), self.bname(bf));
        self.comment(format!("dot [{m}x{kk}]·[{kk}x{n}] on the vector unit (Axpy, f32)"));
        self.sync(Pipe::V, Pipe::S);
        self.instr(Pipe::S, String::new(), vec![Res::Buf(af)], vec![], Effect::None);
        self.vec(
            format!("for (int32_t m = 0; m < {m}; ++m) {{\n    for (int32_t k = 0; k < {kk}; ++k) {{\n        Axpy({dn}[m * {pb}], {bn}[k * {pb}], {an}.GetValue(m * {pa} + k), {pb});\n    }}\n}}"),
            &[bf, dst],
            &[dst],
        );
        self.set(r, Val::Tile(dst));
        Ok(())
    }

    /// A dense f32 tile of `v`.
    fn f32_dense(&mut self, op: &Op, v: ValueId) -> Result<usize> {
        let b = self.materialize(op, v)?;
        let d = self.dtype(v);
        if d == DType::F32 {
            return Ok(b);
        }
        let shape = self.shape(v);
        let t = self.temp(DType::F32, &shape, "dot operand in f32");
        self.emit_cast(t, b, d, DType::F32, &shape, Rounding::Rne);
        Ok(t)
    }

    fn scalar_dot(&mut self, op: &Op) -> Result<()> {
        let r = op.results[0];
        let (a, b) = (op.args[0], op.args[1]);
        let (sa, sb) = (self.shape(a), self.shape(b));
        let rs = self.shape(r);
        let rd = self.dtype(r);
        let dst = self.alloc(rd, &rs, self.last_use(r), format!("%{} {}", r.0, self.k.ty(r)));
        let idx = self.idx_names(2);
        let kv = self.fresh("k");
        let ea = self.elem(a, &[idx[0].clone(), kv.clone()]);
        let eb = self.elem(b, &[kv.clone(), idx[1].clone()]);
        let init = match op.args.get(2) {
            Some(&c) => self.elem(c, &idx),
            None => "0".into(),
        };
        let body = format!(
            "int64_t acc = {init};\nfor (int32_t {kv} = 0; {kv} < {}; ++{kv}) {{\n    acc = OpcWrap(acc + static_cast<int64_t>({ea}) * static_cast<int64_t>({eb}), 32, true);\n}}\n{}.SetValue({}, static_cast<int32_t>(acc));",
            sa[1],
            self.bname(dst),
            Self::lin(rd, &rs, &idx)
        );
        let text = Self::loop_nest(&[sa[0], sb[1]], &body.replace('\n', "\n        "), &idx);
        let mut reads = self.bufs_of(a);
        reads.extend(self.bufs_of(b));
        if let Some(&c) = op.args.get(2) {
            reads.extend(self.bufs_of(c));
        }
        self.barrier_all();
        self.instr(Pipe::S, text, reads, vec![Res::Buf(dst)], Effect::None);
        self.barrier_all();
        self.set(r, Val::Tile(dst));
        Ok(())
    }

    /// B operand of a cube dot: (value to hand over, whether it is Bᵀ stored row-major).
    /// Decided on the IR alone, so the AIV and AIC programs agree.
    pub(super) fn cube_b(&self, b: ValueId) -> (ValueId, bool) {
        match self.def_op(b) {
            Some(d) if matches!(&d.kind, OpKind::Permute(p) if p == &[1, 0]) => (d.args[0], true),
            _ => (b, false),
        }
    }

    fn ws_tensor(&mut self, slot: &str, d: DType) -> String {
        let g = self.fresh("ws");
        let ct = ctype(d);
        self.line(format!("GlobalTensor<{ct}> {g};"));
        self.line(format!("{g}.SetGlobalBuffer(reinterpret_cast<__gm__ {ct}*>(wsBase_ + {slot}));"));
        g
    }

    /// AIV side of a cube hand-off.
    fn cube_dot_vector_side(&mut self, op: &Op) -> Result<()> {
        let site = self.dot_site;
        self.dot_site += 1;
        let r = op.results[0];
        let a = op.args[0];
        let (bv, bt) = self.cube_b(op.args[1]);
        let da = self.dtype(a);
        let (sa, sb) = (self.shape(a), self.shape(op.args[1]));
        let (m, kk, n) = (sa[0] as u64, sa[1] as u64, sb[1] as u64);
        let ct = ctype(da);
        self.comment(format!("cube hand-off #{site}: [{m}x{kk}]·[{kk}x{n}]{} on the AIC", if bt { " (B given transposed)" } else { "" }));
        // Row-split (two AIVs): A and C are this sub-block's rows of the group's slots; a B the
        // vector side computes is whole, and only sub-block 0 writes it.
        let split = self.split_rows.is_some();
        let mut send = vec![];
        for (v, slot, cnt, row) in [(a, "kWsA", m * kk, kk), (bv, "kWsB", kk * n, 0)] {
            if !matches!(self.val(v), Val::Gm(_)) {
                let b = self.materialize(op, v)?;
                let ws = self.ws_tensor(slot, da);
                let dst = if split && row > 0 { format!("{ws}[subRow_ * {row}]") } else { ws };
                send.push((b, dst, cnt, split && row == 0));
            }
        }
        // A pipelined site (both operands from GM, the cube one step ahead): its product is in
        // ping-pong slot `hop` of the site's own workspace region (`pipeline.rs`).
        self.site_direct.push(send.is_empty());
        let pq = self.pipe.sites.get(&site).copied().filter(|_| self.hop.is_some() && send.is_empty());
        let hop = self.hop.clone().unwrap_or_default();
        let wc = match pq {
            Some(q) => self.ws_tensor(&format!("kWsP{q} + {hop} * kWsCBytes"), DType::F32),
            None => self.ws_tensor("kWsC", DType::F32),
        };
        let wc = if split { format!("{wc}[subRow_ * {n}]") } else { wc };
        let oq = if send.is_empty() { 0 } else { self.queue(Pos::VecOut, (m * kk).max(kk * n) * 2) };
        for (src, ws, cnt, only_sub0) in send {
            if only_sub0 {
                self.push();
            }
            let tn = self.fresh("out");
            let qn = self.out.queues[oq].name.clone();
            let sn = self.bname(src);
            self.instr(Pipe::V, format!("LocalTensor<{ct}> {tn} = {qn}.AllocTensor<{ct}>();"), vec![], vec![Res::Queue(oq)], Effect::AllocTensor(oq));
            self.instr(
                Pipe::V,
                format!("DataCopy({tn}, {sn}, {cnt});"),
                vec![Res::Buf(src)],
                vec![Res::Queue(oq)],
                Effect::Copy(CopyLen::Elems { count: cnt, elem_bytes: 2 }),
            );
            self.instr(Pipe::V, format!("{qn}.EnQue({tn});"), vec![], vec![], Effect::EnQue(oq));
            self.instr(Pipe::Mte3, format!("{tn} = {qn}.DeQue<{ct}>();"), vec![], vec![], Effect::DeQue(oq));
            self.instr(
                Pipe::Mte3,
                format!("DataCopy({ws}, {tn}, {cnt});"),
                vec![Res::Queue(oq)],
                vec![Res::Gm],
                Effect::Copy(CopyLen::Elems { count: cnt, elem_bytes: 2 }),
            );
            self.instr(Pipe::Mte3, format!("{qn}.FreeTensor({tn});"), vec![], vec![], Effect::FreeTensor(oq));
            if only_sub0 {
                let body = self.pop();
                self.push_stmt(crate::ascendc::lir::Stmt::If { cond: "GetSubBlockIdx() == 0".into(), then_: body, else_: vec![] });
            }
        }
        match pq {
            Some(q) => self.instr(Pipe::Mte2, format!("CrossCoreWaitFlag(kFlagReady{q} + {hop});"), vec![], vec![], Effect::CrossCoreWait(super::pipeline::ready_flag(q))),
            None => {
                self.instr(Pipe::Mte3, "CrossCoreSetFlag<0x2, PIPE_MTE3>(kFlagOperands);", vec![], vec![], Effect::CrossCoreSet(FLAG_OPERANDS));
                self.instr(Pipe::Mte2, "CrossCoreWaitFlag(kFlagProduct);", vec![], vec![], Effect::CrossCoreWait(FLAG_PRODUCT));
            }
        }
        let rs = self.shape(r);
        let iq = self.queue(Pos::VecIn, m * n * 4);
        let tn = self.fresh("in");
        let qn = self.out.queues[iq].name.clone();
        self.instr(Pipe::Mte2, format!("LocalTensor<float> {tn} = {qn}.AllocTensor<float>();"), vec![], vec![Res::Queue(iq)], Effect::AllocTensor(iq));
        self.instr(
            Pipe::Mte2,
            format!("DataCopy({tn}, {wc}, {});", m * n),
            vec![Res::Gm],
            vec![Res::Queue(iq)],
            Effect::Copy(CopyLen::Elems { count: m * n, elem_bytes: 4 }),
        );
        if let Some(q) = pq {
            // The slot is read: the cube may fill it again (two steps later).
            self.instr(Pipe::Mte2, format!("CrossCoreSetFlag<0x2, PIPE_MTE2>(kFlagFree{q} + {hop});"), vec![], vec![], Effect::CrossCoreSet(super::pipeline::free_flag(q)));
        }
        self.instr(Pipe::Mte2, format!("{qn}.EnQue({tn});"), vec![], vec![], Effect::EnQue(iq));
        self.instr(Pipe::V, format!("{tn} = {qn}.DeQue<float>();"), vec![], vec![], Effect::DeQue(iq));
        // The product is added to a tile straight out of the queue: `dot(a, b, acc)`, or the
        // `x + dot(a, b)` of the online-softmax update (fused here, in place when `x` dies).
        let add = match op.args.get(2) {
            Some(&acc) => Some((r, acc)),
            None => self.add_user(r),
        };
        match add {
            Some((res, other)) => {
                let ob = self.materialize(op, other)?;
                // In place when `x` dies at the add and the add is the very next op (nothing in
                // between can read `x`).
                let next = self.lv.def[res.0 as usize] == self.pos();
                let dies = self.out.bufs[ob].live.1 == self.pos() + 1 && !self.out.bufs[ob].what.starts_with("loop-carried");
                let dst = if res != r && next && dies {
                    self.adopt(ob, res)
                } else {
                    match self.reusable(ob, DType::F32, &rs) {
                        Some(b) => self.adopt(b, res),
                        None => self.alloc(DType::F32, &rs, self.last_use(res), format!("%{} {}", res.0, self.k.ty(res))),
                    }
                };
                let (dn, on) = (self.bname(dst), self.bname(ob));
                self.instr(Pipe::V, format!("Add({dn}, {tn}, {on}, {});", m * n), vec![Res::Queue(iq), Res::Buf(ob)], vec![Res::Buf(dst)], Effect::None);
                self.set(res, Val::Tile(dst));
                if res != r {
                    self.fused.insert(res);
                }
            }
            None => {
                let dst = self.alloc(DType::F32, &rs, self.last_use(r), format!("%{} {}", r.0, self.k.ty(r)));
                let dn = self.bname(dst);
                self.instr(
                    Pipe::V,
                    format!("DataCopy({dn}, {tn}, {});", m * n),
                    vec![Res::Queue(iq)],
                    vec![Res::Buf(dst)],
                    Effect::Copy(CopyLen::Elems { count: m * n, elem_bytes: 4 }),
                );
                self.set(r, Val::Tile(dst));
            }
        }
        self.instr(Pipe::V, format!("{qn}.FreeTensor({tn});"), vec![], vec![], Effect::FreeTensor(iq));
        Ok(())
    }

    /// `x + r` (or `r + x`) as the only use of dot result `r`, with `x` an f32 tile of the same
    /// shape defined already: (the add's result, x).
    fn add_user(&self, r: ValueId) -> Option<(ValueId, ValueId)> {
        let mut users = vec![];
        opc_ir::walk_ops(&self.k.body, &mut |o| {
            if o.args.contains(&r) {
                users.push(o.clone());
            }
        });
        let [u] = users.as_slice() else { return None };
        if !matches!(u.kind, OpKind::Binary(opc_ir::BinaryOp::Add)) || u.args[0] == u.args[1] {
            return None;
        }
        let other = if u.args[0] == r { u.args[1] } else { u.args[0] };
        let defined = matches!(self.vals[other.0 as usize], Some(Val::Tile(_)));
        (defined && self.k.ty(other) == self.k.ty(r)).then_some((u.results[0], other))
    }

    /// Cube program (AIC) or peer skeleton (AIV1) at a `dot`.
    pub(super) fn skeleton_dot(&mut self, op: &Op) -> Result<()> {
        if !cube_eligible(self.orig, op) {
            return Ok(());
        }
        let site = self.dot_site;
        self.dot_site += 1;
        let pq = self.pipe.sites.get(&site).copied();
        if let Some(only_pipelined) = self.site_filter {
            if only_pipelined != pq.is_some() {
                return Ok(());
            }
        }
        if self.mode == super::Mode::Peer {
            if let (Some(q), Some(hop)) = (pq, self.hop.clone()) {
                self.comment(format!("cube hand-off #{site} (pipelined): the peer vector core takes part in the slot's flag pair"));
                self.instr(Pipe::Mte2, format!("CrossCoreWaitFlag(kFlagReady{q} + {hop});"), vec![], vec![], Effect::CrossCoreWait(super::pipeline::ready_flag(q)));
                self.instr(Pipe::Mte2, format!("CrossCoreSetFlag<0x2, PIPE_MTE2>(kFlagFree{q} + {hop});"), vec![], vec![], Effect::CrossCoreSet(super::pipeline::free_flag(q)));
                return Ok(());
            }
            self.comment(format!("cube hand-off #{site}: the peer vector core signals and waits"));
            self.instr(Pipe::Mte3, "CrossCoreSetFlag<0x2, PIPE_MTE3>(kFlagOperands);", vec![], vec![], Effect::CrossCoreSet(FLAG_OPERANDS));
            self.instr(Pipe::Mte2, "CrossCoreWaitFlag(kFlagProduct);", vec![], vec![], Effect::CrossCoreWait(FLAG_PRODUCT));
            return Ok(());
        }
        let (_, bt) = self.cube_b(op.args[1]);
        let da = self.dtype(op.args[0]);
        let ct = ctype(da);
        let (sa, sb) = (self.shape(op.args[0]), self.shape(op.args[1]));
        let (m, kk, n) = (sa[0] as u64, sa[1] as u64, sb[1] as u64);
        self.comment(format!("cube site #{site}: C[{m}x{n}] = A[{m}x{kk}] · B[{kk}x{n}]{}", if bt { " (B arrives as Bᵀ)" } else { "" }));
        // A pipelined site (only reached through `cube_pipelined_for`) writes ping-pong slot
        // `self.slot` once the vector cores have freed it.
        let pq = pq.filter(|_| self.site_filter.is_some());
        let slot = self.slot.clone();
        let wc = match pq {
            Some(q) => self.ws_tensor(&format!("kWsP{q} + {slot} * kWsCBytes"), DType::F32),
            None => self.ws_tensor("kWsC", DType::F32),
        };
        let qa1 = self.cube_queue(Pos::A1, "inQueueA1", m * kk * 2);
        let qb1 = self.cube_queue(Pos::B1, "inQueueB1", kk * n * 2);
        let qa2 = self.cube_queue(Pos::A2, "inQueueA2", m * kk * 2);
        let qb2 = self.cube_queue(Pos::B2, "inQueueB2", kk * n * 2);
        let qc = self.cube_queue(Pos::Co1, "outQueueCO1", m * n * 4);
        let names = |l: &Lower, q: usize| l.out.queues[q].name.clone();
        let (a1, b1, a2, b2, c1) = (self.fresh("a1_"), self.fresh("b1_"), self.fresh("a2_"), self.fresh("b2_"), self.fresh("c1_"));
        match pq {
            Some(q) => self.instr(Pipe::Mte2, format!("CrossCoreWaitFlag(kFlagFree{q} + {slot});"), vec![], vec![], Effect::CrossCoreWait(super::pipeline::free_flag(q))),
            None => self.instr(Pipe::Mte2, "CrossCoreWaitFlag(kFlagOperands);", vec![], vec![], Effect::CrossCoreWait(FLAG_OPERANDS)),
        }
        // GM (ND) → L1 (NZ): from the workspace, or straight from the operand's tensor.
        let (brows, bcols) = if bt { (n, kk) } else { (kk, n) };
        let (bv, _) = self.cube_b(op.args[1]);
        let operands = [(qa1, a1.clone(), "kWsA", op.args[0], m, kk), (qb1, b1.clone(), "kWsB", bv, brows, bcols)];
        for (q, t, slot, v, rows, cols) in operands {
            let qn = names(self, q);
            self.instr(Pipe::Mte2, format!("LocalTensor<{ct}> {t} = {qn}.AllocTensor<{ct}>();"), vec![], vec![Res::Queue(q)], Effect::AllocTensor(q));
            match self.val(v) {
                Val::Gm(i) => self.l1_from_gm(q, &t, i, da, rows, cols)?,
                _ => {
                    let ws = self.ws_tensor(slot, da);
                    self.line(format!("Nd2NzParams {t}Nd;"));
                    self.line(format!(
                        "{t}Nd.ndNum = 1; {t}Nd.nValue = {rows}; {t}Nd.dValue = {cols}; {t}Nd.srcNdMatrixStride = 0; {t}Nd.srcDValue = {cols}; {t}Nd.dstNzC0Stride = {rows}; {t}Nd.dstNzNStride = 1; {t}Nd.dstNzMatrixStride = 0;"
                    ));
                    self.instr(
                        Pipe::Mte2,
                        format!("DataCopy({t}, {ws}, {t}Nd);"),
                        vec![Res::Gm],
                        vec![Res::Queue(q)],
                        Effect::Copy(CopyLen::Elems { count: rows * cols, elem_bytes: 2 }),
                    );
                }
            }
            self.instr(Pipe::Mte2, format!("{qn}.EnQue({t});"), vec![], vec![], Effect::EnQue(q));
        }
        // L1 → L0A: one LoadData per 16-row band of A (fractals in zZ order).
        let (qa1n, qa2n, qb1n, qb2n, qcn) = (names(self, qa1), names(self, qa2), names(self, qb1), names(self, qb2), names(self, qc));
        self.instr(Pipe::Mte1, format!("{a1} = {qa1n}.DeQue<{ct}>();"), vec![], vec![], Effect::DeQue(qa1));
        self.instr(Pipe::Mte1, format!("LocalTensor<{ct}> {a2} = {qa2n}.AllocTensor<{ct}>();"), vec![], vec![Res::Queue(qa2)], Effect::AllocTensor(qa2));
        self.line(format!("LoadData2DParams {a2}Ld;"));
        self.line(format!(
            "{a2}Ld.repeatTimes = {}; {a2}Ld.srcStride = {}; {a2}Ld.sid = 0; {a2}Ld.dstGap = 0; {a2}Ld.ifTranspose = false; {a2}Ld.addrMode = 0;",
            kk / 16,
            m / 16
        ));
        self.instr(
            Pipe::Mte1,
            format!("for (int32_t mb = 0; mb < {}; ++mb) {{\n    {a2}Ld.startIndex = mb;\n    LoadData({a2}[mb * {}], {a1}, {a2}Ld);\n}}", m / 16, kk * 16),
            vec![Res::Queue(qa1)],
            vec![Res::Queue(qa2)],
            Effect::None,
        );
        self.instr(Pipe::Mte1, format!("{qa2n}.EnQue({a2});"), vec![], vec![], Effect::EnQue(qa2));
        self.instr(Pipe::Mte1, format!("{qa1n}.FreeTensor({a1});"), vec![], vec![], Effect::FreeTensor(qa1));
        // L1 → L0B: fractals in (k, n) order, each stored n-major.
        self.instr(Pipe::Mte1, format!("{b1} = {qb1n}.DeQue<{ct}>();"), vec![], vec![], Effect::DeQue(qb1));
        self.instr(Pipe::Mte1, format!("LocalTensor<{ct}> {b2} = {qb2n}.AllocTensor<{ct}>();"), vec![], vec![Res::Queue(qb2)], Effect::AllocTensor(qb2));
        self.line(format!("LoadData2DParams {b2}Ld;"));
        if bt {
            self.line(format!("{b2}Ld.startIndex = 0; {b2}Ld.repeatTimes = {}; {b2}Ld.srcStride = 1; {b2}Ld.sid = 0; {b2}Ld.dstGap = 0; {b2}Ld.ifTranspose = false; {b2}Ld.addrMode = 0;", (kk / 16) * (n / 16)));
            self.instr(Pipe::Mte1, format!("LoadData({b2}, {b1}, {b2}Ld);"), vec![Res::Queue(qb1)], vec![Res::Queue(qb2)], Effect::None);
        } else {
            self.line(format!(
                "{b2}Ld.repeatTimes = {}; {b2}Ld.srcStride = {}; {b2}Ld.sid = 0; {b2}Ld.dstGap = 0; {b2}Ld.ifTranspose = true; {b2}Ld.addrMode = 0;",
                n / 16,
                kk / 16
            ));
            self.instr(
                Pipe::Mte1,
                format!("for (int32_t kb = 0; kb < {}; ++kb) {{\n    {b2}Ld.startIndex = kb;\n    LoadData({b2}[kb * {}], {b1}, {b2}Ld);\n}}", kk / 16, n * 16),
                vec![Res::Queue(qb1)],
                vec![Res::Queue(qb2)],
                Effect::None,
            );
        }
        self.instr(Pipe::Mte1, format!("{qb2n}.EnQue({b2});"), vec![], vec![], Effect::EnQue(qb2));
        self.instr(Pipe::Mte1, format!("{qb1n}.FreeTensor({b1});"), vec![], vec![], Effect::FreeTensor(qb1));
        // Mmad into L0C.
        self.instr(Pipe::M, format!("{a2} = {qa2n}.DeQue<{ct}>();"), vec![], vec![], Effect::DeQue(qa2));
        self.instr(Pipe::M, format!("{b2} = {qb2n}.DeQue<{ct}>();"), vec![], vec![], Effect::DeQue(qb2));
        self.instr(Pipe::M, format!("LocalTensor<float> {c1} = {qcn}.AllocTensor<float>();"), vec![], vec![Res::Queue(qc)], Effect::AllocTensor(qc));
        self.line(format!("MmadParams {c1}Mm;"));
        self.line(format!("{c1}Mm.m = {m}; {c1}Mm.n = {n}; {c1}Mm.k = {kk}; {c1}Mm.cmatrixInitVal = true; {c1}Mm.cmatrixSource = false; {c1}Mm.unitFlag = 0;"));
        self.instr(Pipe::M, format!("Mmad({c1}, {a2}, {b2}, {c1}Mm);"), vec![Res::Queue(qa2), Res::Queue(qb2)], vec![Res::Queue(qc)], Effect::None);
        self.instr(Pipe::M, format!("{qcn}.EnQue({c1});"), vec![], vec![], Effect::EnQue(qc));
        self.instr(Pipe::M, format!("{qa2n}.FreeTensor({a2});"), vec![], vec![], Effect::FreeTensor(qa2));
        self.instr(Pipe::M, format!("{qb2n}.FreeTensor({b2});"), vec![], vec![], Effect::FreeTensor(qb2));
        // L0C → GM (fp32, NZ → ND).
        self.instr(Pipe::Fix, format!("{c1} = {qcn}.DeQue<float>();"), vec![], vec![], Effect::DeQue(qc));
        self.line(format!("FixpipeParamsV220 {c1}Fp;"));
        self.line(format!("{c1}Fp.nSize = {n}; {c1}Fp.mSize = {m}; {c1}Fp.srcStride = {m}; {c1}Fp.dstStride = {n}; {c1}Fp.quantPre = QuantMode_t::NoQuant; {c1}Fp.reluEn = false; {c1}Fp.ndNum = 1;"));
        self.instr(Pipe::Fix, format!("Fixpipe<float, float, CFG_ROW_MAJOR>({wc}, {c1}, {c1}Fp);"), vec![Res::Queue(qc)], vec![Res::Gm], Effect::None);
        self.instr(Pipe::Fix, format!("{qcn}.FreeTensor({c1});"), vec![], vec![], Effect::FreeTensor(qc));
        match pq {
            Some(q) => self.instr(Pipe::Fix, format!("CrossCoreSetFlag<0x2, PIPE_FIX>(kFlagReady{q} + {slot});"), vec![], vec![], Effect::CrossCoreSet(super::pipeline::ready_flag(q))),
            None => self.instr(Pipe::Fix, "CrossCoreSetFlag<0x2, PIPE_FIX>(kFlagProduct);", vec![], vec![], Effect::CrossCoreSet(FLAG_PRODUCT)),
        }
        Ok(())
    }

    /// Copy the box of direct load `i` into the L1 tile `t` ([rows, cols] in NZ): zeros from
    /// the workspace's zero slot first when the box is clipped (the cube must never see
    /// garbage in the reduction dim), then the valid rows and columns.
    fn l1_from_gm(&mut self, q: usize, t: &str, i: usize, d: DType, rows: u64, cols: u64) -> Result<()> {
        let load = self.direct[i].clone();
        let OpKind::Load { tensor, .. } = load.kind else { return Err(self.unsupported(&load, "not a load")) };
        let bx = self.box_access(&load, tensor).ok_or_else(|| self.unsupported(&load, "the cube operand is no longer a box"))?;
        let g = self.clip(tensor, &bx);
        let ct = ctype(d);
        let c0 = 16u64;
        let z = self.ws_tensor("kWsZ", d);
        self.line(format!("Nd2NzParams {t}Nd;"));
        self.line(format!(
            "{t}Nd.ndNum = 1; {t}Nd.nValue = {rows}; {t}Nd.dValue = {cols}; {t}Nd.srcNdMatrixStride = 0; {t}Nd.srcDValue = {cols}; {t}Nd.dstNzC0Stride = {rows}; {t}Nd.dstNzNStride = 1; {t}Nd.dstNzMatrixStride = 0;"
        ));
        self.push();
        self.instr(
            Pipe::Mte2,
            format!("DataCopy({t}, {z}, {t}Nd);"),
            vec![Res::Gm],
            vec![Res::Queue(q)],
            Effect::Copy(CopyLen::Elems { count: rows * cols, elem_bytes: 2 }),
        );
        let zero = self.pop();
        self.push_stmt(crate::ascendc::lir::Stmt::If { cond: format!("!({} && {})", g.inb, g.full), then_: zero, else_: vec![] });
        let (lr, lc, nr, nc) = (g.lo[0].clone(), g.lo[1].clone(), g.n(0), g.n(1));
        let gm = self.gm(tensor);
        let off = g.gm_off.clone();
        let stride = g.row_stride.clone();
        self.push();
        self.line(format!("{t}Nd.nValue = {nr}; {t}Nd.srcDValue = static_cast<uint16_t>({stride});"));
        self.push();
        self.line(format!("{t}Nd.dValue = {nc};"));
        self.instr(
            Pipe::Mte2,
            format!("DataCopy({t}[({lc} / {c0}) * {rows} * {c0} + {lr} * {c0}], {gm}[{off}], {t}Nd);"),
            vec![Res::Gm],
            vec![Res::Queue(q)],
            Effect::Copy(CopyLen::Pad),
        );
        let aligned = self.pop();
        // A first column inside a fractal column (a negative start): one column at a time.
        self.push();
        self.line(format!("{t}Nd.dValue = 1;"));
        let c = format!("{t}C");
        self.instr(
            Pipe::Mte2,
            format!("for (int32_t {c} = 0; {c} < {nc}; ++{c}) {{\n    DataCopy({t}[(({lc} + {c}) / {c0}) * {rows} * {c0} + {lr} * {c0} + ({lc} + {c}) % {c0}], {gm}[{off} + {c}], {t}Nd);\n}}"),
            vec![Res::Gm],
            vec![Res::Queue(q)],
            Effect::Copy(CopyLen::Pad),
        );
        let columns = self.pop();
        self.push_stmt(crate::ascendc::lir::Stmt::If { cond: format!("{lc} % {c0} == 0"), then_: aligned, else_: columns });
        let copy = self.pop();
        self.push_stmt(crate::ascendc::lir::Stmt::If { cond: format!("{} && {nr} > 0 && {nc} > 0", g.inb), then_: copy, else_: vec![] });
        let _ = ct;
        Ok(())
    }

    /// An AIC queue, grown to `bytes`: double-buffered (depth 2), so the next site's or step's
    /// GM → L1 and L1 → L0 copies can run while the cube still works on this one (the plan
    /// drops it to one buffer when two do not fit).
    fn cube_queue(&mut self, pos: Pos, name: &str, bytes: u64) -> usize {
        let q = match self.out.queues.iter().position(|q| q.name == name) {
            Some(q) => q,
            None => {
                self.out.queues.push(crate::ascendc::lir::Queue {
                    name: name.into(),
                    pos,
                    depth: 2,
                    num: 2,
                    bytes: 0,
                    core: crate::ascendc::lir::Core::Aic,
                    what: String::new(),
                    loc: None,
                });
                self.out.queues.len() - 1
            }
        };
        let b = crate::ascendc::lir::round_up(bytes, 512);
        if b > self.out.queues[q].bytes {
            self.out.queues[q].bytes = b;
            self.out.queues[q].what = format!("cube tile at {}", self.where_());
            self.out.queues[q].loc = self.loc;
        }
        q
    }
}
