"""The benchmark commands end to end, on tiny synthetic MNIST and photo folders."""

import ast
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time

import keras
import pytest

import benchmarks
from benchmarks import WHITENED_TUNED
import benchmarks.__main__ as benchmark
from benchmarks.__main__ import SUITES, invocation, seconds_to, table, target_and_budget
from common import UserError, config, device
from conftest import MOBILENET, REPO, ctrl_c_works, needs_mobilenet, write_mnist_npz, write_photo_tree


@pytest.mark.slow
def test_the_benchmark_runs_seed_and_scripts_side_by_side(tmp_path):
    write_mnist_npz(str(tmp_path / "data" / "mnist"))
    out_dir = tmp_path / "results"
    # Started elsewhere than the repository, with paths relative to there (the
    # runs start in the repository, and wrote into <repo>/runs before).
    # A runs_dir with a space: the run folder on each script's final line
    # was split at it (a traceback); with an é and an ASCII-only stdout, it
    # came back with an escape in place of the é (a FileNotFoundError).
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--tasks=mnist_mlp", "--seeds=2",
         "--data_dir=data", "--out_dir=results", "--runs_dir=my runs é"],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
        env={**os.environ, "PYTHONPATH": REPO, "PYTHONIOENCODING": "ascii"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stems = {name.rsplit(".", 1)[0] for name in os.listdir(out_dir)}
    assert len(stems) == 1
    stem = os.path.join(out_dir, stems.pop())
    started, *runs = [json.loads(line) for line in open(stem + ".jsonl")]
    # First the machine, then the seed and two configurations of the script, two seeds each.
    assert started["cores"] == os.cpu_count() and started["suite"] == "cpu"
    assert len(runs) == 6 and sorted({run["seed"] for run in runs}) == [0, 1]
    methods = sorted({run["method"] for run in runs})
    assert len(methods) == 3 and any(name.startswith("seed MLP") for name in methods)
    for run in runs:
        # Into a folder of this benchmark run's own, so that no earlier run is resumed.
        # Quoted, so that the command pastes back into a shell as one.
        assert f"--out_dir={tmp_path / 'my runs é' / os.path.basename(stem)}" in shlex.split(run["command"])
        assert 0 <= run["test_acc"] <= 1 and run["train_seconds"] > 0 and run["peak_mb"] > 50
        assert 0 <= run["outside_epochs_seconds"] < run["train_seconds"]
        assert len(run["val_accuracy"]) == len(run["epoch_seconds"]) == run["epochs"]
    report = open(stem + ".md").read()
    assert report.startswith("Measured ")
    # The devices and versions as the runs' own `backend` lines gave them.
    assert f" Backend: {keras.backend.backend()} " in report and f"| keras {keras.__version__} | devices CPU " in report
    for name in methods:
        assert f"| {name} | 2 |" in report
    assert "at most a third of its time: **" in report
    assert os.path.getsize(stem + ".png") > 1000


def test_every_run_shares_the_compilation_cache_unless_the_user_names_one(monkeypatch):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    task = SUITES["cpu"]["mnist_mlp"]
    # The seed baselines compile before their clock starts too, so a cache
    # shortens their compiling, not their training seconds.
    for method in (task.baseline, task.methods[0]):
        assert invocation(method, "/tmp/cache")[1]["JAX_COMPILATION_CACHE_DIR"] == "/tmp/cache"
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/tmp/mine")
    assert invocation(task.baseline, "/tmp/cache")[1]["JAX_COMPILATION_CACHE_DIR"] == "/tmp/mine"


def test_the_target_and_the_seconds_allowed_are_the_suites_or_the_seeds():
    # The table's verdict and the plot's dashed and dotted lines read these.
    cpu = SUITES["cpu"]["mnist_mlp"]
    runs = [
        {"method": cpu.baseline.name, "test_acc": 0.97, "train_seconds": 30.0},
        {"method": cpu.baseline.name, "test_acc": 0.98, "train_seconds": 60.0},
        {"method": cpu.methods[0].name, "test_acc": 0.99, "train_seconds": 3.0},
    ]
    target, seconds = target_and_budget(cpu, runs)
    assert target == pytest.approx(0.975) and seconds == pytest.approx(15.0)
    gpu = SUITES["gpu"]["cifar10_cnn_whitened"]
    assert target_and_budget(gpu, runs[2:]) == (0.907, 4)
    # ResNet-34's GPU target is a time to 92%, with no seconds allowed.
    assert target_and_budget(SUITES["gpu"]["resnet34"], []) == (0.92, None)


def run_figures(method, **figures):
    """A run's figures as `run_method` returns them: made-up ones, with `figures` in their place."""
    return {
        "method": method, "command": f"python {method}", "seed": 0, "test_acc": 0.9, "train_seconds": 1.0,
        "val_accuracy": [0.9], "epoch_seconds": [1.0], "images_per_second": 1000.0, "compile_seconds": 0.0,
        "first_epoch_seconds": 1.0, "median_epoch_seconds": 1.0, "outside_epochs_seconds": 0.0, "other_seconds": 0.0,
        "peak_mb": 100.0, **figures,
    }


def test_the_table_times_each_run_to_the_target_and_gives_each_method_its_verdict():
    cpu = SUITES["cpu"]["mnist_mlp"]

    def run(method, test_acc, train_seconds, val_accuracy):
        epochs = len(val_accuracy)
        return run_figures(method, test_acc=test_acc, train_seconds=train_seconds, val_accuracy=val_accuracy,
                           epoch_seconds=[train_seconds / epochs] * epochs)

    seed = cpu.baseline.name
    runs = [
        run(seed, 0.97, 30.0, [0.95, 0.97, 0.98]),  # The target is the seed's 97.5%, in 15 s at most.
        run(seed, 0.98, 60.0, [0.95, 0.96, 0.97]),
        run("fast", 0.99, 3.0, [0.96, 0.975, 0.99]),
        run("slow", 0.99, 20.0, [0.99, 0.99]),
        run("short", 0.96, 3.0, [0.96]),
    ]
    assert seconds_to(0.975, runs[0]) == 30.0 and seconds_to(0.975, runs[1]) is None
    assert seconds_to(0.975, runs[2]) == 2.0 and seconds_to(0.975, runs[3]) == 10.0
    # Where history.csv recorded the training clock, it counts what ran
    # between the epochs (checkpoints, the resume state) too.
    clocked = {**runs[2], "epoch_seconds": [1.0, 1.0, 1.0], "train_clock": [1.5, 3.0, 4.5]}
    assert seconds_to(0.975, clocked) == 3.0
    lines = table("mnist_mlp", cpu, runs).splitlines()
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in lines if line.startswith("| ")}
    assert rows[seed][3] == "45.0 ± 21.2" and rows[seed][4] == "30.0 (1/2 runs)"
    assert rows["fast"][4] == "2.0 (1/1 runs)" and rows["short"][4] == "not reached"
    verdicts = {line.split(":")[0][2:]: line.split("**")[1] for line in lines if "**" in line}
    assert verdicts == {"fast": "yes", "slow": "no", "short": "no"}


