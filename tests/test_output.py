import csv
import inspect
import json
import os
import re
import threading
import time

import keras
import numpy as np
import pytest

import common
from common import UserError, files, output, resume, schedules
from conftest import final_fields


def tiny_model():
    model = keras.Sequential(
        [keras.Input(shape=(4,)), keras.layers.Dense(3, activation="softmax")], name="tiny"
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedules.warmup_cosine(0.01, total_steps=8)),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def tiny_data(n=32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = keras.utils.to_categorical(np.argmax(x[:, :3], axis=1), 3)
    return x, y


def test_a_run_writes_its_files_and_ends_with_the_final_line(tmp_path, capsys):
    config = {"out_dir": str(tmp_path), "epochs": 2, "seed": 0}
    run = output.Run("tiny_script", config)
    assert run.dir.startswith(os.path.join(str(tmp_path), "tiny_script"))
    model = tiny_model()
    x, y = tiny_data()
    model.fit(
        x, y, batch_size=8, epochs=2, validation_data=(x, y), callbacks=run.callbacks(), verbose=0
    )
    assert common.on_interrupt.startswith("run the same command again to continue")
    run.finish(model, x, y, extra_key="extra_value")
    # Ctrl-C from here on (a script's last prints) would have said to run it again "to continue".
    assert common.on_interrupt == ""

    assert json.load(open(run.path("config.json"))) == config
    rows = list(csv.DictReader(open(run.path("history.csv"))))
    assert len(rows) == 2
    for column in output.TABLE_COLUMNS:
        assert column in rows[0], column
    assert float(rows[0]["seconds"]) > 0
    # The rate after each epoch's last step (4 steps of 8): Keras' own
    # schedule, halfway down its cosine and then at its end.
    schedule = model.optimizer._learning_rate
    expected = [float(keras.ops.convert_to_numpy(schedule(step))) for step in (4, 8)]
    assert expected == pytest.approx([0.005, 0.0], abs=1e-7)
    assert [float(row["learning_rate"]) for row in rows] == pytest.approx(expected, abs=1e-7)
    assert os.path.getsize(run.path("curves.png")) > 1000
    assert not [name for name in os.listdir(run.dir) if ".tmp" in name]

    lines = capsys.readouterr().out.strip().splitlines()
    table_rows = [line.split() for line in lines if line.split()[0] in ("1", "2")]
    assert len(table_rows) == 2
    # The header's short names, each right above its column: every figure ends where its name does.
    header = next(line for line in lines if line.startswith("epoch "))
    assert header.split() == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]
    ends = [[match.end() for match in re.finditer(r"\S+", line)] for line in lines if line.split()[0] in ("1", "2")]
    assert ends == [[match.end() for match in re.finditer(r"\S+", header)]] * 2
    # Each printed row holds the epoch's figures under their headings, as history.csv has them.
    for printed, row in zip(table_rows, rows):
        assert int(printed[0]) == int(row["epoch"]) + 1
        for text, column in zip(printed[1:], output.TABLE_COLUMNS[1:]):
            digits = 1 if column == "seconds" else 4
            value = float(row[column])
            assert float(text) == pytest.approx(value, rel=1e-2 if column == "learning_rate" else 0, abs=0.51 * 10**-digits)
    last = lines[-1]
    assert last.startswith("final test_acc=")
    # Scoring is announced before it starts: it can take minutes of its own on a CPU.
    assert lines.index("test      scoring the 32 test images") < lines.index(last)
    fields = dict(pair.split("=", 1) for pair in last.split()[1:])
    assert list(fields)[:3] == ["test_acc", "test_loss", "train_seconds"]
    assert fields["extra_key"] == "extra_value"
    assert float(fields["train_seconds"]) > 0

    # The saved model reloads and gives the same test accuracy.
    reloaded = keras.saving.load_model(run.path("model.keras"))
    assert reloaded.evaluate(x, y, verbose=0)[1] == pytest.approx(float(fields["test_acc"]), abs=1e-4)


def test_runs_started_in_the_same_second_get_numbered_folders(tmp_path, monkeypatch):
    # The clock stands still, so every run is started in the same second.
    monkeypatch.setattr(output.time, "strftime", lambda form: "20261205-010203")
    folders = [output.Run("s", {"out_dir": str(tmp_path), "seed": seed}).dir for seed in range(3)]
    parent = os.path.join(str(tmp_path), "s")
    assert folders == [os.path.join(parent, name) for name in ("20261205-010203", "20261205-010203-2", "20261205-010203-3")]


def test_an_unwritable_out_dir_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(UserError, match="choose a writable --out_dir"):
        output.Run("s", {"out_dir": str(blocker)})


