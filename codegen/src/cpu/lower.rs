//! `lower-cpu`: tile IR → loop-and-buffer form, emitted directly as Cranelift IR (CLIF).
//!
//! The target-independent decisions of this level (element classes, views, arena slots, dim
//! merging and vector chunks, the access analysis, the runtime helper table) are
//! [`crate::loops`], shared with the LLVM target, with this target's parameters
//! ([`LoopTarget::CRANELIFT`]); this file and its siblings emit Cranelift for them.
//!
//! **The loop-and-buffer level.** Every tile value gets a [`Repr`]:
//! - [`Repr::Uniform`]: every element is one SSA value (a Cranelift `Variable`). Rank-0 scalars,
//!   splat constants and elementwise ops over such operands stay here: `zeros([BM]) + sink`
//!   costs one scalar add, no loop.
//! - [`Repr::Buf`]: the elements live in the per-program scratch arena at a fixed byte offset,
//!   addressed through per-dim element strides. Ops that produce data write a fresh contiguous
//!   (row-major) buffer; the shape ops are pure views on their operand's buffer:
//!   `expand_dims` inserts a stride, `broadcast` sets stride 0 on stretched dims, `permute`
//!   permutes strides and `reshape` of a contiguous buffer re-strides it (others copy first).
//!
//! Each element is 32 bits in a buffer and in registers: f32 for f32/f16/bf16 values (already
//! rounded to their dtype, as in the interpreter) and i32 for everything else (ints
//! sign-extended, bool 0/1, e2m1/e8m0 raw codes). The arena is allocated at compile time
//! (`loops/arena.rs`), one slot per buffer-producing op (bump-allocated: see
//! [`LoopTarget::CRANELIFT`] for why slots are not reused yet; an op inside a loop reuses its
//! slot every iteration, as SSA guarantees the previous iteration's value is dead by then).
//!
//! **Ops become loop nests** over the result shape, with static trip counts (tile shapes are
//! static): adjacent dims that are contiguous for every operand are merged, the innermost dim
//! runs 4 lanes at a time (`f32x4` / `i32x4`) where the op is exact lane-wise (copies, compares,
//! selects, f32 `+ - * /`, f32 `max`/`min` with the interpreter's NaN rule, `neg`/`abs`, i32 and
//! bool `+ - * & | ^`, i32 `max`/`min`; see `elem.rs`) and every operand is contiguous or
//! broadcast along it, then a scalar tail.
//! - `load` / `store` / `atomic_add`: `memory.rs`; `dot`: `dot.rs`; `reduce` / `cumsum`: `reduce.rs`.
//! - `for`: an i64 induction counter (no overflow near `i32::MAX`); carried scalars are
//!   Variables (the frontend builds the block params), carried tiles live in one buffer per
//!   carried value, copied in from the init and from each `yield` (through temporaries when a
//!   yielded view reads another carried buffer). A non-positive step returns an error code.
//! - `if`: a branch; scalar results are Variables, tile results one buffer written by each arm.
//!
//! Element semantics (dtype rounding, int wrapping, guarded division, casts) are in `elem.rs`.
//!
//! ```text
//! tile IR:  %5 = load @x[%3, %4] : f32[8, 16]       %7 = mul %5, %6 : f32[8, 16]   (%6 = param @s)
//! lowered:  arena@0x80  <- for i < 8, j < 16: e = r[i]·stride0 + c[j]·stride1;
//!                          (r[i] <u M && c[j] <u N) ? x[e] : 0.0
//!           arena@0x280 <- for t < 128 step 4: f32x4 load @0x80 · splat(%6)   (dims merged)
//! ```
//!
//! **Does not** (yet): fuse elementwise chains into one loop, reuse arena slots by liveness,
//! or vectorize loads/stores of global memory. Correctness first; these are the next steps.

use std::collections::HashMap;

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, FuncRef, InstBuilder, MemFlagsData, Type, Value};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::{FunctionBuilder, Variable};
use opc_ir::{Block, DType, Kernel, Op, OpKind, ParamKind, Scalar, ScanOp, ValueId};

use super::helpers::Helper;
use super::MetaLayout;
use crate::loops::access::Access;
use crate::loops::arena::{deaths, Arena};
use crate::loops::control::{self, ControlEmit};
use crate::loops::nest::{self, merge_dims, Chunks, LoopEmit, Merged};
use crate::loops::LoopTarget;
pub(super) use crate::loops::plan::row_major;
use crate::loops::plan::{is_contiguous, is_float_repr, literal, view_strides, Literal};
pub(super) use crate::loops::sites::{for_sites, op_ctx};
use crate::{CodegenError, Result};

