//! The front end never panics: whatever the input, `opc_dsl::check` returns `Ok` or a diagnostic.
//!
//! Property tests over (a) random ASCII soups and random token sequences from the DSL's
//! vocabulary and (b) mutations of valid kernels (token delete / duplicate / swap / insert,
//! byte-range deletion, identifier and number replacement). Plus targeted regression tests for
//! inputs that used to panic or overflow the stack. The same property is fuzzed without bounds
//! by `fuzz/fuzz_targets/parse_check.rs`.

use opc_dsl::check;
use proptest::prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Valid kernels that the mutations start from (each type-checks, see `seeds_are_valid`).
const SEEDS: &[&str] = &[
    r#"
kernel matmul<T: {f32, f16, bf16}>(a: T[M, K], b: T[K, N], bias: f32[N], c: out T[M, N], has_bias: bool)
tunables {
    BM: level1 in {16, 32, 64, 128} = 32,
    BN: level1 in {16, 32, 64, 128} = 32,
    BK: level2 in {8, 16, 32, 64} = 16,
}
grid(cdiv(M, BM), cdiv(N, BN))
{
    let rows = program_id(0) * BM + arange(BM);
    let cols = program_id(1) * BN + arange(BN);
    var acc = zeros([BM, BN], f32);
    for k0 in 0..cdiv(K, BK) {
        let ks = k0 * BK + arange(BK);
        acc = dot(load(a[rows, ks]), load(b[ks, cols]), acc);
    }
    if has_bias {
        acc = acc + load(bias[cols])[None, :];
    }
    store(c[rows, cols], cast(acc, T));
}
"#,
    r#"
// Row softmax with an online max, D known at compile time.
kernel softmax<T: {f16, f32}>(x: T[M, D], y: out T[M, D], scale: f32)
where const D, D % 16 == 0, D <= 8192
tunables { BM: level1 in {1, 2, 4} = 2 }
grid(cdiv(M, BM))
{
    let rows = program_id(0) * BM + arange(BM);
    let cols = arange(D);
    let v = cast(load(x[rows, cols], mask: rows[:, None] < M, other: 0.0), f32) * scale;
    let m = max(v, 1);
    let e = exp2((v - m[:, None]) * 1.4426950408889634);
    let s = sum(e, 1);
    store(y[rows, cols], cast(e / s[:, None], T), mask: (rows < M)[:, None]);
}
"#,
    r#"
kernel attn<T: {f16, bf16}>(q: T[B, H, S, D], k: T[B, H, S, D], v: T[B, H, S, D], o: out T[B, H, S, D], causal: bool)
where const D, D in {64, 128}
tunables {
    BM: level1 in {16, 32, 64} = 32,
    BN: level2 in {16, 32, 64} = 32,
}
grid(cdiv(S, BM), H, B)
{
    let b = program_id(2);
    let h = program_id(1);
    let rows = program_id(0) * BM + arange(BM);
    let d = arange(D);
    let qt = load(q[b, h, rows, d]);
    var m = full([BM], -inf, f32);
    var l = zeros([BM], f32);
    var acc = zeros([BM, D], f32);
    var hi = S;
    if causal {
        hi = minimum(S, program_id(0) * BM + BM);
    } else {
        hi = S;
    }
    for j0 in 0..hi step BN {
        let cols = j0 + arange(BN);
        let s = dot(qt, trans(load(k[b, h, cols, d]))) * 0.125;
        let ok = (cols[None, :] < S) && (!causal || cols[None, :] <= rows[:, None]);
        let s = where(ok, s, -inf);
        let m_new = maximum(m, max(s, 1));
        let alpha = exp(m - m_new);
        let p = exp(s - m_new[:, None]);
        l = l * alpha + sum(p, 1);
        acc = acc * alpha[:, None] + dot(cast(p, T), load(v[b, h, cols, d]));
        m = m_new;
    }
    store(o[b, h, rows, d], cast(acc / l[:, None], T));
}
"#,
    r#"
kernel dequant_i4(codes: i4[R, K], scales: f32[R, K / 32], x: out f32[R, K], bits: u8[R, K])
where K % 32 == 0, R >= 1
tunables { BB: level1 in {1, 2, 4} = 2 }
grid(R, cdiv(K / 32, BB))
{
    let r = program_id(0);
    let blk = program_id(1) * BB + arange(BB);
    let idx = blk[:, None] * 32 + arange(32)[None, :];
    let c = cast(load(codes[r, idx]), f32);
    let s = load(scales[r, blk]);
    let raw = cast(load(bits[r, idx]), i32) >> 4 & 0x0F;
    let v = where(raw == 0, c * s[:, None], -c);
    store(x[r, idx], reshape(permute(reshape(v, [BB, 32, 1]), [0, 1, 2]), [BB, 32]));
    atomic_add(x[r, idx], cumsum(v, 1), mask: v > 0.0);
}
"#,
];

