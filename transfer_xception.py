"""Transfer learning: teaches an ImageNet-trained Xception to tell your own photos apart.

Give it a folder with one subfolder of photos per class (or a .tgz of one).
Xception, trained on ImageNet's 1.3 million photos, already turns an image into
features that describe it well (here 3,072: the averaged feature maps of its
last two blocks); only a new softmax layer on top of them has to be learned.
Training runs in two phases:

1. The pretrained base is frozen and only the new head trains, so that its
   random start cannot wreck the pretrained features with large gradients.
   A frozen base gives each photo the same features every epoch, so they are
   computed once, and the head trains on them in seconds.
2. The base (from the block `fine_tune_from` on) is unfrozen and everything
   trains together with a much smaller learning rate, adapting the features a
   little to these photos (batch normalisation stays frozen).

Expected on the 1250-photo flowers subset in ../shared/data (810 photos to
train, 190 to validate, 250 to test): 92.8% test accuracy after phase 1 and
93.2% after phase 2 (93.2% and 92.4% when each test photo and its mirror
image vote together), in 24 minutes of training (27 minutes in all) on a
2-core AMD EPYC CPU (TensorFlow backend, measured 2026-12-07); see
README.md. That is one split of the photos, a lucky one: over six splits
the head scored 90.8% ± 1.4 after phase 1. On so few photos the two phases
are within a photo or two of each other (one test photo is 0.4 points);
--fine_tune_epochs=0 skips phase 2.

    python transfer_xception.py --data_dir=path/to/flower_photos.tgz --weights=path/to/xception_notop.h5
    python transfer_xception.py --predict=photo.jpg,other.jpg

The second command prints the most likely classes of each photo, using the
newest model.keras in out_dir/transfer_xception/ (or --model_file=...) and the class
names saved beside it.
"""

import glob
import json
import math
import os
import time
import zipfile

import keras
import numpy as np
from keras import layers

import common.config
from common import UserError, augment, data, device, files, output, photos, pretrained, reason, schedules

# Settings: edit them here, or override any of them as --key=value.
data_dir = ""  # folder of class folders, or a .tgz of one; "" = download the TensorFlow flowers
weights = "imagenet"  # "imagenet" (Keras download), a local .h5 weight file, or "none" (random)
out_dir = "runs"  # each run writes its files to out_dir/transfer_xception/<run id>/
image_size = 299  # photos are resized to image_size x image_size, Xception's own (71 at least)
epochs = 30  # epochs of phase 1, where only the new head trains, on features computed once (each photo both ways)
learning_rate = 3e-3  # phase 1: peak of the warm-up + cosine schedule
fine_tune_epochs = 5  # epochs of phase 2, where the base trains too (0 = skip phase 2)
fine_tune_learning_rate = 1e-4  # phase 2's learning rate: far below learning_rate (30x at the defaults), so the pretrained features change gently
fine_tune_from = 13  # unfreeze Xception's blocks from this one on: 13 = the exit flow, 1 = all 14
batch_size = 32  # photos per training step, in both phases
block13_features = True  # the head sees block 13's feature maps too, less tied to ImageNet's classes than block 14's
dropout = 0.2  # fraction of the features dropped while training the head
label_smoothing = 0.1  # targets of 0.9 + 0.1/classes instead of 1 and 0: less overconfidence
patience = 3  # phase 2 stops after this many epochs without a better val_accuracy
validation_split = 0.15  # fraction of each class held out for validation
test_split = 0.2  # fraction of each class held out for the test, touched once per phase
seed = 0  # draws the split of the photos, the head's first weights, the order of the batches and phase 2's augmentation
predict = ""  # photo paths, separated by commas (names with commas work too): print their likely classes instead of training
model_file = ""  # the model.keras that --predict uses; "" = the newest in out_dir/transfer_xception/
config = common.config.apply_overrides(globals())


# The settings that --predict reads; the trained model's own image size and
# weights decide the rest, so a training setting given beside it changes nothing.
PREDICT_SETTINGS = ("predict", "model_file", "out_dir")


