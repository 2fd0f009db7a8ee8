# Declarations of _versions.h for the modules that cimport them.
from cpython.object cimport PyObject


cdef extern from "_versions.h":
    unsigned int af_type_version(PyObject *type)
    unsigned long long af_dict_version(PyObject *d)
    # af_instance_dict: PyObject_GenericGetDict(obj, NULL), the raw form
    # (NULL with the error set), reading the dict in place where it can
    PyObject *af_instance_dict(PyObject *obj)
    bint af_check_dict_layout(PyObject *sample)
    bint af_dict_direct
