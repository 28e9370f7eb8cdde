"""
Tests for L{ace_mail.rewrite}: the customer's copy of an agent's reply shows
the entrance and the customer, threads under the customer's email, and never
shows the agent's address.
"""

from __future__ import annotations

import base64
import email.policy
import re
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.parser import BytesParser

from attrs import evolve
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from ace_mail.rewrite import (
    RewriteError,
    _Secrets,
    agentAddressesIn,
    headerLeaks,
    rewriteReply,
)
from ace_mail.store import Contact, Entrance
from tests.strategies import agentAddresses, hiddenForms, hidingHeaderLines

AGENT = "john.smith@corp.example"
ENTRANCE = Entrance("default", "support@example.com", "Support")
CONTACT = Contact(
    id="abcdefghijklmnopqrst",
    entrance="default",
    customerAddress="kunde@example.net",
    customerName="Jürgen Kunde",
    subject="Frage zur Rechnung",
    messageId="<original.1@example.net>",
    references=("<earlier.1@example.net>",),
    externalId=None,
    created=0.0,
    ended=None,
)
BODY = b"Hello,\r\n\r\nthe invoice is fixed.\r\n\r\n--\r\nJohn\r\n"
ALLOWED = {
    "from",
    "reply-to",
    "to",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
    "content-language",
    "importance",
    "priority",
    "x-priority",
}
_TEXT = st.characters(exclude_characters="@", exclude_categories=["Cs"])
_LOCAL = re.escape("abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+/=?^_`{|}~.-")
#: Pieces of plain header values: the agent's address in either case, the
#: characters that may or may not come before it, and other addresses.
_PIECES = st.sampled_from(
    [AGENT, AGENT.upper(), "x", "J", ".", "-", "+", " ", ", ", "<", ">", "a@b.example"]
)


def reply(*lines: str, body: bytes = BODY, sender: str = AGENT) -> bytes:
    """
    @return: An agent's reply from C{sender} with the header lines given,
        each without its line end, to the contact's reply address.
    """
    head = [f"From: John Smith <{sender}>", f"To: {CONTACT.id}@proxy.example.com"]
    return ("\r\n".join(head + list(lines)) + "\r\n\r\n").encode("utf-8") + body


def parse(message: bytes) -> EmailMessage:
    parsed = BytesParser(policy=email.policy.default).parsebytes(message)
    assert isinstance(parsed, EmailMessage)
    return parsed


def headerBlock(message: bytes) -> bytes:
    return message.split(b"\r\n\r\n", 1)[0]


def displayName(message: bytes, name: str) -> str:
    """
    Decode the display name of a single mailbox header with the RFC 2047
    decoder of the email package, which drops the white space between
    adjacent encoded words as the RFC says (its phrase parser keeps it).
    """
    raw = BytesParser(policy=email.policy.compat32).parsebytes(message)[name]
    phrase = re.sub(r"\r?\n(?=[ \t])", "", raw).rpartition("<")[0].strip()
    if phrase.startswith('"'):
        return re.sub(r"\\(.)", r"\1", phrase[1:-1])
    return str(make_header(decode_header(phrase)))


def withoutControls(text: str) -> str:
    """
    @return: C{text} as a display name is written: control characters (C0 and C1) as
        spaces, no white space at either end.
    """
    return re.sub(r"[\x00-\x1f\x7f-\x9f]", " ", text).strip()


def showsAddress(text: str, address: str) -> bool:
    """
    The test's own oracle: whether C{text} holds C{address} in any letter
    case, with C{@} plain or escaped, and not as the end of a longer local
    part.
    """
    for at in ("@", "=40", "%40"):
        written = re.escape(address.lower().replace("@", at))
        pattern = rf"(?<![{_LOCAL}]){written}"
        if re.search(pattern, text.lower()):
            return True
    return False


