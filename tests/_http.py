"""A local HTTP server for download tests: 127.0.0.1 only, a free port, stopped with the test."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer


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
