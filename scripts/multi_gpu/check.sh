#!/bin/bash
# Multi-device checks on the GPU machine (device tool; prepared by scripts/multi_gpu/prepare.sh, carry .gpu_run).
# With several GPUs it measures what issue #7 asks: NCCL all-reduce over all GPUs, data-parallel training speed-up
# and loss against one GPU at the same global batch, and STaSC runs on all GPUs vs one with identical samples.
# With one GPU it runs the same code paths with two workers on that GPU (host-side sums, since NCCL refuses two
# ranks on one device) and a one-rank NCCL clique.
set -uo pipefail
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/torch/lib:${LD_LIBRARY_PATH:-}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
PY=/opt/torch/.venv/bin/python
S=.gpu_run/stasc
N=$(nvidia-smi -L | wc -l)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if [ "$N" -ge 2 ]; then
  ALL=$(seq -s, -f 'cuda:%g' 0 $((N - 1)))
else
  ALL=cuda:0,cuda:0
fi
echo "== $N GPU(s); multi-device runs use $ALL"
$PY .gpu_run/make_model.py /tmp/qwen15b 2>&1 | grep -v Warn | tail -1
cp .gpu_run/tokenizer.json .gpu_run/tokenizer_config.json /tmp/qwen15b/
if [ -z "${ONLY_RUNS:-}" ]; then
  $S bench allreduce --devices cuda:0 --mib 256 --transport nccl
  [ "$N" -ge 2 ] && $S bench allreduce --devices "$ALL" --mib 1024 --transport nccl
  $S bench allreduce --devices "$ALL" --mib 256 --transport host --iters 5
  echo "== data-parallel training, Qwen2.5-1.5B shape (random weights), bf16"
  $S bench train-parallel --model /tmp/qwen15b --devices "$ALL" --batch 16 --seq 512 --steps 6 --warmup 2
fi
echo "== STaSC runs: one device vs $ALL (accelerate num_processes: 2 in both)"
for mode in ${MODES:-invariant default}; do
  cp .gpu_run/stasc.yaml /tmp/stasc_$mode.yaml
  [ $mode = invariant ] && echo "batch_invariant: true" >> /tmp/stasc_$mode.yaml
  for where in one all; do
    if [ $where = one ]; then unset STASC_DEVICES; else export STASC_DEVICES=$ALL; fi
    [ "$N" -ge 2 ] && [ $where = one ] && export STASC_DEVICES=cuda:0
    /usr/bin/time -f "%e s wall" $S run --config /tmp/stasc_$mode.yaml --ft_config .gpu_run/ft.yaml \
      --accelerate_config_path .gpu_run/accelerate_config.yaml --out /tmp/run_${mode}_$where > /tmp/log_${mode}_$where 2>&1
    grep -v -e "^\s*$" -e "^frame #" /tmp/log_${mode}_$where | tail -6
    [ -n "${OUT:-}" ] && grep -v "^frame #" /tmp/log_${mode}_$where > $OUT/log_${mode}_$where.txt
  done
  unset STASC_DEVICES
  echo "-- $mode: one device vs $ALL"
  $PY .gpu_run/compare_runs.py /tmp/run_${mode}_one /tmp/run_${mode}_all 0 1
done
