//! `emit-ascendc`: print a planned, checked program as the three source files of an AscendC
//! kernel project: the device kernel (`NAME.cpp`), the host tiling header
//! (`NAME_tiling.h`: the POD tiling struct and the tiling function) and the launch stub
//! (`NAME_launch.cpp`: `<<<>>>` on the NPU, `ICPU_RUN_KF` under `ASCENDC_CPU_DEBUG`).

use opc_ir::{DType, Kernel, OpKind, ParamKind};

use super::lir::{self, Stmt};
use super::lower::ctype;
use super::plan::Usage;

/// The generated sources.
#[derive(Clone, Debug)]
pub struct Sources {
    pub kernel_cpp: String,
    pub tiling_h: String,
    pub launch_cpp: String,
}

/// `flash_attention` → `FlashAttention`.
pub fn camel(s: &str) -> String {
    s.split('_').filter(|p| !p.is_empty()).map(|p| p[..1].to_uppercase() + &p[1..]).collect()
}

/// Scalar helpers every kernel file carries (the tile IR's exact scalar semantics).
const PRELUDE: &str = r#"constexpr float kOpcInf = __builtin_huge_valf();

// Scalar semantics of the tile IR: 16-bit floats round after every op, ints wrap to their
// width, integer division by zero gives 0.
__aicore__ inline float OpcF16(float x) { return static_cast<float>(static_cast<half>(x)); }
__aicore__ inline float OpcBf16(float x) { return static_cast<float>(static_cast<bfloat16_t>(x)); }
__aicore__ inline float OpcMax(float a, float b) { return (a != a || b > a) ? b : a; }
__aicore__ inline float OpcMin(float a, float b) { return (a != a || b < a) ? b : a; }
__aicore__ inline float OpcBitsF32(int32_t b)
{
    union { int32_t i; float f; } u;
    u.i = b;
    return u.f;
}
__aicore__ inline int32_t OpcF32Bits(float f)
{
    union { int32_t i; float f; } u;
    u.f = f;
    return u.i;
}
__aicore__ inline float OpcAbs(float x) { return OpcBitsF32(OpcF32Bits(x) & 0x7fffffff); }
__aicore__ inline int64_t OpcAbsI(int64_t x) { return x < 0 ? -x : x; }
__aicore__ inline int32_t OpcWrap(int64_t x, int32_t bits, bool isSigned)
{
    if (bits >= 32) {
        return static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint64_t>(x)));
    }
    int64_t v = x & ((1LL << bits) - 1);
    if (isSigned && v >= (1LL << (bits - 1))) {
        v -= (1LL << bits);
    }
    return static_cast<int32_t>(v);
}
__aicore__ inline int64_t OpcDiv(int64_t a, int64_t b) { return b == 0 ? 0 : a / b; }
__aicore__ inline int64_t OpcRem(int64_t a, int64_t b) { return b == 0 ? 0 : a % b; }
__aicore__ inline int64_t OpcShl(int64_t x, int64_t y, int32_t bits)
{
    return (y >= 0 && y < bits) ? static_cast<int64_t>(static_cast<uint64_t>(x) << y) : 0;
}
__aicore__ inline int64_t OpcShr(int64_t x, int64_t y, int32_t bits)
{
    return (y >= 0 && y < bits) ? (x >> y) : (x < 0 ? -1 : 0);
}
__aicore__ inline int64_t OpcMaxI(int64_t a, int64_t b) { return a > b ? a : b; }
__aicore__ inline int64_t OpcMinI(int64_t a, int64_t b) { return a < b ? a : b; }
__aicore__ inline int32_t OpcClamp(int64_t x, int64_t lo, int64_t hi)
{
    return static_cast<int32_t>(x < lo ? lo : (x > hi ? hi : x));
}
// Tags of a tiling-mask cache (lower/tilemask.rs): the run-time parameters (clamped diagonal
// offsets, uniform conditions) each of SLOTS masks precomputed in UB was built for. Slots fill
// in order, then are reused round-robin; the tags outlive one level-1 program, like the masks.
template <int32_t SLOTS, int32_t KEYS>
struct OpcMaskTags {
    int64_t key[SLOTS][KEYS];
    int32_t filled = 0;
    int32_t next = 0;
    __aicore__ inline int32_t OpcFind(const int64_t* k) const
    {
        for (int32_t s = 0; s < filled; ++s) {
            bool same = true;
            for (int32_t i = 0; i < KEYS; ++i) {
                same = same && key[s][i] == k[i];
            }
            if (same) {
                return s;
            }
        }
        return -1;
    }
    __aicore__ inline int32_t OpcInsert(const int64_t* k)
    {
        const int32_t s = filled < SLOTS ? filled++ : next;
        next = (s + 1) % SLOTS;
        for (int32_t i = 0; i < KEYS; ++i) {
            key[s][i] = k[i];
        }
        return s;
    }
};
__aicore__ inline float OpcFloor(float x)
{
    if (!(x - x == 0.0f) || x >= 8388608.0f || x <= -8388608.0f) {
        return x;
    }
    const float f = static_cast<float>(static_cast<int64_t>(x));
    return f > x ? f - 1.0f : f;
}
__aicore__ inline float OpcRint(float x)
{
    if (!(x - x == 0.0f) || x >= 8388608.0f || x <= -8388608.0f) {
        return x;
    }
    float f = OpcFloor(x);
    const float d = x - f;
    if (d > 0.5f || (d == 0.5f && (static_cast<int64_t>(f) & 1) != 0)) {
        f += 1.0f;
    }
    return f;
}
__aicore__ inline int32_t OpcF2I(float x, int32_t mode, int64_t lo, int64_t hi)
{
    if (x != x) {
        return 0;
    }
    const float r = mode == 0 ? OpcRint(x) : mode == 1 ? (x < 0.0f ? -OpcFloor(-x) : OpcFloor(x)) : mode == 2 ? OpcFloor(x) : -OpcFloor(-x);
    if (r <= static_cast<float>(lo)) {
        return static_cast<int32_t>(lo);
    }
    if (r >= static_cast<float>(hi)) {
        return static_cast<int32_t>(hi);
    }
    return static_cast<int32_t>(static_cast<int64_t>(r));
}
__aicore__ inline float OpcE2M1(int32_t code)
{
    const float mag[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    return (code & 8) != 0 ? -mag[code & 7] : mag[code & 7];
}
__aicore__ inline float OpcE8M0(int32_t e)
{
    return e == 255 ? (kOpcInf - kOpcInf) : (e == 0 ? OpcBitsF32(0x00400000) : OpcBitsF32(e << 23));
}
// E2M1 code of x (OCP MX: RNE on the magnitude grid {0, .5, 1, 1.5, 2, 3, 4, 6}, saturating
// at 6, NaN -> +0); mode: 0 rne, 1 toward zero, 2 floor, 3 ceil.
__aicore__ inline int32_t OpcE2M1Enc(float x, int32_t mode)
{
    if (x != x) {
        return 0;
    }
    const float mag[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    const int32_t sign = (OpcF32Bits(x) < 0) ? 8 : 0;
    const float a = OpcAbs(x);
    const bool down = mode == 1 || (mode == 2 && sign == 0) || (mode == 3 && sign != 0);
    const bool up = (mode == 2 && sign != 0) || (mode == 3 && sign == 0);
    int32_t best = 7;
    if (a < 6.0f) {
        int32_t lo = 0;
        while (lo + 1 < 8 && mag[lo + 1] <= a) {
            ++lo;
        }
        const int32_t hi = lo + 1 < 7 ? lo + 1 : 7;
        const float dl = a - mag[lo];
        const float dh = mag[hi] - a;
        best = (a == mag[lo] || down) ? lo : up ? hi : dl < dh ? lo : dl > dh ? hi : (lo % 2 == 0 ? lo : hi);
    }
    return best | sign;
}
// Store one 4-bit code into a packed tensor (read-modify-write of its byte: programs must not
// share a byte, which holds when their boundaries along the packed dim are even).
template <typename G>
__aicore__ inline void OpcStoreNibble(G& gm, int64_t off, int32_t code)
{
    const int32_t b = gm.GetValue(off / 2);
    const int32_t v = (off % 2) != 0 ? ((b & 0x0F) | ((code & 15) << 4)) : ((b & 0xF0) | (code & 15));
    gm.SetValue(off / 2, static_cast<uint8_t>(v));
}
__aicore__ inline int32_t OpcNibble(int32_t byte, int64_t odd, bool isSigned)
{
    const int32_t v = odd != 0 ? ((byte >> 4) & 15) : (byte & 15);
    return (isSigned && v >= 8) ? v - 16 : v;
}

// Copy the POD tiling struct out of global memory.
template <typename T>
__aicore__ inline void CopyTiling(T* dst, GM_ADDR src)
{
    auto* d = reinterpret_cast<uint32_t*>(dst);
    auto* s = reinterpret_cast<__gm__ uint32_t*>(src);
    for (uint32_t i = 0; i < sizeof(T) / sizeof(uint32_t); ++i) {
        d[i] = s[i];
    }
}
"#;

fn print(stmts: &[Stmt], depth: usize, out: &mut String) {
    let pad = "    ".repeat(depth);
    for s in stmts {
        match s {
            Stmt::Line(l) => out.push_str(&format!("{pad}{l}\n")),
            Stmt::Comment(c) => out.push_str(&format!("{pad}// {c}\n")),
            Stmt::Instr(i) => {
                if i.text.is_empty() {
                    continue;
                }
                for l in i.text.lines() {
                    out.push_str(&format!("{pad}{l}\n"));
                }
            }
            Stmt::Loop { head, body } => {
                out.push_str(&format!("{pad}for ({head}) {{\n"));
                print(body, depth + 1, out);
                out.push_str(&format!("{pad}}}\n"));
            }
            Stmt::If { cond, then_, else_ } => {
                out.push_str(&format!("{pad}if ({cond}) {{\n"));
                print(then_, depth + 1, out);
                if else_.iter().any(|s| !matches!(s, Stmt::Instr(i) if i.text.is_empty())) {
                    out.push_str(&format!("{pad}}} else {{\n"));
                    print(else_, depth + 1, out);
                }
                out.push_str(&format!("{pad}}}\n"));
            }
        }
    }
}

/// GM element type of a tensor parameter.
fn gm_ctype(d: DType) -> &'static str {
    ctype(d)
}

struct Names {
    entry: String,
    class: String,
    tiling: String,
    shape: String,
    tiling_fn: String,
    launch: String,
}

fn names(k: &Kernel) -> Names {
    let c = camel(&k.name);
    Names {
        entry: k.name.clone(),
        class: format!("Kernel{c}"),
        tiling: format!("{c}TilingData"),
        shape: format!("{c}Shape"),
        tiling_fn: format!("{c}Tiling"),
        launch: format!("Launch{c}"),
    }
}

fn tensor_params(k: &Kernel) -> Vec<(usize, String, DType)> {
    k.params
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match &p.kind {
            ParamKind::Tensor { dtype, .. } => Some((i, p.name.clone(), *dtype)),
            _ => None,
        })
        .collect()
}

