# -*- test-case-name: tests.test_metrics -*-
"""
What ace-mail counts for Prometheus, and the deliveries per minute that the
status page draws.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Mapping, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from twisted.internet.interfaces import IReactorTime

from ace_mail.accounts import AccountStatus
from ace_mail.queue import QueueEntry

QUEUE_STATES = ("queued", "active", "deferred")
"""
The states of a message in the queue, as L{ace_mail.queue.QueueEntry} names
them.
"""

RESULTS = ("delivered", "deferred", "failed")
"""
What one attempt did for a recipient: delivered, deferred to a later
attempt, or failed for good (refused, or expired in the queue).
"""

_DELIVERY_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 86400, 5 * 86400)
_INTAKE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _Queue(Protocol):
    def list(self) -> list[QueueEntry]: ...


class _Proxy(Protocol):
    sessions: int
    refusals: Mapping[str, int]

    @property
    def openConnections(self) -> int: ...


class _Poller(Protocol):
    polls: int

    def status(self) -> AccountStatus: ...


class DeliveryRate:
    """
    Deliveries per minute over the last hour: a ring of per-minute counts
    on the reactor's clock, where a bucket is emptied when its minute comes
    round again.
    """

    def __init__(self, clock: IReactorTime, minutes: int = 60) -> None:
        """
        @param clock: The clock whose minutes the buckets are.
        @param minutes: How many minutes the ring holds.
        """
        self._clock = clock
        self._counts = [0] * minutes
        self._minutes = [-1] * minutes

    def add(self, count: int) -> None:
        """
        Count C{count} deliveries in the current minute.
        """
        minute = int(self._clock.seconds() // 60)
        slot = minute % len(self._counts)
        if self._minutes[slot] != minute:
            self._minutes[slot] = minute
            self._counts[slot] = 0
        self._counts[slot] += count

    def perMinute(self) -> list[tuple[float, int]]:
        """
        @return: For each minute of the ring, oldest first and ending with
            the current one, its start (POSIX seconds) and its count.
        """
        current = int(self._clock.seconds() // 60)
        size = len(self._counts)
        result = []
        for minute in range(current - size + 1, current + 1):
            slot = minute % size
            count = self._counts[slot] if self._minutes[slot] == minute else 0
            result.append((minute * 60.0, count))
        return result


class Metrics:
    """
    ace-mail's metrics in a registry of their own.  The queue and intake
    report through L{attempted} and L{taken}; the queue's depth, the proxy's
    and the POP3 accounts' figures are read when Prometheus scrapes.

    @ivar registry: The registry that L{exposition} writes out.
    @ivar rate: The delivered recipients per minute, for the status page.
    """

    def __init__(self, clock: IReactorTime) -> None:
        """
        @param clock: The reactor's clock, for the deliveries per minute.
        """
        self.registry = CollectorRegistry()
        self.rate = DeliveryRate(clock)
        self._deliveries = Counter(
            "acemail_deliveries",
            "Recipients handled by delivery attempts, by route, server and "
            "result (delivered, deferred or failed).",
            ["route", "server", "result"],
            registry=self.registry,
        )
        self._deliveryLatency = Histogram(
            "acemail_queue_delivery_seconds",
            "Seconds from a message's acceptance into the queue to its " "delivery.",
            buckets=_DELIVERY_BUCKETS,
            registry=self.registry,
        )
        self._intakeLatency = Histogram(
            "acemail_intake_seconds",
            "Seconds intake took to commit one POP3 message and hand its "
            "mail to the queue.",
            buckets=_INTAKE_BUCKETS,
            registry=self.registry,
        )
        self._contacts = Gauge(
            "acemail_contacts",
            "Contacts by state: open, ended (still answerable) and expired "
            "(ended longer ago than the retention, not yet purged).",
            ["state"],
            registry=self.registry,
        )

    def attempted(
        self, route: str, server: str, counts: Mapping[str, int], age: float
    ) -> None:
        """
        Count what one delivery attempt did; the queue calls this.

        @param route: The message's route.
        @param server: The server that had the last word, or C{""}.
        @param counts: How many recipients had each of L{RESULTS}.
        @param age: Seconds since the message was accepted.
        """
        for result, count in counts.items():
            if count:
                labels = (route, server or "none", result)
                self._deliveries.labels(*labels).inc(count)
        delivered = counts.get("delivered", 0)
        if delivered:
            self._deliveryLatency.observe(age)
            self.rate.add(delivered)

    def taken(self, seconds: float) -> None:
        """
        Time one message of intake; intake calls this.
        """
        self._intakeLatency.observe(seconds)

    def setContacts(self, counts: Mapping[str, int] | None) -> None:
        """
        Set the contact counts by state, or drop them when the store did
        not answer, so that no stale figure is scraped.
        """
        self._contacts.clear()
        for state, count in (counts or {}).items():
            self._contacts.labels(state).set(count)

    def deliveryTotals(self) -> dict[tuple[str, str], int]:
        """
        @return: The recipients counted so far by server and result, over
            every route.
        """
        totals: dict[tuple[str, str], int] = {}
        for family in self._deliveries.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    key = (sample.labels["server"], sample.labels["result"])
                    totals[key] = totals.get(key, 0) + int(sample.value)
        return totals

    def watchQueue(self, queue: _Queue, routes: Iterable[str]) -> None:
        """
        Report the queue's depth by state and route when scraped, with a
        zero for each state of each of C{routes}.
        """
        self.registry.register(_QueueCollector(queue, tuple(routes)))

    def watchProxy(self, factory: _Proxy) -> None:
        """
        Report the SMTP proxy's sessions and refusals when scraped.
        """
        self.registry.register(_ProxyCollector(factory))

    def watchAccounts(self, pollers: Iterable[_Poller]) -> None:
        """
        Report each POP3 account's polls, messages and errors when scraped.
        """
        self.registry.register(_AccountsCollector(tuple(pollers)))

    def exposition(self) -> bytes:
        """
        @return: Every metric in Prometheus's text format.
        """
        return generate_latest(self.registry)


class _QueueCollector:
    def __init__(self, queue: _Queue, routes: tuple[str, ...]) -> None:
        self._queue = queue
        self._routes = routes

    def collect(self) -> Iterator[Metric]:
        depth = dict.fromkeys(
            ((state, route) for route in self._routes for state in QUEUE_STATES), 0
        )
        entries = self._queue.list()
        for entry in entries:
            key = (entry.state, entry.route)
            depth[key] = depth.get(key, 0) + 1
        family = GaugeMetricFamily(
            "acemail_queue_messages",
            "Messages in the queue by state and route.",
            labels=["state", "route"],
        )
        for (state, route), count in sorted(depth.items()):
            family.add_metric([state, route], count)
        yield family
        oldest = GaugeMetricFamily(
            "acemail_queue_oldest_timestamp_seconds",
            "When the oldest message in the queue was accepted (POSIX "
            "seconds); absent when the queue is empty.",
        )
        if entries:
            oldest.add_metric([], min(entry.created for entry in entries))
        yield oldest


class _ProxyCollector:
    def __init__(self, factory: _Proxy) -> None:
        self._factory = factory

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "acemail_proxy_sessions",
            "SMTP sessions the proxy admitted.",
            value=self._factory.sessions,
        )
        yield GaugeMetricFamily(
            "acemail_proxy_connections",
            "SMTP connections open to the proxy now.",
            value=self._factory.openConnections,
        )
        refusals = CounterMetricFamily(
            "acemail_proxy_refusals",
            "Commands and connections the proxy refused, by reason.",
            labels=["reason"],
        )
        for reason, count in sorted(self._factory.refusals.items()):
            refusals.add_metric([reason], count)
        yield refusals


class _AccountsCollector:
    def __init__(self, pollers: tuple[_Poller, ...]) -> None:
        self._pollers = pollers

    def collect(self) -> Iterator[Metric]:
        families = {
            "polls": CounterMetricFamily(
                "acemail_pop3_polls",
                "Polls of each POP3 account that ended.",
                labels=["account"],
            ),
            "messages": CounterMetricFamily(
                "acemail_pop3_messages",
                "Messages taken from each POP3 account.",
                labels=["account"],
            ),
            "errors": CounterMetricFamily(
                "acemail_pop3_errors",
                "Polls of each POP3 account that failed.",
                labels=["account"],
            ),
        }
        for poller in self._pollers:
            status = poller.status()
            families["polls"].add_metric([status.account], poller.polls)
            families["messages"].add_metric([status.account], status.messagesTaken)
            families["errors"].add_metric([status.account], status.errors)
        yield from families.values()
