# The compiled dispatch of a MapPoller's ready list (asynframe._poller).
#
# Its pure twin is MapPoller._dispatch_generic in src/asynframe/_poller.py:
# same events, same order, same handlers called, same exceptions routed to
# the same handle_error/handle_close.  What this module adds is a shortcut
# for "stock" async_chat channels: a channel whose class keeps async_chat's
# own event plumbing (see _STOCK_NAMES), whose instance overrides none of it,
# whose _af_generic_path is falsy and whose socket is a plain socket.socket.
# For those, the chain
#
#   readwrite -> handle_read_event -> handle_read -> scanner.fill/process
#             -> initiate_send -> queue.send -> _touch
#
# (six Python frames per event before the user's callbacks run) becomes C
# calls into the core's FrameScanner/PushQueue; the user's callbacks
# (found_terminator, frame_received, ...), handle_close and handle_error are
# still looked up and called as Python methods, so overriding them works.
# Everything else goes through asyncore's read/write/_exception/readwrite.

cimport cython
from cpython.bytes cimport PyBytes_CheckExact
from cpython.dict cimport PyDict_SetItem
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.long cimport PyLong_AsUnsignedLong
from cpython.object cimport PyObject, Py_TYPE
from cpython.unicode cimport PyUnicode_CheckExact
from cpython.pythread cimport PyThread_get_thread_ident
from cpython.ref cimport Py_CLEAR, Py_DECREF, Py_INCREF, Py_XDECREF
from cpython.tuple cimport PyTuple_GET_ITEM
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memset

from asynframe._core_c cimport CB_COLLECT, CB_FOUND, CB_FRAME, CallbackCache, FrameScanner, PushQueue, read_size

from types import FunctionType as _function_type

from asynframe import _events
from asynframe._callback_shapes import collect_handing_code as _collect_handing_code
from asynframe._core_common import dict_layout_sample as _dict_layout_sample

IMPLEMENTATION = "c"

# The methods a channel must not override (on its class or its instance) to
# take the fast path: everything between the wakeup and the user's callbacks.
_STOCK_NAMES = (
    "handle_read_event", "handle_write_event", "handle_read", "handle_write",
    "readable", "writable", "recv", "send", "initiate_send",
)

# The scanner's callbacks, in the order of CB_COLLECT, CB_FOUND, CB_FRAME
_CALLBACK_NAMES = ("collect_incoming_data", "found_terminator", "frame_received")

# The per-event state the loop reads from a channel.  When no class in the
# MRO makes one of them a descriptor, obj.name is "the instance dict's
# value, else the class's", which _state() reads without the generic lookup.
_STATE_NAMES = (
    "connected", "accepting", "socket", "_af_generic_path", "_af_scanner",
    "_af_queue", "_af_dispatching", "_af_limited", "ac_in_buffer_size",
    "hold_pipelined_replies", "_af_poller",
)

cdef enum:
    CLASS_FAST = 1       # the class keeps all of _STOCK_NAMES
    CLASS_CHAT_MASK = 2  # the class keeps async_chat's readable/writable
    CLASS_PLAIN_GETATTR = 4  # no __getattribute__ of its own: _get() is exact
    CLASS_PLAIN_STATE = 8    # _STATE_NAMES are plain values and no __setattr__ of its own
    CLASS_WANTS_URGENT = 16  # overrides handle_expt or handle_expt_event (_poller.wants_urgent)


from asynframe._versions cimport af_check_dict_layout, af_dict_direct, af_dict_version, af_instance_dict, af_type_version


cdef inline unsigned int _version_of(type cls):
    return af_type_version(<PyObject *>cls)


@cython.final
cdef class _ClassInfo:
    # What the loop needs to know about a channel class, valid while the
    # class's version tag is unchanged (so assigning EchoChannel.handle_read
    # after the first event is seen at the next one).
    cdef int flags
    cdef unsigned int version
    cdef dict defaults      # name in _STATE_NAMES -> the class's value
    # the class's collect_incoming_data, found_terminator and frame_received
    # where each is a plain function, else None (_CALLBACK_NAMES order)
    cdef tuple callbacks
    # the code of callbacks[CB_COLLECT] when it only hands each chunk to
    # _collect_incoming_data and the class's _collect_incoming_data is
    # async_chat's (_callback_shapes), else None
    cdef object collect_code


cdef extern from *:
    """
    /* Whether the scan may append a chunk itself for a collect_incoming_data
       that only hands it on (_core_c's _collect_cached): up to CPython 3.11,
       where a watched frame shows as a trace or profile function or a frame
       evaluation hook.  From 3.12 on sys.monitoring is not visible from C, so
       classes are not given the code to compare at all. */
    #define AF_COLLECT_IN_CORE (PY_VERSION_HEX < 0x030C0000)
    """
    bint AF_COLLECT_IN_CORE


