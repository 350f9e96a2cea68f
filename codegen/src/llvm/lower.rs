//! `lower-llvm`: tile IR → loop-and-buffer form, written as textual LLVM IR.
//!
//! **The loop-and-buffer level** (shared with the Cranelift target: [`crate::loops`] with this
//! target's parameters [`LoopTarget::LLVM`]; here with an affine form for index tiles, fusion
//! and in-place updates on top). Every tile value gets a [`Repr`]:
//! - [`Repr::Uniform`]: every element is one SSA scalar (rank-0 values, splat constants, and
//!   elementwise ops over such operands: `zeros([BM]) + sink` is one scalar add).
//! - [`Repr::Affine`]: an `i32` tile whose element at `idx` is `base + Σ coefs[d]·idx[d]`
//!   (wrapping), with `base` a scalar SSA value: `program_id(0) * BM + arange(BM)` and everything
//!   built from `arange`, scalars, `+`, `-`, `*` by a constant, `neg`, broadcasts and permutes.
//!   Nothing is stored; readers compute elements on the fly, and the memory lowering sees that
//!   an access is contiguous along its innermost dim (`memory.rs`).
//! - [`Repr::Buf`]: the elements live in the per-program scratch arena at a fixed offset,
//!   addressed through per-dim element strides. Ops that produce data write a fresh contiguous
//!   buffer; `expand_dims`, `broadcast`, `permute` and `reshape` (of a contiguous buffer) are views.
//!
//! Each element is 32 bits, as in the interpreter's two representations: `float` for
//! f32/f16/bf16 (already rounded to the dtype) and `i32` for everything else (ints
//! sign-extended, bool 0/1, e2m1 / e8m0 raw codes). The arena is allocated at compile time
//! (`loops/arena.rs`), one 64-byte aligned slot per buffer-producing op (an op in a loop
//! reuses its slot every iteration; SSA guarantees the previous iteration's value is dead by
//! then).
//!
//! **Ops become loop nests** over the result shape with static trip counts: adjacent dims that
//! are contiguous for every operand are merged, and the innermost dim runs as explicit
//! `<16 x T>` vectors (fewer lanes for short rows), the last chunk stored under a lane mask.
//! Element semantics are written once over any lane count (`elem.rs`), so every op vectorizes:
//! operands contiguous along the inner dim are vector loads, broadcast ones are splats,
//! strided ones are assembled lane by lane, affine ones are computed.
//! - `load` / `store` / `atomic_add`: `memory.rs`; `dot`: `dot.rs` (register-blocked FMA and
//!   `vdpbf16ps` micro-kernels); `reduce` / `cumsum`: `reduce.rs`.
//! - `for`: an i64 induction variable in a stack slot (promoted by `mem2reg`); carried scalars
//!   in stack slots, carried tiles in one arena buffer each, copied in from the init and from each
//!   `yield` (through temporaries when a yielded view reads another carried buffer). A
//!   non-positive step returns an error code. `if`: a branch writing the same slots / buffers
//!   (a tile result takes over the buffer of a value one branch yields unchanged and that dies
//!   at the `if`, so that branch copies nothing).
//! - Elementwise results reuse the buffer of an operand that dies at the op (same shape, not
//!   aliased by a view), so chains like `exp2(s - m)` or `acc * alpha` stay in one slot.

use std::collections::HashMap;

use opc_ir::{Block, DType, Kernel, Op, OpKind, ParamKind, Scalar, ScanOp, ValueId};

use super::text::{cst, vt, Fb};
use super::MetaLayout;
use crate::loops::arena::Arena;
use crate::loops::control::{self, ControlEmit};
use crate::loops::nest::{self, merge_dims, LoopEmit, Merged};
use crate::loops::LoopTarget;
pub(super) use crate::loops::plan::{is_contiguous, row_major};
use crate::loops::plan::{is_float_repr, literal, view_strides, Literal};
pub(super) use crate::loops::sites::{for_sites, op_ctx};
use crate::{CodegenError, Result};

/// How a tile value is held (see the module docs).
#[derive(Clone, Debug)]
pub(super) enum Repr {
    Uniform(String),
    Buf { off: u32, strides: Vec<i64> },
    Affine { base: String, coefs: Vec<i64> },
}

/// How a loop nest reads an operand: one hoisted value, arena elements with strides over the
/// loop's dims, or an affine function of the loop indices.
#[derive(Clone, Debug)]
pub(super) enum Acc {
    Val(String),
    Arena { off: u32, strides: Vec<i64> },
    Affine { base: String, coefs: Vec<i64> },
}

impl Acc {
    /// Strides (affine coefficients) over a loop nest of `rank` dims; zeros for a hoisted value.
    pub(super) fn strides(&self, rank: usize) -> Vec<i64> {
        match self {
            Acc::Val(_) => vec![0; rank],
            Acc::Arena { strides, .. } => strides.clone(),
            Acc::Affine { coefs, .. } => coefs.clone(),
        }
    }
}

/// Launch-time facts about one tensor parameter, loaded once in the entry block.
#[derive(Clone)]
pub(super) struct TensorVals {
    pub base: String,
    /// i64 dims.
    pub shape: Vec<String>,
    /// i64 element strides.
    pub strides: Vec<String>,
    /// i32 bounds for vector index checks: `min(dim, 2^31)`, compared unsigned.
    pub bound32: Vec<String>,
    pub dtype: DType,
}

/// What the host CPU offers the generated code.
#[derive(Clone, Copy, Debug)]
pub(super) struct Isa {
    /// `avx512bf16`: `vdpbf16ps` for bf16 `dot`.
    pub bf16: bool,
    /// `avx512f`: 512-bit permutes (`vpermps` tables).
    pub avx512: bool,
    /// `avx512vbmi`: `vpmultishiftqb` (packed nibbles spread to lanes in one op).
    pub vbmi: bool,
    /// `amx-tile` + `amx-bf16` (and, when running, the kernel's permission): AMX tiles for the
    /// bf16 fused K loops (`amx.rs`).
    pub amx: bool,
}

/// The lowered function body and what the launcher needs.
pub(super) struct Lowered {
    pub text: String,
    /// Definitions of the kernel's side functions ([`Lower::side_fn`]).
    pub side_fns: String,
    /// Bytes of scratch arena one program needs.
    pub arena_bytes: usize,
}

