"""An HTTP/1.1 client on asynchat: several requests over one keep-alive connection, three loops.

What it shows
    * a protocol written once (``HTTPClientSession``) against asynchat's
      interface, run by asynframe's own loop (mixed into
      ``asynchat.async_chat``: ``create_socket`` + ``connect``) or by asyncio
      or uvloop (mixed into ``asynframe.aio.ChatProtocol``:
      ``loop.create_connection``); on both the first requests are pushed
      before the connection is even up, and wait in the output queue;
    * framing a response with terminators switched per state: ``b"\\r\\n\\r\\n"``
      for the status line and headers (at most ``MAX_HEAD`` bytes:
      ``max_frame``), then the ``Content-Length`` as an *int* terminator for
      the body; a chunked body alternates ``b"\\r\\n"`` for each size line
      with an int terminator for each chunk;
    * asynframe's ``frame_received(frame)`` hook: instead of
      ``collect_incoming_data``/``found_terminator`` the session gets each
      whole frame (the head, then the body) in a single call;
    * keep-alive (one connection for every URL) and, with ``--pipeline``,
      pipelining (all requests sent at once, responses matched in order);
    * driving a loop from a blocking function (``fetch``): asynframe's
      ``asyncore.loop`` with a private socket map and a deadline, or a new
      asyncio/uvloop event loop running ``fetch_async``.

Run it (against ``examples/http_server.py``, or any HTTP/1.1 server)
    python examples/http_client.py http://127.0.0.1:8080/ http://127.0.0.1:8080/bytes/100000
    python examples/http_client.py --data hello http://127.0.0.1:8080/echo
    python examples/http_client.py --loop uvloop http://127.0.0.1:8080/   # or --loop asyncio
It prints one line per URL: status, reason, body length and URL.

All URLs must name the same host and port (they share one connection).
Bodies may be framed by ``Content-Length``, by ``Transfer-Encoding: chunked``
or by the end of the connection.  Only ``asynframe`` is imported, never the
stdlib ``asyncore``/``asynchat``.
As a library::

    for response in fetch(["http://127.0.0.1:8080/", "http://127.0.0.1:8080/bytes/10"]):
        print(response.status, len(response.body))

    responses = await fetch_async(urls)     # in a coroutine on asyncio/uvloop
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Deque, Dict, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from asynframe import aio, asynchat, asyncore, loops

LOOPS = loops.LOOPS
USER_AGENT = "asynframe-example-client"
MAX_HEAD = 64 * 1024
MAX_CHUNK_LINE = 1024  # a chunk size line, extensions included


@dataclass
class Request:
    method: str
    target: str  # path and query
    url: str
    body: Optional[bytes] = None


@dataclass
class Response:
    url: str
    status: int
    reason: str
    version: str
    headers: Dict[str, str] = field(default_factory=dict)  # lower-cased names
    body: bytes = b""


class HTTPClientSession:
    """Send requests over one connection; collect ``responses``: for any loop.

    ``finished`` becomes true when every response has arrived or on error
    (``error`` is then the exception); the connection is closed either way.
    It uses only what ``asynchat.async_chat`` and ``aio.ChatProtocol`` both
    offer; the class it is mixed into calls ``start_client`` (before the
    connection is up: the requests wait in the output queue) and
    ``connection_closed`` once the connection is gone.
    """

    finished = False
    reading = "head"

    if TYPE_CHECKING:
        # what it uses of the framing class it is mixed into
        max_frame: int

        def set_terminator(self, term: Any) -> None: ...
        def push(self, data: Any) -> None: ...
        def close(self) -> None: ...

    def start_client(self, host: str, port: int, requests: Sequence[Request], pipeline: bool = False) -> None:
        self.host_header = host if port == 80 else "%s:%d" % (host, port)
        self.pending: Deque[Request] = deque(requests)  # not sent yet
        self.in_flight: Deque[Request] = deque()  # sent, response not complete
        self.pipeline = pipeline
        self.responses: List[Response] = []
        self.error: Optional[BaseException] = None
        self.response: Optional[Response] = None  # head received, body being read
        self.parts: List[bytes] = []  # the body so far, if it comes in pieces
        self.read_head()
        self.send_requests()

    # -- output ----------------------------------------------------------------
    def send_requests(self) -> None:
        # One at a time (wait for each response), or all at once if pipelining.
        while self.pending and (self.pipeline or not self.in_flight):
            request = self.pending.popleft()
            last = not self.pending
            self.push(self.format_request(request, last))
            self.in_flight.append(request)

    def format_request(self, request: Request, last: bool) -> bytes:
        lines = [
            "%s %s HTTP/1.1" % (request.method, request.target),
            "Host: " + self.host_header,
            "User-Agent: " + USER_AGENT,
            "Accept: */*",
        ]
        body = request.body
        if body is not None or request.method in ("POST", "PUT"):
            lines.append("Content-Length: %d" % len(body or b""))
        if last:
            # nothing follows: let the server close its end once it has answered
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")

    # -- input -----------------------------------------------------------------------
    # What the next frame is: "head", "body" (Content-Length), "to-eof" (the
    # body ends with the connection), or, for a chunked body, "chunk-size"
    # (a size line), "chunk-data" (the chunk and its CRLF) or "trailer".
    # Each state sets its terminator and its max_frame, which apply to the
    # very next byte, also when set from frame_received().

    def read(self, what: str, terminator: Any, max_frame: int) -> None:
        self.reading = what
        self.max_frame = max_frame
        self.set_terminator(terminator)

    def read_head(self) -> None:
        self.read("head", b"\r\n\r\n", MAX_HEAD)

    def frame_received(self, frame: bytes) -> None:
        if self.finished:
            return
        response = self.response
        reading = self.reading
        try:
            if reading == "head":
                self.head_received(frame)
            elif response is None:
                raise AssertionError("a body without a response head")
            elif reading == "body":
                response.body = frame
                self.response_complete()
            elif reading == "to-eof":
                self.parts.append(frame)
            else:
                self.chunked_frame_received(reading, response, frame)
        except ValueError as exc:  # a malformed response
            self.fail(exc)

    def frame_too_large(self, size: int) -> None:
        what = "response head" if self.reading == "head" else "line of the chunked body"
        self.fail(ValueError("%s larger than %d bytes" % (what, self.max_frame)))

    def head_received(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or not (code.isascii() and code.isdigit() and len(code) == 3):
            raise ValueError("malformed status line %r" % lines[0])
        status = int(code)
        if 100 <= status < 200:
            return  # an interim response (100 Continue): the real one follows
        headers: Dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                raise ValueError("malformed header line %r" % line)
            name = name.strip().lower()
            value = value.strip()
            headers[name] = headers[name] + ", " + value if name in headers else value
        if not self.in_flight:
            raise ValueError("a response to no request: %r" % lines[0])
        request = self.in_flight[0]
        self.response = Response(request.url, status, reason, version, headers)

        if request.method == "HEAD" or status in (204, 304):
            self.response_complete()  # these never have a body
        elif "transfer-encoding" in headers:
            if headers["transfer-encoding"].lower() != "chunked":
                raise ValueError("Transfer-Encoding %r is not supported" % headers["transfer-encoding"])
            self.read("chunk-size", b"\r\n", MAX_CHUNK_LINE)
        elif "content-length" in headers:
            length = int(headers["content-length"])
            if length:
                # the next frame is the whole body, as long as the server said
                self.read("body", length, 0)
            else:
                self.response_complete()
        else:
            # no length: the body is everything up to the close
            self.read("to-eof", None, 0)

    def chunked_frame_received(self, reading: str, response: Response, frame: bytes) -> None:
        # A chunked body: a hex size line, that many bytes and CRLF, again,
        # until size 0; then trailer fields (ignored here) and an empty line.
        if reading == "chunk-size":
            digits = frame.partition(b";")[0].strip()  # chunk extensions are ignored
            if not digits or digits.strip(b"0123456789abcdefABCDEF"):
                raise ValueError("malformed chunk size line %r" % frame[:40])
            size = int(digits, 16)
            if size:
                # the data and its CRLF, as one frame: an int terminator
                self.read("chunk-data", size + 2, 0)
            else:
                self.read("trailer", b"\r\n", MAX_HEAD)
        elif reading == "chunk-data":
            if not frame.endswith(b"\r\n"):
                raise ValueError("chunk data not followed by CRLF")
            self.parts.append(frame[:-2])
            self.read("chunk-size", b"\r\n", MAX_CHUNK_LINE)
        elif not frame:  # the empty line after the trailer fields
            response.body = b"".join(self.parts)
            self.response_complete()

    def response_complete(self) -> None:
        response = self.response
        assert response is not None
        self.responses.append(response)
        self.in_flight.popleft()
        self.response = None
        self.parts = []
        self.read_head()
        if not self.pending and not self.in_flight:
            self.done()
        elif "close" in response.headers.get("connection", "").lower():
            self.fail(
                ConnectionError(
                    "the server closed the connection with %d requests unanswered"
                    % (len(self.pending) + len(self.in_flight))
                )
            )
        else:
            self.send_requests()

    # -- the end -----------------------------------------------------------------------
    def connection_closed(self, exc: Optional[BaseException] = None) -> None:
        """The connection is gone (*exc*: why, if it broke)."""
        if self.reading == "to-eof" and self.response is not None and not self.finished:
            self.response.body = b"".join(self.parts)
            self.response_complete()
        if not self.finished:
            self.fail(
                exc
                or ConnectionError(
                    "connection closed with %d responses missing" % (len(self.pending) + len(self.in_flight))
                )
            )

    def fail(self, error: BaseException) -> None:
        if not self.finished:
            self.error = error
            self.done()

    def done(self) -> None:
        self.finished = True
        self.close()


# -- asynframe's own loop ------------------------------------------------------------


class HTTPClient(HTTPClientSession, asynchat.async_chat):
    """A client on asynframe's loop: connects to (host, port) on *map*."""

    def __init__(
        self,
        host: str,
        port: int,
        requests: Sequence[Request],
        map: Optional[Dict[Any, Any]] = None,
        pipeline: bool = False,
    ) -> None:
        asynchat.async_chat.__init__(self, map=map)
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.connect((host, port))
        except OSError:
            self.close()
            raise
        self.start_client(host, port, requests, pipeline)

    def handle_connect(self) -> None:
        pass  # the requests are already queued; they go out as the socket allows

    def handle_close(self) -> None:
        self.connection_closed()
        self.close()

    def handle_error(self) -> None:
        # connection refused, ...: keep it for the caller
        self.fail(sys.exc_info()[1] or RuntimeError("unknown error"))


