"""Benchmarks: the collection's scripts side by side with the seed tutorials' code.

    python -m benchmarks --help

The seed baselines (`seed_*.py`) are the tutorials' models, optimizers,
batch sizes and epochs as they were. They differ from the tutorials' code
only where the benchmark needs to time them as it times the scripts: they
hold out a validation split drawn with the seed as the scripts do (Keras'
`validation_split` takes the last images), for the accuracy curve; they call
`common.device.setup` (the seed, and on a GPU the mixed precision the
scripts get too), compile their steps before the clock starts, and write a
run folder through `common.output` (the epoch table in place of Keras'
progress bar, history.csv, the resume state).
"""

import contextlib
import os
import platform
import subprocess

# Overrides that make a script fast on the CPU: one short run that reaches the
# seed's accuracy in a fraction of its time. README.md lists them with what
# they measured. cifar10_cnn's trade far more accuracy for time than the
# MNIST ones (about 55% against the seed's 50%): the seed's own time moves
# a lot from run to run on the same CPU (56 s on 2026-11-28, 40 s on
# 2026-12-02), and width 12 with batches of 128 (61%, 14 s) then took 0.35
# of it.
CPU_FAST = {
    "mnist_mlp": ["--epochs=3", "--batch_size=256", "--learning_rate=3e-3"],
    # Batches of 128 on the first 36,000 images (32,400 of them to train on):
    # more steps per image than batches of 512 on them all, and 0.6 of their
    # time in trials side by side on the CPU of 2026-12-06 (three seeds of
    # these, seed 0 twice of those), where
    # those took 0.36 of the seed's time and these 0.26 in the suite
    # (docs/measurements.md, "mnist_cnn's overrides on a slower CPU").
    "mnist_cnn": ["--epochs=1", "--width=8", "--shift=0", "--batch_size=128", "--learning_rate=1e-2", "--train_samples=36000"],
    "cifar10_cnn": ["--epochs=1", "--width=8", "--batch_size=256", "--flip=False", "--shift=0", "--learning_rate=1.6e-2"],
}

# Overrides for a lent GPU (JAX backend, bfloat16): batches that divide the
# training and validation sets (one compiled step shape each) and the
# schedule's peak learning rate raised with the batch. Chosen from one-seed
# trials on an H100; README.md lists what they measured.
GPU_FAST = {
    "mnist_mlp": ["--batch_size=1000", "--epochs=12", "--learning_rate=6e-3"],
    "mnist_cnn": ["--batch_size=500", "--epochs=2", "--learning_rate=1e-2"],
    "mnist_cnn_long": ["--batch_size=500", "--epochs=8", "--learning_rate=6e-3"],
    "cifar10_cnn": ["--batch_size=1000", "--epochs=30", "--learning_rate=1e-2", "--width=64"],
    "resnet34": ["--batch_size=500", "--epochs=120", "--learning_rate=0.4"],
}
# Several training steps per compiled call: the GPU suite's mnist_mlp and
# cifar10_cnn tasks run these beside the above. On an H200 they took the
# MLP's 12 epochs from 1.1 to 0.6 s, the same accuracy to the digit, and left
# cifar10_cnn's longer steps as they were (6.3 and 6.2 s, one seed).
# Nine divides the batches of an epoch of both (54 and 45), so every call
# has the same shape.
NINE_STEPS_PER_CALL = "--steps_per_execution=9"

# The same with the whitening first layer: 2.4 points better after one epoch
# with the fast overrides of 2026-11-28 (width 12; with these, 1.4 and 0.65
# in the CPU suites of 2026-12-04 22:55 and 2026-12-05 07:39), and 1.9
# after eight, on the CPU (docs/measurements.md); on an H200 after 30
# epochs, 89.30% (two seeds) against 88.75% (one; README's "GPU results").
CPU_FAST["cifar10_cnn_whitened"] = [*CPU_FAST["cifar10_cnn"], "--whiten=True"]
GPU_FAST["cifar10_cnn_whitened"] = [*GPU_FAST["cifar10_cnn"], "--whiten=True"]

# What carried the whitened network furthest in 8-epoch CPU runs
# (docs/measurements.md, "Other settings on the whitened 8-epoch runs"): L2
# 5e-4, no dropout, GELU, and SGD with Nesterov momentum at a peak of 0.5;
# 2.2 and 2.7 points above the whitened runs without them (flip + shift TTA,
# two seeds), at width 16 with batches of 500. With batches of 1000, 0.5 beat
# 1.0 (seed 0, in a version with GELU after the whitening too). These come
# after GPU_FAST's overrides, whose Adam learning rate they replace (the last
# --key=value wins). On an H200, at width 64 for 30 epochs: 90.09% (91.25%
# with flip + shift TTA) against 89.30% (90.67%) without them, two seeds.
WHITENED_TUNED = ["--l2=5e-4", "--dropout=0", "--activation=gelu", "--optimizer=sgd", "--learning_rate=0.5"]


def processor():
    """The processor's name where the system gives it (Linux's /proc/cpuinfo),
    with its widest vector instructions (two machines both named "AMD EPYC"
    may differ there), else its kind: accuracies and seconds on a CPU move
    from one processor to another."""
    name, flags = None, None
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip() and name is None:
                    name = value.strip()
                elif key.strip() == "flags" and flags is None:
                    flags = value.split()
    if name is None:
        return platform.processor() or platform.machine()
    if flags is None:
        return name
    vectors = "AVX-512" if "avx512f" in flags else "AVX2, no AVX-512" if "avx2" in flags else "no AVX2"
    return f"{name}, {vectors}"


def commit():
    """The commit of the code that runs (short), and whether files tracked by
    git differ from it; None outside a git checkout (a lent GPU's copy)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # One quick call that takes no lock (a git command of the user's at the
    # same moment is left alone); --match=NONE gives the hash even where
    # tags exist.
    command = ["git", "--no-optional-locks", "-C", here, "describe", "--always", "--dirty", "--match=NONE"]
    try:
        found = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):  # No git, or one that hangs.
        return None
    if found.returncode:
        return None
    name = found.stdout.strip()
    return name.removesuffix("-dirty") + (" with uncommitted changes" if name.endswith("-dirty") else "")


def kept_epoch(validation, patience):
    """The epoch (from 0) whose weights EarlyStopping(monitor="val_accuracy",
    patience=patience, restore_best_weights=True) keeps, given each epoch's
    validation accuracy: the first best, looking only as far as patience
    lets training go."""
    best, wait = 0, 0
    for epoch in range(1, len(validation)):
        if validation[epoch] > validation[best]:
            best, wait = epoch, 0
        else:
            wait += 1
            if wait >= patience:
                break
    return best


def new_results_file(base, taken=lambda stem: False):
    """A new results file: the stem `base`, with -2, -3, ... added where a
    .jsonl of that name exists or `taken(stem)` says the name is in use,
    and its .jsonl, created and opened for writing. No earlier results are
    overwritten, even those of a run started in the same second."""
    number = 1
    while True:
        stem = base if number == 1 else f"{base}-{number}"
        if not taken(stem):
            try:
                return stem, open(stem + ".jsonl", "x")
            except FileExistsError:
                pass
        number += 1
