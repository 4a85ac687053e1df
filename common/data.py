"""Loading datasets the Keras way, from a local folder when offline; the
validation split, and the shuffled batches `fit` trains on.

Each loader returns `(x_train, y_train), (x_test, y_test)` as uint8 images and
integer labels, exactly like `keras.datasets`, after checking shapes, dtypes and
the label range, so a broken file fails here with a clear message instead of
somewhere inside training.
"""

import contextlib
import gzip
import hashlib
import io
import math
import os
import stat
import tarfile
import tempfile
import zipfile
import zlib

import keras
import numpy as np

from common import UserError, device, reason, visible

MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
# The hash that keras.datasets.mnist checks.
MNIST_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
MNIST_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_IDX_MAGIC = {2051: 3, 2049: 1}  # Magic number -> number of dimensions.


def load_mnist(data_dir="", cache_dir=None, origin=MNIST_URL, file_hash=MNIST_SHA256):
    """Loads MNIST from `data_dir`, else from the Keras cache, else downloads it.

    `data_dir` may hold a Keras-layout `mnist.npz` or the four original IDX
    files (`train-images-idx3-ubyte` etc., gzipped or not), or be such an
    npz file itself. When it is given, the data must be there: a typo in the
    path should not start a download.
    `cache_dir`, `origin` and `file_hash` are passed to `keras.utils.get_file`;
    the tests point them at a temporary folder and a `file://` URL.
    """
    if not data_dir:
        data = _read_npz(download(origin, file_hash, cache_dir, "mnist.npz", "MNIST"))
    elif os.path.isdir(data_dir):
        npz = os.path.join(data_dir, "mnist.npz")
        # A link to nowhere is named as such, not read as "no MNIST data".
        data = _read_npz(npz) if os.path.lexists(npz) else _read_idx_folder(data_dir)
    elif data_dir.lower().endswith(".npz") and os.path.lexists(data_dir):
        data = _read_npz(data_dir)  # The npz file itself.
    else:
        what = "is neither a folder nor an .npz file" if os.path.lexists(data_dir) else "does not exist"
        raise UserError(
            f"data_dir {data_dir!r} {what}; give the folder that holds mnist.npz "
            "or the four MNIST IDX files, or mnist.npz itself"
        )
    return checked(data, image_shape=(28, 28), num_classes=10)


def split_validation(x, y, validation_split, seed, train_samples=0):
    """Takes the first `train_samples` examples (0 = all) and splits off a
    seeded random `validation_split` fraction of them for validation.

    Returns `x_train, y_train, x_val, y_val`. The test set is never used for
    validation: it is touched once, at the end of a run. In a run over several
    machines, each takes its own share of both (`device.process_share`).
    """
    if train_samples > len(x):
        # Slicing would quietly take them all, and the run's config would
        # record a number of images it never saw.
        raise UserError(
            f"train_samples={train_samples} is more than the {len(x)} training examples; "
            f"give at most {len(x)}, or 0 for all"
        )
    if train_samples:
        x, y = x[:train_samples], y[:train_samples]
    num_val = int(round(len(x) * validation_split))
    if num_val < 1 or num_val >= len(x):
        raise UserError(
            f"validation_split={validation_split} of {len(x)} training examples "
            "leaves no validation or no training data; use more train_samples "
            "or another validation_split"
        )
    order = np.random.default_rng(seed).permutation(len(x))
    val, train = device.process_share(order[:num_val]), device.process_share(order[num_val:])
    return x[train], y[train], x[val], y[val]


