#!/bin/bash
# Prepares .gpu_gen/ for the fused-kernel checks and benchmarks on the GPU machine (device tool, carry .gpu_gen):
# the stripped release binary, the stripped test binary (dev profile: the GPU tests of tests/it/kernels.rs and the
# CUDA-graph test), the Qwen2.5-1.5B config, the HF baseline script (HF_BASELINE, default scripts/bench/) and
# run.sh. Then, on the device, from the repository root: bash .gpu_gen/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"
cargo build --release --bin stasc
cargo test --test it --no-run
rm -rf .gpu_gen && mkdir -p .gpu_gen
cp target/release/stasc .gpu_gen/stasc
cp "$(ls -t target/debug/deps/it-* | grep -v '\.d$' | head -1)" .gpu_gen/it
strip .gpu_gen/stasc .gpu_gen/it
# The test binary finds tests/fixtures under the checkout it was built in: run.sh links that path to its copy.
pwd > .gpu_gen/built_in
cp "${HF_BASELINE:-scripts/bench/hf_baseline.py}" .gpu_gen/hf_baseline.py
cp scripts/kernels/run.sh scripts/kernels/trace_summary.py scripts/parity/qwen2.5-1.5b-config.json .gpu_gen/
du -sh .gpu_gen
