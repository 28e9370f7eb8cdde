"""
Tests for L{ace_mail.proxy._scratch.ScratchFiles}: the files that messages
are received into are emptied and used again, and a message never carries
bytes of the one before it.
"""

from __future__ import annotations

import os

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from ace_mail.proxy._scratch import ScratchFiles

from .proxyfakes import Client, FakeQueue, makeFactory


class ScratchFilesTests(SynchronousTestCase):
    """
    Files are taken, given back emptied, and kept up to a bound.
    """

    def setUp(self) -> None:
        self.scratch = ScratchFiles(self.mktemp(), keep=2)
        os.makedirs(self.scratch.directory or "")
        self.addCleanup(self.scratch.close)

    def test_givenBackEmptyAndTakenAgain(self) -> None:
        """
        A file given back is emptied, and is the next one taken; nothing of
        it is left in the directory.
        """
        first = self.scratch.take()
        first.write(b"a message of some length\r\n")
        self.scratch.give(first)
        again = self.scratch.take()
        self.assertIs(again, first)
        self.assertEqual(os.fstat(again.fileno()).st_size, 0)
        self.assertEqual(again.tell(), 0)
        self.assertEqual(os.listdir(self.scratch.directory or ""), [])
        again.close()

    def test_keptUpToTheBound(self) -> None:
        """
        Files given back beyond C{keep} are closed and not kept, however
        often they are given back; L{ScratchFiles.close} closes the ones
        kept.
        """
        files = [self.scratch.take() for _ in range(3)]
        for file in files:
            self.scratch.give(file)
        self.assertEqual(self.scratch.kept, 2)
        self.assertEqual([f.closed for f in files], [False, False, True])
        self.scratch.give(files[2])
        self.assertEqual(self.scratch.kept, 2)
        self.scratch.close()
        self.assertEqual(self.scratch.kept, 0)
        self.assertTrue(all(f.closed for f in files))


class ReuseTests(SynchronousTestCase):
    """
    The proxy receives each message into a scratch file of its factory.
    """

    def test_secondMessageHasNothingOfTheFirst(self) -> None:
        """
        Two messages in turn use one file, and the shorter second message is
        queued exactly as sent, with no bytes of the longer first one.
        """
        queue = FakeQueue()
        factory = makeFactory(queue=queue)
        first = b"Subject: first\r\n\r\n" + b"long line of the first message\r\n" * 50
        second = b"Subject: second\r\n\r\nshort\r\n"
        for message in (first, second):
            client = Client(factory)
            client.transaction("customer@example.net")
            self.assertTrue(client.message(message).startswith("250 2.0.0 "))
            client.protocol.connectionLost(Failure(ConnectionDone()))
            self.assertEqual(factory.scratch.kept, 1)

        self.assertEqual([m for _, m in queue.messages], [first, second])
        factory.stopFactory()
        self.assertEqual(factory.scratch.kept, 0)

    def test_givenBackWhenTheClientLeavesInData(self) -> None:
        """
        A client that leaves in the middle of DATA gives its file back.
        """
        factory = makeFactory()
        client = Client(factory)
        client.transaction("customer@example.net")
        client.command("DATA")
        client.send(b"Subject: cut short\r\n\r\nThe text")
        client.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(factory.scratch.kept, 1)
