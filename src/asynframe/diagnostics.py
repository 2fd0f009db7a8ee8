"""Opt-in diagnostics: ``logging`` for ``log``/``log_info``/``handle_error``, and protocol tracing.

Both are off by default, so the drop-in modules behave exactly as the stdlib's
(``log`` writes to stderr, ``log_info`` prints).

Logging mode
    ``asynframe.use_logging(True)`` (or ``ASYNFRAME_LOGGING=1`` in the
    environment at import) sends ``log``/``log_info`` of every dispatcher to
    the logger ``asynframe.asyncore`` and makes ``handle_error`` log the
    exception with its traceback (``exc_info``) at ERROR.  A class opts in or
    out on its own with ``use_logging = True``/``False`` (``None``, the
    default, follows the global switch).

Protocol tracing
    ``channel.set_trace(True)`` on one channel, or ``asynframe.set_trace(True)``
    (``ASYNFRAME_TRACE=1`` at import) for every channel whose socket is set
    from then on, logs at DEBUG on the logger ``asynframe.trace``: each frame
    an ``async_chat`` receives (in all three delivery modes), each buffer
    queued with ``push``/``push_with_producer`` or produced by a producer,
    the byte count of each send, and for plain dispatchers each ``recv`` and
    ``send``.  Lines carry the descriptor, the peer, the size and the repr of
    the first 64 bytes.  Tracing works by wrapping the channel's methods on
    the instance when it is switched on; a channel that is not traced runs
    no tracing code at all.
"""

from __future__ import annotations

from . import asyncore
from ._channel_log import (
    _WRAPPED as _WRAPPED,
)
from ._channel_log import (
    DUMP_BYTES as DUMP_BYTES,
)
from ._channel_log import (
    LOGGER_NAME as LOGGER_NAME,
)
from ._channel_log import (
    TRACE_LOGGER_NAME as TRACE_LOGGER_NAME,
)
from ._channel_log import (
    log as log,
)
from ._channel_log import (
    log_info as log_info,
)
from ._channel_log import (
    logger as logger,
)
from ._channel_log import (
    logging_enabled as logging_enabled,
)
from ._channel_log import (
    report_error as report_error,
)
from ._channel_log import (
    state as state,
)
from ._channel_log import (
    trace_channel as trace_channel,
)
from ._channel_log import (
    trace_enabled as trace_enabled,
)
from ._channel_log import (
    trace_logger as trace_logger,
)
from ._channel_log import (
    use_logging as use_logging,
)
from ._channel_log import (
    wants_logging as wants_logging,
)

__all__ = [
    "LOGGER_NAME",
    "TRACE_LOGGER_NAME",
    "DUMP_BYTES",
    "use_logging",
    "logging_enabled",
    "set_trace",
    "trace_enabled",
    "trace_channel",
]


def set_trace(enabled: bool = True) -> None:
    """Trace every channel whose socket is set from now on, and the channels
    already in the default socket map (``False`` stops it for both)."""
    if not isinstance(enabled, bool):
        raise TypeError("set_trace() takes a bool, not %s" % type(enabled).__name__)
    state.trace = enabled
    for channel in list(asyncore.socket_map.values()):
        if isinstance(channel, asyncore.dispatcher):
            trace_channel(channel, enabled)
