# -*- test-case-name: tests.test_autoanswer -*-
"""
The automatic answer to a new contact: when not to send one (RFC 3834 and
the loops of help desks), and the answer itself, made from the entrance's
template.

Pure functions: no I/O, no clock; times and ids come in as arguments.
"""

from __future__ import annotations

import re
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from typing import Collection

from ace_mail._entrances import EntranceConfig
from ace_mail.envelope import Envelope
from ace_mail.inbound import Inbound, parsedValues
from ace_mail.store import Contact

_COMMENT = re.compile(r"\([^()]*\)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_NOREPLY = re.compile(r"^(?:no|do[-_.]?not)[-_.]?reply(?:[-_.+].*)?$")
_DAEMONS = re.compile(r"^(?:mailer-daemon|postmaster|owner-.+|.+-request)$")
_BULK = {"bulk", "list", "junk"}
_SUPPRESS = {"autoreply", "oof", "all"}


def _keyword(value: str) -> str:
    """
    @return: The first word of a structured header value, lower-cased, with
        comments and parameters (after C{;}) left out.
    """
    previous = None
    while previous != value:
        previous, value = value, _COMMENT.sub(" ", value)
    return value.split(";")[0].strip().lower()


def _values(headers: EmailMessage, name: str) -> list[str]:
    return [str(value) for value in headers.get_all(name) or []]


def _automatic(address: str, ours: Collection[str], rerouteName: str) -> str | None:
    """
    @return: Why mail from C{address} must not be answered, or L{None}.
    """
    local, _, domain = address.lower().rpartition("@")
    if address.lower() in ours or domain == rerouteName.lower():
        return f"{address} is one of ace-mail's own addresses"
    if _DAEMONS.match(local):
        return f"{address} is a mail system address"
    if _NOREPLY.match(local):
        return f"{address} takes no replies"
    return None


def whyNotAnswer(
    headers: EmailMessage,
    inbound: Inbound,
    ownAddresses: Collection[str],
    rerouteName: str,
) -> str | None:
    """
    Apply the rules of RFC 3834 and of help desks against mail loops.

    No answer goes to a message that is itself automatic (Auto-Submitted
    other than C{no}; Precedence bulk, list or junk; a List-Id or
    List-Unsubscribe; X-Auto-Response-Suppress with AutoReply, OOF or All),
    that has a null sender (C{Return-Path: <>}) or no usable From or
    Reply-To, or whose Reply-To, From, Sender or Return-Path is a mail
    system (MAILER-DAEMON, postmaster, owner-*, *-request), a noreply
    address, or one of ace-mail's own: an entrance's address or any address
    at the reroute name.

    @param ownAddresses: The entrances' addresses, lower-cased.
    @return: The reason not to answer, for the log, or L{None} to answer.
    """
    for value in _values(headers, "auto-submitted"):
        if _keyword(value) != "no":
            return f"Auto-Submitted is {value.strip()!r}"
    for value in _values(headers, "precedence"):
        if _keyword(value) in _BULK:
            return f"Precedence is {value.strip()!r}"
    for name in ("List-Id", "List-Unsubscribe"):
        if name in headers:
            return f"it has {name}"
    for value in _values(headers, "x-auto-response-suppress"):
        if {word.strip().lower() for word in value.split(",")} & _SUPPRESS:
            return f"X-Auto-Response-Suppress is {value.strip()!r}"
    returnPaths = _values(headers, "return-path")
    if any(path.strip() in ("<>", "") for path in returnPaths):
        return "it has a null sender"
    if inbound.customerAddress is None:
        return "it has no usable From or Reply-To"
    addresses = [inbound.customerAddress, inbound.fromAddress]
    for name in ("Sender", "Return-Path"):
        values = parsedValues(headers, name)
        if values is None:
            return f"its {name} cannot be read"
        for value in values:
            addresses += [a.addr_spec for a in getattr(value, "addresses", ())]
    addresses += [path.strip().strip("<>") for path in returnPaths]
    for address in addresses:
        reason = None if not address else _automatic(address, ownAddresses, rerouteName)
        if reason is not None:
            return reason
    return None


def _oneLine(text: str) -> str:
    return " ".join(_CONTROL.sub(" ", text).split())


def render(template: str, entrance: EntranceConfig, contact: Contact) -> str:
    """
    Fill a template of the entrance: C{{contactId}}, C{{customerName}}
    (the address when there is no name), C{{customerAddress}},
    C{{subject}} and C{{entranceName}} (the entrance's display name, else its
    name).  The values are the customer's text, used as it is; only the
    template is read as a format string.
    """
    return template.format(
        contactId=contact.id,
        customerName=contact.customerName or contact.customerAddress,
        customerAddress=contact.customerAddress,
        subject=contact.subject,
        entranceName=entrance.displayName or entrance.name,
    )


def buildAnswer(
    entrance: EntranceConfig, contact: Contact, messageId: str, date: float
) -> bytes:
    """
    Make the automatic answer to a new contact.

    @param entrance: Its template, its address (From) and its name.
    @param contact: The customer (To), the subject and the Message-ID and
        References that the answer threads under.
    @param messageId: The answer's Message-ID, with angle brackets.
    @param date: Its Date, in POSIX seconds.
    @return: The answer, text/plain in UTF-8, with CRLF line ends.
    @raise ValueError: If the entrance has no automatic answer.
    """
    if entrance.autoAnswerText is None:
        raise ValueError(f"the entrance {entrance.name} has no automatic answer")
    answer = EmailMessage(policy=policy.SMTP)
    answer["From"] = Address(_oneLine(entrance.displayName), addr_spec=entrance.address)
    answer["To"] = Address(
        _oneLine(contact.customerName), addr_spec=contact.customerAddress
    )
    answer["Subject"] = _oneLine(render(entrance.autoAnswerSubject, entrance, contact))
    answer["Date"] = formatdate(date, usegmt=True)
    answer["Message-ID"] = messageId
    if contact.messageId is not None:
        answer["In-Reply-To"] = contact.messageId
        references = [*contact.references, contact.messageId]
        answer["References"] = " ".join(dict.fromkeys(references))
    answer["Auto-Submitted"] = "auto-replied"
    answer["X-Auto-Response-Suppress"] = "All"
    text = render(entrance.autoAnswerText, entrance, contact).replace("\r\n", "\n")
    if not text.endswith("\n"):
        text += "\n"
    plain = text.isascii() and max(len(line) for line in text.split("\n")) <= 78
    answer.set_content(
        text, charset="utf-8", cte="7bit" if plain else "quoted-printable"
    )
    return answer.as_bytes()


def answerEnvelope(entrance: EntranceConfig, contact: Contact) -> Envelope:
    """
    @return: Where the answer goes: from the entrance's address, so that
        bounces come back to it, to the customer, on the entrance's route.
    """
    return Envelope(entrance.address, (contact.customerAddress,), entrance.routeName)
