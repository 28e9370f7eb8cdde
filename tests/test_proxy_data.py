"""
Tests for L{ace_mail.proxy._data.MessageReader}: the end of DATA, dot
unstuffing, and the refusals for smuggling, NUL, long lines and size.
"""

from __future__ import annotations

import io

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from ace_mail.proxy._data import MessageReader

SMUGGLING = {
    "<LF>.<LF>": b"\n.\n",
    "<CR>.<CR>": b"\r.\r",
    "<LF>.<CR><LF>": b"\n.\r\n",
    "<CR>.<CR><LF>": b"\r.\r\n",
    "<CR><LF>.<CR>": b"\r\n.\r",
    "<CR><LF><NUL>.<CR><LF>": b"\r\n\0.\r\n",
    "<CR><LF>.<CR><CR><LF>": b"\r\n.\r\r\n",
}
"""
The end-of-data look-alikes of SMTP smuggling, by name.
"""

SECOND = b"MAIL FROM:<evil@example.net>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n"


def read(
    chunks: list[bytes], maxSize: int = 10**6, maxLineLength: int = 1000
) -> tuple[MessageReader, bytes, bytes | None]:
    """
    Feed chunks until the reader sees the end.

    @return: The reader, what it wrote, and the bytes after the end (or
        L{None} if it never ended).
    """
    file = io.BytesIO()
    reader = MessageReader(file, maxSize, maxLineLength)
    for index, chunk in enumerate(chunks):
        rest = reader.feed(chunk)
        if rest is not None:
            return reader, file.getvalue(), rest + b"".join(chunks[index + 1 :])
    return reader, file.getvalue(), None


