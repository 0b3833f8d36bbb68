#!/usr/bin/env bash
# Download (here, where PyPI is reachable) the wheels the GPU machine lacks, into
# .device_wheels/ (git-ignored), for user_scripts/gpu_check.sh to install there. That
# machine has Python 3.12 with torch, numpy, sacrebleu, sentencepiece already; the main
# job's plots need matplotlib and its dependencies (versions as requirements/constraints.txt).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$repo/.device_wheels"
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$repo/.device_wheels" \
  fairseq-fixed==0.12.3.1 hydra-core==1.3.2 omegaconf==2.3.0 \
  bitarray==3.12.3 portalocker==3.2.0 tabulate==0.9.0 colorama==0.4.6 cffi==2.0.0 pycparser==2.23 \
  PyYAML==6.0.3 pytest==8.4.2 iniconfig==2.1.0 pluggy==1.6.0 \
  matplotlib==3.10.7 contourpy==1.3.3 cycler==0.12.1 fonttools==4.60.1 kiwisolver==1.4.9 pillow==12.0.0 \
  pyparsing==3.2.5 python-dateutil==2.9.0.post0 six==1.17.0 packaging==25.0
# antlr4-python3-runtime 4.9.3 (what omegaconf 2.3 needs) is published as an sdist only:
# build its pure-Python wheel here
python3 -m pip wheel -q --no-deps -w "$repo/.device_wheels" antlr4-python3-runtime==4.9.3
ls -la "$repo/.device_wheels"
