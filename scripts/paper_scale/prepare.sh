#!/bin/bash
# Prepares a payload folder (PAYLOAD, default .gpu_run/) for a paper-scale STaSC iteration on the GPU machine (device
# tool, carry that folder): the stripped release binary, SmolLM2's tokenizer files (a random-weight model only needs
# ids below its vocabulary), the configs, and QUESTIONS train + QUESTIONS test questions made from data/demo_nq
# (default 500 + 500, the paper's size). BEFORE=path/to/stasc adds an older binary as stasc_before, so run.sh can
# measure before and after in the same call; PROFILE=debug carries the dev-profile binary instead of the release one
# (when a release build is not at hand; the GPU does the work either way). Then, on the device: bash PAYLOAD/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
questions="${QUESTIONS:-500}"
payload="${PAYLOAD:-.gpu_run}"
# Keep an older binary that lives in the payload itself across the rebuild.
if [ -n "${BEFORE:-}" ]; then cp "$BEFORE" /tmp/stasc_before.$$; fi
rm -rf "$payload" && mkdir -p "$payload/data"
if [ -n "${BEFORE:-}" ]; then mv /tmp/stasc_before.$$ "$payload/stasc_before"; fi
profile="${PROFILE:-release}"
if [ "$profile" = release ]; then cargo build --release --quiet; else cargo build --quiet; fi
cp "target/$profile/stasc" "$payload/stasc" && strip "$payload/stasc"
cp .stasc/models/SmolLM2-135M-Instruct/{tokenizer.json,tokenizer_config.json} "$payload/"
cp scripts/parity/run_1p5b/make_model.py scripts/paper_scale/{stasc.yaml,run.sh} "$payload/"
cp configs/fine_tune.yaml "$payload/ft.yaml"
cp -r few_shots templates "$payload/"
# The HF baseline, to run in the same call.
cp scripts/bench/hf_baseline.py "$payload/"
python3 - "$questions" "$payload" <<'PY'
import json, sys
n, payload = int(sys.argv[1]), sys.argv[2]
rows = [json.loads(l) for f in ("data/demo_nq/train.jsonl", "data/demo_nq/test.jsonl") for l in open(f)]
for split in ("train", "test"):
    with open(f"{payload}/data/{split}.jsonl", "w") as out:
        for i in range(n):
            r = dict(rows[i % len(rows)])
            r["question_id"] = f"{split}{i}"
            r["question_text"] = f"{r['question_text']} (variant {i})"
            out.write(json.dumps(r) + "\n")
PY
echo "prepared $payload with $questions + $questions questions"
