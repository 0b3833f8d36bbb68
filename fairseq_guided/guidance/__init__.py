"""The guidance side of a guided task: its flags and setup checks (config.py), the
sequence of guidance batches (batches.py), the guidance passes (passes.py) under
fairseq's precision wrappers (precision.py), the meta step once per update (runner.py)
and the task hooks that run it (task.py)."""
