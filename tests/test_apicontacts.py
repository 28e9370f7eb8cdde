"""
Tests for L{ace_mail.apicontacts}, over HTTP on an in-memory transport with
a real SQLite contact store.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site

from ace_mail.accounts import AccountStatus
from ace_mail.api import Api
from ace_mail.apicontacts import ContactEndpoints
from ace_mail.intake import DeliverError
from ace_mail.store import Entrance, SQLiteContactStore, isContactId
from tests.test_api import TOKEN, FakeQueue

HOUR = 3600.0


class ContactEndpointTests(SynchronousTestCase):
    """
    C{/v1/contacts}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.store = SQLiteContactStore.open(self.mktemp())
        self.addCleanup(self.store.close)
        contacts = ContactEndpoints(
            self.clock,
            self.store,
            {"default": Entrance("default", "support@example.com", "Support")},
            rerouteName="ace.example.com",
            retentionSeconds=120 * HOUR,
            deliver=self.deliver,
            accounts=lambda: self.statuses,
        )
        self.delivered: list[tuple[str, str]] = []
        self.statuses: list[AccountStatus] = []
        api = Api(
            self.clock,
            FakeQueue(),  # type: ignore[arg-type]
            TOKEN,
            heloName="ace.example",
            messageSizeLimit=4096,
            moreRoutes=contacts.routes(),
        )
        self.site = Site(api.resource(), reactor=self.clock)

    def deliver(self, contactId: str, agent: str) -> Deferred[str]:
        if agent == "nobody@agents.example":
            return fail(DeliverError(f"Contact {contactId} has no stored email."))
        self.delivered.append((contactId, agent))
        return succeed("queued1")

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        payload = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {path} HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        )
        protocol = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(head.encode() + payload)
        response = transport.value()
        status = int(response.split(b" ", 2)[1])
        return status, json.loads(response.partition(b"\r\n\r\n")[2])

    def create(self, **extra: Any) -> dict[str, Any]:
        status, body = self.request(
            "POST", "/v1/contacts", {"customer": "Ann Lee <ann@example.net>", **extra}
        )
        self.assertEqual(status, 201, body)
        return body

    def test_create(self) -> None:
        """
        A new contact gets an unguessable id and the reply address on the
        reroute name, and is open.
        """
        contact = self.create(subject="My order", externalId="ACE-17")
        self.assertTrue(isContactId(contact["id"]))
        self.assertEqual(contact["address"], contact["id"] + "@ace.example.com")
        self.assertEqual(contact["customer"], '"Ann Lee" <ann@example.net>')
        self.assertEqual(contact["entrance"], "default")
        self.assertEqual(contact["subject"], "My order")
        self.assertEqual(contact["externalId"], "ACE-17")
        self.assertEqual(contact["state"], "open")
        self.assertIsNone(contact["ended"])
        self.assertIsNone(contact["expires"])
        self.assertEqual(contact["created"], "2027-01-15T08:00:00Z")

    def test_get(self) -> None:
        """
        A contact can be read back, also in upper case.
        """
        contact = self.create()
        self.assertEqual(
            self.request("GET", f"/v1/contacts/{contact['id']}"), (200, contact)
        )
        upper = contact["id"].upper()
        self.assertEqual(self.request("GET", f"/v1/contacts/{upper}")[0], 200)

    def test_unknown(self) -> None:
        """
        An unknown contact is 404.
        """
        status, body = self.request("GET", "/v1/contacts/" + "a" * 20)
        self.assertEqual(status, 404)
        self.assertEqual(body["error"]["code"], "notFound")

    def test_endAndExpire(self) -> None:
        """
        Ending a contact gives its expiry; after the retention it is gone.
        """
        contact = self.create()
        self.clock.advance(HOUR)
        status, ended = self.request("POST", f"/v1/contacts/{contact['id']}/end")
        self.assertEqual(status, 200)
        self.assertEqual(ended["state"], "ended")
        self.assertEqual(ended["ended"], "2027-01-15T09:00:00Z")
        self.assertEqual(ended["expires"], "2027-01-20T09:00:00Z")
        self.clock.advance(120 * HOUR)
        self.assertEqual(self.request("GET", f"/v1/contacts/{contact['id']}")[0], 200)
        self.clock.advance(1)
        self.assertEqual(self.request("GET", f"/v1/contacts/{contact['id']}")[0], 404)

    def test_badInput(self) -> None:
        """
        Bad fields are refused with 400 naming the field.
        """
        for body, name in (
            ({"customer": "not an address"}, "'customer'"),
            ({"customer": "a@b.example", "entrance": "nope"}, "'entrance'"),
            ({"customer": "a@b.example", "messageId": "x"}, "'messageId'"),
            ({"customer": "a@b.example", "subject": "a\r\nBcc: x@y"}, "'subject'"),
            ({"customer": "a@b.example", "colour": "red"}, "'colour'"),
            ({}, "'customer'"),
        ):
            status, answer = self.request("POST", "/v1/contacts", body)
            self.assertEqual(status, 400, body)
            self.assertIn(name, answer["error"]["message"])

    def test_deliver(self) -> None:
        """
        deliver queues the physical email to the agent and answers 202 with
        its queue id.
        """
        contact = self.create()
        status, body = self.request(
            "POST",
            f"/v1/contacts/{contact['id']}/deliver",
            {"agent": "a@agents.example"},
        )
        self.assertEqual((status, body), (202, {"queueId": "queued1"}))
        self.assertEqual(self.delivered, [(contact["id"], "a@agents.example")])

    def test_deliverRefusals(self) -> None:
        """
        A bad agent address is 400, an unknown contact 404, and a contact
        without a stored email 409 with the reason.
        """
        contact = self.create()
        path = f"/v1/contacts/{contact['id']}/deliver"
        self.assertEqual(self.request("POST", path, {"agent": "nope"})[0], 400)
        self.assertEqual(
            self.request(
                "POST",
                "/v1/contacts/" + "a" * 20 + "/deliver",
                {"agent": "a@b.example"},
            )[0],
            404,
        )
        status, body = self.request("POST", path, {"agent": "nobody@agents.example"})
        self.assertEqual(status, 409)
        self.assertIn("no stored email", body["error"]["message"])
        self.assertEqual(self.delivered, [])

    def test_accounts(self) -> None:
        """
        The accounts endpoint shows each POP3 account's status.
        """
        self.statuses = [
            AccountStatus(
                account="acme-pop",
                lastPoll=1_800_000_000.0,
                lastResult="ok",
                messagesTaken=7,
                errors=1,
            )
        ]
        status, body = self.request("GET", "/v1/accounts")
        self.assertEqual(status, 200)
        [account] = body["accounts"]
        self.assertEqual(account["name"], "acme-pop")
        self.assertEqual(account["lastPoll"], "2027-01-15T08:00:00Z")
        self.assertEqual((account["messagesTaken"], account["errors"]), (7, 1))
        self.assertEqual(account["lastResult"], "ok")

    def test_list(self) -> None:
        """
        Contacts are listed oldest first, filtered by state, with a cursor
        that continues the list.
        """
        made = []
        for number in range(3):
            made.append(self.create(subject=f"s{number}")["id"])
            self.clock.advance(1)
        self.request("POST", f"/v1/contacts/{made[0]}/end")
        status, page = self.request("GET", "/v1/contacts?limit=2")
        self.assertEqual(status, 200)
        self.assertEqual([c["id"] for c in page["contacts"]], made[:2])
        status, rest = self.request(
            "GET", f"/v1/contacts?limit=2&cursor={page['cursor']}"
        )
        self.assertEqual([c["id"] for c in rest["contacts"]], made[2:])
        self.assertIsNone(rest["cursor"])
        status, opened = self.request("GET", "/v1/contacts?state=open")
        self.assertEqual([c["id"] for c in opened["contacts"]], made[1:])
        status, since = self.request("GET", "/v1/contacts?since=2027-01-15T08:00:02Z")
        self.assertEqual([c["id"] for c in since["contacts"]], made[2:])

    def test_listRefusals(self) -> None:
        """
        Bad parameters get 400 naming the parameter.
        """
        for query, name in (
            ("state=closed", "'state'"),
            ("limit=0", "'limit'"),
            ("since=yesterday", "'since'"),
            ("cursor=!!", "'cursor'"),
            ("colour=red", "'colour'"),
        ):
            status, body = self.request("GET", f"/v1/contacts?{query}")
            self.assertEqual(status, 400, query)
            self.assertIn(name, body["error"]["message"])
