//! The tile IR: a kernel is a grid of programs; each program runs one SSA block of tile ops.
//!
//! Structure (MLIR-like, deliberately small):
//! - [`Kernel`] holds the signature (tensor and scalar parameters with symbolic dims), the
//!   tunables with their search spaces and chosen values, the `grid` block (scalar ops that
//!   compute the level-1 grid size from the dims, ending in `yield`) and the `body` block (one
//!   program's work).
//! - [`Op`] is uniform: a kind with its attributes, operand values, result values, nested
//!   regions (only `for` and `if` have them) and a source location.
//! - Values are numbered densely ([`ValueId`]); `Kernel::values` holds each value's type.
//!
//! Operand conventions (what `args` means for each [`OpKind`]) are documented on the variants;
//! the verifier enforces them.

use crate::types::{DType, Rounding, TileType};

/// An SSA value, defined exactly once (by an op result or a block argument).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

/// A symbolic dimension of the kernel's tensor parameters (`B`, `SQ`, `D`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SymId(pub u32);

/// Source location of an op in the DSL file (1-based line and column), for backend errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Loc {
    pub line: u32,
    pub col: u32,
}

/// A literal scalar (attribute of `const` and `full`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    Int(i64),
    Float(f64),
    Bool(bool),
}

/// Dimension expression in a tensor parameter's shape: `K`, `64`, `K / 32`, `2 * I`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DimExpr {
    Sym(SymId),
    Const(i64),
    Add(Box<DimExpr>, Box<DimExpr>),
    Sub(Box<DimExpr>, Box<DimExpr>),
    Mul(Box<DimExpr>, Box<DimExpr>),
    /// Exact division: the launcher rejects a shape where it does not divide.
    Div(Box<DimExpr>, Box<DimExpr>),
}

impl DimExpr {
    /// Evaluate with every symbol bound; `None` if a symbol is unbound, a division is inexact or by
    /// zero, or the arithmetic overflows.
    pub fn eval(&self, sym: &dyn Fn(SymId) -> Option<i64>) -> Option<i64> {
        Some(match self {
            DimExpr::Sym(s) => sym(*s)?,
            DimExpr::Const(c) => *c,
            DimExpr::Add(a, b) => a.eval(sym)?.checked_add(b.eval(sym)?)?,
            DimExpr::Sub(a, b) => a.eval(sym)?.checked_sub(b.eval(sym)?)?,
            DimExpr::Mul(a, b) => a.eval(sym)?.checked_mul(b.eval(sym)?)?,
            DimExpr::Div(a, b) => {
                let (a, b) = (a.eval(sym)?, b.eval(sym)?);
                if b == 0 || a.checked_rem(b)? != 0 {
                    return None;
                }
                a.checked_div(b)?
            }
        })
    }
}

/// A symbolic dimension. `konst` dims are specialized: their value is fixed when the kernel
/// is instantiated (`value` is then `Some`) and tiles may use them as static sizes.
#[derive(Clone, Debug, PartialEq)]
pub struct DimSym {
    pub name: String,
    pub konst: bool,
    pub value: Option<i64>,
}

