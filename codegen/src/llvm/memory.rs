//! Global memory: `load`, `store` and `atomic_add`.
//!
//! The access analysis (access shape, which dims each index binds, rows or elements) is
//! `loops/access.rs`, shared with the Cranelift target; this file emits it.
//!
//! **Rows of lanes** (every access but packed 4-bit types and `atomic_add`): the index tile
//! that covers the innermost access dim gives each row of the access its element indices; the
//! other indices are per row. The outer dims become a loop nest computing the row's element
//! offset and validity once; the row runs as `<16 x T>` chunks: lane indices (affine ones
//! computed, loaded ones read from the tile), checked `0 <= i < dim` in one unsigned vector
//! compare, joined with the row validity, the mask tile and (for the last chunk) the row length.
//! When the indices are consecutive along the tensor's last dim (`x[rows, k0 + arange(BK)]`,
//! the common case) the access is one `llvm.masked.load` / `llvm.masked.store`; otherwise
//! (`x[rows, 2 * cols]`, `table[ids, h]` transposed, ...) a `llvm.masked.gather` /
//! `llvm.masked.scatter` of per-lane addresses. Lanes that are out of range or masked off never
//! touch memory (AVX-512 masked moves and gathers suppress faults).
//!
//! **Element by element** (packed 4-bit types, `atomic_add`, scalar accesses): a loop nest over
//! the access shape: index tile `d` is read as soon as its dims are bound, checked with one
//! unsigned compare against the launch-time dim and folded into the running element offset and
//! validity; in the innermost body the element is touched only under a branch on that validity
//! (and the mask), so out-of-range elements read `other` (default 0) or are skipped.
//!
//! Element conversions between memory and the tile representation (`mem_to_repr`,
//! `repr_to_mem`) are written over any lane count, so both paths share them.

use opc_ir::{DType, Op};

use super::helpers::{dtype_code, Helper};
use super::lower::{ety, lane_mask, lanes_for, row_major, Acc, Lower, Repr, TensorVals};
use super::text::{cst, vt};
pub(super) use crate::loops::access::Access;
use crate::loops::access::{AccessPlan, Operands};
use crate::loops::nest::{self, Chunks};
use crate::Result;

/// Where a load writes its tile: arena slot `off`, element `base + Σ idx[d]·strides[d]` (the
/// strides of the leading dims; the innermost one must be 1 for the row path).
#[derive(Clone, Debug)]
pub(super) struct Dest {
    pub off: u32,
    /// An i64 operand.
    pub base: String,
    pub strides: Vec<i64>,
    /// Software prefetches: i64 byte offsets from each contiguous row chunk the load reads to
    /// memory later loads will read (the next K step's, rows further down), each touched
    /// with `llvm.prefetch`.
    pub prefetch: Vec<String>,
    /// Store the raw bf16 bits (`i16` elements: `off`, `base` and `strides` then count 2-byte
    /// units) instead of the f32 tile representation: bf16 panels that are already k-pairs.
    pub raw_bf16: bool,
}

/// A tile load in affine form ([`Lower::affine_tile`]): element `idx` of the access shape is
/// tensor element `off + Σ idx[t]·steps[t]` (i64 operands), `inside` (i1) when every element
/// is in bounds.
pub(super) struct AffineTile {
    /// The tensor's base pointer.
    pub base: String,
    /// Bytes per element.
    pub esize: u32,
    pub off: String,
    pub steps: Vec<String>,
    pub inside: String,
}

impl Dest {
    /// The element index of `idx` (a prefix of the tile's indices: the row path passes the outer ones).
    pub(super) fn elem(&self, l: &mut Lower<'_>, idx: &[String]) -> String {
        let e = l.linear(idx, &self.strides[..idx.len()]);
        match (self.base.as_str(), e.as_str()) {
            ("0", _) => e,
            (_, "0") => self.base.clone(),
            (b, e) => l.f.val(format!("add i64 {b}, {e}")),
        }
    }
}

/// The in-memory LLVM element type of a (non-packed) dtype, and its size in bytes.
pub(super) fn mem_ty(d: DType) -> (&'static str, u32) {
    match d {
        DType::F32 => ("float", 4),
        DType::I32 => ("i32", 4),
        DType::F16 => ("half", 2),
        DType::BF16 => ("i16", 2),
        _ => ("i8", 1),
    }
}

