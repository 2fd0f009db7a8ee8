"""The TLS methods every dispatcher has: ``start_tls`` and its two hooks.

Kept apart from ``_tls`` so that importing asyncore does not import ``ssl``:
the TLS layer loads on the first ``start_tls()`` call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional


class TLSChannel:
    """Mixin of ``dispatcher``: STARTTLS on a channel (docs/hardening.md)."""

    socket: Any

    if TYPE_CHECKING:
        # provided by the dispatcher
        def log_info(self, message: Any, type: str = "info") -> None: ...
        def handle_close(self) -> None: ...

    def start_tls(
        self,
        context: Any,
        *,
        server_side: bool,
        server_hostname: Optional[str] = None,
        handshake_timeout: Optional[float] = 60.0,
    ) -> None:
        """Run TLS with *context* (an ``ssl.SSLContext``) on this channel.

        Callable on a connected channel (right after accept, or later for a
        STARTTLS upgrade) or on a client between ``connect()`` and the
        connection being made; the handshake runs inside the loop, and
        ``handle_tls_established()`` is called once it succeeded.  A failed
        handshake raises in the loop, so ``handle_error()`` reports it and
        closes this channel; a peer that disconnects mid-handshake gets
        ``handle_close()``.

        The cut is exact in both directions: output queued before the call
        (``push``, ``dispatcher_with_send.send``) is sent in plaintext ahead
        of the first TLS byte; input received but not yet delivered (an
        async_chat's ``ac_in_buffer``, also the bytes after the frame whose
        callback makes this call) is the start of the TLS stream.  Afterwards
        ``self.socket`` is an ``asynframe._tls.TLSSocket`` (``getpeercert()``,
        ``cipher()``, ``version()``, ``ssl_object``).

        *handshake_timeout* (seconds, asyncio's default of 60; ``None``: no
        limit) bounds the handshake from its start: a peer that stalls it
        gets ``handle_tls_handshake_timeout()``.
        """
        from . import _tls  # ssl loads with the first TLS channel

        _tls.start_tls(self, context, server_side, server_hostname, handshake_timeout)

    def handle_tls_established(self) -> None:
        """The TLS handshake completed; output pushed meanwhile goes out now."""

    def handle_tls_handshake_timeout(self) -> None:
        """The TLS handshake did not finish in time; the default logs and closes."""
        self.log_info(
            "closing %r: TLS handshake not complete after %g s" % (self, self.socket.handshake_timeout), "error"
        )
        self.handle_close()
