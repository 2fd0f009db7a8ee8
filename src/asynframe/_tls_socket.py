"""The TLS layer of a channel after ``dispatcher.start_tls``: ``TLSSocket``.

``self.socket`` of the channel becomes a ``TLSSocket``: its ``recv``/``send``
speak plaintext, socket-style (``BlockingIOError`` when there is nothing to
do), and it offers the TLS details (``ssl_object``, ``getpeercert()``,
``cipher()``, ``version()``, ...).  The dispatcher's ``recv``/``send`` and
event handlers call into it (``channel_recv``, ``read_event``, ...); the
loop asks it what the socket must wait for (``interest``), which is where
the handshake, the ciphertext backlog and decrypted-but-undelivered input
(``_poller.BUFFERED``) are taken into account.  Its states, the moves
between them and the handshake timer are ``_tls_state``'s
(``TLSStateMachine``, which ``TLSSocket`` extends); ``_tls.start_tls``
checks the arguments and puts a ``TLSSocket`` under the channel.

Shutdown: close_notify is sent (``unwrap``), flushed by ``close_when_done``
like any queued output, best-effort by a plain ``close()``; the peer's
close_notify is never waited for (RFC 8446 6.1 lets the closing side go), so
a peer that does not answer cannot hold the channel.  The peer's end: the
socket's EOF reaches OpenSSL only once it has taken every byte before it, so
a bare TCP close (no close_notify: ``close_notify_received`` False) is told
apart and closes the channel like any end of stream, whatever the Python
version and context options make OpenSSL say about it (``_tell_eof``).
"""

from __future__ import annotations

import socket
import ssl
from errno import EBADF, ECONNRESET, EPIPE
from typing import Any, List, Optional, Tuple

from . import _events
from ._events import DISCONNECTED as _DISCONNECTED
from ._tls_state import CLOSED, CONNECTING, HANDSHAKING, OPEN, SHUTDOWN, TLSStateMachine
from ._tls_transport import TLSTransport

# One SSL write: four full records.  A caller's larger buffer is taken in
# pieces of this size, so the ciphertext backlog stays bounded.
WRITE_CHUNK = 65536
# send() takes no new plaintext while this much ciphertext waits for the kernel.
BACKLOG_LIMIT = 65536

_IN = _events.IN
_OUT = _events.OUT
_BUFFERED = _events.BUFFERED

# Socket calls that are safe to pass through: none of them moves payload
# bytes, which must all go through TLS.
_PASS_THROUGH = frozenset(
    {
        "fileno",
        "getpeername",
        "getsockname",
        "getsockopt",
        "setsockopt",
        "connect_ex",
        "family",
        "type",
        "proto",
        "gettimeout",
        "getblocking",
    }
)