/// Launch-time constraint on dims, checked by the launcher with a precise message.
#[derive(Clone, Debug, PartialEq)]
pub enum Constraint {
    /// `D in {64, 128}`
    OneOf(DimExpr, Vec<i64>),
    /// `HQ % HKV == 0`
    MultipleOf(DimExpr, DimExpr),
    /// `N >= 1`, `N <= 4096`
    Range(DimExpr, Option<i64>, Option<i64>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum ParamKind {
    /// A global tensor, row-major contiguous. `output` tensors may be stored to.
    Tensor { dtype: DType, dims: Vec<DimExpr>, output: bool },
    /// A scalar passed by value (f32, i32 or bool).
    Scalar { dtype: DType },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: String,
    pub kind: ParamKind,
}

/// A named schedule knob with its declared search space; the chosen value is already
/// substituted into tile shapes and constants of the kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct Tunable {
    pub name: String,
    /// 1: grid tiles (cores / CTAs / threads); 2: inner tiles (MMA / cube fragments, vector blocks, UB sub-blocks).
    pub level: u8,
    pub space: Vec<i64>,
    pub value: i64,
    /// Where the DSL declares it (`tunables { NAME: ... }`), for errors about the tiles it sizes.
    pub loc: Option<Loc>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    /// Block arguments (for `for`: the induction variable, then the carried values).
    pub args: Vec<ValueId>,
    pub ops: Vec<Op>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Op {
    pub kind: OpKind,
    pub args: Vec<ValueId>,
    pub results: Vec<ValueId>,
    pub regions: Vec<Block>,
    pub loc: Option<Loc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    Not,
    Abs,
    Exp,
    Exp2,
    Log,
    Log2,
    Sqrt,
    Rsqrt,
    Recip,
    Sigmoid,
    Silu,
    Tanh,
    Sin,
    Cos,
    Floor,
    Ceil,
    /// Round half to even, staying in the float type.
    Round,
    IsNan,
    IsInf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    /// Float division; integer division truncating toward zero (division by zero gives 0).
    Div,
    /// Integer remainder with the sign of the dividend (by zero gives 0); float fmod.
    Rem,
    Max,
    Min,
    /// Bitwise on ints, logical on bool.
    And,
    Or,
    Xor,
    Shl,
    /// Arithmetic for signed ints, logical for unsigned.
    Shr,
    Pow,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpPred {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Sum,
    Max,
    Min,
    /// Index (i32) of the first maximum; NaN is never chosen unless all are NaN.
    Argmax,
    Argmin,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScanOp {
    /// Inclusive prefix sum.
    Cumsum,
}

/// What an op does. `args` / `results` conventions are given per variant; result types live
/// in `Kernel::values`.
#[derive(Clone, Debug, PartialEq)]
pub enum OpKind {
    /// `%r = const 3 : i32` — no args; result is a scalar or a tile filled with the value.
    Const(Scalar),
    /// `%r = program_id 0 : i32` — index of this program along a grid axis.
    ProgramId(u8),
    /// `%r = num_programs 0 : i32`
    NumPrograms(u8),
    /// `%r = dim @SQ : i32` — launch-time value of a symbolic dim.
    Dim(SymId),
    /// `%r = param @scale : f32` — value of a scalar parameter (index into `Kernel::params`).
    ScalarParam(usize),
    /// `%r = arange : i32[n]` — 0, 1, ..., n-1.
    Arange,
    /// args: [x]. Same shape; `Not` on bool or ints, `IsNan`/`IsInf` give bool.
    Unary(UnaryOp),
    /// args: [lhs, rhs], same type (the front end inserts broadcasts and casts).
    Binary(BinaryOp),
    /// args: [lhs, rhs] same type; result bool of the same shape.
    Cmp(CmpPred),
    /// args: [cond (bool), on_true, on_false], all the result's shape.
    Select,
    /// args: [x]. Conversion to the result dtype with the given rounding (saturating to ints / e2m1).
    Cast(Rounding),
    /// args: [x]. Reinterpret bits between types of equal bit width (f32<->i32, u8<->i8<->e8m0, i4<->e2m1).
    Bitcast,
    /// args: [x]. Numpy-style broadcast to the result shape (same rank; size-1 dims stretch).
    Broadcast,
    /// args: [x]. Insert a size-1 dim at `axis`.
    ExpandDims(u8),
    /// args: [x]. Same elements in row-major order, new shape.
    Reshape,
    /// args: [x]. Permute dims: result dim i is input dim perm[i].
    Permute(Vec<u8>),
    /// args: [x]. Reduce along `axis` (dim removed).
    Reduce { op: ReduceOp, axis: u8 },
    /// args: [x]. Scan along `axis` (shape kept).
    Scan { op: ScanOp, axis: u8 },
    /// args: [a [M,K], b [K,N]] or [a, b, acc [M,N]]. Result [M,N] in the accumulator dtype
    /// (f32 for float inputs, i32 for int inputs); products and sums in that dtype, k ascending.
    Dot,
    /// `load @t[idx...] mask? other?` — args: [idx_0..idx_{r-1}, mask?, other?] with one i32 index
    /// tile per tensor dim; result shape is the concatenation of the index shapes. An element whose
    /// index is out of its dim's bounds, or whose mask is false, reads `other` (default 0) and never
    /// touches memory.
    Load { tensor: usize, has_mask: bool, has_other: bool },
    /// `store @t[idx...], value mask?` — args: [idx..., value, mask?]; out-of-bounds or masked-off
    /// elements are not written. No results.
    Store { tensor: usize, has_mask: bool },
    /// As `store`, but adds the value into memory (atomically across programs).
    AtomicAdd { tensor: usize, has_mask: bool },
    /// `%r... = for %iv = %lo to %hi step %step iter(%a = %init...)` — args: [lo, hi, step, inits...]
    /// (i32 scalars, step > 0); one region whose args are [iv, carried...] and which ends in `yield`
    /// of the next carried values. Results: the carried values after the last iteration.
    For,
    /// args: [cond (bool scalar)]; two regions (then, else), each ending in `yield` of the results.
    If,
    /// args: the values a region hands back. Terminates `for`, `if` and the grid block.
    Yield,
}

impl OpKind {
    /// The mnemonic used by the printer and parser.
    pub fn mnemonic(&self) -> &'static str {
        match self {
            OpKind::Const(_) => "const",
            OpKind::ProgramId(_) => "program_id",
            OpKind::NumPrograms(_) => "num_programs",
            OpKind::Dim(_) => "dim",
            OpKind::ScalarParam(_) => "param",
            OpKind::Arange => "arange",
            OpKind::Unary(u) => u.mnemonic(),
            OpKind::Binary(b) => b.mnemonic(),
            OpKind::Cmp(_) => "cmp",
            OpKind::Select => "select",
            OpKind::Cast(_) => "cast",
            OpKind::Bitcast => "bitcast",
            OpKind::Broadcast => "broadcast",
            OpKind::ExpandDims(_) => "expand_dims",
            OpKind::Reshape => "reshape",
            OpKind::Permute(_) => "permute",
            OpKind::Reduce { .. } => "reduce",
            OpKind::Scan { .. } => "scan",
            OpKind::Dot => "dot",
            OpKind::Load { .. } => "load",
            OpKind::Store { .. } => "store",
            OpKind::AtomicAdd { .. } => "atomic_add",
            OpKind::For => "for",
            OpKind::If => "if",
            OpKind::Yield => "yield",
        }
    }

    /// Cheap pure value ops: constants, launch values, elementwise arithmetic and views, with no
    /// memory access and no region. Code generators may evaluate them again where they need
    /// them (index arithmetic of a recognized loop, uniform scalars).
    pub fn is_cheap_pure(&self) -> bool {
        matches!(
            self,
            OpKind::Const(_)
                | OpKind::ProgramId(_)
                | OpKind::NumPrograms(_)
                | OpKind::Dim(_)
                | OpKind::ScalarParam(_)
                | OpKind::Arange
                | OpKind::Binary(_)
                | OpKind::Unary(_)
                | OpKind::Cmp(_)
                | OpKind::Select
                | OpKind::Cast(_)
                | OpKind::Broadcast
                | OpKind::ExpandDims(_)
                | OpKind::Reshape
                | OpKind::Permute(_)
        )
    }

    /// Ops with effects on memory or control flow that dead-code elimination must keep.
    pub fn has_side_effects(&self) -> bool {
        matches!(self, OpKind::Store { .. } | OpKind::AtomicAdd { .. } | OpKind::Yield)
    }
}

impl UnaryOp {
    pub const ALL: [UnaryOp; 20] = [
        UnaryOp::Neg,
        UnaryOp::Not,
        UnaryOp::Abs,
        UnaryOp::Exp,
        UnaryOp::Exp2,
        UnaryOp::Log,
        UnaryOp::Log2,
        UnaryOp::Sqrt,
        UnaryOp::Rsqrt,
        UnaryOp::Recip,
        UnaryOp::Sigmoid,
        UnaryOp::Silu,
        UnaryOp::Tanh,
        UnaryOp::Sin,
        UnaryOp::Cos,
        UnaryOp::Floor,
        UnaryOp::Ceil,
        UnaryOp::Round,
        UnaryOp::IsNan,
        UnaryOp::IsInf,
    ];
    pub fn mnemonic(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Not => "not",
            UnaryOp::Abs => "abs",
            UnaryOp::Exp => "exp",
            UnaryOp::Exp2 => "exp2",
            UnaryOp::Log => "log",
            UnaryOp::Log2 => "log2",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Rsqrt => "rsqrt",
            UnaryOp::Recip => "recip",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Silu => "silu",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Sin => "sin",
            UnaryOp::Cos => "cos",
            UnaryOp::Floor => "floor",
            UnaryOp::Ceil => "ceil",
            UnaryOp::Round => "round",
            UnaryOp::IsNan => "isnan",
            UnaryOp::IsInf => "isinf",
        }
    }
    pub fn from_mnemonic(s: &str) -> Option<UnaryOp> {
        UnaryOp::ALL.iter().copied().find(|u| u.mnemonic() == s)
    }
    /// Ops defined only on floats.
    pub fn float_only(self) -> bool {
        !matches!(self, UnaryOp::Neg | UnaryOp::Not | UnaryOp::Abs)
    }
}

impl BinaryOp {
    pub const ALL: [BinaryOp; 13] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Rem,
        BinaryOp::Max,
        BinaryOp::Min,
        BinaryOp::And,
        BinaryOp::Or,
        BinaryOp::Xor,
        BinaryOp::Shl,
        BinaryOp::Shr,
        BinaryOp::Pow,
    ];
    pub fn mnemonic(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Rem => "rem",
            BinaryOp::Max => "max",
            BinaryOp::Min => "min",
            BinaryOp::And => "and",
            BinaryOp::Or => "or",
            BinaryOp::Xor => "xor",
            BinaryOp::Shl => "shl",
            BinaryOp::Shr => "shr",
            BinaryOp::Pow => "pow",
        }
    }
    pub fn from_mnemonic(s: &str) -> Option<BinaryOp> {
        BinaryOp::ALL.iter().copied().find(|b| b.mnemonic() == s)
    }
    /// Bit operations: ints (and bool for and/or/xor) only.
    pub fn int_only(self) -> bool {
        matches!(self, BinaryOp::And | BinaryOp::Or | BinaryOp::Xor | BinaryOp::Shl | BinaryOp::Shr)
    }
}

