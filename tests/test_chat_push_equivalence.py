"""The compiled ``async_chat.push`` and interest rule against their Python twins.

With the compiled loop active (compiled core on epoll), ``async_chat.push``
is ``asynframe._loop_c.chat_push``, and after each event the loop settles a
stock channel's registration with its own copy of the interest rule
(``_loop_c.chat_interest``).  The behaviour they must reproduce is the Python
``async_chat.push`` (kept as ``async_chat._af_python_push``) and
``asynchat._chat_interest``.

Each case builds one channel state twice, each channel over its own
socketpair and socket map, pushes the same object with the Python push on one
and the compiled push on the other, runs one loop iteration on each, and
compares what can be observed after the push and after the iteration: the
exception (type and message), the bytes that reach the peer, the queue (items,
size, counters, whether the pushed bytes object itself was queued), the hooks
called (pause_writing/resume_writing, handle_close, handle_error,
initiate_send), the socket's send() sizes where the channel sends
``ac_out_buffer_size`` at a time, the channel's flags and its registered
interest.  The compiled interest rule must give the Python rule's answer
wherever it does not defer to it (-1), and a registration it settled must be
the one the Python rule gives.

Skipped without the compiled loop (pure core, or no epoll): there is nothing
to compare then.
"""

from __future__ import annotations

import array
import itertools
import socket
import sys
import time
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asynframe import _core_py, _poller, asynchat, asyncore

import _certs

COMPILED_LOOP = _poller.LOOP_IMPLEMENTATION == "c"

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not COMPILED_LOOP, reason="no compiled loop (pure core or not epoll)"),
]

if COMPILED_LOOP:
    from asynframe import _loop_c

    COMPILED_PUSH = asynchat.async_chat.push
    PYTHON_PUSH = asynchat.async_chat._af_python_push

SNDBUF = 4096
# far more than the kernel takes from a socket with SNDBUF: the rest stays queued
BACKLOG = bytes(range(256)) * 512


class BytesSubclass(bytes):
    """Bytes, but not exactly: the compiled push does not take its inlined path."""


# pushed data by name: a fresh object per case, the same one to both twins
DATA = {
    "bytes": lambda: b"hello\r\n",
    "empty bytes": lambda: b"",
    "big bytes": lambda: bytes(range(255, -1, -1)) * 1200,
    "bytearray": lambda: bytearray(b"a bytearray"),
    "empty bytearray": bytearray,
    "memoryview": lambda: memoryview(b"a memoryview"),
    "strided memoryview": lambda: memoryview(bytearray(b"s-t-r-i-d-e-d"))[::2],
    "int memoryview": lambda: memoryview(array.array("i", [1, 2, 3])),
    "bytes subclass": lambda: BytesSubclass(b"a bytes subclass"),
    "str": lambda: "text",
    "None": lambda: None,
    "int": lambda: 42,
    "list": lambda: [b"x"],
}


# -- the channels ------------------------------------------------------------------------
class Channel(asynchat.async_chat):
    """Records every hook a push or the following loop iteration can reach."""

    def __init__(self, sock=None, m=None):
        self.calls = []
        asynchat.async_chat.__init__(self, sock, m)
        self.set_terminator(b"\n")

    def collect_incoming_data(self, data):
        self.calls.append(("collect_incoming_data", bytes(data)))

    def found_terminator(self):
        self.calls.append(("found_terminator",))

    def pause_writing(self):
        self.calls.append(("pause_writing", self.get_write_buffer_size()))

    def resume_writing(self):
        self.calls.append(("resume_writing", self.get_write_buffer_size()))

    def handle_close(self):
        self.calls.append(("handle_close",))
        self.close()

    def handle_error(self):
        # type and message only: a traceback names the push's own frames
        exc = sys.exc_info()[1]
        self.calls.append(("handle_error", type(exc).__name__, str(exc)))
        self.close()

    def log_info(self, message, type="info"):
        self.calls.append(("log_info", type))


class OwnGetattribute(Channel):
    """A class with its own __getattribute__: the compiled push reads its
    attributes the ordinary way, not with the generic lookup."""

    def __getattribute__(self, name):
        return object.__getattribute__(self, name)