# Set once by configure(), when asynchat defines async_chat and before any
# loop runs; read-only afterwards, so loops in several threads share them.
cdef bint _configured = False
cdef tuple _stock = ()          # the functions named by _STOCK_NAMES, in order
cdef object _stock_initiate_send = None
cdef tuple _stock_expt = ()     # the handle_expt/handle_expt_event that only log
cdef object _stock_collect = None  # async_chat._collect_incoming_data
cdef object _plain_socket = None

# Class descriptions, shared by every loop: a _ClassInfo is never changed once
# made, and a stale one (its class changed) is replaced, not updated.
cdef dict _class_info = {}      # type -> _ClassInfo

# the loop layer's rules (asynframe._events), as asyncore exports them
cdef object _read = _events.read
cdef object _write = _events.write
cdef object _expt = _events.exception
cdef object _readwrite = _events.readwrite
cdef object _to_poll_flags = _events.to_poll_flags
cdef object _reraised = _events.RERAISED
cdef object _disconnected = _events.DISCONNECTED
cdef int IN = _events.IN, OUT = _events.OUT, PRI = _events.PRI
cdef int ERR = _events.ERR, HUP = _events.HUP

# _af_dispatching during a compiled read is the dispatch's _Event (its
# scanner, queue and hold flag are the channel's) or, for a channel with a
# record, the record pointing to that event (_FastRecord.reading); Python's
# handle_read sets True or False.  Either way chat_push may send with
# _initiate_send.


@cython.final
cdef class _Event:
    # What _fast_socket() found out about the channel being served, for the
    # calls that follow before any Python code runs, and the last class
    # described (one server usually serves one class).  One per dispatch()
    # call: other loops, in other threads or nested in a handler, have their own.
    cdef object attrs           # the channel's instance dict, or None
    cdef _ClassInfo info        # its class's description
    cdef FrameScanner scanner
    cdef PushQueue queue
    # _fast_read(): the channel's hold_pipelined_replies; while its frames
    # are delivered the event itself is the channel's _af_dispatching, so
    # its push finds the scanner and queue here with no lookup
    cdef bint hold
    cdef type last_class
    cdef _ClassInfo last_info
    # _fast_socket(): the channel's trusted record (_loop_records.pxi), or
    # None when its facts were read in full and not kept
    cdef _FastRecord rec
    # the receive area this dispatch() call reads into (see _ReadArea)
    cdef _ReadArea area
    # collect_incoming_data calls made unnecessary (CallbackCache.collected)
    cdef Py_ssize_t collects_in_core
    # the poller's kept lookups (_loop_slots.pxi), and the descriptor of the
    # event being served (-1: none to use)
    cdef _FdSlots slots
    cdef long fd
    # af_reading()'s variable for the thread running this dispatch
    # (_loop_records.pxi): what _fast_read sets while a recorded channel reads
    cdef void **reading
    # the record _fast_read found still trusted as its read ended, when no
    # Python code can have run since (else NULL; borrowed, as nothing can
    # have dropped it either): _after, settling the same event right away,
    # takes it without checking the dict again.  _after always clears it,
    # and deliver_poll settles every event it reads, so it never outlives
    # its event; deliver_select, which settles after all its handlers,
    # clears it first.
    cdef PyObject *checked


DEF READ_AREA_SIZE = 65536  # asynchat's ac_in_buffer_size; larger reads use the scanner's buffer


@cython.final
cdef class _ReadArea:
    # One loop's receive area.  A fast-path read of a channel whose scanner
    # holds nothing back goes here and is scanned in place, so the scanners
    # of connections between frames keep no buffer and no read allocates
    # one (uvloop reads into one buffer per loop the same way).  dispatch()
    # takes the poller's area for the length of the call; a dispatch nested
    # in a callback (a loop run from a handler) finds it taken and uses one
    # of its own, so bytes still being scanned are never overwritten.
    cdef char *data
    cdef bint taken

    def __dealloc__(self):
        free(self.data)

    cdef char *ready(self) except NULL:
        if self.data == NULL:
            self.data = <char *>malloc(READ_AREA_SIZE)
            if self.data == NULL:
                raise MemoryError()
        return self.data


cdef _ReadArea _take_area(object poller):
    cdef _ReadArea area = getattr(poller, "read_area", None)
    if area is None:
        area = _ReadArea()
        poller.read_area = area
    if area.taken:
        return _ReadArea()
    area.taken = True
    return area


