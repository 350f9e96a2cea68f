//! The reference interpreter: the oracle every backend is checked against.
//!
//! `run` binds the dims ([`launch::bind_dims`]), evaluates the grid ([`launch::grid`]) and runs
//! the body once per program. Semantics follow the doc comments of [`crate::ir`] exactly:
//!
//! - Values are row-major tiles. Float tiles (f32, f16, bf16) are kept as `Vec<f32>` holding
//!   values already rounded to their dtype; everything else (ints, bool, the e2m1 / e8m0 codes)
//!   as `Vec<i64>` (ints sign-extended / in range, bool 0/1, codes as their raw code). Tiles are
//!   shared through `Rc`, so `reshape`, `expand_dims`, loop-carried values and `yield` never copy.
//! - f32 arithmetic is done in f32 with f32 math functions; f16/bf16 arithmetic is done in f32 and
//!   rounded to the dtype after every op; ints wrap to their width.
//! - Programs run in parallel on rayon (`OPC_INTERP_THREADS=1` forces sequential execution, any
//!   other number sets the thread count). Tensor memory is reached through `Mem`, a shared
//!   view of each argument's bytes as `[AtomicU8]`.
//!
//! Choices where the IR docs leave room (all deterministic, none can panic):
//! - `shl` / `shr` by an amount outside `[0, bits)`: `shl` gives 0, `shr` gives the sign fill
//!   (0 or -1) — the clamping behaviour of PTX `shl`/`shr`.
//! - int `pow` with a negative exponent: `1` for base 1, `±1` for base -1, else 0.
//! - `reduce sum` starts from the first element; `cumsum` of f16/bf16 keeps an f32 running sum
//!   and rounds each output.
//! - `cast` between an int and a code keeps the raw code; bool → code encodes the value 0/1;
//!   code → bool is `value != 0`; code → code goes through the value.

use std::rc::Rc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use half::{bf16, f16};
use rayon::prelude::*;

use crate::ir::{BinaryOp, Block, CmpPred, Op, OpKind, ParamKind, ReduceOp, Scalar, ScanOp, UnaryOp, ValueId};
use crate::launch::{self, LaunchError};
use crate::numerics;
use crate::types::{DType, Rounding, TileType};
use crate::{Arg, Kernel};

/// A tile's elements (its type lives in `Kernel::values`).
#[derive(Clone, Debug)]
pub enum Data {
    /// f32 / f16 / bf16, each value already rounded to its dtype.
    F(Rc<Vec<f32>>),
    /// ints (sign-extended), bool (0/1), e2m1 / e8m0 (raw codes).
    I(Rc<Vec<i64>>),
}

impl Data {
    pub fn len(&self) -> usize {
        match self {
            Data::F(v) => v.len(),
            Data::I(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn f(v: Vec<f32>) -> Data {
        Data::F(Rc::new(v))
    }
    fn i(v: Vec<i64>) -> Data {
        Data::I(Rc::new(v))
    }
}

/// Whether a dtype is represented as [`Data::F`].
pub fn is_float_repr(d: DType) -> bool {
    matches!(d, DType::F32 | DType::F16 | DType::BF16)
}

type R<T> = Result<T, String>;

// ---------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------

/// Shared view of one tensor argument's bytes, used by every program at once.
///
/// The bytes are viewed as `[AtomicU8]`: every access is a relaxed atomic byte access, so
/// concurrent programs can never cause a data race, whatever the kernel does, and the view is
/// `Sync` without any `unsafe impl`. (Relaxed byte loads and stores compile to plain moves.)
/// Kernels are written so that programs write disjoint elements; nibbles of packed types that
/// share a byte are updated with a compare-and-swap so neighbours written by other programs are
/// not lost; `atomic_add` read-modify-writes hold `lock`.
struct Mem<'a> {
    cells: &'a [AtomicU8],
    dtype: DType,
    shape: Vec<usize>,
    strides: Vec<usize>,
    output: bool,
    name: String,
    /// Serializes `atomic_add` read-modify-writes on this tensor across programs.
    lock: Mutex<()>,
}

/// View a mutably borrowed byte buffer as atomics for as long as the borrow lasts.
fn atomic_bytes(data: &mut [u8]) -> &[AtomicU8] {
    // SAFETY: `AtomicU8` has the same size, alignment and bit validity as `u8`. The returned
    // slice covers exactly the buffer and keeps it mutably borrowed for its whole lifetime, so
    // nothing else can read or write the bytes non-atomically meanwhile (this is what the
    // unstable `AtomicU8::from_mut_slice` does).
    unsafe { std::slice::from_raw_parts(data.as_mut_ptr() as *const AtomicU8, data.len()) }
}

impl Mem<'_> {
    /// Raw code of element `e` (zero-extended; packed 4-bit types unpacked).
    #[inline]
    fn get_raw(&self, e: usize) -> u32 {
        const RL: Ordering = Ordering::Relaxed;
        match self.dtype.bits() {
            4 => {
                let b = self.cells[e / 2].load(RL);
                (if e.is_multiple_of(2) { b & 0xF } else { b >> 4 }) as u32
            }
            8 => self.cells[e].load(RL) as u32,
            16 => {
                let c = &self.cells[2 * e..2 * e + 2];
                u16::from_le_bytes([c[0].load(RL), c[1].load(RL)]) as u32
            }
            _ => {
                let c = &self.cells[4 * e..4 * e + 4];
                u32::from_le_bytes([c[0].load(RL), c[1].load(RL), c[2].load(RL), c[3].load(RL)])
            }
        }
    }

    #[inline]
    fn set_raw(&self, e: usize, bits: u32) {
        const RL: Ordering = Ordering::Relaxed;
        match self.dtype.bits() {
            4 => {
                let v = (bits & 0xF) as u8;
                let (keep, put) = if e.is_multiple_of(2) { (0xF0u8, v) } else { (0x0Fu8, v << 4) };
                let _ = self.cells[e / 2].fetch_update(RL, RL, |b| Some((b & keep) | put));
            }
            8 => self.cells[e].store(bits as u8, RL),
            16 => {
                let c = &self.cells[2 * e..2 * e + 2];
                let b = (bits as u16).to_le_bytes();
                c[0].store(b[0], RL);
                c[1].store(b[1], RL);
            }
            _ => {
                let c = &self.cells[4 * e..4 * e + 4];
                for (cell, b) in c.iter().zip(bits.to_le_bytes()) {
                    cell.store(b, RL);
                }
            }
        }
    }

    #[inline]
    fn read_f(&self, e: usize) -> f32 {
        let raw = self.get_raw(e);
        match self.dtype {
            DType::F16 => f16::from_bits(raw as u16).to_f32(),
            DType::BF16 => bf16::from_bits(raw as u16).to_f32(),
            _ => f32::from_bits(raw),
        }
    }

    #[inline]
    fn read_i(&self, e: usize) -> i64 {
        numerics::decode_int(self.dtype, self.get_raw(e))
    }
}

/// Raw bits of a float value of dtype `d` (the value is representable).
#[inline]
fn f_bits(d: DType, x: f32) -> u32 {
    match d {
        DType::F16 => f16::from_f32(x).to_bits() as u32,
        DType::BF16 => bf16::from_f32(x).to_bits() as u32,
        _ => x.to_bits(),
    }
}

/// Round f32 values to dtype `d` in place (no-op for f32).
fn round_vec(d: DType, v: &mut [f32]) {
    match d {
        DType::F16 => v.iter_mut().for_each(|x| *x = f16::from_f32(*x).to_f32()),
        DType::BF16 => v.iter_mut().for_each(|x| *x = bf16::from_f32(*x).to_f32()),
        _ => {}
    }
}

#[inline]
fn round_one(d: DType, x: f32) -> f32 {
    match d {
        DType::F16 => f16::from_f32(x).to_f32(),
        DType::BF16 => bf16::from_f32(x).to_f32(),
        _ => x,
    }
}

// ---------------------------------------------------------------------------------------------
// Launch
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum SVal {
    F(f32),
    I(i64),
}

struct Shared<'k> {
    kernel: &'k Kernel,
    dims: &'k [i64],
    mems: Vec<Option<Mem<'k>>>,
    scalars: Vec<Option<SVal>>,
    grid: [usize; 3],
}

