"""Pure-Python twin of the framing core (``asynframe._core_c``).

Same classes, same methods, same observable behaviour as the Cython module;
used on PyPy, where no compiler was available, or when
``ASYNFRAME_NO_EXTENSIONS=1`` is set.  ``tests/`` runs every behaviour test
against both.

Two objects make up the core, each in a module of its own:

``FrameScanner`` (``_scanner_py``)
    The input side.  Bytes go in (``feed`` or ``get_buffer``/``buffer_updated``)
    and come out as the callback sequence ``asynchat.async_chat.handle_read``
    would produce for the same bytes and the same terminators.

``PushQueue`` (``_push_queue_py``)
    The output side.  An ordered queue of byte strings, producers and the
    close sentinel, flushed with one scatter-gather ``sendmsg`` per call.

``FileProducer`` and the constants are the ones both twins share
(``_core_common``).  This module is the pure core's public face: the names
below are what ``asynframe._core`` picks from either twin.
"""

from __future__ import annotations

from ._core_common import (
    DEFAULT_READ_SIZE,
    FILE_READ_SIZE,
    IOV_MAX,
    MODE_CALLBACKS,
    MODE_COLLECT,
    MODE_FRAMES,
    SEND_BUDGET,
    SENDFILE_MAX,
    FileProducer,
)
from ._push_queue_py import PushQueue
from ._scanner_py import FrameScanner, find_prefix_at_end

IMPLEMENTATION = "python"

__all__ = [
    "DEFAULT_READ_SIZE",
    "FILE_READ_SIZE",
    "IOV_MAX",
    "MODE_CALLBACKS",
    "MODE_COLLECT",
    "MODE_FRAMES",
    "SEND_BUDGET",
    "SENDFILE_MAX",
    "FileProducer",
    "FrameScanner",
    "PushQueue",
    "find_prefix_at_end",
    "IMPLEMENTATION",
]
