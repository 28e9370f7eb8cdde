# -*- test-case-name: tests.test_store -*-
"""
The contact store in one SQLite file, the embedded default.
"""

from __future__ import annotations

import os
import sqlite3
from typing import BinaryIO, Callable, Sequence, TypeVar

from twisted.internet.defer import Deferred, execute
from twisted.logger import Logger
from zope.interface import implementer

from ace_mail._time import utcText
from ace_mail.store import _contactsql as contacts
from ace_mail.store import _intakesql as intake
from ace_mail.store import _sqlitewebhook as webhook
from ace_mail.store._contact import Contact, ContactQuery, newContactId
from ace_mail.store._intake import Arrival, Dispatch, Plan, Taken
from ace_mail.store._interface import ContactStoreError, IContactStore, IIntakeStore
from ace_mail.store._originals import openFile, removeFiles
from ace_mail.store._sqlitetx import transaction

_log = Logger()
_T = TypeVar("_T")

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
    ("ALTER TABLE dispatch ADD COLUMN node TEXT NOT NULL DEFAULT ''",),
)
"""
Every migration in order: the one at index I{n} takes the schema from version
I{n} to version I{n + 1}, so the current version is the length of the list.
Version 0 is an empty database.

The contact table keeps its rowid: filled with 2 million contacts in random id
order it loaded about 1.5 times as fast as a WITHOUT ROWID table and came out
8% smaller, and it answered lookups by id as fast (bench/contact_lookup.py).
Version 5 notes which node made each pending message; a SQLite store is one
node, so its pending messages all have the node C{""}.
"""

_NODE = ""


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
        contacts.insert(self._connection, contact)
        _log.info(
            "Contact {contactId} created for entrance {entrance}.",
            contactId=contact.id,
            entrance=contact.entrance,
        )
        return contact

    def get(self, contactId: str) -> Deferred[Contact | None]:
        return execute(contacts.select, self._connection, contactId.lower())

    def end(self, contactId: str, now: float) -> Deferred[Contact | None]:
        return execute(self._end, contactId.lower(), now)

    def _end(self, contactId: str, now: float) -> Contact | None:
        ended, contact = contacts.end(self._connection, contactId, now)
        if ended:
            _log.info("Contact {contactId} ended.", contactId=contactId)
        return contact

    def purge(self, endedBefore: float) -> Deferred[int]:
        return execute(self._purge, endedBefore)

    def _purge(self, endedBefore: float) -> int:
        with transaction(self._connection):
            count, names = intake.purge(self._connection, endedBefore)
        removed = removeFiles(self.originalsDirectory, names)
        _log.info(
            "Purged {count} contacts ended before {endedBefore} and {originals}"
            " stored emails.",
            count=count,
            endedBefore=utcText(endedBefore),
            originals=removed,
        )
        return count

    def seen(self, account: str, uidl: str) -> Deferred[bool]:
        return execute(intake.seen, self._connection, account, uidl)

    def retireUidl(
        self, account: str, uidl: str, digest: str, messageId: str | None
    ) -> Deferred[bool]:
        return execute(
            self._inTransaction, intake.retireUidl, account, uidl, digest, messageId
        )

    def recordArrival(self, arrival: Arrival, plan: Plan) -> Deferred[Taken]:
        return execute(self._inTransaction, intake.recordArrival, arrival, plan, _NODE)

    def addDispatch(self, dispatch: Dispatch) -> Deferred[None]:
        return execute(self._inTransaction, intake.addDispatch, dispatch, _NODE)

    def _inTransaction(self, change: Callable[..., _T], *arguments: object) -> _T:
        with transaction(self._connection):
            return change(self._connection, *arguments)

    def settleDispatch(self, queueId: str, state: str) -> Deferred[None]:
        return execute(intake.settleDispatch, self._connection, queueId, state)

    def pendingDispatches(self) -> Deferred[list[Dispatch]]:
        return execute(intake.pendingDispatches, self._connection, _NODE)

    def recordMessageId(self, contactId: str, messageId: str) -> Deferred[None]:
        return execute(
            _withoutFsync,
            self._connection,
            intake.recordMessageId,
            contactId,
            messageId,
        )

    def originalOf(self, contactId: str) -> Deferred[str | None]:
        return execute(intake.originalOf, self._connection, contactId)

    def readOriginal(self, name: str) -> Deferred[BinaryIO | None]:
        return execute(openFile, self.originalsDirectory, name)

    def listContacts(self, query: ContactQuery) -> Deferred[list[Contact]]:
        return execute(contacts.listContacts, self._connection, query)

    def countContacts(self, endedSince: float) -> Deferred[dict[str, int]]:
        return execute(contacts.count, self._connection, endedSince)

    def ping(self) -> Deferred[None]:
        return execute(contacts.ping, self._connection)

    def close(self) -> None:
        self._connection.close()


def _withoutFsync(
    connection: sqlite3.Connection, change: Callable[..., None], *arguments: object
) -> None:
    """
    Commit one change that may be lost with the machine, but not with the
    process: in WAL mode, a commit at C{synchronous = NORMAL} is written to
    the log without an fsync, and reaches the disk with the next commit
    that syncs or the next checkpoint.  The connection syncs fully again
    afterwards.
    """
    connection.execute("PRAGMA synchronous = NORMAL")
    try:
        change(connection, *arguments)
    finally:
        connection.execute("PRAGMA synchronous = FULL")
