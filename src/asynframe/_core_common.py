"""The non-hot code of the framing core, written once for both twins.

The compiled core (``_core_c``) and its pure twin (``_core_py``) import
their constants, argument checks and file reads from here, as msgpack's
extension and fallback share their Python module.  So both accept and
reject the same values with the same errors, and a rejected call changes
nothing (every check runs before any state is touched).  Counts are bounded
by ``sys.maxsize``: the compiled core keeps them in a ``Py_ssize_t``.
``FileProducer`` is one class for both: a queued file is sent by one
``sendfile`` or read per call, which costs far more than the Python around
it.  Only what runs per byte, per frame or per pushed buffer is written twice.
"""

from __future__ import annotations

import errno
import io
import operator
import os
import stat
import sys
from typing import Any, Iterable, List, Optional, Tuple, Union, final

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
    getattr(errno, name) for name in ("EINVAL", "ENOSYS", "ENOTSOCK", "EOPNOTSUPP", "ENOTSUP") if hasattr(errno, name)
)
HAS_SENDFILE = hasattr(os, "sendfile")
HAS_PREAD = hasattr(os, "pread")

#: The most one read asks the socket for.  A larger ``ac_in_buffer_size``
#: is clamped to it: a recv may return less than asked anyway, and the core
#: must not reserve gigabytes for a read that brings a few bytes.
MAX_READ = 1 << 24

Terminator = Union[bytes, int, None]


class _Plain:
    """A class like an application's: nothing but its instances' dicts."""

    attribute: bool


def dict_layout_sample() -> Any:
    """An instance of a plain class whose ``__dict__`` exists, for the
    compiled modules' check of where CPython keeps an instance dict
    (``af_check_dict_layout`` in ``ext/asynframe/_versions.h``)."""
    sample = _Plain()
    sample.attribute = True
    vars(sample)  # made now: where a class keeps values inline, the dict comes on first ask
    return sample


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
    raise TypeError("terminator must be bytes, a non-negative int or None, not %s" % type(term).__name__)


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
        raise TypeError("push_file needs a binary file object with read() and seek(), not %s" % type(file).__name__)
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


BYTES_LIKE = (bytes, bytearray, memoryview)


def queued_data(data: Any) -> Union[bytes, memoryview]:
    """What a queue keeps of bytes-like *data* that is not exactly ``bytes``.

    A C-contiguous memoryview over a ``bytes`` object is kept without a copy,
    as a new 1-D byte view of the same memory: nothing can change what it
    shows, and the caller releasing or recasting its own view leaves the new
    one alone.  Anything else may change after the push (a ``bytearray``, a
    view over one, an ``array``, an ``mmap``) and is copied, so the peer gets
    the bytes as they were when pushed.
    """
    if data.__class__ is memoryview and data.obj.__class__ is bytes and data.c_contiguous:
        return data.cast("B")
    return bytes(data)


def encode_text(text: str, encoding: Optional[str]) -> bytes:
    """*text* pushed or produced as str: bytes in the queue's *encoding*."""
    if encoding is None:
        raise TypeError("str data needs an encoding (use_encoding); push bytes")
    return text.encode(encoding)


def producer_output(data: Any, encoding: Optional[str]) -> Union[bytes, memoryview]:
    """A producer's non-empty ``more()`` result that is not ``bytes``, as the queue keeps it."""
    if isinstance(data, str):
        return encode_text(data, encoding)
    if isinstance(data, BYTES_LIKE):
        return queued_data(data)
    raise TypeError("producer.more() must return bytes, not %s" % type(data).__name__)


