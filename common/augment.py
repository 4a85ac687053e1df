"""Augmentation that is cheap on every backend.

Keras' `RandomTranslation` resamples each image through a general projective
transform; on the JAX backend that costs about 25 times a whole training step
of a small convnet (../shared/REFERENCE.md). A shift by whole pixels needs no
resampling: pad the image, then crop it back at a random offset. Here the crop
is two batched matrix products with one-hot selection matrices, which every
backend runs fast, on the CPU and on an accelerator alike.

Below it, test-time augmentation: the scores of a model trained on flipped
(and shifted) images when each test image votes together with its mirror
image (and its shifted copies), as `common.output.Run.finish` reports them.
"""

import keras
import numpy as np
from keras import layers, ops

from common import UserError, device


@keras.saving.register_keras_serializable(package="common")
class RandomShift(layers.Layer):
    """Shifts each training image by up to `pixels` pixels up or down and left
    or right (independently, uniformly), filling the border by reflection
    (`fill_mode="reflect"`) or with zeros (`"constant"`). Does nothing at
    inference time."""

    def __init__(self, pixels, fill_mode="reflect", seed=None, **kwargs):
        super().__init__(**kwargs)
        if fill_mode not in ("reflect", "constant"):
            raise ValueError(f"fill_mode must be 'reflect' or 'constant', not {fill_mode!r}")
        if pixels < 0:
            raise UserError(f"a shift of {pixels} pixels is not possible; give 0 (no shift) or more, e.g. --shift=3")
        self.pixels = int(pixels)
        self.fill_mode = fill_mode
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        # Reflection mirrors the image inside its border: it cannot reach
        # further than the image is wide. Zeros could, but then some images
        # would leave the frame whole and train as blanks. (Images of no set
        # size, keras.Input((None, None, 3)), are not checked.)
        if None not in input_shape[1:3] and self.pixels >= min(input_shape[1], input_shape[2]):
            raise UserError(
                f"a shift of {self.pixels} pixels needs images larger than "
                f"{input_shape[1]}x{input_shape[2]}; give a smaller --shift"
            )
        super().build(input_shape)

    def call(self, images, training=None):
        if not training or self.pixels == 0:
            return images
        p = self.pixels
        batch = ops.shape(images)[0]
        height, width = images.shape[1], images.shape[2]
        padded = ops.pad(images, [[0, 0], [p, p], [p, p], [0, 0]], mode=self.fill_mode)
        offsets = keras.random.randint((batch, 2), 0, 2 * p + 1, seed=self.seed_generator)
        # rows[b, i, y] = 1 where y = i + offset_y[b]: row i of the output is
        # row i + offset of the padded image; the same for the columns.
        rows = ops.one_hot(offsets[:, :1] + ops.arange(height)[None, :], height + 2 * p, dtype=images.dtype)
        cols = ops.one_hot(offsets[:, 1:] + ops.arange(width)[None, :], width + 2 * p, dtype=images.dtype)
        shifted = ops.einsum("biy,byxc->bixc", rows, padded)
        return ops.einsum("bjx,bixc->bijc", cols, shifted)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "pixels": self.pixels, "fill_mode": self.fill_mode, "seed": self.seed}


# Test-time augmentation: a model trained on flipped (and shifted) images
# scores each test image together with its flipped (and shifted) copies,
# their probabilities summed into one vote.


def flip_tta_accuracy(model, images, probabilities, labels, batch_size=32):
    """The accuracy when each image and its mirror image vote together (their
    probabilities summed): the test-time augmentation of models trained with
    random flips. `probabilities` are the model's for `images`, (N, H, W, C)."""
    return voted_accuracy(flip_votes(model, images, probabilities, batch_size), labels)


def flip_votes(model, images, probabilities, batch_size):
    """`probabilities`, the model's for `images`, plus its probabilities for
    their mirror images."""
    return probabilities + device.predict(model, images[:, :, ::-1], batch_size)


def shift_votes(model, images, votes, shift, batch_size):
    """`votes` plus the model's probabilities for `images` moved `shift`
    pixels up and left, and as far down and right (edges reflected), each
    with its mirror image: the test-time augmentation of models trained with
    random flips and shifts, four votes added to the flip vote's two."""
    for offset in (-shift, shift):
        moved = _shifted(images, offset)
        for view in (moved, moved[:, :, ::-1]):
            votes = votes + device.predict(model, view, batch_size)
    return votes


def voted_accuracy(votes, labels):
    """The fraction of images whose summed vote is for their label."""
    return float(np.mean(votes.argmax(axis=1) == labels))


def _shifted(images, offset):
    """`images` moved `offset` pixels down and right (up and left when
    negative), the uncovered edges filled by reflecting the image."""
    p = abs(offset)
    padded = np.pad(images, [(0, 0), (p, p), (p, p), (0, 0)], mode="reflect")
    height, width = images.shape[1:3]
    return padded[:, p - offset : p - offset + height, p - offset : p - offset + width]
