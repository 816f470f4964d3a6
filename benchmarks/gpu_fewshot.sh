#!/usr/bin/env bash
# The few-shot benchmark (issue 11) and test-time adaptation (issue 13) on a lent GPU, as one script
# (not timed yet). Every run is its own process on the one GPU, all at once: these models are
# small (hidden 64, batch 32), so each process is bound by its own kernel launches and they share the chip.
# Not yet run on a GPU (prepared 2026-11-28, when the session's device time went to gpu_check.sh); the
# benchmarks it calls run on the CPU with the same arguments.
#
#   bash benchmarks/gpu_fewshot.sh "$OUT" [MINUTES]
#
# MINUTES (default 3.5) caps each training run's wall clock (max_minutes: the run checkpoints, stops and is
# evaluated); the steps reached are in the results. Writes fewshot.log and results.tar.gz (every results.md /
# results.json / metrics.jsonl / log) into OUT.
set -uo pipefail
OUT=${1:?usage: gpu_fewshot.sh OUT_DIR [MINUTES]}
MINUTES=${2:-3.5}
W=/tmp/fewshot
LOG="$OUT/fewshot.log"
mkdir -p "$W"
export PYTHONPATH=$PWD/src:$PWD/benchmarks:${PYTHONPATH:-} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a "$LOG"
python3 -c 'import torch; print("torch", torch.__version__, "CPUs", __import__("os").cpu_count())' | tee -a "$LOG"
start=$SECONDS
# The benchmark's default build (seed 0, 5 families, 64 / 16 / 16 tasks per family, num_aug 50, canvas 10).
python3 - <<'EOF' 2>&1 | tee -a "$LOG"
from pathlib import Path
from trmlab.data.synthetic import build_synthetic
build_synthetic(Path("/tmp/fewshot/data"), seed=0, train_tasks=64, val_tasks=16, eval_tasks=16, canvas=10,
                num_aug=50)
EOF
echo "build: $((SECONDS - start)) s" | tee -a "$LOG"
LIMIT=$(python3 -c "print(int($MINUTES * 60 + 75))")  # training cap + evaluation
FS=(timeout "$LIMIT" python3 benchmarks/bench_fewshot.py --data "$W/data")
cap="max_minutes=$MINUTES"
# 1. The CPU presets as shipped (one H and one L cycle, one ACT step; 6000-step cap), on the GPU.
"${FS[@]}" --out "$W/presets" --models trm etrm etrmtrm --parallel --set-trm "$cap" --set-etrm "$cap" \
    --set-etrmtrm "$cap" > "$W/presets.log" 2>&1 &
# 2. The decoder's full recursion (H_cycles 3, L_cycles 6, as the ARC presets), same step cap.
full=(arch.H_cycles=3 arch.L_cycles=6 "$cap")
"${FS[@]}" --out "$W/full-etrm" --models etrm --set-etrm "${full[@]}" > "$W/full-etrm.log" 2>&1 &
"${FS[@]}" --out "$W/full-etrmtrm" --models etrmtrm --set-etrmtrm "${full[@]}" > "$W/full-etrmtrm.log" 2>&1 &
# 3. TRM pre-trained on the training tasks, then adapted to the held-out tasks (trmlab adapt, both modes).
timeout "$LIMIT" python3 benchmarks/bench_adapt.py --part fewshot --device cuda --data "$W/data" \
    --out "$W/adapt" --pretrain-steps 3000 --adapt-steps 100 1000 > "$W/adapt.log" 2>&1 &
wait
echo "all runs: $((SECONDS - start)) s" | tee -a "$LOG"
for f in presets full-etrm full-etrmtrm adapt; do
    echo "=== $f" >> "$LOG"; tail -n 40 "$W/$f.log" >> "$LOG"
done
(cd "$W" && find . -path ./data -prune -o \( -name 'results*.md' -o -name 'results*.json' -o \
    -name 'metrics.jsonl' -o -name '*.log' -o -name 'metrics.json' \) -print \
    | tar -czf "$OUT/results.tar.gz" -T -)
ls -la "$OUT" | tee -a "$LOG"
