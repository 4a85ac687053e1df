"""Trains a convolutional network on CIFAR-10: the seed tutorial's convnet, grown up.

The seed tutorial's CIFAR-10 network stacked 3x3 convolutions of 32, 64, 128
and 256 filters with pooling, then Flatten, Dense and Dropout (its code is
benchmarks/seed_cifar10_cnn.py; the classic Keras example had two stages of
32 and 64 filters). This version keeps its doubling widths, 3x3
convolutions, Flatten, Dense and Dropout, and grows it: same padding, six
convolutions in place of four (the 64 and 128 come twice), pooling after
four of them, a dense layer of 256 with dropout before and after it. And it
adds what has since become standard: batch normalisation after each
convolution (after its pooling, where a stage ends), random flips and
shifts of the training images, L1/L2 weight regularisation (as settings),
label smoothing, and a warm-up + cosine learning-rate schedule. As an
option (`whiten=True`), a frozen first layer whitens the images' 2x2
patches, as in airbench, the CIFAR-10 speed record.
`activation="gelu"` replaces the convolutions' ReLU, and `optimizer="sgd"`
(with a far higher learning_rate) replaces Adam: with the whitening, L2 5e-4
and no dropout they scored best in short CPU runs (docs/measurements.md):

    python cifar10_cnn.py --whiten=True --l2=5e-4 --dropout=0 --activation=gelu --optimizer=sgd --learning_rate=0.5

With `--width=64 --epochs=30 --batch_size=1000` added, on one H200 GPU (JAX
backend, bfloat16), they scored 90.09% (91.25% with flip + shift test-time
augmentation) in 6.3 s of training, the mean of two seeds (README.md, "GPU
results").

Expected: 86.0% test accuracy (87.2% with flip test-time augmentation, 87.7%
with flip + shift) after 20 epochs, in 59 minutes of training on the
slower of the project's two 2-core CPUs (TensorFlow backend, measured
2026-12-07 on the JPEG-compressed copy of CIFAR-10 in ../shared/data, which
costs every method about 3 points; on the faster, 2026-11-28, before each
epoch had its own order of the batches, 85.8%, 87.0% and 87.3% in 19
minutes); see README.md. On that copy the seed tutorial's code reached
69.1% after 10 epochs on an H100 (../shared/REFERENCE.md).

    python cifar10_cnn.py --data_dir=path/to/cifar10
"""

import math

import keras
import numpy as np
from keras import layers

import common.config
from common import augment, cifar10, data, device, output, schedules

# Settings: edit them here, or override any of them as --key=value.
data_dir = ""  # folder with CIFAR-10 in any layout README.md lists, or its .tar.gz; "" = Keras cache, else download
out_dir = "runs"  # each run writes its files to out_dir/cifar10_cnn/<run id>/
allow_pickle = False  # read pickled batches other than Keras' verified archive (a pickle can run code)
epochs = 20  # passes over the training images, unless early stopping ends the run sooner
batch_size = 128  # images per training step
steps_per_execution = 1  # batches per call of the compiled training step; more cut Python overhead on a GPU
resident = False  # keep the training images on the accelerator and gather each batch there (JAX, one device)
optimizer = "adam"  # "adam", or "sgd" (with Nesterov momentum 0.9)
learning_rate = 2e-3  # peak of the warm-up + cosine schedule; 2e-3 suits Adam, SGD needs about 0.5
width = 32  # filters of the first convolution; the later stages have 2, 4 and 8 times as many
l1 = 0.0  # L1 penalty on the weights of every trained convolution and the hidden dense layer
l2 = 1e-4  # L2 penalty on the same weights
dropout = 0.1  # fraction of units dropped before and after the dense layer
activation = "relu"  # after each trained convolution's batch norm: "relu", or "gelu", "silu", ... (smooth ReLUs, slower)
label_smoothing = 0.1  # targets of 0.91 (0.9 + 0.1/10) and 0.01 instead of 1 and 0: less overconfidence
shift = 4  # random shift while training, in whole pixels up/down and left/right
flip = True  # random horizontal flips while training
whiten = False  # a frozen first layer that decorrelates the pixels of each 2x2 patch and evens out their scales (see patch_whitening)
test_time_augmentation = True  # with flip, also score the test images' flips (and shifts): 2 or 6 passes, not 1
patience = 8  # early stopping: epochs without a better val_accuracy before stopping
validation_split = 0.1  # fraction of the training images held out for validation
train_samples = 0  # train and validate on only the first N training images (0 = all)
seed = 0  # draws the first weights, the validation split, the order of the batches and the augmentation
config = common.config.apply_overrides(globals())

