"""
Tests for the leases of L{ace_mail.accounts.AccountPoller}: with several
nodes on one store, one node at a time polls an account, and another takes
it over when that node dies.
"""

from __future__ import annotations

from typing import Any

import psycopg
from twisted.logger import capturedLogs, formatEvent
from zope.interface.verify import verifyObject

from ace_mail.accounts import AccountPoller
from ace_mail.accounts._lease import RELEASE_TIMEOUT
from ace_mail.store import ILeases
from tests.pop3fakes import (
    FakeLeases,
    LeaseTable,
    MemoryNetwork,
    ServerScript,
    makeAccount,
)
from tests.test_accounts_poller import PollerTestCase

LEASE = "account:acme-pop"


class LeaseTests(PollerTestCase):
    """
    An account polled by a node that holds its lease, of 60 seconds,
    renewed every 15.
    """

    def setUp(self) -> None:
        super().setUp()
        self.table = LeaseTable(self.clock)
        self.leases = FakeLeases(self.table, "node-a")

    def leasedPoller(
        self,
        leases: FakeLeases | None = None,
        network: MemoryNetwork | None = None,
        **changes: Any,
    ) -> AccountPoller:
        return AccountPoller(
            self.clock,
            makeAccount(**changes),
            self.intake,
            endpointFactory=(network or self.network).endpointFor,
            leases=leases or self.leases,
            leaseSeconds=60.0,
        )

    def advance(self, seconds: float) -> None:
        """
        Let C{seconds} pass, a second at a time, moving every byte there is.
        """
        for _ in range(int(seconds)):
            self.clock.advance(1)
            self.network.flush()

    def test_fakeProvidesILeases(self) -> None:
        """
        The fake store of leases has what L{ILeases} asks of a store.
        """
        self.assertTrue(verifyObject(ILeases, self.leases))

    def test_takesLeaseThenPolls(self) -> None:
        """
        The poller asks for the lease when it starts and connects only once
        the store says this node holds it, at once; the status names this
        node.
        """
        self.leases.hang = True
        poller = self.leasedPoller()
        poller.startService()
        self.advance(10)
        self.assertEqual(self.script.connections, 0)
        self.assertIn("waiting for the store", poller.status().lease or "")

        self.leases.unanswered[0].callback(True)
        self.network.flush()
        self.assertEqual(self.script.connections, 1)
        self.assertAllTaken(poller)
        self.assertEqual(poller.status().lease, "held by this node, node-a")
        self.assertEqual(poller.status().nextPoll, self.clock.seconds() + 60)
        self.leases.hang = False
        self.leases.unanswered.clear()
        poller.stopService()

    def test_renewsEveryQuarter(self) -> None:
        """
        The lease is renewed every quarter of its time, so that it never
        runs out while the node lives, and polls keep their interval.
        """
        poller = self.leasedPoller(pollInterval=60.0)
        poller.startService()
        self.advance(121)
        holds = [t for t, node, what, name in self.table.calls if what == "hold"]
        self.assertEqual(holds, [0, 15, 30, 45, 60, 75, 90, 105, 120])
        self.assertEqual(self.table.holders[LEASE], ("node-a", 180))
        self.assertEqual(self.script.connections, 3)
        poller.stopService()

    def test_noPollWithoutLease(self) -> None:
        """
        While another node holds the lease, the poller never connects, not
        even when asked to poll now, and its status says so.
        """
        self.table.holders[LEASE] = ("node-b", 10_000)
        poller = self.leasedPoller(pollInterval=10.0)
        poller.startService()
        self.advance(300)
        self.successResultOf(poller.pollNow())
        self.network.flush()

        self.assertEqual(self.script.connections, 0)
        status = poller.status()
        self.assertEqual(status.lease, "held by another node")
        self.assertIsNone(status.nextPoll)
        self.assertIsNone(status.lastPoll)
        poller.stopService()

    def test_oneNodeAtATime(self) -> None:
        """
        Of two nodes started together on one store, only the one that took
        the lease first polls; the other waits.
        """
        otherScript = ServerScript()
        otherNetwork = MemoryNetwork(self.clock, self.mailbox, otherScript)
        first = self.leasedPoller(pollInterval=10.0)
        second = self.leasedPoller(
            FakeLeases(self.table, "node-b"), otherNetwork, pollInterval=10.0
        )
        first.startService()
        second.startService()
        self.network.flush()
        self.advance(100)
        otherNetwork.flush()

        self.assertEqual(self.script.connections, 11)
        self.assertEqual(otherScript.connections, 0)
        self.assertEqual(second.status().lease, "held by another node")
        first.stopService()
        second.stopService()

    def test_takeoverAfterExpiry(self) -> None:
        """
        When the node that holds the lease stops renewing it, another node
        takes the account over once the lease has run out, no earlier, and
        no later than a quarter of the lease time after.
        """
        otherScript = ServerScript()
        otherNetwork = MemoryNetwork(self.clock, self.mailbox, otherScript)
        first = self.leasedPoller(pollInterval=10.0)
        second = self.leasedPoller(
            FakeLeases(self.table, "node-b"), otherNetwork, pollInterval=10.0
        )
        first.startService()
        self.advance(1)
        second.startService()
        self.advance(20)
        self.assertEqual(self.intake.contents.keys(), {"uid-1", "uid-2", "uid-3"})

        self.leases.hang = True
        expiry = self.table.holders[LEASE][1]
        self.mailbox.messages.append(("uid-4", b"Subject: four\n\nlate\n"))
        while otherScript.connections == 0 and self.clock.seconds() < 1000:
            self.advance(1)
            otherNetwork.flush()
        takenOver = self.clock.seconds()

        self.assertGreaterEqual(takenOver, expiry)
        self.assertLessEqual(takenOver, expiry + 15)
        self.assertIn("uid-4", self.intake.contents)
        self.assertEqual(second.status().lease, "held by this node, node-b")
        self.assertEqual(
            first.status().lease, "store unreachable: no answer within 15 seconds"
        )
        connections = self.script.connections
        self.advance(100)
        self.assertEqual(self.script.connections, connections)
        second.stopService()

    def test_lostMidPollAborts(self) -> None:
        """
        When a renewal finds that another node took the lease, the poll
        under way stops, its deletions are undone, and the log and the
        status say why.
        """
        self.intake.hold = True
        poller = self.leasedPoller()
        poller.startService()
        self.network.flush()
        self.intake.release(1)
        self.network.flush()
        self.assertEqual(self.deleted(), ["uid-1"])

        self.table.holders[LEASE] = ("node-b", 10_000)
        with capturedLogs() as events:
            self.advance(15)
        self.intake.release()
        self.network.flush()

        status = poller.status()
        self.assertFalse(status.polling)
        self.assertIn("lost the account's lease", status.lastResult or "")
        self.assertEqual(status.lease, "held by another node")
        self.assertIsNone(status.nextPoll)
        self.assertEqual(len(self.mailbox.messages), 3)
        self.assertEqual(self.script.connections, 1)
        logged = [formatEvent(e) for e in events]
        self.assertIn(
            "acme-pop: lease lost (held by another node); the poll under way stops",
            logged,
        )
        poller.stopService()

    def test_unansweredRenewalAbortsBeforeExpiry(self) -> None:
        """
        A renewal that the store does not answer within a quarter of the
        lease time counts as lost: the poll under way stops long before the
        store could hand the lease to another node.
        """
        self.intake.hold = True
        poller = self.leasedPoller()
        poller.startService()
        self.network.flush()
        self.assertTrue(poller.status().polling)
        lastRenewal = self.clock.seconds()

        self.leases.hang = True
        self.advance(30)
        self.intake.release()
        self.network.flush()

        status = poller.status()
        self.assertFalse(status.polling)
        self.assertLess(status.lastPoll or 0, lastRenewal + 60)
        self.assertIn("no answer within 15 seconds", status.lastResult or "")
        self.assertEqual(self.deleted(), [])

    def test_storeFailurePausesAndResumes(self) -> None:
        """
        While the store fails every call, the account is not polled and its
        status says the store is unreachable; once the store answers again,
        the next renewal takes the lease and the poll follows at once.
        """
        poller = self.leasedPoller(pollInterval=30.0)
        poller.startService()
        self.network.flush()
        self.assertEqual(self.script.connections, 1)

        self.leases.down = psycopg.OperationalError(
            'connection failed: connection to server at "127.0.0.1", port 5432'
            " failed: Connection refused\n\tIs the server running on that host?"
        )
        self.mailbox.messages.append(("uid-4", b"Subject: four\n\nlate\n"))
        with capturedLogs() as events:
            self.advance(300)
        self.assertEqual(self.script.connections, 1)
        self.assertEqual(
            poller.status().lease,
            'store unreachable: connection failed: connection to server at "127.0.0.1",'
            " port 5432 failed: Connection refused",
        )
        warnings = [
            formatEvent(e) for e in events if "no polls until" in formatEvent(e)
        ]
        self.assertEqual(len(warnings), 1)

        self.leases.down = None
        back = self.clock.seconds()
        while self.script.connections == 1 and self.clock.seconds() < back + 60:
            self.advance(1)
        self.assertLessEqual(self.clock.seconds(), back + 15)
        self.assertIn("uid-4", self.intake.contents)
        self.assertEqual(poller.status().lease, "held by this node, node-a")
        poller.stopService()

    def test_storeBugLogged(self) -> None:
        """
        A renewal that fails for another reason than an unreachable store
        loses the lease all the same, and is logged as the bug it is.
        """
        self.leases.down = TypeError("holdLease() got an unexpected argument")
        poller = self.leasedPoller()
        poller.startService()
        self.advance(60)
        self.assertEqual(self.script.connections, 0)
        self.assertEqual(
            poller.status().lease,
            "store unreachable: holdLease() got an unexpected argument",
        )
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 5)
        poller.stopService()

    def test_releaseOnStop(self) -> None:
        """
        Stopping the service gives the lease up, so that another node may
        take the account at once.
        """
        poller = self.leasedPoller()
        poller.startService()
        self.network.flush()
        self.assertEqual(self.table.holder(LEASE), "node-a")

        self.successResultOf(poller.stopService())
        self.assertIsNone(self.table.holder(LEASE))
        self.assertEqual(self.table.calls[-1][1:], ("node-a", "release", LEASE))
        self.advance(60)
        holds = [call for call in self.table.calls if call[2] == "hold"]
        self.assertEqual(len(holds), 1)

    def test_stopWithStoreDown(self) -> None:
        """
        When the store does not answer, stopping still ends, within a
        quarter of the lease time plus L{RELEASE_TIMEOUT}, with a warning.
        """
        poller = self.leasedPoller()
        poller.startService()
        self.network.flush()
        self.advance(14)
        self.leases.hang = True
        self.advance(1)

        with capturedLogs() as events:
            stopped = poller.stopService()
            self.assertNoResult(stopped)
            self.advance(15 + RELEASE_TIMEOUT)
        self.successResultOf(stopped)
        self.assertIn(
            "account:acme-pop: cannot give the lease up (no answer within 5 "
            "seconds); it runs out by itself within 60 seconds",
            [formatEvent(e) for e in events],
        )

    def test_noReleaseOfAnotherNodesLease(self) -> None:
        """
        A node that never held the lease does not ask the store to give it
        up when it stops.
        """
        self.table.holders[LEASE] = ("node-b", 10_000)
        poller = self.leasedPoller()
        poller.startService()
        self.successResultOf(poller.stopService())
        self.assertEqual([call[2] for call in self.table.calls], ["hold"])
        self.assertEqual(self.table.holder(LEASE), "node-b")

    def test_withoutLeases(self) -> None:
        """
        A poller given no store of leases polls on its own, and its status
        mentions no lease.
        """
        poller = self.poller()
        poller.startService()
        self.clock.advance(0)
        self.network.flush()
        self.assertEqual(self.script.connections, 1)
        self.assertIsNone(poller.status().lease)
        poller.stopService()
