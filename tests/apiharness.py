"""
The contact endpoints of the API, on an in-memory HTTP transport with a
real SQLite contact store, for the tests of the contact, reply and OpenAPI
endpoints.
"""

from __future__ import annotations

import hashlib
import json
import os
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from attrs import frozen
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IProtocol, IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site

from ace_mail.accounts import AccountStatus
from ace_mail.api import Api, LimitedRequest
from ace_mail.apicontacts import ContactEndpoints
from ace_mail.intake import DeliverError
from ace_mail.store import (
    Arrival,
    Entrance,
    Plan,
    SQLiteContactStore,
    newContactId,
)
from tests.test_api import TOKEN, FakeQueue

HOUR = 3600.0
LIMIT = 4096
ORIGINAL = (
    b"From: Ann Lee <ann@customer.example>\r\nTo: support@example.com\r\n"
    b"Subject: Broken kettle\r\nMessage-ID: <m1@customer.example>\r\n"
    b"References: <r0@customer.example>\r\n\r\nIt does not boil.\r\n"
)


@frozen
class Response:
    """
    An HTTP response as a test reads it.
    """

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class PausingTransport(StringTransport):
    """
    A transport whose send buffer is full at 64 KiB, like a socket's, until
    the test takes what was sent.
    """

    full = False
    protocol: IProtocol | None = None

    def write(self, data: bytes) -> None:
        super().write(data)
        if len(self.io.getvalue()) >= 65536 and not self.full:
            self.full = True
            self.producer.pauseProducing()

    def drain(self) -> bytes:
        sent = self.value()
        self.clear()
        self.full = False
        producer: IPushProducer = self.producer
        producer.resumeProducing()
        return sent


def send(
    site: Site,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = TOKEN,
    raw: bytes | None = None,
    transport: StringTransport | None = None,
    contentType: str | None = None,
) -> Response:
    """
    Send one HTTP/1.0 request to C{site} and read its response.

    @param body: Sent as JSON unless L{None}.
    @param raw: Sent as the body as it is, instead of C{body}.
    @param contentType: The request's Content-Type, if any.
    """
    payload = raw if raw is not None else b""
    if body is not None:
        payload = json.dumps(body).encode()
    head = [f"{method} {path} HTTP/1.0", f"Content-Length: {len(payload)}"]
    if token is not None:
        head.append(f"Authorization: Bearer {token}")
    if contentType is not None:
        head.append(f"Content-Type: {contentType}")
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    transport = transport if transport is not None else StringTransport()
    protocol.makeConnection(transport)
    if isinstance(transport, PausingTransport):
        transport.protocol = protocol
    protocol.dataReceived(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
    return parseResponse(transport.value())


def parseResponse(response: bytes) -> Response:
    """
    @return: The status, the headers (by lower-case name) and the body of
        an HTTP/1.0 response.
    """
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Response(int(lines[0].split(" ", 2)[1]), headers, body)


def parse(message: bytes) -> EmailMessage:
    parsed = BytesParser(policy=policy.default).parsebytes(message)
    assert isinstance(parsed, EmailMessage)
    return parsed


class ContactApiCase(SynchronousTestCase):
    """
    The contact endpoints with two entrances: C{default} leaves on the
    route C{outgoing}, and C{shop}, which has servers of its own, on
    C{entrance/shop}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.store = SQLiteContactStore.open(self.mktemp())
        self.addCleanup(self.store.close)
        os.makedirs(self.store.originalsDirectory, exist_ok=True)
        self.queue = FakeQueue()
        self.delivered: list[tuple[str, str]] = []
        self.statuses: list[AccountStatus] = []
        self.contacts = ContactEndpoints(
            self.clock,
            self.store,
            {
                "default": Entrance("default", "support@example.com", "Support"),
                "shop": Entrance("shop", "sales@shop.example", "Shop Sales"),
            },
            entranceRoutes={"default": "outgoing", "shop": "entrance/shop"},
            rerouteName="ace.example.com",
            retentionSeconds=120 * HOUR,
            messageSizeLimit=LIMIT,
            enqueue=self.queue.enqueue,
            deliver=self.deliver,
            accounts=lambda: self.statuses,
        )
        self.api = Api(
            self.clock,
            self.queue,  # type: ignore[arg-type]
            TOKEN,
            heloName="ace.example",
            messageSizeLimit=LIMIT,
            moreRoutes=self.contacts.routes(),
        )
        self.site = Site(self.api.resource(), reactor=self.clock)
        self.site.requestFactory = LimitedRequest.withLimit(2 * LIMIT + 65536)

    def deliver(self, contactId: str, agent: str) -> Deferred[str]:
        if agent == "nobody@agents.example":
            return fail(DeliverError(f"Contact {contactId} has no stored email."))
        self.delivered.append((contactId, agent))
        return succeed("queuedagent")

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        response = send(self.site, method, path, body)
        return response.status, response.json()

    def create(self, **extra: Any) -> dict[str, Any]:
        status, body = self.request(
            "POST", "/v1/contacts", {"customer": "Ann Lee <ann@example.net>", **extra}
        )
        self.assertEqual(status, 201, body)
        return body

    def arrive(
        self,
        original: bytes = ORIGINAL,
        entrance: str = "default",
        threadIds: tuple[str, ...] = (),
        uidl: str = "u1",
    ) -> tuple[str, str]:
        """
        Take a customer's email into the store as intake does.

        @return: The outcome and the contact id.
        """
        digest = hashlib.sha256(original).hexdigest()
        name = f"pop-{uidl}-{digest}"
        with open(os.path.join(self.store.originalsDirectory, name), "wb") as f:
            f.write(original)
        now = self.clock.seconds()
        arrival = Arrival(
            account="pop",
            uidl=uidl,
            digest=digest,
            messageId=f"<{uidl}@customer.example>",
            original=name,
            entrance=entrance,
            customerAddress="ann@customer.example",
            customerName="Ann Lee",
            subject="Broken kettle",
            references=("<r0@customer.example>",),
            threadIds=threadIds,
            tag=None,
            newContactId=newContactId(),
            received=now,
        )
        plan = Plan(None, 3, 86400.0, None, None, now - 120 * HOUR)
        taken = self.successResultOf(self.store.recordArrival(arrival, plan))
        assert taken.contactId is not None
        return taken.outcome, taken.contactId
