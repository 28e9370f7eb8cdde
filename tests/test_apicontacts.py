"""
Tests for L{ace_mail.apicontacts}, over HTTP on an in-memory transport with
a real SQLite contact store.
"""

from __future__ import annotations

import os

from twisted.python.failure import Failure

from ace_mail.accounts import AccountStatus
from ace_mail.store import (
    isContactId,
)
from tests.apiharness import (
    HOUR,
    LIMIT,
    ORIGINAL,
    ContactApiCase,
    PausingTransport,
    parseResponse,
    send,
)


class ContactEndpointTests(ContactApiCase):
    """
    C{/v1/contacts}: making, reading, listing, ending and delivering.
    """

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

    def test_endTakesNoFields(self) -> None:
        """
        Ending takes no body, or an empty object; any field is refused.
        """
        contact = self.create()
        path = f"/v1/contacts/{contact['id']}/end"
        status, body = self.request("POST", path, {"colour": "red"})
        self.assertEqual(status, 400)
        self.assertIn("'colour'", body["error"]["message"])
        self.assertEqual(
            self.request("GET", f"/v1/contacts/{contact['id']}")[1], contact
        )
        self.assertEqual(self.request("POST", path, {})[0], 200)

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
            ({"customer": 7}, "'customer'"),
            ({}, "'customer'"),
        ):
            status, answer = self.request("POST", "/v1/contacts", body)
            self.assertEqual(status, 400, body)
            self.assertIn(name, answer["error"]["message"])

    def test_customerThatCrashesTheParser(self) -> None:
        """
        A customer that the standard library's address parser raises on,
        rather than noting a defect, gets 400 naming the field, not 500.
        """
        status, body = self.request(
            "POST", "/v1/contacts", {"customer": "b:)a@a;;:b\\>"}
        )
        self.assertEqual(status, 400, body)
        self.assertIn("'customer'", body["error"]["message"])

    def test_fieldsTooLarge(self) -> None:
        """
        A field longer than its limit, or one that is not text (a lone
        surrogate), is refused with 400 naming it.
        """
        for extra, name in (
            ({"subject": "s" * 999}, "'subject'"),
            ({"subject": "\ud800"}, "'subject'"),
            ({"externalId": "e" * 201}, "'externalId'"),
            ({"externalId": ""}, "'externalId'"),
            ({"messageId": "<" + "m" * 1000 + "@x.example>"}, "'messageId'"),
            ({"customer": "A" * 1000 + " <a@b.example>"}, "'customer'"),
            ({"customer": "\udfff <a@b.example>"}, "'customer'"),
        ):
            body = {"customer": "a@b.example", **extra}
            status, answer = self.request("POST", "/v1/contacts", body)
            self.assertEqual(status, 400, extra)
            self.assertIn(name, answer["error"]["message"])
        self.assertEqual(self.request("GET", "/v1/contacts")[1]["contacts"], [])

    def test_malformedBodies(self) -> None:
        """
        A body that is not JSON, is nested too deep to read, or is not an
        object gets 400, on every endpoint that takes one.
        """
        contact = self.create()
        for path in (
            "/v1/contacts",
            f"/v1/contacts/{contact['id']}/end",
            f"/v1/contacts/{contact['id']}/deliver",
            f"/v1/contacts/{contact['id']}/reply",
        ):
            for raw, code in (
                (b"{nope", "badJson"),
                (b"\xff\xfe", "badJson"),
                (b"[" * 50_000, "badJson"),
                (b"[1, 2]", "badRequest"),
                (b'"text"', "badRequest"),
            ):
                response = send(self.site, "POST", path, raw=raw)
                self.assertEqual(response.status, 400, (path, raw[:10]))
                self.assertEqual(response.json()["error"]["code"], code)
        self.assertEqual(self.queue.accepted, [])

    def test_requestTooLarge(self) -> None:
        """
        A request body over the API's limit is 413 and is never read.
        """
        contact = self.create()
        body = {"text": "x" * (3 * LIMIT + 65536)}
        response = send(self.site, "POST", f"/v1/contacts/{contact['id']}/reply", body)
        self.assertEqual(response.status, 413)
        self.assertEqual(response.json()["error"]["code"], "tooLarge")

    def test_unknownParameters(self) -> None:
        """
        The endpoints that take no query parameters refuse any, naming it.
        """
        contact = self.create()
        for path in (
            f"/v1/contacts/{contact['id']}?colour=red",
            f"/v1/contacts/{contact['id']}/message?colour=red",
            "/v1/accounts?colour=red",
        ):
            status, body = self.request("GET", path)
            self.assertEqual(status, 400, path)
            self.assertIn("'colour'", body["error"]["message"])

    def test_tokenRequired(self) -> None:
        """
        Every contact endpoint answers 401 with a Bearer challenge to a
        request without the token or with a wrong one, and does nothing.
        """
        contact = self.create()
        one = f"/v1/contacts/{contact['id']}"
        for method, path, body in (
            ("POST", "/v1/contacts", {"customer": "a@b.example"}),
            ("GET", "/v1/contacts", None),
            ("GET", one, None),
            ("POST", f"{one}/end", None),
            ("POST", f"{one}/deliver", {"agent": "a@agents.example"}),
            ("POST", f"{one}/reply", {"text": "Hello"}),
            ("GET", f"{one}/message", None),
            ("GET", "/v1/accounts", None),
        ):
            for token in (None, "wrong"):
                response = send(self.site, method, path, body, token=token)
                self.assertEqual(response.status, 401, (method, path))
                self.assertEqual(
                    response.headers["www-authenticate"], 'Bearer realm="ace-mail"'
                )
                self.assertEqual(response.json()["error"]["code"], "unauthorized")
        self.assertEqual(self.queue.accepted, [])
        self.assertEqual(self.delivered, [])
        self.assertEqual(self.request("GET", one)[1]["state"], "open")

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
        self.assertEqual((status, body), (202, {"queueId": "queuedagent"}))
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
            ("limit=%C2%B2", "'limit'"),
            ("since=yesterday", "'since'"),
            ("since=2027-01-15T08:00:02", "'since'"),
            ("cursor=!!", "'cursor'"),
            ("colour=red", "'colour'"),
        ):
            status, body = self.request("GET", f"/v1/contacts?{query}")
            self.assertEqual(status, 400, query)
            self.assertIn(name, body["error"]["message"])


