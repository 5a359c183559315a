#!/bin/bash
# The fused kernels on the GPU machine, in one device call (prepare with scripts/kernels/prepare.sh):
# 1. the GPU tests: sort-free sampler kernel == sort path (bf16 and f32, 152k vocabulary), decode logits with the
#    fused kernels vs libtorch ops (f32 and bf16 on a small random Qwen2), CUDA graphs capturing the kernels, greedy
#    tokens with and without them, gemv.cu's products against cuBLAS's (and captured by graphs), windows launched
#    ahead giving the samples of windows read first, tensor-core decode attention against f32 attention, prefill
#    after a cached prefix with flash attention against the explicit mask, the fused
#    AdamW update == the libtorch ops bit for bit, and the CUDA-graph test on the fixtures;
# 2. `stasc bench generate` at batch 1, 64 and 256 (256 + 256 tokens, Qwen2.5-1.5B shape, random bf16 weights)
#    with the fused kernels on and off (STASC_FUSED_KERNELS), then batch 1 greedy, without CUDA graphs and with
#    fewer host syncs (where a batch-1 token's time goes);
# 3. HF generate on the same shape (hf_baseline.py), in the same call;
# 4. (`run.sh trace`) Kineto traces of batch 256 and batch 1 (bench generate --trace), summed per kernel and per
#    kind of kernel by trace_summary.py (--gaps: what surrounds each idle gap): where a decode step's time goes.
set -o pipefail
G="$(dirname "$0")"
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/torch/lib:$LD_LIBRARY_PATH
PY=${PY:-/opt/torch/.venv/bin/python}
what="${1:-all}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
bench() {
  "$G/stasc" bench generate --config-json "$G/qwen2.5-1.5b-config.json" --prompt-len 256 --new-tokens 256 \
    --device cuda "$@" 2>&1 | grep -v "^GPU memory"
}
if [ "$what" = all ] || [ "$what" = tests ]; then
  echo "== GPU tests"
  # The test binary finds tests/fixtures under the directory it was built in (CARGO_MANIFEST_DIR).
  manifest=${STASC_BUILT_IN:-$(cat "$G/built_in" 2>/dev/null || echo /work/main)}
  if [ ! -e "$manifest" ]; then mkdir -p "$(dirname "$manifest")" && ln -s "$PWD" "$manifest"; fi
  "$G/it" --ignored --test-threads=1 --nocapture sort_free_kernel fused_decode_gives fused_kernels_are_captured shared_prefix_attention launching_windows_ahead gemv_kernel tensor_core_decode_attention flash_attention_prefills fused_adamw packed_norm training_op_kernels \
    cuda_graphs_give_the_same 2>&1 | grep -E "SAMPLER|DECODE|GREEDY|LAUNCH AHEAD|GEMV|MMA ATTENTION|EXTEND|NORM8|ADAMW|TRAIN OPS|CUDA graphs|unavailable|^test |test result|panicked|assert"
fi
if [ "$what" = all ] || [ "$what" = generate ]; then
  echo "== stasc generate on the tiny fixtures, fused kernels on vs off (CUDA): greedy f32 and bf16, sampled f32"
  for m in qwen2_untied phi3; do
    for args in "--temperature 0 --dtype f32" "--temperature 0 --dtype bf16" "--temperature 0.9 --top-p 0.9 --top-k 50 --dtype f32"; do
      for fused in 1 0; do
        STASC_FUSED_KERNELS=$fused "$G/stasc" generate --model "tests/fixtures/tiny_models/$m" --prompt "hello world" \
          --n 4 --max-tokens 60 --seed 3 --device cuda --json $args > "/tmp/gen_$fused.jsonl" 2>/tmp/gen_err_$fused
      done
      if cmp -s /tmp/gen_1.jsonl /tmp/gen_0.jsonl && [ -s /tmp/gen_1.jsonl ]; then r=identical; else r=DIFFERENT; fi
      echo "GENERATE $m $args: fused vs libtorch ops $r ($(wc -l < /tmp/gen_1.jsonl) samples)"; cat /tmp/gen_err_1 | head -3
    done
  done
fi
if [ "$what" = all ] || [ "$what" = bench ]; then
  echo "== stasc bench generate (fused kernels on, then off)"
  for fused in 1 0; do
    for bs in 1 64 256; do
      echo "-- STASC_FUSED_KERNELS=$fused batch $bs"
      STASC_FUSED_KERNELS=$fused bench --batch $bs
    done
  done
  echo "== batch 1: greedy / no CUDA graphs / host sync every 64 steps (fused on)"
  bench --batch 1 --temperature 0
  bench --batch 1 --no-cuda-graphs
  bench --batch 1 --sync-every 64
  echo "== HF generate, same shape"
  $PY "$G/hf_baseline.py" --part gen --batch 1,64,256 2>&1 | grep -v Warn
fi
if [ "$what" = all ] || [ "$what" = trace ]; then
  export LD_LIBRARY_PATH=$(dirname "$(find /opt/torch/.venv -name 'libcupti.so*' | head -1)"):$LD_LIBRARY_PATH
  for bs in 256 1; do
    echo "== Kineto trace, batch $bs (fused kernels on, CUDA graphs)"
    bench --batch $bs --trace /tmp/trace_$bs.json | grep "tok/s"
    $PY "$G/trace_summary.py" /tmp/trace_$bs.json --steps 256 --top 12 --gaps
  done
fi