impl CmpPred {
    pub const ALL: [CmpPred; 6] = [CmpPred::Eq, CmpPred::Ne, CmpPred::Lt, CmpPred::Le, CmpPred::Gt, CmpPred::Ge];
    pub fn name(self) -> &'static str {
        match self {
            CmpPred::Eq => "eq",
            CmpPred::Ne => "ne",
            CmpPred::Lt => "lt",
            CmpPred::Le => "le",
            CmpPred::Gt => "gt",
            CmpPred::Ge => "ge",
        }
    }
    pub fn from_name(s: &str) -> Option<CmpPred> {
        CmpPred::ALL.iter().copied().find(|p| p.name() == s)
    }
}

impl ReduceOp {
    pub const ALL: [ReduceOp; 5] = [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min, ReduceOp::Argmax, ReduceOp::Argmin];
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
            ReduceOp::Argmax => "argmax",
            ReduceOp::Argmin => "argmin",
        }
    }
    pub fn from_name(s: &str) -> Option<ReduceOp> {
        ReduceOp::ALL.iter().copied().find(|r| r.name() == s)
    }
}

impl ScanOp {
    pub fn name(self) -> &'static str {
        match self {
            ScanOp::Cumsum => "cumsum",
        }
    }
    pub fn from_name(s: &str) -> Option<ScanOp> {
        (s == "cumsum").then_some(ScanOp::Cumsum)
    }
}

