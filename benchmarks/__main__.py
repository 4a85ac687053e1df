"""Runs the collection's scripts and the seed tutorials' code side by side.

    python -m benchmarks --data_dir=../shared/data                  # the CPU suite, 3 seeds
    python -m benchmarks --suite=gpu --seeds=5 --baseline_seeds=0 --data_dir=.data --stop_after=480  # on a lent GPU
    python -m benchmarks --tasks=mnist_mlp --seeds=1                # one task, quickly
    python -m benchmarks --from_jsonl=benchmarks/results/<name>.jsonl  # the table of a stopped one

Every method runs as a user would run it, in a subprocess, once per seed. The
results go to `benchmarks/results/<suite>-<start time>[-<tasks>].md` (the table), `.png`
(validation accuracy against training seconds, one line per method, a star
for each method's final test accuracy, and the target and the seconds
allowed as a dashed and a dotted line) and
`.jsonl` (the machine, then every run's figures, to check the table
against). The `.jsonl` grows a line as each run finishes; Ctrl-C, `kill` or
a method that fails stops the benchmark and the script it is running, and
keeps the runs that finished there: `--from_jsonl` then writes their table
and plot. `--stop_after=<seconds>` stops it the same way once that many
seconds have passed, then writes the finished runs' table and plot itself
(for a machine lent for a few minutes). A failed run's whole output is kept
in runs_dir.

What the table says, per method (mean ± standard deviation over the seeds):
test accuracy at the end (and with flip, and flip + shift, test-time
augmentation where the script reports them); training seconds (time in
`model.fit`, from its callbacks' start of training to the end of the last
resume state's write: the epochs and what runs between them); seconds to the target: the
training clock at the end of the first epoch whose validation accuracy
reaches it (history.csv's train_seconds: the epochs before it and what ran
between them included; for runs recorded before commit 2b45468, the
epochs' seconds alone), the mean over the runs that reach it (validation, not test, accuracy, on each method's own
split, so a method whose mean test accuracy meets the target may not reach
it there); training images per second; the seconds spent
compiling the steps before training (`common.device.compile_ahead`: XLA's
compiling on JAX, tracing on TensorFlow; the seed baselines' too, with a
line their code did not have); the first epoch's seconds apart from the
median of the others (none for a run of one epoch); the
seconds of `fit` outside the epochs' own clocks (mostly the callbacks after
the epoch table: the checkpoint, the resume state, early stopping);
the rest of the wall time (imports, data loading, model building, what `fit`
does before its callbacks start, such as building its input pipeline, the
final evaluation with its test-time votes, saving and plotting); and the
largest of the runs' peak host memory (the process' resident set: not an
accelerator's memory). The compile seconds are given for a method's first
run apart from the mean of its later ones, which on JAX load the steps from
the cache.

On JAX the runs share XLA's persistent compilation cache, in a
temporary folder that lives as long as the benchmark (unless
JAX_COMPILATION_CACHE_DIR names a folder of your own): a method's later seeds
load the steps its first seed compiled, so their "compile s" is mostly
loading, and a lent GPU's minutes go to training.
"""

import collections
import contextlib
import datetime
import itertools
import json
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import benchmarks
import common.config
from benchmarks import CPU_FAST, GPU_FAST, NINE_STEPS_PER_CALL, WHITENED_TUNED
from common import UserError, reason, visible
from common.files import read_history

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# How long a stopped benchmark waits for its running script to end (it ends
# once a compile or compiled step under way returns) before killing it.
_STOP_SECONDS = 30
# The test-time augmented accuracies a script's final line may report, and their columns.
TTA_COLUMNS = {"test_acc_flip_tta": "with flip TTA", "test_acc_flip_shift_tta": "with flip + shift TTA"}

# A method is a script (or a seed module under benchmarks/) with overrides.
Method = collections.namedtuple("Method", "name command overrides")
# A task compares methods on one dataset. The target is the seed baseline's
# mean final test accuracy unless a number is given; the table also says
# whether each method reaches it in at most a third of the baseline's
# training time, or, where `seconds` is given, in at most that many seconds
# of training. A task without a baseline (None) needs a given target.
Task = collections.namedtuple("Task", "dataset baseline methods target seconds", defaults=(None, None))

