"""Transfer learning: teaches an ImageNet-trained Xception to tell your own photos apart.

Give it a folder with one subfolder of photos per class (or a .tgz of one).
Xception, trained on ImageNet's 1.3 million photos, already turns an image into
2048 features that describe it well; only a new softmax layer on top of them
has to be learned. Training runs in two phases:

1. The pretrained base is frozen and only the new head trains, so that its
   random start cannot wreck the pretrained features with large gradients.
2. The base (from the block `fine_tune_from` on) is unfrozen and everything
   trains together with a much smaller learning rate, adapting the features a
   little to these photos.

Expected: NOT MEASURED YET.

    python transfer_xception.py --data_dir=path/to/flower_photos.tgz --weights=path/to/xception_notop.h5
    python transfer_xception.py --predict=photo.jpg,other.jpg

The second command prints the most likely classes of each photo, using the
newest model.keras in out_dir/transfer_xception/ (or --model=...) and the class
names saved beside it.
"""

import glob
import json
import os

import keras
import numpy as np
from keras import layers

import common.config
from common import UserError, device, output, photos, pretrained

# Settings: edit them here, or override any of them as --key=value.
data_dir = ""  # folder of class folders, or a .tgz of one; "" = download the TensorFlow flowers
weights = "imagenet"  # "imagenet" (Keras download), a local .h5 weight file, or "none" (random)
out_dir = "runs"  # each run writes its files to out_dir/transfer_xception/<run id>/
image_size = 299  # photos are resized to image_size x image_size, Xception's own (71 at least)
epochs = 10  # phase 1: only the new head trains
learning_rate = 1e-3
fine_tune_epochs = 5  # phase 2: the base trains too (0 = skip phase 2)
fine_tune_learning_rate = 1e-4  # 10x smaller, so the pretrained features change gently
fine_tune_from = 13  # unfreeze Xception's blocks from this one on: 13 = the exit flow, 1 = all 14
batch_size = 32
dropout = 0.2  # fraction of the 2048 features dropped while training the head
patience = 3  # early stopping: epochs without a better val_accuracy before a phase stops
validation_split = 0.15  # fraction of each class held out for validation
test_split = 0.2  # fraction of each class held out for the test, touched once per phase
seed = 0
predict = ""  # comma-separated photo paths: print their most likely classes instead of training
model = ""  # the model.keras that --predict uses; "" = the newest in out_dir/transfer_xception/
config = common.config.apply_overrides(globals())


def predict_photos(paths, model_path):
    """Prints the three most likely classes of each photo."""
    if not model_path:
        found = sorted(glob.glob(os.path.join(out_dir, "transfer_xception", "*", "model.keras")))
        if not found:
            raise UserError(
                f"no trained model in {out_dir}/transfer_xception/; train one first, "
                "or pass --model=path/to/model.keras"
            )
        model_path = found[-1]
    classes_path = os.path.join(os.path.dirname(model_path), "classes.json")
    if not os.path.isfile(model_path) or not os.path.isfile(classes_path):
        raise UserError(
            f"{model_path} and the classes.json beside it must both exist; give the "
            "model.keras of a finished transfer_xception run"
        )
    with open(classes_path) as f:
        classes = json.load(f)
    trained = keras.models.load_model(model_path)
    size = trained.input_shape[1]
    x = np.stack([photos.read_image(path, size) for path in paths])
    probabilities = trained.predict(x, verbose=0)
    print(f"model     {model_path}")
    for path, p in zip(paths, probabilities):
        top = np.argsort(p)[::-1][:3]
        print(f"{path}: " + ", ".join(f"{classes[i]} {p[i]:.3f}" for i in top))


if predict:
    predict_photos(predict.split(","), model)
    raise SystemExit(0)
if not 0 <= fine_tune_from - 1 < 14:
    raise UserError(f"--fine_tune_from={fine_tune_from} is not a block of Xception; use 1 to 14")
if image_size < 71:
    raise UserError(f"--image_size={image_size} is too small: Xception needs at least 71 pixels")

