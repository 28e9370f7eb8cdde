"""
Tests for L{ace_mail.accounts._protocol.POP3Connection}: responses, bounds,
streaming and timeouts, one byte at a time where it matters.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from ace_mail.accounts import _protocol
from ace_mail.accounts._protocol import (
    MAX_LINE,
    POP3Connection,
    POP3Error,
    Response,
)


class TLSStringTransport(StringTransport):
    """
    A transport that records C{startTLS}.
    """

    tlsOptions: Any = None

    def startTLS(self, options: Any) -> None:
        self.tlsOptions = options


def stuff(content: bytes) -> bytes:
    """
    @return: C{content} (CRLF line ends, ending in CRLF) as RETR sends it.
    """
    lines = content.split(b"\r\n")[:-1]
    return (
        b"".join(
            (b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines
        )
        + b".\r\n"
    )


class ConnectionTests(SynchronousTestCase):
    """
    A L{POP3Connection} on a L{StringTransport}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.transport = TLSStringTransport()
        self.connection = POP3Connection(self.clock, "pop.example:110", 30)
        self.connection.makeConnection(self.transport)

    def greet(self) -> None:
        self.connection.dataReceived(b"+OK ready <1.2@pop.example>\r\n")
        self.transport.clear()

    def failure(self, deferred: Deferred[Any]) -> str:
        return str(self.failureResultOf(deferred, POP3Error).value)

    def retrieve(self, data: bytes, chunk: int = 1) -> bytes:
        self.greet()
        sink = BytesIO()
        done = self.connection.retrieve("RETR 1", sink, 10_000_000, "message 1")
        for start in range(0, len(data), chunk):
            self.connection.dataReceived(data[start : start + chunk])
        self.assertEqual(self.successResultOf(done), Response(True, "12 octets"))
        return sink.getvalue()

    def test_greeting(self) -> None:
        """
        The greeting fires C{greeting} with its text.
        """
        self.greet()
        self.assertEqual(
            self.successResultOf(self.connection.greeting),
            Response(True, "ready <1.2@pop.example>"),
        )

    @given(
        lines=st.lists(st.binary().map(lambda b: b.replace(b"\n", b"")), max_size=8),
        chunk=st.integers(min_value=1, max_value=7),
    )
    def test_bodyUnstuffedInAnyChunks(self, lines: list[bytes], chunk: int) -> None:
        """
        However the content is cut into reads, the file gets it exactly,
        dot-unstuffed, with its CRLFs.
        """
        self.setUp()
        content = b"".join(line + b"\r\n" for line in lines)
        self.assertEqual(
            self.retrieve(b"+OK 12 octets\r\n" + stuff(content), chunk), content
        )

    def test_onlyCRLFDotCRLFEnds(self) -> None:
        """
        Only a line of a single dot, between CRLFs, ends the content; bare
        LFs around a dot do not.
        """
        content = b"a\n.\nb\r\nx\n.\r\nc\r.\r\n"
        self.assertEqual(
            self.retrieve(b"+OK 12 octets\r\n" + content + b".\r\n"), content
        )

    def test_nextResponseAfterBody(self) -> None:
        """
        Bytes after the content's end, in the same read, answer the next
        command.
        """
        self.greet()
        self.connection.pipelining = True
        sink = BytesIO()
        retrieved = self.connection.retrieve("RETR 1", sink, 100, "message 1")
        deleted = self.connection.command("DELE 1")
        self.assertEqual(self.transport.value(), b"RETR 1\r\nDELE 1\r\n")

        self.connection.dataReceived(b"+OK\r\nbody\r\n.\r\n+OK deleted\r\n")
        self.successResultOf(retrieved)
        self.assertEqual(self.successResultOf(deleted), Response(True, "deleted"))
        self.assertEqual(sink.getvalue(), b"body\r\n")

    def test_commandsWaitWithoutPipelining(self) -> None:
        """
        Without pipelining, a command is written only once the answer to
        the one before it is complete.
        """
        self.greet()
        first = self.connection.listing("UIDL")
        second = self.connection.command("STAT")
        self.assertEqual(self.transport.value(), b"UIDL\r\n")

        self.connection.dataReceived(b"+OK\r\n1 a\r\n")
        self.assertEqual(self.transport.value(), b"UIDL\r\n")
        self.connection.dataReceived(b".\r\n")
        self.assertEqual(self.transport.value(), b"UIDL\r\nSTAT\r\n")
        self.assertEqual(self.successResultOf(first), Response(True, "", (b"1 a",)))
        self.assertNoResult(second)

    def test_listingUnstuffed(self) -> None:
        """
        Listing lines are dot-unstuffed.
        """
        self.greet()
        capabilities = self.connection.listing("CAPA")
        self.connection.dataReceived(b"+OK\r\n..X\r\nUSER\r\n.\r\n")
        self.assertEqual(self.successResultOf(capabilities).lines, (b".X", b"USER"))

    def test_errorHasNoListing(self) -> None:
        """
        C{-ERR} to a listing command ends the answer.
        """
        self.greet()
        capabilities = self.connection.listing("CAPA")
        stat = self.connection.command("STAT")
        self.connection.dataReceived(b"-ERR no CAPA\r\n+OK 0 0\r\n")
        self.assertEqual(self.successResultOf(capabilities), Response(False, "no CAPA"))
        self.assertEqual(self.successResultOf(stat), Response(True, "0 0"))

    def test_lineAtLimit(self) -> None:
        """
        A listing line of exactly L{MAX_LINE} bytes is taken, one byte more
        is not.
        """
        self.greet()
        listing = self.connection.listing("UIDL")
        line = b"1 " + b"u" * (MAX_LINE - 2)
        self.connection.dataReceived(b"+OK\r\n" + line + b"\r\n.\r\n")
        self.assertEqual(self.successResultOf(listing).lines, (line,))

        listing = self.connection.listing("UIDL")
        self.connection.dataReceived(b"+OK\r\n" + line)
        self.connection.dataReceived(b"u")
        self.assertIn("longer than 8192 bytes", self.failure(listing))
        self.assertTrue(self.transport.disconnecting)

    def test_tooManyListingLines(self) -> None:
        """
        A listing with more lines than allowed fails.
        """
        self.patch(_protocol, "MAX_LISTING_LINES", 2)
        self.greet()
        listing = self.connection.listing("UIDL")
        self.connection.dataReceived(b"+OK\r\n1 a\r\n2 b\r\n3 c\r\n")
        self.assertEqual(
            self.failure(listing), "pop.example:110 answered UIDL with too many lines"
        )

    def test_silenceTimesOut(self) -> None:
        """
        Silence for the timeout while an answer is due fails every command
        outstanding and drops the connection; bytes arriving restart the
        wait.
        """
        self.greet()
        listing = self.connection.listing("UIDL")
        self.clock.advance(29)
        self.connection.dataReceived(b"+OK\r\n1 a\r\n")
        self.clock.advance(29)
        self.assertNoResult(listing)

        self.clock.advance(1)
        self.assertEqual(
            self.failure(listing),
            "pop.example:110 did not answer UIDL within 30 seconds",
        )
        self.assertTrue(self.transport.disconnecting)

    def test_noTimerWhileIdle(self) -> None:
        """
        With no answer due, there is no timer.
        """
        self.greet()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_unaskedLine(self) -> None:
        """
        A line when no answer is due drops the connection.
        """
        self.greet()
        stat = self.connection.command("STAT")
        self.connection.dataReceived(b"+OK 0 0\r\n+OK surprise\r\n")
        self.successResultOf(stat)
        self.assertTrue(self.transport.disconnecting)
        self.assertIn("surprise", self.failure(self.connection.command("NOOP")))

    def test_notAResponse(self) -> None:
        """
        A status line that is neither C{+OK} nor C{-ERR} fails the command.
        """
        self.greet()
        stat = self.connection.command("STAT")
        self.connection.dataReceived(b"+OKAY\r\n")
        self.assertIn("not a POP3 response", self.failure(stat))

    def test_lineBreakInCommandRefused(self) -> None:
        """
        A command with CR, LF or NUL is refused without writing anything.
        """
        self.greet()
        for bad in ("USER a\r\nDELE 1", "USER a\nb", "PASS a\0b"):
            self.assertIn(
                "may not contain CR, LF or NUL",
                self.failure(self.connection.command(bad, "the login")),
            )
        self.assertEqual(self.transport.value(), b"")

    def test_stlsDropsWhatFollows(self) -> None:
        """
        After C{+OK} to STLS, TLS starts at once and the rest of that read
        is dropped; the next command gets the next answer.
        """
        self.greet()
        options = object()
        started = self.connection.startTLS(options)  # type: ignore[arg-type]
        self.connection.dataReceived(b"+OK go\r\n+OK\r\nPIPELINING\r\n.\r\n")
        self.assertEqual(self.successResultOf(started), Response(True, "go"))
        self.assertIs(self.transport.tlsOptions, options)

        capabilities = self.connection.listing("CAPA")
        self.assertNoResult(capabilities)
        self.connection.dataReceived(b"+OK\r\nUSER\r\n.\r\n")
        self.assertEqual(self.successResultOf(capabilities).lines, (b"USER",))

    def test_stlsRefusedStartsNothing(self) -> None:
        """
        C{-ERR} to STLS starts no TLS.
        """
        self.greet()
        started = self.connection.startTLS(object())  # type: ignore[arg-type]
        self.connection.dataReceived(b"-ERR no\r\n")
        self.assertEqual(self.successResultOf(started), Response(False, "no"))
        self.assertIsNone(self.transport.tlsOptions)

    def test_connectionLost(self) -> None:
        """
        A lost connection fails every outstanding command, sent or not.
        """
        self.greet()
        first = self.connection.command("STAT")
        second = self.connection.command("NOOP")
        self.connection.connectionLost()
        for deferred in (first, second):
            self.assertIn(
                "connection to pop.example:110 was lost", self.failure(deferred)
            )

    def test_close(self) -> None:
        """
        L{POP3Connection.close} closes after what was written.
        """
        self.greet()
        self.connection.close()
        self.assertTrue(self.transport.disconnecting)
        self.assertIn("was closed", self.failure(self.connection.command("NOOP")))
