"""Half-close, resets and ``handle_close`` counting on asynframe's loop.

* A peer sends a request and shuts down its sending side; the server
  replies with more than the socket buffers hold.  With
  ``async_chat.drain_on_eof`` the whole reply arrives (SHA-256 compared)
  and then the end of file; without it, asynchat's behaviour (close at the
  end of file, dropping the rest) is kept.  On the poll path the client sees
  the server's FIN as POLLIN|POLLHUP on its half-shut socket: it must still
  read every byte before closing (stock asyncore.poll2 closed at once).
* ``handle_close`` is called exactly once per channel, on both loop paths
  (``use_poll`` False/True), for an orderly close, a reset while idle, a
  reset in the middle of a large send and ``close_when_done``.
* A reset in the middle of a send closes that channel only.

Loopback TCP only, every map emptied at the end.  Both cores: the last test
runs the file again with ``ASYNFRAME_NO_EXTENSIONS=1``.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct

import pytest

from asynframe import asynchat, asyncore

from support import both_poll_modes, run_until

pytestmark = pytest.mark.api_layer

HERE = os.path.abspath(__file__)
# Far more than loopback socket buffers hold (a few MB at most).
BIG = os.urandom(16 * 1024 * 1024)
BIG_SHA = hashlib.sha256(BIG).hexdigest()


def reset(sock):
    """Close *sock* with an RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class Server(asyncore.dispatcher):
    def __init__(self, m, factory):
        asyncore.dispatcher.__init__(self, map=m)
        self.factory = factory
        self.channels = []
        self.create_socket()
        self.set_reuse_addr()
        self.bind(("127.0.0.1", 0))
        self.listen(16)
        self.address = self.socket.getsockname()

    def handle_accepted(self, sock, addr):
        self.channels.append(self.factory(sock, self._map))


class Chat(asynchat.async_chat):
    """Server side: counts handle_close; replies to a line as told."""

    reply = None  # None, "push" or "producer"
    then_close = True

    def __init__(self, sock, m):
        asynchat.async_chat.__init__(self, sock, map=m)
        self.set_terminator(b"\n")
        self.closes = 0
        self.requests = []

    def collect_incoming_data(self, data):
        self.requests.append(data)

    def found_terminator(self):
        if self.reply == "push":
            self.push(BIG)
        elif self.reply == "producer":
            self.push_with_producer(asynchat.simple_producer(BIG, 1 << 20))
        if self.then_close:
            self.close_when_done()

    def handle_close(self):
        self.closes += 1
        self.close()


class Reader(asyncore.dispatcher):
    """Client side: sends *request*, maybe shuts down, hashes what comes."""

    def __init__(self, m, addr, request=b"", shut=False, reset_after=None):
        asyncore.dispatcher.__init__(self, map=m)
        self.request, self.shut, self.reset_after = request, shut, reset_after
        self.sha = hashlib.sha256()
        self.received = 0
        self.closes = 0
        self.was_reset = False
        self.create_socket()
        self.connect(addr)

    def handle_connect(self):
        if self.request:
            self.socket.sendall(self.request)
        if self.shut:
            self.socket.shutdown(socket.SHUT_WR)

    def writable(self):
        return not self.connected

    def handle_write(self):
        pass

    def handle_read(self):
        data = self.recv(1 << 18)
        if data:
            self.sha.update(data)
            self.received += len(data)
            if self.reset_after is not None and self.received >= self.reset_after:
                self.was_reset = True
                self.del_channel()
                reset(self.socket)

    def handle_close(self):
        self.closes += 1
        self.close()


# -- half-close ---------------------------------------------------------------------
@pytest.mark.timeout(60)
@both_poll_modes
@pytest.mark.parametrize("reply", ["push", "producer"])
@pytest.mark.parametrize("then_close", [True, False], ids=["close_when_done", "drain-only"])
def test_reply_to_a_half_closed_peer_arrives_whole(smap, use_poll, reply, then_close):
    class Replier(Chat):
        drain_on_eof = True

    Replier.reply, Replier.then_close = reply, then_close
    server = Server(smap, Replier)
    client = Reader(smap, server.address, b"GET everything\n", shut=True)
    run_until(
        lambda: client.closes and server.channels and not server.channels[0].connected,
        smap,
        timeout=40,
        use_poll=use_poll,
    )
    chan = server.channels[0]
    assert chan.drain_on_eof and chan._af_generic_path
    assert chan.requests == [b"GET everything"]
    assert client.received == len(BIG) and client.sha.hexdigest() == BIG_SHA
    asyncore.loop(0.05, use_poll, map=smap, count=3)
    assert client.closes == 1 and chan.closes == 1
    assert list(smap.values()) == [server]


@pytest.mark.timeout(60)
@both_poll_modes
def test_push_after_the_end_of_file_is_still_sent(smap, use_poll):
    """drain_on_eof: pushes made while the queue drains go out too."""

    class Late(Chat):
        drain_on_eof = True
        reply = "push"
        then_close = False

        def initiate_send(self):
            asynchat.async_chat.initiate_send(self)
            if self._af_eof and not getattr(self, "added", False):
                self.added = True
                self.push(b"-trailer")

    server = Server(smap, Late)
    client = Reader(smap, server.address, b"x\n", shut=True)
    run_until(lambda: client.closes, smap, timeout=40, use_poll=use_poll)
    assert client.received == len(BIG) + len(b"-trailer")
    assert client.sha.hexdigest() == hashlib.sha256(BIG + b"-trailer").hexdigest()
    assert server.channels[0].closes == 1


