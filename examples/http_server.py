"""A minimal HTTP/1.1 server on asynchat: keep-alive, pipelining, producers.

What it shows
    * switching terminators per message: the request head is read with the
      bytes terminator ``b"\\r\\n\\r\\n"``, then, if the request has a
      ``Content-Length``, the body with an *int* terminator (asynchat counts
      the bytes down and calls ``found_terminator`` when they are all in);
    * the fast stock input path: ``collect_incoming_data =
      async_chat._collect_incoming_data`` and ``self._get_data()`` in
      ``found_terminator`` (the chunks are collected without a Python call
      each);
    * keep-alive and pipelining come for free: requests are answered in the
      order their terminators are found, and ``push`` queues the responses
      in that order;
    * ``push_with_producer`` for large responses: the body is generated a
      chunk at a time, as the socket drains, instead of being built in memory;
    * ``close_when_done`` for ``Connection: close`` and for errors.

Routes
    ``GET /``          a small HTML page
    ``GET /bytes/N``   N bytes (byte i is ``i % 251``), streamed by a producer
    ``POST /echo``     the request body, echoed back
    ``HEAD``           accepted wherever ``GET`` is
    anything else      404 (unknown path) or 405 (known path, wrong method)

A malformed request gets 400 and the connection is closed.  Chunked request
bodies are not supported (501).  Every response carries Content-Length.

Run it
    python examples/http_server.py --port 8080     # --port 0: any free port
    curl -v http://127.0.0.1:8080/ http://127.0.0.1:8080/bytes/100000 -o /dev/null
    curl --data hello http://127.0.0.1:8080/echo
    python examples/http_client.py http://127.0.0.1:8080/ http://127.0.0.1:8080/bytes/10

It prints ``listening on 127.0.0.1:PORT`` once it accepts connections.
Only ``asynframe`` is imported, never the stdlib ``asyncore``/``asynchat``.
In-process use::

    server = make_server(port=0, map=my_map)
    asyncore.loop(timeout=0.01, map=my_map, count=100)
"""

from __future__ import annotations

import argparse
import email.utils
import re
import signal
import socket
import sys
from http import HTTPStatus
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from asynframe import asynchat, asyncore

SERVER_NAME = "asynframe-example-http"
MAX_HEAD = 64 * 1024          # request line + headers
MAX_BODY = 16 * 1024 * 1024   # request body
MAX_BYTES = 1 << 30           # largest /bytes/N
INLINE_LIMIT = 64 * 1024      # /bytes/N bodies up to this size are pushed whole
CHUNK = 64 * 1024             # producer chunk size

