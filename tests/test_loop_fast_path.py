"""The loop's compiled fast path for stock ``async_chat`` channels (asynframe._loop_c).

Every behaviour test runs a scenario twice in this process: once on a channel
that may take the fast path and once on the same channel with
``_af_generic_path = True`` (always asyncore's Python dispatch), and asserts
the two event logs are equal. With the compiled core the first run must
actually take the fast path (``MapPoller.fast_dispatches``); with the pure
core there is no fast path and those assertions are skipped, not passed:
``test_counters_*`` are C-only, and the file is marked ``api_layer``, so a
second pytest command of the README runs it again with the pure core
forced (tests/conftest.py).
"""

from __future__ import annotations

import os
import socket
import struct
import time

import pytest

import asynframe
from asynframe import _poller, asynchat, asyncore

from support import both_poll_modes

pytestmark = pytest.mark.api_layer

HERE = os.path.abspath(__file__)
FAST = _poller.LOOP_IMPLEMENTATION == "c"
c_loop_only = pytest.mark.skipif(not FAST, reason="no compiled loop (pure core or not epoll)")


class Echo(asynchat.async_chat):
    """Echo each line; records what the framework called."""

    def __init__(self, sock, m, log, generic=False):
        super().__init__(sock, map=m)
        self.log = log
        if generic:
            self._af_generic_path = True
        self.set_terminator(b"\r\n")

    def collect_incoming_data(self, data):
        self._collect_incoming_data(data)

    def found_terminator(self):
        line = self._get_data()
        self.log.append(("line", line))
        if line == b"boom":
            raise ValueError("boom")
        if line == b"bye":
            self.push(b"bye\r\n")
            self.close_when_done()
            return
        self.push(line + b"\r\n")

    def handle_close(self):
        self.log.append(("close",))
        self.close()

    def handle_error(self):
        t, v = asyncore.compact_traceback()[1:3]
        self.log.append(("error", t.__name__, str(v)))
        self.handle_close()


class OwnRead(Echo):
    """Overrides handle_read: never the fast path."""

    def handle_read(self):
        self.log.append(("own read",))
        asynchat.async_chat.handle_read(self)


def pump(m, peer, until, use_poll, timeout=5.0):
    """Iterate the loop, collecting what *peer* receives, until until(data)."""
    got = b""
    peer.setblocking(False)
    deadline = time.monotonic() + timeout
    while not until(got):
        assert time.monotonic() < deadline, "stalled with %r" % (got,)
        asyncore.loop(0.05, use_poll, map=m, count=1)
        try:
            chunk = peer.recv(65536)
        except BlockingIOError:
            continue
        if not chunk:
            got += b"<EOF>"
            break
        got += chunk
    return got


def echo_line(m, peer, line, use_poll):
    """Send *line* from *peer* and run the loop until its echo is back."""
    peer.sendall(line)
    return pump(m, peer, lambda got: got.endswith(line), use_poll)


def run_scenario(cls, generic, use_poll, script):
    """Feed *script* to a *cls* channel; return (log, peer's bytes, poller counters)."""
    m: dict = {}
    log: list = []
    a, b = socket.socketpair()
    try:
        chan = cls(a, m, log, generic=generic)
        poller = _poller.poller_for(m)
        before = (poller.fast_dispatches, poller.generic_dispatches)
        received = b""
        for send, expect_end in script:
            if send is None:
                b.shutdown(socket.SHUT_WR)
            else:
                b.sendall(send)
            received += pump(m, b, lambda got, e=expect_end: got.endswith(e) or b"<EOF>" in got, use_poll)
        counters = (poller.fast_dispatches - before[0], poller.generic_dispatches - before[1])
        del chan
        return log, received, counters
    finally:
        asyncore.close_all(m, ignore_all=True)
        b.close()


SCRIPTS = {
    "pipelined": [(b"".join(b"line %d\r\n" % i for i in range(500)), b"line 499\r\n")],
    "split terminator": [(b"ab\r", b""), (b"\ncd\r\n", b"cd\r\n")],
    "close_when_done": [(b"x\r\nbye\r\n", b"<EOF>")],
    "callback raises": [(b"ok\r\nboom\r\nlost\r\n", b"<EOF>")],
    "peer EOF": [(b"last\r\n", b"last\r\n"), (None, b"<EOF>")],
}


