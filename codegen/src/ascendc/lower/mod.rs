//! `lower-ascendc`: tile IR → the AscendC-level program of `lir.rs`.
//!
//! **Value representations** ([`Val`]):
//! - rank-0 values are C++ scalars (`int32_t`, `float`, `bool`) computed on the scalar unit;
//! - `Splat`: a tile whose elements all equal one scalar (constants, broadcast scalars): never
//!   materialized unless an instruction needs a tensor (`Duplicate`), and consumed by the
//!   scalar forms `Adds`/`Muls`/`Maxs`/`Mins` otherwise;
//! - `Affine`: an i32 index tile `base + Σ c_d · i_d` (from `arange`, broadcasts, adds and
//!   constant multiples): `load`/`store` turn it into `DataCopyPad` boxes, masks evaluate it;
//! - `Tile`: a dense tile in the UB `calc` arena, row-major with the last dim padded to 32 bytes
//!   (the layout `DataCopyPad` produces), so every row starts 32-byte aligned;
//! - `View`: a broadcast / expand_dims / permute / reshape of a tile, as element strides over
//!   its buffer; vector instructions consume row and column broadcasts directly, everything
//!   else materializes it first.
//!
//! **Ops.** Elementwise ops, casts, selects and reductions become vector instructions where
//! AscendC has one (see `vector.rs`); the rest run as scalar loops over `GetValue`/`SetValue`
//! bracketed by `PipeBarrier<PIPE_ALL>` (`scalar.rs`). `load`/`store` are the CopyIn / CopyOut
//! stages through the `VECIN`/`VECOUT` queues (`memory.rs`). `dot` runs on the cube in a MIX
//! kernel, or on the vector unit (`cube.rs`). `for`/`if` are C++ control flow; carried tiles
//! have one buffer per carried value.
//!
//! **Modes.** The same walk produces the three programs of a MIX kernel: the vector program
//! (AIV 0 of each group), and the cube program / peer skeleton, which keep only the scalar
//! control flow that leads to `dot`s (see [`Mode`]).

mod cube;
mod memory;
pub(super) mod pipeline;
mod scalar;
mod tilemask;
mod vector;

pub(super) use cube::{cube_eligible, workspace_slots, FLAG_OPERANDS, FLAG_PRODUCT};
pub(super) use scalar::literal as literal_of;

use std::collections::HashSet;

use opc_ir::{Block, DType, Kernel, Loc, Op, OpKind, ParamKind, ValueId};

use super::lir::{self, Buf, BufId, Core, Effect, Instr, Pipe, Pos, Queue, QueueId, Res, Stmt};
use super::liveness::Liveness;
use crate::{CodegenError, Result};

/// How a value is held; see the module docs.
#[derive(Clone, Debug)]
pub(super) enum Val {
    Scalar(String),
    Splat(String),
    Affine {
        base: String,
        coefs: Vec<i64>,
    },
    Tile(BufId),
    View {
        buf: BufId,
        off: i64,
        strides: Vec<i64>,
    },
    /// A box `load` that only feeds the cube: never brought into UB; the cube program copies
    /// it from GM straight into L1 (index into `Lower::direct`).
    Gm(usize),
    /// A bool tile that is a predicate on index positions (masks built from `arange`):
    /// evaluated by `Compare` on a precomputed position tile when a `select` needs it.
    Pred(Pred),
}

/// A precomputed position tile: (dtype, shape, coefficients).
pub(super) type IotaKey = (DType, Vec<usize>, Vec<i64>);

/// A predicate on the element position `i` of a tile (see `Val::Pred`).
#[derive(Clone, Debug)]
pub(super) enum Pred {
    /// `base + Σ coefs[d] · i[d]  (op)  0`.
    Cmp {
        op: opc_ir::CmpPred,
        base: String,
        coefs: Vec<i64>,
    },
    /// The same for every element (a C++ bool expression).
    Uniform(String),
    And(Box<Pred>, Box<Pred>),
    Or(Box<Pred>, Box<Pred>),
    Not(Box<Pred>),
}

impl Pred {
    /// Re-index through a view: result dim `j` reads source dim `map[j]` (`None`: broadcast).
    pub(super) fn remap(&self, map: &[Option<usize>]) -> Pred {
        match self {
            Pred::Cmp { op, base, coefs } => Pred::Cmp { op: *op, base: base.clone(), coefs: map.iter().map(|s| s.map(|i| coefs[i]).unwrap_or(0)).collect() },
            Pred::Uniform(e) => Pred::Uniform(e.clone()),
            Pred::And(a, b) => Pred::And(Box::new(a.remap(map)), Box::new(b.remap(map))),
            Pred::Or(a, b) => Pred::Or(Box::new(a.remap(map)), Box::new(b.remap(map))),
            Pred::Not(a) => Pred::Not(Box::new(a.remap(map))),
        }
    }

    /// The C++ bool expression at element `idx`.
    pub(super) fn at(&self, idx: &[String]) -> String {
        match self {
            Pred::Cmp { op, base, coefs } => {
                let mut e = base.clone();
                for (i, c) in idx.iter().zip(coefs) {
                    if *c != 0 {
                        e = format!("{e} + {c} * {i}");
                    }
                }
                let o = match op {
                    opc_ir::CmpPred::Eq => "==",
                    opc_ir::CmpPred::Ne => "!=",
                    opc_ir::CmpPred::Lt => "<",
                    opc_ir::CmpPred::Le => "<=",
                    opc_ir::CmpPred::Gt => ">",
                    opc_ir::CmpPred::Ge => ">=",
                };
                format!("(({e}) {o} 0)")
            }
            Pred::Uniform(e) => e.clone(),
            Pred::And(a, b) => format!("({} && {})", a.at(idx), b.at(idx)),
            Pred::Or(a, b) => format!("({} || {})", a.at(idx), b.at(idx)),
            Pred::Not(a) => format!("(!{})", a.at(idx)),
        }
    }
}

