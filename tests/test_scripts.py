"""Each script run as a user would: tiny smoke runs, bad inputs, real data."""

import json
import os

import keras
import numpy as np
import pytest

from conftest import SHARED_DATA, final_fields, run_script, synthetic_mnist

SCRIPTS = ["mnist_mlp.py", "mnist_cnn.py"]
TINY = ["--train_samples=200", "--epochs=2", "--batch_size=32"]


def run_folders(out_dir):
    return [os.path.join(root, d) for root, dirs, _ in os.walk(out_dir) for d in dirs]


@pytest.mark.parametrize("script", SCRIPTS)
def test_smoke(script, mnist_dir, tmp_path):
    out_dir = str(tmp_path / "runs")
    result = run_script(script, f"--data_dir={mnist_dir}", f"--out_dir={out_dir}", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    fields = final_fields(result.stdout)
    assert 0 <= float(fields["test_acc"]) <= 1 and float(fields["train_seconds"]) > 0

    run_dir = fields["run_dir"]
    assert run_dir.startswith(os.path.join(out_dir, script[:-3]))
    for name in ("config.json", "history.csv", "curves.png", "model.keras"):
        assert os.path.exists(os.path.join(run_dir, name)), name
    config = json.load(open(os.path.join(run_dir, "config.json")))
    assert config["epochs"] == 2 and config["train_samples"] == 200
    assert config["data_dir"] == mnist_dir
    assert len(open(os.path.join(run_dir, "history.csv")).read().strip().splitlines()) == 1 + 2

    # The saved model reloads and scores the reported test accuracy.
    model = keras.saving.load_model(os.path.join(run_dir, "model.keras"))
    _, (x_test, y_test) = synthetic_mnist()
    x_test = x_test.reshape((len(x_test),) + model.input_shape[1:]).astype("float32") / 255
    accuracy = np.mean(np.argmax(model.predict(x_test, verbose=0), axis=1) == y_test)
    assert accuracy == pytest.approx(float(fields["test_acc"]), abs=1e-4)


def test_cnn_keeps_the_best_checkpoint(mnist_dir, tmp_path):
    result = run_script(
        "mnist_cnn.py", f"--data_dir={mnist_dir}", f"--out_dir={tmp_path}", *TINY
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.path.exists(os.path.join(final_fields(result.stdout)["run_dir"], "best.keras"))


def corrupt_npz(tmp_path):
    folder = tmp_path / "corrupt"
    folder.mkdir()
    (folder / "mnist.npz").write_bytes(b"PK\x03\x04 truncated")
    return str(folder)


BAD_INPUTS = {
    "unknown key": (["--epoch=3"], "unknown setting --epoch; valid keys:"),
    "wrong type": (["--batch_size=big"], "--batch_size=big is not an integer"),
    "impossible value": (["--epochs=0"], "epochs must be > 0"),
    "missing folder": (["--data_dir=/no/such/folder"], "is not a folder"),
    "corrupt file": (None, "mnist.npz is not a readable npz file"),
}


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_gives_one_clean_line(script, case, tmp_path):
    args, message = BAD_INPUTS[case]
    if args is None:
        args = [f"--data_dir={corrupt_npz(tmp_path)}"]
    out_dir = tmp_path / "runs"
    result = run_script(script, *args, f"--out_dir={out_dir}")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, result.stderr[-2000:]
    assert not run_folders(str(out_dir)), "a failed run must not leave a run folder"


def test_help_lists_every_shared_setting():
    result = run_script("mnist_mlp.py", "--help")
    assert result.returncode == 0
    for key in ("data_dir", "epochs", "batch_size", "learning_rate", "seed", "out_dir",
                "validation_split", "train_samples"):
        assert f"--{key}=" in result.stdout, key


@pytest.mark.skipif(
    not os.path.exists(os.path.join(SHARED_DATA, "mnist", "mnist.npz")),
    reason="real MNIST copy not found (set SHARED_DATA)",
)
def test_mlp_learns_real_mnist_in_one_epoch(tmp_path):
    result = run_script(
        "mnist_mlp.py",
        f"--data_dir={os.path.join(SHARED_DATA, 'mnist')}",
        f"--out_dir={tmp_path}",
        "--epochs=1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert float(final_fields(result.stdout)["test_acc"]) >= 0.96
