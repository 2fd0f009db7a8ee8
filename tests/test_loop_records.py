"""What the compiled loop remembers about a fast-path channel (_loop_records.pxi).

After a full check the loop keeps a record of a stock channel's facts and
trusts it while the channel's instance dict and class are unchanged (their
version numbers).  These tests change a channel in every way an application,
asyncore or a feature can between two events, and in the middle of one
(inside a callback), and require the same log and the same bytes as the
same script on the generic Python path.  The file is marked ``api_layer``:
with the pure core forced both runs are the Python path and the comparison
still holds; the counters and the record itself are checked only where the
compiled loop runs.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import sysconfig

import pytest
from test_loop_fast_path import Echo, echo_line, pump

from asynframe import _poller, asynchat, asyncore

from support import both_poll_modes

pytestmark = pytest.mark.api_layer

FAST = _poller.LOOP_IMPLEMENTATION == "c"
if FAST:
    from asynframe import _loop_c

    RECORDS = _loop_c.records_supported()
else:
    RECORDS = False


class Switching(Echo):
    """Echo each line; some lines change the channel from inside the callback.

    Echo's handle_close/handle_error log what the framework called."""

    def __init__(self, sock, m, log, generic=False):
        super().__init__(sock, m, log, generic)
        self.generic = generic

    def collect_incoming_data(self, data):
        self.log.append(("chunk", len(data)))
        self._collect_incoming_data(data)

    def found_terminator(self):
        line = self._get_data()
        self.log.append(("line", line))
        word, _, arg = line.partition(b" ")
        if word == b"size":
            self.ac_in_buffer_size = int(arg)
        elif word == b"store":
            # the interpreter specialises this store after a few runs; the
            # last one must still be seen by the loop
            for i in range(64):
                self.ac_in_buffer_size = 64 + i
            self.ac_in_buffer_size = int(arg)
        elif word == b"override":
            self.handle_read = self.logged_read
        elif word == b"override-dict":
            self.__dict__["handle_read"] = self.logged_read
        elif word == b"override-update":
            vars(self).update(handle_read=self.logged_read)
        elif word == b"unoverride":
            del self.handle_read
        elif word == b"new-dict":
            self.__dict__ = dict(self.__dict__)
        elif word == b"junk-record":
            self.__dict__["_af_fast_record"] = 42
        elif word == b"drop-record":
            self.__dict__.pop("_af_fast_record", None)
        elif word == b"class":
            self.__class__ = Prefixing
        elif word == b"class-back":
            self.__class__ = Switching
        elif word == b"clear-expt":
            self.handle_expt = self.handle_expt
        elif word == b"generic":
            self._af_generic_path = True
        elif word == b"fast":
            self._af_generic_path = self.generic
        elif word == b"state":
            # what asyncore's close()/send() and the Python push consult
            self.log.append(("dispatching", bool(self._af_dispatching)))
        elif word == b"nest":
            # a loop run from this callback serves another channel's read
            self.log.append(("dispatching", bool(self._af_dispatching)))
            self.incoming.append(b"kept")
            self.other_peer.sendall(b"inner\r\n")
            asyncore.loop(1.0, self.nest_with_poll, map=self._map, count=1)
            self.log.append(("dispatching after nested", bool(self._af_dispatching)))
            # this channel's chunks, not those of the channel read meanwhile
            self.log.append(("data after nested", self._get_data()))
        elif word == b"swap-scanner":
            # _get_data reads the scanner the instance has now
            scanner = self._af_scanner
            self._af_scanner = StubScanner()
            try:
                self.log.append(("stub data", self._get_data()))
            finally:
                self._af_scanner = scanner
            self.incoming.append(b"own")
            self.log.append(("own data", self._get_data()))
        elif word == b"partner":
            # inside this channel's read, calls on another channel act on that one
            self.partner.incoming.append(b"partner's")
            self.log.append(("partner data", self.partner._get_data()))
            self.partner.push(b"to partner\r\n")
        self.push(self.reply(line))

    nest_with_poll = True
    other_peer = None
    partner = None

    def reply(self, line):
        return line + b"\r\n"

    def logged_read(self):
        self.log.append(("own read",))
        asynchat.async_chat.handle_read(self)


