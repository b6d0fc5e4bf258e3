"""The scaling figure as the paper draws it: one line per model size of a quantity against λ, one panel per
quantity; the paper's lines solid, ours dashed. Used by the full-size and the mini scaling sections."""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PAPER_STYLE = dict(linestyle="-", marker="o")
OURS_STYLE = dict(linestyle="--", marker="D")


def lambda_curves(path, title, panels):
    """panels: [(y label, {series label: [(λ, y), ...]}), ...]; a series whose label starts with "paper"
    is drawn solid, any other dashed. λ runs from 1 (the DiT) down, as in the paper. Returns the path."""
    panels = [p for p in panels if any(points for points in p[1].values())]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5.2 * max(1, len(panels)), 3.8), squeeze=False)
    for ax, (ylabel, series) in zip(axes[0], panels):
        colours = {}
        for label, points in series.items():
            if not points:
                continue
            size = label.split(" ", 1)[1] if " " in label else label
            colour = colours.setdefault(size, f"C{len(colours)}")
            lams, ys = zip(*sorted(points, reverse=True))
            style = PAPER_STYLE if label.startswith("paper") else OURS_STYLE
            ax.plot(lams, ys, color=colour, label=label, **style)
        ax.invert_xaxis()
        ax.set(xlabel="λ (target FLOPs ratio; 1 = the DiT)", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