def test_every_column_of_the_table_holds_its_own_figure():
    cpu = SUITES["cpu"]["cifar10_cnn"]
    figures = {
        "test_acc": 0.55, "train_seconds": 12.0, "val_accuracy": [0.52, 0.56], "epoch_seconds": [7.0, 5.0],
        "images_per_second": 7500.0, "compile_seconds": 2.2, "first_epoch_seconds": 7.0, "median_epoch_seconds": 5.0,
        "outside_epochs_seconds": 0.3, "other_seconds": 9.5, "peak_mb": 1800.0,
    }
    seed = run_figures(cpu.baseline.name, **{**figures, "test_acc": 0.51, "train_seconds": 60.0})
    fast = [
        run_figures("fast", **{**figures, "test_acc_flip_tta": 0.57, "test_acc_flip_shift_tta": 0.58,
                               "peak_mb": 1800.0 + 100 * i, "test_acc": 0.55 + 0.02 * i, "compile_seconds": (2.2, 0.5, 0.3)[i]})
        for i in range(3)
    ]
    lines = table("cifar10_cnn", cpu, [seed, *fast]).splitlines()
    assert lines[0] == "### cifar10_cnn: target 51.00% (the seed's mean final test accuracy)"
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines if line.startswith("|")]
    header, rule, seed_row, fast_row = cells
    assert len(header) == len(rule) == len(seed_row) == len(fast_row)
    assert dict(zip(header, fast_row)) == {
        "method": "fast", "runs": "3", "test accuracy %": "57.00 ± 2.00",
        "with flip TTA %": "57.00 ± 0.00", "with flip + shift TTA %": "58.00 ± 0.00",
        "training s": "12.0 ± 0.0", "s to target (val)": "7.0 ± 0.0 (3/3 runs)", "images/s": "7500 ± 0",
        # The first run compiled; the later ones loaded from the cache.
        "compile s (first run; later)": "2.2; 0.4 ± 0.1", "first epoch s": "7.0 ± 0.0", "later epochs s": "5.0 ± 0.0",
        "outside epochs s": "0.3 ± 0.0", "other s": "9.5 ± 0.0", "peak host MB (max)": "2000",
    }
    # The seed's runs report no test-time votes: their cells stay empty.
    assert dict(zip(header, seed_row))["with flip TTA %"] == ""
    assert (
        "- fast: mean test accuracy 57.00% vs the seed's 51.00%, in 12.0 s = 0.20 of the seed's 60.0 s: "
        "at least the seed's accuracy in at most a third of its time: **yes**"
    ) in lines


def test_the_plot_draws_accuracy_against_cumulative_seconds_and_a_star_at_the_final_test_accuracy(figures, tmp_path):
    cpu = SUITES["cpu"]["mnist_mlp"]
    runs = [
        {"method": cpu.baseline.name, "val_accuracy": [0.9, 0.95], "epoch_seconds": [10.0, 8.0], "test_acc": 0.96,
         "train_seconds": 19.0},
        {"method": "fast", "val_accuracy": [0.96, 0.97], "epoch_seconds": [2.0, 1.0], "test_acc": 0.975,
         "train_seconds": 3.5},
    ]
    benchmark.plot({"mnist_mlp": runs}, SUITES["cpu"], tmp_path / "plot.png")
    lines = {line.get_label(): line for line in figures[0].axes[0].get_lines()}
    assert list(lines["fast"].get_xdata()) == [2.0, 3.0] and list(lines["fast"].get_ydata()) == [0.96, 0.97]
    stars = [line for line in lines.values() if line.get_marker() == "*" and len(line.get_xdata())]
    assert sorted((float(star.get_xdata()[0]), float(star.get_ydata()[0])) for star in stars) == [(3.5, 0.975), (19.0, 0.96)]


def fake_script(tmp_path, code):
    """A method whose "script" is `code`, run with the arguments a script gets."""
    path = tmp_path / "fake.py"
    path.write_text("import os, sys\nargs = dict(a[2:].split('=', 1) for a in sys.argv[1:])\n" + code)
    return benchmark.Method("fake", str(path), [])


def finished_run(tmp_path, files, printed, final):
    """A fake script that writes a run folder ('run 1', with a space) holding
    `files` ({name: text}), prints `printed`, then the final line: "final",
    the figures `final`, and run_dir=<that folder>."""
    return fake_script(tmp_path, f"""
run_dir = os.path.join(args['out_dir'], 'fake', 'run 1')
os.makedirs(run_dir)
for name, text in {files!r}.items():
    with open(os.path.join(run_dir, name), 'w') as f:
        f.write(text)
print({printed!r})
print('final ' + {final!r} + ' run_dir=' + run_dir)
""")


def test_a_runs_figures_come_from_its_output_and_history(tmp_path):
    method = finished_run(
        tmp_path,
        {"history.csv": "epoch,seconds,val_accuracy\n0,4.0,0.8\n1,3.0,0.85\n2,2.0,0.9\n"},
        "data      x_train (1200, 784) | x_val (100, 784) | x_test (100, 784)\n"
        "compiled  the training and evaluation steps in 1.5 s (before the clock starts)",
        "test_acc=0.9100 test_loss=0.3000 train_seconds=10.0 epochs=3 test_acc_flip_tta=0.9200",
    )
    start = time.perf_counter()
    run = benchmark.run_method(method, "mnist", 7, "", str(tmp_path / "runs"))
    wall = time.perf_counter() - start
    assert run["command"].endswith("--seed=7") and run["seed"] == 7
    assert (run["test_acc"], run["test_acc_flip_tta"], run["test_acc_flip_shift_tta"]) == (0.91, 0.92, None)
    assert (run["train_seconds"], run["epochs"], run["epoch_seconds"]) == (10.0, 3, [4.0, 3.0, 2.0])
    assert run["val_accuracy"] == [0.8, 0.85, 0.9]
    assert run["train_clock"] is None  # A history written before it had the clock's column.
    assert run["images_per_second"] == 1200 * 3 / 10.0
    assert (run["compile_seconds"], run["first_epoch_seconds"], run["median_epoch_seconds"]) == (1.5, 4.0, 2.5)
    assert run["backend"] is None  # The fake prints no `backend` line.
    assert run["outside_epochs_seconds"] == pytest.approx(1.0)
    # The wall time less training and compiling: this fake took far less than their 11.5 s.
    assert -11.5 < run["other_seconds"] < wall - 11.5
    assert run["peak_mb"] > 1


def test_a_runs_peak_memory_is_its_own_not_the_benchmarks(tmp_path):
    # The benchmark imported Keras, and TensorFlow with it (830 MB here), and
    # on Linux a process counts the memory of the one that started it as its
    # own peak: a run of a few megabytes reported 832.
    method = finished_run(
        tmp_path,
        {"history.csv": "epoch,seconds,val_accuracy\n0,1.0,0.9\n"},
        "data      x_train (100, 784)",
        "test_acc=0.9000 train_seconds=1.0",
    )
    driver = (
        "import sys, benchmarks.__main__ as b\n"
        f"run = b.run_method(b.Method('fake', {method.command!r}, []), 'mnist', 0, '', {str(tmp_path / 'runs')!r})\n"
        "print(*[m for m in ('keras', 'numpy') if m in sys.modules], run['peak_mb'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", driver], cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    *modules, peak = result.stdout.split()
    assert modules == []  # The benchmark imports neither.
    assert 1 < float(peak) < 100  # This fake imports os and sys alone.


