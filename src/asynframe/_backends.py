"""The readiness backends a ``MapPoller`` waits on: epoll, or ``selectors``.

Both take and report the loop's event masks (``_events.IN``/``OUT``/...),
so the poller does not care which one it has.  epoll is used directly where
it exists, since it reports urgent data (EPOLLPRI) and ``selectors`` cannot.
"""

from __future__ import annotations

import select
import selectors
from typing import List, Optional, Tuple

from ._events import IN, OUT


class EpollBackend:
    """epoll, used directly: it reports urgent data (EPOLLPRI), selectors can't."""

    supports_pri = True

    def __init__(self) -> None:
        self._epoll = select.epoll()

    def register(self, fd: int, mask: int) -> None:
        self._epoll.register(fd, mask)

    def modify(self, fd: int, mask: int) -> None:
        self._epoll.modify(fd, mask)

    def unregister(self, fd: int) -> None:
        self._epoll.unregister(fd)

    def poll(self, timeout: Optional[float]) -> List[Tuple[int, int]]:
        if timeout is not None and timeout < 0:
            timeout = 0
        return self._epoll.poll(-1 if timeout is None else timeout)

    def fileno(self) -> int:
        """The epoll descriptor (the compiled loop waits on it itself)."""
        return self._epoll.fileno()

    def close(self) -> None:
        self._epoll.close()


class SelectorsBackend:
    """kqueue/poll/select through ``selectors`` where epoll is missing."""

    supports_pri = False

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()

    @staticmethod
    def _events(mask: int) -> int:
        events = 0
        if mask & IN:
            events |= selectors.EVENT_READ
        if mask & OUT:
            events |= selectors.EVENT_WRITE
        return events

    def register(self, fd: int, mask: int) -> None:
        self._sel.register(fd, self._events(mask) or selectors.EVENT_READ)

    def modify(self, fd: int, mask: int) -> None:
        self._sel.modify(fd, self._events(mask) or selectors.EVENT_READ)

    def unregister(self, fd: int) -> None:
        self._sel.unregister(fd)

    def poll(self, timeout: Optional[float]) -> List[Tuple[int, int]]:
        ready = []
        for key, events in self._sel.select(timeout):
            mask = 0
            if events & selectors.EVENT_READ:
                mask |= IN
            if events & selectors.EVENT_WRITE:
                mask |= OUT
            ready.append((key.fd, mask))
        return ready

    def close(self) -> None:
        self._sel.close()


Backend = EpollBackend if hasattr(select, "epoll") else SelectorsBackend
