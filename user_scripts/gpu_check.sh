#!/usr/bin/env bash
# Everything that needs CUDA, as one call of the GPU machine (device tool), within 10 minutes:
#   here:  bash user_scripts/fetch_device_wheels.sh && bash scripts/prepare_offline_corpus.sh
#   then:  run(command="bash user_scripts/gpu_check.sh",
#              carry=[".device_wheels", "data/libreoffice-de-en/bin", "data/libreoffice-de-en/raw"])
# 1. installs the carried wheels into /tmp/site (the machine has torch, numpy, sacrebleu);
# 2. the tests that exercise CUDA paths: every shipped preset's command on a shrunk model
#    (flat --fp16 for real), mixed precision with fairseq's overflow path, no host sync in
#    the update and meta step, flat fp16 equal to per-tensor masters;
# 3. the NMT "gpu" preset end to end (main job: four variants at once, BLEU table);
# 4. a trimmed benchmark (BENCH_CONFIGS, a regular expression over configuration names).
# Each part has its own time limit, so one overrun leaves the others' results; all of
# them land in $OUT, and a short table comes last.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out"
t0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --target /tmp/site .device_wheels/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONWARNINGS=ignore PATH=/tmp/site/bin:$PATH FAIRSEQ_BIN=/tmp/site/bin
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
status() { echo "| $1 | $2 | $(( $(date +%s) - $3 )) s |" >> "$out/summary.md"; }
echo "| part | result | wall |" > "$out/summary.md"; echo "|---|---|---|" >> "$out/summary.md"

t=$(date +%s)
timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_shipped_commands.py tests/test_flat_fp16.py \
  tests/test_mixed_precision.py tests/test_guidance_fast_path.py -k "not benchmark_commands or cuda" \
  > "$out/tests.txt" 2>&1
status "CUDA tests" "$(tail -1 "$out/tests.txt")" "$t"

t=$(date +%s)
timeout 330 python3 scripts/main_job.py --preset gpu --no-prepare --data-dir data/libreoffice-de-en \
  --runs "$out/main_job-gpu" --quiet > "$out/main_job-gpu.txt" 2>&1
status "gpu preset (4 variants)" "rc $? $(grep -c 'BLEU' "$out/main_job-gpu.txt") BLEU lines" "$t"
rm -rf "$out"/main_job-gpu/*/checkpoints  # large; the logs, hypotheses and report stay

t=$(date +%s)
timeout 120 python3 user_scripts/benchmark.py --device cuda --data data/libreoffice-de-en/bin --updates 60 \
  --warmup-updates 20 --configs "${BENCH_CONFIGS:-^guided_lamb alpha,beta1$}" --out "$out/BENCHMARKS-gpu.md" \
  > "$out/benchmark.txt" 2>&1
status "benchmark (trimmed)" "rc $?" "$t"

echo; echo "== gpu_check in $(( $(date +%s) - t0 )) s"; cat "$out/summary.md"
echo; cat "$out/main_job-gpu/report/bleu_table.md" 2>/dev/null || tail -5 "$out/main_job-gpu.txt"
echo; tail -15 "$out/BENCHMARKS-gpu.md" 2>/dev/null || tail -5 "$out/benchmark.txt"
