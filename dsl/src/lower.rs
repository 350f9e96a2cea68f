//! Type checking and lowering: one instantiated kernel of the AST → tile IR.
//!
//! Every expression is checked as it is lowered (dtypes, shapes, compile-time sizes), so each
//! error points at the exact expression. Literals stay untyped ([`TV::Int`] / [`TV::Float`])
//! until an operand gives them a dtype. `var`s assigned inside `for` / `if` bodies become the
//! carried values / results of those ops.

use crate::ast::*;
use crate::diag::{Diag, Span};
use opc_ir::{
    BinaryOp, Block, CmpPred, Constraint, DType, DimExpr, DimSym, Kernel, Loc, Op, OpKind, Param, ParamKind, ReduceOp,
    Rounding, Scalar, ScanOp, SymId, TileType, Tunable, UnaryOp, ValueId,
};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Largest tile a kernel may create (elements). Bigger tiles cannot live in registers or
/// on-chip buffers on any target.
pub const MAX_TILE_ELEMS: usize = 1 << 22;

/// Most dims a tile may have (axes are `u8` in the IR; real kernels use at most a handful).
pub const MAX_TILE_RANK: usize = 16;

type R<T> = Result<T, Diag>;

/// A lowered expression: an IR value or a literal that has not yet been given a dtype.
#[derive(Clone, Copy, Debug)]
enum TV {
    Val(ValueId),
    Int(i64),
    Float(f64),
    Bool(bool),
}

#[derive(Clone, Debug)]
enum Binding {
    Val { v: ValueId, mutable: bool },
    Tensor(usize),
    Scalar(usize),
    Dim(SymId),
    ConstDim(i64),
    Tunable(i64),
    DType(DType),
}

/// Concrete choices for one instantiation (resolved against the kernel's declarations).
pub struct Choices {
    pub dtypes: HashMap<String, DType>,
    pub consts: HashMap<String, i64>,
    pub tunables: HashMap<String, i64>,
}

pub struct Lowerer<'a> {
    src: &'a str,
    line_starts: Vec<usize>,
    k: Kernel,
    scopes: Vec<HashMap<String, Binding>>,
    blocks: Vec<Vec<Op>>,
    in_grid: bool,
    grid_rank: usize,
}

const BUILTINS: &[&str] = &[
    "program_id", "num_programs", "arange", "zeros", "full", "cdiv", "minimum", "maximum", "where", "exp", "exp2", "log",
    "log2", "sqrt", "rsqrt", "recip", "abs", "sigmoid", "silu", "tanh", "sin", "cos", "floor", "ceil", "round", "isnan",
    "isinf", "pow", "cast", "bitcast", "dot", "trans", "permute", "reshape", "broadcast", "sum", "max", "min", "argmax",
    "argmin", "cumsum", "load", "store", "atomic_add",
];

/// Resolve the dtype name or type variable of a parameter.
fn resolve_dtype(id: &Ident, tyvars: &HashMap<String, DType>) -> R<DType> {
    if let Some(d) = tyvars.get(&id.name) {
        return Ok(*d);
    }
    DType::from_name(&id.name).ok_or_else(|| {
        Diag::new(format!("unknown dtype `{}`", id.name), id.span)
            .label("not a dtype or type variable")
            .help("dtypes: f32, f16, bf16, i32, i8, u8, bool, i4, e2m1, e8m0")
    })
}

impl<'a> Lowerer<'a> {
    /// Lower kernel `def` with the given choices.
    pub fn lower(src: &'a str, def: &KernelDef, ch: &Choices) -> R<Kernel> {
        let mut line_starts = vec![0];
        line_starts.extend(src.match_indices('\n').map(|(i, _)| i + 1));
        let mut l = Lowerer {
            src,
            line_starts,
            k: Kernel::new(def.name.name.clone()),
            scopes: vec![HashMap::new()],
            blocks: vec![],
            in_grid: false,
            grid_rank: def.grid.len(),
        };
        let _ = l.src;
        l.declare(def, ch)?;
        // grid
        if def.grid.is_empty() || def.grid.len() > 3 {
            return Err(Diag::new(format!("a grid has 1 to 3 extents, found {}", def.grid.len()), def.grid_span)
                .help("e.g. `grid(cdiv(M, BM), cdiv(N, BN))`"));
        }
        l.in_grid = true;
        l.blocks.push(vec![]);
        let mut extents = vec![];
        for g in &def.grid {
            let tv = l.expr(g)?;
            extents.push(l.scalar_i32(tv, g.span, "a grid extent")?);
        }
        l.emit(OpKind::Yield, extents, None, def.grid_span);
        l.k.grid = Block { args: vec![], ops: l.blocks.pop().unwrap() };
        l.in_grid = false;
        // body
        l.blocks.push(vec![]);
        l.scopes.push(HashMap::new());
        l.stmts(&def.body)?;
        l.k.body = Block { args: vec![], ops: l.blocks.pop().unwrap() };
        Ok(l.k)
    }

    // ------------------------------------------------------------------ declarations

    fn declare(&mut self, def: &KernelDef, ch: &Choices) -> R<()> {
        check_duplicates(self.src, def)?;
        // type variables
        for (v, set) in &def.tyvars {
            for d in set {
                resolve_dtype(d, &HashMap::new())?;
            }
            let d = ch.dtypes[&v.name];
            self.bind(&v.name, Binding::DType(d));
        }
        // tunables
        for t in &def.tunables {
            if !t.space.iter().any(|(v, _)| *v == t.default.0) {
                return Err(Diag::new(format!("default {} of tunable `{}` is not in its search space", t.default.0, t.name.name), t.default.1)
                    .label("not in the space")
                    .help(format!("pick one of {{{}}}", t.space.iter().map(|v| v.0.to_string()).collect::<Vec<_>>().join(", "))));
            }
            if let Some((v, s)) = t.space.iter().find(|(v, _)| *v <= 0) {
                return Err(Diag::new(format!("tile size {v} of `{}` must be positive", t.name.name), *s).label("not positive"));
            }
            let value = ch.tunables[&t.name.name];
            self.k.tunables.push(Tunable {
                name: t.name.name.clone(),
                level: t.level,
                space: t.space.iter().map(|v| v.0).collect(),
                value,
                loc: Some(self.loc(t.name.span)),
            });
            self.bind(&t.name.name, Binding::Tunable(value));
        }
        // parameters and the dims their shapes introduce
        let const_names: HashSet<&str> = def
            .constraints
            .iter()
            .filter_map(|c| if let ConstraintDef::Const(id) = c { Some(id.name.as_str()) } else { None })
            .collect();
        for p in &def.params {
            let dtype = resolve_dtype(&p.dtype, &ch.dtypes)?;
            let kind = match &p.dims {
                Some(dims) => {
                    let dims = dims.iter().map(|d| self.dim_expr(d, &const_names, ch)).collect::<R<Vec<_>>>()?;
                    ParamKind::Tensor { dtype, dims, output: p.output }
                }
                None => {
                    if !matches!(dtype, DType::F32 | DType::I32 | DType::Bool) {
                        return Err(Diag::new(format!("scalar parameters are f32, i32 or bool, not {dtype}"), p.dtype.span)
                            .label("unsupported scalar type"));
                    }
                    ParamKind::Scalar { dtype }
                }
            };
            let idx = self.k.params.len();
            self.k.params.push(Param { name: p.name.name.clone(), kind: kind.clone() });
            let b = if matches!(kind, ParamKind::Tensor { .. }) { Binding::Tensor(idx) } else { Binding::Scalar(idx) };
            self.bind(&p.name.name, b);
        }
        // constraints
        for c in &def.constraints {
            match c {
                ConstraintDef::Const(id) => {
                    if self.k.sym(&id.name).is_none() {
                        return Err(Diag::new(format!("`{}` is not a dim of any tensor parameter", id.name), id.span)
                            .label("unknown dim")
                            .help("only symbols used in tensor shapes can be `const`"));
                    }
                }
                ConstraintDef::In(e, vals) => {
                    let d = self.dim_expr(e, &const_names, ch)?;
                    let allowed: Vec<i64> = vals.iter().map(|v| v.0).collect();
                    if let Some(v) = self.eval_static(&d) {
                        if !allowed.contains(&v) {
                            return Err(Diag::new(format!("{} = {v} is not one of {{{}}}", show_expr(e), join(&allowed)), e.span)
                                .label(format!("is {v}"))
                                .help("instantiate the kernel with an allowed value"));
                        }
                    }
                    self.k.constraints.push(Constraint::OneOf(d, allowed));
                }
                ConstraintDef::MultipleOf(a, b) => {
                    let (da, db) = (self.dim_expr(a, &const_names, ch)?, self.dim_expr(b, &const_names, ch)?);
                    if let (Some(x), Some(y)) = (self.eval_static(&da), self.eval_static(&db)) {
                        if y == 0 || x.checked_rem(y) != Some(0) {
                            let tunable = def.tunables.iter().find(|t| mentions(b, &t.name.name) || mentions(a, &t.name.name));
                            let mut d = Diag::new(format!("{} = {x} is not a multiple of {} = {y}", show_expr(a), show_expr(b)), a.span.to(b.span))
                                .label("constraint violated by this instantiation");
                            if let Some(t) = tunable {
                                d = Diag::new(format!("tile `{}` = {} does not fit: {} = {x} is not a multiple of {} = {y}", t.name.name, ch.tunables[&t.name.name], show_expr(a), show_expr(b)), t.span)
                                    .label("this tile size")
                                    .help(format!("choose a value of `{}` that divides {} = {x}", t.name.name, show_expr(a)));
                            }
                            return Err(d);
                        }
                    }
                    self.k.constraints.push(Constraint::MultipleOf(da, db));
                }
                ConstraintDef::Bound { lhs, lower, value } => {
                    let d = self.dim_expr(lhs, &const_names, ch)?;
                    if let Some(v) = self.eval_static(&d) {
                        if (*lower && v < *value) || (!*lower && v > *value) {
                            return Err(Diag::new(format!("{} = {v} violates `{} {} {value}`", show_expr(lhs), show_expr(lhs), if *lower { ">=" } else { "<=" }), lhs.span)
                                .label("constraint violated by this instantiation"));
                        }
                    }
                    let (lo, hi) = if *lower { (Some(*value), None) } else { (None, Some(*value)) };
                    self.k.constraints.push(Constraint::Range(d, lo, hi));
                }
            }
        }
        for name in &const_names {
            let sym = self.k.sym(name).expect("checked above");
            let v = ch.consts.get(*name).copied();
            self.k.dims[sym.0 as usize].konst = true;
            self.k.dims[sym.0 as usize].value = v;
        }
        // dims become names in the body
        for (i, d) in self.k.dims.clone().iter().enumerate() {
            let b = match d.value {
                Some(v) => Binding::ConstDim(v),
                None => Binding::Dim(SymId(i as u32)),
            };
            if self.lookup(&d.name).is_some() {
                continue;
            }
            self.bind(&d.name, b);
        }
        Ok(())
    }

