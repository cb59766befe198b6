#!/usr/bin/env bash
# The GPU acceptance run (README, "The GPU acceptance run"): the gpu test lane, then training-step and metric
# benchmarks, each under its own time budget; OUT_DIR gets summary.json, summary.md and one log per part.
#
#   bash scripts/gpu-acceptance.sh OUT_DIR            # on a CUDA machine: under 8 minutes on one H100/H200
#   bash scripts/gpu-acceptance.sh --tiny OUT_DIR     # a dry run at the small profile's sizes, on a CPU
#
# Runs on the python3 found first on PATH. The wheels in .gpu-carry/wheels (python -m acceptance.carry makes
# them; GPU_ACCEPTANCE_WHEELS names another folder) are installed, without their dependencies and without the network, into a folder of their own that
# goes first on PYTHONPATH: the machine's own packages stay as they are.
set -euo pipefail
cd "$(dirname "$0")/.."

usage="usage: bash scripts/gpu-acceptance.sh [--tiny] [--parts PART ...] OUT_DIR"
if [ $# -eq 0 ]; then
    echo "$usage" >&2
    exit 2
fi

wheels=("${GPU_ACCEPTANCE_WHEELS:-.gpu-carry/wheels}"/*.whl)
if [ -e "${wheels[0]}" ]; then
    site="$(mktemp -d "${TMPDIR:-/tmp}/gpu-acceptance-site.XXXXXX")"
    trap 'rm -rf "$site"' EXIT
    python3 -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check --root-user-action=ignore \
        --target "$site" "${wheels[@]}"
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
python3 -m acceptance "$@"
