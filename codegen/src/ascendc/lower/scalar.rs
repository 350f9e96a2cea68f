//! Scalar code: rank-0 ops on the scalar unit, and the scalar-loop fallback for tile ops that
//! have no vector instruction (`GetValue`/`SetValue` loops on pipe S, bracketed by
//! `PipeBarrier<PIPE_ALL>` so every pipe's earlier writes are visible and the scalar writes are
//! visible to every later instruction).
//!
//! Scalar semantics follow the tile IR exactly: 16-bit floats are held as `float`s rounded after
//! every op (`OpcF16` / `OpcBf16`), ints wrap to their width, integer division by zero gives 0.
//! The helpers are defined once per kernel file (see `emit.rs`, `PRELUDE`).

use opc_ir::{BinaryOp, CmpPred, DType, Op, OpKind, Rounding, Scalar, UnaryOp, ValueId};

use super::{elem_bytes, layout, scalar_ctype, Lower, Val};
use crate::ascendc::lir::{BufId, Effect, Pipe, Res};
use crate::Result;

/// C++ literal of a constant of dtype `d`.
pub(in crate::ascendc) fn literal(c: Scalar, d: DType) -> String {
    match c {
        Scalar::Bool(b) => {
            if d == DType::Bool {
                b.to_string()
            } else {
                (b as i32).to_string()
            }
        }
        Scalar::Int(i) => {
            if d.is_float() {
                float_lit(i as f64, d)
            } else if d == DType::Bool {
                (i != 0).to_string()
            } else {
                format!("{i}")
            }
        }
        Scalar::Float(f) => {
            if d.is_float() {
                float_lit(f, d)
            } else {
                format!("{}", f as i64)
            }
        }
    }
}

fn float_lit(f: f64, d: DType) -> String {
    let v = opc_ir::numerics::round_float(d, f) as f32;
    if v.is_nan() {
        "(kOpcInf - kOpcInf)".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "kOpcInf".into()
        } else {
            "(-kOpcInf)".into()
        }
    } else {
        let s = format!("{v:?}");
        if s.contains('e') || s.contains('.') {
            format!("{s}f")
        } else {
            format!("{s}.0f")
        }
    }
}

/// Round an f32 expression to dtype `d`.
pub(in crate::ascendc) fn round(d: DType, e: String) -> String {
    match d {
        DType::F16 => format!("OpcF16({e})"),
        DType::BF16 => format!("OpcBf16({e})"),
        _ => e,
    }
}

fn int_bits(d: DType) -> (u32, bool) {
    match d {
        DType::I4 => (4, true),
        DType::I8 => (8, true),
        DType::U8 | DType::E8M0 => (8, false),
        DType::E2M1 => (4, false),
        DType::Bool => (1, false),
        _ => (32, true),
    }
}

fn wrap(d: DType, e: String) -> String {
    let (bits, sgn) = int_bits(d);
    format!("OpcWrap({e}, {bits}, {sgn})")
}

fn rounding_code(r: Rounding) -> u32 {
    match r {
        Rounding::Rne => 0,
        Rounding::Rtz => 1,
        Rounding::Floor => 2,
        Rounding::Ceil => 3,
    }
}