class StubScanner:
    def get_data(self):
        return b"from the stub"


class Prefixing(Switching):
    def reply(self, line):
        return b"sub:" + line + b"\r\n"


def run_lines(generic, use_poll, lines, between=None):
    """Send *lines* one at a time; return (log, bytes received, fast count)."""
    m: dict = {}
    log: list = []
    a, b = socket.socketpair()
    try:
        chan = Switching(a, m, log, generic=generic)
        poller = _poller.poller_for(m)
        fast = poller.fast_dispatches
        got = b""
        for line in lines:
            if between is not None:
                between(chan, line)
            got += echo_line(m, b, line + b"\r\n", use_poll)
        return log, got, poller.fast_dispatches - fast
    finally:
        asyncore.close_all(m, ignore_all=True)
        b.close()


LONG = b"x" * 40

SCRIPTS = {
    "read size": [b"one", b"size 7", LONG, b"size 3", LONG, b"size 65536", LONG],
    "specialised store": [b"one", b"store 5", LONG, b"store 11", LONG],
    "instance override": [b"one", b"override", b"two", b"unoverride", b"three"],
    "override through __dict__": [b"one", b"override-dict", b"two", b"unoverride", b"three"],
    "override through vars().update": [b"one", b"override-update", b"two", b"unoverride", b"three"],
    "new instance dict": [b"one", b"new-dict", b"two", b"size 5", LONG, b"three"],
    "foreign record value": [b"one", b"junk-record", b"two", b"drop-record", b"three", b"four"],
    "class changed": [b"one", b"class", b"two", b"class-back", b"three"],
    "urgent handler on the instance": [b"one", b"clear-expt", b"two"],
    "generic flag": [b"one", b"generic", b"two", b"fast", b"three"],
    "scanner swapped inside a callback": [b"one", b"swap-scanner", b"two", b"swap-scanner"],
}


@both_poll_modes
@pytest.mark.parametrize("name", sorted(SCRIPTS))
@pytest.mark.timeout(20)
def test_change_inside_callback_seen_at_next_event(name, use_poll):
    fast_log, fast_got, fast_count = run_lines(False, use_poll, SCRIPTS[name])
    slow_log, slow_got, slow_count = run_lines(True, use_poll, SCRIPTS[name])
    assert fast_log == slow_log
    assert fast_got == slow_got
    assert slow_count == 0
    if FAST:
        assert fast_count > 0
    # the change really happened
    sizes = [entry[1] for entry in fast_log if entry[0] == "chunk"]
    if name == "read size":
        assert 40 in sizes and 3 in sizes[-12:]
    if name == "specialised store":
        assert sizes.count(5) >= 8 and 11 in sizes
    if "override" in name:
        # the reads of "two" and of "unoverride" went through the override
        assert fast_log.count(("own read",)) == 2
    if name == "class changed":
        assert b"sub:two\r\n" in fast_got and b"sub:three" not in fast_got
    if name == "scanner swapped inside a callback":
        assert fast_log.count(("own data", b"own")) == 2
        if FAST:
            # the compiled _get_data reads _af_scanner at each call (the pure
            # core binds the scanner's get_data to the instance instead)
            assert fast_log.count(("stub data", b"from the stub")) == 2


