"""Everything around the plugin that a user runs, by role:

  common    the repository's paths, a logged subprocess, small helpers (defined once)
  presets   every preset, read from YAML under configs/ (nmt, t5, bench)
  run/      the NMT and T5 recipes, the main job and its studies, the sweep
  report/   reading the runs' logs (the plugin's log keys: report.logkeys), tables, plots, findings
  datalib/  data preparation behind scripts/prepare_*.sh, and the guide split
  bench/    the benchmarks behind user_scripts/bench*.py

Importable (pip install -e . puts it next to fairseq_guided); the files under scripts/ and
user_scripts/ are thin entry points. Nothing here is imported by the fairseq plugin itself.
`from guided_recipes import nmt` (a module's name before the split by role, as recorded
scripts under results/ use it) still gives the module; `python -m guided_recipes.lanes` and
`python -m guided_recipes.hydra_objective` are kept as thin modules."""
import importlib

_MOVED = {
    **{m: "run" for m in ("nmt", "t5", "main_job", "sweep", "sweep_study", "studies", "horizon",
                          "horizon_job", "export")},
    **{m: "report" for m in ("runlogs", "findings", "plots", "study_plots", "tables", "stats",
                             "sweep_report", "t5_report", "portable")},
    **{m: "datalib" for m in ("guide_split", "monolingual")},
    **{m: "bench" for m in ("benchmark", "bench_step")},
}


def __getattr__(name):
    if name in _MOVED:
        return importlib.import_module(f"{__name__}.{_MOVED[name]}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