class HiddenAddressPropertyTests(SynchronousTestCase):
    """
    Whatever headers hide the agent's address, the rewritten copy shows it
    nowhere and names exactly the entrance and the customer.
    """

    @settings(max_examples=300)
    @given(
        agent=agentAddresses(),
        data=st.data(),
        fromName=st.none() | st.text(_TEXT, max_size=40),
        customerName=st.text(_TEXT, max_size=40),
        subject=st.text(_TEXT, max_size=60),
        onAgentDomain=st.booleans(),
    )
    def test_agentNeverShown(
        self,
        agent: str,
        data: st.DataObject,
        fromName: str | None,
        customerName: str,
        subject: str,
        onAgentDomain: bool,
    ) -> None:
        """
        The copy of a reply whose headers hide the agent's address in any
        header and any encoding shows it in no header, read raw or decoded,
        and its From, Reply-To, To, threading and body are as specified.
        """
        domain = agent.rpartition("@")[2] if onAgentDomain else "example.com"
        entrance = Entrance("default", f"support@{domain}", "Support Team")
        contact = evolve(CONTACT, customerName=customerName, subject=subject)
        for other in (entrance.address, contact.customerAddress):
            if showsAddress(other, agent):
                return
        hidden = data.draw(hidingHeaderLines(agent))
        sender = data.draw(hiddenForms(agent))
        message = (
            f"From: =?utf-8?q?John_Smith?= <{sender}>\r\n".encode("ascii")
            + "".join(hidden).encode("utf-8")
            + b"\r\n"
            + BODY
        )

        copy = rewriteReply(message, contact, entrance, fromName=fromName)

        head = headerBlock(copy)
        self.assertFalse(headerLeaks(copy, agent))
        unfolded = re.sub(rb"\r\n(?=[ \t])", b"", head).decode("ascii")
        self.assertFalse(showsAddress(unfolded, agent), unfolded)
        parsed = parse(copy)
        for name, value in parsed.items():
            self.assertFalse(showsAddress(str(value), agent), (name, str(value)))
            self.assertIn(name.lower(), ALLOWED)
            if "=?" in value:
                decoded = str(make_header(decode_header(re.sub(r"\s+", " ", value))))
                self.assertFalse(showsAddress(decoded, agent), decoded)
        for line in head.split(b"\r\n"):
            self.assertLessEqual(len(line), 78)

        expectedName = "Support Team" if fromName is None else fromName
        for name in ("From", "Reply-To"):
            [address] = parsed[name].addresses
            self.assertEqual(address.addr_spec, entrance.address)
            self.assertEqual(displayName(copy, name), withoutControls(expectedName))
        [customer] = parsed["To"].addresses
        self.assertEqual(customer.addr_spec, contact.customerAddress)
        self.assertEqual(displayName(copy, "To"), withoutControls(customerName))
        self.assertIsNone(parsed["Cc"])
        self.assertIsNone(parsed["Bcc"])
        self.assertEqual(parsed["In-Reply-To"], contact.messageId)
        self.assertEqual(parsed["References"].split()[-1], contact.messageId)
        self.assertTrue(parsed["Message-ID"].endswith(f"@{domain}>"))
        self.assertEqual(copy.split(b"\r\n\r\n", 1)[1], BODY)


class DroppedHeaderTests(SynchronousTestCase):
    """
    Each family of headers that can reveal the agent is left out of the
    copy, with what it says.
    """

    def assertDropped(self, line: str, *traces: str) -> None:
        """
        The copy of a reply with C{line} has no header of its name, and none
        of C{traces} anywhere in its header block.
        """
        name = line.split(":", 1)[0]
        copy = rewriteReply(reply(line), CONTACT, ENTRANCE)
        self.assertIsNone(parse(copy)[name])
        head = headerBlock(copy).decode("ascii").lower()
        for trace in traces:
            self.assertNotIn(trace.lower(), head)

    def test_sender(self) -> None:
        """
        Sender goes.
        """
        self.assertDropped("Sender: John Smith <john.smith@corp.example>", "john.smith")

    def test_returnPath(self) -> None:
        """
        Return-Path goes.
        """
        self.assertDropped("Return-Path: <john.smith@corp.example>", "john.smith")

    def test_received(self) -> None:
        """
        Received lines from the agent's side go, with the host and address
        they name.
        """
        self.assertDropped(
            "Received: from pc-smith.corp.example ([10.20.30.40]) by mx.corp.example"
            " with ESMTPSA; Tue, 3 Dec 2024 10:00:00 +0100",
            "pc-smith",
            "10.20.30.40",
        )

    def test_originatingIp(self) -> None:
        """
        X-Originating-IP goes.
        """
        self.assertDropped("X-Originating-IP: [192.0.2.77]", "192.0.2.77")

    def test_xSender(self) -> None:
        """
        X-Sender goes.
        """
        self.assertDropped("X-Sender: john.smith@corp.example", "john.smith")

    def test_exchangeOrganisation(self) -> None:
        """
        Exchange's organisation headers go.
        """
        self.assertDropped("X-MS-Exchange-Organization-AuthAs: Internal", "Internal")
        self.assertDropped(
            "X-MS-Exchange-CrossTenant-originalarrivaltime: 03 Dec 2024 09:00:00.0000",
            "crosstenant",
        )

    def test_dispositionNotificationTo(self) -> None:
        """
        Disposition-Notification-To, a read-receipt request to the agent,
        goes.
        """
        self.assertDropped(
            "Disposition-Notification-To: <john.smith@corp.example>", "john.smith"
        )

    def test_returnReceiptTo(self) -> None:
        """
        Return-Receipt-To goes.
        """
        self.assertDropped("Return-Receipt-To: john.smith@corp.example", "john.smith")

    def test_dkimSignature(self) -> None:
        """
        The agent's side's DKIM-Signature goes: it would not verify anyway.
        """
        self.assertDropped(
            "DKIM-Signature: v=1; a=rsa-sha256; d=corp.example; s=sel1;"
            " h=from:to; bh=YWJj; b=ZGVm",
            "sel1",
        )

    def test_threadIndexAndMailer(self) -> None:
        """
        Thread-Index, Thread-Topic, X-Mailer and User-Agent go.
        """
        self.assertDropped("Thread-Index: AdlFq3c9Kw==", "AdlFq3c9Kw")
        self.assertDropped("Thread-Topic: internal note", "internal note")
        self.assertDropped("X-Mailer: Microsoft Outlook 16.0", "outlook")
        self.assertDropped("User-Agent: Thunderbird/128.0", "thunderbird")

    def test_recipients(self) -> None:
        """
        Cc and Bcc go: a colleague on Cc is not shown to the customer.
        """
        self.assertDropped("Cc: Colleague <colleague@corp.example>", "colleague")
        self.assertDropped("Bcc: boss@corp.example", "boss")