def test_one_epoch_has_no_later_epochs(tmp_path):
    # Their cell repeated the first epoch's seconds, as if it had cost nothing more than the others.
    method = finished_run(
        tmp_path,
        {"history.csv": "epoch,seconds,train_seconds,val_accuracy\n0,4.0,4.02,0.8\n", "result.json": '{"train_seconds": 4.04}'},
        "backend   tensorflow 2.21.0 | keras 3.15.1 | devices CPU (2 cores, x86_64) | precision float32\n"
        "data      x_train (1200, 784) | x_val (100, 784) | x_test (100, 784)",
        "test_acc=0.9100 test_loss=0.3000 train_seconds=4.0 epochs=1",
    )
    run = benchmark.run_method(method, "mnist", 0, "", str(tmp_path / "runs"))
    assert run["median_epoch_seconds"] is None and run["first_epoch_seconds"] == 4.0
    assert run["train_clock"] == [4.02]
    # The seconds to a hundredth, from result.json: the final line's 4.0 meets a budget of 4 s, 4.04 does not.
    assert run["train_seconds"] == 4.04
    assert run["backend"] == "tensorflow 2.21.0 | keras 3.15.1 | devices CPU (2 cores, x86_64) | precision float32"
    cells = [line.split(" | ") for line in table("mnist_mlp", SUITES["gpu"]["mnist_mlp"], [run]).splitlines() if line.startswith("| fake")]
    assert cells[0][7:9] == ["4.0", ""]  # first epoch s, later epochs s


def test_a_method_that_fails_stops_the_benchmark_with_its_last_line_and_keeps_its_output(tmp_path):
    method = fake_script(tmp_path, "print('loading'); print('error: no MNIST data in /nowhere; give --data_dir', file=sys.stderr)\nsys.exit(1)")
    runs = tmp_path / "runs"
    runs.mkdir()
    log = runs / "failed-fake-seed0.log"
    with pytest.raises(UserError) as error:
        benchmark.run_method(method, "mnist", 0, "", str(runs))
    assert str(error.value) == f"fake (seed 0) failed, exit status 1: no MNIST data in /nowhere; give --data_dir (its output: {log})"
    # The log starts with the command, as it pastes back into a shell.
    assert log.read_text().startswith(f"$ python {method.command} --data_dir= --out_dir={runs} --seed=0\n")
    assert "--- stdout ---\nloading\n--- stderr ---\nerror: no MNIST data" in log.read_text()
    # A method named as the suites name them ("+", ",") gives a file name of letters, digits, ".", "_" and "-".
    named = method._replace(name="fake + whitening, 17 epochs")
    with pytest.raises(UserError, match=re.escape(f"(its output: {runs / 'failed-fake-whitening-17-epochs-seed0.log'})")):
        benchmark.run_method(named, "mnist", 0, "", str(runs))
    # Killed (by the system's out-of-memory killer, say): the line said "(no output)", not how it ended. Its
    # last line, whatever it printed before (TensorFlow's "Could not find cuda drivers"), is no reason either.
    method = fake_script(tmp_path, "import signal\nprint('cuda drivers', file=sys.stderr, flush=True)\nos.kill(os.getpid(), signal.SIGKILL)")
    with pytest.raises(UserError) as error:
        benchmark.run_method(method, "mnist", 0, "", str(runs))
    assert str(error.value) == (
        f"fake (seed 0) was killed by signal 9 (on Linux, what the out-of-memory killer sends) (its output: {log})"
    )
    # Where its output cannot be written, the line says so, in place of a traceback.
    with pytest.raises(UserError, match=r"killed by signal 9 .* \(its output could not be kept: No such file or directory: "):
        benchmark.run_method(method, "mnist", 0, "", str(tmp_path / "gone"))


def test_a_failed_method_says_where_the_finished_runs_are_and_their_table_is_written_from_them(monkeypatch, tmp_path):
    import common

    calls = []

    def run_method(method, dataset, seed, cache_dir, runs, deadline):
        calls.append(method)
        if len(calls) == 2:
            raise UserError("fake (seed 0) failed, exit status 1: boom")
        return run_figures(method.name, backend="tensorflow 2.21.0 | devices CPU")

    monkeypatch.setattr(benchmark, "run_method", run_method)
    monkeypatch.setattr(common, "on_interrupt", "")
    for name in ("tasks", "seeds", "baseline_seeds", "out_dir", "runs_dir", "from_jsonl"):  # Restored after the test.
        monkeypatch.setattr(benchmark, name, getattr(benchmark, name))
    monkeypatch.setattr(sys, "argv", ["benchmarks", "--tasks=mnist_cnn", "--seeds=1",
                                      f"--out_dir={tmp_path / 'results'}", f"--runs_dir={tmp_path / 'runs'}"])
    with pytest.raises(UserError) as error:
        benchmark.main()
    [jsonl] = (tmp_path / "results").glob("*.jsonl")
    assert str(error.value) == (
        f"fake (seed 0) failed, exit status 1: boom; the runs that finished are in {jsonl}; "
        f"--from_jsonl={jsonl} writes their table"
    )
    assert [path.suffix for path in (tmp_path / "results").iterdir()] == [".jsonl"]
    monkeypatch.setattr(sys, "argv", ["benchmarks", f"--from_jsonl={jsonl}"])
    benchmark.main()
    report = open(str(jsonl)[:-6] + ".md").read()
    assert report.startswith(f"Measured {datetime.date.today().isoformat()} with `python -m benchmarks --tasks=mnist_cnn ")
    assert " Backend: tensorflow 2.21.0 | devices CPU. " in report
    assert f"| {SUITES['cpu']['mnist_cnn'].baseline.name} | 1 |" in report
    assert os.path.getsize(str(jsonl)[:-6] + ".png") > 1000
    # What is written is not written again.
    with pytest.raises(UserError, match=r"\.md exists already, and is not overwritten; move it away"):
        benchmark.main()


def test_a_task_without_its_baselines_runs_has_its_table_without_a_target():
    lines = table("mnist_cnn", SUITES["cpu"]["mnist_cnn"], [run_figures("fast")]).splitlines()
    assert lines[0] == "### mnist_cnn: no target, as the .jsonl holds no run of its seed baseline"
    [row] = [line.split(" | ") for line in lines if line.startswith("| fake") or line.startswith("| fast")]
    assert row[1:5] == ["1", "90.00", "1.0", ""]  # runs, test accuracy, training s, s to target
    assert not [line for line in lines if "**" in line]  # No verdict without a target.


def test_a_jsonl_written_before_the_machine_and_some_columns_were_recorded_still_gives_its_table(tmp_path):
    # A run of 2026-11-23 had no outside_epochs_seconds (a KeyError), and its
    # gpu- file was read as the CPU suite: an empty table, then in the way.
    figures = run_figures("mnist_mlp.py, GPU overrides", task="mnist_mlp", test_acc=0.985)
    del figures["outside_epochs_seconds"], figures["compile_seconds"]
    path = tmp_path / "gpu-20261123-111137-mnist_mlp.jsonl"
    path.write_text(json.dumps(figures) + "\n")
    stem, started, tasks, results = benchmark.earlier_runs(str(path))
    assert started is None and tasks is SUITES["gpu"] and list(results) == ["mnist_mlp"]
    lines = table("mnist_mlp", tasks["mnist_mlp"], results["mnist_mlp"]).splitlines()
    assert lines[0] == "### mnist_mlp: target 98.40% (given)"
    cells = dict(zip(*[[cell.strip() for cell in line.strip("|").split("|")] for line in (lines[2], lines[4])]))
    assert (cells["compile s (first run; later)"], cells["outside epochs s"], cells["test accuracy %"]) == ("", "", "98.50")


