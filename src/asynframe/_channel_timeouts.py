"""Per-channel timers of a dispatcher: idle and connect timeouts, accept backoff.

Each is one timer entry on the loop of the channel's map, armed only while
the feature is in use, so a channel that uses none of them costs nothing.

* The idle timer is re-armed lazily: a byte received or sent only stores the
  time (``_af_last_activity``); when the timer fires early it sleeps again
  for what is left.  So traffic never touches the timer heap.
* The connect timer runs from ``connect()`` until the connection is made.
* The accept backoff is how a listener survives running out of descriptors:
  the waiting connection stays in the kernel's backlog, so the listener stays
  readable; retrying at once would spin a core, and closing it (asyncore's
  ``handle_error``) would stop the server for good.  Accepting pauses for a
  few milliseconds, doubling up to a second, and resumes by itself.

The host class (``dispatcher``) provides ``_map``, ``_fileno``,
``connecting``/``connected``, ``log_info`` and ``handle_close``; the loop's
interest rules read ``_af_accept_paused``.
"""

from __future__ import annotations

import os
from errno import errorcode
from typing import TYPE_CHECKING, Any, Dict, Optional

from . import _poller, _timers
from ._events import touch
from ._timers import TimerHandle
from ._timers import monotonic as _monotonic

# the first pause after a failed accept(), and the cap it doubles up to
ACCEPT_BACKOFF_FIRST = 0.005
ACCEPT_BACKOFF_MAX = 1.0


def strerror(err: int) -> str:
    """``os.strerror``, with a fallback for codes the platform cannot name."""
    try:
        return os.strerror(err)
    except (ValueError, OverflowError, NameError):
        if err in errorcode:
            return errorcode[err]
        return "Unknown error %s" % err


def check_timeout(seconds: Any, what: str) -> Optional[float]:
    """*seconds* as a positive float, or None; anything else raises."""
    if seconds is None:
        return None
    value = _timers.check_delay(seconds, what)
    if value <= 0:
        raise ValueError("%s must be positive or None, got %r" % (what, seconds))
    return value