# Seeds every random draw, picks the precision for the device (mixed on a
# GPU) and prints the `backend` line. With several devices (TensorFlow, JAX)
# it sets up data-parallel training: on TensorFlow the model must be built in
# `scope` (MirroredStrategy's); elsewhere `scope` does nothing.
scope = device.setup(seed)
if whiten and device.processes() > 1:
    # Each machine holds only its own share of the training images.
    raise common.UserError(
        "--whiten=True computes the whitening layer from this machine's training images, so machines "
        "would train with different first layers; train with it on one machine"
    )

# Only JAX on one device hands fit's batches to the step without copying them (common/data.py).
if resident:
    data.DeviceBatches.check()

# Data: 32x32 RGB images of bytes (0-255), scaled to [0, 1] inside the model
# (bytes are a quarter of the copying to an accelerator), one-hot labels.
(x_train, y_train), (x_test, y_test) = cifar10.load_cifar10(data_dir, allow_pickle=allow_pickle)
x_train, y_train, x_val, y_val = data.split_validation(
    x_train, y_train, validation_split, seed, train_samples
)
y_train, y_val, y_test = (keras.utils.to_categorical(y, 10) for y in (y_train, y_val, y_test))
print(f"data      x_train {x_train.shape} | x_val {x_val.shape} | x_test {x_test.shape}")

regularizer = keras.regularizers.L1L2(l1=l1, l2=l2)


def conv(filters, pool=False):
    # Batch normalisation sits between the convolution and its activation, so
    # the convolution needs no bias of its own. Where a stage ends, pooling
    # comes straight after the convolution: batch normalisation and the
    # activation then work on a quarter of the values, which makes the step
    # cheaper. Batch normalisation's momentum of 0.9 (Keras' default is
    # 0.99) lets the statistics used at test time keep up with the weights,
    # even in a one-epoch run.
    return [
        layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_regularizer=regularizer),
        *([layers.MaxPooling2D()] if pool else []),
        layers.BatchNormalization(momentum=0.9),
        layers.Activation(activation),
    ]


def patch_whitening(images, epsilon=1e-3):
    # The weights and bias of a 2x2 convolution whose outputs are the
    # principal components of the images' 2x2 patches (4 pixels x 3 channels
    # = 12 values), centred by the bias and divided by their standard
    # deviations: the first trained convolution then sees inputs that vary
    # about equally in every direction, and learns faster. That is airbench's
    # first layer (the CIFAR-10 speed record). epsilon, a variance on the
    # [0, 1] pixel scale, damps the components fainter than itself instead of
    # blowing them up: on CIFAR-10 that is six of the twelve, whose variances
    # lie between 7e-6 and 4e-4. (airbench's epsilon, 3e-5 on this scale,
    # scored a point lower after one epoch here; docs/measurements.md.) Each
    # component comes twice, as +z and -z, so that the ReLU after the layer
    # keeps both signs. A thousand images hold a million patches, plenty for
    # a 12 x 12 covariance.
    pixels = images[:1000].astype("float64") / 255
    patches = np.lib.stride_tricks.sliding_window_view(pixels, (2, 2), axis=(1, 2))  # (N, 31, 31, 3, 2, 2)
    # One patch per row, its values in (row, column, channel) order like the
    # first three axes of a Conv2D kernel, so the eigenvectors reshape to one.
    patches = patches.transpose(0, 1, 2, 4, 5, 3).reshape(-1, 12)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(patches, rowvar=False))
    kernel = eigenvectors / np.sqrt(eigenvalues + epsilon)
    kernel = np.concatenate([kernel, -kernel], axis=1)
    return [kernel.reshape(2, 2, 3, 24), -patches.mean(axis=0) @ kernel]


# Augmentation works on the bytes (0-255), before the scaling to [0, 1]:
# flips and shifts only move pixels, and whole numbers up to 256 are exact
# even in bfloat16. The scaling computes in float32 even under mixed
# precision, so that the whitening layer sees the pixels unrounded.
augmentation = [layers.RandomFlip("horizontal")] if flip else []
# Reflecting the border fills the shifted-in pixels with plausible image content.
augmentation.append(augment.RandomShift(shift, fill_mode="reflect"))
whitening = []
if whiten:
    # Its weights are computed from the training images once the model is
    # built, and never trained. It computes in float32 too: its large weights
    # of opposite signs cancel, and in bfloat16 the faintest components came
    # out 40% wrong. Same padding keeps the 32x32 grid, so the network after
    # it is unchanged; the windows of the last row and column reach into the
    # zero padding. Its activation is ReLU whatever `activation` says: of each
    # pair of components +z and -z it passes exactly one.
    whitening = [
        layers.Conv2D(24, 2, padding="same", trainable=False, dtype="float32", name="whitening"),
        layers.Activation("relu"),
    ]

