"""asynframe.asynchat's API and the internals legacy code reads.

``ac_in_buffer`` (held-back bytes), ``incoming`` (the list
``_collect_incoming_data`` appends to), an int ``terminator`` counting down,
``producer_fifo`` (a snapshot), ``set_terminator`` before
``async_chat.__init__``, a class-attribute ``terminator``, ``frame_received``,
the delivery mode picked from the subclass' style, coalesced pushes,
``close_when_done``, ``discard_buffers``, ``use_encoding``, the ``push``
type check and ``simple_producer``.

Tests marked with the ``impl`` fixture run the same assertions on the
reference asynchat too (the stdlib's on <= 3.11, the pyasynchat backport on
3.12+, skipped when missing): the expectations are the stdlib's meaning, not
ours.  The rest check what only asynframe has (``_af_queue.stats``, modes).

Both cores: ``asynframe.asynchat`` binds its framing core when ``asynframe``
is first imported, so one process tests one core (the compiled one unless
``ASYNFRAME_NO_EXTENSIONS`` is set); the file is marked ``api_layer``, so a
second pytest command of the README runs it again with the pure core
forced (tests/conftest.py).
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections import deque

import pytest

import asynframe
from asynframe import _core, asynchat, asyncore

from support import NO_EXTENSIONS, load_reference_asynchat

HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))

pytestmark = [pytest.mark.api_layer, pytest.mark.timeout(30)]


class Impl:
    def __init__(self, name, asynchat_mod):
        self.name = name
        self.asynchat = asynchat_mod
        self.asyncore = asynchat_mod.asyncore


@pytest.fixture(params=["asynframe", "reference"])
def impl(request):
    """asynframe's asynchat, then the reference one (same assertions)."""
    if request.param == "asynframe":
        return Impl("asynframe", asynchat)
    ref = load_reference_asynchat()
    if ref is None:
        pytest.skip("reference asynchat unavailable")
    return Impl("reference", ref)


class Pair:
    """A channel of *cls* on one end of a socketpair; the test drives the peer."""

    def __init__(self, impl_or_mods, cls, *args):
        self.asyncore = impl_or_mods.asyncore if isinstance(impl_or_mods, Impl) else asyncore
        self.map = {}
        a, self.peer = socket.socketpair()
        self.peer.settimeout(5)
        self.chan = cls(a, self.map, *args)

    def send(self, data):
        """Peer sends *data*; one loop iteration reads it (one recv)."""
        self.peer.sendall(data)
        self.asyncore.loop(1.0, map=self.map, count=1)

    def loop(self, count=1, timeout=0.05):
        self.asyncore.loop(timeout, map=self.map, count=count)

    def recv_exactly(self, n):
        buf = bytearray()
        deadline = time.monotonic() + 10
        while len(buf) < n:
            assert time.monotonic() < deadline
            self.loop(1, 0.01)
            self.peer.settimeout(0.05)
            try:
                got = self.peer.recv(n - len(buf))
            except socket.timeout:
                continue
            assert got, "EOF after %d of %d bytes" % (len(buf), n)
            buf += got
        return bytes(buf)

    def close(self):
        self.asyncore.close_all(self.map, ignore_all=True)
        self.peer.close()


@pytest.fixture
def pairs():
    made = []

    def make(*args):
        pair = Pair(*args)
        made.append(pair)
        return pair

    yield make
    for pair in made:
        pair.close()


def logging_class(mod, term=b"\r\n"):
    class Logging(mod.async_chat):
        def __init__(self, sock, m):
            mod.async_chat.__init__(self, sock, m)
            self.set_terminator(term)
            self.log = []

        def collect_incoming_data(self, data):
            self.log.append(("collect", bytes(data)))

        def found_terminator(self):
            self.log.append(("found", self.get_terminator()))

    return Logging


# -- ac_in_buffer, incoming, terminator ----------------------------------------------
def test_ac_in_buffer_holds_back_a_split_terminator(impl, pairs):
    p = pairs(impl, logging_class(impl.asynchat))
    chan = p.chan
    p.send(b"abc\r")
    assert chan.log == [("collect", b"abc")]
    assert chan.ac_in_buffer == b"\r"
    p.send(b"\ndef")
    assert chan.log[1:] == [("found", b"\r\n"), ("collect", b"def")]
    assert chan.ac_in_buffer == b""
    chan.set_terminator(b"END!")
    p.send(b"xxEN")
    assert chan.log[3:] == [("collect", b"xx")]
    assert chan.ac_in_buffer == b"EN"
    # assigning it drops the held bytes, as in asynchat
    chan.ac_in_buffer = b""
    p.send(b"D!yy")
    assert chan.log[4:] == [("collect", b"D!yy")]


