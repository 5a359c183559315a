#!/bin/bash
# Issue #13's measurements on the GPU machine in one device call (prepare with scripts/train_bench/prepare.sh, carry
# .gpu_train); prints one log.
# 1. Pairs of a paper-scale iteration: `stasc run` of the Qwen2.5-1.5B shape with random weights (make_model.py),
#    SmolLM2's tokenizer, scripts/paper_scale's settings (few-shot prompts, K 5/5, temperature 0.6, top_p 0.9, 256 new
#    tokens) on QUESTIONS train questions of data/demo_nq as prepare.sh makes them, gold answers "the" (normalises to
#    nothing, so every pair passes: the lengths are what matter), the reference's fine_tune.yaml and 2 ranks on the
#    one GPU: it samples, writes iter_0/train_pairs.jsonl and fine-tunes on them (packed, the new default).
# 2. `stasc bench train --realistic` on those pairs at the reference's settings: today's path against packed passes.
# 3. HF transformers on the same pairs the way HF Trainer runs those settings (hf_realistic.py).
# 4. The fixed-shape benchmark beside hf_baseline.py; 5. the checkpoint's save + reload time.
# Step 0 (when prepare.sh copied the test binary): the fused AdamW kernel against the libtorch ops on the GPU,
# packed passes' variable-length flash attention against the padded layout, and CUDA-graph passes (the default)
# against eager ones. scripts/train_bench/graphs.sh measures the graphs on a paper-scale `stasc run`.
# Step 2 runs with the fused optimiser kernel (STASC_FUSED_KERNELS=1) and without, then once with
# STASC_TRAIN_PROFILE=1 for where a step's time goes (synchronising after each phase: not a throughput figure).
# 6. (two GPUs, nvidia-h200-x2) the 2-GPU GPU test (overlapped and sharded gradient sums give the whole-sum update
#    on NCCL), then `stasc bench train-parallel --realistic` at the reference's settings on both GPUs: the default
#    (sums after backward, sharded optimiser state) and sums overlapped with backward (--overlap), each against one
#    unsharded sum after backward (--compare-unoverlapped), and the default against one GPU at the same global
#    batch; then the phase profile of both GPUs' steps in each configuration.
# 7. (two GPUs) where a 2-GPU step's time goes: the phase profile (with host queueing and CPU time) of one rank alone
#    on one GPU, of both GPUs, and of two one-rank processes side by side (no shared process), plus both GPUs with
#    OMP_NUM_THREADS=1.
# PARTS (default "0 1 2 3 4 5", plus 6 when two GPUs are visible) picks the steps; without 1, step 2 uses the .gpu_train/train_pairs.jsonl of an
# earlier call (copy it there before prepare.sh's payload is carried).
set -u
N=$(nvidia-smi -L | wc -l)
if [ "$N" -ge 2 ]; then PARTS=" ${PARTS:-0 1 2 3 4 5 6} "; else PARTS=" ${PARTS:-0 1 2 3 4 5} "; fi
part() { [[ "$PARTS" == *" $1 "* ]]; }
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/torch/lib:${LD_LIBRARY_PATH:-}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
PY=/opt/torch/.venv/bin/python
G=.gpu_train
CFG=$G/qwen2.5-1.5b-config.json
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY $G/make_model.py /tmp/qwen15b 2>&1 | grep -v Warn | tail -1
cp $G/tokenizer/tokenizer.json $G/tokenizer/tokenizer_config.json /tmp/qwen15b/
if [ -x $G/it ] && part 0; then
  echo "== 0. GPU tests: fused AdamW vs libtorch ops; variable-length flash attention vs the padded layout"
  for t in fused_adamw varlen_flash graphed_training fused_weight_gradients training_op_kernels; do
    $G/it --ignored --test-threads=1 --nocapture $t 2>&1 | grep -E "ADAMW|VARLEN|GRAPHS|WGRAD|TRAIN OPS|^test |test result|panicked|assert"
  done
fi
if part 1; then
echo "== 1. stasc run, iteration 0 of a paper-scale run on ${QUESTIONS:-16} questions (pairs + packed fine-tuning)"
sed -e "s#^model_path:.*#model_path: /tmp/qwen15b#" -e "s#^data_path:.*#data_path: $G/data#" \
    -e "s#^num_star_iterations:.*#num_star_iterations: 1\nsample_train_at_last_iteration: false\nonly_better_correction: false\nfilter: non_decreasing#" \
    -e "s#\.gpu_run/#$G/#g" $G/stasc.yaml > /tmp/stasc13.yaml
printf 'num_processes: 2\nmixed_precision: bf16\n' > /tmp/acc13.yaml
( while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; sleep 0.2; done ) > /tmp/mem13.log &
MON=$!
start=$(date +%s)
$G/stasc run --config /tmp/stasc13.yaml --ft_config $G/ft.yaml --accelerate_config_path /tmp/acc13.yaml \
  --out /tmp/run13 > /tmp/run13.log 2>&1
echo "rc=$? $(( $(date +%s) - start )) s, peak GPU memory $(sort -n /tmp/mem13.log | tail -1) MiB (nvidia-smi every 0.2 s)"
kill $MON
$PY -c "
import json; m = json.load(open('/tmp/run13/iter_0/metrics.json')); t = json.load(open('/tmp/run13/iter_0/train.json'))
print('  iteration 0 pairs', m.get('filtered_pairs'), 'seconds', {k: round(v, 1) for k, v in m['phase_seconds'].items()},
      'tokens/s', {k: round(v) for k, v in m['tokens_per_s'].items()})" || tail -5 /tmp/run13.log
