"""Writing a run's files so that a crash never leaves one half-written, and
reading them back.

Every file that a later run or tool loads (the model, the resume state,
config.json and result.json; the checkpoint, which `output.ModelCheckpoint`
writes, the same way) is written under a temporary name, flushed to the disk
and then renamed over the old one: after a crash or a power cut it is either
the old file or the new one, whole. `unwritable` is the one line for a run
folder that cannot be written, and `shown` how the final line, and
`common.compare`, show a figure read back.
"""

import contextlib
import csv
import json
import math
import os

from common import UserError, reason


def write_atomically(path, write, suffix=".tmp"):
    """Calls `write` with a temporary name beside `path`, then flushes that
    file to the disk and renames it to `path`. If `write` fails, the
    temporary file is removed and `path` is as it was."""
    tmp = path + suffix
    try:
        write(tmp)
        sync(tmp)
        os.replace(tmp, path)
    except BaseException:
        # Such as a full disk: the half-written copy would only take up room.
        # (If it cannot be removed either, the first error is the one to see.)
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def sync(path):
    # The data reaches the disk before the rename does, even on power loss.
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def unwritable(folder, error):
    """The error for a file the run folder cannot take (a full disk, the
    folder gone or made read-only): one line that says what to do."""
    return UserError(
        f"cannot write to the run folder {folder} ({reason(error)}); make room or make it writable, then run "
        "the same command again (it continues from the last epoch saved there, if any), or use another --out_dir"
    )


def write_json(path, data):
    write_atomically(path, lambda tmp: _dump_json(tmp, data))


def _dump_json(path, data):
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def write_text(path, text):
    with open(path, "w") as f:
        f.write(text)


def write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)


def save_model(model, path):
    # Keras decides the format from the extension, so the temporary name
    # keeps it: a crash mid-save then never leaves a half-written model.keras.
    write_atomically(path, model.save, suffix=".tmp.keras")


def read_history(path):
    """history.csv as {column: [values per epoch]}, without the epoch column.
    Raises ValueError (or OSError) when it is not a table of numbers."""
    with open(path, newline="") as f:
        return parse_history(f.read().splitlines(keepends=True))


def history_header(path):
    """The column names on history.csv's first line, or None where the file
    is missing, empty or unreadable."""
    try:
        with open(path, newline="") as f:
            return next(csv.reader(f), None)
    except (OSError, ValueError, csv.Error):  # A UnicodeDecodeError is a ValueError.
        return None


def parse_history(lines):
    """The lines of a history.csv as `read_history` reads them."""
    try:
        header, *rows = list(csv.reader(lines)) or [[]]
    except csv.Error as error:  # A "field" longer than csv's limit, such as the zero bytes a crash can leave.
        raise ValueError(f"not a table ({error})") from None
    columns = {key: [] for key in header if key != "epoch"}
    rows = [row for row in rows if row]  # Blank lines, such as a last one or \r\r\n endings, hold no epoch.
    for number, row in enumerate(rows, 1):
        if len(row) != len(header):
            raise ValueError(f"row {number} has {len(row)} values where the header names {len(header)}")
        for key, text in zip(header, row):
            if key in columns:
                try:
                    # CSVLogger writes NA for a value that an epoch did not log.
                    columns[key].append(math.nan if text == "NA" else float(text))
                except ValueError:
                    raise ValueError(f"row {number}'s {key} is {text!r}, not a number") from None
    return columns


def epochs_in(history):
    """The number of epochs (rows) in what `read_history` returned."""
    return len(next(iter(history.values()), []))


def read_figures(path):
    """The {name: number} that `write_json` wrote to `path` (such as
    transfer_xception.py's head_test.json), or None if the file is missing
    or damaged."""
    try:
        with open(path) as f:
            figures = json.load(f)
    except (OSError, ValueError):  # A UnicodeDecodeError is a ValueError.
        return None
    numbers = isinstance(figures, dict) and bool(figures) and all(
        isinstance(value, (int, float)) and not isinstance(value, bool) for value in figures.values()
    )
    return figures if numbers else None


def shown(key, value):
    """A figure as the final line (and `common.compare`) shows it: seconds to
    a tenth, other fractions (accuracies, losses) to four places, counts as
    they are, None as unknown, text (as runs before 2026-12-05 wrote their
    figures) as it is."""
    if value is None:
        return "unknown"
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and key.endswith("seconds"):
        return f"{value:.1f}"
    if number and isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
