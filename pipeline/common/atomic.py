"""Atomic file writes: a reader (or a rerun after a crash) sees the old file or the new one, never half.

Each write goes to a temporary file beside the target (``.NAME.*.tmp``, which ``remove_temporaries`` in the
driver clears), gets the mode a plain ``open()`` would give, and is renamed over the target.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def _umask_mode() -> int:
    """The mode a plain ``open()`` would give a new file (0666 less the umask), not mkstemp's 0600."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _replace_atomically(path: Path, write) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, give it the umask's mode, rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` so that ``path`` either does not exist or is complete."""
    _replace_atomically(path, lambda tmp: pq.write_table(table, tmp))


def write_text_atomic(path: Path, text: str) -> None:
    """``path.write_text(text)``, but a crash leaves the old file or the new one, never half of one."""
    _replace_atomically(path, lambda tmp: Path(tmp).write_text(text))


def write_atomic_with_digest(table: pa.Table, path: Path, digest_path: Path, text=None) -> str:
    """Write ``table`` to ``path`` atomically, recording the sha256 of its bytes in ``digest_path`` first.

    Order (crash safety): the Parquet bytes go to a temporary file, their digest is written (atomically)
    to ``digest_path`` (``sha256sum`` format: ``HEX  NAME``), and only then is the file renamed into place.
    A crash before the rename leaves the old file (or none) beside a digest that does not describe it: a
    reader rejects that file and it is scored again; a digest therefore never vouches for bytes it was
    not computed from. ``text(digest)`` gives the digest file's text (``pipeline/common/run_folder.py``
    adds the run it belongs to). Returns the hex digest.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        digest = hashlib.sha256(Path(tmp).read_bytes()).hexdigest()
        write_text_atomic(digest_path, text(digest) if text else f"{digest}  {path.name}\n")
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest
