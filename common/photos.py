"""Photo folders for transfer learning: one subfolder per class.

    flower_photos/daisy/*.jpg, flower_photos/roses/*.jpg, ...

The photos may sit in a folder or in a .tgz / .tar.gz of one (read in place),
below however many single wrapping folders, as in the TensorFlow flowers
archive. A folder that holds train/ and test/ (and optionally validation/,
val/ or valid/) folders of classes keeps the user's own split; train/ and a
validation folder without test/ are refused. Every photo is decoded once, turned
upright as its EXIF orientation says, resized to a square of `image_size`
pixels and kept in memory as uint8.

Files that are not images, or do not decode, are skipped and counted: a photo
collection often holds a stray LICENSE.txt or a half-copied JPEG, and one bad
file should not cost a run. Hidden files and folders (names that start with a
dot, such as .DS_Store or .ipynb_checkpoints/) are left out unread, so that
no tool's folder becomes a class. An empty class or a single class stops the
run, and so does a class folder whose name is not UTF-8 text.
"""

import collections
import glob
import io
import itertools
import os

import numpy as np

from common import UserError, reason
from common.data import IMAGE_EXTENSIONS, as_rgb, download, hidden, is_archive, not_an_image, open_tar, read_file, unreadable

FLOWERS_URL = "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz"
# The names of the user's own split folders, in any case and with or
# without "_set" (Kaggle's Train/ and Test/, or training_set/ and test_set/).
SPLIT_FOLDERS = {"train": ("train", "training"), "test": ("test", "testing"), "validation": ("validation", "val", "valid")}
# A file larger than this is read whole only once Pillow has taken its
# header for an image's: a phone's camera folder holds videos beside the
# photos, and each would take its size in memory only to be skipped.
LARGE_FILE = 64 * 2**20
# How much of a large file inside an archive is kept while Pillow reads its
# header: a JPEG's or PNG's header and metadata (EXIF, a colour profile)
# come first, and most take less.
HEADER_BYTES = 2**20

# The photos of a run: uint8 images (N, size, size, 3), integer labels, the
# class names in label order, and how many files were skipped as non-images.
Photos = collections.namedtuple("Photos", "x y classes skipped")


def load_photos(data_dir, image_size, cache_dir=None, origin=FLOWERS_URL, before_decoding=lambda found: None):
    """Loads a photo collection as `{split: Photos}`.

    The split is "all" for a plain folder of classes (split it with
    `split_photos`), else the train / validation / test folders found.
    `data_dir` is a folder, an archive, a TensorFlow Datasets name such as
    `tf_flowers`, or "" for the TensorFlow flowers, downloaded once with
    `keras.utils.get_file`. `before_decoding` is called with the names of the
    splits found, once the folder's listing has passed its own checks and
    before any photo is decoded (and before the flowers are downloaded), to
    refuse settings that do not fit them early, or to do work that can fail
    before the wait.
    """
    if not data_dir:
        # The flowers are one collection, checked once: before the download,
        # not again when the archive is read below.
        before_decoding(["all"])
        before_decoding = lambda found: None
        # The flowers archive has no published hash to check against.
        data_dir = download(origin, None, cache_dir, "flower_photos.tgz", "the TensorFlow flowers")
    if not os.path.exists(data_dir):
        if os.sep in data_dir or is_archive(data_dir):
            raise UserError(f"data_dir {data_dir!r} does not exist; give a folder of class folders or a .tgz of one")
        return _load_tfds(data_dir, image_size, before_decoding)
    if os.path.isdir(data_dir):
        inside = glob.glob(os.path.join(data_dir, "*"))
        archives = [path for path in inside if is_archive(path)]
        if len(archives) == 1 and not any(os.path.isdir(path) for path in inside):
            data_dir = archives[0]  # A folder that holds just the archive.
    if os.path.isdir(data_dir):
        entries, _followed = _folder_entries(data_dir)
        return _decode_tree(data_dir, entries, lambda path: _read_photo(os.path.join(data_dir, path)), image_size, before_decoding)
    if not is_archive(data_dir):
        raise UserError(f"data_dir {data_dir!r} is a file but not a .tgz or .tar.gz; give a folder of class folders or an archive of one")
    with open_tar(data_dir) as tar:
        # A folder named "/" is the archive's root itself, not a folder in it.
        members = {m.name.strip("/"): m for m in tar.getmembers() if (m.isfile() or m.isdir()) and m.name.strip("/")}
        entries = {name: members[name].isdir() for name in members}

        def read(path):
            with tar.extractfile(members[path]) as f:
                if members[path].size <= LARGE_FILE:
                    return f.read()
                # Its header first, then the whole file from the same stream,
                # back to its start from a buffer of its first bytes: opened
                # again, it would seek back in the gzip stream, which
                # decompresses the archive again from its start. (A header
                # that Pillow reads beyond the buffer, such as a TIFF's at the
                # file's end, still does; and the read joins the buffer's
                # bytes to the rest, twice the file's size for a moment.)
                buffered = io.BufferedReader(f, buffer_size=HEADER_BYTES)
                # Raises for a file that is not an image. (The image is left
                # to the garbage collector: its close() would close the stream.)
                _open_image(buffered)
                buffered.seek(0)
                return buffered.read()

        # Each split's photos are read in the archive's own order: each file
        # read backwards would decompress it again from its start.
        return _decode_tree(data_dir, entries, read, image_size, before_decoding, order=lambda path: members[path].offset)


