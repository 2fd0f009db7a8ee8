"""Property tests: both cores against the reference asynchat, and against each other.

The reference is the real ``asynchat.async_chat.handle_read``, fed without a
socket (``recv`` is overridden to return the next chunk).  For the same
stream, the same chunking and the same terminator changes (made from
``found_terminator`` by a pre-drawn script, or between reads), the cores must
produce:

(a) in MODE_CALLBACKS the exact event list (every ``collect_incoming_data``
    chunk, every ``found_terminator``, the terminator seen at each), the same
    held-back bytes (``pending`` vs ``ac_in_buffer``) and the same terminator;
(b) in MODE_COLLECT and MODE_FRAMES the same per-frame data;
(c) compiled and pure twins: the same everything, also for what asynchat has
    no counterpart for (mode switches, terminator changes from
    collect_incoming_data, bytearray/memoryview input, get_buffer(), stop(),
    max_frame).

Some reads are empty: asynchat runs its scanning loop on an empty read too,
which matters when the terminator was changed while bytes were held back.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.timeout(300)

SETTINGS = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

KEEP = "keep"  # script entry: leave the terminator as it is


class Boom(Exception):
    """Raised from a callback on the script's request."""


# -- strategies ----------------------------------------------------------------------

# Terminators are drawn from the same few bytes the streams are made of, so
# they occur densely, overlap themselves (b"aa", b"abab") and split often.
TERM_BYTES = [b"a", b"b", b"\r", b"\n", b"."]
PIECES = [b"a", b"b", b"\r", b"\n", b"\r\n", b"ab", b"aab", b"\r\n.\r\n", b".", b"xyz"]

byte_terminators = st.lists(st.sampled_from(TERM_BYTES), min_size=1, max_size=4).map(b"".join)
int_terminators = st.one_of(st.integers(1, 8), st.integers(9, 400))
null_terminators = st.sampled_from([None, 0, b""])
terminators = st.one_of(byte_terminators, byte_terminators, int_terminators, null_terminators)

streams = st.lists(
    st.one_of(st.sampled_from(PIECES), st.binary(max_size=6)), max_size=80
).map(b"".join)

# what found_terminator does: (new terminator or KEEP, then clear()/raise or nothing)
actions = st.tuples(
    st.one_of(st.just(KEEP), terminators),
    st.sampled_from([None, None, None, None, None, "clear", "raise"]),
)


@st.composite
def chunkings(draw, data):
    """Non-empty chunks that join to *data*: whole, 1-byte, small or random cuts."""
    n = len(data)
    if n == 0:
        return []
    kind = draw(st.sampled_from(["random", "random", "one", "small", "whole"]))
    if kind == "whole":
        cuts = []
    elif kind == "one":
        cuts = list(range(1, n))
    elif kind == "small":
        cuts, pos = [], 0
        while True:
            pos += draw(st.integers(1, 3))
            if pos >= n:
                break
            cuts.append(pos)
    else:
        cuts = sorted(set(draw(st.lists(st.integers(1, max(1, n - 1)), max_size=24))))
        cuts = [c for c in cuts if 0 < c < n]
    bounds = [0] + cuts + [n]
    chunks = [data[a:b] for a, b in zip(bounds, bounds[1:])]
    # now and then an empty read (asynchat scans what it holds even then)
    for index in sorted(draw(st.sets(st.integers(0, len(chunks)), max_size=3)), reverse=True):
        chunks.insert(index, b"")
    return chunks


@st.composite
def scenarios(draw, collect_raises=True):
    """Everything one differential run needs."""
    data = draw(streams)
    chunks = draw(chunkings(data))
    return {
        "term": draw(terminators),
        "chunks": chunks,
        "script": draw(st.lists(actions, max_size=40)),
        # terminator set from outside before each read (KEEP: none)
        "external": draw(st.lists(
            st.one_of(st.just(KEEP), st.just(KEEP), st.just(KEEP), terminators),
            min_size=len(chunks), max_size=len(chunks),
        )),
        # collect_incoming_data raises on these calls (1-based)
        "collect_raises": (
            draw(st.sets(st.integers(1, 30), max_size=3)) if collect_raises else set()
        ),
    }