/// One instantiated kernel: dtypes, const dims and tunables are fixed; other dims are symbolic.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    pub name: String,
    pub params: Vec<Param>,
    pub dims: Vec<DimSym>,
    pub constraints: Vec<Constraint>,
    pub tunables: Vec<Tunable>,
    /// Scalar i32 ops computing the grid size from dims; ends in `yield` of 1 to 3 extents.
    pub grid: Block,
    /// One program's work. Ends without a terminator.
    pub body: Block,
    /// Type of every value, indexed by `ValueId`.
    pub values: Vec<TileType>,
}

impl Kernel {
    /// An empty kernel to build into.
    pub fn new(name: impl Into<String>) -> Self {
        Kernel {
            name: name.into(),
            params: vec![],
            dims: vec![],
            constraints: vec![],
            tunables: vec![],
            grid: Block { args: vec![], ops: vec![] },
            body: Block { args: vec![], ops: vec![] },
            values: vec![],
        }
    }

    /// Allocate a fresh value of type `ty`.
    pub fn new_value(&mut self, ty: TileType) -> ValueId {
        self.values.push(ty);
        ValueId(self.values.len() as u32 - 1)
    }

    pub fn ty(&self, v: ValueId) -> &TileType {
        &self.values[v.0 as usize]
    }

