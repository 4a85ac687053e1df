"""Trains a ResNet-34 on CIFAR-10.

ResNet-34 (He et al., 2015) stacks 16 residual units, 3-4-6-3 of them at 64,
128, 256 and 512 filters. Each unit adds its input, through a skip path, to the
output of two 3x3 convolutions, so that every unit only has to learn a
correction; that is what lets such a deep stack train at all. For 32x32
images the stem is one 3x3 convolution and no pooling (`stem="cifar"`); the
original ImageNet stem (7x7 stride-2 convolution and 3x3 max-pooling) is
`stem="imagenet"`, meant for large images: on CIFAR-10's 32x32 images it
leaves an 8x8 grid for the first unit, and is there to show the original.

Parameters (10 classes): 21,299,146 with the CIFAR stem, 21,306,826 with the
ImageNet stem, as `model.summary()` shows.

Measured on one H100 (JAX backend, bfloat16, 2026-11-23) with
`--batch_size=500 --epochs=120 --learning_rate=0.4`: 90.7% test accuracy
(91.4% with flip test-time augmentation) on the JPEG-compressed copy of
CIFAR-10, in 177 s of training; the defaults are not measured yet (on a
2-core CPU they would take 18 to 41 hours, at the 9 to 21 training images a
second of the short checks below, whose speed varies by the day). See README.md.

    python resnet34.py --data_dir=path/to/cifar10

A short check on a 2-core CPU (TensorFlow, 2026-12-07): 37.3% test accuracy
after 1075 s of training, 40 minutes in all (36.8% in 423 s and 23 minutes on
2026-12-04, on a faster day of the same kind of machine); most of the rest are
six passes over the 10,000 test images for the test-time votes, which
`--test_time_augmentation=False` cuts to one.

    python resnet34.py --data_dir=path/to/cifar10 --train_samples=2500 --epochs=4 --batch_size=64 --learning_rate=0.05
"""

import math

import keras
from keras import layers

import common.config
from common import augment, cifar10, data, device, output, schedules

# Settings: edit them here, or override any of them as --key=value.
data_dir = ""  # folder with CIFAR-10 in any layout README.md lists, or its .tar.gz; "" = Keras cache, else download
out_dir = "runs"  # each run writes its files to out_dir/resnet34/<run id>/
allow_pickle = False  # read pickled batches other than Keras' verified archive (a pickle can run code)
stem = "cifar"  # "cifar": 3x3 conv for 32x32 images; "imagenet": 7x7/2 conv + max-pool
epochs = 30  # passes over the training images
batch_size = 256  # images per training step
steps_per_execution = 1  # batches per call of the compiled training step; more cut Python overhead on a GPU
resident = False  # keep the training images on the accelerator and gather each batch there (JAX, one device)
learning_rate = 0.2  # peak of the warm-up + cosine schedule (SGD with Nesterov momentum)
weight_decay = 5e-4  # decoupled weight decay of the SGD optimizer
label_smoothing = 0.1  # targets of 0.91 (0.9 + 0.1/10) and 0.01 instead of 1 and 0: less overconfidence
shift = 4  # random shift while training, in whole pixels up/down and left/right
test_time_augmentation = True  # also score the test images' flips (and shifts): 2 or 6 passes, not 1
validation_split = 0.1  # fraction of the training images held out for validation
train_samples = 0  # train and validate on only the first N training images (0 = all)
seed = 0  # draws the first weights, the validation split, the order of the batches and the augmentation
config = common.config.apply_overrides(globals())
if stem not in ("cifar", "imagenet"):
    raise common.UserError(f"--stem={stem!r} is not a stem; use 'cifar' or 'imagenet'")

# Seeds every random draw, picks the precision for the device (mixed on a
# GPU) and prints the `backend` line. With several devices (TensorFlow, JAX)
# it sets up data-parallel training: on TensorFlow the model must be built in
# `scope` (MirroredStrategy's); elsewhere `scope` does nothing.
scope = device.setup(seed)
# Only JAX on one device hands fit's batches to the step without copying them (common/data.py).
if resident:
    data.DeviceBatches.check()

# Data: 32x32 RGB images of bytes (0-255), scaled to [0, 1] by the model's
# first layer (bytes are a quarter of the copying to an accelerator), one-hot
# labels.
(x_train, y_train), (x_test, y_test) = cifar10.load_cifar10(data_dir, allow_pickle=allow_pickle)
x_train, y_train, x_val, y_val = data.split_validation(
    x_train, y_train, validation_split, seed, train_samples
)
y_train, y_val, y_test = (keras.utils.to_categorical(y, 10) for y in (y_train, y_val, y_test))
print(f"data      x_train {x_train.shape} | x_val {x_val.shape} | x_test {x_test.shape}")


# Batch normalisation's running averages, used for validation and testing,
# follow the last ~10 batches instead of Keras' default ~100: a short run is
# then evaluated with statistics of the trained network, not of its start.
BN_MOMENTUM = 0.9


