"""asyncore's ``file_wrapper``: just enough of a socket around a file descriptor.

It lets a ``file_dispatcher`` serve a pipe or a terminal through the same
loop as sockets (POSIX only, as in asyncore).  It has no loop or channel
logic of its own, so it sits below the public API, which re-exports it.
"""

from __future__ import annotations

import os
import socket
import warnings
from typing import Any, Optional


class file_wrapper:
    """Just enough of a socket around a file descriptor (which it dup()s)."""

    def __init__(self, fd: int) -> None:
        self.fd = os.dup(fd)

    def __del__(self) -> None:
        if self.fd >= 0:
            # no stacklevel: a finalizer has no caller to point at (as asyncore)
            warnings.warn("unclosed file %r" % self, ResourceWarning, source=self)  # noqa: B028
        self.close()

    def recv(self, *args: Any) -> bytes:
        return os.read(self.fd, *args)

    def send(self, *args: Any) -> int:
        return os.write(self.fd, *args)

    def getsockopt(self, level: int, optname: int, buflen: Optional[int] = None) -> int:
        if level == socket.SOL_SOCKET and optname == socket.SO_ERROR and not buflen:
            return 0
        raise NotImplementedError("Only asyncore specific behaviour implemented.")

    read = recv
    write = send

    def close(self) -> None:
        if self.fd < 0:
            return
        fd = self.fd
        self.fd = -1
        os.close(fd)

    def fileno(self) -> int:
        return self.fd
