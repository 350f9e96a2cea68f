// opc's CPU model of the AscendC API subset that opc's AscendC backend emits
// (names and signatures of asc-devkit v8.5.0, Ascend 910B / arch 2201).
//
// Written for opc from the documented semantics of the API; it is not the vendor's
// implementation and shares no code with it. It exists so that emitted kernels can be
// compiled with g++ and run on a CPU, with the checks hardware would not give us:
//
//  - one thread per core: AIV-only kernels run blockDim vector cores; MIX_AIC_1_2 kernels run
//    blockDim groups of 1 AIC + 2 AIV (GetBlockIdx on an AIV is group * 2 + sub-block);
//  - per-position arenas with the real capacities (UB 192 KiB, L1 512 KiB, L0A / L0B 64 KiB,
//    L0C 128 KiB), filled with NaN bytes so that reading memory nothing wrote shows up;
//    allocation overflow, 32-byte misalignment and out-of-range element counts abort with a
//    message;
//  - fp16 / bf16 results are rounded (to nearest even) after every vector instruction;
//    Mmad multiplies and accumulates in fp32, k ascending;
//  - DataCopy of a byte count that is not a multiple of 32 aborts (the hardware silently
//    rounds it down);
//  - a pipe-hazard checker: every instruction runs on its pipe (S, V, M, MTE1, MTE2, MTE3,
//    FIX); an access to on-chip memory last written (or read) by another pipe must be ordered
//    after it by a queue hand-off (EnQue/DeQue, FreeTensor/AllocTensor), a SetFlag/WaitFlag
//    pair or PipeBarrier<PIPE_ALL>; anything else aborts naming both instructions;
//  - queue balance: a queue destroyed with tensors allocated or enqueued aborts;
//  - cross-core flags are counting semaphores per group (mode 0x2: an AIV's set counts for
//    the AIC of its group, whose wait needs one set from each of its two AIVs; an AIC's set
//    wakes both AIVs); a wait that can never be satisfied (every core of the group waits on
//    a flag nobody set, or has ended) aborts at once, naming each core's flag, and any wait
//    still unsatisfied after OPC_MODEL_FLAG_TIMEOUT seconds (default 20) aborts too;
//  - SetAtomicAdd makes UB -> GM copies add into GM under a global lock;
//  - instruction counts for tests (Compare, Select, Mmad calls per size), printed after a
//    launch when OPC_MODEL_COUNTS is set.
#pragma once

#include <array>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <vector>

#define __aicore__
#define __global__
#define __gm__
#define GM_ADDR uint8_t*

// ---------------------------------------------------------------------------------------------
// 16-bit floats
// ---------------------------------------------------------------------------------------------

namespace opc_model {

inline uint32_t F32Bits(float f)
{
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float BitsF32(uint32_t u)
{
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// Round to nearest even, with subnormals, overflow to infinity and NaN kept.
inline uint16_t F32ToF16(float f)
{
    const uint32_t x = F32Bits(f);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t absx = x & 0x7fffffffu;
    if (absx > 0x7f800000u) {
        return static_cast<uint16_t>(sign | 0x7e00u);
    }
    if (absx >= 0x477ff000u) {  // rounds to >= 65520: infinity
        return static_cast<uint16_t>(sign | 0x7c00u);
    }
    const int32_t exp = static_cast<int32_t>(absx >> 23) - 127;
    if (exp >= -14) {
        uint32_t mant = absx & 0x7fffffu;
        uint32_t h = static_cast<uint32_t>(exp + 15) << 10 | (mant >> 13);
        const uint32_t rest = mant & 0x1fffu;
        if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) {
            h += 1;
        }
        return static_cast<uint16_t>(sign | h);
    }
    // Subnormal (or zero): value = m * 2^-24.
    const double v = static_cast<double>(BitsF32(absx)) * 16777216.0;  // in units of 2^-24
    double r = std::nearbyint(v);                                        // ties to even (default mode)
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(r));
}

inline float F16ToF32(uint16_t h)
{
    const uint32_t sign = (h & 0x8000u) << 16;
    const uint32_t e = (h >> 10) & 0x1fu;
    const uint32_t m = h & 0x3ffu;
    if (e == 0) {
        const float v = static_cast<float>(m) * 5.9604644775390625e-08f;  // 2^-24
        return sign ? -v : v;
    }
    if (e == 31) {
        return BitsF32(sign | 0x7f800000u | (m << 13));
    }
    return BitsF32(sign | ((e + 112) << 23) | (m << 13));
}

inline uint16_t F32ToBf16(float f)
{
    const uint32_t x = F32Bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) {
        return static_cast<uint16_t>((x >> 16) | 0x40u);
    }
    return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

inline float Bf16ToF32(uint16_t b) { return BitsF32(static_cast<uint32_t>(b) << 16); }

}  // namespace opc_model

struct half {
    uint16_t bits = 0;
    half() = default;
    template <typename T, typename = std::enable_if_t<std::is_arithmetic<T>::value>>
    half(T v) : bits(opc_model::F32ToF16(static_cast<float>(v)))
    {
    }
    operator float() const { return opc_model::F16ToF32(bits); }
};

struct bfloat16_t {
    uint16_t bits = 0;
    bfloat16_t() = default;
    template <typename T, typename = std::enable_if_t<std::is_arithmetic<T>::value>>
    bfloat16_t(T v) : bits(opc_model::F32ToBf16(static_cast<float>(v)))
    {
    }
    operator float() const { return opc_model::Bf16ToF32(bits); }
};

// ---------------------------------------------------------------------------------------------
// Pipes, events, kernel types
// ---------------------------------------------------------------------------------------------

enum pipe_t { PIPE_S = 0, PIPE_V, PIPE_M, PIPE_MTE1, PIPE_MTE2, PIPE_MTE3, PIPE_FIX, PIPE_ALL };
enum event_t : int32_t { EVENT_ID0 = 0, EVENT_ID1, EVENT_ID2, EVENT_ID3, EVENT_ID4, EVENT_ID5, EVENT_ID6, EVENT_ID7 };

enum KernelType { KERNEL_TYPE_AIV_ONLY = 1, KERNEL_TYPE_AIC_ONLY = 2, KERNEL_TYPE_MIX_AIC_1_2 = 3 };
enum class KernelMode { AIV_MODE, AIC_MODE, MIX_MODE };

