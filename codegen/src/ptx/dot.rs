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
//! **Integer tensor-core path** (`i8`/`u8` or `i4` operands, `i32` accumulator, M % 16 = N % 8 = 0,
//! any K): `mma.sync.aligned.m16n8k32.row.col.s32.{s8,u8}` or `m16n8k64 ... .s4.s4.s32` on every
//! arch (`wgmma` has no 4-bit type; 8-bit `wgmma` is not used). The operands are first packed
//! K-contiguous (A as `[M][K]`, B as `[N][K]`; 4-bit codes two per byte, element `2j` in the low
//! nibble) into buffers with an odd number of 16-byte chunks per row and K zero-padded to whole
//! instructions, then read by the same `ldmatrix` addressing as the 16-bit path (the layout math
//! and its proof against the ISA tables are in `frag.rs`, [`IntMma`]); 8-bit operands already
//! stored that way with a suitable pitch are read in place. Products and sums are exact in i32
//! and wrap like the interpreter's (no `.satfinite`), so this path is bit-identical to it.
//! Ragged global edges are the loads' business: out-of-range elements are already 0.
//!
//! GEMM *loops* (a `for` whose body is just the two loads and this `dot`) do not come here:
//! `gemm.rs` pipelines them (cp.async / TMA, accumulators in registers across iterations),
//! integer ones included (`int4_gemm`: the packed tiles are copied as they lie in memory).

use opc_ir::{DType, Op, ValueId};

use super::emit::{fimm, Kind, Reg};
use super::frag::IntMma;
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

/// Whether `dot` op `op` takes a tensor-core path (16-bit floats or integers).
pub(super) fn mma_eligible(k: &opc_ir::Kernel, op: &Op) -> bool {
    let (a, b) = (k.ty(op.args[0]), k.ty(op.args[1]));
    let (m, kk, n) = (a.shape[0], a.shape[1], b.shape[1]);
    let tiles = m % 16 == 0 && n % 8 == 0 && m > 0 && n > 0 && kk > 0;
    match a.dtype {
        DType::F16 | DType::BF16 => tiles && kk % 16 == 0,
        d => tiles && int_mma(d).is_some(),
    }
}

/// The integer `mma` shape for operand dtype `d`, if it has one.
pub(super) fn int_mma(d: DType) -> Option<IntMma> {
    match d {
        DType::I8 | DType::U8 => Some(IntMma { bits: 8 }),
        DType::I4 => Some(IntMma { bits: 4 }),
        _ => None,
    }
}

