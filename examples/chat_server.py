"""A line-based chat server: the classic asynchat teaching example, on three loops.

What it shows
    * a protocol written once (``ChatSession``) against asynchat's interface,
      and run by asynframe's own loop (mixed into ``asynchat.async_chat``,
      accepted by an ``asyncore.dispatcher``) or by asyncio or uvloop (mixed
      into ``asynframe.aio.ChatProtocol``, served by ``loop.create_server``):
      the two small adapter classes only say when a connection starts and ends;
    * input framing with ``set_terminator(b"\\r\\n")``: the session collects
      the pieces of a line in ``collect_incoming_data`` and acts on the whole
      line in ``found_terminator``, however the bytes were split on the wire;
    * ``max_frame``: a line longer than ``MAX_LINE`` is never buffered whole;
      the framing core drops it and calls ``frame_too_large``;
    * output with ``push`` (one session pushing to all the others is how a
      broadcast is done) and ``close_when_done`` (say goodbye, then close once
      the goodbye has really been sent).

The protocol (one command or message per "\\r\\n"-terminated UTF-8 line)
    ``/nick NAME``   change your name (you start as ``guestN``)
    ``/who``         list who is connected
    ``/quit [msg]``  leave: the server says goodbye and closes the connection
    anything else    sent to every *other* client as ``NAME: line``

Lines from the server that are not chat messages start with ``* ``.

Run it
    python examples/chat_server.py --port 8023                   # asynframe's loop
    python examples/chat_server.py --port 8023 --loop asyncio
    python examples/chat_server.py --port 8023 --loop uvloop     # needs uvloop
then, in two or more other terminals, ``telnet 127.0.0.1 8023`` (or
``nc -C 127.0.0.1 8023``) and start typing.  The server prints
``listening on 127.0.0.1:PORT`` once it accepts connections (``--port 0``:
any free port).

Only ``asynframe`` is imported, never the stdlib ``asyncore``/``asynchat``
(gone since Python 3.12): with asynframe installed this runs on any Python 3.
In-process use (tests, embedding)::

    server = make_server(port=0, map=my_map)          # asynframe's loop
    asyncore.loop(timeout=0.01, map=my_map, count=100)

    room = ChatRoom()                                 # in a coroutine on asyncio/uvloop
    server = await start_server(room, port=0)
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set, Tuple

from asynframe import aio, asynchat, asyncore, loops

#: Longest line accepted (bytes, terminator excluded); longer lines end the session.
MAX_LINE = 4096
MAX_NICK = 32
ENCODING = "utf-8"
LOOPS = loops.LOOPS


class ChatRoom:
    """Who is connected, and broadcasts: shared by every session, on any loop."""

    def __init__(self) -> None:
        self.members: List["ChatSession"] = []  # joined, in order, not yet left
        self.connections: Set["ChatSession"] = set()  # open, whether joined or leaving
        self._guests = 0

    def new_guest_nick(self) -> str:
        while True:
            self._guests += 1
            nick = "guest%d" % self._guests
            if self.find(nick) is None:
                return nick

    def find(self, nick: str) -> Optional["ChatSession"]:
        nick = nick.lower()
        for session in self.members:
            if session.nick.lower() == nick:
                return session
        return None

    def join(self, session: "ChatSession") -> None:
        self.members.append(session)
        session.send_line("* welcome %s; commands: /nick NAME, /who, /quit" % session.nick)
        self.broadcast("* %s has joined" % session.nick, exclude=session)

    def part(self, session: "ChatSession", message: str = "") -> None:
        if session in self.members:
            self.members.remove(session)
            self.broadcast("* %s has left%s" % (session.nick, " (%s)" % message if message else ""))

    def broadcast(self, text: str, exclude: Optional["ChatSession"] = None) -> None:
        data = text.encode(ENCODING) + b"\r\n"
        for session in list(self.members):
            if session is not exclude:
                session.push(data)


class ChatSession:
    """One connected client: the chat protocol, for any loop.

    It uses only what ``asynchat.async_chat`` and ``aio.ChatProtocol`` both
    offer (``set_terminator``, ``max_frame``, ``push``, ``close_when_done``,
    ``close``); the class it is mixed into calls ``start_session`` once the
    connection is up and ``session_closed`` once it is gone.
    """

    if TYPE_CHECKING:
        # what it uses of the framing class it is mixed into
        max_frame: int

        def set_terminator(self, term: Any) -> None: ...
        def push(self, data: Any) -> None: ...
        def close_when_done(self) -> None: ...
        def close(self) -> None: ...

    room: ChatRoom
    nick: str

    def start_session(self, room: ChatRoom) -> None:
        self.room = room
        # set here, not as class attributes: on a mixin those would hide the
        # framing base class' properties of the same names
        self.set_terminator(b"\r\n")
        self.max_frame = MAX_LINE
        self._pieces: List[bytes] = []  # the line being received
        self._leaving = False  # /quit seen (or line too long): ignore further input
        self.nick = room.new_guest_nick()
        room.connections.add(self)
        room.join(self)

    # -- input: the framing core calls these ------------------------------------
    def collect_incoming_data(self, data: bytes) -> None:
        # Called with whatever part of the current line has arrived; it may be
        # called several times per line.  Keep the pieces, join them later.
        if not self._leaving:
            self._pieces.append(data)

    def found_terminator(self) -> None:
        # A whole line (terminator stripped) has arrived.
        data = b"".join(self._pieces)
        self._pieces = []
        if self._leaving:
            return
        line = data.decode(ENCODING, "replace")
        if not line.strip():
            return
        if line.startswith("/"):
            command, _, argument = line[1:].partition(" ")
            handler = getattr(self, "cmd_" + command.lower(), None)
            if handler is None:
                self.send_line("* unknown command /%s (try /nick NAME, /who, /quit)" % command)
            else:
                handler(argument.strip())
        else:
            self.room.broadcast("%s: %s" % (self.nick, line), exclude=self)

    def frame_too_large(self, size: int) -> None:
        # More than max_frame bytes without "\r\n": the core has dropped them
        # (and the rest of that read) instead of buffering a line without end.
        self._pieces = []
        if not self._leaving:
            self.send_line("* error: line longer than %d bytes, bye" % MAX_LINE)
            self.leave()

    # -- commands ------------------------------------------------------------------
    def cmd_nick(self, name: str) -> None:
        if not name or len(name) > MAX_NICK or any(c.isspace() or c in ":*/" for c in name):
            self.send_line("* error: a nick is 1 to %d characters, no spaces or ':*/'" % MAX_NICK)
        elif self.room.find(name) not in (None, self):
            self.send_line("* error: the nick %s is taken" % name)
        else:
            old, self.nick = self.nick, name
            self.send_line("* you are now known as %s" % name)
            self.room.broadcast("* %s is now known as %s" % (old, name), exclude=self)

    def cmd_who(self, argument: str) -> None:
        self.send_line("* online: " + " ".join(session.nick for session in self.room.members))

    def cmd_quit(self, message: str) -> None:
        self.send_line("* goodbye %s" % self.nick)
        self.leave(message)

    # -- helpers ---------------------------------------------------------------------
    def send_line(self, text: str) -> None:
        self.push(text.encode(ENCODING) + b"\r\n")

    def leave(self, message: str = "") -> None:
        """Leave the chat; close once everything pushed so far has been sent."""
        if not self._leaving:
            self._leaving = True
            self.room.part(self, message)
            self.close_when_done()

    def session_closed(self) -> None:
        """The connection is gone: the client went away, or close_when_done finished."""
        self.room.connections.discard(self)
        if not self._leaving:
            self._leaving = True
            self.room.part(self, "connection closed")


# -- asynframe's own loop ------------------------------------------------------------


class ChatChannel(ChatSession, asynchat.async_chat):
    """A session on asynframe's loop: an async_chat over the accepted socket."""

    def __init__(self, room: ChatRoom, sock: socket.socket, map: Optional[Dict[Any, Any]] = None) -> None:
        asynchat.async_chat.__init__(self, sock, map)
        self.start_session(room)

    def close(self) -> None:
        # every way out ends here: peer gone, close_when_done, errors, close_all
        super().close()
        self.session_closed()


