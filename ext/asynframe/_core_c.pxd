# Declarations of the compiled framing core (asynframe._core_c).
#
# Read path (FrameScanner):
#
#   socket --recv()--> _buf[_end:]  (or feed(bytes): scanned in place when
#                                    nothing is held back, copied otherwise)
#          _buf[_start:_end] --scan at current terminator-->
#               MODE_CALLBACKS: target.collect_incoming_data(chunk) / found_terminator()
#               MODE_COLLECT:   _incoming.append(chunk) in C / found_terminator()
#               MODE_FRAMES:    target.frame_received(frame)
#          what is left after a scan is at most len(terminator) - 1 bytes that
#          may start a split terminator; they move to _buf[0:] (compaction is
#          a memmove of that tail, never a re-slice of the whole stream).
#
# Write path (PushQueue):
#
#   push(bytes, or a memoryview over bytes: no copy; anything mutable is
#   copied) -> _items (a list; _head indexes the first live entry, so the
#   queue pops in O(1) and is compacted in bulk) -> send(): gather up to
#   IOV_MAX iovecs starting at _items[_head] + _offset, pulling producers in
#   place as they come up, stop at the close sentinel (None) -> one
#   sendmsg(MSG_NOSIGNAL) -> _consume(sent) advances _head/_offset and drops
#   the references of everything fully sent.
#
#   push_file() -> a FileProducer entry (the Python class both cores share).
#   Gathering stops in front of it; once it is the head, send() makes one
#   os.sendfile() from its offset instead of sendmsg().  Where sendfile() cannot serve (no descriptor, no
#   such call, the kernel refuses the pair, or next_chunk()'s caller sends
#   itself) the entry is read like a producer: bytes items in front of it.

from cpython.object cimport PyObject

# A receive block replaced while views from get_buffer() still pointed into it:
# freed when the last of those views is released.
cdef struct _RetiredBlock:
    char *block
    Py_ssize_t exports
    _RetiredBlock *next


cdef struct CallbackCache:
    # The callbacks a scan calls on its target, as its class defines them
    # (plain functions, borrowed from the class), for a target whose
    # instance dict was *attrs* at *attrs_version* (or while *valid*) and
    # whose class was *cls* at *cls_version*: while all that still holds,
    # target.name(...) is exactly that function called with the target.
    # NULL: look it up.
    PyObject *attrs
    unsigned long long attrs_version
    int *valid                  # if not NULL: the dict is as cached while *valid (not the version)
    PyObject *cls
    unsigned int cls_version
    PyObject *funcs[3]          # CB_COLLECT, CB_FOUND, CB_FRAME
    # funcs[CB_COLLECT]'s code when its whole body is
    # self._collect_incoming_data(data) and that resolves to the scanner's
    # own collect() (asynframe._callback_shapes), else NULL.  While the
    # function still has this code and nothing could see its frame (a
    # tracer, a profiler, a frame-evaluation hook), the scan appends the
    # chunk itself, as that call would, and counts it in *collected*.
    PyObject *collect_code
    Py_ssize_t collected
    # set when the scan appended a chunk itself (collect_code) after the
    # checks above said yes: no Python code has run since, so the next
    # callback of the same scan is known to be as cached without asking
    # again (found_terminator follows every such chunk of a whole frame)
    int still_checked


cdef enum:
    CB_COLLECT = 0              # collect_incoming_data
    CB_FOUND = 1                # found_terminator
    CB_FRAME = 2                # frame_received


