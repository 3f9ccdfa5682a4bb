#!/usr/bin/env bash
# One-shot GPU benchmark of the paper profile (docs/training.md, "GPU benchmark").
#
#   bench/gpu.sh OUT_DIR            on a GPU machine: check the GPU, benchmark (<= 5 min),
#                                   write OUT_DIR/bench_gpu.json, print the table
#   bench/gpu.sh OUT_DIR --tiny     test size on any machine (CPU is fine)
#
# Further options go to `python -m dsnet.bench.gpu` (e.g. --precision fp16 --iterations 10).
# Needs only python3 (or $PYTHON) with torch, torchvision and numpy; runs from any folder.
set -euo pipefail

usage="usage: bench/gpu.sh OUT_DIR [--tiny] [options of python -m dsnet.bench.gpu]"
if [[ $# -lt 1 || $1 == -* ]]; then
    echo "$usage" >&2
    exit 2
fi
out_dir=$1
shift
tiny=0
for arg in "$@"; do
    [[ $arg == --tiny ]] && tiny=1
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3}
hard_limit=${DSNET_BENCH_TIMEOUT:-300}
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"

if [[ $tiny == 0 ]]; then
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    else
        echo "note: nvidia-smi not found"
    fi
    if ! "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
        echo "error: no CUDA GPU visible to torch (torch.cuda.is_available() is False);" \
            "on a machine without a GPU run: bench/gpu.sh $out_dir --tiny" >&2
        exit 1
    fi
fi

mkdir -p "$out_dir"
json="$(cd "$out_dir" && pwd)/bench_gpu.json"
status=0
timeout --signal=INT --kill-after=15 "$hard_limit" \
    "$python" -m dsnet.bench.gpu --out "$json" "$@" || status=$?
if [[ $status == 124 || $status == 130 || $status == 137 ]]; then
    echo "note: stopped after the ${hard_limit} s hard limit; the table shows what was measured"
    if [[ -f $json ]]; then
        "$python" -m dsnet.bench.gpu --show "$json"
    fi
fi
exit "$status"