@both_poll_modes
@pytest.mark.timeout(20)
def test_change_between_events_seen(use_poll):
    # changes made from outside the loop's callbacks, between two events
    def between(chan, line):
        if line.startswith(b"two"):
            chan.ac_in_buffer_size = 4
        elif line == b"three":
            chan.handle_read = chan.logged_read
        elif line.startswith(b"four"):
            del chan.handle_read
            type(chan).ac_in_buffer_size = 6  # the class default, instance value removed below
            del chan.ac_in_buffer_size
        elif line.startswith(b"five"):
            # only the class changes: the record must not outlive it
            type(chan).ac_in_buffer_size = 2

    def run(generic):
        try:
            return run_lines(generic, use_poll, lines, between)
        finally:
            if "ac_in_buffer_size" in Switching.__dict__:
                del Switching.ac_in_buffer_size

    lines = [b"one", b"two" + LONG, b"three", b"four" + LONG, b"five" + LONG]
    fast_log, fast_got, fast_count = run(False)
    slow_log, slow_got, _ = run(True)
    assert fast_log == slow_log and fast_got == slow_got
    sizes = [entry[1] for entry in fast_log if entry[0] == "chunk"]
    assert max(sizes[1:]) <= 6 and 4 in sizes and ("own read",) in fast_log
    assert max(sizes[-10:]) == 2
    if FAST:
        assert fast_count > 0


@both_poll_modes
@pytest.mark.timeout(20)
def test_dispatching_only_during_a_read(use_poll):
    # A recorded channel's _af_dispatching is its record, true only while a
    # read delivers (_FastRecord.reading); outside, false as on the Python path
    def between(chan, line):
        chan.log.append(("between", bool(chan._af_dispatching)))

    lines = [b"one", b"state", b"two", b"state"]
    fast_log, fast_got, fast_count = run_lines(False, use_poll, lines, between)
    slow_log, slow_got, _ = run_lines(True, use_poll, lines, between)
    assert fast_log == slow_log and fast_got == slow_got
    assert ("dispatching", True) in fast_log and ("between", False) in fast_log
    assert ("between", True) not in fast_log and ("dispatching", False) not in fast_log
    if FAST:
        assert fast_count > 0


@contextlib.contextmanager
def two_channels(generic):
    """Two Switching channels on one map, each with its peer socket."""
    m: dict = {}
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    try:
        yield m, Switching(a, m, [], generic=generic), b, Switching(c, m, [], generic=generic), d
    finally:
        asyncore.close_all(m, ignore_all=True)
        b.close()
        d.close()


def run_nested(generic, use_poll):
    with two_channels(generic) as (m, chan, b, other, d):
        chan.nest_with_poll = use_poll
        chan.other_peer = d
        for peer in (b, d):
            peer.sendall(b"warm\r\n")
            pump(m, peer, lambda data: data.endswith(b"warm\r\n"), use_poll)
        b.sendall(b"nest\r\n")
        got = pump(m, b, lambda data: data.endswith(b"nest\r\n"), use_poll)
        got += b"|" + pump(m, d, lambda data: data.endswith(b"inner\r\n"), use_poll)
        return chan.log, other.log, got


@both_poll_modes
@pytest.mark.timeout(20)
def test_loop_nested_in_a_callback_keeps_the_outer_read(use_poll):
    # the nested loop's read of another channel starts and ends there; the
    # outer channel is still inside its read when the loop returns
    fast = run_nested(False, use_poll)
    slow = run_nested(True, use_poll)
    assert fast == slow
    log, inner_log, got = fast
    assert log[-4:] == [
        ("line", b"nest"),
        ("dispatching", True),
        ("dispatching after nested", True),
        ("data after nested", b"kept"),
    ]
    assert inner_log[-1] == ("line", b"inner") and got == b"nest\r\n|inner\r\n"


def run_partnered(generic, use_poll):
    with two_channels(generic) as (m, chan, b, other, d):
        chan.partner = other
        got = b""
        for line in (b"one", b"partner", b"two", b"partner"):
            got += echo_line(m, b, line + b"\r\n", use_poll)
        got += b"|" + pump(m, d, lambda data: data.count(b"to partner\r\n") == 2, use_poll)
        return chan.log, got


@both_poll_modes
@pytest.mark.timeout(20)
def test_calls_on_another_channel_inside_a_read(use_poll):
    # _get_data() and push() on channel B from channel A's read act on B
    # (the compiled twins find the read under way only for A itself)
    fast = run_partnered(False, use_poll)
    slow = run_partnered(True, use_poll)
    assert fast == slow
    log, got = fast
    assert log.count(("partner data", b"partner's")) == 2
    assert got == b"one\r\npartner\r\ntwo\r\npartner\r\n|to partner\r\nto partner\r\n"


