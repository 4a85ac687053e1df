import pytest

from common import UserError, reason
import common.config
from common.config import HELP_HEADER, apply_overrides


def defaults():
    return {
        "__doc__": "not a setting",
        "_private": 1,
        "keras": object(),  # Imported modules are not settings either,
        "BATCHES_PER_CALL": "--steps_per_execution=9",  # nor constants.
        "data_dir": "",
        "epochs": 12,
        "batch_size": 128,
        "learning_rate": 1e-3,
        "optimizer": "adam",
        "augment": True,
        "validation_split": 0.1,
        "train_samples": 0,
        "seed": 0,
        "dropout": 0.2,
        "shift": 3,
        "fine_tune_epochs": 5,
        "label_smoothing": 0.1,
        "l1": 0.0,
        "l2": 1e-4,
        "weight_decay": 5e-4,
        "width": 32,
        "activation": "relu",
        "patience": 5,
        "fine_tune_learning_rate": 1e-4,
        "test_split": 0.2,
        "steps_per_execution": 1,
        "out_dir": "runs",
        "runs_dir": "/tmp/benchmark-runs",
    }


def test_a_path_that_starts_with_a_tilde_is_in_the_home_folder(monkeypatch):
    # The shell leaves --out_dir=~/runs as it is; runs went to a folder named "~".
    monkeypatch.setenv("HOME", "/home/someone")
    config = apply_overrides(defaults(), ["--out_dir=~/runs", "--data_dir=~", "--runs_dir=~runs"])
    assert (config["out_dir"], config["data_dir"]) == ("/home/someone/runs", "/home/someone")
    assert config["runs_dir"] == "~runs"  # Not the home folder (nor another user's): left as it is.


def test_no_arguments_gives_the_defaults():
    namespace = defaults()
    config = apply_overrides(namespace, [])
    expected = defaults()
    for not_a_setting in ("__doc__", "_private", "keras", "BATCHES_PER_CALL"):
        del expected[not_a_setting]
    assert config == expected and list(config)[:2] == ["data_dir", "epochs"]


def test_the_settings_given_are_listed_once_each_in_the_order_given():
    # transfer_xception.py names the training settings that --predict ignores.
    assert common.config.given(["--seed=2", "--epochs=3", "--seed=4"]) == ["seed", "epochs"]
    assert common.config.given([]) == []


def test_overrides_are_parsed_as_literals_of_the_default_type():
    namespace = defaults()
    config = apply_overrides(
        namespace,
        ["--epochs=3", "--learning_rate=3e-4", "--augment=False", "--data_dir=/data/mnist"],
    )
    assert config["epochs"] == 3 and type(config["epochs"]) is int
    assert config["learning_rate"] == 3e-4
    assert config["augment"] is False
    assert config["data_dir"] == "/data/mnist"
    # The script's globals change too, since that is what the script reads.
    assert namespace["epochs"] == 3 and namespace["augment"] is False


def test_an_int_is_accepted_where_a_float_is_expected():
    config = apply_overrides(defaults(), ["--learning_rate=1"])
    assert config["learning_rate"] == 1.0 and type(config["learning_rate"]) is float


def test_strings_stay_strings_even_when_they_look_like_numbers():
    config = apply_overrides(defaults(), ["--data_dir=2024"])
    assert config["data_dir"] == "2024"


def test_values_are_never_executed(tmp_path):
    marker = tmp_path / "executed"
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    config = apply_overrides(defaults(), [f"--data_dir={code}"])
    assert config["data_dir"] == code
    assert not marker.exists()
    with pytest.raises(UserError):
        apply_overrides(defaults(), [f"--epochs={code}"])
    assert not marker.exists()