pub(super) struct Lower<'a> {
    pub k: &'a Kernel,
    pub f: Fb,
    pub isa: Isa,
    reprs: Vec<Option<Repr>>,
    /// Arena slots (4-byte elements, 64-byte aligned), reused once every value holding one is
    /// dead; carried and `if` buffers are pinned.
    arena: Arena,
    err: String,
    pid: [String; 3],
    grid: [String; 3],
    dims: Vec<String>,
    scalars: Vec<Option<String>>,
    pub(super) tensors: Vec<Option<TensorVals>>,
    /// Number of `for` ops lowered so far: the error code of a bad step is its index + 1.
    for_count: i64,
    /// Known i32 constants (scalars and splat tiles).
    consts: HashMap<ValueId, i64>,
    /// Uses of each value (nested regions included).
    pub(super) uses: Vec<u32>,
    /// Values evaluated inside a later reduction (`fuse.rs`) instead of where they stand.
    pub(super) fused: HashMap<ValueId, Op>,
    /// Set while `fuse.rs` evaluates a load whose only consumer is an FMA.
    pub(super) arith_only: bool,
    /// Point values already emitted in the current step of a reduction group (`fuse_group.rs`).
    pub(super) pe_memo: Option<HashMap<String, super::fuse::Pv>>,
    /// Set while a group loop prefetches its contiguous loads this many elements ahead.
    pub(super) prefetch: Option<i64>,
    /// Memo slots of the activation copies made by the block sums of the reduction being
    /// lowered (`block_evenodd.rs`), cleared when it ends.
    pub(super) copy_slots: Vec<String>,
    /// How `fuse.rs` treats the bounds of fused loads (its unmasked steady-state loops).
    pub(super) bounds: super::fuse::Bounds,
    /// The region each value was defined in, and the region being lowered.
    region_of: Vec<u32>,
    pub(super) region: u32,
    regions: u32,
    /// bf16 `a` operands already packed into k-pairs (`dot.rs`): (value, region, slot), so
    /// that `dot`s sharing an `a` tile in one region (`moe_mx_up`'s gate and up) pack it once.
    pub(super) packed_a: Vec<(ValueId, u32, u32)>,
    /// Side functions emitted so far: (name, definition).
    side_fns: Vec<(String, String)>,
}

/// LLVM type of one element of a dtype (see the module docs).
pub(super) fn ety(d: DType) -> &'static str {
    if is_float_repr(d) {
        "float"
    } else {
        "i32"
    }
}

/// Lanes for an inner dim of `n` elements: 16 (one zmm of 32-bit elements), or the next
/// power of two for shorter rows.
pub(super) fn lanes_for(n: usize) -> u32 {
    nest::lanes_for(n, LoopTarget::LLVM.lanes)
}

/// `<L x i1>` constant with the first `n` lanes on.
pub(super) fn lane_mask(lanes: u32, n: usize) -> String {
    let v: Vec<&str> = (0..lanes as usize).map(|i| if i < n { "i1 true" } else { "i1 false" }).collect();
    format!("<{}>", v.join(", "))
}

/// `<L x i32>` constant `0, c, 2c, ...` (wrapping).
pub(super) fn iota(lanes: u32, c: i64) -> String {
    let v: Vec<String> = (0..lanes as i64).map(|i| format!("i32 {}", (i.wrapping_mul(c)) as i32)).collect();
    format!("<{}>", v.join(", "))
}

/// Lower the body of `k` into the text of `opc_kernel`'s body.
pub(super) fn lower(k: &Kernel, meta: &MetaLayout, isa: Isa) -> Result<Lowered> {
    let mut f = Fb::new();
    let ld = |f: &mut Fb, slot: usize| -> String {
        let p = f.val(format!("getelementptr inbounds i64, ptr %meta, i64 {slot}"));
        f.val(format!("load i64, ptr {p}, align 8, !invariant.load !0"))
    };
    let dims: Vec<String> = (0..k.dims.len()).map(|s| ld(&mut f, meta.dims + s)).collect();
    let grid = [ld(&mut f, meta.grid), ld(&mut f, meta.grid + 1), ld(&mut f, meta.grid + 2)];
    let mut scalars = vec![];
    let mut tensors = vec![];
    for (pi, prm) in k.params.iter().enumerate() {
        match &prm.kind {
            ParamKind::Scalar { .. } => {
                scalars.push(Some(ld(&mut f, meta.params[pi])));
                tensors.push(None);
            }
            ParamKind::Tensor { dtype, dims: tdims, .. } => {
                let r = tdims.len();
                let pp = f.val(format!("getelementptr inbounds ptr, ptr %tensors, i64 {pi}"));
                let base = f.val(format!("load ptr, ptr {pp}, align 8, !invariant.load !0"));
                let shape: Vec<String> = (0..r).map(|d| ld(&mut f, meta.params[pi] + d)).collect();
                let strides = (0..r).map(|d| ld(&mut f, meta.params[pi] + r + d)).collect();
                let bound32 = shape
                    .iter()
                    .map(|s| {
                        let m = f.val(format!("call i64 @llvm.umin.i64(i64 {s}, i64 2147483648)"));
                        f.val(format!("trunc i64 {m} to i32"))
                    })
                    .collect();
                scalars.push(None);
                tensors.push(Some(TensorVals { base, shape, strides, bound32, dtype: *dtype }));
            }
        }
    }
    let mut uses = vec![0u32; k.values.len()];
    opc_ir::walk_ops(&k.body, &mut |op| {
        for a in &op.args {
            uses[a.0 as usize] += 1;
        }
    });
    let mut l = Lower {
        k,
        f,
        isa,
        reprs: vec![None; k.values.len()],
        arena: Arena::new(LoopTarget::LLVM.lanes),
        err: "%err".into(),
        pid: ["%pid0".into(), "%pid1".into(), "%pid2".into()],
        grid,
        dims,
        scalars,
        tensors,
        for_count: 0,
        consts: HashMap::new(),
        uses,
        fused: HashMap::new(),
        arith_only: false,
        pe_memo: None,
        prefetch: None,
        copy_slots: vec![],
        bounds: super::fuse::Bounds::Masked,
        region_of: vec![0; k.values.len()],
        region: 0,
        regions: 0,
        packed_a: vec![],
        side_fns: vec![],
    };
    if let Some(y) = l.lower_block(&k.body)? {
        return Err(l.unsupported(y, "`yield` at the top level of the body"));
    }
    l.f.inst("ret i32 0");
    // Vector reads of a row's last chunk may run up to one vector past the last slot.
    let arena_bytes = 4 * (l.arena.peak() as usize + 16);
    let side_fns = l.side_fns.iter().map(|(_, t)| t.as_str()).collect();
    Ok(Lowered { text: l.f.finish(), side_fns, arena_bytes })
}

