"""
A scripted in-memory SMTP server and network for the sender's tests.
"""

from __future__ import annotations

from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.task import Clock
from twisted.protocols.basic import LineReceiver
from twisted.test.iosim import IOPump, connect, makeFakeClient, makeFakeServer
from zope.interface import implementer

from ace_mail.envelope import BytesSource, Envelope, Outcome
from ace_mail.sender import Route, Sender, Server


@define
class Received:
    """
    One message that a fake server accepted.
    """

    sender: str
    recipients: list[str]
    data: bytes


@define
class Script:
    """
    How one fake server behaves, and what it saw.

    @ivar refuse: Refuse connections.
    @ivar hang: Never complete a connection.
    @ivar greeting: The greeting line.
    @ivar extensions: The EHLO keywords to offer.
    @ivar replies: For a command verb (upper case), the replies to give,
        one per command, instead of the usual one; C{None} gives no reply
        at all, and C{"close"} closes the connection.
    @ivar rcptReplies: For a recipient, the reply to its RCPT TO.
    @ivar connections: How many connections were made.
    @ivar commands: Every command line received, in order.
    @ivar messages: Every message accepted.
    """

    refuse: bool = False
    hang: bool = False
    greeting: str = "220 fake.example ESMTP"
    extensions: list[str] = field(factory=lambda: ["PIPELINING", "SIZE 1000000"])
    replies: dict[str, list[str | None]] = field(factory=dict)
    rcptReplies: dict[str, str] = field(factory=dict)
    connections: int = 0
    commands: list[str] = field(factory=list)
    messages: list[Received] = field(factory=list)
    servers: list[FakeSMTPServer] = field(factory=list)

    def verbs(self) -> list[str]:
        """
        @return: The verb of each command received, in order.
        """
        return [
            line.split(" ", 1)[0].split(":", 1)[0].upper() for line in self.commands
        ]


class FakeSMTPServer(LineReceiver):
    """
    The server side of one fake SMTP connection, following a L{Script}.
    """

    delimiter = b"\r\n"

    def __init__(self, script: Script) -> None:
        self.script = script
        self.inData = False
        self.sender = ""
        self.recipients: list[str] = []
        self.lines: list[bytes] = []

    def connectionMade(self) -> None:
        self.script.servers.append(self)
        self.say(self.script.greeting)

    def say(self, reply: str) -> None:
        self.transport.write(reply.encode("utf-8") + b"\r\n")

    def lineReceived(self, line: bytes) -> None:
        if self.inData:
            self.dataLine(line)
            return

        text = line.decode("utf-8")
        self.script.commands.append(text)
        verb = text.split(" ", 1)[0].split(":", 1)[0].upper()
        scripted = self.script.replies.get(verb)
        if scripted:
            reply = scripted.pop(0)
            if reply is None:
                return
            if reply == "close":
                self.transport.loseConnection()
                return
            self.say(reply)
            if reply.startswith("354"):
                self.inData = True
            if reply.startswith("421"):
                self.transport.loseConnection()
            return
        self.say(self.usualReply(verb, text))

    def usualReply(self, verb: str, text: str) -> str:
        if verb == "EHLO":
            lines = ["fake.example"] + self.script.extensions
            return "\r\n".join(
                f"250{'-' if i < len(lines) - 1 else ' '}{line}"
                for i, line in enumerate(lines)
            )
        if verb == "HELO":
            return "250 fake.example"
        if verb == "MAIL":
            self.sender = text[len("MAIL FROM:<") :].split(">", 1)[0]
            self.recipients = []
            return "250 2.1.0 ok"
        if verb == "RCPT":
            recipient = text[len("RCPT TO:<") :].split(">", 1)[0]
            reply = self.script.rcptReplies.get(recipient, "250 2.1.5 ok")
            if reply.startswith("2"):
                self.recipients.append(recipient)
            return reply
        if verb == "DATA":
            if not self.recipients:
                return "554 5.5.1 no valid recipients"
            self.inData = True
            return "354 go ahead"
        if verb == "RSET":
            self.sender, self.recipients = "", []
            return "250 2.0.0 ok"
        if verb == "QUIT":
            self.transport.loseConnection()
            return "221 2.0.0 bye"
        if verb == "NOOP":
            return "250 2.0.0 ok"
        return "500 5.5.2 unknown command"

    def dataLine(self, line: bytes) -> None:
        if line != b".":
            self.lines.append(line[1:] if line.startswith(b".") else line)
            return

        self.inData = False
        data = b"".join(line + b"\r\n" for line in self.lines)
        self.lines = []
        scripted = self.script.replies.get(".")
        reply = scripted.pop(0) if scripted else "250 2.0.0 queued"
        if reply is None:
            return
        if reply.startswith("2"):
            self.script.messages.append(Received(self.sender, self.recipients, data))
        self.recipients = []
        self.say(reply)


