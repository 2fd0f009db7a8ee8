"""A line-based chat server: the classic asynchat teaching example.

What it shows
    * an ``asyncore.dispatcher`` that listens and hands each accepted socket
      to an ``asynchat.async_chat`` channel (``handle_accepted``);
    * input framing with ``set_terminator(b"\\r\\n")``: the channel collects
      the pieces of a line in ``collect_incoming_data`` and acts on the whole
      line in ``found_terminator``, however the bytes were split on the wire;
    * output with ``push`` (one channel pushing to all the others is how a
      broadcast is done) and ``close_when_done`` (say goodbye, then close once
      the goodbye has really been sent).

The protocol (one command or message per "\\r\\n"-terminated UTF-8 line)
    ``/nick NAME``   change your name (you start as ``guestN``)
    ``/who``         list who is connected
    ``/quit [msg]``  leave: the server says goodbye and closes the connection
    anything else    sent to every *other* client as ``NAME: line``

Lines from the server that are not chat messages start with ``* ``.

Run it
    python examples/chat_server.py --port 8023      # --port 0: any free port
then, in two or more other terminals, ``telnet 127.0.0.1 8023`` (or
``nc -C 127.0.0.1 8023``) and start typing.  The server prints
``listening on 127.0.0.1:PORT`` once it accepts connections.

Only ``asynframe`` is imported, never the stdlib ``asyncore``/``asynchat``
(gone since Python 3.12): with asynframe installed this runs on any Python 3.
In-process use (tests, embedding)::

    server = make_server(port=0, map=my_map)
    host, port = server.address
    asyncore.loop(timeout=0.01, map=my_map, count=100)
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from typing import Any, Dict, List, Optional

from asynframe import asynchat, asyncore

#: Longest line accepted (bytes, terminator excluded); longer lines end the session.
MAX_LINE = 4096
MAX_NICK = 32
ENCODING = "utf-8"


class ChatChannel(asynchat.async_chat):
    """One connected client."""

    def __init__(self, server: "ChatServer", sock: socket.socket, map: Optional[Dict[Any, Any]] = None) -> None:
        super().__init__(sock, map)
        self.server = server
        self.set_terminator(b"\r\n")
        self._pieces: List[bytes] = []  # the line being received
        self._size = 0
        self._leaving = False  # /quit seen (or line too long): ignore further input
        self.nick = server.new_guest_nick()
        server.join(self)

    # -- input: asynchat calls these two ----------------------------------------
    def collect_incoming_data(self, data: bytes) -> None:
        # Called with whatever part of the current line has arrived; it may be
        # called several times per line.  Keep the pieces, join them later.
        if self._leaving:
            return
        self._size += len(data)
        if self._size > MAX_LINE:
            self._pieces = []
            self.send_line("* error: line longer than %d bytes, bye" % MAX_LINE)
            self.leave()
            return
        self._pieces.append(data)

    def found_terminator(self) -> None:
        # A whole line (terminator stripped) has arrived.
        data = b"".join(self._pieces)
        self._pieces = []
        self._size = 0
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
            self.server.broadcast("%s: %s" % (self.nick, line), exclude=self)

    # -- commands ------------------------------------------------------------------
    def cmd_nick(self, name: str) -> None:
        if not name or len(name) > MAX_NICK or any(c.isspace() or c in ":*/" for c in name):
            self.send_line("* error: a nick is 1 to %d characters, no spaces or ':*/'" % MAX_NICK)
        elif self.server.find(name) not in (None, self):
            self.send_line("* error: the nick %s is taken" % name)
        else:
            old, self.nick = self.nick, name
            self.send_line("* you are now known as %s" % name)
            self.server.broadcast("* %s is now known as %s" % (old, name), exclude=self)

    def cmd_who(self, argument: str) -> None:
        self.send_line("* online: " + " ".join(channel.nick for channel in self.server.channels))

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
            self.server.part(self, message)
            self.close_when_done()

    def handle_close(self) -> None:
        # the client went away (or close_when_done finished)
        if not self._leaving:
            self._leaving = True
            self.server.part(self, "connection closed")
        self.close()


class ChatServer(asyncore.dispatcher):
    """The listening socket, and the room: who is connected, broadcasts."""

    channel_class = ChatChannel

    def __init__(self, host: str = "127.0.0.1", port: int = 0, map: Optional[Dict[Any, Any]] = None,
                 backlog: int = 128) -> None:
        super().__init__(map=map)
        self.channel_map = map
        self.channels: List[ChatChannel] = []
        self._guests = 0
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.set_reuse_addr()
        self.bind((host, port))
        self.listen(backlog)

    @property
    def address(self):
        """(host, port) actually bound: the port is chosen by the kernel for port 0."""
        return self.socket.getsockname()[:2]

    def handle_accepted(self, sock: socket.socket, addr: Any) -> None:
        self.channel_class(self, sock, self.channel_map)

    def new_guest_nick(self) -> str:
        while True:
            self._guests += 1
            nick = "guest%d" % self._guests
            if self.find(nick) is None:
                return nick

    def find(self, nick: str) -> Optional[ChatChannel]:
        nick = nick.lower()
        for channel in self.channels:
            if channel.nick.lower() == nick:
                return channel
        return None

    def join(self, channel: ChatChannel) -> None:
        self.channels.append(channel)
        channel.send_line("* welcome %s; commands: /nick NAME, /who, /quit" % channel.nick)
        self.broadcast("* %s has joined" % channel.nick, exclude=channel)

    def part(self, channel: ChatChannel, message: str = "") -> None:
        if channel in self.channels:
            self.channels.remove(channel)
            self.broadcast("* %s has left%s" % (channel.nick, " (%s)" % message if message else ""))

    def broadcast(self, text: str, exclude: Optional[ChatChannel] = None) -> None:
        data = text.encode(ENCODING) + b"\r\n"
        for channel in list(self.channels):
            if channel is not exclude:
                channel.push(data)

    def handle_close(self) -> None:
        self.close()


def make_server(port: int = 0, host: str = "127.0.0.1", map: Optional[Dict[Any, Any]] = None) -> ChatServer:
    """A listening ChatServer on *map* (the default asyncore map if None)."""
    return ChatServer(host, port, map)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Line-based chat server (asynframe asynchat example).")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8023, help="port to bind, 0 for any free port (default: %(default)s)")
    args = parser.parse_args(argv)

    server = make_server(args.port, args.host)
    # SIGTERM leaves the loop like Ctrl-C does, so the sockets get closed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    print("listening on %s:%d" % server.address, flush=True)
    try:
        asyncore.loop(timeout=1.0)
    except KeyboardInterrupt:
        pass
    finally:
        asyncore.close_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
