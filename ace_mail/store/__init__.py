# -*- test-case-name: tests.test_store -*-
"""
The contacts that agents answer through the SMTP proxy, and the entrances
that customers see as the sender of every reply.
"""

from ace_mail.store._contact import (
    CONTACT_ID_LENGTH,
    Contact,
    Entrance,
    isContactId,
    newContactId,
)
from ace_mail.store._interface import ContactStoreError, IContactStore
from ace_mail.store._sqlite import SQLiteContactStore

__all__ = [
    "CONTACT_ID_LENGTH",
    "Contact",
    "ContactStoreError",
    "Entrance",
    "IContactStore",
    "SQLiteContactStore",
    "isContactId",
    "newContactId",
]
