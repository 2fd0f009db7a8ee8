"""FrameScanner unit tests, run on both twins (the ``core`` fixture).

The behaviour asked of MODE_CALLBACKS is the call sequence of
``asynchat.async_chat.handle_read``; the expected values below are written
out by hand from that contract (test_differential.py checks it against the
real asynchat on random input).
"""

from __future__ import annotations

import errno
import socket
import sys
import tracemalloc

import pytest

pytestmark = pytest.mark.timeout(60)


class Recorder:
    """A scanner target that writes down every callback.

    ``on_found``/``on_frame``/``on_data`` are optional hooks run after the
    event is recorded (to change the terminator, clear, raise, ...).
    """

    def __init__(self, scanner, on_found=None, on_frame=None, on_data=None):
        self.scanner = scanner
        self.events = []
        self.frames = []
        self.on_found = on_found
        self.on_frame = on_frame
        self.on_data = on_data

    def collect_incoming_data(self, data):
        assert type(data) is bytes
        self.events.append(("data", data))
        if self.on_data is not None:
            self.on_data(self, data)

    def found_terminator(self):
        self.events.append(("found", self.scanner.terminator))
        if self.on_found is not None:
            self.on_found(self)

    def frame_received(self, frame):
        assert type(frame) is bytes
        self.frames.append(frame)
        if self.on_frame is not None:
            self.on_frame(self, frame)


def make(core, term, mode=None, **hooks):
    scanner = core.FrameScanner(core.MODE_CALLBACKS if mode is None else mode)
    scanner.set_terminator(term)
    return scanner, Recorder(scanner, **hooks)


def feed_all(scanner, target, chunks):
    for chunk in chunks:
        scanner.feed(target, chunk)


def one_byte(data):
    return [data[i : i + 1] for i in range(len(data))]


def frames_of(events):
    """Per-frame concatenation of a MODE_CALLBACKS event list."""
    frames, current = [], []
    for event in events:
        if event[0] == "data":
            current.append(event[1])
        else:
            frames.append(b"".join(current))
            current = []
    return frames, b"".join(current)


def collect_frames(core, term, chunks):
    """Frames seen by MODE_COLLECT (found_terminator + get_data)."""
    scanner = core.FrameScanner(core.MODE_COLLECT)
    scanner.set_terminator(term)
    frames = []

    class Target:
        def found_terminator(self):
            frames.append(scanner.get_data())

    feed_all(scanner, Target(), chunks)
    return frames, scanner


# -- constants and module surface ---------------------------------------------------


def test_module_surface(core):
    assert core.IMPLEMENTATION in ("c", "python")
    assert (core.MODE_CALLBACKS, core.MODE_COLLECT, core.MODE_FRAMES) == (0, 1, 2)
    assert core.DEFAULT_READ_SIZE == 65536
    assert core.IOV_MAX >= 16
    scanner = core.FrameScanner()
    assert scanner.mode == core.MODE_CALLBACKS
    assert scanner.terminator is None
    assert scanner.pending == b""
    assert scanner.incoming == []


# -- bytes terminators ---------------------------------------------------------------


def test_bytes_terminator_basic(core):
    scanner, rec = make(core, b"\r\n")
    scanner.feed(rec, b"hello\r\nworld\r\n")
    assert rec.events == [
        ("data", b"hello"),
        ("found", b"\r\n"),
        ("data", b"world"),
        ("found", b"\r\n"),
    ]
    assert scanner.pending == b""


def test_empty_frames_report_no_data(core):
    # asynchat does not call collect_incoming_data with b""
    scanner, rec = make(core, b"\n")
    scanner.feed(rec, b"\n\nx\n\n")
    assert rec.events == [
        ("found", b"\n"),
        ("found", b"\n"),
        ("data", b"x"),
        ("found", b"\n"),
        ("found", b"\n"),
    ]


def test_data_without_terminator_is_delivered_at_once(core):
    scanner, rec = make(core, b"\r\n")
    scanner.feed(rec, b"abc")
    scanner.feed(rec, b"def")
    assert rec.events == [("data", b"abc"), ("data", b"def")]
    assert scanner.pending == b""


@pytest.mark.parametrize("term", [b"\n", b"\r\n", b"\r\n.\r\n", b"abab", b"aaa"])
def test_split_terminator_every_split_point(core, term):
    stream = b"xab" + term + b"" + term + b"aab" + term + b"tail" + term[:-1]
    whole_frames, whole_rest = frames_of(make_events(core, term, [stream]))
    assert whole_frames == stream.split(term)[:-1]
    for cut in range(1, len(stream)):
        events = make_events(core, term, [stream[:cut], stream[cut:]])
        assert frames_of(events) == (whole_frames, whole_rest), cut
    for cut1 in range(1, len(stream)):
        for cut2 in range(cut1 + 1, len(stream)):
            chunks = [stream[:cut1], stream[cut1:cut2], stream[cut2:]]
            assert frames_of(make_events(core, term, chunks)) == (whole_frames, whole_rest)
    events = make_events(core, term, one_byte(stream))
    assert frames_of(events) == (whole_frames, whole_rest)


def make_events(core, term, chunks):
    scanner, rec = make(core, term)
    feed_all(scanner, rec, chunks)
    return rec.events