/// Number of worker threads requested by `OPC_INTERP_THREADS` (None: rayon's default).
fn requested_threads() -> Option<usize> {
    std::env::var("OPC_INTERP_THREADS").ok()?.trim().parse::<usize>().ok().filter(|&n| n > 0)
}

/// A rayon pool with `n` threads, built once per distinct `n` and kept for later launches.
fn pool_with(n: usize) -> Option<Arc<rayon::ThreadPool>> {
    static POOLS: Mutex<Vec<(usize, Arc<rayon::ThreadPool>)>> = Mutex::new(Vec::new());
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = pools.iter().find(|(k, _)| *k == n) {
        return Some(p.clone());
    }
    let p = Arc::new(rayon::ThreadPoolBuilder::new().num_threads(n).build().ok()?);
    pools.push((n, p.clone()));
    Some(p)
}

/// Run every program of the grid on the host tensors in `args` (outputs written in place).
pub fn run(kernel: &Kernel, args: &mut [Arg]) -> Result<(), LaunchError> {
    let dims = launch::bind_dims(kernel, args)?;
    let g = launch::grid(kernel, &dims)?;
    let exec_err = |msg: String| LaunchError::Exec { kernel: kernel.name.clone(), msg };
    check_ids(kernel).map_err(exec_err)?;

    let scalars: Vec<Option<SVal>> = args
        .iter()
        .map(|a| match a {
            Arg::Tensor(_) => None,
            Arg::F32(x) => Some(SVal::F(*x)),
            Arg::I32(x) => Some(SVal::I(*x as i64)),
            Arg::Bool(b) => Some(SVal::I(*b as i64)),
        })
        .collect();
    // From here on `args` is only reached through these atomic views (see `Mem`).
    let mems: Vec<Option<Mem>> = args
        .iter_mut()
        .zip(&kernel.params)
        .map(|(a, p)| match (a, &p.kind) {
            (Arg::Tensor(t), ParamKind::Tensor { output, .. }) => {
                let mut strides = vec![1usize; t.shape.len()];
                for d in (0..t.shape.len().saturating_sub(1)).rev() {
                    strides[d] = strides[d + 1] * t.shape[d + 1];
                }
                let (dtype, shape) = (t.dtype, t.shape.clone());
                Some(Mem {
                    cells: atomic_bytes(&mut t.data),
                    dtype,
                    shape,
                    strides,
                    output: *output,
                    name: p.name.clone(),
                    lock: Mutex::new(()),
                })
            }
            _ => None,
        })
        .collect();

    let shared = Shared { kernel, dims: &dims, mems, scalars, grid: g };
    let total = g[0] * g[1] * g[2];
    let nvals = kernel.values.len();

    let one = |env: &mut Vec<Option<Data>>, p: usize| -> Result<(), LaunchError> {
        let pid = [(p % g[0]) as i64, ((p / g[0]) % g[1]) as i64, (p / (g[0] * g[1])) as i64];
        env.iter_mut().for_each(|v| *v = None);
        let mut prog = Prog { sh: &shared, env: std::mem::take(env), pid, in_grid: false };
        let r = prog.exec_block(&kernel.body);
        *env = prog.env;
        r.map(|_| ()).map_err(|m| exec_err(format!("program ({}, {}, {}): {m}", pid[0], pid[1], pid[2])))
    };

    match requested_threads() {
        Some(1) => {
            let mut env = vec![None; nvals];
            (0..total).try_for_each(|p| one(&mut env, p))
        }
        Some(n) => match pool_with(n) {
            Some(pool) => pool.install(|| (0..total).into_par_iter().try_for_each_init(|| vec![None; nvals], one)),
            None => (0..total).into_par_iter().try_for_each_init(|| vec![None; nvals], one),
        },
        None => (0..total).into_par_iter().try_for_each_init(|| vec![None; nvals], one),
    }
}

/// Evaluate the grid block (scalar i32 ops ending in `yield`): the yielded extents, unchecked.
/// Only the grid block's ids are checked: every launch on every target evaluates the grid, and
/// walking the whole body each time costs microseconds per launch of a large kernel.
pub(crate) fn eval_grid(kernel: &Kernel, dims: &[i64]) -> Result<Vec<i64>, String> {
    check_block_ids(&kernel.grid, kernel.values.len())?;
    let shared = Shared { kernel, dims, mems: vec![], scalars: vec![], grid: [1, 1, 1] };
    // an environment only as long as the grid block's ids need, not one slot per kernel value
    let mut prog = Prog { sh: &shared, env: vec![None; ids_end(&kernel.grid)], pid: [0; 3], in_grid: true };
    let ys = prog.exec_block(&kernel.grid).map_err(|m| format!("grid: {m}"))?;
    let Some(ys) = ys else { return Err("the grid block does not end in `yield`".into()) };
    let mut out = vec![];
    for (i, y) in ys.iter().enumerate() {
        match y {
            Data::I(v) if v.len() == 1 => out.push(v[0]),
            _ => return Err(format!("grid extent {i} is not an i32 scalar")),
        }
    }
    Ok(out)
}

/// Every value id used anywhere must have a type.
fn check_ids(kernel: &Kernel) -> R<()> {
    check_block_ids(&kernel.grid, kernel.values.len())?;
    check_block_ids(&kernel.body, kernel.values.len())
}

/// One past the largest value id used in `b` (and its regions).
fn ids_end(b: &Block) -> usize {
    let ops = b.ops.iter().map(|op| {
        let own = op.args.iter().chain(&op.results).map(|v| v.0 as usize + 1).max().unwrap_or(0);
        op.regions.iter().map(ids_end).fold(own, usize::max)
    });
    b.args.iter().map(|v| v.0 as usize + 1).chain(ops).max().unwrap_or(0)
}

/// Every value id used in `b` (and its regions) is below `n`, the number of typed values.
fn check_block_ids(b: &Block, n: usize) -> R<()> {
    let bad = |v: &ValueId| (v.0 as usize) >= n;
    if let Some(v) = b.args.iter().find(|v| bad(v)) {
        return Err(format!("block argument %{} has no type", v.0));
    }
    for op in &b.ops {
        if let Some(v) = op.args.iter().chain(&op.results).find(|v| bad(v)) {
            return Err(format!("{}: value %{} has no type", op_ctx(op), v.0));
        }
        for r in &op.regions {
            check_block_ids(r, n)?;
        }
    }
    Ok(())
}