/// Which program the walk emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// Everything: the AIV program (or the only program of an AIV-only kernel).
    Vector,
    /// The AIC program of a MIX kernel: scalar control flow reaching `dot`s, and the cube work.
    Cube,
    /// AIV sub-block 1 of a MIX kernel: the same control flow, flag hand-offs only.
    Peer,
}

/// C++ element type of a dtype in UB and GM (packed 4-bit types are bytes in GM; in UB one
/// element per byte).
pub(super) fn ctype(d: DType) -> &'static str {
    match d {
        DType::F32 => "float",
        DType::F16 => "half",
        DType::BF16 => "bfloat16_t",
        DType::I32 => "int32_t",
        DType::I8 | DType::I4 => "int8_t",
        DType::U8 | DType::Bool | DType::E8M0 | DType::E2M1 => "uint8_t",
    }
}

/// C++ type of a rank-0 value of dtype `d` (16-bit floats are held as rounded `float`s).
pub(super) fn scalar_ctype(d: DType) -> &'static str {
    match d {
        DType::F32 | DType::F16 | DType::BF16 => "float",
        DType::Bool => "bool",
        _ => "int32_t",
    }
}

/// Bytes of one element in UB.
pub(super) fn elem_bytes(d: DType) -> u64 {
    match d {
        DType::F32 | DType::I32 => 4,
        DType::F16 | DType::BF16 => 2,
        _ => 1,
    }
}

/// Elements per 32-byte block.
pub(super) fn c0(d: DType) -> u64 {
    32 / elem_bytes(d)
}

/// The padded UB layout of a tile shape: (element strides, padded element count).
pub(super) fn layout(d: DType, shape: &[usize]) -> (Vec<i64>, u64) {
    if shape.is_empty() {
        return (vec![], c0(d));
    }
    let last = lir::round_up(*shape.last().unwrap_or(&1) as u64, c0(d));
    let mut strides = vec![0i64; shape.len()];
    let mut s = last as i64;
    strides[shape.len() - 1] = 1;
    for i in (0..shape.len() - 1).rev() {
        strides[i] = s;
        s *= shape[i] as i64;
    }
    (strides, s as u64)
}

/// The lowering state.
pub(super) struct Lower<'k> {
    pub k: &'k Kernel,
    /// The kernel as written: cube eligibility and the cube operands are decided on it (`k`
    /// is its row-split copy in the vector program of a split MIX kernel, see `split.rs`).
    pub orig: &'k Kernel,
    /// Row `arange`s of a row-split vector program: they start at `subRow_`.
    pub(super) row_aranges: HashSet<ValueId>,
    /// Rows per sub-block when the vector program is row-split over the group's two AIVs.
    pub(super) split_rows: Option<u64>,
    /// Per cube site (in walk order): both operands read straight from GM (vector mode records it).
    pub(super) site_direct: Vec<bool>,
    /// The cube/vector overlap plan (`pipeline.rs`).
    pub(super) pipe: pipeline::PipePlan,
    /// In the cube program's pipelined loops: emit only the pipelined sites (`Some(true)`) or
    /// only the others (`Some(false)`).
    site_filter: Option<bool>,
    /// Ping-pong slot (C++ expression) of the pipelined sites the cube emits now.
    slot: String,
    /// Parity variable of the innermost pipelined loop (vector and peer programs).
    hop: Option<String>,
    pub file: String,
    pub(super) lv: Liveness,
    vals: Vec<Option<Val>>,
    pub out: lir::Kernel,
    stack: Vec<Vec<Stmt>>,
    pos: u32,
    pub mode: Mode,
    /// Values the cube program and the peer skeleton must compute (control flow to `dot`s).
    needed: HashSet<ValueId>,
    /// Ops (by result or, for result-less ops, pre-order position) that contain a `dot`.
    pub cube_kernel: bool,
    names: u32,
    in_q: Option<QueueId>,
    out_q: Option<QueueId>,
    /// Index of the next `dot` site met by the walk.
    dot_site: usize,
    pub loc: Option<Loc>,
    /// Loads the cube reads straight from GM (see `Val::Gm`).
    pub(super) direct: Vec<Op>,
    /// Results already computed by an earlier op (an add fused into a cube hand-off).
    pub(super) fused: HashSet<ValueId>,
    /// Position tiles filled once at the start of the program (`vector.rs`, `iota`).
    pub(super) iotas: Vec<(IotaKey, BufId)>,
    pub(super) prologue: Vec<Stmt>,
}

