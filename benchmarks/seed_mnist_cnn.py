"""The seed tutorial's MNIST convnet, transcribed as it was: conv32 (3x3, same)
- max-pool - conv64 (3x3, same) - max-pool - dense 100 - dropout 0.4 - softmax,
Adam with its defaults, batch 32, a validation split of 0.2. Not part of the
collection: it is the baseline that `mnist_cnn.py` must beat.

Its validation images are drawn at random, and it runs, times and records as
the collection's scripts do; what that changes is listed in
benchmarks/__init__.py.
"""

import keras
from keras import layers

import common.config
from common import data, device, output

data_dir = ""
out_dir = "runs"
epochs = 1
batch_size = 32
validation_split = 0.2
seed = 0
config = common.config.apply_overrides(globals())

device.setup(seed)
(x_train, y_train), (x_test, y_test) = data.load_mnist(data_dir)
x_train, y_train, x_val, y_val = data.split_validation(x_train, y_train, validation_split, seed)
x_train, x_val, x_test = (x[..., None].astype("float32") / 255 for x in (x_train, x_val, x_test))
y_train, y_val, y_test = (keras.utils.to_categorical(y, 10) for y in (y_train, y_val, y_test))
print(f"data      x_train {x_train.shape} | x_val {x_val.shape} | x_test {x_test.shape}")
run = output.Run("seed_mnist_cnn", config)

model = keras.Sequential(
    [
        keras.Input(shape=(28, 28, 1)),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(100, activation="relu"),
        layers.Dropout(0.4),
        layers.Dense(10, activation="softmax"),
    ],
    name="seed_cnn",
)
model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
# Not in the seed's code: the steps are compiled (traced, on TensorFlow)
# before the clock starts, as in the collection's scripts, so that the
# benchmark compares training times.
device.compile_ahead(model, x_train, y_train, batch_size, (x_val, y_val))
model.fit(
    x_train, y_train, batch_size=batch_size, initial_epoch=run.initial_epoch, epochs=epochs,
    validation_data=(x_val, y_val), callbacks=run.callbacks(), verbose=0,
)
run.finish(model, x_test, y_test)