    /// Value of a dim expression when it only involves const dims (and constants).
    fn eval_static(&self, d: &DimExpr) -> Option<i64> {
        // Not `DimExpr::eval`: user-written dims may overflow i64 (`2 * 9223372036854775807`).
        eval_dim_checked(d, &|s| self.k.dims[s.0 as usize].value)
    }

    fn dim_expr(&mut self, e: &Expr, consts: &HashSet<&str>, ch: &Choices) -> R<DimExpr> {
        Ok(match &e.kind {
            ExprKind::Int(v) => DimExpr::Const(*v),
            ExprKind::Name(n) => {
                if let Some(Binding::Tunable(v)) = self.lookup(n) {
                    return Ok(DimExpr::Const(v));
                }
                if crate::parser::is_reserved(n) || DType::from_name(n).is_some() {
                    return Err(Diag::new(format!("`{n}` cannot be a dimension"), e.span).label("not a dim name"));
                }
                let sym = match self.k.sym(n) {
                    Some(s) => s,
                    None => {
                        self.k.dims.push(DimSym {
                            name: n.clone(),
                            konst: consts.contains(n.as_str()),
                            value: if consts.contains(n.as_str()) { ch.consts.get(n).copied() } else { None },
                        });
                        SymId(self.k.dims.len() as u32 - 1)
                    }
                };
                DimExpr::Sym(sym)
            }
            ExprKind::Binary(op, a, b) => {
                let (a, b) = (Box::new(self.dim_expr(a, consts, ch)?), Box::new(self.dim_expr(b, consts, ch)?));
                match op {
                    BinOp::Add => DimExpr::Add(a, b),
                    BinOp::Sub => DimExpr::Sub(a, b),
                    BinOp::Mul => DimExpr::Mul(a, b),
                    BinOp::Div => DimExpr::Div(a, b),
                    _ => {
                        return Err(Diag::new(format!("`{}` is not allowed in a dimension", op.symbol()), e.span)
                            .help("dimensions use `+ - * /` over dim names and integers"))
                    }
                }
            }
            _ => {
                return Err(Diag::new("expected a dimension", e.span)
                    .label("not a dim expression")
                    .help("dimensions are names, integers and `+ - * /`, e.g. `K / 32`"))
            }
        })
    }

    // ------------------------------------------------------------------ scopes and emission

    fn bind(&mut self, name: &str, b: Binding) {
        self.scopes.last_mut().unwrap().insert(name.to_string(), b);
    }

    fn lookup(&self, name: &str) -> Option<Binding> {
        self.scopes.iter().rev().find_map(|s| s.get(name).cloned())
    }

    fn loc(&self, span: Span) -> Loc {
        let line = self.line_starts.partition_point(|&s| s <= span.start);
        let col = span.start - self.line_starts[line - 1] + 1;
        Loc { line: line as u32, col: col as u32 }
    }

    fn emit(&mut self, kind: OpKind, args: Vec<ValueId>, ty: Option<TileType>, span: Span) -> ValueId {
        let results = match ty {
            Some(t) => vec![self.k.new_value(t)],
            None => vec![],
        };
        let r = results.first().copied().unwrap_or(ValueId(u32::MAX));
        let mut op = Op::new(kind, args, results);
        op.loc = Some(self.loc(span));
        self.blocks.last_mut().unwrap().push(op);
        r
    }

    fn ty(&self, v: ValueId) -> &TileType {
        self.k.ty(v)
    }

    fn describe(&self, tv: TV) -> String {
        match tv {
            TV::Val(v) => self.ty(v).to_string(),
            TV::Int(_) => "an integer literal".into(),
            TV::Float(_) => "a float literal".into(),
            TV::Bool(_) => "a bool literal".into(),
        }
    }

    fn konst(&mut self, s: Scalar, ty: TileType, span: Span) -> ValueId {
        self.emit(OpKind::Const(s), vec![], Some(ty), span)
    }

    /// Give a literal a dtype (or check a value's dtype).
    fn materialize(&mut self, tv: TV, dtype: Option<DType>, span: Span) -> R<ValueId> {
        let (s, d) = match tv {
            TV::Val(v) => return Ok(v),
            TV::Int(i) => {
                let d = dtype.unwrap_or(DType::I32);
                if d == DType::Bool {
                    return Err(Diag::new("an integer literal cannot be a bool", span).help("use `true` or `false`"));
                }
                if d.is_float() {
                    (Scalar::Float(i as f64), d)
                } else {
                    let (lo, hi) = d.int_range().unwrap();
                    if i < lo || i > hi {
                        return Err(Diag::new(format!("literal {i} does not fit in {d} ({lo}..={hi})"), span).label("out of range"));
                    }
                    (Scalar::Int(i), d)
                }
            }
            TV::Float(f) => {
                let d = dtype.unwrap_or(DType::F32);
                if !d.is_float() {
                    return Err(Diag::new(format!("float literal used where {d} is expected"), span)
                        .label(format!("expected {d}"))
                        .help("write an integer, or cast the other operand to a float type"));
                }
                (Scalar::Float(f), d)
            }
            TV::Bool(b) => {
                let d = dtype.unwrap_or(DType::Bool);
                if d != DType::Bool {
                    return Err(Diag::new(format!("bool literal used where {d} is expected"), span).label(format!("expected {d}")));
                }
                (Scalar::Bool(b), d)
            }
        };
        Ok(self.konst(s, TileType::scalar(d), span))
    }

    /// Broadcast a value to `shape` (numpy rules: right-aligned, size-1 stretches).
    fn broadcast_to(&mut self, v: ValueId, shape: &[usize], span: Span) -> R<ValueId> {
        let t = self.ty(v).clone();
        if t.shape == shape {
            return Ok(v);
        }
        if t.rank() > shape.len() || !broadcastable(&t.shape, shape) {
            return Err(Diag::new(format!("cannot broadcast {t} to shape {}", fmt_shape(shape)), span)
                .label(format!("has shape {}", fmt_shape(&t.shape)))
                .help("shapes broadcast right-aligned; insert axes with `x[:, None]`"));
        }
        let mut cur = v;
        let mut cur_shape = t.shape.clone();
        while cur_shape.len() < shape.len() {
            cur_shape.insert(0, 1);
            cur = self.emit(OpKind::ExpandDims(0), vec![cur], Some(TileType::new(t.dtype, cur_shape.clone())), span);
        }
        if cur_shape != shape {
            cur = self.emit(OpKind::Broadcast, vec![cur], Some(TileType::new(t.dtype, shape.to_vec())), span);
        }
        Ok(cur)
    }

    fn scalar_i32(&mut self, tv: TV, span: Span, what: &str) -> R<ValueId> {
        let v = self.materialize(tv, Some(DType::I32), span)?;
        let t = self.ty(v);
        if t.dtype != DType::I32 || !t.is_scalar() {
            return Err(Diag::new(format!("{what} must be an i32 scalar, found {t}"), span).label(format!("{t}")));
        }
        Ok(v)
    }

    // ------------------------------------------------------------------ statements

    fn stmts(&mut self, stmts: &[Stmt]) -> R<()> {
        for s in stmts {
            self.stmt(s)?;
        }
        Ok(())
    }

    fn stmt(&mut self, s: &Stmt) -> R<()> {
        match s {
            Stmt::Let { name, value, mutable } => {
                let tv = self.expr(value)?;
                let v = self.materialize(tv, None, value.span)?;
                if let Some(Binding::Tensor(_)) = self.lookup(&name.name) {
                    return Err(Diag::new(format!("`{}` shadows a tensor parameter", name.name), name.span)
                        .label("rename this binding"));
                }
                self.bind(&name.name, Binding::Val { v, mutable: *mutable });
            }
            Stmt::Assign { name, value } => {
                let Some(Binding::Val { v: old, mutable }) = self.lookup(&name.name) else {
                    return Err(match self.lookup(&name.name) {
                        None => self.unknown_name(&name.name, name.span),
                        Some(_) => Diag::new(format!("cannot assign to `{}`", name.name), name.span)
                            .label("not a variable")
                            .help("only `var` bindings can be assigned"),
                    });
                };
                if !mutable {
                    return Err(Diag::new(format!("cannot assign twice to immutable binding `{}`", name.name), name.span)
                        .label("assigned here")
                        .help(format!("declare it with `var {} = ...` to make it mutable", name.name)));
                }
                let want = self.ty(old).clone();
                let tv = self.expr(value)?;
                let mut v = self.materialize(tv, Some(want.dtype), value.span)?;
                if !matches!(tv, TV::Val(_)) {
                    v = self.broadcast_to(v, &want.shape, value.span)?;
                }
                let got = self.ty(v).clone();
                if got != want {
                    return Err(Diag::new(format!("`{}` is {want} but is assigned {got}", name.name), value.span)
                        .label(format!("{got}"))
                        .help("a `var` keeps its dtype and shape; cast or broadcast the value"));
                }
                self.assign(&name.name, v);
            }
            Stmt::Expr(e) => {
                // `store` / `atomic_add` produce no value: they are only valid here, as statements.
                // Any other bare expression is allowed (it is dead and removed by dce).
                match &e.kind {
                    ExprKind::Call { func, args } if is_effect(&func.name) => {
                        self.call(func, args, e.span)?;
                    }
                    _ => {
                        self.expr(e)?;
                    }
                }
            }
            Stmt::For { var, lo, hi, step, body, span } => self.for_stmt(var, lo, hi, step.as_ref(), body, *span)?,
            Stmt::If { cond, then, els, span } => self.if_stmt(cond, then, els.as_deref(), *span)?,
        }
        Ok(())
    }

