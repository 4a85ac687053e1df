import hashlib
import os
import pickle
import shutil
import subprocess

import numpy as np
import pytest

from common import UserError, cifar10
from common.cifar10 import CLASSES, KERAS_ARCHIVE, cache_path, load_cifar10
from conftest import make_tar_gz, reads_of, synthetic_cifar10, within, write_cifar_batches, write_image_tree


def assert_same(loaded, expected):
    (x_train, y_train), (x_test, y_test) = loaded
    (ex_train, ey_train), (ex_test, ey_test) = expected
    assert x_train.dtype == np.uint8 and x_train.shape[1:] == (32, 32, 3)
    np.testing.assert_array_equal(x_train, ex_train)
    np.testing.assert_array_equal(y_train, ey_train)
    np.testing.assert_array_equal(x_test, ex_test)
    np.testing.assert_array_equal(y_test, ey_test)


def test_class_order_is_cifar10s():
    # The labels of the original batches, 0 to 9, in this order.
    assert CLASSES == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def test_extracted_batches_folder(tmp_path):
    data = synthetic_cifar10(per_class_train=5)
    write_cifar_batches(str(tmp_path / "cifar-10-batches-py"), data)
    with pytest.raises(UserError, match="holds pickled CIFAR-10 batches.*--allow_pickle=True"):
        load_cifar10(str(tmp_path))
    assert_same(load_cifar10(str(tmp_path), allow_pickle=True), data)


def test_batches_tar_gz(tmp_path):
    data = synthetic_cifar10(per_class_train=5)
    batches = write_cifar_batches(str(tmp_path / "build" / "cifar-10-batches-py"), data)
    (tmp_path / "data").mkdir()
    archive = make_tar_gz(str(tmp_path / "data" / "cifar-10-python.tar.gz"), batches, "cifar-10-batches-py")
    # Not Keras' archive: read only when the user opts in, or when its hash is the one given.
    with pytest.raises(UserError, match="its sha256 differs.*--allow_pickle=True"):
        load_cifar10(str(tmp_path / "data"))
    assert_same(load_cifar10(str(tmp_path / "data"), allow_pickle=True), data)
    sha256 = hashlib.sha256(open(archive, "rb").read()).hexdigest()
    assert_same(load_cifar10(str(tmp_path / "data"), file_hash=sha256), data)
    # The archive itself, checked the same way (it was refused as "not a folder").
    with pytest.raises(UserError, match="its sha256 differs.*--allow_pickle=True"):
        load_cifar10(archive)
    assert_same(load_cifar10(archive, file_hash=sha256), data)
    # Under another name it would be read as an image tree: the line says to rename it.
    renamed = str(tmp_path / "data" / "cifar-10-python (1).tar.gz")
    os.rename(archive, renamed)
    with pytest.raises(UserError, match=r"holds CIFAR-10's pickled batches.*rename it so"):
        load_cifar10(renamed, allow_pickle=True)


def test_download_is_hash_checked_and_cached(tmp_path):
    data = synthetic_cifar10(per_class_train=5)
    batches = write_cifar_batches(str(tmp_path / "build" / "cifar-10-batches-py"), data)
    archive = make_tar_gz(str(tmp_path / "server.tar.gz"), batches, "cifar-10-batches-py")
    sha256 = hashlib.sha256(open(archive, "rb").read()).hexdigest()
    cache = str(tmp_path / "cache")
    assert_same(load_cifar10(cache_dir=cache, origin=f"file://{archive}", file_hash=sha256), data)
    assert os.path.exists(os.path.join(cache, "datasets", "cifar-10-python.tar.gz"))
    with pytest.raises(UserError, match="could not download CIFAR-10"):
        load_cifar10(cache_dir=str(tmp_path / "other"), origin=f"file://{archive}", file_hash="1" * 64)