def test_one_byte_feeds_exact_events(core):
    scanner, rec = make(core, b"\r\n")
    feed_all(scanner, rec, one_byte(b"ab\r\n\r\rc\r\n"))
    # what asynchat reports for one-byte reads: a lone b"\r" is held until
    # the next byte decides; a second b"\r" releases the first and is held
    assert rec.events == [
        ("data", b"a"),
        ("data", b"b"),
        ("found", b"\r\n"),
        ("data", b"\r"),
        ("data", b"\rc"),
        ("found", b"\r\n"),
    ]
    assert scanner.pending == b""


def test_held_back_prefix_is_pending(core):
    scanner, rec = make(core, b"\r\n.\r\n")
    scanner.feed(rec, b"line\r\n.")
    assert rec.events == [("data", b"line")]
    assert scanner.pending == b"\r\n."
    scanner.feed(rec, b"\r")
    assert scanner.pending == b"\r\n.\r"
    assert rec.events == [("data", b"line")]
    scanner.feed(rec, b"\nnext")
    assert rec.events == [("data", b"line"), ("found", b"\r\n.\r\n"), ("data", b"next")]
    assert scanner.pending == b""


def test_whole_read_is_a_prefix(core):
    scanner, rec = make(core, b"\r\n")
    scanner.feed(rec, b"\r")
    assert rec.events == []
    assert scanner.pending == b"\r"
    # a false start: the held byte goes out with the data that follows
    scanner.feed(rec, b"x")
    assert rec.events == [("data", b"\rx")]
    assert scanner.pending == b""


def test_pending_holds_longest_prefix_only(core):
    scanner, rec = make(core, b"abcabd")
    scanner.feed(rec, b"zzabcab")
    assert rec.events == [("data", b"zz")]
    assert scanner.pending == b"abcab"
    scanner.feed(rec, b"cabd!")
    # b"abcab" + b"cabd!" -> the terminator starts at offset 3
    assert rec.events == [("data", b"zz"), ("data", b"abc"), ("found", b"abcabd"), ("data", b"!")]


def test_bytearray_and_memoryview_input(core):
    scanner, rec = make(core, b"\n")
    data = bytearray(b"one\ntwo\nthr")
    scanner.feed(rec, data)
    scanner.feed(rec, memoryview(b"ee\n"))
    data[:] = b"XXXXXXXXXXX"  # the chunks handed out are copies
    assert rec.events == [
        ("data", b"one"),
        ("found", b"\n"),
        ("data", b"two"),
        ("found", b"\n"),
        ("data", b"thr"),
        ("data", b"ee"),
        ("found", b"\n"),
    ]


def test_empty_feed_rescans_held_bytes(core):
    scanner, rec = make(core, b"\r\n")
    scanner.feed(rec, b"")
    scanner.feed(rec, b"a\r")
    scanner.feed(rec, b"")
    scanner.feed(rec, bytearray())
    assert rec.events == [("data", b"a")]
    assert scanner.pending == b"\r"
    # like an asynchat read that returns nothing: the held bytes are scanned
    # again at the terminator in force now
    scanner.set_terminator(None)
    scanner.feed(rec, b"")
    assert rec.events == [("data", b"a"), ("data", b"\r")]
    assert scanner.pending == b""


# -- int terminators ------------------------------------------------------------------


def test_int_terminator_counts_down(core):
    scanner, rec = make(core, 10)
    assert scanner.terminator == 10
    scanner.feed(rec, b"abcd")
    assert scanner.terminator == 6
    scanner.feed(rec, b"efg")
    assert scanner.terminator == 3
    assert rec.events == [("data", b"abcd"), ("data", b"efg")]
    scanner.feed(rec, b"hijkl")
    # the rest of the read goes out with no terminator (0), like asynchat
    assert rec.events == [
        ("data", b"abcd"),
        ("data", b"efg"),
        ("data", b"hij"),
        ("found", 0),
        ("data", b"kl"),
    ]
    assert scanner.terminator == 0
    assert scanner.pending == b""


def test_int_terminator_exact_and_one_byte(core):
    scanner, rec = make(core, 3)
    scanner.feed(rec, b"abc")
    assert rec.events == [("data", b"abc"), ("found", 0)]
    scanner, rec = make(core, 3)
    feed_all(scanner, rec, one_byte(b"abcd"))
    assert rec.events == [
        ("data", b"a"),
        ("data", b"b"),
        ("data", b"c"),
        ("found", 0),
        ("data", b"d"),
    ]


def test_int_terminator_large_count(core):
    scanner, rec = make(core, 1 << 40)
    scanner.feed(rec, b"x" * 1000)
    assert scanner.terminator == (1 << 40) - 1000
    assert rec.events == [("data", b"x" * 1000)]


@pytest.mark.parametrize("term", [None, 0, b""])
def test_no_terminator_delivers_everything(core, term):
    scanner, rec = make(core, term)
    feed_all(scanner, rec, [b"a\r\nb", b"\r", b"\n", b"12345"])
    assert rec.events == [("data", b"a\r\nb"), ("data", b"\r"), ("data", b"\n"), ("data", b"12345")]
    assert scanner.terminator == term
    assert type(scanner.terminator) is type(term)
    assert scanner.pending == b""


# -- terminator changes from callbacks ------------------------------------------------


def protocol_hooks(script):
    """on_found hook setting the next terminator from *script* on each frame."""
    script = list(script)

    def on_found(rec):
        if script:
            rec.scanner.set_terminator(script.pop(0))

    return on_found


HEADER_STREAM = b"5\nhello3\r\nabc\r\nrest of it"


def header_events(core, chunks):
    scanner, rec = make(core, b"\n", on_found=protocol_hooks([5, b"3\r\n", 3, None]))
    feed_all(scanner, rec, chunks)
    return scanner, rec.events


