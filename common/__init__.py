"""Code shared by the training scripts: config overrides, data, devices, outputs.

`handle_errors()`, which every script calls through
`common.config.apply_overrides`, installs one behaviour worth knowing about
(a program that only imports a module of this package, to load a saved
model, keeps Python's own): a `UserError` that nobody catches (a missing
data file, an unknown override, ...) is printed as a single `error: ...`
line, and the run exits with status 1, instead of a traceback: it is a
mistake in the input, not in the program. Running out of
memory (a model, batch or image size too large for the machine) is one line
too, and so is a full disk where the output is redirected. Ctrl-C during a
training run prints how to continue it, and so does SIGTERM once a run has
called `print_on_terminate`. Output piped into a reader that stops early
(`| head`) ends the process quietly, as a Unix tool ends, and a path that
stdout's encoding cannot write is printed with backslash escapes. Every
other exception still prints its full traceback.
"""

import atexit
import contextlib
import errno
import os
import re
import select
import signal
import sys
import threading
import time
import weakref

# What Ctrl-C prints after "interrupted": set by common.output.Run once a run
# folder that the same command would resume exists.
on_interrupt = ""
# Threads writing a file that a run needs whole (common.resume's saved
# state): SIGTERM lets them finish, as Ctrl-C does.
writers = weakref.WeakSet()


class UserError(ValueError):
    """A problem with the user's input, explained in one line that says what to do."""


def reason(error):
    """The first line of an exception's message, or its type when it has none:
    what goes in brackets in a one-line error. A system call's OSError gives
    its description and the file, without Python's "[Errno 13]" and quotes."""
    if isinstance(error, OSError) and error.strerror:
        files = " -> ".join(str(name) for name in (error.filename, error.filename2) if name is not None)
        description = error.strerror.splitlines()[0]
        return f"{description}: {files}" if files else description
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def visible(path):
    """`path` as an error line names it: quoted where spaces at either end,
    or characters that do not print, would hide what was asked for (a path
    of one space, from `--predict=" "`, would read "cannot read  (...)")."""
    return path if path.isprintable() and path == path.strip() else repr(path)


def _excepthook(exc_type, exc, tb, _default=sys.excepthook):
    if issubclass(exc_type, UserError):
        print(f"error: {exc}", file=sys.stderr)
    elif _out_of_memory(exc):
        print(
            f"error: out of memory ({_memory_detail(exc)}); give a smaller --batch_size, model or image size, "
            "or stop what else is using the memory",
            file=sys.stderr,
        )
    elif isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        # A file on a full disk (the run folder's own say so in a UserError),
        # or the output itself, redirected there: then it goes nowhere from
        # now on, so that Python's last flush of it does not fail again.
        try:
            sys.stdout.flush()
        except OSError:
            _quiet_stdout()
        print(f"error: no space left on the device ({reason(exc)}); make room, then run the same command again", file=sys.stderr)
    elif issubclass(exc_type, BrokenPipeError) and _stdout_is_broken():
        # The reader of the output went away (`python mnist_mlp.py | head`):
        # the process ends quietly, as a Unix tool does. (Another broken
        # pipe, such as a library's, is an error like any other.)
        _quiet_stdout()
    elif issubclass(exc_type, KeyboardInterrupt):
        print("\ninterrupted" + (f": {on_interrupt}" if on_interrupt else ""), file=sys.stderr)
        # Once a thread still writing has finished, as Python would wait for
        # it, the process ends as SIGINT ends one, without Python's
        # finalization: TensorFlow's threads, still running then, crashed it
        # there once (a segmentation fault instead of this status).
        _end_as(signal.SIGINT)
    else:
        _default(exc_type, exc, tb)


def _out_of_memory(exc):
    """Whether an exception says that memory ran out: NumPy's MemoryError, or
    a backend's own kind (TensorFlow's ResourceExhaustedError, XLA's
    RESOURCE_EXHAUSTED, PyTorch's OutOfMemoryError or its CPU allocator's)."""
    message = str(exc)
    return (
        isinstance(exc, MemoryError)
        or type(exc).__name__ in ("ResourceExhaustedError", "OutOfMemoryError")
        or message.startswith("RESOURCE_EXHAUSTED")
        or "DefaultCPUAllocator: can't allocate memory" in message
    )