PERIOD = 251  # a prime, so a lost or repeated chunk changes the content
_PATTERN = bytes(range(PERIOD)) * (CHUNK // PERIOD + 2)

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_VERSION = re.compile(r"HTTP/(\d)\.(\d)\Z")

INDEX_PAGE = b"""<!doctype html>
<html><head><title>asynframe HTTP example</title></head>
<body><h1>Hello from asynframe</h1>
<p>Try <a href="/bytes/1000">/bytes/1000</a> or POST something to /echo.</p>
</body></html>
"""


class PatternProducer:
    """Produce *n* bytes, byte i being ``i % 251``, *chunk* bytes per ``more()``."""

    def __init__(self, n: int, chunk: int = CHUNK) -> None:
        self.remaining = n
        self.offset = 0
        self.chunk = min(chunk, CHUNK)

    def more(self) -> bytes:
        size = min(self.chunk, self.remaining)
        if size <= 0:
            return b""  # an empty result ends the producer
        start = self.offset % PERIOD
        self.offset += size
        self.remaining -= size
        return _PATTERN[start:start + size]


def pattern_bytes(n: int) -> bytes:
    """The body of ``GET /bytes/n``, all at once."""
    return b"".join(iter(PatternProducer(n).more, b""))


class Request(NamedTuple):
    method: str
    target: str
    version: str
    headers: Dict[str, str]  # lower-cased names
    keep_alive: bool


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class HTTPChannel(asynchat.async_chat):
    """One client connection: a sequence of requests, answered in order."""

    # The stock collector: asynframe gathers the pieces of a frame in C, and
    # found_terminator() takes them with self._get_data().
    collect_incoming_data = asynchat.async_chat._collect_incoming_data

    def __init__(self, server: "HTTPServer", sock: socket.socket, map: Optional[Dict[Any, Any]] = None) -> None:
        super().__init__(sock, map)
        self.server = server
        self.request: Optional[Request] = None  # set while its body is being read
        self.finishing = False                  # closing: input is ignored from now on
        self.set_terminator(b"\r\n\r\n")

    # -- input -------------------------------------------------------------------
    def handle_read(self) -> None:
        super().handle_read()
        if self.finishing:
            # we have answered for the last time: drop whatever else comes in
            del self.incoming[:]
        elif self.request is None and sum(map(len, self.incoming)) > MAX_HEAD:
            # a head this long without its terminator: refuse before it grows further
            del self.incoming[:]
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large")

    def found_terminator(self) -> None:
        data = self._get_data()
        if self.finishing:
            return
        request = self.request
        if request is None:
            self.head_received(data)
        else:
            # the body of *request* is complete: back to reading heads
            self.request = None
            self.set_terminator(b"\r\n\r\n")
            self.handle_request(request, data)

    def head_received(self, head: bytes) -> None:
        # Stray CRLFs between requests are allowed (RFC 9112 section 2.2).
        head = head.lstrip(b"\r\n")
        if not head:
            return
        try:
            request, length = parse_head(head)
        except BadRequest as exc:
            self.send_error(exc.status, str(exc))
            return
        if length:
            # Read exactly *length* more bytes as the body: an int terminator.
            if request.version != "HTTP/1.0" and request.headers.get("expect", "").lower() == "100-continue":
                self.push(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.request = request
            self.set_terminator(length)
        else:
            self.handle_request(request, b"")

    # -- the application -----------------------------------------------------------
    def handle_request(self, request: Request, body: bytes) -> None:
        method = request.method
        path = request.target.partition("?")[0]
        if path == "/":
            if method in ("GET", "HEAD"):
                self.respond(request, 200, INDEX_PAGE, "text/html; charset=utf-8")
            else:
                self.method_not_allowed(request, "GET, HEAD")
        elif path.startswith("/bytes/"):
            if method not in ("GET", "HEAD"):
                self.method_not_allowed(request, "GET, HEAD")
                return
            count = path[len("/bytes/"):]
            if not (count.isascii() and count.isdigit()) or int(count) > MAX_BYTES:
                self.respond(request, 400, b"N must be an integer from 0 to %d\n" % MAX_BYTES)
                return
            n = int(count)
            if n <= INLINE_LIMIT:
                self.respond(request, 200, pattern_bytes(n), "application/octet-stream")
            else:
                self.respond(request, 200, producer=PatternProducer(n), length=n,
                             content_type="application/octet-stream")
        elif path == "/echo":
            if method == "POST":
                self.respond(request, 200, body, "application/octet-stream")
            else:
                self.method_not_allowed(request, "POST")
        else:
            self.respond(request, 404, b"no such path: " + path.encode("latin-1", "replace") + b"\n")

    def method_not_allowed(self, request: Request, allow: str) -> None:
        self.respond(request, 405, b"method not allowed\n", headers=[("Allow", allow)])

    # -- output ----------------------------------------------------------------------
    def respond(self, request: Optional[Request], status: int, body: bytes = b"",
                content_type: str = "text/plain; charset=utf-8", *, producer: Any = None,
                length: Optional[int] = None, headers: Sequence[Tuple[str, str]] = ()) -> None:
        """Queue one complete response; close afterwards unless keep-alive applies."""
        keep_alive = request is not None and request.keep_alive
        if length is None:
            length = len(body)
        lines = [
            "HTTP/1.1 %d %s" % (status, HTTPStatus(status).phrase),
            "Server: " + SERVER_NAME,
            "Date: " + email.utils.formatdate(usegmt=True),
            "Content-Type: " + content_type,
            "Content-Length: %d" % length,
            "Connection: " + ("keep-alive" if keep_alive else "close"),
        ]
        lines.extend("%s: %s" % header for header in headers)
        self.push(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if request is None or request.method != "HEAD":
            if producer is not None:
                self.push_with_producer(producer)
            elif body:
                self.push(body)
        if not keep_alive:
            self.finish()

    def send_error(self, status: int, message: str) -> None:
        """Answer a request we could not parse, and close: the framing is lost."""
        self.respond(None, status, message.encode("latin-1", "replace") + b"\n")

    def finish(self) -> None:
        """Close once the queued responses are sent; ignore input until then."""
        self.finishing = True
        self.request = None
        self.set_terminator(None)
        self.close_when_done()


def parse_head(head: bytes) -> Tuple[Request, int]:
    """(request, body length) from a request line plus headers, or BadRequest."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _TOKEN.match(parts[0]) or not parts[1]:
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    match = _VERSION.match(version)
    if not match:
        raise BadRequest(400, "malformed HTTP version")
    if match.group(1) != "1":
        raise BadRequest(505, "only HTTP/1.x is spoken here")
    if not (target.startswith("/") or target == "*"):
        raise BadRequest(400, "only origin-form request targets are supported")

    headers: Dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.match(name):
            raise BadRequest(400, "malformed header line")
        name = name.lower()
        value = value.strip(" \t")
        if name in headers:
            if name == "content-length" and headers[name] != value:
                raise BadRequest(400, "conflicting Content-Length headers")
            headers[name] = headers[name] + ", " + value
        else:
            headers[name] = value

    if "transfer-encoding" in headers:
        raise BadRequest(501, "Transfer-Encoding is not supported")
    length = 0
    if "content-length" in headers:
        value = headers["content-length"].split(",")[0].strip()
        if not (value.isascii() and value.isdigit()):
            raise BadRequest(400, "malformed Content-Length")
        length = int(value)
        if length > MAX_BODY:
            raise BadRequest(413, "request body too large")

    tokens = {token.strip().lower() for token in headers.get("connection", "").split(",")}
    if version == "HTTP/1.0":
        keep_alive = "keep-alive" in tokens
    else:
        keep_alive = "close" not in tokens
    return Request(method, target, version, headers, keep_alive), length


class HTTPServer(asyncore.dispatcher):
    """The listening socket; counts the connections it accepted."""

    channel_class = HTTPChannel

    def __init__(self, host: str = "127.0.0.1", port: int = 0, map: Optional[Dict[Any, Any]] = None,
                 backlog: int = 128) -> None:
        super().__init__(map=map)
        self.channel_map = map
        self.accepted = 0
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.set_reuse_addr()
        self.bind((host, port))
        self.listen(backlog)

    @property
    def address(self):
        """(host, port) actually bound: the port is chosen by the kernel for port 0."""
        return self.socket.getsockname()[:2]

    def handle_accepted(self, sock: socket.socket, addr: Any) -> None:
        self.accepted += 1
        self.channel_class(self, sock, self.channel_map)

    def handle_close(self) -> None:
        self.close()


def make_server(port: int = 0, host: str = "127.0.0.1", map: Optional[Dict[Any, Any]] = None) -> HTTPServer:
    """A listening HTTPServer on *map* (the default asyncore map if None)."""
    return HTTPServer(host, port, map)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Minimal HTTP/1.1 server (asynframe asynchat example).")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="port to bind, 0 for any free port (default: %(default)s)")
    args = parser.parse_args(argv)

    server = make_server(args.port, args.host)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    print("listening on %s:%d" % server.address, flush=True)
    try:
        asyncore.loop(timeout=1.0)
    except KeyboardInterrupt:
        pass
    finally:
        asyncore.close_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
