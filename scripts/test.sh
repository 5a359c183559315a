#!/usr/bin/env bash
# The whole test suite, on a fresh clone: set-up first (idempotent; see scripts/setup.sh and scripts/setup_test.sh),
# the one-node Slurm cluster of the `slurm_*` tests (scripts/slurm/setup.sh), then the checks the developers' hook
# makes (formatting, clippy with warnings as errors), a real MLflow server for tests/it/tracking.rs on a free loopback
# port (stopped when this script ends), and every test of the workspace (unit, integration, plugins) on CPU.
# Arguments go to `cargo test`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
"$root/scripts/setup_test.sh"
# A cluster that cannot start fails the slurm_* tests with this script's reason (they run it again); the rest of the
# suite still runs.
"$root/scripts/slurm/setup.sh" || echo "[test] the Slurm cluster did not start: the slurm_* tests will fail" >&2
cd "$root"
# rustfmt and clippy are rustup components a minimal toolchain may lack.
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1 && command -v rustup >/dev/null 2>&1; then
    rustup component add "$component"
  fi
done
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings

venv="${STASC_CACHE:-$HOME/.cache/stasc}/tracking-venv"
mlflow_dir="$(mktemp -d)"
port="$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
# setsid: the server and its workers form one process group, stopped together.
setsid "$venv/bin/mlflow" server --host 127.0.0.1 --port "$port" --workers 1 \
  --backend-store-uri "sqlite:///$mlflow_dir/mlflow.db" --artifacts-destination "$mlflow_dir/artifacts" \
  >"$mlflow_dir/server.log" 2>&1 &
server=$!
trap 'kill -- -"$server" 2>/dev/null || kill "$server" 2>/dev/null || true; rm -rf "$mlflow_dir"' EXIT
export STASC_TEST_MLFLOW_URI="http://127.0.0.1:$port"
up=0
for _ in $(seq 1 120); do
  if "$venv/bin/python" -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1] + '/health', timeout=2)" \
    "$STASC_TEST_MLFLOW_URI" 2>/dev/null; then
    up=1
    break
  fi
  kill -0 "$server" 2>/dev/null || { cat "$mlflow_dir/server.log" >&2; echo "mlflow server did not start" >&2; exit 1; }
  sleep 1
done
[ "$up" = 1 ] || { cat "$mlflow_dir/server.log" >&2; echo "mlflow server did not answer within 120 s" >&2; exit 1; }
printf '[test] mlflow server at %s\n' "$STASC_TEST_MLFLOW_URI" >&2

cargo test --workspace "$@"
