# -*- test-case-name: tests.test_replymail -*-
"""
The reply that an agent types in ACE Agent, made into an email to the
customer: from the entrance, threaded under the customer's email.

Pure functions: no I/O, no clock; times and ids come in as arguments.
"""

from __future__ import annotations

import re
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from typing import Iterable

from attrs import field, frozen

from ace_mail.envelope import Envelope
from ace_mail.store import Contact, Entrance

_POLICY = policy.SMTP.clone(cte_type="7bit")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
_BODY_CONTROL = re.compile(r"[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f]+")
_REPLY_PREFIX = re.compile(r"^\s*re\s*:", re.IGNORECASE)
_MESSAGE_ID = re.compile(r"^<[\x21-\x3b\x3d\x3f-\x7e]+@[\x21-\x3b\x3d\x3f-\x7e]+>$")
_LONGEST_ID = 900
_MOST_REFERENCES = 20
_LONGEST_FILENAME = 200


@frozen
class Attachment:
    """
    A file attached to a typed reply.

    @ivar filename: Its name as the customer sees it; see L{safeFilename}.
    @ivar contentType: Its MIME type, C{type/subtype}, neither C{multipart}
        nor C{message}.
    @ivar content: Its bytes.
    """

    filename: str
    contentType: str
    content: bytes


def _attachments(values: Iterable[Attachment]) -> tuple[Attachment, ...]:
    return tuple(values)


@frozen
class TypedReply:
    """
    What an agent typed: the text, an HTML version of it, a subject and
    files.

    @ivar text: The plain text, the part every mail client can show.
    @ivar html: The same reply in HTML, or L{None}.
    @ivar subject: The subject, or L{None} for C{"Re: "} and the contact's.
    @ivar attachments: The files, in order.
    """

    text: str
    html: str | None = None
    subject: str | None = None
    attachments: tuple[Attachment, ...] = field(default=(), converter=_attachments)


def _oneLine(text: str) -> str:
    return " ".join(_CONTROL.sub(" ", text).split())


def replySubject(subject: str) -> str:
    """
    @return: C{"Re: "} and C{subject} on one line, unless the subject
        already starts with C{Re:} in any case, which is not doubled.
    """
    line = _oneLine(subject)
    if _REPLY_PREFIX.match(line):
        return line
    return f"Re: {line}".strip()


def safeFilename(filename: str) -> str:
    """
    @return: The last path component of C{filename}, without control
        characters (line breaks among them), leading dots or white space at
        either end, cut to 200 characters; C{"attachment"} when nothing is
        left.
    """
    name = re.split(r"[/\\]", filename)[-1]
    name = _oneLine(name).lstrip(".").strip()
    return name[:_LONGEST_FILENAME] or "attachment"


def _threadIds(contact: Contact) -> tuple[str | None, list[str]]:
    """
    @return: The customer's Message-ID for In-Reply-To, and the References:
        the customer's References and Message-ID, without repeats, the last
        twenty of them.  Any id that is not a plain C{<left@right>} of at most
        900 characters is left out, so that no header line can exceed 998.
    """

    def usable(messageId: str | None) -> bool:
        return (
            messageId is not None
            and len(messageId) <= _LONGEST_ID
            and bool(_MESSAGE_ID.match(messageId))
        )

    parent = contact.messageId if usable(contact.messageId) else None
    chain = [m for m in contact.references if usable(m) and m != parent]
    if parent is not None:
        chain.append(parent)
    return parent, list(dict.fromkeys(chain))[-_MOST_REFERENCES:]


def _threading(contact: Contact) -> bytes:
    """
    @return: The In-Reply-To and References lines, each Message-ID on a
        line of its own, as the email package would otherwise break a long
        one into encoded words.
    """
    parent, references = _threadIds(contact)
    if parent is None and not references:
        return b""
    lines = []
    if parent is not None:
        lines.append(f"In-Reply-To: {parent}\r\n")
    if references:
        lines.append("References: " + "\r\n ".join(references) + "\r\n")
    return "".join(lines).encode("ascii")


def _text(text: str) -> str:
    """
    @return: C{text} with every line break a newline, ending in one, and
        without control characters other than tabs, which have no place in
        a typed reply and some of which (NUL) no email may carry.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _BODY_CONTROL.sub("", text)
    return text if text.endswith("\n") else text + "\n"


def buildReply(
    entrance: Entrance,
    contact: Contact,
    reply: TypedReply,
    *,
    messageId: str,
    date: float,
) -> bytes:
    """
    Make the email of a typed reply.

    The text alone is one C{text/plain} part; with HTML the two are a
    C{multipart/alternative}; with attachments that goes first in a
    C{multipart/mixed}.  Text is UTF-8, sent as 7-bit when it is ASCII in
    short lines, else as quoted-printable or base64, whichever is shorter;
    attachments are base64.  No line is longer than 998 bytes.

    @param entrance: The sender: From and Reply-To.
    @param contact: The customer (To), the subject and the Message-ID and
        References that the reply threads under.
    @param messageId: The reply's Message-ID, with angle brackets.
    @param date: Its Date, in POSIX seconds.
    @return: The email, with CRLF line ends.
    """
    message = EmailMessage(policy=_POLICY)
    sender = Address(_oneLine(entrance.displayName), addr_spec=entrance.address)
    message["From"] = sender
    message["Reply-To"] = sender
    message["To"] = Address(
        _oneLine(contact.customerName), addr_spec=contact.customerAddress
    )
    subject = reply.subject
    message["Subject"] = (
        _oneLine(subject) if subject is not None else replySubject(contact.subject)
    )
    message["Date"] = formatdate(date, usegmt=True)
    message["Message-ID"] = messageId
    message.set_content(_text(reply.text), charset="utf-8")
    if reply.html is not None:
        message.add_alternative(_text(reply.html), subtype="html", charset="utf-8")
    for attachment in reply.attachments:
        maintype, _, subtype = attachment.contentType.partition("/")
        message.add_attachment(
            attachment.content,
            maintype=maintype,
            subtype=subtype,
            filename=safeFilename(attachment.filename),
        )
    for part in message.walk():
        if part is not message:
            del part["MIME-Version"]
    head, _, body = message.as_bytes().partition(b"\r\n\r\n")
    return head + b"\r\n" + _threading(contact) + b"\r\n" + body


def replyEnvelope(entrance: Entrance, contact: Contact, route: str) -> Envelope:
    """
    @return: Where the reply goes: from the entrance's address, so that
        bounces come back to it, to the customer, on C{route}.
    """
    return Envelope(entrance.address, (contact.customerAddress,), route)
