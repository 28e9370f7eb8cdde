"""
Tests for L{ace_mail.sender._protocol.SMTPConnection} against hostile
servers: replies sent before their commands, and replies without end.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from ace_mail.envelope import BytesSource, Reply
from ace_mail.sender._protocol import MAX_REPLY_SIZE, SessionFailure, SMTPConnection


class EarlyReplyTests(SynchronousTestCase):
    """
    A reply that was on the wire before its command was sent fails the
    connection instead of answering the command.
    """

    def setUp(self) -> None:
        self.transport = StringTransport()
        self.connection = SMTPConnection(Clock(), "smtp.example:25", 300)
        self.connection.makeConnection(self.transport)

    def test_replyInTheGreetingsRead(self) -> None:
        """
        A 250 that came with the greeting is not taken as the answer to the
        EHLO sent on seeing the greeting.
        """
        answers = []

        def greeted(reply: Reply) -> None:
            answers.append(self.connection.command("EHLO me.example", 300))

        self.connection.greeting.addCallback(greeted)
        self.connection.dataReceived(b"220 hi\r\n250 hello\r\n")
        failure = self.failureResultOf(answers[0], SessionFailure)
        self.assertEqual(
            failure.value.reply,
            Reply(421, "smtp.example:25 replied to EHLO before it was sent"),
        )
        self.assertTrue(self.transport.disconnecting)

    def test_finalReplyWithThe354(self) -> None:
        """
        A 250 that came in the same read as the 354, before the content was
        sent, does not count as the message accepted.
        """
        self.connection.dataReceived(b"220 hi\r\n")
        results = []

        def go(reply: Reply) -> None:
            sent = self.connection.sendContent(BytesSource(b"a\r\n"), 60, 60)
            results.append(sent)

        self.connection.command("DATA", 300).addCallback(go)
        self.connection.dataReceived(b"354 go\r\n250 queued\r\n")
        failure = self.failureResultOf(results[0], SessionFailure)
        self.assertEqual(failure.value.reply.code, 421)
        self.assertIn('replied to the final "." before it was sent', str(failure.value))

    def test_pipelinedRepliesInOneRead(self) -> None:
        """
        Replies to pipelined commands that all come in one read are taken.
        """
        self.connection.dataReceived(b"220 hi\r\n")
        mail, rcpt = self.connection.pipeline(
            [("MAIL FROM:<a@b.example>", 300, ""), ("RCPT TO:<c@d.example>", 300, "")]
        )
        self.connection.dataReceived(b"250 sender ok\r\n250 recipient ok\r\n")
        self.assertEqual(self.successResultOf(mail), Reply(250, "sender ok"))
        self.assertEqual(self.successResultOf(rcpt), Reply(250, "recipient ok"))


class EndlessReplyTests(SynchronousTestCase):
    """
    A reply whose continuation lines never end is given up on once it is
    longer than L{MAX_REPLY_SIZE}.
    """

    def test_endlessContinuation(self) -> None:
        """
        Continuation lines beyond L{MAX_REPLY_SIZE} fail the greeting with
        421 and drop the connection, holding no more of them.
        """
        transport = StringTransport()
        connection = SMTPConnection(Clock(), "smtp.example:25", 300)
        connection.makeConnection(transport)
        line = b"220-" + b"y" * 70 + b"\r\n"
        connection.dataReceived(line * (MAX_REPLY_SIZE // 75))
        self.assertNoResult(connection.greeting)

        connection.dataReceived(line * 100)
        failure = self.failureResultOf(connection.greeting, SessionFailure)
        self.assertEqual(
            failure.value.reply, Reply(421, "overlong reply from smtp.example:25")
        )
        self.assertTrue(transport.disconnecting)

    def test_longReplyTaken(self) -> None:
        """
        A reply of many lines within the limit is taken whole.
        """
        connection = SMTPConnection(Clock(), "smtp.example:25", 300)
        connection.makeConnection(StringTransport())
        connection.dataReceived(b"220-hello\r\n" * 500 + b"220 ready\r\n")
        reply = self.successResultOf(connection.greeting)
        self.assertEqual(reply.text.count("\n"), 500)