cdef class FrameScanner:
    cdef int _mode
    cdef int _kind              # TERM_NONE, TERM_BYTES or TERM_INT
    cdef object _term           # the terminator object as set (bytes, 0, b"", None)
    cdef Py_ssize_t _remaining  # TERM_INT: bytes still to come
    cdef char *_buf             # receive buffer; held-back bytes live in [_start:_end]
    cdef Py_ssize_t _cap
    cdef Py_ssize_t _start
    cdef Py_ssize_t _end
    cdef list _incoming
    cdef unsigned long _clears
    cdef unsigned long _stops   # bumped by stop(): the scan returns after the callback
    cdef Py_ssize_t _max_frame  # 0: no limit
    cdef Py_ssize_t _partial    # bytes of the current frame delivered so far
    cdef unsigned long long _frames  # frames delivered (frame_count)
    cdef bint _busy
    cdef Py_ssize_t _exports    # live memoryviews from get_buffer() into _buf: no realloc then
    cdef bint _lent             # get_buffer() handed out an area buffer_updated() has not counted yet
    cdef bint _forgot           # forget_buffer() since the last get_buffer(): no bytes may be reported
    cdef _RetiredBlock *_retired  # older blocks that views still point into
    # While a scan calls back (_busy): the bytes being scanned, their length,
    # the offset just past the frame being delivered, and _clears at the
    # start (a clear() or an overflow in a callback invalidates the pointer).
    # frame_follows() reads them.
    cdef const char *_scan_data
    cdef Py_ssize_t _scan_end
    cdef Py_ssize_t _scan_next
    cdef unsigned long _scan_clears
    # frame_follows()'s search, reused by the scan when it asks the same
    # (from the same offset, with the same terminator object): one search
    # per pipelined frame, not two
    cdef Py_ssize_t _ahead_from
    cdef Py_ssize_t _ahead_index
    cdef PyObject *_ahead_term
    # c_fill_area() read into the loop's shared area: those bytes, which the
    # c_process() that follows scans in place (NULL: none)
    cdef const char *_area
    cdef Py_ssize_t _area_len
    # c_process_cached(): its caller's cache for the scan under way, else NULL
    cdef CallbackCache *_callbacks

    cdef void _set(self, object term)
    cdef int _reserve(self, Py_ssize_t extra) except -1
    cdef int _scan_buffer(self, object target) except -1
    cdef int _hold(self, const char *ptr, Py_ssize_t length) except -1
    cdef object _join_incoming(self)
    # The C-level API of the compiled loop (asynframe._loop_c): the Python
    # methods of the same name without the c_, once their arguments are
    # checked.  The loop calls these and never touches the fields above.
    cdef long long c_fill(self, long long fd, Py_ssize_t size) except -2
    cdef long long c_fill_area(self, long long fd, Py_ssize_t size, char *area,
                               Py_ssize_t area_size) except -2
    cdef int c_process(self, object target) except -1
    cdef int c_process_cached(self, object target, CallbackCache *cache) except -1
    cdef bint c_frame_follows(self) noexcept
    cdef object c_get_data(self)


cdef class PushQueue:
    cdef list _items
    cdef Py_ssize_t _head       # index of the first live item in _items
    cdef Py_ssize_t _offset     # bytes of _items[_head] already sent
    cdef Py_ssize_t _buffered
    cdef public object encoding
    cdef Py_ssize_t _pushes
    cdef Py_ssize_t _sends
    cdef Py_ssize_t _sendfiles
    cdef bint _pulling          # inside a producer's more(): no send/consume then

    cdef void _compact(self)
    cdef int _pull(self, Py_ssize_t index) except -1
    cdef Py_ssize_t _ready(self, Py_ssize_t budget, int files) except -1
    cdef int _pull_file(self, Py_ssize_t index, Py_ssize_t size) except -1
    cdef int _push_file(self, object entry) except -1
    cdef Py_ssize_t _send_file(self, long long fd, object entry) except -1
    cdef int _consume(self, Py_ssize_t nbytes) except -1
    cdef Py_ssize_t _send_fd(self, long long fd) except -1
    cdef int _queue_rest(self, bytes data, Py_ssize_t size, Py_ssize_t sent) except -1
    cdef list _detach(self)
    cdef bint _still_at(self, list items, Py_ssize_t index, object item)

    # The C-level API of the compiled loop: push(), pop_close(), bool() and
    # send(fd) without their argument conversion.
    cdef int c_push(self, object data) except -1
    cdef bint c_close_pending(self) noexcept
    cdef bint c_pop_close(self)
    cdef bint c_has_items(self) noexcept
    cdef Py_ssize_t c_send(self, long long fd) except -1
    cdef Py_ssize_t c_push_send(self, bytes data, long long fd) except -1


# ac_in_buffer_size / fill()'s size as a read's byte count (_core_common.check_read_size)
cdef Py_ssize_t read_size(object size) except -1