def check_out_dir(data_dir, out_dir, script):
    """Refuses an out_dir whose run folders (out_dir/<script>/<run id>) would
    be read as a class of photos the next time: one inside the photo folder
    or a folder that a link in it leads to, or one that holds them."""
    if not data_dir or not os.path.isdir(data_dir):
        return
    # The folders read as classes (or parts of one), links resolved: the
    # photo folder, and those that links in it lead to, or will lead to once
    # a link to nowhere yet has a folder there. A hidden folder is never read.
    entries, followed = _folder_entries(data_dir)
    for path in entries:
        link = os.path.join(data_dir, path)
        if os.path.islink(link) and not os.path.exists(link):
            followed[path] = os.path.realpath(link)
    read = [os.path.realpath(data_dir)] + [real for path, real in followed.items() if not hidden(path)]
    # out_dir inside one of them; the photo folder also as written, for an
    # out_dir given through a link inside it.
    places = [(os.path.abspath(data_dir), os.path.abspath(out_dir))] + [(folder, os.path.realpath(out_dir)) for folder in read]
    for folder, inside in places:
        if _holds(folder, inside) and not hidden(_relative(inside, folder)):
            raise UserError(
                f"--out_dir={out_dir} lies inside --data_dir={data_dir}, whose folders are read as classes of photos; "
                "give an out_dir outside it"
            )
    # Or one of them inside out_dir/<script>, where the run folders go.
    runs = os.path.join(out_dir, script)
    if any(_holds(os.path.realpath(runs), folder) for folder in read):
        raise UserError(
            f"--data_dir={data_dir} reads {runs}, where the runs are written, as photos (itself or through "
            "a link in it); give an out_dir elsewhere"
        )


def check_fractions(validation_split, test_split):
    """Refuses split fractions that leave no photos to train on. The scripts
    call it before reading any photo; `split_photos` calls it too."""
    if not (0 < validation_split < 1 and 0 <= test_split < 1 and validation_split + test_split < 1):
        raise UserError(
            f"--validation_split={validation_split} and --test_split={test_split} must each be "
            "between 0 and 1 and leave photos for training"
        )


def split_photos(photos, validation_split, test_split, seed):
    """Splits one collection into train, validation and (when `test_split` is
    above 0) test, class by class, so that each split holds every class in its
    share. Seeded; the splits are disjoint."""
    check_fractions(validation_split, test_split)
    rng = np.random.default_rng(seed)
    parts = {"train": [], "validation": [], "test": []}
    for label, name in enumerate(photos.classes):
        indices = rng.permutation(np.flatnonzero(photos.y == label))
        num_test = int(round(len(indices) * test_split))
        num_val = int(round(len(indices) * validation_split))
        if (test_split and num_test < 1) or num_val < 1 or num_test + num_val >= len(indices):
            raise UserError(
                f"class {name!r} has {len(indices)} photos: too few to split into train, "
                f"validation ({validation_split}) and test ({test_split}); add photos"
            )
        parts["test"].append(indices[:num_test])
        parts["validation"].append(indices[num_test : num_test + num_val])
        parts["train"].append(indices[num_test + num_val :])
    splits = {}
    for split, chunks in parts.items():
        # Shuffle the classes together so that a split is never ordered by class.
        indices = rng.permutation(np.concatenate(chunks))
        if len(indices):
            splits[split] = Photos(photos.x[indices], photos.y[indices], photos.classes, 0)
    return splits


