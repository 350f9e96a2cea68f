//! The packed-pairs form of a block-scaled sum (`fuse_block.rs`): an MXFP4 block (32 e2m1
//! codes, 16 bytes) against 32 bf16 activations as one `vdpbf16ps`, and the codes' software
//! prefetch.
//!
//! The general block loop spreads 16 codes to f32 lanes (`vpmultishiftqb`), decodes them with a
//! `vpermps` table and multiplies by the activations in f32: per 32 codes four shuffles and two
//! FMAs, which leaves the MXFP4 GEMV compute-bound below the DRAM rate. When the other factor is
//! a bf16 load, the whole block is decoded into bf16 pairs instead: the 16 bytes zero-extended
//! to 16 dwords, each dword's two nibbles moved into its two words (`c_lo | c_hi << 16`: a shift
//! and one `vpternlogd`, no shuffle), a `vpermw` table turns every word into the code's bf16 value,
//! and one `vdpbf16ps` multiplies the 32 codes by the 32 activations (dword `i` holds codes
//! `2i`, `2i + 1`, the words the activations' dword `i` holds too: no activation shuffle).
//!
//! Numerics: e2m1 values and bf16 activations are exact in bf16 and each product is exact in f32,
//! so only the sums' rounding changes (reassociated as in `fuse.rs`), except that `vdpbf16ps`
//! treats subnormal inputs and outputs as zero (bf16 activations below 2⁻¹²⁶ in magnitude; the
//! difference is below 2⁻¹²³ per product).
//!
//! Only the unmasked loop version uses it ([`Bounds::Unchecked`]: every load in bounds and the
//! nibble offsets even, proven by the loop versioning); the masked version keeps the general form.
//!
//! **Four blocks at a time** ([`Lower::pairs_quad_block`]) when the bf16 activations come from
//! a tensor the kernel never writes: the row's activations are copied once (per program, memoized
//! on their address as `block_evenodd.rs` does) with each 128 elements split four ways by
//! position modulo 4, so that 64 code bytes decode with three shifts and four `vpermw` lookups
//! (the one-block form: two shuffles and two other instructions per 16 bytes), and the four
//! blocks' scales multiply the four quarters of one vector of sums. On Zen 4 the one-block form
//! decoded about 27 GB/s of codes from L2 and this one about 43 (a C model of both loops); a
//! one-token GEMV streams the codes from DRAM at about 33, so the one-block form left it
//! compute-bound.

use opc_ir::{DType, OpKind};

use super::fuse::{Bounds, Ix, Pv};
use super::lower::Lower;
use super::text::flit;
use crate::Result;

/// Bytes ahead of the current block that the codes' prefetch touches when a row is summed alone
/// (along its own codes) or rows share their codes: far enough to cover the DRAM latency at the
/// GEMV's streaming rate. Rows summed in a group prefetch the next group's rows instead
/// ([`Lower::group_prefetch_ahead`]). `OPC_LLVM_PF_BLOCK` sets one distance for every case (for
/// tuning).
pub(super) fn prefetch_ahead() -> i64 {
    fixed_prefetch_ahead().unwrap_or(2048)
}

/// The prefetch distance forced by `OPC_LLVM_PF_BLOCK`, if any.
fn fixed_prefetch_ahead() -> Option<i64> {
    super::knob("OPC_LLVM_PF_BLOCK")
}

/// The e2m1 decode table as a `<32 x i16>` constant of bf16 bits: `vpermw` reads the low 5
/// bits of each word, so the table repeats its 16 entries.
fn e2m1_table() -> String {
    let table: Vec<String> = (0..32u32).map(|i| format!("i16 {}", opc_ir::numerics::e2m1_decode(i % 16).to_bits() >> 16)).collect();
    format!("<{}>", table.join(", "))
}

