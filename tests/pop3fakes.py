"""
Twisted's own POP3 server over an in-memory network, a fake intake and an
account for the tests of L{ace_mail.accounts}.
"""

from __future__ import annotations

import hashlib
import os
from io import BytesIO
from typing import Any, Callable, Iterable

from attrs import define, field, frozen
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernameHashedPassword, IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.mail import pop3
from twisted.test.iosim import FakeTransport, IOPump, connect
from zope.interface import implementer

from ace_mail._entrances import AccountConfig
from ace_mail.store import ILeases


def makeAccount(**changes: Any) -> AccountConfig:
    """
    @return: A plain-text account of user C{agent} with password
        C{secret} at C{pop.example:110}, with C{changes}.
    """
    values: dict[str, Any] = dict(
        name="acme-pop",
        entrance="acme",
        host="pop.example",
        port=110,
        tls="none",
        username="agent",
        password="secret",
        timeout=30.0,
    )
    values.update(changes)
    return AccountConfig(**values)


@implementer(pop3.IMailbox)
class MemoryMailbox:
    """
    A mailbox of messages in memory. Deletions take effect on QUIT and are
    undone when the connection ends without it, as RFC 1939 says.

    @ivar messages: Each message's unique-id and content (LF line ends; the
        server sends CRLF).
    @ivar events: Shared with the test: C{("DELE", uid)} for each deletion
        and C{("QUIT", n)} when C{n} deletions take effect.
    """

    def __init__(self, messages: Iterable[tuple[str, bytes]], events: list[Any]):
        self.messages = list(messages)
        self.events = events
        self._deleted: set[int] = set()

    def listMessages(self, i: int | None = None) -> Any:
        if i is None:
            return [self.listMessages(n) for n in range(len(self.messages))]
        if not 0 <= i < len(self.messages):
            raise ValueError(i)
        return 0 if i in self._deleted else len(self.messages[i][1])

    def getMessage(self, i: int) -> BytesIO:
        return BytesIO(self.messages[i][1])

    def getUidl(self, i: int) -> bytes:
        return self.messages[i][0].encode("ascii")

    def deleteMessage(self, i: int) -> None:
        self._deleted.add(i)
        self.events.append(("DELE", self.messages[i][0]))

    def undeleteMessages(self) -> None:
        self._deleted.clear()

    def sync(self) -> None:
        self.events.append(("QUIT", len(self._deleted)))
        self.messages = [
            m for n, m in enumerate(self.messages) if n not in self._deleted
        ]
        self._deleted.clear()


@implementer(IRealm)
class _Realm:
    def __init__(self, mailbox: MemoryMailbox) -> None:
        self._mailbox = mailbox

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        return pop3.IMailbox, self._mailbox, self._mailbox.undeleteMessages


@implementer(ICredentialsChecker)
class _Checker:
    """
    User C{agent} with password C{secret}, by USER/PASS or APOP.

    Twisted's own check of an APOP digest compares text with bytes and so
    never succeeds; this one compares bytes.
    """

    credentialInterfaces = (IUsernamePassword, IUsernameHashedPassword)

    def requestAvatarId(self, credentials: Any) -> Deferred[bytes]:
        if isinstance(credentials, pop3.APOPCredentials):
            expected = hashlib.md5(credentials.magic + b"secret").hexdigest()
            good = credentials.digest == expected.encode("ascii")
        else:
            good = credentials.checkPassword(b"secret")
        if credentials.username == b"agent" and good:
            return succeed(b"agent")
        return fail(UnauthorizedLogin())


class PretendTLS:
    """
    The TLS settings of iosim's pretend TLS, which records the handshakes.

    @ivar handshakes: How many handshakes completed.
    """

    handshakes = 0

    def iosimVerify(self, other: object) -> bool:
        self.handshakes += 1
        return True


