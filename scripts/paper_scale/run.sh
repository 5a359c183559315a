#!/bin/bash
# Iteration 0 of a paper-scale STaSC run (`stasc eval`: initial answers and corrections, no fine-tuning) of the
# Qwen2.5-1.5B shape with random weights, once per gpu_memory_utilization in CAPS (default "0.9"): every GPU's memory
# as a series (nvidia-smi every 100 ms) with its peak, and per-phase time, tokens/s and prefill tokens (run / saved
# by the shared prefix). Settings (environment): PAYLOAD the folder prepare.sh filled (default: this script's own),
# BIN the binary in it (default stasc; stasc_before for the older one), DEVICES the GPUs (STASC_DEVICES, e.g.
# cuda:0,cuda:1; default the config's), LABEL a name for the runs, SKIP_MODEL=1 reuses /tmp/qwen15b, TIMEOUT stops a
# run after that many seconds (its log and memory series still come back), CHUNK sets chunk_prompts (prompts per
# generate call and saved chunk; default the config's). STASC_GENERATE_STATS=1 logs every generate call.
set -u
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/torch/lib:${LD_LIBRARY_PATH:-}
PY=/opt/torch/.venv/bin/python
P="${PAYLOAD:-$(dirname "$0")}"
BIN="${BIN:-stasc}"
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
[ -n "${DEVICES:-}" ] && export STASC_DEVICES="$DEVICES"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1
if [ "${SKIP_MODEL:-0}" != 1 ]; then
  $PY "$P/make_model.py" /tmp/qwen15b 2>&1 | grep -v Warn | tail -1
  cp "$P/tokenizer.json" "$P/tokenizer_config.json" /tmp/qwen15b/
fi
label="${LABEL:-$BIN}"
for cap in ${CAPS:-0.9}; do
  name="${label}_$cap"
  sed -e "s|^run_name: .*|run_name: $name\ngpu_memory_utilization: $cap${CHUNK:+\nchunk_prompts: $CHUNK}|" -e "s|\.gpu_run/|$P/|" "$P/stasc.yaml" \
    > "/tmp/stasc_$name.yaml"
  rm -rf "/tmp/run_$name"   # a warm machine keeps /tmp: never resume an earlier measurement
  ( while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | paste -sd,; sleep 0.1; done ) \
    > "$OUT/mem_$name.log" &
  MON=$!
  start=$(date +%s)
  timeout "${TIMEOUT:-0}" "$P/$BIN" eval --config "/tmp/stasc_$name.yaml" --ft_config "$P/ft.yaml" --out "/tmp/run_$name" \
    > "$OUT/log_$name.txt" 2>&1
  rc=$?
  kill $MON
  echo "$label (${STASC_DEVICES:-default devices}), gpu_memory_utilization $cap: rc=$rc, $(( $(date +%s) - start )) s"
  $PY - "$OUT/mem_$name.log" "/tmp/run_$name/iter_0/metrics.json" <<'PYEOF' || tail -3 "$OUT/log_$name.txt"
import json, sys
rows = [[int(x) for x in l.split(",")] for l in open(sys.argv[1]) if l.strip()]
print("  peak GPU memory per GPU (MiB):", [max(r[i] for r in rows) for i in range(len(rows[0]))],
      "idle before:", rows[0])
m = json.load(open(sys.argv[2]))
print("  seconds", {k: round(v, 1) for k, v in m["phase_seconds"].items()},
      "tokens/s", {k: round(v) for k, v in m["tokens_per_s"].items()})
if m.get("prefill_tokens"):
    print("  prefill tokens run", m["prefill_tokens"], "saved", m.get("prefill_tokens_saved"))
PYEOF
  grep "^note: generation on" "$OUT/log_$name.txt" | head -2
done
