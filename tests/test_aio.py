"""asynframe.aio on real loopback connections: ChatProtocol and framed_reader.

Every case runs on the default asyncio loop and on uvloop (skipped when it
is not installed): the ``loop_factory`` fixture.  Each test is bounded twice,
by ``pytest.mark.timeout`` and by ``asyncio.wait_for`` around its coroutine
(``run``); servers and client connections are closed in ``finally`` blocks.

ChatProtocol cases run once per delivery style where the style matters
(``STYLES``: ``collect_incoming_data``/``found_terminator`` callbacks, the
stock ``_collect_incoming_data`` + ``_get_data()`` pair, ``frame_received``):
line echo with lines split across writes and pipelined by the thousand (the
server's transport writes are counted: at most one per read batch), a
length-prefixed protocol switching between int and bytes terminators in its
callbacks, a None terminator, ``max_frame``, a large producer with
``close_when_done``, flow control against a client that does not read, TLS,
and two differential checks on the strategies of ``framing_scenarios.py``
(random streams, chunkings, terminator changes from the callbacks): through
a real transport the frames are those the scanner gives when fed directly,
and the callbacks are exactly the reference asynchat's for the same reads
(the frames too, in the collect and frames styles).

framed_reader cases use ``asyncio.start_server``/``asyncio.open_connection``.

Both cores: ``asynframe.aio`` binds its framing core when ``asynframe`` is
first imported, so one process tests one core (the compiled one unless
``ASYNFRAME_NO_EXTENSIONS`` is set); the file is marked ``api_layer``, so a
second pytest command of the README runs it again with the pure core
forced (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import socket
import ssl
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import asynframe
from asynframe import aio
from asynframe.aio import ChatProtocol, FrameTooLarge, framed_reader

import _certs

# the strategies of the core's differential tests: same streams, same cuts,
# and the same reference: the real asynchat fed without a socket
from framing_scenarios import KEEP, chunkings, reference_frames, run_reference, streams, terminators
from support import NO_EXTENSIONS

try:
    import uvloop
except ImportError:  # optional: the uvloop cases are skipped
    uvloop = None

HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))

pytestmark = [pytest.mark.api_layer, pytest.mark.timeout(30)]

LOOP_PARAMS = [
    pytest.param("asyncio", id="asyncio"),
    pytest.param(
        "uvloop",
        id="uvloop",
        marks=pytest.mark.skipif(uvloop is None, reason="uvloop is not installed"),
    ),
]


def _new_loop(name):
    if name == "uvloop":
        return uvloop.new_event_loop()
    # not asyncio.new_event_loop(): a policy installed by uvloop.install()
    # elsewhere would make that a uvloop too
    return asyncio.SelectorEventLoop() if os.name == "posix" else asyncio.ProactorEventLoop()


# module scope: hypothesis refuses function-scoped fixtures
@pytest.fixture(params=LOOP_PARAMS, scope="module")
def loop_factory(request):
    """A function making a new event loop of one kind (asyncio's or uvloop's)."""
    return lambda: _new_loop(request.param)


def run(loop_factory, coro, timeout=10.0):
    """Run *coro* on a fresh loop, bounded by *timeout*; the loop is closed after.

    Errors the loop reports to its exception handler (a callback that
    raised, a protocol method that failed) fail the test.
    """
    loop = loop_factory()
    reported = []
    loop.set_exception_handler(lambda loop, context: reported.append(context))
    try:
        result = loop.run_until_complete(asyncio.wait_for(coro, timeout))
        # let the last connection_lost() callbacks run
        loop.run_until_complete(asyncio.sleep(0.01))
        assert not reported, "the loop reported errors: %r" % (reported,)
        return result
    finally:
        try:
            tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


async def until(predicate, timeout=5.0):
    """Wait (polling the loop) until *predicate()* is true."""
    deadline = time.monotonic() + timeout
    spins = 0
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in %.1fs" % timeout
        # a loopback read usually lands within a few loop iterations
        spins += 1
        await asyncio.sleep(0 if spins < 100 else 0.001)


# -- servers and clients -------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(factory, ssl_context=None):
    """``loop.create_server`` on an ephemeral port: yields (port, protocols made)."""
    loop = asyncio.get_running_loop()
    protocols = []

    def make():
        proto = factory()
        protocols.append(proto)
        return proto

    server = await loop.create_server(make, "127.0.0.1", 0, ssl=ssl_context)
    try:
        yield server.sockets[0].getsockname()[1], protocols
    finally:
        server.close()
        for proto in protocols:
            # abort() on a closed asyncio transport is not always a no-op
            if proto.transport is not None and not proto.transport.is_closing():
                proto.transport.abort()
        await server.wait_closed()
        await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def stream_server(handler, ssl_context=None):
    """``asyncio.start_server``: yields the port; handler writers are closed after."""
    writers = []

    async def handle(reader, writer):
        writers.append(writer)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the test's client aborts its connection when done
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ssl_context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in writers:
            if not writer.transport.is_closing():
                writer.transport.abort()
        await server.wait_closed()
        await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def client(port, ssl_context=None, rcvbuf=None):
    """``asyncio.open_connection``: yields (reader, writer), closed after.

    *rcvbuf* sets a small kernel receive buffer (before connecting, so that
    the window is small too): a client that does not read stalls the server soon.
    """
    if rcvbuf is not None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock)
        except BaseException:
            sock.close()
            raise
    elif ssl_context is not None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ssl_context, server_hostname="localhost")
    else:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        if not writer.transport.is_closing():
            writer.transport.abort()


# -- server protocols, in the three delivery styles ---------------------------------------------


class CountingTransport:
    """Wraps a transport (uvloop's take no new attributes) to count writes."""

    def __init__(self, transport):
        self._transport = transport
        self.writes = 0

    def write(self, data):
        self.writes += 1
        self._transport.write(data)

    def writelines(self, chunks):
        self.writes += 1
        self._transport.writelines(chunks)

    def __getattr__(self, name):
        return getattr(self._transport, name)


class Recording:
    """Mixin over a style class: counts reads, bytes and transport writes."""

    def __init__(self):
        super().__init__()
        self.reads = 0
        self.received = 0
        self.chunks = []
        self.lost = None

    def connection_made(self, transport):
        super().connection_made(transport)
        self.transport = CountingTransport(transport)

    def buffer_updated(self, nbytes):
        self.reads += 1
        self.received += nbytes
        super().buffer_updated(nbytes)

    def connection_lost(self, exc):
        super().connection_lost(exc)
        self.lost = exc or "closed"


class CallbackStyle(ChatProtocol):
    def collect_incoming_data(self, data):
        assert type(data) is bytes
        self.chunks.append(data)

    def found_terminator(self):
        frame = b"".join(self.chunks)
        self.chunks = []
        self.on_frame(frame)


class CollectStyle(ChatProtocol):
    collect_incoming_data = ChatProtocol._collect_incoming_data

    def found_terminator(self):
        self.on_frame(self._get_data())


class FrameStyle(ChatProtocol):
    def frame_received(self, frame):
        assert type(frame) is bytes
        self.on_frame(frame)


STYLES = {"callbacks": CallbackStyle, "collect": CollectStyle, "frames": FrameStyle}
MODES = {"callbacks": aio.MODE_CALLBACKS, "collect": aio.MODE_COLLECT, "frames": aio.MODE_FRAMES}


def styled(mixin, style, **attrs):
    """*mixin* over the *style* base; *attrs* go in the class body (``terminator = ...``)."""
    return type("%s_%s" % (mixin.__name__, style), (mixin, STYLES[style]), attrs)


class LineEcho(Recording):
    def connection_made(self, transport):
        super().connection_made(transport)
        self.set_terminator(b"\r\n")

    def on_frame(self, line):
        self.push(line + b"\r\n")


@pytest.mark.parametrize("style", STYLES)
def test_style_picks_core_mode(style):
    proto = styled(LineEcho, style)()
    assert proto._scanner.mode == MODES[style]


# -- line echo ---------------------------------------------------------------------------------


async def echo_exchange(port, protocols, ssl_context=None):
    async with client(port, ssl_context) as (reader, writer):
        # a line split across writes, "\r" and "\n" in different reads: each
        # piece is waited for, so each is a read of its own
        sent = 0
        for piece in (b"hel", b"lo\r", b"\nwor", b"ld\r", b"\n", b"\r\n"):
            writer.write(piece)
            sent += len(piece)
            await until(lambda: protocols and protocols[0].received >= sent)
        assert await reader.readexactly(16) == b"hello\r\nworld\r\n\r\n"
        proto = protocols[0]
        assert proto.reads >= 6

        # thousands of lines in one write: one transport write per read batch
        lines = [b"line %d %s" % (i, b"x" * (i % 23)) for i in range(3000)]
        blob = b"".join(line + b"\r\n" for line in lines)
        writes, reads = proto.transport.writes, proto.reads
        writer.write(blob)
        assert await reader.readexactly(len(blob)) == blob
        writes = proto.transport.writes - writes
        reads = proto.reads - reads
        assert 1 <= writes <= reads, (writes, reads)
        assert writes <= len(lines) // 50, (writes, reads)

        # a push outside any callback goes straight out
        proto.push(bytearray(b"unprompted\r\n"))
        assert await reader.readexactly(12) == b"unprompted\r\n"


@pytest.mark.parametrize("style", STYLES)
def test_line_echo(loop_factory, style):
    async def main():
        async with serving(styled(LineEcho, style)) as (port, protocols):
            await echo_exchange(port, protocols)

    run(loop_factory, main())


def test_class_attribute_terminator_and_max_frame(loop_factory):
    # ``terminator = ...``/``max_frame = ...`` in a class body, as async_chat allows
    class Echo(LineEcho, FrameStyle):
        terminator = b"\n"
        max_frame = 64

        def connection_made(self, transport):
            Recording.connection_made(self, transport)

    proto = Echo()
    assert proto.terminator == b"\n" and proto.get_terminator() == b"\n"
    assert proto.max_frame == 64 and proto._scanner.max_frame == 64
    assert isinstance(Echo.__dict__.get("terminator", Echo.terminator), property)

    async def main():
        async with serving(Echo) as (port, protocols):
            async with client(port) as (reader, writer):
                writer.write(b"a\nbc\n")
                assert await reader.readexactly(7) == b"a\r\nbc\r\n"

    run(loop_factory, main())


# -- length-prefixed: int and bytes terminators ------------------------------------------------


class LengthPrefixed(Recording):
    """``<n>\\n`` then n bytes; answers ``<n> <sha1 of body>\\n``."""

    def connection_made(self, transport):
        super().connection_made(transport)
        self.set_terminator(b"\n")
        self.in_body = False

    def on_frame(self, frame):
        if not self.in_body:
            self.set_terminator(int(frame))
            self.in_body = True
        else:
            assert self.get_terminator() == 0  # an int terminator counts down
            self.push(b"%d %s\n" % (len(frame), hashlib.sha1(frame).hexdigest().encode()))
            self.set_terminator(b"\n")
            self.in_body = False


@pytest.mark.parametrize("style", STYLES)
def test_length_prefixed_switches_terminators(loop_factory, style):
    rng = random.Random(7)
    bodies = [b"x", b"line\nbreaks\n\n", rng.randbytes(300_000), b"\n", rng.randbytes(70_000)]
    bodies += [rng.randbytes(rng.randrange(1, 40)) for _ in range(200)]
    stream = b"".join(b"%d\n%s" % (len(body), body) for body in bodies)
    expected = b"".join(b"%d %s\n" % (len(b), hashlib.sha1(b).hexdigest().encode()) for b in bodies)

    async def main():
        async with serving(styled(LengthPrefixed, style)) as (port, protocols):
            async with client(port) as (reader, writer):
                # everything in one write, then the same again in uneven pieces
                writer.write(stream)
                assert await reader.readexactly(len(expected)) == expected
                pos = 0
                while pos < len(stream):
                    step = rng.choice([1, 2, 3, 7, 1000, 65536])
                    writer.write(stream[pos : pos + step])
                    pos += step
                    if step < 10:
                        await writer.drain()
                        await asyncio.sleep(0)
                assert await reader.readexactly(len(expected)) == expected

    run(loop_factory, main(), timeout=20)


# -- None terminator ----------------------------------------------------------------------------


class RawAfterHeader(Recording):
    """A ``RAW`` line switches to no terminator; at EOF the digest of the rest goes back."""

    def connection_made(self, transport):
        super().connection_made(transport)
        self.set_terminator(b"\r\n")
        self.raw = False

    def on_frame(self, frame):
        if self.raw:
            self.chunks.append(frame)  # frame_received gets stream chunks now
        else:
            assert frame == b"RAW"
            self.set_terminator(None)
            self.raw = True

    def raw_data(self):
        # callbacks: collect_incoming_data filled self.chunks; collect: the
        # core's incoming list; frames: on_frame filled self.chunks
        return b"".join(self.chunks) + b"".join(self.incoming)

    def eof_received(self):
        self.push(hashlib.sha256(self.raw_data()).hexdigest().encode() + b"\n")
        return super().eof_received()


@pytest.mark.parametrize("style", STYLES)
def test_none_terminator(loop_factory, style):
    rng = random.Random(3)
    raw = b"\r\n" + rng.randbytes(200_000) + b"\r\n\r"

    async def main():
        async with serving(styled(RawAfterHeader, style)) as (port, protocols):
            async with client(port) as (reader, writer):
                # the switch applies to the very next byte of the same read
                writer.write(b"RAW\r\n" + raw[:1000])
                await until(lambda: protocols and protocols[0].received >= 1005)
                assert protocols[0].get_terminator() is None
                writer.write(raw[1000:150_000])
                await writer.drain()
                writer.write(raw[150_000:])
                writer.write_eof()
                reply = await reader.read()
                assert reply == hashlib.sha256(raw).hexdigest().encode() + b"\n"
                assert protocols[0].raw_data() == raw
                assert protocols[0].ac_in_buffer == b""

    run(loop_factory, main())


# -- max_frame ----------------------------------------------------------------------------------


class Limited(LineEcho):
    def __init__(self):
        super().__init__()
        self.too_large = []

    def frame_too_large(self, size):
        self.too_large.append(size)
        super().frame_too_large(size)


class LimitedPerInstance(Limited):
    def connection_made(self, transport):
        super().connection_made(transport)
        self.max_frame = 1024


@pytest.mark.parametrize("how", ["class", "instance"])
@pytest.mark.parametrize("style", STYLES)
def test_max_frame_closes_only_that_connection(loop_factory, style, how, caplog):
    if how == "class":
        cls = styled(Limited, style, max_frame=1024)
    else:
        cls = styled(LimitedPerInstance, style)

    async def main():
        async with serving(cls) as (port, protocols):
            async with (
                client(port) as (good_r, good_w),
                client(port) as (bad_r, bad_w),
                client(port) as (slow_r, slow_w),
            ):
                good_w.write(b"hi\r\n")
                assert await good_r.readexactly(4) == b"hi\r\n"
                await until(lambda: len(protocols) == 3)
                assert all(p.max_frame == 1024 for p in protocols)
                # a line answered in the same read as the oversized frame still goes out
                bad_w.write(b"ok\r\n" + b"x" * 5000)
                assert await bad_r.read() == b"ok\r\n"  # then EOF: closed
                # exceeded over two reads
                slow = protocols[2]
                slow_w.write(b"y" * 600)
                await until(lambda: slow.received >= 600)
                assert not slow.too_large
                slow_w.write(b"y" * 600)
                assert await slow_r.read() == b""
                # the others keep working
                good_w.write(b"still here\r\n")
                assert await good_r.readexactly(12) == b"still here\r\n"
                bad = protocols[1]
                await until(lambda: bad.lost and slow.lost)
                assert bad.too_large and bad.too_large[0] > 1024
                assert slow.too_large and slow.too_large[0] > 1024
                assert not protocols[0].too_large and protocols[0].lost is None

    with caplog.at_level("WARNING", logger="asynframe.aio"):
        run(loop_factory, main())
    assert "max_frame=1024" in caplog.text


# -- producers and close_when_done ----------------------------------------------------------------

PAYLOAD = random.Random(11).randbytes(5 << 20)


class SliceProducer:
    """Produces *data* in *chunk*-sized pieces, as memoryview/bytearray/bytes."""

    def __init__(self, data, chunk=65536):
        self.view = memoryview(data)
        self.chunk = chunk
        self.pulls = 0

    def more(self):
        self.pulls += 1
        piece = self.view[: self.chunk]
        self.view = self.view[self.chunk :]
        kind = self.pulls % 3
        return piece if kind == 0 else bytearray(piece) if kind == 1 else bytes(piece)


class Download(Recording):
    def connection_made(self, transport):
        super().connection_made(transport)
        self.set_terminator(b"\r\n")

    def on_frame(self, frame):
        # only queued inside the callback: the pump after the read sends it
        assert frame == b"GET"
        self.push(b"BEGIN\r\n")
        self.push_with_producer(SliceProducer(PAYLOAD))
        self.push(b"END\r\n")  # queued behind the producer
        self.close_when_done()
        self.push(b"after close_when_done: never sent")


@pytest.mark.parametrize("style", STYLES)
def test_producer_then_close_when_done(loop_factory, style):
    async def main():
        async with serving(styled(Download, style)) as (port, protocols):
            async with client(port) as (reader, writer):
                writer.write(b"GET\r\n")
                data = await reader.read()  # until EOF
                assert len(data) == len(PAYLOAD) + 12
                assert data == b"BEGIN\r\n" + PAYLOAD + b"END\r\n"
                await until(lambda: protocols[0].lost)

    run(loop_factory, main(), timeout=20)


class Greeter(ChatProtocol):
    """Pushes a producer and closes when done, from connection_made."""

    # keep reading while paused, so that the EOF is seen with output queued
    pause_reading_while_writing_paused = False

    def connection_made(self, transport):
        super().connection_made(transport)
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        self.eof_with_queue = None
        self.push(b"hello ")
        self.push_with_producer(SliceProducer(PAYLOAD[:2_000_000], 4096))
        self.close_when_done()

    def eof_received(self):
        self.eof_with_queue = bool(self._waiting)
        return super().eof_received()

    def frame_received(self, frame):
        pass


def test_producer_when_peer_sends_eof_first(loop_factory):
    # the client half-closes at once: what is queued is finished, then closed
    async def main():
        async with serving(Greeter) as (port, protocols):
            async with client(port, rcvbuf=16384) as (reader, writer):
                writer.write_eof()
                await until(lambda: protocols and protocols[0].eof_with_queue is not None)
                assert protocols[0].eof_with_queue
                data = await reader.read()
                assert data == b"hello " + PAYLOAD[:2_000_000]

    run(loop_factory, main())


# -- flow control --------------------------------------------------------------------------------

FLOOD_CHUNK = 16384
FLOOD_TOTAL = 4 << 20
HIGH_WATER = 65536


class FloodProducer:
    def __init__(self, proto):
        self.proto = proto
        self.sent = 0
        self.pulls = 0

    def more(self):
        proto = self.proto
        if proto._writing_paused:
            proto.violations.append(("pulled while paused", self.pulls))
        size = proto.transport.get_write_buffer_size()
        proto.max_buffered = max(proto.max_buffered, size)
        if self.sent >= FLOOD_TOTAL:
            return b""
        self.pulls += 1
        start = self.sent
        self.sent += FLOOD_CHUNK
        return PAYLOAD[start : start + FLOOD_CHUNK]


class Flood(Recording):
    def connection_made(self, transport):
        super().connection_made(transport)
        # small kernel buffers: the transport's own buffer fills soon
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        transport.set_write_buffer_limits(high=HIGH_WATER)
        self.set_terminator(b"\r\n")
        self.pauses = []
        self.resumes = 0
        self.violations = []
        self.max_buffered = 0
        self.producer = None

    def pause_writing(self):
        self.pauses.append(self.transport.get_write_buffer_size())
        super().pause_writing()

    def resume_writing(self):
        self.resumes += 1
        super().resume_writing()

    def on_frame(self, frame):
        if frame == b"FLOOD":
            self.producer = FloodProducer(self)
            self.push_with_producer(self.producer)
        elif frame == b"BYE":
            self.close_when_done()
        else:
            # read once the flood is over: the answer queues behind it
            self.push(b"late " + frame + b"\r\n")


def test_flow_control_bounds_memory(loop_factory):
    async def main():
        async with serving(styled(Flood, "frames")) as (port, protocols):
            async with client(port, rcvbuf=16384) as (reader, writer):
                writer.write(b"FLOOD\r\n")
                await until(lambda: protocols and protocols[0].pauses)
                proto = protocols[0]
                # the client's transport still reads into its StreamReader for
                # a while; wait for the stall: paused, and no pull for 0.1 s
                while True:
                    pulls = proto.producer.pulls
                    await asyncio.sleep(0.1)
                    if proto._writing_paused and proto.producer.pulls == pulls:
                        break
                # stalled: the producer is not pulled, nothing is read, and the
                # transport holds about the high-water mark, not the 4 MiB
                reads = proto.reads
                writer.write(b"PING\r\n")
                await asyncio.sleep(0.2)
                assert proto._writing_paused
                assert proto.producer.pulls == pulls
                assert proto.reads == reads
                assert not proto.transport.is_reading()
                assert proto.transport.get_write_buffer_size() <= HIGH_WATER + FLOOD_CHUNK
                assert pulls * FLOOD_CHUNK < FLOOD_TOTAL // 2
                # now read: everything arrives, and the request sent meanwhile
                # is answered after it
                data = await reader.readexactly(FLOOD_TOTAL + 11)
                assert data == PAYLOAD[:FLOOD_TOTAL] + b"late PING\r\n"
                # (close_when_done with unread input would reset the connection)
                writer.write(b"BYE\r\n")
                assert await reader.read() == b""
                assert proto.violations == []
                assert proto.max_buffered <= HIGH_WATER + FLOOD_CHUNK
                assert max(proto.pauses) <= HIGH_WATER + FLOOD_CHUNK
                assert len(proto.pauses) >= 1 and proto.resumes >= 1

    run(loop_factory, main(), timeout=20)


# -- TLS ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """(server context, client context) for a self-signed cert made now."""
    server_ctx, client_ctx, _, _ = _certs.contexts(tmp_path_factory.mktemp("tls"))
    return server_ctx, client_ctx


@pytest.mark.parametrize("style", STYLES)
def test_tls_line_echo(loop_factory, tls, style):
    server_ctx, client_ctx = tls

    async def main():
        async with serving(styled(LineEcho, style), server_ctx) as (port, protocols):
            await echo_exchange(port, protocols, client_ctx)
            assert protocols[0].transport.get_extra_info("ssl_object") is not None

    run(loop_factory, main())


def test_tls_producer_then_close_when_done(loop_factory, tls):
    server_ctx, client_ctx = tls

    async def main():
        async with serving(styled(Download, "collect"), server_ctx) as (port, protocols):
            async with client(port, client_ctx) as (reader, writer):
                writer.write(b"GET\r\n")
                data = b""
                # read to EOF; some TLS stacks end with a bare TCP close
                with contextlib.suppress(ssl.SSLError, ConnectionResetError):
                    while True:
                        got = await reader.read(1 << 20)
                        if not got:
                            break
                        data += got
                assert data == b"BEGIN\r\n" + PAYLOAD + b"END\r\n"

    run(loop_factory, main(), timeout=20)


class LineClient(ChatProtocol):
    """A client-side ChatProtocol (loop.create_connection): collects answer lines."""

    def __init__(self, answers):
        super().__init__()
        self.answers = answers
        self.set_terminator(b"\n")

    def frame_received(self, line):
        self.answers.put_nowait(line)


@pytest.mark.parametrize("use_tls", [False, True], ids=["plain", "tls"])
def test_chat_client_against_stream_server(loop_factory, tls, use_tls):
    """create_connection with a ChatProtocol, against start_server + framed_reader."""
    server_ctx, client_ctx = tls if use_tls else (None, None)

    async def handler(reader, writer):
        async for line in framed_reader(reader, b"\n"):
            writer.write(line.upper() + b"\n")
            await writer.drain()

    async def main():
        loop = asyncio.get_running_loop()
        answers = asyncio.Queue()
        async with stream_server(handler, server_ctx) as port:
            transport, proto = await loop.create_connection(
                lambda: LineClient(answers),
                "127.0.0.1",
                port,
                ssl=client_ctx,
                server_hostname="localhost" if use_tls else None,
            )
            try:
                for word in (b"alpha", b"beta", b"gamma"):
                    proto.push(word + b"\n")
                    assert await answers.get() == word.upper()
                proto.push(b"one\ntwo\nthr")
                proto.push(b"ee\n")
                assert [await answers.get() for _ in range(3)] == [b"ONE", b"TWO", b"THREE"]
            finally:
                transport.abort()

    run(loop_factory, main())


# -- framed_reader --------------------------------------------------------------------------------


def serve_bytes(chunks, close=True):
    """A start_server handler writing *chunks* (draining after each), then EOF."""

    async def handler(reader, writer):
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0)
        if close:
            writer.write_eof()
            await reader.read()

    return handler


