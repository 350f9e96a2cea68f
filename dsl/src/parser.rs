//! Recursive-descent parser: tokens → [`ast::Module`]. Stops at the first syntax error.

use crate::ast::*;
use crate::diag::{Diag, Span};
use crate::lexer::{Tok, Token};

pub fn parse(tokens: Vec<Token>) -> Result<Module, Diag> {
    let mut p = Parser { toks: tokens, pos: 0, depth: 0 };
    let mut kernels = Vec::new();
    while !p.at_eof() {
        kernels.push(p.kernel()?);
    }
    Ok(Module { kernels })
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
    /// Nesting of the syntax tree being built (sub-expressions, operator chains, blocks); bounded
    /// by [`MAX_DEPTH`] so that parsing and the recursive passes over the tree cannot overflow
    /// the stack.
    depth: usize,
}

/// Deepest nesting accepted. Real kernels stay far below (about 10). At 64, parsing and
/// lowering the deepest tree of any shape fits in a 512 KiB stack (optimized build), a quarter of
/// a test thread's 2 MiB; see `deep_nesting_is_an_error_not_a_stack_overflow` in
/// `tests/no_panic.rs`.
pub const MAX_DEPTH: usize = 64;

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("`{s}`"),
        Tok::Int(v) => format!("integer `{v}`"),
        Tok::Float(v) => format!("float `{v}`"),
        Tok::Punct(p) => format!("`{p}`"),
        Tok::Eof => "end of file".to_string(),
    }
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }
    fn peek_at(&self, k: usize) -> &Tok {
        &self.toks[(self.pos + k).min(self.toks.len() - 1)].tok
    }
    fn at_eof(&self) -> bool {
        self.peek().tok == Tok::Eof
    }
    fn bump(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }
    fn is_punct(&self, p: &str) -> bool {
        matches!(&self.peek().tok, Tok::Punct(q) if *q == p)
    }
    fn is_kw(&self, kw: &str) -> bool {
        matches!(&self.peek().tok, Tok::Ident(s) if s == kw)
    }
    fn eat_punct(&mut self, p: &str) -> bool {
        if self.is_punct(p) {
            self.bump();
            true
        } else {
            false
        }
    }
    fn eat_kw(&mut self, kw: &str) -> bool {
        if self.is_kw(kw) {
            self.bump();
            true
        } else {
            false
        }
    }
    fn enter(&mut self) -> Result<(), Diag> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Diag::new("nested too deeply", self.peek().span)
                .label(format!("more than {MAX_DEPTH} levels of nesting"))
                .help("split the expression or block with `let` bindings"));
        }
        Ok(())
    }

    fn unexpected(&self, what: &str) -> Diag {
        let t = self.peek();
        let mut span = t.span;
        if t.tok == Tok::Eof && self.pos > 0 {
            // Nothing to underline at the end of the file: point just after the last token.
            let prev = self.toks[self.pos - 1].span;
            span = Span::new(prev.start + prev.len, 0);
        }
        Diag::new(format!("expected {what}, found {}", describe(&t.tok)), span).label(format!("expected {what}"))
    }
    fn expect_punct(&mut self, p: &str) -> Result<Span, Diag> {
        if self.is_punct(p) {
            Ok(self.bump().span)
        } else {
            let mut d = self.unexpected(&format!("`{p}`"));
            if p == ";" {
                // Point just after the previous token: that is where the `;` belongs.
                let prev = self.toks[self.pos.saturating_sub(1)].span;
                d.span = Span::new(prev.start + prev.len, 0);
                d = d.label("expected `;` here").help("statements end with `;`");
            }
            Err(d)
        }
    }
    fn expect_kw(&mut self, kw: &str) -> Result<Span, Diag> {
        if self.is_kw(kw) {
            Ok(self.bump().span)
        } else {
            Err(self.unexpected(&format!("`{kw}`")))
        }
    }
    fn ident(&mut self, what: &str) -> Result<Ident, Diag> {
        match &self.peek().tok {
            Tok::Ident(s) if !is_reserved(s) => {
                let name = s.clone();
                let span = self.bump().span;
                Ok(Ident { name, span })
            }
            Tok::Ident(s) => {
                let t = self.peek();
                Err(Diag::new(format!("`{s}` is a reserved word and cannot be used as {what}"), t.span)
                    .label("reserved"))
            }
            _ => Err(self.unexpected(what)),
        }
    }
    fn int_lit(&mut self) -> Result<(i64, Span), Diag> {
        let neg = self.is_punct("-");
        let start = self.peek().span;
        if neg {
            self.bump();
        }
        match self.peek().tok {
            Tok::Int(v) => {
                let s = self.bump().span;
                Ok((if neg { -v } else { v }, start.to(s)))
            }
            _ => Err(self.unexpected("an integer")),
        }
    }

    fn kernel(&mut self) -> Result<KernelDef, Diag> {
        self.expect_kw("kernel")?;
        let name = self.ident("a kernel name")?;
        let mut tyvars = Vec::new();
        if self.eat_punct("<") {
            loop {
                let v = self.ident("a type variable")?;
                self.expect_punct(":")?;
                self.expect_punct("{")?;
                let mut set = vec![self.ident("a dtype")?];
                while self.eat_punct(",") {
                    if self.is_punct("}") {
                        break;
                    }
                    set.push(self.ident("a dtype")?);
                }
                self.expect_punct("}")?;
                tyvars.push((v, set));
                if !self.eat_punct(",") {
                    break;
                }
            }
            self.expect_punct(">")?;
        }
        self.expect_punct("(")?;
        let mut params = Vec::new();
        while !self.is_punct(")") {
            params.push(self.param()?);
            if !self.eat_punct(",") {
                break;
            }
        }
        self.expect_punct(")")?;
        let mut constraints = Vec::new();
        if self.eat_kw("where") {
            loop {
                constraints.push(self.constraint()?);
                if !self.eat_punct(",") {
                    break;
                }
                if self.is_kw("tunables") || self.is_kw("grid") {
                    break;
                }
            }
        }
        let mut tunables = Vec::new();
        if self.eat_kw("tunables") {
            self.expect_punct("{")?;
            while !self.is_punct("}") {
                tunables.push(self.tunable()?);
                if !self.eat_punct(",") {
                    break;
                }
            }
            self.expect_punct("}")?;
        }
        let gstart = self.expect_kw("grid")?;
        self.expect_punct("(")?;
        let mut grid = Vec::new();
        while !self.is_punct(")") {
            grid.push(self.expr()?);
            if !self.eat_punct(",") {
                break;
            }
        }
        let gend = self.expect_punct(")")?;
        let body = self.block()?;
        Ok(KernelDef { name, tyvars, params, constraints, tunables, grid, grid_span: gstart.to(gend), body })
    }

    fn param(&mut self) -> Result<ParamDef, Diag> {
        let name = self.ident("a parameter name")?;
        self.expect_punct(":")?;
        let output = self.eat_kw("out");
        let dtype = self.ident("a dtype")?;
        let mut dims = None;
        let mut end = dtype.span;
        if self.eat_punct("[") {
            let mut ds = Vec::new();
            while !self.is_punct("]") {
                ds.push(self.expr()?);
                if !self.eat_punct(",") {
                    break;
                }
            }
            end = self.expect_punct("]")?;
            dims = Some(ds);
        } else if output {
            return Err(Diag::new(format!("output `{}` must be a tensor", name.name), name.span.to(dtype.span))
                .label("scalar output")
                .help(format!("give it a shape, e.g. `{}: out {}[N]`", name.name, dtype.name)));
        }
        let span = name.span.to(end);
        Ok(ParamDef { name, dtype, dims, output, span })
    }

    fn constraint(&mut self) -> Result<ConstraintDef, Diag> {
        if self.eat_kw("const") {
            return Ok(ConstraintDef::Const(self.ident("a dim name")?));
        }
        // Parse the left side above comparisons so `%` and `in` stay visible.
        let lhs = self.additive()?;
        if self.eat_kw("in") {
            self.expect_punct("{")?;
            let mut vals = vec![self.int_lit()?];
            while self.eat_punct(",") {
                if self.is_punct("}") {
                    break;
                }
                vals.push(self.int_lit()?);
            }
            self.expect_punct("}")?;
            return Ok(ConstraintDef::In(lhs, vals));
        }
        if self.eat_punct(">=") {
            return Ok(ConstraintDef::Bound { lhs, lower: true, value: self.int_lit()?.0 });
        }
        if self.eat_punct("<=") {
            return Ok(ConstraintDef::Bound { lhs, lower: false, value: self.int_lit()?.0 });
        }
        if self.eat_punct("==") {
            let (v, vs) = self.int_lit()?;
            if let ExprKind::Binary(BinOp::Rem, a, b) = lhs.kind {
                if v == 0 {
                    return Ok(ConstraintDef::MultipleOf(*a, *b));
                }
            }
            return Err(Diag::new("unsupported constraint", vs)
                .help("constraints are `const D`, `D in {64, 128}`, `A % B == 0`, `N >= 1`, `N <= 4096`"));
        }
        Err(self.unexpected("`in`, `>=`, `<=` or `% ... == 0` in a constraint"))
    }

    fn tunable(&mut self) -> Result<TunableDef, Diag> {
        let name = self.ident("a tunable name")?;
        self.expect_punct(":")?;
        let level = if self.eat_kw("level1") {
            1
        } else if self.eat_kw("level2") {
            2
        } else {
            return Err(self.unexpected("`level1` or `level2`").help(
                "level1 tiles form the grid (cores / CTAs); level2 tiles are inner blocks (fragments, vector sub-blocks)",
            ));
        };
        self.expect_kw("in")?;
        self.expect_punct("{")?;
        let mut space = vec![self.int_lit()?];
        while self.eat_punct(",") {
            if self.is_punct("}") {
                break;
            }
            space.push(self.int_lit()?);
        }
        self.expect_punct("}")?;
        self.expect_punct("=")?;
        let default = self.int_lit()?;
        let span = name.span.to(default.1);
        Ok(TunableDef { name, level, space, default, span })
    }

    fn block(&mut self) -> Result<Vec<Stmt>, Diag> {
        let open = self.expect_punct("{")?;
        self.enter()?;
        let mut stmts = Vec::new();
        while !self.is_punct("}") {
            if self.at_eof() {
                // Point at the `{` that is never closed, not at the (empty) end of the file.
                return Err(Diag::new("expected `}`, found end of file", open)
                    .label("this `{` is never closed")
                    .help("add the missing `}`; blocks close in the reverse order they open"));
            }
            stmts.push(self.stmt()?);
        }
        self.expect_punct("}")?;
        self.depth -= 1;
        Ok(stmts)
    }

    fn stmt(&mut self) -> Result<Stmt, Diag> {
        if self.is_kw("let") || self.is_kw("var") {
            let mutable = self.is_kw("var");
            self.bump();
            let name = self.ident("a variable name")?;
            self.expect_punct("=")?;
            let value = self.expr()?;
            self.expect_punct(";")?;
            return Ok(Stmt::Let { name, value, mutable });
        }
        if self.is_kw("for") {
            let start = self.bump().span;
            let var = self.ident("a loop variable")?;
            self.expect_kw("in")?;
            let lo = self.expr()?;
            self.expect_punct("..")?;
            let hi = self.expr()?;
            let step = if self.eat_kw("step") { Some(self.expr()?) } else { None };
            let span = start.to(hi.span);
            let body = self.block()?;
            return Ok(Stmt::For { var, lo, hi, step, body, span });
        }
        if self.is_kw("if") {
            let start = self.bump().span;
            let cond = self.expr()?;
            let then = self.block()?;
            let els = if self.eat_kw("else") {
                if self.is_kw("if") {
                    self.enter()?;
                    let s = self.stmt()?;
                    self.depth -= 1;
                    Some(vec![s])
                } else {
                    Some(self.block()?)
                }
            } else {
                None
            };
            return Ok(Stmt::If { span: start.to(cond.span), cond, then, els });
        }
        if let (Tok::Ident(name), Tok::Punct("=")) = (&self.peek().tok, self.peek_at(1)) {
            if !is_reserved(name) {
                let name = self.ident("a variable")?;
                self.bump();
                let value = self.expr()?;
                self.expect_punct(";")?;
                return Ok(Stmt::Assign { name, value });
            }
        }
        let e = self.expr()?;
        self.expect_punct(";")?;
        Ok(Stmt::Expr(e))
    }

    pub fn expr(&mut self) -> Result<Expr, Diag> {
        self.binary(0)
    }

    fn additive(&mut self) -> Result<Expr, Diag> {
        self.binary(7)
    }

    /// Precedence climbing; level 0 is `||`, the loosest.
    fn binary(&mut self, level: usize) -> Result<Expr, Diag> {
        const LEVELS: &[&[(&str, BinOp)]] = &[
            &[("||", BinOp::Or)],
            &[("&&", BinOp::And)],
            &[("|", BinOp::BitOr)],
            &[("^", BinOp::BitXor)],
            &[("&", BinOp::BitAnd)],
            &[("==", BinOp::Eq), ("!=", BinOp::Ne)],
            &[("<", BinOp::Lt), ("<=", BinOp::Le), (">", BinOp::Gt), (">=", BinOp::Ge)],
            &[("<<", BinOp::Shl), (">>", BinOp::Shr)],
            &[("+", BinOp::Add), ("-", BinOp::Sub)],
            &[("*", BinOp::Mul), ("/", BinOp::Div), ("%", BinOp::Rem)],
        ];
        if level >= LEVELS.len() {
            return self.unary();
        }
        let mut lhs = self.binary(level + 1)?;
        let depth = self.depth;
        loop {
            let Some(&(_, op)) = LEVELS[level].iter().find(|(p, _)| self.is_punct(p)) else { break };
            self.bump();
            self.enter()?;
            let rhs = self.binary(level + 1)?;
            let span = lhs.span.to(rhs.span);
            lhs = Expr { kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)), span };
            // Comparisons do not chain: `a < b < c` is an error, as in Rust.
            if (5..=6).contains(&level) && LEVELS[level].iter().any(|(p, _)| self.is_punct(p)) {
                return Err(Diag::new("comparison operators cannot be chained", self.peek().span)
                    .label("second comparison")
                    .help("split it: `a < b && b < c`"));
            }
        }
        self.depth = depth;
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Expr, Diag> {
        self.enter()?;
        let r = if self.is_punct("-") || self.is_punct("!") {
            let t = self.bump();
            let op = if t.tok == Tok::Punct("-") { UnOp::Neg } else { UnOp::Not };
            let e = self.unary()?;
            let span = t.span.to(e.span);
            Expr { kind: ExprKind::Unary(op, Box::new(e)), span }
        } else {
            self.postfix()?
        };
        self.depth -= 1;
        Ok(r)
    }

    fn postfix(&mut self) -> Result<Expr, Diag> {
        let mut e = self.primary()?;
        let depth = self.depth;
        while self.is_punct("[") {
            self.bump();
            self.enter()?;
            let mut items = Vec::new();
            while !self.is_punct("]") {
                if self.is_punct(":") {
                    items.push(IndexItem::Full(self.bump().span));
                } else if self.is_kw("None") {
                    items.push(IndexItem::NewAxis(self.bump().span));
                } else {
                    items.push(IndexItem::Expr(self.expr()?));
                }
                if !self.eat_punct(",") {
                    break;
                }
            }
            let end = self.expect_punct("]")?;
            let span = e.span.to(end);
            e = Expr { kind: ExprKind::Index { base: Box::new(e), items }, span };
        }
        self.depth = depth;
        Ok(e)
    }

    fn primary(&mut self) -> Result<Expr, Diag> {
        let t = self.peek().clone();
        match &t.tok {
            Tok::Int(v) => {
                self.bump();
                Ok(Expr { kind: ExprKind::Int(*v), span: t.span })
            }
            Tok::Float(v) => {
                self.bump();
                Ok(Expr { kind: ExprKind::Float(*v), span: t.span })
            }
            Tok::Punct("(") => {
                self.bump();
                let e = self.expr()?;
                let end = self.expect_punct(")")?;
                Ok(Expr { kind: e.kind, span: t.span.to(end) })
            }
            Tok::Punct("[") => {
                self.bump();
                let mut items = Vec::new();
                while !self.is_punct("]") {
                    items.push(self.expr()?);
                    if !self.eat_punct(",") {
                        break;
                    }
                }
                let end = self.expect_punct("]")?;
                Ok(Expr { kind: ExprKind::List(items), span: t.span.to(end) })
            }
            Tok::Ident(name) => {
                let name = name.clone();
                match name.as_str() {
                    "true" | "false" => {
                        self.bump();
                        return Ok(Expr { kind: ExprKind::Bool(name == "true"), span: t.span });
                    }
                    "inf" => {
                        self.bump();
                        return Ok(Expr { kind: ExprKind::Float(f64::INFINITY), span: t.span });
                    }
                    "nan" => {
                        self.bump();
                        return Ok(Expr { kind: ExprKind::Float(f64::NAN), span: t.span });
                    }
                    // `where(c, a, b)` is the select builtin; `where` alone opens constraints.
                    "where" if self.peek_at(1) == &Tok::Punct("(") => {}
                    _ if is_reserved(&name) => {
                        return Err(Diag::new(format!("expected an expression, found keyword `{name}`"), t.span)
                            .label("keyword"));
                    }
                    _ => {}
                }
                self.bump();
                let func = Ident { name: name.clone(), span: t.span };
                if self.is_punct("(") {
                    self.bump();
                    let mut args = Vec::new();
                    while !self.is_punct(")") {
                        let named = matches!((&self.peek().tok, self.peek_at(1)), (Tok::Ident(_), Tok::Punct(":")));
                        let aname = if named {
                            let n = self.ident("an argument name")?;
                            self.bump();
                            Some(n)
                        } else {
                            None
                        };
                        let value = self.expr()?;
                        args.push(CallArg { name: aname, value });
                        if !self.eat_punct(",") {
                            break;
                        }
                    }
                    let end = self.expect_punct(")")?;
                    return Ok(Expr { kind: ExprKind::Call { func, args }, span: t.span.to(end) });
                }
                Ok(Expr { kind: ExprKind::Name(name), span: t.span })
            }
            _ => Err(self.unexpected("an expression")),
        }
    }
}

/// Words with a fixed meaning that cannot name a value.
pub fn is_reserved(s: &str) -> bool {
    matches!(
        s,
        "kernel" | "let" | "var" | "for" | "in" | "if" | "else" | "where" | "tunables" | "grid" | "out" | "const" | "step"
            | "None" | "true" | "false" | "level1" | "level2"
    )
}
