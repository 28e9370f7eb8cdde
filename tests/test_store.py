"""
Tests for L{ace_mail.store}: contact ids, entrances, and the contact stores
in SQLite and in PostgreSQL with their migrations.  The PostgreSQL tests use
the server that C{ACE_MAIL_TEST_POSTGRES} names (see L{tests.pgharness}).
"""

from __future__ import annotations

import email.policy
import os
import secrets
import socket
import sqlite3
import threading
from email.header import decode_header, make_header
from email.parser import BytesParser
from typing import Any

from attrs import evolve
from psycopg.conninfo import conninfo_to_dict
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from ace_mail.store import (
    CONTACT_ID_LENGTH,
    Contact,
    ContactQuery,
    ContactStoreError,
    Entrance,
    IContactStore,
    IIntakeStore,
    ILeases,
    PostgresContactStore,
    SQLiteContactStore,
    isContactId,
    newContactId,
)
from ace_mail.store._postgres import STORE_UNREACHABLE
from ace_mail.store._postgresschema import MIGRATIONS as POSTGRES_MIGRATIONS
from ace_mail.store._sqlite import MIGRATIONS, migrate
from tests.pgharness import PostgresStoreCase, execute, password, schemaDsn

_HOURS = 3600.0


class ContactIdTests(SynchronousTestCase):
    """
    Contact ids cannot be guessed and survive mail servers that fold case.
    """

    def test_wellFormed(self) -> None:
        """
        Every id is 20 lowercase base32 digits, which carry 100 bits.
        """
        self.assertGreaterEqual(CONTACT_ID_LENGTH * 5, 80)
        for _ in range(2000):
            contactId = newContactId()
            self.assertRegex(contactId, r"^[a-z2-7]{20}$")
            self.assertTrue(isContactId(contactId))

    def test_unique(self) -> None:
        """
        200,000 ids are all different.
        """
        ids = {newContactId() for _ in range(200_000)}
        self.assertEqual(len(ids), 200_000)

    def test_everyDigitRandom(self) -> None:
        """
        Each of the 20 positions takes all 32 base32 digits over a sample,
        so none of them is fixed or biased towards a few values.
        """
        ids = [newContactId() for _ in range(5000)]
        for position in range(CONTACT_ID_LENGTH):
            self.assertEqual(len({contactId[position] for contactId in ids}), 32)

    def test_isContactId(self) -> None:
        """
        L{isContactId} accepts an id in folded upper case and refuses the
        wrong length and digits outside lowercase base32.
        """
        contactId = newContactId()
        self.assertTrue(isContactId(contactId.upper()))
        self.assertFalse(isContactId(contactId[:-1]))
        self.assertFalse(isContactId(contactId + "a"))
        self.assertFalse(isContactId("0" + contactId[1:]))
        self.assertFalse(isContactId("8" + contactId[1:]))
        self.assertFalse(isContactId(""))


def _decodedMailbox(formatted: str) -> tuple[str, str]:
    """
    Read C{formatted} as a From header the way a mail reader does.  The
    address comes from the email package; the display name from its RFC
    2047 decoder, as the phrase parser of the email package keeps the white
    space between adjacent encoded words, which RFC 2047 says to drop.
    """
    message = BytesParser(policy=email.policy.default).parsebytes(
        b"From: " + formatted.encode("ascii") + b"\r\n\r\n"
    )
    [address] = message["From"].addresses
    phrase = formatted.rpartition(" <")[0]
    if phrase.startswith('"'):
        return address.display_name, address.addr_spec
    return str(make_header(decode_header(phrase))), address.addr_spec