@pytest.mark.parametrize("text, message", [
    ("", "holds no finished run: there is no table to write"),
    ("{not json\n", "cannot be read (Expecting property name"),
    ("[1, 2]\n", "is not a benchmark's .jsonl (a line of it is not a record)"),
    # As benchmarks.transfer_phases writes them (they said "holds a run of None").
    ('{"split": 0, "method": "phase 1, block 14", "test": 0.9}\n', "is not a benchmark's .jsonl (its runs name no task;"),
    ('{"task": "cifar100"}\n', "holds a run of 'cifar100', which is not a task of the cpu suite; give --suite=<its suite>"),
])
def test_a_jsonl_without_runs_to_tabulate_is_one_line(monkeypatch, tmp_path, text, message):
    path = tmp_path / "cpu-1.jsonl"
    path.write_text(text)
    with pytest.raises(UserError, match=re.escape(message)):
        benchmark.earlier_runs(str(path))
    with pytest.raises(UserError, match="is not a .jsonl file"):
        benchmark.earlier_runs(str(tmp_path / "cpu-1.md"))


def test_the_seed_baseline_runs_baseline_seeds_times(monkeypatch, tmp_path):
    calls = []

    def run_method(method, dataset, seed, cache_dir, runs, deadline):
        calls.append((method.name, seed))
        return run_figures(method.name, seed=seed)

    monkeypatch.setattr(benchmark, "run_method", run_method)
    import common

    monkeypatch.setattr(common, "on_interrupt", "")  # main() sets it; restored after the test.
    for name in ("tasks", "seeds", "baseline_seeds", "out_dir", "runs_dir"):  # Restored after the test.
        monkeypatch.setattr(benchmark, name, getattr(benchmark, name))
    monkeypatch.setattr(sys, "argv", ["benchmarks", "--tasks=mnist_cnn", "--seeds=2", "--baseline_seeds=1",
                                      f"--out_dir={tmp_path / 'results'}", f"--runs_dir={tmp_path / 'runs'}"])
    benchmark.main()
    task = SUITES["cpu"]["mnist_cnn"]
    assert calls == [(task.baseline.name, 0), (task.methods[0].name, 0), (task.methods[0].name, 1)]


def test_no_seed_baseline_for_a_task_that_needs_its_target_is_refused(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--tasks=mnist_mlp", "--baseline_seeds=0", f"--out_dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: --baseline_seeds=0: mnist_mlp take their target")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "setting, value, message",
    [
        ("seeds", 0, "--seeds=0 is not allowed: each method needs at least one run"),
        ("baseline_seeds", -2, "--baseline_seeds=-2 is not allowed: give -1 (as many as seeds), 0 (none) or more"),
        ("tasks", "mnist_mlp,mnist_mlp", "--tasks names mnist_mlp more than once; name each task once"),
        ("stop_after", -1.0, "--stop_after=-1 is not allowed: give the seconds (0 means no limit)"),
        ("stop_after", 1e999, "--stop_after=inf is not allowed: give the seconds (0 means no limit)"),
    ],
)
def test_the_benchmarks_own_settings_are_checked(monkeypatch, setting, value, message):
    # --seeds=0 ended in a StatisticsError traceback; --seeds=-2 on the GPU
    # suite in an empty table and exit 0; a task named twice ran twice.
    monkeypatch.setattr(benchmark, setting, value)
    with pytest.raises(UserError) as error:
        benchmark.chosen_tasks()
    assert str(error.value) == message


def test_tasks_may_have_spaces_and_a_missing_dataset_stops_the_benchmark_before_any_run(monkeypatch, tmp_path):
    # " mnist_cnn" and "" were unknown tasks; a missing cifar10/ stopped the
    # benchmark only after the MNIST tasks' runs, without their table.
    monkeypatch.setattr(benchmark, "suite", "gpu")
    monkeypatch.setattr(benchmark, "baseline_seeds", 0)
    monkeypatch.setattr(benchmark, "tasks", "mnist_mlp, mnist_cnn,")
    assert benchmark.chosen_tasks() == ["mnist_mlp", "mnist_cnn"]
    monkeypatch.setattr(benchmark, "tasks", ",")  # Ran no task, then a traceback.
    with pytest.raises(UserError, match="^--tasks=',' names no task; name some of mnist_mlp, "):
        benchmark.chosen_tasks()
    monkeypatch.setattr(benchmark, "tasks", "mnist_mlp, mnist_cnn,")
    (tmp_path / "mnist").mkdir()
    monkeypatch.setattr(benchmark, "data_dir", str(tmp_path))
    assert benchmark.chosen_tasks() == ["mnist_mlp", "mnist_cnn"]
    monkeypatch.setattr(benchmark, "tasks", "mnist_mlp,cifar10_cnn")
    with pytest.raises(UserError, match=f"^--data_dir='{tmp_path}' has no cifar10/ folder; give the folder that holds"):
        benchmark.chosen_tasks()


def test_an_unwritable_runs_dir_stops_the_benchmark_before_any_run(tmp_path):
    write_mnist_npz(str(tmp_path / "data" / "mnist"))
    # A name longer than the file system allows: a folder that cannot be made
    # even by root. (A file there is refused earlier, with the settings.)
    runs_dir = tmp_path / ("x" * 300)
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--tasks=mnist_mlp", "--seeds=1", f"--data_dir={tmp_path / 'data'}",
         f"--out_dir={tmp_path / 'results'}", f"--runs_dir={runs_dir}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    # It failed in the seed's run, saying "choose a writable --out_dir" of the script.
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: cannot make the runs' folder {runs_dir}/")
    assert "give a --runs_dir you can write to" in result.stderr
    assert os.listdir(tmp_path / "results") == []


@pytest.mark.slow
def test_kill_stops_the_benchmark_with_its_running_script_and_keeps_the_finished_runs(tmp_path):
    # SIGTERM killed the benchmark alone: the script it ran trained on, on its own.
    import signal
    import time

    write_mnist_npz(str(tmp_path / "data" / "mnist"))
    out_dir = tmp_path / "results"
    benchmark_process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks", "--tasks=mnist_mlp", "--seeds=1", f"--data_dir={tmp_path / 'data'}",
         f"--out_dir={out_dir}", f"--runs_dir={tmp_path / 'runs'}"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # Once the seed baseline's run has finished, the script's run is under way.
    assert benchmark_process.stdout.readline().startswith("benchmark ")
    assert " seed 0: test_acc=" in benchmark_process.stdout.readline()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        children = subprocess.run(["pgrep", "-P", str(benchmark_process.pid)], capture_output=True, text=True).stdout.split()
        if children:
            break
        time.sleep(0.1)
    (child,) = map(int, children)
    benchmark_process.send_signal(signal.SIGTERM)
    stderr = benchmark_process.communicate(timeout=120)[1]
    assert benchmark_process.returncode == -signal.SIGTERM  # As a process that SIGTERM ends.
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # Stopped, and waited for.
    (jsonl,) = os.listdir(out_dir)
    started, seed_run = map(json.loads, open(out_dir / jsonl).read().splitlines())  # The machine, then the run.
    assert "benchmark" in started and seed_run["method"].startswith("seed MLP")
    assert stderr.strip().splitlines()[-1] == (
        f"terminated: the runs that finished are in {out_dir / jsonl}; --from_jsonl={out_dir / jsonl} writes their table"
    )