class ChannelTimers:
    """Mixin: idle and connect timeouts and the accept backoff of a dispatcher."""

    _map: Dict[Any, Any]
    _fileno: Any
    connecting: bool
    connected: bool

    _af_idle_timeout: Optional[float] = None
    _af_idle_timer: Optional[TimerHandle] = None
    _af_last_activity = 0.0
    _af_connect_timeout: Optional[float] = None
    _af_connect_timer: Optional[TimerHandle] = None
    _af_accept_backoff = 0.0
    _af_accept_paused = False
    _af_accept_timer: Optional[TimerHandle] = None

    if TYPE_CHECKING:
        # provided by the dispatcher (the mixin comes after it in the MRO)
        def log_info(self, message: Any, type: str = "info") -> None: ...
        def handle_close(self) -> None: ...
        def _af_refresh_generic_path(self) -> None: ...

    def _af_call_later(self, delay: float, callback: Any) -> TimerHandle:
        return _poller.call_later(self._map, delay, callback, ())

    # -- idle timeout ----------------------------------------------------------
    def set_idle_timeout(self, seconds: Optional[float]) -> None:
        """Call ``handle_idle_timeout()`` after *seconds* with no byte received or sent.

        The clock starts now and restarts at every byte the channel receives
        or sends (and when its connection is established); ``None`` turns it
        off (the default).  One timer per channel on the loop of its map,
        re-armed lazily from the last activity: no per-iteration cost.
        """
        seconds = check_timeout(seconds, "idle timeout")
        timer = self._af_idle_timer
        if timer is not None:
            timer.cancel()
            self._af_idle_timer = None
        self._af_idle_timeout = seconds
        self._af_refresh_generic_path()
        if seconds is not None:
            self._af_last_activity = _monotonic()
            self._af_idle_timer = self._af_call_later(seconds, self._af_idle_check)

    def get_idle_timeout(self) -> Optional[float]:
        """The idle timeout in seconds, or None."""
        return self._af_idle_timeout

    def handle_idle_timeout(self) -> None:
        """Nothing was received or sent for the idle timeout.

        The default logs it and closes this channel (``handle_close``).  An
        override that keeps the channel open gets called again after one
        more idle period.
        """
        self.log_info("closing %r: idle for %g s" % (self, self._af_idle_timeout or 0), "info")
        self.handle_close()

    def _af_idle_check(self) -> None:
        self._af_idle_timer = None
        timeout = self._af_idle_timeout
        if timeout is None:
            return
        due = self._af_last_activity + timeout
        now = _monotonic()
        if due > now:
            # activity since the timer was armed: sleep for what is left
            self._af_idle_timer = self._af_call_later(due - now, self._af_idle_check)
            return
        self.handle_idle_timeout()
        if (
            self._af_idle_timer is None
            and self._af_idle_timeout is not None
            and self._fileno is not None
            and self._map.get(self._fileno) is self
        ):
            # kept open by an override: check again one period from now
            self._af_idle_timer = self._af_call_later(self._af_idle_timeout, self._af_idle_check)

    # -- connect timeout -------------------------------------------------------
    def set_connect_timeout(self, seconds: Optional[float]) -> None:
        """Call ``handle_connect_timeout()`` if a ``connect()`` has not completed
        within *seconds*; ``None`` turns it off (the default).

        Applies to the connection attempt in progress, if any, counted from
        now, and to every later ``connect()``.
        """
        seconds = check_timeout(seconds, "connect timeout")
        timer = self._af_connect_timer
        if timer is not None:
            timer.cancel()
            self._af_connect_timer = None
        self._af_connect_timeout = seconds
        if seconds is not None and self.connecting and not self.connected:
            self._af_arm_connect_timer()

    def get_connect_timeout(self) -> Optional[float]:
        """The connect timeout in seconds, or None."""
        return self._af_connect_timeout

    def handle_connect_timeout(self) -> None:
        """``connect()`` did not complete within the connect timeout.

        The default logs it and closes this channel (``handle_close``).
        """
        self.log_info(
            "closing %r: connect not completed in %g s" % (self, self._af_connect_timeout or 0),
            "info",
        )
        self.handle_close()

    def _af_arm_connect_timer(self) -> None:
        timer = self._af_connect_timer
        if timer is not None:
            timer.cancel()
        assert self._af_connect_timeout is not None
        self._af_connect_timer = self._af_call_later(self._af_connect_timeout, self._af_connect_check)

    def _af_connect_check(self) -> None:
        self._af_connect_timer = None
        if self.connecting and not self.connected:
            self.handle_connect_timeout()

    def _af_connect_done(self) -> None:
        # the connection is made: the connect timer is moot, the idle clock starts
        if self._af_connect_timer is not None:
            self._af_connect_timer.cancel()
            self._af_connect_timer = None
        if self._af_idle_timeout is not None:
            self._af_last_activity = _monotonic()

    # -- accept backoff ----------------------------------------------------------
    def _af_pause_accepting(self, why: OSError) -> None:
        delay = self._af_accept_backoff
        if not delay:
            delay = ACCEPT_BACKOFF_FIRST
            # once per episode, not once per attempt
            # "error": asyncore's log_info drops "warning" by default
            self.log_info(
                "cannot accept (%s): pausing accept() for up to %g s at a time"
                % (strerror(why.errno or 0), ACCEPT_BACKOFF_MAX),
                "error",
            )
        else:
            delay = min(delay * 2, ACCEPT_BACKOFF_MAX)
        self._af_accept_backoff = delay
        self._af_accept_paused = True
        touch(self)
        if self._af_accept_timer is not None:
            self._af_accept_timer.cancel()
        self._af_accept_timer = self._af_call_later(delay, self._af_resume_accepting)

    def _af_resume_accepting(self) -> None:
        self._af_accept_timer = None
        self._af_accept_paused = False
        touch(self)

    def _af_accepted(self) -> None:
        # an accept() succeeded during a backoff episode: the episode is over
        self._af_accept_backoff = 0.0
        self.log_info("accepting connections again", "info")

    # -- teardown ----------------------------------------------------------------
    def _af_cancel_timers(self) -> None:
        for name in ("_af_idle_timer", "_af_connect_timer", "_af_accept_timer"):
            timer = getattr(self, name)
            if timer is not None:
                timer.cancel()
                setattr(self, name, None)
