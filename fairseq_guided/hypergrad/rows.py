"""The rows of dot products a meta step collects, one per parameter tensor, and their sum
into the hypergradient."""
import torch


class HypergradientRows:
    """Collects one row of dot products per parameter tensor as its guidance gradient
    arrives (the gradient can be freed at once); total() does the scalar algebra once
    per meta step, vectorised over tensors, instead of a few tiny kernels per tensor."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.rows = {}

    def add(self, group_index, param, guide_grad, grad=None, region=None, disposable=False):
        key, row = self.optimizer.dot_row(group_index, param, guide_grad, grad, region, disposable)
        self.rows.setdefault(key, []).append(row)

    def total(self):
        """(K,) float64 d L_guide / d value on the learned values' device; (G, K) with
        per-group values, each key's sum going to its param group's learned group."""
        learned = self.optimizer.learned
        total = torch.zeros(learned.shape, dtype=torch.float64, device=learned.device)
        if learned.groups is not None:
            groups = self.optimizer.param_groups
            for key, rows in self.rows.items():
                learned_group = groups[key[0]]["learned_group"]
                part = self.optimizer.combine_rows(key, torch.stack(rows)).to(total.device)
                total[learned_group] = total[learned_group] + part
            return total
        for key, rows in self.rows.items():
            total = total + self.optimizer.combine_rows(key, torch.stack(rows)).to(total.device)
        return total
