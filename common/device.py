"""Device and precision setup: use whatever accelerator is there, else the CPU.

Nothing here imports a backend at module level, so the scripts run on
TensorFlow, JAX or PyTorch (`KERAS_BACKEND=jax python mnist_mlp.py`) with only
that backend installed.
"""

import contextlib
import itertools
import os
import platform
import time

import keras
import numpy as np

from common import UserError, reason


def setup(seed):
    """Seeds every generator, picks the precision and prints what runs where.

    On a GPU the global dtype policy becomes mixed precision (bfloat16 where
    the card has it, as on Ampere and newer; float16 otherwise) and Keras
    compiles steps with XLA by default (on TensorFlow with one GPU only;
    never for a model with a layer XLA cannot compile, such as
    RandomRotation). With several devices it trains data-parallel through
    the backend's own API (docs/devices.md). It returns the scope in which
    the model must be built and compiled: on TensorFlow with several
    devices MirroredStrategy's, else one that does nothing (JAX's data
    parallelism is set here, for every model built). On JAX, with the
    KERAS_DISTRIBUTION_* variables set, this process first joins the others
    of a run over several machines.
    """
    backend = keras.backend.backend()
    if backend not in ("tensorflow", "jax", "torch"):
        # Keras' numpy and openvino backends run models but cannot train them.
        raise UserError(
            f"the Keras backend {backend} (from KERAS_BACKEND or ~/.keras/keras.json) cannot train a model; "
            "use tensorflow (the default), jax or torch"
        )
    num_processes = _join_processes(backend)
    if backend == "tensorflow":
        _turn_off_tf_data_autotuning()
    keras.utils.set_random_seed(seed)
    gpus, bfloat16 = _gpus(backend)
    if gpus:
        policy = "mixed_bfloat16" if bfloat16 else "mixed_float16"
    else:
        policy = "float32"
    keras.mixed_precision.set_global_policy(policy)
    scope, parallel = _data_parallel_scope(backend, len(gpus), num_processes)
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
    data. Running each step once, on batches from `data.ShuffledBatches`
    as the scripts' `fit` gets them, compiles it; the model's and the
    optimizer's variables (random-generator states included) are then put
    back, so training starts from the same state, and a `fit` given
    `ShuffledBatches`, as the scripts' is, trains the same to the digit as
    without it. (Given arrays, Keras' own shuffling on JAX draws an order
    more from NumPy's generator in the first `fit` of a model not yet built,
    to build it: the seed baselines in benchmarks/ train on other orders
    with it than without it.) With several devices, a run whose batches do
    not split evenly between them stops here (`check_batches`), so call it
    before the run folder is made.

    TensorFlow traces its steps into graphs in their first call, whatever
    the batch size; the same short fit does that here. (On a 2-core CPU, a
    one-epoch `mnist_cnn.py` run took 7.0 s in `fit` without it, and 4.1 s
    after 1.8 s here.) PyTorch runs the steps as they come, so there it does
    nothing.

    A model compiled with `steps_per_execution=N` (N > 1) trains N steps per
    call on TensorFlow, in one compiled loop. Keras 3.15 on JAX runs them as
    N calls of the compiled step, so on an accelerator they become one
    compiled call too (`_steps_in_one_call`), compiled ahead with the rest;
    on a CPU, with several devices, or with a model compiled to run eagerly,
    Keras' N calls stay.
    """
    backend = keras.backend.backend()
    if backend not in ("jax", "tensorflow"):
        return 0.0
    x_val, y_val = validation_data
    distribution = keras.distribution.distribution()
    steps = model.steps_per_execution
    in_one_call = False  # whether a call of `steps` batches is compiled apart from a single step
    if backend == "jax" and steps > 1 and distribution is None and model.jit_compile and not model.run_eagerly:
        import jax

        # Not on a CPU: XLA's CPU backend ran a loop of convolutions over 20
        # times slower than the same steps one call at a time (cifar10_cnn.py:
        # 134 s an epoch instead of 5; docs/measurements.md), and unrolled,
        # the loop compiled for longer and gained nothing. There Keras' N calls stay.
        in_one_call = jax.default_backend() != "cpu"
        if in_one_call:
            model.train_function = _steps_in_one_call(model, steps)
    elif backend == "tensorflow":
        in_one_call = steps > 1  # TensorFlow's compiled loop
    check_batches(model, batch_size, len(x), len(x_val))
    # One short fit through the same code path meets every batch shape: a
    # full batch and the smaller last one.
    n, n_val = batch_size + len(x) % batch_size, batch_size + len(x_val) % batch_size
    full_batches = len(x) // batch_size
    if in_one_call and full_batches >= steps:
        # With several steps per call, a call's worth of full batches instead
        # of one, and one more to run alone where an epoch's last call has
        # fewer than N.
        n += batch_size * (steps - 1 + (full_batches % steps != 0))
    from common import data  # (which imports this module)

    start = time.perf_counter()
    with scope_of(model):
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        state = model.variables + model.optimizer.variables
        saved = [v.numpy() for v in state]
        batches = data.ShuffledBatches(x[:n], y[:n], batch_size, seed=0)
        model.fit(
            batches.data, batch_size=batch_size, shuffle=False, validation_data=(x_val[:n_val], y_val[:n_val]),
            callbacks=[batches], verbose=0,
        )
        for variable, value in zip(state, saved):
            variable.assign(value)
    seconds = time.perf_counter() - start
    print(f"compiled  the training and evaluation steps in {seconds:.1f} s (before the clock starts)")
    return seconds


def scope_of(model):
    """The scope to compile, fit or set `model` in after it was built: on
    TensorFlow with several devices, a model compiled again (as
    `transfer_xception.py` does between its phases), and the variables that
    `compile_ahead` makes and puts back, belong to the strategy the model was
    built under and must be handled in its scope. Elsewhere it does nothing."""
    if keras.backend.backend() == "tensorflow":
        return model.distribute_strategy.scope()
    return contextlib.nullcontext()


def check_batches(model, batch_size, *counts):
    """Stops a run over several devices whose batches they cannot share:
    `model` is to be trained in batches of `batch_size` on sets of `counts`
    examples (the training and validation sets).

    Every batch, the smaller last ones included, must split evenly between
    the devices. Keras on JAX refuses one that does not; on TensorFlow
    (MirroredStrategy, two CPU devices) a batch of 7 ended in a traceback
    from the first step ("Inputs to operation AddN ... must have the same
    size and shape"), and a last batch of 1, which leaves one device none,
    in one from `mnist_cnn.py`'s batch normalisation. (`predict` pads what
    it predicts instead.)
    """
    devices = _devices(model)
    # Full batches, where a set holds one, and each set's smaller last batch.
    sizes = {batch_size for count in counts if count >= batch_size} | {count % batch_size for count in counts}
    sizes = sorted(sizes - {0})
    if any(size % devices for size in sizes):
        raise UserError(
            f"batches of {', '.join(map(str, sizes))} examples do not split evenly over {devices} devices; "
            f"choose a --batch_size that divides by {devices} and leaves last batches that do too"
        )


def predict(model, x, batch_size):
    """`model.predict(x)` in batches of `batch_size`, quietly. Over several
    devices every batch, the last one too, must split evenly between them
    (`check_batches`): here the images to predict are padded with copies of
    the first one up to a multiple of the device count, and the predictions
    for the copies dropped."""
    devices = _devices(model)
    count = len(x)
    padding = -count % devices
    if padding:
        x = np.concatenate([x, np.repeat(x[:1], padding, axis=0)])
    return model.predict(x, batch_size=batch_size, verbose=0)[:count]


def _devices(model):
    """How many devices of this process share each batch of `model`'s:
    TensorFlow's MirroredStrategy replicas, or the devices of Keras'
    distribution (JAX) over the processes; else one."""
    if keras.backend.backend() == "tensorflow":
        return model.distribute_strategy.num_replicas_in_sync
    distribution = keras.distribution.distribution()
    return len(distribution.device_mesh.devices.flatten()) // processes() if distribution else 1


def _steps_in_one_call(model, steps):
    """A training function for `fit` on JAX that runs `steps` training steps
    in one compiled call: `jax.lax.scan` repeats Keras' own `train_step` over
    the batches stacked together, so the numbers are those of one step at a
    time, with one call from Python and one dispatch to the device instead
    of `steps`. An epoch's last call, with fewer batches or a smaller last
    batch, runs them one at a time. The batches are still copied to the
    device one by one, as `fit` slices them."""
    import jax

    def several(state, batches):
        stacked = jax.tree.map(lambda *parts: jax.numpy.stack(parts), *batches)

        def one_step(state, batch):
            logs, state = model.train_step(state, batch)
            return state, logs

        state, logs = jax.lax.scan(one_step, state, stacked)
        # Keras' logs are running means over the epoch: the last step's are the latest.
        return jax.tree.map(lambda values: values[-1], logs), state

    # The state is updated in place on the device, as in Keras' own step.
    several = jax.jit(several, donate_argnums=0)
    single = jax.jit(model.train_step, donate_argnums=0)

    def train_function(state, iterator):
        batches = list(itertools.islice(iterator, steps))
        if not batches:
            raise StopIteration  # what Keras' own function does at the end of the data
        shapes = {tuple(part.shape for part in jax.tree.leaves(batch)) for batch in batches}
        if len(batches) == steps and len(shapes) == 1:
            return several(state, batches)
        for batch in batches:
            logs, state = single(state, batch)
        return logs, state

    return train_function


def processes():
    """The number of processes (machines) training together: 1 but in a run
    over several machines (JAX, docs/devices.md, "Several machines")."""
    if keras.backend.backend() != "jax":
        return 1
    import jax

    return jax.process_count()


def process_index():
    """This process's number among those training together, from 0."""
    if processes() == 1:
        return 0
    import jax

    return jax.process_index()


