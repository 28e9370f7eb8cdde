"""
Tests for L{ace_mail.physical}: the physical email keeps the customer's
message intact and lets replies reach the contact address only.
"""

from __future__ import annotations

from email.errors import MissingHeaderBodySeparatorDefect as HeaderSectionDefect
from email.message import EmailMessage

from attrs import evolve
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from ace_mail._entrances import SmtpServerConfig
from ace_mail.physical import KEPT, MOVED, buildPhysical, physicalEnvelope, splitMessage
from tests.intakeharness import REROUTE, SUPPORT, parse

CONTACT = "abcdefghijklmnopqrst"
CONTACT_ADDRESS = f"{CONTACT}@{REROUTE}"
AGENT = "agent@desk.example"

ADDRESS_FIELDS = {
    "from",
    "reply-to",
    "to",
    "cc",
    "bcc",
    "sender",
    "mail-followup-to",
    "mail-reply-to",
    "resent-from",
    "resent-to",
    "resent-cc",
    "resent-bcc",
    "resent-sender",
    "resent-reply-to",
    "return-path",
    "disposition-notification-to",
    "return-receipt-to",
    "errors-to",
    "list-post",
}
NEW_FIELDS = {"from", "reply-to", "to", "message-id"}
NEW_FIELDS |= {"auto-submitted", "x-auto-response-suppress"}
MOVED_FIELDS = {name.decode().lower() for name in MOVED.values()}

MULTIPART = (
    b"From: Ann Lee <ann@customer.example>\r\n"
    b"To: support@acme.example, boss@acme.example\r\n"
    b"Cc: friend@customer.example\r\n"
    b"Bcc: hidden@customer.example\r\n"
    b"Reply-To: ann.private@customer.example\r\n"
    b"Mail-Followup-To: list@lists.example\r\n"
    b"Disposition-Notification-To: ann@customer.example\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    b"Message-ID: <m1@customer.example>\r\n"
    b"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed;\r\n boundary="b1"\r\n'
    b"\r\n"
    b"preamble\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Hello.\r\n"
    b"--b1\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b'Content-Disposition: attachment; filename="photo.bin"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"AAECAwQFBgcICQ==\r\n"
    b"--b1--\r\n"
)


def physical(original: bytes, customerName: str = "Ann Lee") -> bytes:
    return buildPhysical(
        original,
        contactId=CONTACT,
        rerouteName=REROUTE,
        customerName=customerName,
        agentAddress=AGENT,
        messageId="<p1@contact.example.com>",
    )


def addressesIn(message: EmailMessage) -> dict[str, set[str]]:
    """
    @return: The addresses of every header that a mail client might reply
        to, by field name.
    """
    found: dict[str, set[str]] = {}
    for name, value in message.items():
        if name.lower() in ADDRESS_FIELDS:
            addresses = getattr(value, "addresses", None)
            if addresses is None:
                found.setdefault(name.lower(), set()).add(str(value))
            else:
                found.setdefault(name.lower(), set()).update(
                    a.addr_spec.lower() for a in addresses
                )
    return found


