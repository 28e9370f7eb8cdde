"""
Tests for L{ace_mail.webhook} and the webhook's outbox in the SQLite contact
store, with a fake HTTP agent on a L{Clock}.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from typing import Any

from attrs import define
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer
from zope.interface import implementer

from ace_mail.envelope import Envelope, Reply
from ace_mail.mime import FailedRecipient
from ace_mail.queue import Bounced, Queue
from ace_mail.spool import Spool
from ace_mail.store import (
    CONTACT_CREATED,
    MESSAGE_BOUNCED,
    Arrival,
    Contact,
    ContactStoreError,
    Plan,
    SQLiteContactStore,
    SQLiteWebhookOutbox,
)
from ace_mail.webhook import Notifier, bounceRecorder, openOutbox, signature
from tests.test_queue import FakeDeliver
from tests.test_spool import runNow

URL = "http://hooks.example/ace"
START = 1_800_000_000.0


class _Collector:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


@define
class _Response:
    """
    Just enough of an L{IResponse} for C{readBody}.
    """

    code: int
    body: bytes = b""
    phrase: bytes = b"Phrase"
    headers: Headers = Headers()
    length: int = 0

    def deliverBody(self, protocol: Any) -> None:
        protocol.dataReceived(self.body)
        protocol.connectionLost(Failure(ResponseDone()))


@define
class _Request:
    """
    One request the agent was asked to make, and its answer to give.
    """

    url: bytes
    headers: Headers
    body: bytes
    result: Deferred[_Response]

    def document(self) -> Any:
        return json.loads(self.body)

    def answer(self, code: int, body: bytes = b"") -> None:
        self.result.callback(_Response(code, body))

    def fail(self, reason: Exception) -> None:
        self.result.errback(reason)


@implementer(IAgent)
class FakeAgent:
    """
    An agent that records each request and leaves it to the test to answer.
    """

    def __init__(self) -> None:
        self.requests: list[_Request] = []

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[_Response]:
        assert method == b"POST" and headers is not None and bodyProducer is not None
        collector = _Collector()
        bodyProducer.startProducing(collector)
        result: Deferred[_Response] = Deferred()
        self.requests.append(_Request(uri, headers, collector.data, result))
        return result

    def open(self) -> list[_Request]:
        """
        @return: The requests not yet answered.
        """
        return [r for r in self.requests if not r.result.called]


def _show(contact: Contact) -> dict[str, Any]:
    return {"id": contact.id, "customer": contact.formattedCustomer()}


class NotifierTestsMixin:
    """
    A contact store with its outbox in a temporary file, and a notifier with
    a fake agent on a clock.
    """

    mktemp: Any
    addCleanup: Any
    successResultOf: Any

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.agent = FakeAgent()
        self.path = self.mktemp()
        self.open()

    def open(self, url: str | None = URL) -> None:
        self.store = SQLiteContactStore.open(self.path)
        self.addCleanup(self.store.close)
        self.outbox = openOutbox(self.path, url)
        self.addCleanup(self.outbox.close)

    def notifier(self, **kwargs: Any) -> Notifier:
        notifier = Notifier(
            self.clock,
            self.outbox,
            URL,
            showContact=_show,
            agent=self.agent,
            **kwargs,
        )
        notifier.startService()
        self.addCleanup(lambda: notifier.running and notifier.stopService())
        return notifier

    def contact(self, name: str) -> Contact:
        contact: Contact = self.successResultOf(
            self.store.create(
                entrance="default",
                customerAddress=f"{name}@customer.example",
                customerName=name.title(),
                subject=f"About {name}",
                messageId=None,
                references=(),
                externalId=None,
                now=self.clock.seconds(),
            )
        )
        return contact


class DeliveryTests(NotifierTestsMixin, SynchronousTestCase):
    """
    Notifications go out one at a time, in order, and each is retried until
    the receiver takes it.
    """

    def test_newContactsNotifiedInOrderOneAtATime(self) -> None:
        """
        Each new contact is POSTed as C{contact.created} with the contact as
        the API shows it; the next one is sent only once the receiver
        answered 2xx for the one before, and a taken one leaves the outbox.
        """
        contacts = [self.contact(name) for name in ("ann", "bob", "cem")]
        self.notifier()

        for contact in contacts:
            [request] = self.agent.open()
            self.assertEqual(request.url, URL.encode())
            document = request.document()
            self.assertEqual(document["event"], CONTACT_CREATED)
            self.assertEqual(document["contact"], _show(contact))
            self.assertEqual(document["time"], "2027-01-15T08:00:00Z")
            request.answer(204)

        self.assertEqual(self.agent.open(), [])
        self.assertEqual(self.outbox.pending(), 0)
        ids = {request.document()["id"] for request in self.agent.requests}
        self.assertEqual(len(ids), 3)

    def test_failureBlocksLaterOnesAndBacksOff(self) -> None:
        """
        A notification that fails is tried again after 5 seconds, doubled
        for each failure in a row up to 10 minutes; those behind it wait,
        and the first success resets the delay.
        """
        self.contact("ann")
        bob = self.contact("bob")
        self.notifier()
        delays = []
        for _ in range(10):
            [request] = self.agent.open()
            self.assertEqual(
                request.document()["contact"]["customer"],
                '"Ann" <ann@customer.example>',
            )
            request.fail(ConnectionRefusedError())
            [call] = self.clock.getDelayedCalls()
            delays.append(call.getTime() - self.clock.seconds())
            self.clock.advance(delays[-1] - 0.001)
            self.assertEqual(self.agent.open(), [])
            self.clock.advance(0.001)
        self.assertEqual(delays, [5, 10, 20, 40, 80, 160, 320, 600, 600, 600])

        [request] = self.agent.open()
        request.answer(200)
        [request] = self.agent.open()
        self.assertEqual(request.document()["contact"]["id"], bob.id)
        request.answer(500, b"database down")
        [call] = self.clock.getDelayedCalls()
        self.assertEqual(call.getTime() - self.clock.seconds(), 5)

    def test_non2xxIsRetried(self) -> None:
        """
        An answer outside 2xx is a failure: the same notification, with the
        same id, is sent again.
        """
        self.contact("ann")
        self.notifier()
        first = self.agent.open()[0]
        first.answer(400, b"bad")
        self.clock.advance(5)
        second = self.agent.open()[0]
        self.assertEqual(second.body, first.body)
        second.answer(201)
        self.assertEqual(self.outbox.pending(), 0)

    def test_timeout(self) -> None:
        """
        A receiver that does not answer within the timeout is given up on;
        the request is cancelled and tried again after the backoff.
        """
        self.contact("ann")
        self.notifier(timeout=10)
        first = self.agent.open()[0]
        self.clock.advance(9.9)
        self.assertFalse(first.result.called)
        self.clock.advance(0.1)
        self.assertTrue(first.result.called)
        self.assertEqual(self.agent.open(), [])
        self.clock.advance(5)
        self.assertEqual(len(self.agent.open()), 1)
        self.assertEqual(self.outbox.pending(), 1)

    def test_emptyOutboxPolled(self) -> None:
        """
        A contact made while the outbox is empty is sent at the next look,
        one poll interval later.
        """
        self.notifier(pollInterval=1)
        self.assertEqual(self.agent.requests, [])
        contact = self.contact("ann")
        self.clock.advance(1)
        [request] = self.agent.open()
        self.assertEqual(request.document()["contact"]["id"], contact.id)

    def test_signature(self) -> None:
        """
        With a secret, each request carries the HMAC-SHA256 of its body in
        the X-Ace-Mail-Signature header; without one it carries none.
        """
        self.contact("ann")
        self.contact("bob")
        notifier = self.notifier(secret="s3cret")
        request = self.agent.open()[0]
        expected = hmac.new(b"s3cret", request.body, hashlib.sha256).hexdigest()
        self.assertEqual(
            request.headers.getRawHeaders(b"X-Ace-Mail-Signature"),
            [f"sha256={expected}".encode()],
        )
        self.assertEqual(signature("s3cret", request.body), f"sha256={expected}")
        self.assertEqual(
            request.headers.getRawHeaders(b"Content-Type"), [b"application/json"]
        )
        notifier.stopService()
        self.notifier()
        unsigned = self.agent.open()[0]
        self.assertIsNone(unsigned.headers.getRawHeaders(b"X-Ace-Mail-Signature"))

    def test_stopAbandonsAttempt(self) -> None:
        """
        Stopping cancels the attempt under way and schedules nothing; the
        notification stays in the outbox.
        """
        self.contact("ann")
        notifier = self.notifier()
        request = self.agent.open()[0]
        notifier.stopService()
        self.assertTrue(request.result.called)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.outbox.pending(), 1)


class DurabilityTests(NotifierTestsMixin, SynchronousTestCase):
    """
    The outbox is in the contact store's file: what it holds survives a
    restart, and it is filled in the transaction that makes the contact.
    """

    def test_survivesRestart(self) -> None:
        """
        Notifications not taken before a stop are sent after the store is
        opened again from the same file, in the same order, with the same
        ids.
        """
        self.contact("ann")
        self.contact("bob")
        notifier = self.notifier()
        self.agent.open()[0].fail(ConnectionRefusedError())
        notifier.stopService()
        before = [request.document() for request in self.agent.requests]
        self.outbox.close()
        self.store.close()

        self.open()
        self.agent = FakeAgent()
        self.notifier()
        sent = []
        while self.agent.open():
            request = self.agent.open()[0]
            sent.append(request.document())
            request.answer(200)
        self.assertEqual(len(sent), 2)
        self.assertEqual(sent[0], before[0])
        self.assertEqual(
            [document["contact"]["customer"] for document in sent],
            ['"Ann" <ann@customer.example>', '"Bob" <bob@customer.example>'],
        )

    def test_intakeContactNotified(self) -> None:
        """
        A contact made by POP3 intake (in the store's arrival transaction)
        is notified like one made over the API.
        """
        arrival = Arrival(
            account="support",
            uidl="u1",
            digest="d" * 64,
            messageId="<m1@customer.example>",
            original="orig1",
            entrance="default",
            customerAddress="dee@customer.example",
            customerName="Dee",
            subject="Help",
            references=("<r0@customer.example>",),
            threadIds=(),
            tag=None,
            newContactId="a" * 20,
            received=START,
        )
        plan = Plan(None, 3, 86400.0, None, None, 0.0)
        self.successResultOf(self.store.recordArrival(arrival, plan))
        event = self.outbox.head()
        assert event is not None
        self.assertEqual(event.kind, CONTACT_CREATED)
        self.assertEqual(event.payload["id"], "a" * 20)
        self.assertEqual(event.payload["references"], ["<r0@customer.example>"])
        self.assertEqual(event.payload["messageId"], "<m1@customer.example>")

    def test_contactAndNotificationInOneTransaction(self) -> None:
        """
        A contact whose transaction is rolled back leaves no notification.
        """
        connection = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(connection.close)
        connection.execute("BEGIN")
        connection.execute(
            "INSERT INTO contact (id, entrance, customerAddress, customerName,"
            " subject, messageReferences, created) VALUES"
            " ('bbbbbbbbbbbbbbbbbbbb', 'default', 'x@y.example', '', '', '[]', 1)"
        )
        self.assertEqual(
            connection.execute("SELECT count(*) FROM webhookEvent").fetchone(), (1,)
        )
        connection.execute("ROLLBACK")
        self.assertEqual(self.outbox.pending(), 0)

    def test_noWebhookNoNotifications(self) -> None:
        """
        Opened without a webhook URL, the outbox drops what waited and new
        contacts add nothing to it.
        """
        self.contact("ann")
        self.outbox.close()
        self.store.close()
        self.open(url=None)
        self.assertEqual(self.outbox.pending(), 0)
        self.contact("bob")
        self.assertEqual(self.outbox.pending(), 0)

    def test_outboxNeedsMigratedStore(self) -> None:
        """
        The outbox of a file that is not a migrated contact store cannot be
        opened, with a sentence that names the file.
        """
        path = self.mktemp()
        error = self.assertRaises(ContactStoreError, SQLiteWebhookOutbox.open, path)
        self.assertIn(path, str(error))
        self.assertIn("open the contact store first", str(error))


NO = Reply(550, "5.1.1 no such user")


class BounceTests(NotifierTestsMixin, SynchronousTestCase):
    """
    Each bounce the queue makes is notified as C{message.bounced}.
    """

    def test_queueBounceNotified(self) -> None:
        """
        A message refused for good is bounced, and the bounce is in the
        outbox before the message leaves the queue; the notifier sends it
        with the queue ids, recipients and reply.
        """
        deliver = FakeDeliver()
        queue = Queue(
            self.clock,
            Spool.open(self.mktemp(), runNow),
            deliver,
            hostname="mail.example.com",
            onBounce=bounceRecorder(self.clock, self.outbox),
        )
        queue.startService()
        self.addCleanup(queue.stopService)
        envelope = Envelope("agent@example.com", ("gone@example.net",))
        message = b"From: agent@example.com\r\nSubject: hi\r\n\r\nHi.\r\n"
        queueId = self.successResultOf(queue.enqueue(envelope, message))
        deliver.calls[0].refuse(NO)

        [bounce] = queue.list()
        self.assertEqual(bounce.sender, "")
        self.notifier()
        [request] = self.agent.open()
        document = request.document()
        self.assertEqual(document["event"], MESSAGE_BOUNCED)
        self.assertEqual(
            document["bounce"],
            {
                "queueId": queueId,
                "bounceId": bounce.queueId,
                "from": "agent@example.com",
                "route": "outgoing",
                "recipients": ["gone@example.net"],
                "reply": "550 5.1.1 no such user",
                "expired": False,
                "failures": [
                    {
                        "recipient": "gone@example.net",
                        "reply": "550 5.1.1 no such user",
                        "server": "s1",
                    }
                ],
            },
        )

    def test_messageKeptUntilNotificationKept(self) -> None:
        """
        The queue keeps a bounced message until its C{onBounce} has fired,
        so that a crash before the notification is on disk bounces (and
        notifies) it again after the restart.
        """
        told: list[Bounced] = []
        waiting: Deferred[None] = Deferred()

        def onBounce(bounced: Bounced) -> Deferred[None]:
            told.append(bounced)
            return waiting

        deliver = FakeDeliver()
        queue = Queue(
            self.clock,
            Spool.open(self.mktemp(), runNow),
            deliver,
            hostname="mail.example.com",
            onBounce=onBounce,
        )
        queue.startService()
        self.addCleanup(queue.stopService)
        envelope = Envelope("agent@example.com", ("gone@example.net",))
        queueId = self.successResultOf(
            queue.enqueue(envelope, b"Subject: x\r\n\r\nx\r\n")
        )
        deliver.calls[0].refuse(NO)
        self.assertEqual([b.queueId for b in told], [queueId])
        self.assertEqual(
            told[0].failures, (FailedRecipient("gone@example.net", NO, "s1"),)
        )
        self.assertIsNotNone(queue.get(queueId))
        waiting.callback(None)
        self.assertIsNone(queue.get(queueId))

    def test_recorderKeepsOnDisk(self) -> None:
        """
        The bounce recorder's L{Deferred} fires once the notification is in
        the outbox, behind the ones before it.
        """
        self.contact("ann")
        record = bounceRecorder(self.clock, self.outbox)
        bounced = Bounced(
            "q1",
            Envelope("a@example.com", ("b@example.net",)),
            (FailedRecipient("b@example.net", NO, ""),),
            "q2",
            True,
        )
        self.assertIsNone(self.successResultOf(record(bounced)))
        self.assertEqual(self.outbox.pending(), 2)
        self.outbox.remove(self.outbox.head().seq)  # type: ignore[union-attr]
        event = self.outbox.head()
        assert event is not None
        self.assertEqual(event.kind, MESSAGE_BOUNCED)
        self.assertEqual(event.payload["expired"], True)
        self.assertIsNone(event.payload["failures"][0]["server"])
