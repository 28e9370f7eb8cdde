# -*- test-case-name: tests.test_proxy_policy -*-
"""
Who may use the SMTP proxy, and which envelope addresses it takes.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Iterable, Mapping

from attrs import frozen

from ..address import isMailbox
from ..store import Contact, isContactId

_PATH = re.compile(r"^<([^<>]*)>(?: +(.*))?$")
_PARAMETER = re.compile(r"^([A-Za-z0-9][A-Za-z0-9-]*)(?:=([\x21-\x3c\x3e-\x7e]+))?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@frozen
class Refusal:
    """
    A negative SMTP reply and why it was given.

    @ivar code: The three-digit reply code.
    @ivar status: The enhanced status code (RFC 3463), such as C{"5.1.1"}.
    @ivar text: The sentence for the client.
    @ivar reason: A short fixed key for logs and the refusal counter.
    """

    code: int
    status: str
    text: str
    reason: str

    def __str__(self) -> str:
        return f"{self.code} {self.status} {self.text}"


class Refused(Exception):
    """
    Raised by the checks here; carries the L{Refusal} to answer with.
    """

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(str(refusal))
        self.refusal = refusal


def _refused(code: int, status: str, text: str, reason: str) -> Refused:
    return Refused(Refusal(code, status, text, reason))


@frozen
class Recipient:
    """
    A RCPT TO address that passed the checks.

    @ivar address: The address as given, without angle brackets.
    @ivar contactId: The contact id (lower case) when the address is a
        contact address at the reroute name, else L{None}: pass-through.
    """

    address: str
    contactId: str | None


def parsePath(argument: str, keyword: str) -> tuple[str, dict[str, str]]:
    """
    Split the argument of MAIL or RCPT into its path and parameters.

    @param argument: Everything after the command verb, such as
        C{"FROM:<a@example.com> SIZE=100"}.
    @param keyword: C{"FROM"} or C{"TO"}.
    @return: The address inside the angle brackets and the parameters by
        upper-case name (a parameter without a value maps to C{""}).
    @raise Refused: When the argument is not of that form.
    """
    command = "MAIL FROM" if keyword == "FROM" else "RCPT TO"
    usage = f"syntax error: expected {command}:<address>"
    prefix, colon, rest = argument.partition(":")
    if not colon or prefix.strip().upper() != keyword:
        raise _refused(501, "5.5.4", usage, "syntax")
    if _CONTROL.search(rest):
        raise _refused(
            501,
            "5.5.2",
            "CR, LF, NUL and other control characters are not allowed in an address",
            "control-character",
        )
    match = _PATH.match(rest.strip(" "))
    if match is None:
        raise _refused(501, "5.5.4", usage, "syntax")
    parameters: dict[str, str] = {}
    for word in (match.group(2) or "").split():
        parameter = _PARAMETER.match(word)
        if parameter is None:
            raise _refused(501, "5.5.4", f"malformed parameter {word}", "syntax")
        parameters[parameter.group(1).upper()] = parameter.group(2) or ""
    return match.group(1), parameters


def checkMailParameters(parameters: Mapping[str, str], maxSize: int) -> None:
    """
    Check the parameters of MAIL FROM: SIZE within C{maxSize}, BODY of 7BIT
    or 8BITMIME, and AUTH (accepted and ignored, as RFC 4954 allows).

    @raise Refused: With 552 for a declared size over the limit, 501 for a
        malformed value and 555 for any other parameter.
    """
    for name, value in parameters.items():
        if name == "SIZE" and not value.isdigit():
            raise _refused(501, "5.5.4", "SIZE needs a number of bytes", "syntax")
        if name == "SIZE" and int(value) > maxSize:
            raise _refused(
                552,
                "5.3.4",
                f"message size {value} exceeds the limit of {maxSize} bytes",
                "message-too-big",
            )
        if name == "BODY" and value.upper() not in ("7BIT", "8BITMIME"):
            raise _refused(501, "5.5.4", "BODY must be 7BIT or 8BITMIME", "syntax")
        if name not in ("SIZE", "BODY", "AUTH"):
            raise _refused(
                555, "5.5.4", f"MAIL parameter {name} is not supported", "syntax"
            )


def checkSender(address: str) -> None:
    """
    Check a MAIL FROM address: the null sender or a plain mailbox.

    @raise Refused: With 553 5.1.7 when it is neither.
    """
    if address == "":
        return
    if address.startswith("@"):
        raise _refused(
            553, "5.1.7", "source routes are not accepted in MAIL FROM", "source-route"
        )
    if not isMailbox(address):
        raise _refused(
            553, "5.1.7", f"<{address}> is not a valid sender address", "bad-address"
        )


def checkRecipient(address: str, rerouteName: str) -> Recipient:
    """
    Check a RCPT TO address and tell contact addresses from pass-through.

    Every form that a relay test or an old routing convention uses to make
    one address reach another host is refused, whatever its domain: source
    routes (C{@a,@b:user@c}), bang paths (C{host!user}), the percent hack
    (C{user%host@relay}), a second C{@} (C{user@a@b}, also inside quotes)
    and addresses without a domain.

    @param address: The address inside the angle brackets.
    @param rerouteName: The host name of contact addresses.
    @raise Refused: With a 501 or 553 and the form it found.
    """
    if _CONTROL.search(address):
        raise _refused(
            501,
            "5.5.2",
            "CR, LF, NUL and other control characters are not allowed in an address",
            "control-character",
        )
    if address.startswith("@"):
        raise _refused(
            553,
            "5.1.3",
            "source routes such as <@relay:user@domain> are not accepted",
            "source-route",
        )
    if "!" in address:
        raise _refused(
            553, "5.1.3", "bang paths such as host!user are not accepted", "bang-path"
        )
    if "%" in address:
        raise _refused(
            553,
            "5.1.3",
            "the percent hack, user%host@relay, is not accepted",
            "percent-hack",
        )
    if address.count("@") != 1:
        raise _refused(
            553,
            "5.1.3",
            "an address must have exactly one @, as in user@domain",
            "at-count",
        )
    if not isMailbox(address):
        raise _refused(
            501, "5.1.3", f"<{address}> is not a valid address", "bad-address"
        )
    local, _, domain = address.rpartition("@")
    if domain.lower() != rerouteName.lower():
        return Recipient(address, None)
    contactId = local.lower()
    if not isContactId(contactId):
        raise Refused(unknownContact(contactId))
    return Recipient(address, contactId)


def unknownContact(contactId: str) -> Refusal:
    """
    @return: The 550 for a contact address that names no contact.
    """
    return Refusal(
        550,
        "5.1.1",
        f"no contact {contactId} is known here; answer from ACE Agent",
        "contact-unknown",
    )


class RelayPolicy:
    """
    Which clients may send through the proxy without authenticating.
    """

    def __init__(self, trustedNetworks: Iterable[str]) -> None:
        """
        @param trustedNetworks: Networks such as C{"127.0.0.0/8"}.
        @raise ValueError: With a sentence naming the network that is wrong.
        """
        networks = []
        for text in trustedNetworks:
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                raise ValueError(
                    f"trusted network {text!r} is not an IP network; "
                    "expected a form such as 192.0.2.0/24 or 2001:db8::/32."
                ) from None
        self._networks = tuple(networks)

    def isTrusted(self, host: str | None) -> bool:
        """
        @param host: The client's IP address, or L{None} when it has none
            (such as a UNIX socket).
        @return: Whether the address lies in a trusted network.
        """
        if host is None:
            return False
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self._networks)


def retentionRefusal(
    contact: Contact, now: float, retentionSeconds: float
) -> Refusal | None:
    """
    @return: The 550 for a contact ended more than C{retentionSeconds}
        before C{now}, or L{None} while replies to it are still accepted.
    """
    if contact.ended is None or now - contact.ended <= retentionSeconds:
        return None
    hours = f"{retentionSeconds / 3600:g}"
    return Refusal(
        550,
        "5.1.1",
        f"contact {contact.id} was ended more than {hours} hours ago; answer from ACE Agent",
        "contact-expired",
    )


def senderRefusal(
    sender: str, entrance: str, allowed: Mapping[str, tuple[str, ...]]
) -> Refusal | None:
    """
    @param sender: The MAIL FROM address.
    @param entrance: The name of the contact's entrance.
    @param allowed: The allowed sender domains by entrance name.
    @return: A 550 5.7.1 when the entrance limits its senders and the
        sender's domain is not one of them, else L{None}.
    """
    domains = allowed.get(entrance, ())
    if not domains:
        return None
    domain = sender.rpartition("@")[2].lower()
    if sender and domain in (d.lower() for d in domains):
        return None
    return Refusal(
        550,
        "5.7.1",
        f"sender <{sender}> may not answer contacts of entrance {entrance}; "
        "send from your agent address",
        "sender-domain",
    )