cp /tmp/run13/iter_0/train_pairs.jsonl $G/train_pairs.jsonl 2>/dev/null && cp $G/train_pairs.jsonl "${OUT:-/tmp}/" || true
fi
if part 2; then
echo "== 2. stasc bench train --realistic on those pairs (reference settings)"
for switch in X=1 STASC_TRAIN_GRAPHS=0 STASC_VARLEN_ATTENTION=0 STASC_FUSED_KERNELS=0; do
  echo "-- $switch (X=1: the defaults; then CUDA-graph passes, variable-length flash attention or the fused AdamW kernel off)"
  env $switch $G/stasc bench train --config-json $CFG --realistic --pairs $G/train_pairs.jsonl \
    --tokenizer /tmp/qwen15b --warmup 3 --steps ${STEPS:-30} 2>&1 | grep -v "^Qwen2 on"
done
for fused in 1 0; do
  echo "-- phase profile, STASC_FUSED_KERNELS=$fused (synchronised phases)"
  STASC_TRAIN_PROFILE=1 STASC_FUSED_KERNELS=$fused $G/stasc bench train --config-json $CFG --realistic \
    --pairs $G/train_pairs.jsonl --tokenizer /tmp/qwen15b --warmup 3 --steps 12 2>&1 | grep -E "profile"
done
fi
if part 3; then
echo "== 3. HF transformers, same pairs, reference settings"
$PY $G/hf_realistic.py $G/train_pairs.jsonl /tmp/qwen15b --steps ${HF_STEPS:-10} 2>&1 | grep -E "^HF"
fi
if part 4; then
echo "== 4. fixed shape"
$G/stasc bench train --config-json $CFG --batch 16 --seq 512 2>&1 | grep -v "^Qwen2 on"
$PY $G/hf_baseline.py --part train --train-batch 16 2>&1 | grep -E "^HF"
fi
if part 5; then
echo "== 5. checkpoint"
$G/stasc bench checkpoint --config-json $CFG --out /tmp/ckpt_1p5b
fi
if part 6; then
echo "== 6. two GPUs: overlapped gradient sums and sharded optimiser state"
if [ -x $G/it ]; then
  $G/it --ignored --test-threads=1 --nocapture on_two_gpus_overlapped 2>&1 | grep -E "OVERLAP|^test |test result|panicked|assert"
fi
for flags in "" "--overlap --no-baseline"; do
  $G/stasc bench train-parallel --config-json $CFG --realistic --devices cuda:0,cuda:1 --warmup 3 \
    --steps ${STEPS:-30} --compare-unoverlapped $flags 2>&1 | grep -v "^Qwen2 on"
done
echo "-- without CUDA-graph passes (STASC_TRAIN_GRAPHS=0): both GPUs, then one GPU"
STASC_TRAIN_GRAPHS=0 $G/stasc bench train-parallel --config-json $CFG --realistic --devices cuda:0,cuda:1 --warmup 3 \
  --steps ${STEPS:-30} 2>&1 | grep -v "^Qwen2 on"
for flags in "--overlap" "" "--no-shard"; do
  echo "-- phase profile on both GPUs $flags (synchronised phases)"
  STASC_TRAIN_PROFILE=1 $G/stasc bench train-parallel --config-json $CFG --realistic --devices cuda:0,cuda:1 \
    --warmup 3 --steps 12 --no-baseline $flags 2>&1 | grep -E "profile"
done
fi
if part 7; then
echo "== 7. where a 2-GPU step's time goes (STEPS=${STEPS:-30})"
TP="$G/stasc bench train-parallel --config-json $CFG --realistic --warmup 3 --no-baseline"
echo "-- one rank alone on cuda:0 (1 x 4 a step): throughput, then profile"
$TP --devices cuda:0 --ranks 1 --steps ${STEPS:-30} --no-shard 2>&1 | grep "tok/s"
STASC_TRAIN_PROFILE=1 $TP --devices cuda:0 --ranks 1 --steps 12 --no-shard 2>&1 | grep profile
echo "-- two one-rank processes side by side (cuda:0 and cuda:1)"
$TP --devices cuda:0 --ranks 1 --steps ${STEPS:-30} --no-shard 2>&1 | grep "tok/s" &
$TP --devices cuda:1 --ranks 1 --steps ${STEPS:-30} --no-shard 2>&1 | grep "tok/s"
wait
for flags in "--no-shard" "" "--overlap"; do
  echo "-- both GPUs in one process $flags: throughput, OMP_NUM_THREADS=1 throughput, profile"
  $TP --devices cuda:0,cuda:1 --steps ${STEPS:-30} $flags 2>&1 | grep "tok/s"
  OMP_NUM_THREADS=1 $TP --devices cuda:0,cuda:1 --steps ${STEPS:-30} $flags 2>&1 | grep "tok/s"
  STASC_TRAIN_PROFILE=1 $TP --devices cuda:0,cuda:1 --steps 12 $flags 2>&1 | grep profile
done
fi