def test_terminator_change_applies_to_next_byte(core):
    scanner, events = header_events(core, [HEADER_STREAM])
    assert events == [
        ("data", b"5"),
        ("found", b"\n"),
        ("data", b"hello"),
        ("found", 0),
        ("found", b"3\r\n"),
        ("data", b"abc"),
        ("found", 0),
        ("data", b"\r\nrest of it"),
    ]
    assert scanner.terminator is None


def test_terminator_change_any_chunking(core):
    _, whole = header_events(core, [HEADER_STREAM])
    whole_frames = frames_of(whole)
    for cut in range(1, len(HEADER_STREAM)):
        _, events = header_events(core, [HEADER_STREAM[:cut], HEADER_STREAM[cut:]])
        assert frames_of(events) == whole_frames
        assert [e for e in events if e[0] == "found"] == [e for e in whole if e[0] == "found"]
    _, events = header_events(core, one_byte(HEADER_STREAM))
    assert frames_of(events) == whole_frames


def test_switch_from_int_to_bytes_to_int(core):
    script = [b"ab", 1, b"b", 2, b"\n"]
    scanner, rec = make(core, 2, on_found=protocol_hooks(script))
    scanner.feed(rec, b"xyQQabZbWWWtail\n")
    assert rec.events == [
        ("data", b"xy"),
        ("found", 0),
        ("data", b"QQ"),
        ("found", b"ab"),
        ("data", b"Z"),
        ("found", 0),
        ("found", b"b"),
        ("data", b"WW"),
        ("found", 0),
        ("data", b"Wtail"),
        ("found", b"\n"),
    ]


def test_same_terminator_object_set_again(core):
    term = b"\n"
    scanner, rec = make(core, term, on_found=lambda r: r.scanner.set_terminator(term))
    scanner.feed(rec, b"a\nb\nc")
    assert rec.events == [("data", b"a"), ("found", b"\n"), ("data", b"b"), ("found", b"\n"), ("data", b"c")]


def test_terminator_property_setter(core):
    scanner = core.FrameScanner()
    scanner.terminator = b"\r\n"
    assert scanner.terminator == b"\r\n"
    scanner.terminator = 7
    assert scanner.terminator == 7
    scanner.terminator = bytearray(b"xy")
    assert scanner.terminator == b"xy" and type(scanner.terminator) is bytes
    scanner.set_terminator("\u00e9\n", "latin-1")
    assert scanner.terminator == b"\xe9\n"
    scanner.set_terminator("\u00e9", "utf-8")
    assert scanner.terminator == b"\xc3\xa9"
    scanner.terminator = None
    assert scanner.terminator is None


def test_external_change_between_reads_uses_held_bytes(core):
    scanner, rec = make(core, b"\r\n")
    scanner.feed(rec, b"abc\r")
    assert scanner.pending == b"\r"
    scanner.set_terminator(b"\rx")
    scanner.feed(rec, b"xyz")
    assert rec.events == [("data", b"abc"), ("found", b"\rx"), ("data", b"yz")]


# -- modes --------------------------------------------------------------------------


def test_mode_collect(core):
    frames, scanner = collect_frames(core, b"\r\n", [b"ab", b"c\r", b"\nde\r\n\r\nf"])
    assert frames == [b"abc", b"de", b""]
    assert scanner.incoming == [b"f"]
    assert scanner.get_data() == b"f"
    assert scanner.incoming == []
    assert scanner.get_data() == b""


def test_mode_collect_int_and_none(core):
    frames, scanner = collect_frames(core, 4, [b"ab", b"cdef"])
    assert frames == [b"abcd"]
    assert scanner.terminator == 0
    assert scanner.get_data() == b"ef"
    frames, scanner = collect_frames(core, None, [b"ab", b"cdef"])
    assert frames == []
    assert scanner.incoming == [b"ab", b"cdef"]


def test_mode_frames(core):
    scanner, rec = make(core, b"\r\n", mode=core.MODE_FRAMES)
    feed_all(scanner, rec, [b"ab", b"c\r", b"\nde\r\n\r\nf"])
    assert rec.frames == [b"abc", b"de", b""]
    assert rec.events == []
    assert b"".join(scanner.incoming) == b"f"
    feed_all(scanner, rec, one_byte(b"gh\r\n"))
    assert rec.frames == [b"abc", b"de", b"", b"fgh"]
    assert scanner.incoming == []


def test_mode_frames_int_then_none(core):
    def on_frame(rec, frame):
        rec.scanner.set_terminator(None if len(rec.frames) >= 2 else 3)

    scanner, rec = make(core, 3, mode=core.MODE_FRAMES, on_frame=on_frame)
    feed_all(scanner, rec, [b"a", b"bcde", b"f", b"gh", b"ij"])
    # two 3-byte frames, then no terminator: every chunk is handed over
    assert rec.frames == [b"abc", b"def", b"gh", b"ij"]
    assert scanner.terminator is None


def test_mode_switch_inside_callbacks(core):
    def on_found(rec):
        rec.scanner.mode = core.MODE_FRAMES

    def on_frame(rec, frame):
        if frame == b"two":
            rec.scanner.mode = core.MODE_COLLECT

    scanner, rec = make(core, b";", on_found=on_found, on_frame=on_frame)
    scanner.feed(rec, b"one;two;three;fo")
    assert rec.events == [("data", b"one"), ("found", b";"), ("found", b";")]
    assert rec.frames == [b"two"]
    # MODE_COLLECT put b"three" into incoming before calling found_terminator
    # (which did not take it), then the unterminated b"fo"
    assert scanner.incoming == [b"three", b"fo"]
    del scanner.incoming[0]
    scanner.mode = core.MODE_FRAMES
    scanner.feed(rec, b"ur;")
    assert rec.frames == [b"two", b"four"]