namespace AscendC {

enum class TPosition { GM, VECIN, VECOUT, VECCALC, A1, A2, B1, B2, CO1, CO2 };

enum class HardEvent {
    MTE2_V, V_MTE2, MTE3_V, V_MTE3, V_S, S_V, MTE2_S, S_MTE2, MTE3_S, S_MTE3, MTE2_MTE3, MTE3_MTE2,
    MTE2_MTE1, MTE1_MTE2, MTE1_M, M_MTE1, M_FIX, FIX_M, FIX_MTE2, MTE2_FIX, FIX_S, S_FIX, M_V, V_M
};

enum class RoundMode { CAST_NONE = 0, CAST_RINT, CAST_FLOOR, CAST_CEIL, CAST_ROUND, CAST_TRUNC, CAST_ODD };
enum class CMPMODE { LT = 0, GT, EQ, LE, GE, NE };
enum class SELMODE { VSEL_CMPMASK_SPR = 0, VSEL_TENSOR_SCALAR_MODE, VSEL_TENSOR_TENSOR_MODE };
enum class QuantMode_t { NoQuant = 0, F322F16, F322BF16, DEQF16 };

namespace detail {

constexpr int kPipes = 7;
using Clock = std::array<uint64_t, kPipes>;

inline const char* PipeName(int p)
{
    static const char* const names[] = {"PIPE_S", "PIPE_V", "PIPE_M", "PIPE_MTE1", "PIPE_MTE2", "PIPE_MTE3", "PIPE_FIX"};
    return p >= 0 && p < kPipes ? names[p] : "PIPE_ALL";
}

enum Space { UB = 0, L1, L0A, L0B, L0C, kSpaces };

inline uint64_t Capacity(int s)
{
    static const uint64_t caps[] = {192 * 1024, 512 * 1024, 64 * 1024, 64 * 1024, 128 * 1024};
    return caps[s];
}
inline const char* SpaceName(int s)
{
    static const char* const names[] = {"UB", "L1", "L0A", "L0B", "L0C"};
    return names[s];
}

inline int SpaceOf(TPosition p)
{
    switch (p) {
        case TPosition::VECIN:
        case TPosition::VECOUT:
        case TPosition::VECCALC:
            return UB;
        case TPosition::A1:
        case TPosition::B1:
            return L1;
        case TPosition::A2:
            return L0A;
        case TPosition::B2:
            return L0B;
        default:
            return L0C;
    }
}

// (producer pipe, consumer pipe) of a queue at this position.
inline std::pair<int, int> QueuePipes(TPosition p)
{
    switch (p) {
        case TPosition::VECIN:
            return {PIPE_MTE2, PIPE_V};
        case TPosition::VECOUT:
            return {PIPE_V, PIPE_MTE3};
        case TPosition::A1:
        case TPosition::B1:
            return {PIPE_MTE2, PIPE_MTE1};
        case TPosition::A2:
        case TPosition::B2:
            return {PIPE_MTE1, PIPE_M};
        case TPosition::CO1:
            return {PIPE_M, PIPE_FIX};
        default:
            return {PIPE_V, PIPE_V};
    }
}

struct Group;

// One AI core's state (thread-local).
struct Core {
    bool aiv = true;
    int64_t blockIdx = 0;
    int64_t blockNum = 1;
    int64_t subIdx = 0;
    Group* group = nullptr;
    // Arenas.
    std::vector<uint8_t> storage[kSpaces];
    uint8_t* base[kSpaces] = {};
    uint64_t used[kSpaces] = {};
    // Hazard tracking, one record per 32-byte block.
    struct Block {
        int8_t wpipe = -1;
        uint64_t wclock = 0;
        uint64_t rclock[kPipes] = {};
    };
    std::vector<Block> blocks[kSpaces];
    uint64_t clock = 0;
    Clock vc[kPipes] = {};
    std::map<std::tuple<int, int, int>, std::deque<Clock>> flags;
    int atomic = 0;  // 0: none, 1: float, 2: half, 3: int32, 4: bf16
    // Cross-core happens-before within the group: one epoch per core (0: the AIC, 1 + s: AIV
    // sub-block s); a CrossCoreSetFlag publishes this clock, the matching wait joins it.
    uint64_t xvc[3] = {1, 1, 1};
    int GroupSlot() const { return aiv ? 1 + static_cast<int>(subIdx) : 0; }
};

inline Core*& CurrentCorePtr()
{
    static thread_local Core* c = nullptr;
    return c;
}
inline Core& CurrentCore()
{
    Core* c = CurrentCorePtr();
    if (c == nullptr) {
        std::fprintf(stderr, "ascendc-model: error: AscendC API called outside a kernel launch\n");
        std::_Exit(70);
    }
    return *c;
}

[[noreturn]] inline void Fail(const char* fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    Core* c = CurrentCorePtr();
    if (c != nullptr) {
        std::fprintf(stderr, "ascendc-model: error on %s %lld (sub-block %lld): %s\n", c->aiv ? "AIV" : "AIC", static_cast<long long>(c->blockIdx),
                     static_cast<long long>(c->subIdx), buf);
    } else {
        std::fprintf(stderr, "ascendc-model: error: %s\n", buf);
    }
    std::fflush(stderr);
    std::_Exit(70);
}

// Instruction counts (test instrumentation, not AscendC API): calls per (API, size) over a
// launch, printed by RunKernel as `model-count API SIZE CALLS` lines when OPC_MODEL_COUNTS is
// set. Size: the element count of a vector instruction, m * n * k of an Mmad.
struct InstrCounts {
    std::mutex mu;
    std::map<std::pair<std::string, uint64_t>, uint64_t> calls;
};
inline InstrCounts& Counts()
{
    static InstrCounts c;
    return c;
}
inline void Count(const char* api, uint64_t size)
{
    InstrCounts& c = Counts();
    std::lock_guard<std::mutex> lock(c.mu);
    ++c.calls[{api, size}];
}

inline void Join(Clock& a, const Clock& b)
{
    for (int i = 0; i < kPipes; ++i) {
        a[i] = a[i] > b[i] ? a[i] : b[i];
    }
}

// Start an instruction on pipe `p`.
inline void Issue(int p)
{
    Core& c = CurrentCore();
    c.clock += 1;
    c.vc[p][p] = c.clock;
}

// Which arena holds `ptr`, and its byte offset there (-1: not on chip).
inline int Locate(const void* ptr, uint64_t* off)
{
    Core& c = CurrentCore();
    const uint8_t* q = static_cast<const uint8_t*>(ptr);
    for (int s = 0; s < kSpaces; ++s) {
        if (c.base[s] != nullptr && q >= c.base[s] && q < c.base[s] + Capacity(s)) {
            *off = static_cast<uint64_t>(q - c.base[s]);
            return s;
        }
    }
    return -1;
}

// Record an access of `bytes` bytes at `ptr` by pipe `p` and check the hazard rule.
inline void Access(int p, const void* ptr, uint64_t bytes, bool write, const char* what)
{
    if (bytes == 0) {
        return;
    }
    uint64_t off = 0;
    const int s = Locate(ptr, &off);
    if (s < 0) {
        return;
    }
    Core& c = CurrentCore();
    if (off + bytes > Capacity(s)) {
        Fail("%s: %s access [%llu, %llu) past the end of %s (%llu bytes)", what, write ? "write" : "read", static_cast<unsigned long long>(off),
             static_cast<unsigned long long>(off + bytes), SpaceName(s), static_cast<unsigned long long>(Capacity(s)));
    }
    auto& blocks = c.blocks[s];
    for (uint64_t b = off / 32; b <= (off + bytes - 1) / 32; ++b) {
        Core::Block& k = blocks[b];
        if (k.wpipe >= 0 && k.wpipe != p && c.vc[p][k.wpipe] < k.wclock) {
            Fail("pipe hazard: %s %s %s bytes [%llu, %llu) last written by %s without a queue hand-off, flag pair or barrier (%s)",
                 PipeName(p), write ? "overwrites" : "reads", SpaceName(s), static_cast<unsigned long long>(b * 32),
                 static_cast<unsigned long long>(b * 32 + 32), PipeName(k.wpipe), what);
        }
        if (write) {
            for (int q = 0; q < kPipes; ++q) {
                if (q != p && k.rclock[q] > c.vc[p][q]) {
                    Fail("pipe hazard: %s overwrites %s bytes [%llu, %llu) still being read by %s without a queue hand-off, flag pair or barrier (%s)",
                         PipeName(p), SpaceName(s), static_cast<unsigned long long>(b * 32), static_cast<unsigned long long>(b * 32 + 32),
                         PipeName(q), what);
                }
            }
            k.wpipe = static_cast<int8_t>(p);
            k.wclock = c.clock;
            for (int q = 0; q < kPipes; ++q) {
                k.rclock[q] = 0;
            }
        } else if (p != PIPE_S) {
            // Scalar reads complete before the scalar unit issues the next instruction.
            k.rclock[p] = c.clock;
        }
    }
}

inline void CheckAligned(const void* ptr, const char* what)
{
    uint64_t off = 0;
    const int s = Locate(ptr, &off);
    if (s >= 0 && off % 32 != 0) {
        Fail("%s: %s address offset %llu is not 32-byte aligned", what, SpaceName(s), static_cast<unsigned long long>(off));
    }
}

inline uint8_t* Allocate(int s, uint64_t bytes, const char* what)
{
    Core& c = CurrentCore();
    if (c.base[s] == nullptr) {
        c.storage[s].assign(Capacity(s) + 64, 0xFF);  // poison: NaN in every float type
        uintptr_t p = reinterpret_cast<uintptr_t>(c.storage[s].data());
        c.base[s] = reinterpret_cast<uint8_t*>((p + 63) & ~static_cast<uintptr_t>(63));
        c.blocks[s].assign(Capacity(s) / 32, Core::Block{});
    }
    if (bytes % 32 != 0) {
        Fail("%s: buffer of %llu bytes is not a multiple of 32 bytes", what, static_cast<unsigned long long>(bytes));
    }
    if (c.used[s] + bytes > Capacity(s)) {
        Fail("%s: %s overflow: %llu bytes in use + %llu requested > %llu available", what, SpaceName(s), static_cast<unsigned long long>(c.used[s]),
             static_cast<unsigned long long>(bytes), static_cast<unsigned long long>(Capacity(s)));
    }
    uint8_t* p = c.base[s] + c.used[s];
    c.used[s] += bytes;
    return p;
}

// Cross-core flags of one group (mode 0x2): a counting semaphore per (receiver, flag), each
// pending set carrying the setter's cross-core clock.
using XClock = std::array<uint64_t, 3>;
struct Group {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<XClock> aicFlags[16][2];
    std::deque<XClock> aivFlags[2][16];
    // Per slot (0: the AIC, 1 + s: AIV sub-block s): the flag its core waits on (-1: running),
    // and whether it has ended. Read and written under `mu`.
    int waitingOn[3] = {-1, -1, -1};
    bool ended[3] = {false, false, false};

