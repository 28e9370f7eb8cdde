"""
Tests for L{ace_mail.proxy._policy}: envelope address parsing, the relay-test
forms, trusted networks, the retention boundary and allowed sender domains.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from ace_mail.proxy._policy import (
    Refused,
    RelayPolicy,
    checkRecipient,
    checkSender,
    parsePath,
    retentionRefusal,
    senderRefusal,
)

from .proxyfakes import HOST, NOW, OPEN_ID, contact

DOMAIN = "nmap.scanme.org"
IP = "127.0.0.1"

NMAP_RECIPIENTS = [
    f"relaytest@{DOMAIN}",
    f"relaytest%{DOMAIN}@[{IP}]",
    f"relaytest%{DOMAIN}@{HOST}",
    f'"relaytest@{DOMAIN}"',
    f'"relaytest%{DOMAIN}"',
    f"relaytest@{DOMAIN}@[{IP}]",
    f'"relaytest@{DOMAIN}"@[{IP}]',
    f"relaytest@{DOMAIN}@{HOST}",
    f"@[{IP}]:relaytest@{DOMAIN}",
    f"@{HOST}:relaytest@{DOMAIN}",
    f"{DOMAIN}!relaytest",
    f"{DOMAIN}!relaytest@[{IP}]",
    f"{DOMAIN}!relaytest@{HOST}",
]
"""
The distinct RCPT TO addresses of nmap's smtp-open-relay script; its 16
tests pair the first with four different senders. Every one but the first
is a routing trick.
"""

HIDDEN_IN_CONTACT = [
    f"{OPEN_ID}%evil.example@{HOST}",
    f"evil.example!{OPEN_ID}@{HOST}",
    f"{OPEN_ID}!evil.example@{HOST}",
    f"{HOST}!{OPEN_ID}",
    f"@{HOST}:{OPEN_ID}@evil.example",
    f"@evil.example:{OPEN_ID}@{HOST}",
    f"@{HOST},@relay.example:{OPEN_ID}@evil.example",
    f"{OPEN_ID}@evil.example@{HOST}",
    f"{OPEN_ID}@{HOST}@evil.example",
    f'"{OPEN_ID}@evil.example"@{HOST}',
    f'"{OPEN_ID}%evil.example"@{HOST}',
    f'"{OPEN_ID}@{HOST}"',
    f'"{OPEN_ID}"@{HOST}',
    f"{OPEN_ID}.evil.example@{HOST}",
]


class ParsePathTests(SynchronousTestCase):
    """
    L{parsePath}.
    """

    def test_pathAndParameters(self) -> None:
        """
        The address comes out of the angle brackets, the parameters by
        upper-case name; a space after the colon is tolerated.
        """
        self.assertEqual(
            parsePath("FROM: <a@example.com> size=100 BODY=8BITMIME SMTPUTF8", "FROM"),
            ("a@example.com", {"SIZE": "100", "BODY": "8BITMIME", "SMTPUTF8": ""}),
        )
        self.assertEqual(parsePath("to:<>", "TO"), ("", {}))

    def test_malformed(self) -> None:
        """
        A missing keyword, missing brackets, nested brackets or a malformed
        parameter are 501 syntax errors.
        """
        for argument in [
            "<a@b.c>",
            "TO:a@b.c",
            "TO:<a@b.c",
            "TO:<<a@b.c>>",
            "TO:<a@b.c> =x",
        ]:
            with self.assertRaises(Refused) as raised:
                parsePath(argument, "TO")
            self.assertEqual(raised.exception.refusal.code, 501, argument)

    def test_controlCharacters(self) -> None:
        """
        CR, LF and NUL inside an address are refused with 501 5.5.2.
        """
        for character in "\r\n\0":
            with self.assertRaises(Refused) as raised:
                parsePath(f"TO:<a{character}b@example.com>", "TO")
            refusal = raised.exception.refusal
            self.assertEqual((refusal.code, refusal.status), (501, "5.5.2"))


class CheckRecipientTests(SynchronousTestCase):
    """
    L{checkRecipient}.
    """

    def test_passThrough(self) -> None:
        """
        A plain address at another domain is pass-through.
        """
        recipient = checkRecipient("colleague@agents.example.org", HOST)
        self.assertEqual(recipient.address, "colleague@agents.example.org")
        self.assertIsNone(recipient.contactId)

    def test_contactAddress(self) -> None:
        """
        An address at the reroute name, in any letter case, is a contact
        address; its id is lower-cased.
        """
        recipient = checkRecipient(f"{OPEN_ID.upper()}@{HOST.upper()}", HOST)
        self.assertEqual(recipient.contactId, OPEN_ID)

    def test_malformedContactId(self) -> None:
        """
        A local part at the reroute name that cannot be a contact id gets the
        unknown-contact 550.
        """
        with self.assertRaises(Refused) as raised:
            checkRecipient(f"postmaster@{HOST}", HOST)
        refusal = raised.exception.refusal
        self.assertEqual((refusal.code, refusal.status), (550, "5.1.1"))
        self.assertIn("no contact postmaster is known here", refusal.text)

    def test_nmapFormsRefused(self) -> None:
        """
        Every routing trick of nmap's smtp-open-relay script is refused with
        a 5xx, whatever its domain; only its plain address passes.
        """
        self.assertIsNone(checkRecipient(NMAP_RECIPIENTS[0], HOST).contactId)
        for address in NMAP_RECIPIENTS[1:]:
            with self.assertRaises(Refused, msg=address) as raised:
                checkRecipient(address, HOST)
            self.assertIn(raised.exception.refusal.code, (501, 550, 553), address)

    def test_hiddenInContactAddress(self) -> None:
        """
        The same tricks wrapped around a valid contact id are refused too, so
        that no contact address can carry a relay to another host.
        """
        for address in HIDDEN_IN_CONTACT:
            with self.assertRaises(Refused, msg=address) as raised:
                checkRecipient(address, HOST)
            self.assertEqual(raised.exception.refusal.code // 100, 5, address)

    def test_reasons(self) -> None:
        """
        Each form is named in the refusal, so that logs and the counter tell
        them apart.
        """
        cases = {
            f"@a.example:{OPEN_ID}@{HOST}": "source-route",
            f"a.example!{OPEN_ID}@{HOST}": "bang-path",
            f"{OPEN_ID}%a.example@{HOST}": "percent-hack",
            f"{OPEN_ID}@a.example@{HOST}": "at-count",
            "no-domain": "at-count",
            "a b@example.com": "bad-address",
        }
        for address, reason in cases.items():
            with self.assertRaises(Refused) as raised:
                checkRecipient(address, HOST)
            self.assertEqual(raised.exception.refusal.reason, reason, address)

    @given(st.text(alphabet="abc!%@\"'.:,[]<> \r\n\0", max_size=30))
    def test_arbitraryTextNeverRoutes(self, address: str) -> None:
        """
        Whatever the text, an accepted address has exactly one @, no routing
        character, and is a contact address only at the reroute name.
        """
        try:
            recipient = checkRecipient(address, HOST)
        except Refused:
            return
        self.assertEqual(recipient.address.count("@"), 1)
        for character in "!%\r\n\0":
            self.assertNotIn(character, recipient.address)
        if recipient.contactId is not None:
            self.assertTrue(recipient.address.lower().endswith("@" + HOST))


class CheckSenderTests(SynchronousTestCase):
    """
    L{checkSender}.
    """

    def test_accepted(self) -> None:
        """
        The null sender and plain mailboxes pass.
        """
        checkSender("")
        checkSender("agent@agents.example.org")

    def test_refused(self) -> None:
        """
        Source routes and malformed addresses get 553 5.1.7.
        """
        for address in ["@a.example:agent@b.example", "agent", "a@b@c.example"]:
            with self.assertRaises(Refused) as raised:
                checkSender(address)
            refusal = raised.exception.refusal
            self.assertEqual((refusal.code, refusal.status), (553, "5.1.7"), address)


class RelayPolicyTests(SynchronousTestCase):
    """
    L{RelayPolicy}.
    """

    def test_trustedNetworks(self) -> None:
        """
        Addresses inside a trusted network are trusted, also as IPv4-mapped
        IPv6; others, and clients without an IP address, are not.
        """
        policy = RelayPolicy(["127.0.0.0/8", "::1/128", "192.0.2.0/28"])
        for host in ["127.0.0.1", "127.9.9.9", "::1", "192.0.2.15", "::ffff:127.0.0.1"]:
            self.assertTrue(policy.isTrusted(host), host)
        for host in ["192.0.2.16", "10.0.0.1", "::2", None, "not-an-ip"]:
            self.assertFalse(policy.isTrusted(host), host)

    def test_badNetwork(self) -> None:
        """
        A network that is not one is a ValueError naming it.
        """
        with self.assertRaises(ValueError) as raised:
            RelayPolicy(["127.0.0.0/8", "localhost"])
        self.assertIn("'localhost'", str(raised.exception))


class RetentionTests(SynchronousTestCase):
    """
    L{retentionRefusal}.
    """

    def test_open(self) -> None:
        """
        An open contact is always accepted.
        """
        self.assertIsNone(retentionRefusal(contact(OPEN_ID), NOW + 10**9, 3600))

    def test_boundary(self) -> None:
        """
        A contact ended exactly the retention ago is accepted; a moment more
        and it is refused with 550 5.1.1 naming the hours.
        """
        retention = 120 * 3600.0
        ended = contact(OPEN_ID, ended=NOW)
        self.assertIsNone(retentionRefusal(ended, NOW + retention, retention))
        refusal = retentionRefusal(ended, NOW + retention + 0.001, retention)
        assert refusal is not None
        self.assertEqual((refusal.code, refusal.status), (550, "5.1.1"))
        self.assertEqual(
            refusal.text,
            f"contact {OPEN_ID} was ended more than 120 hours ago; answer from ACE Agent",
        )

    def test_fractionalHours(self) -> None:
        """
        A retention that is not a whole number of hours is printed as it is.
        """
        refusal = retentionRefusal(contact(OPEN_ID, ended=NOW), NOW + 10, 5.4)
        assert refusal is not None
        self.assertIn("more than 0.0015 hours ago", refusal.text)


class SenderRefusalTests(SynchronousTestCase):
    """
    L{senderRefusal}.
    """

    def test_unlimited(self) -> None:
        """
        An entrance without allowed domains takes any sender.
        """
        self.assertIsNone(
            senderRefusal("x@any.example", "default", {"sales": ("a.example",)})
        )

    def test_limited(self) -> None:
        """
        An entrance with allowed domains takes only them, in any case, and
        refuses others and the null sender with 550 5.7.1.
        """
        allowed = {"default": ("Agents.example.org",)}
        self.assertIsNone(senderRefusal("a@agents.EXAMPLE.org", "default", allowed))
        for sender in ["a@evil.example", "", "a@sub.agents.example.org"]:
            refusal = senderRefusal(sender, "default", allowed)
            assert refusal is not None, sender
            self.assertEqual((refusal.code, refusal.status), (550, "5.7.1"))
            self.assertIn("entrance default", refusal.text)
