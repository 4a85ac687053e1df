"""Resuming an interrupted run, atomic checkpoints, and determinism."""

import csv
import os
import subprocess
import sys
import threading
import time
import weakref

import keras
import numpy as np
import pytest

import common
import common.config
from common import UserError, data, files, output, resume, schedules
from conftest import REPO, final_fields, run_script, run_until_epoch, synthetic_mnist, write_mnist_npz
from test_output import tiny_data, tiny_model

# Columns of history.csv that depend only on the computation, not on the clock.
RESULT_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")


@pytest.fixture(autouse=True)
def save_after_every_epoch(monkeypatch):
    """These tests interrupt runs after chosen epochs. Their tiny epochs are
    shorter than a save, which the default rule would skip (tested below)."""
    monkeypatch.setattr(resume.ResumeState, "time_share", 1)


def history_rows(run_dir):
    with open(os.path.join(run_dir, "history.csv")) as f:
        return np.array([[float(row[key]) for key in RESULT_COLUMNS] for row in csv.DictReader(f)])


class StopAfter(keras.callbacks.Callback):
    """Interrupts training like Ctrl-C once `epochs` epochs are complete."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epochs:
            raise KeyboardInterrupt


def train(run, epochs=6, patience=3, stop_after=None, built=False):
    """A tiny run with a schedule, a checkpoint and early stopping, as the
    scripts train; `stop_after` interrupts it after that many epochs. With
    `built`, the optimizer is built before `fit`, as the step that
    `device.compile_ahead` runs builds it in the scripts."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dropout(0.2), keras.layers.Dense(3, activation="softmax")])
    model.compile(
        optimizer=keras.optimizers.Adam(schedules.warmup_cosine(0.05, total_steps=4 * epochs)),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    x, y = tiny_data()
    if built:
        model.optimizer.build(model.trainable_variables)
    callbacks = run.callbacks(
        output.ModelCheckpoint(run.path("best.keras"), monitor="val_accuracy", save_best_only=True),
        keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=patience, restore_best_weights=True),
    )
    if stop_after:
        callbacks.append(StopAfter(stop_after))
    batches = data.ShuffledBatches(x, y, 8, seed=0)
    model.fit(
        batches.data, batch_size=8, shuffle=False, initial_epoch=run.initial_epoch, epochs=epochs,
        validation_data=(x, y), callbacks=[batches, *callbacks], verbose=0,
    )
    return model