def load_image(data, image_size):
    """Decodes image bytes into a (size, size, 3) uint8 array; raises
    ValueError (or an OSError) when they are not an image."""
    from PIL import Image  # Pillow: only needed for photos.

    with _open_image(io.BytesIO(data)) as image:
        # JPEG can decode straight to a smaller size (at least the target
        # size), which is much faster than decoding every pixel and shrinking.
        image.draft("RGB", (image_size, image_size))
        # Pillow's limit on the pixels of an image, applied to what is decoded.
        limit = Image.MAX_IMAGE_PIXELS
        if limit and image.width * image.height > 2 * limit:
            raise ValueError(f"{image.width}x{image.height} pixels to decode, more than {2 * limit:,}")
        return _square(_upright(image), image_size)


def _open_image(file):
    """Pillow's image of a binary file, its header read and its pixels not
    yet; raises for a file that is not an image (PIL.UnidentifiedImageError,
    an OSError, for one of no format Pillow knows; other kinds for others).

    Pillow refuses an image of more than twice MAX_IMAGE_PIXELS (179 million
    pixels), and warns above it, as it opens the file: before a JPEG's draft
    mode has made it smaller. A panorama or a 200-megapixel phone photo then
    decodes at an eighth of its width and height, so `load_image` applies the
    limit to the size that is decoded instead."""
    from PIL import Image

    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        return Image.open(file)
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _read_photo(path):
    """The bytes of a file that may be a photo, as `read_file` reads them;
    one of more than LARGE_FILE bytes that Pillow does not take for an image
    (a video) is refused having read its header only."""
    try:
        large = os.stat(path).st_size > LARGE_FILE  # A pipe's size is 0: read_file refuses it.
        file = open(path, "rb") if large else None
    except OSError as error:
        raise unreadable(path, error) from None
    if file:
        with file:
            _check_header(file)
    return read_file(path)


def _check_header(file):
    """Raises for a file whose header Pillow does not take for an image's.
    (A raw MPEG video stream passes, and is read whole before it fails to
    decode: Pillow names no decoder for it yet as it opens it, but none for
    a WebP photo either.)"""
    _open_image(file).close()


# How to turn a photo upright, by its EXIF orientation (tag 0x0112): 1 is
# upright already; 6 is what a phone held upright stores.
_TURNS = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"}


def _upright(image):
    """A phone stores a photo taken upright as the sensor saw it, sideways,
    with an EXIF tag that says how to turn it; it is turned here as a viewer
    turns it. (Keras' own image loaders leave it sideways.) Pillow's
    ImageOps.exif_transpose does the same but also rewrites the EXIF block,
    which fails on some tags a camera wrote oddly: a photo that decodes is
    never lost to its EXIF, which is only read, and kept as stored when it
    cannot be."""
    from PIL import Image

    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001  (Pillow raises many kinds for damaged EXIF)
        return image
    turn = _TURNS.get(orientation)
    return image.transpose(Image.Transpose[turn]) if turn else image


def _square(image, image_size):
    """A PIL image as a (size, size, 3) uint8 array. The whole photo is
    squashed into the square, as the Keras image loaders do, rather than
    cropped to a part that may miss the subject."""
    from PIL import Image

    return np.asarray(as_rgb(image).resize((image_size, image_size), Image.Resampling.BILINEAR))


