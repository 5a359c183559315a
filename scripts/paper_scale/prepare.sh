#!/bin/bash
# Prepares .gpu_run/ for a paper-scale STaSC iteration on the GPU machine (device tool, carry .gpu_run): the stripped
# release binary, SmolLM2's tokenizer files (a random-weight model only needs ids below its vocabulary), the configs,
# and QUESTIONS train + QUESTIONS test questions made from data/demo_nq (default 500 + 500, the paper's size).
# Then, on the device: bash .gpu_run/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
questions="${QUESTIONS:-500}"
rm -rf .gpu_run && mkdir -p .gpu_run/data
cargo build --release --quiet
cp target/release/stasc .gpu_run/stasc && strip .gpu_run/stasc
cp .stasc/models/SmolLM2-135M-Instruct/{tokenizer.json,tokenizer_config.json} .gpu_run/
cp scripts/parity/run_1p5b/make_model.py scripts/paper_scale/{stasc.yaml,run.sh} .gpu_run/
cp configs/fine_tune.yaml .gpu_run/ft.yaml
cp -r few_shots templates .gpu_run/
python3 - "$questions" <<'PY'
import json, sys
n = int(sys.argv[1])
rows = [json.loads(l) for f in ("data/demo_nq/train.jsonl", "data/demo_nq/test.jsonl") for l in open(f)]
for split in ("train", "test"):
    with open(f".gpu_run/data/{split}.jsonl", "w") as out:
        for i in range(n):
            r = dict(rows[i % len(rows)])
            r["question_id"] = f"{split}{i}"
            r["question_text"] = f"{r['question_text']} (variant {i})"
            out.write(json.dumps(r) + "\n")
PY
echo "prepared .gpu_run with $questions + $questions questions"