class MailboxTests(SynchronousTestCase):
    """
    L{Entrance.formatted} and L{Contact.formattedCustomer} write RFC 5322
    mailboxes.
    """

    def test_quoted(self) -> None:
        """
        A printable ASCII display name is a quoted string.
        """
        entrance = Entrance("default", "support@example.com", "Support")
        self.assertEqual(entrance.formatted(), '"Support" <support@example.com>')

    def test_specials(self) -> None:
        """
        Quotes and backslashes in a display name are escaped, and a comma
        does not split the mailbox.
        """
        entrance = Entrance("default", "support@example.com", 'Acme, "Help" \\ Desk')
        self.assertEqual(
            _decodedMailbox(entrance.formatted()),
            ('Acme, "Help" \\ Desk', "support@example.com"),
        )

    def test_nonAscii(self) -> None:
        """
        A display name outside ASCII is written as encoded words that a
        mail reader decodes back, and the header stays ASCII.
        """
        name = "Kundendienst Müller & Söhne – 日本語サポート " * 3
        entrance = Entrance("default", "support@example.com", name)
        formatted = entrance.formatted()
        self.assertTrue(formatted.isascii())
        for word in formatted.split():
            self.assertLessEqual(len(word), 75)
        self.assertEqual(
            _decodedMailbox(formatted), (name.strip(), "support@example.com")
        )

    def test_controlCharacters(self) -> None:
        """
        CR and LF in a display name become spaces, so that no name can add a
        header line.
        """
        entrance = Entrance("default", "support@example.com", "Support\r\nBcc: x@y")
        self.assertNotIn("\r", entrance.formatted())
        self.assertNotIn("\n", entrance.formatted())

    def test_noDisplayName(self) -> None:
        """
        Without a display name the mailbox is the address in angle brackets.
        """
        contact = _contact(customerName="")
        self.assertEqual(contact.formattedCustomer(), "<customer@example.net>")

    def test_customer(self) -> None:
        """
        L{Contact.formattedCustomer} names the customer with the display
        name.
        """
        contact = _contact(customerName="Jürgen Kunde")
        self.assertEqual(
            _decodedMailbox(contact.formattedCustomer()),
            ("Jürgen Kunde", "customer@example.net"),
        )


def _contact(**changes: object) -> Contact:
    values: dict[str, object] = dict(
        id="abcdefghijklmnopqrst",
        entrance="default",
        customerAddress="customer@example.net",
        customerName="Customer",
        subject="Question",
        messageId="<m1@example.net>",
        references=(),
        externalId=None,
        created=0.0,
        ended=None,
    )
    values.update(changes)
    return Contact(**values)  # type: ignore[arg-type]


def _values(**changes: object) -> dict[str, object]:
    """
    @return: The arguments of a store's C{create}, with C{changes}.
    """
    values: dict[str, object] = dict(
        entrance="default",
        customerAddress="customer@example.net",
        customerName="Jürgen Kunde",
        subject="Frage zur Rechnung",
        messageId="<m1@example.net>",
        references=("<r1@example.net>", "<r2@example.net>"),
        externalId="4711",
        now=1000.0,
    )
    values.update(changes)
    return values


