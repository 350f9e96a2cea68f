//! Golden tests of the front end's error messages.
//!
//! Each test is one small, realistic malformed kernel. It pins
//! - the `line:col` of the first error (so a reader sees the location right here), and
//! - the exact rendered diagnostic (`error: FILE:LINE:COL: message`, then miette's snippet with
//!   the caret, label and help) as an insta snapshot under `tests/snapshots/`.
//!
//! To add a case: write the test with its expected location, run once with
//! `INSTA_UPDATE=always cargo test -p opc-dsl --test diagnostics`, and review the new snapshot by
//! eye (the caret must sit under the offending text, the help must be actionable).

use opc_dsl::{check, compile, Diagnostics, Instance};
use opc_ir::DType;

const FILE: &str = "kernel.opc";

/// `check` must fail; returns the diagnostics.
fn check_err(src: &str) -> Diagnostics {
    match check(FILE, src) {
        Ok(names) => panic!("expected an error, but {names:?} type-checked:\n{src}"),
        Err(d) => d,
    }
}

/// `compile` of `kernel` with `inst` must fail; returns the diagnostics.
fn compile_err(src: &str, kernel: &str, inst: &Instance) -> Diagnostics {
    match compile(FILE, src, kernel, inst) {
        Ok(_) => panic!("expected an error, but `{kernel}` compiled:\n{src}"),
        Err(d) => d,
    }
}

fn expect(name: &str, src: &str, d: Diagnostics, line: usize, col: usize) {
    insta::assert_snapshot!(name, d.rendered);
    assert!(d.rendered.starts_with(&format!("error: {FILE}:{line}:{col}: ")), "header of {name}:\n{}", d.rendered);
    assert_eq!(d.line_col(src), Some((line, col)), "location of {name}:\n{}", d.rendered);
}

/// `diag!(name, (line, col), src)`: `check(src)` fails at `line:col`, rendered as the snapshot
/// `name`. `diag!(name, (line, col), src, compile(kernel, instance))` uses `compile` instead.
macro_rules! diag {
    ($name:ident, ($line:expr, $col:expr), $src:expr) => {
        #[test]
        fn $name() {
            let src: &str = $src;
            expect(stringify!($name), src, check_err(src), $line, $col);
        }
    };
    ($name:ident, ($line:expr, $col:expr), $src:expr, compile($kernel:expr, $inst:expr)) => {
        #[test]
        fn $name() {
            let src: &str = $src;
            expect(stringify!($name), src, compile_err(src, $kernel, &$inst), $line, $col);
        }
    };
}

// ---------------------------------------------------------------------------------- lexing

diag!(
    bad_character,
    (5, 35),
    r#"kernel matvec(w: f32[N, K], x: f32[K], y: out f32[N])
grid(N)
{
    let n = program_id(0);
    let s = load(w[n, arange(K)]) @ load(x[arange(K)]);
    store(y[n], s);
}
"#
);

diag!(
    non_ascii_identifier,
    (4, 9),
    r#"kernel scale(x: f32[N], y: out f32[N], a: f32)
grid(N)
{
    let α = a * 2.0;
    store(y[program_id(0)], load(x[program_id(0)]) * α);
}
"#
);

