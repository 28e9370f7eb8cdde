"""
Tests for L{ace_mail.accounts.AccountPoller} against hostile or broken
POP3 servers: each poll ends cleanly and soon, takes nothing and deletes
nothing, and the status says why.
"""

from __future__ import annotations

import os
from typing import Any

from ace_mail.accounts import AccountPoller, _protocol, _tls
from tests.pop3fakes import makeAccount
from tests.test_accounts_poller import PollerTestCase


class FailureTests(PollerTestCase):
    """
    Polls that fail end cleanly, take nothing and delete nothing, and the
    status says why.
    """

    def assertCleanFailure(self, poller: AccountPoller, expected: str) -> None:
        status = poller.status()
        self.assertFalse(status.polling)
        self.assertIsNotNone(status.lastResult)
        self.assertIn(expected, status.lastResult or "")
        self.assertEqual((status.errors, status.consecutiveFailures), (1, 1))
        self.assertEqual(self.intake.contents, {})
        self.assertEqual(self.deleted(), [])
        self.assertEqual(len(self.mailbox.messages), 3)
        self.assertEqual(os.listdir(self.intake.incomingDir), [])

    def failWith(
        self, verb: bytes, answer: bytes, expected: str, **changes: Any
    ) -> None:
        """
        Poll with the server answering C{verb} with C{answer}: the poll
        ends at once and cleanly, with C{expected} in its result.
        """
        self.script.raw[verb] = answer
        poller = self.poller(**changes)
        self.poll(poller)
        self.assertCleanFailure(poller, expected)

    def timeOutWith(self, verb: bytes, answer: bytes, what: str) -> None:
        """
        Poll with the server answering C{verb} with C{answer} and then
        nothing: the poll times out after the account's timeout.
        """
        self.script.raw[verb] = answer
        poller = self.poller()
        done = poller.pollNow()
        self.network.flush()
        self.clock.advance(29)
        self.assertNoResult(done)

        self.clock.advance(1)
        self.network.flush()
        self.successResultOf(done)
        self.assertCleanFailure(
            poller, f"pop.example:110 did not answer {what} within 30 seconds"
        )

    def test_uidlIndexTooLarge(self) -> None:
        """
        A UIDL message number beyond the count is refused.
        """
        self.failWith(
            b"UIDL",
            b"+OK\r\n999999999999 abc\r\n.\r\n",
            "listed '999999999999 abc' in UIDL; expected a message number from 1 to 3",
        )

    def test_uidlIndexZero(self) -> None:
        """
        A UIDL message number 0 is refused.
        """
        self.failWith(b"UIDL", b"+OK\r\n0 abc\r\n.\r\n", "listed '0 abc' in UIDL")

    def test_uidlIndexNegative(self) -> None:
        """
        A negative UIDL message number is refused.
        """
        self.failWith(b"UIDL", b"+OK\r\n-1 abc\r\n.\r\n", "listed '-1 abc' in UIDL")

    def test_listIndexOutOfRange(self) -> None:
        """
        A LIST message number beyond the count is refused.
        """
        self.failWith(b"LIST", b"+OK\r\n4 100\r\n.\r\n", "listed '4 100' in LIST")

    def badUid(self, uid: bytes, shown: str) -> None:
        answer = b"+OK\r\n1 uid-1\r\n2 " + uid + b"\r\n3 uid-3\r\n.\r\n"
        self.failWith(
            b"UIDL", answer, f"gave message 2 the unique-id {shown!r}; expected 1 to 70"
        )

    def test_uidWithSpace(self) -> None:
        """
        A unique-id with a space is refused.
        """
        self.badUid(b"a b", "a b")

    def test_uidWithNul(self) -> None:
        """
        A unique-id with a NUL is refused.
        """
        self.badUid(b"a\0b", "a?b")

    def test_uidWithSlash(self) -> None:
        """
        A unique-id with a slash is refused.
        """
        self.badUid(b"../etc/passwd", "../etc/passwd")

    def test_uidWithDotDot(self) -> None:
        """
        A unique-id with two dots is refused.
        """
        self.badUid(b"a..b", "a..b")

    def test_uidTooLong(self) -> None:
        """
        A unique-id of 71 characters is refused.
        """
        self.badUid(b"u" * 71, "u" * 71)

    def test_uidTwice(self) -> None:
        """
        Two messages with the same unique-id are refused: skipping one as
        seen would delete it unread.
        """
        self.failWith(
            b"UIDL",
            b"+OK\r\n1 same\r\n2 same\r\n3 other\r\n.\r\n",
            "gave the unique-id 'same' twice",
        )

    def test_listingWithoutTerminator(self) -> None:
        """
        A listing that never ends times out.
        """
        self.timeOutWith(b"UIDL", b"+OK\r\n1 uid-1\r\n", "UIDL")

    def test_listingEndedByBareLF(self) -> None:
        """
        C{\\n.\\n} does not end a listing.
        """
        self.timeOutWith(b"UIDL", b"+OK\r\n1 uid-1\n.\n", "UIDL")

    def test_messageEndedByBareLF(self) -> None:
        """
        C{\\n.\\n} does not end a message: the RETR times out, and the
        partial file is removed.
        """
        self.timeOutWith(b"RETR", b"+OK\r\nSubject: x\r\n\r\nbody\n.\n", "RETR 1")

    def test_silenceAfterGreeting(self) -> None:
        """
        A server that greets and then says nothing times out.
        """
        self.timeOutWith(b"CAPA", b"", "CAPA")

    def test_noGreeting(self) -> None:
        """
        A server that never greets times out.
        """
        self.script.greeting = b""
        poller = self.poller()
        done = poller.pollNow()
        self.clock.advance(30)
        self.network.flush()
        self.successResultOf(done)
        self.assertCleanFailure(poller, "did not answer the greeting within 30")

    def test_hugeLineInListing(self) -> None:
        """
        A 10 MB line in a listing is refused once it passes 8 KiB.
        """
        self.failWith(
            b"UIDL",
            b"+OK\r\n1 " + b"u" * 10_000_000 + b"\r\n.\r\n",
            "sent a line longer than 8192 bytes",
        )

    def test_hugeListing(self) -> None:
        """
        A listing of many long lines is refused once its lines together pass
        MAX_LISTING_BYTES, long before MAX_LISTING_LINES lines of 8 KiB
        (8 GB) could be held in memory.
        """
        self.patch(_protocol, "MAX_LISTING_BYTES", 100_000)
        line = b"1 " + b"u" * 8000 + b"\r\n"
        self.failWith(
            b"UIDL",
            b"+OK\r\n" + line * 50 + b".\r\n",
            "answered UIDL with more than 100000 bytes",
        )

    def test_hugeLineInMessage(self) -> None:
        """
        A 10 MB line in a message is refused once it passes 1 MiB.
        """
        self.failWith(
            b"RETR",
            b"+OK\r\n" + b"m" * 10_000_000 + b"\r\n.\r\n",
            "message 1 (UIDL uid-1) from pop.example:110 has a line longer than"
            " 1048576 bytes",
        )

    def test_messageLargerThanListed(self) -> None:
        """
        A message that turns out larger than maxMessageSize is dropped.
        """
        self.failWith(
            b"RETR",
            b"+OK\r\n" + b"m\r\n" * 40_000 + b".\r\n",
            "message 1 (UIDL uid-1) from pop.example:110 is larger than 100000",
            maxMessageSize=100_000,
        )

    def test_hugeApopBanner(self) -> None:
        """
        A greeting too long to be a greeting fails the poll.
        """
        self.script.greeting = b"+OK <" + b"c" * 100_000 + b"@pop.example>\r\n"
        poller = self.poller(apop=True)
        self.poll(poller)
        self.assertCleanFailure(poller, "sent a line longer than 8192 bytes")

    def test_apopWithoutChallenge(self) -> None:
        """
        An account that uses APOP fails cleanly when the greeting has no
        challenge.
        """
        self.script.greeting = b"+OK ready\r\n"
        poller = self.poller(apop=True)
        self.poll(poller)
        self.assertCleanFailure(poller, "offers no APOP challenge")

    def test_stlsAbsent(self) -> None:
        """
        An account with tls "starttls" never logs in without TLS when the
        server does not offer STLS.
        """
        poller = self.poller(tls="starttls")
        self.poll(poller)

        self.assertCleanFailure(poller, "does not offer STLS")
        self.assertEqual(self.script.verbs(), ["CAPA"])

    def test_stlsRefused(self) -> None:
        """
        An account with tls "starttls" never logs in without TLS when the
        server refuses STLS.
        """
        self.script.capabilities.append(b"STLS")
        self.failWith(
            b"STLS", b"-ERR not now\r\n", "refused STLS: -ERR not now", tls="starttls"
        )
        self.assertEqual(self.script.verbs(), ["CAPA", "STLS"])

    def test_loginRefused(self) -> None:
        """
        A wrong password fails the poll with the server's answer.
        """
        self.failWith(b"PASS", b"-ERR [AUTH] bad password\r\n", "refused the login")

    def test_notAPOP3Server(self) -> None:
        """
        A greeting that is not a POP3 response fails the poll.
        """
        self.script.greeting = b"220 smtp.example ESMTP\r\n"
        poller = self.poller()
        self.poll(poller)
        self.assertCleanFailure(poller, "which is not a POP3 response")

    def test_badCaFile(self) -> None:
        """
        A CA file that cannot be read fails the poll with its name.
        """
        poller = AccountPoller(
            self.clock,
            makeAccount(tls="implicit", caFile=self.mktemp()),
            self.intake,
        )
        self.unpatchTLS()
        self.successResultOf(poller.pollNow())
        self.assertCleanFailure(poller, "cannot read caFile")

    def unpatchTLS(self) -> None:
        self.patch(_tls, "clientTLSOptions", self.realClientTLSOptions)

    realClientTLSOptions = staticmethod(_tls.clientTLSOptions)
