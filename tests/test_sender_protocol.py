"""
Tests for L{ace_mail.sender._protocol.SMTPConnection}: replies, timeouts
and streaming the content.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from ace_mail.envelope import BytesSource, Reply
from ace_mail.sender._protocol import CHUNK_SIZE, SessionFailure, SMTPConnection


class PausingTransport(StringTransport):
    """
    A transport that pauses its producer after every write, and records
    TCP_NODELAY.
    """

    noDelay = False
    writes = 0

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.noDelay = enabled

    def write(self, data: bytes) -> None:
        super().write(data)
        self.writes += 1
        if self.producer is not None:
            self.producer.pauseProducing()


class ConnectionTests(SynchronousTestCase):
    """
    An L{SMTPConnection} on a L{PausingTransport}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.transport = PausingTransport()
        self.connection = SMTPConnection(self.clock, "smtp.example:25", 300)
        self.connection.makeConnection(self.transport)

    def receive(self, *lines: str) -> None:
        self.connection.dataReceived(
            b"".join(line.encode() + b"\r\n" for line in lines)
        )

    def failureReply(self, deferred: Deferred[Reply]) -> Reply:
        failure = self.failureResultOf(deferred, SessionFailure)
        reply: Reply = failure.value.reply
        return reply

    def test_noDelay(self) -> None:
        """
        The connection sets TCP_NODELAY.
        """
        self.assertTrue(self.transport.noDelay)

    def test_multilineReply(self) -> None:
        """
        The lines of a multi-line reply are joined with newlines.
        """
        self.receive("220-hello", "220-there", "220 ready")
        self.assertEqual(
            self.successResultOf(self.connection.greeting),
            Reply(220, "hello\nthere\nready"),
        )

    def test_greetingTimeout(self) -> None:
        """
        A greeting that does not come in time fails with a sentence naming
        the server, and the connection is dropped.
        """
        self.clock.advance(300)
        self.assertEqual(
            self.failureReply(self.connection.greeting),
            Reply(
                421,
                "timed out after 300s waiting for the reply to the greeting from smtp.example:25",
            ),
        )
        self.assertTrue(self.transport.disconnected)

    def test_eachReplyHasItsTimeout(self) -> None:
        """
        Each pipelined reply's timeout starts when the reply before it came.
        """
        self.receive("220 ready")
        first, second = self.connection.pipeline([("NOOP", 10, ""), ("RSET", 5, "")])
        self.clock.advance(9)
        self.receive("250 ok")
        self.clock.advance(4)
        self.assertNoResult(second)

        self.clock.advance(1)
        self.assertEqual(self.successResultOf(first), Reply(250, "ok"))
        self.assertIn("to RSET", self.failureReply(second).text)

    def test_malformedReply(self) -> None:
        """
        A line that is not a reply fails the connection.
        """
        self.receive("hello")
        self.assertEqual(self.failureReply(self.connection.greeting).code, 421)
        self.assertFalse(self.connection.isOpen)

    def test_unsolicitedReplyCloses(self) -> None:
        """
        A reply to nothing, such as a 421 on an idle connection, closes the
        connection.
        """
        self.receive("220 ready", "421 4.4.2 idle")
        self.assertFalse(self.connection.isOpen)
        self.assertTrue(self.transport.disconnecting)

    def test_timeoutAfterCloseAborts(self) -> None:
        """
        A reply still awaited when the connection is closed times out as
        usual and then aborts the connection, whose close may never finish
        while its last bytes cannot be sent; so the connection is not held
        for ever.
        """
        self.receive("220 ready")
        reply = self.connection.command("NOOP", 300)
        self.connection.close()
        self.assertFalse(self.transport.disconnected)
        self.clock.advance(300)
        self.assertEqual(self.failureReply(reply).code, 421)
        self.assertTrue(self.transport.disconnected)

    def test_commandOnClosedConnection(self) -> None:
        """
        A command on a closed connection fails at once.
        """
        self.receive("220 ready")
        self.connection.close()
        self.assertTrue(
            self.failureResultOf(
                self.connection.command("NOOP", 1), SessionFailure
            ).value.closedByPeer
        )

    def test_contentFollowsBackpressure(self) -> None:
        """
        The content goes out chunk by chunk, one each time the transport
        asks for more, and the final reply is awaited after the last.
        """
        self.receive("220 ready")
        self.transport.clear()
        message = BytesSource(b"x" * (CHUNK_SIZE * 2 + 1))
        sending = self.connection.sendContent(message, 180, 600)
        self.assertEqual(self.transport.writes, 1)

        self.transport.producer.resumeProducing()
        self.transport.producer.resumeProducing()
        self.assertEqual(self.transport.writes, 3)
        self.transport.producer.resumeProducing()
        self.assertIsNone(self.transport.producer)
        self.assertTrue(self.transport.value().endswith(b"x\r\n.\r\n"))

        self.receive("250 queued")
        self.assertEqual(self.successResultOf(sending), Reply(250, "queued"))

    def test_contentStalls(self) -> None:
        """
        When the transport takes no more content for the transfer timeout,
        the transfer fails.
        """
        self.receive("220 ready")
        sending = self.connection.sendContent(
            BytesSource(b"x" * CHUNK_SIZE * 2), 180, 600
        )
        self.clock.advance(180)
        self.assertIn("sending the message", self.failureReply(sending).text)
        self.assertTrue(self.transport.disconnected)

    def test_connectionLostDuringContent(self) -> None:
        """
        A connection lost during the transfer fails it.
        """
        self.receive("220 ready")
        sending = self.connection.sendContent(
            BytesSource(b"x" * CHUNK_SIZE * 2), 180, 600
        )
        self.transport.loseConnection()
        self.connection.connectionLost()
        self.assertTrue(
            self.failureResultOf(sending, SessionFailure).value.closedByPeer
        )