def test_mode_validation(core):
    with pytest.raises(ValueError):
        core.FrameScanner(3)
    with pytest.raises(ValueError):
        core.FrameScanner(-1)
    scanner = core.FrameScanner(core.MODE_FRAMES)
    assert scanner.mode == core.MODE_FRAMES
    with pytest.raises(ValueError):
        scanner.mode = 7
    assert scanner.mode == core.MODE_FRAMES


def test_incoming_setter(core):
    scanner = core.FrameScanner(core.MODE_COLLECT)
    scanner.set_terminator(b"\n")
    mine = []
    scanner.incoming = mine
    assert scanner.incoming is mine

    class Target:
        def found_terminator(self):
            pass

    scanner.feed(Target(), b"abc")
    assert mine == [b"abc"]
    with pytest.raises(TypeError):
        scanner.incoming = (b"x",)


# -- clear() ------------------------------------------------------------------------


def test_clear_in_found_terminator_drops_rest(core):
    def on_found(rec):
        if len(rec.events) == 2:
            rec.scanner.clear()

    scanner, rec = make(core, b"\n", on_found=on_found)
    scanner.feed(rec, b"a\nb\nc\r")
    assert rec.events == [("data", b"a"), ("found", b"\n")]
    assert scanner.pending == b""
    scanner.feed(rec, b"d\ne")
    assert rec.events == [("data", b"a"), ("found", b"\n"), ("data", b"d"), ("found", b"\n"), ("data", b"e")]


def test_clear_in_found_terminator_int(core):
    scanner, rec = make(core, 2, on_found=lambda r: r.scanner.clear())
    scanner.feed(rec, b"abcdef")
    assert rec.events == [("data", b"ab"), ("found", 0)]
    assert scanner.pending == b""


def test_clear_in_collect_drops_held_prefix(core):
    scanner, rec = make(core, b"\r\n", on_data=lambda r, d: r.scanner.clear())
    scanner.feed(rec, b"abc\r")
    assert rec.events == [("data", b"abc")]
    assert scanner.pending == b""


def test_clear_in_collect_mode_empties_incoming(core):
    scanner = core.FrameScanner(core.MODE_COLLECT)
    scanner.set_terminator(b"\n")

    class Target:
        def found_terminator(self):
            scanner.clear()

    scanner.feed(Target(), b"abc")
    assert scanner.incoming == [b"abc"]
    scanner.feed(Target(), b"d\nignored\n")
    assert scanner.incoming == []
    assert scanner.pending == b""


def test_clear_in_frames_mode(core):
    scanner, rec = make(core, b"\n", mode=core.MODE_FRAMES, on_frame=lambda r, f: r.scanner.clear())
    scanner.feed(rec, b"a\nb\nc")
    assert rec.frames == [b"a"]
    assert scanner.incoming == [] and scanner.pending == b""


def test_clear_outside_callbacks(core):
    scanner, rec = make(core, b"\r\n")
    scanner.feed(rec, b"x\r")
    scanner.clear()
    assert scanner.pending == b""
    scanner.feed(rec, b"\n")
    assert rec.events == [("data", b"x"), ("data", b"\n")]


# -- exceptions in callbacks -----------------------------------------------------------


class Boom(Exception):
    pass


def test_exception_in_found_keeps_rest(core):
    def on_found(rec):
        if len(rec.events) == 2:
            raise Boom

    scanner, rec = make(core, b"\n", on_found=on_found)
    with pytest.raises(Boom):
        scanner.feed(rec, b"a\nb\nc")
    # asynchat had already cut b"a\n" off ac_in_buffer when found_terminator raised
    assert scanner.pending == b"b\nc"
    assert rec.events == [("data", b"a"), ("found", b"\n")]
    scanner.feed(rec, b"d\n")
    assert rec.events[2:] == [("data", b"b"), ("found", b"\n"), ("data", b"cd"), ("found", b"\n")]
    assert scanner.pending == b""


def test_exception_in_collect_keeps_chunk(core):
    calls = []

    def on_data(rec, data):
        calls.append(data)
        if len(calls) == 1:
            raise Boom

    scanner, rec = make(core, b"\n", on_data=on_data)
    with pytest.raises(Boom):
        scanner.feed(rec, b"ab\ncd")
    # asynchat slices ac_in_buffer only after collect_incoming_data returns
    assert scanner.pending == b"ab\ncd"
    scanner.feed(rec, b"\n")
    assert rec.events == [
        ("data", b"ab"),
        ("data", b"ab"),
        ("found", b"\n"),
        ("data", b"cd"),
        ("found", b"\n"),
    ]


def test_exception_in_collect_int_keeps_count(core):
    def on_data(rec, data):
        if len(rec.events) == 1:
            raise Boom

    scanner, rec = make(core, 5, on_data=on_data)
    with pytest.raises(Boom):
        scanner.feed(rec, b"abc")
    assert scanner.terminator == 5
    assert scanner.pending == b"abc"
    scanner.feed(rec, b"defg")
    assert rec.events == [("data", b"abc"), ("data", b"abcde"), ("found", 0), ("data", b"fg")]


