"""A real HTTP server on 127.0.0.1 laid out as the Hugging Face Hub serves files.

``huggingface_hub.hf_hub_download`` asks ``HEAD`` then ``GET`` of
``{endpoint}/{repo_id}/resolve/{revision}/{filename}``; the answer to ``HEAD``
must carry the repository's commit (``X-Repo-Commit``), the file's ``ETag``
(for a large file the Hub gives its SHA-256) and its ``Content-Length``. This
server answers those from a dict of files that a test may change while it
runs (a new file gets a new commit, as a push to the Hub would), and records
every request as ``"METHOD path"``.
"""

import contextlib
import hashlib
import http.server
import threading
from collections.abc import Iterator
from typing import cast


class HubServer(http.server.ThreadingHTTPServer):
    """The running server: its files, their commits and the requests made."""

    files: dict[tuple[str, str], bytes]
    commits: dict[tuple[str, str], str]
    requests: list[str]

    @property
    def endpoint(self) -> str:
        """What ``HF_ENDPOINT`` should be."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def publish(self, repo_id: str, filename: str, body: bytes) -> str:
        """Serve ``body`` as ``filename`` of ``repo_id`` at a new commit; return it."""
        count = len(self.commits) + 1
        commit = hashlib.sha1(f"{repo_id}/{filename}/{count}".encode()).hexdigest()
        self.files[repo_id, filename] = body
        self.commits[repo_id, filename] = commit
        return commit


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        del format, args

    def _find(self) -> tuple[bytes, str] | None:
        server = cast(HubServer, self.server)
        server.requests.append(f"{self.command} {self.path}")
        path = self.path.split("?", 1)[0].lstrip("/")
        repo, sep, rest = path.partition("/resolve/")
        revision, _, filename = rest.partition("/")
        if not sep or (repo, filename) not in server.files:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        commit = server.commits[repo, filename]
        if revision not in ("main", commit):
            self.send_error(404)
            return None
        return server.files[repo, filename], commit

    def _headers(self, body: bytes, commit: str) -> None:
        self.send_response(200)
        self.send_header("X-Repo-Commit", commit)
        self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()

    def do_HEAD(self) -> None:
        found = self._find()
        if found is not None:
            self._headers(*found)

    def do_GET(self) -> None:
        found = self._find()
        if found is not None:
            self._headers(*found)
            self.wfile.write(found[0])


@contextlib.contextmanager
def serve_hub() -> Iterator[HubServer]:
    """Serve an empty hub on a free port of 127.0.0.1 until the block ends."""
    httpd = HubServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.commits, httpd.requests = {}, {}, []
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
