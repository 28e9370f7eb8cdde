# -*- test-case-name: tests.test_store -*-
"""
The value objects of the contact store: entrances, contacts and contact ids.
"""

from __future__ import annotations

import base64
import re
import secrets
from email.header import Header
from typing import Iterable

from attrs import field, frozen

CONTACT_ID_LENGTH = 20
"""
The number of characters of a contact id: 20 base32 digits, 100 random bits.
"""

_CONTACT_ID = re.compile(rf"^[a-z2-7]{{{CONTACT_ID_LENGTH}}}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_PRINTABLE = re.compile(r"^[\x20-\x7e]*$")


def newContactId() -> str:
    """
    Make a contact id that cannot be guessed.

    @return: 100 bits from L{secrets} in lowercase base32 without padding, so
        that mail servers which fold the case of a local part keep it intact.
    """
    digits = base64.b32encode(secrets.token_bytes(13)).decode("ascii")
    return digits[:CONTACT_ID_LENGTH].lower()


def isContactId(text: str) -> bool:
    """
    @return: Whether C{text} has the form of an id made by L{newContactId};
        the case is ignored, as some mail servers fold it.
    """
    return bool(_CONTACT_ID.match(text.lower()))


def _strings(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


def _formatMailbox(displayName: str, address: str) -> str:
    """
    Write a mailbox as in RFC 5322: the display name as a quoted string when
    it is printable ASCII, or as RFC 2047 encoded words otherwise, followed by
    the address in angle brackets.  Control characters in the name become
    spaces, so that no name can start a new header line.
    """
    name = _CONTROL.sub(" ", displayName).strip()
    if not name:
        return f"<{address}>"
    if _PRINTABLE.match(name) and "=?" not in name:
        escaped = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}" <{address}>'
    words = Header(name, "utf-8", maxlinelen=70).encode(linesep=" ")
    return " ".join(words.split()) + f" <{address}>"


@frozen
class Entrance:
    """
    The address that customers see as the sender of every reply.

    @ivar name: The entrance's name, C{"default"} for the single-tenant
        standard solution.
    @ivar address: Its addr-spec, for example C{"support@example.com"}.
    @ivar displayName: The display name that goes with it, for example
        C{"Support"}; it may be empty.
    """

    name: str
    address: str
    displayName: str

    def formatted(self) -> str:
        """
        @return: The entrance as an RFC 5322 mailbox, for example
            C{'"Support" <support@example.com>'}; a display name outside
            printable ASCII is written as RFC 2047 encoded words.
        """
        return _formatMailbox(self.displayName, self.address)


@frozen
class Contact:
    """
    One customer email that an agent may answer through the proxy.

    @ivar id: The contact id (see L{newContactId}); the reply address is
        C{id@HOSTNAME}.
    @ivar entrance: The name of the entrance the customer wrote to.
    @ivar customerAddress: The customer's addr-spec.
    @ivar customerName: The customer's display name, or C{""}.
    @ivar subject: The subject of the customer's email.
    @ivar messageId: The Message-ID of the customer's email, with angle
        brackets, or L{None} if it had none.
    @ivar references: The References of the customer's email, in order.
    @ivar externalId: ACE's own number for the contact, or L{None}.
    @ivar created: When the contact was made, in POSIX seconds.
    @ivar ended: When the contact was ended in ACE Agent, in POSIX seconds,
        or L{None} while it is open.
    """

    id: str
    entrance: str
    customerAddress: str
    customerName: str
    subject: str
    messageId: str | None
    references: tuple[str, ...] = field(converter=_strings)
    externalId: str | None
    created: float
    ended: float | None

    def formattedCustomer(self) -> str:
        """
        @return: The customer as an RFC 5322 mailbox with the display name,
            written like L{Entrance.formatted}.
        """
        return _formatMailbox(self.customerName, self.customerAddress)


@frozen
class ContactQuery:
    """
    Which contacts to list, oldest first, one page at a time.

    @ivar endedSince: Contacts ended before this POSIX time are expired and
        never listed.
    @ivar state: C{"open"}, C{"ended"} or L{None} for both.
    @ivar entrance: Only this entrance's contacts, or L{None} for all.
    @ivar createdSince: Only contacts created at or after this time.
    @ivar after: The (created, id) of the last contact of the previous page.
    @ivar limit: The most contacts in the page.
    """

    endedSince: float
    state: str | None = None
    entrance: str | None = None
    createdSince: float | None = None
    after: tuple[float, str] | None = None
    limit: int = 100
