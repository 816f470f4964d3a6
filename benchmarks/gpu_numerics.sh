#!/usr/bin/env bash
# Issue 14's open question, as a short script for a lent GPU (about 2.5 minutes, estimated from the step times
# of the H200 run; not run yet): are trmlab's GPU logits those of the official code when both models are built
# as their trainers build them (on the GPU, RoPE tables computed there)? Prepare .official and .whl as
# gpu_check.sh's header says, then run there (carry both):
#   bash benchmarks/gpu_numerics.sh .official "$OUT"
# Writes gpu_numerics.log into the output folder:
# - bf16 and fp32 numerics at the ARC shape (16-step rollout, batch 96) with the RoPE tables compared;
# - the aten calls of one bf16 ACT step that differ between the two (which attention kernel each side gets);
# - the eager timing again (q and k are rotated separately since the H200 table, measured at 8593736).
set -uo pipefail
OFFICIAL=${1:?usage: gpu_numerics.sh OFFICIAL_CHECKOUT OUT_DIR}
OUT=${2:?usage: gpu_numerics.sh OFFICIAL_CHECKOUT OUT_DIR}
LOG="$OUT/gpu_numerics.log"
source benchmarks/gpu_common.sh
BENCH=(python3 benchmarks/bench_vs_official.py --official "$OFFICIAL" --shape arc --device cuda)
step 60 "bf16 numerics" "${BENCH[@]}" --dtype bfloat16 --numerics
step 80 "fp32 numerics" "${BENCH[@]}" --dtype float32 --numerics
step 40 "aten calls that differ (bf16, batch 4)" "${BENCH[@]}" --dtype bfloat16 --batch 4 --trace-ops
step 70 "eager timing" "${BENCH[@]}" --dtype bfloat16 --rounds 3