/// Words and symbols of the language, for token soups and replacements.
const VOCAB: &[&str] = &[
    "kernel", "let", "var", "for", "in", "if", "else", "where", "tunables", "grid", "out", "const", "step", "None",
    "true", "false", "level1", "level2", "inf", "nan", "program_id", "num_programs", "arange", "zeros", "full",
    "cdiv", "minimum", "maximum", "where", "exp", "exp2", "log", "sqrt", "rsqrt", "abs", "sigmoid", "round", "pow",
    "cast", "bitcast", "dot", "trans", "permute", "reshape", "broadcast", "sum", "max", "min", "argmax", "cumsum",
    "load", "store", "atomic_add", "mask", "other", "rne", "rtz", "floor", "f32", "f16", "bf16", "i32", "i8", "u8",
    "bool", "i4", "e2m1", "e8m0", "T", "M", "N", "K", "D", "BM", "BN", "BK", "x", "y", "a", "b", "acc", "rows",
    "cols", "0", "1", "2", "3", "16", "32", "64", "-1", "0x0F", "1.5", "1e-6", "..", "==", "!=", "<=", ">=", "&&",
    "||", "<<", ">>", "(", ")", "[", "]", "{", "}", "<", ">", ",", ":", ";", "=", "+", "-", "*", "/", "%", "&", "|",
    "^", "!", ".",
];

/// Numbers that stress overflow and size checks.
const NUMBERS: &[&str] = &[
    "0", "1", "-1", "2", "3", "7", "48", "255", "256", "65536", "4194304", "4194305", "2147483647", "2147483648",
    "4294967296", "9223372036854775807", "0x7FFFFFFFFFFFFFFF", "0xFFFFFFFFFFFFFFFF", "1e308", "1e-320", "0.0",
    "1.5", "99999999999999999999",
];

/// Runs `check` and fails the property if it panicked. Returns whether it was `Ok`.
fn no_panic(src: &str) -> Result<bool, TestCaseError> {
    match catch_unwind(AssertUnwindSafe(|| check("fuzz.opc", src))) {
        Ok(r) => {
            if let Err(d) = &r {
                // Rendering must not panic either, and must name a location.
                prop_assert!(d.rendered.starts_with("error: fuzz.opc:"), "bad rendering:\n{}", d.rendered);
            }
            Ok(r.is_ok())
        }
        Err(e) => {
            let msg = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
            Err(TestCaseError::fail(format!("check panicked ({msg:?}) on:\n{src}")))
        }
    }
}

/// Byte spans of the tokens of a valid seed.
fn token_spans(src: &str) -> Vec<(usize, usize)> {
    opc_dsl::lexer::lex(src)
        .expect("seeds lex")
        .iter()
        .filter(|t| t.tok != opc_dsl::lexer::Tok::Eof)
        .map(|t| (t.span.start, t.span.start + t.span.len))
        .collect()
}

