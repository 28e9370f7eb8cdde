"""
Tests for L{ace_mail.metrics}: the figures as Prometheus reads them, fed by
the real queue, intake, proxy factory, account pollers and contact store.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ace_mail.accounts import AccountPoller
from ace_mail.envelope import Envelope, Outcome
from ace_mail.intake import Intake
from ace_mail.metrics import DeliveryRate, Metrics
from ace_mail.store import SQLiteContactStore
from tests.intakeharness import ACCOUNT, REROUTE, Harness, email
from tests.pagesfakes import MINUTE, FakeQueue, entry, samples
from tests.pop3fakes import makeAccount
from tests.proxyfakes import Client, makeFactory
from tests.test_accounts_schedule import RefusingEndpoint
from tests.test_queue import LATER, NO, OK, QueueTestsMixin


class DeliveryRateTests(SynchronousTestCase):
    """
    L{DeliveryRate}: a ring of per-minute counts on the reactor clock.
    """

    def test_countsByMinute(self) -> None:
        """
        Deliveries in the same minute add up; the next minute starts a new
        bucket; the ring lists 60 minutes oldest first, each at the start
        of its minute, ending with the current one.
        """
        clock = Clock()
        clock.advance(MINUTE)
        rate = DeliveryRate(clock)
        rate.add(2)
        clock.advance(59)
        rate.add(1)
        clock.advance(1)
        rate.add(4)
        minutes = rate.perMinute()
        self.assertEqual(len(minutes), 60)
        self.assertEqual(minutes[-2:], [(MINUTE, 3), (MINUTE + 60, 4)])
        self.assertEqual(minutes[0], (MINUTE + 60 - 59 * 60, 0))
        self.assertEqual(sum(count for _, count in minutes), 7)

    def test_oldMinutesForgotten(self) -> None:
        """
        A minute leaves the ring an hour later, and its bucket starts again
        from zero when its slot comes round.
        """
        clock = Clock()
        clock.advance(MINUTE)
        rate = DeliveryRate(clock)
        rate.add(5)
        clock.advance(59 * 60)
        self.assertEqual(rate.perMinute()[0], (MINUTE, 5))
        clock.advance(60)
        self.assertEqual(sum(count for _, count in rate.perMinute()), 0)
        rate.add(1)
        self.assertEqual(rate.perMinute()[-1], (MINUTE + 3600, 1))


class ExpositionTests(SynchronousTestCase):
    """
    What L{Metrics} writes out for Prometheus.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(MINUTE)
        self.metrics = Metrics(self.clock)

    def test_deliveriesByRouteServerAndResult(self) -> None:
        """
        Each attempt counts its recipients by route, server and result; an
        attempt with no server counts under C{none}; only deliveries feed
        the latency histogram and the per-minute ring.
        """
        self.metrics.attempted(
            "outgoing",
            "outgoing/1 smtp1:25",
            {"delivered": 2, "deferred": 1, "failed": 0},
            12.0,
        )
        self.metrics.attempted(
            "proxy", "", {"delivered": 0, "deferred": 0, "failed": 1}, 3.0
        )
        found = samples(self.metrics)
        deliveries = {
            (
                dict(labels)["route"],
                dict(labels)["server"],
                dict(labels)["result"],
            ): value
            for (name, labels), value in found.items()
            if name == "acemail_deliveries_total"
        }
        self.assertEqual(
            deliveries,
            {
                ("outgoing", "outgoing/1 smtp1:25", "delivered"): 2,
                ("outgoing", "outgoing/1 smtp1:25", "deferred"): 1,
                ("proxy", "none", "failed"): 1,
            },
        )
        self.assertEqual(found[("acemail_queue_delivery_seconds_count", ())], 1)
        self.assertEqual(found[("acemail_queue_delivery_seconds_sum", ())], 12.0)
        self.assertEqual(
            found[("acemail_queue_delivery_seconds_bucket", (("le", "5.0"),))], 0
        )
        self.assertEqual(
            found[("acemail_queue_delivery_seconds_bucket", (("le", "15.0"),))], 1
        )
        self.assertEqual(self.metrics.rate.perMinute()[-1], (MINUTE, 2))
        self.assertEqual(
            self.metrics.deliveryTotals(),
            {
                ("outgoing/1 smtp1:25", "delivered"): 2,
                ("outgoing/1 smtp1:25", "deferred"): 1,
                ("none", "failed"): 1,
            },
        )

    def test_queueDepthByStateAndRoute(self) -> None:
        """
        The queue is read when scraped: its messages by state and route,
        with a zero for each state of each route named, and the time the
        oldest was accepted.
        """
        queue = FakeQueue(
            entry("q1", "deferred", "outgoing", MINUTE - 500),
            entry("q2", "deferred", "outgoing", MINUTE - 90),
            entry("q3", "active", "proxy", MINUTE - 10),
        )
        self.metrics.watchQueue(queue, ["outgoing", "proxy"])
        queue.entries.append(entry("q4", "queued", "outgoing", MINUTE))
        found = samples(self.metrics)
        depth = {
            (dict(labels)["state"], dict(labels)["route"]): value
            for (name, labels), value in found.items()
            if name == "acemail_queue_messages"
        }
        self.assertEqual(
            depth,
            {
                ("queued", "outgoing"): 1,
                ("active", "outgoing"): 0,
                ("deferred", "outgoing"): 2,
                ("queued", "proxy"): 0,
                ("active", "proxy"): 1,
                ("deferred", "proxy"): 0,
            },
        )
        self.assertEqual(
            found[("acemail_queue_oldest_timestamp_seconds", ())], MINUTE - 500
        )

    def test_emptyQueueHasNoOldest(self) -> None:
        """
        An empty queue has zeros and no oldest message.
        """
        self.metrics.watchQueue(FakeQueue(), ["outgoing"])
        found = samples(self.metrics)
        self.assertNotIn(("acemail_queue_oldest_timestamp_seconds", ()), found)
        self.assertEqual(
            found[
                ("acemail_queue_messages", (("route", "outgoing"), ("state", "queued")))
            ],
            0,
        )

    def test_proxySessionsAndRefusals(self) -> None:
        """
        The real proxy factory's admitted sessions, open connections and
        refusals by reason are read when scraped.
        """
        factory = makeFactory(maxConnections=1)
        self.metrics.watchProxy(factory)
        first = Client(factory)
        first.command("BOGUS")
        Client(factory)
        found = samples(self.metrics)
        self.assertEqual(found[("acemail_proxy_sessions_total", ())], 1)
        self.assertEqual(found[("acemail_proxy_connections", ())], 1)
        refusals = {
            dict(labels)["reason"]: value
            for (name, labels), value in found.items()
            if name == "acemail_proxy_refusals_total"
        }
        self.assertEqual(refusals, {"unknown-command": 1, "too-many-connections": 1})
        first.protocol.connectionLost(None)  # type: ignore[arg-type]
        self.assertEqual(samples(self.metrics)[("acemail_proxy_connections", ())], 0)

    def test_accountPollsMessagesAndErrors(self) -> None:
        """
        Each real account poller's ended polls, failed polls and messages
        taken are read, by account, when scraped.
        """
        poller = AccountPoller(
            self.clock,
            makeAccount(name="support-pop"),
            object(),  # type: ignore[arg-type]
            endpointFactory=lambda account: RefusingEndpoint(),
        )
        self.metrics.watchAccounts([poller])
        poller.pollNow()
        poller.pollNow()
        found = samples(self.metrics)
        account = (("account", "support-pop"),)
        self.assertEqual(found[("acemail_pop3_polls_total", account)], 2)
        self.assertEqual(found[("acemail_pop3_errors_total", account)], 2)
        self.assertEqual(found[("acemail_pop3_messages_total", account)], 0)

    def test_contactsByState(self) -> None:
        """
        The contact counts are set by state, and dropped when the store did
        not answer so that no stale figure is scraped.
        """
        self.metrics.setContacts({"open": 4, "ended": 1, "expired": 0})
        found = samples(self.metrics)
        self.assertEqual(found[("acemail_contacts", (("state", "open"),))], 4)
        self.assertEqual(found[("acemail_contacts", (("state", "expired"),))], 0)
        self.metrics.setContacts(None)
        names = {name for name, _ in samples(self.metrics)}
        self.assertNotIn("acemail_contacts", names)

    def test_ownRegistry(self) -> None:
        """
        Two L{Metrics} keep separate figures in registries of their own.
        """
        other = Metrics(self.clock)
        other.attempted("outgoing", "s", {"delivered": 1}, 1.0)
        self.assertNotIn(
            "acemail_deliveries_total", {name for name, _ in samples(self.metrics)}
        )