# -- the reference ----------------------------------------------------------------------

_ref_classes = {}


def reference_class(asynchat):
    """An async_chat without a socket: ``recv`` returns the chunk being read."""
    cls = _ref_classes.get(asynchat)
    if cls is not None:
        return cls

    class RefChat(asynchat.async_chat):
        def __init__(self, term, script, collect_raises):
            asynchat.async_chat.__init__(self, sock=None, map={})
            self.set_terminator(term)
            self.events = []
            self.script = list(script)
            self.collect_raises = collect_raises
            self.collects = 0
            self.chunk = b""

        def recv(self, buffer_size):
            return self.chunk

        def collect_incoming_data(self, data):
            self.events.append(("data", bytes(data), self.get_terminator()))
            self.collects += 1
            if self.collects in self.collect_raises:
                raise Boom

        def found_terminator(self):
            self.events.append(("found", self.get_terminator()))
            if self.script:
                term, extra = self.script.pop(0)
                if term is not KEEP:
                    self.set_terminator(term)
                if extra == "clear":
                    self.ac_in_buffer = b""
                elif extra == "raise":
                    raise Boom

        def read(self, chunk, external):
            if external is not KEEP:
                self.set_terminator(external)
            self.chunk = chunk
            try:
                self.handle_read()
            except Boom:
                self.events.append(("raised",))

    _ref_classes[asynchat] = RefChat
    return RefChat


def run_reference(asynchat, sc):
    chat = reference_class(asynchat)(sc["term"], sc["script"], sc["collect_raises"])
    for chunk, external in zip(sc["chunks"], sc["external"]):
        chat.read(chunk, external)
    return chat.events, chat.ac_in_buffer, chat.get_terminator()


# -- the cores, driven the same way -----------------------------------------------------------


class CallbackTarget:
    def __init__(self, scanner, script, collect_raises):
        self.scanner = scanner
        self.events = []
        self.script = list(script)
        self.collect_raises = collect_raises
        self.collects = 0

    def collect_incoming_data(self, data):
        assert type(data) is bytes
        self.events.append(("data", data, self.scanner.terminator))
        self.collects += 1
        if self.collects in self.collect_raises:
            raise Boom

    def found_terminator(self):
        self.events.append(("found", self.scanner.terminator))
        self.act()

    def act(self):
        if self.script:
            term, extra = self.script.pop(0)
            if term is not KEEP:
                self.scanner.set_terminator(term)
            if extra == "clear":
                self.scanner.clear()
            elif extra == "raise":
                raise Boom


class CollectTarget(CallbackTarget):
    def found_terminator(self):
        self.events.append(("frame", self.scanner.get_data()))
        self.act()


class FramesTarget(CallbackTarget):
    def __init__(self, scanner, script, collect_raises):
        CallbackTarget.__init__(self, scanner, script, collect_raises)
        self.framed = bool(scanner.terminator)

    def frame_received(self, frame):
        assert type(frame) is bytes
        if self.framed:
            # a frame closed by the terminator: asynchat's found_terminator
            self.events.append(("frame", frame))
            try:
                self.act()
            finally:
                self.framed = bool(self.scanner.terminator)
        else:
            # no terminator: a chunk of stream data (asynchat collects it)
            self.events.append(("chunk", frame))


def run_core(core, mode, target_cls, sc):
    scanner = core.FrameScanner(mode)
    scanner.set_terminator(sc["term"])
    target = target_cls(scanner, sc["script"], sc["collect_raises"])
    for chunk, external in zip(sc["chunks"], sc["external"]):
        if external is not KEEP:
            scanner.set_terminator(external)
            if isinstance(target, FramesTarget):
                target.framed = bool(scanner.terminator)
        try:
            scanner.feed(target, chunk)
        except Boom:
            target.events.append(("raised",))
    return target.events, scanner


