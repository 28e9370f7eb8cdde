# -*- test-case-name: tests.test_address -*-
"""
Checks on mail addresses as they appear in an SMTP envelope (RFC 5321).
"""

from __future__ import annotations

import email.policy
import re

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = rf"{_ATOM}(?:\.{_ATOM})*"
_QUOTED = r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"'
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*"
_LITERAL = r"\[(?:[0-9.]+|IPv6:[0-9A-Fa-f:.]+)\]"
_MAILBOX = re.compile(rf"^(?:{_DOT_ATOM}|{_QUOTED})@(?:{_DOMAIN}|{_LITERAL})$")


def isMailbox(address: str) -> bool:
    """
    @return: Whether C{address} is a plain RFC 5321 mailbox,
        C{local-part@domain}, of at most 254 characters: no display name, no
        angle brackets, no source route, no control characters.
    """
    if len(address) > 254 or not address.isascii():
        return False
    local, _, domain = address.rpartition("@")
    return len(local) <= 64 and len(domain) <= 253 and bool(_MAILBOX.match(address))


def parseMailbox(text: str) -> tuple[str, str] | None:
    """
    Read one RFC 5322 mailbox such as C{Ann Lee <ann@example.net>}.

    @return: The display name and the address, or L{None} unless C{text} is
        exactly one mailbox with a plain address and no defects.
    """
    if any(c in text for c in "\r\n\x00"):
        return None
    try:
        header = email.policy.default.header_factory("To", text)
    except Exception:
        # The parser raises on some malformed input instead of noting a
        # defect; ValueError, IndexError, AttributeError and more are seen.
        return None
    addresses = header.addresses
    if header.defects or len(addresses) != 1:
        return None
    address = addresses[0].addr_spec
    if not isMailbox(address):
        return None
    return addresses[0].display_name, address
