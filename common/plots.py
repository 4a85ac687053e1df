"""Plots written as image files (PNG, or for the comparison any format Matplotlib writes),
never shown, so they work on a headless server."""

import math
import os
import textwrap

import matplotlib
import numpy as np

matplotlib.use("Agg")  # No display needed; must come before pyplot.
from matplotlib import pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402

from common import files  # noqa: E402


def curves(history, path, title="", phase_starts=(), kept_epoch=None):
    """Accuracy and loss per epoch, train vs validation, side by side, with
    the learning rate (at each epoch's end) on a second axis. A dashed line
    marks the first epoch of each later training phase, and the curves break
    there: a phase trains another way (other layers, other inputs, another
    learning rate), so a line from one phase into the next would draw a
    change that no epoch made. The loss is the one training minimised, label
    smoothing and weight penalties included where the script has them.
    `kept_epoch` (counting from 1), where early stopping put back the
    weights of its best epoch, is circled on the validation curves."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    epochs = range(1, len(history["loss"]) + 1)
    for ax, metric in zip(axes, ("accuracy", "loss")):
        lines = ax.plot(*_by_phase(epochs, history[metric], phase_starts), "o-", label="train")
        if f"val_{metric}" in history:
            lines += ax.plot(*_by_phase(epochs, history[f"val_{metric}"], phase_starts), "o-", label="validation")
            if kept_epoch and kept_epoch <= len(epochs):
                # With phases, early stopping watched the last phase only.
                which = f"epoch {kept_epoch}" + (", best of its phase" if phase_starts else "")
                lines += ax.plot(kept_epoch, history[f"val_{metric}"][kept_epoch - 1], "o", markersize=13,
                                 fillstyle="none", color="black", label=f"weights kept ({which})")
        if "learning_rate" in history:
            rate = ax.twinx()
            # In units of a power of ten, named in the axis' label: Matplotlib
            # would write the power above the axis, where the phase labels go.
            top = max((v for v in history["learning_rate"] if v > 0), default=1.0)
            # (A float32 rate of 1e-4 is logged as 9.9999997e-05: the 1e-6 keeps it in units of 1e-4.)
            unit = 10.0 ** math.floor(math.log10(top) + 1e-6)
            x, y = _by_phase(epochs, history["learning_rate"], phase_starts)
            lines += rate.plot(x, [v / unit for v in y], ":", color="gray", label="learning rate")
            rate.set_ylabel(f"learning rate (x {unit:g})", color="gray")
            rate.tick_params(axis="y", colors="gray")
            rate.set_ylim(bottom=0)
            # The curves and the legend in front of the learning rate's line.
            ax.set_zorder(rate.get_zorder() + 1)
            ax.patch.set_visible(False)
        for epoch in (start for start in phase_starts if start <= len(epochs)):
            ax.axvline(epoch - 0.5, color="gray", linestyle="--", linewidth=1)
            # Above the plot, where no legend or curve can cover it.
            ax.annotate("next phase", (epoch - 0.5, 1), xycoords=("data", "axes fraction"), va="bottom", ha="center",
                        color="gray")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.set_ylabel("loss (as trained)" if metric == "loss" else metric)
        ax.grid(alpha=0.3)
        ax.legend(handles=lines)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _by_phase(epochs, values, phase_starts):
    """The points (epochs, values) with a gap before each phase's first epoch:
    Matplotlib breaks a line at a NaN."""
    x, y = list(epochs), [float(v) for v in values]
    for epoch in sorted(set(phase_starts), reverse=True):
        if epoch in x[1:]:
            i = x.index(epoch)
            x.insert(i, epoch - 0.5)
            y.insert(i, float("nan"))
    return x, y


def compare(runs, path):
    """Validation accuracy and loss per epoch of several runs, one line each,
    broken where a phase starts as in `curves`; `runs` is a list of (label,
    history, phase_starts) triples. The legend goes below both
    plots, as wide as the figure, a label that does not fit on one line
    wrapped: it names the settings that differ, however many."""
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5 + 0.3 * len(runs)), layout="constrained")
    for ax, metric in zip(axes, ("val_accuracy", "val_loss")):
        for name, history, phase_starts in runs:
            values = history.get(metric, [])
            ax.plot(*_by_phase(range(1, len(values) + 1), values, phase_starts), "o-", markersize=3,
                    label=textwrap.fill(name, 150))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation accuracy")
    axes[1].set_ylabel("validation loss (as trained)")
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", fontsize=8)
    # Under a temporary name: a save that fails part way (.pgf without LaTeX)
    # leaves no broken image, and an earlier one at `path` as it was.
    path = os.fspath(path)
    extension = os.path.splitext(path)[1][1:].lower()
    files.write_atomically(path, lambda tmp: figure.savefig(tmp, dpi=100, format=extension))
    plt.close(figure)


def confusion(labels, predictions, class_names, path, title=""):
    """The confusion matrix: how many test images of each true class (rows)
    went to each predicted class (columns); the diagonal, in bold on grey, is
    what is right. Only the mistakes are coloured: the diagonal's counts, far
    larger, would set the colour scale and leave every mistake near-white."""
    n = len(class_names)
    counts = np.zeros((n, n), dtype=int)
    np.add.at(counts, (labels, predictions), 1)
    right = np.eye(n, dtype=bool)
    mistakes = np.where(right, 0, counts)
    size = max(5, 0.55 * n + 2)
    figure, ax = plt.subplots(figsize=(size + 1, size))
    # The diagonal is masked out of the colour scale, and drawn light grey.
    colours = plt.get_cmap("Reds").with_extremes(bad="#e6e6e6")
    shown = ax.imshow(np.ma.masked_array(counts, right), cmap=colours, vmin=0, vmax=max(1, mistakes.max()))
    bar = figure.colorbar(shown, ax=ax, fraction=0.046, label="test images put in the wrong class")
    bar.ax.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    for (row, column), count in np.ndenumerate(counts):
        if count:
            dark = mistakes[row, column] > mistakes.max() / 2
            ax.text(column, row, count, ha="center", va="center", fontsize=7, color="white" if dark else "black",
                    weight="bold" if row == column else "normal")
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
