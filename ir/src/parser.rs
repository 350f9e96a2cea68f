//! Parser of the textual tile IR written by [`crate::printer`] (the format is described there).
//!
//! Hand-written: a lexer into positioned tokens, then recursive descent. Every error carries the
//! 1-based line and column of the offending token. No input panics: numbers are parsed with
//! checked conversions, nesting (regions, parenthesized dim expressions) is limited to
//! [`MAX_DEPTH`], and value ids are only materialized densely once every id up to the largest
//! has a type.
//!
//! The parser checks syntax, names (`@dim`, `@param`) and type consistency of value ids; the
//! structural and typing rules of the IR are left to [`crate::verify::verify`].

use crate::ir::*;
use crate::types::{DType, MemSpace, Rounding, TileType};
use std::collections::HashMap;

/// A syntax error at a 1-based line and column (counted in characters).
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{line}:{col}: {msg}")]
pub struct ParseError {
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

/// Deepest nesting of regions and of parentheses in dim expressions.
pub const MAX_DEPTH: usize = 64;

/// Parse a kernel printed by [`crate::printer::print_kernel`].
pub fn parse_kernel(text: &str) -> Result<Kernel, ParseError> {
    let toks = Lexer { chars: text.chars().collect(), i: 0, line: 1, col: 1 }.run()?;
    Parser { toks, pos: 0, depth: 0, dims: vec![], params: vec![], pending: vec![], types: HashMap::new(), first_use: HashMap::new(), max_id: None }
        .kernel()
}

type R<T> = Result<T, ParseError>;

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    /// Keyword or bare identifier (`load`, `f32`, `M`, `_`).
    Ident(String),
    /// `@name` or `@"quoted name"`.
    Name(String),
    /// `%N`.
    Val(u32),
    /// A digit followed by letters, digits and dots: `12`, `1.5`, `1e-7`, `0x7ff8...` (a leading
    /// sign is a separate token).
    Num(String),
    Punct(&'static str),
    Eof,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Name(s) => format!("`{}`", crate::printer::print_name(s)),
            Tok::Val(v) => format!("`%{v}`"),
            Tok::Num(s) => format!("`{s}`"),
            Tok::Punct(p) => format!("`{p}`"),
            Tok::Eof => "end of input".into(),
        }
    }
}

struct Token {
    tok: Tok,
    line: usize,
    col: usize,
}

struct Lexer {
    chars: Vec<char>,
    i: usize,
    line: usize,
    col: usize,
}

const PUNCT: [&str; 13] = ["{", "}", "[", "]", "(", ")", ",", ":", "=", "+", "-", "*", "/"];

impl Lexer {
    fn peek(&self, k: usize) -> Option<char> {
        self.chars.get(self.i + k).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek(0)?;
        self.i += 1;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn take_while(&mut self, f: impl Fn(char) -> bool) -> String {
        let mut s = String::new();
        while let Some(c) = self.peek(0).filter(|&c| f(c)) {
            s.push(c);
            self.bump();
        }
        s
    }

    fn run(mut self) -> R<Vec<Token>> {
        let mut out = vec![];
        loop {
            while self.peek(0).is_some_and(char::is_whitespace) {
                self.bump();
            }
            if self.peek(0) == Some('/') && self.peek(1) == Some('/') {
                self.take_while(|c| c != '\n');
                continue;
            }
            let (line, col) = (self.line, self.col);
            let err = |msg: String| ParseError { line, col, msg };
            let Some(c) = self.peek(0) else {
                out.push(Token { tok: Tok::Eof, line, col });
                return Ok(out);
            };
            let ident_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
            let tok = if c.is_ascii_alphabetic() || c == '_' {
                Tok::Ident(self.take_while(ident_char))
            } else if c.is_ascii_digit() {
                let mut s = String::new();
                while let Some(c) = self.peek(0) {
                    let sign = (c == '+' || c == '-') && s.ends_with(['e', 'E']) && !s.starts_with("0x");
                    if !(ident_char(c) || c == '.' || sign) {
                        break;
                    }
                    s.push(c);
                    self.bump();
                }
                Tok::Num(s)
            } else if c == '%' && self.peek(1).is_some_and(|c| c.is_ascii_digit()) {
                self.bump();
                let digits = self.take_while(|c| c.is_ascii_digit());
                Tok::Val(digits.parse().map_err(|_| err(format!("value id %{digits} is too large")))?)
            } else if c == '@' {
                self.bump();
                if self.peek(0) == Some('"') {
                    Tok::Name(self.string().map_err(err)?)
                } else {
                    let s = self.take_while(ident_char);
                    if s.is_empty() {
                        return Err(err("expected a name after `@`".into()));
                    }
                    Tok::Name(s)
                }
            } else {
                self.bump();
                let two = |l: &mut Lexer, p: &'static str| {
                    l.bump();
                    Tok::Punct(p)
                };
                match (c, self.peek(0)) {
                    ('=', Some('=')) => two(&mut self, "=="),
                    ('>', Some('=')) => two(&mut self, ">="),
                    ('<', Some('=')) => two(&mut self, "<="),
                    ('%', _) => Tok::Punct("%"),
                    _ => match PUNCT.iter().find(|p| p.starts_with(c)) {
                        Some(p) => Tok::Punct(p),
                        None => return Err(err(format!("unexpected character {c:?}"))),
                    },
                }
            };
            out.push(Token { tok, line, col });
        }
    }