def interrupted_then_resumed(tmp_path, stop_after, **settings):
    """Runs straight through, then interrupted and resumed; returns both runs and models."""
    x, y = tiny_data()
    straight = output.Run("tiny", {"out_dir": str(tmp_path / "a")})
    expected = train(straight, **settings)
    straight.finish(expected, x, y)

    config = {"out_dir": str(tmp_path / "b")}
    first = output.Run("tiny", config)
    with pytest.raises(KeyboardInterrupt):
        train(first, stop_after=stop_after, **settings)
    # A process that Ctrl-C ends waits for its threads, the state's writer too.
    for thread in threading.enumerate():
        if isinstance(thread, resume.Writer):
            thread.join()
    assert not os.path.exists(first.path("model.keras"))
    os.remove(first.path("running.pid"))  # As if the process had died.
    with np.load(first.path(resume.STATE_FILE)) as state:
        trained_seconds, saved_epochs = float(state["train_seconds"]), int(state["epochs_done"])

    again = output.Run("tiny", config)
    assert again.dir == first.dir
    # The seconds trained before the interruption count towards the run's time.
    assert again.train_seconds == trained_seconds > 0
    resumed = train(again, **settings)
    again.finish(resumed, x, y)
    assert again.train_seconds > trained_seconds
    # The training clock in the history goes on from the seconds trained before.
    clock = files.read_history(again.path("history.csv"))["train_seconds"]
    assert all(later > earlier for earlier, later in zip(clock, clock[1:]))
    assert clock[saved_epochs - 1] <= trained_seconds
    if len(clock) > saved_epochs:  # (Not where early stopping had already ended the run.)
        assert trained_seconds < clock[saved_epochs]
    np.testing.assert_allclose(history_rows(again.dir), history_rows(straight.dir), atol=1e-6)
    for a, b in zip(resumed.get_weights(), expected.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # The checkpoint survived, and holds the best epoch's weights, as the uninterrupted run's does.
    for a, b in zip(keras.saving.load_model(again.path("best.keras")).get_weights(),
                    keras.saving.load_model(straight.path("best.keras")).get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)
    return straight, again


def test_an_interrupted_run_resumes_and_ends_as_an_uninterrupted_one(tmp_path):
    straight, again = interrupted_then_resumed(tmp_path, stop_after=2)
    assert again.initial_epoch == 2 and len(history_rows(again.dir)) == 6
    # A finished run is not resumed: the same settings start a new folder.
    assert not os.path.exists(again.path(resume.STATE_FILE))
    assert output.Run("tiny", {"out_dir": str(tmp_path / "b")}).dir != again.dir


def epochs_before_early_stopping(tmp_path, patience):
    """How many of 12 epochs the tiny run trains before early stopping ends it."""
    probe = output.Run("tiny", {"out_dir": str(tmp_path / "probe")})
    train(probe, epochs=12, patience=patience)
    stopped_at = len(history_rows(probe.dir))
    assert stopped_at < 12
    return stopped_at


def test_a_run_in_float16_mixed_precision_resumes(tmp_path):
    # What device.setup picks on a GPU without bfloat16 (a T4, a V100). Keras
    # then wraps the optimizer in a LossScaleOptimizer, whose build() adds
    # its two variables again each time it is called: resuming said "the
    # saved state holds 9 values for 11 variables: it belongs to another model".
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        interrupted_then_resumed(tmp_path, stop_after=2, built=True)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_a_run_that_early_stopping_had_ended_only_finishes(tmp_path, capsys):
    # With patience 1 this run stops early; interrupt it right at that epoch.
    stopped_at = epochs_before_early_stopping(tmp_path, patience=1)
    capsys.readouterr()
    straight, again = interrupted_then_resumed(tmp_path, stop_after=stopped_at, epochs=12, patience=1)
    assert again.initial_epoch == 12  # Nothing left to train.
    # The resumed fit prints no empty epoch table, but says why it trains nothing.
    resumed = capsys.readouterr().out.split(f"resume    {again.dir}")[1]
    assert output._HEADER not in resumed
    assert "epochs    none left to train" in resumed


def test_a_run_interrupted_while_early_stopping_waits_stops_where_an_uninterrupted_one_does(tmp_path, capsys):
    # Interrupted one epoch before patience runs out: the resumed run must
    # count that epoch without improvement, not start waiting afresh.
    stopped_at = epochs_before_early_stopping(tmp_path, patience=2)
    capsys.readouterr()
    straight, again = interrupted_then_resumed(tmp_path, stop_after=stopped_at - 1, epochs=12, patience=2)
    assert len(history_rows(again.dir)) == stopped_at
    # Both name the same epoch as the one whose weights early stopping put back.
    kept = [line for line in capsys.readouterr().out.splitlines() if line.startswith("weights   ")]
    assert len(kept) == 2 and kept[0] == kept[1] and "put back by early stopping" in kept[0]


def test_a_run_interrupted_while_finishing_finishes_again_without_training(tmp_path, monkeypatch):
    x, y = tiny_data()
    config = {"out_dir": str(tmp_path)}
    first = output.Run("tiny", config)
    trained = train(first)

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(output.plots, "confusion", ctrl_c)  # After model.keras, before result.json.
        with pytest.raises(KeyboardInterrupt):
            first.finish(trained, x, y)
    assert os.path.exists(first.path("model.keras")) and not os.path.exists(first.path("result.json"))
    os.remove(first.path("running.pid"))  # As if the process had died.

    again = output.Run("tiny", config)  # It used to start over from epoch 1 in a new folder.
    assert again.dir == first.dir and again.initial_epoch == 6
    resumed = train(again)
    again.finish(resumed, x, y)
    assert len(history_rows(again.dir)) == 6
    for a, b in zip(resumed.get_weights(), trained.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert not os.path.exists(again.path(resume.STATE_FILE))


class Clock:
    """Stands in for the `time` module of common.resume and common.output:
    its `perf_counter` moves a microsecond at each reading, as a clock does
    between two, and otherwise only where a test moves it."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        self.now += 1e-6
        return self.now

    def __getattr__(self, name):
        return getattr(time, name)


class Tick(keras.callbacks.Callback):
    """Makes each epoch take `seconds` on `clock`."""

    def __init__(self, clock, seconds):
        super().__init__()
        self.clock, self.seconds = clock, seconds

    def on_epoch_end(self, epoch, logs=None):
        self.clock.now += self.seconds


def saved_epochs(monkeypatch, save_seconds):
    """Records the epoch of each resume state saved from now on, and returns
    the clock that the rule for skipping saves reads. Each save takes
    `save_seconds` on it and epochs next to none (unless a `Tick` moves it), so
    the rule sees set durations, not how fast this machine writes files; and
    each save is written at once, in the training thread, so none is still
    being written when the next epoch's end asks how long it took."""
    clock, saved = Clock(), []
    save = resume.save_npz

    def recording_save(path, arrays):
        clock.now += save_seconds
        saved.append(int(arrays["epochs_done"]))
        save(path, arrays)

    monkeypatch.setattr(resume, "save_npz", recording_save)
    monkeypatch.setattr(resume, "time", clock)
    monkeypatch.setattr(output, "time", clock)
    monkeypatch.setattr(resume.Writer, "start", resume.Writer.run)
    monkeypatch.setattr(resume.Writer, "join", lambda self, timeout=None: None)
    monkeypatch.setattr(common, "writers", weakref.WeakSet())  # Writers never started, never waited for.
    return clock, saved


def test_a_save_that_takes_longer_than_its_share_of_training_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(resume.ResumeState, "time_share", 0.05)  # the default
    _, saved = saved_epochs(monkeypatch, save_seconds=0.2)
    # Epochs of microseconds: each fit saves its first and last only.
    straight, again = interrupted_then_resumed(tmp_path, stop_after=4)
    # The uninterrupted run, the one interrupted after epoch 4, the resumed one.
    assert saved == [1, 6, 1, 2, 6]
    assert again.initial_epoch == 1  # It resumed after the last saved epoch, and ended the same.


@pytest.mark.parametrize(
    "epoch_seconds, still_writing, expected", [(10, False, [1, 2, 3, 4]), (3, False, [1, 3, 4]), (10, True, [1, 4])]
)
def test_a_save_is_made_once_training_has_lasted_20_times_as_long_as_the_last(
    epoch_seconds, still_writing, expected, tmp_path, monkeypatch
):
    # The default share: a save of 0.2 s is made once 4 s have passed since
    # the last began, so after every epoch of 10 s, and after every second
    # epoch of 3 s (the first and the last epoch always); none while the
    # last is still being written, which has then taken all the time since.
    monkeypatch.setattr(resume.ResumeState, "time_share", 0.05)
    clock, saved = saved_epochs(monkeypatch, save_seconds=0.2)
    monkeypatch.setattr(resume.Writer, "is_alive", lambda self: still_writing)
    run = output.Run("tiny", {"out_dir": str(tmp_path)})
    x, y = tiny_data()
    tiny_model().fit(x, y, epochs=4, callbacks=[Tick(clock, epoch_seconds), *run.callbacks()], verbose=0)
    assert saved == expected


def test_a_run_interrupted_after_a_phase_gets_that_phases_model_back_without_training(tmp_path):
    config = {"out_dir": str(tmp_path)}
    first = output.Run("tiny", config)
    x, y = tiny_data()
    keras.utils.set_random_seed(0)
    trained = tiny_model()
    trained.fit(x, y, epochs=2, validation_data=(x, y), callbacks=first.callbacks(phase="head"), verbose=0)
    os.remove(first.path("running.pid"))  # Killed before the next phase began.

    again = output.Run("tiny", config)
    assert again.initial_epoch == 2
    fresh = tiny_model()
    assert not again.restore("fine-tune", fresh)  # Not the phase the state is from: nothing changes.
    assert not np.allclose(fresh.get_weights()[0], trained.get_weights()[0])
    assert again.restore("head", fresh)
    for a, b in zip(fresh.get_weights(), trained.get_weights()):
        np.testing.assert_array_equal(a, b)
    # The state is used once: the next phase's fit starts it afresh.
    fresh.fit(x, y, initial_epoch=2, epochs=3, callbacks=again.callbacks(phase="fine-tune"), verbose=0)


def test_fitting_another_phase_than_the_saved_one_is_refused(tmp_path):
    config = {"out_dir": str(tmp_path)}
    first = output.Run("tiny", config)
    x, y = tiny_data()
    tiny_model().fit(x, y, epochs=1, callbacks=first.callbacks(phase="head"), verbose=0)
    os.remove(first.path("running.pid"))
    again = output.Run("tiny", config)
    with pytest.raises(RuntimeError, match="Run.restore"):
        tiny_model().fit(x, y, initial_epoch=1, epochs=2, callbacks=again.callbacks(phase="fine-tune"), verbose=0)


def test_a_folder_that_a_live_process_writes_to_is_not_taken(tmp_path):
    config = {"out_dir": str(tmp_path)}
    first = output.Run("tiny", config)  # Its running.pid names this (live) process.
    assert output.Run("tiny", config).dir != first.dir


# Takes the run folder of `config` in a process of its own. A process that
# chooses the interrupted run's folder waits, before it reads its state, until
# the other process has chosen one too (for 5 s at most): if both could
# choose it, both would go on to write into it.
_TAKE_TOGETHER = """
import os, sys, time
from common import output, resume

config, sync, release = {"out_dir": sys.argv[1]}, sys.argv[2], sys.argv[3]
read_state = resume.read_state

def when_both_have_chosen(path):
    open(os.path.join(sync, str(os.getpid())), "w").close()
    waited = time.monotonic() + 5
    while len(os.listdir(sync)) < 2 and time.monotonic() < waited:
        time.sleep(0.01)
    return read_state(path)

resume.read_state = when_both_have_chosen
run = output.Run("tiny", config)
print("folder", run.dir, flush=True)
# Holds the folder until the test has both folders (a fixed sleep let the
# first process end, and free its folder, before a slow second one chose).
held = time.monotonic() + 120
while not os.path.exists(release) and time.monotonic() < held:
    time.sleep(0.01)
"""


@pytest.mark.slow
def test_two_processes_never_take_the_same_folder(tmp_path):
    config = {"out_dir": str(tmp_path / "runs")}
    interrupted = output.Run("tiny", config)
    interrupted._lock.close()  # As if its process had died: the lock goes with it, the file stays.
    assert os.path.exists(interrupted.path("running.pid"))
    (tmp_path / "sync").mkdir()
    release = tmp_path / "release"
    # stderr to files: read only after stdout, a pipe of it could fill up
    # with TensorFlow's logs and stop a process before it prints its folder.
    errors = [open(tmp_path / f"stderr{i}", "w+") for i in range(2)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _TAKE_TOGETHER, config["out_dir"], str(tmp_path / "sync"), str(release)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=error, text=True,
        )
        for error in errors
    ]
    folders = []
    for process in processes:  # Each prints its folder, then holds it.
        for line in process.stdout:
            if line.startswith("folder "):
                folders.append(line.split(" ", 1)[1].strip())
                break
    release.touch()
    for process in processes:
        process.communicate(timeout=300)
    stderr = []
    for error in errors:
        error.seek(0)
        stderr.append(error.read()[-2000:])
        error.close()
    assert all(process.returncode == 0 for process in processes), stderr
    assert len(folders) == 2
    # One resumes the interrupted run; the other starts a folder of its own.
    assert interrupted.dir in folders and len(set(folders)) == 2


def test_a_lock_file_whose_process_is_gone_does_not_keep_its_folder(tmp_path):
    # After a restart, the id in running.pid may belong to another live process.
    config = {"out_dir": str(tmp_path)}
    first = output.Run("tiny", config)
    first._lock.close()
    with open(first.path("running.pid"), "w") as f:
        f.write(f"{os.getppid()}\n")  # A live process, but not one holding the lock.
    assert output.Run("tiny", config).dir == first.dir


def test_a_run_finished_while_it_was_being_chosen_keeps_no_lock_file(tmp_path, monkeypatch):
    config = {"out_dir": str(tmp_path)}
    first = output.Run("tiny", config)
    first._lock.close()  # Its process is gone; it left the folder unfinished.
    looked_at = []

    def finished_after_the_first_look(folder):
        # The first look finds it unfinished; then another process finishes it and removes its lock file.
        looked_at.append(folder)
        if len(looked_at) == 1:
            os.remove(first.path("running.pid"))
            return False
        open(first.path("result.json"), "w").close()
        return True

    monkeypatch.setattr(resume, "finished", finished_after_the_first_look)
    assert output.Run("tiny", config).dir != first.dir
    assert sorted(os.listdir(first.dir)) == ["config.json", "result.json"]


def test_other_settings_start_a_new_run(tmp_path):
    first = output.Run("tiny", {"out_dir": str(tmp_path), "epochs": 3})
    os.remove(first.path("running.pid"))
    assert output.Run("tiny", {"out_dir": str(tmp_path), "epochs": 4}).dir != first.dir


def test_a_run_stopped_before_its_first_epoch_ended_is_said_to_start_again(tmp_path, capsys):
    # Such as one that diverged in its first epoch: "after epoch 0" read as if something had been kept.
    first = output.Run("tiny", {"out_dir": str(tmp_path)})
    first._lock.close()
    again = output.Run("tiny", {"out_dir": str(tmp_path)})
    assert (again.dir, again.initial_epoch) == (first.dir, 0)
    assert (
        f"resume    {first.dir}, whose run stopped before its first epoch ended: training starts from epoch 1"
    ) in capsys.readouterr().out.splitlines()


def started(script):
    """As a script starts: its settings applied, which reads its code."""
    common.config.apply_overrides({"__file__": str(script)}, [])


def test_a_script_edited_since_its_run_stopped_starts_a_new_run(tmp_path, capsys):
    # Edited after Ctrl-C (a layer of 256 units in place of 512), the same
    # command resumed the old run and stopped, on every try, at its weights'
    # shapes; an edit that kept the shapes loaded them into other code.
    script = tmp_path / "tiny.py"
    script.write_text("units = 512\n")
    config = {"out_dir": str(tmp_path / "runs"), "epochs": 3}
    started(script)
    script.write_text("units = 128\n")  # Saved while the data loaded: not the code that runs.
    first = output.Run("tiny", config)
    assert open(first.path("tiny.py")).read() == "units = 512\n"  # The code that ran, beside its results.
    first._lock.close()  # Its process ended before the run finished.
    started(script)
    capsys.readouterr()
    edited = output.Run("tiny", config)
    assert edited.dir != first.dir and open(edited.path("tiny.py")).read() == "units = 128\n"
    assert capsys.readouterr().out.startswith(
        f"note      not resuming {first.dir}: its copy of its script differs from the code run now; "
        "delete that folder if you no longer need it\n"
    )
    # Not edited: resumed. (Its note for the other folder says how to stop it.)
    edited._lock.close()
    assert output.Run("tiny", config).dir == edited.dir


def test_a_copy_of_a_script_under_another_name_does_not_resume_the_scripts_run(tmp_path):
    # `cp mnist_cnn.py my_cnn.py`, edited: it writes to runs/mnist_cnn/ as the script does.
    (tmp_path / "tiny.py").write_text("units = 512\n")
    (tmp_path / "my_tiny.py").write_text("units = 512\n")
    config = {"out_dir": str(tmp_path / "runs")}
    started(tmp_path / "tiny.py")
    first = output.Run("tiny", config)
    first._lock.close()
    started(tmp_path / "my_tiny.py")
    other = output.Run("tiny", config)
    assert other.dir != first.dir and sorted(os.listdir(other.dir)) == ["config.json", "my_tiny.py", "running.pid"]
    other._lock.close()
    # Code that cannot be known (the settings had no file) resumes no run that kept a copy.
    common.config.apply_overrides({}, [])
    assert output.Run("tiny", config).dir not in (first.dir, other.dir)


def test_a_run_still_going_is_left_alone_without_a_note(tmp_path, capsys):
    script = tmp_path / "tiny.py"
    script.write_text("units = 512\n")
    config = {"out_dir": str(tmp_path / "runs")}
    started(script)
    first = output.Run("tiny", config)  # Its lock held: still training.
    script.write_text("units = 256\n")
    started(script)
    capsys.readouterr()
    assert output.Run("tiny", config).dir != first.dir
    assert "note" not in capsys.readouterr().out


def test_a_run_folder_without_a_copy_of_its_script_resumes_by_its_settings(tmp_path):
    # Runs from before 2026-12-06 kept no copy.
    config = {"out_dir": str(tmp_path / "runs")}
    first = output.Run("tiny", config)
    first._lock.close()
    (tmp_path / "tiny.py").write_text("units = 512\n")
    started(tmp_path / "tiny.py")
    assert output.Run("tiny", config).dir == first.dir


def test_the_same_out_dir_spelled_another_way_resumes_the_run(tmp_path, monkeypatch):
    # Typed relative to another folder (or with a trailing slash, which the
    # config drops), it started the run over and left the interrupted one.
    first = output.Run("tiny", {"out_dir": str(tmp_path / "runs"), "epochs": 3})
    os.remove(first.path("running.pid"))
    monkeypatch.chdir(tmp_path)
    again = output.Run("tiny", {"out_dir": "runs", "epochs": 3})
    assert os.path.samefile(again.dir, first.dir)
    os.remove(again.path("running.pid"))
    monkeypatch.chdir(tmp_path / "runs")
    assert os.path.samefile(output.Run("tiny", {"out_dir": ".", "epochs": 3}).dir, first.dir)


@pytest.mark.parametrize("damaged", ["half a zip", "one array"])
def test_a_damaged_state_file_is_one_clear_line(damaged, tmp_path):
    config = {"out_dir": str(tmp_path)}
    first = output.Run("tiny", config)
    os.remove(first.path("running.pid"))
    with open(first.path(resume.STATE_FILE), "wb") as f:
        if damaged == "half a zip":
            f.write(b"PK\x03\x04 half a file")
        else:  # np.load reads a .npy file as one array, not as a state file's arrays.
            np.save(f, np.zeros(3))
    with pytest.raises(UserError, match="cannot be read .*delete it to restart"):
        output.Run("tiny", config)


def interrupted_after_two_epochs(tmp_path):
    config = {"out_dir": str(tmp_path)}
    first = output.Run("tiny", config)
    with pytest.raises(KeyboardInterrupt):
        train(first, stop_after=2)
    for thread in threading.enumerate():
        if isinstance(thread, resume.Writer):
            thread.join()
    os.remove(first.path("running.pid"))
    return config, first


@pytest.mark.parametrize("damage", ["garbled", "rows lost", "deleted", "not text", "a folder"])
def test_a_damaged_history_stops_the_resumed_run_with_one_line(damage, tmp_path):
    # Each trained on from there and ended with a traceback, a stuck run or a wrong history.
    config, first = interrupted_after_two_epochs(tmp_path)
    path = first.path("history.csv")
    text = open(path).read()
    os.remove(path)
    if damage == "garbled":
        open(path, "w").write("garbage junk\nfoo,bar\nbaz\n")
    elif damage == "rows lost":
        open(path, "w").write("".join(text.splitlines(keepends=True)[:2]))  # The header and epoch 1.
    elif damage == "not text":
        open(path, "wb").write(b"\xff\xfe" + text.encode())
    elif damage == "a folder":
        os.mkdir(path)
    with pytest.raises(UserError) as error:
        output.Run("tiny", config)
    if damage == "deleted":
        assert str(error.value) == (f"{path} is missing, and its run has saved 2 epochs; delete resume.npz in that "
                                    "folder to restart that run from its first epoch, or use another --out_dir")
    else:
        assert str(error.value).startswith(f"{path} is damaged (")
        assert str(error.value).endswith("delete it and resume.npz beside it to restart that run from its first "
                                         "epoch, or use another --out_dir")


def test_a_run_whose_history_has_no_clock_column_resumes_without_it(tmp_path):
    # A run begun before history.csv had train_seconds, resumed by today's
    # code: the new rows keep the header's columns, so the file still reads.
    config, first = interrupted_after_two_epochs(tmp_path)
    path = first.path("history.csv")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = [key for key in rows[0] if key != "train_seconds"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    again = output.Run("tiny", config)
    assert again.dir == first.dir
    again.finish(train(again), *tiny_data())
    history = files.read_history(path)
    assert "train_seconds" not in history and len(history["val_accuracy"]) == 6


def test_a_blank_last_line_in_the_history_holds_no_epoch(tmp_path):
    config, first = interrupted_after_two_epochs(tmp_path)
    with open(first.path("history.csv"), "a") as f:
        f.write("\n")
    assert len(files.read_history(first.path("history.csv"))["loss"]) == 2
    assert output.Run("tiny", config).initial_epoch == 2
    # Nor does one between rows (it was counted as a row: "history.csv is damaged (it holds 1 of the 2 epochs saved)").
    os.remove(first.path("running.pid"))
    header, first_row, second_row = open(first.path("history.csv")).read().split()
    open(first.path("history.csv"), "w").write(f"{header}\n{first_row}\n\n{second_row}\n")
    assert output.Run("tiny", config).initial_epoch == 2


def test_a_folder_of_a_run_finished_by_earlier_code_is_not_resumed(tmp_path):
    # Before result.json marked a finished run, finish removed the state before its plots: a run
    # stopped then, or one finished by such code and missing result.json, was trained again in place.
    config, first = interrupted_after_two_epochs(tmp_path)
    os.remove(first.path(resume.STATE_FILE))
    open(first.path("model.keras"), "wb").write(b"a trained model")
    assert output.Run("tiny", config).dir != first.dir
    assert open(first.path("model.keras"), "rb").read() == b"a trained model"


def test_the_history_is_on_disk_before_the_state_that_counts_its_epochs(tmp_path, monkeypatch):
    synced = []
    sync, save = files.sync, resume.save_npz
    monkeypatch.setattr(files, "sync", lambda path: (synced.append(os.path.basename(path)), sync(path)))
    monkeypatch.setattr(resume, "save_npz", lambda path, arrays: (synced.append("state"), save(path, arrays)))
    train(output.Run("tiny", {"out_dir": str(tmp_path)}), epochs=2)
    assert [name for name in synced if name in ("history.csv", "state")] == ["history.csv", "state"] * 2


def test_a_last_history_row_cut_short_keeps_its_own_line(tmp_path):
    config, first = interrupted_after_two_epochs(tmp_path)
    path = first.path("history.csv")
    text = open(path).read()
    open(path, "w").write(text[:-3])  # Mid-way through epoch 2's seconds, and its newline.
    again = output.Run("tiny", config)
    train(again)
    rows = history_rows(again.dir)
    assert len(rows) == 6 and rows[:, 0].tolist() == [0, 1, 2, 3, 4, 5]


def test_a_run_folder_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    config, first = interrupted_after_two_epochs(tmp_path)

    def read_only(path, text):  # As in a read-only folder, for a user other than root.
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(files, "write_text", read_only)
    with pytest.raises(UserError, match=f"^cannot write to the run folder {first.dir} .*make it writable"):
        output.Run("tiny", config)


@pytest.mark.parametrize(
    "key, value, why",
    [
        # Edited by hand: tracebacks, the first after compiling.
        ("callbacks", "not json", "Expecting value: line 1 column 1 (char 0)"),
        ("epochs_done", "two", "invalid literal for int() with base 10: 'two'"),
        ("train_seconds", "long", "could not convert string to float: 'long'"),
        # Bytes of neither kind, with NumPy's advice to load them unsafely as a pickle.
        ("callbacks", "5", "its callbacks are not a list of each callback's values"),
        (None, b"\x80\x04 neither a zip nor an array", "it is neither an .npz nor an .npy file"),
    ],
)
def test_a_state_with_a_value_of_another_kind_is_one_line(key, value, why, tmp_path):
    config, first = interrupted_after_two_epochs(tmp_path)
    path = first.path(resume.STATE_FILE)
    with np.load(path) as state:
        arrays = {name: state[name] for name in state.files}
    arrays[key] = value
    with open(path, "wb") as f:
        if key is None:
            f.write(value)
        else:
            np.savez(f, **arrays)
    with pytest.raises(UserError) as error:
        output.Run("tiny", config)
    assert str(error.value) == (
        f"{path} cannot be read ({why}); delete it to restart that run from its first epoch, or use another --out_dir"
    )


def test_a_state_of_another_model_is_one_line(tmp_path):
    config, first = interrupted_after_two_epochs(tmp_path)
    again = output.Run("tiny", config)
    # The same number of variables, of other shapes: a Dense layer of 4 units, not 3.
    wider = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dropout(0.2), keras.layers.Dense(4, activation="softmax")])
    with pytest.raises(UserError, match=r"a value of shape \(4, 3\) for the variable .*of shape \(4, 4\): it belongs to another model"):
        again.restore("", wider)


