"""
Tests for L{ace_mail.proxy} against clients that trickle bytes without ever
ending a line (slowloris): only a line's end restarts the timeout.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from .proxyfakes import HOST, OPEN_ID, Client, makeFactory


class TrickleTests(SynchronousTestCase):
    """
    A byte every few seconds does not keep a connection open.
    """

    def test_commandTrickleTimesOut(self) -> None:
        """
        One byte every 10 s of a command that never ends is closed with 421
        4.4.2 once the idle timeout has passed since the greeting.
        """
        factory = makeFactory(idleTimeout=15)
        client = Client(factory)
        client.send(b"N")
        factory.clock.advance(10)
        client.send(b"O")
        factory.clock.advance(4)
        self.assertFalse(client.transport.disconnecting)

        factory.clock.advance(1)
        self.assertEqual(
            client.replies(),
            [
                "421 4.4.2 no input between commands for 15 seconds; "
                "closing the connection"
            ],
        )
        self.assertTrue(client.transport.disconnecting)

    def test_dataTrickleTimesOut(self) -> None:
        """
        Inside DATA, bytes that never end a line do not restart the data
        timeout either.
        """
        factory = makeFactory(dataTimeout=15)
        client = Client(factory)
        client.transaction(f"{OPEN_ID}@{HOST}")
        client.command("DATA")
        for byte in b"Subject":
            client.send(bytes([byte]))
            factory.clock.advance(2)
        factory.clock.advance(1)
        self.assertEqual(
            client.replies(),
            ["421 4.4.2 no input inside DATA for 15 seconds; closing the connection"],
        )
        self.assertEqual(factory.queue.messages, [])

    def test_lineEndSplitAcrossReads(self) -> None:
        """
        A CRLF whose CR and LF come in two reads is a line's end, and the
        timeout starts again from it.
        """
        factory = makeFactory(idleTimeout=15)
        client = Client(factory)
        factory.clock.advance(10)
        client.send(b"NOOP\r")
        factory.clock.advance(4)
        self.assertEqual(client.send(b"\n"), ["250 2.0.0 OK"])
        factory.clock.advance(14)
        self.assertFalse(client.transport.disconnecting)
        factory.clock.advance(1)
        self.assertTrue(client.transport.disconnecting)
