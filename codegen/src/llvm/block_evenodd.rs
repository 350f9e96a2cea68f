//! The even/odd form of a block-scaled sum (`fuse_block.rs`): an MXFP4 block (32 e2m1 codes,
//! 16 bytes) against 32 f32 activations in three shuffles and two FMAs.
//!
//! The general block loop spreads the 16 code bytes to 32 f32 lanes (a nibble per lane, masked)
//! before its `vpermps` table decode: four shuffles and two masks per block. Here the 16 bytes are
//! zero-extended to 16 dwords (dword `j` holds codes `2j` and `2j + 1`); `vpermps` reads only an
//! index's bits 3:0, so the dwords themselves index the even codes and the dwords shifted right by
//! four the odd ones: no mask. The products then need the activations split the same way, each
//! block's 16 even elements then its 16 odd ones: the row's activations are copied so into the
//! arena once ([`Lower::evenodd_copy`]), and that copy is shared by every weight row that reads
//! the same activations (the GEMV's output channels; the copy is memoized at run time on the
//! activations' address, so row groups and later K steps over the same activations reuse it).
//!
//! Numerics: the same products as the general loop, summed in another order (lane `j` adds
//! elements `2j` and `2j + 1` of a block, not `j` and `j + 16`): a rounding-only difference, as
//! the reassociated sums of `fuse.rs`.
//!
//! Only the unmasked loop version uses it ([`Bounds::Unchecked`](super::fuse::Bounds)): the
//! copy reads the row's activations unmasked, which the versioning proved in bounds (its corner
//! chunks bound every chunk of the row).

use std::cell::RefCell;

use opc_ir::{DType, OpKind, ValueId};

use super::fuse::{Ix, Pv};
use super::lower::{Lower, Repr};
use crate::Result;

/// Per row of a block sum: the arena copy its activations are read from in the even/odd form
/// (`None`: the general form), set by the unmasked loop version before its block loop.
pub(super) type EvenOddRows = RefCell<Vec<Option<String>>>;

/// Where one distinct activation row is copied: the memo slot (an `alloca` holding the address
/// the copy was made from, null for none) and the arena offset of the copy.
pub(super) struct EvenOddCopy {
    slot: String,
    off: u32,
}

/// The source of a row's f32 activations.
enum Act {
    /// A load of this read-only tensor with these index operands.
    Load(usize, Vec<ValueId>),
    /// An arena buffer (offset, strides).
    Buf(u32, Vec<i64>),
}

