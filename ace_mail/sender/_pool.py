# -*- test-case-name: tests.test_sender_pool -*-
"""
The connections to one server: a bounded pool, and the server's health.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..envelope import Reply
from ._protocol import SessionFailure, SMTPConnection
from ._settings import Server, ServerStatus

_log = Logger()

Lease = tuple[SMTPConnection, bool]


class ServerPool:
    """
    Up to a fixed number of connections to one server, each ready for the
    next message, and whether the server is set aside after a failure.

    A message takes a connection with L{acquire}: an idle one if there is
    one, else a new one if the bound allows, else the first one given back
    to the pool (first come, first served). After the message the
    connection comes back with L{release} or is closed with L{discard}. An
    idle connection says QUIT after C{idleTimeout} seconds.

    @ivar server: The server.
    """

    def __init__(
        self,
        server: Server,
        clock: IReactorTime,
        connect: Callable[[Server], Deferred[SMTPConnection]],
        limit: int,
        idleTimeout: float,
        quitTimeout: float,
    ) -> None:
        self.server = server
        self._clock = clock
        self._connect = connect
        self._limit = limit
        self._idleTimeout = idleTimeout
        self._quitTimeout = quitTimeout
        self._setAsideUntil: float | None = None
        self._opened = 0
        self._connections: set[SMTPConnection] = set()
        self._idle: dict[SMTPConnection, IDelayedCall] = {}
        self._waiting: deque[Deferred[Lease]] = deque()
        self._stopping = False

    def acquire(self) -> Deferred[Lease]:
        """
        Take a connection for one message.

        @return: Fires with the connection and C{True} if it carried a
            message before, or fails with L{SessionFailure} if no
            connection could be opened.
        """
        if self._idle:
            connection, timer = self._idle.popitem()
            timer.cancel()
            return succeed((connection, True))
        if self._opened < self._limit:
            return self._open()
        waiter: Deferred[Lease] = Deferred()
        self._waiting.append(waiter)
        return waiter

    def release(self, connection: SMTPConnection) -> None:
        """
        Give back a connection that is ready for the next message.
        """
        if not connection.isOpen:
            return
        if self._stopping:
            connection.close()
            return
        if self._waiting:
            self._waiting.popleft().callback((connection, True))
            return
        self._idle[connection] = self._clock.callLater(
            self._idleTimeout, self._expire, connection
        )

    def discard(self, connection: SMTPConnection) -> None:
        """
        Close a connection that must not carry another message.
        """
        connection.close()

    @property
    def busy(self) -> bool:
        """
        C{True} if a message would have to wait for a connection.
        """
        return not self._idle and self._opened >= self._limit

    def isSetAside(self) -> bool:
        """
        @return: C{True} if the server failed less than the set-aside time
            ago.
        """
        return (
            self._setAsideUntil is not None
            and self._clock.seconds() < self._setAsideUntil
        )

    def setAside(self, seconds: float) -> None:
        """
        Note that the server failed: try it last for C{seconds}.
        """
        self._setAsideUntil = self._clock.seconds() + seconds

    def markHealthy(self) -> None:
        """
        Note that the server worked.
        """
        self._setAsideUntil = None

    def status(self) -> ServerStatus:
        """
        @return: A snapshot of the server's health and connections.
        """
        setAside = self.isSetAside()
        return ServerStatus(
            name=self.server.name,
            describe=self.server.describe(),
            healthy=not setAside,
            setAsideUntil=self._setAsideUntil if setAside else None,
            openConnections=self._opened,
            idleConnections=len(self._idle),
        )

    def stop(self) -> Deferred[None]:
        """
        Say QUIT on the idle connections, close the busy ones and turn away
        the messages that wait.

        @return: Fires when every connection is closed.
        """
        self._stopping = True
        closing = [c.whenClosed() for c in self._connections]
        for connection in list(self._connections):
            if connection in self._idle:
                self._idle.pop(connection).cancel()
                self._quit(connection)
            else:
                connection.close()
        waiting, self._waiting = self._waiting, deque()
        for waiter in waiting:
            waiter.errback(self._stoppingFailure())
        return DeferredList(closing).addCallback(lambda ignored: None)

    def _open(self) -> Deferred[Lease]:
        if self._stopping:
            return fail(self._stoppingFailure())
        self._opened += 1

        def opened(connection: SMTPConnection) -> Lease:
            self._connections.add(connection)
            connection.whenClosed().addCallback(self._closed, connection)
            if self._stopping:
                connection.close()
                raise self._stoppingFailure()
            return (connection, False)

        def failed(failure: Failure) -> Failure:
            self._opened -= 1
            waiting, self._waiting = self._waiting, deque()
            for waiter in waiting:
                waiter.errback(failure)
            return failure

        return self._connect(self.server).addCallbacks(opened, failed)

    def _closed(self, ignored: None, connection: SMTPConnection) -> None:
        self._connections.discard(connection)
        timer = self._idle.pop(connection, None)
        if timer is not None and timer.active():
            timer.cancel()
        self._opened -= 1
        if self._waiting and not self._stopping:
            waiter = self._waiting.popleft()
            self._open().chainDeferred(waiter)

    def _expire(self, connection: SMTPConnection) -> None:
        del self._idle[connection]
        _log.debug(
            "{server}: closing a connection idle for {seconds:g}s",
            server=self.server.describe(),
            seconds=self._idleTimeout,
        )
        self._quit(connection)

    def _quit(self, connection: SMTPConnection) -> None:
        def close(result: object) -> None:
            connection.close()

        connection.command("QUIT", self._quitTimeout).addBoth(close)

    def _stoppingFailure(self) -> SessionFailure:
        return SessionFailure(
            Reply(421, f"4.3.0 not sending via {self.server.describe()}: stopping")
        )