def test_exception_in_collect_mode_found(core):
    scanner = core.FrameScanner(core.MODE_COLLECT)
    scanner.set_terminator(b";")
    frames = []

    class Target:
        def found_terminator(self):
            frames.append(scanner.get_data())
            if len(frames) == 1:
                raise Boom

    with pytest.raises(Boom):
        scanner.feed(Target(), b"a;b;c")
    assert frames == [b"a"]
    assert scanner.pending == b"b;c"
    scanner.feed(Target(), b";")
    assert frames == [b"a", b"b", b"c"]


def test_exception_in_frame_received(core):
    def on_frame(rec, frame):
        if frame == b"b":
            raise Boom

    scanner, rec = make(core, b";", mode=core.MODE_FRAMES, on_frame=on_frame)
    with pytest.raises(Boom):
        scanner.feed(rec, b"a;b;c;d")
    assert rec.frames == [b"a", b"b"]
    assert scanner.pending == b"c;d"


def test_exception_after_clear_keeps_nothing(core):
    def on_found(rec):
        rec.scanner.clear()
        raise Boom

    scanner, rec = make(core, b";", on_found=on_found)
    with pytest.raises(Boom):
        scanner.feed(rec, b"a;b;c")
    assert scanner.pending == b""


# -- stop() and max_frame ------------------------------------------------------------


def test_stop_leaves_the_rest_pending(core):
    scanner, rec = make(core, b"\n", on_found=lambda r: r.scanner.stop())
    scanner.feed(rec, b"a\nb\nc")
    assert rec.events == [("data", b"a"), ("found", b"\n")]
    assert scanner.pending == b"b\nc"
    scanner.process(rec)
    assert rec.events[2:] == [("data", b"b"), ("found", b"\n")]
    assert scanner.pending == b"c"
    scanner.process(rec)  # no terminator in what is left: delivered, nothing held
    assert rec.events[4:] == [("data", b"c")]
    assert scanner.pending == b""


def test_stop_in_frames_mode_one_frame_per_process(core):
    scanner, rec = make(
        core, 2, mode=core.MODE_FRAMES, on_frame=lambda r, f: (r.scanner.set_terminator(2), r.scanner.stop())
    )
    scanner.feed(rec, b"aabbccd")
    assert rec.frames == [b"aa"]
    for expected in ([b"aa", b"bb"], [b"aa", b"bb", b"cc"]):
        scanner.process(rec)
        assert rec.frames == expected
    assert scanner.pending == b"d"


class BigTarget(Recorder):
    def frame_too_large(self, size):
        self.events.append(("too_large", size))


def test_max_frame(core):
    scanner = core.FrameScanner()
    scanner.set_terminator(b"\n")
    rec = BigTarget(scanner)
    assert scanner.max_frame == 0
    scanner.max_frame = 5
    scanner.feed(rec, b"abcde\nabcdefgh\nxyz\n")
    assert rec.events[:2] == [("data", b"abcde"), ("found", b"\n")]
    assert rec.events[2][0] == "too_large" and rec.events[2][1] > 5
    # the oversized frame and the rest of that read are gone
    assert len(rec.events) == 3
    assert scanner.pending == b"" and scanner.incoming == []
    scanner.feed(rec, b"ok\n")
    assert rec.events[3:] == [("data", b"ok"), ("found", b"\n")]
    # across reads: the frame's size counts, not the read's
    scanner.feed(rec, b"abc")
    scanner.feed(rec, b"def\n")
    assert rec.events[5][0] == "data" and rec.events[6][0] == "too_large"
    with pytest.raises(ValueError):
        scanner.max_frame = -1
    scanner.max_frame = 0
    scanner.feed(rec, b"x" * 100 + b"\n")
    assert rec.events[-1] == ("found", b"\n")


@pytest.mark.parametrize("mode", ["MODE_CALLBACKS", "MODE_COLLECT", "MODE_FRAMES"])
def test_max_frame_change_in_callback_applies_to_the_next_byte(core, mode):
    # An HTTP-like exchange in one read: a head bounded by a small limit, then
    # a body longer than that limit, read with an int terminator after the
    # callback lifted the limit; then heads again, under the small limit.
    body = b"b" * 50

    def switch(scanner, frame):
        if frame.startswith(b"H"):
            scanner.max_frame = 0
            scanner.set_terminator(len(body))
        else:
            scanner.max_frame = 8
            scanner.set_terminator(b";")

    scanner = core.FrameScanner(getattr(core, mode))
    scanner.set_terminator(b";")
    scanner.max_frame = 8
    frames = []

    class Target(BigTarget):
        def collect_incoming_data(self, data):
            self.parts.append(data)

        def found_terminator(self):
            frame = scanner.get_data() if mode == "MODE_COLLECT" else b"".join(self.parts)
            self.parts = []
            frames.append(frame)
            switch(scanner, frame)

        def frame_received(self, frame):
            frames.append(frame)
            switch(scanner, frame)

    rec = Target(scanner)
    rec.parts = []
    if mode == "MODE_COLLECT":
        rec.collect_incoming_data = None  # the scanner collects, never calls it
    scanner.feed(rec, b"H1;" + body + b"H2;" + body + b"toolongahead;")
    assert frames == [b"H1", body, b"H2", body]
    assert [e[0] for e in rec.events] == ["too_large"]
    assert rec.events[0][1] > 8


# -- re-entrancy -------------------------------------------------------------------