    fn assign(&mut self, name: &str, v: ValueId) {
        for s in self.scopes.iter_mut().rev() {
            if let Some(Binding::Val { v: slot, .. }) = s.get_mut(name) {
                *slot = v;
                return;
            }
        }
    }

    /// Outer `var`s assigned somewhere in `body` (in first-assignment order).
    fn carried_vars(&self, body: &[Stmt]) -> Vec<String> {
        fn scan(stmts: &[Stmt], local: &mut HashSet<String>, out: &mut Vec<String>) {
            for s in stmts {
                match s {
                    Stmt::Let { name, .. } => {
                        local.insert(name.name.clone());
                    }
                    Stmt::Assign { name, .. } => {
                        if !local.contains(&name.name) && !out.contains(&name.name) {
                            out.push(name.name.clone());
                        }
                    }
                    Stmt::For { var, body, .. } => {
                        let mut l = local.clone();
                        l.insert(var.name.clone());
                        scan(body, &mut l, out);
                    }
                    Stmt::If { then, els, .. } => {
                        scan(then, &mut local.clone(), out);
                        if let Some(e) = els {
                            scan(e, &mut local.clone(), out);
                        }
                    }
                    Stmt::Expr(_) => {}
                }
            }
        }
        let mut out = vec![];
        scan(body, &mut HashSet::new(), &mut out);
        out.retain(|n| matches!(self.lookup(n), Some(Binding::Val { mutable: true, .. })));
        out
    }

    fn current(&self, name: &str) -> ValueId {
        match self.lookup(name) {
            Some(Binding::Val { v, .. }) => v,
            _ => unreachable!("carried var `{name}` is bound"),
        }
    }

    fn for_stmt(&mut self, var: &Ident, lo: &Expr, hi: &Expr, step: Option<&Expr>, body: &[Stmt], span: Span) -> R<()> {
        if self.in_grid {
            unreachable!("no statements in the grid");
        }
        let lo_v = self.expr(lo)?;
        let lo_v = self.scalar_i32(lo_v, lo.span, "a loop bound")?;
        let hi_v = self.expr(hi)?;
        let hi_v = self.scalar_i32(hi_v, hi.span, "a loop bound")?;
        let step_v = match step {
            Some(s) => {
                if let Ok(c) = self.const_eval(s) {
                    if c <= 0 {
                        return Err(Diag::new(format!("loop step must be positive, found {c}"), s.span).label("not positive"));
                    }
                }
                let t = self.expr(s)?;
                self.scalar_i32(t, s.span, "a loop step")?
            }
            None => self.konst(Scalar::Int(1), TileType::scalar(DType::I32), span),
        };
        let carried = self.carried_vars(body);
        let inits: Vec<ValueId> = carried.iter().map(|n| self.current(n)).collect();
        let iv = self.k.new_value(TileType::scalar(DType::I32));
        let args: Vec<ValueId> = inits.iter().map(|&v| {
            let t = self.ty(v).clone();
            self.k.new_value(t)
        }).collect();
        for (n, &a) in carried.iter().zip(&args) {
            self.assign(n, a);
        }
        self.blocks.push(vec![]);
        self.scopes.push(HashMap::new());
        self.bind(&var.name, Binding::Val { v: iv, mutable: false });
        self.stmts(body)?;
        // Pop the body's scope first: a `let` in the body may shadow a carried `var`.
        self.scopes.pop();
        let yields: Vec<ValueId> = carried.iter().map(|n| self.current(n)).collect();
        self.emit(OpKind::Yield, yields, None, span);
        let ops = self.blocks.pop().unwrap();
        let results: Vec<ValueId> = inits.iter().map(|&v| {
            let t = self.ty(v).clone();
            self.k.new_value(t)
        }).collect();
        let mut block_args = vec![iv];
        block_args.extend(&args);
        let mut op_args = vec![lo_v, hi_v, step_v];
        op_args.extend(&inits);
        let mut op = Op::new(OpKind::For, op_args, results.clone());
        op.regions.push(Block { args: block_args, ops });
        op.loc = Some(self.loc(span));
        self.blocks.last_mut().unwrap().push(op);
        for (n, &r) in carried.iter().zip(&results) {
            self.assign(n, r);
        }
        Ok(())
    }