impl Lower<'_> {
    pub(super) fn unsupported(&self, op: &Op, why: &str) -> CodegenError {
        CodegenError::Unsupported { kernel: self.k.name.clone(), target: "llvm".into(), reason: format!("{}: {why}", op_ctx(op)) }
    }

    pub(super) fn dtype(&self, v: ValueId) -> DType {
        self.k.ty(v).dtype
    }

    pub(super) fn shape(&self, v: ValueId) -> Vec<usize> {
        self.k.ty(v).shape.clone()
    }

    pub(super) fn repr(&self, v: ValueId) -> Repr {
        self.reprs[v.0 as usize]
            .clone()
            .unwrap_or_else(|| panic!("lower-llvm: %{} used before its definition (the verifier should catch this)", v.0))
    }

    pub(super) fn set(&mut self, v: ValueId, r: Repr) {
        if let Repr::Buf { off, .. } = &r {
            self.arena.retain(*off);
        }
        self.region_of[v.0 as usize] = self.region;
        self.reprs[v.0 as usize] = Some(r);
    }

    /// Define `v` as a view of another value's representation (its buffer becomes shared).
    fn set_view(&mut self, v: ValueId, r: Repr) {
        if let Repr::Buf { off, .. } = &r {
            self.arena.share(*off);
        }
        self.set(v, r);
    }

    pub(super) fn def_uniform(&mut self, v: ValueId, x: String) {
        self.set(v, Repr::Uniform(x));
    }

    /// Whether the arena buffer of `acc` may be overwritten by the op consuming it: its only
    /// use, in the region that defined it (so the op runs once per definition), and no view
    /// aliases the buffer.
    pub(super) fn can_update_in_place(&self, acc: ValueId) -> bool {
        let i = acc.0 as usize;
        match self.repr(acc) {
            Repr::Buf { off, strides } => {
                self.uses[i] == 1
                    && self.region_of[i] == self.region
                    && !self.arena.is_shared(off)
                    && is_contiguous(&self.shape(acc), &strides)
            }
            _ => false,
        }
    }

    /// Reserve a 64-byte aligned arena slot of `numel` elements (`loops/arena.rs`).
    pub(super) fn alloc(&mut self, numel: usize) -> u32 {
        self.arena.alloc(numel)
    }

    /// A slot that holds a carried or merged value: never reused.
    pub(super) fn pin(&mut self, off: u32) {
        self.arena.pin(off);
    }

    /// `v` is dead: drop its reference to its slot, freeing the slot when none is left.
    fn release(&mut self, v: ValueId) {
        if let Some(Repr::Buf { off, .. }) = &self.reprs[v.0 as usize] {
            self.arena.release(*off);
        }
    }

    /// Pointer to element `e` (an i64 operand) of the arena slot at `off`.
    pub(super) fn arena_ptr(&mut self, off: u32, e: &str) -> String {
        let idx = if off == 0 {
            e.to_string()
        } else if e == "0" {
            off.to_string()
        } else {
            self.f.val(format!("add i64 {e}, {off}"))
        };
        self.f.val(format!("getelementptr inbounds i32, ptr %arena, i64 {idx}"))
    }

    /// Σ idx[d] * strides[d] as an i64 operand; zero strides are skipped.
    pub(super) fn linear(&mut self, idx: &[String], strides: &[i64]) -> String {
        let mut acc: Option<String> = None;
        for (i, &s) in idx.iter().zip(strides) {
            if s == 0 {
                continue;
            }
            let t = if s == 1 { i.clone() } else { self.f.val(format!("mul i64 {i}, {s}")) };
            acc = Some(match acc {
                None => t,
                Some(a) => self.f.val(format!("add i64 {a}, {t}")),
            });
        }
        acc.unwrap_or_else(|| "0".into())
    }

    /// Load `lanes` elements (a scalar for 0) of type `base` at element `e` of slot `off`.
    pub(super) fn load_arena(&mut self, base: &str, lanes: u32, off: u32, e: &str) -> String {
        let p = self.arena_ptr(off, e);
        let t = vt(base, lanes);
        self.f.val(format!("load {t}, ptr {p}, align 4"))
    }

    /// Store `x` (`lanes` elements of `base`) at element `e` of slot `off`; `mask` keeps lanes.
    pub(super) fn store_arena(&mut self, base: &str, lanes: u32, off: u32, e: &str, x: &str, mask: Option<&str>) {
        let p = self.arena_ptr(off, e);
        let t = vt(base, lanes);
        match mask {
            None => self.f.inst(format!("store {t} {x}, ptr {p}, align 4")),
            Some(m) => {
                let s = super::text::suffix(base, lanes);
                self.f.inst(format!("call void @llvm.masked.store.{s}.p0({t} {x}, ptr align 4 {p}, <{lanes} x i1> {m})"))
            }
        }
    }

    /// The single value of `v` if all its elements are equal by construction.
    pub(super) fn uniform(&mut self, v: ValueId) -> Option<String> {
        match self.repr(v) {
            Repr::Uniform(x) => Some(x),
            Repr::Affine { base, coefs } if coefs.iter().all(|&c| c == 0) => Some(base),
            Repr::Buf { off, .. } if self.k.ty(v).numel() == 1 => Some(self.load_arena(ety(self.dtype(v)), 0, off, "0")),
            _ if self.k.ty(v).numel() == 1 => {
                let Repr::Affine { base, .. } = self.repr(v) else { unreachable!() };
                Some(base)
            }
            _ => None,
        }
    }

    /// How a loop nest over `shape` reads `v` (which has `shape`'s element count).
    pub(super) fn acc(&mut self, v: ValueId, shape: &[usize]) -> Acc {
        if let Some(x) = self.uniform(v) {
            return Acc::Val(x);
        }
        let same = self.k.ty(v).shape == shape;
        match self.repr(v) {
            Repr::Buf { off, strides } if same => Acc::Arena { off, strides },
            Repr::Affine { base, coefs } if same => Acc::Affine { base, coefs },
            _ => {
                // Same element count, other shape: elements pair up in row-major order.
                let off = self.materialize(v);
                Acc::Arena { off, strides: row_major(shape) }
            }
        }
    }

    /// A scalar element of `a` at loop indices `idx` (i64 operands).
    pub(super) fn read(&mut self, a: &Acc, base: &str, idx: &[String]) -> String {
        match a {
            Acc::Val(x) => x.clone(),
            Acc::Arena { off, strides } => {
                let e = self.linear(idx, strides);
                self.load_arena(base, 0, *off, &e)
            }
            Acc::Affine { base: b, coefs } => {
                let e = self.linear(idx, coefs);
                let t = self.f.val(format!("trunc i64 {e} to i32"));
                self.f.val(format!("add i32 {b}, {t}"))
            }
        }
    }

    /// `(off, strides)` of `v` in the arena (materialized if uniform or affine).
    pub(super) fn buf(&mut self, v: ValueId) -> (u32, Vec<i64>) {
        match self.repr(v) {
            Repr::Buf { off, strides } => (off, strides),
            _ => (self.materialize(v), row_major(&self.shape(v))),
        }
    }

    /// A contiguous row-major buffer holding `v`'s elements (a copy unless it already is one).
    pub(super) fn materialize(&mut self, v: ValueId) -> u32 {
        let shape = self.shape(v);
        if let Repr::Buf { off, strides } = self.repr(v) {
            if is_contiguous(&shape, &strides) {
                return off;
            }
        }
        let dst = self.alloc(shape.iter().product());
        self.copy_into(v, dst);
        dst
    }

    /// Copy `v`'s elements into the contiguous buffer at `dst`.
    pub(super) fn copy_into(&mut self, v: ValueId, dst: u32) {
        let shape = self.shape(v);
        let base = ety(self.dtype(v));
        let a = match self.repr(v) {
            Repr::Uniform(x) => Acc::Val(x),
            Repr::Buf { off, strides } => Acc::Arena { off, strides },
            Repr::Affine { base, coefs } => Acc::Affine { base, coefs },
        };
        self.ew(&shape, &[a], &[base], base, dst, &|_, x, _| Ok(x[0].clone())).expect("a copy cannot fail");
    }

    // -----------------------------------------------------------------------------------------
    // Loops
    // -----------------------------------------------------------------------------------------

    /// A row of `chunks` full chunks of `lanes` then a `tail`-lane one (if any): `body(j0,
    /// valid)` with `j0` the chunk's first element (an i64 operand) and `valid` its lanes.
    pub(super) fn row_chunks(&mut self, chunks: usize, lanes: u32, tail: usize, body: &mut dyn FnMut(&mut Self, &str, usize) -> Result<()>) -> Result<()> {
        self.loop_n(chunks, &mut |l, c| {
            let j0 = if c == "0" { "0".to_string() } else { l.f.val(format!("mul i64 {c}, {lanes}")) };
            body(l, &j0, lanes as usize)
        })?;
        if tail > 0 {
            body(self, &(chunks * lanes as usize).to_string(), tail)?;
        }
        Ok(())
    }

    /// `then` when the i1 `cond` holds, else `otherwise`: the two as branches joined by a phi
    /// of type `ty`.
    pub(super) fn either(&mut self, cond: &str, ty: &str, then: &mut dyn FnMut(&mut Self) -> String, otherwise: &mut dyn FnMut(&mut Self) -> String) -> String {
        let (lt, lo, join) = (self.f.label(), self.f.label(), self.f.label());
        self.f.condbr(cond, &lt, &lo);
        self.f.block(&lt);
        let a = then(self);
        let at = self.f.cur.clone();
        self.f.br(&join);
        self.f.block(&lo);
        let b = otherwise(self);
        let bo = self.f.cur.clone();
        self.f.br(&join);
        self.f.block(&join);
        self.f.val(format!("phi {ty} [ {a}, %{at} ], [ {b}, %{bo} ]"))
    }

    /// `for i in 0..n` (i64 `i`) with a static trip count; no loop for 0 or 1 iterations.
    pub(super) fn loop_n(&mut self, n: usize, f: &mut dyn FnMut(&mut Self, &str) -> Result<()>) -> Result<()> {
        match n {
            0 => Ok(()),
            1 => f(self, "0"),
            _ => self.counted_loop(&n.to_string(), false, f),
        }
    }

    /// `for i in 0..n` with `n` an i64 operand (any value: no iteration for `n <= 0`).
    pub(super) fn loop_dyn(&mut self, n: &str, f: &mut dyn FnMut(&mut Self, &str) -> Result<()>) -> Result<()> {
        self.counted_loop(n, true, f)
    }

    /// The loop of [`Self::loop_n`] / [`Self::loop_dyn`]: `guarded` checks `n > 0` first,
    /// otherwise the body runs at least once.
    fn counted_loop(&mut self, n: &str, guarded: bool, f: &mut dyn FnMut(&mut Self, &str) -> Result<()>) -> Result<()> {
        let pre = self.f.cur.clone();
        let body = self.f.label();
        let latch = self.f.label();
        let exit = self.f.label();
        let i = self.f.fresh();
        let inext = self.f.fresh();
        if guarded {
            let any = self.f.val(format!("icmp sgt i64 {n}, 0"));
            self.f.condbr(&any, &body, &exit);
        } else {
            self.f.br(&body);
        }
        self.f.block(&body);
        self.f.inst(format!("{i} = phi i64 [ 0, %{pre} ], [ {inext}, %{latch} ]"));
        f(self, &i)?;
        self.f.br(&latch);
        self.f.block(&latch);
        self.f.inst(format!("{inext} = add nuw nsw i64 {i}, 1"));
        let c = self.f.val(format!("icmp slt i64 {inext}, {n}"));
        self.f.condbr(&c, &body, &exit);
        self.f.block(&exit);
        Ok(())
    }

    /// A loop nest over `shape` (outermost first).
    pub(super) fn nest(&mut self, shape: &[usize], f: &mut dyn FnMut(&mut Self, &[String]) -> Result<()>) -> Result<()> {
        nest::nest(self, shape, f)
    }

    /// `lanes` elements of `a` along the inner dim, starting at inner index `j0` (i64 operand)
    /// of the row whose outer part is `row` (element index, or affine value), inner stride `s`.
    /// Lanes past `valid` are not read (they hold poison / zero).
    pub(super) fn read_vec(&mut self, a: &RowAcc, base: &str, lanes: u32, j0: &str, valid: usize) -> String {
        match a {
            RowAcc::Val(x) => self.f.splat(base, lanes, x),
            RowAcc::Arena { off, row, s } => {
                let t = if *s == 1 { j0.to_string() } else { self.f.val(format!("mul i64 {j0}, {s}")) };
                let e = self.f.val(format!("add i64 {row}, {t}"));
                match *s {
                    0 => {
                        let x = self.load_arena(base, 0, *off, &e);
                        self.f.splat(base, lanes, &x)
                    }
                    1 => self.load_arena(base, lanes, *off, &e),
                    _ => {
                        let mut v = "zeroinitializer".to_string();
                        let ty = vt(base, lanes);
                        for lane in 0..(lanes as usize).min(valid) {
                            let el = self.f.val(format!("add i64 {e}, {}", lane as i64 * s));
                            let x = self.load_arena(base, 0, *off, &el);
                            v = self.f.val(format!("insertelement {ty} {v}, {base} {x}, i64 {lane}"));
                        }
                        v
                    }
                }
            }
            RowAcc::Affine { row, c } => {
                // row + c * (j0 + lane)
                let j = self.f.val(format!("trunc i64 {j0} to i32"));
                let cj = self.f.val(format!("mul i32 {j}, {c}"));
                let r = self.f.val(format!("add i32 {row}, {cj}"));
                let sp = self.f.splat("i32", lanes, &r);
                self.f.val(format!("add <{lanes} x i32> {sp}, {}", iota(lanes, *c)))
            }
        }
    }

    /// Element `j` (i64 operand) of a row operand, as a scalar.
    pub(super) fn read_row(&mut self, a: &RowAcc, base: &str, j: &str) -> String {
        match a {
            RowAcc::Val(x) => x.clone(),
            RowAcc::Arena { off, row, s } => {
                let t = match *s {
                    0 => "0".to_string(),
                    1 => j.to_string(),
                    _ => self.f.val(format!("mul i64 {j}, {s}")),
                };
                let e = if t == "0" { row.clone() } else { self.f.val(format!("add i64 {row}, {t}")) };
                self.load_arena(base, 0, *off, &e)
            }
            RowAcc::Affine { row, c } => {
                let j32 = self.f.val(format!("trunc i64 {j} to i32"));
                let cj = self.f.val(format!("mul i32 {j32}, {c}"));
                self.f.val(format!("add i32 {row}, {cj}"))
            }
        }
    }

    /// Split a loop-nest operand into its per-row part at outer indices `oidx` (strides over
    /// all dims given; the last one is the inner stride).
    pub(super) fn row_acc(&mut self, a: &Acc, st: &[i64], oidx: &[String]) -> RowAcc {
        let r = st.len();
        match a {
            Acc::Val(x) => RowAcc::Val(x.clone()),
            Acc::Arena { off, .. } => {
                let e = self.linear(oidx, &st[..r - 1]);
                RowAcc::Arena { off: *off, row: e, s: st[r - 1] }
            }
            Acc::Affine { base, .. } => {
                let e = self.linear(oidx, &st[..r - 1]);
                let row = if e == "0" {
                    base.clone()
                } else {
                    let t = self.f.val(format!("trunc i64 {e} to i32"));
                    self.f.val(format!("add i32 {base}, {t}"))
                };
                if st[r - 1] == 0 {
                    RowAcc::Val(row)
                } else {
                    RowAcc::Affine { row, c: st[r - 1] }
                }
            }
        }
    }

    /// The elementwise kernel: `out[j] = f(operands at j)` over `shape`, `out` contiguous at
    /// `out_off`. `f` is written over any lane count (0 = scalar) and gets operands of the
    /// element types `bases`.
    #[allow(clippy::type_complexity)]
    pub(super) fn ew(
        &mut self,
        shape: &[usize],
        accs: &[Acc],
        bases: &[&str],
        ob: &str,
        out_off: u32,
        f: &dyn Fn(&mut Self, &[String], u32) -> Result<String>,
    ) -> Result<()> {
        let strides: Vec<Vec<i64>> = accs.iter().map(|a| a.strides(shape.len())).collect();
        let Merged { shape: sh, strides: st } = merge_dims(shape, &strides);
        let r = sh.len();
        let inner = sh[r - 1];
        let out_strides = row_major(&sh);
        let outer_shape = sh[..r - 1].to_vec();
        self.nest(&outer_shape, &mut |l, oidx| {
            let rows: Vec<RowAcc> = accs.iter().zip(&st).map(|(a, s)| l.row_acc(a, s, oidx)).collect();
            let out_row = l.linear(oidx, &out_strides[..r - 1]);
            if inner == 1 {
                let xs: Vec<String> = rows.iter().zip(bases).map(|(a, b)| l.read_row(a, b, "0")).collect();
                let y = f(l, &xs, 0)?;
                l.store_arena(ob, 0, out_off, &out_row, &y, None);
                return Ok(());
            }
            let c = LoopTarget::LLVM.row_chunks(inner, []);
            let (lanes, chunks, tail) = (c.lanes, c.full, c.tail);
            l.row_chunks(chunks, lanes, tail, &mut |l, j0, valid| {
                let xs: Vec<String> = rows.iter().zip(bases).map(|(a, b)| l.read_vec(a, b, lanes, j0, valid)).collect();
                let y = f(l, &xs, lanes)?;
                let e = l.f.val(format!("add i64 {out_row}, {j0}"));
                let m = (valid < lanes as usize).then(|| lane_mask(lanes, valid));
                l.store_arena(ob, lanes, out_off, &e, &y, m.as_deref());
                Ok(())
            })
        })
    }
}

