"""
Tests for L{ace_mail.queue}: scheduling, backoff, bounces and restarts.
"""

from __future__ import annotations

import email
from typing import Any, Callable

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from ace_mail.envelope import Envelope, MessageSource, Outcome, Reply
from ace_mail.queue import Queue
from ace_mail.spool import Spool

from .test_spool import runNow

START = 1_700_000_000.0
MESSAGE = b"From: agent@example.com\r\nSubject: hello\r\n\r\nHello.\r\n"
ENVELOPE = Envelope("agent@example.com", ["a@example.net"])
OK = Reply(250, "2.0.0 queued as X")
LATER = Reply(451, "4.3.0 try again later")
NO = Reply(550, "5.1.1 no such user")


@frozen
class Call:
    """
    One delivery the queue asked for.
    """

    envelope: Envelope
    data: bytes
    queueId: str
    result: Deferred[Outcome]

    def succeed(self) -> None:
        self.result.callback(Outcome("s1", OK, accepted=self.envelope.recipients))

    def refuse(self, reply: Reply) -> None:
        refused = dict.fromkeys(self.envelope.recipients, reply)
        self.result.callback(Outcome("s1", reply, refused=refused))


class FakeDeliver:
    """
    A deliver function that records each call and its message bytes.
    """

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def __call__(
        self, envelope: Envelope, source: MessageSource, queueId: str
    ) -> Deferred[Outcome]:
        with source.open() as stream:
            data = stream.read()
        call = Call(envelope, data, queueId, Deferred())
        self.calls.append(call)
        return call.result


class QueueTestsMixin:
    """
    A queue over a spool in a temporary directory, driven by a L{Clock}.
    """

    mktemp: Callable[[], str]
    addCleanup: Callable[..., None]
    successResultOf: Callable[[Deferred[Any]], Any]

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.directory = self.mktemp()
        self.deliver = FakeDeliver()
        self.queue = self.startQueue()

    def startQueue(self, **kwargs: Any) -> Queue:
        spool = Spool.open(self.directory, runNow)
        queue = Queue(
            self.clock, spool, self.deliver, hostname="mail.example.com", **kwargs
        )
        queue.startService()
        self.addCleanup(lambda: queue.running and queue.stopService())
        return queue

    def restart(self, **kwargs: Any) -> Queue:
        self.successResultOf(self.queue.stopService())
        self.queue = self.startQueue(**kwargs)
        return self.queue

    def enqueue(self, envelope: Envelope = ENVELOPE, data: bytes = MESSAGE) -> str:
        queueId: str = self.successResultOf(self.queue.enqueue(envelope, data))
        return queueId