def cut(data, how, rng):
    if how == "whole":
        return [data]
    if how == "bytewise":
        return [data[i : i + 1] for i in range(len(data))]
    bounds = sorted({0, len(data), *(rng.randrange(len(data)) for _ in range(20))})
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


@pytest.mark.parametrize("how", ["whole", "bytewise", "random"])
def test_framed_reader_terminator_changes(loop_factory, how):
    body = b"\r\n\n|xyz"
    stream = b"3\nabcHELLO\r\n%d\n%sEND|" % (len(body), body) + b"5\nhello2\n\n\n" + b"tail bytes"
    chunks = cut(stream, how, random.Random(5))

    async def main():
        async with stream_server(serve_bytes(chunks)) as port, client(port) as (reader, writer):
            frames = framed_reader(reader, b"\n")
            # the new terminator applies to the byte right after the frame,
            # even when the whole stream came in one read
            assert await frames.read_frame() == b"3"
            frames.set_terminator(3)
            assert await frames.read_frame() == b"abc"
            assert frames.terminator == 0
            frames.set_terminator(b"\r\n")
            assert await frames.read_frame() == b"HELLO"
            frames.set_terminator(b"\n")
            n = int(await frames.read_frame())
            frames.set_terminator(n)
            assert await frames.read_frame() == body
            frames.set_terminator(b"|")
            assert await frames.read_frame() == b"END"
            # length-prefixed records with async for
            frames.set_terminator(b"\n")
            records = []
            async for frame in frames:
                if frames.get_terminator() == 0:  # an int frame just ended
                    records.append(frame)
                    frames.set_terminator(b"\n")
                    if len(records) == 2:
                        break
                else:
                    frames.set_terminator(int(frame))
            assert records == [b"hello", b"\n\n"]
            # no terminator: the rest as it comes, then a clean EOF ends the loop
            frames.set_terminator(None)
            rest = [frame async for frame in frames]
            assert b"".join(rest) == b"tail bytes"

    run(loop_factory, main())


