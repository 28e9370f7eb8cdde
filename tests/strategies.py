"""
Hypothesis strategies shared by ace-mail's tests.
"""

from __future__ import annotations

import base64

from hypothesis import strategies as st

#: Pieces that make the hard cases of SMTP DATA likely: dots at the start of
#: lines, bare CRs and LFs, CRLFs, and CRs split from their LFs.
_PIECES = [b".", b"..", b"a", b"b c", b"\r", b"\n", b"\r\n", b".\r\n", b"\r\n."]


def messageBytes() -> st.SearchStrategy[bytes]:
    """
    @return: Messages made of lines that start with dots, end with bare
        CRs, bare LFs or CRLFs, or do not end at all, plus arbitrary bytes.
    """
    piece = st.one_of(st.sampled_from(_PIECES), st.binary(max_size=6))
    return st.lists(piece, max_size=40).map(b"".join)


@st.composite
def chunked(draw: st.DrawFn, data: st.SearchStrategy[bytes]) -> list[bytes]:
    """
    @param data: The strategy for the whole.
    @return: The bytes drawn from C{data}, cut into chunks at arbitrary
        points, some of them empty.
    """
    whole = draw(data)
    cuts = sorted(draw(st.lists(st.integers(0, len(whole)), max_size=12)))
    bounds = [0, *cuts, len(whole)]
    return [whole[start:end] for start, end in zip(bounds, bounds[1:], strict=False)]


# The agent's address hidden in headers, for tests.test_rewrite.

_LOCAL_CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789"
_CHARSETS = (
    "utf-8",
    "us-ascii",
    "iso-8859-1",
    "iso-8859-15",
    "windows-1252",
    "koi8-r",
    "shift_jis",
    "utf-16",
)


@st.composite
def agentAddresses(draw: st.DrawFn) -> str:
    """
    @return: An agent's address in lower case, such as
        C{"john.smith@corp.example"}, sometimes on C{example.com}, the
        domain of the entrances of L{tests.test_rewrite}.
    """
    word = st.text(_LOCAL_CHARACTERS, min_size=1, max_size=8)
    local = ".".join(draw(st.lists(word, min_size=1, max_size=3)))
    domain = draw(
        st.sampled_from(["example.com", "corp.example", "mail.agents.example"])
    )
    return f"{local}@{domain}"


def _mixedCase(draw: st.DrawFn, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(
        c.upper() if flip else c for c, flip in zip(text, flips, strict=True)
    )


def _encodedWord(draw: st.DrawFn, text: str) -> str:
    charset = draw(st.sampled_from(_CHARSETS))
    data = text.encode(charset)
    if draw(st.booleans()):
        return f"=?{charset}?B?{base64.b64encode(data).decode('ascii')}?="
    everyByte = draw(st.booleans())
    payload = "".join(
        (
            chr(byte)
            if byte < 128 and chr(byte).isalnum() and not everyByte
            else f"={byte:02X}"
        )
        for byte in data
    )
    return f"=?{charset}?{draw(st.sampled_from('qQ'))}?{payload}?="


@st.composite
def hiddenForms(draw: st.DrawFn, address: str) -> str:
    """
    @return: C{address} written in one of the forms that a mail reader
        shows as the address: in mixed case, in an RFC 2047 encoded word (B
        or Q, any charset), split over two encoded words that may be folded
        apart, with C{=40} or C{%40} for C{@}, or with a quoted local part.
    """
    text = _mixedCase(draw, address)
    form = draw(st.sampled_from(["raw", "word", "split", "=40", "%40", "quoted"]))
    if form == "word":
        return _encodedWord(draw, text)
    if form == "split":
        cut = draw(st.integers(1, len(text) - 1))
        gap = draw(st.sampled_from([" ", "\r\n ", "\r\n\t", ""]))
        return _encodedWord(draw, text[:cut]) + gap + _encodedWord(draw, text[cut:])
    if form in ("=40", "%40"):
        return text.replace("@", form)
    if form == "quoted":
        local, _, domain = text.rpartition("@")
        return f'"{local}"@{domain}'
    return text


#: Where a header can hide a piece of text, as (name, template) pairs.
HIDING_PLACES = (
    ("Subject", "Re: Your question {}"),
    ("Subject", "{}"),
    ("Sender", "{}"),
    ("Reply-To", "Agent <{}>"),
    ("Return-Path", "<{}>"),
    (
        "Received",
        "from pc7 ([10.1.2.3]) by mx1.corp.example; for <{}>; Tue, 3 Dec 2024",
    ),
    ("X-Sender", "{}"),
    ("X-Originating-IP", "[10.1.2.3] {}"),
    ("X-MS-Exchange-Organization-AuthAs", "{}"),
    ("Disposition-Notification-To", "{}"),
    ("Return-Receipt-To", "<{}>"),
    ("DKIM-Signature", "v=1; a=rsa-sha256; d=corp.example; i={}; s=s1; b=YWJj"),
    ("Thread-Index", "AdlF {}"),
    ("X-Mailer", "Mailer for {}"),
    ("X-Unknown-Thing", "{}"),
    ("Cc", '"{}" <colleague@corp.example>'),
    ("To", "{} , someone@corp.example"),
    ("Message-ID", "<{}>"),
    ("In-Reply-To", "<{}>"),
    ("References", "<first@example.net> <{}>"),
    ("Date", "Tue, 3 Dec 2024 10:00:00 +0100 ({})"),
    ("Content-Type", 'text/plain; charset="utf-8"; name="{}"'),
    ("Content-Disposition", 'attachment; filename="{}"'),
    ("Content-Language", "{}"),
    ("Importance", "{}"),
    ("Autocrypt", "addr={}; keydata=YWJj"),
)


@st.composite
def hidingHeaderLines(draw: st.DrawFn, address: str) -> list[str]:
    """
    @return: Header lines, CRLF-terminated and some of them folded, that
        hide C{address} in the places of L{HIDING_PLACES}.
    """
    lines = []
    for name, template in draw(
        st.lists(st.sampled_from(HIDING_PLACES), min_size=1, max_size=6)
    ):
        line = (
            f"{_mixedCase(draw, name)}: {template.format(draw(hiddenForms(address)))}"
        )
        pieces = line.split(" ")
        count = len(pieces) - 1
        folds = draw(st.lists(st.booleans(), min_size=count, max_size=count))
        folded = pieces[0]
        for piece, fold in zip(pieces[1:], folds, strict=True):
            canFold = fold and piece and not folded.endswith("\n")
            folded += ("\r\n " if canFold else " ") + piece
        lines.append(folded + "\r\n")
    return lines
