//! The IR verifier: checks the structural and typing rules documented in [`crate::ir`], so that
//! passes, backends and the interpreter can rely on them instead of re-checking.
//!
//! What is checked:
//! - Header: parameter, dim and tunable names are unique (the text form refers to them by
//!   name); scalar parameters are f32, i32 or bool; dim expressions name declared dims;
//!   tunables are level 1 or 2 with their value in their space.
//! - SSA: every id used has a type in `Kernel::values`; each value is defined exactly once (op
//!   result or block argument) and used only where its definition dominates: earlier in the same
//!   block or in an enclosing block. Region arguments are scoped to their region; grid values
//!   are not visible in the body.
//! - Per op: operand, result and region counts, and operand / result types, following the
//!   conventions on [`OpKind`]. Storage-only codes (`e2m1`, `e8m0`) may be loaded, stored, cast,
//!   bitcast, selected and moved (broadcast, expand_dims, reshape, permute), never computed on.
//! - Blocks: `yield` only as the last op of a `for`/`if` region or of the grid block; the grid
//!   holds only const/dim/binary/cmp/select/cast ops on scalars and yields 1 to 3 i32 scalars;
//!   the body has no top-level `yield`; `program_id`/`num_programs` axes are below the number
//!   of grid extents.
//!
//! Messages name the op as printed (`%12 = add`, `store @c`) and say what is wrong, e.g.
//! `%12 = add: operand types f32[64] and f16[64] differ`, followed by ` (at L:C)` when the op
//! has a location. Verification stops at the first error. No input panics.

use crate::ir::*;
use crate::printer::{print_name, print_scalar};
use crate::types::{DType, TileType};

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("verifier: kernel `{kernel}`: {msg}")]
pub struct VerifyError {
    pub kernel: String,
    pub msg: String,
}

/// Check every rule listed in the module docs; the first violation is returned.
pub fn verify(kernel: &Kernel) -> Result<(), VerifyError> {
    let n = kernel.values.len();
    let mut all_defs = vec![false; n];
    let mut mark = |vs: &[ValueId]| vs.iter().for_each(|v| set(&mut all_defs, *v, true));
    for b in [&kernel.grid, &kernel.body] {
        mark(&b.args);
        walk_ops(b, &mut |op| {
            mark(&op.results);
            op.regions.iter().for_each(|r| mark(&r.args));
        });
    }
    let mut v = Verifier { k: kernel, all_defs, defined: vec![false; n], live: vec![false; n], extents: 0 };
    v.run().map_err(|msg| VerifyError { kernel: kernel.name.clone(), msg })
}

type Res = Result<(), String>;

fn set(flags: &mut [bool], v: ValueId, to: bool) {
    if let Some(f) = flags.get_mut(v.0 as usize) {
        *f = to;
    }
}

fn get(flags: &[bool], v: ValueId) -> bool {
    flags.get(v.0 as usize).copied().unwrap_or(false)
}

/// Where a block sits, for the rules on `yield` and on grid ops.
#[derive(Clone, Copy, PartialEq)]
enum Ctx {
    Grid,
    Body,
    Region,
}

struct Verifier<'a> {
    k: &'a Kernel,
    /// Ids defined anywhere in the kernel (to tell "used before definition" from "never defined").
    all_defs: Vec<bool>,
    /// Ids defined so far in the walk (a second definition is an error).
    defined: Vec<bool>,
    /// Ids visible at the current point.
    live: Vec<bool>,
    /// Number of grid extents, known once the grid block is verified.
    extents: usize,
}

fn is_num(d: DType) -> bool {
    d.is_int() || d.is_float()
}

fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