def split_paths(text):
    """The paths in `text`, separated by commas (as `--predict` takes them),
    with ~/ expanded in each (the shell leaves --predict=~/a.jpg,~/b.jpg as
    it is). A file whose name has commas in it is found by joining pieces
    back together: the first way of reading the whole text as files only,
    shortest names first, wins. Where there is none, the text is read as
    files as far as it goes and each piece after that is a path, so that
    reading them names the first photo not found. Empty pieces name nothing."""
    pieces = text.split(",")
    n = len(pieces)
    # Where each piece starts in the text: pieces[start:end] joined are
    # at[end] - at[start] - 1 characters.
    at = list(itertools.accumulate((len(piece) + 1 for piece in pieces), initial=0))

    def path(start, end):
        return os.path.expanduser(",".join(pieces[start:end]))

    def names_one(start, end):
        """Whether pieces[start:end] are one file's name, or one empty piece."""
        return os.path.isfile(path(start, end)) if pieces[start] else end == start + 1

    def short_enough(start, end):
        """Whether pieces[start:end] could be a path: 4,096 bytes at most on Linux and macOS."""
        return at[end] - at[start] - 1 <= 4096

    # From the last piece back: where the first name of the reading of
    # pieces[start:] as files ends, shortest names first; None where none reads.
    ends = [None] * n + [n]
    for start in reversed(range(n)):
        ends[start] = next(
            (end for end in itertools.takewhile(lambda end: short_enough(start, end), range(start + 1, n + 1))
             if ends[end] is not None and names_one(start, end)),
            None,
        )
    found = []
    if ends[0] is not None:
        start = 0
        while start < n:
            if pieces[start]:
                found.append(path(start, ends[start]))
            start = ends[start]
        return found
    # None reads the whole text: from the first piece on, each end that
    # pieces[:end] read up to, and where the last name of that reading began.
    began = {0: None}
    for end in range(1, n + 1):
        nearest_first = itertools.takewhile(lambda start: short_enough(start, end), reversed(list(began)))
        start = next((start for start in nearest_first if names_one(start, end)), None)
        if start is not None:
            began[end] = start
    furthest = end = max(began)
    while end:
        if pieces[began[end]]:
            found.insert(0, path(began[end], end))
        end = began[end]
    return found + [os.path.expanduser(piece) for piece in pieces[furthest:] if piece]


def read_image(path, image_size):
    """One photo file as `load_image` returns it, with a clear error."""
    try:
        return load_image(_read_photo(path), image_size)
    except UserError:
        raise
    except Exception as error:  # Pillow raises many kinds of errors.
        raise UserError(f"{path} is not a readable image ({not_an_image(error)}); give a JPEG or PNG photo") from None


def _folder_entries(root):
    """Everything under `root`: ({relative path: is a folder}, {relative
    path of each linked folder followed: its real path}).

    A linked folder is followed when it lies outside `root`, such as a class
    gathered from elsewhere. One inside `root` is not (its photos are there
    already, perhaps under another class), nor one that holds a folder the
    walk is in (it would go round in circles); either stays an empty folder.
    Hidden folders are not walked (their files are never read), so a tool's
    .git/ or .cache/ costs nothing.
    """
    top = os.path.realpath(root)
    enclosing = {root: [top]}  # Each walked folder: its real path and those of the folders it was reached through.
    entries, followed = {}, {}
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        for name in files:
            entries[_relative(os.path.join(folder, name), root)] = False
        for name in list(dirs):
            path = os.path.join(folder, name)
            entries[_relative(path, root)] = True
            real = os.path.realpath(path)
            circles = any(_holds(real, outer) for outer in enclosing[folder])
            if circles or (os.path.islink(path) and _holds(top, real)):
                dirs.remove(name)
            else:
                enclosing[path] = enclosing[folder] + [real]
                if os.path.islink(path):
                    followed[_relative(path, root)] = real
    return entries, followed


def _relative(path, root):
    """A path under `root` as the entries name it: relative, with "/"."""
    return os.path.relpath(path, root).replace(os.sep, "/")


def _holds(outer, inner):
    """Whether the real folder `outer` is `inner` or one of the folders above it."""
    return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


def _children(entries, prefix):
    """The names directly inside `prefix` ("" = the root): (folders, files)."""
    folders, files = set(), set()
    for path, is_dir in entries.items():
        if prefix and not path.startswith(prefix + "/"):
            continue
        rest = path[len(prefix) + 1 :] if prefix else path
        first, _, deeper = rest.partition("/")
        (folders if is_dir or deeper else files).add(first)
    return sorted(folders), sorted(files)


