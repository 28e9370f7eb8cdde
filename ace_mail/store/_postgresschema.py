"""
The schema of the contact store in PostgreSQL: the same versions as in
SQLite, each written in PostgreSQL's types.
"""

from __future__ import annotations

from typing import Sequence

MIGRATIONS: Sequence[Sequence[str]] = (
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
            created DOUBLE PRECISION NOT NULL,
            ended DOUBLE PRECISION
        )
        """,
        "CREATE INDEX contactExternalId ON contact (externalId)"
        " WHERE externalId IS NOT NULL",
        "CREATE INDEX contactEnded ON contact (ended) WHERE ended IS NOT NULL",
    ),
    (
        """
        CREATE TABLE intake (
            account TEXT NOT NULL,
            uidl TEXT NOT NULL,
            digest TEXT NOT NULL,
            messageId TEXT,
            outcome TEXT NOT NULL,
            contactId TEXT,
            original TEXT,
            received DOUBLE PRECISION NOT NULL,
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
            created DOUBLE PRECISION NOT NULL,
            state TEXT NOT NULL
        )
        """,
        "CREATE INDEX dispatchContact ON dispatch (contactId)",
        "CREATE INDEX dispatchRate ON dispatch (kind, recipient, created)",
        "CREATE INDEX dispatchPending ON dispatch (state) WHERE state = 'pending'",
    ),
    ("CREATE INDEX contactCreated ON contact (created, id)",),
    (
        "CREATE TABLE webhookTarget (url TEXT)",
        "INSERT INTO webhookTarget (url) VALUES (NULL)",
        """
        CREATE TABLE webhookEvent (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            time DOUBLE PRECISION NOT NULL,
            payload TEXT NOT NULL
        )
        """,
    ),
    (
        "ALTER TABLE dispatch ADD COLUMN node TEXT NOT NULL DEFAULT ''",
        """
        CREATE TABLE lease (
            name TEXT NOT NULL PRIMARY KEY,
            node TEXT NOT NULL,
            expires TIMESTAMPTZ NOT NULL
        )
        """,
        """
        CREATE TABLE original (
            name TEXT NOT NULL PRIMARY KEY,
            body BYTEA NOT NULL
        )
        """,
    ),
)
"""
Every migration in order, as in L{ace_mail.store._sqlite.MIGRATIONS}.  Version
4 makes the webhook's outbox tables without the trigger that fills them in
SQLite: a PostgreSQL store has no webhook yet.  Version 5 adds what several
nodes share beyond SQLite's: the node of each pending message, the leases, and
the stored originals, which SQLite keeps as files.
"""
