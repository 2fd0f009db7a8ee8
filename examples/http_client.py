"""An HTTP/1.1 client on asynchat: several requests over one keep-alive connection.

What it shows
    * a client-side ``async_chat``: ``create_socket`` + ``connect``, with the
      first requests pushed before the connection is even up (they wait in
      the output queue until the socket becomes writable);
    * framing a response with two terminators in turn: ``b"\\r\\n\\r\\n"`` for
      the status line and headers, then the ``Content-Length`` as an *int*
      terminator for the body;
    * asynframe's ``frame_received(frame)`` hook: instead of
      ``collect_incoming_data``/``found_terminator`` the channel gets each
      whole frame (the head, then the body) in a single call;
    * keep-alive (one connection for every URL) and, with ``--pipeline``,
      pipelining (all requests sent at once, responses matched in order);
    * driving ``asyncore.loop`` from a blocking function (``fetch``) with a
      private socket map and a deadline.

Run it (against ``examples/http_server.py``, or any HTTP/1.1 server)
    python examples/http_client.py http://127.0.0.1:8080/ http://127.0.0.1:8080/bytes/100000
    python examples/http_client.py --data hello http://127.0.0.1:8080/echo
It prints one line per URL: status, reason, body length and URL.

All URLs must name the same host and port (they share one connection).
Responses framed by ``Transfer-Encoding: chunked`` are not supported.  Only
``asynframe`` is imported, never the stdlib ``asyncore``/``asynchat``.
As a library::

    for response in fetch(["http://127.0.0.1:8080/", "http://127.0.0.1:8080/bytes/10"]):
        print(response.status, len(response.body))
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from asynframe import asynchat, asyncore

USER_AGENT = "asynframe-example-client"
MAX_HEAD = 64 * 1024


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


class HTTPClient(asynchat.async_chat):
    """Send *requests* over one connection to (host, port); collect ``responses``.

    ``finished`` becomes true when every response has arrived or on error
    (``error`` is then the exception); the connection is closed either way.
    """

    def __init__(self, host: str, port: int, requests: Sequence[Request], map: Optional[Dict[Any, Any]] = None,
                 pipeline: bool = False) -> None:
        super().__init__(map=map)
        self.host_header = host if port == 80 else "%s:%d" % (host, port)
        self.pending: Deque[Request] = deque(requests)  # not sent yet
        self.in_flight: Deque[Request] = deque()        # sent, response not complete
        self.pipeline = pipeline
        self.responses: List[Response] = []
        self.error: Optional[BaseException] = None
        self.finished = False
        self.response: Optional[Response] = None  # head received, body being read
        self.to_eof = False                       # body delimited by the connection close
        self.set_terminator(b"\r\n\r\n")
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.connect((host, port))
        except OSError:
            self.close()
            raise
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
    def frame_received(self, frame: bytes) -> None:
        if self.finished:
            return
        if self.to_eof:
            self.response.body += frame  # type: ignore[union-attr]
        elif self.response is None:
            self.head_received(frame)
        else:
            self.response.body = frame
            self.response_complete()

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
        request = self.in_flight[0]
        self.response = Response(request.url, status, reason, version, headers)

        if request.method == "HEAD" or status in (204, 304):
            self.response_complete()  # these never have a body
        elif "transfer-encoding" in headers:
            raise ValueError("Transfer-Encoding %r is not supported" % headers["transfer-encoding"])
        elif "content-length" in headers:
            length = int(headers["content-length"])
            if length:
                self.set_terminator(length)  # the next frame is the whole body
            else:
                self.response_complete()
        else:
            # no length: the body is everything up to the close
            self.to_eof = True
            self.set_terminator(None)

    def response_complete(self) -> None:
        response = self.response
        assert response is not None
        self.responses.append(response)
        self.in_flight.popleft()
        self.response = None
        self.set_terminator(b"\r\n\r\n")
        if not self.pending and not self.in_flight:
            self.done()
        elif "close" in response.headers.get("connection", "").lower():
            self.fail(ConnectionError("the server closed the connection with %d requests unanswered"
                                      % (len(self.pending) + len(self.in_flight))))
        else:
            self.send_requests()

    def handle_read(self) -> None:
        super().handle_read()
        if not self.finished and self.response is None and sum(map(len, self.incoming)) > MAX_HEAD:
            self.fail(ValueError("response head larger than %d bytes" % MAX_HEAD))

    # -- connection events -----------------------------------------------------------
    def handle_connect(self) -> None:
        pass  # the requests are already queued; they go out as the socket allows

    def handle_close(self) -> None:
        if self.to_eof and not self.finished:
            self.to_eof = False
            self.response_complete()
        if not self.finished:
            self.fail(ConnectionError("connection closed with %d responses missing"
                                      % (len(self.pending) + len(self.in_flight))))

    def handle_error(self) -> None:
        # connection refused, a malformed response, ...: keep it for the caller
        self.fail(sys.exc_info()[1] or RuntimeError("unknown error"))

    def fail(self, error: BaseException) -> None:
        if not self.finished:
            self.error = error
            self.done()

    def done(self) -> None:
        self.finished = True
        self.close()


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


def fetch(urls: Sequence[str], *, method: str = "GET", body: Optional[bytes] = None,
          map: Optional[Dict[Any, Any]] = None, pipeline: bool = False, timeout: float = 30.0) -> List[Response]:
    """Fetch *urls* over one keep-alive connection; the responses, in order.

    With *map* None the client runs on a private socket map; pass the map a
    server lives on to run both in one thread (as the tests do).  Raises the
    client's error (``OSError``, ``ValueError``) or ``TimeoutError``.
    """
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


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="HTTP/1.1 keep-alive client (asynframe asynchat example).")
    parser.add_argument("urls", nargs="+", metavar="URL", help="http://HOST:PORT/PATH, all on one host:port")
    parser.add_argument("--data", help="POST this (UTF-8) text as the body of every request")
    parser.add_argument("--pipeline", action="store_true", help="send all requests at once")
    parser.add_argument("--body", action="store_true", help="write the response bodies to stdout too")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds (default: %(default)s)")
    args = parser.parse_args(argv)

    body = None if args.data is None else args.data.encode("utf-8")
    try:
        responses = fetch(args.urls, method="GET" if body is None else "POST", body=body,
                          pipeline=args.pipeline, timeout=args.timeout)
    except (OSError, ValueError) as exc:
        print("error: %s" % (exc,), file=sys.stderr)
        return 1
    for response in responses:
        print("%d %s %d bytes %s" % (response.status, response.reason, len(response.body), response.url),
              flush=True)
        if args.body:
            sys.stdout.buffer.write(response.body + b"\n")
            sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