def test_framed_reader_max_frame(loop_factory):
    chunks = [b"ok\n", b"x" * 700, b"x" * 700, b"\nnever\n"]

    async def main():
        async with stream_server(serve_bytes(chunks)) as port, client(port) as (reader, writer):
            frames = framed_reader(reader, b"\n", max_frame=1000)
            assert frames.max_frame == 1000
            assert await frames.read_frame() == b"ok"
            with pytest.raises(FrameTooLarge):
                await frames.read_frame()
            with pytest.raises(FrameTooLarge):  # final: the data is gone
                await frames.read_frame()

        # an int terminator past the limit, in one read
        async with stream_server(serve_bytes([b"5000\n" + b"y" * 5000])) as port, client(port) as (reader, writer):
            frames = framed_reader(reader, b"\n", max_frame=1000)
            frames.set_terminator(int(await frames.read_frame()))
            with pytest.raises(FrameTooLarge):
                await frames.read_frame()

    run(loop_factory, main())


@pytest.mark.parametrize("tail, partial", [(b"two", b"two"), (b"tw\r", b"tw\r"), (b"\r", b"\r")])
def test_framed_reader_eof_inside_frame(loop_factory, tail, partial):
    async def main():
        async with stream_server(serve_bytes([b"one\r\n", tail])) as port, client(port) as (reader, writer):
            frames = framed_reader(reader)
            got = []
            with pytest.raises(asyncio.IncompleteReadError) as info:
                async for frame in frames:
                    got.append(frame)
            assert got == [b"one"]
            assert info.value.partial == partial

    run(loop_factory, main())