with scope:
    model = keras.Sequential(
        [
            keras.Input(shape=(32, 32, 3), dtype="uint8"),
            # Augmentation changes the images only while training.
            *augmentation,
            layers.Rescaling(1 / 255, dtype="float32"),
            *whitening,
            *conv(width, pool=True),
            *conv(2 * width),
            *conv(2 * width, pool=True),
            *conv(4 * width),
            *conv(4 * width, pool=True),
            *conv(8 * width, pool=True),
            layers.Flatten(),
            layers.Dropout(dropout),
            layers.Dense(256, activation="relu", kernel_regularizer=regularizer),
            layers.Dropout(dropout),
            # Softmax in float32: under mixed precision, bfloat16 would round the probabilities to 2-3 digits.
            layers.Dense(10, activation="softmax", dtype="float32"),
        ],
        name="cifar10_cnn",
    )
    if whiten:
        model.get_layer("whitening").set_weights(patch_whitening(x_train))
    total_steps = epochs * math.ceil(len(x_train) / batch_size)
    schedule = schedules.warmup_cosine(learning_rate, total_steps)
    # SGD with Nesterov momentum 0.9, as in resnet34.py. With either optimizer
    # the weights' penalty is the l1/l2 settings', added to the loss (so its
    # gradient goes through the momentum or Adam's scaling): not resnet34.py's
    # weight_decay, which shrinks the weights apart from the gradient, in step
    # with the learning rate (--l2=5e-4 here and --weight_decay=5e-4 there
    # differ).
    if optimizer == "sgd":
        sgd_or_adam = keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True)
    else:
        sgd_or_adam = keras.optimizers.Adam(schedule)
    model.compile(
        optimizer=sgd_or_adam,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )

# The training and evaluation steps are compiled now (on JAX and TensorFlow),
# so that the epochs' times below are training alone; with several devices,
# this first checks that every batch splits evenly between them.
device.compile_ahead(model, x_train, y_train, batch_size, (x_val, y_val))

# The run's folder, out_dir/cifar10_cnn/<run id>/ (or, when this continues an
# interrupted run with the same settings, that run's folder), made only now,
# once the model is built and its steps compiled: a setting the model refuses
# (a shift wider than the images), or batches that several devices cannot
# share, leave no folder behind.
run = output.Run("cifar10_cnn", config)

# Early stopping keeps the weights of the best epoch in memory and puts them
# back in the model at the end (the last epoch is not always the best one),
# so model.keras holds them. Unlike mnist_cnn.py this script writes no
# best.keras checkpoint after each better epoch: at width 64 one save took
# 0.15 s on a CPU (0.61 s for four; docs/measurements.md), against 0.4 s
# for a whole epoch on an H100.
# An interrupted run still resumes from its saved state, best weights
# included.
callbacks = run.callbacks(
    keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=patience, restore_best_weights=True),
)
# `batches.data` is what fit trains on: the training images in batches, each
# epoch in an order drawn from the seed and the epoch's number, so that a run
# that was interrupted and continued goes through the same orders
# (common/data.py). `batches` must also be one of fit's callbacks: that is how
# fit tells it which epoch begins (left out, fit stops at the second epoch
# with an error that says to add it). shuffle=False because the batches come
# shuffled already: fit's own shuffling would only reorder whole batches. Each
# batch is gathered in host memory and copied to the device; with
# resident=True the images are copied there once, and each batch is gathered
# there. fit's batch_size sizes the validation batches. initial_epoch is above
# 0 when this continues an interrupted run.
batches = data.ShuffledBatches(x_train, y_train, batch_size, seed, resident)
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
# With flips in training, each test image and its mirror image also vote
# together (test-time augmentation), reported beside the plain accuracy; with
# shifts too, the image moved one pixel diagonally either way votes as well,
# each time with its mirror image. --test_time_augmentation=False leaves
# these votes out.
flip_tta = test_time_augmentation and flip
run.finish(
    model, x_test, y_test, cifar10.CLASSES, batch_size=batch_size, flip_tta=flip_tta,
    shift_tta=1 if flip_tta and shift else 0,
)