# -- asyncio and uvloop ------------------------------------------------------------------


class AioHTTPClient(HTTPClientSession, aio.ChatProtocol):
    """A client on asyncio or uvloop: the protocol for ``loop.create_connection``.

    ``completed`` is a future of the running loop, done when ``finished``.
    """

    def __init__(self, host: str, port: int, requests: Sequence[Request], pipeline: bool = False) -> None:
        super().__init__()
        self.completed: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
        self.start_client(host, port, requests, pipeline)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        super().connection_lost(exc)
        self.connection_closed(exc)

    def done(self) -> None:
        super().done()
        if not self.completed.done():
            self.completed.set_result(None)


def split_urls(urls: Sequence[str]) -> Tuple[str, int, List[Tuple[str, str]]]:
    """(host, port, [(url, target), ...]); every URL must be http:// on one host:port."""
    host_port = None
    targets = []
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError("not an http:// URL: %r" % url)
        key = (parts.hostname, parts.port or 80)
        if host_port is None:
            host_port = key
        elif key != host_port:
            raise ValueError("all URLs must share one host:port (one connection): %r" % url)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        targets.append((url, target))
    if host_port is None:
        raise ValueError("no URL given")
    return host_port[0], host_port[1], targets


def fetch(
    urls: Sequence[str],
    *,
    method: str = "GET",
    body: Optional[bytes] = None,
    map: Optional[Dict[Any, Any]] = None,
    pipeline: bool = False,
    timeout: float = 30.0,
    loop: str = "asynframe",
) -> List[Response]:
    """Fetch *urls* over one keep-alive connection; the responses, in order.

    *loop* is ``"asynframe"`` (asynframe's ``asyncore.loop``), ``"asyncio"``
    or ``"uvloop"`` (a new event loop running ``fetch_async``).  On
    asynframe's loop with *map* None the client runs on a private socket
    map; pass the map a server lives on to run both in one thread (as the
    tests do).  Raises the client's error (``OSError``, ``ValueError``) or
    ``TimeoutError``.
    """
    if loop != "asynframe":
        if map is not None:
            raise ValueError("map is for asynframe's loop only")
        event_loop = loops.new_event_loop(loop)
        try:
            return event_loop.run_until_complete(
                fetch_async(urls, method=method, body=body, pipeline=pipeline, timeout=timeout)
            )
        finally:
            event_loop.close()

    host, port, targets = split_urls(urls)
    requests = [Request(method, target, url, body) for url, target in targets]
    own_map = map is None
    if own_map:
        map = {}
    client = None
    try:
        client = HTTPClient(host, port, requests, map=map, pipeline=pipeline)
        deadline = time.monotonic() + timeout
        while not client.finished:
            if time.monotonic() > deadline:
                raise TimeoutError("no complete answer from %s:%d within %gs" % (host, port, timeout))
            asyncore.loop(timeout=0.05, map=map, count=1)
    finally:
        if client is not None:
            client.close()
        if own_map:
            asyncore.close_all(map)
    if client.error is not None:
        raise client.error
    return client.responses


