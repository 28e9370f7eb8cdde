"""
Tests for L{ace_mail.sender.DataEncoder}, the encoding of SMTP DATA.
"""

from __future__ import annotations

from hypothesis import given
from twisted.trial.unittest import SynchronousTestCase

from ace_mail.sender import DataEncoder

from .strategies import chunked, messageBytes


def encodeChunks(chunks: list[bytes]) -> bytes:
    """
    Encode a message fed to one encoder in the given chunks.
    """
    encoder = DataEncoder()
    return b"".join(encoder.encode(chunk) for chunk in chunks) + encoder.finish()


def normalise(message: bytes) -> bytes:
    """
    The message with every line ending a CRLF and the last line ended.
    """
    lines = message.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if lines and not lines.endswith(b"\n"):
        lines += b"\n"
    return lines.replace(b"\n", b"\r\n")


def decode(data: bytes) -> bytes:
    """
    Read SMTP DATA the way a server does (RFC 5321 section 4.5.2): take
    lines up to the one that is a lone ".", and drop the first "." of every
    other line that starts with one.
    """
    lines = data.split(b"\r\n")
    end = lines.index(b".")
    assert lines[end + 1 :] == [b""], "bytes after the final dot"
    return b"".join(
        (line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines[:end]
    )


def hasBareLineBreak(data: bytes) -> bool:
    """
    Whether a CR or LF appears outside a CRLF.
    """
    rest = data.replace(b"\r\n", b"")
    return b"\r" in rest or b"\n" in rest


class DataEncoderTests(SynchronousTestCase):
    """
    Tests for L{DataEncoder}.
    """

    def test_dotLineStuffed(self) -> None:
        """
        A line that starts with "." gets another "." in front, and the data
        ends with CRLF "." CRLF.
        """
        self.assertEqual(
            encodeChunks([b"a\r\n.\r\n.b\r\n"]), b"a\r\n..\r\n..b\r\n.\r\n"
        )

    def test_dotAtChunkStart(self) -> None:
        """
        A "." line that starts exactly on a chunk boundary is stuffed (the
        bug of Twisted's C{SMTPClient.transformChunk}).
        """
        self.assertEqual(encodeChunks([b"a\r\n", b".\r\n"]), b"a\r\n..\r\n.\r\n")

    def test_dotFirstByteOfMessage(self) -> None:
        """
        A message whose first byte is "." is stuffed.
        """
        self.assertEqual(encodeChunks([b".x"]), b"..x\r\n.\r\n")

    def test_crlfSplitAcrossChunks(self) -> None:
        """
        A CRLF split between two chunks stays one line ending, and a "."
        that follows it is stuffed.
        """
        self.assertEqual(encodeChunks([b"a\r", b"\n.b"]), b"a\r\n..b\r\n.\r\n")

    def test_bareLineBreaksBecomeCRLF(self) -> None:
        """
        Bare CRs and bare LFs become CRLFs; a CR before a CRLF is a line
        ending of its own.
        """
        self.assertEqual(
            encodeChunks([b"a\rb\nc\r\r\nd\r"]), b"a\r\nb\r\nc\r\n\r\nd\r\n.\r\n"
        )

    def test_emptyMessage(self) -> None:
        """
        An empty message is just the final ".".
        """
        self.assertEqual(encodeChunks([]), b".\r\n")

    def test_everyBoundary(self) -> None:
        """
        However a message with dots, bare CRs and LFs is cut in two, the
        encoding is the same as the whole's.
        """
        message = b".a\r\n.\r\r\n\n.\r.b\n..\r\nend"
        whole = encodeChunks([message])
        for cut in range(len(message) + 1):
            self.assertEqual(encodeChunks([message[:cut], message[cut:]]), whole)

    @given(chunked(messageBytes()))
    def test_chunkingChangesNothing(self, chunks: list[bytes]) -> None:
        """
        The encoding of a message cut into any chunks equals the encoding of
        the whole.
        """
        self.assertEqual(encodeChunks(chunks), encodeChunks([b"".join(chunks)]))

    @given(chunked(messageBytes()))
    def test_noBareLineBreaks(self, chunks: list[bytes]) -> None:
        """
        The encoding never holds a bare CR or a bare LF.
        """
        self.assertFalse(hasBareLineBreak(encodeChunks(chunks)))

    @given(chunked(messageBytes()))
    def test_decodingGivesNormalisedMessage(self, chunks: list[bytes]) -> None:
        """
        A server that reads the encoding gets back the message with its
        line endings made CRLF.
        """
        self.assertEqual(decode(encodeChunks(chunks)), normalise(b"".join(chunks)))
