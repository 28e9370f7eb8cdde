# -*- test-case-name: tests.test_store,tests.test_intakestore,tests.test_intakestore_nodes -*-
"""
The contact store in PostgreSQL, which several ace-mail nodes share.
"""

from __future__ import annotations

import io
import os
from typing import Any, BinaryIO, Callable, Sequence, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from twisted.enterprise.adbapi import (
    Connection,
    ConnectionLost,
    ConnectionPool,
    Transaction,
)
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ace_mail._time import utcText
from ace_mail.store import _contactsql as contacts
from ace_mail.store import _intakesql as intake
from ace_mail.store._contact import Contact, ContactQuery, newContactId
from ace_mail.store._intake import DUPLICATE, Arrival, Dispatch, Plan, Taken
from ace_mail.store._interface import (
    ContactStoreError,
    IContactStore,
    IIntakeStore,
    ILeases,
)
from ace_mail.store._originals import openFile, removeFiles
from ace_mail.store._postgresschema import MIGRATIONS

_log = Logger()
_T = TypeVar("_T")

_MIGRATION_LOCK = 0x41CE0001
"""
The advisory lock that one node holds while it migrates the schema.
"""

_ANSWER_LOCK = 0x41CE
"""
The first key of the transaction's advisory lock on a customer's address,
under which the automatic answers sent to it are counted and added.
"""

STORE_UNREACHABLE: tuple[type[Exception], ...] = (
    psycopg.OperationalError,
    ConnectionLost,
)
"""
What a call fails with when the database cannot be reached, rather than
because of a mistake in ace-mail.
"""

_CONNECT_TIMEOUT = 5
"""
How long, in seconds, a connection attempt may take unless the address sets
C{connect_timeout}.
"""


def shownAddress(dsn: str) -> str:
    """
    @return: C{dsn} as a C{postgresql://} URI without its password, fit for
        logs and complaints.
    @raise ContactStoreError: If C{dsn} is not a PostgreSQL address.
    """
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.Error:
        raise ContactStoreError(
            "--store: this is not a PostgreSQL address; write it as "
            "postgresql://USER:PASSWORD@HOST:PORT/DATABASE."
        ) from None
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host') or ''}{port}/{parts.get('dbname') or ''}"


class _Cursor:
    """
    A cursor of an adbapi transaction that takes the shared statements,
    which are written with C{?} placeholders.
    """

    def __init__(self, transaction: Transaction | psycopg.Connection[Any]) -> None:
        self._transaction = transaction

    def execute(self, statement: str, arguments: Sequence[Any] = (), /) -> Any:
        return self._transaction.execute(statement.replace("?", "%s"), arguments)


class _Connection(Connection):
    """
    A pooled connection that, when a transaction failed because the server
    went away, drops itself with one line in the log instead of a traceback,
    so that the pool connects afresh for the next call.
    """

    def rollback(self) -> None:
        if self._connection is None:
            return
        try:
            self._connection.rollback()
        except psycopg.Error as e:
            _log.warn(
                "A connection to the contact store was lost ({reason}); the"
                " next call connects again.",
                reason=str(e).strip() or type(e).__name__,
            )
            self._pool.disconnect(self._connection)


class _Pool(ConnectionPool):
    connectionFactory = _Connection


def _run(transaction: Transaction, work: Callable[..., _T], *arguments: object) -> _T:
    return work(_Cursor(transaction), *arguments)


def _opened(connection: psycopg.Connection[Any]) -> None:
    """
    Set up a new connection of the pool: no statement waits more than ten
    seconds for a lock, so that a call fails rather than hangs.
    """
    connection.execute("SET lock_timeout = '10s'")
    connection.commit()