    // Whether slot `s` may pass a wait on `flag` now.
    bool Ready(int s, int flag) const
    {
        return s == 0 ? (!aicFlags[flag][0].empty() && !aicFlags[flag][1].empty()) : !aivFlags[s - 1][flag].empty();
    }
    // Every core has ended or waits on a flag no one has set: no core can set one any more, so
    // the group hangs (flags never cross groups in mode 0x2). Timing-independent, unlike a timeout.
    bool Stuck() const
    {
        for (int s = 0; s < 3; ++s) {
            if (!ended[s] && (waitingOn[s] < 0 || Ready(s, waitingOn[s]))) {
                return false;
            }
        }
        return true;
    }
};

// The GM workspace race detector: the driver registers the workspace (opc_model::TrackGm);
// every access to it is checked against the last write and the reads since, one record per
// 32-byte block. Two accesses of different cores of a group, at least one a write, must be
// ordered by cross-core flags (the reader / writer's epoch is known to the other core);
// anything else is a race the hardware would not forgive.
struct GmShadow {
    std::mutex mu;
    uint8_t* begin = nullptr;
    uint64_t bytes = 0;
    struct Rec {
        const Group* group = nullptr;
        int8_t wslot = -1;
        uint64_t wepoch = 0;
        uint64_t repoch[3] = {};
    };
    std::vector<Rec> recs;
};
inline GmShadow& Shadow()
{
    static GmShadow s;
    return s;
}

inline const char* SlotName(int s) { return s == 0 ? "the AIC" : (s == 1 ? "AIV sub-block 0" : "AIV sub-block 1"); }

inline void GmAccess(const void* ptr, uint64_t bytes, bool write, const char* what)
{
    GmShadow& sh = Shadow();
    const uint8_t* p = static_cast<const uint8_t*>(ptr);
    if (bytes == 0 || sh.begin == nullptr || p + bytes <= sh.begin || p >= sh.begin + sh.bytes) {
        return;
    }
    Core& c = CurrentCore();
    if (c.group == nullptr) {
        return;
    }
    const int me = c.GroupSlot();
    std::lock_guard<std::mutex> lk(sh.mu);
    const uint64_t lo = (p < sh.begin ? 0 : static_cast<uint64_t>(p - sh.begin)) / 32;
    const uint64_t end = static_cast<uint64_t>(p + bytes - sh.begin);
    const uint64_t hi = ((end < sh.bytes ? end : sh.bytes) + 31) / 32;
    for (uint64_t b = lo; b < hi; ++b) {
        GmShadow::Rec& r = sh.recs[b];
        if (r.group != nullptr && r.group != c.group) {
            Fail("%s: GM workspace bytes [%llu, %llu) are used by two AI Core groups", what, static_cast<unsigned long long>(b * 32),
                 static_cast<unsigned long long>(b * 32 + 32));
        }
        r.group = c.group;
        if (r.wslot >= 0 && r.wslot != me && r.wepoch > c.xvc[r.wslot]) {
            Fail("cross-core race: %s %s GM workspace bytes [%llu, %llu) written by %s without a cross-core flag in between (%s)", SlotName(me),
                 write ? "overwrites" : "reads", static_cast<unsigned long long>(b * 32), static_cast<unsigned long long>(b * 32 + 32), SlotName(r.wslot), what);
        }
        if (write) {
            for (int q = 0; q < 3; ++q) {
                if (q != me && r.repoch[q] > c.xvc[q]) {
                    Fail("cross-core race: %s overwrites GM workspace bytes [%llu, %llu) that %s reads without a cross-core flag in between (%s)", SlotName(me),
                         static_cast<unsigned long long>(b * 32), static_cast<unsigned long long>(b * 32 + 32), SlotName(q), what);
                }
            }
            r.wslot = static_cast<int8_t>(me);
            r.wepoch = c.xvc[me];
            for (auto& e : r.repoch) {
                e = 0;
            }
        } else if (r.repoch[me] < c.xvc[me]) {
            r.repoch[me] = c.xvc[me];
        }
    }
}

inline std::mutex& AtomicLock()
{
    static std::mutex m;
    return m;
}

inline KernelMode& Mode()
{
    static KernelMode m = KernelMode::AIV_MODE;
    return m;
}

inline double FlagTimeout()
{
    const char* e = std::getenv("OPC_MODEL_FLAG_TIMEOUT");
    return e != nullptr ? std::atof(e) : 20.0;
}

}  // namespace detail

inline void SetKernelMode(KernelMode m) { detail::Mode() = m; }

inline int64_t GetBlockIdx() { return detail::CurrentCore().blockIdx; }
inline int64_t GetBlockNum() { return detail::CurrentCore().blockNum; }
inline int64_t GetSubBlockIdx() { return detail::CurrentCore().subIdx; }

// ---------------------------------------------------------------------------------------------
// Tensors
// ---------------------------------------------------------------------------------------------

template <typename T>
class LocalTensor {
public:
    LocalTensor() = default;
    LocalTensor(T* p, uint32_t n, TPosition pos) : ptr_(p), size_(n), pos_(pos) {}
    LocalTensor operator[](uint32_t off) const
    {
        if (off > size_) {
            detail::Fail("LocalTensor[%u]: offset past the tensor's %u elements", off, size_);
        }
        return LocalTensor(ptr_ + off, size_ - off, pos_);
    }
    T GetValue(uint32_t i) const
    {
        Check(i, "GetValue");
        detail::Issue(PIPE_S);
        detail::Access(PIPE_S, ptr_ + i, sizeof(T), false, "LocalTensor::GetValue");
        return ptr_[i];
    }
    void SetValue(uint32_t i, T v) const
    {
        Check(i, "SetValue");
        detail::Issue(PIPE_S);
        detail::Access(PIPE_S, ptr_ + i, sizeof(T), true, "LocalTensor::SetValue");
        ptr_[i] = v;
    }
    uint32_t GetSize() const { return size_; }
    TPosition GetPosition() const { return pos_; }
    // The same bytes viewed as another element type.
    template <typename U>
    LocalTensor<U> ReinterpretCast() const
    {
        return LocalTensor<U>(reinterpret_cast<U*>(ptr_), static_cast<uint32_t>(static_cast<uint64_t>(size_) * sizeof(T) / sizeof(U)), pos_);
    }
    T* Data() const { return ptr_; }

private:
    void Check(uint32_t i, const char* what) const
    {
        if (i >= size_) {
            detail::Fail("LocalTensor::%s(%u) out of the tensor's %u elements", what, i, size_);
        }
    }
    T* ptr_ = nullptr;
    uint32_t size_ = 0;
    TPosition pos_ = TPosition::VECCALC;
};

template <typename T>
class GlobalTensor {
public:
    void SetGlobalBuffer(__gm__ T* p, uint64_t n)
    {
        ptr_ = p;
        size_ = n;
    }
    void SetGlobalBuffer(__gm__ T* p)
    {
        ptr_ = p;
        size_ = UINT64_MAX / 2;
    }
    GlobalTensor operator[](uint64_t off) const
    {
        GlobalTensor g;
        g.ptr_ = ptr_ + off;
        g.size_ = off <= size_ ? size_ - off : 0;
        return g;
    }
    T GetValue(uint64_t i) const
    {
        Check(i, 1, false, "GlobalTensor::GetValue");
        return ptr_[i];
    }
    // Non-const, as in asc-devkit (`GlobalTensor::SetValue` is not a const member there).
    void SetValue(uint64_t i, T v)
    {
        Check(i, 1, true, "GlobalTensor::SetValue");
        ptr_[i] = v;
    }
    // Bounds of an access of elements [i, i + n), and the cross-core race check.
    void Check(uint64_t i, uint64_t n, bool write, const char* what) const
    {
        detail::GmAccess(ptr_ + i, n * sizeof(T), write, what);
        if (i + n > size_) {
            detail::Fail("%s: elements [%llu, %llu) out of the %llu of this global tensor", what, static_cast<unsigned long long>(i),
                         static_cast<unsigned long long>(i + n), static_cast<unsigned long long>(size_));
        }
    }
    T* Data() const { return ptr_; }

private:
    T* ptr_ = nullptr;
    uint64_t size_ = 0;
};

// ---------------------------------------------------------------------------------------------
// TPipe, TQue, TBuf
// ---------------------------------------------------------------------------------------------

template <TPosition POS, int32_t DEPTH>
class TQue {
public:
    ~TQue()
    {
        if (detail::CurrentCorePtr() == nullptr) {
            return;
        }
        for (auto& b : bufs_) {
            if (b.out) {
                detail::Fail("queue balance: a TQue is destroyed with a tensor still allocated (AllocTensor without FreeTensor)");
            }
        }
        if (!queued_.empty()) {
            detail::Fail("queue balance: a TQue is destroyed with %zu tensor(s) enqueued and never dequeued", queued_.size());
        }
    }
    template <typename T>
    LocalTensor<T> AllocTensor()
    {
        for (size_t n = 0; n < bufs_.size(); ++n) {
            auto& b = bufs_[(next_ + n) % bufs_.size()];
            if (!b.out) {
                b.out = true;
                next_ = (next_ + n + 1) % bufs_.size();
                const int prod = detail::QueuePipes(POS).first;
                detail::Join(detail::CurrentCore().vc[prod], b.back);
                return LocalTensor<T>(reinterpret_cast<T*>(b.ptr), static_cast<uint32_t>(bytes_ / sizeof(T)), POS);
            }
        }
        detail::Fail("AllocTensor: all %zu buffers of the queue are in use (FreeTensor missing?)", bufs_.size());
    }
    template <typename T>
    void EnQue(const LocalTensor<T>& t)
    {
        if (static_cast<int32_t>(queued_.size()) >= DEPTH) {
            detail::Fail("EnQue: the queue's depth %d is exceeded", DEPTH);
        }
        auto& b = Find(t.Data(), "EnQue");
        b.fwd = detail::CurrentCore().vc[detail::QueuePipes(POS).first];
        queued_.push_back(&b);
    }
    template <typename T>
    LocalTensor<T> DeQue()
    {
        if (queued_.empty()) {
            detail::Fail("DeQue on an empty queue (EnQue missing?)");
        }
        auto* b = queued_.front();
        queued_.pop_front();
        detail::Join(detail::CurrentCore().vc[detail::QueuePipes(POS).second], b->fwd);
        return LocalTensor<T>(reinterpret_cast<T*>(b->ptr), static_cast<uint32_t>(bytes_ / sizeof(T)), POS);
    }
    template <typename T>
    void FreeTensor(const LocalTensor<T>& t)
    {
        auto& b = Find(t.Data(), "FreeTensor");
        if (!b.out) {
            detail::Fail("FreeTensor of a tensor that is not allocated");
        }
        b.out = false;
        b.back = detail::CurrentCore().vc[detail::QueuePipes(POS).second];
    }
    void Init(uint8_t* base, int32_t num, uint64_t bytes)
    {
        bytes_ = bytes;
        for (int32_t i = 0; i < num; ++i) {
            bufs_.push_back(Buf{base + i * bytes, false, {}, {}});
        }
    }

private:
    struct Buf {
        uint8_t* ptr;
        bool out;
        detail::Clock fwd;
        detail::Clock back;
    };
    Buf& Find(const void* p, const char* what)
    {
        for (auto& b : bufs_) {
            if (b.ptr == p) {
                return b;
            }
        }
        detail::Fail("%s: the tensor does not belong to this queue", what);
    }
    std::vector<Buf> bufs_;
    std::deque<Buf*> queued_;
    uint64_t bytes_ = 0;
    size_t next_ = 0;
};

template <TPosition POS>
class TBuf {
public:
    template <typename T>
    LocalTensor<T> Get() const
    {
        return LocalTensor<T>(reinterpret_cast<T*>(ptr_), static_cast<uint32_t>(bytes_ / sizeof(T)), POS);
    }
    template <typename T>
    LocalTensor<T> Get(uint32_t len) const
    {
        if (len * sizeof(T) > bytes_) {
            detail::Fail("TBuf::Get(%u): more than the buffer's %llu bytes", len, static_cast<unsigned long long>(bytes_));
        }
        return LocalTensor<T>(reinterpret_cast<T*>(ptr_), len, POS);
    }
    template <typename T>
    LocalTensor<T> GetWithOffset(uint32_t size, uint32_t bufOffset) const
    {
        if (bufOffset % 32 != 0) {
            detail::Fail("TBuf::GetWithOffset: offset %u is not 32-byte aligned", bufOffset);
        }
        if (bufOffset + static_cast<uint64_t>(size) * sizeof(T) > bytes_) {
            detail::Fail("TBuf::GetWithOffset(%u, %u): past the buffer's %llu bytes", size, bufOffset, static_cast<unsigned long long>(bytes_));
        }
        return LocalTensor<T>(reinterpret_cast<T*>(ptr_ + bufOffset), size, POS);
    }
    void Init(uint8_t* p, uint64_t bytes)
    {
        ptr_ = p;
        bytes_ = bytes;
    }

private:
    uint8_t* ptr_ = nullptr;
    uint64_t bytes_ = 0;
};

class TPipe {
public:
    TPipe()
    {
        auto& c = detail::CurrentCore();
        for (int s = 0; s < detail::kSpaces; ++s) {
            c.used[s] = 0;
        }
    }
    template <TPosition POS, int32_t DEPTH>
    void InitBuffer(TQue<POS, DEPTH>& q, int32_t num, uint32_t len)
    {
        const uint64_t bytes = (static_cast<uint64_t>(len) + 31) / 32 * 32;
        q.Init(detail::Allocate(detail::SpaceOf(POS), bytes * num, "TPipe::InitBuffer(TQue)"), num, bytes);
    }
    template <TPosition POS>
    void InitBuffer(TBuf<POS>& b, uint32_t len)
    {
        const uint64_t bytes = (static_cast<uint64_t>(len) + 31) / 32 * 32;
        b.Init(detail::Allocate(detail::SpaceOf(POS), bytes, "TPipe::InitBuffer(TBuf)"), bytes);
    }
};

// ---------------------------------------------------------------------------------------------
// Synchronization
// ---------------------------------------------------------------------------------------------

namespace detail {
inline std::pair<int, int> EventPipes(HardEvent e)
{
    switch (e) {
        case HardEvent::MTE2_V: return {PIPE_MTE2, PIPE_V};
        case HardEvent::V_MTE2: return {PIPE_V, PIPE_MTE2};
        case HardEvent::MTE3_V: return {PIPE_MTE3, PIPE_V};
        case HardEvent::V_MTE3: return {PIPE_V, PIPE_MTE3};
        case HardEvent::V_S: return {PIPE_V, PIPE_S};
        case HardEvent::S_V: return {PIPE_S, PIPE_V};
        case HardEvent::MTE2_S: return {PIPE_MTE2, PIPE_S};
        case HardEvent::S_MTE2: return {PIPE_S, PIPE_MTE2};
        case HardEvent::MTE3_S: return {PIPE_MTE3, PIPE_S};
        case HardEvent::S_MTE3: return {PIPE_S, PIPE_MTE3};
        case HardEvent::MTE2_MTE3: return {PIPE_MTE2, PIPE_MTE3};
        case HardEvent::MTE3_MTE2: return {PIPE_MTE3, PIPE_MTE2};
        case HardEvent::MTE2_MTE1: return {PIPE_MTE2, PIPE_MTE1};
        case HardEvent::MTE1_MTE2: return {PIPE_MTE1, PIPE_MTE2};
        case HardEvent::MTE1_M: return {PIPE_MTE1, PIPE_M};
        case HardEvent::M_MTE1: return {PIPE_M, PIPE_MTE1};
        case HardEvent::M_FIX: return {PIPE_M, PIPE_FIX};
        case HardEvent::FIX_M: return {PIPE_FIX, PIPE_M};
        case HardEvent::FIX_MTE2: return {PIPE_FIX, PIPE_MTE2};
        case HardEvent::MTE2_FIX: return {PIPE_MTE2, PIPE_FIX};
        case HardEvent::FIX_S: return {PIPE_FIX, PIPE_S};
        case HardEvent::S_FIX: return {PIPE_S, PIPE_FIX};
        case HardEvent::M_V: return {PIPE_M, PIPE_V};
        case HardEvent::V_M: return {PIPE_V, PIPE_M};
    }
    return {PIPE_S, PIPE_S};
}
}  // namespace detail

template <HardEvent E>
inline void SetFlag(int32_t eventID)
{
    const auto pp = detail::EventPipes(E);
    detail::Issue(pp.first);
    auto& c = detail::CurrentCore();
    c.flags[std::make_tuple(pp.first, pp.second, eventID)].push_back(c.vc[pp.first]);
}

template <HardEvent E>
inline void WaitFlag(int32_t eventID)
{
    const auto pp = detail::EventPipes(E);
    auto& c = detail::CurrentCore();
    auto& q = c.flags[std::make_tuple(pp.first, pp.second, eventID)];
    if (q.empty()) {
        detail::Fail("WaitFlag<%s -> %s>(%d) with no matching SetFlag: the pipe would wait forever", detail::PipeName(pp.first),
                     detail::PipeName(pp.second), eventID);
    }
    detail::Join(c.vc[pp.second], q.front());
    q.pop_front();
    detail::Issue(pp.second);
}

template <pipe_t P>
inline void PipeBarrier()
{
    auto& c = detail::CurrentCore();
    c.clock += 1;
    if (P == PIPE_ALL) {
        // Every pipe drains: everything issued so far is complete for everyone.
        for (auto& row : c.vc) {
            row.fill(c.clock);
        }
    }
}

template <uint8_t MODE, pipe_t P>
inline void CrossCoreSetFlag(uint16_t flagId)
{
    static_assert(MODE == 0x2, "the model implements mode 0x2 (within a group) only");
    auto& c = detail::CurrentCore();
    if (c.group == nullptr || flagId >= 16) {
        detail::Fail("CrossCoreSetFlag(%u) outside a MIX group or with an id >= 16", flagId);
    }
    detail::Group& g = *c.group;
    detail::XClock clk = {c.xvc[0], c.xvc[1], c.xvc[2]};
    c.xvc[c.GroupSlot()] += 1;
    {
        std::lock_guard<std::mutex> lk(g.mu);
        if (c.aiv) {
            auto& q = g.aicFlags[flagId][c.subIdx];
            q.push_back(clk);
            if (q.size() > 15) {
                detail::Fail("CrossCoreSetFlag(%u): the AIC's flag counter overflows (more than 15 sets without a wait)", flagId);
            }
        } else {
            for (int s = 0; s < 2; ++s) {
                auto& q = g.aivFlags[s][flagId];
                q.push_back(clk);
                if (q.size() > 15) {
                    detail::Fail("CrossCoreSetFlag(%u): an AIV's flag counter overflows (more than 15 sets without a wait)", flagId);
                }
            }
        }
    }
    g.cv.notify_all();
}

inline void CrossCoreWaitFlag(uint16_t flagId)
{
    auto& c = detail::CurrentCore();
    if (c.group == nullptr || flagId >= 16) {
        detail::Fail("CrossCoreWaitFlag(%u) outside a MIX group or with an id >= 16", flagId);
    }
    detail::Group& g = *c.group;
    std::unique_lock<std::mutex> lk(g.mu);
    const int slot = c.GroupSlot();
    auto ready = [&] { return g.Ready(slot, flagId); };
    const auto limit = std::chrono::duration<double>(detail::FlagTimeout());
    g.waitingOn[slot] = flagId;
    bool stuck = false;
    const bool woke = g.cv.wait_for(lk, limit, [&] { return ready() || (stuck = g.Stuck()); });
    if (!woke || stuck) {
        std::string who;
        for (int s = 0; s < 3; ++s) {
            if (!g.ended[s] && g.waitingOn[s] >= 0) {
                who += std::string(who.empty() ? "" : "; ") + detail::SlotName(s) + ": CrossCoreWaitFlag(" + std::to_string(g.waitingOn[s]) + ")";
            }
        }
        lk.unlock();
        if (stuck) {
            detail::Fail("CrossCoreWaitFlag(%u): no matching CrossCoreSetFlag: every core of the group waits or has ended (missing flag: the cores "
                         "would hang; waiting: %s)",
                         flagId, who.c_str());
        }
        detail::Fail("CrossCoreWaitFlag(%u): no matching CrossCoreSetFlag within %.0f s (missing flag: the core would hang)", flagId, detail::FlagTimeout());
    }
    g.waitingOn[slot] = -1;
    auto join = [&](std::deque<detail::XClock>& q) {
        for (int i = 0; i < 3; ++i) {
            c.xvc[i] = c.xvc[i] > q.front()[i] ? c.xvc[i] : q.front()[i];
        }
        q.pop_front();
    };
    if (c.aiv) {
        join(g.aivFlags[c.subIdx][flagId]);
    } else {
        join(g.aicFlags[flagId][0]);
        join(g.aicFlags[flagId][1]);
    }
}

template <typename T>
inline void SetAtomicAdd()
{
    auto& c = detail::CurrentCore();
    c.atomic = std::is_same<T, float>::value ? 1 : std::is_same<T, half>::value ? 2 : std::is_same<T, int32_t>::value ? 3 : 4;
}
inline void SetAtomicNone() { detail::CurrentCore().atomic = 0; }

// ---------------------------------------------------------------------------------------------
// Data movement
// ---------------------------------------------------------------------------------------------

struct DataCopyParams {
    uint16_t blockCount = 1;
    uint16_t blockLen = 0;
    uint16_t srcStride = 0;
    uint16_t dstStride = 0;
    DataCopyParams() = default;
    DataCopyParams(uint16_t count, uint16_t len, uint16_t src, uint16_t dst) : blockCount(count), blockLen(len), srcStride(src), dstStride(dst) {}
};

struct DataCopyExtParams {
    uint16_t blockCount = 1;
    uint32_t blockLen = 0;
    uint32_t srcStride = 0;
    uint32_t dstStride = 0;
    uint32_t rsv = 0;
    DataCopyExtParams() = default;
    DataCopyExtParams(uint16_t count, uint32_t len, uint32_t src, uint32_t dst, uint32_t r)
        : blockCount(count), blockLen(len), srcStride(src), dstStride(dst), rsv(r)
    {
    }
};

template <typename T>
struct DataCopyPadExtParams {
    bool isPad = false;
    uint8_t leftPadding = 0;
    uint8_t rightPadding = 0;
    T paddingValue = T();
    DataCopyPadExtParams() = default;
    DataCopyPadExtParams(bool pad, uint8_t left, uint8_t right, T value) : isPad(pad), leftPadding(left), rightPadding(right), paddingValue(value) {}
};

struct Nd2NzParams {
    uint16_t ndNum = 1;
    uint16_t nValue = 0;
    uint16_t dValue = 0;
    uint16_t srcNdMatrixStride = 0;
    uint16_t srcDValue = 0;
    uint16_t dstNzC0Stride = 0;
    uint16_t dstNzNStride = 0;
    uint16_t dstNzMatrixStride = 0;
};

namespace detail {
template <typename T>
inline void AtomicStore(T* dst, T v, int mode)
{
    if (mode == 0) {
        *dst = v;
    } else {
        if constexpr (std::is_same<T, int32_t>::value) {
            *dst = static_cast<int32_t>(static_cast<uint32_t>(*dst) + static_cast<uint32_t>(v));
        } else if constexpr (std::is_arithmetic<T>::value || std::is_same<T, half>::value || std::is_same<T, bfloat16_t>::value) {
            *dst = T(static_cast<float>(*dst) + static_cast<float>(v));
        } else {
            *dst = v;
        }
    }
}

template <typename T>
inline void GmStore(T* dst, const T* src, uint64_t n)
{
    const int mode = CurrentCore().atomic;
    if (mode == 0) {
        std::memcpy(static_cast<void*>(dst), static_cast<const void*>(src), n * sizeof(T));
        return;
    }
    std::lock_guard<std::mutex> lk(AtomicLock());
    for (uint64_t i = 0; i < n; ++i) {
        AtomicStore(dst + i, src[i], mode);
    }
}

template <typename T>
inline void CheckCount(const LocalTensor<T>& t, uint64_t n, const char* what)
{
    if (n > t.GetSize()) {
        Fail("%s: %llu elements do not fit the local tensor's %u", what, static_cast<unsigned long long>(n), t.GetSize());
    }
}

inline void Granularity(uint64_t bytes, const char* what)
{
    if (bytes % 32 != 0) {
        Fail("%s: %llu bytes is not a multiple of 32 (the hardware would round down); use DataCopyPad", what, static_cast<unsigned long long>(bytes));
    }
}
}  // namespace detail

// GM -> local (MTE2), count elements.
template <typename T>
inline void DataCopy(const LocalTensor<T>& dst, const GlobalTensor<T>& src, uint32_t count)
{
    detail::Granularity(static_cast<uint64_t>(count) * sizeof(T), "DataCopy(GM -> local)");
    detail::CheckAligned(dst.Data(), "DataCopy(GM -> local)");
    detail::CheckCount(dst, count, "DataCopy(GM -> local)");
    src.Check(0, count, false, "DataCopy(GM -> local)");
    detail::Issue(PIPE_MTE2);
    detail::Access(PIPE_MTE2, dst.Data(), count * sizeof(T), true, "DataCopy(GM -> local)");
    std::memcpy(static_cast<void*>(dst.Data()), static_cast<const void*>(src.Data()), count * sizeof(T));
}

// local -> GM (MTE3), count elements.
template <typename T>
inline void DataCopy(const GlobalTensor<T>& dst, const LocalTensor<T>& src, uint32_t count)
{
    detail::Granularity(static_cast<uint64_t>(count) * sizeof(T), "DataCopy(local -> GM)");
    detail::CheckAligned(src.Data(), "DataCopy(local -> GM)");
    detail::CheckCount(src, count, "DataCopy(local -> GM)");
    dst.Check(0, count, true, "DataCopy(local -> GM)");
    detail::Issue(PIPE_MTE3);
    detail::Access(PIPE_MTE3, src.Data(), count * sizeof(T), false, "DataCopy(local -> GM)");
    detail::GmStore(dst.Data(), src.Data(), count);
}

// local -> local (V), count elements.
template <typename T>
inline void DataCopy(const LocalTensor<T>& dst, const LocalTensor<T>& src, uint32_t count)
{
    detail::Granularity(static_cast<uint64_t>(count) * sizeof(T), "DataCopy(local -> local)");
    detail::CheckAligned(dst.Data(), "DataCopy(local -> local)");
    detail::CheckAligned(src.Data(), "DataCopy(local -> local)");
    detail::CheckCount(dst, count, "DataCopy(local -> local)");
    detail::CheckCount(src, count, "DataCopy(local -> local)");
    detail::Issue(PIPE_V);
    detail::Access(PIPE_V, src.Data(), count * sizeof(T), false, "DataCopy(local -> local)");
    detail::Access(PIPE_V, dst.Data(), count * sizeof(T), true, "DataCopy(local -> local)");
    std::memmove(static_cast<void*>(dst.Data()), static_cast<const void*>(src.Data()), count * sizeof(T));
}

// local -> local (V), strided in 32-byte blocks.
template <typename T>
inline void DataCopy(const LocalTensor<T>& dst, const LocalTensor<T>& src, const DataCopyParams& p)
{
    detail::CheckAligned(dst.Data(), "DataCopy(local -> local, params)");
    detail::CheckAligned(src.Data(), "DataCopy(local -> local, params)");
    detail::Issue(PIPE_V);
    uint8_t* d = reinterpret_cast<uint8_t*>(dst.Data());
    const uint8_t* s = reinterpret_cast<const uint8_t*>(src.Data());
    const uint64_t len = static_cast<uint64_t>(p.blockLen) * 32;
    for (uint32_t i = 0; i < p.blockCount; ++i) {
        const uint64_t so = i * (static_cast<uint64_t>(p.blockLen) + p.srcStride) * 32;
        const uint64_t dof = i * (static_cast<uint64_t>(p.blockLen) + p.dstStride) * 32;
        if (so + len > src.GetSize() * sizeof(T) || dof + len > dst.GetSize() * sizeof(T)) {
            detail::Fail("DataCopy(local -> local, params): block %u runs past a tensor", i);
        }
        detail::Access(PIPE_V, s + so, len, false, "DataCopy(local -> local, params)");
        detail::Access(PIPE_V, d + dof, len, true, "DataCopy(local -> local, params)");
        std::memmove(d + dof, s + so, len);
    }
}

// GM (ND) -> L1 (NZ) (MTE2).
template <typename T>
inline void DataCopy(const LocalTensor<T>& dst, const GlobalTensor<T>& src, const Nd2NzParams& p)
{
    if (p.ndNum != 1) {
        detail::Fail("DataCopy(Nd2NzParams): the model supports ndNum == 1");
    }
    detail::CheckAligned(dst.Data(), "DataCopy(GM -> L1, Nd2Nz)");
    const uint32_t c0 = 32 / sizeof(T);
    detail::Issue(PIPE_MTE2);
    src.Check(0, static_cast<uint64_t>(p.nValue - 1) * p.srcDValue + p.dValue, false, "DataCopy(GM -> L1, Nd2Nz)");
    for (uint32_t n = 0; n < p.nValue; ++n) {
        for (uint32_t d = 0; d < p.dValue; ++d) {
            const uint64_t o = static_cast<uint64_t>(d / c0) * p.dstNzC0Stride * c0 + static_cast<uint64_t>(n) * p.dstNzNStride * c0 + d % c0;
            if (o >= dst.GetSize()) {
                detail::Fail("DataCopy(GM -> L1, Nd2Nz): destination element %llu past the tensor", static_cast<unsigned long long>(o));
            }
            detail::Access(PIPE_MTE2, dst.Data() + o, sizeof(T), true, "DataCopy(GM -> L1, Nd2Nz)");
            dst.Data()[o] = src.Data()[static_cast<uint64_t>(n) * p.srcDValue + d];
        }
    }
}

// GM -> local with padding (MTE2): blockCount rows of blockLen bytes, each placed at a 32-byte
// boundary in UB after leftPadding elements and padded to whole 32-byte blocks.
template <typename T>
inline void DataCopyPad(const LocalTensor<T>& dst, const GlobalTensor<T>& src, const DataCopyExtParams& p, const DataCopyPadExtParams<T>& pad)
{
    detail::CheckAligned(dst.Data(), "DataCopyPad(GM -> local)");
    if (p.blockLen % sizeof(T) != 0) {
        detail::Fail("DataCopyPad(GM -> local): blockLen %u is not a whole number of elements", p.blockLen);
    }
    if (pad.leftPadding * sizeof(T) >= 32 || pad.rightPadding * sizeof(T) >= 32) {
        detail::Fail("DataCopyPad(GM -> local): padding of %u / %u elements is 32 bytes or more", pad.leftPadding, pad.rightPadding);
    }
    detail::Issue(PIPE_MTE2);
    const uint64_t n = p.blockLen / sizeof(T);
    const uint64_t row = (pad.leftPadding * sizeof(T) + p.blockLen + 31) / 32;  // UB blocks per row
    uint8_t* d = reinterpret_cast<uint8_t*>(dst.Data());
    const uint8_t* s = reinterpret_cast<const uint8_t*>(src.Data());
    for (uint32_t i = 0; i < p.blockCount; ++i) {
        const uint64_t so = i * (static_cast<uint64_t>(p.blockLen) + p.srcStride);
        const uint64_t dof = i * (row + p.dstStride) * 32;
        if (dof + row * 32 > dst.GetSize() * sizeof(T)) {
            detail::Fail("DataCopyPad(GM -> local): row %u runs past the local tensor (%u elements)", i, dst.GetSize());
        }
        src.Check(so / sizeof(T), n, false, "DataCopyPad(GM -> local)");
        detail::Access(PIPE_MTE2, d + dof, row * 32, true, "DataCopyPad(GM -> local)");
        T* out = reinterpret_cast<T*>(d + dof);
        if (pad.isPad) {
            for (uint64_t j = 0; j < row * 32 / sizeof(T); ++j) {
                out[j] = pad.paddingValue;
            }
        }
        std::memcpy(static_cast<void*>(out + pad.leftPadding), s + so, p.blockLen);
    }
}

// local -> GM with exact byte lengths (MTE3).
template <typename T>
inline void DataCopyPad(const GlobalTensor<T>& dst, const LocalTensor<T>& src, const DataCopyExtParams& p)
{
    detail::CheckAligned(src.Data(), "DataCopyPad(local -> GM)");
    if (p.blockLen % sizeof(T) != 0) {
        detail::Fail("DataCopyPad(local -> GM): blockLen %u is not a whole number of elements", p.blockLen);
    }
    detail::Issue(PIPE_MTE3);
    const uint64_t n = p.blockLen / sizeof(T);
    const uint64_t row = (p.blockLen + 31) / 32;
    const uint8_t* s = reinterpret_cast<const uint8_t*>(src.Data());
    for (uint32_t i = 0; i < p.blockCount; ++i) {
        const uint64_t so = i * (row + p.srcStride) * 32;
        const uint64_t dof = i * (static_cast<uint64_t>(p.blockLen) + p.dstStride);
        if (so + p.blockLen > src.GetSize() * sizeof(T)) {
            detail::Fail("DataCopyPad(local -> GM): row %u runs past the local tensor", i);
        }
        dst.Check(dof / sizeof(T), n, true, "DataCopyPad(local -> GM)");
        detail::Access(PIPE_MTE3, s + so, p.blockLen, false, "DataCopyPad(local -> GM)");
        detail::GmStore(dst.Data() + dof / sizeof(T), reinterpret_cast<const T*>(s + so), n);
    }
}

// ---------------------------------------------------------------------------------------------
// Vector instructions (count form). Results round to T after every instruction.
// ---------------------------------------------------------------------------------------------

namespace detail {
template <typename T>
inline void VecCheck(const LocalTensor<T>& t, int32_t count, const char* what)
{
    CheckAligned(t.Data(), what);
    if (count < 0 || static_cast<uint64_t>(count) > t.GetSize()) {
        Fail("%s: count %d exceeds the tensor's %u elements", what, count, t.GetSize());
    }
    SpaceOf(t.GetPosition()) == UB ? void() : Fail("%s: operand is not in UB", what);
}

template <typename T>
inline void VecBinary(const LocalTensor<T>& dst, const LocalTensor<T>& a, const LocalTensor<T>& b, int32_t count, const char* what,
                      float (*ff)(float, float), int64_t (*fi)(int64_t, int64_t))
{
    VecCheck(dst, count, what);
    VecCheck(a, count, what);
    VecCheck(b, count, what);
    Issue(PIPE_V);
    Access(PIPE_V, a.Data(), count * sizeof(T), false, what);
    Access(PIPE_V, b.Data(), count * sizeof(T), false, what);
    Access(PIPE_V, dst.Data(), count * sizeof(T), true, what);
    for (int32_t i = 0; i < count; ++i) {
        if constexpr (std::is_integral<T>::value) {
            dst.Data()[i] = static_cast<T>(fi(a.Data()[i], b.Data()[i]));
        } else {
            dst.Data()[i] = T(ff(static_cast<float>(a.Data()[i]), static_cast<float>(b.Data()[i])));
        }
    }
}

template <typename T>
inline void VecUnary(const LocalTensor<T>& dst, const LocalTensor<T>& a, int32_t count, const char* what, float (*ff)(float))
{
    VecCheck(dst, count, what);
    VecCheck(a, count, what);
    Issue(PIPE_V);
    Access(PIPE_V, a.Data(), count * sizeof(T), false, what);
    Access(PIPE_V, dst.Data(), count * sizeof(T), true, what);
    for (int32_t i = 0; i < count; ++i) {
        dst.Data()[i] = T(ff(static_cast<float>(a.Data()[i])));
    }
}

template <typename T>
inline void VecScalar(const LocalTensor<T>& dst, const LocalTensor<T>& a, T s, int32_t count, const char* what, float (*ff)(float, float),
                      int64_t (*fi)(int64_t, int64_t))
{
    VecCheck(dst, count, what);
    VecCheck(a, count, what);
    Issue(PIPE_V);
    Access(PIPE_V, a.Data(), count * sizeof(T), false, what);
    Access(PIPE_V, dst.Data(), count * sizeof(T), true, what);
    for (int32_t i = 0; i < count; ++i) {
        if constexpr (std::is_integral<T>::value) {
            dst.Data()[i] = static_cast<T>(fi(a.Data()[i], s));
        } else {
            dst.Data()[i] = T(ff(static_cast<float>(a.Data()[i]), static_cast<float>(s)));
        }
    }
}

inline float FAdd(float a, float b) { return a + b; }
inline float FSub(float a, float b) { return a - b; }
inline float FMul(float a, float b) { return a * b; }
inline float FDiv(float a, float b) { return a / b; }
inline float FMax(float a, float b) { return (a != a || b > a) ? b : a; }
inline float FMin(float a, float b) { return (a != a || b < a) ? b : a; }
inline int64_t IAdd(int64_t a, int64_t b) { return static_cast<int32_t>(static_cast<uint32_t>(a) + static_cast<uint32_t>(b)); }
inline int64_t ISub(int64_t a, int64_t b) { return static_cast<int32_t>(static_cast<uint32_t>(a) - static_cast<uint32_t>(b)); }
inline int64_t IMul(int64_t a, int64_t b) { return static_cast<int32_t>(static_cast<uint32_t>(a) * static_cast<uint32_t>(b)); }
inline int64_t IDiv(int64_t a, int64_t b) { return b == 0 ? 0 : a / b; }
inline int64_t IMax(int64_t a, int64_t b) { return a > b ? a : b; }
inline int64_t IMin(int64_t a, int64_t b) { return a < b ? a : b; }
}  // namespace detail

#define OPC_MODEL_BINARY(NAME, FF, FI)                                                                       \
    template <typename T>                                                                                   \
    inline void NAME(const LocalTensor<T>& dst, const LocalTensor<T>& a, const LocalTensor<T>& b, const int32_t count) \
    {                                                                                                       \
        detail::VecBinary(dst, a, b, count, #NAME, FF, FI);                                                 \
    }
OPC_MODEL_BINARY(Add, detail::FAdd, detail::IAdd)
OPC_MODEL_BINARY(Sub, detail::FSub, detail::ISub)
OPC_MODEL_BINARY(Mul, detail::FMul, detail::IMul)
OPC_MODEL_BINARY(Div, detail::FDiv, detail::IDiv)
OPC_MODEL_BINARY(Max, detail::FMax, detail::IMax)
OPC_MODEL_BINARY(Min, detail::FMin, detail::IMin)
#undef OPC_MODEL_BINARY

#define OPC_MODEL_SCALAR(NAME, FF, FI)                                                                       \
    template <typename T>                                                                                   \
    inline void NAME(const LocalTensor<T>& dst, const LocalTensor<T>& a, const T& scalarValue, const int32_t count) \
    {                                                                                                       \
        detail::VecScalar(dst, a, scalarValue, count, #NAME, FF, FI);                                       \
    }
OPC_MODEL_SCALAR(Adds, detail::FAdd, detail::IAdd)
OPC_MODEL_SCALAR(Muls, detail::FMul, detail::IMul)
OPC_MODEL_SCALAR(Maxs, detail::FMax, detail::IMax)
OPC_MODEL_SCALAR(Mins, detail::FMin, detail::IMin)
#undef OPC_MODEL_SCALAR

namespace detail {
inline float UExp(float x) { return std::exp(x); }
inline float ULn(float x) { return std::log(x); }
inline float UAbs(float x) { return std::fabs(x); }
inline float USqrt(float x) { return std::sqrt(x); }
inline float URsqrt(float x) { return 1.0f / std::sqrt(x); }
inline float URecip(float x) { return 1.0f / x; }
}  // namespace detail

#define OPC_MODEL_UNARY(NAME, FF)                                                               \
    template <typename T>                                                                      \
    inline void NAME(const LocalTensor<T>& dst, const LocalTensor<T>& src, const int32_t count) \
    {                                                                                          \
        detail::VecUnary(dst, src, count, #NAME, FF);                                          \
    }
OPC_MODEL_UNARY(Exp, detail::UExp)
OPC_MODEL_UNARY(Ln, detail::ULn)
OPC_MODEL_UNARY(Abs, detail::UAbs)
OPC_MODEL_UNARY(Sqrt, detail::USqrt)
OPC_MODEL_UNARY(Rsqrt, detail::URsqrt)
OPC_MODEL_UNARY(Reciprocal, detail::URecip)
#undef OPC_MODEL_UNARY

// Advanced math API (lib/math): Sin, Cos, Power (tensor ^ tensor); results rounded like every
// vector instruction. The real ones take an optional shared temporary buffer; these overloads
// use the framework's.
namespace detail {
inline float USin(float x) { return std::sin(x); }
inline float UCos(float x) { return std::cos(x); }
inline float FPow(float a, float b) { return std::pow(a, b); }
inline int64_t IPow(int64_t, int64_t) { return 0; }
}  // namespace detail
template <typename T, bool isReuseSource = false>
inline void Sin(const LocalTensor<T>& dstTensor, const LocalTensor<T>& srcTensor, const uint32_t calCount)
{
    static_assert(std::is_floating_point<T>::value || std::is_same<T, half>::value, "Sin takes half / float");
    detail::VecUnary(dstTensor, srcTensor, static_cast<int32_t>(calCount), "Sin", detail::USin);
}
template <typename T, bool isReuseSource = false>
inline void Cos(const LocalTensor<T>& dstTensor, const LocalTensor<T>& srcTensor, const uint32_t calCount)
{
    static_assert(std::is_floating_point<T>::value || std::is_same<T, half>::value, "Cos takes half / float");
    detail::VecUnary(dstTensor, srcTensor, static_cast<int32_t>(calCount), "Cos", detail::UCos);
}
template <typename T, bool isReuseSource = false>
inline void Power(const LocalTensor<T>& dstTensor, const LocalTensor<T>& src0Tensor, const LocalTensor<T>& src1Tensor, uint32_t calCount)
{
    static_assert(std::is_floating_point<T>::value || std::is_same<T, half>::value, "Power (tensor, tensor) takes half / float here");
    detail::VecBinary(dstTensor, src0Tensor, src1Tensor, static_cast<int32_t>(calCount), "Power", detail::FPow, detail::IPow);
}

namespace detail {
inline int64_t BAnd(int64_t a, int64_t b) { return a & b; }
inline int64_t BOr(int64_t a, int64_t b) { return a | b; }
inline float BNone(float, float) { return 0.0f; }
}  // namespace detail

// Bitwise, on 16-bit integer tensors (bit masks).
template <typename T>
inline void And(const LocalTensor<T>& dst, const LocalTensor<T>& a, const LocalTensor<T>& b, const int32_t count)
{
    static_assert(std::is_integral<T>::value && sizeof(T) == 2, "And takes int16_t / uint16_t");
    detail::VecBinary(dst, a, b, count, "And", detail::BNone, detail::BAnd);
}
template <typename T>
inline void Or(const LocalTensor<T>& dst, const LocalTensor<T>& a, const LocalTensor<T>& b, const int32_t count)
{
    static_assert(std::is_integral<T>::value && sizeof(T) == 2, "Or takes int16_t / uint16_t");
    detail::VecBinary(dst, a, b, count, "Or", detail::BNone, detail::BOr);
}
template <typename T>
inline void Not(const LocalTensor<T>& dst, const LocalTensor<T>& src, const int32_t count)
{
    static_assert(std::is_integral<T>::value && sizeof(T) == 2, "Not takes int16_t / uint16_t");
    detail::VecCheck(dst, count, "Not");
    detail::VecCheck(src, count, "Not");
    detail::Issue(PIPE_V);
    detail::Access(PIPE_V, src.Data(), count * sizeof(T), false, "Not");
    detail::Access(PIPE_V, dst.Data(), count * sizeof(T), true, "Not");
    for (int32_t i = 0; i < count; ++i) {
        dst.Data()[i] = static_cast<T>(~src.Data()[i]);
    }
}

template <typename T>
inline void Duplicate(const LocalTensor<T>& dst, const T& scalarValue, const int32_t count)
{
    detail::VecCheck(dst, count, "Duplicate");
    detail::Issue(PIPE_V);
    detail::Access(PIPE_V, dst.Data(), count * sizeof(T), true, "Duplicate");
    for (int32_t i = 0; i < count; ++i) {
        dst.Data()[i] = scalarValue;
    }
}

// dst[i] += src[i] * scalar, in fp32 for float types (two roundings).
template <typename T, typename U>
inline void Axpy(const LocalTensor<T>& dst, const LocalTensor<U>& src, const U scalarValue, const int32_t count)
{
    detail::VecCheck(dst, count, "Axpy");
    detail::VecCheck(src, count, "Axpy");
    detail::Issue(PIPE_V);
    detail::Access(PIPE_V, src.Data(), count * sizeof(U), false, "Axpy");
    detail::Access(PIPE_V, dst.Data(), count * sizeof(T), true, "Axpy");
    for (int32_t i = 0; i < count; ++i) {
        const float p = static_cast<float>(src.Data()[i]) * static_cast<float>(scalarValue);
        dst.Data()[i] = T(static_cast<float>(dst.Data()[i]) + p);
    }
}

namespace detail {
inline float RoundF(float x, RoundMode m)
{
    switch (m) {
        case RoundMode::CAST_FLOOR: return std::floor(x);
        case RoundMode::CAST_CEIL: return std::ceil(x);
        case RoundMode::CAST_TRUNC: return std::trunc(x);
        case RoundMode::CAST_ROUND: return std::round(x);
        default: return std::nearbyint(x);
    }
}
}  // namespace detail

// Conversion with the given rounding; float -> int saturates, NaN -> 0.
template <typename D, typename S>
inline void Cast(const LocalTensor<D>& dst, const LocalTensor<S>& src, const RoundMode mode, const uint32_t count)
{
    detail::VecCheck(dst, static_cast<int32_t>(count), "Cast");
    detail::VecCheck(src, static_cast<int32_t>(count), "Cast");
    detail::Issue(PIPE_V);
    detail::Access(PIPE_V, src.Data(), count * sizeof(S), false, "Cast");
    detail::Access(PIPE_V, dst.Data(), count * sizeof(D), true, "Cast");
    for (uint32_t i = 0; i < count; ++i) {
        if constexpr (std::is_integral<D>::value) {
            const float x = detail::RoundF(static_cast<float>(src.Data()[i]), mode);
            const double lo = static_cast<double>(std::numeric_limits<D>::min());
            const double hi = static_cast<double>(std::numeric_limits<D>::max());
            dst.Data()[i] = x != x ? D(0) : (x <= lo ? static_cast<D>(lo) : (x >= hi ? static_cast<D>(hi) : static_cast<D>(x)));
        } else if constexpr (std::is_integral<S>::value) {
            dst.Data()[i] = D(static_cast<float>(src.Data()[i]));
        } else {
            dst.Data()[i] = D(static_cast<float>(src.Data()[i]));  // to nearest even
        }
    }
}

namespace detail {
template <typename T>
inline void Reduce(const LocalTensor<T>& dst, const LocalTensor<T>& src, const LocalTensor<T>& work, int32_t count, int op, const char* what)
{
    VecCheck(dst, 1, what);
    VecCheck(src, count, what);
    CheckAligned(work.Data(), what);
    Issue(PIPE_V);
    Access(PIPE_V, src.Data(), count * sizeof(T), false, what);
    Access(PIPE_V, work.Data(), 32, true, what);
    Access(PIPE_V, dst.Data(), sizeof(T), true, what);
    float acc = op == 0 ? 0.0f : static_cast<float>(src.Data()[0]);
    for (int32_t i = op == 0 ? 0 : 1; i < count; ++i) {
        const float v = static_cast<float>(src.Data()[i]);
        acc = op == 0 ? acc + v : (op == 1 ? FMax(acc, v) : FMin(acc, v));
    }
    dst.Data()[0] = T(acc);
}
}  // namespace detail

template <typename T>
inline void ReduceSum(const LocalTensor<T>& dst, const LocalTensor<T>& src, const LocalTensor<T>& sharedTmpBuffer, const int32_t count)
{
    detail::Reduce(dst, src, sharedTmpBuffer, count, 0, "ReduceSum");
}
template <typename T>
inline void ReduceMax(const LocalTensor<T>& dst, const LocalTensor<T>& src, const LocalTensor<T>& sharedTmpBuffer, const int32_t count,
                      bool calIndex = false)
{
    (void)calIndex;
    detail::Reduce(dst, src, sharedTmpBuffer, count, 1, "ReduceMax");
}
template <typename T>
inline void ReduceMin(const LocalTensor<T>& dst, const LocalTensor<T>& src, const LocalTensor<T>& sharedTmpBuffer, const int32_t count,
                      bool calIndex = false)
{
    (void)calIndex;
    detail::Reduce(dst, src, sharedTmpBuffer, count, 2, "ReduceMin");
}

// Bit i of dst = src0[i] (mode) src1[i]; count * sizeof(T) must be whole 256-byte repeats.
template <typename T, typename U>
inline void Compare(const LocalTensor<U>& dst, const LocalTensor<T>& src0, const LocalTensor<T>& src1, CMPMODE mode, uint32_t count)
{
    if ((count * sizeof(T)) % 256 != 0) {
        detail::Fail("Compare: count %u x %zu bytes is not a whole number of 256-byte repeats", count, sizeof(T));
    }
    detail::VecCheck(src0, static_cast<int32_t>(count), "Compare");
    detail::VecCheck(src1, static_cast<int32_t>(count), "Compare");
    detail::CheckAligned(dst.Data(), "Compare");
    if (dst.GetSize() * sizeof(U) * 8 < count) {
        detail::Fail("Compare: the mask tensor holds %zu bits, %u needed", dst.GetSize() * sizeof(U) * 8, count);
    }
    detail::Issue(PIPE_V);
    detail::Count("Compare", count);
    detail::Access(PIPE_V, src0.Data(), count * sizeof(T), false, "Compare");
    detail::Access(PIPE_V, src1.Data(), count * sizeof(T), false, "Compare");
    detail::Access(PIPE_V, dst.Data(), count / 8, true, "Compare");
    uint8_t* m = reinterpret_cast<uint8_t*>(dst.Data());
    for (uint32_t i = 0; i < count; ++i) {
        const float a = static_cast<float>(src0.Data()[i]);
        const float b = static_cast<float>(src1.Data()[i]);
        bool r = false;
        switch (mode) {
            case CMPMODE::LT: r = a < b; break;
            case CMPMODE::GT: r = a > b; break;
            case CMPMODE::EQ: r = a == b; break;
            case CMPMODE::LE: r = a <= b; break;
            case CMPMODE::GE: r = a >= b; break;
            case CMPMODE::NE: r = a != b; break;
        }
        if (r) {
            m[i / 8] |= static_cast<uint8_t>(1u << (i % 8));
        } else {
            m[i / 8] &= static_cast<uint8_t>(~(1u << (i % 8)));
        }
    }
}

template <typename T, typename U>
inline void Select(const LocalTensor<T>& dst, const LocalTensor<U>& selMask, const LocalTensor<T>& src0, const LocalTensor<T>& src1,
                   SELMODE selMode, uint32_t count)
{
    (void)selMode;
    detail::VecCheck(dst, static_cast<int32_t>(count), "Select");
    detail::VecCheck(src0, static_cast<int32_t>(count), "Select");
    detail::VecCheck(src1, static_cast<int32_t>(count), "Select");
    detail::Issue(PIPE_V);
    detail::Count("Select", count);
    detail::Access(PIPE_V, selMask.Data(), (count + 7) / 8, false, "Select");
    detail::Access(PIPE_V, src0.Data(), count * sizeof(T), false, "Select");
    detail::Access(PIPE_V, src1.Data(), count * sizeof(T), false, "Select");
    detail::Access(PIPE_V, dst.Data(), count * sizeof(T), true, "Select");
    const uint8_t* m = reinterpret_cast<const uint8_t*>(selMask.Data());
    for (uint32_t i = 0; i < count; ++i) {
        dst.Data()[i] = ((m[i / 8] >> (i % 8)) & 1u) ? src0.Data()[i] : src1.Data()[i];
    }
}

template <typename T, typename U>
inline void Select(const LocalTensor<T>& dst, const LocalTensor<U>& selMask, const LocalTensor<T>& src0, T src1, SELMODE selMode, uint32_t count)
{
    (void)selMode;
    detail::VecCheck(dst, static_cast<int32_t>(count), "Select");
    detail::VecCheck(src0, static_cast<int32_t>(count), "Select");
    detail::Issue(PIPE_V);
    detail::Count("Select", count);
    detail::Access(PIPE_V, selMask.Data(), (count + 7) / 8, false, "Select");
    detail::Access(PIPE_V, src0.Data(), count * sizeof(T), false, "Select");
    detail::Access(PIPE_V, dst.Data(), count * sizeof(T), true, "Select");
    const uint8_t* m = reinterpret_cast<const uint8_t*>(selMask.Data());
    for (uint32_t i = 0; i < count; ++i) {
        dst.Data()[i] = ((m[i / 8] >> (i % 8)) & 1u) ? src0.Data()[i] : src1;
    }
}

// ---------------------------------------------------------------------------------------------
// Cube
// ---------------------------------------------------------------------------------------------

struct LoadData2DParams {
    uint16_t startIndex = 0;
    uint8_t repeatTimes = 0;
    uint16_t srcStride = 0;
    uint8_t sid = 0;
    uint16_t dstGap = 0;
    bool ifTranspose = false;
    uint8_t addrMode = 0;
};

struct MmadParams {
    uint16_t m = 0;
    uint16_t n = 0;
    uint16_t k = 0;
    bool isBias = false;
    int32_t fmOffset = 0;
    bool enSsparse = false;
    bool enWinogradA = false;
    bool enWinogradB = false;
    uint8_t unitFlag = 0;
    bool kDirectionAlign = false;
    bool cmatrixSource = false;
    bool cmatrixInitVal = true;
};

struct FixpipeParamsV220 {
    uint16_t nSize = 0;
    uint16_t mSize = 0;
    uint16_t srcStride = 0;
    uint32_t dstStride = 0;
    QuantMode_t quantPre = QuantMode_t::NoQuant;
    uint64_t deqScalar = 0;
    uint16_t ndNum = 1;
    uint16_t srcNdStride = 0;
    uint16_t dstNdStride = 0;
    bool reluEn = false;
    uint8_t unitFlag = 0;
    bool isChannelSplit = false;
};

enum class CO2Layout { NZ = 0, ROW_MAJOR, COLUMN_MAJOR };
struct FixpipeConfig {
    CO2Layout format;
};
constexpr FixpipeConfig CFG_NZ = {CO2Layout::NZ};
constexpr FixpipeConfig CFG_ROW_MAJOR = {CO2Layout::ROW_MAJOR};

// L1 -> L0A / L0B (MTE1): repeatTimes fractals of 512 bytes, source fractal
// startIndex + r * srcStride, destination fractal r * (1 + dstGap); ifTranspose transposes
// each 16 x 16 fractal.
template <typename T>
inline void LoadData(const LocalTensor<T>& dst, const LocalTensor<T>& src, const LoadData2DParams& p)
{
    detail::CheckAligned(dst.Data(), "LoadData");
    const uint32_t fe = 512 / sizeof(T);  // elements per fractal
    const uint32_t c0 = 32 / sizeof(T);
    if (p.ifTranspose && c0 != 16) {
        detail::Fail("LoadData: ifTranspose needs 16-bit elements in the model");
    }
    detail::Issue(PIPE_MTE1);
    for (uint32_t r = 0; r < p.repeatTimes; ++r) {
        const uint64_t so = (static_cast<uint64_t>(p.startIndex) + static_cast<uint64_t>(r) * p.srcStride) * fe;
        const uint64_t dof = static_cast<uint64_t>(r) * (1 + p.dstGap) * fe;
        if (so + fe > src.GetSize() || dof + fe > dst.GetSize()) {
            detail::Fail("LoadData: fractal %u runs past a tensor", r);
        }
        detail::Access(PIPE_MTE1, src.Data() + so, 512, false, "LoadData");
        detail::Access(PIPE_MTE1, dst.Data() + dof, 512, true, "LoadData");
        for (uint32_t i = 0; i < 16; ++i) {
            for (uint32_t j = 0; j < c0; ++j) {
                const T v = src.Data()[so + i * c0 + j];
                if (p.ifTranspose) {
                    dst.Data()[dof + j * 16 + i] = v;
                } else {
                    dst.Data()[dof + i * c0 + j] = v;
                }
            }
        }
    }
}

// C[m, n] (+)= A[m, k] B[k, n] in fp32 (M pipe). A in L0A as zZ fractals (16 x 16, row-major
// over m-blocks then k-blocks, rows inside); B in L0B as (k-block, n-block) fractals stored
// n-major inside; C in L0C as NZ (16-column blocks of m_pad x 16).
template <typename C, typename T>
inline void Mmad(const LocalTensor<C>& dst, const LocalTensor<T>& a, const LocalTensor<T>& b, const MmadParams& p)
{
    static_assert(sizeof(T) == 2, "the model's Mmad takes 16-bit operands");
    const uint32_t mb = (p.m + 15) / 16, kb = (p.k + 15) / 16, nb = (p.n + 15) / 16;
    if (static_cast<uint64_t>(mb) * kb * 256 > a.GetSize() || static_cast<uint64_t>(kb) * nb * 256 > b.GetSize() ||
        static_cast<uint64_t>(mb) * nb * 256 > dst.GetSize()) {
        detail::Fail("Mmad: m=%u n=%u k=%u does not fit the L0 tensors", p.m, p.n, p.k);
    }
    detail::Issue(PIPE_M);
    detail::Count("Mmad", static_cast<uint64_t>(p.m) * p.n * p.k);
    detail::Access(PIPE_M, a.Data(), static_cast<uint64_t>(mb) * kb * 512, false, "Mmad");
    detail::Access(PIPE_M, b.Data(), static_cast<uint64_t>(kb) * nb * 512, false, "Mmad");
    detail::Access(PIPE_M, dst.Data(), static_cast<uint64_t>(mb) * nb * 1024, true, "Mmad");
    const uint32_t mpad = mb * 16;
    for (uint32_t i = 0; i < p.m; ++i) {
        for (uint32_t j = 0; j < p.n; ++j) {
            C& c = dst.Data()[(j / 16) * mpad * 16 + i * 16 + j % 16];
            float acc = p.cmatrixInitVal ? 0.0f : static_cast<float>(c);
            for (uint32_t kk = 0; kk < p.k; ++kk) {
                const float x = static_cast<float>(a.Data()[((i / 16) * kb + kk / 16) * 256 + (i % 16) * 16 + kk % 16]);
                const float y = static_cast<float>(b.Data()[((kk / 16) * nb + j / 16) * 256 + (j % 16) * 16 + kk % 16]);
                acc += x * y;
            }
            c = C(acc);
        }
    }
}

// L0C (NZ, fp32) -> GM (FIX pipe), converted per quantPre; CFG_ROW_MAJOR writes ND rows of
// dstStride elements.
template <typename T, typename U, const FixpipeConfig& config = CFG_ROW_MAJOR>
inline void Fixpipe(const GlobalTensor<T>& dst, const LocalTensor<U>& src, const FixpipeParamsV220& p)
{
    static_assert(config.format == CO2Layout::ROW_MAJOR, "the model implements CFG_ROW_MAJOR");
    detail::Issue(PIPE_FIX);
    const uint64_t nb = (p.nSize + 15) / 16;
    detail::Access(PIPE_FIX, src.Data(), nb * p.srcStride * 16 * sizeof(U), false, "Fixpipe");
    dst.Check(0, static_cast<uint64_t>(p.mSize - 1) * p.dstStride + p.nSize, true, "Fixpipe");
    for (uint32_t i = 0; i < p.mSize; ++i) {
        for (uint32_t j = 0; j < p.nSize; ++j) {
            float v = static_cast<float>(src.Data()[(j / 16) * static_cast<uint64_t>(p.srcStride) * 16 + i * 16 + j % 16]);
            if (p.reluEn && v < 0.0f) {
                v = 0.0f;
            }
            dst.Data()[static_cast<uint64_t>(i) * p.dstStride + j] = T(v);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Launch (the CPU-debug runner behind ICPU_RUN_KF)
// ---------------------------------------------------------------------------------------------

namespace detail {
inline KernelType& TaskType()
{
    static thread_local KernelType t = KERNEL_TYPE_AIV_ONLY;
    return t;
}

inline void CheckTaskType(KernelType t)
{
    const KernelMode m = Mode();
    const bool ok = (t == KERNEL_TYPE_MIX_AIC_1_2 && m == KernelMode::MIX_MODE) || (t == KERNEL_TYPE_AIV_ONLY && m == KernelMode::AIV_MODE) ||
                    (t == KERNEL_TYPE_AIC_ONLY && m == KernelMode::AIC_MODE);
    if (!ok) {
        Fail("KERNEL_TASK_TYPE_DEFAULT(%d) does not match the launch mode set by SetKernelMode", static_cast<int>(t));
    }
}

// Run `body` on blockDim cores (or groups of 1 AIC + 2 AIV in MIX mode), one thread each.
inline void RunKernel(uint32_t blockDim, const std::function<void()>& body)
{
    const KernelMode m = Mode();
    std::vector<std::unique_ptr<Group>> groups;
    std::vector<std::unique_ptr<Core>> cores;
    for (uint32_t b = 0; b < blockDim; ++b) {
        if (m == KernelMode::MIX_MODE) {
            groups.emplace_back(new Group());
            auto aic = std::make_unique<Core>();
            aic->aiv = false;
            aic->blockIdx = b;
            aic->blockNum = blockDim;
            aic->group = groups.back().get();
            cores.push_back(std::move(aic));
            for (int s = 0; s < 2; ++s) {
                auto v = std::make_unique<Core>();
                v->aiv = true;
                v->blockIdx = static_cast<int64_t>(b) * 2 + s;
                v->blockNum = blockDim;
                v->subIdx = s;
                v->group = groups.back().get();
                cores.push_back(std::move(v));
            }
        } else {
            auto c = std::make_unique<Core>();
            c->aiv = m == KernelMode::AIV_MODE;
            c->blockIdx = b;
            c->blockNum = blockDim;
            cores.push_back(std::move(c));
        }
    }
    std::vector<std::thread> threads;
    for (auto& c : cores) {
        Core* core = c.get();
        threads.emplace_back([core, &body] {
            CurrentCorePtr() = core;
            body();
            CurrentCorePtr() = nullptr;
            if (core->group != nullptr) {
                // Its peers' waits that only it could satisfy now never will be.
                std::lock_guard<std::mutex> lk(core->group->mu);
                core->group->ended[core->GroupSlot()] = true;
                core->group->cv.notify_all();
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    // Every cross-core flag set must have been waited for: a leftover count would release a
    // wait of the next kernel on the same cores.
    for (size_t gi = 0; gi < groups.size(); ++gi) {
        for (int f = 0; f < 16; ++f) {
            for (int s = 0; s < 2; ++s) {
                if (!groups[gi]->aicFlags[f][s].empty() || !groups[gi]->aivFlags[s][f].empty()) {
                    Fail("unbalanced cross-core flags: group %zu ends with flag %d set %zu time(s) for the AIC by AIV sub-block %d and %zu time(s) for that AIV "
                         "by the AIC without matching waits",
                         gi, f, groups[gi]->aicFlags[f][s].size(), s, groups[gi]->aivFlags[s][f].size());
                }
            }
        }
    }
    if (std::getenv("OPC_MODEL_COUNTS") != nullptr) {
        for (const auto& kv : Counts().calls) {
            std::printf("model-count %s %llu %llu\n", kv.first.first.c_str(), static_cast<unsigned long long>(kv.first.second),
                        static_cast<unsigned long long>(kv.second));
        }
    }
    Counts().calls.clear();
}
}  // namespace detail

}  // namespace AscendC

#define ASCEND_IS_AIV (AscendC::detail::CurrentCore().aiv)
#define ASCEND_IS_AIC (!AscendC::detail::CurrentCore().aiv)
#define KERNEL_TASK_TYPE_DEFAULT(t) AscendC::detail::CheckTaskType(t)

namespace opc_model {
// Test-driver hook (not AscendC API): check every access to [p, p + bytes) (the GM workspace)
// for cross-core races.
inline void TrackGm(uint8_t* p, uint64_t bytes)
{
    auto& sh = AscendC::detail::Shadow();
    sh.begin = p;
    sh.bytes = bytes;
    sh.recs.assign((bytes + 31) / 32, AscendC::detail::GmShadow::Rec{});
}
}  // namespace opc_model