fn runtime_dims(k: &Kernel) -> Vec<String> {
    k.dims.iter().filter(|d| !(d.konst && d.value.is_some())).map(|d| d.name.clone()).collect()
}

/// Everything the emitter needs besides the IR.
pub struct EmitInput<'a> {
    pub prog: &'a lir::Kernel,
    pub usage: &'a Usage,
    pub mix: bool,
    /// Offsets of the A, B, C and zeros slots in a group's workspace, and the group's bytes.
    pub ws: (u64, u64, u64, u64, u64),
    /// Bytes of one C slot, and the number of pipelined sites (two C slots each after zeros).
    pub ws_c: u64,
    pub pipelined: usize,
    pub cores: u32,
}

pub fn emit(k: &Kernel, inp: &EmitInput) -> Sources {
    Sources { kernel_cpp: kernel_cpp(k, inp), tiling_h: tiling_h(k, inp), launch_cpp: launch_cpp(k, inp) }
}

fn kernel_cpp(k: &Kernel, inp: &EmitInput) -> String {
    let n = names(k);
    let p = inp.prog;
    let tensors = tensor_params(k);
    let mut s = String::new();
    s.push_str(&format!(
        "// {}.cpp: AscendC kernel for Ascend 910B (dav-c220), generated by opc {} from tile IR {}.\n",
        n.entry,
        env!("CARGO_PKG_VERSION"),
        crate::artifact::ir_hash(k)
    ));
    s.push_str(&format!("// Kernel type: {}.\n", if inp.mix { "MIX_AIC_1_2 (cube work on the AIC, vector work on the AIVs)" } else { "AIV_ONLY" }));
    let tun: Vec<String> = k.tunables.iter().map(|t| format!("{} = {} (level {})", t.name, t.value, t.level)).collect();
    if !tun.is_empty() {
        s.push_str(&format!("// Tunables: {}.\n", tun.join(", ")));
    }
    s.push_str(&format!("// UB: calc arena {} bytes", inp.usage.calc));
    for q in p.queues.iter().filter(|q| q.pos.space() == lir::Space::Ub) {
        s.push_str(&format!(", {} {} x {} bytes", q.name, q.num, q.bytes));
    }
    s.push_str(&format!(" = {} of {} bytes.\n", inp.usage.ub, lir::Space::Ub.capacity()));
    if inp.mix {
        s.push_str(&format!(
            "// AIC: L1 {} / {}, L0A {} / {}, L0B {} / {}, L0C {} / {} bytes; GM workspace {} bytes per group.\n",
            inp.usage.l1,
            lir::Space::L1.capacity(),
            inp.usage.l0a,
            lir::Space::L0a.capacity(),
            inp.usage.l0b,
            lir::Space::L0b.capacity(),
            inp.usage.l0c,
            lir::Space::L0c.capacity(),
            inp.ws.4
        ));
    }
    s.push_str(&format!("\n#include \"kernel_operator.h\"\n#include \"{}_tiling.h\"\n\nusing namespace AscendC;\n\nnamespace {{\n\n", n.entry));
    s.push_str(PRELUDE);
    if inp.mix {
        s.push_str(&format!(
            "\n// Cube <-> vector hand-off: cross-core flag ids and the GM workspace slots of one group.\nconstexpr int32_t kFlagOperands = {};\nconstexpr int32_t kFlagProduct = {};\nconstexpr uint64_t kWsA = {};\nconstexpr uint64_t kWsB = {};\nconstexpr uint64_t kWsC = {};\nconstexpr uint64_t kWsZ = {};  // zeros (the host zero-initializes the workspace)\nconstexpr uint64_t kWsGroupBytes = {};\n",
            super::lower::FLAG_OPERANDS,
            super::lower::FLAG_PRODUCT,
            inp.ws.0,
            inp.ws.1,
            inp.ws.2,
            inp.ws.3,
            inp.ws.4
        ));
        if inp.pipelined > 0 {
            s.push_str(&format!("// Look-ahead sites (the cube one loop step ahead): two C slots and a flag pair per slot each.\nconstexpr uint64_t kWsCBytes = {};\n", inp.ws_c));
            for q in 0..inp.pipelined {
                s.push_str(&format!(
                    "constexpr uint64_t kWsP{q} = {};\nconstexpr int32_t kFlagReady{q} = {};  // + slot: the product is in the slot\nconstexpr int32_t kFlagFree{q} = {};  // + slot: the vector cores have read the slot\n",
                    inp.ws.4 - 2 * inp.ws_c * (inp.pipelined - q) as u64,
                    super::lower::pipeline::ready_flag(q),
                    super::lower::pipeline::free_flag(q)
                ));
            }
        }
    }
    s.push_str("\n}  // namespace\n\n");
    // The class.
    s.push_str(&format!("class {} {{\npublic:\n    __aicore__ inline {}() {{}}\n\n", n.class, n.class));
    let gm_args: Vec<String> = tensors.iter().map(|(_, nm, _)| format!("GM_ADDR {nm}")).collect();
    s.push_str(&format!(
        "    __aicore__ inline void Init({}, GM_ADDR workspace, const {}& tiling)\n    {{\n        tiling_ = tiling;\n",
        gm_args.join(", "),
        n.tiling
    ));
    for (_, nm, d) in &tensors {
        let ct = gm_ctype(*d);
        s.push_str(&format!(
            "        {nm}Gm.SetGlobalBuffer(reinterpret_cast<__gm__ {ct}*>({nm}), static_cast<uint64_t>(tiling_.{nm}Bytes / sizeof({ct})));\n"
        ));
    }
    s.push_str("        workspace_ = workspace;\n");
    let ub_q: Vec<&lir::Queue> = p.queues.iter().filter(|q| q.core == lir::Core::Aiv).collect();
    let aic_q: Vec<&lir::Queue> = p.queues.iter().filter(|q| q.core == lir::Core::Aic).collect();
    let mut aiv_init = String::new();
    for q in &ub_q {
        aiv_init.push_str(&format!("pipe_.InitBuffer({}, {}, {});\n", q.name, q.num, q.bytes));
    }
    aiv_init.push_str(&format!("pipe_.InitBuffer(calcBuf_, {});\n", inp.usage.calc));
    aiv_init.push_str(&format!("scalarTmp_ = calcBuf_.GetWithOffset<float>(8, {});\n", inp.usage.calc - 256));
    let mut aic_init = String::new();
    for q in &aic_q {
        aic_init.push_str(&format!("pipe_.InitBuffer({}, {}, {});\n", q.name, q.num, q.bytes));
    }
    let indent = |t: &str, d: usize| t.lines().map(|l| format!("{}{l}\n", "    ".repeat(d))).collect::<String>();
    if inp.mix {
        s.push_str("        if ASCEND_IS_AIV {\n");
        s.push_str(&indent(&aiv_init, 3));
        s.push_str("        }\n        if ASCEND_IS_AIC {\n");
        s.push_str(&indent(&aic_init, 3));
        s.push_str("        }\n");
    } else {
        s.push_str(&indent(&aiv_init, 2));
    }
    s.push_str("    }\n\n");
    // Process: level-1 programs round-robin over the cores.
    s.push_str("    __aicore__ inline void Process()\n    {\n");
    s.push_str("        // Level-1 programs round-robin over the cores (blockDim <= number of programs).\n");
    s.push_str(
        "        const int64_t g0 = tiling_.grid0;\n        const int64_t g1 = tiling_.grid1;\n        const int64_t total = g0 * g1 * tiling_.grid2;\n",
    );
    if inp.mix {
        if p.split_rows.is_some() {
            s.push_str("        // One group (1 AIC + 2 AIV) per program: the AIC runs the cube program, each AIV the\n        // vector program on its half of the block's rows (GetSubBlockIdx()).\n");
        } else {
            s.push_str("        // One group (1 AIC + 2 AIV) per program; AIV 0 runs the vector program, AIV 1 the\n        // hand-off skeleton, the AIC the cube program.\n");
        }
        s.push_str("        const int64_t group = ASCEND_IS_AIV ? GetBlockIdx() / 2 : GetBlockIdx();\n");
        s.push_str("        wsBase_ = workspace_ + group * kWsGroupBytes;\n");
        s.push_str("        for (int64_t p = group; p < total; p += GetBlockNum()) {\n");
        s.push_str("            const int32_t pid0 = static_cast<int32_t>(p % g0);\n            const int32_t pid1 = static_cast<int32_t>((p / g0) % g1);\n            const int32_t pid2 = static_cast<int32_t>(p / (g0 * g1));\n");
        s.push_str("            if ASCEND_IS_AIC {\n                CubeProgram(pid0, pid1, pid2);\n            }\n");
        if p.split_rows.is_some() {
            s.push_str("            if ASCEND_IS_AIV {\n                Program(pid0, pid1, pid2);\n            }\n        }\n");
        } else {
            s.push_str("            if ASCEND_IS_AIV {\n                if (GetSubBlockIdx() == 0) {\n                    Program(pid0, pid1, pid2);\n                } else {\n                    PeerProgram(pid0, pid1, pid2);\n                }\n            }\n        }\n");
        }
    } else {
        s.push_str("        for (int64_t p = GetBlockIdx(); p < total; p += GetBlockNum()) {\n");
        s.push_str("            const int32_t pid0 = static_cast<int32_t>(p % g0);\n            const int32_t pid1 = static_cast<int32_t>((p / g0) % g1);\n            const int32_t pid2 = static_cast<int32_t>(p / (g0 * g1));\n");
        s.push_str("            Program(pid0, pid1, pid2);\n        }\n");
    }
    s.push_str("    }\n\nprivate:\n");
    // The vector program.
    s.push_str("    // One level-1 program on a vector core: CopyIn / Compute / CopyOut over UB tiles.\n");
    s.push_str("    __aicore__ inline void Program(int32_t pid0, int32_t pid1, int32_t pid2)\n    {\n");
    if let Some(h) = p.split_rows {
        s.push_str(&format!("        // This AIV's rows of the level-1 block: [subRow_, subRow_ + {h}).\n"));
        s.push_str(&format!("        const int32_t subRow_ = static_cast<int32_t>(GetSubBlockIdx()) * {h};\n"));
    }
    if !p.bufs.is_empty() {
        s.push_str("        // UB tiles of the calc arena (offsets planned by live range).\n");
    }
    for b in &p.bufs {
        s.push_str(&format!(
            "        LocalTensor<{}> {} = calcBuf_.GetWithOffset<{}>({}, {});  // {}\n",
            b.elem,
            b.name,
            b.elem,
            b.elems,
            b.off.unwrap_or(0),
            b.what
        ));
    }
    let mut body = String::new();
    print(&p.aiv, 2, &mut body);
    s.push_str(&body);
    s.push_str("        (void)pid0;\n        (void)pid1;\n        (void)pid2;\n    }\n\n");
    if let Some(aic) = &p.aic {
        s.push_str("    // The cube program of the same level-1 program: every dot, fed through the GM workspace.\n");
        s.push_str("    __aicore__ inline void CubeProgram(int32_t pid0, int32_t pid1, int32_t pid2)\n    {\n");
        let mut b = String::new();
        print(aic, 2, &mut b);
        s.push_str(&b);
        s.push_str("        (void)pid0;\n        (void)pid1;\n        (void)pid2;\n    }\n\n");
    }
    if let Some(peer) = &p.aiv_peer {
        s.push_str("    // AIV 1 of the group: the same control flow, taking part in every cube hand-off.\n");
        s.push_str("    __aicore__ inline void PeerProgram(int32_t pid0, int32_t pid1, int32_t pid2)\n    {\n");
        let mut b = String::new();
        print(peer, 2, &mut b);
        s.push_str(&b);
        s.push_str("        (void)pid0;\n        (void)pid1;\n        (void)pid2;\n    }\n\n");
    }
    // Scalar math through the vector unit.
    s.push_str(
        r#"    // The scalar unit has no transcendental instructions: one element through the vector unit.
    __aicore__ inline float ScalarMath(float x, int32_t fn)
    {
        PipeBarrier<PIPE_ALL>();
        scalarTmp_.SetValue(0, x);
        PipeBarrier<PIPE_ALL>();
        if (fn == 0) {
            Exp(scalarTmp_, scalarTmp_, 8);
        } else if (fn == 1) {
            Ln(scalarTmp_, scalarTmp_, 8);
        } else {
            Sqrt(scalarTmp_, scalarTmp_, 8);
        }
        PipeBarrier<PIPE_ALL>();
        return scalarTmp_.GetValue(0);
    }
    __aicore__ inline float ScalarExp(float x) { return ScalarMath(x, 0); }
    __aicore__ inline float ScalarLn(float x) { return ScalarMath(x, 1); }
    __aicore__ inline float ScalarSqrt(float x) { return ScalarMath(x, 2); }

"#,
    );
    // Members.
    s.push_str("    TPipe pipe_;\n");
    for q in &p.queues {
        s.push_str(&format!("    TQue<{}, {}> {};\n", q.pos.cpp(), q.depth, q.name));
    }
    s.push_str("    TBuf<TPosition::VECCALC> calcBuf_;\n    LocalTensor<float> scalarTmp_;\n");
    if p.once_prologue {
        s.push_str("    // The precomputed tiles of the calc arena are filled by the first program only.\n    bool prologueDone_ = false;\n");
    }
    for (i, (slots, keys)) in p.mask_tags.iter().enumerate() {
        s.push_str(&format!("    OpcMaskTags<{slots}, {keys}> maskTags{i}_;  // tiling-mask cache {i}\n"));
    }
    for (_, nm, d) in &tensors {
        s.push_str(&format!("    GlobalTensor<{}> {nm}Gm;\n", gm_ctype(*d)));
    }
    s.push_str("    GM_ADDR workspace_ = nullptr;\n    GM_ADDR wsBase_ = nullptr;\n");
    s.push_str(&format!("    {} tiling_;\n}};\n\n", n.tiling));
    // Entry.
    s.push_str(&format!("extern \"C\" __global__ __aicore__ void {}({}, GM_ADDR workspace, GM_ADDR tiling)\n{{\n", n.entry, gm_args.join(", ")));
    s.push_str(&format!("    KERNEL_TASK_TYPE_DEFAULT({});\n", if inp.mix { "KERNEL_TYPE_MIX_AIC_1_2" } else { "KERNEL_TYPE_AIV_ONLY" }));
    s.push_str(&format!("    {} tilingData;\n    CopyTiling(&tilingData, tiling);\n", n.tiling));
    let names_only: Vec<String> = tensors.iter().map(|(_, nm, _)| nm.clone()).collect();
    s.push_str(&format!("    {} op;\n    op.Init({}, workspace, tilingData);\n    op.Process();\n}}\n", n.class, names_only.join(", ")));
    // NPU launch helper.
    let u8args: Vec<String> = tensors.iter().map(|(_, nm, _)| format!("uint8_t* {nm}")).collect();
    s.push_str(&format!(
        "\n#ifndef ASCENDC_CPU_DEBUG\n// NPU launch, compiled with the kernel; called by {}_launch.cpp.\nvoid {}_do(uint32_t blockDim, void* stream, {}, uint8_t* workspace, uint8_t* tiling)\n{{\n    {}<<<blockDim, nullptr, stream>>>({}, workspace, tiling);\n}}\n#endif\n",
        n.entry,
        n.entry,
        u8args.join(", "),
        n.entry,
        names_only.join(", ")
    ));
    s
}

