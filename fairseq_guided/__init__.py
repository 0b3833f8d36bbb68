"""fairseq_guided: learn optimizer hyper-parameters during fairseq training.

Loaded by fairseq through --user-dir; importing it registers the guided tasks and
optimizers, applies the narrow compatibility shims of compat.py and installs the checks
preflight.py runs before training (--save-dir lock, checkpoint verification).
"""
from . import compat

compat.allow_fairseq_checkpoint_types()
compat.make_checkpoint_copies_atomic()
compat.name_failed_checkpoint_writes()
compat.allow_broadcast_resume_state()
compat.fix_nan_detector()
compat.stop_prefetch_threads_at_exit()

from . import optim, preflight, tasks  # noqa: E402,F401 (registration)
from .tasks import guided_translation  # noqa: E402,F401
from .tasks import guided_span_corruption  # noqa: E402,F401 (also registers t5_small, t5_tiny)

preflight.install()
