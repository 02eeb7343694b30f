"""Ctrl-C (SIGINT) and SIGTERM as one clean stop of a CLI command.

Invariants:
- only the CLI installs the handlers (``install``); the library API keeps Python's defaults;
- the first SIGINT or SIGTERM raises ``KeyboardInterrupt`` in the main thread, so every ``finally`` runs
  (actors killed, Ray shut down, the run-folder lock released) and nothing half-written is ever renamed
  into place (commits are atomic renames); which signal it was is kept here (``received``), because Ray's
  blocking calls turn a pending exception into a fresh ``KeyboardInterrupt`` of their own;
- a second signal while that cleanup runs stops the process at once (``os._exit``) with the same
  conventional status, 128 + the signal number: a hung cleanup never traps the user;
- ``ray.init`` sets its own SIGTERM handler, so drivers call ``reinstall`` after it (a no-op unless the
  CLI installed the handlers).
"""

from __future__ import annotations

import os
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_state: dict = {"installed": False, "received": None}


def _handler(signum: int, frame) -> None:
    if _state["received"] is not None:  # the second signal: no more cleanup
        os.write(2, b"gradsign: stopped at once (second signal); committed shards are complete files; "
                    b"rerun the same command to resume\n")
        os._exit(128 + signum)
    _state["received"] = signum
    raise KeyboardInterrupt


def install() -> dict:
    """Route SIGINT and SIGTERM to one clean stop (main thread only; elsewhere nothing changes).
    Returns the handlers it replaced, for ``restore``."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    for signum in SIGNALS:
        signal.signal(signum, _handler)
    _state.update(installed=True, received=None)
    return previous


def restore(previous: dict) -> None:
    """Put back the handlers ``install`` replaced (a CLI called in-process leaves its caller as it was)."""
    for signum, handler in previous.items():
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
    if previous:
        _state["installed"] = False


def reinstall() -> None:
    """Put the handlers back after a library (``ray.init``) replaced them; a no-op unless installed."""
    if _state["installed"]:
        install()


def received() -> int:
    """The signal that stopped the command (SIGINT when a ``KeyboardInterrupt`` came without one)."""
    return _state["received"] if _state["received"] is not None else int(signal.SIGINT)


def exit_status() -> int:
    """The conventional exit status: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + received()


def signal_name() -> str:
    return signal.Signals(received()).name
