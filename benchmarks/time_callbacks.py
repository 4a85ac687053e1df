"""Times the callbacks of one run of a script: where its training seconds go
beyond the epochs themselves.

    python -m benchmarks.time_callbacks mnist_mlp.py --data_dir=../shared/data/mnist

runs the script as usual and, at exit, prints the seconds spent in each
callback hook (`callbacks EpochTable.on_epoch_end=0.003 ...`).
"""

import atexit
import collections
import runpy
import sys
import time

from common import output

totals = collections.defaultdict(float)
make_callbacks = output.Run.callbacks


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
    return callbacks


output.Run.callbacks = timed_callbacks
atexit.register(lambda: print("callbacks " + " ".join(f"{k}={v:.3f}" for k, v in sorted(totals.items()))))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
