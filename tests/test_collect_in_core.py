"""A collect_incoming_data that only calls _collect_incoming_data (_callback_shapes).

The compiled loop appends such a method's chunks itself instead of running
its frame (CPython up to 3.11, records kept, nothing tracing).  These tests
check which methods are recognised, and that everything that could make the
call do something else, or make the skipped frame visible, brings the call
back: a new ``__code__``, an instance or class override of either method, a
profiler.  Each scenario's bytes and log must equal the generic path's; the
file is marked ``api_layer`` so it runs on the pure core too, where the
counter must stay at zero.
"""

from __future__ import annotations

import inspect
import socket
import sys
from types import FunctionType

import pytest
from test_loop_fast_path import Echo, pump
from test_loop_records import RECORDS

from asynframe import _poller, asynchat, asyncore
from asynframe._callback_shapes import collect_handing_code

from support import both_poll_modes

pytestmark = pytest.mark.api_layer

# where the core may skip the frame: records kept and no sys.monitoring
SKIPS = RECORDS and sys.version_info < (3, 12)


def untraced():
    if sys.gettrace() is not None or sys.getprofile() is not None:
        pytest.skip("a tracer is running (coverage?): the frame is never skipped then")


# -- which methods are recognised ---------------------------------------------


def plain(self, data):
    self._collect_incoming_data(data)


def other_names(chan, chunk: bytes) -> None:
    chan._collect_incoming_data(chunk)


def documented(self, data):
    """Buffer the data."""
    self._collect_incoming_data(data)


def returning(self, data):
    return self._collect_incoming_data(data)


def documented_returning(self, data):
    "Buffer the data."
    return self._collect_incoming_data(data)


RECOGNISED = [plain, other_names, documented, returning, documented_returning]


def also_returns(self, data):
    self._collect_incoming_data(data)
    return 1


def appends_itself(self, data):
    self.incoming.append(data)


def other_helper(self, data):
    self._get_data(data)


def other_argument(self, data):
    self._collect_incoming_data(b"x")


def extra_argument(self, data):
    self._collect_incoming_data(data, data)


def with_default(self, data, more=None):
    self._collect_incoming_data(data)


def star_args(self, *data):
    self._collect_incoming_data(data)


def generator(self, data):
    yield self._collect_incoming_data(data)


async def coroutine(self, data):
    self._collect_incoming_data(data)


def in_try(self, data):
    try:
        self._collect_incoming_data(data)
    except ValueError:
        pass


def closure():
    prefix = b"!"

    def collect(self, data):
        self._collect_incoming_data(prefix + data)

    return collect


def through_global(self, data):
    asynchat.async_chat._collect_incoming_data(self, data)


NOT_RECOGNISED = [
    also_returns,
    appends_itself,
    other_helper,
    other_argument,
    extra_argument,
    with_default,
    star_args,
    generator,
    coroutine,
    in_try,
    closure(),
    through_global,
    lambda self, data: self._collect_incoming_data(data + b""),
    asynchat.async_chat._collect_incoming_data,
    len,
    None,
]


@pytest.mark.parametrize("func", RECOGNISED, ids=lambda f: f.__name__)
def test_recognised(func):
    assert collect_handing_code(func) is func.__code__


@pytest.mark.parametrize("func", NOT_RECOGNISED, ids=lambda f: getattr(f, "__name__", repr(f)))
def test_not_recognised(func):
    assert collect_handing_code(func) is None


def test_flags_are_inspects():
    from asynframe import _callback_shapes

    for name in ("VARARGS", "VARKEYWORDS", "GENERATOR", "COROUTINE", "ITERABLE_COROUTINE", "ASYNC_GENERATOR"):
        assert getattr(_callback_shapes, "_CO_" + name) == getattr(inspect, "CO_" + name), name


def test_coroutine_flag_alone_rejects():
    # before 3.10 an async def with this body has the plain shape's bytecode
    code = plain.__code__.replace(co_flags=plain.__code__.co_flags | inspect.CO_COROUTINE)
    assert collect_handing_code(FunctionType(code, globals())) is None


def test_lambda_of_the_same_body_is_recognised():
    # a lambda compiles to the returning shape
    assert collect_handing_code(lambda self, data: self._collect_incoming_data(data)) is not None


# -- the loop ---------------------------------------------------------------------


class Handing(Echo):
    """Echo's collect_incoming_data is the plain shape; found_terminator may
    change how the next chunk would be collected."""

    def found_terminator(self):
        line = self._get_data()
        self.log.append(("line", line))
        word, _, arg = line.partition(b" ")
        if word == b"code":
            # a new body for the same function object: no class or dict changes
            type(self).collect_incoming_data.__code__ = logging_collect.__code__
        elif word == b"code-back":
            type(self).collect_incoming_data.__code__ = plain.__code__
        elif word == b"own-helper":
            self._collect_incoming_data = self.logged_helper
        elif word == b"stock-helper":
            del self._collect_incoming_data
        elif word == b"own-collect":
            self.collect_incoming_data = self.logged_collect
        elif word == b"no-own-collect":
            del self.collect_incoming_data
        self.push(line + b"\r\n")

    def logged_helper(self, data):
        self.log.append(("helper", data))
        asynchat.async_chat._collect_incoming_data(self, data)

    def logged_collect(self, data):
        self.log.append(("collect", data))
        self._collect_incoming_data(data)


