# -*- test-case-name: tests.test_accounts_lease -*-
"""
A lease in the store that several ace-mail nodes share, held for as long as
a service runs, so that one node at a time polls a POP3 account.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import Deferred, TimeoutError, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..store import STORE_UNREACHABLE, ILeases

_log = Logger()

RELEASE_TIMEOUT = 5.0
"""
The longest wait, in seconds, for the store to give a lease up when the
service stops; a lease not given up runs out by itself.
"""

_UNKNOWN, _HELD, _ELSEWHERE, _UNREACHABLE = "unknown", "held", "elsewhere", "down"


class LeaseKeeper:
    """
    Take one named lease and renew it every quarter of its time for as
    long as the keeper runs, and say whenever this node gains or loses it.

    A renewal the store does not answer within that quarter counts as
    failed, and the lease as lost: this node stops using it well before the
    store lets another node take it.

    @ivar state: Who holds the lease, or why this node does not know, in
        a few words for the account's status.
    """

    def __init__(
        self,
        clock: IReactorTime,
        leases: ILeases,
        name: str,
        seconds: float,
        changed: Callable[[bool], None],
    ) -> None:
        """
        @param leases: The store that keeps the leases.
        @param name: The lease's name.
        @param seconds: How long each renewal holds the lease.
        @param changed: Called with C{True} when this node gains the lease,
            and with C{False} when it loses it, learns that another node
            holds it, or cannot reach the store.
        """
        self._clock = clock
        self._leases = leases
        self._name = name
        self._seconds = seconds
        self._interval = seconds / 4
        self._changed = changed
        self._kind = _UNKNOWN
        self._running = False
        self._timer: IDelayedCall | None = None
        self._renewing: Deferred[None] | None = None
        self.state = "not held yet: waiting for the store's first answer"

    @property
    def held(self) -> bool:
        """
        Whether this node holds the lease, as far as it knows.
        """
        return self._kind == _HELD

    @property
    def failing(self) -> bool:
        """
        Whether the store did not answer the last renewal.
        """
        return self._kind == _UNREACHABLE

    def start(self) -> None:
        """
        Take the lease now, and keep renewing it.
        """
        self._running = True
        self._renew()

    def stop(self) -> Deferred[None]:
        """
        Stop renewing, and give the lease up unless another node holds it.

        @return: Fires, never with a failure, once the store gave the lease
            up, or at the latest a quarter of the lease time plus
            L{RELEASE_TIMEOUT} seconds from now.
        """
        self._running = False
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        renewed: Deferred[None] = succeed(None)
        if self._renewing is not None:
            renewed = Deferred()
            self._renewing.addBoth(lambda ignored: renewed.callback(None))
        return renewed.addCallback(self._release)

    def _release(self, ignored: None) -> Deferred[None] | None:
        kind, self._kind = self._kind, _UNKNOWN
        self.state = "not held: this node stopped"
        if kind == _ELSEWHERE:
            return None
        releasing = maybeDeferred(self._leases.releaseLease, self._name)
        releasing.addTimeout(RELEASE_TIMEOUT, self._clock)

        def failed(reason: Failure) -> None:
            _log.warn(
                "{lease}: cannot give the lease up ({reason}); it runs out by "
                "itself within {seconds:g} seconds",
                lease=self._name,
                reason=_why(reason, RELEASE_TIMEOUT),
                seconds=self._seconds,
            )

        return releasing.addErrback(failed)

    def _renew(self) -> None:
        self._timer = None
        started = self._clock.seconds()
        holding = maybeDeferred(self._leases.holdLease, self._name, self._seconds)
        holding.addTimeout(self._interval, self._clock)
        renewing = holding.addCallbacks(self._answered, self._failed)
        renewing.addErrback(self._bug)
        self._renewing = renewing
        renewing.addCallback(self._scheduleNext, started)

    def _answered(self, held: bool) -> None:
        if held:
            self._set(_HELD, f"held by this node, {self._leases.node}")
        else:
            self._set(_ELSEWHERE, "held by another node")

    def _failed(self, reason: Failure) -> None:
        if not reason.check(TimeoutError, *STORE_UNREACHABLE):
            _log.failure(
                "{lease}: the store failed to renew the lease", reason, lease=self._name
            )
        self._set(_UNREACHABLE, f"store unreachable: {_why(reason, self._interval)}")

    def _bug(self, reason: Failure) -> None:
        _log.failure("{lease}: the lease's holder failed", reason, lease=self._name)

    def _set(self, kind: str, state: str) -> None:
        self.state = state
        previous, self._kind = self._kind, kind
        if kind != previous and self._running:
            self._changed(kind == _HELD)

    def _scheduleNext(self, ignored: None, started: float) -> None:
        self._renewing = None
        if self._running:
            delay = max(0.0, started + self._interval - self._clock.seconds())
            self._timer = self._clock.callLater(delay, self._renew)


def _why(reason: Failure, timeout: float) -> str:
    """
    @return: The first line of what went wrong with a call to the store.
    """
    if reason.check(TimeoutError):
        return f"no answer within {timeout:g} seconds"
    lines = reason.getErrorMessage().strip().splitlines()
    return lines[0].rstrip(".") if lines else repr(reason.value)
