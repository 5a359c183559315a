#!/usr/bin/env bash
# The main job on a fresh clone: set-up (idempotent), then the CPU demo sweep (experiments/demo.toml: two STaSC
# variants on SmolLM2-135M-Instruct over data/demo_nq) and its report in reports/demo/. Rerunning resumes: finished
# cells are skipped.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
cd "$root"
./target/release/stasc sweep experiments/demo.toml "$@"
./target/release/stasc report runs/demo --out reports/demo
echo "report: reports/demo/index.html"
