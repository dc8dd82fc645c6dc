"""PNG plots (matplotlib, headless): training curves and confusion matrices."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # headless: servers and CI have no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    import io

    from .io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def plot_curves(log_history: Sequence[dict], path: str | Path) -> Path | None:
    """Train loss, eval loss and every other eval metric vs step; one panel for losses, one for metrics."""
    train = [(r["step"], r["loss"]) for r in log_history if "loss" in r and "step" in r]
    evals = [r for r in log_history if any(k.startswith("eval_") for k in r) and "step" in r]
    if not train and not evals:
        return None
    plt = _plt()
    metric_keys = sorted(
        {
            k
            for r in evals
            for k in r
            if k.startswith("eval_")
            and k != "eval_loss"
            and not k.endswith(("runtime", "per_second"))
            and isinstance(r[k], (int, float))
        }
    )
    fig, axes = plt.subplots(1, 2 if metric_keys else 1, figsize=(11 if metric_keys else 6, 4), squeeze=False)
    ax = axes[0][0]
    if train:
        ax.plot(*zip(*train), label="train loss")
    ev_loss = [(r["step"], r["eval_loss"]) for r in evals if "eval_loss" in r]
    if ev_loss:
        ax.plot(*zip(*ev_loss), marker="o", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    if metric_keys:
        ax2 = axes[0][1]
        for k in metric_keys:
            pts = [(r["step"], r[k]) for r in evals if k in r]
            ax2.plot(*zip(*pts), marker="o", label=k[5:])
        ax2.set_xlabel("step")
        ax2.set_title("eval metrics")
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=8)
    fig.tight_layout()
    out = _save(fig, Path(path))
    plt.close(fig)
    return out


def plot_confusion_matrix(cm: np.ndarray, labels: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix with raw counts in the cells (rows = true, columns = predicted)."""
    plt = _plt()
    cm = np.asarray(cm)
    n = len(labels)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.6 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    int(cm[i, j]),
                    ha="center",
                    va="center",
                    color="white" if norm[i, j] > 0.5 else "black",
                    fontsize=8,
                )
    ax.set_title(title or "confusion matrix")
    fig.tight_layout()
    out = _save(fig, Path(path))
    plt.close(fig)
    return out