SUITES = {
    "cpu": {
        "mnist_mlp": Task(
            "mnist",
            Method("seed MLP: RMSprop, batch 32, 5 epochs", "benchmarks.seed_mnist_mlp", []),
            [
                Method("mnist_mlp.py, fast overrides", "mnist_mlp.py", CPU_FAST["mnist_mlp"]),
                Method("mnist_mlp.py, defaults", "mnist_mlp.py", []),
            ],
        ),
        "mnist_cnn": Task(
            "mnist",
            Method("seed CNN: Adam, batch 32, 1 epoch", "benchmarks.seed_mnist_cnn", []),
            [Method("mnist_cnn.py, fast overrides", "mnist_cnn.py", CPU_FAST["mnist_cnn"])],
        ),
        "cifar10_cnn": Task(
            "cifar10",
            Method("seed CIFAR-10 CNN: RMSprop, batch 128, 2 epochs", "benchmarks.seed_cifar10_cnn", []),
            [
                Method("cifar10_cnn.py, fast overrides", "cifar10_cnn.py", CPU_FAST["cifar10_cnn"]),
                Method("cifar10_cnn.py, fast overrides + whitening", "cifar10_cnn.py", CPU_FAST["cifar10_cnn_whitened"]),
            ],
        ),
    },
    # The collection's GPU targets (README.md, "GPU results"): an accuracy
    # within a number of training seconds, or the time to an accuracy.
    "gpu": {
        "mnist_mlp": Task(
            "mnist",
            Method("seed MLP: RMSprop, batch 32, 5 epochs", "benchmarks.seed_mnist_mlp", []),
            [
                Method("mnist_mlp.py, GPU overrides", "mnist_mlp.py", GPU_FAST["mnist_mlp"]),
                Method(
                    "mnist_mlp.py, GPU overrides, 9 steps per call", "mnist_mlp.py",
                    [*GPU_FAST["mnist_mlp"], NINE_STEPS_PER_CALL],
                ),
            ],
            target=0.984,
            seconds=2,
        ),
        "mnist_cnn": Task(
            "mnist",
            Method("seed CNN: Adam, batch 32, 3 epochs", "benchmarks.seed_mnist_cnn", ["--epochs=3"]),
            [Method("mnist_cnn.py, GPU overrides, 2 epochs", "mnist_cnn.py", GPU_FAST["mnist_cnn"])],
            target=0.990,
            seconds=1,
        ),
        "mnist_cnn_long": Task(
            "mnist",
            None,
            [Method("mnist_cnn.py, GPU overrides, 8 epochs", "mnist_cnn.py", GPU_FAST["mnist_cnn_long"])],
            target=0.994,
            seconds=5,
        ),
        "cifar10_cnn": Task(
            "cifar10",
            Method("seed CIFAR-10 CNN: RMSprop, batch 128, 10 epochs", "benchmarks.seed_cifar10_cnn", ["--epochs=10"]),
            [
                Method("cifar10_cnn.py, GPU overrides", "cifar10_cnn.py", GPU_FAST["cifar10_cnn"]),
                Method(
                    "cifar10_cnn.py, GPU overrides, 9 steps per call", "cifar10_cnn.py",
                    [*GPU_FAST["cifar10_cnn"], NINE_STEPS_PER_CALL],
                ),
            ],
            target=0.907,
            seconds=4,
        ),
        "cifar10_cnn_whitened": Task(
            "cifar10",
            None,
            # The tuned runs first, the one meant to fit in 4 s before all: a
            # lent GPU's call may end before the task does. On an H200, its
            # 17 epochs took 3.7 s (README, "GPU results").
            [
                Method(
                    "cifar10_cnn.py, GPU overrides + whitening, tuned, 17 epochs", "cifar10_cnn.py",
                    [*GPU_FAST["cifar10_cnn_whitened"], *WHITENED_TUNED, "--epochs=17"],
                ),
                # The same with the training images held on the GPU
                # (docs/devices.md, "Images held on the device"), not yet measured.
                Method(
                    "cifar10_cnn.py, GPU overrides + whitening, tuned, 17 epochs, images on the GPU",
                    "cifar10_cnn.py",
                    [*GPU_FAST["cifar10_cnn_whitened"], *WHITENED_TUNED, "--epochs=17", "--resident=True"],
                ),
                Method(
                    "cifar10_cnn.py, GPU overrides + whitening, tuned", "cifar10_cnn.py",
                    [*GPU_FAST["cifar10_cnn_whitened"], *WHITENED_TUNED],
                ),
                Method("cifar10_cnn.py, GPU overrides + whitening", "cifar10_cnn.py", GPU_FAST["cifar10_cnn_whitened"]),
            ],
            target=0.907,
            seconds=4,
        ),
        "resnet34": Task(
            "cifar10",
            None,
            [Method("resnet34.py, GPU overrides", "resnet34.py", GPU_FAST["resnet34"])],
            target=0.92,
        ),
    },
}