def test_a_second_kill_does_not_leave_the_running_script_behind(monkeypatch, tmp_path):
    # The script ends on SIGTERM only once a compile under way returns; a
    # second kill meanwhile cut the benchmark's wait short, and the script
    # trained on, on its own. Here it is a process that ignores SIGTERM.
    import signal
    import threading
    import time

    ready = tmp_path / "ready"
    stubborn = f"import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); open({str(ready)!r}, 'w'); time.sleep(60)"
    monkeypatch.setattr(benchmark, "invocation", lambda method, cache_dir: (["-c", stubborn], dict(os.environ)))
    # Long enough that the second kill, half a second after the first, lands
    # within the wait on the busiest machine.
    monkeypatch.setattr(benchmark, "_STOP_SECONDS", 5)
    started = []
    popen = subprocess.Popen
    monkeypatch.setattr(benchmark.subprocess, "Popen", lambda *args, **kwargs: started.append(popen(*args, **kwargs)) or started[-1])

    def kill_twice():
        while not ready.exists():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGTERM, benchmark._terminate)
    killer = threading.Thread(target=kill_twice, daemon=True)
    try:
        killer.start()
        with pytest.raises(benchmark._Terminated):
            benchmark.run_method(benchmark.Method("stubborn", "stubborn", []), "mnist", 0, "", str(tmp_path))
        # Ignored only while the script was being stopped: a caller in the
        # same process has its own handling back.
        assert signal.getsignal(signal.SIGTERM) is benchmark._terminate
    finally:
        # Both kills sent while run_method's handlers (which ignore the
        # second) are in place, not after pytest's own are back.
        killer.join(timeout=60)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    alive = started[0].poll() is None
    if alive:
        started[0].kill()  # Not left behind by a failing test.
    assert not alive and started[0].returncode == -signal.SIGKILL  # Killed once the wait was over, and waited for.


def stop_after_setup(monkeypatch, tmp_path, stop_after):
    """A GPU-suite task of two fake methods, two seeds each: one that
    finishes at once and one that writes its process id, then sleeps for a
    minute; main()'s settings set to run it with --stop_after."""
    import common

    quick = fake_script(tmp_path, """
run_dir = os.path.join(args['out_dir'], 'quick-' + args['seed'])
os.makedirs(run_dir)
with open(os.path.join(run_dir, 'history.csv'), 'w') as f:
    f.write('epoch,seconds,val_accuracy\\n0,1.0,0.95\\n')
print('data      x_train (1000, 784)')
print('final test_acc=0.9500 train_seconds=1.0 run_dir=' + run_dir)
""")._replace(name="quick")
    slow_path = tmp_path / "slow.py"
    slow_path.write_text(f"import os, time\nopen({str(tmp_path / 'slow.pid')!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n")
    slow = benchmark.Method("slow", str(slow_path), [])
    monkeypatch.setitem(SUITES, "gpu", {"fake": benchmark.Task("mnist", None, [quick, slow], target=0.9, seconds=2)})
    monkeypatch.setattr(common, "on_interrupt", "")  # main() sets it; restored after the test.
    for name in ("suite", "tasks", "seeds", "baseline_seeds", "out_dir", "runs_dir", "stop_after"):  # Restored after the test.
        monkeypatch.setattr(benchmark, name, getattr(benchmark, name))
    monkeypatch.setattr(sys, "argv", [
        "benchmarks", "--suite=gpu", "--seeds=2", "--baseline_seeds=0", f"--stop_after={stop_after}",
        f"--out_dir={tmp_path / 'results'}", f"--runs_dir={tmp_path / 'runs'}",
    ])


@pytest.mark.slow
def test_stop_after_stops_the_run_under_way_and_writes_the_finished_runs_table(monkeypatch, tmp_path, capsys):
    # For a machine lent for a few minutes: the runs that fit, then their
    # table, with nothing left running.
    stop_after_setup(monkeypatch, tmp_path, 8)
    start = time.monotonic()
    benchmark.main()
    took = time.monotonic() - start
    assert 8 <= took < 8 + benchmark._STOP_SECONDS
    pid = int((tmp_path / "slow.pid").read_text())
    with pytest.raises(ProcessLookupError):  # Stopped and waited for.
        os.kill(pid, 0)
    assert "stopped   after --stop_after=8 s: slow (seed 0) was stopped and is left out" in capsys.readouterr().out
    [jsonl] = (tmp_path / "results").glob("*.jsonl")
    runs = [json.loads(line) for line in jsonl.read_text().splitlines()[1:]]
    assert [(run["method"], run["seed"]) for run in runs] == [("quick", 0), ("quick", 1)]
    report = jsonl.with_suffix(".md").read_text()
    assert "| quick | 2 | 95.00 ± 0.00 |" in report and "| slow |" not in report
    assert jsonl.with_suffix(".png").stat().st_size > 1000


def test_a_run_that_ends_well_when_stopped_is_kept_and_none_starts_after_the_deadline(tmp_path):
    # A run that ended as the time ran out was dropped as stopped; past the
    # deadline, the next one was started, then stopped at once.
    ready = tmp_path / "ready"
    method = fake_script(tmp_path, f"""
import signal, time

def finish(signum, frame):
    run_dir = os.path.join(args['out_dir'], 'fake')
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, 'history.csv'), 'w') as f:
        f.write('epoch,seconds,val_accuracy\\n0,1.0,0.95\\n')
    print('data      x_train (1000, 784)')
    print('final test_acc=0.9500 train_seconds=1.0 run_dir=' + run_dir)
    sys.exit(0)

signal.signal(signal.SIGTERM, finish)
open({str(ready)!r}, 'w')
time.sleep(60)
""")
    start = time.monotonic()
    run = benchmark.run_method(method, "mnist", 0, "", str(tmp_path / "runs"), deadline=start + 6)
    assert ready.exists() and run["test_acc"] == 0.95  # Stopped after it was ready, and kept.
    assert 6 <= time.monotonic() - start < 30
    with pytest.raises(benchmark.OutOfTime) as stopped:
        benchmark.run_method(method._replace(command="/no/such/script.py"), "mnist", 1, "", str(tmp_path), deadline=start)
    assert str(stopped.value) == "fake (seed 1) and any runs after it were not started"


def test_stop_after_with_no_run_finished_keeps_no_files(monkeypatch, tmp_path):
    stop_after_setup(monkeypatch, tmp_path, 0.001)
    with pytest.raises(UserError) as error:
        benchmark.main()
    assert str(error.value) == "--stop_after=0.001 s passed before any run finished; give it more seconds"
    assert os.listdir(tmp_path / "results") == []


