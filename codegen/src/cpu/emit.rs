//! Building the CLIF functions of one kernel and compiling them to relocatable machine code.
//!
//! Two consumers share this: the in-process path ([`compile_blob`]: one function compiled by
//! `Context::compile`, whose bytes and relocations become a [`Blob`] that `loader.rs` maps and
//! the disk cache stores) and the ahead-of-time path (`aot.rs`: the same functions defined in a
//! `cranelift-object` module). Both declare the runtime helpers through a callback, so the
//! lowering never knows which linker resolves them.

use std::collections::HashMap;

use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::{
    types, AbiParam, ExtFuncData, ExternalName, FuncRef, Function, Signature, Type, UserExternalName,
};
use cranelift_codegen::isa::{CallConv, TargetIsa};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use opc_ir::Kernel;

use super::helpers::{Helper, Ty};
use super::loader::{Blob, RelocKind, RelocTarget, Reloc};
use super::{lower, unsupported, MetaLayout};
use crate::Result;

/// Which function of a kernel to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Entry {
    /// One program: `(tensors, meta, pid0, pid1, pid2, scratch, err) -> i32`.
    Program,
    /// The grid block, same signature; writes three i64 extents to `err` (see `lower_grid`).
    Grid,
}

/// The signature of both entries (system-V C ABI on x86-64 Linux).
pub(super) fn entry_signature(cc: CallConv, ptr: Type) -> Signature {
    let mut sig = Signature::new(cc);
    for t in [ptr, ptr, types::I64, types::I64, types::I64, ptr, ptr] {
        sig.params.push(AbiParam::new(t));
    }
    sig.returns.push(AbiParam::new(types::I32));
    sig
}

/// The C signature of a runtime helper.
pub(super) fn helper_signature(h: Helper, cc: CallConv, ptr: Type) -> Signature {
    let (params, ret) = h.signature();
    let ty = |t: Ty| match t {
        Ty::F32 => types::F32,
        Ty::I32 => types::I32,
        Ty::I64 => types::I64,
        Ty::Ptr => ptr,
    };
    let mut sig = Signature::new(cc);
    sig.params.extend(params.iter().map(|&t| AbiParam::new(ty(t))));
    sig.returns.extend(ret.map(|t| AbiParam::new(ty(t))));
    sig
}

/// Fill `func` (whose signature must already be [`entry_signature`]) with `entry` of `k`;
/// `import` declares a helper in `func`. Returns the arena bytes one program needs (0 for the grid).
pub(super) fn define(
    k: &Kernel,
    entry: Entry,
    func: &mut Function,
    isa: &dyn TargetIsa,
    import: &mut dyn FnMut(Helper, &mut Function) -> FuncRef,
) -> Result<usize> {
    let refs: HashMap<Helper, FuncRef> = Helper::ALL.iter().map(|&h| (h, import(h, func))).collect();
    let meta = MetaLayout::new(k);
    let mut fctx = FunctionBuilderContext::new();
    let builder = FunctionBuilder::new(func, &mut fctx);
    match entry {
        Entry::Program => Ok(lower::lower(k, builder, refs, &meta, isa.frontend_config())?.arena_bytes),
        Entry::Grid => lower::lower_grid(k, builder, refs, &meta, isa.frontend_config()).map(|()| 0),
    }
}

/// Compile the program function of `k` for the in-process path: machine code plus the
/// relocations the loader patches (helpers are user names `0:<index in Helper::ALL>`).
pub(super) fn compile_blob(k: &Kernel, isa: &dyn TargetIsa) -> Result<Blob> {
    compile_entry(k, Entry::Program, isa)
}

/// [`compile_blob`] for either entry.
pub(super) fn compile_entry(k: &Kernel, entry: Entry, isa: &dyn TargetIsa) -> Result<Blob> {
    let ptr = isa.pointer_type();
    let cc = isa.default_call_conv();
    let mut ctx = Context::new();
    ctx.func.signature = entry_signature(cc, ptr);
    let mut import = |h: Helper, f: &mut Function| {
        let idx = Helper::ALL.iter().position(|&x| x == h).expect("every helper is in Helper::ALL") as u32;
        let signature = f.import_signature(helper_signature(h, cc, ptr));
        let name = ExternalName::user(f.declare_imported_user_function(UserExternalName::new(0, idx)));
        f.import_function(ExtFuncData { name, signature, colocated: false, patchable: false })
    };
    let arena_bytes = define(k, entry, &mut ctx.func, isa, &mut import)?;
    if std::env::var_os("OPC_CPU_DUMP_CLIF").is_some() {
        eprintln!("{}", ctx.func.display());
    }
    let names = ctx.func.params.user_named_funcs().clone();
    let code = ctx.compile(isa, &mut ControlPlane::default()).map_err(|e| unsupported(k, format!("Cranelift: {:?}", e.inner)))?;
    let mut relocs = vec![];
    for r in code.buffer.relocs() {
        use cranelift_codegen::binemit::Reloc as R;
        use cranelift_codegen::FinalizedRelocTarget as T;
        let kind = match r.kind {
            R::Abs8 => RelocKind::Abs8,
            R::X86PCRel4 | R::X86CallPCRel4 => RelocKind::PcRel4,
            other => return Err(unsupported(k, format!("the loader does not handle relocation {other:?}"))),
        };
        let target = match &r.target {
            T::ExternalName(ExternalName::User(u)) => RelocTarget::Helper(names[*u].index),
            T::ExternalName(ExternalName::LibCall(lc)) => RelocTarget::LibCall(
                super::loader::libcall_code(*lc).ok_or_else(|| unsupported(k, format!("the loader does not provide libcall {lc:?}")))?,
            ),
            T::Func(off) => RelocTarget::Code(*off),
            other => return Err(unsupported(k, format!("the loader does not handle relocation target {other:?}"))),
        };
        relocs.push(Reloc { offset: r.offset, kind, target, addend: r.addend });
    }
    Ok(Blob { code: code.code_buffer().to_vec(), relocs, arena_bytes })
}
