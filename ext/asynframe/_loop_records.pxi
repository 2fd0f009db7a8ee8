# Included by _loop_c.pyx (one extension module, split for reading).
#
# A fast-path channel's facts, remembered between events.  _fast_socket()
# decides from about twenty dictionary lookups whether a channel may take
# the fast path (no instance override of the stock plumbing, connected, not
# listening, a plain socket, the core's scanner and queue) and what it needs
# (socket, scanner, queue, read size, hold flag, urgent-data interest).  On
# a request/response load that is one event per message, and those lookups
# were a third of the loop's own work per message.
#
# Every one of those facts is read from the channel's instance dict or its
# class.  So the answer stays right for as long as neither changes, which
# CPython tells us: a class's version tag and a dict's PEP 509 version
# (_versions.h).  The record keeps both and is trusted only while both still
# match; any assignment to the channel (by the application, asyncore, TLS, a
# timeout...) makes the next event check in full, exactly as without a
# record.
#
# The record lives in the channel's instance dict (_RECORD_KEY), so it goes
# when the channel goes.  It holds no references to what it describes: while
# the dict's version is unchanged the dict itself keeps those objects alive,
# and nothing is read through the record before that is checked.
#
# On CPython 3.12 the record does not use the dict version: the loop
# registers a dict watcher and watches each recorded dict; a change to one
# of the names a record was made from (_RECORDED_NAMES), a clear or the
# dict's end clears the record's `valid` flag.  Assignments to other
# attributes (`self.ibuffer = []` in every found_terminator) then keep the
# record, which a version number cannot tell apart.  From 3.13 on, and on
# free-threaded builds, no record is kept (see AF_RECORDS below) and every
# event is checked in full, as without records.

cdef extern from *:
    """
    /* socket.socket's descriptor without a fileno() call: the C object of
       _socket.socket starts with it (SOCKET_T, an int on POSIX).  configure()
       checks this against fileno() on a live and a closed socket and falls
       back to fileno() if they ever disagree. */
    typedef struct {
        PyObject_HEAD
        int sock_fd;
    } af_socket_head;

    static inline long long af_socket_fd(PyObject *sock) {
    #ifdef _WIN32
        (void)sock;
        return -2;  /* SOCKET is wider there: always use fileno() */
    #else
        return (long long)((af_socket_head *)sock)->sock_fd;
    #endif
    }
    """
    long long af_socket_fd(PyObject *sock)

cdef extern from *:
    """
    /* Dict watchers (CPython 3.12, with the GIL; see AF_RECORDS for later
       versions): one per process,
       added when the loop is configured, calling af_dict_changed (set from
       Cython) with the dict and the key changed, or NULL for a change to the
       whole dict (cleared, filled from another, deallocated).  It runs with
       the GIL held, before the change is made, and must not fail. */
    #if PY_VERSION_HEX >= 0x030C0000 && PY_VERSION_HEX < 0x030D0000 && !defined(Py_GIL_DISABLED)
    #define AF_DICT_WATCHERS 1
    static int af_watcher_id = -1;
    static void (*af_dict_changed)(PyObject *d, PyObject *key) = NULL;

    static int af_on_dict_event(PyDict_WatchEvent event, PyObject *d, PyObject *key,
                                PyObject *new_value) {
        int keyed;
        (void)new_value;
        keyed = event == PyDict_EVENT_ADDED || event == PyDict_EVENT_MODIFIED
                || event == PyDict_EVENT_DELETED;
        if (af_dict_changed != NULL)
            af_dict_changed(d, keyed ? key : NULL);
        return 0;
    }

    /* 0 once the watcher exists, -1 with an exception set */
    static int af_watch_start(void) {
        if (af_watcher_id < 0) {
            af_watcher_id = PyDict_AddWatcher(af_on_dict_event);
            if (af_watcher_id < 0)
                return -1;
        }
        return 0;
    }

    static int af_watch(PyObject *d) { return PyDict_Watch(af_watcher_id, d); }
    #else
    #define AF_DICT_WATCHERS 0
    static void (*af_dict_changed)(PyObject *d, PyObject *key) = NULL;
    static int af_watch_start(void) { return 0; }
    static int af_watch(PyObject *d) { (void)d; return -1; }
    #endif

    /* From 3.13 an instance's attributes live in values stored inline in
       the object, and the dict made for its __dict__ shares them: an
       attribute store writes the values and neither changes the dict's
       version nor tells its watchers (3.13.0, checked by
       tests/test_loop_records.py).  Giving the channel a dict of its own
       would avoid that, but 3.13.0 then mishandles a later __class__
       assignment.  So from 3.13 on no record is kept. */
    #if PY_VERSION_HEX >= 0x030D0000 || defined(Py_GIL_DISABLED)
    #define AF_RECORDS 0
    #else
    #define AF_RECORDS 1
    #endif
    """
    bint AF_DICT_WATCHERS
    void (*af_dict_changed)(PyObject *d, PyObject *key) noexcept
    int af_watch_start() except -1
    int af_watch(PyObject *d)
    bint AF_RECORDS


