#!/usr/bin/env bash
# The GPU bench of docs/performance.md ("On a GPU"): `manners bench` on the given Burn GPU
# backends beside PyTorch CUDA, in groups of measurements, so that a group that fails or runs past
# the deadline loses nothing else. Each group's table goes to OUT/gpu.log and its JSON to
# OUT/gpu-BACKEND-GROUP.json.
#
#   scripts/bench/gpu_bench.sh BIN OUT DEADLINE_SECS [BACKEND ...]    (default backend: wgpu)
#
# BIN is a release `manners` (built with `--features cuda` for the cuda backend); run it from the
# repository root (the bench reads assets/ and scripts/bench/torch_bench.py). PYTHON names a
# Python with torch and transformers (default python3). Groups run most important first; one that
# would start with under a minute left is skipped and said so. BENCH_GROUPS, if set, replaces the
# list below with its own space-separated NAME:FILTER pairs (e.g. BENCH_GROUPS="generate:generate").
set -u
bin=$1
out=$2
deadline=$3
shift 3
backends=${*:-wgpu}
py=${PYTHON:-python3}
start=$SECONDS
mkdir -p "$out"
log="$out/gpu.log"
# Group name and `--only` filter (a filter selects every measurement whose name contains it).
groups=(
    "tiny:train-tiny"
    "gpt2-small:train-gpt2-small"
    "generate:generate"
    "smollm2-matmul:smollm2,matmul-shapes"
)
if [ -n "${BENCH_GROUPS:-}" ]; then
    read -r -a groups <<<"$BENCH_GROUPS"
fi
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    "$py" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__, torch.cuda.get_device_name(0))'
    lscpu | grep -m1 'Model name'
} 2>&1 | tee -a "$log"
for g in "${groups[@]}"; do
    name=${g%%:*}
    only=${g#*:}
    for b in $backends; do
        left=$((deadline - (SECONDS - start)))
        if [ "$left" -lt 60 ]; then
            echo "gpu-bench: $b $name skipped, ${left}s left" | tee -a "$log"
            continue
        fi
        echo "=== $b $name (--only $only), ${left}s left" | tee -a "$log"
        t0=$SECONDS
        timeout "$left" "$bin" bench --backend "$b" --only "$only" --steps 10 \
            --torch "$py" --torch-device cuda --json "$out/gpu-$b-$name.json" 2>&1 | tee -a "$log"
        echo "=== $b $name: exit ${PIPESTATUS[0]} after $((SECONDS - t0))s" | tee -a "$log"
    done
done
