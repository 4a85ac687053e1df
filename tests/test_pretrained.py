"""Loading pretrained bases. The tiny real MobileNet weights in the shared data
stand in for Xception's 84 MB, so the weight-file path runs in seconds."""

import keras
import numpy as np
import pytest

from common import UserError, pretrained
from conftest import MOBILENET, needs_mobilenet


def mobilenet(weights):
    return pretrained.pretrained_base(keras.applications.MobileNet, weights, input_shape=(64, 64, 3), alpha=0.25)


@needs_mobilenet
def test_a_local_weight_file_is_loaded(capsys):
    import h5py

    base = mobilenet(MOBILENET)
    assert "pretrained on ImageNet" in capsys.readouterr().out
    # The first convolution holds exactly the kernel stored in the file.
    with h5py.File(MOBILENET, "r") as f:
        stored = f["conv1"]["conv1"]["kernel:0"][()]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(base.get_layer("conv1").kernel), stored)
    random = mobilenet("none")
    assert not np.allclose(random.get_layer("conv1").kernel, stored)


def test_random_weights_come_with_a_warning(capsys):
    base = mobilenet("none")
    assert base.output_shape == (None, 2, 2, 256)  # No top: a feature map.
    assert "warning   weights=none" in capsys.readouterr().out


def test_a_missing_or_broken_weight_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        mobilenet(str(tmp_path / "missing.h5"))
    not_hdf5 = tmp_path / "weights.h5"
    not_hdf5.write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(UserError, match="is not an HDF5"):
        mobilenet(str(not_hdf5))
    # A folder (or a pipe) exists but is not a file: "does not exist" was wrong.
    with pytest.raises(UserError, match=f"weights file '{tmp_path}' is not a file"):
        mobilenet(str(tmp_path))


@needs_mobilenet
def test_weights_of_another_model_are_a_user_error():
    # The weights of MobileNet with alpha=0.25 do not fit one with alpha=0.5.
    with pytest.raises(UserError, match="could not load MobileNet weights from"):
        pretrained.pretrained_base(keras.applications.MobileNet, MOBILENET, input_shape=(64, 64, 3), alpha=0.5)


def test_a_cached_imagenet_file_that_fails_keras_check_is_kept_and_refused(monkeypatch, tmp_path):
    # Keras deleted it, then could not download another offline: an 84 MB
    # copy the user had put in the cache was lost.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    cached = tmp_path / "models" / "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"
    cached.write_bytes(b"\x89HDF\r\n\x1a\n not Keras' copy")
    with pytest.raises(UserError, match=f"{cached} in the Keras cache is not the file Keras verifies .*--weights={cached}"):
        pretrained.check_weights("imagenet", "Xception")
    assert cached.exists()


def test_the_cached_imagenet_file_checked_is_the_one_keras_asks_for(monkeypatch):
    from keras.src.utils import file_utils

    asked = {}

    def record(fname, origin, **kwargs):
        asked.update(fname=fname, **kwargs)
        raise RuntimeError("recorded")

    monkeypatch.setattr(file_utils, "get_file", record)
    with pytest.raises(RuntimeError, match="recorded"):
        keras.applications.Xception(include_top=False, weights="imagenet", input_shape=(71, 71, 3))
    file_name, md5 = pretrained._IMAGENET_FILES["Xception"]
    assert (asked["fname"], asked["file_hash"], asked["cache_subdir"]) == (file_name, md5, "models")


def test_a_weight_file_that_cannot_be_read_is_a_user_error(monkeypatch, tmp_path):
    path = tmp_path / "weights.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n")

    def unreadable(*args, **kwargs):  # As a file without read permission, for a user other than root.
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(pretrained, "open", unreadable, raising=False)
    with pytest.raises(UserError, match=f"cannot read {path} \\(Permission denied\\)"):
        pretrained.check_weights(str(path), "Xception")


@pytest.mark.filterwarnings("ignore:`input_shape` is undefined")  # MobileNet's note on 64x64.
def test_imagenet_offline_says_to_pass_a_local_file(monkeypatch, tmp_path):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: no internet")

    monkeypatch.setattr(file_utils, "get_file", offline)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(UserError, match="when offline, pass --weights=path/to/the MobileNet"):
        mobilenet("imagenet")
