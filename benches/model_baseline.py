#!/usr/bin/env python3
"""Hugging Face transformers baseline for `opc bench-model` (issue 6): prefill and batch-1 greedy
decode throughput of checkpoints written by `opc model init`, on N threads (default 2), written as
the JSON `opc bench-model --baselines FILE` reads:

    {"name": "transformers X (torch Y)", "threads": 2,
     "models": {DIR_NAME: {"prefill_tok_s": ..., "decode_tok_s": ..., "prompt_tokens": 512,
                           "decode_tokens": 32, "path": DIR, "arch": ..., "weights": ...}}}

Models are keyed by the name of their directory, which is how `opc bench-model --model DIR` finds
its row. One JSON line per model is also printed on stdout as it finishes.

    python3 benches/model_baseline.py /work/models/llama-0.85b /work/models/gptoss-2.7b \
        -o transformers_baseline.json

Needs torch + transformers (+ accelerate for the MXFP4 gpt-oss checkpoints); only this script
does, never the tests or CI.

MXFP4 (gpt-oss experts): on CPU transformers has no built-in MXFP4 kernel (native CPU MXFP4 needs
the `kernels` package, which fetches kernels from the Hub, and use_kernels=True); its default is to
dequantize the experts to bf16 while loading. This script asks for that explicitly
(Mxfp4Config(dequantize=True)), so every matmul runs in bf16 and a decode step reads the experts as
bf16 (about 3.8x the bytes of the packed MXFP4 weights opc and llama.cpp read).

Method: one untimed prefill of the prompt (warm-up), then `--reps` timed prefills of the same
random prompt (best kept); decode continues from the last prefill's KV cache: `--warmup-steps`
untimed greedy steps, then `--decode-tokens` timed steps (one token per forward, cache reused).
"""
import argparse
import json
import math
import os
import sys
import time

import torch


def load(path):
    """Model in bf16, eval mode; returns (model, description of the weights as run)."""
    from transformers import AutoModelForCausalLM

    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    kw = {}
    weights = "bf16"
    if (cfg.get("quantization_config") or {}).get("quant_method") == "mxfp4":
        from transformers import Mxfp4Config

        kw["quantization_config"] = Mxfp4Config(dequantize=True)
        weights = "MXFP4 experts dequantized to bf16 at load (no CPU MXFP4 kernel in transformers)"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, **kw)
    model.eval()
    return model, cfg, weights


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


@torch.inference_mode()
def measure(model, vocab, prompt_tokens, decode_tokens, warmup_steps, reps, seed):
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, vocab, (1, prompt_tokens), generator=g)
    prefill = lambda: model(prompt, use_cache=True)  # noqa: E731
    prefill()  # warm-up
    best = math.inf
    out = None
    for _ in range(max(1, reps)):
        secs, out = timed(prefill)
        best = min(best, secs)
    past = out.past_key_values
    nxt = out.logits[:, -1:].argmax(-1)

    def steps(n):
        nonlocal past, nxt
        for _ in range(n):
            o = model(nxt, past_key_values=past, use_cache=True)
            past = o.past_key_values
            nxt = o.logits[:, -1:].argmax(-1)

    steps(warmup_steps)
    secs, _ = timed(lambda: steps(decode_tokens))
    return prompt_tokens / best, decode_tokens / secs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="checkpoint directories (config.json + safetensors)")
    ap.add_argument("-o", "--output", help="write the baselines JSON here")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--warmup-steps", type=int, default=4)
    ap.add_argument("--reps", type=int, default=2, help="timed prefills (best kept)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if min(a.threads, a.prompt_tokens, a.decode_tokens) < 1:
        ap.error("--threads, --prompt-tokens and --decode-tokens must be at least 1")

    import transformers

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    doc = {"name": f"transformers {transformers.__version__} (torch {torch.__version__})", "threads": a.threads, "models": {}}
    for path in a.models:
        t0 = time.perf_counter()
        model, cfg, weights = load(path)
        load_s = time.perf_counter() - t0
        prefill, decode = measure(model, cfg["vocab_size"], a.prompt_tokens, a.decode_tokens, a.warmup_steps, a.reps, a.seed)
        key = os.path.basename(os.path.normpath(path))
        row = {
            "path": os.path.abspath(path),
            "arch": cfg["architectures"][0],
            "weights": weights,
            "prefill_tok_s": round(prefill, 3),
            "decode_tok_s": round(decode, 3),
            "prompt_tokens": a.prompt_tokens,
            "decode_tokens": a.decode_tokens,
            "load_s": round(load_s, 1),
        }
        doc["models"][key] = row
        print(json.dumps({"model": key, "baseline": doc["name"], "threads": a.threads, **row}), flush=True)
        del model
    if a.output:
        with open(a.output, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        print(f"wrote {a.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
