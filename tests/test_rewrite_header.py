"""
Tests for L{ace_mail.rewrite.rewriteHeader} and L{ace_mail.rewrite.headerEnd}:
the header-only rewrite makes the same copy as L{rewriteReply}.
"""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from ace_mail.rewrite import (
    RewriteError,
    _split,
    headerEnd,
    rewriteHeader,
    rewriteReply,
)
from tests.strategies import hidingHeaderLines

from .test_rewrite import AGENT, CONTACT, ENTRANCE

_LINES = st.sampled_from(
    [
        b"From: John Smith <john.smith@corp.example>\r\n",
        b"To: abcdefghijklmnopqrst@proxy.example.com\r\n",
        b"Cc: Other <other@corp.example>\r\n",
        b"Subject: =?utf-8?q?Re=3A_Frage?=\r\n",
        b"Subject: second\r\n",
        b"Date: Tue, 3 Dec 2024 10:00:00 +0100\r\n",
        b"Message-ID: <m.1@corp.example>\r\n",
        b"References: <original.1@example.net> <m.0@corp.example>\r\n",
        b"Content-Type: text/plain; charset=utf-8\r\n",
        b"Content-Transfer-Encoding: 8bit\r\n",
        b"X-Mailer: something\r\n",
        b"\tfolded on\r\n",
        b" folded again\n",
        b"\r\n",
        b"\n",
        b"\r\r\n",
        b"not a field\r\n",
        b"Bad Name: value\r\n",
        b"Subject: caf\xc3\xa9 \xff\r\n",
        b"Hello.\r\n",
        b"",
    ]
)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """
    @return: Messages whose header blocks end in each way L{rewriteReply}
        knows (an empty line, a line that is no field, the end of the
        message) or hide the agent, over arbitrary bodies.
    """
    lines = draw(st.lists(_LINES, max_size=12))
    hiding = [line.encode("utf-8") for line in draw(hidingHeaderLines(AGENT))]
    if draw(st.booleans()):
        lines[draw(st.integers(0, len(lines))) : 0] = hiding
    return b"".join(lines) + draw(st.binary(max_size=60))


def both(message: bytes, hide: list[str]) -> tuple[object, object]:
    """
    @return: What L{rewriteReply} makes of C{message}, and what
        L{rewriteHeader} over its header block followed by its body makes:
        the copy, or the L{RewriteError} message.
    """
    try:
        whole: object = rewriteReply(message, CONTACT, ENTRANCE, hide=hide)
    except RewriteError as e:
        whole = str(e)
    end = headerEnd(message)
    if end is None:
        end = len(message)
    try:
        header = rewriteHeader(
            message[:end], hashlib.sha256(message), CONTACT, ENTRANCE, hide=hide
        )
        streamed: object = header + message[end:]
    except RewriteError as e:
        streamed = str(e)
    return whole, streamed


class HeaderRewriteTests(SynchronousTestCase):
    """
    The header-only rewrite, followed by the body as it is, equals the
    whole-message rewrite.
    """

    @settings(max_examples=400)
    @given(message=messages(), hide=st.sampled_from([[], ["other@corp.example"]]))
    def test_sameAsRewriteReply(self, message: bytes, hide: list[str]) -> None:
        """
        For any message, L{rewriteHeader} over the part that L{headerEnd}
        finds, then the rest unchanged, gives the copy L{rewriteReply}
        gives, or the same L{RewriteError}; the copy is one new header
        block, ending in its empty line, over the message's body unchanged.
        """
        whole, streamed = both(message, hide)
        self.assertEqual(streamed, whole)

        # rewriteReply delegates to rewriteHeader, so the equality alone
        # cannot fail; check the copy against the message independently.
        if isinstance(whole, bytes):
            end = headerEnd(message)
            body = b"" if end is None else message[end:]
            self.assertTrue(whole.endswith(body))
            newHeader = whole[: len(whole) - len(body)]
            self.assertTrue(newHeader.endswith(b"\r\n\r\n"))
            self.assertEqual(headerEnd(whole), len(newHeader))
            self.assertNotIn(b"\r\n\r\n", newHeader[:-2])

            # The header is made from the parsed fields and the digest
            # alone: the same fields written out plainly give the same one.
            plain = b"".join(
                f"{name}: {value}\r\n".encode("ascii", "surrogateescape")
                for name, value in _split(message)[0]
            )
            digest = hashlib.sha256(message)
            self.assertEqual(
                rewriteHeader(plain + b"\r\n", digest, CONTACT, ENTRANCE, hide=hide),
                newHeader,
            )

    @settings(max_examples=400)
    @given(message=messages(), data=st.data())
    def test_headerEndOfAPrefix(self, message: bytes, data: st.DataObject) -> None:
        """
        A prefix of a message that ends at a line end either holds no end
        of the header block, or holds the same end as the whole message.
        """
        lineEnds = [i + 1 for i, byte in enumerate(message) if byte == 10]
        cut = data.draw(st.sampled_from([0, *lineEnds]))
        found = headerEnd(message[:cut])
        if found is not None:
            self.assertEqual(found, headerEnd(message))

    def test_leakRefused(self) -> None:
        """
        A MIME boundary that shows the agent's address is refused by the
        header-only rewrite as by L{rewriteReply}.
        """
        message = (
            b"From: <john.smith@corp.example>\r\n"
            b'Content-Type: multipart/mixed; boundary="john.smith@corp.example"\r\n'
            b"\r\n--john.smith@corp.example\r\n"
        )
        whole, streamed = both(message, [])
        self.assertIsInstance(whole, str)
        self.assertEqual(streamed, whole)
