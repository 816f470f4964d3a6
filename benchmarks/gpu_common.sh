# Sourced by the GPU scripts (gpu_check.sh, gpu_numerics.sh): installs the official model's wheels when .whl
# holds them (the lent machine cannot reach an index), puts src/ and benchmarks/ on PYTHONPATH, logs the chip,
# and defines `step SECONDS TITLE COMMAND...`, which runs one measurement under its own time limit, logged
# with its exit code, so one that hangs or crashes does not cost the others. Needs LOG set by the caller.
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD/src:$PWD/benchmarks:${PYTHONPATH:-} PYTHONUNBUFFERED=1
step() {
    local limit=$1 title=$2; shift 2
    echo "=== $title: $*" | tee -a "$LOG"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    echo "=== $title: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s" | tee -a "$LOG"
}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit --format=csv | tee -a "$LOG"
echo "torch $(python3 -c 'import torch; print(torch.__version__)')" | tee -a "$LOG"