def test_framed_reader_clean_eof(loop_factory):
    async def main():
        async with (
            stream_server(serve_bytes([b"a\r\nb\r", b"\n", b"", b"c\r\n"])) as port,
            client(port) as (reader, writer),
        ):
            frames = framed_reader(reader, read_size=2)
            assert [frame async for frame in frames] == [b"a", b"b", b"c"]
            with pytest.raises(asyncio.IncompleteReadError) as info:
                await frames.read_frame()
            assert info.value.partial == b""

    run(loop_factory, main())


def test_framed_reader_arguments():
    reader = object()  # checked before use
    with pytest.raises(ValueError):
        framed_reader(reader, max_frame=-1)
    with pytest.raises(ValueError):
        framed_reader(reader, read_size=0)


# -- differential: the real transport against the scanner fed directly ---------------------------


class Differential(Recording):
    """Records frames; each terminated frame runs the next scripted terminator change."""

    def __init__(self, term, script):
        super().__init__()
        self.set_terminator(term)
        self.script = list(script)
        self.frames = []
        self.stream_chunks = []  # frames style: chunks delivered without a terminator
        self.framed = bool(self.get_terminator())

    def act(self):
        if self.script:
            term = self.script.pop(0)
            if term is not KEEP:
                self.set_terminator(term)

    def on_frame(self, frame):
        if isinstance(self, FrameStyle) and not self.framed:
            self.stream_chunks.append(frame)
            return
        self.frames.append(frame)
        self.act()
        self.framed = bool(self.get_terminator())

    def outcome(self):
        """Frames, then every byte delivered or held and not part of a frame."""
        rest = b"".join(self.stream_chunks) + b"".join(self.chunks) + b"".join(self.incoming) + self.ac_in_buffer
        return self.frames, rest, self.get_terminator()