@pytest.mark.skipif(not RECORDS, reason="records need the compiled loop and dict versions")
@pytest.mark.timeout(20)
def test_record_kept_while_nothing_changes(smap):
    log: list = []
    a, b = socket.socketpair()
    with b:
        chan = Switching(a, smap, log)
        b.sendall(b"one\r\n")
        pump(smap, b, lambda data: data.endswith(b"one\r\n"), True)
        record = vars(chan).get("_af_fast_record")
        assert type(record).__name__ == "_FastRecord"
        for line in (b"two", b"three"):
            b.sendall(line + b"\r\n")
            pump(smap, b, lambda data, line=line: data.endswith(line + b"\r\n"), True)
        # the same record, updated in place: the dict gained no other key
        assert vars(chan)["_af_fast_record"] is record


@pytest.mark.skipif(not FAST, reason="no compiled loop")
def test_records_exist_where_dict_changes_are_seen():
    free_threaded = bool(__import__("sysconfig").get_config_var("Py_GIL_DISABLED"))
    assert RECORDS == (sys.version_info < (3, 13) and not free_threaded)


@pytest.mark.skipif(bool(__import__("sysconfig").get_config_var("Py_GIL_DISABLED")), reason="another object header")
def test_attribute_store_on_an_instance_with_a_dict():
    # Why records stop at 3.13: there a store to an instance whose __dict__
    # has been made changes neither that dict's version nor (so) anything a
    # record could watch.  If a later CPython changes the dict again, this
    # says so and records can be reconsidered there.
    import ctypes

    class Plain:
        def __init__(self):
            self.a = 1

    def version(d):
        # PyDictObject: PyObject_HEAD, ma_used, then ma_version_tag
        return ctypes.c_uint64.from_address(id(d) + 2 * ctypes.sizeof(ctypes.c_void_p) + 8).value

    obj = Plain()
    attrs = obj.__dict__
    before = version(attrs)
    obj.a = 2
    if sys.version_info < (3, 13):
        assert version(attrs) != before
    elif sys.version_info < (3, 14):
        assert version(attrs) == before


@pytest.mark.skipif(not FAST or not sys.platform.startswith("linux"), reason="compiled loop on Linux")
def test_socket_descriptor_read_directly():
    # configure() compared the C object's descriptor with fileno(): on
    # CPython for Linux they agree, so the loop makes no fileno() call
    assert _loop_c.socket_fd_direct()


@pytest.mark.skipif(not FAST, reason="compiled loop")
def test_instance_dict_read_in_place():
    # configure() compared the dict found where CPython keeps it with
    # PyObject_GenericGetDict: they agree on every interpreter that keeps
    # records; 3.13+ and free-threaded builds always make the call
    free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    assert _loop_c.instance_dict_direct() == (sys.version_info < (3, 13) and not free_threaded)


# -- the callbacks a scan calls without looking them up ------------------------
#
# With a record, a scan calls the class's collect_incoming_data /
# found_terminator / frame_received directly while the channel's dict and
# class are as they were.  A change made by one callback applies to the very
# next one, within the same read: here the lines of each script arrive in
# one piece.


def replacement(self, *args):
    self.log.append(("replaced", len(args)))
    self.push(b"replaced\r\n")


class Rebinding(Switching):
    def found_terminator(self):
        line = self._get_data()
        self.log.append(("line", line))
        if line == b"instance":
            self.found_terminator = lambda: replacement(self)
        elif line == b"class":
            Rebinding.found_terminator = replacement
        elif line == b"new-dict":
            fresh = dict(self.__dict__)
            fresh["found_terminator"] = lambda: replacement(self)
            self.__dict__ = fresh
        elif line == b"delete":
            # the function running now is removed from its class
            del Rebinding.found_terminator
        self.push(line + b"\r\n")


class RebindingFrames(Switching):
    def frame_received(self, frame):
        self.log.append(("frame", frame))
        if frame == b"instance":
            self.frame_received = lambda f: replacement(self, f)
        elif frame == b"static":
            RebindingFrames.frame_received = staticmethod(lambda f: None)
        self.push(frame + b"\r\n")