class DeliveryTests(QueueTestsMixin, SynchronousTestCase):
    """
    Messages are delivered once due, within the concurrency bound.
    """

    def test_deliveredAtOnceAndRemoved(self) -> None:
        """
        An enqueued message is handed to deliver at once with its exact
        bytes, is listed as active meanwhile, and is gone once delivered,
        also after a restart.
        """
        queueId = self.enqueue()
        [call] = self.deliver.calls
        self.assertEqual(
            (call.envelope, call.data, call.queueId), (ENVELOPE, MESSAGE, queueId)
        )
        entry = self.queue.get(queueId)
        assert entry is not None
        self.assertEqual((entry.state, entry.size), ("active", len(MESSAGE)))
        call.succeed()
        self.assertIsNone(self.queue.get(queueId))
        self.assertEqual(self.restart().list(), [])

    def test_noRecipients(self) -> None:
        """
        An envelope without recipients is refused with L{ValueError}.
        """
        self.assertRaises(ValueError, self.queue.enqueue, Envelope("a@b", []), MESSAGE)

    def test_signerAppliedFirst(self) -> None:
        """
        With a signer, the signed message is spooled and delivered.
        """
        self.queue = self.restart(signer=lambda data: b"DKIM-Signature: x\r\n" + data)
        queueId = self.enqueue()
        self.assertEqual(self.deliver.calls[0].data, b"DKIM-Signature: x\r\n" + MESSAGE)
        self.assertEqual(self.queue.get(queueId).size, len(MESSAGE) + 19)  # type: ignore[union-attr]

    def test_concurrencyBound(self) -> None:
        """
        At most C{concurrency} deliveries run at once; the next due message
        starts when one ends.
        """
        self.queue = self.restart(concurrency=3)
        ids = [self.enqueue() for _ in range(5)]
        self.assertEqual([c.queueId for c in self.deliver.calls], ids[:3])
        self.deliver.calls[1].succeed()
        self.assertEqual([c.queueId for c in self.deliver.calls], ids[:4])
        self.deliver.calls[0].refuse(LATER)
        self.assertEqual([c.queueId for c in self.deliver.calls], ids)
        states = {e.queueId: e.state for e in self.queue.list()}
        self.assertEqual(states[ids[0]], "deferred")
        self.assertEqual(states[ids[4]], "active")

    def test_deliverErrorIsTemporary(self) -> None:
        """
        A deliver function that fails is logged and treated as a temporary
        failure.
        """
        queueId = self.enqueue()
        self.deliver.calls[0].result.errback(RuntimeError("bug"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        entry = self.queue.get(queueId)
        assert entry is not None
        self.assertEqual((entry.state, entry.attempts), ("deferred", 1))
        self.assertIn("bug", entry.lastError)

    def test_queueIdInEveryLine(self) -> None:
        """
        The log lines about a message, from acceptance to removal, all carry
        its queue id, and the attempt names the server and the reply.
        """
        with capturedLogs() as events:
            queueId = self.enqueue()
            self.deliver.calls[0].succeed()
        mine = [e for e in events if e.get("queueId") == queueId]
        self.assertEqual(len(mine), len(events))
        formats = " | ".join(e["log_format"] for e in mine)
        for word in ("accepted", "attempt", "delivered", "removed"):
            self.assertIn(word, formats)
        attempt = next(e for e in mine if "attempt" in e["log_format"])
        self.assertEqual((attempt["server"], attempt["reply"]), ("s1", OK))

    def test_twoLinesForADelivery(self) -> None:
        """
        A message delivered at the first attempt costs two lines: one when
        it is accepted, one when it is delivered and removed.  An attempt
        that leaves recipients behind has lines of its own.
        """
        with capturedLogs() as events:
            self.enqueue()
            self.deliver.calls[0].succeed()
        self.assertEqual(len(events), 2, [formatEvent(e) for e in events])

        with capturedLogs() as events:
            self.enqueue()
            self.deliver.calls[1].refuse(LATER)
        formats = [e["log_format"] for e in events]
        self.assertTrue(any("ended with" in f for f in formats), formats)
        self.assertTrue(any("deferred" in f for f in formats), formats)


class RetryTests(QueueTestsMixin, SynchronousTestCase):
    """
    Temporary failures back off; the lifetime ends in a bounce.
    """

    def test_backoffSchedule(self) -> None:
        """
        The delays after successive temporary failures are 300, 600, 1200,
        2400 and then 4000 seconds, and no attempt comes early.
        """
        queueId = self.enqueue()
        for n, delay in enumerate([300, 600, 1200, 2400, 4000, 4000], 1):
            self.deliver.calls[-1].refuse(LATER)
            entry = self.queue.get(queueId)
            assert entry is not None
            self.assertEqual(entry.nextAttempt - self.clock.seconds(), delay)
            self.assertEqual((entry.state, entry.attempts), ("deferred", n))
            self.assertEqual(entry.lastError, str(LATER))
            self.clock.advance(delay - 1)
            self.assertEqual(len(self.deliver.calls), n)
            self.clock.advance(1)
            self.assertEqual(len(self.deliver.calls), n + 1)

    def test_retryStateSurvivesRestart(self) -> None:
        """
        After a restart, a deferred message keeps its attempts and waits
        for its next attempt time.
        """
        queueId = self.enqueue()
        self.deliver.calls[0].refuse(LATER)
        self.restart()
        self.assertEqual(len(self.deliver.calls), 1)
        entry = self.queue.get(queueId)
        assert entry is not None
        self.assertEqual((entry.attempts, entry.lastError), (1, str(LATER)))
        self.clock.advance(300)
        self.assertEqual(len(self.deliver.calls), 2)

    def test_inFlightRedeliveredAfterRestart(self) -> None:
        """
        A message whose delivery was under way at the stop is delivered
        again, at once, after the restart; its late outcome is ignored.
        """
        queueId = self.enqueue()
        first = self.deliver.calls[0]
        self.restart()
        first.succeed()
        self.assertEqual([c.queueId for c in self.deliver.calls], [queueId, queueId])

    def test_lifetimeEndsInBounce(self) -> None:
        """
        A temporary failure after the lifetime bounces the message to its
        sender with "delivery time expired", and removes it.
        """
        self.queue = self.restart(lifetime=1000.0)
        queueId = self.enqueue()
        self.deliver.calls[0].refuse(LATER)
        self.clock.advance(300)
        self.deliver.calls[1].refuse(LATER)
        self.clock.advance(600)
        self.deliver.calls[2].refuse(LATER)
        self.assertEqual(len(self.deliver.calls), 3)
        self.assertIsNotNone(self.queue.get(queueId))
        self.clock.advance(1200)
        self.deliver.calls[3].refuse(LATER)
        self.assertIsNone(self.queue.get(queueId))
        bounce = self.deliver.calls[4]
        self.assertEqual(bounce.envelope, Envelope("", ["agent@example.com"]))
        report = email.message_from_bytes(bounce.data)
        self.assertIn("delivery time expired", report["Subject"])
        self.assertIn(queueId.encode(), bounce.data)

    def test_retryAndDelete(self) -> None:
        """
        L{Queue.retry} makes a deferred message due now; L{Queue.delete}
        drops it for good; both answer C{False} for an unknown id.
        """
        queueId = self.enqueue()
        self.deliver.calls[0].refuse(LATER)
        self.assertTrue(self.queue.retry(queueId))
        self.assertEqual(len(self.deliver.calls), 2)
        self.deliver.calls[1].refuse(LATER)
        self.assertTrue(self.queue.delete(queueId))
        self.assertEqual(self.queue.list(), [])
        self.clock.advance(10_000)
        self.assertEqual(len(self.deliver.calls), 2)
        self.assertFalse(self.queue.retry(queueId))
        self.assertFalse(self.queue.delete(queueId))
        self.assertEqual(self.restart().list(), [])


class BounceTests(QueueTestsMixin, SynchronousTestCase):
    """
    Permanent failures bounce, once, and a bounce never bounces.
    """

    def test_permanentFailureBounces(self) -> None:
        """
        A 5xx refusal removes the message and enqueues a DSN with the null
        sender to the envelope sender, on the same route.
        """
        envelope = Envelope("agent@example.com", ["a@example.net"], route="proxy")
        queueId = self.enqueue(envelope)
        self.deliver.calls[0].refuse(NO)
        self.assertIsNone(self.queue.get(queueId))
        bounce = self.deliver.calls[1]
        self.assertEqual(bounce.envelope, Envelope("", ["agent@example.com"], "proxy"))
        report = email.message_from_bytes(bounce.data)
        self.assertEqual(report.get_content_type(), "multipart/report")
        self.assertIn(b"Final-Recipient: rfc822; a@example.net", bounce.data)
        self.assertIn(b"Subject: hello", bounce.data)
        self.assertNotIn(b"Hello.", bounce.data)

    def test_partialDelivery(self) -> None:
        """
        When one recipient is accepted, one deferred and one refused, the
        refused one bounces, and only the deferred one is tried again,
        before and after a restart.
        """
        envelope = Envelope("agent@example.com", ["a@x.net", "b@x.net", "c@x.net"])
        queueId = self.enqueue(envelope)
        refused = {"b@x.net": LATER, "c@x.net": NO}
        self.deliver.calls[0].result.callback(
            Outcome("s1", OK, accepted=["a@x.net"], refused=refused)
        )
        bounce = self.deliver.calls[1]
        self.assertIn(b"rfc822; c@x.net", bounce.data)
        self.assertNotIn(b"rfc822; b@x.net", bounce.data)
        entry = self.queue.get(queueId)
        assert entry is not None
        self.assertEqual((entry.recipients, entry.attempts), (("b@x.net",), 1))
        self.restart()
        self.clock.advance(300)
        retried = [c for c in self.deliver.calls if c.queueId == queueId]
        self.assertEqual(len(retried), 2)
        self.assertEqual(retried[1].envelope.recipients, ("b@x.net",))
        self.assertEqual(retried[1].data, MESSAGE)

    def test_bounceNeverBounces(self) -> None:
        """
        A message with the null sender that fails permanently is dropped
        without a bounce.
        """
        queueId = self.enqueue(Envelope("", ["agent@example.com"]))
        with capturedLogs() as events:
            self.deliver.calls[0].refuse(NO)
        self.assertEqual(len(self.deliver.calls), 1)
        self.assertIsNone(self.queue.get(queueId))
        self.assertTrue(any("dropped" in e["log_format"] for e in events))

    def test_bounceDurableBeforeRemoval(self) -> None:
        """
        A message is removed only after its bounce is on disk: with the
        spool's commit held, the original stays active and in the spool.
        """
        held: list[Callable[[], Any]] = []
        results: list[Deferred[Any]] = []

        def hold(work: Callable[[], Any]) -> Deferred[Any]:
            held.append(work)
            results.append(Deferred())
            return results[-1]

        queueId = self.enqueue()
        self.queue._spool._runInThread = hold
        self.deliver.calls[0].refuse(NO)
        entry = self.queue.get(queueId)
        assert entry is not None
        self.assertEqual(entry.state, "active")
        self.assertEqual(len(self.deliver.calls), 1)
        results[0].callback(held[0]())
        self.assertIsNone(self.queue.get(queueId))
        self.assertEqual(len(self.deliver.calls), 2)
