"""An asynchat line server whose handlers do what real servers do after a push.

Run by tests/test_push_timing.py as
``python push_timing_server.py IMPL USE_POLL RECORD HOLD CERT KEY LOG``,
once on the reference asynchat (IMPL ``stdlib``: the stdlib on <= 3.11, the
pyasynchat/pyasyncore backports on 3.12+) and once on asynframe (IMPL
``asynframe``; ``ASYNFRAME_NO_EXTENSIONS=1`` picks the pure core).  It
prints its port and serves until a client sends ``STOP`` (or ``QUITALL``).

RECORD ``1`` gives every accepted connection a socket subclass that records
what ``send()`` is handed; LOG then gets, as JSON, the type and bytes of
every ``send()`` argument in order, and the arguments that changed after the
call.  RECORD ``0`` keeps plain sockets (asynframe's compiled path).  HOLD
``0`` sets asynframe's ``hold_pipelined_replies = False``.

Commands (one per line, ``\\r\\n``):

``ECHO x``      push ``x``
``QUIT``        push a reply, then ``close()``
``QUITDEL``     push a reply, then ``del_channel()`` and ``socket.close()``
``QUITALL``     push a reply, then ``asyncore.close_all()`` (ends the server)
``SEND``        push a reply, then ``self.send()`` another
``DIRECT``      push a reply, then ``self.socket.send()`` another
``STLS``        push a reply, then replace ``self.socket`` with an SSLSocket
                (STARTTLS, as CPython's test_poplib does); the handshake
                runs from handle_read, then lines go on over TLS
``STLSSET``     the same through ``set_socket()``
``PASV``        push a reply naming a data port, then block in ``accept()``
                until the client connects there (FTP passive mode)
``STOP``        push a reply and end the server after this connection
"""

from __future__ import annotations

import json
import socket
import ssl
import sys
import warnings

impl, use_poll, record, hold, cert, key, log_path = sys.argv[1:8]
use_poll = use_poll == "1"
if impl == "asynframe":
    from asynframe import asynchat, asyncore
else:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import asynchat
        import asyncore

context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
sends = []  # what socket objects were handed, in order
watched = []  # (argument, its bytes at the call): checked at exit


class RecordingSocket(socket.socket):
    """A socket subclass that remembers what ``send()`` is given."""

    def send(self, data, *args):
        watched.append((data, bytes(data)))
        sends.append([type(data).__name__, bytes(data).decode("latin-1")])
        return super().send(data, *args)


class Chat(asynchat.async_chat):
    def __init__(self, sock, server):
        asynchat.async_chat.__init__(self, sock)
        self.server = server
        self.set_terminator(b"\r\n")
        self.data = []
        self.handshaking = False

    def collect_incoming_data(self, data):
        self.data.append(data)

    def handle_read(self):
        if self.handshaking:
            try:
                self.socket.do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except (ssl.SSLError, OSError):
                self.handle_close()
                return
            self.handshaking = False
            return
        asynchat.async_chat.handle_read(self)

    def found_terminator(self):
        line = b"".join(self.data).decode("latin-1")
        self.data = []
        command, _, arg = line.partition(" ")
        if command == "ECHO":
            self.push(arg.encode("latin-1") + b"\r\n")
        elif command == "QUIT":
            self.push(b"221 bye\r\n")
            self.close()
        elif command == "QUITDEL":
            self.push(b"221 bye\r\n")
            self.del_channel()
            self.socket.close()
        elif command == "QUITALL":
            self.push(b"221 bye\r\n")
            asyncore.close_all()
        elif command == "SEND":
            self.push(b"250 pushed\r\n")
            self.send(b"250 sent\r\n")
        elif command == "DIRECT":
            self.push(b"250 pushed\r\n")
            self.socket.send(b"250 direct\r\n")
        elif command in ("STLS", "STLSSET"):
            self.push(b"+OK begin TLS\r\n")
            tls = context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)
            if command == "STLS":
                self.socket = tls
            else:
                self.del_channel()
                self.set_socket(tls)
            self.handshaking = True
        elif command == "PASV":
            data_server = socket.create_server(("127.0.0.1", 0))
            data_server.settimeout(10)
            self.push(b"227 %d\r\n" % data_server.getsockname()[1])
            try:
                conn, _ = data_server.accept()
            except socket.timeout:
                self.push(b"425 no data connection\r\n")
            else:
                conn.sendall(b"data over the data connection")
                conn.close()
                self.push(b"226 done\r\n")
            finally:
                data_server.close()
        elif command == "STOP":
            self.push(b"221 stopping\r\n")
            self.server.stopping = True
        else:
            self.push(b"500 unknown\r\n")


class Server(asyncore.dispatcher):
    def __init__(self):
        asyncore.dispatcher.__init__(self)
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.set_reuse_addr()
        self.bind(("127.0.0.1", 0))
        self.listen(16)
        self.stopping = False

    def handle_accepted(self, sock, addr):
        if record == "1":
            # a socket subclass, so every send() argument is seen
            sock = RecordingSocket(sock.family, sock.type, fileno=sock.detach())
        Chat(sock, self)


if hold == "0":
    Chat.hold_pipelined_replies = False


server = Server()
print(server.socket.getsockname()[1], flush=True)
try:
    while asyncore.socket_map and not (server.stopping and len(asyncore.socket_map) == 1):
        asyncore.loop(timeout=0.05, use_poll=use_poll, count=1)
finally:
    asyncore.close_all()
    mutated = [before.decode("latin-1") for data, before in watched if bytes(data) != before]
    with open(log_path, "w") as log:
        json.dump({"sends": sends, "mutated": mutated}, log)