@pytest.mark.parametrize("call", ["feed", "buffer_updated", "receive", "get_buffer", "process"])
def test_reentrant_calls_are_refused(core, call):
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    seen = []

    def on_found(rec):
        scanner = rec.scanner
        try:
            if call == "feed":
                scanner.feed(rec, b"more\n")
            elif call == "buffer_updated":
                scanner.buffer_updated(rec, 0)
            elif call == "receive":
                scanner.receive(rec, b)
            elif call == "process":
                if not hasattr(scanner, "process"):
                    raise RuntimeError("no process()")
                scanner.process(rec)
            else:
                scanner.get_buffer(16)
        except RuntimeError as exc:
            seen.append(exc)
            raise

    try:
        scanner, rec = make(core, b"\n", on_found=on_found)
        with pytest.raises(RuntimeError):
            scanner.feed(rec, b"x\ny\n")
        assert len(seen) == 1
        assert scanner.pending == b"y\n"
        # the scanner is usable again afterwards
        rec.on_found = None
        scanner.feed(rec, b"z\n")
        assert rec.events[-4:] == [("data", b"y"), ("found", b"\n"), ("data", b"z"), ("found", b"\n")]
    finally:
        a.close()
        b.close()


# -- validation --------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, -(1 << 70)])
def test_negative_int_terminator(core, bad):
    scanner = core.FrameScanner()
    scanner.set_terminator(b"x")
    with pytest.raises(ValueError):
        scanner.set_terminator(bad)
    with pytest.raises(ValueError):
        scanner.terminator = bad
    assert scanner.terminator == b"x"


@pytest.mark.parametrize("bad", [1.5, [b"\n"], object(), {"a": 1}, (b"\n",)])
def test_wrong_terminator_types(core, bad):
    scanner = core.FrameScanner()
    with pytest.raises(TypeError):
        scanner.set_terminator(bad)
    with pytest.raises(TypeError):
        scanner.terminator = bad
    assert scanner.terminator is None


def test_str_terminator_needs_encoding(core):
    scanner = core.FrameScanner()
    with pytest.raises(TypeError):
        scanner.set_terminator("\r\n")
    with pytest.raises(TypeError):
        scanner.terminator = "\r\n"
    scanner.set_terminator("\r\n", "ascii")
    assert scanner.terminator == b"\r\n"
    with pytest.raises(UnicodeEncodeError):
        scanner.set_terminator("\u20ac", "ascii")


@pytest.mark.parametrize("bad", ["text", 123, None, [1, 2], ""])
def test_feed_rejects_non_bytes(core, bad):
    scanner, rec = make(core, b"\n")
    with pytest.raises(TypeError):
        scanner.feed(rec, bad)
    assert rec.events == []


def test_int_terminator_past_sys_maxsize_is_refused_by_both_cores(core):
    scanner = core.FrameScanner()
    scanner.set_terminator(b"\n")
    for too_big in (sys.maxsize + 1, 2**64):
        with pytest.raises(ValueError, match="between 0 and sys.maxsize"):
            scanner.set_terminator(too_big)
        with pytest.raises(ValueError, match="between 0 and sys.maxsize"):
            scanner.terminator = too_big
        assert scanner.terminator == b"\n"  # refused: nothing changed
    scanner.set_terminator(sys.maxsize)
    assert scanner.terminator == sys.maxsize


def test_buffer_and_receive_argument_checks(core):
    scanner, rec = make(core, b"\n")
    buf = scanner.get_buffer(16)
    assert len(buf) >= 16
    with pytest.raises(ValueError):
        scanner.buffer_updated(rec, -1)
    with pytest.raises(ValueError):
        scanner.buffer_updated(rec, len(buf) + 1)
    del buf
    a, b = socket.socketpair()
    try:
        with pytest.raises(ValueError):
            scanner.receive(rec, b, 0)
    finally:
        a.close()
        b.close()


# -- get_buffer / buffer_updated / receive ------------------------------------------------


def test_get_buffer_buffer_updated(core):
    scanner, rec = make(core, b"\r\n")
    for piece in (b"abc\r", b"\ndef\r", b"\nxyz"):
        buf = scanner.get_buffer(64)
        assert len(buf) >= 64
        assert not buf.readonly
        buf[: len(piece)] = piece
        # the view is deliberately kept alive into the next get_buffer()
        scanner.buffer_updated(rec, len(piece))
    assert rec.events == [
        ("data", b"abc"),
        ("found", b"\r\n"),
        ("data", b"def"),
        ("found", b"\r\n"),
        ("data", b"xyz"),
    ]
    del buf


def test_get_buffer_with_held_bytes_across_sizes(core):
    scanner, rec = make(core, b"<end>")
    views = []
    stream = b"".join(b"frame%d<end>" % i for i in range(200))
    pos = 0
    size = 1
    while pos < len(stream):
        buf = scanner.get_buffer(size)
        views.append(buf)  # stale views must stay valid memory
        n = min(len(buf), 7, len(stream) - pos)
        buf[:n] = stream[pos : pos + n]
        scanner.buffer_updated(rec, n)
        pos += n
        size = size * 3 % 70000 + 1
    assert frames_of(rec.events) == ([b"frame%d" % i for i in range(200)], b"")
    for view in views:
        view[:1] = b"!"  # writing into an old view does not disturb the scanner
    scanner.feed(rec, b"tail<end>")
    assert frames_of(rec.events)[0][-1] == b"tail"


def test_get_buffer_default_size(core):
    scanner = core.FrameScanner()
    assert len(scanner.get_buffer()) >= core.DEFAULT_READ_SIZE
    assert len(scanner.get_buffer(-1)) >= core.DEFAULT_READ_SIZE