@final
class FileProducer:
    """*count* bytes of a binary *file* from *offset*, queued by ``PushQueue.push_file``.

    In the queue it goes out with ``os.sendfile`` when the file has a
    descriptor of its own (``open(path, "rb")``), the platform has the call
    and ``send()`` is given the socket; otherwise it is read in pieces
    (``os.pread``, or ``seek()`` + ``read()`` for file objects without a
    descriptor) and sent like pushed bytes.  Its unsent bytes count in the
    queue's ``buffered``.  It ends after *count* bytes or at end of file,
    whichever comes first; *count* None means up to the end of the file as
    it is now.  With *close* true the file is closed when the range ends or
    is dropped from the queue.  It is also a producer: ``more()`` reads the
    next piece.  Both cores queue this one class.
    """

    __slots__ = ("_file", "_offset", "_remaining", "_owns", "_fd", "_sendfile", "_closed")

    def __init__(self, file: Any, offset: int = 0, count: Optional[int] = None, close: bool = True) -> None:
        fd, offset, count = check_file(file, offset, count)
        self._file = file
        self._offset = offset
        self._remaining = count
        self._owns = bool(close)
        self._fd = fd
        # cleared when the kernel refuses sendfile() for the queue's socket
        self._sendfile = fd >= 0 and HAS_SENDFILE
        self._closed = False

    def __repr__(self) -> str:
        return "<FileProducer %r offset=%d remaining=%d>" % (self._file, self._offset, self._remaining)

    def __reduce__(self) -> Any:
        # it stands for an open file and a position in a queue: nothing to pickle or copy
        raise TypeError("cannot pickle %r object" % type(self).__name__)

    @property
    def file(self) -> Any:
        """The file object."""
        return self._file

    @property
    def offset(self) -> int:
        """File offset of the next byte to send."""
        return self._offset

    @property
    def remaining(self) -> int:
        """Bytes still to send (0 once done or dropped)."""
        return self._remaining

    @property
    def owns_file(self) -> bool:
        """True if the file is closed when the range ends or is dropped."""
        return self._owns

    def more(self) -> bytes:
        """The next piece of at most ``FILE_READ_SIZE`` bytes; b"" at the end."""
        data = self._read(FILE_READ_SIZE)
        if not self._remaining:
            self._finish()
        return data

    def _read(self, size: int) -> bytes:
        """The next at most *size* bytes of the range (b"" once it ended)."""
        size = min(size, self._remaining)
        if size <= 0:
            return b""
        data = read_file_range(self._file, self._fd, self._offset, size)
        if data:
            self._offset += len(data)
            self._remaining -= len(data)
        else:
            self._remaining = 0  # end of file before count: the file shrank
        return data

    def _send(self, sock_fd: int) -> int:
        """One ``sendfile`` of the range to *sock_fd*: ``sendfile_once``'s answer.

        -2 (this pair of descriptors cannot) also turns ``sendfile`` off for
        the range: it is read and sent as bytes from then on.
        """
        sent = sendfile_once(sock_fd, self._fd, self._offset, self._remaining)
        if sent == -2:
            self._sendfile = False
        elif sent > 0:
            self._offset += sent
            self._remaining -= sent
        elif sent == 0:
            self._remaining = 0  # end of file before count: the file shrank
        return sent

    def _finish(self) -> None:
        """The range is done or dropped: nothing more to send; close an owned file."""
        self._remaining = 0
        if self._owns and not self._closed:
            self._closed = True
            self._file.close()


def queue_file_read(items: Any, index: int, entry: FileProducer, data: bytes) -> None:
    """Place *data*, just read from the file range at ``items[index]``, in front of it.

    A range that has ended (its count reached, or end of file) leaves the
    queue: *items* is the queue's list or deque.
    """
    if data:
        items.insert(index, data)
        index += 1
    if not entry._remaining:
        del items[index]
        entry._finish()


def refill(queue: Any, items: List[Any], dropped: Iterable[Any]) -> None:
    """The rest of ``PushQueue.replace`` once *queue* was emptied of *dropped*.

    *items* are pushed in order (None: the close sentinel); then the files of
    the dropped ranges are closed, except those of ranges queued again.
    """
    kept = {id(item) for item in items if item.__class__ is FileProducer}
    try:
        for item in items:
            if item is None:
                queue.push_close()
            else:
                queue.push_producer(item)
    finally:
        for item in dropped:
            if item.__class__ is FileProducer and id(item) not in kept:
                item._finish()
