//! Parser errors (position and message) and robustness: no input makes the parser, the
//! verifier or the printer panic.

use opc_ir::parser::{parse_kernel, ParseError};
use opc_ir::printer::print_kernel;
use opc_ir::verify::verify;
use proptest::prelude::*;

const SAMPLE: &str = r#"kernel @sample
  param @x: global f32[M, K / 2]
  param @q: global e2m1[M, K]
  param @"y out": out global f32[M]
  param @s: f32
  dim @M
  dim @K const = 64
  constraint @M % 16 == 0
  constraint @K in {64, 128}
  constraint (@M + 1) * 2 >= 2
  constraint @M in [3, 9]
  tunable @BM level1 in {16, 32} = 16
grid {
  %0 = dim @M : i32
  %1 = const 16 : i32
  %2 = div %0, %1 : i32
  yield %2
}
body {
  %3 = program_id 0 : i32 loc(3:9)
  %4 = arange : i32[16]
  %5 = arange : i32[32]
  %6 = const true : bool[16, 32]
  %7 = const -0.5 : f32
  %8 = load @x[%4, %5] mask %6 other %7 : f32[16, 32]
  %9 = const 0.0 : f32[16]
  %10 = const 0 : i32
  %11 = const 1 : i32
  %12 = num_programs 0 : i32
  %13 = for %14 = %10 to %12 step %11 iter(%15 = %9) : f32[16] {
    %16 = reduce sum %8 axis 1 : f32[16]
    %17 = add %15, %16 : f32[16] loc(9:5)
    yield %17
  }
  %18 = param @s : f32
  %19 = cmp gt %18, %7 : bool
  %20 = if %19 : f32[16] {
    yield %13
  } else {
    %21 = neg %13 : f32[16]
    yield %21
  }
  %22 = load @q[%4, %5] : e2m1[16, 32]
  %23 = cast rne %22 : f32[16, 32]
  %24 = permute %23 perm [1, 0] : f32[32, 16]
  store @"y out"[%4], %20
}
values {
  %25: bf16[2]
}
"#;

#[track_caller]
fn err(text: &str) -> ParseError {
    match parse_kernel(text) {
        Ok(k) => panic!("parsed:\n{}", print_kernel(&k)),
        Err(e) => e,
    }
}

#[test]
fn sample_parses_verifies_and_reprints() {
    let k = parse_kernel(SAMPLE).unwrap();
    verify(&k).unwrap();
    assert_eq!(print_kernel(&k), SAMPLE);
}

