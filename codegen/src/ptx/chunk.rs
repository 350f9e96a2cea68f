//! 16-byte global → shared chunk copies of staged `dot` operand tiles (`gemm.rs`, `stage.rs`).
//!
//! A chunk is 16 contiguous bytes of one tile row: 8 16-bit elements, 16 8-bit ones, or 32
//! packed 4-bit ones (element `2j` in the low nibble of byte `j`, the DSL's packing of the
//! row-major order). It is copied with one `cp.async.cg.shared.global` (PTX ISA §9.7.9.25)
//! when it is wholly in bounds and its source is 16-byte aligned; otherwise element by element
//! under per-element bounds predicates, zeros elsewhere, which is the `load` semantics of
//! out-of-range indices. Nothing outside the tensor is ever read.
//!
//! **4-bit rows need not start on a byte.** Element `(r, c)` of an `i4[R, C]` tensor is nibble
//! `r·pitch + c` of the flat order, so with an odd pitch (odd K) every other row starts in a
//! high nibble. Such a chunk is never 16-byte aligned *as nibbles* (its first element is odd),
//! so it takes the element path, which reads nibble `e` from byte `e / 2`, bits `4·(e % 2)`
//! (as `memory.rs` loads one element) and re-packs it at its place in the chunk. The fast path
//! therefore needs an even first element and a 16-byte aligned byte address (K a multiple of
//! 32 for an i4 `[*, K]` tensor, of 16 for i8).

use super::emit::{Kind, Reg};
use super::frag::chunk_elems;
use super::lower::Lower;

/// Where [`Lower::copy_chunk`] reads a 2-D tile: the byte address of element `(0, 0)` of the
/// tensor's last two dims (leading indices folded in), their extents and row pitch (elements,
/// b64), and whether the leading indices are in range (`None`: no leading dims).
pub(super) struct ChunkSrc {
    pub base: Reg,
    pub rows: Reg,
    pub cols: Reg,
    pub pitch: Reg,
    pub ok: Option<Reg>,
}

