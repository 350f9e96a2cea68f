//! The `cpu` target's ahead-of-time renderer: `opc build FILE --target cpu -o DIR` writes a
//! shared library any C-ABI caller can load without the compiler.
//!
//! Files of the artifact (kernel `k`):
//! - `k.o`: the program and grid functions (`opc_k_program`, `opc_k_grid`, the signature of
//!   `emit::entry_signature`), emitted by `cranelift-object` from the same lowering as the
//!   in-process path, position-independent;
//! - `k_launch.c`: the generated launcher (below), and `opc_rt.c`: the runtime helpers the code
//!   calls (`aot_rt.c` with a generated prelude);
//! - `libk.so`: the three linked with `cc -shared` (`$CC` if set), helpers hidden;
//! - `k.h`: the C declarations; `manifest.json`: signatures, ABI, tunables, launch geometry.
//!
//! **Launcher** `int opc_k_launch(void *const *tensors, const int64_t *shapes, const opc_scalar *scalars)`:
//! `tensors` holds one data pointer per *tensor* parameter (parameter order; packed 4-bit and
//! byte layouts as `opc_ir::Tensor::data`), `shapes` every tensor parameter's dims concatenated
//! (rank known from the manifest), `scalars` one `opc_scalar` per *scalar* parameter (`.f32`,
//! `.i32`, or `.b` = 0/1). It binds the symbolic dims and checks every tensor's shape and the
//! kernel's constraints as `opc_ir::launch::bind_dims` does, evaluates the grid with the
//! compiled grid block, then runs the programs one after another on this thread (pid0 fastest)
//! with one zeroed scratch arena. It returns 0, or 1 (an argument's shape), 2 (a constraint),
//! 3 (the grid), 4 (a `for` with a non-positive step), 5 (out of memory); `opc_k_last_error()`
//! returns the message of the calling thread's last failure. The caller must pass buffers of
//! the sizes the shapes imply (the library cannot check byte counts).
//!
//! **Limits.** Kernels that call the `opc_cast` / `opc_bitcast` helpers (rare conversions whose
//! semantics live in `opc_ir::numerics`) are refused until those helpers have a C twin. The
//! launcher is single-threaded; callers wanting parallelism can call `opc_k_program` per
//! program themselves (its contract is the in-process one, documented in the manifest).

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use cranelift_codegen::ir::{ExtFuncData, ExternalName, Function, UserExternalName};
use cranelift_module::{default_libcall_names, FuncId, Linkage, Module};
use cranelift_object::{ObjectBuilder, ObjectModule};
use opc_ir::{Constraint, DType, DimExpr, Kernel, ParamKind};
use serde_json::json;

use super::emit::{self, Entry};
use super::loader::RelocTarget;
use super::helpers::Helper;
use super::{features, isa_with, unsupported, MetaLayout};
use crate::artifact::{base_manifest, Artifact, RenderOptions, Renderer};
use crate::{CodegenError, Result};

/// `--target cpu` as a [`Renderer`].
pub struct CpuRenderer;

const RT: &str = include_str!("aot_rt.c");

/// The object file of `k`'s two functions, and the helpers the code calls.
struct Object {
    bytes: Vec<u8>,
    helpers: BTreeSet<&'static str>,
    arena_bytes: usize,
}

/// The helpers `k`'s two functions call (from an in-process compile's relocations), so that the
/// object declares, and the library needs, only those.
fn used_helpers(k: &Kernel) -> Result<BTreeSet<Helper>> {
    let isa = super::isa()?;
    let mut used = BTreeSet::new();
    for entry in [Entry::Program, Entry::Grid] {
        for r in emit::compile_entry(k, entry, &*isa)?.relocs {
            if let RelocTarget::Helper(i) = r.target {
                used.insert(Helper::ALL[i as usize]);
            }
        }
    }
    Ok(used)
}

