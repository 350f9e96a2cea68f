//! The emitted AscendC API surface, listed in one place (`opc_codegen::ascendc`: `API_SURFACE`,
//! `API_TEMPLATE_FORMS`, `API_STRUCT_FIELDS`): every name, explicit template-argument list,
//! enumerator and parameter-struct field the emitted kernels use must be listed, every listed
//! template form must be emitted somewhere, and the CPU model must define every listed name.
//! The ignored `api_surface_matches_asc_devkit` checks the lists against the real headers.

#[path = "ascendc_common.rs"]
mod common;

use opc_codegen::ascendc::{TemplateArg, API_STRUCT_FIELDS, API_SURFACE, API_TEMPLATE_FORMS};
use opc_dsl::Instance;

/// Kernel and launch sources of every library kernel plus [`common::COL_SUM`] (no library
/// kernel uses `atomic_add`; it brings `SetAtomicAdd<T>` into the corpus), with `//` comments
/// removed: `(kernel name, text)`.
fn emitted() -> Vec<(String, String)> {
    let mut ks = common::library();
    ks.push(("test::col_sum".into(), common::kernel_src(common::COL_SUM, "col_sum", &Instance::default())));
    ks.into_iter()
        .map(|(name, k)| {
            let c = opc_codegen::ascendc::compile(&k).unwrap_or_else(|e| panic!("{name}: {e}"));
            let text = format!("{}\n{}", c.sources.kernel_cpp, c.sources.launch_cpp);
            let code: Vec<&str> = text.lines().map(|l| l.split("//").next().unwrap_or("")).collect();
            (name, code.join("\n"))
        })
        .collect()
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Every identifier of `text` with its byte offset.
fn idents(text: &str) -> Vec<(usize, &str)> {
    let b = text.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    while i < b.len() {
        if is_ident(b[i]) && !b[i].is_ascii_digit() {
            let s = i;
            while i < b.len() && is_ident(b[i]) {
                i += 1;
            }
            out.push((s, &text[s..i]));
        } else if b[i].is_ascii_digit() {
            while i < b.len() && is_ident(b[i]) {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The arguments of the balanced `<...>` whose `<` is at `text[at]`, split at top-level commas
/// and trimmed, and the offset after the closing `>`.
fn angle_args(text: &str, at: usize) -> Option<(Vec<String>, usize)> {
    let b = text.as_bytes();
    let (mut depth, mut paren, mut start, mut args) = (0i32, 0i32, at + 1, vec![]);
    for (i, &c) in b.iter().enumerate().skip(at) {
        match c {
            b'<' if paren == 0 => depth += 1,
            b'(' => paren += 1,
            b')' => paren -= 1,
            b',' if depth == 1 && paren == 0 => {
                args.push(text[start..i].trim().to_string());
                start = i + 1;
            }
            b'>' if paren == 0 => {
                depth -= 1;
                if depth == 0 {
                    let last = text[start..i].trim();
                    if !last.is_empty() || !args.is_empty() {
                        args.push(last.to_string());
                    }
                    return Some((args, i + 1));
                }
            }
            b';' | b'{' | b'}' => return None,
            _ => {}
        }
    }
    None
}

/// The kind of one emitted template argument.
fn arg_kind(a: &str) -> Option<TemplateArg> {
    const TYPES: &[&str] = &["float", "half", "bfloat16_t", "int8_t", "uint8_t", "int16_t", "uint16_t", "int32_t", "uint32_t", "int64_t", "uint64_t"];
    Some(if TYPES.contains(&a) {
        TemplateArg::Type
    } else if a.starts_with("TPosition::") {
        TemplateArg::Position
    } else if a.starts_with("HardEvent::") {
        TemplateArg::Event
    } else if a.starts_with("PIPE_") {
        TemplateArg::Pipe
    } else if a.starts_with("CFG_") {
        TemplateArg::FixpipeConfig
    } else if a.strip_prefix("0x").map_or(a, |h| h).chars().all(|c| c.is_ascii_hexdigit()) && a.chars().next().is_some_and(|c| c.is_ascii_digit()) {
        TemplateArg::Int
    } else {
        return None;
    })
}

/// `TQue::AllocTensor` → `AllocTensor`; `DataCopy(LocalTensor, ...)` → `DataCopy`.
fn leaf(api: &str) -> &str {
    let base = api.split('(').next().unwrap_or(api);
    base.rsplit("::").next().unwrap_or(base)
}

/// The listed API an identifier at `at` names: a member (`.AllocTensor`) matches `X::AllocTensor`,
/// anything else the unqualified entry.
fn api_named(text: &str, at: usize, id: &str) -> Option<&'static str> {
    let before = text[..at].trim_end();
    let member = before.ends_with('.') || before.ends_with("->");
    if before.ends_with("::") {
        return None;
    }
    API_SURFACE.iter().copied().chain(API_TEMPLATE_FORMS.iter().map(|(n, _)| *n)).find(|api| {
        let base = api.split('(').next().unwrap_or(api);
        leaf(api) == id && (base.contains("::") == member)
    })
}

/// Every explicit template-argument list in the emitted code is listed in `API_TEMPLATE_FORMS`
/// (argument kinds in order), every listed form is emitted by some kernel, an API listed only
/// with explicit forms is never emitted without them, and every enumerator the code passes
/// (`TPosition::*`, `HardEvent::*`, `PIPE_*`, `CMPMODE::*`, ...) is in `API_SURFACE`.
#[test]
fn emitted_template_forms_and_enumerators_are_listed() {
    const SCOPES: &[&str] = &["TPosition", "HardEvent", "RoundMode", "CMPMODE", "SELMODE", "QuantMode_t", "KernelMode"];
    const PREFIXES: &[&str] = &["PIPE_", "EVENT_ID", "KERNEL_TYPE_", "CFG_"];
    let mut errors = std::collections::BTreeSet::new();
    let mut used = std::collections::BTreeSet::new();
    for (name, text) in emitted() {
        for (at, id) in idents(&text) {
            let qualified = text[..at].strip_suffix("::").map(|s| format!("{}::{id}", &s[s.trim_end_matches(|c: char| c.is_ascii_alphanumeric() || c == '_').len()..]));
            match &qualified {
                Some(q) if SCOPES.iter().any(|s| q.starts_with(&format!("{s}::"))) && !API_SURFACE.contains(&q.as_str()) => {
                    errors.insert(format!("enumerator `{q}` ({name}) is not in API_SURFACE"));
                }
                None if PREFIXES.iter().any(|p| id.starts_with(p)) && !API_SURFACE.contains(&id) => {
                    errors.insert(format!("`{id}` ({name}) is not in API_SURFACE"));
                }
                _ => {}
            }
            let Some(api) = api_named(&text, at, id) else { continue };
            let forms: Vec<&[TemplateArg]> = API_TEMPLATE_FORMS.iter().filter(|(n, _)| *n == api).map(|(_, f)| *f).collect();
            let next = text.as_bytes().get(at + id.len()).copied();
            if next == Some(b'<') {
                let Some((args, _)) = angle_args(&text, at + id.len()) else {
                    errors.insert(format!("`{id}<` ({name}): unbalanced template arguments"));
                    continue;
                };
                let kinds: Option<Vec<TemplateArg>> = args.iter().map(|a| arg_kind(a)).collect();
                match kinds {
                    Some(k) if forms.contains(&k.as_slice()) => {
                        used.insert((api, format!("{k:?}")));
                    }
                    Some(k) => {
                        errors.insert(format!("`{id}<{}>` ({name}): {api} with template arguments {k:?} is not in API_TEMPLATE_FORMS", args.join(", ")));
                    }
                    None => {
                        errors.insert(format!("`{id}<{}>` ({name}): a template argument of unknown kind", args.join(", ")));
                    }
                }
            } else if next == Some(b'(') && !forms.is_empty() && !forms.contains(&&[][..]) {
                errors.insert(format!("`{id}(` ({name}): {api} is emitted without template arguments, API_TEMPLATE_FORMS lists only {forms:?}"));
            }
        }
    }
    for (api, form) in API_TEMPLATE_FORMS {
        if !form.is_empty() && !used.contains(&(*api, format!("{form:?}"))) {
            errors.insert(format!("API_TEMPLATE_FORMS lists {api}<{form:?}>, which no kernel emits"));
        }
    }
    assert!(errors.is_empty(), "{}", errors.into_iter().collect::<Vec<_>>().join("\n"));
}

/// The emitted code uses only names listed in `API_SURFACE` (AscendC calls, types, enums), and
/// the CPU model defines every one of them.
#[test]
fn emitted_api_surface_is_listed_and_modelled() {
    // Both the type (`TQue`) and the member (`AllocTensor`) of `TQue::AllocTensor`.
    let short: Vec<&str> = API_SURFACE
        .iter()
        .flat_map(|s| {
            let s = s.split('(').next().unwrap_or(s);
            [s.split("::").next().unwrap_or(s), s.rsplit("::").next().unwrap_or(s)]
        })
        .collect();
    let model = opc_codegen::ascendc::MODEL_KERNEL_OPERATOR_H.to_string() + opc_codegen::ascendc::MODEL_TIKICPULIB_H;
    for s in API_SURFACE.iter().copied().chain(API_TEMPLATE_FORMS.iter().map(|(n, _)| *n)) {
        assert!(model.contains(leaf(s)), "the CPU model does not define `{s}`");
        assert!(API_SURFACE.contains(&s) || short.contains(&leaf(s)), "`{s}` of API_TEMPLATE_FORMS is not in API_SURFACE");
    }
    // Every identifier followed by `(` or `<` that starts with a capital letter and is not
    // opc's own (Opc*, Kernel*, Scalar*, Launch*, the tiling names) must be in the surface.
    let mut unknown = std::collections::BTreeSet::new();
    for (name, text) in emitted() {
        let kernel = name.rsplit("::").next().unwrap_or(&name);
        let camel: String = kernel.split('_').filter(|p| !p.is_empty()).map(|p| p[..1].to_uppercase() + &p[1..]).collect();
        for (at, id) in idents(&text) {
            let next = text.as_bytes().get(at + id.len()).copied().unwrap_or(b' ');
            let own = ["Opc", "Kernel", "Scalar", "Launch", "CopyTiling", "Process", "Init", "Program", "CubeProgram", "PeerProgram", camel.as_str()]
                .iter()
                .any(|p| id.starts_with(p));
            if id.as_bytes()[0].is_ascii_uppercase() && (next == b'(' || next == b'<') && !own && !short.contains(&id) {
                unknown.insert(format!("{id} ({name})"));
            }
        }
    }
    assert!(unknown.is_empty(), "emitted but not in API_SURFACE: {unknown:?}");
}

/// Every parameter-struct field an emitted kernel sets is listed in `API_STRUCT_FIELDS`.
#[test]
fn emitted_struct_fields_are_listed() {
    for (name, text) in emitted() {
        // Declarations `Struct<...> var;` / `Struct var;`, then every `var.field =`.
        for line in text.lines() {
            let t = line.trim();
            for (st, fs) in API_STRUCT_FIELDS {
                let Some(rest) = t.strip_prefix(st) else { continue };
                let var = rest.trim_start_matches(|c: char| c != ' ').trim().trim_end_matches(';');
                if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    continue;
                }
                for l in text.lines() {
                    for stmt in l.split(';') {
                        if let Some(f) = stmt.trim().strip_prefix(&format!("{var}.")) {
                            let f = f.split('=').next().unwrap_or("").trim();
                            assert!(fs.contains(&f), "{name}: {st}::{f} is not in API_STRUCT_FIELDS");
                        }
                    }
                }
            }
        }
    }
}

// ---- asc-devkit v8.5.0 ------------------------------------------------------------------------

/// One template parameter of a real declaration.
#[derive(Debug)]
struct Param {
    /// `typename T` → `Some("T")`.
    type_name: Option<String>,
    /// The parameter's type for a non-type parameter (`TPosition`, `int32_t`, `auto`,
    /// `FixpipeConfig`), `enable_if` for a SFINAE parameter.
    value_type: String,
    has_default: bool,
}

/// A declaration of a class or function in the headers: its (last) template parameter list
/// (`None`: not a template) and, for a function, the text of its parameter list.
#[derive(Debug)]
struct Decl {
    params: Option<Vec<Param>>,
    fn_params: Option<String>,
}

/// Header text with comments and preprocessor lines removed.
fn strip_header(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("/*") {
            rest = r.find("*/").map_or("", |e| &r[e + 2..]);
        } else if let Some(r) = rest.strip_prefix("//") {
            rest = r.find('\n').map_or("", |e| &r[e..]);
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    let mut lines = vec![];
    let mut continued = false;
    for l in out.lines() {
        let skip = continued || l.trim_start().starts_with('#');
        continued = skip && l.trim_end().ends_with('\\');
        if !skip {
            lines.push(l);
        }
    }
    lines.join("\n")
}

/// A declaration head: the text before a top-level `;`, `{` or `}` outside function bodies,
/// whitespace collapsed, and whether it sits in a class body (a member).
struct Head {
    text: String,
    member: bool,
}

/// `head` without leading access specifiers and `template <...>` lists, and the last list's
/// arguments (the one that applies to the declared entity).
fn untemplate(head: &str) -> (&str, Option<Vec<String>>) {
    let (mut rest, mut args) = (head, None);
    for access in ["public:", "protected:", "private:"] {
        rest = rest.strip_prefix(access).map_or(rest, str::trim_start);
    }
    while let Some(r) = rest.strip_prefix("template") {
        let lt = r.len() - r.trim_start().len();
        let Some((a, end)) = angle_args(r, lt) else { break };
        args = Some(a);
        rest = r[end..].trim_start();
    }
    (rest, args)
}

/// The declaration heads of `text` (parentheses balanced). Braces open a namespace, a class
/// body (its heads are members) or a block (function body, enum, initializer: skipped).
fn heads(text: &str) -> Vec<Head> {
    #[derive(PartialEq)]
    enum Scope {
        Namespace,
        Class,
        Block,
    }
    let mut out = vec![];
    let mut scopes: Vec<Scope> = vec![];
    let (mut paren, mut start) = (0i32, 0usize);
    for (i, c) in text.bytes().enumerate() {
        match c {
            b'(' => paren += 1,
            b')' => paren -= 1,
            b';' | b'{' | b'}' if paren == 0 => {
                let h = text[start..i].split_whitespace().collect::<Vec<_>>().join(" ");
                start = i + 1;
                let in_block = scopes.contains(&Scope::Block);
                if !h.is_empty() && !in_block {
                    out.push(Head { text: h.clone(), member: scopes.last() == Some(&Scope::Class) });
                }
                if c == b'{' {
                    let (rest, _) = untemplate(&h);
                    scopes.push(if h.starts_with("namespace") || h.starts_with("extern") {
                        Scope::Namespace
                    } else if !in_block && (rest.starts_with("class ") || rest.starts_with("struct ")) {
                        Scope::Class
                    } else {
                        Scope::Block
                    });
                } else if c == b'}' {
                    scopes.pop();
                }
            }
            _ => {}
        }
    }
    out
}

/// One template parameter's text (`typename T`, `TPosition pos`, `auto mask = 0`,
/// `const FixpipeConfig& config = CFG_ROW_MAJOR`, `typename Std::enable_if<...>::type = true`).
fn param(p: &str) -> Param {
    let (decl, has_default) = match split_top(p, '=').as_slice() {
        [d] => (d.trim().to_string(), false),
        [d, ..] => (d.trim().to_string(), true),
        [] => (String::new(), false),
    };
    if let Some(rest) = decl.strip_prefix("typename ").or_else(|| decl.strip_prefix("class ")) {
        let rest = rest.trim();
        if rest.bytes().all(is_ident) {
            return Param { type_name: Some(rest.to_string()), value_type: String::new(), has_default };
        }
        return Param { type_name: None, value_type: "enable_if".into(), has_default };
    }
    let words: Vec<&str> = decl.split(|c: char| c.is_whitespace() || c == '&').filter(|w| !w.is_empty() && *w != "const").collect();
    let ty = if words.len() >= 2 { words[words.len() - 2] } else { words.first().copied().unwrap_or("") };
    Param { type_name: None, value_type: ty.to_string(), has_default }
}

/// `text` split at `sep` outside `<>` and `()`.
fn split_top(text: &str, sep: char) -> Vec<String> {
    let (mut depth, mut start, mut out) = (0i32, 0usize, vec![]);
    for (i, c) in text.char_indices() {
        match c {
            '<' | '(' => depth += 1,
            '>' | ')' => depth -= 1,
            c if c == sep && depth == 0 => {
                out.push(text[start..i].to_string());
                start = i + c.len_utf8();
                if sep == '=' {
                    break;
                }
            }
            _ => {}
        }
    }
    out.push(text[start..].to_string());
    out
}

/// Every declaration of `name` (a class / struct, or a function declared `__aicore__` /
/// `inline`) among `heads`: class members when `member`, else namespace-scope declarations.
/// Partial specializations and friend declarations are skipped.
fn decls_of(heads: &[Head], name: &str, member: bool) -> Vec<Decl> {
    let mut out = vec![];
    for h in heads.iter().filter(|h| h.member == member) {
        let (rest, args) = untemplate(&h.text);
        let mut params = args.map(|a| a.iter().filter(|a| !a.is_empty()).map(|a| param(a)).collect::<Vec<_>>());
        for kw in ["class ", "struct "] {
            if let Some(r) = rest.strip_prefix(kw) {
                let r = r.trim_start();
                if r.strip_prefix(name).is_some_and(|t| !t.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '<') && !t.trim_start().starts_with('<')) {
                    out.push(Decl { params: params.take(), fn_params: None });
                }
            }
        }
        if !(rest.contains("__aicore__") || rest.contains("inline")) || rest.starts_with("friend") {
            continue;
        }
        // Drop attribute macros (`__inout_pipe__(S)`) so the first `(` opens the parameters.
        let mut clean = rest.to_string();
        while let Some(s) = clean.find("__inout_pipe__(").or_else(|| clean.find("__sync_alias__(")) {
            let e = clean[s..].find(')').map_or(clean.len(), |e| s + e + 1);
            clean.replace_range(s..e, "");
        }
        let Some(open) = clean.find('(') else { continue };
        let before = clean[..open].trim_end();
        let declared = before.rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next().unwrap_or("");
        // `Class<T>::name(` out of its class defines a member.
        let qualified = before[..before.len() - declared.len()].ends_with("::");
        if declared == name && (member || !qualified) {
            let body = &clean[open + 1..];
            let fn_params = body.rfind(')').map_or(body, |e| &body[..e]).to_string();
            out.push(Decl { params: params.take(), fn_params: Some(fn_params) });
        }
    }
    out
}

/// Whether a declaration takes the explicit template arguments `kinds` (the rest defaulted or,
/// for a function, deduced from its parameters).
fn accepts(d: &Decl, kinds: &[TemplateArg]) -> bool {
    let Some(params) = &d.params else { return kinds.is_empty() };
    if kinds.len() > params.len() {
        return false;
    }
    let fits = kinds.iter().zip(params).all(|(k, p)| match (k, p.type_name.is_some(), p.value_type.as_str()) {
        (TemplateArg::Type, true, _) => true,
        (TemplateArg::Type, false, _) | (_, true, _) => false,
        (_, false, "auto") => true,
        (TemplateArg::Position, false, t) => t == "TPosition",
        (TemplateArg::Event, false, t) => t == "HardEvent",
        (TemplateArg::Pipe, false, t) => t == "pipe_t",
        (TemplateArg::FixpipeConfig, false, t) => t == "FixpipeConfig",
        (TemplateArg::Int, false, t) => matches!(t, "int8_t" | "uint8_t" | "int16_t" | "uint16_t" | "int32_t" | "uint32_t" | "int64_t" | "uint64_t" | "int" | "size_t"),
    });
    let word = |text: &str, w: &str| idents(text).iter().any(|(_, i)| *i == w);
    fits && params[kinds.len()..].iter().all(|p| p.has_default || matches!((&p.type_name, &d.fn_params), (Some(t), Some(f)) if word(f, t)))
}

/// The parameter types of a function parameter list, without qualifiers, template arguments
/// and names: `const LocalTensor<T>& dst, const uint32_t count` → `[LocalTensor, uint32_t]`.
fn param_types(list: &str) -> Vec<String> {
    split_top(list, ',')
        .iter()
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let p = split_top(p, '=')[0].clone();
            let mut no_targs = String::new();
            let mut depth = 0;
            for c in p.chars() {
                match c {
                    '<' => depth += 1,
                    '>' => depth -= 1,
                    c if depth == 0 => no_targs.push(c),
                    _ => {}
                }
            }
            let words: Vec<&str> = no_targs.split(|c: char| c.is_whitespace() || c == '&' || c == '*').filter(|w| !w.is_empty() && *w != "const").collect();
            let ty = if words.len() >= 2 { words[words.len() - 2] } else { words.first().copied().unwrap_or("") };
            ty.rsplit("::").next().unwrap_or(ty).to_string()
        })
        .collect()
}

/// Checks `API_SURFACE`, `API_TEMPLATE_FORMS` and `API_STRUCT_FIELDS` against the real
/// asc-devkit headers: set OPC_ASC_DEVKIT to a checkout of asc-devkit v8.5.0 (its `include/`
/// and `impl/` trees) and run `cargo test -p opc-codegen --test ascendc_surface -- --ignored`.
/// Every function, type and enumerator must be declared there; every listed template form
/// must bind to a declaration's template parameter list (kinds in order, the rest defaulted or
/// deduced); every API emitted without template arguments must have a declaration that needs
/// none; a listed parameter list (`DataCopy(LocalTensor, GlobalTensor, uint32_t)`) must match
/// an overload's parameter types; every struct field must be a member of that struct.
#[test]
#[ignore = "needs OPC_ASC_DEVKIT (a checkout of asc-devkit v8.5.0)"]
fn api_surface_matches_asc_devkit() {
    let root = std::path::PathBuf::from(std::env::var("OPC_ASC_DEVKIT").expect("set OPC_ASC_DEVKIT"));
    fn collect(dir: &std::path::Path, out: &mut String) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        let mut paths: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            if p.is_dir() {
                collect(&p, out);
            } else if p.extension().is_some_and(|x| x == "h") {
                out.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
                out.push('\n');
            }
        }
    }
    let mut text = String::new();
    for sub in ["include", "impl"] {
        collect(&root.join(sub), &mut text);
    }
    assert!(!text.is_empty(), "no headers under {}", root.display());
    // Template forms and parameter lists bind to the public declarations (`include/`).
    let mut public = String::new();
    collect(&root.join("include"), &mut public);
    let heads = heads(&strip_header(&public));
    let word = |w: &str| {
        text.match_indices(w).any(|(i, _)| {
            let b = text.as_bytes();
            let j = i + w.len();
            (i == 0 || !is_ident(b[i - 1])) && (j >= b.len() || !is_ident(b[j]))
        })
    };
    // The CPU-debug launcher, the keywords and the compiler's types come from the toolchain.
    let toolchain = ["ICPU_RUN_KF", "SetKernelMode", "KernelMode::AIV_MODE", "KernelMode::MIX_MODE", "__gm__", "__aicore__", "__global__", "half", "bfloat16_t"];
    let mut missing = vec![];
    for item in API_SURFACE {
        if toolchain.contains(item) {
            continue;
        }
        let base = item.split('(').next().unwrap_or(item);
        for part in base.split("::") {
            if !word(part) {
                missing.push(item.to_string());
            }
        }
        // Functions: declared `inline ... NAME(` or `NAME<...>(` somewhere.
        if item.contains('(') && !(text.contains(&format!(" {base}(")) || text.contains(&format!(" {base}<"))) {
            missing.push(format!("{item} (no declaration)"));
        }
        let decls = decls_of(&heads, leaf(item), base.contains("::"));
        // A listed parameter list: some overload has exactly these parameter types.
        if let Some(list) = item.strip_prefix(base).and_then(|r| r.strip_prefix('(')).and_then(|r| r.strip_suffix(')')) {
            let want: Vec<String> = list.split(',').map(|s| s.trim().to_string()).collect();
            if !decls.iter().any(|d| d.fn_params.as_deref().is_some_and(|f| param_types(f) == want)) {
                missing.push(format!("{item} (no overload with these parameter types)"));
            }
        }
        // Emitted without template arguments: some declaration needs none.
        let explicit_only = API_TEMPLATE_FORMS.iter().any(|(n, f)| *n == *item && !f.is_empty()) && !API_TEMPLATE_FORMS.iter().any(|(n, f)| *n == *item && f.is_empty());
        if !explicit_only && decls.iter().any(|d| d.fn_params.is_some()) && !decls.iter().any(|d| d.fn_params.is_some() && accepts(d, &[])) {
            missing.push(format!("{item} (every declaration needs explicit template arguments)"));
        }
    }
    for (api, kinds) in API_TEMPLATE_FORMS {
        let decls = decls_of(&heads, leaf(api), api.contains("::"));
        if !decls.iter().any(|d| accepts(d, kinds)) {
            let lists: Vec<String> = decls.iter().filter_map(|d| d.params.as_ref().map(|p| format!("{p:?}"))).collect();
            missing.push(format!("{api}<{kinds:?}> (template parameter lists found: {lists:?})"));
        }
    }
    for (st, fields) in API_STRUCT_FIELDS {
        let Some(at) = text.find(&format!("struct {st} {{")) else {
            missing.push(format!("struct {st}"));
            continue;
        };
        let body = &text[at..at + text[at..].find("\n};").unwrap_or(0)];
        for f in *fields {
            if !body.contains(&format!(" {f} ")) && !body.contains(&format!(" {f};")) && !body.contains(&format!(" {f}=")) {
                missing.push(format!("{st}::{f}"));
            }
        }
    }
    assert!(missing.is_empty(), "not in the asc-devkit headers under {}:\n{}", root.display(), missing.join("\n"));
}

