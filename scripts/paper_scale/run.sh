#!/bin/bash
# Iteration 0 of a paper-scale STaSC run (`stasc eval`: initial answers and corrections, no fine-tuning) of the
# Qwen2.5-1.5B shape with random weights, once per gpu_memory_utilization in CAPS (default "0.9"): the process's
# GPU memory as a series (nvidia-smi every 100 ms) with its peak, and per-phase time and tokens/s. LABEL names the
# runs (e.g. when PYTORCH_CUDA_ALLOC_CONF is set to compare allocator settings); SKIP_MODEL=1 reuses /tmp/qwen15b.
set -u
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/torch/lib:${LD_LIBRARY_PATH:-}
PY=/opt/torch/.venv/bin/python
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if [ "${SKIP_MODEL:-0}" != 1 ]; then
  $PY .gpu_run/make_model.py /tmp/qwen15b 2>&1 | grep -v Warn | tail -1
  cp .gpu_run/tokenizer.json .gpu_run/tokenizer_config.json /tmp/qwen15b/
fi
label="${LABEL:-default}"
for cap in ${CAPS:-0.9}; do
  name="${label}_$cap"
  sed "s/^run_name: .*/run_name: $name\ngpu_memory_utilization: $cap/" .gpu_run/stasc.yaml > "/tmp/stasc_$name.yaml"
  rm -rf "/tmp/run_$name"   # a warm machine keeps /tmp: never resume an earlier measurement
  ( while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; sleep 0.1; done ) > "$OUT/mem_$name.log" &
  MON=$!
  start=$(date +%s)
  .gpu_run/stasc eval --config "/tmp/stasc_$name.yaml" --ft_config .gpu_run/ft.yaml --out "/tmp/run_$name" > "$OUT/log_$name.txt" 2>&1
  rc=$?
  kill $MON
  total=$($PY -c "print(round($(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits) / 1024, 1))")
  echo "$label, gpu_memory_utilization $cap: rc=$rc, $(( $(date +%s) - start )) s, peak GPU memory $(sort -n "$OUT/mem_$name.log" | tail -1) MiB (card: $total GiB; idle before: $(head -1 "$OUT/mem_$name.log") MiB)"
  $PY -c "
import json; m = json.load(open('/tmp/run_$name/iter_0/metrics.json'))
print('  seconds', {k: round(v, 1) for k, v in m['phase_seconds'].items()}, 'tokens/s', {k: round(v) for k, v in m['tokens_per_s'].items()})" || tail -3 "$OUT/log_$name.txt"
done