class MessageEndpointTests(ContactApiCase):
    """
    C{GET /v1/contacts/{id}/message}: the stored original.
    """

    def test_message(self) -> None:
        """
        The stored original comes back byte for byte as message/rfc822 with
        its length.
        """
        _, contactId = self.arrive()
        response = send(self.site, "GET", f"/v1/contacts/{contactId}/message")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers["content-type"], "message/rfc822")
        self.assertEqual(response.headers["content-length"], str(len(ORIGINAL)))
        self.assertEqual(response.body, ORIGINAL)

    def test_largeMessageStreamed(self) -> None:
        """
        A large original is sent a piece at a time: while the connection's
        send buffer is full no more is read, and it goes on when the buffer
        empties, until all of it is sent.
        """
        original = ORIGINAL + b"".join(b"%07d\r\n" % n for n in range(200_000))
        _, contactId = self.arrive(original)
        transport = PausingTransport()
        send(self.site, "GET", f"/v1/contacts/{contactId}/message", transport=transport)
        received = transport.drain()
        self.assertLess(len(received), 200_000)
        for _ in range(100):
            if transport.disconnecting:
                break
            received += transport.drain()
        received += transport.value()
        response = parseResponse(received)
        self.assertEqual(response.headers["content-length"], str(len(original)))
        self.assertEqual(response.body, original)

    def test_clientGoneClosesFile(self) -> None:
        """
        When the client goes away in the middle, the original's file is
        closed.
        """
        original = ORIGINAL + b"x" * 1_000_000
        _, contactId = self.arrive(original)
        transport = PausingTransport()
        send(self.site, "GET", f"/v1/contacts/{contactId}/message", transport=transport)
        self.assertIn(self.originalName(contactId), self.openFiles())
        assert transport.protocol is not None
        transport.protocol.connectionLost(Failure(ConnectionError("gone")))
        self.assertNotIn(self.originalName(contactId), self.openFiles())

    def originalName(self, contactId: str) -> str:
        name = self.successResultOf(self.store.originalOf(contactId))
        assert name is not None
        return os.path.join(os.path.realpath(self.store.originalsDirectory), name)

    def openFiles(self) -> set[str]:
        """
        @return: The paths of the files this process has open.
        """
        paths = set()
        for fd in os.listdir("/proc/self/fd"):
            try:
                paths.add(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:
                pass
        return paths

    def test_noOriginal(self) -> None:
        """
        A contact made through the API has no stored email: 404, as for an
        unknown contact, an expired one, and one whose file is gone.
        """
        contact = self.create()
        _, gone = self.arrive()
        os.unlink(self.originalName(gone))
        _, expired = self.arrive(uidl="u2")
        self.request("POST", f"/v1/contacts/{expired}/end")
        self.clock.advance(120 * HOUR + 1)
        for contactId, says in (
            (contact["id"], "no stored email"),
            ("a" * 20, "no contact"),
            (expired, "no contact"),
            (gone, "no stored email"),
        ):
            status, body = self.request("GET", f"/v1/contacts/{contactId}/message")
            self.assertEqual(status, 404, contactId)
            self.assertIn(says, body["error"]["message"])
