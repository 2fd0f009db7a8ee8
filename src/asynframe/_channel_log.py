"""A channel's logging mode and protocol tracing (a channel feature).

``dispatcher.log``/``log_info``/``handle_error`` ask ``wants_logging`` and
call the functions here in logging mode; ``dispatcher.set_socket`` and
``set_trace`` switch tracing on one channel.  The switches and what they do
are documented in ``asynframe.diagnostics``, the public module.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Callable, Dict, Optional

#: Logger of ``log``/``log_info``/``handle_error`` in logging mode.
LOGGER_NAME = "asynframe.asyncore"
#: Logger of protocol tracing (DEBUG records only).
TRACE_LOGGER_NAME = "asynframe.trace"
#: How many leading bytes a trace line shows.
DUMP_BYTES = 64

logger = logging.getLogger(LOGGER_NAME)
trace_logger = logging.getLogger(TRACE_LOGGER_NAME)

_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


class _State:
    # module-level switches read by asyncore on each log call / set_socket
    logging = _env_flag("ASYNFRAME_LOGGING")
    trace = _env_flag("ASYNFRAME_TRACE")


state = _State()


# -- logging mode ----------------------------------------------------------------
def use_logging(enabled: bool = True) -> None:
    """Route ``log``/``log_info``/``handle_error`` of all dispatchers through ``logging``.

    Classes with ``use_logging = True`` or ``False`` keep their own choice.
    """
    if not isinstance(enabled, bool):
        raise TypeError("use_logging() takes a bool, not %s" % type(enabled).__name__)
    state.logging = enabled


def logging_enabled() -> bool:
    """Whether the global logging mode is on."""
    return state.logging


def wants_logging(channel: Any) -> bool:
    """The channel's class choice, else the global switch."""
    choice = channel.use_logging
    if choice is None:
        return state.logging
    return bool(choice)


def log(channel: Any, message: Any) -> None:
    """``dispatcher.log`` in logging mode: a DEBUG record (asyncore's debug output)."""
    logger.debug("%s", message)


def log_info(channel: Any, message: Any, type: str) -> None:
    """``dispatcher.log_info`` in logging mode: *type* picks the level."""
    logger.log(_LEVELS.get(type, logging.INFO), "%s", message)


def report_error(channel: Any) -> None:
    """``dispatcher.handle_error`` in logging mode: the exception with its traceback."""
    try:
        name = repr(channel)
    except Exception:
        name = "<__repr__(self) failed for object at %#x>" % id(channel)
    logger.error("uncaptured python exception, closing channel %s", name, exc_info=sys.exc_info())


# -- protocol tracing ----------------------------------------------------------------
def trace_enabled() -> bool:
    """Whether the global tracing switch is on."""
    return state.trace


def _bytes_view(data: Any) -> Any:
    if isinstance(data, memoryview) and (data.format != "B" or data.ndim != 1):
        return data.cast("B") if data.c_contiguous else memoryview(data.tobytes())
    return data


def _dump(data: Any) -> str:
    head = bytes(data[:DUMP_BYTES])
    text = repr(head)
    if len(data) > DUMP_BYTES:
        text += "..."
    return text


def _peer(channel: Any) -> str:
    addr = channel.addr
    if isinstance(addr, tuple) and len(addr) >= 2:
        return "%s:%s" % (addr[0], addr[1])
    return repr(addr)


def _emit(channel: Any, what: str, data: Any) -> None:
    data = _bytes_view(data)
    trace_logger.debug("fd=%s peer=%s %s %d bytes %s", channel._fileno, _peer(channel), what, len(data), _dump(data))


class _CountingProducer:
    """Forwards ``more()`` and traces what the producer hands over."""

    def __init__(self, channel: Any, producer: Any) -> None:
        self._af_channel = channel
        self._af_producer = producer
        self.produced = 0

    def more(self) -> Any:
        data = self._af_producer.more()
        if data:
            self.produced += len(data)
            counts = self._af_channel.__dict__.get("_af_trace_counts")
            if counts is not None:
                counts["produced"] += len(data)
            if trace_logger.isEnabledFor(logging.DEBUG):
                _emit(
                    self._af_channel,
                    "produced",
                    data if not isinstance(data, str) else data.encode(self._af_channel.encoding),
                )
        return data

    def __getattr__(self, name: str) -> Any:
        # a producer with extra attributes keeps them visible
        return getattr(self.__dict__["_af_producer"], name)


_WRAPPED = (
    "frame_received",
    "found_terminator",
    "collect_incoming_data",
    "push",
    "push_with_producer",
    "initiate_send",
    "send",
    "recv",
)


def _chat_wrappers(channel: Any) -> Dict[str, Callable[..., Any]]:
    scanner = channel._af_setup()
    counts = channel.__dict__["_af_trace_counts"] = {"produced": 0}
    wrappers = _chat_input_wrappers(channel, scanner)
    wrappers.update(_chat_output_wrappers(channel, channel._af_queue, counts))
    return wrappers


def _chat_input_wrappers(channel: Any, scanner: Any) -> Dict[str, Callable[..., Any]]:
    """Trace each frame as the channel's input mode delivers it."""
    from ._core import MODE_CALLBACKS, MODE_COLLECT, MODE_FRAMES

    mode = scanner.mode
    if mode == MODE_FRAMES:
        inner_frame = channel.frame_received

        def frame_received(frame: Any) -> Any:
            if trace_logger.isEnabledFor(logging.DEBUG):
                _emit(channel, "frame", frame)
            return inner_frame(frame)

        return {"frame_received": frame_received}
    if mode == MODE_COLLECT:
        inner_found = channel.found_terminator

        def found_terminator_collect() -> Any:
            if trace_logger.isEnabledFor(logging.DEBUG):
                _emit(channel, "frame", b"".join(scanner.incoming))
            return inner_found()

        return {"found_terminator": found_terminator_collect}
    assert mode == MODE_CALLBACKS
    return _chat_callback_wrappers(channel)