class QueueInstrumentationTests(QueueTestsMixin, SynchronousTestCase):
    """
    The real queue reports each attempt through C{onAttempt}.
    """

    def test_attemptsReported(self) -> None:
        """
        An attempt that delivers one recipient and is refused for another
        counts one of each with the message's age; a deferred attempt
        counts as deferred and is not timed.
        """
        metrics = Metrics(self.clock)
        self.queue.stopService()
        self.queue = self.startQueue(onAttempt=metrics.attempted)
        envelope = Envelope("a@example.com", ["b@example.net", "c@example.net"])
        self.enqueue(envelope)
        self.clock.advance(7)
        [call] = self.deliver.calls
        call.result.callback(
            Outcome(
                "s1 h:25",
                OK,
                accepted=("b@example.net",),
                refused={"c@example.net": NO},
            )
        )
        self.enqueue()
        self.deliver.calls[-1].refuse(LATER)
        totals = metrics.deliveryTotals()
        self.assertEqual(
            totals,
            {
                ("s1 h:25", "delivered"): 1,
                ("s1 h:25", "failed"): 1,
                ("s1", "deferred"): 1,
            },
        )
        found = samples(metrics)
        self.assertEqual(found[("acemail_queue_delivery_seconds_sum", ())], 7)
        self.assertEqual(found[("acemail_queue_delivery_seconds_count", ())], 1)