def configure(chat_class, plain_socket):
    """Describe the stock channel: called once, by ``_poller.enable_fast_path``.

    *chat_class* is async_chat: a channel whose class keeps its methods named
    in ``_STOCK_NAMES`` takes the fast path.  *plain_socket* is the socket
    type read and written directly.
    """
    global _configured, _stock, _stock_initiate_send, _stock_expt, _stock_collect, _plain_socket, _fd_direct
    if _configured:
        if _stock_initiate_send is chat_class.initiate_send and _plain_socket is plain_socket:
            return
        raise RuntimeError("asynframe._loop_c is already configured for another class")
    _stock = tuple([getattr(chat_class, name) for name in _STOCK_NAMES])
    _stock_initiate_send = chat_class.initiate_send
    _stock_expt = (chat_class.handle_expt, chat_class.handle_expt_event)
    _stock_collect = chat_class._collect_incoming_data
    _plain_socket = plain_socket
    _fd_direct = _socket_layout_matches(plain_socket)
    sample = _dict_layout_sample()
    af_check_dict_layout(<PyObject *>sample)
    _start_watching()
    _configured = True


def records_supported():
    """Whether fast-path channels keep a record between events here
    (CPython up to 3.12 with the GIL: dict versions, on 3.12 dict watchers);
    else every event is checked in full (_loop_records.pxi)."""
    return AF_RECORDS


def socket_fd_direct():
    """Whether a plain socket's descriptor is read from its C object (the
    layout check in configure() passed) rather than by calling fileno()."""
    return _fd_direct


def instance_dict_direct():
    """Whether this module reads a channel's instance dict where CPython
    keeps it (the layout check in configure() passed, _versions.h) rather
    than by calling PyObject_GenericGetDict."""
    return af_dict_direct


def compiled_method(python_method):
    """The compiled twin of async_chat's *python_method* (``push`` or
    ``_get_data``), named and documented as it is.

    asynchat puts the result in async_chat's class body: tracebacks,
    bound-method reprs and help() name the method the application called.
    """
    twin = {"push": chat_push, "_get_data": chat_get_data}.get(python_method.__name__)
    if twin is None:
        raise ValueError("no compiled twin of %r" % (python_method.__name__,))
    twin.__doc__ = python_method.__doc__
    twin.__name__ = python_method.__name__
    twin.__qualname__ = python_method.__qualname__
    twin.__module__ = python_method.__module__
    return twin


def chat_get_data(self):
    # async_chat._get_data, without its Python frame: found_terminator
    # calls it once per frame.  In the channel's own read the record has
    # its scanner (it is trusted: _af_scanner is as recorded).
    cdef _FastRecord rec = _reading_record(self)
    if rec is not None:
        return (<FrameScanner>rec.scanner).c_get_data()
    return self._af_scanner.get_data()


cdef int _push_in_read(object channel, _Event event, object data, object attrs,
                       _FastRecord checked=None) except -1:
    # a push from the channel's own compiled read (so from its loop's
    # thread): the dispatch's event holds the scanner and queue; *attrs* is
    # the channel's instance dict; *checked*: the channel's record, if the
    # caller just found it trusted
    if event.hold and event.scanner.c_frame_follows():
        event.queue.c_push(data)
        return 0  # held: the peer pipelines (asynchat.py)
    # dispatch() settles the interest afterwards: no _touch needed
    if PyBytes_CheckExact(data) and not event.queue.c_has_items():
        return _send_alone(channel, event, <bytes>data, attrs, checked)
    event.queue.c_push(data)
    _initiate_send(channel, event.queue, event.rec, attrs)
    return 0


cdef int _send_alone(object channel, _Event event, bytes data, object attrs,
                     _FastRecord checked) except -1:
    # _push_in_read() of bytes with nothing queued before them: the one
    # send _initiate_send would make, without queueing the bytes first
    cdef _FastRecord rec = event.rec
    cdef _ClassInfo info
    if checked is not None:
        sock = <object>checked.sock
    elif rec is not None and attrs is not None and type(attrs) is dict and _trusted(rec, channel, attrs):
        sock = <object>rec.sock
    else:
        # _initiate_send's checks, read afresh
        info = _info_of(type(channel))
        attrs = _instance_dict(channel)
        if not _state(channel, attrs, info, "connected"):
            event.queue.c_push(data)  # nothing is sent until connected
            return 0
        sock = _state(channel, attrs, info, "socket")
        if type(sock) is not _plain_socket:
            event.queue.c_push(data)
            _stock_initiate_send(channel)
            return 0
    try:
        event.queue.c_push_send(data, _sock_fd(sock))
    except OSError as why:
        channel._af_socket_error(why)
    return 0