# Settings of the benchmark itself, overridable as --key=value like a script's.
suite = "cpu"  # "cpu" or "gpu": which methods and targets
tasks = ""  # comma-separated tasks of the suite to run ("" = all)
seeds = 3  # runs per method, with seeds 0, 1, ...
baseline_seeds = -1  # runs of each seed baseline (-1 = as many as seeds; 0 = none)
data_dir = ""  # folder holding mnist/ and cifar10/ (such as ../shared/data); "" = Keras cache, else download
out_dir = "benchmarks/results"  # where the table, plot and raw figures go
runs_dir = "/tmp/benchmark-runs"  # the scripts' run folders go to runs_dir/<results file name>/
from_jsonl = ""  # the .jsonl of an earlier benchmark: write its table and plot (if it has none yet), running nothing
stop_after = 0.0  # seconds: then stop the run under way and write the finished runs' table (0 = no limit)


def invocation(method, cache_dir):
    """What runs a method: the Python arguments of a script or a seed
    module, and its environment, with the repository on the Python path and
    the compilation cache."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_REPO, os.environ.get("PYTHONPATH")]))}
    # The run folder on a script's final line is read back: written as the
    # file system's bytes, whatever the locale, not with escapes.
    env["PYTHONIOENCODING"] = "utf-8:surrogateescape"
    env.setdefault("JAX_COMPILATION_CACHE_DIR", cache_dir)
    if method.command.endswith(".py"):
        return [os.path.join(_REPO, method.command)], env
    return ["-m", method.command], env


class OutOfTime(Exception):
    """--stop_after's seconds have passed; the message says which run is left out."""


class _Stopper:
    """Stops `process` at `deadline` (time.monotonic()'s) unless `done()` is
    called first: SIGTERM, then SIGKILL if it has not ended _STOP_SECONDS
    later. `stopped` says whether it sent them."""

    def __init__(self, process, deadline):
        self.process = process
        self.stopped = False
        self._done = threading.Event()
        # min(): Event.wait takes at most threading.TIMEOUT_MAX (about 292 years).
        timeout = min(max(deadline - time.monotonic(), 0), threading.TIMEOUT_MAX)
        threading.Thread(target=self._stop, args=(timeout,), daemon=True).start()

    def _stop(self, timeout):
        if self._done.wait(timeout):
            return
        self.stopped = True
        self._send(signal.SIGTERM)
        if not self._done.wait(_STOP_SECONDS):
            self._send(signal.SIGKILL)

    def _send(self, signum):
        # os.kill, not Popen's terminate() and kill(): they poll the process
        # first, and a poll would reap one that has just ended, leaving
        # run_method's os.wait4 nothing to wait for.
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signum)

    def done(self):
        self._done.set()


