#!/usr/bin/env bash
# The whole test suite, on a fresh clone: set-up first (idempotent; see scripts/setup.sh), then every test of the
# workspace (unit, integration, plugins) on CPU.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
cd "$root"
cargo test --workspace "$@"
