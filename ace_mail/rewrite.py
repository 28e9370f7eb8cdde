# -*- test-case-name: tests.test_rewrite -*-
"""
The customer's copy of an agent's reply: a new header block that names the
entrance and the customer and shows nothing of the agent, over the agent's
body unchanged.

Pure functions over bytes: no I/O, no clock, no reactor.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import quopri
import re
import unicodedata
from email.header import Header
from email.headerregistry import (
    BaseHeader,
    ContentDispositionHeader,
    ContentTypeHeader,
    HeaderRegistry,
)
from email.utils import format_datetime, getaddresses, parsedate_to_datetime
from functools import lru_cache
from typing import Iterable
from urllib.parse import unquote

from attrs import evolve

from ace_mail.store import Contact, Entrance


class RewriteError(Exception):
    """
    A reply cannot be rewritten without showing the agent's address; the
    message is one sentence for the SMTP reply to the agent.
    """


_FIELD = re.compile(r"^([\x21-\x39\x3b-\x7e]+)[ \t]*:(.*)$", re.DOTALL)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(r"(?<=\?=)\s+(?==\?)")
_ADDRESS = re.compile(r"[^\s<>()\[\],;:\"@]+@[^\s<>()\[\],;:\"@]+")
_MESSAGE_ID = re.compile(r"<[^<>\s]+@[^<>\s]+>")
_AROUND_AT = re.compile(r"\s*@\s*")
_LOCAL_CHARACTERS = frozenset(
    "abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+/=?^_`{|}~.-"
)
_PLAIN_WORD = re.compile(r"^[\x21-\x7e]{1,77}$")

_TRANSFER_ENCODINGS = {"7bit", "8bit", "binary", "quoted-printable", "base64"}
_TAG = r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*"
_KEPT_AS_WRITTEN = (
    ("Content-Language", re.compile(rf"^{_TAG}(?:\s*,\s*{_TAG})*$")),
    ("Importance", re.compile(r"^(?:low|normal|high)$", re.IGNORECASE)),
    ("Priority", re.compile(r"^(?:normal|urgent|non-urgent)$", re.IGNORECASE)),
    ("X-Priority", re.compile(r"^[1-5](?: \([A-Za-z ]{1,20}\))?$")),
)
_AGENT_FIELDS = ("from", "sender", "reply-to", "return-path", "resent-from")
_RECIPIENT_FIELDS = ("to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc")


def rewriteReply(
    message: bytes,
    contact: Contact,
    entrance: Entrance,
    *,
    fromName: str | None = None,
    hide: Iterable[str] = (),
) -> bytes:
    """
    Build the customer's copy of an agent's reply to a contact.

    The new header block is made from an allow-list: From and Reply-To name
    the entrance, To names the customer, In-Reply-To and References thread
    the reply under the customer's email, the Message-ID is new and on the
    entrance's domain, and Subject, Date, the MIME headers and the priority
    headers come from the agent's message unless they name the agent.  Every
    other header is dropped; the body is passed on byte for byte.

    @param message: The agent's reply, with CRLF line ends.
    @param fromName: The display name of From and Reply-To; by default the
        entrance's.
    @param hide: Further addresses to keep out of the copy (such as the
        envelope sender), besides those of L{agentAddressesIn} and the other
        recipients that To, Cc and Bcc name; empty strings are ignored, and
        so are the entrance's and the customer's addresses, which the copy
        shows.
    @return: The customer's copy, its header lines folded at 78 columns.
    @raise RewriteError: If the MIME boundary of the message contains the
        agent's address, which cannot be changed without changing the body,
        or if the finished copy's headers would still show one of them (a
        last check that does not trust the allow-list alone).
    """
    end = headerEnd(message)
    header, body = (message, b"") if end is None else (message[:end], message[end:])
    digest = hashlib.sha256(message)
    return (
        rewriteHeader(header, digest, contact, entrance, fromName=fromName, hide=hide)
        + body
    )


def headerEnd(data: bytes) -> int | None:
    """
    Find where the body starts, as L{rewriteReply} splits a message: after
    the first empty line, or at the first line that is neither a header
    field nor a continuation.

    @param data: The start of a message, ending at the end of a line.
    @return: Where the body starts in C{data}, or L{None} if the header
        block has not ended within it.
    """
    body = _split(data)[1]
    if body:
        return len(data) - len(body)
    lastLine = data[data.rfind(b"\n", 0, len(data) - 1) + 1 :]
    if lastLine in (b"\n", b"\r\n"):
        return len(data)
    return None


def rewriteHeader(
    header: bytes,
    digest: hashlib._Hash,
    contact: Contact,
    entrance: Entrance,
    *,
    fromName: str | None = None,
    hide: Iterable[str] = (),
) -> bytes:
    """
    Build the header block of the customer's copy of an agent's reply, for
    a message whose body is not in memory: followed by the body unchanged,
    it is the copy that L{rewriteReply} makes, with the same checks.

    @param header: The message up to where L{headerEnd} says the body
        starts, or the whole message if it has no body.
    @param digest: A SHA-256 hash fed with the whole message, for the
        Message-ID; it is copied, not changed.
    @param fromName: As for L{rewriteReply}.
    @param hide: As for L{rewriteReply}.
    @return: The new header block, with the empty line that ends it.
    @raise RewriteError: As L{rewriteReply} does.
    """
    fields = _split(header)[0]
    extra = {address for address in hide if address}
    found = _addressesIn(fields, _AGENT_FIELDS + _RECIPIENT_FIELDS)
    shown = {
        spelling
        for address in (entrance.address, contact.customerAddress)
        for spelling in _spellings(_normal(address).strip())
    }
    secrets = _Secrets(
        {
            spelling
            for address in found | extra
            for spelling in _spellings(_normal(address).strip())
        }
        - shown
    )

    first: dict[str, str] = {}
    for name, value in fields:
        first.setdefault(name.lower(), value)

    if fromName is None or secrets.seenIn("", fromName):
        fromName = entrance.displayName
    sender = evolve(entrance, displayName=fromName).formatted()
    headers = [("From", sender), ("Reply-To", sender)]
    headers.append(("To", contact.formattedCustomer()))
    headers.append(("Subject", _encodeText(_subject(first, contact, secrets))))
    date = _date(first.get("date"))
    if date is not None:
        headers.append(("Date", date))
    contactDigest = digest.copy()
    contactDigest.update(b"\0" + contact.id.encode("ascii"))
    domain = entrance.address.rpartition("@")[2]
    headers.append(("Message-ID", f"<{contactDigest.hexdigest()[:32]}@{domain}>"))
    if contact.messageId is not None:
        headers.append(("In-Reply-To", contact.messageId))
    references = _references(fields, contact, entrance, secrets)
    if references:
        headers.append(("References", " ".join(references)))
    headers.extend(_mimeHeaders(first, secrets))

    block = "".join(_fold(name, value) for name, value in headers)
    newHeader = block.encode("utf-8", "surrogateescape") + b"\r\n"
    if _Secrets(secrets.addresses - {""}).seenInHeader(newHeader):
        raise RewriteError(
            "its headers would still show the agent's address; answer from ACE Agent"
        )
    return newHeader


def agentAddressesIn(message: bytes) -> set[str]:
    """
    @return: The addresses in the From, Sender, Reply-To, Return-Path and
        Resent-From headers of C{message}, lower-cased, in any of the forms
        that L{headerLeaks} reads.
    """
    return _addressesIn(_split(message)[0], _AGENT_FIELDS)


def _addressesIn(fields: list[tuple[str, str]], names: tuple[str, ...]) -> set[str]:
    """
    @param fields: Unfolded header fields, as L{_split} gives them.
    @param names: Header field names in lower case.
    @return: The addresses in those header fields, as L{agentAddressesIn}
        finds them.
    """
    found: set[str] = set()
    for name, value in fields:
        if name.lower() in names:
            kept = len(value) <= _KEPT_LENGTH
            found.update(_keptAddresses(value) if kept else _addressesOf(value))
    return found


def _addressesOf(value: str) -> frozenset[str]:
    """
    @return: The addresses in one header field's value, in any of its
        readings, lower-cased.
    """
    found: set[str] = set()
    for form in _forms("", value):
        pairs = getaddresses([form])
        for candidate in [a for _, a in pairs] + _ADDRESS.findall(form):
            local, at, domain = candidate.strip("<>").rpartition("@")
            local, domain = local.strip('"'), domain.rstrip(".")
            if local and at and domain:
                found.add(f"{local}@{domain}".lower())
    return frozenset(found)


def headerLeaks(message: bytes, secret: str) -> bool:
    """
    @return: Whether C{secret} appears in any header of C{message} in any
        form: as it is, in any letter case, in RFC 2047 encoded words of
        either encoding and any charset (also split over several words), in
        RFC 2231 parameters, over folded lines, quoted, percent- or
        quoted-printable-escaped (C{=40} or C{%40} for C{@}), as an HTML
        entity, or in full-width letters.  Only the header block counts,
        not the body.
    """
    return _Secrets({_normal(secret).strip()}).seenInHeader(message)


def _split(message: bytes) -> tuple[list[tuple[str, str]], bytes]:
    """
    Split a message into its unfolded header fields and its body.  The
    header block ends at the first empty line, or at the first line that is
    neither a field nor a continuation, which starts the body as it would in
    a mail reader.  Control characters in values become spaces.
    """
    fields: list[tuple[str, str]] = []
    position = 0
    while position < len(message):
        end = message.find(b"\n", position)
        stop = len(message) if end < 0 else end + 1
        line = message[position:stop].removesuffix(b"\n").removesuffix(b"\r")
        if not line:
            return [(n, v.strip()) for n, v in fields], message[stop:]
        text = line.decode("ascii", "surrogateescape")
        match = _FIELD.match(text)
        if text[0] in " \t" and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + _CONTROL.sub(" ", text))
        elif match is not None:
            fields.append((match.group(1), _CONTROL.sub(" ", match.group(2))))
        else:
            return [(n, v.strip()) for n, v in fields], message[position:]
        position = stop
    return [(n, v.strip()) for n, v in fields], b""


def _asUtf8(text: str) -> str:
    """
    Read the raw bytes of a header value as UTF-8 where they are.
    """
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _decodeWords(text: str) -> str:
    """
    Decode every RFC 2047 encoded word in C{text}, wherever it stands, and
    again in the result, so that nothing a lenient reader might decode
    stays hidden.
    """
    for _ in range(3):
        decoded = _ENCODED_WORD.sub(_decodeWord, _BETWEEN_WORDS.sub("", text))
        if decoded == text:
            break
        text = decoded
    return text


def _decodeWord(match: re.Match[str]) -> str:
    charset, encoding, payload = match.groups()
    if encoding in "bB":
        try:
            data = base64.b64decode(payload + "=" * (-len(payload) % 4))
        except (binascii.Error, ValueError):
            return match.group(0)
    else:
        data = quopri.decodestring(
            payload.replace("_", " ").encode("latin-1", "replace")
        )
    try:
        return data.decode(charset.split("*")[0], "replace")
    except LookupError:
        return data.decode("latin-1")


def _normal(text: str) -> str:
    """
    Fold C{text} to the form in which L{_Secrets} compares: compatibility
    characters to plain ones, letters to lower case, no characters that a
    reader does not show (format characters such as a zero-width space or
    a soft hyphen, and NULs, which make UTF-16 read under an unknown charset
    name), ideographic full stops as dots (as IDNA reads them), no
    backslashes, quotes as spaces and no white space around C{@}.
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    folded = folded.replace("\\", "").replace("\0", "")
    if not folded.isascii():
        folded = "".join(c for c in folded if unicodedata.category(c) != "Cf")
        folded = folded.replace("\u3002", ".")
    return _AROUND_AT.sub("@", folded.replace('"', " "))


