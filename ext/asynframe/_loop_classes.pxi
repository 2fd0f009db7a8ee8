# Included by _loop_c.pyx (one extension module, split for reading).
#
# How the compiled loop reads a channel without Python's generic attribute
# machinery: a _ClassInfo per channel class says whether the class keeps
# async_chat's stock plumbing (the fast path) and whether the per-event state
# names (_STATE_NAMES) may be read straight from the instance dict, falling
# back to the class's value.  A description is valid while the class's
# version tag is unchanged, so a class changed at run time is described again.


cdef _ClassInfo _info_of(type cls):
    # a strong reference from the dict: another thread may replace the entry
    cdef unsigned int version = _version_of(cls)
    cdef object cached = _class_info.get(cls)
    if cached is not None and version != 0 and version == (<_ClassInfo>cached).version:
        return <_ClassInfo>cached
    info = _describe(cls)
    _class_info[cls] = info
    return info


cdef inline _ClassInfo _info_for(_Event event, type cls):
    # _info_of(cls), remembering the last class of this dispatch() call
    cdef unsigned int version
    if cls is event.last_class:
        version = _version_of(cls)
        if version != 0 and version == event.last_info.version:
            return event.last_info
    info = _info_of(cls)
    event.last_class = cls
    event.last_info = info
    return info


cdef _ClassInfo _describe(type cls):
    cdef _ClassInfo info = _ClassInfo()
    cdef int flags = CLASS_FAST | CLASS_PLAIN_GETATTR
    info.defaults = {}
    if cls.__getattribute__ is not object.__getattribute__:
        # _get() would bypass it
        info.flags = 0
        info.callbacks = (None, None, None)
        info.collect_code = None
        info.version = _version_of(cls)
        return info
    for i, name in enumerate(_STOCK_NAMES):
        if getattr(cls, name, None) is not _stock[i]:
            flags = CLASS_PLAIN_GETATTR
            break
    # readable and writable are _STOCK_NAMES[4:6]
    if getattr(cls, "readable", None) is _stock[4] and getattr(cls, "writable", None) is _stock[5]:
        flags |= CLASS_CHAT_MASK
    if (getattr(cls, "handle_expt", None) is not _stock_expt[0]
            or getattr(cls, "handle_expt_event", None) is not _stock_expt[1]):
        flags |= CLASS_WANTS_URGENT
    if cls.__setattr__ is object.__setattr__:
        flags |= CLASS_PLAIN_STATE
        for name in _STATE_NAMES:
            for klass in cls.__mro__:
                if name in klass.__dict__:
                    value = klass.__dict__[name]
                    if hasattr(type(value), "__get__"):
                        # a property, a method...: only the generic lookup is exact
                        flags &= ~CLASS_PLAIN_STATE
                    else:
                        info.defaults[name] = value
                    break
    callbacks = []
    for name in _CALLBACK_NAMES:
        value = _from_class(cls, name)
        callbacks.append(value if type(value) is _function_type else None)
    info.callbacks = tuple(callbacks)
    info.collect_code = None
    if AF_COLLECT_IN_CORE and _from_class(cls, "_collect_incoming_data") is _stock_collect:
        info.collect_code = _collect_handing_code(callbacks[CB_COLLECT])
    info.flags = flags
    # read last: the getattr calls above are what give the class its tag
    info.version = _version_of(cls)
    return info


cdef object _from_class(type cls, str name):
    # what looking *name* up on an instance of *cls* finds in the class
    # (the first class of the MRO that defines it), or None
    for klass in cls.__mro__:
        attrs = klass.__dict__
        if name in attrs:
            return attrs[name]
    return None


cdef extern from "Python.h":
    # the raw forms: NULL with the error set, no Cython try block needed
    PyObject *_generic_getattr "PyObject_GenericGetAttr"(PyObject *obj, PyObject *name)
    int PyErr_ExceptionMatches(PyObject *exc)
    # PyDict_GetItem without saving and restoring the error state; every key
    # here is a str or an int, whose lookup cannot fail
    PyObject *_lookup "PyDict_GetItemWithError"(object d, object key)
    void PyErr_Clear()


cdef int _propagate() except -1:
    # returns the error already set (Cython sees -1 and unwinds)
    return -1


cdef inline object _owned(PyObject *ref):
    # a new reference from the C API, as an object (no extra reference)
    cdef object value = <object>ref
    Py_DECREF(value)
    return value


cdef inline object _instance_dict(object obj):
    cdef PyObject *attrs = af_instance_dict(<PyObject *>obj)
    if attrs == NULL:
        if PyErr_ExceptionMatches(<PyObject *>AttributeError):
            PyErr_Clear()
            return None
        _propagate()
    return _owned(attrs)


cdef inline object _get(object obj, str name):
    # dispatcher defines __getattr__ (asyncore's delegation to the socket),
    # so a plain obj.name goes through slot_tp_getattr_hook and two extra
    # type lookups; the generic lookup is what that hook tries first, and
    # __getattr__ is still asked when it fails.
    cdef PyObject *value = _generic_getattr(<PyObject *>obj, <PyObject *>name)
    if value == NULL:
        if PyErr_ExceptionMatches(<PyObject *>AttributeError):
            PyErr_Clear()
            return getattr(obj, name)
        _propagate()
    return _owned(value)


cdef inline object _state(object obj, object attrs, _ClassInfo info, str name):
    # obj.name for a name in _STATE_NAMES; *attrs* is obj's instance dict or None
    cdef PyObject *value
    if info.flags & CLASS_PLAIN_STATE and attrs is not None:
        # str keys: the lookup cannot raise
        value = _lookup(attrs, name)
        if value == NULL:
            value = _lookup(info.defaults, name)
        if value != NULL:
            return <object>value
    return _get(obj, name)


cdef inline int _set_state(object obj, object attrs, _ClassInfo info, str name, object value) except -1:
    if info.flags & CLASS_PLAIN_STATE and attrs is not None:
        PyDict_SetItem(attrs, name, value)
    else:
        setattr(obj, name, value)
    return 0
