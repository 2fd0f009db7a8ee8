"""The TLS state machine of a channel: its states, the moves between them, the handshake timer.

A ``TLSSocket`` (``_tls_socket``) is always in one ``TLSState``; the table
``_NEXT`` lists the moves each state allows and ``TLSStateMachine._enter`` is
the only code that changes the state.  A move the table does not list is a
bug in the caller, so ``_enter`` raises instead of guessing.  What belongs to
a state is started and stopped inside ``_enter`` too, so it cannot outlive
the state: the handshake timer runs exactly while HANDSHAKING.
"""

from __future__ import annotations

import enum
import weakref
from typing import Any, Optional

from . import _poller


class TLSState(enum.Enum):
    """Where a ``TLSSocket`` is; ``TLSStateMachine._enter`` is the only way to move."""

    CONNECTING = "connecting"  # start_tls() came before the TCP connection was made
    HANDSHAKING = "handshaking"  # the handshake timer runs while here
    OPEN = "open"  # application data both ways
    SHUTDOWN = "shutdown"  # our close_notify is written: data still comes in, none goes out
    CLOSED = "closed"  # the plain socket is closed


CONNECTING, HANDSHAKING, OPEN, SHUTDOWN, CLOSED = TLSState
# every state but CLOSED can go to CLOSED (a close or a lost connection can
# come at any time); CLOSED is final
_NEXT = {
    CONNECTING: frozenset({HANDSHAKING, CLOSED}),
    HANDSHAKING: frozenset({OPEN, CLOSED}),
    OPEN: frozenset({SHUTDOWN, CLOSED}),
    SHUTDOWN: frozenset({CLOSED}),
    CLOSED: frozenset(),
}

#: seconds a handshake may take before handle_tls_handshake_timeout() (asyncio's default)
DEFAULT_HANDSHAKE_TIMEOUT = 60.0


class TLSStateMachine:
    """The state of one channel's TLS layer and what is tied to a state.

    ``TLSSocket`` builds on this; the channel is held by a weak reference
    (the channel holds the socket, the socket must not keep it alive).
    """

    def __init__(self, channel: Any) -> None:
        self._owner = weakref.ref(channel)
        self._state = CONNECTING
        self._established = False
        # started with the handshake, cancelled when it ends (either way)
        self.handshake_timeout: Optional[float] = None
        self._handshake_timer: Any = None

    @property
    def state(self) -> TLSState:
        """The ``TLSState`` this socket is in."""
        return self._state

    @property
    def handshake_complete(self) -> bool:
        """True once the handshake succeeded (``handle_tls_established`` was called)."""
        return self._established

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
            self._start_handshake_timer()
        elif state is OPEN:
            self._established = True

    # -- the handshake timer -----------------------------------------------------------
    def _start_handshake_timer(self) -> None:
        channel = self._owner()
        if self.handshake_timeout is not None and channel is not None:
            self._handshake_timer = _poller.call_later(
                channel._map, self.handshake_timeout, self._handshake_expired, ()
            )

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        channel = self._owner()
        # the channel may have dropped this layer (a socket swap) since the timer started
        if self._state is HANDSHAKING and channel is not None and channel.socket is self:
            channel.handle_tls_handshake_timeout()

    def _cancel_handshake_timer(self) -> None:
        timer = self._handshake_timer
        if timer is not None:
            self._handshake_timer = None
            timer.cancel()
