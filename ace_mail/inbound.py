# -*- test-case-name: tests.test_intake -*-
"""
What a customer's email says about itself: who wrote it, what it is about and
what it answers, read from its header section with the standard library.

Pure functions: no I/O, no clock.
"""

from __future__ import annotations

import re
from email import policy
from email.message import EmailMessage
from email.parser import Parser
from typing import Any

from attrs import frozen

from ace_mail.address import isMailbox
from ace_mail.store import isContactId

_MESSAGE_ID = re.compile(r"<[^<>\s]{1,250}>")
_TAG = re.compile(r"\[#([A-Za-z2-7]{20})\]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


@frozen
class Inbound:
    """
    The facts of one customer's email that intake keeps.

    @ivar customerAddress: The address of Reply-To, else of From; L{None}
        when neither names a plain address without defects.
    @ivar customerName: The display name that goes with it, or C{""}.
    @ivar fromAddress: The address of From, or L{None}.
    @ivar subject: The subject, decoded, on one line.
    @ivar messageId: The Message-ID, with angle brackets, or L{None}.
    @ivar inReplyTo: The Message-IDs of In-Reply-To.
    @ivar references: The Message-IDs of References, in order.
    @ivar tag: The contact id of a C{[#id]} tag in the subject, lower-cased,
        or L{None}.
    """

    customerAddress: str | None
    customerName: str
    fromAddress: str | None
    subject: str
    messageId: str | None
    inReplyTo: tuple[str, ...]
    references: tuple[str, ...]
    tag: str | None


def parseHeaders(header: bytes) -> EmailMessage:
    """
    Parse a header section with the default policy.  Raw 8-bit text is read
    as UTF-8 (RFC 6532), bytes that are not UTF-8 as replacement characters,
    so that only real syntax errors count as defects.
    """
    text = header.decode("utf-8", "replace")
    return Parser(policy=policy.default).parsestr(text, headersonly=True)


def parsedValues(headers: EmailMessage, name: str) -> list[Any] | None:
    """
    @return: Every occurrence of a header, parsed by the email package; or
        L{None} when its parser raises on one, as it does on some malformed
        addresses and Message-IDs instead of noting a defect.
    """
    try:
        return headers.get_all(name) or []
    except Exception:
        return None


def _mailbox(headers: EmailMessage, name: str) -> tuple[str, str] | None:
    """
    @return: The display name and address of the first mailbox of a header
        whose every occurrence parses without defects, or L{None}.
    """
    values = parsedValues(headers, name)
    if values is None or len(values) != 1 or values[0].defects:
        return None
    for address in getattr(values[0], "addresses", ()):
        if isMailbox(address.addr_spec):
            return _oneLine(address.display_name), address.addr_spec
    return None


def _oneLine(text: str) -> str:
    return " ".join(_CONTROL.sub(" ", text).split())


def _ids(headers: EmailMessage, name: str) -> tuple[str, ...]:
    """
    @return: The Message-IDs in a header's raw values, which the email
        package's parser may fail on.
    """
    found: list[str] = []
    for field, value in headers.raw_items():
        if field.lower() == name:
            found += _MESSAGE_ID.findall(value)
    return tuple(dict.fromkeys(found))


def readInbound(headers: EmailMessage) -> Inbound:
    """
    @return: The facts of the email with these headers.
    """
    sender = _mailbox(headers, "from")
    customer = _mailbox(headers, "reply-to") or sender
    subject = _oneLine(str(headers.get("subject", "")))
    messageIds = _ids(headers, "message-id")
    tags = [tag.lower() for tag in _TAG.findall(subject) if isContactId(tag)]
    return Inbound(
        customerAddress=None if customer is None else customer[1],
        customerName="" if customer is None else customer[0],
        fromAddress=None if sender is None else sender[1],
        subject=subject,
        messageId=messageIds[0] if messageIds else None,
        inReplyTo=_ids(headers, "in-reply-to"),
        references=_ids(headers, "references"),
        tag=tags[0] if tags else None,
    )
