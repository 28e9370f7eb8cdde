# -*- test-case-name: tests.test_accounts_schedule -*-
"""
The service that polls one POP3 account on a schedule, backs off after
failures and keeps the account's status; with several nodes, only while
this node holds the account's lease.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from attrs import evolve
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IDelayedCall, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from .._entrances import AccountConfig
from ..store import ILeases
from . import _tls
from ._lease import LeaseKeeper
from ._protocol import POP3Error
from ._session import Intake, PollSession, Tally
from ._status import AccountStatus

_log = Logger()

MAX_BACKOFF = 1800.0
"""
The longest wait, in seconds, between failed polls (unless the account's
poll interval is longer).
"""


class AccountPoller(Service):
    """
    Poll one account every C{pollInterval} seconds, and after failures
    every C{pollInterval} doubled for each failure in a row, up to
    L{MAX_BACKOFF}. A poll never overlaps another.

    Given a store of leases shared by several nodes, it polls only while
    this node holds the account's lease (named C{account:NAME}): at once
    when it gains it, then on the same schedule; losing it aborts the poll
    under way.

    @ivar polls: How many polls have ended, however they ended.
    """

    def __init__(
        self,
        reactor: Any,
        account: AccountConfig,
        intake: Intake,
        *,
        endpointFactory: Callable[[AccountConfig], IStreamClientEndpoint] | None = None,
        leases: ILeases | None = None,
        leaseSeconds: float = 60.0,
    ) -> None:
        """
        @param reactor: The reactor: L{IReactorTime}, and L{IReactorTCP}
            unless C{endpointFactory} is given.
        @param account: The account.
        @param intake: Where messages go (L{ace_mail.intake.Intake}).
        @param endpointFactory: Makes the endpoint to reach the account's
            server; by default a L{HostnameEndpoint}, wrapped in TLS when
            the account's C{tls} is C{"implicit"}.
        @param leases: The store of leases shared with other nodes, or
            L{None} when this node alone polls its accounts.
        @param leaseSeconds: How long each renewal of the lease lasts; it
            is renewed every quarter of that.
        """
        self.name = account.name
        self._reactor = reactor
        self._account = account
        self._intake = intake
        self._endpointFactory = endpointFactory or self._defaultEndpoint
        self._status = AccountStatus(account=account.name)
        self._tally = Tally()
        self._timer: IDelayedCall | None = None
        self._session: PollSession | None = None
        self._idleWaiters: list[Deferred[None]] = []
        self.polls = 0
        self._keeper: LeaseKeeper | None = None
        if leases is not None:
            self._keeper = LeaseKeeper(
                reactor,
                leases,
                f"account:{account.name}",
                leaseSeconds,
                self._leaseChanged,
            )

    def startService(self) -> None:
        super().startService()
        if self._keeper is None:
            self._schedule(0)
        else:
            self._keeper.start()

    def stopService(self) -> Deferred[None]:
        """
        Stop polling; a poll under way is dropped (the server keeps every
        message it did not see deleted before QUIT). Then the lease, if
        any, is given up, so that another node takes the account at once.

        @return: Fires when no poll runs any more and the lease is given up
            (or the store did not answer in time).
        """
        super().stopService()
        self._cancelTimer()
        if self._session is not None:
            self._session.abort(f"account {self._account.name}: ace-mail is stopping")
        idle = self._whenIdle()
        keeper = self._keeper
        if keeper is not None:
            idle.addCallback(lambda ignored: keeper.stop())
        return idle

    def pollNow(self) -> Deferred[None]:
        """
        Poll at once, unless a poll is under way or another node holds the
        account's lease.

        @return: Fires when the poll (this one or the one under way) ends,
            however it ends; at once when this node may not poll.
        """
        if self._keeper is not None and not self._keeper.held:
            return succeed(None)
        if self._session is None:
            self._cancelTimer()
            self._poll()
        return self._whenIdle()

    def status(self) -> AccountStatus:
        """
        @return: The account's status now.
        """
        return evolve(
            self._status,
            polling=self._session is not None,
            messagesTaken=self._tally.taken,
            messagesTooLarge=self._tally.tooLarge,
            lease=None if self._keeper is None else self._keeper.state,
        )

    def _leaseChanged(self, held: bool) -> None:
        assert self._keeper is not None
        account, lease = self._account.name, self._keeper.state
        if held:
            _log.info("{account}: lease {lease}; polling", account=account, lease=lease)
            if self.running and self._session is None:
                self._cancelTimer()
                self._poll()
            return
        self._cancelTimer()
        if self._session is not None:
            _log.warn(
                "{account}: lease lost ({lease}); the poll under way stops",
                account=account,
                lease=lease,
            )
            self._session.abort(
                f"account {account}: the poll stopped, as this node lost the "
                f"account's lease ({lease})"
            )
        elif self._keeper.failing:
            _log.warn(
                "{account}: lease not held ({lease}); no polls until the store "
                "answers",
                account=account,
                lease=lease,
            )
        else:
            _log.info(
                "{account}: lease {lease}; not polling", account=account, lease=lease
            )

    def _poll(self) -> None:
        self._timer = None
        self._status = evolve(self._status, nextPoll=None)
        session = PollSession(
            self._reactor,
            self._account,
            self._intake,
            self._endpointFactory,
            self._tally,
        )
        self._session = session
        _log.info(
            "{account}: polling {host}:{port}",
            account=self._account.name,
            host=self._account.host,
            port=self._account.port,
        )
        polled = Deferred.fromCoroutine(session.run())
        polled.addCallbacks(self._succeeded, self._failed).addBoth(self._ended)

    def _succeeded(self, ignored: None) -> None:
        self._status = evolve(self._status, lastResult="ok", consecutiveFailures=0)
        _log.info(
            "{account}: poll done; {taken} messages taken so far",
            account=self._account.name,
            taken=self._tally.taken,
        )

    def _failed(self, failure: Failure) -> None:
        if failure.check(POP3Error):
            sentence = str(failure.value)
        else:
            _log.failure("{account}: poll failed", failure, account=self._account.name)
            sentence = f"an internal error: {failure.value!r}"
        self._status = evolve(
            self._status,
            lastResult=sentence,
            errors=self._status.errors + 1,
            consecutiveFailures=self._status.consecutiveFailures + 1,
        )
        _log.warn(
            "{account}: poll failed ({failures} in a row): {reason}",
            account=self._account.name,
            failures=self._status.consecutiveFailures,
            reason=sentence,
        )

    def _ended(self, ignored: None) -> None:
        self._session = None
        self.polls += 1
        self._status = evolve(self._status, lastPoll=self._reactor.seconds())
        if self.running and (self._keeper is None or self._keeper.held):
            self._schedule(self._delay())
        waiters, self._idleWaiters = self._idleWaiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _delay(self) -> float:
        interval = self._account.pollInterval
        failures = self._status.consecutiveFailures
        if failures == 0:
            return interval
        backoff: float = interval * 2 ** min(failures - 1, 32)
        return min(backoff, max(MAX_BACKOFF, interval))

    def _schedule(self, delay: float) -> None:
        self._cancelTimer()
        self._timer = self._reactor.callLater(delay, self._poll)
        self._status = evolve(self._status, nextPoll=self._reactor.seconds() + delay)
        if delay:
            _log.debug(
                "{account}: next poll in {delay:g} seconds",
                account=self._account.name,
                delay=delay,
            )

    def _cancelTimer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
            self._status = evolve(self._status, nextPoll=None)

    def _whenIdle(self) -> Deferred[None]:
        if self._session is None:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._idleWaiters.append(waiter)
        return waiter

    def _defaultEndpoint(self, account: AccountConfig) -> IStreamClientEndpoint:
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            self._reactor, account.host, account.port, timeout=account.timeout
        )
        if account.tls == "implicit":
            options = _tls.clientTLSOptions(account)
            endpoint = wrapClientTLS(options, endpoint, self._reactor)
        return endpoint


def pollerServices(
    reactor: Any, accounts: Iterable[AccountConfig], intake: Intake
) -> MultiService:
    """
    @return: A service with one L{AccountPoller} for each of C{accounts}.
    """
    services = MultiService()
    for account in accounts:
        AccountPoller(reactor, account, intake).setServiceParent(services)
    return services
