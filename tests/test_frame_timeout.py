"""``set_frame_timeout``: a frame must arrive whole within a bound from its first byte.

A peer that trickles a frame one byte at a time is closed when the frame's
first byte is older than the timeout, however often bytes arrive (an idle
timeout would be re-armed by each).  Peers whose frames arrive whole, even
slowly and with pauses between frames, are never closed; a frame completed
in pieces re-times the next one from its own first byte.  On async_chat
(both loop paths; both cores, as an ``api_layer`` file) and on
``aio.ChatProtocol`` (asyncio and uvloop).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time

import pytest

from asynframe import aio, asynchat, asyncore

from support import both_poll_modes, run_until

try:
    import uvloop
except ImportError:  # optional: the uvloop case is skipped
    uvloop = None

HERE = os.path.abspath(__file__)

pytestmark = [pytest.mark.api_layer, pytest.mark.timeout(60)]


class Lines(asynchat.async_chat):
    def __init__(self, sock, m, timeout):
        asynchat.async_chat.__init__(self, sock, m)
        self.set_terminator(b"\n")
        self.set_frame_timeout(timeout)
        self.frames = []
        self.timeouts = 0
        self.closed = False

    collect_incoming_data = asynchat.async_chat._collect_incoming_data

    def found_terminator(self):
        self.frames.append(self._get_data())

    def handle_frame_timeout(self):
        self.timeouts += 1
        asynchat.async_chat.handle_frame_timeout(self)

    def handle_close(self):
        self.closed = True
        self.close()

    def log_info(self, message, type="info"):
        self.logged = (type, message)


def feed(m, peer, pieces, use_poll):
    """Send *pieces* as (delay, bytes), running the loop in between."""
    for delay, data in pieces:
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline:
            asyncore.loop(0.02, use_poll, map=m, count=1)
        if data:
            try:
                peer.send(data)
            except OSError:
                return


@both_poll_modes
def test_trickled_frame_is_cut_although_bytes_keep_coming(use_poll):
    m = {}
    a, peer = socket.socketpair()
    with peer:
        chan = Lines(a, m, 0.5)
        start = time.monotonic()
        # one byte every 0.1 s, never a terminator: idle timeouts never fire
        feed(m, peer, [(0.1, b"x")] * 8, use_poll)
        run_until(lambda: chan.closed, m, timeout=5, use_poll=use_poll)
        elapsed = time.monotonic() - start
        assert chan.timeouts == 1 and chan.frames == []
        assert 0.5 <= elapsed < 2.0, elapsed
        assert chan.logged[0] == "error" and "incomplete for more than 0.5 s" in chan.logged[1]
        assert not m


@both_poll_modes
def test_whole_frames_are_never_cut_however_slow(use_poll):
    m = {}
    a, peer = socket.socketpair()
    with peer:
        chan = Lines(a, m, 0.5)
        # whole lines with 0.3 s pauses, then a frame in three pieces taking
        # 0.4 s whose last piece starts the next frame, which completes 0.4 s
        # after its own first byte: each frame is within 0.5 s of its start
        pieces = [(0.3, b"one\n")] * 4 + [
            (0.0, b"ab"),
            (0.2, b"c"),
            (0.2, b"\nde"),
            (0.2, b"f"),
            (0.2, b"\n"),
            (0.7, b""),
        ]
        feed(m, peer, pieces, use_poll)
        assert chan.frames == [b"one"] * 4 + [b"abc", b"def"]
        assert chan.timeouts == 0 and not chan.closed
        assert chan._af_frame_timer is None  # nothing in progress: no timer
        chan.close()


def test_frame_timeout_arguments():
    m = {}
    a, peer = socket.socketpair()
    with peer:
        chan = Lines(a, m, None)
        assert chan.get_frame_timeout() is None
        chan.set_frame_timeout(2)
        for bad, error in (
            ("1", TypeError),
            (None.__class__, TypeError),
            (0, ValueError),
            (-1.0, ValueError),
            (float("inf"), ValueError),
            (float("nan"), ValueError),
        ):
            with pytest.raises(error):
                chan.set_frame_timeout(bad)
            assert chan.get_frame_timeout() == 2.0  # refused: unchanged
        chan.set_frame_timeout(None)
        assert chan.get_frame_timeout() is None
        chan.close()


def test_frame_timeout_keeps_the_channel_off_the_compiled_path():
    m = {}
    a, peer = socket.socketpair()
    with peer:
        chan = Lines(a, m, None)
        assert not chan._af_generic_path
        chan.set_frame_timeout(1.0)
        assert chan._af_generic_path
        chan.set_frame_timeout(None)
        assert not chan._af_generic_path
        chan.close()


class ProtoLines(aio.ChatProtocol):
    terminator = b"\n"

    def __init__(self, done):
        super().__init__()
        self.set_frame_timeout(0.5)
        self.done = done
        self.timeouts = 0

    def frame_received(self, frame):
        pass

    def handle_frame_timeout(self):
        self.timeouts += 1
        aio.ChatProtocol.handle_frame_timeout(self)

    def connection_lost(self, exc):
        aio.ChatProtocol.connection_lost(self, exc)
        self.done.set_result(self.timeouts)


@pytest.mark.parametrize(
    "loop_name", ["asyncio", pytest.param("uvloop", marks=pytest.mark.skipif(uvloop is None, reason="no uvloop"))]
)
def test_chat_protocol_cuts_a_trickled_frame(loop_name):
    loop = uvloop.new_event_loop() if loop_name == "uvloop" else asyncio.SelectorEventLoop()

    async def main():
        done = loop.create_future()
        server = await loop.create_server(lambda: ProtoLines(done), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        start = time.monotonic()
        for _ in range(20):
            if done.done():
                break
            writer.write(b"x")
            await asyncio.sleep(0.1)
        timeouts = await asyncio.wait_for(done, 5)
        elapsed = time.monotonic() - start
        assert await reader.read() == b""  # closed by the server
        writer.close()
        server.close()
        await server.wait_closed()
        return timeouts, elapsed

    try:
        timeouts, elapsed = loop.run_until_complete(main())
    finally:
        loop.close()
    assert timeouts == 1
    assert 0.5 <= elapsed < 2.0, elapsed