def process_share(x):
    """This process's share of the examples in `x`: all of them, but in a run
    over several machines every Nth one from the process's index on. Every
    process gets the same number (up to N-1 left over are dropped), so that
    they all take the same number of steps together."""
    count = processes()
    if count == 1:
        return x
    return x[process_index() : len(x) - len(x) % count : count]


def local_copy(path):
    """The model saved at `path`, loaded on this process's own device. In a
    run over several machines the outputs of the trained model are spread
    over all of them, so each process scores the test set on such a copy."""
    keras.distribution.set_distribution(None)
    return keras.models.load_model(path, safe_mode=True)


def _join_processes(backend):
    """Joins the other processes of a run over several machines, as the
    KERAS_DISTRIBUTION_* environment variables describe it (JAX only);
    returns the number of processes, 1 when they are not set."""
    if backend == "tensorflow" and os.environ.get("TF_CONFIG"):
        raise UserError(
            "TF_CONFIG is set, but Keras 3 cannot train with TensorFlow's MultiWorkerMirroredStrategy "
            "(keras-team/keras#20585); train over several machines with KERAS_BACKEND=jax and the "
            "KERAS_DISTRIBUTION_* variables (docs/devices.md, \"Several machines\"), or unset TF_CONFIG"
        )
    count = os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", "1")
    # isdecimal, not isdigit: int() refuses digits such as "²".
    if not count.isdecimal() or int(count) < 1:
        raise UserError(f"KERAS_DISTRIBUTION_NUM_PROCESSES={count!r} is not a number of processes; give 1 or more")
    if int(count) == 1:
        return 1
    if backend != "jax":
        raise UserError(
            f"KERAS_DISTRIBUTION_NUM_PROCESSES={count}: training over several machines needs the JAX "
            "backend here; set KERAS_BACKEND=jax on every machine"
        )
    address = os.environ.get("KERAS_DISTRIBUTION_JOB_ADDRESSES", "")
    index = os.environ.get("KERAS_DISTRIBUTION_PROCESS_ID", "")
    if not (address and all(map(_host_and_port, address.split(","))) and index.isdecimal() and int(index) < int(count)):
        raise UserError(
            f"KERAS_DISTRIBUTION_NUM_PROCESSES={count} needs KERAS_DISTRIBUTION_JOB_ADDRESSES (host:port of "
            f"process 0) and KERAS_DISTRIBUTION_PROCESS_ID (0 to {int(count) - 1}) on every machine; "
            f"here they are {address!r} and {index!r}"
        )
    import jax

    # Processes on CPUs exchange their gradients through Gloo (GPUs use NCCL).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        # Reads the three variables and waits until every process has joined.
        keras.distribution.initialize()
    except Exception as error:  # JAX raises several kinds for an unreachable or wrong address.
        raise UserError(
            f"process {index} could not join the others at {address} ({reason(error)}); "
            "check KERAS_DISTRIBUTION_* on every machine"
        ) from None
    return jax.process_count()


