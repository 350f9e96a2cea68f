//! `dot`: `c = acc + a · b`.
//!
//! **Tensor-core path** (f16/bf16 operands, f32 accumulator, M % 16 = N % 8 = K % 16 = 0):
//! `mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}` fed by `ldmatrix` from shared memory.
//! Operands are used in place when their view is row- or column-major with a 16-byte aligned
//! pitch (`ldmatrix` or `ldmatrix.trans`, so `dot(q, trans(k))` reads the K tile as stored);
//! anything else (a broadcast, a uniform) is first copied to a fresh buffer. 16-bit tiles whose
//! rows are a multiple of 128 bytes are stored with a 16-byte row pad (see `Lower::pitch`), so
//! the eight row addresses of each `ldmatrix` hit eight different bank groups (padding rather
//! than an XOR swizzle: views stay plain strides). Work units are one 16-row m-tile times up to
//! eight 8-column n-tiles (the A fragment is loaded once per k-step and reused across them),
//! dealt to the warps round-robin; accumulators live in registers across the whole K loop and
//! are written once to a fresh f32 buffer (the result is a view of it). The tensor cores sum in
//! their own order with fused products, so this path matches the interpreter within the usual
//! GEMM tolerance, not bit for bit.
//!
//! **General path** (everything else: f32, ints, odd shapes): one thread per output element,
//! `k` ascending, every product rounded before it is added (`mul.rn` then `add.rn`, no FMA):
//! bit-identical to the interpreter. The result is distributed like the accumulator, which is
//! therefore read from the thread's own registers.
//!
//! GEMM *loops* (a `for` whose body is just the two loads and this `dot`) do not come here:
//! `gemm.rs` pipelines them (cp.async / TMA, accumulators in registers across iterations).
//! **Not done**: int8/int4 `mma`.

use opc_ir::{DType, Op};

use super::emit::{fimm, Kind, Reg};
use super::lower::{esize, Lower, Repr, Src, View};
use crate::Result;

/// How the tensor-core path reads one operand.
#[derive(Clone, Debug)]
struct MmaOperand {
    buf: usize,
    /// Elements between consecutive rows of the stored matrix.
    pitch: i64,
    /// The stored rows are the operand's columns (`trans` for A; "not k-major" for B).
    transposed: bool,
}

/// Whether `dot` op `op` takes the tensor-core path.
pub(super) fn mma_eligible(k: &opc_ir::Kernel, op: &Op) -> bool {
    let (a, b) = (k.ty(op.args[0]), k.ty(op.args[1]));
    let (m, kk, n) = (a.shape[0], a.shape[1], b.shape[1]);
    matches!(a.dtype, DType::F16 | DType::BF16) && m % 16 == 0 && n % 8 == 0 && kk % 16 == 0 && m * n > 1
}