    pub fn sym(&self, name: &str) -> Option<SymId> {
        self.dims.iter().position(|d| d.name == name).map(|i| SymId(i as u32))
    }

    pub fn param(&self, name: &str) -> Option<usize> {
        self.params.iter().position(|p| p.name == name)
    }

    pub fn tensor_dtype(&self, param: usize) -> Option<DType> {
        match &self.params.get(param)?.kind {
            ParamKind::Tensor { dtype, .. } => Some(*dtype),
            ParamKind::Scalar { .. } => None,
        }
    }

    pub fn tensor_dims(&self, param: usize) -> Option<&[DimExpr]> {
        match &self.params.get(param)?.kind {
            ParamKind::Tensor { dims, .. } => Some(dims),
            ParamKind::Scalar { .. } => None,
        }
    }

    pub fn tunable(&self, name: &str) -> Option<i64> {
        self.tunables.iter().find(|t| t.name == name).map(|t| t.value)
    }
}

/// Walk every op of a block and its nested regions, pre-order.
pub fn walk_ops<'a>(block: &'a Block, f: &mut dyn FnMut(&'a Op)) {
    for op in &block.ops {
        f(op);
        for r in &op.regions {
            walk_ops(r, f);
        }
    }
}

/// Builder helpers used by the front end and by passes.
impl Block {
    pub fn new() -> Self {
        Block { args: vec![], ops: vec![] }
    }
}

impl Default for Block {
    fn default() -> Self {
        Block::new()
    }
}

impl Op {
    pub fn new(kind: OpKind, args: Vec<ValueId>, results: Vec<ValueId>) -> Self {
        Op { kind, args, results, regions: vec![], loc: None }
    }
    pub fn result(&self) -> ValueId {
        self.results[0]
    }
}

/// Value of an accumulator dtype for `dot` on inputs of dtype `d`.
pub fn dot_acc_dtype(d: DType) -> DType {
    if d.is_int() {
        DType::I32
    } else {
        DType::F32
    }
}

/// Rounding a cast uses when none is written: RNE for anything but float→int, which must be explicit.
pub fn default_rounding(from: DType, to: DType) -> Option<Rounding> {
    if from.is_float() && (to.is_int() || to == DType::Bool) {
        None
    } else {
        Some(Rounding::Rne)
    }
}
