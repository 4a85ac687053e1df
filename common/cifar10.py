"""CIFAR-10 loading: the Keras download, the original pickled batches, or a
tree of image files, in a folder or inside a .tar.gz.

Decoding 60,000 image files takes a while, so the decoded arrays are cached in
an .npz file beside the source (in the Keras cache when that folder is
read-only) and rebuilt when the source changes.
"""

import codecs
import contextlib
import glob
import hashlib
import io
import itertools
import os
import pickle
import zlib

import numpy as np

from common import UserError, reason
from common.data import IMAGE_EXTENSIONS, as_rgb, checked, download, hidden, is_archive, keras_cache_dir, matches_hash, not_an_image, open_tar, read_file

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_NAME = "cifar-10-python.tar.gz"  # The download's name, which says that it holds the pickled batches.
# The hash that keras.datasets.cifar10 checks.
CIFAR10_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
# The name under which keras.datasets.cifar10.load_data() keeps the same
# archive in the Keras cache (Keras 3; it also extracts it beside).
KERAS_ARCHIVE = "cifar-10-batches-py-target_archive"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
# Part of every cache fingerprint: change it when the decoded arrays change.
_CACHE_FORMAT = "classes interleaved, v3: deep images scaled, more formats, hidden files left out"


def load_cifar10(data_dir="", cache_dir=None, origin=CIFAR10_URL, file_hash=CIFAR10_SHA256, allow_pickle=False):
    """Loads CIFAR-10 as `(x_train, y_train), (x_test, y_test)`: uint8 images
    of shape (N, 32, 32, 3) and integer labels of shape (N,), in CIFAR-10's
    class order (`CLASSES`).

    `data_dir` may hold, in this order of preference: the extracted
    `cifar-10-batches-py/` folder (or its batch files), `cifar-10-python.tar.gz`,
    an image tree `train/<class>/*.jpg` + `test/<class>/*.jpg` (possibly one
    folder down), or a `.tar.gz` of such a tree; or it is one of those two
    archives itself. Without `data_dir`, the
    Keras cache is used (this project's download, or the archive that
    `keras.datasets.cifar10.load_data()` left there), else the archive is
    downloaded and its sha256 checked.

    The batches are pickles, and a pickle can run code as it loads. They are
    read from an archive whose sha256 is `file_hash` (Keras' download), and
    from any other archive or folder only with `allow_pickle=True`; even then
    an unpickler that builds NumPy arrays and nothing else reads them.
    """
    if not data_dir:
        archive = os.path.join(keras_cache_dir(cache_dir), KERAS_ARCHIVE)
        if not (os.path.isfile(archive) and matches_hash(archive, file_hash)):
            archive = download(
                origin, file_hash, cache_dir, ARCHIVE_NAME, "CIFAR-10",
                use_anyway="move it into a folder and pass --data_dir=that/folder --allow_pickle=True",
            )
        return checked(_read_batches_from_tar(archive), (32, 32, 3), len(CLASSES))
    if os.path.isdir(data_dir):
        return checked(_read_folder(data_dir, cache_dir, file_hash, allow_pickle), (32, 32, 3), len(CLASSES))
    if is_archive(data_dir) and os.path.lexists(data_dir):
        return checked(_read_archive(data_dir, cache_dir, file_hash, allow_pickle), (32, 32, 3), len(CLASSES))
    what = "is neither a folder nor a .tar.gz or .tgz" if os.path.lexists(data_dir) else "does not exist"
    raise UserError(
        f"data_dir {data_dir!r} {what}; give a folder that holds CIFAR-10 (cifar-10-python.tar.gz, "
        "cifar-10-batches-py/ or a train/ and test/ image tree), or a .tar.gz of the batches or the tree itself"
    )