def chat_push(self, data):
    # async_chat.push, without its Python frame: called once per reply.
    if not PyBytes_CheckExact(data) and not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("data argument must be byte-ish (%r)" % (type(data),))
    cdef _FastRecord rec = _reading_record(self)
    if rec is not None:
        # from the callbacks of the channel's own read: no lookup of its
        # _af_dispatching (the record, as long as it is trusted)
        _push_in_read(self, <_Event>rec.reading, data, <object>rec.attrs, rec)
        return
    cdef PyObject *marker
    cdef object own = _instance_dict(self)
    if own is not None:
        # the marker is found in the instance dict without describing the class
        marker = _lookup(own, _DISPATCHING)
        if marker != NULL:
            if type(<object>marker) is _FastRecord:
                if (<_FastRecord>marker).reading != NULL and (<_FastRecord>marker).attrs == <PyObject *>own:
                    _push_in_read(self, <_Event>(<_FastRecord>marker).reading, data, own)
                    return
            elif type(<object>marker) is _Event:
                _push_in_read(self, <_Event>marker, data, own)
                return
    cdef _ClassInfo info = _info_of(type(self))
    cdef bint plain = info.flags & CLASS_PLAIN_GETATTR
    cdef object attrs = _instance_dict(self) if plain else None
    dispatching = _state(self, attrs, info, "_af_dispatching") if plain else self._af_dispatching
    if type(dispatching) is _Event:
        _push_in_read(self, <_Event>dispatching, data, None)
        return
    if not dispatching:
        # (inside the channel's own read, the loop's thread is the caller:
        # the replies of the hot paths pay no thread check)
        poller = _state(self, attrs, info, "_af_poller") if plain else self._af_poller
        if poller is not None:
            owner = poller.loop_thread
            if owner is not None and PyLong_AsUnsignedLong(owner) != PyThread_get_thread_ident():
                # another thread runs this channel's loop: the Python push
                # hands the data over (_poller.off_loop_thread, one rule)
                self._af_python_push(data)
                return
    queue = _state(self, attrs, info, "_af_queue") if plain else self._af_queue
    if type(queue) is PushQueue:
        (<PushQueue>queue).c_push(data)
    else:
        queue.push(data)
    if dispatching:
        # async_chat.handle_read in Python
        scanner = _state(self, attrs, info, "_af_scanner") if plain else self._af_scanner
        if type(scanner) is FrameScanner:
            follows = (<FrameScanner>scanner).c_frame_follows()
        else:
            follows = scanner.frame_follows()
        if follows and self.hold_pipelined_replies:
            if _state(self, attrs, info, "_af_limited") if plain else self._af_limited:
                self._af_flow()  # held replies count toward the high mark too
            return
    self.initiate_send()


# the class descriptions and the attribute reads they allow
include "_loop_classes.pxi"
# the lookups of each event, kept per descriptor while their dicts are unchanged
include "_loop_slots.pxi"
# what a fast-path channel was found to be, kept while it stays so
include "_loop_records.pxi"


cdef object _fast_socket(_Event event, object obj):
    """The channel's plain socket if it may take the fast path, else None.

    On success *event* holds what was read, for the calls that follow
    before any Python code runs.
    """
    cdef object attrs
    cdef _FastRecord rec
    cdef _ClassInfo info = _info_for(event, type(obj))
    if not (info.flags & CLASS_FAST):
        return None
    attrs = _instance_dict(obj)
    if attrs is not None:
        if type(attrs) is not dict:
            return None
        rec = _record_of(obj, attrs, event)
        if rec is not None:
            # nothing it was decided from has changed since
            event.attrs = attrs
            event.info = rec.info
            event.scanner = <FrameScanner>rec.scanner
            event.queue = <PushQueue>rec.queue
            event.rec = rec
            return <object>rec.sock
        for name in _STOCK_NAMES:
            if _lookup(attrs, name) != NULL:
                return None
    if (_state(obj, attrs, info, "_af_generic_path") or not _state(obj, attrs, info, "connected")
            or _state(obj, attrs, info, "accepting")):
        return None
    sock = _state(obj, attrs, info, "socket")
    if type(sock) is not _plain_socket:
        return None
    scanner = _state(obj, attrs, info, "_af_scanner")
    queue = _state(obj, attrs, info, "_af_queue")
    if type(scanner) is not FrameScanner or type(queue) is not PushQueue:
        return None
    event.attrs = attrs
    event.info = info
    event.scanner = <FrameScanner>scanner
    event.queue = <PushQueue>queue
    if attrs is not None:
        _remember(event, obj, attrs, info, sock)
    else:
        event.rec = None
    return sock


cdef int _interest(object obj, _ClassInfo info) except -2:
    """async_chat's interest (asynchat._chat_interest) or -1 if it must be asked."""
    cdef object attrs
    if not (info.flags & CLASS_CHAT_MASK):
        return -1
    attrs = _instance_dict(obj)
    if attrs is not None and (type(attrs) is not dict or _lookup(attrs, "readable") != NULL
                              or _lookup(attrs, "writable") != NULL):
        return -1
    if _state(obj, attrs, info, "_af_generic_path"):
        # TLS, limits, timeouts...: their interest rules live in Python.  That
        # includes a write pause and an end of file being drained: the flag
        # stays set while either applies, so they need no check here.
        return -1
    if _state(obj, attrs, info, "accepting"):
        return IN
    if _state(obj, attrs, info, "_af_queue") or not _state(obj, attrs, info, "connected"):
        return IN | OUT
    return IN