def test_a_state_without_its_epoch_is_one_line(tmp_path):
    config, first = interrupted_after_two_epochs(tmp_path)
    state = dict(np.load(first.path(resume.STATE_FILE)))
    del state["epochs_done"]
    np.savez(first.path(resume.STATE_FILE), **state)
    with pytest.raises(UserError, match="cannot be read \\(it lacks 'epochs_done'\\); delete it"):
        output.Run("tiny", config)


def test_a_crash_while_checkpointing_keeps_the_previous_best(tmp_path):
    run = output.Run("tiny", {"out_dir": str(tmp_path)})
    train(run, epochs=2)
    before = open(run.path("best.keras"), "rb").read()
    checkpoint = output.ModelCheckpoint(run.path("best.keras"), monitor="val_accuracy", mode="max")
    model = tiny_model()

    def crash(path, **kwargs):
        with open(path, "wb") as f:
            f.write(b"half a model")
        raise OSError("disk full")

    model.save = crash
    checkpoint.set_model(model)
    with pytest.raises(UserError, match=f"^cannot write to the run folder {run.dir} \\(disk full\\); make room"):
        checkpoint.on_epoch_end(0, {"val_accuracy": 1.0})
    assert open(run.path("best.keras"), "rb").read() == before
    assert not os.path.exists(run.path("best.tmp.keras"))

    # Ctrl-C in the middle of the save: the half-written copy went too (it stayed, and the run's `wrote` line listed it).
    def interrupted(path, **kwargs):
        with open(path, "wb") as f:
            f.write(b"half a model")
        raise KeyboardInterrupt

    model.save = interrupted
    with pytest.raises(KeyboardInterrupt):
        checkpoint.on_epoch_end(1, {"val_accuracy": 1.0})
    assert open(run.path("best.keras"), "rb").read() == before
    assert not os.path.exists(run.path("best.tmp.keras"))


