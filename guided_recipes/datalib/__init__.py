"""Data preparation: the stages behind scripts/prepare_wmt19.sh and
scripts/prepare_offline_corpus.sh (`python -m guided_recipes.datalib STAGE ...`, the
repository on PYTHONPATH; each stage is idempotent, see common.Stage; the shell scripts only
parse options, check tools and download), the monolingual and sentiment text of
scripts/prepare_monolingual.sh (monolingual), and the guide split (guide_split).
"""
