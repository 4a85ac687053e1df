import ast
import gzip
import hashlib
import io
import os
import re
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

from common import UserError
from common import data
from conftest import REPO, idx_bytes, synthetic_mnist, within, write_mnist_idx, write_mnist_npz


def assert_same_as_synthetic(loaded):
    (x_train, y_train), (x_test, y_test) = synthetic_mnist()
    (lx_train, ly_train), (lx_test, ly_test) = loaded
    np.testing.assert_array_equal(lx_train, x_train)
    np.testing.assert_array_equal(ly_train, y_train)
    np.testing.assert_array_equal(lx_test, x_test)
    np.testing.assert_array_equal(ly_test, y_test)
    assert lx_train.dtype == np.uint8 and lx_train.shape == (240, 28, 28)


def test_mnist_from_npz(tmp_path):
    npz = write_mnist_npz(str(tmp_path))
    assert_same_as_synthetic(data.load_mnist(str(tmp_path)))
    # The file itself, whatever its name (it was refused as "not a folder").
    os.rename(npz, tmp_path / "my-mnist.npz")
    assert_same_as_synthetic(data.load_mnist(str(tmp_path / "my-mnist.npz")))
    # In capitals, as some copies are named (it was "neither a folder nor an .npz file").
    os.rename(tmp_path / "my-mnist.npz", tmp_path / "MNIST.NPZ")
    assert_same_as_synthetic(data.load_mnist(str(tmp_path / "MNIST.NPZ")))


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_from_idx_files(tmp_path, gz):
    write_mnist_idx(str(tmp_path), gz=gz)
    assert_same_as_synthetic(data.load_mnist(str(tmp_path)))


def test_mnist_download_goes_through_keras_get_file_and_its_cache(tmp_path):
    source = write_mnist_npz(str(tmp_path / "server"))
    sha256 = hashlib.sha256(open(source, "rb").read()).hexdigest()
    cache = str(tmp_path / "cache")
    loaded = data.load_mnist(cache_dir=cache, origin=f"file://{source}", file_hash=sha256)
    assert_same_as_synthetic(loaded)
    cached = os.path.join(cache, "datasets", "mnist.npz")
    assert os.path.exists(cached)
    # The second call uses the cache: the "server" copy may now be gone.
    os.remove(source)
    assert_same_as_synthetic(data.load_mnist(cache_dir=cache, origin=f"file://{source}", file_hash=sha256))


def test_mnist_download_with_a_wrong_hash_is_refused_and_removed(tmp_path):
    source = write_mnist_npz(str(tmp_path / "server"))
    cache = str(tmp_path / "cache")
    with pytest.raises(UserError, match="could not download MNIST"):
        data.load_mnist(cache_dir=cache, origin=f"file://{source}", file_hash="0" * 64)
    assert not os.path.exists(os.path.join(cache, "datasets", "mnist.npz"))


def test_a_cached_copy_that_fails_the_hash_is_kept_and_refused(tmp_path):
    # Keras' get_file deleted it to download another, which failed offline:
    # a copy the user had put in the cache (not byte for byte Keras' own) was lost.
    cached = write_mnist_npz(str(tmp_path / "cache" / "datasets"))
    before = open(cached, "rb").read()
    offline = f"file://{tmp_path / 'nowhere' / 'mnist.npz'}"
    with pytest.raises(UserError, match="in the Keras cache is not the copy of MNIST that Keras verifies .*--data_dir="):
        data.load_mnist(cache_dir=str(tmp_path / "cache"), origin=offline, file_hash="0" * 64)
    assert open(cached, "rb").read() == before


def test_a_pipe_in_the_keras_cache_is_refused_not_waited_on(tmp_path):
    (tmp_path / "cache" / "datasets").mkdir(parents=True)
    os.mkfifo(tmp_path / "cache" / "datasets" / "mnist.npz")
    with within(20), pytest.raises(UserError, match="mnist.npz is a pipe, socket or device"):
        data.load_mnist(cache_dir=str(tmp_path / "cache"), origin=f"file://{tmp_path / 'nowhere.npz'}")


