# The compiled framing core.  Its pure-Python twin is
# src/asynframe/_core_py.py: same names, same behaviour (tests/ runs every
# behaviour test on both).  The data paths are described in _core_c.pxd.
#
# One extension module in several files: this one holds the imports, the
# constants and the byte-search helpers, and includes FrameScanner
# (_scanner_c.pxi, its scanning loop in _scan_c.pxi) and PushQueue
# (_push_queue_c.pxi).  `include` is textual, so calls between the files are
# plain C calls within the module.  FileProducer is the shared Python class
# of _core_common.
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
from cpython.memoryview cimport PyMemoryView_Check, PyMemoryView_GET_BUFFER
from cpython.exc cimport PyErr_Clear
from cpython.object cimport PyObject, Py_TYPE
from cpython.long cimport PyLong_FromSsize_t
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.ref cimport Py_XDECREF
from libc.errno cimport EAGAIN, errno
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memchr, memcmp, memcpy, memmove

from asynframe._versions cimport af_check_dict_layout, af_dict_direct, af_dict_version, af_instance_dict, af_type_version

import os as _os

from asynframe._core_common import MAX_READ as _CHECKS_MAX_READ
from asynframe._core_common import (
    DEFAULT_READ_SIZE, FILE_READ_SIZE, IOV_MAX, MODE_CALLBACKS,
    MODE_COLLECT, MODE_FRAMES, SEND_BUDGET, SENDFILE_MAX, FileProducer, check_chunk_size,
    check_count, check_mode, check_read_size, check_terminator, dict_layout_sample, encode_text, producer_output,
    queue_file_read, queued_data, refill,
)

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

cdef extern from *:
    """
    /* A list the core empties once per frame (incoming) or per send (the
       queue's items) is appended to again right after: emptying it with
       PyList_SetSlice frees its array and the next append allocates one.
       These keep a small array (an idle channel holds at most
       AF_KEPT_ITEMS pointers per list; a larger one is freed as before).
       Free-threaded builds always take the list's own path (its lock). */
    #define AF_KEPT_ITEMS 8

    static inline int af_keeps_array(PyObject *list) {
    #ifdef Py_GIL_DISABLED
        (void)list;
        return 0;
    #else
        return ((PyListObject *)list)->allocated <= AF_KEPT_ITEMS;
    #endif
    }

    /* The only item of a one-item list, the list emptied: the list's
       reference becomes the caller's (nothing is released, so no code runs
       while the list is half changed). */
    static inline PyObject *af_list_take_only(PyObject *list) {
        PyObject *item = PyList_GET_ITEM(list, 0);
        Py_SET_SIZE(list, 0);
        return item;
    }

    /* Empty a list whose items are all None: releasing None runs no code. */
    static inline void af_list_drop_nones(PyObject *list) {
        Py_ssize_t n = Py_SIZE(list);
        Py_SET_SIZE(list, 0);
        while (n-- > 0)
            Py_DECREF(Py_None);
    }
    """
    bint af_keeps_array(object lst)
    object af_list_take_only(object lst)  # a new reference (Cython takes it)
    void af_list_drop_nones(object lst)

IMPLEMENTATION = "c"

__all__ = [
    "DEFAULT_READ_SIZE", "FILE_READ_SIZE", "IOV_MAX", "MODE_CALLBACKS", "MODE_COLLECT",
    "MODE_FRAMES", "SEND_BUDGET", "SENDFILE_MAX", "FileProducer", "FrameScanner", "PushQueue",
    "find_prefix_at_end", "IMPLEMENTATION",
]

# The shared constants, as C values for the hot paths (C_IOV_MAX sizes an
# array, so it is a compile-time constant checked against the shared one).
cdef Py_ssize_t C_SEND_BUDGET = SEND_BUDGET

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


# where this module finds a callback's instance dict (_versions.h)
_sample = dict_layout_sample()
af_check_dict_layout(<PyObject *>_sample)
del _sample

include "_scan_c.pxi"
include "_scanner_c.pxi"
include "_push_queue_c.pxi"
