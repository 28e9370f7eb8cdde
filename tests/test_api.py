"""
Tests for L{ace_mail.api}, spoken to over HTTP on an in-memory transport.
"""

from __future__ import annotations

import json
from typing import Any

from attrs import frozen
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site

from ace_mail.api import Api, LimitedRequest
from ace_mail.envelope import Envelope
from ace_mail.queue import QueueEntry
from ace_mail.spool import SpoolClosed

TOKEN = "t0ken"
MESSAGE = "From: a@example.com\nTo: b@example.net\nSubject: hi\n\nHello.\n"


@frozen
class _Accepted:
    envelope: Envelope
    message: bytes


class FakeQueue:
    """
    A queue that records what it accepts and answers when told to.
    """

    def __init__(self) -> None:
        self.accepted: list[_Accepted] = []
        self.pending: list[Deferred[str]] = []
        self.entries: dict[str, QueueEntry] = {}
        self.error: Exception | None = None
        self.hold = False

    def enqueue(self, envelope: Envelope, message: bytes) -> Deferred[str]:
        if self.error is not None:
            return fail(self.error)
        self.accepted.append(_Accepted(envelope, message))
        if self.hold:
            d: Deferred[str] = Deferred()
            self.pending.append(d)
            return d
        return succeed(f"q{len(self.accepted)}")

    def list(self) -> list[QueueEntry]:
        return list(self.entries.values())

    def get(self, queueId: str) -> QueueEntry | None:
        return self.entries.get(queueId)


