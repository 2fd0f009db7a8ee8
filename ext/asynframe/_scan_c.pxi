# Included by _core_c.pyx: the scanning loop of the compiled FrameScanner
# (_scanner_c.pxi) and the delivery steps it calls.  Module-level functions of
# the same extension module on the C struct of the scanner: a direct C call,
# as the final class's cdef methods were.  Its pure twin is
# FrameScanner._scan in src/asynframe/_scanner_py.py.


cdef extern from *:
    """
    /* the usual case, every scan but the compiled loop's of a recorded channel */
    #if defined(__GNUC__) || defined(__clang__)
    #define af_no_cache(cache) __builtin_expect((cache) == NULL, 1)
    #else
    #define af_no_cache(cache) ((cache) == NULL)
    #endif
    """
    bint _no_cache "af_no_cache"(CallbackCache *cache)

cdef extern from *:
    """
    /* func(self) and func(self, arg) for a cached callback: a plain
       vectorcall, without the generic call helper's checks for other kinds
       of callable (a cached callback is a function) */
    static inline PyObject *af_call_with(PyObject *func, PyObject *self) {
        PyObject *args[1];
        args[0] = self;
        return PyObject_Vectorcall(func, args, 1, NULL);
    }
    static inline PyObject *af_call_with2(PyObject *func, PyObject *self, PyObject *arg) {
        PyObject *args[2];
        args[0] = self;
        args[1] = arg;
        return PyObject_Vectorcall(func, args, 2, NULL);
    }
    """
    object _call_with "af_call_with"(object func, object self)
    object _call_with2 "af_call_with2"(object func, object self, object arg)

cdef extern from *:
    """
    /* Whether a Python frame run now could be seen other than through its
       effects: a trace or profile function on this thread, or a PEP 523
       frame-evaluation hook (debuggers, JITs).  Up to 3.11 those are all
       there is.  From 3.12 sys.monitoring can watch any code object and is
       not visible from here, so there every frame counts as seen. */
    static inline int af_frames_watched(void) {
    #if PY_VERSION_HEX < 0x030C0000
        PyThreadState *ts = PyThreadState_Get();
        return ts->c_tracefunc != NULL || ts->c_profilefunc != NULL
            || _PyInterpreterState_GetEvalFrameFunc(ts->interp) != _PyEval_EvalFrameDefault;
    #else
        return 1;
    #endif
    }
    /* PyList_Append without Cython's error check: the caller handles -1 */
    #define af_list_append(list, item) PyList_Append((list), (item))
    """
    bint af_frames_watched()
    int af_list_append(object lst, object item)
    PyObject *PyFunction_GET_CODE(PyObject *func)


cdef PyObject *_cached_callback(FrameScanner scanner, object target, int which) noexcept:
    # The function *target*.<callback> would call, from the scan's cache
    # (not NULL), or NULL when there is none or it may no longer be right
    # (then the scan looks the method up as usual).
    cdef CallbackCache *cache = scanner._callbacks
    cdef PyObject *func
    cdef PyObject *attrs
    cdef bint same
    func = cache.funcs[which]
    if cache.still_checked:
        cache.still_checked = 0
        return func
    if (func == NULL or <PyObject *>Py_TYPE(target) != cache.cls
            or af_type_version(cache.cls) != cache.cls_version):
        return NULL
    # the dict itself, not only its version: a callback may have given the
    # target a new __dict__, leaving the old one unchanged
    attrs = af_instance_dict(<PyObject *>target)
    if attrs == NULL:
        PyErr_Clear()
        return NULL
    if cache.valid != NULL:
        same = attrs == cache.attrs and cache.valid[0]
    else:
        same = attrs == cache.attrs and af_dict_version(attrs) == cache.attrs_version
    Py_XDECREF(attrs)
    return func if same else NULL


# The scan calls a callback as target.name(...) unless the compiled loop gave
# it a cache (FrameScanner.c_process_cached); then through these.


cdef int _collect_cached(FrameScanner scanner, object target, object chunk) except -1:
    # target.collect_incoming_data(chunk), for a scan with a callback cache
    cdef object func
    cdef CallbackCache *cache
    cdef PyObject *cached = _cached_callback(scanner, target, CB_COLLECT)
    if cached == NULL:
        target.collect_incoming_data(chunk)
        return 0
    cache = scanner._callbacks
    if (cache.collect_code != NULL and PyFunction_GET_CODE(cached) == cache.collect_code
            and not af_frames_watched()):
        # the method would only have called self._collect_incoming_data,
        # which is this scanner's collect()
        if af_list_append(scanner._incoming, chunk) == 0:
            cache.collected += 1
            cache.still_checked = 1
            return 0
        # (MemoryError) the real call fails the same way, with the
        # application's frame in the traceback
        PyErr_Clear()
    func = <object>cached  # our own reference: the callback may delete it from the class
    _call_with2(func, target, chunk)
    return 0


