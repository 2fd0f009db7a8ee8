"""The non-hot code of the framing core, written once for both twins.

The compiled core (``_core_c``) and its pure twin (``_core_py``) import
their constants, argument checks and file reads from here, as msgpack's
extension and fallback share their Python module.  So both accept and
reject the same values with the same errors, and a rejected call changes
nothing (every check runs before any state is touched).  Counts are bounded
by ``sys.maxsize``: the compiled core keeps them in a ``Py_ssize_t``.
Only what runs per byte or per frame is written twice.
"""

from __future__ import annotations

import errno
import io
import operator
import os
import stat
import sys
from typing import Any, Optional, Tuple, Union

MAX_COUNT = sys.maxsize

# One-frame-at-a-time delivery modes of FrameScanner; see its docstring.
MODE_CALLBACKS = 0
MODE_COLLECT = 1
MODE_FRAMES = 2

# Upper bound on the number of buffers handed to one sendmsg(); Linux and the
# BSDs all accept 1024 (IOV_MAX), and past a few hundred the gain is nil.
IOV_MAX = 1024
# One flush stops gathering once this many bytes are lined up: the kernel will
# not take much more than its socket buffer anyway, and pulling producers
# further ahead would only buffer their output in user space.
SEND_BUDGET = 1 << 20
# Default size of one read into the scanner (asynchat reads 65536 too).
DEFAULT_READ_SIZE = 65536
# One read from a queued file when it cannot go out with sendfile()
# (asynchat's ac_out_buffer_size).
FILE_READ_SIZE = 65536
# Most bytes asked of one sendfile(); the socket buffer takes far less anyway.
SENDFILE_MAX = 1 << 30
# sendfile() errors that mean "not for this pair of descriptors": the file is
# read and sent instead, as asyncio's sendfile falls back.
NO_SENDFILE = frozenset(
    getattr(errno, name) for name in ("EINVAL", "ENOSYS", "ENOTSOCK", "EOPNOTSUPP", "ENOTSUP")
    if hasattr(errno, name)
)
HAS_SENDFILE = hasattr(os, "sendfile")
HAS_PREAD = hasattr(os, "pread")

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


def check_mode(mode: Any) -> int:
    """A FrameScanner delivery mode (``MODE_*``); ValueError otherwise."""
    try:
        number = int(operator.index(mode))
    except TypeError:
        raise TypeError("mode must be an int, not %s" % type(mode).__name__) from None
    if number not in (MODE_CALLBACKS, MODE_COLLECT, MODE_FRAMES):
        raise ValueError("unknown scanner mode %r" % (mode,))
    return number


def check_file(file: Any, offset: Any, count: Any) -> Tuple[int, int, int]:
    """Validate ``push_file`` arguments: (descriptor or -1, offset, byte count)."""
    mode = getattr(file, "mode", "b")
    if isinstance(file, io.TextIOBase) or isinstance(mode, str) and "b" not in mode:
        raise TypeError("push_file needs a file opened in binary mode, not %r" % (file,))
    if not (hasattr(file, "read") and hasattr(file, "seek")):
        raise TypeError(
            "push_file needs a binary file object with read() and seek(), not %s"
            % type(file).__name__
        )
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise TypeError("offset must be an int, not %s" % type(offset).__name__)
    if offset < 0:
        raise ValueError("offset must be >= 0, not %d" % offset)
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, int):
            raise TypeError("count must be an int or None, not %s" % type(count).__name__)
        if count < 0:
            raise ValueError("count must be >= 0 or None, not %d" % count)
    # a closed file raises ValueError here, which says so
    if hasattr(file, "readable") and not file.readable():
        raise ValueError("push_file needs a file open for reading")
    if hasattr(file, "seekable") and not file.seekable():
        raise ValueError("push_file needs a seekable file (offsets are absolute)")
    # Only a file whose bytes are those of its descriptor may go through
    # sendfile(): gzip and friends also answer fileno(), with the fd of the
    # compressed file under them.
    fd = -1
    if isinstance(file, (io.FileIO, io.BufferedReader, io.BufferedRandom)) and isinstance(
        getattr(file, "raw", file), io.FileIO
    ):
        fd = file.fileno()
    if count is None:
        if fd >= 0 and stat.S_ISREG(os.fstat(fd).st_mode):
            size = os.fstat(fd).st_size
        else:
            position = file.tell()
            size = file.seek(0, io.SEEK_END)
            file.seek(position)
        count = max(0, size - offset)
    return fd, offset, count


def sendfile_once(sock_fd: int, file_fd: int, offset: int, remaining: int) -> int:
    """One ``os.sendfile`` of at most *remaining* bytes from *offset*.

    The bytes sent (0 at end of file), ``-1`` when it would block, ``-2``
    when this pair of descriptors cannot use sendfile (the file is to be
    read and sent instead, as asyncio's sendfile falls back); any other
    error raises.
    """
    try:
        return os.sendfile(sock_fd, file_fd, offset, min(remaining, SENDFILE_MAX))
    except (BlockingIOError, InterruptedError):
        return -1
    except OSError as exc:
        if exc.errno not in NO_SENDFILE:
            raise
        return -2


def read_file_range(file: Any, fd: int, offset: int, size: int) -> bytes:
    """At most *size* bytes of *file* from absolute *offset*, as bytes.

    The file position is not used (``os.pread`` where the file has a
    descriptor of its own), so one open file may be queued on several
    channels.  b"" means end of file.
    """
    if fd >= 0 and HAS_PREAD:
        return os.pread(fd, size, offset)
    file.seek(offset)
    data = file.read(size)
    if not data:
        return b""
    if data.__class__ is not bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("file.read() must return bytes, not %s" % type(data).__name__)
        data = bytes(data)
    return data[:size]
