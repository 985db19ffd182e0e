"""A local HTTP server for download tests: 127.0.0.1 only, a free port, stopped with the test."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@contextmanager
def local_server(handler) -> Iterator[tuple[ThreadingHTTPServer, str]]:
    """Serve ``handler`` on a free loopback port; yields the server and its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def range_start(handler: BaseHTTPRequestHandler) -> int:
    """The first byte a ``Range: bytes=N-`` request asks for (0 without one)."""
    header = handler.headers.get("Range")
    return int(header.split("=")[1].split("-")[0]) if header else 0


def send_bytes(handler: BaseHTTPRequestHandler, data: bytes, start: int, cut: int | None = None) -> None:
    """``data[start:]`` as a 200, or a 206 with its Content-Range when the request had a Range;
    ``cut``: drop the connection after that many body bytes (a transfer killed halfway)."""
    ranged = handler.headers.get("Range") is not None
    body = data[start:]
    handler.send_response(206 if ranged else 200)
    handler.send_header("Content-Length", str(len(body)))
    if ranged:
        handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
    handler.end_headers()
    handler.wfile.write(body if cut is None else body[:cut])
    if cut is not None:
        handler.wfile.flush()
        handler.connection.shutdown(socket.SHUT_RDWR)
        handler.close_connection = True