DIFF_SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@st.composite
def transport_scenarios(draw):
    data = draw(streams)
    return {
        "term": draw(terminators),
        "stream": data,
        # a transport has no empty reads (EOF is eof_received)
        "chunks": [chunk for chunk in draw(chunkings(data)) if chunk],
        "script": draw(st.lists(st.one_of(st.just(KEEP), terminators), max_size=40)),
    }


async def through_transport(cls, sc):
    loop = asyncio.get_running_loop()
    async with serving(lambda: cls(sc["term"], sc["script"])) as (port, protocols):
        transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        try:
            await until(lambda: protocols)
            sent = 0
            for chunk in sc["chunks"]:
                # one read per chunk: the next is written once this one is in
                transport.write(chunk)
                sent += len(chunk)
                await until(lambda: protocols[0].received >= sent)
            return protocols[0].outcome()
        finally:
            transport.abort()


@DIFF_SETTINGS
@given(sc=transport_scenarios())
def test_transport_frames_match_direct_scanner(loop_factory, sc):
    async def main():
        for style in STYLES:
            cls = styled(Differential, style)
            direct = cls(sc["term"], sc["script"])
            if sc["stream"]:
                direct._scanner.feed(direct, sc["stream"])
            assert await through_transport(cls, sc) == direct.outcome(), style

    run(loop_factory, main())


