"""The examples in ``examples/`` work: in-process on loopback, and as scripts.

The in-process tests put the example server (and, for HTTP, the example
client) on a private socket map and drive it with bounded
``asyncore.loop(timeout=0.01, map=..., count=1)`` calls until a condition
holds or a deadline passes; the peers that check the server's behaviour are
plain sockets, so they do not share the code under test.

Every test runs on both framing cores: the tests run in this process on the
core it has, and ``test_examples_on_the_other_core`` runs this file again in
a subprocess on the other one (``ASYNFRAME_NO_EXTENSIONS=1`` or not).  The
script tests start each example as a real process (port 0, the port read from
its "listening on" line) and stop it again.
"""

from __future__ import annotations

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
import time
from pathlib import Path

import pytest

import asynframe
from asynframe import asynchat, asyncore

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
# Set in the re-run on the other core, to the core that run must be on.
RERUN_ENV = "ASYNFRAME_EXAMPLES_RERUN_CORE"
DEADLINE = 10.0

pytestmark = pytest.mark.timeout(60)


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


# -- driving the loop ----------------------------------------------------------

def pump(sockmap, condition, timeout=DEADLINE, what="condition"):
    """Run the loop on *sockmap* one bounded iteration at a time until *condition*()."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %gs waiting for %s" % (timeout, what))
        asyncore.loop(timeout=0.01, map=sockmap, count=1)


def settle(sockmap, iterations=20):
    """A few more loop iterations, for asserting that something does *not* happen."""
    for _ in range(iterations):
        asyncore.loop(timeout=0.005, map=sockmap, count=1)


class Peer:
    """A plain non-blocking socket on the other end of the example server."""

    def __init__(self, sockmap, address):
        self.map = sockmap
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
                asyncore.loop(timeout=0.01, map=self.map, count=1)
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
        pump(self.map, ready, what=what)
        if not predicate():
            raise AssertionError("connection closed while waiting for %s; got %r" % (what, bytes(self.buf)))

    def wait_eof(self):
        def closed():
            self.fill()
            return self.eof
        pump(self.map, closed, what="the server to close the connection")
        return bytes(self.buf)

    def close(self):
        self.sock.close()


@pytest.fixture
def sockmap():
    """A private socket map, emptied (all sockets closed) at teardown."""
    sockmap = {}
    yield sockmap
    asyncore.close_all(sockmap)


@pytest.fixture
def peers(sockmap):
    """connect(address) -> Peer; every peer is closed at teardown."""
    made = []

    def connect(address):
        peer = Peer(sockmap, address)
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


@pytest.fixture
def chat(sockmap, peers):
    server = chat_server.make_server(port=0, map=sockmap)
    assert server.address[0] == "127.0.0.1" and server.address[1] > 0

    def join(nick=None):
        client = ChatPeer(peers(server.address))
        welcome = client.expect_prefix("* welcome ")
        client.nick = welcome.split()[2].rstrip(";")
        if nick is not None:
            client.say("/nick %s\r\n" % nick)
            client.expect("* you are now known as %s" % nick)
            client.nick = nick
        return client

    server.join_client = join
    return server


def test_chat_nick_and_broadcast_to_others_only(chat, sockmap):
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
        settle(sockmap, 3)
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
        "alice: hello everyone", "bob: partial line"]


def test_chat_quit_says_goodbye_and_closes(chat, sockmap):
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
    assert [c.nick for c in chat.channels] == ["alice"]
    assert len(sockmap) == 2  # the listener and alice's channel


def test_chat_peer_disconnect_and_errors(chat, sockmap):
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
    pump(sockmap, lambda: len(sockmap) == 2, what="bob's channel to close")

    # a line longer than the limit ends the session
    alice.say("x" * (chat_server.MAX_LINE + 10))
    assert alice.peer.wait_eof().endswith(b"* error: line longer than %d bytes, bye\r\n" % chat_server.MAX_LINE)
    pump(sockmap, lambda: len(sockmap) == 1, what="alice's channel to close")
    assert chat.channels == []


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
        lines = bytes(buf[:end - 4]).decode("latin-1").split("\r\n")
        version, code, reason = lines[0].split(" ", 2)
        assert version == "HTTP/1.1"
        headers = {}
        for line in lines[1:]:
            name, value = line.split(": ", 1)
            assert name.lower() not in headers
            headers[name.lower()] = value
        length = 0 if head_only else int(headers["content-length"])
        self.peer.received(lambda: len(buf) >= end + length, "a body of %d bytes" % length)
        body = bytes(buf[end:end + length])
        del buf[:end + length]
        return int(code), headers, body

    def wait_eof(self):
        return self.peer.wait_eof()


@pytest.fixture
def web(sockmap, peers):
    server = http_server.make_server(port=0, map=sockmap)
    server.connect_peer = lambda: HTTPPeer(peers(server.address))
    server.url = "http://%s:%d" % server.address
    return server


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


def test_http_post_echo_in_pieces(web, sockmap):
    body = random.Random(1).randbytes(300_000)
    head = b"POST /echo HTTP/1.1\r\nHost: example\r\nContent-Length: %d\r\n\r\n" % len(body)
    conn = web.connect_peer()
    # the head in pieces, its terminator split after "\r\n\r"
    stream = head + body
    cuts = [10, 40, len(head) - 1, len(head) + 1, len(head) + 8, len(head) + 70_000, len(head) + 70_001,
            len(head) + 200_000]
    for start, stop in zip([0] + cuts, cuts + [len(stream)]):
        conn.send(stream[start:stop])
        settle(sockmap, 2)
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
def test_http_malformed_request_gets_error_and_close(web, sockmap, request_bytes, status):
    conn = web.connect_peer()
    # a valid request pipelined after the bad one must not be answered
    conn.send(request_bytes + b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
    got, headers, body = conn.response()
    assert got == status
    assert headers["connection"] == "close"
    assert headers["content-length"] == str(len(body))
    assert conn.wait_eof() == b""
    pump(sockmap, lambda: len(sockmap) == 1, what="the channel to close")


def test_http_oversized_head_gets_431(web, sockmap):
    conn = web.connect_peer()
    conn.send(b"GET / HTTP/1.1\r\n" + b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n" * 1400)
    status, headers, _ = conn.response()
    assert (status, headers["connection"]) == (431, "close")
    conn.wait_eof()


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
def test_http_client_keep_alive(web, sockmap, pipeline):
    urls = [web.url + "/", web.url + "/bytes/1000", web.url + "/nope", web.url + "/bytes/1000000",
            web.url + "/bytes/0", web.url + "/?q=1"]
    responses = http_client.fetch(urls, map=sockmap, pipeline=pipeline, timeout=DEADLINE)
    assert [r.status for r in responses] == [200, 200, 404, 200, 200, 200]
    assert [r.url for r in responses] == urls
    assert responses[0].body == responses[5].body == http_server.INDEX_PAGE
    assert responses[1].body == expected_bytes(1000)
    assert hashlib.sha256(responses[3].body).digest() == hashlib.sha256(expected_bytes(1_000_000)).digest()
    assert responses[4].body == b""
    for r in responses:
        assert int(r.headers["content-length"]) == len(r.body)
    # one connection for all; the client asked to close it with the last request
    assert web.accepted == 1
    assert [r.headers["connection"] for r in responses] == ["keep-alive"] * 5 + ["close"]
    pump(sockmap, lambda: len(sockmap) == 1, what="the server channel to close")


def test_http_client_post_and_errors(web, sockmap):
    body = random.Random(2).randbytes(150_000)
    responses = http_client.fetch([web.url + "/echo"] * 3, method="POST", body=body, map=sockmap)
    assert [(r.status, r.body == body) for r in responses] == [(200, True)] * 3
    assert web.accepted == 1

    with pytest.raises(ValueError):
        http_client.fetch([web.url + "/", "http://127.0.0.2:1/"], map=sockmap)
    with pytest.raises(ValueError):
        http_client.fetch(["https://127.0.0.1/"])

    # nothing listens on a port we just released
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    dead_port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(ConnectionRefusedError):
        http_client.fetch(["http://127.0.0.1:%d/" % dead_port], timeout=DEADLINE)


def test_http_client_body_until_close(sockmap):
    # a server without Content-Length: the body ends with the connection
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    try:
        class OldServer(asynchat.async_chat):
            def __init__(self, sock):
                super().__init__(sock, sockmap)
                self.set_terminator(b"\r\n\r\n")

            def collect_incoming_data(self, data):
                pass

            def found_terminator(self):
                self.push(b"HTTP/1.1 200 OK\r\nX-Old: yes\r\n\r\n" + b"z" * 100_000)
                self.close_when_done()

        class Acceptor(asyncore.dispatcher):
            def handle_accepted(self, sock, addr):
                OldServer(sock)

        Acceptor(listener, sockmap).listen(1)
        url = "http://127.0.0.1:%d/old" % listener.getsockname()[1]
        [response] = http_client.fetch([url], map=sockmap, timeout=DEADLINE)
        assert response.status == 200 and response.headers["x-old"] == "yes"
        assert response.body == b"z" * 100_000
    finally:
        listener.close()


# -- the examples as scripts ----------------------------------------------------------------

def script(name):
    return [sys.executable, str(EXAMPLES / (name + ".py"))]


def start_server(name):
    """Start examples/<name>.py --port 0; (process, port) once it is listening."""
    proc = subprocess.Popen(script(name) + ["--port", "0"], cwd=str(ROOT),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
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
    """SIGTERM, then wait; the example must exit cleanly (status 0)."""
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


def test_chat_server_script():
    proc, port = start_server("chat_server")
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
    finally:
        stop_server(proc)


def test_http_server_and_client_scripts():
    proc, port = start_server("http_server")
    try:
        base = "http://127.0.0.1:%d" % port
        result = subprocess.run(
            script("http_client") + [base + "/", base + "/bytes/1000000", base + "/missing"],
            cwd=str(ROOT), capture_output=True, timeout=30)
        assert result.returncode == 0, result.stderr
        assert result.stdout.decode().splitlines() == [
            "200 OK %d bytes %s/" % (len(http_server.INDEX_PAGE), base),
            "200 OK 1000000 bytes %s/bytes/1000000" % base,
            "404 Not Found %d bytes %s/missing" % (len(b"no such path: /missing\n"), base),
        ]
        result = subprocess.run(
            script("http_client") + ["--pipeline", "--body", "--data", "hi there", base + "/echo", base + "/echo"],
            cwd=str(ROOT), capture_output=True, timeout=30)
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
    finally:
        stop_server(proc)

    # with the server gone, the client reports the error
    result = subprocess.run(script("http_client") + [base + "/"], cwd=str(ROOT), capture_output=True, timeout=30)
    assert result.returncode == 1 and result.stderr.startswith(b"error: ")


def test_examples_import_only_asynframe():
    # They must run where the stdlib asyncore/asynchat no longer exist (3.12+).
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "import chat_server, http_server, http_client\n"
        "bad = sorted({'asyncore', 'asynchat'} & set(sys.modules))\n"
        "assert not bad, bad\n"
        "assert chat_server.asynchat.__name__ == 'asynframe.asynchat'\n" % str(EXAMPLES)
    )
    result = subprocess.run([sys.executable, "-W", "error", "-c", code], cwd=str(ROOT),
                            capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr.decode(errors="replace")


# -- both cores ----------------------------------------------------------------------------

def test_active_core():
    expected = os.environ.get(RERUN_ENV)
    if expected:
        assert asynframe.CORE_IMPLEMENTATION == expected
    elif os.environ.get("ASYNFRAME_NO_EXTENSIONS", "") not in ("", "0"):
        assert asynframe.CORE_IMPLEMENTATION == "python"


@pytest.mark.skipif(bool(os.environ.get(RERUN_ENV)), reason="this is the re-run on the other core")
@pytest.mark.timeout(300)
def test_examples_on_the_other_core():
    env = dict(os.environ)
    if asynframe.USING_C_CORE:
        env["ASYNFRAME_NO_EXTENSIONS"] = "1"
        env[RERUN_ENV] = "python"
    else:
        try:
            importlib.import_module("asynframe._core_c")
        except ImportError as exc:
            pytest.skip("no compiled core to run the examples on: %s" % exc)
        env.pop("ASYNFRAME_NO_EXTENSIONS", None)
        env[RERUN_ENV] = "c"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider"],
        cwd=str(ROOT), env=env, capture_output=True, timeout=280)
    output = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
    assert result.returncode == 0, output[-6000:]
    assert re.search(r"\b\d+ passed", output), output[-2000:]
