"""Recognise a ``collect_incoming_data`` that only hands data to the stock helper.

Much asynchat code, the benchmark's legacy echo channel among it, writes::

    def collect_incoming_data(self, data):
        self._collect_incoming_data(data)

because asynchat's own ``collect_incoming_data`` raises NotImplementedError.
Run as written, that is a Python frame per chunk whose only effect is the
helper's ``incoming.append(data)``.  The compiled loop
(``_loop_records.pxi``) appends the chunk itself for such a method, but only
while the result cannot differ: the function still has the code recognised
here, the instance and class still resolve ``self._collect_incoming_data`` to
the scanner's own ``collect``, and no tracer, profiler or frame-evaluation
hook could see the frame that was skipped.

The shapes are compiled by the running interpreter, below, so the comparison
is of bytecode as this interpreter makes it: the method may name its
arguments anything, carry a docstring or annotations, return the helper's
result or not; anything else (another call, a default argument used, a
decorator that wraps it) is not recognised and is called as usual.
"""

from __future__ import annotations

from types import CodeType, FunctionType
from typing import Any, Optional, Tuple

# Flags that make a function with that body something else: *args or
# **kwargs, a generator or a coroutine (before 3.10 an ``async def`` compiles
# to the very same bytecode; only this flag tells).  The values are
# inspect's CO_* (tests/test_collect_in_core.py checks them); inspect itself
# is not imported for five constants.
_CO_VARARGS = 0x04
_CO_VARKEYWORDS = 0x08
_CO_GENERATOR = 0x20
_CO_COROUTINE = 0x80
_CO_ITERABLE_COROUTINE = 0x100
_CO_ASYNC_GENERATOR = 0x200
_CO_NOT_PLAIN = (
    _CO_VARARGS | _CO_VARKEYWORDS | _CO_GENERATOR | _CO_COROUTINE | _CO_ITERABLE_COROUTINE | _CO_ASYNC_GENERATOR
)


def _hands_on(self: Any, data: Any) -> None:
    self._collect_incoming_data(data)


def _hands_on_documented(self: Any, data: Any) -> None:
    """(the docstring is the first constant; its text does not matter)"""
    self._collect_incoming_data(data)


def _returns_helper(self: Any, data: Any) -> Any:
    return self._collect_incoming_data(data)


def _returns_helper_documented(self: Any, data: Any) -> Any:
    """(the docstring is the first constant; its text does not matter)"""
    return self._collect_incoming_data(data)


# (code, whether its first constant is a docstring)
_SHAPES: Tuple[Tuple[CodeType, bool], ...] = tuple(
    (func.__code__, func.__doc__ is not None)
    for func in (_hands_on, _hands_on_documented, _returns_helper, _returns_helper_documented)
)


def _same_shape(code: CodeType, shape: CodeType, documented: bool) -> bool:
    if (
        code.co_code != shape.co_code
        or code.co_names != shape.co_names
        or code.co_argcount != 2
        or code.co_kwonlyargcount
        or code.co_nlocals != 2
        or code.co_freevars
        or code.co_cellvars
        or code.co_flags & _CO_NOT_PLAIN
        or getattr(code, "co_exceptiontable", b"") != getattr(shape, "co_exceptiontable", b"")
    ):
        return False
    if documented:
        return (
            len(code.co_consts) == len(shape.co_consts)
            and type(code.co_consts[0]) is str
            and code.co_consts[1:] == shape.co_consts[1:]
        )
    return code.co_consts == shape.co_consts


def collect_handing_code(func: Any) -> Optional[CodeType]:
    """``func.__code__`` if *func* is a plain function whose whole body is
    ``self._collect_incoming_data(data)`` (see the module docstring), else None.

    The caller keeps the code object and compares it with ``func.__code__``
    before each use: assigning a function's ``__code__`` changes neither its
    class nor any dict.
    """
    if type(func) is not FunctionType:
        return None
    code = func.__code__
    for shape, documented in _SHAPES:
        if _same_shape(code, shape, documented):
            return code
    return None
