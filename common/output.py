"""What a run prints and writes, the same way in every script.

    runs/<script>/<run id>/config.json   the final settings
    runs/<script>/<run id>/history.csv   one row per epoch (Keras' CSVLogger)
    runs/<script>/<run id>/curves.png    accuracy and loss, train vs validation, and the learning rate
    runs/<script>/<run id>/confusion.png the test set's confusion matrix
    runs/<script>/<run id>/misclassified.png  test images the model got wrong
                                         (predictions.png: the first test photos, for transfer_xception.py)
    runs/<script>/<run id>/model.keras   the trained model
    runs/<script>/<run id>/result.json   the final figures

The last line of stdout is always `final test_acc=... test_loss=... train_seconds=...`
so that runs can be compared with grep.

A run that stops before it finishes (killed, Ctrl-C, power loss) continues
where it stopped when the same command is run again: after each epoch (every
few where epochs are short: see ResumeState) the model's weights, the
optimizer's state, the epoch and the callbacks' bests go to `resume.npz`, and
a new `Run` with the same settings and `out_dir` picks up the newest
unfinished run folder instead of starting a new one. Every file that a
later run loads (the model, checkpoint, state and JSON files) is written
under a temporary name and then renamed, so a crash never leaves it
half-written; history.csv grows a row at a time, and a row cut short is
mended on resuming.
"""

import contextlib
import csv
import fcntl
import json
import math
import os
import threading
import time
import zipfile

import keras
import numpy as np

import common
from common import UserError, augment, device, plots, reason, schedules

TABLE_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds")
# The table prints short names for the Keras log keys in TABLE_COLUMNS.
_HEADER = "epoch  train_loss  train_acc  val_loss  val_acc        lr  seconds"
_ROW = "{:>5d}  {:>10.4f}  {:>9.4f}  {:>8.4f}  {:>7.4f}  {:>8.2e}  {:>7.1f}"


RESUME_STATE = "resume.npz"  # the state after the last saved epoch; gone once the run finishes (result.json)
_LOCK = "running.pid"  # locked by the process that is writing to the run folder, whose id it holds
# What ResumeState saves beside the arrays of the model, optimizer and early stopping.
_STATE_KEYS = ("epochs_done", "initial_epoch", "train_seconds", "phase", "callbacks")