def test_buffer_updated_with_socket_recv_into(core):
    a, b = socket.socketpair()
    try:
        scanner, rec = make(core, b"\n")
        a.sendall(b"alpha\nbeta\ngam")
        n = b.recv_into(scanner.get_buffer(4096))
        scanner.buffer_updated(rec, n)
        a.sendall(b"ma\n")
        n = b.recv_into(scanner.get_buffer(4096))
        scanner.buffer_updated(rec, n)
        assert frames_of(rec.events) == ([b"alpha", b"beta", b"gamma"], b"")
    finally:
        a.close()
        b.close()


def test_receive_over_socketpair(core):
    a, b = socket.socketpair()
    try:
        b.setblocking(False)
        scanner, rec = make(core, b"\r\n")
        assert scanner.receive(rec, b) == -1
        a.sendall(b"one\r\ntwo\r")
        assert scanner.receive(rec, b) == 9
        assert scanner.pending == b"\r"
        a.sendall(b"\nthree")
        # small reads: the size limit is honoured
        assert scanner.receive(rec, b.fileno(), 3) == 3
        assert scanner.receive(rec, b, 100) == 3
        assert scanner.receive(rec, b) == -1
        assert rec.events == [
            ("data", b"one"),
            ("found", b"\r\n"),
            ("data", b"two"),
            ("found", b"\r\n"),
            ("data", b"th"),
            ("data", b"ree"),
        ]
        a.close()
        assert scanner.receive(rec, b) == 0
        assert scanner.receive(rec, b) == 0
    finally:
        a.close()
        b.close()


def test_receive_large_stream(core):
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        b.setblocking(False)
        frames = []
        scanner = core.FrameScanner(core.MODE_FRAMES)
        scanner.set_terminator(b"\n")

        class Target:
            def frame_received(self, frame):
                frames.append(frame)

        target = Target()
        payload = b"".join(b"%06d\n" % i for i in range(100000))
        view = memoryview(payload)
        sent = 0
        while True:
            if sent < len(payload):
                try:
                    sent += a.send(view[sent : sent + 65536])
                except BlockingIOError:
                    pass
            elif a.fileno() != -1:
                a.close()
            got = scanner.receive(target, b, 8192)
            if got == 0:
                break
        assert len(frames) == 100000
        assert frames[0] == b"000000" and frames[-1] == b"099999"
    finally:
        a.close()
        b.close()


def test_receive_error_raises_oserror(core):
    a, b = socket.socketpair()
    b.close()
    scanner, rec = make(core, b"\n")
    try:
        with pytest.raises(OSError) as info:
            scanner.receive(rec, b)
        assert not isinstance(info.value, BlockingIOError)
        fd = a.fileno()
        a.shutdown(socket.SHUT_RDWR)
        assert scanner.receive(rec, fd) == 0
    finally:
        a.close()


def test_receive_bad_fd(core):
    scanner, rec = make(core, b"\n")
    with pytest.raises(OSError) as info:
        scanner.receive(rec, 10**6)
    assert info.value.errno in (errno.EBADF, errno.ENOTSOCK)


# -- find_prefix_at_end ---------------------------------------------------------------


@pytest.mark.parametrize(
    "haystack, needle, expected",
    [
        (b"qwerty\r", b"\r\n", 1),
        (b"qwertydkjf", b"\r\n", 0),
        (b"", b"\r\n", 0),
        (b"\r", b"\r\n", 1),
        (b"a\r\n.", b"\r\n.\r\n", 3),
        (b"abab", b"ababc", 4),
        (b"aab", b"abc", 2),
        (b"x", b"x", 0),  # proper prefixes only
        (b"abc", b"", 0),
    ],
)
def test_find_prefix_at_end(core, haystack, needle, expected):
    if needle == b"":
        # asynchat's loop starts at -1 and never reaches 0; not a defined case
        return
    assert core.find_prefix_at_end(haystack, needle) == expected


def test_find_prefix_at_end_matches_reference(core, ref_asynchat):
    import itertools

    for hlen in range(0, 5):
        for hay in itertools.product(b"ab", repeat=hlen):
            hay = bytes(hay)
            for nlen in range(1, 5):
                for needle in itertools.product(b"ab", repeat=nlen):
                    needle = bytes(needle)
                    assert core.find_prefix_at_end(hay, needle) == ref_asynchat.find_prefix_at_end(hay, needle)
    # non-bytes arguments take the generic path
    assert core.find_prefix_at_end(bytearray(b"xy\r"), b"\r\n") == 1
    assert core.find_prefix_at_end("abc\r", "\r\n") == 1


# -- scale: the work is linear in the input ------------------------------------------------


