"""What the split does to transfer_xception.py's test accuracy, and what its
phase 2 (fine-tuning) adds to phase 1, over several splits of one photo folder.

    python -m benchmarks.transfer_phases \\
        --data_dir=../shared/data/flowers/flower_photos_first250perclass.tgz \\
        --weights=../shared/data/keras_weights/xception_weights_tf_dim_ordering_tf_kernels_notop.h5

One run of the script is one split: on the flowers subset its test set is 250
photos, so one photo is 0.4 points, and which photos land in it moves the
accuracy by more than most changes of method. Running the script once per
split would take hours on a CPU, so this benchmark runs the frozen part of
Xception (blocks 1 to 12) once over every photo and its mirror image, keeps
block 12's activations, and then for each split seed:

- phase 1 as the script trains it: the head on the averaged features of
  block 14 alone, and of blocks 13 and 14 (the script's `block13_features`);
- phase 2 for the first `fine_tune_splits` seeds: the exit flow (blocks 13
  and 14, as the script's default `fine_tune_from=13` unfreezes it) and the
  head train together on block 12's activations, at each of
  `fine_tune_learning_rates`, with the validation and test accuracy after
  every epoch and the epoch that early stopping would keep.

Phase 2 here sees flips only; the script's phase 2 also rotates and zooms the
photos, which needs the whole base every step. Block 12's activations are
kept as float16 (1.3 GB for the flowers subset at 299x299), and both phases'
features come from them, so the heads differ from the script's by that
rounding as well as by their random start. The results go to
`out_dir/cpu-<start time>-transfer_phases.md` (the tables, at the end) and
`.jsonl` (each head's figures as soon as it is scored, so a run stopped
early keeps them); `gpu-...` where a GPU ran them.
"""

import datetime
import json
import math
import os
import statistics
import tempfile
import time

import keras
import numpy as np
from keras import layers

import common.config
from benchmarks import kept_epoch, new_results_file, processor
from common import UserError, data, device, photos, pretrained, reason, schedules

# The script's defaults, and what the benchmark varies.
data_dir = ""  # a folder of class folders, or a .tgz of one (the benchmark makes its own splits)
weights = "imagenet"  # "imagenet" (Keras download), a local .h5 weight file, or "none", as in transfer_xception.py
image_size = 299  # photos are resized to image_size x image_size (71 at least)
epochs = 30  # epochs of phase 1 (the head alone), as in the script
learning_rate = 3e-3  # phase 1: peak of the warm-up + cosine schedule
dropout = 0.2  # fraction of the features dropped while training the head
label_smoothing = 0.1  # as in the script, in both phases
batch_size = 32  # photos per training step, in both phases
validation_split = 0.15  # fraction of each class held out for validation, in every split
test_split = 0.2  # fraction of each class held out for the test, in every split
splits = 6  # split seeds 0, 1, ... for phase 1
fine_tune_splits = 3  # the first this many seeds also get phase 2
fine_tune_learning_rates = "1e-4,1e-5"  # the script's default (1e-4) and 10x smaller
fine_tune_epochs = 5  # epochs of phase 2 at each learning rate (all run; early stopping's pick is computed)
patience = 3  # phase 2's early stopping, as in the script
out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")  # where the tables go; default benchmarks/results/
config = common.config.apply_overrides(globals())

try:
    rates = [float(rate) for rate in fine_tune_learning_rates.split(",")]
    if not all(0 < rate < math.inf for rate in rates):
        raise ValueError
except ValueError:
    raise UserError(
        f"--fine_tune_learning_rates={fine_tune_learning_rates!r} must be numbers above 0 separated by commas, e.g. 1e-4,1e-5"
    ) from None
if splits < 1:
    raise UserError(f"--splits={splits} is not allowed: give 1 or more splits to score")
# Checked here, before the photos load and Xception runs over them: every split needs a test set.
if test_split == 0:
    raise UserError("--test_split=0 leaves no test photos to score the splits on; give a test_split above 0, e.g. --test_split=0.2")
photos.check_fractions(validation_split, test_split)
if not 0 <= fine_tune_splits <= splits:
    raise UserError(f"--fine_tune_splits={fine_tune_splits} must be between 0 and --splits={splits}")
if fine_tune_splits and not fine_tune_epochs:
    raise UserError("--fine_tune_epochs=0 leaves phase 2 nothing to measure; give 1 or more, or --fine_tune_splits=0")
if image_size < 71:
    raise UserError(f"--image_size={image_size} is too small: Xception needs at least 71 pixels")
# The first results are written once Xception has run over every photo (minutes, hours on a CPU): a folder
# they cannot go to stops the run now.
try:
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryFile(dir=out_dir):
        pass
except OSError as error:
    raise UserError(f"cannot write to --out_dir={out_dir} ({reason(error)}); give a folder that can be written") from None

pretrained.check_weights(weights, "Xception")  # before the photos load, which takes minutes

device.setup(0)
gpus = device.gpu_names()  # The results file is named after them, as the benchmark's suites' are.
started = datetime.datetime.now()