impl LoopEmit for Lower<'_> {
    type Idx = String;

    fn counted(&mut self, n: usize, body: &mut dyn FnMut(&mut Self, String) -> Result<()>) -> Result<()> {
        self.loop_n(n, &mut |l, i| body(l, i.to_string()))
    }
}

/// One operand of an `ew` row: a hoisted value, arena elements from element index `row` with
/// inner stride `s`, or the affine `row + c·j`.
#[derive(Clone, Debug)]
pub(super) enum RowAcc {
    Val(String),
    Arena { off: u32, row: String, s: i64 },
    Affine { row: String, c: i64 },
}

impl Lower<'_> {
    /// Lower an elementwise op: uniform in, uniform out; otherwise a loop into a new buffer.
    #[allow(clippy::type_complexity)]
    fn map_op(&mut self, op: &Op, f: &dyn Fn(&mut Self, &[String], u32) -> Result<String>) -> Result<()> {
        let res = op.result();
        let shape = self.shape(res);
        let all_uniform = op.args.iter().all(|&a| {
            matches!(self.repr(a), Repr::Uniform(_)) || self.k.ty(a).numel() == 1 || matches!(self.repr(a), Repr::Affine { ref coefs, .. } if coefs.iter().all(|&c| c == 0))
        });
        if all_uniform {
            let xs: Vec<String> = op.args.iter().map(|&a| self.uniform(a).expect("uniform operand")).collect();
            let y = f(self, &xs, 0)?;
            self.def_uniform(res, y);
            return Ok(());
        }
        let accs: Vec<Acc> = op.args.iter().map(|&a| self.acc(a, &shape)).collect();
        let bases: Vec<&str> = op.args.iter().map(|&a| ety(self.dtype(a))).collect();
        // An operand dying here with the result's shape and a buffer of its own lends the buffer
        // (each element is read before it is written, at the same index): softmax and attention
        // chains then stay in one slot instead of streaming through fresh ones.
        let reuse = op.args.iter().find(|&&a| self.k.ty(a).shape == shape && self.can_update_in_place(a));
        let out = match reuse.map(|&a| self.repr(a)) {
            Some(Repr::Buf { off, .. }) => off,
            _ => self.alloc(shape.iter().product()),
        };
        self.ew(&shape, &accs, &bases, ety(self.dtype(res)), out, f)?;
        self.set(res, Repr::Buf { off: out, strides: row_major(&shape) });
        Ok(())
    }

    /// Lower a block's ops; returns its `yield` if it ends in one.
    fn lower_block<'o>(&mut self, blk: &'o Block) -> Result<Option<&'o Op>> {
        // Last use (op index in this block, nested uses counted at their op) of every value
        // defined here: its slot is free for later ops once that op is lowered.
        // Ops fused into a later reduction use their operands at that reduction.
        let (plan, roots, groups) = self.plan_fusion(blk);
        let dies = crate::loops::arena::deaths(blk, |i| plan.get(&i).copied().unwrap_or(i));
        for (i, op) in blk.ops.iter().enumerate() {
            if plan.contains_key(&i) {
                continue;
            }
            match &op.kind {
                _ if roots.contains(&i) => self.fused_map(op)?,
                _ if groups.contains_key(&i) => self.fused_group(&groups[&i].0.iter().map(|&r| blk.ops[r].clone()).collect::<Vec<_>>(), groups[&i].1)?,
                OpKind::Yield => return Ok(Some(op)),
                OpKind::For => self.lower_for(op)?,
                OpKind::If => self.lower_if(op)?,
                _ => self.lower_op(op)?,
            }
            for &v in &dies[i] {
                self.release(v);
            }
        }
        Ok(None)
    }

    /// The affine form of an i32 operand of `shape` (uniform values have zero coefficients).
    fn affine_of(&mut self, v: ValueId) -> Option<(String, Vec<i64>)> {
        if self.dtype(v) != DType::I32 {
            return None;
        }
        let rank = self.k.ty(v).rank();
        match self.repr(v) {
            Repr::Affine { base, coefs } => Some((base, coefs)),
            Repr::Uniform(x) => Some((x, vec![0; rank])),
            _ => None,
        }
    }

    /// Try to define an i32 `add` / `sub` / `mul` / `neg` result as affine.
    fn try_affine(&mut self, op: &Op) -> bool {
        let res = op.result();
        if self.dtype(res) != DType::I32 || self.k.ty(res).rank() == 0 {
            return false;
        }
        let (bop, uop) = match &op.kind {
            OpKind::Binary(b) => (Some(*b), None),
            OpKind::Unary(u) => (None, Some(*u)),
            _ => return false,
        };
        if let Some(opc_ir::UnaryOp::Neg) = uop {
            let Some((b, c)) = self.affine_of(op.args[0]) else { return false };
            if c.iter().all(|&x| x == 0) {
                return false;
            }
            let nb = self.f.val(format!("sub i32 0, {b}"));
            self.set(res, Repr::Affine { base: nb, coefs: c.iter().map(|x| x.wrapping_neg()).collect() });
            return true;
        }
        let Some(bop) = bop else { return false };
        let (Some((b0, c0)), Some((b1, c1))) = (self.affine_of(op.args[0]), self.affine_of(op.args[1])) else { return false };
        if c0.iter().chain(&c1).all(|&x| x == 0) {
            return false;
        }
        use opc_ir::BinaryOp as B;
        let (base, coefs) = match bop {
            B::Add => (self.f.val(format!("add i32 {b0}, {b1}")), c0.iter().zip(&c1).map(|(a, b)| a.wrapping_add(*b)).collect::<Vec<i64>>()),
            B::Sub => (self.f.val(format!("sub i32 {b0}, {b1}")), c0.iter().zip(&c1).map(|(a, b)| a.wrapping_sub(*b)).collect::<Vec<i64>>()),
            B::Mul => {
                let (k, b, c) = if let Some(&k) = self.consts.get(&op.args[1]) {
                    (k, b0, c0)
                } else if let Some(&k) = self.consts.get(&op.args[0]) {
                    (k, b1, c1)
                } else {
                    return false;
                };
                let nb = self.f.val(format!("mul i32 {b}, {k}"));
                (nb, c.iter().map(|x| (x.wrapping_mul(k) as i32) as i64).collect())
            }
            _ => return false,
        };
        // Coefficients are kept as i32 values (wrapping, like the elements).
        let coefs: Vec<i64> = coefs.into_iter().map(|x: i64| x as i32 as i64).collect();
        self.set(res, Repr::Affine { base, coefs });
        true
    }

    pub(super) fn lower_op(&mut self, op: &Op) -> Result<()> {
        let k = self.k;
        match &op.kind {
            OpKind::Const(s) => {
                let d = self.dtype(op.result());
                if d == DType::I32 {
                    if let Scalar::Int(i) = s {
                        self.consts.insert(op.result(), *i as i32 as i64);
                    }
                }
                let x = self.const_value(*s, d);
                self.def_uniform(op.result(), x);
            }
            OpKind::ProgramId(a) | OpKind::NumPrograms(a) => {
                let a = *a as usize;
                if a > 2 {
                    return Err(self.unsupported(op, "grid axis out of range"));
                }
                let src = if matches!(op.kind, OpKind::ProgramId(_)) { self.pid[a].clone() } else { self.grid[a].clone() };
                let x = self.f.val(format!("trunc i64 {src} to i32"));
                self.def_uniform(op.result(), x);
            }
            OpKind::Dim(s) => {
                let src = self.dims.get(s.0 as usize).cloned().ok_or_else(|| self.unsupported(op, "dim symbol out of range"))?;
                let x = self.f.val(format!("trunc i64 {src} to i32"));
                self.def_uniform(op.result(), x);
            }
            OpKind::ScalarParam(p) => {
                let raw = self.scalars.get(*p).cloned().flatten().ok_or_else(|| self.unsupported(op, "parameter is not a scalar"))?;
                let x = self.f.val(format!("trunc i64 {raw} to i32"));
                let x = if self.dtype(op.result()) == DType::F32 { self.f.val(format!("bitcast i32 {x} to float")) } else { x };
                self.def_uniform(op.result(), x);
            }
            OpKind::Arange => {
                let n = self.shape(op.result())[0];
                if n == 1 {
                    self.def_uniform(op.result(), "0".into());
                } else {
                    self.set(op.result(), Repr::Affine { base: "0".into(), coefs: vec![1] });
                }
            }
            OpKind::Unary(u) => {
                if self.try_affine(op) {
                    return Ok(());
                }
                let (u, d) = (*u, self.dtype(op.args[0]));
                self.map_op(op, &|l, x, lanes| l.unary(op, u, d, &x[0], lanes))?;
            }
            OpKind::Binary(bop) => {
                if self.try_affine(op) {
                    return Ok(());
                }
                let (bop, d) = (*bop, self.dtype(op.args[0]));
                self.map_op(op, &|l, x, lanes| l.binary(op, bop, d, &x[0], &x[1], lanes))?;
            }
            OpKind::Cmp(p) => {
                let (p, d) = (*p, self.dtype(op.args[0]));
                self.map_op(op, &|l, x, lanes| Ok(l.cmp(p, d, &x[0], &x[1], lanes)))?;
            }
            OpKind::Select => {
                self.map_op(op, &|l, x, lanes| {
                    let t = vt(ety(l.dtype(op.args[1])), lanes);
                    let c = l.f.val(format!("icmp ne {} {}, {}", vt("i32", lanes), x[0], cst("i32", lanes, "0")));
                    Ok(l.f.val(format!("select {} {c}, {t} {}, {t} {}", vt("i1", lanes), x[1], x[2])))
                })?;
            }
            OpKind::Cast(r) => {
                let (from, to, r) = (self.dtype(op.args[0]), self.dtype(op.result()), *r);
                if from == to {
                    let src = self.repr(op.args[0]);
                    self.set_view(op.result(), src);
                    if let Some(&c) = self.consts.get(&op.args[0]) {
                        self.consts.insert(op.result(), c);
                    }
                } else {
                    self.map_op(op, &|l, x, lanes| Ok(l.cast(from, to, r, &x[0], lanes)))?;
                }
            }
            OpKind::Bitcast => {
                let (from, to) = (self.dtype(op.args[0]), self.dtype(op.result()));
                self.map_op(op, &|l, x, lanes| Ok(l.bitcast(from, to, &x[0], lanes)))?;
            }
            // Views; a view of a splat constant is the same constant.
            OpKind::Broadcast | OpKind::ExpandDims(_) | OpKind::Permute(_) => {
                let (ins, out) = (self.shape(op.args[0]), self.shape(op.result()));
                let restride = |st: &[i64]| view_strides(&op.kind, &ins, &out, st).expect("a view op");
                let r = match self.repr(op.args[0]) {
                    Repr::Uniform(v) => Repr::Uniform(v),
                    Repr::Buf { off, strides } => Repr::Buf { off, strides: restride(&strides) },
                    Repr::Affine { base, coefs } => Repr::Affine { base, coefs: restride(&coefs) },
                };
                self.set_view(op.result(), r);
                if let Some(&c) = self.consts.get(&op.args[0]) {
                    self.consts.insert(op.result(), c);
                }
            }
            OpKind::Reshape => {
                let r = match self.repr(op.args[0]) {
                    Repr::Uniform(v) => Repr::Uniform(v),
                    _ => {
                        let off = self.materialize(op.args[0]);
                        Repr::Buf { off, strides: row_major(&self.shape(op.result())) }
                    }
                };
                self.set_view(op.result(), r);
            }
            OpKind::Reduce { op: rop, axis } => self.lower_reduce(op, *rop, *axis as usize)?,
            OpKind::Scan { op: ScanOp::Cumsum, axis } => self.lower_cumsum(op, *axis as usize)?,
            OpKind::Dot => self.lower_dot(op)?,
            OpKind::Load { .. } | OpKind::Store { .. } | OpKind::AtomicAdd { .. } => {
                let (tensor, kind) = crate::loops::access::Access::of(&op.kind).expect("an access op");
                self.lower_access(op, tensor, kind)?
            }
            OpKind::For | OpKind::If | OpKind::Yield => unreachable!("handled by lower_block in {}", k.name),
        }
        Ok(())
    }

    /// A literal in dtype `d`, exactly as the interpreter's `const_data`.
    fn const_value(&mut self, s: Scalar, d: DType) -> String {
        match literal(s, d) {
            Literal::F32(x) => super::text::flit(x),
            Literal::I32(x) => x.to_string(),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Control flow
    // -----------------------------------------------------------------------------------------

    /// Emit `body` once per `name` as an internal `noinline` function `@name(ptr %arena,
    /// params)` returning void, its own `Fb`: a piece of code called from many places (a
    /// micro-kernel, a register transpose) is then optimized once and apart from the kernel,
    /// whose optimization time grows faster than its size. The body sees only its parameters
    /// and the arena.
    pub(super) fn side_fn(&mut self, name: &str, params: &str, body: &mut dyn FnMut(&mut Self) -> Result<()>) -> Result<()> {
        if self.side_fns.iter().any(|(n, _)| n == name) {
            return Ok(());
        }
        let outer = std::mem::replace(&mut self.f, Fb::new());
        let r = body(self);
        self.f.inst("ret void");
        let f = std::mem::replace(&mut self.f, outer);
        r?;
        let text = format!("define internal void @{name}(ptr noalias align 64 %arena, {params}) noinline #0 {{\n{}}}\n\n", f.finish());
        self.side_fns.push((name.to_string(), text));
        Ok(())
    }

    pub(super) fn enter_region(&mut self) -> u32 {
        let saved = self.region;
        self.regions += 1;
        self.region = self.regions;
        saved
    }

    /// A `for` op's bounds `(lo, hi, step)` (i32 operands), after the check that returns the
    /// op's error code when the step is not positive (a launch error, as in the interpreter).
    fn for_bounds(&mut self, op: &Op) -> Result<(String, String, String)> {
        let site = self.for_count;
        self.for_count += 1;
        let (lo, hi, step) = match (self.uniform(op.args[0]), self.uniform(op.args[1]), self.uniform(op.args[2])) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => return Err(self.unsupported(op, "loop bounds must be scalars")),
        };
        let bad = self.f.label();
        let ok = self.f.label();
        let nonpos = self.f.val(format!("icmp sle i32 {step}, 0"));
        self.f.condbr(&nonpos, &bad, &ok);
        self.f.block(&bad);
        let s64 = self.f.val(format!("sext i32 {step} to i64"));
        self.f.inst(format!("store i64 {s64}, ptr {}, align 8", self.err));
        self.f.inst(format!("ret i32 {}", site + 1));
        self.f.block(&ok);
        Ok((lo, hi, step))
    }

    fn lower_for(&mut self, op: &Op) -> Result<()> {
        let body = &op.regions[0];
        let (lo, hi, step) = self.for_bounds(op)?;
        if let Some(m) = self.match_kloop(op) {
            return self.lower_kloop(op, &m, [&lo, &hi, &step]);
        }

        // Carried values: scalars in stack slots, tiles in one buffer each.
        let homes = control::carry_in(self, op);
        let iv = self.f.alloca("i64");
        let lo64 = self.f.val(format!("sext i32 {lo} to i64"));
        self.f.inst(format!("store i64 {lo64}, ptr {iv}, align 8"));
        let hi64 = self.f.val(format!("sext i32 {hi} to i64"));
        let step64 = self.f.val(format!("sext i32 {step} to i64"));
        let header = self.f.label();
        let body_blk = self.f.label();
        let exit = self.f.label();
        self.f.br(&header);
        self.f.block(&header);
        let cur = self.f.val(format!("load i64, ptr {iv}, align 8"));
        let more = self.f.val(format!("icmp slt i64 {cur}, {hi64}"));
        self.f.condbr(&more, &body_blk, &exit);
        self.f.block(&body_blk);
        let saved = self.enter_region();
        let iv32 = self.f.val(format!("trunc i64 {cur} to i32"));
        self.def_uniform(body.args[0], iv32);
        control::bind(self, &body.args[1..], &homes);
        let y = self.lower_block(body)?.ok_or_else(|| self.unsupported(op, "the body does not end in `yield`"))?;
        control::yield_into(self, &y.args, &homes);
        let next = self.f.val(format!("add i64 {cur}, {step64}"));
        self.f.inst(format!("store i64 {next}, ptr {iv}, align 8"));
        self.f.br(&header);
        self.region = saved;
        self.f.block(&exit);
        control::carry_out(self, &op.results, &homes);
        Ok(())
    }

    /// A buffer the `if` may merge its `i`-th tile result into instead of a fresh one: that of
    /// a value defined before the `if`, yielded as the result by one of its branches, that has
    /// no use after the `if` (`if masked { s = where(..) } else { s }` then copies nothing on
    /// the `else` path).
    fn if_adoptable(&self, op: &Op, i: usize) -> Option<u32> {
        let shape = self.shape(op.results[i]);
        for region in &op.regions {
            let Some(y) = region.ops.last().filter(|y| y.kind == OpKind::Yield) else { continue };
            let Some(&v) = y.args.get(i) else { continue };
            let Some(Some(Repr::Buf { off, strides })) = self.reprs.get(v.0 as usize) else { continue };
            if self.region_of[v.0 as usize] != self.region || self.arena.is_shared(*off) || self.shape(v) != shape || !is_contiguous(&shape, strides) {
                continue;
            }
            let mut inside = 0u32;
            for r in &op.regions {
                opc_ir::walk_ops(r, &mut |o| inside += o.args.iter().filter(|&&a| a == v).count() as u32);
            }
            if inside == self.uses[v.0 as usize] {
                return Some(*off);
            }
        }
        None
    }

    fn lower_if(&mut self, op: &Op) -> Result<()> {
        let c = self.uniform(op.args[0]).ok_or_else(|| self.unsupported(op, "the condition must be a scalar"))?;
        let homes = control::merge_homes(self, op, |l, i| l.if_adoptable(op, i));
        let then_b = self.f.label();
        let else_b = self.f.label();
        let merge = self.f.label();
        let cb = self.f.val(format!("icmp ne i32 {c}, 0"));
        self.f.condbr(&cb, &then_b, &else_b);
        for (blk, region) in [(then_b, &op.regions[0]), (else_b, &op.regions[1])] {
            self.f.block(&blk);
            let saved = self.enter_region();
            let y = self.lower_block(region)?;
            let ys = y.map(|y| y.args.clone()).unwrap_or_default();
            if ys.len() != op.results.len() {
                return Err(self.unsupported(op, "a region yields the wrong number of values"));
            }
            control::yield_into(self, &ys, &homes);
            self.f.br(&merge);
            self.region = saved;
        }
        self.f.block(&merge);
        control::bind(self, &op.results, &homes);
        Ok(())
    }
}

