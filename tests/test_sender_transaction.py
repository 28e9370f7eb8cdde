"""
Tests for one mail transaction: PIPELINING, SIZE and the content.
"""

from __future__ import annotations

from typing import BinaryIO

from twisted.trial.unittest import SynchronousTestCase

from ace_mail.envelope import BytesSource, Envelope, Reply
from ace_mail.sender import Route

from .fakesmtp import Script, SenderHarness


class TransactionTests(SenderHarness, SynchronousTestCase):
    """
    One server and what it receives.
    """

    def oneServer(self, **script: object) -> tuple[Route, Script]:
        self.makeSender()
        server, made = self.network.add("one", **script)
        return Route("outgoing", (server,)), made

    def test_pipelined(self) -> None:
        """
        When the server offers PIPELINING, MAIL FROM and every RCPT TO go out
        before the reply to MAIL FROM comes, and then DATA.
        """
        route, script = self.oneServer(replies={"MAIL": [None]})
        sending = self.send(route, recipients=("a@example.net", "b@example.net"))

        self.assertNoResult(sending)
        self.assertEqual(script.verbs(), ["EHLO", "MAIL", "RCPT", "RCPT"])
        self.assertNotIn("DATA", script.verbs())

    def test_pipelinedOrder(self) -> None:
        """
        With PIPELINING, each reply goes with its command, in order.
        """
        route, script = self.oneServer(
            rcptReplies={
                "a@example.net": "550 5.1.1 no a",
                "c@example.net": "450 4.2.1 not c",
            }
        )
        outcome = self.successResultOf(
            self.send(
                route, recipients=("a@example.net", "b@example.net", "c@example.net")
            )
        )

        self.assertEqual(outcome.accepted, ("b@example.net",))
        self.assertEqual(
            outcome.refused,
            {
                "a@example.net": Reply(550, "5.1.1 no a"),
                "c@example.net": Reply(450, "4.2.1 not c"),
            },
        )

    def test_notPipelined(self) -> None:
        """
        Without PIPELINING, each command waits for the reply to the one
        before.
        """
        route, script = self.oneServer(extensions=[], replies={"MAIL": [None]})
        sending = self.send(route, recipients=("a@example.net", "b@example.net"))

        self.assertNoResult(sending)
        self.assertEqual(script.verbs(), ["EHLO", "MAIL"])

    def test_notPipelinedMailRefused(self) -> None:
        """
        Without PIPELINING, a refused MAIL FROM is followed by no RCPT TO.
        """
        route, script = self.oneServer(
            extensions=[], replies={"MAIL": ["553 5.1.8 bad sender"]}
        )
        outcome = self.successResultOf(self.send(route))

        self.assertEqual(
            outcome.refused, {"to@example.net": Reply(553, "5.1.8 bad sender")}
        )
        self.assertEqual(script.verbs(), ["EHLO", "MAIL", "RSET"])

    def test_sizeDeclared(self) -> None:
        """
        When the server offers SIZE, MAIL FROM declares the message's size.
        """
        route, script = self.oneServer(extensions=["SIZE 1000"])
        self.successResultOf(self.send(route, message=b"x" * 100))
        self.assertEqual(script.commands[1], "MAIL FROM:<from@example.com> SIZE=100")

    def test_noSizeWithoutExtension(self) -> None:
        """
        When the server does not offer SIZE, MAIL FROM has no SIZE.
        """
        route, script = self.oneServer(extensions=[])
        self.successResultOf(self.send(route))
        self.assertEqual(script.commands[1], "MAIL FROM:<from@example.com>")

    def test_overSizeLimit(self) -> None:
        """
        A message over the server's declared limit is refused for good
        without being offered.
        """
        route, script = self.oneServer(extensions=["SIZE 1000"])
        outcome = self.successResultOf(self.send(route, message=b"x" * 1001))

        refusal = outcome.refused["to@example.net"]
        self.assertEqual(refusal.code, 552)
        self.assertIn("1001 bytes", refusal.text)
        self.assertNotIn("MAIL", script.verbs())

    def test_contentEncoded(self) -> None:
        """
        The content arrives dot-stuffed with CRLF line endings, whatever its
        size, and the server reads back the message with CRLF endings.
        """
        route, script = self.oneServer()
        body = b"".join(b".line %d\n" % n for n in range(20000))
        self.successResultOf(self.send(route, message=body))

        self.assertEqual(script.messages[0].data, body.replace(b"\n", b"\r\n"))

    def test_nullSender(self) -> None:
        """
        A bounce goes out with the null sender.
        """
        route, script = self.oneServer()
        envelope = Envelope("", ("to@example.net",))
        sending = self.sender.send(route, envelope, BytesSource(b"x\r\n"), "Q1")
        self.network.flush()

        self.successResultOf(sending)
        self.assertEqual(script.commands[1], "MAIL FROM:<> SIZE=3")

    def test_dataAnsweredWithSuccess(self) -> None:
        """
        A server that answers DATA with a 2xx instead of 354 has not taken
        the message: the recipients are deferred, not delivered.
        """
        route, script = self.oneServer(replies={"DATA": ["250 2.0.0 sure"]})
        outcome = self.successResultOf(self.send(route))

        self.assertEqual(outcome.accepted, ())
        self.assertTrue(outcome.refused["to@example.net"].isTemporary)

    def test_unreadableMessage(self) -> None:
        """
        A message that cannot be read fails the send with the error, and the
        connection it was on is closed rather than reused.
        """
        route, script = self.oneServer()

        class Unreadable:
            size = 10

            def open(self) -> BinaryIO:
                raise OSError("gone")

        envelope = Envelope("from@example.com", ("to@example.net",))
        sending = self.sender.send(route, envelope, Unreadable(), "Q1")
        self.network.flush()

        self.failureResultOf(sending, OSError)
        [status] = self.sender.serverStatus()
        self.assertEqual(status.openConnections, 0)
