"""A real HTTP server on 127.0.0.1 over a folder, for the download tests.

A request for ``/MODE/NAME`` serves file ``NAME`` of the folder, changed by
``MODE``: ``ok`` as it is; ``404`` and ``500`` those errors; ``slow`` after a
second; ``corrupt`` with one byte flipped (JSON files, such as weight cards,
stay intact); ``truncated`` with half its body after a full
``Content-Length``; ``stall`` with half its body, then nothing until the server
stops (for killing a client mid-download); ``nolength`` without a
``Content-Length``. The server records every path requested.
"""

import contextlib
import http.server
import pathlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, cast


class FileServer(http.server.ThreadingHTTPServer):
    """The running server: its folder, the paths requested, and its URLs."""

    root: pathlib.Path
    requests: list[str]
    stopping: threading.Event

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet when a client hung up (the timeout tests do); others print."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def url(self, mode: str, name: str = "") -> str:
        """The URL of ``name`` served in ``mode``."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/{mode}/{name}"


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        del format, args

    def do_GET(self) -> None:
        server = cast(FileServer, self.server)
        server.requests.append(self.path)
        mode, _, rest = self.path.lstrip("/").partition("/")
        path = server.root / rest
        if mode in {"404", "500"} or not path.is_file():
            self.send_error(int(mode) if mode == "500" else 404)
            return
        body = path.read_bytes()
        if mode == "slow":
            time.sleep(1.0)
        if mode == "corrupt" and path.suffix != ".json":
            flip = min(100, len(body) - 1)
            body = body[:flip] + bytes([body[flip] ^ 0xFF]) + body[flip + 1 :]
        self.send_response(200)
        if mode != "nolength":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode in {"truncated", "stall"}:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            if mode == "truncated":
                return
            server.stopping.wait(60.0)
            body = body[len(body) // 2 :]
        self.wfile.write(body)


@contextlib.contextmanager
def serve(root: pathlib.Path) -> Iterator[FileServer]:
    """Serve ``root`` on a free port of 127.0.0.1 until the block ends."""
    httpd = FileServer(("127.0.0.1", 0), _Handler)
    httpd.root = root
    httpd.requests = []
    httpd.stopping = threading.Event()
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    thread.start()
    try:
        yield httpd
    finally:
        httpd.stopping.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join()
