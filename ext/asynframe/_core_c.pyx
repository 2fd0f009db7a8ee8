# The compiled framing core.  Its pure-Python twin is
# src/asynframe/_core_py.py: same names, same behaviour (tests/ runs every
# behaviour test on both).  The data paths are described in _core_c.pxd.
#
# Free-threaded CPython: the methods that change a FrameScanner or PushQueue,
# and the readers of its buffer or object fields, carry
# @cython.critical_section, which locks the object for the call (and is
# suspended while Python code it calls blocks; see docs/design.md).  With a
# GIL the decorator compiles to nothing.

cimport cython
from cpython.buffer cimport (
    PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_FillInfo, PyBuffer_Release, PyObject_GetBuffer,
)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_Append, PyList_GET_ITEM, PyList_GET_SIZE
from cpython.object cimport PyObject
from cpython.long cimport PyLong_FromSsize_t
from cpython.pyport cimport PY_SSIZE_T_MAX
from libc.errno cimport EAGAIN, errno
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memchr, memcmp, memcpy, memmove

import os as _os

from asynframe._core_common import MAX_READ as _CHECKS_MAX_READ
from asynframe._core_common import (
    DEFAULT_READ_SIZE, FILE_READ_SIZE, IOV_MAX, MODE_CALLBACKS,
    MODE_COLLECT, MODE_FRAMES, SEND_BUDGET, SENDFILE_MAX, check_chunk_size,
    check_count, check_file, check_mode, check_read_size, check_terminator, read_file_range,
    sendfile_once,
)
from asynframe._core_common import HAS_SENDFILE as _SHARED_HAS_SENDFILE

cdef extern from "_sockio.h":
    ctypedef struct af_iovec:
        void *iov_base
        size_t iov_len
    ctypedef long long af_ssize_t
    af_ssize_t af_sendv(long long fd, af_iovec *iov, int count)
    af_ssize_t af_recv(long long fd, char *buf, size_t n)
    int EWOULDBLOCK

cdef extern from *:
    int PyList_SetSlice(object lst, Py_ssize_t low, Py_ssize_t high, PyObject *items) except -1

IMPLEMENTATION = "c"

# The shared constants, as C values for the hot paths (C_IOV_MAX sizes an
# array, so it is a compile-time constant checked against the shared one).
cdef Py_ssize_t C_SEND_BUDGET = SEND_BUDGET
cdef bint _HAS_SENDFILE = _SHARED_HAS_SENDFILE

cdef enum:
    # receive buffers larger than this are freed when a scan empties them
    IDLE_BUFFER_MAX = 4096
    C_IOV_MAX = 1024
    TERM_NONE = 0
    TERM_BYTES = 1
    TERM_INT = 2
    C_MODE_CALLBACKS = 0
    C_MODE_COLLECT = 1
    C_MODE_FRAMES = 2
    # what PushQueue._ready() does at a file range: read it, or stop there
    FILES_READ = 0
    FILES_STOP_SENDFILE = 1
    FILES_STOP_ALL = 2

if C_IOV_MAX != IOV_MAX or (C_MODE_CALLBACKS, C_MODE_COLLECT, C_MODE_FRAMES) != (
        MODE_CALLBACKS, MODE_COLLECT, MODE_FRAMES):
    raise ImportError("asynframe._core_c was built against other _core_common constants")


cdef inline Py_ssize_t _find(const char *hay, Py_ssize_t hlen,
                             const char *needle, Py_ssize_t nlen) noexcept nogil:
    # memchr for the first byte, memcmp for the rest: terminators are short,
    # and memchr runs at memory bandwidth between candidates.
    cdef const char *p = hay
    cdef const char *stop
    cdef char first
    if hlen < nlen:
        return -1
    stop = hay + hlen - nlen + 1
    first = needle[0]
    while p < stop:
        p = <const char *>memchr(p, first, stop - p)
        if p == NULL:
            return -1
        if nlen == 1 or memcmp(p + 1, needle + 1, nlen - 1) == 0:
            return p - hay
        p += 1
    return -1


cdef Py_ssize_t _MAX_READ = _CHECKS_MAX_READ


cdef Py_ssize_t read_size(object size) except -1:
    # check_read_size, with the usual case (a plain int in range) kept in C
    if type(size) is int and 0 < size <= _MAX_READ:
        return size
    return check_read_size(size)


cdef inline Py_ssize_t _prefix_at_end(const char *hay, Py_ssize_t hlen,
                                      const char *needle, Py_ssize_t nlen) noexcept nogil:
    cdef Py_ssize_t length = nlen - 1
    if length > hlen:
        length = hlen
    while length > 0:
        if memcmp(hay + hlen - length, needle, length) == 0:
            return length
        length -= 1
    return 0


def find_prefix_at_end(haystack, needle):
    """Length of the longest proper prefix of *needle* that ends *haystack*.

    ``find_prefix_at_end(b"qwerty\\r", b"\\r\\n") == 1``.  Same contract as
    ``asynchat.find_prefix_at_end``.
    """
    if PyBytes_CheckExact(haystack) and PyBytes_CheckExact(needle):
        return _prefix_at_end(PyBytes_AS_STRING(haystack), PyBytes_GET_SIZE(haystack),
                              PyBytes_AS_STRING(needle), PyBytes_GET_SIZE(needle))
    length = len(needle) - 1
    while length and not haystack.endswith(needle[:length]):
        length -= 1
    return length


