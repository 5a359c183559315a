#!/bin/bash
# CUDA-graph training passes on the GPU machine, in one device call on nvidia-h200-x2 (prepare with
# `QUESTIONS=250 TEST_BIN=target/release/deps/it-<hash> scripts/train_bench/prepare.sh`, carry .gpu_train):
# 1. the GPU tests: graphed passes against the same padded passes run eagerly (one GPU), and the 2-GPU test of
#    overlapped and sharded sums, which ends with graphed passes on two GPUs against eager ones;
# 2. a paper-scale `stasc run` iteration (QUESTIONS train questions as run.sh part 1 makes them, K 5/5, 256 new
#    tokens, the Qwen2.5-1.5B shape with random weights, the reference's fine_tune.yaml, num_processes 2) sampled
#    once; its fine-tuning phase then runs again and again (the iteration's training outputs removed in between, so
#    the run resumes at fine-tuning): one GPU and two with graphs (the default), on two GPUs with the sums overlapped
#    (training.overlap_grad_sums: true) recorded into the graphs (STASC_GRAPHED_SUMS=1) and eagerly, and with
#    ALL_ROWS=1 also one GPU and two with STASC_TRAIN_GRAPHS=0;
# 3. `stasc bench train-parallel --realistic` on two GPUs, the same four ways of summing, against one GPU.
# PARTS picks the parts (default "1 2 3"); a device call lasts at most 10 minutes, so run "1 2" and "3" apart.
set -u
PARTS=" ${PARTS:-1 2 3} "
part() { [[ "$PARTS" == *" $1 "* ]]; }
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/torch/lib:${LD_LIBRARY_PATH:-}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
PY=/opt/torch/.venv/bin/python
G=.gpu_train
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if part 2; then $PY $G/make_model.py /tmp/qwen15b 2>&1 | grep -v Warn | tail -1 & fi
if part 1 && [ -x $G/it ]; then
  echo "== 1. GPU tests"
  # The test binary finds tests/fixtures under the checkout it was built in.
  [ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }
  timeout 100 $G/it --ignored --test-threads=1 --nocapture graphed_training 2>&1 \
    | grep -E "GRAPHS|^test |test result|panicked|assert"
  timeout 200 $G/it --ignored --test-threads=1 --nocapture on_two_gpus_overlapped 2>&1 \
    | grep -E "OVERLAP graphs|^test |test result|panicked|assert"
  timeout 200 $G/it --ignored --test-threads=1 --nocapture on_two_gpus_sums_recorded_in_graphs 2>&1 \
    | grep -E "GRAPHED SUMS|^test |test result|panicked|assert"
fi
wait
if part 2; then
cp $G/tokenizer/tokenizer.json $G/tokenizer/tokenizer_config.json /tmp/qwen15b/
sed -e "s#^model_path:.*#model_path: /tmp/qwen15b#" -e "s#^data_path:.*#data_path: $G/data#" \
    -e "s#^num_star_iterations:.*#num_star_iterations: 1\nsample_train_at_last_iteration: false\nonly_better_correction: false\nfilter: non_decreasing#" \
    -e "s#\.gpu_run/#$G/#g" $G/stasc.yaml > /tmp/graphs.yaml
printf 'num_processes: 2\nmixed_precision: bf16\n' > /tmp/graphs_acc.yaml
R=/tmp/graphs_run
show() {
  $PY -c "
import json; t = json.load(open('$R/iter_0/train.json')); m = json.load(open('$R/iter_0/metrics.json'))
print('  $1: fine-tuning', round(t['seconds'], 1), 's,', round(t['tokens_per_s']), 'tok/s,', t['examples'], 'pairs,',
      len(t['losses']), 'steps, last loss', round(t['losses'][-1], 4), '| phase seconds',
      {k: round(v, 1) for k, v in m.get('phase_seconds', {}).items()})" 2>&1 || tail -5 /tmp/graphs_run.log
}
reset() { rm -rf $R/iter_0/train.json $R/iter_0/metrics.json $R/iter_0/model* $R/iter_1 $R/DONE; }
sed -e "s#^training:#training:\n  overlap_grad_sums: true#" $G/ft.yaml > /tmp/ft_overlap.yaml
FT=$G/ft.yaml
run() {
  local s=$(date +%s)
  env "$@" timeout 250 $G/stasc run --config /tmp/graphs.yaml --ft_config $FT \
    --accelerate_config_path /tmp/graphs_acc.yaml --out $R > /tmp/graphs_run.log 2>&1
  echo "rc=$? $(( $(date +%s) - s )) s"
}
echo "== 2. paper-scale stasc run, ${QUESTIONS:-the prepared} train questions: the fine-tuning phase"
run CUDA_VISIBLE_DEVICES=0; show "1 GPU, graphs (whole iteration)"
reset; run X=1; show "2 GPUs, graphs"
FT=/tmp/ft_overlap.yaml
reset; run STASC_GRAPHED_SUMS=1; show "2 GPUs, sums overlapped, recorded in the graphs"
reset; run STASC_GRAPHED_SUMS=0; show "2 GPUs, sums overlapped, eager passes"
FT=$G/ft.yaml
if [ -n "${ALL_ROWS:-}" ]; then
  reset; run CUDA_VISIBLE_DEVICES=0 STASC_TRAIN_GRAPHS=0; show "1 GPU, STASC_TRAIN_GRAPHS=0"
  reset; run STASC_TRAIN_GRAPHS=0; show "2 GPUs, STASC_TRAIN_GRAPHS=0"
fi
fi
part 3 || exit 0
echo "== 3. bench train-parallel --realistic, reference settings"
B="$G/stasc bench train-parallel --config-json $G/qwen2.5-1.5b-config.json --realistic --no-baseline --warmup 40 --steps 40"
timeout 120 $B --devices cuda:0 --ranks 2 --no-shard 2>&1 | grep -E "tok/s" | tail -2
timeout 120 $B --devices cuda:0,cuda:1 2>&1 | grep -E "tok/s" | tail -2
timeout 120 $B --devices cuda:0,cuda:1 --overlap 2>&1 | grep -E "tok/s" | tail -2
STASC_GRAPHED_SUMS=1 timeout 120 $B --devices cuda:0,cuda:1 --overlap 2>&1 | grep -E "tok/s|graph" | tail -3
STASC_GRAPHED_SUMS=1 timeout 120 $B --devices cuda:0,cuda:1 --overlap --no-shard 2>&1 | grep -E "tok/s|graph" | tail -3