/// How a tile value is held (see the module docs).
#[derive(Clone, Debug)]
pub(super) enum Repr {
    Uniform(Variable),
    Buf { off: u32, strides: Vec<i64> },
}

/// How a loop body reads an operand: one hoisted value, or arena elements with strides over
/// the loop's dims.
#[derive(Clone, Debug)]
pub(super) enum Acc {
    Val(Value),
    Arena { off: u32, strides: Vec<i64> },
}

/// Launch-time facts about one tensor parameter, loaded once in the entry block.
#[derive(Clone)]
pub(super) struct TensorVals {
    pub base: Value,
    pub shape: Vec<Value>,
    pub strides: Vec<Value>,
    pub dtype: DType,
}

/// What the lowering hands back besides the function.
pub(super) struct Lowered {
    /// Bytes of scratch arena one program needs.
    pub arena_bytes: usize,
}

pub(super) struct Lower<'a, 'f> {
    pub k: &'a Kernel,
    pub b: FunctionBuilder<'f>,
    reprs: Vec<Option<Repr>>,
    /// Slots in 4-byte elements, 16-byte aligned (one `f32x4`); reused once every value holding
    /// one is dead where [`LoopTarget::CRANELIFT`] says so (carried and `if` buffers pinned).
    arena: Arena,
    scratch: Value,
    err: Value,
    pid: [Value; 3],
    grid: [Value; 3],
    dims: Vec<Value>,
    scalars: Vec<Option<Value>>,
    pub(super) tensors: Vec<Option<TensorVals>>,
    helpers: HashMap<Helper, FuncRef>,
    /// Number of `for` ops lowered so far: the error code of a bad step is its index + 1.
    for_count: i64,
}

/// Cranelift type of one element of a dtype (see the module docs).
pub(super) fn cty(d: DType) -> Type {
    if is_float_repr(d) {
        types::F32
    } else {
        types::I32
    }
}

const ARENA: MemFlagsData = MemFlagsData::trusted();

/// Lower the body of `k` into the function being built by `b` (its signature is already set:
/// `(tensors, meta, pid0, pid1, pid2, scratch, err) -> i32`).
pub(super) fn lower(
    k: &Kernel,
    b: FunctionBuilder<'_>,
    helpers: HashMap<Helper, FuncRef>,
    meta: &MetaLayout,
    frontend: TargetFrontendConfig,
) -> Result<Lowered> {
    let mut l = Lower::enter(k, b, helpers, meta);
    if let Some(y) = l.lower_block(&k.body)? {
        return Err(l.unsupported(y, "`yield` at the top level of the body"));
    }
    let zero = l.b.ins().iconst(types::I32, 0);
    l.b.ins().return_(&[zero]);
    l.b.seal_all_blocks();
    let arena_bytes = 4 * l.arena.peak() as usize;
    l.b.finalize(frontend);
    Ok(Lowered { arena_bytes })
}

/// Lower the *grid block* of `k` into a function with the program signature whose `err`
/// argument points to three i64s: it writes the grid extents there (missing axes 1, values
/// unchecked: the caller rejects negative ones) and returns 0. The ahead-of-time launcher calls
/// it, so that the grid is computed by the same lowering as the body instead of a second
/// evaluator. `pid*` and `scratch` are unused; the grid's `num_programs` reads `meta`'s grid
/// slots, which the caller has not filled yet (the verifier rejects it in a grid block anyway).
pub(super) fn lower_grid(
    k: &Kernel,
    b: FunctionBuilder<'_>,
    helpers: HashMap<Helper, FuncRef>,
    meta: &MetaLayout,
    frontend: TargetFrontendConfig,
) -> Result<()> {
    let mut l = Lower::enter(k, b, helpers, meta);
    let unsupported = |why: String| CodegenError::Unsupported { kernel: k.name.clone(), target: "cpu".into(), reason: why };
    let Some(y) = l.lower_block(&k.grid)? else {
        return Err(unsupported("the grid block does not end in `yield`".into()));
    };
    if y.args.is_empty() || y.args.len() > 3 {
        return Err(unsupported(format!("the grid block yields {} extents; 1 to 3 are allowed", y.args.len())));
    }
    for i in 0..3 {
        let x = match y.args.get(i) {
            Some(&v) => {
                let x = l.uniform(v).ok_or_else(|| unsupported(format!("grid extent {i} is not an i32 scalar")))?;
                l.b.ins().sextend(types::I64, x)
            }
            None => l.b.ins().iconst(types::I64, 1),
        };
        l.b.ins().store(MemFlagsData::trusted(), x, l.err, (8 * i) as i32);
    }
    let zero = l.b.ins().iconst(types::I32, 0);
    l.b.ins().return_(&[zero]);
    l.b.seal_all_blocks();
    l.b.finalize(frontend);
    Ok(())
}

