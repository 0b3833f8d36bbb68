#!/usr/bin/env bash
# The checks that need CUDA, as one script for the GPU machine (device tool):
#   run(command="bash user_scripts/gpu_check.sh", carry=[".device_wheels", "data/libreoffice-de-en/bin"])
# after user_scripts/fetch_device_wheels.sh here. Installs the carried wheels into
# /tmp/site, runs the CUDA-only tests (flat --fp16, loss-scale overflow, no host sync in
# the update and meta step) and the benchmark in cuda mode, and leaves
# BENCHMARKS-gpu.md (+ .json) and the test log in $OUT. BENCH_CONFIGS (a regular
# expression over configuration names) trims the benchmark to fit the device time left.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .device_wheels/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONWARNINGS=ignore PATH=/tmp/site/bin:$PATH FAIRSEQ_BIN=/tmp/site/bin
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
python3 -m pytest -q -p no:cacheprovider tests/test_mixed_precision.py tests/test_guidance_fast_path.py \
  tests/test_fairseq_train_e2e.py 2>&1 | tail -20 | tee "$out/tests.txt"
python3 user_scripts/bench_step.py --device cuda --data data/libreoffice-de-en/bin 2>&1 | tail -12 \
  | tee "$out/bench_step-gpu.md"
python3 user_scripts/benchmark.py --device cuda --data data/libreoffice-de-en/bin --updates 150 \
  --warmup-updates 50 ${BENCH_CONFIGS:+--configs "$BENCH_CONFIGS"} --out "$out/BENCHMARKS-gpu.md" 2>&1 | tail -40
