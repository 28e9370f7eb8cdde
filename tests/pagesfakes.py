"""
Fakes and a fixture for the operators' pages of L{ace_mail.pages}: a queue,
a sender and a contact store whose answers a test sets, and the pages in
front of the real API, spoken to over HTTP on an in-memory transport.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.server import Site

from ace_mail.api import Api, LimitedRequest
from ace_mail.metrics import Metrics
from ace_mail.pages import Monitor
from ace_mail.queue import QueueEntry
from ace_mail.sender import Route, Server, ServerStatus

MINUTE = 28_333_334 * 60.0
"""
A POSIX time at the start of a minute: 2023-11-14 22:14:00 UTC.
"""
TOKEN = "s3cret-token"
ROUTES = {
    "outgoing": Route(
        "outgoing",
        (
            Server("outgoing/1", "smtp1.example", 25),
            Server("outgoing/2", "smtp2.example", 587),
        ),
    )
}


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """
    @return: Every sample of the exposition, by name and sorted labels.
    """
    text = metrics.exposition().decode("utf-8")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def entry(
    queueId: str, state: str, route: str, created: float, error: str = ""
) -> QueueEntry:
    """
    @return: A queue entry with one recipient.
    """
    return QueueEntry(
        queueId,
        "a@example.com",
        ("b@example.net",),
        route,
        state,
        0,
        created,
        created,
        error,
        100,
    )


class FakeQueue:
    """
    A queue that lists the entries it is given.
    """

    def __init__(self, *entries: QueueEntry) -> None:
        self.entries = list(entries)

    def list(self) -> list[QueueEntry]:
        return list(self.entries)

    def get(self, queueId: str) -> QueueEntry | None:
        return None


class FakeSender:
    """
    A sender that reports the server statuses it is given.
    """

    def __init__(self, *statuses: ServerStatus) -> None:
        self.statuses = list(statuses)

    def serverStatus(self) -> list[ServerStatus]:
        return list(self.statuses)


class FakeStore:
    """
    A contact store for the operators' pages: C{answer} is C{"ok"},
    C{"broken"} (each query fails) or C{"hung"} (no query ever answers).
    """

    def __init__(self) -> None:
        self.answer = "ok"
        self.counts = {"open": 3, "ended": 2, "expired": 1}
        self.countedSince: list[float] = []

    def _reply(self, value: Any) -> Deferred[Any]:
        if self.answer == "broken":
            return fail(sqlite3.OperationalError("database is locked"))
        if self.answer == "hung":
            return Deferred()
        return succeed(value)

    def ping(self) -> Deferred[None]:
        return self._reply(None)

    def countContacts(self, endedSince: float) -> Deferred[dict[str, int]]:
        self.countedSince.append(endedSince)
        return self._reply(dict(self.counts))


class Listening:
    """
    What the health check reads of a listening factory.
    """

    def __init__(self, numPorts: int) -> None:
        self.numPorts = numPorts


class PagesMixin:
    """
    The operators' pages in front of the real API, over fakes, spoken to
    over HTTP on an in-memory transport.
    """

    mktemp: Any

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(MINUTE)
        self.metrics = Metrics(self.clock)
        self.queue = FakeQueue()
        self.sender = FakeSender()
        self.store = FakeStore()
        self.accounts: list[Any] = []
        self.monitor = Monitor(
            self.clock,
            self.metrics,
            queue=self.queue,
            sender=self.sender,
            routes=ROUTES,
            store=self.store,  # type: ignore[arg-type]
            retention=3600.0,
            accounts=lambda: self.accounts,
            token=TOKEN,
            tokenPath="/var/lib/ace-mail/api-token",
            hostname="mx.example",
        )
        self.api = Listening(1)
        self.proxy = Listening(1)
        self.monitor.addListener("API", self.api)
        self.monitor.addListener("SMTP proxy", self.proxy)
        api = Api(self.clock, self.queue, TOKEN, heloName="mx.example", messageSizeLimit=4096)  # type: ignore[arg-type]
        self.site = Site(self.monitor.resource(api.resource()), reactor=self.clock)
        self.site.requestFactory = LimitedRequest.withLimit(16384)

    def send(self, raw: bytes) -> StringTransport:
        """
        Send one raw HTTP request.

        @return: The transport, holding what the site answered so far.
        """
        protocol = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1234))
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(raw)
        return transport

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> StringTransport:
        lines = [f"{method} {path} HTTP/1.1", "Host: localhost"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        lines.append(f"Content-Length: {len(body)}")
        return self.send(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    def response(
        self, transport: StringTransport
    ) -> tuple[int, dict[bytes, list[bytes]], bytes]:
        """
        @return: The status, the headers (lower-case names) and the body.
        """
        head, _, body = transport.value().partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers: dict[bytes, list[bytes]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        if headers.get(b"transfer-encoding") == [b"chunked"]:
            chunks = []
            while True:
                size, _, body = body.partition(b"\r\n")
                length = int(size, 16)
                chunks.append(body[:length])
                body = body[length + 2 :]
                if not length:
                    break
            body = b"".join(chunks)
        else:
            [length] = headers[b"content-length"]
            self.assertEqual(len(body), int(length))  # type: ignore[attr-defined]
        return int(lines[0].split(b" ")[1]), headers, body

    def get(
        self, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[bytes, list[bytes]], bytes]:
        return self.response(self.request("GET", path, headers))