/// The scalar C++ expression of an elementwise op, or `None` where the scalar unit has no
/// instruction for it (transcendental functions: see [`Lower::scalar_via_vector`]).
pub(in crate::ascendc) fn expr(kind: &OpKind, from: DType, to: DType, a: &[String]) -> Option<String> {
    let f = from.is_float();
    Some(match kind {
        OpKind::Unary(u) => {
            let x = &a[0];
            match u {
                UnaryOp::Neg if f => format!("(-{x})"),
                UnaryOp::Neg => wrap(to, format!("-static_cast<int64_t>({x})")),
                UnaryOp::Not if to == DType::Bool => format!("(!{x})"),
                UnaryOp::Not => wrap(to, format!("~static_cast<int64_t>({x})")),
                UnaryOp::Abs if f => format!("OpcAbs({x})"),
                UnaryOp::Abs => wrap(to, format!("OpcAbsI({x})")),
                UnaryOp::Recip => round(to, format!("(1.0f / {x})")),
                UnaryOp::Floor => format!("OpcFloor({x})"),
                UnaryOp::Ceil => format!("(-OpcFloor(-{x}))"),
                UnaryOp::Round => format!("OpcRint({x})"),
                UnaryOp::IsNan => format!("({x} != {x})"),
                UnaryOp::IsInf => format!("({x} == kOpcInf || {x} == -kOpcInf)"),
                _ => return None,
            }
        }
        OpKind::Binary(b) => {
            let (x, y) = (&a[0], &a[1]);
            if f {
                match b {
                    BinaryOp::Add => round(to, format!("({x} + {y})")),
                    BinaryOp::Sub => round(to, format!("({x} - {y})")),
                    BinaryOp::Mul => round(to, format!("({x} * {y})")),
                    BinaryOp::Div => round(to, format!("({x} / {y})")),
                    BinaryOp::Max => format!("OpcMax({x}, {y})"),
                    BinaryOp::Min => format!("OpcMin({x}, {y})"),
                    _ => return None,
                }
            } else if to == DType::Bool {
                match b {
                    BinaryOp::And => format!("({x} && {y})"),
                    BinaryOp::Or => format!("({x} || {y})"),
                    BinaryOp::Xor => format!("({x} != {y})"),
                    BinaryOp::Max => format!("({x} || {y})"),
                    BinaryOp::Min => format!("({x} && {y})"),
                    _ => return None,
                }
            } else {
                let (bits, _) = int_bits(to);
                let (x64, y64) = (format!("static_cast<int64_t>({x})"), format!("static_cast<int64_t>({y})"));
                match b {
                    BinaryOp::Add => wrap(to, format!("({x64} + {y64})")),
                    BinaryOp::Sub => wrap(to, format!("({x64} - {y64})")),
                    BinaryOp::Mul => wrap(to, format!("({x64} * {y64})")),
                    BinaryOp::Div => wrap(to, format!("OpcDiv({x64}, {y64})")),
                    BinaryOp::Rem => wrap(to, format!("OpcRem({x64}, {y64})")),
                    BinaryOp::Max => format!("({x} > {y} ? {x} : {y})"),
                    BinaryOp::Min => format!("({x} < {y} ? {x} : {y})"),
                    BinaryOp::And => wrap(to, format!("({x64} & {y64})")),
                    BinaryOp::Or => wrap(to, format!("({x64} | {y64})")),
                    BinaryOp::Xor => wrap(to, format!("({x64} ^ {y64})")),
                    BinaryOp::Shl => wrap(to, format!("OpcShl({x64}, {y64}, {bits})")),
                    BinaryOp::Shr => format!("static_cast<int32_t>(OpcShr({x64}, {y64}, {bits}))"),
                    BinaryOp::Pow => return None,
                }
            }
        }
        OpKind::Cmp(p) => {
            let op = match p {
                CmpPred::Eq => "==",
                CmpPred::Ne => "!=",
                CmpPred::Lt => "<",
                CmpPred::Le => "<=",
                CmpPred::Gt => ">",
                CmpPred::Ge => ">=",
            };
            format!("({} {op} {})", a[0], a[1])
        }
        OpKind::Select => format!("({} ? {} : {})", a[0], a[1], a[2]),
        OpKind::Cast(r) => cast(from, to, *r, &a[0])?,
        OpKind::Bitcast => match (from, to) {
            _ if from == to => a[0].clone(),
            (DType::F32, DType::I32) => format!("OpcF32Bits({})", a[0]),
            (DType::I32, DType::F32) => format!("OpcBitsF32({})", a[0]),
            (x, y) if !x.is_float() && !y.is_float() => wrap(to, format!("static_cast<int64_t>(OpcWrap({}, {}, false))", a[0], int_bits(from).0)),
            _ => return None,
        },
        _ => return None,
    })
}

fn cast(from: DType, to: DType, r: Rounding, x: &str) -> Option<String> {
    if from == to {
        return Some(x.to_string());
    }
    Some(match (from.is_float(), to.is_float()) {
        (true, true) => match to {
            DType::F32 => x.to_string(),
            _ if r == Rounding::Rne => round(to, x.to_string()),
            _ => return None,
        },
        (true, false) => match to {
            DType::Bool => format!("({x} != 0.0f)"),
            DType::E2M1 => format!("OpcE2M1Enc({x}, {})", rounding_code(r)),
            DType::E8M0 => return None,
            _ => {
                let (lo, hi) = to.int_range()?;
                format!("OpcF2I({x}, {}, {lo}LL, {hi}LL)", rounding_code(r))
            }
        },
        (false, true) => match from {
            DType::E2M1 => round(to, format!("OpcE2M1({x})")),
            DType::E8M0 => round(to, format!("OpcE8M0({x})")),
            _ => round(to, format!("static_cast<float>({x})")),
        },
        (false, false) => match to {
            DType::Bool if from.is_code() => return None,
            DType::Bool => format!("({x} != 0)"),
            DType::E2M1 | DType::E8M0 if from != DType::Bool => wrap(to, format!("static_cast<int64_t>({x})")),
            DType::E2M1 | DType::E8M0 => return None,
            _ => wrap(to, format!("static_cast<int64_t>({x})")),
        },
    })
}

