#!/usr/bin/env bash
# The whole test suite, on a fresh clone: set-up first (idempotent; see scripts/setup.sh), then the checks the
# developers' hook makes (formatting, clippy with warnings as errors) and every test of the workspace (unit,
# integration, plugins) on CPU. Arguments go to `cargo test`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
cd "$root"
# rustfmt and clippy are rustup components a minimal toolchain may lack.
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1 && command -v rustup >/dev/null 2>&1; then
    rustup component add "$component"
  fi
done
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace "$@"
