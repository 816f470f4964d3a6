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
# The most important run first (gpu_numerics.sh is the short check of numerics alone).
set -uo pipefail
OFFICIAL=${1:?usage: gpu_check.sh OFFICIAL_CHECKOUT OUT_DIR}
OUT=${2:?usage: gpu_check.sh OFFICIAL_CHECKOUT OUT_DIR}
LOG="$OUT/gpu_check.log"
source benchmarks/gpu_common.sh
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
echo "measured bf16 matmul peak: $PEAK TFLOP/s" | tee -a "$LOG"
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
