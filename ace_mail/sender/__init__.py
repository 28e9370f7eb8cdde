# -*- test-case-name: tests.test_sender -*-
"""
The outgoing-mail engine: an ESMTP client that relays messages over routes
of upstream servers, with connection reuse, load spreading and failover.
"""

from ._encoder import DataEncoder
from ._sender import Sender
from ._settings import Route, Server, ServerStatus, Timeouts

__all__ = ["DataEncoder", "Route", "Sender", "Server", "ServerStatus", "Timeouts"]
