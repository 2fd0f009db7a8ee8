# Included by _loop_c.pyx (one extension module, split for reading).
#
# The wait of MapPoller.poll_once on epoll, done here so that the ready list
# goes from epoll_wait() to the dispatch as a C array.  select.epoll.poll()
# builds a list of (fd, events) tuples, which dispatch() then takes apart:
# on request/response loads (one message per event) that was a tenth of the
# loop's own work per message.  This is select.epoll.poll() as CPython
# writes it: the same timeout rounding (up, to whole milliseconds), the same
# maximum of events per call, and on EINTR the same retry with the time
# left, after running the signal handlers (PEP 475).

from libc.errno cimport EINTR, errno
from libc.math cimport ceil
from cpython.exc cimport PyErr_CheckSignals

cdef extern from *:
    """
    #ifdef __linux__
    #include <sys/epoll.h>
    typedef struct epoll_event af_epoll_event;
    static inline int af_epoll_wait(int epfd, af_epoll_event *events, int count, int ms) {
        return epoll_wait(epfd, events, count, ms);
    }
    static inline int af_event_fd(af_epoll_event *event) { return event->data.fd; }
    static inline int af_event_flags(af_epoll_event *event) { return (int)event->events; }
    #else
    /* no epoll: MapPoller never calls wait_dispatch() (compiled_loop() is None) */
    typedef struct { unsigned int events; int fd; } af_epoll_event;
    static inline int af_epoll_wait(int epfd, af_epoll_event *events, int count, int ms) {
        (void)epfd; (void)events; (void)count; (void)ms;
        errno = ENOSYS;
        return -1;
    }
    static inline int af_event_fd(af_epoll_event *event) { return event->fd; }
    static inline int af_event_flags(af_epoll_event *event) { return (int)event->events; }
    #endif
    """
    ctypedef struct af_epoll_event:
        pass
    int af_epoll_wait(int epfd, af_epoll_event *events, int count, int ms) nogil
    int af_event_fd(af_epoll_event *event)
    int af_event_flags(af_epoll_event *event)

import os as _os
from time import monotonic as _monotonic

# select.epoll.poll()'s maxevents when none is given: FD_SETSIZE - 1
DEF MAX_EVENTS = 1023


cdef int _timeout_ms(double seconds) except? -2:
    # seconds -> milliseconds as select.epoll.poll() converts them: to whole
    # nanoseconds rounding up, then to milliseconds rounding up
    cdef double nanoseconds = ceil(seconds * 1e9)
    cdef double ms = ceil(nanoseconds / 1e6)
    if ms > 2147483647.0:
        raise OverflowError("timeout is too large")
    return <int>ms


def wait_dispatch(poller, int epfd, timeout, bint poll_semantics, int wakeup_fd, timers):
    """``poller.backend.poll(timeout)`` on the epoll descriptor *epfd*, then
    ``dispatch()`` of what is ready; if *wakeup_fd* is among it, first
    ``timers.drain()`` (as ``MapPoller.poll_once`` does)."""
    cdef af_epoll_event events[MAX_EVENTS]
    cdef int ms
    cdef int count
    cdef int i
    cdef int error
    cdef double deadline = 0.0
    cdef double left
    if timeout is None:
        ms = -1
    else:
        left = timeout
        if left < 0:
            left = 0.0
        ms = _timeout_ms(left)
        deadline = _monotonic() + left
    while True:
        with nogil:
            count = af_epoll_wait(epfd, events, MAX_EVENTS, ms)
            error = errno
        if count >= 0 or error != EINTR:
            break
        # interrupted by a signal: its handler runs (and may raise), then
        # the wait goes on for the time left
        PyErr_CheckSignals()
        if timeout is not None:
            left = deadline - _monotonic()
            if left < 0:
                count = 0
                break
            ms = _timeout_ms(left)
    if count < 0:
        raise OSError(error, _os.strerror(error))
    if count == 0:
        return
    if wakeup_fd >= 0 and timers is not None:
        for i in range(count):
            if af_event_fd(&events[i]) == wakeup_fd:
                timers.drain()
                break
    _dispatch(poller, events, count, poll_semantics)