def _spellings(address: str) -> set[str]:
    """
    @return: C{address} as it is and with its domain in the other IDNA
        form: Unicode for an ASCII (punycode) domain, ASCII for a Unicode
        one, when that form exists.
    """
    local, at, domain = address.rpartition("@")
    spellings = {address}
    for convert in (
        lambda: domain.encode("idna").decode("ascii"),
        lambda: domain.encode("ascii").decode("idna"),
    ):
        try:
            spellings.add(f"{local}{at}{_normal(convert())}")
        except UnicodeError:
            pass
    return spellings


_HEADERS = HeaderRegistry()


@lru_cache(maxsize=64)
def _headerClass(name: str) -> type[BaseHeader]:
    """
    @return: The class in which the email package's default policy reads
        the header field C{name}, made once: the registry makes a new class
        each time it is asked, which costs more than parsing most fields.
    """
    return _HEADERS[name]


def _parsed(name: str, value: str) -> BaseHeader:
    """
    @return: The header field C{name: value} as the email package's default
        policy reads it.
    """
    return _headerClass(name)(name, value)


def _forms(name: str, value: str) -> set[str]:
    """
    @return: Every reading of one header field that a mail reader, or a
        curious customer, might make of it, each once.
    """
    readings = {value, _asUtf8(value)}
    readings.update([_decodeWords(reading) for reading in readings])
    key = (name or "x-text").lower()
    if len(value) <= _KEPT_LENGTH:
        readings.update(_keptReadings(key, value))
    else:
        readings.update(_parsedReadings(key, value))
    forms = set()
    for reading in readings:
        text = f"{name}:{reading}"
        forms.add(text)
        forms.add(unquote(text))
        forms.add(
            quopri.decodestring(text.encode("utf-8", "replace")).decode(
                "utf-8", "replace"
            )
        )
        forms.add(html.unescape(text))
    return forms