# -- differential: the real transport against the reference asynchat ----------------------------


class Mirror(ChatProtocol):
    """Records what test_differential records of asynchat, and each read as it came.

    The reference is then fed exactly the reads this connection had, so the
    comparison holds whatever the transport made of the client's writes.
    """

    def __init__(self, term, script):
        super().__init__()
        self.set_terminator(term)
        self.script = list(script)
        self.events = []
        self.reads = []
        self.received = 0
        self._area = None
        self.framed = bool(self.get_terminator())

    def get_buffer(self, sizehint):
        self._area = super().get_buffer(sizehint)
        return self._area

    def buffer_updated(self, nbytes):
        area, self._area = self._area, None
        with memoryview(area) as view:
            self.reads.append(bytes(view[:nbytes]))
        del area
        self.received += nbytes
        super().buffer_updated(nbytes)

    def act(self):
        if self.script:
            term = self.script.pop(0)
            if term is not KEEP:
                self.set_terminator(term)


class MirrorCallbacks(Mirror):
    def collect_incoming_data(self, data):
        self.events.append(("data", data, self.get_terminator()))

    def found_terminator(self):
        self.events.append(("found", self.get_terminator()))
        self.act()


class MirrorCollect(Mirror):
    collect_incoming_data = ChatProtocol._collect_incoming_data

    def found_terminator(self):
        self.events.append(("frame", self._get_data()))
        self.act()


