"""Times the callbacks of one run of a script, and the wait before each
epoch's first step: where its training seconds go beyond the steps.

    python -m benchmarks.time_callbacks mnist_mlp.py --data_dir=../shared/data/mnist

runs the script as usual and, at exit, prints the seconds spent in each
callback hook (`callbacks EpochTable.on_epoch_end=0.003 ...`), then the
seconds each `fit` took before its first callback began, mostly building
its input pipeline (`fit setup 0.36 s`), which the training seconds leave
out (the benchmark counts them in "other s"), then the seconds from each
epoch's start to its first step, and the median step (`first-step waits
0.02 3.64 ... | median step 0.213 s`), and after which epochs the resume
state was saved, with the seconds `np.savez` took to write each in the
background (`resume states after epochs 1 2 4 6 | savez 0.52 s each`). On TensorFlow,
TF_DATA_AUTOTUNE=1 leaves tf.data's autotuning on, as it was before
`common/device.py` turned it off, to measure what that costs.
"""

import atexit
import collections
import os
import runpy
import statistics
import sys
import time

import keras

import common
from common import UserError, device, output, resume

totals = collections.defaultdict(float)
waits, steps = [], []  # seconds before each epoch's first step, and of every step
saves = []  # (epoch, seconds) of each resume state written
setups = []  # seconds from each fit's call to its first callback's on_train_begin
called = []  # when fit was last called
make_callbacks = output.Run.callbacks
save_npz = resume.save_npz
fit = keras.Model.fit


class StepClock(keras.callbacks.Callback):
    """Notes the seconds from each epoch's start to its first step, and every step's seconds."""

    def on_epoch_begin(self, epoch, logs=None):
        self.last = time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            waits.append(time.perf_counter() - self.last)
        self.begin = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        steps.append(time.perf_counter() - self.begin)


class FitSetup(keras.callbacks.Callback):
    """Notes the seconds from fit's call to the start of its callbacks."""

    def on_train_begin(self, logs=None):
        setups.append(time.perf_counter() - called[-1])


def noted_fit(self, *args, **kwargs):
    called.append(time.perf_counter())
    return fit(self, *args, **kwargs)


def timed_callbacks(self, *args, **kwargs):
    callbacks = make_callbacks(self, *args, **kwargs)
    for callback in callbacks:
        for hook in ("on_train_begin", "on_epoch_begin", "on_epoch_end", "on_train_end"):
            method = getattr(callback, hook)

            def timed(*a, method=method, key=f"{type(callback).__name__}.{hook}", **k):
                start = time.perf_counter()
                result = method(*a, **k)
                totals[key] += time.perf_counter() - start
                return result

            setattr(callback, hook, timed)
    return [FitSetup(), *callbacks, StepClock()]


def timed_save(path, arrays):
    start = time.perf_counter()
    save_npz(path, arrays)
    saves.append((int(arrays["epochs_done"]), time.perf_counter() - start))


def report():
    if not totals:
        return  # The script stopped before its training started (a bad setting, say): nothing was timed.
    print("callbacks " + " ".join(f"{k}={v:.3f}" for k, v in sorted(totals.items())))
    print(f"fit setup {' '.join(f'{setup:.2f}' for setup in setups)} s")
    if steps:
        print(f"first-step waits {' '.join(f'{wait:.2f}' for wait in waits)} | median step {statistics.median(steps):.3f} s")
    if saves:
        epochs = " ".join(str(epoch) for epoch, _ in saves)
        print(f"resume states after epochs {epochs} | savez {statistics.mean(s for _, s in saves):.2f} s each")


common.handle_errors()
if sys.argv[1:2] in (["-h"], ["--help"]):
    print(__doc__.strip())
    raise SystemExit(0)
if len(sys.argv) < 2 or not sys.argv[1].endswith(".py") or not os.path.isfile(sys.argv[1]):
    # Anything else would be run as Python: README.md ended in a SyntaxError traceback.
    given = f"{sys.argv[1]!r} is not a script's file; " if len(sys.argv) > 1 else ""
    raise UserError(f"{given}use: python -m benchmarks.time_callbacks SCRIPT.py [--key=value ...]")
output.Run.callbacks = timed_callbacks
keras.Model.fit = noted_fit
resume.save_npz = timed_save
if os.environ.get("TF_DATA_AUTOTUNE") == "1":
    device._turn_off_tf_data_autotuning = lambda: None
atexit.register(report)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