impl Lower<'_> {
    /// A read prefetch (`llvm.prefetch`, into all cache levels) of the byte `off` past `ptr`.
    /// A hint: it never faults, wherever it points, so callers may aim past a tensor's end.
    pub(super) fn prefetch_at(&mut self, ptr: &str, off: impl std::fmt::Display) {
        self.prefetch_with(ptr, off, 3);
    }

    /// A read prefetch into L2 only (`prefetcht1`) for data streamed once: a GEMV's weights.
    /// An L1 prefetch holds one of the core's few L1 miss buffers until its line lands, which
    /// capped the MXFP4 expert GEMVs (gpt-oss decode) near 18 GB/s of the ~33 GB/s `bw.c`
    /// streams; into L2, which tracks many more misses, the same prefetches reached 23-25 GB/s
    /// (`opc bench` row `decode_moe_mxfp4`). `OPC_LLVM_PF_LOC` (0-3) overrides the locality.
    pub(super) fn prefetch_stream_at(&mut self, ptr: &str, off: impl std::fmt::Display) {
        let loc = super::knob::<u32>("OPC_LLVM_PF_LOC").filter(|&l| l <= 3).unwrap_or(2);
        self.prefetch_with(ptr, off, loc);
    }

    fn prefetch_with(&mut self, ptr: &str, off: impl std::fmt::Display, locality: u32) {
        let p = self.f.val(format!("getelementptr i8, ptr {ptr}, i64 {off}"));
        self.f.inst(format!("call void @llvm.prefetch.p0(ptr {p}, i32 0, i32 {locality}, i32 1)"));
    }

    /// Memory element(s) of dtype `d` to the tile representation.
    pub(super) fn mem_to_repr(&mut self, d: DType, x: &str, lanes: u32) -> String {
        let ti = vt("i32", lanes);
        match d {
            DType::F32 | DType::I32 => x.to_string(),
            DType::F16 => self.f.val(format!("fpext {} {x} to {}", vt("half", lanes), vt("float", lanes))),
            DType::BF16 => {
                let c = |s: &str| cst("i32", lanes, s);
                let b = self.f.val(format!("zext {} {x} to {ti}", vt("i16", lanes)));
                let abs = self.f.val(format!("and {ti} {b}, {}", c("32767")));
                let nan = self.f.val(format!("icmp ugt {ti} {abs}, {}", c("32640")));
                let q = self.f.val(format!("or {ti} {b}, {}", c("64")));
                let v = self.f.val(format!("select {} {nan}, {ti} {q}, {ti} {b}", vt("i1", lanes)));
                let s = self.f.val(format!("shl {ti} {v}, {}", c("16")));
                self.f.val(format!("bitcast {ti} {s} to {}", vt("float", lanes)))
            }
            DType::I8 => self.f.val(format!("sext {} {x} to {ti}", vt("i8", lanes))),
            DType::Bool => {
                let z = self.f.val(format!("zext {} {x} to {ti}", vt("i8", lanes)));
                self.f.val(format!("and {ti} {z}, {}", cst("i32", lanes, "1")))
            }
            _ => self.f.val(format!("zext {} {x} to {ti}", vt("i8", lanes))),
        }
    }

    /// Tile-representation element(s) to memory elements of dtype `d` (values are already
    /// representable: the conversion is exact). A bf16 tile element is an f32 already rounded
    /// to bf16 (the representation's invariant, `loops/plan.rs`): its high half is the bf16,
    /// so the store only drops the low half instead of rounding a second time.
    pub(super) fn repr_to_mem(&mut self, d: DType, x: &str, lanes: u32) -> String {
        let ti = vt("i32", lanes);
        match d {
            DType::F32 | DType::I32 => x.to_string(),
            DType::F16 => self.f.val(format!("fptrunc {} {x} to {}", vt("float", lanes), vt("half", lanes))),
            DType::BF16 => {
                let b = self.f.val(format!("bitcast {} {x} to {ti}", vt("float", lanes)));
                let h = self.f.val(format!("lshr {ti} {b}, {}", cst("i32", lanes, "16")));
                self.f.val(format!("trunc {ti} {h} to {}", vt("i16", lanes)))
            }
            DType::Bool => {
                let c = self.f.val(format!("icmp ne {ti} {x}, {}", cst("i32", lanes, "0")));
                self.f.val(format!("zext {} {c} to {}", vt("i1", lanes), vt("i8", lanes)))
            }
            _ => self.f.val(format!("trunc {ti} {x} to {}", vt("i8", lanes))),
        }
    }

    pub(super) fn lower_access(&mut self, op: &Op, tensor: usize, kind: Access) -> Result<()> {
        self.lower_access_into(op, tensor, kind, None)
    }

    /// [`Self::lower_access`], a non-scalar load writing its tile into `into` instead of a
    /// fresh buffer (a packed panel: `kloop.rs`); the result then has no representation.
    pub(super) fn lower_access_into(&mut self, op: &Op, tensor: usize, kind: Access, into: Option<Dest>) -> Result<()> {
        let tv = self.tensors.get(tensor).cloned().flatten().ok_or_else(|| self.unsupported(op, "parameter is not a tensor"))?;
        let plan = AccessPlan::new(self.k, op, tv.shape.len(), kind);
        let shape = plan.shape.clone();
        let Operands { parts, mask, value, other } = plan.operands(op, |v, s| self.acc(v, s));
        let dt = tv.dtype;
        let other = match other {
            Some(a) => a,
            None => Acc::Val(if ety(dt) == "float" { "0.0".into() } else { "0".into() }),
        };
        let fresh = into.is_none();
        let out = match kind {
            Access::Load { .. } if !shape.is_empty() => {
                Some(into.unwrap_or_else(|| Dest { off: self.alloc(plan.numel()), base: "0".into(), strides: row_major(&shape), prefetch: vec![], raw_bf16: false }))
            }
            _ => None,
        };
        if let Some(p) = plan.row_part(dt) {
            self.access_rows(&tv, &plan, &parts, p, mask.as_ref(), value.as_ref(), &other, out.as_ref())?;
        } else {
            let r = self.access_elems(&tv, &plan, &parts, mask.as_ref(), value.as_ref(), &other, out.as_ref())?;
            if let (Access::Load { .. }, None) = (kind, &out) {
                self.def_uniform(op.result(), r.expect("scalar load value"));
                return Ok(());
            }
        }
        if let (Access::Load { .. }, Some(out), true) = (kind, out, fresh) {
            self.set(op.result(), Repr::Buf { off: out.off, strides: out.strides });
        }
        Ok(())
    }

    /// The element stride (an i64 operand) of the tensor dim that the access `op`'s tile rows
    /// walk: the dim whose index tile covers the tile's first dim (`w[e, ns, ks]`: `ns`'s dim,
    /// not the expert's). `None` for other ops, or when no index covers it.
    pub(super) fn tile_row_stride(&self, op: &Op) -> Option<String> {
        let (tensor, kind) = Access::of(&op.kind)?;
        let tv = self.tensors.get(tensor)?.as_ref()?;
        let plan = AccessPlan::new(self.k, op, tv.shape.len(), kind);
        // Index dims are concatenated in tensor-dim order: the first index with dims covers it.
        let d = plan.parts.iter().position(|&(s, e)| s == 0 && e > 0)?;
        Some(tv.strides[d].clone())
    }

    /// The affine form of a plain load (no mask, no `other`) whose every index is affine or
    /// uniform (`w[e, ns, ks]` with `ns`, `ks` aranges plus scalars): where each element lies
    /// and whether all of them are inside the tensor. `None` when an index is a loaded or
    /// computed tile. Emits the offset and bounds arithmetic.
    pub(super) fn affine_tile(&mut self, op: &Op) -> Option<AffineTile> {
        let (tensor, kind) = Access::of(&op.kind)?;
        if kind != (Access::Load { has_mask: false, has_other: false }) {
            return None;
        }
        let tv = self.tensors.get(tensor)?.clone()?;
        let plan = AccessPlan::new(self.k, op, tv.shape.len(), kind);
        let affine = |r: Repr| matches!(r, Repr::Uniform(_) | Repr::Affine { .. });
        if !op.args[..tv.shape.len()].iter().all(|&a| affine(self.repr(a))) {
            return None;
        }
        let mut off = "0".to_string();
        let mut inside = "true".to_string();
        let mut steps = vec!["0".to_string(); plan.shape.len()];
        for (d, &(s, e)) in plan.parts.iter().enumerate() {
            let (base, coefs) = match self.acc(op.args[d], &plan.shape[s..e]) {
                Acc::Val(x) => (x, vec![0; e - s]),
                Acc::Affine { base, coefs } => (base, coefs),
                Acc::Arena { .. } => return None,
            };
            // The index range: base plus the negative / positive coefficients at their extremes.
            let ext = |sign: i64| -> i64 { coefs.iter().zip(&plan.shape[s..e]).map(|(&c, &n)| if c * sign > 0 { c * (n as i64 - 1) } else { 0 }).sum() };
            let b = self.f.val(format!("sext i32 {base} to i64"));
            for lim in [ext(-1), ext(1)] {
                let i = if lim == 0 { b.clone() } else { self.f.val(format!("add i64 {b}, {lim}")) };
                let ok = self.f.val(format!("icmp ult i64 {i}, {}", tv.shape[d]));
                inside = self.f.val(format!("and i1 {inside}, {ok}"));
            }
            let t = self.f.val(format!("mul i64 {b}, {}", tv.strides[d]));
            off = self.f.val(format!("add i64 {off}, {t}"));
            for (t, &c) in coefs.iter().enumerate().filter(|(_, &c)| c != 0) {
                let x = self.f.val(format!("mul i64 {}, {c}", tv.strides[d]));
                steps[s + t] = self.f.val(format!("add i64 {}, {x}", steps[s + t]));
            }
        }
        Some(AffineTile { base: tv.base, esize: mem_ty(tv.dtype).1, off, steps, inside })
    }

    /// The row path (see the module docs): part `ip`'s index tile covers the innermost dim.
    #[allow(clippy::too_many_arguments)]
    fn access_rows(
        &mut self,
        tv: &TensorVals,
        plan: &AccessPlan,
        parts: &[Acc],
        ip: usize,
        mask: Option<&Acc>,
        value: Option<&Acc>,
        other: &Acc,
        out: Option<&Dest>,
    ) -> Result<()> {
        let (shape, kind) = (&plan.shape, plan.kind);
        let n = shape.len();
        let inner = shape[n - 1];
        // Raw bf16 panel loads (`kloop.rs`) move one zmm of 32 i16 lanes per step.
        let lanes = if out.is_some_and(|d| d.raw_bf16) && inner >= 32 { 32 } else { lanes_for(inner) };
        let (mty, esize) = mem_ty(tv.dtype);
        let rb = ety(tv.dtype);
        let outer = shape[..n - 1].to_vec();
        let tb = vt("i1", lanes);
        let ti = vt("i32", lanes);
        let ip_start = plan.parts[ip].0;
        // Contiguous: affine with coefficient 1 along the tensor's last (unit-stride) dim.
        let contiguous = ip == parts.len() - 1 && matches!(&parts[ip], Acc::Affine { coefs, .. } if coefs.last() == Some(&1));
        self.nest(&outer, &mut |l, oidx| {
            // Row validity and element offset from every other index.
            let mut valid = "true".to_string();
            let mut off = "0".to_string();
            for (d, (acc, &(s, e))) in parts.iter().zip(&plan.parts).enumerate() {
                if d == ip {
                    continue;
                }
                // parts after `ip` are scalars (no dims)
                let i = if s == e { l.read(acc, "i32", &[]) } else { l.read(acc, "i32", &oidx[s..e]) };
                let i = l.f.val(format!("sext i32 {i} to i64"));
                let ok = l.f.val(format!("icmp ult i64 {i}, {}", tv.shape[d]));
                valid = l.f.val(format!("and i1 {valid}, {ok}"));
                let t = l.f.val(format!("mul i64 {i}, {}", tv.strides[d]));
                off = l.f.val(format!("add i64 {off}, {t}"));
            }
            // An invalid row (index -1: a grouped GEMM's rows past an expert's segment) moves
            // no lane, but its masked accesses would still be issued at an address outside the
            // tensor, which may lie on an unmapped page: each such access then takes a
            // microcode assist (hundreds of cycles). Aim them at the tensor's first row instead.
            if valid != "true" {
                off = l.f.val(format!("select i1 {valid}, i64 {off}, i64 0"));
            }
            let pst = parts[ip].strides(n - ip_start);
            let irow = l.row_acc(&parts[ip], &pst, &oidx[ip_start..]);
            let vsplat = l.f.splat("i1", lanes, &valid);
            let bound = l.f.splat("i32", lanes, &tv.bound32[ip]);
            let full = |a: &Acc| -> Vec<i64> { a.strides(n) };
            let mrow = mask.map(|m| l.row_acc(m, &full(m), oidx));
            let vrow = value.map(|v| l.row_acc(v, &full(v), oidx));
            let orow = l.row_acc(other, &full(other), oidx);
            let out_row = match out {
                Some(d) => d.elem(l, oidx),
                None => "0".into(),
            };
            let Chunks { full: chunks, tail, .. } = Chunks::new(inner, lanes);
            // Write the loaded chunk `raw` (memory bits) at element `j0` of the destination row,
            // as raw bf16 or widened; with `keep` (lane mask, `other` value), masked-off lanes
            // take `other`.
            let land = |l: &mut Self, raw: &str, j0: &str, nvalid: usize, keep: Option<(&str, &str)>| {
                let d = out.expect("load buffer");
                let oe = l.f.val(format!("add i64 {out_row}, {j0}"));
                let sm = (nvalid < lanes as usize).then(|| lane_mask(lanes, nvalid));
                if d.raw_bf16 {
                    let y = match keep {
                        Some((lm, o)) => {
                            let o = l.repr_to_mem(DType::BF16, o, lanes);
                            l.f.val(format!("select {tb} {lm}, {} {raw}, {} {o}", vt(mty, lanes), vt(mty, lanes)))
                        }
                        None => raw.to_string(),
                    };
                    l.store_raw16(d.off, &oe, &y, lanes, sm.as_deref());
                } else {
                    let x = l.mem_to_repr(tv.dtype, raw, lanes);
                    let rt = vt(rb, lanes);
                    let y = match keep {
                        Some((lm, o)) => l.f.val(format!("select {tb} {lm}, {rt} {x}, {rt} {o}")),
                        None => x,
                    };
                    l.store_arena(rb, lanes, d.off, &oe, &y, sm.as_deref());
                }
            };
            let chunk = |l: &mut Self, j0: &str, nvalid: usize| -> Result<()> {
                let idxv = l.read_vec(&irow, "i32", lanes, j0, nvalid);
                let inb = l.f.val(format!("icmp ult {ti} {idxv}, {bound}"));
                let mut lm = l.f.val(format!("and {tb} {inb}, {vsplat}"));
                if nvalid < lanes as usize {
                    lm = l.f.val(format!("and {tb} {lm}, {}", lane_mask(lanes, nvalid)));
                }
                if let Some(m) = &mrow {
                    let mv = l.read_vec(m, "i32", lanes, j0, nvalid);
                    let on = l.f.val(format!("icmp ne {ti} {mv}, zeroinitializer"));
                    lm = l.f.val(format!("and {tb} {lm}, {on}"));
                }
                let mt = vt(mty, lanes);
                let sfx = super::text::suffix(mty, lanes);
                // Either one base pointer (contiguous lanes) or one pointer per lane.
                let ptr = if contiguous {
                    let s0 = l.f.val(format!("extractelement {ti} {idxv}, i64 0"));
                    let s64 = l.f.val(format!("sext i32 {s0} to i64"));
                    let e = l.f.val(format!("add i64 {off}, {s64}"));
                    let eb = l.f.val(format!("mul i64 {e}, {esize}"));
                    l.f.val(format!("getelementptr i8, ptr {}, i64 {eb}", tv.base))
                } else {
                    let tl = vt("i64", lanes);
                    let i64v = l.f.val(format!("sext {ti} {idxv} to {tl}"));
                    let st = l.f.splat("i64", lanes, &tv.strides[ip]);
                    let e = l.f.val(format!("mul {tl} {i64v}, {st}"));
                    let o = l.f.splat("i64", lanes, &off);
                    let e = l.f.val(format!("add {tl} {e}, {o}"));
                    let eb = l.f.val(format!("mul {tl} {e}, {}", super::text::cst("i64", lanes, &esize.to_string())));
                    l.f.val(format!("getelementptr i8, ptr {}, {tl} {eb}", tv.base))
                };
                match kind {
                    Access::Load { .. } => {
                        for pf in out.filter(|_| contiguous).map_or(&[][..], |d| &d.prefetch[..]) {
                            l.prefetch_at(&ptr, pf);
                        }
                        let raw = if contiguous {
                            l.f.val(format!("call {mt} @llvm.masked.load.{sfx}.p0(ptr {ptr}, i32 {esize}, {tb} {lm}, {mt} zeroinitializer)"))
                        } else {
                            l.f.val(format!(
                                "call {mt} @llvm.masked.gather.{sfx}.v{lanes}p0(<{lanes} x ptr> {ptr}, i32 {esize}, {tb} {lm}, {mt} zeroinitializer)"
                            ))
                        };
                        let o = l.read_vec(&orow, rb, lanes, j0, nvalid);
                        land(l, &raw, j0, nvalid, Some((&lm, &o)));
                    }
                    Access::Store { .. } => {
                        let v = l.read_vec(vrow.as_ref().expect("store value"), rb, lanes, j0, nvalid);
                        let m = l.repr_to_mem(tv.dtype, &v, lanes);
                        if contiguous {
                            l.f.inst(format!("call void @llvm.masked.store.{sfx}.p0({mt} {m}, ptr {ptr}, i32 {esize}, {tb} {lm})"));
                        } else {
                            l.f.inst(format!(
                                "call void @llvm.masked.scatter.{sfx}.v{lanes}p0({mt} {m}, <{lanes} x ptr> {ptr}, i32 {esize}, {tb} {lm})"
                            ));
                        }
                    }
                }
                Ok(())
            };
            let checked = |l: &mut Self| l.row_chunks(chunks, lanes, tail, &mut |l, j0, valid| chunk(l, j0, valid));
            // A contiguous load row that lies wholly inside the tensor (its first and last
            // element, the indices being consecutive) needs no per-chunk index check: plain
            // vector loads, the ragged tail under its constant lane mask.
            let (Access::Load { .. }, true, None, Some(d)) = (kind, contiguous, mask, out) else { return checked(l) };
            let s0 = l.read_vec(&irow, "i32", lanes, "0", lanes as usize);
            let s0 = l.f.val(format!("extractelement {ti} {s0}, i64 0"));
            let s0 = l.f.val(format!("sext i32 {s0} to i64"));
            let last = l.f.val(format!("add i64 {s0}, {}", inner - 1));
            let dim = &tv.shape[ip];
            let (lo, hi) = (l.f.val(format!("icmp ult i64 {s0}, {dim}")), l.f.val(format!("icmp ult i64 {last}, {dim}")));
            let inside = l.f.val(format!("and i1 {lo}, {hi}"));
            let inside = l.f.val(format!("and i1 {inside}, {valid}"));
            let (fast, slow, merge) = (l.f.label(), l.f.label(), l.f.label());
            l.f.condbr(&inside, &fast, &slow);
            l.f.block(&fast);
            let row = l.f.val(format!("add i64 {off}, {s0}"));
            let plain = |l: &mut Self, j0: &str, nvalid: usize| -> Result<()> {
                let (mt, sfx) = (vt(mty, lanes), super::text::suffix(mty, lanes));
                let e = l.f.val(format!("add i64 {row}, {j0}"));
                let eb = l.f.val(format!("mul i64 {e}, {esize}"));
                let ptr = l.f.val(format!("getelementptr i8, ptr {}, i64 {eb}", tv.base));
                for pf in &d.prefetch {
                    l.prefetch_at(&ptr, pf);
                }
                let sm = (nvalid < lanes as usize).then(|| lane_mask(lanes, nvalid));
                let raw = match &sm {
                    None => l.f.val(format!("load {mt}, ptr {ptr}, align {esize}")),
                    Some(m) => l.f.val(format!("call {mt} @llvm.masked.load.{sfx}.p0(ptr {ptr}, i32 {esize}, {tb} {m}, {mt} zeroinitializer)")),
                };
                land(l, &raw, j0, nvalid, None);
                Ok(())
            };
            l.row_chunks(chunks, lanes, tail, &mut |l, j0, valid| plain(l, j0, valid))?;
            l.f.br(&merge);
            l.f.block(&slow);
            // A row outside the tensor (index -1: a grouped GEMM's rows past an expert's
            // segment) is all `other`: written without the per-lane index checks.
            if valid != "true" {
                let (check, fill) = (l.f.label(), l.f.label());
                l.f.condbr(&valid, &check, &fill);
                l.f.block(&fill);
                let off_lanes = cst("i1", lanes, "false");
                l.row_chunks(chunks, lanes, tail, &mut |l, j0, nvalid| {
                    let o = l.read_vec(&orow, rb, lanes, j0, nvalid);
                    land(l, "zeroinitializer", j0, nvalid, Some((&off_lanes, &o)));
                    Ok(())
                })?;
                l.f.br(&merge);
                l.f.block(&check);
            }
            checked(l)?;
            l.f.br(&merge);
            l.f.block(&merge);
            Ok(())
        })
    }

    /// The element-by-element path (see the module docs). Returns the value of a scalar load.
    #[allow(clippy::too_many_arguments)]
    fn access_elems(
        &mut self,
        tv: &TensorVals,
        plan: &AccessPlan,
        parts: &[Acc],
        mask: Option<&Acc>,
        value: Option<&Acc>,
        other: &Acc,
        out: Option<&Dest>,
    ) -> Result<Option<String>> {
        let (dt, kind) = (tv.dtype, plan.kind);
        let rb = ety(dt);
        let mut result: Option<String> = None;
        // Walk the access shape; index `d` is checked as soon as its dims are bound.
        let mut bound = |l: &mut Self, idx: &[String], (mut valid, mut off): (String, String)| {
            for d in plan.bound_at(idx.len()) {
                let (s, e) = plan.parts[d];
                let i = l.read(&parts[d], "i32", &idx[s..e]);
                let i = l.f.val(format!("sext i32 {i} to i64"));
                let ok = l.f.val(format!("icmp ult i64 {i}, {}", tv.shape[d]));
                valid = l.f.val(format!("and i1 {valid}, {ok}"));
                let t = l.f.val(format!("mul i64 {i}, {}", tv.strides[d]));
                off = l.f.val(format!("add i64 {off}, {t}"));
            }
            (valid, off)
        };
        nest::walk(self, &plan.shape, &mut vec![], ("true".to_string(), "0".to_string()), &mut bound, &mut |l, idx, (valid, off)| {
            let off = &off;
            let valid = match mask {
                Some(m) => {
                    let mv = l.read(m, "i32", idx);
                    let on = l.f.val(format!("icmp ne i32 {mv}, 0"));
                    l.f.val(format!("and i1 {valid}, {on}"))
                }
                None => valid.to_string(),
            };
            let hit = l.f.label();
            let merge = l.f.label();
            match kind {
                Access::Load { .. } => {
                    let miss = l.f.label();
                    l.f.condbr(&valid, &hit, &miss);
                    l.f.block(&hit);
                    let v = l.read_elem(tv, off);
                    let hit_end = l.f.cur.clone();
                    l.f.br(&merge);
                    l.f.block(&miss);
                    let o = l.read(other, rb, idx);
                    let miss_end = l.f.cur.clone();
                    l.f.br(&merge);
                    l.f.block(&merge);
                    let x = l.f.val(format!("phi {rb} [ {v}, %{hit_end} ], [ {o}, %{miss_end} ]"));
                    match out {
                        Some(out) if out.raw_bf16 => {
                            let e = out.elem(l, idx);
                            let h = l.repr_to_mem(DType::BF16, &x, 0);
                            l.store_raw16(out.off, &e, &h, 0, None);
                        }
                        Some(out) => {
                            let e = out.elem(l, idx);
                            l.store_arena(rb, 0, out.off, &e, &x, None);
                        }
                        None => result = Some(x),
                    }
                }
                Access::Store { atomic, .. } => {
                    l.f.condbr(&valid, &hit, &merge);
                    l.f.block(&hit);
                    let v = l.read(value.expect("store value"), rb, idx);
                    if atomic {
                        let bits = if rb == "float" { l.f.val(format!("bitcast float {v} to i32")) } else { v };
                        l.f.inst(format!(
                            "call void @{}(ptr {}, i64 {off}, i32 {}, i32 {bits})",
                            Helper::AtomicAdd.symbol(),
                            tv.base,
                            dtype_code(dt)
                        ));
                    } else {
                        l.write_elem(tv, off, &v);
                    }
                    l.f.br(&merge);
                    l.f.block(&merge);
                }
            }
            Ok(())
        })?;
        Ok(result)
    }

    /// Store `x` (`lanes` i16, a scalar for 0) at 2-byte element `e` of arena slot `off`;
    /// `mask` keeps lanes.
    pub(super) fn store_raw16(&mut self, off: u32, e: &str, x: &str, lanes: u32, mask: Option<&str>) {
        let i = self.f.val(format!("add i64 {e}, {}", 2 * off as u64));
        let p = self.f.val(format!("getelementptr inbounds i16, ptr %arena, i64 {i}"));
        let t = vt("i16", lanes);
        match mask {
            None => self.f.inst(format!("store {t} {x}, ptr {p}, align 2")),
            Some(m) => self.f.inst(format!("call void @llvm.masked.store.{}.p0({t} {x}, ptr align 2 {p}, <{lanes} x i1> {m})", super::text::suffix("i16", lanes))),
        }
    }

    /// Element `e` (i64 operand) of a tensor, in the tile representation.
    pub(super) fn read_elem(&mut self, tv: &TensorVals, e: &str) -> String {
        match tv.dtype {
            DType::I4 | DType::E2M1 => {
                let byte = self.f.val(format!("lshr i64 {e}, 1"));
                let p = self.f.val(format!("getelementptr inbounds i8, ptr {}, i64 {byte}", tv.base));
                let b = self.f.val(format!("load i8, ptr {p}, align 1"));
                let b = self.f.val(format!("zext i8 {b} to i32"));
                let odd = self.f.val(format!("and i64 {e}, 1"));
                let odd = self.f.val(format!("trunc i64 {odd} to i32"));
                let sh = self.f.val(format!("shl i32 {odd}, 2"));
                let v = self.f.val(format!("lshr i32 {b}, {sh}"));
                let v = self.f.val(format!("and i32 {v}, 15"));
                if tv.dtype == DType::I4 {
                    self.wrap(DType::I4, &v, 0)
                } else {
                    v
                }
            }
            d => {
                let (mty, esize) = mem_ty(d);
                let eb = self.f.val(format!("mul i64 {e}, {esize}"));
                let p = self.f.val(format!("getelementptr inbounds i8, ptr {}, i64 {eb}", tv.base));
                let raw = self.f.val(format!("load {mty}, ptr {p}, align 1"));
                self.mem_to_repr(d, &raw, 0)
            }
        }
    }

    /// Store a tile element into element `e` of a tensor.
    fn write_elem(&mut self, tv: &TensorVals, e: &str, v: &str) {
        match tv.dtype {
            DType::I4 | DType::E2M1 => {
                self.f.inst(format!("call void @{}(ptr {}, i64 {e}, i32 {v})", Helper::StoreNibble.symbol(), tv.base));
            }
            d => {
                let (mty, esize) = mem_ty(d);
                let m = self.repr_to_mem(d, v, 0);
                let eb = self.f.val(format!("mul i64 {e}, {esize}"));
                let p = self.f.val(format!("getelementptr inbounds i8, ptr {}, i64 {eb}", tv.base));
                self.f.inst(format!("store {mty} {m}, ptr {p}, align 1"));
            }
        }
    }
}
