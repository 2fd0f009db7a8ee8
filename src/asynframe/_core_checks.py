"""Argument checks shared by the compiled core and its pure twin.

Both cores import these, so they accept and reject the same values with the
same errors, and a rejected call changes nothing (every check runs before
any state is touched).  Counts are bounded by ``sys.maxsize``: the compiled
core keeps them in a ``Py_ssize_t``.
"""

from __future__ import annotations

import operator
import sys
from typing import Any, Optional, Union

MAX_COUNT = sys.maxsize

#: The most one read asks the socket for.  A larger ``ac_in_buffer_size``
#: is clamped to it: a recv may return less than asked anyway, and the core
#: must not reserve gigabytes for a read that brings a few bytes.
MAX_READ = 1 << 24

Terminator = Union[bytes, int, None]


def check_count(name: str, value: Any, minimum: int = 0) -> int:
    """*value* as an int in ``minimum..sys.maxsize``; TypeError or ValueError otherwise."""
    try:
        number = int(operator.index(value))  # an exact int (3.9 returns bool as is)
    except TypeError:
        raise TypeError("%s must be an int, not %s" % (name, type(value).__name__)) from None
    if not minimum <= number <= MAX_COUNT:
        raise ValueError("%s must be between %d and sys.maxsize, not %d" % (name, minimum, number))
    return number


def check_terminator(term: Any, encoding: Optional[str]) -> Terminator:
    """The terminator as the cores keep it: bytes, an int count, or None."""
    if term is None:
        return None
    if isinstance(term, str):
        if encoding is None:
            raise TypeError("str terminator %r needs use_encoding; pass bytes instead" % (term,))
        return term.encode(encoding)
    if isinstance(term, int):
        # an int subclass (bool, IntEnum) counts as the plain number
        return check_count("an int terminator (a byte count)", term)
    if isinstance(term, (bytes, bytearray, memoryview)):
        return bytes(term)
    raise TypeError(
        "terminator must be bytes, a non-negative int or None, not %s" % type(term).__name__)


def _size(size: Any, lowest_message: str) -> int:
    try:
        number = int(operator.index(size))
    except TypeError:
        raise TypeError("size must be an int, not %s" % type(size).__name__) from None
    if number < 1:
        raise ValueError(lowest_message % number)
    return number


def check_chunk_size(size: Any) -> int:
    """``PushQueue.next_chunk``'s size: at least 1, anything larger means "all"."""
    return min(_size(size, "size must be at least 1, not %d"), MAX_COUNT)


def check_read_size(size: Any) -> int:
    """A read's size (``ac_in_buffer_size``, ``fill``): at least 1, clamped to ``MAX_READ``."""
    return min(_size(size, "size must be positive, not %d"), MAX_READ)
