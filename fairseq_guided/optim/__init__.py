"""fairseq optimizers. fairseq imports a --user-dir's tasks/ and models/ by itself but not
this folder, so the package __init__ imports it."""
from . import guided_adafactor, guided_adam, guided_lamb  # noqa: F401 (registration)
from . import prodigy, schedulefree_adamw  # noqa: F401 (registration: tuning-free baselines)