class AddressHeaderTests(SynchronousTestCase):
    """
    From, Reply-To and To name the entrance and the customer.
    """

    def test_entranceDisplayName(self) -> None:
        """
        By default From and Reply-To are the entrance with its display name.
        """
        copy = rewriteReply(reply(), CONTACT, ENTRANCE)
        head = headerBlock(copy)
        self.assertIn(b'\r\nReply-To: "Support" <support@example.com>\r\n', head)
        self.assertTrue(head.startswith(b'From: "Support" <support@example.com>\r\n'))

    def test_fromName(self) -> None:
        """
        A given display name replaces the entrance's in From and Reply-To,
        encoded when it is not ASCII.
        """
        copy = rewriteReply(reply(), CONTACT, ENTRANCE, fromName="Jörg, Acme Support")
        for name in ("From", "Reply-To"):
            self.assertEqual(displayName(copy, name), "Jörg, Acme Support")
            self.assertEqual(
                parse(copy)[name].addresses[0].addr_spec, "support@example.com"
            )

    def test_fromNameNamingAgent(self) -> None:
        """
        A display name that names the agent is not used; the entrance's is.
        """
        copy = rewriteReply(reply(), CONTACT, ENTRANCE, fromName=f"John <{AGENT}>")
        self.assertEqual(displayName(copy, "From"), "Support")

    def test_customer(self) -> None:
        """
        To is the customer alone, with the display name, whatever the agent's
        To said.
        """
        copy = rewriteReply(reply("Cc: other@example.org"), CONTACT, ENTRANCE)
        parsed = parse(copy)
        self.assertEqual(len(parsed.get_all("To")), 1)
        [customer] = parsed["To"].addresses
        self.assertEqual(customer.addr_spec, "kunde@example.net")
        self.assertEqual(displayName(copy, "To"), "Jürgen Kunde")
        self.assertNotIn(CONTACT.id.encode("ascii"), headerBlock(copy))

    def test_noHeaderInjection(self) -> None:
        """
        CR and LF in a display name or subject cannot add header lines.
        """
        contact = evolve(
            CONTACT, customerName="Kunde\r\nBcc: x@evil.example", subject="a\r\nBcc: y"
        )
        copy = rewriteReply(
            reply(f"Subject: {AGENT}"),
            contact,
            ENTRANCE,
            fromName="S\nBcc: z@e.example",
        )
        self.assertIsNone(parse(copy)["Bcc"])
        lines = headerBlock(copy).split(b"\r\n")
        self.assertEqual([line for line in lines if line.startswith(b"Bcc")], [])