class ChatServer(asyncore.dispatcher):
    """The listening socket on asynframe's loop; ``room`` holds the sessions."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        map: Optional[Dict[Any, Any]] = None,
        backlog: int = 128,
        room: Optional[ChatRoom] = None,
    ) -> None:
        super().__init__(map=map)
        self.channel_map = map
        self.room = ChatRoom() if room is None else room
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.set_reuse_addr()
        self.bind((host, port))
        self.listen(backlog)

    @property
    def address(self) -> Tuple[str, int]:
        """(host, port) actually bound: the port is chosen by the kernel for port 0."""
        host, port = self.socket.getsockname()[:2]
        return str(host), int(port)

    def handle_accepted(self, sock: socket.socket, addr: Any) -> None:
        ChatChannel(self.room, sock, self.channel_map)

    def handle_close(self) -> None:
        self.close()


def make_server(port: int = 0, host: str = "127.0.0.1", map: Optional[Dict[Any, Any]] = None) -> ChatServer:
    """A listening ChatServer on *map* (the default asyncore map if None)."""
    return ChatServer(host, port, map)


# -- asyncio and uvloop ------------------------------------------------------------------


class AioChatSession(ChatSession, aio.ChatProtocol):
    """A session on asyncio or uvloop: a ChatProtocol made per connection."""

    def __init__(self, room: ChatRoom) -> None:
        super().__init__()
        self.room = room

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.start_session(self.room)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        super().connection_lost(exc)
        self.session_closed()

    def abort(self) -> None:
        """Close now, dropping what is not sent yet (as asyncore's close() does)."""
        if self.transport is not None:
            self.transport.abort()


async def start_server(room: ChatRoom, host: str = "127.0.0.1", port: int = 0, backlog: int = 128) -> asyncio.Server:
    """Serve *room* on the running loop (asyncio's or uvloop's)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: AioChatSession(room), host, port, backlog=backlog)


# -- the command line --------------------------------------------------------------------


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Line-based chat server (asynframe asynchat example).")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8023, help="port to bind, 0 for any free port (default: %(default)s)"
    )
    parser.add_argument(
        "--loop",
        choices=LOOPS,
        default="asynframe",
        help="event loop: asynframe's own, asyncio's or uvloop (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    room = ChatRoom()  # on asyncio/uvloop: shared by every session
    try:
        loops.run_server(
            args.loop,
            args.host,
            args.port,
            asyncore_server=lambda host, port: make_server(port, host),
            protocol_factory=lambda: AioChatSession(room),
            on_listening=lambda address: print("listening on %s:%d" % address, flush=True),
        )
    except ImportError as exc:
        parser.error("--loop %s: %s" % (args.loop, exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
