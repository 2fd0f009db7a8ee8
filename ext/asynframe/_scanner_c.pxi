# Included by _core_c.pyx: the compiled FrameScanner, the input side of the
# core (its fields are declared in _core_c.pxd, its scanning loop is in
# _scan_c.pxi).  Its pure twin is src/asynframe/_scanner_py.py.

cdef long long _recv(long long fd, char *buf, Py_ssize_t size) except -2:
    # one recv() into *buf*: the byte count, 0 at EOF, -1 if it would block
    cdef af_ssize_t got = af_recv(fd, buf, size)
    if got < 0:
        if errno == EAGAIN or errno == EWOULDBLOCK:
            return -1
        raise OSError(errno, _os.strerror(errno))
    return got


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
        return self.c_get_data()

    cdef object c_get_data(self):
        return self._join_incoming()

    cdef object _join_incoming(self):
        cdef list incoming = self._incoming
        cdef object data
        if PyList_GET_SIZE(incoming) == 1 and PyBytes_CheckExact(<object>PyList_GET_ITEM(incoming, 0)):
            if af_keeps_array(incoming):
                return af_list_take_only(incoming)
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

    cdef bint c_frame_follows(self) noexcept:
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

        Past it ``target.frame_too_large(size)`` is called (see the pure twin).
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
        self._forgot = False
        return view

    @cython.critical_section
    def forget_buffer(self):
        """The transport will report no bytes for the last ``get_buffer()`` (see the pure twin)."""
        if self._busy:
            return
        self._lent = False
        self._forgot = True
        if self._end == 0 and self._exports == 0 and self._cap > IDLE_BUFFER_MAX:
            # with views alive, __releasebuffer__ frees it when the last goes
            free(self._buf)
            self._buf = NULL
            self._cap = 0

    @cython.critical_section
    def buffer_updated(self, target, Py_ssize_t nbytes):
        """Scan the first *nbytes* written into the area ``get_buffer()`` returned."""
        if self._busy:
            raise RuntimeError("FrameScanner.buffer_updated() called from inside one of its callbacks")
        # after forget_buffer() the lent area is no longer the transport's
        cdef Py_ssize_t room = 0 if self._forgot else self._cap - self._end
        if nbytes < 0 or nbytes > room:
            raise ValueError("nbytes %d outside the buffer of %d bytes" % (nbytes, room))
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
        cdef long long got
        if self._busy:
            raise RuntimeError("FrameScanner.fill() called from inside one of its callbacks")
        self._reserve(size)
        got = _recv(fd, self._buf + self._end, size)
        if got > 0:
            self._end += got
        return got

    @cython.critical_section
    def process(self, target):
        """Scan the bytes in ``pending``, calling back *target*."""
        if self._busy:
            raise RuntimeError("FrameScanner.process() called from inside one of its callbacks")
        self.c_process(target)

    cdef long long c_fill_area(self, long long fd, Py_ssize_t size, char *area,
                               Py_ssize_t area_size) except -2:
        # c_fill() for the compiled loop, which owns *area*: when nothing is
        # held back the bytes are read there and scanned in place by the
        # c_process() that must follow, as feed() scans a caller's bytes.  A
        # connection between frames then needs no receive buffer of its own
        # (no allocation per read); held-back bytes still go to _buf.
        cdef long long got
        if (self._end > self._start or self._busy or self._exports or self._lent
                or size > area_size or self._area != NULL):
            return self.c_fill(fd, size)
        got = _recv(fd, area, size)
        if got > 0:
            self._area = area
            self._area_len = got
        return got

    cdef int c_process_cached(self, object target, CallbackCache *cache) except -1:
        # c_process(), calling the callbacks *cache* holds while it is valid
        # (the compiled loop's records know the channel's class and dict)
        self._callbacks = cache
        try:
            self.c_process(target)
        finally:
            self._callbacks = NULL
        return 0

    cdef int c_process(self, object target) except -1:
        # process() once its caller knows no scan is running
        cdef const char *data = self._area
        if data != NULL:
            self._area = NULL
            self._start = self._end = 0
            self._busy = True
            try:
                _scan(self, target, data, self._area_len, None)
            finally:
                self._busy = False
            return 0
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
            _scan(self, target, self._buf + start, end - start, None)
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
                    _scan(self, target, ptr, length, data)
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
