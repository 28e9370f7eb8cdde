# -*- test-case-name: tests.test_sender,tests.test_sender_spread -*-
"""
The outgoing sender: routes, spreading, failover and the outcome of a send.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence, cast

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.internet.ssl import CertificateOptions, optionsForClientTLS
from twisted.logger import Logger

from ..envelope import Envelope, MessageSource, Outcome, Reply
from ._pool import ServerPool
from ._protocol import SessionFailure, SMTPConnection
from ._session import openSession
from ._settings import Route, Server, ServerStatus, Timeouts
from ._transaction import TransactionResult, transact

_log = Logger()

DEFAULT_TIMEOUTS = Timeouts()


class _ConnectionFactory(Factory):
    """
    Build the L{SMTPConnection} for one connection attempt.
    """

    noisy = False

    def __init__(self, clock: Any, peer: str, greetingTimeout: float) -> None:
        self._clock = clock
        self._peer = peer
        self._greetingTimeout = greetingTimeout

    def buildProtocol(self, addr: Any) -> SMTPConnection:
        return SMTPConnection(self._clock, self._peer, self._greetingTimeout)


class Sender:
    """
    Deliver messages over routes of upstream SMTP servers, reusing
    connections, spreading the load over the healthy servers and failing
    over to the next server within one delivery.
    """

    def __init__(
        self,
        reactor: Any,
        *,
        heloName: str,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        connectionsPerServer: int = 10,
        setAside: float = 60.0,
        idleTimeout: float = 10.0,
        endpointFactory: Callable[[Server], IStreamClientEndpoint] | None = None,
        trustRoot: Any = None,
    ) -> None:
        """
        @param reactor: Provides L{IReactorTime} and, for the default
            endpoints, L{IReactorTCP}.
        @param heloName: The name to give in EHLO.
        @param timeouts: The timeouts for each connection and reply.
        @param connectionsPerServer: The most connections to one server.
        @param setAside: Seconds to try a failed server last.
        @param idleTimeout: Seconds an unused connection stays open.
        @param endpointFactory: Makes the endpoint to connect to a server;
            by default a L{HostnameEndpoint}, wrapped in TLS for
            C{"implicit"} servers.
        @param trustRoot: The certificate authorities that verified TLS
            trusts (see L{optionsForClientTLS}); C{None} for the platform's.
        """
        self._reactor = reactor
        self._heloName = heloName
        self._timeouts = timeouts
        self._limit = connectionsPerServer
        self._setAside = setAside
        self._idleTimeout = idleTimeout
        self._endpointFactory = endpointFactory or self._defaultEndpoint
        self._trustRoot = trustRoot
        self._pools: dict[Server, ServerPool] = {}
        self._turns: dict[str, int] = {}
        self._verifiedTLS: dict[Server, IOpenSSLClientConnectionCreator] = {}
        self._unverifiedTLS: CertificateOptions | None = None
        self._stopping = False

    def send(
        self, route: Route, envelope: Envelope, message: MessageSource, queueId: str
    ) -> Deferred[Outcome]:
        """
        Deliver one message over one route.

        @param route: The servers to use.
        @param envelope: The sender and the recipients.
        @param message: The message.
        @param queueId: The message's queue id, for the logs.
        @return: Fires with the L{Outcome}; it never fails for SMTP or
            network trouble.
        """
        return Deferred.fromCoroutine(self._send(route, envelope, message, queueId))

    def serverStatus(self) -> list[ServerStatus]:
        """
        @return: The health and connections of every server used so far.
        """
        return [pool.status() for pool in self._pools.values()]

    def stop(self) -> Deferred[None]:
        """
        Stop sending: say QUIT on idle connections and close the others.

        @return: Fires when every connection is closed.
        """
        self._stopping = True
        stopping = [pool.stop() for pool in self._pools.values()]
        return DeferredList(stopping).addCallback(lambda ignored: None)

    async def _send(
        self, route: Route, envelope: Envelope, message: MessageSource, queueId: str
    ) -> Outcome:
        recipients = list(envelope.recipients)
        if self._stopping or not route.servers:
            why = "stopping" if self._stopping else "it has no servers"
            reply = Reply(421, f"4.3.0 not sending via route {route.name}: {why}")
            _log.info("{queueId}: deferred: {reply}", queueId=queueId, reply=reply)
            return Outcome("", reply, refused=dict.fromkeys(recipients, reply))

        permanent: dict[str, Reply] = {}
        for pool in self._order(route):
            server = pool.server.describe()
            result = await self._attempt(
                pool, envelope.sender, recipients, message, queueId
            )
            permanent.update(result.permanent)
            _logResult(queueId, server, result)
            recipients = list(result.temporary)
            if not result.failover or not recipients:
                return Outcome(
                    server,
                    result.reply,
                    result.delivered,
                    {**permanent, **result.temporary},
                )

        _log.info(
            "{queueId}: deferred {recipients}: every server of route {route}"
            " failed, the last was {server}: {reply}",
            queueId=queueId,
            recipients=", ".join(recipients),
            route=route.name,
            server=server,
            reply=result.reply,
        )
        return Outcome(server, result.reply, (), {**permanent, **result.temporary})

    def _order(self, route: Route) -> list[ServerPool]:
        """
        Put a route's servers in the order to try them: in turn, so that
        successive messages start on different servers, and the servers
        that are set aside or have no free connection last.
        """
        pools = [self._pool(server) for server in route.servers]
        turn = self._turns.get(route.name, -1) + 1
        self._turns[route.name] = turn % len(pools)
        start = turn % len(pools)
        rotated = pools[start:] + pools[:start]
        return sorted(rotated, key=lambda pool: (pool.isSetAside(), pool.busy))

    async def _attempt(
        self,
        pool: ServerPool,
        sender: str,
        recipients: Sequence[str],
        message: MessageSource,
        queueId: str,
    ) -> TransactionResult:
        """
        Offer a message to one server, on a connection from its pool.
        """
        server = pool.server.describe()
        while True:
            try:
                connection, reused = await pool.acquire()
            except SessionFailure as failure:
                self._setAsideServer(pool, queueId, failure.reply)
                return TransactionResult(
                    failure.reply,
                    temporary=dict.fromkeys(recipients, failure.reply),
                    failover=True,
                    setAside=True,
                )

            try:
                result = await transact(
                    connection, self._timeouts, sender, recipients, message
                )
            except BaseException:
                # Not SMTP trouble (the message could not be read, say): the
                # connection is in an unknown state, and the error is the
                # caller's to see.
                pool.discard(connection)
                raise
            if not (result.stale and reused):
                break
            _log.debug(
                "{queueId}: {server} had closed an idle connection ({reply});"
                " reconnecting",
                queueId=queueId,
                server=server,
                reply=result.reply,
            )
            pool.discard(connection)

        if result.setAside:
            self._setAsideServer(pool, queueId, result.reply)
            pool.discard(connection)
        else:
            pool.markHealthy()
            self._recycle(pool, connection)
        return result

    def _setAsideServer(self, pool: ServerPool, queueId: str, reply: Reply) -> None:
        pool.setAside(self._setAside)
        _log.warn(
            "{queueId}: {server} failed and is tried last for {seconds:g}s: {reply}",
            queueId=queueId,
            server=pool.server.describe(),
            seconds=self._setAside,
            reply=reply,
        )

    def _recycle(self, pool: ServerPool, connection: SMTPConnection) -> None:
        """
        Reset a connection after a message and give it back to its pool, or
        close it if the reset fails.
        """
        if not connection.isOpen:
            return

        def reset(reply: Reply) -> None:
            if reply.code == 250:
                pool.release(connection)
            else:
                pool.discard(connection)

        resetting = connection.command("RSET", self._timeouts.rset)
        resetting.addCallbacks(reset, lambda failure: failure.trap(SessionFailure))

    def _connect(self, server: Server) -> Deferred[SMTPConnection]:
        return Deferred.fromCoroutine(self._openConnection(server))

    async def _openConnection(self, server: Server) -> SMTPConnection:
        """
        Connect to a server and open a session.

        @raise SessionFailure: If that failed.
        """
        peer = f"{server.host}:{server.port}"
        factory = _ConnectionFactory(self._reactor, peer, self._timeouts.helo)
        connecting = self._endpointFactory(server).connect(factory)
        connecting.addTimeout(self._timeouts.connect, self._reactor)
        try:
            connection = cast(SMTPConnection, await connecting)
        except ConnectionRefusedError:
            raise SessionFailure(Reply(421, f"connection refused by {peer}")) from None
        except TimeoutError:
            seconds = self._timeouts.connect
            raise SessionFailure(
                Reply(421, f"timed out after {seconds:g}s connecting to {peer}")
            ) from None
        except Exception as error:
            reply = Reply(421, f"could not connect to {peer}: {error}")
            raise SessionFailure(reply) from error

        try:
            await openSession(
                connection,
                server,
                self._heloName,
                self._timeouts,
                self._startTLSOptions(server),
            )
        except SessionFailure:
            connection.close()
            raise
        return connection

    def _pool(self, server: Server) -> ServerPool:
        if server not in self._pools:
            self._pools[server] = ServerPool(
                server,
                self._reactor,
                self._connect,
                self._limit,
                self._idleTimeout,
                self._timeouts.quit,
            )
        return self._pools[server]

    def _startTLSOptions(
        self, server: Server
    ) -> IOpenSSLClientConnectionCreator | None:
        """
        @return: What to start TLS with after STARTTLS, or C{None} never to
            use STARTTLS.
        """
        if server.tls == "required":
            return self._verifiedOptions(server)
        if server.tls == "opportunistic":
            if self._unverifiedTLS is None:
                self._unverifiedTLS = CertificateOptions()
            return self._unverifiedTLS
        return None

    def _verifiedOptions(self, server: Server) -> IOpenSSLClientConnectionCreator:
        if server not in self._verifiedTLS:
            self._verifiedTLS[server] = optionsForClientTLS(
                server.host, trustRoot=self._trustRoot
            )
        return self._verifiedTLS[server]

    def _defaultEndpoint(self, server: Server) -> IStreamClientEndpoint:
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            self._reactor, server.host, server.port, timeout=self._timeouts.connect
        )
        if server.tls == "implicit":
            endpoint = wrapClientTLS(self._verifiedOptions(server), endpoint)
        return endpoint


def _logResult(queueId: str, server: str, result: TransactionResult) -> None:
    """
    Log what one server did with a message: one line for each reply that
    refused some recipients, and one for the recipients delivered before
    the others are tried on the next server.  The queue logs the delivery
    of the last server tried.
    """
    if result.delivered and result.failover:
        _log.info(
            "{queueId}: delivered to {recipients} via {server}: {reply}",
            queueId=queueId,
            recipients=", ".join(result.delivered),
            server=server,
            reply=result.reply,
        )
    _logRefusals(queueId, server, result.permanent, "refused by")
    verb = "not delivered via" if result.failover else "deferred by"
    _logRefusals(queueId, server, result.temporary, verb)


def _logRefusals(
    queueId: str, server: str, refused: Mapping[str, Reply], verb: str
) -> None:
    byReply: dict[Reply, list[str]] = {}
    for recipient, reply in refused.items():
        byReply.setdefault(reply, []).append(recipient)
    for reply, recipients in byReply.items():
        _log.info(
            "{queueId}: {recipients} {verb} {server}: {reply}",
            queueId=queueId,
            recipients=", ".join(recipients),
            verb=verb,
            server=server,
            reply=reply,
        )
