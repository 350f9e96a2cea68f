#!/usr/bin/env python3
"""PyTorch baselines for issue 3's speed rows, on 2 threads, written as the JSON `opc bench
--baseline FILE` reads: {"name": "torch X", "threads": 2, "rows": {ROW: {"ms": best, ...}}}.

Row names and shapes match benches/src/rows.rs. PyTorch is needed only to run this script (not by
tests or CI):   python3 benches/torch_baseline.py -o torch_baseline.json [--rows gemm,kl]

PyTorch has no MXFP4 kernel: the mxfp4 rows time what a PyTorch user writes, a decode of the
codes and scales to bf16 (table lookup, times 2^(e-127)) and then F.linear (the issue's own
baseline for them is llama.cpp).
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F


def best_ms(fn, reps):
    fn()  # warm-up
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def gemm(dtype, n=1024):
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    return (lambda: torch.mm(a, b)), {"flops": 2 * n**3}


def attention(dtype):
    h, s, d = 8, 2048, 64
    q, k, v = (torch.randn(1, h, s, d, dtype=dtype) for _ in range(3))
    flops = 2 * 2 * h * (s * (s + 1) // 2) * d
    return (lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)), {"flops": flops}


def gemv_bf16():
    n, k = 14336, 4096
    x = torch.randn(1, k, dtype=torch.bfloat16)
    ws = [torch.randn(n, k, dtype=torch.bfloat16) for _ in range(4)]

    def run():
        for w in ws:
            F.linear(x, w)

    return run, {"bytes": 4 * n * k * 2}


E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])


def mxfp4_weight(n, k):
    """Random gpt-oss layout MXFP4 weight: packed codes uint8 [n, k/2], scales uint8 [n, k/32]."""
    codes = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8)
    scales = torch.randint(120, 131, (n, k // 32), dtype=torch.uint8)
    return codes, scales


def mxfp4_dequant(codes, scales):
    n = codes.shape[0]
    lo = E2M1[(codes & 15).long()]
    hi = E2M1[(codes >> 4).long()]
    vals = torch.stack((lo, hi), dim=-1).reshape(n, -1, 32)
    scale = torch.exp2(scales.float() - 127.0)[:, :, None]
    return (vals * scale).reshape(n, -1).to(torch.bfloat16)


def gemv_mxfp4():
    n, k = 14336, 4096
    x = torch.randn(1, k, dtype=torch.bfloat16)
    ws = [mxfp4_weight(n, k) for _ in range(4)]

    def run():
        for c, s in ws:
            F.linear(x, mxfp4_dequant(c, s))

    return run, {"bytes": 4 * (n * k // 2 + n * k // 32)}


def prefill(kind):
    m, n, k = 512, 14336, 4096
    x = torch.randn(m, k, dtype=torch.bfloat16)
    if kind == "bf16":
        w = torch.randn(n, k, dtype=torch.bfloat16)
        run = lambda: F.linear(x, w)
    else:
        c, s = mxfp4_weight(n, k)
        run = lambda: F.linear(x, mxfp4_dequant(c, s))
    return run, {"flops": 2 * m * n * k}


def grouped_gemm_moge():
    """MoGE routing (64 experts in 8 groups, the best of each group: top-8) and a per-expert
    loop of SwiGLU experts in bf16: the 'PyTorch per-expert loop' of the issue."""
    t, h, i, e, groups = 512, 2048, 1408, 64, 8
    dt = torch.bfloat16
    x = torch.randn(t, h, dtype=dt)
    gate = torch.randn(e, h, dtype=dt) * 0.02
    w1 = torch.randn(e, i, h, dtype=dt) * 0.02
    w3 = torch.randn(e, i, h, dtype=dt) * 0.02
    w2 = torch.randn(e, h, i, dtype=dt) * 0.02
    router_scale = torch.rand(e)

    def run():
        probs = torch.softmax(F.linear(x, gate).float(), dim=-1)
        g = probs.view(t, groups, e // groups)
        w, idx = g.max(dim=-1)
        experts = idx + torch.arange(groups) * (e // groups)
        weights = w * router_scale[experts]
        out = torch.zeros(t, h, dtype=torch.float32)
        flat_e = experts.reshape(-1)
        flat_t = torch.arange(t).repeat_interleave(groups)
        flat_w = weights.reshape(-1)
        for ex in range(e):
            sel = (flat_e == ex).nonzero(as_tuple=True)[0]
            if sel.numel() == 0:
                continue
            tok = flat_t[sel]
            xe = x[tok]
            y = F.linear(F.silu(F.linear(xe, w1[ex])) * F.linear(xe, w3[ex]), w2[ex])
            out.index_add_(0, tok, y.float() * flat_w[sel, None])
        return out

    return run, {"flops": 2 * t * groups * 3 * h * i}


def kl_judge():
    gamma, v = 8, 152064
    tl = torch.randn(gamma + 1, v)
    dl = torch.randn(gamma, v)
    toks = torch.arange(gamma) * 977

    def run():
        lp = torch.log_softmax(tl[:gamma], dim=-1)
        lq = torch.log_softmax(dl, dim=-1)
        kl = (lp.exp() * (lp - lq)).sum(-1)
        accept = kl <= 0.5
        torch.log_softmax(tl[gamma:], dim=-1).argmax(-1)  # the bonus token
        return kl, accept, toks

    return run, {"bytes": (2 * gamma + 1) * v * 4}


ROWS = {
    "gemm_f32_1024": lambda: gemm(torch.float32),
    "gemm_bf16_1024": lambda: gemm(torch.bfloat16),
    "gemm_f32_2048": lambda: gemm(torch.float32, 2048),
    "gemm_bf16_2048": lambda: gemm(torch.bfloat16, 2048),
    "attention_prefill_f32": lambda: attention(torch.float32),
    "attention_prefill_bf16": lambda: attention(torch.bfloat16),
    "gemv_bf16": gemv_bf16,
    "gemv_mxfp4": gemv_mxfp4,
    "prefill_bf16_512": lambda: prefill("bf16"),
    "prefill_mxfp4_512": lambda: prefill("mxfp4"),
    "grouped_gemm_moge": grouped_gemm_moge,
    "kl_judge": kl_judge,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", default="torch_baseline.json")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rows", default="", help="comma-separated substrings of row names")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    want = [r for r in a.rows.split(",") if r]
    rows = {}
    with torch.inference_mode():
        for name, make in ROWS.items():
            if want and not any(w in name for w in want):
                continue
            fn, work = make()
            ms = best_ms(fn, a.reps)
            row = {"ms": round(ms, 4)}
            if "flops" in work:
                row["gflops"] = round(work["flops"] / (ms / 1e3) / 1e9, 2)
            else:
                row["gbs"] = round(work["bytes"] / (ms / 1e3) / 1e9, 2)
            rows[name] = row
            print(f"{name:<24} {ms:10.2f} ms  {row}", flush=True)
            del fn
    out = {"name": f"torch {torch.__version__}", "threads": a.threads, "rows": rows}
    with open(a.output, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    print(f"wrote {a.output}")


if __name__ == "__main__":
    main()