def test_incoming_is_the_list_collect_appends_to(impl, pairs):
    mod = impl.asynchat
    seen = []

    class Collecting(mod.async_chat):
        collect_incoming_data = mod.async_chat._collect_incoming_data

        def __init__(self, sock, m):
            mod.async_chat.__init__(self, sock, m)
            self.set_terminator(b"\n")

        def found_terminator(self):
            seen.append(list(self.incoming))
            seen.append(self._get_data())
            seen.append(list(self.incoming))

    p = pairs(impl, Collecting)
    p.send(b"abc")
    assert p.chan.incoming == [b"abc"]
    p.send(b"def\nghi")
    assert seen == [[b"abc", b"def"], b"abcdef", []]
    assert p.chan.incoming == [b"ghi"]
    p.chan.incoming = []  # legacy code resets it
    p.send(b"jk\n")
    assert seen[3:] == [[b"jk"], b"jk", []]


def test_int_terminator_counts_down(impl, pairs):
    mod = impl.asynchat
    p = pairs(impl, logging_class(mod, 10))
    chan = p.chan
    p.send(b"1234")
    assert chan.get_terminator() == 6 and chan.terminator == 6
    assert chan.log == [("collect", b"1234")]
    p.send(b"567890abc")
    # the count reached 0 before found_terminator; then no framing at all
    assert chan.log[1:] == [("collect", b"567890"), ("found", 0), ("collect", b"abc")]
    assert chan.get_terminator() == 0
    with pytest.raises(ValueError):
        chan.set_terminator(-1)


def test_set_terminator_before_async_chat_init(impl, pairs):
    mod = impl.asynchat

    class Legacy(mod.async_chat):
        def __init__(self, sock, m):
            self.set_terminator(b";")  # before the base __init__, as old code did
            self.frames = []
            self.buf = b""
            mod.async_chat.__init__(self, sock, m)

        def collect_incoming_data(self, data):
            self.buf += data

        def found_terminator(self):
            self.frames.append(self.buf)
            self.buf = b""

    p = pairs(impl, Legacy)
    assert p.chan.get_terminator() == b";" and p.chan.terminator == b";"
    p.send(b"a;bb;c")
    assert p.chan.frames == [b"a", b"bb"] and p.chan.buf == b"c"


def test_terminator_as_class_attribute(impl, pairs):
    mod = impl.asynchat

    class Base(mod.async_chat):
        terminator = b"\n"  # asynchat has no default; legacy classes give one here

        def __init__(self, sock, m):
            mod.async_chat.__init__(self, sock, m)
            self.frames, self.buf = [], b""

        def collect_incoming_data(self, data):
            self.buf += data

        def found_terminator(self):
            self.frames.append(self.buf)
            self.buf = b""

    class Sub(Base):
        pass

    for cls in (Base, Sub):
        p = pairs(impl, cls)
        assert p.chan.get_terminator() == b"\n"
        p.send(b"one\ntwo\nthr")
        assert p.chan.frames == [b"one", b"two"]
        p.chan.terminator = b"|"  # plain attribute assignment still frames
        p.send(b"ee|four\n|")
        assert p.chan.frames == [b"one", b"two", b"three", b"four\n"]


# -- output: producer_fifo, close_when_done, discard_buffers ------------------------------
def unconnected(mod, cls=None):
    chan = (cls or mod.async_chat)(map={})
    chan.create_socket(socket.AF_INET, socket.SOCK_STREAM)
    return chan


def test_producer_fifo_reflects_the_queue(impl):
    mod = impl.asynchat
    chan = unconnected(mod)
    try:
        chan.push(b"a")
        chan.push(b"bc")
        assert list(chan.producer_fifo) == [b"a", b"bc"]
        producer = mod.simple_producer(b"xyz")
        chan.push_with_producer(producer)
        chan.close_when_done()
        assert list(chan.producer_fifo) == [b"a", b"bc", producer, None]
        chan.producer_fifo = deque([b"q"])
        assert list(chan.producer_fifo) == [b"q"]
        assert chan.writable()
    finally:
        chan.close()


def test_producer_fifo_is_a_snapshot():
    chan = unconnected(asynchat)
    try:
        chan.push(b"a")
        fifo = chan.producer_fifo
        assert isinstance(fifo, deque)
        fifo.append(b"ignored")
        fifo.popleft()
        assert list(chan.producer_fifo) == [b"a"]
    finally:
        chan.close()


def test_producer_fifo_shows_the_unsent_rest(pairs):
    p = pairs(asyncore, asynchat.async_chat)
    p.chan.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    data = bytes(range(256)) * 4096  # 1 MB: more than the socket takes
    p.chan.push(data)
    rest = b"".join(p.chan.producer_fifo)
    assert 0 < len(rest) < len(data)
    assert data.endswith(rest)
    got = p.recv_exactly(len(data))
    assert got == data and list(p.chan.producer_fifo) == []