@pytest.mark.parametrize(
    "argument, message",
    [
        ("--epoch=3", "unknown setting --epoch; valid keys: data_dir, epochs,"),
        ("--BATCHES_PER_CALL=1", "unknown setting --BATCHES_PER_CALL"),
        ("--epochs=3.5", "--epochs=3.5 is not an integer (default epochs=12)"),
        ("--epochs=True", "is not an integer"),
        ("--augment=1", "--augment=1 is not True or False"),
        ("--learning_rate=fast", "is not a number"),
        ("epochs=3", "write settings as --key=value"),
        ("--epochs", "write settings as --key=value"),
        ("--epochs=0", "epochs must be > 0"),
        ("--batch_size=0", "batch_size must be > 0"),
        ("--batch_size=-32", "batch_size must be > 0"),
        ("--learning_rate=-0.1", "learning_rate must be > 0"),
        # 1e999 reads as infinity: training went on to NaN losses and exit 0.
        ("--learning_rate=1e999", "learning_rate must be > 0 and finite"),
        ("--l2=1e999", "l2 must be >= 0 (0 means none) and finite"),
        ("--optimizer=rmsprop", "optimizer must be 'adam' or 'sgd'"),
        ("--validation_split=1.0", "validation_split must be between 0 and 1"),
        ("--train_samples=-5", "train_samples must be >= 0"),
        ("--seed=-1", "seed must be between 0 and 2**32 - 1"),
        ("--dropout=1.5", "dropout must be >= 0 and below 1"),
        ("--shift=-1", "shift must be >= 0"),
        ("--fine_tune_epochs=-1", "fine_tune_epochs must be >= 0"),
        ("--label_smoothing=1.0", "label_smoothing must be >= 0 and below 1"),
        ("--l1=-1e-5", "l1 must be >= 0"),
        ("--l2=-1e-4", "l2 must be >= 0"),
        ("--weight_decay=-5e-4", "weight_decay must be >= 0"),
        ("--width=0", "width must be > 0"),
        ("--activation=Gelu", "activation must be one of relu, gelu"),
        ("--activation=threshold", "activation must be one of relu, gelu"),
        ("--patience=-1", "patience must be >= 0"),
        ("--fine_tune_learning_rate=0", "fine_tune_learning_rate must be > 0"),
        ("--test_split=1.0", "test_split must be >= 0 and below 1"),
        ("--steps_per_execution=0", "steps_per_execution must be > 0"),
        # Beyond what Keras counts in 32 bits: no step trained, then a KeyError traceback in the plots.
        ("--steps_per_execution=2147483648", "steps_per_execution must be > 0 and below 2**31"),
        # epochs x steps beyond 64 bits: a TypeError traceback after the run folder was made.
        ("--epochs=9223372036854775807", "epochs must be > 0 and at most 1,000,000"),
        ("--fine_tune_epochs=9223372036854775807", "fine_tune_epochs must be >= 0 (0 skips phase 2) and at most"),
        # The runs went into the folder the script started from.
        ("--out_dir=", "out_dir must name a folder"),
        ("--runs_dir=", "runs_dir must name a folder"),
        ("--out_dir=' '", "out_dir must name a folder"),
        # Beyond 64 bits: a TypeError traceback once training had made its run folder.
        ("--epochs=99999999999999999999", "--epochs=99999999999999999999 is out of range; give an integer between"),
        ("--train_samples=-9223372036854775809", "is out of range; give an integer between -2**63 and 2**63 - 1"),
        # An integer beyond a float's range, where a number is expected: an OverflowError traceback.
        ("--learning_rate=" + "9" * 400, "is out of range; give a number such as 0.001"),
        # Nested too deep for Python's parser: a RecursionError traceback, or "out of memory".
        ("--epochs=" + "-" * 5000 + "1", "is not an integer (default epochs=12)"),
        ("--epochs=" + "-" * 100000 + "1", "is not an integer (default epochs=12)"),
    ],
)
def test_bad_overrides_are_refused_with_a_helpful_message(argument, message):
    with pytest.raises(UserError) as error:
        apply_overrides(defaults(), [argument])
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_several_steps_per_call_are_refused_on_pytorch(monkeypatch):
    import keras

    assert apply_overrides(defaults(), ["--steps_per_execution=4"])["steps_per_execution"] == 4
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(UserError, match="1 on the PyTorch backend"):
        apply_overrides(defaults(), ["--steps_per_execution=4"])


