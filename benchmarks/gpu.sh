#!/usr/bin/env bash
# The GPU check, in one run of under 8 minutes on one H100/H200:
#   1. the GPU-marked tests (tests/test_gpu.py: CPU-equal log-probs, PPO learning in float32 and bf16 autocast,
#      an RLlib learner on the GPU);
#   2. rollout and update throughput against their limits (generate(); a plain forward+backward+Adam step) at the
#      GPT-2-small shape (float32) and Qwen2-0.5B's shape (bf16 weights);
#   3. one PPO iteration, lm-gym vs TRL's last PPOTrainer (TRL's side when TRL_PYTHON names a python with
#      trl==0.28.0; lm-gym's alone otherwise);
#   4. `lm-gym train --backend rllib` with its learner on the GPU (when Ray is installed).
# The steps' time limits add up to 8 minutes. Each step's output goes to OUT_DIR/STEP.txt; a failing or overrunning step is reported and the others still run.
#
#   benchmarks/gpu.sh [--dry-run] [--out DIR]
#
# --dry-run: the same steps on the CPU at tiny shapes (qwen2-tiny stands in for Qwen2-0.5B), one repeat, the tests
# collected but not run: CI runs it, so that the script works on the day a task is lent a GPU.
# A .whl/ folder of wheels (the device machine has no package index) is installed into /tmp/site first.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DRY=0
OUT_DIR=${OUT:-gpu-results}
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --out) OUT_DIR=$2; shift ;;
        *) echo "usage: benchmarks/gpu.sh [--dry-run] [--out DIR]" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$OUT_DIR"
if [ -d .whl ]; then
    $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

if [ $DRY = 1 ]; then
    SMALL=tiny LARGE=qwen2-tiny ENVS=4 REPEATS=1 TOKENS=8 STEPS=512 TESTS=--collect-only LEARNER=()
    SLACK=3  # a CI machine's CPU (shared, 2 cores) takes longer than a GPU machine for the same steps
else
    SMALL=gpt2-small LARGE=qwen2-0.5b ENVS=64 REPEATS=3 TOKENS=32 STEPS=4096 TESTS= LEARNER=(--num-gpus-per-learner 1)
    SLACK=1
    $PYTHON -c "import torch, sys; sys.exit(not torch.cuda.is_available())" \
        || { echo "torch finds no CUDA GPU here: run benchmarks/gpu.sh --dry-run on a CPU" >&2; exit 2; }
fi

failed=()
step() {  # step NAME SECONDS COMMAND...: run COMMAND with a time limit, its output into OUT_DIR/NAME.txt
    local name=$1 limit=$(($2 * SLACK)) start=$SECONDS
    shift 2
    echo "== $name: $*"
    timeout "$limit" "$@" 2>&1 | tee "$OUT_DIR/$name.txt"
    local rc=${PIPESTATUS[0]}
    echo "-- $name: exit $rc after $((SECONDS - start)) s (limit $limit s)"
    [ "$rc" = 0 ] || failed+=("$name")
}

step tests 120 $PYTHON -m pytest -p no:cacheprovider -m gpu -q $TESTS tests/test_gpu.py
step rollout-gpt2 45 $PYTHON benchmarks/rollout.py --shape $SMALL --n-envs $ENVS --repeats $REPEATS --new-tokens $TOKENS
step rollout-qwen2 75 $PYTHON benchmarks/rollout.py --shape $LARGE --dtype bfloat16 --n-envs $ENVS --repeats $REPEATS \
    --new-tokens $TOKENS
step update-gpt2 45 $PYTHON benchmarks/update.py --shape $SMALL --n-envs $ENVS --repeats $REPEATS --new-tokens $TOKENS
# The plain path (single steps in random order) is the slow one on a large LM: the recommended one only.
step update-qwen2 60 $PYTHON benchmarks/update.py --shape $LARGE --dtype bfloat16 --n-envs $ENVS --repeats $REPEATS \
    --new-tokens $TOKENS --paths recommended
if [ -n "${TRL_PYTHON:-}" ]; then TRL=(--trl-python "$TRL_PYTHON"); else TRL=(--ours-only); fi
step vs-trl 60 $PYTHON benchmarks/vs_trl.py --shape $SMALL --repeats $REPEATS "${TRL[@]}"
if $PYTHON -c "import ray.rllib" 2>/dev/null; then
    step rllib 75 $PYTHON -m agents.runs.cli train --backend rllib --reward target_word --max-new-tokens 4 \
        --steps $STEPS --n-steps 32 --num-env-runners 1 "${LEARNER[@]}" --eval-samples 2 --checkpoint-every 0 \
        --out "${TMPDIR:-/tmp}/lm-gym-gpu-sh"
else
    echo "-- rllib: not run (Ray is not installed here: pip install 'lm-gym[rllib]')"
fi

if [ ${#failed[@]} -gt 0 ]; then
    echo "gpu.sh: failed: ${failed[*]} (outputs in $OUT_DIR)" >&2
    exit 1
fi
echo "gpu.sh: every step passed (outputs in $OUT_DIR)"
