"""Class-level plumbing shared by ``asynchat.async_chat`` and ``aio.ChatProtocol``.

Both put the same framing core behind the same asynchat interface; what a
subclass looks like decides how the core delivers data, and legacy class
attributes must not hide the properties the core backs.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

from ._core import MODE_CALLBACKS, MODE_COLLECT, MODE_FRAMES

_mode_cache: Dict[type, int] = {}


def delivery_mode(cls: type, stock_collect: Callable[..., Any]) -> int:
    """The scanner mode for *cls*: one call per frame if it defines
    ``frame_received``, collection in C if its ``collect_incoming_data`` is
    the stock *stock_collect*, asynchat's two callbacks otherwise."""
    try:
        return _mode_cache[cls]
    except KeyError:
        pass
    if getattr(cls, "frame_received", None) is not None:
        mode = MODE_FRAMES
    elif getattr(cls, "collect_incoming_data", None) is stock_collect:
        mode = MODE_COLLECT
    else:
        mode = MODE_CALLBACKS
    _mode_cache[cls] = mode
    return mode


def take_class_default(cls: type, base: type, name: str) -> Tuple[bool, Any]:
    """Remove a plain ``name = value`` from *cls*'s body and return it.

    Legacy subclasses write ``terminator = b"\\r\\n"``; left on the class it
    would hide *base*'s property of that name, which the core backs.
    Returns (False, None) when *cls* defines no such plain value.
    """
    value = cls.__dict__.get(name, getattr(base, name))
    if hasattr(value, "__get__"):
        return False, None
    delattr(cls, name)
    return True, value


class SocketSlot:
    """``dispatcher.socket``: an assignment first sends held replies.

    async_chat may hold replies to pipelined frames for one send (see
    asynchat.py); they must leave on the socket they were pushed for, ahead
    of whatever the new one (a TLS wrapper, STARTTLS) carries.  There is no
    ``__get__``, so reading ``self.socket`` is a plain instance-dict lookup.
    """

    def __set__(self, obj: Any, value: Any) -> None:
        attrs = obj.__dict__
        if attrs.get("_af_dispatching"):
            obj._af_release()
        attrs["socket"] = value

    def __delete__(self, obj: Any) -> None:
        del obj.__dict__["socket"]