cdef bint _wants_urgent(object obj, _ClassInfo info) except -1:
    # _poller.wants_urgent, for a channel _interest() just described
    if info.flags & CLASS_WANTS_URGENT:
        return True
    attrs = _instance_dict(obj)
    return attrs is not None and (_lookup(attrs, "handle_expt") != NULL
                                  or _lookup(attrs, "handle_expt_event") != NULL)


def chat_interest(obj):
    """What the compiled dispatch takes as *obj*'s interest when it settles a
    channel after an event, or -1 where it leaves that to MapPoller._refresh
    (asynchat._chat_interest).  For the twin tests: the two must agree."""
    return _interest(obj, _info_of(type(obj)))


cdef int _initiate_send(object obj, object queue=None, _FastRecord rec=None,
                        object attrs=None) except -1:
    # async_chat.initiate_send, for a channel whose send() is the stock one;
    # *queue*: its _af_queue, if just read; *rec* and *attrs*: the channel's
    # record and instance dict, if known (the record is checked here)
    cdef PushQueue q
    cdef _ClassInfo info
    cdef bint trusted = (rec is not None and attrs is not None and type(attrs) is dict
                         and _trusted(rec, obj, attrs))
    if trusted:
        # connected, with a plain socket, and queue is its _af_queue
        info = rec.info
    else:
        info = _info_of(type(obj))
        attrs = _instance_dict(obj)
    if queue is None:
        queue = _state(obj, attrs, info, "_af_queue")
    if type(queue) is not PushQueue:
        _stock_initiate_send(obj)
        return 0
    q = <PushQueue>queue
    while q.c_has_items():
        if not trusted and not _state(obj, attrs, info, "connected"):
            break
        if q.c_pop_close():
            obj.handle_close()
            return 0
        sock = <object>rec.sock if trusted else _state(obj, attrs, info, "socket")
        if type(sock) is not _plain_socket:
            # a callback swapped the socket: the Python method from here on
            _stock_initiate_send(obj)
            return 0
        try:
            q.c_send(_sock_fd(sock))
        except OSError as why:
            obj._af_socket_error(why)
            return 0
        if not q.c_close_pending():
            break
        # the close sentinel is next, and a producer's more() may have run
        # Python code: read the state afresh before closing
        trusted = False
        attrs = _instance_dict(obj)
    return 0


cdef int _fast_read(_Event event, object obj, object sock) except -1:
    # handle_read_event -> async_chat.handle_read of a connected channel;
    # _fast_socket() just filled *event*, and no Python code ran since
    cdef object attrs = event.attrs
    cdef _ClassInfo info = event.info
    cdef FrameScanner scanner = event.scanner
    cdef _FastRecord rec = event.rec
    cdef Py_ssize_t size
    cdef long long got
    cdef long long fd
    cdef char *area
    # the read this thread was in, when a loop run from one of its callbacks
    # serves this event (_start_reading)
    cdef void *outer_read = NULL
    if rec is not None:
        size = _record_read_size(rec)
        event.hold = _record_hold(rec)
        fd = _sock_fd(sock)
        area = event.area.ready()
        # set before the read, which may leave bytes in the shared area that
        # the scan below must take before anything else can fail
        # (the channel's _af_dispatching is rec: now true, see _FastRecord.reading)
        outer_read = _start_reading(rec, event)
        try:
            got = scanner.c_fill_area(fd, size, area, READ_AREA_SIZE)
        except OSError as why:
            _stop_reading(rec, event, outer_read)
            obj._af_socket_error(why)
            return 0
        if got <= 0:
            _stop_reading(rec, event, outer_read)
            if got == 0:
                obj._af_peer_eof()
            return 0  # else would block
    else:
        size = read_size(_state(obj, attrs, info, "ac_in_buffer_size"))
        try:
            got = scanner.c_fill(_sock_fd(sock), size)
        except OSError as why:
            obj._af_socket_error(why)
            return 0
        if got < 0:
            return 0  # would block
        if got == 0:
            obj._af_peer_eof()
            return 0
        event.hold = bool(_state(obj, attrs, info, "hold_pipelined_replies"))
        _set_state(obj, attrs, info, "_af_dispatching", event)
    cdef CallbackCache callbacks
    callbacks.collected = 0
    try:
        if rec is not None:
            _record_callbacks(rec, attrs, &callbacks)
            scanner.c_process_cached(obj, &callbacks)
        else:
            scanner.c_process(obj)
    except Exception:
        # as async_chat.handle_read: held replies to the frames before the
        # failing one go out before handle_error closes the channel
        if _get(obj, "_af_dispatching"):
            obj._af_release()
        raise
    finally:
        event.collects_in_core += callbacks.collected
        if rec is not None:
            _stop_reading(rec, event, outer_read)
        # the callbacks may have replaced anything, even the instance dict
        # (while rec is still trusted, its _af_dispatching is rec: false again)
        attrs = _instance_dict(obj)
        if not (rec is not None and attrs is not None and type(attrs) is dict
                and _trusted(rec, obj, attrs)):
            rec = None
            info = _info_for(event, type(obj))
            _set_state(obj, attrs, info, "_af_dispatching", False)
    if rec is not None:
        # still as _fast_socket() found it: no instance initiate_send, and
        # the queue is the one the callbacks pushed to
        if (<PushQueue>rec.queue).c_has_items():
            _initiate_send(obj, <PushQueue>rec.queue, rec, attrs)
        else:
            event.checked = <PyObject *>rec
        return 0
    queue = _state(obj, attrs, info, "_af_queue")
    if queue:
        if attrs is not None and _lookup(attrs, "initiate_send") != NULL:
            obj.initiate_send()  # set on the instance by a callback just now
        else:
            _initiate_send(obj, queue)
    return 0


