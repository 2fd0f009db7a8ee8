"""One server on any of three event loops: asynframe's own, asyncio's or uvloop.

A protocol written once as an ``async_chat`` channel and once as an
``aio.ChatProtocol`` (usually one session class mixed into both, as in
``examples/chat_server.py``) needs the same scaffolding around it on every
loop: start listening, say where, run until Ctrl-C or SIGTERM, then close
every connection.  ``run_server`` is that scaffolding::

    from asynframe import loops

    loops.run_server(
        args.loop,                                      # "asynframe", "asyncio" or "uvloop"
        host, port,
        asyncore_server=lambda host, port: ChatServer(host, port),
        protocol_factory=lambda: AioChatSession(room),
        on_listening=lambda address: print("listening on %s:%d" % address),
    )

``new_event_loop(kind)`` makes the asyncio or uvloop loop on its own.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import weakref
from typing import Any, Callable, Optional, Tuple

from . import asyncore

#: The loops ``run_server`` knows, for an ``argparse`` ``choices=``.
LOOPS = ("asynframe", "asyncio", "uvloop")

Address = Tuple[str, int]


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A new asyncio (``"asyncio"``) or uvloop (``"uvloop"``) event loop.

    ImportError when uvloop is not installed; ValueError for any other name.
    """
    if kind == "uvloop":
        import uvloop  # optional: only needed for this loop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    if kind == "asyncio":
        return asyncio.new_event_loop()
    raise ValueError("no asyncio loop called %r (one of: asyncio, uvloop)" % (kind,))


def run_server(
    kind: str,
    host: str,
    port: int,
    *,
    asyncore_server: Callable[[str, int], Any],
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    backlog: int = 128,
    on_listening: Optional[Callable[[Address], None]] = None,
) -> None:
    """Serve on the loop *kind* until SIGINT or SIGTERM, then close every connection.

    On ``"asynframe"``, ``asyncore_server(host, port)`` must return a
    listening dispatcher on the default socket map; ``asyncore.loop()`` runs
    until a signal and ``asyncore.close_all()`` ends every channel.  On
    ``"asyncio"`` and ``"uvloop"``, ``loop.create_server(protocol_factory,
    host, port, backlog=backlog)`` serves until a signal; then the listener
    closes and every connection it made is aborted (what is not sent yet is
    dropped, as asyncore's ``close()`` does).  *on_listening* gets the bound
    ``(host, port)``: the port the kernel chose when *port* is 0.

    ValueError for an unknown *kind* and ImportError when uvloop is asked
    for but not installed, both before anything listens.
    """
    if kind not in LOOPS:
        raise ValueError("unknown loop %r (one of: %s)" % (kind, ", ".join(LOOPS)))
    if kind == "asynframe":
        _run_asyncore(host, port, asyncore_server, on_listening)
        return
    loop = new_event_loop(kind)
    try:
        loop.run_until_complete(_serve_until_stopped(host, port, protocol_factory, backlog, on_listening))
    except KeyboardInterrupt:  # where signal handlers are not available (Windows)
        pass
    finally:
        loop.close()


def _bound(sock: Any) -> Address:
    host, port = sock.getsockname()[:2]
    return str(host), int(port)


def _run_asyncore(
    host: str, port: int, asyncore_server: Callable[[str, int], Any], on_listening: Optional[Callable[[Address], None]]
) -> None:
    server = asyncore_server(host, port)
    # SIGTERM leaves the loop as Ctrl-C does, so the sockets get closed
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    try:
        if on_listening is not None:
            on_listening(_bound(server.socket))
        asyncore.loop(timeout=1.0)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        asyncore.close_all()


async def _serve_until_stopped(
    host: str,
    port: int,
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    backlog: int,
    on_listening: Optional[Callable[[Address], None]],
) -> None:
    # every protocol made, so the open ones can be aborted at the end; weak,
    # so a long-running server does not keep the closed ones
    made: "weakref.WeakSet[Any]" = weakref.WeakSet()

    def tracked() -> asyncio.BaseProtocol:
        protocol = protocol_factory()
        made.add(protocol)
        return protocol

    loop = asyncio.get_running_loop()
    server = await loop.create_server(tracked, host, port, backlog=backlog)
    stopped = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, stopped.set)
        except NotImplementedError:  # Windows: Ctrl-C raises KeyboardInterrupt instead
            pass
    if on_listening is not None:
        on_listening(_bound(server.sockets[0]))
    try:
        await stopped.wait()
    finally:
        server.close()
        for protocol in list(made):
            transport = getattr(protocol, "transport", None)
            if transport is not None and not transport.is_closing():
                transport.abort()
        # (since 3.12 this also waits for the connections)
        await server.wait_closed()
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.remove_signal_handler(signum)
            except NotImplementedError:
                pass