def line_stream(nbytes):
    line = b"abcdefg\n"  # 8 bytes
    return line * (nbytes // len(line))


def count_collect(core, data, chunk):
    """Scan *data* in MODE_COLLECT; returns (frames, bytes in frames, leftover)."""
    scanner = core.FrameScanner(core.MODE_COLLECT)
    scanner.set_terminator(b"\n")
    counts = [0, 0]

    class Target:
        def found_terminator(self):
            counts[0] += 1
            counts[1] += len(scanner.get_data())

    target = Target()
    view = memoryview(data)
    for pos in range(0, len(data), chunk):
        scanner.feed(target, view[pos : pos + chunk])
    return counts[0], counts[1], scanner


@pytest.mark.parametrize("chunk", [65536, 65535, 1 << 22])
def test_linear_work_for_8_byte_lines(core, chunk):
    small, large = line_stream(1 << 20), line_stream(4 << 20)
    frames_small, bytes_small, _ = count_collect(core, small, chunk)
    frames_large, bytes_large, scanner = count_collect(core, large, chunk)
    assert frames_small == (1 << 20) // 8
    assert frames_large == 4 * frames_small
    assert bytes_small == 7 * frames_small and bytes_large == 4 * bytes_small
    assert scanner.pending == b"" and scanner.incoming == []


def test_long_frame_is_not_accumulated(core):
    # 4 MiB without a terminator, read in 64 KiB pieces: every piece goes out
    # as it arrives, at most len(terminator) - 1 bytes are ever held
    scanner, rec = make(core, b"\r\n.\r\n")
    piece = b"x" * 65533 + b"\r\n."
    calls = 0
    for _ in range(64):
        scanner.feed(rec, piece)
        assert len(scanner.pending) <= 4
        calls += 1
    assert len(rec.events) == 64
    assert sum(len(e[1]) for e in rec.events) == 64 * len(piece) - 3


@pytest.mark.parametrize("held", [False, True], ids=["fresh", "after-held-prefix"])
def test_feeding_4mib_at_once_does_not_copy_quadratically(core, held):
    # 32-byte lines: tracemalloc makes every allocation slow, and the point
    # here is the copying, not the frame count (test_linear_work covers that)
    data = (b"x" * 31 + b"\n") * ((4 << 20) // 32)
    count = [0]

    class Target:
        def collect_incoming_data(self, chunk):
            pass

        def found_terminator(self):
            count[0] += 1

    scanner = core.FrameScanner()
    target = Target()
    if held:
        scanner.set_terminator(b"\r\n")
        scanner.feed(target, b"\r")
        assert scanner.pending == b"\r"
    scanner.set_terminator(b"\n")
    tracemalloc.start()
    try:
        scanner.feed(target, data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count[0] == len(data) // 32
    # asynchat re-slices the rest of its buffer after every frame: ~2x the
    # input alive at once and len(data) ** 2 / 64 bytes copied in all.  A
    # linear scan copies the input at most once (held bytes + new data).
    assert peak < (1.5 if held else 0.5) * len(data)


# -- frame_follows(): is the peer pipelining? ------------------------------------------
class FollowRecorder:
    """Records frame_follows() at every callback, optionally acting first."""

    def __init__(self, scanner, act=None):
        self.scanner = scanner
        self.act = act
        self.seen = []

    def collect_incoming_data(self, data):
        self.seen.append(("chunk", data, self.scanner.frame_follows()))

    def found_terminator(self):
        if self.act:
            self.act(self.scanner, len(self.seen))
        self.seen.append(("end", self.scanner.frame_follows()))

    def frame_received(self, frame):
        if self.act:
            self.act(self.scanner, len(self.seen))
        self.seen.append((frame, self.scanner.frame_follows()))


@pytest.mark.parametrize("chunked", [False, True], ids=["one-read", "held-then-read"])
def test_frame_follows_with_a_bytes_terminator(core, chunked):
    s = core.FrameScanner(core.MODE_FRAMES)
    s.set_terminator(b"\r\n")
    rec = FollowRecorder(s)
    assert s.frame_follows() is False  # outside any callback
    if chunked:
        s.feed(rec, b"a\r\nb\r")
        s.feed(rec, b"\nc\r\nd")
        assert rec.seen == [(b"a", False), (b"b", True), (b"c", False)]
    else:
        s.feed(rec, b"a\r\nb\r\nc\r\nd")
        assert rec.seen == [(b"a", True), (b"b", True), (b"c", False)]
    assert s.frame_follows() is False


def test_frame_follows_in_callbacks_mode_is_about_the_current_frame(core):
    s = core.FrameScanner(core.MODE_CALLBACKS)
    s.set_terminator(b";")
    rec = FollowRecorder(s)
    s.feed(rec, b"one;two;thr")
    assert rec.seen == [
        ("chunk", b"one", True),
        ("end", True),
        ("chunk", b"two", False),
        ("end", False),
        ("chunk", b"thr", False),
    ]


def test_frame_follows_with_an_int_terminator_and_changes(core):
    s = core.FrameScanner(core.MODE_FRAMES)
    s.set_terminator(3)

    def act(scanner, index):
        # each frame sets the next count; the answer uses the count in force
        scanner.set_terminator([2, 5, 1][min(index, 2)])

    rec = FollowRecorder(s, act)
    s.feed(rec, b"abcdefghij")
    # abc (then 2: "de" is there), de (then 5: "fghij" is there), fghij (then 1: none left)
    assert rec.seen == [(b"abc", True), (b"de", True), (b"fghij", False)]


def test_frame_follows_sees_a_terminator_changed_in_the_callback(core):
    s = core.FrameScanner(core.MODE_FRAMES)
    s.set_terminator(b"\r\n")
    rec = FollowRecorder(s, lambda scanner, index: scanner.set_terminator(b"." if index == 0 else b"\r\n"))
    s.feed(rec, b"DATA\r\nbody.")
    assert rec.seen == [(b"DATA", True), (b"body", False)]


def test_frame_follows_is_false_after_clear_and_without_terminator(core):
    s = core.FrameScanner(core.MODE_FRAMES)
    s.set_terminator(b"\n")
    rec = FollowRecorder(s, lambda scanner, index: scanner.clear())
    s.feed(rec, b"a\nb\nc\n")
    assert rec.seen == [(b"a", False)]
    s = core.FrameScanner(core.MODE_FRAMES)
    s.set_terminator(None)
    rec = FollowRecorder(s)
    s.feed(rec, b"anything\n")
    assert rec.seen == [(b"anything\n", False)]