impl<'k> Lower<'k> {
    pub fn new(k: &'k Kernel, orig: &'k Kernel, file: &str, cube_kernel: bool) -> Lower<'k> {
        Lower {
            k,
            orig,
            row_aranges: HashSet::new(),
            split_rows: None,
            site_direct: vec![],
            pipe: pipeline::PipePlan::default(),
            site_filter: None,
            slot: "0".into(),
            hop: None,
            file: file.to_string(),
            lv: Liveness::compute(k),
            vals: vec![None; k.values.len()],
            out: lir::Kernel::default(),
            stack: vec![vec![]],
            pos: 0,
            mode: Mode::Vector,
            needed: if cube_kernel { needed_for_control(orig) } else { HashSet::new() },
            cube_kernel,
            names: 0,
            in_q: None,
            out_q: None,
            dot_site: 0,
            loc: None,
            direct: vec![],
            fused: HashSet::new(),
            iotas: vec![],
            prologue: vec![],
        }
    }

    /// Lower the body in `mode`, returning its statements (buffers and queues accumulate in `out`).
    pub fn run(&mut self, mode: Mode) -> Result<Vec<Stmt>> {
        self.mode = mode;
        self.vals = vec![None; self.k.values.len()];
        self.stack = vec![vec![]];
        self.pos = 0;
        self.dot_site = 0;
        self.site_direct.clear();
        self.direct.clear();
        self.fused.clear();
        self.iotas.clear();
        self.prologue.clear();
        let body = self.k.body.clone();
        self.block(&body)?;
        let mut stmts = self.stack.pop().unwrap_or_default();
        if !self.prologue.is_empty() {
            // The precomputed tiles, bracketed like every scalar fill.
            let bar = |l: &Lower| {
                Stmt::Instr(Instr {
                    text: "PipeBarrier<PIPE_ALL>();".into(),
                    pipe: Pipe::S,
                    reads: vec![],
                    writes: vec![],
                    effect: Effect::Barrier(None),
                    loc: l.loc,
                })
            };
            let mut pre = vec![bar(self)];
            pre.append(&mut self.prologue);
            if mode == Mode::Vector {
                // The tiles live at fixed offsets for the whole kernel: fill them once.
                pre.push(Stmt::Line("prologueDone_ = true;".into()));
                pre.push(bar(self));
                pre = vec![Stmt::If { cond: "!prologueDone_".into(), then_: pre, else_: vec![] }];
                self.out.once_prologue = true;
            } else {
                pre.push(bar(self));
            }
            pre.append(&mut stmts);
            stmts = pre;
        }
        Ok(stmts)
    }

    // ---- errors and naming ------------------------------------------------------------------

    pub fn where_(&self) -> String {
        match self.loc {
            Some(l) => format!("{} line {}:{}", self.file, l.line, l.col),
            None => self.file.clone(),
        }
    }

    pub fn unsupported(&self, op: &Op, why: &str) -> CodegenError {
        CodegenError::Unsupported {
            kernel: self.k.name.clone(),
            target: "ascendc".into(),
            reason: format!("`{}` at {}: {why}", op.kind.mnemonic(), self.where_()),
        }
    }

    pub fn fresh(&mut self, prefix: &str) -> String {
        self.names += 1;
        format!("{prefix}{}", self.names)
    }

    // ---- statements -------------------------------------------------------------------------

    pub fn line(&mut self, s: impl Into<String>) {
        self.stack.last_mut().expect("statement stack").push(Stmt::Line(s.into()));
    }

    pub fn comment(&mut self, s: impl Into<String>) {
        self.stack.last_mut().expect("statement stack").push(Stmt::Comment(s.into()));
    }

    pub fn instr(&mut self, pipe: Pipe, text: impl Into<String>, reads: Vec<Res>, writes: Vec<Res>, effect: Effect) {
        let i = Instr { text: text.into(), pipe, reads, writes, effect, loc: self.loc };
        self.stack.last_mut().expect("statement stack").push(Stmt::Instr(i));
    }

    /// A vector instruction reading and writing calc buffers.
    pub fn vec(&mut self, text: impl Into<String>, reads: &[BufId], writes: &[BufId]) {
        let r = reads.iter().map(|b| Res::Buf(*b)).collect();
        let w = writes.iter().map(|b| Res::Buf(*b)).collect();
        self.instr(Pipe::V, text, r, w, Effect::None);
    }

    pub fn sync(&mut self, from: Pipe, to: Pipe) {
        let ev = format!("HardEvent::{}_{}", from.event_name(), to.event_name());
        self.instr(from, format!("SetFlag<{ev}>(EVENT_ID0);"), vec![], vec![], Effect::SetFlag(from, to, 0));
        self.instr(to, format!("WaitFlag<{ev}>(EVENT_ID0);"), vec![], vec![], Effect::WaitFlag(from, to, 0));
    }

    pub fn barrier_all(&mut self) {
        self.instr(Pipe::S, "PipeBarrier<PIPE_ALL>();", vec![], vec![], Effect::Barrier(None));
    }

    pub(super) fn push(&mut self) {
        self.stack.push(vec![]);
    }

    pub(super) fn pop(&mut self) -> Vec<Stmt> {
        self.stack.pop().unwrap_or_default()
    }

    // ---- buffers ----------------------------------------------------------------------------

    /// A calc-arena tile of dtype `d` and `shape`, live from now until `until`.
    pub fn alloc(&mut self, d: DType, shape: &[usize], until: u32, what: String) -> BufId {
        let (_, elems) = layout(d, shape);
        self.alloc_elems(d, elems, until, what)
    }

    pub fn alloc_elems(&mut self, d: DType, elems: u64, until: u32, what: String) -> BufId {
        // Capacity in whole 256-byte vector repeats: `Compare` works on whole repeats.
        let bytes = lir::round_up(elems * elem_bytes(d), 256);
        let id = self.out.bufs.len();
        self.out.bufs.push(Buf {
            name: format!("b{id}"),
            elem: ctype(d),
            elems: bytes / elem_bytes(d),
            bytes,
            live: (self.pos, until.max(self.pos)),
            what,
            loc: self.loc,
            off: None,
        });
        id
    }

    /// A temporary live only during the current op.
    pub fn temp(&mut self, d: DType, shape: &[usize], what: &str) -> BufId {
        self.alloc(d, shape, self.pos, what.to_string())
    }

    pub fn bname(&self, b: BufId) -> String {
        self.out.bufs[b].name.clone()
    }

    /// The shared `VECIN` / `VECOUT` queue, grown to hold `bytes`.
    pub fn queue(&mut self, pos: Pos, bytes: u64) -> QueueId {
        let slot = if pos == Pos::VecIn { self.in_q } else { self.out_q };
        let q = match slot {
            Some(q) => q,
            None => {
                let q = self.out.queues.len();
                let name = if pos == Pos::VecIn { "inQueue" } else { "outQueue" };
                self.out.queues.push(Queue { name: name.into(), pos, depth: 2, num: 2, bytes: 0, core: Core::Aiv, what: String::new(), loc: None });
                if pos == Pos::VecIn {
                    self.in_q = Some(q)
                } else {
                    self.out_q = Some(q)
                }
                q
            }
        };
        let b = lir::round_up(bytes, 32);
        if b > self.out.queues[q].bytes {
            self.out.queues[q].bytes = b;
            self.out.queues[q].what = format!("largest tile at {}", self.where_());
            self.out.queues[q].loc = self.loc;
        }
        q
    }

    // ---- values -----------------------------------------------------------------------------

    pub fn val(&self, v: ValueId) -> Val {
        self.vals[v.0 as usize].clone().unwrap_or_else(|| Val::Scalar(format!("/*undefined %{}*/0", v.0)))
    }

    pub fn set(&mut self, v: ValueId, x: Val) {
        self.vals[v.0 as usize] = Some(x);
    }

    pub fn dtype(&self, v: ValueId) -> DType {
        self.k.ty(v).dtype
    }

    pub fn shape(&self, v: ValueId) -> Vec<usize> {
        self.k.ty(v).shape.clone()
    }

    pub fn last_use(&self, v: ValueId) -> u32 {
        self.lv.last(v)
    }

    pub fn pos(&self) -> u32 {
        self.pos
    }

    /// The scalar expression of a rank-0 value (or a splat tile).
    pub fn scalar(&self, v: ValueId) -> Option<String> {
        match self.vals[v.0 as usize].clone()? {
            Val::Scalar(s) | Val::Splat(s) => Some(s),
            Val::Affine { base, coefs } if coefs.iter().all(|c| *c == 0) => Some(base),
            _ => None,
        }
    }

    /// Define a rank-0 value as a C++ `const` local.
    pub fn def_scalar(&mut self, v: ValueId, expr: String) {
        let name = format!("s{}", v.0);
        let ty = scalar_ctype(self.dtype(v));
        self.line(format!("const {ty} {name} = {expr};"));
        self.set(v, Val::Scalar(name));
    }

    // ---- the walk ---------------------------------------------------------------------------

    fn block(&mut self, b: &Block) -> Result<()> {
        for op in &b.ops {
            self.op(op)?;
        }
        Ok(())
    }

    fn op(&mut self, op: &Op) -> Result<()> {
        self.loc = op.loc;
        let here = self.pos;
        self.pos += 1;
        let r = self.op_at(op);
        // Ops with regions advanced `pos` past their nested ops already.
        let _ = here;
        r
    }

    fn op_at(&mut self, op: &Op) -> Result<()> {
        if self.mode != Mode::Vector {
            return self.skeleton_op(op);
        }
        if op.results.first().is_some_and(|r| self.fused.contains(r)) {
            return Ok(());
        }
        let scalar_result = op.results.first().map(|r| self.k.ty(*r).is_scalar()).unwrap_or(false);
        match &op.kind {
            OpKind::For => self.lower_for(op),
            OpKind::If => self.lower_if(op),
            OpKind::Yield => Ok(()),
            OpKind::Load { tensor, has_mask, has_other } => self.lower_load(op, *tensor, *has_mask, *has_other),
            OpKind::Store { tensor, has_mask } => self.lower_store(op, *tensor, *has_mask, false),
            OpKind::AtomicAdd { tensor, has_mask } => self.lower_store(op, *tensor, *has_mask, true),
            OpKind::Dot => self.lower_dot(op),
            OpKind::Reduce { op: rop, axis } => self.lower_reduce(op, *rop, *axis as usize),
            OpKind::Scan { .. } => self.scalar_scan(op),
            _ if scalar_result => self.scalar_op(op),
            _ => self.tile_op(op),
        }
    }

    /// A rank-0 op on the scalar unit.
    fn scalar_op(&mut self, op: &Op) -> Result<()> {
        let r = op.results[0];
        let d = self.dtype(r);
        let expr = match &op.kind {
            OpKind::Const(c) => scalar::literal(*c, d),
            OpKind::ProgramId(a) => format!("pid{a}"),
            OpKind::NumPrograms(a) => format!("tiling_.grid{a}"),
            OpKind::Dim(s) => self.dim_expr(*s),
            OpKind::ScalarParam(i) => self.param_expr(*i),
            _ => {
                let args: Vec<String> =
                    op.args.iter().map(|a| self.scalar(*a).ok_or_else(|| self.unsupported(op, "a tile operand of a scalar op"))).collect::<Result<_>>()?;
                let from = op.args.first().map(|a| self.dtype(*a)).unwrap_or(d);
                match scalar::expr(&op.kind, from, d, &args) {
                    Some(e) => e,
                    None => self.scalar_via_vector(op, from, d, &args)?,
                }
            }
        };
        self.def_scalar(r, expr);
        Ok(())
    }

    pub fn dim_expr(&self, s: opc_ir::SymId) -> String {
        let d = &self.k.dims[s.0 as usize];
        match d.value {
            Some(v) if d.konst => v.to_string(),
            _ => format!("tiling_.{}", d.name),
        }
    }

    pub fn param_expr(&self, i: usize) -> String {
        let p = &self.k.params[i];
        match &p.kind {
            ParamKind::Scalar { dtype: DType::Bool } => format!("(tiling_.{} != 0)", p.name),
            _ => format!("tiling_.{}", p.name),
        }
    }

    // ---- control flow -----------------------------------------------------------------------

    fn lower_for(&mut self, op: &Op) -> Result<()> {
        let start = self.pos - 1;
        let end = start + count_ops(op);
        let body = &op.regions[0];
        let (lo, hi, step) = (self.scalar_or(op, op.args[0])?, self.scalar_or(op, op.args[1])?, self.scalar_or(op, op.args[2])?);
        let iv = body.args[0];
        // Carried values: scalars become mutable locals, tiles one buffer each.
        let mut carried: Vec<(ValueId, ValueId, ValueId, Option<BufId>, String)> = vec![];
        for (i, (&init, (&arg, &res))) in op.args[3..].iter().zip(body.args[1..].iter().zip(&op.results)).enumerate() {
            let ty = self.k.ty(arg).clone();
            if ty.is_scalar() {
                let name = format!("c{}", arg.0);
                let e = self.scalar_or(op, init)?;
                self.line(format!("{} {name} = {e};", scalar_ctype(ty.dtype)));
                self.set(arg, Val::Scalar(name.clone()));
                carried.push((init, arg, res, None, name));
            } else {
                let until = self.last_use(res).max(self.last_use(arg)).max(end);
                let buf = self.alloc(ty.dtype, &ty.shape, until, format!("loop-carried %{} {}", arg.0, ty));
                self.comment(format!("loop-carried %{} {} in {}", arg.0, ty, self.bname(buf)));
                self.write_into(op, init, buf)?;
                self.set(arg, Val::Tile(buf));
                carried.push((init, arg, res, Some(buf), String::new()));
                let _ = i;
            }
        }
        let ivn = format!("s{}", iv.0);
        let saved_hop = self.hop.clone();
        self.pipelined_loop_head(op);
        self.push();
        self.line(format!("const int32_t {ivn} = static_cast<int32_t>(i{});", iv.0));
        self.set(iv, Val::Scalar(ivn));
        self.block(body)?;
        // The yield: next carried values (through temporaries: a yield may swap them).
        let y = body.ops.last().filter(|o| matches!(o.kind, OpKind::Yield));
        if let Some(y) = y {
            self.loc = y.loc;
            let mut assigns = vec![];
            for ((_, arg, _, buf, name), &yv) in carried.iter().zip(&y.args) {
                match buf {
                    None => {
                        let e = self.scalar_or(op, yv)?;
                        let t = format!("n{}", arg.0);
                        self.line(format!("const {} {t} = {e};", scalar_ctype(self.dtype(*arg))));
                        assigns.push(format!("{name} = {t};"));
                    }
                    Some(b) => {
                        if matches!(self.val(yv), Val::Tile(x) if x == *b) {
                            continue;
                        }
                        let reads_carried = carried.iter().any(|(_, a, _, cb, _)| cb.is_some() && a != arg && self.reads_buf(yv, cb.unwrap()));
                        if reads_carried {
                            let tmp = self.materialize(op, yv)?;
                            self.copy_tile(*b, tmp, self.dtype(*arg), &self.shape(*arg));
                        } else {
                            self.write_into(op, yv, *b)?;
                        }
                    }
                }
            }
            for a in assigns {
                self.line(a);
            }
        }
        if self.hop != saved_hop {
            let h = self.hop.clone().unwrap_or_default();
            self.line(format!("{h} ^= 1;"));
        }
        self.hop = saved_hop;
        let body_stmts = self.pop();
        let head = format!("int64_t i{iv} = {lo}; {step} > 0 && i{iv} < static_cast<int64_t>({hi}); i{iv} += {step}", iv = iv.0);
        self.stack.last_mut().expect("stack").push(Stmt::Loop { head, body: body_stmts });
        for (_, arg, res, _, _) in carried {
            let v = self.val(arg);
            self.set(res, v);
        }
        Ok(())
    }

    fn lower_if(&mut self, op: &Op) -> Result<()> {
        let start = self.pos - 1;
        let _end = start + count_ops(op);
        let cond = self.scalar_or(op, op.args[0])?;
        let mut outs: Vec<(ValueId, Option<BufId>, String)> = vec![];
        for &r in &op.results {
            let ty = self.k.ty(r).clone();
            if ty.is_scalar() {
                let name = format!("r{}", r.0);
                self.line(format!("{} {name}{{}};", scalar_ctype(ty.dtype)));
                outs.push((r, None, name));
            } else {
                let buf = self.alloc(ty.dtype, &ty.shape, self.last_use(r), format!("if result %{} {}", r.0, ty));
                outs.push((r, Some(buf), String::new()));
            }
        }
        let mut arms = vec![];
        for region in &op.regions {
            self.push();
            self.block(region)?;
            if let Some(y) = region.ops.last().filter(|o| matches!(o.kind, OpKind::Yield)) {
                self.loc = y.loc;
                for ((_, buf, name), &yv) in outs.iter().zip(&y.args) {
                    match buf {
                        None => {
                            let e = self.scalar_or(op, yv)?;
                            self.line(format!("{name} = {e};"));
                        }
                        Some(b) => self.write_into(op, yv, *b)?,
                    }
                }
            }
            arms.push(self.pop());
        }
        let else_ = arms.pop().unwrap_or_default();
        let then_ = arms.pop().unwrap_or_default();
        self.stack.last_mut().expect("stack").push(Stmt::If { cond, then_, else_ });
        for (r, buf, name) in outs {
            self.set(
                r,
                match buf {
                    Some(b) => Val::Tile(b),
                    None => Val::Scalar(name),
                },
            );
        }
        Ok(())
    }

    pub fn scalar_or(&self, op: &Op, v: ValueId) -> Result<String> {
        self.scalar(v).ok_or_else(|| self.unsupported(op, "expected a scalar operand"))
    }

    /// Whether value `v` (a tile) reads buffer `b`.
    fn reads_buf(&self, v: ValueId, b: BufId) -> bool {
        matches!(self.val(v), Val::Tile(x) | Val::View { buf: x, .. } if x == b)
    }

    // ---- the cube program and the peer skeleton ---------------------------------------------

    /// In `Cube` / `Peer` mode: keep the scalar ops the control flow to `dot`s needs, the
    /// `for`/`if` ops that contain `dot`s, and the `dot`s (cube work or flag hand-off).
    fn skeleton_op(&mut self, op: &Op) -> Result<()> {
        match &op.kind {
            OpKind::Dot => self.skeleton_dot(op),
            OpKind::For if contains_dot(op) || op.results.iter().any(|r| self.needed.contains(r)) => self.skeleton_for(op),
            OpKind::If if contains_dot(op) || op.results.iter().any(|r| self.needed.contains(r)) => self.skeleton_if(op),
            OpKind::For | OpKind::If => {
                self.pos += count_ops(op);
                Ok(())
            }
            _ => {
                let Some(&r) = op.results.first() else { return Ok(()) };
                if !self.needed.contains(&r) {
                    return Ok(());
                }
                if !self.k.ty(r).is_scalar() {
                    // Index tiles stay symbolic (`Splat` / `Affine`); cube operands loaded from
                    // GM are copied at their dot; other tiles the control flow needs are
                    // evaluated element by element where a scalar reduces them
                    // (`skeleton_reduce`): the AIC has no UB.
                    if let OpKind::Load { tensor, .. } = op.kind {
                        if let Some(i) = self.direct_load(op, tensor) {
                            self.set(r, Val::Gm(i));
                        }
                        return Ok(());
                    }
                    return self.symbolic_tile_op(op);
                }
                match &op.kind {
                    OpKind::Load { tensor, has_mask, has_other } => self.scalar_load(op, *tensor, *has_mask, *has_other),
                    OpKind::Reduce { op: rop, .. } => self.skeleton_reduce(op, *rop),
                    OpKind::Dot => Err(self.unsupported(op, "the control flow of the cube program depends on a matrix product")),
                    _ => self.scalar_op(op),
                }
            }
        }
    }

    fn skeleton_for(&mut self, op: &Op) -> Result<()> {
        let body = &op.regions[0];
        let (lo, hi, step) = (self.scalar_or(op, op.args[0])?, self.scalar_or(op, op.args[1])?, self.scalar_or(op, op.args[2])?);
        let iv = body.args[0];
        let mut carried = vec![];
        for (&init, (&arg, &res)) in op.args[3..].iter().zip(body.args[1..].iter().zip(&op.results)) {
            if self.k.ty(arg).is_scalar() && (self.needed.contains(&arg) || self.needed.contains(&res)) {
                let name = format!("c{}", arg.0);
                let e = self.scalar_or(op, init)?;
                self.line(format!("{} {name} = {e};", scalar_ctype(self.dtype(arg))));
                self.set(arg, Val::Scalar(name.clone()));
                carried.push((arg, res, name, true));
            } else {
                carried.push((arg, res, String::new(), false));
            }
        }
        if self.mode == Mode::Cube && carried.iter().all(|c| !c.3) {
            if let Some(plan) = self.pipe.loops.get(&(op.loc, self.dot_site)).cloned() {
                return self.cube_pipelined_for(op, &plan, (&lo, &hi, &step));
            }
        }
        let saved_hop = self.hop.clone();
        if self.mode == Mode::Peer {
            self.pipelined_loop_head(op);
        }
        self.push();
        let ivn = format!("s{}", iv.0);
        self.line(format!("const int32_t {ivn} = static_cast<int32_t>(i{});", iv.0));
        self.set(iv, Val::Scalar(ivn));
        self.block(body)?;
        if self.hop != saved_hop {
            let h = self.hop.clone().unwrap_or_default();
            self.line(format!("{h} ^= 1;"));
        }
        self.hop = saved_hop;
        if let Some(y) = body.ops.last().filter(|o| matches!(o.kind, OpKind::Yield)) {
            let mut assigns = vec![];
            for ((arg, _, name, keep), &yv) in carried.iter().zip(&y.args) {
                if *keep {
                    let e = self.scalar_or(op, yv)?;
                    self.line(format!("const {} n{} = {e};", scalar_ctype(self.dtype(*arg)), arg.0));
                    assigns.push(format!("{name} = n{};", arg.0));
                }
            }
            for a in assigns {
                self.line(a);
            }
        }
        let stmts = self.pop();
        let head = format!("int64_t i{iv} = {lo}; {step} > 0 && i{iv} < static_cast<int64_t>({hi}); i{iv} += {step}", iv = iv.0);
        self.stack.last_mut().expect("stack").push(Stmt::Loop { head, body: stmts });
        for (arg, res, _, keep) in carried {
            if keep {
                let v = self.val(arg);
                self.set(res, v);
            }
        }
        Ok(())
    }

    fn skeleton_if(&mut self, op: &Op) -> Result<()> {
        let cond = self.scalar_or(op, op.args[0])?;
        let mut outs = vec![];
        for &r in &op.results {
            if self.k.ty(r).is_scalar() && self.needed.contains(&r) {
                let name = format!("r{}", r.0);
                self.line(format!("{} {name}{{}};", scalar_ctype(self.dtype(r))));
                outs.push((r, Some(name)));
            } else {
                outs.push((r, None));
            }
        }
        let mut arms = vec![];
        for region in &op.regions {
            self.push();
            self.block(region)?;
            if let Some(y) = region.ops.last().filter(|o| matches!(o.kind, OpKind::Yield)) {
                for ((_, name), &yv) in outs.iter().zip(&y.args) {
                    if let Some(name) = name {
                        let e = self.scalar_or(op, yv)?;
                        self.line(format!("{name} = {e};"));
                    }
                }
            }
            arms.push(self.pop());
        }
        let else_ = arms.pop().unwrap_or_default();
        let then_ = arms.pop().unwrap_or_default();
        self.stack.last_mut().expect("stack").push(Stmt::If { cond, then_, else_ });
        for (r, name) in outs {
            if let Some(n) = name {
                self.set(r, Val::Scalar(n));
            }
        }
        Ok(())
    }
}