@define
class ServerScript:
    """
    How the fake server departs from Twisted's POP3 server, and what it saw.

    @ivar capabilities: Added to the CAPA answer.
    @ivar greeting: Sent instead of the usual greeting.
    @ivar raw: For a command verb (upper case), bytes to send instead of
        its usual answer (C{b""}: no answer).
    @ivar afterSTLS: Sent in the clear, in the same write, after C{+OK} to
        STLS.
    @ivar magic: The APOP challenge of the greeting.
    @ivar commands: Every command line received.
    @ivar chunks: How many command lines came in each read.
    @ivar connections: How many connections were made.
    """

    capabilities: list[bytes] = field(factory=list)
    greeting: bytes | None = None
    raw: dict[bytes, bytes] = field(factory=dict)
    afterSTLS: bytes = b""
    magic: bytes = b"<1896.697170952@pop.example>"
    tls: PretendTLS = field(factory=PretendTLS)
    commands: list[bytes] = field(factory=list)
    chunks: list[int] = field(factory=list)
    connections: int = 0

    def verbs(self) -> list[str]:
        """
        @return: The verb of each command received.
        """
        return [line.split(b" ")[0].decode().upper() for line in self.commands]


class FakePOP3Server(pop3.POP3):
    """
    Twisted's POP3 server, synchronous, following a L{ServerScript}.
    """

    timeOut = None
    AUTH_CMDS = [*pop3.POP3.AUTH_CMDS, b"STLS"]

    def __init__(self, script: ServerScript) -> None:
        self.script = script
        self.magic = script.magic

    def schedule(self, iterator: Any) -> Deferred[None]:
        for _ in iterator:
            pass
        return succeed(None)

    def connectionMade(self) -> None:
        self.script.connections += 1
        if self.script.greeting is None:
            super().connectionMade()
        else:
            self.transport.write(self.script.greeting)

    def dataReceived(self, data: bytes) -> None:
        self.script.chunks.append(data.count(b"\r\n"))
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        self.script.commands.append(line)
        verb = line.split(b" ")[0].upper()
        if verb in self.script.raw:
            self.transport.write(self.script.raw[verb])
        else:
            super().lineReceived(line)

    def listCapabilities(self) -> list[bytes]:
        return [b"TOP", b"USER", b"UIDL", *self.script.capabilities]

    def do_STLS(self) -> None:
        self.transport.write(b"+OK Begin TLS\r\n" + self.script.afterSTLS)
        self.transport.startTLS(self.script.tls)


@frozen
class Taken:
    """
    What L{FakeIntake.take} answers (an C{IntakeResult}).
    """

    contactId: str | None
    outcome: str


class FakeIntake:
    """
    An intake that remembers the unique-ids and contents it took.

    @ivar incomingDir: Where the poller writes messages.
    @ivar contents: Each message taken, by unique-id.
    @ivar hold: If C{True}, L{take} waits for the test: see C{waiting}.
    @ivar waiting: The unique-id and Deferred of each held L{take}.
    @ivar events: Shared with the test: C{("taken", uid)} when a take fires.
    """

    def __init__(self, incomingDir: str, events: list[Any]) -> None:
        os.makedirs(incomingDir, exist_ok=True)
        self.incomingDir = incomingDir
        self.events = events
        self.contents: dict[str, bytes] = {}
        self.hold = False
        self.waiting: list[tuple[str, Deferred[Taken]]] = []
        self.failTake: Exception | None = None

    def seen(self, account: str, uidl: str) -> Deferred[bool]:
        return succeed(uidl in self.contents)

    def take(self, account: AccountConfig, uidl: str, path: str) -> Deferred[Taken]:
        if self.failTake is not None:
            raise self.failTake
        with open(path, "rb") as f:
            content = f.read()
        os.unlink(path)
        taken: Deferred[Taken] = Deferred()

        def fired(result: Taken) -> Taken:
            self.contents[uidl] = content
            self.events.append(("taken", uidl))
            return result

        taken.addCallback(fired)
        if self.hold:
            self.waiting.append((uidl, taken))
        else:
            taken.callback(Taken(f"contact-{uidl}", "created"))
        return taken

    def release(self, count: int | None = None) -> None:
        """
        Fire the first C{count} held takes, or all of them.
        """
        if count is None:
            count = len(self.waiting)
        waiting, self.waiting = self.waiting[:count], self.waiting[count:]
        for uidl, taken in waiting:
            taken.callback(Taken(f"contact-{uidl}", "created"))