def test_help_lists_the_settings_and_exits(capsys):
    with pytest.raises(SystemExit) as exit_info:
        apply_overrides(defaults(), ["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--epochs=12" in out and "--data_dir=''" in out


def test_help_gives_the_docstrings_summary_and_each_settings_comment(tmp_path, capsys):
    script = tmp_path / "train.py"
    script.write_text(
        '"""Trains a model.\n\nMore about it."""\n'
        "epochs = 3  # passes over the data\n"
        "seed = 0\n"
        'name = "a # b"  # the hash in the string is not a comment\n'
        "epochs = 4  # a later assignment is not the setting\n"
        "seed = 1  # nor here, where the first has no comment\n"
    )
    namespace = {"__file__": str(script), "__doc__": "Trains a model.\n\nMore about it.",
                 "epochs": 3, "seed": 0, "name": "a # b"}
    with pytest.raises(SystemExit):
        apply_overrides(namespace, ["--help"])
    assert capsys.readouterr().out.splitlines() == [
        "Trains a model.",
        "",
        HELP_HEADER,
        "  --epochs=3      # passes over the data",
        "  --seed=0",
        "  --name='a # b'  # the hash in the string is not a comment",
    ]


def test_help_lists_the_settings_of_a_script_it_cannot_read(tmp_path, capsys):
    with pytest.raises(SystemExit):
        apply_overrides({"__file__": str(tmp_path / "gone.py"), "epochs": 3}, ["--help"])
    assert capsys.readouterr().out.splitlines() == [HELP_HEADER, "  --epochs=3"]


def test_every_rule_is_for_a_setting_that_a_script_or_benchmark_has():
    import glob
    import os
    import re

    from common.config import _CHECKS

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    settings = set()
    for path in glob.glob(os.path.join(root, "*.py")) + glob.glob(os.path.join(root, "benchmarks", "*.py")):
        # A script's settings are the names it assigns before apply_overrides.
        block = open(path).read().partition("common.config.apply_overrides(")[0]
        settings |= set(re.findall(r"^(\w+) = ", block, flags=re.MULTILINE))
    assert set(_CHECKS) <= settings, set(_CHECKS) - settings


def test_every_setting_of_the_collections_scripts_has_a_comment_for_help():
    # README promises that each script's --help explains every setting by the
    # comment beside it.
    import glob
    import os
    import re

    from common.config import _comments

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    scripts = glob.glob(os.path.join(root, "*.py"))
    assert len(scripts) == 5
    bare = []
    for path in scripts:
        block = open(path).read().partition("config = common.config.apply_overrides(")[0]
        settings = re.findall(r"^(\w+) = ", block, flags=re.MULTILINE)
        assert settings, path
        bare += [f"{os.path.basename(path)}: {name}" for name in settings if name not in _comments(path)]
    assert not bare


def test_an_errors_reason_is_its_first_line_or_else_its_kind():
    # What goes in brackets in a one-line error: a library's message of several lines would break the line.
    assert reason(OSError("No space left on device\n  while writing x")) == "No space left on device"
    assert reason(KeyError()) == "KeyError"
    # The system's errors as a user reads them: what went wrong and where, not "[Errno 13] Permission denied: '/x'".
    assert reason(PermissionError(13, "Permission denied", "/runs/x")) == "Permission denied: /runs/x"
    assert reason(OSError(28, "No space left on device")) == "No space left on device"
    assert reason(OSError(5, "Input/output error\n  in a library's words", "/f")) == "Input/output error: /f"
    assert reason(OSError(18, "Invalid cross-device link", "/a", None, "/b")) == "Invalid cross-device link: /a -> /b"
    try:
        open("/nonexistent/file")
    except OSError as error:
        assert reason(error) == "No such file or directory: /nonexistent/file"


def test_an_out_dir_that_is_a_file_or_lies_below_one_is_refused_before_any_work(tmp_path):
    # It was found out once the data had loaded and the model had compiled.
    (tmp_path / "notes.txt").write_text("not a folder")
    for path in (tmp_path / "notes.txt", tmp_path / "notes.txt" / "runs"):
        with pytest.raises(UserError, match="out_dir must name a folder, not a file or a path through one"):
            apply_overrides({"out_dir": "runs"}, [f"--out_dir={path}"])
    for path in (tmp_path, tmp_path / "new" / "runs", "relative/runs"):
        assert apply_overrides({"out_dir": "runs"}, [f"--out_dir={path}"])["out_dir"] == str(path)


def test_a_later_override_of_the_same_key_is_told_the_scripts_default():
    # After --epochs=1, the message for --epochs=1.0 called 1 the default (the script's is 12).
    with pytest.raises(UserError) as error:
        apply_overrides(defaults(), ["--epochs=1", "--epochs=1.0"])
    assert str(error.value) == "--epochs=1.0 is not an integer (default epochs=12); give e.g. --epochs=12"
    assert apply_overrides(defaults(), ["--epochs=1", "--epochs=2"])["epochs"] == 2  # The last one wins.


def test_a_folder_typed_with_a_trailing_slash_is_the_same_setting():
    # --out_dir=runs/ did not resume a run started with --out_dir=runs.
    assert apply_overrides(defaults(), ["--data_dir=/data/mnist/"])["data_dir"] == "/data/mnist"
    assert apply_overrides(defaults(), ["--data_dir=/"])["data_dir"] == "/"
    assert apply_overrides(defaults(), ["--data_dir=//"])["data_dir"] == "/"