def _read_folder(data_dir, cache_dir, file_hash, allow_pickle):
    for folder in (os.path.join(data_dir, "cifar-10-batches-py"), data_dir):
        if os.path.exists(os.path.join(folder, "data_batch_1")):
            if not allow_pickle:
                raise UserError(
                    f"{folder} holds pickled CIFAR-10 batches, which could run code as they load "
                    "and cannot be verified: give cifar-10-python.tar.gz instead (checked against "
                    "Keras' sha256), or pass --allow_pickle=True if you trust them"
                )
            missing = [name for name in BATCHES if not os.path.exists(os.path.join(folder, name))]
            if missing:
                raise UserError(f"{folder} lacks the batch {missing[0]}; copy the whole folder again")
            return _read_batches(lambda name: os.path.join(folder, name), lambda path: io.BytesIO(read_file(path)))
    archive = os.path.join(data_dir, ARCHIVE_NAME)
    if os.path.exists(archive):
        return _read_archive(archive, cache_dir, file_hash, allow_pickle)
    tree = _find_image_tree(data_dir)
    if tree:
        return _cached(tree, cache_dir, _read_image_tree)
    tars = sorted(path for path in glob.glob(os.path.join(data_dir, "*")) if is_archive(path) and not os.path.isdir(path))
    if tars:
        return _cached(tars[0], cache_dir, _read_image_tar)
    raise UserError(
        f"no CIFAR-10 data in {data_dir}: expected cifar-10-batches-py/, "
        "cifar-10-python.tar.gz, a train/<class>/ + test/<class>/ image tree, "
        "or a .tar.gz of such a tree"
    )


def _read_archive(archive, cache_dir, file_hash, allow_pickle):
    """The Keras/Toronto archive by its name (its pickled batches), any other
    .tar.gz or .tgz as an image tree."""
    if os.path.basename(archive) != ARCHIVE_NAME:
        return _cached(archive, cache_dir, _read_image_tar)
    if not allow_pickle and not matches_hash(archive, file_hash):
        raise UserError(
            f"{archive} is not a readable copy of the CIFAR-10 archive that Keras verifies "
            "(its sha256 differs): replace it with a fresh copy, or pass --allow_pickle=True "
            "to read its pickled batches if you trust it"
        )
    return _read_batches_from_tar(archive)


