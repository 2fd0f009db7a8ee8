"""``python -m asynframe``: what a bug report needs to say about this install.

Prints the version, which framing core is active and why, which poller the
loop uses, the Python build (free-threaded or not, the GIL at run time) and
the OpenSSL that TLS uses.
"""

from __future__ import annotations

import os
import platform
import sys
import sysconfig
from typing import List, Tuple


def core_reason() -> str:
    """Why the active core is the one it is."""
    from . import _core

    if _core.NO_EXTENSIONS:
        return "ASYNFRAME_NO_EXTENSIONS=%s forces the pure core" % os.environ.get("ASYNFRAME_NO_EXTENSIONS")
    if platform.python_implementation() != "CPython":
        return "the compiled core is for CPython; this is %s" % platform.python_implementation()
    if _core.IMPLEMENTATION == "c":
        return "compiled extension loaded"
    try:
        from . import _core_c  # noqa: F401
    except ImportError as exc:
        return "compiled extension not importable: %s" % exc
    return "unknown"


def poller_name() -> str:
    import selectors

    from . import _poller

    if _poller.Backend.supports_pri:
        return "epoll"
    return "selectors.%s" % selectors.DefaultSelector.__name__


def facts() -> List[Tuple[str, str]]:
    import asynframe

    from . import _poller, asynchat  # noqa: F401  (asynchat enables the compiled loop)

    try:
        import ssl

        openssl = ssl.OPENSSL_VERSION
    except ImportError:
        openssl = "no ssl module"
    free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    build = "free-threaded" if free_threaded else "with the GIL"
    if free_threaded and hasattr(sys, "_is_gil_enabled"):
        build += ", GIL %s at run time" % ("enabled" if sys._is_gil_enabled() else "disabled")
    return [
        ("asynframe", "%s (%s)" % (asynframe.__version__, os.path.dirname(asynframe.__file__))),
        ("core", "%s: %s" % (asynframe.CORE_IMPLEMENTATION, core_reason())),
        ("poller", poller_name()),
        (
            "compiled loop dispatch",
            "on" if _poller.LOOP_IMPLEMENTATION == "c" else "off (needs the compiled core and epoll)",
        ),
        ("python", "%s %s, %s" % (platform.python_implementation(), platform.python_version(), build)),
        ("platform", "%s %s" % (platform.system(), platform.machine())),
        ("openssl", openssl),
    ]


def main() -> None:
    rows = facts()
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print("%-*s  %s" % (width, name, value))


if __name__ == "__main__":
    main()
