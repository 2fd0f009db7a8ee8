"""TLS for asyncore dispatchers and async_chat channels (``dispatcher.start_tls``).

``start_tls`` checks its arguments and the channel, then puts a
``TLSSocket`` under the channel.  The layer is built in three parts:

* ``_tls_state``: the states (``TLSState``), the moves each allows and the
  one checked transition (``TLSStateMachine._enter``), with the handshake
  timer that runs only while HANDSHAKING;
* ``_tls_transport``: the memory BIOs and the plain socket the ciphertext
  goes through (``TLSTransport``);
* ``_tls_socket``: ``TLSSocket``, the plaintext socket the channel sees and
  the hooks the dispatcher and the loop call.

The names other modules and the documentation use (``asynframe._tls.TLSSocket``,
``asynframe._tls.TLSState``, ...) are re-exported here.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any, Optional

from ._timers import check_delay
from ._tls_socket import BACKLOG_LIMIT, WRITE_CHUNK, TLSSocket
from ._tls_state import DEFAULT_HANDSHAKE_TIMEOUT, TLSState
from ._tls_transport import RAW_READ

__all__ = [
    "BACKLOG_LIMIT",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "RAW_READ",
    "WRITE_CHUNK",
    "TLSSocket",
    "TLSState",
    "start_tls",
]


def start_tls(
    channel: Any,
    context: Any,
    server_side: Any,
    server_hostname: Any,
    handshake_timeout: Any = DEFAULT_HANDSHAKE_TIMEOUT,
) -> None:
    """``dispatcher.start_tls``: see its docstring."""
    handshake_timeout = _checked_handshake_timeout(handshake_timeout)
    _check_tls_arguments(context, server_side, server_hostname)
    raw = _checked_channel(channel)

    layer = TLSSocket(channel, raw, context, server_side, server_hostname)
    layer.handshake_timeout = handshake_timeout

    channel.socket = layer
    channel._af_tls = layer
    # the loop's compiled fast path reads and writes the plain socket itself
    channel._af_refresh_generic_path()

    # Output pushed before the upgrade goes out in plaintext, ahead of the
    # first TLS record (producers are drained to bytes now).
    queue = getattr(channel, "_af_queue", None)
    if queue is not None:
        while True:
            chunk = queue.next_chunk(WRITE_CHUNK)
            if chunk is None:
                break
            layer._backlog += chunk
            queue.consume(len(chunk))

    # Input the framing core holds but has not delivered is the start of the
    # TLS stream.
    scanner = getattr(channel, "_af_scanner", None)
    if scanner is not None:
        layer.adopt_input(scanner)

    if channel.connected:
        layer._begin(channel)
    # else the handshake starts when the connection is made
    layer._touch()


def _checked_handshake_timeout(handshake_timeout: Any) -> Optional[float]:
    if handshake_timeout is None:
        return None
    timeout: float = check_delay(handshake_timeout, "handshake_timeout")
    if timeout <= 0:
        raise ValueError("handshake_timeout must be positive, got %r" % (timeout,))
    return timeout


def _check_tls_arguments(context: Any, server_side: Any, server_hostname: Any) -> None:
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


def _checked_channel(channel: Any) -> socket.socket:
    """The channel's plain socket, once the channel is one TLS can start on."""
    if channel._af_tls is not None:
        raise ValueError("TLS was already started on %r" % (channel,))
    raw = channel.socket
    if type(raw) is not socket.socket and not (isinstance(raw, socket.socket) and not isinstance(raw, ssl.SSLSocket)):
        raise ValueError("start_tls() needs a plain socket, not %s" % type(raw).__name__)
    if raw.type != socket.SOCK_STREAM:
        raise ValueError("start_tls() needs a stream socket")
    if channel.accepting:
        raise ValueError("start_tls() on a listening socket: call it on the accepted channels")
    queue = getattr(channel, "_af_queue", None)
    if queue is not None and any(item is None for item in queue.snapshot()):
        raise ValueError("close_when_done() is pending: too late for start_tls()")
    return raw