# The original batches: pickled dicts of NumPy arrays.


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles NumPy arrays and nothing else.

    A pickle can run any code while it loads; the CIFAR batches need only
    NumPy's array reconstruction, so every other global is refused.
    """

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        # Protocol-2 pickles written by Python 3 store bytes through this.
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module == "_codecs":
            return codecs.encode
        if name == "_reconstruct":
            # Take NumPy's own reconstructor, whatever module it lives in now.
            return np.zeros(1).__reduce__()[0]
        return getattr(np, name)


def _read_batches(locate, opener, order=None):
    """Reads the six batches, in the order of `order` (a key on their names)
    if given; `locate(name)` gives the path that `opener` opens."""
    arrays = {}
    for name in sorted(BATCHES, key=order) if order else BATCHES:
        path = locate(name)
        try:
            with opener(path) as f:
                batch = _ArrayUnpickler(f, encoding="bytes").load()
            # Each row holds a 32x32 image as 1024 red, then green, then blue values.
            images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            labels = np.asarray(batch[b"labels"])
            if labels.shape != (len(images),):
                raise ValueError(f"labels of shape {labels.shape} for {len(images)} images")
        except UserError:
            raise  # read_file's line already says what is wrong.
        # LookupError: a missing key, or a damaged pickle's unknown text encoding;
        # OverflowError: values beyond a byte's 0 to 255.
        except (OSError, EOFError, LookupError, TypeError, ValueError, OverflowError, zlib.error,
                pickle.UnpicklingError) as error:
            where = getattr(path, "name", path)  # A path, or a member of a tar.
            raise UserError(
                f"{where} is not a readable CIFAR-10 batch ({error}); it may be "
                "truncated or corrupt: replace it with a fresh copy"
            ) from None
        arrays[name] = images, labels
    x_train = np.concatenate([arrays[name][0] for name in BATCHES[:5]])
    y_train = np.concatenate([arrays[name][1] for name in BATCHES[:5]])
    return (x_train, y_train), arrays["test_batch"]


def _read_batches_from_tar(archive):
    with open_tar(archive) as tar:
        members = {os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()}
        missing = [name for name in BATCHES if name not in members]
        if missing:
            raise UserError(f"{archive} lacks the batch {missing[0]}; replace it with a fresh copy")
        # Read in the archive's own order: each batch read backwards would
        # decompress it again from its start.
        return _read_batches(lambda name: members[name], tar.extractfile, order=lambda name: members[name].offset)


# Image trees: train/<class>/*.jpg and test/<class>/*.jpg.


def _find_image_tree(data_dir):
    """The folder that holds train/ and test/: data_dir or one level down."""
    candidates = [data_dir] + sorted(glob.glob(os.path.join(data_dir, "*", "")))
    for folder in candidates:
        if os.path.isdir(os.path.join(folder, "train")) and os.path.isdir(os.path.join(folder, "test")):
            return folder
    return None


def _read_image_tree(root):
    files = {}
    for split in ("train", "test"):
        for path in glob.glob(os.path.join(root, split, "*", "*")):
            files[os.path.relpath(path, root)] = path
    return _decode_images(root, files, read_file)


def _read_image_tar(archive):
    with open_tar(archive) as tar:
        # Hidden files (macOS' "._0001.jpg" beside each image) are left out, as a folder's are.
        members = {m.name: m for m in tar.getmembers() if m.isfile() and not hidden(m.name)}
        # Find train/<class>/<file> at any depth, such as cifar-10-jpeg/train/cat/0001.jpg.
        files = {}
        for name in members:
            parts = name.split("/")
            if len(parts) >= 3 and parts[-3] in ("train", "test"):
                files["/".join(parts[-3:])] = name
        if not files and any(name.split("/")[-1] == "data_batch_1" for name in members):
            raise UserError(
                f"{archive} holds CIFAR-10's pickled batches, which are read only from a file named {ARCHIVE_NAME}: "
                "rename it so (its sha256 is then checked against Keras', or pass --allow_pickle=True to trust it)"
            )
        if not files:
            raise UserError(
                f"{archive} holds no train/<class>/ and test/<class>/ images; "
                "see README.md for the layouts CIFAR-10 can come in"
            )
        # Read in the archive's own order: each file read backwards would
        # decompress it again from its start.
        return _decode_images(
            archive, files, lambda name: tar.extractfile(members[name]).read(), order=lambda path: members[files[path]].offset
        )


def _decode_images(source, files, read, order=None):
    """Decodes `files` ({"train/cat/0001.jpg": where, ...}), each read by
    `read(where)` in the order of `order` (a key on the paths; None: split
    by split, class by class, by name), into arrays in an order set by the
    class and file names alone, never by the file system or the archive."""
    from PIL import Image  # Pillow; only needed for image trees.

    found = {path.split("/")[1] for path in files if path.split("/")[0] in ("train", "test")}
    unknown = sorted(found - set(CLASSES))
    if unknown:
        raise UserError(
            f"{source} has class folders that are not CIFAR-10 classes: "
            f"{', '.join(unknown)}; expected {', '.join(CLASSES)}"
        )
    paths = {}  # {(split, label): its image files, by name}
    for split in ("train", "test"):
        for label, name in enumerate(CLASSES):
            prefix = f"{split}/{name}/"
            paths[split, label] = sorted(p for p in files if p.startswith(prefix) and p.lower().endswith(IMAGE_EXTENSIONS))
            if not paths[split, label]:
                raise UserError(
                    f"{source} has no images in {prefix} (files ending {', '.join(IMAGE_EXTENSIONS)}); "
                    "every CIFAR-10 class needs its folder of images"
                )
    decoded = {}
    reading = itertools.chain(*paths.values())
    for path in sorted(reading, key=order) if order else reading:
        try:
            with Image.open(io.BytesIO(read(files[path]))) as image:
                decoded[path] = np.asarray(as_rgb(image))
        except UserError:
            raise  # read_file's line already says what is wrong.
        except Exception as error:  # Pillow raises many kinds of errors.
            raise UserError(f"{source}: {path} is not a readable image ({not_an_image(error)}); replace or remove it") from None
    splits = {}
    for split in ("train", "test"):
        images, labels, positions = [], [], []
        for label in range(len(CLASSES)):
            for position, path in enumerate(paths[split, label]):
                images.append(decoded.pop(path))
                labels.append(label)
                positions.append(position)
        shapes = {image.shape for image in images}
        if shapes != {(32, 32, 3)}:
            raise UserError(f"{source}: {split} images must all be 32x32 RGB; found sizes {sorted(shapes)}")
        # Interleave the classes (the first image of each class, then the
        # second, ...), so that the first N images, as train_samples takes
        # them, hold every class in equal measure instead of only airplanes.
        interleaved = np.lexsort((labels, positions))
        splits[split] = (np.stack(images)[interleaved], np.array(labels, dtype=np.int64)[interleaved])
    return splits["train"], splits["test"]


# The cache of decoded images.


def _fingerprint(source):
    """Changes whenever the source changes: names, sizes and times of its files."""
    paths = [source] if os.path.isfile(source) else sorted(
        glob.glob(os.path.join(source, "train", "*", "*")) + glob.glob(os.path.join(source, "test", "*", "*"))
    )
    digest = hashlib.sha256(_CACHE_FORMAT.encode())
    for path in paths:
        stat = os.stat(path)
        # os.fsencode: a file name need not be UTF-8 (a Latin-1 café), and .encode() failed on it.
        digest.update(os.fsencode(f"{os.path.relpath(path, source)}|{stat.st_size}|{stat.st_mtime_ns}\n"))
    return digest.hexdigest()


def cache_path(source, cache_dir=None):
    """Beside the source when that folder is writable, else in the Keras cache."""
    source = os.path.abspath(source.rstrip(os.sep))
    parent = os.path.dirname(source)
    name = os.path.basename(source).split(".")[0] + ".decoded.npz"
    # The mode bits are checked too: root may write into a folder that is
    # marked read-only, such as a shared data folder, but should not.
    if os.access(parent, os.W_OK) and os.stat(parent).st_mode & 0o222:
        return os.path.join(parent, name)
    tag = hashlib.sha256(os.fsencode(source)).hexdigest()[:12]
    return os.path.join(keras_cache_dir(cache_dir), f"{tag}-{name}")


def _cached(source, cache_dir, decode):
    path = cache_path(source, cache_dir)
    fingerprint = _fingerprint(source)
    if os.path.isfile(path):  # Not a folder, nor a pipe that would wait forever for a writer.
        try:
            with np.load(path, allow_pickle=False) as f:
                if str(f["fingerprint"]) == fingerprint:
                    arrays = (f["x_train"], f["y_train"]), (f["x_test"], f["y_test"])
                    print(f"data      decoded images reused from {path}")
                    return arrays
        except Exception:  # A damaged cache is rebuilt, never trusted.
            pass
    print(f"data      decoding {source} once, to cache the arrays in {path}")
    (x_train, y_train), (x_test, y_test) = decode(source)
    # A name of this process's own: two runs that decode at once each write
    # a whole copy, and the last one renamed stays.
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _remove_left_behind(path)
        np.savez(tmp, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, fingerprint=fingerprint)
        os.replace(tmp, path)
    except OSError as error:
        # The cache only saves time: the run goes on with the decoded images.
        print(f"warning   cannot keep the decoded images in {path} ({reason(error)}); the next run decodes them again")
    finally:
        # Written in part (a full disk, Ctrl-C): 185 MB that nothing would read.
        with contextlib.suppress(OSError):
            os.remove(tmp)
    return (x_train, y_train), (x_test, y_test)


def _remove_left_behind(path):
    """Removes the temporary copies of the cache at `path` that processes
    killed while writing them left behind (their names hold their process
    ids); those of live processes are theirs to finish."""
    folder, name = os.path.split(path)
    for other in os.listdir(folder):
        pid = other.removeprefix(name + ".").removesuffix(".tmp.npz")
        if other == f"{name}.{pid}.tmp.npz" and pid.isdecimal() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(folder, other))


def _alive(pid):
    try:
        os.kill(pid, 0)  # Signal 0 only asks whether the process exists.
    except (ProcessLookupError, OverflowError):  # OverflowError: too large to be a process id.
        return False
    except OSError:
        return True  # It exists, as another user's process.
    return True
