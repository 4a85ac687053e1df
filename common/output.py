"""What a run prints and writes, the same way in every script.

    runs/<script>/<run id>/config.json   the final settings
    runs/<script>/<run id>/history.csv   one row per epoch (Keras' CSVLogger)
    runs/<script>/<run id>/curves.png    accuracy and loss, train vs validation
    runs/<script>/<run id>/model.keras   the trained model

The last line of stdout is always `final test_acc=... test_loss=... train_seconds=...`
so that runs can be compared with grep.
"""

import json
import os
import time

import keras
import numpy as np

from common import UserError, plots

TABLE_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds")
# The table prints short names for the Keras log keys in TABLE_COLUMNS.
_HEADER = "epoch  train_loss  train_acc  val_loss  val_acc        lr  seconds"
_ROW = "{:>5d}  {:>10.4f}  {:>9.4f}  {:>8.4f}  {:>7.4f}  {:>8.2e}  {:>7.1f}"


class Run:
    """A run folder under `out_dir/<script>/`, named by the start time."""

    def __init__(self, script, config):
        self.script = script
        self.config = config
        self.dir = _new_run_dir(os.path.join(config["out_dir"], script))
        self.train_seconds = None
        write_json(os.path.join(self.dir, "config.json"), config)
        print(f"run       {self.dir}")
        print("config    " + " ".join(f"{key}={value!r}" for key, value in config.items()))

    def path(self, name):
        return os.path.join(self.dir, name)

    def callbacks(self):
        """The callbacks every script passes to `model.fit`: the epoch table,
        then CSVLogger, which sees the table's seconds and learning rate.

        A script that trains in phases (several `fit` calls) passes fresh
        ones to each: the rows of later phases are appended to history.csv.
        """
        return [EpochTable(self), keras.callbacks.CSVLogger(self.path("history.csv"), append=True)]

    def finish(self, model, history, x_test, y_test, **extra):
        """Evaluates on the test set (once, here), saves the model and the
        curves, and prints the final line. `extra` key=values are appended.

        `history` is what `model.fit` returned, or a list of them for a run
        that trained in phases; the plot marks where each phase began.
        """
        histories = history if isinstance(history, list) else [history]
        merged = {key: sum((h.history[key] for h in histories), []) for key in histories[0].history}
        phase_starts = np.cumsum([len(h.epoch) for h in histories])[:-1] + 1
        test_loss, test_acc = model.evaluate(x_test, y_test, verbose=0)[:2]
        save_model(model, self.path("model.keras"))
        title = f"{self.script}  {os.path.basename(self.dir)}"
        plots.curves(merged, self.path("curves.png"), title=title, phase_starts=list(phase_starts))
        print(f"wrote     {', '.join(sorted(os.listdir(self.dir)))} in {self.dir}")
        fields = {
            "test_acc": f"{test_acc:.4f}",
            "test_loss": f"{test_loss:.4f}",
            "train_seconds": f"{self.train_seconds:.1f}",
            "epochs": len(merged["loss"]),
            **extra,
            "run_dir": self.dir,
        }
        print("final " + " ".join(f"{key}={value}" for key, value in fields.items()))
        return test_acc, test_loss


class EpochTable(keras.callbacks.Callback):
    """Prints the parameter counts, then one fixed-width row per epoch.

    It adds `seconds` (the epoch's wall time) and `learning_rate` to the epoch
    logs, so the callbacks after it (CSVLogger, History) record them too.
    """

    def __init__(self, run):
        super().__init__()
        self.run = run

    def on_train_begin(self, logs=None):
        trainable = sum(int(np.prod(weight.shape)) for weight in self.model.trainable_weights)
        print(f"model     {self.model.name}: {self.model.count_params():,} parameters, {trainable:,} trainable")
        print(_HEADER)
        self.train_start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs["seconds"] = time.perf_counter() - self.epoch_start
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        values = [logs.get(key, float("nan")) for key in TABLE_COLUMNS[1:]]
        print(_ROW.format(epoch + 1, *values), flush=True)

    def on_train_end(self, logs=None):
        # Phases add up: train_seconds is the time spent in all `fit` calls.
        self.run.train_seconds = (self.run.train_seconds or 0) + time.perf_counter() - self.train_start


def write_json(path, data):
    _write_atomically(path, lambda tmp: _dump_json(tmp, data))


def save_model(model, path):
    # Keras decides the format from the extension, so the temporary name
    # keeps it: a crash mid-save then never leaves a half-written model.keras.
    _write_atomically(path, model.save, suffix=".tmp.keras")


def _dump_json(path, data):
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def _write_atomically(path, write, suffix=".tmp"):
    tmp = path + suffix
    write(tmp)
    os.replace(tmp, path)


def _new_run_dir(parent):
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for attempt in range(1, 100):
        path = os.path.join(parent, stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            continue
        except OSError as error:
            raise UserError(
                f"cannot create the run folder {path} ({error.strerror}); "
                "choose a writable --out_dir"
            ) from None
    raise UserError(f"too many runs started this second in {parent}")
