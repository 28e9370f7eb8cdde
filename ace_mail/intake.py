# -*- test-case-name: tests.test_intake,tests.test_intake_exactlyonce -*-
"""
Email intake: each message a POP3 account yields becomes a contact (or joins
one) exactly once, and its automatic answer and physical email are queued
exactly once, whenever the process dies.

The order of the steps is what makes it so:

 1. The poller has written the message to a file in L{Intake.incomingDir}
    and fsync'd it.
 2. L{Intake.take} moves it into the originals directory under a name made
    of the account, the UIDL and the digest (so that taking it again after
    a crash replaces the same file), and fsyncs the directory.
 3. One transaction records the UIDL, the digest, the contact and the
    messages to send, each with a queue id chosen beforehand and the state
    "pending".  Then C{take} fires, and the poller may send DELE.
 4. Each message is enqueued under its queue id, and then marked "queued".

A message under a UIDL taken before is a duplicate when its digest or its
Message-ID is the same; otherwise the server gave the UIDL of a deleted
message to a new one (RFC 1939 allows it), and the new one is taken.

At start-up, L{Intake.recover} looks at every pending message: if the queue
knows its queue id (it is in the spool, live or delivered), it was enqueued
before the crash and is only marked; otherwise it is enqueued now.  The
mark follows the spool's fsync in the same turn of the reactor, before any
delivery can end, so a delivered message's record is still on disk when a
pending mark is recovered.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from typing import Callable, Sequence

from attrs import frozen
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ace_mail._entrances import AccountConfig, EntranceConfig
from ace_mail.address import isMailbox
from ace_mail.autoanswer import answerEnvelope, buildAnswer, whyNotAnswer
from ace_mail.envelope import Envelope
from ace_mail.inbound import parseHeaders, readInbound
from ace_mail.mime import headerPart
from ace_mail.physical import buildPhysical, physicalEnvelope, standInOriginal
from ace_mail.queue import Queue
from ace_mail.spool import newQueueId
from ace_mail.store import (
    AGENT,
    DROPPED,
    DUPLICATE,
    QUEUED,
    REFUSED,
    Arrival,
    Contact,
    Dispatch,
    IIntakeStore,
    Plan,
    Planned,
    Taken,
    newContactId,
    standInName,
)

_log = Logger()

_CHUNK = 1 << 16
_HEADER_LIMIT = 1 << 20


class DeliverError(Exception):
    """
    A physical email cannot be made; the message is one sentence for the
    caller.
    """


@frozen
class IntakeResult:
    """
    What became of one message.

    @ivar contactId: The contact it now belongs to; L{None} when it was
        refused, or is a duplicate of a refused one.
    @ivar outcome: C{"created"}, C{"threaded"} (attached to an existing
        contact), C{"duplicate"} (taken before, by UIDL or by Message-ID and
        digest) or C{"refused"} (it names no customer: it is kept as a file
        and reported, and never taken again).
    """

    contactId: str | None
    outcome: str


def _fsyncDirectory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _makeDirectory(path: str) -> None:
    if not os.path.isdir(path):
        os.makedirs(path, mode=0o700, exist_ok=True)
        _fsyncDirectory(os.path.dirname(os.path.abspath(path)))


def _digest(path: str) -> tuple[str, bytes]:
    """
    @return: The SHA-256 of a file in hexadecimal, and its header section.
    """
    digest = hashlib.sha256()
    head = b""
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            if len(head) < _HEADER_LIMIT:
                head += chunk
    return digest.hexdigest(), headerPart(head[:_HEADER_LIMIT])


class Intake:
    """
    Turns the messages of POP3 accounts into contacts, and sends their
    automatic answers and physical emails.

    @ivar incomingDir: Where the poller writes each message before L{take};
        on the same file system as the originals.
    """

    def __init__(
        self,
        *,
        reactor: IReactorTime,
        store: IIntakeStore,
        queue: Queue,
        entrances: Sequence[EntranceConfig],
        rerouteName: str,
        incomingDir: str,
        answerLimit: int,
        answerWindow: float,
        retention: float,
        onTaken: Callable[[float], None] | None = None,
    ) -> None:
        """
        @param store: The contact store with the intake records.
        @param queue: The started queue that the messages go to.
        @param rerouteName: The host name of contact addresses.
        @param answerLimit: The most automatic answers to one address...
        @param answerWindow: ...within this many seconds.
        @param retention: How long, in seconds, an ended contact can still
            be answered; a message tagged for an older one opens a new one.
        @param onTaken: Told how many seconds each L{take} took, for
            metrics.
        """
        self._reactor = reactor
        self._store = store
        self._queue = queue
        self._entrances = {entrance.name: entrance for entrance in entrances}
        self._ours = {entrance.address.lower() for entrance in entrances}
        self._rerouteName = rerouteName
        self._answerLimit = answerLimit
        self._answerWindow = answerWindow
        self._retention = retention
        self._onTaken = onTaken
        self._originals: str = store.originalsDirectory
        self._lock = DeferredLock()
        self.incomingDir = incomingDir
        _makeDirectory(incomingDir)
        _makeDirectory(self._originals)

    def seen(self, account: str, uidl: str) -> Deferred[bool]:
        """
        @return: A L{Deferred} that fires with whether this account's UIDL
            was taken already.
        """
        return self._store.seen(account, uidl)

    def take(
        self, account: AccountConfig, uidl: str, path: str
    ) -> Deferred[IntakeResult]:
        """
        Take one message, which from now on belongs to intake.

        @param path: The message, in L{incomingDir}, written and fsync'd.
        @return: A L{Deferred} that fires once the message and its contact
            are committed, so that DELE is safe, and its answer and physical
            email (if any) were handed to the queue.
        """
        started = self._reactor.seconds()
        taking = Deferred.fromCoroutine(self._take(account, uidl, path))
        if self._onTaken is not None:
            onTaken = self._onTaken

            def timed(result: IntakeResult) -> IntakeResult:
                onTaken(self._reactor.seconds() - started)
                return result

            taking.addCallback(timed)
        return taking

    async def _take(self, account: AccountConfig, uidl: str, path: str) -> IntakeResult:
        entrance = self._entrances[account.entrance]
        digest, head = _digest(path)
        await self._lock.acquire()
        try:
            if await self._store.seen(account.name, uidl):
                if not await self._retired(account, uidl, digest, head):
                    os.unlink(path)
                    _log.info(
                        "Account {account}: message {uidl} was taken already.",
                        account=account.name,
                        uidl=uidl,
                    )
                    return IntakeResult(None, DUPLICATE)
            taken, original = await self._record(
                account, entrance, uidl, path, digest, head
            )
        finally:
            self._lock.release()

        if taken.outcome == DUPLICATE:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self._originals, original))
        _log.info(
            "Account {account}: message {uidl} {outcome}, contact {contactId}.",
            account=account.name,
            uidl=uidl,
            outcome=taken.outcome,
            contactId=taken.contactId,
        )
        if taken.outcome == REFUSED:
            _log.warn(
                "Account {account}: message {uidl} names no customer in From or"
                " Reply-To; it is kept as stored email {original} and no contact"
                " was made.",
                account=account.name,
                uidl=uidl,
                original=original,
            )
        for dispatch in taken.dispatches:
            await self._sendLogged(dispatch)
        return IntakeResult(taken.contactId, taken.outcome)

    async def _retired(
        self, account: AccountConfig, uidl: str, digest: str, head: bytes
    ) -> bool:
        """
        @return: Whether the message under a seen UIDL is another one than
            the message taken under it, so that the UIDL was freed for it.
        """
        messageId = readInbound(parseHeaders(head)).messageId
        retired = await self._store.retireUidl(account.name, uidl, digest, messageId)
        if retired:
            _log.warn(
                "Account {account}: the server gave UIDL {uidl} to another"
                " message; it is taken as a new one.",
                account=account.name,
                uidl=uidl,
            )
        return retired

    async def _record(
        self,
        account: AccountConfig,
        entrance: EntranceConfig,
        uidl: str,
        path: str,
        digest: str,
        head: bytes,
    ) -> tuple[Taken, str]:
        headers = parseHeaders(head)
        inbound = readInbound(headers)
        key = hashlib.sha256(f"{account.name}\0{uidl}".encode()).hexdigest()
        original = f"{key[:24]}-{digest[:24]}"
        os.rename(path, os.path.join(self._originals, original))
        _fsyncDirectory(self._originals)

        now = self._reactor.seconds()
        contactId = newContactId()
        answer = agent = None
        if entrance.autoAnswerText is not None and inbound.customerAddress:
            why = whyNotAnswer(headers, inbound, self._ours, self._rerouteName)
            if why is None:
                answer = Planned(newQueueId(), self._answerId(entrance))
            else:
                _log.info(
                    "Account {account}: message {uidl} gets no automatic answer:"
                    " {why}.",
                    account=account.name,
                    uidl=uidl,
                    why=why,
                )
        if entrance.agentMailbox is not None:
            agent = Planned(newQueueId(), self._physicalId())
        arrival = Arrival(
            account=account.name,
            uidl=uidl,
            digest=digest,
            messageId=inbound.messageId,
            original=original,
            entrance=entrance.name,
            customerAddress=inbound.customerAddress,
            customerName=inbound.customerName,
            subject=inbound.subject,
            references=inbound.references,
            threadIds=inbound.inReplyTo + inbound.references,
            tag=inbound.tag,
            newContactId=contactId,
            received=now,
        )
        plan = Plan(
            answer=answer,
            answerLimit=self._answerLimit,
            answerWindow=self._answerWindow,
            agent=agent,
            agentAddress=entrance.agentMailbox,
            endedAfter=now - self._retention,
        )
        return await self._store.recordArrival(arrival, plan), original

    def _answerId(self, entrance: EntranceConfig) -> str:
        domain = entrance.address.rpartition("@")[2]
        return f"<{secrets.token_hex(12)}@{domain}>"

    def _physicalId(self) -> str:
        return f"<{secrets.token_hex(12)}@{self._rerouteName}>"

    def recover(self) -> Deferred[None]:
        """
        Finish what a crash interrupted, once at start-up, after the queue
        started and before any poll: queue every pending answer and physical
        email that the queue does not know, and forget the files the poller
        left in L{incomingDir}.
        """
        return Deferred.fromCoroutine(self._recover())

    async def _recover(self) -> None:
        for name in os.listdir(self.incomingDir):
            os.unlink(os.path.join(self.incomingDir, name))
        for dispatch in await self._store.pendingDispatches():
            if self._queue.knows(dispatch.queueId):
                await self._store.settleDispatch(dispatch.queueId, QUEUED)
                _log.info(
                    "Contact {contactId}: {kind} {queueId} was queued before"
                    " the restart.",
                    contactId=dispatch.contactId,
                    kind=dispatch.kind,
                    queueId=dispatch.queueId,
                )
            else:
                await self._sendLogged(dispatch)

    def deliver(self, contactId: str, agentAddress: str) -> Deferred[str]:
        """
        Send the physical email of a contact to an agent's mailbox.

        @return: A L{Deferred} that fires with its queue id once it is
            queued, or fails with L{DeliverError}.
        """
        return Deferred.fromCoroutine(self._deliver(contactId.lower(), agentAddress))

    async def _deliver(self, contactId: str, agentAddress: str) -> str:
        if not isMailbox(agentAddress):
            raise DeliverError(f"{agentAddress!r} is not a mail address.")
        contact = await self._store.get(contactId)
        if contact is None:
            raise DeliverError(f"Contact {contactId} is not known.")
        original = await self._store.originalOf(contactId)
        if original is None:
            original = self._standIn(contact)
        dispatch = Dispatch(
            newQueueId(),
            AGENT,
            contactId,
            agentAddress,
            self._physicalId(),
            original,
            self._reactor.seconds(),
        )
        await self._store.addDispatch(dispatch)
        if not await self._send(dispatch):
            raise DeliverError(
                f"The physical email of contact {contactId} cannot be made; the"
                " log says why."
            )
        return dispatch.queueId

    def _standIn(self, contact: Contact) -> str:
        """
        Keep the stand-in email of a contact that has none (one made through
        the API) among the originals, once, and name it.
        """
        name = standInName(contact.id)
        path = os.path.join(self._originals, name)
        entrance = self._entrances.get(contact.entrance)
        if entrance is None:
            raise DeliverError(
                f"Contact {contact.id} belongs to entrance {contact.entrance!r},"
                " which is not configured."
            )
        if not os.path.exists(path):
            partial = path + ".partial"
            with open(partial, "wb") as f:
                f.write(standInOriginal(contact, entrance))
                f.flush()
                os.fsync(f.fileno())
            os.rename(partial, path)
            _fsyncDirectory(self._originals)
        return name

    async def _sendLogged(self, dispatch: Dispatch) -> None:
        try:
            await self._send(dispatch)
        except Exception:
            _log.failure(
                "Contact {contactId}: {kind} {queueId} could not be queued; it"
                " is queued at the next start.",
                contactId=dispatch.contactId,
                kind=dispatch.kind,
                queueId=dispatch.queueId,
            )

    async def _send(self, dispatch: Dispatch) -> bool:
        """
        Make and enqueue one message under its queue id, then mark it
        queued; mark it dropped if it cannot be made.

        @return: Whether it was queued.
        """
        built = await self._build(dispatch)
        if built is None:
            await self._store.settleDispatch(dispatch.queueId, DROPPED)
            return False
        envelope, message = built
        await self._queue.enqueue(envelope, message, dispatch.queueId)
        await self._store.settleDispatch(dispatch.queueId, QUEUED)
        _log.info(
            "Contact {contactId}: {kind} queued as {queueId} for {recipient}.",
            contactId=dispatch.contactId,
            kind=dispatch.kind,
            queueId=dispatch.queueId,
            recipient=dispatch.recipient,
        )
        return True

    async def _build(self, dispatch: Dispatch) -> tuple[Envelope, bytes] | None:
        contact = await self._store.get(dispatch.contactId)
        entrance = None if contact is None else self._entrances.get(contact.entrance)
        if contact is None or entrance is None:
            _log.warn(
                "Contact {contactId}: {kind} {queueId} dropped: the contact or"
                " its entrance is gone.",
                contactId=dispatch.contactId,
                kind=dispatch.kind,
                queueId=dispatch.queueId,
            )
            return None
        if dispatch.kind != AGENT:
            answer = buildAnswer(
                entrance, contact, dispatch.messageId, dispatch.created
            )
            return answerEnvelope(entrance, contact), answer
        original = None
        error = "it is not kept"
        try:
            opened = await self._store.readOriginal(dispatch.original or "")
            if opened is not None:
                with opened:
                    original = opened.read()
        except OSError as e:
            error = e.strerror or str(e)
        if original is None:
            _log.warn(
                "Contact {contactId}: physical email {queueId} dropped: its"
                " stored email cannot be read ({error}).",
                contactId=dispatch.contactId,
                queueId=dispatch.queueId,
                error=error,
            )
            return None
        inbound = readInbound(parseHeaders(headerPart(original[:_HEADER_LIMIT])))
        physical = buildPhysical(
            original,
            contactId=contact.id,
            rerouteName=self._rerouteName,
            customerName=inbound.customerName,
            agentAddress=dispatch.recipient,
            messageId=dispatch.messageId,
        )
        return physicalEnvelope(entrance, dispatch.recipient), physical