class TLSSocket(TLSStateMachine, TLSTransport):
    """The socket of a channel after ``start_tls()``: plaintext in, ciphertext out.

    ``recv``/``recv_into``/``send`` work like a non-blocking socket's
    (``BlockingIOError`` when no application data or no room is available,
    ``b""`` at end of stream); ``ssl_object`` is the ``ssl.SSLObject`` and
    ``getpeercert``, ``cipher``, ``version``, ``selected_alpn_protocol``,
    ``shared_ciphers``, ``compression``, ``get_channel_binding`` and
    ``server_hostname``/``server_side``/``context`` are forwarded to it.
    ``fileno``, ``getpeername``, ``getsockname``, ``getsockopt``,
    ``setsockopt`` and the address attributes are the plain socket's; other
    socket calls (``sendmsg``, ``makefile``, ...) would bypass TLS and are
    not offered.

    ``close_notify_received`` tells, once the stream ended, whether the peer
    closed it with a TLS close_notify (False: a bare TCP close, which an
    attacker can forge to truncate the data).
    """

    def __init__(
        self,
        channel: Any,
        raw: socket.socket,
        context: ssl.SSLContext,
        server_side: bool,
        server_hostname: Optional[str],
    ) -> None:
        TLSTransport.__init__(self, raw, context, server_side, server_hostname)
        TLSStateMachine.__init__(self, channel)
        self.close_notify_received = False
        # the plaintext of a write that met WANT_READ: OpenSSL wants exactly
        # these bytes again, so they are held here and retried
        self._retry: Optional[bytes] = None
        # decrypted or still-encrypted input in the BIOs that the fd will not
        # announce again: the loop delivers a read event without waiting
        self._buffered = False
        # the end of stream is reported or due (data came before it): every
        # later recv returns b""
        self._eof_next = False
        # the channel's own interest at the last evaluation
        self._app_mask = _IN | _OUT

    # -- information -----------------------------------------------------------
    def getpeercert(self, binary_form: bool = False) -> Any:
        return self.ssl_object.getpeercert(binary_form)

    def __getattr__(self, name: str) -> Any:
        # only called for names not set on the instance or class
        if name.startswith("_") or name in ("raw", "ssl_object"):
            raise AttributeError(name)
        if name in _PASS_THROUGH:
            return getattr(self.raw, name)
        if name in (
            "cipher",
            "version",
            "selected_alpn_protocol",
            "shared_ciphers",
            "compression",
            "get_channel_binding",
            "server_hostname",
            "server_side",
            "context",
            "session",
            "session_reused",
        ):
            return getattr(self.ssl_object, name)
        raise AttributeError("%s has no attribute %r (plain socket I/O would bypass TLS)" % (type(self).__name__, name))

    def __repr__(self) -> str:
        return "<TLSSocket %s fd=%s>" % (self._state.value, self.raw.fileno())

    # -- the handshake, the write retry, close_notify -------------------------------
    def _touch(self) -> None:
        channel = self._owner()
        poller = getattr(channel, "_af_poller", None)
        if poller is not None:
            poller.touch(channel)

    def _begin(self, channel: Any) -> None:
        self._enter(HANDSHAKING)
        self._handshake_step(channel)

    def _handshake_step(self, channel: Any) -> None:
        while True:
            try:
                self.ssl_object.do_handshake()
            except ssl.SSLWantReadError:
                if self._tell_eof():
                    continue
                if not self._flush() or self._raw_eof:
                    # the peer went away mid-handshake: a disconnect, not an error
                    channel.handle_close()
                else:
                    self._touch()
                return
            except ssl.SSLError as exc:
                # the alert OpenSSL wrote tells the peer why
                flushed = self._flush()
                if self._eof_told or isinstance(exc, ssl.SSLEOFError) or not flushed:
                    # (_eof_told: the error is about the EOF, however this
                    # Python words it: see _tell_eof)
                    channel.handle_close()
                    return
                raise
            break
        self._enter(OPEN)
        if not self._flush():
            channel.handle_close()
            return
        self._buffered = bool(self.incoming.pending or self.ssl_object.pending())
        self._touch()
        channel.handle_tls_established()

    def _retry_write(self) -> None:
        retry = self._retry
        if retry is None:
            return
        while True:
            try:
                self.ssl_object.write(retry)
            except ssl.SSLWantReadError:
                if self._tell_eof():
                    continue  # no input can come: OpenSSL is to end the wait itself
                return
            break
        self._retry = None
        self._flush()
        self._touch()

    def _send_close_notify(self) -> None:
        self._enter(SHUTDOWN)
        try:
            self.ssl_object.unwrap()
        except ssl.SSLWantReadError:
            pass  # ours is written; the peer's is not waited for
        except (ssl.SSLError, ValueError):
            pass  # the session is broken already: nothing to say

    # -- socket-style API ------------------------------------------------------------
    def recv(self, buffersize: int, flags: int = 0) -> bytes:
        """Up to *buffersize* bytes of plaintext; b"" at end of stream."""
        if flags:
            raise ValueError("flags are not supported on a TLS socket")
        if buffersize < 0:
            raise ValueError("negative buffersize in recv")
        state = self._state
        if state is not OPEN and state is not SHUTDOWN:
            if state is CLOSED:
                raise OSError(EBADF, "TLS socket is closed")
            # (not connected yet counts as handshaking: start_tls() called
            # from handle_connect() sees the stock handlers read and write)
            raise BlockingIOError("TLS handshake in progress")
        if not buffersize:
            return b""
        if self._eof_next:
            self._buffered = False
            return b""
        chunks, total, eof = self._read_records(buffersize)
        # reading may have produced handshake messages (a post-handshake
        # authentication, a key update, a renegotiation) that must go out
        flushed = self._flush()
        if self._retry is not None:
            self._retry_write()
        return self._deliver(chunks, total >= buffersize, eof, flushed)

    def _read_records(self, buffersize: int) -> Tuple[List[bytes], int, bool]:
        """Decrypt up to *buffersize* bytes: the pieces, their total size,
        and whether the stream ended after them."""
        sslobj = self.ssl_object
        chunks: List[bytes] = []
        total = 0
        pulled = False
        # Several records per call (SSL_read returns one at a time), but at
        # most one read from the socket, as a plain recv.
        while total < buffersize:
            try:
                chunk = sslobj.read(buffersize - total)
            except ssl.SSLWantReadError:
                if self._raw_eof:
                    if self._tell_eof():
                        continue
                    return chunks, total, True
                if pulled or not self._pull():
                    break
                pulled = True
                continue
            except ssl.SSLZeroReturnError:
                chunk = b""
            except ssl.SSLEOFError:
                # TCP EOF without close_notify
                return chunks, total, True
            except ssl.SSLError:
                if not self._eof_told:
                    raise
                # the same EOF, as 3.9 words it without OP_IGNORE_UNEXPECTED_EOF
                return chunks, total, True
            if not chunk:
                # after _tell_eof, b"" is OpenSSL taking the bare EOF for
                # close_notify (OP_IGNORE_UNEXPECTED_EOF)
                self.close_notify_received = not self._eof_told
                return chunks, total, True
            chunks.append(chunk)
            total += len(chunk)
        return chunks, total, False

    def _deliver(self, chunks: List[bytes], filled: bool, eof: bool, flushed: bool) -> bytes:
        """What ``recv`` returns or raises once the records are read; *filled*:
        the caller's buffer size was reached, so more may be decrypted already."""
        if chunks:
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            if eof or not flushed:
                # the data goes first; the next recv reports the end (or
                # the lost connection) as end of stream
                self._eof_next = True
                self._buffered = True
            else:
                self._buffered = filled and bool(self.incoming.pending or self.ssl_object.pending())
            if self._buffered:
                self._touch()
            return data
        self._buffered = False
        if eof:
            self._eof_next = True
            return b""
        if not flushed or self._lost:
            raise ConnectionResetError(ECONNRESET, "connection lost under TLS")
        raise BlockingIOError("no TLS application data available yet")

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        view = memoryview(buffer).cast("B")
        size = nbytes or len(view)
        data = self.recv(min(size, len(view)), flags)
        view[: len(data)] = data
        return len(data)

    def send(self, data: Any, flags: int = 0) -> int:
        """Encrypt up to 64 KiB of *data*; returns how many plaintext bytes were taken."""
        if flags:
            raise ValueError("flags are not supported on a TLS socket")
        state = self._state
        if state is not OPEN:
            if state is CLOSED:
                raise OSError(EBADF, "TLS socket is closed")
            if state is SHUTDOWN:
                raise BrokenPipeError(EPIPE, "TLS close_notify already sent")
            raise BlockingIOError("TLS handshake in progress")
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        if not self._flush():
            raise ConnectionResetError(ECONNRESET, "connection lost under TLS")
        if self._retry is not None or len(self._backlog) >= BACKLOG_LIMIT:
            self._touch()
            raise BlockingIOError("TLS output backlog full")
        chunk = view[:WRITE_CHUNK]
        size = len(chunk)
        if not size:
            return 0
        try:
            self.ssl_object.write(chunk)
        except ssl.SSLWantReadError:
            # a renegotiation needs the peer first; OpenSSL must see these
            # very bytes again, so they are kept (and count as sent)
            self._retry = bytes(chunk)
        if not self._flush():
            raise ConnectionResetError(ECONNRESET, "connection lost under TLS")
        if self._backlog or self._retry is not None:
            self._touch()
        return size

    def close(self) -> None:
        """Best effort, never blocking: close_notify and the backlog get one send, then the socket closes."""
        if self._state is CLOSED:
            return
        try:
            if self._state is OPEN and not self._lost:
                self._send_close_notify()
            if not self._lost:
                self._flush()
        except OSError:
            pass
        finally:
            self._enter(CLOSED)
            self._backlog = bytearray()
            self._retry = None
            self.raw.close()

    # -- what the dispatcher calls -----------------------------------------------------
    def channel_recv(self, channel: Any, buffer_size: int) -> bytes:
        """``dispatcher.recv`` under TLS: b"" both when nothing is decrypted yet
        and at end of stream (``handle_close`` has then been called)."""
        try:
            data = self.recv(buffer_size)
        except BlockingIOError:
            return b""
        except ssl.SSLError:
            raise
        except OSError as why:
            if why.errno in _DISCONNECTED:
                channel.handle_close()
                return b""
            raise
        if not data:
            # the peer's end of stream (async_chat may flush first: drain_on_eof)
            channel._af_peer_eof()
        return data

    def channel_send(self, channel: Any, data: Any) -> int:
        """``dispatcher.send`` under TLS: 0 when nothing could be taken."""
        try:
            return self.send(data)
        except BlockingIOError:
            return 0
        except ssl.SSLError:
            raise
        except OSError as why:
            if why.errno in _DISCONNECTED:
                channel.handle_close()
                return 0
            raise

    def _connect_event(self, channel: Any) -> None:
        if not channel.connected and channel.connecting:
            channel.handle_connect_event()
        if channel.connected and self._state is CONNECTING:
            self._begin(channel)

    def read_event(self, channel: Any) -> None:
        state = self._state
        if state is OPEN or state is SHUTDOWN:
            self._buffered = False
            if self._app_mask & _IN:
                channel.handle_read()
            else:
                # only the write retry asked for input: no delivery while
                # the channel does not want to read
                if not self._pull():
                    channel.handle_close()
                    return
                if self._retry is not None:
                    self._retry_write()
                self._buffered = bool(self.incoming.pending)
        elif state is HANDSHAKING:
            self._adopt()
            if not self._pull():
                channel.handle_close()
                return
            self._handshake_step(channel)
        elif state is CONNECTING:
            self._connect_event(channel)

    def write_event(self, channel: Any) -> None:
        state = self._state
        if state is OPEN or state is SHUTDOWN:
            if not self._flush():
                channel.handle_close()
                return
            if self._retry is None and self._app_mask & _OUT and len(self._backlog) < BACKLOG_LIMIT:
                channel.handle_write()
        elif state is HANDSHAKING:
            if not self._flush():
                channel.handle_close()
        elif state is CONNECTING:
            self._connect_event(channel)

    def interest(self, channel: Any, app_mask: int) -> int:
        """What the socket must wait for, given the channel's own *app_mask*."""
        self._app_mask = app_mask
        state = self._state
        if state is OPEN or state is SHUTDOWN:
            mask = app_mask
            if self._backlog:
                mask |= _OUT
            if self._retry is not None:
                mask |= _IN
                if not self._backlog:
                    # nothing can be written before the peer answers
                    mask &= ~_OUT
            if self._buffered and app_mask & _IN:
                mask |= _BUFFERED
            return mask
        if state is HANDSHAKING:
            # the handshake decides, whatever the channel's predicates say
            mask = _IN
            if self._backlog:
                mask |= _OUT
            if self._adopt_from is not None:
                mask |= _BUFFERED
            return mask
        if state is CONNECTING:
            if channel.connected:
                # connected after start_tls() (called from handle_connect):
                # the next write event starts the handshake
                return _IN | _OUT
            return app_mask
        return 0

    def ready_to_close(self, channel: Any) -> bool:
        """``close_when_done`` reached its sentinel: True once close_notify is
        out, False while it (or earlier ciphertext) waits for the kernel."""
        state = self._state
        if (state is not OPEN and state is not SHUTDOWN) or self._lost:
            return True
        if self._retry is not None:
            return False
        if state is OPEN:
            self._send_close_notify()
        if not self._flush():
            return True
        return not self._backlog
