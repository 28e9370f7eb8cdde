# -*- test-case-name: tests.test_store -*-
"""
The contact store in one SQLite file, the embedded default.
"""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any, Sequence

from twisted.internet.defer import Deferred, execute
from twisted.logger import Logger
from zope.interface import implementer

from ace_mail.store import _sqliteintake as intake
from ace_mail.store import _sqlitewebhook as webhook
from ace_mail.store._contact import Contact, ContactQuery, newContactId
from ace_mail.store._intake import Arrival, Dispatch, Plan, Taken
from ace_mail.store._interface import ContactStoreError, IContactStore, IIntakeStore

_log = Logger()

Migration = Sequence[str]
"""
The SQL statements that take the schema from one version to the next.
"""

MIGRATIONS: Sequence[Migration] = (
    (
        """
        CREATE TABLE contact (
            id TEXT NOT NULL PRIMARY KEY,
            entrance TEXT NOT NULL,
            customerAddress TEXT NOT NULL,
            customerName TEXT NOT NULL,
            subject TEXT NOT NULL,
            messageId TEXT,
            messageReferences TEXT NOT NULL,
            externalId TEXT,
            created REAL NOT NULL,
            ended REAL
        )
        """,
        "CREATE INDEX contactExternalId ON contact (externalId)"
        " WHERE externalId IS NOT NULL",
        "CREATE INDEX contactEnded ON contact (ended) WHERE ended IS NOT NULL",
    ),
    intake.MIGRATION,
    ("CREATE INDEX contactCreated ON contact (created, id)",),
    webhook.MIGRATION,
)
"""
Every migration in order: the one at index I{n} takes the schema from version
I{n} to version I{n + 1}, so the current version is the length of the list.
Version 0 is an empty database.

The contact table keeps its rowid: filled with 2 million contacts in random id
order it loaded about 1.5 times as fast as a WITHOUT ROWID table and came out
8% smaller, and it answered lookups by id as fast (bench/contact_lookup.py).
"""

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


def _contactFromRow(row: tuple[Any, ...]) -> Contact:
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


def migrate(
    connection: sqlite3.Connection, path: str, migrations: Sequence[Migration]
) -> None:
    """
    Bring the schema up to the last of C{migrations}, one transaction for
    each step, so that a failed step leaves the previous version in place.

    @param connection: A connection in autocommit mode.
    @param path: The file, named in every complaint.
    @raise ContactStoreError: If the database has a newer version than the
        last of C{migrations}.
    @raise sqlite3.Error: If a step fails.
    """
    known = len(migrations)
    while True:
        connection.execute("BEGIN IMMEDIATE")
        try:
            version = _readVersion(connection)
            if version > known:
                raise ContactStoreError(
                    f"{path}: the contact store has schema version {version}, "
                    f"but this ace-mail knows versions up to {known} only; run "
                    "the newer ace-mail that wrote it, or choose another data "
                    "directory."
                )
            if version == known:
                connection.execute("COMMIT")
                return
            for statement in migrations[version]:
                connection.execute(statement)
            connection.execute("UPDATE schema_version SET version = ?", (version + 1,))
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        _log.info(
            "Contact store {path} migrated to schema version {version}.",
            path=path,
            version=version + 1,
        )


def _readVersion(connection: sqlite3.Connection) -> int:
    """
    Read the schema version inside the current transaction, creating the
    version table of an empty database at version 0.
    """
    connection.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
    )
    row = connection.execute("SELECT version FROM schema_version").fetchone()
    if row is None:
        connection.execute("INSERT INTO schema_version (version) VALUES (0)")
        return 0
    return int(row[0])