def test_the_header_names_the_processor_and_the_runs_backends(monkeypatch, tmp_path):
    # The CPU suite's accuracies moved by up to 2.9 points from one 2-core machine to another;
    # the header said only "x86_64".
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor @ 2.80GHz\nflags\t\t: fpu\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *args, **kwargs: real_open(
        cpuinfo if path == "/proc/cpuinfo" else path, *args, **kwargs))
    runs = {"a": [{"backend": "jax 0.8.1 | keras 3.15.1 | devices 2 x NVIDIA H200 | precision mixed_bfloat16"}] * 2,
            "b": [{"backend": None}]}
    assert f"on {platform.machine()} (Intel(R) Xeon(R) Processor @ 2.80GHz, no AVX2), " in benchmark.header(benchmark.machine(), runs)
    # Two machines that both call themselves "AMD EPYC" told apart by their vector instructions.
    cpuinfo.write_text("model name\t: AMD EPYC\nflags\t\t: fpu avx avx2 fma\n")
    assert f"on {platform.machine()} (AMD EPYC, AVX2, no AVX-512), " in benchmark.header(benchmark.machine(), runs)
    cpuinfo.write_text("model name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f\n")
    assert f"on {platform.machine()} (AMD EPYC, AVX-512), " in benchmark.header(benchmark.machine(), runs)
    cpuinfo.unlink()  # No /proc/cpuinfo (macOS): the processor's kind.
    text = benchmark.header(benchmark.machine(), runs)
    assert f"on {platform.machine()} ({platform.processor() or platform.machine()}), " in text
    # The GPUs, named on every backend (it said "CPU" but on JAX), once.
    assert (f", {os.cpu_count()} CPU cores, Python {platform.python_version()}. Backend: jax 0.8.1 | keras 3.15.1 | "
            "devices 2 x NVIDIA H200 | precision mixed_bfloat16. Training seconds") in text
    # The command, quoted where the shell needs it.
    monkeypatch.setattr(sys, "argv", ["benchmarks", "--runs_dir=my runs"])
    monkeypatch.setattr(benchmarks, "commit", lambda: None)  # Outside a git checkout.
    assert benchmark.header(benchmark.machine(), runs).startswith(
        f"Measured {datetime.date.today().isoformat()} with `python -m benchmarks '--runs_dir=my runs'` on ")
    monkeypatch.setattr(benchmarks, "commit", lambda: "abc1234 with uncommitted changes")
    assert benchmark.header(benchmark.machine(), runs).startswith(
        f"Measured {datetime.date.today().isoformat()} with `python -m benchmarks '--runs_dir=my runs'` "
        "at commit abc1234 with uncommitted changes on ")