class Run:
    """A run folder under `out_dir/<script>/`, named by the start time.

    If an earlier run with the same settings stopped before it finished, this
    is that run's folder, and `initial_epoch` is the epoch its training
    continues from (the epochs in its saved state, or the last epoch if
    early stopping had already ended it): pass it to `model.fit`, with the
    callbacks from `callbacks()`.
    """

    def __init__(self, script, config):
        self.script = script
        self.config = config
        parent = os.path.join(config["out_dir"], script)
        # A run over several machines is not resumed: its processes would
        # have to resume from the same epoch, which nothing here ensures.
        self.dir, self._lock = _unfinished_run(parent, config) if device.processes() == 1 else (None, None)
        self.initial_epoch = 0
        self.train_seconds = None
        self._state = None
        self._restorer = None  # the early stopping that puts the best epoch's weights back, if any
        if self.dir:
            self._state = _read_state(self.path(RESUME_STATE))
            done = 0
            if self._state is not None:
                done = int(self._state["epochs_done"])
                # Where training continues: past the last epoch if early
                # stopping had already ended it.
                self.initial_epoch = int(self._state["initial_epoch"])
                self.train_seconds = float(self._state["train_seconds"])
            try:
                _keep_history_rows(self.path("history.csv"), done)
            except OSError as error:
                raise _unwritable(self.dir, error) from None
            print(f"resume    {self.dir} after epoch {done}")
        else:
            self.dir = _new_run_dir(parent, _process_suffix())
            # Claimed before config.json makes it look like a run to resume.
            self._lock = _claim(self.dir)
            write_json(os.path.join(self.dir, "config.json"), config)
            print(f"run       {self.dir}")
        print("config    " + " ".join(f"{key}={value!r}" for key, value in config.items()))
        if device.processes() == 1:
            # The state after the last saved epoch is on disk (ResumeState).
            common.on_interrupt = "run the same command again to continue from the last saved epoch"
            common.print_on_terminate()

    def path(self, name):
        return os.path.join(self.dir, name)

    def callbacks(self, *extra, phase=""):
        """The callbacks every script passes to `model.fit`: the epoch table,
        then CSVLogger, which sees the table's seconds and learning rate, then
        the script's own (`extra`: a checkpoint, early stopping), then the one
        that saves, and on resuming restores, the state of all of them.

        A script that trains in phases (several `fit` calls) passes fresh
        ones to each, named by `phase`: the rows of later phases are appended
        to history.csv. A run interrupted after the last epoch of one phase
        resumes after it: the script gives that phase's model its variables
        back with `restore`, and skips the phase's `fit`.
        """
        # Early stopping that puts its best epoch's weights back at the end:
        # `finish` says which epoch's weights the model holds, and marks it.
        self._restorer = next(
            (c for c in extra if isinstance(c, keras.callbacks.EarlyStopping) and c.restore_best_weights), None
        )
        return [
            EpochTable(self),
            keras.callbacks.CSVLogger(self.path("history.csv"), append=True),
            *extra,
            ResumeState(self, extra, phase),
        ]

    def restore(self, phase, model):
        """For a script that skips a phase an interrupted run had finished:
        if the run's saved state was written by the callbacks of `phase`,
        gives `model` (the model that phase trained) its variables from it
        and returns True; else changes nothing and returns False. (The state
        of a phase stopped before its last epoch belongs to that phase's own
        `fit`, whose callbacks restore the optimizer's state too.)"""
        if self._state is None or str(self._state["phase"]) != phase:
            return False
        _assign(model.variables, _arrays(self._state, "model"))
        self._state = None
        return True

    def finish(self, model, x_test, y_test, class_names=None, images=None, grid="misclassified",
               phase_starts=(), batch_size=32, flip_tta=False, shift_tta=0, **extra):
        """Evaluates on the test set (once, here), saves the model and the
        plots, and prints the final line. `extra` key=values are appended.

        The plots: curves.png (from history.csv, which holds every epoch of
        every phase, those before a resume included; `phase_starts` are the
        epochs, counting from 1, where later phases began), confusion.png
        (with `class_names`, else the class numbers), and a grid of test
        images (`images`, else `x_test` where it holds images) that is
        either the misclassified ones with their true and predicted classes
        (grid="misclassified") or the first ones with their predictions
        (grid="predictions").

        test_loss is the test images' cross-entropy, without label smoothing
        or weight penalties, so that runs with different ones compare. The
        model is saved first, then scored in batches of `batch_size`. With
        `flip_tta`, test_acc_flip_tta is the accuracy when each test image and
        its mirror image vote together (their probabilities summed): the
        test-time augmentation of models trained with random flips. With
        `shift_tta` pixels as well, test_acc_flip_shift_tta is that when the
        image moved that far diagonally either way votes too, each time with
        its mirror image (`augment.shift_votes`).

        A file it cannot write (a full disk) stops the run with one line; the
        same command then finishes it again from its saved state.
        """
        with _writing_to(self.dir):
            if shift_tta and not flip_tta:
                raise ValueError("shift_tta adds votes to flip_tta's: pass flip_tta=True too")
            save_model(model, self.path("model.keras"))
            try:
                merged = read_history(self.path("history.csv"))
                missing = [key for key in ("loss", "accuracy") if key not in merged]  # What the curves draw.
                if missing:
                    raise ValueError(f"it has no {missing[0]} column")
            except (OSError, ValueError) as error:
                # Damaged since its epochs were written: the run still finishes,
                # without the curves, rather than lose its scores.
                print(f"note      {self.path('history.csv')} cannot be read ({reason(error)}); curves.png is not drawn")
                merged = None
            if device.processes() > 1:
                model = device.local_copy(self.path("model.keras"))
            probabilities = np.asarray(device.predict(model, x_test, batch_size), dtype="float64")
            labels, predicted = np.argmax(y_test, axis=1), np.argmax(probabilities, axis=1)
            test_acc = float(np.mean(predicted == labels))
            test_loss = float(-np.mean(np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, 1))))
            title = f"{self.script}  {os.path.basename(self.dir)}"
            kept = self._report_kept_epoch(merged)
            if merged is not None:
                plots.curves(merged, self.path("curves.png"), title=f"{title}: test accuracy {test_acc:.2%}",
                             phase_starts=list(phase_starts), kept_epoch=kept)
            class_names = list(class_names or map(str, range(probabilities.shape[1])))
            plots.confusion(labels, predicted, class_names, self.path("confusion.png"), title=title)
            if images is None and np.ndim(x_test) in (3, 4):
                images = x_test
            if images is not None:
                self._image_grid(images, labels, predicted, probabilities, class_names, grid, title)
            # Numbers, as the final line prints them (its seconds to a tenth);
            # epochs None where the history cannot be read.
            fields = {
                "test_acc": round(float(test_acc), 4),
                "test_loss": round(float(test_loss), 4),
                "train_seconds": round(self.train_seconds, 2),
                "epochs": len(merged["loss"]) if merged is not None else None,
                **extra,
            }
            if flip_tta:
                votes = augment.flip_votes(model, x_test, probabilities, batch_size)
                fields["test_acc_flip_tta"] = round(augment.voted_accuracy(votes, labels), 4)
                if shift_tta:
                    votes = augment.shift_votes(model, x_test, votes, shift_tta, batch_size)
                    fields["test_acc_flip_shift_tta"] = round(augment.voted_accuracy(votes, labels), 4)
            # The final figures, for `python -m common.compare` and other tools
            # (and the epochs where later phases began, for its curves).
            # Written last: until it exists, the same command resumes the run
            # from its saved state and finishes it again.
            phases = {"phase_starts": list(phase_starts)} if phase_starts else {}
            write_json(self.path("result.json"), {"script": self.script, **fields, **phases})
            # Finished: the same command would now start a new run, not continue this one.
            common.on_interrupt = ""
            for name in (RESUME_STATE, _LOCK):
                if os.path.exists(self.path(name)):
                    os.remove(self.path(name))
            self._lock.close()  # Lets go of the lock.
            print(f"wrote     {', '.join(sorted(os.listdir(self.dir)))} in {self.dir}")
            print("final " + " ".join(f"{key}={shown(key, value)}" for key, value in {**fields, "run_dir": self.dir}.items()))
            return test_acc, test_loss

    def _report_kept_epoch(self, history):
        """Prints a `weights` line naming the epoch (counting from 1) whose
        weights early stopping put back at the end of training, and returns
        it; None, and no line, without such early stopping."""
        stopper = self._restorer
        if stopper is None or stopper.best_weights is None:
            return None
        kept, best = stopper.best_epoch + 1, f"{stopper.monitor} {stopper.best:.4f}"
        if history is not None and kept == len(history["loss"]):
            print(f"weights   of epoch {kept}, the last and the best ({best})")
        else:
            print(f"weights   of epoch {kept}, the best ({best}), put back by early stopping")
        return kept

    def _image_grid(self, images, labels, predicted, probabilities, class_names, grid, title, count=32):
        if grid == "misclassified":
            chosen = np.flatnonzero(predicted != labels)[:count]
            captions = [
                f"{class_names[labels[i]]} -> {class_names[predicted[i]]} {probabilities[i, predicted[i]]:.2f}" for i in chosen
            ]
            heading = (
                f"{title}: test images it got wrong (true -> predicted, its probability), "
                f"{len(chosen)} of {np.sum(predicted != labels)}"
            )
        else:
            chosen = np.arange(min(count, len(labels)))
            captions = [
                f"{class_names[predicted[i]]} {probabilities[i, predicted[i]]:.2f}"
                + ("" if predicted[i] == labels[i] else f"\n(is {class_names[labels[i]]})")
                for i in chosen
            ]
            heading = f"{title}: predictions for the first test images (red: wrong)"
        plots.image_grid(np.asarray(images)[chosen], captions, self.path(f"{grid}.png"), heading,
                         wrong=predicted[chosen] != labels[chosen])


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
        # A resumed run whose saved state holds all its epochs (or early
        # stopping's end) has nothing left for this fit to train. (A script
        # that trains in phases may start a later phase's fit at a higher
        # epoch than run.initial_epoch, but never at a lower one, so this
        # holds exactly when the fit has no epoch to run.)
        if self.run.initial_epoch >= self.params["epochs"]:
            print("epochs    none left to train: history.csv holds the run's epochs")
        else:
            print(_HEADER)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs["seconds"] = time.perf_counter() - self.epoch_start
        optimizer = self.model.optimizer
        schedule = getattr(optimizer, "_learning_rate", None)  # Keras keeps the schedule, if any, here.
        if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            logs["learning_rate"] = schedules.value(schedule, int(keras.ops.convert_to_numpy(optimizer.iterations)))
        else:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        values = [logs.get(key, float("nan")) for key in TABLE_COLUMNS[1:]]
        print(_ROW.format(epoch + 1, *values), flush=True)


