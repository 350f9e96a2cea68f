//! Textual form of the tile IR: an MLIR-like rendering that [`crate::parser::parse_kernel`]
//! reads back exactly (`parse_kernel(&print_kernel(&k)) == Ok(k)` for every kernel that passes
//! [`crate::verify::verify`]).
//!
//! ```text
//! kernel @matmul
//!   param @a: global f32[M, K]
//!   param @c: out global f32[M, N]
//!   param @alpha: f32
//!   dim @M
//!   dim @D const = 64
//!   constraint @N % 32 == 0
//!   constraint @D in {64, 128}
//!   constraint @M in [1, 4096]            (also `@M >= 1`, `@M <= 4096`, `_` for an open end)
//!   tunable @BM level1 in {16, 32, 64} = 64 loc(3:12)
//! grid {
//!   %0 = dim @M : i32
//!   %1 = const 64 : i32
//!   %2 = div %0, %1 : i32
//!   yield %2
//! }
//! body {
//!   %3 = program_id 0 : i32 loc(4:15)
//!   %4 = arange : i32[64]
//!   %5 = load @a[%3, %4] mask %6 other %7 : f32[64]
//!   %8 = cast rtz %5 : i32[64]
//!   %9 = reduce sum %5 axis 0 : f32
//!   %10 = permute %11 perm [1, 0] : f32[32, 64]
//!   %12, %13 = for %14 = %lo to %hi step %st iter(%15 = %x, %16 = %y) : f32[64], f32[64, 64] {
//!     yield %17, %18
//!   }
//!   %19 = if %c : f32 {
//!     yield %20
//!   } else {
//!     yield %21
//!   }
//!   store @c[%3, %4], %8 mask %6
//! }
//! values {
//!   %22: f16[8]
//! }
//! ```
//!
//! Conventions:
//! - A value is `%N` with `N = ValueId.0`: the numbering is kept as is, so print → parse is the
//!   identity (definitions need not be dense or in order).
//! - Result types follow `:`, one per result. The region arguments of `for` are typed implicitly:
//!   the induction variable is an `i32` scalar and each carried value has its result's type
//!   (exactly what the verifier demands).
//! - Ids that no op result or block argument defines still have a type in `Kernel::values`; they
//!   are listed in a trailing `values { %N: TYPE }` section (printed only when there are any).
//! - Ops print as `RESULTS = MNEMONIC [ATTRS] OPERANDS [KEYWORD ATTRS] : TYPES [loc(L:C)] [REGIONS]`.
//!   Every op but `load`/`store`/`atomic_add`/`for` takes a plain operand list, so a wrong
//!   operand count still prints faithfully and the verifier reports it.
//! - Names are `@name`, or `@"..."` (Rust string escapes) when not an identifier. Dims in tensor
//!   shapes are written bare (`f32[M, K / 32]`), elsewhere with `@`. `//` starts a comment.
//! - Floats print in the shortest form that parses back to the same bits: `1.0`, `1e-7`, `-0.0`,
//!   `inf`, `-inf`, `nan`, and `nan(0x...)` (the f64 bits) for any NaN but the canonical one.
//! - Parts a malformed kernel lacks (a missing operand, an unknown name or type) print as `<?>`:
//!   the printer never panics, but such text does not parse back.

use crate::ir::*;

/// Print a kernel in the textual form that [`crate::parser::parse_kernel`] reads back.
pub fn print_kernel(kernel: &Kernel) -> String {
    let mut p = Printer { k: kernel, out: String::new() };
    p.header();
    p.named_block("grid", &kernel.grid);
    p.named_block("body", &kernel.body);
    p.undefined_values();
    p.out
}

/// Print one op (with its regions) at indentation 0; names and types come from `kernel`.
pub fn print_op(kernel: &Kernel, op: &Op) -> String {
    let mut p = Printer { k: kernel, out: String::new() };
    p.op(op, 0);
    p.out
}

/// Print the ops of a block, one per line, at indentation 0 (block arguments are not shown).
pub fn print_block(kernel: &Kernel, block: &Block) -> String {
    let mut p = Printer { k: kernel, out: String::new() };
    p.ops(block, 0);
    p.out
}

/// A dim expression as written in tensor shapes (`K / 32`, `(A + B) * 2`).
pub fn print_dim_expr(kernel: &Kernel, e: &DimExpr) -> String {
    Printer { k: kernel, out: String::new() }.dim_expr(e, 0, false)
}

/// A float in the shortest text that parses back to the same bits (see the module docs).
pub fn print_f64(x: f64) -> String {
    if x.is_nan() {
        if x.to_bits() == f64::NAN.to_bits() {
            "nan".into()
        } else {
            format!("nan(0x{:016x})", x.to_bits())
        }
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        format!("{x:?}")
    }
}

/// A literal scalar: `3`, `1.5`, `true`.
pub fn print_scalar(s: &Scalar) -> String {
    match s {
        Scalar::Int(i) => i.to_string(),
        Scalar::Float(f) => print_f64(*f),
        Scalar::Bool(b) => b.to_string(),
    }
}

