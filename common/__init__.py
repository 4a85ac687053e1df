"""Code shared by the training scripts: config overrides, data, devices, outputs.

Importing this package installs one behaviour worth knowing about: a `UserError`
that nobody catches (a missing data file, an unknown override, ...) is printed
as a single `error: ...` line, and the run exits with status 1, instead of a
traceback: it is a mistake in the input, not in the program. Ctrl-C prints
how to continue the run. Every other exception still prints its full traceback.
"""

import sys


class UserError(ValueError):
    """A problem with the user's input, explained in one line that says what to do."""


def reason(error):
    """The first line of an exception's message, or its type when it has none:
    what goes in brackets in a one-line error."""
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _excepthook(exc_type, exc, tb, _default=sys.excepthook):
    if issubclass(exc_type, UserError):
        print(f"error: {exc}", file=sys.stderr)
    elif issubclass(exc_type, KeyboardInterrupt):
        # Ctrl-C: the state after the last saved epoch is on disk
        # (common/output.py), and Python still exits with the status of a
        # process stopped by SIGINT.
        print(
            "\ninterrupted: run the same command again to continue from the last saved epoch",
            file=sys.stderr,
        )
    else:
        _default(exc_type, exc, tb)


sys.excepthook = _excepthook