fn fmt_shape(s: &[usize]) -> String {
    format!("[{}]", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "))
}

/// Casts between any int, float and bool types; codes only to and from ints and floats.
fn cast_ok(from: DType, to: DType) -> bool {
    match (from.is_code(), to.is_code()) {
        (false, false) => true,
        (true, false) => is_num(to),
        (false, true) => is_num(from),
        (true, true) => false,
    }
}

impl<'a> Verifier<'a> {
    fn run(&mut self) -> Res {
        self.header()?;
        let k = self.k;
        if !k.grid.args.is_empty() {
            return Err("the grid block takes no arguments".into());
        }
        if !k.body.args.is_empty() {
            return Err("the body block takes no arguments".into());
        }
        let Some(last) = k.grid.ops.last().filter(|op| op.kind == OpKind::Yield) else {
            return Err("the grid block must end in `yield` of 1 to 3 i32 scalar extents".into());
        };
        self.block(&k.grid, Ctx::Grid, "grid")?;
        if !(1..=3).contains(&last.args.len()) {
            return Err(format!("grid `yield` gives {} extents; 1 to 3 are allowed", last.args.len()));
        }
        for &a in &last.args {
            let t = self.ty(a)?;
            if *t != TileType::scalar(DType::I32) {
                return Err(format!("grid `yield`: extent %{} is {t}, not an i32 scalar", a.0));
            }
        }
        self.extents = last.args.len();
        self.block(&k.body, Ctx::Body, "body")
    }

    fn header(&self) -> Res {
        let k = self.k;
        unique(k.params.iter().map(|p| &p.name), "parameter")?;
        unique(k.dims.iter().map(|d| &d.name), "dim")?;
        unique(k.tunables.iter().map(|t| &t.name), "tunable")?;
        for p in &k.params {
            let what = format!("parameter {}", print_name(&p.name));
            match &p.kind {
                ParamKind::Scalar { dtype } if !matches!(dtype, DType::F32 | DType::I32 | DType::Bool) => {
                    return Err(format!("{what}: scalar parameters are f32, i32 or bool, not {dtype}"))
                }
                ParamKind::Scalar { .. } => {}
                ParamKind::Tensor { dims, .. } => dims.iter().try_for_each(|d| self.dim_expr(d, &what))?,
            }
        }
        for c in &k.constraints {
            match c {
                Constraint::OneOf(e, _) | Constraint::Range(e, _, _) => self.dim_expr(e, "constraint")?,
                Constraint::MultipleOf(a, b) => {
                    self.dim_expr(a, "constraint")?;
                    self.dim_expr(b, "constraint")?;
                }
            }
        }
        for t in &k.tunables {
            let name = print_name(&t.name);
            if !(1..=2).contains(&t.level) {
                return Err(format!("tunable {name}: level {} is not 1 or 2", t.level));
            }
            if !t.space.contains(&t.value) {
                return Err(format!("tunable {name}: value {} is not in its space {:?}", t.value, t.space));
            }
        }
        Ok(())
    }

    fn dim_expr(&self, e: &DimExpr, what: &str) -> Res {
        match e {
            DimExpr::Sym(s) if s.0 as usize >= self.k.dims.len() => {
                Err(format!("{what}: dim expression uses dim #{}, but the kernel declares {}", s.0, self.k.dims.len()))
            }
            DimExpr::Sym(_) | DimExpr::Const(_) => Ok(()),
            DimExpr::Add(a, b) | DimExpr::Sub(a, b) | DimExpr::Mul(a, b) | DimExpr::Div(a, b) => {
                self.dim_expr(a, what)?;
                self.dim_expr(b, what)
            }
        }
    }

    fn ty(&self, v: ValueId) -> Result<&'a TileType, String> {
        self.k
            .values
            .get(v.0 as usize)
            .ok_or_else(|| format!("value %{} has no type (`values` has {} entries)", v.0, self.k.values.len()))
    }

    fn define(&mut self, v: ValueId) -> Res {
        self.ty(v)?;
        if get(&self.defined, v) {
            return Err(format!("%{} is defined more than once", v.0));
        }
        set(&mut self.defined, v, true);
        set(&mut self.live, v, true);
        Ok(())
    }

    fn use_(&self, v: ValueId) -> Res {
        self.ty(v).map_err(|_| format!("operand %{} has no type (`values` has {} entries)", v.0, self.k.values.len()))?;
        if get(&self.live, v) {
            Ok(())
        } else if get(&self.defined, v) {
            Err(format!("operand %{} is used outside the block or region that defines it", v.0))
        } else if get(&self.all_defs, v) {
            Err(format!("operand %{} is used before its definition", v.0))
        } else {
            Err(format!("operand %{} is never defined", v.0))
        }
    }

    /// Verify a block's ops in order; its arguments and results go out of scope at the end.
    fn block(&mut self, b: &Block, ctx: Ctx, owner: &str) -> Res {
        let mut scope = vec![];
        for &a in &b.args {
            self.define(a).map_err(|m| format!("{owner}: region argument: {m}"))?;
            scope.push(a);
        }
        for (i, op) in b.ops.iter().enumerate() {
            self.op(op, ctx, i + 1 == b.ops.len())?;
            scope.extend(&op.results);
        }
        for v in scope {
            set(&mut self.live, v, false);
        }
        Ok(())
    }

    /// `%3 = add`, `%1, %2 = for`, `store @c`: how messages name an op.
    fn label(&self, op: &Op) -> String {
        let mut s = String::new();
        if !op.results.is_empty() {
            let rs: Vec<String> = op.results.iter().map(|v| format!("%{}", v.0)).collect();
            s = format!("{} = ", rs.join(", "));
        }
        s += op.kind.mnemonic();
        if let OpKind::Load { tensor, .. } | OpKind::Store { tensor, .. } | OpKind::AtomicAdd { tensor, .. } = op.kind {
            if let Some(p) = self.k.params.get(tensor) {
                s += &format!(" {}", print_name(&p.name));
            }
        }
        s
    }

    fn op(&mut self, op: &Op, ctx: Ctx, last: bool) -> Res {
        let loc = op.loc.map_or(String::new(), |l| format!(" (at {}:{})", l.line, l.col));
        let label = self.label(op);
        let fail = |m: String| format!("{label}: {m}{loc}");
        let local = |v: &Self| -> Res {
            op.args.iter().try_for_each(|&a| v.use_(a))?;
            op.results.iter().try_for_each(|&r| v.ty(r).map(|_| ()))?;
            v.placement(op, ctx, last)?;
            v.check(op)
        };
        local(self).map_err(fail)?;
        if matches!(op.kind, OpKind::For | OpKind::If) {
            for r in &op.regions {
                self.block(r, Ctx::Region, &label)?;
            }
            self.region_yields(op).map_err(fail)?;
        }
        op.results.iter().try_for_each(|&r| self.define(r)).map_err(fail)
    }

    /// Where an op may appear: `yield` placement and the grid's op subset.
    fn placement(&self, op: &Op, ctx: Ctx, last: bool) -> Res {
        if op.kind == OpKind::Yield {
            if ctx == Ctx::Body {
                return Err("`yield` is not allowed at the top level of the body".into());
            }
            if !last {
                return Err("`yield` must be the last op of its block".into());
            }
        }
        if ctx == Ctx::Grid {
            let ok = matches!(
                op.kind,
                OpKind::Const(_) | OpKind::Dim(_) | OpKind::Binary(_) | OpKind::Cmp(_) | OpKind::Select | OpKind::Cast(_) | OpKind::Yield
            );
            if !ok {
                return Err(format!("`{}` is not allowed in the grid block (only const, dim, binary, cmp, select and cast)", op.kind.mnemonic()));
            }
            for &r in &op.results {
                let t = self.ty(r)?;
                if !t.is_scalar() {
                    return Err(format!("grid values must be scalars, result %{} is {t}", r.0));
                }
            }
        }
        Ok(())
    }

    /// Operand, result and region counts.
    fn counts(&self, op: &Op, args: std::ops::RangeInclusive<usize>, results: usize, regions: usize) -> Res {
        if !args.contains(&op.args.len()) {
            let want = if args.start() == args.end() { args.start().to_string() } else { format!("{} to {}", args.start(), args.end()) };
            return Err(format!("expects {want} operands, got {}", op.args.len()));
        }
        if op.results.len() != results {
            return Err(format!("expects {results} results, got {}", op.results.len()));
        }
        if op.regions.len() != regions {
            return Err(format!("expects {regions} regions, got {}", op.regions.len()));
        }
        Ok(())
    }

    fn arg(&self, op: &Op, i: usize) -> Result<&'a TileType, String> {
        self.ty(*op.args.get(i).ok_or("missing operand")?)
    }

    fn res(&self, op: &Op) -> Result<&'a TileType, String> {
        self.ty(*op.results.first().ok_or("missing result")?)
    }

    /// The per-kind rules (everything but regions' contents).
    fn check(&self, op: &Op) -> Res {
        let k = self.k;
        let i32s = TileType::scalar(DType::I32);
        let expect = |r: &TileType, want: &TileType| -> Res {
            if r == want {
                Ok(())
            } else {
                Err(format!("result must be {want}, got {r}"))
            }
        };
        match &op.kind {
            OpKind::Const(s) => {
                self.counts(op, 0..=0, 1, 0)?;
                let r = self.res(op)?;
                let ok = match s {
                    Scalar::Int(i) => r.dtype.is_int() && r.dtype.int_range().is_some_and(|(lo, hi)| (lo..=hi).contains(i)),
                    Scalar::Float(_) => r.dtype.is_float(),
                    Scalar::Bool(_) => r.dtype == DType::Bool,
                };
                if !ok {
                    let kind = match s {
                        Scalar::Int(_) => "integer",
                        Scalar::Float(_) => "float",
                        Scalar::Bool(_) => "bool",
                    };
                    return Err(format!("{kind} constant {} does not fit result type {r}", print_scalar(s)));
                }
            }
            OpKind::ProgramId(axis) | OpKind::NumPrograms(axis) => {
                self.counts(op, 0..=0, 1, 0)?;
                expect(self.res(op)?, &i32s)?;
                if *axis as usize >= self.extents {
                    return Err(format!("grid axis {axis} out of range: the grid has {} extents", self.extents));
                }
            }
            OpKind::Dim(s) => {
                self.counts(op, 0..=0, 1, 0)?;
                expect(self.res(op)?, &i32s)?;
                if s.0 as usize >= k.dims.len() {
                    return Err(format!("dim #{} out of range: the kernel declares {}", s.0, k.dims.len()));
                }
            }
            OpKind::ScalarParam(p) => {
                self.counts(op, 0..=0, 1, 0)?;
                match k.params.get(*p) {
                    Some(Param { kind: ParamKind::Scalar { dtype }, .. }) => expect(self.res(op)?, &TileType::scalar(*dtype))?,
                    Some(Param { name, .. }) => return Err(format!("parameter {} is a tensor, not a scalar", print_name(name))),
                    None => return Err(format!("parameter #{p} out of range: the kernel has {}", k.params.len())),
                }
            }
            OpKind::Arange => {
                self.counts(op, 0..=0, 1, 0)?;
                let r = self.res(op)?;
                if r.dtype != DType::I32 || r.rank() != 1 {
                    return Err(format!("result must be a 1-D i32 tile, got {r}"));
                }
            }
            OpKind::Unary(u) => {
                self.counts(op, 1..=1, 1, 0)?;
                let (x, r) = (self.arg(op, 0)?, self.res(op)?);
                let ok = match u {
                    UnaryOp::Not => x.dtype.is_int() || x.dtype == DType::Bool,
                    UnaryOp::Neg | UnaryOp::Abs => is_num(x.dtype),
                    _ => x.dtype.is_float(),
                };
                if !ok {
                    return Err(format!("`{}` is not defined on {x}", u.mnemonic()));
                }
                let want = if matches!(u, UnaryOp::IsNan | UnaryOp::IsInf) { x.with_dtype(DType::Bool) } else { x.clone() };
                expect(r, &want)?;
            }
            OpKind::Binary(b) => {
                self.counts(op, 2..=2, 1, 0)?;
                let (x, y, r) = (self.arg(op, 0)?, self.arg(op, 1)?, self.res(op)?);
                if x != y {
                    return Err(format!("operand types {x} and {y} differ"));
                }
                let ok = match b {
                    BinaryOp::And | BinaryOp::Or | BinaryOp::Xor => x.dtype.is_int() || x.dtype == DType::Bool,
                    BinaryOp::Shl | BinaryOp::Shr => x.dtype.is_int(),
                    _ => is_num(x.dtype),
                };
                if !ok {
                    return Err(format!("`{}` is not defined on {x}", b.mnemonic()));
                }
                expect(r, x)?;
            }
            OpKind::Cmp(_) => {
                self.counts(op, 2..=2, 1, 0)?;
                let (x, y, r) = (self.arg(op, 0)?, self.arg(op, 1)?, self.res(op)?);
                if x != y {
                    return Err(format!("operand types {x} and {y} differ"));
                }
                if x.dtype.is_code() {
                    return Err(format!("cannot compare storage-only {} values; cast them first", x.dtype));
                }
                expect(r, &x.with_dtype(DType::Bool))?;
            }
            OpKind::Select => {
                self.counts(op, 3..=3, 1, 0)?;
                let (c, t, f, r) = (self.arg(op, 0)?, self.arg(op, 1)?, self.arg(op, 2)?, self.res(op)?);
                if c.dtype != DType::Bool || c.shape != r.shape {
                    return Err(format!("condition must be bool{}, got {c}", fmt_shape(&r.shape)));
                }
                if t != r || f != r {
                    return Err(format!("operand types {t} and {f} must both be the result type {r}"));
                }
            }
            OpKind::Cast(_) | OpKind::Bitcast => {
                self.counts(op, 1..=1, 1, 0)?;
                let (x, r) = (self.arg(op, 0)?, self.res(op)?);
                if x.shape != r.shape || x.space != r.space {
                    return Err(format!("result {r} must have the operand's shape and space ({x})"));
                }
                let (f, t) = (x.dtype, r.dtype);
                if op.kind == OpKind::Bitcast {
                    if f.bits() != t.bits() || f == DType::Bool || t == DType::Bool {
                        return Err(format!("cannot bitcast {f} ({} bits) to {t} ({} bits)", f.bits(), t.bits()));
                    }
                } else if !cast_ok(f, t) {
                    return Err(format!("cannot cast {f} to {t}: e2m1 and e8m0 convert only to and from ints and floats"));
                }
            }
            OpKind::Broadcast => {
                self.counts(op, 1..=1, 1, 0)?;
                let (x, r) = (self.arg(op, 0)?, self.res(op)?);
                let dims_ok = x.rank() == r.rank() && x.shape.iter().zip(&r.shape).all(|(a, b)| *a == 1 || a == b);
                if !dims_ok || x.dtype != r.dtype || x.space != r.space {
                    return Err(format!("cannot broadcast {x} to {r} (same rank, each dim 1 or equal)"));
                }
            }
            OpKind::ExpandDims(axis) => {
                self.counts(op, 1..=1, 1, 0)?;
                let (x, r) = (self.arg(op, 0)?, self.res(op)?);
                let axis = *axis as usize;
                if axis > x.rank() {
                    return Err(format!("axis {axis} out of range for {x}"));
                }
                let mut want = x.clone();
                want.shape.insert(axis, 1);
                expect(r, &want)?;
            }
            OpKind::Reshape => {
                self.counts(op, 1..=1, 1, 0)?;
                let (x, r) = (self.arg(op, 0)?, self.res(op)?);
                let (nx, nr) = (checked_numel(&x.shape), checked_numel(&r.shape));
                if nx.is_none() || nx != nr || x.dtype != r.dtype || x.space != r.space {
                    return Err(format!("cannot reshape {x} to {r} (element counts or dtypes differ)"));
                }
            }
            OpKind::Permute(perm) => {
                self.counts(op, 1..=1, 1, 0)?;
                let (x, r) = (self.arg(op, 0)?, self.res(op)?);
                let mut sorted: Vec<usize> = perm.iter().map(|&p| p as usize).collect();
                sorted.sort_unstable();
                if sorted != (0..x.rank()).collect::<Vec<_>>() {
                    return Err(format!("perm {perm:?} is not a permutation of the {} axes of {x}", x.rank()));
                }
                let want = TileType { dtype: x.dtype, shape: perm.iter().map(|&p| x.shape[p as usize]).collect(), space: x.space };
                expect(r, &want)?;
            }
            OpKind::Reduce { op: rop, axis } => {
                self.counts(op, 1..=1, 1, 0)?;
                let (x, r) = (self.arg(op, 0)?, self.res(op)?);
                let axis = *axis as usize;
                if axis >= x.rank() {
                    return Err(format!("axis {axis} out of range for {x}"));
                }
                if !is_num(x.dtype) {
                    return Err(format!("cannot reduce {x}: ints and floats only"));
                }
                let mut want = x.clone();
                want.shape.remove(axis);
                if matches!(rop, ReduceOp::Argmax | ReduceOp::Argmin) {
                    want.dtype = DType::I32;
                }
                expect(r, &want)?;
            }
            OpKind::Scan { axis, .. } => {
                self.counts(op, 1..=1, 1, 0)?;
                let (x, r) = (self.arg(op, 0)?, self.res(op)?);
                if *axis as usize >= x.rank() {
                    return Err(format!("axis {axis} out of range for {x}"));
                }
                if !is_num(x.dtype) {
                    return Err(format!("cannot scan {x}: ints and floats only"));
                }
                expect(r, x)?;
            }
            OpKind::Dot => {
                self.counts(op, 2..=3, 1, 0)?;
                let (a, b, r) = (self.arg(op, 0)?, self.arg(op, 1)?, self.res(op)?);
                let ([m, ka], [kb, n]) = (a.shape.as_slice(), b.shape.as_slice()) else {
                    return Err(format!("operands must be 2-D, got {a} and {b}"));
                };
                if a.dtype != b.dtype || !is_num(a.dtype) {
                    return Err(format!("operands {a} and {b} must have one int or float dtype"));
                }
                if ka != kb {
                    return Err(format!("inner dims differ: {a} x {b}"));
                }
                let want = TileType { dtype: dot_acc_dtype(a.dtype), shape: vec![*m, *n], space: r.space };
                expect(r, &want)?;
                if op.args.len() == 3 {
                    let acc = self.arg(op, 2)?;
                    if acc != r {
                        return Err(format!("accumulator {acc} must have the result type {r}"));
                    }
                }
            }
            OpKind::Load { tensor, has_mask, has_other } => {
                let (dtype, rank, _) = self.tensor(*tensor)?;
                let n = rank + *has_mask as usize + *has_other as usize;
                self.counts(op, n..=n, 1, 0)?;
                let shape = self.index_shape(op, rank)?;
                let r = self.res(op)?;
                if r.dtype != dtype || r.shape != shape {
                    return Err(format!("result must be {dtype}{} (tensor dtype, index shapes concatenated), got {r}", fmt_shape(&shape)));
                }
                if *has_mask {
                    self.mask(op, rank, &shape)?;
                }
                if *has_other {
                    let o = self.arg(op, rank + *has_mask as usize)?;
                    if o.dtype != dtype || !(o.is_scalar() || o.shape == shape) {
                        return Err(format!("`other` must be a {dtype} scalar or {dtype}{}, got {o}", fmt_shape(&shape)));
                    }
                }
            }
            OpKind::Store { tensor, has_mask } | OpKind::AtomicAdd { tensor, has_mask } => {
                let (dtype, rank, output) = self.tensor(*tensor)?;
                let n = rank + 1 + *has_mask as usize;
                self.counts(op, n..=n, 0, 0)?;
                if !output {
                    return Err(format!("parameter {} is not an `out` tensor", print_name(&k.params[*tensor].name)));
                }
                if matches!(op.kind, OpKind::AtomicAdd { .. }) && !matches!(dtype, DType::F32 | DType::I32) {
                    return Err(format!("atomic_add needs an f32 or i32 tensor, not {dtype}"));
                }
                let shape = self.index_shape(op, rank)?;
                let v = self.arg(op, rank)?;
                if v.dtype != dtype || v.shape != shape {
                    return Err(format!("value must be {dtype}{} (tensor dtype, index shapes concatenated), got {v}", fmt_shape(&shape)));
                }
                if *has_mask {
                    self.mask(op, rank + 1, &shape)?;
                }
            }
            OpKind::For => {
                if op.args.len() < 3 {
                    return Err(format!("expects lo, hi, step and the carried inits, got {} operands", op.args.len()));
                }
                let inits = &op.args[3..];
                self.counts(op, op.args.len()..=op.args.len(), inits.len(), 1)?;
                for (i, what) in ["lo", "hi", "step"].iter().enumerate() {
                    let t = self.arg(op, i)?;
                    if *t != i32s {
                        return Err(format!("`{what}` must be an i32 scalar, got {t}"));
                    }
                }
                let rargs = &op.regions[0].args;
                if rargs.len() != inits.len() + 1 {
                    return Err(format!("region has {} arguments, expected {} (induction variable and carried values)", rargs.len(), inits.len() + 1));
                }
                let iv = self.ty(rargs[0])?;
                if *iv != i32s {
                    return Err(format!("induction variable %{} must be an i32 scalar, got {iv}", rargs[0].0));
                }
                for (i, (&init, (&ra, &res))) in inits.iter().zip(rargs[1..].iter().zip(&op.results)).enumerate() {
                    let (ti, ta, tr) = (self.ty(init)?, self.ty(ra)?, self.ty(res)?);
                    if ti != ta || ti != tr {
                        return Err(format!("carried value {i}: init %{} is {ti}, region argument %{} is {ta}, result %{} is {tr}", init.0, ra.0, res.0));
                    }
                }
            }
            OpKind::If => {
                self.counts(op, 1..=1, op.results.len(), 2)?;
                let c = self.arg(op, 0)?;
                if *c != TileType::scalar(DType::Bool) {
                    return Err(format!("condition must be a bool scalar, got {c}"));
                }
                if op.regions.iter().any(|r| !r.args.is_empty()) {
                    return Err("`if` regions take no arguments".into());
                }
            }
            OpKind::Yield => self.counts(op, op.args.len()..=op.args.len(), 0, 0)?,
        }
        Ok(())
    }

    /// A `for`/`if` region must end in a `yield` of the op's result types.
    fn region_yields(&self, op: &Op) -> Res {
        let want: Vec<&TileType> = op.results.iter().map(|&r| self.ty(r)).collect::<Result<_, _>>()?;
        for (i, r) in op.regions.iter().enumerate() {
            let which = match (&op.kind, i) {
                (OpKind::If, 0) => "then region",
                (OpKind::If, _) => "else region",
                _ => "body region",
            };
            let Some(y) = r.ops.last().filter(|y| y.kind == OpKind::Yield) else {
                return Err(format!("{which} must end in `yield`"));
            };
            let got: Vec<&TileType> = y.args.iter().map(|&a| self.ty(a)).collect::<Result<_, _>>()?;
            if got != want {
                let list = |ts: &[&TileType]| ts.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ");
                return Err(format!("{which} yields ({}) but the results are ({})", list(&got), list(&want)));
            }
        }
        Ok(())
    }

    /// (dtype, rank, output) of a tensor parameter.
    fn tensor(&self, p: usize) -> Result<(DType, usize, bool), String> {
        match self.k.params.get(p) {
            Some(Param { kind: ParamKind::Tensor { dtype, dims, output }, .. }) => Ok((*dtype, dims.len(), *output)),
            Some(Param { name, .. }) => Err(format!("parameter {} is a scalar, not a tensor", print_name(name))),
            None => Err(format!("parameter #{p} out of range: the kernel has {}", self.k.params.len())),
        }
    }

    /// Concatenated shapes of the `rank` leading i32 index operands.
    fn index_shape(&self, op: &Op, rank: usize) -> Result<Vec<usize>, String> {
        let mut shape = vec![];
        for i in 0..rank {
            let t = self.arg(op, i)?;
            if t.dtype != DType::I32 {
                return Err(format!("index {i} must be an i32 scalar or tile, got {t}"));
            }
            shape.extend(&t.shape);
        }
        Ok(shape)
    }

    fn mask(&self, op: &Op, i: usize, shape: &[usize]) -> Res {
        let m = self.arg(op, i)?;
        if m.dtype != DType::Bool || m.shape != shape {
            return Err(format!("mask must be bool{}, got {m}", fmt_shape(shape)));
        }
        Ok(())
    }
}

fn unique<'s>(names: impl Iterator<Item = &'s String>, what: &str) -> Res {
    let mut seen = std::collections::HashSet::new();
    for n in names {
        if !seen.insert(n) {
            return Err(format!("{what} name {} is declared twice", print_name(n)));
        }
    }
    Ok(())
}
