"""The mini report's figures (matplotlib, PNG files beside the report): the paper's Fig. 5 (active heads
and channel groups per block and step), Fig. 6 (MLP FLOPs per patch), FLOPs vs mini-FID, digit grids, clip grids (the
video mini), the ablation's bars."""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def widths_heatmaps(path, title, steps, heads, groups):
    """Fig. 5: fraction of heads / channel groups on, per block (rows) and sampling step (t descending)."""
    order = np.argsort(-steps)
    fig, axes = plt.subplots(1, 2, figsize=(10, 2.6), sharey=True)
    for ax, data, name in ((axes[0], heads, "heads on"), (axes[1], groups, "MLP channel groups on")):
        im = ax.imshow(data[order].T, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        ticks = np.linspace(0, len(order) - 1, 5).astype(int)
        ax.set_xticks(ticks, [str(steps[order][i]) for i in ticks])
        ax.set_xlabel("timestep t (sampling goes left to right)")
        ax.set_title(name, fontsize=10)
    axes[0].set_ylabel("block")
    fig.colorbar(im, ax=axes, fraction=0.025, label="fraction on")
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def patch_flops(path, title, per_patch, images, grid, examples=6, over="digits"):
    """Fig. 6: MLP MACs per patch and step, averaged over the digits (or one clip's frames: over="frames") and for
    the first few of them beside the digit."""
    mean = per_patch.mean(0).reshape(grid, grid)
    examples = min(examples, len(per_patch))
    fig, axes = plt.subplots(2, examples + 1, figsize=(1.6 * (examples + 1), 3.4))
    axes[0, 0].imshow(mean, cmap="magma")
    axes[0, 0].set_title(f"mean over {over}", fontsize=8)
    axes[1, 0].imshow(images.mean(0)[..., 0], cmap="gray")
    for i in range(examples):
        axes[0, i + 1].imshow(per_patch[i].reshape(grid, grid), cmap="magma")
        axes[1, i + 1].imshow(images[i][..., 0], cmap="gray")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel("MLP MACs / patch", fontsize=8)
    axes[1, 0].set_ylabel("generated digit", fontsize=8)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def flops_vs_fid(path, points, floor):
    """FLOPs ratio (x) vs mini-FID (y), one point per model, with the real-vs-real floor (None: not drawn)."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for name, ratio, fid in points:
        ax.scatter([ratio], [fid], s=40)
        ax.annotate(name, (ratio, fid), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if floor is not None:  # None: no DiT measured at the models' number of digits
        ax.axhline(floor, color="grey", linestyle="--", linewidth=1)
        ax.annotate("real vs real (floor)", (min(p[1] for p in points), floor), textcoords="offset points",
                    xytext=(0, 4), fontsize=8, color="grey")
    ax.set_xlabel("FLOPs over the sampling run / DiT's")
    ax.set_ylabel("mini-FID (classifier features)")
    ax.set_title("FLOPs vs mini-FID", fontsize=11)
    return _save(fig, path)


def digit_grid(path, title, images, labels, per_class=8):
    """A grid of generated digits: one row per class."""
    classes = sorted(set(int(c) for c in labels))
    fig, axes = plt.subplots(len(classes), per_class, figsize=(per_class * 0.55, len(classes) * 0.55))
    for r, c in enumerate(classes):
        picks = np.flatnonzero(labels == c)[:per_class]
        for k in range(per_class):
            ax = axes[r, k]
            ax.axis("off")
            if k < len(picks):
                ax.imshow(images[picks[k]][..., 0], cmap="gray", vmin=0, vmax=255)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def clip_grid(path, title, clips, classes, directions, rows=10):
    """Generated clips (N, F, H, W, 1), one per row (the first of each digit, then of the next ones), frames left to
    right; each row labelled with its class (digit, direction)."""
    digit = np.asarray(classes) // len(directions)
    picks = [int(np.flatnonzero(digit == d)[0]) for d in sorted(set(digit.tolist()))][:rows]
    frames = clips.shape[1]
    fig, axes = plt.subplots(len(picks), frames, figsize=(frames * 0.55, len(picks) * 0.6), squeeze=False)
    for r, i in enumerate(picks):
        for f in range(frames):
            axes[r, f].imshow(clips[i, f, ..., 0], cmap="gray", vmin=0, vmax=255)
            axes[r, f].set_xticks([])
            axes[r, f].set_yticks([])
        axes[r, 0].set_ylabel(f"{digit[i]} {directions[int(classes[i]) % len(directions)]}", fontsize=7,
                              rotation=0, ha="right", va="center")
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def ablation_bars(path, bars):
    """bars: [(label, mini-FID, FLOPs ratio)]: one bar per routing variant, its FLOPs ratio written on it."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    labels, fids, flops = zip(*bars)
    drawn = ax.bar(labels, fids, color=[f"C{i}" for i in range(len(bars))])
    for bar, f in zip(drawn, flops):
        ax.annotate(f"FLOPs {f:.2f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                    va="bottom", fontsize=8)
    ax.set(ylabel="mini-FID (lower is better)", title="Ablation at λ=0.5")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)
