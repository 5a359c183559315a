#!/bin/bash
# Reproducibility of sharded generation on the GPU machine (prepared by scripts/multi_gpu/prepare.sh): the same
# batch-invariant `stasc eval` twice on one worker (run to run), and once on two workers (STASC_DEVICES, two GPUs
# if there are two, else two workers on one), comparing every sample.
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/torch/lib:${LD_LIBRARY_PATH:-}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
PY=/opt/torch/.venv/bin/python; S=.gpu_run/stasc
TWO=cuda:0,cuda:0; [ "$(nvidia-smi -L | wc -l)" -ge 2 ] && TWO=cuda:0,cuda:1
$PY .gpu_run/make_model.py /tmp/qwen15b 2>&1 | grep -v Warn | tail -1
cp .gpu_run/tokenizer.json .gpu_run/tokenizer_config.json /tmp/qwen15b/
cp .gpu_run/stasc.yaml /tmp/s.yaml; echo "batch_invariant: true" >> /tmp/s.yaml
for r in a b; do STASC_DEVICES=cuda:0 $S eval --config /tmp/s.yaml --out /tmp/inv_$r 2>&1 | tail -1; done
STASC_DEVICES=$TWO $S eval --config /tmp/s.yaml --out /tmp/inv_two 2>&1 | tail -1
echo "-- one worker, run to run"; $PY .gpu_run/compare_runs.py /tmp/inv_a /tmp/inv_b 0
echo "-- one worker vs $TWO"; $PY .gpu_run/compare_runs.py /tmp/inv_a /tmp/inv_two 0