def test_producer_fifo_assigned_outside_a_handler_is_sent(pairs):
    p = pairs(asyncore, asynchat.async_chat)
    p.loop(2)  # idle: registered for reading only
    p.chan.producer_fifo = deque([b"late ", asynchat.simple_producer(b"data", 2)])
    assert p.recv_exactly(9) == b"late data"


@pytest.mark.timeout(60)
def test_close_when_done_sends_everything_then_closes(impl, pairs):
    mod = impl.asynchat
    closes = []

    class Closing(mod.async_chat):
        def handle_close(self):
            closes.append(1)
            self.close()

    p = pairs(impl, Closing)
    p.chan.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    pieces = [os.urandom(65536) for _ in range(64)]  # 4 MB
    for piece in pieces:
        p.chan.push(piece)
    p.chan.push_with_producer(mod.simple_producer(b"tail" * 1000, 333))
    p.chan.close_when_done()
    expected = b"".join(pieces) + b"tail" * 1000
    # a slow reader: 16 KB per loop iteration
    h, n = hashlib.sha256(), 0
    p.peer.setblocking(False)
    deadline = time.monotonic() + 50
    while True:
        assert time.monotonic() < deadline, "stalled after %d bytes" % n
        p.loop(1, 0.01)
        try:
            chunk = p.peer.recv(16384)
        except BlockingIOError:
            continue
        if not chunk:
            break
        h.update(chunk)
        n += len(chunk)
        if n < len(expected):
            assert p.chan.socket.fileno() != -1, "closed before everything was sent"
    assert n == len(expected)
    assert h.hexdigest() == hashlib.sha256(expected).hexdigest()
    assert closes == [1] and p.map == {}


def test_discard_buffers(impl, pairs):
    mod = impl.asynchat
    p = pairs(impl, logging_class(mod, b"\r\n"))
    chan = p.chan
    chan.collect_incoming_data = chan._collect_incoming_data
    p.send(b"part\r")
    assert chan.incoming and chan.ac_in_buffer == b"\r"
    chan.connected = False  # hold output back
    chan.push(b"queued")
    assert chan.producer_fifo
    chan.discard_buffers()
    assert chan.ac_in_buffer == b"" and chan.incoming == [] and not chan.producer_fifo
    chan.connected = True
    p.send(b"\nnew\r\n")  # the dropped "\r" no longer ends a line
    assert chan.log == [("found", b"\r\n")]
    assert chan._get_data() == b"\nnew"


# -- str and type checks --------------------------------------------------------------------
def test_use_encoding_str_terminator_and_producer(impl, pairs):
    mod = impl.asynchat

    class Text(mod.async_chat):
        use_encoding = 1
        encoding = "latin-1"

        def __init__(self, sock, m):
            mod.async_chat.__init__(self, sock, m)
            self.set_terminator("\r\n")
            self.frames, self.buf = [], b""

        def collect_incoming_data(self, data):
            self.buf += data

        def found_terminator(self):
            self.frames.append(self.buf)
            self.buf = b""

    class StrProducer:
        def __init__(self, parts):
            self.parts = list(parts)

        def more(self):
            return self.parts.pop(0) if self.parts else ""

    p = pairs(impl, Text)
    assert p.chan.get_terminator() == b"\r\n"
    p.send("caf\xe9\r\n".encode("latin-1"))
    assert p.chan.frames == [b"caf\xe9"]
    p.chan.push_with_producer(StrProducer(["h\xe9", "llo", "\r\n"]))
    assert p.recv_exactly(7) == b"h\xe9llo\r\n"


def test_push_rejects_non_bytes(impl):
    chan = unconnected(impl.asynchat)
    try:
        for bad in ("text", 42, None, ["b"]):
            with pytest.raises(TypeError):
                chan.push(bad)
        assert not chan.producer_fifo
        chan.push(bytearray(b"ba"))
        chan.push(memoryview(b"mv"))
        assert b"".join(bytes(x) for x in chan.producer_fifo) == b"bamv"
    finally:
        chan.close()


def test_simple_producer(impl, pairs):
    mod = impl.asynchat
    prod = mod.simple_producer(b"x" * 1000, buffer_size=300)
    assert [len(prod.more()) for _ in range(5)] == [300, 300, 300, 100, 0]
    assert len(mod.simple_producer(b"abc").more()) == 3  # default buffer_size 512
    data = os.urandom(5000)
    p = pairs(impl, mod.async_chat)
    p.chan.push_with_producer(mod.simple_producer(data, 128))
    assert p.recv_exactly(len(data)) == data