cdef extern from *:
    """
    /* The record of the channel whose compiled read this thread is in, or
       NULL: async_chat.push and _get_data, called from that read's
       callbacks, find the channel's scanner and queue here instead of
       looking up _af_dispatching in its instance dict.  A thread's own
       variable, so loops in other threads never see it; a loop run from a
       callback sets its own and puts this one back.  Only where records
       exist (AF_RECORDS): elsewhere it stays NULL. */
    #if defined(_MSC_VER)
    #define AF_THREAD_LOCAL __declspec(thread)
    #else
    #define AF_THREAD_LOCAL __thread
    #endif
    static AF_THREAD_LOCAL void *af_reading_record = NULL;
    static inline void *af_reading(void) { return af_reading_record; }
    /* the variable itself: a dispatch keeps its address, which stays the
       same for its thread, and saves a lookup of the thread's variables
       on each read */
    static inline void **af_reading_slot(void) { return &af_reading_record; }

    /* A read starts: the variable takes a reference to *rec* and gives
       back what it held, which the read puts back when it ends.  Every
       value the variable holds is a reference of its own, so one left
       behind by reads that ended out of order (greenlets switching stacks
       inside a callback) is stale but alive: its `reading` is NULL by then
       and _reading_record() uses nothing through it. */
    static inline void *af_enter_read(void **slot, PyObject *rec) {
        void *outer = *slot;
        Py_INCREF(rec);
        *slot = rec;
        return outer;
    }
    static inline void af_leave_read(void **slot, void *outer) {
        PyObject *now = (PyObject *)*slot;
        *slot = outer;
        Py_XDECREF(now);
    }
    """
    void *af_reading() noexcept nogil
    void **af_reading_slot() noexcept nogil
    void *af_enter_read(void **slot, PyObject *rec) noexcept
    void af_leave_read(void **slot, void *outer) noexcept


# True once configure() saw af_socket_fd() agree with fileno()
cdef bint _fd_direct = False


cdef bint _socket_layout_matches(object plain_socket):
    # af_socket_fd() against fileno(), on a live and on a closed socket
    import socket as _socket_module
    sock = plain_socket(_socket_module.AF_INET, _socket_module.SOCK_STREAM)
    try:
        if af_socket_fd(<PyObject *>sock) != sock.fileno():
            return False
    finally:
        sock.close()
    return af_socket_fd(<PyObject *>sock) == sock.fileno() == -1


cdef inline long long _sock_fd(object sock) except? -3:
    # sock.fileno() of a plain socket.socket
    if _fd_direct:
        return af_socket_fd(<PyObject *>sock)
    return sock.fileno()


cdef str _RECORD_KEY = "_af_fast_record"
cdef str _DISPATCHING = "_af_dispatching"


@cython.final
cdef class _FastRecord:
    # What _fast_socket() found for one channel that may take the fast path.
    # The pointers are borrowed (see above): dereference only after
    # _trusted() said yes.
    cdef unsigned long long dict_version  # the instance dict's, 0: never trusted
    cdef int valid                        # with dict watchers: cleared by _dict_changed()
    cdef PyObject *attrs                  # that dict (identity only)
    cdef PyObject *cls                    # the channel's class (identity only)
    cdef _ClassInfo info                  # its description, with its version tag
    cdef PyObject *sock                   # a plain socket.socket
    cdef PyObject *scanner                # FrameScanner
    cdef PyObject *queue                  # PushQueue
    cdef PyObject *size_value             # ac_in_buffer_size
    cdef PyObject *hold_value             # hold_pipelined_replies
    cdef Py_ssize_t read_size             # read_size(size_value) once asked, else -1
    cdef int hold                         # truth of hold_value once asked, else -1
    cdef bint wants_urgent                # _wants_urgent() for the channel
    # the class's callbacks the instance does not shadow (info.callbacks)
    cdef PyObject *callbacks[3]
    # info.collect_code when the instance's _collect_incoming_data is the
    # scanner's own collect(), else NULL (CallbackCache.collect_code)
    cdef PyObject *collect_code
    # The dispatch's _Event while a compiled read delivers the channel's
    # frames, else NULL; borrowed, since the event outlives the read.
    #
    # A recorded channel's _af_dispatching is the record itself, so the
    # read turns it true and false by setting this field, where it used to
    # store the event and then False in the instance dict: two dict writes
    # per message, about 7% of the loop's instructions on a request/response
    # load.  Python code sees the same truth value (asyncore's close(),
    # send(), the Python push), and its own assignment replaces the record
    # there, which makes the record untrusted, as any other write would.
    cdef PyObject *reading
    # the channel (identity only): af_reading()'s record is for the channel
    # it is asked about only if this is that channel
    cdef PyObject *owner

    def __bool__(self):
        return self.reading != NULL