/// The header parser on declarations shaped like asc-devkit's (written here, not copied): the
/// conformance check above is only as good as this.
#[test]
fn header_parser_reads_template_parameter_lists() {
    let src = "
        // a comment with template <typename X> class Fake
        template <TPosition pos, int32_t depth, auto mask = 0>
        class Q : public B<pos> {
        public:
            template <typename T> __aicore__ inline LocalTensor<T> Alloc();
        };
        template <typename T, typename U, const FixpipeConfig& config = CFG_A>
        __aicore__ inline void Pipe(const GlobalTensor<T>& dst, const LocalTensor<U>& src,
            const Params& p);
        #if X
        template <uint8_t modeId, pipe_t pipe>
        __aicore__ inline void SetX(uint16_t id);
        #endif
        template <typename T, typename Std::enable_if<Std::is_same<T, int>::value, bool>::type = true>
        __aicore__ inline void Copy(const LocalTensor<T>& dst, const GlobalTensor<T>& src, const uint32_t count);
        template <> class Q<TPosition::A1, 1> {};
    ";
    let h = heads(&strip_header(src));
    use TemplateArg::*;
    let q = decls_of(&h, "Q", false);
    assert_eq!(q.len(), 1, "{q:?}");
    assert!(accepts(&q[0], &[Position, Int]) && accepts(&q[0], &[Position, Int, Int]) && !accepts(&q[0], &[Position]) && !accepts(&q[0], &[Type, Int]));
    let a = decls_of(&h, "Alloc", true);
    assert!(accepts(&a[0], &[Type]) && !accepts(&a[0], &[]));
    let p = decls_of(&h, "Pipe", false);
    assert!(accepts(&p[0], &[Type, Type, FixpipeConfig]) && accepts(&p[0], &[]) && !accepts(&p[0], &[Type, Type, Int]));
    assert_eq!(param_types(p[0].fn_params.as_deref().unwrap()), ["GlobalTensor", "LocalTensor", "Params"]);
    let s = decls_of(&h, "SetX", false);
    assert!(accepts(&s[0], &[Int, Pipe]) && !accepts(&s[0], &[Pipe]) && !accepts(&s[0], &[]));
    let c = decls_of(&h, "Copy", false);
    assert!(accepts(&c[0], &[]) && accepts(&c[0], &[Type]));
    assert_eq!(param_types(c[0].fn_params.as_deref().unwrap()), ["LocalTensor", "GlobalTensor", "uint32_t"]);
    assert!(decls_of(&h, "Fake", false).is_empty());
}