@implementer(IContactStore, IIntakeStore, ILeases)
class PostgresContactStore:
    """
    The contacts, intake records, stored originals and leases of every node,
    in one PostgreSQL database reached through a pool of connections whose
    work runs in threads, so that the reactor never waits for the database.

    Each change is one transaction, committed before its L{Deferred} fires.
    When the database cannot be reached, the L{Deferred}s fail; the pool
    connects again by itself for the next call, and a failed read is tried
    once more at once on a fresh connection.

    @ivar node: The name of this node.
    @ivar originalsDirectory: Where this node's intake puts each original
        email before it is recorded; once recorded, it is in the database.
    """

    def __init__(
        self, pool: ConnectionPool, shown: str, node: str, originalsDirectory: str
    ) -> None:
        """
        Use L{open} instead.
        """
        self._pool = pool
        self.path = shown
        self.node = node
        self.originalsDirectory = originalsDirectory

    @classmethod
    def open(
        cls, dsn: str, *, node: str, originalsDirectory: str, poolSize: int = 5
    ) -> PostgresContactStore:
        """
        Connect to the database, create or migrate its schema (under an
        advisory lock, so that nodes starting together take turns), and make
        the pool of connections for the calls that follow.

        @param dsn: A libpq connection string or C{postgresql://} URI.
        @param node: The name of this node, in its leases and its pending
            messages.
        @raise ContactStoreError: If the address is not valid, the database
            cannot be reached or migrated, or its schema is newer than this
            code.
        """
        shown = shownAddress(dsn)
        settings: dict[str, Any] = {"application_name": f"ace-mail {node}"[:63]}
        if "connect_timeout" not in conninfo_to_dict(dsn):
            settings["connect_timeout"] = _CONNECT_TIMEOUT
        conninfo = make_conninfo(dsn, **settings)
        try:
            with psycopg.connect(conninfo, autocommit=True) as connection:
                _migrate(connection, shown)
        except psycopg.Error as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e)
            raise ContactStoreError(
                f"{shown}: cannot use the contact store ({reason}); check "
                "--store and that PostgreSQL runs and lets this role in."
            ) from None
        pool = _Pool(
            "psycopg",
            conninfo,
            cp_min=1,
            cp_max=poolSize,
            cp_reconnect=True,
            cp_noisy=False,
            cp_good_sql="SELECT 1",
            cp_openfun=_opened,
        )
        _log.info(
            "Contact store {store} opened for node {node}.", store=shown, node=node
        )
        return cls(pool, shown, node, originalsDirectory)

    def _write(self, work: Callable[..., _T], *arguments: object) -> Deferred[_T]:
        done: Deferred[_T] = self._pool.runInteraction(_run, work, *arguments)
        return done

    def _read(self, work: Callable[..., _T], *arguments: object) -> Deferred[_T]:
        def again(failure: Failure) -> Deferred[_T]:
            failure.trap(*STORE_UNREACHABLE)
            return self._write(work, *arguments)

        return self._write(work, *arguments).addErrback(again)

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
        return self._write(contacts.insert, contact).addCallback(self._created)

    def _created(self, contact: Contact) -> Contact:
        _log.info(
            "Contact {contactId} created for entrance {entrance}.",
            contactId=contact.id,
            entrance=contact.entrance,
        )
        return contact

    def get(self, contactId: str) -> Deferred[Contact | None]:
        return self._read(contacts.select, contactId.lower())

    def end(self, contactId: str, now: float) -> Deferred[Contact | None]:
        def logged(result: tuple[bool, Contact | None]) -> Contact | None:
            ended, contact = result
            if ended:
                _log.info("Contact {contactId} ended.", contactId=contactId.lower())
            return contact

        return self._write(contacts.end, contactId.lower(), now).addCallback(logged)

    def listContacts(self, query: ContactQuery) -> Deferred[list[Contact]]:
        return self._read(contacts.listContacts, query)

    def countContacts(self, endedSince: float) -> Deferred[dict[str, int]]:
        return self._read(contacts.count, endedSince)

    def ping(self) -> Deferred[None]:
        return self._read(contacts.ping)

    def purge(self, endedBefore: float) -> Deferred[int]:
        def removed(result: tuple[int, list[str]]) -> int:
            count, names = result
            files = removeFiles(self.originalsDirectory, names)
            _log.info(
                "Purged {count} contacts ended before {endedBefore}, their stored"
                " emails and {files} files of this node.",
                count=count,
                endedBefore=utcText(endedBefore),
                files=files,
            )
            return count

        return self._write(_purge, endedBefore).addCallback(removed)

    def seen(self, account: str, uidl: str) -> Deferred[bool]:
        return self._read(intake.seen, account, uidl)

    def retireUidl(
        self, account: str, uidl: str, digest: str, messageId: str | None
    ) -> Deferred[bool]:
        return self._write(intake.retireUidl, account, uidl, digest, messageId)

    def recordArrival(self, arrival: Arrival, plan: Plan) -> Deferred[Taken]:
        """
        Record an arrival and its original, as L{IIntakeStore.recordArrival}
        says.  When another node recorded the same message first (it held
        the account's lease before this one), the primary key of its intake
        record makes this transaction fail; it is then tried once more, and
        so answered as a duplicate.
        """

        def again(failure: Failure) -> Deferred[Taken]:
            failure.trap(psycopg.errors.UniqueViolation)
            _log.info(
                "Account {account}: message {uidl} was recorded by another node"
                " meanwhile.",
                account=arrival.account,
                uidl=arrival.uidl,
            )
            return self._write(self._record, arrival, plan)

        recorded = self._write(self._record, arrival, plan).addErrback(again)
        return recorded.addCallback(self._recorded, arrival)

    def _record(self, db: _Cursor, arrival: Arrival, plan: Plan) -> Taken:
        if arrival.customerAddress:
            db.execute(
                "SELECT pg_advisory_xact_lock(?, hashtext(?))",
                (_ANSWER_LOCK, arrival.customerAddress.lower()),
            )
        taken = intake.recordArrival(db, arrival, plan, self.node)
        if taken.outcome != DUPLICATE:
            path = os.path.join(self.originalsDirectory, arrival.original)
            with open(path, "rb") as f:
                body = f.read()
            db.execute(
                "INSERT INTO original (name, body) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET body = EXCLUDED.body",
                (arrival.original, body),
            )
        return taken

    def _recorded(self, taken: Taken, arrival: Arrival) -> Taken:
        """
        Drop this node's file of an original that is now in the database.
        """
        if taken.outcome != DUPLICATE:
            removeFiles(self.originalsDirectory, [arrival.original])
        return taken

    def addDispatch(self, dispatch: Dispatch) -> Deferred[None]:
        return self._write(intake.addDispatch, dispatch, self.node)

    def settleDispatch(self, queueId: str, state: str) -> Deferred[None]:
        """
        Mark a pending message, without waiting for the mark to reach the
        disk: a mark lost in a crash leaves the message pending, and
        L{ace_mail.intake.Intake.recover} finds it in the spool and marks it
        again, so the wait would buy nothing.
        """
        return self._write(_settleDispatch, queueId, state)

    def pendingDispatches(self) -> Deferred[list[Dispatch]]:
        return self._read(intake.pendingDispatches, self.node)

    def recordMessageId(self, contactId: str, messageId: str) -> Deferred[None]:
        return self._write(_recordMessageId, contactId, messageId)

    def originalOf(self, contactId: str) -> Deferred[str | None]:
        return self._read(intake.originalOf, contactId)

    def readOriginal(self, name: str) -> Deferred[BinaryIO | None]:
        """
        Open a stored original: this node's file when it has one (the
        stand-in email of a contact made through the API), else the copy in
        the database.
        """
        local = openFile(self.originalsDirectory, name)
        if local is not None:
            return succeed(local)
        return self._read(_readOriginal, name)

    def holdLease(self, name: str, seconds: float) -> Deferred[bool]:
        return self._read(_holdLease, name, self.node, seconds)

    def releaseLease(self, name: str) -> Deferred[None]:
        return self._write(_releaseLease, name, self.node)

    def close(self) -> None:
        self._pool.close()