def _join(prefix, name):
    return f"{prefix}/{name}" if prefix else name


def _where(source, prefix):
    """A folder inside the photo folder or archive `source`, as messages name it."""
    return f"{source}/{prefix}".rstrip("/") if prefix else source


def _find_classes(source, entries):
    """Where the class folders are: `{split: folder}` with split "all" for a
    plain collection, or the user's own train / validation / test folders."""
    prefix = ""
    while True:
        folders, _files = _children(entries, prefix)
        named = _split_folders(folders)
        splits = {split: names[0] for split, names in named.items()}
        if "train" in splits and ("test" in splits or "validation" in splits):
            for split, names in named.items():
                if len(names) > 1:  # Reading one would leave out the other's photos.
                    raise UserError(
                        f"{_where(source, prefix)} holds {' and '.join(name + '/' for name in names)}, which all name its "
                        f"{split} split; merge them into one folder"
                    )
        if "train" in splits and "validation" in splits and "test" not in splits:
            # Read as a collection, train/ and val/ would be its two classes.
            train, validation = splits["train"], splits["validation"]
            raise UserError(
                f"{_where(source, prefix)} holds {train}/ and {validation}/ but no test/; rename {validation}/ to test/ (validation "
                f"then comes out of {train}/), or add a test/ folder of the same classes (the photos scored once, at the end)"
            )
        if "train" in splits and "test" in splits:
            others = sorted(set(folders) - set(splits.values()))
            if others:  # Such as Kaggle's single_prediction/ beside training_set/ and test_set/.
                print(f"data      left out {', '.join(name + '/' for name in others)} in {_where(source, prefix)}: "
                      "beside the train and test folders, only a validation folder is read")
            return {split: _join(prefix, name) for split, name in splits.items()}
        # Go down through a single wrapping folder, such as flower_photos/,
        # or home/me/photos/ where `tar czf` was given /home/me/photos.
        if len(folders) == 1 and _children(entries, _join(prefix, folders[0]))[0]:
            prefix = _join(prefix, folders[0])
        else:
            return {"all": prefix}


def _split_folders(folders):
    """{split: [folders]} of the folders named as a split (`SPLIT_FOLDERS`),
    in the order train, test, validation."""
    named = {}
    for split, names in SPLIT_FOLDERS.items():
        matching = [name for name in sorted(folders) if name.lower().removesuffix("_set") in names]
        if matching:
            named[split] = matching
    return named


def _decode_tree(source, entries, read, image_size, before_decoding, order=None):
    """The splits found in `entries` ({path: is_dir} of a folder or an
    archive), their photos read by `read(path)`, split by split, in the
    order of `order` (a key on the paths; None: class by class, by name),
    and kept class by class, by name."""
    entries = {path: is_dir for path, is_dir in entries.items() if not hidden(path)}
    found = _find_classes(source, entries)
    # What the listing alone shows is checked before the caller's checks and
    # work (before_decoding) and before any photo is decoded.
    classes = {}
    for split, prefix in found.items():
        where = _where(source, prefix)
        names, files = _children(entries, prefix)
        classes[split] = names
        for name in names:
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:  # Bytes of another encoding, kept as surrogates.
                shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                raise UserError(
                    f"the class folder {where}/{shown} has a name that is not UTF-8 text, which the "
                    "plots and classes.json cannot hold; rename it"
                ) from None
        # Photos beside the class folders, such as those of a class folder
        # taken for a wrapper, its subfolders for the classes.
        loose = [name for name in files if name.lower().endswith(IMAGE_EXTENSIONS)]
        counted = f"{len(loose)} photo{'' if len(loose) == 1 else 's'}"
        if len(names) < 2:
            raise UserError(
                f"{where} holds {len(names)} class folder(s) ({', '.join(names) or 'none'}; hidden "
                "ones, named with a leading dot, are left out)"
                + (f" and {counted} beside them" if loose else "")
                + "; transfer learning needs a folder of at least two class folders, one per class"
            )
        if loose:
            shown = ", ".join(loose[:3]) + (", ..." if len(loose) > 3 else "")
            print(
                f"data      left out {counted} in {where} that {'is' if len(loose) == 1 else 'are'} in no "
                f"class folder ({shown}); the classes are its folders: {', '.join(names)}"
            )
        if split != "train" and "train" in classes and names != classes["train"]:
            raise UserError(
                f"{where} has the classes {', '.join(names)} but {_where(source, found['train'])} has "
                f"{', '.join(classes['train'])}; every split needs the same class folders"
            )
    _check_memory(source, entries, found, image_size)
    before_decoding(list(found))
    return {
        split: _decode_classes(_where(source, prefix), entries, prefix, classes[split], read, image_size, order)
        for split, prefix in found.items()
    }