def test_the_archive_that_keras_own_loader_cached_is_reused_when_its_hash_is_right(tmp_path):
    data = synthetic_cifar10(per_class_train=5)
    batches = write_cifar_batches(str(tmp_path / "build" / "cifar-10-batches-py"), data)
    cache = tmp_path / "cache"
    (cache / "datasets").mkdir(parents=True)
    archive = make_tar_gz(str(cache / "datasets" / KERAS_ARCHIVE), batches, "cifar-10-batches-py")
    sha256 = hashlib.sha256(open(archive, "rb").read()).hexdigest()
    offline = f"file://{tmp_path / 'unreachable.tar.gz'}"
    assert_same(load_cifar10(cache_dir=str(cache), origin=offline, file_hash=sha256), data)
    # A copy with another hash is not read; the download is tried and fails.
    with pytest.raises(UserError, match="could not download CIFAR-10"):
        load_cifar10(cache_dir=str(cache), origin=offline, file_hash="1" * 64)
    # So does a folder of that name (it was hashed: IsADirectoryError).
    os.remove(archive)
    os.mkdir(archive)
    with pytest.raises(UserError, match="could not download CIFAR-10"):
        load_cifar10(cache_dir=str(cache), origin=offline, file_hash=sha256)


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    folder = write_cifar_batches(str(tmp_path / "cifar-10-batches-py"))

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    with open(os.path.join(folder, "data_batch_3"), "wb") as f:
        pickle.dump({b"data": Exploit(), b"labels": []}, f)
    with pytest.raises(UserError, match="data_batch_3 is not a readable CIFAR-10 batch.*refusing"):
        load_cifar10(str(tmp_path), allow_pickle=True)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    "batch",
    [
        np.zeros(3),  # not a dictionary
        {b"data": np.zeros((10, 100), np.uint8), b"labels": [0] * 10},  # rows too short for an image
        {b"data": [[300] * 3072], b"labels": [0]},  # values beyond a byte
        {b"data": np.zeros((10, 3072), np.uint8), b"labels": np.zeros((10, 1), np.int64)},  # labels not a list
    ],
)
def test_a_batch_that_unpickles_to_something_else_is_one_line(batch, tmp_path):
    folder = write_cifar_batches(str(tmp_path / "cifar-10-batches-py"))
    with open(os.path.join(folder, "data_batch_1"), "wb") as f:
        pickle.dump(batch, f, protocol=2)
    with pytest.raises(UserError, match="data_batch_1 is not a readable CIFAR-10 batch"):
        load_cifar10(str(tmp_path), allow_pickle=True)


@pytest.mark.parametrize("extension", [".png", ".jpg", ".bmp", ".tiff"])
def test_image_tree(tmp_path, extension):
    data = synthetic_cifar10()
    write_image_tree(str(tmp_path / "cifar"), data, extension)
    (x_train, y_train), (x_test, y_test) = load_cifar10(str(tmp_path / "cifar"))
    np.testing.assert_array_equal(y_train, data[0][1])
    np.testing.assert_array_equal(y_test, data[1][1])
    if extension != ".jpg":  # Lossless: the pixels come back exactly.
        assert_same(((x_train, y_train), (x_test, y_test)), data)
    else:
        # JPEG is lossy, but each image's flat label-coloured corner survives.
        corner = x_train[:, :4, :4, :].mean(axis=(1, 2, 3))
        np.testing.assert_allclose(corner, y_train * 25, atol=12)


def test_a_16_bit_greyscale_image_in_a_tree_keeps_its_shades(tmp_path):
    from PIL import Image

    write_image_tree(str(tmp_path / "c"))
    pixels = np.full((32, 32), 128 * 257, dtype=np.uint16)  # Mid grey, 16 bits a pixel.
    Image.fromarray(pixels).save(tmp_path / "c" / "train" / "cat" / "0000.png")
    (x_train, y_train), _ = load_cifar10(str(tmp_path / "c"))
    first_cat = x_train[np.flatnonzero(y_train == CLASSES.index("cat"))[0]]
    assert (first_cat == 128).all()  # Not 255: Pillow's own conversion clips it white.


