"""
Tests for L{ace_mail.address}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ace_mail.address import isMailbox


class IsMailboxTests(SynchronousTestCase):
    """
    L{isMailbox} takes plain mailboxes and nothing else.
    """

    def test_plain(self) -> None:
        """
        Ordinary addresses, quoted local parts and address literals pass.
        """
        for address in (
            "a@example.com",
            "first.last+tag@sub.example.co.uk",
            '"john doe"@example.com',
            "postmaster@[127.0.0.1]",
            "x@[IPv6:::1]",
        ):
            self.assertTrue(isMailbox(address), address)

    def test_refused(self) -> None:
        """
        Control characters, display names, brackets, source routes, bang
        paths, percent hacks in the domain, double at-signs and non-ASCII
        are refused.
        """
        for address in (
            "",
            "a",
            "a@",
            "@example.com",
            "a@b@c.com",
            "<a@example.com>",
            "Bob <a@example.com>",
            "@relay.example:a@example.com",
            "a@example.com\r\nRCPT TO:<b@c>",
            "a\x00@example.com",
            "a@exa mple.com",
            "a@exam%ple.com",
            "a@host!other",
            "a..b@example.com",
            "ä@example.com",
            "a@" + "b" * 250 + ".com",
            "a" * 65 + "@example.com",
        ):
            self.assertFalse(isMailbox(address), repr(address))
