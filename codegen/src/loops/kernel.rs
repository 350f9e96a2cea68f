//! [`LoopKernel`]: a whole kernel at the loop-and-buffer level, as a printable plan
//! (`opc build --emit loops`).
//!
//! The plan runs the shared decisions of this level over the kernel for one target's
//! parameters ([`LoopTarget`]): which values stay scalars in registers, which are views of
//! another value's buffer (and with which strides), which get an arena slot (at which offset,
//! reused after death where the target reuses slots), the loop nest of every buffer-producing
//! op after dim merging with its vector chunks, and how every global access runs (vector rows
//! or element by element) with the dims at which each index is checked. Both code generators
//! take these decisions from the same functions (`plan.rs`, `arena.rs`, `nest.rs`,
//! `access.rs`); the LLVM generator refines them further where it can (affine index tiles
//! instead of `arange` buffers, reductions fused with their producers, in-place elementwise
//! updates, packed K loops), which the plan does not show: `arange` appears as the buffer the
//! Cranelift target fills, and vector chunks as the target runs an op that has a lane-wise
//! form (the Cranelift target runs the others, such as integer division, as scalar loops).

use std::collections::HashMap;
use std::fmt;

use opc_ir::{Block, Kernel, Op, OpKind, ParamKind, ValueId};

use super::access::{Access, AccessPlan};
use super::arena::{deaths, Arena};
use super::nest::{lanes_for, merge_dims, Chunks};
use super::plan::{is_contiguous, row_major, view_strides};

/// The parameters of the loop-and-buffer level that differ between the CPU targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoopTarget {
    pub name: &'static str,
    /// Lanes of one vector of 32-bit elements; also the slot alignment, in elements.
    pub lanes: u32,
    /// Row tails run as one masked vector (otherwise as a scalar loop); short rows use fewer lanes.
    pub masked_tail: bool,
    /// Accesses whose index tile covers the inner dim run as vector rows.
    pub row_access: bool,
    /// Arena slots are reused once every value holding them is dead.
    pub reuse: bool,
}

impl LoopTarget {
    /// The Cranelift JIT (`cpu`): `f32x4` / `i32x4`, scalar tails, element-wise accesses, a
    /// bump-allocated arena. (Slot reuse works there too, and shrinks its arena 2-3x, but
    /// measured 20-30% slower on `gemm_f32_1024`: the reused layout puts the dot's tiles at
    /// 4 KiB-multiple distances; off until the allocator staggers slots.)
    pub const CRANELIFT: LoopTarget = LoopTarget { name: "cpu", lanes: 4, masked_tail: false, row_access: false, reuse: false };
    /// The LLVM JIT (`llvm`): `<16 x T>`, masked tails, vector rows, slot reuse.
    pub const LLVM: LoopTarget = LoopTarget { name: "llvm", lanes: 16, masked_tail: true, row_access: true, reuse: true };

    /// The parameters of the target named `name` on the command line.
    pub fn by_name(name: &str) -> Option<LoopTarget> {
        [Self::CRANELIFT, Self::LLVM].into_iter().find(|t| t.name == name)
    }

    /// How a row of `inner` elements whose operands have inner strides `inner_strides` runs.
    pub(crate) fn row_chunks(self, inner: usize, inner_strides: impl IntoIterator<Item = i64>) -> Chunks {
        if self.masked_tail {
            return if inner == 1 { Chunks { lanes: 1, full: 0, tail: 1 } } else { Chunks::new(inner, lanes_for(inner, self.lanes)) };
        }
        let vector = inner >= self.lanes as usize && inner_strides.into_iter().all(|s| s == 0 || s == 1);
        if vector {
            Chunks::new(inner, self.lanes)
        } else {
            Chunks { lanes: 1, full: 0, tail: inner }
        }
    }
}

/// One op of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The op as written: mnemonic and operands.
    pub op: String,
    pub how: How,
    /// The plans of the op's regions (`for` body, `if` arms).
    pub regions: Vec<Vec<Step>>,
}