impl<'a, 'f> Lower<'a, 'f> {
    /// The entry block: read the launch-time values (dims, grid, scalars, tensor bases, shapes
    /// and strides) from the function's arguments.
    fn enter(k: &'a Kernel, mut b: FunctionBuilder<'f>, helpers: HashMap<Helper, FuncRef>, meta: &MetaLayout) -> Self {
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let p = b.block_params(entry).to_vec();
        let (tptrs, metap, scratch, err) = (p[0], p[1], p[5], p[6]);
        let pid = [p[2], p[3], p[4]];
        let ld = |b: &mut FunctionBuilder, slot: usize| {
            b.ins().load(types::I64, MemFlagsData::trusted().with_readonly(), metap, (8 * slot) as i32)
        };
        let dims: Vec<Value> = (0..k.dims.len()).map(|s| ld(&mut b, meta.dims + s)).collect();
        let grid = [ld(&mut b, meta.grid), ld(&mut b, meta.grid + 1), ld(&mut b, meta.grid + 2)];
        let mut scalars = vec![];
        let mut tensors = vec![];
        for (pi, prm) in k.params.iter().enumerate() {
            match &prm.kind {
                ParamKind::Scalar { .. } => {
                    scalars.push(Some(ld(&mut b, meta.params[pi])));
                    tensors.push(None);
                }
                ParamKind::Tensor { dtype, dims: tdims, .. } => {
                    let r = tdims.len();
                    let base = b.ins().load(types::I64, MemFlagsData::trusted().with_readonly(), tptrs, (8 * pi) as i32);
                    let shape = (0..r).map(|d| ld(&mut b, meta.params[pi] + d)).collect();
                    let strides = (0..r).map(|d| ld(&mut b, meta.params[pi] + r + d)).collect();
                    scalars.push(None);
                    tensors.push(Some(TensorVals { base, shape, strides, dtype: *dtype }));
                }
            }
        }
        Lower { k, b, reprs: vec![None; k.values.len()], arena: Arena::new(LoopTarget::CRANELIFT.lanes), scratch, err, pid, grid, dims, scalars, tensors, helpers, for_count: 0 }
    }
}

impl Lower<'_, '_> {
    pub(super) fn unsupported(&self, op: &Op, why: &str) -> CodegenError {
        CodegenError::Unsupported { kernel: self.k.name.clone(), target: "cpu".into(), reason: format!("{}: {why}", op_ctx(op)) }
    }

    pub(super) fn call(&mut self, h: Helper, args: &[Value]) -> Option<Value> {
        let f = self.helpers[&h];
        let inst = self.b.ins().call(f, args);
        self.b.inst_results(inst).first().copied()
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
            .unwrap_or_else(|| panic!("lower-cpu: %{} used before its definition (the verifier should catch this)", v.0))
    }

    pub(super) fn set(&mut self, v: ValueId, r: Repr) {
        if let Repr::Buf { off, .. } = &r {
            self.arena.retain(off / 4);
        }
        self.reprs[v.0 as usize] = Some(r);
    }

    /// `v` is dead: drop its hold on its slot, freeing the slot when no value holds it.
    fn release(&mut self, v: ValueId) {
        if let Some(Repr::Buf { off, .. }) = &self.reprs[v.0 as usize] {
            self.arena.release(off / 4);
        }
    }

    /// Define `v` as a uniform value.
    pub(super) fn def_uniform(&mut self, v: ValueId, x: Value) {
        let var = self.b.declare_var(cty(self.dtype(v)));
        self.b.def_var(var, x);
        self.set(v, Repr::Uniform(var));
    }

    /// Reserve a 16-byte aligned arena slot of `numel` elements; returns its byte offset.
    pub(super) fn alloc(&mut self, numel: usize) -> u32 {
        4 * self.arena.alloc(numel)
    }

    /// Address of element `elem` (i64) of the arena slot at `off`.
    pub(super) fn arena_addr(&mut self, off: u32, elem: Value) -> Value {
        let bytes = self.b.ins().ishl_imm_u(elem, 2);
        let a = self.b.ins().iadd(self.scratch, bytes);
        if off == 0 {
            a
        } else {
            self.b.ins().iadd_imm_s(a, off as i64)
        }
    }