def test_a_hash_is_a_sha256_or_for_32_digits_an_md5(tmp_path):
    path = tmp_path / "file"
    path.write_bytes(b"some bytes")
    assert data.matches_hash(str(path), hashlib.sha256(b"some bytes").hexdigest())
    assert data.matches_hash(str(path), hashlib.md5(b"some bytes").hexdigest())
    assert not data.matches_hash(str(path), hashlib.md5(b"other bytes").hexdigest())


def test_the_keras_cache_is_where_keras_looks(tmp_path, monkeypatch):
    (tmp_path / "kx").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KERAS_HOME", "~/kx")  # Keras expands it.
    assert data.keras_cache_dir(subdir="models") == str(tmp_path / "kx" / "models")
    monkeypatch.setenv("KERAS_HOME", "")  # No folder to write in: Keras uses /tmp/.keras.
    assert data.keras_cache_dir() == os.path.join("/tmp", ".keras", "datasets")
    monkeypatch.delenv("KERAS_HOME")
    (tmp_path / ".keras").mkdir()  # As Keras makes it when it is imported.
    assert data.keras_cache_dir() == str(tmp_path / ".keras" / "datasets")
    assert data.keras_cache_dir(str(tmp_path / "given")) == str(tmp_path / "given" / "datasets")


def test_mnist_download_offline_says_how_to_use_a_local_copy(tmp_path):
    missing = tmp_path / "nowhere" / "mnist.npz"
    with pytest.raises(UserError, match="--data_dir=") as error:
        data.load_mnist(cache_dir=str(tmp_path / "cache"), origin=f"file://{missing}")
    assert "copy mnist.npz into a folder" in str(error.value)


def test_missing_data_dir(tmp_path):
    for missing in ("nope", "nope.npz"):
        with pytest.raises(UserError, match="does not exist; give the folder that holds mnist.npz"):
            data.load_mnist(str(tmp_path / missing))
    (tmp_path / "notes.txt").write_text("not MNIST")
    with pytest.raises(UserError, match="is neither a folder nor an .npz file"):
        data.load_mnist(str(tmp_path / "notes.txt"))


def test_folder_without_mnist_files(tmp_path):
    with pytest.raises(UserError, match="no MNIST data in .*train-images-idx3-ubyte is missing"):
        data.load_mnist(str(tmp_path))


