"""Shared fixtures: tiny synthetic datasets in the real on-disk formats, and a
helper that runs a training script in a subprocess like a user would."""

import contextlib
import gzip
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Real data for the accuracy checks: ../shared/data beside the checkout, or
# wherever SHARED_DATA points. Those tests are skipped when it is absent.
SHARED_DATA = os.environ.get("SHARED_DATA", os.path.join(REPO, "..", "shared", "data"))
REAL_MNIST = os.path.join(SHARED_DATA, "mnist")
# Marks a test that trains on the real MNIST copy.
needs_real_mnist = pytest.mark.skipif(
    not os.path.exists(os.path.join(REAL_MNIST, "mnist.npz")), reason="real MNIST copy not found (set SHARED_DATA)"
)
# Another network's weights than Xception's, small (the shared copy of Keras' MobileNet 0.25 at 224).
MOBILENET = os.path.join(SHARED_DATA, "keras_weights", "mobilenet_2_5_224_tf_no_top.h5")
needs_mobilenet = pytest.mark.skipif(not os.path.exists(MOBILENET), reason="shared MobileNet weights not found")


@pytest.fixture(autouse=True)
def no_script_read(monkeypatch):
    """Each test starts as if no script had started in this process: a test
    that applies a script's settings (which reads its code, for the run
    folder's copy) leaves no code behind for the runs of the tests after it."""
    import common.config

    monkeypatch.setattr(common.config, "script", None)


@pytest.fixture
def figures(monkeypatch):
    """The Matplotlib figures drawn during a test, kept open instead of closed
    after saving, so that the test can read back what they show."""
    from common.plots import plt

    drawn, close = [], plt.close
    monkeypatch.setattr(plt, "close", drawn.append)
    yield drawn
    for figure in drawn:
        close(figure)


def synthetic_mnist(num_train=240, num_test=60, seed=0):
    """MNIST-shaped uint8 images whose label is drawn as a bright bar, so that
    even a tiny model can learn something from them."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = rng.integers(0, 10, size=n).astype(np.uint8)
        x = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
        for image, label in zip(x, y):
            image[2 + 2 * label : 4 + 2 * label, 4:24] = 255
        return x, y

    return make(num_train), make(num_test)


def write_mnist_npz(folder, data=None):
    (x_train, y_train), (x_test, y_test) = data or synthetic_mnist()
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "mnist.npz")
    np.savez_compressed(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def idx_bytes(array):
    """An array in the IDX format of the original MNIST files."""
    magic = 2051 if array.ndim == 3 else 2049
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist_idx(folder, data=None, gz=False):
    (x_train, y_train), (x_test, y_test) = data or synthetic_mnist()
    os.makedirs(folder, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": x_train,
        "train-labels-idx1-ubyte": y_train,
        "t10k-images-idx3-ubyte": x_test,
        "t10k-labels-idx1-ubyte": y_test,
    }
    for name, array in arrays.items():
        opener = gzip.open if gz else open
        with opener(os.path.join(folder, name + (".gz" if gz else "")), "wb") as f:
            f.write(idx_bytes(array))
    return folder


@pytest.fixture
def mnist_dir(tmp_path):
    return os.path.dirname(write_mnist_npz(str(tmp_path / "mnist")))


def run_script(script, *args, env=None, timeout=600):
    """Runs `python <script> args...` from the repository root."""
    return subprocess.run(
        [sys.executable, os.path.join(REPO, script), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def run_until_epoch(script, *args, epoch, how=signal.SIGKILL):
    """Starts `python <script> args...` and kills it with SIGKILL (or the
    signal `how`) as soon as the epoch table prints the row of `epoch`;
    returns what it printed."""
    return run_until(script, *args, printed=lambda line: line.split()[:1] == [str(epoch)], how=how)


def ctrl_c_works():
    """For Popen's preexec_fn: SIGINT back to its default in the child, where
    Python makes it a KeyboardInterrupt. A suite started in the background
    (`pytest &` in a script) hands its children SIGINT ignored, and Python
    then leaves it ignored: the child would not stop."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_until(script, *args, printed, how=signal.SIGKILL, python_args=()):
    """Starts `python <script> args...` and kills it with SIGKILL (or the
    signal `how`) as soon as it prints a line for which `printed(line)` is
    true; returns its lines. SIGKILL ends it at once, a state being written
    in the background included; after SIGINT (Ctrl-C) it first finishes
    writing the state it was writing. `python_args` go before the script
    (such as `-c` and code that runs it)."""
    command = [sys.executable, *python_args, os.path.join(REPO, script), *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # Each line as it is printed, not when a buffer fills.
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        preexec_fn=ctrl_c_works,
    )
    lines = []
    for line in process.stdout:
        lines.append(line)
        if printed(line):
            process.send_signal(how)
            break
    process.wait()
    assert process.returncode == -how, "".join(lines)
    return lines