@cython.final
cdef class FrameScanner:
    """Split an incoming byte stream at the current terminator (compiled).

    The contract, word for word the same in both cores, is the pure twin's
    docstring (``asynframe._core_py.FrameScanner``) and docs/api/core.md.
    """

    def __cinit__(self, mode=MODE_CALLBACKS):
        self._mode = check_mode(mode)
        self._kind = TERM_NONE
        self._term = None
        self._incoming = []
        self._buf = NULL

    def __dealloc__(self):
        cdef _RetiredBlock *node = self._retired
        cdef _RetiredBlock *following
        free(self._buf)
        # views hold a reference to the scanner, so none is alive any more
        while node != NULL:
            following = node.next
            free(node.block)
            free(node)
            node = following
        self._retired = NULL

    # -- configuration -----------------------------------------------------
    @property
    def mode(self):
        """MODE_CALLBACKS, MODE_COLLECT or MODE_FRAMES."""
        return self._mode

    @mode.setter
    @cython.critical_section
    def mode(self, mode):
        self._mode = check_mode(mode)

    @cython.critical_section
    def set_terminator(self, term, encoding=None):
        """Set the terminator; *encoding* converts a str terminator to bytes."""
        self._set(check_terminator(term, encoding))

    cdef void _set(self, object term):
        if term is None or not term:
            self._kind = TERM_NONE
            self._term = term
        elif PyBytes_CheckExact(term):
            self._kind = TERM_BYTES
            self._term = term
        else:
            self._kind = TERM_INT
            self._remaining = term
            self._term = None

    @property
    @cython.critical_section
    def terminator(self):
        """The current terminator; an int counts down as its bytes arrive."""
        if self._kind == TERM_INT:
            return PyLong_FromSsize_t(self._remaining)
        return self._term

    @terminator.setter
    @cython.critical_section
    def terminator(self, term):
        self._set(check_terminator(term, None))

    # -- state -------------------------------------------------------------
    @property
    @cython.critical_section
    def pending(self):
        """Bytes received and not yet delivered (a possible terminator prefix)."""
        return PyBytes_FromStringAndSize(self._buf + self._start, self._end - self._start)

    @pending.setter
    @cython.critical_section
    def pending(self, data):
        # asynchat code assigns ac_in_buffer directly (b"" to discard input)
        cdef const unsigned char[:] view = memoryview(data).cast("B") if data else b""
        if self._busy:
            raise RuntimeError("pending cannot be replaced from inside a scanner callback")
        self._start = self._end = 0
        if view.shape[0]:
            self._hold(<const char *>&view[0], view.shape[0])

    @property
    @cython.critical_section
    def incoming(self):
        """Chunks of the current frame collected by the core (MODE_COLLECT/FRAMES)."""
        return self._incoming

    @incoming.setter
    @cython.critical_section
    def incoming(self, value):
        if not isinstance(value, list):
            raise TypeError("incoming must be a list, not %s" % type(value).__name__)
        self._incoming = value

    @cython.critical_section
    def collect(self, data):
        """Append *data* to ``incoming`` (asynchat's ``_collect_incoming_data``)."""
        PyList_Append(self._incoming, data)

    @cython.critical_section
    def get_data(self):
        """Join and empty ``incoming`` (asynchat's ``_get_data``)."""
        return self._join_incoming()

    cdef object _join_incoming(self):
        cdef list incoming = self._incoming
        cdef object data
        if PyList_GET_SIZE(incoming) == 1 and PyBytes_CheckExact(<object>PyList_GET_ITEM(incoming, 0)):
            data = <object>PyList_GET_ITEM(incoming, 0)
        else:
            data = b"".join(incoming)
        PyList_SetSlice(incoming, 0, PyList_GET_SIZE(incoming), NULL)
        return data

    @cython.critical_section
    def stop(self):
        """From inside a callback: end the scan after it; the rest stays in ``pending``."""
        self._stops += 1

    @cython.critical_section
    def frame_follows(self):
        """Whether a complete frame waits behind the one being delivered.

        True only from inside a callback, when the bytes after the current
        frame already hold a whole frame at the current terminator: the peer
        sent it before seeing any reply to this one (it pipelines).
        async_chat coalesces the replies of such frames into one send.
        """
        return self.c_frame_follows()

    cdef bint c_frame_follows(self):
        cdef Py_ssize_t avail
        if self._scan_data == NULL or self._clears != self._scan_clears:
            return False
        avail = self._scan_end - self._scan_next
        if avail <= 0:
            return False
        if self._kind == TERM_BYTES:
            self._ahead_from = self._scan_next
            self._ahead_term = <PyObject *>self._term
            self._ahead_index = _find(self._scan_data + self._scan_next, avail,
                                      PyBytes_AS_STRING(self._term), PyBytes_GET_SIZE(self._term))
            return self._ahead_index >= 0
        if self._kind == TERM_INT:
            return avail >= self._remaining
        return False

    @property
    def frame_count(self):
        """Frames delivered so far (each ``found_terminator``/``frame_received``)."""
        return self._frames

    @property
    @cython.critical_section
    def partial_size(self):
        """Bytes of the frame in progress: delivered as chunks, or held back."""
        return self._partial + self._end - self._start

    @property
    def max_frame(self):
        """Most bytes a frame may gather before its terminator; 0 means no limit.

        Past it the frame and the rest of the read are dropped and
        ``target.frame_too_large(size)`` is called.  A change made inside a
        callback applies to the very next byte.
        """
        return self._max_frame

    @max_frame.setter
    @cython.critical_section
    def max_frame(self, limit):
        self._max_frame = check_count("max_frame", limit)

    @cython.critical_section
    def clear(self):
        """Drop held-back bytes and collected chunks; scanning in progress stops."""
        self._partial = 0
        self._start = self._end = 0
        PyList_SetSlice(self._incoming, 0, PyList_GET_SIZE(self._incoming), NULL)
        self._clears += 1

    # -- buffer management ---------------------------------------------------
    cdef int _reserve(self, Py_ssize_t extra) except -1:
        """Make room for *extra* bytes at _buf[_end:]."""
        cdef Py_ssize_t need
        cdef Py_ssize_t cap
        cdef char *grown
        cdef _RetiredBlock *node
        if self._cap - self._end >= extra:
            return 0
        if self._start:
            # Only a terminator prefix is ever held, so this moves a few bytes.
            memmove(self._buf, self._buf + self._start, self._end - self._start)
            self._end -= self._start
            self._start = 0
            if self._cap - self._end >= extra:
                return 0
        if extra > PY_SSIZE_T_MAX // 2 - self._end:
            # no doubling below can reach it without overflowing
            raise MemoryError("cannot reserve %d more bytes" % extra)
        need = self._end + extra
        cap = self._cap * 2 if self._cap else 4096
        while cap < need:
            cap *= 2
        if self._exports:
            # A view from get_buffer() still points into the block (a caller
            # keeping the last one while asking for the next): the block must
            # not move.  Continue in a new one; the old one is freed when its
            # last view is released.
            grown = <char *>malloc(cap)
            if grown == NULL:
                raise MemoryError()
            node = <_RetiredBlock *>malloc(sizeof(_RetiredBlock))
            if node == NULL:
                free(grown)
                raise MemoryError()
            memcpy(grown, self._buf, self._end)
            node.block = self._buf
            node.exports = self._exports
            node.next = self._retired
            self._retired = node
            self._exports = 0
        else:
            grown = <char *>realloc(self._buf, cap)
            if grown == NULL:
                raise MemoryError()
        self._buf = grown
        self._cap = cap
        return 0

    @cython.critical_section
    def __getbuffer__(self, Py_buffer *view, int flags):
        PyBuffer_FillInfo(view, self, self._buf + self._end, self._cap - self._end, 0, flags)
        view.internal = <void *>self._buf  # which block the view points into
        self._exports += 1

    @cython.critical_section
    def __releasebuffer__(self, Py_buffer *view):
        cdef _RetiredBlock **link
        cdef _RetiredBlock *node
        if view.internal == <void *>self._buf:
            self._exports -= 1
            if (self._exports == 0 and self._end == 0 and not self._lent and not self._busy
                    and self._cap > IDLE_BUFFER_MAX):
                # the transport let go of the area after buffer_updated()
                # emptied it (asyncio releases its view only then): an idle
                # connection keeps no receive buffer
                free(self._buf)
                self._buf = NULL
                self._cap = 0
            return
        link = &self._retired
        while link[0] != NULL:
            node = link[0]
            if <void *>node.block == view.internal:
                node.exports -= 1
                if node.exports == 0:
                    link[0] = node.next
                    free(node.block)
                    free(node)
                return
            link = &node.next

    @cython.critical_section
    def get_buffer(self, sizehint=-1):
        """A writable buffer to ``recv_into``; then report the count to ``buffer_updated``."""
        cdef Py_ssize_t size = DEFAULT_READ_SIZE if sizehint is None or sizehint <= 0 else sizehint
        if self._busy:
            raise RuntimeError("get_buffer() called from inside a scanner callback")
        self._reserve(size)
        view = memoryview(self)
        self._lent = True
        return view

    @cython.critical_section
    def buffer_updated(self, target, Py_ssize_t nbytes):
        """Scan the first *nbytes* written into the area ``get_buffer()`` returned."""
        if self._busy:
            raise RuntimeError("FrameScanner.buffer_updated() called from inside one of its callbacks")
        if nbytes < 0 or nbytes > self._cap - self._end:
            raise ValueError("nbytes %d outside the buffer of %d bytes" % (nbytes, self._cap - self._end))
        self._lent = False
        self._end += nbytes
        self._scan_buffer(target)

    @cython.critical_section
    def fill(self, sock, size=DEFAULT_READ_SIZE):
        """``recv`` up to *size* bytes from *sock* into the buffer (see the pure twin)."""
        if self._busy:
            raise RuntimeError("FrameScanner.fill() called from inside one of its callbacks")
        cdef Py_ssize_t count = read_size(size)
        return self.c_fill(sock if isinstance(sock, int) else sock.fileno(), count)

    cdef long long c_fill(self, long long fd, Py_ssize_t size) except -2:
        # fill() once its arguments are checked (the compiled loop's read)
        cdef af_ssize_t got
        if self._busy:
            raise RuntimeError("FrameScanner.fill() called from inside one of its callbacks")
        self._reserve(size)
        got = af_recv(fd, self._buf + self._end, size)
        if got < 0:
            if errno == EAGAIN or errno == EWOULDBLOCK:
                return -1
            raise OSError(errno, _os.strerror(errno))
        self._end += got
        return got

    @cython.critical_section
    def process(self, target):
        """Scan the bytes in ``pending``, calling back *target*."""
        if self._busy:
            raise RuntimeError("FrameScanner.process() called from inside one of its callbacks")
        self.c_process(target)

    cdef int c_process(self, object target) except -1:
        # process() once its caller knows no scan is running
        if self._end > self._start:
            self._scan_buffer(target)
        return 0

    @cython.critical_section
    def receive(self, target, sock, Py_ssize_t size=DEFAULT_READ_SIZE):
        """``fill()`` then ``process()``: returns what ``fill()`` returned."""
        got = self.fill(sock, size)
        if got > 0:
            self._scan_buffer(target)
        return got

    cdef int _scan_buffer(self, object target) except -1:
        cdef Py_ssize_t start = self._start
        cdef Py_ssize_t end = self._end
        # The scanned bytes stay where they are; what is held back afterwards
        # is memmoved to _buf[0:] by _hold.
        self._start = self._end = 0
        self._busy = True
        try:
            self._scan(target, self._buf + start, end - start, None)
        finally:
            self._busy = False
        if self._end == 0 and self._exports == 0 and self._cap > IDLE_BUFFER_MAX:
            # Nothing held back: give the receive buffer up, so an idle
            # connection costs no buffer (the next read allocates anew,
            # which malloc serves from the block just freed).
            free(self._buf)
            self._buf = NULL
            self._cap = 0
        return 0

    # -- input ---------------------------------------------------------------
    @cython.critical_section
    def feed(self, target, data):
        """Scan *data* (appended to anything held back), calling back *target*.

        An empty *data* re-scans what is held back, as any asynchat read does.
        """
        cdef Py_buffer view
        cdef bint release = False
        cdef const char *ptr
        cdef Py_ssize_t length
        if self._busy:
            raise RuntimeError("FrameScanner.feed() called from inside one of its callbacks")
        if PyBytes_CheckExact(data):
            ptr = PyBytes_AS_STRING(data)
            length = PyBytes_GET_SIZE(data)
        else:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
            release = True
            ptr = <const char *>view.buf
            length = view.len
            data = None
        try:
            if length == 0:
                # like asynchat's handle_read: held bytes are re-scanned (a
                # terminator set since the last read applies to them)
                if self._end > self._start:
                    self._scan_buffer(target)
                return
            if self._end > self._start:
                self._reserve(length)
                memcpy(self._buf + self._end, ptr, length)
                self._end += length
                self._scan_buffer(target)
            else:
                self._start = self._end = 0
                self._busy = True
                try:
                    self._scan(target, ptr, length, data)
                finally:
                    self._busy = False
        finally:
            if release:
                PyBuffer_Release(&view)

    cdef int _hold(self, const char *ptr, Py_ssize_t length) except -1:
        # ptr may point into _buf itself (a scan of the receive buffer).
        if ptr >= self._buf and ptr < self._buf + self._cap:
            memmove(self._buf, ptr, length)
        else:
            self._reserve(length)
            memcpy(self._buf, ptr, length)
        self._start = 0
        self._end = length
        return 0

    cdef int _deliver_partial(self, object target, object chunk) except -1:
        if self._mode == C_MODE_CALLBACKS:
            target.collect_incoming_data(chunk)
        else:
            PyList_Append(self._incoming, chunk)
        return 0

    cdef int _deliver_frame_end(self, object target, object chunk) except -1:
        # The last piece of a frame in MODE_COLLECT or MODE_FRAMES.
        if self._mode == C_MODE_COLLECT:
            if chunk is not None:
                PyList_Append(self._incoming, chunk)
            target.found_terminator()
        else:
            if chunk is None:
                chunk = b""
            if PyList_GET_SIZE(self._incoming):
                PyList_Append(self._incoming, chunk)
                chunk = self._join_incoming()
            target.frame_received(chunk)
        return 0

    cdef int _scan(self, object target, const char *data, Py_ssize_t end,
                   object whole) except -1:
        # *whole*, when not None, is a bytes object whose contents are exactly
        # data[0:end]: handed over as-is when a chunk spans all of it.
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t index
        cdef Py_ssize_t avail
        cdef Py_ssize_t keep
        cdef Py_ssize_t need
        cdef Py_ssize_t tlen
        cdef const char *tptr
        cdef unsigned long clears = self._clears
        cdef unsigned long stops = self._stops
        cdef int mode
        cdef object term
        cdef object chunk
        # max_frame is read where it is checked, not once per scan: a change
        # made in a callback applies to the very next byte, as a terminator's does
        self._scan_data = data
        self._scan_end = end
        self._scan_clears = clears
        self._ahead_from = -1
        try:
            while pos < end:
                mode = self._mode
                if self._kind == TERM_NONE:
                    self._scan_next = end
                    if mode != C_MODE_FRAMES and self._max_frame and self._partial + end - pos > self._max_frame:
                        return self._overflow(target, self._partial + end - pos)
                    if pos == 0 and whole is not None:
                        chunk = whole
                    else:
                        chunk = PyBytes_FromStringAndSize(data + pos, end - pos)
                    if mode == C_MODE_FRAMES:
                        pos = end
                        self._partial = 0
                        self._frames += 1
                        self._deliver_frame_end(target, chunk)
                    else:
                        self._partial += end - pos
                        self._deliver_partial(target, chunk)
                        pos = end
                elif self._kind == TERM_INT:
                    avail = end - pos
                    need = self._remaining
                    self._scan_next = pos + need if avail >= need else end
                    if avail < need:
                        if self._max_frame and self._partial + avail > self._max_frame:
                            return self._overflow(target, self._partial + avail)
                        if pos == 0 and whole is not None:
                            chunk = whole
                        else:
                            chunk = PyBytes_FromStringAndSize(data + pos, avail)
                        self._partial += avail
                        self._deliver_partial(target, chunk)
                        pos = end
                        # asynchat counts down after the callback, whatever it set
                        self._kind = TERM_INT
                        self._remaining = need - avail
                        self._term = None
                    else:
                        if self._max_frame and self._partial + need > self._max_frame:
                            return self._overflow(target, self._partial + need)
                        if pos == 0 and need == end and whole is not None:
                            chunk = whole
                        else:
                            chunk = PyBytes_FromStringAndSize(data + pos, need)
                        self._partial = 0
                        self._frames += 1
                        if mode == C_MODE_CALLBACKS:
                            target.collect_incoming_data(chunk)
                            pos += need
                            self._kind = TERM_NONE
                            self._term = 0
                            target.found_terminator()
                        else:
                            pos += need
                            self._kind = TERM_NONE
                            self._term = 0
                            self._deliver_frame_end(target, chunk)
                else:
                    term = self._term
                    tptr = PyBytes_AS_STRING(term)
                    tlen = PyBytes_GET_SIZE(term)
                    index = _find(data + pos, end - pos, tptr, tlen)
                    if index < 0:
                        self._scan_next = end
                        keep = _prefix_at_end(data + pos, end - pos, tptr, tlen)
                        if self._max_frame and self._partial + end - pos > self._max_frame:
                            return self._overflow(target, self._partial + end - pos)
                        if keep == end - pos:
                            self._hold(data + pos, keep)
                            return 0
                        if pos == 0 and keep == 0 and whole is not None:
                            chunk = whole
                        else:
                            chunk = PyBytes_FromStringAndSize(data + pos, end - pos - keep)
                        self._partial += end - pos - keep
                        self._deliver_partial(target, chunk)
                        pos = end
                        if keep and self._clears == clears:
                            self._hold(data + end - keep, keep)
                        return 0
                    # Several frames per read is the common case: stay in this
                    # loop while the callbacks leave terminator and mode alone.
                    while True:
                        if self._max_frame and self._partial + index > self._max_frame:
                            return self._overflow(target, self._partial + index)
                        self._partial = 0
                        self._frames += 1
                        index += pos
                        self._scan_next = index + tlen
                        if mode == C_MODE_CALLBACKS:
                            if index > pos:
                                target.collect_incoming_data(
                                    PyBytes_FromStringAndSize(data + pos, index - pos))
                            pos = index + tlen
                            target.found_terminator()
                        elif mode == C_MODE_COLLECT:
                            if index > pos:
                                PyList_Append(self._incoming,
                                              PyBytes_FromStringAndSize(data + pos, index - pos))
                            pos = index + tlen
                            target.found_terminator()
                        else:
                            chunk = PyBytes_FromStringAndSize(data + pos, index - pos)
                            pos = index + tlen
                            if PyList_GET_SIZE(self._incoming):
                                PyList_Append(self._incoming, chunk)
                                chunk = self._join_incoming()
                            target.frame_received(chunk)
                        if (self._term is not term or self._kind != TERM_BYTES
                                or self._mode != mode or self._clears != clears
                                or self._stops != stops):
                            break
                        if self._ahead_from == pos and self._ahead_term == <PyObject *>term:
                            index = self._ahead_index  # a push just searched here
                        else:
                            index = _find(data + pos, end - pos, tptr, tlen)
                        if index < 0:
                            break
                if self._clears != clears:
                    return 0
                if self._stops != stops:
                    # stop(): the rest waits in pending for process()
                    if pos < end:
                        self._hold(data + pos, end - pos)
                    return 0
        except BaseException:
            # asynchat keeps the unscanned rest in ac_in_buffer when a callback
            # raises; so do we, unless the callback cleared the buffers.
            if self._clears == clears and pos < end:
                self._hold(data + pos, end - pos)
            raise
        finally:
            self._scan_data = NULL
        return 0

    cdef int _overflow(self, object target, Py_ssize_t size) except -1:
        # Drop the oversized frame and the rest of this read: memory stays
        # bounded by max_frame plus one read, whatever the peer sends.
        self._start = self._end = 0
        PyList_SetSlice(self._incoming, 0, PyList_GET_SIZE(self._incoming), NULL)
        self._partial = 0
        self._clears += 1
        target.frame_too_large(size)
        return 0


