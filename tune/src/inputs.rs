//! The launch a tuning run times: dim values from the user (`--dim M=512`), every tensor
//! parameter's shape evaluated from them, random input data, zeroed outputs and the scalars
//! the user gave (`--scalar has_bias=true`). Scalars are never guessed: they change what a
//! kernel computes (a causal flag, a window), so a missing one is an error naming it.

use opc_ir::{Arg, DType, Kernel, ParamKind, Tensor};

use crate::space::SplitMix;
use crate::TuneError;

/// The value of every dim symbol of `kernel` (indexed like `kernel.dims`): specialized consts
/// from the kernel, the others from `dims`.
pub fn sym_values(kernel: &Kernel, dims: &[(String, i64)]) -> Result<Vec<i64>, TuneError> {
    let usage = |m: String| TuneError::Usage(m);
    for (name, v) in dims {
        match kernel.dims.iter().find(|d| &d.name == name) {
            None => {
                let names: Vec<&str> = kernel.dims.iter().filter(|d| !d.konst).map(|d| d.name.as_str()).collect();
                return Err(usage(format!("kernel `{}` has no dim `{name}` (its dims: {})", kernel.name, names.join(", "))));
            }
            Some(d) if d.konst => {
                return Err(usage(format!(
                    "`{name}` is a const dim of kernel `{}`: give it with --const {name}={v}, not --dim",
                    kernel.name
                )))
            }
            Some(_) if *v < 0 => return Err(usage(format!("--dim {name}={v}: a dim cannot be negative"))),
            Some(_) => {}
        }
    }
    let mut missing = vec![];
    let values: Vec<i64> = kernel
        .dims
        .iter()
        .map(|d| match (d.konst, d.value) {
            (true, Some(v)) => v,
            _ => dims.iter().find(|(n, _)| *n == d.name).map(|(_, v)| *v).unwrap_or_else(|| {
                missing.push(d.name.clone());
                0
            }),
        })
        .collect();
    if !missing.is_empty() {
        let flags: Vec<String> = missing.iter().map(|n| format!("--dim {n}=N")).collect();
        return Err(usage(format!("kernel `{}` needs a value for every dim it is launched with: {}", kernel.name, flags.join(" "))));
    }
    Ok(values)
}

/// The launch arguments in parameter order: random inputs (seeded), zeroed outputs, the
/// given scalars.
pub fn random_args(kernel: &Kernel, syms: &[i64], scalars: &[(String, String)], seed: u64) -> Result<Vec<Arg>, TuneError> {
    let usage = |m: String| TuneError::Usage(m);
    for (name, _) in scalars {
        if !kernel.params.iter().any(|p| &p.name == name && matches!(p.kind, ParamKind::Scalar { .. })) {
            let names: Vec<&str> = kernel.params.iter().filter(|p| matches!(p.kind, ParamKind::Scalar { .. })).map(|p| p.name.as_str()).collect();
            let list = if names.is_empty() { "none".to_string() } else { names.join(", ") };
            return Err(usage(format!("kernel `{}` has no scalar parameter `{name}` (its scalars: {list})", kernel.name)));
        }
    }
    let missing: Vec<String> = kernel
        .params
        .iter()
        .filter_map(|p| match p.kind {
            ParamKind::Scalar { dtype } if !scalars.iter().any(|(n, _)| n == &p.name) => Some(format!("--scalar {}=<{dtype}>", p.name)),
            _ => None,
        })
        .collect();
    if !missing.is_empty() {
        return Err(usage(format!("kernel `{}` needs a value for every scalar parameter: {}", kernel.name, missing.join(" "))));
    }
    let mut rng = SplitMix(seed ^ 0x6f70_6374_756e_6521);
    let mut args = Vec::with_capacity(kernel.params.len());
    for p in &kernel.params {
        match &p.kind {
            ParamKind::Scalar { dtype } => {
                let text = &scalars.iter().find(|(n, _)| n == &p.name).expect("checked above").1;
                args.push(scalar(&p.name, *dtype, text)?);
            }
            ParamKind::Tensor { dtype, dims, output } => {
                let mut shape = Vec::with_capacity(dims.len());
                for e in dims {
                    let v = e.eval(&|s| syms.get(s.0 as usize).copied());
                    match v {
                        Some(v) if v >= 0 => shape.push(v as usize),
                        _ => {
                            let text = opc_ir::launch::fmt_dim_expr(kernel, e);
                            return Err(usage(format!(
                                "parameter `{}`: its dim `{text}` is not a whole, non-negative number with these dims",
                                p.name
                            )));
                        }
                    }
                }
                let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).filter(|n| n.checked_mul(8).is_some());
                let Some(numel) = numel else {
                    return Err(usage(format!("parameter `{}`: shape {shape:?} is too large", p.name)));
                };
                let mut t = Tensor::zeros(*dtype, &shape);
                if !output {
                    fill_random(&mut t, numel, &mut rng);
                }
                args.push(Arg::Tensor(t));
            }
        }
    }
    Ok(args)
}