class ThreadingTests(SynchronousTestCase):
    """
    In-Reply-To and References thread the copy under the customer's email.
    """

    def test_customersMessageId(self) -> None:
        """
        In-Reply-To is the customer's Message-ID, and References ends with it
        after the customer's References.
        """
        parsed = parse(rewriteReply(reply(), CONTACT, ENTRANCE))
        self.assertEqual(parsed["In-Reply-To"], "<original.1@example.net>")
        self.assertEqual(
            parsed["References"], "<earlier.1@example.net> <original.1@example.net>"
        )

    def test_agentsReferences(self) -> None:
        """
        Message-IDs that the agent's client adds to References are kept once
        each, before the customer's Message-ID, except those on the agent's
        domain, those that carry the contact id, and the agent's
        In-Reply-To, which names the agent's copy.
        """
        message = reply(
            f"In-Reply-To: <{CONTACT.id}.copy@proxy.example.com>",
            "References: <earlier.1@example.net> <thread.7@example.org>"
            " <x1@pc.corp.example> <original.1@example.net>"
            f" <{CONTACT.id}.copy@proxy.example.com> <y@relay.example>",
            "In-Reply-To: <y@relay.example>",
        )
        parsed = parse(rewriteReply(message, CONTACT, ENTRANCE))
        self.assertEqual(
            parsed["References"].split(),
            [
                "<earlier.1@example.net>",
                "<thread.7@example.org>",
                "<original.1@example.net>",
            ],
        )

    def test_agentOnEntranceDomain(self) -> None:
        """
        When the agent and the entrance share a domain, earlier replies'
        Message-IDs on that domain are kept.
        """
        message = reply("References: <r9@example.com>", sender="anna@example.com")
        parsed = parse(rewriteReply(message, CONTACT, ENTRANCE))
        self.assertIn("<r9@example.com>", parsed["References"].split())

    def test_noCustomerMessageId(self) -> None:
        """
        Without the customer's Message-ID there is no In-Reply-To, and
        References holds the customer's References alone.
        """
        contact = evolve(CONTACT, messageId=None, references=())
        parsed = parse(rewriteReply(reply(), contact, ENTRANCE))
        self.assertIsNone(parsed["In-Reply-To"])
        self.assertIsNone(parsed["References"])

    def test_freshMessageId(self) -> None:
        """
        The Message-ID is new, on the entrance's domain, different for each
        customer's copy and the same when the same copy is made again.
        """
        message = reply("Message-ID: <123.456@corp.example>")
        first = parse(rewriteReply(message, CONTACT, ENTRANCE))["Message-ID"]
        again = parse(rewriteReply(message, CONTACT, ENTRANCE))["Message-ID"]
        other = evolve(CONTACT, id="zyxwvutsrqponmlkjihg")
        otherCopy = parse(rewriteReply(message, other, ENTRANCE))["Message-ID"]
        self.assertRegex(first, r"^<[0-9a-f]{32}@example\.com>$")
        self.assertEqual(first, again)
        self.assertNotEqual(first, otherCopy)


class SubjectAndDateTests(SynchronousTestCase):
    """
    The agent's Subject and Date are kept unless they name the agent.
    """

    def test_subjectKept(self) -> None:
        """
        The agent's subject, decoded and encoded again, reaches the customer.
        """
        message = reply("Subject: =?iso-8859-1?q?Re=3A_Frage_zur_R=FCcksendung?=")
        parsed = parse(rewriteReply(message, CONTACT, ENTRANCE))
        self.assertEqual(parsed["Subject"], "Re: Frage zur Rücksendung")

    def test_plainSubjectAsWritten(self) -> None:
        """
        A plain ASCII subject is written as it is.
        """
        copy = rewriteReply(reply("Subject: Re: Your order 4711"), CONTACT, ENTRANCE)
        self.assertIn(b"\r\nSubject: Re: Your order 4711\r\n", headerBlock(copy))

    def test_eightBitSubject(self) -> None:
        """
        A subject sent as raw UTF-8 is read as UTF-8 and encoded.
        """
        copy = rewriteReply(reply("Subject: Grüße"), CONTACT, ENTRANCE)
        self.assertTrue(headerBlock(copy).isascii())
        self.assertEqual(parse(copy)["Subject"], "Grüße")

    def test_subjectNamingAgent(self) -> None:
        """
        A subject that names the agent, in any encoding, is replaced by
        C{"Re: "} and the customer's subject.
        """
        for subject in (
            f"Re: question, ask {AGENT.upper()}",
            "=?utf-8?b?Sm9obi5TbWl0aEBjb3JwLmV4YW1wbGU=?=",
        ):
            parsed = parse(
                rewriteReply(reply(f"Subject: {subject}"), CONTACT, ENTRANCE)
            )
            self.assertEqual(parsed["Subject"], "Re: Frage zur Rechnung")

    def test_subjectMissing(self) -> None:
        """
        Without a subject the copy answers the customer's, and a C{Re:} is
        not doubled.
        """
        parsed = parse(rewriteReply(reply(), CONTACT, ENTRANCE))
        self.assertEqual(parsed["Subject"], "Re: Frage zur Rechnung")
        contact = evolve(CONTACT, subject="RE: Frage")
        self.assertEqual(
            parse(rewriteReply(reply(), contact, ENTRANCE))["Subject"], "RE: Frage"
        )

    def test_date(self) -> None:
        """
        The Date keeps its time and loses its comment; a Date that does not
        parse is left out.
        """
        copy = rewriteReply(
            reply(f"Date: Tue, 3 Dec 2024 10:00:00 +0100 ({AGENT})"), CONTACT, ENTRANCE
        )
        self.assertIn(b"\r\nDate: Tue, 03 Dec 2024 10:00:00 +0100\r\n", copy)
        copy = rewriteReply(reply("Date: yesterday"), CONTACT, ENTRANCE)
        self.assertIsNone(parse(copy)["Date"])


