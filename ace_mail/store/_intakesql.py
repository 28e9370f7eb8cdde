# -*- test-case-name: tests.test_store -*-
"""
The intake records of both contact stores: the messages taken from each
account, the Message-IDs sent for each contact, and the answers and physical
emails to send.

The statements are written once, with C{?} placeholders, in the SQL that
SQLite and PostgreSQL share.  The functions that change several rows expect
the caller to have begun a transaction.
"""

from __future__ import annotations

import secrets

from ace_mail.store._contact import Contact
from ace_mail.store._contactsql import INSERT, Executor, contactRow
from ace_mail.store._intake import (
    AGENT,
    ANSWER,
    CREATED,
    DUPLICATE,
    PENDING,
    REFUSED,
    THREADED,
    Arrival,
    Dispatch,
    Plan,
    Planned,
    Taken,
)

MIGRATION = (
    """
    CREATE TABLE intake (
        account TEXT NOT NULL,
        uidl TEXT NOT NULL,
        digest TEXT NOT NULL,
        messageId TEXT,
        outcome TEXT NOT NULL,
        contactId TEXT,
        original TEXT,
        received REAL NOT NULL,
        PRIMARY KEY (account, uidl)
    )
    """,
    "CREATE INDEX intakeContent ON intake (account, digest)",
    "CREATE INDEX intakeContact ON intake (contactId)",
    """
    CREATE TABLE sentMessage (
        messageId TEXT NOT NULL PRIMARY KEY,
        contactId TEXT NOT NULL
    )
    """,
    "CREATE INDEX sentMessageContact ON sentMessage (contactId)",
    """
    CREATE TABLE dispatch (
        queueId TEXT NOT NULL PRIMARY KEY,
        kind TEXT NOT NULL,
        contactId TEXT NOT NULL,
        recipient TEXT NOT NULL,
        messageId TEXT NOT NULL,
        original TEXT,
        created REAL NOT NULL,
        state TEXT NOT NULL
    )
    """,
    "CREATE INDEX dispatchContact ON dispatch (contactId)",
    "CREATE INDEX dispatchRate ON dispatch (kind, recipient, created)",
    "CREATE INDEX dispatchPending ON dispatch (state) WHERE state = 'pending'",
)
"""
The schema of intake in SQLite: migration 2 of the contact store.  Intake rows outlive
their contacts (only the original's name is cleared), so that a message left
on the server is never taken again.
"""

_DISPATCH = "queueId, kind, contactId, recipient, messageId, original, created, state"
_OPEN = "(ended IS NULL OR ended >= ?)"


def seen(db: Executor, account: str, uidl: str) -> bool:
    row = db.execute(
        "SELECT 1 FROM intake WHERE account = ? AND uidl = ?", (account, uidl)
    ).fetchone()
    return row is not None


def retireUidl(
    db: Executor, account: str, uidl: str, digest: str, messageId: str | None
) -> bool:
    """
    Free a seen UIDL that the server gave to another message; see
    L{ace_mail.store.IIntakeStore.retireUidl}.  The earlier record keeps
    its contact and original under the key C{"UIDL RANDOM"}, which no UIDL
    can be, as a UIDL has no space.
    """
    row = db.execute(
        "SELECT digest, messageId FROM intake WHERE account = ? AND uidl = ?",
        (account, uidl),
    ).fetchone()
    if row is None:
        return True
    earlierDigest, earlierMessageId = row
    if earlierDigest == digest or (
        messageId is not None and earlierMessageId == messageId
    ):
        return False
    db.execute(
        "UPDATE intake SET uidl = ? WHERE account = ? AND uidl = ?",
        (f"{uidl} {secrets.token_hex(8)}", account, uidl),
    )
    return True


def recordArrival(db: Executor, arrival: Arrival, plan: Plan, node: str) -> Taken:
    """
    Decide and record an arrival; see
    L{ace_mail.store.IIntakeStore.recordArrival}.

    @param node: The node that records it, and so sends its dispatches.
    """
    taken = _decide(db, arrival, plan)
    original: str | None = arrival.original
    if taken.outcome == DUPLICATE:
        original = None
    if taken.outcome == CREATED:
        contact = Contact(
            id=arrival.newContactId,
            entrance=arrival.entrance,
            customerAddress=arrival.customerAddress or "",
            customerName=arrival.customerName,
            subject=arrival.subject,
            messageId=arrival.messageId,
            references=arrival.references,
            externalId=None,
            created=arrival.received,
            ended=None,
        )
        db.execute(INSERT, contactRow(contact))
    # A duplicate by UIDL is already recorded under its key; one by content
    # gets a record under its own UIDL.
    conflict = " ON CONFLICT DO NOTHING" if taken.outcome == DUPLICATE else ""
    db.execute(
        "INSERT INTO intake (account, uidl, digest, messageId, outcome,"
        " contactId, original, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?)" + conflict,
        (
            arrival.account,
            arrival.uidl,
            arrival.digest,
            arrival.messageId,
            taken.outcome,
            taken.contactId,
            original,
            arrival.received,
        ),
    )
    for dispatch in taken.dispatches:
        addDispatch(db, dispatch, node)
    return taken