def predict_photos(paths, model_path):
    """Prints the three most likely classes of each photo."""
    if not paths:
        raise UserError("--predict names no photo; give one or more paths separated by commas, e.g. --predict=a.jpg,b.jpg")
    ignored = [f"--{key}" for key in common.config.given() if key not in PREDICT_SETTINGS]
    if ignored:
        print(f"note      --predict uses the trained model as it is; it ignores {', '.join(ignored)}")
    if not model_path:
        found = sorted(glob.glob(os.path.join(out_dir, "transfer_xception", "*", "model.keras")))
        if not found:
            raise UserError(
                f"no trained model in {out_dir}/transfer_xception/; train one first, "
                "or pass --model_file=path/to/model.keras"
            )
        model_path = found[-1]
    classes_path = os.path.join(os.path.dirname(model_path), "classes.json")
    for path in (model_path, classes_path):
        if not os.path.isfile(path):
            what = "is not a file" if os.path.exists(path) else "does not exist"
            raise UserError(
                f"{path} {what}; give the model.keras of a finished transfer_xception "
                "run, with the classes.json beside it"
            )
    try:
        with open(classes_path) as f:
            classes = json.load(f)
        if not (isinstance(classes, list) and classes and all(isinstance(name, str) for name in classes)):
            raise ValueError("not a list of class names")
    except (OSError, ValueError) as error:
        raise UserError(f"{classes_path} cannot be read ({reason(error)}); train again or give another --model_file") from None
    try:
        # A .keras file is a zip archive; for one cut short Keras says "File not found".
        if not zipfile.is_zipfile(model_path):
            raise ValueError("not a zip archive: cut short or not a .keras file")
        # Keras' safe mode (the default) refuses models that would run code when loaded.
        trained = keras.models.load_model(model_path, safe_mode=True)
    except Exception as error:  # Keras raises many kinds for a damaged file.
        raise UserError(
            f"{model_path} is not a loadable Keras model ({reason(error)}); train again or give another --model_file"
        ) from None
    if len(trained.input_shape) != 4 or trained.output_shape[-1] != len(classes):
        raise UserError(
            f"{model_path} does not take photos to the {len(classes)} classes of {classes_path}; "
            "give the model.keras of a finished transfer_xception run"
        )
    size = trained.input_shape[1]
    x = np.stack([photos.read_image(path, size) for path in paths])
    probabilities = trained.predict(x, verbose=0)
    print(f"model     {model_path}")
    for path, p in zip(paths, probabilities):
        top = np.argsort(p)[::-1][:3]
        print(f"{path}: " + ", ".join(f"{classes[i]} {p[i]:.3f}" for i in top))


# An empty --predict= (a shell variable left unset) names no photo: refused, not a training run.
if predict or "predict" in common.config.given():
    predict_photos(photos.split_paths(predict), model_file)
    raise SystemExit(0)
if model_file:
    # Without --predict the run would train, for minutes to hours, and ignore it.
    raise UserError(f"--model_file={model_file} is the model that --predict uses; give --predict=photo.jpg with it")
if not 1 <= fine_tune_from <= 14:
    raise UserError(f"--fine_tune_from={fine_tune_from} is not a block of Xception; use 1 to 14")
if image_size < 71:
    raise UserError(f"--image_size={image_size} is too small: Xception needs at least 71 pixels")
# A missing weights file, or one that is no HDF5 file, stops the run now, not
# after the photos have loaded. (Another network's weights are found out when
# the base is built from them, in `before_decoding`, still before the photos
# are decoded.)
pretrained.check_weights(weights, "Xception")
photos.check_out_dir(data_dir, out_dir, "transfer_xception")

