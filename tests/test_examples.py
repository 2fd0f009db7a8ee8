"""The examples in ``examples/`` work: in-process on loopback, and as scripts, on three loops.

Every in-process case runs under asynframe's own loop, asyncio's and uvloop
(the ``driver`` fixture; uvloop is skipped only when it cannot be imported).
The example server (and, for HTTP, the example client) runs on the loop of
the driver, which the test steps one bounded iteration at a time
(``asyncore.loop(timeout=0.01, map=..., count=1)``, or a 1 ms turn of the
asyncio/uvloop loop) until a condition holds or a deadline passes; the peers
that check the server's behaviour are plain sockets, so they do not share
the code under test.  A loop that reports an error to its exception handler
fails the test.

Every test runs on both framing cores: the file is marked ``api_layer``, and
the README's test command runs those files again with the pure core forced.
The script tests start each example as a real process (``--loop`` each of the
three, port 0, the port read from its "listening on" line) and stop it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import importlib.util
import os
import random
import re
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import asynframe
from asynframe import asyncore

try:
    import uvloop
except ImportError:  # optional: the uvloop cases are skipped
    uvloop = None

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DEADLINE = 10.0

pytestmark = [pytest.mark.api_layer, pytest.mark.timeout(60)]

LOOPS = [
    pytest.param("asynframe", id="asynframe"),
    pytest.param("asyncio", id="asyncio"),
    pytest.param("uvloop", id="uvloop", marks=pytest.mark.skipif(uvloop is None, reason="uvloop is not installed")),
]


def load_example(name):
    """Import examples/<name>.py as a module (examples/ is not a package)."""
    module_name = "asynframe_example_" + name
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / (name + ".py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


chat_server = load_example("chat_server")
http_server = load_example("http_server")
http_client = load_example("http_client")


# -- the loops ------------------------------------------------------------------------


class Driver:
    """One event loop the examples run on, stepped by the test."""

    name = ""

    def step(self):
        """One bounded turn of the loop."""
        raise NotImplementedError

    def pump(self, condition, timeout=DEADLINE, what="condition"):
        """Step the loop until *condition*()."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError("timed out after %gs waiting for %s" % (timeout, what))
            self.step()

    def settle(self, iterations=20):
        """A few more turns, for asserting that something does *not* happen."""
        for _ in range(iterations):
            self.step()

    def wait_connections(self, state, count, what="connections to close"):
        """Until the example's *state* (room, service) has *count* open connections."""
        self.pump(lambda: len(state.connections) == count, what=what)


class AsynframeDriver(Driver):
    """asynframe's own loop, on a private socket map."""

    name = "asynframe"

    def __init__(self):
        self.map = {}
        self.listeners = 0

    def step(self):
        asyncore.loop(timeout=0.01, map=self.map, count=1)

    def chat_server(self):
        server = chat_server.make_server(port=0, map=self.map)
        self.listeners += 1
        return server.address, server.room

    def http_server(self):
        server = http_server.make_server(port=0, map=self.map)
        self.listeners += 1
        return server.address, server.service

    def fetch(self, urls, **kwargs):
        # on the map the server lives on: both run in this thread
        return http_client.fetch(urls, map=self.map, timeout=DEADLINE, **kwargs)

    def wait_connections(self, state, count, what="connections to close"):
        # the channels must also have left the socket map
        self.pump(lambda: len(state.connections) == count and len(self.map) == count + self.listeners, what=what)

    def close(self):
        asyncore.close_all(self.map)


class AioDriver(Driver):
    """A new asyncio or uvloop event loop, closed (with all connections) at the end."""

    def __init__(self, name):
        self.name = name
        if name == "uvloop":
            self.loop = uvloop.new_event_loop()
        else:
            # not asyncio.new_event_loop(): a policy installed by
            # uvloop.install() elsewhere would make that a uvloop too
            self.loop = asyncio.SelectorEventLoop() if os.name == "posix" else asyncio.ProactorEventLoop()
        self.reported = []
        self.loop.set_exception_handler(lambda loop, context: self.reported.append(context))
        self.servers = []
        self.states = []

    def run(self, coro):
        return self.loop.run_until_complete(asyncio.wait_for(coro, DEADLINE))

    def step(self):
        self.loop.run_until_complete(asyncio.sleep(0.001))

    def _serve(self, start, state):
        server = self.run(start(state, port=0))
        self.servers.append(server)
        self.states.append(state)
        return server.sockets[0].getsockname()[:2], state

    def chat_server(self):
        return self._serve(chat_server.start_server, chat_server.ChatRoom())

    def http_server(self):
        return self._serve(http_server.start_server, http_server.HTTPService())

    def fetch(self, urls, **kwargs):
        return self.run(http_client.fetch_async(urls, timeout=DEADLINE, **kwargs))

    def close(self):
        loop = self.loop
        try:
            for state in self.states:
                for session in list(state.connections):
                    session.abort()
            for server in self.servers:
                server.close()
            for server in self.servers:
                self.run(server.wait_closed())
            # the last connection_lost() callbacks
            loop.run_until_complete(asyncio.sleep(0.01))
            tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            assert not self.reported, "the loop reported errors: %r" % (self.reported,)
        finally:
            loop.close()