fn scalar(name: &str, dtype: DType, text: &str) -> Result<Arg, TuneError> {
    let bad = || TuneError::Usage(format!("--scalar {name}={text}: `{name}` is {} {dtype} scalar", opc_ir::launch::article(dtype)));
    match dtype {
        DType::F32 => text.parse::<f32>().map(Arg::F32).map_err(|_| bad()),
        DType::I32 => text.parse::<i32>().map(Arg::I32).map_err(|_| bad()),
        DType::Bool => match text {
            "true" | "1" => Ok(Arg::Bool(true)),
            "false" | "0" => Ok(Arg::Bool(false)),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// Random elements by dtype: floats uniform in [-1, 1); i32 in [0, 4) (small, so index
/// tensors address real rows); i8 in [-8, 8); raw bytes and 4-bit codes uniform; E8M0 scales
/// 2^-7 .. 2^7; bools half true.
fn fill_random(t: &mut Tensor, numel: usize, rng: &mut SplitMix) {
    match t.dtype {
        DType::F32 | DType::F16 | DType::BF16 => {
            for i in 0..numel {
                let v = rng.unit() * 2.0 - 1.0;
                t.set_raw(i, opc_ir::numerics::encode_f64(t.dtype, v));
            }
        }
        DType::I32 => (0..numel).for_each(|i| t.set_raw(i, (rng.next() % 4) as u32)),
        DType::I8 => (0..numel).for_each(|i| t.set_raw(i, ((rng.next() % 16) as i32 - 8) as u32)),
        DType::E8M0 => (0..numel).for_each(|i| t.set_raw(i, 120 + (rng.next() % 15) as u32)),
        DType::Bool => (0..numel).for_each(|i| t.set_raw(i, (rng.next() & 1) as u32)),
        DType::U8 | DType::I4 | DType::E2M1 => t.data.iter_mut().for_each(|b| *b = rng.next() as u8),
    }
}

/// Put the given tensors in place of the random ones (same dtype and shape, input parameters
/// only).
pub fn replace(kernel: &Kernel, args: &mut [Arg], given: &[(String, Tensor)]) -> Result<(), TuneError> {
    for (name, t) in given {
        let at = kernel.params.iter().position(|p| &p.name == name && matches!(p.kind, ParamKind::Tensor { output: false, .. }));
        let Some(at) = at else {
            return Err(TuneError::Usage(format!("kernel `{}` has no input tensor `{name}`", kernel.name)));
        };
        match &mut args[at] {
            Arg::Tensor(slot) if slot.dtype == t.dtype && slot.shape == t.shape => *slot = t.clone(),
            Arg::Tensor(slot) => {
                return Err(TuneError::Usage(format!(
                    "input `{name}` is {} {} tensor of shape {:?}; with these dims the kernel takes {} {} tensor of shape {:?}",
                    opc_ir::launch::article(t.dtype),
                    t.dtype,
                    t.shape,
                    opc_ir::launch::article(slot.dtype),
                    slot.dtype,
                    slot.shape
                )))
            }
            _ => unreachable!("a tensor parameter"),
        }
    }
    Ok(())
}