fn emit_object(k: &Kernel, sym: &str) -> Result<Object> {
    let used = used_helpers(k)?;
    for h in [Helper::Cast, Helper::Bitcast] {
        if used.contains(&h) {
            return Err(unsupported(
                k,
                format!("ahead-of-time output: the kernel calls the runtime helper `{}`, which has no C twin yet", h.symbol()),
            ));
        }
    }
    let isa = isa_with(true)?;
    let me = |e: cranelift_module::ModuleError| unsupported(k, format!("Cranelift: {e:?}"));
    let builder = ObjectBuilder::new(isa.clone(), format!("opc_{sym}"), default_libcall_names()).map_err(me)?;
    let mut module = ObjectModule::new(builder);
    let ptr = isa.pointer_type();
    let cc = isa.default_call_conv();
    let mut ids: HashMap<Helper, FuncId> = HashMap::new();
    for &h in &used {
        ids.insert(h, module.declare_function(h.symbol(), Linkage::Import, &emit::helper_signature(h, cc, ptr)).map_err(me)?);
    }
    let sig = emit::entry_signature(cc, ptr);
    let mut arena_bytes = 0;
    for (entry, name) in [(Entry::Program, format!("opc_{sym}_program")), (Entry::Grid, format!("opc_{sym}_grid"))] {
        let id = module.declare_function(&name, Linkage::Export, &sig).map_err(me)?;
        let mut ctx = module.make_context();
        ctx.func.signature = sig.clone();
        // A helper the code never calls gets a name outside the module's namespace: declaring
        // it would leave an undefined symbol in the library; calling it would fail to link.
        let mut import = |h: Helper, f: &mut Function| match ids.get(&h) {
            Some(&id) => module.declare_func_in_func(id, f),
            None => {
                let signature = f.import_signature(emit::helper_signature(h, cc, ptr));
                let name = ExternalName::user(f.declare_imported_user_function(UserExternalName::new(1, 0)));
                f.import_function(ExtFuncData { name, signature, colocated: false, patchable: false })
            }
        };
        let bytes = emit::define(k, entry, &mut ctx.func, &*isa, &mut import)?;
        if entry == Entry::Program {
            arena_bytes = bytes;
        }
        module.define_function(id, &mut ctx).map_err(me)?;
        module.clear_context(&mut ctx);
    }
    let bytes = module.finish().emit().map_err(|e| unsupported(k, format!("writing the object file: {e}")))?;
    Ok(Object { bytes, helpers: used.iter().map(|h| h.symbol()).collect(), arena_bytes })
}

/// The generated prelude of `opc_rt.c`: dtype codes and integer wrapping (`numerics::wrap_int`).
fn rt_source() -> String {
    let code = |d: DType| super::helpers::dtype_code(d);
    let mut s = format!("#define OPC_DTYPE_F32 {}\n#include <stdint.h>\nstatic int64_t opc_wrap_int(uint32_t d, int64_t x) {{\n    switch (d) {{\n", code(DType::F32));
    for d in DType::ALL {
        let e = match d {
            DType::Bool => "x != 0",
            DType::I4 => "(int64_t)((uint64_t)x << 60) >> 60",
            DType::I8 => "(int8_t)x",
            DType::U8 | DType::E8M0 => "(uint8_t)x",
            DType::E2M1 => "x & 0xF",
            DType::I32 => "(int32_t)x",
            _ => continue,
        };
        let _ = writeln!(s, "    case {}: return {e}; /* {} */", code(d), d.name());
    }
    s.push_str("    default: return x;\n    }\n}\n");
    s + RT
}

/// A C expression for `e` over `dims[]`, clearing `ok` on overflow, division by zero or an
/// inexact division (the semantics of `DimExpr::eval`).
fn c_dim(e: &DimExpr) -> String {
    match e {
        DimExpr::Sym(s) => format!("dims[{}]", s.0),
        DimExpr::Const(c) if *c == i64::MIN => "INT64_MIN".into(),
        DimExpr::Const(c) => format!("INT64_C({c})"),
        DimExpr::Add(a, b) => format!("ck_add({}, {}, &ok)", c_dim(a), c_dim(b)),
        DimExpr::Sub(a, b) => format!("ck_sub({}, {}, &ok)", c_dim(a), c_dim(b)),
        DimExpr::Mul(a, b) => format!("ck_mul({}, {}, &ok)", c_dim(a), c_dim(b)),
        DimExpr::Div(a, b) => format!("ck_div({}, {}, &ok)", c_dim(a), c_dim(b)),
    }
}