@cython.final
@cython.auto_pickle(False)  # it wraps an open file: nothing to pickle
cdef class FileProducer:
    """*count* bytes of a binary *file* from *offset*, queued by ``PushQueue.push_file``.

    Sent with ``os.sendfile`` when the file has a descriptor of its own and
    ``send()`` is given the socket, read in pieces otherwise; see the pure
    twin's docstring for the whole contract.
    """

    def __init__(self, file, offset=0, count=None, close=True):
        fd, offset, count = check_file(file, offset, count)
        self.file = file
        self.offset = offset
        self.remaining = count
        self.owns_file = bool(close)
        self._fd = fd
        self._sendfile = fd >= 0 and _HAS_SENDFILE
        self._closed = False

    def __repr__(self):
        return "<FileProducer %r offset=%d remaining=%d>" % (
            self.file, self.offset, self.remaining)

    def more(self):
        """The next piece of at most ``FILE_READ_SIZE`` bytes; b"" at the end."""
        data = self._read(FILE_READ_SIZE)
        if not self.remaining:
            self._finish()
        return data

    cdef object _read(self, long long size):
        # absolute offsets: the file position is neither used nor changed
        if size > self.remaining:
            size = self.remaining
        if size <= 0:
            return b""
        data = read_file_range(self.file, self._fd, self.offset, size)
        if data:
            self.offset += PyBytes_GET_SIZE(data)
            self.remaining -= PyBytes_GET_SIZE(data)
        else:
            self.remaining = 0  # end of file before count: the file shrank
        return data

    cdef int _finish(self) except -1:
        self.remaining = 0
        if self.owns_file and not self._closed:
            self._closed = True
            self.file.close()
        return 0