    fn if_stmt(&mut self, cond: &Expr, then: &[Stmt], els: Option<&[Stmt]>, span: Span) -> R<()> {
        let c = self.expr(cond)?;
        let c = self.materialize(c, Some(DType::Bool), cond.span)?;
        let ct = self.ty(c).clone();
        if ct.dtype != DType::Bool || !ct.is_scalar() {
            return Err(Diag::new(format!("`if` needs a bool scalar condition, found {ct}"), cond.span)
                .label(format!("{ct}"))
                .help("for per-element choices use `where(cond, a, b)`"));
        }
        let mut names = self.carried_vars(then);
        if let Some(e) = els {
            for n in self.carried_vars(e) {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        let before: Vec<ValueId> = names.iter().map(|n| self.current(n)).collect();
        let mut regions = vec![];
        for branch in [Some(then), els] {
            self.blocks.push(vec![]);
            self.scopes.push(HashMap::new());
            if let Some(b) = branch {
                self.stmts(b)?;
            }
            // Pop the branch's scope first: a `let` in the branch may shadow an assigned `var`.
            self.scopes.pop();
            let ys: Vec<ValueId> = names.iter().map(|n| self.current(n)).collect();
            self.emit(OpKind::Yield, ys, None, span);
            regions.push(Block { args: vec![], ops: self.blocks.pop().unwrap() });
            for (n, &v) in names.iter().zip(&before) {
                self.assign(n, v);
            }
        }
        let results: Vec<ValueId> = before.iter().map(|&v| {
            let t = self.ty(v).clone();
            self.k.new_value(t)
        }).collect();
        let mut op = Op::new(OpKind::If, vec![c], results.clone());
        op.regions = regions;
        op.loc = Some(self.loc(span));
        self.blocks.last_mut().unwrap().push(op);
        for (n, &r) in names.iter().zip(&results) {
            self.assign(n, r);
        }
        Ok(())
    }

    // ------------------------------------------------------------------ expressions

    fn unknown_name(&self, name: &str, span: Span) -> Diag {
        // Suggest names in scope only: a builtin function is never what a value position wants.
        let cands: Vec<String> = self.scopes.iter().flat_map(|s| s.keys().cloned()).collect();
        let best = cands.iter().filter(|c| edit_distance(c, name) <= 2.max(name.len() / 3)).min_by_key(|c| edit_distance(c, name));
        let d = Diag::new(format!("cannot find `{name}` in this kernel"), span).label("not found");
        if BUILTINS.contains(&name) {
            return d.help(format!("`{name}` is a builtin function: call it, e.g. `{name}(...)`"));
        }
        match best {
            Some(b) => d.help(format!("did you mean `{b}`?")),
            None => d.help("names are parameters, dims, tunables, `let`/`var` bindings and loop variables"),
        }
    }

    /// Evaluate a compile-time integer (tile sizes, axes): literals, tunables, const dims, arithmetic.
    fn const_eval(&self, e: &Expr) -> R<i64> {
        match &e.kind {
            ExprKind::Int(v) => Ok(*v),
            ExprKind::Name(n) => match self.lookup(n) {
                Some(Binding::Tunable(v)) | Some(Binding::ConstDim(v)) => Ok(v),
                Some(Binding::Dim(_)) => Err(Diag::new(format!("`{n}` is a launch-time dim, but a compile-time size is needed here"), e.span)
                    .label("not known at compile time")
                    .help(format!("declare `const {n}` in the kernel's `where` clause, or tile it with a tunable"))),
                None => Err(self.unknown_name(n, e.span)),
                Some(_) => Err(Diag::new(format!("`{n}` is not a compile-time integer"), e.span)
                    .label("not a tunable, const dim or literal")
                    .help("tile shapes use tunables, const dims and integer literals")),
            },
            ExprKind::Unary(UnOp::Neg, a) => self.const_eval(a)?.checked_neg().ok_or_else(|| const_overflow(e.span)),
            ExprKind::Binary(op, a, b) => {
                let (x, y) = (self.const_eval(a)?, self.const_eval(b)?);
                let r = match op {
                    BinOp::Add => x.checked_add(y),
                    BinOp::Sub => x.checked_sub(y),
                    BinOp::Mul => x.checked_mul(y),
                    BinOp::Div | BinOp::Rem if y == 0 => return Err(Diag::new("division by zero in a compile-time size", e.span)),
                    BinOp::Div => x.checked_div(y),
                    BinOp::Rem => x.checked_rem(y),
                    _ => return Err(Diag::new(format!("`{}` is not allowed in a compile-time size", op.symbol()), e.span)),
                };
                r.ok_or_else(|| const_overflow(e.span))
            }
            ExprKind::Call { func, args } if matches!(func.name.as_str(), "cdiv" | "minimum" | "maximum") && args.len() == 2 => {
                let (x, y) = (self.const_eval(&args[0].value)?, self.const_eval(&args[1].value)?);
                match func.name.as_str() {
                    "cdiv" if y <= 0 => Err(Diag::new("cdiv by a non-positive value", e.span)),
                    "cdiv" => checked_cdiv(x, y).ok_or_else(|| const_overflow(e.span)),
                    "minimum" => Ok(x.min(y)),
                    _ => Ok(x.max(y)),
                }
            }
            _ => Err(Diag::new("expected a compile-time integer", e.span)
                .label("not a constant")
                .help("use tunables, const dims, integer literals and `+ - * / cdiv`")),
        }
    }

    fn shape_arg(&self, e: &Expr) -> R<Vec<usize>> {
        let ExprKind::List(items) = &e.kind else {
            return Err(Diag::new("expected a shape like `[BM, D]`", e.span).label("not a list"));
        };
        let mut shape = vec![];
        for it in items {
            let v = self.const_eval(it)?;
            if v <= 0 {
                return Err(Diag::new(format!("tile dimensions must be positive, found {v}"), it.span).label("not positive"));
            }
            shape.push(v as usize);
        }
        self.check_tile_size(&shape, e.span)?;
        Ok(shape)
    }

    fn check_tile_size(&self, shape: &[usize], span: Span) -> R<()> {
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).unwrap_or(usize::MAX);
        if n > MAX_TILE_ELEMS {
            return Err(Diag::new(format!("tile {} has {n} elements, more than the limit of {MAX_TILE_ELEMS}", fmt_shape(shape)), span)
                .label("too large")
                .help("tile it: loop over smaller blocks with a level2 tunable"));
        }
        if shape.len() > MAX_TILE_RANK {
            return Err(Diag::new(format!("tile has {} dims, more than the limit of {MAX_TILE_RANK}", shape.len()), span)
                .label("too many dims")
                .help("reshape to fewer dims"));
        }
        Ok(())
    }

    fn dtype_arg(&self, e: &Expr) -> R<DType> {
        if let ExprKind::Name(n) = &e.kind {
            if let Some(Binding::DType(d)) = self.lookup(n) {
                return Ok(d);
            }
            if let Some(d) = DType::from_name(n) {
                return Ok(d);
            }
        }
        Err(Diag::new("expected a dtype", e.span)
            .label("not a dtype")
            .help("dtypes: f32, f16, bf16, i32, i8, u8, bool, i4, e2m1, e8m0, or a type variable"))
    }

    fn axis_arg(&self, e: &Expr, rank: usize) -> R<u8> {
        let a = self.const_eval(e)?;
        let a2 = if a < 0 { a + rank as i64 } else { a };
        if a2 < 0 || a2 >= rank as i64 {
            return Err(Diag::new(format!("axis {a} is out of range for a rank-{rank} tile"), e.span)
                .label("bad axis")
                .help(format!("axes run from 0 to {}", rank as i64 - 1)));
        }
        Ok(a2 as u8)
    }

    fn expr(&mut self, e: &Expr) -> R<TV> {
        match &e.kind {
            ExprKind::Int(v) => Ok(TV::Int(*v)),
            ExprKind::Float(v) => Ok(TV::Float(*v)),
            ExprKind::Bool(b) => Ok(TV::Bool(*b)),
            ExprKind::Name(n) => self.name(n, e.span),
            ExprKind::List(_) => Err(Diag::new("a list is only allowed as a shape or permutation argument", e.span).label("unexpected list")),
            ExprKind::Unary(op, a) => {
                let tv = self.expr(a)?;
                self.unary(*op, tv, e.span, a.span)
            }
            ExprKind::Binary(op, a, b) => {
                let (ta, tb) = (self.expr(a)?, self.expr(b)?);
                self.binary(*op, ta, tb, e.span, a.span, b.span)
            }
            ExprKind::Index { base, items } => {
                if let ExprKind::Name(n) = &base.kind {
                    if let Some(Binding::Tensor(_)) = self.lookup(n) {
                        return Err(Diag::new(format!("tensor `{n}` can only be indexed inside `load`, `store` or `atomic_add`"), e.span)
                            .label("bare tensor access")
                            .help(format!("write `load({})`", show_expr(e))));
                    }
                }
                let tv = self.expr(base)?;
                let v = self.materialize(tv, None, base.span)?;
                self.expand_index(v, items, e.span)
            }
            ExprKind::Call { func, .. } if is_effect(&func.name) => {
                Err(Diag::new(format!("`{}` does not produce a value", func.name), e.span)
                    .label("used as a value")
                    .help(format!("call `{}(...)` as a statement of its own", func.name)))
            }
            ExprKind::Call { func, args } => self.call(func, args, e.span),
        }
    }

    fn name(&mut self, n: &str, span: Span) -> R<TV> {
        let b = self.lookup(n).ok_or_else(|| self.unknown_name(n, span))?;
        if self.in_grid && matches!(b, Binding::Val { .. } | Binding::Scalar(_)) {
            return Err(Diag::new(format!("the grid may only use dims and tunables, not `{n}`"), span)
                .label("not allowed in the grid")
                .help("the grid is sized from tensor dims, const dims and tunables; mask the extra programs in the body instead"));
        }
        Ok(match b {
            Binding::Val { v, .. } => TV::Val(v),
            Binding::Tunable(v) | Binding::ConstDim(v) => TV::Int(v),
            Binding::Dim(s) => TV::Val(self.emit(OpKind::Dim(s), vec![], Some(TileType::scalar(DType::I32)), span)),
            Binding::Scalar(p) => {
                let ParamKind::Scalar { dtype } = self.k.params[p].kind else { unreachable!() };
                TV::Val(self.emit(OpKind::ScalarParam(p), vec![], Some(TileType::scalar(dtype)), span))
            }
            Binding::Tensor(_) => {
                return Err(Diag::new(format!("tensor `{n}` cannot be used as a value"), span)
                    .label("a tensor in global memory")
                    .help(format!("load a tile from it: `load({n}[...])`")))
            }
            Binding::DType(_) => return Err(Diag::new(format!("type variable `{n}` used as a value"), span).label("a dtype")),
        })
    }

    fn expand_index(&mut self, v: ValueId, items: &[IndexItem], span: Span) -> R<TV> {
        let t = self.ty(v).clone();
        let kept = items.iter().filter(|i| matches!(i, IndexItem::Full(_))).count();
        if kept > t.rank() {
            return Err(Diag::new(format!("{kept} `:` for a rank-{} tile", t.rank()), span).label("too many axes"));
        }
        let mut cur = v;
        let mut shape = t.shape.clone();
        let mut pos = 0usize;
        for it in items {
            match it {
                IndexItem::Full(_) => pos += 1,
                IndexItem::NewAxis(_) => {
                    shape.insert(pos, 1);
                    self.check_tile_size(&shape, span)?;
                    cur = self.emit(OpKind::ExpandDims(pos as u8), vec![cur], Some(TileType::new(t.dtype, shape.clone())), span);
                    pos += 1;
                }
                IndexItem::Expr(ie) => {
                    return Err(Diag::new("tiles cannot be indexed by value", ie.span)
                        .label("index into a register tile")
                        .help("use `x[:, None]` to add axes; gather from a tensor with `load(t[idx])`"))
                }
            }
        }
        Ok(TV::Val(cur))
    }

    fn unary(&mut self, op: UnOp, tv: TV, span: Span, aspan: Span) -> R<TV> {
        match (op, tv) {
            (UnOp::Neg, TV::Int(i)) if i != i64::MIN => return Ok(TV::Int(-i)),
            (UnOp::Neg, TV::Float(f)) => return Ok(TV::Float(-f)),
            (UnOp::Not, TV::Bool(b)) => return Ok(TV::Bool(!b)),
            _ => {}
        }
        let v = self.materialize(tv, None, aspan)?;
        let t = self.ty(v).clone();
        match op {
            UnOp::Neg if t.dtype.is_float() || t.dtype.is_signed_int() => {}
            UnOp::Not if t.dtype == DType::Bool || t.dtype.is_int() => {}
            _ => {
                let sym = if op == UnOp::Neg { "-" } else { "!" };
                return Err(Diag::new(format!("cannot apply `{sym}` to {t}"), aspan).label(format!("{t}")));
            }
        }
        let k = if op == UnOp::Neg { UnaryOp::Neg } else { UnaryOp::Not };
        Ok(TV::Val(self.emit(OpKind::Unary(k), vec![v], Some(t), span)))
    }

    /// Unify two operands: same dtype (literals adapt), broadcast shapes.
    fn unify(&mut self, a: TV, b: TV, aspan: Span, bspan: Span, span: Span) -> R<(ValueId, ValueId)> {
        let da = if let TV::Val(v) = a { Some(self.ty(v).dtype) } else { None };
        let db = if let TV::Val(v) = b { Some(self.ty(v).dtype) } else { None };
        let dtype = match (da, db) {
            (Some(x), Some(y)) if x != y => {
                let (ta, tb) = (self.describe(a), self.describe(b));
                // Suggest converting toward f32 (two floats) or toward the float side (int vs
                // float), naming the operand that needs the cast.
                let wider = if x.is_float() && y.is_float() {
                    DType::F32
                } else if y.is_float() {
                    y
                } else {
                    x
                };
                let (narrow, nspan) = if x == wider { (y, bspan) } else { (x, aspan) };
                let text = self.src.get(nspan.start..nspan.start + nspan.len).unwrap_or("...");
                let text = if text.len() <= 40 && !text.contains('\n') { text } else { "..." };
                return Err(Diag::new(format!("dtype mismatch: `{x}` and `{y}`"), span)
                    .label(format!("{ta} and {tb}"))
                    .help(format!("convert the {narrow} side explicitly, e.g. `cast({text}, {wider})`")));
            }
            (Some(x), _) | (_, Some(x)) => Some(x),
            (None, None) => match (a, b) {
                (TV::Float(_), _) | (_, TV::Float(_)) => Some(DType::F32),
                (TV::Bool(_), _) | (_, TV::Bool(_)) => Some(DType::Bool),
                _ => Some(DType::I32),
            },
        };
        let va = self.materialize(a, dtype, aspan)?;
        let vb = self.materialize(b, dtype, bspan)?;
        let (sa, sb) = (self.ty(va).shape.clone(), self.ty(vb).shape.clone());
        let shape = broadcast_shapes(&sa, &sb).ok_or_else(|| {
            Diag::new(format!("shapes {} and {} cannot be broadcast together", fmt_shape(&sa), fmt_shape(&sb)), span)
                .label("incompatible shapes")
                .help("shapes broadcast right-aligned, size-1 axes stretch; add axes with `x[:, None]`")
        })?;
        let va = self.broadcast_to(va, &shape, aspan)?;
        let vb = self.broadcast_to(vb, &shape, bspan)?;
        Ok((va, vb))
    }

    fn binary(&mut self, op: BinOp, a: TV, b: TV, span: Span, aspan: Span, bspan: Span) -> R<TV> {
        // Fold literal arithmetic (e.g. `-inf`, `1.0 / 8.0`, `2 * 64`).
        if let Some(r) = fold_literals(op, a, b) {
            return Ok(r);
        }
        let (va, vb) = self.unify(a, b, aspan, bspan, span)?;
        let t = self.ty(va).clone();
        let d = t.dtype;
        let bad = |what: &str| {
            Diag::new(format!("`{}` is not defined on {d}", op.symbol()), span)
                .label(format!("operands are {t}"))
                .help(what.to_string())
        };
        let (kind, rty) = match op {
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem => {
                if !(d.is_float() || d.is_int()) {
                    return Err(bad("arithmetic needs float or integer tiles; `cast` codes and bools first"));
                }
                let b = match op {
                    BinOp::Add => BinaryOp::Add,
                    BinOp::Sub => BinaryOp::Sub,
                    BinOp::Mul => BinaryOp::Mul,
                    BinOp::Div => BinaryOp::Div,
                    _ => BinaryOp::Rem,
                };
                (OpKind::Binary(b), t.clone())
            }
            BinOp::BitAnd | BinOp::BitOr | BinOp::BitXor | BinOp::Shl | BinOp::Shr => {
                let shift = matches!(op, BinOp::Shl | BinOp::Shr);
                if !(d.is_int() || (d == DType::Bool && !shift)) {
                    return Err(bad("bit operations need integer tiles; `bitcast` floats to i32 first"));
                }
                let b = match op {
                    BinOp::BitAnd => BinaryOp::And,
                    BinOp::BitOr => BinaryOp::Or,
                    BinOp::BitXor => BinaryOp::Xor,
                    BinOp::Shl => BinaryOp::Shl,
                    _ => BinaryOp::Shr,
                };
                (OpKind::Binary(b), t.clone())
            }
            BinOp::And | BinOp::Or => {
                if d != DType::Bool {
                    return Err(bad("`&&` and `||` combine bool tiles, e.g. comparisons"));
                }
                (OpKind::Binary(if op == BinOp::And { BinaryOp::And } else { BinaryOp::Or }), t.clone())
            }
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                if d.is_code() {
                    return Err(bad("compare decoded values: `cast` codes to a float or int first"));
                }
                let p = match op {
                    BinOp::Eq => CmpPred::Eq,
                    BinOp::Ne => CmpPred::Ne,
                    BinOp::Lt => CmpPred::Lt,
                    BinOp::Le => CmpPred::Le,
                    BinOp::Gt => CmpPred::Gt,
                    _ => CmpPred::Ge,
                };
                (OpKind::Cmp(p), t.with_dtype(DType::Bool))
            }
        };
        Ok(TV::Val(self.emit(kind, vec![va, vb], Some(rty), span)))
    }