class PhysicalTests(SynchronousTestCase):
    """
    L{buildPhysical} rewrites the top-level header section only.
    """

    def test_bodyAndAttachmentsIntact(self) -> None:
        """
        The body, with the MIME structure and the attachment, passes byte
        for byte, and the copy parses to the same parts.
        """
        copy = physical(MULTIPART)
        self.assertTrue(copy.endswith(MULTIPART[MULTIPART.index(b"\r\n\r\n") + 4 :]))
        parsed = parse(copy)
        self.assertTrue(parsed.is_multipart())
        parts = list(parsed.iter_parts())
        self.assertEqual(len(parts), 2)
        attachment = parts[1]
        assert isinstance(attachment, EmailMessage)
        self.assertEqual(attachment.get_filename(), "photo.bin")
        self.assertEqual(attachment.get_content(), bytes(range(10)))
        self.assertEqual(str(parsed["Subject"]), "Grüße")
        self.assertEqual(parsed["Date"].datetime.timestamp(), 1_700_000_000)

    def test_repliesReachContactOnly(self) -> None:
        """
        From and Reply-To are the contact address with the customer's name,
        To is the agent, and no other address header is left.
        """
        parsed = parse(physical(MULTIPART))
        self.assertEqual(
            addressesIn(parsed),
            {
                "from": {CONTACT_ADDRESS},
                "reply-to": {CONTACT_ADDRESS},
                "to": {AGENT},
            },
        )
        self.assertEqual(parsed["From"].addresses[0].display_name, "Ann Lee")
        self.assertEqual(parsed["Message-ID"], "<p1@contact.example.com>")

    def test_originalsMoved(self) -> None:
        """
        The original From, To, Cc, Reply-To and Message-ID are kept under
        X-Original-*; Bcc, Mail-Followup-To and receipt requests are gone.
        """
        copy = physical(MULTIPART)
        parsed = parse(copy)
        self.assertEqual(
            parsed["X-Original-To"], "support@acme.example, boss@acme.example"
        )
        self.assertEqual(parsed["X-Original-Cc"], "friend@customer.example")
        self.assertEqual(parsed["X-Original-Reply-To"], "ann.private@customer.example")
        self.assertEqual(parsed["X-Original-Message-ID"], "<m1@customer.example>")
        self.assertNotIn(b"hidden@", copy)
        self.assertNotIn(b"lists.example", copy)
        self.assertNotIn(b"Disposition-Notification", copy)

    def test_bareCarriageReturn(self) -> None:
        """
        A bare CR inside a kept header cannot start a header of its own for
        a reader (or an SMTP encoder) that breaks lines there.
        """
        original = b"Subject: hi\rCc: evil@else.example\r\nFrom: a@b.example\r\n\r\nx"
        parsed = parse(physical(original))
        self.assertIsNone(parsed["Cc"])
        self.assertEqual(str(parsed["Subject"]), "hi Cc: evil@else.example")

    def test_blankContinuation(self) -> None:
        """
        A continuation line of only white space, which some readers take for
        the end of the header section, is left out.
        """
        original = b"Subject: hi\r\n \r\n there\r\nFrom: a@b.example\r\n\r\nbody"
        copy = physical(original)
        self.assertIn(b"Subject: hi\r\n there\r\n", copy)

    def test_nonFieldLineStartsBody(self) -> None:
        """
        A line that is neither a field nor a continuation ends the header
        section: it and what follows stay in the body.
        """
        original = b"From: a@b.example\r\nJUNK\r\nCc: evil@else.example\r\n\r\nx"
        copy = physical(original)
        head, _, body = copy.partition(b"\r\n\r\n")
        self.assertNotIn(b"evil", head)
        self.assertEqual(body, b"JUNK\r\nCc: evil@else.example\r\n\r\nx")

    def test_bareLineFeeds(self) -> None:
        """
        A message with LF line ends is read alike; the new header section
        has CRLF line ends and the body stays as it was.
        """
        original = b"From: a@b.example\nCc: c@d.example\nSubject: s\n\nline\n"
        copy = physical(original)
        self.assertTrue(copy.endswith(b"\r\n\r\nline\n"))
        self.assertIn(b"X-Original-Cc: c@d.example\r\n", copy)

    def test_mboxFromLine(self) -> None:
        """
        A leading mbox C{From } line is skipped, not taken for the body.
        """
        fields, body = splitMessage(b"From a@b Mon Jan 1\r\nSubject: s\r\n\r\nx")
        self.assertEqual([name for name, _ in fields], ["subject"])
        self.assertEqual(body, b"x")

    def test_nameCannotPassForAddress(self) -> None:
        """
        A display name that holds an address or angle brackets loses them.
        """
        parsed = parse(physical(MULTIPART, customerName='x@evil.example <y@z>"'))
        self.assertEqual(addressesIn(parsed)["from"], {CONTACT_ADDRESS})
        self.assertNotIn("@", parsed["From"].addresses[0].display_name)

    def test_envelope(self) -> None:
        """
        The physical email goes from the entrance's address to the agent, on
        the entrance's route.
        """
        envelope = physicalEnvelope(SUPPORT, AGENT)
        self.assertEqual(envelope.sender, "support@acme.example")
        self.assertEqual(envelope.recipients, (AGENT,))
        self.assertEqual(envelope.route, "outgoing")
        own = evolve(SUPPORT, servers=(SmtpServerConfig("smtp.acme.example", 25),))
        self.assertEqual(physicalEnvelope(own, AGENT).route, "entrance/acme")


_OUTSIDERS = st.sampled_from(
    [
        "friend@customer.example",
        "Boss <boss@acme.example>",
        '"Lee, Ann" <ann@customer.example>',
        "=?utf-8?q?Eve?= <eve@else.example>",
        "group: a@g.example, b@g.example;",
        "<>",
    ]
)
_NAMES = st.sampled_from(sorted(ADDRESS_FIELDS | KEPT | {"received", "x-mailer"}))
_FIELDS = st.tuples(
    _NAMES,
    st.booleans(),  # swap the case of the name
    st.sampled_from(["", " ", "\t"]),  # white space before the colon
    st.lists(_OUTSIDERS, min_size=1, max_size=3),
    st.sampled_from(["", "\r", "\rCc: spy@else.example", "\n Bcc: spy@else.example"]),
)


class PhysicalPropertyTests(SynchronousTestCase):
    """
    Whatever the customer's header section, the physical email's replies
    reach the contact address only.
    """

    @given(
        fields=st.lists(_FIELDS, max_size=12),
        lineEnd=st.sampled_from([b"\r\n", b"\n"]),
        fold=st.booleans(),
        body=st.binary(max_size=200),
    )
    def test_replyReachesContactOnly(
        self,
        fields: list[tuple[str, bool, str, list[str], str]],
        lineEnd: bytes,
        fold: bool,
        body: bytes,
    ) -> None:
        """
        Over random header sets (every address field, any case, white space
        before colons, folding, bare CRs and LFs with injected fields), the
        copy's reply and reply-all addresses are the contact's and the
        agent's only, it has no header outside the allowed ones, and the
        body ends it unchanged.
        """
        lines = []
        for name, swap, space, values, tail in fields:
            shown = name.swapcase() if swap else name
            separator = ",\r\n " if fold else ", "
            lines.append(f"{shown}{space}: {separator.join(values)}{tail}")
        head = lineEnd.join(line.encode() for line in lines)
        original = head + lineEnd + lineEnd + body if lines else lineEnd + body
        copy = physical(original)
        parsed = parse(copy)
        self.assertEqual(
            [d for d in parsed.defects if isinstance(d, HeaderSectionDefect)], []
        )

        reached = set().union(*addressesIn(parsed).values())
        self.assertLessEqual(reached, {CONTACT_ADDRESS, AGENT})
        self.assertEqual(addressesIn(parsed)["reply-to"], {CONTACT_ADDRESS})
        allowed = NEW_FIELDS | KEPT | MOVED_FIELDS
        self.assertLessEqual({name.lower() for name in parsed.keys()}, allowed)
        self.assertTrue(copy.endswith(b"\r\n\r\n" + splitMessage(original)[1]))