def run_pipelined(cls, generic, use_poll, data, expect_end):
    m: dict = {}
    log: list = []
    a, b = socket.socketpair()
    original = dict(cls.__dict__)
    chan = None
    try:
        chan = cls(a, m, log, generic=generic)
        poller = _poller.poller_for(m)
        fast = poller.fast_dispatches
        b.sendall(b"warm\r\n")
        got = pump(m, b, lambda data: data.endswith(b"warm\r\n"), use_poll)
        b.sendall(data)
        got += pump(m, b, lambda data: data.endswith(expect_end), use_poll)
        return log, got, poller.fast_dispatches - fast
    finally:
        asyncore.close_all(m, ignore_all=True)
        b.close()
        for name in ("found_terminator", "frame_received"):
            if name in original:
                setattr(cls, name, original[name])
        del chan


PIPELINED = {
    "instance attribute": (Rebinding, b"instance\r\nnext\r\n", b"replaced\r\n"),
    "class attribute": (Rebinding, b"class\r\nnext\r\n", b"replaced\r\n"),
    "new __dict__": (Rebinding, b"new-dict\r\nnext\r\n", b"replaced\r\n"),
    "function deleted from its class": (Rebinding, b"delete\r\nnext\r\n", b"next\r\n"),
    "frames, instance attribute": (RebindingFrames, b"instance\r\nnext\r\n", b"replaced\r\n"),
    "frames, staticmethod": (RebindingFrames, b"static\r\nnext\r\nlast\r\n", b"static\r\n"),
}


@both_poll_modes
@pytest.mark.parametrize("name", sorted(PIPELINED))
@pytest.mark.timeout(20)
def test_callback_changed_mid_read_applies_to_the_next_frame(name, use_poll):
    cls, data, end = PIPELINED[name]
    fast_log, fast_got, fast_count = run_pipelined(cls, False, use_poll, data, end)
    slow_log, slow_got, slow_count = run_pipelined(cls, True, use_poll, data, end)
    assert fast_log == slow_log
    assert fast_got == slow_got
    assert slow_count == 0
    if FAST:
        assert fast_count > 0
    if "staticmethod" in name:
        assert fast_log == [("frame", b"warm"), ("frame", b"static")]
    elif "deleted" in name:
        # the class falls back to Switching.found_terminator for "next"
        assert fast_log[-1] == ("line", b"next") and fast_got.endswith(b"next\r\n")
    else:
        assert ("replaced", 0 if "frames" not in name else 1) in fast_log


# -- the lookups kept per descriptor (_loop_slots.pxi) -------------------------


@both_poll_modes
@pytest.mark.timeout(20)
def test_descriptor_reused_by_a_new_channel(use_poll):
    # The loop keeps each descriptor's lookups (its registration, its map
    # entry, its channel's record) with borrowed pointers, trusted while the
    # dicts they came from are unchanged.  A closed channel must still go at
    # once, and the next channel on its descriptor must be the one served.
    import gc
    import weakref

    m: dict = {}
    log: list = []
    a, b = socket.socketpair()
    chan = Switching(a, m, log)
    for line in (b"one", b"two"):
        assert echo_line(m, b, line + b"\r\n", use_poll)
    fd = chan._fileno
    chan.close()
    b.close()
    gone = weakref.ref(chan)
    del chan
    gc.collect()
    assert gone() is None
    c, d = socket.socketpair()
    try:
        if c.fileno() != fd:
            c.close()
            pytest.skip("the system gave the new socket another descriptor")
        other_log: list = []
        Switching(c, m, other_log)
        d.sendall(b"three\r\n")
        assert pump(m, d, lambda data: data.endswith(b"three\r\n"), use_poll) == b"three\r\n"
        assert other_log == [("chunk", 5), ("line", b"three")]
        assert ("line", b"three") not in log
    finally:
        asyncore.close_all(m, ignore_all=True)
        d.close()
