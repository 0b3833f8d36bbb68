"""Pure-torch hypergradient engine (no fairseq import).

For each base optimizer: the in-place update of one parameter tensor and the inner
products <guide_grad, d theta_{t+1} / d lambda> for its hyper-parameters, computed from
the state the update leaves behind (so nothing parameter-sized has to be kept for it).
`reference.py` is the slow float64 twin the tests hold these to.
"""