/// How an op's result is held and computed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum How {
    /// Scalars in registers: every element of the result is one value.
    Uniform,
    /// A view of another value's buffer.
    View { of: ValueId, off: u32, strides: Vec<i64> },
    /// A fresh contiguous buffer at `off` (elements); `nest`: its elementwise loop nest.
    Buffer { off: u32, shape: Vec<usize>, nest: Option<Nest> },
    /// A global access; a tile load writes the buffer at `out`.
    Access { path: Path, checks: Vec<(usize, usize)>, out: Option<u32> },
    /// `for` / `if`: tile results live in pinned buffers.
    Control { pinned: Vec<u32> },
}

/// An elementwise loop nest after dim merging.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nest {
    pub outer: Vec<usize>,
    pub inner: usize,
    pub chunks: Chunks,
}

/// How an access runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Path {
    /// Vector rows along tensor dim `dim`'s index tile.
    Rows { dim: usize, outer: Vec<usize>, chunks: Chunks },
    /// Element by element over the access shape.
    Elements { shape: Vec<usize> },
}

/// A kernel at the loop-and-buffer level (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoopKernel {
    pub name: String,
    pub target: LoopTarget,
    pub steps: Vec<Step>,
    /// Bytes of arena one program needs.
    pub arena_bytes: usize,
}

/// How a value is held while planning.
#[derive(Clone, Debug)]
enum Rep {
    Uniform,
    Buf { off: u32, strides: Vec<i64> },
}

struct Planner<'a> {
    k: &'a Kernel,
    t: LoopTarget,
    reps: HashMap<ValueId, Rep>,
    arena: Arena,
}

/// The plan of kernel `k` (after the pass pipeline) for target parameters `t`.
pub fn plan_kernel(k: &Kernel, t: LoopTarget) -> LoopKernel {
    let mut p = Planner { k, t, reps: HashMap::new(), arena: Arena::new(t.lanes) };
    let steps = p.block(&k.body);
    LoopKernel { name: k.name.clone(), target: t, steps, arena_bytes: 4 * p.arena.peak() as usize }
}

