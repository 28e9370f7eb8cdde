"""
Tests for L{ace_mail.proxy}: contact recipients, the customer's copy, and
queueing at the end of DATA.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.logger import LogEvent, capturedLogs, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from ace_mail.store import Entrance, IIntakeStore

from .proxyfakes import (
    ENDED_ID,
    HOST,
    NOW,
    OPEN_ID,
    OTHER_ID,
    REPLY,
    UNKNOWN_ID,
    Client,
    FakeQueue,
    FakeStore,
    contact,
    makeFactory,
)


class ContactTests(SynchronousTestCase):
    """
    Recipients at the reroute name are contacts, looked up in the store.
    """

    def setUp(self) -> None:
        self.factory = makeFactory()
        self.client = Client(self.factory)

    def test_replyToOpenContact(self) -> None:
        """
        A reply to an open contact is queued once, on the proxy route, from
        the entrance's address to the customer, and rewritten so that the
        agent does not show; the 250 names the queue id.
        """
        self.assertEqual(
            self.client.transaction(f"{OPEN_ID}@{HOST}"),
            [f"250 2.1.5 contact {OPEN_ID} OK"],
        )
        self.assertEqual(self.client.message(), "250 2.0.0 message accepted as q0")
        [(envelope, message)] = self.factory.queue.messages
        self.assertEqual(envelope.sender, "support@example.com")
        self.assertEqual(envelope.recipients, ("customer-aaaa@example.net",))
        self.assertEqual(envelope.route, "proxy")
        self.assertIn(b'From: "Support" <support@example.com>\r\n', message)
        self.assertIn(b'To: "Carla Customer" <customer-aaaa@example.net>\r\n', message)
        self.assertIn(b"In-Reply-To: <" + OPEN_ID.encode() + b"@example.net>", message)
        self.assertNotIn(b"agent", message.lower())
        self.assertNotIn(b"192.0.2.7", message)
        self.assertTrue(
            message.endswith(b"\r\n\r\nHello, your order is on its way.\r\n")
        )

    def test_entranceRoute(self) -> None:
        """
        A customer's copy leaves on its entrance's own route when the
        entrance has SMTP servers of its own; pass-through stays on the
        proxy route.
        """
        factory = makeFactory(entranceRoutes={"default": "entrance/default"})
        client = Client(factory)
        client.transaction(f"{OPEN_ID}@{HOST}", "colleague@agents.example")
        client.message()
        routes = sorted(envelope.route for envelope, _ in factory.queue.messages)
        self.assertEqual(routes, ["entrance/default", "proxy"])

    def test_messageIdKeptForThreading(self) -> None:
        """
        With a store that keeps sent Message-IDs, the Message-ID of each
        customer's copy is kept with its contact before the copy is queued,
        so that the customer's answer joins the contact.
        """
        kept: list[tuple[str, str]] = []

        @implementer(IIntakeStore)
        class ThreadingStore(FakeStore):
            def recordMessageId(self, contactId: str, messageId: str) -> Deferred[None]:
                kept.append((contactId, messageId))
                return succeed(None)

        factory = makeFactory(store=ThreadingStore(contact(OPEN_ID)))
        client = Client(factory)
        client.transaction(f"{OPEN_ID}@{HOST}")
        client.message()
        [(_, message)] = factory.queue.messages
        [(contactId, messageId)] = kept
        self.assertEqual(contactId, OPEN_ID)
        self.assertIn(f"Message-ID: {messageId}\r\n".encode(), message)

    def test_messageIdKeptWhenFolded(self) -> None:
        """
        On an entrance with a long domain, whose Message-ID header is folded,
        the Message-ID kept is still the header's, never a line of the body
        that looks like one.
        """
        kept: list[tuple[str, str]] = []

        @implementer(IIntakeStore)
        class ThreadingStore(FakeStore):
            def recordMessageId(self, contactId: str, messageId: str) -> Deferred[None]:
                kept.append((contactId, messageId))
                return succeed(None)

        domain = "customer-care.a-rather-long-company-name.example"
        entrance = Entrance("default", f"support@{domain}", "Support")
        factory = makeFactory(
            store=ThreadingStore(contact(OPEN_ID)), entrances={"default": entrance}
        )
        client = Client(factory)
        client.transaction(f"{OPEN_ID}@{HOST}")
        body = REPLY + b"Message-ID: <quoted@elsewhere.example>\r\n"
        self.assertEqual(client.message(body), "250 2.0.0 message accepted as q0")
        [(_, message)] = factory.queue.messages
        [(contactId, messageId)] = kept
        self.assertTrue(messageId.endswith(f"@{domain}>"), messageId)
        self.assertIn(f"Message-ID:\r\n {messageId}\r\n".encode(), message)

    def test_entranceAddressAsSender(self) -> None:
        """
        A reply sent from the entrance's own address (a shared mailbox) is
        queued for the customer, not refused for showing that address.
        """
        self.client.transaction(f"{OPEN_ID}@{HOST}", sender="support@example.com")
        body = REPLY.replace(b"agent@agents.example.org", b"support@example.com")
        self.assertEqual(self.client.message(body), "250 2.0.0 message accepted as q0")

    def test_passThroughRecipientHidden(self) -> None:
        """
        A pass-through recipient that the headers name only in the Subject
        is kept out of the customer's copy all the same.
        """
        self.client.transaction(f"{OPEN_ID}@{HOST}", "bob@partner.example")
        body = REPLY.replace(b"Re: my order", b"Re: my order, with bob@partner.example")
        self.assertEqual(
            self.client.message(body), "250 2.0.0 message accepted as q0, q1"
        )
        (_, customerCopy), _ = self.factory.queue.messages
        self.assertNotIn(b"bob@partner.example", customerCopy.split(b"\r\n\r\n")[0])

    def test_envelopeSenderHidden(self) -> None:
        """
        The envelope sender is kept out of the customer's copy even when the
        headers do not name it.
        """
        self.client.transaction(f"{OPEN_ID}@{HOST}", sender="hidden@agents.example.org")
        body = b"From: Someone <someone@example.org>\r\nSubject: x\r\n\r\nWrite to hidden@agents.example.org\r\n"
        self.client.message(
            body.replace(b"Subject: x", b"Subject: from hidden@agents.example.org")
        )
        [(_, message)] = self.factory.queue.messages
        header = message.split(b"\r\n\r\n")[0]
        self.assertNotIn(b"hidden@agents.example.org", header)

    def test_quotedSender(self) -> None:
        """
        A sender with a quoted local part, which cannot be handed to the
        rewrite as an address to hide, does not stop the reply.
        """
        self.client.transaction(
            f"{OPEN_ID}@{HOST}", sender='"john smith"@agents.example.org'
        )
        self.assertEqual(self.client.message(), "250 2.0.0 message accepted as q0")

    def test_passThroughUnchanged(self) -> None:
        """
        Other recipients get the message unchanged in one copy with the
        envelope as given, and the customer's copy does not name them.
        """
        replies = self.client.transaction(
            f"{OPEN_ID}@{HOST}",
            "colleague@agents.example.org",
            "boss@agents.example.org",
        )
        self.assertEqual(
            replies[1:],
            [
                "250 2.1.5 recipient <colleague@agents.example.org> OK",
                "250 2.1.5 recipient <boss@agents.example.org> OK",
            ],
        )
        self.assertEqual(self.client.message(), "250 2.0.0 message accepted as q0, q1")
        (customer, customerCopy), (other, otherCopy) = self.factory.queue.messages
        self.assertEqual(other.sender, "agent@agents.example.org")
        self.assertEqual(
            other.recipients,
            ("colleague@agents.example.org", "boss@agents.example.org"),
        )
        self.assertEqual(otherCopy, REPLY)
        self.assertNotIn(b"colleague", customerCopy)
        self.assertNotIn(b"boss", customerCopy)

    def test_severalContacts(self) -> None:
        """
        Each customer gets a copy of their own; a contact named twice gets
        one, and its id is matched in any case.
        """
        self.client.transaction(
            f"{OPEN_ID}@{HOST}",
            f"{ENDED_ID}@{HOST}",
            f"{OPEN_ID.upper()}@{HOST.upper()}",
        )
        self.assertEqual(self.client.message(), "250 2.0.0 message accepted as q0, q1")
        recipients = [
            envelope.recipients for envelope, _ in self.factory.queue.messages
        ]
        self.assertEqual(
            recipients, [("customer-aaaa@example.net",), ("customer-bbbb@example.net",)]
        )
        self.assertEqual(self.factory.store.lookups, [OPEN_ID, ENDED_ID, OPEN_ID])

    def test_unknownContact(self) -> None:
        """
        An unknown contact gets 550 5.1.1 with a sentence for the agent.
        """
        self.assertEqual(
            self.client.transaction(f"{UNKNOWN_ID}@{HOST}"),
            [f"550 5.1.1 no contact {UNKNOWN_ID} is known here; answer from ACE Agent"],
        )
        self.assertEqual(self.factory.refusals["contact-unknown"], 1)

    def test_endedWithinRetention(self) -> None:
        """
        A contact ended an hour ago is still answered.
        """
        self.assertEqual(
            self.client.transaction(f"{ENDED_ID}@{HOST}"),
            [f"250 2.1.5 contact {ENDED_ID} OK"],
        )

    def test_retentionBoundary(self) -> None:
        """
        On the clock: just inside the retention the RCPT is accepted, just
        past it refused with 550 5.1.1 and the sentence with the hours.
        """
        store = FakeStore(contact(OPEN_ID, ended=NOW))
        factory = makeFactory(store=store, retentionSeconds=36.0)
        factory.clock.advance(36)
        self.assertEqual(
            Client(factory).transaction(f"{OPEN_ID}@{HOST}"),
            [f"250 2.1.5 contact {OPEN_ID} OK"],
        )
        factory.clock.advance(0.001)
        self.assertEqual(
            Client(factory).transaction(f"{OPEN_ID}@{HOST}"),
            [
                f"550 5.1.1 contact {OPEN_ID} was ended more than 0.01 hours ago; answer from ACE Agent"
            ],
        )

    def test_storeFailure(self) -> None:
        """
        A store that fails gives 451 4.3.0, and the failure is logged.
        """
        self.factory.store.broken = True
        self.assertEqual(
            self.client.transaction(f"{OPEN_ID}@{HOST}"),
            [f"451 4.3.0 cannot look up contact {OPEN_ID} now; try again later"],
        )
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_entranceNotConfigured(self) -> None:
        """
        A contact of an entrance that is not configured gets 451 4.3.5.
        """
        store = FakeStore(contact(OPEN_ID, entrance="gone"))
        reply = Client(makeFactory(store=store)).transaction(f"{OPEN_ID}@{HOST}")[0]
        self.assertTrue(
            reply.startswith("451 4.3.5 the entrance gone of contact"), reply
        )

    def test_allowedSenderDomains(self) -> None:
        """
        An entrance with allowed sender domains refuses replies from other
        domains with 550 5.7.1; other entrances take any sender.
        """
        factory = makeFactory(allowedSenderDomains={"sales": ("agents.example.org",)})
        self.assertEqual(
            Client(factory).transaction(f"{OTHER_ID}@{HOST}"),
            [f"250 2.1.5 contact {OTHER_ID} OK"],
        )
        replies = Client(factory).transaction(
            f"{OTHER_ID}@{HOST}", f"{OPEN_ID}@{HOST}", sender="me@home.example"
        )
        self.assertTrue(
            replies[0].startswith(
                "550 5.7.1 sender <me@home.example> may not answer contacts of entrance sales"
            )
        )
        self.assertEqual(replies[1], f"250 2.1.5 contact {OPEN_ID} OK")


class QueueTests(SynchronousTestCase):
    """
    The end of DATA: 250 only once every copy is stored.
    """

    def test_answerAfterQueue(self) -> None:
        """
        The 250 waits for the queue; meanwhile reading is paused and a
        pipelined command waits too, and is answered after it.
        """
        queue = FakeQueue(automatic=False)
        client = Client(makeFactory(queue=queue))
        client.transaction(f"{OPEN_ID}@{HOST}", "colleague@agents.example.org")
        client.command("DATA")
        self.assertEqual(client.send(REPLY + b".\r\nNOOP\r\n"), [])
        self.assertEqual(client.transport.producerState, "paused")
        self.assertEqual(len(queue.waiting), 1)
        queue.fire()
        self.assertEqual(len(queue.waiting), 1)
        self.assertEqual(client.replies(), [])
        queue.fire()
        self.assertEqual(
            client.replies(), ["250 2.0.0 message accepted as q0, q1", "250 2.0.0 OK"]
        )
        self.assertEqual(client.transport.producerState, "producing")

    def test_twoLinesForASession(self) -> None:
        """
        A session that sends a reply logs two lines: the message queued,
        with its contacts, and the end of the session, with the number of
        messages accepted and whether the client's network is trusted.
        """
        with capturedLogs() as events:
            client = Client(makeFactory())
            client.transaction(f"{OPEN_ID}@{HOST}")
            self.assertTrue(client.message().startswith("250 2.0.0 "))
            client.protocol.connectionLost(Failure(ConnectionDone()))
        lines = [formatEvent(e) for e in events]
        self.assertEqual(len(lines), 2, lines)
        self.assertIn(f"(contacts: ['{OPEN_ID}'])", lines[0])
        self.assertEqual(
            lines[1], "127.0.0.1:40000 disconnected after 1 messages (trusted: True)"
        )

    def test_failedEnqueue(self) -> None:
        """
        When a copy cannot be stored the client gets 451 4.3.0 and no 250,
        and the copies stored before it are deleted again.
        """
        queue = FakeQueue(failAt=1)
        factory = makeFactory(queue=queue)
        client = Client(factory)
        events: list[LogEvent] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        client.transaction(f"{OPEN_ID}@{HOST}", "colleague@agents.example.org")
        self.assertEqual(
            client.message(),
            "451 4.3.0 the message could not be stored; try again later",
        )
        self.assertEqual(queue.deleted, ["q0"])
        [refused] = [e for e in events if "could not store it" in e["log_format"]]
        self.assertEqual(refused["queueIds"], ["q0"])
        self.assertNotIn("log_failure", refused)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(factory.refusals["queue-failure"], 1)
        self.assertEqual(client.command("NOOP"), "250 2.0.0 OK")

    def test_rewriteRefused(self) -> None:
        """
        A reply that cannot be rewritten without showing the agent is
        refused with 554 5.6.0 and the rewrite's sentence; nothing is
        queued.
        """
        factory = makeFactory()
        client = Client(factory)
        client.transaction(f"{OPEN_ID}@{HOST}")
        boundary = b"agent@agents.example.org"
        body = (
            b'From: agent@agents.example.org\r\nContent-Type: multipart/mixed; boundary="'
            + boundary
            + b'"\r\n\r\n'
            b"--" + boundary + b"\r\n\r\nx\r\n--" + boundary + b"--\r\n"
        )
        reply = client.message(body)
        self.assertTrue(
            reply.startswith("554 5.6.0 the reply was not sent: The MIME boundary"),
            reply,
        )
        self.assertEqual(factory.queue.messages, [])

    def test_logs(self) -> None:
        """
        Refusals are logged with the peer and reason, accepted messages with
        the queue ids and contact ids.
        """
        events: list[LogEvent] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        client = Client(makeFactory())
        client.transaction(f"{UNKNOWN_ID}@{HOST}", f"{OPEN_ID}@{HOST}")
        client.message()
        refused = [e for e in events if e.get("reason") == "contact-unknown"]
        self.assertEqual(len(refused), 1)
        self.assertEqual(refused[0]["peer"], "127.0.0.1:40000")
        self.assertEqual(refused[0]["contactId"], UNKNOWN_ID)
        queued: list[dict[str, Any]] = [
            e for e in events if "queueIds" in e and "size" in e
        ]
        self.assertEqual(queued[0]["queueIds"], ["q0"])
        self.assertEqual(queued[0]["contactIds"], [OPEN_ID])
