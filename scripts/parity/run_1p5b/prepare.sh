#!/bin/bash
# Prepares .gpu_run/ here for a STaSC run of the Qwen2.5-1.5B shape on the GPU machine (device tool, carry .gpu_run):
# the stripped release binary, SmolLM2's tokenizer files (the random model only needs ids < its vocabulary), the
# configs, and 8 + 8 demo questions whose gold answer "the" normalises to nothing, so in_acc counts every answer
# correct and every pair passes the non_decreasing filter: the run always fine-tunes (this measures memory and speed,
# not accuracy). Then, on the device: bash .gpu_run/run.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p .gpu_run/data
cargo build --release
cp target/release/stasc .gpu_run/stasc && strip .gpu_run/stasc
cp .stasc/models/SmolLM2-135M-Instruct/{tokenizer.json,tokenizer_config.json} .gpu_run/
cp scripts/parity/run_1p5b/{make_model.py,stasc.yaml,ft.yaml,run.sh} .gpu_run/
python3 - <<'PY'
import json
rows = [json.loads(l) for f in ("data/demo_nq/train.jsonl", "data/demo_nq/test.jsonl") for l in open(f)]
for r in rows:
    r["reference"] = ["the"]
open(".gpu_run/data/train.jsonl", "w").write("".join(json.dumps(r) + "\n" for r in rows[:8]))
open(".gpu_run/data/test.jsonl", "w").write("".join(json.dumps(r) + "\n" for r in rows[8:16]))
PY
