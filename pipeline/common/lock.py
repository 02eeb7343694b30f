"""One driver per run folder: a kernel-held lock on ``RUN/driver.lock`` plus a record naming its holder.

Invariants:
- while a driver holds a run folder, every other driver (another process on this host, another host on
  shared storage, or another ``run()`` in this same process) is refused at once with
  :class:`RunFolderBusy`, whose message names the holder: host, process id, since when, last heartbeat;
- the lock is an ``fcntl`` POSIX record lock (``lockf``) on an open descriptor. The kernel drops it when
  the holder's process ends in any way (exit, exception, SIGTERM, SIGKILL, ``ray job stop``), so a dead
  holder never blocks a rerun and no stale-lock guessing (pid probing, clocks) decides who may run;
- the record (one JSON line in the lock file: host, pid, since, heartbeat, command) is for people only:
  it is rewritten in place every ``heartbeat_s`` seconds while the lock is held and never decides
  anything. The lock file itself is left in place after release (unlinking it would let two drivers
  lock two different files); a deleted lock file is noticed and the lock taken on the new one.

On shared storage (the run folder on NFS for drivers on several hosts): POSIX locks are what NFS carries
between hosts (NLM for NFSv3, the protocol itself for NFSv4/EFS). A holder killed on another host is
released at once by its host's kernel. A holder whose *node* was lost keeps the lock until the server
gives it up: NFSv4 after the client's lease runs out (90 s by default on Linux servers), NFSv3 only when
the client comes back (statd) or the server's lock manager is cleared. If you know that holder is gone
(the message shows how old its heartbeat is), delete ``RUN/driver.lock`` and rerun. Mounts with
``nolock`` / ``local_lock=all`` (and most object-store FUSE mounts) keep locks local to one host: there the
lock still guards against a second driver on the same host, not on another. Where the filesystem refuses
locks altogether the driver warns and runs unguarded.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import threading
import warnings
import weakref
from datetime import datetime, timezone
from pathlib import Path

LOCK_NAME = "driver.lock"
HEARTBEAT_S = 15.0
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}

# real path of a run folder -> the lock this process holds on it (weak: a lost RunLock releases itself)
_held: "weakref.WeakValueDictionary[str, RunLock]" = weakref.WeakValueDictionary()
_held_guard = threading.Lock()


class RunFolderBusy(ValueError):
    """Another live driver holds this run folder; the message names it."""


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _age(stamp: str | None) -> str:
    try:
        then = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except (TypeError, ValueError):
        return "unknown"
    return f"{max(0.0, (datetime.now(timezone.utc) - then).total_seconds()):.0f} s ago"


def _command() -> str:
    program = os.path.basename(sys.argv[0] or "python")
    if program == "__main__.py":
        program = f"python -m {os.path.basename(os.path.dirname(sys.argv[0]))}"
    return " ".join([program, *sys.argv[1:]])[:300]


def read_holder(run_dir: str | Path) -> dict | None:
    """The holder record in ``run_dir``'s lock file (the last driver that held it), or None.

    For a folder this process holds, the record comes from memory: opening and closing the lock file here
    would drop this process's POSIX lock.
    """
    with _held_guard:
        mine = _held.get(os.path.realpath(run_dir))
    if mine is not None and mine.locked:
        return dict(mine.record)
    try:
        text = (Path(run_dir) / LOCK_NAME).read_text()
    except OSError:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _busy(run_dir: Path, record: dict | None) -> RunFolderBusy:
    if record:
        who = (f"host {record.get('host', '?')}, pid {record.get('pid', '?')}, since {record.get('since', '?')} "
               f"(last heartbeat {_age(record.get('heartbeat'))}; command: {record.get('command', '?')})")
    else:
        who = "a driver that has not written its record yet"
    return RunFolderBusy(
        f"run folder {run_dir} is held by another driver: {who}. Wait for it to finish, stop it "
        f"(ray job stop, or kill that pid on that host), or set another 'output'. If that driver is gone for "
        f"good and its lock outlived it (a lost node on NFS), delete {run_dir / LOCK_NAME} and rerun."
    )


class RunLock:
    """An exclusive hold on one run folder (see the module docstring); ``release()`` ends it."""

    def __init__(self, run_dir: str | Path, heartbeat_s: float = HEARTBEAT_S):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.heartbeat_s = heartbeat_s
        self.record: dict = {}
        self.locked = False  # False after release, or where the filesystem refuses locks
        self._fd: int | None = None
        self._key = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> "RunLock":
        """Take the folder (creating it) or raise :class:`RunFolderBusy` at once; never waits."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._key = os.path.realpath(self.run_dir)
        with _held_guard:
            other = _held.get(self._key)
            if other is not None:  # POSIX locks are per process: this process is checked by hand
                raise _busy(self.run_dir, other.record)
            _held[self._key] = self
        try:
            self._lock_file()
        except BaseException:
            with _held_guard:
                _held.pop(self._key, None)
            raise
        self.record = {"host": socket.gethostname(), "pid": os.getpid(), "since": _now(), "heartbeat": _now(),
                       "command": _command()}
        self._write()
        if self.heartbeat_s > 0:  # the thread holds the lock weakly, so a lost RunLock can still be collected
            self._thread = threading.Thread(target=_beat, args=(weakref.ref(self), self._stop, self.heartbeat_s),
                                            name="gradsign-run-lock", daemon=True)
            self._thread.start()
        return self

    def _lock_file(self) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EACCES, errno.EAGAIN):
                    raise _busy(self.run_dir, read_holder(self.run_dir)) from None
                if exc.errno in _NO_LOCKS:
                    warnings.warn(f"{self.path}: this filesystem refuses file locks ({exc.strerror}); "
                                  "nothing stops a second driver on this run folder", RuntimeWarning, stacklevel=3)
                    self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                    return
                raise
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd, self.locked = fd, True
                return
            os.close(fd)  # the file was deleted (by hand) or replaced while we locked it: lock the new one

    def _write(self) -> None:
        if self._fd is None:
            return
        data = (json.dumps(self.record) + "\n").encode()
        os.pwrite(self._fd, data, 0)  # same length every beat: a reader sees the old or the new line
        os.ftruncate(self._fd, len(data))

    def _beat_once(self) -> None:
        self.record["heartbeat"] = _now()
        try:
            self._write()
        except OSError:  # storage hiccup: the lock itself is unaffected
            pass

    def release(self) -> None:
        """Give the folder up (idempotent). The file and its last record stay for the next driver."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None
        fd, self._fd, self.locked = self._fd, None, False
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the POSIX lock
        with _held_guard:
            if _held.get(self._key) is self:
                del _held[self._key]

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:  # a run() that raised: its frame going away releases the folder
        try:
            if self._fd is not None:
                self.release()
        except Exception:
            pass


def _beat(ref: "weakref.ref[RunLock]", stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        lock = ref()
        if lock is None or lock._fd is None:
            return
        lock._beat_once()
        del lock


def hold_run_folder(run_dir: str | Path, heartbeat_s: float = HEARTBEAT_S) -> RunLock:
    """Hold ``run_dir`` for this driver, or raise :class:`RunFolderBusy` naming the live holder."""
    return RunLock(run_dir, heartbeat_s).acquire()
