#!/usr/bin/env bash
# Every GPU-machine measurement of issue 12 in one run (device time is scarce: prepare, run once, give back).
# On the device machine, from the repo root, with `.whl/` carried (built here by ../shared/tools/device-wheels.sh):
#     bash benchmarks/gpu_checks.sh        # results and the whole log under $OUT (the device tool's folder), else /tmp/gpu_out
# BUDGET_S (default 540) bounds the whole script: the data-stage curve gets what the GPU checks leave, and
# writes its JSON after each size, so a curve cut short keeps the sizes it finished.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}
BUDGET_S=${BUDGET_S:-540}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_checks.log") 2>&1
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, sys, os; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'cpus', os.cpu_count())"

echo "== [${SECONDS}s] training loop: Ray Train (1 GPU worker) vs bare PyTorch, bf16, 21,000 rows, batch 512"
timeout 150 python3 benchmarks/train_loop.py --use-gpu --epochs 10 --output "$OUT/train_loop_gpu.json" 2>&1 \
  | grep -v "RayTrainWorker\|^\[bare\] epoch [2-9]" | tail -25

echo "== [${SECONDS}s] pipeline run image on the GPU (the run's timing summary)"
timeout 130 python3 -m pipeline run image --use-gpu --num-workers 1 --amp --output /tmp/gpu_run --registry /tmp/gpu_reg 2>&1 \
  | grep -v "RayTrainWorker" | tail -40
cp /tmp/gpu_run/metrics.json "$OUT/metrics_image_gpu.json" 2>/dev/null

left=$((BUDGET_S - SECONDS))
echo "== [${SECONDS}s] data stages scale curve on this machine's CPUs (${left}s left)"
timeout "$left" python3 benchmarks/data_stages.py --rows 100000,1000000,10000000 \
  --output "$OUT/data_stages_gpu_machine.json" 2>&1 | grep -v "^\s*$" | tail -12
# Stamp where the results were measured: RESULTS.md is rendered on another machine.
python3 - "$OUT" <<'PY'
import json, os, platform, sys, time, torch, ray
where = (f"the GPU machine ({torch.cuda.get_device_name(0)}, {os.cpu_count()} cores; Python {platform.python_version()}, "
         f"PyTorch {torch.__version__}, Ray {ray.__version__}) on {time.strftime('%Y-%m-%d')}")
for name in ("train_loop_gpu.json", "data_stages_gpu_machine.json"):
    path = os.path.join(sys.argv[1], name)
    if os.path.exists(path):
        d = json.load(open(path)); d["measured_on"] = where; json.dump(d, open(path, "w"), indent=2)
PY
echo "== [${SECONDS}s] done: copy train_loop_gpu.json and data_stages_gpu_machine.json into benchmarks/results/"
sleep 2  # let tee finish the log
