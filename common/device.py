"""Device and precision setup: use whatever accelerator is there, else the CPU.

Nothing here imports a backend at module level, so the scripts run on
TensorFlow, JAX or PyTorch (`KERAS_BACKEND=jax python mnist_mlp.py`) with only
that backend installed.
"""

import contextlib
import os
import platform
import time

import keras
import numpy as np

from common import UserError


def setup(seed):
    """Seeds every generator, picks the precision and prints what runs where.

    On a GPU the global dtype policy becomes mixed precision (bfloat16 where
    the card has it, as on Ampere and newer; float16 otherwise) and Keras
    compiles steps with XLA by default. With several devices it trains
    data-parallel through the backend's own API (README.md, "Backends,
    accelerators, several devices and machines"): it returns the scope in
    which the model must be built and compiled, which does nothing otherwise.
    """
    keras.utils.set_random_seed(seed)
    backend = keras.backend.backend()
    gpus, bfloat16 = _gpus(backend)
    if gpus:
        policy = "mixed_bfloat16" if bfloat16 else "mixed_float16"
    else:
        policy = "float32"
    keras.mixed_precision.set_global_policy(policy)
    scope, parallel = _data_parallel_scope(backend, len(gpus))
    where = f"{len(gpus)} x {gpus[0]}" if gpus else f"CPU ({os.cpu_count()} cores, {platform.machine()})"
    print(
        f"backend   {backend} {_backend_version(backend)} | keras {keras.__version__} | "
        f"devices {where} | precision {policy}" + (f" | {parallel}" if parallel else "")
    )
    return scope


def compile_ahead(model, x, y, batch_size, validation_data):
    """Compiles the training and evaluation steps before `model.fit`, so that
    the time `fit` takes is training time; returns the seconds compiling took.

    On JAX, XLA compiles a step for each shape of batch it meets: full
    batches, and the smaller last batch of the training and of the validation
    data. Running each step once compiles it; the model's and the optimizer's
    variables (random-generator states included) and NumPy's generator are
    then put back, so training starts from the same state. (Not quite the
    same run: a model's first `fit` draws one extra shuffle to build itself,
    which a compiled model skips, so the batches come in another order.)
    With several devices, every batch, the smaller last ones included, must
    split evenly between them; a run whose batches do not stops here. On the
    other backends it does nothing: TensorFlow traces its steps during the
    first epoch, which the benchmarks report apart from the later epochs.
    """
    if keras.backend.backend() != "jax":
        return 0.0
    x_val, y_val = validation_data
    distribution = keras.distribution.distribution()
    devices = len(distribution.device_mesh.devices.flatten()) if distribution else 1
    uneven = sorted({batch_size, len(x) % batch_size, len(x_val) % batch_size} - {0})
    if any(size % devices for size in uneven):
        raise UserError(
            f"batches of {', '.join(map(str, uneven))} examples do not split evenly over {devices} devices; "
            f"choose a --batch_size that divides by {devices} and leaves last batches that do too"
        )
    start = time.perf_counter()
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    state = model.variables + model.optimizer.variables
    saved = [keras.ops.convert_to_numpy(v.value) for v in state]
    shuffle_state = np.random.get_state()  # fit shuffles with NumPy's global generator
    # One short fit through the same code path meets every batch shape.
    n, n_val = batch_size + len(x) % batch_size, batch_size + len(x_val) % batch_size
    model.fit(x[:n], y[:n], batch_size, validation_data=(x_val[:n_val], y_val[:n_val]), verbose=0)
    for variable, value in zip(state, saved):
        variable.assign(value)
    np.random.set_state(shuffle_state)
    seconds = time.perf_counter() - start
    print(f"compiled  the training and evaluation steps in {seconds:.1f} s (before the clock starts)")
    return seconds


def _backend_version(backend):
    module = __import__({"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend, backend))
    return getattr(module, "__version__", "")


def _gpus(backend):
    """Names of the visible GPUs, and whether all of them compute in bfloat16."""
    if backend == "tensorflow":
        import tensorflow as tf

        devices = tf.config.list_physical_devices("GPU")
        details = [tf.config.experimental.get_device_details(d) for d in devices]
        names = [d.get("device_name", "GPU") for d in details]
        bf16 = all(d.get("compute_capability", (0, 0)) >= (8, 0) for d in details)
        return names, bf16
    if backend == "jax":
        import jax

        devices = [d for d in jax.devices() if d.platform == "gpu"]
        names = [d.device_kind for d in devices]
        bf16 = all(float(getattr(d, "compute_capability", "0")) >= 8 for d in devices)
        return names, bf16
    if backend == "torch":
        import torch

        count = torch.cuda.device_count()
        names = [torch.cuda.get_device_name(i) for i in range(count)]
        return names, count > 0 and torch.cuda.is_bf16_supported()
    return [], False


def _data_parallel_scope(backend, num_gpus):
    """Data-parallel training through the backend's own API: the scope to
    build the model in, and a few words on what it does ("" for one device).

    Every device holds a copy of the weights and takes an equal share of each
    batch, so the batch size must divide by the number of devices.
    """
    if backend == "jax":
        import jax

        # All the GPUs, or the CPU split into several devices with
        # XLA_FLAGS=--xla_force_host_platform_device_count=N.
        devices = jax.devices()
        if len(devices) < 2:
            return contextlib.nullcontext(), ""
        # Keras' distribution API shards each batch over the devices and
        # replicates the weights; it applies to every model built afterwards.
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        return contextlib.nullcontext(), f"data-parallel over {len(devices)} devices (keras.distribution)"
    if backend == "tensorflow":
        import tensorflow as tf

        if num_gpus > 1 or (num_gpus == 0 and len(tf.config.list_logical_devices("CPU")) > 1):
            # MirroredStrategy keeps a copy of the model on each GPU (or
            # logical CPU) and splits every batch between them.
            devices = [d.name for d in tf.config.list_logical_devices("GPU" if num_gpus > 1 else "CPU")]
            strategy = tf.distribute.MirroredStrategy(devices)
        else:
            return contextlib.nullcontext(), ""
        name = type(strategy).__name__
        return strategy.scope(), f"data-parallel over {strategy.num_replicas_in_sync} devices ({name})"
    if num_gpus > 1:
        print(f"note: the {backend} backend trains on one GPU here; use jax or tensorflow for {num_gpus}")
    return contextlib.nullcontext(), ""