@pytest.fixture(params=LOOPS)
def driver(request):
    """The loop the examples run on: asynframe's, asyncio's or uvloop."""
    made = AsynframeDriver() if request.param == "asynframe" else AioDriver(request.param)
    yield made
    made.close()


class Peer:
    """A plain non-blocking socket on the other end of the example server."""

    def __init__(self, driver, address):
        self.driver = driver
        self.sock = socket.create_connection(address, timeout=DEADLINE)
        self.sock.setblocking(False)
        self.buf = bytearray()
        self.eof = False

    def send(self, data):
        view = memoryview(data)
        while view:
            try:
                sent = self.sock.send(view)
            except BlockingIOError:
                sent = 0
            if sent:
                view = view[sent:]
            else:  # the server must read before we can send more
                self.driver.step()
                self.fill()

    def fill(self):
        while not self.eof:
            try:
                chunk = self.sock.recv(1 << 20)
            except BlockingIOError:
                return
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.eof = True
            else:
                self.buf += chunk

    def received(self, predicate, what):
        def ready():
            self.fill()
            return predicate() or self.eof

        self.driver.pump(ready, what=what)
        if not predicate():
            raise AssertionError("connection closed while waiting for %s; got %r" % (what, bytes(self.buf)))

    def wait_eof(self):
        def closed():
            self.fill()
            return self.eof

        self.driver.pump(closed, what="the server to close the connection")
        return bytes(self.buf)

    def close(self):
        self.sock.close()


@pytest.fixture
def peers(driver):
    """connect(address) -> Peer; every peer is closed at teardown."""
    made = []

    def connect(address):
        peer = Peer(driver, address)
        made.append(peer)
        return peer

    yield connect
    for peer in made:
        peer.close()


# -- the chat server ---------------------------------------------------------------


class ChatPeer:
    def __init__(self, peer):
        self.peer = peer

    @property
    def lines(self):
        return bytes(self.peer.buf).decode("utf-8").split("\r\n")[:-1]

    def say(self, text):
        self.peer.send(text.encode("utf-8"))

    def expect(self, line):
        self.peer.received(lambda: line in self.lines, repr(line))

    def expect_prefix(self, prefix):
        self.peer.received(lambda: any(x.startswith(prefix) for x in self.lines), repr(prefix))
        return [x for x in self.lines if x.startswith(prefix)][0]


class Chat:
    """The chat example serving on the driver's loop."""

    def __init__(self, driver, peers):
        self.driver = driver
        self.peers = peers
        self.address, self.room = driver.chat_server()
        assert self.address[0] == "127.0.0.1" and self.address[1] > 0

    def join_client(self, nick=None):
        client = ChatPeer(self.peers(self.address))
        welcome = client.expect_prefix("* welcome ")
        client.nick = welcome.split()[2].rstrip(";")
        if nick is not None:
            client.say("/nick %s\r\n" % nick)
            client.expect("* you are now known as %s" % nick)
            client.nick = nick
        return client

    def wait_connections(self, count):
        self.driver.wait_connections(self.room, count)


@pytest.fixture
def chat(driver, peers):
    return Chat(driver, peers)