@pytest.mark.timeout(60)
@both_poll_modes
def test_drain_on_eof_switched_off_mid_drain_still_drains_and_closes(smap, use_poll):
    """The end of file already read keeps its rules: the reply goes out whole,
    then the channel closes (the compiled loop path used to take the channel
    back, never close it and spin on its write events)."""

    class Replier(Chat):
        drain_on_eof = True
        reply = "push"
        then_close = False

    server = Server(smap, Replier)
    client = Reader(smap, server.address, b"GET everything\n", shut=True)
    run_until(lambda: server.channels and server.channels[0]._af_eof, smap, use_poll=use_poll)
    chan = server.channels[0]
    chan.drain_on_eof = False
    assert chan._af_generic_path
    run_until(lambda: client.closes and chan.closes, smap, timeout=40, use_poll=use_poll)
    assert client.received == len(BIG) and client.sha.hexdigest() == BIG_SHA
    assert client.closes == 1 and chan.closes == 1


@pytest.mark.timeout(60)
@both_poll_modes
def test_default_closes_at_the_end_of_file_as_asynchat(smap, use_poll):
    """Without drain_on_eof, asynchat's behaviour: the reply is cut."""

    class Replier(Chat):
        reply = "push"

    server = Server(smap, Replier)
    client = Reader(smap, server.address, b"GET\n", shut=True)
    run_until(lambda: client.closes, smap, timeout=40, use_poll=use_poll)
    chan = server.channels[0]
    assert not chan.drain_on_eof and chan._af_generic_path is False
    assert chan.closes == 1 and client.received < len(BIG)


@pytest.mark.timeout(30)
@both_poll_modes
def test_end_of_file_with_nothing_queued_closes_at_once(smap, use_poll):
    class Quiet(Chat):
        drain_on_eof = True
        then_close = False

    server = Server(smap, Quiet)
    client = Reader(smap, server.address, b"nothing to say\n", shut=True)
    run_until(lambda: server.channels and server.channels[0].closes, smap, use_poll=use_poll)
    run_until(lambda: client.closes, smap, use_poll=use_poll)
    assert server.channels[0].closes == 1 and client.received == 0


@pytest.mark.timeout(30)
def test_drain_on_eof_per_instance_and_class(smap):
    a, b = socket.socketpair()
    with b:
        chan = Chat(a, smap)
        assert chan.drain_on_eof is False and chan._af_generic_path is False
        chan.drain_on_eof = True
        assert chan._af_generic_path is True
        chan.set_idle_timeout(5)
        chan.drain_on_eof = False
        assert chan._af_generic_path is True  # still needed by the idle timeout
        chan.set_idle_timeout(None)
        assert chan._af_generic_path is False
        chan._af_eof = True  # as after a drained end of file
        chan.close()
        assert chan._af_eof is False  # a reused (reconnecting) channel reads again


# -- handle_close exactly once -----------------------------------------------------------
@pytest.mark.timeout(60)
@both_poll_modes
@pytest.mark.parametrize("ending", ["fin", "rst-idle", "rst-mid-send", "close_when_done"])
def test_handle_close_exactly_once(smap, use_poll, ending):
    class Handler(Chat):
        reply = "push" if ending in ("rst-mid-send", "close_when_done") else None
        then_close = ending == "close_when_done"

    server = Server(smap, Handler)
    if ending == "close_when_done":
        client = Reader(smap, server.address, b"go\n")
        run_until(lambda: client.closes, smap, timeout=40, use_poll=use_poll)
        assert client.sha.hexdigest() == BIG_SHA
    else:
        peer = socket.create_connection(server.address)
        run_until(lambda: server.channels, smap, use_poll=use_poll)
        if ending == "fin":
            peer.close()
        elif ending == "rst-idle":
            reset(peer)
        else:
            peer.sendall(b"go\n")
            got = 0
            while got < 100000:
                asyncore.loop(0.05, use_poll, map=smap, count=1)
                peer.settimeout(0.05)
                try:
                    got += len(peer.recv(65536))
                except socket.timeout:
                    pass
            reset(peer)
    chan = server.channels[0]
    run_until(lambda: chan.closes, smap, use_poll=use_poll)
    asyncore.loop(0.05, use_poll, map=smap, count=5)  # no late second call
    assert chan.closes == 1
    assert list(smap.values()) == [server]


@pytest.mark.timeout(60)
@both_poll_modes
def test_reset_mid_send_closes_only_that_channel(smap, use_poll):
    class Handler(Chat):
        reply = "push"

    server = Server(smap, Handler)
    doomed = Reader(smap, server.address, b"a\n", reset_after=200000)
    healthy = Reader(smap, server.address, b"b\n")
    run_until(lambda: healthy.closes, smap, timeout=40, use_poll=use_poll)
    run_until(lambda: all(c.closes for c in server.channels), smap, use_poll=use_poll)
    asyncore.loop(0.05, use_poll, map=smap, count=3)
    assert doomed.was_reset and doomed.received < len(BIG)
    assert healthy.received == len(BIG) and healthy.sha.hexdigest() == BIG_SHA
    assert healthy.closes == 1
    assert [c.closes for c in server.channels] == [1, 1]
    assert list(smap.values()) == [server]


# -- both cores ---------------------------------------------------------------------
