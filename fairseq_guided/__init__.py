"""fairseq_guided: learn optimizer hyper-parameters during fairseq training.

Loaded by fairseq through --user-dir; importing it registers the guided tasks and
optimizers and opens the few channels into fairseq its API leaves no other way to open
(channels.py: the compatibility shims of compat.py, the checks preflight.py runs before
training).
"""
from . import channels

channels.install()

from . import optim, tasks  # noqa: E402,F401 (registration)
from .tasks import guided_translation  # noqa: E402,F401
from .tasks import guided_span_corruption  # noqa: E402,F401 (also registers t5_small, t5_tiny)
