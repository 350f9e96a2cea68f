//! `lower-ptx`: tile IR → one PTX entry whose CTA runs one program.
//!
//! **Where tile values live** ([`Repr`]):
//! - [`Repr::Uniform`]: one register per thread, every thread holding the same value. Scalars,
//!   splat constants, elementwise ops over uniforms, and every op whose result has one element
//!   (each thread computes it redundantly: no barrier, no shared memory).
//! - [`Repr::Dist`]: distributed registers. Thread `t` holds elements `t + i·T` (row-major linear
//!   index, `T` threads per CTA) in its `i`-th register, so elementwise ops, loads, stores, `dot`
//!   results and reductions need no communication, and global accesses of consecutive elements
//!   are coalesced. `expand_dims` and `reshape` keep the linear order, so they are free.
//! - [`Repr::View`]: a strided view of a shared-memory buffer. Values whose uses read other
//!   threads' elements (`broadcast`, `permute`, `dot` operands, `reduce` / `cumsum` inputs, gather
//!   indices) are stored to shared memory once, right where they are defined (see
//!   [`needs_smem`]); `broadcast`, `permute` and `expand_dims` of a view are views (stride 0,
//!   permuted strides). Shared storage is typed: 4 bytes for f32/i32, the 2-byte bit pattern for
//!   f16/bf16 (what `ldmatrix` wants) and one byte for bool, 8-bit ints and the 4-bit codes.
//!
//! **Shared memory plan.** The lowering runs twice. The first run records every buffer's size and
//! the op positions where it is written and read (a read inside a loop that began after the
//! buffer was written keeps it alive to the end of that loop); `plan.rs` then packs the live
//! ranges first-fit, and the second run emits with the planned offsets.
//!
//! **Barriers.** The lowering tracks shared-memory and per-tensor global reads and writes since
//! the last `bar.sync 0`; an op that writes what may have been read or written, or reads what may
//! have been written, by other threads is preceded by a barrier. `for` and `if` bodies start and
//! end clean (a barrier where needed), so the rule holds across back edges. Loop bounds and `if`
//! conditions are uniform by construction, so every thread reaches every barrier.
//!
//! **Control flow.** `for` carries scalars and tiles in registers (uniform or distributed), moved
//! through temporaries at `yield` (a parallel copy); a non-positive step stores the loop's site
//! code into the error word and exits, which the runtime reports as the interpreter does. `if`
//! is a uniform branch.
//!
//! ```text
//! tile IR:  %5 = load @x[%3, %4] : f32[8, 16]     %7 = mul %5, %6 : f32[8, 16]   (%6 = param @s)
//! lowered:  thread t, e = t (one chunk: 128 elements ≥ 8·16): i = e / 16, j = e % 16;
//!           p = (r[i] <u M) ∧ (c[j] <u N); x = p ? ld.global.f32 [x + 4(r·N + c)] : 0
//!           y = mul.rn.f32 x, s                      (registers only, no barrier)
//! ```

use std::collections::BTreeSet;

use opc_ir::{Block, DType, Kernel, Op, OpKind, ParamKind, Scalar, ValueId};

use super::emit::{fimm, Kind, Ptx, Reg};
use crate::{CodegenError, Result};

/// How a tile value is held (see the module docs).
#[derive(Clone, Debug)]
pub(super) enum Repr {
    Uniform(Reg),
    Dist(Vec<Reg>),
    View(View),
}

/// A strided view (element strides) of a shared-memory buffer.
#[derive(Clone, Debug)]
pub(super) struct View {
    pub buf: usize,
    pub strides: Vec<i64>,
}

/// How an op's loop reads one operand.
#[derive(Clone, Debug)]
pub(super) enum Src {
    U(Reg),
    D(Vec<Reg>),
    /// A view with the operand's own shape (elements pair up in row-major order) and dtype.
    V(View, Vec<usize>, DType),
}

/// One shared-memory buffer and where it is used (op positions; the loops open at each use).
#[derive(Clone, Debug, Default)]
pub(super) struct Buf {
    pub bytes: u32,
    pub def: u32,
    pub uses: Vec<(u32, Vec<usize>)>,
    /// `(parent, byte offset)`: this buffer lives inside `parent` (which its uses keep live)
    /// and takes no space of its own in the plan.
    pub within: Option<(usize, u32)>,
}

/// Launch-time facts about one tensor parameter, computed once at entry.
#[derive(Clone, Debug)]
pub(super) struct TensorRegs {
    pub base: Reg,
    pub shape: Vec<Reg>,
    pub strides: Vec<Reg>,
    pub dtype: DType,
}

/// Register class of one element of a dtype: f32 for float values, b32 for everything else.
pub(super) fn ekind(d: DType) -> Kind {
    if d.is_float() {
        Kind::F
    } else {
        Kind::R
    }
}

/// Bytes of one element in shared memory.
pub(super) fn esize(d: DType) -> u32 {
    match d {
        DType::F32 | DType::I32 => 4,
        DType::F16 | DType::BF16 => 2,
        _ => 1,
    }
}

pub(super) use crate::loops::plan::{is_contiguous, row_major};
pub(super) use crate::loops::sites::op_ctx;
pub use crate::loops::sites::for_sites;

/// Values some use of which reads other threads' elements, so they are stored to shared memory
/// where they are defined (when they end up distributed).
pub(super) fn needs_smem(k: &Kernel) -> Vec<bool> {
    let mut need = vec![false; k.values.len()];
    opc_ir::walk_ops(&k.body, &mut |op| match &op.kind {
        OpKind::Broadcast | OpKind::Permute(_) | OpKind::Reduce { .. } | OpKind::Scan { .. } => need[op.args[0].0 as usize] = true,
        OpKind::Dot => {
            // the operands; not the accumulator: the general path reads it from the thread's
            // own registers, the tensor-core path stores registers into its result buffer
            for &a in &op.args[..2] {
                need[a.0 as usize] = true;
            }
        }
        OpKind::Load { tensor, .. } | OpKind::Store { tensor, .. } | OpKind::AtomicAdd { tensor, .. } => {
            let rank = k.tensor_dims(*tensor).map_or(0, |d| d.len());
            let access: usize = op.args[..rank.min(op.args.len())].iter().map(|&a| k.ty(a).numel()).product();
            for &a in &op.args[..rank.min(op.args.len())] {
                if k.ty(a).numel() != access {
                    need[a.0 as usize] = true;
                }
            }
        }
        _ => {}
    });
    need
}