/// C++ for the grid block, with dims read from `shape`.
fn grid_cpp(k: &Kernel) -> (String, Vec<String>) {
    let mut lines = String::new();
    let mut vals: std::collections::HashMap<u32, String> = Default::default();
    let mut out = vec![];
    for op in &k.grid.ops {
        let e = match &op.kind {
            OpKind::Const(c) => super::lower::literal_of(*c, DType::I32),
            OpKind::Dim(sy) => {
                let d = &k.dims[sy.0 as usize];
                match d.value {
                    Some(v) if d.konst => v.to_string(),
                    _ => format!("static_cast<int64_t>(shape.{})", d.name),
                }
            }
            OpKind::Binary(b) => {
                let a = |i: usize| vals.get(&op.args[i].0).cloned().unwrap_or_default();
                let (x, y) = (a(0), a(1));
                match b {
                    opc_ir::BinaryOp::Add => format!("({x} + {y})"),
                    opc_ir::BinaryOp::Sub => format!("({x} - {y})"),
                    opc_ir::BinaryOp::Mul => format!("({x} * {y})"),
                    opc_ir::BinaryOp::Div => format!("({y} == 0 ? 0 : {x} / {y})"),
                    opc_ir::BinaryOp::Rem => format!("({y} == 0 ? 0 : {x} % {y})"),
                    opc_ir::BinaryOp::Max => format!("({x} > {y} ? {x} : {y})"),
                    opc_ir::BinaryOp::Min => format!("({x} < {y} ? {x} : {y})"),
                    _ => "0".into(),
                }
            }
            OpKind::Yield => {
                out = op.args.iter().map(|a| vals.get(&a.0).cloned().unwrap_or_else(|| "1".into())).collect();
                continue;
            }
            _ => "0".into(),
        };
        if let Some(r) = op.results.first() {
            let name = format!("g{}", r.0);
            lines.push_str(&format!("    const int64_t {name} = {e};\n"));
            vals.insert(r.0, name);
        }
    }
    (lines, out)
}

