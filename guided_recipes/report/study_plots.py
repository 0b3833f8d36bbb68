"""Figures of the studies: the learned curves per setting (the paper's Figures 1 and 2) and
BLEU against the lr multiple (lr sensitivity); study_curves.csv holds every plotted point."""
import csv
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .logkeys import learned_name  # noqa: E402


def _save(fig, path: Path):
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def schedules(rows, out: Path) -> list:
    """fig2_beta1.png (a panel per meta lr, a line per initial value and seed) and
    fig1_alpha.png (a line per meta lr and seed; dashed: exp(-meta lr x update), the lowest
    alpha a meta lr lets alpha reach, as meta-Adam moves ln alpha about meta lr an update)."""
    written = []
    with open(out / "study_curves.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["figure", "setting", "seed", "update", "value"])
        for row in rows:
            writer.writerows([row["figure"], row["setting"], row["seed"], u, v] for u, v in row["curve"])
    fig2 = [r for r in rows if r["figure"] == "fig2" and r["curve"]]
    if fig2:
        metas = sorted({r["values"]["meta_lr"] for r in fig2})
        fig, axes = plt.subplots(1, len(metas), figsize=(5 * len(metas), 4), squeeze=False, sharey=True)
        for ax, meta in zip(axes[0], metas):
            for r in (r for r in fig2 if r["values"]["meta_lr"] == meta):
                ax.plot(*zip(*r["curve"]), label=f"init {r['values']['beta1_init']:g}, seed {r['seed']}")
            ax.set_title(f"guided beta1, meta lr {meta:g}")
            ax.set_xlabel("update")
            ax.legend(fontsize=7)
        axes[0][0].set_ylabel("beta1")
        written.append(_save(fig, out / "fig2_beta1.png"))
    fig1 = [r for r in rows if r["figure"] == "fig1" and r["curve"]]
    if fig1:
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in fig1:
            line, = ax.plot(*zip(*r["curve"]), label=f"meta lr {r['values']['meta_lr']:g}, seed {r['seed']}")
            updates = [u for u, _ in r["curve"]]
            ax.plot(updates, [math.exp(-r["values"]["meta_lr"] * u) for u in updates], ls="--", lw=0.8,
                    color=line.get_color())
        ax.set_yscale("log")
        ax.set_xlabel("update")
        ax.set_ylabel("alpha (lr scale); dashed: lowest reachable")
        ax.set_title("guided alpha alone")
        ax.legend(fontsize=7)
        written.append(_save(fig, out / "fig1_alpha.png"))
    return written


def lr_sensitivity(rows, out: Path) -> list:
    """lr_sensitivity.png: test BLEU against the lr (log scale), a point per seed, a line
    through the means."""
    scored = [r for r in rows if r["bleu"] is not None]
    if not scored:
        return []
    fig, ax = plt.subplots(figsize=(6, 4))
    for variant in sorted({r["variant"] for r in scored}):
        mine = [r for r in scored if r["variant"] == variant]
        lrs = sorted({r["values"]["lr"] for r in mine})
        means = [sum(r["bleu"] for r in mine if r["values"]["lr"] == lr)
                 / sum(1 for r in mine if r["values"]["lr"] == lr) for lr in lrs]
        line, = ax.plot(lrs, means, marker="o", label=variant)
        ax.scatter([r["values"]["lr"] for r in mine], [r["bleu"] for r in mine], s=10, color=line.get_color())
    ax.set_xscale("log")
    ax.set_xlabel("peak lr")
    ax.set_ylabel("BLEU (test)")
    ax.set_title("lr sensitivity")
    ax.legend()
    return [_save(fig, out / "lr_sensitivity.png")]


def groups(rows, out: Path) -> list:
    """groups.png: learned alpha and beta1 against the update, a panel each; a colour per
    parameter group (solid, one line per seed) and the global run's value (black, dashed);
    study_curves_groups.csv holds every plotted point."""
    curved = [r for r in rows if r.get("curves")]
    if not curved:
        return []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colour, labelled = {}, set()  # a group keeps its colour in both panels; one legend entry each
    with open(out / "study_curves_groups.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["setting", "seed", "field", "update", "value"])
        for r in curved:
            for field, points in r["curves"].items():
                writer.writerows([r["setting"], r["seed"], field, u, v] for u, v in points)
                name, _, group = learned_name(field).partition("/")
                if name not in ("alpha", "beta1"):
                    continue
                ax = axes[0] if name == "alpha" else axes[1]
                group = group or "global"
                style = {"color": "k", "ls": "--"} if group == "global" else {
                    "color": colour.setdefault(group, f"C{len(colour)}")}
                label = None if (name, group) in labelled else group
                labelled.add((name, group))
                ax.plot(*zip(*points), lw=1, label=label, **style)
    for ax, name in zip(axes, ("alpha (lr scale)", "beta1")):
        ax.set_xlabel("update")
        ax.set_ylabel(name)
        ax.set_title(f"learned {name.split()[0]} per group (one line per seed)")
        ax.legend(fontsize=7)
    return [_save(fig, out / "groups.png")]