impl Lower<'_> {
    /// The end of a reduction whose block sums made activation copies: their memo slots are
    /// cleared, so the next run of the reduction (a later K step, other activation rows, an
    /// arena buffer refilled in place) copies afresh.
    pub(super) fn end_copies(&mut self) {
        for s in std::mem::take(&mut self.copy_slots) {
            self.f.inst(format!("store ptr null, ptr {s}, align 8"));
        }
    }

    /// The fused value `v` when it is an unmasked load of an f32 tensor, possibly through a cast
    /// to f32: the load's tensor and index operands.
    fn f32_load(&self, v: ValueId) -> Option<(usize, Vec<ValueId>)> {
        if let Some(l) = self.cast_of_load(v, DType::F32) {
            return Some(l);
        }
        let ld = self.fused.get(&v)?;
        match ld.kind {
            OpKind::Load { tensor, has_mask: false, has_other: false } if self.dtype(v) == DType::F32 => Some((tensor, ld.args.clone())),
            _ => None,
        }
    }

    /// Where the f32 activations `v` come from: a read-only tensor (an unmasked load) or an
    /// arena buffer contiguous along its last dim (a value computed earlier, e.g. activations
    /// loaded once for several sums).
    fn act_source(&self, v: ValueId) -> Option<Act> {
        if let Some((t, args)) = self.f32_load(v) {
            return (!self.written(t)).then_some(Act::Load(t, args));
        }
        if self.fused.contains_key(&v) || self.dtype(v) != DType::F32 {
            return None;
        }
        match self.repr(v) {
            Repr::Buf { off, strides } if strides.last() == Some(&1) => Some(Act::Buf(off, strides)),
            _ => None,
        }
    }

    /// The address of the activations `a` at index `ix` (lane 0; the last index the lane
    /// position), or `None` when the index is not of that form.
    fn act_ptr(&mut self, a: &Act, ix: &[Ix]) -> Result<Option<String>> {
        match a {
            Act::Load(t, args) => self.lane0_ptr(*t, args, ix, 16),
            Act::Buf(off, strides) => {
                let idx: Vec<String> = ix.iter().map(|i| match i {
                    Ix::S(s) | Ix::L(s) => s.clone(),
                }).collect();
                if !matches!(ix.last(), Some(Ix::L(_))) || idx.len() != strides.len() {
                    return Ok(None);
                }
                let e = self.linear(&idx, strides);
                Ok(Some(self.arena_ptr(*off, &e)))
            }
        }
    }

    /// Whether tensor parameter `t` is stored to anywhere in the kernel (then a copy of its
    /// values could go stale).
    pub(super) fn written(&self, t: usize) -> bool {
        let mut w = false;
        opc_ir::walk_ops(&self.k.body, &mut |op| {
            if let OpKind::Store { tensor, .. } | OpKind::AtomicAdd { tensor, .. } = op.kind {
                w |= tensor == t;
            }
        });
        w
    }

    /// Whether a block sum takes the even/odd form: 32-element blocks on 16 lanes, AVX-512 on
    /// the host, and the two terms an e2m1 load and a load of a read-only f32 tensor (term
    /// indices: codes, activations).
    pub(super) fn evenodd_terms(&self, len: usize, lanes: u32, terms: &[ValueId]) -> Option<(usize, usize)> {
        if len != 32 || lanes != 16 || !self.isa.avx512 || terms.len() != 2 {
            return None;
        }
        let codes = terms.iter().position(|&t| self.cast_of_load(t, DType::E2M1).is_some())?;
        let acts = 1 - codes;
        self.act_source(terms[acts]).map(|_| (codes, acts))
    }

    /// The copies for `rows` rows of a block sum of `n` elements: one per distinct activation
    /// row (`same`: every row reads the same activations), each `n` f32 in the arena.
    pub(super) fn evenodd_copies(&mut self, rows: usize, same: bool, n: usize) -> Vec<EvenOddCopy> {
        let distinct = if same { 1 } else { rows };
        (0..distinct)
            .map(|_| {
                let slot = self.f.alloca_init("ptr", "null");
                self.copy_slots.push(slot.clone());
                let off = self.alloc(n);
                self.pin(off);
                EvenOddCopy { slot, off }
            })
            .collect()
    }

    /// The activations `acts` of one row (`at(l, j)`: the term's index at lane position `j` of
    /// the row), `blocks` blocks of 32, in the arena copy `c` split even/odd (module docs); returns
    /// the copy's address, or `None` when an index is not of the plain form. The copy is
    /// remade unless it was last made from the same address and the row's activations are
    /// contiguous (checked at run time on its first two chunks and its second block: the indices
    /// are affine in each digit of the lane position in this loop version).
    pub(super) fn evenodd_copy(&mut self, acts: ValueId, at: &dyn Fn(&mut Self, &str) -> Vec<Ix>, blocks: usize, c: &EvenOddCopy) -> Result<Option<String>> {
        let src = self.act_source(acts).expect("checked by evenodd_terms");
        let ptr = |l: &mut Self, j: &str| -> Result<Option<String>> {
            let ix = at(l, j);
            l.act_ptr(&src, &ix)
        };
        self.split_copy(&ptr, blocks, c, ("float", 16), 2)
    }

    /// Fill the copy `c` from a row whose element at lane position `j` is at `ptr(l, j)` (an
    /// i64 operand; `None` when not of the plain form): `chunks` chunks of `ways`·`lanes`
    /// elements of type `ety` (`float` or `i16`), each stored as `ways` vectors, vector `s`
    /// holding the chunk's elements `ways·i + s` (`ways` 2: the even positions then the odd
    /// ones). Remade unless last made from the same address and the row is contiguous (checked
    /// at run time on its first two loads and its second chunk: the indices are affine in each
    /// digit of the lane position in this loop version). Returns the copy's address.
    pub(super) fn split_copy(&mut self, ptr: &dyn Fn(&mut Self, &str) -> Result<Option<String>>, chunks: usize, c: &EvenOddCopy, (ety, lanes): (&str, u32), ways: usize) -> Result<Option<String>> {
        let bytes = if ety == "float" { 4 } else { 2 };
        let (part, chunk) = (lanes as usize, ways * lanes as usize);
        let second = if chunks > 1 { chunk } else { 0 };
        let (Some(p0), Some(p1), Some(pb)) = (ptr(self, "0")?, ptr(self, &part.to_string())?, ptr(self, &second.to_string())?) else { return Ok(None) };
        let e1 = self.f.val(format!("getelementptr i8, ptr {p0}, i64 {}", part * bytes));
        let eb = self.f.val(format!("getelementptr i8, ptr {p0}, i64 {}", second * bytes));
        let c1 = self.f.val(format!("icmp eq ptr {p1}, {e1}"));
        let cb = self.f.val(format!("icmp eq ptr {pb}, {eb}"));
        let contig = self.f.val(format!("and i1 {c1}, {cb}"));
        let last = self.f.val(format!("load ptr, ptr {}, align 8", c.slot));
        let same = self.f.val(format!("icmp eq ptr {last}, {p0}"));
        let hit = self.f.val(format!("and i1 {contig}, {same}"));
        let base = self.arena_ptr(c.off, "0");
        let (fill, done) = (self.f.label(), self.f.label());
        self.f.condbr(&hit, &done, &fill);
        self.f.block(&fill);
        let mut plain = true;
        let v = super::text::vt(ety, lanes);
        self.loop_n(chunks, &mut |l, b| {
            let j0 = l.f.val(format!("mul i64 {b}, {chunk}"));
            // Lane position of each way's first element in the chunk.
            let js: Vec<String> = (0..ways).map(|w| l.f.val(format!("add i64 {j0}, {}", w * part))).collect();
            let mut parts = vec![];
            for j in &js {
                match ptr(l, j)? {
                    Some(p) => parts.push(l.f.val(format!("load {v}, ptr {p}, align {bytes}"))),
                    None => plain = false,
                }
            }
            if parts.len() < ways {
                return Ok(());
            }
            // The chunk as one vector, then each way's elements.
            let chunk_v = l.concat(parts, ety, part);
            let all = super::text::vt(ety, chunk as u32);
            for (w, j) in js.iter().enumerate() {
                let idx = (0..part).map(|i| format!("i32 {}", ways * i + w)).collect::<Vec<_>>().join(", ");
                let sel = l.f.val(format!("shufflevector {all} {chunk_v}, {all} poison, <{part} x i32> <{idx}>"));
                let p = l.f.val(format!("getelementptr inbounds {ety}, ptr {base}, i64 {j}"));
                l.f.inst(format!("store {v} {sel}, ptr {p}, align 64"));
            }
            Ok(())
        })?;
        let keep = self.f.val(format!("select i1 {contig}, ptr {p0}, ptr null"));
        self.f.inst(format!("store ptr {keep}, ptr {}, align 8", c.slot));
        self.f.br(&done);
        self.f.block(&done);
        Ok(plain.then_some(base))
    }

    /// The `n` vectors memoized under `key` in `pe_memo` (a block's decoded codes shared by the
    /// rows that run together), else `make`'s, memoized when the memo is on (no key: `make`'s,
    /// not memoized).
    pub(super) fn memo_vecs(&mut self, key: Option<&str>, n: usize, make: &mut dyn FnMut(&mut Self) -> Vec<String>) -> Vec<String> {
        let Some(key) = key else { return make(self) };
        let get = |l: &Self, k: &str| match l.pe_memo.as_ref().and_then(|m| m.get(k)) {
            Some(Pv::V(d)) => Some(d.clone()),
            _ => None,
        };
        let known: Option<Vec<String>> = (0..n).map(|i| get(self, &format!("{key}|{i}"))).collect();
        if let Some(v) = known {
            return v;
        }
        let v = make(self);
        if let Some(m) = self.pe_memo.as_mut() {
            for (i, d) in v.iter().enumerate() {
                m.insert(format!("{key}|{i}"), Pv::V(d.clone()));
            }
        }
        v
    }

    /// The vectors `parts` (a power-of-two count, each `width` elements of type `ety`) as one
    /// vector, in order: pairwise `shufflevector` concatenations.
    pub(super) fn concat(&mut self, mut parts: Vec<String>, ety: &str, mut width: usize) -> String {
        while parts.len() > 1 {
            let ty = super::text::vt(ety, width as u32);
            let idx = (0..2 * width).map(|i| format!("i32 {i}")).collect::<Vec<_>>().join(", ");
            parts = parts.chunks(2).map(|p| self.f.val(format!("shufflevector {ty} {}, {ty} {}, <{} x i32> <{idx}>", p[0], p[1], 2 * width))).collect();
            width *= 2;
        }
        parts.pop().expect("at least one part")
    }

    /// One even/odd block: Σ codes · activations over the 32 elements at the codes' index `ic`
    /// (the block's first lane) against block `b` of the copy at `copy`, as 16 f32 partial sums.
    /// `shared`: every row of the step reads these codes, so their decode is memoized for the
    /// rows that run together (keyed on the block: index names are fresh per row). `None` when
    /// the codes' index is not of the plain form.
    pub(super) fn evenodd_block(&mut self, codes: ValueId, ic: &[Ix], copy: &str, b: &str, shared: bool) -> Result<Option<String>> {
        let (wt, wa) = self.cast_of_load(codes, DType::E2M1).expect("checked by evenodd_terms");
        let Some(wp) = self.lane0_ptr(wt, &wa, ic, 16)? else { return Ok(None) };
        let key = shared.then(|| format!("evenodd|{wt}|{b}"));
        let dec = self.memo_vecs(key.as_deref(), 2, &mut |l| {
            let raw = l.f.val(format!("load <16 x i8>, ptr {wp}, align 1"));
            let w = l.f.val(format!("zext <16 x i8> {raw} to <16 x i32>"));
            let sh = l.f.val(format!("lshr <16 x i32> {w}, {}", super::text::cst("i32", 16, "4")));
            // the e2m1 decode's `vpermps` table reads only bits 3:0 of each index
            vec![l.decode_code(DType::E2M1, &w, 16), l.decode_code(DType::E2M1, &sh, 16)]
        });
        let (lo, hi) = (&dec[0], &dec[1]);
        let v = super::text::vt("float", 16);
        let j = self.f.val(format!("mul i64 {b}, 32"));
        let pe = self.f.val(format!("getelementptr inbounds float, ptr {copy}, i64 {j}"));
        let po = self.f.val(format!("getelementptr inbounds float, ptr {pe}, i64 16"));
        let xe = self.f.val(format!("load {v}, ptr {pe}, align 64"));
        let xo = self.f.val(format!("load {v}, ptr {po}, align 64"));
        let p = self.f.val(format!("fmul {v} {lo}, {xe}"));
        Ok(Some(self.f.val(format!("call {v} @llvm.fma.v16f32({v} {hi}, {v} {xo}, {v} {p})"))))
    }
}