class MimeAndBodyTests(SynchronousTestCase):
    """
    The MIME structure and the body pass through; the header lines are
    folded at 78 columns.
    """

    def test_mimeHeadersKept(self) -> None:
        """
        MIME-Version, Content-Type, Content-Transfer-Encoding,
        Content-Language and the priority headers are kept.
        """
        message = reply(
            "MIME-Version: 1.0",
            'Content-Type: multipart/alternative;\r\n boundary="=_b1"',
            "Content-Transfer-Encoding: 7BIT",
            "Content-Language: de-DE, en",
            "Importance: high",
            "X-Priority: 1 (Highest)",
        )
        parsed = parse(rewriteReply(message, CONTACT, ENTRANCE))
        self.assertEqual(parsed["MIME-Version"], "1.0")
        self.assertEqual(parsed.get_content_type(), "multipart/alternative")
        self.assertEqual(parsed.get_boundary(), "=_b1")
        self.assertEqual(parsed["Content-Transfer-Encoding"], "7bit")
        self.assertEqual(parsed["Content-Language"], "de-DE, en")
        self.assertEqual(parsed["Importance"], "high")
        self.assertEqual(parsed["X-Priority"], "1 (Highest)")

    def test_parameterNamingAgent(self) -> None:
        """
        A Content-Type or Content-Disposition parameter that names the agent
        is left out; the others stay.
        """
        message = reply(
            f'Content-Type: text/plain; charset="utf-8"; name="{AGENT}.txt"',
            "Content-Disposition: attachment;"
            " filename*=utf-8''j%C3%B6rg%20john.smith%40corp.example",
        )
        copy = rewriteReply(message, CONTACT, ENTRANCE)
        parsed = parse(copy)
        self.assertEqual(parsed["Content-Type"].params, {"charset": "utf-8"})
        self.assertEqual(
            parsed["Content-Disposition"].content_disposition, "attachment"
        )
        self.assertEqual(parsed["Content-Disposition"].params, {})
        self.assertFalse(headerLeaks(copy, AGENT))

    def test_boundaryNamingAgent(self) -> None:
        """
        A MIME boundary that names the agent cannot be changed without the
        body, so the reply is refused with a sentence for the agent.
        """
        message = reply(f'Content-Type: multipart/mixed; boundary="{AGENT}"')
        with self.assertRaises(RewriteError) as caught:
            rewriteReply(message, CONTACT, ENTRANCE)
        self.assertIn("MIME boundary", str(caught.exception))

    def test_bodyUnchanged(self) -> None:
        """
        The body passes byte for byte, with its MIME parts, bare line ends,
        8-bit bytes and the agent's signature.
        """
        body = (
            b"--=_b1\r\nContent-Type: text/plain\r\n\r\nHallo \xc3\xa4\n.\r\n"
            + AGENT.encode("ascii")
            + b"\r\n--=_b1--\r\n\x00\xff"
        )
        copy = rewriteReply(reply(body=body), CONTACT, ENTRANCE)
        self.assertEqual(copy.split(b"\r\n\r\n", 1)[1], body)

    def test_folding(self) -> None:
        """
        Long header lines are folded before white space at 78 columns with
        CRLF, and unfold to the same values.
        """
        references = tuple(f"<reference.number.{n}@example.net>" for n in range(12))
        contact = evolve(CONTACT, references=references)
        subject = "Re: " + " ".join(["Rechnungskorrektur"] * 12)
        copy = rewriteReply(reply(f"Subject: {subject}"), contact, ENTRANCE)
        head = headerBlock(copy)
        self.assertNotIn(b"\n", head.replace(b"\r\n", b""))
        for line in head.split(b"\r\n"):
            self.assertLessEqual(len(line), 78)
        parsed = parse(copy)
        self.assertEqual(parsed["Subject"], subject)
        self.assertEqual(
            parsed["References"].split(), [*references, "<original.1@example.net>"]
        )

    def test_hide(self) -> None:
        """
        Addresses given to hide, such as the envelope sender, are kept out
        like the agent's own.
        """
        message = reply("Subject: from js@relay.corp.example")
        copy = rewriteReply(
            message, CONTACT, ENTRANCE, hide=["", "JS@relay.corp.example"]
        )
        self.assertEqual(parse(copy)["Subject"], "Re: Frage zur Rechnung")

    def test_colleaguesHidden(self) -> None:
        """
        The addresses of the reply's other recipients, on To, Cc or Bcc or
        given to hide, are kept out of the customer's copy like the agent's.
        """
        for lines, hide in (
            (
                [
                    "Cc: Bob <bob@partner.example>",
                    "Subject: Re: cc bob@partner.example",
                ],
                (),
            ),
            (["Bcc: boss@corp.example", "Subject: Re: for boss@corp.example"], ()),
            (["Subject: Re: ask bob@partner.example"], ("bob@partner.example",)),
        ):
            copy = rewriteReply(reply(*lines), CONTACT, ENTRANCE, hide=hide)
            self.assertEqual(parse(copy)["Subject"], "Re: Frage zur Rechnung", lines)
        message = reply(
            "To: Bob <bob@partner.example>",
            'Content-Type: text/plain; name="bob@partner.example.vcf"',
        )
        copy = rewriteReply(message, CONTACT, ENTRANCE)
        self.assertNotIn(b"bob", headerBlock(copy))

    def test_customerAndEntranceNotHidden(self) -> None:
        """
        A reply sent from the entrance's own address (a shared mailbox), or
        with the customer on Cc, is rewritten as usual: these addresses are
        the ones the copy must show, not the agent's.
        """
        message = reply("Cc: kunde@example.net", sender=ENTRANCE.address)
        copy = rewriteReply(message, CONTACT, ENTRANCE, hide=[ENTRANCE.address])
        parsed = parse(copy)
        self.assertEqual(parsed["From"].addresses[0].addr_spec, ENTRANCE.address)
        self.assertEqual(parsed["To"].addresses[0].addr_spec, "kunde@example.net")

    def test_internationalDomain(self) -> None:
        """
        The agent's address on an internationalised domain is hidden in its
        Unicode form and in its ASCII (punycode) form, whichever the reply
        names it by.
        """
        for sender, written in (
            ("john@xn--bcher-kva.example", "john@b\u00fccher.example"),
            ("john@b\u00fccher.example", "john@xn--bcher-kva.example"),
            ("john@B\u00dcCHER.example", "JOHN@XN--BCHER-KVA.EXAMPLE"),
        ):
            message = reply(f"Subject: Re: write to {written}", sender=sender)
            copy = rewriteReply(message, CONTACT, ENTRANCE)
            self.assertEqual(parse(copy)["Subject"], "Re: Frage zur Rechnung", sender)


