"""
Tests for L{ace_mail.proxy}: a large message is queued from the file it was
received into, never read into memory whole.
"""

from __future__ import annotations

import os

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from ace_mail import _spoolformat
from ace_mail.envelope import Envelope
from ace_mail.rewrite import rewriteReply
from ace_mail.spool import MessageParts, Range

from .proxyfakes import HOST, OPEN_ID, REPLY, Client, FakeQueue, contact, makeFactory

LINE = b"x" * 76 + b"\r\n"
BODY_LINES = 40_000
HEADER = REPLY.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
MESSAGE = HEADER + LINE * BODY_LINES


class PartsQueue(FakeQueue):
    """
    A queue that notes, for each copy, how many reads of files were made
    before it was handed over, and then reads it as the spool would.
    """

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[int] = []
        self.readBefore: list[int] = []

    def enqueue(self, envelope: Envelope, message: MessageParts) -> Deferred[str]:
        self.readBefore.append(len(self.reads))
        self.given.append(message)
        self.messages.append((envelope, message.read()))
        return succeed(f"q{len(self.messages) - 1}")


class LargeMessageTests(SynchronousTestCase):
    """
    The copies of a received message are its header block in memory and
    its body in the received file.
    """

    def setUp(self) -> None:
        self.queue = PartsQueue()
        factory = makeFactory(queue=self.queue, maxMessageSize=20 << 20)
        self.client = Client(factory)
        realPread = os.pread

        def pread(fd: int, size: int, offset: int) -> bytes:
            data = realPread(fd, size, offset)
            self.queue.reads.append(len(data))
            return data

        self.patch(os, "pread", pread)
        self.patch(_spoolformat, "CHUNK", 1 << 16)

    def test_passThroughReferencesTheFile(self) -> None:
        """
        A pass-through message of 3 MiB is handed to the queue as its
        header block and a range of the file for its body; no more than
        64 KiB of it was read to find the header block's end.
        """
        self.client.transaction("someone@example.net")
        self.assertEqual(
            self.client.message(MESSAGE), "250 2.0.0 message accepted as q0"
        )
        [parts] = self.queue.given
        header, body = parts.pieces
        self.assertEqual(header, HEADER)
        assert isinstance(body, Range)
        self.assertEqual(body.length, len(MESSAGE) - len(HEADER))
        before = self.queue.reads[: self.queue.readBefore[0]]
        self.assertLessEqual(sum(before), 1 << 16)
        self.assertEqual(self.queue.messages[0][1], MESSAGE)

    def test_replyRewrittenOverTheFile(self) -> None:
        """
        A reply of 3 MiB to a contact and a pass-through copy are handed to
        the queue as header blocks over one range of the file, read
        beforehand only in chunks, for the Message-ID's digest; the
        customer's copy is what L{rewriteReply} makes of the message.
        """
        self.client.transaction(f"{OPEN_ID}@{HOST}", "someone@example.net")
        self.assertEqual(
            self.client.message(MESSAGE), "250 2.0.0 message accepted as q0, q1"
        )
        (header, body), (original, same) = (p.pieces for p in self.queue.given)
        assert isinstance(header, bytes) and isinstance(body, Range)
        self.assertLess(len(header), 1024)
        self.assertEqual((original, same), (HEADER, body))
        before = self.queue.reads[: self.queue.readBefore[0]]
        self.assertLessEqual(max(before), 1 << 16)
        self.assertGreaterEqual(sum(before), len(MESSAGE))
        expected = rewriteReply(
            MESSAGE,
            contact(OPEN_ID),
            self.client.factory.entrances["default"],
            hide=["agent@agents.example.org", "someone@example.net"],
        )
        self.assertEqual(self.queue.messages[0][1], expected)
        self.assertEqual(self.queue.messages[1][1], MESSAGE)
