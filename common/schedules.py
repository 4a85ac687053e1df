"""Learning-rate schedules shared by the scripts."""

import keras


def warmup_cosine(peak, total_steps, warmup_fraction=0.1):
    """Rises linearly from 0 to `peak` over the first `warmup_fraction` of the
    steps, then follows a cosine down to 0 at `total_steps`.

    The warm-up keeps the first updates small while Adam's statistics and batch
    normalisation's averages settle; decaying to zero lets the last epochs
    fine-tune instead of bouncing around the minimum.
    """
    warmup_steps = int(total_steps * warmup_fraction)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=max(total_steps - warmup_steps, 1),
        warmup_target=peak,
        warmup_steps=warmup_steps,
    )