def test_truncated_npz(tmp_path):
    path = write_mnist_npz(str(tmp_path))
    content = open(path, "rb").read()
    open(path, "wb").write(content[: len(content) // 2])
    with pytest.raises(UserError, match="mnist.npz is not a readable npz file"):
        data.load_mnist(str(tmp_path))


def test_npz_that_is_not_a_zip(tmp_path):
    (tmp_path / "mnist.npz").write_text("<html>404 not found</html>")
    # The whole line, not wrapped in another "not a readable npz file (...)".
    with pytest.raises(UserError, match=f"^{re.escape(str(tmp_path))}/mnist.npz is not an npz file"):
        data.load_mnist(str(tmp_path))


def test_a_single_array_saved_as_mnist_npz_is_not_an_npz_file(tmp_path):
    # np.load reads a .npy file as one array, whatever its name says.
    with open(tmp_path / "mnist.npz", "wb") as f:
        np.save(f, np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(UserError, match="mnist.npz is not an npz file"):
        data.load_mnist(str(tmp_path))


def test_a_zip_of_other_files_named_like_the_arrays_is_not_a_readable_npz(tmp_path):
    with zipfile.ZipFile(tmp_path / "mnist.npz", "w") as archive:
        for name in ("x_train", "y_train", "x_test", "y_test"):
            archive.writestr(name + ".npy", b"not an array")
    with pytest.raises(UserError, match="mnist.npz is not a readable npz file .*not saved arrays"):
        data.load_mnist(str(tmp_path))


def test_an_npz_whose_header_claims_exabytes_is_not_a_readable_npz(tmp_path):
    # It ended in NumPy's MemoryError traceback ("Unable to allocate 71.3 TiB"). Exabytes are
    # beyond any machine's address space, so that no system can promise them.
    path = write_mnist_npz(str(tmp_path))
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (10**15, 28, 28)})
    members["x_train.npy"] = header.getvalue() + bytes(100)  # The magic string, the header, a few bytes.
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    with pytest.raises(UserError, match=r"mnist.npz is not a readable npz file \(Unable to allocate .*; it may be truncated"):
        data.load_mnist(str(tmp_path))


def test_a_link_to_nowhere_named_mnist_npz_is_reported_as_what_it_is(tmp_path):
    # It was passed over as missing: "no MNIST data ... train-images-idx3-ubyte is missing".
    (tmp_path / "mnist.npz").symlink_to(os.path.join("moved", "mnist.npz"))  # Relative to the link's folder.
    with pytest.raises(UserError) as error:
        data.load_mnist(str(tmp_path))
    assert str(error.value) == (
        f"cannot read {tmp_path}/mnist.npz: it is a link to {tmp_path}/moved/mnist.npz, which does not exist; "
        "fix or replace the link"
    )


def test_a_folder_named_mnist_npz_is_reported_as_what_it_is(tmp_path):
    (tmp_path / "mnist.npz").mkdir()
    with pytest.raises(UserError, match="cannot read .*mnist.npz \\(Is a directory\\)"):
        data.load_mnist(str(tmp_path))


def test_a_pipe_named_mnist_npz_is_refused_not_waited_on(tmp_path):
    os.mkfifo(tmp_path / "mnist.npz")
    with within(20), pytest.raises(UserError, match="mnist.npz is a pipe, socket or device"):
        data.load_mnist(str(tmp_path))


def test_npz_with_missing_arrays(tmp_path):
    np.savez(tmp_path / "mnist.npz", x_train=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(UserError, match=f"^{re.escape(str(tmp_path))}/mnist.npz lacks the array 'y_train'"):
        data.load_mnist(str(tmp_path))


def test_npz_with_wrong_image_shape(tmp_path):
    (x_train, y_train), test = synthetic_mnist()
    write_mnist_npz(str(tmp_path), ((x_train[:, :, :27], y_train), test))
    with pytest.raises(UserError, match=r"train images have shape \(240, 28, 27\)"):
        data.load_mnist(str(tmp_path))


def test_images_that_are_not_bytes_are_refused(tmp_path):
    # Images already scaled to [0, 1] as floats would be scaled again by the model.
    (x_train, y_train), test = synthetic_mnist()
    write_mnist_npz(str(tmp_path), ((x_train / 255, y_train), test))
    with pytest.raises(UserError, match=r"train images have shape \(240, 28, 28\) and dtype float64; expected"):
        data.load_mnist(str(tmp_path))


def test_labels_must_be_integers_and_come_back_as_int64(tmp_path):
    (x_train, y_train), (x_test, y_test) = synthetic_mnist()
    write_mnist_npz(str(tmp_path), ((x_train, y_train.astype("float32")), (x_test, y_test)))
    with pytest.raises(UserError, match="train labels have shape .240,. and dtype float32; expected one integer"):
        data.load_mnist(str(tmp_path))
    write_mnist_npz(str(tmp_path), ((x_train, y_train.astype("uint8")), (x_test, y_test.astype("uint8"))))
    (_, y_train_read), (_, y_test_read) = data.load_mnist(str(tmp_path))
    # uint8 labels would wrap around in arithmetic; every label comes back as int64.
    assert y_train_read.dtype == y_test_read.dtype == np.int64
    assert list(y_train_read) == list(y_train)


def test_labels_out_of_range(tmp_path):
    (x_train, y_train), test = synthetic_mnist()
    y_train = y_train.copy()
    y_train[5] = 10
    write_mnist_npz(str(tmp_path), ((x_train, y_train), test))
    with pytest.raises(UserError, match="train labels range from 0 to 10"):
        data.load_mnist(str(tmp_path))


def test_label_count_must_match_images(tmp_path):
    (x_train, y_train), test = synthetic_mnist()
    write_mnist_npz(str(tmp_path), ((x_train, y_train[:-1]), test))
    with pytest.raises(UserError, match="one integer label per image"):
        data.load_mnist(str(tmp_path))


def test_truncated_idx_file(tmp_path):
    write_mnist_idx(str(tmp_path))
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(UserError, match="t10k-images-idx3-ubyte is truncated or corrupt"):
        data.load_mnist(str(tmp_path))


def test_an_idx_header_whose_size_overflows_64_bits_is_corrupt(tmp_path):
    write_mnist_idx(str(tmp_path))
    # 2**31 * 2**31 * 4 images' bytes: 0 in 64-bit arithmetic, like the data that follows.
    header = (2051).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in (2**31, 2**31, 4))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(header)
    with pytest.raises(UserError, match="t10k-images-idx3-ubyte is truncated or corrupt"):
        data.load_mnist(str(tmp_path))


def test_truncated_gzip_idx_file(tmp_path):
    write_mnist_idx(str(tmp_path), gz=True)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(UserError, match="train-labels-idx1-ubyte.gz cannot be read"):
        data.load_mnist(str(tmp_path))


def test_a_corrupt_gzipped_idx_file_is_one_line(tmp_path):
    # Random pixels do not compress, so deflate stores them in blocks whose
    # length (bytes 11-12 after the gzip header) is repeated inverted (13-14);
    # a flipped byte there is a damaged stream, not a truncated one.
    pixels = np.random.default_rng(0).integers(0, 256, (50, 28, 28))
    stream = bytearray(gzip.compress(idx_bytes(pixels)))
    stream[13] ^= 0xFF
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(bytes(stream))
    with pytest.raises(UserError, match="cannot be read .*replace it"):
        data.read_idx(str(path))


def test_a_data_file_with_no_test_images_is_refused(tmp_path):
    (x_train, y_train), (x_test, y_test) = synthetic_mnist()
    write_mnist_npz(str(tmp_path), ((x_train, y_train), (x_test[:0], y_test[:0])))
    with pytest.raises(UserError, match="the test set holds no images"):
        data.load_mnist(str(tmp_path))


def test_idx_file_with_bad_magic_number(tmp_path):
    write_mnist_idx(str(tmp_path))
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x00\x00" + b"\x00" * 100)
    with pytest.raises(UserError, match="is not an IDX file"):
        data.load_mnist(str(tmp_path))


def test_idx_files_gzipped_or_not_are_told_by_their_bytes_not_their_names(tmp_path):
    # A browser that unzips a download may keep its ".gz"; a file gzipped
    # again by hand may lack it. Each was called corrupt.
    write_mnist_idx(str(tmp_path), gz=True)
    os.rename(tmp_path / "train-images-idx3-ubyte.gz", tmp_path / "train-images-idx3-ubyte")
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.decompress(labels.read_bytes()))
    assert_same_as_synthetic(data.load_mnist(str(tmp_path)))