def _turn_off_tf_data_autotuning():
    """Makes the tf.data pipelines that `fit`, `evaluate` and `predict` build
    for NumPy arrays run without tf.data's autotuning thread.

    On TensorFlow, Keras feeds arrays to the model through a tf.data pipeline
    and makes a new iterator over it every epoch. With TensorFlow 2.21 on
    this project's CPU, dropping the previous epoch's iterator waited for its
    autotuning thread to wake up: in up to five epochs of eight, the first
    step came 3 to 4 s late in runs on 15,000 images, about 20 s late on
    45,000, where a step takes 0.2 s (docs/measurements.md, "TensorFlow's waits").
    With autotuning off, the pipeline's parallel slicing uses one thread per
    core, and no epoch waits. Keras has no setting for this, so its array
    adapter is wrapped here; the other backends read the arrays without
    tf.data.
    """
    import tensorflow as tf

    try:  # Keras' internals: a later Keras may move them.
        from keras.src.trainers.data_adapters import array_data_adapter

        adapter = array_data_adapter.ArrayDataAdapter
        build = adapter.get_tf_dataset
    except (ImportError, AttributeError):
        print("note: this Keras version's array adapter was not found; tf.data autotuning stays on")
        return
    if getattr(build, "autotuning_off", False):
        return

    def get_tf_dataset(self):
        options = tf.data.Options()
        options.autotune.enabled = False
        return build(self).with_options(options)

    get_tf_dataset.autotuning_off = True
    adapter.get_tf_dataset = get_tf_dataset


