#!/bin/bash
# Prepares .gpu_run/ for scripts/multi_gpu/check.sh: everything scripts/parity/run_1p5b/prepare.sh puts there (the
# stripped release binary, tokenizer, configs, 16 questions), shorter samples, the reference accelerate config and
# the run comparison script. Then, on the device: bash .gpu_run/check.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/parity/run_1p5b/prepare.sh
sed -i 's/^max_tokens: .*/max_tokens: 128/' .gpu_run/stasc.yaml
cp configs/accelerate_config.yaml .gpu_run/
cp scripts/multi_gpu/{check.sh,compare_runs.py,repeat.sh,gemm_rows.py} .gpu_run/