class ContactStoreTestsMixin:
    """
    What every contact store does with contacts, for a test case that opens
    one as C{self.store}.
    """

    store: Any

    async def create(self, now: float = 1000.0, **changes: object) -> Contact:
        contact: Contact = await self.store.create(**_values(now=now, **changes))
        return contact

    def test_interface(self) -> None:
        """
        The store provides L{IContactStore} and L{IIntakeStore}.
        """
        self.assertTrue(verifyObject(IContactStore, self.store))
        self.assertTrue(verifyObject(IIntakeStore, self.store))

    async def test_create(self) -> None:
        """
        C{create} makes an open contact with a new well-formed id and
        everything it was given.
        """
        contact = await self.create(now=1234.5)
        self.assertTrue(isContactId(contact.id))
        self.assertEqual(
            contact,
            Contact(
                id=contact.id,
                entrance="default",
                customerAddress="customer@example.net",
                customerName="Jürgen Kunde",
                subject="Frage zur Rechnung",
                messageId="<m1@example.net>",
                references=("<r1@example.net>", "<r2@example.net>"),
                externalId="4711",
                created=1234.5,
                ended=None,
            ),
        )
        self.assertNotEqual((await self.create()).id, contact.id)

    async def test_get(self) -> None:
        """
        C{get} gives back the contact as created, also for its id in upper
        case, and L{None} for an unknown id.
        """
        contact = await self.create()
        self.assertEqual(await self.store.get(contact.id), contact)
        self.assertEqual(await self.store.get(contact.id.upper()), contact)
        self.assertIsNone(await self.store.get(newContactId()))

    async def test_noneAndEmptyValues(self) -> None:
        """
        A contact without Message-ID, references, external id or customer
        name reads back the same.
        """
        contact = await self.create(
            messageId=None, references=(), externalId=None, customerName=""
        )
        self.assertEqual(await self.store.get(contact.id), contact)

    async def test_fractionalTimes(self) -> None:
        """
        Creation and end times keep their fractions of a second.
        """
        contact = await self.create(now=1_700_000_000.123456)
        ended = await self.store.end(contact.id, 1_700_000_001.654321)
        self.assertEqual(await self.store.get(contact.id), ended)
        self.assertEqual(ended.created, 1_700_000_000.123456)
        self.assertEqual(ended.ended, 1_700_000_001.654321)

    async def test_reopenKeepsContacts(self) -> None:
        """
        Contacts, and their end times, are still there after the store is
        closed and opened again.
        """
        contact = await self.create()
        ended = await self.store.end(contact.id, 2000.0)
        self.store.close()
        self.store = self.openStore()
        self.assertEqual(await self.store.get(contact.id), ended)

    async def test_end(self) -> None:
        """
        C{end} records the end time and gives back the ended contact.
        """
        contact = await self.create(now=1000.0)
        ended = await self.store.end(contact.id, 2000.0)
        self.assertEqual(ended, evolve(contact, ended=2000.0))
        self.assertEqual(await self.store.get(contact.id), ended)

    async def test_endTwiceKeepsFirstTime(self) -> None:
        """
        Ending an ended contact again changes nothing: the first end time
        stays.
        """
        contact = await self.create()
        await self.store.end(contact.id, 2000.0)
        again = await self.store.end(contact.id.upper(), 9000.0)
        self.assertEqual(again.ended, 2000.0)

    async def test_endUnknown(self) -> None:
        """
        Ending an unknown contact gives L{None}.
        """
        self.assertIsNone(await self.store.end(newContactId(), 1.0))

    async def test_purge(self) -> None:
        """
        C{purge} deletes the contacts ended before the time and counts them;
        a contact ended exactly then and open contacts stay.
        """
        early = await self.create()
        boundary = await self.create()
        late = await self.create()
        stillOpen = await self.create(now=0.0)
        await self.store.end(early.id, 100.0)
        await self.store.end(boundary.id, 200.0)
        await self.store.end(late.id, 300.0)
        self.assertEqual(await self.store.purge(200.0), 1)
        self.assertIsNone(await self.store.get(early.id))
        for kept in (boundary, late, stillOpen):
            self.assertIsNotNone(await self.store.get(kept.id))
        self.assertEqual(await self.store.purge(200.0), 0)
        self.assertEqual(await self.store.purge(1e12), 2)
        self.assertIsNotNone(await self.store.get(stillOpen.id))

    async def test_retentionBoundaryOnClock(self) -> None:
        """
        With a retention of 120 hours worked out by the caller from a
        L{Clock}, a contact ended exactly 120 hours ago survives a purge, one
        ended a second earlier does not, and half a second later the first
        goes too.
        """
        clock = Clock()
        clock.advance(1_700_000_000)
        contact = await self.create(now=clock.seconds())
        older = await self.create(now=clock.seconds())
        await self.store.end(older.id, clock.seconds() - 1)
        await self.store.end(contact.id, clock.seconds())

        async def purge() -> int:
            purged: int = await self.store.purge(clock.seconds() - 120 * _HOURS)
            return purged

        clock.advance(120 * _HOURS)
        self.assertEqual(await purge(), 1)
        self.assertIsNotNone(await self.store.get(contact.id))
        self.assertIsNone(await self.store.get(older.id))
        self.assertEqual(await purge(), 0)
        clock.advance(0.5)
        self.assertEqual(await purge(), 1)
        self.assertIsNone(await self.store.get(contact.id))

    async def test_visibleToOtherConnection(self) -> None:
        """
        A created contact is committed when its L{Deferred} fires: another
        connection to the database sees it at once.
        """
        contact = await self.create()
        self.assertEqual(self.rowsOutside("SELECT id FROM contact"), [(contact.id,)])

    async def test_countContacts(self) -> None:
        """
        C{countContacts} counts open contacts, contacts ended at or after the
        given time, and contacts ended before it, apart.
        """
        made = [await self.create(customerAddress=f"c{n}@x.example") for n in range(5)]
        for contact, when in zip(made[:3], (2000.0, 3000.0, 3500.0), strict=True):
            await self.store.end(contact.id, when)
        counts = await self.store.countContacts(3000.0)
        self.assertEqual(counts, {"open": 2, "ended": 2, "expired": 1})

    async def test_ping(self) -> None:
        """
        C{ping} answers while the store is open.
        """
        self.assertIsNone(await self.store.ping())


