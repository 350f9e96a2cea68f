//! Global memory: `load`, `store` and `atomic_add`, one element per thread per chunk.
//!
//! The access shape is the index shapes concatenated; thread `t` handles its distributed
//! elements `e = t + i·T`. For each tensor dim the index is read from its index tile (uniform,
//! the thread's own register when the index tile *is* the access shape, or a shared-memory view
//! otherwise), checked `0 <= i < dim` with one unsigned 64-bit compare, and folded into a 64-bit
//! element offset. The mask joins the validity, and the element is touched only under that
//! predicate: out-of-range and masked-off elements read `other` (default 0) or are skipped, and
//! never reach memory.
//!
//! Element access per dtype: 4/2/1-byte `ld.global`/`st.global` with the f16/bf16 conversions;
//! packed 4-bit elements at byte `e / 2` (low nibble for even `e`). A nibble store is an
//! atomic `red.global.and` then `red.global.or` on the aligned 32-bit word holding the byte, so
//! the other nibble (possibly written by another CTA) is never lost; the loader (see
//! `runtime.rs`) pads every allocation to a multiple of 4 bytes, so that word is always inside
//! it. `atomic_add` is `red.global.add.f32` / `.s32`.

use opc_ir::{DType, Op};

use super::emit::{fimm, Kind, Reg};
use super::lower::{ekind, Lower, Repr, Src, TensorRegs};
use crate::Result;

/// One index tile of an access: how it is read and which access dims it spans.
struct Part {
    src: Src,
    /// Element count of the index tile.
    n: usize,
    /// Product of the access dims after this index's dims.
    inner: usize,
}

impl Lower<'_> {
    /// Index parts of an access; the access element count.
    fn parts(&mut self, op: &Op, rank: usize) -> (Vec<Part>, usize) {
        let sizes: Vec<usize> = op.args[..rank].iter().map(|&a| self.numel(a)).collect();
        let total: usize = sizes.iter().product();
        let mut parts = vec![];
        let mut inner = total;
        for (d, &a) in op.args[..rank].iter().enumerate() {
            inner /= sizes[d].max(1);
            let src = match self.repr(a) {
                Repr::Dist(_) if sizes[d] != total => match self.view(a) {
                    Some(w) => Src::V(w, self.shape(a), self.dtype(a)),
                    None => unreachable!("distributed values have views"),
                },
                _ => self.src(a),
            };
            parts.push(Part { src, n: sizes[d], inner });
        }
        (parts, total)
    }

    /// Validity predicate and element offset (b64) of access element `e` (chunk `i`).
    fn address(&mut self, parts: &[Part], tv: &TensorRegs, i: usize, e: Option<Reg>) -> (Option<Reg>, Reg) {
        let mut valid: Option<Reg> = None;
        let mut off: Option<Reg> = None;
        for (d, part) in parts.iter().enumerate() {
            let idx = match (&part.src, e) {
                (Src::U(r), _) => *r,
                (Src::D(rs), _) => rs[i],
                (s, Some(e)) => {
                    // e < total, so the first index needs no `rem`
                    let q = if part.inner == 1 { e } else { self.p.op(Kind::R, "div.u32", &[&e, &part.inner]) };
                    let q = if d == 0 { q } else { self.p.op(Kind::R, "rem.u32", &[&q, &part.n]) };
                    self.read_at(s, q)
                }
                (s, None) => {
                    let z = self.p.mov(Kind::R, 0);
                    self.read_at(s, z)
                }
            };
            let wide = self.p.op(Kind::D, "cvt.s64.s32", &[&idx]);
            let ok = self.p.op(Kind::P, "setp.lt.u64", &[&wide, &tv.shape[d]]);
            valid = Some(match valid {
                None => ok,
                Some(v) => self.p.op(Kind::P, "and.pred", &[&v, &ok]),
            });
            off = Some(match off {
                None if parts.len() == 1 => wide,
                None => self.p.op(Kind::D, "mul.lo.s64", &[&wide, &tv.strides[d]]),
                Some(o) => self.p.op(Kind::D, "mad.lo.s64", &[&wide, &tv.strides[d], &o]),
            });
        }
        (valid, off.unwrap_or_else(|| self.p.mov(Kind::D, 0)))
    }

    /// Byte address of element `off` of a tensor with `bytes`-wide elements.
    fn gaddr(&mut self, tv: &TensorRegs, off: Reg, bytes: u32) -> Reg {
        self.p.op(Kind::D, "mad.lo.s64", &[&off, &bytes, &tv.base])
    }

    /// Element `off` of a tensor, in the element register form, read only under `p`.
    fn read_elem(&mut self, tv: &TensorRegs, off: Reg, p: &str) -> Reg {
        let d = tv.dtype;
        match d {
            DType::F32 => {
                let a = self.gaddr(tv, off, 4);
                let r = self.p.mov(Kind::F, fimm(0.0));
                self.p.ins(format!("{p}ld.global.f32 {r}, [{a}]"));
                r
            }
            DType::I32 => {
                let a = self.gaddr(tv, off, 4);
                let r = self.p.mov(Kind::R, 0);
                self.p.ins(format!("{p}ld.global.b32 {r}, [{a}]"));
                r
            }
            DType::F16 | DType::BF16 => {
                let a = self.gaddr(tv, off, 2);
                let r = self.p.mov(Kind::R, 0);
                self.p.ins(format!("{p}ld.global.u16 {r}, [{a}]"));
                self.half_bits_to_f32(d, r)
            }
            DType::I8 => {
                let a = self.gaddr(tv, off, 1);
                let r = self.p.mov(Kind::R, 0);
                self.p.ins(format!("{p}ld.global.s8 {r}, [{a}]"));
                r
            }
            DType::U8 | DType::E8M0 | DType::Bool => {
                let a = self.gaddr(tv, off, 1);
                let r = self.p.mov(Kind::R, 0);
                self.p.ins(format!("{p}ld.global.u8 {r}, [{a}]"));
                if d == DType::Bool {
                    self.p.op(Kind::R, "and.b32", &[&r, &1])
                } else {
                    r
                }
            }
            DType::I4 | DType::E2M1 => {
                let byte = self.p.op(Kind::D, "shr.u64", &[&off, &1]);
                let a = self.p.op(Kind::D, "add.s64", &[&tv.base, &byte]);
                let r = self.p.mov(Kind::R, 0);
                self.p.ins(format!("{p}ld.global.u8 {r}, [{a}]"));
                let lo = self.p.op(Kind::R, "cvt.u32.u64", &[&off]);
                let odd = self.p.op(Kind::R, "and.b32", &[&lo, &1]);
                let sh = self.p.op(Kind::R, "shl.b32", &[&odd, &2]);
                let v = self.p.op(Kind::R, "shr.u32", &[&r, &sh]);
                let v = self.p.op(Kind::R, "and.b32", &[&v, &0xF]);
                if d == DType::I4 {
                    self.wrap(DType::I4, v)
                } else {
                    v
                }
            }
        }
    }

    /// Store (or atomically add) an element register at element `off`, only under `p`.
    fn write_elem(&mut self, tv: &TensorRegs, off: Reg, v: Reg, p: &str, atomic: bool) {
        let d = tv.dtype;
        match d {
            DType::F32 | DType::I32 => {
                let a = self.gaddr(tv, off, 4);
                let ins = match (atomic, d) {
                    (true, DType::F32) => "red.global.add.f32",
                    (true, _) => "red.global.add.s32",
                    (false, DType::F32) => "st.global.f32",
                    _ => "st.global.b32",
                };
                self.p.ins(format!("{p}{ins} [{a}], {v}"));
            }
            DType::F16 | DType::BF16 => {
                let h = self.f32_to_half_bits(d, v);
                let a = self.gaddr(tv, off, 2);
                self.p.ins(format!("{p}st.global.b16 [{a}], {h}"));
            }
            DType::Bool => {
                let b = self.wrap(DType::Bool, v);
                let a = self.gaddr(tv, off, 1);
                self.p.ins(format!("{p}st.global.u8 [{a}], {b}"));
            }
            DType::I8 | DType::U8 | DType::E8M0 => {
                let a = self.gaddr(tv, off, 1);
                self.p.ins(format!("{p}st.global.u8 [{a}], {v}"));
            }
            DType::I4 | DType::E2M1 => {
                let byte = self.p.op(Kind::D, "shr.u64", &[&off, &1]);
                let a = self.p.op(Kind::D, "add.s64", &[&tv.base, &byte]);
                let word = self.p.op(Kind::D, "and.b64", &[&a, &-4i64]);
                let a32 = self.p.op(Kind::R, "cvt.u32.u64", &[&a]);
                let lane = self.p.op(Kind::R, "and.b32", &[&a32, &3]);
                let lo = self.p.op(Kind::R, "cvt.u32.u64", &[&off]);
                let odd = self.p.op(Kind::R, "and.b32", &[&lo, &1]);
                let sh = self.p.op(Kind::R, "shl.b32", &[&lane, &3]);
                let sh = self.p.op(Kind::R, "mad.lo.u32", &[&odd, &4, &sh]);
                let m = self.p.op(Kind::R, "shl.b32", &[&0xF, &sh]);
                let keep = self.p.op(Kind::R, "not.b32", &[&m]);
                let c = self.p.op(Kind::R, "and.b32", &[&v, &0xF]);
                let put = self.p.op(Kind::R, "shl.b32", &[&c, &sh]);
                self.p.ins(format!("{p}red.global.and.b32 [{word}], {keep}"));
                self.p.ins(format!("{p}red.global.or.b32 [{word}], {put}"));
            }
        }
    }

    fn tensor(&self, op: &Op, t: usize) -> Result<TensorRegs> {
        self.tensors.get(t).cloned().flatten().ok_or_else(|| self.unsupported(op, "parameter is not a tensor"))
    }

    pub(super) fn lower_load(&mut self, op: &Op, tensor: usize, has_mask: bool, has_other: bool) -> Result<()> {
        let tv = self.tensor(op, tensor)?;
        let rank = tv.shape.len();
        let (parts, n) = self.parts(op, rank);
        let mask = has_mask.then(|| self.src(op.args[rank]));
        let other = has_other.then(|| self.src(op.args[rank + has_mask as usize]));
        let reads_smem = parts.iter().map(|p| &p.src).chain(mask.iter()).chain(other.iter()).any(|s| matches!(s, Src::V(..)));
        self.hazard(reads_smem, false, Some(tensor), None);
        let kind = ekind(tv.dtype);
        let ty = if kind == Kind::F { "f32" } else { "b32" };
        let one = |l: &mut Self, i: usize, e: Option<Reg>| -> Reg {
            let (valid, off) = l.address(&parts, &tv, i, e);
            let valid = match (&mask, valid) {
                (Some(m), v) => {
                    let mv = match (m, e) {
                        (Src::D(rs), _) => rs[i],
                        (s, Some(e)) => l.read(s, i, e),
                        (s, None) => {
                            let z = l.p.mov(Kind::R, 0);
                            l.read_at(s, z)
                        }
                    };
                    let on = l.p.op(Kind::P, "setp.ne.b32", &[&mv, &0]);
                    match v {
                        Some(v) => l.p.op(Kind::P, "and.pred", &[&v, &on]),
                        None => on,
                    }
                }
                (None, Some(v)) => v,
                (None, None) => l.p.mov(Kind::P, 1),
            };
            let x = l.read_elem(&tv, off, &format!("@{valid} "));
            let o = match (&other, e) {
                (None, _) => l.zero(tv.dtype),
                (Some(Src::U(r)), _) => *r,
                (Some(s), Some(e)) => l.read(s, i, e),
                (Some(s), None) => {
                    let z = l.p.mov(Kind::R, 0);
                    l.read_at(s, z)
                }
            };
            l.p.op(kind, &format!("selp.{ty}"), &[&x, &o, &valid])
        };
        if n == 1 {
            // every thread loads the one element: a uniform value
            let x = one(self, 0, None);
            self.set(op.result(), Repr::Uniform(x));
            return Ok(());
        }
        let mut regs = vec![];
        for i in 0..self.chunks(n) {
            regs.push(self.p.reg(kind));
            if (i + 1) * self.t as usize > n {
                let z = if kind == Kind::F { fimm(0.0) } else { "0".into() };
                self.p.ins(format!("mov.{ty} {}, {z}", regs[i]));
            }
        }
        let regs2 = regs.clone();
        self.chunk_loop(n, &mut |l, i, e| {
            let x = one(l, i, Some(e));
            l.p.ins(format!("mov.{ty} {}, {x}", regs2[i]));
            Ok(())
        })?;
        self.set(op.result(), Repr::Dist(regs));
        Ok(())
    }

    pub(super) fn lower_store(&mut self, op: &Op, tensor: usize, has_mask: bool, atomic: bool) -> Result<()> {
        let tv = self.tensor(op, tensor)?;
        let rank = tv.shape.len();
        let (parts, n) = self.parts(op, rank);
        let value = self.src(op.args[rank]);
        let mask = has_mask.then(|| self.src(op.args[rank + 1]));
        let reads_smem = parts.iter().map(|p| &p.src).chain(mask.iter()).chain([&value]).any(|s| matches!(s, Src::V(..)));
        self.hazard(reads_smem, false, None, Some(tensor));
        let one = |l: &mut Self, i: usize, e: Option<Reg>| {
            let (valid, off) = l.address(&parts, &tv, i, e);
            let rd = |l: &mut Self, s: &Src| match (s, e) {
                (Src::D(rs), _) => rs[i],
                (s, Some(e)) => l.read(s, i, e),
                (s, None) => {
                    let z = l.p.mov(Kind::R, 0);
                    l.read_at(s, z)
                }
            };
            let valid = match &mask {
                Some(m) => {
                    let mv = rd(l, m);
                    let on = l.p.op(Kind::P, "setp.ne.b32", &[&mv, &0]);
                    match valid {
                        Some(v) => Some(l.p.op(Kind::P, "and.pred", &[&v, &on])),
                        None => Some(on),
                    }
                }
                None => valid,
            };
            let v = rd(l, &value);
            let p = valid.map_or(String::new(), |v| format!("@{v} "));
            l.write_elem(&tv, off, v, &p, atomic);
        };
        if n == 1 {
            // one element: thread 0 writes it
            let skip = self.p.label();
            let not0 = self.p.op(Kind::P, "setp.ne.u32", &[&self.tid, &0]);
            self.p.ins(format!("@{not0} bra {skip}"));
            one(self, 0, None);
            self.p.place(&skip);
            return Ok(());
        }
        self.chunk_loop(n, &mut |l, i, e| {
            one(l, i, Some(e));
            Ok(())
        })
    }
}