fn tiling_h(k: &Kernel, inp: &EmitInput) -> String {
    let n = names(k);
    let tensors = tensor_params(k);
    let dims = runtime_dims(k);
    let scalars: Vec<(String, DType)> = k
        .params
        .iter()
        .filter_map(|p| match p.kind {
            ParamKind::Scalar { dtype } => Some((p.name.clone(), dtype)),
            _ => None,
        })
        .collect();
    let mut s = format!(
        "// {}_tiling.h: host-side tiling of `{}` (generated by opc {}).\n#pragma once\n#include <cstdint>\n\n",
        n.entry,
        n.entry,
        env!("CARGO_PKG_VERSION")
    );
    s.push_str(&format!("// Computed on the host by {}(), copied to the device, read by the kernel.\nstruct {} {{\n", n.tiling_fn, n.tiling));
    for (_, nm, _) in &tensors {
        s.push_str(&format!("    int64_t {nm}Bytes;\n"));
    }
    for d in &dims {
        s.push_str(&format!("    int32_t {d};\n"));
    }
    s.push_str("    int32_t grid0;\n    int32_t grid1;\n    int32_t grid2;\n");
    for (nm, d) in &scalars {
        let t = if *d == DType::F32 { "float" } else { "int32_t" };
        s.push_str(&format!("    {t} {nm};\n"));
    }
    s.push_str("};\n\n");
    s.push_str(&format!("// The launch-time dims of `{}`.\nstruct {} {{\n", n.entry, n.shape));
    for d in &dims {
        s.push_str(&format!("    int32_t {d};\n"));
    }
    if dims.is_empty() {
        s.push_str("    int32_t unused;\n");
    }
    s.push_str("};\n\n");
    s.push_str(&format!(
        "constexpr uint32_t k{}Cores = {};  // {}\n",
        camel(&k.name),
        inp.cores,
        if inp.mix { "AI Core groups (1 AIC + 2 AIV) of a 910B2" } else { "vector cores of a 910B2" }
    ));
    s.push_str(&format!("constexpr uint64_t k{}WorkspaceGroupBytes = {};\n\n", camel(&k.name), inp.ws.4));
    let sargs: Vec<String> = scalars
        .iter()
        .map(|(nm, d)| {
            format!(
                "{} {nm}",
                if *d == DType::F32 {
                    "float"
                } else if *d == DType::Bool {
                    "bool"
                } else {
                    "int32_t"
                }
            )
        })
        .collect();
    let mut args = vec![format!("const {}& shape", n.shape)];
    args.extend(sargs);
    args.push(format!("{}* t", n.tiling));
    args.push("uint64_t* workspaceBytes".into());
    s.push_str("// Fill the tiling data; returns blockDim (cores to launch) and the GM workspace size. The\n// workspace must be zero-initialized (aclrtMemset) before the launch.\n");
    s.push_str(&format!("inline uint32_t {}({})\n{{\n", n.tiling_fn, args.join(", ")));
    for d in &dims {
        s.push_str(&format!("    t->{d} = shape.{d};\n"));
    }
    let (g, out) = grid_cpp(k);
    s.push_str(&g);
    for i in 0..3 {
        s.push_str(&format!("    t->grid{i} = static_cast<int32_t>({});\n", out.get(i).cloned().unwrap_or_else(|| "1".into())));
    }
    for (i, nm, d) in &tensors {
        let ParamKind::Tensor { dims: td, .. } = &k.params[*i].kind else { continue };
        let mut e = "static_cast<int64_t>(1)".to_string();
        for x in td {
            e = format!("{e} * static_cast<int64_t>({})", dim_host(k, x));
        }
        s.push_str(&format!("    t->{nm}Bytes = ({e} * {} + 7) / 8;\n", d.bits()));
    }
    for (nm, d) in &scalars {
        let v = if *d == DType::Bool { format!("{nm} ? 1 : 0") } else { nm.clone() };
        s.push_str(&format!("    t->{nm} = {v};\n"));
    }
    s.push_str("    const int64_t programs = static_cast<int64_t>(t->grid0) * t->grid1 * t->grid2;\n");
    s.push_str(&format!(
        "    const uint32_t blockDim = programs < k{c}Cores ? static_cast<uint32_t>(programs < 1 ? 1 : programs) : k{c}Cores;\n",
        c = camel(&k.name)
    ));
    s.push_str(&format!("    *workspaceBytes = static_cast<uint64_t>(blockDim) * k{}WorkspaceGroupBytes;\n    return blockDim;\n}}\n", camel(&k.name)));
    s
}