class ShuffledBatches(keras.callbacks.Callback):
    """The training examples `x`, `y` in batches of `batch_size`, every
    example once an epoch, each epoch in its own order, drawn from `seed`
    and the epoch's number (`epoch_order`), on every backend. Give `fit`
    `batches.data` in place of the arrays, with `shuffle=False`, and
    `batches` itself among its callbacks, through which `fit` tells it each
    epoch's number (left out, the second pass over the batches stops with
    an error that says to give it there, rather than take epoch 0's order
    again): a run resumed at `initial_epoch` then goes through the orders
    an uninterrupted one would have.

    Keras' own shuffling of arrays (`fit(x, y, shuffle=True)`) does neither:
    on TensorFlow, once a seed is set, every epoch came in the same order
    (tf.data's shuffle starts from its seed again in each epoch's new
    iterator), and on JAX and PyTorch, which shuffle with NumPy's and
    PyTorch's generators, a resumed run, seeding them again, took the first
    epoch's order in its first epoch.

    On TensorFlow `data` is a tf.data pipeline (`_tf_batches`), which
    gathers the batches in parallel with training, as Keras does for arrays
    (the MLP's epochs took as long as with the arrays: `python -m
    benchmarks.feeding`, docs/measurements.md). On JAX and PyTorch, which
    slice arrays in Python anyway, it is a PyDataset (`Batches`), and with
    `resident` one that gathers the batches on the accelerator
    (`DeviceBatches`).
    """

    def __init__(self, x, y, batch_size, seed, resident=False):
        super().__init__()
        self.batch_size, self.seed, self.count = batch_size, seed, len(x)
        self.epoch = 0  # fit sets it as each epoch begins
        self.told = False  # whether fit has told it an epoch's number
        self.passes = 0  # how many times the last batch was asked for
        self.order = (None, None)  # (epoch, that epoch's order), drawn when first asked for
        if resident:
            self.data = DeviceBatches(x, y, self)
        elif keras.backend.backend() == "tensorflow":
            self.data = _tf_batches(x, y, self)
        else:
            self.data = Batches(x, y, self)

    def __len__(self):
        return -(-self.count // self.batch_size)  # the last batch may be smaller

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.told = epoch, True

    def indices(self, index):
        """The examples of batch `index` of the epoch."""
        if index == 0 and self.passes and not self.told:
            raise RuntimeError(
                "a second pass over the batches of a ShuffledBatches that fit has not told any epoch's number: "
                "give it among fit's callbacks, model.fit(batches.data, callbacks=[batches, ...])"
            )
        self.passes += index == len(self) - 1
        epoch, order = self.order
        if epoch != self.epoch:
            epoch = self.epoch
            order = epoch_order(self.seed, epoch, self.count)
            self.order = epoch, order
        return order[index * self.batch_size : (index + 1) * self.batch_size]


def epoch_order(seed, epoch, count):
    """The order of `count` examples in the given epoch (counted from 0)."""
    return np.random.default_rng([seed, epoch]).permutation(count)


def _tf_batches(x, y, batches):
    """The `ShuffledBatches` `batches` of `x` and `y` as a tf.data pipeline:
    `batches.indices` says which examples each batch takes, and TensorFlow
    gathers them."""
    import tensorflow as tf

    # fit makes a new iterator over this each epoch: batch 0, 1, ... of it.
    indices = tf.data.Dataset.range(len(batches)).map(
        lambda index: tf.ensure_shape(tf.numpy_function(batches.indices, [index], tf.int64), [None])
    )
    # As Keras does for arrays: the arrays are one element, repeated beside
    # each batch's indices, and each batch is gathered from them.
    arrays = tf.data.Dataset.from_tensors((x, y)).repeat()
    gathered = tf.data.Dataset.zip(indices, arrays).map(
        lambda i, xy: (tf.gather(xy[0], i), tf.gather(xy[1], i)), num_parallel_calls=os.cpu_count()
    )
    options = tf.data.Options()
    # Without autotuning's thread, which made the first step of some epochs
    # seconds late (device._turn_off_tf_data_autotuning); and, as Keras sets
    # it where it shuffles, without saving the pipeline's state (here the
    # indices come from Python), which tf.data would otherwise ask for.
    options.autotune.enabled = False
    options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
    return gathered.prefetch(2).with_options(options)


class Batches(keras.utils.PyDataset):
    """The `ShuffledBatches` `batches` of `x` and `y` as a PyDataset,
    gathered in host memory: on JAX and PyTorch."""

    def __init__(self, x, y, batches):
        super().__init__()
        self.x, self.y, self.batches = x, y, batches

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        return self.gather(self.batches.indices(index))

    def gather(self, indices):
        return self.x[indices], self.y[indices]


class DeviceBatches(Batches):
    """Training examples held on the accelerator, on the JAX backend and one
    device (`check`): `ShuffledBatches(..., resident=True).data`.

    Otherwise each batch is gathered in host memory and copied to the
    device, every step of every epoch. Here `x` and `y` are copied to the
    device once, as they are (images as bytes), and each batch is gathered
    there; only its indices cross over. On JAX, `fit` hands such device
    arrays to the training step as they are.
    """

    def __init__(self, x, y, batches):
        super().__init__(keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y), batches)
        # On JAX each size of gather compiles on first use: here, not in the
        # first epoch's time.
        for size in {min(batches.batch_size, len(x)), len(x) - (len(batches) - 1) * batches.batch_size}:
            self.gather(np.arange(size))

    def gather(self, indices):
        # The batch's indices go to the device once, for both gathers.
        indices = keras.ops.convert_to_tensor(indices)
        return keras.ops.take(self.x, indices, axis=0), keras.ops.take(self.y, indices, axis=0)

    @staticmethod
    def check():
        """Stops with one line where the batches would not stay on the
        device: on another backend than JAX (TensorFlow's `fit` copies what
        a PyDataset gives it through host memory), or with several devices
        (each batch would be moved from the first to the others)."""
        backend = keras.backend.backend()
        if backend != "jax":
            raise UserError(
                f"--resident=True needs KERAS_BACKEND=jax: on {backend}, fit would still copy each batch "
                "through host memory; leave it False"
            )
        if keras.distribution.distribution() is not None:
            raise UserError(
                "--resident=True keeps the training images on one device, and this run trains on several; "
                "leave it False"
            )


