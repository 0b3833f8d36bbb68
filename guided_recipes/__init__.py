"""Everything around the plugin that a user runs: the NMT and T5 recipes and their presets'
commands, the main job and its report (tables, plots), the benchmarks, and the
data-preparation stages behind scripts/prepare_*.sh. Importable (pip install -e . puts it
next to fairseq_guided); the files under scripts/ and user_scripts/ are thin entry points.
Nothing here is imported by the fairseq plugin itself."""
