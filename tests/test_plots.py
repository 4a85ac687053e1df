"""What the plots show, read back from the figures that common.plots draws."""

import math

import numpy as np
import pytest

from common import plots


def test_the_curves_break_where_a_phase_starts_and_the_legend_names_the_learning_rate(figures, tmp_path):
    history = {
        "accuracy": [0.6, 0.8, 0.87, 0.76, 0.8], "val_accuracy": [0.7, 0.8, 0.85, 0.82, 0.84],
        "loss": [1.2, 0.8, 0.6, 0.9, 0.7], "val_loss": [1.0, 0.8, 0.7, 0.8, 0.75],
        "learning_rate": [1.7e-3, 8e-4, 0.0, 1e-4, 1e-4],
    }
    plots.curves(history, tmp_path / "curves.png", "title", phase_starts=[4], kept_epoch=5)
    (figure,) = figures
    panels = [ax for ax in figure.axes if ax.get_legend()]
    assert [ax.get_ylabel() for ax in panels] == ["accuracy", "loss (as trained)"]
    for ax in panels:
        # Early stopping watched the last phase only, and the circle says so.
        assert [text.get_text() for text in ax.get_legend().get_texts()] == [
            "train", "validation", "weights kept (epoch 5, best of its phase)", "learning rate"
        ]
        # The learning rate is drawn on a second axis, behind the curves and the legend.
        twin = next(other for other in figure.axes if other is not ax and other.bbox.bounds == ax.bbox.bounds)
        assert ax.get_zorder() > twin.get_zorder()
        metric = ax.get_ylabel().split()[0]
        lines = {line.get_label(): line for line in ax.get_lines() + twin.get_lines()}
        for label, name in (("train", metric), ("validation", f"val_{metric}"), ("learning rate", "learning_rate")):
            x, y = lines[label].get_xdata(), lines[label].get_ydata()
            # Phase 1's epochs 1-3, a gap, phase 2's epochs 4-5: no line from epoch 3 to 4.
            assert list(x) == [1, 2, 3, 3.5, 4, 5]
            assert math.isnan(y[3])
            # The learning rate in units of 0.001, as its axis says.
            unit = 1e-3 if label == "learning rate" else 1
            assert [v * unit for v in y if not math.isnan(v)] == pytest.approx(history[name])
        assert twin.get_ylabel() == "learning rate (x 0.001)"


def test_without_phases_the_curves_are_unbroken(figures, tmp_path):
    plots.curves({"accuracy": [0.5, 0.7], "loss": [1.0, 0.8]}, tmp_path / "curves.png")
    line = figures[0].axes[0].get_lines()[0]
    assert list(line.get_xdata()) == [1, 2] and list(line.get_ydata()) == [0.5, 0.7]


def test_a_phase_start_beyond_the_history_draws_no_phase_line(figures, tmp_path):
    # A history.csv damaged since its epochs were written can hold fewer epochs than the phases.
    plots.curves({"accuracy": [0.5, 0.7], "loss": [1.0, 0.8]}, tmp_path / "curves.png", phase_starts=[9])
    ax = figures[0].axes[0]
    assert len(ax.get_lines()) == 1 and not ax.texts and ax.get_xlim()[1] < 3


def test_the_learning_rates_unit_is_its_own_power_of_ten_even_in_float32(figures, tmp_path):
    # Phase 2's 1e-4, as Keras logs it in float32: 9.9999997e-05.
    rate = float(np.float32(1e-4))
    plots.curves({"accuracy": [0.5, 0.7], "loss": [1.0, 0.8], "learning_rate": [rate, rate]}, tmp_path / "curves.png")
    twin = figures[0].axes[-1]
    assert twin.get_ylabel() == "learning rate (x 0.0001)"
    assert twin.get_lines()[0].get_ydata() == pytest.approx([1, 1])


def test_the_confusion_matrix_colours_the_mistakes_only(figures, tmp_path):
    labels = np.array([0] * 90 + [1] * 95 + [2] * 5)
    predictions = labels.copy()
    predictions[:4] = 1  # four zeros taken for ones
    predictions[90] = 2  # one one taken for a two
    plots.confusion(labels, predictions, ["a", "b", "c"], tmp_path / "confusion.png")
    (image,) = figures[0].axes[0].get_images()
    shown = image.get_array()
    # The right answers (86, 94 and 5) are masked out of the colours, so the
    # four mistakes, not the 94 right ones, top the scale.
    assert list(np.ma.getmaskarray(shown).diagonal()) == [True, True, True]
    assert shown[0, 1] == 4 and shown[1, 2] == 1 and image.get_clim() == (0, 4)
    texts = {text.get_text(): text.get_fontweight() for text in figures[0].axes[0].texts}
    assert texts == {"86": "bold", "4": "normal", "94": "bold", "1": "normal", "5": "bold"}


def test_the_comparison_puts_one_legend_below_both_plots(figures, tmp_path):
    long_name = "cifar10_cnn/1 " + " ".join(f"setting_{i}=/a/long/path/{i}" for i in range(20))
    plots.compare([(long_name, {"val_accuracy": [0.5, 0.6]}, []), ("b", {"val_accuracy": [0.4]}, [])], tmp_path / "c.png")
    (figure,) = figures
    (legend,) = figure.legends
    labels = [text.get_text() for text in legend.get_texts()]
    # A label too long for one line is wrapped, not cut off at the figure's edge.
    assert labels[0].replace("\n", " ") == long_name and "\n" in labels[0] and labels[1] == "b"
    assert all(ax.get_legend() is None for ax in figure.axes)
    assert legend.get_window_extent().y1 < min(ax.get_window_extent().y0 for ax in figure.axes)


def test_the_epoch_whose_weights_were_kept_is_circled_on_the_validation_curves(figures, tmp_path):
    history = {"accuracy": [0.5, 0.7, 0.8], "val_accuracy": [0.6, 0.75, 0.7], "loss": [1.0, 0.8, 0.7], "val_loss": [0.9, 0.7, 0.8]}
    plots.curves(history, tmp_path / "curves.png", kept_epoch=2)
    for ax, metric in zip(figures[0].axes, ("val_accuracy", "val_loss")):
        (circle,) = [line for line in ax.get_lines() if line.get_label() == "weights kept (epoch 2)"]
        assert list(circle.get_xdata()) == [2] and list(circle.get_ydata()) == [history[metric][1]]


def test_the_comparison_breaks_a_runs_lines_where_its_phases_start(figures, tmp_path):
    two_phases = {"val_accuracy": [0.7, 0.8, 0.75, 0.82], "val_loss": [1.0, 0.9, 0.95, 0.85]}
    plots.compare([("transfer", two_phases, [3]), ("plain", {"val_accuracy": [0.5, 0.6]}, [])], tmp_path / "c.png")
    transfer, plain = figures[0].axes[0].get_lines()
    assert list(transfer.get_xdata()) == [1, 2, 2.5, 3, 4] and math.isnan(transfer.get_ydata()[2])
    assert list(plain.get_xdata()) == [1, 2]
