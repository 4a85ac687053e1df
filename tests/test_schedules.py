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


def test_warmup_cosine_rises_to_the_peak_then_falls_to_zero_at_the_last_step():
    schedule = schedules.warmup_cosine(0.4, total_steps=100)  # ten steps of warm-up
    rate = [schedules.value(schedule, step) for step in range(101)]
    assert rate[0] == 0 and rate[5] == pytest.approx(0.2) and rate[10] == pytest.approx(0.4)
    assert rate[10] == max(rate)
    # Half-way through the cosine (45 of its 90 steps) it is at half the peak, and 0 at the end.
    assert rate[55] == pytest.approx(0.2) and rate[100] == pytest.approx(0, abs=1e-12)
    assert all(a > b for a, b in zip(rate[10:100], rate[11:101]))


def test_other_schedules_go_through_the_backend():
    schedule = keras.optimizers.schedules.ExponentialDecay(1.0, decay_steps=10, decay_rate=0.5)
    assert schedules.value(schedule, 10) == pytest.approx(0.5)
    assert np.isclose(schedules.value(schedule, 0), 1.0)
