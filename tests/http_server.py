"""A local HTTP file server for download tests: range requests, redirects, cut-off and slow responses.

It listens on 127.0.0.1 only; nothing in the tests reaches another address.
"""

from __future__ import annotations

import http.server
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest


@dataclass
class Served:
    """What the test server serves, and what it was asked."""

    root: Path
    url: str = ""
    # (path, Range header or None) per request, in order.
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    # Cut the next file response off after this many body bytes, then forget it.
    cut_after: int | None = None
    # Answer 200 with the whole file even to a Range request, as some servers do.
    ignore_range: bool = False
    # Cut every file response off after this many body bytes, as a server that always drops.
    cut_every: int | None = None
    # Send the body one byte at a time, this many seconds apart, as a stalling server does.
    trickle_s: float | None = None


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``/files/<name>`` from the root with Range support, ``/redirect/<name>`` as a 301."""

    served: Served

    def do_GET(self) -> None:
        self.served.requests.append((self.path, self.headers.get("Range")))
        if self.path.startswith("/redirect/"):
            self.send_response(301)
            self.send_header("Location", "/files/" + self.path.removeprefix("/redirect/"))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path = self.served.root / self.path.removeprefix("/files/")
        if not self.path.startswith("/files/") or not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = self._range_start()
        if start is not None and start >= len(data):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if start is None:
            self.send_response(200)
            start = 0
        else:
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.served.cut_after is not None:
            body, self.served.cut_after = body[: self.served.cut_after], None
            self.close_connection = True
        if self.served.cut_every is not None:
            body = body[: self.served.cut_every]
            self.close_connection = True
        if self.served.trickle_s is None:
            self.wfile.write(body)
            return
        self._trickle(body, self.served.trickle_s)

    def _trickle(self, body: bytes, interval_s: float) -> None:
        """Write ``body`` a byte at a time; stop once the client has hung up."""
        for i in range(len(body)):
            try:
                self.wfile.write(body[i : i + 1])
            except OSError:  # the client gave up: nothing left to send to
                self.close_connection = True
                return
            time.sleep(interval_s)

    def _range_start(self) -> int | None:
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match is None or self.served.ignore_range:
            return None
        return int(match[1])

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: pytest shows the test's own output on failure."""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Served]:
    root = tmp_path / "server"
    root.mkdir()
    served = Served(root=root)
    handler = type("Handler", (_Handler,), {"served": served})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    served.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield served
    httpd.shutdown()
    httpd.server_close()
    thread.join()