def _chat_callback_wrappers(channel: Any) -> Dict[str, Callable[..., Any]]:
    """Callback mode hands a frame over in pieces: sum them up, trace at the terminator."""
    inner_found_cb = channel.found_terminator
    inner_collect = channel.collect_incoming_data
    # size and leading bytes of the frame being delivered in pieces
    partial: Dict[str, Any] = {"size": 0, "head": b""}

    def collect_incoming_data(data: Any) -> Any:
        partial["size"] += len(data)
        head = partial["head"]
        if len(head) <= DUMP_BYTES:
            partial["head"] = head + bytes(data[: DUMP_BYTES + 1 - len(head)])
        return inner_collect(data)

    def found_terminator_cb() -> Any:
        size, head = partial["size"], partial["head"]
        partial["size"], partial["head"] = 0, b""
        if trace_logger.isEnabledFor(logging.DEBUG):
            trace_logger.debug("fd=%s peer=%s frame %d bytes %s", channel._fileno, _peer(channel), size, _dump(head))
        return inner_found_cb()

    return {"collect_incoming_data": collect_incoming_data, "found_terminator": found_terminator_cb}


def _chat_output_wrappers(channel: Any, queue: Any, counts: Dict[str, int]) -> Dict[str, Callable[..., Any]]:
    """Trace what is queued, and what was sent by each ``initiate_send``."""
    inner_push = channel.push
    inner_push_producer = channel.push_with_producer
    inner_initiate = channel.initiate_send

    def push(data: Any) -> None:
        if trace_logger.isEnabledFor(logging.DEBUG) and isinstance(data, (bytes, bytearray, memoryview)):
            _emit(channel, "queued", data)
        inner_push(data)

    def push_with_producer(producer: Any) -> None:
        if isinstance(producer, (bytes, bytearray, memoryview)):
            if trace_logger.isEnabledFor(logging.DEBUG):
                _emit(channel, "queued", producer)
        elif hasattr(producer, "more"):
            producer = _CountingProducer(channel, producer)
        inner_push_producer(producer)

    def initiate_send() -> None:
        # bytes sent = buffered before + produced meanwhile - buffered after
        before = queue.buffered
        produced = counts["produced"]
        inner_initiate()
        sent = before + counts["produced"] - produced - queue.buffered
        if sent > 0 and trace_logger.isEnabledFor(logging.DEBUG):
            trace_logger.debug("fd=%s peer=%s sent %d bytes", channel._fileno, _peer(channel), sent)

    return {"push": push, "push_with_producer": push_with_producer, "initiate_send": initiate_send}


def _dispatcher_wrappers(channel: Any) -> Dict[str, Callable[..., Any]]:
    wrappers: Dict[str, Callable[..., Any]] = {}
    inner_send = channel.send
    if channel._af_trace_kind == "queued":
        queue = channel._af_queue

        def send_queued(data: Any) -> Any:
            before = queue.buffered
            if trace_logger.isEnabledFor(logging.DEBUG):
                _emit(channel, "queued", data)
            result = inner_send(data)
            sent = before + len(data) - queue.buffered
            if sent > 0 and trace_logger.isEnabledFor(logging.DEBUG):
                trace_logger.debug("fd=%s peer=%s sent %d bytes", channel._fileno, _peer(channel), sent)
            return result

        inner_initiate = channel.initiate_send

        def initiate_send() -> None:
            before = queue.buffered
            inner_initiate()
            sent = before - queue.buffered
            if sent > 0 and trace_logger.isEnabledFor(logging.DEBUG):
                trace_logger.debug("fd=%s peer=%s sent %d bytes", channel._fileno, _peer(channel), sent)

        wrappers["send"] = send_queued
        wrappers["initiate_send"] = initiate_send
    else:

        def send(data: Any) -> Any:
            sent = inner_send(data)
            if sent and trace_logger.isEnabledFor(logging.DEBUG):
                _emit(channel, "sent", _bytes_view(data)[:sent])
            return sent

        wrappers["send"] = send
    inner_recv = channel.recv

    def recv(size: int) -> Any:
        data = inner_recv(size)
        if data and trace_logger.isEnabledFor(logging.DEBUG):
            _emit(channel, "received", data)
        return data

    wrappers["recv"] = recv
    return wrappers


def trace_channel(channel: Any, enabled: bool = True) -> None:
    """Switch tracing on or off for one channel (``dispatcher.set_trace`` calls this)."""
    if not isinstance(enabled, bool):
        raise TypeError("set_trace() takes a bool, not %s" % type(enabled).__name__)
    attrs = channel.__dict__
    installed: Optional[Dict[str, Any]] = attrs.get("_af_trace_wrappers")
    if enabled == (installed is not None):
        return
    if not enabled:
        assert installed is not None
        for name, wrapper in installed.items():
            if attrs.get(name) is wrapper:
                del attrs[name]
        del attrs["_af_trace_wrappers"]
        attrs.pop("_af_trace_counts", None)
        channel._af_refresh_generic_path()
        return
    # the channel's class says what it is: "chat" (async_chat), "queued"
    # (dispatcher_with_send) or "plain" (dispatcher)
    if channel._af_trace_kind == "chat":
        wrappers = _chat_wrappers(channel)
    else:
        wrappers = _dispatcher_wrappers(channel)
    for name in wrappers:
        assert name in _WRAPPED
    attrs.update(wrappers)
    attrs["_af_trace_wrappers"] = wrappers
    # the compiled loop's fast path would skip the wrapped methods
    channel._af_refresh_generic_path()
