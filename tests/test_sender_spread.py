"""
Tests for L{ace_mail.sender.Sender}: spreading over servers, the set-aside
of failed servers, and the logs.
"""

from __future__ import annotations

from twisted.logger import capturedLogs, formatEvent

from ace_mail.envelope import Reply

from .test_sender import SenderTestCase


class SpreadTests(SenderTestCase):
    """
    Deliveries spread over the healthy servers, and a failed server is tried
    last for a while.
    """

    def test_spreadOverTwoServers(self) -> None:
        """
        Successive deliveries alternate between two healthy servers.
        """
        route, one, two = self.twoServers()
        for n in range(10):
            self.deliver(route, queueId=f"Q{n}")

        self.assertEqual((len(one.messages), len(two.messages)), (5, 5))

    def test_failedServerTriedLast(self) -> None:
        """
        A server that failed is tried after the others until the set-aside
        time has passed; then it takes its share again.
        """
        route, one, two = self.twoServers(refuse=True)
        self.deliver(route)
        one.refuse = False

        for n in range(4):
            self.advance(10)
            self.assertEqual(
                self.deliver(route, queueId=f"Q{n}").server, "two two.example:25"
            )
        self.assertEqual(one.connections, 1)

        self.advance(20)
        servers = {self.deliver(route, queueId=f"R{n}").server for n in range(2)}
        self.assertEqual(servers, {"one one.example:25", "two two.example:25"})
        self.assertTrue(all(status.healthy for status in self.sender.serverStatus()))

    def test_allSetAsideStillTried(self) -> None:
        """
        When every server is set aside, they are all still tried.
        """
        route, one, two = self.twoServers(refuse=True)
        two.refuse = True
        self.deliver(route)
        self.assertFalse(any(status.healthy for status in self.sender.serverStatus()))
        one.refuse = two.refuse = False

        outcome = self.deliver(route)
        self.assertEqual(outcome.accepted, ("to@example.net",))

    def test_setAsideStatus(self) -> None:
        """
        L{Sender.serverStatus} tells until when a failed server is set aside.
        """
        self.clock.advance(100)
        route, one, two = self.twoServers(refuse=True)
        self.deliver(route)

        statuses = {status.name: status for status in self.sender.serverStatus()}
        self.assertEqual(statuses["one"].setAsideUntil, 160)
        self.assertEqual(statuses["one"].describe, "one one.example:25")
        self.assertIsNone(statuses["two"].setAsideUntil)
        self.assertEqual(statuses["two"].idleConnections, 1)


class LogTests(SenderTestCase):
    """
    Every log line about a message names its queue id, the server and the
    reply.
    """

    def test_deliveredAndFailedOver(self) -> None:
        """
        A failover logs the failure of the first server, with the queue id,
        the server and the reply; the delivery by the second is the
        queue's to log, with the outcome.
        """
        route, one, two = self.twoServers(replies={"MAIL": ["451 4.3.0 later"]})
        with capturedLogs() as events:
            outcome = self.deliver(route, queueId="4Fx9")

        self.assertEqual(
            (outcome.server, outcome.reply),
            ("two two.example:25", Reply(250, "2.0.0 queued")),
        )
        lines = [formatEvent(event) for event in events]
        self.assertTrue(all(event["queueId"] == "4Fx9" for event in events), lines)
        self.assertIn(
            "4Fx9: one one.example:25 failed and is tried last for 60s: 451 4.3.0 later",
            lines,
        )
        self.assertIn(
            "4Fx9: to@example.net not delivered via one one.example:25: 451 4.3.0 later",
            lines,
        )
        self.assertEqual(
            [e for e in events if "delivered to" in e["log_format"]], [], lines
        )

    def test_refusedAndDeferred(self) -> None:
        """
        Recipients refused for good and for now are logged with their
        replies.
        """
        route, one, two = self.twoServers(
            rcptReplies={
                "b@example.net": "550 5.1.1 unknown",
                "c@example.net": "452 4.2.2 full",
            }
        )
        with capturedLogs() as events:
            self.deliver(
                route, recipients=("a@example.net", "b@example.net", "c@example.net")
            )

        lines = [formatEvent(event) for event in events]
        self.assertIn(
            "Q1: b@example.net refused by one one.example:25: 550 5.1.1 unknown", lines
        )
        self.assertIn(
            "Q1: c@example.net deferred by one one.example:25: 452 4.2.2 full", lines
        )