fn dim_host(k: &Kernel, e: &opc_ir::DimExpr) -> String {
    use opc_ir::DimExpr::*;
    match e {
        Sym(sy) => {
            let d = &k.dims[sy.0 as usize];
            match d.value {
                Some(v) if d.konst => v.to_string(),
                _ => format!("shape.{}", d.name),
            }
        }
        Const(c) => c.to_string(),
        Add(a, b) => format!("({} + {})", dim_host(k, a), dim_host(k, b)),
        Sub(a, b) => format!("({} - {})", dim_host(k, a), dim_host(k, b)),
        Mul(a, b) => format!("({} * {})", dim_host(k, a), dim_host(k, b)),
        Div(a, b) => format!("({} / {})", dim_host(k, a), dim_host(k, b)),
    }
}

fn launch_cpp(k: &Kernel, inp: &EmitInput) -> String {
    let n = names(k);
    let tensors = tensor_params(k);
    let gm: Vec<String> = tensors.iter().map(|(_, nm, _)| format!("GM_ADDR {nm}")).collect();
    let u8: Vec<String> = tensors.iter().map(|(_, nm, _)| format!("uint8_t* {nm}")).collect();
    let names_only: Vec<String> = tensors.iter().map(|(_, nm, _)| nm.clone()).collect();
    let mut s = format!("// {}_launch.cpp: host launch stub of `{}` (generated by opc {}).\n", n.entry, n.entry, env!("CARGO_PKG_VERSION"));
    s.push_str(&format!("#include \"{}_tiling.h\"\n\n#ifdef ASCENDC_CPU_DEBUG\n#include \"tikicpulib.h\"\n", n.entry));
    s.push_str(&format!("extern \"C\" __global__ __aicore__ void {}({}, GM_ADDR workspace, GM_ADDR tiling);\n#else\n", n.entry, gm.join(", ")));
    s.push_str(&format!("void {}_do(uint32_t blockDim, void* stream, {}, uint8_t* workspace, uint8_t* tiling);\n#endif\n\n", n.entry, u8.join(", ")));
    s.push_str(&format!(
        "// Launch on `stream` with blockDim from {}(): device tensors, a workspace of the size it\n// returned, and the tiling data copied to the device.\ninline void {}(uint32_t blockDim, void* stream, {}, uint8_t* workspace, uint8_t* tiling)\n{{\n",
        n.tiling_fn,
        n.launch,
        u8.join(", ")
    ));
    s.push_str("#ifdef ASCENDC_CPU_DEBUG\n    (void)stream;\n");
    s.push_str(&format!("    AscendC::SetKernelMode(KernelMode::{});\n", if inp.mix { "MIX_MODE" } else { "AIV_MODE" }));
    s.push_str(&format!("    ICPU_RUN_KF({}, blockDim, {}, workspace, tiling);\n#else\n", n.entry, names_only.join(", ")));
    s.push_str(&format!("    {}_do(blockDim, stream, {}, workspace, tiling);\n#endif\n}}\n", n.entry, names_only.join(", ")));
    s
}
