"""Write-buffer flow control for channels with a push queue (opt-in).

asyncore/asynchat queue whatever is pushed, so a peer that sends requests
and never reads the replies grows the server's memory without bound.  A
channel given water marks with ``set_write_buffer_limits`` stops reading from
its peer while more than *high* bytes wait to be sent: the kernel's receive
buffer fills, TCP's window closes, and the peer is held back by its own
``send``.  Once the queue drains to *low* bytes or fewer, reading resumes.
``pause_writing``/``resume_writing`` are called at those two crossings (once
each per crossing) so that a producer feeding the channel from elsewhere
can hold back too.  Frames already received when the pause begins are not
delivered either (an async_chat scanning a read stops after the current
frame): a peer that pipelines many cheap requests for large replies gets
replies for about *high* bytes, not for everything it sent in one packet.
Names and defaults follow asyncio's transports, except that a channel
starts without limits, as asyncore did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Tuple


def _check_mark(name: str, value: Any) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("%s must be an int or None, not %s" % (name, type(value).__name__))
    if value < 0:
        raise ValueError("%s must be >= 0, not %d" % (name, value))
    return value


class WriteFlowControl:
    """Mixin for a dispatcher whose output goes through ``self._af_queue``.

    The channel calls ``_af_flow()`` after anything that changes the queued
    byte count, when ``_af_limited`` is set; without limits nothing here runs.
    """

    # the channel's PushQueue and MapPoller (set by the dispatcher classes)
    _af_queue: Any = None
    _af_poller: Any = None
    # True while limits are set (or a pause is still to be lifted)
    _af_limited = False
    _af_high = -1
    _af_low = 0
    # True between pause_writing() and resume_writing(): reading is off
    _af_writing_paused = False
    _af_generic_path: bool

    if TYPE_CHECKING:
        # provided by the dispatcher classes (the mixin comes first in the MRO)
        def _af_refresh_generic_path(self) -> None: ...

    def set_write_buffer_limits(self, high: Optional[int] = None, low: Optional[int] = None) -> None:
        """Set the water marks of the write buffer, in bytes.

        Above *high* queued bytes the channel stops reading from its peer and
        ``pause_writing()`` is called; at *low* or below, reading resumes and
        ``resume_writing()`` is called.  Give one mark and the other follows
        asyncio's rule (``low = high // 4``, ``high = 4 * low``).  With no
        argument the limits are removed: stdlib behaviour, the default.
        Raises TypeError for a non-int mark, ValueError for a negative one
        or *low* above *high*.
        """
        high = _check_mark("high", high)
        low = _check_mark("low", low)
        if high is None and low is None:
            self._af_high = -1
            self._af_low = 0
        else:
            if high is None:
                assert low is not None
                high = 4 * low
            elif low is None:
                low = high // 4
            if low > high:
                raise ValueError("low (%d) must not be above high (%d)" % (low, high))
            self._af_high = high
            self._af_low = low
            self._af_limited = True
        # the compiled loop's shortcut for stock channels skips the handlers
        # that keep these marks: a limited channel takes the generic path
        self._af_refresh_generic_path()
        self._af_flow()

    def get_write_buffer_limits(self) -> Optional[Tuple[int, int]]:
        """``(low, high)``, or None when no limits are set."""
        if self._af_high < 0:
            return None
        return (self._af_low, self._af_high)

    def get_write_buffer_size(self) -> int:
        """Bytes queued and not yet sent.

        Pushed bytes, the output producers have already given (a producer
        counts only what its ``more()`` returned), and the unsent part of
        files queued with ``push_file`` (not in memory, but owed to the peer).
        """
        queue = self._af_queue
        return 0 if queue is None else int(queue.buffered)

    @property
    def writing_paused(self) -> bool:
        """True above the high mark, until the buffer drains to the low mark."""
        return self._af_writing_paused

    def pause_writing(self) -> None:
        """Called once when the write buffer goes above the high mark.

        Reading from the peer is already off.  Override to stop a producer
        that pushes from outside the channel's own handlers.
        """

    def resume_writing(self) -> None:
        """Called once when the write buffer drains to the low mark (reading is back on)."""

    def readable(self) -> bool:
        "predicate for inclusion in the readable for select()"
        return not self._af_writing_paused

    def _af_flow(self) -> None:
        # the state changes before the hook runs: a hook that pushes or
        # drains sees (and may cause) the next crossing, each reported once
        size = self.get_write_buffer_size()
        if self._af_writing_paused:
            if self._af_high < 0 or size <= self._af_low:
                self._af_writing_paused = False
                self._af_limited = self._af_high >= 0
                self._af_touch()
                self._af_resume_delivery()
                self.resume_writing()
        elif self._af_high < 0:
            self._af_limited = False
        elif size > self._af_high:
            self._af_writing_paused = True
            self._af_touch()
            self._af_stop_delivery()
            self.pause_writing()

    def _af_stop_delivery(self) -> None:
        """Paused: input already received is not delivered either (async_chat)."""

    def _af_resume_delivery(self) -> None:
        """Resumed: deliver what was kept back (async_chat)."""

    def _af_touch(self) -> None:
        # readiness interest changed: the loop's persistent registration
        # must drop (or regain) read interest
        poller = self._af_poller
        if poller is not None:
            poller.touch(self)
