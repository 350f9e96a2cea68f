//! One small broken kernel per verifier rule, asserting the message; plus a fuzz test that the
//! verifier and printer never panic on arbitrary (malformed) kernels.

use opc_ir::parser::parse_kernel;
use opc_ir::printer::print_kernel;
use opc_ir::verify::verify;
use opc_ir::*;
use proptest::prelude::*;

const HEADER: &str = "kernel @k
  param @x: global f32[N]
  param @m: global f32[N, N]
  param @y: out global f32[N]
  param @h: out global f16[N]
  param @q: global e2m1[N]
  param @s: f32
  dim @N
";

const GRID: &str = "grid {
  %0 = dim @N : i32
  yield %0
}
";

/// Values %1..%9 that snippets may use.
const PRELUDE: &str = "  %1 = program_id 0 : i32
  %2 = arange : i32[64]
  %3 = load @x[%2] : f32[64]
  %4 = cast rne %3 : f16[64]
  %5 = const true : bool[64]
  %6 = const 0 : i32
  %7 = load @q[%2] : e2m1[64]
  %8 = const 1 : i32
  %9 = load @m[%2, %2] : f32[64, 64]
";

fn kernel(grid: &str, body: &str) -> Kernel {
    let text = format!("{HEADER}{grid}body {{\n{PRELUDE}{body}}}\n");
    parse_kernel(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn msg(k: &Kernel) -> String {
    match verify(k) {
        Ok(()) => panic!("verified:\n{}", print_kernel(k)),
        Err(e) => {
            assert_eq!(e.kernel, k.name);
            e.msg
        }
    }
}

#[test]
fn template_is_valid() {
    verify(&kernel(GRID, "")).unwrap();
}

/// (body snippet, expected message substring), one per rule.
const BODY_CASES: &[(&str, &str)] = &[
    // SSA and scoping
    ("  %10 = add %3, %11 : f32[64]\n  %11 = neg %3 : f32[64]\n", "%10 = add: operand %11 is used before its definition"),
    ("  %10 = neg %3 : f32[64]\n  %10 = neg %3 : f32[64]\n", "%10 = neg: %10 is defined more than once"),
    ("  %10 = neg %0 : i32\n", "%10 = neg: operand %0 is used outside the block or region that defines it"),
    ("  for %10 = %6 to %8 step %8 {\n    yield\n  }\n  %11 = add %10, %10 : i32\n", "%11 = add: operand %10 is used outside the block or region"),
    // elementwise
    ("  %10 = add %3, %4 : f32[64]\n", "%10 = add: operand types f32[64] and f16[64] differ"),
    ("  %10 = add %3, %3 : f16[64]\n", "%10 = add: result must be f32[64], got f16[64]"),
    ("  %10 = shl %3, %3 : f32[64]\n", "%10 = shl: `shl` is not defined on f32[64]"),
    ("  %10 = and %5, %5 : bool[64]\n  %11 = add %5, %5 : bool[64]\n", "%11 = add: `add` is not defined on bool[64]"),
    ("  %10 = add %7, %7 : e2m1[64]\n", "%10 = add: `add` is not defined on e2m1[64]"),
    ("  %10 = exp %2 : i32[64]\n", "%10 = exp: `exp` is not defined on i32[64]"),
    ("  %10 = not %3 : f32[64]\n", "%10 = not: `not` is not defined on f32[64]"),
    ("  %10 = isnan %3 : f32[64]\n", "%10 = isnan: result must be bool[64], got f32[64]"),
    ("  %10 = add %3 : f32[64]\n", "%10 = add: expects 2 operands, got 1"),
    ("  %10 = cmp lt %3, %3 : f32[64]\n", "%10 = cmp: result must be bool[64], got f32[64]"),
    ("  %10 = cmp eq %7, %7 : bool[64]\n", "cannot compare storage-only e2m1 values"),
    ("  %10 = select %3, %3, %3 : f32[64]\n", "%10 = select: condition must be bool[64], got f32[64]"),
    ("  %10 = select %5, %3, %4 : f32[64]\n", "operand types f32[64] and f16[64] must both be the result type f32[64]"),
    // const
    ("  %10 = const 1.5 : i32\n", "%10 = const: float constant 1.5 does not fit result type i32"),
    ("  %10 = const 300 : i8[4]\n", "integer constant 300 does not fit result type i8[4]"),
    ("  %10 = const 1 : e8m0\n", "integer constant 1 does not fit result type e8m0"),
    ("  %10 = const true : f32\n", "bool constant true does not fit result type f32"),
    // casts
    ("  %10 = cast rne %7 : e8m0[64]\n", "%10 = cast: cannot cast e2m1 to e8m0"),
    ("  %10 = cast rne %5 : e2m1[64]\n", "cannot cast bool to e2m1"),
    ("  %10 = cast rne %3 : f16[32]\n", "result f16[32] must have the operand's shape and space (f32[64])"),
    ("  %10 = bitcast %3 : f16[64]\n", "%10 = bitcast: cannot bitcast f32 (32 bits) to f16 (16 bits)"),
    ("  %10 = bitcast %5 : u8[64]\n", "cannot bitcast bool (8 bits) to u8 (8 bits)"),
    // shape ops
    ("  %10 = broadcast %3 : f32[64, 64]\n", "%10 = broadcast: cannot broadcast f32[64] to f32[64, 64]"),
    ("  %10 = expand_dims %3 axis 0 : f32[1, 64]\n  %11 = broadcast %10 : f32[2, 64]\n  %12 = broadcast %10 : f32[64, 2]\n", "%12 = broadcast: cannot broadcast f32[1, 64] to f32[64, 2]"),
    ("  %10 = expand_dims %3 axis 2 : f32[64, 1]\n", "%10 = expand_dims: axis 2 out of range for f32[64]"),
    ("  %10 = expand_dims %3 axis 1 : f32[1, 64]\n", "result must be f32[64, 1], got f32[1, 64]"),
    ("  %10 = reshape %3 : f32[8, 4]\n", "%10 = reshape: cannot reshape f32[64] to f32[8, 4]"),
    ("  %10 = permute %9 perm [0, 0] : f32[64, 64]\n", "%10 = permute: perm [0, 0] is not a permutation of the 2 axes"),
    ("  %10 = reshape %9 : f32[64, 8, 8]\n  %11 = permute %10 perm [2, 0, 1] : f32[64, 8, 8]\n", "%11 = permute: result must be f32[8, 64, 8], got f32[64, 8, 8]"),
    // reductions
    ("  %10 = reduce sum %3 axis 1 : f32\n", "%10 = reduce: axis 1 out of range for f32[64]"),
    ("  %10 = reduce argmax %3 axis 0 : f32\n", "%10 = reduce: result must be i32, got f32"),
    ("  %10 = reduce max %9 axis 0 : f32[64, 64]\n", "result must be f32[64], got f32[64, 64]"),
    ("  %10 = reduce sum %5 axis 0 : bool\n", "cannot reduce bool[64]"),
    ("  %10 = scan cumsum %3 axis 1 : f32[64]\n", "%10 = scan: axis 1 out of range"),
    // dot
    ("  %10 = dot %9, %3 : f32[64, 64]\n", "%10 = dot: operands must be 2-D, got f32[64, 64] and f32[64]"),
    ("  %10 = reshape %9 : f32[32, 128]\n  %11 = dot %10, %10 : f32[32, 128]\n", "%11 = dot: inner dims differ: f32[32, 128] x f32[32, 128]"),
    ("  %10 = cast rne %9 : f16[64, 64]\n  %11 = dot %10, %10 : f16[64, 64]\n", "%11 = dot: result must be f32[64, 64], got f16[64, 64]"),
    ("  %10 = cast rne %9 : f16[64, 64]\n  %11 = dot %10, %9 : f32[64, 64]\n", "operands f16[64, 64] and f32[64, 64] must have one int or float dtype"),
    ("  %10 = cast rne %9 : f16[64, 64]\n  %11 = dot %9, %9, %10 : f32[64, 64]\n", "accumulator f16[64, 64] must have the result type f32[64, 64]"),
    // load
    ("  %10 = load @x[%2, %2] : f32[64, 64]\n", "%10 = load @x: expects 1 operands, got 2"),
    ("  %10 = load @x[%3] : f32[64]\n", "index 0 must be an i32 scalar or tile, got f32[64]"),
    ("  %10 = load @x[%2] : f32[32]\n", "%10 = load @x: result must be f32[64] (tensor dtype, index shapes concatenated), got f32[32]"),
    ("  %10 = load @x[%2] : f16[64]\n", "result must be f32[64]"),
    ("  %10 = load @x[%1] mask %5 : f32\n", "%10 = load @x: mask must be bool[], got bool[64]"),
    ("  %10 = load @x[%2] other %4 : f32[64]\n", "`other` must be a f32 scalar or f32[64], got f16[64]"),
    ("  %10 = load @s[%2] : f32[64]\n", "%10 = load @s: parameter @s is a scalar, not a tensor"),
    // store / atomic_add
    ("  store @x[%2], %3\n", "store @x: parameter @x is not an `out` tensor"),
    ("  store @y[%2], %4\n", "store @y: value must be f32[64] (tensor dtype, index shapes concatenated), got f16[64]"),
    ("  store @y[%1], %3\n", "value must be f32[] (tensor dtype, index shapes concatenated), got f32[64]"),
    ("  %10 = const true : bool\n  store @y[%2], %3 mask %10\n", "store @y: mask must be bool[64], got bool"),
    ("  atomic_add @h[%2], %4\n", "atomic_add @h: atomic_add needs an f32 or i32 tensor, not f16"),
    // for
    ("  %10 = cast rne %6 : f32\n  for %11 = %10 to %8 step %8 {\n    yield\n  }\n", "for: `lo` must be an i32 scalar, got f32"),
    ("  %10 = for %11 = %6 to %8 step %8 iter(%12 = %3) : f32[64] {\n    %13 = neg %12 : f32[64]\n  }\n", "%10 = for: body region must end in `yield`"),
    ("  %10 = for %11 = %6 to %8 step %8 iter(%12 = %3) : f32[64] {\n    yield %4\n  }\n", "%10 = for: body region yields (f16[64]) but the results are (f32[64])"),
    ("  %10 = for %11 = %6 to %8 step %8 iter(%12 = %4) : f32[64] {\n    yield %3\n  }\n", "carried value 0: init %4 is f16[64], region argument %12 is f32[64], result %10 is f32[64]"),
    ("  for %10 = %6 to %8 step %8 {\n    yield\n    %11 = neg %3 : f32[64]\n  }\n", "yield: `yield` must be the last op of its block"),
    // if
    ("  %10 = if %5 : f32[64] {\n    yield %3\n  } else {\n    yield %3\n  }\n", "%10 = if: condition must be a bool scalar, got bool[64]"),
    ("  %10 = const true : bool\n  %11 = if %10 : f32[64] {\n    yield %3\n  }\n", "%11 = if: expects 2 regions, got 1"),
    ("  %10 = const true : bool\n  %11 = if %10 : f32[64] {\n    yield %3\n  } else {\n    yield %4\n  }\n", "%11 = if: else region yields (f16[64]) but the results are (f32[64])"),
    ("  %10 = const true : bool\n  if %10 {\n    %11 = neg %3 : f32[64]\n  } else {\n    yield\n  }\n", "if: then region must end in `yield`"),
    // body top level, program ids, dims, params
    ("  yield %3\n", "yield: `yield` is not allowed at the top level of the body"),
    ("  %10 = program_id 1 : i32\n", "%10 = program_id: grid axis 1 out of range: the grid has 1 extents"),
    ("  %10 = num_programs 0 : i32[1]\n", "%10 = num_programs: result must be i32, got i32[1]"),
    ("  %10 = arange : f32[64]\n", "%10 = arange: result must be a 1-D i32 tile, got f32[64]"),
    ("  %10 = param @s : f16\n", "%10 = param: result must be f32, got f16"),
    ("  %10 = param @x : f32\n", "%10 = param: parameter @x is a tensor, not a scalar"),
    ("  %10 = dim @N : f32\n", "%10 = dim: result must be i32, got f32"),
    ("  %10 = neg %3 : f32[64] loc(4:2)\n  %10 = neg %3 : f32[64] loc(5:7)\n", "%10 = neg: %10 is defined more than once (at 5:7)"),
];

#[test]
fn body_rules() {
    let mut bad = vec![];
    for (body, want) in BODY_CASES {
        let k = kernel(GRID, body);
        match verify(&k) {
            Ok(()) if want.is_empty() => {}
            Ok(()) => bad.push(format!("{body}  verified, expected `{want}`")),
            Err(e) if !want.is_empty() && e.msg.contains(want) => {}
            Err(e) => bad.push(format!("{body}  got      {}\n  expected {want}", e.msg)),
        }
    }
    assert!(bad.is_empty(), "\n{}", bad.join("\n"));
}

#[test]
fn grid_rules() {
    let cases: &[(&str, &str)] = &[
        ("grid {\n  %0 = dim @N : i32\n}\n", "the grid block must end in `yield` of 1 to 3 i32 scalar extents"),
        ("grid {\n  %0 = dim @N : i32\n  yield %0, %0, %0, %0\n}\n", "grid `yield` gives 4 extents; 1 to 3 are allowed"),
        ("grid {\n  %0 = dim @N : i32\n  yield\n}\n", "grid `yield` gives 0 extents"),
        ("grid {\n  %0 = dim @N : i32\n  %10 = cast rne %0 : f32\n  yield %10\n}\n", "grid `yield`: extent %10 is f32, not an i32 scalar"),
        ("grid {\n  %0 = dim @N : i32\n  %10 = program_id 0 : i32\n  yield %0\n}\n", "%10 = program_id: `program_id` is not allowed in the grid block"),
        ("grid {\n  %0 = dim @N : i32\n  %10 = const 1 : i32[2]\n  yield %0\n}\n", "%10 = const: grid values must be scalars, result %10 is i32[2]"),
        ("grid {\n  %0 = dim @N : i32\n  yield %0\n  %10 = const 1 : i32\n}\n", "the grid block must end in `yield`"),
        ("grid(%10: i32) {\n  %0 = dim @N : i32\n  yield %0\n}\n", "the grid block takes no arguments"),
    ];
    let mut bad = vec![];
    for (grid, want) in cases {
        let m = msg(&kernel(grid, ""));
        if !m.contains(want) {
            bad.push(format!("{grid}  got      {m}\n  expected {want}"));
        }
    }
    assert!(bad.is_empty(), "\n{}", bad.join("\n"));
}

#[test]
fn header_rules() {
    let base = kernel(GRID, "");
    let mut cases: Vec<(Kernel, &str)> = vec![];
    let mut k = base.clone();
    k.params[1].name = "x".into();
    cases.push((k, "parameter name @x is declared twice"));
    let mut k = base.clone();
    k.dims.push(DimSym { name: "N".into(), konst: true, value: Some(3) });
    cases.push((k, "dim name @N is declared twice"));
    let mut k = base.clone();
    k.params[5].kind = ParamKind::Scalar { dtype: DType::F16 };
    cases.push((k, "parameter @s: scalar parameters are f32, i32 or bool, not f16"));
    let mut k = base.clone();
    k.params[0].kind = ParamKind::Tensor { dtype: DType::F32, dims: vec![DimExpr::Sym(SymId(4))], output: false };
    cases.push((k, "parameter @x: dim expression uses dim #4, but the kernel declares 1"));
    let mut k = base.clone();
    k.constraints.push(Constraint::MultipleOf(DimExpr::Const(4), DimExpr::Sym(SymId(1))));
    cases.push((k, "constraint: dim expression uses dim #1"));
    let mut k = base.clone();
    k.tunables.push(Tunable { name: "BM".into(), level: 1, space: vec![16, 32], value: 48, loc: None });
    cases.push((k, "tunable @BM: value 48 is not in its space [16, 32]"));
    let mut k = base.clone();
    k.tunables.push(Tunable { name: "BM".into(), level: 3, space: vec![16], value: 16, loc: None });
    cases.push((k, "tunable @BM: level 3 is not 1 or 2"));
    // Things the text form cannot express: out-of-range references and missing types.
    let mut k = base.clone();
    k.body.ops[0].kind = OpKind::Dim(SymId(7));
    cases.push((k, "%1 = dim: dim #7 out of range: the kernel declares 1"));
    let mut k = base.clone();
    k.body.ops[0].kind = OpKind::ScalarParam(99);
    cases.push((k, "%1 = param: parameter #99 out of range: the kernel has 6"));
    let mut k = base.clone();
    k.values.pop();
    cases.push((k, "%9 = load @m: value %9 has no type (`values` has 9 entries)"));
    let mut k = base.clone();
    k.body.ops[3].args.push(ValueId(1000));
    cases.push((k, "%4 = cast: operand %1000 has no type"));
    let mut k = base.clone();
    let v = k.new_value(TileType::new(DType::F32, vec![64]));
    let r = k.new_value(TileType::new(DType::F32, vec![64]));
    k.body.ops.push(Op::new(OpKind::Unary(UnaryOp::Neg), vec![v], vec![r]));
    cases.push((k, "%11 = neg: operand %10 is never defined"));
    let mut k = base.clone();
    k.body.args.push(ValueId(3));
    cases.push((k, "the body block takes no arguments"));
    let mut k = base;
    k.body.ops[2].kind = OpKind::Load { tensor: 42, has_mask: false, has_other: false };
    cases.push((k, "%3 = load: parameter #42 out of range"));
    let mut bad = vec![];
    for (k, want) in &cases {
        let m = msg(k);
        if !m.contains(want) {
            bad.push(format!("got      {m}\n  expected {want}"));
        }
    }
    assert!(bad.is_empty(), "\n{}", bad.join("\n"));
}

#[test]
fn for_region_argument_rules() {
    let k = kernel(GRID, "  %10 = for %11 = %6 to %8 step %8 iter(%12 = %3) : f32[64] {\n    yield %12\n  }\n");
    verify(&k).unwrap();
    let mut bad = k.clone();
    bad.body.ops[9].regions[0].args.pop();
    assert!(msg(&bad).contains("%10 = for: region has 1 arguments, expected 2 (induction variable and carried values)"));
    let mut bad = k.clone();
    bad.values[11] = TileType::scalar(DType::F32);
    assert!(msg(&bad).contains("%10 = for: induction variable %11 must be an i32 scalar, got f32"));
    let mut bad = k.clone();
    bad.body.ops[9].regions[0].args[1] = ValueId(3);
    assert!(msg(&bad).contains("%10 = for: region argument: %3 is defined more than once"), "{}", msg(&bad));
    let mut bad = k;
    bad.body.ops[9].regions.clear();
    assert!(msg(&bad).contains("%10 = for: expects 1 regions, got 0"));
}

#[test]
fn error_display_names_the_kernel() {
    let e = verify(&kernel(GRID, "  %10 = add %3, %4 : f32[64]\n")).unwrap_err();
    assert_eq!(e.to_string(), "verifier: kernel `k`: %10 = add: operand types f32[64] and f16[64] differ");
}

/// Arbitrary structure: random kinds, operand / result ids (some out of range), regions.
fn arb_op(depth: u32) -> BoxedStrategy<Op> {
    let kinds = prop::sample::select(vec![
        OpKind::Const(Scalar::Int(1)),
        OpKind::Const(Scalar::Float(0.5)),
        OpKind::ProgramId(0),
        OpKind::NumPrograms(3),
        OpKind::Dim(SymId(0)),
        OpKind::Dim(SymId(5)),
        OpKind::ScalarParam(5),
        OpKind::ScalarParam(0),
        OpKind::Arange,
        OpKind::Unary(UnaryOp::Exp),
        OpKind::Binary(BinaryOp::Add),
        OpKind::Cmp(CmpPred::Lt),
        OpKind::Select,
        OpKind::Cast(Rounding::Rtz),
        OpKind::Bitcast,
        OpKind::Broadcast,
        OpKind::ExpandDims(1),
        OpKind::Reshape,
        OpKind::Permute(vec![1, 0]),
        OpKind::Permute(vec![7]),
        OpKind::Reduce { op: ReduceOp::Sum, axis: 0 },
        OpKind::Scan { op: ScanOp::Cumsum, axis: 3 },
        OpKind::Dot,
        OpKind::Load { tensor: 0, has_mask: true, has_other: true },
        OpKind::Load { tensor: 9, has_mask: false, has_other: false },
        OpKind::Store { tensor: 2, has_mask: true },
        OpKind::AtomicAdd { tensor: 5, has_mask: false },
        OpKind::For,
        OpKind::If,
        OpKind::Yield,
    ]);
    let ids = || prop::collection::vec((0u32..24).prop_map(ValueId), 0..5);
    let block = |d: u32| prop::collection::vec(if d == 0 { leaf() } else { arb_op(d - 1) }, 0..4);
    let regions = if depth == 0 { Just(vec![]).boxed() } else { prop::collection::vec((ids(), block(depth)).prop_map(|(args, ops)| Block { args, ops }), 0..3).boxed() };
    (kinds, ids(), ids(), regions)
        .prop_map(|(kind, args, results, regions)| Op { kind, args, results, regions, loc: None })
        .boxed()
}

/// The kinds [`arb_op`] draws from, with defined operands (%1..%9 of the template) and fresh
/// results of random types, so the per-kind type checks are reached.
fn arb_typed_op() -> impl Strategy<Value = (Op, Vec<TileType>)> {
    let operands = prop::collection::vec((1u32..10).prop_map(ValueId), 0..6);
    let yields = prop::collection::vec(operands.clone(), 0..3);
    (arb_op(0), operands, prop::collection::vec(arb_type(), 0..3), yields).prop_map(|(mut op, args, tys, yields)| {
        op.args = args;
        op.results = (0..tys.len() as u32).map(|i| ValueId(10 + i)).collect();
        op.regions = yields.into_iter().map(|y| Block { args: vec![], ops: vec![Op::new(OpKind::Yield, y, vec![])] }).collect();
        (op, tys)
    })
}

fn leaf() -> BoxedStrategy<Op> {
    arb_op(0)
}

fn arb_type() -> impl Strategy<Value = TileType> {
    (prop::sample::select(DType::ALL.to_vec()), prop::collection::vec(prop::sample::select(vec![1usize, 2, 64, usize::MAX]), 0..3))
        .prop_map(|(d, s)| TileType::new(d, s))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn arbitrary_kernels_never_panic(
        grid in prop::collection::vec(arb_op(1), 0..4),
        body in prop::collection::vec(arb_op(2), 0..8),
        values in prop::collection::vec(arb_type(), 0..20),
    ) {
        let mut k = kernel(GRID, "");
        k.grid.ops.splice(1..1, grid);
        k.body.ops.extend(body);
        k.values.truncate(10);
        k.values.extend(values);
        let _ = verify(&k);
        let text = print_kernel(&k);
        let _ = parse_kernel(&text);
    }

    #[test]
    fn arbitrary_typed_ops_never_panic((op, tys) in arb_typed_op()) {
        let mut k = kernel(GRID, "");
        k.values.extend(tys);
        k.body.ops.push(op);
        let _ = verify(&k);
        let text = print_kernel(&k);
        let _ = parse_kernel(&text);
    }
}