class _SlowQueue:
    """
    A queue whose acceptance takes a quarter of a second on the clock.
    """

    def __init__(self, queue: Any, clock: Clock) -> None:
        self._queue = queue
        self._clock = clock

    def enqueue(self, *args: Any, **kwargs: Any) -> Deferred[str]:
        accepted = self._queue.enqueue(*args, **kwargs)
        later: Deferred[str] = Deferred()
        accepted.addCallback(
            lambda queueId: self._clock.callLater(0.25, later.callback, queueId)
        )
        return later

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)


class IntakeInstrumentationTests(SynchronousTestCase):
    """
    The real intake times each message through C{onTaken}.
    """

    def test_takeTimed(self) -> None:
        """
        The time from L{Intake.take} to its answer, on the reactor clock,
        goes into the intake histogram.
        """
        harness = Harness(self.mktemp())
        self.addCleanup(harness.stop)
        metrics = Metrics(harness.clock)
        harness.intake = Intake(
            reactor=harness.clock,
            store=harness.store,
            queue=_SlowQueue(harness.queue, harness.clock),  # type: ignore[arg-type]
            entrances=harness.entrances,
            rerouteName=REROUTE,
            incomingDir=harness.intake.incomingDir,
            answerLimit=3,
            answerWindow=86400.0,
            retention=3600.0,
            onTaken=metrics.taken,
        )
        taking = harness.intake.take(ACCOUNT, "uidl-1", harness.write(email()))
        self.assertNoResult(taking)
        harness.clock.advance(0.25)
        self.successResultOf(taking)
        found = samples(metrics)
        self.assertEqual(found[("acemail_intake_seconds_count", ())], 1)
        self.assertEqual(found[("acemail_intake_seconds_sum", ())], 0.25)
        self.assertEqual(found[("acemail_intake_seconds_bucket", (("le", "0.1"),))], 0)


class StoreFiguresTests(SynchronousTestCase):
    """
    The SQLite store's cheap queries for the operators' pages.
    """

    def test_countContactsByState(self) -> None:
        """
        Open contacts, contacts ended at or after the given time, and
        contacts ended before it are counted apart.
        """
        store = SQLiteContactStore.open(self.mktemp() + ".sqlite3")
        self.addCleanup(store.close)
        ids = []
        for n in range(5):
            contact = self.successResultOf(
                store.create(
                    entrance="support",
                    customerAddress=f"c{n}@example.com",
                    customerName="",
                    subject="s",
                    messageId=None,
                    references=(),
                    externalId=None,
                    now=1000.0,
                )
            )
            ids.append(contact.id)
        store.end(ids[0], 2000.0)
        store.end(ids[1], 3000.0)
        store.end(ids[2], 3500.0)
        counts = self.successResultOf(store.countContacts(3000.0))
        self.assertEqual(counts, {"open": 2, "ended": 2, "expired": 1})

    def test_pingAnswersUntilClosed(self) -> None:
        """
        The trivial query answers while the store is open, and fails once
        it is closed.
        """
        store = SQLiteContactStore.open(self.mktemp() + ".sqlite3")
        self.assertIsNone(self.successResultOf(store.ping()))
        store.close()
        self.failureResultOf(store.ping(), sqlite3.ProgrammingError)
