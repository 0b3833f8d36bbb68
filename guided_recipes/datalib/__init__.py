"""Shared data-pipeline code behind scripts/prepare_wmt19.sh and scripts/prepare_offline_corpus.sh.

Run as `python -m guided_recipes.datalib STAGE ...` (the repository on PYTHONPATH); each stage is idempotent
(see common.Stage). The shell scripts only parse options, check tools and download.
"""
