"""
Tests for the intake records of both contact stores (L{IIntakeStore}): what
an arrival is decided to be, the messages to send for it, and its stored
original, in SQLite and in PostgreSQL.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from attrs import evolve
from twisted.trial.unittest import TestCase

from ace_mail.spool import newQueueId
from ace_mail.store import (
    AGENT,
    ANSWER,
    CREATED,
    DROPPED,
    DUPLICATE,
    QUEUED,
    REFUSED,
    THREADED,
    Arrival,
    Dispatch,
    Plan,
    Planned,
    SQLiteContactStore,
    Taken,
    newContactId,
)
from tests.pgharness import PostgresStoreCase

NOW = 1_700_000_000.0
HOUR = 3600.0
AGENT_ADDRESS = "desk@acme.example"


def message(uidl: str, messageId: str | None = None) -> bytes:
    """
    @return: A customer's email, different for each UIDL.
    """
    head = "From: Ann Lee <ann@customer.example>\r\nSubject: Broken kettle\r\n"
    if messageId is not None:
        head += f"Message-ID: {messageId}\r\n"
    return f"{head}\r\nIt does not boil ({uidl}).\r\n".encode("ascii")


def writeArrival(
    store: Any, uidl: str, content: bytes | None = None, **changes: Any
) -> Arrival:
    """
    Put an email in the store's originals directory, as intake does before
    it records the arrival.

    @param content: The email's bytes; by default one of its own, with the
        Message-ID of the arrival.
    @param changes: Fields of the L{Arrival} other than the defaults.
    @return: The arrival of that email from the account C{pop}.
    """
    messageId = changes.get("messageId", f"<{uidl}@customer.example>")
    if content is None:
        content = message(uidl, messageId)
    digest = hashlib.sha256(content).hexdigest()
    original = f"pop-{uidl}-{digest[:16]}"
    os.makedirs(store.originalsDirectory, exist_ok=True)
    with open(os.path.join(store.originalsDirectory, original), "wb") as f:
        f.write(content)
    values: dict[str, Any] = dict(
        account="pop",
        uidl=uidl,
        digest=digest,
        messageId=messageId,
        original=original,
        entrance="acme",
        customerAddress="ann@customer.example",
        customerName="Ann Lee",
        subject="Broken kettle",
        references=(),
        threadIds=(),
        tag=None,
        newContactId=newContactId(),
        received=NOW,
    )
    values.update(changes)
    return Arrival(**values)


def plan(answerLimit: int = 3, agent: bool = True, **changes: Any) -> Plan:
    """
    @return: A plan with an automatic answer and, unless C{agent} is false,
        a physical email, each with ids of its own.
    """
    values: dict[str, Any] = dict(
        answer=Planned(newQueueId(), f"<{newQueueId()}@acme.example>"),
        answerLimit=answerLimit,
        answerWindow=24 * HOUR,
        agent=(
            Planned(newQueueId(), f"<{newQueueId()}@acme.example>") if agent else None
        ),
        agentAddress=AGENT_ADDRESS if agent else None,
        endedAfter=NOW - 120 * HOUR,
    )
    values.update(changes)
    return Plan(**values)


class IntakeStoreTestsMixin:
    """
    What every intake store records, for a test case that opens one as
    C{self.store}.
    """

    store: Any

    async def take(
        self, uidl: str, thePlan: Plan | None = None, **changes: Any
    ) -> Taken:
        """
        Record the arrival of a new email under C{uidl}.
        """
        arrival = writeArrival(self.store, uidl, **changes)
        taken: Taken = await self.store.recordArrival(arrival, thePlan or plan())
        return taken

    async def read(self, name: str) -> bytes | None:
        """
        @return: The bytes of the stored original C{name}, or L{None}.
        """
        opened = await self.store.readOriginal(name)
        if opened is None:
            return None
        with opened:
            content: bytes = opened.read()
            return content

    async def test_created(self) -> None:
        """
        A new email opens a contact with the planned answer and physical
        email, pending in that order; its UIDL is seen, and its original is
        kept under its name.
        """
        arrival = writeArrival(self.store, "u1")
        planned = plan()
        taken = await self.store.recordArrival(arrival, planned)
        assert planned.answer is not None and planned.agent is not None
        answer = Dispatch(
            planned.answer.queueId,
            ANSWER,
            arrival.newContactId,
            "ann@customer.example",
            planned.answer.messageId,
            None,
            NOW,
        )
        agent = Dispatch(
            planned.agent.queueId,
            AGENT,
            arrival.newContactId,
            AGENT_ADDRESS,
            planned.agent.messageId,
            arrival.original,
            NOW,
        )
        self.assertEqual(taken, Taken(CREATED, arrival.newContactId, (answer, agent)))
        contact = await self.store.get(arrival.newContactId)
        self.assertEqual(
            (contact.entrance, contact.customerAddress, contact.subject),
            ("acme", "ann@customer.example", "Broken kettle"),
        )
        self.assertTrue(await self.store.seen("pop", "u1"))
        self.assertFalse(await self.store.seen("pop", "u2"))
        self.assertFalse(await self.store.seen("other", "u1"))
        self.assertEqual(await self.store.originalOf(contact.id), arrival.original)
        self.assertEqual(
            await self.read(arrival.original), message("u1", "<u1@customer.example>")
        )
        self.assertEqual(
            sorted(await self.store.pendingDispatches(), key=lambda d: d.kind),
            sorted([answer, agent], key=lambda d: d.kind),
        )

    async def test_duplicateByUidl(self) -> None:
        """
        An email under a UIDL already taken is a duplicate of its contact,
        with nothing to send.
        """
        first = await self.take("u1")
        again = await self.take("u1", subject="Another", messageId="<x@y>")
        self.assertEqual(again, Taken(DUPLICATE, first.contactId))
        self.assertEqual(len(await self.store.pendingDispatches()), 2)

    async def test_duplicateByContent(self) -> None:
        """
        The same bytes with the same Message-ID under a new UIDL (the server
        renumbered) are a duplicate, and the new UIDL is seen.
        """
        content = message("u1", "<m1@customer.example>")
        first = await self.take(
            "u1", content=content, messageId="<m1@customer.example>"
        )
        again = await self.take(
            "u9", content=content, messageId="<m1@customer.example>"
        )
        self.assertEqual(again, Taken(DUPLICATE, first.contactId))
        self.assertTrue(await self.store.seen("pop", "u9"))

    async def test_refused(self) -> None:
        """
        An email without a usable customer address is refused: no contact,
        nothing to send, but its UIDL is seen.
        """
        taken = await self.take("u1", customerAddress=None)
        self.assertEqual(taken, Taken(REFUSED, None))
        self.assertTrue(await self.store.seen("pop", "u1"))
        self.assertEqual(await self.store.pendingDispatches(), [])

    async def test_threadedByAnswer(self) -> None:
        """
        An email that names the automatic answer of a contact joins it and
        gets only the physical email.
        """
        first = await self.take("u1")
        answerId = first.dispatches[0].messageId
        joined = await self.take("u2", threadIds=("<u1@customer.example>", answerId))
        self.assertEqual(
            (joined.outcome, joined.contactId), (THREADED, first.contactId)
        )
        self.assertEqual([d.kind for d in joined.dispatches], [AGENT])

    async def test_threadedByRecordedMessageId(self) -> None:
        """
        An email that names a Message-ID recorded for a contact, such as an
        agent's reply, joins it.
        """
        first = await self.take("u1")
        await self.store.recordMessageId(
            first.contactId.upper(), "<reply@acme.example>"
        )
        joined = await self.take("u2", threadIds=("<reply@acme.example>",))
        self.assertEqual(
            (joined.outcome, joined.contactId), (THREADED, first.contactId)
        )

    async def test_threadedByTag(self) -> None:
        """
        An email whose subject tags a contact of its entrance, in any case,
        joins it; the same tag arriving at another entrance opens a contact.
        """
        first = await self.take("u1")
        joined = await self.take("u2", tag=first.contactId.upper())
        self.assertEqual(
            (joined.outcome, joined.contactId), (THREADED, first.contactId)
        )
        other = await self.take("u3", tag=first.contactId, entrance="sales")
        self.assertEqual(other.outcome, CREATED)

    async def test_expiredContactNotJoined(self) -> None:
        """
        A contact ended before the plan's expiry is not joined any more; one
        ended at that time still is.
        """
        first = await self.take("u1")
        await self.store.end(first.contactId, NOW - 120 * HOUR)
        joined = await self.take("u2", tag=first.contactId)
        self.assertEqual(joined.outcome, THREADED)
        later = plan(endedAfter=NOW - 120 * HOUR + 1)
        self.assertEqual(
            (await self.take("u3", later, tag=first.contactId)).outcome, CREATED
        )

    async def test_answerLimit(self) -> None:
        """
        One address gets at most the plan's number of automatic answers in
        its window; once the window has passed, it gets one again.
        """
        kinds = []
        for number in range(3):
            taken = await self.take(f"u{number}", plan(answerLimit=2, agent=False))
            kinds.append([d.kind for d in taken.dispatches])
        self.assertEqual(kinds, [[ANSWER], [ANSWER], []])
        later = await self.take("u9", plan(answerLimit=2), received=NOW + 25 * HOUR)
        self.assertEqual([d.kind for d in later.dispatches], [ANSWER, AGENT])

    async def test_settleDispatch(self) -> None:
        """
        A queued or dropped message is no longer pending; a message added
        later is pending and its Message-ID joins replies to the contact.
        """
        first = await self.take("u1")
        answer, agent = first.dispatches
        await self.store.settleDispatch(answer.queueId, QUEUED)
        self.assertEqual(await self.store.pendingDispatches(), [agent])
        await self.store.settleDispatch(agent.queueId, DROPPED)
        self.assertEqual(await self.store.pendingDispatches(), [])

        added = evolve(agent, queueId=newQueueId(), messageId="<again@acme.example>")
        await self.store.addDispatch(added)
        self.assertEqual(await self.store.pendingDispatches(), [added])
        joined = await self.take("u2", threadIds=("<again@acme.example>",))
        self.assertEqual(joined.contactId, first.contactId)

    async def test_retireUidl(self) -> None:
        """
        A seen UIDL is freed for another message, and only for one with
        another digest and another Message-ID; the earlier contact keeps its
        original.
        """
        first = await self.take("u1")
        self.assertTrue(await self.store.retireUidl("pop", "u7", "d", None))
        digest = hashlib.sha256(message("u1", "<u1@customer.example>")).hexdigest()
        self.assertFalse(await self.store.retireUidl("pop", "u1", digest, "<new@x>"))
        self.assertFalse(
            await self.store.retireUidl("pop", "u1", "d", "<u1@customer.example>")
        )
        self.assertTrue(await self.store.retireUidl("pop", "u1", "d", "<new@x>"))
        self.assertFalse(await self.store.seen("pop", "u1"))
        second = await self.take(
            "u1", content=b"Subject: new\r\n\r\n", messageId="<new@x>"
        )
        self.assertEqual(second.outcome, CREATED)
        self.assertIsNotNone(await self.store.originalOf(first.contactId))

    async def test_purgeForgetsOriginals(self) -> None:
        """
        Purging an ended contact deletes its stored originals, the first and
        those that joined it, and keeps its UIDLs seen and other contacts'
        originals.
        """
        first = await self.take("u1")
        name = await self.store.originalOf(first.contactId)
        joined = writeArrival(self.store, "u2", tag=first.contactId)
        await self.store.recordArrival(joined, plan())
        other = await self.take("u3")
        await self.store.end(first.contactId, NOW)
        self.assertEqual(await self.store.purge(NOW + 1), 1)
        self.assertIsNone(await self.store.originalOf(first.contactId))
        self.assertIsNone(await self.read(name))
        self.assertIsNone(await self.read(joined.original))
        self.assertTrue(await self.store.seen("pop", "u1"))
        self.assertIsNotNone(
            await self.read(await self.store.originalOf(other.contactId))
        )

    async def test_unknownOriginal(self) -> None:
        """
        An original that was never stored reads as L{None}.
        """
        self.assertIsNone(await self.read("pop-none-0000"))


class SQLiteIntakeStoreTests(IntakeStoreTestsMixin, TestCase):
    """
    L{SQLiteContactStore} keeps intake records in its file and the originals
    as files beside it.
    """

    def setUp(self) -> None:
        self.store = SQLiteContactStore.open(self.mktemp())
        self.addCleanup(self.store.close)


class PostgresIntakeStoreTests(IntakeStoreTestsMixin, PostgresStoreCase):
    """
    L{PostgresContactStore} keeps intake records and originals in the
    database.
    """