def test_a_full_disk_while_finishing_is_one_line(tmp_path):
    run = output.Run("tiny_script", {"out_dir": str(tmp_path)})
    model = tiny_model()
    x, y = tiny_data()
    model.fit(x, y, batch_size=8, epochs=1, validation_data=(x, y), callbacks=run.callbacks(), verbose=0)
    save = model.save

    def disk_full(path, **kwargs):
        raise OSError(28, "No space left on device")

    model.save = disk_full
    with pytest.raises(UserError, match=f"^cannot write to the run folder {run.dir} .*No space left on device"):
        run.finish(model, x, y)
    model.save = save
    run.finish(model, x, y)  # With room again.
    assert os.path.exists(run.path("result.json"))


def test_a_state_file_that_cannot_be_removed_after_the_result_leaves_the_run_finished(tmp_path, monkeypatch, capsys):
    # A folder made read-only after result.json was written ended with "cannot write to the run folder ... run the
    # same command again (it continues from the last epoch saved there)": the run had finished, and would not resume.
    config = {"out_dir": str(tmp_path), "epochs": 1}
    run = output.Run("tiny_script", config)
    model = tiny_model()
    x, y = tiny_data()
    model.fit(x, y, batch_size=8, epochs=1, validation_data=(x, y), callbacks=run.callbacks(), verbose=0)
    state = run.path(resume.STATE_FILE)
    assert os.path.exists(state)
    remove = os.remove

    def protected(path):
        if path == state:
            raise PermissionError(13, "Permission denied", path)
        remove(path)

    monkeypatch.setattr(os, "remove", protected)
    run.finish(model, x, y)
    out = capsys.readouterr().out
    assert f"note      {state} cannot be removed (Permission denied: {state}); the run has finished" in out
    assert "\nfinal test_acc=" in out and os.path.exists(run.path("result.json"))
    assert not os.path.exists(run.path(resume.LOCK_FILE))  # The other file still went.
    assert output.Run("tiny_script", config).dir != run.dir  # The same command starts a new run.


def test_a_reader_of_stdout_gone_while_finishing_is_not_a_run_folder_error(tmp_path, monkeypatch):
    # `python mnist_mlp.py | head -9` ended with "error: cannot write to the
    # run folder ... (Broken pipe)" although the run had finished.
    run = output.Run("tiny_script", {"out_dir": str(tmp_path)})
    model = tiny_model()
    x, y = tiny_data()
    model.fit(x, y, batch_size=8, epochs=1, validation_data=(x, y), callbacks=run.callbacks(), verbose=0)
    print_ = print

    def reader_gone_at_wrote(*args, **kwargs):
        if str(args[0]).startswith("wrote"):
            raise BrokenPipeError(32, "Broken pipe")
        print_(*args, **kwargs)

    monkeypatch.setattr("builtins.print", reader_gone_at_wrote)
    with pytest.raises(BrokenPipeError):  # Which common's excepthook ends quietly.
        run.finish(model, x, y)
    assert os.path.exists(run.path("result.json"))


def test_a_history_damaged_during_training_still_lets_the_run_finish(tmp_path, capsys):
    run = output.Run("tiny_script", {"out_dir": str(tmp_path)})
    model = tiny_model()
    x, y = tiny_data()
    model.fit(x, y, batch_size=8, epochs=2, validation_data=(x, y), callbacks=run.callbacks(), verbose=0)
    with open(run.path("history.csv"), "a") as f:
        f.write("2,0.5\n")  # A row of two values under a header of seven.
    test_acc, _ = run.finish(model, x, y)
    assert os.path.exists(run.path("model.keras")) and not os.path.exists(run.path("curves.png"))
    result = json.load(open(run.path("result.json")))
    assert result["test_acc"] == round(test_acc, 4) and result["epochs"] is None
    out = capsys.readouterr().out
    assert f"note      {run.path('history.csv')} cannot be read (row 3 has 2 values where the header names" in out


def test_the_training_seconds_include_the_last_states_write(tmp_path, monkeypatch):
    # The state is written in the background; fit waits for the last one at
    # its end, after the clock had stopped, so a slow write went uncounted.
    save = resume.save_npz
    monkeypatch.setattr(resume, "save_npz", lambda path, arrays: (time.sleep(3), save(path, arrays)))
    run = output.Run("tiny_script", {"out_dir": str(tmp_path)})
    x, y = tiny_data()
    start = time.perf_counter()
    tiny_model().fit(x, y, epochs=1, validation_data=(x, y), callbacks=run.callbacks(), verbose=0)
    # (The epoch itself, its tracing included, takes about 1 s.)
    assert 3.0 <= run.train_seconds <= time.perf_counter() - start


