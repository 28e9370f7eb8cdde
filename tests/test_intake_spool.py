"""
Tests for what intake needs of the queue and the spool: enqueueing under a
queue id chosen beforehand, and knowing after a restart whether that was
done.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from ace_mail.envelope import Envelope
from ace_mail.spool import Spool, newQueueId
from tests.intakeharness import Harness, runNow

ENVELOPE = Envelope("support@acme.example", ["ann@customer.example"])


class ChosenQueueIdTests(SynchronousTestCase):
    """
    L{Queue.enqueue} takes a queue id, and L{Queue.knows} remembers it.
    """

    def setUp(self) -> None:
        self.harness = Harness(self.mktemp())
        self.addCleanup(lambda: self.harness.stop())

    def test_enqueueUnderChosenId(self) -> None:
        """
        A message enqueued with a queue id gets that id.
        """
        queueId = newQueueId()
        queue = self.harness.queue
        self.assertEqual(
            self.successResultOf(queue.enqueue(ENVELOPE, b"x", queueId)), queueId
        )
        entry = queue.get(queueId)
        assert entry is not None
        self.assertEqual(entry.recipients, ("ann@customer.example",))

    def test_idInUseRefused(self) -> None:
        """
        A queue id of a message still in the spool, or one that is not a
        queue id, is refused with L{ValueError}.
        """
        queueId = newQueueId()
        queue = self.harness.queue
        self.successResultOf(queue.enqueue(ENVELOPE, b"x", queueId))
        self.failureResultOf(queue.enqueue(ENVELOPE, b"y", queueId), ValueError)
        self.failureResultOf(queue.enqueue(ENVELOPE, b"y", "../x"), ValueError)

    def test_knowsLiveAndDelivered(self) -> None:
        """
        After a restart the queue knows the ids of the messages still in it
        and of those delivered before, and not others.
        """
        queue = self.harness.queue
        delivered, waiting = newQueueId(), newQueueId()
        self.successResultOf(queue.enqueue(ENVELOPE, b"x", delivered))
        self.harness.clock.advance(2)
        self.assertEqual(len(self.harness.delivered), 1)
        self.successResultOf(queue.enqueue(ENVELOPE, b"y", waiting))
        self.harness.restart()
        queue = self.harness.queue
        self.assertTrue(queue.knows(delivered))
        self.assertTrue(queue.knows(waiting))
        self.assertFalse(queue.knows(newQueueId()))


class SeenBeforeRecoveryTests(SynchronousTestCase):
    """
    A spool cannot say what it has seen before it is recovered.
    """

    def test_refused(self) -> None:
        """
        L{Spool.seen} raises L{RuntimeError} before L{Spool.recover}.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        spool = Spool.open(os.path.join(directory, "queue"), runNow)
        self.addCleanup(spool.close)
        self.assertRaises(RuntimeError, spool.seen, newQueueId())
        spool.recover()
        self.assertFalse(spool.seen(newQueueId()))