xception = None  # Built by before_decoding.


def before_decoding(found):
    """What load_photos runs once it has listed the folder and before it
    decodes the photos (minutes): the benchmark makes its own splits, so a
    folder of train/ and test/ stops it here, and Xception is built here, so
    that a weight file of another network stops it before the wait too."""
    global xception
    if "all" not in found:
        raise UserError(f"{data_dir} is already split into train/ and test/; give one folder of class folders")
    xception = pretrained.pretrained_base(keras.applications.Xception, weights, input_shape=(image_size, image_size, 3))


everything = photos.load_photos(data_dir, image_size, before_decoding=before_decoding)["all"]
classes = everything.classes
print(f"data      {len(everything.y)} photos in {len(classes)} classes")
# The splits index the photos. Every seed takes as many photos of each class
# for each split, so the first split refuses a class too small to split
# now, before Xception runs over every photo (minutes, hours on a CPU).
everything_indexed = photos.Photos(np.arange(len(everything.y)), everything.y, classes, 0)
photos.split_photos(everything_indexed, validation_split, test_split, 0)

block12 = xception.get_layer("block13_sepconv1_act").input  # block 12's output: the exit flow's input
block13 = xception.get_layer("block13_sepconv2_bn").output
front = keras.Model(xception.input, block12)
exit_flow = keras.Model(block12, [block13, xception.output])
pretrained_exit_flow = exit_flow.get_weights()


def in_chunks(function, x, size=256):
    """function() over x in chunks, so that only one chunk is ever float32."""
    return np.concatenate([function(x[i : i + size]) for i in range(0, len(x), size)])


def run_front(x):
    pixels = keras.applications.xception.preprocess_input(x.astype("float32"))
    return front.predict(pixels, batch_size=batch_size, verbose=0).astype("float16")


def pooled_features(activations):
    """Blocks 13 and 14's feature maps, each averaged over the image."""
    maps = exit_flow.predict(activations.astype("float32"), batch_size=batch_size, verbose=0)
    return np.concatenate([m.mean(axis=(1, 2)) for m in maps], axis=1)


start = time.perf_counter()
# views[0]: the photos; views[1]: their mirror images.
views = [in_chunks(run_front, everything.x), in_chunks(run_front, everything.x[:, :, ::-1])]
features = [in_chunks(pooled_features, v) for v in views]
print(f"features  blocks 1 to 12 over {2 * len(everything.y)} images in {time.perf_counter() - start:.0f} s")
block13_channels = block13.shape[-1]
loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)


def accuracy(model, x, labels):
    return float(np.mean(model.predict(x, batch_size=batch_size, verbose=0).argmax(axis=1) == labels))


def train_head(columns, split, seed):
    """Phase 1 as the script runs it: the head on the features of the
    training photos and their mirror images, warm-up + cosine Adam."""
    train = split["train"].x
    x = np.concatenate([features[0][train][:, columns], features[1][train][:, columns]])
    y = keras.utils.to_categorical(np.concatenate([everything.y[train]] * 2), len(classes))
    keras.utils.set_random_seed(seed)
    head = keras.Sequential(
        [keras.Input(shape=(x.shape[1],)), layers.Dropout(dropout), layers.Dense(len(classes), activation="softmax")]
    )
    steps = epochs * math.ceil(len(x) / batch_size)
    head.compile(optimizer=keras.optimizers.Adam(schedules.warmup_cosine(learning_rate, steps)), loss=loss)
    batches = data.ShuffledBatches(x, y, batch_size, seed)
    head.fit(batches.data, shuffle=False, epochs=epochs, callbacks=[batches], verbose=0)
    scores = {name: accuracy(head, features[0][split[name].x][:, columns], everything.y[split[name].x])
              for name in ("validation", "test")}
    return head, scores


def fine_tune(head, split, rate, seed):
    """Phase 2: the exit flow and the head train together on block 12's
    activations of the training photos, each epoch a photo or its mirror
    image at random. Returns the validation and test accuracy per epoch."""
    exit_flow.set_weights(pretrained_exit_flow)
    # As in the script: every layer from the first of block 13 on trains
    # (block 13's shortcut convolution comes later and trains too).
    first = next(i for i, layer in enumerate(exit_flow.layers) if layer.name.startswith("block13_"))
    for i, layer in enumerate(exit_flow.layers):
        # Batch normalisation frozen, so in inference mode, as in the script.
        layer.trainable = i >= first and not isinstance(layer, layers.BatchNormalization)
    inputs = keras.Input(shape=exit_flow.input.shape[1:])
    maps = exit_flow(inputs)
    pooled = layers.Concatenate()([layers.GlobalAveragePooling2D()(m) for m in maps])
    model = keras.Model(inputs, head(pooled))
    model.compile(optimizer=keras.optimizers.Adam(rate), loss=loss)
    train, rng = split["train"].x, np.random.default_rng(seed)
    steps = math.ceil(len(train) / batch_size)

    def batches():
        while True:
            order, mirrored = rng.permutation(train), rng.random(len(views[0])) < 0.5
            for step in range(steps):
                chosen = order[step * batch_size : (step + 1) * batch_size]
                x = np.where(mirrored[chosen, None, None, None], views[1][chosen], views[0][chosen])
                yield x.astype("float32"), keras.utils.to_categorical(everything.y[chosen], len(classes))

    def score(name):
        def predicted(chunk):
            return model.predict(chunk.astype("float32"), batch_size=batch_size, verbose=0).argmax(axis=1)

        return float(np.mean(in_chunks(predicted, views[0][split[name].x]) == everything.y[split[name].x]))

    history, generator = [], batches()
    for _ in range(fine_tune_epochs):
        model.fit(generator, steps_per_epoch=steps, epochs=1, shuffle=False, verbose=0)  # batches come shuffled
        history.append({"validation": score("validation"), "test": score("test")})
    return history


