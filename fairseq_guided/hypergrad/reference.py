"""The three reference twins in one namespace, for tests that loop over the optimizers
(each twin lives beside its optimizer: adam_reference.py, lamb_reference.py,
adafactor_reference.py)."""
from .adafactor_reference import adafactor_reference  # noqa: F401
from .adam_reference import adam_reference  # noqa: F401
from .lamb_reference import lamb_reference  # noqa: F401
