import contextlib
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from common import UserError, device

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cpu_setup_prints_backend_devices_and_precision(capsys):
    scope = device.setup(seed=0)
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"backend   {keras.backend.backend()} ")
    assert "devices CPU" in line and "precision float32" in line
    assert keras.mixed_precision.global_policy().name == "float32"
    # One device: no data parallelism, and a scope that changes nothing.
    assert "data-parallel" not in line
    assert isinstance(scope, contextlib.nullcontext)


@pytest.mark.parametrize("bfloat16, policy", [(True, "mixed_bfloat16"), (False, "mixed_float16")])
def test_a_gpu_computes_in_bfloat16_where_it_can_and_else_in_float16(monkeypatch, capsys, bfloat16, policy):
    monkeypatch.setattr(device, "_gpus", lambda backend: (["NVIDIA H100 80GB HBM3"], bfloat16))
    try:
        device.setup(seed=0)
        assert keras.mixed_precision.global_policy().name == policy
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert f"devices 1 x NVIDIA H100 80GB HBM3 | precision {policy}" in capsys.readouterr().out


def test_bfloat16_needs_compute_capability_8_on_every_gpu(monkeypatch):
    import jax

    class Gpu:
        platform, device_kind = "gpu", "a GPU"

        def __init__(self, capability):
            self.compute_capability = capability

    for capabilities, bfloat16 in ((["9.0"], True), (["8.0", "8.6"], True), (["8.0", "7.5"], False), (["7.0"], False)):
        monkeypatch.setattr(jax, "devices", lambda: [Gpu(c) for c in capabilities])
        assert device._gpus("jax") == (["a GPU"] * len(capabilities), bfloat16), capabilities
    # PyTorch's own test, torch.cuda.is_bf16_supported(), says yes where it
    # only emulates bfloat16 (a T4 or V100), and asks the first GPU only.
    import torch

    for capabilities, bfloat16 in (([(9, 0)], True), ([(8, 0), (8, 6)], True), ([(8, 0), (7, 5)], False), ([(7, 0)], False)):
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(capabilities))
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "a GPU")
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: capabilities[i])
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
        assert device._gpus("torch") == (["a GPU"] * len(capabilities), bfloat16), capabilities


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


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="only TensorFlow feeds arrays through tf.data")
def test_on_tensorflow_the_arrays_go_through_tf_data_without_autotuning(monkeypatch):
    # Autotuning made dropping an epoch's iterator wait for seconds (common/device.py).
    from keras.src.trainers.data_adapters import array_data_adapter

    adapter = array_data_adapter.ArrayDataAdapter
    device.setup(seed=0)
    wrapped = adapter.get_tf_dataset
    device.setup(seed=0)
    assert adapter.get_tf_dataset is wrapped  # A second setup does not wrap it again.
    x, y = np.arange(20, dtype="float32").reshape(10, 2), np.arange(10, dtype="float32")
    dataset = adapter(x, y, batch_size=4, shuffle=True).get_tf_dataset()
    assert dataset.options().autotune.enabled is False
    # Every example, once per epoch, in batches of 4, 4 and 2.
    batches = [(bx.numpy(), by.numpy()) for bx, by in dataset]
    assert [len(by) for _, by in batches] == [4, 4, 2]
    assert sorted(np.concatenate([by for _, by in batches])) == list(range(10))
    # And fit feeds the model through that pipeline.
    built = []
    monkeypatch.setattr(adapter, "get_tf_dataset", lambda self: built.append(self) or wrapped(self))
    model = keras.Sequential([keras.Input(shape=(2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert built


def _run_on(backend, code):
    """Runs `code` in a Python process on `backend`; returns what it printed."""
    pytest.importorskip(backend)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
        env={**os.environ, "KERAS_BACKEND": backend}, cwd=_REPO,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _run_on_jax(code):
    return _run_on("jax", code)


_SAME_TRAINING = """
import keras, numpy as np
from common import augment, data, device

def train(ahead):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1), dtype="uint8"), keras.layers.Rescaling(1 / 255), augment.RandomShift(1),
        keras.layers.Flatten(), keras.layers.Dropout(0.3), keras.layers.Dense(3, activation="softmax"),
    ])
    model.compile("adam", "categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (70, 8, 8, 1)).astype("uint8")
    y = keras.utils.to_categorical(rng.integers(0, 3, 70), 3)
    if ahead:
        numpy_state = np.random.get_state()[1].copy()
        assert device.compile_ahead(model, x, y, 16, (x[:30], y[:30])) > 0
        assert model.train_function is not None, "no training step was compiled"
        assert np.array_equal(np.random.get_state()[1], numpy_state), "NumPy's generator moved"
    # As the scripts train: shuffled, each epoch in an order of the seed and the epoch.
    batches = data.ShuffledBatches(x, y, 16, seed=0)
    model.fit(batches.data, batch_size=16, epochs=2, validation_data=(x[:30], y[:30]), callbacks=[batches],
              verbose=0, shuffle=False)
    return model.get_weights()

plain, ahead = train(False), train(True)
print("same" if all(np.array_equal(p, q) for p, q in zip(plain, ahead)) else "different")
"""


@pytest.mark.slow
def test_compile_ahead_on_jax_leaves_training_unchanged():
    # JAX compiles each batch shape once; compiling ahead runs the steps and
    # must then put every variable and generator back as it was.
    stdout = _run_on_jax(_SAME_TRAINING)
    assert stdout.splitlines()[-1] == "same"
    assert "compiled  the training and evaluation steps" in stdout


_RESUMED = """
import keras, numpy as np
from common import data

rng = np.random.default_rng(0)
x = rng.normal(size=(40, 4)).astype("float32")
y = keras.utils.to_categorical(rng.integers(0, 3, 40), 3)

def train(feed, resume_after=None):
    # Three epochs, or `resume_after` of them and then the rest in a new fit,
    # as a resumed run does: every generator seeded again as a new process
    # seeds it, the model's and optimizer's state carried over.
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile("sgd", "categorical_crossentropy")
    for first, last in [(0, resume_after), (resume_after, 3)] if resume_after else [(0, 3)]:
        keras.utils.set_random_seed(0)
        if feed == "ShuffledBatches":
            batches = data.ShuffledBatches(x, y, 8, seed=0)
            model.fit(batches.data, shuffle=False, initial_epoch=first, epochs=last, callbacks=[batches], verbose=0)
        else:
            model.fit(x, y, 8, initial_epoch=first, epochs=last, verbose=0)
    return model.get_weights()

for feed in ("keras", "ShuffledBatches"):
    same = all(np.array_equal(a, b) for a, b in zip(train(feed), train(feed, resume_after=1)))
    print(feed, "same" if same else "different")
"""


@pytest.mark.parametrize("backend", ["jax", pytest.param("torch", marks=pytest.mark.slow)])
def test_a_resumed_fit_goes_through_the_orders_of_an_uninterrupted_one(backend):
    # Keras' own shuffling on JAX and PyTorch draws each epoch's order from
    # the backend's seeded generator, so a resumed run took the first
    # epoch's order again. (TensorFlow's took one order for every epoch:
    # test_data.py checks that each epoch has its own.)
    assert _run_on(backend, _RESUMED).splitlines()[-2:] == ["keras different", "ShuffledBatches same"]


_STEPS_IN_ONE_CALL = """
import collections, jax, keras, numpy as np
from common import device

# Counts the calls of the functions that device.py compiles (Keras' own
# step is compiled with the jax.jit it imported before this).
calls = collections.Counter()
jit = jax.jit

def counting_jit(function, *args, **kwargs):
    compiled_function = jit(function, *args, **kwargs)

    def call(*call_args):
        calls[function.__name__] += 1
        return compiled_function(*call_args)

    return call

jax.jit = counting_jit
compiled = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, seconds, **_: compiled.append(event) if event.endswith("backend_compile_duration") else None
)

def train(steps):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1), dtype="uint8"), keras.layers.Rescaling(1 / 255),
        keras.layers.Flatten(), keras.layers.Dropout(0.3), keras.layers.Dense(3, activation="softmax"),
    ])
    model.compile("adam", "categorical_crossentropy", metrics=["accuracy"], steps_per_execution=steps)
    rng = np.random.default_rng(0)
    # 4 full batches of 16 and one of 6 per epoch.
    x = rng.integers(0, 256, (70, 8, 8, 1)).astype("uint8")
    y = keras.utils.to_categorical(rng.integers(0, 3, 70), 3)
    device.compile_ahead(model, x, y, 16, (x[:30], y[:30]))
    compiled.clear()
    calls.clear()
    history = model.fit(x, y, 16, epochs=2, validation_data=(x[:30], y[:30]), verbose=0, shuffle=False)
    return model.get_weights(), history.history, len(compiled), calls["several"], calls["train_step"]

def report(label, steps):
    weights, scanned_history, compiles, scanned, alone = train(steps)
    same = all(np.allclose(p, q, rtol=1e-6, atol=1e-7) for p, q in zip(one_by_one, weights))
    close = all(np.allclose(history[k], scanned_history[k], rtol=1e-6) for k in history)
    print(label, steps, "same" if same and close else "different", "compiled while training:", compiles,
          "calls of several steps:", scanned, "of one:", alone)

one_by_one, history, *_ = train(1)
report("cpu", 2)
cpu = jax.default_backend
jax.default_backend = lambda: "gpu"  # What compile_ahead does on an accelerator, run on the CPU.
for steps in (2, 3):
    report("gpu", steps)
jax.default_backend = cpu
"""


@pytest.mark.slow
def test_several_steps_per_call_on_jax_train_as_one_step_at_a_time():
    # With steps_per_execution=2 an epoch's 4 full batches run as two
    # scanned calls, then the small last batch alone; with 3, as one scanned
    # call, one step alone and the small batch alone. Both must train as
    # Keras' one step per call does, and compile_ahead must have compiled
    # every call they make.
    # On a CPU Keras' own calls stay: XLA ran cifar10_cnn.py's convolutions
    # in a loop over 20 times slower than one call at a time.
    lines = [line for line in _run_on_jax(_STEPS_IN_ONE_CALL).splitlines() if not line.startswith("compiled ")]
    assert lines[-3:] == [
        "cpu 2 same compiled while training: 0 calls of several steps: 0 of one: 0",
        "gpu 2 same compiled while training: 0 calls of several steps: 4 of one: 2",
        "gpu 3 same compiled while training: 0 calls of several steps: 2 of one: 4",
    ]


_DEVICE_BATCHES = """
import jax, keras, numpy as np
from common import data, device

compiled = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, seconds, **_: compiled.append(event) if event.endswith("backend_compile_duration") else None
)
keras.utils.set_random_seed(0)
model = keras.Sequential([
    keras.Input((8, 8, 1), dtype="uint8"), keras.layers.Rescaling(1 / 255),
    keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax"),
])
model.compile("adam", "categorical_crossentropy", steps_per_execution=2)
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (70, 8, 8, 1)).astype("uint8")
y = keras.utils.to_categorical(rng.integers(0, 3, 70), 3)
device.compile_ahead(model, x, y, 16, (x[:30], y[:30]))
batches = data.ShuffledBatches(x, y, 16, seed=0, resident=True)

# What fit's iterator hands on to the training steps, batch by batch.
from keras.src.trainers.data_adapters import data_adapter_utils
handed_on = set()
get_jax_iterator = data_adapter_utils.get_jax_iterator

def recording(iterable):
    for batch in get_jax_iterator(iterable):
        kind = "device array" if isinstance(batch[0], jax.Array) else type(batch[0]).__name__
        handed_on.add((kind, str(batch[0].dtype), len(batch[0])))
        yield batch

data_adapter_utils.get_jax_iterator = recording
compiled.clear()
before = model.get_weights()
# The batch size is for the validation data here, as in the scripts.
history = model.fit(batches.data, None, 16, epochs=2, validation_data=(x[:30], y[:30]), callbacks=[batches],
                    verbose=0, shuffle=False)
changed = not any(np.array_equal(p, q) for p, q in zip(before, model.get_weights()))
print("batches:", sorted(handed_on))
print("steps compiled while training:", len(compiled), "weights changed:", changed, "epochs:", len(history.history["loss"]))
"""


def test_device_batches_on_jax_train_with_the_steps_compiled_ahead():
    # fit hands the batches gathered on the device to the training steps as
    # they are; they have the shapes and types of those fit slices from the
    # arrays, so compile_ahead's steps serve them, and DeviceBatches compiles
    # its own gathers before training.
    lines = [line for line in _run_on_jax(_DEVICE_BATCHES).splitlines() if not line.startswith("compiled ")]
    assert lines[-2:] == [
        # Device arrays (not NumPy's), bytes, full batches and the last 6.
        "batches: [('device array', 'uint8', 6), ('device array', 'uint8', 16)]",
        "steps compiled while training: 0 weights changed: True epochs: 2",
    ]


def test_compile_ahead_on_tensorflow_leaves_training_unchanged():
    # TensorFlow traces its steps in their first call; tracing ahead runs
    # them on a few batches and must then put every variable back.
    stdout = _run_on("tensorflow", _SAME_TRAINING)
    assert stdout.splitlines()[-1] == "same"


_PREDICT_OVER_THREE_DEVICES = """
import keras, numpy as np
from common import device

device.setup(seed=0)  # Three CPU devices: data-parallel through keras.distribution.
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
x = np.random.default_rng(0).normal(size=(10, 4)).astype("float32")
kernel, bias = model.get_weights()
logits = x @ kernel + bias
expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
predicted = device.predict(model, x, batch_size=6)
print("device.predict:", predicted.shape, np.allclose(predicted, expected, atol=1e-5))
# Batches of 6, 4: the last one does not split over three devices.
try:
    model.predict(x, batch_size=6, verbose=0)
    print("plain predict: worked")
except Exception as error:
    print("plain predict: failed")
"""


def test_predict_over_devices_that_the_last_batch_does_not_split_over():
    # The test set's last batch was not checked before training: the run
    # trained, then stopped with a traceback as it scored the test set.
    pytest.importorskip("jax")
    result = subprocess.run(
        [sys.executable, "-c", _PREDICT_OVER_THREE_DEVICES], capture_output=True, text=True, timeout=300, cwd=_REPO,
        env={**os.environ, "KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=3"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "data-parallel over 3 devices" in result.stdout
    assert "plain predict: failed" in result.stdout  # What the scripts met, Keras' own.
    assert "device.predict: (10, 3) True" in result.stdout


def test_each_process_takes_an_equal_share_of_the_examples(monkeypatch):
    # Over three machines, 3,001 examples: 1,000 each and one left over, so that
    # every process takes as many steps as the others (uneven shares hang a run).
    monkeypatch.setattr(device, "processes", lambda: 3)
    shares = []
    for index in range(3):
        monkeypatch.setattr(device, "process_index", lambda index=index: index)
        shares.append(device.process_share(np.arange(3001)))
    assert [len(share) for share in shares] == [1000, 1000, 1000]
    assert sorted(np.concatenate(shares)) == list(range(3000))
    assert list(shares[1][:3]) == [1, 4, 7]


def test_batches_are_checked_at_the_sizes_that_come(monkeypatch):
    # A set smaller than a batch comes in one batch of its own size: 100
    # training and 10 validation examples in batches of 129 split evenly over
    # two devices, but were refused for the batch of 129, which never comes.
    monkeypatch.setattr(device, "_devices", lambda model: 2)
    device.check_batches(None, 129, 100, 10)
    with pytest.raises(UserError, match="batches of 2, 3, 7 examples do not split evenly over 2 devices"):
        device.check_batches(None, 7, 100, 10)