def test_idx_files_of_one_kind_under_the_others_name_are_named(tmp_path):
    write_mnist_idx(str(tmp_path))
    os.replace(tmp_path / "t10k-labels-idx1-ubyte", tmp_path / "t10k-images-idx3-ubyte")
    with pytest.raises(UserError, match=r"t10k-images-idx3-ubyte holds an array of shape \(\d+,\), not images "
                       r"\(N, 28, 28\): is it another of the four MNIST files\? Replace it with a fresh copy$"):
        data.load_mnist(str(tmp_path))


def test_idx_images_and_labels_of_different_counts_are_named(tmp_path):
    (x_train, y_train), (x_test, y_test) = synthetic_mnist()
    write_mnist_idx(str(tmp_path), ((x_train, y_train), (x_test, y_test[:-5])))
    with pytest.raises(UserError, match=rf"t10k-images-idx3-ubyte holds {len(x_test)} images and .*t10k-labels-idx1-ubyte "
                       rf"{len(x_test) - 5} labels: they are not a pair; replace them with fresh copies$"):
        data.load_mnist(str(tmp_path))


def test_read_idx_round_trip(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "a-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(idx_bytes(array))
    np.testing.assert_array_equal(data.read_idx(str(path)), array)


def test_split_is_seeded_disjoint_and_complete():
    x = np.arange(100)
    y = np.arange(100) % 10
    x_train, y_train, x_val, y_val = data.split_validation(x, y, 0.2, seed=1)
    assert len(x_train) == 80 and len(x_val) == 20
    assert sorted(np.concatenate([x_train, x_val]).tolist()) == list(range(100))
    np.testing.assert_array_equal(y_train, x_train % 10)  # Pairs stay together.
    again = data.split_validation(x, y, 0.2, seed=1)
    np.testing.assert_array_equal(again[2], x_val)
    other = data.split_validation(x, y, 0.2, seed=2)
    assert not np.array_equal(other[2], x_val)


def test_split_uses_only_the_first_train_samples():
    x = np.arange(100)
    x_train, _, x_val, _ = data.split_validation(x, x, 0.1, seed=0, train_samples=30)
    assert len(x_train) == 27 and len(x_val) == 3
    assert set(np.concatenate([x_train, x_val]).tolist()) == set(range(30))


def test_more_train_samples_than_there_are_is_refused():
    x = np.arange(100)
    with pytest.raises(UserError, match="train_samples=101 is more than the 100 training examples"):
        data.split_validation(x, x, 0.1, seed=0, train_samples=101)
    assert len(data.split_validation(x, x, 0.1, seed=0, train_samples=100)[0]) == 90


def test_split_that_leaves_nothing_is_refused():
    x = np.arange(5)
    with pytest.raises(UserError, match="leaves no validation or no training data"):
        data.split_validation(x, x, 0.05, seed=0)  # 0.25 examples to validate on
    with pytest.raises(UserError, match="leaves no validation or no training data"):
        data.split_validation(x, x, 0.95, seed=0)  # all 5 to validate on, none to train on
    x_train, _, x_val, _ = data.split_validation(x, x, 0.8, seed=0)
    assert len(x_train) == 1 and len(x_val) == 4


def _epochs(batches, epochs):
    """The examples' order in each of `epochs` of `batches`, read as `fit`
    reads them: it tells `batches` each epoch's number, and then asks a
    PyDataset for each batch, or makes a new iterator over a tf.data
    pipeline. Checks that every batch keeps its pairs together, and that
    the last one is the smaller."""
    orders = []
    for epoch in epochs:
        batches.on_epoch_begin(epoch)
        if isinstance(batches.data, keras.utils.PyDataset):
            parts = [batches.data[i] for i in range(len(batches.data))]
        else:
            parts = list(batches.data)
        parts = [tuple(keras.ops.convert_to_numpy(part) for part in batch) for batch in parts]
        assert [len(images) for images, _ in parts] == [4, 4, 2]
        for images, targets in parts:
            np.testing.assert_array_equal(targets, images.reshape(-1) * 2)  # pairs stay together
        orders.append(np.concatenate([images.reshape(-1) for images, _ in parts]).tolist())
    return orders


@pytest.mark.parametrize("kind", ["this backend's", "on the device"])
def test_shuffled_batches_give_every_example_once_an_epoch_in_an_order_of_the_seed_and_epoch(kind):
    x = np.arange(10, dtype="uint8").reshape(10, 1, 1)
    y = np.arange(10, dtype="float32") * 2

    def batches(seed=0):
        return data.ShuffledBatches(x, y, 4, seed, resident=kind == "on the device")

    first, second, third = _epochs(batches(), [0, 1, 2])
    assert sorted(first) == sorted(second) == sorted(third) == list(range(10))
    # Each epoch its own order (Keras' shuffling gave TensorFlow one for all).
    assert first != second != third != first
    assert [first, second] == [data.epoch_order(0, epoch, 10).tolist() for epoch in (0, 1)]
    # A run resumed after one epoch goes on with the second epoch's order;
    # another seed gives other orders.
    assert _epochs(batches(), [1, 2]) == [second, third]
    assert _epochs(batches(seed=1), [0]) != [first]


def test_shuffled_batches_left_out_of_fits_callbacks_stop_the_second_epoch():
    # Left out, fit never tells it an epoch's number: every epoch would
    # quietly take epoch 0's order.
    x, y = np.zeros((10, 2), "float32"), np.zeros((10, 1), "float32")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    batches = data.ShuffledBatches(x, y, 4, seed=0)
    model.fit(batches.data, shuffle=False, epochs=1, verbose=0)  # one pass: nothing to tell yet
    with pytest.raises(Exception, match="give it among fit's callbacks"):
        model.fit(batches.data, shuffle=False, epochs=2, verbose=0)
    model.fit(batches.data, shuffle=False, epochs=2, callbacks=[batches], verbose=0)


_ORDERS_SERVED = """
import keras, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from common import data, device

scope = device.setup(0)  # MirroredStrategy over the two devices
served = []  # (the epoch whose order was used, the batch) for each batch gathered


class Recorded(data.ShuffledBatches):
    def indices(self, index):
        served.append((self.epoch, int(index)))
        return super().indices(index)


batches = Recorded(np.zeros((12, 2), "float32"), np.zeros((12, 1), "float32"), 4, seed=0)
with scope:
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
model.fit(batches.data, shuffle=False, initial_epoch=2, epochs=5, callbacks=[batches], verbose=0)
print(served)
"""


def test_fit_trains_each_epoch_on_that_epochs_order_even_where_it_reads_batches_before_training():
    # Under a distribution strategy, TensorFlow's fit reads a first batch
    # to build the model before it trains, and tf.data reads ahead of it:
    # here, with three batches an epoch, through the last one. Counting the
    # epochs by their last batch served, which this project did at first,
    # then trained epoch 2 on epoch 3's order.
    result = subprocess.run(
        [sys.executable, "-c", _ORDERS_SERVED], capture_output=True, text=True, timeout=300, cwd=REPO,
        env={**os.environ, "KERAS_BACKEND": "tensorflow"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    served = ast.literal_eval(result.stdout.strip().splitlines()[-1])
    trained = served[served.index((2, 0)):]
    assert trained == [(epoch, batch) for epoch in (2, 3, 4) for batch in range(3)]
    assert len(served) > len(trained)  # the batches read before training


def test_device_batches_compile_their_gathers_for_the_sizes_that_come(monkeypatch):
    # Fewer examples than a batch: one batch of 5. The warm-up also gathered
    # a batch of 8, past the end of the examples, a size that never comes.
    sizes = []
    monkeypatch.setattr(data.DeviceBatches, "gather", lambda self, indices: sizes.append(len(indices)))
    x, y = np.zeros((5, 2), "uint8"), np.zeros((5, 3), "float32")
    data.ShuffledBatches(x, y, batch_size=8, seed=0, resident=True)
    assert sizes == [5]
    sizes.clear()
    data.ShuffledBatches(np.zeros((21, 2), "uint8"), np.zeros((21, 3), "float32"), batch_size=8, seed=0, resident=True)
    assert sorted(sizes) == [5, 8]