class SQLiteStoreCase(TestCase):
    """
    A test with an L{SQLiteContactStore} in a file of its own.
    """

    def setUp(self) -> None:
        self.path = self.mktemp()
        self.store = self.openStore()
        self.addCleanup(lambda: self.store.close())

    def openStore(self) -> SQLiteContactStore:
        """
        @return: A new store object over this test's file.
        """
        return SQLiteContactStore.open(self.path)

    def rowsOutside(self, statement: str) -> list[tuple[Any, ...]]:
        """
        @return: The rows of C{statement} read through a connection of its
            own, as another program would.
        """
        other = sqlite3.connect(self.path)
        try:
            return other.execute(statement).fetchall()
        finally:
            other.close()


class SQLiteContactStoreTests(ContactStoreTestsMixin, SQLiteStoreCase):
    """
    L{SQLiteContactStore} keeps contacts in one SQLite file.
    """

    def test_walAndFullSync(self) -> None:
        """
        The file is in WAL mode and the store's connection syncs fully, so
        that a created contact is on disk when the Deferred fires.
        """
        self.assertEqual(self.rowsOutside("PRAGMA journal_mode"), [("wal",)])
        synchronous = self.store._connection.execute("PRAGMA synchronous").fetchone()
        self.assertEqual(synchronous, (2,))

    def test_messageIdCommittedWithoutFsync(self) -> None:
        """
        A recorded Message-ID is committed at C{synchronous = NORMAL}, so
        that it costs no fsync of its own, and is seen by other connections
        at once; the connection syncs fully again afterwards.
        """
        statements: list[str] = []
        self.store._connection.set_trace_callback(statements.append)
        self.successResultOf(self.store.recordMessageId("C1", "<reply@acme.example>"))
        self.store._connection.set_trace_callback(None)

        [insert] = [i for i, s in enumerate(statements) if "sentMessage" in s]
        self.assertEqual(statements[insert - 1], "PRAGMA synchronous = NORMAL")
        self.assertEqual(statements[insert + 1], "PRAGMA synchronous = FULL")
        self.assertEqual(
            self.rowsOutside("SELECT messageId, contactId FROM sentMessage"),
            [("<reply@acme.example>", "c1")],
        )
        synchronous = self.store._connection.execute("PRAGMA synchronous").fetchone()
        self.assertEqual(synchronous, (2,))

    def test_failuresInDeferred(self) -> None:
        """
        A database error comes back as a failed L{Deferred}, not as an
        exception from the call.
        """
        self.store.close()
        self.failureResultOf(self.store.get(newContactId()), sqlite3.ProgrammingError)
        self.failureResultOf(
            self.store.end(newContactId(), 1.0), sqlite3.ProgrammingError
        )
        self.failureResultOf(self.store.purge(1.0), sqlite3.ProgrammingError)
        self.failureResultOf(self.store.ping(), sqlite3.ProgrammingError)
        created = self.store.create(
            entrance="default",
            customerAddress="customer@example.net",
            customerName="",
            subject="",
            messageId=None,
            references=(),
            externalId=None,
            now=1.0,
        )
        self.failureResultOf(created, sqlite3.ProgrammingError)