/// Reads and writes since the last barrier (shared memory, and global memory per tensor).
#[derive(Default, Clone)]
pub(super) struct Hazards {
    pub smem_r: bool,
    pub smem_w: bool,
    pub gl_r: BTreeSet<usize>,
    gl_w: BTreeSet<usize>,
}

impl Hazards {
    fn any(&self) -> bool {
        self.smem_r || self.smem_w || !self.gl_r.is_empty() || !self.gl_w.is_empty()
    }
}

/// What one run of the lowering produces.
pub(super) struct Lowered {
    pub body: String,
    pub bufs: Vec<Buf>,
    pub loops: Vec<(u32, u32)>,
    pub tensor_cores: Option<&'static str>,
    pub tmaps: Vec<super::TensorMap>,
    /// The FA3 attention loop's launch facts, if the kernel has one (`attn.rs`).
    pub attn: Option<super::attn::AttnInfo>,
}

pub(super) struct Lower<'k> {
    pub k: &'k Kernel,
    /// Threads per CTA.
    pub t: u32,
    pub p: Ptx,
    pub reprs: Vec<Option<Repr>>,
    need: Vec<bool>,
    /// Shared copies made where a value was defined (see [`needs_smem`]).
    copies: Vec<Option<View>>,
    pub bufs: Vec<Buf>,
    plan: Option<Vec<u32>>,
    pos: u32,
    loop_stack: Vec<usize>,
    loops: Vec<(u32, u32)>,
    pub hz: Hazards,
    pub tid: Reg,
    pub smem: Reg,
    dims: Vec<Reg>,
    scalars: Vec<Option<Reg>>,
    pub tensors: Vec<Option<TensorRegs>>,
    err: Reg,
    for_count: u32,
    pub used_mma: bool,
    /// Which fast paths this compile may use (see `mod.rs`).
    pub feats: super::Features,
    /// The tensor-core instruction family used, for the manifest.
    pub tensor_cores: Option<&'static str>,
    /// Tensor maps the host builds, one `.param` each (sm_90a TMA path).
    pub tmaps: Vec<super::TensorMap>,
    /// Run-time byte offsets added to a buffer's address: the stage a staged loop reads
    /// (`stage.rs`).
    pub dyn_off: std::collections::HashMap<usize, Reg>,
    /// The persistent program walk, while its body is lowered (`persistent.rs`).
    pub walk: Option<super::persistent::Walk>,
    /// GEMM rings that live across programs, by the loop's first result.
    pub rings: std::collections::HashMap<u32, super::persistent::Ring>,
    /// Loads of the current staged loop, by result: the view of the stage they read.
    pub staged_views: std::collections::HashMap<u32, View>,
    /// Set by the FA3 attention loop (`attn.rs`).
    pub attn: Option<super::attn::AttnInfo>,
}

impl<'k> Lower<'k> {
    pub(super) fn unsupported(&self, op: &Op, why: &str) -> CodegenError {
        CodegenError::Unsupported { kernel: self.k.name.clone(), target: "ptx".into(), reason: format!("{}: {why}", op_ctx(op)) }
    }

    pub(super) fn dtype(&self, v: ValueId) -> DType {
        self.k.ty(v).dtype
    }

    pub(super) fn shape(&self, v: ValueId) -> Vec<usize> {
        self.k.ty(v).shape.clone()
    }

    pub(super) fn numel(&self, v: ValueId) -> usize {
        self.k.ty(v).numel()
    }

    pub(super) fn repr(&self, v: ValueId) -> Repr {
        self.reprs[v.0 as usize]
            .clone()
            .unwrap_or_else(|| panic!("lower-ptx: %{} used before its definition (the verifier should catch this)", v.0))
    }

    /// Number of per-thread registers of a distributed tile of `n` elements.
    pub(super) fn chunks(&self, n: usize) -> usize {
        n.div_ceil(self.t as usize)
    }

    /// Define `v`; a distributed value that some use reads across threads is stored to shared
    /// memory right here.
    pub(super) fn set(&mut self, v: ValueId, r: Repr) {
        self.set_with_copy(v, r, None)
    }

    /// As [`Self::set`], reusing `copy` (a shared copy of the same elements) if there is one.
    pub(super) fn set_with_copy(&mut self, v: ValueId, r: Repr, copy: Option<View>) {
        let dist = matches!(r, Repr::Dist(_));
        self.reprs[v.0 as usize] = Some(r);
        if copy.is_some() && dist {
            self.copies[v.0 as usize] = copy;
        } else if dist && self.need[v.0 as usize] {
            let view = self.store_dist(v);
            self.copies[v.0 as usize] = Some(view);
        } else {
            self.copies[v.0 as usize] = None;
        }
    }

    // -----------------------------------------------------------------------------------------
    // Shared memory buffers and hazards
    // -----------------------------------------------------------------------------------------

    /// Enter a loop for the buffer lifetimes: a buffer defined before it and used inside
    /// stays live to its end (`intervals`).
    pub(super) fn open_loop(&mut self) -> usize {
        self.loops.push((self.pos, 0));
        self.loop_stack.push(self.loops.len() - 1);
        self.loops.len() - 1
    }

    /// Leave loop `id` (from [`Lower::open_loop`]).
    pub(super) fn close_loop(&mut self, id: usize) {
        self.loop_stack.pop();
        self.loops[id].1 = self.pos;
    }

    /// A fresh shared buffer of `bytes` (16-byte aligned in the plan).
    pub(super) fn alloc(&mut self, bytes: usize) -> usize {
        self.bufs.push(Buf { bytes: bytes as u32, def: self.pos, uses: vec![], within: None });
        self.bufs.len() - 1
    }