    /// Σ idx[d] * strides[d] (an i64 element index); size-0 strides are skipped.
    pub(super) fn linear(&mut self, idx: &[Value], strides: &[i64]) -> Value {
        let mut acc: Option<Value> = None;
        for (&i, &s) in idx.iter().zip(strides) {
            if s == 0 {
                continue;
            }
            let t = if s == 1 { i } else { self.b.ins().imul_imm_s(i, s) };
            acc = Some(match acc {
                None => t,
                Some(a) => self.b.ins().iadd(a, t),
            });
        }
        acc.unwrap_or_else(|| self.b.ins().iconst(types::I64, 0))
    }

    pub(super) fn load_arena(&mut self, ty: Type, off: u32, elem: Value) -> Value {
        let a = self.arena_addr(off, elem);
        self.b.ins().load(ty, ARENA, a, 0)
    }

    pub(super) fn store_arena(&mut self, off: u32, elem: Value, x: Value) {
        let a = self.arena_addr(off, elem);
        self.b.ins().store(ARENA, x, a, 0);
    }

    /// The single value of `v` if all its elements are equal by construction (uniform, or one element).
    pub(super) fn uniform(&mut self, v: ValueId) -> Option<Value> {
        match self.repr(v) {
            Repr::Uniform(var) => Some(self.b.use_var(var)),
            Repr::Buf { off, .. } if self.k.ty(v).numel() == 1 => {
                let z = self.b.ins().iconst(types::I64, 0);
                Some(self.load_arena(cty(self.dtype(v)), off, z))
            }
            Repr::Buf { .. } => None,
        }
    }

    /// How a loop nest over `shape` reads `v` (which has `shape`'s element count).
    pub(super) fn acc(&mut self, v: ValueId, shape: &[usize]) -> Acc {
        if let Some(x) = self.uniform(v) {
            return Acc::Val(x);
        }
        let Repr::Buf { off, strides } = self.repr(v) else { unreachable!("uniform handled above") };
        if self.k.ty(v).shape == shape {
            Acc::Arena { off, strides }
        } else {
            // Same element count, other shape: elements pair up in row-major order.
            let off = self.materialize(v);
            Acc::Arena { off, strides: row_major(shape) }
        }
    }

    pub(super) fn read(&mut self, a: &Acc, ty: Type, idx: &[Value]) -> Value {
        match a {
            Acc::Val(x) => *x,
            Acc::Arena { off, strides } => {
                let e = self.linear(idx, strides);
                self.load_arena(ty, *off, e)
            }
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
        let ty = cty(self.dtype(v));
        let a = match self.repr(v) {
            Repr::Uniform(var) => Acc::Val(self.b.use_var(var)),
            Repr::Buf { off, strides } => Acc::Arena { off, strides },
        };
        let id = |_: &mut Self, x: &[Value]| Ok(x[0]);
        self.ew(&shape, &[a], &[ty], dst, &id, Some(&|_: &mut Self, x: &[Value]| x[0])).expect("a copy cannot fail");
    }

    // -----------------------------------------------------------------------------------------
    // Loops
    // -----------------------------------------------------------------------------------------

    /// `for i in 0..n` with a static trip count (no loop at all for 0 or 1 iterations).
    pub(super) fn loop_n(&mut self, n: usize, f: &mut dyn FnMut(&mut Self, Value) -> Result<()>) -> Result<()> {
        match n {
            0 => Ok(()),
            1 => {
                let z = self.b.ins().iconst(types::I64, 0);
                f(self, z)
            }
            _ => {
                let body = self.b.create_block();
                let i = self.b.append_block_param(body, types::I64);
                let exit = self.b.create_block();
                let z = self.b.ins().iconst(types::I64, 0);
                self.b.ins().jump(body, &[z.into()]);
                self.b.switch_to_block(body);
                f(self, i)?;
                let i1 = self.b.ins().iadd_imm_s(i, 1);
                let more = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, i1, n as i64);
                self.b.ins().brif(more, body, &[i1.into()], exit, &[]);
                self.b.switch_to_block(exit);
                Ok(())
            }
        }
    }

    /// A loop nest over `shape` (outermost first).
    pub(super) fn nest(&mut self, shape: &[usize], f: &mut dyn FnMut(&mut Self, &[Value]) -> Result<()>) -> Result<()> {
        nest::nest(self, shape, f)
    }

