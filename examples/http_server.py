"""A minimal HTTP/1.1 server on asynchat: keep-alive, pipelining, producers, three loops.

What it shows
    * a protocol written once (``HTTPSession``) against asynchat's interface,
      run by asynframe's own loop (mixed into ``asynchat.async_chat``) or by
      asyncio or uvloop (mixed into ``asynframe.aio.ChatProtocol``);
    * switching terminators per message: the request head is read with the
      bytes terminator ``b"\\r\\n\\r\\n"``, then, if the request has a
      ``Content-Length``, the body with an *int* terminator (the core counts
      the bytes down and calls ``found_terminator`` when they are all in);
    * ``max_frame`` switched with them: a head may not grow past
      ``MAX_HEAD`` (431 when it does), a body is bounded by its length;
    * the fast stock input path: ``collect_incoming_data =
      async_chat._collect_incoming_data`` (``ChatProtocol._collect_incoming_data``
      on asyncio) and ``self._get_data()`` in ``found_terminator`` (the chunks
      are collected without a Python call each);
    * keep-alive and pipelining come for free: requests are answered in the
      order their terminators are found, and ``push`` queues the responses
      in that order;
    * ``push_with_producer`` for large responses: the body is generated a
      chunk at a time, as the socket drains, instead of being built in memory;
    * ``close_when_done`` for ``Connection: close`` and for errors.

Routes
    ``GET /``          a small HTML page
    ``GET /bytes/N``   N bytes (byte i is ``i % 251``), streamed by a producer
    ``GET /chunked/N`` the same bytes, sent with ``Transfer-Encoding: chunked``
    ``POST /echo``     the request body, echoed back
    ``HEAD``           accepted wherever ``GET`` is
    anything else      404 (unknown path) or 405 (known path, wrong method)

A malformed request gets 400 and the connection is closed.  Chunked request
bodies are not supported (501).  Every response but ``/chunked/N`` (to
HTTP/1.1 clients) carries Content-Length.

Run it
    python examples/http_server.py --port 8080                   # asynframe's loop
    python examples/http_server.py --port 8080 --loop asyncio    # or --loop uvloop
    curl -v http://127.0.0.1:8080/ http://127.0.0.1:8080/bytes/100000 -o /dev/null
    curl --data hello http://127.0.0.1:8080/echo
    python examples/http_client.py http://127.0.0.1:8080/ http://127.0.0.1:8080/bytes/10

It prints ``listening on 127.0.0.1:PORT`` once it accepts connections
(``--port 0``: any free port).  Only ``asynframe`` is imported, never the
stdlib ``asyncore``/``asynchat``.  In-process use::

    server = make_server(port=0, map=my_map)          # asynframe's loop
    asyncore.loop(timeout=0.01, map=my_map, count=100)

    service = HTTPService()                           # in a coroutine on asyncio/uvloop
    server = await start_server(service, port=0)
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import re
import socket
import sys
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Dict, List, NamedTuple, Optional, Sequence, Set, Tuple

from asynframe import aio, asynchat, asyncore, loops

SERVER_NAME = "asynframe-example-http"
MAX_HEAD = 64 * 1024  # request line + headers
MAX_BODY = 16 * 1024 * 1024  # request body
MAX_BYTES = 1 << 30  # largest /bytes/N
INLINE_LIMIT = 64 * 1024  # /bytes/N bodies up to this size are pushed whole
CHUNK = 64 * 1024  # producer chunk size
CHUNKED_PIECE = 3000  # data per chunk of a chunked response

LOOPS = loops.LOOPS

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
        return _PATTERN[start : start + size]


class ChunkedProducer:
    """What *producer* makes, framed as HTTP/1.1 chunks, then the last chunk."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer
        self.done = False

    def more(self) -> bytes:
        if self.done:
            return b""
        data = self.producer.more()
        if data:
            return b"%x\r\n%s\r\n" % (len(data), data)
        self.done = True
        return b"0\r\n\r\n"  # the last chunk, and no trailer fields


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


