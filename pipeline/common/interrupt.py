"""Ctrl-C (SIGINT) and SIGTERM as one clean stop of a CLI command.

Invariants:
- only the CLI installs the handlers (``install``); the library API keeps Python's defaults;
- the first SIGINT or SIGTERM raises ``KeyboardInterrupt`` in the main thread, so every ``finally`` runs
  (actors killed, Ray shut down, the run-folder lock released) and nothing half-written is ever renamed
  into place (commits are atomic renames); which signal it was is kept here (``received``), because Ray's
  blocking calls turn a pending exception into a fresh ``KeyboardInterrupt`` of their own;
- a second signal while that cleanup runs stops the process at once (``os._exit``) with the same
  conventional status, 128 + the signal number: a hung cleanup never traps the user;
- ``ray.init`` sets its own SIGTERM handler and ``ray.shutdown`` puts the C-level default back (Python's
  ``signal.getsignal`` still names ours, but the process would die by the signal), so drivers call
  ``reinstall`` after both (a no-op unless the CLI installed the handlers);
- outputs that belong together (a run's summary and top-k, a search's result files, a candidate list) are
  written inside ``writing()``: a first signal there waits until the last file of the pass has landed,
  then stops the command (``StoppedAfterWriting``), so a reader never sees files of two passes side by side.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_state: dict = {"installed": False, "received": None, "writing": 0, "held": False}


class StoppedAfterWriting(KeyboardInterrupt):
    """A signal that came while outputs were written: every file of that pass landed first, then the stop."""


def _handler(signum: int, frame) -> None:
    if _state["received"] is not None:  # the second signal: no more cleanup
        os.write(2, b"gradsign: stopped at once (second signal); every file is written whole or not at all "
                    b"(atomic renames); rerun the same command to finish\n")
        os._exit(128 + signum)
    _state["received"] = signum
    if _state["writing"]:  # outputs of one pass are landing: stop when the last one has
        _state["held"] = True
        return
    raise KeyboardInterrupt


@contextmanager
def writing() -> Iterator[None]:
    """Write a set of files that belong together: a first SIGINT/SIGTERM inside waits for the block to end,
    then raises ``StoppedAfterWriting``; a second one still stops the process at once. Nested blocks end
    at the outermost. An exception from the block itself propagates as it is."""
    _state["writing"] += 1
    try:
        yield
    finally:
        _state["writing"] -= 1
    if _state["writing"] == 0 and _state["held"]:
        _state["held"] = False
        raise StoppedAfterWriting


def install() -> dict:
    """Route SIGINT and SIGTERM to one clean stop (main thread only; elsewhere nothing changes).
    Returns the handlers it replaced, for ``restore``."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    _set_handlers()
    _state.update(installed=True, received=None, writing=0, held=False)
    return previous


def _set_handlers() -> None:
    for signum in SIGNALS:
        signal.signal(signum, _handler)


def restore(previous: dict) -> None:
    """Put back the handlers ``install`` replaced (a CLI called in-process leaves its caller as it was)."""
    for signum, handler in previous.items():
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
    if previous:
        _state["installed"] = False


def reinstall() -> None:
    """Put the handlers back after a library (``ray.init``, ``ray.shutdown``) replaced them; keeps what was
    received; a no-op unless installed (or outside the main thread)."""
    if _state["installed"] and threading.current_thread() is threading.main_thread():
        _set_handlers()


@contextmanager
def ray_shutdown_guarded() -> Iterator[None]:
    """Run ``ray.shutdown`` inside: SIGINT/SIGTERM are blocked in this thread meanwhile and the handlers put
    back after it, so a signal in that window reaches ours (and is acted on at once) instead of the default
    that ``ray.shutdown`` restores."""
    main = threading.current_thread() is threading.main_thread()
    if main:
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        reinstall()
        if main:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


def received() -> int:
    """The signal that stopped the command (SIGINT when a ``KeyboardInterrupt`` came without one)."""
    return _state["received"] if _state["received"] is not None else int(signal.SIGINT)


def exit_status() -> int:
    """The conventional exit status: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + received()


def signal_name() -> str:
    return signal.Signals(received()).name
