"""Plots written as image files (PNG, or for the comparison any format Matplotlib writes),
never shown, so they work on a headless server."""

import matplotlib
import numpy as np

matplotlib.use("Agg")  # No display needed; must come before pyplot.
from matplotlib import pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402


def curves(history, path, title="", phase_starts=()):
    """Accuracy and loss per epoch, train vs validation, side by side, with
    the learning rate (at each epoch's end) on a second axis; a dashed line
    marks the first epoch of each later training phase."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    epochs = range(1, len(history["loss"]) + 1)
    for ax, metric in zip(axes, ("accuracy", "loss")):
        if "learning_rate" in history:
            rate = ax.twinx()
            rate.plot(epochs, history["learning_rate"], ":", color="gray", label="learning rate")
            rate.set_ylabel("learning rate", color="gray")
            rate.tick_params(axis="y", colors="gray")
            rate.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
            rate.set_ylim(bottom=0)
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


def confusion(labels, predictions, class_names, path, title=""):
    """The confusion matrix: how many test images of each true class (rows)
    went to each predicted class (columns); the diagonal is what is right."""
    n = len(class_names)
    counts = np.zeros((n, n), dtype=int)
    np.add.at(counts, (labels, predictions), 1)
    size = max(5, 0.55 * n + 2)
    figure, ax = plt.subplots(figsize=(size + 1, size))
    shown = ax.imshow(counts, cmap="Blues")
    figure.colorbar(shown, ax=ax, fraction=0.046)
    for (row, column), count in np.ndenumerate(counts):
        if count:
            dark = count > counts.max() / 2
            ax.text(column, row, count, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    accuracy = np.trace(counts) / max(1, counts.sum())
    ax.set_title(f"{title}\ntest accuracy {accuracy:.2%} on {counts.sum()} images".strip())
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def image_grid(images, captions, path, title="", wrong=None, columns=8):
    """Images in a grid, each with its caption; captions of the `wrong` ones
    (a boolean per image) are red. Grey images may be (N, H, W) or (N, H, W, 1)."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    rows = max(1, -(-len(images) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.9 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= len(images):
            continue
        ax.imshow(images[i], cmap="gray" if images.ndim == 3 else None)
        color = "red" if wrong is not None and wrong[i] else "black"
        ax.set_title(captions[i], fontsize=7, color=color)
    if not len(images):
        axes.flat[0].text(0.5, 0.5, "none", ha="center", va="center")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