cdef str _kind(object item):
    if item is None:
        return "close"
    return "file" if type(item) is FileProducer else "producer"


cdef class PushQueue:
    """Ordered output queue: byte strings, producers and the close sentinel (compiled).

    Scatter-gather sends with ``sendmsg``, lazy producers, ``sendfile`` for
    queued files; the contract is the pure twin's docstring
    (``asynframe._core_py.PushQueue``) and docs/api/core.md.
    """

    def __cinit__(self, encoding=None):
        self._items = []
        self.encoding = encoding

    @cython.critical_section
    def __len__(self):
        return PyList_GET_SIZE(self._items) - self._head

    @cython.critical_section
    def __bool__(self):
        return self.c_has_items()

    @property
    def buffered(self):
        """Bytes queued as data and not yet sent."""
        return self._buffered

    @property
    def stats(self):
        """(pushes, sendmsg calls) since creation: a debug counter for tests."""
        return (self._pushes, self._sends)

    @property
    def sendfile_calls(self):
        """``os.sendfile`` calls since creation: a debug counter for tests."""
        return self._sendfiles

    @cython.critical_section
    def push(self, data):
        """Queue bytes-like *data*; empty data is ignored."""
        self.c_push(data)

    cdef int c_push(self, object data) except -1:
        cdef Py_ssize_t size
        if not PyBytes_CheckExact(data):
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError("data argument must be byte-ish (%r)" % (type(data),))
            data = bytes(data)
        size = PyBytes_GET_SIZE(data)
        if size:
            PyList_Append(self._items, data)
            self._buffered += size
            self._pushes += 1
        return 0

    @cython.critical_section
    def push_producer(self, producer):
        """Queue a producer (anything with ``more()``) or bytes-like data."""
        if producer is None:
            raise TypeError("producer must not be None; use push_close()")
        if isinstance(producer, (bytes, bytearray, memoryview)):
            self.push(producer)
        elif isinstance(producer, str):
            self.push(self._encode(producer))
        elif type(producer) is FileProducer:
            # a file range read back from snapshot(): queued as a file again
            self._push_file(<FileProducer>producer)
        elif not hasattr(producer, "more"):
            raise TypeError(
                "producer must be bytes-like or have a more() method, not %s"
                % type(producer).__name__)
        else:
            PyList_Append(self._items, producer)
            self._pushes += 1

    @cython.critical_section
    def push_file(self, file, offset=0, count=None, close=True):
        """Queue *count* bytes of binary *file* from *offset* (see ``FileProducer``).

        An empty range queues nothing (and closes the file if *close*).
        """
        self._push_file(FileProducer(file, offset, count, close))

    cdef int _push_file(self, FileProducer entry) except -1:
        if entry.remaining:
            PyList_Append(self._items, entry)
            self._buffered += entry.remaining
            self._pushes += 1
        else:
            entry._finish()
        return 0

    @cython.critical_section
    def push_close(self):
        """Queue the close sentinel, reported once everything before it is sent."""
        PyList_Append(self._items, None)

    @cython.critical_section
    def clear(self):
        """Drop everything queued (queued files owned by the queue are closed)."""
        cdef list dropped = self._items
        cdef Py_ssize_t start = self._head
        self._items = []
        self._head = 0
        self._offset = 0
        self._buffered = 0
        for item in dropped[start:]:
            if type(item) is FileProducer:
                (<FileProducer>item)._finish()

    @cython.critical_section
    def replace(self, items):
        """Queue *items* (data, producers, None for the close sentinel) instead
        of what is queued: ``clear()`` then the pushes, except that a file
        range found in *items* is queued again as it is, not closed."""
        items = list(items)
        keep = {id(item) for item in items if type(item) is FileProducer}
        cdef list dropped = self._items
        cdef Py_ssize_t start = self._head
        self._items = []
        self._head = 0
        self._offset = 0
        self._buffered = 0
        try:
            for item in items:
                if item is None:
                    self.push_close()
                else:
                    self.push_producer(item)
        finally:
            for item in dropped[start:]:
                if type(item) is FileProducer and id(item) not in keep:
                    (<FileProducer>item)._finish()

    @property
    @cython.critical_section
    def close_pending(self):
        """True when the close sentinel is at the head of the queue."""
        return self.c_close_pending()

    cdef bint c_close_pending(self):
        return (PyList_GET_SIZE(self._items) > self._head
                and <object>PyList_GET_ITEM(self._items, self._head) is None)

    @cython.critical_section
    def pop_close(self):
        """Remove the close sentinel at the head; True if there was one."""
        return self.c_pop_close()

    cdef bint c_pop_close(self):
        if self.c_close_pending():
            self._head += 1
            self._compact()
            return True
        return False

    cdef bint c_has_items(self):
        # bool(queue): anything queued, close sentinel included
        return PyList_GET_SIZE(self._items) > self._head

    @cython.critical_section
    def snapshot(self):
        """A copy of the queued items (the unsent part of the head included)."""
        items = self._items[self._head:]
        if items and self._offset and PyBytes_CheckExact(items[0]):
            items[0] = items[0][self._offset:]
        return items

    cdef object _encode(self, object text):
        if self.encoding is None:
            raise TypeError("str data needs an encoding (use_encoding); push bytes")
        return text.encode(self.encoding)

    cdef void _compact(self):
        cdef Py_ssize_t size = PyList_GET_SIZE(self._items)
        if self._head >= size:
            if size:
                self._items = []
            self._head = 0
        elif self._head >= 64 and self._head * 2 >= size:
            PyList_SetSlice(self._items, 0, self._head, NULL)
            self._head = 0

    cdef int _pull_file(self, Py_ssize_t index, Py_ssize_t size) except -1:
        """Read the next *size* bytes of the file range at *index* in front of it."""
        cdef list items = self._items
        cdef FileProducer entry = <FileProducer>PyList_GET_ITEM(items, index)
        cdef long long before = entry.remaining
        self._pulling = True
        try:
            data = entry._read(size)
        finally:
            self._pulling = False
        if (self._items is not items or index >= PyList_GET_SIZE(items)
                or <object>PyList_GET_ITEM(items, index) is not entry):
            return 0  # cleared meanwhile (a file object's read() ran Python code)
        # the bytes read were counted already; a range cut short by end of
        # file takes what it will never send out of the count
        self._buffered -= before - entry.remaining - PyBytes_GET_SIZE(data)
        if PyBytes_GET_SIZE(data):
            items.insert(index, data)
            index += 1
        if not entry.remaining:
            del items[index]
            entry._finish()
        return 0

    cdef Py_ssize_t _send_file(self, long long fd, FileProducer entry) except -1:
        """One sendfile() of the file range at the head."""
        cdef Py_ssize_t sent
        self._sendfiles += 1
        sent = sendfile_once(fd, entry._fd, entry.offset, entry.remaining)
        if sent == -1:
            return 0
        if sent == -2:
            # this pair of descriptors cannot: read the file instead
            entry._sendfile = False
            return self._send_fd(fd)
        if sent:
            entry.offset += sent
            entry.remaining -= sent
            self._buffered -= sent
        else:
            # end of file before count: the file shrank since it was queued
            self._buffered -= entry.remaining
            entry.remaining = 0
        if not entry.remaining:
            self._items[self._head] = None
            self._head += 1
            self._compact()
            entry._finish()
        return sent

    cdef int _pull(self, Py_ssize_t index) except -1:
        """Replace the producer at *index* by its next output, or drop it."""
        cdef list items = self._items
        producer = <object>PyList_GET_ITEM(items, index)
        if type(producer) is FileProducer:
            return self._pull_file(index, FILE_READ_SIZE)
        self._pulling = True
        try:
            data = producer.more()
        finally:
            self._pulling = False
        # more() may have pushed or cleared (a channel closing itself); only
        # act if the producer is still there, else its output goes too
        if (self._items is not items or index >= PyList_GET_SIZE(items)
                or <object>PyList_GET_ITEM(items, index) is not producer):
            return 0
        if data:
            if not PyBytes_CheckExact(data):
                if isinstance(data, str):
                    data = self._encode(data)
                elif isinstance(data, (bytes, bytearray, memoryview)):
                    data = bytes(data)
                else:
                    raise TypeError(
                        "producer.more() must return bytes, not %s" % type(data).__name__)
            items.insert(index, data)
            self._buffered += PyBytes_GET_SIZE(data)
        else:
            del items[index]
        return 0

    cdef int _consume(self, Py_ssize_t nbytes) except -1:
        # Everything sent came from the bytes items at the head: send() pulled
        # producers before them and stops at the sentinel.
        cdef list items = self._items
        cdef Py_ssize_t offset = self._offset + nbytes
        cdef Py_ssize_t size
        self._buffered -= nbytes
        while offset:
            size = PyBytes_GET_SIZE(<object>PyList_GET_ITEM(items, self._head))
            if offset < size:
                break
            offset -= size
            items[self._head] = None  # drop the reference now, compact later
            self._head += 1
        self._offset = offset
        self._compact()
        return 0

    cdef Py_ssize_t _ready(self, Py_ssize_t budget, int files) except -1:
        """Pull producers until *budget* bytes (or IOV_MAX items) are ready.

        Returns the number of bytes items ready at the head.  A file range
        ends the run instead of being read when *files* is FILES_STOP_ALL, or
        FILES_STOP_SENDFILE and it can go out with sendfile().  No Python code
        runs between this and the gathering in send(), so the borrowed
        pointers taken there stay valid.
        """
        cdef Py_ssize_t i = self._head
        cdef Py_ssize_t count = 0
        cdef Py_ssize_t total = -self._offset
        cdef object item
        cdef list items = self._items
        while i < PyList_GET_SIZE(self._items) and count < C_IOV_MAX and total < budget:
            item = <object>PyList_GET_ITEM(self._items, i)
            if item is None:
                break
            if not PyBytes_CheckExact(item):
                if type(item) is FileProducer and (
                        files == FILES_STOP_ALL
                        or files == FILES_STOP_SENDFILE and (<FileProducer>item)._sendfile):
                    break
                self._pull(i)
                if self._items is not items:
                    # more() cleared the queue: count what is queued now
                    items = self._items
                    i = self._head
                    count = 0
                    total = -self._offset
                continue
            total += PyBytes_GET_SIZE(item)
            count += 1
            i += 1
        return count

    @cython.critical_section
    def next_chunk(self, size):
        """Up to *size* bytes from the head (bytes), for callers that send themselves.

        Returns None when nothing is ready (empty queue, or the sentinel is
        next).  Report what was sent with ``consume(n)``.
        """
        if self._pulling:
            raise RuntimeError("PushQueue.next_chunk() called from a producer's more()")
        cdef Py_ssize_t limit = check_chunk_size(size)
        while not self._ready(1, FILES_STOP_ALL):
            if (PyList_GET_SIZE(self._items) <= self._head
                    or type(<object>PyList_GET_ITEM(self._items, self._head)) is not FileProducer):
                return None
            # the caller sends itself: read the file, *size* at a time
            self._pull_file(self._head, limit)
        head = <object>PyList_GET_ITEM(self._items, self._head)
        # bytes, never a view: the socket-like object may keep what it is
        # given (asynchat hands send() immutable slices too)
        if self._offset == 0 and PyBytes_GET_SIZE(head) <= limit:
            return head
        # (offset + limit could overflow: limit may be sys.maxsize)
        limit = min(limit, PyBytes_GET_SIZE(head) - self._offset)
        return head[self._offset:self._offset + limit]

    @cython.critical_section
    def consume(self, Py_ssize_t nbytes):
        """Account for *nbytes* sent by the caller from ``next_chunk()``."""
        cdef Py_ssize_t i = self._head
        cdef Py_ssize_t ready = -self._offset
        cdef object item
        if self._pulling:
            raise RuntimeError("PushQueue.consume() called from a producer's more()")
        if nbytes < 0 or nbytes > self._buffered:
            raise ValueError("cannot consume %d of %d buffered bytes" % (nbytes, self._buffered))
        # Only bytes ahead of the first producer or close sentinel can have
        # been sent; _consume() walks bytes items only.  (The buffered bytes
        # are all in bytes items, so the walk ends inside the list.)
        while ready < nbytes:
            item = <object>PyList_GET_ITEM(self._items, i)
            if not PyBytes_CheckExact(item):
                raise ValueError("cannot consume %d bytes: %d are ready before the next %s"
                                 % (nbytes, ready, _kind(item)))
            ready += PyBytes_GET_SIZE(item)
            i += 1
        self._consume(nbytes)

    @cython.critical_section
    def send(self, sock):
        """One scatter-gather send of the queued bytes to *sock* (socket or fd).

        Returns the byte count the kernel took; 0 when it would block or
        nothing is ready.  Other socket errors propagate as ``OSError``.
        """
        return self.c_send(sock if isinstance(sock, int) else sock.fileno())

    cdef Py_ssize_t c_send(self, long long fd) except -1:
        # send() to a descriptor (the compiled loop's write)
        if self._pulling:
            raise RuntimeError("PushQueue.send() called from a producer's more()")
        return self._send_fd(fd)

    cdef Py_ssize_t _send_fd(self, long long fd) except -1:
        # send() without the argument checks, for the loop's C fast path
        cdef af_iovec iov[C_IOV_MAX]
        cdef Py_ssize_t count
        cdef Py_ssize_t i
        cdef af_ssize_t sent
        cdef object item
        count = self._ready(C_SEND_BUDGET, FILES_STOP_SENDFILE)
        if not count:
            if PyList_GET_SIZE(self._items) > self._head:
                item = <object>PyList_GET_ITEM(self._items, self._head)
                if type(item) is FileProducer:
                    return self._send_file(fd, <FileProducer>item)
            return 0
        for i in range(count):
            item = <object>PyList_GET_ITEM(self._items, self._head + i)
            iov[i].iov_base = PyBytes_AS_STRING(item)
            iov[i].iov_len = PyBytes_GET_SIZE(item)
        iov[0].iov_base = <char *>iov[0].iov_base + self._offset
        iov[0].iov_len -= self._offset
        self._sends += 1
        sent = af_sendv(fd, iov, <int>count)
        if sent < 0:
            if errno == EAGAIN or errno == EWOULDBLOCK:
                return 0
            raise OSError(errno, _os.strerror(errno))
        if sent:
            self._consume(sent)
        return sent