class AgentAddressesTests(SynchronousTestCase):
    """
    L{agentAddressesIn} finds the agent's addresses in the sender headers.
    """

    def test_senderHeaders(self) -> None:
        """
        From, Sender, Reply-To and Return-Path count, in lower case, also
        when encoded; To and Cc do not.
        """
        message = (
            b"From: =?utf-8?q?John?= <John.Smith@Corp.Example>\r\n"
            b"Sender: =?utf-8?b?c2VjcmV0YXJ5QGNvcnAuZXhhbXBsZQ==?=\r\n"
            b'Reply-To: "Team" <team@corp.example>\r\n'
            b"Return-Path: <bounce@corp.example>\r\n"
            b"To: someone@example.org\r\nCc: other@example.org\r\n\r\nbody\r\n"
        )
        self.assertEqual(
            agentAddressesIn(message),
            {
                "john.smith@corp.example",
                "secretary@corp.example",
                "team@corp.example",
                "bounce@corp.example",
            },
        )


class HeaderLeaksTests(SynchronousTestCase):
    """
    L{headerLeaks} sees an address in a header in any form.
    """

    def assertLeaks(self, value: str, leaks: bool = True, name: str = "X-Test") -> None:
        message = f"Subject: hi\r\n{name}: {value}\r\n\r\n".encode()
        self.assertEqual(headerLeaks(message, AGENT), leaks, value)

    def test_forms(self) -> None:
        """
        Raw, in any case, in B and Q encoded words of several charsets,
        split over words and folded lines, quoted, escaped, in RFC 2231
        continuations and in full-width letters, the address is seen.
        """
        for value in (
            AGENT,
            AGENT.upper(),
            "=?utf-8?B?Sm9obi5TbWl0aEBjb3JwLmV4YW1wbGU=?=",
            "=?iso-8859-1?Q?john=2Esmith=40corp=2Eexample?=",
            "=?utf-16?b?//5qAG8AaABuAC4AcwBtAGkAdABoAEAAYwBvAHIAcAAuAGUAeABhAG0AcABsAGUA?=",
            "=?utf-8?q?john.sm?=\r\n =?koi8-r?q?ith=40corp.example?=",
            '"john.smith"@corp.example',
            "john.smith=40corp.example",
            "john.smith%40corp.example",
            "john.smith&#64;corp.example",
            "ｊｏｈｎ.smith＠corp.example",
        ):
            self.assertLeaks(value)
        self.assertLeaks(
            'text/plain; name*0="john.smi"; name*1="th@corp.example"',
            name="Content-Type",
        )

    def test_invisibleCharacters(self) -> None:
        """
        Characters that a mail reader does not show (zero-width space, soft
        hyphen, direction marks, word joiner) do not hide the address, nor
        do the ideographic full stops that IDNA reads as dots.
        """
        for value in (
            "john.smith\u200b@corp.example",
            "john.sm\u00adith@corp.example",
            "john.smith\u200e@\u200fcorp.example",
            "jo\u2060hn.smith@corp.example\ufeff",
            "=?utf-8?b?am9obi5zbWl0aOKAi0Bjb3JwLmV4YW1wbGU=?=",
            "john.smith@corp\u3002example",
            "john.smith@corp\uff61example",
        ):
            self.assertLeaks(value)

    def test_utf16UnderOtherNames(self) -> None:
        """
        UTF-16 under the charset names that mail readers built on the WHATWG
        Encoding Standard know and Python does not (C{unicode}, C{ucs-2},
        C{unicodefffe}), in an encoded word or an RFC 2231 parameter of a
        header kept as written, still shows the address.
        """
        for label, codec in (
            ("unicode", "utf-16-le"),
            ("ucs-2", "utf-16-le"),
            ("unicodefffe", "utf-16-be"),
        ):
            data = AGENT.encode(codec)
            word = f"=?{label}?b?{base64.b64encode(data).decode('ascii')}?="
            escaped = "".join(f"%{byte:02X}" for byte in data)
            for value in (
                f'text/plain; name="{word}"',
                f"text/plain; name*={label}''{escaped}",
            ):
                self.assertLeaks(value, name="Content-Type")

    def test_longerLocalPart(self) -> None:
        """
        An address whose local part only ends in the agent's is another
        address; one whose domain only starts with the agent's still counts.
        """
        self.assertLeaks("xjohn.smith@corp.example", leaks=False)
        self.assertLeaks("bob.john.smith@corp.example", leaks=False)
        self.assertLeaks("john.smith@corp.example.org")

    def test_bodyNotCounted(self) -> None:
        """
        Only the header block counts.
        """
        message = f"Subject: hi\r\n\r\n{AGENT}\r\n".encode()
        self.assertFalse(headerLeaks(message, AGENT))

    def test_laterOccurrence(self) -> None:
        """
        An address that first appears as the end of a longer local part and
        then on its own is seen; one that appears only inside longer local
        parts is not.
        """
        self.assertLeaks(f"x{AGENT}, {AGENT}")
        self.assertLeaks(f"x{AGENT}{AGENT}", leaks=False)
        self.assertLeaks(f"x{AGENT}, y{AGENT}", leaks=False)

    def test_addressAtStartOfForm(self) -> None:
        """
        An address at the very start of a form, with nothing before it, is
        seen (every form of a field starts with its name, so only a direct
        search reaches this case).
        """
        secrets = _Secrets({AGENT, "other@corp.example"})
        self.assertTrue(secrets._inForm(AGENT + " wrote"))
        self.assertTrue(secrets._inForm("other@corp.example"))
        self.assertFalse(secrets._inForm("xother@corp.example"))

    @given(pieces=st.lists(_PIECES, max_size=8))
    def test_plainValues(self, pieces: list[str]) -> None:
        """
        In a plain value, the address is seen exactly where the test's own
        oracle sees it: anywhere, in any letter case, unless a character of
        a local part comes right before it, however often it appears.
        """
        value = "".join(pieces)
        self.assertLeaks(value, leaks=showsAddress(value, AGENT))

    def test_fieldKindsKeptApart(self) -> None:
        """
        Whether a value shows the address depends on the field it is in,
        whichever field was read first: RFC 2231 continuations join into
        the address in a Content-Type and not in an unstructured field.
        """
        value = 'text/plain; name*0="john.smi"; name*1="th@corp.example"'
        for first, second in (("X-Test", "Content-Type"), ("Content-Type", "X-Test")):
            self.assertLeaks(value, first == "Content-Type", name=first)
            self.assertLeaks(value, second == "Content-Type", name=second)

    def test_longFields(self) -> None:
        """
        Fields too long to be kept between checks are read in every form
        all the same.
        """
        filler = "word " * 60
        self.assertLeaks(f"{filler}=?utf-8?q?john.smith=40corp.example?=")
        self.assertLeaks(
            f'text/plain; x="{filler}"; name*0="john.smi"; name*1="th@corp.example"',
            name="Content-Type",
        )
        self.assertLeaks(filler + "xjohn.smith@corp.example", leaks=False)