def test_the_commit_is_the_checkouts_and_says_whether_tracked_files_changed(tmp_path):
    clone = tmp_path / "clone"
    if subprocess.run(["git", "-C", REPO, "rev-parse"], capture_output=True).returncode:
        pytest.skip("not a git checkout")
    # Any other failure of the clone fails the test, not skips it.
    cloned = subprocess.run(["git", "clone", "-q", REPO, str(clone)], capture_output=True, text=True)
    assert cloned.returncode == 0, cloned.stderr
    # The code under test, committed there (this checkout's may not be yet).
    shutil.copy(os.path.join(REPO, "benchmarks", "__init__.py"), clone / "benchmarks" / "__init__.py")
    subprocess.run(["git", "-C", str(clone), "-c", "user.name=test", "-c", "user.email=test@example.com",
                    "commit", "-q", "--allow-empty", "-am", "the code under test"], check=True)
    head = subprocess.run(["git", "-C", str(clone), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()

    def recorded():
        return subprocess.run([sys.executable, "-c", "import benchmarks; print(benchmarks.commit())"], cwd=clone,
                              capture_output=True, text=True, timeout=120).stdout.strip()

    (clone / "notes.txt").write_text("a file git does not track changes nothing")
    assert recorded() == head
    with open(clone / "README.md", "a") as f:
        f.write("an edit\n")
    assert recorded() == f"{head} with uncommitted changes"


def test_a_kill_after_the_table_is_written_says_where_it_is(monkeypatch, tmp_path):
    # Stopped while the plot was drawn, the benchmark said the table was not written.
    import common

    run = {"test_acc": 0.9, "train_seconds": 1.0}
    monkeypatch.setattr(benchmark, "run_method", lambda *args: run)
    monkeypatch.setattr(benchmark, "header", lambda *args: "header\n")
    monkeypatch.setattr(benchmark, "table", lambda *args: "table\n")
    monkeypatch.setattr(benchmark, "plot", lambda *args: (_ for _ in ()).throw(KeyboardInterrupt))
    monkeypatch.setattr(common, "on_interrupt", None)
    for name in ("tasks", "seeds", "baseline_seeds", "out_dir", "runs_dir"):  # Restored after the test.
        monkeypatch.setattr(benchmark, name, getattr(benchmark, name))
    monkeypatch.setattr(sys, "argv", ["benchmarks", "--tasks=mnist_mlp", "--seeds=1",
                                      f"--out_dir={tmp_path / 'results'}", f"--runs_dir={tmp_path / 'runs'}"])
    with pytest.raises(KeyboardInterrupt):
        benchmark.main()
    [md] = (tmp_path / "results").glob("*.md")
    assert common.on_interrupt == f"the table is in {str(md)[:-3]}.md and the runs in {str(md)[:-3]}.jsonl; the plot was not drawn"


def test_results_files_are_never_overwritten_and_out_dir_must_be_writable(monkeypatch, tmp_path):
    class SameSecond:  # Two benchmarks started in the same second overwrote each other's files.
        class datetime:
            @staticmethod
            def now():
                return datetime.datetime(2026, 12, 4, 20, 0, 0)

    monkeypatch.setattr(benchmark, "datetime", SameSecond)
    monkeypatch.setattr(benchmark, "out_dir", str(tmp_path / "results"))
    monkeypatch.setattr(benchmark, "runs_dir", str(tmp_path / "runs"))
    first, first_file = benchmark.new_results_file(["mnist_mlp"])
    second, second_file = benchmark.new_results_file(["mnist_mlp"])
    first_file.close(), second_file.close()
    assert first == str(tmp_path / "results" / "cpu-20261204-200000")
    assert second == first + "-2"
    # Nor is a runs folder used twice: one left by a benchmark stopped in the
    # same second (with another out_dir, or its .jsonl removed) holds an
    # unfinished run, which the next benchmark's scripts would continue.
    (tmp_path / "runs" / "cpu-20261204-200000-3").mkdir(parents=True)
    third, third_file = benchmark.new_results_file(["mnist_mlp"])
    third_file.close()
    assert third == first + "-4"
    (tmp_path / "file").write_text("")
    monkeypatch.setattr(benchmark, "out_dir", str(tmp_path / "file"))
    with pytest.raises(UserError) as error:
        benchmark.new_results_file(["mnist_mlp"])
    # Not makedirs' "[Errno 17] File exists".
    assert str(error.value) == (
        f"cannot write the results to --out_dir='{tmp_path}/file' (it is a file, not a folder); give a folder you can write to"
    )


@pytest.mark.slow
def test_every_override_in_the_suites_is_a_setting_of_its_script(monkeypatch):
    # The GPU suite runs only on a lent GPU, where a misspelt override would
    # first show; each script's --help lists its settings and their defaults.
    # The rules are checked as on that GPU's backend, JAX, whatever this
    # test runs on (PyTorch refuses several steps per call).
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    defaults = {}
    tuned = {}
    for suite in SUITES.values():
        for task in suite.values():
            for method in filter(None, [task.baseline, *task.methods]):
                if method.command not in defaults:
                    program, _ = invocation(method, "")
                    result = subprocess.run(
                        [sys.executable, *program, "--help"], cwd=REPO, capture_output=True, text=True, timeout=300
                    )
                    assert result.returncode == 0, result.stderr[-3000:]
                    # After the docstring's summary, one `--key=default  # comment` line each.
                    lines = result.stdout.partition(config.HELP_HEADER + "\n")[2]
                    assert lines, result.stdout
                    defaults[method.command] = dict(
                        line.partition("  # ")[0].strip().removeprefix("--").split("=", 1) for line in lines.splitlines()
                    )
                # Parsed, and checked against the rules, as the script would.
                settings = {key: ast.literal_eval(value) for key, value in defaults[method.command].items()}
                try:
                    final = config.apply_overrides(settings, method.overrides)
                except UserError as error:
                    pytest.fail(f"{method.name}: {error}")
                if set(WHITENED_TUNED) <= set(method.overrides):
                    tuned[method.name] = final
    assert {"mnist_mlp.py", "mnist_cnn.py", "cifar10_cnn.py", "resnet34.py", "benchmarks.seed_cifar10_cnn"} <= set(defaults)
    # The tuned settings come after the GPU overrides they replace: SGD's
    # learning rate, not Adam's, and the tuned run's own number of epochs.
    assert sorted(run["epochs"] for run in tuned.values()) == [17, 17, 30]
    for run in tuned.values():
        assert (run["optimizer"], run["learning_rate"], run["whiten"]) == ("sgd", 0.5, True)


def test_time_callbacks_runs_a_script_and_prints_each_hooks_seconds(tmp_path):
    write_mnist_npz(str(tmp_path / "mnist"))
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.time_callbacks", "mnist_mlp.py", f"--data_dir={tmp_path / 'mnist'}",
         f"--out_dir={tmp_path / 'runs'}", "--train_samples=200", "--epochs=2", "--batch_size=32"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-5].startswith("final test_acc=")
    timings = dict(pair.split("=") for pair in lines[-4].split()[1:])
    assert lines[-4].startswith("callbacks ") and float(timings["EpochTable.on_epoch_end"]) >= 0
    assert {"CSVLogger.on_epoch_end", "ResumeState.on_epoch_end"} <= set(timings)
    # Each epoch's state copies the MLP's 670,000 weights and Adam's moments: milliseconds, timed.
    assert float(timings["ResumeState.on_epoch_end"]) > 0
    # The one fit's seconds before its callbacks began (not the compile-ahead's fit, which has none of the run's).
    assert float(re.fullmatch(r"fit setup (\S+) s", lines[-3]).group(1)) >= 0
    # One wait per epoch before its first step, and the median step.
    waits, median = re.fullmatch(r"first-step waits (.*) \| median step (.*) s", lines[-2]).groups()
    assert len(waits.split()) == 2 and float(median) > 0
    # A fit's first and last epochs always save the resume state.
    epochs, seconds = re.fullmatch(r"resume states after epochs (.*) \| savez (.*) s each", lines[-1]).groups()
    assert epochs == "1 2" and float(seconds) > 0


@pytest.mark.slow
def test_feeding_times_each_way_of_giving_fit_the_images(tmp_path):
    write_mnist_npz(str(tmp_path / "mnist"))
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.feeding", f"--data_dir={tmp_path / 'mnist'}", "--epochs=2", "--batch_size=32"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    ways = ("arrays", "ShuffledBatches", "PyDataset")
    for way in ways:
        epochs = [line for line in lines if line.startswith(way + " ")]
        assert [line.split()[2] for line in epochs] == ["1:", "2:"]
        assert all(0 <= float(line.split("train accuracy ")[1]) <= 1 for line in epochs)
    median = re.fullmatch(r"median epoch after the first: (.*)", lines[-1]).group(1)
    assert [part.split()[0] for part in median.split(", ")] == list(ways)
    # Of two epochs, the median after the first is the second's seconds.
    second = {line.split()[0]: line.split()[3] for line in lines if " epoch 2: " in line}
    assert {part.split()[0]: part.split()[1] for part in median.split(", ")} == second


def tiny_transfer_phases(tmp_path, *settings):
    """The command of a quick benchmarks.transfer_phases run on a small photo
    folder (random weights, 71x71 photos), and its out_dir."""
    photo_dir = write_photo_tree(str(tmp_path / "photos"), per_class=12)
    out_dir = tmp_path / "results"
    command = [sys.executable, "-m", "benchmarks.transfer_phases", f"--data_dir={photo_dir}", "--weights=none",
               "--image_size=71", "--epochs=2", "--batch_size=8", *settings, f"--out_dir={out_dir}"]
    return command, out_dir


@pytest.mark.slow
def test_transfer_phases_scores_every_split_and_fine_tunes_the_first(tmp_path):
    command, out_dir = tiny_transfer_phases(
        tmp_path, "--splits=2", "--fine_tune_splits=1", "--fine_tune_learning_rates=1e-4,1e-5", "--fine_tune_epochs=2"
    )
    # As if a GPU ran it, whose results were named cpu-... too: the backend is asked for its GPUs' names.
    command[1:3] = ["-c", "import runpy, common.device; common.device.gpu_names = lambda: ['NVIDIA H100 80GB HBM3']; "
                          "runpy.run_module('benchmarks.transfer_phases', run_name='__main__')"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (stem,) = {os.path.join(out_dir, name.rsplit(".", 1)[0]) for name in os.listdir(out_dir)}
    assert os.path.basename(stem).startswith("gpu-")
    records = [json.loads(line) for line in open(stem + ".jsonl")]
    # Two heads on each of two splits, and two learning rates of phase 2 on the first.
    assert [(r["split"], r["method"]) for r in records] == [
        (0, "phase 1, block 14"), (0, "phase 1, blocks 13+14"), (0, "phase 2, lr 0.0001"), (0, "phase 2, lr 1e-05"),
        (1, "phase 1, block 14"), (1, "phase 1, blocks 13+14"),
    ]
    for r in records:
        assert 0 <= r["validation"] <= 1 and 0 <= r["test"] <= 1
    for r in records[2:4]:
        assert len(r["per_epoch"]) == 2 and r["per_epoch"][r["kept_epoch"] - 1]["test"] == r["test"]
        # Early stopping's pick: the first epoch with the best validation accuracy.
        validation = [epoch["validation"] for epoch in r["per_epoch"]]
        assert r["kept_epoch"] == validation.index(max(validation)) + 1
    report = open(stem + ".md").read()
    assert "| phase 1, block 14 |" in report
    # Phase 2 is set beside the phase 1 it started from: the head on blocks 13 and 14.
    row = next(line for line in report.splitlines() if line.startswith("| phase 2, lr 0.0001 |"))
    assert row.endswith(f"| {100 * records[1]['test']:.1f}% |")
    # As the benchmark's header names them.
    assert f"\n{benchmarks.processor()}, {os.cpu_count()} cores, 1 x NVIDIA H100 80GB HBM3, Keras " in report


def test_the_kept_epoch_is_the_one_keras_early_stopping_restores():
    # transfer_phases runs phase 2's epochs to the end and picks the epoch
    # early stopping would have kept: checked against Keras' own callback,
    # on validation accuracies with ties, plateaus and late bests.
    import numpy as np

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(loss="categorical_crossentropy", metrics=["accuracy"])  # As the script compiles: the callback reads "max" from it.
    model.evaluate(np.zeros((1, 1)), np.array([[1.0, 0.0]]), verbose=0)  # Builds the metrics.
    rng = np.random.default_rng(0)
    picks = set()
    for _ in range(300):
        validation = [float(v) for v in rng.choice([0.5, 0.6, 0.7, 0.8], size=rng.integers(1, 9))]
        patience = int(rng.integers(0, 4))
        stopping = keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=patience, restore_best_weights=True)
        stopping.set_model(model)
        stopping.on_train_begin()
        for epoch, value in enumerate(validation):
            stopping.on_epoch_end(epoch, {"val_accuracy": value})
            if model.stop_training:
                break
        model.stop_training = False
        kept = benchmarks.kept_epoch(validation, patience)
        assert kept == stopping.best_epoch, (validation, patience)
        picks.add(kept)
    assert len(picks) > 3  # Not always the first or the last epoch.


@pytest.mark.slow
def test_transfer_phases_stopped_early_keeps_the_heads_it_scored(tmp_path):
    # The figures were written only at the end: a Ctrl-C after hours kept nothing.
    import signal

    command, out_dir = tiny_transfer_phases(tmp_path, "--splits=50", "--fine_tune_splits=0")
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_works
    )
    for line in process.stdout:
        if line.startswith("split 0  phase 1, head on blocks 13+14"):
            break
    process.send_signal(signal.SIGINT)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode != 0
    (jsonl,) = os.listdir(out_dir)
    assert jsonl.startswith("gpu-" if device.gpu_names() else "cpu-") and jsonl.endswith("-transfer_phases.jsonl")
    records = [json.loads(line) for line in open(out_dir / jsonl)]
    assert [(r["split"], r["method"]) for r in records[:2]] == [(0, "phase 1, block 14"), (0, "phase 1, blocks 13+14")]
    assert stderr.strip().splitlines()[-1] == (
        f"interrupted: the heads scored so far are in {out_dir / jsonl}; the table is written only at the end"
    )