def keras_cache_dir(cache_dir=None, subdir="datasets"):
    """Where `keras.utils.get_file` keeps datasets (or, with subdir="models",
    keras.applications' weights), found as Keras finds it: `cache_dir`, else
    $KERAS_HOME, else ~/.keras; a home folder that cannot be written is
    replaced by /tmp/.keras."""
    if cache_dir:
        return os.path.join(cache_dir, subdir)
    if "KERAS_HOME" in os.environ:
        home = os.environ["KERAS_HOME"]
    else:
        user_home = os.path.expanduser("~")
        home = os.path.join(user_home if os.access(user_home, os.W_OK) else "/tmp", ".keras")
    home = os.path.expanduser(home)
    if not os.access(home, os.W_OK):
        home = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
    return os.path.join(home, subdir)


# The endings of image files (in either case) where a folder may hold other
# files beside them (a README).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

# The endings of the gzipped tar archives read as they are.
ARCHIVE_EXTENSIONS = (".tgz", ".tar.gz")


def is_archive(path):
    """Whether `path` is named as a gzipped tar archive, in either case
    (PHOTOS.TGZ as well as photos.tgz)."""
    return path.lower().endswith(ARCHIVE_EXTENSIONS)


@contextlib.contextmanager
def open_tar(archive):
    """Opens a .tar.gz, or a plain tar under that name (a browser may
    decompress an archive as it saves it, and keep its name); a damaged one,
    found at any point of reading it, becomes one line that says what to do."""
    try:
        refuse_special(archive)
        with open(archive, "rb") as file:
            head = file.read(262)
    except OSError as error:  # Such as no permission to read it: no sign of damage.
        raise unreadable(archive, error) from None
    try:
        # A tar's header says "ustar" at byte 257; anything else is read as
        # gzip, and refused as "not a gzip file" if it is not one.
        plain = head[257:262] == b"ustar"
        with tarfile.open(archive, "r:" if plain else "r:gz") as tar:
            # tarfile takes a damaged header for the end of the archive, so a
            # corrupt one could pass for a shorter one.
            tar.getmembers()
            if plain:
                # The true end is a block of zeros where the last file ends.
                tar.fileobj.seek(tar.offset)
                if tar.fileobj.read(tarfile.BLOCKSIZE) != bytes(tarfile.BLOCKSIZE):
                    raise tarfile.ReadError(f"it ends after {len(tar.getmembers())} entries without tar's end-of-archive marker")
            else:
                # Reading the rest of the gzip stream checks its length and
                # checksum: damage anywhere stops the run.
                while tar.fileobj.read(1 << 20):
                    pass
            yield tar
    except (OSError, EOFError, zlib.error, tarfile.TarError) as error:
        raise UserError(
            f"{archive} is not a readable .tar.gz ({error}); it may be truncated "
            "or corrupt: replace it with a fresh copy"
        ) from None


def download(origin, file_hash, cache_dir, fname, name, use_anyway="move it into a folder and pass --data_dir=that/folder"):
    """The verified copy of `fname` in the Keras cache, else its download by
    `keras.utils.get_file`, hash checked, a partial or corrupt file removed.
    A cached copy that fails the check stops the run (`verified_in_cache`;
    such as this project's shared copies, which are not byte for byte Keras'
    own); `use_anyway` says how to use it all the same."""
    target = os.path.join(keras_cache_dir(cache_dir), fname)
    if file_hash and verified_in_cache(target, file_hash, f"the copy of {name} that Keras verifies", use_anyway):
        return target
    if cache_dir:
        # get_file falls back to /tmp/.keras when the folder does not exist yet.
        os.makedirs(cache_dir, exist_ok=True)
    try:
        return keras.utils.get_file(
            fname, origin=origin, file_hash=file_hash, cache_dir=cache_dir
        )
    except Exception as error:  # get_file raises plain Exception when offline.
        # get_file removes a partial download but keeps one whose hash is
        # wrong; remove it too, so that nothing unverified stays in the cache.
        if "hash" in str(error) and os.path.exists(target):
            os.remove(target)
        raise UserError(
            f"could not download {name} from {origin} ({reason(error)}); when offline, "
            f"copy {fname} into a folder and pass --data_dir=that/folder"
        ) from None