    /// The elementwise kernel: `out[j] = f(operands at j)` over `shape`, `out` contiguous at
    /// `out_off`. `vf` is the same function on 4-lane vectors, used on the innermost dim when
    /// every operand is contiguous or broadcast along it.
    #[allow(clippy::type_complexity)]
    pub(super) fn ew(
        &mut self,
        shape: &[usize],
        accs: &[Acc],
        tys: &[Type],
        out_off: u32,
        f: &dyn Fn(&mut Self, &[Value]) -> Result<Value>,
        vf: Option<&dyn Fn(&mut Self, &[Value]) -> Value>,
    ) -> Result<()> {
        let strides: Vec<Vec<i64>> = accs
            .iter()
            .map(|a| match a {
                Acc::Val(_) => vec![0; shape.len()],
                Acc::Arena { strides, .. } => strides.clone(),
            })
            .collect();
        let Merged { shape: sh, strides: st } = merge_dims(shape, &strides);
        let r = sh.len();
        let inner = sh[r - 1];
        let out_strides = row_major(&sh);
        // Vector chunks when the op has a lane-wise form and no operand is strided along the row.
        let chunks = match vf {
            Some(_) => LoopTarget::CRANELIFT.row_chunks(inner, st.iter().map(|s| s[r - 1])),
            None => Chunks { lanes: 1, full: 0, tail: inner },
        };
        let simd = chunks.full > 0;
        let outer_shape = sh[..r - 1].to_vec();
        self.nest(&outer_shape, &mut |l, oidx| {
            // Per operand: the hoisted value, or the element index of this row's start.
            // `bases[k]`: a hoisted value, or the arena slot with the operand's inner stride;
            // `row_starts[k]`: the element index where this row starts.
            let mut bases = vec![];
            let mut row_starts = vec![];
            for (k, (a, s)) in accs.iter().zip(&st).enumerate() {
                match a {
                    Acc::Val(x) => {
                        bases.push(Acc::Val(*x));
                        row_starts.push(None);
                    }
                    Acc::Arena { off, .. } => {
                        let e = l.linear(oidx, &s[..r - 1]);
                        if s[r - 1] == 0 {
                            let x = l.load_arena(tys[k], *off, e);
                            bases.push(Acc::Val(x));
                            row_starts.push(None);
                        } else {
                            bases.push(Acc::Arena { off: *off, strides: vec![s[r - 1]] });
                            row_starts.push(Some(e));
                        }
                    }
                }
            }
            let out_row = l.linear(oidx, &out_strides[..r - 1]);
            let elem = |l: &mut Self, base: Option<Value>, s: i64, j: Value| -> Value {
                let t = if s == 1 { j } else { l.b.ins().imul_imm_s(j, s) };
                match base {
                    Some(b) => l.b.ins().iadd(b, t),
                    None => t,
                }
            };
            let mut start = 0usize;
            if simd {
                let vtys: Vec<Type> = tys.iter().map(|t| t.by(chunks.lanes).expect("a vector type")).collect();
                let vf = vf.expect("simd implies a vector function");
                let splats: Vec<Option<Value>> = bases
                    .iter()
                    .zip(&vtys)
                    .map(|(a, &vty)| if let Acc::Val(x) = a { Some(l.b.ins().splat(vty, *x)) } else { None })
                    .collect();
                l.loop_n(chunks.full, &mut |l, c| {
                    let j = l.b.ins().imul_imm_s(c, chunks.lanes as i64);
                    let mut xs = vec![];
                    for (k, a) in bases.iter().enumerate() {
                        xs.push(match a {
                            Acc::Val(_) => splats[k].expect("splat of a hoisted operand"),
                            Acc::Arena { off, .. } => {
                                let e = elem(l, row_starts[k], 1, j);
                                l.load_arena(vtys[k], *off, e)
                            }
                        });
                    }
                    let y = vf(l, &xs);
                    let e = elem(l, Some(out_row), 1, j);
                    l.store_arena(out_off, e, y);
                    Ok(())
                })?;
                start = chunks.full * chunks.lanes as usize;
            }
            l.loop_n(chunks.tail, &mut |l, j0| {
                let j = if start == 0 { j0 } else { l.b.ins().iadd_imm_s(j0, start as i64) };
                let mut xs = vec![];
                for (k, a) in bases.iter().enumerate() {
                    xs.push(match a {
                        Acc::Val(x) => *x,
                        Acc::Arena { off, strides } => {
                            let e = elem(l, row_starts[k], strides[0], j);
                            l.load_arena(tys[k], *off, e)
                        }
                    });
                }
                let y = f(l, &xs)?;
                let e = elem(l, Some(out_row), 1, j);
                l.store_arena(out_off, e, y);
                Ok(())
            })
        })
    }

