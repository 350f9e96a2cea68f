//! Launch-time checks shared by every target: bind symbolic dims from the argument shapes,
//! check dtypes, shapes and constraints with precise messages, and evaluate the grid.
//!
//! Binding rules (see `docs/dsl.md`): a symbol is bound by the first tensor parameter (in
//! parameter order) where it appears alone as a dim; a `const` symbol that is already specialized
//! (`DimSym::value`) must agree with it (and is bound from its value if no tensor has it alone).
//! Every dim expression of every tensor is then evaluated and compared with the actual size, and
//! finally the kernel's `Constraint`s are checked.

use crate::ir::{Constraint, DimExpr, ParamKind, SymId};
use crate::types::DType;
use crate::{ArgRef, Kernel, LaunchArg};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LaunchError {
    #[error("kernel `{kernel}` takes {expected} arguments, got {got}")]
    ArgCount { kernel: String, expected: usize, got: usize },
    #[error("kernel `{kernel}`: argument `{param}`: {msg}")]
    Arg { kernel: String, param: String, msg: String },
    #[error("kernel `{kernel}`: {msg}")]
    Constraint { kernel: String, msg: String },
    #[error("kernel `{kernel}`: {msg}")]
    Exec { kernel: String, msg: String },
}

/// "a" or "an" before a dtype name as it is read aloud ("an f32", "a bf16", "an i4", "a u8").
pub fn article(d: DType) -> &'static str {
    match d.name().as_bytes()[0] {
        b'i' | b'e' | b'f' => "an",
        _ => "a",
    }
}

/// How an argument is described in messages: `a bf16 tensor of shape [2, 3]`, `an f32 scalar`.
fn describe_arg(a: &ArgRef) -> String {
    match a {
        ArgRef::In(t) => format!("{} {} tensor of shape {:?}", article(t.dtype), t.dtype, t.shape),
        ArgRef::Out(t) => format!("{} {} tensor of shape {:?}", article(t.dtype), t.dtype, t.shape),
        ArgRef::F32(_) => "an f32 scalar".into(),
        ArgRef::I32(_) => "an i32 scalar".into(),
        ArgRef::Bool(_) => "a bool scalar".into(),
    }
}

fn sym_name(kernel: &Kernel, s: SymId) -> String {
    kernel.dims.get(s.0 as usize).map(|d| d.name.clone()).unwrap_or_else(|| format!("?{}", s.0))
}

/// Print a dim expression the way it is written in the DSL: `K / 32`, `2 * I`, `(A + B) * C`.
pub fn fmt_dim_expr(kernel: &Kernel, e: &DimExpr) -> String {
    let mut s = String::new();
    fmt_prec(kernel, e, 0, &mut s);
    s
}

fn fmt_prec(kernel: &Kernel, e: &DimExpr, min_prec: u8, out: &mut String) {
    let (prec, op, a, b) = match e {
        DimExpr::Sym(s) => {
            out.push_str(&sym_name(kernel, *s));
            return;
        }
        DimExpr::Const(c) => {
            if *c < 0 && min_prec > 0 {
                out.push_str(&format!("({c})"));
            } else {
                out.push_str(&c.to_string());
            }
            return;
        }
        DimExpr::Add(a, b) => (1, "+", a, b),
        DimExpr::Sub(a, b) => (1, "-", a, b),
        DimExpr::Mul(a, b) => (2, "*", a, b),
        DimExpr::Div(a, b) => (2, "/", a, b),
    };
    let paren = prec < min_prec;
    if paren {
        out.push('(');
    }
    fmt_prec(kernel, a, prec, out);
    out.push_str(&format!(" {op} "));
    fmt_prec(kernel, b, prec + 1, out);
    if paren {
        out.push(')');
    }
}

/// Why a dim expression has no value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EvalErr {
    Unbound(SymId),
    Inexact,
    DivZero,
    Overflow,
}

