"""python -m common.compare: the table and the picture over several runs."""

import json
import os
import re
import subprocess
import sys

import keras
import pytest

from common import output
from common.compare import label, main, table
from common.files import read_history
from conftest import REPO
from test_output import tiny_data, tiny_model


def make_run(out_dir, finish=True, **settings):
    config = {"out_dir": str(out_dir), "epochs": 3, "dropout": 0.2, **settings}
    run = output.Run("tiny", config)
    keras.utils.set_random_seed(0)
    model = tiny_model()
    x, y = tiny_data()
    model.fit(x, y, epochs=config["epochs"], validation_data=(x, y), callbacks=run.callbacks(), verbose=0)
    if finish:
        run.finish(model, x, y)
    return run.dir


def compare(*args):
    return subprocess.run(
        [sys.executable, "-m", "common.compare", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_compare_tabulates_what_differs_and_draws_every_run(tmp_path):
    runs = [
        make_run(tmp_path / "a", epochs=2),
        make_run(tmp_path / "b", epochs=3),
        make_run(tmp_path / "c", epochs=3, finish=False),  # Interrupted: no result yet.
    ]
    # Stopped before its first epoch ended: settings only.
    runs.append(output.Run("tiny", {"out_dir": str(tmp_path / "d"), "epochs": 4, "dropout": 0.2}).dir)
    out = tmp_path / "cmp.png"
    result = compare(*runs, f"--out={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    header = lines[0].split()
    # Only the setting that differs gets a column; out_dir never does.
    assert header[:2] == ["run", "epochs"] and "dropout" not in header and "out_dir" not in header
    assert header[-2:] == ["epochs", "run"]  # Not a second "epochs" column, beside the setting's.
    rows = [line.split() for line in lines[2:6]]
    # Each run is named by its script and its folder: runs of several scripts stay apart.
    assert [row[0] for row in rows] == [f"tiny/{os.path.basename(run)}" for run in runs]
    # Every cell starts where the dashes under its heading start.
    starts = [match.start() for match in re.finditer(r"-+", lines[1])]
    for line in [lines[0], *lines[2:6]]:
        assert all(line[i] != " " and line[i - 2 : i] in ("", "  ") for i in starts), line
    assert [row[1] for row in rows] == ["2", "3", "3", "4"]
    assert [row[-1] for row in rows] == ["2", "3", "3", "0"]  # Epochs in each history.
    assert rows[2][-3] == "unfinished" and rows[3][-3] == "unfinished" and rows[0][-3] != "unfinished"
    assert os.path.getsize(out) > 5000
    assert lines[-1] == f"wrote     {out}"


def test_the_picture_draws_a_line_per_run_labelled_with_what_differs(tmp_path, figures):
    runs = [make_run(tmp_path / "a", epochs=2), make_run(tmp_path / "b", epochs=3)]
    figures.clear()  # The runs' own plots.
    main([*runs, f"--out={tmp_path / 'cmp.png'}"])
    (figure,) = figures
    for ax, column in zip(figure.axes, ("val_accuracy", "val_loss")):
        lines = ax.get_lines()
        assert [list(line.get_ydata()) for line in lines] == [
            pytest.approx(read_history(os.path.join(run, "history.csv"))[column]) for run in runs
        ]
        for line, run, epochs in zip(lines, runs, (2, 3)):
            assert line.get_label().startswith(f"tiny/{os.path.basename(run)} epochs={epochs} | test_acc=0.")


def test_the_table_gives_the_best_and_the_last_validation_accuracy():
    history = {"loss": [1.0, 0.8, 0.7], "val_accuracy": [0.5, 0.9, 0.7]}
    run = {"name": "a", "config": {"epochs": 3}, "history": history, "result": {"test_acc": "0.8800", "train_seconds": 4.2}}
    lines = table([run], []).splitlines()
    assert lines[0].split() == ["run", "best", "val_acc", "last", "val_acc", "test_acc", "train", "s", "epochs", "run"]
    assert lines[2].split() == ["a", "0.9000", "0.7000", "0.8800", "4.2", "3"]
    history["val_accuracy"][0] = float("nan")  # An epoch that logged none (NA in history.csv).
    assert table([run], []).splitlines()[2].split()[1] == "0.9000"


def test_a_label_holds_only_characters_that_can_be_drawn():
    # A data_dir that is not UTF-8, as Python reads it: Matplotlib raised a TypeError.
    run = {"name": "mnist_mlp/1", "config": {"data_dir": os.fsdecode(b"/data/caf\xe9")}, "result": {}}
    assert label(run, ["data_dir"]) == "mnist_mlp/1 data_dir=/data/caf\\udce9"


def test_a_label_names_the_differing_settings_and_a_finished_runs_test_accuracy():
    run = {"name": "cifar10_cnn/1", "config": {"epochs": 3, "l2": 5e-4, "seed": 0}, "result": {"test_acc": 0.85}}
    assert label(run, ["l2", "seed"]) == "cifar10_cnn/1 l2=0.0005 seed=0 | test_acc=0.8500"
    assert label({**run, "result": {}}, ["l2"]) == "cifar10_cnn/1 l2=0.0005"  # Unfinished: no test accuracy yet.
    assert label(run, []) == "cifar10_cnn/1 | test_acc=0.8500"  # No setting differs.


@pytest.mark.slow
def test_help_prints_the_usage_and_exits_zero():
    for flag in ("--help", "-h"):
        result = compare(flag)
        assert result.returncode == 0 and result.stdout.startswith("Compares finished or interrupted runs")
        assert "python -m common.compare runs/mnist_cnn/*" in result.stdout


@pytest.mark.slow
def test_a_file_or_a_folder_without_settings_among_runs_is_left_out(tmp_path):
    # `python -m common.compare runs/tiny/*` after `--out=runs/tiny/cmp.png`
    # (allowed: runs/tiny is no run folder) stopped at "cmp.png is not a run folder".
    run = make_run(tmp_path)
    parent = os.path.dirname(run)
    open(os.path.join(parent, "cmp.png"), "wb").close()
    os.mkdir(os.path.join(parent, "killed"))  # A run stopped before it wrote config.json.
    paths = sorted(os.path.join(parent, name) for name in os.listdir(parent))
    result = compare(*paths, f"--out={tmp_path / 'b.png'}")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[:2] == [
        f"note      {parent}/cmp.png holds no config.json, so it is not a run folder: left out",
        f"note      {parent}/killed holds no config.json, so it is not a run folder: left out",
    ]
    assert lines[4].startswith(f"tiny/{os.path.basename(run)} ")
    # A path that does not exist is a typo, not left out: no glob makes one.
    result = compare(*paths, f"{parent}/typo", f"--out={tmp_path / 'b.png'}")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {parent}/typo does not exist; give run folders such as runs/mnist_cnn/<run id>"
    )
    result = compare(os.path.join(parent, "cmp.png"), os.path.join(parent, "killed"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: none of the 2 paths given is a run folder; give folders such as runs/mnist_cnn/<run id> that hold config.json"
    )


@pytest.mark.slow
def test_a_folder_that_is_not_a_run_is_one_line(tmp_path):
    result = compare(str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path} is not a run folder")
    result = compare()
    assert result.stderr.strip().splitlines()[-1].startswith("error: no run folders given")
    run = make_run(tmp_path / "runs")
    (tmp_path / "a folder.png").mkdir()  # A path that cannot be written as a file.
    result = compare(run, f"--out={tmp_path / 'a folder.png'}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: cannot write {tmp_path / 'a folder.png'} (Is a directory); give a writable --out=path.png"
    )
    with open(os.path.join(run, "result.json"), "w") as f:
        f.write("{half a file")
    result = compare(run)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {run}/result.json is damaged")


@pytest.mark.slow
def test_damaged_files_of_a_run_and_a_bad_out_are_one_line(tmp_path):
    # Each ended in a traceback, or wrote elsewhere than it said.
    run = make_run(tmp_path / "runs")
    history = os.path.join(run, "history.csv")
    other = make_run(tmp_path / "other")
    cases = [
        ("--out=cmp.txt", "--out=cmp.txt is not an image file's path; give e.g. --out=compare.png (or .svg, .pdf)"),
        ("--out=", "--out= is not an image file's path; give e.g. --out=compare.png (or .svg, .pdf)"),
        ("--out=noext", "--out=noext is not an image file's path; give e.g. --out=compare.png (or .svg, .pdf)"),
        # The table was printed first.
        (f"--out={tmp_path}/nosuch/cmp.png",
         f"--out={tmp_path}/nosuch/cmp.png is in a folder that does not exist, {tmp_path}/nosuch; make it, or give another --out"),
        # Any run folder, compared or not: its own plot stays.
        (f"--out={other}/curves.png", f"--out={other}/curves.png would write into the run folder {other}; "
                                      "give --out a path outside run folders"),
    ]
    for arg, line in cases:
        result = compare(run, arg)
        assert result.returncode == 1 and result.stderr.strip().splitlines()[-1] == f"error: {line}"
        assert result.stdout == ""  # Before the table.
    assert compare(run, f"--out={tmp_path / 'cmp.SVG'}").returncode == 0
    # Matplotlib writes .pgf with LaTeX, where it is installed: a traceback where it is not,
    # and a partly written file was left at the path.
    (tmp_path / "cmp.pgf").write_text("an earlier comparison")
    result = compare(run, f"--out={tmp_path / 'cmp.pgf'}")
    assert result.returncode == 0 or (
        result.stderr.strip().splitlines()[-1].startswith(f"error: cannot write {tmp_path / 'cmp.pgf'} (")
        and (tmp_path / "cmp.pgf").read_text() == "an earlier comparison"
        and not os.path.exists(tmp_path / "cmp.pgf.tmp")
    ), result.stderr[-2000:]
    for name, text, line in [
        ("result.json", "[]", "result.json is damaged (it holds no figures)"),
        # A traceback in the plot, after the table.
        ("result.json", '{"test_acc": 0.5, "phase_starts": 7}', "result.json is damaged (its phase_starts, 7, are not epochs)"),
        ("result.json", '{"phase_starts": [[1]]}', "result.json is damaged (its phase_starts, [[1]], are not epochs)"),
        ("history.csv", open(history).read() + "4,0.7\n", "history.csv is damaged (row 4 has 2 values"),
        # Emptied after the run finished: "0 epochs run", and no curve.
        ("history.csv", "", "history.csv is damaged (it holds 0 epochs where result.json counts 3)"),
        ("config.json", '"abc"', "is not a run folder (its config.json holds no settings)"),
    ]:
        before = open(os.path.join(run, name)).read()
        open(os.path.join(run, name), "w").write(text)
        result = compare(run, f"--out={tmp_path / 'cmp.png'}")
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert line in result.stderr.strip().splitlines()[-1]
        open(os.path.join(run, name), "w").write(before)
    os.rename(history, history + ".away")
    result = compare(run, f"--out={tmp_path / 'cmp.png'}")
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1] == (
        f"error: {history} is missing, and result.json counts 3 epochs; leave that run out of the comparison")
    os.rename(history + ".away", history)
    # Figures as numbers (since 2026-12-05) and as text (before), each shown as the final line shows it.
    for text in ('{"test_acc": 0.9, "train_seconds": 12}', '{"test_acc": "0.9000", "train_seconds": "12.0"}'):
        open(os.path.join(run, "result.json"), "w").write(text)
        result = compare(run, f"--out={tmp_path / 'cmp.png'}")
        assert result.returncode == 0 and re.search(r" 0\.9000 +12\.0 ", result.stdout), result.stdout


def test_a_finished_run_writes_its_result(tmp_path):
    folder = make_run(tmp_path)
    result = json.load(open(os.path.join(folder, "result.json")))
    assert result["script"] == "tiny" and 0 <= result["test_acc"] <= 1 and result["epochs"] == 3
    # Numbers, not the text of the final line (they were strings before 2026-12-05).
    assert all(isinstance(result[key], float) for key in ("test_acc", "test_loss", "train_seconds"))