fn c_str(s: &str) -> String {
    let mut o = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '%' => o.push_str("%%"),
            '\n' => o.push_str("\\n"),
            c if c.is_ascii() && !c.is_ascii_control() => o.push(c),
            _ => o.push('?'),
        }
    }
    o.push('"');
    o
}

/// The header: the scalar union and the three entry points.
fn header(k: &Kernel, sym: &str) -> String {
    let guard = format!("OPC_{}_H", sym.to_ascii_uppercase());
    let tensors: Vec<&str> = k.params.iter().filter(|p| matches!(p.kind, ParamKind::Tensor { .. })).map(|p| p.name.as_str()).collect();
    let scalars: Vec<&str> = k.params.iter().filter(|p| matches!(p.kind, ParamKind::Scalar { .. })).map(|p| p.name.as_str()).collect();
    format!(
        "/* Generated by {compiler}: kernel `{name}` (see manifest.json). */\n#ifndef {guard}\n#define {guard}\n#include <stdint.h>\n\n\
#ifndef OPC_SCALAR_DEFINED\n#define OPC_SCALAR_DEFINED\n/* One scalar argument: .f32 for f32, .i32 for i32, .b (0 or 1) for bool. */\ntypedef union {{ float f32; int32_t i32; int32_t b; }} opc_scalar;\n#endif\n\n\
#ifdef __cplusplus\nextern \"C\" {{\n#endif\n\
/* tensors: {nt} data pointers ({tl}); shapes: their dims concatenated; scalars: {ns} ({sl}).\n   Returns 0, or 1 shape / 2 constraint / 3 grid / 4 step / 5 memory error: see opc_{sym}_last_error(). */\n\
int opc_{sym}_launch(void *const *tensors, const int64_t *shapes, const opc_scalar *scalars);\n\
/* The message of this thread's last failed launch (\"\" if none). */\nconst char *opc_{sym}_last_error(void);\n\
/* One program (advanced use; see manifest.json \"program_abi\"). */\n\
int opc_{sym}_program(void *const *tensors, const int64_t *meta, int64_t pid0, int64_t pid1, int64_t pid2, void *scratch, int64_t *err);\n\
#ifdef __cplusplus\n}}\n#endif\n#endif\n",
        compiler = super::compiler_id(),
        name = k.name,
        nt = tensors.len(),
        tl = tensors.join(", "),
        ns = scalars.len(),
        sl = scalars.join(", "),
    )
}