/// Homes of carried and merged values: scalars in stack slots (`alloca` of the element type;
/// each read is a `load`), tiles in pinned arena buffers.
impl ControlEmit for Lower<'_> {
    type Val = String;
    type Slot = (String, &'static str);

    fn kernel(&self) -> &Kernel {
        self.k
    }
    fn buffer(&self, v: ValueId) -> Option<(u32, Vec<i64>)> {
        match self.repr(v) {
            Repr::Buf { off, strides } => Some((off, strides)),
            _ => None,
        }
    }
    fn scalar(&mut self, v: ValueId) -> Option<String> {
        self.uniform(v)
    }
    fn new_slot(&mut self, d: DType) -> Self::Slot {
        (self.f.alloca(ety(d)), ety(d))
    }
    fn write_slot(&mut self, (slot, t): &Self::Slot, x: String) {
        self.f.inst(format!("store {t} {x}, ptr {slot}, align 4"));
    }
    fn bind_slot(&mut self, v: ValueId, (slot, t): &Self::Slot) {
        let x = self.f.val(format!("load {t}, ptr {slot}, align 4"));
        self.def_uniform(v, x);
    }
    fn bind_buf(&mut self, v: ValueId, off: u32) {
        let st = row_major(&self.shape(v));
        self.set(v, Repr::Buf { off, strides: st });
    }
    fn alloc_buf(&mut self, numel: usize) -> u32 {
        self.alloc(numel)
    }
    fn pin_buf(&mut self, off: u32) {
        self.pin(off);
    }
    fn copy_value(&mut self, v: ValueId, dst: u32) {
        self.copy_into(v, dst);
    }
    fn copy_buf(&mut self, v: ValueId, from: u32, dst: u32) {
        let shape = self.shape(v);
        let a = Acc::Arena { off: from, strides: row_major(&shape) };
        let b = ety(self.dtype(v));
        self.ew(&shape, &[a], &[b], b, dst, &|_, x, _| Ok(x[0].clone())).expect("a copy cannot fail");
    }
}
