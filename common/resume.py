"""Continuing a run that stopped before it finished (killed, Ctrl-C, power loss).

After each epoch (every few where epochs are short) `ResumeState` saves the
model's and the optimizer's variables, the epoch, the training seconds so far
and the callbacks' bests to `resume.npz` in the run folder. A new
`common.output.Run` with the same settings and `out_dir` looks for the newest
unfinished run folder (`unfinished_run`, at the end of this file), locks it so
that no other process writes there too (`claim`, which locks every new run
folder as well), cuts history.csv back to the epochs saved
(`keep_history_rows`), and hands the state to the `ResumeState` of its first
`fit`, which restores it (`assign`, `saved_values`; `Run.restore` gives them a
phase's model that an interrupted run had finished training).
"""
import fcntl
import json
import os
import threading
import time
import zipfile

import keras
import numpy as np

import common
from common import UserError, files, reason

STATE_FILE = "resume.npz"  # the state after the last saved epoch; gone once the run finishes (result.json)
LOCK_FILE = "running.pid"  # locked by the process that is writing to the run folder, whose id it holds
# What ResumeState saves beside the arrays of the model, optimizer and early stopping.
_STATE_KEYS = ("epochs_done", "initial_epoch", "train_seconds", "phase", "callbacks")


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
        self.run.fit_start = time.perf_counter()  # The training clock starts (Run.clock).
        self.writer = None
        state = self.run.take_saved_state()  # Restored once, into the first fit.
        if state is None:
            return
        if str(state["phase"]) != self.phase:
            raise RuntimeError(
                f"the saved state is from phase {str(state['phase'])!r}, not {self.phase!r}: "
                "a script that skips a finished phase gives its model back with Run.restore"
            )
        assign(self.model.variables, saved_values(state, "model"))
        # Built already where the steps were compiled before `fit`. (Keras'
        # LossScaleOptimizer, under float16 mixed precision, adds its
        # variables again each time it is built.)
        if not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        assign(self.model.optimizer.variables, saved_values(state, "optimizer"))
        saved = json.loads(str(state["callbacks"]))
        for callback, values in zip(self.callbacks, saved):
            for key, value in values.items():
                setattr(callback, key, value)
            if isinstance(callback, keras.callbacks.EarlyStopping) and "best_weights_0" in state:
                callback.best_weights = saved_values(state, "best_weights")

    def on_epoch_end(self, epoch, logs=None):
        stopped = self.model.stop_training  # Early stopping has just ended training.
        if not (stopped or epoch + 1 == self.params["epochs"] or self._due()):
            return
        start = time.perf_counter()
        arrays = {
            "epochs_done": np.array(epoch + 1),
            "initial_epoch": np.array(self.params["epochs"] if stopped else epoch + 1),
            "train_seconds": np.array(self.run.clock()),
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
        path = self.run.path(STATE_FILE)
        history = self.run.path("history.csv")  # CSVLogger has written this epoch's row.

        def write():
            # On disk before the state: after a power cut, the state never holds more epochs than the history.
            files.sync(history)
            files.write_atomically(path, lambda tmp: save_npz(tmp, arrays))

        self.writer = Writer(write)
        self.writer.start()
        self.save_start, self.copy_seconds = start, copying

    def on_train_end(self, logs=None):
        self._wait_for_writer()
        # The last callback to end (`Run.callbacks`): train_seconds is the
        # time from the state's restore to the end of the last state's write,
        # the other callbacks' ends (early stopping's restore) included. Phases
        # add up: it is the time spent in all `fit` calls.
        self.run.train_seconds = self.run.clock()

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
                raise files.unwritable(self.run.dir, error) from None
            if error is not None:
                raise error


class Writer(threading.Thread):
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


def saved_values(state, prefix):
    count = sum(1 for key in state if key.startswith(prefix + "_"))
    return [state[f"{prefix}_{i}"] for i in range(count)]


def assign(variables, values):
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


def save_npz(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def read_state(path):
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


def unfinished_run(parent, config, script=None):
    """The newest run folder under `parent` with these settings that has not
    finished and that no live process is writing to, claimed for this one:
    (folder, its lock from `claim`), or (None, None) if there is none.

    `script` is the running script's (file name, code), or None where it is
    not known: a folder whose copy of its script differs (the script edited
    since that run stopped, or another copy of it run) is not resumed, as
    its saved weights would go into another model, or into the same one
    trained another way. Folders without a copy (runs from before
    2026-12-06) are compared by their settings alone."""
    if not os.path.isdir(parent):
        return None, None
    try:
        names = os.listdir(parent)
    except OSError as error:
        raise UserError(f"cannot look for runs to resume in {parent} ({reason(error)}); make it readable, or use another --out_dir") from None
    for name in sorted(names, reverse=True):
        folder = os.path.join(parent, name)
        if finished(folder):
            continue
        try:
            with open(os.path.join(folder, "config.json")) as f:
                if not _same_settings(json.load(f), config):
                    continue
        except (OSError, ValueError):
            continue
        lock = claim(folder)
        # Another process may have finished the run since it was looked at,
        # and removed its lock file: the one claim made is removed again.
        if lock and finished(folder):
            os.remove(lock.name)
            lock.close()
        elif lock and _ran_other_code(folder, script):
            lock.close()  # Lets it go: that run stays as it was.
            print(f"note      not resuming {folder}: its copy of its script differs from the code run now; "
                  "delete that folder if you no longer need it")
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


def _ran_other_code(folder, script):
    """Whether the run in `folder` kept a copy of its script that is not
    `script` (file name, code), or any copy where `script` is None."""
    try:
        copies = [name for name in os.listdir(folder) if name.endswith(".py")]
        if not copies:
            return False
        if script is None or copies != [script[0]]:
            return True
        with open(os.path.join(folder, script[0]), "rb") as f:
            return f.read() != script[1]
    except OSError:
        return True  # Unreadable: that run's code cannot be shown to be this.


def claim(folder):
    """Locks the folder's running.pid for this process and writes its id
    there; returns the open file, which holds the lock until it is closed
    or the process ends, however it ends. None if another live process holds
    it: two runs started together with the same settings then never write
    into the same folder. (A process id alone could not tell: after a
    restart another process may have the id of the dead one.)"""
    path = os.path.join(folder, LOCK_FILE)
    try:
        lock = open(path, "a+")
    except OSError as error:
        raise files.unwritable(folder, error) from None
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


def finished(folder):
    """Whether the run in `folder` finished: it wrote result.json last. (Runs
    of the collection before 2026-12-04 removed their state before they drew
    their plots, so one with a model and no state finished, or stopped too
    late to resume.)"""
    if os.path.exists(os.path.join(folder, "result.json")):
        return True
    return os.path.exists(os.path.join(folder, "model.keras")) and not os.path.exists(os.path.join(folder, STATE_FILE))


def keep_history_rows(path, epochs):
    """Keeps the header and the first `epochs` rows of history.csv: a row
    written after the last saved state belongs to an epoch that will run
    again. Stops with one line if it lacks them."""
    if not os.path.exists(path):
        if epochs == 0:
            return  # Stopped before its first epoch ended.
        raise UserError(
            f"{path} is missing, and its run has saved {epochs} epochs; delete {STATE_FILE} in that folder to "
            "restart that run from its first epoch, or use another --out_dir"
        )
    try:
        with open(path, newline="") as f:
            # Blank lines hold no epoch, as files.read_history reads them.
            lines = [line for line in f.read().splitlines(keepends=True) if line.strip("\r\n")][: 1 + epochs]
        rows = files.epochs_in(files.parse_history(lines))
        if rows < epochs:
            raise ValueError(f"it holds {rows} of the {epochs} epochs saved")
    except (OSError, ValueError) as error:  # A UnicodeDecodeError is a ValueError.
        raise UserError(
            f"{path} is damaged ({reason(error)}); delete it and {STATE_FILE} beside it to restart that "
            "run from its first epoch, or use another --out_dir"
        ) from None
    # A last row cut short loses its newline, and the next row would join it.
    files.write_atomically(path, lambda tmp: files.write_text(tmp, "".join(line.rstrip("\r\n") + "\n" for line in lines)))
