"""
Tests for the sender's connection pools: reuse, the bound, idle
connections and stopping.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ace_mail.envelope import Outcome
from ace_mail.sender import Route

from .fakesmtp import Script, SenderHarness


class PoolTests(SenderHarness, SynchronousTestCase):
    """
    One server and the connections to it.
    """

    def oneServer(self, **kwargs: object) -> tuple[Route, Script]:
        """
        Make a sender (with C{kwargs}) and a route of one server.
        """
        self.makeSender(**kwargs)
        server, script = self.network.add("one")
        return Route("outgoing", (server,)), script

    def test_connectionReused(self) -> None:
        """
        Two messages go over one connection, with RSET between them.
        """
        route, script = self.oneServer()
        self.successResultOf(self.send(route, queueId="Q1"))
        self.successResultOf(self.send(route, queueId="Q2"))

        self.assertEqual(script.connections, 1)
        self.assertEqual(len(script.messages), 2)
        self.assertEqual(
            script.verbs(),
            ["EHLO", "MAIL", "RCPT", "DATA", "RSET", "MAIL", "RCPT", "DATA", "RSET"],
        )

    def test_connectionsBounded(self) -> None:
        """
        No more than C{connectionsPerServer} connections are opened; the other
        messages wait for one and then use it.
        """
        route, script = self.oneServer(connectionsPerServer=2)
        sendings = [self.send(route, queueId=f"Q{n}", flush=False) for n in range(5)]
        self.assertEqual(script.connections, 2)
        self.network.flush()

        outcomes = [self.successResultOf(sending) for sending in sendings]
        self.assertEqual([o.accepted for o in outcomes], [("to@example.net",)] * 5)
        self.assertEqual(script.connections, 2)
        [status] = self.sender.serverStatus()
        self.assertEqual((status.openConnections, status.idleConnections), (2, 2))

    def test_waitersServedInOrder(self) -> None:
        """
        Messages that wait for a connection get one in the order they came.
        """
        route, script = self.oneServer(connectionsPerServer=1)
        script.replies["."] = [None]
        first = self.send(route, queueId="Q0")
        later = [
            self.send(route, queueId=f"Q{n}", recipients=(f"r{n}@example.net",))
            for n in range(1, 4)
        ]
        self.assertNoResult(first)

        self.advance(600)
        self.successResultOf(first)
        self.assertEqual(
            [m.recipients for m in script.messages],
            [["r1@example.net"], ["r2@example.net"], ["r3@example.net"]],
        )
        for sending in later:
            self.successResultOf(sending)

    def test_idleConnectionQuits(self) -> None:
        """
        A connection that stays idle for C{idleTimeout} seconds says QUIT and
        closes.
        """
        route, script = self.oneServer(idleTimeout=10)
        self.successResultOf(self.send(route))
        self.advance(9)
        self.assertNotIn("QUIT", script.verbs())

        self.advance(1)
        self.assertEqual(script.verbs()[-1], "QUIT")
        [status] = self.sender.serverStatus()
        self.assertEqual(status.openConnections, 0)

    def test_failedResetDiscards(self) -> None:
        """
        A connection whose RSET fails is closed, and the next message opens
        a new one.
        """
        route, script = self.oneServer()
        script.replies["RSET"] = ["500 5.5.1 what"]
        self.successResultOf(self.send(route))
        [status] = self.sender.serverStatus()
        self.assertEqual(status.openConnections, 0)

        self.successResultOf(self.send(route))
        self.assertEqual(script.connections, 2)

    def test_serverClosedIdleConnection(self) -> None:
        """
        When the server closes an idle connection, the next message opens a
        new one, and the server is not set aside.
        """
        route, script = self.oneServer()
        self.successResultOf(self.send(route))
        script.servers[0].say("421 4.4.2 idle too long")
        script.servers[0].transport.loseConnection()
        self.network.flush()

        outcome = self.successResultOf(self.send(route))
        self.assertEqual(outcome.accepted, ("to@example.net",))
        self.assertEqual(script.connections, 2)
        self.assertTrue(self.sender.serverStatus()[0].healthy)

    def test_closedWhileMailSent(self) -> None:
        """
        When a reused connection turns out to be closed only once MAIL FROM
        is on its way, the message goes over a new connection to the same
        server, which is not set aside.
        """
        for reply in ["421 4.4.2 idle too long", "close"]:
            route, script = self.oneServer()
            self.successResultOf(self.send(route))
            script.replies["MAIL"] = [reply]

            outcome = self.successResultOf(self.send(route))
            self.assertEqual(outcome.accepted, ("to@example.net",))
            self.assertEqual(script.connections, 2)
            self.assertTrue(self.sender.serverStatus()[0].healthy)

    def test_stop(self) -> None:
        """
        Stopping says QUIT on idle connections and closes busy ones; the
        message on a busy one and later ones are deferred.
        """
        route, script = self.oneServer(connectionsPerServer=2)
        self.successResultOf(self.send(route))
        script.replies["."] = [None]
        busy = self.send(route, queueId="Q2")
        self.send(route, queueId="Q3")

        stopping = self.sender.stop()
        self.network.flush()
        self.successResultOf(stopping)
        self.assertIn("QUIT", script.verbs())
        self.assertTrue(
            self.successResultOf(busy).refused["to@example.net"].isTemporary
        )

        later: Outcome = self.successResultOf(self.send(route, queueId="Q4"))
        self.assertEqual(later.accepted, ())
        self.assertTrue(later.refused["to@example.net"].isTemporary)
