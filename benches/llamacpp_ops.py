#!/usr/bin/env python3
"""llama.cpp baselines for issue 3's GEMV / prefill rows, as the JSON `opc bench --baseline FILE`
reads: {"name": "llama.cpp COMMIT", "threads": 2, "rows": {ROW: {"ms": ..., ...}}}.

It runs llama.cpp's own `test-backend-ops perf` on its CPU backend (MUL_MAT with the issue's
shapes: m=4096 k=14336, n=1 for the GEMV and n=512 for the prefill GEMM, bf16 and mxfp4 weights,
f32 activations) and converts each measured rate to the time llama.cpp would take for the opc
row's work: GB/s of weights read for the GEMV rows, GFLOP/s for the prefill rows (the opc rows use
the same matrices transposed, 14336x4096, four of them for the GEMV; see benches/src/rows.rs).

llama.cpp is not needed by tests or CI. Build it as the issue says (PyPI's llama_cpp_python sdist,
its vendor/llama.cpp, `cmake -B build -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=ON`).
Upstream `test-backend-ops` runs on half the cores; its thread count must be patched to read
GGML_NTHREADS (this script sets it to --threads).

    python3 benches/llamacpp_ops.py --llama-cpp DIR -o llamacpp_ops.json
    opc bench --baseline torch_baseline.json --baseline llamacpp_ops.json
"""
import argparse
import json
import os
import re
import subprocess
import sys

# The opc rows (benches/src/rows.rs): four 14336x4096 weights for the GEMV rows, one for prefill.
GEMV_MATS, GEMV_N, GEMV_K, PREFILL_M = 4, 14336, 4096, 512
# Bytes per weight: bf16 2, MXFP4 half a byte per code plus one E8M0 scale per 32.
BYTES_PER_WEIGHT = {"bf16": 2.0, "mxfp4": 0.5 + 1.0 / 32.0}

# (opc row, llama.cpp weight type, n, what the row's work is counted in)
ROWS = [
    ("gemv_bf16", "bf16", 1, "bytes"),
    ("gemv_mxfp4", "mxfp4", 1, "bytes"),
    ("prefill_bf16_512", "bf16", PREFILL_M, "flops"),
    ("prefill_mxfp4_512", "mxfp4", PREFILL_M, "flops"),
]

LINE = re.compile(r"MUL_MAT\((?P<params>[^)]*)\):\s+\d+ runs -\s+(?P<us>[0-9.]+) us/run -\s+(?P<flop>[0-9.]+) [KMGT]?FLOP/run")


def run_case(binary, wtype, n, threads):
    """us per run of llama.cpp's MUL_MAT case (wtype x f32, m=4096, n, k=14336)."""
    params = f"type_a={wtype},type_b=f32,m=4096,n={n},k=14336,bs=\\[1,1\\]"
    env = dict(os.environ, GGML_NTHREADS=str(threads))
    out = subprocess.run([binary, "perf", "-b", "CPU", "-o", "MUL_MAT", "-p", params], env=env, capture_output=True, text=True)
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)
    for m in LINE.finditer(text):
        if f"type_a={wtype}," in m["params"] and f",n={n}," in m["params"]:
            return float(m["us"])
    sys.exit(f"error: no MUL_MAT {wtype} n={n} result from {binary} (exit {out.returncode}):\n{text[-2000:]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-cpp", required=True, help="llama.cpp source dir with build/bin/test-backend-ops")
    ap.add_argument("-o", "--output", default="llamacpp_ops.json")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", default="", help="comma-separated substrings of row names")
    a = ap.parse_args()
    binary = os.path.join(a.llama_cpp, "build", "bin", "test-backend-ops")
    if not os.access(binary, os.X_OK):
        sys.exit(f"error: {binary} not found or not executable (build llama.cpp with -DLLAMA_BUILD_TESTS=ON)")
    commit = "?"
    info = os.path.join(a.llama_cpp, "build", "common", "build-info.cpp")
    if os.path.exists(info):
        m = re.search(r'LLAMA_COMMIT = "([^"]+)"', open(info).read())
        commit = m.group(1) if m else commit
    want = [r for r in a.rows.split(",") if r]
    rows = {}
    for name, wtype, n, unit in ROWS:
        if want and not any(w in name for w in want):
            continue
        us = run_case(binary, wtype, n, a.threads)
        if unit == "bytes":
            rate = 4096 * 14336 * BYTES_PER_WEIGHT[wtype] / (us * 1e-6) / 1e9  # GB/s
            ms = GEMV_MATS * GEMV_N * GEMV_K * BYTES_PER_WEIGHT[wtype] / (rate * 1e9) * 1e3
            rows[name] = {"ms": ms, "llama_cpp_us": us, "gb_s": rate}
        else:
            rate = 2.0 * 4096 * 14336 * n / (us * 1e-6) / 1e9  # GFLOP/s
            ms = 2.0 * PREFILL_M * GEMV_N * GEMV_K / (rate * 1e9) * 1e3
            rows[name] = {"ms": ms, "llama_cpp_us": us, "gflop_s": rate}
        print(f"{name:<20} llama.cpp {us / 1e3:9.2f} ms/run  -> {ms:9.2f} ms for the opc row", file=sys.stderr)
    out = {"name": f"llama.cpp {commit}", "threads": a.threads, "rows": rows}
    with open(a.output, "w") as f:
        json.dump(out, f, indent=2)
    print(f"wrote {a.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
