"""
Fakes and a scripted client shared by the tests of L{ace_mail.proxy}; this
module holds no tests itself.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.testing import MemoryReactorClock, StringTransport

from ace_mail.envelope import Envelope
from ace_mail.proxy import ProxyFactory, ProxySettings
from ace_mail.spool import MessageParts
from ace_mail.store import Contact, Entrance

CERTS = os.path.join(os.path.dirname(__file__), "certs")
HOST = "proxy.example.com"
OPEN_ID = "aaaaaaaaaaaaaaaaaaaa"
ENDED_ID = "bbbbbbbbbbbbbbbbbbbb"
OTHER_ID = "cccccccccccccccccccc"
UNKNOWN_ID = "dddddddddddddddddddd"
NOW = 1_800_000_000.0
ENDED = NOW - 3600

ENTRANCE = Entrance("default", "support@example.com", "Support")
SALES = Entrance("sales", "sales@example.com", "Sales")

REPLY = (
    b"From: Agent Smith <agent@agents.example.org>\r\n"
    b"To: " + OPEN_ID.encode() + b"@" + HOST.encode() + b"\r\n"
    b"Subject: Re: my order\r\n"
    b"X-Originating-IP: 192.0.2.7\r\n"
    b"\r\n"
    b"Hello, your order is on its way.\r\n"
)


def contact(
    contactId: str, ended: float | None = None, entrance: str = "default"
) -> Contact:
    return Contact(
        id=contactId,
        entrance=entrance,
        customerAddress=f"customer-{contactId[:4]}@example.net",
        customerName="Carla Customer",
        subject="my order",
        messageId=f"<{contactId}@example.net>",
        references=(),
        externalId=None,
        created=NOW - 86400,
        ended=ended,
    )


class FakeStore:
    """
    An in-memory contact store; C{broken} makes every lookup fail, and
    C{pending} makes lookups wait until the test fires them.
    """

    def __init__(self, *contacts: Contact) -> None:
        self.contacts = {c.id: c for c in contacts}
        self.lookups: list[str] = []
        self.broken = False
        self.pending: list[Deferred[Contact | None]] | None = None

    def get(self, contactId: str) -> Deferred[Contact | None]:
        self.lookups.append(contactId)
        if self.broken:
            return fail(OSError("database is locked"))
        if self.pending is not None:
            waiting: Deferred[Contact | None] = Deferred()
            self.pending.append(waiting)
            return waiting
        return succeed(self.contacts.get(contactId))


class FakeQueue:
    """
    A queue that records what is enqueued; each enqueue waits for the test
    to call L{fire} (or fires at once with C{automatic}), and the
    C{failAt}-th enqueue (from 0) fails.
    """

    def __init__(self, automatic: bool = True, failAt: int | None = None) -> None:
        self.automatic = automatic
        self.failAt = failAt
        self.messages: list[tuple[Envelope, bytes]] = []
        self.given: list[MessageParts] = []
        self.waiting: list[tuple[Deferred[str], str]] = []
        self.deleted: list[str] = []
        self._count = 0

    def enqueue(self, envelope: Envelope, message: MessageParts) -> Deferred[str]:
        number, self._count = self._count, self._count + 1
        if number == self.failAt:
            return fail(OSError(28, "No space left on device"))
        self.given.append(message)
        self.messages.append((envelope, message.read()))
        queueId = f"q{number}"
        if self.automatic:
            return succeed(queueId)
        waiting: Deferred[str] = Deferred()
        self.waiting.append((waiting, queueId))
        return waiting

    def fire(self) -> None:
        waiting, self.waiting = self.waiting, []
        for deferred, queueId in waiting:
            deferred.callback(queueId)

    def delete(self, queueId: str, why: str = "") -> bool:
        self.deleted.append(queueId)
        return True


def makeFactory(
    store: FakeStore | None = None,
    queue: FakeQueue | None = None,
    clock: MemoryReactorClock | None = None,
    entrances: dict[str, Entrance] | None = None,
    **settings: Any,
) -> ProxyFactory:
    """
    A factory over fakes, its clock at L{NOW}, with the open, ended and
    other-entrance contacts known, and the entrances L{ENTRANCE} and
    L{SALES} unless others are given.
    """
    if clock is None:
        clock = MemoryReactorClock()
        clock.advance(NOW)
    if store is None:
        store = FakeStore(
            contact(OPEN_ID),
            contact(ENDED_ID, ended=ENDED),
            contact(OTHER_ID, entrance="sales"),
        )
    options: dict[str, Any] = {"rerouteName": HOST, "heloName": "mx.example.com"}
    options.update(settings)
    extra = {
        key: options.pop(key)
        for key in ("tlsContext", "checker", "implicitTls")
        if key in options
    }
    return ProxyFactory(
        clock,
        ProxySettings(**options),
        store,
        {"default": ENTRANCE, "sales": SALES} if entrances is None else entrances,
        queue if queue is not None else FakeQueue(),
        **extra,
    )


class TLSStringTransport(StringTransport):
    """
    A L{StringTransport} that records C{startTLS}.
    """

    tlsStarted: Any = None

    def startTLS(self, contextFactory: Any) -> None:
        self.tlsStarted = contextFactory


class Client:
    """
    Drives one L{ace_mail.proxy.ProxyProtocol} over a string transport and
    reads its replies.
    """

    def __init__(self, factory: ProxyFactory, host: str = "127.0.0.1") -> None:
        self.factory = factory
        self.transport = TLSStringTransport(peerAddress=IPv4Address("TCP", host, 40000))
        self.protocol = factory.buildProtocol(self.transport.getPeer())
        self.protocol.makeConnection(self.transport)
        self.greeting = self.replies()

    def replies(self) -> list[str]:
        """
        @return: The reply lines written since the last call.
        """
        data = self.transport.value().decode("ascii")
        self.transport.clear()
        return data.split("\r\n")[:-1]

    def send(self, data: bytes) -> list[str]:
        """
        Send raw bytes.

        @return: The reply lines they caused.
        """
        self.protocol.dataReceived(data)
        return self.replies()

    def command(self, line: str) -> str:
        """
        Send one command.

        @return: Its reply; the last line of a multi-line reply.
        """
        lines = self.send(line.encode("ascii") + b"\r\n")
        assert lines, f"no reply to {line!r}"
        return lines[-1]

    def transaction(
        self, *recipients: str, sender: str = "agent@agents.example.org"
    ) -> list[str]:
        """
        EHLO, MAIL and a RCPT for each recipient.

        @return: The replies to the RCPT commands.
        """
        self.command("EHLO client.example.org")
        assert self.command(f"MAIL FROM:<{sender}>").startswith("250 ")
        return [self.command(f"RCPT TO:<{r}>") for r in recipients]

    def message(self, body: bytes = REPLY) -> str:
        """
        DATA, the message with its end, and the final reply.
        """
        assert self.command("DATA").startswith("354 ")
        lines = self.send(body + b".\r\n")
        assert lines, "no reply at the end of data"
        return lines[-1]
