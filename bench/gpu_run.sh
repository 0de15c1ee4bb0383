#!/usr/bin/env bash
# The course preset on one GPU within 8 minutes: training, perplexity, samples, decoding speed (bench/gpu_run.py
# says what it does and writes). Run from anywhere; it works from the repository root.
#
#   bash bench/gpu_run.sh --out DIR           on a GPU; the lead, through the device tool: --out $OUT
#   bash bench/gpu_run.sh --smoke --out DIR   on the CPU at toy sizes (about a minute), to check the script
#
# Python: $COURSE_PYTHON if set, else the repository's .venv where there is one, else python3 (on the GPU
# machine, the one with torch).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${COURSE_PYTHON:-}"
if [ -z "$python" ]; then
    if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$python" bench/gpu_run.py "$@"