/// The context of `op` in error messages (`op `mnemonic` at line:col (%result)`); every
/// backend names a failing op this way, so all targets report the same error text.
pub fn op_ctx(op: &Op) -> String {
    let mut s = format!("op `{}`", op.kind.mnemonic());
    if let Some(l) = op.loc {
        s.push_str(&format!(" at {}:{}", l.line, l.col));
    }
    if let Some(r) = op.results.first() {
        s.push_str(&format!(" (%{})", r.0));
    }
    s
}

// ---------------------------------------------------------------------------------------------
// One program
// ---------------------------------------------------------------------------------------------

struct Prog<'s, 'k> {
    sh: &'s Shared<'k>,
    env: Vec<Option<Data>>,
    pid: [i64; 3],
    in_grid: bool,
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

#[inline]
fn bidx(len: usize, j: usize) -> usize {
    if len == 1 {
        0
    } else {
        j
    }
}

impl Prog<'_, '_> {
    fn kernel(&self) -> &Kernel {
        self.sh.kernel
    }

    fn ty(&self, v: ValueId) -> &TileType {
        &self.sh.kernel.values[v.0 as usize]
    }

    fn val(&self, v: ValueId) -> R<Data> {
        match self.env.get(v.0 as usize) {
            Some(Some(d)) => Ok(d.clone()),
            _ => Err(format!("value %{} is used before it is defined", v.0)),
        }
    }

    fn fvals(&self, v: ValueId) -> R<Rc<Vec<f32>>> {
        match self.val(v)? {
            Data::F(x) => Ok(x),
            Data::I(_) => Err(format!("%{} ({}) is not a float tile", v.0, self.ty(v))),
        }
    }

    fn ivals(&self, v: ValueId) -> R<Rc<Vec<i64>>> {
        match self.val(v)? {
            Data::I(x) => Ok(x),
            Data::F(_) => Err(format!("%{} ({}) is not an int, bool or code tile", v.0, self.ty(v))),
        }
    }

    fn scalar_i(&self, v: ValueId) -> R<i64> {
        let x = self.ivals(v)?;
        if x.len() != 1 {
            return Err(format!("%{} ({}) is not a scalar", v.0, self.ty(v)));
        }
        Ok(x[0])
    }

    /// Define `v`, checking the data against its declared type (so every op can trust types).
    fn set(&mut self, v: ValueId, d: Data) -> R<()> {
        let ty = &self.sh.kernel.values[v.0 as usize];
        if is_float_repr(ty.dtype) != matches!(d, Data::F(_)) || d.len() != ty.numel() {
            let what = if matches!(d, Data::F(_)) { "float" } else { "int" };
            return Err(format!("%{} is declared {ty} but gets {} {what} elements", v.0, d.len()));
        }
        self.env[v.0 as usize] = Some(d);
        Ok(())
    }

    /// Run a block; `Some(values)` if it ended in `yield`.
    fn exec_block(&mut self, b: &Block) -> R<Option<Vec<Data>>> {
        for op in &b.ops {
            match &op.kind {
                OpKind::Yield => {
                    let ys = op.args.iter().map(|&a| self.val(a)).collect::<R<Vec<_>>>().map_err(|e| format!("{}: {e}", op_ctx(op)))?;
                    return Ok(Some(ys));
                }
                OpKind::For => self.exec_for(op)?,
                OpKind::If => self.exec_if(op)?,
                _ => {
                    let r = self.exec_simple(op).map_err(|e| format!("{}: {e}", op_ctx(op)))?;
                    match (r, op.results.as_slice()) {
                        (None, []) => {}
                        (Some(d), [res]) => self.set(*res, d).map_err(|e| format!("{}: {e}", op_ctx(op)))?,
                        (r, res) => {
                            return Err(format!(
                                "{}: has {} results, expected {}",
                                op_ctx(op),
                                res.len(),
                                if r.is_some() { 1 } else { 0 }
                            ))
                        }
                    }
                }
            }
        }
        Ok(None)
    }

    fn exec_for(&mut self, op: &Op) -> R<()> {
        let c = |e: String| format!("{}: {e}", op_ctx(op));
        if op.args.len() < 3 || op.regions.len() != 1 {
            return Err(c("expects [lo, hi, step, inits...] and one region".into()));
        }
        let n = op.args.len() - 3;
        let body = &op.regions[0];
        if body.args.len() != n + 1 || op.results.len() != n {
            return Err(c(format!("{} carried values but {} region args and {} results", n, body.args.len(), op.results.len())));
        }
        let lo = self.scalar_i(op.args[0]).map_err(c)?;
        let hi = self.scalar_i(op.args[1]).map_err(c)?;
        let step = self.scalar_i(op.args[2]).map_err(c)?;
        if step <= 0 {
            return Err(c(format!("step must be positive, got {step}")));
        }
        let mut carried = op.args[3..].iter().map(|&a| self.val(a)).collect::<R<Vec<_>>>().map_err(c)?;
        let mut iv = lo;
        while iv < hi {
            self.set(body.args[0], Data::i(vec![iv])).map_err(c)?;
            for (&a, d) in body.args[1..].iter().zip(carried.drain(..)) {
                self.set(a, d).map_err(c)?;
            }
            match self.exec_block(body)? {
                Some(ys) if ys.len() == n => carried = ys,
                Some(ys) => return Err(c(format!("the body yields {} values, expected {n}", ys.len()))),
                None => return Err(c("the body does not end in `yield`".into())),
            }
            iv += step;
        }
        for (&r, d) in op.results.iter().zip(carried) {
            self.set(r, d).map_err(c)?;
        }
        Ok(())
    }

    fn exec_if(&mut self, op: &Op) -> R<()> {
        let c = |e: String| format!("{}: {e}", op_ctx(op));
        if op.args.len() != 1 || op.regions.len() != 2 {
            return Err(c("expects one condition and two regions".into()));
        }
        let cond = self.scalar_i(op.args[0]).map_err(c)?;
        let region = &op.regions[if cond != 0 { 0 } else { 1 }];
        let ys = self.exec_block(region)?.unwrap_or_default();
        if ys.len() != op.results.len() {
            return Err(c(format!("the region yields {} values, expected {}", ys.len(), op.results.len())));
        }
        for (&r, d) in op.results.iter().zip(ys) {
            self.set(r, d).map_err(c)?;
        }
        Ok(())
    }

    fn nargs(op: &Op, n: usize) -> R<()> {
        if op.args.len() != n {
            return Err(format!("expects {n} operands, got {}", op.args.len()));
        }
        Ok(())
    }

    fn result_ty(&self, op: &Op) -> R<&TileType> {
        match op.results.as_slice() {
            [r] => Ok(self.ty(*r)),
            rs => Err(format!("expects one result, got {}", rs.len())),
        }
    }

    fn mem(&self, t: usize) -> R<&Mem<'_>> {
        if self.in_grid {
            return Err("tensors cannot be accessed in the grid block".into());
        }
        self.sh.mems.get(t).and_then(|m| m.as_ref()).ok_or_else(|| format!("parameter #{t} is not a tensor"))
    }

