"""Exceptions of the NBIA client: one class per thing that can go wrong, each saying whether a
retry can help.

Every message names what was asked for (the endpoint, or the series and its collection) and what
was wrong, so that a failed run can be acted on without a debugger. After the last try the retry
loop records how many attempts were made; ``str()`` then ends with ``[gave up after N attempts]``.
"""

from __future__ import annotations


class TciaError(Exception):
    """Base class of every error raised by :mod:`braincls.ingest`."""

    #: Whether another try of the same request can succeed.
    retryable: bool = False

    def __init__(self, message: str, *, retry_after_seconds: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: Seconds the server asked us to wait (HTTP ``Retry-After``), if it said.
        self.retry_after_seconds = retry_after_seconds
        #: Attempts made before this error was raised to the caller (set by the retry loop).
        self.attempts = 1

    def __str__(self) -> str:
        if self.attempts > 1:
            return f"{self.message} [gave up after {self.attempts} attempts]"
        return self.message


class TciaHttpError(TciaError):
    """The server answered with an HTTP error status."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        body: str = "",
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(message, retry_after_seconds=retry_after_seconds)
        self.status_code = status_code
        #: The start of the response body (NBIA explains 400s there in plain text).
        self.body = body


class TciaRequestError(TciaHttpError):
    """HTTP 4xx other than 429: the request itself is wrong (unknown parameter, unknown or
    withheld series). Retrying the same request cannot help."""

    retryable = False


class TciaServerError(TciaHttpError):
    """HTTP 5xx: the server (or the nginx in front of it) failed; TCIA recovers from these."""

    retryable = True


class TciaRateLimitedError(TciaHttpError):
    """HTTP 429: too many requests; the wait in ``Retry-After`` is honoured."""

    retryable = True


class TciaTransportError(TciaError):
    """The connection failed: refused, reset, closed mid-stream."""

    retryable = True


class TciaTimeoutError(TciaTransportError):
    """No answer (or no further bytes) within the configured timeout."""


class TciaResponseError(TciaError):
    """HTTP 200, but the body is not what the endpoint returns (an HTML error page, broken JSON).

    Retryable: TCIA's proxies serve such pages during outages."""

    retryable = True


class UnsafeRecordError(TciaError):
    """A listed value cannot be used as a folder name (it would escape the raw tree)."""

    retryable = False


class SeriesVerificationError(TciaError):
    """A downloaded series failed verification; nothing of it was kept."""

    retryable = True


class CorruptArchiveError(SeriesVerificationError):
    """The ZIP cannot be read (truncated stream, bad CRC, not a ZIP at all)."""


class IncompleteSeriesError(SeriesVerificationError):
    """A well-formed ZIP that lacks files or ``md5hashes.csv`` (the short-ZIP failure of TCIA)."""


class ChecksumMismatchError(SeriesVerificationError):
    """A file's MD5 differs from its ``md5hashes.csv`` row."""


class SizeMismatchError(SeriesVerificationError):
    """The DICOM bytes received differ from the listing's ``FileSize``."""


class UnsafeArchiveError(SeriesVerificationError):
    """The ZIP holds an entry that could write outside the series folder (absolute path, ``..``,
    a link or a nested folder). Refused outright, never retried."""

    retryable = False