/// The launcher (see the module docs).
fn launcher(k: &Kernel, sym: &str, arena_bytes: usize, for_sites: &[String]) -> String {
    let lay = MetaLayout::new(k);
    let dim_name = |s: usize| k.dims[s].name.clone();
    let mut c = String::new();
    let _ = write!(
        c,
        "/* Generated by {}: the launcher of kernel `{}`. */\n#include <stdint.h>\n#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n\n\
#define OPC_API __attribute__((visibility(\"default\")))\n\
typedef union {{ float f32; int32_t i32; int32_t b; }} opc_scalar;\n\
int opc_{sym}_program(void *const *tensors, const int64_t *meta, int64_t pid0, int64_t pid1, int64_t pid2, void *scratch, int64_t *err);\n\
int opc_{sym}_grid(void *const *tensors, const int64_t *meta, int64_t pid0, int64_t pid1, int64_t pid2, void *scratch, int64_t *err);\n\n\
static __thread char opc_err[512];\n\
OPC_API const char *opc_{sym}_last_error(void) {{ return opc_err; }}\n\
#define FAIL(code, ...) do {{ snprintf(opc_err, sizeof opc_err, \"kernel `{name}`: \" __VA_ARGS__); return (code); }} while (0)\n\
static int64_t ck_add(int64_t a, int64_t b, int *ok) {{ int64_t r; if (__builtin_add_overflow(a, b, &r)) *ok = 0; return r; }}\n\
static int64_t ck_sub(int64_t a, int64_t b, int *ok) {{ int64_t r; if (__builtin_sub_overflow(a, b, &r)) *ok = 0; return r; }}\n\
static int64_t ck_mul(int64_t a, int64_t b, int *ok) {{ int64_t r; if (__builtin_mul_overflow(a, b, &r)) *ok = 0; return r; }}\n\
static int64_t ck_div(int64_t a, int64_t b, int *ok) {{ if (b == 0 || (a == INT64_MIN && b == -1) || a % b != 0) {{ *ok = 0; return 0; }} return a / b; }}\n\
static const char *const for_sites[] = {{ {sites} }};\n\n\
OPC_API int opc_{sym}_launch(void *const *tensors, const int64_t *shapes, const opc_scalar *scalars) {{\n\
    int ok = 1;\n    (void)ok; (void)scalars; (void)shapes;\n    opc_err[0] = 0;\n    int64_t dims[{nd}] = {{0}};\n    int64_t meta[{ml}] = {{0}};\n    void *ptrs[{np}] = {{0}};\n",
        super::compiler_id(),
        k.name,
        name = k.name.replace('"', ""),
        sites = if for_sites.is_empty() { "\"\"".to_string() } else { for_sites.iter().map(|s| c_str(s)).collect::<Vec<_>>().join(", ") },
        nd = k.dims.len().max(1),
        ml = lay.len.max(1),
        np = k.params.len().max(1),
    );
    // Where each tensor's shape starts in `shapes`, and each parameter's pointer / scalar index.
    let mut shape_at = vec![0usize; k.params.len()];
    let (mut so, mut ti, mut si) = (0usize, 0usize, 0usize);
    c.push_str("    /* shapes: non-negative, element counts that fit */\n");
    for (pi, p) in k.params.iter().enumerate() {
        match &p.kind {
            ParamKind::Tensor { dims, .. } => {
                shape_at[pi] = so;
                let _ = writeln!(c, "    ptrs[{pi}] = tensors[{ti}];");
                let _ = writeln!(c, "    {{ int64_t n = 1; int okn = 1; for (int d = 0; d < {}; d++) {{ if (shapes[{so} + d] < 0) FAIL(1, \"argument `{}`: dim %d is negative (%lld)\", d, (long long)shapes[{so} + d]); n = ck_mul(n, shapes[{so} + d], &okn); }} (void)ck_mul(n, 8, &okn); if (!okn) FAIL(1, \"argument `{}`: the shape has too many elements\"); }}", dims.len(), p.name, p.name);
                so += dims.len();
                ti += 1;
            }
            ParamKind::Scalar { dtype } => {
                let at = lay.params[pi];
                let v = match dtype {
                    DType::F32 => format!("(int64_t)({{ uint32_t u; memcpy(&u, &scalars[{si}].f32, 4); u; }})"),
                    DType::Bool => format!("(int64_t)(scalars[{si}].b != 0)"),
                    _ => format!("(int64_t)scalars[{si}].i32"),
                };
                let _ = writeln!(c, "    meta[{at}] = {v}; /* {} */", p.name);
                si += 1;
            }
        }
    }
    // Bind each symbol from the first tensor where it is a dim on its own.
    c.push_str("    /* bind the dims */\n");
    let mut binder: Vec<Option<(usize, usize)>> = vec![None; k.dims.len()];
    for (pi, p) in k.params.iter().enumerate() {
        let ParamKind::Tensor { dims, .. } = &p.kind else { continue };
        for (d, e) in dims.iter().enumerate() {
            if let DimExpr::Sym(s) = e {
                let s = s.0 as usize;
                if s < binder.len() && binder[s].is_none() {
                    binder[s] = Some((pi, d));
                    let at = shape_at[pi] + d;
                    let _ = writeln!(c, "    dims[{s}] = shapes[{at}]; /* {} from `{}` dim {d} */", dim_name(s), p.name);
                    if let Some(v) = k.dims[s].value {
                        let _ = writeln!(
                            c,
                            "    if (dims[{s}] != INT64_C({v})) FAIL(1, \"argument `{}`: dim {d} is %lld but `{}` is specialized to {v}\", (long long)dims[{s}]);",
                            p.name,
                            dim_name(s)
                        );
                    }
                }
            }
        }
    }
    for (s, b) in binder.iter().enumerate() {
        if b.is_none() {
            match k.dims[s].value {
                Some(v) => {
                    let _ = writeln!(c, "    dims[{s}] = INT64_C({v}); /* {} (specialized) */", dim_name(s));
                }
                None => {
                    let _ = writeln!(c, "    FAIL(2, \"dim `{}` cannot be bound: it is not a dim on its own of any tensor parameter\");", dim_name(s));
                }
            }
        }
    }
    // Every dim of every tensor against its expression.
    c.push_str("    /* check every tensor dim */\n");
    for (pi, p) in k.params.iter().enumerate() {
        let ParamKind::Tensor { dims, .. } = &p.kind else { continue };
        for (d, e) in dims.iter().enumerate() {
            if let DimExpr::Sym(s) = e {
                if binder.get(s.0 as usize).copied().flatten() == Some((pi, d)) {
                    continue;
                }
            }
            let at = shape_at[pi] + d;
            let text = opc_ir::launch::fmt_dim_expr(k, e);
            let _ = writeln!(
                c,
                "    {{ ok = 1; int64_t v = {}; if (!ok) FAIL(1, \"argument `{}`: dim {d} is %lld but `{}` has no value\", (long long)shapes[{at}]); if (v != shapes[{at}]) FAIL(1, \"argument `{}`: dim {d} is %lld but `{}` is %lld\", (long long)shapes[{at}], (long long)v); }}",
                c_dim(e),
                p.name,
                text.replace('"', ""),
                p.name,
                text.replace('"', "")
            );
        }
    }
    c.push_str("    /* constraints */\n");
    for con in &k.constraints {
        let f = |e: &DimExpr| opc_ir::launch::fmt_dim_expr(k, e).replace('"', "");
        match con {
            Constraint::OneOf(e, allowed) => {
                let list: Vec<String> = allowed.iter().map(|v| format!("v == INT64_C({v})")).collect();
                let cond = if list.is_empty() { "0".to_string() } else { list.join(" || ") };
                let _ = writeln!(
                    c,
                    "    {{ ok = 1; int64_t v = {}; if (!ok || !({cond})) FAIL(2, \"dim `{}` must be one of {{{}}}, got %lld\", (long long)v); }}",
                    c_dim(e),
                    f(e),
                    allowed.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ")
                );
            }
            Constraint::MultipleOf(x, y) => {
                let _ = writeln!(
                    c,
                    "    {{ ok = 1; int64_t a = {}, m = {}; if (!ok || m == 0 || (m == -1 ? a == INT64_MIN : a % m != 0)) FAIL(2, \"constraint `{} % {} == 0` violated: %lld %% %lld\", (long long)a, (long long)m); }}",
                    c_dim(x),
                    c_dim(y),
                    f(x),
                    f(y)
                );
            }
            Constraint::Range(e, lo, hi) => {
                let mut conds = vec!["!ok".to_string()];
                if let Some(lo) = lo {
                    conds.push(format!("v < INT64_C({lo})"));
                }
                if let Some(hi) = hi {
                    conds.push(format!("v > INT64_C({hi})"));
                }
                let _ = writeln!(
                    c,
                    "    {{ ok = 1; int64_t v = {}; if ({}) FAIL(2, \"constraint `{} in [{}, {}]` violated: %lld\", (long long)v); }}",
                    c_dim(e),
                    conds.join(" || "),
                    f(e),
                    lo.map_or("_".into(), |v| v.to_string()),
                    hi.map_or("_".into(), |v| v.to_string())
                );
            }
        }
    }
    // meta: dims, tensor shapes and row-major strides; then the grid.
    c.push_str("    /* meta */\n");
    let _ = writeln!(c, "    for (int s = 0; s < {}; s++) meta[{} + s] = dims[s];", k.dims.len(), lay.dims);
    for (pi, p) in k.params.iter().enumerate() {
        let ParamKind::Tensor { dims, .. } = &p.kind else { continue };
        let (r, at, so) = (dims.len(), lay.params[pi], shape_at[pi]);
        let _ = writeln!(
            c,
            "    {{ int64_t st = 1; for (int d = {r} - 1; d >= 0; d--) {{ meta[{at} + d] = shapes[{so} + d]; meta[{at} + {r} + d] = st; st = (int64_t)((uint64_t)st * (uint64_t)shapes[{so} + d]); }} }} /* {} */",
            p.name
        );
    }
    let _ = write!(
        c,
        "    int64_t g[3] = {{1, 1, 1}};\n\
    if (opc_{sym}_grid(ptrs, meta, 0, 0, 0, NULL, g) != 0) FAIL(3, \"the grid block failed\");\n\
    for (int i = 0; i < 3; i++) if (g[i] < 0) FAIL(3, \"grid extent %d is negative: %lld\", i, (long long)g[i]);\n\
    {{ int okg = 1; (void)ck_mul(ck_mul(g[0], g[1], &okg), g[2], &okg); if (!okg) FAIL(3, \"grid [%lld, %lld, %lld] has too many programs\", (long long)g[0], (long long)g[1], (long long)g[2]); }}\n\
    for (int i = 0; i < 3; i++) meta[{gr} + i] = g[i];\n\
    int64_t total = g[0] * g[1] * g[2];\n\
    size_t words = {words};\n\
    void *arena = aligned_alloc(16, words * 16);\n\
    if (!arena) FAIL(5, \"cannot allocate the %zu-byte scratch arena\", words * 16);\n\
    memset(arena, 0, words * 16);\n\
    for (int64_t p = 0; p < total; p++) {{\n\
        int64_t pid0 = p % g[0], pid1 = (p / g[0]) % g[1], pid2 = p / (g[0] * g[1]), err = 0;\n\
        int rc = opc_{sym}_program(ptrs, meta, pid0, pid1, pid2, arena, &err);\n\
        if (rc != 0) {{\n\
            free(arena);\n\
            const char *site = (rc >= 1 && rc <= (int)(sizeof for_sites / sizeof for_sites[0])) ? for_sites[rc - 1] : \"op `for`\";\n\
            FAIL(4, \"program (%lld, %lld, %lld): %s: step must be positive, got %lld\", (long long)pid0, (long long)pid1, (long long)pid2, site, (long long)err);\n\
        }}\n\
    }}\n\
    free(arena);\n\
    return 0;\n}}\n",
        gr = lay.grid,
        words = arena_bytes.div_ceil(16) + 1,
    );
    c
}

