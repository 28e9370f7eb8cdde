"""
Tests for L{ace_mail.sender.Sender}: delivery, failover, spreading, the
set-aside of failed servers, outcomes and logs.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ace_mail.envelope import Outcome, Reply
from ace_mail.sender import Route, Timeouts

from .fakesmtp import Script, SenderHarness


class SenderTestCase(SenderHarness, SynchronousTestCase):
    """
    A sender and two fake servers, C{one} and C{two}, on the route
    C{outgoing}.
    """

    def setUp(self) -> None:
        self.makeSender()

    def twoServers(self, **one: object) -> tuple[Route, Script, Script]:
        """
        @param one: The script of the first server, as keywords.
        @return: The route, and the scripts of servers one and two.
        """
        serverOne, scriptOne = self.network.add("one", **one)
        serverTwo, scriptTwo = self.network.add("two")
        return Route("outgoing", (serverOne, serverTwo)), scriptOne, scriptTwo

    def deliver(self, route: Route, **kwargs: object) -> Outcome:
        """
        Send a message and return its outcome, which must be there.
        """
        return self.successResultOf(self.send(route, **kwargs))  # type: ignore[arg-type]


class ExportTests(SynchronousTestCase):
    """
    The public names of L{ace_mail.sender}.
    """

    def test_exports(self) -> None:
        """
        The package exports exactly its public names, each defined in it.
        """
        import ace_mail.sender

        self.assertEqual(
            sorted(ace_mail.sender.__all__),
            ["DataEncoder", "Route", "Sender", "Server", "ServerStatus", "Timeouts"],
        )
        for name in ace_mail.sender.__all__:
            module = getattr(ace_mail.sender, name).__module__
            self.assertTrue(module.startswith("ace_mail.sender._"), name)


class DeliveryTests(SenderTestCase):
    """
    Delivering over a healthy server.
    """

    def test_delivered(self) -> None:
        """
        A message goes to the first server with its envelope, and the outcome
        names the server, the final reply and the recipients.
        """
        route, one, two = self.twoServers()
        outcome = self.deliver(
            route, recipients=("a@example.net", "b@example.net"), message=b"hi\n"
        )

        self.assertEqual(
            outcome,
            Outcome(
                "one one.example:25",
                Reply(250, "2.0.0 queued"),
                ("a@example.net", "b@example.net"),
            ),
        )
        [received] = one.messages
        self.assertEqual(received.sender, "from@example.com")
        self.assertEqual(received.recipients, ["a@example.net", "b@example.net"])
        self.assertEqual(received.data, b"hi\r\n")
        self.assertEqual(two.connections, 0)

    def test_noServers(self) -> None:
        """
        A route without servers gives a temporary outcome.
        """
        outcome = self.deliver(Route("empty", ()))
        self.assertEqual(outcome.reply.code, 421)
        self.assertTrue(outcome.refused["to@example.net"].isTemporary)


class FailoverTests(SenderTestCase):
    """
    Trying the next server within one delivery.
    """

    def assertFailedOver(self, route: Route, one: Script, two: Script) -> None:
        """
        Send a message, which must arrive at server two, with server one set
        aside.
        """
        outcome = self.deliver(route)
        self.assertEqual(outcome.server, "two two.example:25")
        self.assertEqual(outcome.accepted, ("to@example.net",))
        self.assertEqual(len(two.messages), 1)
        self.assertEqual(one.messages, [])

    def assertSetAside(self, name: str, setAside: bool = True) -> None:
        """
        The server of that name is set aside, or not.
        """
        [status] = [s for s in self.sender.serverStatus() if s.name == name]
        self.assertEqual(not status.healthy, setAside)

    def test_connectRefused(self) -> None:
        """
        A refused connection fails over to the next server and sets the
        first aside.
        """
        route, one, two = self.twoServers(refuse=True)
        self.assertFailedOver(route, one, two)
        self.assertSetAside("one")
        self.assertSetAside("two", False)

    def test_connectTimeout(self) -> None:
        """
        A connection that is not made within the connect timeout fails over.
        """
        route, one, two = self.twoServers(hang=True)
        sending = self.send(route)
        self.assertNoResult(sending)

        self.advance(Timeouts().connect)
        outcome = self.successResultOf(sending)
        self.assertEqual(outcome.server, "two two.example:25")
        self.assertSetAside("one")

    def test_replyTimeoutAtEachStage(self) -> None:
        """
        A reply that does not come within its timeout, at the greeting, EHLO,
        MAIL FROM, RCPT TO, DATA or the final ".", fails over.
        """
        timeouts = Timeouts()
        stages = {
            "EHLO": timeouts.helo,
            "MAIL": timeouts.mail,
            "RCPT": timeouts.rcpt,
            "DATA": timeouts.dataInit,
            ".": timeouts.dataDone,
        }
        for verb, timeout in stages.items():
            self.makeSender()
            route, one, two = self.twoServers(replies={verb: [None]})
            sending = self.send(route)
            self.advance(timeout - 1)
            self.assertNoResult(sending)

            self.advance(1)
            outcome = self.successResultOf(sending)
            self.assertEqual(outcome.server, "two two.example:25", verb)
            self.assertEqual(outcome.accepted, ("to@example.net",), verb)
            self.assertSetAside("one")

    def test_greetingTimeout(self) -> None:
        """
        A server that connects but does not greet fails over after the HELO
        timeout.
        """
        route, one, two = self.twoServers(greeting="220-still thinking")
        sending = self.send(route)
        self.advance(Timeouts().helo)
        self.assertEqual(self.successResultOf(sending).server, "two two.example:25")

    def test_421AtEachStage(self) -> None:
        """
        A 421 at the greeting, EHLO, MAIL FROM, RCPT TO, DATA or the final
        "." fails over and sets the server aside.
        """
        for verb in ["greeting", "EHLO", "MAIL", "RCPT", "DATA", "."]:
            self.makeSender()
            if verb == "greeting":
                route, one, two = self.twoServers(greeting="421 4.3.2 busy")
            else:
                route, one, two = self.twoServers(replies={verb: ["421 4.3.2 busy"]})
            self.assertFailedOver(route, one, two)
            self.assertSetAside("one")

    def test_4xxAtEachStage(self) -> None:
        """
        Any other temporary reply, at the greeting, EHLO, MAIL FROM, RCPT TO,
        DATA or the final ".", fails over.
        """
        for verb in ["greeting", "EHLO", "MAIL", "RCPT", "DATA", "."]:
            self.makeSender()
            if verb == "greeting":
                route, one, two = self.twoServers(greeting="450 4.3.2 later")
            else:
                route, one, two = self.twoServers(replies={verb: ["451 4.3.0 later"]})
            self.assertFailedOver(route, one, two)
            self.assertSetAside("one", verb not in ("RCPT", "DATA", "."))

    def test_lostConnection(self) -> None:
        """
        A connection the server drops in the middle of a transaction fails
        over.
        """
        route, one, two = self.twoServers(replies={"DATA": ["close"]})
        self.assertFailedOver(route, one, two)
        self.assertSetAside("one")

    def test_5xxAtGreetingOrEhloFailsOver(self) -> None:
        """
        A permanent refusal of the connection or of both EHLO and HELO is a
        problem of the server, not the message: it fails over.
        """
        for replies in [{"EHLO": ["554 no"], "HELO": ["554 no"]}, {}]:
            self.makeSender()
            greeting = "220 hello" if replies else "554 5.7.1 go away"
            route, one, two = self.twoServers(replies=replies, greeting=greeting)
            self.assertFailedOver(route, one, two)

    def test_5xxAtMailIsFinal(self) -> None:
        """
        A permanent refusal of MAIL FROM refuses every recipient for good,
        without trying the next server.
        """
        route, one, two = self.twoServers(replies={"MAIL": ["550 5.7.1 no"]})
        outcome = self.deliver(route)

        self.assertEqual(outcome.reply, Reply(550, "5.7.1 no"))
        self.assertEqual(outcome.accepted, ())
        self.assertEqual(outcome.refused, {"to@example.net": Reply(550, "5.7.1 no")})
        self.assertEqual(two.connections, 0)

    def test_5xxAtDataOrEndIsFinal(self) -> None:
        """
        A permanent refusal of DATA or of the content refuses the accepted
        recipients for good, without trying the next server.
        """
        for verb in ["DATA", "."]:
            self.makeSender()
            route, one, two = self.twoServers(replies={verb: ["554 5.6.0 bad"]})
            outcome = self.deliver(route)

            self.assertEqual(outcome.server, "one one.example:25")
            self.assertEqual(
                outcome.refused, {"to@example.net": Reply(554, "5.6.0 bad")}
            )
            self.assertEqual(two.connections, 0)
            self.assertSetAside("one", False)

    def test_everyServerFailed(self) -> None:
        """
        When every server fails, the outcome carries the last failure and
        refuses the recipients for now.
        """
        route, one, two = self.twoServers(refuse=True)
        two.refuse = True
        outcome = self.deliver(route)

        refusal = Reply(421, "connection refused by two.example:25")
        self.assertEqual(
            outcome,
            Outcome("two two.example:25", refusal, (), {"to@example.net": refusal}),
        )

    def test_everyServerRefusedEhlo(self) -> None:
        """
        When every server refuses EHLO and HELO with a 5xx, the recipients
        are refused for now, not for good.
        """
        route, one, two = self.twoServers(greeting="554 5.7.1 go away")
        two.greeting = "554 5.7.1 go away"
        outcome = self.deliver(route)

        self.assertEqual(outcome.reply.code, 421)
        self.assertIn("554 5.7.1 go away", outcome.reply.text)
        self.assertTrue(outcome.refused["to@example.net"].isTemporary)


class RecipientTests(SenderTestCase):
    """
    Replies to RCPT TO are per recipient.
    """

    def test_mixedReplies(self) -> None:
        """
        The accepted recipients get the message; the others are refused,
        for good after a 5xx and for now after a 4xx, without failover.
        """
        route, one, two = self.twoServers(
            rcptReplies={
                "b@example.net": "550 5.1.1 unknown",
                "c@example.net": "452 4.2.2 full",
            }
        )
        outcome = self.deliver(
            route, recipients=("a@example.net", "b@example.net", "c@example.net")
        )

        self.assertEqual(outcome.accepted, ("a@example.net",))
        self.assertEqual(
            outcome.refused,
            {
                "b@example.net": Reply(550, "5.1.1 unknown"),
                "c@example.net": Reply(452, "4.2.2 full"),
            },
        )
        self.assertEqual(one.messages[0].recipients, ["a@example.net"])
        self.assertEqual(two.connections, 0)

    def test_noneAcceptedFailsOverWithTemporaryOnes(self) -> None:
        """
        If no recipient was accepted and some were refused for now, those
        go to the next server, and the ones refused for good do not.
        """
        route, one, two = self.twoServers(
            rcptReplies={
                "b@example.net": "550 5.1.1 unknown",
                "c@example.net": "451 4.7.1 greylisted",
            }
        )
        outcome = self.deliver(route, recipients=("b@example.net", "c@example.net"))

        self.assertEqual(outcome.server, "two two.example:25")
        self.assertEqual(outcome.accepted, ("c@example.net",))
        self.assertEqual(
            outcome.refused, {"b@example.net": Reply(550, "5.1.1 unknown")}
        )
        self.assertEqual(two.messages[0].recipients, ["c@example.net"])

    def test_allRefusedForGood(self) -> None:
        """
        If every recipient is refused for good, no DATA is sent and no other
        server is tried.
        """
        route, one, two = self.twoServers(
            rcptReplies={"to@example.net": "550 5.1.1 unknown"}
        )
        outcome = self.deliver(route)

        self.assertEqual(
            outcome.refused, {"to@example.net": Reply(550, "5.1.1 unknown")}
        )
        self.assertNotIn("DATA", one.verbs())
        self.assertEqual(two.connections, 0)
