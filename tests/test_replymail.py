"""
Tests for L{ace_mail.replymail}: typed replies made into emails, parsed back
with the email package.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

from attrs import evolve
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from ace_mail.replymail import (
    Attachment,
    TypedReply,
    buildReply,
    replyEnvelope,
    replySubject,
    safeFilename,
)
from ace_mail.store import Contact, Entrance

ENTRANCE = Entrance("shop", "sales@shop.example", "Shop Sälës")
CONTACT = Contact(
    id="abcdefghijklmnopqrst",
    entrance="shop",
    customerAddress="ann@customer.example",
    customerName="Ann Lee",
    subject="Broken kettle",
    messageId="<m1@customer.example>",
    references=("<r0@customer.example>",),
    externalId=None,
    created=1_800_000_000.0,
    ended=None,
)
DATE = 1_800_000_060.0
PDF = bytes(range(256)) * 3
_BODY_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def build(reply: TypedReply, contact: Contact = CONTACT) -> bytes:
    return buildReply(
        ENTRANCE, contact, reply, messageId="<new1@shop.example>", date=DATE
    )


def parse(message: bytes) -> EmailMessage:
    parsed = BytesParser(policy=policy.default).parsebytes(message)
    assert isinstance(parsed, EmailMessage)
    return parsed


def text(part: EmailMessage) -> str:
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


class HeaderTests(SynchronousTestCase):
    """
    The header section of a reply.
    """

    def test_addresses(self) -> None:
        """
        From and Reply-To are the entrance with its display name, and To is
        the customer.
        """
        reply = parse(build(TypedReply("Hello")))
        for name in ("From", "Reply-To"):
            [address] = reply[name].addresses
            self.assertEqual(address.display_name, "Shop Sälës")
            self.assertEqual(address.addr_spec, "sales@shop.example")
        [customer] = reply["To"].addresses
        self.assertEqual(customer.display_name, "Ann Lee")
        self.assertEqual(customer.addr_spec, "ann@customer.example")

    def test_dateAndMessageId(self) -> None:
        """
        Date is the time given, and Message-ID the id given.
        """
        reply = parse(build(TypedReply("Hello")))
        self.assertEqual(
            reply["Date"].datetime, datetime.fromtimestamp(DATE, timezone.utc)
        )
        self.assertEqual(reply["Message-ID"], "<new1@shop.example>")
        self.assertEqual(reply["MIME-Version"], "1.0")

    def test_defaultSubject(self) -> None:
        """
        Without a subject of its own the reply is C{Re:} and the contact's.
        """
        self.assertEqual(parse(build(TypedReply("x")))["Subject"], "Re: Broken kettle")

    def test_ownSubject(self) -> None:
        """
        A subject of the reply's own is used as it is, outside ASCII too.
        """
        reply = parse(build(TypedReply("x", subject="Ihre Bestellung: Größe")))
        self.assertEqual(reply["Subject"], "Ihre Bestellung: Größe")

    def test_replySubjectNotDoubled(self) -> None:
        """
        C{Re:} is put before a subject once: one that starts with it in any
        case and spacing is kept, and line breaks become spaces.
        """
        for subject, expected in [
            ("Broken kettle", "Re: Broken kettle"),
            ("Re: Broken kettle", "Re: Broken kettle"),
            ("RE:Broken", "RE:Broken"),
            ("re : Broken", "re : Broken"),
            ("Reply needed", "Re: Reply needed"),
            ("", "Re:"),
            ("a\r\nBcc: x@example.com", "Re: a Bcc: x@example.com"),
        ]:
            self.assertEqual(replySubject(subject), expected, subject)

    def test_threading(self) -> None:
        """
        In-Reply-To is the customer's Message-ID, and References are the
        customer's References followed by it.
        """
        reply = parse(build(TypedReply("x")))
        self.assertEqual(reply["In-Reply-To"], "<m1@customer.example>")
        self.assertEqual(
            reply["References"].split(),
            ["<r0@customer.example>", "<m1@customer.example>"],
        )

    def test_noThreadWithoutMessageId(self) -> None:
        """
        A contact without a Message-ID or References gets neither header.
        """
        reply = parse(
            build(TypedReply("x"), evolve(CONTACT, messageId=None, references=()))
        )
        self.assertNotIn("In-Reply-To", reply)
        self.assertNotIn("References", reply)

    def test_threadIdsCleaned(self) -> None:
        """
        References leave out repeats and ids that are not C{<left@right>} or
        are longer than 900 characters, and keep the last twenty; a long id
        that is kept stays whole on a line of its own, never encoded.
        """
        long = "<" + "x" * 300 + "@customer.example>"
        references = [f"<r{n}@customer.example>" for n in range(30)]
        contact = evolve(
            CONTACT,
            references=[
                "not an id",
                "<" + "y" * 1000 + "@customer.example>",
                *references,
                "<m1@customer.example>",
                long,
            ],
        )
        message = build(TypedReply("x"), contact)
        chain = parse(message)["References"].split()
        self.assertEqual(chain, [*references[-18:], long, "<m1@customer.example>"])
        self.assertIn(b"\r\n " + long.encode() + b"\r\n", message)


class BodyTests(SynchronousTestCase):
    """
    The MIME structure and the encoding of a reply's body.
    """

    def test_textOnly(self) -> None:
        """
        Text alone is one text/plain part in UTF-8, 7-bit when it is short
        ASCII lines, with its line ends made CRLF.
        """
        message = build(TypedReply("Hello,\nit is fixed.\rBye"))
        reply = parse(message)
        self.assertFalse(reply.is_multipart())
        self.assertEqual(reply.get_content_type(), "text/plain")
        self.assertEqual(reply.get_content_charset(), "utf-8")
        self.assertEqual(reply["Content-Transfer-Encoding"], "7bit")
        self.assertEqual(text(reply), "Hello,\nit is fixed.\nBye\n")
        self.assertNotIn(b"\n", message.replace(b"\r\n", b""))

    def test_nonAsciiEncoded(self) -> None:
        """
        Text outside ASCII is quoted-printable or base64, never 8-bit, and
        decodes to the same text.
        """
        message = build(TypedReply("Grüße aus Köln\n"))
        reply = parse(message)
        self.assertIn(
            reply["Content-Transfer-Encoding"], ("quoted-printable", "base64")
        )
        self.assertEqual(text(reply), "Grüße aus Köln\n")
        self.assertTrue(message.isascii())

    def test_longLines(self) -> None:
        """
        A line of 5000 characters is encoded into short lines and decodes
        to the same text.
        """
        line = "word " * 1000
        message = build(TypedReply(line))
        self.assertLessEqual(max(len(x) for x in message.split(b"\r\n")), 78)
        self.assertEqual(text(parse(message)), line + "\n")

    def test_controlCharactersDropped(self) -> None:
        """
        Control characters other than tabs are left out of the text.
        """
        reply = parse(build(TypedReply("a\x00b\x07c\td\x1b\n")))
        self.assertEqual(text(reply), "abc\td\n")

    def test_alternative(self) -> None:
        """
        Text and HTML are a multipart/alternative: the text first, then the
        HTML.
        """
        reply = parse(build(TypedReply("Hello", html="<p>Héllo</p>")))
        self.assertEqual(reply.get_content_type(), "multipart/alternative")
        plain, html = reply.iter_parts()
        self.assertEqual(plain.get_content_type(), "text/plain")
        self.assertEqual(text(plain), "Hello\n")
        self.assertEqual(html.get_content_type(), "text/html")
        self.assertEqual(text(html), "<p>Héllo</p>\n")
        self.assertNotIn("MIME-Version", plain)

    def test_attachments(self) -> None:
        """
        With attachments the reply is a multipart/mixed: the alternative
        first, then each file in order, base64, decoding to its bytes, with
        its file name.
        """
        reply = parse(
            build(
                TypedReply(
                    "See the files.",
                    html="<p>See the files.</p>",
                    attachments=[
                        Attachment("invoice.pdf", "application/pdf", PDF),
                        Attachment("Größe.png", "image/png", b"\x89PNG\r\n"),
                    ],
                )
            )
        )
        self.assertEqual(reply.get_content_type(), "multipart/mixed")
        alternative, pdf, png = reply.iter_parts()
        self.assertEqual(alternative.get_content_type(), "multipart/alternative")
        self.assertEqual(
            [p.get_content_type() for p in alternative.iter_parts()],
            ["text/plain", "text/html"],
        )
        self.assertEqual(pdf.get_content_type(), "application/pdf")
        self.assertEqual(pdf["Content-Transfer-Encoding"], "base64")
        self.assertEqual(pdf.get_filename(), "invoice.pdf")
        self.assertEqual(pdf.get_content(), PDF)
        self.assertEqual(png.get_filename(), "Größe.png")
        self.assertEqual(png.get_content(), b"\x89PNG\r\n")
        self.assertTrue(pdf.is_attachment())

    def test_attachmentWithoutHtml(self) -> None:
        """
        Text with an attachment is a multipart/mixed of the text/plain part
        and the file.
        """
        reply = parse(
            build(
                TypedReply("x", attachments=[Attachment("a.txt", "text/plain", b"hi")])
            )
        )
        self.assertEqual(
            [p.get_content_type() for p in reply.iter_parts()],
            ["text/plain", "text/plain"],
        )
        self.assertEqual(reply.get_payload(1).get_content(), "hi")

    def test_unsafeFilenames(self) -> None:
        """
        A file name keeps only its last path component, without control
        characters, leading dots or outer spaces, cut to 200 characters.
        """
        for name, expected in [
            ("../../etc/passwd", "passwd"),
            ("C:\\Users\\ann\\report.pdf", "report.pdf"),
            ("bad\r\nContent-Type: x.txt", "bad Content-Type: x.txt"),
            ("..hidden", "hidden"),
            ("  spaced.txt ", "spaced.txt"),
            ("", "attachment"),
            ("dir/", "attachment"),
            ("a" * 300, "a" * 200),
        ]:
            self.assertEqual(safeFilename(name), expected, name)
        reply = parse(
            build(
                TypedReply(
                    "x", attachments=[Attachment("../a\r\nb.txt", "text/plain", b"")]
                )
            )
        )
        self.assertEqual(reply.get_payload(1).get_filename(), "a b.txt")

    @given(
        st.text(),
        st.none() | st.text(),
        st.none() | st.text(max_size=300),
        st.text(max_size=80),
        st.lists(st.tuples(st.text(max_size=80), st.binary(max_size=300)), max_size=3),
    )
    def test_anyReplyIsWellFormed(
        self,
        body: str,
        html: str | None,
        subject: str | None,
        name: str,
        files: list[tuple[str, bytes]],
    ) -> None:
        """
        Whatever the agent typed, the email is ASCII with CRLF lines of at
        most 998 bytes, parses without defects, and gives back the text,
        the HTML and the files.
        """
        surrogates = re.compile(r"[\ud800-\udfff]")
        body, name = surrogates.sub("", body), surrogates.sub("", name)
        html = None if html is None else surrogates.sub("", html)
        subject = None if subject is None else surrogates.sub("", subject)
        files = [(surrogates.sub("", n), data) for n, data in files]
        reply = TypedReply(
            body,
            html,
            subject,
            [Attachment(n, "application/octet-stream", data) for n, data in files],
        )
        message = build(reply, evolve(CONTACT, customerName=name, subject=name))
        self.assertTrue(message.isascii())
        lines = message.split(b"\r\n")
        self.assertLessEqual(max(len(line) for line in lines), 998)
        self.assertNotIn(b"\r", b"".join(lines))
        self.assertNotIn(b"\n", b"".join(lines))
        parsed = parse(message)
        for part in parsed.walk():
            self.assertEqual(part.defects, [])
        parts = [p for p in parsed.walk() if not p.is_multipart()]
        self.assertEqual(text(parts[0]), normal(body))
        if html is not None:
            self.assertEqual(text(parts[1]), normal(html))
        attached = [p.get_content() for p in parts if p.is_attachment()]
        self.assertEqual(attached, [data for _, data in files])


def normal(typed: str) -> str:
    """
    @return: Typed text as a reply carries it: newlines, no control
        characters but tabs, ending in a newline.
    """
    typed = _BODY_CONTROL.sub("", typed.replace("\r\n", "\n").replace("\r", "\n"))
    return typed if typed.endswith("\n") else typed + "\n"


class EnvelopeTests(SynchronousTestCase):
    """
    L{replyEnvelope}.
    """

    def test_envelope(self) -> None:
        """
        The reply goes from the entrance's address to the customer's, on the
        route given.
        """
        envelope = replyEnvelope(ENTRANCE, CONTACT, "entrance/shop")
        self.assertEqual(envelope.sender, "sales@shop.example")
        self.assertEqual(envelope.recipients, ("ann@customer.example",))
        self.assertEqual(envelope.route, "entrance/shop")
