"""Each script run as a user would: tiny smoke runs, bad inputs, real data."""

import ast
import csv
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

from benchmarks import CPU_FAST
from common import cifar10, data
from common.files import read_history
from conftest import (
    MOBILENET,
    PHOTO_CLASSES,
    REAL_MNIST,
    REPO,
    SHARED_DATA,
    final_fields,
    needs_mobilenet,
    needs_real_mnist,
    run_script,
    run_until,
    run_until_epoch,
    synthetic_cifar10,
    synthetic_mnist,
    write_image_tree,
    write_mnist_npz,
    write_photo_tree,
)

# Every test here starts a script in a process of its own, 2 s to a minute
# each: `pytest -m "not slow"` leaves them out for a quick check while editing.
pytestmark = pytest.mark.slow

# Each script, and the dataset it trains on.
SCRIPTS = {
    "mnist_mlp.py": "mnist",
    "mnist_cnn.py": "mnist",
    "cifar10_cnn.py": "cifar10",
    "resnet34.py": "cifar10",
}
# The synthetic datasets are tiny already (240 MNIST and 40 CIFAR-10 training images).
TINY = ["--epochs=2", "--batch_size=32"]
# Marks a test, or a case, that runs a script on the JAX backend.
needs_jax = pytest.mark.skipif(not importlib.util.find_spec("jax"), reason="jax not installed")


@pytest.fixture
def dataset(tmp_path):
    """Writes a tiny synthetic copy of a dataset; returns its folder and test set."""

    def make(kind):
        if kind == "mnist":
            write_mnist_npz(str(tmp_path / "mnist"))
            return str(tmp_path / "mnist"), synthetic_mnist()[1]
        write_image_tree(str(tmp_path / "cifar10"))
        return str(tmp_path / "cifar10"), synthetic_cifar10()[1]

    return make


def activations(model):
    """The names of a model's Activation layers, in order."""
    return [layer.activation.__name__ for layer in model.layers if isinstance(layer, keras.layers.Activation)]


def load_run_model(run_dir, name="model.keras"):
    """A run's model.keras (or best.keras), loaded as a user would load it."""
    importlib.import_module("common.augment")  # Registers RandomShift, which the CNNs contain.
    return keras.saving.load_model(os.path.join(run_dir, name))


def run_folders(out_dir):
    return [os.path.join(root, d) for root, dirs, _ in os.walk(out_dir) for d in dirs]


@pytest.mark.parametrize("script", SCRIPTS)
def test_smoke(script, dataset, tmp_path):
    data_dir, (x_test, y_test) = dataset(SCRIPTS[script])
    out_dir = str(tmp_path / "runs")
    result = run_script(script, f"--data_dir={data_dir}", f"--out_dir={out_dir}", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    fields = final_fields(result.stdout)
    assert 0 <= float(fields["test_acc"]) <= 1 and float(fields["train_seconds"]) > 0

    run_dir = fields["run_dir"]
    assert run_dir.startswith(os.path.join(out_dir, script[:-3]))
    for name in ("config.json", "history.csv", "curves.png", "confusion.png", "misclassified.png", "model.keras"):
        assert os.path.exists(os.path.join(run_dir, name)), name
    # The script as it ran, beside what it gave.
    assert open(os.path.join(run_dir, script), "rb").read() == open(os.path.join(REPO, script), "rb").read()
    config = json.load(open(os.path.join(run_dir, "config.json")))
    assert config["epochs"] == 2 and config["batch_size"] == 32
    assert config["data_dir"] == data_dir
    assert len(open(os.path.join(run_dir, "history.csv")).read().strip().splitlines()) == 1 + 2
    if SCRIPTS[script] == "cifar10":
        # Trained with flips and shifts, so scored with their votes as well.
        result_json = json.load(open(os.path.join(run_dir, "result.json")))
        assert {"test_acc_flip_tta", "test_acc_flip_shift_tta"} <= set(result_json)

    if script == "resnet34.py":
        # Its custom layer is defined in the script, which trains when
        # imported: a user copies the class (and the constant it reads), as
        # README.md says; so does this test.
        tree = ast.parse(open(os.path.join(REPO, script)).read())
        copied = [
            node for node in tree.body
            if getattr(node, "name", None) == "ResidualUnit"
            or (isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "BN_MOMENTUM")
        ]
        exec(compile(ast.Module(copied, type_ignores=[]), script, "exec"), {"keras": keras, "layers": keras.layers})
        assert_parameter_count_as_in_the_docstring(result.stdout, "cifar")
    # The saved model reloads and scores the reported test accuracy on the
    # raw bytes: scaling them is the model's first layer.
    model = load_run_model(run_dir)
    x_test = x_test.reshape((len(x_test),) + model.input_shape[1:])
    accuracy = np.mean(np.argmax(model.predict(x_test, verbose=0), axis=1) == y_test)
    assert accuracy == pytest.approx(float(fields["test_acc"]), abs=1e-4)


def test_mnist_cnn_checkpoints_and_keeps_the_weights_of_its_best_epoch(dataset, tmp_path):
    # As in the cifar10_cnn test below: a learning rate far too high for
    # these few images, so that the last epoch is not the best.
    data_dir, _ = dataset("mnist")
    settings = ["--epochs=6", "--batch_size=8", "--learning_rate=5e-2", "--validation_split=0.25"]
    result = run_script("mnist_cnn.py", f"--data_dir={data_dir}", f"--out_dir={tmp_path}", *settings)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = final_fields(result.stdout)["run_dir"]
    val_accuracy = read_history(os.path.join(run_dir, "history.csv"))["val_accuracy"]
    assert val_accuracy[-1] < max(val_accuracy)
    (x_train, y_train), _ = data.load_mnist(data_dir)
    _, _, x_val, y_val = data.split_validation(x_train, y_train, validation_split=0.25, seed=0)
    for name in ("best.keras", "model.keras"):  # The checkpoint, and the weights early stopping put back.
        model = load_run_model(run_dir, name)
        accuracy = np.mean(np.argmax(model.predict(x_val, verbose=0), axis=1) == y_val)
        assert accuracy == pytest.approx(max(val_accuracy)), name


def test_cifar10_cnn_saves_the_weights_of_its_best_epoch(dataset, tmp_path):
    # A learning rate far too high for these 30 images makes the validation
    # accuracy fall after the first epoch, so the last epoch is not the best.
    data_dir, _ = dataset("cifar10")
    settings = ["--epochs=6", "--batch_size=8", "--learning_rate=5e-2", "--validation_split=0.25"]
    result = run_script("cifar10_cnn.py", f"--data_dir={data_dir}", f"--out_dir={tmp_path}", *settings)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = final_fields(result.stdout)["run_dir"]
    assert not os.path.exists(os.path.join(run_dir, "best.keras"))  # No checkpoint: early stopping keeps the best.
    with open(os.path.join(run_dir, "history.csv")) as f:
        val_accuracy = [float(row["val_accuracy"]) for row in csv.DictReader(f)]
    assert val_accuracy[-1] < max(val_accuracy)

    (x_train, y_train), _ = cifar10.load_cifar10(data_dir)
    _, _, x_val, y_val = data.split_validation(x_train, y_train, validation_split=0.25, seed=0)
    model = load_run_model(run_dir)
    accuracy = np.mean(np.argmax(model.predict(x_val, verbose=0), axis=1) == y_val)
    assert accuracy == pytest.approx(max(val_accuracy))
    # The default settings train with Adam and ReLU.
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert set(activations(model)) == {"relu"}


def test_cifar10_cnn_takes_its_activation_and_optimizer_from_the_settings(dataset, tmp_path):
    data_dir, _ = dataset("cifar10")
    settings = ["--activation=gelu", "--optimizer=sgd", "--learning_rate=0.1", "--whiten=True", *TINY]
    result = run_script("cifar10_cnn.py", f"--data_dir={data_dir}", f"--out_dir={tmp_path}", *settings)
    assert result.returncode == 0, result.stderr[-3000:]
    model = load_run_model(final_fields(result.stdout)["run_dir"])
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert model.optimizer.nesterov and model.optimizer.momentum == 0.9
    # The whitening layer's ReLU keeps one sign of each of its paired
    # components; after it, one activation for each of the six convolutions.
    assert activations(model) == ["relu"] + ["gelu"] * 6


@needs_jax
@pytest.mark.parametrize("script", ["cifar10_cnn.py", "resnet34.py"])
def test_cifar10_scripts_train_on_batches_gathered_on_the_device(script, dataset, tmp_path):
    # --resident=True: the same network, schedule and orders of the batches,
    # gathered on the device by DeviceBatches: the same training.
    data_dir, _ = dataset("cifar10")
    settings = [
        f"--data_dir={data_dir}", f"--out_dir={tmp_path}", "--epochs=2", "--batch_size=8", "--validation_split=0.25",
        "--test_time_augmentation=False",  # What is tested is the training; the votes cost a JAX run a minute.
    ]
    losses = {}
    for resident in (False, True):
        result = run_script(script, *settings, f"--resident={resident}", env={"KERAS_BACKEND": "jax"})
        assert result.returncode == 0, result.stderr[-3000:]
        with open(os.path.join(final_fields(result.stdout)["run_dir"], "history.csv")) as f:
            losses[resident] = [float(row["loss"]) for row in csv.DictReader(f)]
    assert len(losses[True]) == 2 and losses[True][1] < losses[True][0]
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-6)