def _purge(db: _Cursor, endedBefore: float) -> tuple[int, list[str]]:
    count, names = intake.purge(db, endedBefore)
    if names:
        db.execute("DELETE FROM original WHERE name = ANY(?)", (names,))
    return count, names


def _settleDispatch(db: _Cursor, queueId: str, state: str) -> None:
    db.execute("SET LOCAL synchronous_commit = off")
    intake.settleDispatch(db, queueId, state)


def _recordMessageId(db: _Cursor, contactId: str, messageId: str) -> None:
    db.execute("SET LOCAL synchronous_commit = off")
    intake.recordMessageId(db, contactId, messageId)


def _readOriginal(db: _Cursor, name: str) -> BinaryIO | None:
    row = db.execute("SELECT body FROM original WHERE name = ?", (name,)).fetchone()
    return None if row is None else io.BytesIO(bytes(row[0]))


def _holdLease(db: _Cursor, name: str, node: str, seconds: float) -> bool:
    """
    Take or renew a lease in one statement, by the database's clock: a row
    for the lease is made if there is none, and taken over if it is this
    node's or has expired.
    """
    row = db.execute(
        "INSERT INTO lease (name, node, expires)"
        " VALUES (?, ?, clock_timestamp() + ? * interval '1 second')"
        " ON CONFLICT (name) DO UPDATE"
        " SET node = EXCLUDED.node, expires = EXCLUDED.expires"
        " WHERE lease.node = EXCLUDED.node OR lease.expires < clock_timestamp()"
        " RETURNING node",
        (name, node, float(seconds)),
    ).fetchone()
    return row is not None


def _releaseLease(db: _Cursor, name: str, node: str) -> None:
    db.execute("DELETE FROM lease WHERE name = ? AND node = ?", (name, node))


def _migrate(connection: psycopg.Connection[Any], shown: str) -> None:
    """
    Bring the schema up to the last of L{MIGRATIONS}, one transaction for
    each step, while holding the migration's advisory lock.
    """
    db = _Cursor(connection)
    known = len(MIGRATIONS)
    db.execute("SELECT pg_advisory_lock(?)", (_MIGRATION_LOCK,))
    try:
        while True:
            with connection.transaction():
                db.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version"
                    " (version INTEGER NOT NULL)"
                )
                row = db.execute("SELECT version FROM schema_version").fetchone()
                if row is None:
                    db.execute("INSERT INTO schema_version (version) VALUES (0)")
                version = 0 if row is None else int(row[0])
                if version > known:
                    raise ContactStoreError(
                        f"{shown}: the contact store has schema version {version},"
                        f" but this ace-mail knows versions up to {known} only;"
                        " upgrade this node to the ace-mail that the others run."
                    )
                if version == known:
                    return
                for statement in MIGRATIONS[version]:
                    db.execute(statement)
                db.execute("UPDATE schema_version SET version = ?", (version + 1,))
            _log.info(
                "Contact store {store} migrated to schema version {version}.",
                store=shown,
                version=version + 1,
            )
    finally:
        db.execute("SELECT pg_advisory_unlock(?)", (_MIGRATION_LOCK,))
