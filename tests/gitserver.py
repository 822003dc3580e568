"""A git smart-HTTP server over TLS on 127.0.0.1 for tests: ``git http-backend`` behind a small
threaded server that demands Basic auth with one token (any user name), as GitHub does.

Every request's method, path and ``Authorization`` header is recorded before the auth check.
``GitServer.create_repo(name, files)`` makes a bare repository with one commit on ``main``.
"""

from __future__ import annotations

import base64
import hmac
import http.server
import os
import shutil
import ssl
import subprocess
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlsplit

import trustme

GIT_ENV = {
    "GIT_AUTHOR_NAME": "LAP Test",
    "GIT_AUTHOR_EMAIL": "test@lap.invalid",
    "GIT_COMMITTER_NAME": "LAP Test",
    "GIT_COMMITTER_EMAIL": "test@lap.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "HOME": "/nonexistent",
}


class GitServer:
    def __init__(self, *, token: str, ca: trustme.CA) -> None:
        self.token = token
        self.root = Path(tempfile.mkdtemp(prefix="gitserver-"))
        self.received: list[tuple[str, str, str]] = []  # method, path, Authorization
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self.server = server
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, name="gitserver", daemon=True).start()

    def url(self, name: str) -> str:
        return f"https://127.0.0.1:{self.port}/{name}.git"

    def create_repo(self, name: str, files: dict[str, str]) -> None:
        work = self.root / f"{name}.work"
        work.mkdir()
        for path, text in files.items():
            (work / path).write_text(text)
        env = {**os.environ, **GIT_ENV}
        for argv in (
            ["git", "init", "-q", "-b", "main", str(work)],
            ["git", "-C", str(work), "add", "-A"],
            ["git", "-C", str(work), "commit", "-q", "-m", "first commit"],
            ["git", "clone", "-q", "--bare", str(work), str(self.root / f"{name}.git")],
        ):
            subprocess.run(argv, env=env, check=True, capture_output=True)
        shutil.rmtree(work)

    def authorised(self, header: str) -> bool:
        if not header.startswith("Basic "):
            return False
        try:
            _, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return hmac.compare_digest(password.encode(), self.token.encode())

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self.root, ignore_errors=True)


def _handler(git: GitServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            auth = self.headers.get("Authorization", "")
            git.received.append((self.command, self.path, auth))
            if not git.authorised(auth):
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            parts = urlsplit(self.path)
            env = {
                **GIT_ENV,
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "GIT_PROJECT_ROOT": str(git.root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "PATH_INFO": parts.path,
                "QUERY_STRING": parts.query,
                "REQUEST_METHOD": self.command,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "REMOTE_USER": "git",
                "REMOTE_ADDR": self.client_address[0],
                "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            }
            done = subprocess.run(
                ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
            )
            head, _, payload = done.stdout.partition(b"\r\n\r\n")
            status, headers = 200, []
            for line in head.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.split()[0])
                elif name:
                    headers.append((name, value.strip()))
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler
