"""
Tests for L{ace_mail.accounts.AccountPoller}'s schedule: polls on start
and every interval, backoff, no overlap, stopping, and the status.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from zope.interface import implementer

from ace_mail._entrances import AccountConfig
from ace_mail.accounts import MAX_BACKOFF, AccountPoller, pollerServices
from tests.pop3fakes import makeAccount
from tests.test_accounts_poller import PollerTestCase


@implementer(IStreamClientEndpoint)
class RefusingEndpoint:
    """
    An endpoint whose connections are refused.
    """

    attempts = 0

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        self.attempts += 1
        return fail(ConnectionRefusedError())


class SchedulingTests(PollerTestCase):
    """
    When polls happen, and what the status says between them.
    """

    def test_pollsOnStartAndEveryInterval(self) -> None:
        """
        The service polls when it starts, then every pollInterval seconds
        after the end of the poll before.
        """
        poller = self.poller(pollInterval=60.0)
        poller.startService()
        self.clock.advance(0)
        self.network.flush()
        self.assertEqual(self.script.connections, 1)
        self.assertEqual(poller.status().nextPoll, 60)

        self.clock.advance(59)
        self.assertEqual(self.script.connections, 1)
        self.clock.advance(1)
        self.network.flush()
        self.assertEqual(self.script.connections, 2)
        poller.stopService()
        self.assertIsNone(poller.status().nextPoll)

    def test_backoff(self) -> None:
        """
        After each failed poll in a row the wait doubles, from pollInterval
        up to L{MAX_BACKOFF}; a poll that succeeds brings back the
        interval.
        """
        refusing = RefusingEndpoint()
        endpoint: IStreamClientEndpoint = refusing
        poller = AccountPoller(
            self.clock,
            makeAccount(pollInterval=100.0),
            self.intake,
            endpointFactory=lambda account: endpoint,
        )
        poller.startService()
        self.clock.advance(0)

        waits = []
        for _ in range(7):
            status = poller.status()
            waits.append((status.nextPoll or 0) - self.clock.seconds())
            self.clock.advance(waits[-1])
        self.assertEqual(waits, [100, 200, 400, 800, 1600, MAX_BACKOFF, MAX_BACKOFF])
        status = poller.status()
        self.assertEqual((status.errors, status.consecutiveFailures), (8, 8))
        self.assertIn("cannot connect to pop.example:110", status.lastResult or "")
        self.assertEqual(refusing.attempts, 8)

        endpoint = self.network
        self.clock.advance(MAX_BACKOFF)
        self.network.flush()
        status = poller.status()
        self.assertEqual((status.lastResult, status.consecutiveFailures), ("ok", 0))
        self.assertEqual(status.nextPoll, self.clock.seconds() + 100)
        self.assertEqual(status.errors, 8)
        poller.stopService()

    def test_neverOverlaps(self) -> None:
        """
        While a poll runs, asking for another or reaching the next poll's
        time starts none; the next poll is scheduled from the end of this
        one.
        """
        self.intake.hold = True
        poller = self.poller(pollInterval=60.0)
        poller.startService()
        self.clock.advance(0)
        self.network.flush()
        second = poller.pollNow()
        self.clock.advance(600)
        self.network.flush()
        self.assertEqual(self.script.connections, 1)
        self.assertNoResult(second)

        while self.intake.waiting:
            self.intake.release()
            self.network.flush()
        self.successResultOf(second)
        self.assertEqual(self.script.connections, 1)
        self.assertEqual(poller.status().nextPoll, self.clock.seconds() + 60)
        poller.stopService()

    def test_stopDuringPoll(self) -> None:
        """
        Stopping the service drops the poll under way: deletions not
        confirmed by QUIT are undone, and the stop completes once intake
        has finished with the message it holds.
        """
        self.intake.hold = True
        poller = self.poller()
        poller.startService()
        self.clock.advance(0)
        self.network.flush()
        self.intake.release(1)
        self.network.flush()
        self.assertEqual(self.deleted(), ["uid-1"])

        stopped = poller.stopService()
        self.network.flush()
        self.assertNoResult(stopped)
        self.intake.release()
        self.successResultOf(stopped)

        self.assertEqual(len(self.mailbox.messages), 3)
        self.assertIn("ace-mail is stopping", poller.status().lastResult or "")
        self.assertIsNone(poller.status().nextPoll)
        self.assertEqual(self.script.connections, 1)

    def test_takeFailure(self) -> None:
        """
        When intake cannot take a message the poll fails, naming it, and
        says QUIT so that the messages taken before are deleted.
        """
        poller = self.poller()
        original = self.intake.take

        def take(account: AccountConfig, uidl: str, path: str) -> Any:
            if uidl == "uid-2":
                os.unlink(path)
                raise OSError(28, "No space left on device")
            return original(account, uidl, path)

        self.intake.take = take  # type: ignore[method-assign]
        self.poll(poller)

        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        status = poller.status()
        self.assertIn("intake could not take message uid-2", status.lastResult or "")
        self.assertEqual(self.script.verbs()[-1], "QUIT")
        self.assertNotIn("uid-2", self.deleted())
        self.assertEqual([uid for uid, _ in self.mailbox.messages], ["uid-2"])

    def test_pollerServices(self) -> None:
        """
        L{pollerServices} makes one poller, named after its account, for
        each account.
        """
        accounts = [makeAccount(name="a"), makeAccount(name="b")]
        services = pollerServices(self.clock, accounts, self.intake)
        self.assertEqual(
            [(type(s), s.name) for s in services],
            [(AccountPoller, "a"), (AccountPoller, "b")],
        )

    def test_statusIsImmutable(self) -> None:
        """
        A status is a snapshot that later polls do not change.
        """
        poller = self.poller()
        before = poller.status()
        self.poll(poller)
        self.assertEqual(before.messagesTaken, 0)
        self.assertEqual(poller.status().messagesTaken, 3)
        self.assertEqual(before.account, "acme-pop")