@both_poll_modes
@pytest.mark.parametrize("name", sorted(SCRIPTS))
@pytest.mark.timeout(20)
def test_fast_path_behaves_as_generic(name, use_poll):
    fast_log, fast_got, fast_counts = run_scenario(Echo, False, use_poll, SCRIPTS[name])
    slow_log, slow_got, slow_counts = run_scenario(Echo, True, use_poll, SCRIPTS[name])
    assert fast_log == slow_log
    assert fast_got == slow_got
    assert slow_counts[0] == 0 and slow_counts[1] > 0
    if FAST:
        assert fast_counts[0] > 0
    # what the scenario is about really happened
    if name == "callback raises":
        assert ("error", "ValueError", "boom") in fast_log and ("line", b"lost") not in fast_log
    if name in ("close_when_done", "peer EOF"):
        assert fast_log[-1] == ("close",)
    if name == "pipelined":
        assert fast_got == SCRIPTS[name][0][0]


class Big(Echo):
    """Answers each line with 256 KiB: the socket takes it over many write events."""

    def found_terminator(self):
        line = self._get_data()
        self.log.append(("line", line))
        self.push(line * (262144 // max(1, len(line))) + b"\r\n")


def run_big(generic, use_poll):
    m: dict = {}
    log: list = []
    a, b = socket.socketpair()
    try:
        b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        Big(a, m, log, generic=generic)
        poller = _poller.poller_for(m)
        b.sendall(b"abcd\r\n")
        got = pump(m, b, lambda got: got.endswith(b"\r\n"), use_poll, timeout=10)
        return log, got, poller.fast_dispatches, poller.generic_dispatches
    finally:
        asyncore.close_all(m, ignore_all=True)
        b.close()


@both_poll_modes
@pytest.mark.timeout(30)
def test_large_reply_flushed_by_write_events(use_poll):
    fast_log, fast_got, fast, _ = run_big(False, use_poll)
    slow_log, slow_got, slow_fast, slow = run_big(True, use_poll)
    assert fast_got == slow_got == b"abcd" * 65536 + b"\r\n"
    assert fast_log == slow_log
    assert slow_fast == 0 and slow > 2
    if FAST:
        assert fast > 2  # the read, then write events


def run_until_closed(a, b, generic, use_poll, peer_goes):
    """Echo one line from *b* on *a*, let peer_goes(b) end the peer, then run
    the loop until the channel is gone; return (log, what is left in the map)."""
    m: dict = {}
    log: list = []
    try:
        Echo(a, m, log, generic=generic)
        echo_line(m, b, b"one\r\n", use_poll)
        peer_goes(b)
        deadline = time.monotonic() + 5
        while m and time.monotonic() < deadline:
            asyncore.loop(0.05, use_poll, map=m, count=1)
        return log, dict(m)
    finally:
        asyncore.close_all(m, ignore_all=True)
        b.close()


def run_reset(generic, use_poll):
    # TCP: SO_LINGER 0 makes close() send a reset
    with socket.create_server(("127.0.0.1", 0)) as listener:
        b = socket.create_connection(listener.getsockname())
        a = listener.accept()[0]

    def abort(peer):
        # an abortive close: the channel's next recv fails with ECONNRESET
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.sendall(b"two\r\n")
        peer.close()

    return run_until_closed(a, b, generic, use_poll, abort)


@both_poll_modes
@pytest.mark.timeout(20)
def test_reset_by_peer_same_on_both_paths(use_poll):
    fast = run_reset(False, use_poll)
    slow = run_reset(True, use_poll)
    assert fast == slow
    assert fast[0][-1] == ("close",) and fast[1] == {}


def run_unread(generic, use_poll):
    a, b = socket.socketpair()

    def leave(peer):
        # the peer is gone once its line is in: the reply pushed inside the
        # read of that line (sent at once, the queue being empty) fails
        # with EPIPE
        peer.sendall(b"two\r\n")
        peer.close()

    return run_until_closed(a, b, generic, use_poll, leave)


@both_poll_modes
@pytest.mark.timeout(20)
def test_reply_to_a_peer_that_is_gone(use_poll):
    fast = run_unread(False, use_poll)
    slow = run_unread(True, use_poll)
    assert fast == slow
    log, left = fast
    assert log[log.index(("line", b"two")) + 1] == ("close",) and left == {}


class Quitter(Echo):
    def found_terminator(self):
        self._get_data()
        raise asyncore.ExitNow("leave the loop")


@both_poll_modes
@pytest.mark.parametrize("generic", [False, True], ids=["fast", "generic"])
@pytest.mark.timeout(20)
def test_exitnow_leaves_the_loop(smap, use_poll, generic):
    log: list = []
    a, b = socket.socketpair()
    with b:
        chan = Quitter(a, smap, log, generic=generic)
        b.sendall(b"x\r\n")
        with pytest.raises(asyncore.ExitNow):
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                asyncore.loop(0.05, use_poll, map=smap, count=1)
        # not routed to handle_error; the channel is still open and usable
        assert log == [] and chan.connected and not chan._af_dispatching


@c_loop_only
@both_poll_modes
@pytest.mark.timeout(20)
def test_counters_stock_channel_takes_fast_path(use_poll):
    log, got, (fast, generic) = run_scenario(Echo, False, use_poll, SCRIPTS["pipelined"])
    assert got == SCRIPTS["pipelined"][0][0]
    assert fast > 0 and generic == 0


@both_poll_modes
@pytest.mark.parametrize("generic", [False, True], ids=["override", "override+flag"])
@pytest.mark.timeout(20)
def test_overridden_handle_read_takes_generic_path(use_poll, generic):
    log, got, (fast, slow) = run_scenario(OwnRead, generic, use_poll, SCRIPTS["split terminator"])
    assert got == b"ab\r\ncd\r\n"
    assert ("own read",) in log
    assert fast == 0 and slow > 0


@both_poll_modes
@pytest.mark.timeout(20)
def test_generic_path_flag_takes_generic_path(use_poll):
    log, got, (fast, slow) = run_scenario(Echo, True, use_poll, SCRIPTS["pipelined"])
    assert got == SCRIPTS["pipelined"][0][0]
    assert fast == 0 and slow > 0


@both_poll_modes
@pytest.mark.timeout(20)
def test_instance_override_takes_generic_path(smap, use_poll):
    log: list = []
    a, b = socket.socketpair()
    with b:
        chan = Echo(a, smap, log)
        calls = []

        def initiate_send():
            calls.append(1)
            asynchat.async_chat.initiate_send(chan)

        chan.initiate_send = initiate_send
        poller = _poller.poller_for(smap)
        assert echo_line(smap, b, b"hi\r\n", use_poll) == b"hi\r\n"
        assert calls and poller.fast_dispatches == 0


@both_poll_modes
@pytest.mark.timeout(20)
def test_flag_set_mid_stream_switches_path(smap, use_poll):
    log: list = []
    a, b = socket.socketpair()
    with b:
        chan = Echo(a, smap, log)
        poller = _poller.poller_for(smap)
        echo_line(smap, b, b"one\r\n", use_poll)
        fast = poller.fast_dispatches
        generic = poller.generic_dispatches
        chan._af_generic_path = True
        echo_line(smap, b, b"two\r\n", use_poll)
        assert poller.fast_dispatches == fast and poller.generic_dispatches > generic
        assert log == [("line", b"one"), ("line", b"two")]


@both_poll_modes
@pytest.mark.timeout(20)
def test_class_patched_mid_stream_switches_path(smap, use_poll):
    # the loop caches what it learnt about a class; assigning a handler on
    # the class after the first event must be seen at the next one
    class Patched(Echo):
        pass

    log: list = []
    a, b = socket.socketpair()
    with b:
        Patched(a, smap, log)
        poller = _poller.poller_for(smap)
        echo_line(smap, b, b"one\r\n", use_poll)
        fast = poller.fast_dispatches
        if FAST:
            assert fast > 0

        def handle_read(self):
            self.log.append(("patched read",))
            asynchat.async_chat.handle_read(self)

        Patched.handle_read = handle_read
        echo_line(smap, b, b"two\r\n", use_poll)
        assert poller.fast_dispatches == fast
        assert log == [("line", b"one"), ("patched read",), ("line", b"two")]
        # and back: deleting the override makes the channel stock again
        del Patched.handle_read
        echo_line(smap, b, b"three\r\n", use_poll)
        assert log[-1] == ("line", b"three")
        if FAST:
            assert poller.fast_dispatches > fast


@both_poll_modes
@pytest.mark.timeout(20)
def test_state_attribute_as_property_is_honoured(smap, use_poll):
    # The loop reads state such as ``connected`` straight from the instance
    # dict only when no class makes it a descriptor; a property must still be
    # consulted.  Here it keeps the channel on the generic path until the
    # test opens the gate.
    class Gated(Echo):
        gate_open = False

        @property
        def _af_generic_path(self):
            return not self.gate_open

        @_af_generic_path.setter
        def _af_generic_path(self, value):
            pass

    log: list = []
    a, b = socket.socketpair()
    with b:
        chan = Gated(a, smap, log)
        poller = _poller.poller_for(smap)
        echo_line(smap, b, b"one\r\n", use_poll)
        assert poller.fast_dispatches == 0
        chan.gate_open = True
        echo_line(smap, b, b"two\r\n", use_poll)
        assert log == [("line", b"one"), ("line", b"two")]
        if FAST:
            assert poller.fast_dispatches > 0


@c_loop_only
@pytest.mark.timeout(20)
def test_counters_listener_and_dispatcher_are_generic(smap):
    accepted = []

    class Server(asyncore.dispatcher):
        def handle_accepted(self, sock, addr):
            accepted.append(Echo(sock, smap, []))

    server = Server(map=smap)
    server.create_socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    poller = _poller.poller_for(smap)
    with socket.create_connection(server.socket.getsockname()) as client:
        deadline = time.monotonic() + 5
        while not accepted:
            assert time.monotonic() < deadline
            asyncore.loop(0.05, True, map=smap, count=1)
        assert poller.generic_dispatches >= 1 and poller.fast_dispatches == 0
        client.sendall(b"hello\r\n")
        assert pump(smap, client, lambda got: got.endswith(b"hello\r\n"), True) == b"hello\r\n"
        assert poller.fast_dispatches >= 1


@c_loop_only
@pytest.mark.timeout(20)
def test_counters_settled_channels_stay_out_of_refresh(smap):
    # A fast channel whose interest did not change is not re-evaluated by
    # _refresh: interest_checks grows by one per dispatched channel, not more.
    log: list = []
    a, b = socket.socketpair()
    with b:
        Echo(a, smap, log)
        poller = _poller.poller_for(smap)
        asyncore.loop(0.0, True, map=smap, count=1)
        echo_line(smap, b, b"x\r\n", True)
        checks = poller.interest_checks
        dispatched = poller.fast_dispatches
        for i in range(20):
            echo_line(smap, b, b"y\r\n", True)
        assert poller.fast_dispatches - dispatched >= 20
        assert poller.interest_checks - checks <= (poller.fast_dispatches - dispatched) + 2
        assert poller.dirty == {} or list(poller.dirty) == [a.fileno()]


@pytest.mark.timeout(20)
def test_pure_core_has_no_fast_path():
    if asynframe.USING_C_CORE:
        assert _poller.LOOP_IMPLEMENTATION in ("c", "python")
        if hasattr(__import__("select"), "epoll"):
            assert _poller.LOOP_IMPLEMENTATION == "c"
    else:
        assert _poller.LOOP_IMPLEMENTATION == "python"
        assert _poller._fast is None


def test_collect_incoming_data_binding():
    class Callbacks(asynchat.async_chat):
        def collect_incoming_data(self, data):
            self._collect_incoming_data(data)

        def found_terminator(self):
            pass

    chan = Callbacks(map={})
    chan._collect_incoming_data(b"x")
    chan._collect_incoming_data(b"y")
    assert chan.incoming == [b"x", b"y"] and chan._get_data() == b"xy"
    chan.incoming = [b"a"]  # a replaced list is the one appended to
    chan._collect_incoming_data(b"z")
    assert chan.incoming == [b"a", b"z"]

    class Collect(asynchat.async_chat):
        collect_incoming_data = asynchat.async_chat._collect_incoming_data

    # the core collects by itself: no per-connection bound method
    assert "_collect_incoming_data" not in Collect(map={}).__dict__


def test_push_checks_and_queues():
    chan = asynchat.async_chat(map={})
    with pytest.raises(TypeError, match="byte-ish"):
        chan.push("text")
    chan.push(b"ab")
    chan.push(bytearray(b"cd"))
    chan.push(memoryview(b"ef"))
    chan.push(b"")
    assert list(chan.producer_fifo) == [b"ab", b"cd", b"ef"]


def test_generic_path_attribute_is_documented_default():
    assert asynchat.async_chat._af_generic_path is False
    assert asynchat.async_chat(map={})._af_generic_path is False
