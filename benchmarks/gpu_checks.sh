#!/usr/bin/env bash
# Every GPU-machine measurement of issue 12 in one run (device time is scarce: prepare, run once, give back).
# On the device machine, from the repo root, with `.whl/` carried (built here by ../shared/tools/device-wheels.sh):
#     bash benchmarks/gpu_checks.sh        # results under $OUT (the device tool's folder), else /tmp/gpu_out
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
echo "== training loop: Ray Train (1 GPU worker) vs bare PyTorch, bf16"
timeout 240 python3 benchmarks/train_loop.py --use-gpu --output "$OUT/train_loop_gpu.json" 2>&1 | grep -v "^\[bare\]\|RayTrainWorker" | tail -8
echo "== pipeline run image on the GPU (timing summary)"
timeout 150 python3 -m pipeline run image --use-gpu --num-workers 1 --amp --output /tmp/gpu_run --registry /tmp/gpu_reg 2>&1 | grep -A14 "^timing"
echo "== data stages scale curve on this machine's CPUs"
timeout 420 python3 benchmarks/data_stages.py --rows 100000,1000000,10000000 --output "$OUT/data_stages_gpu_machine.json" 2>&1 | tail -9