def _parsedReadings(name: str, value: str) -> tuple[str, ...]:
    """
    @return: The header field C{name: value} as the email package reads it,
        followed by its MIME parameters if it has any; nothing if the email
        package cannot read it.
    """
    readings: list[str] = []
    try:
        parsed = _parsed(name, value)
        readings.append(str(parsed))
        readings.extend(getattr(parsed, "params", {}).values())
    except Exception:
        # The email package raises on some malformed headers instead of
        # recording a defect; the other readings still apply.
        pass
    return tuple(readings)


#: Header fields up to this many characters long are parsed once and their
#: readings kept, as are the addresses they name, for the next few hundred
#: fields: the entrance's From, MIME-Version, a client's Content-Type and an
#: agent's own address recur from one reply to the next, and parsing costs
#: more than the rest of a field's check.  What is kept depends on the field
#: alone, never on the addresses looked for; each entry is a few times its
#: field's length at most, so the caches stay under a megabyte.
_KEPT_LENGTH = 200
_KEPT_FIELDS = 256
_keptReadings = lru_cache(maxsize=_KEPT_FIELDS)(_parsedReadings)
_keptAddresses = lru_cache(maxsize=_KEPT_FIELDS)(_addressesOf)


class _Secrets:
    """
    The addresses that one copy must not show, looked for all at once in
    each form of a header field, so that a field is read (parsed, decoded,
    normalised) once however many addresses there are.

    @ivar addresses: The addresses, in the form of L{_normal}.
    """

    def __init__(self, addresses: Iterable[str]) -> None:
        self.addresses = frozenset(addresses)

    def seenIn(self, name: str, value: str) -> bool:
        """
        @return: Whether any of the addresses appears in the header field
            C{name: value} in any form, and not as the end of a longer local
            part (C{xjohn@} is not C{john@}).
        """
        if not self.addresses:
            return False
        forms = {_normal(form) for form in _forms(name, value)}
        return any(self._inForm(form) for form in forms)

    def _inForm(self, form: str) -> bool:
        """
        @return: Whether any of the addresses appears in C{form} where no
            character of a local part comes right before it.
        """
        for address in self.addresses:
            start = form.find(address)
            while start >= 0:
                if start == 0 or form[start - 1] not in _LOCAL_CHARACTERS:
                    return True
                start = form.find(address, start + 1)
        return False

    def seenInHeader(self, message: bytes) -> bool:
        """
        @return: Whether any of the addresses appears in any header field
            of C{message}, as L{seenIn} reads it.
        """
        return any(self.seenIn(name, value) for name, value in _split(message)[0])


