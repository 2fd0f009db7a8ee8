"""Framing scenarios shared by the differential tests (test_differential.py,
test_aio.py): hypothesis strategies for streams, chunkings, terminators and
terminator-change scripts, the reference asynchat run on them, and the
targets that record what a core delivers.
"""

from __future__ import annotations

from hypothesis import strategies as st

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

streams = st.lists(st.one_of(st.sampled_from(PIECES), st.binary(max_size=6)), max_size=80).map(b"".join)

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
        "external": draw(
            st.lists(
                st.one_of(st.just(KEEP), st.just(KEEP), st.just(KEEP), terminators),
                min_size=len(chunks),
                max_size=len(chunks),
            )
        ),
        # collect_incoming_data raises on these calls (1-based)
        "collect_raises": (draw(st.sets(st.integers(1, 30), max_size=3)) if collect_raises else set()),
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
