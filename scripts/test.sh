#!/usr/bin/env bash
# The whole test suite, on a fresh clone: set-up first (idempotent; see scripts/setup.sh), then the one-node Slurm
# cluster of the `slurm_*` tests (scripts/slurm/setup.sh), then every test of the workspace (unit, integration,
# plugins) on CPU.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
# A cluster that cannot start fails the slurm_* tests with this script's reason (they run it again); the rest of the
# suite still runs.
"$root/scripts/slurm/setup.sh" || echo "[test] the Slurm cluster did not start: the slurm_* tests will fail" >&2
cd "$root"
cargo test --workspace "$@"