def verified_in_cache(path, file_hash, what, use_anyway):
    """Whether the Keras cache holds `path` and it matches `file_hash`. One
    that does not stops the run with one line naming it as not `what` and
    saying how to `use_anyway`: keras.utils.get_file would delete it to
    download another, and offline a copy the user put there would be lost.
    A pipe there is refused (matches_hash), before anything waits on it."""
    if not os.path.lexists(path):
        return False
    if matches_hash(path, file_hash):
        return True
    raise UserError(
        f"{path} in the Keras cache is not {what} (its hash differs); "
        f"if you trust it, {use_anyway}, or delete it to download a fresh copy"
    )


def unreadable(path, error):
    """The one line for a file that an OSError kept from being read."""
    if os.path.islink(path) and not os.path.exists(path):  # "No such file" of a name that `ls` lists.
        target = os.path.join(os.path.dirname(path), os.readlink(path))  # A relative link is relative to its folder.
        return UserError(f"cannot read {visible(path)}: it is a link to {visible(os.path.normpath(target))}, which does not exist; fix or replace the link")
    return UserError(f"cannot read {visible(path)} ({error.strerror}); check the path and that the file is readable")


def hidden(path):
    """Whether a path inside a folder or archive (its parts separated by "/")
    is, or lies in, a hidden file or folder, such as the "._photo.jpg" files
    that macOS leaves beside each file it copies (an archive's "./" is the
    folder itself)."""
    return any(part.startswith(".") and part not in (".", "..") for part in path.split("/"))


def as_rgb(image):
    """A Pillow image as 8-bit RGB. Pillow's own conversion clips an image
    of more than 8 bits a pixel: 16-bit greyscale (Pillow's "I;16", or its
    32-bit "I" holding 16-bit values) would turn mostly white, and 32-bit
    floats from 0 to 1 (a scientific TIFF's "F") black; those are scaled to
    bytes first (65535 / 257 = 255)."""
    from PIL import Image  # Pillow; only needed for images.

    if image.mode.startswith("I;16") or (image.mode == "I" and image.getextrema()[1] > 255):
        scale = 1 / 257
    elif image.mode == "F" and image.getextrema()[1] <= 1:
        scale = 255
    else:
        return image.convert("RGB")
    pixels = np.asarray(image, dtype=np.float64) * scale
    return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8)).convert("RGB")


def not_an_image(error):
    """What Pillow's error says of bytes that do not decode, for a one-line
    error. For bytes of no image format at all, Pillow names the in-memory
    copy it read ("<_io.BytesIO object at 0x...>"), not the file."""
    from PIL import UnidentifiedImageError  # Pillow; only needed for images.

    return "no image format Pillow can decode" if isinstance(error, UnidentifiedImageError) else reason(error)


def matches_hash(path, file_hash):
    """Whether the file's sha256, or for a hash of 32 digits its md5 (as
    keras.utils.get_file reads the hashes Keras publishes), is `file_hash`."""
    digest = hashlib.md5() if len(file_hash) == 32 else hashlib.sha256()
    try:
        refuse_special(path)
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as error:
        raise unreadable(path, error) from None
    return digest.hexdigest() == file_hash


def read_file(path):
    """The bytes of the file at `path`, or one line that says why they cannot
    be read. A pipe or a device is refused, not read: reading one waits for a
    writer, possibly forever."""
    try:
        refuse_special(path)
        with open(path, "rb") as f:
            return f.read()
    except OSError as error:
        raise unreadable(path, error) from None


