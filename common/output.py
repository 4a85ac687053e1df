"""What a run prints and writes, the same way in every script.

    runs/<script>/<run id>/config.json   the final settings
    runs/<script>/<run id>/<file that ran>.py   a copy of the script file that ran, as it started (common.config.script)
    runs/<script>/<run id>/history.csv   one row per epoch (Keras' CSVLogger)
    runs/<script>/<run id>/curves.png    accuracy and loss, train vs validation, and the learning rate
    runs/<script>/<run id>/confusion.png the test set's confusion matrix
    runs/<script>/<run id>/misclassified.png  test images the model got wrong
                                         (predictions.png: test photos and their classes, for transfer_xception.py)
    runs/<script>/<run id>/model.keras   the trained model
    runs/<script>/<run id>/result.json   the final figures

and, in some scripts or while a run is going, best.keras, classes.json,
head_test.json, resume.npz and running.pid: README.md ("What a run prints
and writes") lists every file and which scripts write it.

The last line of stdout is always `final test_acc=... test_loss=... train_seconds=...`
so that runs can be compared with grep.

A run that stops before it finishes (killed, Ctrl-C, power loss) continues
where it stopped when the same command is run again: after each epoch (every
few where epochs are short: see resume.ResumeState) the model's weights, the
optimizer's state, the epoch and the callbacks' bests go to `resume.npz`, and
a new `Run` with the same settings and `out_dir` (and the same script, not
edited since) picks up the newest unfinished run folder instead of starting
a new one (common/resume.py).
Every file that a later run loads (the model, checkpoint, state and JSON
files) is written under a temporary name and then renamed, so a crash never
leaves it half-written (common/files.py); history.csv grows a row at a time,
and a row cut short is mended on resuming.
"""

import contextlib
import math
import os
import time

import keras
import numpy as np

import common
import common.config
from common import UserError, augment, device, files, plots, reason, resume, schedules