def test_resident_images_on_tensorflow_stop_with_one_line(dataset, tmp_path):
    data_dir, _ = dataset("cifar10")
    out_dir = tmp_path / "runs"
    result = run_script(
        "resnet34.py", f"--data_dir={data_dir}", f"--out_dir={out_dir}", "--resident=True", *TINY,
        env={"KERAS_BACKEND": "tensorflow"},
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: --resident=True needs KERAS_BACKEND=jax")
    assert not out_dir.exists()


def test_cifar10_cnn_whitening_layer_decorrelates_the_training_patches(tmp_path):
    # Smooth images (8x8 blocks of 4x4 pixels) whose neighbouring pixels and
    # channels are strongly correlated, as in photos.
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, size=(60, 8, 8, 1)).astype(np.uint8)
    x = np.repeat(np.repeat(blocks, 4, axis=1), 4, axis=2) // np.array([1, 2, 3], dtype=np.uint8)
    y = np.tile(np.arange(10), 6)
    data_dir = write_image_tree(str(tmp_path / "cifar10"), data=((x[:40], y[:40]), (x[40:], y[40:])))
    result = run_script(
        "cifar10_cnn.py", f"--data_dir={data_dir}", f"--out_dir={tmp_path}", "--whiten=True", "--epochs=1",
        "--batch_size=8",
    )
    assert result.returncode == 0, result.stderr[-3000:]

    # The layer's outputs on the script's training images, where its 2x2
    # window lies inside the image (the last row and column see padding).
    (x_train, y_train), _ = cifar10.load_cifar10(data_dir)
    x_train = data.split_validation(x_train, y_train, 0.1, 0)[0]
    model = load_run_model(final_fields(result.stdout)["run_dir"])
    whitening = keras.Model(model.inputs, model.get_layer("whitening").output)
    whitened = whitening.predict(x_train, verbose=0)[:, :31, :31].reshape(-1, 24).astype("float64")
    before = np.corrcoef(x_train[:, :31, :31].reshape(-1, 3).T.astype("float64"))
    assert before[0, 1] > 0.9  # The colour channels of a pixel, for one.
    # Two signed copies of 12 components with mean 0, uncorrelated, each of
    # variance just under 1 (epsilon damps the faintest ones).
    np.testing.assert_allclose(whitened[:, 12:], -whitened[:, :12], atol=1e-5)
    covariance = np.cov(whitened[:, :12], rowvar=False)
    np.testing.assert_allclose(whitened[:, :12].mean(axis=0), 0, atol=1e-3)
    np.testing.assert_allclose(covariance - np.diag(np.diag(covariance)), 0, atol=1e-3)
    assert np.all(np.diag(covariance) < 1) and np.diag(covariance).max() > 0.95


def assert_parameter_count_as_in_the_docstring(stdout, stem):
    """resnet34.py printed as many parameters for `stem` as its docstring says."""
    printed = re.search(rf"model +resnet34_{stem}_stem: ([\d,]+) parameters", stdout)
    docstring = open(os.path.join(REPO, "resnet34.py")).read().split('"""')[1]
    stated = re.search(rf"([\d,]+) with the\s+{'CIFAR' if stem == 'cifar' else 'ImageNet'} stem", docstring)
    assert printed and stated and printed.group(1) == stated.group(1)