impl Lower<'_> {
    /// The fused value `v` when it is `cast(load(t[...]), f32)` of a tensor of dtype `from`
    /// with no mask: the load's tensor and index operands.
    pub(super) fn cast_of_load(&self, v: opc_ir::ValueId, from: DType) -> Option<(usize, Vec<opc_ir::ValueId>)> {
        let c = self.fused.get(&v).filter(|o| matches!(o.kind, OpKind::Cast(_)) && self.dtype(v) == DType::F32)?;
        let ld = self.fused.get(&c.args[0])?;
        match ld.kind {
            OpKind::Load { tensor, has_mask: false, has_other: false } if self.dtype(c.args[0]) == from => Some((tensor, ld.args.clone())),
            _ => None,
        }
    }

    /// The byte address of the element a plain (unmasked, in bounds) load of `tensor` with index
    /// operands `args` reads at lane 0 of index `ix`, when every index is uniform but the last,
    /// which must step by one per lane. Nibble tensors: the element offset is even here (the
    /// loop versioning checked it), so the byte is half of it.
    pub(super) fn lane0_ptr(&mut self, tensor: usize, args: &[opc_ir::ValueId], ix: &[Ix], lanes: u32) -> Result<Option<String>> {
        self.elem_ptr(tensor, args, ix, lanes, true)
    }

    /// The byte address of the one element a load of `tensor` with index operands `args`
    /// reads at index `ix` when every index is uniform across the lanes (a block's scale).
    pub(super) fn uniform_ptr(&mut self, tensor: usize, args: &[opc_ir::ValueId], ix: &[Ix], lanes: u32) -> Result<Option<String>> {
        self.elem_ptr(tensor, args, ix, lanes, false)
    }

    /// [`Lower::lane0_ptr`] (`steps`: the last index steps by one per lane) or
    /// [`Lower::uniform_ptr`].
    fn elem_ptr(&mut self, tensor: usize, args: &[opc_ir::ValueId], ix: &[Ix], lanes: u32, steps: bool) -> Result<Option<String>> {
        let tv = self.tensors[tensor].clone().expect("tensor parameter");
        let rank = tv.shape.len();
        let mut at = 0;
        let mut off = "0".to_string();
        for (d, &a) in args[..rank].iter().enumerate() {
            let r = self.k.ty(a).rank();
            let p = self.pe(a, &ix[at..at + r], lanes, lanes as usize)?;
            at += r;
            let i = match (p, steps && d + 1 == rank) {
                (Pv::U(i), false) => i,
                (Pv::A { base, c: 1 }, true) => base,
                _ => return Ok(None),
            };
            let i = self.f.val(format!("sext i32 {i} to i64"));
            let t = self.f.val(format!("mul i64 {i}, {}", tv.strides[d]));
            off = self.f.val(format!("add i64 {off}, {t}"));
        }
        let byte = match tv.dtype {
            DType::E2M1 | DType::I4 => self.f.val(format!("lshr exact i64 {off}, 1")),
            dt => self.f.val(format!("mul i64 {off}, {}", super::memory::mem_ty(dt).1)),
        };
        Ok(Some(self.f.val(format!("getelementptr i8, ptr {}, i64 {byte}", tv.base))))
    }

    /// Whether a block of the sum can take the packed-pairs form: 32-element blocks on 16 lanes,
    /// `vdpbf16ps` on the host, and the two terms an e2m1 load and a bf16 load (in that order in
    /// the result: term indices).
    pub(super) fn pairs_terms(&self, len: usize, lanes: u32, terms: &[opc_ir::ValueId]) -> Option<(usize, usize)> {
        if len != 32 || lanes != 16 || !self.isa.bf16 || !self.isa.avx512 || terms.len() != 2 {
            return None;
        }
        let codes = terms.iter().position(|&t| self.cast_of_load(t, DType::E2M1).is_some())?;
        let acts = 1 - codes;
        self.cast_of_load(terms[acts], DType::BF16).map(|_| (codes, acts))
    }

    /// Whether loads run unmasked here (the fast loop version).
    pub(super) fn unchecked(&self) -> bool {
        matches!(self.bounds, Bounds::Unchecked)
    }

    /// The 32 e2m1 codes at `p` (16 bytes, element 2j in the low nibble of byte j) as bf16
    /// values in element order (module docs).
    pub(super) fn e2m1_pairs(&mut self, p: &str) -> String {
        let raw = self.f.val(format!("load <16 x i8>, ptr {p}, align 1"));
        let w = self.f.val(format!("zext <16 x i8> {raw} to <16 x i32>"));
        let c = |x: u32| super::text::cst("i32", 16, &x.to_string());
        // (w | w << 12) & 0x000F000F: the low nibble in bits 0..3, the high one in 16..19 (w
        // < 256, so the other bits kept are zero); one vpternlogd after the shift.
        let hi = self.f.val(format!("shl <16 x i32> {w}, {}", c(12)));
        let both = self.f.val(format!("or <16 x i32> {w}, {hi}"));
        let t = self.f.val(format!("and <16 x i32> {both}, {}", c(0x000F_000F)));
        let idx = self.f.val(format!("bitcast <16 x i32> {t} to <32 x i16>"));
        let d = self.f.val(format!("call <32 x i16> @llvm.x86.avx512.permvar.hi.512(<32 x i16> {}, <32 x i16> {idx})", e2m1_table()));
        self.f.val(format!("bitcast <32 x i16> {d} to <32 x bfloat>"))
    }

    /// One packed-pairs block: Σ codes · activations over the 32 elements at `ix` (the block's
    /// first lane; `b`: the block), as 16 f32 partial sums. `shared`: every row of the step reads
    /// these codes, so their decode is memoized for the rows that run together (keyed on the
    /// block: index names are fresh per row). `None` when an index is not of the plain form.
    pub(super) fn pairs_block(&mut self, codes: opc_ir::ValueId, acts: opc_ir::ValueId, ix: (&[Ix], &[Ix]), b: &str, shared: bool) -> Result<Option<String>> {
        let ((wt, wa), (xt, xa)) = (self.cast_of_load(codes, DType::E2M1).expect("checked"), self.cast_of_load(acts, DType::BF16).expect("checked"));
        let Some(wp) = self.lane0_ptr(wt, &wa, ix.0, 16)? else { return Ok(None) };
        let Some(xp) = self.lane0_ptr(xt, &xa, ix.1, 16)? else { return Ok(None) };
        let key = shared.then(|| format!("pairs|{wt}|{b}"));
        let dec = self.memo_vecs(key.as_deref(), 1, &mut |l| vec![l.e2m1_pairs(&wp)]);
        let x = self.f.val(format!("load <32 x bfloat>, ptr {xp}, align 2"));
        let zero = super::text::cst("float", 16, &flit(-0.0));
        Ok(Some(self.f.val(format!("call <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float> {zero}, <32 x bfloat> {}, <32 x bfloat> {x})", dec[0]))))
    }

    /// The bytes from one block's codes to the next along a row of the e2m1 term `codes`
    /// (`ix0`, `ix1`: the index of blocks 0 and 1; the indices are affine in the block in the
    /// unmasked loop version, so this holds for every block): loop-invariant, hoisted by LLVM.
    /// `None` when an index is not of the plain form.
    pub(super) fn codes_block_step(&mut self, codes: opc_ir::ValueId, ix0: &[Ix], ix1: &[Ix]) -> Result<Option<String>> {
        let (wt, wa) = self.cast_of_load(codes, DType::E2M1).expect("checked");
        let (Some(p0), Some(p1)) = (self.lane0_ptr(wt, &wa, ix0, 16)?, self.lane0_ptr(wt, &wa, ix1, 16)?) else { return Ok(None) };
        let (i0, i1) = (self.f.val(format!("ptrtoint ptr {p0} to i64")), self.f.val(format!("ptrtoint ptr {p1} to i64")));
        Ok(Some(self.f.val(format!("sub i64 {i1}, {i0}"))))
    }

    /// Prefetch the codes of the e2m1 term `codes` `ahead` bytes (an i64 operand) past index
    /// `ix` (a hint: it never faults, wherever it points).
    pub(super) fn prefetch_codes(&mut self, codes: opc_ir::ValueId, ix: &[Ix], ahead: &str) -> Result<()> {
        let Some((t, a)) = self.cast_of_load(codes, DType::E2M1) else { return Ok(()) };
        if let Some(p) = self.lane0_ptr(t, &a, ix, 16)? {
            self.prefetch_stream_at(&p, ahead);
        }
        Ok(())
    }

    /// The prefetch distance of a group of rows summed together, each over its own codes: the
    /// span from the group's first row to the next group's, `rows · (p_last − p_first) /
    /// (rows − 1)` bytes for rows at a constant stride (`ix0`, `ixl`: the first and last row's
    /// index at the same element), so that every row prefetches its counterpart in the next
    /// group. A group walks all its rows' blocks together: a distance shorter than the span
    /// (2 KiB, two rows of the gpt-oss experts) only reached rows of the current group, already
    /// being read. Outside 1 KiB..256 KiB (rows not evenly spaced, or far apart) the fixed
    /// distance. `None` when an index is not of the plain form.
    pub(super) fn group_prefetch_ahead(&mut self, codes: opc_ir::ValueId, ix0: &[Ix], ixl: &[Ix], rows: usize) -> Result<Option<String>> {
        if let Some(d) = fixed_prefetch_ahead() {
            return Ok(Some(d.to_string()));
        }
        let Some((t, a)) = self.cast_of_load(codes, DType::E2M1) else { return Ok(None) };
        let (Some(p0), Some(pl)) = (self.lane0_ptr(t, &a, ix0, 16)?, self.lane0_ptr(t, &a, ixl, 16)?) else { return Ok(None) };
        let (i0, il) = (self.f.val(format!("ptrtoint ptr {p0} to i64")), self.f.val(format!("ptrtoint ptr {pl} to i64")));
        let span = self.f.val(format!("sub i64 {il}, {i0}"));
        let span = self.f.val(format!("sdiv i64 {span}, {}", rows - 1));
        let span = self.f.val(format!("mul i64 {span}, {rows}"));
        let lo = self.f.val(format!("icmp sge i64 {span}, 1024"));
        let hi = self.f.val(format!("icmp sle i64 {span}, 262144"));
        let ok = self.f.val(format!("and i1 {lo}, {hi}"));
        Ok(Some(self.f.val(format!("select i1 {ok}, i64 {span}, i64 {}", prefetch_ahead()))))
    }
}