    /// A buffer of `bytes` at byte `off` (16-byte aligned) inside buffer `parent`, reusing
    /// space the parent no longer needs; every use of it is also a use of the parent.
    pub(super) fn alloc_within(&mut self, parent: usize, off: u32, bytes: usize) -> usize {
        debug_assert!(off.is_multiple_of(16) && off as usize + bytes <= self.bufs[parent].bytes as usize);
        self.bufs.push(Buf { bytes: 0, def: self.pos, uses: vec![], within: Some((parent, off)) });
        self.bufs.len() - 1
    }

    /// Byte offset of a buffer in the shared arena (0 in the planning run).
    pub(super) fn buf_off(&mut self, buf: usize) -> u32 {
        self.bufs[buf].uses.push((self.pos, self.loop_stack.clone()));
        if let Some((parent, off)) = self.bufs[buf].within {
            return self.buf_off(parent) + off;
        }
        self.plan.as_ref().map_or(0, |p| p[buf])
    }

    /// Barrier before an op that reads (`r`) and/or writes (`w`) shared memory or tensors.
    pub(super) fn hazard(&mut self, smem_r: bool, smem_w: bool, gl_r: Option<usize>, gl_w: Option<usize>) {
        let h = &self.hz;
        let need = (smem_w && (h.smem_r || h.smem_w))
            || (smem_r && h.smem_w)
            || gl_w.is_some_and(|t| h.gl_r.contains(&t) || h.gl_w.contains(&t))
            || gl_r.is_some_and(|t| h.gl_w.contains(&t));
        if need {
            self.barrier();
        }
        self.hz.smem_r |= smem_r;
        self.hz.smem_w |= smem_w;
        if let Some(t) = gl_r {
            self.hz.gl_r.insert(t);
        }
        if let Some(t) = gl_w {
            self.hz.gl_w.insert(t);
        }
    }

    pub(super) fn barrier(&mut self) {
        self.p.ins("bar.sync 0");
        self.hz = Hazards::default();
    }

    /// A barrier if anything happened since the last one (region boundaries).
    fn flush(&mut self) {
        if self.hz.any() {
            self.barrier();
        }
    }

    /// Shared address of element `elem` (u32 register or None for 0) of buffer `buf`.
    pub(super) fn smem_addr(&mut self, buf: usize, elem: Option<Reg>, d: DType) -> Reg {
        let off = self.buf_off(buf);
        let base = match self.dyn_off.get(&buf).copied() {
            Some(d) => self.p.op(Kind::R, "add.u32", &[&self.smem, &d]),
            None => self.smem,
        };
        match elem {
            None => self.p.op(Kind::R, "add.u32", &[&base, &off]),
            Some(e) => {
                let b = self.p.op(Kind::R, "add.u32", &[&base, &off]);
                self.p.op(Kind::R, "mad.lo.u32", &[&e, &esize(d), &b])
            }
        }
    }

    /// Load one element of dtype `d` from shared address `a` into its element register.
    pub(super) fn ld_shared(&mut self, d: DType, a: Reg) -> Reg {
        match d {
            DType::F32 => self.p.op(Kind::F, "ld.shared.f32", &[&format!("[{a}]")]),
            DType::I32 => self.p.op(Kind::R, "ld.shared.b32", &[&format!("[{a}]")]),
            DType::F16 => {
                let h = self.p.op(Kind::H, "ld.shared.b16", &[&format!("[{a}]")]);
                self.p.op(Kind::F, "cvt.f32.f16", &[&h])
            }
            DType::BF16 => {
                let r = self.p.op(Kind::R, "ld.shared.u16", &[&format!("[{a}]")]);
                self.bf16_bits_to_f32(r)
            }
            DType::I8 | DType::I4 => self.p.op(Kind::R, "ld.shared.s8", &[&format!("[{a}]")]),
            _ => self.p.op(Kind::R, "ld.shared.u8", &[&format!("[{a}]")]),
        }
    }

    /// Store one element register of dtype `d` at shared address `a`.
    pub(super) fn st_shared(&mut self, d: DType, a: Reg, x: Reg) {
        match d {
            DType::F32 => self.p.ins(format!("st.shared.f32 [{a}], {x}")),
            DType::I32 => self.p.ins(format!("st.shared.b32 [{a}], {x}")),
            DType::F16 | DType::BF16 => {
                let h = self.f32_to_half_bits(d, x);
                self.p.ins(format!("st.shared.b16 [{a}], {h}"));
            }
            _ => self.p.ins(format!("st.shared.u8 [{a}], {x}")),
        }
    }

    /// f32 value of bf16 bits held in the low half of a b32 register.
    pub(super) fn bf16_bits_to_f32(&mut self, r: Reg) -> Reg {
        let s = self.p.op(Kind::R, "shl.b32", &[&r, &16]);
        self.p.op(Kind::F, "mov.b32", &[&s])
    }

    /// The 16-bit pattern of an f16/bf16 value held exactly in an f32 register.
    pub(super) fn f32_to_half_bits(&mut self, d: DType, x: Reg) -> Reg {
        if d == DType::F16 {
            self.p.op(Kind::H, "cvt.rn.f16.f32", &[&x])
        } else {
            self.p.op(Kind::H, "cvt.rn.bf16.f32", &[&x])
        }
    }

    /// Row pitch (elements) of a fresh 2-D buffer: 16-bit tiles with 128-byte rows are padded by
    /// 16 bytes so that the 8 rows an `ldmatrix` reads fall into different banks.
    pub(super) fn pitch(d: DType, shape: &[usize]) -> Vec<i64> {
        if shape.len() == 2 && esize(d) == 2 && shape[1].is_multiple_of(64) {
            vec![shape[1] as i64 + 8, 1]
        } else {
            row_major(shape)
        }
    }

    /// Store a distributed value into a fresh buffer; the returned view has `v`'s shape.
    fn store_dist(&mut self, v: ValueId) -> View {
        let src = self.src(v);
        self.copy_to_buf(&src, self.dtype(v), &self.shape(v))
    }