def _subject(first: dict[str, str], contact: Contact, secrets: _Secrets) -> str:
    """
    @return: The agent's subject, decoded, unless it is missing, empty or
        names the agent; then C{"Re: "} and the customer's subject.
    """
    raw = first.get("subject")
    if raw is not None:
        subject = str(_parsed("subject", _asUtf8(raw)))
        subject = _CONTROL.sub(" ", subject).strip()
        leaks = secrets.seenIn("subject", raw) or secrets.seenIn("subject", subject)
        if subject and not leaks:
            return subject
    original = _CONTROL.sub(" ", contact.subject).strip()
    if original.lower().startswith("re:"):
        return original
    return f"Re: {original}".strip()


def _encodeText(text: str) -> str:
    """
    @return: C{text} as an unstructured header value: as it is when it is
        printable ASCII in words that fit a line and cannot be mistaken for
        encoded words, otherwise as UTF-8 encoded words that fit a line.
    """
    words = text.split(" ")
    if "=?" not in text and all(_PLAIN_WORD.match(word) for word in words if word):
        return text
    return " ".join(Header(text, "utf-8", maxlinelen=68).encode(linesep=" ").split())


def _date(raw: str | None) -> str | None:
    """
    @return: The agent's Date written anew from the time it names, so that
        no comment of it passes, or L{None} if there is none that parses.
    """
    if raw is None:
        return None
    try:
        return format_datetime(parsedate_to_datetime(raw))
    except (TypeError, ValueError, IndexError):
        return None


