# -*- test-case-name: tests.test_dkim -*-
"""
DKIM signatures (RFC 6376) for mail from the domains that have a key.
"""

from __future__ import annotations

import email.policy
import re
from email.parser import BytesHeaderParser
from typing import Iterable

import dkim
from twisted.logger import Logger

from ace_mail.config import DkimKey

_log = Logger()
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_SIGNED_HEADERS = [
    b"from",
    b"to",
    b"cc",
    b"subject",
    b"date",
    b"message-id",
    b"reply-to",
    b"in-reply-to",
    b"references",
    b"mime-version",
    b"content-type",
    b"content-transfer-encoding",
]


def fromDomain(message: bytes) -> str | None:
    """
    @return: The lower-cased domain of the first From address of
        C{message}, or L{None} when it has none that parses.
    """
    match = _HEADER_END.search(message)
    head = message[: match.start()] if match else message
    try:
        headers = BytesHeaderParser(policy=email.policy.default).parsebytes(head)
        addresses = headers["From"].addresses if headers["From"] else ()
    except (ValueError, IndexError, TypeError, AttributeError):
        return None
    for address in addresses:
        if address.domain:
            return str(address.domain).lower()
    return None


class Signer:
    """
    Signs each message whose From domain has a key, and passes the rest on
    unchanged.
    """

    def __init__(self, keys: Iterable[DkimKey]) -> None:
        self.keys = {key.domain: key for key in keys}

    def sign(self, message: bytes) -> bytes:
        """
        @return: C{message} with a DKIM-Signature header first, when its From
            domain has a key; otherwise C{message} itself.
        """
        domain = fromDomain(message)
        key = self.keys.get(domain) if domain else None
        if key is None:
            return message
        try:
            signature = dkim.sign(
                message,
                key.selector.encode("ascii"),
                key.domain.encode("ascii"),
                key.privateKey,
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=_SIGNED_HEADERS,
            )
        except dkim.DKIMException as e:
            _log.warn(
                "Sending unsigned: cannot DKIM-sign mail from {domain}: {reason}",
                domain=domain,
                reason=str(e),
            )
            return message
        return bytes(signature) + message
