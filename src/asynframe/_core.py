"""Pick the framing core: the compiled ``_core_c`` or its pure twin ``_core_py``.

The pure twin is used when ``ASYNFRAME_NO_EXTENSIONS`` is set to a non-empty
value other than ``0``, on interpreters other than CPython, or when the
extension is missing.  ``IMPLEMENTATION`` says which one is active ("c" or
"python"); ``asynframe.USING_C_CORE`` is the same fact as a bool.
"""

from __future__ import annotations

import os
import platform
from typing import TYPE_CHECKING

NO_EXTENSIONS = os.environ.get("ASYNFRAME_NO_EXTENSIONS", "") not in ("", "0")

if TYPE_CHECKING:
    # the constants are the twins' shared ones
    from ._core_common import (
        DEFAULT_READ_SIZE,
        FILE_READ_SIZE,
        IOV_MAX,
        MODE_CALLBACKS,
        MODE_COLLECT,
        MODE_FRAMES,
        SEND_BUDGET,
        SENDFILE_MAX,
    )
    from ._core_py import FileProducer, FrameScanner, PushQueue, find_prefix_at_end

    IMPLEMENTATION: str
elif NO_EXTENSIONS or platform.python_implementation() != "CPython":
    from ._core_py import *  # noqa: F401,F403
    from ._core_py import IMPLEMENTATION
else:
    try:
        from ._core_c import *  # noqa: F401,F403
        from ._core_c import IMPLEMENTATION
    except ImportError:  # no compiled core in this install
        from ._core_py import *  # noqa: F401,F403
        from ._core_py import IMPLEMENTATION

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
