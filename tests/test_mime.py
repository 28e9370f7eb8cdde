"""
Tests for L{ace_mail.mime}: the DSN bounce.
"""

from __future__ import annotations

import email
import email.message
from email import policy

from twisted.trial.unittest import SynchronousTestCase

from ace_mail.envelope import Envelope, Reply
from ace_mail.mime import FailedRecipient, buildBounce, headerPart

ORIGINAL = (
    b"From: Agent <agent@example.com>\r\n"
    b"To: customer@example.net\r\n"
    b"Subject: Your order\r\n"
    b"Message-ID: <order-1@example.com>\r\n"
    b"\r\n"
    b"The body is not part of a bounce.\r\n"
)


def bounce(
    failures: list[FailedRecipient], expired: bool = False, headers: bytes = b""
) -> bytes:
    return buildBounce(
        headers or headerPart(ORIGINAL),
        Envelope("agent@example.com", [f.recipient for f in failures]),
        failures,
        queueId="abcdefghijklmnop",
        reportingMta="mail.example.com",
        arrivalDate=1_700_000_000.0,
        nowDate=1_700_000_600.0,
        messageId="<bounce-1@mail.example.com>",
        expired=expired,
    )


def parse(data: bytes) -> email.message.Message:
    return email.message_from_bytes(data, policy=policy.compat32)