class MirrorFrames(Mirror):
    def frame_received(self, frame):
        if self.framed:
            self.events.append(("frame", frame))
            self.act()
            self.framed = bool(self.get_terminator())
        else:
            self.events.append(("chunk", frame))


async def mirrored(cls, sc):
    """The protocol *cls* after the scenario's chunks went through a real connection."""
    loop = asyncio.get_running_loop()
    async with serving(lambda: cls(sc["term"], sc["script"])) as (port, protocols):
        transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        try:
            await until(lambda: protocols)
            sent = 0
            for chunk in sc["chunks"]:
                transport.write(chunk)
                sent += len(chunk)
                await until(lambda: protocols[0].received >= sent)
            return protocols[0]
        finally:
            transport.abort()


@DIFF_SETTINGS
@given(sc=transport_scenarios())
def test_transport_matches_reference_asynchat(loop_factory, ref_asynchat, sc):
    def reference(reads):
        return run_reference(
            ref_asynchat,
            {
                "term": sc["term"],
                "chunks": reads,
                "external": [KEEP] * len(reads),
                "script": [(term, None) for term in sc["script"]],
                "collect_raises": set(),
            },
        )

    async def main():
        # asynchat's two callbacks: the very same calls, with the same data
        proto = await mirrored(MirrorCallbacks, sc)
        ref_events, ref_buffer, ref_term = reference(proto.reads)
        assert b"".join(proto.reads) == sc["stream"]
        assert proto.events == ref_events
        assert proto.ac_in_buffer == ref_buffer
        assert proto.get_terminator() == ref_term
        assert type(proto.get_terminator()) is type(ref_term)

        # the stock collector and frame_received: the same frames
        for cls, frames_mode in ((MirrorCollect, False), (MirrorFrames, True)):
            proto = await mirrored(cls, sc)
            ref_events, ref_buffer, ref_term = reference(proto.reads)
            expected, rest = reference_frames(ref_events, frames_mode)
            assert proto.events == expected, cls.__name__
            assert b"".join(proto.incoming) == rest, cls.__name__
            assert proto.ac_in_buffer == ref_buffer, cls.__name__
            assert proto.get_terminator() == ref_term, cls.__name__

    run(loop_factory, main())


# -- the output queue, against a fake transport ------------------------------------------------------


class FakeTransport:
    """Records what the protocol hands over: bytes per write, "closed"."""

    def __init__(self, half_close=True):
        self.written = []
        self.calls = 0
        self.half_close = half_close

    def write(self, data):
        self.calls += 1
        self.written.append(bytes(data))

    def writelines(self, chunks):
        # asyncio's selector transport (3.12+) keeps the objects themselves
        self.calls += 1
        self.written.append(list(chunks))

    def flat(self):
        out = []
        for item in self.written:
            out.extend(item if isinstance(item, list) else [item])
        return [bytes(x) if not isinstance(x, str) else x for x in out]

    def can_write_eof(self):
        return self.half_close

    def is_reading(self):
        return True

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def close(self):
        self.written.append("closed")


class Plain(FrameStyle):
    def frame_received(self, frame):
        pass


class Scripted(FrameStyle):
    """frame_received runs the function the test gives."""

    terminator = b"\n"

    def frame_received(self, frame):
        self.on_line(self, frame)


def feed(proto, data):
    """What a transport does on a read: receive into get_buffer(), report the count."""
    buf = proto.get_buffer(-1)
    buf[: len(data)] = data
    del buf
    proto.buffer_updated(len(data))


def test_push_checks_and_queues_before_connection():
    proto = Plain()
    with pytest.raises(TypeError):
        proto.push("text")
    with pytest.raises(TypeError):
        proto.push_with_producer(42)
    with pytest.raises(TypeError):
        proto.set_terminator("\n")  # str needs use_encoding, as asynchat
    proto.push(b"early")
    proto.push_with_producer(SliceProducer(b"abc", 1))
    proto.close_when_done()
    transport = FakeTransport()
    proto.connection_made(transport)
    assert transport.flat() == [b"early", b"a", b"b", b"c", "closed"]
    proto.push(b"after close")
    assert transport.flat()[-1] == "closed"


def test_subclass_init_without_super_is_caught_up():
    class NoSuper(Scripted):
        def __init__(self, name):
            self.name = name  # no super().__init__()

    proto = NoSuper("x")
    proto.on_line = lambda p, line: p.push(p.name.encode() + line)
    transport = FakeTransport()
    proto.connection_made(transport)
    assert proto.get_terminator() == b"\n"
    feed(proto, b"1\n2\n")
    assert b"".join(transport.flat()) == b"x1x2"


def test_queue_without_push_in_callback_is_pumped():
    # a callback that only queues a producer or close_when_done(): the pump
    # after the read must run although nothing was coalesced
    def on_line(proto, line):
        if line == b"get":
            proto.push_with_producer(SliceProducer(b"xyz", 2))
        else:
            proto.close_when_done()

    proto = Scripted()
    proto.on_line = on_line
    transport = FakeTransport()
    proto.connection_made(transport)
    feed(proto, b"get\n")
    assert transport.flat() == [b"xy", b"z"]
    feed(proto, b"quit\n")
    assert transport.flat()[-1] == "closed"