class EndOfDataTests(SynchronousTestCase):
    """
    Where the message ends, and what is written.
    """

    def test_simple(self) -> None:
        """
        The message ends at CRLF.CRLF; the bytes after it are handed back.
        """
        reader, written, rest = read([b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n"])
        self.assertIsNone(reader.refusal)
        self.assertEqual(written, b"Subject: x\r\n\r\nbody\r\n")
        self.assertEqual(rest, b"QUIT\r\n")
        self.assertEqual(reader.size, len(written))

    def test_empty(self) -> None:
        """
        A dot right after DATA's own CRLF is an empty message.
        """
        reader, written, rest = read([b".\r\n"])
        self.assertEqual((written, rest, reader.size), (b"", b"", 0))

    def test_dotUnstuffing(self) -> None:
        """
        A leading dot is removed from every line that has one; C{..} is a
        line with one dot, not the end.
        """
        reader, written, rest = read([b"..\r\n..leading\r\n.x\r\nmid.dle\r\n.\r\n"])
        self.assertEqual(written, b".\r\n.leading\r\nx\r\nmid.dle\r\n")
        self.assertEqual(rest, b"")

    def test_notEnded(self) -> None:
        """
        Without CRLF.CRLF the message goes on.
        """
        reader, written, rest = read([b"body\r\n.", b"more\r\n"])
        self.assertIsNone(rest)
        self.assertEqual(written, b"body\r\nmore\r\n")

    def test_everySplit(self) -> None:
        """
        Wherever the input is split, the same message and rest come out.
        """
        data = b"a\r\n..b\r\n\r\nc\r\n.\r\nRSET\r\n"
        for cut in range(len(data) + 1):
            reader, written, rest = read([data[:cut], data[cut:]])
            self.assertEqual(
                (written, rest), (b"a\r\n.b\r\n\r\nc\r\n", b"RSET\r\n"), cut
            )

    @given(
        st.lists(st.sampled_from([b"x", b".", b"\r\n", b"..", b"ab"]), max_size=30),
        st.lists(st.integers(min_value=1, max_value=7), max_size=30),
    )
    def test_chunkingDoesNotMatter(self, pieces: list[bytes], sizes: list[int]) -> None:
        """
        Any message fed in any chunks gives what it gives in one piece.
        """
        data = b"".join(pieces) + b"\r\n.\r\nNOOP\r\n"
        whole = read([data])
        chunks, position = [], 0
        for size in sizes:
            chunks.append(data[position : position + size])
            position += size
        chunks.append(data[position:])
        split = read(chunks)
        self.assertEqual(whole[1:], split[1:])
        self.assertEqual(whole[0].refusal, split[0].refusal)


class SmugglingTests(SynchronousTestCase):
    """
    Bare CR, bare LF and NUL never end the message, and refuse it.
    """

    def test_neverEndsEarly(self) -> None:
        """
        For each look-alike, the message does not end there: it ends only at
        the real CRLF.CRLF after the smuggled second message, is refused,
        and nothing of it is written.
        """
        for name, sequence in SMUGGLING.items():
            data = b"Subject: first\r\n\r\nfirst" + sequence + SECOND + b".\r\n"
            reader, written, rest = read([data])
            self.assertEqual(rest, b"", name)
            assert reader.refusal is not None, name
            self.assertEqual(reader.refusal.code, 550, name)
            self.assertNotIn(b"smuggled", written, name)

    def test_neverEndsEarlyInPieces(self) -> None:
        """
        Split byte by byte, the look-alikes still do not end the message.
        """
        for name, sequence in SMUGGLING.items():
            data = b"first" + sequence + SECOND + b".\r\n"
            reader, written, rest = read([data[i : i + 1] for i in range(len(data))])
            self.assertEqual(rest, b"", name)
            self.assertIsNotNone(reader.refusal, name)

    def test_bareNewline(self) -> None:
        """
        A bare LF or CR refuses the message with 550 5.6.2.
        """
        for body in [b"a\nb\r\n", b"a\rb\r\n", b"a\r\r\n"]:
            reader, _, _ = read([body + b".\r\n"])
            assert reader.refusal is not None
            self.assertEqual(
                (reader.refusal.code, reader.refusal.status), (550, "5.6.2")
            )
            self.assertIn("bare CR or LF not allowed", reader.refusal.text)

    def test_nul(self) -> None:
        """
        A NUL refuses the message with 550 5.6.0.
        """
        reader, _, _ = read([b"a\0b\r\n.\r\n"])
        assert reader.refusal is not None
        self.assertEqual((reader.refusal.code, reader.refusal.status), (550, "5.6.0"))

    def test_onlyUpToTheEnd(self) -> None:
        """
        Bytes after the end are not part of the message and do not refuse
        it.
        """
        reader, _, rest = read([b"ok\r\n.\r\nbad\0\n"])
        self.assertIsNone(reader.refusal)
        self.assertEqual(rest, b"bad\0\n")


class LimitTests(SynchronousTestCase):
    """
    Long lines and large messages.
    """

    def test_lineAtLimit(self) -> None:
        """
        A line of exactly the limit, CRLF included, is fine; one byte more
        refuses the message with 552 5.3.4, read to its end.
        """
        reader, written, _ = read([b"x" * 98 + b"\r\n.\r\n"], maxLineLength=100)
        self.assertIsNone(reader.refusal)
        reader, written, rest = read(
            [b"x" * 99 + b"\r\nnext\r\n.\r\nQUIT\r\n"], maxLineLength=100
        )
        assert reader.refusal is not None
        self.assertEqual((reader.refusal.code, reader.refusal.status), (552, "5.3.4"))
        self.assertEqual((written, rest), (b"", b"QUIT\r\n"))

    def test_stuffedDotCounts(self) -> None:
        """
        The limit applies to the line as sent, with its stuffed dot.
        """
        reader, _, _ = read([b"." + b"x" * 98 + b"\r\n.\r\n"], maxLineLength=100)
        self.assertIsNotNone(reader.refusal)

    def test_longLineInPieces(self) -> None:
        """
        A long line that arrives without CRLF is not kept in memory; a dot
        in its middle, or a C{.} piece right after a dropped part, is not the
        end; the real end is found.
        """
        file = io.BytesIO()
        reader = MessageReader(file, 10**9, 100)
        for _ in range(1000):
            self.assertIsNone(reader.feed(b"y" * 99 + b"\r"))
            self.assertLessEqual(len(reader._partial), 100)
        self.assertIsNone(reader.feed(b".\r\n"))
        self.assertEqual(reader.feed(b"tail\r\n.\r\nNOOP\r\n"), b"NOOP\r\n")
        assert reader.refusal is not None
        self.assertEqual(reader.refusal.reason, "line-too-long")
        self.assertEqual(file.getvalue(), b"")

    def test_crlfAcrossDroppedPart(self) -> None:
        """
        When a long line is dropped right after its CR, the LF that follows
        still ends it, and a dot line after it ends the message.
        """
        reader, _, rest = read([b"z" * 150 + b"\r", b"\n.\r\n"], maxLineLength=100)
        self.assertEqual(rest, b"")
        self.assertIsNotNone(reader.refusal)

    def test_size(self) -> None:
        """
        A message over the size is refused with 552 5.3.4 and read to its
        end without writing more.
        """
        line = b"x" * 50 + b"\r\n"
        reader, written, rest = read([line] * 10 + [b".\r\n"], maxSize=200)
        assert reader.refusal is not None
        self.assertEqual((reader.refusal.code, reader.refusal.status), (552, "5.3.4"))
        self.assertEqual(reader.refusal.reason, "message-too-big")
        self.assertEqual(rest, b"")
        self.assertLessEqual(len(written), 200)
        self.assertEqual(reader.size, 520)

    def test_sizeExactly(self) -> None:
        """
        A message of exactly the size is accepted.
        """
        reader, written, _ = read(
            [b"x" * 48 + b"\r\n" + b"y" * 48 + b"\r\n.\r\n"], maxSize=100
        )
        self.assertIsNone(reader.refusal)
        self.assertEqual(len(written), 100)