class LastCheckTests(SynchronousTestCase):
    """
    The finished copy is searched once more for the agent, whatever the
    allow-list let through.
    """

    def test_leakRefused(self) -> None:
        """
        If a kept header still named the agent, the copy is refused rather
        than sent.
        """
        from ace_mail import rewrite

        def leakyMimeHeaders(*args: object) -> list[tuple[str, str]]:
            return [("Content-Language", f"en (written by {AGENT})")]

        self.patch(rewrite, "_mimeHeaders", leakyMimeHeaders)
        with self.assertRaises(RewriteError) as caught:
            rewriteReply(reply("Subject: x"), CONTACT, ENTRANCE)
        self.assertIn("agent's address", str(caught.exception))

    def test_everyHiddenAddressChecked(self) -> None:
        """
        The last check looks for every address the copy hides at once: the
        agent's, a colleague's on Cc and one given to hide each make the
        copy refused when a kept header would show it.
        """
        from ace_mail import rewrite

        colleague, hidden = "colleague@corp.example", "js@relay.corp.example"
        for shown in (AGENT, colleague, hidden):

            def leakyMimeHeaders(
                *args: object, shown: str = shown
            ) -> list[tuple[str, str]]:
                return [("Content-Language", f"en (written by {shown})")]

            self.patch(rewrite, "_mimeHeaders", leakyMimeHeaders)
            with self.assertRaises(RewriteError, msg=shown):
                rewriteReply(
                    reply(f"Cc: <{colleague}>"), CONTACT, ENTRANCE, hide=[hidden]
                )