def _check_memory(source, entries, found, image_size):
    """Refuses, before decoding, an image size at which the photos alone
    would not fit in the machine's memory (the run was killed by the
    system, or said that the photos did not decode). A lower bound: the
    decoded photos are held twice while they are gathered into one array,
    and the splits copy them again; every file is counted, since only
    decoding tells an image from another file."""
    folders = [_join(prefix, "") for prefix in found.values()]  # "" for a collection at the top: every file.
    files = sum(1 for path, is_dir in entries.items() if not is_dir and path.startswith(tuple(folders)))
    needed = 2 * files * image_size * image_size * 3
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):  # A system that does not say.
        return
    if needed > memory:
        raise UserError(
            f"{files} files of {source} as {image_size}x{image_size} photos would take {needed / 2**30:,.1f} GiB as they load, "
            f"more than this machine's {memory / 2**30:,.1f} GiB of memory; give a smaller --image_size (Xception's own is 299)"
        )


def _decode_classes(where, entries, prefix, classes, read, image_size, order):
    # Photos may sit in subfolders of a class folder too.
    paths = {
        name: sorted(p for p, is_dir in entries.items() if not is_dir and p.startswith(_join(prefix, name) + "/"))
        for name in classes
    }
    for name in classes:
        if not paths[name]:  # Stop before decoding the others' photos.
            raise _no_images(where, name)
    decoded = {}
    reading = itertools.chain(*paths.values())
    for path in sorted(reading, key=order) if order else reading:
        try:
            decoded[path] = load_image(read(path), image_size)
        except Exception:  # Not an image, or a damaged one: skipped and counted below.
            decoded[path] = None
    images, labels, skipped = [], [], []
    for label, name in enumerate(classes):
        readable = [decoded[path] for path in paths[name] if decoded[path] is not None]
        if not readable:
            raise _no_images(where, name)
        images += readable
        labels += [label] * len(readable)
        skipped += [path for path in paths[name] if decoded[path] is None]
    if skipped:
        shown = ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        files = "1 file" if len(skipped) == 1 else f"{len(skipped)} files"
        print(f"data      skipped {files} in {where} that are not readable images: {shown}")
    x = np.stack(images) if images else np.zeros((0, image_size, image_size, 3), np.uint8)
    return Photos(x, np.array(labels, dtype=np.int64), classes, len(skipped))


def _no_images(where, name):
    return UserError(f"the class folder {where}/{name} holds no readable images; add photos to it or remove it")


def _load_tfds(name, image_size, before_decoding):
    """A TensorFlow Datasets collection by name, such as tf_flowers (needs
    tensorflow_datasets and, the first time, the internet)."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise UserError(
            f"data_dir {name!r} does not exist; give a folder of class folders or a .tgz of one "
            "(a TensorFlow Datasets name such as tf_flowers needs `pip install tensorflow-datasets`)"
        ) from None
    before_decoding(["all"])
    try:
        dataset, info = tfds.load(name, split="train", as_supervised=True, with_info=True)
    except Exception as error:
        raise UserError(
            f"data_dir {name!r} does not exist, and TensorFlow Datasets could not load it by that name "
            f"({reason(error)}); give a folder of class folders or a .tgz of one"
        ) from None
    from PIL import Image

    images, labels = [], []
    for image, label in tfds.as_numpy(dataset):
        images.append(_square(Image.fromarray(image), image_size))
        labels.append(int(label))
    classes = list(info.features["label"].names)
    return {"all": Photos(np.stack(images), np.array(labels, dtype=np.int64), classes, 0)}