    fn call(&mut self, func: &Ident, args: &[CallArg], span: Span) -> R<TV> {
        let f = func.name.as_str();
        if !BUILTINS.contains(&f) {
            return Err(self.unknown_function(func));
        }
        let named: Vec<&CallArg> = args.iter().filter(|a| a.name.is_some()).collect();
        let pos: Vec<&Expr> = args.iter().filter(|a| a.name.is_none()).map(|a| &a.value).collect();
        let allowed_named: &[&str] = match f {
            "load" => &["mask", "other"],
            "store" | "atomic_add" => &["mask"],
            _ => &[],
        };
        for (i, a) in named.iter().enumerate() {
            let n = a.name.as_ref().unwrap();
            if named[..i].iter().any(|b| b.name.as_ref().unwrap().name == n.name) {
                return Err(Diag::new(format!("argument `{}` is given twice", n.name), n.span).label(format!("second `{}`", n.name)).help("remove one of them"));
            }
            if !allowed_named.contains(&n.name.as_str()) {
                return Err(Diag::new(format!("`{f}` has no argument named `{}`", n.name), n.span).label("unknown argument").help(
                    if allowed_named.is_empty() { format!("`{f}` takes only positional arguments") } else { format!("named arguments of `{f}`: {}", allowed_named.join(", ")) },
                ));
            }
        }
        let nargs = |lo: usize, hi: usize| -> R<()> {
            if pos.len() < lo || pos.len() > hi {
                let want = if lo == hi { format!("{lo}") } else { format!("{lo} to {hi}") };
                return Err(Diag::new(format!("`{f}` takes {want} arguments, found {}", pos.len()), span)
                    .label("wrong number of arguments")
                    .help(format!("see `{f}` in docs/dsl.md")));
            }
            Ok(())
        };
        if self.in_grid && !matches!(f, "cdiv" | "minimum" | "maximum") {
            return Err(Diag::new(format!("`{f}` cannot be used in the grid"), func.span)
                .label("not allowed here")
                .help("grid extents are i32 expressions over dims and tunables, e.g. `cdiv(SQ, BM)`"));
        }
        let i32s = TileType::scalar(DType::I32);
        match f {
            "program_id" | "num_programs" => {
                nargs(1, 1)?;
                let a = self.const_eval(pos[0])?;
                if a < 0 || a as usize >= self.grid_rank {
                    return Err(Diag::new(format!("grid axis {a} does not exist: the grid has {} axes", self.grid_rank), pos[0].span)
                        .label("no such axis"));
                }
                let k = if f == "program_id" { OpKind::ProgramId(a as u8) } else { OpKind::NumPrograms(a as u8) };
                Ok(TV::Val(self.emit(k, vec![], Some(i32s), span)))
            }
            "arange" => {
                nargs(1, 1)?;
                let n = self.const_eval(pos[0])?;
                if n <= 0 {
                    return Err(Diag::new(format!("arange needs a positive length, found {n}"), pos[0].span).label("not positive"));
                }
                self.check_tile_size(&[n as usize], span)?;
                Ok(TV::Val(self.emit(OpKind::Arange, vec![], Some(TileType::new(DType::I32, vec![n as usize])), span)))
            }
            "zeros" | "full" => {
                if f == "zeros" { nargs(2, 2)? } else { nargs(3, 3)? }
                let shape = self.shape_arg(pos[0])?;
                let d = self.dtype_arg(pos[pos.len() - 1])?;
                let value = if f == "zeros" {
                    TV::Int(0)
                } else {
                    self.expr(pos[1])?
                };
                let s = match value {
                    TV::Int(i) if d.is_float() => Scalar::Float(i as f64),
                    TV::Int(i) if d == DType::Bool => Scalar::Bool(i != 0),
                    TV::Int(i) => match d.int_range() {
                        Some((lo, hi)) if i < lo || i > hi => {
                            return Err(Diag::new(format!("fill value {i} does not fit in {d} ({lo}..={hi})"), pos[1].span).label("out of range"))
                        }
                        _ => Scalar::Int(i),
                    },
                    TV::Float(x) if d.is_float() => Scalar::Float(x),
                    TV::Bool(b) if d == DType::Bool => Scalar::Bool(b),
                    TV::Val(v) => {
                        // full(shape, runtime_scalar, dt)
                        let t = self.ty(v).clone();
                        if t.dtype != d || !t.is_scalar() {
                            return Err(Diag::new(format!("fill value is {t}, expected a {d} scalar"), pos[1].span).label(format!("{t}")));
                        }
                        return Ok(TV::Val(self.broadcast_to(v, &shape, span)?));
                    }
                    _ => return Err(Diag::new(format!("fill value does not fit dtype {d}"), pos[1].span).label("wrong kind of literal")),
                };
                Ok(TV::Val(self.konst(s, TileType::new(d, shape), span)))
            }
            "cdiv" => {
                nargs(2, 2)?;
                let (a, b) = (self.expr(pos[0])?, self.expr(pos[1])?);
                if let (TV::Int(x), TV::Int(y)) = (a, b) {
                    if y > 0 {
                        let r = checked_cdiv(x, y).ok_or_else(|| const_overflow(span))?;
                        return Ok(TV::Int(r));
                    }
                }
                let (va, vb) = self.unify(a, b, pos[0].span, pos[1].span, span)?;
                let t = self.ty(va).clone();
                if !t.dtype.is_int() {
                    return Err(Diag::new(format!("cdiv needs integers, found {t}"), span).label(format!("{t}")));
                }
                let one = self.konst(Scalar::Int(1), t.clone(), span);
                let s = self.emit(OpKind::Binary(BinaryOp::Add), vec![va, vb], Some(t.clone()), span);
                let s = self.emit(OpKind::Binary(BinaryOp::Sub), vec![s, one], Some(t.clone()), span);
                Ok(TV::Val(self.emit(OpKind::Binary(BinaryOp::Div), vec![s, vb], Some(t), span)))
            }
            "minimum" | "maximum" | "pow" => {
                nargs(2, 2)?;
                let (a, b) = (self.expr(pos[0])?, self.expr(pos[1])?);
                match (f, a, b) {
                    ("minimum", TV::Int(x), TV::Int(y)) => return Ok(TV::Int(x.min(y))),
                    ("maximum", TV::Int(x), TV::Int(y)) => return Ok(TV::Int(x.max(y))),
                    _ => {}
                }
                let (va, vb) = self.unify(a, b, pos[0].span, pos[1].span, span)?;
                let t = self.ty(va).clone();
                let op = match f {
                    "minimum" => BinaryOp::Min,
                    "maximum" => BinaryOp::Max,
                    _ => BinaryOp::Pow,
                };
                if !(t.dtype.is_float() || (t.dtype.is_int() && op != BinaryOp::Pow)) {
                    return Err(Diag::new(format!("`{f}` is not defined on {}", t.dtype), span).label(format!("{t}")));
                }
                Ok(TV::Val(self.emit(OpKind::Binary(op), vec![va, vb], Some(t), span)))
            }
            "where" => {
                nargs(3, 3)?;
                let c = self.expr(pos[0])?;
                let c = self.materialize(c, Some(DType::Bool), pos[0].span)?;
                if self.ty(c).dtype != DType::Bool {
                    let t = self.ty(c).clone();
                    return Err(Diag::new(format!("`where` needs a bool condition, found {t}"), pos[0].span).label(format!("{t}")).help("compare to get a bool tile, e.g. `x > 0.0`"));
                }
                let (a, b) = (self.expr(pos[1])?, self.expr(pos[2])?);
                let (va, vb) = self.unify(a, b, pos[1].span, pos[2].span, span)?;
                let shape = broadcast_shapes(&self.ty(va).shape.clone(), &self.ty(c).shape.clone()).ok_or_else(|| {
                    Diag::new(format!("condition shape {} does not broadcast with {}", fmt_shape(&self.ty(c).shape), fmt_shape(&self.ty(va).shape)), pos[0].span).label("incompatible shape")
                })?;
                let c = self.broadcast_to(c, &shape, pos[0].span)?;
                let va = self.broadcast_to(va, &shape, pos[1].span)?;
                let vb = self.broadcast_to(vb, &shape, pos[2].span)?;
                let t = self.ty(va).clone();
                Ok(TV::Val(self.emit(OpKind::Select, vec![c, va, vb], Some(t), span)))
            }
            "exp" | "exp2" | "log" | "log2" | "sqrt" | "rsqrt" | "recip" | "abs" | "sigmoid" | "silu" | "tanh" | "sin" | "cos"
            | "floor" | "ceil" | "round" | "isnan" | "isinf" => {
                nargs(1, 1)?;
                let a = self.expr(pos[0])?;
                let dflt = if matches!(a, TV::Int(_)) && f != "abs" { Some(DType::F32) } else { None };
                let v = self.materialize(a, dflt, pos[0].span)?;
                let t = self.ty(v).clone();
                let u = UnaryOp::from_mnemonic(f).expect("builtin names match mnemonics");
                let ok = if u.float_only() { t.dtype.is_float() } else { t.dtype.is_float() || t.dtype.is_signed_int() };
                if !ok {
                    return Err(Diag::new(format!("`{f}` expects a float tile, found {t}"), pos[0].span)
                        .label(format!("{t}"))
                        .help(format!("convert first: `{f}(cast(x, f32))`")));
                }
                let rt = if matches!(u, UnaryOp::IsNan | UnaryOp::IsInf) { t.with_dtype(DType::Bool) } else { t };
                Ok(TV::Val(self.emit(OpKind::Unary(u), vec![v], Some(rt), span)))
            }
            "cast" => {
                nargs(2, 3)?;
                let to = self.dtype_arg(pos[1])?;
                let a = self.expr(pos[0])?;
                let v = self.materialize(a, None, pos[0].span)?;
                let from = self.ty(v).dtype;
                let rounding = if pos.len() == 3 {
                    let r = match &pos[2].kind {
                        ExprKind::Name(n) => Rounding::from_name(n),
                        _ => None,
                    };
                    r.ok_or_else(|| Diag::new("expected a rounding mode", pos[2].span).label("not a rounding mode").help("rounding modes: rne, rtz, floor, ceil"))?
                } else {
                    match opc_ir::default_rounding(from, to) {
                        Some(r) => r,
                        None => {
                            return Err(Diag::new(format!("cast from {from} to {to} needs an explicit rounding mode"), span)
                                .label("rounding not stated")
                                .help(format!("e.g. `cast({}, {to}, rne)`; modes: rne, rtz, floor, ceil", show_expr(pos[0]))))
                        }
                    }
                };
                let codes_ok = |d: DType, other: DType| !d.is_code() || other.is_float() || other.is_int() || other == d;
                if !codes_ok(from, to) || !codes_ok(to, from) {
                    return Err(Diag::new(format!("cannot cast {from} to {to}"), span).label("unsupported conversion").help("codes (e2m1, e8m0) convert to and from floats and ints"));
                }
                let t = self.ty(v).with_dtype(to);
                if from == to {
                    return Ok(TV::Val(v));
                }
                Ok(TV::Val(self.emit(OpKind::Cast(rounding), vec![v], Some(t), span)))
            }
            "bitcast" => {
                nargs(2, 2)?;
                let to = self.dtype_arg(pos[1])?;
                let a = self.expr(pos[0])?;
                let v = self.materialize(a, None, pos[0].span)?;
                let from = self.ty(v).dtype;
                if from.bits() != to.bits() || from == DType::Bool || to == DType::Bool {
                    return Err(Diag::new(format!("cannot bitcast {from} ({} bits) to {to} ({} bits)", from.bits(), to.bits()), span)
                        .label("sizes differ")
                        .help("bitcast reinterprets equal-width types: f32↔i32, u8↔i8↔e8m0, i4↔e2m1"));
                }
                let t = self.ty(v).with_dtype(to);
                Ok(TV::Val(self.emit(OpKind::Bitcast, vec![v], Some(t), span)))
            }
            "dot" => {
                nargs(2, 3)?;
                let a = self.expr(pos[0])?;
                let a = self.materialize(a, None, pos[0].span)?;
                let b = self.expr(pos[1])?;
                let b = self.materialize(b, None, pos[1].span)?;
                let (ta, tb) = (self.ty(a).clone(), self.ty(b).clone());
                if ta.rank() != 2 || tb.rank() != 2 {
                    let (bad, bt) = if ta.rank() != 2 { (pos[0], &ta) } else { (pos[1], &tb) };
                    return Err(Diag::new(format!("`dot` multiplies 2-D tiles, found {bt}"), bad.span).label(format!("rank {}", bt.rank())).help("reshape to 2-D first"));
                }
                if ta.dtype != tb.dtype {
                    return Err(Diag::new(format!("dtype mismatch in dot: `{}` and `{}`", ta.dtype, tb.dtype), span).label(format!("{ta} · {tb}")).help("cast both operands to one dtype"));
                }
                if ta.shape[1] != tb.shape[0] {
                    return Err(Diag::new(format!("dot shapes do not match: {} · {} (inner dims {} and {})", fmt_shape(&ta.shape), fmt_shape(&tb.shape), ta.shape[1], tb.shape[0]), span)
                        .label("inner dimensions differ")
                        .help("a [M, K] tile times a [K, N] tile; use `trans(b)` for b stored [N, K]"));
                }
                if ta.dtype == DType::Bool || ta.dtype.is_code() {
                    return Err(Diag::new(format!("`dot` is not defined on {}", ta.dtype), span).label("cast to a float or int type first"));
                }
                let acc_d = opc_ir::dot_acc_dtype(ta.dtype);
                let rt = TileType::new(acc_d, vec![ta.shape[0], tb.shape[1]]);
                let mut dargs = vec![a, b];
                if pos.len() == 3 {
                    let c = self.expr(pos[2])?;
                    let c = self.materialize(c, Some(acc_d), pos[2].span)?;
                    let c = self.broadcast_to(c, &rt.shape, pos[2].span)?;
                    if *self.ty(c) != rt {
                        let ct = self.ty(c).clone();
                        return Err(Diag::new(format!("accumulator is {ct}, expected {rt}"), pos[2].span).label(format!("{ct}")).help(format!("dot of {} inputs accumulates in {acc_d}", ta.dtype)));
                    }
                    dargs.push(c);
                }
                Ok(TV::Val(self.emit(OpKind::Dot, dargs, Some(rt), span)))
            }
            "trans" | "permute" => {
                if f == "trans" { nargs(1, 1)? } else { nargs(2, 2)? }
                let a = self.expr(pos[0])?;
                let v = self.materialize(a, None, pos[0].span)?;
                let t = self.ty(v).clone();
                let perm: Vec<u8> = if f == "trans" {
                    if t.rank() != 2 {
                        return Err(Diag::new(format!("`trans` needs a 2-D tile, found {t}"), pos[0].span).label(format!("rank {}", t.rank())).help("use `permute(x, [...])` for other ranks"));
                    }
                    vec![1, 0]
                } else {
                    let ExprKind::List(items) = &pos[1].kind else {
                        return Err(Diag::new("expected a permutation like `[1, 0, 2]`", pos[1].span).label("not a list"));
                    };
                    let p = items.iter().map(|i| self.const_eval(i)).collect::<R<Vec<i64>>>()?;
                    let mut sorted = p.clone();
                    sorted.sort();
                    if sorted != (0..t.rank() as i64).collect::<Vec<_>>() {
                        return Err(Diag::new(format!("{:?} is not a permutation of the {} axes", p, t.rank()), pos[1].span).label("bad permutation"));
                    }
                    p.iter().map(|&x| x as u8).collect()
                };
                let shape = perm.iter().map(|&i| t.shape[i as usize]).collect();
                Ok(TV::Val(self.emit(OpKind::Permute(perm), vec![v], Some(TileType::new(t.dtype, shape)), span)))
            }
            "reshape" | "broadcast" => {
                nargs(2, 2)?;
                let a = self.expr(pos[0])?;
                let v = self.materialize(a, None, pos[0].span)?;
                let shape = self.shape_arg(pos[1])?;
                let t = self.ty(v).clone();
                if f == "broadcast" {
                    return Ok(TV::Val(self.broadcast_to(v, &shape, span)?));
                }
                let n: usize = shape.iter().product();
                if n != t.numel() {
                    return Err(Diag::new(format!("cannot reshape {t} ({} elements) to {} ({n} elements)", t.numel(), fmt_shape(&shape)), span).label("element counts differ"));
                }
                Ok(TV::Val(self.emit(OpKind::Reshape, vec![v], Some(TileType::new(t.dtype, shape)), span)))
            }
            "sum" | "max" | "min" | "argmax" | "argmin" | "cumsum" => {
                nargs(1, 2)?;
                let a = self.expr(pos[0])?;
                let v = self.materialize(a, None, pos[0].span)?;
                let t = self.ty(v).clone();
                if t.rank() == 0 {
                    return Err(Diag::new(format!("`{f}` reduces a tile, found a scalar {t}"), pos[0].span).label("scalar").help(if f == "max" || f == "min" { format!("for two values use `{f}imum(a, b)`") } else { "reduce a tile".into() }));
                }
                let axis = if pos.len() == 2 {
                    self.axis_arg(pos[1], t.rank())?
                } else if t.rank() == 1 {
                    0
                } else {
                    return Err(Diag::new(format!("`{f}` of a rank-{} tile needs an axis", t.rank()), span).label("axis missing").help(format!("e.g. `{f}(x, 1)`")));
                };
                if !(t.dtype.is_float() || t.dtype.is_int()) {
                    return Err(Diag::new(format!("`{f}` is not defined on {}", t.dtype), pos[0].span).label(format!("{t}")));
                }
                if f == "cumsum" {
                    return Ok(TV::Val(self.emit(OpKind::Scan { op: ScanOp::Cumsum, axis }, vec![v], Some(t), span)));
                }
                let op = ReduceOp::from_name(f).expect("reduce builtin");
                let mut shape = t.shape.clone();
                shape.remove(axis as usize);
                let d = if matches!(op, ReduceOp::Argmax | ReduceOp::Argmin) { DType::I32 } else { t.dtype };
                Ok(TV::Val(self.emit(OpKind::Reduce { op, axis }, vec![v], Some(TileType::new(d, shape)), span)))
            }
            "load" => {
                nargs(1, 1)?;
                let (tensor, idx, shape) = self.tensor_access(pos[0], false)?;
                let dtype = self.k.tensor_dtype(tensor).unwrap();
                let mut largs = idx;
                let mut has_mask = false;
                let mut has_other = false;
                if let Some(m) = named.iter().find(|a| a.name.as_ref().unwrap().name == "mask") {
                    largs.push(self.mask_arg(&m.value, &shape)?);
                    has_mask = true;
                }
                if let Some(o) = named.iter().find(|a| a.name.as_ref().unwrap().name == "other") {
                    let tv = self.expr(&o.value)?;
                    let v = self.materialize(tv, Some(dtype), o.value.span)?;
                    let t = self.ty(v).clone();
                    if t.dtype != dtype {
                        return Err(Diag::new(format!("`other` is {t} but the tensor holds {dtype}"), o.value.span).label(format!("{t}")).help(format!("cast it: `cast(..., {dtype})`")));
                    }
                    let v = if t.is_scalar() { v } else { self.broadcast_to(v, &shape, o.value.span)? };
                    largs.push(v);
                    has_other = true;
                }
                let rt = TileType::new(dtype, shape);
                Ok(TV::Val(self.emit(OpKind::Load { tensor, has_mask, has_other }, largs, Some(rt), span)))
            }
            "store" | "atomic_add" => {
                nargs(2, 2)?;
                let (tensor, idx, shape) = self.tensor_access(pos[0], true)?;
                let dtype = self.k.tensor_dtype(tensor).unwrap();
                if f == "atomic_add" && !matches!(dtype, DType::F32 | DType::I32) {
                    return Err(Diag::new(format!("atomic_add needs an f32 or i32 tensor, `{}` holds {dtype}", self.k.params[tensor].name), pos[0].span).label("unsupported dtype"));
                }
                let tv = self.expr(pos[1])?;
                let v = self.materialize(tv, Some(dtype), pos[1].span)?;
                let t = self.ty(v).clone();
                if t.dtype != dtype {
                    return Err(Diag::new(format!("storing {t} into `{}`, which holds {dtype}", self.k.params[tensor].name), pos[1].span)
                        .label(format!("{t}"))
                        .help(format!("cast the value: `cast({}, {dtype})`", show_expr(pos[1]))));
                }
                let v = self.broadcast_to(v, &shape, pos[1].span)?;
                let mut sargs = idx;
                sargs.push(v);
                let mut has_mask = false;
                if let Some(m) = named.iter().find(|a| a.name.as_ref().unwrap().name == "mask") {
                    sargs.push(self.mask_arg(&m.value, &shape)?);
                    has_mask = true;
                }
                let k = if f == "store" { OpKind::Store { tensor, has_mask } } else { OpKind::AtomicAdd { tensor, has_mask } };
                self.emit(k, sargs, None, span);
                Ok(TV::Val(ValueId(u32::MAX)))
            }
            _ => Err(self.unknown_function(func)),
        }
    }