class PostgresContactStoreTests(ContactStoreTestsMixin, PostgresStoreCase):
    """
    L{PostgresContactStore} keeps contacts in a PostgreSQL database.
    """

    def test_leasesInterface(self) -> None:
        """
        The store provides L{ILeases} for the node it was opened for.
        """
        self.assertTrue(verifyObject(ILeases, self.store))
        self.assertEqual(self.store.node, "node-a")

    async def test_connectionLost(self) -> None:
        """
        When the server ends the store's session, as a restart or a network
        failure does, a read is tried again at once on a new connection and
        answers; a write fails, and the call after it works on a new
        connection.  The lost connection is a warning in the log, not an
        error with a traceback.
        """
        node = f"node-{secrets.token_hex(6)}"
        store = self.openStore(node, poolSize=1)
        self.addCleanup(store.close)
        contact = await store.create(**_values())
        self.assertEqual(_endSessions(self.dsn, node), 1)
        self.assertEqual(await store.get(contact.id), contact)
        self.assertEqual(_endSessions(self.dsn, node), 1)
        with self.assertRaises(STORE_UNREACHABLE):
            await store.end(contact.id, 2000.0)
        self.assertIsNone((await store.get(contact.id)).ended)
        self.assertEqual((await store.end(contact.id, 2000.0)).ended, 2000.0)
        self.assertEqual(self.flushLoggedErrors(), [])


def _endSessions(dsn: str, node: str) -> int:
    """
    End the server's sessions of a node's store.

    @return: How many there were.
    """
    rows = execute(
        dsn,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = %s",
        f"ace-mail {node}",
    )
    return len(rows)


def _version(path: str) -> int:
    connection = sqlite3.connect(path)
    try:
        return int(
            connection.execute("SELECT version FROM schema_version").fetchone()[0]
        )
    finally:
        connection.close()


def _tables(path: str) -> set[str]:
    connection = sqlite3.connect(path)
    try:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {name for (name,) in rows}
    finally:
        connection.close()


class MigrationTests(SynchronousTestCase):
    """
    The schema is versioned, migrated step by step, and never downgraded.
    """

    def test_emptyFileToCurrent(self) -> None:
        """
        An empty file, schema version 0, is migrated to the current version
        and gets the contact table.
        """
        path = self.mktemp()
        open(path, "wb").close()
        SQLiteContactStore.open(path).close()
        self.assertEqual(_version(path), len(MIGRATIONS))
        self.assertEqual(
            _tables(path),
            {"schema_version", "contact", "intake", "sentMessage", "dispatch"}
            | {"webhookTarget", "webhookEvent", "sqlite_sequence"},
        )

    def test_stepsInOrder(self) -> None:
        """
        L{migrate} runs each missing step once, in order, and records each
        version; run again it does nothing.
        """
        path = self.mktemp()
        connection = sqlite3.connect(path, isolation_level=None)
        self.addCleanup(connection.close)
        steps = [
            ["CREATE TABLE a (x INTEGER)"],
            ["INSERT INTO a VALUES (1)", "CREATE TABLE b (y INTEGER)"],
        ]
        migrate(connection, path, steps[:1])
        self.assertEqual(_version(path), 1)
        migrate(connection, path, steps)
        self.assertEqual(_version(path), 2)
        migrate(connection, path, steps)
        self.assertEqual(connection.execute("SELECT x FROM a").fetchall(), [(1,)])
        self.assertEqual(_tables(path), {"schema_version", "a", "b"})

    def test_failedStepRolledBack(self) -> None:
        """
        A step that fails leaves the database at the version before it, with
        nothing of the failed step applied.
        """
        path = self.mktemp()
        connection = sqlite3.connect(path, isolation_level=None)
        self.addCleanup(connection.close)
        steps = [
            ["CREATE TABLE a (x INTEGER)"],
            ["CREATE TABLE b (y INTEGER)", "CREATE TABLE a (z INTEGER)"],
        ]
        self.assertRaises(sqlite3.OperationalError, migrate, connection, path, steps)
        self.assertEqual(_version(path), 1)
        self.assertEqual(_tables(path), {"schema_version", "a"})
        self.assertFalse(connection.in_transaction)

    def test_newerSchemaRefused(self) -> None:
        """
        A store with a schema version newer than the code knows is refused
        with a sentence naming the file and both versions, and is left as it
        was.
        """
        path = self.mktemp()
        SQLiteContactStore.open(path).close()
        connection = sqlite3.connect(path)
        connection.execute(
            "UPDATE schema_version SET version = ?", (len(MIGRATIONS) + 1,)
        )
        connection.commit()
        connection.close()
        with self.assertRaises(ContactStoreError) as caught:
            SQLiteContactStore.open(path)
        message = str(caught.exception)
        self.assertIn(path, message)
        self.assertIn(f"schema version {len(MIGRATIONS) + 1}", message)
        self.assertIn(f"up to {len(MIGRATIONS)} only", message)
        self.assertNotIn("\n", message)
        self.assertEqual(_version(path), len(MIGRATIONS) + 1)

    def test_notSQLiteRefused(self) -> None:
        """
        A file that is not a SQLite database is refused with a sentence
        naming it, and is left as it was.
        """
        path = self.mktemp()
        content = b"These are the notes of an operator, not a database.\n" * 40
        with open(path, "wb") as f:
            f.write(content)
        with self.assertRaises(ContactStoreError) as caught:
            SQLiteContactStore.open(path)
        self.assertEqual(
            str(caught.exception),
            f"{path}: this file is not a SQLite database, so it cannot be the "
            "contact store; move it away or choose another data directory.",
        )
        with open(path, "rb") as f:
            self.assertEqual(f.read(), content)

    def test_missingDirectoryRefused(self) -> None:
        """
        A file in a directory that does not exist is refused with a sentence
        naming it.
        """
        path = os.path.join(self.mktemp(), "contacts.sqlite3")
        with self.assertRaises(ContactStoreError) as caught:
            SQLiteContactStore.open(path)
        self.assertIn(path, str(caught.exception))
        self.assertIn("data directory exists and is writable", str(caught.exception))


