"""Command-line overrides for the flat hyperparameters at the top of a script.

A script defines its settings as plain globals and then calls

    config = common.config.apply_overrides(globals())

which replaces any of them given as `--key=value` and returns the final values
as a dict. Values are parsed with `ast.literal_eval`, so `--learning_rate=3e-4`,
`--flip=False` and `--data_dir=/data/mnist` work and nothing is ever executed.
`--help` lists the settings with their defaults and the comments beside them
in the script.
"""

import ast
import io
import math
import os
import sys
import tokenize

import common
from common import UserError

# Activations that take a tensor alone and keep its shape (Keras has others,
# such as "threshold", which needs more arguments, and "glu", which halves
# the channels).
_ACTIVATIONS = ("relu", "gelu", "silu", "elu", "selu", "mish", "leaky_relu", "tanh")

# Rules for the settings, by name: a name means the same thing in every
# script that has it. They run before any work, so a bad value stops a run
# before it makes its folder.
_CHECKS = {
    # Far more epochs than any run needs would overflow the schedule's step
    # count (epochs x steps) in 64 bits, after the run folder is made.
    "epochs": (lambda v: 0 < v <= 10**6, "must be > 0 and at most 1,000,000"),
    "batch_size": (lambda v: v > 0, "must be > 0"),
    # Keras on PyTorch runs one training step per call only.
    "steps_per_execution": (
        # Keras counts the steps of a call in 32 bits.
        lambda v: v == 1 or (1 < v < 2**31 and _backend() != "torch"),
        "must be > 0 and below 2**31, and 1 on the PyTorch backend (one step per call)",
    ),
    "learning_rate": (lambda v: 0 < v < math.inf, "must be > 0 and finite"),
    "optimizer": (lambda v: v in ("adam", "sgd"), "must be 'adam' or 'sgd'"),
    "validation_split": (lambda v: 0 < v < 1, "must be between 0 and 1 (exclusive)"),
    "train_samples": (lambda v: v >= 0, "must be >= 0 (0 means all)"),
    "seed": (lambda v: 0 <= v < 2**32, "must be between 0 and 2**32 - 1 (NumPy's range)"),
    "dropout": (lambda v: 0 <= v < 1, "must be >= 0 and below 1"),
    "label_smoothing": (lambda v: 0 <= v < 1, "must be >= 0 and below 1"),
    "l1": (lambda v: 0 <= v < math.inf, "must be >= 0 (0 means none) and finite"),
    "l2": (lambda v: 0 <= v < math.inf, "must be >= 0 (0 means none) and finite"),
    "weight_decay": (lambda v: 0 <= v < math.inf, "must be >= 0 (0 means none) and finite"),
    "width": (lambda v: v > 0, "must be > 0"),
    "activation": (lambda v: v in _ACTIVATIONS, f"must be one of {', '.join(_ACTIVATIONS)}"),
    "shift": (lambda v: v >= 0, "must be >= 0 (0 means no shift)"),
    "patience": (lambda v: v >= 0, "must be >= 0"),
    "fine_tune_epochs": (lambda v: 0 <= v <= 10**6, "must be >= 0 (0 skips phase 2) and at most 1,000,000"),
    "fine_tune_learning_rate": (lambda v: 0 < v < math.inf, "must be > 0 and finite"),
    "test_split": (lambda v: 0 <= v < 1, "must be >= 0 and below 1"),
    # An empty one wrote the runs into the folder the script started from;
    # a file was found out only once the data had loaded and the model compiled.
    "out_dir": (lambda v: _names_a_folder(v), "must name a folder, not a file or a path through one"),
    "runs_dir": (lambda v: _names_a_folder(v), "must name a folder, not a file or a path through one"),
}
_TYPES = (bool, int, float, str)


def _backend():
    """Keras' backend. Keras is imported here, not at the top: the benchmark
    checks its own settings with this module, and on Linux each run it
    starts counts the benchmark's memory (Keras and TensorFlow, about 830 MB)
    in the run's own peak."""
    import keras

    return keras.backend.backend()


def _names_a_folder(path):
    """Whether `path` names a folder that is there or can be made: not
    empty, and the nearest part of it that exists is a folder."""
    if not path.strip():
        return False
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    return os.path.isdir(path)

HELP_HEADER = "settings (override any of them as --key=value):"
_TYPE_NAMES = {bool: "True or False", int: "an integer", float: "a number", str: "a string"}


def config_keys(namespace):
    """The overridable settings: public names bound to a bool, int, float or
    str, except constants (names in capitals, such as one a script imports)."""
    return [
        key
        for key, value in namespace.items()
        if not key.startswith("_") and not key.isupper() and type(value) in _TYPES
    ]


