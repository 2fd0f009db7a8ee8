"""TLS on asynframe's own channels: ``dispatcher.start_tls`` (asynframe._tls).

Covered: echo with asynframe at both ends (three async_chat delivery styles,
select and poll semantics, a bare dispatcher_with_send, 40 connections at
once with no descriptor left behind), against blocking stdlib ``ssl`` peers
in a thread (both roles); start_tls() from handle_connect() and on a refused
connection; handshake failures (wrong host
name, untrusted certificate) closing only their channel; STARTTLS both ways,
with the exact cut of docs/hardening.md (plaintext queued before the upgrade
goes first, pipelined plaintext after the command is TLS input: an injected
command fails the handshake, an optimistic ClientHello succeeds); peers
vanishing mid-handshake (FIN and RST, both roles); input buffered in the TLS
layer (many records in one segment, one record larger than the read size)
delivered without the descriptor being readable again; post-handshake
authentication (the read path must write); a write retried after
WANT_READ; close_when_done and close_notify, clean and ragged EOF; a 64 MiB
transfer (1 GiB with ``-m huge``) through TLS and plain connections with
matching SHA-256.

Both cores: the asyncore/asynchat layer binds its core at import, so the file
is marked ``api_layer``, so the second pytest command of the README runs it
again with the pure core forced (tests/conftest.py). Loopback only; every map is emptied
with ``close_all`` at the end of each test.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
import ssl
import struct
import sys
import threading
import time

import pytest

import asynframe
from asynframe import _poller, _tls, asynchat, asyncore

import _certs
from support import NO_EXTENSIONS, env_flag, run_until

HERE = os.path.abspath(__file__)

pytestmark = [pytest.mark.api_layer, pytest.mark.timeout(60)]


# -- fixtures and helpers ------------------------------------------------------------
@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """Contexts for a trusted certificate, plus an untrusted one."""
    where = tmp_path_factory.mktemp("tls")
    server_ctx, client_ctx, cert, key = _certs.contexts(where, "good")
    rogue_server_ctx, _, _, _ = _certs.contexts(where, "rogue")
    return {
        "server": server_ctx,
        "client": client_ctx,
        "cert": cert,
        "key": key,
        "rogue_server": rogue_server_ctx,
    }


def in_thread(fn):
    """Run fn() in a daemon thread: (thread, result dict with 'value' or 'error')."""
    result: dict = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as exc:  # reported by the test
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, result


def finish(thread, result, m, timeout=20.0):
    run_until(lambda: not thread.is_alive(), m, timeout)
    thread.join(5)
    if "error" in result:
        raise result["error"]
    return result.get("value")


def recv_line(sock, buf=b""):
    """Blocking read of one b"\\r\\n"/b"\\n"-ended line; (line, rest)."""
    while b"\n" not in buf:
        data = sock.recv(4096)
        if not data:
            raise EOFError("connection closed, partial %r" % buf)
        buf += data
    line, _, rest = buf.partition(b"\n")
    return line.rstrip(b"\r"), rest


def recv_all(sock):
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


class Listener(asyncore.dispatcher):
    """Accepts on 127.0.0.1 and makes ``factory(sock, map)`` per connection."""

    def __init__(self, m, factory):
        asyncore.dispatcher.__init__(self, map=m)
        self.factory = factory
        self.handlers = []
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.set_reuse_addr()
        self.bind(("127.0.0.1", 0))
        self.listen(16)
        self.port = self.socket.getsockname()[1]

    def handle_accepted(self, sock, addr):
        self.handlers.append(self.factory(sock, self._map))


class Chat(asynchat.async_chat):
    """Line channel recording events; errors are recorded and close it."""

    def __init__(self, sock=None, m=None, terminator=b"\n"):
        asynchat.async_chat.__init__(self, sock, m)
        self.set_terminator(terminator)
        self.events = []
        self.lines = []
        self.errors = []

    collect_incoming_data = asynchat.async_chat._collect_incoming_data

    def found_terminator(self):
        self.line_received(self._get_data())

    def line_received(self, line):
        self.lines.append(line)

    def handle_tls_established(self):
        self.events.append("established")

    def handle_close(self):
        self.events.append("close")
        self.close()

    def handle_error(self):
        self.errors.append(sys.exc_info()[1])
        self.events.append("error")
        self.close()

    @property
    def tls_open(self):
        return self._af_tls is not None and self.socket.handshake_complete


class EchoServer(Chat):
    """Echo lines upper-cased; QUIT answers BYE and closes when done."""

    def __init__(self, sock, m, ctx=None):
        Chat.__init__(self, sock, m)
        if ctx is not None:
            self.start_tls(ctx, server_side=True)

    def line_received(self, line):
        self.lines.append(line)
        if line == b"QUIT":
            self.push(b"BYE\n")
            self.close_when_done()
        else:
            self.push(line.upper() + b"\n")


class EchoClient(Chat):
    def __init__(self, m, port, ctx=None, hostname="localhost", lines=()):
        Chat.__init__(self, None, m)
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.connect(("127.0.0.1", port))
        if ctx is not None:
            self.start_tls(ctx, server_side=False, server_hostname=hostname)
        for line in lines:
            self.push(line + b"\n")

    def handle_connect(self):
        self.events.append("connect")


# Three ways async_chat hands data over (the core's three modes).
class CallbackEcho(EchoServer):
    def collect_incoming_data(self, data):
        self.__dict__.setdefault("_parts", []).append(data)

    def found_terminator(self):
        parts = self.__dict__.pop("_parts", [])
        self.line_received(b"".join(parts))


class FrameEcho(EchoServer):
    def frame_received(self, frame):
        self.line_received(frame)


STYLES = {"collect": EchoServer, "callbacks": CallbackEcho, "frames": FrameEcho}


# -- echo -----------------------------------------------------------------------------------
@pytest.mark.parametrize("style", sorted(STYLES))
@pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])
def test_echo_asynframe_both_ends(certs, smap, style, use_poll):
    server_cls = STYLES[style]
    listener = Listener(smap, lambda s, m: server_cls(s, m, certs["server"]))
    big = bytes(random.Random(1).getrandbits(8) for _ in range(1000)).replace(b"\n", b"_") * 300
    lines = [b"hello", b"", b"x" * 70000, big, b"QUIT"]
    client = EchoClient(smap, listener.port, certs["client"], lines=lines)
    run_until(lambda: "close" in client.events, smap, use_poll=use_poll)
    server = listener.handlers[0]
    assert client.lines == [line.upper() for line in lines[:-1]] + [b"BYE"]
    assert server.lines == lines
    assert client.events == ["connect", "established", "close"]
    assert server.events[0] == "established" and not server.errors and not client.errors
    # the server's close_when_done sent close_notify before closing
    assert client.socket.close_notify_received
    assert client.socket.version() in ("TLSv1.2", "TLSv1.3")
    assert client.socket.getpeercert()["subject"] == ((("commonName", "localhost"),),)
    assert client._af_generic_path and not asynchat.async_chat._af_generic_path


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_many_connections_then_no_descriptor_left(certs, smap):
    before = len(os.listdir("/proc/self/fd"))
    listener = Listener(smap, lambda s, m: EchoServer(s, m, certs["server"]))
    clients = [
        EchoClient(smap, listener.port, certs["client"], lines=[b"c%d-%d" % (i, j) for j in range(5)] + [b"QUIT"])
        for i in range(40)
    ]
    run_until(lambda: all("close" in c.events for c in clients), smap, timeout=30)
    for i, client in enumerate(clients):
        assert client.lines == [b"C%d-%d" % (i, j) for j in range(5)] + [b"BYE"]
        assert not client.errors
    assert not any(h.errors for h in listener.handlers)
    asyncore.close_all(smap)
    assert len(os.listdir("/proc/self/fd")) == before


def test_dispatcher_with_send_echo(certs, smap):
    class Raw(asyncore.dispatcher_with_send):
        def __init__(self, sock, m):
            asyncore.dispatcher_with_send.__init__(self, sock, m)
            self.start_tls(certs["server"], server_side=True)

        def handle_read(self):
            data = self.recv(8192)
            if data:
                self.send(data[::-1])

        def handle_close(self):
            self.close()

    listener = Listener(smap, Raw)
    payload = b"".join(b"%06d," % i for i in range(20000))

    def client():
        with socket.create_connection(("127.0.0.1", listener.port), timeout=10) as raw:
            with certs["client"].wrap_socket(raw, server_hostname="localhost") as tls:
                got = b""
                for i in range(0, len(payload), 1000):
                    piece = payload[i : i + 1000]
                    tls.sendall(piece)
                    want = piece[::-1]
                    while len(got) < len(want):
                        got += tls.recv(65536)
                    # a server read may join two sends: compare in order overall
                    assert got[: len(want)] == want, (i, got[:50], want[:50])
                    got = got[len(want) :]
                tls.unwrap()
        return True

    assert finish(*in_thread(client), smap)
    run_until(lambda: len(smap) == 1, smap)


# -- blocking stdlib peers ---------------------------------------------------------------------
@pytest.mark.parametrize("unwrap", [True, False], ids=["close_notify", "ragged"])
def test_blocking_stdlib_client(certs, smap, unwrap):
    listener = Listener(smap, lambda s, m: EchoServer(s, m, certs["server"]))

    def client():
        with socket.create_connection(("127.0.0.1", listener.port), timeout=10) as raw:
            tls = certs["client"].wrap_socket(raw, server_hostname="localhost")
            answers = []
            rest = b""
            for line in (b"one", b"two", b"z" * 50000):
                tls.sendall(line + b"\n")
                answer, rest = recv_line(tls, rest)
                answers.append(answer)
            if unwrap:
                # waits for the server's close_notify in answer to ours
                tls.unwrap()
            tls.close()
            return answers

    assert finish(*in_thread(client), smap) == [b"ONE", b"TWO", b"Z" * 50000]
    server = listener.handlers[0]
    run_until(lambda: "close" in server.events, smap)
    assert server.events == ["established", "close"] and not server.errors
    assert server.socket.close_notify_received is unwrap


def test_blocking_stdlib_server(certs, smap):
    lsock = socket.create_server(("127.0.0.1", 0))
    lsock.settimeout(10)
    port = lsock.getsockname()[1]

    def server():
        with lsock:
            conn, _ = lsock.accept()
            with certs["server"].wrap_socket(conn, server_side=True) as tls:
                tls.settimeout(10)
                rest = b""
                seen = []
                while True:
                    line, rest = recv_line(tls, rest)
                    seen.append(line)
                    if line == b"QUIT":
                        tls.sendall(b"BYE\n")
                        tls.unwrap()
                        return seen
                    tls.sendall(line[::-1] + b"\n")

    thread, result = in_thread(server)
    client = EchoClient(smap, port, certs["client"], lines=[b"abc", b"q" * 30000 + b"r", b"QUIT"])
    assert finish(thread, result, smap) == [b"abc", b"q" * 30000 + b"r", b"QUIT"]
    run_until(lambda: "close" in client.events, smap)
    assert client.lines == [b"cba", b"r" + b"q" * 30000, b"BYE"]
    assert client.socket.close_notify_received


# -- handshake failures --------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["wrong_hostname", "untrusted"])
def test_handshake_failure_closes_only_that_channel(certs, smap, how):
    good_listener = Listener(smap, lambda s, m: EchoServer(s, m, certs["server"]))
    if how == "untrusted":
        bad_listener = Listener(smap, lambda s, m: EchoServer(s, m, certs["rogue_server"]))
        bad = EchoClient(smap, bad_listener.port, certs["client"], lines=[b"secret"])
    else:
        bad_listener = good_listener
        bad = EchoClient(smap, bad_listener.port, certs["client"], hostname="example.org", lines=[b"secret"])
    good = EchoClient(smap, good_listener.port, certs["client"], lines=[b"before"])
    run_until(lambda: "error" in bad.events and good.lines == [b"BEFORE"], smap)
    assert isinstance(bad.errors[0], ssl.SSLCertVerificationError)
    assert "established" not in bad.events
    # the server's side learnt it from the alert, through handle_error too
    bad_server = bad_listener.handlers[-1] if how == "untrusted" else bad_listener.handlers[0]
    run_until(lambda: bad_server.events, smap)
    assert bad_server.events == ["error"] and isinstance(bad_server.errors[0], ssl.SSLError)
    assert bad_server.lines == []
    # the other connection keeps working
    good.push(b"after\n")
    run_until(lambda: len(good.lines) == 2, smap)
    assert good.lines == [b"BEFORE", b"AFTER"] and not good.errors


def test_handshake_failure_default_handle_error_logs(certs, smap):
    logged = []

    class Quiet(EchoServer):
        handle_error = asyncore.dispatcher.handle_error
        handle_close = asyncore.dispatcher.close

        def log_info(self, message, type="info"):
            logged.append((type, message))

    listener = Listener(smap, lambda s, m: Quiet(s, m, certs["server"]))
    raw = socket.create_connection(("127.0.0.1", listener.port), timeout=5)
    try:
        raw.sendall(b"\x16\x03\x01\x00\x05hello")  # a handshake record with garbage inside
        run_until(lambda: logged, smap)
        assert logged[0][0] == "error" and "SSL" in logged[0][1]
        run_until(lambda: len(smap) == 1, smap)  # only the listener is left
    finally:
        raw.close()


# -- STARTTLS ------------------------------------------------------------------------------------
class StartTLSServer(Chat):
    """SMTP-like: EHLO/anything -> 250, STARTTLS -> 220 then TLS, QUIT -> BYE."""

    def __init__(self, sock, m, ctx, after=b""):
        Chat.__init__(self, sock, m, b"\r\n")
        self.ctx = ctx
        self.after = after
        self.tls_at_line = []

    def line_received(self, line):
        self.lines.append(line)
        self.tls_at_line.append(self.tls_open)
        if line == b"STARTTLS":
            self.push(b"220 go ahead\r\n")
            self.start_tls(self.ctx, server_side=True)
            if self.after:
                # pushed after the upgrade: must only ever travel encrypted
                self.push(self.after)
        elif line == b"QUIT":
            self.push(b"221 bye\r\n")
            self.close_when_done()
        else:
            self.push(b"250 " + line + b"\r\n")


class StartTLSClient(Chat):
    def __init__(self, m, port, ctx):
        Chat.__init__(self, None, m, b"\r\n")
        self.ctx = ctx
        self.tls_at_line = []
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.connect(("127.0.0.1", port))
        self.push(b"EHLO me\r\nSTARTTLS\r\n")

    def handle_connect(self):
        pass

    def line_received(self, line):
        self.lines.append(line)
        self.tls_at_line.append(self.tls_open)
        if line.startswith(b"220"):
            self.start_tls(self.ctx, server_side=False, server_hostname="localhost")
            # queued during the handshake, sent encrypted after it
            self.push(b"MAIL FROM:<a@b>\r\nQUIT\r\n")


def test_starttls_asynframe_both_ends(certs, smap):
    listener = Listener(smap, lambda s, m: StartTLSServer(s, m, certs["server"], b"250 upgraded\r\n"))
    client = StartTLSClient(smap, listener.port, certs["client"])
    run_until(lambda: "close" in client.events, smap)
    server = listener.handlers[0]
    assert server.lines == [b"EHLO me", b"STARTTLS", b"MAIL FROM:<a@b>", b"QUIT"]
    assert server.tls_at_line == [False, False, True, True]
    assert client.lines == [b"250 EHLO me", b"220 go ahead", b"250 upgraded", b"250 MAIL FROM:<a@b>", b"221 bye"]
    assert client.tls_at_line == [False, False, True, True, True]
    assert "established" in client.events and "established" in server.events
    assert not client.errors and not server.errors


def test_starttls_blocking_client_sees_the_cut(certs, smap):
    """220 arrives in plaintext; what the server pushed after start_tls only inside TLS."""
    listener = Listener(smap, lambda s, m: StartTLSServer(s, m, certs["server"], b"250 upgraded\r\n"))

    def client():
        with socket.create_connection(("127.0.0.1", listener.port), timeout=10) as raw:
            raw.sendall(b"EHLO me\r\n")
            first, rest = recv_line(raw)
            raw.sendall(b"STARTTLS\r\n")
            second, rest = recv_line(raw, rest)
            # the server sends nothing more before our ClientHello
            assert rest == b""
            tls = certs["client"].wrap_socket(raw, server_hostname="localhost")
            third, rest = recv_line(tls)
            tls.sendall(b"NOOP\r\n")
            fourth, rest = recv_line(tls, rest)
            tls.unwrap()
            return [first, second, third, fourth]

    assert finish(*in_thread(client), smap) == [b"250 EHLO me", b"220 go ahead", b"250 upgraded", b"250 NOOP"]


def test_starttls_asynframe_client_blocking_server(certs, smap):
    lsock = socket.create_server(("127.0.0.1", 0))
    lsock.settimeout(10)

    def server():
        with lsock:
            conn, _ = lsock.accept()
            conn.settimeout(10)
            seen = []
            line, rest = recv_line(conn)
            seen.append(line)
            conn.sendall(b"250 hi\r\n")
            line, rest = recv_line(conn, rest)
            seen.append(line)
            assert rest == b""
            conn.sendall(b"220 go ahead\r\n")
            tls = certs["server"].wrap_socket(conn, server_side=True)
            rest = b""
            while True:
                line, rest = recv_line(tls, rest)
                seen.append(line)
                if line == b"QUIT":
                    tls.sendall(b"221 bye\r\n")
                    tls.unwrap()
                    tls.close()
                    return seen
                tls.sendall(b"250 ok\r\n")

    thread, result = in_thread(server)
    client = StartTLSClient(smap, lsock.getsockname()[1], certs["client"])
    assert finish(thread, result, smap) == [b"EHLO me", b"STARTTLS", b"MAIL FROM:<a@b>", b"QUIT"]
    run_until(lambda: "close" in client.events, smap)
    assert client.lines == [b"250 hi", b"220 go ahead", b"250 ok", b"221 bye"]
    assert client.tls_at_line == [False, False, True, True]


def test_starttls_pipelined_plaintext_is_tls_input(certs, smap):
    """Bytes after STARTTLS in the same read are not commands: the injection fails the handshake."""
    listener = Listener(smap, lambda s, m: StartTLSServer(s, m, certs["server"]))
    other = StartTLSClient(smap, listener.port, certs["client"])
    run_until(lambda: len(listener.handlers) == 1, smap)
    raw = socket.create_connection(("127.0.0.1", listener.port), timeout=5)
    try:
        raw.sendall(b"STARTTLS\r\nMAIL FROM:<evil>\r\nQUIT\r\n")
        run_until(lambda: len(listener.handlers) == 2 and listener.handlers[1].events, smap)
        victim = listener.handlers[1]
        assert victim.lines == [b"STARTTLS"]
        assert victim.events == ["error"] and isinstance(victim.errors[0], ssl.SSLError)
        line, rest = recv_line(raw)
        assert line == b"220 go ahead"
        raw.settimeout(5)
        assert rest == b"" and raw.recv(100) == b""
    finally:
        raw.close()
    run_until(lambda: "close" in other.events, smap)
    assert other.lines[-1] == b"221 bye" and not other.errors


def test_starttls_optimistic_client_hello_is_not_lost(certs, smap):
    """A ClientHello sent with the command (same segment) reaches TLS intact."""
    listener = Listener(smap, lambda s, m: StartTLSServer(s, m, certs["server"]))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = certs["client"].wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()

    def client():
        with socket.create_connection(("127.0.0.1", listener.port), timeout=10) as raw:
            raw.sendall(b"STARTTLS\r\n" + hello)
            line, rest = recv_line(raw)
            assert line == b"220 go ahead"
            incoming.write(rest)
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    raw.sendall(outgoing.read())
                    incoming.write(raw.recv(65536))
            raw.sendall(outgoing.read())
            tls.write(b"PING\r\nQUIT\r\n")
            raw.sendall(outgoing.read())
            got = b""
            while b"221" not in got:
                try:
                    got += tls.read(1000)
                except ssl.SSLWantReadError:
                    incoming.write(raw.recv(65536))
            return got

    assert finish(*in_thread(client), smap) == b"250 PING\r\n221 bye\r\n"
    server = listener.handlers[0]
    assert server.lines == [b"STARTTLS", b"PING", b"QUIT"]
    assert server.tls_at_line == [False, True, True]


def test_start_tls_arguments(certs, smap):
    chan = asynchat.async_chat(map=smap)
    chan.create_socket(socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(TypeError):
        chan.start_tls("not a context", server_side=True)
    with pytest.raises(TypeError):
        chan.start_tls(certs["server"], server_side=1)
    with pytest.raises(TypeError):
        chan.start_tls(certs["client"], server_side=False, server_hostname=b"localhost")
    with pytest.raises(ValueError, match="client side"):
        chan.start_tls(certs["server"], server_side=True, server_hostname="localhost")
    with pytest.raises(ValueError, match="server_hostname"):
        chan.start_tls(certs["client"], server_side=False)
    chan.close_when_done()
    with pytest.raises(ValueError, match="close_when_done"):
        chan.start_tls(certs["server"], server_side=True)
    chan.discard_buffers()
    chan.start_tls(certs["client"], server_side=False, server_hostname="localhost")
    with pytest.raises(ValueError, match="already"):
        chan.start_tls(certs["client"], server_side=False, server_hostname="localhost")
    with pytest.raises(AttributeError, match="bypass TLS"):
        chan.socket.sendmsg
    listener = Listener(smap, EchoServer)
    with pytest.raises(ValueError, match="listening"):
        listener.start_tls(certs["server"], server_side=True)
    udp = asyncore.dispatcher(map=smap)
    udp.create_socket(socket.AF_INET, socket.SOCK_DGRAM)
    with pytest.raises(ValueError, match="stream"):
        udp.start_tls(certs["server"], server_side=True)


def test_start_tls_from_handle_connect(certs, smap):
    listener = Listener(smap, lambda s, m: EchoServer(s, m, certs["server"]))

    class LateClient(Chat):
        def handle_connect(self):
            self.events.append("connect")
            self.start_tls(certs["client"], server_side=False, server_hostname="localhost")
            self.push(b"late\n")

    client = LateClient(None, smap)
    client.create_socket(socket.AF_INET, socket.SOCK_STREAM)
    client.connect(("127.0.0.1", listener.port))
    run_until(lambda: client.lines, smap)
    assert client.lines == [b"LATE"] and client.events == ["connect", "established"]


def test_connection_refused_under_tls(certs, smap):
    spare = socket.create_server(("127.0.0.1", 0))
    port = spare.getsockname()[1]
    spare.close()
    client = EchoClient(smap, port, certs["client"], lines=[b"nobody"])
    run_until(lambda: client.events, smap)
    assert client.events == ["error"] and isinstance(client.errors[0], ConnectionRefusedError)
    assert not smap


# -- peers that vanish mid-handshake -----------------------------------------------------------
@pytest.mark.parametrize("how", ["fin", "rst"])
def test_client_vanishes_mid_handshake(certs, smap, how):
    listener = Listener(smap, lambda s, m: EchoServer(s, m, certs["server"]))
    good = EchoClient(smap, listener.port, certs["client"], lines=[b"one"])
    run_until(lambda: good.lines == [b"ONE"], smap)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    probe = certs["client"].wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        probe.do_handshake()
    hello = outgoing.read()
    raw = socket.create_connection(("127.0.0.1", listener.port), timeout=5)
    raw.sendall(hello[: len(hello) // 2])
    run_until(lambda: len(listener.handlers) == 2, smap)
    if how == "rst":
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.close()
    victim = listener.handlers[1]
    run_until(lambda: victim.events, smap)
    assert victim.events == ["close"] and not victim.errors
    good.push(b"two\n")
    run_until(lambda: len(good.lines) == 2, smap)
    assert good.lines == [b"ONE", b"TWO"]


@pytest.mark.parametrize("pending_output", [False, True], ids=["idle", "sending"])
def test_tls_peer_reset_closes_like_a_plain_one(certs, smap, pending_output):
    # A reset under TLS is a disconnect (handle_close), as on a plain
    # socket, whether it is met reading or sending: no handle_error.
    listener = Listener(smap, lambda s, m: EchoServer(s, m, certs["server"]))
    raw = socket.create_connection(("127.0.0.1", listener.port), timeout=5)
    client = in_thread(lambda: certs["client"].wrap_socket(raw, server_hostname="localhost"))
    run_until(lambda: "value" in client[1] or "error" in client[1], smap)
    tls = client[1]["value"]
    tls.sendall(b"one\n")
    run_until(lambda: listener.handlers and listener.handlers[0].lines == [b"one"], smap)
    victim = listener.handlers[0]
    if pending_output:
        # a reply bigger than the socket buffers, never read by the peer
        victim.push(b"x" * (8 << 20))
        asyncore.loop(0.05, map=smap, count=3)
        assert victim._af_queue
    tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    tls.close()
    run_until(lambda: len(victim.events) > 1, smap)
    assert victim.events == ["established", "close"] and not victim.errors


class TimedServer(EchoServer):
    def __init__(self, sock, m, ctx, timeout):
        Chat.__init__(self, sock, m)
        self.start_tls(ctx, server_side=True, handshake_timeout=timeout)

    def handle_tls_handshake_timeout(self):
        self.events.append("handshake timeout")
        EchoServer.handle_tls_handshake_timeout(self)

    def log_info(self, message, type="info"):
        self.logged = (type, message)


def test_stalled_handshake_is_cut_after_handshake_timeout(certs, smap):
    listener = Listener(smap, lambda s, m: TimedServer(s, m, certs["server"], 0.5))
    with socket.create_connection(("127.0.0.1", listener.port), timeout=5):
        start = time.monotonic()
        run_until(lambda: listener.handlers and "close" in listener.handlers[0].events, smap)
        elapsed = time.monotonic() - start
    victim = listener.handlers[0]
    assert victim.events == ["handshake timeout", "close"] and not victim.errors
    assert 0.4 <= elapsed < 3.0, elapsed
    assert victim.logged[0] == "error" and "TLS handshake not complete after 0.5 s" in victim.logged[1]


def test_handshake_timeout_none_and_a_finished_handshake_are_never_cut(certs, smap):
    listener = Listener(
        smap, lambda s, m: TimedServer(s, m, certs["server"], None if len(listener.handlers) == 0 else 0.3)
    )
    with socket.create_connection(("127.0.0.1", listener.port), timeout=5):
        raw = socket.create_connection(("127.0.0.1", listener.port), timeout=5)
        client = in_thread(lambda: certs["client"].wrap_socket(raw, server_hostname="localhost"))
        run_until(lambda: "value" in client[1] or "error" in client[1], smap)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            asyncore.loop(0.05, map=smap, count=1)
        stalled, done = listener.handlers
        assert stalled.events == [] and not stalled.errors  # no limit
        assert done.events == ["established"]  # finished before its 0.3 s
        client[1]["value"].close()


@pytest.mark.parametrize("bad", ["1", 0, -1.0, float("nan"), float("inf")])
def test_handshake_timeout_is_checked_before_anything_changes(certs, smap, bad):
    a, b = socket.socketpair()
    with b:
        chan = Chat(a, smap)
        with pytest.raises((TypeError, ValueError)):
            chan.start_tls(certs["server"], server_side=True, handshake_timeout=bad)
        assert chan._af_tls is None and chan.socket is a
        chan.close()


def test_server_vanishes_mid_handshake(certs, smap):
    lsock = socket.create_server(("127.0.0.1", 0))
    try:
        client = EchoClient(smap, lsock.getsockname()[1], certs["client"], lines=[b"never"])
        lsock.settimeout(5)
        conn, _ = lsock.accept()
        conn.setblocking(False)
        got = []

        def hello_arrived():
            try:
                got.append(conn.recv(65536))
            except BlockingIOError:
                return False
            return True

        run_until(hello_arrived, smap)
        assert got[0][:1] == b"\x16"  # a TLS handshake record
        asyncore.loop(0.05, map=smap, count=3)
        # waiting for the server: data is queued, but the handshake wants input only
        entry = _poller.poller_for(smap).known[client._fileno]
        assert client.writable() and entry[1] & _poller.IN and not entry[1] & _poller.OUT
        conn.close()
        run_until(lambda: "close" in client.events, smap)
        assert client.events == ["connect", "close"] and not client.errors
    finally:
        lsock.close()


@pytest.fixture(scope="module", params=["ignored", "reported"])
def eof_option_certs(request, tmp_path_factory):
    """Contexts with OP_IGNORE_UNEXPECTED_EOF set ("ignored": OpenSSL takes a
    bare TCP close for close_notify, CPython 3.9's default) or cleared
    ("reported": an error, SSLEOFError on 3.10+ but a plain SSLError on 3.9),
    so every interpreter meets both ways OpenSSL words the peer's EOF."""
    where = tmp_path_factory.mktemp("eof_" + request.param)
    server_ctx, client_ctx, _, _ = _certs.contexts(where, request.param)
    for ctx in (server_ctx, client_ctx):
        if request.param == "ignored":
            ctx.options |= ssl.OP_IGNORE_UNEXPECTED_EOF
        else:
            ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF
    return {"server": server_ctx, "client": client_ctx}


@pytest.mark.skipif(not hasattr(ssl, "OP_IGNORE_UNEXPECTED_EOF"), reason="needs OpenSSL 3")
@pytest.mark.parametrize("scenario", ["close_notify", "ragged", "client_fin", "server_fin"])
def test_peer_eof_whatever_openssl_reports(eof_option_certs, smap, scenario):
    # the scenarios above, with the option forced either way
    if scenario in ("close_notify", "ragged"):
        test_blocking_stdlib_client(eof_option_certs, smap, scenario == "close_notify")
    elif scenario == "client_fin":
        test_client_vanishes_mid_handshake(eof_option_certs, smap, "fin")
    else:
        test_server_vanishes_mid_handshake(eof_option_certs, smap)


# -- input buffered inside the TLS layer ---------------------------------------------------------
class SmallReads(EchoServer):
    ac_in_buffer_size = 7


def memory_bio_client(ctx, port):
    """A blocking client over memory BIOs: full control of how records are batched."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            raw.sendall(outgoing.read())
            incoming.write(raw.recv(65536))
    raw.sendall(outgoing.read())
    return raw, tls, incoming, outgoing


def read_until(raw, tls, incoming, predicate):
    got = b""
    while not predicate(got):
        try:
            got += tls.read(65536)
        except ssl.SSLWantReadError:
            data = raw.recv(65536)
            if not data:
                raise EOFError(got[-200:]) from None
            incoming.write(data)
    return got


def test_buffered_records_delivered_without_new_readiness(certs, smap):
    """Many records in one segment, and one record longer than the read size,
    sent once and never followed by more: the answers need input the socket
    will not announce again (it is all in the TLS layer)."""
    listener = Listener(smap, lambda s, m: SmallReads(s, m, certs["server"]))
    lines = [b"rec%03d" % i + b"." * (i % 23) for i in range(300)]
    long_line = b"L" * 12000

    def client():
        raw, tls, incoming, outgoing = memory_bio_client(certs["client"], listener.port)
        with raw:
            for line in lines:
                tls.write(line + b"\n")  # one record each
            raw.sendall(outgoing.read())  # all in one send
            want = b"".join(line.upper() + b"\n" for line in lines)
            got = read_until(raw, tls, incoming, lambda g: len(g) >= len(want))
            assert got == want
            tls.write(long_line + b"\n")
            raw.sendall(outgoing.read())
            got = read_until(raw, tls, incoming, lambda g: g.endswith(b"\n"))
            assert got == long_line + b"\n"
        return True

    assert finish(*in_thread(client), smap)
    assert listener.handlers[0].lines == lines + [long_line]


def test_post_handshake_auth_read_path_writes(certs, smap):
    """TLS 1.3 post-handshake authentication: the client answers a
    CertificateRequest while it reads, without writing any data itself."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(certs["cert"], certs["key"])
    server_ctx.load_verify_locations(certs["cert"])
    server_ctx.verify_mode = ssl.CERT_OPTIONAL
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    server_ctx.post_handshake_auth = True  # the certificate is asked for later
    client_ctx = ssl.create_default_context(cafile=certs["cert"])
    client_ctx.load_cert_chain(certs["cert"], certs["key"])
    client_ctx.post_handshake_auth = True

    class Auth(EchoServer):
        def line_received(self, line):
            self.lines.append(line)
            if line == b"AUTH":
                self.socket.ssl_object.verify_client_post_handshake()
                self.push(b"SHOW ME\n")
            else:
                self.push(line.upper() + b"\n")

    listener = Listener(smap, lambda s, m: Auth(s, m, server_ctx))
    client = EchoClient(smap, listener.port, client_ctx, lines=[b"hi"])
    run_until(lambda: client.lines == [b"HI"], smap)
    server = listener.handlers[0]
    assert not server.socket.getpeercert()  # no certificate asked for yet
    client.push(b"AUTH\n")
    run_until(lambda: client.lines == [b"HI", b"SHOW ME"] and server.socket.getpeercert(), smap)
    assert server.socket.getpeercert()["subject"] == ((("commonName", "localhost"),),)
    assert server.lines == [b"hi", b"AUTH"]  # the client wrote no data after AUTH
    assert not server.errors and not client.errors


class WantReadWhileBlocked:
    """Stands in for the SSLObject: writes meet WANT_READ until data was read
    (what a renegotiation does), so the retry rule is exercised."""

    def __init__(self, real):
        self.real = real
        self.blocked = True
        self.writes = []

    def write(self, data):
        self.writes.append(bytes(data))
        if self.blocked:
            raise ssl.SSLWantReadError("renegotiating")
        return self.real.write(data)

    def read(self, *args):
        data = self.real.read(*args)
        if data:
            self.blocked = False
        return data

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_write_retried_with_the_same_bytes_after_want_read(certs, smap):
    payload = random.Random(7).randbytes(300000).replace(b"\n", b"_")
    write_events = []

    class Blocked(EchoServer):
        def handle_write(self):
            write_events.append(1)
            EchoServer.handle_write(self)

        def line_received(self, line):
            self.lines.append(line)
            if line == b"GO":
                # from now on writes need the peer's (pretend) handshake data
                self.socket.ssl_object = WantReadWhileBlocked(self.socket.ssl_object)
                self.push(payload + b"\n")
            else:
                self.push(line + b"\n")

    listener = Listener(smap, lambda s, m: Blocked(s, m, certs["server"]))
    client = EchoClient(smap, listener.port, certs["client"], lines=[b"GO"])
    run_until(lambda: listener.handlers and listener.handlers[0].lines == [b"GO"], smap)
    server = listener.handlers[0]
    proxy = server.socket.ssl_object
    run_until(lambda: proxy.writes, smap)
    for _ in range(20):
        asyncore.loop(0.01, map=smap, count=1)
    # waiting for the peer: no write interest (no busy loop), read interest on
    entry = _poller.poller_for(smap).known[server._fileno]
    assert entry[1] & _poller.IN and not entry[1] & _poller.OUT
    assert write_events == [] and len(proxy.writes) == 1
    client.push(b"kick\n")
    run_until(lambda: len(client.lines) == 2, smap)
    assert client.lines == [payload, b"kick"]
    # the first write after the block repeated the refused bytes exactly
    assert proxy.writes[1] == proxy.writes[0] and len(proxy.writes[0]) == _tls.WRITE_CHUNK


# -- close_when_done, close_notify ------------------------------------------------------------
class Download(Chat):
    def __init__(self, sock, m, ctx, size):
        Chat.__init__(self, sock, m)
        self.size = size
        self.start_tls(ctx, server_side=True)

    def line_received(self, line):
        data = random.Random(3).randbytes(self.size)
        self.push_with_producer(asynchat.simple_producer(data, 100000))
        self.close_when_done()


def test_close_when_done_delivers_everything(certs, smap):
    size = 8 << 20
    expected = random.Random(3).randbytes(size)
    listener = Listener(smap, lambda s, m: Download(s, m, certs["server"], size))

    class Sink(EchoClient):
        def __init__(self, *args, **kwargs):
            EchoClient.__init__(self, *args, **kwargs)
            self.set_terminator(None)
            self.received = []

        def collect_incoming_data(self, data):
            self.received.append(data)

    client = Sink(smap, listener.port, certs["client"], lines=[b"GET"])
    client.ac_in_buffer_size = 4096  # read slowly: the server's backlog fills
    run_until(lambda: "close" in client.events, smap, timeout=30)
    assert b"".join(client.received) == expected
    assert client.socket.close_notify_received
    assert listener.handlers[0].events == ["established", "close"]


def test_close_when_done_waits_for_the_ciphertext_backlog(certs, smap):
    """The close sentinel is reached while ciphertext still waits for the
    kernel (tiny socket buffers, a peer that does not read yet): the channel
    must flush it and close_notify before closing, not drop them."""
    go = threading.Event()
    block = random.Random(5).randbytes(60000)

    class LastWords(Chat):
        def __init__(self, sock, m):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            Chat.__init__(self, sock, m)
            self.start_tls(certs["server"], server_side=True)

        def line_received(self, line):
            # one send takes the block; the kernel only a part of its ciphertext
            self.push(block)
            self.close_when_done()

    listener = Listener(smap, LastWords)

    def client():
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.settimeout(10)
        raw.connect(("127.0.0.1", listener.port))
        with raw:
            # suppress_ragged_eofs=False: a close without close_notify raises
            tls = certs["client"].wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
            tls.sendall(b"GET\n")
            assert go.wait(10)
            data = recv_all(tls)
            tls.close()
            return data

    thread, result = in_thread(client)
    run_until(lambda: listener.handlers and listener.handlers[0]._af_queue.close_pending, smap)
    server = listener.handlers[0]
    for _ in range(5):
        asyncore.loop(0.02, map=smap, count=1)
    assert server.connected and server.socket._backlog  # still flushing, not closed
    go.set()
    assert finish(thread, result, smap) == block
    assert server.events == ["established", "close"]


def test_plain_close_sends_close_notify(certs, smap):
    class Greeter(EchoServer):
        def handle_tls_established(self):
            self.push(b"hello\n")
            self.close()  # immediate: one best-effort send of the rest

    listener = Listener(smap, lambda s, m: Greeter(s, m, certs["server"]))
    client = EchoClient(smap, listener.port, certs["client"])
    run_until(lambda: "close" in client.events, smap)
    assert client.lines == [b"hello"] and client.socket.close_notify_received


# -- the state machine ----------------------------------------------------------------------------
class StateRecorder(EchoServer):
    """Records the TLS state at each step a server goes through."""

    def __init__(self, sock, m, ctx):
        Chat.__init__(self, sock, m)
        self.start_tls(ctx, server_side=True, handshake_timeout=30)
        self.states = [self.socket.state]
        self.timer_at_start = self.socket._handshake_timer is not None

    def handle_tls_established(self):
        self.states.append(self.socket.state)
        self.timer_when_open = self.socket._handshake_timer
        Chat.handle_tls_established(self)

    def line_received(self, line):
        self.lines.append(line)
        self.push(b"BYE\n")
        self.close_when_done()

    def close(self):
        if self._af_tls is not None:
            self.states.append(self.socket.state)
        Chat.close(self)
        if self._af_tls is not None:
            self.states.append(self.socket.state)


def test_states_in_order_and_the_timer_only_while_handshaking(certs, smap):
    from asynframe._tls import TLSState

    listener = Listener(smap, lambda s, m: StateRecorder(s, m, certs["server"]))
    client = EchoClient(smap, listener.port, certs["client"], lines=[b"QUIT"])
    run_until(lambda: "close" in client.events and listener.handlers and "close" in listener.handlers[0].events, smap)
    server = listener.handlers[0]
    # accepted sockets are connected: start_tls() begins the handshake at once
    assert server.states == [TLSState.HANDSHAKING, TLSState.OPEN, TLSState.SHUTDOWN, TLSState.CLOSED]
    assert server.timer_at_start and server.timer_when_open is None
    assert repr(server.socket).startswith("<TLSSocket closed")
    assert client.lines == [b"BYE"] and client.socket.close_notify_received


def test_a_move_the_table_does_not_allow_is_refused(certs, smap):
    from asynframe._tls import TLSState
    from asynframe._tls_state import _NEXT

    listener = Listener(smap, lambda s, m: StateRecorder(s, m, certs["server"]))
    client = EchoClient(smap, listener.port, certs["client"])
    run_until(lambda: client.tls_open and listener.handlers and listener.handlers[0].tls_open, smap)
    layer = listener.handlers[0].socket
    assert layer.state is TLSState.OPEN
    for target in TLSState:
        if target not in _NEXT[TLSState.OPEN]:
            with pytest.raises(RuntimeError, match="TLS state open cannot go to"):
                layer._enter(target)
            assert layer.state is TLSState.OPEN
    # every state but CLOSED has a way to CLOSED, and CLOSED is final
    assert all(TLSState.CLOSED in _NEXT[state] for state in TLSState if state is not TLSState.CLOSED)
    assert not _NEXT[TLSState.CLOSED]
    client.close()
    run_until(lambda: "close" in listener.handlers[0].events, smap)
    assert layer.state is TLSState.CLOSED


# -- large transfers -------------------------------------------------------------------------------
class Source:
    """Producer of *total* pseudo-random bytes, each 256 KiB block stamped with its index."""

    def __init__(self, total):
        self.left = total
        self.index = 0
        self.base = random.Random(11).randbytes(256 << 10)
        self.digest = hashlib.sha256()

    def more(self):
        if not self.left:
            return b""
        size = min(self.left, len(self.base))
        block = (struct.pack(">Q", self.index) + self.base[8:])[:size]
        self.index += 1
        self.left -= size
        self.digest.update(block)
        return block


class Receiver(asynchat.async_chat):
    def __init__(self, sock, m, ctx):
        asynchat.async_chat.__init__(self, sock, m)
        self.set_terminator(None)
        self.digest = hashlib.sha256()
        self.count = 0
        self.closed = False
        if ctx is not None:
            self.start_tls(ctx, server_side=True)

    def collect_incoming_data(self, data):
        self.count += len(data)
        self.digest.update(data)

    def handle_close(self):
        self.closed = True
        self.close()


class Sender(asynchat.async_chat):
    def __init__(self, m, port, ctx, total):
        asynchat.async_chat.__init__(self, map=m)
        self.source = Source(total)
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.connect(("127.0.0.1", port))
        if ctx is not None:
            self.start_tls(ctx, server_side=False, server_hostname="localhost")
        self.push_with_producer(self.source)
        self.close_when_done()

    def handle_connect(self):
        pass


def transfer(certs, smap, total, timeout):
    tls_listener = Listener(smap, lambda s, m: Receiver(s, m, certs["server"]))
    plain_listener = Listener(smap, lambda s, m: Receiver(s, m, None))
    senders = [Sender(smap, tls_listener.port, certs["client"], total), Sender(smap, plain_listener.port, None, total)]
    receivers = lambda: tls_listener.handlers + plain_listener.handlers  # noqa: E731
    started = time.monotonic()
    run_until(lambda: len(receivers()) == 2 and all(r.closed for r in receivers()), smap, timeout=timeout, step=0.5)
    elapsed = time.monotonic() - started
    expected = senders[0].source.digest.hexdigest()
    assert senders[1].source.digest.hexdigest() == expected
    for receiver in receivers():
        assert receiver.count == total
        assert receiver.digest.hexdigest() == expected
    print("%d MiB TLS + plain: %.1f s" % (total >> 20, elapsed))


def test_transfer_64mib_tls_and_plain(certs, smap):
    transfer(certs, smap, 64 << 20, timeout=50)


@pytest.mark.huge
@pytest.mark.timeout(600)
def test_transfer_1gib_tls_and_plain(certs, smap, request):
    """Not in the default run: select it with ``-m huge`` (or ASYNFRAME_HUGE_TESTS=1)."""
    if "huge" not in (request.config.getoption("markexpr") or "") and not env_flag("ASYNFRAME_HUGE_TESTS"):
        pytest.skip("1 GiB transfer: run with -m huge")
    transfer(certs, smap, 1 << 30, timeout=580)


# -- both cores --------------------------------------------------------------------------------------
def test_core_matches_environment():
    if NO_EXTENSIONS:
        assert not asynframe.USING_C_CORE
