"""How fast `fit` takes the training images, each way it can be given them:
the arrays as they are (Keras shuffles them), `common.data.ShuffledBatches`
(what the scripts give it), and a plain `keras.utils.PyDataset`.

    python -m benchmarks.feeding --data_dir=../shared/data/mnist

Trains `mnist_mlp.py`'s network (784-512-512-10, Adam, no dropout) on the
54,000 training images of its split, `epochs` epochs each way, from the same
first weights, one way after the other in one process; prints each epoch's
seconds and training accuracy (the ways shuffle in different orders), then
the median of the epochs after the first (the first includes tracing the
steps). On JAX and PyTorch ShuffledBatches is a PyDataset already, so the
plain one is left out.
"""

import statistics
import time

import keras
import numpy as np
from keras import layers

import common.config
from common import data, device

data_dir = ""  # folder with mnist.npz or the IDX files, or mnist.npz itself; "" = the Keras cache, else download
epochs = 4  # epochs of each way
batch_size = 256  # images per training step
seed = 0  # the first weights and the orders of the batches
config = common.config.apply_overrides(globals())


class PlainBatches(keras.utils.PyDataset):
    """The simplest PyDataset: a batch of the arrays, in a new random order each epoch."""

    def __init__(self, x, y):
        super().__init__()
        self.x, self.y, self.order = x, y, np.arange(len(x))

    def __len__(self):
        return -(-len(self.x) // batch_size)

    def __getitem__(self, index):
        chosen = self.order[index * batch_size : (index + 1) * batch_size]
        return self.x[chosen], self.y[chosen]

    def on_epoch_begin(self):
        self.order = np.random.permutation(len(self.x))


class EpochClock(keras.callbacks.Callback):
    def __init__(self, way):
        super().__init__()
        self.way, self.seconds = way, []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)
        print(f"{self.way:<18} epoch {epoch + 1}: {self.seconds[-1]:.2f} s, train accuracy {logs['accuracy']:.4f}")


scope = device.setup(seed)
(x, y), _ = data.load_mnist(data_dir)
x_train, y_train, _, _ = data.split_validation(x, y, 0.1, seed)
x_train, y_train = x_train.reshape(-1, 784), keras.utils.to_categorical(y_train, 10)


def new_model():
    """mnist_mlp.py's network without dropout, the same first weights each time."""
    keras.utils.set_random_seed(seed)
    with scope:
        model = keras.Sequential(
            [
                keras.Input(shape=(784,), dtype="uint8"),
                layers.Rescaling(1 / 255),
                layers.Dense(512, activation="relu"),
                layers.Dense(512, activation="relu"),
                layers.Dense(10, activation="softmax"),
            ]
        )
        model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def given(way):
    """What fit is given each way: inputs, targets, shuffle, extra callbacks."""
    if way == "arrays":
        return x_train, y_train, True, []
    if way == "ShuffledBatches":
        batches = data.ShuffledBatches(x_train, y_train, batch_size, seed)
        return batches.data, None, False, [batches]
    return PlainBatches(x_train, y_train), None, False, []


# On JAX and PyTorch ShuffledBatches gives fit a PyDataset already.
ways = ["arrays", "ShuffledBatches"] + (["PyDataset"] if keras.backend.backend() == "tensorflow" else [])
medians = {}
for way in ways:
    clock = EpochClock(way)
    inputs, targets, shuffle, callbacks = given(way)
    new_model().fit(inputs, targets, batch_size=batch_size, epochs=epochs, shuffle=shuffle, callbacks=[*callbacks, clock], verbose=0)
    medians[way] = statistics.median(clock.seconds[1:] or clock.seconds)
print("median epoch after the first: " + ", ".join(f"{way} {seconds:.2f} s" for way, seconds in medians.items()))
