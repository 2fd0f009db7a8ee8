"""asynframe: a fast, maintained successor to asyncore/asynchat.

``asynframe.asyncore`` and ``asynframe.asynchat`` are drop-in replacements
for the stdlib modules removed in Python 3.12, built on a compiled framing
core.  ``asynframe.install()`` makes ``import asyncore``/``import asynchat``
resolve to them.
"""

from __future__ import annotations

import sys
from typing import Any, Dict

from . import _core
from ._version import __version__
from .diagnostics import set_trace, use_logging

#: "c" when the compiled core is active, "python" for the pure twin.
CORE_IMPLEMENTATION: str = _core.IMPLEMENTATION
#: True when the compiled core is active.
USING_C_CORE: bool = CORE_IMPLEMENTATION == "c"

__all__ = [
    "__version__",
    "CORE_IMPLEMENTATION",
    "USING_C_CORE",
    "install",
    "uninstall",
    "set_trace",
    "use_logging",
]

_saved: Dict[str, Any] = {}


def _stdlib_has(name: str) -> bool:
    import importlib.util

    if name in sys.modules:
        return not getattr(sys.modules[name], "__asynframe__", False)
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def install(force: bool = False) -> bool:
    """Make ``import asyncore`` and ``import asynchat`` give asynframe's modules.

    Where the interpreter has no such modules (3.12+) this always happens.
    Where it has them (3.11 and older, or a backport is installed), it
    happens only with ``force=True``.  Returns True if the names now resolve
    to asynframe.  Call it before the legacy code imports them.
    """
    from . import asynchat as _asynchat
    from . import asyncore as _asyncore

    # The two names must resolve to one implementation: asynframe's channels
    # are served by asynframe's loop only.  Where just one is missing (3.12+
    # with the pyasyncore backport but not pyasynchat), both are installed.
    if not force and not (_stdlib_has("asyncore") and _stdlib_has("asynchat")):
        force = True
    installed = False
    for name, module in (("asyncore", _asyncore), ("asynchat", _asynchat)):
        current = sys.modules.get(name)
        if current is module:
            installed = True
            continue
        if not force and _stdlib_has(name):
            continue
        if name not in _saved:
            _saved[name] = current
        sys.modules[name] = module
        installed = True
    return installed


def uninstall() -> None:
    """Undo ``install()``: restore whatever ``asyncore``/``asynchat`` were before."""
    for name, previous in list(_saved.items()):
        if previous is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = previous
        del _saved[name]