impl Lower<'_> {
    /// A scalar reduction of a tile in the cube program / peer skeleton: a loop over the
    /// tile's elements, each computed from its defining ops (no UB on the AIC).
    fn skeleton_reduce(&mut self, op: &Op, rop: opc_ir::ReduceOp) -> Result<()> {
        use opc_ir::ReduceOp as R;
        let r = op.results[0];
        let x = op.args[0];
        let (xd, xs) = (self.dtype(x), self.shape(x));
        let idx: Vec<String> = (0..xs.len()).map(|i| format!("k{}_{i}", r.0)).collect();
        let e = self.skel_elem(op, x, &idx)?;
        let st = scalar_ctype(xd);
        let (init, step) = match rop {
            R::Sum if xd.is_float() => ("0.0f".to_string(), "acc = acc + v;".to_string()),
            R::Sum => ("0".into(), "acc = OpcWrap(static_cast<int64_t>(acc) + v, 32, true);".into()),
            R::Max if xd.is_float() => ("(-kOpcInf)".into(), "acc = OpcMax(acc, v);".into()),
            R::Min if xd.is_float() => ("kOpcInf".into(), "acc = OpcMin(acc, v);".into()),
            R::Max => (format!("{}", xd.int_range().map(|r| r.0).unwrap_or(0)), "acc = v > acc ? v : acc;".into()),
            R::Min => (format!("{}", xd.int_range().map(|r| r.1).unwrap_or(0)), "acc = v < acc ? v : acc;".into()),
            _ => return Err(self.unsupported(op, "an arg-reduction in the control flow of the cube program")),
        };
        let name = format!("s{}", r.0);
        self.line(format!("{st} {name} = {init};"));
        self.line("{".to_string());
        self.line(format!("    {st} acc = {init};"));
        let body = format!("const {st} v = {e};\n{step}");
        for l in Self::loop_nest(&xs, &body, &idx).lines() {
            self.line(format!("    {l}"));
        }
        self.line(format!("    {name} = acc;"));
        self.line("}".to_string());
        self.set(r, Val::Scalar(name));
        Ok(())
    }

    /// Element `idx` of tile `v` as a scalar expression over its defining ops (constants,
    /// `arange`, shape views, elementwise ops, scalars already defined).
    fn skel_elem(&self, at: &Op, v: ValueId, idx: &[String]) -> Result<String> {
        if let Some(s) = self.scalar(v) {
            if !s.is_empty() {
                return Ok(s);
            }
        }
        let Some(d) = self.def_op(v) else { return Err(self.unsupported(at, "the control flow of the cube program depends on a loop-carried tile")) };
        let src = |i: usize| d.args[i];
        Ok(match &d.kind {
            OpKind::Const(c) => scalar::literal(*c, self.dtype(v)),
            OpKind::Arange => format!("({})", idx[0]),
            OpKind::ExpandDims(a) => {
                let mut j = idx.to_vec();
                j.remove(*a as usize);
                self.skel_elem(at, src(0), &j)?
            }
            OpKind::Broadcast => {
                let xs = self.shape(src(0));
                let rs = self.shape(v);
                let j: Vec<String> = idx.iter().enumerate().map(|(i, n)| if xs[i] == rs[i] { n.clone() } else { "0".into() }).collect();
                self.skel_elem(at, src(0), &j)?
            }
            OpKind::Permute(p) => {
                let mut j = vec![String::new(); p.len()];
                for (i, &s) in p.iter().enumerate() {
                    j[s as usize] = idx[i].clone();
                }
                self.skel_elem(at, src(0), &j)?
            }
            OpKind::Reshape => {
                let xs = self.shape(src(0));
                let rs = self.shape(v);
                let from: Vec<usize> = (0..rs.len()).filter(|&i| rs[i] != 1).collect();
                let to: Vec<usize> = (0..xs.len()).filter(|&i| xs[i] != 1).collect();
                if from.len() != to.len() {
                    return Err(self.unsupported(at, "a general reshape in the control flow of the cube program"));
                }
                let mut j = vec!["0".to_string(); xs.len()];
                for (a, b) in from.iter().zip(&to) {
                    j[*b] = idx[*a].clone();
                }
                self.skel_elem(at, src(0), &j)?
            }
            OpKind::Unary(_) | OpKind::Binary(_) | OpKind::Cmp(_) | OpKind::Select | OpKind::Cast(_) | OpKind::Bitcast => {
                let a: Vec<String> = d.args.iter().map(|x| self.skel_elem(at, *x, idx)).collect::<Result<_>>()?;
                let from = self.dtype(d.args[0]);
                scalar::expr(&d.kind, from, self.dtype(v), &a)
                    .ok_or_else(|| self.unsupported(at, "a transcendental function in the control flow of the cube program"))?
            }
            _ => return Err(self.unsupported(at, "the control flow of the cube program depends on a vector result")),
        })
    }
}