# -- asynframe only: frames mode, modes, push coalescing ---------------------------------------
def test_frame_received_hook(pairs):
    class Frames(asynchat.async_chat):
        def __init__(self, sock, m):
            asynchat.async_chat.__init__(self, sock, m)
            self.set_terminator(b"\r\n")
            self.frames = []

        def frame_received(self, frame):
            self.frames.append(bytes(frame))
            if frame == b"LEN":
                self.set_terminator(4)
            elif self.get_terminator() == 0:
                self.set_terminator(b"\r\n")

    p = pairs(asyncore, Frames)
    assert p.chan._af_scanner.mode == _core.MODE_FRAMES
    p.send(b"one\r\ntw")
    assert p.chan.frames == [b"one"]
    p.send(b"o\r\nLEN\r\nab")
    assert p.chan.frames == [b"one", b"two", b"LEN"]
    p.send(b"\r\nxthree\r\n")
    assert p.chan.frames == [b"one", b"two", b"LEN", b"ab\r\n", b"xthree"]


def test_mode_follows_the_subclass_style():
    class Callbacks(asynchat.async_chat):
        def collect_incoming_data(self, data):
            pass

        def found_terminator(self):
            pass

    class Collect(asynchat.async_chat):
        collect_incoming_data = asynchat.async_chat._collect_incoming_data

        def found_terminator(self):
            self._get_data()

    class Frames(asynchat.async_chat):
        def frame_received(self, frame):
            pass

    class FramesToo(Frames, Callbacks):  # frame_received wins
        pass

    class CollectChild(Collect):
        pass

    expected = {
        Callbacks: _core.MODE_CALLBACKS,
        Collect: _core.MODE_COLLECT,
        CollectChild: _core.MODE_COLLECT,
        Frames: _core.MODE_FRAMES,
        FramesToo: _core.MODE_FRAMES,
    }
    for cls, mode in expected.items():
        chan = cls(map={})
        assert chan._af_scanner.mode == mode, cls.__name__


def test_pushes_inside_found_terminator_are_coalesced(pairs):
    class Reply(asynchat.async_chat):
        def __init__(self, sock, m):
            asynchat.async_chat.__init__(self, sock, m)
            self.set_terminator(b"\n")
            self.buf = []

        def collect_incoming_data(self, data):
            self.buf.append(data)

        def found_terminator(self):
            self.push(b"re: " + b"".join(self.buf) + b"\n")
            self.buf = []

    p = pairs(asyncore, Reply)
    lines = [b"line %d" % i for i in range(20)]
    p.send(b"".join(line + b"\n" for line in lines))
    # 20 pushes while handling one read: one send when the handler returns
    assert p.chan._af_queue.stats == (20, 1)
    expected = b"".join(b"re: " + line + b"\n" for line in lines)
    assert p.recv_exactly(len(expected)) == expected


def test_push_outside_a_callback_sends_at_once(pairs):
    p = pairs(asyncore, asynchat.async_chat)
    p.chan.push(b"now")
    assert p.chan._af_queue.stats == (1, 1)
    p.peer.settimeout(2)
    assert p.peer.recv(10) == b"now"  # the loop never ran
    p.chan.push(b"again")
    assert p.chan._af_queue.stats == (2, 2)
    assert p.peer.recv(10) == b"again"


def test_str_terminator_needs_use_encoding():
    chan = asynchat.async_chat(map={})
    with pytest.raises(TypeError):
        chan.set_terminator("\n")
    chan.set_terminator(b"\n")
    assert chan.get_terminator() == b"\n"


# -- both cores ------------------------------------------------------------------------
def test_core_matches_environment():
    if NO_EXTENSIONS:
        assert not asynframe.USING_C_CORE
    assert type(asynchat.async_chat(map={})._af_scanner).__module__.endswith(
        "._core_c" if asynframe.USING_C_CORE else "._scanner_py"  # the pure scanner's own module
    )


# -- the modules' namespaces -----------------------------------------------------------
# Names only the stdlib modules have for their own deprecation warning.
# (3.10's asynchat also imports warnings.warn for it; dunders differ by
# packaging: the pyasynchat backport is a package, with __path__)
STDLIB_ONLY = {"_DEPRECATION_MSG", "_deprecated", "warn"}


def test_every_stdlib_module_name_is_there():
    # Code written for asyncore/asynchat reads module attributes too
    # (asyncore.ECONNRESET, asyncore._exception in CPython's test_asyncore,
    # asyncore.select): every name the stdlib modules have, asynframe's have.
    ref = load_reference_asynchat()
    if ref is None:
        pytest.skip("no reference asynchat/asyncore (pip install pyasynchat on 3.12+)")
    for ours, theirs in ((asynchat, ref), (asyncore, ref.asyncore)):
        missing = sorted(
            name
            for name in set(dir(theirs)) - set(dir(ours)) - STDLIB_ONLY
            if not (name.startswith("__") and name.endswith("__"))
        )
        assert not missing, "%s lacks %s" % (ours.__name__, missing)