class ResumeState(keras.callbacks.Callback):
    """Saves what a resumed run needs after an epoch, and restores it.

    The model's variables (weights, batch-norm statistics, the augmentation
    layers' random-generator states), the optimizer's variables (its step
    count drives the learning-rate schedule), the epoch, the training seconds
    so far, and the bests of the checkpoint and early-stopping callbacks. It
    comes last in the list so that it sees their state after each epoch, and
    restores it after their own `on_train_begin` has reset it. (Keras'
    `BackupAndRestore` keeps the weights, the optimizer and the epoch, but not
    those bests, the seconds or, in `transfer_xception.py`, the phase, and
    it writes every epoch in the training thread.)

    The values are copied at the end of an epoch and written to disk in a
    background thread while the next epoch trains. Saving after every epoch
    would take much of the time of short epochs on an accelerator, so an
    epoch's state is skipped while the training since the previous save
    began has lasted less than 1 / `time_share` (20) times as long as that
    save did (copying and writing), or while it is still being written
    (`time_share = 1` saves after every epoch). The first and the last
    epoch of a `fit` (the one where early stopping ends it included) are
    always saved. On a CPU, where an epoch takes many times longer than its
    save, that is every epoch; a run killed on an accelerator loses at most
    about 20 saves' time of training, plus the epoch it was in.
    """

    time_share = 0.05  # the most of the training time that saving the state may take

    def __init__(self, run, callbacks, phase=""):
        super().__init__()
        self.run = run
        self.callbacks = callbacks
        self.phase = phase
        self.writer = None  # the thread writing this fit's last saved state

    def on_train_begin(self, logs=None):
        self.fit_start = time.perf_counter()
        self.writer = None
        state, self.run._state = self.run._state, None  # Restored once, into the first fit.
        if state is None:
            return
        if str(state["phase"]) != self.phase:
            raise RuntimeError(
                f"the saved state is from phase {str(state['phase'])!r}, not {self.phase!r}: "
                "a script that skips a finished phase gives its model back with Run.restore"
            )
        _assign(self.model.variables, _arrays(state, "model"))
        # Built already where the steps were compiled before `fit`. (Keras'
        # LossScaleOptimizer, under float16 mixed precision, adds its
        # variables again each time it is built.)
        if not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        _assign(self.model.optimizer.variables, _arrays(state, "optimizer"))
        saved = json.loads(str(state["callbacks"]))
        for callback, values in zip(self.callbacks, saved):
            for key, value in values.items():
                setattr(callback, key, value)
            if isinstance(callback, keras.callbacks.EarlyStopping) and "best_weights_0" in state:
                callback.best_weights = _arrays(state, "best_weights")

    def on_epoch_end(self, epoch, logs=None):
        stopped = self.model.stop_training  # Early stopping has just ended training.
        if not (stopped or epoch + 1 == self.params["epochs"] or self._due()):
            return
        start = time.perf_counter()
        arrays = {
            "epochs_done": np.array(epoch + 1),
            "initial_epoch": np.array(self.params["epochs"] if stopped else epoch + 1),
            "train_seconds": np.array((self.run.train_seconds or 0) + start - self.fit_start),
            "phase": np.array(self.phase),
            "callbacks": np.array(json.dumps([_monitor_state(c) for c in self.callbacks])),
        }
        arrays.update(_named("model", self.model.variables))
        arrays.update(_named("optimizer", self.model.optimizer.variables))
        for callback in self.callbacks:
            if isinstance(callback, keras.callbacks.EarlyStopping) and callback.best_weights is not None:
                arrays.update(_named("best_weights", callback.best_weights))
        copying = time.perf_counter() - start
        self._wait_for_writer()
        path = self.run.path(RESUME_STATE)
        history = self.run.path("history.csv")  # CSVLogger has written this epoch's row.

        def write():
            # On disk before the state: after a power cut, the state never holds more epochs than the history.
            _sync(history)
            _write_atomically(path, lambda tmp: _save_npz(tmp, arrays))

        self.writer = _Writer(write)
        self.writer.start()
        self.save_start, self.copy_seconds = start, copying

    def on_train_end(self, logs=None):
        self._wait_for_writer()
        # The last callback to end (`Run.callbacks`): train_seconds is the
        # time from the state's restore to the end of the last state's write,
        # the other callbacks' ends (early stopping's restore) included. Phases
        # add up: it is the time spent in all `fit` calls.
        self.run.train_seconds = (self.run.train_seconds or 0) + time.perf_counter() - self.fit_start

    def _due(self):
        """Whether this epoch's state is worth saving (the rule above)."""
        if self.writer is None:
            return True  # Nothing saved in this fit yet.
        since = time.perf_counter() - self.save_start
        if self.writer.is_alive():
            # Still being written: the save has taken all this time so far
            # (so with time_share = 1 this waits for it, and saves).
            cost = since
        else:
            self._wait_for_writer()  # Raises the writer's error, if any.
            cost = self.copy_seconds + self.writer.seconds
        return cost <= self.time_share * since

    def _wait_for_writer(self):
        if self.writer is not None:
            self.writer.join()
            error, self.writer.error = self.writer.error, None
            if isinstance(error, OSError):  # A full disk, or the run folder gone or made read-only.
                raise _unwritable(self.run.dir, error) from None
            if error is not None:
                raise error


