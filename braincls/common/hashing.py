"""Content hashes used for manifests and cache keys."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

_CHUNK_BYTES = 1 << 20


def sha256_file(path: Path) -> str:
    """SHA-256 hex digest of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """SHA-256 hex digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def tree_listing_hash(root: Path) -> str:
    """Hash of every file's relative path, size and modification time under ``root``.

    Cheap enough to compute on every run; any added, removed, resized or rewritten file changes it.
    """
    digest = hashlib.sha256()
    root = Path(root)
    for path in sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink()):
        try:
            stat = path.stat()
            digest.update(
                f"{path.relative_to(root).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode()
            )
        except OSError:
            digest.update(f"{path.relative_to(root).as_posix()}\0unreadable\n".encode())
    return digest.hexdigest()


def stable_hash(value: object) -> str:
    """SHA-256 hex digest of ``value`` serialised as canonical JSON (sorted keys)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