    /// Copy the elements of `src` (an operand of shape `shape`) into a fresh buffer laid out by
    /// [`Self::pitch`]; the returned view has `shape`.
    pub(super) fn copy_to_buf(&mut self, src: &Src, d: DType, shape: &[usize]) -> View {
        let strides = Self::pitch(d, shape);
        let n: usize = shape.iter().product();
        let bytes = if shape.len() == 2 { shape[0] * strides[0] as usize } else { n } * esize(d) as usize;
        let buf = self.alloc(bytes);
        self.copy_into(src, d, shape, View { buf, strides })
    }

    /// Copy the elements of `src` (an operand of shape `shape`) into `dst`, a 2-D view with a
    /// unit column stride or a row-major view; returns `dst`.
    pub(super) fn copy_into(&mut self, src: &Src, d: DType, shape: &[usize], dst: View) -> View {
        let (buf, strides) = (dst.buf, dst.strides);
        let n: usize = shape.iter().product();
        self.hazard(matches!(src, Src::V(..)), true, None, None);
        let padded = strides != row_major(shape);
        self.chunk_loop(n, &mut |l, i, e| {
            let x = l.read(src, i, e);
            let elem = if padded {
                let row = l.p.op(Kind::R, "div.u32", &[&e, &shape[1]]);
                let col = l.p.op(Kind::R, "rem.u32", &[&e, &shape[1]]);
                l.p.op(Kind::R, "mad.lo.u32", &[&row, &strides[0], &col])
            } else {
                e
            };
            let a = l.smem_addr(buf, Some(elem), d);
            l.st_shared(d, a, x);
            Ok(())
        })
        .expect("a copy cannot fail");
        View { buf, strides }
    }

    /// Whether `v` is held in registers only: distributed, with no shared copy yet.
    pub(super) fn dist_only(&self, v: ValueId) -> bool {
        self.copies[v.0 as usize].is_none() && matches!(self.repr(v), Repr::Dist(_))
    }

    /// A view of `v` in shared memory (a copy is made here if `v` is distributed and has none).
    pub(super) fn view(&mut self, v: ValueId) -> Option<View> {
        if let Some(c) = self.copies[v.0 as usize].clone() {
            return Some(c);
        }
        match self.repr(v) {
            Repr::View(w) => Some(w),
            Repr::Dist(_) => {
                let w = self.store_dist(v);
                Some(w)
            }
            Repr::Uniform(_) => None,
        }
    }

    /// How a loop over `v`'s elements reads it.
    pub(super) fn src(&mut self, v: ValueId) -> Src {
        match self.repr(v) {
            Repr::Uniform(r) => Src::U(r),
            Repr::Dist(rs) => Src::D(rs),
            Repr::View(w) => Src::V(w, self.shape(v), self.dtype(v)),
        }
    }

    /// The single value of `v`: uniform, or (one element) read from shared memory.
    pub(super) fn uniform(&mut self, v: ValueId) -> Option<Reg> {
        match self.repr(v) {
            Repr::Uniform(r) => Some(r),
            Repr::View(w) if self.numel(v) == 1 => {
                self.hazard(true, false, None, None);
                let d = self.dtype(v);
                let a = self.smem_addr(w.buf, None, d);
                Some(self.ld_shared(d, a))
            }
            _ => None,
        }
    }

    // -----------------------------------------------------------------------------------------
    // Loops over elements
    // -----------------------------------------------------------------------------------------

    /// Run `f(chunk, e)` for each chunk `i` of an `n`-element distributed tile, `e = tid + i·T`
    /// (u32), skipping elements past `n`.
    pub(super) fn chunk_loop(&mut self, n: usize, f: &mut dyn FnMut(&mut Self, usize, Reg) -> Result<()>) -> Result<()> {
        let t = self.t as usize;
        for i in 0..self.chunks(n) {
            let e = if i == 0 { self.tid } else { self.p.op(Kind::R, "add.u32", &[&self.tid, &(i * t)]) };
            if (i + 1) * t > n {
                let skip = self.p.label();
                let p = self.p.op(Kind::P, "setp.ge.u32", &[&e, &n]);
                self.p.ins(format!("@{p} bra {skip}"));
                f(self, i, e)?;
                self.p.place(&skip);
            } else {
                f(self, i, e)?;
            }
        }
        Ok(())
    }

    /// Element index (u32) in a view with `strides` of linear element `e` of `shape`.
    pub(super) fn view_elem(&mut self, shape: &[usize], strides: &[i64], e: Reg) -> Option<Reg> {
        // Merge dims: drop size-1 and stride-0 dims... (stride 0 dims read nothing: skip them).
        let rm = row_major(shape);
        let mut acc: Option<Reg> = None;
        // Fuse runs of dims that are contiguous with each other in the view.
        let mut d = 0;
        while d < shape.len() {
            let mut end = d;
            while end + 1 < shape.len() && strides[end] == strides[end + 1] * shape[end + 1] as i64 {
                end += 1;
            }
            // dims d..=end form one dim of extent Π shape[d..=end], stride strides[end]
            let ext: usize = shape[d..=end].iter().product();
            let st = strides[end];
            if ext > 1 && st != 0 {
                let inner = rm[end] as usize;
                let q = if inner == 1 { e } else { self.p.op(Kind::R, "div.u32", &[&e, &inner]) };
                let total: usize = shape.iter().product();
                let idx = if ext * inner >= total { q } else { self.p.op(Kind::R, "rem.u32", &[&q, &ext]) };
                acc = Some(match acc {
                    None if st == 1 => idx,
                    None => self.p.op(Kind::R, "mul.lo.u32", &[&idx, &st]),
                    Some(a) => self.p.op(Kind::R, "mad.lo.u32", &[&idx, &st, &a]),
                });
            }
            d = end + 1;
        }
        acc
    }

    /// Read operand `s` at chunk `i`, linear element `e`.
    pub(super) fn read(&mut self, s: &Src, i: usize, e: Reg) -> Reg {
        match s {
            Src::U(r) => *r,
            Src::D(rs) => rs[i],
            Src::V(w, shape, d) => {
                let el = self.view_elem(shape, &w.strides, e);
                let a = self.smem_addr(w.buf, el, *d);
                self.ld_shared(*d, a)
            }
        }
    }