stem = None  # The results file's, once the first head is scored.
records = []


def keep(record):
    """Adds a head's figures to the .jsonl at once: a run stopped after hours
    keeps what it scored (the table is written at the end)."""
    global stem
    if stem is None:
        stem, raw = new_results_file(os.path.join(out_dir, f"{'gpu' if gpus else 'cpu'}-{started:%Y%m%d-%H%M%S}-transfer_phases"))
        raw.close()
    with open(stem + ".jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    records.append(record)
    common.on_interrupt = f"the heads scored so far are in {stem}.jsonl; the table is written only at the end"


heads = {"block 14": slice(block13_channels, None), "blocks 13+14": slice(None)}
for seed in range(splits):
    split = photos.split_photos(everything_indexed, validation_split, test_split, seed)
    trained = {}
    for name, columns in heads.items():
        trained[name], scores = train_head(columns, split, seed)
        keep({"split": seed, "method": f"phase 1, {name}", **scores})
        print(f"split {seed}  phase 1, head on {name}: val {scores['validation']:.4f} test {scores['test']:.4f}", flush=True)
    if seed >= fine_tune_splits:
        continue
    head = trained["blocks 13+14"]  # the script's default head, fine-tuned below
    phase1 = head.get_weights()
    for rate in rates:
        head.set_weights(phase1)
        start = time.perf_counter()
        history = fine_tune(head, split, rate, seed)
        kept = kept_epoch([epoch["validation"] for epoch in history], patience)
        keep({"split": seed, "method": f"phase 2, lr {rate:g}", "kept_epoch": kept + 1,
              **history[kept], "per_epoch": history})
        print(
            f"split {seed}  phase 2, lr {rate:g}: test after each epoch "
            + " ".join(f"{h['test']:.4f}" for h in history)
            + f"; early stopping keeps epoch {kept + 1}: val {history[kept]['validation']:.4f} "
            f"test {history[kept]['test']:.4f} ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )


def percent(values):
    spread = f" ± {100 * statistics.stdev(values):.1f}" if len(values) > 1 else ""
    return f"{100 * statistics.mean(values):.1f}%{spread}"


methods = list(dict.fromkeys(r["method"] for r in records))
hardware = f"{processor()}, {os.cpu_count()} cores" + (f", {len(gpus)} x {gpus[0]}" if gpus else "")
lines = [
    f"# transfer_xception.py's phases over {splits} splits ({started:%Y-%m-%d %H:%M})",
    "",
    f"{hardware}, Keras {keras.__version__} "
    f"({keras.backend.backend()} backend). Data: {data_dir or 'the TensorFlow flowers'} "
    f"({len(everything.y)} photos), weights: {weights}, {image_size}x{image_size}. Settings: "
    + " ".join(f"{k}={v}" for k, v in config.items() if k not in ("data_dir", "weights", "out_dir")),
    "",
    "Test accuracy by split seed; for phase 2, at the epoch early stopping keeps.",
    "",
    "| method | " + " | ".join(f"split {s}" for s in range(splits)) + " | mean ± sd | its phase 1 (same splits) |",
    "|---|" + "---|" * (splits + 2),
]
for method in methods:
    rows = {r["split"]: r for r in records if r["method"] == method}
    same = [r["test"] for r in records if r["method"] == "phase 1, blocks 13+14" and r["split"] in rows]
    lines.append(
        f"| {method} | " + " | ".join(f"{100 * rows[s]['test']:.1f}" if s in rows else "" for s in range(splits))
        + f" | {percent([r['test'] for r in rows.values()])} | {percent(same) if method.startswith('phase 2') else ''} |"
    )
lines += ["", "Phase 2's test accuracy after each epoch (mean over its splits):", ""]
for method in methods:
    if not method.startswith("phase 2"):
        continue
    runs = [r["per_epoch"] for r in records if r["method"] == method]
    lines.append(f"- {method}: " + ", ".join(percent([run[e]["test"] for run in runs]) for e in range(fine_tune_epochs)))
print("\n".join(lines))  # First, so that the figures are on screen even if writing them fails.
with open(stem + ".md", "w") as f:
    f.write("\n".join(lines) + "\n")
print(f"results   {stem}.md, {stem}.jsonl")