def logging_collect(self, data):
    self.log.append(("code", data))
    self._collect_incoming_data(data)


def fresh_class():
    # each run gets its own class and function: the scenarios assign __code__
    collect = FunctionType(plain.__code__, globals(), "collect_incoming_data")
    return type("HandingRun", (Handing,), {"collect_incoming_data": collect})


def run_lines(generic, use_poll, lines, cls=None, together=False):
    """Send *lines* (one at a time, or all in one send); return (log, bytes, counter)."""
    m: dict = {}
    log: list = []
    a, b = socket.socketpair()
    try:
        (cls or fresh_class())(a, m, log, generic=generic)  # the map keeps it
        poller = _poller.poller_for(m)
        before = poller.collects_in_core
        got = b""
        batches = [lines] if together else [[line] for line in lines]
        for batch in batches:
            data = b"".join(line + b"\r\n" for line in batch)
            b.sendall(data)
            got += pump(m, b, lambda received, data=data: received.endswith(data), use_poll)
        return log, got, poller.collects_in_core - before
    finally:
        asyncore.close_all(m, ignore_all=True)
        b.close()


def same_as_generic(use_poll, lines, together=False):
    fast = run_lines(False, use_poll, lines, together=together)
    generic = run_lines(True, use_poll, lines, together=together)
    assert fast[:2] == generic[:2]
    assert generic[2] == 0
    return fast


@both_poll_modes
def test_plain_lines_are_collected_by_the_core(use_poll):
    untraced()
    lines = [b"line %d" % i for i in range(20)]
    log, got, collected = same_as_generic(use_poll, lines)
    assert got == b"".join(line + b"\r\n" for line in lines)
    if SKIPS:
        assert collected == len(lines)
    else:
        assert collected == 0


SCENARIOS = {
    # lines; the log entries of the calls made after the change; how many
    # chunks the core collects itself when each line is a read of its own
    "code": (
        [b"a", b"code", b"b", b"c", b"code-back", b"d"],
        [("code", b"b"), ("code", b"c"), ("code", b"code-back")],
        3,
    ),
    # without the instance's binding to the scanner, the class's stock
    # helper (a Python method) is what the call would run: no shortcut
    "own-helper": (
        [b"a", b"own-helper", b"b", b"stock-helper", b"c"],
        [("helper", b"b"), ("helper", b"stock-helper")],
        2,
    ),
    "own-collect": (
        [b"a", b"own-collect", b"b", b"no-own-collect", b"c"],
        [("collect", b"b"), ("collect", b"no-own-collect")],
        3,
    ),
}


@both_poll_modes
@pytest.mark.parametrize("together", [False, True], ids=["one-per-read", "pipelined"])
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_changes_bring_the_call_back(name, together, use_poll):
    untraced()
    lines, calls, skipped = SCENARIOS[name]
    log, got, collected = same_as_generic(use_poll, lines, together=together)
    assert [entry for entry in log if entry[0] != "line"] == calls
    assert [entry[1] for entry in log if entry[0] == "line"] == lines
    if SKIPS and not together:
        assert collected == skipped
    elif not SKIPS:
        assert collected == 0


class Helper(Handing):
    """A class whose _collect_incoming_data is its own: always called."""

    def _collect_incoming_data(self, data):
        self.log.append(("class helper", data))
        asynchat.async_chat._collect_incoming_data(self, data)


@both_poll_modes
def test_own_helper_on_the_class_is_called(use_poll):
    log, got, collected = run_lines(False, use_poll, [b"a", b"b"], cls=Helper)
    assert log == [("class helper", b"a"), ("line", b"a"), ("class helper", b"b"), ("line", b"b")]
    assert collected == 0


@both_poll_modes
def test_class_helper_assigned_later_is_called(use_poll):
    untraced()
    cls = fresh_class()

    def later(chan, data):
        chan.log.append(("later", data))
        asynchat.async_chat._collect_incoming_data(chan, data)

    m: dict = {}
    log: list = []
    a, b = socket.socketpair()
    try:
        chan = cls(a, m, log)
        b.sendall(b"one\r\n")
        pump(m, b, lambda got: got.endswith(b"one\r\n"), use_poll)
        # async_chat bound the scanner's collect on the instance at set-up;
        # an instance attribute wins over the class's, so drop it too
        cls._collect_incoming_data = later
        del chan._collect_incoming_data
        b.sendall(b"two\r\n")
        pump(m, b, lambda got: got.endswith(b"two\r\n"), use_poll)
    finally:
        asyncore.close_all(m, ignore_all=True)
        b.close()
    assert log == [("line", b"one"), ("later", b"two"), ("line", b"two")]


@both_poll_modes
def test_profiler_sees_every_call(use_poll):
    untraced()
    calls = []

    def profile(frame, event, arg):
        if event == "call" and frame.f_code is plain.__code__:
            calls.append(frame.f_locals.get("data"))

    lines = [b"p%d" % i for i in range(5)]
    sys.setprofile(profile)
    try:
        log, got, collected = run_lines(False, use_poll, lines)
    finally:
        sys.setprofile(None)
    assert calls == lines
    assert collected == 0
    assert got == b"".join(line + b"\r\n" for line in lines)
