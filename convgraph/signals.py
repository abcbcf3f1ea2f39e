"""Ctrl-C, SIGTERM and SIGHUP: one way to stop, at a moment where nothing is half done.

SIGTERM (``timeout``, ``docker stop``, systemd, batch schedulers) and SIGHUP (a closed terminal)
do what Ctrl-C does: each becomes an :class:`Interrupt` (a KeyboardInterrupt, so every
``except KeyboardInterrupt`` path treats them alike) carrying the exit status of its signal --
130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP (128 + the signal's number, as shells report).

Inside :func:`deferred` (a training step with its bookkeeping, a checkpoint save) a signal is
only recorded, and raised when the section ends: training stops at a batch boundary, and a save
in progress completes. Everywhere else it is raised at once.

Stdlib only, so ``convgraph.cli`` can install :func:`exit_during_imports` before it imports
anything heavy.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}
STOPPING = tuple(NAMES)


def exit_status(signum: int) -> int:
    """128 + the signal number: 130 (SIGINT), 143 (SIGTERM), 129 (SIGHUP)."""
    return 128 + int(signum)


class Interrupt(KeyboardInterrupt):
    """A stopping signal (SIGINT, SIGTERM or SIGHUP) turned into an exception."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(NAMES.get(signum, str(signum)))
        self.signum = int(signum)
        self.exit_status = exit_status(signum)
        self.name = NAMES.get(signum, f"signal {signum}")


def status_of(exc: BaseException) -> int:
    """The exit status for an interrupt (a bare KeyboardInterrupt is Ctrl-C: 130)."""
    return getattr(exc, "exit_status", 130)


def name_of(exc: BaseException) -> str:
    return getattr(exc, "name", "SIGINT")


_depth = 0  # how many deferred() sections are open
_pending: int | None = None  # the signal received inside one, raised when the outermost ends
# a signal raised outside deferred(), until it is taken (``taken``) or its handled() block ends:
# C code that calls back into Python and clears errors (a dict lookup's __eq__, hasattr's
# __getattr__) can swallow the Interrupt, and the next deferred() section then raises it again
_unraised: int | None = None


def _raise(signum, frame) -> None:
    global _pending, _unraised
    if _depth > 0:
        if _pending is None:
            _pending = signum
        return
    _unraised = signum
    raise Interrupt(signum)


def taken() -> None:
    """The Interrupt in flight has reached the code that handles it: not to be raised again."""
    global _unraised
    _unraised = None


@contextlib.contextmanager
def deferred():
    """Hold stopping signals until the section ends, then raise the first one received.

    Only signals that reach convgraph's handler (see :func:`handled`) are held; an exception
    raised inside the section goes through unchanged.
    """
    global _depth, _pending, _unraised
    _depth += 1
    try:
        yield
    except BaseException:
        if _depth == 1:  # the error ends what the signal would have stopped: forget it
            _pending = None
        raise
    finally:
        _depth -= 1
    if _depth == 0 and (_pending is not None or _unraised is not None):
        signum = _pending if _pending is not None else _unraised
        _pending = _unraised = None
        raise Interrupt(signum)


@contextlib.contextmanager
def handled(signals=STOPPING, only_default: bool = False):
    """Route ``signals`` to :class:`Interrupt` (held inside :func:`deferred`) while the block
    runs, then restore the previous handlers. Does nothing outside the main thread (Python
    delivers signals there only). With ``only_default``, a signal whose handler someone else
    set is left alone (``Trainer.fit`` from a program that has its own SIGINT handler)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for signum in signals:
        current = signal.getsignal(signum)
        if only_default and current not in (signal.default_int_handler, signal.SIG_DFL):
            continue
        previous[signum] = signal.signal(signum, _raise)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        taken()


def _exit_now(signum, frame) -> None:
    # nothing has started yet: nothing to save, nothing to clean up
    try:
        sys.stderr.write(f"convgraph: interrupted ({NAMES.get(signum, signum)}) while "
                         "starting; nothing was done.\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os._exit(exit_status(signum))


def _exit_finished(signum, frame) -> None:
    # the command is done and its files are written; only the interpreter's clean-up remains
    try:
        sys.stdout.flush()
    except (OSError, ValueError, RuntimeError):
        pass
    try:
        sys.stderr.write(f"convgraph: interrupted ({NAMES.get(signum, signum)}) while exiting; "
                         "the command had finished.\n")
        sys.stderr.flush()
    except (OSError, ValueError, RuntimeError):
        pass
    os._exit(exit_status(signum))


def exit_when_finished() -> None:
    """For a process whose command has returned: a stopping signal during the interpreter's
    clean-up (pyopencl's teardown takes tens of milliseconds) ends it with one line and the
    signal's status, instead of the default handler's silent death."""
    if threading.current_thread() is threading.main_thread():
        for signum in STOPPING:
            signal.signal(signum, _exit_finished)


def exit_now(status: int) -> None:
    """End the process with ``status`` once the atexit functions have run (temporary folders
    are removed there) and the output is flushed, without the rest of the interpreter's
    clean-up: Python's finalisation puts the default handlers back before pyopencl's teardown
    ends, and a signal then would kill the process silently."""
    import atexit

    atexit._run_exitfuncs()  # under the handlers still set (exit_when_finished)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, RuntimeError):  # a closed pipe: nothing left to tell
            pass
    os._exit(status)


def exit_during_imports() -> dict:
    """Make a stopping signal end the process with one line and its status (no traceback)
    while the command's modules are imported; returns the handlers to restore afterwards."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, _exit_now) for signum in STOPPING}


def restore(previous: dict) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)