    /// Lower an elementwise op: uniform in, uniform out; otherwise a loop into a new buffer.
    #[allow(clippy::type_complexity)]
    fn map_op(
        &mut self,
        op: &Op,
        f: &dyn Fn(&mut Self, &[Value]) -> Result<Value>,
        vf: Option<&dyn Fn(&mut Self, &[Value]) -> Value>,
    ) -> Result<()> {
        let res = op.result();
        let shape = self.shape(res);
        let all_uniform = op.args.iter().all(|&a| matches!(self.repr(a), Repr::Uniform(_)) || self.k.ty(a).numel() == 1);
        if all_uniform {
            let xs: Vec<Value> = op.args.iter().map(|&a| self.uniform(a).expect("uniform operand")).collect();
            let y = f(self, &xs)?;
            self.def_uniform(res, y);
            return Ok(());
        }
        let accs: Vec<Acc> = op.args.iter().map(|&a| self.acc(a, &shape)).collect();
        let tys: Vec<Type> = op.args.iter().map(|&a| cty(self.dtype(a))).collect();
        let out = self.alloc(shape.iter().product());
        self.ew(&shape, &accs, &tys, out, f, vf)?;
        self.set(res, Repr::Buf { off: out, strides: row_major(&shape) });
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Blocks and ops
    // -----------------------------------------------------------------------------------------

    /// Lower a block's ops; returns its `yield` if it ends in one.
    /// Slots of values that die at an op are free for the ops after it.
    fn lower_block<'o>(&mut self, blk: &'o Block) -> Result<Option<&'o Op>> {
        let dies = deaths(blk, |i| i);
        for (op, dead) in blk.ops.iter().zip(&dies) {
            match &op.kind {
                OpKind::Yield => return Ok(Some(op)),
                OpKind::For => self.lower_for(op)?,
                OpKind::If => self.lower_if(op)?,
                _ => self.lower_op(op)?,
            }
            if LoopTarget::CRANELIFT.reuse {
                dead.iter().for_each(|&v| self.release(v));
            }
        }
        Ok(None)
    }

    #[allow(clippy::type_complexity)]
    fn lower_op(&mut self, op: &Op) -> Result<()> {
        let k = self.k;
        match &op.kind {
            OpKind::Const(s) => {
                let d = self.dtype(op.result());
                let x = self.const_value(*s, d);
                self.def_uniform(op.result(), x);
            }
            OpKind::ProgramId(a) | OpKind::NumPrograms(a) => {
                let a = *a as usize;
                if a > 2 {
                    return Err(self.unsupported(op, "grid axis out of range"));
                }
                let src = if matches!(op.kind, OpKind::ProgramId(_)) { self.pid[a] } else { self.grid[a] };
                let x = self.b.ins().ireduce(types::I32, src);
                self.def_uniform(op.result(), x);
            }
            OpKind::Dim(s) => {
                let src = *self.dims.get(s.0 as usize).ok_or_else(|| self.unsupported(op, "dim symbol out of range"))?;
                let x = self.b.ins().ireduce(types::I32, src);
                self.def_uniform(op.result(), x);
            }
            OpKind::ScalarParam(p) => {
                let raw = self.scalars.get(*p).copied().flatten().ok_or_else(|| self.unsupported(op, "parameter is not a scalar"))?;
                let x = self.b.ins().ireduce(types::I32, raw);
                let x = if self.dtype(op.result()) == DType::F32 { self.b.ins().bitcast(types::F32, MemFlagsData::new(), x) } else { x };
                self.def_uniform(op.result(), x);
            }
            OpKind::Arange => {
                let n = self.shape(op.result())[0];
                let out = self.alloc(n);
                self.loop_n(n, &mut |l, i| {
                    let x = l.b.ins().ireduce(types::I32, i);
                    l.store_arena(out, i, x);
                    Ok(())
                })?;
                self.set(op.result(), Repr::Buf { off: out, strides: vec![1] });
            }
            OpKind::Unary(u) => {
                let (u, d) = (*u, self.dtype(op.args[0]));
                let vf = move |l: &mut Self, x: &[Value]| l.unary_x4(u, d, x[0]).expect("checked by has_unary_x4");
                let vf: Option<&dyn Fn(&mut Self, &[Value]) -> Value> = if Self::has_unary_x4(u, d) { Some(&vf) } else { None };
                self.map_op(op, &|l, x| l.unary(op, u, d, x[0]), vf)?;
            }
            OpKind::Binary(bop) => {
                let (bop, d) = (*bop, self.dtype(op.args[0]));
                let vf = move |l: &mut Self, x: &[Value]| l.binary_x4(bop, d, x[0], x[1]).expect("checked by has_binary_x4");
                let vf: Option<&dyn Fn(&mut Self, &[Value]) -> Value> = if Self::has_binary_x4(bop, d) { Some(&vf) } else { None };
                self.map_op(op, &|l, x| l.binary(op, bop, d, x[0], x[1]), vf)?;
            }
            OpKind::Cmp(p) => {
                let (p, d) = (*p, self.dtype(op.args[0]));
                self.map_op(op, &|l, x| Ok(l.cmp(p, d, x[0], x[1])), Some(&|l: &mut Self, x: &[Value]| l.cmp_x4(p, d, x[0], x[1])))?;
            }
            OpKind::Select => {
                self.map_op(
                    op,
                    &|l, x| {
                        let c = l.b.ins().icmp_imm_s(IntCC::NotEqual, x[0], 0);
                        Ok(l.b.ins().select(c, x[1], x[2]))
                    },
                    Some(&|l: &mut Self, x: &[Value]| l.select_x4(x[0], x[1], x[2])),
                )?;
            }
            OpKind::Cast(r) => {
                let (from, to, r) = (self.dtype(op.args[0]), self.dtype(op.result()), *r);
                if from == to {
                    let src = self.repr(op.args[0]);
                    self.set(op.result(), src);
                } else {
                    self.map_op(op, &|l, x| Ok(l.cast(from, to, r, x[0])), None)?;
                }
            }
            OpKind::Bitcast => {
                let (from, to) = (self.dtype(op.args[0]), self.dtype(op.result()));
                self.map_op(op, &|l, x| Ok(l.bitcast(from, to, x[0])), None)?;
            }
            OpKind::Broadcast | OpKind::ExpandDims(_) | OpKind::Permute(_) => {
                let (ins, out) = (self.shape(op.args[0]), self.shape(op.result()));
                let r = match self.repr(op.args[0]) {
                    Repr::Uniform(v) => Repr::Uniform(v),
                    Repr::Buf { off, strides } => Repr::Buf { off, strides: view_strides(&op.kind, &ins, &out, &strides).expect("a view op") },
                };
                self.set(op.result(), r);
            }
            OpKind::Reshape => {
                let r = match self.repr(op.args[0]) {
                    Repr::Uniform(v) => Repr::Uniform(v),
                    Repr::Buf { .. } => {
                        let off = self.materialize(op.args[0]);
                        Repr::Buf { off, strides: row_major(&self.shape(op.result())) }
                    }
                };
                self.set(op.result(), r);
            }
            OpKind::Reduce { op: rop, axis } => self.lower_reduce(op, *rop, *axis as usize)?,
            OpKind::Scan { op: ScanOp::Cumsum, axis } => self.lower_cumsum(op, *axis as usize)?,
            OpKind::Dot => self.lower_dot(op)?,
            OpKind::Load { .. } | OpKind::Store { .. } | OpKind::AtomicAdd { .. } => {
                let (tensor, kind) = Access::of(&op.kind).expect("an access op");
                self.lower_access(op, tensor, kind)?
            }
            OpKind::For | OpKind::If | OpKind::Yield => unreachable!("handled by lower_block in {}", k.name),
        }
        Ok(())
    }

    /// A literal in dtype `d`, exactly as the interpreter's `const_data`.
    fn const_value(&mut self, s: Scalar, d: DType) -> Value {
        match literal(s, d) {
            Literal::F32(x) => self.b.ins().f32const(x),
            Literal::I32(x) => self.b.ins().iconst(types::I32, x as i64),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Control flow
    // -----------------------------------------------------------------------------------------

    fn lower_for(&mut self, op: &Op) -> Result<()> {
        let site = self.for_count;
        self.for_count += 1;
        let body = &op.regions[0];
        let (lo, hi, step) = match (self.uniform(op.args[0]), self.uniform(op.args[1]), self.uniform(op.args[2])) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => return Err(self.unsupported(op, "loop bounds must be scalars")),
        };
        // A non-positive step is a launch error (as in the interpreter): return its site code.
        let bad = self.b.create_block();
        let ok = self.b.create_block();
        let nonpos = self.b.ins().icmp_imm_s(IntCC::SignedLessThanOrEqual, step, 0);
        self.b.ins().brif(nonpos, bad, &[], ok, &[]);
        self.b.switch_to_block(bad);
        let s64 = self.b.ins().sextend(types::I64, step);
        self.b.ins().store(MemFlagsData::trusted(), s64, self.err, 0);
        let code = self.b.ins().iconst(types::I32, site + 1);
        self.b.ins().return_(&[code]);
        self.b.switch_to_block(ok);

        // Carried values: scalars in Variables, tiles in one buffer each.
        let homes = control::carry_in(self, op);
        control::bind(self, &body.args[1..], &homes);
        let iv = self.b.declare_var(types::I64);
        let lo64 = self.b.ins().sextend(types::I64, lo);
        self.b.def_var(iv, lo64);
        let hi64 = self.b.ins().sextend(types::I64, hi);
        let step64 = self.b.ins().sextend(types::I64, step);
        let header = self.b.create_block();
        let body_blk = self.b.create_block();
        let exit = self.b.create_block();
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(header);
        let cur = self.b.use_var(iv);
        let more = self.b.ins().icmp(IntCC::SignedLessThan, cur, hi64);
        self.b.ins().brif(more, body_blk, &[], exit, &[]);
        self.b.switch_to_block(body_blk);
        let iv32 = self.b.ins().ireduce(types::I32, cur);
        self.def_uniform(body.args[0], iv32);
        let y = self.lower_block(body)?.ok_or_else(|| self.unsupported(op, "the body does not end in `yield`"))?;
        control::yield_into(self, &y.args, &homes);
        let next = self.b.ins().iadd(cur, step64);
        self.b.def_var(iv, next);
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(exit);
        control::carry_out(self, &op.results, &homes);
        Ok(())
    }

    fn lower_if(&mut self, op: &Op) -> Result<()> {
        let c = self.uniform(op.args[0]).ok_or_else(|| self.unsupported(op, "the condition must be a scalar"))?;
        let homes = control::merge_homes(self, op, |_, _| None);
        control::bind(self, &op.results, &homes);
        let then_b = self.b.create_block();
        let else_b = self.b.create_block();
        let merge = self.b.create_block();
        self.b.ins().brif(c, then_b, &[], else_b, &[]);
        for (blk, region) in [(then_b, &op.regions[0]), (else_b, &op.regions[1])] {
            self.b.switch_to_block(blk);
            let y = self.lower_block(region)?;
            let ys = y.map(|y| y.args.clone()).unwrap_or_default();
            if ys.len() != op.results.len() {
                return Err(self.unsupported(op, "a region yields the wrong number of values"));
            }
            control::yield_into(self, &ys, &homes);
            self.b.ins().jump(merge, &[]);
        }
        self.b.switch_to_block(merge);
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Reductions, scans, dot
    // -----------------------------------------------------------------------------------------
}

/// Homes of carried and merged values: scalars in `Variable`s (read by `use_var` wherever
/// they are used), tiles in pinned arena buffers.
impl ControlEmit for Lower<'_, '_> {
    type Val = Value;
    type Slot = Variable;

    fn kernel(&self) -> &Kernel {
        self.k
    }
    fn buffer(&self, v: ValueId) -> Option<(u32, Vec<i64>)> {
        match self.repr(v) {
            Repr::Buf { off, strides } => Some((off, strides)),
            Repr::Uniform(_) => None,
        }
    }
    fn scalar(&mut self, v: ValueId) -> Option<Value> {
        self.uniform(v)
    }
    fn new_slot(&mut self, d: DType) -> Variable {
        self.b.declare_var(cty(d))
    }
    fn write_slot(&mut self, s: &Variable, x: Value) {
        self.b.def_var(*s, x);
    }
    fn bind_slot(&mut self, v: ValueId, s: &Variable) {
        self.set(v, Repr::Uniform(*s));
    }
    /// A `for` result gets a Variable of its own, holding the carried one's value at the exit.
    fn read_slot(&mut self, v: ValueId, s: &Variable) {
        let x = self.b.use_var(*s);
        self.def_uniform(v, x);
    }
    fn bind_buf(&mut self, v: ValueId, off: u32) {
        self.set(v, Repr::Buf { off, strides: row_major(&self.shape(v)) });
    }
    fn alloc_buf(&mut self, numel: usize) -> u32 {
        self.alloc(numel)
    }
    fn pin_buf(&mut self, off: u32) {
        self.arena.pin(off / 4);
    }
    fn copy_value(&mut self, v: ValueId, dst: u32) {
        self.copy_into(v, dst);
    }
    fn copy_buf(&mut self, v: ValueId, from: u32, dst: u32) {
        let shape = self.shape(v);
        let a = Acc::Arena { off: from, strides: row_major(&shape) };
        let ty = cty(self.dtype(v));
        self.ew(&shape, &[a], &[ty], dst, &|_, x| Ok(x[0]), Some(&|_: &mut Self, x: &[Value]| x[0])).expect("a copy cannot fail");
    }
}

impl LoopEmit for Lower<'_, '_> {
    type Idx = Value;

    fn counted(&mut self, n: usize, body: &mut dyn FnMut(&mut Self, Value) -> Result<()>) -> Result<()> {
        self.loop_n(n, body)
    }
}