def _memory_detail(exc):
    """The line of an out-of-memory message that says what did not fit.
    TensorFlow's starts "Graph execution error:" in a compiled step, and
    wraps the line in the op's names ("{{function_node ...}} OOM when
    allocating tensor ... [Op:...]"); PyTorch's starts with the line of C++
    that failed ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: ...")."""
    lines = str(exc).splitlines()
    # TensorFlow's own words first: its message lists the code that ran, whose names might say "allocate" too.
    line = next((line for line in lines if "OOM when" in line), None) or next(
        (line for line in lines if re.search(r"out of memory|allocat", line, re.IGNORECASE)), None
    )
    if line is None:
        return reason(exc)
    line = re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:.*$", "", line)
    return line[line.find("DefaultCPUAllocator"):] if "DefaultCPUAllocator" in line else line


def _stdout_is_broken():
    """Whether stdout is a pipe whose reader has gone away: poll() reports
    an error on the writing end of such a pipe."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, AttributeError, ValueError):  # No stdout, or one without a file descriptor.
        return False


def _quiet_stdout():
    """Points stdout at /dev/null, so that Python's last flush of it, as the
    process ends, has nowhere to fail ("Exception ignored ... BrokenPipeError")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, AttributeError, ValueError):  # No stdout to point anywhere.
        pass


def _flush_at_exit():
    """Output still buffered as the process ends (stdout is a pipe, not a
    terminal) would be flushed after this, and fail if the reader has gone
    away: the process then ends quietly, with the status it had."""
    if _stdout_is_broken():
        _quiet_stdout()


def print_on_terminate():
    """From now on SIGTERM (what `kill`, a job scheduler or `docker stop`
    sends) prints what Ctrl-C prints, lets a thread still writing (the last
    epoch's resume state) finish, then ends the process as SIGTERM would
    have. Only a training run installs it (common.output.Run): Python runs a
    handler between bytecodes, so a process in a long call into compiled code
    (an XLA compile, a compiled step) ends only once that call returns."""
    if threading.current_thread() is threading.main_thread():  # The only thread that may set a handler.
        signal.signal(signal.SIGTERM, _on_terminate)


def _on_terminate(signum, frame):
    # Output still buffered (stdout a file or a pipe) would be lost with the
    # process; flushing it fails where the reader has gone (`| head`).
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    try:
        print("\nterminated" + (f": {on_interrupt}" if on_interrupt else ""), file=sys.stderr, flush=True)
    except Exception:
        pass  # Such as a closed stderr: the process ends all the same.
    finally:
        # A thread still writing (the resume state of the last epoch) ends
        # first, as it does on Ctrl-C, within what a job scheduler or
        # `docker stop` (10 s) waits before it kills the process.
        _end_as(signum, writers_seconds=8)


def _end_as(signum, writers_seconds=None):
    """Ends the process as the signal's default action does (its exit
    status says which signal), once the threads in `writers` have finished
    (within `writers_seconds`, if given) and the output is flushed."""
    _join_writers(writers_seconds)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # Such as a closed stream, or a reader gone (`| head`).
            stream.flush()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _join_writers(seconds=None):
    """Waits, `seconds` at most in all (None: as long as they take), for
    the threads in `writers`. (Not for every thread that Python waits for at
    its end: Keras keeps idle workers of its own during `fit` on JAX and
    PyTorch.)"""
    deadline = None if seconds is None else time.monotonic() + seconds
    for thread in list(writers):
        if thread is not threading.current_thread():
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))


_handling_errors = False


def handle_errors():
    """Installs, once, what the module's docstring lists, for a command-line
    run: the scripts, the benchmarks and `python -m common.compare`. Their
    messages speak of --key=value settings and run folders, which a program
    of one's own that only imports a module of this package has none of."""
    global _handling_errors
    if _handling_errors:
        return
    _handling_errors = True
    sys.excepthook = _excepthook
    atexit.register(_flush_at_exit)
    # A path that stdout's encoding cannot write (PYTHONIOENCODING=ascii, an
    # old terminal) is printed with backslash escapes, as stderr prints it,
    # instead of ending the run. (Python's UTF-8 modes write any path already.)
    if getattr(sys.stdout, "errors", None) == "strict" and hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