# Seeds every random draw, picks the precision for the device (mixed on a
# GPU) and prints the `backend` line. With several devices (TensorFlow, JAX)
# it sets up data-parallel training: on TensorFlow the model must be built in
# `scope` (MirroredStrategy's); elsewhere `scope` does nothing.
scope = device.setup(seed)
if device.processes() > 1:
    # Phase 1 computes the features with predict(), whose outputs would be
    # spread over the machines.
    raise UserError("transfer_xception.py trains on one machine; unset KERAS_DISTRIBUTION_NUM_PROCESSES")


def check_classes(path, classes):
    """Refuses to resume a run whose photo folder now has other classes: its
    saved head has one output per class it began with."""
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError):  # A new run, or one killed before it wrote its classes.
        return
    if isinstance(saved, list) and saved != classes:
        raise UserError(
            f"the interrupted run in {os.path.dirname(path)} trained on the classes {', '.join(map(str, saved))}, "
            f"but {data_dir or 'the photo folder'} now has {', '.join(classes)}; put the folder back as it was "
            "to continue that run, or start a new one with another --out_dir"
        )


def check_split(split_names):
    """Refuses split fractions that cannot split a collection, before any
    photo is decoded. (Folders of the user's own train/ and test/ take no
    test_split.)"""
    if "all" in split_names:
        photos.check_fractions(validation_split, test_split)
        if not test_split:
            raise UserError("--test_split=0 leaves no test photos; give a test_split above 0, e.g. --test_split=0.2")
    elif "test_split" in common.config.given():
        print("note      the folder's own test photos are the test set; --test_split is not used")


# The frozen pretrained base, built by before_decoding.
base = None


def before_decoding(split_names):
    """What load_photos runs, once, when it has found the photo folder's
    splits (for the flowers' download or a TensorFlow Datasets name, before
    the download) and before it decodes the photos (minutes): the check of
    the split fractions, then the pretrained base, built now so that a weight
    file of another network stops the run before the wait, not after it."""
    global base
    check_split(split_names)
    with scope:
        xception = pretrained.pretrained_base(
            keras.applications.Xception, weights, input_shape=(image_size, image_size, 3)
        )
        # The base's outputs: the feature maps of Xception's last block (2048
        # channels) and, with block13_features, of the block before it (1024:
        # its last convolution, batch-normalised, before the block's pooling and
        # shortcut), which are less specific to ImageNet's own classes.
        block13 = [xception.get_layer("block13_sepconv2_bn").output] if block13_features else []
        base = keras.Model(xception.input, [*block13, xception.output], name="xception")
        base.trainable = False


# Data: photos as uint8 pixels; the model itself scales them as Xception expects.
found = photos.load_photos(data_dir, image_size, before_decoding=before_decoding)
if "all" in found:
    splits = photos.split_photos(found["all"], validation_split, test_split, seed)
else:
    # The user's own train/ and test/ folders; validation comes out of train/
    # unless there is a validation/ folder too.
    splits = dict(found)
    if "validation" not in found:
        splits.update(photos.split_photos(found["train"], validation_split, 0, seed))
classes = splits["train"].classes
x_train, y_train = splits["train"].x, splits["train"].y
x_val, y_val = splits["validation"].x, splits["validation"].y
x_test, y_test = splits["test"].x, splits["test"].y
y_train, y_val, y_test = (keras.utils.to_categorical(y, len(classes)) for y in (y_train, y_val, y_test))
skipped = sum(part.skipped for part in found.values())
print(
    f"data      {len(classes)} classes ({', '.join(classes)}) | x_train {x_train.shape} | "
    f"x_val {x_val.shape} | x_test {x_test.shape} | skipped {skipped} non-image file{'' if skipped == 1 else 's'}"
)

