"""
Tests for L{ace_mail.store}: contact ids, entrances, and the SQLite contact
store with its migrations.
"""

from __future__ import annotations

import email.policy
import os
import sqlite3
from email.header import decode_header, make_header
from email.parser import BytesParser
from typing import Any

from attrs import evolve
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from ace_mail.store import (
    CONTACT_ID_LENGTH,
    Contact,
    ContactQuery,
    ContactStoreError,
    Entrance,
    IContactStore,
    SQLiteContactStore,
    isContactId,
    newContactId,
)
from ace_mail.store._sqlite import MIGRATIONS, migrate

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


class SQLiteContactStoreTests(SynchronousTestCase):
    """
    L{SQLiteContactStore} keeps contacts in one SQLite file.
    """

    def setUp(self) -> None:
        self.path = self.mktemp()
        self.store = SQLiteContactStore.open(self.path)
        self.addCleanup(lambda: self.store.close())

    def create(self, now: float = 1000.0, **changes: object) -> Contact:
        values: dict[str, object] = dict(
            entrance="default",
            customerAddress="customer@example.net",
            customerName="Jürgen Kunde",
            subject="Frage zur Rechnung",
            messageId="<m1@example.net>",
            references=("<r1@example.net>", "<r2@example.net>"),
            externalId="4711",
            now=now,
        )
        values.update(changes)
        return self.successResultOf(self.store.create(**values))  # type: ignore[arg-type]

    def test_interface(self) -> None:
        """
        The store provides L{IContactStore}.
        """
        self.assertTrue(verifyObject(IContactStore, self.store))

    def test_create(self) -> None:
        """
        L{SQLiteContactStore.create} makes an open contact with a new
        well-formed id and everything it was given.
        """
        contact = self.create(now=1234.5)
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
        self.assertNotEqual(self.create().id, contact.id)

    def test_get(self) -> None:
        """
        L{SQLiteContactStore.get} gives back the contact as created, also
        for its id in upper case, and L{None} for an unknown id.
        """
        contact = self.create()
        self.assertEqual(self.successResultOf(self.store.get(contact.id)), contact)
        self.assertEqual(
            self.successResultOf(self.store.get(contact.id.upper())), contact
        )
        self.assertIsNone(self.successResultOf(self.store.get(newContactId())))

    def test_noneAndEmptyValues(self) -> None:
        """
        A contact without Message-ID, references, external id or customer
        name reads back the same.
        """
        contact = self.create(
            messageId=None, references=(), externalId=None, customerName=""
        )
        self.assertEqual(self.successResultOf(self.store.get(contact.id)), contact)

    def test_reopenKeepsContacts(self) -> None:
        """
        Contacts, and their end times, are still there after the store is
        closed and opened again.
        """
        contact = self.create()
        ended = self.successResultOf(self.store.end(contact.id, 2000.0))
        self.store.close()
        self.store = SQLiteContactStore.open(self.path)
        self.assertEqual(self.successResultOf(self.store.get(contact.id)), ended)

    def test_end(self) -> None:
        """
        L{SQLiteContactStore.end} records the end time and gives back the
        ended contact.
        """
        contact = self.create(now=1000.0)
        ended = self.successResultOf(self.store.end(contact.id, 2000.0))
        self.assertEqual(ended, evolve(contact, ended=2000.0))
        self.assertEqual(self.successResultOf(self.store.get(contact.id)), ended)

    def test_endTwiceKeepsFirstTime(self) -> None:
        """
        Ending an ended contact again changes nothing: the first end time
        stays.
        """
        contact = self.create()
        self.store.end(contact.id, 2000.0)
        again = self.successResultOf(self.store.end(contact.id.upper(), 9000.0))
        assert again is not None
        self.assertEqual(again.ended, 2000.0)

    def test_endUnknown(self) -> None:
        """
        Ending an unknown contact gives L{None}.
        """
        self.assertIsNone(self.successResultOf(self.store.end(newContactId(), 1.0)))

    def test_purge(self) -> None:
        """
        L{SQLiteContactStore.purge} deletes the contacts ended before the
        time and counts them; a contact ended exactly then and open contacts
        stay.
        """
        early = self.create()
        boundary = self.create()
        late = self.create()
        stillOpen = self.create(now=0.0)
        self.store.end(early.id, 100.0)
        self.store.end(boundary.id, 200.0)
        self.store.end(late.id, 300.0)
        self.assertEqual(self.successResultOf(self.store.purge(200.0)), 1)
        self.assertIsNone(self.successResultOf(self.store.get(early.id)))
        for kept in (boundary, late, stillOpen):
            self.assertIsNotNone(self.successResultOf(self.store.get(kept.id)))
        self.assertEqual(self.successResultOf(self.store.purge(200.0)), 0)
        self.assertEqual(self.successResultOf(self.store.purge(1e12)), 2)
        self.assertIsNotNone(self.successResultOf(self.store.get(stillOpen.id)))

    def test_retentionBoundaryOnClock(self) -> None:
        """
        With a retention of 120 hours worked out by the caller from a
        L{Clock}, a contact ended exactly 120 hours ago survives a purge, one
        ended a second earlier does not, and half a second later the first
        goes too.
        """
        clock = Clock()
        clock.advance(1_700_000_000)
        contact = self.create(now=clock.seconds())
        older = self.create(now=clock.seconds())
        self.store.end(older.id, clock.seconds() - 1)
        self.store.end(contact.id, clock.seconds())

        def purge() -> int:
            return self.successResultOf(
                self.store.purge(clock.seconds() - 120 * _HOURS)
            )

        clock.advance(120 * _HOURS)
        self.assertEqual(purge(), 1)
        self.assertIsNotNone(self.successResultOf(self.store.get(contact.id)))
        self.assertIsNone(self.successResultOf(self.store.get(older.id)))
        self.assertEqual(purge(), 0)
        clock.advance(0.5)
        self.assertEqual(purge(), 1)
        self.assertIsNone(self.successResultOf(self.store.get(contact.id)))

    def test_walAndFullSync(self) -> None:
        """
        The file is in WAL mode and the store's connection syncs fully, so
        that a created contact is on disk when the Deferred fires.
        """
        other = sqlite3.connect(self.path)
        self.addCleanup(other.close)
        self.assertEqual(other.execute("PRAGMA journal_mode").fetchone(), ("wal",))
        synchronous = self.store._connection.execute("PRAGMA synchronous").fetchone()
        self.assertEqual(synchronous, (2,))

    def test_visibleToOtherConnection(self) -> None:
        """
        A created contact is committed: another connection to the file sees
        it at once.
        """
        contact = self.create()
        other = sqlite3.connect(self.path)
        self.addCleanup(other.close)
        row = other.execute("SELECT id FROM contact").fetchall()
        self.assertEqual(row, [(contact.id,)])

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


