"""Writes that appear whole or not at all: write to a temporary name, then rename.

Temporary files and folders (``mkstemp``, ``mkdtemp``) are created private (``0600``,
``0700``), and a rename keeps that mode. Before the rename every temporary file or folder gets
the mode an ordinary ``open`` or ``mkdir`` would have given it under the process's umask, so a
worker or a colleague running as another user on a shared data root can read what braincls
writes. ``durable=True`` also flushes the data and the rename to disk (``fsync``) before
returning: for models and registry files, which must survive a power cut whole.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

#: renameat2(2) flag swapping two paths atomically (Linux 3.15+, glibc 2.28+).
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def current_umask() -> int:
    """The process's umask, read without changing it (``/proc/self/status`` on Linux).

    Elsewhere it is read the classic way (set and restore), which leaves a moment in which
    another thread of the process creates files with a zero umask.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: ``0o666`` less the umask."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode ``mkdir`` gives a new folder: ``0o777`` less the umask."""
    return 0o777 & ~current_umask()


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a folder's entries, to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def atomic_path(target: Path, *, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    The file gets the umask's mode before the rename; with ``durable`` its data and the rename
    reach the disk before this returns. On an exception the temporary file is removed and
    ``target`` is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, file_mode())
        if durable:
            fsync_path(tmp)
        os.replace(tmp, target)
        if durable:
            fsync_path(target.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(target: Path, data: bytes, *, durable: bool = False) -> Path:
    """Atomically write ``data`` to ``target``."""
    with atomic_path(target, durable=durable) as tmp:
        tmp.write_bytes(data)
    return target


def write_text(target: Path, text: str, *, durable: bool = False) -> Path:
    """Atomically write UTF-8 ``text`` to ``target``."""
    return write_bytes(target, text.encode("utf-8"), durable=durable)


def write_json(target: Path, value: Any, *, durable: bool = False) -> Path:
    """Atomically write ``value`` as indented JSON."""
    text = json.dumps(value, indent=2, sort_keys=True, default=str) + "\n"
    return write_text(target, text, durable=durable)


def write_parquet(target: Path, frame: pd.DataFrame) -> Path:
    """Atomically write ``frame`` as parquet (pyarrow, no index)."""
    with atomic_path(target) as tmp:
        frame.to_parquet(tmp, index=False, engine="pyarrow")
    return target


def exchange_paths(first: Path, second: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False where the C library or the file system cannot do it (then nothing changed).
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    renameat2.restype = ctypes.c_int
    result = renameat2(
        _AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE
    )
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def _sync_tree(root: Path) -> None:
    for folder, _dirs, files in os.walk(root):
        for name in files:
            fsync_path(Path(folder) / name)
        fsync_path(Path(folder))


def replace_dir(new: Path, target: Path) -> None:
    """Put the folder ``new`` at ``target``; an existing ``target`` is replaced and removed.

    ``target`` never disappears: it is swapped with ``new`` in one atomic step where the file
    system can (Linux ``RENAME_EXCHANGE``). Elsewhere the old folder is first renamed to a name
    of its own (never a fixed one that two writers would share), which leaves a moment without
    ``target``.
    """
    new, target = Path(new), Path(target)
    try:
        os.rename(new, target)  # no target yet, or an empty one
        return
    except OSError as error:
        if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    if exchange_paths(new, target):
        shutil.rmtree(new, ignore_errors=True)  # now the old content
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    os.replace(target, old)  # onto the empty folder just made
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_dir(target: Path, *, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``target``; rename it onto ``target`` on success.

    The folder gets the umask's mode; an existing ``target`` is replaced only after the new
    directory is complete, without a moment in which there is no ``target``
    (:func:`replace_dir`). With ``durable`` every file in it is flushed to disk first.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, dir_mode())
        if durable:
            _sync_tree(tmp)
        replace_dir(tmp, target)
        if durable:
            fsync_path(target.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