impl Lower<'_> {
    /// Copy the 16-byte chunk of 16-bit elements at stored `(r, c..c+8)` of a tile whose index
    /// starts are `st` into shared address `dst` (see the module docs).
    pub(super) fn copy_chunk(&mut self, tv: &ChunkSrc, st: [Reg; 2], r: Reg, c: Reg, dst: Reg) {
        self.copy_chunk_bits(tv, st, r, c, dst, 16);
    }

    /// Copy the 16-byte chunk of `bits`-bit elements (16, 8 or 4) whose first element is
    /// `(r, c)` of a tile whose index starts are `st` into shared address `dst`.
    pub(super) fn copy_chunk_bits(&mut self, tv: &ChunkSrc, st: [Reg; 2], r: Reg, c: Reg, dst: Reg, bits: u32) {
        let n = chunk_elems(bits) as i64;
        let row = self.p.op(Kind::R, "add.s32", &[&st[0], &r]);
        let col = self.p.op(Kind::R, "add.s32", &[&st[1], &c]);
        let row64 = self.p.op(Kind::D, "cvt.s64.s32", &[&row]);
        let col64 = self.p.op(Kind::D, "cvt.s64.s32", &[&col]);
        let row_ok = self.p.op(Kind::P, "setp.lt.u64", &[&row64, &tv.rows]);
        let row_ok = match tv.ok {
            Some(ok) => self.p.op(Kind::P, "and.pred", &[&row_ok, &ok]),
            None => row_ok,
        };
        let end = self.p.op(Kind::D, "add.s64", &[&col64, &n]);
        let in_hi = self.p.op(Kind::P, "setp.le.s64", &[&end, &tv.cols]);
        let in_lo = self.p.op(Kind::P, "setp.ge.s64", &[&col64, &0]);
        let e = self.p.op(Kind::D, "mad.lo.s64", &[&row64, &tv.pitch, &col64]);
        let src = match bits {
            16 => self.p.op(Kind::D, "mad.lo.s64", &[&e, &2, &tv.base]),
            8 => self.p.op(Kind::D, "add.s64", &[&e, &tv.base]),
            _ => {
                let byte = self.p.op(Kind::D, "shr.s64", &[&e, &1]);
                self.p.op(Kind::D, "add.s64", &[&byte, &tv.base])
            }
        };
        let low = self.p.op(Kind::D, "and.b64", &[&src, &15]);
        // a 4-bit chunk must also start on a byte: its first element even
        let low = if bits == 4 {
            let odd = self.p.op(Kind::D, "and.b64", &[&e, &1]);
            self.p.op(Kind::D, "or.b64", &[&low, &odd])
        } else {
            low
        };
        let al = self.p.op(Kind::P, "setp.eq.u64", &[&low, &0]);
        let f = self.p.op(Kind::P, "and.pred", &[&row_ok, &in_hi]);
        let f = self.p.op(Kind::P, "and.pred", &[&f, &in_lo]);
        let f = self.p.op(Kind::P, "and.pred", &[&f, &al]);
        let (slow, done) = (self.p.label(), self.p.label());
        self.p.ins(format!("@!{f} bra {slow}"));
        self.p.ins(format!("cp.async.cg.shared.global [{dst}], [{src}], 16"));
        self.p.ins(format!("bra {done}"));
        self.p.place(&slow);
        if bits == 16 {
            self.chunk_by_halves(tv, col64, row_ok, src, dst);
        } else {
            self.chunk_by_bytes(tv, col64, row_ok, e, dst, bits);
        }
        self.p.place(&done);
    }

    /// The element path of a 16-bit chunk: eight predicated `ld.global.u16`, one 16-byte store.
    fn chunk_by_halves(&mut self, tv: &ChunkSrc, col64: Reg, row_ok: Reg, src: Reg, dst: Reg) {
        let mut words = vec![];
        for pair in 0..4 {
            let mut h = vec![];
            for e in 0..2i64 {
                let j = self.p.op(Kind::D, "add.s64", &[&col64, &(2 * pair + e)]);
                let ok = self.p.op(Kind::P, "setp.lt.u64", &[&j, &tv.cols]);
                let ok = self.p.op(Kind::P, "and.pred", &[&ok, &row_ok]);
                let a = self.p.op(Kind::D, "add.s64", &[&src, &(2 * (2 * pair + e))]);
                let x = self.p.mov(Kind::R, 0);
                self.p.ins(format!("@{ok} ld.global.u16 {x}, [{a}]"));
                h.push(x);
            }
            let hi = self.p.op(Kind::R, "shl.b32", &[&h[1], &16]);
            words.push(self.p.op(Kind::R, "or.b32", &[&h[0], &hi]));
        }
        self.p.ins(format!("st.shared.v4.b32 [{dst}], {{{}, {}, {}, {}}}", words[0], words[1], words[2], words[3]));
    }

    /// The element path of an 8- or 4-bit chunk (`e`: flat index of its first element): a
    /// chunk of a row past the end is stored as zeros at once; otherwise a loop over its 16
    /// bytes, each built from its `8 / bits` elements, read under their own column predicate
    /// from byte `e·bits/8` (a 4-bit element's nibble shifted down, then into its place).
    fn chunk_by_bytes(&mut self, tv: &ChunkSrc, col64: Reg, row_ok: Reg, e: Reg, dst: Reg, bits: u32) {
        let (fill, end) = (self.p.label(), self.p.label());
        self.p.ins(format!("@{row_ok} bra {fill}"));
        self.p.ins(format!("st.shared.v4.b32 [{dst}], {{0, 0, 0, 0}}"));
        self.p.ins(format!("bra {end}"));
        self.p.place(&fill);
        let per = 8 / bits;
        let b = self.p.mov(Kind::R, 0);
        let top = self.p.label();
        self.p.place(&top);
        let b64 = self.p.op(Kind::D, "cvt.u64.u32", &[&b]);
        let byte = self.p.mov(Kind::R, 0);
        for i in 0..per {
            // element j = per·b + i of the chunk
            let j = self.p.op(Kind::D, "mad.lo.s64", &[&b64, &(per as i64), &(i as i64)]);
            let cj = self.p.op(Kind::D, "add.s64", &[&col64, &j]);
            let ok = self.p.op(Kind::P, "setp.lt.u64", &[&cj, &tv.cols]);
            let ej = self.p.op(Kind::D, "add.s64", &[&e, &j]);
            let off = if bits == 4 { self.p.op(Kind::D, "shr.s64", &[&ej, &1]) } else { ej };
            let a = self.p.op(Kind::D, "add.s64", &[&off, &tv.base]);
            let x = self.p.mov(Kind::R, 0);
            self.p.ins(format!("@{ok} ld.global.u8 {x}, [{a}]"));
            if bits == 4 {
                let lo = self.p.op(Kind::R, "cvt.u32.u64", &[&ej]);
                let odd = self.p.op(Kind::R, "and.b32", &[&lo, &1]);
                let sh = self.p.op(Kind::R, "shl.b32", &[&odd, &2]);
                let v = self.p.op(Kind::R, "shr.u32", &[&x, &sh]);
                let v = self.p.op(Kind::R, "and.b32", &[&v, &0xF]);
                let v = if i == 0 { v } else { self.p.op(Kind::R, "shl.b32", &[&v, &(4 * i)]) };
                self.p.ins(format!("or.b32 {byte}, {byte}, {v}"));
            } else {
                self.p.ins(format!("mov.b32 {byte}, {x}"));
            }
        }
        let a = self.p.op(Kind::R, "add.u32", &[&dst, &b]);
        self.p.ins(format!("st.shared.u8 [{a}], {byte}"));
        self.p.ins(format!("add.u32 {b}, {b}, 1"));
        let more = self.p.op(Kind::P, "setp.lt.u32", &[&b, &16]);
        self.p.ins(format!("@{more} bra {top}"));
        self.p.place(&end);
    }
}