async def fetch_async(
    urls: Sequence[str],
    *,
    method: str = "GET",
    body: Optional[bytes] = None,
    pipeline: bool = False,
    timeout: float = 30.0,
) -> List[Response]:
    """``fetch`` on the running asyncio or uvloop event loop."""
    host, port, targets = split_urls(urls)
    requests = [Request(method, target, url, body) for url, target in targets]
    loop = asyncio.get_running_loop()
    client = AioHTTPClient(host, port, requests, pipeline=pipeline)

    async def exchange() -> None:
        await loop.create_connection(lambda: client, host, port)
        await client.completed

    try:
        await asyncio.wait_for(exchange(), timeout)
    except asyncio.TimeoutError:
        raise TimeoutError("no complete answer from %s:%d within %gs" % (host, port, timeout)) from None
    finally:
        client.close()
    if client.error is not None:
        raise client.error
    return client.responses


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="HTTP/1.1 keep-alive client (asynframe asynchat example).")
    parser.add_argument("urls", nargs="+", metavar="URL", help="http://HOST:PORT/PATH, all on one host:port")
    parser.add_argument("--data", help="POST this (UTF-8) text as the body of every request")
    parser.add_argument("--pipeline", action="store_true", help="send all requests at once")
    parser.add_argument("--body", action="store_true", help="write the response bodies to stdout too")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds (default: %(default)s)")
    parser.add_argument(
        "--loop",
        choices=LOOPS,
        default="asynframe",
        help="event loop: asynframe's own, asyncio's or uvloop (default: %(default)s)",
    )
    args = parser.parse_args(argv)

    body = None if args.data is None else args.data.encode("utf-8")
    try:
        responses = fetch(
            args.urls,
            method="GET" if body is None else "POST",
            body=body,
            pipeline=args.pipeline,
            timeout=args.timeout,
            loop=args.loop,
        )
    except ImportError as exc:
        parser.error("--loop %s: %s" % (args.loop, exc))
    except (OSError, ValueError) as exc:
        print("error: %s" % (exc,), file=sys.stderr)
        return 1
    for response in responses:
        print("%d %s %d bytes %s" % (response.status, response.reason, len(response.body), response.url), flush=True)
        if args.body:
            sys.stdout.buffer.write(response.body + b"\n")
            sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