class _Writer(threading.Thread):
    """Runs `write` in the background and notes how many seconds it took; an
    error it raises is kept for join()."""

    def __init__(self, write):
        super().__init__()
        self.write, self.error, self.seconds = write, None, None
        common.writers.add(self)  # SIGTERM waits for it.

    def run(self):
        start = time.perf_counter()
        try:
            self.write()
        except Exception as error:  # noqa: BLE001  (re-raised by the caller)
            self.error = error
        self.seconds = time.perf_counter() - start


class ModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """Keras' ModelCheckpoint for a `.keras` file, written under a temporary
    name and then renamed: a crash while saving keeps the previous file."""

    def __init__(self, filepath, **kwargs):
        self.final_path = filepath
        super().__init__(filepath.removesuffix(".keras") + ".tmp.keras", **kwargs)

    def on_epoch_end(self, epoch, logs=None):
        try:
            super().on_epoch_end(epoch, logs)
            if os.path.exists(self.filepath):
                _sync(self.filepath)
                os.replace(self.filepath, self.final_path)
        except BaseException as error:  # A full disk, or Ctrl-C in the middle of the save.
            with contextlib.suppress(OSError):
                os.remove(self.filepath)  # Half written: it would only take up room.
            if isinstance(error, OSError):
                raise _unwritable(os.path.dirname(self.final_path), error) from None
            raise


