"""The one place where HTTP requests are made and their failures translated: every download (Zenodo,
an HTTP mirror) opens URLs with :func:`open_url` and retries with :func:`retrying`, which turns
each way a request fails into one of three outcomes: a one-line :class:`StoreError`, a retry after
a wait, or :class:`NotFound` (404) for the caller to name what is missing.

A name lookup that fails, or a network that is unreachable, does not get better within seconds:
retrying it only delays the one message the user needs. A rate limit (HTTP 429 or 503) says how
long to wait in its ``Retry-After`` header, delay-seconds or an HTTP date (RFC 9110 section
10.2.3); anything else there (``nan``, ``-5``, ``1e9``) is not a delay and the default wait applies,
always bounded. Redirects are followed only to http(s) on the host that was asked (never from
https to http): a server that sends the download elsewhere, or to ``ftp://``, is refused in one
line rather than followed.
"""

from __future__ import annotations

import errno
import http.client
import socket
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import TypeVar
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import HTTPRedirectHandler, Request, build_opener

from zoo_dataset.errors import StoreError

MAX_RETRY_AFTER_S = 120.0  # a longer Retry-After is cut to this; the number of waits is bounded by the caller
RETRIES = 5
BACKOFF_S = 1.0  # wait 1, 2, 4, 8 s between tries
TIMEOUT_S = 60
NO_ROUTE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN}
T = TypeVar("T")


class NotFound(StoreError):
    """The server answered 404: the caller says what is missing (a record, a file of a mirror)."""


class CutTransfer(Exception):
    """The server closed the connection before the declared size arrived (retried, resuming with a Range)."""


class _SameHostRedirects(HTTPRedirectHandler):
    """Follows a redirect only to http(s) on the host (and port) of the request, never to plain http from https."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        old, new = urlparse(req.full_url), urlparse(newurl)
        if new.scheme not in ("http", "https") or new.netloc != old.netloc or (old.scheme, new.scheme) == (
                "https", "http"):
            fp.close()
            raise StoreError(f"{req.full_url} redirects to {one_line(newurl)}; refusing it (only redirects to "
                             f"{old.scheme}:// on {old.netloc} are followed)")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = build_opener(_SameHostRedirects)


def open_url(url: str, headers: dict[str, str] | None = None, timeout: float = TIMEOUT_S):
    """``urlopen`` with the redirect rule above (the response is a context manager)."""
    return _OPENER.open(Request(url, headers=headers or {}), timeout=timeout)


def content_length(response) -> int | None:
    """The ``Content-Length`` an answer announces (1*DIGIT, RFC 9110 8.6), None when absent or not a length."""
    value = (response.headers.get("Content-Length") or "").strip()
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 18 else None


def retrying(url: str, attempt: Callable[[], T], sleep: Callable[[float], None] = time.sleep,
             tries: int = RETRIES) -> T:
    """``attempt()``, tried again after connection faults, cut transfers, server errors and rate
    limits (429 and 503 wait their ``Retry-After``). No network fails at once, a 404 raises
    :class:`NotFound`, other answers below 500 a one-line StoreError."""
    error: Exception | None = None
    for n in range(tries):
        wait = BACKOFF_S * 2**n
        try:
            return attempt()
        except HTTPError as exc:
            if exc.code == 404:
                raise NotFound(f"{url}: not found (HTTP 404)") from None
            if exc.code in (429, 503):
                wait = retry_after(exc, wait)
            elif exc.code < 500:
                raise StoreError(http_error(url, exc)) from None
            error = exc
        except (URLError, OSError, http.client.HTTPException, CutTransfer) as exc:
            if message := unreachable(exc, url):
                raise StoreError(message) from None
            error = exc
        if n + 1 < tries:
            sleep(wait)
    raise StoreError(f"{url} failed after {tries} tries ({one_line(error)}); run the same command again to resume")


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
    """Seconds a 429 (or 503) answer asks to wait: its ``Retry-After`` (delay-seconds, ASCII digits
    only, or an HTTP date), else ``default``; always within 0..MAX_RETRY_AFTER_S."""
    value = (exc.headers.get("Retry-After") if exc.headers is not None else None) or ""
    value = value.strip()
    wait = default
    if value.isascii() and value.isdigit():
        wait = float(int(value[:12]))  # 12 digits are already far beyond the bound
    elif value:
        try:
            wait = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, OverflowError):
            wait = default
    return min(max(wait, 0.0), MAX_RETRY_AFTER_S)


def one_line(value: object) -> str:
    """Any message folded to one line (urllib's redirect-loop error spans three)."""
    return " ".join(str(value).split())


def http_error(url: str, exc: HTTPError) -> str:
    """``<url>: HTTP <code> <reason>`` on one line."""
    return f"{url}: HTTP {exc.code} {one_line(exc.reason)}"