class HTTPService:
    """What every connection shares, on any loop: counters and the open connections."""

    def __init__(self) -> None:
        self.accepted = 0
        self.connections: Set["HTTPSession"] = set()


class HTTPSession:
    """One client connection: a sequence of requests, answered in order.

    It uses only what ``asynchat.async_chat`` and ``aio.ChatProtocol`` both
    offer; the class it is mixed into sets ``collect_incoming_data`` to its
    stock collector, calls ``start_session`` once the connection is up and
    ``session_closed`` once it is gone.
    """

    service: HTTPService

    if TYPE_CHECKING:
        # what it uses of the framing class it is mixed into
        max_frame: int

        def set_terminator(self, term: Any) -> None: ...
        def push(self, data: Any) -> None: ...
        def push_with_producer(self, producer: Any) -> None: ...
        def close_when_done(self) -> None: ...
        def close(self) -> None: ...
        def _get_data(self) -> bytes: ...

    def start_session(self, service: HTTPService) -> None:
        self.service = service
        service.accepted += 1
        service.connections.add(self)
        self.request: Optional[Request] = None  # set while its body is being read
        self.finishing = False  # closing: input is ignored from now on
        self.read_head()

    def session_closed(self) -> None:
        self.service.connections.discard(self)

    # -- input -------------------------------------------------------------------
    def read_head(self) -> None:
        # A head this long without its terminator is refused before it grows
        # further (frame_too_large); limit and terminator apply to the very
        # next byte, also when set from found_terminator().
        self.max_frame = MAX_HEAD
        self.set_terminator(b"\r\n\r\n")

    def read_body(self, length: int) -> None:
        # Read exactly *length* more bytes as the body: an int terminator.
        # The length was checked against MAX_BODY: no other limit needed.
        self.max_frame = 0
        self.set_terminator(length)

    def frame_too_large(self, size: int) -> None:
        # The core has dropped the oversized head (and the rest of that read).
        if not self.finishing:
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
            self.read_head()
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
            if request.version != "HTTP/1.0" and request.headers.get("expect", "").lower() == "100-continue":
                self.push(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.request = request
            self.read_body(length)
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
        elif path.startswith(("/bytes/", "/chunked/")):
            if method not in ("GET", "HEAD"):
                self.method_not_allowed(request, "GET, HEAD")
                return
            kind, _, count = path[1:].partition("/")
            if not (count.isascii() and count.isdigit()) or int(count) > MAX_BYTES:
                self.respond(request, 400, b"N must be an integer from 0 to %d\n" % MAX_BYTES)
                return
            n = int(count)
            if kind == "chunked" and request.version != "HTTP/1.0":
                producer = ChunkedProducer(PatternProducer(n, CHUNKED_PIECE))
                self.respond(request, 200, producer=producer, chunked=True, content_type="application/octet-stream")
            elif n <= INLINE_LIMIT:
                self.respond(request, 200, pattern_bytes(n), "application/octet-stream")
            else:
                self.respond(
                    request, 200, producer=PatternProducer(n), length=n, content_type="application/octet-stream"
                )
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
    def respond(
        self,
        request: Optional[Request],
        status: int,
        body: bytes = b"",
        content_type: str = "text/plain; charset=utf-8",
        *,
        producer: Any = None,
        length: Optional[int] = None,
        chunked: bool = False,
        headers: Sequence[Tuple[str, str]] = (),
    ) -> None:
        """Queue one complete response; close afterwards unless keep-alive applies.

        The body is *body*, or what *producer* makes: *length* bytes, or
        any number if it makes chunks (*chunked*).
        """
        keep_alive = request is not None and request.keep_alive
        if length is None:
            length = len(body)
        lines = [
            "HTTP/1.1 %d %s" % (status, HTTPStatus(status).phrase),
            "Server: " + SERVER_NAME,
            "Date: " + email.utils.formatdate(usegmt=True),
            "Content-Type: " + content_type,
            "Transfer-Encoding: chunked" if chunked else "Content-Length: %d" % length,
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
        # whatever else comes in is collected up to MAX_HEAD, then dropped
        self.max_frame = MAX_HEAD
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


# -- asynframe's own loop ------------------------------------------------------------


class HTTPChannel(HTTPSession, asynchat.async_chat):
    """A session on asynframe's loop: an async_chat over the accepted socket."""

    # The stock collector: asynframe gathers the pieces of a frame in C, and
    # found_terminator() takes them with self._get_data().
    collect_incoming_data = asynchat.async_chat._collect_incoming_data

    def __init__(self, service: HTTPService, sock: socket.socket, map: Optional[Dict[Any, Any]] = None) -> None:
        asynchat.async_chat.__init__(self, sock, map)
        self.start_session(service)

    def close(self) -> None:
        # every way out ends here: close_when_done, peer gone, errors, close_all
        super().close()
        self.session_closed()


class HTTPServer(asyncore.dispatcher):
    """The listening socket on asynframe's loop; ``service`` counts the connections."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        map: Optional[Dict[Any, Any]] = None,
        backlog: int = 128,
        service: Optional[HTTPService] = None,
    ) -> None:
        super().__init__(map=map)
        self.channel_map = map
        self.service = HTTPService() if service is None else service
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.set_reuse_addr()
        self.bind((host, port))
        self.listen(backlog)

    @property
    def address(self) -> Tuple[str, int]:
        """(host, port) actually bound: the port is chosen by the kernel for port 0."""
        host, port = self.socket.getsockname()[:2]
        return str(host), int(port)

    def handle_accepted(self, sock: socket.socket, addr: Any) -> None:
        HTTPChannel(self.service, sock, self.channel_map)

    def handle_close(self) -> None:
        self.close()


def make_server(port: int = 0, host: str = "127.0.0.1", map: Optional[Dict[Any, Any]] = None) -> HTTPServer:
    """A listening HTTPServer on *map* (the default asyncore map if None)."""
    return HTTPServer(host, port, map)


# -- asyncio and uvloop ------------------------------------------------------------------


class AioHTTPSession(HTTPSession, aio.ChatProtocol):
    """A session on asyncio or uvloop: a ChatProtocol made per connection."""

    collect_incoming_data = aio.ChatProtocol._collect_incoming_data

    def __init__(self, service: HTTPService) -> None:
        super().__init__()
        self.service = service

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.start_session(self.service)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        super().connection_lost(exc)
        self.session_closed()

    def abort(self) -> None:
        """Close now, dropping what is not sent yet (as asyncore's close() does)."""
        if self.transport is not None:
            self.transport.abort()


async def start_server(
    service: HTTPService, host: str = "127.0.0.1", port: int = 0, backlog: int = 128
) -> asyncio.Server:
    """Serve HTTP for *service* on the running loop (asyncio's or uvloop's)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: AioHTTPSession(service), host, port, backlog=backlog)


# -- the command line --------------------------------------------------------------------


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Minimal HTTP/1.1 server (asynframe asynchat example).")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8080, help="port to bind, 0 for any free port (default: %(default)s)"
    )
    parser.add_argument(
        "--loop",
        choices=LOOPS,
        default="asynframe",
        help="event loop: asynframe's own, asyncio's or uvloop (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    service = HTTPService()  # on asyncio/uvloop: shared by every session
    try:
        loops.run_server(
            args.loop,
            args.host,
            args.port,
            asyncore_server=lambda host, port: make_server(port, host),
            protocol_factory=lambda: AioHTTPSession(service),
            on_listening=lambda address: print("listening on %s:%d" % address, flush=True),
        )
    except ImportError as exc:
        parser.error("--loop %s: %s" % (args.loop, exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
