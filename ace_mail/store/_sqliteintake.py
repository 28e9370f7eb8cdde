# -*- test-case-name: tests.test_intakestore -*-
"""
The intake records of the SQLite contact store: the messages taken from each
account, the Message-IDs sent for each contact, and the answers and physical
emails to send.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from typing import Any, Iterator

from ace_mail.store._contact import Contact
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
The schema of intake: migration 2 of the contact store.  Intake rows outlive
their contacts (only the original's name is cleared), so that a message left
on the server is never taken again.
"""

_DISPATCH = "queueId, kind, contactId, recipient, messageId, original, created, state"
_OPEN = "(ended IS NULL OR ended >= ?)"


@contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """
    Run the statements of a C{with} block in one transaction, rolled back if
    the block raises.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def seen(connection: sqlite3.Connection, account: str, uidl: str) -> bool:
    row = connection.execute(
        "SELECT 1 FROM intake WHERE account = ? AND uidl = ?", (account, uidl)
    ).fetchone()
    return row is not None


def retireUidl(
    connection: sqlite3.Connection,
    account: str,
    uidl: str,
    digest: str,
    messageId: str | None,
) -> bool:
    """
    Free a seen UIDL that the server gave to another message; see
    L{ace_mail.store.IIntakeStore.retireUidl}.  The earlier record keeps
    its contact and original under the key C{"UIDL ROWID"}, which no UIDL
    can be, as a UIDL has no space.
    """
    with transaction(connection):
        row = connection.execute(
            "SELECT rowid, digest, messageId FROM intake"
            " WHERE account = ? AND uidl = ?",
            (account, uidl),
        ).fetchone()
        if row is None:
            return True
        rowid, earlierDigest, earlierMessageId = row
        if earlierDigest == digest or (
            messageId is not None and earlierMessageId == messageId
        ):
            return False
        connection.execute(
            "UPDATE intake SET uidl = ? WHERE rowid = ?", (f"{uidl} {rowid}", rowid)
        )
    return True


def recordArrival(
    connection: sqlite3.Connection,
    insertContact: str,
    contactRow: Any,
    arrival: Arrival,
    plan: Plan,
) -> Taken:
    """
    Decide and record an arrival in one transaction; see
    L{ace_mail.store.IIntakeStore.recordArrival}.

    @param insertContact: The statement that inserts a contact.
    @param contactRow: Makes its values from a L{Contact}.
    """
    with transaction(connection):
        taken = _decide(connection, arrival, plan)
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
            connection.execute(insertContact, contactRow(contact))
        connection.execute(
            "INSERT INTO intake (account, uidl, digest, messageId, outcome,"
            " contactId, original, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
            _insertDispatch(connection, dispatch)
    return taken


def _decide(connection: sqlite3.Connection, arrival: Arrival, plan: Plan) -> Taken:
    earlier = connection.execute(
        "SELECT contactId FROM intake WHERE account = ? AND uidl = ?",
        (arrival.account, arrival.uidl),
    ).fetchone()
    if earlier is None:
        earlier = connection.execute(
            "SELECT contactId FROM intake WHERE account = ? AND digest = ?"
            " AND messageId IS ? LIMIT 1",
            (arrival.account, arrival.digest, arrival.messageId),
        ).fetchone()
    if earlier is not None:
        return Taken(DUPLICATE, earlier[0])
    if arrival.customerAddress is None:
        return Taken(REFUSED, None)

    contactId = _thread(connection, arrival, plan.endedAfter)
    outcome = THREADED
    dispatches = []
    if contactId is None:
        contactId, outcome = arrival.newContactId, CREATED
        recipient = arrival.customerAddress.lower()
        if (
            plan.answer is not None
            and _answers(connection, recipient, arrival.received - plan.answerWindow)
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


def _thread(
    connection: sqlite3.Connection, arrival: Arrival, endedAfter: float
) -> str | None:
    """
    @return: The open or unexpired contact of the arrival's entrance that
        the arrival answers, by the Message-IDs it names and then by the tag
        in its subject, or L{None}.
    """
    for messageId in arrival.threadIds:
        row = connection.execute(
            "SELECT contact.id FROM sentMessage JOIN contact"
            " ON contact.id = sentMessage.contactId"
            f" WHERE sentMessage.messageId = ? AND entrance = ? AND {_OPEN}",
            (messageId, arrival.entrance, endedAfter),
        ).fetchone()
        if row is not None:
            return str(row[0])
    if arrival.tag is not None:
        row = connection.execute(
            f"SELECT id FROM contact WHERE id = ? AND entrance = ? AND {_OPEN}",
            (arrival.tag.lower(), arrival.entrance, endedAfter),
        ).fetchone()
        if row is not None:
            return str(row[0])
    return None


def _answers(connection: sqlite3.Connection, recipient: str, since: float) -> int:
    row = connection.execute(
        "SELECT count(*) FROM dispatch WHERE kind = ? AND recipient = ?"
        " AND created > ?",
        (ANSWER, recipient, since),
    ).fetchone()
    return int(row[0])


def _insertDispatch(connection: sqlite3.Connection, dispatch: Dispatch) -> None:
    connection.execute(
        f"INSERT INTO dispatch ({_DISPATCH}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            dispatch.queueId,
            dispatch.kind,
            dispatch.contactId,
            dispatch.recipient,
            dispatch.messageId,
            dispatch.original,
            dispatch.created,
            dispatch.state,
        ),
    )
    recordMessageId(connection, dispatch.contactId, dispatch.messageId)


def addDispatch(connection: sqlite3.Connection, dispatch: Dispatch) -> None:
    with transaction(connection):
        _insertDispatch(connection, dispatch)


def settleDispatch(connection: sqlite3.Connection, queueId: str, state: str) -> None:
    connection.execute(
        "UPDATE dispatch SET state = ? WHERE queueId = ?", (state, queueId)
    )


def pendingDispatches(connection: sqlite3.Connection) -> list[Dispatch]:
    rows = connection.execute(
        f"SELECT {_DISPATCH} FROM dispatch WHERE state = ? ORDER BY created, rowid",
        (PENDING,),
    ).fetchall()
    return [Dispatch(*row) for row in rows]


def recordMessageId(
    connection: sqlite3.Connection, contactId: str, messageId: str
) -> None:
    connection.execute(
        "INSERT OR IGNORE INTO sentMessage (messageId, contactId) VALUES (?, ?)",
        (messageId, contactId.lower()),
    )


def originalOf(connection: sqlite3.Connection, contactId: str) -> str | None:
    row = connection.execute(
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


def purge(connection: sqlite3.Connection, endedBefore: float) -> tuple[int, list[str]]:
    """
    Delete the contacts ended before a time with their dispatches and sent
    Message-IDs, and clear the names of their originals from the intake
    records, in one transaction.

    @return: The number of contacts deleted, and the names of the originals
        that the caller now deletes.
    """
    doomed = "SELECT id FROM contact WHERE ended IS NOT NULL AND ended < ?"
    with transaction(connection):
        originals = [
            str(row[0])
            for row in connection.execute(
                f"SELECT original FROM intake WHERE contactId IN ({doomed})"
                " AND original IS NOT NULL",
                (endedBefore,),
            )
        ]
        originals.extend(
            standInName(str(row[0]))
            for row in connection.execute(doomed, (endedBefore,))
        )
        connection.execute(
            f"UPDATE intake SET original = NULL WHERE contactId IN ({doomed})",
            (endedBefore,),
        )
        for table in ("dispatch", "sentMessage"):
            connection.execute(
                f"DELETE FROM {table} WHERE contactId IN ({doomed})", (endedBefore,)
            )
        count = connection.execute(
            "DELETE FROM contact WHERE ended IS NOT NULL AND ended < ?",
            (endedBefore,),
        ).rowcount
    return count, originals
