# -*- test-case-name: tests.test_proxy_server -*-
"""
The listening side of the SMTP proxy: one factory and its connection limits.
"""

from __future__ import annotations

from collections import Counter
from typing import Mapping

from twisted.cred.checkers import ICredentialsChecker
from twisted.internet.interfaces import (
    IAddress,
    IOpenSSLServerConnectionCreator,
    IReactorTime,
)
from twisted.internet.protocol import ServerFactory

from ..store import Entrance, IContactStore
from . import _replies as replies
from ._policy import Refusal, RelayPolicy
from ._scratch import ScratchFiles
from ._server import ProxyProtocol
from ._settings import ProxySettings
from ._transaction import MessageQueue


class ProxyFactory(ServerFactory):
    """
    Builds a L{ProxyProtocol} for each client and keeps count of them.

    @ivar refusals: How often each kind of refusal was given, by its
        reason key (such as C{"relay-denied"} or C{"contact-expired"}).
    @ivar sessions: How many connections were admitted so far.
    @ivar scratch: The files that messages are received into.
    """

    protocol = ProxyProtocol
    noisy = False

    def __init__(
        self,
        reactor: IReactorTime,
        settings: ProxySettings,
        store: IContactStore,
        entrances: Mapping[str, Entrance],
        queue: MessageQueue,
        *,
        tlsContext: IOpenSSLServerConnectionCreator | None = None,
        checker: ICredentialsChecker | None = None,
        implicitTls: bool = False,
    ) -> None:
        """
        @param reactor: The clock for timeouts and the contacts' age.
        @param settings: The proxy's settings.
        @param store: Where contacts are looked up.
        @param entrances: Every entrance by name.
        @param queue: Where accepted copies are stored.
        @param tlsContext: The server side of TLS; STARTTLS is offered only
            with it.
        @param checker: Checks AUTH credentials; AUTH is offered only with
            it, and only over TLS.
        @param implicitTls: C{True} when the listening endpoint already
            speaks TLS, so that every session is secure from the start.
        @raise ValueError: When a trusted network is not an IP network.
        """
        self.clock = reactor
        self.settings = settings
        self.store = store
        self.entrances = entrances
        self.queue = queue
        self.tlsContext = tlsContext
        self.checker = checker
        self.implicitTls = implicitTls
        self.policy = RelayPolicy(settings.trustedNetworks)
        self.refusals: Counter[str] = Counter()
        self.sessions = 0
        self.scratch = ScratchFiles()
        self._open = 0
        self._perClient: Counter[str | None] = Counter()

    def buildProtocol(self, addr: IAddress | None) -> ProxyProtocol:
        return ProxyProtocol(self)

    def stopFactory(self) -> None:
        self.scratch.close()

    def admit(self, host: str | None) -> Refusal | None:
        """
        Count a new connection in, unless the limits are reached.

        @param host: The client's address, L{None} if it has none.
        @return: The 421 to close the connection with when a limit is
            reached (the connection is then not counted), else L{None}.
        """
        if self._open >= self.settings.maxConnections:
            return replies.tooManyConnections(self.settings.heloName)
        if self._perClient[host] >= self.settings.maxConnectionsPerClient:
            return replies.tooManyFromClient(self.settings.heloName, host)
        self._open += 1
        self._perClient[host] += 1
        self.sessions += 1
        return None

    @property
    def openConnections(self) -> int:
        """
        The connections admitted and not yet closed.
        """
        return self._open

    def release(self, host: str | None) -> None:
        """
        Count a connection that L{admit} let in out again.
        """
        self._open -= 1
        self._perClient[host] -= 1
        if not self._perClient[host]:
            del self._perClient[host]
