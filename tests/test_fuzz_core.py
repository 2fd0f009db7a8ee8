"""Fuzzing the framing core as a pipeline: scanner -> frames -> push queue -> socket.

``test_differential.py`` holds each twin to asynchat and the scanner and the
queue to each other separately.  Here random operation sequences drive both
at once, the way a server does: chunks are fed (bytes, bytearray,
memoryview, ``get_buffer``), the terminator changes between reads (bytes,
int, None), ``max_frame`` changes, callbacks ``stop()`` the scan and
``process()`` resumes it; every frame is echoed into a ``PushQueue``, next to
direct pushes, producers and close sentinels, and the queue is sent in
partial sends to a socketpair with small buffers while the peer reads bits.

Checked for each core, by a model independent of both:

* conservation: bytes fed = bytes delivered + terminator bytes consumed +
  bytes held (``pending`` + ``incoming``) + bytes dropped by ``max_frame``;
* with one byte terminator and no limit, the frames are exactly
  ``stream.split(terminator)[:-1]`` and the rest is held;
* with ``max_frame`` set, the bytes held never exceed the limit plus one read;
* the queue: ``buffered`` equals queued-minus-sent at every step, the peer
  receives a prefix of what was queued, and after draining exactly all of it;

and the compiled and pure twins produce the same log.  Bounded: a few
hundred examples, well under a minute.  ``tests/fuzz/fuzz_core.py`` is the
same pipeline as an atheris target for long unattended runs.
"""

from __future__ import annotations

import importlib
import os
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz"))
from pipeline import OPS_HELP, run_pipeline  # noqa: E402

pytestmark = pytest.mark.timeout(120)

FUZZ = settings(
    max_examples=int(os.environ.get("ASYNFRAME_FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

TERM_BYTES = [b"a", b"b", b"\r", b"\n"]
byte_terms = st.lists(st.sampled_from(TERM_BYTES), min_size=1, max_size=3).map(b"".join)
terms = st.one_of(byte_terms, byte_terms, st.integers(1, 40), st.just(None))
chunks = st.lists(
    st.one_of(st.sampled_from([b"a", b"b", b"\r\n", b"ab", b"aab", b"xyz"]), st.binary(max_size=8)), max_size=30
).map(b"".join)

ops = st.one_of(
    st.tuples(st.just("feed"), st.sampled_from(["bytes", "bytearray", "memoryview", "buffer"]), chunks),
    st.tuples(st.just("term"), terms, st.none()),
    st.tuples(st.just("max_frame"), st.sampled_from([0, 0, 4, 16, 100]), st.none()),
    st.tuples(st.just("stop_after"), st.integers(0, 3), st.none()),
    st.tuples(st.sampled_from(["process", "send", "send", "close", "pop_close"]), st.none(), st.none()),
    st.tuples(st.just("read"), st.integers(1, 70000), st.none()),
    st.tuples(st.just("push"), st.binary(max_size=5000), st.none()),
    st.tuples(st.just("producer"), st.lists(st.binary(max_size=3000), max_size=4), st.none()),
    st.tuples(st.just("partial"), st.integers(1, 9000), st.none()),
)

pure = importlib.import_module("asynframe._core_py")


def test_ops_are_documented():
    for name in (
        "feed",
        "term",
        "max_frame",
        "stop_after",
        "process",
        "send",
        "close",
        "pop_close",
        "read",
        "push",
        "producer",
        "partial",
    ):
        assert name in OPS_HELP


@FUZZ
@given(mode=st.sampled_from([0, 1, 2]), term=terms, seq=st.lists(ops, max_size=40))
def test_pipeline_invariants_and_twins(core, mode, term, seq):
    log = run_pipeline(core, mode, term, seq)
    if core is not pure:
        assert run_pipeline(pure, mode, term, seq) == log


@FUZZ
@given(term=byte_terms, pieces=st.lists(chunks, max_size=20), mode=st.sampled_from([0, 1, 2]))
def test_fixed_terminator_frames_are_split(core, term, pieces, mode):
    seq = [("feed", "bytes", p) for p in pieces] + [("send", None, None)]
    run_pipeline(core, mode, term, seq)  # the split invariant is checked inside


def test_small_buffers_really_split_sends(core):
    """The socketpair is small enough that one send cannot take a big push."""
    log = run_pipeline(core, 1, b"\n", [("push", b"x" * 5000, None)] * 100 + [("send", None, None)])
    sends = [entry for entry in log if entry[0] == "send"]
    assert sends and 0 < sends[0][1] < 500000


def test_pipeline_catches_a_broken_core(core):
    """A scanner that loses bytes must fail the conservation check."""

    class Lossy:
        def __init__(self, inner):
            self._inner = inner

        def __getattr__(self, name):
            return getattr(self._inner, name)

        def feed(self, target, data):
            return self._inner.feed(target, bytes(data)[1:])

    class LossyCore:
        MODE_CALLBACKS, MODE_COLLECT, MODE_FRAMES = 0, 1, 2
        PushQueue = core.PushQueue

        @staticmethod
        def FrameScanner(mode):
            return Lossy(core.FrameScanner(mode))

    with pytest.raises(AssertionError):
        run_pipeline(LossyCore, 1, b"\n", [("feed", "bytes", b"abc\ndef\n")])


def test_socketpair_is_closed():
    before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    run_pipeline(pure, 0, b"\n", [("feed", "bytes", b"a\n"), ("send", None, None)])
    if before is not None:
        assert len(os.listdir("/proc/self/fd")) == before
