"""Build the compiled framing core.

The extension is mandatory for this build: if Cython or the C compiler fails,
the install fails.  The pure-Python twin is chosen only at import time (see
``asynframe._core``), never by a build that quietly dropped the extension.
"""

import os
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup

COMPILER_DIRECTIVES = {
    "language_level": "3",
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "embedsignature": True,
    "freethreading_compatible": True,
}

extra_compile_args = []
extra_link_args = []
if os.environ.get("ASYNFRAME_ASAN") == "1":
    # Documented in docs/development.md: run the core tests under AddressSanitizer.
    extra_compile_args += ["-fsanitize=address", "-fno-omit-frame-pointer", "-O1", "-g"]
    extra_link_args += ["-fsanitize=address"]

# What a change to must rebuild both extensions: the core's declarations
# (cimported by _loop_c), the .pxi files _core_c.pyx includes, the C helpers.
CORE_SOURCES = [
    "ext/asynframe/_sockio.h",
    "ext/asynframe/_versions.h",
    "ext/asynframe/_versions.pxd",
    "ext/asynframe/_core_c.pxd",
    "ext/asynframe/_scanner_c.pxi",
    "ext/asynframe/_scan_c.pxi",
    "ext/asynframe/_push_queue_c.pxi",
]

extensions = [
    Extension(
        "asynframe._core_c",
        ["ext/asynframe/_core_c.pyx"],
        include_dirs=["ext/asynframe"],
        depends=CORE_SOURCES,
        libraries=["ws2_32"] if sys.platform == "win32" else [],
        extra_compile_args=extra_compile_args,
        extra_link_args=extra_link_args,
    ),
    # the loop's dispatch of stock async_chat channels (asynframe._poller)
    Extension(
        "asynframe._loop_c",
        ["ext/asynframe/_loop_c.pyx"],
        include_dirs=["ext/asynframe"],
        depends=CORE_SOURCES
        + [
            "ext/asynframe/_loop_classes.pxi",
            "ext/asynframe/_loop_records.pxi",
            "ext/asynframe/_loop_slots.pxi",
            "ext/asynframe/_loop_wait.pxi",
        ],
        libraries=["ws2_32"] if sys.platform == "win32" else [],
        extra_compile_args=extra_compile_args,
        extra_link_args=extra_link_args,
    ),
]

if os.environ.get("ASYNFRAME_PURE_WHEEL") == "1":
    # Explicitly asked for: the py3-none-any wheel for interpreters that
    # cannot load the compiled core.  Never a fallback after a failed build.
    setup()
    sys.exit(0)

setup(ext_modules=cythonize(extensions, compiler_directives=COMPILER_DIRECTIVES, include_path=["ext"]))