/// Number of ops nested in `op`'s regions.
pub(super) fn count_ops(op: &Op) -> u32 {
    op.regions.iter().map(|r| r.ops.iter().map(|o| 1 + count_ops(o)).sum::<u32>()).sum()
}

pub(super) fn contains_dot(op: &Op) -> bool {
    let mut found = matches!(op.kind, OpKind::Dot);
    for r in &op.regions {
        opc_ir::walk_ops(r, &mut |o| found |= matches!(o.kind, OpKind::Dot));
    }
    found
}

/// Values the cube program needs: the scalars that decide how many `dot`s run (bounds of the
/// loops and conditions of the `if`s that contain one), transitively through their operands,
/// `if` yields and loop-carried values.
fn needed_for_control(k: &Kernel) -> HashSet<ValueId> {
    let mut needed: HashSet<ValueId> = HashSet::new();
    // Seeds.
    opc_ir::walk_ops(&k.body, &mut |op| match op.kind {
        OpKind::For if contains_dot(op) => needed.extend(op.args[..3].iter().copied()),
        OpKind::If if contains_dot(op) => needed.push_all(&op.args[..1]),
        OpKind::Load { has_mask: false, .. } if feeds_cube_only(k, op.results[0]) => {
            let rank = op.args.len() - matches!(op.kind, OpKind::Load { has_other: true, .. }) as usize;
            needed.extend(op.args[..rank].iter().copied());
            needed.insert(op.results[0]);
        }
        _ => {}
    });
    // Fixpoint: operands of needed defs, yields of needed `if`/`for` results.
    loop {
        let before = needed.len();
        opc_ir::walk_ops(&k.body, &mut |op| {
            let res_needed: Vec<usize> = op.results.iter().enumerate().filter(|(_, r)| needed.contains(r)).map(|(i, _)| i).collect();
            match op.kind {
                OpKind::For => {
                    let body = &op.regions[0];
                    for i in 0..op.results.len() {
                        let arg = body.args[i + 1];
                        if res_needed.contains(&i) || needed.contains(&arg) {
                            needed.insert(op.results[i]);
                            needed.insert(arg);
                            needed.insert(op.args[3 + i]);
                            if let Some(y) = body.ops.last() {
                                if let Some(v) = y.args.get(i) {
                                    needed.insert(*v);
                                }
                            }
                            needed.extend(op.args[..3].iter().copied());
                        }
                    }
                }
                OpKind::If => {
                    if !res_needed.is_empty() {
                        needed.insert(op.args[0]);
                        for region in &op.regions {
                            if let Some(y) = region.ops.last() {
                                for &i in &res_needed {
                                    if let Some(v) = y.args.get(i) {
                                        needed.insert(*v);
                                    }
                                }
                            }
                        }
                    }
                }
                _ => {
                    if !res_needed.is_empty() {
                        needed.extend(op.args.iter().copied());
                    }
                }
            }
        });
        if needed.len() == before {
            break;
        }
    }
    needed
}

