"""
Tests for the typed replies of L{ace_mail.apicontacts}: C{POST
/v1/contacts/{id}/reply}, over HTTP with a real SQLite contact store.
"""

from __future__ import annotations

import base64
from typing import Any

from ace_mail.store import (
    CREATED,
    THREADED,
)
from tests.apiharness import HOUR, LIMIT, ORIGINAL, ContactApiCase, parse


def attachment(name: str, contentType: str, content: bytes) -> dict[str, str]:
    return {
        "filename": name,
        "contentType": contentType,
        "contentBase64": base64.b64encode(content).decode("ascii"),
    }


class ReplyEndpointTests(ContactApiCase):
    """
    C{POST /v1/contacts/{id}/reply}: typed replies to the customer.
    """

    def reply(self, contactId: str, body: dict[str, Any]) -> tuple[int, Any]:
        return self.request("POST", f"/v1/contacts/{contactId}/reply", body)

    def test_reply(self) -> None:
        """
        A reply is queued from the entrance to the customer on the route
        C{outgoing}, and the answer is 202 with its queue id.  It is from
        the entrance, threaded under the customer's email, with a new
        Message-ID on the entrance's domain and the reactor's time.
        """
        _, contactId = self.arrive()
        status, body = self.reply(contactId, {"text": "It is fixed."})
        self.assertEqual((status, body), (202, {"queueId": "q1"}))
        [accepted] = self.queue.accepted
        self.assertEqual(accepted.envelope.sender, "support@example.com")
        self.assertEqual(accepted.envelope.recipients, ("ann@customer.example",))
        self.assertEqual(accepted.envelope.route, "outgoing")
        message = parse(accepted.message)
        self.assertEqual(message["From"], "Support <support@example.com>")
        self.assertEqual(message["Reply-To"], "Support <support@example.com>")
        self.assertEqual(message["To"], "Ann Lee <ann@customer.example>")
        self.assertEqual(message["Subject"], "Re: Broken kettle")
        self.assertEqual(message["In-Reply-To"], "<u1@customer.example>")
        self.assertEqual(
            message["References"].split(),
            ["<r0@customer.example>", "<u1@customer.example>"],
        )
        self.assertTrue(message["Message-ID"].endswith("@example.com>"))
        self.assertEqual(message["Date"].datetime.timestamp(), 1_800_000_000)
        self.assertEqual(message.get_content(), "It is fixed.\r\n")

    def test_customerAnswerThreaded(self) -> None:
        """
        The reply's Message-ID is kept for the contact, so that the
        customer's answer to it joins the contact.
        """
        _, contactId = self.arrive()
        self.reply(contactId, {"text": "Which model?"})
        messageId = parse(self.queue.accepted[0].message)["Message-ID"]
        outcome, joined = self.arrive(
            ORIGINAL + b"\r\nThe red one.\r\n", threadIds=(messageId,), uidl="u2"
        )
        self.assertEqual((outcome, joined), (THREADED, contactId))

    def test_eachReplyHasItsOwnMessageId(self) -> None:
        """
        Two replies to one contact have two Message-IDs.
        """
        contact = self.create()
        self.reply(contact["id"], {"text": "One"})
        self.reply(contact["id"], {"text": "Two"})
        ids = {parse(a.message)["Message-ID"] for a in self.queue.accepted}
        self.assertEqual(len(ids), 2)

    def test_entranceRoute(self) -> None:
        """
        A contact of an entrance with servers of its own is answered from
        that entrance, on its route.
        """
        outcome, contactId = self.arrive(entrance="shop")
        self.assertEqual(outcome, CREATED)
        self.assertEqual(self.reply(contactId, {"text": "Hi"})[0], 202)
        [accepted] = self.queue.accepted
        self.assertEqual(accepted.envelope.route, "entrance/shop")
        self.assertEqual(accepted.envelope.sender, "sales@shop.example")
        message = parse(accepted.message)
        self.assertEqual(message["From"], "Shop Sales <sales@shop.example>")
        self.assertTrue(message["Message-ID"].endswith("@shop.example>"))

    def test_htmlAndAttachments(self) -> None:
        """
        Text, HTML and attachments make a multipart/mixed whose first part
        is the alternative of text and HTML, and whose files decode to what
        was sent, under sanitised names.
        """
        contact = self.create(subject="Invoice")
        pdf = bytes(range(256)) * 4
        status, _ = self.reply(
            contact["id"],
            {
                "text": "Attached.",
                "html": "<p>Attached.</p>",
                "subject": "Your invoice",
                "attachments": [
                    attachment("../../invoice.pdf", "application/pdf", pdf),
                    attachment("note\r\n.txt", "Text/Plain", b"Gr\xc3\xbc\xc3\x9fe"),
                ],
            },
        )
        self.assertEqual(status, 202)
        message = parse(self.queue.accepted[0].message)
        self.assertEqual(message["Subject"], "Your invoice")
        self.assertEqual(message.get_content_type(), "multipart/mixed")
        alternative, first, second = message.iter_parts()
        plain, html = alternative.iter_parts()
        self.assertEqual(plain.get_content(), "Attached.\r\n")
        self.assertEqual(html.get_content_type(), "text/html")
        self.assertEqual(first.get_filename(), "invoice.pdf")
        self.assertEqual(first.get_content_type(), "application/pdf")
        self.assertEqual(first.get_content(), pdf)
        self.assertEqual(second.get_filename(), "note .txt")
        self.assertEqual(second.get_payload(decode=True), b"Gr\xc3\xbc\xc3\x9fe")

    def test_refusals(self) -> None:
        """
        A bad reply is refused with 400 naming the field, and nothing is
        queued.
        """
        good = attachment("a.pdf", "application/pdf", b"%PDF")
        for body, name in (
            ({}, "'text'"),
            ({"text": 1}, "'text'"),
            ({"text": "x", "colour": 1}, "'colour'"),
            ({"text": "x", "subject": "a\nb"}, "'subject'"),
            ({"text": "x", "subject": "s" * 999}, "'subject'"),
            ({"text": "x" * (LIMIT + 1)}, "'text'"),
            ({"text": "x", "html": "\ud800"}, "'html'"),
            ({"text": "x", "attachments": "a.pdf"}, "'attachments'"),
            ({"text": "x", "attachments": [good] * 101}, "'attachments'"),
            ({"text": "x", "attachments": [1]}, "'attachments[0]'"),
            (
                {"text": "x", "attachments": [good, {**good, "colour": 1}]},
                "'attachments[1].colour'",
            ),
            (
                {"text": "x", "attachments": [{**good, "contentBase64": "!!"}]},
                "'attachments[0].contentBase64'",
            ),
            (
                {"text": "x", "attachments": [{**good, "contentBase64": "é"}]},
                "'attachments[0].contentBase64'",
            ),
            (
                {"text": "x", "attachments": [{**good, "contentType": "pdf"}]},
                "'attachments[0].contentType'",
            ),
            (
                {"text": "x", "attachments": [{**good, "contentType": "multipart/x"}]},
                "'attachments[0].contentType'",
            ),
            (
                {"text": "x", "attachments": [{**good, "filename": " "}]},
                "'attachments[0].filename'",
            ),
            (
                {"text": "x", "attachments": [{"contentType": "a/b"}]},
                "'attachments[0].filename'",
            ),
            (
                {
                    "text": "x" * 2000,
                    "attachments": [attachment("a", "a/b", b"x" * 3000)],
                },
                "'attachments'",
            ),
        ):
            contact = self.create()
            status, answer = self.reply(contact["id"], body)
            self.assertEqual(status, 400, name)
            self.assertIn(name, answer["error"]["message"])
        self.assertEqual(self.queue.accepted, [])

    def test_tooLargeOnceEncoded(self) -> None:
        """
        A reply under the limit as typed but over it as an email is refused
        with 400, and nothing is queued.
        """
        contact = self.create()
        status, body = self.reply(contact["id"], {"text": "é" * 1800})
        self.assertEqual(status, 400)
        self.assertEqual(body["error"]["code"], "tooLarge")
        self.assertIn("the reply would be", body["error"]["message"])
        self.assertEqual(self.queue.accepted, [])

    def test_unknownOrExpired(self) -> None:
        """
        An unknown contact and an expired one are 404; a contact inside its
        retention is still answered.
        """
        contact = self.create()
        self.request("POST", f"/v1/contacts/{contact['id']}/end")
        self.clock.advance(120 * HOUR)
        self.assertEqual(self.reply(contact["id"], {"text": "x"})[0], 202)
        self.clock.advance(1)
        for contactId in (contact["id"], "b" * 20):
            status, body = self.reply(contactId, {"text": "x"})
            self.assertEqual(status, 404)
            self.assertEqual(body["error"]["code"], "notFound")
        self.assertEqual(len(self.queue.accepted), 1)

    def test_entranceGone(self) -> None:
        """
        A contact whose entrance is no longer configured cannot be answered:
        409 naming it.
        """
        made = self.store.create(
            entrance="closed",
            customerAddress="ann@customer.example",
            customerName="",
            subject="",
            messageId=None,
            references=(),
            externalId=None,
            now=self.clock.seconds(),
        )
        contact = self.successResultOf(made)
        status, body = self.reply(contact.id, {"text": "x"})
        self.assertEqual(status, 409)
        self.assertIn("'closed'", body["error"]["message"])
        self.assertEqual(self.queue.accepted, [])

    def test_queueFailure(self) -> None:
        """
        When the queue cannot store the reply the answer is 503: not
        accepted.
        """
        contact = self.create()
        self.queue.error = OSError("disk full")
        status, body = self.reply(contact["id"], {"text": "x"})
        self.assertEqual(status, 503)
        self.assertEqual(body["error"]["code"], "storageUnavailable")