def test_transfer_phases_refuses_a_bad_list_of_learning_rates(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.transfer_phases", "--fine_tune_learning_rates=fast", f"--out_dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: --fine_tune_learning_rates='fast' must be numbers")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "error: use: python -m benchmarks.time_callbacks SCRIPT.py"),  # An IndexError traceback.
        (["nosuch.py"], "error: 'nosuch.py' is not a script's file; use:"),  # A FileNotFoundError traceback.
        (["README.md"], "error: 'README.md' is not a script's file; use:"),  # A SyntaxError traceback.
        (["mnist_mlp.py", "--bogus=1"], "error: unknown setting --bogus"),  # Followed by an empty 'callbacks' line.
    ],
)
def test_time_callbacks_bad_input_is_one_line(args, message):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.time_callbacks", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(message)
    assert "callbacks" not in result.stdout


def test_transfer_phases_refuses_a_folder_already_split_before_decoding_it(tmp_path):
    # It decoded every photo first: here that would stop at a class without photos.
    write_photo_tree(str(tmp_path / "photos" / "train"))
    write_photo_tree(str(tmp_path / "photos" / "test"))
    for name in os.listdir(tmp_path / "photos" / "train" / "owls"):
        (tmp_path / "photos" / "train" / "owls" / name).write_text("not a photo")
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.transfer_phases", f"--data_dir={tmp_path / 'photos'}", "--weights=none",
         f"--out_dir={tmp_path / 'results'}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'photos'} is already split into train/ and test/; give one folder of class folders"
    )


@needs_mobilenet
def test_transfer_phases_refuses_another_networks_weights_before_decoding_the_photos(tmp_path):
    # Xception is built before the photos are decoded: the weights are refused before
    # decoding would stop at the class without photos (before, Xception was built after
    # every photo had been decoded, minutes on the flowers).
    photo_dir = write_photo_tree(str(tmp_path / "photos"), per_class=12)
    for name in os.listdir(os.path.join(photo_dir, "owls")):
        (tmp_path / "photos" / "owls" / name).write_text("not a photo")
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.transfer_phases", f"--data_dir={photo_dir}", f"--weights={MOBILENET}",
         "--image_size=71", f"--out_dir={tmp_path / 'results'}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: could not load Xception weights from {MOBILENET} ("), result.stderr[-2000:]
    assert os.listdir(tmp_path / "results") == []


def test_transfer_phases_refuses_a_class_too_small_to_split_before_xception_runs(tmp_path):
    # It was refused by the first split, after Xception's pass over every photo (minutes).
    photo_dir = write_photo_tree(str(tmp_path / "photos"), per_class=12)
    write_photo_tree(str(tmp_path / "photos"), classes=("ants",), per_class=2)
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.transfer_phases", f"--data_dir={photo_dir}", "--weights=none",
         "--image_size=71", f"--out_dir={tmp_path / 'results'}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: class 'ants' has 2 photos: too few to split")
    assert result.stdout.strip().splitlines()[-1].startswith("data      ")  # Nothing after the photos loaded.


@pytest.mark.parametrize(
    "args, message",
    [
        # An IndexError traceback once every feature had been computed.
        (["--fine_tune_epochs=0"], "--fine_tune_epochs=0 leaves phase 2 nothing to measure"),
        # It blamed the weights file, after the photos had loaded.
        (["--image_size=32"], "--image_size=32 is too small: Xception needs at least 71 pixels"),
        # A FileExistsError traceback at the very end, the results lost.
        (["--out_dir={file}"], "out_dir must name a folder, not a file or a path through one"),
        # Each ran on: a table of such rows, an empty table, a KeyError traceback or the
        # split's own refusal after Xception's pass over every photo.
        (["--fine_tune_learning_rates=-1e-4,nan"], "--fine_tune_learning_rates='-1e-4,nan' must be numbers above 0"),
        (["--splits=0", "--fine_tune_splits=0"], "--splits=0 is not allowed: give 1 or more"),
        (["--test_split=0"], "--test_split=0 leaves no test photos to score the splits on"),
        (["--validation_split=0.5", "--test_split=0.6"], "--validation_split=0.5 and --test_split=0.6 must each be"),
    ],
)
def test_transfer_phases_bad_input_stops_before_any_work(args, message, tmp_path):
    (tmp_path / "a file").write_text("")
    file = str(tmp_path / "a file")
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.transfer_phases", "--data_dir=/no/such/photos", "--weights=none",
         *(arg.format(file=file) for arg in args)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert message.format(file=file) in result.stderr.strip().splitlines()[-1]