class OwnInitiateSend(Channel):
    def initiate_send(self):
        self.calls.append(("initiate_send",))
        asynchat.async_chat.initiate_send(self)


def instance_initiate_send(chan):
    stock = chan.initiate_send

    def initiate_send():
        chan.calls.append(("instance initiate_send",))
        stock()

    chan.initiate_send = initiate_send


CLASSES = {
    "stock": Channel,
    "own __getattribute__": OwnGetattribute,
    "own initiate_send": OwnInitiateSend,
    "instance initiate_send": Channel,
}


class RecordingSocket(socket.socket):
    """Not a plain socket: the channel sends through send(), ac_out_buffer_size at a time."""

    def send(self, data, *flags):
        self.sizes.append(len(data))
        return super().send(data, *flags)


def channel_socket(sock_kind, sock):
    if sock_kind == "plain":
        return sock
    recording = RecordingSocket(fileno=sock.detach())
    recording.sizes = []
    return recording


# -- one channel state -----------------------------------------------------------------
class Case(NamedTuple):
    data: str = "bytes"
    cls: str = "stock"
    queue: str = "compiled"  # "python": the pure twin's PushQueue (not the type chat_push inlines)
    backlog: bool = False  # output already queued that the kernel would not take
    close_pending: bool = False  # close_when_done() called before the push
    dispatching: bool = False  # pushed from inside a read handler
    limits: str = "none"  # a key of HIGH_MARKS, or "removed" (set, then removed)
    connection: str = "connected"
    sock: str = "plain"  # "plain" socket.socket or a "subclass"
    out_buffer: int = 65536  # ac_out_buffer_size
    generic: str = "default"  # what puts the channel on the generic path, if anything
    use_encoding: bool = False
    use_poll: bool = False  # the semantics of the loop iteration after the push


CONNECTIONS = [
    "connected",
    "unconnected",
    "listening",
    "closed",
    "peer closed",
    "eof draining",
    "eof draining, drain_on_eof off",
    "closing flag",  # asyncore's ``closing``: kept for compatibility, read by neither push
]
# set_write_buffer_limits(high=...): "tight" pauses on any push the socket cannot take at once
HIGH_MARKS = {"roomy": 1 << 30, "tight": 64}
LIMITS = ["none", *HIGH_MARKS, "removed"]
GENERIC = ["default", "flag", "traced", "idle timeout"]


