"""TLS for asyncore dispatchers and async_chat channels (``dispatcher.start_tls``).

The channel keeps its plain, non-blocking socket; an ``ssl.SSLObject`` over
two memory BIOs does the TLS work and this module moves ciphertext between
the BIOs and the socket.  Memory BIOs rather than ``ssl.SSLSocket`` because:

* bytes a STARTTLS server already read past the command (still in the
  framing core's buffer) can be handed to OpenSSL as the start of the TLS
  stream, instead of being lost or parsed as plaintext;
* plaintext queued before the upgrade is sent ahead of the first TLS record
  by putting it in the same ciphertext backlog;
* a write never meets ``SSL_ERROR_WANT_WRITE`` (the outgoing BIO grows), so
  OpenSSL's rule that a write must be retried with the same buffer only
  matters for ``SSL_ERROR_WANT_READ`` during a renegotiation.  CPython sets
  ``SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER`` (the buffer may move) but not
  ``SSL_MODE_ENABLE_PARTIAL_WRITE``, so the retry must still carry the same
  bytes: they are kept here and written again (``TLSSocket._retry``).

``self.socket`` of the channel becomes a ``TLSSocket``: its ``recv``/``send``
speak plaintext, socket-style (``BlockingIOError`` when there is nothing to
do), and it offers the TLS details (``ssl_object``, ``getpeercert()``,
``cipher()``, ``version()``, ...).  The dispatcher's ``recv``/``send`` and
event handlers call into it (``channel_recv``, ``read_event``, ...); the
loop asks it what the socket must wait for (``interest``), which is where
the handshake, the ciphertext backlog and decrypted-but-undelivered input
(``_poller.BUFFERED``) are taken into account.

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

import enum
import socket
import ssl
import weakref
from errno import EBADF, ECONNRESET, EPIPE
from typing import Any, Optional

from . import _events, _poller
from ._events import DISCONNECTED as _DISCONNECTED
from ._timers import check_delay

# One SSL write: four full records.  A caller's larger buffer is taken in
# pieces of this size, so the ciphertext backlog stays bounded.
WRITE_CHUNK = 65536
# send() takes no new plaintext while this much ciphertext waits for the kernel.
BACKLOG_LIMIT = 65536
# Ciphertext read from the socket per read event.
RAW_READ = 65536 + 4096



class TLSState(enum.Enum):
    """Where a ``TLSSocket`` is; ``TLSSocket._enter`` is the only way to move."""

    CONNECTING = "connecting"    # start_tls() came before the TCP connection was made
    HANDSHAKING = "handshaking"  # the handshake timer runs while here
    OPEN = "open"                # application data both ways
    SHUTDOWN = "shutdown"        # our close_notify is written: data still comes in, none goes out
    CLOSED = "closed"            # the plain socket is closed


CONNECTING, HANDSHAKING, OPEN, SHUTDOWN, CLOSED = TLSState
_NEXT = {
    CONNECTING: frozenset({HANDSHAKING, CLOSED}),
    HANDSHAKING: frozenset({OPEN, CLOSED}),
    OPEN: frozenset({SHUTDOWN, CLOSED}),
    SHUTDOWN: frozenset({CLOSED}),
    CLOSED: frozenset(),
}

#: seconds a handshake may take before handle_tls_handshake_timeout() (asyncio's default)
DEFAULT_HANDSHAKE_TIMEOUT = 60.0

_IN = _events.IN
_OUT = _events.OUT
_BUFFERED = _events.BUFFERED

# Socket calls that are safe to pass through: none of them moves payload
# bytes, which must all go through TLS.
_PASS_THROUGH = frozenset({
    "fileno", "getpeername", "getsockname", "getsockopt", "setsockopt", "connect_ex",
    "family", "type", "proto", "gettimeout", "getblocking",
})


class TLSSocket:
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

    def __init__(self, channel: Any, raw: socket.socket, context: ssl.SSLContext,
                 server_side: bool, server_hostname: Optional[str]) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.ssl_object: ssl.SSLObject = context.wrap_bio(
            self.incoming, self.outgoing, server_side=server_side, server_hostname=server_hostname
        )
        self.raw = raw
        self.close_notify_received = False
        self._owner = weakref.ref(channel)
        self._state = CONNECTING
        # ciphertext (and plaintext queued before the upgrade) not yet sent
        self._backlog = bytearray()
        # the plaintext of a write that met WANT_READ: OpenSSL wants exactly
        # these bytes again, so they are held here and retried
        self._retry: Optional[bytes] = None
        # decrypted or still-encrypted input in the BIOs that the fd will not
        # announce again: the loop delivers a read event without waiting
        self._buffered = False
        # the socket's EOF, and whether OpenSSL was told it (_tell_eof)
        self._raw_eof = False
        self._eof_told = False
        self._eof_next = False
        self._lost = False
        self._established = False
        # started with the handshake, cancelled when it ends (either way)
        self.handshake_timeout: Optional[float] = None
        self._handshake_timer: Any = None
        # a framing core whose unscanned bytes become TLS input (STARTTLS
        # from inside a callback: taken when the scan has stopped)
        self._adopt_from: Any = None
        # the channel's own interest at the last evaluation
        self._app_mask = _IN | _OUT

    # -- information -----------------------------------------------------------
    @property
    def handshake_complete(self) -> bool:
        """True once the handshake succeeded (``handle_tls_established`` was called)."""
        return self._established

    def getpeercert(self, binary_form: bool = False) -> Any:
        return self.ssl_object.getpeercert(binary_form)

    def __getattr__(self, name: str) -> Any:
        # only called for names not set on the instance or class
        if name.startswith("_") or name in ("raw", "ssl_object"):
            raise AttributeError(name)
        if name in _PASS_THROUGH:
            return getattr(self.raw, name)
        if name in ("cipher", "version", "selected_alpn_protocol", "shared_ciphers",
                    "compression", "get_channel_binding", "server_hostname", "server_side",
                    "context", "session", "session_reused"):
            return getattr(self.ssl_object, name)
        raise AttributeError(
            "%s has no attribute %r (plain socket I/O would bypass TLS)" % (type(self).__name__, name)
        )

    @property
    def state(self) -> TLSState:
        """The ``TLSState`` this socket is in."""
        return self._state

    def __repr__(self) -> str:
        return "<TLSSocket %s fd=%s>" % (self._state.value, self.raw.fileno())

    # -- the one place the state changes -------------------------------------------
    def _enter(self, state: TLSState) -> None:
        """Move to *state*: a move ``_NEXT`` does not allow is a bug (RuntimeError).

        What belongs to a state starts and ends here: the handshake timer
        runs exactly while HANDSHAKING, and OPEN marks the handshake done.
        """
        current = self._state
        if state not in _NEXT[current]:
            raise RuntimeError("TLS state %s cannot go to %s" % (current.value, state.value))
        if current is HANDSHAKING:
            self._cancel_handshake_timer()
        self._state = state
        if state is HANDSHAKING:
            channel = self._owner()
            if self.handshake_timeout is not None and channel is not None:
                self._handshake_timer = _poller.call_later(
                    channel._map, self.handshake_timeout, self._handshake_expired, ())
        elif state is OPEN:
            self._established = True

    # -- plumbing ----------------------------------------------------------------
    def _touch(self) -> None:
        channel = self._owner()
        poller = getattr(channel, "_af_poller", None)
        if poller is not None:
            poller.touch(channel)

    def _flush(self) -> bool:
        """One non-blocking send of the backlog; False once the connection is lost."""
        out = self.outgoing
        if out.pending:
            self._backlog += out.read()
        buf = self._backlog
        if not buf:
            return not self._lost
        if self._lost:
            return False
        try:
            sent = self.raw.send(buf)
        except OSError as why:
            return self._socket_error(why)
        del buf[:sent]
        return True

    def _pull(self) -> bool:
        """One non-blocking read of ciphertext into the BIO; False once the connection is lost."""
        if self._raw_eof or self._lost:
            return not self._lost
        try:
            data = self.raw.recv(RAW_READ)
        except OSError as why:
            return self._socket_error(why)
        if data:
            self.incoming.write(data)
        else:
            # OpenSSL is told later, by _tell_eof (see there why)
            self._raw_eof = True
        return True

    def _socket_error(self, why: OSError) -> bool:
        """What a failed ``send``/``recv`` on the plain socket means for
        ``_flush``/``_pull``: True for try again later, False once the
        connection is lost; any other error propagates."""
        if isinstance(why, (BlockingIOError, InterruptedError)):
            return True
        if why.errno in _DISCONNECTED:
            self._lost = True
            return False
        raise why

    def _tell_eof(self) -> bool:
        """OpenSSL met WANT_READ: hand it the transport's EOF if that is all
        that is left; True when it was handed now (the call is to be repeated
        once, for OpenSSL's own verdict and alert).

        The EOF waits until OpenSSL asks for more because only then is it
        known that the peer sent no close_notify (OpenSSL would have reported
        it instead of WANT_READ).  After the EOF, OpenSSL itself cannot be
        trusted to tell a truncation: with ``OP_IGNORE_UNEXPECTED_EOF`` (CPython
        3.9 sets it on every new context) a bare TCP close reads as
        close_notify (``b""``, ``SSLZeroReturnError``), and 3.9 without it
        raises a plain ``SSLError`` (UNEXPECTED_EOF_WHILE_READING) where
        3.10+ raise ``SSLEOFError``.  ``_eof_told`` therefore means: the
        stream ended without close_notify, whatever OpenSSL says next."""
        if not self._raw_eof or self._eof_told:
            return False
        self._eof_told = True
        self.incoming.write_eof()
        return True

    def _adopt(self) -> None:
        scanner = self._adopt_from
        if scanner is None:
            return
        try:
            held = scanner.pending
            scanner.pending = b""
        except RuntimeError:
            return  # still scanning: next time
        self._adopt_from = None
        if held:
            self.incoming.write(held)

    def _begin(self, channel: Any) -> None:
        self._enter(HANDSHAKING)
        self._handshake_step(channel)

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        channel = self._owner()
        if self._state is HANDSHAKING and channel is not None and channel.socket is self:
            channel.handle_tls_handshake_timeout()

    def _cancel_handshake_timer(self) -> None:
        timer = self._handshake_timer
        if timer is not None:
            self._handshake_timer = None
            timer.cancel()

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
        sslobj = self.ssl_object
        chunks = []
        total = 0
        pulled = eof = False
        # Several records per call (SSL_read returns one at a time), but at
        # most one read from the socket, as a plain recv.
        while total < buffersize:
            try:
                chunk = sslobj.read(buffersize - total)
            except ssl.SSLWantReadError:
                if self._raw_eof:
                    if self._tell_eof():
                        continue
                    eof = True
                    break
                if pulled:
                    break
                pulled = True
                if not self._pull():
                    break
                continue
            except ssl.SSLZeroReturnError:
                chunk = b""
            except ssl.SSLEOFError:
                # TCP EOF without close_notify
                eof = True
                break
            except ssl.SSLError:
                if not self._eof_told:
                    raise
                # the same EOF, as 3.9 words it without OP_IGNORE_UNEXPECTED_EOF
                eof = True
                break
            if not chunk:
                # after _tell_eof, b"" is OpenSSL taking the bare EOF for
                # close_notify (OP_IGNORE_UNEXPECTED_EOF)
                self.close_notify_received = not self._eof_told
                eof = True
                break
            chunks.append(chunk)
            total += len(chunk)
        # reading may have produced handshake messages (a post-handshake
        # authentication, a key update, a renegotiation) that must go out
        flushed = self._flush()
        if self._retry is not None:
            self._retry_write()
        if chunks:
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            if eof or not flushed:
                self._eof_next = True
                self._buffered = True
            else:
                self._buffered = total >= buffersize and bool(self.incoming.pending or sslobj.pending())
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
        view[:len(data)] = data
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


def start_tls(channel: Any, context: Any, server_side: Any, server_hostname: Any,
              handshake_timeout: Any = DEFAULT_HANDSHAKE_TIMEOUT) -> None:
    """``dispatcher.start_tls``: see its docstring."""
    if handshake_timeout is not None:
        handshake_timeout = check_delay(handshake_timeout, "handshake_timeout")
        if handshake_timeout <= 0:
            raise ValueError("handshake_timeout must be positive, got %r" % (handshake_timeout,))
    if not isinstance(context, ssl.SSLContext):
        raise TypeError("context must be an ssl.SSLContext, not %s" % type(context).__name__)
    if not isinstance(server_side, bool):
        raise TypeError("server_side must be True or False, not %r" % (server_side,))
    if server_hostname is not None and not isinstance(server_hostname, str):
        raise TypeError("server_hostname must be a str or None, not %s" % type(server_hostname).__name__)
    if server_side and server_hostname is not None:
        raise ValueError("server_hostname is for the client side only")
    if not server_side and context.check_hostname and not server_hostname:
        raise ValueError("this context checks the host name: pass server_hostname")
    if channel._af_tls is not None:
        raise ValueError("TLS was already started on %r" % (channel,))
    raw = channel.socket
    if type(raw) is not socket.socket and not (
        isinstance(raw, socket.socket) and not isinstance(raw, ssl.SSLSocket)
    ):
        raise ValueError("start_tls() needs a plain socket, not %s" % type(raw).__name__)
    if raw.type != socket.SOCK_STREAM:
        raise ValueError("start_tls() needs a stream socket")
    if channel.accepting:
        raise ValueError("start_tls() on a listening socket: call it on the accepted channels")
    queue = getattr(channel, "_af_queue", None)
    if queue is not None and any(item is None for item in queue.snapshot()):
        raise ValueError("close_when_done() is pending: too late for start_tls()")

    layer = TLSSocket(channel, raw, context, server_side, server_hostname)
    layer.handshake_timeout = handshake_timeout

    channel.socket = layer
    channel._af_tls = layer
    # the loop's compiled fast path reads and writes the plain socket itself
    channel._af_refresh_generic_path()

    # Output pushed before the upgrade goes out in plaintext, ahead of the
    # first TLS record (producers are drained to bytes now).
    if queue is not None:
        while True:
            chunk = queue.next_chunk(WRITE_CHUNK)
            if chunk is None:
                break
            layer._backlog += chunk
            queue.consume(len(chunk))

    # Input the framing core holds but has not delivered is the start of the
    # TLS stream.  Inside a scanner callback it cannot be taken yet: the scan
    # is stopped after the callback and the rest is taken then.
    scanner = getattr(channel, "_af_scanner", None)
    if scanner is not None:
        try:
            held = scanner.pending
            scanner.pending = b""
        except RuntimeError:
            scanner.stop()
            layer._adopt_from = scanner
        else:
            if held:
                layer.incoming.write(held)

    if channel.connected:
        layer._begin(channel)
    # else the handshake starts when the connection is made
    layer._touch()