diag!(
    unterminated_block_comment,
    (4, 5),
    r#"kernel copy(x: f32[N], y: out f32[N])
grid(N)
{
    /* copy one element
    let i = program_id(0);
    store(y[i], load(x[i]));
}
"#
);

diag!(
    integer_literal_out_of_range,
    (4, 13),
    r#"kernel fill(y: out i32[N])
grid(N)
{
    let v = 99999999999999999999;
    store(y[program_id(0)], v);
}
"#
);

// ---------------------------------------------------------------------------------- parsing

diag!(
    missing_semicolon,
    (7, 42),
    r#"kernel scale(x: f32[N], y: out f32[N])
tunables {
    B: level1 in {64, 128, 256} = 128,
}
grid(cdiv(N, B))
{
    let i = program_id(0) * B + arange(B)
    store(y[i], load(x[i]) * 2.0);
}
"#
);

diag!(
    unclosed_block,
    (4, 1),
    r#"kernel relu(x: f32[N], y: out f32[N])
tunables { B: level1 in {64, 128} = 128 }
grid(cdiv(N, B))
{
    let i = program_id(0) * B + arange(B);
    for r in 0..4 {
        store(y[i], maximum(load(x[i]), 0.0));
}
"#
);

diag!(
    missing_grid,
    (3, 1),
    r#"kernel add(a: f32[N], b: f32[N], c: out f32[N])
tunables { B: level1 in {64, 128} = 128 }
{
    let i = program_id(0) * B + arange(B);
    store(c[i], load(a[i]) + load(b[i]));
}
"#
);

diag!(
    chained_comparison,
    (5, 26),
    r#"kernel clamp_mask(x: f32[N], y: out f32[N], lo: f32, hi: f32)
grid(N)
{
    let v = load(x[program_id(0)]);
    let inside = lo <= v <= hi;
    store(y[program_id(0)], where(inside, v, 0.0));
}
"#
);

diag!(
    reserved_word_as_name,
    (4, 9),
    r#"kernel strided(x: f32[N], y: out f32[N])
grid(cdiv(N, 64))
{
    let step = 2;
    let i = (program_id(0) * 64 + arange(64)) * step;
    store(y[i], load(x[i]));
}
"#
);

diag!(
    missing_tunable_level,
    (2, 15),
    r#"kernel copy(x: f32[N], y: out f32[N])
tunables { B: in {64, 128} = 64 }
grid(cdiv(N, B))
{
    let i = program_id(0) * B + arange(B);
    store(y[i], load(x[i]));
}
"#
);

diag!(
    scalar_output,
    (1, 25),
    r#"kernel total(x: f32[N], s: out f32)
grid(1)
{
    store(s, sum(load(x[arange(64)])));
}
"#
);

// ---------------------------------------------------------------------------------- names

diag!(
    unknown_name_did_you_mean,
    (8, 47),
    r#"kernel gather_rows(table: f32[V, D], ids: i32[T], rows_out: out f32[T, D])
where const D
grid(T)
{
    let t = program_id(0);
    let row = load(ids[t]);
    let dcols = arange(D);
    store(rows_out[t, dcols], load(table[row, dcol]));
}
"#
);

diag!(
    name_used_before_definition,
    (5, 24),
    r#"kernel shifted(x: f32[N], y: out f32[N])
grid(cdiv(N, 64))
{
    let i = program_id(0) * 64 + arange(64);
    let v = load(x[i + shift]);
    let shift = 1;
    store(y[i], v);
}
"#
);

diag!(
    builtin_used_as_value,
    (5, 26),
    r#"kernel act(x: f32[N], y: out f32[N])
grid(cdiv(N, 64))
{
    let i = program_id(0) * 64 + arange(64);
    let f = load(x[i]) * sigmoid;
    store(y[i], f);
}
"#
);

diag!(
    unknown_function,
    (5, 13),
    r#"kernel softplus(x: f32[N], y: out f32[N])
grid(cdiv(N, 128))
{
    let i = program_id(0) * 128 + arange(128);
    let e = expp(load(x[i]));
    store(y[i], log(1.0 + e));
}
"#
);

diag!(
    unknown_dtype,
    (1, 17),
    r#"kernel scale(x: f64[N], y: out f64[N], a: f32)
grid(N)
{
    store(y[program_id(0)], load(x[program_id(0)]) * a);
}
"#
);

diag!(
    duplicate_declaration,
    (2, 12),
    r#"kernel blocked(x: f32[N], y: out f32[N], BLOCK: i32)
tunables { BLOCK: level1 in {64, 128} = 128 }
grid(cdiv(N, BLOCK))
{
    let i = program_id(0) * BLOCK + arange(BLOCK);
    store(y[i], load(x[i]));
}
"#
);

diag!(
    duplicate_kernel,
    (7, 8),
    r#"kernel copy(x: f32[N], y: out f32[N])
grid(N)
{
    store(y[program_id(0)], load(x[program_id(0)]));
}

kernel copy(x: f32[N], y: out f32[N])
grid(N)
{
    store(y[program_id(0)], load(x[program_id(0)]));
}
"#
);

diag!(
    tensor_used_as_value,
    (5, 13),
    r#"kernel scale(x: f32[N], y: out f32[N])
grid(cdiv(N, 64))
{
    let i = program_id(0) * 64 + arange(64);
    let v = x * 2.0;
    store(y[i], v);
}
"#
);

// ---------------------------------------------------------------------------------- types

diag!(
    dtype_mismatch_f16_f32,
    (9, 16),
    r#"kernel scaled_rows(x: f16[M, D], w: f32[D], y: out f32[M, D])
where const D
grid(M)
{
    let r = program_id(0);
    let d = arange(D);
    let xs = load(x[r, d]);
    let ws = load(w[d]);
    let prod = xs * ws;
    store(y[r, d], prod);
}
"#
);

diag!(
    store_dtype_mismatch,
    (8, 32),
    r#"kernel rmsnorm(x: f16[M, D], y: out f16[M, D])
where const D
grid(M)
{
    let d = arange(D);
    let xs = cast(load(x[program_id(0), d]), f32);
    let rms = rsqrt(sum(xs * xs) / 4096.0 + 1e-6);
    store(y[program_id(0), d], xs * rms);
}
"#
);

diag!(
    float_to_int_cast_without_rounding,
    (6, 14),
    r#"kernel quantize_i8(x: f32[N], q: out i8[N], inv_scale: f32)
grid(cdiv(N, 256))
{
    let i = program_id(0) * 256 + arange(256);
    let scaled = load(x[i]) * inv_scale;
    let q8 = cast(scaled, i8);
    store(q[i], q8);
}
"#
);

diag!(
    float_index,
    (6, 28),
    r#"kernel lookup(table: f32[V], pos: f32[N], y: out f32[N])
grid(cdiv(N, 64))
{
    let i = program_id(0) * 64 + arange(64);
    let p = load(pos[i]);
    store(y[i], load(table[p]));
}
"#
);

diag!(
    mask_of_wrong_dtype,
    (6, 35),
    r#"kernel masked_copy(x: f32[N], y: out f32[N])
grid(cdiv(N, 64))
{
    let i = program_id(0) * 64 + arange(64);
    let keep = i % 2;
    store(y[i], load(x[i]), mask: keep);
}
"#
);

diag!(
    if_on_tile_condition,
    (6, 8),
    r#"kernel relu(x: f32[N], y: out f32[N])
grid(cdiv(N, 64))
{
    let i = program_id(0) * 64 + arange(64);
    var v = load(x[i]);
    if v < 0.0 {
        v = 0.0;
    }
    store(y[i], v);
}
"#
);

diag!(
    instantiate_disallowed_dtype,
    (1, 14),
    r#"kernel scale<T: {f16, bf16}>(x: T[N], y: out T[N])
grid(cdiv(N, 64))
{
    let i = program_id(0) * 64 + arange(64);
    store(y[i], load(x[i]) * 2.0);
}
"#,
    compile("scale", Instance::default().dtype("T", DType::I8))
);

// ---------------------------------------------------------------------------------- shapes

diag!(
    shape_mismatch_in_broadcast,
    (7, 15),
    r#"kernel add_bias(x: f32[M, N], bias: f32[M], y: out f32[M, N])
grid(cdiv(M, 32), cdiv(N, 64))
{
    let rows = program_id(0) * 32 + arange(32);
    let cols = program_id(1) * 64 + arange(64);
    let tile = load(x[rows, cols]);
    let res = tile + load(bias[rows]);
    store(y[rows, cols], res);
}
"#
);

diag!(
    dot_inner_dim_mismatch,
    (9, 15),
    r#"kernel matmul(a: f32[M, K], b: f32[K, N], c: out f32[M, N])
grid(cdiv(M, 32), cdiv(N, 32))
{
    let rows = program_id(0) * 32 + arange(32);
    let cols = program_id(1) * 32 + arange(32);
    var acc = zeros([32, 32], f32);
    for k0 in 0..cdiv(K, 16) {
        let ks = k0 * 16 + arange(16);
        acc = dot(load(a[rows, ks]), load(b[cols, ks]), acc);
    }
    store(c[rows, cols], acc);
}
"#
);

diag!(
    dot_on_3d_tile,
    (7, 18),
    r#"kernel bmm(a: f32[B, M, K], b: f32[K, N], c: out f32[B, M, N])
where const K, const N
grid(B, cdiv(M, 16))
{
    let rows = program_id(1) * 16 + arange(16);
    let at = load(a[arange(2), rows, arange(K)]);
    let ct = dot(at, load(b[arange(K), arange(N)]));
    store(c[program_id(0), rows, arange(N)], ct);
}
"#
);

diag!(
    wrong_index_count,
    (6, 22),
    r#"kernel row_sum(x: f32[M, N], y: out f32[M])
where const N
grid(M)
{
    let r = program_id(0);
    let v = sum(load(x[r]));
    store(y[r], v);
}
"#
);

diag!(
    var_reassigned_with_another_shape,
    (8, 13),
    r#"kernel row_max(x: f32[M, N], y: out f32[M])
grid(cdiv(M, 16))
{
    let rows = program_id(0) * 16 + arange(16);
    var m = full([16], -inf, f32);
    for c0 in 0..cdiv(N, 64) {
        let cols = c0 * 64 + arange(64);
        m = maximum(m[:, None], load(x[rows, cols]));
    }
    store(y[rows], m);
}
"#
);

diag!(
    bad_axis,
    (6, 27),
    r#"kernel col_sum(x: f32[M, N], y: out f32[N])
grid(cdiv(N, 64))
{
    let cols = program_id(0) * 64 + arange(64);
    let t = load(x[arange(32), cols]);
    store(y[cols], sum(t, 2));
}
"#
);

diag!(
    reduction_needs_axis,
    (6, 20),
    r#"kernel row_sum(x: f32[M, N], y: out f32[M])
grid(cdiv(M, 16))
{
    let rows = program_id(0) * 16 + arange(16);
    let t = load(x[rows, arange(64)]);
    store(y[rows], sum(t));
}
"#
);

// ---------------------------------------------------------------------------------- sizes

diag!(
    launch_time_dim_as_tile_size,
    (4, 23),
    r#"kernel softmax(x: f32[M, N], y: out f32[M, N])
grid(M)
{
    let cols = arange(N);
    let v = load(x[program_id(0), cols]);
    let e = exp(v - max(v));
    store(y[program_id(0), cols], e / sum(e));
}
"#
);

diag!(
    tile_too_large,
    (6, 21),
    r#"kernel matmul(a: f32[M, K], b: f32[K, N], c: out f32[M, N])
tunables { BM: level1 in {64, 128} = 64 }
grid(cdiv(M, BM), cdiv(N, 4096))
{
    let rows = program_id(0) * BM + arange(BM);
    var acc = zeros([BM, 4096 * 32], f32);
    store(c[rows, arange(4096)], acc);
}
"#
);

diag!(
    tunable_default_outside_space,
    (3, 35),
    r#"kernel copy(x: f32[N], y: out f32[N])
tunables {
    B: level1 in {64, 128, 256} = 512,
}
grid(cdiv(N, B))
{
    let i = program_id(0) * B + arange(B);
    store(y[i], load(x[i]));
}
"#
);

diag!(
    tile_does_not_fit_declared_dim,
    (4, 5),
    r#"kernel rowwise(x: f32[M, D], y: out f32[M, D])
where const D, D % BK == 0
tunables {
    BK: level2 in {16, 32, 48} = 48,
}
grid(M)
{
    let r = program_id(0);
    for k0 in 0..D / BK {
        let ks = k0 * BK + arange(BK);
        store(y[r, ks], load(x[r, ks]) * 2.0);
    }
}
"#,
    compile("rowwise", Instance::default().konst("D", 64))
);

diag!(
    const_dim_without_value,
    (2, 13),
    r#"kernel head_norm(x: f32[M, D], y: out f32[M, D])
where const D
grid(M)
{
    let d = arange(D);
    let v = load(x[program_id(0), d]);
    store(y[program_id(0), d], v * rsqrt(sum(v * v) + 1e-6));
}
"#,
    compile("head_norm", Instance::default())
);

diag!(
    const_dim_outside_allowed_set,
    (2, 16),
    r#"kernel head_norm(x: f32[M, D], y: out f32[M, D])
where const D, D in {64, 128}
grid(M)
{
    let d = arange(D);
    store(y[program_id(0), d], load(x[program_id(0), d]));
}
"#,
    compile("head_norm", Instance::default().konst("D", 96))
);

// ---------------------------------------------------------------------------------- memory

diag!(
    store_to_input_tensor,
    (5, 11),
    r#"kernel inplace_scale(x: f32[N], a: f32)
grid(cdiv(N, 64))
{
    let i = program_id(0) * 64 + arange(64);
    store(x[i], load(x[i]) * a);
}
"#
);

diag!(
    assignment_to_let,
    (6, 9),
    r#"kernel cumsum_loop(x: f32[M, N], y: out f32[M])
grid(M)
{
    let acc = 0.0;
    for c in 0..N {
        acc = acc + load(x[program_id(0), c]);
    }
    store(y[program_id(0)], acc);
}
"#
);

// ---------------------------------------------------------------------------------- grid

diag!(
    grid_uses_program_value,
    (2, 11),
    r#"kernel prefix(x: f32[N], y: out f32[N], n_valid: i32)
grid(cdiv(n_valid, 64))
{
    let i = program_id(0) * 64 + arange(64);
    store(y[i], load(x[i]), mask: i < n_valid);
}
"#
);

diag!(
    grid_calls_program_id,
    (2, 6),
    r#"kernel copy(x: f32[N], y: out f32[N])
grid(program_id(0))
{
    store(y[program_id(0)], load(x[program_id(0)]));
}
"#
);

diag!(
    program_id_axis_out_of_range,
    (5, 27),
    r#"kernel matmul(a: f32[M, K], b: f32[K, N], c: out f32[M, N])
grid(cdiv(M, 32), cdiv(N, 32))
{
    let rows = program_id(0) * 32 + arange(32);
    let cols = program_id(2) * 32 + arange(32);
    store(c[rows, cols], dot(load(a[rows, arange(32)]), load(b[arange(32), cols])));
}
"#
);

// ---------------------------------------------------------------------------------- calls

diag!(
    wrong_argument_count,
    (5, 13),
    r#"kernel gelu_tanh(x: f32[N], y: out f32[N])
grid(cdiv(N, 64))
{
    let i = program_id(0) * 64 + arange(64);
    let v = where(load(x[i]) > 0.0, load(x[i]));
    store(y[i], v);
}
"#
);

diag!(
    unknown_named_argument,
    (5, 41),
    r#"kernel masked_load(x: f32[N], y: out f32[N])
grid(cdiv(N, 64))
{
    let i = program_id(0) * 64 + arange(64);
    store(y[i], load(x[i], mask: i < N, default: 0.0));
}
"#
);

diag!(
    named_argument_twice,
    (5, 49),
    r#"kernel masked_load(x: f32[N], y: out f32[N])
grid(cdiv(N, 64))
{
    let i = program_id(0) * 64 + arange(64);
    let v = load(x[i], mask: i < N, other: 0.0, other: -1.0);
    store(y[i], v);
}
"#
);

diag!(
    store_used_as_value,
    (5, 13),
    r#"kernel copy_count(x: f32[N], y: out f32[N], n: out i32[1])
grid(cdiv(N, 64))
{
    let i = program_id(0) * 64 + arange(64);
    let w = store(y[i], load(x[i]));
    atomic_add(n[0], w);
}
"#
);

diag!(
    truncated_file,
    (3, 16),
    r#"kernel add(a: f32[N], b: f32[N], c: out f32[N])
tunables { B: level1 in {64, 128} = 128 }
grid(cdiv(N, B)"#
);
