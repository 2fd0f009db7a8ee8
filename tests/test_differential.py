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

from framing_scenarios import (
    KEEP,
    Boom,
    CallbackTarget,
    CollectTarget,
    FramesTarget,
    byte_terminators,
    reference_frames,
    run_core,
    run_reference,
    scenarios,
    streams,
    terminators,
)

pytestmark = pytest.mark.timeout(300)

SETTINGS = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


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
    sc = {"term": term, "chunks": chunks, "script": [], "external": [KEEP] * len(chunks), "collect_raises": set()}
    ref_events, ref_buffer, _ = run_reference(ref_asynchat, sc)
    events, scanner = run_core(core, core.MODE_CALLBACKS, CallbackTarget, sc)
    assert events == ref_events
    assert scanner.pending == ref_buffer


@SETTINGS
@given(data=streams, term=terminators, script=st.lists(st.tuples(terminators, st.just(None)), max_size=40))
def test_one_byte_reads_match_asynchat(core, ref_asynchat, data, term, script):
    chunks = [data[i : i + 1] for i in range(len(data))]
    sc = {"term": term, "chunks": chunks, "script": script, "external": [KEEP] * len(chunks), "collect_raises": set()}
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
    st.tuples(st.sampled_from(["clear", "raise", "get_data", "reenter", "stop", "none", "none"]), st.none()),
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
                    buf[: len(data)] = data
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