/// Run `cc` (or `$CC`) on the artifact's sources in `dir`, producing `lib`.
fn link(dir: &Path, lib: &str, inputs: &[&str]) -> std::result::Result<(), String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = std::process::Command::new(&cc)
        .current_dir(dir)
        .args(["-O2", "-std=gnu11", "-fPIC", "-shared", "-fvisibility=hidden", "-o", lib])
        .args(inputs)
        .arg("-lm")
        .output()
        .map_err(|e| format!("cannot run the C compiler `{cc}` (set $CC): {e}"))?;
    if !out.status.success() {
        return Err(format!("`{cc}` failed:\n{}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(())
}

impl Renderer for CpuRenderer {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn render(&self, k: &Kernel, _opts: &RenderOptions) -> Result<Artifact> {
        opc_ir::verify::verify(k).map_err(|e| unsupported(k, format!("the kernel does not verify: {e}")))?;
        let sym: String = k.name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
        let obj = emit_object(k, &sym)?;
        let for_sites = super::lower::for_sites(k);
        let launch_c = launcher(k, &sym, obj.arena_bytes, &for_sites);
        let rt_c = rt_source();
        let header = header(k, &sym);
        let (o_name, c_name, h_name, lib) = (format!("{sym}.o"), format!("{sym}_launch.c"), format!("{sym}.h"), format!("lib{sym}.so"));

        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = std::env::temp_dir().join(format!("opc-aot-{}-{seq}-{}-{sym}", std::process::id(), crate::artifact::ir_hash(k)));
        let io = |e: std::io::Error| unsupported(k, format!("writing {}: {e}", tmp.display()));
        std::fs::create_dir_all(&tmp).map_err(io)?;
        let built = (|| -> std::result::Result<Vec<u8>, CodegenError> {
            std::fs::write(tmp.join(&o_name), &obj.bytes).map_err(io)?;
            std::fs::write(tmp.join(&c_name), &launch_c).map_err(io)?;
            std::fs::write(tmp.join("opc_rt.c"), &rt_c).map_err(io)?;
            link(&tmp, &lib, &[&c_name, "opc_rt.c", &o_name]).map_err(|e| unsupported(k, format!("linking {lib}: {e}")))?;
            std::fs::read(tmp.join(&lib)).map_err(io)
        })();
        let _ = std::fs::remove_dir_all(&tmp);
        let so = built?;

        let isa = isa_with(true)?;
        let mut m = base_manifest(k, "cpu");
        let tensors: Vec<_> = k
            .params
            .iter()
            .filter_map(|p| match &p.kind {
                ParamKind::Tensor { dtype, dims, output } => Some(json!({"name": p.name, "dtype": dtype.name(), "rank": dims.len(), "output": output})),
                _ => None,
            })
            .collect();
        let scalars: Vec<_> = k
            .params
            .iter()
            .filter_map(|p| match &p.kind {
                ParamKind::Scalar { dtype } => Some(json!({"name": p.name, "dtype": dtype.name(), "field": match dtype {
                    DType::F32 => "f32", DType::Bool => "b", _ => "i32" }})),
                _ => None,
            })
            .collect();
        let obj_map = m.as_object_mut().expect("base_manifest is an object");
        obj_map.insert("compiler_build".into(), json!(super::compiler_id()));
        obj_map.insert("library".into(), json!(lib));
        obj_map.insert("header".into(), json!(h_name));
        obj_map.insert("target_features".into(), json!(features(&isa)));
        obj_map.insert("helpers".into(), json!(obj.helpers));
        obj_map.insert(
            "entry_points".into(),
            json!({
                "launch": format!("int opc_{sym}_launch(void *const *tensors, const int64_t *shapes, const opc_scalar *scalars)"),
                "last_error": format!("const char *opc_{sym}_last_error(void)"),
                "program": format!("int opc_{sym}_program(void *const *tensors, const int64_t *meta, int64_t pid0, int64_t pid1, int64_t pid2, void *scratch, int64_t *err)"),
            }),
        );
        obj_map.insert(
            "launch_abi".into(),
            json!({
                "tensors": tensors,
                "shapes": "every tensor's dims (int64), concatenated in the order of `tensors`",
                "scalars": scalars,
                "opc_scalar": "typedef union { float f32; int32_t i32; int32_t b; } opc_scalar",
                "data_layout": "row-major, contiguous; sub-byte dtypes (i4, e2m1) packed two per byte, low nibble first",
                "return_codes": {"0": "ok", "1": "argument shape", "2": "constraint", "3": "grid", "4": "for step not positive", "5": "out of memory"},
                "threads": 1,
            }),
        );
        let lay = MetaLayout::new(k);
        obj_map.insert(
            "launch_geometry".into(),
            json!({
                "grid": "the extents yielded by `grid_ir` (missing axes 1); program p runs pid0 = p % g0, pid1 = (p / g0) % g1, pid2 = p / (g0 * g1)",
                "order": "sequential, p = 0 .. g0*g1*g2",
                "arena_bytes": obj.arena_bytes,
            }),
        );
        obj_map.insert(
            "program_abi".into(),
            json!({
                "tensors": "one pointer per parameter (null for scalars)",
                "meta_len": lay.len,
                "meta": format!("i64s: dims at {} (one per dim symbol), grid at {} (3), then per parameter its scalar (f32 as bits) or its shape then row-major element strides, starting at {:?}", lay.dims, lay.grid, lay.params),
                "scratch": format!("{} bytes, 16-aligned, per concurrently running program", obj.arena_bytes),
                "returns": "0, or k+1 when the k-th `for` (pre-order) had a non-positive step, written to *err",
            }),
        );
        Ok(Artifact {
            files: vec![(lib, so), (h_name, header.into_bytes()), (c_name, launch_c.into_bytes()), ("opc_rt.c".into(), rt_c.into_bytes()), (o_name, obj.bytes)],
            manifest: m,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dim_expressions_become_checked_c() {
        let e = DimExpr::Div(Box::new(DimExpr::Sym(opc_ir::SymId(1))), Box::new(DimExpr::Const(32)));
        assert_eq!(c_dim(&e), "ck_div(dims[1], INT64_C(32), &ok)");
        assert_eq!(c_str("a\"b%"), "\"a\\\"b%%\"");
    }
}
