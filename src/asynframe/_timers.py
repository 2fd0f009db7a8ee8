"""Timers and cross-thread calls for the loop of one socket map.

A ``LoopTimers`` belongs to a ``MapPoller`` and is created the first time
``call_later`` or ``call_soon_threadsafe`` is used on its map, so a loop
that never uses timers pays nothing.  The poller clamps its wait to the
earliest deadline and runs what is due after it dispatched the socket
events of that wakeup.

* Deadlines sit in a binary heap of ``(when, seq, handle)``; ``seq`` keeps
  callbacks due at the same instant in the order they were scheduled.
  Cancelling only marks the handle (O(1)); the heap is rebuilt when
  cancelled entries are the majority, so servers arming one timer per
  connection and cancelling it at close do not grow it without bound.
* ``call_soon_threadsafe`` appends to a deque (atomic) and writes to a
  wakeup descriptor (an eventfd on Linux, a socketpair elsewhere) that the
  poller watches but that is never put in the socket map: user code
  iterating the map, ``close_all`` and ``loop()``'s "run while the map is
  not empty" never see it.  The descriptor is created on first use.
"""

from __future__ import annotations

import heapq
import itertools
import math
import numbers
import os
import socket
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, List, Optional, Tuple

from ._events import RERAISED, report_callback_error

monotonic = time.monotonic

# Rebuild the heap once cancelled entries are this many and the majority.
_COMPACT_MIN = 64


class TimerHandle:
    """A callback scheduled by ``asyncore.call_later``.

    ``when`` is the deadline on the ``time.monotonic()`` clock.  ``cancel()``
    stops a pending call; it does nothing once the call ran.
    """

    __slots__ = ("when", "_callback", "_args", "_owner", "_cancelled")

    def __init__(self, when: float, callback: Callable[..., Any], args: Tuple[Any, ...], owner: "LoopTimers") -> None:
        self.when = when
        self._callback: Optional[Callable[..., Any]] = callback
        self._args = args
        self._owner: Optional[LoopTimers] = owner
        self._cancelled = False

    def cancel(self) -> None:
        """Do not run the callback (no effect if it ran or was cancelled)."""
        if self._cancelled:
            return
        self._cancelled = True
        # drop references at once: a cancelled timer must not keep a closed
        # channel alive until its deadline
        self._callback = None
        self._args = ()
        owner = self._owner
        self._owner = None
        if owner is not None:
            owner._cancelled_one()

    def cancelled(self) -> bool:
        """True if ``cancel()`` was called."""
        return self._cancelled

    def __repr__(self) -> str:
        state = "cancelled" if self._cancelled else ("pending" if self._owner else "done")
        return "<TimerHandle %s when=%.3f %r>" % (state, self.when, self._callback)