cdef inline bint _trusted(_FastRecord rec, object obj, object attrs):
    # whether *rec* still describes *obj*, whose instance dict is *attrs* (a dict)
    cdef unsigned long long version
    if AF_DICT_WATCHERS:
        if not rec.valid:
            return False
    else:
        version = af_dict_version(<PyObject *>attrs)
        if version == 0 or version != rec.dict_version:
            return False
    return (rec.attrs == <PyObject *>attrs and rec.cls == <PyObject *>Py_TYPE(obj)
            and rec.info.version != 0 and rec.info.version == af_type_version(rec.cls))


# What a record is made from in the instance dict: a change to any of these
# names (with dict watchers) makes it untrusted.
_RECORDED_NAMES = frozenset(
    _STOCK_NAMES + _CALLBACK_NAMES
    + ("connected", "accepting", "socket", "_af_generic_path", "_af_scanner", "_af_queue",
       "ac_in_buffer_size", "hold_pipelined_replies", "handle_expt", "handle_expt_event",
       "_collect_incoming_data", _RECORD_KEY, _DISPATCHING)
)


cdef void _dict_changed(PyObject *attrs, PyObject *key) noexcept:
    # the dict watcher: *attrs*, a recorded instance dict, is about to change
    # at *key* (NULL: as a whole)
    cdef PyObject *found
    if key != NULL and PyUnicode_CheckExact(<object>key) and <object>key not in _RECORDED_NAMES:
        return
    # (any other key, even one of another type, counts as a change)
    found = _lookup(<object>attrs, _RECORD_KEY)  # a str key: cannot fail
    if found == NULL:
        return
    if type(<object>found) is _FastRecord and (<_FastRecord>found).attrs == attrs:
        (<_FastRecord>found).valid = 0


cdef int _start_watching() except -1:
    # from configure(): the process's dict watcher, where there are watchers
    global af_dict_changed
    if AF_DICT_WATCHERS:
        af_dict_changed = _dict_changed
        af_watch_start()
    return 0


cdef inline _FastRecord _reading_record(object obj):
    # the record of *obj*'s compiled read under way in this thread
    # (af_reading), if it is still trusted, else None
    cdef void *found = af_reading()
    cdef _FastRecord rec
    if found == NULL or (<_FastRecord>found).owner != <PyObject *>obj:
        return None
    rec = <_FastRecord>found
    if rec.reading == NULL:
        return None  # a loop run from a callback read the channel and ended
    attrs = _instance_dict(obj)
    if attrs is None or type(attrs) is not dict or not _trusted(rec, obj, attrs):
        return None
    return rec


cdef inline void *_start_reading(_FastRecord rec, _Event event) noexcept:
    # rec's channel is now inside its compiled read, for its _af_dispatching
    # (rec.reading) and for push and _get_data (af_reading); returns the
    # read this thread was in, for _stop_reading
    rec.reading = <PyObject *>event
    return af_enter_read(event.reading, <PyObject *>rec)


cdef inline void _stop_reading(_FastRecord rec, _Event event, void *outer_read) noexcept:
    # the read _start_reading began is over
    rec.reading = NULL
    af_leave_read(event.reading, outer_read)


cdef inline _FastRecord _record_of(object obj, object attrs, _Event event=None):
    # *obj*'s record if it is still trusted, else None; *attrs* is its dict;
    # *event*: the dispatch's, whose descriptor's slot may keep the lookup
    cdef _FdSlot *slot = NULL
    cdef PyObject *found
    if not AF_RECORDS:
        return None  # none is ever made here
    if event is not None:
        slot = event.slots.at(event.fd)
    if slot != NULL:
        if slot.attrs != <PyObject *>attrs:
            # another dict on this descriptor: nothing kept for it yet
            slot.attrs = <PyObject *>attrs
            slot.attrs_version = 0
        found = _lookup_kept(attrs, _RECORD_KEY, &slot.attrs_version, &slot.rec)
    else:
        found = _lookup(attrs, _RECORD_KEY)
    if found == NULL or type(<object>found) is not _FastRecord:
        return None
    if not _trusted(<_FastRecord>found, obj, attrs):
        return None
    return <_FastRecord>found


