"""The ciphertext side of a channel's TLS layer: memory BIOs and the plain socket.

The channel keeps its plain, non-blocking socket; an ``ssl.SSLObject`` over
two memory BIOs does the TLS work and ``TLSTransport`` moves ciphertext between
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
  bytes: ``TLSSocket`` keeps them and writes them again (``_retry``).

``TLSTransport`` knows nothing of states or channels: it moves bytes
between the BIOs and the socket and records how the socket's end came
(``_raw_eof``, ``_eof_told``, ``_lost``).  ``TLSSocket`` (``_tls_socket``)
builds the socket semantics on it.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any, Optional

from ._events import DISCONNECTED as _DISCONNECTED

# Ciphertext read from the socket per read event.
RAW_READ = 65536 + 4096


class TLSTransport:
    """An ``ssl.SSLObject`` over two memory BIOs, and the plain socket their ciphertext goes through."""

    def __init__(
        self, raw: socket.socket, context: ssl.SSLContext, server_side: bool, server_hostname: Optional[str]
    ) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.ssl_object: ssl.SSLObject = context.wrap_bio(
            self.incoming, self.outgoing, server_side=server_side, server_hostname=server_hostname
        )
        self.raw = raw
        # ciphertext (and plaintext queued before the upgrade) not yet sent
        self._backlog = bytearray()
        # the socket's EOF, and whether OpenSSL was told it (_tell_eof)
        self._raw_eof = False
        self._eof_told = False
        self._lost = False
        # a framing core whose unscanned bytes become TLS input (STARTTLS
        # from inside a callback: taken when the scan has stopped)
        self._adopt_from: Any = None

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

    def adopt_input(self, scanner: Any) -> None:
        """Take the input *scanner* holds but has not delivered as the start of
        the TLS stream.  Inside a scanner callback it cannot be taken yet: the
        scan is stopped, and ``_adopt`` takes the rest once it has."""
        self._adopt_from = scanner
        self._adopt()
        if self._adopt_from is not None:
            scanner.stop()