    fn unknown_function(&self, func: &Ident) -> Diag {
        let best = BUILTINS.iter().filter(|b| edit_distance(b, &func.name) <= 2).min_by_key(|b| edit_distance(b, &func.name));
        let d = Diag::new(format!("unknown function `{}`", func.name), func.span).label("not a builtin");
        match best {
            Some(b) => d.help(format!("did you mean `{b}`?")),
            None => d.help("see the builtin table in docs/dsl.md"),
        }
    }

    fn mask_arg(&mut self, e: &Expr, shape: &[usize]) -> R<ValueId> {
        let tv = self.expr(e)?;
        let m = self.materialize(tv, Some(DType::Bool), e.span)?;
        let t = self.ty(m).clone();
        if t.dtype != DType::Bool {
            return Err(Diag::new(format!("a mask must be bool, found {t}"), e.span).label(format!("{t}")).help("compare to get a bool tile, e.g. `rows < M`"));
        }
        self.broadcast_to(m, shape, e.span)
    }

    /// `T[i0, i1, ...]` inside load/store: the tensor, its i32 index values and the result shape.
    fn tensor_access(&mut self, e: &Expr, for_store: bool) -> R<(usize, Vec<ValueId>, Vec<usize>)> {
        let ExprKind::Index { base, items } = &e.kind else {
            return Err(Diag::new("expected a tensor access like `t[i, j]`", e.span).label("not a tensor access"));
        };
        let ExprKind::Name(n) = &base.kind else {
            return Err(Diag::new("expected a tensor name", base.span).label("not a tensor"));
        };
        let tensor = match self.lookup(n) {
            Some(Binding::Tensor(p)) => p,
            None => return Err(self.unknown_name(n, base.span)),
            Some(_) => return Err(Diag::new(format!("`{n}` is not a tensor parameter"), base.span).label("not a tensor").help("load and store go through tensor parameters")),
        };
        let ParamKind::Tensor { dims, output, .. } = &self.k.params[tensor].kind else { unreachable!() };
        let (rank, output) = (dims.len(), *output);
        if for_store && !output {
            return Err(Diag::new(format!("cannot store to input tensor `{n}`"), base.span)
                .label("declared as an input")
                .help(format!("declare it as an output: `{n}: out ...`")));
        }
        if items.len() != rank {
            return Err(Diag::new(format!("tensor `{n}` has {rank} dims but is indexed with {}", items.len()), e.span)
                .label(if items.len() == 1 { "1 index".to_string() } else { format!("{} indices", items.len()) })
                .help("give one index (scalar or i32 tile) per dim"));
        }
        let mut idx = vec![];
        let mut shape = vec![];
        for it in items {
            let ie = match it {
                IndexItem::Expr(ie) => ie,
                IndexItem::Full(s) | IndexItem::NewAxis(s) => {
                    return Err(Diag::new("tensor indices must be values", *s).label("`:` / `None` is for tiles").help("index a whole dim with `arange(D)`"))
                }
            };
            let tv = self.expr(ie)?;
            let v = self.materialize(tv, Some(DType::I32), ie.span)?;
            let t = self.ty(v).clone();
            if t.dtype != DType::I32 {
                return Err(Diag::new(format!("indices must be i32, found {t}"), ie.span).label(format!("{t}")).help(format!("cast it: `cast({}, i32)`", show_expr(ie))));
            }
            shape.extend(t.shape.iter().copied());
            idx.push(v);
        }
        self.check_tile_size(&shape, e.span)?;
        Ok((tensor, idx, shape))
    }
}

