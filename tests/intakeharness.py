"""
A whole intake on disk for tests: the contact store, a real spool and queue
whose deliveries end on a L{Clock}, and L{Intake} over them, which can be
rebuilt from its directory as after a restart.
"""

from __future__ import annotations

import os
import tempfile
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any, Callable, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock

from ace_mail._entrances import AccountConfig, EntranceConfig
from ace_mail.envelope import Envelope, MessageSource, Outcome, Reply
from ace_mail.intake import Intake
from ace_mail.queue import Queue
from ace_mail.spool import Spool
from ace_mail.store import SQLiteContactStore

_T = TypeVar("_T")

REROUTE = "contact.example.com"
SUPPORT = EntranceConfig(
    name="acme",
    address="support@acme.example",
    displayName="ACME Support",
    autoAnswerSubject="Re: {subject} [#{contactId}]",
    autoAnswerText="Dear {customerName},\nwe have your message {subject}.\n",
)
SALES = EntranceConfig(
    name="sales",
    address="sales@shop.example",
    displayName="Shop Sales",
    autoAnswerText="Thanks, {customerName}.",
    agentMailbox="desk@shop.example",
    servers=(),
)
ACCOUNT = AccountConfig(
    name="acme-pop",
    entrance="acme",
    host="127.0.0.1",
    port=110,
    tls="none",
    username="u",
    password="p",
)
SALES_ACCOUNT = AccountConfig(
    name="sales-pop",
    entrance="sales",
    host="127.0.0.1",
    port=110,
    tls="none",
    username="u",
    password="p",
)


def runNow(work: Callable[[], _T]) -> Deferred[_T]:
    """
    A thread runner that runs the work at once, in the calling thread.
    """
    return maybeDeferred(work)


def email(
    sender: str = "Ann Lee <ann@customer.example>",
    subject: str = "Broken kettle",
    messageId: str | None = "<m1@customer.example>",
    extra: str = "",
    body: str = "It does not boil.\r\n",
) -> bytes:
    """
    @return: A customer's email with CRLF line ends.
    """
    head = f"From: {sender}\r\nTo: support@acme.example\r\nSubject: {subject}\r\n"
    if messageId is not None:
        head += f"Message-ID: {messageId}\r\n"
    return (head + extra + "\r\n" + body).encode("utf-8")


def parse(message: bytes) -> EmailMessage:
    """
    @return: C{message} parsed with the default policy.
    """
    parsed = BytesParser(policy=policy.default).parsebytes(message)
    assert isinstance(parsed, EmailMessage)
    return parsed


class Harness:
    """
    An intake in a temporary directory.

    @ivar delivered: Each message the queue delivered: its queue id, its
        envelope and its bytes.
    """

    def __init__(
        self,
        directory: str,
        entrances: tuple[EntranceConfig, ...] = (SUPPORT, SALES),
        answerLimit: int = 3,
        answerWindow: float = 86400.0,
        wrap: Callable[[Any], Any] = lambda part: part,
    ) -> None:
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.entrances = entrances
        self.answerLimit = answerLimit
        self.answerWindow = answerWindow
        self.wrap = wrap
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.delivered: list[tuple[str, Envelope, bytes]] = []
        self.start()

    def start(self) -> None:
        """
        Open the store and the spool, start the queue and make the intake.
        """
        self.store = SQLiteContactStore.open(
            os.path.join(self.directory, "contacts.sqlite3")
        )
        spool = Spool.open(os.path.join(self.directory, "queue"), runNow)
        self.queue = Queue(self.clock, spool, self._deliver, hostname="ace.example")
        self.queue.startService()
        self.intake = Intake(
            reactor=self.clock,
            store=self.wrap(self.store),
            queue=self.wrap(self.queue),
            entrances=self.entrances,
            rerouteName=REROUTE,
            incomingDir=os.path.join(self.directory, "incoming"),
            answerLimit=self.answerLimit,
            answerWindow=self.answerWindow,
            retention=120 * 3600.0,
        )

    def stop(self) -> None:
        """
        Close everything, as a process that dies does: nothing more is
        written than what was already written.
        """
        self.queue.stopService()
        self.store.close()

    def restart(self) -> None:
        """
        Stop and start from what is on disk.
        """
        self.stop()
        self.start()

    def _deliver(
        self, envelope: Envelope, source: MessageSource, queueId: str
    ) -> Deferred[Outcome]:
        with source.open() as f:
            data = f.read()
        done: Deferred[Outcome] = Deferred()

        def end() -> None:
            self.delivered.append((queueId, envelope, data))
            done.callback(Outcome("sink", Reply(250, "ok"), envelope.recipients))

        self.clock.callLater(1.0, end)
        return done

    def write(self, message: bytes) -> str:
        """
        Write a message into the incoming directory as the poller does.
        """
        fd, path = tempfile.mkstemp(dir=self.intake.incomingDir)
        with os.fdopen(fd, "wb") as f:
            f.write(message)
            f.flush()
            os.fsync(f.fileno())
        return path

    def take(self, message: bytes, uidl: str, account: AccountConfig = ACCOUNT) -> Any:
        """
        Take a message and let its deliveries end.

        @return: The L{ace_mail.intake.IntakeResult}.
        """
        result = self.intake.take(account, uidl, self.write(message))
        self.clock.advance(2.0)
        return result

    def sent(self) -> dict[str, tuple[Envelope, bytes]]:
        """
        @return: Every message delivered or still in the queue, by queue id.
        """
        found = {queueId: (env, data) for queueId, env, data in self.delivered}
        for entry in self.queue.list():
            with self.queue._spool.source(entry.queueId).open() as f:
                found[entry.queueId] = (
                    Envelope(entry.sender, entry.recipients, entry.route),
                    f.read(),
                )
        return found

    def contacts(self) -> list[tuple[Any, ...]]:
        """
        @return: Every contact's id, customer address and subject.
        """
        rows = self.store._connection.execute(
            "SELECT id, customerAddress, subject FROM contact ORDER BY created, id"
        )
        return list(rows)