def _monitor_state(callback):
    """What a checkpoint or early-stopping callback has learnt so far."""
    keys = {"best"}
    if isinstance(callback, keras.callbacks.EarlyStopping):
        keys |= {"wait", "best_epoch", "stopped_epoch"}
    return {key: _plain(getattr(callback, key)) for key in keys if hasattr(callback, key)}


def _plain(value):
    return value if value is None or isinstance(value, (int, str)) else float(value)


def _named(prefix, values):
    return {f"{prefix}_{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(values)}


def _arrays(state, prefix):
    count = sum(1 for key in state if key.startswith(prefix + "_"))
    return [state[f"{prefix}_{i}"] for i in range(count)]


def _assign(variables, values):
    if len(variables) != len(values):
        raise UserError(
            f"the saved state holds {len(values)} values for {len(variables)} variables: it "
            "belongs to another model; start a new run with another --out_dir"
        )
    for variable, value in zip(variables, values):
        if tuple(variable.shape) != value.shape:
            raise UserError(
                f"the saved state holds a value of shape {value.shape} for the variable {variable.path} of "
                f"shape {tuple(variable.shape)}: it belongs to another model; start a new run with another --out_dir"
            )
        variable.assign(value)


def _save_npz(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _read_state(path):
    """The saved state of an unfinished run, or None if it has none yet."""
    if not os.path.exists(path):
        return None
    try:
        # No pickles: a state file holds plain arrays only.
        with np.load(path, allow_pickle=False) as state:
            missing = [key for key in _STATE_KEYS if key not in state.files]
            if missing:
                raise ValueError(f"it lacks {missing[0]!r}")
            arrays = {key: state[key] for key in state.files}
        # Each figure as it is read later: a value of another kind (an edited file) is refused here.
        int(arrays["epochs_done"]), int(arrays["initial_epoch"]), float(arrays["train_seconds"])
        callbacks = json.loads(str(arrays["callbacks"]))
        if not (isinstance(callbacks, list) and all(isinstance(values, dict) for values in callbacks)):
            raise ValueError("its callbacks are not a list of each callback's values")
        return arrays
    except (OSError, ValueError, EOFError, KeyError, TypeError, zipfile.BadZipFile) as error:
        # TypeError: a single array (.npy) in its place is no context manager. NumPy takes
        # bytes of neither kind for a pickle, and advises loading them unsafely: no advice here.
        why = "it is neither an .npz nor an .npy file" if "pickled" in str(error) else reason(error)
        raise UserError(
            f"{path} cannot be read ({why}); delete it to restart that run from its first epoch, or use another --out_dir"
        ) from None


def _unfinished_run(parent, config):
    """The newest run folder under `parent` with these settings that has not
    finished and that no live process is writing to, claimed for this one:
    (folder, its lock from `_claim`), or (None, None) if there is none."""
    if not os.path.isdir(parent):
        return None, None
    try:
        names = os.listdir(parent)
    except OSError as error:
        raise UserError(f"cannot look for runs to resume in {parent} ({reason(error)}); make it readable, or use another --out_dir") from None
    for name in sorted(names, reverse=True):
        folder = os.path.join(parent, name)
        if _finished(folder):
            continue
        try:
            with open(os.path.join(folder, "config.json")) as f:
                if not _same_settings(json.load(f), config):
                    continue
        except (OSError, ValueError):
            continue
        lock = _claim(folder)
        # Another process may have finished the run since it was looked at,
        # and removed its lock file: the one _claim made is removed again.
        if lock and _finished(folder):
            os.remove(lock.name)
            lock.close()
        elif lock:
            return folder, lock
    return None, None


def _same_settings(saved, config):
    """Whether a run folder's config.json holds these settings. Its out_dir
    is not compared: the folder was found in this one, however it was
    spelled then (relative to another folder, or absolute)."""
    if not isinstance(saved, dict):
        return False
    return {**saved, "out_dir": None} == {**config, "out_dir": None}


def _claim(folder):
    """Locks the folder's running.pid for this process and writes its id
    there; returns the open file, which holds the lock until it is closed
    or the process ends, however it ends. None if another live process holds
    it: two runs started together with the same settings then never write
    into the same folder. (A process id alone could not tell: after a
    restart another process may have the id of the dead one.)"""
    path = os.path.join(folder, _LOCK)
    try:
        lock = open(path, "a+")
    except OSError as error:
        raise _unwritable(folder, error) from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # The process that held it may have finished the run and removed
        # the file since it was opened here: that lock is of no use.
        if os.path.exists(path) and os.path.samestat(os.stat(path), os.fstat(lock.fileno())):
            lock.truncate(0)
            lock.write(f"{os.getpid()}\n")
            lock.flush()
            return lock
    except BlockingIOError:
        pass
    lock.close()
    return None


@contextlib.contextmanager
def _writing_to(folder):
    """Turns an OSError in the block (a full disk, the folder gone or made
    read-only) into the one line of `_unwritable`."""
    try:
        yield
    except BrokenPipeError:
        raise  # The reader of stdout went away (`| head`): the run folder is fine.
    except OSError as error:
        raise _unwritable(folder, error) from None


def _unwritable(folder, error):
    return UserError(
        f"cannot write to the run folder {folder} ({reason(error)}); make room or make it writable, then run "
        "the same command again (it continues from the last epoch saved there, if any), or use another --out_dir"
    )


def _finished(folder):
    """Whether the run in `folder` finished: it wrote result.json last. (Runs
    of the collection before 2026-12-04 removed their state before they drew
    their plots, so one with a model and no state finished, or stopped too
    late to resume.)"""
    if os.path.exists(os.path.join(folder, "result.json")):
        return True
    return os.path.exists(os.path.join(folder, "model.keras")) and not os.path.exists(os.path.join(folder, RESUME_STATE))


def read_history(path):
    """history.csv as {column: [values per epoch]}, without the epoch column.
    Raises ValueError (or OSError) when it is not a table of numbers."""
    with open(path, newline="") as f:
        return _history(f.read().splitlines(keepends=True))


def _history(lines):
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


def _keep_history_rows(path, epochs):
    """Keeps the header and the first `epochs` rows of history.csv: a row
    written after the last saved state belongs to an epoch that will run
    again. Stops with one line if it lacks them."""
    if not os.path.exists(path):
        if epochs == 0:
            return  # Stopped before its first epoch ended.
        raise UserError(
            f"{path} is missing, and its run has saved {epochs} epochs; delete {RESUME_STATE} in that folder to "
            "restart that run from its first epoch, or use another --out_dir"
        )
    try:
        with open(path, newline="") as f:
            # Blank lines hold no epoch, as read_history reads them.
            lines = [line for line in f.read().splitlines(keepends=True) if line.strip("\r\n")][: 1 + epochs]
        rows = len(next(iter(_history(lines).values()), []))
        if rows < epochs:
            raise ValueError(f"it holds {rows} of the {epochs} epochs saved")
    except (OSError, ValueError) as error:  # A UnicodeDecodeError is a ValueError.
        raise UserError(
            f"{path} is damaged ({reason(error)}); delete it and {RESUME_STATE} beside it to restart that "
            "run from its first epoch, or use another --out_dir"
        ) from None
    # A last row cut short loses its newline, and the next row would join it.
    _write_atomically(path, lambda tmp: _write_text(tmp, "".join(line.rstrip("\r\n") + "\n" for line in lines)))


def write_json(path, data):
    _write_atomically(path, lambda tmp: _dump_json(tmp, data))


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


def save_model(model, path):
    # Keras decides the format from the extension, so the temporary name
    # keeps it: a crash mid-save then never leaves a half-written model.keras.
    _write_atomically(path, model.save, suffix=".tmp.keras")


def _write_text(path, text):
    with open(path, "w") as f:
        f.write(text)


def _dump_json(path, data):
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def _write_atomically(path, write, suffix=".tmp"):
    tmp = path + suffix
    try:
        write(tmp)
        _sync(tmp)
        os.replace(tmp, path)
    except BaseException:
        # Such as a full disk: the half-written copy would only take up room.
        # (If it cannot be removed either, the first error is the one to see.)
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _sync(path):
    # The data reaches the disk before the rename does, even on power loss.
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _process_suffix():
    """"-process1" and so on for the processes but the first of a run over
    several machines, whose folders may share a disk."""
    index = device.process_index()
    return f"-process{index}" if index else ""


def _new_run_dir(parent, suffix=""):
    stamp = time.strftime("%Y%m%d-%H%M%S") + suffix
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