fn fold_literals(op: BinOp, a: TV, b: TV) -> Option<TV> {
    use TV::*;
    Some(match (a, b) {
        (Int(x), Int(y)) => match op {
            BinOp::Add => Int(x.checked_add(y)?),
            BinOp::Sub => Int(x.checked_sub(y)?),
            BinOp::Mul => Int(x.checked_mul(y)?),
            BinOp::Div if y != 0 => Int(x.checked_div(y)?),
            BinOp::Rem if y != 0 => Int(x.checked_rem(y)?),
            _ => return None,
        },
        (Float(_), Float(_)) | (Int(_), Float(_)) | (Float(_), Int(_)) => {
            let f = |t: TV| match t {
                Int(i) => i as f64,
                Float(x) => x,
                _ => unreachable!(),
            };
            let (x, y) = (f(a), f(b));
            match op {
                BinOp::Add => Float(x + y),
                BinOp::Sub => Float(x - y),
                BinOp::Mul => Float(x * y),
                BinOp::Div => Float(x / y),
                _ => return None,
            }
        }
        _ => return None,
    })
}

/// Builtins called for their effect on memory; they have no result value.
fn is_effect(f: &str) -> bool {
    matches!(f, "store" | "atomic_add")
}

/// `ceil(x / y)` for `y > 0`, `None` on overflow.
fn checked_cdiv(x: i64, y: i64) -> Option<i64> {
    Some(x.checked_add(y - 1)?.div_euclid(y))
}