impl Lower<'_> {
    pub(super) fn lower_dot(&mut self, op: &Op) -> Result<()> {
        let (a, b) = (op.args[0], op.args[1]);
        let (sa, sb) = (self.shape(a), self.shape(b));
        let (m, kk, n) = (sa[0], sa[1], sb[1]);
        let d = self.dtype(a);
        let res = op.result();
        if mma_eligible(self.k, op) {
            return self.lower_mma(op, m, n, kk, d);
        }
        let rd = self.dtype(res);
        let kind = if rd == DType::F32 { Kind::F } else { Kind::R };
        let ty = if kind == Kind::F { "f32" } else { "b32" };
        let opnd = |l: &mut Self, v| match l.view(v) {
            Some(w) => Src::V(w, l.shape(v), l.dtype(v)),
            None => l.src(v),
        };
        let (xa, xb) = (opnd(self, a), opnd(self, b));
        let acc = op.args.get(2).map(|&c| self.src(c));
        let reads = [&xa, &xb].into_iter().chain(acc.iter()).any(|s| matches!(s, Src::V(..)));
        if reads {
            self.hazard(true, false, None, None);
        }
        // c[i, j] for output element e: acc + Σ_k a[i, k] · b[k, j]
        let one = |l: &mut Self, i: usize, e: Option<Reg>| -> Reg {
            let (row, col) = match e {
                Some(e) => (l.p.op(Kind::R, "div.u32", &[&e, &n]), l.p.op(Kind::R, "rem.u32", &[&e, &n])),
                None => (l.p.mov(Kind::R, 0), l.p.mov(Kind::R, 0)),
            };
            let c = l.p.reg(kind);
            match (&acc, e) {
                (None, _) => l.p.ins(format!("mov.{ty} {c}, {}", if kind == Kind::F { fimm(0.0) } else { "0".into() })),
                (Some(Src::D(rs)), _) => l.p.ins(format!("mov.{ty} {c}, {}", rs[i])),
                (Some(s), Some(e)) => {
                    let x = l.read(s, i, e);
                    l.p.ins(format!("mov.{ty} {c}, {x}"));
                }
                (Some(s), None) => {
                    let z = l.p.mov(Kind::R, 0);
                    let x = l.read_at(s, z);
                    l.p.ins(format!("mov.{ty} {c}, {x}"));
                }
            }
            if kk == 0 {
                return c;
            }
            // per operand: (address register, byte step per k) or a uniform value
            let cursor = |l: &mut Self, s: &Src, fixed: Reg, fixed_dim: usize| -> (Option<(Reg, i64, DType)>, Option<Reg>) {
                match s {
                    Src::V(w, _, d) => {
                        let el = l.p.op(Kind::R, "mul.lo.u32", &[&fixed, &w.strides[fixed_dim]]);
                        let a = l.smem_addr(w.buf, Some(el), *d);
                        (Some((a, w.strides[1 - fixed_dim] * esize(*d) as i64, *d)), None)
                    }
                    Src::U(r) => (None, Some(*r)),
                    Src::D(_) => unreachable!("dot operands are views or uniforms"),
                }
            };
            let (ca, ua) = cursor(l, &xa, row, 0);
            let (cb, ub) = cursor(l, &xb, col, 1);
            let k = l.p.mov(Kind::R, 0);
            let top = l.p.label();
            l.p.place(&top);
            let av = match (&ca, ua) {
                (Some((ad, _, d)), _) => l.ld_shared(*d, *ad),
                (None, Some(u)) => u,
                _ => unreachable!(),
            };
            let bv = match (&cb, ub) {
                (Some((ad, _, d)), _) => l.ld_shared(*d, *ad),
                (None, Some(u)) => u,
                _ => unreachable!(),
            };
            if kind == Kind::F {
                let pr = l.p.op(Kind::F, "mul.rn.f32", &[&av, &bv]);
                l.p.ins(format!("add.rn.f32 {c}, {c}, {pr}"));
            } else {
                l.p.ins(format!("mad.lo.s32 {c}, {av}, {bv}, {c}"));
            }
            for (ad, step, _) in [ca, cb].into_iter().flatten() {
                l.p.ins(format!("add.u32 {ad}, {ad}, {step}"));
            }
            l.p.ins(format!("add.u32 {k}, {k}, 1"));
            let more = l.p.op(Kind::P, "setp.lt.u32", &[&k, &kk]);
            l.p.ins(format!("@{more} bra {top}"));
            c
        };
        if m * n == 1 {
            let c = one(self, 0, None);
            self.set(res, Repr::Uniform(c));
            return Ok(());
        }
        let regs: Vec<Reg> = (0..self.chunks(m * n)).map(|_| self.p.reg(kind)).collect();
        let regs2 = regs.clone();
        self.chunk_loop(m * n, &mut |l, i, e| {
            let c = one(l, i, Some(e));
            l.p.ins(format!("mov.{ty} {}, {c}", regs2[i]));
            Ok(())
        })?;
        self.set(res, Repr::Dist(regs));
        Ok(())
    }

    /// An operand of the tensor-core path: its view used in place when `ldmatrix` can read it.
    fn mma_operand(&mut self, v: opc_ir::ValueId, d: DType) -> MmaOperand {
        if let Some(w) = self.view(v) {
            let s = &w.strides;
            if s[1] == 1 && s[0] % 8 == 0 && s[0] > 0 {
                return MmaOperand { buf: w.buf, pitch: s[0], transposed: false };
            }
            if s[0] == 1 && s[1] % 8 == 0 && s[1] > 0 {
                return MmaOperand { buf: w.buf, pitch: s[1], transposed: true };
            }
        }
        let src = self.src(v);
        let shape = self.shape(v);
        let w: View = self.copy_to_buf(&src, d, &shape);
        MmaOperand { buf: w.buf, pitch: w.strides[0], transposed: false }
    }

    fn lower_mma(&mut self, op: &Op, m: usize, n: usize, kk: usize, d: DType) -> Result<()> {
        self.used_mma = true;
        let opa = self.mma_operand(op.args[0], d);
        let opb = self.mma_operand(op.args[1], d);
        let acc = op.args.get(2).map(|&c| match self.view(c) {
            Some(w) => Src::V(w, self.shape(c), DType::F32),
            None => self.src(c),
        });
        // output: f32 [m, n], rows padded by 4 floats when they are a multiple of 128 bytes
        let pitch = if n.is_multiple_of(32) { n + 4 } else { n };
        let out = self.alloc(m * pitch * 4);
        self.hazard(true, true, None, None);
        let warps = (self.t / 32) as usize;
        let ntiles = n / 8;
        let g = [8, 4, 2, 1].into_iter().find(|g| ntiles.is_multiple_of(*g)).unwrap_or(1);
        let ngroups = ntiles / g;
        let units = (m / 16) * ngroups;
        let ab = if d == DType::F16 { "f16" } else { "bf16" };
        let lane = self.p.op(Kind::R, "and.b32", &[&self.tid, &31]);
        let warp = self.p.op(Kind::R, "shr.u32", &[&self.tid, &5]);
        let l16 = self.p.op(Kind::R, "and.b32", &[&lane, &15]);
        let l8 = self.p.op(Kind::R, "and.b32", &[&lane, &7]);
        let li = self.p.op(Kind::R, "shr.u32", &[&lane, &3]); // matrix index of this lane's address
        let q = self.p.op(Kind::R, "shr.u32", &[&lane, &2]); // fragment row
        let rr = self.p.op(Kind::R, "and.b32", &[&lane, &3]);
        let c2 = self.p.op(Kind::R, "shl.b32", &[&rr, &1]); // fragment column pair
        let abase = self.smem_addr(opa.buf, None, d);
        let bbase = self.smem_addr(opb.buf, None, d);
        let obase = self.smem_addr(out, None, DType::F32);
        let u = self.p.mov(Kind::R, warp);
        let (utop, udone) = (self.p.label(), self.p.label());
        self.p.place(&utop);
        let stop = self.p.op(Kind::P, "setp.ge.u32", &[&u, &units]);
        self.p.ins(format!("@{stop} bra {udone}"));
        let mt = self.p.op(Kind::R, "div.u32", &[&u, &ngroups]);
        let ng = self.p.op(Kind::R, "rem.u32", &[&u, &ngroups]);
        let row0 = self.p.op(Kind::R, "shl.b32", &[&mt, &4]);
        let col0 = self.p.op(Kind::R, "mul.lo.u32", &[&ng, &(g * 8)]);
        // fragment coordinates: rows r0 = row0 + q, r1 = r0 + 8; columns col0 + 8·t + c2 (+1)
        let r0 = self.p.op(Kind::R, "add.u32", &[&row0, &q]);
        let r1 = self.p.op(Kind::R, "add.u32", &[&r0, &8]);
        let mut cs: Vec<[Reg; 4]> = vec![];
        for t in 0..g {
            let cc = self.p.op(Kind::R, "add.u32", &[&col0, &(8 * t)]);
            let cc = self.p.op(Kind::R, "add.u32", &[&cc, &c2]);
            let cc1 = self.p.op(Kind::R, "add.u32", &[&cc, &1]);
            let mut frag = [Reg { kind: Kind::F, n: 0 }; 4];
            for (slot, (r, c)) in [(r0, cc), (r0, cc1), (r1, cc), (r1, cc1)].into_iter().enumerate() {
                frag[slot] = self.acc_init(&acc, r, c, n);
            }
            cs.push(frag);
        }
        // A fragment address of this lane at k0 = 0 (advanced by 16 columns / rows per k-step)
        let (a_addr, a_step) = if !opa.transposed {
            // row row0 + l16, column 8·(lane / 16)
            let r = self.p.op(Kind::R, "add.u32", &[&row0, &l16]);
            let hi = self.p.op(Kind::R, "shr.u32", &[&lane, &4]);
            let c = self.p.op(Kind::R, "shl.b32", &[&hi, &3]);
            let e = self.p.op(Kind::R, "mad.lo.u32", &[&r, &opa.pitch, &c]);
            (self.p.op(Kind::R, "mad.lo.u32", &[&e, &2, &abase]), 32)
        } else {
            // stored row k = 8·(li / 2) + l8, column m = row0 + 8·(li % 2)
            let kh = self.p.op(Kind::R, "shr.u32", &[&li, &1]);
            let k = self.p.op(Kind::R, "mad.lo.u32", &[&kh, &8, &l8]);
            let mh = self.p.op(Kind::R, "and.b32", &[&li, &1]);
            let mcol = self.p.op(Kind::R, "mad.lo.u32", &[&mh, &8, &row0]);
            let e = self.p.op(Kind::R, "mad.lo.u32", &[&k, &opa.pitch, &mcol]);
            (self.p.op(Kind::R, "mad.lo.u32", &[&e, &2, &abase]), 32 * opa.pitch)
        };
        // B fragment address (lanes 0..16) for n-tile 0 at k0 = 0
        let kb = self.p.op(Kind::R, "and.b32", &[&li, &1]); // which k half
        let (b_addr, b_kstep, b_tstep) = if opb.transposed {
            // stored [N][K]: row n = col0 + l8, column k = 8·kb
            let nrow = self.p.op(Kind::R, "add.u32", &[&col0, &l8]);
            let kc = self.p.op(Kind::R, "shl.b32", &[&kb, &3]);
            let e = self.p.op(Kind::R, "mad.lo.u32", &[&nrow, &opb.pitch, &kc]);
            (self.p.op(Kind::R, "mad.lo.u32", &[&e, &2, &bbase]), 32, 16 * opb.pitch)
        } else {
            // stored [K][N]: row k = 8·kb + l8, column n = col0
            let krow = self.p.op(Kind::R, "mad.lo.u32", &[&kb, &8, &l8]);
            let e = self.p.op(Kind::R, "mad.lo.u32", &[&krow, &opb.pitch, &col0]);
            (self.p.op(Kind::R, "mad.lo.u32", &[&e, &2, &bbase]), 32 * opb.pitch, 16)
        };
        let k = self.p.mov(Kind::R, 0);
        let ktop = self.p.label();
        self.p.place(&ktop);
        let af: Vec<Reg> = (0..4).map(|_| self.p.reg(Kind::R)).collect();
        let atr = if opa.transposed { ".trans" } else { "" };
        self.p.ins(format!("ldmatrix.sync.aligned.m8n8.x4{atr}.shared.b16 {{{}, {}, {}, {}}}, [{a_addr}]", af[0], af[1], af[2], af[3]));
        let btr = if opb.transposed { "" } else { ".trans" };
        for (t, c) in cs.iter().enumerate() {
            let bf: Vec<Reg> = (0..2).map(|_| self.p.reg(Kind::R)).collect();
            let ba = if t == 0 { b_addr } else { self.p.op(Kind::R, "add.u32", &[&b_addr, &(b_tstep * t as i64)]) };
            self.p.ins(format!("ldmatrix.sync.aligned.m8n8.x2{btr}.shared.b16 {{{}, {}}}, [{ba}]", bf[0], bf[1]));
            let cl = format!("{{{}, {}, {}, {}}}", c[0], c[1], c[2], c[3]);
            self.p.ins(format!(
                "mma.sync.aligned.m16n8k16.row.col.f32.{ab}.{ab}.f32 {cl}, {{{}, {}, {}, {}}}, {{{}, {}}}, {cl}",
                af[0], af[1], af[2], af[3], bf[0], bf[1]
            ));
        }
        self.p.ins(format!("add.u32 {a_addr}, {a_addr}, {a_step}"));
        self.p.ins(format!("add.u32 {b_addr}, {b_addr}, {b_kstep}"));
        self.p.ins(format!("add.u32 {k}, {k}, 16"));
        let more = self.p.op(Kind::P, "setp.lt.u32", &[&k, &kk]);
        self.p.ins(format!("@{more} bra {ktop}"));
        // write the fragments: rows r0 / r1, columns cc, cc + 1
        for (t, c) in cs.iter().enumerate() {
            let cc = self.p.op(Kind::R, "add.u32", &[&col0, &(8 * t)]);
            let cc = self.p.op(Kind::R, "add.u32", &[&cc, &c2]);
            for (half, r) in [r0, r1].into_iter().enumerate() {
                let e = self.p.op(Kind::R, "mad.lo.u32", &[&r, &pitch, &cc]);
                let a = self.p.op(Kind::R, "mad.lo.u32", &[&e, &4, &obase]);
                self.p.ins(format!("st.shared.v2.f32 [{a}], {{{}, {}}}", c[2 * half], c[2 * half + 1]));
            }
        }
        self.p.ins(format!("add.u32 {u}, {u}, {warps}"));
        self.p.ins(format!("bra {utop}"));
        self.p.place(&udone);
        self.set(op.result(), Repr::View(View { buf: out, strides: vec![pitch as i64, 1] }));
        Ok(())
    }
}
