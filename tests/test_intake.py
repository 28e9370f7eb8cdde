"""
Tests for L{ace_mail.intake}: contacts from email, threading, duplicates,
automatic answers, physical emails and the stored originals.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from attrs import evolve
from twisted.internet.defer import fail
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from ace_mail.intake import DeliverError, IntakeResult
from ace_mail.store import IIntakeStore, SQLiteContactStore, standInName
from ace_mail.store._sqlite import MIGRATIONS, migrate
from tests.intakeharness import (
    REROUTE,
    SALES_ACCOUNT,
    SUPPORT,
    Harness,
    email,
    parse,
)


class IntakeTestCase(SynchronousTestCase):
    """
    Each test has a fresh intake on disk.
    """

    def setUp(self) -> None:
        self.harness = Harness(self.mktemp())
        self.addCleanup(lambda: self.harness.stop())

    def take(self, message: bytes, uidl: str, **kwargs: Any) -> IntakeResult:
        result: IntakeResult = self.successResultOf(
            self.harness.take(message, uidl, **kwargs)
        )
        return result

    def answers(self) -> list[Any]:
        """
        @return: The automatic answers sent or queued, parsed.
        """
        return [
            parse(data)
            for envelope, data in self.harness.sent().values()
            if envelope.sender == SUPPORT.address
        ]


class ContactTests(IntakeTestCase):
    """
    A customer's email becomes a contact with an automatic answer.
    """

    def test_created(self) -> None:
        """
        A new email opens a contact for the Reply-To (else From) customer
        with its subject, Message-ID and References.
        """
        message = email(
            extra="Reply-To: Ann Private <ann.p@customer.example>\r\n"
            "References: <r0@customer.example> <r1@customer.example>\r\n"
        )
        result = self.take(message, "u1")
        self.assertEqual(result.outcome, "created")
        assert result.contactId is not None
        contact = self.successResultOf(self.harness.store.get(result.contactId))
        assert contact is not None
        self.assertEqual(contact.customerAddress, "ann.p@customer.example")
        self.assertEqual(contact.customerName, "Ann Private")
        self.assertEqual(contact.subject, "Broken kettle")
        self.assertEqual(contact.messageId, "<m1@customer.example>")
        self.assertEqual(
            contact.references, ("<r0@customer.example>", "<r1@customer.example>")
        )
        self.assertEqual(contact.entrance, "acme")

    def test_answered(self) -> None:
        """
        The new contact's automatic answer goes from the entrance's address
        to the customer on the entrance's route, threaded under the email.
        """
        result = self.take(email(), "u1")
        sent = list(self.harness.sent().values())
        self.assertEqual(len(sent), 1)
        envelope, data = sent[0]
        self.assertEqual(envelope.sender, "support@acme.example")
        self.assertEqual(envelope.recipients, ("ann@customer.example",))
        self.assertEqual(envelope.route, "outgoing")
        answer = parse(data)
        self.assertEqual(answer["In-Reply-To"], "<m1@customer.example>")
        self.assertIn(f"[#{result.contactId}]", str(answer["Subject"]))
        self.assertTrue(answer["Message-ID"].endswith("@acme.example>"))

    def test_originalStored(self) -> None:
        """
        The email is moved into the originals directory, byte for byte, and
        the incoming directory is left empty.
        """
        message = email()
        self.take(message, "u1")
        originals = self.harness.store.originalsDirectory
        names = os.listdir(originals)
        self.assertEqual(len(names), 1)
        with open(os.path.join(originals, names[0]), "rb") as f:
            self.assertEqual(f.read(), message)
        self.assertEqual(os.listdir(self.harness.intake.incomingDir), [])

    def test_refused(self) -> None:
        """
        An email that names no customer is refused: kept as a file, seen,
        and no contact is made.
        """
        result = self.take(b"Subject: who?\r\n\r\nbody", "u1")
        self.assertEqual(result, IntakeResult(None, "refused"))
        self.assertEqual(self.harness.contacts(), [])
        self.assertEqual(len(os.listdir(self.harness.store.originalsDirectory)), 1)
        self.assertTrue(
            self.successResultOf(self.harness.intake.seen("acme-pop", "u1"))
        )
        self.assertEqual(
            self.take(b"Subject: who?\r\n\r\nbody", "u2").outcome, "duplicate"
        )

    def test_headersThatCrashTheParser(self) -> None:
        """
        An email whose Message-ID or Reply-To makes the standard library's
        header parser raise (rather than note a defect) is still taken: the
        unreadable field counts as absent, and the file leaves the incoming
        directory.
        """
        message = email(
            messageId=None, extra="Message-ID: <\r\nReply-To: b:)a@a;;:b\\>\r\n"
        )
        result = self.take(message, "u1")
        self.assertEqual(result.outcome, "created")
        assert result.contactId is not None
        contact = self.successResultOf(self.harness.store.get(result.contactId))
        assert contact is not None
        self.assertEqual(contact.customerAddress, "ann@customer.example")
        self.assertIsNone(contact.messageId)
        self.assertEqual(len(self.answers()), 1)
        self.assertEqual(os.listdir(self.harness.intake.incomingDir), [])

    def test_loopNotAnswered(self) -> None:
        """
        An automatic email opens a contact but gets no answer.
        """
        result = self.take(email(extra="Auto-Submitted: auto-replied\r\n"), "u1")
        self.assertEqual(result.outcome, "created")
        self.assertEqual(self.harness.sent(), {})

    def test_noTemplateNoAnswer(self) -> None:
        """
        An entrance without an automatic answer sends none.
        """
        self.harness.stop()
        self.harness.entrances = (evolve(SUPPORT, autoAnswerText=None),)
        self.harness.start()
        self.assertEqual(self.take(email(), "u1").outcome, "created")
        self.assertEqual(self.harness.sent(), {})


class DuplicateTests(IntakeTestCase):
    """
    A message taken once is never taken again.
    """

    def test_byUidl(self) -> None:
        """
        A UIDL taken before is a duplicate: no contact, no answer, and its
        file is removed.
        """
        first = self.take(email(), "u1")
        again = self.take(email(subject="other"), "u1")
        self.assertEqual(again.outcome, "duplicate")
        self.assertEqual(len(self.harness.contacts()), 1)
        self.assertEqual(len(self.answers()), 1)
        self.assertEqual(len(os.listdir(self.harness.store.originalsDirectory)), 1)
        self.assertEqual(os.listdir(self.harness.intake.incomingDir), [])
        self.assertIsNotNone(first.contactId)

    def test_sameBytesSameUidlKeepTheOriginal(self) -> None:
        """
        Taking the very same bytes under the same UIDL again (a QUIT that
        never came undid the deletion) is a duplicate, and the contact's
        stored original stays.
        """
        first = self.take(email(), "u1")
        again = self.take(email(), "u1")
        self.assertEqual(again.outcome, "duplicate")
        assert first.contactId is not None
        name = self.successResultOf(self.harness.store.originalOf(first.contactId))
        assert name is not None
        with open(os.path.join(self.harness.store.originalsDirectory, name), "rb") as f:
            self.assertEqual(f.read(), email())
        self.assertEqual(os.listdir(self.harness.intake.incomingDir), [])

    def test_uidlReusedForAnotherMessage(self) -> None:
        """
        A server may give the UIDL of a message that was taken and deleted
        to a new message (RFC 1939 only forbids reuse while the first one
        exists).  Another Message-ID under a seen UIDL is a new email: it
        opens its own contact with its own answer, and both originals stay.
        Taking either again is then a duplicate.
        """
        first = self.take(email(), "u1")
        second = email(subject="Also the toaster", messageId="<m2@customer.example>")
        reused = self.take(second, "u1")
        self.assertEqual(reused.outcome, "created")
        self.assertNotEqual(reused.contactId, first.contactId)
        self.assertEqual(len(self.harness.contacts()), 2)
        self.assertEqual(len(self.answers()), 2)
        self.assertEqual(len(os.listdir(self.harness.store.originalsDirectory)), 2)
        for result in (first, reused):
            assert result.contactId is not None
            self.assertIsNotNone(
                self.successResultOf(self.harness.store.originalOf(result.contactId))
            )

        self.assertEqual(self.take(second, "u1").outcome, "duplicate")
        self.assertEqual(self.take(email(), "u1").outcome, "duplicate")
        self.assertEqual(len(self.harness.contacts()), 2)
        self.assertEqual(len(self.answers()), 2)

    def test_byMessageIdAndDigest(self) -> None:
        """
        When the server changed its UIDLs, the same bytes with the same
        Message-ID are a duplicate of the same contact, and the new UIDL is
        remembered as seen.
        """
        first = self.take(email(), "u1")
        again = self.take(email(), "new-u1")
        self.assertEqual(again, IntakeResult(first.contactId, "duplicate"))
        self.assertEqual(len(self.harness.contacts()), 1)
        self.assertEqual(len(self.answers()), 1)
        self.assertEqual(len(os.listdir(self.harness.store.originalsDirectory)), 1)
        self.assertTrue(
            self.successResultOf(self.harness.intake.seen("acme-pop", "new-u1"))
        )

    def test_sameMessageIdOtherBytes(self) -> None:
        """
        The same Message-ID with other bytes is another email.
        """
        self.take(email(), "u1")
        self.assertEqual(self.take(email(body="More.\r\n"), "u2").outcome, "created")

    def test_otherAccount(self) -> None:
        """
        A UIDL is only a duplicate within its own account.
        """
        self.take(email(), "u1")
        result = self.take(email(), "u1", account=SALES_ACCOUNT)
        self.assertEqual(result.outcome, "created")


class ThreadingTests(IntakeTestCase):
    """
    A customer's answer to a contact joins it.
    """

    def test_byReferences(self) -> None:
        """
        An email whose References name the automatic answer joins the
        contact, and gets no second answer.
        """
        first = self.take(email(), "u1")
        answerId = self.answers()[0]["Message-ID"]
        reply = email(
            subject="Re: kettle",
            messageId="<m2@customer.example>",
            extra=f"References: <m1@customer.example> {answerId}\r\n",
        )
        self.assertEqual(
            self.take(reply, "u2"), IntakeResult(first.contactId, "threaded")
        )
        self.assertEqual(len(self.harness.contacts()), 1)
        self.assertEqual(len(self.answers()), 1)

    def test_byInReplyToOfProxyReply(self) -> None:
        """
        An email whose In-Reply-To names an agent's reply that the proxy
        recorded joins the contact.
        """
        first = self.take(email(), "u1")
        assert first.contactId is not None
        store = self.harness.store
        self.successResultOf(
            store.recordMessageId(first.contactId.upper(), "<reply1@acme.example>")
        )
        reply = email(
            messageId="<m2@customer.example>",
            extra="In-Reply-To: <reply1@acme.example>\r\n",
        )
        self.assertEqual(self.take(reply, "u2").contactId, first.contactId)

    def test_customerIdsDoNotThread(self) -> None:
        """
        References to the customer's own earlier email, which ace-mail did
        not send, do not join a contact.
        """
        self.take(email(), "u1")
        reply = email(
            messageId="<m2@customer.example>",
            extra="References: <m1@customer.example>\r\n",
        )
        self.assertEqual(self.take(reply, "u2").outcome, "created")

    def test_bySubjectTag(self) -> None:
        """
        An email whose subject carries the contact's tag, in any case, joins
        the contact.
        """
        first = self.take(email(), "u1")
        assert first.contactId is not None
        tagged = email(
            subject=f"Re: Re: kettle [#{first.contactId.upper()}]",
            messageId="<m2@customer.example>",
        )
        self.assertEqual(
            self.take(tagged, "u2"), IntakeResult(first.contactId, "threaded")
        )

    def test_tagOfEndedContact(self) -> None:
        """
        A tag of an ended contact still within its retention joins it; once
        the retention has passed it opens a new contact.
        """
        first = self.take(email(), "u1")
        assert first.contactId is not None
        clock = self.harness.clock
        self.successResultOf(self.harness.store.end(first.contactId, clock.seconds()))
        clock.advance(100 * 3600)
        tagged = email(subject=f"[#{first.contactId}]", messageId="<m2@x.example>")
        self.assertEqual(self.take(tagged, "u2").outcome, "threaded")
        clock.advance(21 * 3600)
        tagged = email(subject=f"[#{first.contactId}]", messageId="<m3@x.example>")
        self.assertEqual(self.take(tagged, "u3").outcome, "created")

    def test_tagOfOtherEntrance(self) -> None:
        """
        A tag of another entrance's contact opens a new contact: tenants
        never see each other's contacts.
        """
        first = self.take(email(), "u1", account=SALES_ACCOUNT)
        tagged = email(subject=f"[#{first.contactId}]", messageId="<m2@x.example>")
        self.assertEqual(self.take(tagged, "u2").outcome, "created")


class RateLimitTests(SynchronousTestCase):
    """
    Automatic answers to one address are limited per time window.
    """

    def test_limitSurvivesRestart(self) -> None:
        """
        With a limit of 2 a day, the third email gets no answer, even after
        a restart; a day later the next one does.
        """
        harness = Harness(self.mktemp(), answerLimit=2)
        self.addCleanup(lambda: harness.stop())

        def take(number: int) -> None:
            message = email(
                sender="Ann <ANN@customer.example>", messageId=f"<m{number}@x>"
            )
            self.successResultOf(harness.take(message, f"u{number}"))

        take(1)
        take(2)
        harness.restart()
        take(3)
        self.assertEqual(len(harness.sent()), 2)
        self.assertEqual(len(harness.contacts()), 3)
        harness.clock.advance(86400)
        take(4)
        self.assertEqual(len(harness.sent()), 3)


class PhysicalEmailTests(IntakeTestCase):
    """
    The physical email reaches the agent's mailbox.
    """

    def test_agentMailbox(self) -> None:
        """
        An entrance with an agent mailbox sends it the physical email of
        every new contact and of every email that joins one, from the
        contact address.
        """
        first = self.take(email(), "s1", account=SALES_ACCOUNT)
        tagged = email(subject=f"[#{first.contactId}]", messageId="<m2@x.example>")
        self.take(tagged, "s2", account=SALES_ACCOUNT)
        physical = [
            (envelope, parse(data))
            for envelope, data in self.harness.sent().values()
            if envelope.recipients == ("desk@shop.example",)
        ]
        self.assertEqual(len(physical), 2)
        for envelope, message in physical:
            self.assertEqual(envelope.sender, "sales@shop.example")
            self.assertEqual(
                message["Reply-To"].addresses[0].addr_spec,
                f"{first.contactId}@{REROUTE}",
            )

    def test_deliver(self) -> None:
        """
        L{Intake.deliver} queues the physical email of a contact for an
        agent, and records its Message-ID for threading.
        """
        first = self.take(email(), "u1")
        assert first.contactId is not None
        queueId = self.successResultOf(
            self.harness.intake.deliver(first.contactId.upper(), "agent@desk.example")
        )
        envelope, data = self.harness.sent()[queueId]
        self.assertEqual(envelope.recipients, ("agent@desk.example",))
        self.assertEqual(envelope.sender, "support@acme.example")
        physical = parse(data)
        sender = physical["From"].addresses[0]
        self.assertEqual(sender.display_name, "Ann Lee")
        self.assertEqual(sender.addr_spec, f"{first.contactId}@{REROUTE}")
        answer = email(
            messageId="<m2@x.example>",
            extra=f"In-Reply-To: {physical['Message-ID']}\r\n",
        )
        self.assertEqual(self.take(answer, "u2").outcome, "threaded")

    def test_deliverRefused(self) -> None:
        """
        L{Intake.deliver} fails with a sentence for an unknown contact, a
        contact whose entrance is gone and an address that is none.
        """
        first = self.take(email(), "u1")
        assert first.contactId is not None
        intake = self.harness.intake
        self.failureResultOf(
            intake.deliver("a" * 20, "agent@desk.example"), DeliverError
        )
        self.failureResultOf(intake.deliver(first.contactId, "agent"), DeliverError)
        orphan = self.successResultOf(
            self.harness.store.create(
                entrance="gone",
                customerAddress="b@x.example",
                customerName="",
                subject="",
                messageId=None,
                references=(),
                externalId=None,
                now=0.0,
            )
        )
        failure = self.failureResultOf(
            intake.deliver(orphan.id, "agent@desk.example"), DeliverError
        )
        self.assertIn("not configured", str(failure.value))

    def test_deliverWithoutStoredEmail(self) -> None:
        """
        A contact made through the API has no customer email; its physical
        email is a stand-in from the contact's address that names the
        contact, kept among the originals until the contact is purged.
        """
        made = self.successResultOf(
            self.harness.store.create(
                entrance="acme",
                customerAddress="b@x.example",
                customerName="Bo Beck",
                subject="Phone call",
                messageId=None,
                references=(),
                externalId=None,
                now=0.0,
            )
        )
        intake = self.harness.intake
        queueId = self.successResultOf(intake.deliver(made.id, "agent@desk.example"))
        envelope, data = self.harness.sent()[queueId]
        physical = parse(data)
        self.assertEqual(envelope.recipients, ("agent@desk.example",))
        sender = physical["From"].addresses[0]
        self.assertEqual(sender.display_name, "Bo Beck")
        self.assertEqual(sender.addr_spec, f"{made.id}@{REROUTE}")
        self.assertEqual(str(physical["Subject"]), "Phone call")
        self.assertIn(made.id, physical.get_content())
        stored = os.path.join(
            self.harness.store.originalsDirectory, standInName(made.id)
        )
        self.assertTrue(os.path.exists(stored))
        self.successResultOf(self.harness.store.end(made.id, 1.0))
        self.successResultOf(self.harness.store.purge(2.0))
        self.assertFalse(os.path.exists(stored))


class PurgeTests(IntakeTestCase):
    """
    The stored originals live as long as their contacts.
    """

    def test_purgeDeletesOriginals(self) -> None:
        """
        Purging an ended contact deletes its stored emails, the first and
        the ones that joined it, keeps other contacts' ones, and keeps the
        UIDLs seen.
        """
        first = self.take(email(), "u1")
        assert first.contactId is not None
        self.take(email(subject=f"[#{first.contactId}]", messageId="<m2@x>"), "u2")
        self.take(email(messageId="<other@x>"), "u3")
        originals = self.harness.store.originalsDirectory
        self.assertEqual(len(os.listdir(originals)), 3)
        store = self.harness.store
        self.successResultOf(store.end(first.contactId, 10.0))
        self.assertEqual(self.successResultOf(store.purge(11.0)), 1)
        self.assertEqual(len(os.listdir(originals)), 1)
        self.assertTrue(self.successResultOf(store.seen("acme-pop", "u1")))
        self.assertIsNone(self.successResultOf(store.originalOf(first.contactId)))


class RecoveryTests(IntakeTestCase):
    """
    L{Intake.recover} finishes the sends a crash interrupted, once.
    """

    def test_enqueueFailedThenRecovered(self) -> None:
        """
        An answer whose enqueue failed stays pending and is queued by the
        next start's recovery, once.
        """
        queue = self.harness.queue
        real = queue.enqueue
        queue.enqueue = lambda *a: fail(OSError("disk full"))  # type: ignore
        self.take(email(), "u1")
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        queue.enqueue = real  # type: ignore
        self.assertEqual(self.harness.sent(), {})
        self.harness.restart()
        self.successResultOf(self.harness.intake.recover())
        self.assertEqual(len(self.harness.sent()), 1)
        self.harness.restart()
        self.successResultOf(self.harness.intake.recover())
        self.harness.clock.advance(2)
        self.assertEqual(len(self.harness.sent()), 1)

    def test_markFailedThenRecovered(self) -> None:
        """
        An answer that was queued but not marked is only marked by the
        recovery, even after it was delivered.
        """
        store = self.harness.store
        real = store.settleDispatch
        store.settleDispatch = lambda *a: fail(OSError("gone"))  # type: ignore
        self.take(email(), "u1")
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        store.settleDispatch = real  # type: ignore
        self.assertEqual(len(self.harness.delivered), 1)
        self.harness.restart()
        self.successResultOf(self.harness.intake.recover())
        self.harness.clock.advance(2)
        self.assertEqual(len(self.harness.delivered), 1)
        pending = self.harness.store.pendingDispatches()
        self.assertEqual(self.successResultOf(pending), [])

    def test_incomingCleared(self) -> None:
        """
        Files a crashed poller left in the incoming directory are removed.
        """
        self.harness.write(b"half a mess")
        self.successResultOf(self.harness.intake.recover())
        self.assertEqual(os.listdir(self.harness.intake.incomingDir), [])


class StoreTests(SynchronousTestCase):
    """
    The SQLite store provides L{IIntakeStore} and migrates to it.
    """

    def test_interface(self) -> None:
        """
        L{SQLiteContactStore} provides L{IIntakeStore}.
        """
        store = SQLiteContactStore.open(self.mktemp())
        self.addCleanup(store.close)
        self.assertTrue(verifyObject(IIntakeStore, store))

    def test_fromVersionOne(self) -> None:
        """
        A store at schema version 1 is migrated, keeping its contacts.
        """
        path = self.mktemp()
        connection = sqlite3.connect(path, isolation_level=None)
        migrate(connection, path, MIGRATIONS[:1])
        connection.execute(
            "INSERT INTO contact VALUES ('a', 'acme', 'b@x', '', '', NULL, '[]',"
            " NULL, 0, NULL)"
        )
        connection.close()
        store = SQLiteContactStore.open(path)
        self.addCleanup(store.close)
        self.assertIsNotNone(self.successResultOf(store.get("a")))
        self.assertFalse(self.successResultOf(store.seen("x", "y")))
        self.assertEqual(
            store.originalsDirectory,
            os.path.join(os.path.dirname(os.path.abspath(path)), "originals"),
        )