@pytest.mark.parametrize("script", ["cifar10_cnn.py", "resnet34.py"])
def test_test_time_augmentation_can_be_left_out(script, dataset, tmp_path):
    # Six passes over the test images cost a short CPU run more than its training.
    data_dir, _ = dataset("cifar10")
    # ResNet-34 with its ImageNet stem here (test_smoke runs the CIFAR stem),
    # each one's parameter count checked against the docstring.
    stem = ["--stem=imagenet"] if script == "resnet34.py" else []
    result = run_script(
        script, f"--data_dir={data_dir}", f"--out_dir={tmp_path}", "--test_time_augmentation=False", *stem, *TINY
    )
    assert result.returncode == 0, result.stderr[-3000:]
    fields = final_fields(result.stdout)
    result_json = json.load(open(os.path.join(fields["run_dir"], "result.json")))
    assert "test_acc" in result_json and not any("tta" in key for key in list(result_json) + list(fields))
    if stem:
        assert_parameter_count_as_in_the_docstring(result.stdout, "imagenet")


def corrupt_file(tmp_path, name):
    folder = tmp_path / "corrupt"
    folder.mkdir()
    (folder / name).write_bytes(b"PK\x03\x04 truncated")
    return str(folder)


BAD_INPUTS = {
    "unknown key": (["--epoch=3"], "unknown setting --epoch; valid keys:"),
    "wrong type": (["--batch_size=big"], "--batch_size=big is not an integer"),
    "impossible value": (["--epochs=0"], "epochs must be > 0"),
    "missing folder": (["--data_dir=/no/such/folder"], "does not exist"),
    "corrupt file": (None, None),
}
# A damaged copy of the file each dataset is read from here (for CIFAR-10,
# the JPEG archive of ../shared/data), and what is said about it.
CORRUPT_FILE = {
    "mnist": ("mnist.npz", "is not a readable npz file"),
    "cifar10": ("cifar-10-jpeg.tar.gz", "is not a readable .tar.gz"),
}


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_gives_one_clean_line(script, case, tmp_path):
    args, message = BAD_INPUTS[case]
    if args is None:
        name, message = CORRUPT_FILE[SCRIPTS[script]]
        args = [f"--data_dir={corrupt_file(tmp_path, name)}"]
    out_dir = tmp_path / "runs"
    result = run_script(script, *args, f"--out_dir={out_dir}")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, result.stderr[-2000:]
    assert not run_folders(str(out_dir)), "a failed run must not leave a run folder"


def test_a_backend_that_cannot_train_stops_with_one_line_before_the_run_folder(mnist_dir, tmp_path):
    # With KERAS_BACKEND=numpy, fit ended in a NotImplementedError traceback
    # and left a run folder that the next run with the same settings resumed.
    out_dir = tmp_path / "runs"
    result = run_script("mnist_mlp.py", f"--data_dir={mnist_dir}", f"--out_dir={out_dir}", *TINY, env={"KERAS_BACKEND": "numpy"})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: the Keras backend numpy (from KERAS_BACKEND or ~/.keras/keras.json) cannot train a model; "
        "use tensorflow (the default), jax or torch"
    )
    assert not out_dir.exists()


@pytest.mark.parametrize("script", ["mnist_cnn.py", "cifar10_cnn.py", "resnet34.py"])
def test_a_shift_as_wide_as_the_images_stops_before_the_run_folder_is_made(script, dataset, tmp_path):
    # The layer refuses it as the model is built, which is after the data loads.
    data_dir, _ = dataset(SCRIPTS[script])
    out_dir = tmp_path / "runs"
    result = run_script(script, f"--data_dir={data_dir}", f"--out_dir={out_dir}", "--shift=40", *TINY)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: a shift of 40 pixels needs images larger than")
    assert not run_folders(str(out_dir))


def test_resnet34_refuses_an_unknown_stem():
    result = run_script("resnet34.py", "--stem=vgg")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == "error: --stem='vgg' is not a stem; use 'cifar' or 'imagenet'"


def test_help_lists_every_shared_setting():
    for script in SCRIPTS:
        result = run_script(script, "--help")
        assert result.returncode == 0
        for key in ("data_dir", "epochs", "batch_size", "learning_rate", "seed", "out_dir",
                    "validation_split", "train_samples"):
            assert f"--{key}=" in result.stdout, (script, key)
        # With the comment beside the setting in the script.
        data_dir_line = result.stdout.partition("--data_dir=''")[2].partition("\n")[0]
        assert "# folder" in data_dir_line, (script, data_dir_line)


