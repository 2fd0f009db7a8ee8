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

#endif