scope = device.setup(seed)

# Data: photos as uint8 pixels; the model itself scales them as Xception expects.
found = photos.load_photos(data_dir, image_size)
if "all" in found:
    splits = photos.split_photos(found["all"], validation_split, test_split, seed)
else:
    splits = dict(found)
    if "validation" not in splits:
        # The user's own train/ and test/ folders: validation comes out of train.
        more = photos.split_photos(found["train"], validation_split, validation_split, seed)
        splits["validation"] = more["validation"]
        splits["train"] = photos.Photos(
            np.concatenate([more["train"].x, more["test"].x]),
            np.concatenate([more["train"].y, more["test"].y]),
            found["train"].classes,
            0,
        )
classes = splits["train"].classes
x_train, y_train = splits["train"].x, splits["train"].y
x_val, y_val = splits["validation"].x, splits["validation"].y
x_test, y_test = splits["test"].x, splits["test"].y
skipped = sum(part.skipped for part in found.values())
print(
    f"data      {len(classes)} classes ({', '.join(classes)}) | x_train {x_train.shape} | "
    f"x_val {x_val.shape} | x_test {x_test.shape} | skipped {skipped} non-image files"
)

with scope:
    base = pretrained.pretrained_base(
        keras.applications.Xception, weights, input_shape=(image_size, image_size, 3)
    )
    base.trainable = False
    inputs = keras.Input(shape=(image_size, image_size, 3))
    # Augmentation layers change the photos only while training.
    x = layers.RandomFlip("horizontal")(inputs)
    x = layers.RandomRotation(0.05)(x)
    x = layers.RandomZoom(0.1)(x)
    # Xception expects pixels scaled to [-1, 1], as in its ImageNet training.
    x = keras.applications.xception.preprocess_input(x)
    # training=False keeps the base's batch normalisation in inference mode in
    # both phases: its statistics come from ImageNet, and updating them from
    # small batches of a few hundred photos would undo much of the pretraining.
    x = base(x, training=False)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(len(classes), activation="softmax", dtype="float32")(x)
    model = keras.Model(inputs, outputs, name="xception_transfer")

# The run folder is made only now, when the data and the weights have loaded.
run = output.Run("transfer_xception", config)
output.write_json(run.path("classes.json"), classes)


def train(epochs_done, more_epochs, learning_rate, best_val_accuracy=None):
    """One phase: compile (which fixes what is trainable) and fit. The
    checkpoint only replaces best.keras when it beats `best_val_accuracy`."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    callbacks = run.callbacks() + [
        keras.callbacks.ModelCheckpoint(
            run.path("best.keras"),
            monitor="val_accuracy",
            save_best_only=True,
            initial_value_threshold=best_val_accuracy,
        ),
        keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=patience, restore_best_weights=True),
    ]
    return model.fit(
        x_train,
        y_train,
        batch_size=batch_size,
        initial_epoch=epochs_done,
        epochs=epochs_done + more_epochs,
        validation_data=(x_val, y_val),
        callbacks=callbacks,
        verbose=0,
    )


print("phase 1   the base is frozen; the new head trains")
histories = [train(0, epochs, learning_rate)]
head_test_loss, head_test_acc = model.evaluate(x_test, y_test, verbose=0)
print(f"phase 1   test_acc={head_test_acc:.4f} test_loss={head_test_loss:.4f}")

if fine_tune_epochs:
    print(f"phase 2   Xception's blocks {fine_tune_from} to 14 train too, at learning rate {fine_tune_learning_rate:g}")
    base.trainable = True
    first = next(i for i, layer in enumerate(base.layers) if layer.name.startswith(f"block{fine_tune_from}_"))
    for layer in base.layers[:first]:
        layer.trainable = False
    head = histories[0]
    histories.append(
        train(len(head.epoch), fine_tune_epochs, fine_tune_learning_rate, max(head.history["val_accuracy"]))
    )

run.finish(model, histories, x_test, y_test, head_test_acc=f"{head_test_acc:.4f}")
