#!/bin/bash
# The windowed sampler against an older binary, one device call. Prepare with
#   BEFORE=<older stasc> QUESTIONS=250 PAYLOAD=.gpu_run scripts/paper_scale/prepare.sh
#   cp <stripped tests/it binary> .gpu_run/it; pwd > .gpu_run/built_in
#   cp scripts/kernels/{window.sh,trace_summary.py} scripts/parity/qwen2.5-1.5b-config.json .gpu_run/
# then on the device: bash .gpu_run/window.sh. It runs the sampler's GPU tests; `stasc bench generate` at batch 1, 64
# and 256 for the older binary, this one with STASC_WINDOW_SAMPLER=0 (radix kernels) and this one (windowed); HF
# generate on the same shape; Kineto traces of this binary at batch 256 and 1; and iteration 0 of the paper-scale
# run (scripts/paper_scale/run.sh) for both binaries.
set -o pipefail
G="$(dirname "$0")"
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/torch/lib:$LD_LIBRARY_PATH
PY=${PY:-/opt/torch/.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
manifest=${STASC_BUILT_IN:-$(cat "$G/built_in" 2>/dev/null || echo /work/main)}
if [ ! -e "$manifest" ]; then mkdir -p "$(dirname "$manifest")" && ln -s "$PWD" "$manifest"; fi
echo "== GPU tests"
"$G/it" --ignored --test-threads=1 --nocapture sort_free_kernel fused_kernels_are_captured fused_decode_gives packed_norm 2>&1 |
  grep -E "SAMPLER|GREEDY|DECODE|NORM8|CUDA graphs|^test |test result|panicked|assert"
bench() {
  "$1" bench generate --config-json "$G/qwen2.5-1.5b-config.json" --prompt-len 256 --new-tokens 256 \
    --device cuda "${@:2}" 2>&1 | grep "tok/s"
}
echo "== stasc bench generate: older binary / radix kernels / windowed"
for bs in 1 64 256; do
  echo "-- batch $bs"; bench "$G/stasc_before" --batch $bs
  STASC_WINDOW_SAMPLER=0 bench "$G/stasc" --batch $bs
  bench "$G/stasc" --batch $bs
done
echo "== HF generate, same shape"
$PY "$G/hf_baseline.py" --part gen --batch 1,64,256 2>&1 | grep -v Warn
(
  export LD_LIBRARY_PATH=$(dirname "$(find /opt/torch/.venv -name 'libcupti.so*' | head -1)"):$LD_LIBRARY_PATH
  for bs in 256 1; do
    echo "== Kineto trace, batch $bs (windowed)"
    bench "$G/stasc" --batch $bs --trace /tmp/trace_$bs.json
    $PY "$G/trace_summary.py" /tmp/trace_$bs.json --steps 256 --top 12
  done
)
echo "== paper-scale iteration 0 (stasc eval), older binary then this one"
PAYLOAD="$G" BIN=stasc_before LABEL=before bash "$G/run.sh"
PAYLOAD="$G" BIN=stasc LABEL=windowed SKIP_MODEL=1 bash "$G/run.sh"
