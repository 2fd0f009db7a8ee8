"""Line echo server on Twisted's ``LineReceiver`` with the default reactor."""

from __future__ import annotations

import _lifecycle

_lifecycle.setup()
try:
    import twisted
    from twisted.internet import protocol, reactor
    from twisted.protocols.basic import LineReceiver
except ImportError:
    _lifecycle.skip("twisted not installed (pip install twisted)")


class Echo(LineReceiver):
    delimiter = b"\r\n"
    MAX_LENGTH = 1 << 20  # the default 16 KiB would reject the large-message lines

    def lineReceived(self, line):
        self.sendLine(line)


class EchoFactory(protocol.Factory):
    protocol = Echo


port = reactor.listenTCP(0, EchoFactory(), backlog=_lifecycle.BACKLOG, interface=_lifecycle.HOST)
_lifecycle.announce(port.getHost().port, impl="twisted", version=twisted.__version__, reactor=type(reactor).__name__)
reactor.run()