# The model: the frozen base (built above, before the photos were decoded)
# and the new head, one output per class found, built in the base's scope
# (on TensorFlow `scope` itself can be entered only once).
with device.scope_of(base):
    inputs = keras.Input(shape=(image_size, image_size, 3))
    # Augmentation layers change the photos only while training.
    x = layers.RandomFlip("horizontal")(inputs)
    x = layers.RandomRotation(0.05)(x)
    x = layers.RandomZoom(0.1)(x)
    # Xception expects pixels scaled to [-1, 1], as in its ImageNet training.
    x = keras.applications.xception.preprocess_input(x)
    maps = base(x)
    # Each map averaged over the image: one number per channel.
    pooled = [layers.GlobalAveragePooling2D()(m) for m in maps]
    features = layers.Concatenate()(pooled) if len(pooled) > 1 else pooled[0]
    # The new head: the only layers that phase 1 trains.
    head = keras.Sequential(
        [
            keras.Input(shape=(features.shape[-1],)),
            layers.Dropout(dropout),
            layers.Dense(len(classes), activation="softmax", dtype="float32"),
        ],
        name="head",
    )
    model = keras.Model(inputs, head(features), name="xception_transfer")
    extractor = keras.Model(inputs, features, name="xception_features")

# Over several devices, every batch must split between them: phase 1's, of
# the photos and their mirror images, and phase 2's, of the photos.
counts = [2 * len(x_train), len(x_val)]
if fine_tune_epochs:
    counts.append(len(x_train))
device.check_batches(model, batch_size, *counts)

# The run folder is made only now, when the data and the weights have loaded.
run = output.Run("transfer_xception", config)
check_classes(run.path("classes.json"), classes)
files.write_json(run.path("classes.json"), classes)
loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)

# Phase 1. With the base frozen, a photo's features never change, so the
# base runs once over the photos and their mirror images (the one augmentation
# that is free here), and the head trains on those features: seconds per
# epoch instead of minutes. Where random flips would show each photo once an
# epoch, one way or the other, each epoch here shows it both ways (twice the
# steps); phase 1 has no rotations or zooms. A run that was interrupted after
# phase 1's last epoch skips it.
head_trains = run.initial_epoch < epochs
if head_trains:
    print("phase 1   the base is frozen; the new head trains on its features")
    start = time.perf_counter()
    features_train = device.predict(extractor, np.concatenate([x_train, x_train[:, :, ::-1]]), batch_size)
    features_val = device.predict(extractor, x_val, batch_size)
    feature_seconds = time.perf_counter() - start
    print(f"phase 1   features of {len(features_train) + len(features_val)} photos in {feature_seconds:.1f} s")
    # Computing the features is part of training (and of the saved state's seconds).
    run.train_seconds = (run.train_seconds or 0) + feature_seconds
    steps = epochs * math.ceil(len(features_train) / batch_size)
    # Compiled in the scope of the strategy the model was built under (several
    # devices, TensorFlow): the optimizer's variables must belong to it too.
    with device.scope_of(head):
        head.compile(
            optimizer=keras.optimizers.Adam(schedules.warmup_cosine(learning_rate, steps)),
            loss=loss,
            metrics=["accuracy"],
        )
    # `batches.data` is what fit trains on: the training features in batches, each
    # epoch in an order drawn from the seed and the epoch's number, so that a run
    # that was interrupted and continued goes through the same orders
    # (common/data.py). `batches` must also be one of fit's callbacks: that is how
    # fit tells it which epoch begins (left out, fit stops at the second epoch
    # with an error that says to add it). shuffle=False because the batches come
    # shuffled already: fit's own shuffling would only reorder whole batches.
    batches = data.ShuffledBatches(features_train, np.concatenate([y_train, y_train]), batch_size, seed)
    head.fit(
        batches.data,
        batch_size=batch_size,
        shuffle=False,
        initial_epoch=run.initial_epoch,
        epochs=epochs,
        validation_data=(features_val, y_val),
        callbacks=[batches, *run.callbacks(phase="head")],
        verbose=0,
    )
# Stopped between the phases, the run gets the trained head back from its
# saved state here; stopped in phase 2, it gets the whole model back, head
# included, when phase 2's fit starts.
head_restored = not head_trains and run.restore("head", head)
if head_restored:
    print("phase 1   trained before this run was interrupted; the head has its trained weights back")
