# -*- test-case-name: tests.test_mime -*-
"""
Pure message transforms: bytes in, bytes out, with no I/O and no clock.
"""

from __future__ import annotations

import hashlib
import quopri
import re
import textwrap
from email.utils import formatdate
from typing import Sequence

from attrs import frozen

from .envelope import Envelope, Reply

_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?!\S)")
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_LONGEST_LINE = 998


@frozen
class FailedRecipient:
    """
    A recipient that a message could not be delivered to.

    @ivar recipient: The envelope recipient.
    @ivar reply: The reply that ended its last attempt.
    @ivar server: The server that gave the reply, or C{""} if none did.
    """

    recipient: str
    reply: Reply
    server: str


def headerPart(message: bytes) -> bytes:
    """
    @return: The header section of C{message}, without the blank line that
        ends it; all of C{message} when it has no body.
    """
    end = _BLANK_LINE.search(message)
    return message if end is None else message[: end.start()]


def _text(value: str) -> str:
    """
    @return: C{value} on one line in printable ASCII: line breaks become
        spaces and other characters become C{\\x{HEX}} (RFC 6533).
    """
    line = " ".join(value.split())
    return "".join(
        c if " " <= c <= "~" and c != "\\" else f"\\x{{{ord(c):X}}}" for c in line
    )


def _fold(line: str) -> str:
    """
    @return: C{line}, folded at spaces (a hard break if there is none) into
        lines short enough for SMTP, each after the first led by a space.
    """
    if len(line) <= _LONGEST_LINE:
        return line
    return "\n".join(
        textwrap.wrap(line, 900, subsequent_indent=" ", break_on_hyphens=False)
    )


def _status(reply: Reply, expired: bool) -> str:
    """
    @return: The enhanced status code for a failed recipient (RFC 3463):
        the one in the reply when it has one of the right class, else a
        generic one.
    """
    found = _ENHANCED.match(reply.text.lstrip())
    if found is not None and found.group(1) == str(reply.code)[0]:
        return found.group(0)
    if expired:
        return "4.4.7"
    return "5.0.0" if reply.isPermanent else "4.0.0"


def _crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("ascii")


def buildBounce(
    originalHeaders: bytes,
    envelope: Envelope,
    failures: Sequence[FailedRecipient],
    *,
    queueId: str,
    reportingMta: str,
    arrivalDate: float,
    nowDate: float,
    messageId: str,
    expired: bool,
) -> bytes:
    """
    Build a delivery status notification (RFC 3464) for failed recipients.

    @param originalHeaders: The header section of the original message.
    @param envelope: The original envelope; the bounce goes to its sender.
    @param failures: The recipients the bounce reports, with their replies.
    @param queueId: The original message's queue id.
    @param reportingMta: The host name of this server.
    @param arrivalDate: When the original was accepted (seconds since the
        epoch).
    @param nowDate: The time of the bounce (seconds since the epoch).
    @param messageId: The Message-ID of the bounce, with its angle brackets.
    @param expired: C{True} when the recipients failed because the message
        stayed in the queue for too long, C{False} when they were refused.
    @return: The bounce, with CRLF line endings, in 7-bit ASCII.
    """
    host = _text(reportingMta)
    why = (
        "Its delivery time expired before it could be delivered to"
        if expired
        else "It was refused permanently for"
    )
    human = [
        f"This is the mail system at host {host}.",
        "",
        "Your message could not be delivered to one or more recipients.",
        f"{why} the recipients below.",
        "",
    ]
    for failure in failures:
        said = f"host {_text(failure.server)} said" if failure.server else "reason"
        reply = _text(str(failure.reply))
        human.append(f"<{_text(failure.recipient)}>: {said}: {reply}")
    status = [
        f"Reporting-MTA: dns; {host}",
        f"X-Ace-Mail-Queue-ID: {_text(queueId)}",
        f"Arrival-Date: {formatdate(arrivalDate, usegmt=True)}",
    ]
    for failure in failures:
        diagnostic = "delivery time expired; " if expired else ""
        status += [
            "",
            f"Final-Recipient: rfc822; {_text(failure.recipient)}",
            "Action: failed",
            f"Status: {_status(failure.reply, expired)}",
            f"Diagnostic-Code: smtp; {diagnostic}{_text(str(failure.reply))}",
            f"Last-Attempt-Date: {formatdate(nowDate, usegmt=True)}",
        ]
    lines = originalHeaders.splitlines()
    if originalHeaders.isascii() and all(len(line) <= _LONGEST_LINE for line in lines):
        encoding = "7bit"
    else:
        encoding = "quoted-printable"
        lines = quopri.encodestring(b"\n".join(lines)).splitlines()
    original = b"\r\n".join(lines)
    parts = [
        _crlf(
            "Content-Description: Notification\n"
            "Content-Type: text/plain; charset=us-ascii\n\n"
            + "\n".join(map(_fold, human))
            + "\n"
        ),
        _crlf(
            "Content-Description: Delivery report\n"
            "Content-Type: message/delivery-status\n\n"
            + "\n".join(map(_fold, status))
            + "\n"
        ),
        _crlf(
            "Content-Description: Undelivered Message Headers\n"
            "Content-Type: text/rfc822-headers\n"
            f"Content-Transfer-Encoding: {encoding}\n\n"
        )
        + original
        + b"\r\n",
    ]
    boundary = _boundary(messageId, parts)
    subject = (
        "Undelivered Mail Returned to Sender (delivery time expired)"
        if expired
        else "Undelivered Mail Returned to Sender"
    )
    head = _crlf(
        f"From: Mail Delivery System <MAILER-DAEMON@{host}>\n"
        f"To: <{_text(envelope.sender)}>\n"
        f"Subject: {subject}\n"
        f"Date: {formatdate(nowDate, usegmt=True)}\n"
        f"Message-ID: {_text(messageId)}\n"
        "Auto-Submitted: auto-replied\n"
        "MIME-Version: 1.0\n"
        "Content-Type: multipart/report; report-type=delivery-status;\n"
        f' boundary="{boundary}"\n'
        "\n"
        "This is a MIME-encapsulated message.\n"
        "\n"
    )
    delimiter = f"--{boundary}\r\n".encode("ascii")
    body = b"".join(delimiter + part for part in parts)
    return head + body + f"--{boundary}--\r\n".encode("ascii")


def _boundary(seed: str, parts: Sequence[bytes]) -> str:
    """
    @return: A multipart boundary that occurs in none of C{parts}.
    """
    digest = hashlib.sha256(seed.encode("utf-8")).hexdigest()[:24]
    counter = 0
    while True:
        boundary = f"=_ace-mail-dsn-{digest}-{counter}"
        if not any(boundary.encode("ascii") in part for part in parts):
            return boundary
        counter += 1