def parse_value(key, text, default):
    """Parses `text` as a literal of the same type as `default`."""
    try:
        value = ast.literal_eval(text)
    # RecursionError, MemoryError: an expression nested thousands deep (--epochs=----1).
    except (ValueError, SyntaxError, RecursionError, MemoryError):
        value = text  # A bare word such as a path is a string.
    if isinstance(default, str) and not isinstance(value, str):
        value = text  # --data_dir=2024 means the folder "2024".
    if isinstance(default, float) and type(value) is int:
        try:
            value = float(value)
        except OverflowError:  # An integer of 309 digits or more.
            raise UserError(f"--{key}={text} is out of range; give a number such as {default!r}") from None
    if type(value) is not type(default):
        raise UserError(
            f"--{key}={text} is not {_TYPE_NAMES[type(default)]} "
            f"(default {key}={default!r}); give e.g. --{key}={default!r}"
        )
    if type(value) is int and not -(2**63) <= value < 2**63:
        # Python's integers have no limit; the tensors they end up in hold 64 bits.
        raise UserError(f"--{key}={text} is out of range; give an integer between -2**63 and 2**63 - 1")
    return value


# The running script's file name and code, as `apply_overrides` read them at
# its start (before the data loads, which can take minutes): the run folder
# keeps this copy, and a stopped run is resumed only by the same code
# (common.output.Run). None where the settings have no file (a test).
script = None


def _read_script(path):
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return os.path.basename(path), f.read()
    except OSError:
        return None  # Gone already: the run keeps no copy, and resumes no run that has one.


def apply_overrides(namespace, argv=None):
    """Applies `--key=value` arguments to `namespace` and returns the config dict.

    Raises `UserError` for an unknown key, a value of the wrong type, or a value
    that a shared rule forbids (such as `--epochs=0`). `--help` prints the
    settings with their defaults and exits.
    """
    common.handle_errors()  # From here on a UserError is one line (common/__init__.py).
    global script
    script = _read_script(namespace.get("__file__"))
    argv = sys.argv[1:] if argv is None else argv
    keys = config_keys(namespace)
    defaults = {key: namespace[key] for key in keys}  # The script's own, whatever earlier overrides set.
    if "--help" in argv or "-h" in argv:
        print_help(namespace, keys)
        raise SystemExit(0)
    for arg in argv:
        key, sep, text = arg.removeprefix("--").partition("=")
        if not arg.startswith("--") or not sep:
            raise UserError(
                f"cannot read argument {arg!r}: write settings as --key=value "
                f"(valid keys: {', '.join(keys)})"
            )
        if key not in keys:
            raise UserError(
                f"unknown setting --{key}; valid keys: {', '.join(keys)}"
            )
        value = parse_value(key, text, defaults[key])
        if isinstance(value, str) and (value == "~" or value.startswith("~/")):
            # The shell expands ~ only at the start of a word, so not in
            # --out_dir=~/runs: without this, runs went to a folder named "~".
            value = os.path.expanduser(value)
        if key.endswith("_dir") and len(value) > 1:
            # runs/ and runs are one folder: the same command typed either
            # way resumes a run that the other started, and compares alike.
            value = value.rstrip("/") or "/"
        namespace[key] = value
    config = {key: namespace[key] for key in keys}
    for key, (is_valid, rule) in _CHECKS.items():
        if key in config and not is_valid(config[key]):
            raise UserError(f"--{key}={config[key]!r} is not allowed: {key} {rule}")
    return config


def given(argv=None):
    """The keys of the settings given on the command line, each once, in
    the order given; for arguments that `apply_overrides` has accepted."""
    argv = sys.argv[1:] if argv is None else argv
    return list(dict.fromkeys(arg.removeprefix("--").partition("=")[0] for arg in argv))


def print_help(namespace, keys):
    """Prints the first paragraph of the script's docstring, then one line
    per setting: `--key=default`, and the comment beside it in the script."""
    summary = (namespace.get("__doc__") or "").strip().partition("\n\n")[0]
    if summary:
        print(summary + "\n")
    comments = _comments(namespace["__file__"]) if namespace.get("__file__") else {}
    options = {key: f"--{key}={namespace[key]!r}" for key in keys}
    column = max(map(len, options.values()), default=0)
    print(HELP_HEADER)
    for key, option in options.items():
        if key in comments:
            print(f"  {option:<{column}}  # {comments[key]}")
        else:
            print(f"  {option}")


def _comments(path):
    """The comment at the end of the line where each name is first assigned
    at the top level of the Python file at `path` (`name = value  # comment`),
    by name. A file that cannot be read or parsed gives none: --help then
    lists the settings without them."""
    try:
        with tokenize.open(path) as file:
            source = file.read()
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
        body = ast.parse(source).body
    except (OSError, SyntaxError, UnicodeDecodeError, tokenize.TokenError):
        return {}
    on_line = {
        token.start[0]: token.string.removeprefix("#").strip() for token in tokens if token.type == tokenize.COMMENT
    }
    first = {}
    for node in body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            first.setdefault(node.targets[0].id, node.end_lineno)
    return {name: on_line[line] for name, line in first.items() if line in on_line}