    /// A `"..."` string with Rust escapes (`\\ \" \' \n \r \t \0 \u{..}`); at the opening quote.
    fn string(&mut self) -> Result<String, String> {
        self.bump();
        let mut s = String::new();
        loop {
            match self.bump() {
                None => return Err("unterminated string".into()),
                Some('"') => return Ok(s),
                Some('\\') => {
                    let c = match self.bump() {
                        Some('n') => '\n',
                        Some('r') => '\r',
                        Some('t') => '\t',
                        Some('0') => '\0',
                        Some(c @ ('\\' | '"' | '\'')) => c,
                        Some('u') if self.peek(0) == Some('{') => {
                            self.bump();
                            let hex = self.take_while(|c| c.is_ascii_hexdigit());
                            if self.bump() != Some('}') {
                                return Err("bad `\\u{...}` escape".into());
                            }
                            u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32).ok_or("bad `\\u{...}` escape")?
                        }
                        _ => return Err("unknown escape in string".into()),
                    };
                    s.push(c);
                }
                Some(c) => s.push(c),
            }
        }
    }
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
    depth: usize,
    dims: Vec<DimSym>,
    params: Vec<Param>,
    /// Dim names referenced by header dim expressions, resolved once all `dim` lines are read
    /// (`DimExpr::Sym(SymId(i))` points into this list until then).
    pending: Vec<(String, usize, usize)>,
    /// Type of each value id seen in a definition.
    types: HashMap<u32, TileType>,
    /// Where each value id first appears (for "has no type" errors).
    first_use: HashMap<u32, (usize, usize)>,
    max_id: Option<u32>,
}

impl Parser {
    fn peek(&self) -> &Tok {
        self.toks.get(self.pos).map_or(&Tok::Eof, |t| &t.tok)
    }

    fn here(&self) -> (usize, usize) {
        self.toks.get(self.pos).or(self.toks.last()).map_or((1, 1), |t| (t.line, t.col))
    }

    fn err_at<T>(&self, (line, col): (usize, usize), msg: impl Into<String>) -> R<T> {
        Err(ParseError { line, col, msg: msg.into() })
    }

    fn err<T>(&self, msg: impl Into<String>) -> R<T> {
        self.err_at(self.here(), msg)
    }

    /// "expected X, found Y" at the current token.
    fn expected<T>(&self, what: &str) -> R<T> {
        self.err(format!("expected {what}, found {}", self.peek().describe()))
    }

    fn next(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.pos < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn is(&self, p: &str) -> bool {
        matches!(self.peek(), Tok::Punct(q) if *q == p)
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Tok::Ident(s) if s == kw)
    }

    fn eat(&mut self, p: &str) -> bool {
        let yes = self.is(p);
        if yes {
            self.next();
        }
        yes
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        let yes = self.is_kw(kw);
        if yes {
            self.next();
        }
        yes
    }

    fn expect(&mut self, p: &str) -> R<()> {
        if self.eat(p) {
            Ok(())
        } else {
            self.expected(&format!("`{p}`"))
        }
    }

