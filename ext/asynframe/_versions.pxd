# Declarations of _versions.h for the modules that cimport them.
from cpython.object cimport PyObject


cdef extern from "_versions.h":
    unsigned int af_type_version(PyObject *type)
    unsigned long long af_dict_version(PyObject *d)