/// `@name`, quoted when `name` is not an identifier.
pub fn print_name(name: &str) -> String {
    if is_ident(name) {
        format!("@{name}")
    } else {
        format!("@{name:?}")
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`: names that print without quotes.
pub(crate) fn is_ident(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn join<T>(items: impl IntoIterator<Item = T>, f: impl Fn(T) -> String) -> String {
    items.into_iter().map(f).collect::<Vec<_>>().join(", ")
}

fn val(v: Option<&ValueId>) -> String {
    v.map_or_else(|| "<?>".into(), |v| format!("%{}", v.0))
}

fn vals(vs: &[ValueId]) -> String {
    join(vs, |v| format!("%{}", v.0))
}

struct Printer<'a> {
    k: &'a Kernel,
    out: String,
}

impl Printer<'_> {
    fn header(&mut self) {
        let k = self.k;
        self.out += &format!("kernel {}\n", print_name(&k.name));
        for p in &k.params {
            let ty = match &p.kind {
                ParamKind::Tensor { dtype, dims, output } => {
                    let out = if *output { "out " } else { "" };
                    format!("{out}global {dtype}[{}]", join(dims, |d| self.dim_expr(d, 0, false)))
                }
                ParamKind::Scalar { dtype } => dtype.to_string(),
            };
            self.out += &format!("  param {}: {ty}\n", print_name(&p.name));
        }
        for d in &k.dims {
            let konst = if d.konst { " const" } else { "" };
            let value = d.value.map_or(String::new(), |v| format!(" = {v}"));
            self.out += &format!("  dim {}{konst}{value}\n", print_name(&d.name));
        }
        for c in &k.constraints {
            let text = match c {
                Constraint::OneOf(e, vs) => format!("{} in {{{}}}", self.dim_expr(e, 0, true), join(vs, |v| v.to_string())),
                Constraint::MultipleOf(a, b) => format!("{} % {} == 0", self.dim_expr(a, 3, true), self.dim_expr(b, 3, true)),
                Constraint::Range(e, Some(lo), None) => format!("{} >= {lo}", self.dim_expr(e, 0, true)),
                Constraint::Range(e, None, Some(hi)) => format!("{} <= {hi}", self.dim_expr(e, 0, true)),
                Constraint::Range(e, lo, hi) => {
                    let end = |x: &Option<i64>| x.map_or("_".into(), |x| x.to_string());
                    format!("{} in [{}, {}]", self.dim_expr(e, 0, true), end(lo), end(hi))
                }
            };
            self.out += &format!("  constraint {text}\n");
        }
        for t in &k.tunables {
            let loc = t.loc.map(|l| format!(" loc({}:{})", l.line, l.col)).unwrap_or_default();
            self.out += &format!(
                "  tunable {} level{} in {{{}}} = {}{loc}\n",
                print_name(&t.name),
                t.level,
                join(&t.space, |v| v.to_string()),
                t.value
            );
        }
    }

    /// Precedence-aware printing: `+ -` bind looser than `* /`, both left-associative, so a
    /// right operand of equal precedence gets parentheses and the tree shape round-trips.
    fn dim_expr(&self, e: &DimExpr, min_prec: u8, at: bool) -> String {
        let (prec, op, a, b) = match e {
            DimExpr::Sym(s) => {
                return match self.k.dims.get(s.0 as usize) {
                    Some(d) if at || !is_ident(&d.name) => print_name(&d.name),
                    Some(d) => d.name.clone(),
                    None => "<?>".into(),
                }
            }
            DimExpr::Const(c) => return c.to_string(),
            DimExpr::Add(a, b) => (1, "+", a, b),
            DimExpr::Sub(a, b) => (1, "-", a, b),
            DimExpr::Mul(a, b) => (2, "*", a, b),
            DimExpr::Div(a, b) => (2, "/", a, b),
        };
        let s = format!("{} {op} {}", self.dim_expr(a, prec, at), self.dim_expr(b, prec + 1, at));
        if prec < min_prec {
            format!("({s})")
        } else {
            s
        }
    }

    fn named_block(&mut self, name: &str, b: &Block) {
        self.out += name;
        if !b.args.is_empty() {
            let args = join(&b.args, |v| format!("%{}: {}", v.0, self.ty(*v)));
            self.out += &format!("({args})");
        }
        self.out += " {\n";
        self.ops(b, 2);
        self.out += "}\n";
    }

    fn ops(&mut self, b: &Block, indent: usize) {
        for op in &b.ops {
            self.op(op, indent);
        }
    }

    fn ty(&self, v: ValueId) -> String {
        self.k.values.get(v.0 as usize).map_or_else(|| "<?>".into(), |t| t.to_string())
    }

    fn param_name(&self, p: usize) -> String {
        self.k.params.get(p).map_or_else(|| "<?>".into(), |p| print_name(&p.name))
    }

    fn op(&mut self, op: &Op, indent: usize) {
        let pad = " ".repeat(indent);
        let mut s = pad.clone();
        if !op.results.is_empty() {
            s += &format!("{} = ", vals(&op.results));
        }
        s += &self.op_text(op);
        if !op.results.is_empty() {
            s += &format!(" : {}", join(&op.results, |v| self.ty(*v)));
        }
        if let Some(l) = op.loc {
            s += &format!(" loc({}:{})", l.line, l.col);
        }
        for (i, r) in op.regions.iter().enumerate() {
            s += if i == 0 { " {\n" } else { " else {\n" };
            self.out += &s;
            self.ops(r, indent + 2);
            s = format!("{pad}}}");
        }
        self.out += &s;
        self.out += "\n";
    }

    /// Mnemonic, attributes and operands (everything between `=` and `:`).
    fn op_text(&self, op: &Op) -> String {
        let a = |i: usize| val(op.args.get(i));
        let with_args = |head: String| if op.args.is_empty() { head } else { format!("{head} {}", vals(&op.args)) };
        match &op.kind {
            OpKind::Const(s) => with_args(format!("const {}", print_scalar(s))),
            OpKind::ProgramId(x) | OpKind::NumPrograms(x) => with_args(format!("{} {x}", op.kind.mnemonic())),
            OpKind::Dim(s) => {
                let name = self.k.dims.get(s.0 as usize).map_or_else(|| "<?>".into(), |d| print_name(&d.name));
                with_args(format!("dim {name}"))
            }
            OpKind::ScalarParam(p) => with_args(format!("param {}", self.param_name(*p))),
            OpKind::Cmp(p) => with_args(format!("cmp {}", p.name())),
            OpKind::Cast(r) => with_args(format!("cast {}", r.name())),
            OpKind::ExpandDims(axis) => format!("{} axis {axis}", with_args("expand_dims".into())),
            OpKind::Permute(perm) => format!("{} perm [{}]", with_args("permute".into()), join(perm, |p| p.to_string())),
            OpKind::Reduce { op: r, axis } => format!("{} axis {axis}", with_args(format!("reduce {}", r.name()))),
            OpKind::Scan { op: s, axis } => format!("{} axis {axis}", with_args(format!("scan {}", s.name()))),
            OpKind::Load { tensor, has_mask, has_other } => {
                let n = op.args.len().saturating_sub(*has_mask as usize + *has_other as usize);
                let mut s = format!("load {}[{}]", self.param_name(*tensor), vals(&op.args[..n]));
                if *has_mask {
                    s += &format!(" mask {}", a(n));
                }
                if *has_other {
                    s += &format!(" other {}", a(n + *has_mask as usize));
                }
                s
            }
            OpKind::Store { tensor, has_mask } | OpKind::AtomicAdd { tensor, has_mask } => {
                let n = op.args.len().saturating_sub(1 + *has_mask as usize);
                let mut s = format!("{} {}[{}], {}", op.kind.mnemonic(), self.param_name(*tensor), vals(&op.args[..n]), a(n));
                if *has_mask {
                    s += &format!(" mask {}", a(n + 1));
                }
                s
            }
            OpKind::For => {
                let rargs: &[ValueId] = op.regions.first().map_or(&[], |r| &r.args);
                let mut s = format!("for {} = {} to {} step {}", val(rargs.first()), a(0), a(1), a(2));
                let inits = op.args.get(3..).unwrap_or(&[]);
                let carried = rargs.get(1..).unwrap_or(&[]);
                let n = inits.len().max(carried.len());
                if n > 0 {
                    s += &format!(" iter({})", join(0..n, |i| format!("{} = {}", val(carried.get(i)), val(inits.get(i)))));
                }
                s
            }
            OpKind::Arange
            | OpKind::Unary(_)
            | OpKind::Binary(_)
            | OpKind::Select
            | OpKind::Bitcast
            | OpKind::Broadcast
            | OpKind::Reshape
            | OpKind::Dot
            | OpKind::If
            | OpKind::Yield => with_args(op.kind.mnemonic().into()),
        }
    }

    /// The `values` section: ids with a type that no op result or block argument defines.
    fn undefined_values(&mut self) {
        let mut defined = vec![false; self.k.values.len()];
        let mut mark = |vs: &[ValueId]| {
            for v in vs {
                if let Some(d) = defined.get_mut(v.0 as usize) {
                    *d = true;
                }
            }
        };
        for b in [&self.k.grid, &self.k.body] {
            mark(&b.args);
            walk_ops(b, &mut |op| {
                mark(&op.results);
                for r in &op.regions {
                    mark(&r.args);
                }
            });
        }
        let rest: Vec<usize> = (0..defined.len()).filter(|&i| !defined[i]).collect();
        if rest.is_empty() {
            return;
        }
        self.out += "values {\n";
        for i in rest {
            self.out += &format!("  %{i}: {}\n", self.k.values[i]);
        }
        self.out += "}\n";
    }
}