/// The PTX type of an integer `mma` operand dtype.
pub(super) fn int_ptx_type(d: DType) -> &'static str {
    match d {
        DType::U8 => "u8",
        DType::I8 => "s8",
        _ => "s4",
    }
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

    /// An integer `mma` operand stored K-contiguous (module docs), `kdim` being its K dim: A
    /// (`kdim` 1) as `[M][K]`, B (`kdim` 0) as `[N][K]`. An 8-bit view already laid out so is used in
    /// place; anything else is packed into a fresh buffer laid out by [`IntMma::pitch`], with
    /// the K padding zero.
    fn int_operand(&mut self, v: ValueId, d: DType, im: IntMma, kdim: usize) -> MmaOperand {
        let shape = self.shape(v);
        let (kk, rows) = (shape[kdim], shape[1 - kdim]);
        let transposed = kdim == 0;
        let view = self.view(v);
        if let Some(w) = &view {
            let (sk, sr) = (w.strides[kdim], w.strides[1 - kdim]);
            if im.bits == 8 && sk == 1 && kk % im.k() as usize == 0 && sr > 0 && sr % 16 == 0 {
                return MmaOperand { buf: w.buf, pitch: sr / 2, transposed };
            }
        }
        let src = match view {
            Some(w) => Src::V(w, shape.clone(), d),
            None => self.src(v),
        };
        let pitch = im.pitch(kk as u32) as usize;
        let wpr = (im.row_bytes(kk as u32) / 4) as usize; // packed words per row
        let per = (32 / im.bits) as usize; // elements per word
        let padded = wpr * per != kk;
        let buf = self.alloc(rows * pitch);
        self.hazard(matches!(src, Src::V(..)), true, None, None);
        let mask = (1u32 << im.bits) - 1;
        self.chunk_loop(rows * wpr, &mut |l, _, e| {
            let r = l.p.op(Kind::R, "div.u32", &[&e, &wpr]);
            let wi = l.p.op(Kind::R, "rem.u32", &[&e, &wpr]);
            let k0 = l.p.op(Kind::R, "mul.lo.u32", &[&wi, &per]);
            // element (r, k0) of the source, then +sk elements per j
            let first = match &src {
                Src::V(w, _, _) => {
                    let (sk, sr) = (w.strides[kdim], w.strides[1 - kdim]);
                    let el = l.p.op(Kind::R, "mul.lo.u32", &[&r, &sr]);
                    let el = l.p.op(Kind::R, "mad.lo.u32", &[&k0, &sk, &el]);
                    Some((l.smem_addr(w.buf, Some(el), d), sk * esize(d) as i64))
                }
                _ => None,
            };
            let word = l.p.mov(Kind::R, 0);
            for j in 0..per {
                let x = match (&src, first) {
                    (Src::U(u), _) => *u,
                    (_, Some((a0, step))) => {
                        let a = if j == 0 { a0 } else { l.p.op(Kind::R, "add.u32", &[&a0, &(step * j as i64)]) };
                        if padded {
                            let kj = l.p.op(Kind::R, "add.u32", &[&k0, &j]);
                            let ok = l.p.op(Kind::P, "setp.lt.u32", &[&kj, &kk]);
                            let x = l.p.mov(Kind::R, 0);
                            let ld = if d == DType::U8 { "u8" } else { "s8" };
                            l.p.ins(format!("@{ok} ld.shared.{ld} {x}, [{a}]"));
                            x
                        } else {
                            l.ld_shared(d, a)
                        }
                    }
                    _ => unreachable!("mma operands are views or uniforms"),
                };
                // the padding of a uniform operand is zero too
                let x = if padded && matches!(src, Src::U(_)) {
                    let kj = l.p.op(Kind::R, "add.u32", &[&k0, &j]);
                    let ok = l.p.op(Kind::P, "setp.lt.u32", &[&kj, &kk]);
                    l.p.op(Kind::R, "selp.b32", &[&x, &0, &ok])
                } else {
                    x
                };
                let bits = l.p.op(Kind::R, "and.b32", &[&x, &mask]);
                let (byte, shift) = im.elem_byte(j as u32);
                let at = 8 * byte + shift;
                let sh = if at == 0 { bits } else { l.p.op(Kind::R, "shl.b32", &[&bits, &at]) };
                l.p.ins(format!("or.b32 {word}, {word}, {sh}"));
            }
            let base = l.smem_addr(buf, None, d);
            let a = l.p.op(Kind::R, "mad.lo.u32", &[&r, &pitch, &base]);
            let a = l.p.op(Kind::R, "mad.lo.u32", &[&wi, &4, &a]);
            l.p.ins(format!("st.shared.b32 [{a}], {word}"));
            Ok(())
        })
        .expect("packing cannot fail");
        MmaOperand { buf, pitch: pitch as i64 / 2, transposed }
    }

    fn lower_mma(&mut self, op: &Op, m: usize, n: usize, kk: usize, d: DType) -> Result<()> {
        self.used_mma = true;
        let int = int_mma(d);
        // K in b16 units of the stored rows (one k-step of the loop below is 16 of them)
        let (opa, opb, kk) = match int {
            None => (self.mma_operand(op.args[0], d), self.mma_operand(op.args[1], d), kk),
            Some(im) => {
                let (a, b) = (self.int_operand(op.args[0], d, im, 1), self.int_operand(op.args[1], d, im, 0));
                (a, b, im.row_bytes(kk as u32) as usize / 2)
            }
        };
        let rd = self.dtype(op.result());
        let kind = if int.is_some() { Kind::R } else { Kind::F };
        // output: f32 / i32 [m, n], rows padded by 4 words when they are a multiple of 128 bytes
        let pitch = if n.is_multiple_of(32) { n + 4 } else { n };
        let out = self.alloc(m * pitch * 4);
        let acc = op.args.get(2).map(|&c| {
            if self.dist_only(c) {
                // an accumulator in registers (a loop-carried one) is stored straight into the
                // result buffer: every element is read into its fragment by the warp that later
                // overwrites it, so no second buffer is needed
                let s = self.src(c);
                let w = self.copy_into(&s, rd, &[m, n], View { buf: out, strides: vec![pitch as i64, 1] });
                return Src::V(w, vec![m, n], rd);
            }
            match self.view(c) {
                Some(w) => Src::V(w, self.shape(c), rd),
                None => self.src(c),
            }
        });
        self.hazard(true, true, None, None);
        let warps = (self.t / 32) as usize;
        let ntiles = n / 8;
        let g = [8, 4, 2, 1].into_iter().find(|g| ntiles.is_multiple_of(*g)).unwrap_or(1);
        let ngroups = ntiles / g;
        let units = (m / 16) * ngroups;
        let instr = match int {
            Some(im) => {
                let t = int_ptx_type(d);
                self.tensor_cores.get_or_insert(if im.bits == 4 { "mma.sync.m16n8k64.s4 + ldmatrix" } else { "mma.sync.m16n8k32.s8 + ldmatrix" });
                format!("mma.sync.aligned.m16n8k{}.row.col.s32.{t}.{t}.s32", im.k())
            }
            None => {
                let ab = if d == DType::F16 { "f16" } else { "bf16" };
                format!("mma.sync.aligned.m16n8k16.row.col.f32.{ab}.{ab}.f32")
            }
        };
        let sty = if int.is_some() { "b32" } else { "f32" };
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
            let mut frag = [Reg { kind, n: 0 }; 4];
            for (slot, (r, c)) in [(r0, cc), (r0, cc1), (r1, cc), (r1, cc1)].into_iter().enumerate() {
                frag[slot] = self.acc_init(&acc, r, c, n, kind);
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
            self.p.ins(format!("{instr} {cl}, {{{}, {}, {}, {}}}, {{{}, {}}}, {cl}", af[0], af[1], af[2], af[3], bf[0], bf[1]));
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
                self.p.ins(format!("st.shared.v2.{sty} [{a}], {{{}, {}}}", c[2 * half], c[2 * half + 1]));
            }
        }
        self.p.ins(format!("add.u32 {u}, {u}, {warps}"));
        self.p.ins(format!("bra {utop}"));
        self.p.place(&udone);
        self.set(op.result(), Repr::View(View { buf: out, strides: vec![pitch as i64, 1] }));
        Ok(())
    }
}