class ApiTests(SynchronousTestCase):
    """
    The endpoints of the first API version.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.queue = FakeQueue()
        api = Api(
            self.clock,
            self.queue,  # type: ignore[arg-type]
            TOKEN,
            heloName="ace.example",
            messageSizeLimit=4096,
        )
        self.site = Site(api.resource(), reactor=self.clock)
        self.site.requestFactory = LimitedRequest.withLimit(16384)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = TOKEN,
        raw: bytes | None = None,
    ) -> tuple[int, Any, StringTransport]:
        payload = raw if raw is not None else b""
        if body is not None:
            payload = json.dumps(body).encode()
        headers = [f"{method} {path} HTTP/1.1", "Host: localhost"]
        if token is not None:
            headers.append(f"Authorization: Bearer {token}")
        headers.append(f"Content-Length: {len(payload)}")
        protocol = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1234))
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(("\r\n".join(headers) + "\r\n\r\n").encode() + payload)
        return self.parse(transport) + (transport,)

    def parse(self, transport: StringTransport) -> tuple[int, Any]:
        response = transport.value()
        if not response:
            return 0, None
        head, _, body = response.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if b"Transfer-Encoding: chunked" in head:
            chunks = b""
            while body:
                size, _, rest = body.partition(b"\r\n")
                length = int(size, 16)
                chunks += rest[:length]
                body = rest[length + 2 :]
                if length == 0:
                    break
            body = chunks
        return status, json.loads(body)

    def test_missingToken(self) -> None:
        """
        A request without a token gets 401 with a JSON error.
        """
        status, body, _ = self.request("GET", "/v1/queue", token=None)
        self.assertEqual(status, 401)
        self.assertEqual(body["error"]["code"], "unauthorized")

    def test_wrongToken(self) -> None:
        """
        A request with a wrong token gets 401 and queues nothing.
        """
        status, _, _ = self.request(
            "POST",
            "/v1/outgoing",
            {"from": "a@example.com", "to": ["b@example.net"], "message": MESSAGE},
            token="guess",
        )
        self.assertEqual(status, 401)
        self.assertEqual(self.queue.accepted, [])

    def test_postOutgoing(self) -> None:
        """
        A good submission is queued on the route C{outgoing} and answered
        202 with its queue id.
        """
        status, body, _ = self.request(
            "POST",
            "/v1/outgoing",
            {"from": "a@example.com", "to": ["b@example.net"], "message": MESSAGE},
        )
        self.assertEqual((status, body), (202, {"queueId": "q1"}))
        [accepted] = self.queue.accepted
        self.assertEqual(
            accepted.envelope, Envelope("a@example.com", ("b@example.net",), "outgoing")
        )
        self.assertIn(b"\r\nSubject: hi\r\n\r\nHello.\r\n", accepted.message)
        self.assertNotIn(b"\n", accepted.message.replace(b"\r\n", b""))

    def test_answerWaitsForTheQueue(self) -> None:
        """
        The 202 is not written before the queue says the message is stored.
        """
        self.queue.hold = True
        status, _, transport = self.request(
            "POST",
            "/v1/outgoing",
            {"from": "a@example.com", "to": ["b@example.net"], "message": MESSAGE},
        )
        self.assertEqual(status, 0)
        self.queue.pending[0].callback("q1")
        self.assertEqual(self.parse(transport), (202, {"queueId": "q1"}))

    def test_storageFailure(self) -> None:
        """
        When the queue cannot store the message the caller gets 503 and
        knows it was not accepted.
        """
        self.queue.error = OSError(28, "No space left on device")
        status, body, _ = self.request(
            "POST",
            "/v1/outgoing",
            {"from": "a@example.com", "to": ["b@example.net"], "message": MESSAGE},
        )
        self.assertEqual(status, 503)
        self.assertIn("not accepted", body["error"]["message"])

    def test_spoolClosedWhileStopping(self) -> None:
        """
        A message that comes while ace-mail stops, when the spool is closed,
        gets 503 and is known not to be accepted, and no traceback is
        logged.
        """
        self.queue.error = SpoolClosed("the spool is closed")
        status, body, _ = self.request(
            "POST",
            "/v1/outgoing",
            {"from": "a@example.com", "to": ["b@example.net"], "message": MESSAGE},
        )
        self.assertEqual((status, body["error"]["code"]), (503, "storageUnavailable"))
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_dateAndMessageIdAdded(self) -> None:
        """
        A message without Date and Message-ID gets both, as a submission
        server adds them.
        """
        self.request(
            "POST",
            "/v1/outgoing",
            {"from": "a@example.com", "to": ["b@example.net"], "message": MESSAGE},
        )
        message = self.queue.accepted[0].message
        self.assertTrue(message.startswith(b"Date: "))
        self.assertIn(b"@ace.example>\r\n", message)

    def test_existingHeadersKept(self) -> None:
        """
        A message that has a Date and a Message-ID keeps them and gets no
        second one.
        """
        text = "Date: Thu, 3 Dec 2026 10:00:00 +0000\nMessage-ID: <x@y>\n" + MESSAGE
        self.request(
            "POST",
            "/v1/outgoing",
            {"from": "a@example.com", "to": ["b@example.net"], "message": text},
        )
        message = self.queue.accepted[0].message
        self.assertEqual(message.lower().count(b"message-id:"), 1)
        self.assertEqual(
            message.lower().count(b"\r\ndate:") + message.startswith(b"Date:"), 1
        )

    def assertBadRequest(
        self, body: Any, fragment: str, raw: bytes | None = None
    ) -> None:
        status, answer, _ = self.request("POST", "/v1/outgoing", body, raw=raw)
        self.assertEqual(status, 400, answer)
        self.assertIn(fragment, answer["error"]["message"])
        self.assertEqual(self.queue.accepted, [])

    def test_badJson(self) -> None:
        """
        A body that is not JSON gets 400.
        """
        self.assertBadRequest(None, "not valid JSON", raw=b"{from:")

    def test_unknownField(self) -> None:
        """
        An unknown field is named.
        """
        self.assertBadRequest(
            {"from": "a@example.com", "to": ["b@x.net"], "message": MESSAGE, "cc": []},
            "'cc'",
        )

    def test_missingField(self) -> None:
        """
        A missing field is named.
        """
        self.assertBadRequest({"from": "a@example.com", "message": MESSAGE}, "'to'")

    def test_badAddresses(self) -> None:
        """
        Addresses with control characters, display names or no domain are
        refused and named.
        """
        for bad in ("b@x.net\r\nRCPT TO:<c@y>", "Bob <b@x.net>", "b", "b@x@y", ""):
            self.assertBadRequest(
                {"from": "a@example.com", "to": [bad], "message": MESSAGE}, "'to'"
            )
        self.assertBadRequest(
            {"from": "a@example.com\x00", "to": ["b@x.net"], "message": MESSAGE},
            "'from'",
        )

    def test_noRecipients(self) -> None:
        """
        A submission with no recipients is refused.
        """
        self.assertBadRequest(
            {"from": "a@example.com", "to": [], "message": MESSAGE}, "'to'"
        )

    def test_notAMessage(self) -> None:
        """
        Text that does not start with a header field is refused.
        """
        self.assertBadRequest(
            {"from": "a@example.com", "to": ["b@x.net"], "message": "Hello there"},
            "'message'",
        )

    def test_overlongLine(self) -> None:
        """
        A line over RFC 5322's 998 bytes is refused at submission instead of
        bouncing later at a server.
        """
        self.assertBadRequest(
            {
                "from": "a@example.com",
                "to": ["b@x.net"],
                "message": MESSAGE + "y" * 999,
            },
            "998",
        )

    def test_messageTooLarge(self) -> None:
        """
        A message over the size limit is refused, naming the field.
        """
        big = MESSAGE + "x" * 5000
        self.assertBadRequest(
            {"from": "a@example.com", "to": ["b@x.net"], "message": big}, "'message'"
        )

    def test_requestTooLarge(self) -> None:
        """
        A request body over the API's limit gets 413 and is never parsed.
        """
        status, body, _ = self.request("POST", "/v1/outgoing", raw=b"x" * 20000)
        self.assertEqual(status, 413)
        self.assertEqual(body["error"]["code"], "tooLarge")

    def test_unknownPath(self) -> None:
        """
        An unknown path gets 404, a known path with the wrong method 405.
        """
        self.assertEqual(self.request("GET", "/v1/nothing")[0], 404)
        self.assertEqual(self.request("GET", "/v1/outgoing")[0], 405)

    def test_queueListing(self) -> None:
        """
        The queue lists each message with its state, attempts, next attempt
        and last error; one entry can be asked for by id.
        """
        entry = QueueEntry(
            queueId="abc",
            sender="a@example.com",
            recipients=("b@example.net",),
            route="outgoing",
            state="deferred",
            attempts=2,
            created=1_700_000_000.0,
            nextAttempt=1_700_000_600.0,
            lastError="451 4.3.0 try later",
            size=120,
        )
        self.queue.entries["abc"] = entry
        status, body, _ = self.request("GET", "/v1/queue")
        self.assertEqual(status, 200)
        [shown] = body["queue"]
        self.assertEqual(shown["queueId"], "abc")
        self.assertEqual(shown["state"], "deferred")
        self.assertEqual(shown["attempts"], 2)
        self.assertEqual(shown["nextAttempt"], "2023-11-14T22:23:20Z")
        self.assertEqual(shown["lastError"], "451 4.3.0 try later")
        self.assertEqual(self.request("GET", "/v1/queue/abc")[1], shown)
        self.assertEqual(self.request("GET", "/v1/queue/zzz")[0], 404)