# The epoch table's columns: history.csv's column (the key in Keras' epoch
# logs, or the epoch, which the table counts from 1), the short name printed
# above it, the column's width and the number's format.
_TABLE = (
    ("epoch", "epoch", 5, "d"),
    ("loss", "train_loss", 10, ".4f"),
    ("accuracy", "train_acc", 9, ".4f"),
    ("val_loss", "val_loss", 8, ".4f"),
    ("val_accuracy", "val_acc", 7, ".4f"),
    ("learning_rate", "lr", 8, ".2e"),
    ("seconds", "seconds", 7, ".1f"),
)
TABLE_COLUMNS = tuple(key for key, _, _, _ in _TABLE)
_HEADER = "  ".join(f"{name:>{width}}" for _, name, width, _ in _TABLE)


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
        parent = os.path.join(config["out_dir"], script)
        # A run over several machines is not resumed: its processes would
        # have to resume from the same epoch, which nothing here ensures.
        code = common.config.script  # (file name, code) of the script, read as it started
        self.dir, self._lock = resume.unfinished_run(parent, config, code) if device.processes() == 1 else (None, None)
        self.initial_epoch = 0
        self.train_seconds = None
        self._state = None
        self._restorer = None  # the early stopping that puts the best epoch's weights back, if any
        if self.dir:
            self._state = resume.read_state(self.path(resume.STATE_FILE))
            done = 0
            if self._state is not None:
                done = int(self._state["epochs_done"])
                # Where training continues: past the last epoch if early
                # stopping had already ended it.
                self.initial_epoch = int(self._state["initial_epoch"])
                self.train_seconds = float(self._state["train_seconds"])
            try:
                resume.keep_history_rows(self.path("history.csv"), done)
            except OSError as error:
                raise files.unwritable(self.dir, error) from None
            if done:
                print(f"resume    {self.dir} after epoch {done}")
            else:  # The folder is reused; its run had nothing to keep.
                print(f"resume    {self.dir}, whose run stopped before its first epoch ended: training starts from epoch 1")
        else:
            self.dir = _new_run_dir(parent, _process_suffix())
            # Claimed before config.json makes it look like a run to resume.
            self._lock = resume.claim(self.dir)
            if code:
                # The code that ran, beside its results: which edit gave which curves.
                files.write_atomically(self.path(code[0]), lambda tmp: files.write_bytes(tmp, code[1]))
            files.write_json(os.path.join(self.dir, "config.json"), config)
            print(f"run       {self.dir}")
        print("config    " + " ".join(f"{key}={value!r}" for key, value in config.items()))
        if device.processes() == 1:
            # The state after the last saved epoch is on disk (ResumeState).
            common.on_interrupt = "run the same command again to continue from the last saved epoch"
            common.print_on_terminate()

    def take_saved_state(self):
        """The saved state this run resumes from, handed out once: the first
        `fit`'s ResumeState restores it; later fits go on from the model as
        it is. None for a new run."""
        state, self._state = self._state, None
        return state

    def path(self, name):
        return os.path.join(self.dir, name)

    def clock(self):
        """The training clock: the seconds in this `fit` since its callbacks
        began (`ResumeState.on_train_begin` sets `fit_start`), plus those of
        the earlier fits (phases) and of the run this one continues."""
        return (self.train_seconds or 0) + time.perf_counter() - self.fit_start

    def callbacks(self, *extra, phase="", learning_rate_setting="learning_rate"):
        """The callbacks every script passes to `model.fit`: the epoch table,
        then CSVLogger, which sees the table's seconds and learning rate, then
        the script's own (`extra`: a checkpoint, early stopping), then the one
        that saves, and on resuming restores, the state of all of them.

        A script that trains in phases (several `fit` calls) passes fresh
        ones to each, named by `phase`: the rows of later phases are appended
        to history.csv. A run interrupted after the last epoch of one phase
        resumes after it: the script gives that phase's model its variables
        back with `restore`, and skips the phase's `fit`.

        `learning_rate_setting` is the setting that a run which diverges
        (its training loss nan or infinite) is told to make smaller.
        """
        # Early stopping that puts its best epoch's weights back at the end:
        # `finish` says which epoch's weights the model holds, and marks it.
        self._restorer = next(
            (c for c in extra if isinstance(c, keras.callbacks.EarlyStopping) and c.restore_best_weights), None
        )
        return [
            EpochTable(self, learning_rate_setting),
            keras.callbacks.CSVLogger(self.path("history.csv"), append=True),
            *extra,
            resume.ResumeState(self, extra, phase),
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
        resume.assign(model.variables, resume.saved_values(self._state, "model"))
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
        (grid="misclassified") or any, with their predictions
        (grid="predictions"): 32 at most, evenly spaced through the mistakes
        or the test set.

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
            files.save_model(model, self.path("model.keras"))
            try:
                merged = files.read_history(self.path("history.csv"))
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
            # Said before it starts: on a CPU, scoring a large test set (six
            # passes with flips and shifts) can take minutes of its own.
            passes = 1 + bool(flip_tta) + 4 * bool(shift_tta)
            votes = f" ({passes} passes: with their mirror images{' and shifts' if shift_tta else ''})" if passes > 1 else ""
            print(f"test      scoring the {len(x_test):,} test images{votes}", flush=True)
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
                "epochs": files.epochs_in(merged) if merged is not None else None,
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
            files.write_json(self.path("result.json"), {"script": self.script, **fields, **phases})
            # Finished: the same command would now start a new run, not continue this one.
            common.on_interrupt = ""
            for name in (resume.STATE_FILE, resume.LOCK_FILE):
                try:
                    if os.path.exists(self.path(name)):
                        os.remove(self.path(name))
                except OSError as error:
                    # The run is still finished: result.json says so, whatever lies beside it.
                    print(f"note      {self.path(name)} cannot be removed ({reason(error)}); the run has finished, "
                          "and no later run resumes it: delete the file when you can")
            self._lock.close()  # Lets go of the lock.
            print(f"wrote     {', '.join(sorted(os.listdir(self.dir)))} in {self.dir}")
            print("final " + " ".join(f"{key}={files.shown(key, value)}" for key, value in {**fields, "run_dir": self.dir}.items()))
            return test_acc, test_loss

    def _report_kept_epoch(self, history):
        """Prints a `weights` line naming the epoch (counting from 1) whose
        weights early stopping put back at the end of training, and returns
        it; None, and no line, without such early stopping."""
        stopper = self._restorer
        if stopper is None or stopper.best_weights is None:
            return None
        kept, best = stopper.best_epoch + 1, f"{stopper.monitor} {stopper.best:.4f}"
        if history is not None and kept == files.epochs_in(history):
            print(f"weights   of epoch {kept}, the last and the best ({best})")
        else:
            print(f"weights   of epoch {kept}, the best ({best}), put back by early stopping")
        return kept

    def _image_grid(self, images, labels, predicted, probabilities, class_names, grid, title, count=32):
        if grid == "misclassified":
            chosen = _spread(np.flatnonzero(predicted != labels), count)
            captions = [
                f"{class_names[labels[i]]} -> {class_names[predicted[i]]} {probabilities[i, predicted[i]]:.2f}" for i in chosen
            ]
            heading = (
                f"{title}: test images it got wrong (true -> predicted, its probability), "
                f"{len(chosen)} of {np.sum(predicted != labels)}"
            )
        else:
            chosen = _spread(np.arange(len(labels)), count)
            captions = [
                f"{class_names[predicted[i]]} {probabilities[i, predicted[i]]:.2f}"
                + ("" if predicted[i] == labels[i] else f"\n(is {class_names[labels[i]]})")
                for i in chosen
            ]
            heading = f"{title}: predictions for test images from all over the test set (red: wrong)"
        plots.image_grid(np.asarray(images)[chosen], captions, self.path(f"{grid}.png"), heading,
                         wrong=predicted[chosen] != labels[chosen])


def _spread(indices, count):
    """At most `count` of the indices, evenly spaced from the first to the
    last: a test set stored class by class (photos from class folders) then
    shows images of the classes throughout, not of the first alone."""
    if len(indices) <= count:
        return indices
    return indices[np.linspace(0, len(indices) - 1, count).round().astype(int)]


class EpochTable(keras.callbacks.Callback):
    """Prints the parameter counts, then one fixed-width row per epoch.

    It adds `seconds` (the epoch's wall time), `train_seconds` (the training
    clock at the epoch's end: every earlier epoch and what ran between them,
    such as checkpoints, included, so the time to reach an accuracy) and
    `learning_rate` to the epoch logs, so the callbacks after it (CSVLogger,
    History) record them too.
    """

    def __init__(self, run, learning_rate_setting="learning_rate"):
        super().__init__()
        self.run = run
        self.learning_rate_setting = learning_rate_setting

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
        # A run begun before history.csv had the clock's column, and resumed
        # now, goes on without it: CSVLogger appends its rows under the
        # header it finds without reading it, with a column for each key of
        # the logs, so a new key would shift every later value.
        header = files.history_header(self.run.path("history.csv"))
        self.log_clock = header is None or "train_seconds" in header

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs["seconds"] = time.perf_counter() - self.epoch_start
        if self.log_clock:
            logs["train_seconds"] = self.run.clock()
        optimizer = self.model.optimizer
        schedule = getattr(optimizer, "_learning_rate", None)  # Keras keeps the schedule, if any, here.
        if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            logs["learning_rate"] = schedules.value(schedule, int(keras.ops.convert_to_numpy(optimizer.iterations)))
        else:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        row = {**logs, "epoch": epoch + 1}
        print("  ".join(f"{row.get(key, float('nan')):>{width}{form}}" for key, _, width, form in _TABLE), flush=True)
        # Diverged: every later epoch would be nan too. Stopped before the
        # callbacks after this one, so history.csv and the saved state keep
        # the epochs before it, and the run's result is no nan.
        if not math.isfinite(logs.get("loss", 0.0)):
            raise UserError(
                f"the training loss is {logs['loss']} after epoch {epoch + 1}: training diverged; "
                f"run again with a smaller --{self.learning_rate_setting}"
            )


class ModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """Keras' ModelCheckpoint for a `.keras` file, written under a temporary
    name and then renamed: a crash while saving keeps the previous file."""

    def __init__(self, filepath, **kwargs):
        self.final_path = filepath
        self.temporary_path = filepath.removesuffix(".keras") + ".tmp.keras"
        # Keras fills in {epoch} and the logs' values where the path has
        # braces: those of a folder's name (out_dir=runs{1}) are escaped.
        super().__init__(self.temporary_path.replace("{", "{{").replace("}", "}}"), **kwargs)

    def on_epoch_end(self, epoch, logs=None):
        try:
            # One left by a save cut short (kill -9, a power cut) is no model:
            # renamed after an epoch that saves nothing, it would replace the best.
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.temporary_path)
            super().on_epoch_end(epoch, logs)
            if os.path.exists(self.temporary_path):
                files.sync(self.temporary_path)
                os.replace(self.temporary_path, self.final_path)
        except BaseException as error:  # A full disk, or Ctrl-C in the middle of the save.
            with contextlib.suppress(OSError):
                os.remove(self.temporary_path)  # Half written: it would only take up room.
            if isinstance(error, OSError):
                raise files.unwritable(os.path.dirname(self.final_path), error) from None
            raise


@contextlib.contextmanager
def _writing_to(folder):
    """Turns an OSError in the block (a full disk, the folder gone or made
    read-only) into the one line of `files.unwritable`."""
    try:
        yield
    except BrokenPipeError:
        raise  # The reader of stdout went away (`| head`): the run folder is fine.
    except OSError as error:
        raise files.unwritable(folder, error) from None


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