class RepeatedFieldTests(SynchronousTestCase):
    """
    What is learnt of a header field in one reply never decides what the
    next reply may show.
    """

    def test_sameSubjectOtherAgent(self) -> None:
        """
        A subject that names someone is kept in the reply of an agent who
        is someone else, and replaced in the reply of the one it names,
        whichever comes first and however often.
        """
        other = "bob@partner.example"
        subject = f"Subject: Re: ask {other}"
        for sender in (AGENT, other, AGENT, other):
            copy = rewriteReply(reply(subject, sender=sender), CONTACT, ENTRANCE)
            expected = "Re: Frage zur Rechnung" if sender == other else subject[9:]
            self.assertEqual(parse(copy)["Subject"], expected, sender)

    def test_sameFromOtherHide(self) -> None:
        """
        The same From seen again is hidden again, and an address given to
        hide in one reply is not hidden in the next that does not name it.
        """
        colleague = "bob@partner.example"
        message = reply(f"Subject: Re: ask {colleague}")
        for hide, shown in (([colleague], False), ([], True), ([colleague], False)):
            copy = rewriteReply(message, CONTACT, ENTRANCE, hide=hide)
            self.assertFalse(headerLeaks(copy, AGENT))
            self.assertEqual(colleague.encode() in headerBlock(copy), shown, hide)