#[test]
fn errors_carry_position_and_message() {
    let cases: &[(&str, usize, usize, &str)] = &[
        ("kernel k", 1, 8, "expected a name like `@x`, found `k`"),
        ("kernel @k\n  param @x: global f64[N]", 2, 20, "unknown dtype `f64`"),
        ("kernel @k\n  param @x: global f32[N]\ngrid {}", 2, 24, "unknown dim `N`"),
        ("kernel @k\n  tunable @T level1 in {1} = x", 2, 30, "expected integer, found `x`"),
        ("kernel @k\ngrid {\n  %0 = frob %1 : i32\n}", 3, 8, "unknown op `frob`"),
        ("kernel @k\ngrid {\n  %0 = const 1\n}", 3, 8, "`const` has 1 results but 0 result types"),
        ("kernel @k\ngrid {\n  %0 = const 1 : i32\n  %0 = const 2 : f32\n}\nbody {}", 4, 3, "value %0 has type i32 elsewhere but f32 here"),
        ("kernel @k\ngrid {\n  yield %2\n}\nbody {}", 3, 9, "value %0 has no type"),
        ("kernel @k\ngrid {}\nbody {\n  %0 = dim @Q : i32\n}", 4, 12, "unknown dim `@Q`"),
        ("kernel @k\ngrid {}\nbody {\n  %0 = cmp less %1, %2 : bool\n}", 4, 12, "unknown comparison predicate `less`"),
        ("kernel @k\ngrid {}\nbody {\n  %0 = const 99999999999999999999 : i32\n}", 4, 14, "not a valid i64 integer"),
        ("kernel @k\ngrid {}\nbody {\n  %0 = arange : i32[64\n}", 5, 1, "expected `,` or `]`, found `}`"),
        ("kernel @k\ngrid {}\nbody {\n  %99999999999 = arange : i32[4]\n}", 4, 3, "value id %99999999999 is too large"),
        ("kernel @k\ngrid {}\nbody {\n  %4000000000 = arange : i32[4]\n}", 4, 3, "value %0 has no type"),
        ("kernel @k\ngrid {}\nbody {\n  %0 = arange : i32[4] $\n}", 4, 24, "unexpected character '$'"),
        ("kernel @k\ngrid {}\nbody {\n  %0 = arange : i32[4]\n", 5, 1, "expected `}`, found end of input"),
        ("kernel @k\ngrid {}\nbody {}\nextra", 4, 1, "expected end of input, found `extra`"),
        ("kernel @\"unterminated", 1, 8, "unterminated string"),
        ("kernel @k\ngrid {}\nbody {\n  %0 = for %1 = %2 to %3 step %4 : i32 {\n  }\n}", 4, 8, "`for` carries 0 values but has 1 results"),
    ];
    let mut bad = vec![];
    for (text, line, col, msg) in cases {
        let e = err(text);
        if !e.msg.contains(msg) || (e.line, e.col) != (*line, *col) {
            bad.push(format!("{text:?}\n  got      {e}\n  expected {line}:{col}: {msg}"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let text = format!("kernel @k\n  param @x: global f32[{}1{}]", "(".repeat(100_000), ")".repeat(100_000));
    assert!(err(&text).msg.contains("nesting deeper than"));
    let text = format!("kernel @k\ngrid {{}}\nbody {{\n  %0 = const true : bool\n{}", "if %0 {\n".repeat(100_000));
    assert!(err(&text).msg.contains("nesting deeper than"));
}

/// Parse; on success the verifier and printer must also cope, and the printed form must parse
/// back to a kernel that prints the same.
fn exercise(text: &str) {
    if let Ok(k) = parse_kernel(text) {
        let _ = verify(&k);
        let printed = print_kernel(&k);
        let back = parse_kernel(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
        assert_eq!(print_kernel(&back), printed);
    }
}

#[test]
fn every_truncation_is_handled() {
    for (i, _) in SAMPLE.char_indices() {
        exercise(&SAMPLE[..i]);
        exercise(&SAMPLE[i..]);
    }
}

const ALPHABET: &[char] = &[
    '%', '@', '{', '}', '[', ']', '(', ')', ',', ':', '=', '-', '+', '*', '/', '"', '\\', ' ', '\n', '0', '1', '9', 'e', '.', 'x', '_',
    'é', '\u{0}',
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]
    #[test]
    fn mutated_inputs_never_panic(edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<prop::sample::Index>(), 0usize..12), 1..5)) {
        let mut chars: Vec<char> = SAMPLE.chars().collect();
        for (pos, kind, pick, len) in edits {
            let i = pos.index(chars.len() + 1);
            match kind {
                0 => { chars.insert(i, *pick.get(ALPHABET)); }
                1 => { chars.drain(i..(i + len).min(chars.len())); }
                2 if i < chars.len() => chars[i] = *pick.get(ALPHABET),
                _ => {
                    // Duplicate a slice elsewhere (repeats ids, lines, brackets).
                    let j = pick.index(chars.len() + 1);
                    let piece: Vec<char> = chars[i.min(j)..(i.min(j) + len * 4).min(chars.len())].to_vec();
                    let at = i.max(j).min(chars.len());
                    chars.splice(at..at, piece);
                }
            }
        }
        exercise(&chars.iter().collect::<String>());
    }

    #[test]
    fn random_token_soup_never_panics(toks in prop::collection::vec(prop::sample::select(vec![
        "kernel", "@k", "param", "dim", "grid", "body", "values", "{", "}", "%0", "%1", "%7", "=", ":", ",", "i32", "f32[4]",
        "const", "1", "-", "nan", "(", ")", "0x7ff8000000000001", "for", "to", "step", "iter", "if", "else", "yield", "load",
        "store", "@x", "[", "]", "mask", "other", "global", "out", "loc", "axis", "perm", "reduce", "sum", "1e5", "inf",
    ]), 0..60)) {
        exercise(&toks.join(" "));
        exercise(&format!("kernel @k param @x: global f32[N] dim @N grid {{ {} }} body {{ }}", toks.join(" ")));
        exercise(&format!("kernel @k param @x: out global f32[N] dim @N grid {{ }} body {{ {} }}", toks.join(" ")));
    }
}
