"""
Tests for L{ace_mail.accounts._listing}: what a server may say about its
mailbox.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ace_mail.accounts import POP3Error
from ace_mail.accounts._listing import MessageInfo, parseMailbox, parseStat

PEER = "pop.example:110"


class StatTests(SynchronousTestCase):
    """
    L{parseStat}.
    """

    def test_count(self) -> None:
        """
        The first number is the count; text after the two numbers is
        allowed.
        """
        self.assertEqual(parseStat(PEER, "2 320 messages"), 2)

    def test_notNumbers(self) -> None:
        """
        Anything but two numbers is refused.
        """
        for text in ("", "2", "-1 5", "two 320", "2 lots", "1" * 21 + " 1"):
            with self.assertRaises(POP3Error, msg=text):
                parseStat(PEER, text)


class MailboxTests(SynchronousTestCase):
    """
    L{parseMailbox}.
    """

    def assertRefused(
        self, uids: list[bytes], sizes: list[bytes], expected: str, count: int = 2
    ) -> None:
        with self.assertRaises(POP3Error) as raised:
            parseMailbox(PEER, count, uids, sizes)
        self.assertIn(expected, str(raised.exception))

    def test_messages(self) -> None:
        """
        The listings become messages in index order; a 70-character
        unique-id of any printable ASCII but "/" is fine.
        """
        uid = bytes(range(0x21, 0x2F)) + bytes(range(0x30, 0x68))
        self.assertEqual(len(uid), 70)
        self.assertEqual(
            parseMailbox(PEER, 3, [b"3 " + uid, b"1 a"], [b"1 10", b"3 30"]),
            [MessageInfo(1, "a", 10), MessageInfo(3, uid.decode(), 30)],
        )

    def test_emptyMailbox(self) -> None:
        """
        No messages, no listings.
        """
        self.assertEqual(parseMailbox(PEER, 0, [], []), [])

    def test_indexTwice(self) -> None:
        """
        A message number listed twice is refused.
        """
        self.assertRefused([b"1 a", b"1 b"], [b"1 1"], "listed message 1 twice in UIDL")

    def test_emptyUid(self) -> None:
        """
        A message number without a unique-id is refused.
        """
        self.assertRefused([b"1"], [b"1 1"], "the unique-id ''")

    def test_listingsDisagree(self) -> None:
        """
        UIDL and LIST must name the same messages.
        """
        self.assertRefused([b"1 a"], [b"1 1", b"2 2"], "different messages")
        self.assertRefused([b"1 a", b"2 b"], [b"1 1"], "no size for message 2")

    def test_badSize(self) -> None:
        """
        A size that is not a number is refused.
        """
        self.assertRefused([b"1 a"], [b"1 big"], "no size for message 1")
        self.assertRefused([b"1 a"], [b"1 -5"], "no size for message 1")

    def test_indexNotANumber(self) -> None:
        """
        A message number that is not digits is refused.
        """
        self.assertRefused([b"+1 a"], [b"1 1"], "listed '+1 a' in UIDL")
        self.assertRefused([b" 1 a"], [b"1 1"], "listed ' 1 a' in UIDL")