class SlowAfterEachEpoch(keras.callbacks.Callback):
    """Takes half a second at each epoch's end: before the epoch table in the
    callbacks, inside the epoch's own seconds; after it, as a checkpoint
    does, outside them."""

    def on_epoch_end(self, epoch, logs=None):
        time.sleep(0.5)


def test_the_history_records_the_training_clock_at_each_epochs_end(tmp_path):
    # The time to reach an accuracy: the epochs before it and what ran
    # between them, which each epoch's own seconds leave out.
    run = output.Run("tiny_script", {"out_dir": str(tmp_path)})
    x, y = tiny_data()
    tiny_model().fit(x, y, epochs=3, validation_data=(x, y), callbacks=run.callbacks(SlowAfterEachEpoch()), verbose=0)
    history = files.read_history(run.path("history.csv"))
    clock, seconds = history["train_seconds"], history["seconds"]
    assert clock[0] >= seconds[0]
    for epoch in (1, 2):
        assert clock[epoch] >= clock[epoch - 1] + 0.5 + seconds[epoch]
    assert clock[2] <= run.train_seconds


def test_a_run_that_diverges_stops_with_one_line_and_keeps_the_epochs_before(tmp_path, monkeypatch):
    # It went on to its end with nan in every row, exit status 0, and NaN
    # (which strict JSON readers refuse) in result.json.
    class DivergeInEpoch3(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                self.model.layers[0].kernel.assign(np.full((4, 3), np.nan, "float32"))

    monkeypatch.setattr(resume.ResumeState, "time_share", 1)  # Every epoch's state saved.
    run = output.Run("tiny_script", {"out_dir": str(tmp_path)})
    model = tiny_model()
    x, y = tiny_data()
    with pytest.raises(UserError, match=r"^the training loss is nan after epoch 3: training diverged; "
                       r"run again with a smaller --learning_rate$"):
        model.fit(x, y, batch_size=8, epochs=5, validation_data=(x, y),
                  callbacks=[DivergeInEpoch3(), *run.callbacks()], verbose=0)
    # A phase trained with another setting's learning rate names that one.
    with pytest.raises(UserError, match=r"after epoch 4: training diverged; run again with a smaller --fine_tune_learning_rate$"):
        model.fit(x, y, batch_size=8, initial_epoch=3, epochs=5, validation_data=(x, y),
                  callbacks=run.callbacks(phase="fine-tune", learning_rate_setting="fine_tune_learning_rate"), verbose=0)
    for thread in threading.enumerate():  # As a process ending waits for the state's writer.
        if isinstance(thread, resume.Writer):
            thread.join()
    assert len(files.read_history(run.path("history.csv"))["loss"]) == 2
    with np.load(run.path(resume.STATE_FILE)) as state:
        assert int(state["epochs_done"]) == 2
    assert not os.path.exists(run.path("result.json"))


def test_a_model_compiled_without_accuracy_still_finishes(tmp_path, capsys):
    # A newcomer's own script without metrics=["accuracy"]: a KeyError
    # traceback after model.keras, before result.json, at every rerun.
    run = output.Run("tiny_script", {"out_dir": str(tmp_path)})
    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    x, y = tiny_data()
    model.fit(x, y, batch_size=8, epochs=2, validation_data=(x, y), callbacks=run.callbacks(), verbose=0)
    run.finish(model, x, y)
    assert os.path.exists(run.path("result.json")) and not os.path.exists(run.path("curves.png"))
    out = capsys.readouterr().out
    assert f"note      {run.path('history.csv')} cannot be read (it has no accuracy column); curves.png is not drawn" in out


def test_a_run_in_two_phases_keeps_one_history(tmp_path, capsys):
    run = output.Run("tiny_script", {"out_dir": str(tmp_path)})
    model = tiny_model()
    x, y = tiny_data()
    model.fit(x, y, epochs=2, validation_data=(x, y), callbacks=run.callbacks(), verbose=0)
    first_seconds = run.train_seconds
    model.fit(
        x, y, initial_epoch=2, epochs=3, validation_data=(x, y), callbacks=run.callbacks(), verbose=0
    )
    assert run.train_seconds > first_seconds  # The phases' times add up.
    clock = files.read_history(run.path("history.csv"))["train_seconds"]
    assert clock[1] <= first_seconds < clock[2] <= run.train_seconds  # The clock goes on from phase 1's.
    run.finish(model, x, y, phase_starts=[3])
    # result.json keeps where phase 2 began, for common.compare's curves.
    assert json.load(open(run.path("result.json")))["phase_starts"] == [3]

    lines = open(run.path("history.csv")).read().strip().splitlines()
    assert lines[0].startswith("epoch,") and [line.split(",")[0] for line in lines[1:]] == ["0", "1", "2"]
    out = capsys.readouterr().out
    assert out.count("parameters, ") == 2  # Each phase prints its parameter counts.
    assert out.strip().splitlines()[-1].split()[4] == "epochs=3"
    assert os.path.getsize(run.path("curves.png")) > 1000


def test_finish_scores_the_test_set_and_plots_confusion_and_mistakes(tmp_path, capsys, monkeypatch):
    drawn = {}  # The arguments of each plot, by name, however they were passed.
    for name in ("curves", "confusion", "image_grid"):
        def record(*args, _name=name, _plot=getattr(output.plots, name), **kwargs):
            drawn[_name] = inspect.signature(_plot).bind(*args, **kwargs).arguments
            _plot(*args, **kwargs)
        monkeypatch.setattr(output.plots, name, record)
    run = output.Run("tiny_images", {"out_dir": str(tmp_path), "seed": 0})
    # A model that always answers class 0: its mistakes are known in advance.
    model = keras.Sequential([keras.Input((6, 6)), keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")])
    model.layers[-1].set_weights([np.zeros((36, 3)), np.array([2.0, 0.0, 0.0])])
    labels = np.array([0, 1, 2, 0, 1, 0])
    x = np.random.default_rng(0).integers(0, 255, (6, 6, 6)).astype("uint8")
    model.compile(loss="categorical_crossentropy", metrics=["accuracy"])
    y = keras.utils.to_categorical(labels, 3)
    model.fit(x, y, epochs=1, validation_data=(x, y), callbacks=run.callbacks(), verbose=0)
    model.layers[-1].set_weights([np.zeros((36, 3)), np.array([2.0, 0.0, 0.0])])  # Undo the step.
    test_acc, test_loss = run.finish(model, x, y, ["cat", "dog", "fox"], flip_tta=True)

    assert test_acc == pytest.approx(3 / 6)
    probability_of_true = np.where(labels == 0, np.e**2, 1) / (np.e**2 + 2)
    assert test_loss == pytest.approx(-np.mean(np.log(probability_of_true)), rel=1e-5)
    for name in ("curves.png", "confusion.png", "misclassified.png"):
        assert os.path.getsize(run.path(name)) > 1000, name
    wrote = [line for line in capsys.readouterr().out.splitlines() if line.startswith("wrote")][0]
    assert "confusion.png" in wrote and "misclassified.png" in wrote
    # Mirrored, the images still get class 0: the vote changes nothing.
    assert json.load(open(run.path("result.json")))["test_acc_flip_tta"] == 0.5
    assert drawn["curves"]["title"].endswith(": test accuracy 50.00%")
    confusion = drawn["confusion"]
    assert list(confusion["labels"]) == list(labels) and list(confusion["predictions"]) == [0] * 6
    assert confusion["class_names"] == ["cat", "dog", "fox"]
    # The grid holds the three it got wrong, with the probability of the wrong answer (e^2 / (e^2 + 2)).
    grid = drawn["image_grid"]
    assert np.array_equal(grid["images"], x[[1, 2, 4]]) and list(grid["wrong"]) == [True] * 3
    assert grid["captions"] == ["dog -> cat 0.79", "fox -> cat 0.79", "dog -> cat 0.79"]


@pytest.mark.parametrize("grid", ["predictions", "misclassified"])
def test_the_image_grid_shows_every_class_of_a_test_set_stored_class_by_class(grid, tmp_path, monkeypatch):
    # Photos from one's own train/ and test/ class folders come class by
    # class: the first 32 were all of the first class.
    drawn = {}
    monkeypatch.setattr(output.plots, "image_grid", lambda images, captions, *args, **kwargs: drawn.update(captions=captions))
    run = output.Run("tiny_images", {"out_dir": str(tmp_path)})
    model = keras.Sequential([keras.Input((6, 6)), keras.layers.Flatten(), keras.layers.Dense(4, activation="softmax")])
    labels = np.repeat([0, 1, 2, 3], 40)
    x = np.random.default_rng(0).integers(0, 255, (len(labels), 6, 6)).astype("uint8")
    y = keras.utils.to_categorical(labels, 4)
    model.compile(loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=1, validation_data=(x, y), callbacks=run.callbacks(), verbose=0)
    model.layers[-1].set_weights([np.zeros((36, 4)), np.array([2.0, 0.0, 0.0, 0.0])])  # Always class 0.
    run.finish(model, x, y, ["ant", "bee", "cat", "dog"], grid=grid)
    captions = drawn["captions"]
    assert len(captions) == 32
    if grid == "predictions":
        assert {caption.split("(is ")[-1] for caption in captions if "(is " in caption} == {"bee)", "cat)", "dog)"}
    else:  # The 120 it got wrong, spread over the three classes it missed.
        assert {caption.split(" ->")[0] for caption in captions} == {"bee", "cat", "dog"}


def pixel_reader(tmp_path, images, labels):
    """A model of 5x5 images that reads pixel (2, 3): lit, it says class 0
    with certainty; dark, it leans to class 1 (bias 0.1: 52.5% to 47.5%).
    Returns it and a finished-training run to score it with."""
    model = keras.Sequential([keras.Input((5, 5, 1)), keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")])
    weights = [np.zeros((25, 2)), np.array([0.0, 0.1])]
    weights[0][2 * 5 + 3, 0] = 10.0
    model.layers[-1].set_weights(weights)
    y = keras.utils.to_categorical(labels, 2)
    run = output.Run("tiny", {"out_dir": str(tmp_path)})
    model.compile(loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(images, y, epochs=1, validation_data=(images, y), callbacks=run.callbacks(), verbose=0)
    model.layers[-1].set_weights(weights)  # Undo the step.
    return model, run


def test_flip_tta_adds_the_vote_of_each_mirror_image(tmp_path, capsys):
    # An image of class 0 lit at (2, 1): its mirror image is lit at (2, 3).
    images = np.zeros((1, 5, 5, 1), "float32")
    images[0, 2, 1, 0] = 1.0
    labels = np.array([0])
    model, run = pixel_reader(tmp_path, images, labels)
    run.finish(model, images, keras.utils.to_categorical(labels, 2), flip_tta=True)
    result = json.load(open(run.path("result.json")))
    # Alone it leans to class 1; its mirror image's certain vote wins.
    assert (result["test_acc"], result["test_acc_flip_tta"]) == (0, 1)
    assert "test      scoring the 1 test images (2 passes: with their mirror images)" in capsys.readouterr().out


def test_shift_tta_adds_the_votes_of_shifted_images_and_their_mirror_images(tmp_path, capsys):
    # An image of class 0 lit at (1, 0): of the six views only one, the
    # mirror image of the image moved down and right, has it at (2, 3).
    images = np.zeros((1, 5, 5, 1), "float32")
    images[0, 1, 0, 0] = 1.0
    labels = np.array([0])
    model, run = pixel_reader(tmp_path, images, labels)
    y = keras.utils.to_categorical(labels, 2)

    run.finish(model, images, y, flip_tta=True, shift_tta=1)
    result = json.load(open(run.path("result.json")))
    # Alone, and with its mirror image, it gets class 1; with all six views,
    # the one certain vote for class 0 outweighs five that lean to class 1.
    assert (result["test_acc"], result["test_acc_flip_tta"], result["test_acc_flip_shift_tta"]) == (0, 0, 1)
    assert "test      scoring the 1 test images (6 passes: with their mirror images and shifts)" in capsys.readouterr().out
    with pytest.raises(ValueError, match="flip_tta=True"):
        run.finish(model, images, y, shift_tta=1)


def python_with_common(code, stdout, unbuffered="", imports=""):
    """Starts `code` (after `import common`, its `handle_errors()` as a script's settings call it, and
    `imports`) in a Python process of its own."""
    import subprocess
    import sys

    from conftest import REPO

    return subprocess.Popen(
        [sys.executable, "-c", "import common\ncommon.handle_errors()\n" + imports + code], cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": unbuffered},
        stdout=stdout, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.parametrize("unbuffered", ["1", ""])
def test_output_piped_into_a_reader_that_stops_early_ends_quietly(unbuffered):
    # As `python mnist_mlp.py | head -3`: a BrokenPipeError traceback, or
    # "Exception ignored ... BrokenPipeError" from Python's last flush.
    import subprocess

    process = python_with_common("for i in range(200_000):\n    print('row', i)\n", subprocess.PIPE, unbuffered)
    assert process.stdout.readline() == "row 0\n"
    process.stdout.close()  # The reader stops.
    stderr = process.stderr.read()
    assert process.wait(timeout=60) == 1 and stderr == ""


def test_output_still_buffered_when_the_reader_has_gone_ends_quietly():
    # Python's own flush at the end failed: "Exception ignored", status 120.
    import subprocess

    process = python_with_common("import time\nprint('done')\ntime.sleep(2)\n", subprocess.PIPE)
    process.stdout.close()  # The reader goes before the process writes anything.
    stderr = process.stderr.read()
    assert process.wait(timeout=60) == 0 and stderr == ""


def test_a_broken_pipe_that_is_not_stdout_is_an_error_like_any_other():
    import subprocess

    process = python_with_common("raise BrokenPipeError('a pipe of some library')", subprocess.PIPE)
    out, stderr = process.communicate(timeout=60)
    assert process.returncode == 1 and stderr.strip().splitlines()[-1] == "BrokenPipeError: a pipe of some library"


def _numpy_out_of_memory():
    try:
        np.zeros((10**9, 10**9))  # 8 EB: beyond any machine's address space.
    except MemoryError as error:
        return str(error)
    pytest.fail("8 EB were allocated")


@pytest.mark.parametrize(
    "code, detail",
    [
        # NumPy, as a damaged file's header or a huge image size asks for exabytes.
        ("import numpy as np\nnp.zeros((10**9, 10**9))", re.escape(_numpy_out_of_memory())),
        # TensorFlow's kind, as an eager op words it (a huge --width of mnist_cnn.py)...
        ("class ResourceExhaustedError(Exception): pass\nraise ResourceExhaustedError('{{function_node "
         "__wrapped__Mul_device_/job:localhost/replica:0/task:0/device:CPU:0}} OOM when allocating tensor with "
         "shape[3,3] and type float by allocator mklcpu [Op:Mul] name: ')",
         re.escape("OOM when allocating tensor with shape[3,3] and type float by allocator mklcpu")),
        # ... and as a compiled step does, where the first line said only "Graph execution error:"
        # (the device and the allocator are the machine's).
        ("import tensorflow as tf\n@tf.function\ndef step(x):\n    return tf.random.uniform((10**9, 10**9)) + x\nstep(1.0)",
         re.escape("OOM when allocating tensor with shape[1000000000,1000000000] and type float on ") + r"\S+ by allocator \S+"),
        # XLA's (JAX), on an accelerator.
        ("raise RuntimeError('RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9 bytes.\\nmore')",
         re.escape("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9 bytes.")),
        # PyTorch's CPU allocator, after the line of C++ that failed.
        ("raise RuntimeError('[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can\\'t allocate "
         "memory: you tried to allocate 8 bytes. Error code 12 (Cannot allocate memory)')",
         re.escape("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes. Error code 12 (Cannot allocate memory)")),
    ],
)
@pytest.mark.slow
def test_running_out_of_memory_is_one_line_not_a_traceback(code, detail):
    import subprocess

    process = python_with_common(code, subprocess.PIPE)
    out, stderr = process.communicate(timeout=120)
    assert process.returncode == 1 and "Traceback" not in stderr
    # (TensorFlow's own log may print a line of its shutdown after it.)
    [line] = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert re.fullmatch(
        rf"error: out of memory \({detail}\); give a smaller --batch_size, model or image size, or stop what else is using the memory",
        line,
    ), line


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full (Linux's always-full device)")
def test_output_redirected_to_a_full_disk_is_one_line():
    # `python mnist_mlp.py > /dev/full`: an OSError traceback, then "Exception ignored" from Python's last flush.
    with open("/dev/full", "w") as full:
        process = python_with_common("print('row ' * 100_000)", full)  # More than a buffer holds: written at once.
        out, stderr = process.communicate(timeout=60)
    assert process.returncode == 1 and stderr == (
        "error: no space left on the device (No space left on device); make room, then run the same command again\n"
    )


def test_a_full_disk_for_a_file_is_one_line_and_keeps_the_output():
    # The output goes to another disk (| tee log): what it still buffered is written, not thrown away.
    import subprocess

    process = python_with_common(
        "print('row 1')\nraise OSError(28, 'No space left on device', '/data/history.csv')", subprocess.PIPE
    )
    out, stderr = process.communicate(timeout=60)
    assert (process.returncode, out) == (1, "row 1\n")
    assert stderr == (
        "error: no space left on the device (No space left on device: /data/history.csv); "
        "make room, then run the same command again\n"
    )


def test_kill_keeps_the_output_still_buffered():
    # stdout to a file or a pipe is buffered, and SIGTERM's default end of the process lost what was in the buffer.
    import subprocess

    process = python_with_common(
        "import os, signal, time\ncommon.print_on_terminate()\nprint('row 1')\n"
        "os.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(10)\n",
        subprocess.PIPE,
    )
    out, stderr = process.communicate(timeout=60)
    assert (process.returncode, out, stderr.strip()) == (-15, "row 1\n", "terminated")


def test_kill_lets_a_thread_still_writing_finish_first(tmp_path):
    # The resume state is written in a thread after each epoch; SIGTERM (a
    # job scheduler, `docker stop`) ended the process in the middle of it,
    # and the run lost that epoch's state. Ctrl-C always waited for it.
    import subprocess

    written = tmp_path / "state"
    # Beside the writer, an idle thread that never ends, as Keras keeps a
    # pool of workers during fit on JAX and PyTorch: not waited for.
    process = python_with_common(
        "import os, signal, threading, time\ncommon.print_on_terminate()\n"
        "threading.Thread(target=threading.Event().wait).start()\n"
        f"writer = resume.Writer(lambda: (time.sleep(1), open({str(written)!r}, 'w').write('saved')))\n"
        f"writer.start()\nopen({str(tmp_path / 'killed at')!r}, 'w').write(str(time.monotonic()))\n"
        "os.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(60)\n",
        subprocess.PIPE,
        imports="from common import resume\n",
    )
    _, stderr = process.communicate(timeout=60)
    # (Importing common.resume imports TensorFlow, which logs to stderr first.)
    assert (process.returncode, stderr.strip().splitlines()[-1]) == (-15, "terminated")
    assert written.read_text() == "saved"
    # The writer's 1 s, not the 8 s that the idle thread would have held it
    # (the limit SIGTERM gives threads): room for a slow, busy machine.
    assert time.monotonic() - float((tmp_path / "killed at").read_text()) < 7


def test_kill_says_terminated_when_the_reader_of_stdout_has_gone():
    # `python mnist_mlp.py | head`, killed after head ended: the failed flush of
    # the buffered lines kept "terminated" and its advice from being printed.
    import subprocess

    process = python_with_common(
        "import os, signal, time\ncommon.print_on_terminate()\nprint('row 1')\n"
        "os.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(10)\n",
        subprocess.PIPE,
    )
    process.stdout.close()  # The reader goes before the process writes anything.
    stderr = process.stderr.read()
    assert (process.wait(timeout=60), stderr.strip()) == (-15, "terminated")


def test_a_path_that_stdouts_encoding_cannot_write_is_escaped():
    # With PYTHONIOENCODING=ascii, printing a run folder under /tmp/é ended the run in a UnicodeEncodeError.
    import subprocess
    import sys

    from conftest import REPO

    printed = subprocess.run(
        [sys.executable, "-c", "import common\ncommon.handle_errors()\nprint('run       /tmp/\\xe9/mnist_mlp')"], cwd=REPO,
        env={**os.environ, "PYTHONIOENCODING": "ascii"}, capture_output=True, timeout=60,
    )
    assert (printed.returncode, printed.stdout, printed.stderr) == (0, b"run       /tmp/\\xe9/mnist_mlp\n", b"")


def test_a_program_that_only_imports_common_keeps_pythons_own_error_handling():
    # Loading a saved model needs `import common.augment`: a program's own out-of-memory error then said
    # "give a smaller --batch_size", and its Ctrl-C printed "interrupted" in place of the traceback.
    import subprocess
    import sys

    from conftest import REPO

    code = (
        "import sys, common.augment, common.config\n"
        "print(sys.excepthook is sys.__excepthook__)\n"
        "common.config.apply_overrides({}, [])\n"  # A script's first step.
        "print(sys.excepthook is sys.__excepthook__)\n"
        "raise MemoryError\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.stdout == "True\nFalse\n"
    assert result.stderr.strip().splitlines()[-1].startswith("error: out of memory")  # After TensorFlow's logs.
    code = "import common.augment\nraise MemoryError\n"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "Traceback" in result.stderr and result.stderr.strip().splitlines()[-1] == "MemoryError"


def test_a_closed_stdout_is_no_error_at_the_end():
    # `python script.py >&-`: Python's stdout is None, and flushing it at the end raised an AttributeError.
    import subprocess
    import sys

    from conftest import REPO

    closed = subprocess.run(
        [sys.executable, "-c", "import common\ncommon.handle_errors()\nprint('nowhere')"], cwd=REPO, capture_output=False,
        stderr=subprocess.PIPE, text=True, preexec_fn=lambda: os.close(1), timeout=60,
    )
    assert closed.returncode == 0 and closed.stderr == ""


def stopped(tmp_path, with_run, how):
    """Runs a process that makes a run folder (if `with_run`), then stops
    itself with the Python line `how`; returns what it printed and its status."""
    import subprocess
    import sys

    from conftest import REPO

    code = (
        "import os, signal, time\n"
        "import common.config\n"
        "from common import output\n"
        "common.config.apply_overrides({}, [])\n"  # As a script's first step: Ctrl-C and errors are one line.
        f"if {with_run}:\n"
        f"    output.Run('tiny', {{'out_dir': {str(tmp_path)!r}, 'epochs': 1}})\n"
        f"{how}\n"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("with_run", [False, True])
def test_ctrl_c_says_how_to_continue_only_in_a_run_that_can(with_run, tmp_path):
    result = stopped(tmp_path, with_run, "raise KeyboardInterrupt")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    if with_run:
        assert last == "interrupted: run the same command again to continue from the last saved epoch"
    else:
        assert last == "interrupted"


def test_ctrl_c_ends_the_process_as_sigint_does_once_a_writer_has_finished_without_finalizing(tmp_path):
    # Python's finalization, with TensorFlow's threads still running, once
    # ended a Ctrl-C'd run with a segmentation fault (a test saw -11, not -2).
    import signal
    import subprocess

    saved, finalized = tmp_path / "state", tmp_path / "finalized"
    process = python_with_common(
        "import atexit, threading, time\n"
        f"atexit.register(lambda: open({str(finalized)!r}, 'w').close())\n"
        f"writer = threading.Thread(target=lambda: (time.sleep(1), open({str(saved)!r}, 'w').write('saved')))\n"
        "common.writers.add(writer)\nwriter.start()\nprint('row 1')\nraise KeyboardInterrupt\n",
        subprocess.PIPE,
    )
    stdout, stderr = process.communicate(timeout=60)
    assert (process.returncode, stdout, stderr.strip()) == (-signal.SIGINT, "row 1\n", "interrupted")
    assert saved.read_text() == "saved" and not finalized.exists()


@pytest.mark.parametrize("with_run", [False, True])
def test_sigterm_in_a_run_says_how_to_continue_and_still_ends_the_process(with_run, tmp_path):
    import signal

    result = stopped(tmp_path, with_run, "os.kill(os.getpid(), signal.SIGTERM); time.sleep(60)")
    assert result.returncode == -signal.SIGTERM and "Traceback" not in result.stderr
    if with_run:
        assert result.stderr.strip().splitlines()[-1] == (
            "terminated: run the same command again to continue from the last saved epoch"
        )
    else:  # Only a training run changes what SIGTERM does.
        assert "terminated" not in result.stderr


def test_a_constant_learning_rate_is_logged_and_printed(tmp_path, capsys):
    # transfer_xception.py's phase 2 trains at a constant rate, not a schedule.
    run = output.Run("tiny", {"out_dir": str(tmp_path)})
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    x, y = tiny_data()
    model.fit(x, y, batch_size=8, epochs=2, validation_data=(x, y), callbacks=run.callbacks(), verbose=0)
    rows = list(csv.DictReader(open(run.path("history.csv"))))
    assert [float(row["learning_rate"]) for row in rows] == pytest.approx([3e-3, 3e-3])
    printed = [line.split() for line in capsys.readouterr().out.splitlines() if line.split()[0] in ("1", "2")]
    assert [row[5] for row in printed] == ["3.00e-03", "3.00e-03"]


def test_history_reads_na_as_a_missing_value(tmp_path):
    # CSVLogger writes NA where an epoch logged no value (no validation that epoch).
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss,val_loss\n0,0.9,NA\n1,0.7,0.8\n")
    history = files.read_history(path)
    assert history["loss"] == [0.9, 0.7] and np.isnan(history["val_loss"][0]) and history["val_loss"][1] == 0.8


def test_finish_names_and_circles_the_epoch_whose_weights_early_stopping_put_back(tmp_path, capsys, monkeypatch):
    drawn = []
    monkeypatch.setattr(output.plots, "curves", lambda *args, **kwargs: drawn.append(kwargs))
    x, y = tiny_data()
    # Watching for the highest validation loss, early stopping keeps epoch 1's
    # weights (the loss only falls), not the last epoch's. The test images
    # are the validation images, so the test loss shows whose weights the
    # model holds.
    for stopper in (keras.callbacks.EarlyStopping(monitor="val_loss", mode="max", patience=9, restore_best_weights=True), None):
        run = output.Run("tiny", {"out_dir": str(tmp_path), "stopper": bool(stopper)})
        model = tiny_model()
        callbacks = run.callbacks(*([stopper] if stopper else []))
        model.fit(x, y, batch_size=8, epochs=3, validation_data=(x, y), callbacks=callbacks, verbose=0)
        run.finish(model, x, y)
        out = capsys.readouterr().out
        val_loss = files.read_history(run.path("history.csv"))["val_loss"]
        test_loss = float(final_fields(out)["test_loss"])
        if stopper:
            assert val_loss[0] == max(val_loss) and drawn[-1]["kept_epoch"] == 1
            assert f"weights   of epoch 1, the best (val_loss {val_loss[0]:.4f}), put back by early stopping" in out
            assert test_loss == pytest.approx(val_loss[0], abs=2e-4)
        else:
            assert drawn[-1]["kept_epoch"] is None and "weights   " not in out
            assert test_loss == pytest.approx(val_loss[-1], abs=2e-4)