def test_pushes_in_one_read_are_one_write_of_copies():
    def on_line(proto, line):
        buf = bytearray(b"<" + line)
        proto.push(buf)
        buf[:] = b"reused"  # the caller's buffer is its own again
        proto.push(memoryview(b">\n"))

    proto = Scripted()
    proto.on_line = on_line
    transport = FakeTransport()
    proto.connection_made(transport)
    feed(proto, b"a\nbb\nccc\n")
    assert transport.calls == 1
    assert b"".join(transport.flat()) == b"<a>\n<bb>\n<ccc>\n"


class Reentrant:
    """A producer whose more() queues more output and may close the connection."""

    def __init__(self, proto, pieces, on_first=None):
        self.proto = proto
        self.pieces = list(pieces)
        self.on_first = on_first

    def more(self):
        if self.on_first is not None:
            action, self.on_first = self.on_first, None
            action(self.proto)
        return self.pieces.pop(0) if self.pieces else b""


def test_producer_more_may_queue_and_close():
    proto = Plain()
    transport = FakeTransport()
    proto.connection_made(transport)

    def queue_more(p):
        # pushes and producers queued from more() wait behind it; no
        # second pump may pull this producer again meanwhile
        p.push_with_producer(Reentrant(p, [b"b1", b"b2"]))
        p.push(b"x")
        p.close_when_done()

    proto.push_with_producer(Reentrant(proto, [b"a1", b"a2"], queue_more))
    assert transport.flat() == [b"a1", b"a2", b"b1", b"b2", b"x", "closed"]

    proto = Plain()
    transport = FakeTransport()
    proto.connection_made(transport)
    proto.push_with_producer(Reentrant(proto, [b"dropped", b"never"], lambda p: p.close()))
    proto.push(b"queued behind")
    assert transport.flat() == ["closed"]


def test_eof_with_output_queued():
    # half-closable transport: finish the queue, then close
    proto = Plain()
    transport = FakeTransport(half_close=True)
    proto.connection_made(transport)
    proto.pause_writing()
    proto.push_with_producer(SliceProducer(b"abcd", 2))
    assert transport.flat() == []
    assert proto.eof_received() is True
    proto.resume_writing()
    assert transport.flat() == [b"ab", b"cd", "closed"]

    # TLS (no half-close): returning True would only log a warning
    proto = Plain()
    transport = FakeTransport(half_close=False)
    proto.connection_made(transport)
    proto.pause_writing()
    proto.push_with_producer(SliceProducer(b"abcd", 2))
    assert proto.eof_received() is None
    proto.resume_writing()
    assert transport.flat() == []

    # nothing queued: the transport closes itself once flushed
    proto = Plain()
    proto.connection_made(FakeTransport())
    assert proto.eof_received() is None


def test_close_sends_what_was_pushed_and_drops_producers():
    seen = []

    def on_line(proto, line):
        seen.append(line)
        proto.push(line + b"!")
        if line == b"bye":
            proto.push_with_producer(SliceProducer(b"never sent"))
            proto.close()

    proto = Scripted()
    proto.on_line = on_line
    transport = FakeTransport()
    proto.connection_made(transport)
    feed(proto, b"hi\nbye\nignored\n")
    assert transport.flat() == [b"hi!", b"bye!", "closed"]
    assert seen == [b"hi", b"bye"]  # no callback after close()


def test_producer_str_needs_use_encoding():
    class Text:
        def __init__(self):
            self.items = ["é", ""]

        def more(self):
            return self.items.pop(0)

    proto = Plain()
    proto.connection_made(FakeTransport())
    with pytest.raises(TypeError):
        proto.push_with_producer(Text())

    class Encoded(Plain):
        use_encoding = 1

    proto = Encoded()
    transport = FakeTransport()
    proto.connection_made(transport)
    proto.push_with_producer(Text())
    assert transport.flat() == ["é".encode("latin-1")]


# -- both cores ------------------------------------------------------------------------------------


def test_core_matches_environment():
    if NO_EXTENSIONS:
        assert not asynframe.USING_C_CORE
    assert type(Plain()._scanner).__module__.endswith(
        "._core_c" if asynframe.USING_C_CORE else "._scanner_py"  # the pure scanner's own module
    )


class KeepingTransport(FakeTransport):
    """Keeps the objects handed to write(), to tell a view from a copy."""

    def write(self, data):
        self.calls += 1
        self.written.append(data)


def test_push_memoryview_over_bytes_is_not_copied_and_mutable_buffers_are():
    payload = bytes(range(256)) * 64
    mutable = bytearray(b"mutable")
    proto = Plain()
    transport = KeepingTransport()
    proto.connection_made(transport)
    proto.push(memoryview(payload)[16:])
    proto.push(mutable)
    proto.push(memoryview(mutable))
    mutable[:] = b"changed"
    view, copy, view_copy = transport.written
    # the same memory as the caller's bytes: no copy
    assert isinstance(view, memoryview) and view.obj is payload and bytes(view) == payload[16:]
    # a mutable buffer is copied at the push: the later change is not sent
    assert copy == b"mutable" and view_copy == b"mutable"


def test_push_memoryview_waits_behind_a_producer_without_a_copy():
    payload = b"0123456789" * 1000
    proto = Plain()
    proto.push_with_producer(SliceProducer(b"ab", 1))
    proto.push(memoryview(payload).cast("B", (100, 100)))  # 2-D, C-contiguous
    proto.close_when_done()
    transport = KeepingTransport()
    proto.connection_made(transport)
    assert [bytes(x) if not isinstance(x, str) else x for x in transport.written] == [
        b"a",
        b"b",
        payload,
        "closed",
    ]
    queued = transport.written[2]
    assert isinstance(queued, memoryview) and queued.obj is payload and queued.ndim == 1