class Wakeup:
    """A descriptor another thread writes to, to end the loop's wait."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self._event_fd = -1
        self._pair: Optional[Tuple[socket.socket, socket.socket]] = None
        eventfd = getattr(os, "eventfd", None)
        if eventfd is not None:
            # one descriptor, and writes never fill up (a counter)
            self._event_fd = eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._fd = self._event_fd
        else:
            r, w = socket.socketpair()
            r.setblocking(False)
            w.setblocking(False)
            self._pair = (r, w)
            self._fd = r.fileno()

    def fileno(self) -> int:
        return self._fd

    def notify(self) -> None:
        # Under the lock: once closed, the number may belong to someone else.
        with self._lock:
            if self._closed:
                return
            try:
                if self._pair is None:
                    os.eventfd_write(self._event_fd, 1)
                else:
                    self._pair[1].send(b"\0")
            except (BlockingIOError, InterruptedError):
                pass  # already readable: the loop wakes anyway

    def drain(self) -> None:
        try:
            if self._pair is None:
                os.eventfd_read(self._event_fd)
            else:
                while self._pair[0].recv(4096):
                    pass
        except (BlockingIOError, InterruptedError):
            pass

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._pair is None:
                os.close(self._event_fd)
            else:
                for s in self._pair:
                    s.close()


class LoopTimers:
    """The timer heap and the cross-thread call queue of one socket map."""

    def __init__(self) -> None:
        self._heap: List[Tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        self._ncancelled = 0
        # (callback, args) handed over by call_soon_threadsafe
        self._ready: Deque[Tuple[Callable[..., Any], Tuple[Any, ...]]] = deque()
        # set by the poller once registered; None until a thread needs it
        self.wakeup: Optional[Wakeup] = None
        self._notified = False
        # wakes a loop that sleeps because it has no descriptor to wait on
        self._event = threading.Event()

    # -- scheduling ---------------------------------------------------------------
    def call_at(self, when: float, callback: Callable[..., Any], args: Tuple[Any, ...]) -> TimerHandle:
        handle = TimerHandle(when, callback, args, self)
        heapq.heappush(self._heap, (when, next(self._seq), handle))
        return handle

    def call_soon_threadsafe(self, callback: Callable[..., Any], args: Tuple[Any, ...]) -> None:
        self._ready.append((callback, args))
        self._event.set()
        if not self._notified:
            self._notified = True
            wakeup = self.wakeup
            if wakeup is not None:
                wakeup.notify()

    def _cancelled_one(self) -> None:
        self._ncancelled += 1
        heap = self._heap
        if self._ncancelled >= _COMPACT_MIN and self._ncancelled * 2 > len(heap):
            self._heap = [entry for entry in heap if not entry[2]._cancelled]
            heapq.heapify(self._heap)
            self._ncancelled = 0

    def pending(self) -> bool:
        """Anything scheduled that has not run or been cancelled."""
        return bool(self._ready) or len(self._heap) > self._ncancelled

    def __len__(self) -> int:
        return len(self._heap) - self._ncancelled + len(self._ready)

    # -- the loop's side ------------------------------------------------------------
    def clamp(self, timeout: Optional[float]) -> Optional[float]:
        """*timeout* shortened to the earliest deadline (0 if work is ready)."""
        if self._ready:
            return 0.0
        heap = self._heap
        while heap and heap[0][2]._cancelled:
            heapq.heappop(heap)
            self._ncancelled -= 1
        if not heap:
            return timeout
        delay = heap[0][0] - monotonic()
        if delay <= 0:
            return 0.0
        if timeout is None or delay < timeout:
            return delay
        return timeout

    def sleep(self, timeout: Optional[float]) -> None:
        """Wait like time.sleep, but a cross-thread call ends it early."""
        if timeout is None or timeout > 0:
            self._event.wait(timeout)
        self._event.clear()

    def drain(self) -> None:
        """The wakeup descriptor was readable."""
        wakeup = self.wakeup
        if wakeup is not None:
            wakeup.drain()

    def run(self) -> None:
        """Run the cross-thread calls received so far, then the timers due now.

        Work scheduled by these callbacks runs at the next iteration at the
        earliest, so a callback re-scheduling itself cannot starve the loop.
        """
        # Cleared on every pass, before the queue is read, whether or not
        # anything waits: a call appended after this point sees the flag
        # down and writes to the wakeup.  (Clearing it only when the queue
        # was non-empty lost wakeups: a call taken in the previous pass,
        # whose notify() raced the clear, left the flag up with nothing
        # queued, and the next calls waited out the loop's timeout.)
        self._notified = False
        ready = self._ready
        if ready:
            for _ in range(len(ready)):
                callback, args = ready.popleft()
                _invoke(callback, args)
        heap = self._heap
        if not heap or heap[0][0] > monotonic():
            return
        now = monotonic()
        last = next(self._seq)
        while heap:
            when, seq, handle = heap[0]
            if when > now or seq > last:
                break
            heapq.heappop(heap)
            if handle._cancelled:
                self._ncancelled -= 1
                continue
            timer_callback = handle._callback
            args = handle._args
            handle._callback = None
            handle._args = ()
            handle._owner = None
            assert timer_callback is not None
            _invoke(timer_callback, args)
            heap = self._heap  # a cancel inside the callback may have compacted it

    def clear(self) -> None:
        """Cancel every timer and drop the cross-thread calls not yet run."""
        heap = self._heap
        self._heap = []
        for _, _, handle in heap:
            handle._owner = None
            handle.cancel()
        self._ncancelled = 0
        self._ready.clear()
        self._notified = False


def _invoke(callback: Callable[..., Any], args: Tuple[Any, ...]) -> None:
    try:
        callback(*args)
    except RERAISED:
        raise
    except BaseException:
        report_callback_error(callback)


def check_delay(delay: Any, what: str = "delay") -> float:
    """*delay* as a finite float; TypeError/ValueError with a clear message."""
    if isinstance(delay, bool) or not isinstance(delay, numbers.Real):
        raise TypeError("%s must be a number of seconds, not %s" % (what, type(delay).__name__))
    value = float(delay)
    if not math.isfinite(value):
        raise ValueError("%s must be finite, got %r" % (what, delay))
    return value


__all__ = ["TimerHandle", "LoopTimers", "Wakeup", "check_delay", "monotonic"]