cdef int _fast_readwrite(_Event event, object obj, object sock, int flags) except -1:
    # asyncore.readwrite without hang-up/error/urgent flags (those go generic)
    cdef PushQueue queue = event.queue
    try:
        if flags & IN:
            _fast_read(event, obj, sock)
            queue = None
            if flags & OUT:
                event.checked = NULL  # the write below may run Python code
                if _fast_socket(event, obj) is not None:
                    queue = event.queue
        if flags & OUT:
            if queue is not None:
                # handle_write_event -> handle_write
                _initiate_send(obj, queue, event.rec, event.attrs)
            else:
                obj.handle_write_event()
    except OSError as e:
        if e.errno not in _disconnected:
            obj.handle_error()
        else:
            obj.handle_close()
    except _reraised:
        raise
    except BaseException:
        obj.handle_error()
    return 0


cdef int _select_read(_Event event, object obj, object sock) except -1:
    # asyncore.read
    try:
        _fast_read(event, obj, sock)
    except _reraised:
        raise
    except BaseException:
        obj.handle_error()
    return 0


cdef int _select_write(_Event event, object obj) except -1:
    # asyncore.write
    try:
        _initiate_send(obj, event.queue, event.rec, event.attrs)
    except _reraised:
        raise
    except BaseException:
        obj.handle_error()
    return 0


# the masks an interest can be, as int objects: CPython keeps one object for
# each small int, so the registered mask is usually this very object
cdef tuple _MASK_INTS = tuple(range(16))


cdef inline bint _same_mask(PyObject *registered, int mask) except -1:
    # registered == mask, without making an int object of mask to compare
    if 0 <= mask < 16 and registered == PyTuple_GET_ITEM(_MASK_INTS, mask):
        return True
    return <object>registered == mask


cdef int _after(_Event event, dict socket_map, dict known, dict dirty, object fd,
                object obj, bint pri, bint in_map, object entry_then) except -1:
    # What _refresh would do for the channel, when it would do nothing: leave
    # it out of ``dirty``.  Anything else (interest changed, channel gone or
    # replaced, predicates to ask) is left to _refresh as in the pure twin.
    # *in_map*: the map still maps fd to obj (its version says so);
    # *entry_then*: known's entry for fd if known is unchanged since, or None.
    cdef int mask
    cdef PyObject *entry
    cdef _ClassInfo info
    cdef _FastRecord rec = None
    cdef PyObject *checked = event.checked
    event.checked = NULL
    if not in_map and _lookup(socket_map, fd) != <PyObject *>obj:
        # closed meanwhile: a new channel on this descriptor is already dirty
        return 0
    if checked != NULL and (<_FastRecord>checked).owner == <PyObject *>obj:
        rec = <_FastRecord>checked  # its read just ended with the record trusted, and nothing ran since
    else:
        attrs = _instance_dict(obj)
        if attrs is not None and type(attrs) is dict:
            rec = event.rec
            # the event's record is obj's if it describes obj's dict as it is
            if rec is None or not _trusted(rec, obj, attrs):
                rec = _record_of(obj, attrs)
    if rec is not None:
        # a fast-path channel as it was: connected, async_chat's own
        # readable/writable, no generic path (_interest's answer in short)
        mask = IN | OUT if (<PushQueue>rec.queue).c_has_items() else IN
        if pri and rec.wants_urgent:
            mask |= PRI
    else:
        info = _info_for(event, type(obj))
        mask = _interest(obj, info)
        if mask > 0 and pri and _wants_urgent(obj, info):
            mask |= PRI
    if mask >= 0:
        entry = <PyObject *>entry_then if entry_then is not None else _lookup(known, fd)
        # _interest() runs no Python code: the map still holds obj
        if (entry != NULL and type(<object>entry) is list and PyList_GET_SIZE(<object>entry) >= 2
                and PyList_GET_ITEM(<object>entry, 0) == <PyObject *>obj
                and _same_mask(PyList_GET_ITEM(<object>entry, 1), mask)):
            return 1
    PyDict_SetItem(dirty, fd, obj)
    return 0


