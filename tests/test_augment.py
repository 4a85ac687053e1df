import keras
import numpy as np
import pytest

from common import UserError, augment
from common.augment import RandomShift


def images(n=16, size=8):
    return np.arange(n * size * size * 3, dtype="float32").reshape(n, size, size, 3)


@pytest.mark.parametrize("fill_mode", ["reflect", "constant"])
def test_each_image_is_its_padded_self_cropped_at_some_offset(fill_mode):
    x = images()
    shifted = keras.ops.convert_to_numpy(RandomShift(2, fill_mode=fill_mode, seed=0)(x, training=True))
    padded = np.pad(x, [(0, 0), (2, 2), (2, 2), (0, 0)], mode=fill_mode)
    offsets = set()
    for image, out in zip(padded, shifted):
        matches = [
            (dy, dx) for dy in range(5) for dx in range(5) if np.array_equal(image[dy : dy + 8, dx : dx + 8], out)
        ]
        assert matches, "an output is not a crop of its padded input"
        offsets.add(matches[0])
    assert len(offsets) > 3, "the offsets should vary from image to image"


def test_every_shift_up_to_the_limit_is_drawn_on_each_axis_independently():
    # The largest shift either way must come up, and rows and columns must
    # shift apart from each other, not only diagonally.
    x = images(n=400)
    shifted = keras.ops.convert_to_numpy(RandomShift(2, fill_mode="constant", seed=1)(x, training=True))
    padded = np.pad(x, [(0, 0), (2, 2), (2, 2), (0, 0)])
    offsets = {
        next((dy, dx) for dy in range(5) for dx in range(5) if np.array_equal(image[dy : dy + 8, dx : dx + 8], out))
        for image, out in zip(padded, shifted)
    }
    assert offsets == {(dy, dx) for dy in range(5) for dx in range(5)}


def test_inference_leaves_images_alone_and_the_layer_saves(tmp_path):
    x = images()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(RandomShift(4)(x, training=False)), x)
    model = keras.Sequential([keras.Input((8, 8, 3)), RandomShift(2, fill_mode="constant")])
    model.save(tmp_path / "m.keras")
    layer = keras.saving.load_model(tmp_path / "m.keras").layers[0]
    assert isinstance(layer, RandomShift) and (layer.pixels, layer.fill_mode) == (2, "constant")


def test_an_unknown_fill_mode_is_refused():
    with pytest.raises(ValueError, match="fill_mode"):
        RandomShift(2, fill_mode="wrap")


def test_impossible_shifts_are_user_errors():
    with pytest.raises(UserError, match="not possible"):
        RandomShift(-2)
    for fill_mode in ("reflect", "constant"):
        with pytest.raises(UserError, match="larger than 32x32; give a smaller --shift"):
            RandomShift(32, fill_mode=fill_mode)(np.zeros((1, 32, 32, 3), "float32"))
    RandomShift(31, fill_mode="constant")(np.zeros((1, 32, 32, 3), "float32"))
    # Images of no set size cannot be checked when the layer is built (it
    # raised a TypeError there): the model builds.
    keras.Sequential([keras.Input((None, None, 3)), RandomShift(3)])


def test_shifted_images_move_diagonally_with_reflected_edges():
    images = np.arange(16).reshape(1, 4, 4, 1)
    down_right, up_left = augment._shifted(images, 1), augment._shifted(images, -1)
    np.testing.assert_array_equal(down_right[0, 1:, 1:, 0], images[0, :-1, :-1, 0])
    np.testing.assert_array_equal(up_left[0, :-1, :-1, 0], images[0, 1:, 1:, 0])
    # The uncovered edge mirrors the image inside it: row 1 comes in above row 0.
    np.testing.assert_array_equal(down_right[0, 0, 1:, 0], images[0, 1, :-1, 0])
    np.testing.assert_array_equal(up_left[0, -1, :-1, 0], images[0, -2, 1:, 0])


def test_shift_votes_add_the_votes_of_both_shifts_and_their_mirror_images():
    # A "model" that returns an image's pixels: the votes are then the sum of
    # the views' pixels, and a view missing or counted twice changes them.
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten()])
    x = np.arange(2 * 16, dtype="float32").reshape(2, 4, 4, 1) ** 2
    votes = np.full((2, 16), 1000.0, "float32")  # The votes passed in (the image's and its mirror's) are kept.
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)], mode="reflect")
    up_left, down_right = padded[:, 2:6, 2:6], padded[:, 0:4, 0:4]
    views = [up_left, up_left[:, :, ::-1], down_right, down_right[:, :, ::-1]]
    expected = votes + sum(view.reshape(2, 16) for view in views)
    np.testing.assert_allclose(augment.shift_votes(model, x, votes, 1, batch_size=2), expected)


def test_flip_votes_add_the_mirror_images_probabilities():
    # Two pixels per image, [a, b]; the logits are 3a for class 0 and b for class 1.
    model = keras.Sequential([keras.Input((1, 2, 1)), keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")])
    model.layers[-1].set_weights([np.array([[3.0, 0.0], [0.0, 1.0]]), np.zeros(2)])
    images = np.array([[1.0, 0.0], [0.0, 0.8]]).reshape(2, 1, 2, 1)
    labels = np.array([0, 0])
    probabilities = model.predict(images, verbose=0)
    # Alone, the second image is taken for class 1 (0.69); its mirror image,
    # [0.8, 0], for class 0 (0.92), which wins the summed vote.
    assert list(probabilities.argmax(axis=1)) == [0, 1]
    assert augment.flip_tta_accuracy(model, images, probabilities, labels) == 1.0
