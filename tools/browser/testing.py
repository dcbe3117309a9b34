"""A real HTTP server on loopback for testing the browser (and tools built on it) offline.

>>> with LocalSite() as site:                                   # doctest: +SKIP
...     site.add("/hello", "<html><title>Hi</title><p>Hello</p></html>")
...     site.add("/slow", "late", delay=2.0)
...     site.add("/search", handler=lambda req: Route.json({"results": []}))
...     url = site.url("/hello")

Routes match the path (the query string is ignored; handlers see it). ``site.hits[path]`` counts
requests and ``site.requests`` records them, for assertions. Use it with
``[browser] allow_private_network = true``: loopback is private.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.body.decode("utf-8", "replace"))

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Route:
    """What the server answers on a path."""

    body: bytes | str = b""
    status: int = 200
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (a slow server)
    chunks: Callable[[], Iterable[bytes]] | None = None  # a streamed body without Content-Length
    handler: Callable[[Request], Route] | None = None  # a dynamic answer

    @classmethod
    def json(cls, data: Any, status: int = 200) -> Route:
        return cls(json.dumps(data), status=status, content_type="application/json")

    @classmethod
    def redirect(cls, location: str, status: int = 302) -> Route:
        return cls(b"", status=status, headers={"Location": location})


class LocalSite:
    """A threaded HTTP/1.0 server on 127.0.0.1 (a free port) serving :class:`Route` s.

    With ``ssl_context`` (a server context holding a certificate) it speaks HTTPS.
    """

    def __init__(self, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None):
        self.routes: dict[str, Route] = {}
        self.hits: Counter[str] = Counter()
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, 0), self._handler_class())
        self._server.daemon_threads = True
        if ssl_context is not None:
            self._server.socket = ssl_context.wrap_socket(self._server.socket, server_side=True)
        self._scheme = "http" if ssl_context is None else "https"
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def origin(self) -> str:
        return f"{self._scheme}://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.origin + path

    def add(self, path: str, body: bytes | str = b"", **route: Any) -> str:
        """Serve ``body`` (or a handler, a redirect...) at ``path``; returns its URL."""
        self.routes[path] = Route(body, **route)
        return self.url(path)

    def start(self) -> LocalSite:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="local-site", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> LocalSite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self._answer()

            def _answer(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(self.command, parts.path, parse_qs(parts.query), dict(self.headers.items()),
                                  self.rfile.read(length) if length else b"")
                with site._lock:
                    site.hits[parts.path] += 1
                    site.requests.append(request)
                route = site.routes.get(parts.path) or Route("not found", status=404, content_type="text/plain")
                if route.handler is not None:
                    route = route.handler(request)
                if route.delay:
                    time.sleep(route.delay)
                try:
                    self._send(route)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading (a size cap, a timeout): expected

            def _send(self, route: Route) -> None:
                self.send_response(route.status)
                self.send_header("Content-Type", route.content_type)
                for name, value in route.headers.items():
                    self.send_header(name, value)
                if route.chunks is None:
                    body = route.body.encode() if isinstance(route.body, str) else route.body
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    self.end_headers()
                    for chunk in route.chunks():
                        self.wfile.write(chunk)
                        self.wfile.flush()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet tests

        return Handler


def make_pdf(pages: list[list[str]], title: str = "") -> bytes:
    """A small valid PDF with one text line per entry, one page per list (Helvetica, ASCII text)."""

    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    count = len(pages)
    objects = ["<< /Type /Catalog /Pages 2 0 R >>",
               "<< /Type /Pages /Kids [" + " ".join(f"{4 + 2 * i} 0 R" for i in range(count)) + f"] /Count {count} >>",
               "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    for i, lines in enumerate(pages):
        stream = "BT /F1 12 Tf 72 720 Td " + " 0 -16 Td ".join(f"({escape(line)}) Tj" for line in lines) + " ET"
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {5 + 2 * i} 0 R "
                       "/Resources << /Font << /F1 3 0 R >> >> >>")
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
    objects.append(f"<< /Title ({escape(title)}) >>")
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Info {len(objects)} 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def make_slow_pdf(pages: int = 300, operators: int = 100_000) -> bytes:
    """A ~50 KB PDF that costs a parser minutes: every page shares one compressed content stream of
    ``operators`` text operations (each page is parsed anew), within pypdf's per-stream limits."""
    stream = zlib.compress(b"BT /F1 12 Tf 72 712 Td " + b"(A) Tj " * operators + b"ET", 9)
    kids = " ".join(f"{6 + i} 0 R" for i in range(pages))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>", b"<< >>",
               b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream"]
    objects += [b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 5 0 R "
                b"/Resources << /Font << /F1 3 0 R >> >> >>"] * pages
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return out
