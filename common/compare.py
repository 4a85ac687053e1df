"""Compares finished or interrupted runs, of one script or several.

    python -m common.compare runs/mnist_cnn/*
    python -m common.compare runs/mnist_cnn/20261122-* runs/cifar10_cnn/20261123-101500 --out=cmp.svg

Prints a table (run, the settings that differ between the runs, best and last
validation accuracy, test accuracy, training seconds, the epochs in the
history) and draws every run's
validation accuracy and loss per epoch in one image: `compare.png` unless
`--out` names another path, in any format Matplotlib writes (.png, .svg,
.pdf, ...). A run that has not finished shows its epochs so far.
"""

import json
import math
import os
import sys

from matplotlib.backend_bases import FigureCanvasBase

import common
from common import UserError, plots, reason, visible
from common.files import epochs_in, read_history, shown


def load_run(folder):
    """A run folder's settings, history and (when it finished) final figures."""
    try:
        with open(os.path.join(folder, "config.json")) as f:
            config = json.load(f)
        if not isinstance(config, dict):
            raise ValueError("its config.json holds no settings")
    except (OSError, ValueError) as error:
        raise UserError(
            f"{folder} is not a run folder ({reason(error)}); give folders "
            "such as runs/mnist_cnn/<run id> that hold config.json"
        ) from None
    history, result = {}, {}
    path = os.path.join(folder, "history.csv")  # The file being read, for the error.
    try:
        if os.path.exists(path):  # A run stopped before its first epoch ended has no history yet,
            history = read_history(path)
        path = os.path.join(folder, "result.json")
        if os.path.exists(path):  # and an unfinished one no result.
            with open(path) as f:
                result = json.load(f)
            if not isinstance(result, dict):
                raise ValueError("it holds no figures")
            starts = result.get("phase_starts", [])
            if not (isinstance(starts, list) and all(type(epoch) is int and epoch > 0 for epoch in starts)):
                raise ValueError(f"its phase_starts, {starts!r}, are not epochs")
            # A finished run's history lost or emptied since (an empty one is
            # no damage in a run stopped before its first epoch ended).
            epochs, rows = result.get("epochs"), epochs_in(history)
            if type(epochs) is int and epochs != rows:
                path = os.path.join(folder, "history.csv")
                if not os.path.exists(path):
                    raise UserError(f"{path} is missing, and result.json counts {epochs} epochs; "
                                    "leave that run out of the comparison")
                raise ValueError(f"it holds {rows} epochs where result.json counts {epochs}")
    except UserError:
        raise  # Already says what is wrong (a UserError is a ValueError too).
    except (OSError, ValueError) as error:  # A UnicodeDecodeError is a ValueError.
        raise UserError(
            f"{path} is damaged ({reason(error)}); leave that run out of the comparison"
        ) from None
    script = result.get("script") or os.path.basename(os.path.dirname(os.path.normpath(folder)))
    name = f"{script}/{os.path.basename(os.path.normpath(folder))}"
    return {"name": name, "config": config, "history": history, "result": result}


def differing_keys(runs):
    """The settings whose values are not the same in every run (out_dir aside)."""
    keys = sorted({key for run in runs for key in run["config"]} - {"out_dir"})
    missing = object()
    return [key for key in keys if len({repr(run["config"].get(key, missing)) for run in runs}) > 1]


def label(run, keys):
    """The run's name, the settings that differ between the runs and, once
    it has finished, its test accuracy."""
    text = " ".join([run["name"], *(f"{key}={run['config'].get(key, '-')}" for key in keys)])
    if "test_acc" in run["result"]:
        text += f" | test_acc={shown('test_acc', run['result']['test_acc'])}"
    # A path that is not UTF-8 (a Latin-1 café) holds characters that
    # Matplotlib cannot draw: they are written as escapes (\udce9).
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def table(runs, keys):
    # "epochs run": the epochs in the history, beside the epochs setting when that differs.
    header = ["run", *keys, "best val_acc", "last val_acc", "test_acc", "train s", "epochs run"]
    rows = []
    for run in runs:
        val = run["history"].get("val_accuracy", [])
        best = max((v for v in val if not math.isnan(v)), default=math.nan)  # NaN: an epoch that logged none.
        result = run["result"]
        rows.append([
            run["name"],
            *(str(run["config"].get(key, "-")) for key in keys),
            f"{best:.4f}" if val else "-",
            f"{val[-1]:.4f}" if val else "-",
            shown("test_acc", result.get("test_acc", "unfinished")),
            shown("train_seconds", result.get("train_seconds", "-")),
            str(epochs_in(run["history"])),
        ])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def main(argv):
    out = "compare.png"
    folders = []
    for arg in argv:
        if arg in ("-h", "--help"):
            print(__doc__.strip())
            return
        if arg.startswith("--out="):
            out = arg.removeprefix("--out=")
        elif arg.startswith("-"):
            raise UserError(f"unknown option {arg}; use: python -m common.compare RUN_FOLDER ... [--out=compare.png]")
        else:
            folders.append(arg)
    if not folders:
        raise UserError("no run folders given; use: python -m common.compare runs/<script>/* [--out=compare.png]")
    name, extension = os.path.splitext(os.path.basename(out))
    if not name or extension[1:].lower() not in FigureCanvasBase.get_supported_filetypes():
        raise UserError(f"--out={out} is not an image file's path; give e.g. --out=compare.png (or .svg, .pdf)")
    # A run's own plots (curves.png, ...) stay as the run drew them.
    where = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(where):  # Said before the table is printed, not after.
        raise UserError(f"--out={out} is in a folder that does not exist, {where}; make it, or give another --out")
    if os.path.exists(os.path.join(where, "config.json")):
        raise UserError(f"--out={out} would write into the run folder {where}; give --out a path outside run folders")
    # A path that does not exist is mistyped (a glob matches only what exists).
    missing = [folder for folder in folders if not os.path.exists(folder)]
    if missing:
        raise UserError(f"{visible(missing[0])} does not exist; give run folders such as runs/mnist_cnn/<run id>")
    # A glob such as runs/mnist_cnn/* may also match a file saved there (an
    # earlier comparison's image) or the folder of a run killed before it
    # wrote its settings: among several paths, those are left out.
    if len(folders) > 1:
        kept = [folder for folder in folders if os.path.isfile(os.path.join(folder, "config.json"))]
        for folder in sorted(set(folders) - set(kept)):
            print(f"note      {visible(folder)} holds no config.json, so it is not a run folder: left out")
        if not kept:
            raise UserError(f"none of the {len(folders)} paths given is a run folder; give folders such as "
                            "runs/mnist_cnn/<run id> that hold config.json")
        folders = kept
    runs = [load_run(folder) for folder in folders]
    keys = differing_keys(runs)
    print(table(runs, keys))
    try:
        plots.compare([(label(run, keys), run["history"], run["result"].get("phase_starts", [])) for run in runs], out)
    except OSError as error:
        raise UserError(f"cannot write {out} ({error.strerror}); give a writable --out=path.png") from None
    except RuntimeError as error:  # Such as .pgf, which needs LaTeX installed.
        raise UserError(f"cannot write {out} ({error}); give e.g. --out=compare.png (or .svg, .pdf)") from None
    print(f"wrote     {out}")


if __name__ == "__main__":
    common.handle_errors()
    main(sys.argv[1:])