def refuse_special(path):
    """Stops with one line if `path` is a pipe, a socket or a device, before
    anything opens it: opening or reading one waits for a writer, possibly
    forever. A folder passes, for open() to refuse with "Is a directory"."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise UserError(f"{path} is a pipe, socket or device, not a regular file; put the file itself there")


def _read_npz(path):
    names = ("x_train", "y_train", "x_test", "y_test")
    content = read_file(path)
    try:
        # An npz file is a zip archive of arrays, and starts as every zip
        # file does; np.load would read anything else as a single array
        # (.npy) or a pickle, with a misleading error.
        if content[:4] != b"PK\x03\x04":
            raise UserError(
                f"{path} is not an npz file (an npz file is a zip archive of arrays); it may be truncated, "
                "corrupt or something else saved under that name: replace it with a fresh copy"
            )
        with np.load(io.BytesIO(content), allow_pickle=False) as f:
            missing = [name for name in names if name not in f.files]
            if missing:
                raise UserError(
                    f"{path} lacks the array {missing[0]!r}; a Keras-layout npz "
                    f"holds {', '.join(names)}"
                )
            arrays = [f[name] for name in names]
        # A zip member that is not a saved array comes back as bytes.
        if not all(isinstance(array, np.ndarray) for array in arrays):
            raise ValueError("its members are not saved arrays")
        x_train, y_train, x_test, y_test = arrays
        return (x_train, y_train), (x_test, y_test)
    except UserError:
        raise  # Already says what is wrong (a UserError is a ValueError too).
    # A MemoryError: a damaged header that claims an array of terabytes or more.
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, MemoryError) as error:
        raise UserError(
            f"{path} is not a readable npz file ({error}); it may be truncated "
            "or corrupt: replace it with a fresh copy"
        ) from None


def _read_idx_folder(folder):
    arrays = []
    for name in MNIST_IDX_FILES:
        candidates = [os.path.join(folder, name + ext) for ext in ("", ".gz")]
        found = [path for path in candidates if os.path.exists(path)]
        if not found:
            raise UserError(
                f"no MNIST data in {folder}: expected mnist.npz or the IDX files "
                f"{', '.join(MNIST_IDX_FILES)} (optionally .gz); {name} is missing"
            )
        array = read_idx(found[0])
        images = "images" in name
        if array.ndim != (3 if images else 1):
            raise UserError(
                f"{found[0]} holds an array of shape {array.shape}, not "
                f"{'images (N, 28, 28)' if images else 'labels (N,)'}: is it another of the four MNIST files? "
                "Replace it with a fresh copy"
            )
        arrays.append((found[0], array))
    for (images_path, images), (labels_path, labels) in (arrays[:2], arrays[2:]):
        if len(images) != len(labels):
            raise UserError(
                f"{images_path} holds {len(images)} images and {labels_path} {len(labels)} labels: "
                "they are not a pair; replace them with fresh copies"
            )
    x_train, y_train, x_test, y_test = (array for _, array in arrays)
    return (x_train, y_train), (x_test, y_test)


def read_idx(path):
    """Reads one IDX file (the original MNIST format), gzipped or not: told
    by its first bytes, not its name (a browser may keep ".gz" on a file it
    has unzipped)."""
    raw = read_file(path)
    try:
        if raw[:2] == b"\x1f\x8b":  # gzip's magic number
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise UserError(
            f"{path} cannot be read ({error}); replace it with a fresh copy"
        ) from None
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if magic not in _IDX_MAGIC:
        raise UserError(
            f"{path} is not an IDX file (bad magic number); replace it with a "
            "fresh copy of the original MNIST file"
        )
    ndim = _IDX_MAGIC[magic]
    header = 4 + 4 * ndim
    shape = tuple(
        int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)
    )
    if len(raw) != header + math.prod(shape):  # Python's integers: a crafted header cannot overflow.
        raise UserError(
            f"{path} is truncated or corrupt: its header promises shape {shape} "
            f"but it holds {len(raw) - header} bytes of data; replace it"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def checked(data, image_shape, num_classes):
    """Checks shapes, dtypes and label range of a loaded dataset."""
    (x_train, y_train), (x_test, y_test) = data
    for part, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x.dtype != np.uint8 or x.shape[1:] != image_shape:
            raise UserError(
                f"{part} images have shape {x.shape} and dtype {x.dtype}; expected "
                f"(N, {', '.join(map(str, image_shape))}) uint8: the data file is "
                "not this dataset"
            )
        if len(x) == 0:
            raise UserError(f"the {part} set holds no images: the data file is damaged or not this dataset")
        if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
            raise UserError(
                f"{part} labels have shape {y.shape} and dtype {y.dtype}; expected "
                f"one integer label per image ({len(x)})"
            )
        if y.min() < 0 or y.max() >= num_classes:
            raise UserError(
                f"{part} labels range from {y.min()} to {y.max()}; expected 0 to "
                f"{num_classes - 1}: the data file is corrupt"
            )
    return (x_train, y_train.astype(np.int64)), (x_test, y_test.astype(np.int64))
