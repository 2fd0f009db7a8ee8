/* Version numbers CPython keeps on types and dicts, which tell the compiled
 * code that something it looked up earlier is still the same.  Shared by
 * _core_c (its callback cache) and _loop_c (its records of channels). */
#ifndef ASYNFRAME_VERSIONS_H
#define ASYNFRAME_VERSIONS_H

#include <Python.h>

/* CPython's type-attribute cache tag: a fresh number is given when the
   type's attributes are looked up; modifying the type or one of its bases
   invalidates it.  Up to 3.12 that clears Py_TPFLAGS_VALID_VERSION_TAG
   (3.9 leaves the number as it was); 3.13 no longer uses the flag and
   resets the number to 0.  0 means "no version".  tests/test_loop_fast_path.py
   checks this on every interpreter. */
static inline unsigned int af_type_version(PyObject *type) {
    PyTypeObject *t = (PyTypeObject *)type;
#if PY_VERSION_HEX < 0x030D0000
    if (!(t->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG))
        return 0;
#endif
    return t->tp_version_tag;
}

/* PEP 509's version of a dict: a number taken from a counter shared by all
   dicts at every change to one (insert, replace, delete, clear, the
   interpreter's specialised attribute stores included), so equal numbers
   mean the same dict, unchanged.  3.12 deprecated the field and 3.14 removes
   it; a free-threaded build changes it without the GIL.  There this is 0,
   "no version", and nothing keyed on it is ever trusted. */
#if PY_VERSION_HEX < 0x030E0000 && !defined(Py_GIL_DISABLED)
#  if defined(__GNUC__) || defined(__clang__)
#    pragma GCC diagnostic push
#    pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#  endif
static inline unsigned long long af_dict_version(PyObject *d) {
    return (unsigned long long)((PyDictObject *)d)->ma_version_tag;
}
#  if defined(__GNUC__) || defined(__clang__)
#    pragma GCC diagnostic pop
#  endif
#else
static inline unsigned long long af_dict_version(PyObject *d) {
    (void)d;
    return 0;
}
#endif


/* The instance dict of *obj*, read where CPython keeps it: what
   PyObject_GenericGetDict(obj, NULL) returns when the dict already exists,
   without the call.  The compiled loop asks for a channel's dict several
   times per message (each time to check a version against it), and each
   call cost about 18 instructions.  Up to 3.10 the dict sits at
   tp_dictoffset; on 3.11 and 3.12 a class with Py_TPFLAGS_MANAGED_DICT
   keeps it three words before the object (3.12 tags that word's low bit
   when it holds inline values instead).  Anything else (no dict yet,
   another layout, 3.13+, a free-threaded build) gives NULL and the caller
   makes the call.  Each module checks the layout once against the call
   (af_check_dict_layout) and reads nothing in place if they disagree. */
static int af_dict_direct = 0;

static inline PyObject *af_dict_in_place(PyObject *obj) {
#if defined(Py_GIL_DISABLED) || PY_VERSION_HEX >= 0x030D0000
    (void)obj;
    return NULL;
#elif PY_VERSION_HEX >= 0x030B0000
    uintptr_t word;
    if (!(Py_TYPE(obj)->tp_flags & Py_TPFLAGS_MANAGED_DICT))
        return NULL;
    word = ((uintptr_t *)obj)[-3];
    if (word & 1)
        return NULL;  /* 3.12: inline values, no dict made yet */
    return (PyObject *)word;
#else
    Py_ssize_t offset = Py_TYPE(obj)->tp_dictoffset;
    if (offset <= 0)
        return NULL;  /* none, or counted from the end of a variable-size object */
    return *(PyObject **)((char *)obj + offset);
#endif
}

/* Whether af_dict_in_place() finds the dict PyObject_GenericGetDict gives
   for *sample*, an instance of a plain class whose dict exists; sets
   af_dict_direct to that.  Never fails. */
static int af_check_dict_layout(PyObject *sample) {
    PyObject *d = PyObject_GenericGetDict(sample, NULL);
    if (d == NULL) {
        PyErr_Clear();
        af_dict_direct = 0;
        return 0;
    }
    af_dict_direct = af_dict_in_place(sample) == d;
    Py_DECREF(d);
    return af_dict_direct;
}

/* PyObject_GenericGetDict(obj, NULL): a new reference, or NULL with an
   exception set */
static inline PyObject *af_instance_dict(PyObject *obj) {
    PyObject *d;
    if (af_dict_direct && (d = af_dict_in_place(obj)) != NULL) {
        Py_INCREF(d);
        return d;
    }
    return PyObject_GenericGetDict(obj, NULL);
}

#endif