    /// Ops with at most one result and no regions.
    fn exec_simple(&self, op: &Op) -> R<Option<Data>> {
        let k = self.kernel();
        Ok(Some(match &op.kind {
            OpKind::Const(s) => {
                Self::nargs(op, 0)?;
                let rt = self.result_ty(op)?;
                const_data(*s, rt.dtype, rt.numel())
            }
            OpKind::ProgramId(a) | OpKind::NumPrograms(a) => {
                Self::nargs(op, 0)?;
                self.result_ty(op)?;
                if self.in_grid {
                    return Err("not allowed in the grid block".into());
                }
                let a = *a as usize;
                if a > 2 {
                    return Err(format!("axis {a} is not 0, 1 or 2"));
                }
                let v = if matches!(op.kind, OpKind::ProgramId(_)) { self.pid[a] } else { self.sh.grid[a] as i64 };
                Data::i(vec![v])
            }
            OpKind::Dim(s) => {
                Self::nargs(op, 0)?;
                self.result_ty(op)?;
                let v = *self.sh.dims.get(s.0 as usize).ok_or_else(|| format!("dim symbol #{} is not bound", s.0))?;
                Data::i(vec![numerics::wrap_int(DType::I32, v)])
            }
            OpKind::ScalarParam(p) => {
                Self::nargs(op, 0)?;
                self.result_ty(op)?;
                if self.in_grid {
                    return Err("scalar parameters cannot be read in the grid block".into());
                }
                match self.sh.scalars.get(*p).copied().flatten() {
                    Some(SVal::F(x)) => Data::f(vec![x]),
                    Some(SVal::I(x)) => Data::i(vec![x]),
                    None => return Err(format!("parameter #{p} is not a scalar")),
                }
            }
            OpKind::Arange => {
                Self::nargs(op, 0)?;
                let rt = self.result_ty(op)?;
                if rt.rank() != 1 {
                    return Err(format!("result type {rt} is not 1-D"));
                }
                Data::i((0..rt.shape[0] as i64).collect())
            }
            OpKind::Unary(u) => {
                Self::nargs(op, 1)?;
                self.result_ty(op)?;
                let dt = self.ty(op.args[0]).dtype;
                unary(*u, dt, &self.val(op.args[0])?)?
            }
            OpKind::Binary(b) => {
                Self::nargs(op, 2)?;
                self.result_ty(op)?;
                let dt = self.ty(op.args[0]).dtype;
                if self.ty(op.args[1]).dtype != dt {
                    return Err(format!("operand dtypes differ: {} and {}", dt, self.ty(op.args[1]).dtype));
                }
                binary(*b, dt, &self.val(op.args[0])?, &self.val(op.args[1])?)?
            }
            OpKind::Cmp(p) => {
                Self::nargs(op, 2)?;
                self.result_ty(op)?;
                cmp(*p, &self.val(op.args[0])?, &self.val(op.args[1])?)?
            }
            OpKind::Select => {
                Self::nargs(op, 3)?;
                let n = self.result_ty(op)?.numel();
                let c = self.ivals(op.args[0])?;
                let (a, b) = (self.val(op.args[1])?, self.val(op.args[2])?);
                for l in [c.len(), a.len(), b.len()] {
                    if l != n && l != 1 {
                        return Err(format!("operand has {l} elements, result {n}"));
                    }
                }
                match (a, b) {
                    (Data::F(a), Data::F(b)) => Data::f(
                        (0..n).map(|j| if c[bidx(c.len(), j)] != 0 { a[bidx(a.len(), j)] } else { b[bidx(b.len(), j)] }).collect(),
                    ),
                    (Data::I(a), Data::I(b)) => Data::i(
                        (0..n).map(|j| if c[bidx(c.len(), j)] != 0 { a[bidx(a.len(), j)] } else { b[bidx(b.len(), j)] }).collect(),
                    ),
                    _ => return Err("operands of different kinds".into()),
                }
            }
            OpKind::Cast(r) => {
                Self::nargs(op, 1)?;
                let to = self.result_ty(op)?.dtype;
                cast(&self.val(op.args[0])?, self.ty(op.args[0]).dtype, to, *r)?
            }
            OpKind::Bitcast => {
                Self::nargs(op, 1)?;
                let to = self.result_ty(op)?.dtype;
                bitcast(&self.val(op.args[0])?, self.ty(op.args[0]).dtype, to)?
            }
            OpKind::Broadcast => {
                Self::nargs(op, 1)?;
                let out = self.result_ty(op)?.shape.clone();
                let ins = &self.ty(op.args[0]).shape;
                if ins.len() > out.len() {
                    return Err(format!("cannot broadcast {ins:?} to {out:?}"));
                }
                let pad = out.len() - ins.len();
                let in_strides = row_major_strides(ins);
                let mut strides = vec![0usize; out.len()];
                for (i, &o) in out.iter().enumerate().skip(pad) {
                    let d = ins[i - pad];
                    if d == o {
                        strides[i] = in_strides[i - pad];
                    } else if d != 1 {
                        return Err(format!("cannot broadcast {ins:?} to {out:?}"));
                    }
                }
                strided(&self.val(op.args[0])?, &out, &strides)
            }
            OpKind::ExpandDims(_) | OpKind::Reshape => {
                Self::nargs(op, 1)?;
                self.result_ty(op)?;
                // The element order is unchanged; `set` checks the element count.
                self.val(op.args[0])?
            }
            OpKind::Permute(perm) => {
                Self::nargs(op, 1)?;
                let out = self.result_ty(op)?.shape.clone();
                let ins = &self.ty(op.args[0]).shape;
                let mut seen = vec![false; ins.len()];
                if perm.len() != ins.len() || perm.iter().any(|&p| (p as usize) >= ins.len() || std::mem::replace(&mut seen[p as usize], true)) {
                    return Err(format!("{perm:?} is not a permutation of the {} dims of {ins:?}", ins.len()));
                }
                let want: Vec<usize> = perm.iter().map(|&p| ins[p as usize]).collect();
                if want != out {
                    return Err(format!("permuting {ins:?} by {perm:?} gives {want:?}, not {out:?}"));
                }
                let in_strides = row_major_strides(ins);
                let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p as usize]).collect();
                strided(&self.val(op.args[0])?, &out, &strides)
            }
            OpKind::Reduce { op: rop, axis } => {
                Self::nargs(op, 1)?;
                self.result_ty(op)?;
                let t = self.ty(op.args[0]);
                let axis = *axis as usize;
                if axis >= t.rank() {
                    return Err(format!("axis {axis} out of range for {t}"));
                }
                reduce(*rop, t.dtype, &t.shape, axis, &self.val(op.args[0])?)?
            }
            OpKind::Scan { op: sop, axis } => {
                Self::nargs(op, 1)?;
                self.result_ty(op)?;
                let t = self.ty(op.args[0]);
                let axis = *axis as usize;
                if axis >= t.rank() {
                    return Err(format!("axis {axis} out of range for {t}"));
                }
                scan(*sop, t.dtype, &t.shape, axis, &self.val(op.args[0])?)?
            }
            OpKind::Dot => self.dot(op)?,
            OpKind::Load { tensor, has_mask, has_other } => self.load(op, *tensor, *has_mask, *has_other)?,
            OpKind::Store { tensor, has_mask } => {
                self.store(op, *tensor, *has_mask, false)?;
                return Ok(None);
            }
            OpKind::AtomicAdd { tensor, has_mask } => {
                self.store(op, *tensor, *has_mask, true)?;
                return Ok(None);
            }
            OpKind::For | OpKind::If | OpKind::Yield => {
                return Err(format!("`{}` in {}", op.kind.mnemonic(), k.name));
            }
        }))
    }

    fn dot(&self, op: &Op) -> R<Data> {
        if op.args.len() != 2 && op.args.len() != 3 {
            return Err(format!("expects 2 or 3 operands, got {}", op.args.len()));
        }
        let rt = self.result_ty(op)?;
        let (ta, tb) = (self.ty(op.args[0]), self.ty(op.args[1]));
        if ta.rank() != 2 || tb.rank() != 2 || rt.rank() != 2 {
            return Err(format!("expects 2-D tiles, got {ta} · {tb} -> {rt}"));
        }
        let (m, kk, n) = (ta.shape[0], ta.shape[1], tb.shape[1]);
        if tb.shape[0] != kk || rt.shape != [m, n] {
            return Err(format!("shapes do not match: {ta} · {tb} -> {rt}"));
        }
        if let Some(&acc) = op.args.get(2) {
            if self.ty(acc).shape != rt.shape || self.ty(acc).dtype != rt.dtype {
                return Err(format!("accumulator {} does not match the result {rt}", self.ty(acc)));
            }
        }
        match rt.dtype {
            DType::F32 => {
                let a = to_f32(&self.val(op.args[0])?, ta.dtype)?;
                let b = to_f32(&self.val(op.args[1])?, tb.dtype)?;
                let mut c: Vec<f32> = match op.args.get(2) {
                    Some(&acc) => self.fvals(acc)?.as_ref().clone(),
                    None => vec![0.0; m * n],
                };
                for i in 0..m {
                    let crow = &mut c[i * n..(i + 1) * n];
                    let arow = &a[i * kk..(i + 1) * kk];
                    for (p, &av) in arow.iter().enumerate() {
                        let brow = &b[p * n..(p + 1) * n];
                        for (cv, &bv) in crow.iter_mut().zip(brow) {
                            // product rounded to f32, then added: no fma
                            *cv += av * bv;
                        }
                    }
                }
                Ok(Data::f(c))
            }
            DType::I32 => {
                if !ta.dtype.is_int() || !tb.dtype.is_int() {
                    return Err(format!("an i32 dot needs int operands, got {} and {}", ta.dtype, tb.dtype));
                }
                let a = self.ivals(op.args[0])?;
                let b = self.ivals(op.args[1])?;
                let mut c: Vec<i64> = match op.args.get(2) {
                    Some(&acc) => self.ivals(acc)?.as_ref().clone(),
                    None => vec![0; m * n],
                };
                for i in 0..m {
                    let crow = &mut c[i * n..(i + 1) * n];
                    for p in 0..kk {
                        let av = a[i * kk + p];
                        let brow = &b[p * n..(p + 1) * n];
                        for (cv, &bv) in crow.iter_mut().zip(brow) {
                            // arithmetic mod 2^64 agrees with i32 wrapping once wrapped below
                            *cv = cv.wrapping_add(av.wrapping_mul(bv));
                        }
                    }
                }
                c.iter_mut().for_each(|x| *x = numerics::wrap_int(DType::I32, *x));
                Ok(Data::i(c))
            }
            d => Err(format!("accumulator dtype {d} is neither f32 nor i32")),
        }
    }

    /// Linear element index of every element of an indexed access, -1 where out of bounds.
    fn offsets(&self, m: &Mem, idx: &[ValueId]) -> R<Vec<i64>> {
        let mut cur: Vec<i64> = vec![0];
        for (d, &v) in idx.iter().enumerate() {
            let t = self.ivals(v)?;
            if self.ty(v).dtype != DType::I32 {
                return Err(format!("index %{} is {}, not i32", v.0, self.ty(v)));
            }
            let (dim, stride) = (m.shape[d] as i64, m.strides[d] as i64);
            let offs: Vec<i64> = t.iter().map(|&i| if i >= 0 && i < dim { i * stride } else { -1 }).collect();
            if d == 0 {
                cur = offs;
                continue;
            }
            let mut next = Vec::with_capacity(cur.len() * offs.len());
            for &c in &cur {
                if c < 0 {
                    next.extend(std::iter::repeat_n(-1, offs.len()));
                } else {
                    next.extend(offs.iter().map(|&o| if o < 0 { -1 } else { c + o }));
                }
            }
            cur = next;
        }
        Ok(cur)
    }

    /// `valid[j]`: in bounds and not masked off.
    fn valid(&self, offs: &[i64], mask: Option<ValueId>) -> R<Vec<bool>> {
        let n = offs.len();
        match mask {
            None => Ok(offs.iter().map(|&o| o >= 0).collect()),
            Some(mv) => {
                let mk = self.ivals(mv)?;
                if mk.len() != n && mk.len() != 1 {
                    return Err(format!("mask has {} elements, the access {n}", mk.len()));
                }
                Ok((0..n).map(|j| offs[j] >= 0 && mk[bidx(mk.len(), j)] != 0).collect())
            }
        }
    }

    fn load(&self, op: &Op, tensor: usize, has_mask: bool, has_other: bool) -> R<Data> {
        let m = self.mem(tensor)?;
        let r = m.shape.len();
        Self::nargs(op, r + has_mask as usize + has_other as usize)?;
        let rt = self.result_ty(op)?;
        if rt.dtype != m.dtype {
            return Err(format!("result {rt} does not have the dtype of `{}` ({})", m.name, m.dtype));
        }
        let offs = self.offsets(m, &op.args[..r])?;
        let n = offs.len();
        if n != rt.numel() {
            return Err(format!("the indices select {n} elements, the result {rt} has {}", rt.numel()));
        }
        let valid = self.valid(&offs, has_mask.then(|| op.args[r]))?;
        let other = if has_other { Some(self.val(op.args[r + has_mask as usize])?) } else { None };
        if let Some(o) = &other {
            if o.len() != n && o.len() != 1 {
                return Err(format!("`other` has {} elements, the access {n}", o.len()));
            }
        }
        Ok(if is_float_repr(m.dtype) {
            let oth: Rc<Vec<f32>> = match other {
                None => Rc::new(vec![0.0]),
                Some(Data::F(o)) => o,
                Some(Data::I(_)) => return Err("`other` is not a float tile".into()),
            };
            Data::f((0..n).map(|j| if valid[j] { m.read_f(offs[j] as usize) } else { oth[bidx(oth.len(), j)] }).collect())
        } else {
            let oth: Rc<Vec<i64>> = match other {
                None => Rc::new(vec![0]),
                Some(Data::I(o)) => o,
                Some(Data::F(_)) => return Err("`other` is not an int tile".into()),
            };
            Data::i((0..n).map(|j| if valid[j] { m.read_i(offs[j] as usize) } else { oth[bidx(oth.len(), j)] }).collect())
        })
    }

    fn store(&self, op: &Op, tensor: usize, has_mask: bool, atomic: bool) -> R<()> {
        let m = self.mem(tensor)?;
        if !m.output {
            return Err(format!("`{}` is an input; only `out` tensors may be written", m.name));
        }
        if !op.results.is_empty() {
            return Err(format!("expects no results, got {}", op.results.len()));
        }
        let r = m.shape.len();
        Self::nargs(op, r + 1 + has_mask as usize)?;
        let vv = op.args[r];
        if self.ty(vv).dtype != m.dtype {
            return Err(format!("value {} does not have the dtype of `{}` ({})", self.ty(vv), m.name, m.dtype));
        }
        let offs = self.offsets(m, &op.args[..r])?;
        let n = offs.len();
        let val = self.val(vv)?;
        if val.len() != n && val.len() != 1 {
            return Err(format!("the value has {} elements, the indices select {n}", val.len()));
        }
        let valid = self.valid(&offs, has_mask.then(|| op.args[r + 1]))?;
        let dt = m.dtype;
        if !atomic {
            match &val {
                Data::F(v) => (0..n).filter(|&j| valid[j]).for_each(|j| m.set_raw(offs[j] as usize, f_bits(dt, v[bidx(v.len(), j)]))),
                Data::I(v) => (0..n)
                    .filter(|&j| valid[j])
                    .for_each(|j| m.set_raw(offs[j] as usize, numerics::encode_int(dt, v[bidx(v.len(), j)]))),
            }
            return Ok(());
        }
        if dt.is_code() {
            return Err(format!("atomic_add is not defined on {dt}"));
        }
        let _guard = m.lock.lock().unwrap_or_else(|e| e.into_inner());
        match &val {
            Data::F(v) => {
                for j in (0..n).filter(|&j| valid[j]) {
                    let e = offs[j] as usize;
                    let s = round_one(dt, m.read_f(e) + v[bidx(v.len(), j)]);
                    m.set_raw(e, f_bits(dt, s));
                }
            }
            Data::I(v) => {
                for j in (0..n).filter(|&j| valid[j]) {
                    let e = offs[j] as usize;
                    let s = numerics::wrap_int(dt, m.read_i(e).wrapping_add(v[bidx(v.len(), j)]));
                    m.set_raw(e, numerics::encode_int(dt, s));
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Element-wise semantics
// ---------------------------------------------------------------------------------------------

fn row_major_strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// out[i...] = src[sum i_d * strides[d]] over the row-major `out_shape`.
fn gather_strided<T: Copy>(src: &[T], out_shape: &[usize], strides: &[usize]) -> Vec<T> {
    let n = numel(out_shape);
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    let r = out_shape.len();
    if r == 0 {
        out.push(src[0]);
        return out;
    }
    let (last, ls) = (out_shape[r - 1], strides[r - 1]);
    let mut idx = vec![0usize; r - 1];
    let mut base = 0usize;
    'outer: loop {
        out.extend((0..last).map(|j| src[base + j * ls]));
        let mut d = r - 1;
        loop {
            if d == 0 {
                break 'outer;
            }
            d -= 1;
            idx[d] += 1;
            base += strides[d];
            if idx[d] < out_shape[d] {
                break;
            }
            base -= strides[d] * out_shape[d];
            idx[d] = 0;
        }
    }
    out
}

fn strided(x: &Data, out_shape: &[usize], strides: &[usize]) -> Data {
    match x {
        Data::F(v) => Data::f(gather_strided(v, out_shape, strides)),
        Data::I(v) => Data::i(gather_strided(v, out_shape, strides)),
    }
}

/// A literal in dtype `d`, `n` times.
fn const_data(s: Scalar, d: DType, n: usize) -> Data {
    match literal_elem(s, d) {
        LiteralElem::F(x) => Data::f(vec![x; n]),
        LiteralElem::I(v) => Data::i(vec![v; n]),
    }
}

/// One element of a literal: an f32 for the float dtypes ([`is_float_repr`]), an i64 otherwise.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LiteralElem {
    F(f32),
    I(i64),
}

/// The element of literal `s` in dtype `d`: floats rounded to the dtype, ints wrapped, codes
/// encoded (round to nearest even). Code generators call this too, so a literal is the same
/// element on every target.
pub fn literal_elem(s: Scalar, d: DType) -> LiteralElem {
    if is_float_repr(d) {
        let v = match s {
            Scalar::Int(i) => i as f64,
            Scalar::Float(f) => f,
            Scalar::Bool(b) => b as i64 as f64,
        };
        return LiteralElem::F(numerics::round_float(d, v) as f32);
    }
    LiteralElem::I(match s {
        Scalar::Int(i) => numerics::wrap_int(d, i),
        Scalar::Bool(b) => numerics::wrap_int(d, b as i64),
        Scalar::Float(f) => match d {
            DType::Bool => (f != 0.0) as i64,
            DType::E2M1 => numerics::e2m1_encode(f, Rounding::Rne) as i64,
            DType::E8M0 => numerics::e8m0_encode(f, Rounding::Rne) as i64,
            _ => numerics::float_to_int(d, f, Rounding::Rne),
        },
    })
}

/// IEEE maxNum: a NaN operand gives the other one; ties keep the first operand.
#[inline]
fn fmax(a: f32, b: f32) -> f32 {
    if a.is_nan() || b > a {
        b
    } else {
        a
    }
}

#[inline]
fn fmin(a: f32, b: f32) -> f32 {
    if a.is_nan() || b < a {
        b
    } else {
        a
    }
}

fn map_f(a: &[f32], f: impl Fn(f32) -> f32) -> Vec<f32> {
    a.iter().map(|&x| f(x)).collect()
}

fn unary(u: UnaryOp, d: DType, x: &Data) -> R<Data> {
    match x {
        Data::F(a) => {
            let mut v = match u {
                UnaryOp::Neg => map_f(a, |x| -x),
                UnaryOp::Abs => map_f(a, f32::abs),
                UnaryOp::Exp => map_f(a, f32::exp),
                UnaryOp::Exp2 => map_f(a, f32::exp2),
                UnaryOp::Log => map_f(a, f32::ln),
                UnaryOp::Log2 => map_f(a, f32::log2),
                UnaryOp::Sqrt => map_f(a, f32::sqrt),
                UnaryOp::Rsqrt => map_f(a, |x| 1.0 / x.sqrt()),
                UnaryOp::Recip => map_f(a, |x| 1.0 / x),
                UnaryOp::Sigmoid => map_f(a, |x| 1.0 / (1.0 + (-x).exp())),
                UnaryOp::Silu => map_f(a, |x| x * (1.0 / (1.0 + (-x).exp()))),
                UnaryOp::Tanh => map_f(a, f32::tanh),
                UnaryOp::Sin => map_f(a, f32::sin),
                UnaryOp::Cos => map_f(a, f32::cos),
                UnaryOp::Floor => map_f(a, f32::floor),
                UnaryOp::Ceil => map_f(a, f32::ceil),
                UnaryOp::Round => map_f(a, f32::round_ties_even),
                UnaryOp::IsNan => return Ok(Data::i(a.iter().map(|x| x.is_nan() as i64).collect())),
                UnaryOp::IsInf => return Ok(Data::i(a.iter().map(|x| x.is_infinite() as i64).collect())),
                UnaryOp::Not => return Err(format!("`not` is not defined on {d}")),
            };
            round_vec(d, &mut v);
            Ok(Data::f(v))
        }
        Data::I(a) => {
            if d.is_code() {
                return Err(format!("`{}` is not defined on {d}", u.mnemonic()));
            }
            let w = |x: i64| numerics::wrap_int(d, x);
            let v: Vec<i64> = match u {
                UnaryOp::Neg => a.iter().map(|&x| w(x.wrapping_neg())).collect(),
                UnaryOp::Abs => a.iter().map(|&x| w(x.wrapping_abs())).collect(),
                UnaryOp::Not if d == DType::Bool => a.iter().map(|&x| (x == 0) as i64).collect(),
                UnaryOp::Not => a.iter().map(|&x| w(!x)).collect(),
                _ => return Err(format!("`{}` is not defined on {d}", u.mnemonic())),
            };
            Ok(Data::i(v))
        }
    }
}

fn zip2<T: Copy, U>(a: &[T], b: &[T], f: impl Fn(T, T) -> U) -> R<Vec<U>> {
    if a.len() == b.len() {
        Ok(a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect())
    } else if b.len() == 1 {
        let y = b[0];
        Ok(a.iter().map(|&x| f(x, y)).collect())
    } else if a.len() == 1 {
        let x = a[0];
        Ok(b.iter().map(|&y| f(x, y)).collect())
    } else {
        Err(format!("operands have {} and {} elements", a.len(), b.len()))
    }
}

fn binary(op: BinaryOp, d: DType, x: &Data, y: &Data) -> R<Data> {
    match (x, y) {
        (Data::F(a), Data::F(b)) => {
            let mut v = match op {
                BinaryOp::Add => zip2(a, b, |x, y| x + y)?,
                BinaryOp::Sub => zip2(a, b, |x, y| x - y)?,
                BinaryOp::Mul => zip2(a, b, |x, y| x * y)?,
                BinaryOp::Div => zip2(a, b, |x, y| x / y)?,
                BinaryOp::Rem => zip2(a, b, |x, y| x % y)?,
                BinaryOp::Max => zip2(a, b, fmax)?,
                BinaryOp::Min => zip2(a, b, fmin)?,
                BinaryOp::Pow => zip2(a, b, f32::powf)?,
                _ => return Err(format!("`{}` is not defined on {d}", op.mnemonic())),
            };
            round_vec(d, &mut v);
            Ok(Data::f(v))
        }
        (Data::I(a), Data::I(b)) => {
            if d.is_code() {
                return Err(format!("`{}` is not defined on {d}", op.mnemonic()));
            }
            let w = |x: i64| numerics::wrap_int(d, x);
            let bits = d.bits() as i64;
            let bits = if d == DType::Bool { 1 } else { bits };
            let v = match op {
                BinaryOp::Add => zip2(a, b, |x, y| w(x.wrapping_add(y)))?,
                BinaryOp::Sub => zip2(a, b, |x, y| w(x.wrapping_sub(y)))?,
                BinaryOp::Mul => zip2(a, b, |x, y| w(x.wrapping_mul(y)))?,
                BinaryOp::Div => zip2(a, b, |x, y| if y == 0 { 0 } else { w(x.wrapping_div(y)) })?,
                BinaryOp::Rem => zip2(a, b, |x, y| if y == 0 { 0 } else { w(x.wrapping_rem(y)) })?,
                BinaryOp::Max => zip2(a, b, |x, y| x.max(y))?,
                BinaryOp::Min => zip2(a, b, |x, y| x.min(y))?,
                BinaryOp::And => zip2(a, b, |x, y| w(x & y))?,
                BinaryOp::Or => zip2(a, b, |x, y| w(x | y))?,
                BinaryOp::Xor => zip2(a, b, |x, y| w(x ^ y))?,
                BinaryOp::Shl => zip2(a, b, |x, y| if (0..bits).contains(&y) { w(x << y) } else { 0 })?,
                BinaryOp::Shr => zip2(a, b, |x, y| {
                    if (0..bits).contains(&y) {
                        x >> y
                    } else if x < 0 {
                        -1
                    } else {
                        0
                    }
                })?,
                BinaryOp::Pow => zip2(a, b, |x, y| numerics::int_pow(x, y, d))?,
            };
            Ok(Data::i(v))
        }
        _ => Err("operands of different kinds".into()),
    }
}

fn cmp(p: CmpPred, x: &Data, y: &Data) -> R<Data> {
    fn go<T: PartialOrd + Copy>(p: CmpPred, a: &[T], b: &[T]) -> R<Vec<i64>> {
        match p {
            CmpPred::Eq => zip2(a, b, |x, y| (x == y) as i64),
            CmpPred::Ne => zip2(a, b, |x, y| (x != y) as i64),
            CmpPred::Lt => zip2(a, b, |x, y| (x < y) as i64),
            CmpPred::Le => zip2(a, b, |x, y| (x <= y) as i64),
            CmpPred::Gt => zip2(a, b, |x, y| (x > y) as i64),
            CmpPred::Ge => zip2(a, b, |x, y| (x >= y) as i64),
        }
    }
    Ok(Data::i(match (x, y) {
        (Data::F(a), Data::F(b)) => go(p, a, b)?,
        (Data::I(a), Data::I(b)) => go(p, a, b)?,
        _ => return Err("operands of different kinds".into()),
    }))
}

/// Decoded value of an element of a non-float dtype (codes decoded, ints and bool as numbers).
#[inline]
fn int_value(d: DType, x: i64) -> f64 {
    match d {
        DType::E2M1 => numerics::e2m1_decode(x as u32) as f64,
        DType::E8M0 => numerics::e8m0_decode(x as u32),
        _ => x as f64,
    }
}

/// A tile's values as f32 (for float `dot` operands).
fn to_f32(x: &Data, d: DType) -> R<Rc<Vec<f32>>> {
    match x {
        Data::F(v) => Ok(v.clone()),
        Data::I(v) if d.is_code() => Ok(Rc::new(v.iter().map(|&c| int_value(d, c) as f32).collect())),
        Data::I(_) => Err(format!("an f32 dot needs float operands, got {d}")),
    }
}

fn cast(x: &Data, from: DType, to: DType, r: Rounding) -> R<Data> {
    if from == to {
        return Ok(x.clone());
    }
    let to_float = is_float_repr(to);
    Ok(match x {
        Data::F(a) => {
            if to_float {
                if to == DType::F32 {
                    // f16 / bf16 values are exact in f32
                    x.clone()
                } else {
                    Data::f(map_f(a, |v| numerics::round_float_with(to, v as f64, r) as f32))
                }
            } else {
                let f: fn(f32, DType, Rounding) -> i64 = match to {
                    DType::Bool => |v, _, _| (v != 0.0) as i64,
                    DType::E2M1 => |v, _, r| numerics::e2m1_encode(v as f64, r) as i64,
                    DType::E8M0 => |v, _, r| numerics::e8m0_encode(v as f64, r) as i64,
                    _ => |v, to, r| numerics::float_to_int(to, v as f64, r),
                };
                Data::i(a.iter().map(|&v| f(v, to, r)).collect())
            }
        }
        Data::I(a) => {
            if to_float {
                Data::f(a.iter().map(|&v| numerics::round_float_with(to, int_value(from, v), r) as f32).collect())
            } else if from.is_code() {
                match to {
                    DType::Bool => Data::i(a.iter().map(|&v| (int_value(from, v) != 0.0) as i64).collect()),
                    DType::E2M1 => Data::i(a.iter().map(|&v| numerics::e2m1_encode(int_value(from, v), r) as i64).collect()),
                    DType::E8M0 => Data::i(a.iter().map(|&v| numerics::e8m0_encode(int_value(from, v), r) as i64).collect()),
                    // code → int: the raw code
                    _ => Data::i(a.iter().map(|&v| numerics::wrap_int(to, v)).collect()),
                }
            } else if from == DType::Bool && to.is_code() {
                let f: fn(f64, Rounding) -> u32 = if to == DType::E2M1 { numerics::e2m1_encode } else { numerics::e8m0_encode };
                Data::i(a.iter().map(|&v| f(v as f64, r) as i64).collect())
            } else {
                // int → int wraps, anything → bool is != 0, int → code keeps the raw code
                Data::i(a.iter().map(|&v| numerics::wrap_int(to, v)).collect())
            }
        }
    })
}

fn bitcast(x: &Data, from: DType, to: DType) -> R<Data> {
    if from.bits() != to.bits() {
        return Err(format!("cannot bitcast {from} ({} bits) to {to} ({} bits)", from.bits(), to.bits()));
    }
    if from == to {
        return Ok(x.clone());
    }
    let bits: Vec<u32> = match x {
        Data::F(a) => a.iter().map(|&v| f_bits(from, v)).collect(),
        Data::I(a) => a.iter().map(|&v| numerics::encode_int(from, v)).collect(),
    };
    Ok(match to {
        DType::F32 => Data::f(bits.iter().map(|&b| f32::from_bits(b)).collect()),
        DType::F16 => Data::f(bits.iter().map(|&b| f16::from_bits(b as u16).to_f32()).collect()),
        DType::BF16 => Data::f(bits.iter().map(|&b| bf16::from_bits(b as u16).to_f32()).collect()),
        _ => Data::i(bits.iter().map(|&b| numerics::decode_int(to, b)).collect()),
    })
}

fn reduce(op: ReduceOp, d: DType, shape: &[usize], axis: usize, x: &Data) -> R<Data> {
    let outer = numel(&shape[..axis]);
    let n = shape[axis];
    let inner = numel(&shape[axis + 1..]);
    let at = |o: usize, j: usize, i: usize| (o * n + j) * inner + i;
    let arg = matches!(op, ReduceOp::Argmax | ReduceOp::Argmin);
    if n == 0 {
        // an empty axis: 0 for sums and indices, the identity for max / min
        return Ok(match (x, arg) {
            (_, true) => Data::i(vec![0; outer * inner]),
            (Data::F(_), false) => Data::f(vec![
                match op {
                    ReduceOp::Max => f32::NEG_INFINITY,
                    ReduceOp::Min => f32::INFINITY,
                    _ => 0.0,
                };
                outer * inner
            ]),
            (Data::I(_), false) => {
                let (lo, hi) = d.int_range().unwrap_or((0, 0));
                Data::i(vec![
                    match op {
                        ReduceOp::Max => lo,
                        ReduceOp::Min => hi,
                        _ => 0,
                    };
                    outer * inner
                ])
            }
        });
    }
    if d.is_code() && !arg {
        return Err(format!("reduce `{}` is not defined on {d}", op.name()));
    }
    match x {
        Data::F(a) => {
            if arg {
                let better: fn(f32, f32) -> bool = if op == ReduceOp::Argmax { |v, b| v > b } else { |v, b| v < b };
                let mut out = Vec::with_capacity(outer * inner);
                for o in 0..outer {
                    for i in 0..inner {
                        let mut best: Option<(usize, f32)> = None;
                        for j in 0..n {
                            let v = a[at(o, j, i)];
                            if v.is_nan() {
                                continue;
                            }
                            if best.is_none_or(|(_, b)| better(v, b)) {
                                best = Some((j, v));
                            }
                        }
                        out.push(best.map_or(0, |(j, _)| j as i64));
                    }
                }
                return Ok(Data::i(out));
            }
            let f: fn(f32, f32) -> f32 = match op {
                ReduceOp::Sum => |s, v| s + v,
                ReduceOp::Max => fmax,
                _ => fmin,
            };
            let mut out = Vec::with_capacity(outer * inner);
            for o in 0..outer {
                let mut acc: Vec<f32> = a[at(o, 0, 0)..at(o, 0, 0) + inner].to_vec();
                for j in 1..n {
                    let row = &a[at(o, j, 0)..at(o, j, 0) + inner];
                    acc.iter_mut().zip(row).for_each(|(s, &v)| *s = f(*s, v));
                }
                out.extend(acc);
            }
            round_vec(d, &mut out);
            Ok(Data::f(out))
        }
        Data::I(a) => {
            if arg {
                let better: fn(i64, i64) -> bool = if op == ReduceOp::Argmax { |v, b| v > b } else { |v, b| v < b };
                let mut out = Vec::with_capacity(outer * inner);
                for o in 0..outer {
                    for i in 0..inner {
                        let mut best = 0usize;
                        for j in 1..n {
                            if better(a[at(o, j, i)], a[at(o, best, i)]) {
                                best = j;
                            }
                        }
                        out.push(best as i64);
                    }
                }
                return Ok(Data::i(out));
            }
            let f: fn(i64, i64) -> i64 = match op {
                ReduceOp::Sum => |s, v| s.wrapping_add(v),
                ReduceOp::Max => |s, v| s.max(v),
                _ => |s, v| s.min(v),
            };
            let mut out = Vec::with_capacity(outer * inner);
            for o in 0..outer {
                let mut acc: Vec<i64> = a[at(o, 0, 0)..at(o, 0, 0) + inner].to_vec();
                for j in 1..n {
                    let row = &a[at(o, j, 0)..at(o, j, 0) + inner];
                    acc.iter_mut().zip(row).for_each(|(s, &v)| *s = f(*s, v));
                }
                out.extend(acc.into_iter().map(|s| numerics::wrap_int(d, s)));
            }
            Ok(Data::i(out))
        }
    }
}

fn scan(op: ScanOp, d: DType, shape: &[usize], axis: usize, x: &Data) -> R<Data> {
    let ScanOp::Cumsum = op;
    let outer = numel(&shape[..axis]);
    let n = shape[axis];
    let inner = numel(&shape[axis + 1..]);
    if d.is_code() {
        return Err(format!("cumsum is not defined on {d}"));
    }
    match x {
        Data::F(a) => {
            let mut out = vec![0f32; a.len()];
            for o in 0..outer {
                let mut acc = vec![0f32; inner];
                for j in 0..n {
                    let base = (o * n + j) * inner;
                    for i in 0..inner {
                        acc[i] = if j == 0 { a[base + i] } else { acc[i] + a[base + i] };
                        out[base + i] = round_one(d, acc[i]);
                    }
                }
            }
            Ok(Data::f(out))
        }
        Data::I(a) => {
            let mut out = vec![0i64; a.len()];
            for o in 0..outer {
                let mut acc = vec![0i64; inner];
                for j in 0..n {
                    let base = (o * n + j) * inner;
                    for i in 0..inner {
                        acc[i] = acc[i].wrapping_add(a[base + i]);
                        out[base + i] = numerics::wrap_int(d, acc[i]);
                    }
                }
            }
            Ok(Data::i(out))
        }
    }
}