fn eval(e: &DimExpr, vals: &[Option<i64>]) -> Result<i64, EvalErr> {
    Ok(match e {
        DimExpr::Sym(s) => vals.get(s.0 as usize).copied().flatten().ok_or(EvalErr::Unbound(*s))?,
        DimExpr::Const(c) => *c,
        DimExpr::Add(a, b) => eval(a, vals)?.checked_add(eval(b, vals)?).ok_or(EvalErr::Overflow)?,
        DimExpr::Sub(a, b) => eval(a, vals)?.checked_sub(eval(b, vals)?).ok_or(EvalErr::Overflow)?,
        DimExpr::Mul(a, b) => eval(a, vals)?.checked_mul(eval(b, vals)?).ok_or(EvalErr::Overflow)?,
        DimExpr::Div(a, b) => {
            let (a, b) = (eval(a, vals)?, eval(b, vals)?);
            if b == 0 {
                return Err(EvalErr::DivZero);
            }
            if a.checked_rem(b).ok_or(EvalErr::Overflow)? != 0 {
                return Err(EvalErr::Inexact);
            }
            a.checked_div(b).ok_or(EvalErr::Overflow)?
        }
    })
}

fn collect_syms(e: &DimExpr, out: &mut Vec<SymId>) {
    match e {
        DimExpr::Sym(s) => {
            if !out.contains(s) {
                out.push(*s)
            }
        }
        DimExpr::Const(_) => {}
        DimExpr::Add(a, b) | DimExpr::Sub(a, b) | DimExpr::Mul(a, b) | DimExpr::Div(a, b) => {
            collect_syms(a, out);
            collect_syms(b, out);
        }
    }
}

/// Where a symbol's value came from.
#[derive(Clone, Copy, Debug)]
enum Binder {
    /// (parameter index, dim index)
    Arg(usize, usize),
    Specialized,
}

struct Binding<'a> {
    kernel: &'a Kernel,
    vals: Vec<Option<i64>>,
    binders: Vec<Option<Binder>>,
}

impl Binding<'_> {
    fn binder_text(&self, s: SymId) -> String {
        match self.binders.get(s.0 as usize).copied().flatten() {
            Some(Binder::Arg(p, _)) => format!("bound by argument `{}`", self.kernel.params[p].name),
            Some(Binder::Specialized) => "specialized".into(),
            None => "unbound".into(),
        }
    }

    fn val_text(&self, s: SymId) -> String {
        match self.vals.get(s.0 as usize).copied().flatten() {
            Some(v) => v.to_string(),
            None => "?".into(),
        }
    }

    /// `K = 128, bound by argument `a`; N = 3, bound by argument `b``
    fn syms_with_binders(&self, exprs: &[&DimExpr]) -> String {
        let mut syms = vec![];
        for e in exprs {
            collect_syms(e, &mut syms);
        }
        syms.iter()
            .map(|&s| format!("{} = {}, {}", sym_name(self.kernel, s), self.val_text(s), self.binder_text(s)))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// `HQ = 6, HKV = 4`
    fn syms_values(&self, exprs: &[&DimExpr]) -> String {
        let mut syms = vec![];
        for e in exprs {
            collect_syms(e, &mut syms);
        }
        syms.iter().map(|&s| format!("{} = {}", sym_name(self.kernel, s), self.val_text(s))).collect::<Vec<_>>().join(", ")
    }

    fn eval_err_text(&self, e: &DimExpr, err: EvalErr) -> String {
        let what = match err {
            EvalErr::Unbound(s) => format!("uses the unbound dim `{}`", sym_name(self.kernel, s)),
            EvalErr::Inexact => "is not an integer".into(),
            EvalErr::DivZero => "divides by zero".into(),
            EvalErr::Overflow => "overflows".into(),
        };
        format!("`{}` {}", fmt_dim_expr(self.kernel, e), what)
    }
}

