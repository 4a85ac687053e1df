import io
import os
import re
import struct
import sys

import numpy as np
import pytest

from common import UserError, photos
from conftest import PHOTO_CLASSES, make_tar_gz, reads_of, within, write_photo_tree

SIZE = 24


def as_set(x):
    """Each image as bytes, to compare collections without caring for order."""
    return {image.tobytes() for image in x}


def test_a_folder_of_class_folders_loads_and_skips_what_is_not_an_image(tmp_path, capsys):
    root = write_photo_tree(str(tmp_path / "photos"))
    found = photos.load_photos(root, SIZE)
    assert list(found) == ["all"]
    x, y, classes, skipped = found["all"]
    assert classes == list(PHOTO_CLASSES)
    assert x.shape == (30, SIZE, SIZE, 3) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [10, 10, 10]
    # notes.txt and the truncated JPEG are skipped; LICENSE.txt is no class's.
    assert skipped == 2
    assert "skipped 2 files" in capsys.readouterr().out
    os.remove(os.path.join(root, "cats", "notes.txt"))
    assert photos.load_photos(root, SIZE)["all"].skipped == 1
    assert "skipped 1 file in" in capsys.readouterr().out  # Not "1 files".
    # Each class keeps its tint, so the photos are where their labels say.
    for label in range(3):
        assert np.argmax(x[y == label].mean(axis=(0, 1, 2))) == label


def test_an_archive_a_folder_holding_it_and_the_folder_give_the_same_photos(tmp_path):
    root = write_photo_tree(str(tmp_path / "tree" / "flower_photos"))
    (tmp_path / "archive").mkdir()
    archive = make_tar_gz(str(tmp_path / "archive" / "photos.tgz"), root, "flower_photos")
    from_folder = photos.load_photos(str(tmp_path / "tree"), SIZE)["all"]  # One folder down.
    from_archive = photos.load_photos(archive, SIZE)["all"]
    from_archive_folder = photos.load_photos(str(tmp_path / "archive"), SIZE)["all"]
    for other in (from_archive, from_archive_folder):
        assert other.classes == from_folder.classes
        np.testing.assert_array_equal(other.x, from_folder.x)
        np.testing.assert_array_equal(other.y, from_folder.y)
        assert other.skipped == from_folder.skipped == 2


def test_an_archive_named_in_capitals_is_read_given_itself_and_in_a_folder(tmp_path):
    # It was "a file but not a .tgz or .tar.gz", and the folder's photos were none.
    root = write_photo_tree(str(tmp_path / "tree" / "flower_photos"))
    (tmp_path / "archive").mkdir()
    archive = make_tar_gz(str(tmp_path / "archive" / "PHOTOS.TAR.GZ"), root, "flower_photos")
    for given in (archive, str(tmp_path / "archive")):
        assert photos.load_photos(given, SIZE)["all"].classes == list(PHOTO_CLASSES)


