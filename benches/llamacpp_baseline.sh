#!/usr/bin/env bash
# llama.cpp baseline for `opc bench-model` (issue 6): converts checkpoints written by
# `opc model init` to GGUF with llama.cpp's own convert_hf_to_gguf.py (non-expert weights bf16;
# gpt-oss MXFP4 experts stay MXFP4, which the converter repacks to ggml's MXFP4 layout), runs
# `llama-bench -t THREADS -p 512 -n 32 -ngl 0` on each and writes the JSON
# `opc bench-model --baselines FILE` reads:
#   {"name": "llama.cpp BUILD", "threads": 2,
#    "models": {DIR_NAME: {"prefill_tok_s", "decode_tok_s", "prompt_tokens", "decode_tokens", ...}}}
#
# Usage: benches/llamacpp_baseline.sh [-o OUT.json] [-t THREADS] [-g GGUF_DIR] LLAMA_CPP_DIR MODEL_DIR...
#   LLAMA_CPP_DIR: a llama.cpp checkout with build/bin/llama-bench built and its gguf-py;
#   GGUF_DIR: where the .gguf files go (default: a temporary directory, removed at the end).
# Needs python3 with torch, numpy and transformers (the converter's imports). Downloads nothing.
#
# opc's tokenizer is a small byte-level BPE whose only pre-tokenizer is ByteLevel with the GPT-2
# regex. The converter recognizes pre-tokenizers by a hash of known models' token ids, which a
# synthetic vocabulary cannot match, so when (and only when) the hash is unknown and tokenizer.json
# pre-tokenizes exactly that way, the conversion declares llama.cpp's `gpt-2` pre-tokenizer (the
# same regex) instead of failing.
set -euo pipefail

out=/dev/stdout threads=2 gguf_dir="" python=${PYTHON:-python3}
prompt_tokens=512 decode_tokens=32
usage() { sed -n 's/^# Usage: //p' "$0" >&2; exit 2; }
while getopts "o:t:g:h" opt; do
  case $opt in
    o) out=$OPTARG ;;
    t) threads=$OPTARG ;;
    g) gguf_dir=$OPTARG ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 2 ] || usage
llama=$(cd "$1" && pwd); shift
bench=$llama/build/bin/llama-bench
[ -x "$bench" ] || { echo "error: $bench not found (build llama.cpp first)" >&2; exit 2; }
[ -f "$llama/convert_hf_to_gguf.py" ] || { echo "error: $llama/convert_hf_to_gguf.py not found" >&2; exit 2; }
if [ -z "$gguf_dir" ]; then
  gguf_dir=$(mktemp -d)
  trap 'rm -rf "$gguf_dir"' EXIT
fi
mkdir -p "$gguf_dir"

# convert_hf_to_gguf.py with the pre-tokenizer fallback described above
convert() {
  "$python" - "$llama" "$1" "$2" <<'EOF'
import json, runpy, sys
from pathlib import Path
llama, model, outfile = sys.argv[1:4]
sys.path[:0] = [llama, str(Path(llama) / "gguf-py")]
from conversion.base import TextModel
known = TextModel.get_vocab_base_pre
def pre(self, tokenizer):
    try:
        return known(self, tokenizer)
    except NotImplementedError:
        tj = json.loads((Path(self.dir_model) / "tokenizer.json").read_text())
        p = tj.get("pre_tokenizer") or {}
        if p.get("type") == "ByteLevel" and p.get("use_regex", True):
            return "gpt-2"
        raise
TextModel.get_vocab_base_pre = pre
sys.argv = ["convert_hf_to_gguf.py", model, "--outtype", "bf16", "--outfile", outfile]
runpy.run_path(str(Path(llama) / "convert_hf_to_gguf.py"), run_name="__main__")
EOF
}

rows=$gguf_dir/rows.jsonl
: > "$rows"
for model in "$@"; do
  [ -f "$model/config.json" ] || { echo "error: $model/config.json not found" >&2; exit 2; }
  [ -f "$model/tokenizer.json" ] || { echo "error: $model/tokenizer.json not found (opc model init writes one; or pass --tokenizer)" >&2; exit 2; }
  name=$(basename "$(cd "$model" && pwd)")
  gguf=$gguf_dir/$name.gguf
  [ -s "$gguf" ] || convert "$model" "$gguf" >&2
  "$bench" -m "$gguf" -t "$threads" -p "$prompt_tokens" -n "$decode_tokens" -ngl 0 -o json > "$gguf_dir/$name.bench.json"
  "$python" - "$model" "$gguf" "$gguf_dir/$name.bench.json" <<'EOF' | tee /dev/stderr >> "$rows"
import json, os, sys
model, gguf, runs = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3]))
p = [r for r in runs if r["n_prompt"] > 0 and r["n_gen"] == 0][0]
g = [r for r in runs if r["n_gen"] > 0 and r["n_prompt"] == 0][0]
cfg = json.load(open(os.path.join(model, "config.json")))
row = {"path": os.path.abspath(model), "arch": cfg["architectures"][0], "gguf": gguf,
       "weights": p["model_type"], "gguf_bytes": p["model_size"],
       "prefill_tok_s": round(p["avg_ts"], 3), "prefill_stdev": round(p["stddev_ts"], 3),
       "decode_tok_s": round(g["avg_ts"], 3), "decode_stdev": round(g["stddev_ts"], 3),
       "prompt_tokens": p["n_prompt"], "decode_tokens": g["n_gen"], "reps": len(p["samples_ts"]),
       "build": f'{p["build_commit"]} (build {p["build_number"]}, {p["cpu_info"]})'}
print(json.dumps({os.path.basename(os.path.abspath(model)): row}))
EOF
done

"$python" - "$rows" "$threads" > "$out" <<'EOF'
import json, sys
models = {}
for line in open(sys.argv[1]):
    models.update(json.loads(line))
build = next(iter(models.values()))["build"]
json.dump({"name": "llama.cpp " + build, "threads": int(sys.argv[2]), "models": models}, sys.stdout, indent=1)
print()
EOF