/// Bind every dim symbol from the tensor arguments and check all of them.
/// Returns one value per `SymId` (index = SymId.0). `args` are owned [`crate::Arg`]s or
/// borrowed [`ArgRef`]s: both are checked by this one routine, so errors are identical.
pub fn bind_dims<A: LaunchArg>(kernel: &Kernel, args: &[A]) -> Result<Vec<i64>, LaunchError> {
    let kname = &kernel.name;
    if args.len() != kernel.params.len() {
        return Err(LaunchError::ArgCount { kernel: kname.clone(), expected: kernel.params.len(), got: args.len() });
    }
    let arg_err = |p: usize, msg: String| LaunchError::Arg { kernel: kname.clone(), param: kernel.params[p].name.clone(), msg };
    let cons_err = |msg: String| LaunchError::Constraint { kernel: kname.clone(), msg };

    // 1. Kinds, dtypes, ranks and byte counts.
    for (pi, (p, a)) in kernel.params.iter().zip(args).enumerate() {
        match (&p.kind, a.view()) {
            (ParamKind::Tensor { dtype, dims, .. }, ArgRef::In(t)) => {
                if t.dtype != *dtype {
                    return Err(arg_err(pi, format!("expected {} {dtype} tensor, got {}", article(*dtype), t.dtype)));
                }
                if t.shape.len() != dims.len() {
                    let want = dims.iter().map(|d| fmt_dim_expr(kernel, d)).collect::<Vec<_>>().join(", ");
                    return Err(arg_err(
                        pi,
                        format!("expected a tensor of rank {} ([{want}]), got rank {} (shape {:?})", dims.len(), t.shape.len(), t.shape),
                    ));
                }
                let numel = t.shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
                let Some(numel) = numel.filter(|n| n.checked_mul(8).is_some()) else {
                    return Err(arg_err(pi, format!("shape {:?} has too many elements", t.shape)));
                };
                if t.shape.iter().any(|&d| d > i64::MAX as usize) {
                    return Err(arg_err(pi, format!("shape {:?} has a dim that is too large", t.shape)));
                }
                let want = dtype.storage_bytes(numel);
                if t.data.len() != want {
                    return Err(arg_err(
                        pi,
                        format!("{} {dtype} tensor of shape {:?} needs {want} bytes of data, got {}", article(*dtype), t.shape, t.data.len()),
                    ));
                }
            }
            (ParamKind::Tensor { dtype, .. }, other) => {
                return Err(arg_err(pi, format!("expected {} {dtype} tensor, got {}", article(*dtype), describe_arg(&other))));
            }
            (ParamKind::Scalar { dtype }, a) => {
                let ok = matches!((dtype, &a), (DType::F32, ArgRef::F32(_)) | (DType::I32, ArgRef::I32(_)) | (DType::Bool, ArgRef::Bool(_)));
                if !ok {
                    return Err(arg_err(pi, format!("expected {} {dtype} scalar, got {}", article(*dtype), describe_arg(&a))));
                }
            }
        }
    }

    // 2. Bind each symbol from the first tensor where it is a dim on its own.
    let nd = kernel.dims.len();
    let mut b = Binding { kernel, vals: vec![None; nd], binders: vec![None; nd] };
    for (pi, (p, a)) in kernel.params.iter().zip(args).enumerate() {
        let (ParamKind::Tensor { dims, .. }, Some(t)) = (&p.kind, a.tensor()) else { continue };
        for (d, e) in dims.iter().enumerate() {
            let DimExpr::Sym(s) = e else { continue };
            let si = s.0 as usize;
            if si >= nd {
                return Err(cons_err(format!("parameter `{}` uses dim symbol #{si}, but the kernel declares {nd}", p.name)));
            }
            if b.vals[si].is_some() {
                continue;
            }
            let v = t.shape[d] as i64;
            if let Some(c) = kernel.dims[si].value {
                if c != v {
                    return Err(arg_err(pi, format!("dim {d} is {v} but `{}` is specialized to {c}", kernel.dims[si].name)));
                }
            }
            b.vals[si] = Some(v);
            b.binders[si] = Some(Binder::Arg(pi, d));
        }
    }
    for si in 0..nd {
        if b.vals[si].is_none() {
            match kernel.dims[si].value {
                Some(c) => {
                    b.vals[si] = Some(c);
                    b.binders[si] = Some(Binder::Specialized);
                }
                None => {
                    return Err(cons_err(format!(
                        "dim `{}` cannot be bound: it is not a dim on its own of any tensor parameter",
                        kernel.dims[si].name
                    )))
                }
            }
        }
    }

    // 3. Every dim of every tensor against its expression.
    for (pi, (p, a)) in kernel.params.iter().zip(args).enumerate() {
        let (ParamKind::Tensor { dims, .. }, Some(t)) = (&p.kind, a.tensor()) else { continue };
        for (d, e) in dims.iter().enumerate() {
            let actual = t.shape[d] as i64;
            match e {
                DimExpr::Sym(s) => {
                    if let Some(Binder::Arg(bp, bd)) = b.binders[s.0 as usize] {
                        if (bp, bd) == (pi, d) {
                            continue;
                        }
                    }
                    let v = b.vals[s.0 as usize].unwrap_or(-1);
                    if v != actual {
                        return Err(arg_err(
                            pi,
                            format!("dim {d} is {actual} but `{}` is {v} ({})", sym_name(kernel, *s), b.binder_text(*s)),
                        ));
                    }
                }
                DimExpr::Const(c) => {
                    if *c != actual {
                        return Err(arg_err(pi, format!("dim {d} is {actual}, expected {c}")));
                    }
                }
                _ => match eval(e, &b.vals) {
                    Ok(v) if v == actual => {}
                    Ok(v) => {
                        return Err(arg_err(
                            pi,
                            format!("dim {d} is {actual} but `{}` is {v} ({})", fmt_dim_expr(kernel, e), b.syms_with_binders(&[e])),
                        ))
                    }
                    Err(err) => {
                        return Err(arg_err(
                            pi,
                            format!("dim {d} is {actual} but {} ({})", b.eval_err_text(e, err), b.syms_with_binders(&[e])),
                        ))
                    }
                },
            }
        }
    }

    // 4. Constraints.
    for c in &kernel.constraints {
        let ev = |e: &DimExpr| -> Result<i64, LaunchError> {
            eval(e, &b.vals).map_err(|err| cons_err(format!("{} ({})", b.eval_err_text(e, err), b.syms_values(&[e]))))
        };
        match c {
            Constraint::OneOf(e, allowed) => {
                let v = ev(e)?;
                if !allowed.contains(&v) {
                    let list = allowed.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ");
                    let extra = if matches!(e, DimExpr::Sym(_)) { String::new() } else { format!(" ({})", b.syms_values(&[e])) };
                    return Err(cons_err(format!("dim `{}` must be one of {{{list}}}, got {v}{extra}", fmt_dim_expr(kernel, e))));
                }
            }
            Constraint::MultipleOf(x, y) => {
                let (a, m) = (ev(x)?, ev(y)?);
                if m == 0 || a.checked_rem(m).is_none_or(|r| r != 0) {
                    let mut xs = String::new();
                    fmt_prec(kernel, x, 2, &mut xs);
                    let mut ys = String::new();
                    fmt_prec(kernel, y, 3, &mut ys);
                    return Err(cons_err(format!("constraint `{xs} % {ys} == 0` violated: {}", b.syms_values(&[x, y]))));
                }
            }
            Constraint::Range(e, lo, hi) => {
                let v = ev(e)?;
                let es = fmt_dim_expr(kernel, e);
                let vals = if matches!(e, DimExpr::Sym(_)) {
                    b.syms_values(&[e])
                } else {
                    format!("{es} = {v} ({})", b.syms_values(&[e]))
                };
                if let Some(lo) = lo {
                    if v < *lo {
                        return Err(cons_err(format!("constraint `{es} >= {lo}` violated: {vals}")));
                    }
                }
                if let Some(hi) = hi {
                    if v > *hi {
                        return Err(cons_err(format!("constraint `{es} <= {hi}` violated: {vals}")));
                    }
                }
            }
        }
    }

    // 5. Borrowed launches: an `out` tensor must be lent writable (`ArgRef::Out`).
    for (pi, (p, a)) in kernel.params.iter().zip(args).enumerate() {
        if matches!(p.kind, ParamKind::Tensor { output: true, .. }) && !a.writable() {
            return Err(arg_err(pi, "is an `out` tensor, written by the kernel: lend it as `ArgRef::Out`, not `ArgRef::In`".into()));
        }
    }

    Ok(b.vals.into_iter().map(|v| v.unwrap_or(0)).collect())
}

/// Evaluate the grid block: always three extents (missing axes are 1).
pub fn grid(kernel: &Kernel, dims: &[i64]) -> Result<[usize; 3], LaunchError> {
    let exec_err = |msg: String| LaunchError::Exec { kernel: kernel.name.clone(), msg };
    let ext = crate::interp::eval_grid(kernel, dims).map_err(exec_err)?;
    if ext.is_empty() || ext.len() > 3 {
        return Err(exec_err(format!("the grid block yields {} extents; 1 to 3 are allowed", ext.len())));
    }
    let mut g = [1usize; 3];
    for (i, &e) in ext.iter().enumerate() {
        if e < 0 {
            return Err(exec_err(format!("grid extent {i} is negative: {e}")));
        }
        g[i] = e as usize;
    }
    if g[0].checked_mul(g[1]).and_then(|x| x.checked_mul(g[2])).is_none() {
        return Err(exec_err(format!("grid {g:?} has too many programs")));
    }
    Ok(g)
}