cdef int _found_cached(FrameScanner scanner, object target) except -1:
    # target.found_terminator(), for a scan with a callback cache
    cdef object func
    cdef PyObject *cached = _cached_callback(scanner, target, CB_FOUND)
    if cached == NULL:
        target.found_terminator()
    else:
        func = <object>cached
        _call_with(func, target)
    return 0


cdef int _frame_cached(FrameScanner scanner, object target, object frame) except -1:
    # target.frame_received(frame), for a scan with a callback cache
    cdef object func
    cdef PyObject *cached = _cached_callback(scanner, target, CB_FRAME)
    if cached == NULL:
        target.frame_received(frame)
    else:
        func = <object>cached
        _call_with2(func, target, frame)
    return 0


cdef int _deliver_partial(FrameScanner scanner, object target, object chunk) except -1:
    if scanner._mode == C_MODE_CALLBACKS:
        if _no_cache(scanner._callbacks):
            target.collect_incoming_data(chunk)
        else:
            _collect_cached(scanner, target, chunk)
    else:
        PyList_Append(scanner._incoming, chunk)
    return 0


cdef int _deliver_frame_end(FrameScanner scanner, object target, object chunk) except -1:
    # The last piece of a frame in MODE_COLLECT or MODE_FRAMES.
    if scanner._mode == C_MODE_COLLECT:
        if chunk is not None:
            PyList_Append(scanner._incoming, chunk)
        if _no_cache(scanner._callbacks):
            target.found_terminator()
        else:
            _found_cached(scanner, target)
    else:
        if chunk is None:
            chunk = b""
        if PyList_GET_SIZE(scanner._incoming):
            PyList_Append(scanner._incoming, chunk)
            chunk = scanner._join_incoming()
        if _no_cache(scanner._callbacks):
            target.frame_received(chunk)
        else:
            _frame_cached(scanner, target, chunk)
    return 0


