"""Learning-rate schedules shared by the scripts."""

import math

import keras


def warmup_cosine(peak, total_steps, warmup_fraction=0.1):
    """Rises linearly from 0 to `peak` over the first `warmup_fraction` of the
    steps, then follows a cosine down to 0 at `total_steps`.

    The warm-up keeps the first updates small while the optimizer's
    statistics (Adam's moments, SGD's momentum) and batch normalisation's
    averages settle; decaying to zero lets the last epochs fine-tune instead
    of bouncing around the minimum.
    """
    warmup_steps = int(total_steps * warmup_fraction)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=max(total_steps - warmup_steps, 1),
        warmup_target=peak,
        warmup_steps=warmup_steps,
    )


def value(schedule, step):
    """`schedule(step)` as a Python float. For Keras' CosineDecay (what
    `warmup_cosine` makes) it is computed here in plain Python: through the
    backend it is a dozen small operations, about 60 ms on JAX, which the
    epoch table would pay at the end of every epoch. Other schedules go
    through the backend."""
    if not isinstance(schedule, keras.optimizers.schedules.CosineDecay):
        return float(keras.ops.convert_to_numpy(schedule(step)))
    start, decay_steps, alpha = schedule.initial_learning_rate, schedule.decay_steps, schedule.alpha
    warmup = schedule.warmup_target is not None
    peak = schedule.warmup_target if warmup else start
    warmup_steps = schedule.warmup_steps if warmup else 0
    step = min(step, warmup_steps + decay_steps)
    if step < warmup_steps:
        return start + (peak - start) * step / warmup_steps
    fraction = (step - warmup_steps) / decay_steps
    return peak * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * fraction)) + alpha)