@keras.saving.register_keras_serializable(package="resnet34")
class ResidualUnit(layers.Layer):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the input through the skip path; then ReLU.

    When `strides` > 1 the main path halves the grid, so the skip path must
    too: a 1x1 convolution with the same stride (and batch normalisation)
    brings the input to the new size and number of filters.
    """

    def __init__(self, filters, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.strides = strides
        self.main_layers = [
            layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False),
            layers.BatchNormalization(momentum=BN_MOMENTUM),
            layers.Activation("relu"),
            layers.Conv2D(filters, 3, padding="same", use_bias=False),
            # A zero scale makes the unit start as the identity (its skip path
            # alone), which keeps the first steps of a deep stack stable.
            layers.BatchNormalization(momentum=BN_MOMENTUM, gamma_initializer="zeros"),
        ]
        self.skip_layers = []
        if strides > 1:
            self.skip_layers = [
                layers.Conv2D(filters, 1, strides=strides, use_bias=False),
                layers.BatchNormalization(momentum=BN_MOMENTUM),
            ]

    def build(self, input_shape):
        # Builds the sublayers' weights from the input's shape, as a reloaded
        # model needs before its saved weights go in.
        for path in (self.main_layers, self.skip_layers):
            shape = input_shape
            for layer in path:
                layer.build(shape)
                shape = layer.compute_output_shape(shape)

    def call(self, inputs, training=None):
        main = inputs
        for layer in self.main_layers:
            main = layer(main, training=training)
        skip = inputs
        for layer in self.skip_layers:
            skip = layer(skip, training=training)
        return keras.ops.relu(main + skip)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides}


def resnet34(stem, shift):
    if stem == "cifar":
        # One 3x3 convolution keeps the whole 32x32 grid for the residual units.
        stem_layers = [
            layers.Conv2D(64, 3, padding="same", use_bias=False),
            layers.BatchNormalization(momentum=BN_MOMENTUM),
            layers.Activation("relu"),
        ]
    else:
        # The ImageNet stem shrinks a 224x224 image to 56x56 before the first unit.
        stem_layers = [
            layers.Conv2D(64, 7, strides=2, padding="same", use_bias=False),
            layers.BatchNormalization(momentum=BN_MOMENTUM),
            layers.Activation("relu"),
            layers.MaxPooling2D(3, strides=2, padding="same"),
        ]
    units = []
    previous_filters = 64
    for filters, count in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for _ in range(count):
            # The first unit of a new stage halves the grid and widens the filters.
            strides = 1 if filters == previous_filters else 2
            units.append(ResidualUnit(filters, strides=strides))
            previous_filters = filters
    return keras.Sequential(
        [
            keras.Input(shape=(32, 32, 3), dtype="uint8"),
            # Augmentation changes the images only while training. As in
            # cifar10_cnn.py it moves the bytes, before the scaling to [0, 1].
            layers.RandomFlip("horizontal"),
            augment.RandomShift(shift, fill_mode="reflect"),
            layers.Rescaling(1 / 255),
            *stem_layers,
            *units,
            layers.GlobalAveragePooling2D(),
            # Softmax in float32: under mixed precision, bfloat16 would round the probabilities to 2-3 digits.
            layers.Dense(10, activation="softmax", dtype="float32"),
        ],
        name=f"resnet34_{stem}_stem",
    )


with scope:
    model = resnet34(stem, shift)
    total_steps = epochs * math.ceil(len(x_train) / batch_size)
    model.compile(
        optimizer=keras.optimizers.SGD(
            schedules.warmup_cosine(learning_rate, total_steps),
            momentum=0.9,
            nesterov=True,
            weight_decay=weight_decay,
        ),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )

# The training and evaluation steps are compiled now (on JAX and TensorFlow),
# so that the epochs' times below are training alone; with several devices,
# this first checks that every batch splits evenly between them.
device.compile_ahead(model, x_train, y_train, batch_size, (x_val, y_val))

# The run's folder, out_dir/resnet34/<run id>/ (or, when this continues an
# interrupted run with the same settings, that run's folder), made only now,
# once the model is built and its steps compiled: a setting the model refuses
# (a shift wider than the images), or batches that several devices cannot
# share, leave no folder behind.
run = output.Run("resnet34", config)

# The batches, each epoch in an order drawn from the seed and the epoch's
# number, as in cifar10_cnn.py, whose comment says more: `batches` must be
# one of fit's callbacks, and fit must not shuffle again. With resident=True
# they are gathered on the device. fit's batch_size sizes the validation
# batches. initial_epoch is above 0 when this continues an interrupted run.
batches = data.ShuffledBatches(x_train, y_train, batch_size, seed, resident)
model.fit(
    batches.data,
    batch_size=batch_size,
    shuffle=False,
    initial_epoch=run.initial_epoch,
    epochs=epochs,
    validation_data=(x_val, y_val),
    callbacks=[batches, *run.callbacks()],
    verbose=0,
)
# Each test image and its mirror image also vote together (test-time
# augmentation), reported beside the plain accuracy; with shifts in training,
# the image moved one pixel diagonally either way votes as well, each time
# with its mirror image.
run.finish(
    model, x_test, y_test, cifar10.CLASSES, batch_size=batch_size, flip_tta=test_time_augmentation,
    shift_tta=1 if test_time_augmentation and shift else 0,
)