class ListContactsTests(SynchronousTestCase):
    """
    L{SQLiteContactStore.listContacts}: filtered pages, oldest first.
    """

    def setUp(self) -> None:
        self.store = SQLiteContactStore.open(self.mktemp())
        self.addCleanup(self.store.close)
        self.ids = []
        for number in range(5):
            made = self.store.create(
                entrance="sales" if number % 2 else "default",
                customerAddress=f"c{number}@example.net",
                customerName="",
                subject="",
                messageId=None,
                references=(),
                externalId=None,
                now=1000.0 + number,
            )
            self.ids.append(self.successResultOf(made).id)
        self.successResultOf(self.store.end(self.ids[0], 2000.0))
        self.successResultOf(self.store.end(self.ids[1], 3000.0))

    def listed(self, **query: Any) -> list[str]:
        contacts = self.successResultOf(
            self.store.listContacts(ContactQuery(**{"endedSince": 0.0, **query}))
        )
        return [contact.id for contact in contacts]

    def test_filters(self) -> None:
        """
        State, entrance, creation time and expiry each narrow the list.
        """
        self.assertEqual(self.listed(), self.ids)
        self.assertEqual(self.listed(state="open"), self.ids[2:])
        self.assertEqual(self.listed(state="ended"), self.ids[:2])
        self.assertEqual(self.listed(entrance="sales"), [self.ids[1], self.ids[3]])
        self.assertEqual(self.listed(createdSince=1003.0), self.ids[3:])
        self.assertEqual(self.listed(endedSince=2500.0), self.ids[1:])

    def test_pages(self) -> None:
        """
        Pages continue after the last contact of the previous one, with no
        contact twice and none left out.
        """
        first = self.listed(limit=2)
        self.assertEqual(first, self.ids[:2])
        second = self.listed(limit=2, after=(1001.0, self.ids[1]))
        self.assertEqual(second, self.ids[2:4])
        self.assertEqual(self.listed(limit=2, after=(1004.0, self.ids[4])), [])
