#!/usr/bin/env bash
# The prepared GPU check: one command, <= 8 minutes on one GPU, no downloads.
#   bench/gpu_check.sh            -> bench/out/gpu.{json,md}     (needs CUDA)
#   bench/gpu_check.sh --dry      -> bench/out/gpu_dry.{json,md} (tiny presets on the CPU)
# Extra arguments go to bench/gpu_check.py (--out DIR, --budget-s S, --threads N).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python
exec timeout 480 "$PY" bench/gpu_check.py "$@"