trait PushAll {
    fn push_all(&mut self, v: &[ValueId]);
}

impl PushAll for HashSet<ValueId> {
    fn push_all(&mut self, v: &[ValueId]) {
        self.extend(v.iter().copied());
    }
}

/// Whether every use of `v` is an operand of a cube `dot` (A directly, B directly or through
/// `trans`).
pub(super) fn feeds_cube_only(k: &Kernel, v: ValueId) -> bool {
    let mut uses = 0;
    let mut ok = true;
    let mut check_b_of = vec![];
    opc_ir::walk_ops(&k.body, &mut |o| {
        for (i, a) in o.args.iter().enumerate() {
            if *a != v {
                continue;
            }
            uses += 1;
            match &o.kind {
                OpKind::Dot if i < 2 && cube::cube_eligible(k, o) => {}
                OpKind::Permute(p) if p == &[1, 0] => check_b_of.push(o.results[0]),
                _ => ok = false,
            }
        }
    });
    for t in check_b_of {
        opc_ir::walk_ops(&k.body, &mut |o| {
            for (i, a) in o.args.iter().enumerate() {
                if *a == t && !(matches!(o.kind, OpKind::Dot) && i == 1 && cube::cube_eligible(k, o)) {
                    ok = false;
                }
            }
        });
    }
    ok && uses > 0
}
