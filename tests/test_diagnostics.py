"""Errors, logging mode and protocol tracing (``asynframe.diagnostics``).

* An exception in a user callback goes to ``handle_error`` and closes that
  channel only; the loop keeps serving the others (select and poll paths).
* ``log``/``log_info`` keep the stdlib output by default; with the global
  switch or a class's ``use_logging = True`` they go to the
  ``asynframe.asyncore`` logger, and ``handle_error`` logs the traceback.
* Tracing logs each frame once, in order, with sizes, in all three delivery
  modes, plus what is queued and sent; when it is off nothing is formatted.

Both cores: the file is marked ``api_layer`` (tests/conftest.py).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time

import pytest

import asynframe
from asynframe import _channel_log, asynchat, asyncore, diagnostics

from support import both_poll_modes, run_until

HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))
pytestmark = [pytest.mark.api_layer, pytest.mark.timeout(60)]


@pytest.fixture(autouse=True)
def switches_off():
    """Every test starts and ends with both global switches off."""
    saved = (diagnostics.state.logging, diagnostics.state.trace)
    diagnostics.state.logging = diagnostics.state.trace = False
    yield
    diagnostics.state.logging, diagnostics.state.trace = saved


class Listener(asyncore.dispatcher):
    def __init__(self, m, handler):
        super().__init__(map=m)
        self.handler = handler
        self.channels = []
        self.create_socket()
        self.bind(("127.0.0.1", 0))
        self.listen(64)
        self.port = self.socket.getsockname()[1]

    def handle_accepted(self, sock, addr):
        self.channels.append(self.handler(sock, self._map))


def client(port):
    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    return c


def recv_exactly(sock, n, m, use_poll=False):
    """Read *n* bytes from a blocking client, driving the loop meanwhile."""
    sock.setblocking(False)
    out = b""
    deadline = time.monotonic() + 10
    while len(out) < n:
        assert time.monotonic() < deadline, "timed out after %r" % out
        (asyncore.poll2 if use_poll else asyncore.poll)(0.01, m)
        try:
            got = sock.recv(65536)
        except BlockingIOError:
            continue
        if not got:
            break
        out += got
    sock.setblocking(True)
    return out


# -- errors in callbacks --------------------------------------------------------------
class Boom(Exception):
    pass


class LineEcho(asynchat.async_chat):
    """Echoes each line; the line b"boom" raises in the callback."""

    def __init__(self, sock, m):
        super().__init__(sock, m)
        self.set_terminator(b"\n")
        self.errors = []
        self.closed = 0

    collect_incoming_data = asynchat.async_chat._collect_incoming_data

    def found_terminator(self):
        line = self._get_data()
        if line == b"boom":
            raise Boom("user callback failed")
        self.push(line + b"\n")

    def handle_error(self):
        self.errors.append(sys.exc_info()[0])
        super().handle_error()

    def handle_close(self):
        self.closed += 1
        self.close()


class FrameEcho(LineEcho):
    collect_incoming_data = asynchat.async_chat.collect_incoming_data
    found_terminator = asynchat.async_chat.found_terminator

    def frame_received(self, frame):
        if frame == b"boom":
            raise Boom("user callback failed")
        self.push(frame + b"\n")


class CallbackEcho(LineEcho):
    def collect_incoming_data(self, data):
        self.buf = getattr(self, "buf", b"") + data

    def found_terminator(self):
        line, self.buf = getattr(self, "buf", b""), b""
        if line == b"boom":
            raise Boom("user callback failed")
        self.push(line + b"\n")


@both_poll_modes
@pytest.mark.parametrize("handler", [LineEcho, FrameEcho, CallbackEcho], ids=["collect", "frames", "callbacks"])
def test_callback_error_closes_only_that_channel(smap, use_poll, handler, capsys):
    server = Listener(smap, handler)
    good, bad = client(server.port), client(server.port)
    try:
        run_until(lambda: len(server.channels) == 2, smap, use_poll=use_poll)
        good.sendall(b"one\n")
        assert recv_exactly(good, 4, smap, use_poll) == b"one\n"
        bad.sendall(b"fine\nboom\nnever\n")
        assert recv_exactly(bad, 5, smap, use_poll) == b"fine\n"
        run_until(lambda: any(c.closed for c in server.channels), smap, use_poll=use_poll)
        bad_chan = [c for c in server.channels if c.closed]
        assert len(bad_chan) == 1 and bad_chan[0].errors == [Boom]
        assert bad_chan[0].closed == 1
        # the peer sees the close, and gets nothing past the failing frame
        assert recv_exactly(bad, 100, smap, use_poll) == b""
        # the loop and the other channel carry on
        good.sendall(b"two\nthree\n")
        assert recv_exactly(good, 10, smap, use_poll) == b"two\nthree\n"
        assert server.socket is not None and server.accepting
        out = capsys.readouterr().out
        assert "uncaptured python exception" in out and "Boom" in out
    finally:
        good.close()
        bad.close()


# -- logging mode ----------------------------------------------------------------------------
class Quiet(asyncore.dispatcher):
    pass


def test_default_output_is_stdlib(capsys, caplog):
    d = Quiet()
    with caplog.at_level(logging.DEBUG, logger="asynframe"):
        d.log("hello")
        d.log_info("note")
        d.log_info("skipped", "warning")
        d.log_info("bad", "error")
    out, err = capsys.readouterr()
    assert err == "log: hello\n"
    assert out == "info: note\nerror: bad\n"
    assert not caplog.records


def test_global_switch_routes_through_logging(capsys, caplog):
    asynframe.use_logging(True)
    d = Quiet()
    with caplog.at_level(logging.DEBUG, logger="asynframe"):
        d.log("hello")
        d.log_info("note")
        d.log_info("skipped", "warning")
        d.log_info("bad", "error")
        d.log_info("custom", "custom")
    out, err = capsys.readouterr()
    assert out == err == ""
    got = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert got == [
        ("asynframe.asyncore", logging.DEBUG, "hello"),
        ("asynframe.asyncore", logging.INFO, "note"),
        ("asynframe.asyncore", logging.ERROR, "bad"),
        ("asynframe.asyncore", logging.INFO, "custom"),
    ]
    asynframe.use_logging(False)
    d.log_info("back")
    assert capsys.readouterr().out == "info: back\n"


def test_bad_switch_values():
    with pytest.raises(TypeError):
        asynframe.use_logging("yes")
    with pytest.raises(TypeError):
        asynframe.set_trace(1)
    with pytest.raises(TypeError):
        Quiet().set_trace("on")


def test_per_class_opt_in_and_out(capsys, caplog):
    class Logs(asyncore.dispatcher):
        use_logging = True

    class Prints(asyncore.dispatcher):
        use_logging = False

    with caplog.at_level(logging.INFO, logger="asynframe"):
        Logs().log_info("to logging")
        Prints().log_info("to stdout")
        asynframe.use_logging(True)
        Prints().log_info("still stdout")
    assert capsys.readouterr().out == "info: to stdout\ninfo: still stdout\n"
    assert [r.getMessage() for r in caplog.records] == ["to logging"]


@both_poll_modes
def test_handle_error_logs_traceback_in_logging_mode(smap, use_poll, capsys, caplog):
    class Logged(LineEcho):
        use_logging = True

    server = Listener(smap, Logged)
    c = client(server.port)
    try:
        with caplog.at_level(logging.ERROR, logger="asynframe"):
            c.sendall(b"boom\n")
            run_until(lambda: server.channels and server.channels[0].closed, smap, use_poll=use_poll)
        (record,) = caplog.records
        assert record.name == "asynframe.asyncore" and record.levelno == logging.ERROR
        assert "uncaptured python exception, closing channel" in record.getMessage()
        assert record.exc_info and record.exc_info[0] is Boom
        assert "found_terminator" in caplog.text  # the traceback is in the log
        assert capsys.readouterr().out == ""
    finally:
        c.close()


def test_env_var_switches_at_import():
    code = "import asynframe, asynframe.diagnostics as d;print(d.logging_enabled(), d.trace_enabled())"
    env = dict(os.environ, ASYNFRAME_LOGGING="1", ASYNFRAME_TRACE="1", PYTHONPATH=os.path.join(ROOT, "src"))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.split() == ["True", "True"]
    env.update(ASYNFRAME_LOGGING="0", ASYNFRAME_TRACE="")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.split() == ["False", "False"]


# -- protocol tracing ----------------------------------------------------------------------
class Collected(asynchat.async_chat):
    """Stock collection; with a two-byte int frame after b"len\\n"."""

    def __init__(self, sock, m):
        super().__init__(sock, m)
        self.set_terminator(b"\n")
        self.frames = []

    collect_incoming_data = asynchat.async_chat._collect_incoming_data

    def found_terminator(self):
        frame = self._get_data()
        self.frames.append(frame)
        if frame == b"len":
            self.set_terminator(2)
        else:
            self.set_terminator(b"\n")
        self.push(b"ok:" + frame + b"\n")


class Callbacks(Collected):
    def collect_incoming_data(self, data):
        self.buf = getattr(self, "buf", b"") + data

    def _get_data(self):
        data, self.buf = getattr(self, "buf", b""), b""
        return data


class Frames(Collected):
    collect_incoming_data = asynchat.async_chat.collect_incoming_data
    found_terminator = asynchat.async_chat.found_terminator

    def frame_received(self, frame):
        self.incoming = [frame]
        Collected.found_terminator(self)


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def trace_log():
    handler = Records()
    log = logging.getLogger("asynframe.trace")
    old_level = log.level
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    try:
        yield handler.records
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)


STREAM = [b"hel", b"lo\nlen\nA", b"Bwor", b"ld\n" + b"x" * 100 + b"\n"]
FRAMES = [b"hello", b"len", b"AB", b"world", b"x" * 100]


def frame_lines(records):
    return [r.getMessage() for r in records if " frame " in r.getMessage()]


@both_poll_modes
@pytest.mark.parametrize("handler", [Collected, Callbacks, Frames], ids=["collect", "callbacks", "frames"])
@pytest.mark.parametrize("switch", ["channel", "global"])
def test_trace_logs_each_frame_once_in_order(smap, use_poll, handler, switch, trace_log):
    if switch == "global":
        asynframe.set_trace(True)

    class Traced(handler):
        def __init__(self, sock, m):
            super().__init__(sock, m)
            if switch == "channel":
                self.set_trace(True)

    server = Listener(smap, Traced)
    c = client(server.port)
    try:
        run_until(lambda: server.channels, smap, use_poll=use_poll)
        chan = server.channels[0]
        assert chan._af_generic_path is True
        for piece in STREAM:
            c.sendall(piece)
            for _ in range(3):
                (asyncore.poll2 if use_poll else asyncore.poll)(0.01, smap)
        expected = b"".join(b"ok:" + f + b"\n" for f in FRAMES)
        assert recv_exactly(c, len(expected), smap, use_poll) == expected
        assert chan.frames == FRAMES
        lines = frame_lines(trace_log)
        assert len(lines) == len(FRAMES)
        fd, port = chan._fileno, c.getsockname()[1]
        for line, frame in zip(lines, FRAMES):
            assert line.startswith("fd=%d peer=127.0.0.1:%d frame %d bytes " % (fd, port, len(frame)))
        assert lines[0].endswith("b'hello'")
        # the 100-byte frame is cut at 64 bytes, escaped, and marked as cut
        assert lines[-1].endswith(repr(b"x" * 64) + "...")
        messages = [r.getMessage() for r in trace_log]
        assert sum(" queued " in m for m in messages) == len(FRAMES)
        assert sum(int(m.split(" sent ")[1].split()[0]) for m in messages if " sent " in m) == len(expected)
        assert all(r.levelno == logging.DEBUG and r.name == "asynframe.trace" for r in trace_log)
        # switched off: the wrappers go, and nothing more is logged
        chan.set_trace(False)
        assert "push" not in chan.__dict__ and chan._af_generic_path is False
        del trace_log[:]
        c.sendall(b"quiet\n")
        assert recv_exactly(c, 9, smap, use_poll) == b"ok:quiet\n"
        assert trace_log == []
    finally:
        c.close()


def test_trace_producers_and_plain_dispatchers(smap, trace_log):
    a, b = socket.socketpair()
    try:
        chat = Collected(a, smap)
        chat.set_trace(True)
        chat.push_with_producer(asynchat.simple_producer(b"p" * 100, 30))
        chat.push_with_producer(b"raw")
        run_until(lambda: not chat._af_queue, smap)
        assert b.recv(1000) == b"p" * 100 + b"raw"
        messages = [r.getMessage() for r in trace_log]
        produced = [m for m in messages if " produced " in m]
        assert [int(m.split(" produced ")[1].split()[0]) for m in produced] == [30, 30, 30, 10]
        assert sum(int(m.split(" sent ")[1].split()[0]) for m in messages if " sent " in m) == 103
        chat.close()
    finally:
        a.close()
        b.close()
    del trace_log[:]
    a, b = socket.socketpair()
    try:
        d = asyncore.dispatcher_with_send(a, smap)
        d.set_trace(True)
        d.send(b"abc")
        plain = asyncore.dispatcher(b, smap)
        plain.set_trace(True)
        assert plain.recv(10) == b"abc"
        assert plain.send(b"back") == 4
        messages = [r.getMessage() for r in trace_log]
        assert any(" queued 3 bytes b'abc'" in m for m in messages)
        assert any(" sent 3 bytes" in m for m in messages)
        assert any(" received 3 bytes b'abc'" in m for m in messages)
        assert any(" sent 4 bytes b'back'" in m for m in messages)
    finally:
        asyncore.close_all(smap, ignore_all=True)


@both_poll_modes
@pytest.mark.parametrize("handler", [Collected, Callbacks, Frames], ids=["collect", "callbacks", "frames"])
def test_nothing_formatted_when_off(smap, use_poll, handler, monkeypatch):
    """Tracing off: no trace record is made and no dump is computed."""
    calls = []
    monkeypatch.setattr(_channel_log, "_dump", lambda data: calls.append(data) or "")
    monkeypatch.setattr(_channel_log, "_emit", lambda *a: calls.append(a))
    handler_ = Records()
    log = logging.getLogger("asynframe.trace")
    log.addHandler(handler_)
    old = log.level
    log.setLevel(logging.DEBUG)  # even with the logger open, the switch decides
    server = Listener(smap, handler)
    c = client(server.port)
    try:
        for piece in STREAM:
            c.sendall(piece)
        expected = b"".join(b"ok:" + f + b"\n" for f in FRAMES)
        assert recv_exactly(c, len(expected), smap, use_poll) == expected
        chan = server.channels[0]
        assert not any(name in chan.__dict__ for name in diagnostics._WRAPPED)
        assert chan._af_generic_path is False
    finally:
        c.close()
        log.removeHandler(handler_)
        log.setLevel(old)
    assert calls == [] and handler_.records == []


def test_global_switch_reaches_existing_channels(trace_log):
    """asynframe.set_trace() also covers channels already in the default map."""
    a, b = socket.socketpair()
    try:
        chat = Collected(a, None)  # the default socket_map
        assert "push" not in chat.__dict__
        asynframe.set_trace(True)
        assert chat._af_generic_path is True
        b.sendall(b"hi\n")
        deadline = time.monotonic() + 10
        while chat.frames != [b"hi"]:
            assert time.monotonic() < deadline
            asyncore.poll(0.01)
        assert frame_lines(trace_log)[0].endswith("frame 2 bytes b'hi'")
        asynframe.set_trace(False)
        assert "push" not in chat.__dict__ and chat._af_generic_path is False
    finally:
        asyncore.close_all(ignore_all=True)
        b.close()


def test_trace_on_but_logger_quiet_formats_nothing(smap, monkeypatch):
    """Traced channel, DEBUG disabled on the logger: no dump is made."""
    calls = []
    monkeypatch.setattr(_channel_log, "_dump", lambda data: calls.append(data) or "")
    log = logging.getLogger("asynframe.trace")
    old = log.level
    log.setLevel(logging.INFO)
    a, b = socket.socketpair()
    try:
        chat = Collected(a, smap)
        chat.set_trace(True)
        b.sendall(b"one\ntwo\n")
        run_until(lambda: len(chat.frames) == 2, smap)
        run_until(lambda: not chat._af_queue, smap)
        assert b.recv(100) == b"ok:one\nok:two\n"
    finally:
        log.setLevel(old)
        b.close()
    assert calls == []