@implementer(IStreamClientEndpoint)
class _FakeEndpoint:
    def __init__(self, network: FakeNetwork, server: Server) -> None:
        self.network = network
        self.server = server

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        return self.network.connect(self.server, factory)


class FakeNetwork:
    """
    Connect L{Sender}s to fake SMTP servers in memory.

    @ivar scripts: The script of each server, by the server's name.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.scripts: dict[str, Script] = {}
        self.pumps: list[IOPump] = []

    def add(self, name: str, **kwargs: Any) -> tuple[Server, Script]:
        """
        Make a server and its script.

        @return: The L{Server} (named C{name}, at C{name.example:25}, without
            TLS) and its L{Script}.
        """
        script = Script(**kwargs)
        self.scripts[name] = script
        return Server(name, f"{name}.example", 25, tls="none"), script

    def endpointFactory(self, server: Server) -> _FakeEndpoint:
        """
        The sender's C{endpointFactory}.
        """
        return _FakeEndpoint(self, server)

    def connect(self, server: Server, factory: IProtocolFactory) -> Deferred[IProtocol]:
        script = self.scripts[server.name]
        script.connections += 1
        if script.refuse:
            return fail(ConnectionRefusedError("refused"))
        if script.hang:
            return Deferred()
        client = factory.buildProtocol(None)
        assert client is not None
        fake = FakeSMTPServer(script)
        self.pumps.append(
            connect(
                fake,
                makeFakeServer(fake),
                client,
                makeFakeClient(client),
                greet=False,
                clock=self.clock,
            )
        )
        return succeed(client)

    def flush(self) -> None:
        """
        Move bytes between every client and server until all are quiet.
        """
        moved = True
        while moved:
            moved = False
            for pump in list(self.pumps):
                if pump.flush():
                    moved = True


class SenderHarness:
    """
    A mixin for test cases: a L{Sender} on a L{Clock} and a L{FakeNetwork}.
    """

    def makeSender(self, **kwargs: Any) -> Sender:
        """
        Make C{self.clock}, C{self.network} and C{self.sender}.

        @param kwargs: More arguments for L{Sender}.
        """
        self.clock = Clock()
        self.network = FakeNetwork(self.clock)
        self.sender = Sender(
            self.clock,
            heloName="ace.example",
            endpointFactory=self.network.endpointFactory,
            **kwargs,
        )
        return self.sender

    def send(
        self,
        route: Route,
        recipients: tuple[str, ...] = ("to@example.net",),
        message: bytes = b"Subject: hi\r\n\r\nhello\r\n",
        queueId: str = "Q1",
        flush: bool = True,
    ) -> Deferred[Outcome]:
        """
        Start sending a message and, unless C{flush} is false, move the
        bytes.
        """
        envelope = Envelope("from@example.com", recipients, route.name)
        sending = self.sender.send(route, envelope, BytesSource(message), queueId)
        if flush:
            self.network.flush()
        return sending

    def advance(self, seconds: float) -> None:
        """
        Let time pass, then move the bytes.
        """
        self.clock.advance(seconds)
        self.network.flush()