def test_chat_nick_and_broadcast_to_others_only(chat, driver):
    alice = chat.join_client()
    bob = chat.join_client()
    carol = chat.join_client()
    alice.expect("* %s has joined" % bob.nick)
    bob.expect("* %s has joined" % carol.nick)
    guest = alice.nick

    alice.say("/nick alice\r\n")
    alice.expect("* you are now known as alice")
    bob.expect("* %s is now known as alice" % guest)
    carol.expect("* %s is now known as alice" % guest)
    bob.say("/nick bob\r\n")
    bob.expect("* you are now known as bob")
    carol.say("/NICK carol\r\n")
    carol.expect("* you are now known as carol")

    alice.say("hello everyone\r\n")
    bob.expect("alice: hello everyone")
    carol.expect("alice: hello everyone")
    # the server answers in order: once /who is answered, an echo of the
    # broadcast to its sender would have arrived before it
    alice.say("/who\r\n")
    alice.expect("* online: alice bob carol")
    assert not [line for line in alice.lines if line.startswith("alice:")]

    # a line in pieces, the terminator itself split
    for piece in ("par", "tial li", "ne\r", "\n"):
        bob.say(piece)
        driver.settle(3)
    alice.expect("bob: partial line")
    carol.expect("bob: partial line")

    # several lines in one send, in order; blank lines are ignored
    carol.say("one\r\n\r\ntwo\r\nthree\r\n")
    bob.expect("carol: three")
    assert [x for x in bob.lines if x.startswith("carol:")] == ["carol: one", "carol: two", "carol: three"]
    bob.say("/who\r\n")
    bob.expect("* online: alice bob carol")
    assert not [line for line in bob.lines if line.startswith("bob:")]
    assert [x for x in carol.lines if ":" in x and not x.startswith("*")] == [
        "alice: hello everyone",
        "bob: partial line",
    ]


def test_chat_quit_says_goodbye_and_closes(chat):
    alice = chat.join_client("alice")
    bob = chat.join_client("bob")
    # what follows /quit in the same send is not broadcast
    bob.say("/quit see you\r\nnot sent\r\n")
    bob.expect("* goodbye bob")
    assert bob.peer.wait_eof().endswith(b"* goodbye bob\r\n")
    alice.expect("* bob has left (see you)")
    alice.say("/who\r\n")
    alice.expect("* online: alice")
    assert "bob: not sent" not in alice.lines
    assert [c.nick for c in chat.room.members] == ["alice"]
    chat.wait_connections(1)  # bob's connection is closed, alice's open


def test_chat_peer_disconnect_and_errors(chat):
    alice = chat.join_client("alice")
    bob = chat.join_client("bob")
    alice.say("/nick BOB\r\n")
    alice.expect("* error: the nick BOB is taken")
    alice.say("/nick two words\r\n")
    alice.expect_prefix("* error: a nick is")
    alice.say("/dance\r\n")
    alice.expect("* unknown command /dance (try /nick NAME, /who, /quit)")
    assert not [x for x in bob.lines if "dance" in x or "BOB" in x]

    bob.peer.close()
    alice.expect("* bob has left (connection closed)")
    chat.wait_connections(1)