cdef struct _Ready:
    # One event of a _Batch, with strong references to its fd (an int) and
    # to known's entry for that fd at the wait, [obj, mask, ...].  The entry
    # keeps obj alive: the poller gives a descriptor a new list rather than
    # assign entry[0] (MapPoller._register).  Holding obj through it spares
    # a touch of every channel's header before any handler runs and another
    # after the last, both cache misses on a busy loop.
    PyObject *fd
    PyObject *entry
    long cfd  # fd as a C number, for its slot; -1: not used
    int flags
    int registered  # entry[1] at the wait, with select semantics (else 0)


@cython.final
cdef class _Batch:
    # One dispatch() call's events: the snapshot of who was registered for
    # each descriptor when the wait returned, the poller's tables, and the
    # counters the poller reports (diagnostics.loop_stats).
    cdef _Event event
    cdef dict known
    cdef dict socket_map
    cdef dict dirty
    cdef bint pri
    # the events (_Ready); each one's references are dropped once it is
    # settled (release()), while its lines are still in the cache
    cdef _Ready *ready
    # with select semantics each event keeps its registered mask
    cdef bint select_semantics
    # dict versions (_loop_records.pxi; 0: none): known's after the snapshot,
    # the map's when current() last said yes.  While unchanged, settle()
    # needs neither lookup again.
    cdef unsigned long long known_version
    cdef unsigned long long map_version
    cdef Py_ssize_t count
    cdef Py_ssize_t fast
    cdef Py_ssize_t generic
    cdef Py_ssize_t settled

    def __dealloc__(self):
        cdef Py_ssize_t i
        for i in range(self.count):
            Py_XDECREF(self.ready[i].fd)
            Py_XDECREF(self.ready[i].entry)
        free(self.ready)

    cdef int reserve(self, Py_ssize_t n) except -1:
        self.ready = <_Ready *>malloc(n * sizeof(_Ready))
        if self.ready == NULL:
            raise MemoryError()
        return 0

    cdef inline int add(self, object fd, long cfd, int flags) except -1:
        # each event goes to the object registered when the wait returned,
        # whatever the handlers do to the map meanwhile
        cdef PyObject *entry
        cdef _FdSlot *slot = self.event.slots.grown(cfd) if cfd >= 0 else NULL
        if slot != NULL:
            entry = _lookup_kept(self.known, fd, &slot.known_version, &slot.entry)
        else:
            entry = _lookup(self.known, fd)
        if entry == NULL:
            return 0
        if type(<object>entry) is not list or PyList_GET_SIZE(<object>entry) < 2:
            raise TypeError("poller.known[%r] is not [channel, mask, ...]" % (fd,))
        cdef _Ready *event = &self.ready[self.count]
        event.registered = (<list>entry)[1] if self.select_semantics else 0
        event.flags = flags
        Py_INCREF(fd)
        event.fd = <PyObject *>fd
        Py_INCREF(<object>entry)
        event.entry = entry
        event.cfd = cfd
        self.count += 1
        return 0

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef int take(self, list events, Py_ssize_t n) except -1:
        cdef Py_ssize_t i
        self.reserve(n)
        for i in range(n):
            item = <object>PyList_GET_ITEM(events, i)
            self.add(<object>PyTuple_GET_ITEM(item, 0), -1, <object>PyTuple_GET_ITEM(item, 1))
        self.known_version = af_dict_version(<PyObject *>self.known)
        return 0

    cdef int take_events(self, af_epoll_event *events, int n) except -1:
        cdef int i
        self.reserve(n)
        cdef int fd
        for i in range(n):
            fd = af_event_fd(&events[i])
            self.add(fd, fd, af_event_flags(&events[i]))
        self.known_version = af_dict_version(<PyObject *>self.known)
        return 0

    cdef inline PyObject *obj_at(self, Py_ssize_t i) noexcept:
        # the object registered for event i at the wait (borrowed: its entry holds it)
        return PyList_GET_ITEM(<object>self.ready[i].entry, 0)

    cdef inline void release(self, Py_ssize_t i) noexcept:
        # event i is settled: its references go now, not at the batch's end
        Py_CLEAR(self.ready[i].fd)
        Py_CLEAR(self.ready[i].entry)

    cdef inline bint current(self, Py_ssize_t i):
        # the snapshot's object for event i is still the map's
        cdef _FdSlot *slot = self.event.slots.at(self.ready[i].cfd)
        cdef PyObject *mapped
        if slot != NULL:
            mapped = _lookup_kept(self.socket_map, <object>self.ready[i].fd, &slot.map_version, &slot.mapped)
        else:
            mapped = _lookup(self.socket_map, <object>self.ready[i].fd)
        if mapped != self.obj_at(i):
            return False
        self.map_version = af_dict_version(<PyObject *>self.socket_map)
        return True

    cdef inline int settle(self, Py_ssize_t i, bint just_current) except -1:
        # *just_current*: current(i) was the last current() asked
        cdef unsigned long long version
        cdef bint in_map = False
        cdef object entry = None
        if just_current:
            version = af_dict_version(<PyObject *>self.socket_map)
            in_map = version != 0 and version == self.map_version
        version = af_dict_version(<PyObject *>self.known)
        if version != 0 and version == self.known_version:
            entry = <object>self.ready[i].entry
        self.settled += _after(self.event, self.socket_map, self.known, self.dirty,
                               <object>self.ready[i].fd, <object>self.obj_at(i),
                               self.pri, in_map, entry)
        return 0

    cdef int deliver(self, bint poll_semantics) except -1:
        # (take() kept the registered masks when select_semantics was set)
        if poll_semantics:
            self.deliver_poll()
        else:
            self.deliver_select()
        return 0

    cdef int finish(self, object poller) except -1:
        self.event.area.taken = False
        poller.fast_dispatches += self.fast
        if self.event.collects_in_core:
            poller.collects_in_core += self.event.collects_in_core
            self.event.collects_in_core = 0
        poller.generic_dispatches += self.generic
        # a channel settled here had its interest evaluated, as _refresh would
        poller.interest_checks += self.settled
        return 0

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef int deliver_poll(self) except -1:
        # asyncore.poll2(): each channel's events at once (readwrite)
        cdef Py_ssize_t i
        cdef int flags
        for i in range(self.count):
            if not self.current(i):
                self.release(i)
                continue
            obj = <object>self.obj_at(i)
            flags = self.ready[i].flags
            sock = None
            self.event.fd = self.ready[i].cfd
            if not (flags & ~(IN | OUT)):
                sock = _fast_socket(self.event, obj)
            if sock is not None:
                self.fast += 1
                _fast_readwrite(self.event, obj, sock, flags)
            else:
                self.generic += 1
                _readwrite(obj, _to_poll_flags(flags))
            self.settle(i, True)
            obj = None  # (a local reference would outlive the event's)
            self.release(i)
        return 0

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef int deliver_select(self) except -1:
        # asyncore.poll(): all reads, then all writes, then exceptions
        cdef Py_ssize_t i
        for i in range(self.count):
            if self.ready[i].flags & (IN | ERR | HUP) and self.ready[i].registered & IN and self.current(i):
                obj = <object>self.obj_at(i)
                self.event.fd = self.ready[i].cfd
                sock = _fast_socket(self.event, obj)
                if sock is not None:
                    self.fast += 1
                    _select_read(self.event, obj, sock)
                else:
                    self.generic += 1
                    _read(obj)
        for i in range(self.count):
            if self.ready[i].flags & (OUT | ERR | HUP) and self.ready[i].registered & OUT and self.current(i):
                obj = <object>self.obj_at(i)
                self.event.fd = self.ready[i].cfd
                if _fast_socket(self.event, obj) is not None:
                    self.fast += 1
                    _select_write(self.event, obj)
                else:
                    self.generic += 1
                    _write(obj)
        for i in range(self.count):
            if self.ready[i].flags & PRI and self.current(i):
                self.generic += 1
                _expt(<object>self.obj_at(i))
        obj = sock = None
        self.event.checked = NULL  # every handler above may have run Python code
        for i in range(self.count):
            self.settle(i, False)
            self.release(i)
        return 0


