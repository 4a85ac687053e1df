import keras
import numpy as np
import pytest

from common import schedules


@pytest.mark.parametrize(
    "schedule",
    [
        schedules.warmup_cosine(3e-3, 100),
        schedules.warmup_cosine(0.2, 7, warmup_fraction=0.3),
        keras.optimizers.schedules.CosineDecay(1e-2, 50, alpha=0.1),
    ],
)
def test_the_plain_python_value_is_keras_own(schedule):
    # The epoch table logs this value; it must be the rate the optimizer uses.
    for step in [0, 1, 5, 9, 10, 11, 37, 49, 50, 99, 100, 150]:
        expected = float(keras.ops.convert_to_numpy(schedule(step)))
        assert schedules.value(schedule, step) == pytest.approx(expected, rel=1e-5, abs=1e-9), step


def test_other_schedules_go_through_the_backend():
    schedule = keras.optimizers.schedules.ExponentialDecay(1.0, decay_steps=10, decay_rate=0.5)
    assert schedules.value(schedule, 10) == pytest.approx(0.5)
    assert np.isclose(schedules.value(schedule, 0), 1.0)
