# -*- test-case-name: tests.test_webhook -*-
"""
The webhook's outbox in the SQLite contact store: the notifications that the
webhook receiver has not yet taken, in the order they happened.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from typing import Any

from attrs import frozen

from ace_mail.store._interface import ContactStoreError
from ace_mail.store._sqlitetx import transaction

CONTACT_CREATED = "contact.created"
"""
The kind of the notification of a new contact.
"""

MESSAGE_BOUNCED = "message.bounced"
"""
The kind of the notification of a bounce.
"""

MIGRATION = (
    "CREATE TABLE webhookTarget (url TEXT)",
    "INSERT INTO webhookTarget (url) VALUES (NULL)",
    """
    CREATE TABLE webhookEvent (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        time REAL NOT NULL,
        payload TEXT NOT NULL
    )
    """,
    f"""
    CREATE TRIGGER webhookContactCreated AFTER INSERT ON contact
    WHEN (SELECT url FROM webhookTarget) IS NOT NULL
    BEGIN
        INSERT INTO webhookEvent (id, kind, time, payload) VALUES (
            lower(hex(randomblob(16))),
            '{CONTACT_CREATED}',
            NEW.created,
            json_object(
                'id', NEW.id,
                'entrance', NEW.entrance,
                'customerAddress', NEW.customerAddress,
                'customerName', NEW.customerName,
                'subject', NEW.subject,
                'messageId', NEW.messageId,
                'references', json(NEW.messageReferences),
                'externalId', NEW.externalId,
                'created', NEW.created
            )
        );
    END
    """,
)
"""
The schema of the webhook's outbox.  A trigger writes the notification of a
new contact in the transaction that inserts the contact, whichever part of
ace-mail makes it, so that no contact is committed without its notification.
It fires only while C{webhookTarget} holds a URL, so that notifications do
not pile up while no webhook is configured.  C{AUTOINCREMENT} keeps the
sequence numbers rising even after the newest row is deleted.
"""


@frozen
class WebhookEvent:
    """
    One notification waiting for the webhook receiver.

    @ivar seq: Its place in the outbox; lower ones go first.
    @ivar id: Its unique id, the same in every attempt.
    @ivar kind: L{CONTACT_CREATED} or L{MESSAGE_BOUNCED}.
    @ivar time: When it happened, in POSIX seconds.
    @ivar payload: What it is about: the stored contact's columns, or the
        bounce as the receiver sees it.
    """

    seq: int
    id: str
    kind: str
    time: float
    payload: dict[str, Any]


class SQLiteWebhookOutbox:
    """
    The outbox over its own connection to the contact store's file, each
    change committed with full synchronisation before the call returns.
    """

    def __init__(self, connection: sqlite3.Connection, path: str) -> None:
        """
        Use L{open} instead.
        """
        self._connection = connection
        self.path = path

    @classmethod
    def open(cls, path: str) -> SQLiteWebhookOutbox:
        """
        Open the outbox of a contact store that L{SQLiteContactStore.open}
        has opened (and so migrated) already.

        @raise ContactStoreError: If the file has no outbox.
        """
        connection = sqlite3.connect(path, isolation_level=None, timeout=10)
        try:
            connection.execute("PRAGMA synchronous = FULL")
            connection.execute("SELECT url FROM webhookTarget").fetchone()
        except sqlite3.Error as e:
            connection.close()
            raise ContactStoreError(
                f"{path}: cannot open the webhook's outbox ({e}); open the "
                "contact store first."
            ) from None
        return cls(connection, path)

    def setTarget(self, url: str | None) -> int:
        """
        Say where notifications go from now on, or that none are wanted.

        @param url: The receiver's URL; the notifications still waiting go
            there too.  L{None} drops them and stops making new ones.
        @return: The number of notifications waiting (or dropped).
        """
        with transaction(self._connection):
            self._connection.execute("UPDATE webhookTarget SET url = ?", (url,))
            waiting = self.pending()
            if url is None:
                self._connection.execute("DELETE FROM webhookEvent")
        return waiting

    def add(self, kind: str, time: float, payload: dict[str, Any]) -> WebhookEvent:
        """
        Keep a new notification, after every one kept before.

        @return: It, once it is on disk.
        """
        eventId = secrets.token_hex(16)
        cursor = self._connection.execute(
            "INSERT INTO webhookEvent (id, kind, time, payload) VALUES (?, ?, ?, ?)",
            (eventId, kind, time, json.dumps(payload)),
        )
        assert cursor.lastrowid is not None
        return WebhookEvent(cursor.lastrowid, eventId, kind, time, payload)

    def head(self) -> WebhookEvent | None:
        """
        @return: The oldest notification waiting, or L{None}.
        """
        row = self._connection.execute(
            "SELECT seq, id, kind, time, payload FROM webhookEvent"
            " ORDER BY seq LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        seq, eventId, kind, time, payload = row
        return WebhookEvent(seq, eventId, kind, time, json.loads(payload))

    def remove(self, seq: int) -> None:
        """
        Forget a notification that the receiver took.
        """
        self._connection.execute("DELETE FROM webhookEvent WHERE seq = ?", (seq,))

    def pending(self) -> int:
        """
        @return: How many notifications are waiting.
        """
        row = self._connection.execute("SELECT count(*) FROM webhookEvent").fetchone()
        return int(row[0])

    def close(self) -> None:
        """
        Release the connection.
        """
        self._connection.close()