#[derive(Clone, Debug)]
enum Mutation {
    DeleteToken(usize),
    DuplicateToken(usize),
    SwapTokens(usize, usize),
    InsertWord(usize, usize),
    ReplaceIdent(usize, usize),
    ReplaceNumber(usize, usize),
    DeleteBytes(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let i = any::<usize>();
    prop_oneof![
        i.prop_map(Mutation::DeleteToken),
        i.prop_map(Mutation::DuplicateToken),
        (i, i).prop_map(|(a, b)| Mutation::SwapTokens(a, b)),
        (i, i).prop_map(|(a, b)| Mutation::InsertWord(a, b)),
        (i, i).prop_map(|(a, b)| Mutation::ReplaceIdent(a, b)),
        (i, i).prop_map(|(a, b)| Mutation::ReplaceNumber(a, b)),
        (i, 1usize..40).prop_map(|(a, n)| Mutation::DeleteBytes(a, n)),
    ]
}

/// Apply one mutation to `src` (re-lexing first; a source that no longer lexes only gets byte
/// deletions).
fn apply(src: &str, m: &Mutation) -> String {
    let spans = opc_dsl::lexer::lex(src)
        .map(|ts| {
            ts.iter()
                .filter(|t| t.tok != opc_dsl::lexer::Tok::Eof)
                .map(|t| (t.span.start, t.span.start + t.span.len, t.tok.clone()))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let splice = |s: usize, e: usize, with: &str| format!("{}{}{}", &src[..s], with, &src[e..]);
    if spans.is_empty() || matches!(m, Mutation::DeleteBytes(..)) {
        let (a, n) = match m {
            Mutation::DeleteBytes(a, n) => (*a, *n),
            _ => (0, 1),
        };
        if src.is_empty() {
            return String::new();
        }
        let mut s = a % src.len();
        let mut e = (s + n).min(src.len());
        while !src.is_char_boundary(s) {
            s -= 1;
        }
        while !src.is_char_boundary(e) {
            e += 1;
        }
        return splice(s, e, "");
    }
    let n = spans.len();
    match *m {
        Mutation::DeleteToken(i) => {
            let (s, e, _) = spans[i % n];
            splice(s, e, "")
        }
        Mutation::DuplicateToken(i) => {
            let (s, e, _) = spans[i % n];
            splice(s, s, &format!("{} ", &src[s..e]))
        }
        Mutation::SwapTokens(i, j) => {
            let (mut a, mut b) = (spans[i % n].clone(), spans[j % n].clone());
            if a.0 > b.0 {
                std::mem::swap(&mut a, &mut b);
            }
            if a.0 == b.0 {
                return src.to_string();
            }
            format!("{}{}{}{}{}", &src[..a.0], &src[b.0..b.1], &src[a.1..b.0], &src[a.0..a.1], &src[b.1..])
        }
        Mutation::InsertWord(i, w) => {
            let (s, _, _) = spans[i % n];
            splice(s, s, &format!("{} ", VOCAB[w % VOCAB.len()]))
        }
        Mutation::ReplaceIdent(i, w) => {
            let idents: Vec<_> = spans.iter().filter(|t| matches!(t.2, opc_dsl::lexer::Tok::Ident(_))).collect();
            if idents.is_empty() {
                return src.to_string();
            }
            let (s, e, _) = idents[i % idents.len()];
            splice(*s, *e, VOCAB[w % VOCAB.len()])
        }
        Mutation::ReplaceNumber(i, w) => {
            let nums: Vec<_> =
                spans.iter().filter(|t| matches!(t.2, opc_dsl::lexer::Tok::Int(_) | opc_dsl::lexer::Tok::Float(_))).collect();
            if nums.is_empty() {
                return src.to_string();
            }
            let (s, e, _) = nums[i % nums.len()];
            splice(*s, *e, NUMBERS[w % NUMBERS.len()])
        }
        Mutation::DeleteBytes(..) => unreachable!(),
    }
}

fn cases() -> u32 {
    std::env::var("NO_PANIC_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(500)
}

#[test]
fn seeds_are_valid() {
    for s in SEEDS {
        assert!(!token_spans(s).is_empty());
        if let Err(d) = check("seed.opc", s) {
            panic!("seed does not check:\n{d}");
        }
    }
}

proptest! {
    // 500 cases per property (2000 in all, well under a second); set NO_PANIC_CASES for a longer soak.
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// (a) Printable-ASCII soups, with newlines and tabs.
    #[test]
    fn ascii_soup(s in "[ -~\t\n]{0,200}") {
        no_panic(&s)?;
    }

    /// (a) Random token sequences from the vocabulary, sometimes behind a plausible header so
    /// that the body reaches type checking.
    #[test]
    fn token_soup(words in prop::collection::vec(0..VOCAB.len(), 0..80), header in any::<bool>()) {
        let body: Vec<&str> = words.iter().map(|&w| VOCAB[w]).collect();
        let src = if header {
            format!("kernel k<T: {{f16, f32}}>(x: T[M, N], y: out f32[M, N], s: f32)\nwhere const N\ntunables {{ BM: level1 in {{16, 32}} = 16 }}\ngrid(cdiv(M, BM))\n{{\n{}\n}}\n", body.join(" "))
        } else {
            body.join(" ")
        };
        no_panic(&src)?;
    }

    /// (b) 1 to 4 mutations of a valid kernel.
    #[test]
    fn mutated_kernels(seed in 0..SEEDS.len(), muts in prop::collection::vec(mutation(), 1..5)) {
        let mut src = SEEDS[seed].to_string();
        for m in &muts {
            src = apply(&src, m);
        }
        no_panic(&src)?;
    }

    /// (b) A single statement spliced into a valid kernel body: expression-level mutations that
    /// keep the rest well-typed, so they reach deep into the type checker.
    #[test]
    fn spliced_statements(seed in 0..SEEDS.len(), words in prop::collection::vec(0..VOCAB.len(), 1..12), num in 0..NUMBERS.len()) {
        let stmt: Vec<&str> = words.iter().map(|&w| VOCAB[w]).collect();
        let src = SEEDS[seed];
        let at = src.rfind('}').unwrap();
        let text = format!("{}    let zz = {} {};\n{}", &src[..at], stmt.join(" "), NUMBERS[num], &src[at..]);
        no_panic(&text)?;
    }
}

// ---------------------------------------------------------------------------------- regressions

/// A kernel whose body is `stmts`, with a few names in scope.
fn body(stmts: &str) -> String {
    format!(
        "kernel k(x: f32[N], y: out f32[N], n: i32)\ntunables {{ B: level1 in {{16, 32}} = 16 }}\ngrid(cdiv(N, B))\n{{\n    let i = program_id(0) * B + arange(B);\n{stmts}\n}}\n"
    )
}

fn assert_error(src: &str) -> String {
    match catch_unwind(AssertUnwindSafe(|| check("regress.opc", src))) {
        Ok(Ok(_)) => panic!("expected an error:\n{src}"),
        Ok(Err(d)) => d.rendered,
        Err(_) => panic!("check panicked on:\n{src}"),
    }
}

/// Inputs that used to panic (or miscompile), each with the error it gives now.
#[test]
fn former_panics_are_errors() {
    let cases: &[(&str, &str)] = &[
        // `store` has no result value; using it as one indexed a missing IR value.
        ("let z = store(y[i], 1.0); let w = z + 1.0;", "`store` does not produce a value"),
        ("let z = store(y[i], 1.0) + 1.0;", "`store` does not produce a value"),
        ("store(y[i], atomic_add(y[i], 1.0));", "`atomic_add` does not produce a value"),
        // i64 overflow in compile-time arithmetic (tile sizes, literal folding, cdiv, steps).
        ("let z = arange(9223372036854775807 + 1);", "integer overflow in a compile-time value"),
        ("let z = arange(9223372036854775807 * 2);", "integer overflow in a compile-time value"),
        ("let z = arange(-(-9223372036854775807 - 1));", "integer overflow in a compile-time value"),
        ("let z = arange(cdiv(9223372036854775807, 2));", "integer overflow in a compile-time value"),
        ("let z = cdiv(9223372036854775807, 2);", "integer overflow in a compile-time value"),
        ("let z = (-9223372036854775807 - 1) / -1;", "does not fit in i32"),
        ("let z = (-9223372036854775807 - 1) % -1;", "does not fit in i32"),
        ("let z = -(-9223372036854775807 - 1);", "does not fit in i32"),
        ("for j in 0..4 step 9223372036854775807 + 1 { }", "does not fit in i32"),
        // Out-of-range constants reached the IR verifier ("internal compiler error").
        ("let z = full([B], 300, u8);", "fill value 300 does not fit in u8"),
        // More than 255 axes wrapped the IR's u8 axis numbers.
        (&*format!("let z = i[{}];", vec!["None"; 300].join(", ")), "more than the limit of 16"),
        (&*format!("let z = reshape(i, [16{}]);", ", 1".repeat(300)), "more than the limit of 16"),
        // Duplicate named arguments were silently accepted.
        ("let z = load(x[i], other: 1.0, mask: i < N, other: 2.0);", "argument `other` is given twice"),
    ];
    for (stmts, want) in cases {
        let err = assert_error(&body(stmts));
        assert!(err.contains(want), "`{stmts}`: expected `{want}`, got:\n{err}");
    }
    // Overflow inside a dim expression (`DimExpr::eval` is unchecked): the constraint cannot be
    // decided at compile time and is left to the launcher.
    let src = "kernel k(x: f32[D]) where const D, (9223372036854775807 + D) % 3 == 0 grid(1) { }";
    assert!(catch_unwind(|| check("regress.opc", src)).is_ok(), "panicked on {src}");
    let kernels: &[(&str, &str)] = &[
        // A duplicate type variable was reported as a bad instantiation.
        ("kernel k<T: {f32}, T: {f16}>(x: T[D]) grid(1) { }", "`T` is declared twice"),
    ];
    for (src, want) in kernels {
        let err = assert_error(src);
        assert!(err.contains(want), "`{src}`: expected `{want}`, got:\n{err}");
    }
}

/// A `let` inside a branch or loop body that shadows an assigned outer `var` must not leak out:
/// the outer `var` keeps the value assigned to it (this was an internal compiler error when the
/// types differed, and a silent miscompile when they matched).
#[test]
fn shadowing_let_does_not_leak_out_of_a_body() {
    use opc_ir::{Arg, DType, Tensor};
    let src = "kernel k(y: out i32[4], n: i32)\ngrid(1)\n{\n    var q = 0;\n    if n > 0 { q = 1; let q = 5; }\n    var r = 0;\n    for j in 0..n { r = r + 1; let r = 100; }\n    var s = 0;\n    if n > 0 { s = 1; let s = 2.5; }\n    store(y[arange(4)], where(arange(4) == 0, q, where(arange(4) == 1, r, s)));\n}\n";
    let k = opc_dsl::compile("shadow.opc", src, "k", &opc_dsl::Instance::default()).unwrap_or_else(|d| panic!("{d}"));
    let mut args = vec![Arg::Tensor(Tensor::zeros(DType::I32, &[4])), Arg::I32(3)];
    opc_ir::interp::run(&k, &mut args).unwrap();
    let Arg::Tensor(y) = &args[0] else { panic!() };
    assert_eq!(y.to_f32_vec(), vec![1.0, 3.0, 1.0, 1.0]);
}

/// Nesting beyond the parser's limit is a diagnostic; just below it, nothing overflows a 2 MiB
/// stack (the default for test threads and spawned threads).
#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let kinds = |n: usize| -> Vec<(&'static str, String)> {
        vec![
            ("parens", format!("let z = {}i{};", "(".repeat(n), ")".repeat(n))),
            ("unary", format!("let z = {}i;", "- ".repeat(n))),
            ("chain", format!("let z = i{};", " + i".repeat(n))),
            ("calls", format!("let z = {}1.0{};", "exp(".repeat(n), ")".repeat(n))),
            ("casts", format!("let z = {}i{};", "cast(".repeat(n), ", f32)".repeat(n))),
            ("where", format!("let z = {}i{};", "where(true, ".repeat(n), ", i)".repeat(n))),
            ("lists", format!("let z = zeros({}16{}, f32);", "[".repeat(n), "]".repeat(n))),
            ("index", format!("let z = i{};", "[:]".repeat(n))),
            ("sizes", format!("let z = arange({}16{});", "(1 + ".repeat(n), ")".repeat(n))),
            ("ifs", format!("{}{}", "if n > 0 { ".repeat(n), "}".repeat(n))),
            ("fors", format!("var q = 0; {}q = q + 1;{}", "for j in 0..n { ".repeat(n), "}".repeat(n))),
            ("elseif", format!("var q = 0; if n > 0 {{ q = 1; }}{} else {{ q = 2; }}", " else if n > 1 { q = 1; }".repeat(n))),
        ]
    };
    let run = |src: String| {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || check("deep.opc", &src).map(|_| ()).map_err(|d| d.rendered))
            .unwrap()
            .join()
            .expect("no panic")
    };
    for (name, stmts) in kinds(opc_dsl::parser::MAX_DEPTH - 4) {
        if let Err(e) = run(body(&stmts)) {
            // Some shapes nest more than one level per repetition; the limit is fine then.
            assert!(!e.contains("internal compiler error"), "{name}:\n{e}");
        }
    }
    for (name, stmts) in kinds(20_000) {
        let e = run(body(&stmts)).expect_err(name);
        assert!(e.contains("nested too deeply"), "{name}:\n{e}");
    }
}