    /// Read operand `s` at an arbitrary linear element `e` (u32) — views and uniforms only.
    pub(super) fn read_at(&mut self, s: &Src, e: Reg) -> Reg {
        match s {
            Src::D(_) => unreachable!("distributed operands are read per chunk"),
            _ => self.read(s, 0, e),
        }
    }

    /// The elementwise kernel: `out[e] = f(operands at e)` as a distributed tile of `n` elements.
    pub(super) fn ew(&mut self, n: usize, srcs: &[Src], kind: Kind, f: &mut dyn FnMut(&mut Self, &[Reg]) -> Result<Reg>) -> Result<Vec<Reg>> {
        let reads = srcs.iter().any(|s| matches!(s, Src::V(..)));
        if reads {
            self.hazard(true, false, None, None);
        }
        let mut out = vec![];
        for i in 0..self.chunks(n) {
            out.push(self.p.reg(kind));
            if (i + 1) * self.t as usize > n {
                let z = if kind == Kind::F { fimm(0.0) } else { "0".to_string() };
                let ty = if kind == Kind::F { "f32" } else { "b32" };
                self.p.ins(format!("mov.{ty} {}, {z}", out[i]));
            }
        }
        self.chunk_loop(n, &mut |l, i, e| {
            let xs: Vec<Reg> = srcs.iter().map(|s| l.read(s, i, e)).collect();
            let y = f(l, &xs)?;
            let ty = if kind == Kind::F { "f32" } else { "b32" };
            l.p.ins(format!("mov.{ty} {}, {y}", out[i]));
            Ok(())
        })?;
        Ok(out)
    }

    /// An elementwise op: uniform operands give a uniform result, otherwise distributed.
    pub(super) fn map_op(&mut self, op: &Op, f: &mut dyn FnMut(&mut Self, &[Reg]) -> Result<Reg>) -> Result<()> {
        let res = op.result();
        let n = self.numel(res);
        let all_uniform = op.args.iter().all(|&a| matches!(self.repr(a), Repr::Uniform(_)));
        if all_uniform || n == 1 {
            let mut xs = vec![];
            for &a in &op.args {
                xs.push(self.uniform(a).ok_or_else(|| self.unsupported(op, "one-element operand is distributed"))?);
            }
            let y = f(self, &xs)?;
            self.set(res, Repr::Uniform(y));
            return Ok(());
        }
        let srcs: Vec<Src> = op.args.iter().map(|&a| self.src(a)).collect();
        let kind = ekind(self.dtype(res));
        let regs = self.ew(n, &srcs, kind, f)?;
        self.set(res, Repr::Dist(regs));
        Ok(())
    }

    /// Fresh registers holding `v` in the carried form of its type (uniform for one element,
    /// distributed otherwise).
    fn carried_regs(&mut self, v: ValueId) -> Result<Repr> {
        let n = self.numel(v);
        let kind = ekind(self.dtype(v));
        if n == 1 {
            let x = self.uniform(v).expect("one-element values are uniform");
            return Ok(Repr::Uniform(self.p.mov(kind, x)));
        }
        let src = self.src(v);
        Ok(Repr::Dist(self.ew(n, &[src], kind, &mut |_, x| Ok(x[0]))?))
    }

    // -----------------------------------------------------------------------------------------
    // Blocks and ops
    // -----------------------------------------------------------------------------------------