def run_method(method, dataset, seed, cache_dir, runs, deadline=None):
    """One run in a subprocess, writing its run folder under `runs`; returns
    its figures. At `deadline` (time.monotonic()'s, or None) the run is
    stopped and OutOfTime raised, unless it ended well all the same; past
    it, the run does not start."""
    if deadline is not None and time.monotonic() >= deadline:
        raise OutOfTime(f"{method.name} (seed {seed}) and any runs after it were not started")
    program, env = invocation(method, cache_dir)
    args = [
        f"--data_dir={os.path.abspath(os.path.join(data_dir, dataset)) if data_dir else ''}",
        f"--out_dir={runs}",
        f"--seed={seed}",
        *method.overrides,
    ]
    start = time.perf_counter()
    with (
        tempfile.TemporaryFile("w+", encoding="utf-8", errors="surrogateescape") as out,
        tempfile.TemporaryFile("w+", encoding="utf-8", errors="surrogateescape") as err,
    ):
        process = subprocess.Popen([sys.executable, *program, *args], cwd=_REPO, stdout=out, stderr=err, env=env)
        stopper = None
        try:
            if deadline is not None:
                stopper = _Stopper(process, deadline)
            # os.wait4 gives this one child's resource use, its peak memory included.
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            # Ctrl-C or kill stopped the benchmark: the run stops with it,
            # instead of training on, on its own (holding a lent GPU). A
            # second Ctrl-C or kill must not cut this short.
            if stopper:
                stopper.done()  # This stops it instead.
            handlers = {signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)}
            process.terminate()
            try:
                process.wait(timeout=_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            for signum, handler in handlers.items():
                if handler is not None:  # None: set outside Python, and not to be set back from it.
                    signal.signal(signum, handler)
            raise
        finally:
            if stopper:
                stopper.done()
        returncode = os.waitstatus_to_exitcode(status)
        if stopper and stopper.stopped and returncode != 0:
            raise OutOfTime(f"{method.name} (seed {seed}) was stopped and is left out")
        wall = time.perf_counter() - start
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    # Quoted where the shell needs it (a path with a space), so that it can be pasted back.
    command = shlex.join(["python", *(["-m"] if program[0] == "-m" else []), method.command, *args])
    if returncode != 0:
        raise UserError(failure(method, seed, command, returncode, stdout, stderr, runs))
    # The final line: "final key=value ... run_dir=<path>", the path last, as it may hold spaces.
    figures, _, run_dir = stdout.strip().splitlines()[-1].partition(" run_dir=")
    final = {**dict(pair.split("=", 1) for pair in figures.split()[1:]), "run_dir": run_dir}
    num_train = int(re.search(r"x_train \((\d+),", stdout).group(1))
    compiled = re.search(r"^compiled .* in ([\d.]+) s", stdout, re.MULTILINE)
    compile_seconds = float(compiled.group(1)) if compiled else 0.0
    backend = re.search(r"^backend +(.+)$", stdout, re.MULTILINE)
    history = read_history(os.path.join(final["run_dir"], "history.csv"))
    epoch_seconds = history["seconds"]
    # To a hundredth in result.json (the final line rounds to a tenth): the GPU budgets are 1 to 5 s.
    with contextlib.suppress(OSError, ValueError, KeyError):
        with open(os.path.join(final["run_dir"], "result.json")) as f:
            final["train_seconds"] = json.load(f)["train_seconds"]
    train_seconds = float(final["train_seconds"])
    return {
        "method": method.name,
        "command": command,
        "seed": seed,
        # What the run's `backend` line said: the backend, Keras and the devices.
        "backend": backend.group(1).strip() if backend else None,
        "test_acc": float(final["test_acc"]),
        **{key: float(final[key]) if key in final else None for key in TTA_COLUMNS},
        "train_seconds": train_seconds,
        "epochs": len(epoch_seconds),
        "val_accuracy": history["val_accuracy"],
        "epoch_seconds": epoch_seconds,
        # The training clock at each epoch's end (history.csv's train_seconds,
        # written since commit 2b45468; None before).
        "train_clock": history.get("train_seconds"),
        "images_per_second": num_train * len(epoch_seconds) / train_seconds,
        "compile_seconds": compile_seconds,
        "first_epoch_seconds": epoch_seconds[0],
        "median_epoch_seconds": statistics.median(epoch_seconds[1:]) if len(epoch_seconds) > 1 else None,
        # train_seconds is rounded to 0.01 s, so with no time outside the
        # epochs the difference may come out a few thousandths below zero.
        "outside_epochs_seconds": max(0.0, train_seconds - sum(epoch_seconds)),
        "other_seconds": wall - train_seconds - compile_seconds,
        "peak_mb": usage.ru_maxrss / 1024,  # Kilobytes on Linux.
    }


def failure(method, seed, command, returncode, stdout, stderr, runs):
    """The one line for a run that failed: its last line and how it ended;
    its whole output is kept in `runs`, beside the run folders."""
    # Letters, digits, ".", "_" and "-" alone: a name that every file system
    # and copying tool takes (a lent GPU's tool brings back no other).
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", method.name).strip("-")
    log = os.path.join(runs, f"failed-{name}-seed{seed}.log")
    try:
        with open(log, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(f"$ {command}\n--- stdout ---\n{stdout}--- stderr ---\n{stderr}")
        kept = f"its output: {log}"
    except OSError as error:
        kept = f"its output could not be kept: {reason(error)}"
    if returncode < 0:
        # A signal: its last line, whatever it printed before, is no reason.
        oom = " (on Linux, what the out-of-memory killer sends)" if returncode == -signal.SIGKILL else ""
        return f"{method.name} (seed {seed}) was killed by signal {-returncode}{oom} ({kept})"
    last = (stderr.strip().splitlines() or ["(no output)"])[-1]
    return f"{method.name} (seed {seed}) failed, exit status {returncode}: {last.removeprefix('error: ')} ({kept})"


def clock(run):
    """The training clock at each epoch's end: what history.csv recorded, or
    for a run recorded before it did, the epochs' seconds added up (without
    what ran between the epochs)."""
    return run.get("train_clock") or list(itertools.accumulate(run["epoch_seconds"]))


def seconds_to(target, run):
    """Training seconds until the validation accuracy first reaches `target`:
    the clock at the end of the first epoch that reaches it."""
    for accuracy, seconds in zip(run["val_accuracy"], clock(run)):
        if accuracy >= target:
            return seconds
    return None


def mean_std(values, digits=1, scale=1):
    """"mean ± standard deviation" of the values given (None: not measured,
    such as the later epochs of a one-epoch run); "" where none is."""
    values = [v * scale for v in values if v is not None]
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def first_and_later(values):
    """"first; mean ± std of the rest" of a method's figures, in the order
    its runs ran: its first run compiles the steps, and on JAX the later
    ones load them from the compilation cache, so one mean of both would
    describe neither."""
    if not values or values[0] is None:
        return mean_std(values)
    later = mean_std(values[1:])
    return f"{values[0]:.1f}" + (f"; {later}" if later else "")


def target_and_budget(task, runs):
    """The task's target accuracy and the training seconds a method may take
    for it: the GPU suite's given figures, or the seed baseline's mean final
    test accuracy and a third of its mean training seconds. The seconds are
    None for a task with neither; such a task needs a given target. The
    target is None where it comes from a baseline none of whose runs
    finished (a benchmark stopped early)."""
    seed_runs = [run for run in runs if task.baseline and run["method"] == task.baseline.name]
    if not task.target and not seed_runs:
        return None, None
    target = task.target or statistics.mean(run["test_acc"] for run in seed_runs)
    if task.seconds or not seed_runs:
        return target, task.seconds
    return target, statistics.mean(run["train_seconds"] for run in seed_runs) / 3


def by_method(runs):
    """The runs of each method, the methods in the order they ran."""
    grouped = collections.defaultdict(list)
    for run in runs:
        grouped[run["method"]].append(run)
    return grouped


def table(task_name, task, runs):
    """The markdown table of one task, and a line on the one-third rule."""
    target, budget = target_and_budget(task, runs)
    tta = [key for key in TTA_COLUMNS if any(run.get(key) is not None for run in runs)]
    if target is None:  # Read from a .jsonl (--from_jsonl) without the seed baseline's runs.
        title = f"### {task_name}: no target, as the .jsonl holds no run of its seed baseline"
    else:
        title = f"### {task_name}: target {target:.2%} " + ("(given)" if task.target else "(the seed's mean final test accuracy)")
    lines = [
        title,
        "",
        "| method | runs | test accuracy % |" + "".join(f" {TTA_COLUMNS[key]} % |" for key in tta)
        + " training s | s to target (val) | images/s | compile s (first run; later) | first epoch s | later epochs s"
        + " | outside epochs s | other s | peak host MB (max) |",
        "|---|---|---|" + "---|" * len(tta) + "---|---|---|---|---|---|---|---|---|",
    ]
    for name, method_runs in by_method(runs).items():
        reached = [t for t in (seconds_to(target, run) for run in method_runs) if t is not None] if target else []
        if reached:
            to_target = f"{mean_std(reached)} ({len(reached)}/{len(method_runs)} runs)"
        else:
            to_target = "not reached" if target else ""
        lines.append(
            f"| {name} | {len(method_runs)} | {mean_std([r['test_acc'] for r in method_runs], 2, 100)} "
            + "".join(f"| {mean_std([r.get(key) for r in method_runs], 2, 100)} " for key in tta)
            + f"| {mean_std([r['train_seconds'] for r in method_runs])} | {to_target} "
            # (Runs recorded before a column existed leave its cell empty.)
            f"| {mean_std([r.get('images_per_second') for r in method_runs], 0)} "
            f"| {first_and_later([r.get('compile_seconds') for r in method_runs])} "
            f"| {mean_std([r.get('first_epoch_seconds') for r in method_runs])} "
            f"| {mean_std([r.get('median_epoch_seconds') for r in method_runs])} "
            f"| {mean_std([r.get('outside_epochs_seconds') for r in method_runs])} "
            f"| {mean_std([r.get('other_seconds') for r in method_runs])} "
            f"| {max(r['peak_mb'] for r in method_runs):.0f} |"
        )
    lines.append("")
    for name, method_runs in by_method(runs).items():
        if target is None or budget is None or (task.baseline and name == task.baseline.name):
            continue
        accuracy = statistics.mean(r["test_acc"] for r in method_runs)
        seconds = statistics.mean(r["train_seconds"] for r in method_runs)
        verdict = "yes" if accuracy >= target and seconds <= budget else "no"
        if task.seconds:
            lines.append(
                f"- {name}: mean test accuracy {accuracy:.2%} vs the target {target:.2%}, in "
                f"{seconds:.1f} s of training: the target in at most {task.seconds:g} s: **{verdict}**"
            )
        else:
            seed_seconds = 3 * budget  # the budget is a third of the seed's time
            lines.append(
                f"- {name}: mean test accuracy {accuracy:.2%} vs the seed's {target:.2%}, in "
                f"{seconds:.1f} s = {seconds / seed_seconds:.2f} of the seed's {seed_seconds:.1f} s: "
                f"at least the seed's accuracy in at most a third of its time: **{verdict}**"
            )
    for method_runs in by_method(runs).values():
        lines.append(f"- `{method_runs[0]['command']}`")
    return "\n".join(lines) + "\n"


def plot(results, tasks, path):
    """Validation accuracy against the training clock (`clock`), per method,
    and beyond the end of each line a star at the method's final test
    accuracy (not the validation accuracy the line shows) and training
    seconds (means over seeds), with the task's target accuracy (dashed) and
    the seconds allowed for it (dotted): a method meets the target where its
    star lies above and left of where they cross."""
    from common.plots import plt

    figure, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    for ax, (task_name, runs) in zip(axes[0], results.items()):
        target, budget = target_and_budget(tasks[task_name], runs)
        if target is not None:  # None: the seed baseline, which sets it, has no finished run.
            ax.axhline(target, color="gray", linestyle="--", linewidth=1, label=f"target {target:.2%}")
        if budget:
            allowed = "allowed" if tasks[task_name].seconds else "(a third of the seed's)"
            ax.axvline(budget, color="gray", linestyle=":", linewidth=1, label=f"{budget:.1f} s {allowed}")
        for name, method_runs in by_method(runs).items():
            epochs = min(len(r["val_accuracy"]) for r in method_runs)
            seconds = [statistics.mean(clock(r)[i] for r in method_runs) for i in range(epochs)]
            accuracy = [statistics.mean(r["val_accuracy"][i] for r in method_runs) for i in range(epochs)]
            (line,) = ax.plot(seconds, accuracy, "o-", label=name)
            test_accuracy = statistics.mean(r["test_acc"] for r in method_runs)
            train_seconds = statistics.mean(r["train_seconds"] for r in method_runs)
            ax.plot(train_seconds, test_accuracy, "*", markersize=12, color=line.get_color())
        ax.plot([], [], "*", markersize=12, color="gray", label="final test accuracy")
        ax.set_title(task_name)
        ax.set_xlabel("training seconds (mean over seeds)")
        ax.set_ylabel("validation accuracy; test accuracy at the stars")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def machine():
    """What the benchmark records of its start, as its .jsonl's first line.
    The devices and versions come from each run's own `backend` line: this
    process never asks a backend for its devices, which on a GPU would make
    JAX take memory that the runs need."""
    return {
        "benchmark": shlex.join(["python", "-m", "benchmarks", *sys.argv[1:]]),
        "suite": suite,
        "date": datetime.date.today().isoformat(),
        "machine": platform.machine(),
        "processor": benchmarks.processor(),
        "commit": benchmarks.commit(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
    }


def header(started, results):
    """The report's first paragraph: the machine (`machine()`'s record, or
    None for a .jsonl written before it was recorded) and what the runs'
    `backend` lines said."""
    if started:
        at = f" at commit {started['commit']}" if started.get("commit") else ""
        where = (
            f"Measured {started['date']} with `{started['benchmark']}`{at} on {started['machine']} "
            f"({started['processor']}), {started['cores']} CPU cores, Python {started['python']}."
        )
    else:
        where = "Measured on a machine that its .jsonl does not record."
    backends = dict.fromkeys(run["backend"] for runs in results.values() for run in runs if run.get("backend"))
    return (
        f"{where} Backend: {'; '.join(backends) or 'not recorded'}. Training seconds are the time in "
        "`model.fit` from its callbacks' start; \"other s\" is the rest of each run's wall time.\n"
    )


def report(stem, started, tasks, results):
    """Writes the table (`stem`.md) of the runs of `tasks` (a suite's), then
    the plot (.png), and prints the table."""
    common.on_interrupt = f"all the runs are in {stem}.jsonl; the table was not written"
    text = header(started, results) + "\n" + "\n".join(table(name, tasks[name], runs) for name, runs in results.items())
    try:
        with open(stem + ".md", "w") as f:
            f.write(text)
        common.on_interrupt = f"the table is in {stem}.md and the runs in {stem}.jsonl; the plot was not drawn"
        plot(results, tasks, stem + ".png")
    except OSError as error:
        raise UserError(f"cannot write the table and plot beside {stem}.jsonl ({reason(error)}); "
                        "copy the .jsonl to a folder you can write to and give that copy to --from_jsonl") from None
    common.on_interrupt = f"the table, its plot and the runs are in {stem}.md, .png and .jsonl"
    print(text)
    print(f"wrote     {stem}.md, {stem}.png")


def main():
    config = common.config.apply_overrides(globals())
    if from_jsonl:
        report(*earlier_runs(from_jsonl))
        return
    chosen = chosen_tasks()
    stem, raw = new_results_file(chosen)
    # Each benchmark run writes its runs' folders into a fresh folder of its
    # own: a script resumes an unfinished run with the same settings, and one
    # left in runs_dir by an interrupted benchmark would otherwise be
    # continued, its earlier epochs' seconds counted as this run's. (The
    # runs start in the repository's folder, so a relative path means one
    # from where the benchmark started.)
    runs_folder = os.path.join(os.path.abspath(runs_dir), os.path.basename(stem))
    print(f"benchmark {config}")
    started = machine()
    results = {}
    try:
        try:
            os.makedirs(runs_folder)
        except OSError as error:
            raise UserError(
                f"cannot make the runs' folder {runs_folder} ({reason(error)}); give a --runs_dir you can write to"
            ) from None
        deadline = time.monotonic() + stop_after if stop_after else None
        with raw, tempfile.TemporaryDirectory(prefix="jax-cache-") as cache_dir:
            raw.write(json.dumps(started) + "\n")
            try:
                for task_name in chosen:
                    task = SUITES[suite][task_name]
                    for method in [task.baseline, *task.methods]:
                        if method is None:
                            continue
                        runs = baseline_seeds if method is task.baseline and baseline_seeds >= 0 else seeds
                        for seed in range(runs):
                            run = run_method(method, task.dataset, seed, cache_dir, runs_folder, deadline)
                            results.setdefault(task_name, []).append(run)
                            raw.write(json.dumps({"task": task_name, **run}) + "\n")
                            raw.flush()
                            print(
                                f"{task_name:12s} {method.name:50s} seed {seed}: test_acc={run['test_acc']:.4f} "
                                f"train_seconds={run['train_seconds']:.1f}",
                                flush=True,
                            )
            except OutOfTime as stopped:
                if not results:
                    raise UserError(
                        f"--stop_after={stop_after:g} s passed before any run finished; give it more seconds"
                    ) from None
                # The table says how many runs each method has.
                print(f"stopped   after --stop_after={stop_after:g} s: {stopped}", flush=True)
    except BaseException as error:
        if any(results.values()):
            kept = f"the runs that finished are in {stem}.jsonl; --from_jsonl={stem}.jsonl writes their table"
            common.on_interrupt = kept
            if isinstance(error, UserError):  # A method that failed: one line, which says this too.
                raise UserError(f"{error}; {kept}") from None
        else:
            os.remove(stem + ".jsonl")  # No run finished: nothing to keep.
            with contextlib.suppress(OSError):
                os.rmdir(runs_folder)  # Only if empty: an unfinished run stays.
        raise
    report(stem, started, SUITES[suite], results)
    print(f"          and every run's figures in {stem}.jsonl")


def earlier_runs(path):
    """(stem, machine record or None, the tasks of its suite, {task: runs})
    of the .jsonl at `path`, whose table and plot are not written yet. Its
    suite is the one its first line records; for a .jsonl written before
    that, --suite where given, else the one its name starts with."""
    shown = visible(path)
    stem = path.removesuffix(".jsonl")
    if stem == path:
        raise UserError(f"--from_jsonl={shown} is not a .jsonl file; give the .jsonl that a benchmark wrote")
    try:
        with open(path) as f:
            records = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError) as error:  # A UnicodeDecodeError is a ValueError.
        raise UserError(f"--from_jsonl={shown} cannot be read ({reason(error)}); give the .jsonl that a benchmark wrote") from None
    if not all(isinstance(record, dict) for record in records):
        raise UserError(f"--from_jsonl={shown} is not a benchmark's .jsonl (a line of it is not a record)")
    started = records.pop(0) if records and "benchmark" in records[0] else None
    if any("task" not in record for record in records):
        raise UserError(
            f"--from_jsonl={shown} is not a benchmark's .jsonl (its runs name no task; "
            "python -m benchmarks.transfer_phases writes such files, with their table)"
        )
    if started:
        suite_name = started["suite"]
    elif "suite" in common.config.given():
        suite_name = suite
    else:  # cpu-... or gpu-...
        suite_name = os.path.basename(path).partition("-")[0]
    if suite_name not in SUITES:
        raise UserError(f"--from_jsonl={shown}: its suite is not recorded in it; give --suite=cpu or --suite=gpu")
    results = {}
    for record in records:
        if record["task"] not in SUITES[suite_name]:
            raise UserError(
                f"--from_jsonl={shown} holds a run of {record['task']!r}, which is not a task of the {suite_name} suite"
                + ("" if started else "; give --suite=<its suite>")
            )
        results.setdefault(record["task"], []).append(record)
    if not results:
        raise UserError(f"--from_jsonl={shown} holds no finished run: there is no table to write")
    written = [name for name in (stem + ".md", stem + ".png") if os.path.lexists(name)]
    if written:
        raise UserError(f"{visible(written[0])} exists already, and is not overwritten; move it away to write it again")
    return stem, started, SUITES[suite_name], results


def chosen_tasks():
    """The tasks to run, once the benchmark's own settings are checked."""
    if suite not in SUITES:
        raise UserError(f"--suite={suite!r} is not a suite; use one of {', '.join(SUITES)}")
    chosen = [name.strip() for name in tasks.split(",") if name.strip()] if tasks else list(SUITES[suite])
    if not chosen:
        raise UserError(f"--tasks={tasks!r} names no task; name some of {', '.join(SUITES[suite])}, or leave it out for all")
    unknown = [name for name in chosen if name not in SUITES[suite]]
    if unknown:
        raise UserError(f"--tasks: {', '.join(unknown)} not in the {suite} suite; use {', '.join(SUITES[suite])}")
    twice = sorted({name for name in chosen if chosen.count(name) > 1})
    if twice:
        raise UserError(f"--tasks names {', '.join(twice)} more than once; name each task once")
    if not 0 <= stop_after < float("inf"):
        raise UserError(f"--stop_after={stop_after:g} is not allowed: give the seconds (0 means no limit)")
    if seeds < 1:
        raise UserError(f"--seeds={seeds} is not allowed: each method needs at least one run")
    if baseline_seeds < -1:
        raise UserError(f"--baseline_seeds={baseline_seeds} is not allowed: give -1 (as many as seeds), 0 (none) or more")
    needs_seed = [name for name in chosen if not SUITES[suite][name].target]
    if baseline_seeds == 0 and needs_seed:
        raise UserError(
            f"--baseline_seeds=0: {', '.join(needs_seed)} take their target from the seed baseline; "
            "run at least one seed baseline for them"
        )
    # A missing dataset stops the benchmark now, not after the tasks before it.
    for dataset in sorted({SUITES[suite][name].dataset for name in chosen}):
        if data_dir and not os.path.isdir(os.path.join(data_dir, dataset)):
            raise UserError(
                f"--data_dir={data_dir!r} has no {dataset}/ folder; give the folder that holds the datasets' "
                "folders (mnist/, cifar10/), such as ../shared/data"
            )
    return chosen


def new_results_file(chosen):
    """The stem of this benchmark run's files in out_dir, named by the suite,
    the start time and the tasks, and its .jsonl, opened for writing
    (`benchmarks.new_results_file`). The name is new in runs_dir too: a
    folder there left by a benchmark stopped in the same second holds an
    unfinished run, which this one's scripts would otherwise continue."""
    started = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = os.path.join(out_dir, "-".join([suite, started, *(chosen if tasks else [])]))
    try:
        os.makedirs(out_dir, exist_ok=True)
        return benchmarks.new_results_file(base, lambda stem: os.path.exists(os.path.join(runs_dir, os.path.basename(stem))))
    except OSError as error:
        # makedirs says "[Errno 17] File exists" of a file in the folder's place.
        why = "it is a file, not a folder" if os.path.isfile(out_dir) else reason(error)
        raise UserError(f"cannot write the results to --out_dir={out_dir!r} ({why}); give a folder you can write to") from None


class _Terminated(BaseException):
    """SIGTERM (kill, a job scheduler), raised where the benchmark is."""


def _terminate(signum, frame):
    raise _Terminated


if __name__ == "__main__":
    # SIGTERM unwinds like Ctrl-C, so that the running script is stopped
    # too and the finished runs are kept; then the benchmark says so and
    # ends as SIGTERM ends a process.
    signal.signal(signal.SIGTERM, _terminate)
    try:
        main()
    except _Terminated:
        common.print_on_terminate()
        os.kill(os.getpid(), signal.SIGTERM)