def test_a_checkpoint_left_half_written_never_replaces_the_best(tmp_path):
    # A save cut short by kill -9 or a power cut leaves best.tmp.keras: it was
    # renamed over best.keras after the next epoch, even one that saved nothing.
    run = output.Run("tiny", {"out_dir": str(tmp_path)})
    train(run, epochs=2)
    before = open(run.path("best.keras"), "rb").read()
    with open(run.path("best.tmp.keras"), "wb") as f:
        f.write(b"half a model")
    checkpoint = output.ModelCheckpoint(
        run.path("best.keras"), monitor="val_accuracy", mode="max", save_best_only=True, initial_value_threshold=0.9
    )
    checkpoint.set_model(tiny_model())
    checkpoint.on_epoch_end(2, {"val_accuracy": 0.8})  # Not better: nothing saved.
    assert open(run.path("best.keras"), "rb").read() == before
    assert not os.path.exists(run.path("best.tmp.keras"))


def test_a_checkpoint_in_a_folder_with_braces_in_its_name_is_saved_there(tmp_path):
    # Keras formats the path with the epoch and the logs: "runs{1}" was an
    # IndexError traceback after the first epoch, and "runs{epoch}" saved elsewhere.
    for name in ("runs{1}", "runs{epoch}"):
        run = output.Run("tiny", {"out_dir": str(tmp_path / name)})
        checkpoint = output.ModelCheckpoint(run.path("best.keras"), monitor="val_accuracy", mode="max")
        checkpoint.set_model(tiny_model())
        checkpoint.on_epoch_end(0, {"val_accuracy": 0.5})
        assert keras.models.load_model(run.path("best.keras"), compile=False).count_params() == tiny_model().count_params()