def dispatch(poller, list events, bint poll_semantics):
    """Deliver *events* (epoll's ``[(fd, flags)]``) as ``MapPoller._dispatch_generic`` does."""
    cdef Py_ssize_t n = PyList_GET_SIZE(events)
    cdef _Batch batch
    if n == 0:
        return
    batch = _new_batch(poller, poll_semantics)
    try:
        batch.take(events, n)
        batch.deliver(poll_semantics)
    finally:
        batch.finish(poller)


cdef int _dispatch(object poller, af_epoll_event *events, int count, bint poll_semantics) except -1:
    # dispatch() of the C array wait_dispatch() filled
    cdef _Batch batch = _new_batch(poller, poll_semantics)
    try:
        batch.take_events(events, count)
        batch.deliver(poll_semantics)
    finally:
        batch.finish(poller)
    return 0


cdef _Batch _new_batch(object poller, bint poll_semantics):
    cdef _Batch batch
    if not _configured:
        raise RuntimeError("asynframe._loop_c.configure() was not called")
    batch = _Batch()
    batch.known = poller.known
    batch.socket_map = poller.map
    batch.dirty = poller.dirty
    batch.pri = poller.backend.supports_pri
    batch.select_semantics = not poll_semantics
    batch.event = _Event()
    batch.event.area = _take_area(poller)
    batch.event.slots = _slots_of(poller)
    batch.event.fd = -1
    batch.event.reading = af_reading_slot()
    return batch


# the wait itself, on epoll, feeding _dispatch()
include "_loop_wait.pxi"
