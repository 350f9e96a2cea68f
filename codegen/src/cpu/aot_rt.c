/* opc cpu runtime helpers for ahead-of-time libraries (compiled into every lib<kernel>.so,
 * hidden). The C twins of codegen/src/cpu/helpers.rs: the same libm functions Rust's f32
 * methods call, f16 through _Float16 (round to nearest even), the same integer wrapping and
 * atomic read-modify-writes. `opc_cast` / `opc_bitcast` (rare conversions through opc_ir's
 * numerics) have no C twin: the renderer refuses kernels that call them.
 * Generated before this text: OPC_DTYPE_F32 and opc_wrap_int(code, x). */
#include <math.h>
#include <stdint.h>
#include <string.h>

float opc_exp(float x) { return expf(x); }
float opc_exp2(float x) { return exp2f(x); }
float opc_ln(float x) { return logf(x); }
float opc_log2(float x) { return log2f(x); }
float opc_tanh(float x) { return tanhf(x); }
float opc_sin(float x) { return sinf(x); }
float opc_cos(float x) { return cosf(x); }
float opc_floor(float x) { return floorf(x); }
float opc_ceil(float x) { return ceilf(x); }
float opc_round(float x) { return __builtin_roundevenf(x); }
float opc_powf(float x, float y) { return powf(x, y); }
float opc_fmod(float x, float y) { return fmodf(x, y); }

float opc_round_f16(float x) { return (float)(_Float16)x; }
uint32_t opc_f16_bits(float x) {
    _Float16 h = (_Float16)x;
    uint16_t b;
    memcpy(&b, &h, 2);
    return b;
}
float opc_f16_value(uint32_t bits) {
    uint16_t b = (uint16_t)bits;
    _Float16 h;
    memcpy(&h, &b, 2);
    return (float)h;
}

int32_t opc_ipow(int32_t base32, int32_t exp32, uint32_t d) {
    int64_t base = base32, e = exp32;
    if (e < 0) {
        if (base == 1) return 1;
        if (base == -1) return e % 2 == 0 ? 1 : -1;
        return 0;
    }
    int64_t r = 1, b = base;
    while (e > 0) {
        if (e & 1) r = opc_wrap_int(d, (int64_t)((uint64_t)r * (uint64_t)b));
        b = opc_wrap_int(d, (int64_t)((uint64_t)b * (uint64_t)b));
        e >>= 1;
    }
    return (int32_t)r;
}

void opc_store_nibble(uint8_t *base, int64_t e, uint32_t code) {
    uint8_t *cell = base + e / 2;
    uint8_t v = (uint8_t)(code & 0xF);
    if (e % 2 == 0) {
        __atomic_fetch_and(cell, (uint8_t)0xF0, __ATOMIC_RELAXED);
        __atomic_fetch_or(cell, v, __ATOMIC_RELAXED);
    } else {
        __atomic_fetch_and(cell, (uint8_t)0x0F, __ATOMIC_RELAXED);
        __atomic_fetch_or(cell, (uint8_t)(v << 4), __ATOMIC_RELAXED);
    }
}

void opc_atomic_add(uint8_t *base, int64_t e, uint32_t d, uint32_t v) {
    uint32_t *p = (uint32_t *)(base + 4 * e); /* tensors from the launcher are 4-aligned */
    uint32_t old = __atomic_load_n(p, __ATOMIC_RELAXED), want;
    do {
        if (d == OPC_DTYPE_F32) {
            float a, b;
            memcpy(&a, &old, 4);
            memcpy(&b, &v, 4);
            a = a + b;
            memcpy(&want, &a, 4);
        } else {
            want = (uint32_t)((int32_t)old + (int64_t)(int32_t)v);
        }
    } while (!__atomic_compare_exchange_n(p, &old, want, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
}