class BounceTests(SynchronousTestCase):
    """
    L{buildBounce} builds an RFC 3464 report that the email package reads.
    """

    def test_structure(self) -> None:
        """
        The bounce is a multipart/report of type delivery-status with a
        text part, a message/delivery-status part and the original headers
        as text/rfc822-headers, addressed to the envelope sender.
        """
        data = bounce(
            [FailedRecipient("x@example.net", Reply(550, "5.1.1 no such user"), "s1")]
        )
        report = parse(data)
        self.assertEqual(report.get_content_type(), "multipart/report")
        self.assertEqual(report.get_param("report-type"), "delivery-status")
        self.assertEqual(report["To"], "<agent@example.com>")
        self.assertEqual(report["Message-ID"], "<bounce-1@mail.example.com>")
        self.assertEqual(report["Auto-Submitted"], "auto-replied")
        parts = report.get_payload()
        self.assertEqual(
            [part.get_content_type() for part in parts],
            ["text/plain", "message/delivery-status", "text/rfc822-headers"],
        )
        self.assertIn("x@example.net", parts[0].get_payload())
        self.assertIn("550 5.1.1 no such user", parts[0].get_payload())
        original = parse(parts[2].get_payload(decode=True))
        self.assertEqual(original["Subject"], "Your order")
        self.assertNotIn(b"The body", data)
        self.assertTrue(data.isascii())
        self.assertNotIn(b"\n", data.replace(b"\r\n", b""))

    def test_perRecipientFields(self) -> None:
        """
        The delivery-status part has the per-message fields, then one block
        per recipient with Final-Recipient, Action: failed, Status and
        Diagnostic-Code.
        """
        data = bounce(
            [
                FailedRecipient("x@example.net", Reply(550, "5.1.1 unknown"), "s1"),
                FailedRecipient("y@example.net", Reply(554, "rejected"), "s2"),
            ]
        )
        status = parse(data).get_payload()[1].get_payload()
        self.assertEqual(len(status), 3)
        self.assertEqual(status[0]["Reporting-MTA"], "dns; mail.example.com")
        self.assertEqual(status[0]["Arrival-Date"], "Tue, 14 Nov 2023 22:13:20 GMT")
        self.assertEqual(
            [
                (b["Final-Recipient"], b["Action"], b["Status"], b["Diagnostic-Code"])
                for b in status[1:]
            ],
            [
                ("rfc822; x@example.net", "failed", "5.1.1", "smtp; 550 5.1.1 unknown"),
                ("rfc822; y@example.net", "failed", "5.0.0", "smtp; 554 rejected"),
            ],
        )

    def test_expired(self) -> None:
        """
        An expiry bounce says that the delivery time expired, in the subject
        and in the diagnostic, and keeps the status of the last reply.
        """
        data = bounce(
            [FailedRecipient("x@example.net", Reply(451, "4.4.1 no answer"), "")],
            expired=True,
        )
        report = parse(data)
        self.assertIn("delivery time expired", report["Subject"])
        [block] = report.get_payload()[1].get_payload()[1:]
        self.assertEqual(block["Status"], "4.4.1")
        self.assertEqual(
            block["Diagnostic-Code"], "smtp; delivery time expired; 451 4.4.1 no answer"
        )
        data = bounce(
            [FailedRecipient("x@example.net", Reply(421, "timed out"), "")],
            expired=True,
        )
        [block] = parse(data).get_payload()[1].get_payload()[1:]
        self.assertEqual(block["Status"], "4.4.7")

    def test_noHeaderInjection(self) -> None:
        """
        Line breaks and non-ASCII characters in replies and addresses do not
        start new fields: they become spaces and escapes.
        """
        reply = Reply(550, "5.7.1 no\r\nX-Injected: yes\nthanks \u00e9")
        data = bounce([FailedRecipient("\u00e9@example.net", reply, "s1")])
        [block] = parse(data).get_payload()[1].get_payload()[1:]
        self.assertIsNone(block["X-Injected"])
        self.assertEqual(
            block["Diagnostic-Code"],
            "smtp; 550 5.7.1 no X-Injected: yes thanks \\x{E9}",
        )
        self.assertEqual(block["Final-Recipient"], "rfc822; \\x{E9}@example.net")

    def test_eightBitHeadersQuoted(self) -> None:
        """
        Original headers with 8-bit bytes are sent quoted-printable and
        decode back to the same bytes.
        """
        headers = "Subject: caf\u00e9\r\nFrom: a@example.com".encode()
        data = bounce(
            [FailedRecipient("x@example.net", Reply(550, "no"), "")], headers=headers
        )
        self.assertTrue(data.isascii())
        part = parse(data).get_payload()[2]
        self.assertEqual(part["Content-Transfer-Encoding"], "quoted-printable")
        self.assertEqual(
            part.get_payload(decode=True).splitlines(), headers.splitlines()
        )

    def test_noLineOver998(self) -> None:
        """
        A long original header line and a long reply still give a bounce
        with no line over 998 bytes, which a server that refused the long
        line takes: the headers go quoted-printable, and the reply is folded
        and reads back whole.
        """
        headers = b"From: a@example.com\r\nReferences: " + b" ".join(
            b"<%d@example.com>" % n for n in range(200)
        )
        text = "5.5.0 " + " ".join(f"word{n}" for n in range(300))
        data = bounce(
            [FailedRecipient("x@example.net", Reply(550, text), "s1")],
            headers=headers,
        )
        self.assertLessEqual(max(len(line) for line in data.split(b"\r\n")), 998)
        report, original = parse(data).get_payload()[1:]
        [block] = report.get_payload()[1:]
        self.assertEqual(
            " ".join(block["Diagnostic-Code"].split()), f"smtp; 550 {text}"
        )
        self.assertEqual(original["Content-Transfer-Encoding"], "quoted-printable")
        self.assertEqual(
            original.get_payload(decode=True).splitlines(), headers.splitlines()
        )

    def test_boundaryNotInContent(self) -> None:
        """
        The boundary is chosen so that it occurs nowhere in the parts, even
        when the original headers contain the first choice.
        """
        first = bounce([FailedRecipient("x@example.net", Reply(550, "no"), "")])
        boundary = parse(first).get_boundary()
        headers = f"Subject: {boundary}".encode()
        data = bounce(
            [FailedRecipient("x@example.net", Reply(550, "no"), "")], headers=headers
        )
        self.assertNotEqual(parse(data).get_boundary(), boundary)
        self.assertEqual(len(parse(data).get_payload()), 3)


class HeaderPartTests(SynchronousTestCase):
    """
    L{headerPart} cuts a message at its first blank line.
    """

    def test_cuts(self) -> None:
        """
        The header section ends before the first blank line, with CRLF or
        LF line endings, and is the whole message when there is no body.
        """
        self.assertEqual(
            headerPart(b"A: 1\r\nB: 2\r\n\r\nbody\r\n\r\n"), b"A: 1\r\nB: 2"
        )
        self.assertEqual(headerPart(b"A: 1\n\nbody"), b"A: 1")
        self.assertEqual(headerPart(b"A: 1\r\n"), b"A: 1\r\n")
