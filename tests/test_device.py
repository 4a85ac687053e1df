import keras
import numpy as np

from common import device


def test_cpu_setup_prints_backend_devices_and_precision(capsys):
    scope = device.setup(seed=0)
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"backend   {keras.backend.backend()} ")
    assert "devices CPU" in line and "precision float32" in line
    assert keras.mixed_precision.global_policy().name == "float32"
    with scope:  # One device: the scope changes nothing.
        pass


def test_setup_seeds_every_generator():
    def draw():
        return np.random.rand(3), keras.ops.convert_to_numpy(keras.random.uniform((3,)))

    device.setup(seed=3)
    first_numpy, first_keras = draw()
    device.setup(seed=3)
    second_numpy, second_keras = draw()
    np.testing.assert_array_equal(first_numpy, second_numpy)
    np.testing.assert_array_equal(first_keras, second_keras)
    device.setup(seed=4)
    assert not np.array_equal(np.random.rand(3), first_numpy)