def test_hidden_files_in_a_tar_gz_tree_are_left_out_as_in_a_folder(tmp_path):
    # macOS puts a "._0000.png" beside each file it copies; it is no image.
    data = synthetic_cifar10()
    tree = write_image_tree(str(tmp_path / "build" / "cifar"), data)
    (tmp_path / "build" / "cifar" / "train" / "cat" / "._0000.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (tmp_path / "data").mkdir()
    make_tar_gz(str(tmp_path / "data" / "cifar.tar.gz"), tree, "cifar")
    assert_same(load_cifar10(str(tmp_path / "data")), data)
    assert_same(load_cifar10(tree), data)


def test_image_tree_classes_are_interleaved_so_the_first_images_hold_every_class(tmp_path):
    write_image_tree(str(tmp_path / "c"))
    (_, y_train), (_, y_test) = load_cifar10(str(tmp_path / "c"))
    assert sorted(y_train[:10]) == list(range(10))
    assert sorted(y_test[:10]) == list(range(10))


def test_image_tree_one_folder_down(tmp_path):
    data = synthetic_cifar10()
    write_image_tree(str(tmp_path / "cifar-10-jpeg"), data)
    assert_same(load_cifar10(str(tmp_path)), data)


def test_image_tree_in_a_tar_gz_like_the_shared_jpeg_copy(tmp_path, capsys):
    data = synthetic_cifar10()
    tree = write_image_tree(str(tmp_path / "build" / "cifar-10-jpeg"), data)
    (tmp_path / "data").mkdir()
    make_tar_gz(str(tmp_path / "data" / "cifar-10-jpeg.tar.gz"), tree, "cifar-10-jpeg")
    assert_same(load_cifar10(str(tmp_path / "data")), data)
    assert os.path.exists(tmp_path / "data" / "cifar-10-jpeg.decoded.npz")
    # The archive itself (it was refused as "not a folder"), from the same cache.
    capsys.readouterr()
    assert_same(load_cifar10(str(tmp_path / "data" / "cifar-10-jpeg.tar.gz")), data)
    assert "decoded images reused" in capsys.readouterr().out


def test_an_image_tree_archive_named_in_capitals_is_read_in_a_folder_and_given_itself(tmp_path):
    # It was "no CIFAR-10 data" in the folder and "neither a folder nor a .tar.gz" itself.
    data = synthetic_cifar10()
    tree = write_image_tree(str(tmp_path / "build" / "cifar"), data)
    (tmp_path / "data").mkdir()
    archive = make_tar_gz(str(tmp_path / "data" / "CIFAR.TGZ"), tree, "cifar")
    assert_same(load_cifar10(str(tmp_path / "data")), data)
    assert_same(load_cifar10(archive), data)


def test_batches_in_a_tar_gz_are_read_in_the_archives_order(tmp_path, monkeypatch):
    # Each batch read backwards decompressed the archive again from its start.
    data = synthetic_cifar10(per_class_train=5)
    batches = write_cifar_batches(str(tmp_path / "build" / "cifar-10-batches-py"), data)
    (tmp_path / "data").mkdir()
    make_tar_gz(str(tmp_path / "data" / "cifar-10-python.tar.gz"), batches, "cifar-10-batches-py", shuffled=True)
    offsets = reads_of(monkeypatch)
    assert_same(load_cifar10(str(tmp_path / "data"), allow_pickle=True), data)
    assert len(offsets) == 6 and offsets == sorted(offsets)


def test_an_image_tree_in_a_tar_gz_is_read_in_the_archives_order_whatever_the_order_of_the_names(tmp_path, monkeypatch):
    # Read by name, a .tar.gz whose files are not stored in name order (as
    # `tar czf` stores them) was decompressed again from its start for each
    # file read backwards: 43.8 s for 2,400 PNGs, 0.5 s in the archive's order.
    data = synthetic_cifar10()
    tree = write_image_tree(str(tmp_path / "build" / "cifar-10-jpeg"), data)
    (tmp_path / "data").mkdir()
    make_tar_gz(str(tmp_path / "data" / "c.tar.gz"), tree, "cifar-10-jpeg", shuffled=True)
    offsets = reads_of(monkeypatch)
    assert_same(load_cifar10(str(tmp_path / "data")), data)
    assert len(offsets) == 60 and offsets == sorted(offsets)


def test_decoded_images_are_cached_and_rebuilt_when_the_source_changes(tmp_path, capsys):
    data = synthetic_cifar10()
    tree = write_image_tree(str(tmp_path / "build" / "cifar-10-jpeg"), data)
    (tmp_path / "data").mkdir()
    archive = make_tar_gz(str(tmp_path / "data" / "c.tar.gz"), tree, "cifar-10-jpeg")
    load_cifar10(str(tmp_path / "data"))
    assert "decoding" in capsys.readouterr().out
    load_cifar10(str(tmp_path / "data"))
    assert "reused" in capsys.readouterr().out

    # A new archive with other images: the cache must not be used.
    other = synthetic_cifar10(seed=1)
    shutil.rmtree(tmp_path / "build")
    tree = write_image_tree(str(tmp_path / "build" / "cifar-10-jpeg"), other)
    make_tar_gz(archive, tree, "cifar-10-jpeg")
    assert_same(load_cifar10(str(tmp_path / "data")), other)
    assert "decoding" in capsys.readouterr().out


def test_the_cache_of_an_image_tree_is_rebuilt_when_an_image_or_the_cache_format_changes(tmp_path, capsys, monkeypatch):
    # Upper-case extensions (.PNG), as cameras and some tools write them, are images too.
    data = synthetic_cifar10()
    tree = write_image_tree(str(tmp_path / "cifar"), data, ".PNG")
    assert_same(load_cifar10(tree), data)
    assert "decoding" in capsys.readouterr().out
    load_cifar10(tree)
    assert "reused" in capsys.readouterr().out

    # Other test images under the same names: the training images are as they were.
    other = synthetic_cifar10(seed=1)
    build = write_image_tree(str(tmp_path / "build"), other, ".PNG")
    shutil.copytree(os.path.join(build, "test"), os.path.join(tree, "test"), dirs_exist_ok=True)
    for folder, _, names in os.walk(os.path.join(tree, "test")):
        for name in names:
            path = os.path.join(folder, name)
            later = os.stat(path).st_mtime_ns + 10**9
            os.utime(path, ns=(later, later))
    (x_train, _), (x_test, _) = load_cifar10(tree)
    assert "decoding" in capsys.readouterr().out
    np.testing.assert_array_equal(x_train, data[0][0])
    np.testing.assert_array_equal(x_test, other[1][0])

    # A new version of the cache's format does not read the old one.
    monkeypatch.setattr(cifar10, "_CACHE_FORMAT", cifar10._CACHE_FORMAT + "-next")
    load_cifar10(tree)
    assert "decoding" in capsys.readouterr().out


@pytest.mark.parametrize("in_the_way", ["a folder", "a pipe", "unwritable"])
def test_a_cache_that_cannot_be_read_or_written_only_costs_the_decoding(in_the_way, tmp_path, monkeypatch, capsys):
    # A folder or a pipe where the cache goes, or a cache that cannot be
    # written: tracebacks after the whole decode, or a run that waited forever.
    data = synthetic_cifar10()
    tree = write_image_tree(str(tmp_path / "build" / "cifar-10-jpeg"), data)
    (tmp_path / "data").mkdir()
    make_tar_gz(str(tmp_path / "data" / "c.tar.gz"), tree, "cifar-10-jpeg")
    path = tmp_path / "data" / "c.decoded.npz"
    if in_the_way == "a folder":
        path.mkdir()
    elif in_the_way == "a pipe":
        os.mkfifo(path)
    else:
        def disk_full(*args, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(cifar10.np, "savez", disk_full)
    with within(60):
        assert_same(load_cifar10(str(tmp_path / "data")), data)
    assert "warning   cannot keep the decoded images in" in capsys.readouterr().out or in_the_way == "a pipe"
    assert not [name for name in os.listdir(tmp_path / "data") if ".tmp" in name]


def test_a_cache_write_cut_short_leaves_no_copy_and_old_ones_are_removed(tmp_path, monkeypatch):
    data = synthetic_cifar10()
    tree = write_image_tree(str(tmp_path / "build" / "cifar-10-jpeg"), data)
    (tmp_path / "data").mkdir()
    make_tar_gz(str(tmp_path / "data" / "c.tar.gz"), tree, "cifar-10-jpeg")
    path = str(tmp_path / "data" / "c.decoded.npz")
    # Left behind by a process killed while writing (its id is free now), and
    # being written by a live one.
    dead = subprocess.Popen(["true"])
    dead.wait()
    left, writing = f"{path}.{dead.pid}.tmp.npz", f"{path}.{os.getppid()}.tmp.npz"
    huge = f"{path}.{10**30}.tmp.npz"  # Too large to be a process id: os.kill raised OverflowError.
    for name in (left, writing, huge):
        open(name, "wb").write(b"part of a cache")
    savez = np.savez

    def ctrl_c(file, **arrays):
        open(file, "wb").write(b"part of a cache")
        raise KeyboardInterrupt

    monkeypatch.setattr(cifar10.np, "savez", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        load_cifar10(str(tmp_path / "data"))
    assert sorted(name for name in os.listdir(tmp_path / "data") if ".tmp" in name) == [os.path.basename(writing)]
    monkeypatch.setattr(cifar10.np, "savez", savez)
    assert_same(load_cifar10(str(tmp_path / "data")), data)


def test_file_and_folder_names_that_are_not_utf8_are_cached_too(tmp_path, capsys):
    # A Latin-1 "café" in a name: UnicodeEncodeError while fingerprinting.
    data = synthetic_cifar10()
    tree = write_image_tree(str(tmp_path / "build" / "cifar-10-jpeg"), data)
    cat = os.path.join(tree, "test", "cat")
    first = sorted(os.listdir(cat))[0]
    os.rename(os.path.join(cat, first), os.fsdecode(os.path.join(os.fsencode(cat), b"caf\xe9" + os.fsencode(first))))
    decoded = load_cifar10(tree)
    assert decoded[1][0].shape == data[1][0].shape and "reused" not in capsys.readouterr().out
    # The second load reads the cache the first wrote.
    assert_same(load_cifar10(tree), decoded)
    assert "reused" in capsys.readouterr().out
    # In a read-only folder, the cache's name in the Keras cache is a hash of the source's path.
    (tmp_path / "readonly").mkdir(mode=0o555)
    source = os.fsdecode(os.path.join(os.fsencode(str(tmp_path / "readonly")), b"caf\xe9.tar.gz"))
    assert cache_path(source, cache_dir=str(tmp_path / "cache")).startswith(str(tmp_path / "cache"))


def test_cache_goes_to_the_keras_cache_when_the_source_folder_is_read_only(tmp_path):
    (tmp_path / "readonly").mkdir()
    source = str(tmp_path / "readonly" / "cifar.tar.gz")
    assert cache_path(source) == str(tmp_path / "readonly" / "cifar.decoded.npz")
    os.chmod(tmp_path / "readonly", 0o555)
    try:
        path = cache_path(source, cache_dir=str(tmp_path / "cache"))
    finally:
        os.chmod(tmp_path / "readonly", 0o755)
    assert path.startswith(str(tmp_path / "cache" / "datasets"))
    assert path.endswith("-cifar.decoded.npz")


def test_truncated_archive(tmp_path):
    tree = write_image_tree(str(tmp_path / "build" / "t"))
    (tmp_path / "data").mkdir()
    archive = make_tar_gz(str(tmp_path / "data" / "c.tar.gz"), tree, "t")
    content = open(archive, "rb").read()
    open(archive, "wb").write(content[: len(content) // 2])
    with pytest.raises(UserError, match="c.tar.gz is not a readable .tar.gz"):
        load_cifar10(str(tmp_path / "data"))


def test_truncated_batches_archive(tmp_path):
    batches = write_cifar_batches(str(tmp_path / "build" / "cifar-10-batches-py"))
    (tmp_path / "data").mkdir()
    archive = make_tar_gz(str(tmp_path / "data" / "cifar-10-python.tar.gz"), batches, "cifar-10-batches-py")
    open(archive, "r+b").truncate(os.path.getsize(archive) // 2)
    with pytest.raises(UserError, match="is not a readable"):
        load_cifar10(str(tmp_path / "data"))
    with pytest.raises(UserError, match="is not a readable"):
        load_cifar10(str(tmp_path / "data"), allow_pickle=True)


def test_wrong_class_folders(tmp_path):
    classes = ("cats", "dogs")
    write_image_tree(str(tmp_path / "c"), classes=classes)
    with pytest.raises(UserError, match="not CIFAR-10 classes: cats, dogs"):
        load_cifar10(str(tmp_path / "c"))


def test_missing_class_folder(tmp_path):
    write_image_tree(str(tmp_path / "c"))
    shutil.rmtree(tmp_path / "c" / "test" / "frog")
    with pytest.raises(UserError, match="no images in test/frog/"):
        load_cifar10(str(tmp_path / "c"))


def test_a_class_folder_of_files_that_are_not_images_says_which_files_count(tmp_path):
    write_image_tree(str(tmp_path / "c"))
    for path in (tmp_path / "c" / "test" / "frog").iterdir():
        path.rename(path.with_suffix(".raw"))
    with pytest.raises(UserError, match=r"no images in test/frog/ \(files ending \.jpg, \.jpeg, \.png, .*\.tiff\)"):
        load_cifar10(str(tmp_path / "c"))


def test_corrupt_image(tmp_path):
    write_image_tree(str(tmp_path / "c"))
    (tmp_path / "c" / "train" / "cat" / "0001.png").write_bytes(b"not a png")
    (tmp_path / "c" / "test" / "truck" / "0000.png").write_bytes(b"not a png")  # Read after the training images.
    with pytest.raises(UserError) as error:
        load_cifar10(str(tmp_path / "c"))
    # Not Pillow's "cannot identify image file <_io.BytesIO object at 0x...>".
    assert str(error.value) == (
        f"{tmp_path / 'c'}: train/cat/0001.png is not a readable image (no image format Pillow can decode); replace or remove it"
    )


def test_a_pipe_in_the_image_tree_is_refused_not_waited_on(tmp_path):
    write_image_tree(str(tmp_path / "c"))
    os.mkfifo(tmp_path / "c" / "train" / "cat" / "pipe.png")
    line = "^[^(]*pipe.png is a pipe, socket or device, not a regular file; put the file itself there"
    with within(20), pytest.raises(UserError, match=line):
        load_cifar10(str(tmp_path / "c"))


def test_a_pipe_in_place_of_a_batch_or_the_archive_is_refused_not_waited_on(tmp_path):
    write_cifar_batches(str(tmp_path / "cifar-10-batches-py"))
    os.remove(tmp_path / "cifar-10-batches-py" / "data_batch_3")
    os.mkfifo(tmp_path / "cifar-10-batches-py" / "data_batch_3")
    with within(20), pytest.raises(UserError, match="^[^(]*data_batch_3 is a pipe, socket or device"):
        load_cifar10(str(tmp_path), allow_pickle=True)
    (tmp_path / "archive").mkdir()
    os.mkfifo(tmp_path / "archive" / "cifar-10-python.tar.gz")
    with within(20), pytest.raises(UserError, match="cifar-10-python.tar.gz is a pipe, socket or device"):
        load_cifar10(str(tmp_path / "archive"))


def test_a_batches_folder_without_a_batch_names_it(tmp_path):
    write_cifar_batches(str(tmp_path / "cifar-10-batches-py"))
    os.remove(tmp_path / "cifar-10-batches-py" / "test_batch")
    with pytest.raises(UserError, match="cifar-10-batches-py lacks the batch test_batch; copy the whole folder again"):
        load_cifar10(str(tmp_path), allow_pickle=True)


def test_wrong_image_size(tmp_path):
    from PIL import Image

    write_image_tree(str(tmp_path / "c"))
    Image.new("RGB", (64, 64)).save(tmp_path / "c" / "train" / "cat" / "0001.png")
    with pytest.raises(UserError, match="must all be 32x32 RGB"):
        load_cifar10(str(tmp_path / "c"))


def test_folder_without_cifar(tmp_path):
    with pytest.raises(UserError, match="no CIFAR-10 data in"):
        load_cifar10(str(tmp_path))
    for missing in ("missing", "missing.tar.gz"):
        with pytest.raises(UserError, match="does not exist; give a folder that holds CIFAR-10"):
            load_cifar10(str(tmp_path / missing))
    (tmp_path / "notes.txt").write_text("not CIFAR-10")
    with pytest.raises(UserError, match="is neither a folder nor a .tar.gz or .tgz"):
        load_cifar10(str(tmp_path / "notes.txt"))
    # A folder named like an archive is none; a link to nowhere named so is named as what it is.
    (tmp_path / "photos.tgz").mkdir()
    with pytest.raises(UserError, match="no CIFAR-10 data in"):
        load_cifar10(str(tmp_path))
    os.symlink(tmp_path / "gone.tar.gz", tmp_path / "cifar.tar.gz")
    with pytest.raises(UserError, match=r"cifar\.tar\.gz: it is a link to .*gone\.tar\.gz, which does not exist"):
        load_cifar10(str(tmp_path))
