"""Pure-torch hypergradient engine (no fairseq import).

One file per optimizer (adam.py, lamb.py, adafactor.py): the in-place update of one
parameter tensor, the inner products <guide_grad, d theta_{t+1} / d lambda> for its
hyper-parameters computed from the state the update leaves behind (so nothing
parameter-sized has to be kept for it), and the torch optimizer built on base.py. Beside
each, its `_reference.py` twin: the slow float64 formula the tests hold it to.
hyperparams.py holds the learned values and their meta-optimizer.
"""
from .adafactor import GuidedAdafactor
from .adam import GuidedAdam
from .lamb import GuidedLamb

OPTIMIZERS = {"adam": GuidedAdam, "lamb": GuidedLamb, "adafactor": GuidedAdafactor}