def test_a_full_disk_while_saving_the_state_is_one_line_and_keeps_the_last_state(tmp_path, monkeypatch):
    config, first = interrupted_after_two_epochs(tmp_path)
    again = output.Run("tiny", config)
    before = open(again.path(resume.STATE_FILE), "rb").read()

    def disk_full(path, arrays):
        with open(path, "wb") as f:
            f.write(b"half a state")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(resume, "save_npz", disk_full)
    with pytest.raises(UserError, match=f"^cannot write to the run folder {again.dir} .*No space left on device.*run the same command again"):
        train(again)
    assert open(again.path(resume.STATE_FILE), "rb").read() == before
    assert not [name for name in os.listdir(again.dir) if ".tmp" in name]


def test_a_folder_of_runs_that_cannot_be_listed_is_one_line(tmp_path, monkeypatch):
    output.Run("tiny", {"out_dir": str(tmp_path)})

    def unreadable(path):  # As in a folder without read permission, for a user other than root.
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(resume.os, "listdir", unreadable)
    with pytest.raises(UserError, match=f"^cannot look for runs to resume in {tmp_path / 'tiny'} .*Permission denied"):
        output.Run("tiny", {"out_dir": str(tmp_path), "seed": 1})


@pytest.mark.slow
def test_the_same_seed_gives_the_same_history(tmp_path, mnist_dir):
    runs = []
    for name in ("a", "b"):
        result = run_script(
            "mnist_cnn.py", f"--data_dir={mnist_dir}", f"--out_dir={tmp_path / name}",
            "--train_samples=200", "--epochs=2", "--batch_size=32", "--width=4",
        )
        assert result.returncode == 0, result.stderr[-3000:]
        runs.append(final_fields(result.stdout))
    np.testing.assert_allclose(history_rows(runs[0]["run_dir"]), history_rows(runs[1]["run_dir"]), atol=1e-6)
    assert runs[0]["test_acc"] == runs[1]["test_acc"]


@pytest.mark.slow
def test_a_killed_training_process_resumes_where_it_stopped(tmp_path):
    # Enough synthetic images that an epoch takes a noticeable time.
    data_dir = os.path.dirname(write_mnist_npz(str(tmp_path / "mnist"), synthetic_mnist(num_train=6000)))
    args = [f"--data_dir={data_dir}", "--epochs=6", "--batch_size=32"]
    straight = run_script("mnist_mlp.py", *args, f"--out_dir={tmp_path / 'a'}")
    assert straight.returncode == 0, straight.stderr[-3000:]

    run_until_epoch("mnist_mlp.py", *args, f"--out_dir={tmp_path / 'b'}", epoch=2)

    resumed = run_script("mnist_mlp.py", *args, f"--out_dir={tmp_path / 'b'}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    epoch = int(resumed.stdout.split("resume    ")[1].split("after epoch ")[1].split()[0])
    assert 1 <= epoch < 6  # The kill may come before epoch 2's state is saved.
    a, b = final_fields(straight.stdout), final_fields(resumed.stdout)
    np.testing.assert_allclose(history_rows(b["run_dir"]), history_rows(a["run_dir"]), atol=1e-5)
    assert b["test_acc"] == a["test_acc"] and b["epochs"] == "6"