def _host_and_port(address):
    """Whether `address` reads as host:port, as gRPC needs: it ends the
    process with a segmentation fault for a port it cannot read."""
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdecimal() and 0 < int(port) < 65536


def _backend_version(backend):
    module = __import__({"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend, backend))
    return getattr(module, "__version__", "")


def gpu_names():
    """The names of the GPUs the backend sees: none on a CPU."""
    return _gpus(keras.backend.backend())[0]


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

        try:
            devices = [d for d in jax.devices() if d.platform == "gpu"]
        except (RuntimeError, AssertionError) as error:  # A platform in JAX_PLATFORMS that this machine lacks.
            raise UserError(
                f"JAX could not start its devices ({reason(error)}); check JAX_PLATFORMS and XLA_FLAGS, "
                "or unset them"
            ) from None
        names = [d.device_kind for d in devices]
        bf16 = all(float(getattr(d, "compute_capability", "0")) >= 8 for d in devices)
        return names, bf16
    if backend == "torch":
        import torch

        count = torch.cuda.device_count()
        names = [torch.cuda.get_device_name(i) for i in range(count)]
        # Not torch.cuda.is_bf16_supported(), which also says yes where
        # bfloat16 is only emulated (no tensor cores), and asks one GPU only.
        bf16 = all(torch.cuda.get_device_capability(i) >= (8, 0) for i in range(count))
        return names, bf16
    return [], False


def _data_parallel_scope(backend, num_gpus, num_processes):
    """Data-parallel training through the backend's own API: the scope to
    build the model in, and a few words on what it does ("" for one device).

    Every device holds a copy of the weights and takes an equal share of each
    batch, so the batch size must divide by the number of devices.
    """
    if backend == "jax":
        import jax

        # All the GPUs (of every process), or the CPU split into several
        # devices with XLA_FLAGS=--xla_force_host_platform_device_count=N.
        devices = jax.devices()
        if len(devices) < 2:
            return contextlib.nullcontext(), ""
        # Keras' distribution API shards each batch over the devices and
        # replicates the weights; it applies to every model built afterwards.
        distribution = keras.distribution.DataParallel(devices=devices)
        where = ""
        if num_processes > 1:
            # Each process passes its own batches, its share of every global
            # batch: the scripts' data is already split (process_share).
            distribution.auto_shard_dataset = False
            where = f" in {num_processes} processes"
        keras.distribution.set_distribution(distribution)
        return contextlib.nullcontext(), f"data-parallel over {len(devices)} devices{where} (keras.distribution)"
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