# Phase 1's test accuracy, measured after the head trained and kept in head_test.json.
head_test = None if head_trains else files.read_figures(run.path("head_test.json"))
if not fine_tune_epochs:
    # Without phase 2 the final model is phase 1's: the final line scores it,
    # and scoring it here too would send the test photos through Xception twice.
    print("phase 1   is all the training (--fine_tune_epochs=0); its test accuracy is the final line's")
    head_test = {}
elif head_test is None and (head_trains or head_restored):
    # The test photos go through the whole model: Xception's features, then
    # the head. Each test photo and its mirror image also vote together (flip
    # test-time augmentation), reported beside the plain accuracy.
    print(f"phase 1   scoring the {len(x_test)} test photos and their mirror images", flush=True)
    labels = y_test.argmax(axis=1)
    probabilities = device.predict(model, x_test, batch_size)
    head_test = {
        "test_acc": float(np.mean(probabilities.argmax(axis=1) == labels)),
        "test_acc_flip_tta": augment.flip_tta_accuracy(model, x_test, probabilities, labels, batch_size),
    }
    files.write_json(run.path("head_test.json"), head_test)
elif head_test is None:
    # Resumed in phase 2 without a readable head_test.json: phase 1's head
    # has been fine-tuned since, so what it scored cannot be measured again.
    print("phase 1   test accuracy unknown: head_test.json is missing or damaged; the final line goes without it")
    head_test = {}
# A resumed run prints what its phase 1 measured (a run folder from before
# flip test-time augmentation was reported holds test_acc alone).
if head_test:
    print("phase 1   " + " ".join(f"{key}={value:.4f}" for key, value in head_test.items()))

# Phase 2: unfreeze the top of the base and train the whole model on the
# augmented photos, with a learning rate small enough to adjust the pretrained
# features rather than overwrite them.
if fine_tune_epochs:
    print(f"phase 2   Xception's blocks {fine_tune_from} to 14 train too, at learning rate {fine_tune_learning_rate:g}")
    base.trainable = True
    first = next(i for i, layer in enumerate(base.layers) if layer.name.startswith(f"block{fine_tune_from}_"))
    # Batch normalisation stays frozen: its statistics come from ImageNet, and
    # updating them from batches of a few dozen photos would undo much of the
    # pretraining. A frozen BatchNormalization layer runs in inference mode in
    # Keras 3 (base(x, training=False) would not do it: fit's training=True
    # overrides it).
    for i, layer in enumerate(base.layers):
        layer.trainable = i >= first and not isinstance(layer, layers.BatchNormalization)
    with device.scope_of(model):
        model.compile(optimizer=keras.optimizers.Adam(fine_tune_learning_rate), loss=loss, metrics=["accuracy"])
    callbacks = run.callbacks(
        # best.keras is the whole model at its best validation epoch of phase 2.
        output.ModelCheckpoint(run.path("best.keras"), monitor="val_accuracy", save_best_only=True),
        keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=patience, restore_best_weights=True),
        phase="fine-tune",
        learning_rate_setting="fine_tune_learning_rate",
    )
    # The photos in batches, each epoch in an order drawn from the seed and the
    # epoch's number, as in phase 1; phase 2's epochs are counted on from
    # phase 1's, and so are their orders.
    batches = data.ShuffledBatches(x_train, y_train, batch_size, seed)
    model.fit(
        batches.data,
        batch_size=batch_size,
        shuffle=False,
        initial_epoch=max(epochs, run.initial_epoch),
        epochs=epochs + fine_tune_epochs,
        validation_data=(x_val, y_val),
        callbacks=[batches, *callbacks],
        verbose=0,
    )

phase_starts = [epochs + 1] if fine_tune_epochs else []
run.finish(
    model, x_test, y_test, classes, grid="predictions", phase_starts=phase_starts, batch_size=batch_size,
    flip_tta=True, **{f"head_{key}": round(value, 4) for key, value in head_test.items()},
)