@implementer(IContactStore, IIntakeStore)
class SQLiteContactStore:
    """
    The contacts in one SQLite file in WAL mode with full synchronisation, so
    that a contact is on disk when L{create} fires.

    Each call is one short statement on an indexed column, or one short
    transaction, run in the calling thread; the L{Deferred} it returns has
    already fired.

    @ivar path: The database file.
    @ivar originalsDirectory: The directory of the stored original emails.
    """

    def __init__(
        self, connection: sqlite3.Connection, path: str, originalsDirectory: str
    ) -> None:
        """
        Use L{open} instead.
        """
        self._connection = connection
        self.path = path
        self.originalsDirectory = originalsDirectory

    @classmethod
    def open(cls, path: str) -> SQLiteContactStore:
        """
        Open the store in C{path}, creating it or migrating its schema.  The
        stored originals are kept in the directory C{originals} beside it.

        @raise ContactStoreError: If the file cannot be opened, is not a
            SQLite database, has a schema newer than this code knows, or
            cannot be migrated.
        """
        try:
            connection = sqlite3.connect(path, isolation_level=None, timeout=10)
        except sqlite3.Error as e:
            raise ContactStoreError(
                f"{path}: cannot open the contact store ({e}); check that the "
                "data directory exists and is writable."
            ) from None
        try:
            connection.execute("PRAGMA journal_mode = WAL").fetchone()
            connection.execute("PRAGMA synchronous = FULL")
            migrate(connection, path, MIGRATIONS)
        except sqlite3.DatabaseError as e:
            connection.close()
            if "not a database" in str(e):
                raise ContactStoreError(
                    f"{path}: this file is not a SQLite database, so it cannot "
                    "be the contact store; move it away or choose another data "
                    "directory."
                ) from None
            raise ContactStoreError(
                f"{path}: cannot prepare the contact store ({e}); check the file "
                "and its directory."
            ) from None
        except ContactStoreError:
            connection.close()
            raise
        originals = os.path.join(os.path.dirname(os.path.abspath(path)), "originals")
        return cls(connection, path, originals)

    def create(
        self,
        *,
        entrance: str,
        customerAddress: str,
        customerName: str,
        subject: str,
        messageId: str | None,
        references: tuple[str, ...],
        externalId: str | None,
        now: float,
    ) -> Deferred[Contact]:
        contact = Contact(
            id=newContactId(),
            entrance=entrance,
            customerAddress=customerAddress,
            customerName=customerName,
            subject=subject,
            messageId=messageId,
            references=references,
            externalId=externalId,
            created=now,
            ended=None,
        )
        return execute(self._insert, contact)

    def _insert(self, contact: Contact) -> Contact:
        self._connection.execute(INSERT, contactRow(contact))
        _log.info(
            "Contact {contactId} created for entrance {entrance}.",
            contactId=contact.id,
            entrance=contact.entrance,
        )
        return contact

    def get(self, contactId: str) -> Deferred[Contact | None]:
        return execute(self._select, contactId.lower())

    def _select(self, contactId: str) -> Contact | None:
        row = self._connection.execute(_SELECT, (contactId,)).fetchone()
        return None if row is None else _contactFromRow(row)

    def end(self, contactId: str, now: float) -> Deferred[Contact | None]:
        return execute(self._end, contactId.lower(), now)

    def _end(self, contactId: str, now: float) -> Contact | None:
        cursor = self._connection.execute(
            "UPDATE contact SET ended = ? WHERE id = ? AND ended IS NULL",
            (now, contactId),
        )
        if cursor.rowcount:
            _log.info("Contact {contactId} ended.", contactId=contactId)
        return self._select(contactId)

    def purge(self, endedBefore: float) -> Deferred[int]:
        return execute(self._purge, endedBefore)

    def _purge(self, endedBefore: float) -> int:
        count, names = intake.purge(self._connection, endedBefore)
        originals = []
        for name in names:
            try:
                os.unlink(os.path.join(self.originalsDirectory, name))
            except FileNotFoundError:
                continue
            originals.append(name)
        if originals:
            fd = os.open(self.originalsDirectory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _log.info(
            "Purged {count} contacts ended before {endedBefore} and {originals}"
            " stored emails.",
            count=count,
            endedBefore=endedBefore,
            originals=len(originals),
        )
        return count

    def seen(self, account: str, uidl: str) -> Deferred[bool]:
        return execute(intake.seen, self._connection, account, uidl)

    def retireUidl(
        self, account: str, uidl: str, digest: str, messageId: str | None
    ) -> Deferred[bool]:
        return execute(
            intake.retireUidl, self._connection, account, uidl, digest, messageId
        )

    def recordArrival(self, arrival: Arrival, plan: Plan) -> Deferred[Taken]:
        return execute(
            intake.recordArrival, self._connection, INSERT, contactRow, arrival, plan
        )

    def addDispatch(self, dispatch: Dispatch) -> Deferred[None]:
        return execute(intake.addDispatch, self._connection, dispatch)

    def settleDispatch(self, queueId: str, state: str) -> Deferred[None]:
        return execute(intake.settleDispatch, self._connection, queueId, state)

    def pendingDispatches(self) -> Deferred[list[Dispatch]]:
        return execute(intake.pendingDispatches, self._connection)

    def recordMessageId(self, contactId: str, messageId: str) -> Deferred[None]:
        return execute(intake.recordMessageId, self._connection, contactId, messageId)

    def originalOf(self, contactId: str) -> Deferred[str | None]:
        return execute(intake.originalOf, self._connection, contactId)

    def listContacts(self, query: ContactQuery) -> Deferred[list[Contact]]:
        return execute(self._list, query)

    def _list(self, query: ContactQuery) -> list[Contact]:
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
        rows = self._connection.execute(statement, (*arguments, query.limit))
        return [_contactFromRow(row) for row in rows]

    def countContacts(self, endedSince: float) -> Deferred[dict[str, int]]:
        return execute(self._count, endedSince)

    def _count(self, endedSince: float) -> dict[str, int]:
        total, ended, expired = self._connection.execute(
            "SELECT (SELECT count(*) FROM contact),"
            " (SELECT count(*) FROM contact WHERE ended >= ?),"
            " (SELECT count(*) FROM contact WHERE ended < ?)",
            (endedSince, endedSince),
        ).fetchone()
        return {"open": total - ended - expired, "ended": ended, "expired": expired}

    def ping(self) -> Deferred[None]:
        return execute(self._ping)

    def _ping(self) -> None:
        self._connection.execute("SELECT id FROM contact LIMIT 1").fetchall()

    def close(self) -> None:
        self._connection.close()
