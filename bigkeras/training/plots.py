"""Training curves: one panel per metric, training and validation together."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402


def plot_history(history: Mapping[str, Sequence[float]], path: str) -> None:
    """Draw ``history`` (``{"loss": [...], "val_loss": [...], ...}``) to the image ``path``.

    Each metric gets a panel; its ``val_`` counterpart shares it. ``learning_rate`` gets its own.

    Example:
        >>> plot_history({"loss": [1.0, 0.5], "val_loss": [1.1, 0.7]}, "curves.png")
    """
    names = [k for k in history if not k.startswith("val_") and k != "epoch"]
    if not names:
        return
    cols = min(len(names), 3)
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for key, style in ((name, "-o"), (f"val_{name}", "--s")):
            if key in history:
                values = history[key]
                ax.plot(range(1, len(values) + 1), values, style, markersize=3, label=key)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