@implementer(IStreamClientEndpoint)
class MemoryNetwork:
    """
    An endpoint that connects each client to a new L{FakePOP3Server} over
    iosim, with a L{MemoryMailbox} of user C{agent}, password C{secret}.

    @ivar pumps: One per connection.
    """

    def __init__(
        self,
        clock: Clock,
        mailbox: MemoryMailbox,
        script: ServerScript,
        wrap: Callable[[FakePOP3Server], Any] | None = None,
    ) -> None:
        """
        @param wrap: Wraps each server protocol, for example in TLS.
        """
        self.clock = clock
        self.mailbox = mailbox
        self.script = script
        self.wrap = wrap
        self.pumps: list[IOPump] = []
        self.portal = Portal(_Realm(mailbox), [_Checker()])

    def endpointFor(self, account: AccountConfig) -> IStreamClientEndpoint:
        return self

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        server = FakePOP3Server(self.script)
        server.portal = self.portal
        if self.wrap is not None:
            server = self.wrap(server)
        client = factory.buildProtocol(None)
        assert client is not None
        pump = connect(
            server,
            FakeTransport(server, isServer=True),
            client,
            FakeTransport(client, isServer=False),
            greet=False,
            clock=self.clock,
        )
        self.pumps.append(pump)
        return succeed(client)

    def flush(self) -> None:
        """
        Move every byte there is to move.
        """
        for pump in self.pumps:
            pump.flush()


class LeaseTable:
    """
    The leases of a pretend store that several nodes share, each running
    out on the test's clock.

    @ivar holders: Each lease's holder and when it runs out, by name.
    @ivar calls: C{(time, node, "hold" or "release", name)} for each call
        that reached the store.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.holders: dict[str, tuple[str, float]] = {}
        self.calls: list[tuple[float, str, str, str]] = []

    def holder(self, name: str) -> str | None:
        """
        @return: The node that holds the lease C{name} now, if any.
        """
        held = self.holders.get(name)
        if held is None or held[1] <= self.clock.seconds():
            return None
        return held[0]


@implementer(ILeases)
class FakeLeases:
    """
    One node's view of a L{LeaseTable}, whose calls can be made to fail or
    to go unanswered as when the store is out of reach.

    @ivar down: When set, every call fails with it.
    @ivar hang: When C{True}, calls go unanswered; see C{unanswered}.
    @ivar unanswered: The Deferred of each call made while C{hang}.
    """

    def __init__(self, table: LeaseTable, node: str) -> None:
        self.table = table
        self.node = node
        self.down: Exception | None = None
        self.hang = False
        self.unanswered: list[Deferred[Any]] = []

    def holdLease(self, name: str, seconds: float) -> Deferred[bool]:
        return self._call("hold", name, lambda: self._hold(name, seconds))

    def releaseLease(self, name: str) -> Deferred[None]:
        return self._call("release", name, lambda: self._release(name))

    def _call(self, what: str, name: str, action: Callable[[], Any]) -> Deferred[Any]:
        if self.hang:
            unanswered: Deferred[Any] = Deferred()
            self.unanswered.append(unanswered)
            return unanswered
        if self.down is not None:
            return fail(self.down)
        self.table.calls.append((self.table.clock.seconds(), self.node, what, name))
        return succeed(action())

    def _hold(self, name: str, seconds: float) -> bool:
        if self.table.holder(name) not in (None, self.node):
            return False
        self.table.holders[name] = (self.node, self.table.clock.seconds() + seconds)
        return True

    def _release(self, name: str) -> None:
        if self.table.holder(name) == self.node:
            del self.table.holders[name]