class PostgresOpenTests(SynchronousTestCase):
    """
    L{PostgresContactStore.open} makes or migrates the schema once, however
    many nodes start together, and says in one sentence why it cannot.
    """

    def open(self, dsn: str, node: str = "node-a") -> PostgresContactStore:
        return PostgresContactStore.open(
            dsn, node=node, originalsDirectory=self.mktemp()
        )

    def test_sameVersionsAsSQLite(self) -> None:
        """
        Both stores know the same schema versions.
        """
        self.assertEqual(len(POSTGRES_MIGRATIONS), len(MIGRATIONS))

    def test_emptySchemaToCurrent(self) -> None:
        """
        An empty schema is migrated to the current version and gets every
        table; opened again, it stays as it is.
        """
        dsn = schemaDsn(self)
        for _ in range(2):
            self.open(dsn).close()
            self.assertEqual(
                execute(dsn, "SELECT version FROM schema_version"),
                [(len(POSTGRES_MIGRATIONS),)],
            )
        tables = execute(
            dsn, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        )
        self.assertEqual(
            {name for (name,) in tables},
            {"schema_version", "contact", "intake", "sentmessage", "dispatch"}
            | {"webhooktarget", "webhookevent", "lease", "original"},
        )

    def test_newerSchemaRefused(self) -> None:
        """
        A schema newer than the code knows is refused with a sentence that
        names the database, without its password, and both versions; the
        schema is left as it was.
        """
        dsn = schemaDsn(self)
        self.open(dsn).close()
        newer = len(POSTGRES_MIGRATIONS) + 1
        execute(dsn, "UPDATE schema_version SET version = %s", newer)
        with self.assertRaises(ContactStoreError) as caught:
            self.open(dsn)
        message = str(caught.exception)
        self.assertIn(f"schema version {newer}", message)
        self.assertIn(f"up to {len(POSTGRES_MIGRATIONS)} only", message)
        self.assertNotIn("\n", message)
        self.assertNamesDatabase(message, dsn)
        self.assertEqual(execute(dsn, "SELECT version FROM schema_version"), [(newer,)])

    def assertNamesDatabase(self, message: str, dsn: str) -> None:
        """
        Assert that C{message} names the host, port, role and database of
        C{dsn}, and not its password.
        """
        words = conninfo_to_dict(dsn)
        for key in ("host", "port", "user", "dbname"):
            if words.get(key):
                self.assertIn(str(words[key]), message)
        secret = password(dsn)
        if secret:
            self.assertNotIn(f":{secret}@", message)
            self.assertNotIn(f"password={secret}", message)

    def test_unreachableServerRefused(self) -> None:
        """
        A server that does not answer, here a closed port on the loopback
        address, is refused at once with a sentence that names it, for an
        address written as a URI or as keywords, and never shows the
        password.
        """
        port = _closedPort()
        for dsn in (
            f"postgresql://acemail:Kennwort-7f3a@127.0.0.1:{port}/acemail_test",
            f"host=127.0.0.1 port={port} user=acemail password=Kennwort-7f3a"
            " dbname=acemail_test",
        ):
            with self.assertRaises(ContactStoreError) as caught:
                self.open(dsn)
            message = str(caught.exception)
            self.assertIn(f"127.0.0.1:{port}", message)
            self.assertIn("acemail_test", message)
            self.assertNotIn("Kennwort", message)
            self.assertNotIn("\n", message)

    def test_parallelOpensMigrateOnce(self) -> None:
        """
        Four nodes that open an empty schema at the same moment all start,
        and the schema is migrated once: one version row at the current
        version.  Each of three rounds uses a fresh schema.
        """
        for _ in range(3):
            dsn = schemaDsn(self)
            stores = _openTogether(dsn, [self.mktemp() for _ in range(4)])
            for store in stores:
                if isinstance(store, PostgresContactStore):
                    self.addCleanup(store.close)
            failed = [s for s in stores if not isinstance(s, PostgresContactStore)]
            self.assertEqual(failed, [])
            self.assertEqual(
                execute(dsn, "SELECT version FROM schema_version"),
                [(len(POSTGRES_MIGRATIONS),)],
            )


