#!/usr/bin/env bash
# What the tests need beyond scripts/setup.sh (idempotent; run by scripts/test.sh):
#   1. mlflow==3.17.2 and tensorboard==2.21.0 from PyPI into $STASC_CACHE/tracking-venv (a venv of their own, so
#      their pins never meet torch's): tests/it/tracking.rs runs a real `mlflow server` and reads event files back
#      with tensorboard's EventAccumulator;
#   2. Debian's chromium (apt), which tests/it/lineage.rs opens the report's lineage page in, headless.
set -euo pipefail
cache="${STASC_CACHE:-$HOME/.cache/stasc}"
venv="$cache/tracking-venv"
py="${PYTHON:-python3}"

say() { printf '[setup-test] %s\n' "$*" >&2; }

# A marker file is written only after a step finished, so an interrupted set-up redoes that step.
if [ ! -f "$venv/.mlflow-3.17.2-tensorboard-2.21.0-ok" ]; then
  say "installing mlflow==3.17.2 and tensorboard==2.21.0 into $venv (once per machine)"
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check mlflow==3.17.2 tensorboard==2.21.0
  touch "$venv/.mlflow-3.17.2-tensorboard-2.21.0-ok"
fi
if ! command -v chromium >/dev/null 2>&1; then
  say "installing Debian's chromium (headless browser for the lineage page test)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
