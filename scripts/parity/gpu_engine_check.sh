#!/bin/bash
# Model-engine checks on the GPU machine, in one device call: parity with transformers (tiny f32 models and the
# Qwen2.5-1.5B shape in bf16), CUDA-graph decode == eager decode, and the generation benchmark beside HF's.
#
# Prepare here (CPU machine), then run on the device from the repo root with `carry: [".gpu"]`:
#   cargo build --release --bin stasc && cargo test --release --test it --no-run
#   mkdir -p .gpu && cp target/release/stasc .gpu/stasc && cp scripts/bench/hf_baseline.py .gpu/
#   cp "$(ls -t target/release/deps/it-* | grep -v '\.d$' | head -1)" .gpu/it && strip .gpu/stasc .gpu/it
#   (device) bash scripts/parity/gpu_engine_check.sh [parity|bench|profile|all]
set -o pipefail
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/torch/lib:$LD_LIBRARY_PATH
PY=${PY:-/opt/torch/.venv/bin/python}
what="${1:-all}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if [ "$what" = all ] || [ "$what" = parity ]; then
  $PY scripts/parity/gpu_parity.py --out /tmp/parity 2>&1 | grep -v "Writing\|it/s"
  STASC_PARITY_DIR=/tmp/parity STASC_PARITY_DEVICE=cuda .gpu/it parity_dir_from_env --nocapture 2>&1 \
    | grep -E "PARITY|test result|panicked"
  .gpu/it cuda_graphs_give_the_same_samples --nocapture 2>&1 | grep -E "CUDA graphs|test result|panicked"
fi
if [ "$what" = all ] || [ "$what" = bench ]; then
  for bs in 1 64 256; do
    .gpu/stasc bench generate --config-json scripts/parity/qwen2.5-1.5b-config.json --batch $bs --prompt-len 256 \
      --new-tokens 256 --device cuda
  done
  $PY .gpu/hf_baseline.py --part gen --batch 1,64,256 2>&1 | grep -v Warn
fi
if [ "$what" = all ] || [ "$what" = profile ]; then
  $PY scripts/parity/profile_decode_step.py --batch 256 --attend 384 2>&1 | grep -v Warn
fi