/// The four-block form (module docs).
impl Lower<'_> {
    /// Whether a block sum takes the four-block packed-pairs form: the packed-pairs terms
    /// ([`Lower::pairs_terms`]) with bf16 activations read from a tensor the kernel never
    /// writes (they are copied once per row). Term indices: codes, activations.
    pub(super) fn pairs_quad_terms(&self, len: usize, lanes: u32, terms: &[opc_ir::ValueId]) -> Option<(usize, usize)> {
        let (c, a) = self.pairs_terms(len, lanes, terms)?;
        let (t, _) = self.cast_of_load(terms[a], DType::BF16)?;
        (!self.written(t)).then_some((c, a))
    }

    /// The bf16 activations `acts` of one row (`at(l, j)`: the term's index at lane position
    /// `j`), `blocks` blocks of 32 (a multiple of four), copied into the arena copy `c` in the
    /// four-block order: each 128 elements as four vectors of 32, vector `s` holding elements
    /// `4i + s`. Returns the copy's address, or `None` when an index is not of the plain form.
    /// Remade unless last made from the same address, as [`Lower::evenodd_copy`].
    pub(super) fn pairs_copy(&mut self, acts: opc_ir::ValueId, at: &dyn Fn(&mut Self, &str) -> Vec<Ix>, blocks: usize, c: &super::block_evenodd::EvenOddCopy) -> Result<Option<String>> {
        let (t, args) = self.cast_of_load(acts, DType::BF16).expect("checked by pairs_quad_terms");
        let ptr = |l: &mut Self, j: &str| -> Result<Option<String>> {
            let ix = at(l, j);
            l.lane0_ptr(t, &args, &ix, 16)
        };
        self.split_copy(&ptr, blocks / 4, c, ("i16", 32), 4)
    }

    /// Blocks `b` to `b + 3` (`b` a multiple of four) of the codes `codes` (`ic`: block `b`'s
    /// first lane; `step`: the bytes from a block's codes to the next block's, an i64 operand)
    /// against the row's four-block copy at `copy`, as 16 f32 partial sums: lanes `4q..4q + 3`
    /// block `b + q`'s.
    ///
    /// The 64 code bytes are read as 32 words, word `j` holding codes `4j..4j + 3`, one per
    /// nibble. `vpermw` reads an index's low 5 bits and the table repeats its 16 entries, so the
    /// words shifted right by `4s` decode code `4j + s` into word `j`: per 128 codes three shifts
    /// and four lookups, no widening (the one-block form takes two shuffles per 32 codes). Lane
    /// `i` of `vdpbf16ps` pairs words `2i` and `2i + 1`, elements of codes `8i..8i + 7`, all of
    /// block `i / 4`, against the copy's vector `s` (elements `4j + s`).
    /// Numerics as the one-block form (module docs): exact products, sums reassociated.
    /// `None` when an index is not of the plain form.
    /// `shared`: every row of the step reads these codes (the decode is memoized for them).
    pub(super) fn pairs_quad_block(&mut self, codes: opc_ir::ValueId, ic: &[Ix], step: &str, copy: &str, b: &str, shared: bool) -> Result<Option<String>> {
        let (wt, wa) = self.cast_of_load(codes, DType::E2M1).expect("checked");
        let Some(w0) = self.lane0_ptr(wt, &wa, ic, 16)? else { return Ok(None) };
        // Keyed on the block step (index names are fresh per row).
        let key = shared.then(|| format!("pairs4|{wt}|{b}"));
        let dec = self.memo_vecs(key.as_deref(), 4, &mut |l| {
            // One 64-byte load when the blocks' codes are adjacent (rows along the last dim,
            // as every row-major tensor has them), else four.
            let all = l.four_strided(w0.as_str(), step, 16);
            let words = l.f.val(format!("bitcast <64 x i8> {all} to <32 x i16>"));
            (0..4)
                .map(|s| {
                    let w = if s == 0 { words.clone() } else { l.f.val(format!("lshr <32 x i16> {words}, {}", super::text::cst("i16", 32, &(4 * s).to_string()))) };
                    let d = l.f.val(format!("call <32 x i16> @llvm.x86.avx512.permvar.hi.512(<32 x i16> {}, <32 x i16> {w})", e2m1_table()));
                    l.f.val(format!("bitcast <32 x i16> {d} to <32 x bfloat>"))
                })
                .collect()
        });
        let j = self.f.val(format!("mul i64 {b}, 32"));
        let zero = super::text::cst("float", 16, &flit(-0.0));
        let dp = |l: &mut Self, acc: &str, a: &str, x: &str| l.f.val(format!("call <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float> {acc}, <32 x bfloat> {a}, <32 x bfloat> {x})"));
        let base = self.f.val(format!("getelementptr inbounds i16, ptr {copy}, i64 {j}"));
        let mut xs = vec![];
        for s in 0..4 {
            let p = self.f.val(format!("getelementptr inbounds i16, ptr {base}, i64 {}", 32 * s));
            xs.push(self.f.val(format!("load <32 x bfloat>, ptr {p}, align 64")));
        }
        // Two chains of two (half the latency of one chain of four), then their sum.
        let a = dp(self, &zero, &dec[0], &xs[0]);
        let a = dp(self, &a, &dec[1], &xs[1]);
        let c = dp(self, &zero, &dec[2], &xs[2]);
        let c = dp(self, &c, &dec[3], &xs[3]);
        Ok(Some(self.f.val(format!("fadd <16 x float> {a}, {c}"))))
    }

    /// The four blocks' scales of the block-constant factor `f` (`ix`: the product's index at
    /// the first lane of blocks `b` and `b + 1`) as 16 f32 lanes, lane `i` block `b + i / 4`'s,
    /// when `f` is `cast(load(t[...]), f32)` of an e8m0 tensor at a uniform index: one 4-byte
    /// load when the blocks' scales are adjacent bytes (checked at run time), else four, and
    /// one vector decode. `None` for other factors (the caller combines their per-block values).
    /// `shared`: every row of the step reads these scales (memoized for them; `b`: the step's
    /// first block).
    pub(super) fn quad_scales(&mut self, f: &super::fuse_block::Factor, ix: (&[Ix], &[Ix]), b: &str, shared: bool) -> Result<Option<String>> {
        // Through the views that broadcast the scale along its block, to the cast.
        let (mut v, mut i0, mut i1) = (f.v, self.factor_ix(f, ix.0), self.factor_ix(f, ix.1));
        while let Some(op) = self.fused.get(&v).filter(|o| matches!(o.kind, OpKind::Broadcast | OpKind::ExpandDims(_))).cloned() {
            (i0, i1) = (self.view_ix(&op, &i0), self.view_ix(&op, &i1));
            v = op.args[0];
        }
        let Some((t, args)) = self.cast_of_load(v, DType::E8M0) else { return Ok(None) };
        let (Some(p0), Some(p1)) = (self.uniform_ptr(t, &args, &i0, 16)?, self.uniform_ptr(t, &args, &i1, 16)?) else { return Ok(None) };
        let key = shared.then(|| format!("scales4|{t}|{b}"));
        let v = self.memo_vecs(key.as_deref(), 1, &mut |l| vec![l.quad_scales_at(&p0, &p1)]);
        Ok(Some(v[0].clone()))
    }

    /// The four runs of `width` bytes at `p0 + q·step` (`step`: an i64 operand), `q` = 0..3, as
    /// one `<4·width x i8>` vector: one load when they are adjacent (`step == width`, checked
    /// at run time), else four and their concatenation.
    fn four_strided(&mut self, p0: &str, step: &str, width: usize) -> String {
        let adjacent = self.f.val(format!("icmp eq i64 {step}, {width}"));
        let all = super::text::vt("i8", 4 * width as u32);
        self.either(&adjacent, &all, &mut |l| l.f.val(format!("load {all}, ptr {p0}, align 1")), &mut |l| {
            let part = super::text::vt("i8", width as u32);
            let mut parts = vec![];
            for q in 0..4 {
                let off = l.f.val(format!("mul i64 {step}, {q}"));
                let p = l.f.val(format!("getelementptr i8, ptr {p0}, i64 {off}"));
                parts.push(l.f.val(format!("load {part}, ptr {p}, align 1")));
            }
            l.concat(parts, "i8", width)
        })
    }

    /// [`Lower::quad_scales`] from block `b`'s scale at `p0` and block `b + 1`'s at `p1`.
    fn quad_scales_at(&mut self, p0: &str, p1: &str) -> String {
        let (a0, a1) = (self.f.val(format!("ptrtoint ptr {p0} to i64")), self.f.val(format!("ptrtoint ptr {p1} to i64")));
        let step = self.f.val(format!("sub i64 {a1}, {a0}"));
        let bytes = self.four_strided(p0, &step, 1);
        let idx: Vec<String> = (0..16).map(|i| format!("i32 {}", i / 4)).collect();
        let spread = self.f.val(format!("shufflevector <4 x i8> {bytes}, <4 x i8> poison, <16 x i32> <{}>", idx.join(", ")));
        let codes = self.f.val(format!("zext <16 x i8> {spread} to <16 x i32>"));
        self.decode_code(DType::E8M0, &codes, 16)
    }
}
