#!/usr/bin/env bash
# The GPU measurements of issue 14, as one script for a lent H100/H200 (about 8 minutes on an H200).
#
# Prepare here (no GPU needed):
#   git -C <mirror of SamsungSAILMontreal/TinyRecursiveModels> archive HEAD | tar -x -C .official   # ignored
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_17_x86_64 \
#       -d .whl pydantic pydantic-core annotated-types typing-inspection      # the official model needs pydantic
# Run there (carry .official and .whl):
#   bash benchmarks/gpu_check.sh .official "$OUT"
# Writes one log per measurement into the output folder; the tables go into benchmarks/README.md.
set -euo pipefail
OFFICIAL=${1:?usage: gpu_check.sh OFFICIAL_CHECKOUT OUT_DIR}
OUT=${2:?usage: gpu_check.sh OFFICIAL_CHECKOUT OUT_DIR}
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD/src:${PYTHONPATH:-} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
BENCH="python3 benchmarks/bench_vs_official.py --official $OFFICIAL --shape arc --device cuda --dtype bfloat16"
$BENCH --numerics 2>&1 | tee "$OUT/numerics.txt"
$BENCH --rounds 5 2>&1 | tee "$OUT/eager.txt"
$BENCH --rounds 5 --compile 2>&1 | tee "$OUT/compile.txt"
python3 benchmarks/bench_etrm.py --device cuda --batch 32 --hidden 512 --heads 8 2>&1 | tee "$OUT/etrm.txt"