def _decide(db: Executor, arrival: Arrival, plan: Plan) -> Taken:
    earlier = db.execute(
        "SELECT contactId FROM intake WHERE account = ? AND uidl = ?",
        (arrival.account, arrival.uidl),
    ).fetchone()
    if earlier is None:
        earlier = db.execute(
            "SELECT contactId FROM intake WHERE account = ? AND digest = ?"
            " AND messageId IS NOT DISTINCT FROM ? LIMIT 1",
            (arrival.account, arrival.digest, arrival.messageId),
        ).fetchone()
    if earlier is not None:
        return Taken(DUPLICATE, earlier[0])
    if arrival.customerAddress is None:
        return Taken(REFUSED, None)

    contactId = _thread(db, arrival, plan.endedAfter)
    outcome = THREADED
    dispatches = []
    if contactId is None:
        contactId, outcome = arrival.newContactId, CREATED
        recipient = arrival.customerAddress.lower()
        if (
            plan.answer is not None
            and _answers(db, recipient, arrival.received - plan.answerWindow)
            < plan.answerLimit
        ):
            dispatches.append(
                _dispatch(plan.answer, ANSWER, contactId, recipient, None, arrival)
            )
    if plan.agent is not None and plan.agentAddress is not None:
        dispatches.append(
            _dispatch(
                plan.agent,
                AGENT,
                contactId,
                plan.agentAddress,
                arrival.original,
                arrival,
            )
        )
    return Taken(outcome, contactId, tuple(dispatches))


def _dispatch(
    planned: Planned,
    kind: str,
    contactId: str,
    recipient: str,
    original: str | None,
    arrival: Arrival,
) -> Dispatch:
    return Dispatch(
        planned.queueId,
        kind,
        contactId,
        recipient,
        planned.messageId,
        original,
        arrival.received,
    )


def _thread(db: Executor, arrival: Arrival, endedAfter: float) -> str | None:
    """
    @return: The open or unexpired contact of the arrival's entrance that
        the arrival answers, by the Message-IDs it names and then by the tag
        in its subject, or L{None}.
    """
    for messageId in arrival.threadIds:
        row = db.execute(
            "SELECT contact.id FROM sentMessage JOIN contact"
            " ON contact.id = sentMessage.contactId"
            f" WHERE sentMessage.messageId = ? AND entrance = ? AND {_OPEN}",
            (messageId, arrival.entrance, endedAfter),
        ).fetchone()
        if row is not None:
            return str(row[0])
    if arrival.tag is not None:
        row = db.execute(
            f"SELECT id FROM contact WHERE id = ? AND entrance = ? AND {_OPEN}",
            (arrival.tag.lower(), arrival.entrance, endedAfter),
        ).fetchone()
        if row is not None:
            return str(row[0])
    return None


def _answers(db: Executor, recipient: str, since: float) -> int:
    row = db.execute(
        "SELECT count(*) FROM dispatch WHERE kind = ? AND recipient = ?"
        " AND created > ?",
        (ANSWER, recipient, since),
    ).fetchone()
    return int(row[0])


def addDispatch(db: Executor, dispatch: Dispatch, node: str) -> None:
    """
    Note a pending message for a contact, made by C{node}, and keep its
    Message-ID.
    """
    db.execute(
        f"INSERT INTO dispatch ({_DISPATCH}, node)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            dispatch.queueId,
            dispatch.kind,
            dispatch.contactId,
            dispatch.recipient,
            dispatch.messageId,
            dispatch.original,
            dispatch.created,
            dispatch.state,
            node,
        ),
    )
    recordMessageId(db, dispatch.contactId, dispatch.messageId)


def settleDispatch(db: Executor, queueId: str, state: str) -> None:
    db.execute("UPDATE dispatch SET state = ? WHERE queueId = ?", (state, queueId))


def pendingDispatches(db: Executor, node: str) -> list[Dispatch]:
    """
    @return: The messages that C{node} has still to queue, oldest first.
    """
    rows = db.execute(
        f"SELECT {_DISPATCH} FROM dispatch WHERE state = ? AND node = ?"
        " ORDER BY created, queueId",
        (PENDING, node),
    ).fetchall()
    return [Dispatch(*row) for row in rows]


def recordMessageId(db: Executor, contactId: str, messageId: str) -> None:
    db.execute(
        "INSERT INTO sentMessage (messageId, contactId) VALUES (?, ?)"
        " ON CONFLICT DO NOTHING",
        (messageId, contactId.lower()),
    )


def originalOf(db: Executor, contactId: str) -> str | None:
    row = db.execute(
        "SELECT original FROM intake WHERE contactId = ? AND outcome = ?"
        " AND original IS NOT NULL",
        (contactId.lower(), CREATED),
    ).fetchone()
    return None if row is None else str(row[0])


def standInName(contactId: str) -> str:
    """
    @return: The name, among the originals, of the stand-in email of a
        contact that has no customer email of its own.
    """
    return f"api-{contactId.lower()}"


def purge(db: Executor, endedBefore: float) -> tuple[int, list[str]]:
    """
    Delete the contacts ended before a time with their dispatches and sent
    Message-IDs, and clear the names of their originals from the intake
    records.

    @return: The number of contacts deleted, and the names of the originals
        that the caller now deletes.
    """
    doomed = "SELECT id FROM contact WHERE ended IS NOT NULL AND ended < ?"
    rows = db.execute(
        f"SELECT original FROM intake WHERE contactId IN ({doomed})"
        " AND original IS NOT NULL",
        (endedBefore,),
    ).fetchall()
    originals = [str(row[0]) for row in rows]
    rows = db.execute(doomed, (endedBefore,)).fetchall()
    originals.extend(standInName(str(row[0])) for row in rows)
    db.execute(
        f"UPDATE intake SET original = NULL WHERE contactId IN ({doomed})",
        (endedBefore,),
    )
    for table in ("dispatch", "sentMessage"):
        db.execute(f"DELETE FROM {table} WHERE contactId IN ({doomed})", (endedBefore,))
    count = db.execute(
        "DELETE FROM contact WHERE ended IS NOT NULL AND ended < ?",
        (endedBefore,),
    ).rowcount
    return int(count), originals
