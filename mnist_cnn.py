"""Trains a small convolutional network on MNIST.

Three conv/pool stages (32, 64 and 128 filters, same padding, batch
normalisation) feed a dense layer with dropout. Random shifts of the training
images and a warm-up + cosine learning-rate schedule do most of the work; a
checkpoint keeps the best epoch and early stopping ends a run that stalls.

Expected: 99.5% test accuracy after 12 epochs, in about 6.3 minutes (380 s) of
training on a slow 2-core CPU (TensorFlow backend, measured 2026-12-07; 216 s
on the machine of 2026-11-28); see README.md.
A one-epoch run on the first 36,000 images that beats the seed tutorial's code
in a fraction of its time on the CPU (README.md's benchmark section):

    python mnist_cnn.py --epochs=1 --width=8 --shift=0 --batch_size=128 --learning_rate=1e-2 --train_samples=36000
"""

import math

import keras
from keras import layers

import common.config
from common import augment, data, device, output, schedules

# Settings: edit them here, or override any of them as --key=value.
data_dir = ""  # folder with mnist.npz or the IDX files, or mnist.npz itself; "" = Keras cache, else download
out_dir = "runs"  # each run writes its files to out_dir/mnist_cnn/<run id>/
epochs = 12  # passes over the training images, unless early stopping ends the run sooner
batch_size = 128  # images per training step
steps_per_execution = 1  # batches per call of the compiled training step; more cut Python overhead on a GPU
learning_rate = 3e-3  # peak of the warm-up + cosine schedule
width = 32  # filters of the first convolution; each later stage doubles them
dropout = 0.4  # fraction of the dense layer's units dropped while training
shift = 3  # random shift while training, in whole pixels up/down and left/right
patience = 5  # early stopping: epochs without a better val_accuracy before stopping
validation_split = 0.1  # fraction of the training images held out for validation
train_samples = 0  # train and validate on only the first N training images (0 = all)
seed = 0  # draws the first weights, the validation split, the order of the batches and the shifts
config = common.config.apply_overrides(globals())

# Seeds every random draw, picks the precision for the device (mixed on a
# GPU) and prints the `backend` line. With several devices (TensorFlow, JAX)
# it sets up data-parallel training: on TensorFlow the model must be built in
# `scope` (MirroredStrategy's); elsewhere `scope` does nothing.
scope = device.setup(seed)

# Data: 28x28x1 images of bytes (0-255), scaled to [0, 1] by the model's first
# layer (bytes are a quarter of the copying to an accelerator), one-hot labels.
(x_train, y_train), (x_test, y_test) = data.load_mnist(data_dir)
x_train, y_train, x_val, y_val = data.split_validation(
    x_train, y_train, validation_split, seed, train_samples
)
x_train, x_val, x_test = (x[..., None] for x in (x_train, x_val, x_test))
y_train, y_val, y_test = (keras.utils.to_categorical(y, 10) for y in (y_train, y_val, y_test))
print(f"data      x_train {x_train.shape} | x_val {x_val.shape} | x_test {x_test.shape}")


def conv_block(filters):
    # Same padding keeps the grid, so only the pooling halves it. Pooling comes
    # straight after the convolution: batch normalisation and ReLU then work on
    # a quarter of the values, which makes the step cheaper. The convolution
    # has no bias because batch normalisation adds its own shift; its momentum
    # of 0.9 (Keras' default is 0.99) lets the statistics used at test time
    # keep up with the weights, even in a one-epoch run.
    return [
        layers.Conv2D(filters, 3, padding="same", use_bias=False),
        layers.MaxPooling2D(),
        layers.BatchNormalization(momentum=0.9),
        layers.Activation("relu"),
    ]


with scope:
    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1), dtype="uint8"),
            layers.Rescaling(1 / 255),
            # Augmentation changes the images only while training: shifts by whole
            # pixels (common/augment.py); Keras' RandomTranslation costs about 25
            # times a whole training step on JAX.
            augment.RandomShift(shift, fill_mode="constant"),
            *conv_block(width),
            *conv_block(2 * width),
            *conv_block(4 * width),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dropout(dropout),
            # Softmax in float32: under mixed precision, bfloat16 would round the probabilities to 2-3 digits.
            layers.Dense(10, activation="softmax", dtype="float32"),
        ],
        name="cnn",
    )
    # The learning rate warms up over the first tenth of training, then
    # decays along a cosine to zero.
    total_steps = epochs * math.ceil(len(x_train) / batch_size)
    model.compile(
        optimizer=keras.optimizers.Adam(schedules.warmup_cosine(learning_rate, total_steps)),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )

# The training and evaluation steps are compiled now (on JAX and TensorFlow),
# so that the epochs' times below are training alone; with several devices,
# this first checks that every batch splits evenly between them.
device.compile_ahead(model, x_train, y_train, batch_size, (x_val, y_val))

# The run's folder, out_dir/mnist_cnn/<run id>/ (or, when this continues an
# interrupted run with the same settings, that run's folder), made only now,
# once the model is built and its steps compiled: a setting the model refuses
# (a shift wider than the images), or batches that several devices cannot
# share, leave no folder behind.
run = output.Run("mnist_cnn", config)

# The last epoch is not always the best one. Early stopping keeps the best
# epoch's weights in memory and puts them back in the model at the end; the
# checkpoint writes them to best.keras after each better epoch, a model you
# can load (keras.saving.load_model) while the run goes on or after it was
# stopped. It is Keras' ModelCheckpoint, writing to a temporary name and
# renaming, so that a crash while saving keeps the previous best.keras. (The
# resume state keeps the best weights too, but only for continuing the run.)
callbacks = run.callbacks(
    output.ModelCheckpoint(run.path("best.keras"), monitor="val_accuracy", save_best_only=True),
    keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=patience, restore_best_weights=True),
)
# `batches.data` is what fit trains on: the training images in batches, each
# epoch in an order drawn from the seed and the epoch's number, so that a run
# that was interrupted and continued goes through the same orders
# (common/data.py). `batches` must also be one of fit's callbacks: that is how
# fit tells it which epoch begins (left out, fit stops at the second epoch
# with an error that says to add it). shuffle=False because the batches come
# shuffled already: fit's own shuffling would only reorder whole batches.
# fit's batch_size sizes the validation batches. initial_epoch is above 0 when
# this continues an interrupted run.
batches = data.ShuffledBatches(x_train, y_train, batch_size, seed)
model.fit(
    batches.data,
    batch_size=batch_size,
    shuffle=False,
    initial_epoch=run.initial_epoch,
    epochs=epochs,
    validation_data=(x_val, y_val),
    callbacks=[batches, *callbacks],
    verbose=0,
)
# Saves model.keras (the best epoch's weights), scores the test images once,
# draws the plots, writes result.json and prints the `final` line.
run.finish(model, x_test, y_test, batch_size=batch_size)
