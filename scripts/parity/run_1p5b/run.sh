#!/bin/bash
# A STaSC run of the Qwen2.5-1.5B shape (random weights, SmolLM2 tokenizer) on one GPU: peak GPU memory over the
# whole process (nvidia-smi every 100 ms) and per-phase time and throughput from metrics.json.
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/torch/lib:$LD_LIBRARY_PATH
PY=/opt/torch/.venv/bin/python
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
$PY .gpu_run/make_model.py /tmp/qwen15b 2>&1 | grep -v Warn | tail -2
cp .gpu_run/tokenizer.json .gpu_run/tokenizer_config.json /tmp/qwen15b/
( while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; sleep 0.1; done ) > /tmp/mem.log &
MON=$!
/usr/bin/time -v .gpu_run/stasc run --config .gpu_run/stasc.yaml --ft_config .gpu_run/ft.yaml --out /tmp/run 2>&1 | grep -v "^\s*$" | tail -25
kill $MON
echo "peak GPU memory used (nvidia-smi, MiB): $(sort -n /tmp/mem.log | tail -1)"
echo "idle GPU memory before (MiB): $(head -1 /tmp/mem.log)"
for n in 0 1; do echo "iter_$n:"; cat /tmp/run/iter_$n/metrics.json | $PY -c 'import json,sys; m=json.load(sys.stdin); print({k:m[k] for k in ["filtered_pairs","trained","train_loss","phase_seconds","tokens_per_s"]})'; done
cp -r /tmp/run/iter_0/metrics.json $OUT/iter0_metrics.json; cp /tmp/run/iter_1/metrics.json $OUT/iter1_metrics.json; cp /tmp/mem.log $OUT/mem.log