impl Planner<'_> {
    fn shape(&self, v: ValueId) -> Vec<usize> {
        self.k.ty(v).shape.clone()
    }

    /// Whether every element of `v` is one register value.
    fn uniform(&self, v: ValueId) -> bool {
        matches!(self.reps.get(&v), Some(Rep::Uniform) | None) || self.k.ty(v).numel() == 1
    }

    fn set(&mut self, v: ValueId, r: Rep) {
        if let Rep::Buf { off, .. } = &r {
            self.arena.retain(*off);
        }
        self.reps.insert(v, r);
    }

    /// A fresh contiguous buffer for `v`.
    fn fresh(&mut self, v: ValueId) -> u32 {
        let off = self.arena.alloc(self.k.ty(v).numel());
        self.set(v, Rep::Buf { off, strides: row_major(&self.k.ty(v).shape) });
        off
    }

    /// Plan a block's ops, releasing each value's slot after its last use where the target
    /// reuses slots.
    fn block(&mut self, blk: &Block) -> Vec<Step> {
        let dies = deaths(blk, |i| i);
        let mut steps = vec![];
        for (i, op) in blk.ops.iter().enumerate() {
            if op.kind == OpKind::Yield {
                break;
            }
            steps.push(self.op(op));
            for v in dies[i].iter().filter(|_| self.t.reuse) {
                if let Some(Rep::Buf { off, .. }) = self.reps.get(v) {
                    self.arena.release(*off);
                }
            }
        }
        steps
    }

    fn op(&mut self, op: &Op) -> Step {
        let mut text = op.kind.mnemonic().to_string();
        if let Some((tensor, _)) = Access::of(&op.kind) {
            text.push_str(&format!(" @{}", self.k.params[tensor].name));
        }
        let args: Vec<String> = op.args.iter().map(|a| format!("%{}", a.0)).collect();
        if !args.is_empty() {
            text.push_str(&format!(" {}", args.join(", ")));
        }
        if let Some(r) = op.results.first() {
            text = format!("%{} = {text}", r.0);
        }
        let mut regions = vec![];
        let how = match &op.kind {
            OpKind::Broadcast | OpKind::ExpandDims(_) | OpKind::Permute(_) | OpKind::Reshape => self.view(op),
            OpKind::Cast(_) if self.k.ty(op.args[0]).dtype == self.k.ty(op.result()).dtype => self.view(op),
            OpKind::Unary(_) | OpKind::Binary(_) | OpKind::Cmp(_) | OpKind::Select | OpKind::Cast(_) | OpKind::Bitcast => self.elementwise(op),
            OpKind::Arange => {
                let n = self.k.ty(op.result()).numel();
                let off = self.fresh(op.result());
                let chunks = Chunks { lanes: 1, full: 0, tail: n };
                How::Buffer { off, shape: vec![n], nest: Some(Nest { outer: vec![], inner: n, chunks }) }
            }
            OpKind::Reduce { .. } | OpKind::Scan { .. } | OpKind::Dot if self.k.ty(op.result()).rank() > 0 => {
                let off = self.fresh(op.result());
                How::Buffer { off, shape: self.shape(op.result()), nest: None }
            }
            OpKind::Load { .. } | OpKind::Store { .. } | OpKind::AtomicAdd { .. } => self.access(op),
            OpKind::For | OpKind::If => {
                let mut pinned = vec![];
                let carried: Vec<ValueId> = if op.kind == OpKind::For { op.regions[0].args[1..].to_vec() } else { vec![] };
                for (i, &r) in op.results.iter().enumerate() {
                    if self.k.ty(r).is_scalar() {
                        self.set(r, Rep::Uniform);
                        carried.get(i).map(|&c| self.set(c, Rep::Uniform));
                        continue;
                    }
                    let off = self.fresh(r);
                    self.arena.pin(off);
                    pinned.push(off);
                    if let Some(&c) = carried.get(i) {
                        self.set(c, Rep::Buf { off, strides: row_major(&self.k.ty(c).shape) });
                    }
                }
                regions = op.regions.iter().map(|r| self.block(r)).collect();
                How::Control { pinned }
            }
            _ => {
                op.results.iter().for_each(|&r| self.set(r, Rep::Uniform));
                How::Uniform
            }
        };
        Step { op: text, how, regions }
    }

    /// `broadcast` / `expand_dims` / `permute`, `reshape` and same-dtype `cast`: views.
    fn view(&mut self, op: &Op) -> How {
        let (x, res) = (op.args[0], op.result());
        let Some(Rep::Buf { off, strides }) = self.reps.get(&x).cloned() else {
            self.set(res, Rep::Uniform);
            return How::Uniform;
        };
        let (ins, out) = (self.shape(x), self.shape(res));
        let strides = match &op.kind {
            OpKind::Reshape if is_contiguous(&ins, &strides) => row_major(&out),
            OpKind::Reshape => {
                let off = self.fresh(res);
                return How::Buffer { off, shape: out, nest: None };
            }
            OpKind::Cast(_) => strides,
            kind => view_strides(kind, &ins, &out, &strides).expect("a view op"),
        };
        self.set(res, Rep::Buf { off, strides: strides.clone() });
        How::View { of: x, off, strides }
    }

    /// An elementwise op: scalars over uniform operands, else a loop nest into a fresh buffer.
    fn elementwise(&mut self, op: &Op) -> How {
        let res = op.result();
        let shape = self.shape(res);
        if op.args.iter().all(|&a| self.uniform(a)) {
            self.set(res, Rep::Uniform);
            return How::Uniform;
        }
        let strides: Vec<Vec<i64>> = op
            .args
            .iter()
            .map(|&a| match self.reps.get(&a) {
                _ if self.uniform(a) => vec![0; shape.len()],
                Some(Rep::Buf { strides, .. }) if self.k.ty(a).shape == shape => strides.clone(),
                // Same element count, other shape: a contiguous copy pairs elements row-major.
                _ => row_major(&shape),
            })
            .collect();
        let m = merge_dims(&shape, &strides);
        let r = m.shape.len();
        let inner = m.shape[r - 1];
        let chunks = self.t.row_chunks(inner, m.strides.iter().map(|s| s[r - 1]));
        let off = self.fresh(res);
        How::Buffer { off, shape, nest: Some(Nest { outer: m.shape[..r - 1].to_vec(), inner, chunks }) }
    }

    fn access(&mut self, op: &Op) -> How {
        let (tensor, kind) = Access::of(&op.kind).expect("an access op");
        let ParamKind::Tensor { dtype, dims, .. } = &self.k.params[tensor].kind else {
            return How::Uniform;
        };
        let plan = AccessPlan::new(self.k, op, dims.len(), kind);
        let checks = (0..=plan.shape.len()).flat_map(|depth| plan.bound_at(depth).map(move |d| (d, depth)).collect::<Vec<_>>()).collect();
        let path = match plan.row_part(*dtype).filter(|_| self.t.row_access) {
            Some(dim) => {
                let n = plan.shape.len();
                let chunks = self.t.row_chunks(plan.shape[n - 1], []);
                Path::Rows { dim, outer: plan.shape[..n - 1].to_vec(), chunks }
            }
            None => Path::Elements { shape: plan.shape.clone() },
        };
        let out = match kind {
            Access::Load { .. } if !plan.shape.is_empty() => Some(self.fresh(op.result())),
            Access::Load { .. } => {
                self.set(op.result(), Rep::Uniform);
                None
            }
            Access::Store { .. } => None,
        };
        How::Access { path, checks, out }
    }
}

