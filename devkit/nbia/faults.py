"""Fault injection for the local NBIA server: the ways TCIA fails in practice, on demand.

A :class:`FaultPlan` is a thread-safe queue of :class:`Fault` entries. Each request to an NBIA
endpoint takes the first pending fault that targets it (by endpoint and, optionally, by
SeriesInstanceUID) and consumes one of its uses; ``count=None`` keeps a fault forever. Tests
hold the plan object; a server started with ``control=True`` also accepts faults over HTTP
(``POST /braincls-control/faults`` with the fields of :class:`Fault` as JSON, checked by
:meth:`Fault.from_json`).
"""

from __future__ import annotations

import re
import threading
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

IMAGE_ENDPOINTS = frozenset({"getImage", "getImageWithMD5Hash"})


class FaultKind(StrEnum):
    """What the server does instead of answering normally."""

    #: HTTP 500 with nginx's short ``text/plain`` body.
    HTTP_500 = "http_500"
    #: nginx's HTML error pages.
    HTTP_502 = "http_502"
    HTTP_503 = "http_503"
    HTTP_504 = "http_504"
    #: HTTP 429, with ``Retry-After: <retry_after_seconds>`` when that is set.
    HTTP_429 = "http_429"
    #: Wait ``delay_seconds`` before answering (normally) — for client timeouts.
    SLOW = "slow"
    #: Send ``reset_after_bytes`` of the body, then reset the TCP connection.
    RESET = "reset"
    #: HTTP 200 with an HTML error page (a proxy's maintenance page).
    HTML_200 = "html_200"
    #: HTTP 200 with an empty body.
    EMPTY_200 = "empty_200"
    #: Download only: a well-formed ZIP with ``drop_files`` fewer DICOM files and no
    #: ``md5hashes.csv`` (NBIA's stream after a server-side error).
    SHORT_ZIP = "short_zip"
    #: Download only: one ``md5hashes.csv`` row is wrong.
    WRONG_MD5 = "wrong_md5"
    #: Download only: an extra entry named ``entry_name`` (default ``../../escape.dcm``).
    ZIP_SLIP = "zip_slip"
    #: Download only: an extra entry that is a symbolic link to ``/etc/passwd``.
    ZIP_SYMLINK = "zip_symlink"

    @property
    def download_only(self) -> bool:
        """True for faults that only make sense for a ZIP download."""
        return self in _DOWNLOAD_ONLY


_DOWNLOAD_ONLY = frozenset(
    {FaultKind.SHORT_ZIP, FaultKind.WRONG_MD5, FaultKind.ZIP_SLIP, FaultKind.ZIP_SYMLINK}
)


_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_NULLABLE = frozenset({"endpoint", "series_uid", "count", "retry_after_seconds"})
#: Field, accepted types, and the bounds of its value (a string's: of its length).
_FIELD_RULES: tuple[tuple[str, tuple[type, ...], float, float], ...] = (
    ("endpoint", (str,), 1, 64),
    ("series_uid", (str,), 1, 64),
    ("count", (int,), 1, 1_000_000),
    ("retry_after_seconds", (int, float), 0, 3600),
    ("delay_seconds", (int, float), 0, 600),
    ("reset_after_bytes", (int,), 0, 1 << 30),
    ("drop_files", (int,), 0, 100_000),
    ("entry_name", (str,), 1, 255),
)


@dataclass(frozen=True)
class Fault:
    """One injected failure. ``endpoint`` ``None`` targets every NBIA endpoint (download-only
    kinds: both download endpoints); ``series_uid`` narrows it to requests for one series;
    ``count`` is the number of requests it affects (``None``: every request until cleared)."""

    kind: FaultKind
    endpoint: str | None = None
    series_uid: str | None = None
    count: int | None = 1
    retry_after_seconds: float | None = None
    delay_seconds: float = 2.0
    reset_after_bytes: int = 2048
    drop_files: int = 1
    entry_name: str = "../../escape.dcm"

    def matches(self, endpoint: str, series_uid: str | None) -> bool:
        """Whether this fault applies to a request of ``endpoint`` for ``series_uid``."""
        if self.endpoint is not None and self.endpoint != endpoint:
            return False
        if self.kind.download_only and endpoint not in IMAGE_ENDPOINTS:
            return False
        return self.series_uid is None or self.series_uid == series_uid

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (the control endpoint's format)."""
        data = asdict(self)
        data["kind"] = self.kind.value
        return data

    @classmethod
    def from_json(cls, data: Any) -> Fault:
        """Inverse of :meth:`to_json`, for what arrives over HTTP: every field is checked
        (type and range), and unknown keys, other types or values out of range raise
        ``ValueError`` (or ``TypeError``/``KeyError``) with the reason."""
        if not isinstance(data, dict):
            raise ValueError("a fault is a JSON object")
        values = dict(data)
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown field(s) {unknown}")
        values["kind"] = FaultKind(values["kind"])
        for name, kinds, low, high in _FIELD_RULES:
            if name not in values or (values[name] is None and name in _NULLABLE):
                continue
            value = values[name]
            if isinstance(value, bool) or not isinstance(value, kinds):
                raise ValueError(f"{name} must be {' or '.join(k.__name__ for k in kinds)}")
            if isinstance(value, str):
                if not low <= len(value) <= high:
                    raise ValueError(f"{name} must be {low} to {high} characters long")
                if name == "series_uid" and not _UID.match(value):
                    raise ValueError("series_uid must be a DICOM UID (digits and dots)")
            elif not low <= value <= high:
                raise ValueError(f"{name} must lie between {low} and {high}")
        return cls(**values)


@dataclass
class FaultPlan:
    """Thread-safe list of pending faults (first match wins)."""

    _faults: list[Fault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(
        self,
        kind: FaultKind | str,
        *,
        endpoint: str | None = None,
        count: int | None = 1,
        series_uid: str | None = None,
        **options: Any,
    ) -> Fault:
        """Queue a fault; ``options`` are the other fields of :class:`Fault`."""
        fault = Fault(
            kind=FaultKind(kind), endpoint=endpoint, series_uid=series_uid, count=count, **options
        )
        return self.push(fault)

    def push(self, fault: Fault) -> Fault:
        """Queue an already built fault (the control endpoint's path)."""
        if fault.count is not None and fault.count < 1:
            raise ValueError(f"count must be at least 1 or None, got {fault.count}")
        with self._lock:
            self._faults.append(fault)
        return fault

    def take(self, endpoint: str, series_uid: str | None = None) -> Fault | None:
        """Consume one use of the first fault matching this request, if any."""
        with self._lock:
            for index, fault in enumerate(self._faults):
                if not fault.matches(endpoint, series_uid):
                    continue
                if fault.count is not None:
                    if fault.count <= 1:
                        del self._faults[index]
                    else:
                        self._faults[index] = replace(fault, count=fault.count - 1)
                return fault
        return None

    def clear(self) -> None:
        """Drop every pending fault."""
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[Fault]:
        """A copy of the pending faults."""
        with self._lock:
            return list(self._faults)