@needs_real_mnist
def test_mlp_learns_real_mnist_in_one_epoch(tmp_path):
    # Four steps per call, which TensorFlow runs as one compiled loop.
    result = run_script(
        "mnist_mlp.py", f"--data_dir={REAL_MNIST}", f"--out_dir={tmp_path}", "--epochs=1", "--steps_per_execution=4"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert float(final_fields(result.stdout)["test_acc"]) >= 0.96


@needs_real_mnist
def test_cnn_fast_overrides_learn_real_mnist_in_one_epoch(tmp_path):
    # One epoch is short enough that batch normalisation's statistics must
    # keep up: with Keras' default momentum this run validated at about 11%.
    result = run_script("mnist_cnn.py", f"--data_dir={REAL_MNIST}", f"--out_dir={tmp_path}", *CPU_FAST["mnist_cnn"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert float(final_fields(result.stdout)["test_acc"]) >= 0.97


# transfer_xception.py: tiny photo folders, Xception at its smallest input size.

XCEPTION = os.path.join(SHARED_DATA, "keras_weights", "xception_weights_tf_dim_ordering_tf_kernels_notop.h5")
TINY_TRANSFER = ["--image_size=71", "--epochs=2", "--fine_tune_epochs=1", "--batch_size=8", "--fine_tune_from=13"]


def transfer(photo_dir, out_dir, *args):
    return run_script("transfer_xception.py", f"--data_dir={photo_dir}", f"--out_dir={out_dir}", *TINY_TRANSFER, *args)


@pytest.mark.parametrize(
    "weights",
    [
        "none",
        pytest.param(
            XCEPTION,
            marks=pytest.mark.skipif(not os.path.exists(XCEPTION), reason="shared Xception weights not found"),
        ),
    ],
)
def test_transfer_trains_two_phases_then_predicts(weights, tmp_path):
    photo_dir = write_photo_tree(str(tmp_path / "photos"), per_class=12)
    out_dir = str(tmp_path / "runs")
    result = transfer(photo_dir, out_dir, f"--weights={weights}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipped 2 non-image files" in result.stdout
    assert ("warning   weights=none" in result.stdout) == (weights == "none")
    assert re.search(r"phase 1   test_acc=[\d.]+", result.stdout)
    fields = final_fields(result.stdout)
    assert fields["epochs"] == "3"
    # Early stopping in phase 2 counts the run's epochs, phase 1's included.
    assert re.search(r"^weights   of epoch 3, the last and the best \(val_accuracy [\d.]+\)$", result.stdout, re.MULTILINE)
    for name in ("head_test_acc", "head_test_acc_flip_tta", "test_acc", "test_acc_flip_tta"):
        assert 0 <= float(fields[name]) <= 1, name
    run_dir = fields["run_dir"]
    for name in ("best.keras", "classes.json", "config.json", "curves.png", "confusion.png", "predictions.png",
                 "history.csv", "model.keras"):
        assert os.path.exists(os.path.join(run_dir, name)), name
    assert json.load(open(os.path.join(run_dir, "classes.json"))) == list(PHOTO_CLASSES)
    # Both phases in one history: epochs 0 and 1 (head), then 2 (fine-tuning).
    rows = open(os.path.join(run_dir, "history.csv")).read().strip().splitlines()
    assert [row.split(",")[0] for row in rows] == ["epoch", "0", "1", "2"]
    # Phase 2 trains more of the model than phase 1.
    counts = [int(n.replace(",", "")) for n in re.findall(r"([\d,]+) trainable", result.stdout)]
    assert len(counts) == 2 and counts[0] < counts[1]
    # Its batch normalisation kept the pretrained base's (before 2026-12-07 it
    # ran in training mode, its statistics and scales moving towards those of
    # batches of 8).
    trained = keras.models.load_model(os.path.join(run_dir, "model.keras")).get_layer("xception")
    pretrained = keras.applications.Xception(
        include_top=False, weights=None if weights == "none" else weights, input_shape=(71, 71, 3)
    )
    normalisations = [[layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
                      for model in (trained, pretrained)]
    assert len(normalisations[0]) == len(normalisations[1]) == 40
    for after, before in zip(*normalisations):
        for moved, kept in zip(after.get_weights(), before.get_weights()):
            np.testing.assert_array_equal(moved, kept, err_msg=after.name)

    # --predict finds the newest model by itself and names a class per photo.
    photos = [os.path.join(photo_dir, "owls", "000.jpg"), os.path.join(photo_dir, "cats", "001.jpg")]
    # (A trailing comma names no photo; it ended in "cannot read" of an empty path.)
    predicted = run_script("transfer_xception.py", f"--out_dir={out_dir}", f"--predict={','.join(photos)},")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    lines = predicted.stdout.strip().splitlines()
    assert len(lines) == 1 + len(photos)
    assert lines[0] == f"model     {os.path.join(run_dir, 'model.keras')}"
    for path, line in zip(photos, lines[1:]):
        name, probabilities = line.split(": ")
        assert name == path
        top = [part.split() for part in probabilities.split(", ")]
        assert len(top) == 3 and {c for c, _ in top} <= set(PHOTO_CLASSES)
        assert 1 >= float(top[0][1]) >= float(top[1][1]) >= float(top[2][1]) >= 0
    # A photo with commas in its name is one photo, not three missing ones,
    # alone or beside others.
    commas = tmp_path / "owl, 2, left.jpg"
    shutil.copy(photos[0], commas)
    # A training setting beside --predict is said to change nothing (the model's own size decides).
    predicted = run_script(
        "transfer_xception.py", "--image_size=150", f"--out_dir={out_dir}", f"--predict=,{photos[1]},{commas},", "--seed=3"
    )
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    lines = predicted.stdout.strip().splitlines()
    assert lines[0] == "note      --predict uses the trained model as it is; it ignores --image_size, --seed"
    assert [line.split(": ")[0] for line in lines[2:]] == [photos[1], str(commas)]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data_dir=/no/such/folder"], "does not exist"),
        (["--fine_tune_from=15"], "is not a block of Xception"),
        (["--image_size=32"], "Xception needs at least 71 pixels"),
        (["--test_split=0.9"], "leave photos for training"),
        (["--test_split=0"], "--test_split=0 leaves no test photos"),
        (["--fine_tune_epochs=-1"], "fine_tune_epochs must be >= 0"),
        (["--weights=/no/such/weights.h5"], "does not exist"),
        # The weights are checked before the photos are read.
        (["--weights=/no/such/weights.h5", "--data_dir=/no/such/folder"], "weights file"),
        (["--predict=photo.jpg"], "no trained model in"),
        (["--predict=,"], "--predict names no photo"),
        # An empty one (an unset shell variable, --predict=$PHOTO) trained a new model instead.
        (["--predict="], "--predict names no photo"),
        (["--predict=photo.jpg", "--model_file=/no/model.keras"], "/no/model.keras does not exist; give the model.keras"),
        # It said that the file "and the classes.json beside it must both exist", and the file does.
        (["--predict=photo.jpg", "--model_file=tests/conftest.py"], "tests/classes.json does not exist; give the model.keras"),
        (["--predict=photo.jpg", "--model_file=tests"], "tests is not a file; give the model.keras"),
        # Without --predict it trained a new model (18 to 33 minutes at the defaults) and ignored the file.
        (["--model_file=model.keras"], "--model_file=model.keras is the model that --predict uses; give --predict="),
        # The second run read the first one's folder as a class of photos ("class 'runs' has 3 photos").
        (["--out_dir={photos}/runs"], "--out_dir={photos}/runs lies inside --data_dir={photos}, whose folders are read"),
    ],
)
def test_transfer_bad_input_gives_one_clean_line(args, message, tmp_path):
    photo_dir = write_photo_tree(str(tmp_path / "photos"), per_class=12)
    out_dir = tmp_path / "runs"
    args, message = [arg.format(photos=photo_dir) for arg in args], message.format(photos=photo_dir)
    result = run_script("transfer_xception.py", f"--data_dir={photo_dir}", f"--out_dir={out_dir}", *args)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, result.stderr[-2000:]
    assert not run_folders(str(out_dir)) and not os.path.exists(os.path.join(photo_dir, "runs")), "a failed run must not leave a run folder"


def test_transfer_checks_the_split_before_decoding_and_only_where_it_splits(tmp_path):
    # --test_split=0.9 was refused once every photo had been decoded; and
    # then (860ad00) before looking, for folders of the user's own train/ and
    # test/ too, which take no test_split. Splits of other classes were found
    # out only once train/ had been decoded.
    def not_photos(folder):  # Decoding would stop at this class.
        for name in os.listdir(folder):
            with open(os.path.join(folder, name), "w") as f:
                f.write("not a photo")

    plain = write_photo_tree(str(tmp_path / "plain"), per_class=12)
    not_photos(os.path.join(plain, "owls"))
    others = tmp_path / "others"
    write_photo_tree(str(others / "train"), per_class=12)
    not_photos(others / "train" / "owls")
    write_photo_tree(str(others / "test"), classes=("cats", "dogs"), per_class=4)
    split = tmp_path / "split"
    write_photo_tree(str(split / "train"), per_class=12)
    not_photos(split / "train" / "owls")
    write_photo_tree(str(split / "test"), per_class=4)
    # A test_split given for a folder with its own test/ is said to go unused (config.json still lists it).
    note = "note      the folder's own test photos are the test set; --test_split is not used"
    for photo_dir, args, message, noted in (
        (plain, ["--test_split=0.9"], "--validation_split=0.15 and --test_split=0.9 must each be", False),
        (plain, ["--test_split=0"], "--test_split=0 leaves no test photos", False),
        (others, ["--test_split=0.9"], "every split needs the same class folders", False),
        (split, ["--test_split=0.9", "--weights=none", "--image_size=71"],
         f"the class folder {split}/train/owls holds no readable images", True),
    ):
        result = run_script("transfer_xception.py", f"--data_dir={photo_dir}", f"--out_dir={tmp_path / 'runs'}", *args)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert message in result.stderr.strip().splitlines()[-1], result.stderr[-2000:]
        assert (note in result.stdout) == noted


@needs_mobilenet
def test_transfer_refuses_another_networks_weights_before_decoding_the_photos(tmp_path):
    # MobileNet's weights, an HDF5 file, were found out only once every photo
    # had been decoded: minutes on the flowers, wasted.
    photo_dir = write_photo_tree(str(tmp_path / "photos"), per_class=12)
    for name in os.listdir(os.path.join(photo_dir, "owls")):  # Decoding would stop at this class.
        with open(os.path.join(photo_dir, "owls", name), "w") as f:
            f.write("not a photo")
    result = run_script(
        "transfer_xception.py", f"--data_dir={photo_dir}", f"--out_dir={tmp_path / 'runs'}", "--image_size=71",
        f"--weights={MOBILENET}",
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: could not load Xception weights from {MOBILENET} ("), result.stderr[-2000:]
    assert not run_folders(str(tmp_path / "runs"))


def test_transfer_predict_refuses_a_file_that_is_not_a_photo(tmp_path):
    photo_dir = write_photo_tree(str(tmp_path / "photos"), per_class=12)
    result = transfer(photo_dir, tmp_path / "runs", "--weights=none", "--epochs=1", "--fine_tune_epochs=0")
    assert result.returncode == 0, result.stderr[-3000:]
    model = os.path.join(final_fields(result.stdout)["run_dir"], "model.keras")
    bad = os.path.join(photo_dir, "cats", "notes.txt")
    predicted = run_script("transfer_xception.py", f"--predict={bad}", f"--model_file={model}")
    assert predicted.returncode != 0 and "Traceback" not in predicted.stderr
    assert predicted.stderr.strip().splitlines()[-1].startswith(f"error: {bad} is not a readable image")

    # A path of --predict may start with ~/ (the shell leaves --predict=~/a.jpg,~/b.jpg as it is).
    predicted = run_script(
        "transfer_xception.py", "--predict=,~/nosuch.jpg", f"--model_file={model}",
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert f"cannot read {tmp_path / 'nosuch.jpg'}" in predicted.stderr.strip().splitlines()[-1], predicted.stderr[-2000:]

    # A damaged model file is refused in one line too.
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "model.keras").write_bytes(b"PK\x03\x04 half a model")
    (damaged / "classes.json").write_text('["cats", "dogs", "owls"]')
    photo = os.path.join(photo_dir, "cats", "000.jpg")
    predicted = run_script("transfer_xception.py", f"--predict={photo}", f"--model_file={damaged / 'model.keras'}")
    assert predicted.returncode != 0 and "Traceback" not in predicted.stderr
    assert "is not a loadable Keras model (not a zip archive" in predicted.stderr.strip().splitlines()[-1]
    # A model with a layer Keras does not know: its message of several lines,
    # the whole model's config among them, is cut to its first.
    layers = [
        {"module": None, "class_name": "InputLayer", "config": {"batch_shape": [None, 8, 8, 3], "name": "input"}},
        {"module": None, "class_name": "NoSuchLayer", "config": {"name": "x"}, "registered_name": "Custom>NoSuchLayer"},
    ]
    config = {"module": "keras", "class_name": "Sequential", "config": {"name": "s", "layers": layers}}
    with zipfile.ZipFile(damaged / "model.keras", "w") as archive:
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("metadata.json", json.dumps({"keras_version": keras.__version__}))
    predicted = run_script("transfer_xception.py", f"--predict={photo}", f"--model_file={damaged / 'model.keras'}")
    assert predicted.returncode != 0 and "Traceback" not in predicted.stderr
    last = predicted.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "is not a loadable Keras model (" in last, predicted.stderr[-2000:]
    assert last.endswith("; train again or give another --model_file")

    # So is a classes.json that is not JSON, or one that names other classes
    # than the model predicts (both ended in tracebacks).
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(model, other / "model.keras")
    # JSON of another shape gave a KeyError or TypeError traceback, or a wrong class per letter of a string.
    for classes, message in (
        ("{not json", "cannot be read"),
        ('["cats", "dogs"]', "does not take photos to the 2"),
        ('{"cats": 0, "dogs": 1, "owls": 2}', "cannot be read (not a list of class names)"),
        ("3", "cannot be read (not a list of class names)"),
        ('"cdo"', "cannot be read (not a list of class names)"),
    ):
        (other / "classes.json").write_text(classes)
        predicted = run_script("transfer_xception.py", f"--predict={photo}", f"--model_file={other / 'model.keras'}")
        assert predicted.returncode != 0 and "Traceback" not in predicted.stderr
        assert message in predicted.stderr.strip().splitlines()[-1], predicted.stderr[-2000:]


@pytest.mark.parametrize("head_test_json", ["kept", "damaged"])
def test_transfer_killed_in_phase_2_resumes_there(head_test_json, tmp_path):
    photo_dir = write_photo_tree(str(tmp_path / "photos"), per_class=12)
    out_dir = str(tmp_path / "runs")
    args = [f"--data_dir={photo_dir}", f"--out_dir={out_dir}", *TINY_TRANSFER, "--weights=none", "--fine_tune_epochs=3"]
    # Killed in the first epoch of phase 2 (epochs=2 in phase 1), or, to
    # damage phase 1's score once phase 2 has saved a state, interrupted
    # (Ctrl-C) after it: the state of epoch 3 goes on being written in the
    # background, and is on disk once the process has ended.
    if head_test_json == "kept":
        printed = run_until_epoch("transfer_xception.py", *args, epoch=3)
    else:
        printed = run_until_epoch("transfer_xception.py", *args, epoch=4, how=signal.SIGINT)
    head_line = next(line for line in printed if line.startswith("phase 1   test_acc="))
    if head_test_json == "damaged":
        [run_dir] = run_folders(out_dir + "/transfer_xception")
        with open(os.path.join(run_dir, "head_test.json"), "r+") as f:
            f.truncate(10)

    result = run_script("transfer_xception.py", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resume    " in result.stdout
    assert "the new head trains" not in result.stdout  # Phase 1 is not trained again.
    fields = final_fields(result.stdout)
    if head_test_json == "kept":
        assert head_line in result.stdout  # Its test accuracy comes from the first run.
    else:
        # Phase 1's head is fine-tuned by now: its score is not made up again.
        assert re.search(r"after epoch [34]\b", result.stdout)  # In phase 2.
        assert "phase 1   test accuracy unknown: head_test.json is missing or damaged" in result.stdout
        assert "head_test_acc" not in fields
    assert fields["epochs"] == "5"
    rows = open(os.path.join(fields["run_dir"], "history.csv")).read().strip().splitlines()
    assert [row.split(",")[0] for row in rows] == ["epoch", "0", "1", "2", "3", "4"]


def test_transfer_refuses_to_resume_on_other_classes_and_keeps_the_runs_files(tmp_path):
    # A class folder added after the run was killed: classes.json was
    # rewritten with the new classes before the saved state was refused as
    # "another model".
    photo_dir = write_photo_tree(str(tmp_path / "photos"), classes=("cats", "dogs"), per_class=12)
    args = [f"--data_dir={photo_dir}", f"--out_dir={tmp_path / 'runs'}", *TINY_TRANSFER, "--weights=none"]
    run_until_epoch("transfer_xception.py", *args, epoch=1)
    [run_dir] = run_folders(str(tmp_path / "runs" / "transfer_xception"))
    kept = {name: open(os.path.join(run_dir, name), "rb").read() for name in ("classes.json", "config.json")}
    write_photo_tree(str(tmp_path / "photos"), classes=("owls",), per_class=12)

    result = run_script("transfer_xception.py", *args)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: the interrupted run in {run_dir} trained on the classes cats, dogs, but {photo_dir} now has "
        "cats, dogs, owls; put the folder back as it was to continue that run, or start a new one with another --out_dir"
    )
    assert {name: open(os.path.join(run_dir, name), "rb").read() for name in kept} == kept


@pytest.mark.parametrize("fine_tune_epochs", [1, 0])
def test_transfer_killed_before_scoring_phase_1_scores_it_on_resuming(fine_tune_epochs, tmp_path):
    # Killed once phase 1's training and its saved state are complete, but
    # before its test accuracy is written. Without phase 2 the test photos
    # are scored once, by the final line: phase 1's model is the final one.
    photo_dir = write_photo_tree(str(tmp_path / "photos"), per_class=12)
    args = [f"--data_dir={photo_dir}", *TINY_TRANSFER, "--weights=none", f"--fine_tune_epochs={fine_tune_epochs}"]
    resumed_args = [*args, f"--out_dir={tmp_path / 'runs'}"]
    after_phase_1 = "phase 1   scoring" if fine_tune_epochs else "phase 1   is all the training (--fine_tune_epochs=0)"
    killed = run_until("transfer_xception.py", *resumed_args, printed=lambda line: line.startswith(after_phase_1))

    result = run_script("transfer_xception.py", *resumed_args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resume    " in result.stdout and "after epoch 2" in result.stdout
    # The head gets its trained weights back from the saved state; the base
    # does not compute the photos' features again for a phase that is over.
    assert "the head has its trained weights back" in result.stdout
    assert "phase 1   features of" not in result.stdout
    fields = final_fields(result.stdout)
    assert fields["epochs"] == str(2 + fine_tune_epochs)
    assert ("head_test_acc" in fields) == bool(fine_tune_epochs)
    assert ("phase 1   scoring" in "".join(killed) + result.stdout) == bool(fine_tune_epochs)
    rows = open(os.path.join(fields["run_dir"], "history.csv")).read().strip().splitlines()
    assert [row.split(",")[0] for row in rows] == ["epoch", *map(str, range(2 + fine_tune_epochs))]

    # The same run uninterrupted: phase 1 scores the same (training on the
    # CPU is deterministic), and without phase 2 the saved model is the same.
    straight = run_script("transfer_xception.py", *args, f"--out_dir={tmp_path / 'straight'}")
    assert straight.returncode == 0, straight.stderr[-3000:]
    expected = final_fields(straight.stdout)
    for key in ("head_test_acc", "head_test_acc_flip_tta") if fine_tune_epochs else ("test_acc", "test_acc_flip_tta"):
        assert fields[key] == expected[key]
    if not fine_tune_epochs:
        for a, b in zip(load_run_model(fields["run_dir"]).get_weights(), load_run_model(expected["run_dir"]).get_weights()):
            np.testing.assert_array_equal(a, b)


# Keras 3 runs the same scripts on each of its backends. test_smoke covers the
# default one (TensorFlow); these run every script on the others that are
# installed, in a subprocess, since a process picks its backend once.
OTHER_BACKENDS = [
    pytest.param(name, marks=pytest.mark.skipif(not importlib.util.find_spec(name), reason=f"{name} not installed"))
    for name in ("jax", "torch")
]


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
@pytest.mark.parametrize("script", [*SCRIPTS, "transfer_xception.py"])
def test_every_script_runs_on_every_installed_backend(script, backend, dataset, tmp_path):
    out_dir = str(tmp_path / "runs")
    if script == "transfer_xception.py":
        data_dir, args = write_photo_tree(str(tmp_path / "photos"), per_class=12), [*TINY_TRANSFER, "--weights=none"]
    else:
        data_dir, args = dataset(SCRIPTS[script])[0], TINY
        if backend == "jax":
            # 5 full batches and a small one an epoch: two calls of 2 steps
            # in one (device._steps_in_one_call), then two steps alone.
            args = [*args, "--steps_per_execution=2"]
    result = run_script(script, f"--data_dir={data_dir}", f"--out_dir={out_dir}", *args, env={"KERAS_BACKEND": backend})
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"backend   {backend} " in result.stdout
    fields = final_fields(result.stdout)
    assert 0 <= float(fields["test_acc"]) <= 1 and int(fields["epochs"]) >= 2
    assert os.path.exists(os.path.join(fields["run_dir"], "model.keras"))
    # It trained: a row of finite losses for every epoch, and not the same loss twice.
    losses = read_history(os.path.join(fields["run_dir"], "history.csv"))["loss"]
    assert len(losses) == int(fields["epochs"]) and np.isfinite(losses).all() and len(set(losses)) == len(losses)


# Two logical devices on the CPU through TensorFlow's own mechanism: it splits
# the CPU in-process, before it starts. (JAX's way, XLA_FLAGS=
# --xla_force_host_platform_device_count=2, trains to the same accuracy too,
# but on this 2-core machine XLA's in-process all-reduce sometimes waits past
# its 40 s limit and aborts the process, so it is not a test; see docs/devices.md.)
_TWO_TF_CPUS = """
import runpy, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.argv = sys.argv[1:]
namespace = runpy.run_path(sys.argv[0], run_name="__main__")
print("replicas", namespace["model"].distribute_strategy.num_replicas_in_sync, file=sys.stderr)
"""


def on_two_devices(backend, script, *args):
    """Runs a script with the CPU split into two devices: TensorFlow's logical
    CPUs (_TWO_TF_CPUS), or XLA's on JAX. (The JAX runs here stop before
    training, which on this machine is not reliable; see above.)"""
    script = os.path.join(REPO, script)
    if backend == "tensorflow":
        command, env = [sys.executable, "-c", _TWO_TF_CPUS, script, *args], {"PYTHONPATH": REPO}
    else:
        command, env = [sys.executable, script, *args], {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, "KERAS_BACKEND": backend, **env})


@needs_real_mnist
def test_two_devices_train_data_parallel_to_the_same_accuracy(tmp_path):
    args = [f"--data_dir={REAL_MNIST}", "--train_samples=6000", "--epochs=3", "--batch_size=100"]
    one = run_script("mnist_mlp.py", *args, f"--out_dir={tmp_path / 'one'}", env={"KERAS_BACKEND": "tensorflow"})
    two = on_two_devices("tensorflow", "mnist_mlp.py", *args, f"--out_dir={tmp_path / 'two'}")
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    assert "data-parallel" not in one.stdout
    assert "data-parallel over 2 devices (MirroredStrategy)" in two.stdout
    assert "replicas 2" in two.stderr.splitlines()  # The model was built under the strategy.
    # Each device computes the gradient of half of every batch; together they
    # take the same steps as one device, up to the order of the additions.
    accuracy_one, accuracy_two = (float(final_fields(r.stdout)["test_acc"]) for r in (one, two))
    assert accuracy_one > 0.9
    assert accuracy_two == pytest.approx(accuracy_one, abs=0.005)


# Every batch, the smaller last ones too, must split between the devices.
# The synthetic sets: MNIST's 216 training and 24 validation images (207 and
# 23 with --train_samples=230, 201 and 22 with 223), CIFAR-10's 36 and 4,
# and the photos' 24 and 6, whose first phase trains on 48 (with mirror images).
@pytest.mark.parametrize(
    "script, backend, args, sizes",
    [
        ("mnist_mlp.py", "tensorflow", ["--batch_size=7"], "3, 6, 7"),
        pytest.param("mnist_mlp.py", "jax", ["--batch_size=8", "--train_samples=230"], "7, 8", marks=needs_jax),
        # On TensorFlow a last batch of 1 left one device none, and batch
        # normalisation ended in a traceback.
        ("mnist_cnn.py", "tensorflow", ["--batch_size=8", "--train_samples=223"], "1, 6, 8"),
        ("cifar10_cnn.py", "tensorflow", ["--batch_size=7"], "1, 4, 7"),
        ("resnet34.py", "tensorflow", ["--batch_size=7"], "1, 4, 7"),
        ("transfer_xception.py", "tensorflow", [*TINY_TRANSFER, "--weights=none", "--batch_size=7"], "3, 6, 7"),
        pytest.param("transfer_xception.py", "jax", [*TINY_TRANSFER, "--weights=none", "--batch_size=5"], "1, 3, 4, 5",
                     marks=needs_jax),
    ],
)
def test_batches_that_do_not_split_over_the_devices_stop_before_the_run_folder_is_made(
    script, backend, args, sizes, dataset, tmp_path
):
    # The check ran after the run folder (with its config.json) had been
    # made, on TensorFlow not at all (a batch of 7 over two CPUs ended in a
    # traceback from inside the first step), and in transfer_xception.py
    # nowhere.
    if script == "transfer_xception.py":
        data_dir = write_photo_tree(str(tmp_path / "photos"), per_class=12)
    else:
        data_dir, _ = dataset(SCRIPTS[script])
    out_dir = tmp_path / "runs"
    result = on_two_devices(backend, script, f"--data_dir={data_dir}", f"--out_dir={out_dir}", "--epochs=2", *args)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "data-parallel over 2 devices" in result.stdout
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: batches of {sizes} examples do not split evenly over 2 devices; "
        "choose a --batch_size that divides by 2 and leaves last batches that do too"
    )
    assert not out_dir.exists()


def test_transfer_trains_both_phases_over_two_devices_and_resumes(tmp_path):
    # Its phases compiled the head and then the whole model outside the
    # strategy's scope: "Mixing different tf.distribute.Strategy objects".
    # Killed in phase 2 (two epochs of phase 1, then three), the run resumes
    # there, its whole model put back over both devices.
    photo_dir = write_photo_tree(str(tmp_path / "photos"), per_class=12)
    args = [f"--data_dir={photo_dir}", f"--out_dir={tmp_path / 'runs'}", *TINY_TRANSFER, "--fine_tune_epochs=3",
            "--patience=5", "--weights=none"]
    killed = run_until("transfer_xception.py", *args, printed=lambda line: line.split()[:1] == ["5"],
                       python_args=("-c", _TWO_TF_CPUS))
    assert "data-parallel over 2 devices (MirroredStrategy)" in killed[0]
    result = on_two_devices("tensorflow", "transfer_xception.py", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "replicas 2" in result.stderr.splitlines()
    resumed = re.search(r"^resume    .* after epoch (\d+)$", result.stdout, re.MULTILINE)
    assert resumed and int(resumed.group(1)) in (3, 4), result.stdout  # The state of epoch 4 may not be written yet.
    rows = [line.split()[0] for line in result.stdout.splitlines() if re.match(r"^ +\d+ ", line)]
    assert rows[-1] == "5" and "1" not in rows
    fields = final_fields(result.stdout)
    assert int(fields["epochs"]) == 5 and "head_test_acc" in fields


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _run_two_processes(script, *args, timeout=600):
    """Runs a script as the two processes of one run on JAX, on this machine
    standing in for two machines; returns [(returncode, stdout, stderr)]."""
    address = f"localhost:{_free_port()}"
    processes = [
        subprocess.Popen(
            [sys.executable, os.path.join(REPO, script), *args], cwd=REPO, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "KERAS_BACKEND": "jax", "KERAS_DISTRIBUTION_JOB_ADDRESSES": address,
                 "KERAS_DISTRIBUTION_NUM_PROCESSES": "2", "KERAS_DISTRIBUTION_PROCESS_ID": str(index)},
        )
        for index in (0, 1)
    ]
    try:
        outputs = [process.communicate(timeout=timeout) for process in processes]
    finally:
        for process in processes:
            process.kill()
    return [(process.returncode, stdout, stderr) for process, (stdout, stderr) in zip(processes, outputs)]


@needs_real_mnist
@needs_jax
def test_two_processes_train_as_one_machine_would(tmp_path):
    # Two processes on this machine stand in for two machines: each reads
    # its half of the data, and passes half of each global batch of 100.
    args = [f"--data_dir={REAL_MNIST}", "--train_samples=6000", "--epochs=3", f"--out_dir={tmp_path}"]
    outputs = _run_two_processes("mnist_mlp.py", *args, "--batch_size=50")
    for returncode, stdout, stderr in outputs:
        assert returncode == 0, stderr[-3000:]
        assert "data-parallel over 2 devices in 2 processes (keras.distribution)" in stdout
        assert "x_train (2700, 784) | x_val (300, 784) | x_test (10000, 784)" in stdout
    first, second = (final_fields(stdout) for _, stdout, _ in outputs)
    # Each process keeps its own run folder, and both end with the same model.
    assert second["run_dir"].endswith("-process1") and not first["run_dir"].endswith("-process1")
    assert first["test_acc"] == second["test_acc"]
    one = run_script("mnist_mlp.py", *args, "--batch_size=100", env={"KERAS_BACKEND": "jax"})
    assert one.returncode == 0, one.stderr[-3000:]
    accuracy_one = float(final_fields(one.stdout)["test_acc"])
    assert accuracy_one > 0.9
    assert float(first["test_acc"]) == pytest.approx(accuracy_one, abs=0.005)


@needs_jax
@pytest.mark.parametrize(
    "setting, message",
    [
        # Each machine would compute the frozen layer from its own share of
        # the training images.
        ("--whiten=True", "error: --whiten=True computes the whitening layer from"),
        # The images would have to be moved from one device to the others.
        ("--resident=True", "error: --resident=True keeps the training images on one device, and this run trains on several"),
    ],
)
def test_one_machine_settings_over_several_machines_stop_with_one_line(setting, message, dataset, tmp_path):
    data_dir, _ = dataset("cifar10")
    out_dir = tmp_path / "runs"
    outputs = _run_two_processes("cifar10_cnn.py", f"--data_dir={data_dir}", f"--out_dir={out_dir}", setting, *TINY)
    for returncode, _, stderr in outputs:
        assert returncode != 0 and "Traceback" not in stderr
        assert stderr.strip().splitlines()[-1].startswith(message)
    assert not out_dir.exists()


def _one_of_two_jax_processes(process_id, address=None):
    """A case of the test below: process `process_id` of two on JAX, with
    `address` as KERAS_DISTRIBUTION_JOB_ADDRESSES (None: unset)."""
    env = {"KERAS_BACKEND": "jax", "KERAS_DISTRIBUTION_NUM_PROCESSES": "2", "KERAS_DISTRIBUTION_PROCESS_ID": process_id}
    if address is not None:
        env["KERAS_DISTRIBUTION_JOB_ADDRESSES"] = address
    return pytest.param(
        env, "error: KERAS_DISTRIBUTION_NUM_PROCESSES=2 needs KERAS_DISTRIBUTION_JOB_ADDRESSES", marks=needs_jax
    )


@pytest.mark.parametrize(
    "env, message",
    [
        ({"KERAS_BACKEND": "tensorflow", "TF_CONFIG": '{"cluster": {}}'}, "error: TF_CONFIG is set, but Keras 3 cannot"),
        ({"KERAS_DISTRIBUTION_NUM_PROCESSES": "two"}, "error: KERAS_DISTRIBUTION_NUM_PROCESSES='two' is not a number"),
        ({"KERAS_BACKEND": "tensorflow", "KERAS_DISTRIBUTION_NUM_PROCESSES": "2"},
         "error: KERAS_DISTRIBUTION_NUM_PROCESSES=2: training over several machines needs the JAX backend"),

        # One of two processes on JAX whose address or id cannot work: no address,
        _one_of_two_jax_processes("0"),
        # an id beyond the processes,
        _one_of_two_jax_processes("2", "localhost:1"),
        # a port that is not a number (gRPC ended the process with a segmentation fault),
        _one_of_two_jax_processes("0", "localhost:abc"),
        # and such a port first of several addresses (Keras takes the first).
        _one_of_two_jax_processes("0", "localhost:abc,localhost:1234"),
        # A digit that int() cannot read: a ValueError traceback.
        ({"KERAS_DISTRIBUTION_NUM_PROCESSES": "\u00b2"}, "error: KERAS_DISTRIBUTION_NUM_PROCESSES='\u00b2' is not a number"),
        # A platform this machine lacks: a RuntimeError traceback.
        pytest.param({"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cuda"},
                     "error: JAX could not start its devices (",
                     marks=needs_jax),
    ],
)
def test_several_machines_settings_that_cannot_work_stop_with_one_line(env, message, mnist_dir, tmp_path):
    out_dir = tmp_path / "runs"
    result = run_script("mnist_mlp.py", f"--data_dir={mnist_dir}", f"--out_dir={out_dir}", *TINY, env=env)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(message)
    assert not out_dir.exists()