def test_an_archive_saved_already_decompressed_under_its_tgz_name_is_read(tmp_path):
    # A browser may decompress a .tgz as it saves it and keep the name: it was
    # called truncated or corrupt, which a fresh copy from the same browser is too.
    import tarfile

    root = write_photo_tree(str(tmp_path / "tree" / "flower_photos"))
    with tarfile.open(tmp_path / "photos.tgz", "w") as tar:
        tar.add(root, arcname="flower_photos")
    from_archive = photos.load_photos(str(tmp_path / "photos.tgz"), SIZE)["all"]
    from_folder = photos.load_photos(str(tmp_path / "tree"), SIZE)["all"]
    np.testing.assert_array_equal(from_archive.x, from_folder.x)
    np.testing.assert_array_equal(from_archive.y, from_folder.y)
    # Without gzip's checksum, a cut or damaged header would pass for the
    # end of the archive, and the classes after it would be left out.
    whole = (tmp_path / "photos.tgz").read_bytes()
    with tarfile.open(tmp_path / "photos.tgz") as tar:
        middle = tar.getmembers()[len(tar.getmembers()) // 2].offset
    flipped = bytearray(whole)
    flipped[middle + 150] ^= 0xFF  # In the header's checksum.
    for name, damaged in (("cut.tgz", whole[:middle]), ("flipped.tgz", bytes(flipped))):
        (tmp_path / name).write_bytes(damaged)
        with pytest.raises(UserError, match=f"{name} is not a readable .tar.gz .it ends after 1[0-9] entries without"):
            photos.load_photos(str(tmp_path / name), SIZE)
    # A file that is neither gzip nor tar is still called what it is not.
    (tmp_path / "page.tgz").write_text("<html>Not found</html>")
    with pytest.raises(UserError, match=r"page.tgz is not a readable .tar.gz \(not a gzip file\)"):
        photos.load_photos(str(tmp_path / "page.tgz"), SIZE)


def test_an_archive_that_cannot_be_opened_is_not_called_corrupt(tmp_path, monkeypatch):
    # No permission to read it was "not a readable .tar.gz ...; it may be
    # truncated or corrupt: replace it with a fresh copy", which would not help.
    from common import data

    archive = make_tar_gz(str(tmp_path / "photos.tgz"), write_photo_tree(str(tmp_path / "tree")), "flower_photos")

    def refused(path, *args, **kwargs):  # As a file without read permission, for a user other than root.
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(data, "open", refused, raising=False)
    with pytest.raises(UserError, match=r"^cannot read .*photos.tgz \(Permission denied\); check the path and that the file is readable$"):
        photos.load_photos(archive, SIZE)


def test_an_archive_is_read_in_its_own_order_whatever_the_order_of_the_names(tmp_path, monkeypatch):
    # Read by name, a .tar.gz whose files are not stored in name order (as
    # `tar czf` stores them) was decompressed again from its start for each
    # file read backwards: 7.0 s for 300 of the flowers, 0.6 s in the archive's order.
    root = write_photo_tree(str(tmp_path / "tree" / "flower_photos"))
    archive = make_tar_gz(str(tmp_path / "photos.tgz"), root, "flower_photos", shuffled=True)
    offsets = reads_of(monkeypatch)
    from_archive = photos.load_photos(archive, SIZE)["all"]
    assert len(offsets) == 32 and offsets == sorted(offsets)  # The photos, notes.txt and broken.jpg.
    from_folder = photos.load_photos(str(tmp_path / "tree"), SIZE)["all"]
    np.testing.assert_array_equal(from_archive.x, from_folder.x)
    np.testing.assert_array_equal(from_archive.y, from_folder.y)
    assert from_archive.skipped == from_folder.skipped == 2


def test_a_large_file_that_is_not_an_image_is_skipped_unread(tmp_path, monkeypatch):
    # A phone's camera folder holds videos beside the photos: each was read
    # whole (a 4 GB video, 4 GB of memory) only to be skipped. Here a 100 MB
    # file of zeros (sparse on disk, and tiny in the archive), in a folder
    # and in an archive, and as a photo to --predict.
    import tracemalloc

    root = write_photo_tree(str(tmp_path / "tree" / "photos"))
    with open(os.path.join(root, "cats", "clip.mp4"), "wb") as f:
        f.truncate(100 * 2**20)
    archive = make_tar_gz(str(tmp_path / "photos.tgz"), root, "photos")

    def peak_memory(load):
        tracemalloc.start()
        try:
            return load(), tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    for source in (root, archive):
        found, peak = peak_memory(lambda: photos.load_photos(source, SIZE)["all"])
        assert found.skipped == 3 and len(found.y) == 30
        assert peak < 50 * 2**20, f"{peak / 2**20:.0f} MB"

    def predict_clip():
        with pytest.raises(UserError, match="clip.mp4 is not a readable image"):
            photos.read_image(os.path.join(root, "cats", "clip.mp4"), SIZE)

    assert peak_memory(predict_clip)[1] < 50 * 2**20

    # One that cannot be opened is "cannot read", as a small one is (not "not a readable image").
    def refused(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(photos, "open", refused, raising=False)
    with pytest.raises(UserError, match=r"^cannot read .*clip.mp4 \(Permission denied\)"):
        photos.read_image(os.path.join(root, "cats", "clip.mp4"), SIZE)
    monkeypatch.delattr(photos, "open")
    # A photo above the size is opened for its header, then read and decoded as any other.
    monkeypatch.setattr(photos, "LARGE_FILE", 0)
    offsets = reads_of(monkeypatch)
    for source in (root, archive):
        again = photos.load_photos(source, SIZE)["all"]
        np.testing.assert_array_equal(again.x, found.x)
        assert again.skipped == 3
    # Each file in the archive is opened once, in the archive's order: opened
    # again after its header, it decompressed the archive again from its start.
    assert offsets and offsets == sorted(set(offsets))


def test_a_large_photo_in_an_archive_is_read_without_decompressing_the_archive_again(tmp_path, monkeypatch):
    # Opened for its header and again for its bytes, each large photo sent the
    # gzip stream back to the archive's start, to decompress it all again.
    import gzip

    from PIL import Image

    root = write_photo_tree(str(tmp_path / "tree" / "photos"))
    # A header of 100 kB (a colour profile), beyond tarfile's own buffer.
    Image.new("RGB", (50, 40), (200, 30, 30)).save(os.path.join(root, "cats", "profiled.jpg"), icc_profile=bytes(100_000))
    archive = make_tar_gz(str(tmp_path / "photos.tgz"), root, "photos")
    rewinds = []
    rewind = gzip._GzipReader._rewind
    monkeypatch.setattr(gzip._GzipReader, "_rewind", lambda reader: rewinds.append(1) or rewind(reader))
    small = photos.load_photos(archive, SIZE)["all"]
    read_whole = len(rewinds)
    monkeypatch.setattr(photos, "LARGE_FILE", 0)  # Every photo is large.
    large = photos.load_photos(archive, SIZE)["all"]
    np.testing.assert_array_equal(large.x, small.x)
    assert len(large.y) == 31 and len(rewinds) == 2 * read_whole


def test_train_and_test_folders_keep_the_users_split(tmp_path):
    write_photo_tree(str(tmp_path / "train"), per_class=6)
    write_photo_tree(str(tmp_path / "test"), per_class=3, seed=1)
    found = photos.load_photos(str(tmp_path), SIZE)
    assert sorted(found) == ["test", "train"]
    assert len(found["train"].x) == 18 and len(found["test"].x) == 9


@pytest.mark.parametrize("depth", [4, 6])
def test_the_users_split_is_found_below_any_number_of_wrapping_folders(tmp_path, depth):
    # `tar czf pets.tgz /home/me/datasets/pets` stores home/me/datasets/pets/train/...: four wrapping
    # folders, below which train/ and test/ were read as two classes named "test" and "train".
    root = tmp_path.joinpath(*[f"wrapper{i}" for i in range(depth)])
    write_photo_tree(str(root / "train"), per_class=2)
    write_photo_tree(str(root / "test"), per_class=1, seed=1)
    archive = make_tar_gz(str(tmp_path / "pets.tgz"), str(tmp_path / "wrapper0"), "wrapper0")
    for source in (str(tmp_path), archive):
        found = photos.load_photos(source, SIZE)
        assert sorted(found) == ["test", "train"]
        assert found["train"].classes == list(PHOTO_CLASSES)


def test_an_archive_that_names_its_root_as_a_folder_loads(tmp_path):
    # A folder named "/" is the archive's root, as "./" is: it was taken for a
    # class folder named "", and in an archive of it alone the search for the
    # class folders went round forever.
    import tarfile

    root = write_photo_tree(str(tmp_path / "tree" / "flower_photos"), per_class=2)
    with tarfile.open(tmp_path / "photos.tgz", "w:gz") as tar:
        top = tarfile.TarInfo("/")
        top.type = tarfile.DIRTYPE
        tar.addfile(top)
        tar.add(root, arcname="flower_photos")
    with within(20):
        assert photos.load_photos(str(tmp_path / "photos.tgz"), SIZE)["all"].classes == list(PHOTO_CLASSES)
    with tarfile.open(tmp_path / "root only.tgz", "w:gz") as tar:
        tar.addfile(top)
    with within(20), pytest.raises(UserError, match="holds 0 class folder"):
        photos.load_photos(str(tmp_path / "root only.tgz"), SIZE)


@pytest.mark.parametrize("train, test", [("Train", "Test"), ("training_set", "test_set"), ("TRAINING", "testing")])
def test_split_folders_are_known_in_any_case_and_by_their_other_usual_names(tmp_path, train, test):
    # Kaggle's Train/ and Test/ were read as a collection of two classes,
    # "Train" and "Test", and a model trained to tell them apart.
    write_photo_tree(str(tmp_path / train), per_class=6)
    write_photo_tree(str(tmp_path / "Valid_set"), per_class=2, seed=2)
    write_photo_tree(str(tmp_path / test), per_class=3, seed=1)
    found = photos.load_photos(str(tmp_path), SIZE)
    assert list(found) == ["train", "test", "validation"]
    assert [len(found[split].x) for split in ("train", "validation", "test")] == [18, 6, 9]
    assert found["train"].classes == ["cats", "dogs", "owls"]


@pytest.mark.parametrize("name", ["validation", "val", "valid"])
def test_a_validation_folder_beside_train_and_test_is_the_validation_split(tmp_path, name):
    write_photo_tree(str(tmp_path / "train"), per_class=6)
    write_photo_tree(str(tmp_path / name), per_class=2, seed=2)
    write_photo_tree(str(tmp_path / "test"), per_class=3, seed=1)
    found = photos.load_photos(str(tmp_path), SIZE)
    assert sorted(found) == ["test", "train", "validation"]
    assert [len(found[split].x) for split in ("train", "validation", "test")] == [18, 6, 9]


@pytest.mark.parametrize("name", ["validation", "val", "valid"])
def test_train_and_validation_folders_without_test_are_refused_before_decoding(tmp_path, monkeypatch, name):
    # They were read as a collection of two classes, "train" and "val", and trained on.
    write_photo_tree(str(tmp_path / "photos" / "train"), per_class=6)
    write_photo_tree(str(tmp_path / "photos" / name), per_class=2, seed=2)
    monkeypatch.setattr(photos, "load_image", lambda data, size: pytest.fail("a photo was decoded"))
    with pytest.raises(UserError) as error:
        photos.load_photos(str(tmp_path), SIZE)  # One wrapping folder up, as the flowers archive has.
    assert str(error.value) == (
        f"{tmp_path}/photos holds train/ and {name}/ but no test/; rename {name}/ to test/ (validation then comes out "
        "of train/), or add a test/ folder of the same classes (the photos scored once, at the end)"
    )


def test_an_image_size_whose_photos_would_not_fit_in_memory_is_refused_before_decoding(tmp_path, monkeypatch):
    # --image_size=1000000 ran the machine out of memory until the system killed the run.
    root = write_photo_tree(str(tmp_path / "photos"))  # 30 photos and 3 other files.
    monkeypatch.setattr(photos, "load_image", lambda data, size: pytest.fail("a photo was decoded"))
    monkeypatch.setattr(os, "sysconf", {"SC_PHYS_PAGES": 2**20, "SC_PAGE_SIZE": 2**12}.get)  # 4 GiB.
    with pytest.raises(UserError) as error:
        photos.load_photos(root, 5000)
    assert str(error.value) == (
        f"33 files of {root} as 5000x5000 photos would take 4.6 GiB as they load, more than this machine's 4.0 GiB of memory; "
        "give a smaller --image_size (Xception's own is 299)"
    )
    monkeypatch.undo()
    assert len(photos.load_photos(root, SIZE)["all"].x) == 30


def test_a_photo_too_large_for_pillow_decodes_if_jpeg_shrinks_it_enough(recwarn, monkeypatch):
    # A panorama or a 200-megapixel phone photo was skipped as "not a readable
    # image" (Pillow's decompression bomb error above twice its limit of 89
    # million pixels), and one above the limit printed Pillow's two-line
    # warning. Here with a limit of 1,000 pixels and photos of 10,000.
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    pixels = Image.new("RGB", (100, 100), (128, 64, 32))
    for format, readable in ("JPEG", True), ("PNG", False):
        data = io.BytesIO()
        pixels.save(data, format)
        if readable:  # JPEG decodes at a quarter of the width and height here: 25x25.
            assert photos.load_image(data.getvalue(), SIZE).shape == (SIZE, SIZE, 3)
        else:
            with pytest.raises(ValueError, match="^100x100 pixels to decode, more than 2,000$"):
                photos.load_image(data.getvalue(), SIZE)
    assert not [w for w in recwarn if "DecompressionBomb" in type(w.message).__name__]
    assert Image.MAX_IMAGE_PIXELS == 1000  # Pillow's own limit is back for other code.


def test_an_out_dir_read_as_a_class_of_photos_is_refused(tmp_path, monkeypatch):
    root = write_photo_tree(str(tmp_path / "photos"))
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", os.path.join(root, "linked"))  # A link out of the folder is read as a class.
    os.symlink(tmp_path, os.path.join(root, "cats", "round"))  # Round in circles: the check still ends.
    (tmp_path / "further").mkdir()
    os.symlink(tmp_path / "further", tmp_path / "elsewhere" / "on")  # Read through the link that leads to it.
    (tmp_path / "unread").mkdir()
    os.makedirs(os.path.join(root, ".hidden"))
    os.symlink(tmp_path / "unread", os.path.join(root, ".hidden", "link"))  # Not read: a hidden folder holds the link.
    os.symlink(tmp_path / "future", os.path.join(root, "later"))  # To nowhere yet: a class once the run makes it.
    monkeypatch.chdir(tmp_path)
    for out_dir in ("photos/runs", "photos", f"{root}/cats/runs", "photos/linked/runs", "elsewhere/runs", "further/runs", "future"):
        with pytest.raises(UserError, match=f"^--out_dir={out_dir} lies inside --data_dir=photos, whose folders are read"):
            photos.check_out_dir("photos", out_dir, "script")
    # Hidden folders are never read; the photo folder's neighbours are not in it; an archive holds no folder.
    for out_dir in ("photos/.runs", "photos-runs", "runs", "elsewhere/.runs", "unread/runs"):
        photos.check_out_dir("photos", out_dir, "script")
    photos.check_out_dir(make_tar_gz(str(tmp_path / "photos.tgz"), root, "photos"), "runs", "script")
    # A link into the folder the runs go in (out_dir/<script>), or a photo folder there, reads the runs too.
    os.symlink(tmp_path / "runs" / "script", os.path.join(root, "owls", "earlier"))
    for data_dir, out_dir in (("photos", "runs"), ("runs/script/old", "runs")):
        os.makedirs(data_dir, exist_ok=True)
        with pytest.raises(UserError, match=f"^--data_dir={data_dir} reads runs/script, where the runs are written"):
            photos.check_out_dir(data_dir, out_dir, "script")


def test_the_splits_found_are_checked_before_any_photo_is_decoded(tmp_path, monkeypatch):
    # So that a script refuses a setting that does not fit the folder at once,
    # not after decoding every photo (minutes for the flowers).
    write_photo_tree(str(tmp_path / "split" / "train"))
    write_photo_tree(str(tmp_path / "split" / "test"))
    archive = make_tar_gz(str(tmp_path / "split.tgz"), str(tmp_path / "split"), "split")
    plain = write_photo_tree(str(tmp_path / "plain"))
    monkeypatch.setattr(photos, "load_image", lambda *args: pytest.fail("a photo was decoded"))

    def refuse(found):
        raise UserError(f"found {sorted(found)}")

    # "" is the TensorFlow flowers, checked before their download (218 MB).
    monkeypatch.setattr(photos, "download", lambda *args: pytest.fail("the flowers were downloaded"))
    for source, found in ((str(tmp_path / "split"), "['test', 'train']"), (archive, "['test', 'train']"), (plain, "['all']"),
                          ("", "['all']")):
        with pytest.raises(UserError, match=f"^found {re.escape(found)}$"):
            photos.load_photos(source, SIZE, before_decoding=refuse)


def test_the_splits_are_checked_once_on_every_path(tmp_path, monkeypatch):
    # transfer_xception.py builds its pretrained base there: with the flowers'
    # download (data_dir ""), the archive it downloaded was checked again, and
    # the base built twice.
    plain = write_photo_tree(str(tmp_path / "plain"))
    archive = make_tar_gz(str(tmp_path / "plain.tgz"), plain, "plain")
    monkeypatch.setattr(photos, "download", lambda *args: archive)
    for source in (plain, archive, ""):
        calls = []
        loaded = photos.load_photos(source, SIZE, before_decoding=calls.append)
        assert calls == [["all"]] and list(loaded) == ["all"]


def test_the_split_is_seeded_disjoint_and_holds_every_class(tmp_path):
    collection = photos.load_photos(write_photo_tree(str(tmp_path), per_class=20), SIZE)["all"]
    splits = photos.split_photos(collection, validation_split=0.15, test_split=0.2, seed=0)
    sets = {name: as_set(part.x) for name, part in splits.items()}
    assert sum(len(s) for s in sets.values()) == len(as_set(collection.x)) == 60
    assert not (sets["train"] & sets["validation"] or sets["train"] & sets["test"] or sets["validation"] & sets["test"])
    assert [np.bincount(splits[name].y).tolist() for name in ("train", "validation", "test")] == [
        [13, 13, 13], [3, 3, 3], [4, 4, 4]
    ]
    again = photos.split_photos(collection, 0.15, 0.2, seed=0)
    other = photos.split_photos(collection, 0.15, 0.2, seed=1)
    np.testing.assert_array_equal(again["test"].x, splits["test"].x)
    assert as_set(other["test"].x) != sets["test"]
    # The classes are shuffled together, not left in the class folders' order.
    for part in splits.values():
        assert list(part.y) != sorted(part.y)


def test_too_few_photos_to_split_is_a_user_error(tmp_path):
    collection = photos.load_photos(write_photo_tree(str(tmp_path), per_class=3), SIZE)["all"]
    with pytest.raises(UserError, match="too few to split"):
        photos.split_photos(collection, 0.15, 0.2, seed=0)


def test_photos_in_no_class_folder_are_named_as_left_out(tmp_path, capsys):
    # One class folder of photos with two subfolders was read, silently, as a
    # wrapper whose subfolders are the classes: "2019" against "2020".
    cats = tmp_path / "photos" / "cats"
    write_photo_tree(str(cats), classes=("2019", "2020"))
    for name in ("a.jpg", "b.JPG"):
        (cats / name).write_bytes((cats / "2019" / "000.jpg").read_bytes())
    assert photos.load_photos(str(tmp_path / "photos"), SIZE)["all"].classes == ["2019", "2020"]
    assert f"left out 2 photos in {cats} that are in no class folder (a.jpg, b.JPG); the classes are its folders: 2019, 2020" in capsys.readouterr().out
    # LICENSE.txt beside the classes is no photo, and no note.
    photos.load_photos(write_photo_tree(str(tmp_path / "plain")), SIZE)
    assert "no class folder" not in capsys.readouterr().out
    # Fewer than two class folders: the photos beside them in the one line that stops the run.
    for folders in (["2019"], []):
        one = tmp_path / f"one{len(folders)}"
        one.mkdir()
        (one / "a.jpg").write_bytes((cats / "a.jpg").read_bytes())
        for name in folders:
            (one / name).mkdir()
            (one / name / "b.jpg").write_bytes((cats / "a.jpg").read_bytes())
        with pytest.raises(UserError, match=rf"holds {len(folders)} class folder\(s\) .* and 1 photo beside them; "):
            photos.load_photos(str(one), SIZE)
        assert "no class folder" not in capsys.readouterr().out


def test_bad_folders_stop_with_one_clear_line(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        photos.load_photos(str(tmp_path / "no" / "such" / "folder"), SIZE)

    one = tmp_path / "one"
    write_photo_tree(str(one / "only"), classes=("cats",))  # A single class, one folder down.
    with pytest.raises(UserError, match="at least two class folders"):
        photos.load_photos(str(one), SIZE)

    empty = tmp_path / "empty"
    write_photo_tree(str(empty))
    (empty / "zebras").mkdir()
    with pytest.raises(UserError, match="zebras holds no readable images"):
        photos.load_photos(str(empty), SIZE)

    not_photos = tmp_path / "text"
    write_photo_tree(str(not_photos))
    for name in os.listdir(not_photos / "owls"):
        (not_photos / "owls" / name).write_text("not a photo")
    with pytest.raises(UserError, match="owls holds no readable images"):
        photos.load_photos(str(not_photos), SIZE)

    other_file = tmp_path / "photos.zip"
    other_file.write_bytes(b"PK")
    with pytest.raises(UserError, match="not a .tgz"):
        photos.load_photos(str(other_file), SIZE)

    broken = tmp_path / "broken.tgz"
    broken.write_bytes(b"\x1f\x8b\x08 truncated")
    with pytest.raises(UserError, match="not a readable .tar.gz"):
        photos.load_photos(str(broken), SIZE)


def test_an_empty_class_folder_stops_the_run_before_any_photo_is_decoded(tmp_path, monkeypatch):
    write_photo_tree(str(tmp_path / "photos"))
    (tmp_path / "photos" / "aardvarks").mkdir()  # The first class.
    decoded = []
    monkeypatch.setattr(photos, "load_image", lambda data, size: decoded.append(size))
    with pytest.raises(UserError, match="aardvarks holds no readable images"):
        photos.load_photos(str(tmp_path / "photos"), SIZE)
    assert decoded == []


def test_an_archive_damaged_anywhere_is_refused(tmp_path):
    # tarfile takes a damaged header for the end of the archive, and a
    # damaged photo may still decode: only the gzip checksum catches both.
    root = write_photo_tree(str(tmp_path / "photos"), per_class=12)
    archive = make_tar_gz(str(tmp_path / "photos.tgz"), root, "flower_photos")
    whole = open(archive, "rb").read()
    for where in (0.2, 0.5, 0.8):
        damaged = bytearray(whole)
        damaged[int(len(whole) * where)] ^= 0xFF
        path = tmp_path / f"damaged-{where}.tgz"
        path.write_bytes(bytes(damaged))
        with pytest.raises(UserError, match="is not a readable .tar.gz"):
            photos.load_photos(str(path), SIZE)


def test_a_split_folder_with_other_classes_is_a_user_error(tmp_path):
    write_photo_tree(str(tmp_path / "Training_set"))
    write_photo_tree(str(tmp_path / "test"), classes=("cats", "dogs", "emus"))
    with pytest.raises(UserError) as error:
        photos.load_photos(str(tmp_path), SIZE)
    assert str(error.value) == (f"{tmp_path}/test has the classes cats, dogs, emus but {tmp_path}/Training_set has "
                                "cats, dogs, owls; every split needs the same class folders")


@pytest.mark.parametrize("names", [("val", "validation"), ("Train", "train")])
def test_two_folders_naming_one_split_are_refused_not_one_left_out(tmp_path, names):
    for name in ("train", "test", *names):
        write_photo_tree(str(tmp_path / name), per_class=2)
    both = " and ".join(f"{name}/" for name in sorted(set(names)))
    with pytest.raises(UserError, match=f"holds {both}, which all name its (validation|train) split; merge them"):
        photos.load_photos(str(tmp_path), SIZE)


def test_other_folders_beside_the_split_folders_are_named_as_left_out(tmp_path, capsys):
    write_photo_tree(str(tmp_path / "training_set"), per_class=4)
    write_photo_tree(str(tmp_path / "test_set"), per_class=2)
    (tmp_path / "single_prediction").mkdir()
    found = photos.load_photos(str(tmp_path), SIZE)
    assert list(found) == ["train", "test"]
    assert f"data      left out single_prediction/ in {tmp_path}: beside the train and test folders" in capsys.readouterr().out


@pytest.mark.skipif("tensorflow_datasets" in sys.modules, reason="only without tensorflow_datasets")
def test_a_dataset_name_without_tensorflow_datasets_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # Makes the import fail.
    with pytest.raises(UserError, match="pip install tensorflow-datasets"):
        photos.load_photos("tf_flowers", SIZE)
    # A mistyped folder name looks like a dataset name: it hears first that it does not exist.
    with pytest.raises(UserError, match="^data_dir 'my_photos' does not exist; give a folder"):
        photos.load_photos("my_photos", SIZE)


def test_read_image_resizes_a_photo_and_refuses_anything_else(tmp_path):
    root = write_photo_tree(str(tmp_path))
    image = photos.read_image(os.path.join(root, "owls", "000.jpg"), 32)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    with pytest.raises(UserError, match="is not a readable image"):
        photos.read_image(os.path.join(root, "cats", "notes.txt"), 32)
    with pytest.raises(UserError, match="cannot read"):
        photos.read_image(os.path.join(root, "missing.jpg"), 32)
    # A path of spaces (--predict=" ") or with a tab in it is quoted, not left invisible in the line.
    with pytest.raises(UserError, match=r"^cannot read ' ' \(No such file or directory\)"):
        photos.read_image(" ", 32)
    with pytest.raises(UserError, match=r"^cannot read 'a\\tb.jpg' \(No such file"):
        photos.read_image("a\tb.jpg", 32)
    # A pipe is refused, not read: reading one waits for a writer, possibly forever.
    os.mkfifo(os.path.join(root, "pipe.jpg"))
    with within(20), pytest.raises(UserError, match="pipe.jpg is a pipe, socket or device"):
        photos.read_image(os.path.join(root, "pipe.jpg"), 32)


def test_a_pipe_in_a_class_folder_is_skipped_like_any_non_image(tmp_path):
    root = write_photo_tree(str(tmp_path))
    os.mkfifo(os.path.join(root, "owls", "pipe.jpg"))
    with within(20):
        found = photos.load_photos(root, SIZE)["all"]
    assert len(found.x) == 30 and found.skipped == 3  # notes.txt, the truncated JPEG and the pipe.


def test_a_pipe_named_like_an_archive_is_refused_not_waited_on(tmp_path):
    os.mkfifo(tmp_path / "photos.tgz")
    with within(20), pytest.raises(UserError, match="photos.tgz is a pipe, socket or device"):
        photos.load_photos(str(tmp_path / "photos.tgz"), SIZE)


def test_a_class_linked_from_elsewhere_is_read_and_no_photo_twice_or_from_above(tmp_path):
    root = write_photo_tree(str(tmp_path / "photos"))
    os.rename(os.path.join(root, "owls"), tmp_path / "owls")
    os.symlink(tmp_path / "owls", os.path.join(root, "owls"))  # Read: it was reported as empty.
    os.symlink(root, tmp_path / "owls" / "back")  # Back to the top: not followed, or it would loop.
    os.symlink(tmp_path, os.path.join(root, "cats", "up"))  # Above the top: not read.
    os.makedirs(os.path.join(root, "dogs", "more"))
    for name in ("000.jpg", "001.jpg"):
        os.rename(os.path.join(root, "dogs", name), os.path.join(root, "dogs", "more", name))
    os.symlink(os.path.join(root, "dogs", "more"), os.path.join(root, "cats", "more"))  # Dogs as cats: not read.
    found = photos.load_photos(root, SIZE)["all"]
    assert found.classes == list(PHOTO_CLASSES)
    assert np.bincount(found.y).tolist() == [10, 10, 10] and found.skipped == 2


def test_a_class_linked_to_another_inside_the_folder_is_an_empty_class(tmp_path):
    root = write_photo_tree(str(tmp_path))
    os.symlink(os.path.join(root, "dogs"), os.path.join(root, "puppies"))
    with pytest.raises(UserError, match="puppies holds no readable images"):
        photos.load_photos(root, SIZE)


def test_without_a_test_split_only_train_and_validation_come_back(tmp_path):
    collection = photos.load_photos(write_photo_tree(str(tmp_path), per_class=10), SIZE)["all"]
    splits = photos.split_photos(collection, validation_split=0.2, test_split=0, seed=0)
    assert sorted(splits) == ["train", "validation"]
    assert len(splits["train"].x) == 24 and len(splits["validation"].x) == 6


def test_hidden_files_and_folders_are_left_out_in_a_folder_and_an_archive(tmp_path):
    root = write_photo_tree(str(tmp_path / "tree" / "photos"))
    # A tool's hidden folder of photos beside the classes, and another's inside one.
    write_photo_tree(str(tmp_path / "tree" / "photos" / ".thumbnails"), classes=("small",), per_class=4)
    write_photo_tree(str(tmp_path / "tree" / "photos" / "owls" / ".cache"), classes=("old",), per_class=4)
    with open(os.path.join(root, "cats", ".DS_Store"), "wb") as f:
        f.write(b"\x00\x00\x00\x01Bud1")
    archive = make_tar_gz(str(tmp_path / "photos.tgz"), str(tmp_path / "tree"), ".")
    for source in (root, archive):
        found = photos.load_photos(source, SIZE)["all"]
        assert found.classes == list(PHOTO_CLASSES)
        assert np.bincount(found.y).tolist() == [10, 10, 10]
        assert found.skipped == 2  # notes.txt and the truncated JPEG, as without the hidden files


def test_a_class_folder_named_in_another_encoding_is_one_line(tmp_path):
    root = write_photo_tree(str(tmp_path / "photos"))
    # "café" in Latin-1, as an old archive or another system may have written it.
    os.rename(os.path.join(root, "owls"), os.path.join(os.fsencode(root), b"caf\xe9"))
    with pytest.raises(UserError, match=r"photos/caf\\xe9 has a name that is not UTF-8 text.*rename it"):
        photos.load_photos(root, SIZE)


def test_a_16_bit_greyscale_photo_keeps_its_shades(tmp_path):
    from PIL import Image

    # A left half of mid grey and a right half of white, in 16 bits a channel.
    pixels = np.full((40, 40), 65535, dtype=np.uint16)
    pixels[:, :20] = 128 * 257
    Image.fromarray(pixels).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")
    image = photos.read_image(str(tmp_path / "grey16.png"), 40)
    assert image.shape == (40, 40, 3)
    assert (image[:, :18] == 128).all() and (image[:, 22:] == 255).all()


def test_a_32_bit_float_photo_of_values_from_0_to_1_keeps_its_shades(tmp_path):
    from PIL import Image

    # A scientific TIFF's floats: Pillow's own conversion made it black.
    pixels = np.full((40, 40), 1.0, dtype=np.float32)
    pixels[:, :20] = 0.5
    Image.fromarray(pixels).save(tmp_path / "float.tif")
    assert Image.open(tmp_path / "float.tif").mode == "F"
    image = photos.read_image(str(tmp_path / "float.tif"), 40)
    assert (image[:, :18] == 128).all() and (image[:, 22:] == 255).all()


def test_a_photo_is_turned_upright_as_its_exif_orientation_says(tmp_path):
    from PIL import Image

    # Stored sideways, as a phone held upright stores it: the top row, here
    # white, is the left column of the stored pixels. Orientation 6 says to
    # turn the stored image a quarter clockwise to show it.
    pixels = np.zeros((40, 40, 3), dtype=np.uint8)
    pixels[:, :10] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(tmp_path / "upright.jpg", exif=exif, quality=95)
    image = photos.read_image(str(tmp_path / "upright.jpg"), 40).astype(int)
    assert (image[:8] > 200).all() and (image[12:] < 50).all()

    # The same with a tag of the wrong type beside the orientation (an
    # ImageDescription of text made a number), which Pillow reads but cannot
    # write back: ImageOps.exif_transpose failed on it, and the photo was
    # skipped as not an image.
    exif[0x010E] = "abcdefgh"
    Image.fromarray(pixels).save(tmp_path / "odd.jpg", exif=exif, quality=95)
    data = bytearray((tmp_path / "odd.jpg").read_bytes())
    entry = data.find(struct.pack(">HH", 0x010E, 2))  # Pillow writes EXIF big-endian: tag, type ASCII.
    data[entry + 2 : entry + 8] = struct.pack(">HI", 5, 1)  # One RATIONAL instead.
    (tmp_path / "odd.jpg").write_bytes(bytes(data))
    assert (photos.read_image(str(tmp_path / "odd.jpg"), 40).astype(int)[:8] > 200).all()


@pytest.mark.parametrize(
    "orientation, upright",
    [
        (1, lambda a: a), (2, np.fliplr), (3, lambda a: np.rot90(a, 2)), (4, np.flipud),
        (5, lambda a: a.transpose(1, 0, 2)), (6, lambda a: np.rot90(a, -1)),
        (7, lambda a: np.rot90(a, 2).transpose(1, 0, 2)), (8, lambda a: np.rot90(a, 1)),
    ],
)
def test_each_exif_orientation_turns_the_photo_as_the_standard_says(orientation, upright, tmp_path):
    from PIL import Image

    # Every pixel different, in a photo taller than wide, so that any other
    # turn or mirror gives other pixels or another shape. PNG: no loss.
    stored = np.arange(6 * 4 * 3, dtype=np.uint8).reshape(6, 4, 3)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(tmp_path / "photo.png", exif=exif)
    with Image.open(tmp_path / "photo.png") as image:
        np.testing.assert_array_equal(np.asarray(photos._upright(image)), upright(stored))


def test_a_file_that_is_no_image_is_named_without_pillows_internals(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("not a photo\n")
    with pytest.raises(UserError) as error:
        photos.read_image(str(path), 32)
    assert str(error.value) == f"{path} is not a readable image (no image format Pillow can decode); give a JPEG or PNG photo"


def test_a_32_bit_greyscale_photo_of_byte_values_keeps_them(tmp_path):
    from PIL import Image

    # Pillow's mode "I" holds 32-bit integers; values up to 255 are bytes already.
    Image.fromarray(np.full((40, 40), 200, dtype=np.int32)).save(tmp_path / "grey32.tif")
    assert Image.open(tmp_path / "grey32.tif").mode == "I"
    assert (photos.read_image(str(tmp_path / "grey32.tif"), 40) == 200).all()


def test_a_hidden_folder_alone_is_named_as_left_out(tmp_path):
    write_photo_tree(str(tmp_path / ".photos"))
    with pytest.raises(UserError, match=r"holds 0 class folder\(s\) \(none; hidden ones, named with a leading dot, are left out\)"):
        photos.load_photos(str(tmp_path), SIZE)


def test_predicts_paths_are_split_at_commas_that_are_not_in_a_file_name(tmp_path, monkeypatch):
    for name in ("a.jpg", "b.jpg", "a.jpg,b.jpg", "photo.jpg", "photo.jpg, edited.jpg", "owl, 2, left.jpg"):
        (tmp_path / name).write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    # Shortest names first, when the whole text reads as files either way.
    assert photos.split_paths("a.jpg,b.jpg") == ["a.jpg", "b.jpg"]
    # A name with commas whose first part is a file too: it was read as
    # photo.jpg and a missing " edited.jpg".
    assert photos.split_paths("photo.jpg, edited.jpg") == ["photo.jpg, edited.jpg"]
    assert photos.split_paths(",b.jpg,,owl, 2, left.jpg,") == ["b.jpg", "owl, 2, left.jpg"]
    assert photos.split_paths("~/a.jpg,~/owl, 2, left.jpg") == [str(tmp_path / "a.jpg"), str(tmp_path / "owl, 2, left.jpg")]
    # No way to read it as files: as far as the text reads, then each piece,
    # so that reading them names the first one missing. Splitting at every
    # comma named "owl", a piece of a photo found, not the missing one.
    assert photos.split_paths("missing.jpg,b.jpg, edited.jpg") == ["missing.jpg", "b.jpg", " edited.jpg"]
    assert photos.split_paths("owl, 2, left.jpg,missing.jpg,b.jpg") == ["owl, 2, left.jpg", "missing.jpg", "b.jpg"]
    assert photos.split_paths("photo.jpg, edited.jpg,,missing.jpg") == ["photo.jpg, edited.jpg", "missing.jpg"]
    assert photos.split_paths(",") == []


def test_predict_takes_a_thousand_paths(tmp_path, monkeypatch):
    # A whole folder, as `ls | paste -sd,` gives it: 498 paths were the most
    # before, each piece a level of recursion.
    names = [f"{i:04d}.jpg" for i in range(1000)]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert photos.split_paths(",".join(names)) == names
    assert photos.split_paths(",".join(names + ["missing.jpg"])) == names + ["missing.jpg"]
