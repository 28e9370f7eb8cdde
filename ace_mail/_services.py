# -*- test-case-name: tests.test_tap -*-
"""
Small services that tie ace-mail's parts to the life of the process.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from ace_mail.store import IContactStore

_log = Logger()


class Listener(StreamServerEndpointService):
    """
    A listening port that, when it cannot listen, says so in one sentence.
    """

    def __init__(
        self, what: str, description: str, endpoint: Any, factory: Any
    ) -> None:
        super().__init__(endpoint, factory)
        self.what = what
        self.description = description

    def privilegedStartService(self) -> None:
        Service.privilegedStartService(self)
        self._waitingForPort = self.endpoint.listen(self.factory)
        failures: list[str] = []

        def cannotListen(reason: Any) -> None:
            failures.append(reason.getErrorMessage().rstrip("."))

        self._waitingForPort.addErrback(cannotListen)
        if failures:
            raise SystemExit(
                f"ace-mail: cannot listen for the {self.what} on {self.description}: "
                f"{failures[0]}."
            )


class ThreadPoolService(Service):
    """
    Runs the spool's writer thread for as long as ace-mail runs.
    """

    def __init__(self, pool: ThreadPool, closed: Callable[[], Deferred[None]]) -> None:
        """
        @param closed: Fires once the spool is closed and hands the thread
            no more work; a stopped pool drops work silently, so the thread
            stops only then.
        """
        self.pool = pool
        self.closed = closed

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.closed().addCallback(lambda ignored: self.pool.stop())


class Closing(Service):
    """
    Calls a function when ace-mail stops, after the services added later.
    """

    def __init__(self, close: Any) -> None:
        self.close = close

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        result: Deferred[None] | None = self.close()
        return result


def purgeService(reactor: Any, store: IContactStore, retention: float) -> Service:
    """
    Forget, once an hour, the contacts that were ended longer ago than the
    retention, and all that is kept with them.
    """

    def purge() -> Deferred[None]:
        purged = store.purge(reactor.seconds() - retention)

        def report(count: int) -> None:
            if count:
                _log.info("Purged {count} expired contacts", count=count)

        def failed(reason: Failure) -> None:
            _log.warn(
                "Cannot purge the expired contacts now ({reason}); trying again"
                " in an hour.",
                reason=reason.getErrorMessage(),
            )

        return purged.addCallbacks(report, failed)

    timer = TimerService(3600, purge)
    timer.clock = reactor
    return timer


class AfterRecovery(MultiService):
    """
    Starts its services only once C{recover} has finished the work that a
    crash interrupted, so that nothing new starts on top of it.
    """

    def __init__(self, what: str, recover: Callable[[], Deferred[None]]) -> None:
        super().__init__()
        self.what = what
        self.recover = recover

    def startService(self) -> None:
        Service.startService(self)

        def recovered(ignored: None) -> None:
            if self.running:
                for service in self:
                    service.startService()

        def failed(reason: Any) -> None:
            _log.failure(
                "Cannot recover {what}; it does not start until ace-mail restarts",
                reason,
                what=self.what,
            )

        self.recover().addCallbacks(recovered, failed)
