"""A local https site for knowledge documents read from a URL: a certificate made for
127.0.0.1 and localhost (trusted by a worker given SSL_CERT_FILE=<site.cert>), pages whose body
and status a test changes between fetches, and the paths it was asked for."""

from __future__ import annotations

import http.server
import ssl
import subprocess
import threading
from pathlib import Path


class Site:
    def __init__(self, directory: Path) -> None:
        self.cert = directory / "cert.pem"
        key = directory / "key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(self.cert),
             "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
            check=True, capture_output=True)
        self.pages: dict[str, tuple[int, str, bytes, str | None]] = {}
        self.requested: list[str] = []
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                site.requested.append(self.path)
                status, content_type, body, location = site.pages.get(
                    self.path, (404, "text/plain", b"not here", None))
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"https://{host}:{self.port}{path}"

    def serve(self, path: str, body: str, *, status: int = 200,
              content_type: str = "text/html; charset=utf-8") -> None:
        self.pages[path] = (status, content_type, body.encode(), None)

    def redirect(self, path: str, location: str) -> None:
        self.pages[path] = (302, "text/plain", b"moved", location)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
