import os

import pytest

from common import files


class Model:
    """What save_model needs of a Keras model: a save method that writes the file."""

    def save(self, path):
        with open(path, "wb") as f:
            f.write(b"a whole model")


def test_a_crash_while_saving_keeps_the_previous_model(tmp_path):
    path = str(tmp_path / "model.keras")
    model = Model()
    files.save_model(model, path)
    before = open(path, "rb").read()

    def crash(tmp):
        open(tmp, "wb").write(b"half a model")
        raise OSError("disk full")

    model.save = crash
    with pytest.raises(OSError):
        files.save_model(model, path)
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["model.keras"]  # The half-written copy is gone.


def test_figures_are_shown_one_way_on_the_final_line_and_in_compare():
    assert files.shown("train_seconds", 12.345) == "12.3"
    assert files.shown("train_seconds", 12) == "12.0"  # A hand-written whole number of seconds.
    assert files.shown("test_acc", 0.98765) == "0.9877"
    assert files.shown("epochs", 12) == "12"
    assert files.shown("epochs", None) == "unknown"
    assert files.shown("test_acc", "0.9000") == "0.9000"  # result.json before 2026-12-05.
    assert files.shown("test_acc", True) == "True"


def test_figures_are_read_back_only_when_they_are_named_numbers(tmp_path):
    path = str(tmp_path / "head_test.json")
    files.write_json(path, {"test_acc": 0.9, "test_acc_flip_tta": 1})
    assert files.read_figures(path) == {"test_acc": 0.9, "test_acc_flip_tta": 1}
    for damaged in ('{"test_acc": 0.', "[0.9]", "{}", '{"test_acc": "0.9"}', '{"test_acc": true}'):
        with open(path, "w") as f:
            f.write(damaged)
        assert files.read_figures(path) is None, damaged
    assert files.read_figures(str(tmp_path / "missing.json")) is None


def test_the_error_that_stopped_a_write_is_the_one_raised(tmp_path, monkeypatch):
    def disk_full(tmp):
        open(tmp, "wb").write(b"half a file")
        raise OSError(28, "No space left on device")

    def read_only(path):  # The file system went read-only: the copy cannot be removed either.
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(files.os, "remove", read_only)
    with pytest.raises(OSError, match="No space left on device"):
        files.write_atomically(str(tmp_path / "result.json"), disk_full)


def test_a_history_of_zero_bytes_is_not_a_table(tmp_path):
    # What a crash can leave of a file: a field longer than csv allows.
    path = tmp_path / "history.csv"
    path.write_bytes(b"\0" * 200_000)
    with pytest.raises(ValueError, match="not a table"):
        files.read_history(str(path))


def test_the_epochs_of_a_history_are_its_rows_whatever_its_columns(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,accuracy,loss\n0,0.5,1.2\n1,0.7,0.9\n\n2,0.8,0.6\n")
    assert files.epochs_in(files.read_history(str(path))) == 3
    path.write_text("epoch,val_loss\n0,1.0\n")  # No loss column: the epochs are counted all the same.
    assert files.epochs_in(files.read_history(str(path))) == 1
    assert files.epochs_in(files.parse_history([])) == 0