    fn expect_kw(&mut self, kw: &str) -> R<()> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            self.expected(&format!("`{kw}`"))
        }
    }

    fn ident(&mut self, what: &str) -> R<String> {
        match self.peek() {
            Tok::Ident(s) => {
                let s = s.clone();
                self.next();
                Ok(s)
            }
            _ => self.expected(what),
        }
    }

    fn name(&mut self) -> R<String> {
        match self.peek() {
            Tok::Name(s) => {
                let s = s.clone();
                self.next();
                Ok(s)
            }
            _ => self.expected("a name like `@x`"),
        }
    }

    /// An integer literal with optional `-`, parsed as `T` (so ranges are checked).
    fn int<T: std::str::FromStr>(&mut self, what: &str) -> R<T> {
        let at = self.here();
        let neg = self.eat("-");
        match self.next() {
            Tok::Num(s) => {
                let s = if neg { format!("-{s}") } else { s };
                s.parse().or_else(|_| self.err_at(at, format!("`{s}` is not a valid {what}")))
            }
            t => self.err_at(at, format!("expected {what}, found {}", t.describe())),
        }
    }

    /// `a, b, c` until `close` (consumed), with `item` parsing each element.
    fn list<T>(&mut self, close: &str, mut item: impl FnMut(&mut Self) -> R<T>) -> R<Vec<T>> {
        let mut out = vec![];
        if self.eat(close) {
            return Ok(out);
        }
        loop {
            out.push(item(self)?);
            if self.eat(close) {
                return Ok(out);
            }
            if !self.eat(",") {
                return self.expected(&format!("`,` or `{close}`"));
            }
        }
    }

    fn enter(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err(format!("nesting deeper than {MAX_DEPTH} levels"));
        }
        Ok(())
    }

    // ------------------------------------------------------------------ values and types

    fn val(&mut self) -> R<ValueId> {
        let at = self.here();
        match self.next() {
            Tok::Val(v) => {
                self.first_use.entry(v).or_insert(at);
                self.max_id = self.max_id.max(Some(v));
                Ok(ValueId(v))
            }
            t => self.err_at(at, format!("expected a value like `%3`, found {}", t.describe())),
        }
    }

    /// Whether the tokens ahead read `%a, %b =`: the results of the next op, not operands (this
    /// separates an operand-less `yield` from the op after it).
    fn at_results(&self) -> bool {
        let mut i = self.pos;
        loop {
            match self.toks.get(i).map(|t| &t.tok) {
                Some(Tok::Val(_)) => i += 1,
                _ => return false,
            }
            match self.toks.get(i).map(|t| &t.tok) {
                Some(Tok::Punct(",")) => i += 1,
                Some(Tok::Punct("=")) => return true,
                _ => return false,
            }
        }
    }

    /// A possibly empty comma-separated list of operands (stops at the first non-value).
    fn opt_vals(&mut self) -> R<Vec<ValueId>> {
        let mut out = vec![];
        if matches!(self.peek(), Tok::Val(_)) && !self.at_results() {
            out.push(self.val()?);
            while self.eat(",") {
                out.push(self.val()?);
            }
        }
        Ok(out)
    }

    fn define(&mut self, v: ValueId, ty: TileType, at: (usize, usize)) -> R<()> {
        match self.types.get(&v.0) {
            Some(old) if *old != ty => self.err_at(at, format!("value %{} has type {old} elsewhere but {ty} here", v.0)),
            _ => {
                self.types.insert(v.0, ty);
                Ok(())
            }
        }
    }

    /// `[global|shared|reg] DTYPE [ '[' dims ']' ]`
    fn tile_type(&mut self) -> R<TileType> {
        let at = self.here();
        let mut word = self.ident("a type like `f32[64]`")?;
        let space = MemSpace::from_name(&word);
        if space.is_some() {
            word = self.ident("a dtype")?;
        }
        let Some(dtype) = DType::from_name(&word) else {
            return self.err_at(at, format!("unknown dtype `{word}`"));
        };
        let shape = if self.eat("[") { self.list("]", |p| p.int::<usize>("dimension size"))? } else { vec![] };
        Ok(TileType { dtype, shape, space: space.unwrap_or_default() })
    }

    // ------------------------------------------------------------------ header

    fn kernel(mut self) -> R<Kernel> {
        self.expect_kw("kernel")?;
        let mut k = Kernel::new(self.name()?);
        loop {
            let at = self.here();
            match self.ident("`param`, `dim`, `constraint`, `tunable` or `grid`")?.as_str() {
                "param" => self.param()?,
                "dim" => {
                    let name = self.name()?;
                    let konst = self.eat_kw("const");
                    let value = if self.eat("=") { Some(self.int("dim value")?) } else { None };
                    self.dims.push(DimSym { name, konst, value });
                }
                "constraint" => k.constraints.push(self.constraint()?),
                "tunable" => k.tunables.push(self.tunable()?),
                "grid" => break,
                w => return self.err_at(at, format!("expected `param`, `dim`, `constraint`, `tunable` or `grid`, found `{w}`")),
            }
        }
        // Resolve the dim names used in tensor shapes and constraints.
        let mut ids = vec![];
        for (name, line, col) in &self.pending {
            match self.dims.iter().position(|d| d.name == *name) {
                Some(i) => ids.push(i as u32),
                None => return self.err_at((*line, *col), format!("unknown dim `{name}`")),
            }
        }
        let remap = |e: &mut DimExpr| remap_syms(e, &ids);
        for p in &mut self.params {
            if let ParamKind::Tensor { dims, .. } = &mut p.kind {
                dims.iter_mut().for_each(remap);
            }
        }
        for c in &mut k.constraints {
            match c {
                Constraint::OneOf(e, _) | Constraint::Range(e, _, _) => remap(e),
                Constraint::MultipleOf(a, b) => {
                    remap(a);
                    remap(b);
                }
            }
        }
        k.grid = self.region_with_args()?;
        self.expect_kw("body")?;
        k.body = self.region_with_args()?;
        if self.eat_kw("values") {
            self.expect("{")?;
            while !self.eat("}") {
                let at = self.here();
                let v = self.val()?;
                self.expect(":")?;
                let ty = self.tile_type()?;
                self.define(v, ty, at)?;
                self.eat(",");
            }
        }
        if *self.peek() != Tok::Eof {
            return self.expected("end of input");
        }
        // Dense values: every id up to the largest seen needs a type. Stops at the first gap, so
        // a huge id with few definitions fails fast instead of allocating.
        if let Some(max) = self.max_id {
            for id in 0..=max {
                match self.types.remove(&id) {
                    Some(t) => k.values.push(t),
                    None => {
                        let hint = format!("(list such ids in a trailing `values {{ %{id}: TYPE }}` section)");
                        return match self.first_use.get(&id) {
                            Some(&at) => self.err_at(at, format!("value %{id} has no type: no op or region defines it {hint}")),
                            None => {
                                let at = self.first_use.get(&max).copied().unwrap_or_else(|| self.here());
                                self.err_at(at, format!("value %{id} has no type: ids are dense up to the largest, %{max} {hint}"))
                            }
                        };
                    }
                }
            }
        }
        k.params = self.params;
        k.dims = self.dims;
        Ok(k)
    }

    fn param(&mut self) -> R<()> {
        let at = self.here();
        let name = self.name()?;
        self.expect(":")?;
        let output = self.eat_kw("out");
        let kind = if output || self.is_kw("global") {
            self.expect_kw("global")?;
            let dt_at = self.here();
            let dt = self.ident("a dtype")?;
            let Some(dtype) = DType::from_name(&dt) else { return self.err_at(dt_at, format!("unknown dtype `{dt}`")) };
            self.expect("[")?;
            let dims = self.list("]", Self::dim_expr)?;
            ParamKind::Tensor { dtype, dims, output }
        } else {
            let dt = self.ident("a dtype or `global`")?;
            let Some(dtype) = DType::from_name(&dt) else { return self.err_at(at, format!("unknown dtype `{dt}`")) };
            ParamKind::Scalar { dtype }
        };
        self.params.push(Param { name, kind });
        Ok(())
    }

    fn constraint(&mut self) -> R<Constraint> {
        let e = self.dim_expr()?;
        if self.eat("%") {
            let m = self.dim_expr()?;
            self.expect("==")?;
            let at = self.here();
            if self.int::<i64>("integer")? != 0 {
                return self.err_at(at, "expected `0` (constraints read `A % B == 0`)");
            }
            Ok(Constraint::MultipleOf(e, m))
        } else if self.eat(">=") {
            Ok(Constraint::Range(e, Some(self.int("integer")?), None))
        } else if self.eat("<=") {
            Ok(Constraint::Range(e, None, Some(self.int("integer")?)))
        } else if self.eat_kw("in") {
            if self.eat("{") {
                return Ok(Constraint::OneOf(e, self.list("}", |p| p.int("integer"))?));
            }
            self.expect("[")?;
            let end = |p: &mut Self| if p.eat_kw("_") { Ok(None) } else { p.int("integer or `_`").map(Some) };
            let lo = end(self)?;
            self.expect(",")?;
            let hi = end(self)?;
            self.expect("]")?;
            Ok(Constraint::Range(e, lo, hi))
        } else {
            self.expected("`%`, `in`, `>=` or `<=`")
        }
    }

    fn tunable(&mut self) -> R<Tunable> {
        let name = self.name()?;
        let at = self.here();
        let lv = self.ident("`level1` or `level2`")?;
        let Some(level) = lv.strip_prefix("level").and_then(|l| l.parse().ok()) else {
            return self.err_at(at, format!("expected `level1` or `level2`, found `{lv}`"));
        };
        self.expect_kw("in")?;
        self.expect("{")?;
        let space = self.list("}", |p| p.int("integer"))?;
        self.expect("=")?;
        let value = self.int("integer")?;
        Ok(Tunable { name, level, space, value, loc: self.loc()? })
    }

    /// An optional source location `loc(L:C)` (ops and tunables).
    fn loc(&mut self) -> R<Option<Loc>> {
        if !self.eat_kw("loc") {
            return Ok(None);
        }
        self.expect("(")?;
        let line = self.int("line number")?;
        self.expect(":")?;
        let col = self.int("column number")?;
        self.expect(")")?;
        Ok(Some(Loc { line, col }))
    }

    /// `+ -` over `* /` over atoms, left-associative.
    fn dim_expr(&mut self) -> R<DimExpr> {
        let mut e = self.dim_term()?;
        loop {
            if self.eat("+") {
                e = DimExpr::Add(Box::new(e), Box::new(self.dim_term()?));
            } else if self.eat("-") {
                e = DimExpr::Sub(Box::new(e), Box::new(self.dim_term()?));
            } else {
                return Ok(e);
            }
        }
    }

    fn dim_term(&mut self) -> R<DimExpr> {
        let mut e = self.dim_atom()?;
        loop {
            if self.eat("*") {
                e = DimExpr::Mul(Box::new(e), Box::new(self.dim_atom()?));
            } else if self.eat("/") {
                e = DimExpr::Div(Box::new(e), Box::new(self.dim_atom()?));
            } else {
                return Ok(e);
            }
        }
    }

    fn dim_atom(&mut self) -> R<DimExpr> {
        let (line, col) = self.here();
        match self.peek().clone() {
            Tok::Punct("(") => {
                self.next();
                self.enter()?;
                let e = self.dim_expr()?;
                self.expect(")")?;
                self.depth -= 1;
                Ok(e)
            }
            Tok::Punct("-") | Tok::Num(_) => Ok(DimExpr::Const(self.int("integer")?)),
            Tok::Name(s) | Tok::Ident(s) => {
                self.next();
                self.pending.push((s, line, col));
                Ok(DimExpr::Sym(SymId(self.pending.len() as u32 - 1)))
            }
            _ => self.expected("a dim expression"),
        }
    }

    // ------------------------------------------------------------------ blocks and ops

    /// `[(%a: T, ...)] { ops }` for the grid and body blocks.
    fn region_with_args(&mut self) -> R<Block> {
        let mut args = vec![];
        if self.eat("(") {
            args = self.list(")", |p| {
                let at = p.here();
                let v = p.val()?;
                p.expect(":")?;
                let ty = p.tile_type()?;
                p.define(v, ty, at)?;
                Ok(v)
            })?;
        }
        let mut b = self.region()?;
        b.args = args;
        Ok(b)
    }

    /// `{ ops }`
    fn region(&mut self) -> R<Block> {
        self.expect("{")?;
        self.enter()?;
        let mut ops = vec![];
        while !self.eat("}") {
            if *self.peek() == Tok::Eof {
                return self.expected("`}`");
            }
            ops.push(self.op()?);
        }
        self.depth -= 1;
        Ok(Block { args: vec![], ops })
    }

    fn dim_ref(&mut self) -> R<SymId> {
        let at = self.here();
        let name = self.name()?;
        match self.dims.iter().position(|d| d.name == name) {
            Some(i) => Ok(SymId(i as u32)),
            None => self.err_at(at, format!("unknown dim `{}`", crate::printer::print_name(&name))),
        }
    }

    fn param_ref(&mut self) -> R<usize> {
        let at = self.here();
        let name = self.name()?;
        match self.params.iter().position(|p| p.name == name) {
            Some(i) => Ok(i),
            None => self.err_at(at, format!("unknown parameter `{}`", crate::printer::print_name(&name))),
        }
    }

    /// An attribute word looked up with `find` (`cmp lt`, `cast rtz`, `reduce sum`).
    fn attr<T>(&mut self, what: &str, find: impl Fn(&str) -> Option<T>) -> R<T> {
        let at = self.here();
        let w = self.ident(what)?;
        find(&w).map_or_else(|| self.err_at(at, format!("unknown {what} `{w}`")), Ok)
    }

    /// `axis N` after the operands.
    fn axis(&mut self) -> R<u8> {
        self.expect_kw("axis")?;
        self.int("axis (0..=255)")
    }

    fn scalar(&mut self) -> R<Scalar> {
        let at = self.here();
        let neg = self.eat("-");
        let sign = if neg { -1.0 } else { 1.0 };
        match self.next() {
            Tok::Ident(w) if w == "true" && !neg => Ok(Scalar::Bool(true)),
            Tok::Ident(w) if w == "false" && !neg => Ok(Scalar::Bool(false)),
            Tok::Ident(w) if w == "inf" => Ok(Scalar::Float(sign * f64::INFINITY)),
            Tok::Ident(w) if w == "nan" => {
                if !self.eat("(") {
                    return Ok(Scalar::Float(if neg { -f64::NAN } else { f64::NAN }));
                }
                let bits_at = self.here();
                let bits = match self.next() {
                    Tok::Num(s) => s.strip_prefix("0x").and_then(|h| u64::from_str_radix(h, 16).ok()),
                    _ => None,
                };
                let Some(bits) = bits else { return self.err_at(bits_at, "expected NaN bits like `0x7ff8000000000001`") };
                self.expect(")")?;
                let x = f64::from_bits(bits);
                Ok(Scalar::Float(if neg { -x } else { x }))
            }
            Tok::Num(s) => {
                let s = if neg { format!("-{s}") } else { s };
                if s.contains(['.', 'e', 'E']) && !s.contains("0x") {
                    s.parse().map(Scalar::Float).or_else(|_| self.err_at(at, format!("`{s}` is not a valid float")))
                } else {
                    s.parse().map(Scalar::Int).or_else(|_| self.err_at(at, format!("`{s}` is not a valid i64 integer")))
                }
            }
            t => self.err_at(at, format!("expected a constant, found {}", t.describe())),
        }
    }

    fn op(&mut self) -> R<Op> {
        let start = self.here();
        let mut results = vec![];
        if self.at_results() {
            results = self.list("=", Self::val)?;
        }
        let mn_at = self.here();
        let mn = self.ident("an op")?;
        let mut args = vec![];
        // For `for`: the induction variable and carried region arguments.
        let mut for_args: Option<Vec<ValueId>> = None;
        let kind = match mn.as_str() {
            "const" => OpKind::Const(self.scalar()?),
            "program_id" => OpKind::ProgramId(self.int("grid axis (0..=255)")?),
            "num_programs" => OpKind::NumPrograms(self.int("grid axis (0..=255)")?),
            "dim" => OpKind::Dim(self.dim_ref()?),
            "param" => OpKind::ScalarParam(self.param_ref()?),
            "cmp" => OpKind::Cmp(self.attr("comparison predicate", CmpPred::from_name)?),
            "cast" => OpKind::Cast(self.attr("rounding mode", Rounding::from_name)?),
            "expand_dims" => {
                args = self.opt_vals()?;
                OpKind::ExpandDims(self.axis()?)
            }
            "permute" => {
                args = self.opt_vals()?;
                self.expect_kw("perm")?;
                self.expect("[")?;
                OpKind::Permute(self.list("]", |p| p.int("axis (0..=255)"))?)
            }
            "reduce" => {
                let op = self.attr("reduction", ReduceOp::from_name)?;
                args = self.opt_vals()?;
                OpKind::Reduce { op, axis: self.axis()? }
            }
            "scan" => {
                let op = self.attr("scan", ScanOp::from_name)?;
                args = self.opt_vals()?;
                OpKind::Scan { op, axis: self.axis()? }
            }
            "load" => {
                let tensor = self.param_ref()?;
                self.expect("[")?;
                args = self.list("]", Self::val)?;
                let has_mask = self.eat_kw("mask");
                if has_mask {
                    args.push(self.val()?);
                }
                let has_other = self.eat_kw("other");
                if has_other {
                    args.push(self.val()?);
                }
                OpKind::Load { tensor, has_mask, has_other }
            }
            "store" | "atomic_add" => {
                let tensor = self.param_ref()?;
                self.expect("[")?;
                args = self.list("]", Self::val)?;
                self.expect(",")?;
                args.push(self.val()?);
                let has_mask = self.eat_kw("mask");
                if has_mask {
                    args.push(self.val()?);
                }
                if mn == "store" {
                    OpKind::Store { tensor, has_mask }
                } else {
                    OpKind::AtomicAdd { tensor, has_mask }
                }
            }
            "for" => {
                let mut rargs = vec![self.val()?];
                self.expect("=")?;
                args.push(self.val()?);
                self.expect_kw("to")?;
                args.push(self.val()?);
                self.expect_kw("step")?;
                args.push(self.val()?);
                if self.eat_kw("iter") {
                    self.expect("(")?;
                    let pairs = self.list(")", |p| {
                        let a = p.val()?;
                        p.expect("=")?;
                        Ok((a, p.val()?))
                    })?;
                    for (a, init) in pairs {
                        rargs.push(a);
                        args.push(init);
                    }
                }
                for_args = Some(rargs);
                OpKind::For
            }
            "arange" => OpKind::Arange,
            "select" => OpKind::Select,
            "bitcast" => OpKind::Bitcast,
            "broadcast" => OpKind::Broadcast,
            "reshape" => OpKind::Reshape,
            "dot" => OpKind::Dot,
            "if" => OpKind::If,
            "yield" => OpKind::Yield,
            m => match (UnaryOp::from_mnemonic(m), BinaryOp::from_mnemonic(m)) {
                (Some(u), _) => OpKind::Unary(u),
                (_, Some(b)) => OpKind::Binary(b),
                _ => return self.err_at(mn_at, format!("unknown op `{m}`")),
            },
        };
        let plain = !matches!(
            kind,
            OpKind::ExpandDims(_) | OpKind::Permute(_) | OpKind::Reduce { .. } | OpKind::Scan { .. } | OpKind::Load { .. }
                | OpKind::Store { .. } | OpKind::AtomicAdd { .. } | OpKind::For
        );
        if plain {
            args = self.opt_vals()?;
        }
        let mut types = vec![];
        if self.eat(":") {
            types.push(self.tile_type()?);
            while self.eat(",") {
                types.push(self.tile_type()?);
            }
        }
        if types.len() != results.len() {
            return self.err_at(mn_at, format!("`{mn}` has {} results but {} result types", results.len(), types.len()));
        }
        let loc = self.loc()?;
        let mut regions = vec![];
        if self.is("{") {
            regions.push(self.region()?);
            while self.eat_kw("else") {
                regions.push(self.region()?);
            }
        }
        for (v, t) in results.iter().zip(&types) {
            self.define(*v, t.clone(), start)?;
        }
        if let Some(rargs) = for_args {
            let Some(body) = regions.first_mut() else { return self.err_at(mn_at, "`for` needs a body region `{ ... }`") };
            if rargs.len() != types.len() + 1 {
                return self.err_at(mn_at, format!("`for` carries {} values but has {} results", rargs.len() - 1, types.len()));
            }
            self.define(rargs[0], TileType::scalar(DType::I32), start)?;
            for (v, t) in rargs[1..].iter().zip(&types) {
                self.define(*v, t.clone(), start)?;
            }
            body.args = rargs;
        }
        Ok(Op { kind, args, results, regions, loc })
    }
}

fn remap_syms(e: &mut DimExpr, ids: &[u32]) {
    match e {
        DimExpr::Sym(s) => s.0 = ids.get(s.0 as usize).copied().unwrap_or(s.0),
        DimExpr::Const(_) => {}
        DimExpr::Add(a, b) | DimExpr::Sub(a, b) | DimExpr::Mul(a, b) | DimExpr::Div(a, b) => {
            remap_syms(a, ids);
            remap_syms(b, ids);
        }
    }
}