    fn lower_block<'o>(&mut self, blk: &'o Block) -> Result<Option<&'o Op>> {
        for op in &blk.ops {
            self.pos += 1;
            match &op.kind {
                OpKind::Yield => return Ok(Some(op)),
                OpKind::For => self.lower_for(op)?,
                OpKind::If => self.lower_if(op)?,
                _ => {
                    self.p.comment(format!("{} {}", op.kind.mnemonic(), op.results.first().map_or(String::new(), |r| format!("%{}", r.0))));
                    self.lower_op(op)?
                }
            }
        }
        Ok(None)
    }

    pub(super) fn lower_op(&mut self, op: &Op) -> Result<()> {
        match &op.kind {
            OpKind::Const(s) => {
                let d = self.dtype(op.result());
                let r = self.const_reg(*s, d);
                self.set(op.result(), Repr::Uniform(r));
            }
            OpKind::ProgramId(a) | OpKind::NumPrograms(a) => {
                let axis = ["x", "y", "z"].get(*a as usize).ok_or_else(|| self.unsupported(op, "axis must be 0, 1 or 2"))?;
                let sreg = if matches!(op.kind, OpKind::ProgramId(_)) { "ctaid" } else { "nctaid" };
                let r = match &self.walk {
                    // persistent: the program being walked and the virtual grid
                    Some(w) => self.p.mov(Kind::R, if sreg == "ctaid" { w.pid[*a as usize] } else { w.grid[*a as usize] }),
                    None => self.p.mov(Kind::R, format!("%{sreg}.{axis}")),
                };
                self.set(op.result(), Repr::Uniform(r));
            }
            OpKind::Dim(s) => {
                let d = *self.dims.get(s.0 as usize).ok_or_else(|| self.unsupported(op, "dim symbol out of range"))?;
                let r = self.p.op(Kind::R, "cvt.u32.u64", &[&d]);
                self.set(op.result(), Repr::Uniform(r));
            }
            OpKind::ScalarParam(i) => {
                let r = self.scalars.get(*i).copied().flatten().ok_or_else(|| self.unsupported(op, "parameter is not a scalar"))?;
                self.set(op.result(), Repr::Uniform(r));
            }
            OpKind::Arange => {
                // Thread t's i-th element is t + i·T; registers past the end are never read.
                // `arange(1)` is the uniform 0 (a one-element tile is uniform, see `map_op`).
                let n = self.numel(op.result());
                if n == 1 {
                    let r = self.p.reg(Kind::R);
                    self.p.ins(format!("mov.b32 {r}, 0"));
                    self.set(op.result(), Repr::Uniform(r));
                } else {
                    let mut regs = vec![self.tid];
                    for i in 1..self.chunks(n) {
                        regs.push(self.p.op(Kind::R, "add.u32", &[&self.tid, &(i * self.t as usize)]));
                    }
                    self.set(op.result(), Repr::Dist(regs));
                }
            }
            OpKind::Unary(_) | OpKind::Binary(_) | OpKind::Cmp(_) | OpKind::Select | OpKind::Bitcast => self.map_op(op, &mut |l, x| l.elem_op(op, x))?,
            OpKind::Cast(_) => {
                if self.dtype(op.args[0]) == self.dtype(op.result()) {
                    let src = self.repr(op.args[0]);
                    let copy = self.copies[op.args[0].0 as usize].clone();
                    self.set_with_copy(op.result(), src, copy);
                } else {
                    self.map_op(op, &mut |l, x| l.elem_op(op, x))?;
                }
            }
            OpKind::Broadcast => {
                let (ins, out) = (self.shape(op.args[0]), self.shape(op.result()));
                let r = match self.repr(op.args[0]) {
                    Repr::Uniform(v) => Repr::Uniform(v),
                    _ if self.numel(op.args[0]) == 1 => Repr::Uniform(self.uniform(op.args[0]).expect("one element")),
                    _ => {
                        let w = self.view(op.args[0]).expect("not uniform");
                        let pad = out.len() - ins.len();
                        let mut st = vec![0i64; out.len()];
                        for i in pad..out.len() {
                            st[i] = if ins[i - pad] == out[i] { w.strides[i - pad] } else { 0 };
                        }
                        Repr::View(View { buf: w.buf, strides: st })
                    }
                };
                self.set(op.result(), r);
            }
            OpKind::ExpandDims(axis) => {
                let axis = *axis as usize;
                let r = match self.repr(op.args[0]) {
                    Repr::View(mut w) => {
                        w.strides.insert(axis, 0);
                        Repr::View(w)
                    }
                    other => other,
                };
                let copy = self.copies[op.args[0].0 as usize].clone().map(|mut c| {
                    c.strides.insert(axis, 0);
                    c
                });
                self.set_with_copy(op.result(), r, copy);
            }
            OpKind::Reshape => {
                let r = match self.repr(op.args[0]) {
                    Repr::View(w) if is_contiguous(&self.shape(op.args[0]), &w.strides) => {
                        Repr::View(View { buf: w.buf, strides: row_major(&self.shape(op.result())) })
                    }
                    Repr::View(_) => self.carried_regs(op.args[0])?,
                    other => other,
                };
                self.set(op.result(), r);
            }
            OpKind::Permute(perm) => {
                let r = match self.repr(op.args[0]) {
                    Repr::Uniform(v) => Repr::Uniform(v),
                    _ => {
                        let w = self.view(op.args[0]).expect("not uniform");
                        Repr::View(View { buf: w.buf, strides: perm.iter().map(|&p| w.strides[p as usize]).collect() })
                    }
                };
                self.set(op.result(), r);
            }
            OpKind::Reduce { op: rop, axis } => self.lower_reduce(op, *rop, *axis as usize)?,
            OpKind::Scan { axis, .. } => self.lower_cumsum(op, *axis as usize)?,
            OpKind::Dot => self.lower_dot(op)?,
            OpKind::Load { .. } if self.staged_views.contains_key(&op.result().0) => {
                let w = self.staged_views[&op.result().0].clone();
                self.set(op.result(), Repr::View(w));
            }
            OpKind::Load { tensor, has_mask, has_other } => self.lower_load(op, *tensor, *has_mask, *has_other)?,
            OpKind::Store { tensor, has_mask } => self.lower_store(op, *tensor, *has_mask, false)?,
            OpKind::AtomicAdd { tensor, has_mask } => self.lower_store(op, *tensor, *has_mask, true)?,
            OpKind::For | OpKind::If | OpKind::Yield => unreachable!("handled by lower_block"),
        }
        Ok(())
    }

    /// One element of an elementwise op (`unary`, `binary`, `cmp`, `select`, `cast`, `bitcast`)
    /// from its operands' element registers; shared by the distributed lowering and the
    /// fragment lowering of `attn.rs`.
    pub(super) fn elem_op(&mut self, op: &Op, x: &[Reg]) -> Result<Reg> {
        let d = self.dtype(op.args[0]);
        match &op.kind {
            OpKind::Unary(u) => self.unary(op, *u, d, x[0]),
            OpKind::Binary(b) => self.binary(op, *b, d, x[0], x[1]),
            OpKind::Cmp(pr) => Ok(self.cmp(*pr, d, x[0], x[1])),
            OpKind::Select => {
                let kind = ekind(self.dtype(op.result()));
                let c = self.p.op(Kind::P, "setp.ne.b32", &[&x[0], &0]);
                let ty = if kind == Kind::F { "f32" } else { "b32" };
                Ok(self.p.op(kind, &format!("selp.{ty}"), &[&x[1], &x[2], &c]))
            }
            OpKind::Cast(r) => Ok(self.cast(d, self.dtype(op.result()), *r, x[0])),
            OpKind::Bitcast => Ok(self.bitcast(d, self.dtype(op.result()), x[0])),
            _ => Err(self.unsupported(op, "not an elementwise op")),
        }
    }

    /// A literal in dtype `d`, exactly as the interpreter's `const_data`.
    pub(super) fn const_reg(&mut self, s: Scalar, d: DType) -> Reg {
        use opc_ir::numerics;
        if d.is_float() {
            let v = match s {
                Scalar::Int(i) => i as f64,
                Scalar::Float(f) => f,
                Scalar::Bool(b) => b as i64 as f64,
            };
            self.p.mov(Kind::F, fimm(numerics::round_float(d, v) as f32))
        } else {
            let v = match s {
                Scalar::Int(i) => numerics::wrap_int(d, i),
                Scalar::Bool(b) => numerics::wrap_int(d, b as i64),
                Scalar::Float(f) => match d {
                    DType::Bool => (f != 0.0) as i64,
                    DType::E2M1 => numerics::e2m1_encode(f, opc_ir::Rounding::Rne) as i64,
                    DType::E8M0 => numerics::e8m0_encode(f, opc_ir::Rounding::Rne) as i64,
                    _ => numerics::float_to_int(d, f, opc_ir::Rounding::Rne),
                },
            };
            self.p.mov(Kind::R, v as i32)
        }
    }

    // -----------------------------------------------------------------------------------------
    // Control flow
    // -----------------------------------------------------------------------------------------

    fn lower_for(&mut self, op: &Op) -> Result<()> {
        let body = &op.regions[0];
        let (lo, hi, step) = self.loop_bounds(op)?;
        if let Some(g) = super::gemm::match_gemm(self.k, op, self.feats) {
            return self.lower_gemm_loop(op, &g, lo, hi, step);
        }
        if let Some(a) = super::attn::match_attn(self.k, op, self.feats) {
            return self.lower_attn_loop(op, &a, lo, hi, step);
        }

        let mut carried = vec![];
        for &init in &op.args[3..] {
            carried.push(self.carried_regs(init)?);
        }
        let staged = super::stage::match_staged(self.k, op, self.feats);
        let sr = match &staged {
            Some(sl) => Some(self.stage_prologue(body, sl, lo, hi)?),
            None => None,
        };
        self.flush();
        let iv = self.p.mov(Kind::R, lo);
        let (head, exit) = (self.p.label(), self.p.label());
        self.p.place(&head);
        let done = self.p.op(Kind::P, "setp.ge.s32", &[&iv, &hi]);
        self.p.ins(format!("@{done} bra {exit}"));
        // Carried tiles that need shared copies get them at the top of each iteration.
        self.set(body.args[0], Repr::Uniform(iv));
        for (i, r) in carried.iter().enumerate() {
            self.set(body.args[i + 1], r.clone());
        }
        let id = self.open_loop();
        if let (Some(sl), Some(sr)) = (&staged, &sr) {
            self.stage_top(body, sl, sr, iv, hi, step)?;
        }
        let y = self.lower_block(body)?.ok_or_else(|| self.unsupported(op, "the body does not end in `yield`"))?;
        self.yield_into(&y.args, &carried)?;
        if let Some(sr) = &sr {
            self.stage_bottom(sr);
        }
        // i += step, in 64 bits so that `hi` near i32::MAX cannot wrap
        let wide = self.p.op(Kind::D, "cvt.s64.s32", &[&iv]);
        let s64 = self.p.op(Kind::D, "cvt.s64.s32", &[&step]);
        let nx = self.p.op(Kind::D, "add.s64", &[&wide, &s64]);
        let hi64 = self.p.op(Kind::D, "cvt.s64.s32", &[&hi]);
        let past = self.p.op(Kind::P, "setp.ge.s64", &[&nx, &hi64]);
        self.flush();
        self.p.ins(format!("@{past} bra {exit}"));
        self.p.ins(format!("cvt.u32.u64 {iv}, {nx}"));
        self.p.ins(format!("bra {head}"));
        self.p.place(&exit);
        if let (Some(sl), Some(sr)) = (&staged, &sr) {
            self.stage_end(sl, sr);
        }
        self.close_loop(id);
        for (i, &res) in op.results.iter().enumerate() {
            self.set(res, carried[i].clone());
        }
        Ok(())
    }

    /// The bounds of `for` op `op` (uniform registers), after the step check: a non-positive
    /// step is a launch error (as in the interpreter), reported through the error word.
    pub(super) fn loop_bounds(&mut self, op: &Op) -> Result<(Reg, Reg, Reg)> {
        let site = self.for_count;
        self.for_count += 1;
        self.p.comment(format!("for (site {})", site + 1));
        let (lo, hi, step) = match (self.uniform(op.args[0]), self.uniform(op.args[1]), self.uniform(op.args[2])) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => return Err(self.unsupported(op, "loop bounds must be scalars")),
        };
        let ok = self.p.label();
        let pos = self.p.op(Kind::P, "setp.gt.s32", &[&step, &0]);
        self.p.ins(format!("@{pos} bra {ok}"));
        self.p.ins(format!("st.global.u32 [{}], {}", self.err, site + 1));
        self.p.ins(format!("st.global.u32 [{}+4], {step}", self.err));
        self.p.ins("exit");
        self.p.place(&ok);
        Ok((lo, hi, step))
    }

    /// Lower `op` (a scalar computation) again, e.g. with a loop variable rebound.
    pub(super) fn relower(&mut self, op: &Op) -> Result<()> {
        self.lower_op(op)
    }

    /// Move yielded values into the carried registers `dst` (a parallel copy through fresh
    /// temporaries, so no destination is overwritten before every source has been read).
    fn yield_into(&mut self, srcs: &[ValueId], dst: &[Repr]) -> Result<()> {
        let mut tmps = vec![];
        for &s in srcs {
            tmps.push(self.carried_regs(s)?);
        }
        for (t, d) in tmps.iter().zip(dst) {
            match (t, d) {
                (Repr::Uniform(a), Repr::Uniform(b)) => {
                    let ty = if b.kind == Kind::F { "f32" } else { "b32" };
                    self.p.ins(format!("mov.{ty} {b}, {a}"));
                }
                (Repr::Dist(a), Repr::Dist(b)) => {
                    for (x, y) in a.iter().zip(b) {
                        let ty = if y.kind == Kind::F { "f32" } else { "b32" };
                        self.p.ins(format!("mov.{ty} {y}, {x}"));
                    }
                }
                _ => unreachable!("carried forms follow the type"),
            }
        }
        Ok(())
    }

    /// Fresh carried registers for a value of `v`'s type.
    fn fresh_regs(&mut self, v: ValueId) -> Repr {
        let kind = ekind(self.dtype(v));
        let n = self.numel(v);
        if n == 1 {
            Repr::Uniform(self.p.reg(kind))
        } else {
            Repr::Dist((0..self.chunks(n)).map(|_| self.p.reg(kind)).collect())
        }
    }

    fn lower_if(&mut self, op: &Op) -> Result<()> {
        let c = self.uniform(op.args[0]).ok_or_else(|| self.unsupported(op, "the condition must be a scalar"))?;
        let dst: Vec<Repr> = op.results.iter().map(|&r| self.fresh_regs(r)).collect();
        self.flush();
        let (else_l, end) = (self.p.label(), self.p.label());
        let p = self.p.op(Kind::P, "setp.eq.b32", &[&c, &0]);
        self.p.ins(format!("@{p} bra {else_l}"));
        for (i, region) in op.regions.iter().enumerate() {
            if i == 1 {
                self.p.place(&else_l);
            }
            let y = self.lower_block(region)?;
            let ys = y.map(|y| y.args.clone()).unwrap_or_default();
            if ys.len() != op.results.len() {
                return Err(self.unsupported(op, "a region yields the wrong number of values"));
            }
            self.yield_into(&ys, &dst)?;
            self.flush();
            if i == 0 {
                self.p.ins(format!("bra {end}"));
            }
        }
        self.p.place(&end);
        for (i, &r) in op.results.iter().enumerate() {
            self.set(r, dst[i].clone());
        }
        Ok(())
    }
}