def _references(
    fields: list[tuple[str, str]],
    contact: Contact,
    entrance: Entrance,
    secrets: _Secrets,
) -> list[str]:
    """
    @return: The customer's References and Message-ID, with the Message-IDs
        that the agent's References add between them.  Left out are the
        agent's In-Reply-To, which names the agent's copy of the customer's
        email rather than the customer's; Message-IDs on the agent's domains
        (unless on the entrance's); and those that name a hidden address or
        carry the contact id.
    """
    entranceDomain = entrance.address.rpartition("@")[2].lower()
    agentDomains = {secret.rpartition("@")[2] for secret in secrets.addresses}
    added: list[str] = []
    replyingTo: set[str] = set()
    for name, value in fields:
        if name.lower() == "references":
            added += _MESSAGE_ID.findall(value)
        elif name.lower() == "in-reply-to":
            replyingTo.update(_MESSAGE_ID.findall(value))

    def isAgents(messageId: str) -> bool:
        domain = messageId[1:-1].rpartition("@")[2].lower()
        onAgentDomain = any(
            domain == agent or domain.endswith("." + agent) for agent in agentDomains
        )
        return (
            (onAgentDomain and domain != entranceDomain)
            or messageId in replyingTo
            or contact.id in messageId.lower()
            or secrets.seenIn("references", messageId)
        )

    chain = list(contact.references) + [m for m in added if not isAgents(m)]
    chain = [m for m in dict.fromkeys(chain) if m != contact.messageId]
    if contact.messageId is not None:
        chain.append(contact.messageId)
    return chain


def _mimeHeaders(first: dict[str, str], secrets: _Secrets) -> list[tuple[str, str]]:
    """
    @return: The MIME and priority headers of the agent's message that the
        customer's copy keeps, each checked or written anew.
    """
    headers: list[tuple[str, str]] = []
    if "mime-version" in first:
        headers.append(("MIME-Version", "1.0"))
    for key, name in (
        ("content-type", "Content-Type"),
        ("content-disposition", "Content-Disposition"),
    ):
        value = _parameterised(key, first[key], secrets) if key in first else None
        if value is not None:
            headers.append((name, value))
    encoding = first.get("content-transfer-encoding", "").strip().lower()
    if encoding in _TRANSFER_ENCODINGS:
        headers.append(("Content-Transfer-Encoding", encoding))
    for name, pattern in _KEPT_AS_WRITTEN:
        if pattern.match(first.get(name.lower(), "")):
            headers.append((name, first[name.lower()]))
    return headers


def _parameterised(key: str, raw: str, secrets: _Secrets) -> str | None:
    """
    @return: A Content-Type or Content-Disposition as the agent wrote it, or
        if it names the agent, written anew without the parameters that do;
        L{None} to leave out a Content-Disposition that cannot be read.
    @raise RewriteError: If the MIME boundary names the agent.
    """
    if not secrets.seenIn(key, raw):
        return raw
    parsed = _parsed(key, raw)
    if isinstance(parsed, ContentTypeHeader):
        value = parsed.content_type
    elif isinstance(parsed, ContentDispositionHeader) and parsed.content_disposition:
        value = parsed.content_disposition
    else:
        return None
    for parameter, text in parsed.params.items():
        if not secrets.seenIn(key, text):
            value += "; " + _parameter(parameter, text)
        elif parameter == "boundary":
            raise RewriteError(
                "The MIME boundary of the message contains the sender's "
                "address, which must not reach the customer; send the reply "
                "again from another mail client."
            )
    return value


def _parameter(name: str, text: str) -> str:
    """
    @return: One MIME parameter: a quoted string when C{text} is printable
        ASCII, an RFC 2231 UTF-8 value otherwise.
    """
    if re.match(r"^[\x20-\x7e]*$", text):
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        return f'{name}="{escaped}"'
    encoded = "".join(
        chr(byte) if chr(byte).isalnum() and byte < 128 else f"%{byte:02X}"
        for byte in text.encode("utf-8", "surrogateescape")
    )
    return f"{name}*=utf-8''{encoded}"


def _fold(name: str, value: str) -> str:
    """
    @return: One header line, folded before white space so that no line
        passes 78 columns unless one word alone does, with CRLF line ends.
    """
    tokens = re.findall(r"[ \t]*[^ \t]+", " " + value)
    lines: list[str] = []
    line = f"{name}:"
    for token in tokens:
        if len(line) + len(token) > 78:
            lines.append(line)
            line = token
        else:
            line += token
    lines.append(line)
    return "\r\n".join(lines) + "\r\n"