def reference_frames(events, frames_mode):
    """Reduce asynchat events to what MODE_COLLECT / MODE_FRAMES report."""
    out, current = [], []
    for event in events:
        if event[0] == "data":
            if frames_mode and not event[2]:
                out.append(("chunk", b"".join(current) + event[1]))
                current = []
            else:
                current.append(event[1])
        elif event[0] == "found":
            out.append(("frame", b"".join(current)))
            current = []
        else:
            out.append(event)
    return out, b"".join(current)


# -- (a) MODE_CALLBACKS: the exact event list -----------------------------------------------------


@SETTINGS
@given(sc=scenarios())
def test_callbacks_match_asynchat(core, ref_asynchat, sc):
    ref_events, ref_buffer, ref_term = run_reference(ref_asynchat, sc)
    events, scanner = run_core(core, core.MODE_CALLBACKS, CallbackTarget, sc)
    assert events == ref_events
    assert scanner.pending == ref_buffer
    assert scanner.terminator == ref_term
    assert type(scanner.terminator) is type(ref_term)


@SETTINGS
@given(data=streams, term=byte_terminators, split=st.integers(0, 400))
def test_two_reads_any_split_match_asynchat(core, ref_asynchat, data, term, split):
    # the simplest case at every split point: one terminator, two reads
    assume(data)
    split = split % len(data)
    chunks = [c for c in (data[:split], data[split:]) if c]
    sc = {"term": term, "chunks": chunks, "script": [], "external": [KEEP] * len(chunks),
          "collect_raises": set()}
    ref_events, ref_buffer, _ = run_reference(ref_asynchat, sc)
    events, scanner = run_core(core, core.MODE_CALLBACKS, CallbackTarget, sc)
    assert events == ref_events
    assert scanner.pending == ref_buffer


@SETTINGS
@given(data=streams, term=terminators, script=st.lists(st.tuples(terminators, st.just(None)), max_size=40))
def test_one_byte_reads_match_asynchat(core, ref_asynchat, data, term, script):
    chunks = [data[i:i + 1] for i in range(len(data))]
    sc = {"term": term, "chunks": chunks, "script": script, "external": [KEEP] * len(chunks),
          "collect_raises": set()}
    ref_events, ref_buffer, ref_term = run_reference(ref_asynchat, sc)
    events, scanner = run_core(core, core.MODE_CALLBACKS, CallbackTarget, sc)
    assert events == ref_events
    assert scanner.pending == ref_buffer
    assert scanner.terminator == ref_term


# -- (b) MODE_COLLECT / MODE_FRAMES: the same frames -------------------------------------------------


@SETTINGS
@given(sc=scenarios(collect_raises=False))
def test_collect_and_frames_match_asynchat(core, ref_asynchat, sc):
    ref_events, ref_buffer, ref_term = run_reference(ref_asynchat, sc)

    expected, rest = reference_frames(ref_events, frames_mode=False)
    events, scanner = run_core(core, core.MODE_COLLECT, CollectTarget, sc)
    assert events == expected
    assert scanner.get_data() == rest
    assert scanner.pending == ref_buffer
    assert scanner.terminator == ref_term

    expected, rest = reference_frames(ref_events, frames_mode=True)
    events, scanner = run_core(core, core.MODE_FRAMES, FramesTarget, sc)
    assert events == expected
    assert b"".join(scanner.incoming) == rest
    assert scanner.pending == ref_buffer
    assert scanner.terminator == ref_term


# -- (c) the twins agree, asynchat or not --------------------------------------------------------