impl fmt::Display for Chunks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.full == 0 && self.lanes <= 1 {
            write!(f, "{} scalar", self.tail)
        } else {
            write!(f, "{} x {} lanes + {} tail", self.full, self.lanes, self.tail)
        }
    }
}

impl fmt::Display for How {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims = |s: &[usize]| format!("{s:?}");
        match self {
            How::Uniform => write!(f, "scalar"),
            How::View { of, off, strides } => write!(f, "view of %{} @{off} strides {strides:?}", of.0),
            How::Buffer { off, shape, nest } => {
                write!(f, "buf @{off} {}", dims(shape))?;
                match nest {
                    Some(n) => write!(f, ": loops {} row {} = {}", dims(&n.outer), n.inner, n.chunks),
                    None => Ok(()),
                }
            }
            How::Access { path, checks, out } => {
                match path {
                    Path::Rows { dim, outer, chunks } => write!(f, "rows on index {dim}: loops {} row = {chunks}", dims(outer))?,
                    Path::Elements { shape } => write!(f, "elements {}", dims(shape))?,
                }
                let c: Vec<String> = checks.iter().map(|(d, depth)| format!("{d}@{depth}")).collect();
                write!(f, "; index checks {}", c.join(" "))?;
                match out {
                    Some(o) => write!(f, "; into buf @{o}"),
                    None => Ok(()),
                }
            }
            How::Control { pinned } => write!(f, "pinned bufs {pinned:?}"),
        }
    }
}

impl fmt::Display for LoopKernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.target;
        writeln!(
            f,
            "// loops `{}` for {}: {} lanes, {} tails, {} accesses, {} slots; arena {} B (offsets in 4-byte elements)",
            self.name,
            t.name,
            t.lanes,
            if t.masked_tail { "masked" } else { "scalar" },
            if t.row_access { "row" } else { "element" },
            if t.reuse { "reused" } else { "bump" },
            self.arena_bytes
        )?;
        fn steps(f: &mut fmt::Formatter<'_>, s: &[Step], depth: usize) -> fmt::Result {
            for st in s {
                writeln!(f, "{:w$}{:<28} {}", "", st.op, st.how, w = 2 * depth)?;
                for (i, r) in st.regions.iter().enumerate() {
                    writeln!(f, "{:w$}region {i}:", "", w = 2 * depth + 2)?;
                    steps(f, r, depth + 2)?;
                }
            }
            Ok(())
        }
        steps(f, &self.steps, 0)
    }
}
