#!/usr/bin/env bash
# Issue 14's GPU measurements (and trmlab adapt's GPU cost) as one script for a lent H100/H200
# (5.5 minutes on an H200, 2026-11-28).
#
# Prepare here (no GPU needed; both folders are ignored by git):
#   mkdir -p .official && git -C <mirror of SamsungSAILMontreal/TinyRecursiveModels> archive HEAD models LICENSE \
#       | tar -x -C .official
#   mkdir -p .official/arc && cp ../shared/data/arc-kaggle-combined/arc-agi_training_challenges.json .official/arc/
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_17_x86_64 -d .whl \
#       pydantic pydantic-core annotated-types typing-inspection typing-extensions   # the official model's needs
# Run there (carry .official and .whl):
#   bash benchmarks/gpu_check.sh .official "$OUT"
# Writes gpu_check.log (everything, in order) into the output folder; the tables go into benchmarks/README.md.
# Each measurement has its own time limit, so one that hangs or crashes does not cost the others; the most
# important run first.
set -uo pipefail
OFFICIAL=${1:?usage: gpu_check.sh OFFICIAL_CHECKOUT OUT_DIR}
OUT=${2:?usage: gpu_check.sh OFFICIAL_CHECKOUT OUT_DIR}
LOG="$OUT/gpu_check.log"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD/src:$PWD/benchmarks:${PYTHONPATH:-} PYTHONUNBUFFERED=1
step() {  # step SECONDS TITLE COMMAND...: run one measurement under a time limit, logged with its exit code
    local limit=$1 title=$2; shift 2
    echo "=== $title: $*" | tee -a "$LOG"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    echo "=== $title: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s" | tee -a "$LOG"
}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit --format=csv | tee -a "$LOG"
# The chip's dense bf16 matmul rate, measured here (the MFU denominator): 8192^3 products on random data.
PEAK=$(python3 - <<'EOF' 2>>"$LOG"
import torch
a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
for _ in range(3):
    a @ b
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
start.record()
for _ in range(20):
    a @ b
end.record()
torch.cuda.synchronize()
print(f"{20 * 2 * 8192**3 / (start.elapsed_time(end) / 1e3) / 1e12:.0f}")
EOF
)
echo "torch $(python3 -c 'import torch; print(torch.__version__)'); measured bf16 matmul peak: $PEAK TFLOP/s" \
    | tee -a "$LOG"
BENCH=(python3 benchmarks/bench_vs_official.py --official "$OFFICIAL" --shape arc --device cuda --dtype bfloat16)
step 60 "bf16 numerics and the official code's own spread" "${BENCH[@]}" --numerics
step 70 "eager" "${BENCH[@]}" --rounds 5 --peak-tflops "$PEAK"
step 200 "torch.compile" "${BENCH[@]}" --rounds 5 --peak-tflops "$PEAK" --compile
# trmlab adapt on the GPU: one few-shot family, a short pre-training, then both modes (the cost: steps/s).
step 80 "trmlab adapt cost" python3 benchmarks/bench_adapt.py --part fewshot --device cuda \
    --families colour_permutation --pretrain-steps 300 --adapt-steps 300 --models trm --out /tmp/adapt
step 60 "fp32 numerics" "${BENCH[@]:0:8}" --dtype float32 --numerics
step 50 "ETRM packed vs padded encoder" python3 benchmarks/bench_etrm.py --device cuda --batch 32 --hidden 512 \
    --heads 8 --arc-json "$OFFICIAL/arc/arc-agi_training_challenges.json"