class TwinTarget:
    """Records everything and runs a scripted action at every callback."""

    def __init__(self, core, scanner, script):
        self.core = core
        self.scanner = scanner
        self.log = []
        self.script = list(script)

    def _act(self):
        if not self.script:
            return
        what, arg = self.script.pop(0)
        scanner = self.scanner
        if what == "term":
            scanner.set_terminator(arg)
        elif what == "mode":
            scanner.mode = arg
        elif what == "clear":
            scanner.clear()
        elif what == "raise":
            raise Boom
        elif what == "get_data":
            self.log.append(("got", scanner.get_data()))
        elif what == "stop":
            scanner.stop()
        elif what == "max_frame":
            scanner.max_frame = arg
        elif what == "reenter":
            try:
                scanner.feed(self, b"x")
            except RuntimeError:
                self.log.append(("refused",))

    def _state(self):
        s = self.scanner
        return (s.terminator, s.mode, list(s.incoming))

    def collect_incoming_data(self, data):
        self.log.append(("data", data, self._state()))
        self._act()

    def found_terminator(self):
        self.log.append(("found", self._state()))
        self._act()

    def frame_received(self, frame):
        self.log.append(("frame", frame, self._state()))
        self._act()

    def frame_too_large(self, size):
        self.log.append(("too_large", size, self._state()))
        self._act()


twin_actions = st.one_of(
    st.tuples(st.just("term"), terminators),
    st.tuples(st.just("mode"), st.sampled_from([0, 1, 2])),
    st.tuples(st.sampled_from(["clear", "raise", "get_data", "reenter", "stop", "none", "none"]),
              st.none()),
    st.tuples(st.just("max_frame"), st.sampled_from([0, 1, 3, 10, 50])),
)

twin_ops = st.one_of(
    st.tuples(st.just("feed"), st.sampled_from(["bytes", "bytearray", "memoryview", "buffer"]), streams),
    st.tuples(st.just("term"), terminators, st.none()),
    st.tuples(st.just("mode"), st.sampled_from([0, 1, 2]), st.none()),
    st.tuples(st.sampled_from(["clear", "get_data", "process"]), st.none(), st.none()),
    st.tuples(st.just("max_frame"), st.sampled_from([0, 0, 1, 3, 10, 50]), st.none()),
)


def run_twin(core, mode, term, ops, script):
    scanner = core.FrameScanner(mode)
    scanner.set_terminator(term)
    target = TwinTarget(core, scanner, script)
    for op, arg, data in ops:
        if op == "feed":
            try:
                if arg == "buffer":
                    buf = scanner.get_buffer(len(data))
                    buf[:len(data)] = data
                    del buf
                    scanner.buffer_updated(target, len(data))
                elif arg == "bytearray":
                    scanner.feed(target, bytearray(data))
                elif arg == "memoryview":
                    scanner.feed(target, memoryview(b"!" + data + b"!")[1:-1])
                else:
                    scanner.feed(target, data)
            except Boom:
                target.log.append(("raised",))
        elif op == "term":
            scanner.set_terminator(arg)
        elif op == "mode":
            scanner.mode = arg
        elif op == "clear":
            scanner.clear()
        elif op == "max_frame":
            scanner.max_frame = arg
        elif op == "process":
            try:
                scanner.process(target)
            except Boom:
                target.log.append(("raised",))
        else:
            target.log.append(("got", scanner.get_data()))
        target.log.append(("after", scanner.pending, target._state()))
    return target.log


@SETTINGS
@given(
    mode=st.sampled_from([0, 1, 2]),
    term=terminators,
    ops=st.lists(twin_ops, max_size=20),
    script=st.lists(twin_actions, max_size=40),
)
def test_twins_agree(both_cores, mode, term, ops, script):
    c_core, py_core = both_cores
    c_log = run_twin(c_core, mode, term, ops, script)
    py_log = run_twin(py_core, mode, term, ops, script)
    assert c_log == py_log


@SETTINGS
@given(sc=scenarios())
def test_twins_agree_on_asynchat_scenarios(both_cores, sc):
    c_core, py_core = both_cores
    for mode, cls in ((0, CallbackTarget), (1, CollectTarget), (2, FramesTarget)):
        c_events, c_scanner = run_core(c_core, mode, cls, sc)
        py_events, py_scanner = run_core(py_core, mode, cls, sc)
        assert c_events == py_events
        assert c_scanner.pending == py_scanner.pending
        assert c_scanner.terminator == py_scanner.terminator
        assert c_scanner.incoming == py_scanner.incoming