cdef int _scan(FrameScanner scanner, object target, const char *data, Py_ssize_t end,
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
    cdef unsigned long clears = scanner._clears
    cdef unsigned long stops = scanner._stops
    cdef int mode
    cdef object term
    cdef object chunk
    # max_frame is read where it is checked, not once per scan: a change
    # made in a callback applies to the very next byte, as a terminator's does
    scanner._scan_data = data
    scanner._scan_end = end
    scanner._scan_clears = clears
    scanner._ahead_from = -1
    try:
        while pos < end:
            mode = scanner._mode
            if scanner._kind == TERM_NONE:
                scanner._scan_next = end
                if mode != C_MODE_FRAMES and scanner._max_frame and scanner._partial + end - pos > scanner._max_frame:
                    return _overflow(scanner, target, scanner._partial + end - pos)
                if pos == 0 and whole is not None:
                    chunk = whole
                else:
                    chunk = PyBytes_FromStringAndSize(data + pos, end - pos)
                if mode == C_MODE_FRAMES:
                    pos = end
                    scanner._partial = 0
                    scanner._frames += 1
                    _deliver_frame_end(scanner, target, chunk)
                else:
                    scanner._partial += end - pos
                    _deliver_partial(scanner, target, chunk)
                    pos = end
            elif scanner._kind == TERM_INT:
                avail = end - pos
                need = scanner._remaining
                scanner._scan_next = pos + need if avail >= need else end
                if avail < need:
                    if scanner._max_frame and scanner._partial + avail > scanner._max_frame:
                        return _overflow(scanner, target, scanner._partial + avail)
                    if pos == 0 and whole is not None:
                        chunk = whole
                    else:
                        chunk = PyBytes_FromStringAndSize(data + pos, avail)
                    scanner._partial += avail
                    _deliver_partial(scanner, target, chunk)
                    pos = end
                    # asynchat counts down after the callback, whatever it set
                    scanner._kind = TERM_INT
                    scanner._remaining = need - avail
                    scanner._term = None
                else:
                    if scanner._max_frame and scanner._partial + need > scanner._max_frame:
                        return _overflow(scanner, target, scanner._partial + need)
                    if pos == 0 and need == end and whole is not None:
                        chunk = whole
                    else:
                        chunk = PyBytes_FromStringAndSize(data + pos, need)
                    scanner._partial = 0
                    scanner._frames += 1
                    if mode == C_MODE_CALLBACKS:
                        if _no_cache(scanner._callbacks):
                            target.collect_incoming_data(chunk)
                        else:
                            _collect_cached(scanner, target, chunk)
                        pos += need
                        scanner._kind = TERM_NONE
                        scanner._term = 0
                        if _no_cache(scanner._callbacks):
                            target.found_terminator()
                        else:
                            _found_cached(scanner, target)
                    else:
                        pos += need
                        scanner._kind = TERM_NONE
                        scanner._term = 0
                        _deliver_frame_end(scanner, target, chunk)
            else:
                term = scanner._term
                tptr = PyBytes_AS_STRING(term)
                tlen = PyBytes_GET_SIZE(term)
                index = _find(data + pos, end - pos, tptr, tlen)
                if index < 0:
                    scanner._scan_next = end
                    keep = _prefix_at_end(data + pos, end - pos, tptr, tlen)
                    if scanner._max_frame and scanner._partial + end - pos > scanner._max_frame:
                        return _overflow(scanner, target, scanner._partial + end - pos)
                    if keep == end - pos:
                        scanner._hold(data + pos, keep)
                        return 0
                    if pos == 0 and keep == 0 and whole is not None:
                        chunk = whole
                    else:
                        chunk = PyBytes_FromStringAndSize(data + pos, end - pos - keep)
                    scanner._partial += end - pos - keep
                    _deliver_partial(scanner, target, chunk)
                    pos = end
                    if keep and scanner._clears == clears:
                        scanner._hold(data + end - keep, keep)
                    return 0
                # Several frames per read is the common case: stay in this
                # loop while the callbacks leave terminator and mode alone.
                while True:
                    if scanner._max_frame and scanner._partial + index > scanner._max_frame:
                        return _overflow(scanner, target, scanner._partial + index)
                    scanner._partial = 0
                    scanner._frames += 1
                    index += pos
                    scanner._scan_next = index + tlen
                    if mode == C_MODE_CALLBACKS:
                        if index > pos:
                            chunk = PyBytes_FromStringAndSize(data + pos, index - pos)
                            if _no_cache(scanner._callbacks):
                                target.collect_incoming_data(chunk)
                            else:
                                _collect_cached(scanner, target, chunk)
                        pos = index + tlen
                        if _no_cache(scanner._callbacks):
                            target.found_terminator()
                        else:
                            _found_cached(scanner, target)
                    elif mode == C_MODE_COLLECT:
                        if index > pos:
                            PyList_Append(scanner._incoming,
                                          PyBytes_FromStringAndSize(data + pos, index - pos))
                        pos = index + tlen
                        if _no_cache(scanner._callbacks):
                            target.found_terminator()
                        else:
                            _found_cached(scanner, target)
                    else:
                        chunk = PyBytes_FromStringAndSize(data + pos, index - pos)
                        pos = index + tlen
                        if PyList_GET_SIZE(scanner._incoming):
                            PyList_Append(scanner._incoming, chunk)
                            chunk = scanner._join_incoming()
                        if _no_cache(scanner._callbacks):
                            target.frame_received(chunk)
                        else:
                            _frame_cached(scanner, target, chunk)
                    if (scanner._term is not term or scanner._kind != TERM_BYTES
                            or scanner._mode != mode or scanner._clears != clears
                            or scanner._stops != stops):
                        break
                    if scanner._ahead_from == pos and scanner._ahead_term == <PyObject *>term:
                        index = scanner._ahead_index  # a push just searched here
                    else:
                        index = _find(data + pos, end - pos, tptr, tlen)
                    if index < 0:
                        break
            if scanner._clears != clears:
                return 0
            if scanner._stops != stops:
                # stop(): the rest waits in pending for process()
                if pos < end:
                    scanner._hold(data + pos, end - pos)
                return 0
    except BaseException:
        # asynchat keeps the unscanned rest in ac_in_buffer when a callback
        # raises; so do we, unless the callback cleared the buffers.
        if scanner._clears == clears and pos < end:
            scanner._hold(data + pos, end - pos)
        raise
    finally:
        scanner._scan_data = NULL
    return 0


cdef int _overflow(FrameScanner scanner, object target, Py_ssize_t size) except -1:
    # Drop the oversized frame and the rest of this read: memory stays
    # bounded by max_frame plus one read, whatever the peer sends.
    scanner._start = scanner._end = 0
    PyList_SetSlice(scanner._incoming, 0, PyList_GET_SIZE(scanner._incoming), NULL)
    scanner._partial = 0
    scanner._clears += 1
    target.frame_too_large(size)
    return 0