@contextlib.contextmanager
def within(seconds):
    """Fails the test, instead of hanging it, when the block takes longer
    than `seconds` (such as a read that waits forever on a pipe). A whole
    number of seconds, in the main thread, and not inside another `within`:
    it uses the process's one alarm."""

    def fail(*_):
        # pytest's failure is no Exception, so no `except Exception` in the code can take it for bad input.
        pytest.fail(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def final_fields(stdout):
    """The key=value pairs of the `final ...` line, which must be the last line."""
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("final "), f"last line is not the final line: {last!r}"
    return dict(pair.split("=", 1) for pair in last.split()[1:])


CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def synthetic_cifar10(per_class_train=4, per_class_test=2, seed=0):
    """CIFAR-shaped uint8 images, `per_class_*` of each class, with the classes
    interleaved (0, 1, ..., 9, 0, 1, ...) as the loader orders image trees."""
    rng = np.random.default_rng(seed)

    def make(per_class):
        y = np.tile(np.arange(10), per_class)
        x = rng.integers(0, 256, size=(len(y), 32, 32, 3)).astype(np.uint8)
        x[:, :4, :4, :] = (y * 25)[:, None, None, None]  # A label-coloured corner.
        return x, y

    return make(per_class_train), make(per_class_test)


def write_cifar_batches(folder, data=None):
    """The original format: five pickled training batches and a test batch."""
    import pickle

    (x_train, y_train), (x_test, y_test) = data or synthetic_cifar10(per_class_train=5)
    os.makedirs(folder, exist_ok=True)
    parts = np.array_split(np.arange(len(x_train)), 5)
    batches = {f"data_batch_{i + 1}": (x_train[idx], y_train[idx]) for i, idx in enumerate(parts)}
    batches["test_batch"] = (x_test, y_test)
    for name, (x, y) in batches.items():
        rows = x.transpose(0, 3, 1, 2).reshape(len(x), -1)  # 1024 R, 1024 G, 1024 B.
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump({b"data": rows, b"labels": [int(v) for v in y]}, f, protocol=2)
    return folder


def write_image_tree(root, data=None, extension=".png", classes=CIFAR_CLASSES):
    """train/<class>/NNNN<ext> and test/<class>/NNNN<ext>, as in the JPEG copy."""
    from PIL import Image

    (x_train, y_train), (x_test, y_test) = data or synthetic_cifar10()
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        for label, name in enumerate(classes):
            folder = os.path.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            for i, image in enumerate(x[y == label]):
                Image.fromarray(image).save(os.path.join(folder, f"{i:04d}{extension}"))
    return root


def make_tar_gz(path, folder, arcname, shuffled=False):
    """A .tar.gz of `folder`, stored as `arcname`; `shuffled` stores its
    files in a random order, not sorted by name, as `tar czf` stores them
    in the order the file system lists them."""
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        if not shuffled:
            tar.add(folder, arcname=arcname)
            return path
        files = []
        for where, folders, names in os.walk(folder):
            tar.add(where, arcname=os.path.normpath(os.path.join(arcname, os.path.relpath(where, folder))), recursive=False)
            files += [os.path.join(where, name) for name in names]
        for file in np.random.default_rng(0).permutation(sorted(files)):
            tar.add(file, arcname=os.path.join(arcname, os.path.relpath(file, folder)))
    return path


def reads_of(monkeypatch):
    """The offsets in their archive of the tar members read from now on, in
    the order they are read."""
    import tarfile

    offsets = []
    extractfile = tarfile.TarFile.extractfile

    def recorded(tar, member):
        offsets.append(tar.getmember(member).offset if isinstance(member, str) else member.offset)
        return extractfile(tar, member)

    monkeypatch.setattr(tarfile.TarFile, "extractfile", recorded)
    return offsets


PHOTO_CLASSES = ("cats", "dogs", "owls")


def write_photo_tree(root, classes=PHOTO_CLASSES, per_class=10, seed=0):
    """root/<class>/NNN.jpg photos of varied sizes, each class tinted its own
    colour so that a tiny model can tell them apart, plus the stray files a
    real collection has: a LICENSE.txt beside the classes, a notes.txt and a
    truncated JPEG inside a class folder (neither is an image)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for label, name in enumerate(classes):
        folder = os.path.join(root, name)
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            height, width = rng.integers(40, 90, size=2)
            image = rng.integers(0, 120, size=(height, width, 3)).astype(np.uint8)
            image[..., label % 3] += 120
            Image.fromarray(image).save(os.path.join(folder, f"{i:03d}.jpg"), quality=95)
    with open(os.path.join(root, "LICENSE.txt"), "w") as f:
        f.write("Photos under CC-BY.\n")
    with open(os.path.join(root, classes[0], "notes.txt"), "w") as f:
        f.write("not a photo\n")
    with open(os.path.join(root, classes[-1], "broken.jpg"), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 half a JPEG")
    return root