fn const_overflow(span: Span) -> Diag {
    Diag::new("integer overflow in a compile-time value", span)
        .label("overflows i64")
        .help("compile-time sizes and constants must fit in 64-bit integers")
}

/// [`DimExpr::eval`] with overflow checks (`None` when unknown, inexact or out of range).
fn eval_dim_checked(d: &DimExpr, sym: &dyn Fn(SymId) -> Option<i64>) -> Option<i64> {
    Some(match d {
        DimExpr::Sym(s) => sym(*s)?,
        DimExpr::Const(c) => *c,
        DimExpr::Add(a, b) => eval_dim_checked(a, sym)?.checked_add(eval_dim_checked(b, sym)?)?,
        DimExpr::Sub(a, b) => eval_dim_checked(a, sym)?.checked_sub(eval_dim_checked(b, sym)?)?,
        DimExpr::Mul(a, b) => eval_dim_checked(a, sym)?.checked_mul(eval_dim_checked(b, sym)?)?,
        DimExpr::Div(a, b) => {
            let (a, b) = (eval_dim_checked(a, sym)?, eval_dim_checked(b, sym)?);
            if b == 0 || a.checked_rem(b)? != 0 {
                return None;
            }
            a.checked_div(b)?
        }
    })
}

fn broadcastable(from: &[usize], to: &[usize]) -> bool {
    from.len() <= to.len() && from.iter().rev().zip(to.iter().rev()).all(|(&f, &t)| f == t || f == 1)
}

fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let x = if i < n - a.len() { 1 } else { a[i - (n - a.len())] };
        let y = if i < n - b.len() { 1 } else { b[i - (n - b.len())] };
        out[i] = if x == y || y == 1 {
            x
        } else if x == 1 {
            y
        } else {
            return None;
        };
    }
    Some(out)
}

fn fmt_shape(s: &[usize]) -> String {
    format!("[{}]", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "))
}

fn join(v: &[i64]) -> String {
    v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")
}

fn line_col_of(src: &str, off: usize) -> (usize, usize) {
    crate::diag::line_col(src, off)
}

fn mentions(e: &Expr, name: &str) -> bool {
    match &e.kind {
        ExprKind::Name(n) => n == name,
        ExprKind::Binary(_, a, b) => mentions(a, name) || mentions(b, name),
        ExprKind::Unary(_, a) => mentions(a, name),
        ExprKind::Call { args, .. } => args.iter().any(|a| mentions(&a.value, name)),
        _ => false,
    }
}

/// Source-like rendering of an expression for messages and suggestions.
pub fn show_expr(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Int(v) => v.to_string(),
        ExprKind::Float(v) => format!("{v:?}"),
        ExprKind::Bool(b) => b.to_string(),
        ExprKind::Name(n) => n.clone(),
        ExprKind::Unary(op, a) => format!("{}{}", if *op == UnOp::Neg { "-" } else { "!" }, show_expr(a)),
        ExprKind::Binary(op, a, b) => format!("{} {} {}", show_expr(a), op.symbol(), show_expr(b)),
        ExprKind::Call { func, args } => format!(
            "{}({})",
            func.name,
            args.iter()
                .map(|a| match &a.name {
                    Some(n) => format!("{}: {}", n.name, show_expr(&a.value)),
                    None => show_expr(&a.value),
                })
                .collect::<Vec<_>>()
                .join(", ")
        ),
        ExprKind::Index { base, items } => format!(
            "{}[{}]",
            show_expr(base),
            items
                .iter()
                .map(|i| match i {
                    IndexItem::Expr(e) => show_expr(e),
                    IndexItem::Full(_) => ":".into(),
                    IndexItem::NewAxis(_) => "None".into(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        ),
        ExprKind::List(items) => format!("[{}]", items.iter().map(show_expr).collect::<Vec<_>>().join(", ")),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + usize::from(a[i - 1] != b[j - 1]));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Type variables, tunables and parameters share one namespace: report the second declaration
/// of a name (in source order, so "first" and "second" mean what they say).
pub fn check_duplicates(src: &str, def: &KernelDef) -> R<()> {
    let mut decls: Vec<(&Ident, &str)> = def.tyvars.iter().map(|(v, _)| (v, "a type variable")).collect();
    decls.extend(def.tunables.iter().map(|t| (&t.name, "a tunable")));
    decls.extend(def.params.iter().map(|p| (&p.name, "a parameter")));
    decls.sort_by_key(|(id, _)| id.span.start);
    let mut seen: HashMap<&str, Span> = HashMap::new();
    for (id, what) in decls {
        if let Some(prev) = seen.get(id.name.as_str()) {
            let (line, col) = line_col_of(src, prev.start);
            return Err(Diag::new(format!("`{}` is declared twice", id.name), id.span)
                .label(format!("second declaration, as {what}"))
                .help(format!("first declared at {line}:{col}; rename one of them")));
        }
        seen.insert(&id.name, id.span);
    }
    Ok(())
}

/// Resolve an [`crate::Instance`] against a kernel's declarations: defaults for what is left out,
/// errors for unknown names and values outside declared sets.
pub fn choices(def: &KernelDef, inst: &crate::Instance, representative: bool) -> R<Choices> {
    let mut dtypes = HashMap::new();
    for (v, set) in &def.tyvars {
        let given = inst.dtypes.iter().find(|(n, _)| *n == v.name).map(|(_, d)| *d);
        let d = match given {
            Some(d) => {
                if !set.iter().any(|s| s.name == d.name()) {
                    return Err(Diag::new(format!("`{}` cannot be {d}", v.name), v.span)
                        .label(format!("allowed: {}", set.iter().map(|s| s.name.clone()).collect::<Vec<_>>().join(", ")))
                        .help("instantiate the kernel with one of the declared dtypes"));
                }
                d
            }
            None => resolve_dtype(&set[0], &HashMap::new())?,
        };
        dtypes.insert(v.name.clone(), d);
    }
    for (n, _) in &inst.dtypes {
        if !def.tyvars.iter().any(|(v, _)| v.name == *n) {
            return Err(Diag::new(format!("kernel `{}` has no type variable `{n}`", def.name.name), def.name.span).label("instantiated here"));
        }
    }
    let mut tunables = HashMap::new();
    for t in &def.tunables {
        let given = inst.tunables.iter().find(|(n, _)| *n == t.name.name).map(|(_, v)| *v);
        let v = given.unwrap_or(t.default.0);
        if given.is_none() && !t.space.iter().any(|(s, _)| *s == v) {
            return Err(Diag::new(format!("default {v} of tunable `{}` is not in its search space", t.name.name), t.default.1)
                .label("not in the space")
                .help(format!("pick one of {{{}}}", t.space.iter().map(|s| s.0.to_string()).collect::<Vec<_>>().join(", "))));
        }
        if !t.space.iter().any(|(s, _)| *s == v) {
            return Err(Diag::new(format!("tunable `{}` = {v} is outside its search space", t.name.name), t.span)
                .label("declared here")
                .help(format!("choose one of {{{}}}", t.space.iter().map(|s| s.0.to_string()).collect::<Vec<_>>().join(", "))));
        }
        tunables.insert(t.name.name.clone(), v);
    }
    for (n, _) in &inst.tunables {
        if !def.tunables.iter().any(|t| t.name.name == *n) {
            return Err(Diag::new(format!("kernel `{}` has no tunable `{n}`", def.name.name), def.name.span).label("instantiated here"));
        }
    }
    let mut consts = HashMap::new();
    let const_defs: Vec<&Ident> = def.constraints.iter().filter_map(|c| if let ConstraintDef::Const(i) = c { Some(i) } else { None }).collect();
    for id in &const_defs {
        let given = inst.consts.iter().find(|(n, _)| *n == id.name).map(|(_, v)| *v);
        let v = match given {
            Some(v) => v,
            None if representative => representative_const(def, &id.name, &tunables),
            None => {
                return Err(Diag::new(format!("const dim `{}` needs a value to compile this kernel", id.name), id.span)
                    .label("declared const here")
                    .help(format!("instantiate with a value, e.g. `--const {}=64`", id.name)))
            }
        };
        if v <= 0 {
            return Err(Diag::new(format!("const dim `{}` must be positive, got {v}", id.name), id.span).label("declared here"));
        }
        consts.insert(id.name.clone(), v);
    }
    for (n, _) in &inst.consts {
        if !const_defs.iter().any(|i| i.name == *n) {
            return Err(Diag::new(format!("kernel `{}` has no const dim `{n}`", def.name.name), def.name.span)
                .label("instantiated here")
                .help("declare it with `where const NAME`"));
        }
    }
    Ok(Choices { dtypes, consts, tunables })
}

/// A value for a const dim when checking without an instantiation: the first allowed value of
/// an `in` set, else the smallest multiple of 16 that satisfies its divisibility constraints.
fn representative_const(def: &KernelDef, name: &str, tunables: &HashMap<String, i64>) -> i64 {
    for c in &def.constraints {
        if let ConstraintDef::In(e, vals) = c {
            if matches!(&e.kind, ExprKind::Name(n) if n == name) {
                return vals[0].0;
            }
        }
    }
    let divisors: Vec<i64> = def
        .constraints
        .iter()
        .filter_map(|c| match c {
            ConstraintDef::MultipleOf(a, b) if matches!(&a.kind, ExprKind::Name(n) if n == name) => match &b.kind {
                ExprKind::Int(v) => Some(*v),
                ExprKind::Name(t) => tunables.get(t).copied(),
                _ => None,
            },
            _ => None,
        })
        .collect();
    (1..=64).map(|m| 16 * m).find(|v| divisors.iter().all(|d| *d > 0 && v % d == 0)).unwrap_or(64)
}

/// Kernel names in declaration order with their definitions (for lookups).
pub fn kernel_index(m: &Module) -> BTreeMap<String, usize> {
    m.kernels.iter().enumerate().map(|(i, k)| (k.name.name.clone(), i)).collect()
}
