# -*- test-case-name: tests.test_store -*-
"""
The contacts that agents answer through the SMTP proxy, and the entrances
that customers see as the sender of every reply.
"""

from ace_mail.store._contact import (
    CONTACT_ID_LENGTH,
    Contact,
    ContactQuery,
    Entrance,
    isContactId,
    newContactId,
)
from ace_mail.store._intake import (
    AGENT,
    ANSWER,
    CREATED,
    DROPPED,
    DUPLICATE,
    PENDING,
    QUEUED,
    REFUSED,
    THREADED,
    Arrival,
    Dispatch,
    Plan,
    Planned,
    Taken,
)
from ace_mail.store._intakesql import standInName
from ace_mail.store._interface import (
    ContactStoreError,
    IContactStore,
    IIntakeStore,
    ILeases,
)
from ace_mail.store._postgres import (
    STORE_UNREACHABLE,
    PostgresContactStore,
    shownAddress,
)
from ace_mail.store._sqlite import SQLiteContactStore
from ace_mail.store._sqlitewebhook import (
    CONTACT_CREATED,
    MESSAGE_BOUNCED,
    SQLiteWebhookOutbox,
    WebhookEvent,
)

__all__ = [
    "standInName",
    "AGENT",
    "ANSWER",
    "CREATED",
    "DROPPED",
    "DUPLICATE",
    "PENDING",
    "QUEUED",
    "REFUSED",
    "THREADED",
    "Arrival",
    "Dispatch",
    "IIntakeStore",
    "ILeases",
    "PostgresContactStore",
    "STORE_UNREACHABLE",
    "shownAddress",
    "Plan",
    "Planned",
    "Taken",
    "CONTACT_ID_LENGTH",
    "Contact",
    "ContactQuery",
    "ContactStoreError",
    "Entrance",
    "IContactStore",
    "SQLiteContactStore",
    "SQLiteWebhookOutbox",
    "WebhookEvent",
    "CONTACT_CREATED",
    "MESSAGE_BOUNCED",
    "isContactId",
    "newContactId",
]
