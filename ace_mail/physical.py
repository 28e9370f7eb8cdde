# -*- test-case-name: tests.test_physical -*-
"""
The physical email: a customer's stored email, delivered to an agent's own
mailbox so that "reply" and "reply all" reach the contact address only.

Only the top-level header section is written anew; the body, and with it the
MIME structure and every attachment, passes byte for byte.  The header
section keeps the fields that describe the content and the thread, and
moves the original From, To, Cc, Reply-To, Sender and Message-ID to
C{X-Original-From}, C{X-Original-To} and so on, where no mail client looks
for reply addresses.  Every other field is dropped: among them Bcc,
Resent-*, Mail-Followup-To, Mail-Reply-To, Return-Path, List-* and
Disposition-Notification-To, any of which could send a reply, a reply to
all or a receipt somewhere else.

Pure functions: no I/O, no clock.
"""

from __future__ import annotations

import re
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate

from ace_mail._entrances import EntranceConfig
from ace_mail.envelope import Envelope
from ace_mail.store import Contact, Entrance

_FIELD = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_UNSAFE = re.compile(rb"[\x00\r]")
_UNSAFE_NAME = re.compile(r"[<>@]")

KEPT = frozenset(
    {
        "subject",
        "date",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
        "content-language",
        "content-description",
        "content-id",
        "in-reply-to",
        "references",
        "importance",
        "priority",
        "x-priority",
        "thread-topic",
        "thread-index",
    }
)
"""
The fields of the original's header section that the physical email keeps
as they were written.
"""

MOVED = {
    "from": b"X-Original-From",
    "to": b"X-Original-To",
    "cc": b"X-Original-Cc",
    "reply-to": b"X-Original-Reply-To",
    "sender": b"X-Original-Sender",
    "message-id": b"X-Original-Message-ID",
}
"""
The fields of the original that the physical email keeps under another
name.
"""


def splitMessage(message: bytes) -> tuple[list[tuple[str, list[bytes]]], bytes]:
    """
    Split a message into its header fields and its body.  Lines may end in
    CRLF or LF.  A leading mbox C{From } line is skipped.  The header
    section ends at the first empty line, or at the first line that is
    neither a field nor a continuation, which then starts the body.

    @return: Each field's lower-cased name and its lines without line ends,
        in order; and the body.
    """
    fields: list[tuple[str, list[bytes]]] = []
    position = 0
    if message.startswith(b"From "):
        position = message.find(b"\n") + 1 or len(message)
    while position < len(message):
        end = message.find(b"\n", position)
        stop = len(message) if end < 0 else end + 1
        line = message[position:stop].removesuffix(b"\n").removesuffix(b"\r")
        if not line:
            return fields, message[stop:]
        match = _FIELD.match(line)
        if line[:1] in (b" ", b"\t"):
            if fields:
                fields[-1][1].append(line)
        elif match is not None:
            fields.append((match.group(1).decode("ascii").lower(), [line]))
        else:
            return fields, message[position:]
        position = stop
    return fields, b""


def _field(name: bytes | None, lines: list[bytes]) -> bytes:
    """
    @return: A field with CRLF line ends, renamed if C{name} is given and
        without white space before its colon; bare CRs and NULs become
        spaces, and blank continuation lines are left out, so that no reader
        can see a line break or an end of the header section inside it.
    """
    written, value = lines[0].split(b":", 1)
    first = (name or written.rstrip(b" \t")) + b":" + value
    kept = [first] + [line for line in lines[1:] if line.strip(b" \t\r\x00")]
    return b"".join(_UNSAFE.sub(b" ", line) + b"\r\n" for line in kept)


def buildPhysical(
    original: bytes,
    *,
    contactId: str,
    rerouteName: str,
    customerName: str,
    agentAddress: str,
    messageId: str,
) -> bytes:
    """
    Make the physical email of a customer's email for an agent.

    @param original: The customer's email as it was taken.
    @param contactId: Its contact; From and Reply-To are
        C{contactId@rerouteName} with the customer's display name.
    @param customerName: That display name; any C{<}, C{>} or C{@} in it
        becomes a space, so that it cannot pass for an address.
    @param agentAddress: The agent's address, the only To.
    @param messageId: The new Message-ID, with angle brackets.
    @return: The physical email, its new header section with CRLF line ends.
    """
    fields, body = splitMessage(original)
    name = " ".join(_UNSAFE_NAME.sub(" ", customerName).split())
    contact = Entrance("", f"{contactId}@{rerouteName}", name).formatted()
    head = [
        f"From: {contact}\r\n",
        f"Reply-To: {contact}\r\n",
        f"To: <{agentAddress}>\r\n",
        f"Message-ID: {messageId}\r\n",
        "Auto-Submitted: auto-generated\r\n",
        "X-Auto-Response-Suppress: All\r\n",
    ]
    out = [line.encode("ascii") for line in head]
    for field, lines in fields:
        if field in KEPT:
            out.append(_field(None, lines))
        elif field in MOVED:
            out.append(_field(MOVED[field], lines))
    return b"".join(out) + b"\r\n" + body


def physicalEnvelope(entrance: EntranceConfig, agentAddress: str) -> Envelope:
    """
    @return: Where the physical email goes: from the entrance's address, to
        the agent, on the entrance's route.
    """
    return Envelope(entrance.address, (agentAddress,), entrance.routeName)


def standInOriginal(contact: Contact, entrance: EntranceConfig) -> bytes:
    """
    The email that stands in for a contact made through the API, which has
    no customer email of its own, so that it can be delivered to an agent
    like any other.

    @return: A short text message from the customer to the entrance, with
        the contact's subject, creation time and Message-ID.
    """
    message = EmailMessage(policy=SMTP)
    message["From"] = contact.formattedCustomer()
    message["To"] = Entrance(
        entrance.name, entrance.address, entrance.displayName
    ).formatted()
    message["Subject"] = contact.subject or "(no subject)"
    message["Date"] = formatdate(contact.created)
    if contact.messageId is not None:
        message["Message-ID"] = contact.messageId
    message.set_content(
        f"Contact {contact.id} was made through ACE's API and has no customer\n"
        "email of its own. Answer the customer by replying to this message.\n"
    )
    return message.as_bytes()
