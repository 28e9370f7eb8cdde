# -*- test-case-name: tests.test_store -*-
"""
The statements on contacts that both stores run, written once with C{?}
placeholders over any connection or cursor whose C{execute} takes them.
"""

from __future__ import annotations

import json
from typing import Any, Protocol, Sequence

from ace_mail.store._contact import Contact, ContactQuery


class Executor(Protocol):
    """
    A SQLite connection, or a PostgreSQL cursor made to take C{?}.
    """

    def execute(self, statement: str, arguments: Sequence[Any] = ..., /) -> Any: ...


COLUMNS = (
    "id, entrance, customerAddress, customerName, subject, messageId,"
    " messageReferences, externalId, created, ended"
)
INSERT = f"INSERT INTO contact ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_SELECT = f"SELECT {COLUMNS} FROM contact WHERE id = ?"


def contactRow(contact: Contact) -> tuple[Any, ...]:
    """
    @return: The values of L{INSERT} for C{contact}.
    """
    return (
        contact.id,
        contact.entrance,
        contact.customerAddress,
        contact.customerName,
        contact.subject,
        contact.messageId,
        json.dumps(list(contact.references)),
        contact.externalId,
        contact.created,
        contact.ended,
    )


def contactFromRow(row: Sequence[Any]) -> Contact:
    """
    @return: The contact of a row of L{COLUMNS}.
    """
    id, entrance, address, name, subject, messageId, refs, externalId = row[:8]
    return Contact(
        id=id,
        entrance=entrance,
        customerAddress=address,
        customerName=name,
        subject=subject,
        messageId=messageId,
        references=tuple(json.loads(refs)),
        externalId=externalId,
        created=row[8],
        ended=row[9],
    )


def insert(db: Executor, contact: Contact) -> Contact:
    db.execute(INSERT, contactRow(contact))
    return contact


def select(db: Executor, contactId: str) -> Contact | None:
    row = db.execute(_SELECT, (contactId,)).fetchone()
    return None if row is None else contactFromRow(row)


def end(db: Executor, contactId: str, now: float) -> tuple[bool, Contact | None]:
    """
    @return: Whether this call ended the contact, and the contact as it now
        is.
    """
    cursor = db.execute(
        "UPDATE contact SET ended = ? WHERE id = ? AND ended IS NULL",
        (now, contactId),
    )
    return bool(cursor.rowcount), select(db, contactId)


def listContacts(db: Executor, query: ContactQuery) -> list[Contact]:
    conditions = ["(ended IS NULL OR ended >= ?)"]
    arguments: list[Any] = [query.endedSince]
    if query.state == "open":
        conditions.append("ended IS NULL")
    elif query.state == "ended":
        conditions.append("ended IS NOT NULL")
    if query.entrance is not None:
        conditions.append("entrance = ?")
        arguments.append(query.entrance)
    if query.createdSince is not None:
        conditions.append("created >= ?")
        arguments.append(query.createdSince)
    if query.after is not None:
        conditions.append("(created, id) > (?, ?)")
        arguments.extend(query.after)
    statement = (
        f"SELECT {COLUMNS} FROM contact WHERE {' AND '.join(conditions)}"
        " ORDER BY created, id LIMIT ?"
    )
    rows = db.execute(statement, (*arguments, query.limit)).fetchall()
    return [contactFromRow(row) for row in rows]


def count(db: Executor, endedSince: float) -> dict[str, int]:
    total, ended, expired = db.execute(
        "SELECT (SELECT count(*) FROM contact),"
        " (SELECT count(*) FROM contact WHERE ended >= ?),"
        " (SELECT count(*) FROM contact WHERE ended < ?)",
        (endedSince, endedSince),
    ).fetchone()
    return {"open": total - ended - expired, "ended": ended, "expired": expired}


def ping(db: Executor) -> None:
    db.execute("SELECT id FROM contact LIMIT 1").fetchall()
