"""What an HTTP failure means for the next try: fail at once (no network), wait (rate limit), or retry.

A name lookup that fails, or a network that is unreachable, does not get better within seconds:
retrying it five times only delays the one message the user needs. A rate limit (HTTP 429) says
how long to wait in its ``Retry-After`` header; the wait is honoured up to a bound.
"""

from __future__ import annotations

import errno
import socket
from email.utils import parsedate_to_datetime
from time import time
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse

MAX_RETRY_AFTER_S = 120.0  # a longer Retry-After is cut to this; the number of waits is bounded by the caller
NO_ROUTE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN}


def unreachable(exc: BaseException, url: str) -> str | None:
    """The one-line message for a failure that no retry can cure (no name lookup, no route), else None."""
    reason = exc.reason if isinstance(exc, URLError) and not isinstance(exc, HTTPError) else exc
    host = urlparse(url).hostname or url
    if isinstance(reason, socket.gaierror):
        return f"cannot reach {host} (name lookup failed: {one_line(reason)}); no network?"
    if isinstance(reason, OSError) and reason.errno in NO_ROUTE:
        return f"cannot reach {host} ({one_line(reason)}); no network?"
    return None


def retry_after(exc: HTTPError, default: float) -> float:
    """Seconds a 429 (or 503) answer asks to wait: its ``Retry-After`` (seconds or an HTTP date), bounded."""
    value = exc.headers.get("Retry-After") if exc.headers is not None else None
    wait = default
    if value:
        try:
            wait = float(value)
        except ValueError:
            try:
                wait = parsedate_to_datetime(value).timestamp() - time()
            except (TypeError, ValueError):
                wait = default
    return min(max(wait, 0.0), MAX_RETRY_AFTER_S)


def one_line(value: object) -> str:
    """Any message folded to one line (urllib's redirect-loop error spans three)."""
    return " ".join(str(value).split())


def http_error(url: str, exc: HTTPError) -> str:
    """``<url>: HTTP <code> <reason>`` on one line."""
    return f"{url}: HTTP {exc.code} {one_line(exc.reason)}"