/// Lower `k`'s body with `t` threads per CTA. `plan` holds each buffer's byte offset (None in the
/// planning run). `params` are the PTX names of the entry's parameters, as the renderer declares
/// them (see `mod.rs`).
pub(super) fn lower(k: &Kernel, t: u32, plan: Option<Vec<u32>>, names: &super::ParamNames, feats: super::Features) -> Result<Lowered> {
    let mut p = Ptx::default();
    let tid = p.mov(Kind::R, "%tid.x");
    let smem = p.mov(Kind::R, "opc_smem");
    let ld = |p: &mut Ptx, ty: &str, kind: Kind, name: &str| p.op(kind, &format!("ld.param.{ty}"), &[&format!("[{name}]")]);
    let err_g = ld(&mut p, "u64", Kind::D, &names.err);
    let err = p.op(Kind::D, "cvta.to.global.u64", &[&err_g]);
    let mut dims = vec![];
    for (i, d) in k.dims.iter().enumerate() {
        dims.push(match (d.konst, d.value) {
            (true, Some(v)) => p.mov(Kind::D, v),
            _ => ld(&mut p, "u64", Kind::D, names.dims[i].as_deref().expect("a parameter for each runtime dim")),
        });
    }
    let mut scalars = vec![];
    let mut tensors = vec![];
    for (pi, prm) in k.params.iter().enumerate() {
        match &prm.kind {
            ParamKind::Scalar { dtype } => {
                let r = match dtype {
                    DType::F32 => ld(&mut p, "f32", Kind::F, &names.params[pi]),
                    DType::Bool => {
                        let raw = ld(&mut p, "u32", Kind::R, &names.params[pi]);
                        let nz = p.op(Kind::P, "setp.ne.b32", &[&raw, &0]);
                        p.op(Kind::R, "selp.b32", &[&1, &0, &nz])
                    }
                    _ => ld(&mut p, "u32", Kind::R, &names.params[pi]),
                };
                scalars.push(Some(r));
                tensors.push(None);
            }
            ParamKind::Tensor { dtype, dims: tdims, .. } => {
                let g = ld(&mut p, "u64", Kind::D, &names.params[pi]);
                let base = p.op(Kind::D, "cvta.to.global.u64", &[&g]);
                let shape: Vec<Reg> = tdims.iter().map(|e| dim_expr(&mut p, e, &dims)).collect();
                let mut strides = vec![Reg { kind: Kind::D, n: 0 }; shape.len()];
                let mut s = p.mov(Kind::D, 1);
                for d in (0..shape.len()).rev() {
                    strides[d] = s;
                    s = p.op(Kind::D, "mul.lo.s64", &[&s, &shape[d]]);
                }
                scalars.push(None);
                tensors.push(Some(TensorRegs { base, shape, strides, dtype: *dtype }));
            }
        }
    }
    let mut l = Lower {
        k,
        t,
        p,
        reprs: vec![None; k.values.len()],
        need: needs_smem(k),
        copies: vec![None; k.values.len()],
        bufs: vec![],
        plan,
        pos: 0,
        loop_stack: vec![],
        loops: vec![],
        hz: Hazards::default(),
        tid,
        smem,
        dims,
        scalars,
        tensors,
        err,
        for_count: 0,
        used_mma: false,
        feats,
        tensor_cores: None,
        tmaps: vec![],
        dyn_off: Default::default(),
        walk: None,
        rings: Default::default(),
        staged_views: Default::default(),
        attn: None,
    };
    let persistent = super::persistent::applies(k, feats);
    if persistent {
        l.persistent_begin();
    }
    if let Some(y) = l.lower_block(&k.body)? {
        return Err(l.unsupported(y, "`yield` at the top level of the body"));
    }
    if persistent {
        l.persistent_end();
    }
    l.p.ins("ret");
    let tc = l.tensor_cores.or(l.used_mma.then_some("mma.sync.m16n8k16"));
    Ok(Lowered { body: l.p.finish(), bufs: l.bufs, loops: l.loops, tensor_cores: tc, tmaps: l.tmaps, attn: l.attn })
}