def test_chat_line_limit_is_max_frame(chat, driver):
    alice = chat.join_client("alice")
    bob = chat.join_client("bob")
    # a line of exactly MAX_LINE bytes, in pieces, is fine
    line = "".join(random.Random(3).choice("abcdefgh ") for _ in range(chat_server.MAX_LINE))
    for start in range(0, len(line), 1000):
        alice.say(line[start : start + 1000])
        driver.settle(2)
    alice.say("\r\n")
    bob.expect("alice: " + line)
    # one byte more, in pieces, without a terminator: the session ends
    # (the core drops the line instead of buffering it)
    for _ in range(chat_server.MAX_LINE // 1000):
        bob.say("y" * 1000)
        driver.settle(2)
    bob.say("y" * (chat_server.MAX_LINE % 1000 + 1))
    assert bob.peer.wait_eof().endswith(b"* error: line longer than %d bytes, bye\r\n" % chat_server.MAX_LINE)
    alice.expect("* bob has left")
    chat.wait_connections(1)
    # and in one send, with more lines after it
    alice.say("x" * (chat_server.MAX_LINE + 10) + "\r\nnot sent\r\n")
    assert alice.peer.wait_eof().endswith(b"* error: line longer than %d bytes, bye\r\n" % chat_server.MAX_LINE)
    chat.wait_connections(0)
    assert chat.room.members == []


# -- the HTTP server, seen from a plain socket -----------------------------------------


def expected_bytes(n):
    """What GET /bytes/n must return, computed independently of the example."""
    return (bytes(range(251)) * (n // 251 + 1))[:n]


class HTTPPeer:
    """A raw socket that parses the responses itself."""

    def __init__(self, peer):
        self.peer = peer

    def send(self, data):
        self.peer.send(data)

    def response(self, head_only=False):
        buf = self.peer.buf
        self.peer.received(lambda: b"\r\n\r\n" in buf, "a response head")
        end = buf.index(b"\r\n\r\n") + 4
        lines = bytes(buf[: end - 4]).decode("latin-1").split("\r\n")
        version, code, reason = lines[0].split(" ", 2)
        assert version == "HTTP/1.1"
        headers = {}
        for line in lines[1:]:
            name, value = line.split(": ", 1)
            assert name.lower() not in headers
            headers[name.lower()] = value
        length = 0 if head_only else int(headers["content-length"])
        self.peer.received(lambda: len(buf) >= end + length, "a body of %d bytes" % length)
        body = bytes(buf[end : end + length])
        del buf[: end + length]
        return int(code), headers, body

    def wait_eof(self):
        return self.peer.wait_eof()


class Web:
    """The HTTP server example serving on the driver's loop."""

    def __init__(self, driver, peers):
        self.driver = driver
        self.peers = peers
        self.address, self.service = driver.http_server()
        self.url = "http://%s:%d" % self.address

    @property
    def accepted(self):
        return self.service.accepted

    def connect_peer(self):
        return HTTPPeer(self.peers(self.address))

    def wait_connections(self, count):
        self.driver.wait_connections(self.service, count)


@pytest.fixture
def web(driver, peers):
    return Web(driver, peers)


def test_http_get_index_keep_alive_head(web):
    conn = web.connect_peer()
    conn.send(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
    status, headers, body = conn.response()
    assert status == 200
    assert body == http_server.INDEX_PAGE and b"<h1>" in body
    assert headers["content-length"] == str(len(body))
    assert headers["content-type"].startswith("text/html")
    assert headers["connection"] == "keep-alive"

    # same connection: HEAD has the GET's Content-Length and no body, so the
    # next response must start right after its head
    conn.send(b"HEAD / HTTP/1.1\r\nHost: example\r\n\r\n")
    status, headers, body = conn.response(head_only=True)
    assert (status, headers["content-length"]) == (200, str(len(http_server.INDEX_PAGE)))
    conn.send(b"GET /bytes/3?x=1 HTTP/1.1\r\nHost: example\r\n\r\n")
    assert conn.response()[::2] == (200, b"\x00\x01\x02")
    assert web.accepted == 1


@pytest.mark.parametrize("n", [0, 1, 65536, 65537, 1_000_000])
def test_http_bytes_body_intact(web, n):
    conn = web.connect_peer()
    conn.send(b"GET /bytes/%d HTTP/1.1\r\nHost: example\r\n\r\n" % n)
    status, headers, body = conn.response()
    assert status == 200
    assert headers["content-length"] == str(n)
    assert len(body) == n
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(expected_bytes(n)).hexdigest()
    # and the connection is still good for another request
    conn.send(b"GET /bytes/7 HTTP/1.1\r\nHost: example\r\n\r\n")
    assert conn.response()[2] == expected_bytes(7)


def read_chunked(conn):
    """A chunked body from the raw peer, decoded here, independently of the example."""
    buf = conn.peer.buf
    body, sizes = b"", []
    while True:
        conn.peer.received(lambda: b"\r\n" in buf, "a chunk size line")
        line, _, rest = bytes(buf).partition(b"\r\n")
        size = int(line, 16)
        sizes.append(size)
        conn.peer.received(lambda: len(buf) >= len(line) + 2 + size + 2, "a chunk of %d bytes" % size)
        assert bytes(buf[len(line) + 2 + size : len(line) + 4 + size]) == b"\r\n"
        body += rest[:size]
        del buf[: len(line) + 4 + size]
        if not size:  # no trailer fields: the empty line came right after the 0
            return body, sizes


@pytest.mark.parametrize("n", [0, 2999, 3000, 100_000])
def test_http_chunked_response(web, n):
    conn = web.connect_peer()
    conn.send(b"GET /chunked/%d HTTP/1.1\r\nHost: example\r\n\r\n" % n)
    status, headers, _ = conn.response(head_only=True)
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    assert "content-length" not in headers
    body, sizes = read_chunked(conn)
    assert body == expected_bytes(n)
    assert sizes[-1] == 0 and all(0 < size <= http_server.CHUNKED_PIECE for size in sizes[:-1])
    # HEAD: the same head, no body; HTTP/1.0: no chunks, a Content-Length
    conn.send(b"HEAD /chunked/%d HTTP/1.1\r\n\r\nGET /chunked/%d HTTP/1.0\r\n\r\n" % (n, n))
    status, headers, _ = conn.response(head_only=True)
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    status, headers, body = conn.response()
    assert (status, body) == (200, expected_bytes(n)) and "transfer-encoding" not in headers


def test_http_post_echo_in_pieces(web, driver):
    body = random.Random(1).randbytes(300_000)
    head = b"POST /echo HTTP/1.1\r\nHost: example\r\nContent-Length: %d\r\n\r\n" % len(body)
    conn = web.connect_peer()
    # the head in pieces, its terminator split after "\r\n\r"
    stream = head + body
    cuts = [
        10,
        40,
        len(head) - 1,
        len(head) + 1,
        len(head) + 8,
        len(head) + 70_000,
        len(head) + 70_001,
        len(head) + 200_000,
    ]
    for start, stop in zip([0] + cuts, cuts + [len(stream)]):
        conn.send(stream[start:stop])
        driver.settle(2)
    status, headers, echoed = conn.response()
    assert status == 200
    assert headers["content-length"] == str(len(body))
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(body).digest()


def test_http_expect_100_continue(web):
    conn = web.connect_peer()
    conn.send(b"POST /echo HTTP/1.1\r\nHost: example\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
    conn.peer.received(lambda: bytes(conn.peer.buf) == b"HTTP/1.1 100 Continue\r\n\r\n", "100 Continue")
    del conn.peer.buf[:]
    conn.send(b"hello")
    assert conn.response()[::2] == (200, b"hello")


def test_http_pipelined_requests_in_one_send(web):
    conn = web.connect_peer()
    tricky = b"abc\r\n\r\nGET / HTTP/1.1\r\n\r\nxyz"  # a head terminator inside a body
    conn.send(
        b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: example\r\nContent-Length: %d\r\n\r\n%s"
        b"GET /bytes/70000 HTTP/1.1\r\nHost: example\r\n\r\n"
        b"GET /nope HTTP/1.1\r\nHost: example\r\n\r\n" % (len(tricky), tricky)
    )
    assert conn.response()[::2] == (200, http_server.INDEX_PAGE)
    assert conn.response()[::2] == (200, tricky)
    status, headers, body = conn.response()
    assert (status, body) == (200, expected_bytes(70000))
    assert conn.response()[0] == 404
    assert web.accepted == 1


def test_http_not_found_and_wrong_method(web):
    conn = web.connect_peer()
    conn.send(b"GET /nope HTTP/1.1\r\nHost: example\r\n\r\n")
    status, headers, body = conn.response()
    assert status == 404 and headers["connection"] == "keep-alive"
    assert headers["content-length"] == str(len(body))
    conn.send(b"GET /echo HTTP/1.1\r\nHost: example\r\n\r\n")
    status, headers, _ = conn.response()
    assert (status, headers["allow"]) == (405, "POST")
    conn.send(b"GET /bytes/12x HTTP/1.1\r\nHost: example\r\n\r\n")
    assert conn.response()[0] == 400
    conn.send(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")  # still open
    assert conn.response()[0] == 200


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /\r\n\r\n", 400),
        (b"GET / HTTP/1.1 extra\r\n\r\n", 400),
        (b"GET / HTTX/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n folded: header\r\n\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nContent-Length: ten\r\n\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy", 400),
        (b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
        (b"GET / HTTP/2.0\r\n\r\n", 505),
    ],
)
def test_http_malformed_request_gets_error_and_close(web, request_bytes, status):
    conn = web.connect_peer()
    # a valid request pipelined after the bad one must not be answered
    conn.send(request_bytes + b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
    got, headers, body = conn.response()
    assert got == status
    assert headers["connection"] == "close"
    assert headers["content-length"] == str(len(body))
    assert conn.wait_eof() == b""
    web.wait_connections(0)


@pytest.mark.parametrize("pieces", [1, 40], ids=["one-send", "in-pieces"])
def test_http_oversized_head_gets_431(web, driver, pieces):
    conn = web.connect_peer()
    head = b"GET / HTTP/1.1\r\n" + b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n" * 1400
    assert len(head) > http_server.MAX_HEAD
    size = -(-len(head) // pieces)
    for start in range(0, len(head), size):
        try:
            conn.send(head[start : start + size])
        except (BrokenPipeError, ConnectionResetError):
            break  # the server has answered and closed: the 431 waits in our buffer
        driver.settle(1)
    status, headers, _ = conn.response()
    assert (status, headers["connection"]) == (431, "close")
    conn.wait_eof()
    web.wait_connections(0)


def test_http_head_limit_does_not_limit_bodies(web, monkeypatch):
    # a head just under MAX_HEAD, then a body far over it, in one read: the
    # limit set for heads is lifted for the body from its very first byte
    # (a smaller limit than the default, so that all of it fits in one read)
    monkeypatch.setattr(http_server, "MAX_HEAD", 8192)
    filler = b"X-Filler: " + b"f" * 90 + b"\r\n"
    body = random.Random(4).randbytes(3 * http_server.MAX_HEAD)
    head = b"POST /echo HTTP/1.1\r\nContent-Length: %d\r\n" % len(body)
    head += filler * ((http_server.MAX_HEAD - len(head) - 200) // len(filler)) + b"\r\n"
    assert http_server.MAX_HEAD - 1000 < len(head) < http_server.MAX_HEAD
    conn = web.connect_peer()
    conn.send(head + body + b"GET /bytes/5 HTTP/1.1\r\n\r\n")
    status, _, echoed = conn.response()
    assert status == 200 and echoed == body
    assert conn.response()[::2] == (200, expected_bytes(5))
    # and heads are still limited after it
    conn.send(b"GET / HTTP/1.1\r\n" + filler * 90 + b"\r\n")
    assert conn.response()[0] == 431


@pytest.mark.parametrize(
    "head, keep_alive",
    [
        (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", False),
        (b"GET / HTTP/1.1\r\nConnection: Keep-Alive, CLOSE\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True),
        (b"GET / HTTP/1.1\r\n\r\n", True),
    ],
)
def test_http_connection_close_honoured(web, head, keep_alive):
    conn = web.connect_peer()
    conn.send(head + head)
    status, headers, body = conn.response()
    assert status == 200 and body == http_server.INDEX_PAGE
    assert headers["connection"] == ("keep-alive" if keep_alive else "close")
    if keep_alive:
        assert conn.response()[0] == 200
    else:
        assert conn.wait_eof() == b""


# -- the HTTP client example against the HTTP server example -------------------------------


@pytest.mark.parametrize("pipeline", [False, True], ids=["sequential", "pipelined"])
def test_http_client_keep_alive(web, driver, pipeline):
    urls = [
        web.url + "/",
        web.url + "/bytes/1000",
        web.url + "/nope",
        web.url + "/bytes/1000000",
        web.url + "/bytes/0",
        web.url + "/chunked/0",
        web.url + "/chunked/3001",
        web.url + "/chunked/1000000",
        web.url + "/?q=1",
    ]
    responses = driver.fetch(urls, pipeline=pipeline)
    assert [r.status for r in responses] == [200, 200, 404, 200, 200, 200, 200, 200, 200]
    assert [r.url for r in responses] == urls
    assert responses[0].body == responses[8].body == http_server.INDEX_PAGE
    assert responses[1].body == expected_bytes(1000)
    assert hashlib.sha256(responses[3].body).digest() == hashlib.sha256(expected_bytes(1_000_000)).digest()
    assert responses[4].body == responses[5].body == b""
    assert responses[6].body == expected_bytes(3001)
    assert hashlib.sha256(responses[7].body).digest() == hashlib.sha256(expected_bytes(1_000_000)).digest()
    for r in responses[:5] + responses[8:]:
        assert int(r.headers["content-length"]) == len(r.body)
    for r in responses[5:8]:
        assert r.headers["transfer-encoding"] == "chunked" and "content-length" not in r.headers
    # one connection for all; the client asked to close it with the last request
    assert web.accepted == 1
    assert [r.headers["connection"] for r in responses] == ["keep-alive"] * 8 + ["close"]
    web.wait_connections(0)


def test_http_client_post_and_errors(web, driver):
    body = random.Random(2).randbytes(150_000)
    responses = driver.fetch([web.url + "/echo"] * 3, method="POST", body=body)
    assert [(r.status, r.body == body) for r in responses] == [(200, True)] * 3
    assert web.accepted == 1

    with pytest.raises(ValueError):
        driver.fetch([web.url + "/", "http://127.0.0.2:1/"])
    with pytest.raises(ValueError):
        driver.fetch(["https://127.0.0.1/"])

    # nothing listens on a port we just released
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    dead_port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(ConnectionRefusedError):
        driver.fetch(["http://127.0.0.1:%d/" % dead_port])


@contextlib.contextmanager
def scripted_server(answer):
    """A one-connection server in a thread: reads one request head, sends *answer*, closes.

    Yields the URL to fetch; independent of the loop the client runs on.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(DEADLINE)
    failures = []

    def serve():
        try:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(DEADLINE)
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    request += chunk
                conn.sendall(answer)
                conn.shutdown(socket.SHUT_WR)
                # until the client closes too (it may stop reading first)
                while conn.recv(4096):
                    pass
        except OSError as exc:
            failures.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield "http://127.0.0.1:%d/scripted" % listener.getsockname()[1]
    finally:
        thread.join(DEADLINE)
        listener.close()
    assert not thread.is_alive()


def test_http_client_body_until_close(driver):
    # a server without Content-Length: the body ends with the connection
    with scripted_server(b"HTTP/1.1 200 OK\r\nX-Old: yes\r\n\r\n" + b"z" * 100_000) as url:
        [response] = driver.fetch([url])
    assert response.status == 200 and response.headers["x-old"] == "yes"
    assert response.body == b"z" * 100_000


def test_http_client_chunked_with_extensions_and_trailers(driver):
    answer = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n"
        b"1\r\n \r\n"
        b"0000A\r\n0123456789\r\n"
        b"0\r\nX-Trailer: one\r\nX-Other: two\r\n\r\n"
        # and the next response starts right after the trailer's end
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nend"
    )
    with scripted_server(answer) as url:
        first, second = driver.fetch([url, url + "2"], pipeline=True)
    assert (first.status, first.body) == (200, b"hello 0123456789")
    assert (second.status, second.body) == (200, b"end")


@pytest.mark.parametrize(
    "answer, error, message",
    [
        (b"HTTP/1.1 200 OK\r\n" + b"X-Big: yyyyyyyy\r\n" * 5000 + b"\r\n", ValueError, "response head larger"),
        (b"HTTP/1.1 200 OK\r\n" + b"X-Big: yyyyyyyy" * 5000, ValueError, "response head larger"),
        (b"SPDY/3 200 OK\r\n\r\n", ValueError, "malformed status line"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", ValueError, "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", ValueError, "not supported"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
            ValueError,
            "malformed chunk size",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello!!0\r\n\r\n",
            ValueError,
            "not followed by CRLF",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;" + b"x" * 2000,
            ValueError,
            "line of the chunked body larger than",
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", ConnectionError, "responses missing"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", ConnectionError, "responses missing"),
        (b"", ConnectionError, "responses missing"),
    ],
    ids=[
        "big-head",
        "big-head-no-end",
        "status",
        "header",
        "gzip",
        "chunk-size",
        "chunk-crlf",
        "chunk-line",
        "chunked-cut",
        "short-body",
        "nothing",
    ],
)
def test_http_client_bad_responses(driver, answer, error, message):
    with scripted_server(answer) as url:
        with pytest.raises(error, match=message):
            driver.fetch([url])


# -- the examples as scripts ----------------------------------------------------------------


def script(name):
    return [sys.executable, str(EXAMPLES / (name + ".py"))]


def start_server(name, loop):
    """Start examples/<name>.py --port 0 --loop *loop*; (process, port) once it is listening."""
    proc = subprocess.Popen(
        script(name) + ["--port", "0", "--loop", loop],
        cwd=str(ROOT),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    line = b""
    deadline = time.monotonic() + 20
    try:
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or proc.poll() is not None:
                raise AssertionError("%s did not say where it listens: %r" % (name, line))
            if select.select([proc.stdout], [], [], remaining)[0]:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    continue
                line += chunk
        match = re.fullmatch(rb"listening on 127\.0\.0\.1:(\d+)\n", line)
        assert match, line
    except BaseException:
        stop_server(proc, check=False)
        raise
    return proc, int(match.group(1))


def stop_server(proc, check=True):
    """SIGTERM, then wait; the example must exit cleanly (status 0).  Once is enough."""
    if proc.returncode is not None:
        return
    if proc.poll() is None:
        proc.terminate()
    try:
        out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    if check:
        assert proc.returncode == 0, (proc.returncode, err.decode(errors="replace"))
        assert err == b"", err.decode(errors="replace")


@pytest.mark.parametrize("name", ["chat_server", "http_server", "http_client"])
def test_script_help(name):
    result = subprocess.run(script(name) + ["--help"], cwd=str(ROOT), capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"usage:")
    assert b"--port" in result.stdout or b"URL" in result.stdout
    assert b"--loop {asynframe,asyncio,uvloop}" in result.stdout


def read_until(sock, buf, wanted):
    """Lines read from blocking *sock* up to and including *wanted*."""
    lines = []
    while wanted not in lines:
        while b"\r\n" not in buf:
            chunk = sock.recv(4096)
            assert chunk, "connection closed before %r; got %r" % (wanted, lines)
            buf += chunk
        line, _, rest = bytes(buf).partition(b"\r\n")
        buf[:] = rest
        lines.append(line.decode())
    return lines


@pytest.mark.parametrize("loop", LOOPS)
def test_chat_server_script(loop):
    proc, port = start_server("chat_server", loop)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as a:
            abuf, bbuf = bytearray(), bytearray()
            a.sendall(b"/nick ann\r\n")
            assert read_until(a, abuf, "* you are now known as ann")[0].startswith("* welcome guest")
            with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as b:
                b.sendall(b"/nick ben\r\nhi ann\r\n/who\r\n")
                read_until(b, bbuf, "* online: ann ben")
                seen = read_until(a, abuf, "ben: hi ann")
                assert seen[-2].endswith(" is now known as ben")
                a.sendall(b"hi ben\r\n")
                read_until(b, bbuf, "ann: hi ben")
                b.sendall(b"/quit\r\n")
                read_until(b, bbuf, "* goodbye ben")
                assert b.recv(10) == b""
            a.sendall(b"/who\r\n")
            assert read_until(a, abuf, "* online: ann") == ["* ben has left", "* online: ann"]
            # stopped with a client still in the room: a clean exit all the same
            stop_server(proc)
            assert a.recv(4096) == b""
    finally:
        stop_server(proc)


@pytest.mark.parametrize("loop", LOOPS)
def test_http_server_and_client_scripts(loop):
    proc, port = start_server("http_server", loop)
    # the client on another loop than the server's: any pair works
    client = script("http_client") + ["--loop", {"asynframe": "asyncio"}.get(loop, "asynframe")]
    try:
        base = "http://127.0.0.1:%d" % port
        result = subprocess.run(
            client + [base + "/", base + "/bytes/1000000", base + "/chunked/100000", base + "/missing"],
            cwd=str(ROOT),
            capture_output=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.decode().splitlines() == [
            "200 OK %d bytes %s/" % (len(http_server.INDEX_PAGE), base),
            "200 OK 1000000 bytes %s/bytes/1000000" % base,
            "200 OK 100000 bytes %s/chunked/100000" % base,
            "404 Not Found %d bytes %s/missing" % (len(b"no such path: /missing\n"), base),
        ]
        result = subprocess.run(
            script("http_client")
            + ["--loop", loop, "--pipeline", "--body", "--data", "hi there", base + "/echo", base + "/echo"],
            cwd=str(ROOT),
            capture_output=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.decode().splitlines() == ["200 OK 8 bytes %s/echo" % base, "hi there"] * 2
        # a raw client too, and a bad request
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as raw:
            raw.sendall(b"BROKEN\r\n\r\n")
            data = b""
            while True:
                chunk = raw.recv(4096)
                if not chunk:
                    break
                data += chunk
            assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        # stopped while a client does not read a large response: the
        # connection is dropped, the server exits at once and cleanly
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as stuck:
            stuck.sendall(b"GET /bytes/100000000 HTTP/1.1\r\n\r\n")
            assert stuck.recv(16) == b"HTTP/1.1 200 OK\r"
            started = time.monotonic()
            stop_server(proc)
            assert time.monotonic() - started < 4
    finally:
        stop_server(proc)

    # with the server gone, the client reports the error
    result = subprocess.run(
        script("http_client") + ["--loop", loop, base + "/"], cwd=str(ROOT), capture_output=True, timeout=30
    )
    assert result.returncode == 1 and result.stderr.startswith(b"error: ")


def test_examples_import_only_asynframe():
    # They must run where the stdlib asyncore/asynchat no longer exist (3.12+),
    # and without uvloop unless --loop uvloop asks for it.
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "import chat_server, http_server, http_client\n"
        "bad = sorted({'asyncore', 'asynchat', 'uvloop'} & set(sys.modules))\n"
        "assert not bad, bad\n"
        "assert chat_server.asynchat.__name__ == 'asynframe.asynchat'\n" % str(EXAMPLES)
    )
    result = subprocess.run([sys.executable, "-W", "error", "-c", code], cwd=str(ROOT), capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr.decode(errors="replace")


# -- both cores ----------------------------------------------------------------------------


def test_active_core():
    if os.environ.get("ASYNFRAME_NO_EXTENSIONS", "") not in ("", "0"):
        assert asynframe.CORE_IMPLEMENTATION == "python"