cdef int _remember(_Event event, object obj, object attrs, _ClassInfo info, object sock) except -1:
    # After a full check said yes (event holds its findings): keep them for
    # the next events.  Only for a class whose state reads are dict reads.
    cdef PyObject *found
    cdef PyObject *dispatching
    cdef PyObject *size_value
    cdef PyObject *hold_value
    cdef _FastRecord rec
    event.rec = None
    if not (info.flags & CLASS_PLAIN_STATE):
        return 0
    if not AF_RECORDS:
        return 0
    if AF_DICT_WATCHERS:
        if af_watch(<PyObject *>attrs) < 0:
            PyErr_Clear()
            return 0
    elif af_dict_version(<PyObject *>attrs) == 0:
        return 0
    size_value = _plain_value(attrs, info, "ac_in_buffer_size")
    hold_value = _plain_value(attrs, info, "hold_pipelined_replies")
    if size_value == NULL or hold_value == NULL:
        return 0  # left to the full reads and their errors, in _fast_read
    found = _lookup(attrs, _RECORD_KEY)
    if found != NULL and type(<object>found) is _FastRecord:
        rec = <_FastRecord>found
    else:
        rec = None
    dispatching = _lookup(attrs, _DISPATCHING)
    if not (dispatching == NULL or <object>dispatching is False
            or (rec is not None and dispatching == <PyObject *>rec)):
        # a read of this channel is under way (a loop run from one of its
        # callbacks): its _af_dispatching must stay as that read set it
        return 0
    if rec is None:
        rec = _FastRecord()
        PyDict_SetItem(attrs, _RECORD_KEY, rec)
    if dispatching != <PyObject *>rec:
        # false until a read sets rec.reading
        PyDict_SetItem(attrs, _DISPATCHING, rec)
    rec.attrs = <PyObject *>attrs
    rec.owner = <PyObject *>obj
    rec.cls = <PyObject *>Py_TYPE(obj)
    rec.info = info
    rec.sock = <PyObject *>sock
    rec.scanner = <PyObject *>event.scanner
    rec.queue = <PyObject *>event.queue
    rec.size_value = size_value
    rec.hold_value = hold_value
    rec.read_size = -1
    rec.hold = -1
    rec.wants_urgent = _wants_urgent(obj, info)
    for i in range(3):
        callback = <object>PyTuple_GET_ITEM(info.callbacks, i)
        if callback is None or _lookup(attrs, _CALLBACK_NAMES[i]) != NULL:
            rec.callbacks[i] = NULL
        else:
            rec.callbacks[i] = <PyObject *>callback
    rec.collect_code = NULL
    if rec.callbacks[CB_COLLECT] != NULL and info.collect_code is not None:
        found = _lookup(attrs, "_collect_incoming_data")
        if found != NULL and _is_collect_of(<object>found, event.scanner):
            rec.collect_code = <PyObject *>info.collect_code
    # last: the lookups above change nothing, the insertions above do
    rec.dict_version = af_dict_version(<PyObject *>attrs)
    rec.valid = 1
    event.rec = rec
    return 0


cdef bint _is_collect_of(object bound, FrameScanner scanner) except -1:
    # whether *bound* is scanner.collect, as async_chat binds it per instance
    own = scanner.collect
    return type(bound) is type(own) and bound == own


cdef inline PyObject *_plain_value(object attrs, _ClassInfo info, str name):
    # _state() for a CLASS_PLAIN_STATE class, or NULL where it would ask getattr
    cdef PyObject *value = _lookup(attrs, name)
    if value == NULL:
        value = _lookup(info.defaults, name)
    return value


cdef inline Py_ssize_t _record_read_size(_FastRecord rec) except -1:
    if rec.read_size < 0:
        rec.read_size = read_size(<object>rec.size_value)
    return rec.read_size


cdef inline bint _record_hold(_FastRecord rec) except -1:
    if rec.hold < 0:
        rec.hold = bool(<object>rec.hold_value)
    return rec.hold


cdef inline void _record_callbacks(_FastRecord rec, object attrs, CallbackCache *callbacks) noexcept:
    # what a scan of the channel may call without looking the methods up
    # (FrameScanner.c_process_cached checks it before each call); *attrs* is
    # the channel's instance dict
    callbacks.attrs = <PyObject *>attrs
    callbacks.attrs_version = af_dict_version(<PyObject *>attrs)
    # with watchers the record's flag says whether the dict is as recorded;
    # the caller holds the record for the scan, so the pointer stays valid
    callbacks.valid = &rec.valid if AF_DICT_WATCHERS else NULL
    callbacks.cls = rec.cls
    callbacks.cls_version = rec.info.version
    callbacks.funcs[CB_COLLECT] = rec.callbacks[CB_COLLECT]
    callbacks.funcs[CB_FOUND] = rec.callbacks[CB_FOUND]
    callbacks.funcs[CB_FRAME] = rec.callbacks[CB_FRAME]
    callbacks.collect_code = rec.collect_code
    callbacks.collected = 0
    callbacks.still_checked = 0
