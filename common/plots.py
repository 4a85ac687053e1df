"""Plots written as PNG files, never shown, so they work on a headless server."""

import matplotlib

matplotlib.use("Agg")  # No display needed; must come before pyplot.
from matplotlib import pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402


def curves(history, path, title="", phase_starts=()):
    """Accuracy and loss per epoch, train vs validation, side by side; a
    dashed line marks the first epoch of each later training phase."""
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    epochs = range(1, len(history["loss"]) + 1)
    for ax, metric in zip(axes, ("accuracy", "loss")):
        ax.plot(epochs, history[metric], "o-", label="train")
        if f"val_{metric}" in history:
            ax.plot(epochs, history[f"val_{metric}"], "o-", label="validation")
        for epoch in phase_starts:
            ax.axvline(epoch - 0.5, color="gray", linestyle="--", linewidth=1)
            ax.annotate(" next phase", (epoch - 0.5, 1), xycoords=("data", "axes fraction"), va="top", color="gray")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def compare(runs, path):
    """Validation accuracy and loss per epoch of several runs, one line each;
    `runs` is a list of (label, history) pairs."""
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, metric in zip(axes, ("val_accuracy", "val_loss")):
        for name, history in runs:
            values = history.get(metric, [])
            ax.plot(range(1, len(values) + 1), values, "o-", markersize=3, label=name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.set_ylabel(metric.replace("_", " ").replace("val", "validation"))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