def _closedPort() -> int:
    """
    @return: A TCP port on 127.0.0.1 that nothing listens on.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _openTogether(dsn: str, directories: list[str]) -> list[object]:
    """
    Open one store for each directory, each in a thread of its own, all
    released at once.

    @return: Each store, or the exception its open raised.
    """
    opened: list[object] = [None] * len(directories)
    start = threading.Barrier(len(directories))

    def openOne(index: int) -> None:
        try:
            start.wait(timeout=10)
            opened[index] = PostgresContactStore.open(
                dsn, node=f"node-{index}", originalsDirectory=directories[index]
            )
        except Exception as e:
            opened[index] = e

    threads = [
        threading.Thread(target=openOne, args=(index,))
        for index in range(len(directories))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return opened


class ListContactsTestsMixin:
    """
    A store's C{listContacts}: filtered pages, oldest first, for a test
    case that opens the store as C{self.store}.
    """

    store: Any

    async def setUp(self) -> None:
        super().setUp()  # type: ignore[misc]
        self.ids = []
        for number in range(5):
            made = await self.store.create(
                entrance="sales" if number % 2 else "default",
                customerAddress=f"c{number}@example.net",
                customerName="",
                subject="",
                messageId=None,
                references=(),
                externalId=None,
                now=1000.0 + number,
            )
            self.ids.append(made.id)
        await self.store.end(self.ids[0], 2000.0)
        await self.store.end(self.ids[1], 3000.0)

    async def listed(self, **query: Any) -> list[str]:
        contacts = await self.store.listContacts(
            ContactQuery(**{"endedSince": 0.0, **query})
        )
        return [contact.id for contact in contacts]

    async def test_filters(self) -> None:
        """
        State, entrance, creation time and expiry each narrow the list.
        """
        self.assertEqual(await self.listed(), self.ids)
        self.assertEqual(await self.listed(state="open"), self.ids[2:])
        self.assertEqual(await self.listed(state="ended"), self.ids[:2])
        self.assertEqual(
            await self.listed(entrance="sales"), [self.ids[1], self.ids[3]]
        )
        self.assertEqual(await self.listed(createdSince=1003.0), self.ids[3:])
        self.assertEqual(await self.listed(endedSince=2500.0), self.ids[1:])

    async def test_pages(self) -> None:
        """
        Pages continue after the last contact of the previous one, with no
        contact twice and none left out.
        """
        self.assertEqual(await self.listed(limit=2), self.ids[:2])
        second = await self.listed(limit=2, after=(1001.0, self.ids[1]))
        self.assertEqual(second, self.ids[2:4])
        self.assertEqual(await self.listed(limit=2, after=(1004.0, self.ids[4])), [])


class SQLiteListContactsTests(ListContactsTestsMixin, SQLiteStoreCase):
    """
    L{SQLiteContactStore.listContacts}.
    """


class PostgresListContactsTests(ListContactsTestsMixin, PostgresStoreCase):
    """
    L{PostgresContactStore.listContacts}.
    """
