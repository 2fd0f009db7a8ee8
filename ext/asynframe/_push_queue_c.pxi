# Included by _core_c.pyx: the compiled PushQueue, the output side of the
# core (its fields are declared in _core_c.pxd).  Its pure twin is
# src/asynframe/_push_queue_py.py.
#
# Data items are bytes, or 1-D byte memoryviews over bytes (queued_data):
# both are immutable, so send() points its iovecs at them without a copy.


cdef inline Py_ssize_t _data_size(object item) noexcept:
    # the byte count of a data item (bytes or a memoryview from queued_data)
    if PyBytes_CheckExact(item):
        return PyBytes_GET_SIZE(item)
    return PyMemoryView_GET_BUFFER(item).len


cdef inline void _point_at(af_iovec *iov, object item) noexcept:
    # the iovec for a data item: its own memory, no copy
    if PyBytes_CheckExact(item):
        iov.iov_base = PyBytes_AS_STRING(item)
        iov.iov_len = PyBytes_GET_SIZE(item)
    else:
        iov.iov_base = PyMemoryView_GET_BUFFER(item).buf
        iov.iov_len = PyMemoryView_GET_BUFFER(item).len


cdef inline bint _is_data(object item) noexcept:
    return PyBytes_CheckExact(item) or PyMemoryView_Check(item)


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
        """Queue bytes-like *data*; empty data is ignored.

        ``bytes``, and a C-contiguous memoryview over ``bytes``, are sent
        without a copy; anything mutable is copied (see the pure twin).
        """
        self.c_push(data)

    cdef int c_push(self, object data) except -1:
        cdef Py_ssize_t size
        if PyBytes_CheckExact(data):
            size = PyBytes_GET_SIZE(data)
        else:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError("data argument must be byte-ish (%r)" % (type(data),))
            data = queued_data(data)
            size = _data_size(data)
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
            self.push(encode_text(producer, self.encoding))
        elif type(producer) is FileProducer:
            # a file range read back from snapshot(): queued as a file again
            self._push_file(producer)
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

    cdef int _push_file(self, object entry) except -1:
        if entry._remaining:
            PyList_Append(self._items, entry)
            self._buffered += entry._remaining
            self._pushes += 1
        else:
            entry._finish()
        return 0

    @cython.critical_section
    def push_close(self):
        """Queue the close sentinel, reported once everything before it is sent."""
        PyList_Append(self._items, None)

    cdef list _detach(self):
        # Empty the queue into a new list (a _pull() in progress compares
        # the list it started with) and return the items that were live.
        cdef list live = self._items[self._head:]
        self._items = []
        self._head = 0
        self._offset = 0
        self._buffered = 0
        return live

    @cython.critical_section
    def clear(self):
        """Drop everything queued (queued files owned by the queue are closed)."""
        for item in self._detach():
            if type(item) is FileProducer:
                item._finish()

    @cython.critical_section
    def replace(self, items):
        """Queue *items* instead of what is queued (see the pure twin)."""
        items = list(items)  # before anything changes: iterating may raise
        refill(self, items, self._detach())

    @property
    @cython.critical_section
    def close_pending(self):
        """True when the close sentinel is at the head of the queue."""
        return self.c_close_pending()

    cdef bint c_close_pending(self) noexcept:
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

    cdef bint c_has_items(self) noexcept:
        # bool(queue): anything queued, close sentinel included
        return PyList_GET_SIZE(self._items) > self._head

    @cython.critical_section
    def snapshot(self):
        """A copy of the queued items (the unsent part of the head included).

        Memoryview items come out as new views of the same bytes: a caller
        releasing one leaves the queue's own intact (its iovecs point there).
        """
        items = [item[:] if PyMemoryView_Check(item) else item for item in self._items[self._head:]]
        if items and self._offset and _is_data(items[0]):
            items[0] = items[0][self._offset:]
        return items

    cdef void _compact(self):
        cdef Py_ssize_t size = PyList_GET_SIZE(self._items)
        if self._head >= size:
            # everything was sent: the items are the Nones _consume() left
            if size:
                if af_keeps_array(self._items):
                    af_list_drop_nones(self._items)
                else:
                    self._items = []
            self._head = 0
        elif self._head >= 64 and self._head * 2 >= size:
            PyList_SetSlice(self._items, 0, self._head, NULL)
            self._head = 0

    cdef int _pull_file(self, Py_ssize_t index, Py_ssize_t size) except -1:
        """Read the next *size* bytes of the file range at *index* in front of it."""
        cdef list items = self._items
        entry = <object>PyList_GET_ITEM(items, index)
        cdef long long before = entry._remaining
        self._pulling = True
        try:
            data = entry._read(size)
        finally:
            self._pulling = False
        if not self._still_at(items, index, entry):
            return 0
        # counted when queued: only what end of file cut off leaves the count
        self._buffered -= before - entry._remaining - len(data)
        queue_file_read(items, index, entry, data)
        return 0

    cdef bint _still_at(self, list items, Py_ssize_t index, object item):
        # Whether *item* is still at items[index] of the live queue once
        # Python code ran: a producer's more() or a file object's read() may
        # push or clear (a channel closing itself), and then what it returned
        # goes with the rest.
        return (self._items is items and index < PyList_GET_SIZE(items)
                and <object>PyList_GET_ITEM(items, index) is item)

    cdef Py_ssize_t _send_file(self, long long fd, object entry) except -1:
        """One sendfile() of the file range at the head (FileProducer._send)."""
        cdef long long before = entry._remaining
        cdef Py_ssize_t sent
        self._sendfiles += 1
        sent = entry._send(fd)
        if sent == -1:
            return 0
        if sent == -2:
            return self._send_fd(fd)  # the kernel refuses this pair: the range is read now
        # what left the range's count left the queue's (all of it when the
        # file turned out shorter than queued)
        self._buffered -= before - entry._remaining
        if not entry._remaining:
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
        if not self._still_at(items, index, producer):
            return 0
        if data:
            if not PyBytes_CheckExact(data):
                data = producer_output(data, self.encoding)
            items.insert(index, data)
            self._buffered += _data_size(data)
        else:
            del items[index]
        return 0

    cdef int _consume(self, Py_ssize_t nbytes) except -1:
        # Everything sent came from the data items at the head: send() pulled
        # producers before them and stops at the sentinel.
        cdef list items = self._items
        cdef Py_ssize_t offset = self._offset + nbytes
        cdef Py_ssize_t size
        self._buffered -= nbytes
        while offset:
            size = _data_size(<object>PyList_GET_ITEM(items, self._head))
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

        Returns the number of data items ready at the head.  A file range
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
            if PyBytes_CheckExact(item):
                total += PyBytes_GET_SIZE(item)
            elif PyMemoryView_Check(item):
                total += PyMemoryView_GET_BUFFER(item).len
            elif item is None:
                break
            else:
                if type(item) is FileProducer and (
                        files == FILES_STOP_ALL
                        or files == FILES_STOP_SENDFILE and item._sendfile):
                    break
                self._pull(i)
                if self._items is not items:
                    # more() cleared the queue: count what is queued now
                    items = self._items
                    i = self._head
                    count = 0
                    total = -self._offset
                continue
            count += 1
            i += 1
        return count

    @cython.critical_section
    def next_chunk(self, size):
        """Up to *size* bytes from the head, for callers that send themselves.

        ``bytes``, or a new memoryview for data pushed as a view over bytes;
        None when nothing is ready.  ``consume(n)`` reports what was sent.
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
        # An item is handed over as it is only when it is bytes: the caller,
        # a socket-like object, may keep it, and nothing changes it.  A
        # memoryview item always goes out as a new view (asynchat hands send()
        # slices of a pushed memoryview too), which the caller may release.
        if self._offset == 0 and PyBytes_CheckExact(head) and PyBytes_GET_SIZE(head) <= limit:
            return head
        # (offset + limit could overflow: limit may be sys.maxsize)
        limit = min(limit, _data_size(head) - self._offset)
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
        # Only data ahead of the first producer or close sentinel can have
        # been sent; _consume() walks data items only.  (The buffered bytes
        # are all in data items, so the walk ends inside the list.)
        while ready < nbytes:
            item = <object>PyList_GET_ITEM(self._items, i)
            if not _is_data(item):
                raise ValueError("cannot consume %d bytes: %d are ready before the next %s"
                                 % (nbytes, ready, _kind(item)))
            ready += _data_size(item)
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

    cdef Py_ssize_t c_push_send(self, bytes data, long long fd) except -1:
        # c_push(data) then c_send(fd), for a queue with nothing in it: the
        # same send of the same bytes, leaving the queue in the same state
        # (counters, buffered, a remainder queued at its offset, or data
        # queued when the send fails), without putting data in the list and
        # taking it out again.  A reply to a request is pushed to an empty
        # queue and sent whole: this is that path.
        cdef af_iovec iov
        cdef af_ssize_t sent
        cdef int error
        cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
        if self.c_has_items():
            raise RuntimeError("PushQueue.c_push_send() on a queue with items")
        if not size:
            return 0  # c_push() ignores it, and an empty queue sends nothing
        if self._pulling:
            self.c_push(data)
            raise RuntimeError("PushQueue.send() called from a producer's more()")
        self._pushes += 1
        self._sends += 1
        iov.iov_base = PyBytes_AS_STRING(data)
        iov.iov_len = <size_t>size
        sent = af_sendv(fd, &iov, 1)
        if sent < 0:
            if errno == EAGAIN or errno == EWOULDBLOCK:
                sent = 0
            else:
                error = errno
                self._queue_rest(data, size, 0)
                raise OSError(error, _os.strerror(error))
        if sent < size:
            self._queue_rest(data, size, sent)
        return sent

    cdef int _queue_rest(self, bytes data, Py_ssize_t size, Py_ssize_t sent) except -1:
        # what c_push() and a send of *sent* of its bytes leave: data at the
        # head, its first *sent* bytes gone
        PyList_Append(self._items, data)
        self._buffered += size - sent
        self._offset = sent
        return 0

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
                    return self._send_file(fd, item)
            return 0
        for i in range(count):
            item = <object>PyList_GET_ITEM(self._items, self._head + i)
            _point_at(&iov[i], item)
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