impl Lower<'_> {
    /// Transcendental scalar math through the vector unit (the scalar unit has none):
    /// `ScalarExp` / `ScalarLn` / `ScalarSqrt` members of the kernel class.
    pub(super) fn scalar_via_vector(&mut self, op: &Op, from: DType, to: DType, a: &[String]) -> Result<String> {
        let x = a.first().cloned().unwrap_or_default();
        let e = match &op.kind {
            OpKind::Unary(u) if from.is_float() => match u {
                UnaryOp::Exp => format!("ScalarExp({x})"),
                UnaryOp::Exp2 => format!("ScalarExp({x} * 0.6931471805599453f)"),
                UnaryOp::Log => format!("ScalarLn({x})"),
                UnaryOp::Log2 => format!("(ScalarLn({x}) * 1.4426950408889634f)"),
                UnaryOp::Sqrt => format!("ScalarSqrt({x})"),
                UnaryOp::Rsqrt => format!("(1.0f / ScalarSqrt({x}))"),
                UnaryOp::Sigmoid => format!("(1.0f / (1.0f + ScalarExp(-{x})))"),
                UnaryOp::Silu => format!("({x} / (1.0f + ScalarExp(-{x})))"),
                UnaryOp::Tanh => format!("(2.0f / (1.0f + ScalarExp(-2.0f * {x})) - 1.0f)"),
                _ => return Err(self.unsupported(op, "no scalar or vector instruction for this function on the 910B")),
            },
            _ => return Err(self.unsupported(op, "no scalar or vector instruction for this op and dtype")),
        };
        Ok(round(to, e))
    }

    /// A C++ expression for element `idx` (loop variable names) of value `v`.
    pub(super) fn elem(&self, v: ValueId, idx: &[String]) -> String {
        let d = self.dtype(v);
        let read = |buf: BufId, off: i64, strides: &[i64]| -> String {
            let mut lin = off.to_string();
            for (i, s) in idx.iter().zip(strides) {
                if *s != 0 {
                    lin = format!("{lin} + {i} * {s}");
                }
            }
            let g = format!("{}.GetValue({lin})", self.bname(buf));
            match d {
                DType::Bool => format!("({g} != 0)"),
                _ => format!("static_cast<{}>({g})", scalar_ctype(d)),
            }
        };
        match self.val(v) {
            Val::Scalar(s) | Val::Splat(s) => s,
            Val::Affine { base, coefs } => {
                let mut e = base;
                for (i, c) in idx.iter().zip(&coefs) {
                    if *c != 0 {
                        e = format!("{e} + {c} * {i}");
                    }
                }
                format!("({e})")
            }
            Val::Tile(b) => read(b, 0, &layout(d, &self.shape(v)).0),
            Val::View { buf, off, strides } => read(buf, off, &strides),
            Val::Gm(_) => "/* cube operand in GM */0".into(),
            Val::Pred(p) => p.at(idx),
        }
    }

    /// Buffers a value reads.
    pub(super) fn bufs_of(&self, v: ValueId) -> Vec<Res> {
        match self.val(v) {
            Val::Tile(b) | Val::View { buf: b, .. } => vec![Res::Buf(b)],
            _ => vec![],
        }
    }

    /// `for (i0..) for (i1..) { body(idx) }` text over `shape`.
    pub(super) fn loop_nest(shape: &[usize], body: &str, names: &[String]) -> String {
        let mut s = String::new();
        for (i, (n, name)) in shape.iter().zip(names).enumerate() {
            s.push_str(&format!("{}for (int32_t {name} = 0; {name} < {n}; ++{name}) {{\n", "    ".repeat(i)));
        }
        s.push_str(&format!("{}{body}\n", "    ".repeat(shape.len())));
        for i in (0..shape.len()).rev() {
            s.push_str(&format!("{}}}\n", "    ".repeat(i)));
        }
        s.trim_end().to_string()
    }

    pub(super) fn idx_names(&mut self, rank: usize) -> Vec<String> {
        let base = self.fresh("e");
        (0..rank).map(|i| format!("{base}_{i}")).collect()
    }

    /// Linear padded offset of `idx` in a tile of dtype `d` and `shape`.
    pub(super) fn lin(d: DType, shape: &[usize], idx: &[String]) -> String {
        let (strides, _) = layout(d, shape);
        let parts: Vec<String> = idx.iter().zip(&strides).map(|(i, s)| if *s == 1 { i.clone() } else { format!("{i} * {s}") }).collect();
        if parts.is_empty() {
            "0".into()
        } else {
            parts.join(" + ")
        }
    }

    /// A scalar loop writing `dst` (dtype `d`, `shape`) element by element from `value(idx)`,
    /// reading `reads`.
    pub(super) fn scalar_fill(&mut self, dst: BufId, d: DType, shape: &[usize], reads: Vec<Res>, value: &dyn Fn(&Lower, &[String]) -> String) {
        let idx = self.idx_names(shape.len());
        let v = value(self, &idx);
        let body = format!("{}.SetValue({}, static_cast<{}>({v}));", self.bname(dst), Self::lin(d, shape, &idx), super::ctype(d));
        let text = Self::loop_nest(shape, &body, &idx);
        self.barrier_all();
        self.instr(Pipe::S, text, reads, vec![Res::Buf(dst)], Effect::None);
        self.barrier_all();
    }

    /// Elementwise tile op on the scalar unit.
    pub(super) fn scalar_elementwise(&mut self, op: &Op) -> Result<()> {
        let r = op.results[0];
        let (d, shape) = (self.dtype(r), self.shape(r));
        let from = op.args.first().map(|a| self.dtype(*a)).unwrap_or(d);
        // Check the op has a scalar form before emitting anything.
        let probe: Vec<String> = op.args.iter().map(|_| "x".to_string()).collect();
        if expr(&op.kind, from, d, &probe).is_none() {
            return Err(self.unsupported(op, &format!("no instruction for this op on {from} tiles in the AscendC backend")));
        }
        let dst = self.alloc(d, &shape, self.last_use(r), format!("%{} {}", r.0, self.k.ty(r)));
        let reads: Vec<Res> = op.args.iter().flat_map(|a| self.bufs_of(*a)).collect();
        let kind = op.kind.clone();
        let args = op.args.clone();
        self.scalar_fill(dst, d, &shape, reads, &|l, idx| {
            let a: Vec<String> = args.iter().map(|a| l.elem(*a, idx)).collect();
            expr(&kind, from, d, &a).unwrap_or_default()
        });
        self.set(r, Val::Tile(dst));
        Ok(())
    }

    /// `cumsum` along an axis, on the scalar unit.
    pub(super) fn scalar_scan(&mut self, op: &Op) -> Result<()> {
        let r = op.results[0];
        let OpKind::Scan { axis, .. } = op.kind else { return Err(self.unsupported(op, "not a scan")) };
        let (d, shape) = (self.dtype(r), self.shape(r));
        let x = op.args[0];
        let dst = self.alloc(d, &shape, self.last_use(r), format!("%{} {}", r.0, self.k.ty(r)));
        let idx = self.idx_names(shape.len());
        let axis = axis as usize;
        let mut outer = shape.clone();
        outer[axis] = 1;
        let ax = &idx[axis];
        let acc_t = scalar_ctype(d);
        let add = match d {
            _ if d.is_float() => round(d, "(acc + v)".into()),
            _ => wrap(d, "(static_cast<int64_t>(acc) + v)".into()),
        };
        let inner = format!(
            "{acc_t} acc = 0;\nfor (int32_t {ax} = 0; {ax} < {n}; ++{ax}) {{\n    const {acc_t} v = {e};\n    acc = {add};\n    {dst}.SetValue({lin}, static_cast<{ct}>(acc));\n}}",
            n = shape[axis],
            e = self.elem(x, &idx),
            dst = self.bname(dst),
            lin = Self::lin(d, &shape, &idx),
            ct = super::ctype(d)
        );
        let text = Self::loop_nest(&outer, &inner.replace('\n', "\n    "), &idx);
        self.barrier_all();
        self.instr(Pipe::S, text, self.bufs_of(x), vec![Res::Buf(dst)], Effect::None);
        self.barrier_all();
        self.set(r, Val::Tile(dst));
        Ok(())
    }

    /// Reduction on the scalar unit (any axis, any op including argmax / argmin).
    pub(super) fn scalar_reduce(&mut self, op: &Op, rop: opc_ir::ReduceOp, axis: usize) -> Result<()> {
        use opc_ir::ReduceOp as R;
        let r = op.results[0];
        let x = op.args[0];
        let (d, xd, xs) = (self.dtype(r), self.dtype(x), self.shape(x));
        let rshape = self.shape(r);
        let idx = self.idx_names(xs.len());
        let ax = idx[axis].clone();
        let st = scalar_ctype(xd);
        let e = self.elem(x, &idx);
        let (init, step) = match rop {
            R::Sum if xd.is_float() => ("0.0f".to_string(), "acc = acc + v;".to_string()),
            R::Sum => ("0".into(), format!("acc = {};", wrap(xd, "static_cast<int64_t>(acc) + v".into()))),
            R::Max if xd.is_float() => ("(-kOpcInf)".into(), "acc = OpcMax(acc, v);".into()),
            R::Min if xd.is_float() => ("kOpcInf".into(), "acc = OpcMin(acc, v);".into()),
            R::Max => (format!("{}", xd.int_range().map(|r| r.0).unwrap_or(0)), "acc = v > acc ? v : acc;".into()),
            R::Min => (format!("{}", xd.int_range().map(|r| r.1).unwrap_or(0)), "acc = v < acc ? v : acc;".into()),
            R::Argmax | R::Argmin => {
                // First best element; NaN is never chosen (the interpreter's rule).
                let better = if rop == R::Argmax { "v > acc" } else { "v < acc" };
                let not_nan = if xd.is_float() { "v == v && " } else { "" };
                ("0".into(), format!("if ({not_nan}(best < 0 || {better})) {{ acc = v; best = {ax}; }}"))
            }
        };
        let arg = matches!(rop, R::Argmax | R::Argmin);
        // 16-bit float sums round once at the end (the interpreter accumulates in f32).
        let fin = if arg {
            "best".to_string()
        } else if xd.is_float() {
            round(d, "acc".into())
        } else {
            "acc".into()
        };
        let (acc_decl, best_decl) =
            if arg { (format!("{st} acc = {st}(0);"), "int32_t best = -1;".to_string()) } else { (format!("{st} acc = {init};"), String::new()) };
        let inner = format!("{acc_decl} {best_decl}\nfor (int32_t {ax} = 0; {ax} < {n}; ++{ax}) {{\n    const {st} v = {e};\n    {step}\n}}", n = xs[axis]);
        let mut oidx = idx.clone();
        oidx.remove(axis);
        let mut outer = xs.clone();
        outer[axis] = 1;
        if rshape.is_empty() {
            let name = format!("s{}", r.0);
            let fin = if arg { "(best < 0 ? 0 : best)".to_string() } else { fin };
            self.line(format!("{} {name} = 0;", scalar_ctype(d)));
            let text = format!("{{\n    {}\n    {name} = {fin};\n}}", inner.replace('\n', "\n    "));
            self.barrier_all();
            self.instr(Pipe::S, text, self.bufs_of(x), vec![], Effect::None);
            self.set(r, Val::Scalar(name));
            return Ok(());
        }
        let dst = self.alloc(d, &rshape, self.last_use(r), format!("%{} {}", r.0, self.k.ty(r)));
        let fin = if arg { "(best < 0 ? 0 : best)".to_string() } else { fin };
        let body = format!("{inner}\n{}.SetValue({}, static_cast<{}>({fin}));", self.bname(dst), Self::lin(d, &rshape, &oidx), super::ctype(d));
        // The loop over the reduced axis is inside `body`; walk the others.
        let names: Vec<String> = idx.iter().enumerate().filter(|(i, _)| *i != axis).map(|(_, n)| n.clone()).collect();
        let oshape: Vec<usize> = xs.iter().enumerate().filter(|(i, _)| *i != axis).map(|(_, n)| *n).collect();
        let text = Self::loop_nest(&oshape, &body.replace('\n', &format!("\n{}", "    ".repeat(oshape.len()))), &names);
        self.barrier_all();
        self.instr(Pipe::S, text, self.bufs_of(x), vec![Res::Buf(dst)], Effect::None);
        self.barrier_all();
        self.set(r, Val::Tile(dst));
        let _ = elem_bytes;
        Ok(())
    }
}