/// A tensor dim from the launch-time dims (64-bit; `/` is exact by the launcher's checks).
fn dim_expr(p: &mut Ptx, e: &opc_ir::DimExpr, dims: &[Reg]) -> Reg {
    use opc_ir::DimExpr as E;
    match e {
        E::Sym(s) => dims[s.0 as usize],
        E::Const(c) => p.mov(Kind::D, c),
        E::Add(a, b) | E::Sub(a, b) | E::Mul(a, b) | E::Div(a, b) => {
            let (x, y) = (dim_expr(p, a, dims), dim_expr(p, b, dims));
            let opc = match e {
                E::Add(..) => "add.s64",
                E::Sub(..) => "sub.s64",
                E::Mul(..) => "mul.lo.s64",
                _ => "div.s64",
            };
            p.op(Kind::D, opc, &[&x, &y])
        }
    }
}

/// Positions of buffer uses resolved to live intervals `[def, last]`.
pub(super) fn intervals(bufs: &[Buf], loops: &[(u32, u32)]) -> Vec<(u32, u32)> {
    bufs.iter()
        .map(|b| {
            let mut last = b.def;
            for (pos, open) in &b.uses {
                last = last.max(*pos);
                for &l in open {
                    if loops[l].0 > b.def {
                        last = last.max(loops[l].1);
                    }
                }
            }
            (b.def, last)
        })
        .collect()
}
