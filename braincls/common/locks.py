"""Exclusive file locks with a time limit, for state that several processes change.

``fcntl.flock`` serialises writers on one machine (and on network file systems that honour
it); the lock is released when its holder ends, however it ends. A lock that is not free
within the time limit raises :class:`LockTimeout` naming the holder, instead of waiting for
ever behind a hung process.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

#: How often a waiting process tries the lock again.
POLL_SECONDS = 0.1


class LockTimeout(TimeoutError):
    """A lock was not free within its time limit; the message names the holder."""


def _holder(handle_path: Path) -> str:
    try:
        text = handle_path.read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    return text or "an unknown process"


@contextmanager
def file_lock(
    path: Path,
    *,
    timeout_seconds: float,
    what: str,
    error: type[LockTimeout] = LockTimeout,
) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block.

    Waits at most ``timeout_seconds`` (0: try once), then raises ``error`` (a
    :class:`LockTimeout`) saying ``what`` was locked, by whom (process id, host and time,
    written into the lock file by each holder) and what to do.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + max(0.0, timeout_seconds)
    with open(path, "a+b") as handle:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise error(
                        f"{what}: {path} is locked by {_holder(path)} and was not released "
                        f"within {timeout_seconds:g} s. Another braincls run is writing there; "
                        "wait for it to finish and rerun (a lock is released when its process "
                        "ends, so one that stays locked means a hung process: stop it)"
                    ) from None
                time.sleep(POLL_SECONDS)
        try:
            handle.truncate(0)
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            handle.write(f"process {os.getpid()} on {socket.gethostname()} since {stamp}".encode())
            handle.flush()
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
