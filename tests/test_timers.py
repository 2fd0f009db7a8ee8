"""Loop timers, cross-thread calls and per-channel timeouts (asynframe.asyncore).

``call_later``/``call_soon_threadsafe`` on a map's loop, the wakeup
descriptor behind the latter (never in the map, no leaked descriptors),
errors in callbacks, and ``set_idle_timeout``/``set_connect_timeout`` on
dispatchers and async_chat channels (both of async_chat's receive paths).

Timing is asserted with generous bounds: the machine running the suite may
be loaded.  What must not happen (a chatty channel cut for idleness) is
checked with events, not wall-clock margins.

Both cores: the file is marked ``api_layer``, so the second pytest command of
the README runs it again with the pure core forced (tests/conftest.py).
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import select
import socket
import sys
import threading
import time

import pytest

from asynframe import _backends, _poller, asynchat, asyncore

from support import both_poll_modes, run_until

pytestmark = pytest.mark.api_layer

HERE = os.path.abspath(__file__)


def open_fds():
    return len(os.listdir("/proc/self/fd"))


class Quiet(asyncore.dispatcher):
    """A channel that never has anything to do: the loop blocks on it."""

    def writable(self):
        return False

    def handle_read(self):
        self.recv(4096)

    def handle_close(self):
        self.close()


def quiet_channel(m):
    a, b = socket.socketpair()
    chan = Quiet(a, map=m)
    return chan, b


# -- call_later ------------------------------------------------------------------
@pytest.mark.timeout(20)
@both_poll_modes
def test_timers_run_in_deadline_then_schedule_order(smap, use_poll):
    chan, peer = quiet_channel(smap)
    with peer:
        got = []
        for delay, name in [(0.3, "c"), (0.1, "a"), (0.2, "b1"), (0.2, "b2"), (0.0, "z0"), (0.2, "b3")]:
            asyncore.call_later(delay, got.append, name, map=smap)
        run_until(lambda: len(got) == 6, smap, use_poll=use_poll)
        assert got == ["z0", "a", "b1", "b2", "b3", "c"]


@pytest.mark.timeout(20)
def test_cancel_and_handle_attributes(smap):
    chan, peer = quiet_channel(smap)
    with peer:
        got = []
        before = time.monotonic()
        keep = asyncore.call_later(0.2, got.append, "keep", map=smap)
        drop = asyncore.call_later(0.1, got.append, "drop", map=smap)
        assert isinstance(keep, asyncore.TimerHandle)
        assert before + 0.2 <= keep.when <= time.monotonic() + 0.2
        drop.cancel()
        drop.cancel()  # twice is harmless
        assert drop.cancelled() and not keep.cancelled()
        run_until(lambda: got, smap)
        asyncore.loop(0.2, map=smap, count=2)
        assert got == ["keep"]
        keep.cancel()  # after it ran: no effect, no error
        # a callback cancelling a later timer
        late = asyncore.call_later(0.2, got.append, "late", map=smap)
        asyncore.call_later(0.05, late.cancel, map=smap)
        asyncore.call_later(0.4, got.append, "end", map=smap)
        run_until(lambda: got[-1] == "end", smap)
        assert got == ["keep", "end"]


@pytest.mark.timeout(20)
def test_cancelled_timers_do_not_accumulate(smap):
    chan, peer = quiet_channel(smap)
    with peer:
        timers = _poller.poller_for(smap).get_timers()
        for _ in range(5):
            handles = [asyncore.call_later(60, print, map=smap) for _ in range(1000)]
            for h in handles:
                h.cancel()
        assert len(timers._heap) < 1000
        assert len(timers) == 0 and not timers.pending()


@pytest.mark.timeout(20)
@both_poll_modes
def test_timer_ends_a_blocked_wait(smap, use_poll):
    chan, peer = quiet_channel(smap)
    with peer:
        fired = []
        asyncore.call_later(0.2, fired.append, 1, map=smap)
        start = time.monotonic()
        asyncore.loop(30, use_poll, map=smap, count=1)  # would block 30 s
        assert fired == [1]
        assert time.monotonic() - start < 10


@pytest.mark.timeout(20)
def test_timer_without_registered_channels_ends_the_sleep(smap):
    # a channel waiting for nothing: the loop sleeps instead of polling
    chan, peer = quiet_channel(smap)
    chan.readable = lambda: False
    with peer:
        fired = []
        asyncore.call_later(0.2, fired.append, 1, map=smap)
        start = time.monotonic()
        asyncore.loop(30, map=smap, count=1)
        assert fired == [1] and time.monotonic() - start < 10


@pytest.mark.timeout(20)
def test_empty_map_loop_returns_and_timers_wait_for_the_next_loop(smap):
    fired = []
    asyncore.call_later(0, fired.append, 1, map=smap)
    start = time.monotonic()
    asyncore.loop(30, map=smap)  # no channels: returns at once, as asyncore
    assert time.monotonic() - start < 5 and fired == []
    chan, peer = quiet_channel(smap)
    with peer:
        asyncore.loop(0.5, map=smap, count=1)
        assert fired == [1]


@pytest.mark.timeout(20)
def test_callback_errors_are_logged_and_the_loop_goes_on(smap, caplog):
    chan, peer = quiet_channel(smap)
    with peer:
        got = []

        def boom():
            raise RuntimeError("boom in a timer")

        asyncore.call_later(0.05, boom, map=smap)
        asyncore.call_later(0.1, got.append, "after", map=smap)
        asyncore.call_soon_threadsafe(boom, map=smap)
        with caplog.at_level(logging.ERROR, logger="asynframe"):
            run_until(lambda: got, smap)
        records = [r for r in caplog.records if r.name == "asynframe"]
        assert len(records) == 2
        assert all(str(r.exc_info[1]) == "boom in a timer" for r in records)
        assert chan.socket.fileno() >= 0 and smap  # nothing closed


@pytest.mark.timeout(20)
def test_error_in_a_channels_method_closes_that_channel_only(smap, capsys):
    bad, bad_peer = quiet_channel(smap)
    good, good_peer = quiet_channel(smap)
    with bad_peer, good_peer:
        closed = []

        class Bad(Quiet):
            def tick(self):
                raise ValueError("tick failed")

            def handle_close(self):
                closed.append(self)
                self.close()

        bad.__class__ = Bad
        asyncore.call_later(0.05, bad.tick, map=smap)
        run_until(lambda: closed, smap)
        assert closed == [bad] and list(smap.values()) == [good]
        assert "tick failed" in capsys.readouterr().out  # handle_error's report


@pytest.mark.timeout(20)
def test_exitnow_from_a_timer_leaves_the_loop(smap):
    chan, peer = quiet_channel(smap)
    with peer:

        def leave():
            raise asyncore.ExitNow()

        asyncore.call_later(0.05, leave, map=smap)
        with pytest.raises(asyncore.ExitNow):
            asyncore.loop(5, map=smap)


def test_bad_arguments():
    m: dict = {}
    with pytest.raises(TypeError):
        asyncore.call_later("1", print, map=m)
    with pytest.raises(TypeError):
        asyncore.call_later(True, print, map=m)
    with pytest.raises(ValueError):
        asyncore.call_later(float("nan"), print, map=m)
    with pytest.raises(ValueError):
        asyncore.call_later(float("inf"), print, map=m)
    with pytest.raises(TypeError):
        asyncore.call_later(1, "not callable", map=m)
    with pytest.raises(TypeError):
        asyncore.call_soon_threadsafe(None, map=m)
    chan = Quiet(map=m)
    for bad in ("3", [1]):
        with pytest.raises(TypeError):
            chan.set_idle_timeout(bad)
        with pytest.raises(TypeError):
            chan.set_connect_timeout(bad)
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError):
            chan.set_idle_timeout(bad)
        with pytest.raises(ValueError):
            chan.set_connect_timeout(bad)
    asyncore.close_all(m)


# -- call_soon_threadsafe ------------------------------------------------------------
@pytest.mark.timeout(30)
@both_poll_modes
def test_threads_wake_a_blocked_loop(smap, use_poll):
    chan, peer = quiet_channel(smap)
    with peer:
        got = []
        n_threads, per_thread = 4, 200
        total = n_threads * per_thread

        def record(tid, i):
            got.append((tid, i))
            if len(got) == total:
                chan.close()  # empties the map: loop() returns

        start_gate = threading.Event()

        def worker(tid):
            start_gate.wait()
            for i in range(per_thread):
                asyncore.call_soon_threadsafe(record, tid, i, map=smap)
                if i % 50 == 0:
                    time.sleep(0.01)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
        for t in threads:
            t.start()
        threading.Timer(0.2, start_gate.set).start()
        start = time.monotonic()
        try:
            asyncore.loop(60, use_poll, map=smap)  # blocked in the wait between calls
        finally:
            start_gate.set()
            for t in threads:
                t.join(10)
        assert time.monotonic() - start < 20
        assert sorted(got) == [(t, i) for t in range(n_threads) for i in range(per_thread)]
        for t in range(n_threads):  # each thread's calls in its order
            assert [i for tid, i in got if tid == t] == list(range(per_thread))


@pytest.mark.timeout(60)
@both_poll_modes
def test_no_wakeup_is_lost_under_fast_thread_switching(smap, use_poll):
    # 10,000 calls from one thread, nothing else happening, a 30 s wait and
    # a thread switch every microsecond: every call must run within seconds
    # (a flag left set by a drained, empty wakeup used to hold them for the
    # whole timeout).
    chan, peer = quiet_channel(smap)
    with peer:
        total = 10_000
        got = []

        def record(i):
            got.append(i)
            if len(got) == total:
                chan.close()

        def worker():
            for i in range(total):
                asyncore.call_soon_threadsafe(record, i, map=smap)

        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        try:
            thread = threading.Thread(target=worker)
            start = time.monotonic()
            thread.start()
            while len(got) < total and time.monotonic() - start < 25:
                asyncore.loop(30, use_poll, map=smap, count=1)
            thread.join(10)
        finally:
            sys.setswitchinterval(interval)
        assert got == list(range(total))
        assert time.monotonic() - start < 20


@pytest.mark.timeout(20)
@both_poll_modes
def test_one_call_wakes_the_wait_promptly(smap, use_poll):
    chan, peer = quiet_channel(smap)
    with peer:
        # the first call creates the wakeup descriptor while the loop waits
        for _ in range(3):
            got = []
            threading.Timer(0.2, asyncore.call_soon_threadsafe, (got.append, 1), {"map": smap}).start()
            start = time.monotonic()
            while not got and time.monotonic() - start < 15:
                asyncore.loop(30, use_poll, map=smap, count=1)
            assert got == [1] and time.monotonic() - start < 10


@pytest.mark.timeout(20)
def test_call_wakes_a_loop_sleeping_with_nothing_registered(smap):
    chan, peer = quiet_channel(smap)
    chan.readable = lambda: False
    with peer:
        asyncore.call_later(60, print, map=smap)  # timers exist, no wakeup yet
        got = []
        threading.Timer(0.2, asyncore.call_soon_threadsafe, (got.append, 1), {"map": smap}).start()
        start = time.monotonic()
        asyncore.loop(30, map=smap, count=1)
        assert got == [1] and time.monotonic() - start < 10


@pytest.mark.timeout(20)
@both_poll_modes
def test_wakeup_descriptor_is_invisible_to_the_map(smap, use_poll):
    chan, peer = quiet_channel(smap)
    with peer:
        fd = chan._fileno
        got = []
        asyncore.call_soon_threadsafe(got.append, 1, map=smap)
        poller = _poller.poller_for(smap)
        assert poller.wakeup_fd >= 0 and poller.wakeup_fd not in smap
        assert list(smap) == [fd] and list(smap.values()) == [chan]
        asyncore.loop(1, use_poll, map=smap, count=1)
        assert got == [1]
        # count is the number of iterations, as before
        iterations = poller.iterations
        asyncore.loop(0.01, use_poll, map=smap, count=3)
        assert poller.iterations == iterations + 3
        chan.close()
        start = time.monotonic()
        asyncore.loop(30, use_poll, map=smap)  # empty map: returns at once
        assert time.monotonic() - start < 5


@pytest.mark.timeout(30)
def test_no_descriptor_leaks(smap):
    gc.collect()
    base = open_fds()
    for _ in range(20):
        m: dict = {}
        chan, peer = quiet_channel(m)
        got = []
        asyncore.call_later(0.01, got.append, 1, map=m)
        # the socketpair and the poller's epoll; call_later alone does not
        # create the wakeup descriptor
        assert open_fds() == base + 2 + (_poller.Backend is _backends.EpollBackend)
        t = threading.Thread(target=asyncore.call_soon_threadsafe, args=(got.append, 2), kwargs={"map": m})
        t.start()
        t.join()
        wakeup_fds = 1 if hasattr(os, "eventfd") else 2
        assert open_fds() == base + 2 + wakeup_fds + (_poller.Backend is _backends.EpollBackend)
        run_until(lambda: len(got) == 2, m)
        asyncore.close_all(m)
        peer.close()
        assert open_fds() == base
    # a map left by loop() with nothing pending drops its poller and wakeup
    m = {}
    chan, peer = quiet_channel(m)
    asyncore.call_soon_threadsafe(chan.close, map=m)
    asyncore.loop(5, map=m)
    peer.close()
    assert open_fds() == base


@pytest.mark.timeout(20)
def test_close_all_cancels_timers(smap):
    chan, peer = quiet_channel(smap)
    with peer:
        got = []
        asyncore.call_later(0.05, got.append, 1, map=smap)
        asyncore.close_all(smap)
        chan2, peer2 = quiet_channel(smap)
        with peer2:
            asyncore.loop(0.2, map=smap, count=2)
        assert got == []


# -- idle timeout ----------------------------------------------------------------------
class Echo(asynchat.async_chat):
    """Line echo; records when it timed out."""

    def __init__(self, sock, m, timeout=None):
        asynchat.async_chat.__init__(self, sock, map=m)
        self.set_terminator(b"\n")
        self.idle_fired = []
        self.closes = 0
        if timeout is not None:
            self.set_idle_timeout(timeout)

    collect_incoming_data = asynchat.async_chat._collect_incoming_data

    def found_terminator(self):
        self.push(self._get_data() + b"\n")

    def handle_idle_timeout(self):
        self.idle_fired.append(time.monotonic())
        asynchat.async_chat.handle_idle_timeout(self)

    def handle_close(self):
        self.closes += 1
        self.close()


class EchoOwnRecv(Echo):
    """Same, through dispatcher.recv/send (async_chat's generic path)."""

    def recv(self, n):
        return asynchat.async_chat.recv(self, n)

    def send(self, data):
        return asynchat.async_chat.send(self, data)


class Counter(asyncore.dispatcher):
    """Plain dispatcher: reads and counts (dispatcher.recv path)."""

    def __init__(self, sock, m, timeout):
        asyncore.dispatcher.__init__(self, sock, map=m)
        self.idle_fired = []
        self.got = 0
        self.set_idle_timeout(timeout)

    def writable(self):
        return False

    def handle_read(self):
        self.got += len(self.recv(65536))

    def handle_idle_timeout(self):
        self.idle_fired.append(time.monotonic())
        self.close()


@pytest.mark.timeout(60)
@both_poll_modes
@pytest.mark.parametrize("kind", [Echo, EchoOwnRecv, Counter], ids=["chat-core", "chat-recv", "dispatcher"])
def test_chatty_peer_never_cut_then_idle_peer_is(smap, use_poll, kind, capsys):
    a, b = socket.socketpair()
    timeout = 0.8
    server = kind(a, smap, timeout)
    assert server._af_generic_path is True
    b.setblocking(False)
    sent = [0]
    last_sent = [0.0]
    stop_at = time.monotonic() + 2 * timeout

    def chat():
        if time.monotonic() < stop_at:
            last_sent[0] = time.monotonic()
            b.send(b"ping\n")
            sent[0] += 1
            try:
                b.recv(65536)
            except BlockingIOError:
                pass
            asyncore.call_later(0.05, chat, map=smap)

    chat()
    try:
        run_until(lambda: time.monotonic() >= stop_at, smap, timeout=30, use_poll=use_poll)
        assert server.idle_fired == [] and server.connected, "chatty peer was cut"
        assert sent[0] > 10
        run_until(lambda: server.idle_fired, smap, timeout=30, use_poll=use_poll)
        # the server read the last ping after it was sent: idle since then at least
        assert server.idle_fired[0] - last_sent[0] >= timeout - 0.01
        assert not server.connected and server not in smap.values()
        if kind is not Counter:
            assert server.closes == 1 and "idle for" in capsys.readouterr().out
    finally:
        b.close()


@pytest.mark.timeout(30)
def test_sending_counts_as_activity(smap):
    a, b = socket.socketpair()
    with b:
        server = Echo(a, smap, 1.0)
        stop_at = time.monotonic() + 3.0

        def talk():
            if time.monotonic() < stop_at:
                server.push(b"tick\n")
                try:
                    b.recv(65536)
                except BlockingIOError:
                    pass
                asyncore.call_later(0.05, talk, map=smap)

        b.setblocking(False)
        talk()
        run_until(lambda: time.monotonic() >= stop_at, smap, timeout=20)
        assert server.idle_fired == [] and server.connected
        run_until(lambda: server.idle_fired, smap, timeout=20)


@pytest.mark.timeout(30)
def test_idle_timeout_disabled_and_override_keeping_the_channel(smap):
    a, b = socket.socketpair()
    with b:

        class Pinger(Echo):
            def handle_idle_timeout(self):
                self.idle_fired.append(time.monotonic())
                if len(self.idle_fired) == 3:
                    self.close()

        server = Pinger(a, smap, 0.2)
        run_until(lambda: len(server.idle_fired) == 3, smap, timeout=20)
        assert not server.connected and server._af_idle_timer is None
        a2, b2 = socket.socketpair()
        with b2:
            other = Echo(a2, smap, 0.2)
            other.set_idle_timeout(None)
            assert other._af_generic_path is False and other.get_idle_timeout() is None
            asyncore.loop(0.2, map=smap, count=5)
            assert other.idle_fired == [] and other.connected


@pytest.mark.timeout(30)
def test_closed_channel_releases_its_timer(smap):
    a, b = socket.socketpair()
    with b:
        server = Echo(a, smap, 30)
        timers = _poller.poller_for(smap).get_timers()
        assert len(timers) == 1
        server.close()
        assert len(timers) == 0


# -- connect timeout -----------------------------------------------------------------
def blackhole():
    """A loopback address whose connects hang: a listener with a full backlog.

    Linux drops SYNs to a listener whose accept queue is full, so the
    connect stays in progress.  Returns (listener, fillers, address)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    addr = listener.getsockname()
    fillers = []
    for _ in range(16):
        s = socket.socket()
        s.setblocking(False)
        fillers.append(s)
        if s.connect_ex(addr) in (0, errno.EISCONN):
            continue
        # in progress: completes at once unless the accept queue is full
        _r, w, _x = select.select([], [s], [], 0.5)
        if not w:
            return listener, fillers, addr
    for s in fillers:
        s.close()
    listener.close()
    pytest.skip("could not fill a loopback listener's backlog here")


class Client(asyncore.dispatcher):
    def __init__(self, m, addr, timeout):
        asyncore.dispatcher.__init__(self, map=m)
        self.events = []
        self.create_socket()
        self.set_connect_timeout(timeout)
        self.connect(addr)

    def handle_connect(self):
        self.events.append("connect")

    def handle_connect_timeout(self):
        self.events.append("timeout")
        asyncore.dispatcher.handle_connect_timeout(self)

    def handle_read(self):
        self.recv(100)

    def writable(self):
        return not self.connected

    def handle_close(self):
        self.events.append("close")
        self.close()


@pytest.mark.timeout(30)
@both_poll_modes
def test_connect_timeout_against_a_full_backlog(smap, use_poll, capsys):
    listener, fillers, addr = blackhole()
    try:
        start = time.monotonic()
        client = Client(smap, addr, 0.5)
        run_until(lambda: "timeout" in client.events, smap, timeout=20, use_poll=use_poll)
        assert time.monotonic() - start >= 0.45
        assert client.events == ["timeout", "close"] and client not in smap.values()
        assert "connect not completed" in capsys.readouterr().out
    finally:
        for s in fillers:
            s.close()
        listener.close()


@pytest.mark.timeout(30)
@both_poll_modes
def test_connect_timeout_cancelled_by_a_connection(smap, use_poll):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    try:
        client = Client(smap, listener.getsockname(), 0.3)
        run_until(lambda: "connect" in client.events, smap, use_poll=use_poll)
        assert client._af_connect_timer is None
        conn, _ = listener.accept()
        with conn:
            asyncore.loop(0.2, use_poll, map=smap, count=5)
            assert client.events == ["connect"] and client.connected
    finally:
        listener.close()


@pytest.mark.timeout(30)
def test_connect_timeout_set_while_connecting(smap):
    listener, fillers, addr = blackhole()
    try:
        client = Client(smap, addr, None)
        assert client._af_connect_timer is None
        client.set_connect_timeout(0.3)
        run_until(lambda: "timeout" in client.events, smap, timeout=20)
    finally:
        for s in fillers:
            s.close()
        listener.close()


# -- both cores ---------------------------------------------------------------------
