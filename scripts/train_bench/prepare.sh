#!/bin/bash
# Prepares .gpu_train/ for scripts/train_bench/run.sh on the GPU machine (device tool, carry .gpu_train): the stripped
# stasc binary (BIN, default target/release/stasc), the Qwen2.5-1.5B config and make_model.py, SmolLM2's tokenizer
# files, scripts/paper_scale's run settings with QUESTIONS (default 16) train + 2 test questions of data/demo_nq, the
# reference's fine_tune.yaml, and the HF baselines; with TEST_BIN (the tests/it binary) also the GPU tests.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="${BIN:-target/release/stasc}"
rm -rf .gpu_train && mkdir -p .gpu_train/tokenizer .gpu_train/data
cp "$bin" .gpu_train/stasc && strip .gpu_train/stasc
if [ -n "${TEST_BIN:-}" ]; then cp "$TEST_BIN" .gpu_train/it && strip .gpu_train/it; fi
cp .stasc/models/SmolLM2-135M-Instruct/{config.json,generation_config.json,tokenizer.json,tokenizer_config.json} \
  .gpu_train/tokenizer/
cp scripts/parity/qwen2.5-1.5b-config.json scripts/parity/run_1p5b/make_model.py scripts/paper_scale/stasc.yaml \
  scripts/train_bench/{run.sh,graphs.sh,hf_realistic.py} .gpu_train/
cp configs/fine_tune.yaml .gpu_train/ft.yaml
cp -r few_shots templates .gpu_train/
cp scripts/bench/hf_baseline.py .gpu_train/
python3 - "${QUESTIONS:-16}" <<'PY'
import json, sys
n = int(sys.argv[1])
rows = [json.loads(l) for f in ("data/demo_nq/train.jsonl", "data/demo_nq/test.jsonl") for l in open(f)]
for split, count in (("train", n), ("test", 2)):
    with open(f".gpu_train/data/{split}.jsonl", "w") as out:
        for i in range(count):
            r = dict(rows[i % len(rows)], question_id=f"{split}{i}", reference=["the"])
            r["question_text"] = f"{r['question_text']} (variant {i})"
            out.write(json.dumps(r) + "\n")
PY
du -sh .gpu_train
