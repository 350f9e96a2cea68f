//! Syntax tree of a `.opc` file, with spans for diagnostics. Untyped: `lower` type-checks it.

use crate::diag::Span;

#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Module {
    pub kernels: Vec<KernelDef>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct KernelDef {
    pub name: Ident,
    /// `<T: {f16, bf16}>`: each variable with its allowed dtype names.
    pub tyvars: Vec<(Ident, Vec<Ident>)>,
    pub params: Vec<ParamDef>,
    pub constraints: Vec<ConstraintDef>,
    pub tunables: Vec<TunableDef>,
    pub grid: Vec<Expr>,
    pub grid_span: Span,
    pub body: Vec<Stmt>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ParamDef {
    pub name: Ident,
    /// Dtype name or type variable.
    pub dtype: Ident,
    /// `Some(dims)` for tensors, `None` for scalars.
    pub dims: Option<Vec<Expr>>,
    pub output: bool,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ConstraintDef {
    Const(Ident),
    In(Expr, Vec<(i64, Span)>),
    MultipleOf(Expr, Expr),
    /// `lhs >= v` (lower) or `lhs <= v` (upper).
    Bound { lhs: Expr, lower: bool, value: i64 },
}

#[derive(Clone, Debug, PartialEq)]
pub struct TunableDef {
    pub name: Ident,
    pub level: u8,
    pub space: Vec<(i64, Span)>,
    pub default: (i64, Span),
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    Let { name: Ident, value: Expr, mutable: bool },
    Assign { name: Ident, value: Expr },
    For { var: Ident, lo: Expr, hi: Expr, step: Option<Expr>, body: Vec<Stmt>, span: Span },
    If { cond: Expr, then: Vec<Stmt>, els: Option<Vec<Stmt>>, span: Span },
    Expr(Expr),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    BitAnd,
    BitOr,
    BitXor,
    Shl,
    Shr,
    And,
    Or,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::BitAnd => "&",
            BinOp::BitOr => "|",
            BinOp::BitXor => "^",
            BinOp::Shl => "<<",
            BinOp::Shr => ">>",
            BinOp::And => "&&",
            BinOp::Or => "||",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    Neg,
    Not,
}

#[derive(Clone, Debug, PartialEq)]
pub enum IndexItem {
    Expr(Expr),
    /// `:` keeps an axis of a tile.
    Full(Span),
    /// `None` inserts a size-1 axis.
    NewAxis(Span),
}

#[derive(Clone, Debug, PartialEq)]
pub struct CallArg {
    pub name: Option<Ident>,
    pub value: Expr,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Int(i64),
    Float(f64),
    Bool(bool),
    Name(String),
    Unary(UnOp, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    Call { func: Ident, args: Vec<CallArg> },
    Index { base: Box<Expr>, items: Vec<IndexItem> },
    /// `[a, b, c]`: shapes and permutations.
    List(Vec<Expr>),
}