class Side:
    """One twin: a channel in the case's state, its peer, map and poller."""

    def __init__(self, case: Case):
        self.map: dict = {}
        self.peer = None
        self.received = bytearray()
        cls = CLASSES[case.cls]
        if case.connection == "listening":
            sock = channel_socket(case.sock, socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            chan = cls(None, self.map)
            sock.setblocking(False)
            chan.set_socket(sock)
            chan.listen(5)
        elif case.connection == "unconnected":
            chan = cls(channel_socket(case.sock, socket.socket(socket.AF_UNIX)), self.map)
        else:
            ours, self.peer = socket.socketpair()
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
            self.peer.setblocking(False)
            chan = cls(channel_socket(case.sock, ours), self.map)
        self.chan = chan
        if case.cls == "instance initiate_send":
            instance_initiate_send(chan)
        chan.ac_out_buffer_size = case.out_buffer
        chan.use_encoding = int(case.use_encoding)
        if case.connection.startswith("eof"):
            chan.drain_on_eof = True
        self.poller = _poller.poller_for(self.map)
        self.poller._refresh()  # registered: pushes and flow changes touch it from now on
        if case.queue == "python":
            chan._af_queue = _core_py.PushQueue()
        if case.backlog:
            chan._af_queue.push(BACKLOG)
            asynchat.async_chat.initiate_send(chan)
        if case.limits == "removed":
            chan.set_write_buffer_limits(high=HIGH_MARKS["tight"])
            chan.set_write_buffer_limits()
        elif case.limits != "none":
            chan.set_write_buffer_limits(high=HIGH_MARKS[case.limits])
        if case.close_pending:
            chan.close_when_done()
        if case.connection == "closed":
            chan.close()
        elif case.connection == "peer closed":
            self.peer.close()
            self.peer = None
        elif case.connection.startswith("eof"):
            self.peer.shutdown(socket.SHUT_WR)
            # reads the end of file: a channel with output queued drains it, others close
            chan.handle_read()
            if case.connection.endswith("off"):
                chan.drain_on_eof = False
        elif case.connection == "closing flag":
            chan.closing = True
        if case.generic == "flag":
            chan._af_generic_path = True
        elif case.generic == "traced":
            chan.set_trace(True)
        elif case.generic == "idle timeout":
            chan.set_idle_timeout(60)
        self.poller._refresh()
        del chan.calls[:]
        chan._af_dispatching = case.dispatching

    def read_peer(self):
        while self.peer is not None:
            try:
                got = self.peer.recv(1 << 20)
            except BlockingIOError:
                return
            except OSError as exc:
                self.received += b"<%s>" % type(exc).__name__.encode()
                return
            if not got:
                self.received += b"<EOF>"
                return
            self.received += got

    def observe(self, data: Any, interest_failures: list) -> dict:
        chan = self.chan
        queue = chan._af_queue
        items = queue.snapshot()
        fd = chan._fileno
        touched = fd is not None and self.poller.dirty.get(fd) is chan
        self.poller._refresh()
        entry = self.poller.known.get(fd)
        registered = entry[1] if entry is not None and entry[0] is chan else None
        python_interest = asynchat._chat_interest(chan)
        compiled_interest = _loop_c.chat_interest(chan)
        if compiled_interest not in (-1, python_interest):
            interest_failures.append(("chat_interest", compiled_interest, "_chat_interest", python_interest))
        # inside a read handler the registration waits for the handler's flush
        if (
            registered is not None
            and not chan._af_dispatching
            and _poller.interest_fn_of(chan) is asynchat._chat_interest
        ):
            # urgent data only for a channel that handles it (wants_urgent)
            expected = python_interest
            if python_interest and _poller.wants_urgent(chan):
                expected |= _poller.PRI
            if chan._af_tls is None and registered != expected:
                interest_failures.append(("registered", registered, "Python rule", expected))
        self.read_peer()
        return {
            "queue": [describe_item(item) for item in items],
            "queued the object itself": any(item is data for item in items),
            "buffered": queue.buffered,
            "stats": queue.stats,
            "received": bytes(self.received),
            "calls": list(chan.calls),
            "send sizes": list(getattr(chan.socket, "sizes", ())),
            "flags": {
                name: getattr(chan, name)
                for name in (
                    "connected",
                    "accepting",
                    "_af_eof",
                    "writing_paused",
                    "_af_limited",
                    "_af_generic_path",
                )
            },
            # its truth is what it means; the compiled loop may keep a record
            # there (_FastRecord.reading), never the Python push
            "dispatching": bool(chan._af_dispatching),
            "in map": fd is not None and self.map.get(fd) is chan,
            "touched": touched,
            "registered": registered,
            "interest": python_interest,
        }

    def close(self):
        asyncore.close_all(self.map, ignore_all=True)
        if self.peer is not None:
            self.peer.close()


def describe_item(item):
    if item is None:
        return "close"
    if isinstance(item, (bytes, bytearray, memoryview)):
        return (type(item).__name__, bytes(item))
    return type(item).__name__


def push_and_observe(side: Side, push, data: Any, use_poll: bool, interest_failures: list):
    try:
        push(side.chan, data)
        raised = None
    except Exception as exc:
        raised = (type(exc).__name__, str(exc))
    after_push = side.observe(data, interest_failures)
    after_push["raised"] = raised
    chan = side.chan
    if chan._af_dispatching:
        # the read handler returns: what handle_read does after the callbacks
        chan._af_dispatching = False
        if chan._af_queue:
            chan.initiate_send()
    asyncore.loop(0, use_poll, map=side.map, count=1)
    return after_push, side.observe(data, interest_failures)


def differences(case: Case) -> list:
    """What differs between the Python and the compiled push in *case* (empty: nothing)."""
    data = DATA[case.data]()
    sides = []
    try:
        sides.append(Side(case))
        sides.append(Side(case))
        found = []
        results = []
        for side, push in zip(sides, (PYTHON_PUSH, COMPILED_PUSH)):
            interest_failures: list = []
            results.append(push_and_observe(side, push, data, case.use_poll, interest_failures))
            found += [(case, "interest", failure) for failure in interest_failures]
        for when, python_view, compiled_view in zip(("after push", "after loop"), *results):
            for key in python_view:
                if python_view[key] != compiled_view[key]:
                    found.append((case, when, key, python_view[key], compiled_view[key]))
        return found
    finally:
        for side in sides:
            side.close()


def assert_no_differences(cases):
    found = []
    count = 0
    for case in cases:
        count += 1
        found += differences(case)
    assert count
    assert not found, "%d difference(s) in %d cases, first ones:\n%s" % (
        len(found),
        count,
        "\n".join(repr(item)[:600] for item in found[:8]),
    )


# -- what chat_push itself branches on, in every combination ----------------------------
@pytest.mark.parametrize("queue", ["compiled", "python"])
@pytest.mark.parametrize("cls", list(CLASSES))
def test_push_branches(cls, queue):
    """Data types, queue empty or not (backlog, close sentinel), read handler
    running or not, write limits: every combination, on a connected channel."""
    assert_no_differences(
        Case(
            data=data,
            cls=cls,
            queue=queue,
            backlog=backlog,
            close_pending=close_pending,
            dispatching=dispatching,
            limits=limits,
        )
        for data, backlog, close_pending, dispatching, limits in itertools.product(
            DATA, [False, True], [False, True], [False, True], LIMITS
        )
    )


# -- the channel states the Python push and initiate_send consult -----------------------
@pytest.mark.parametrize("connection", CONNECTIONS)
def test_channel_states(connection):
    """Connection state x socket kind and ac_out_buffer_size chunks x generic
    path x use_encoding x loop semantics, each with and without a backlog."""
    assert_no_differences(
        Case(
            data=data,
            connection=connection,
            sock=sock,
            out_buffer=out_buffer,
            generic=generic,
            use_encoding=use_encoding,
            backlog=backlog,
            use_poll=use_poll,
        )
        for data, sock, out_buffer, generic, use_encoding, backlog, use_poll in itertools.product(
            ["bytes", "big bytes", "empty bytes", "memoryview", "str"],
            ["plain", "subclass"],
            [65536, 7],
            GENERIC,
            [False, True],
            [False, True],
            [False, True],
        )
        # use_encoding changes nothing for bytes: str is the case it is about
        if data == "str" or not use_encoding
    )


# -- any combination of everything above ------------------------------------------------
cases = st.builds(
    Case,
    data=st.sampled_from(list(DATA)),
    cls=st.sampled_from(list(CLASSES)),
    queue=st.sampled_from(["compiled", "python"]),
    backlog=st.booleans(),
    close_pending=st.booleans(),
    dispatching=st.booleans(),
    limits=st.sampled_from(LIMITS),
    connection=st.sampled_from(CONNECTIONS),
    sock=st.sampled_from(["plain", "subclass"]),
    out_buffer=st.sampled_from([65536, 7]),
    generic=st.sampled_from(GENERIC),
    use_encoding=st.booleans(),
    use_poll=st.booleans(),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases)
def test_any_state(case):
    assert_no_differences([case])


def test_eof_drain_switched_off_keeps_the_python_rules():
    """drain_on_eof switched off after the end of file was read, output still
    queued: the channel stays write-only and closes once drained, as the
    Python rule says, instead of the compiled loop treating it as a stock
    channel (read interest, never closed, a busy loop on write events)."""
    side = Side(Case(connection="eof draining, drain_on_eof off", backlog=True))
    try:
        chan = side.chan
        assert chan._af_eof and chan._af_generic_path
        assert asynchat._chat_interest(chan) == _poller.OUT
        assert _loop_c.chat_interest(chan) == -1
        deadline = time.monotonic() + 10
        while b"<EOF>" not in side.received:
            assert time.monotonic() < deadline, "not closed after draining"
            asyncore.loop(0.01, map=side.map, count=1)
            side.read_peer()
        assert side.received == BACKLOG + b"<EOF>"
        assert chan.calls == [("handle_close",)]
    finally:
        side.close()


# -- TLS: push goes through the TLS layer's send ---------------------------------------------
@pytest.fixture(scope="module")
def tls_contexts(tmp_path_factory):
    server, client, _, _ = _certs.contexts(tmp_path_factory.mktemp("tls"))
    return server, client


class TLSPeer(Channel):
    """The client end: gathers the plaintext it receives."""

    def __init__(self, sock, m):
        self.plaintext = bytearray()
        Channel.__init__(self, sock, m)
        self.set_terminator(None)

    def collect_incoming_data(self, data):
        self.plaintext += data


def tls_pair(contexts, handshake_done):
    m: dict = {}
    a, b = socket.socketpair()
    server = Channel(a, m)
    client = TLSPeer(b, m)
    server.start_tls(contexts[0], server_side=True)
    client.start_tls(contexts[1], server_side=False, server_hostname="localhost")
    deadline = time.monotonic() + 10
    while handshake_done and not (server.socket.handshake_complete and client.socket.handshake_complete):
        assert time.monotonic() < deadline, "no TLS handshake"
        asyncore.loop(0.01, map=m, count=1)
    return m, server, client


@pytest.mark.parametrize("handshake_done", [True, False], ids=["established", "handshaking"])
@pytest.mark.parametrize("out_buffer", [65536, 1000])
@pytest.mark.parametrize("data_kind", ["bytes", "big bytes", "bytearray", "memoryview", "empty bytes", "str"])
def test_tls_channel(tls_contexts, data_kind, out_buffer, handshake_done):
    results = []
    for push in (PYTHON_PUSH, COMPILED_PUSH):
        data = DATA[data_kind]()
        m, server, client = tls_pair(tls_contexts, handshake_done)
        try:
            server.ac_out_buffer_size = out_buffer
            del server.calls[:]
            try:
                push(server, data)
                raised = None
            except Exception as exc:
                raised = (type(exc).__name__, str(exc))
            queued = (server._af_queue.buffered, len(server._af_queue), server._af_generic_path)
            expected = b"" if raised else bytes(data)
            deadline = time.monotonic() + 10
            while len(client.plaintext) < len(expected) or server._af_queue:
                assert time.monotonic() < deadline, "TLS output stalled"
                asyncore.loop(0.01, map=m, count=1)
            asyncore.loop(0, map=m, count=1)
            results.append((raised, queued, bytes(client.plaintext), server.calls, client.calls))
        finally:
            asyncore.close_all(m, ignore_all=True)
    assert results[0] == results[1]


# -- what stays different ------------------------------------------------------------------
def test_push_introspects_like_the_python_method():
    chan = Channel(None, {})
    for attribute in ("__name__", "__qualname__", "__module__", "__doc__"):
        assert getattr(COMPILED_PUSH, attribute) == getattr(PYTHON_PUSH, attribute)
    assert repr(chan.push).startswith("<bound method async_chat.push of ")


def test_get_data_twin_outside_a_read():
    # async_chat._get_data is the compiled twin too; away from the channel's
    # own read it is self._af_scanner.get_data(), errors included
    compiled = asynchat.async_chat._get_data
    python = asynchat.async_chat._af_python_get_data
    assert compiled is not python
    for attribute in ("__name__", "__qualname__", "__module__", "__doc__"):
        assert getattr(compiled, attribute) == getattr(python, attribute)
    for get_data in (python, compiled):
        chan = Channel(None, {})
        chan.incoming.extend([b"ab", b"cd"])
        assert get_data(chan) == b"abcd" and chan.incoming == []
        assert get_data(chan) == b""
    outcomes = []
    for get_data in (python, compiled):
        chan = Channel(None, {})
        chan._af_scanner = None
        for target in (chan, object()):
            with pytest.raises(AttributeError) as caught:
                get_data(target)
            outcomes.append(str(caught.value))
    assert outcomes[:2] == outcomes[2:]
    with pytest.raises(TypeError):
        compiled()
    with pytest.raises(TypeError):
        compiled(Channel(None, {}), 1)
    with pytest.raises(ValueError, match="no compiled twin"):
        _loop_c.compiled_method(test_get_data_twin_outside_a_read)


def test_wrong_argument_count_is_a_type_error_on_both():
    # Cython words its argument-count errors its own way: only the type is the same
    chan = Channel(None, {})
    for push in (PYTHON_PUSH, COMPILED_PUSH):
        with pytest.raises(TypeError):
            push(chan)
        with pytest.raises(TypeError):
            push(chan, b"a", b"b")
    assert not chan._af_queue
